//! The server's configuration: read from environment variables (after `.env`), validated
//! once at startup, with an error for each bad value that says how to fix it.
//!
//! shared/seed/configuration-reference.txt is the contract; docs/configuration.md documents
//! every variable. Nothing in this module prints secrets: [`Secret`] hides them from `Debug`.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use url::Url;

use crate::protocol::text::canonical_email;

/// Every variable the server reads, with its default, for `roomz serve --help`.
pub const VARIABLES_HELP: &str = "\
Environment variables (a .env file in the working directory is read first; real environment
variables win over it):

  JWT_SECRET_KEY             required; at least 32 characters (openssl rand -base64 32)
  JWT_PREVIOUS_SECRET_KEY    the key before a rotation: sessions it signed stay valid
  ALLOWED_EMAILS             required; comma-separated addresses that may log in (may be
                             empty: then nobody can); re-read from .env on SIGHUP
  EMAIL_SENDER               console (default: prints magic links on standard output) or resend
  RESEND_API_KEY             required with EMAIL_SENDER=resend; starts with re_
  RESEND_BASE_URL            Resend API base URL (default https://api.resend.com)
  RESEND_RATE_LIMIT          requests per second to Resend (default 9)
  EMAIL_FROM                 sender of magic-link emails (default: roomz <onboarding@resend.dev>)
  JWT_EXPIRY_DAYS            session lifetime in days (default 30)
  MAGIC_LINK_EXPIRY_MINUTES  magic-link lifetime in minutes (default 15)
  MAGIC_LINK_RATE_LIMIT      magic links per address per hour (default 5)
  ROOMZ_BIND                 address to listen on, as --bind (default 127.0.0.1:8000)
  ROOMZ_PUBLIC_URL           base URL of links in emails (default http://<bind address>)
  ROOMZ_COOKIE_SECURE        true/false: mark the session cookie Secure (default: true
                             when ROOMZ_PUBLIC_URL is https)
  DATABASE_URL               sqlite:PATH (default sqlite:<data dir>/roomz.db, where the data
                             dir is $XDG_DATA_HOME/roomz or ~/.local/share/roomz), or
                             postgres://USER:PASSWORD@HOST/DATABASE (several nodes may share it)
  DATABASE_POOL_SIZE         PostgreSQL connections per node (default 10)
  ROOMZ_MESSAGES_PER_SECOND  sustained messages per second per user (default 10)
  ROOMZ_MESSAGE_BURST        messages a user may send at once above that rate (default 30)
  ROOMZ_MAX_CONNECTIONS_PER_USER     open WebSocket connections per user (default 20)
  ROOMZ_MAX_CONNECTIONS_PER_ADDRESS  open WebSocket connections per client address
                             (an IPv4 address or an IPv6 /64; default 1000)
  ROOMZ_TRUSTED_PROXIES      reverse proxies (comma-separated IPs) whose X-Forwarded-For
                             names the client (default: none)
  ROOMZ_METRICS_BIND         IP:PORT to serve GET /metrics (Prometheus) on (default: off)
  ROOMZ_TLS_CERT             PEM certificate chain: serve HTTPS (as --tls-cert; re-read on
                             SIGHUP); needs ROOMZ_TLS_KEY
  ROOMZ_TLS_KEY              PEM private key of that certificate (as --tls-key)
  RUST_LOG                   log filter for standard error (default info)

docs/configuration.md describes each one.";

/// A value that must never be printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// How magic links reach people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MailerConfig {
    /// Print each link on one line of standard output.
    Console,
    /// Send through the Resend API.
    Resend { api_key: Secret, base_url: Url },
}

/// Where the data lives.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseConfig {
    /// A SQLite file, created with its folder when missing.
    Sqlite { path: PathBuf },
    /// A PostgreSQL database, which several nodes may share. The URL may hold a password.
    Postgres { url: Secret, pool_size: u32 },
}

impl fmt::Debug for DatabaseConfig {
    /// The file, or the server and database without the user's password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite { path } => f.debug_struct("Sqlite").field("path", path).finish(),
            Self::Postgres { url, pool_size } => {
                let shown = Url::parse(url.expose()).map_or_else(
                    |_| "<unreadable URL>".to_owned(),
                    |u| {
                        format!(
                            "{}:{}{}",
                            u.host_str().unwrap_or("localhost"),
                            u.port().unwrap_or(5432),
                            u.path()
                        )
                    },
                );
                f.debug_struct("Postgres")
                    .field("at", &shown)
                    .field("pool_size", pool_size)
                    .finish()
            }
        }
    }
}

/// Where the allow-list came from, which decides what SIGHUP can change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowListSource {
    /// The process environment: it cannot change while the server runs.
    Environment,
    /// A `.env` file, read again on SIGHUP.
    EnvFile(PathBuf),
}

/// The validated configuration of `roomz serve`.
#[derive(Debug, Clone)]
pub struct Config {
    pub jwt_secret: Secret,
    /// The key before the last rotation: its sessions still verify.
    pub jwt_previous_secret: Option<Secret>,
    /// Canonical (lowercased) addresses.
    pub allowed_emails: Vec<String>,
    pub allowlist_source: AllowListSource,
    pub mailer: MailerConfig,
    pub email_from: String,
    pub jwt_expiry_days: u32,
    pub magic_link_expiry_minutes: u32,
    pub magic_link_rate_limit: u32,
    pub bind: SocketAddr,
    /// `None`: derived from the address the server is bound to.
    pub public_url: Option<Url>,
    /// `None`: Secure exactly when the public URL is https.
    pub cookie_secure: Option<bool>,
    pub database: DatabaseConfig,
    pub messages_per_second: u32,
    pub message_burst: u32,
    /// Reverse proxies whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Vec<std::net::IpAddr>,
    pub max_connections_per_user: u32,
    pub max_connections_per_address: u32,
    /// Where `GET /metrics` is served; `None`: nowhere.
    pub metrics_bind: Option<SocketAddr>,
    /// The certificate and key to serve HTTPS with; `None`: plain HTTP.
    pub tls: Option<crate::server::tls::TlsFiles>,
}

/// A configuration problem: what is wrong, and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub message: String,
    pub hint: String,
}

impl ConfigError {
    fn new(message: impl Into<String>, hint: impl Into<String>) -> Self {
        Self { message: message.into(), hint: hint.into() }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

/// The configuration and what is odd about it but not wrong.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<String>,
}

const DEFAULT_BIND: &str = "127.0.0.1:8000";
const DEFAULT_EMAIL_FROM: &str = "roomz <onboarding@resend.dev>";
const DEFAULT_RESEND_BASE_URL: &str = "https://api.resend.com";
const SECRET_HINT: &str = "generate one with `openssl rand -base64 32` and set it in the \
                           environment or in .env";

impl Config {
    /// Reads and checks every variable through `lookup` (the environment, in production).
    /// `allowlist_source` says where `ALLOWED_EMAILS` came from.
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
        allowlist_source: AllowListSource,
    ) -> Result<Loaded, ConfigError> {
        let mut warnings = Vec::new();
        let get = |name: &str| lookup(name).map(|v| v.trim().to_owned());

        let jwt_secret = jwt_secret(lookup("JWT_SECRET_KEY"))?;
        let jwt_previous_secret = previous_secret(lookup("JWT_PREVIOUS_SECRET_KEY"), &jwt_secret)?;
        let allowed_emails = allowed_emails(get("ALLOWED_EMAILS"), &mut warnings)?;
        let mailer = mailer(get("EMAIL_SENDER"), get("RESEND_API_KEY"), get("RESEND_BASE_URL"))?;
        // Checked as it is, not trimmed: resend-rs reads the variable itself and takes
        // nothing but digits.
        if let Some(limit) = lookup("RESEND_RATE_LIMIT") {
            bounded_int("RESEND_RATE_LIMIT", Some(limit), 9, 1_000, None, &mut warnings)?;
        }
        let email_from = email_from(get("EMAIL_FROM"))?;
        let jwt_expiry_days = bounded_int(
            "JWT_EXPIRY_DAYS",
            get("JWT_EXPIRY_DAYS"),
            30,
            3650,
            Some(365),
            &mut warnings,
        )?;
        let magic_link_expiry_minutes = bounded_int(
            "MAGIC_LINK_EXPIRY_MINUTES",
            get("MAGIC_LINK_EXPIRY_MINUTES"),
            15,
            10_080,
            Some(60),
            &mut warnings,
        )?;
        let magic_link_rate_limit = bounded_int(
            "MAGIC_LINK_RATE_LIMIT",
            get("MAGIC_LINK_RATE_LIMIT"),
            5,
            10_000,
            Some(20),
            &mut warnings,
        )?;
        let bind = bind(get("ROOMZ_BIND"))?;
        let public_url = public_url(get("ROOMZ_PUBLIC_URL"))?;
        if public_url.is_none() && bind.ip().is_unspecified() {
            warnings.push(format!(
                "ROOMZ_PUBLIC_URL is not set and the server listens on {bind}: magic links will \
                 point at http://localhost:{}; set ROOMZ_PUBLIC_URL to the address users reach",
                bind.port()
            ));
        }
        let cookie_secure = cookie_secure(get("ROOMZ_COOKIE_SECURE"))?;
        let pool_size = bounded_int(
            "DATABASE_POOL_SIZE",
            get("DATABASE_POOL_SIZE"),
            10,
            1_000,
            None,
            &mut warnings,
        )?;
        let database = database(get("DATABASE_URL"), default_data_dir, pool_size)?;
        if get("DATABASE_POOL_SIZE").is_some() && matches!(database, DatabaseConfig::Sqlite { .. })
        {
            warnings.push(
                "DATABASE_POOL_SIZE is set but DATABASE_URL is SQLite, which does not use it"
                    .to_owned(),
            );
        }
        let messages_per_second = bounded_int(
            "ROOMZ_MESSAGES_PER_SECOND",
            get("ROOMZ_MESSAGES_PER_SECOND"),
            10,
            1_000_000,
            None,
            &mut warnings,
        )?;
        let message_burst = bounded_int(
            "ROOMZ_MESSAGE_BURST",
            get("ROOMZ_MESSAGE_BURST"),
            30,
            1_000_000,
            None,
            &mut warnings,
        )?;

        let trusted_proxies = trusted_proxies(get("ROOMZ_TRUSTED_PROXIES"))?;
        let metrics_bind = metrics_bind(get("ROOMZ_METRICS_BIND"))?;
        let tls = tls_files(get("ROOMZ_TLS_CERT"), get("ROOMZ_TLS_KEY"))?;
        let max_connections_per_user = bounded_int(
            "ROOMZ_MAX_CONNECTIONS_PER_USER",
            get("ROOMZ_MAX_CONNECTIONS_PER_USER"),
            20,
            100_000,
            None,
            &mut warnings,
        )?;
        let max_connections_per_address = bounded_int(
            "ROOMZ_MAX_CONNECTIONS_PER_ADDRESS",
            get("ROOMZ_MAX_CONNECTIONS_PER_ADDRESS"),
            1_000,
            10_000_000,
            None,
            &mut warnings,
        )?;

        let config = Config {
            jwt_secret,
            jwt_previous_secret,
            allowed_emails,
            allowlist_source,
            mailer,
            email_from,
            jwt_expiry_days,
            magic_link_expiry_minutes,
            magic_link_rate_limit,
            bind,
            public_url,
            cookie_secure,
            database,
            messages_per_second,
            message_burst,
            trusted_proxies,
            max_connections_per_user,
            max_connections_per_address,
            metrics_bind,
            tls,
        };
        Ok(Loaded { config, warnings })
    }
}

fn jwt_secret(value: Option<String>) -> Result<Secret, ConfigError> {
    let Some(value) = value.filter(|v| !v.is_empty()) else {
        return Err(ConfigError::new(
            "JWT_SECRET_KEY environment variable must be set",
            SECRET_HINT,
        ));
    };
    if value.chars().count() < 32 {
        return Err(ConfigError::new("JWT_SECRET_KEY must be at least 32 characters", SECRET_HINT));
    }
    Ok(Secret::new(value))
}

/// `ROOMZ_TRUSTED_PROXIES`: comma-separated IP addresses.
fn trusted_proxies(value: Option<String>) -> Result<Vec<std::net::IpAddr>, ConfigError> {
    let Some(value) = value else {
        return Ok(Vec::new());
    };
    value
        .split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(|entry| {
            entry.parse().map_err(|_| {
                ConfigError::new(
                    format!("ROOMZ_TRUSTED_PROXIES: {entry:?} is not an IP address"),
                    "list the proxies' addresses, for example ROOMZ_TRUSTED_PROXIES=127.0.0.1,::1",
                )
            })
        })
        .collect()
}

/// The optional previous key: as long as a key must be, and not the current one.
fn previous_secret(value: Option<String>, current: &Secret) -> Result<Option<Secret>, ConfigError> {
    let Some(value) = value.filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    if value.chars().count() < 32 {
        return Err(ConfigError::new(
            "JWT_PREVIOUS_SECRET_KEY must be at least 32 characters",
            "set it to the JWT_SECRET_KEY sessions were signed with before the rotation",
        ));
    }
    if value == current.expose() {
        return Err(ConfigError::new(
            "JWT_PREVIOUS_SECRET_KEY is the same as JWT_SECRET_KEY",
            "set it to the key before the rotation, or remove it",
        ));
    }
    Ok(Some(Secret::new(value)))
}

/// Parses an `ALLOWED_EMAILS` value: comma-separated, trimmed, lowercased, empty entries
/// skipped, every entry checked. Used at startup and again on SIGHUP.
pub fn parse_allowed_emails(value: &str) -> Result<Vec<String>, ConfigError> {
    let mut emails = Vec::new();
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let email = canonical_email(entry).map_err(|why| {
            ConfigError::new(
                format!("ALLOWED_EMAILS: {entry:?} is {why}"),
                "fix or remove that entry; entries are separated by commas",
            )
        })?;
        if !emails.contains(&email) {
            emails.push(email);
        }
    }
    Ok(emails)
}

/// Reads `ALLOWED_EMAILS` again from a `.env` file (on SIGHUP).
pub fn allowed_emails_from_file(path: &std::path::Path) -> Result<Vec<String>, ConfigError> {
    let hint = "fix the file; the previous allow-list stays in force";
    let unreadable = |e: dotenvy::Error| {
        ConfigError::new(format!("cannot read {}: {}", path.display(), env_file_error(&e)), hint)
    };
    for item in dotenvy::from_path_iter(path).map_err(unreadable)? {
        let (name, value) = item.map_err(unreadable)?;
        if name == "ALLOWED_EMAILS" {
            return parse_allowed_emails(&value);
        }
    }
    Err(ConfigError::new(format!("{} no longer sets ALLOWED_EMAILS", path.display()), hint))
}

/// Says what is wrong with a `.env` file without quoting it: the line dotenvy could not
/// parse may hold a secret. Only the variable's name, when the line starts with one.
pub fn env_file_error(error: &dotenvy::Error) -> String {
    match error {
        dotenvy::Error::LineParse(line, _) => {
            let line = line.trim_start();
            let line = line.strip_prefix("export ").unwrap_or(line);
            let name = line.split('=').next().unwrap_or_default().trim();
            let is_name = !name.is_empty()
                && !name.starts_with(|c: char| c.is_ascii_digit())
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
            if is_name && line.contains('=') {
                format!("the line that sets {name} cannot be parsed (an unclosed quote?)")
            } else {
                "a line is not NAME=value".to_owned()
            }
        }
        other => other.to_string(),
    }
}

fn allowed_emails(
    value: Option<String>,
    warnings: &mut Vec<String>,
) -> Result<Vec<String>, ConfigError> {
    let Some(value) = value else {
        return Err(ConfigError::new(
            "ALLOWED_EMAILS environment variable must be set",
            "list the addresses that may log in, comma-separated \
             (ALLOWED_EMAILS=alice@example.com,bob@example.com); set it empty to let nobody in",
        ));
    };
    let emails = parse_allowed_emails(&value)?;
    if emails.is_empty() {
        warnings.push(
            "ALLOWED_EMAILS is empty: nobody can log in until addresses are added \
             (edit .env and send SIGHUP, or restart)"
                .to_owned(),
        );
    }
    Ok(emails)
}

fn mailer(
    sender: Option<String>,
    api_key: Option<String>,
    base_url: Option<String>,
) -> Result<MailerConfig, ConfigError> {
    let sender = sender.unwrap_or_default().to_ascii_lowercase();
    match sender.as_str() {
        "" | "console" => Ok(MailerConfig::Console),
        "resend" => {
            let hint = "create an API key at https://resend.com/api-keys and set RESEND_API_KEY";
            let Some(api_key) = api_key.filter(|k| !k.is_empty()) else {
                return Err(ConfigError::new(
                    "RESEND_API_KEY must be set when EMAIL_SENDER=resend",
                    hint,
                ));
            };
            if !api_key.starts_with("re_")
                || api_key.len() < 8
                || api_key.contains(char::is_whitespace)
            {
                return Err(ConfigError::new(
                    "RESEND_API_KEY does not look like a Resend key (re_...)",
                    hint,
                ));
            }
            let base_url = base_url.unwrap_or_else(|| DEFAULT_RESEND_BASE_URL.to_owned());
            let base_url = http_url(&base_url).map_err(|why| {
                ConfigError::new(
                    format!("RESEND_BASE_URL is not a usable URL: {why}"),
                    "leave it unset for https://api.resend.com",
                )
            })?;
            Ok(MailerConfig::Resend { api_key: Secret::new(api_key), base_url })
        }
        other => Err(ConfigError::new(
            format!("EMAIL_SENDER must be \"console\" or \"resend\", not {other:?}"),
            "use EMAIL_SENDER=console while trying roomz out, EMAIL_SENDER=resend in production",
        )),
    }
}

fn email_from(value: Option<String>) -> Result<String, ConfigError> {
    let Some(value) = value.filter(|v| !v.is_empty()) else {
        return Ok(DEFAULT_EMAIL_FROM.to_owned());
    };
    let address = match (value.rfind('<'), value.strip_suffix('>')) {
        (Some(open), Some(inner)) => &inner[open + 1..],
        _ => value.as_str(),
    };
    let name_ok = !value.chars().any(crate::protocol::text::is_unsafe_char);
    match canonical_email(address) {
        Ok(_) if name_ok => Ok(value),
        _ => Err(ConfigError::new(
            format!("EMAIL_FROM is not a valid sender: {value:?}"),
            "use an address (noreply@example.com) or a name and an address \
             (roomz <noreply@example.com>) on a domain verified with Resend",
        )),
    }
}

fn bounded_int(
    name: &str,
    value: Option<String>,
    default: u32,
    max: u32,
    recommended_max: Option<u32>,
    warnings: &mut Vec<String>,
) -> Result<u32, ConfigError> {
    let Some(raw) = value else {
        return Ok(default);
    };
    let parsed = raw.parse::<u64>().ok().filter(|n| *n > 0);
    let Some(n) = parsed else {
        return Err(ConfigError::new(
            format!("{name} must be a positive integer, not {raw:?}"),
            format!("set {name} to a whole number such as {default}, or unset it for {default}"),
        ));
    };
    if n > u64::from(max) {
        return Err(ConfigError::new(
            format!("{name} must be at most {max}, not {n}"),
            format!("set {name} to a whole number between 1 and {max}"),
        ));
    }
    let n = n as u32;
    if let Some(recommended) = recommended_max.filter(|r| n > *r) {
        warnings.push(format!("{name}={n} is above the recommended maximum of {recommended}"));
    }
    Ok(n)
}

fn bind(value: Option<String>) -> Result<SocketAddr, ConfigError> {
    let raw = value.filter(|v| !v.is_empty()).unwrap_or_else(|| DEFAULT_BIND.to_owned());
    raw.parse().map_err(|_| {
        ConfigError::new(
            format!("the bind address (--bind or ROOMZ_BIND) must be IP:PORT, not {raw:?}"),
            "for example 127.0.0.1:8000 for this machine only, or 0.0.0.0:8000 for every interface",
        )
    })
}

/// `ROOMZ_TLS_CERT` and `ROOMZ_TLS_KEY`: both, or neither.
fn tls_files(
    cert: Option<String>,
    key: Option<String>,
) -> Result<Option<crate::server::tls::TlsFiles>, ConfigError> {
    let hint = "set both ROOMZ_TLS_CERT and ROOMZ_TLS_KEY (or --tls-cert and --tls-key) to PEM \
                files, or neither for plain HTTP";
    match (cert.filter(|c| !c.is_empty()), key.filter(|k| !k.is_empty())) {
        (None, None) => Ok(None),
        (Some(cert), Some(key)) => {
            Ok(Some(crate::server::tls::TlsFiles { cert: cert.into(), key: key.into() }))
        }
        (Some(_), None) => {
            Err(ConfigError::new("ROOMZ_TLS_CERT is set without ROOMZ_TLS_KEY", hint))
        }
        (None, Some(_)) => {
            Err(ConfigError::new("ROOMZ_TLS_KEY is set without ROOMZ_TLS_CERT", hint))
        }
    }
}

fn metrics_bind(value: Option<String>) -> Result<Option<SocketAddr>, ConfigError> {
    let Some(raw) = value.filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    raw.parse().map(Some).map_err(|_| {
        ConfigError::new(
            format!("ROOMZ_METRICS_BIND must be IP:PORT, not {raw:?}"),
            "for example 127.0.0.1:9100 (keep it off the public network), or unset it",
        )
    })
}

fn http_url(raw: &str) -> Result<Url, String> {
    let url = Url::parse(raw).map_err(|e| e.to_string())?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("the scheme must be http or https, not {:?}", url.scheme()));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("it has no host".to_owned());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("it must not have a query (?...) or a fragment (#...)".to_owned());
    }
    Ok(url)
}

fn public_url(value: Option<String>) -> Result<Option<Url>, ConfigError> {
    let Some(raw) = value.filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let url = http_url(&raw).map_err(|why| {
        ConfigError::new(
            format!("ROOMZ_PUBLIC_URL is not a usable URL ({why}): {raw:?}"),
            "set it to the address people open, such as https://chat.example.com",
        )
    })?;
    Ok(Some(url))
}

fn cookie_secure(value: Option<String>) -> Result<Option<bool>, ConfigError> {
    let Some(raw) = value.filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    match raw.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(Some(true)),
        "0" | "false" | "no" | "off" => Ok(Some(false)),
        _ => Err(ConfigError::new(
            format!("ROOMZ_COOKIE_SECURE must be true or false, not {raw:?}"),
            "unset it to mark the cookie Secure exactly when ROOMZ_PUBLIC_URL is https",
        )),
    }
}

fn default_data_dir() -> Option<PathBuf> {
    directories::ProjectDirs::from("", "", "roomz").map(|dirs| dirs.data_dir().to_path_buf())
}

/// `DATABASE_URL` alone, for commands that need nothing else (`roomz backup`).
pub fn database_config(value: Option<String>) -> Result<DatabaseConfig, ConfigError> {
    database(value, default_data_dir, 10)
}

fn database(
    value: Option<String>,
    data_dir: impl FnOnce() -> Option<PathBuf>,
    pool_size: u32,
) -> Result<DatabaseConfig, ConfigError> {
    let Some(raw) = value.filter(|v| !v.is_empty()) else {
        let dir = data_dir().ok_or_else(|| {
            ConfigError::new(
                "cannot find a home directory for the default database",
                "set DATABASE_URL, for example DATABASE_URL=sqlite:/var/lib/roomz/roomz.db",
            )
        })?;
        return Ok(DatabaseConfig::Sqlite { path: dir.join("roomz.db") });
    };
    let hint = "use DATABASE_URL=sqlite:PATH (for example sqlite:/var/lib/roomz/roomz.db) or \
                postgres://USER:PASSWORD@HOST/DATABASE";
    if raw.starts_with("postgres://") || raw.starts_with("postgresql://") {
        // The value is never echoed: it may hold a password.
        let parsed = Url::parse(&raw).map_err(|e| {
            ConfigError::new(format!("DATABASE_URL is not a usable PostgreSQL URL ({e})"), hint)
        })?;
        // The server is the URL's host, or a `host=` option (a Unix socket's folder).
        let no_host = parsed.host_str().is_none_or(str::is_empty)
            && !parsed.query_pairs().any(|(key, _)| key == "host");
        if no_host || parsed.path().trim_matches('/').is_empty() {
            return Err(ConfigError::new(
                "DATABASE_URL must name the PostgreSQL server and the database",
                hint,
            ));
        }
        return Ok(DatabaseConfig::Postgres { url: Secret::new(raw), pool_size });
    }
    let Some(rest) = raw.strip_prefix("sqlite://").or_else(|| raw.strip_prefix("sqlite:")) else {
        // The value is not echoed: a URL of another database may hold a password.
        let scheme = raw
            .split_once(':')
            .map(|(scheme, _)| scheme)
            .filter(|s| s.len() <= 20 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '+'));
        let got = scheme.map(|s| format!(" (this one starts with {s}:)")).unwrap_or_default();
        return Err(ConfigError::new(
            format!("DATABASE_URL must start with sqlite: or postgres:{got}"),
            hint,
        ));
    };
    if rest.is_empty()
        || rest.contains(":memory:")
        || rest.contains('?')
        || rest.contains("mode=memory")
    {
        return Err(ConfigError::new(
            format!("DATABASE_URL must name a database file, not {raw:?}"),
            format!("{hint}; in-memory databases and URL options are not accepted"),
        ));
    }
    Ok(DatabaseConfig::Sqlite { path: PathBuf::from(rest) })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const KEY: &str = "0123456789abcdef0123456789abcdef";

    fn load(vars: &[(&str, &str)]) -> Result<Loaded, ConfigError> {
        let mut map: HashMap<String, String> = HashMap::new();
        map.insert("JWT_SECRET_KEY".into(), KEY.into());
        map.insert("ALLOWED_EMAILS".into(), "a@example.com".into());
        map.insert("DATABASE_URL".into(), "sqlite:/tmp/x.db".into());
        for (k, v) in vars {
            if v.is_empty() && *k != "ALLOWED_EMAILS" {
                map.remove(*k);
            } else {
                map.insert((*k).into(), (*v).into());
            }
        }
        Config::from_lookup(|k| map.get(k).cloned(), AllowListSource::Environment)
    }

    fn error(vars: &[(&str, &str)]) -> String {
        load(vars).unwrap_err().message
    }

    #[test]
    fn defaults() {
        let c = load(&[]).unwrap().config;
        assert_eq!(c.jwt_expiry_days, 30);
        assert_eq!(c.magic_link_expiry_minutes, 15);
        assert_eq!(c.magic_link_rate_limit, 5);
        assert_eq!(c.bind.to_string(), "127.0.0.1:8000");
        assert_eq!(c.mailer, MailerConfig::Console);
        assert_eq!(c.email_from, DEFAULT_EMAIL_FROM);
        assert!(!format!("{c:?}").contains(KEY), "the key leaked into Debug");
    }

    #[test]
    fn secret_key_rules() {
        assert_eq!(
            error(&[("JWT_SECRET_KEY", "")]),
            "JWT_SECRET_KEY environment variable must be set"
        );
        assert_eq!(
            error(&[("JWT_SECRET_KEY", "short")]),
            "JWT_SECRET_KEY must be at least 32 characters"
        );
    }

    #[test]
    fn allow_list_is_canonical_and_checked() {
        let c = load(&[("ALLOWED_EMAILS", " Alice@Example.com, bob@example.com,,")]).unwrap();
        assert_eq!(c.config.allowed_emails, ["alice@example.com", "bob@example.com"]);
        assert!(error(&[("ALLOWED_EMAILS", "a@example.com,bad@")]).contains("\"bad@\""));
        let empty = load(&[("ALLOWED_EMAILS", "")]).unwrap();
        assert!(empty.warnings.iter().any(|w| w.contains("nobody can log in")));
    }

    #[test]
    fn integers_must_be_positive() {
        for value in ["0", "-1", "abc", "1.5", "99999999999"] {
            assert!(
                error(&[("JWT_EXPIRY_DAYS", value)]).starts_with("JWT_EXPIRY_DAYS must be"),
                "{value}"
            );
        }
        assert!(error(&[("MAGIC_LINK_RATE_LIMIT", "x")]).contains("MAGIC_LINK_RATE_LIMIT"));
    }

    #[test]
    fn resend_needs_a_key() {
        assert!(error(&[("EMAIL_SENDER", "smtp")]).contains("\"smtp\""));
        assert!(error(&[("EMAIL_SENDER", "resend")]).contains("RESEND_API_KEY must be set"));
        assert!(
            error(&[("EMAIL_SENDER", "resend"), ("RESEND_API_KEY", "sk_123456")]).contains("re_")
        );
        let ok = load(&[("EMAIL_SENDER", "resend"), ("RESEND_API_KEY", "re_12345678")]).unwrap();
        assert!(matches!(ok.config.mailer, MailerConfig::Resend { .. }));
    }

    #[test]
    fn urls_and_database() {
        assert!(error(&[("ROOMZ_PUBLIC_URL", "ftp://x")]).contains("ROOMZ_PUBLIC_URL"));
        assert!(error(&[("ROOMZ_BIND", "localhost")]).contains("IP:PORT"));
        assert!(error(&[("DATABASE_URL", "sqlite::memory:")]).contains("database file"));
        let other = error(&[("DATABASE_URL", "mysql://user:hunter2@db/roomz")]);
        assert!(other.contains("sqlite:") && other.contains("mysql:"), "{other}");
        assert!(!other.contains("hunter2"), "a password must not be echoed: {other}");
        let c = load(&[("DATABASE_URL", "sqlite:///var/lib/roomz.db")]).unwrap().config;
        assert_eq!(c.database, DatabaseConfig::Sqlite { path: "/var/lib/roomz.db".into() });
        assert!(error(&[("EMAIL_FROM", "nobody")]).contains("EMAIL_FROM"));
        assert!(load(&[("EMAIL_FROM", "Team <team@example.com>")]).is_ok());
    }

    #[test]
    fn postgres_urls_pool_sizes_and_no_password_shown() {
        let url = "postgres://roomz:hunter2@db.internal:5433/chat";
        let loaded = load(&[("DATABASE_URL", url), ("DATABASE_POOL_SIZE", "25")]).unwrap();
        let DatabaseConfig::Postgres { pool_size, .. } = &loaded.config.database else {
            panic!("{:?}", loaded.config.database)
        };
        assert_eq!(*pool_size, 25);
        let shown = format!("{:?}", loaded.config.database);
        assert_eq!(shown, r#"Postgres { at: "db.internal:5433/chat", pool_size: 25 }"#);
        let default = load(&[("DATABASE_URL", "postgresql://db/chat")]).unwrap().config.database;
        assert!(matches!(default, DatabaseConfig::Postgres { pool_size: 10, .. }));
        for bad in ["postgres://roomz:hunter2@/chat", "postgres://roomz:hunter2@db"] {
            let said = error(&[("DATABASE_URL", bad)]);
            assert!(said.contains("DATABASE_URL") && !said.contains("hunter2"), "{said}");
        }
        assert!(
            error(&[("DATABASE_URL", url), ("DATABASE_POOL_SIZE", "0")])
                .contains("DATABASE_POOL_SIZE")
        );
        let sqlite_with_pool = load(&[("DATABASE_POOL_SIZE", "5")]).unwrap();
        assert!(sqlite_with_pool.warnings.iter().any(|w| w.contains("DATABASE_POOL_SIZE")));
    }
}
