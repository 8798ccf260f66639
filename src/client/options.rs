//! The client's parameters, with the names and defaults of the configuration reference,
//! and the builder that checks them.

use std::path::PathBuf;
use std::time::Duration;

use url::Url;

use super::error::ClientError;
use super::{AsyncClient, config};
use crate::protocol::text::canonical_display_name;

/// The environment variable that names the display name (it wins over the config file).
pub const DISPLAY_NAME_VAR: &str = "ROOMZ_DISPLAY_NAME";

/// Every parameter of a client. Build one with [`AsyncClient::builder`].
#[derive(Clone, PartialEq)]
#[non_exhaustive]
pub struct ClientOptions {
    /// Base URL of the server, such as `https://chat.example.com`.
    pub server_url: Url,
    /// A magic-link token, or the whole pasted link, exchanged for a session on connect.
    pub session_token: Option<String>,
    /// Reconnect after the connection drops (default `true`).
    pub reconnect: bool,
    /// Wait before the first reconnection attempt (default 1 s); it doubles with each
    /// failed attempt, with jitter, up to `max_reconnect_delay`.
    pub reconnect_delay: Duration,
    /// Longest wait between reconnection attempts (default 30 s).
    pub max_reconnect_delay: Duration,
    /// Failed reconnection attempts in a row before giving up (default 5); an attempt
    /// that connects starts the count again.
    pub max_reconnect_attempts: u32,
    /// Longest wait for the server: HTTP calls, the WebSocket handshake, `welcome`, and the
    /// answer to each request (default 10 s).
    pub connection_timeout: Duration,
    /// Where the session is kept between runs (default: nowhere).
    pub session_cache_file: Option<PathBuf>,
    /// The display name to set on connect: this parameter, else `ROOMZ_DISPLAY_NAME`, else
    /// `display_name` under `[client]` in `~/.roomz/config.toml`.
    pub display_name: Option<String>,
}

impl std::fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientOptions")
            .field("server_url", &self.server_url.as_str())
            .field("session_token", &self.session_token.as_ref().map(|_| "<redacted>"))
            .field("reconnect", &self.reconnect)
            .field("reconnect_delay", &self.reconnect_delay)
            .field("max_reconnect_delay", &self.max_reconnect_delay)
            .field("max_reconnect_attempts", &self.max_reconnect_attempts)
            .field("connection_timeout", &self.connection_timeout)
            .field("session_cache_file", &self.session_cache_file)
            .field("display_name", &self.display_name)
            .finish()
    }
}

/// Builds an [`AsyncClient`]. Every setter has the default of the configuration reference.
#[derive(Debug, Clone)]
#[must_use]
pub struct ClientBuilder {
    server_url: String,
    options: ClientOptions,
    display_name_set: bool,
    config_file: Option<PathBuf>,
}

impl ClientBuilder {
    pub(super) fn new(server_url: &str) -> Self {
        let placeholder = Url::parse("http://localhost").expect("a constant URL");
        Self {
            server_url: server_url.to_owned(),
            options: ClientOptions {
                server_url: placeholder,
                session_token: None,
                reconnect: true,
                reconnect_delay: Duration::from_secs(1),
                max_reconnect_delay: Duration::from_secs(30),
                max_reconnect_attempts: 5,
                connection_timeout: Duration::from_secs(10),
                session_cache_file: None,
                display_name: None,
            },
            display_name_set: false,
            config_file: config::default_path(),
        }
    }

    /// A magic-link token, or the whole link as pasted from the email. `connect` trades it
    /// for a session (and caches it, with `session_cache_file`).
    ///
    /// ```
    /// let client = roomz::AsyncClient::builder("http://localhost:8000")
    ///     .session_token("https://chat.example.com/auth/verify?token=q3J0x2V6")
    ///     .build()?;
    /// assert!(client.options().session_token.is_some());
    /// # Ok::<(), roomz::client::ClientError>(())
    /// ```
    pub fn session_token(mut self, token: impl Into<String>) -> Self {
        self.options.session_token = Some(token.into());
        self
    }

    /// Whether to reconnect when the connection drops (default `true`). Without it, a drop
    /// ends the client with [`ClientError::Disconnected`].
    ///
    /// ```
    /// let client = roomz::AsyncClient::builder("http://localhost:8000").reconnect(false).build()?;
    /// assert!(!client.options().reconnect);
    /// # Ok::<(), roomz::client::ClientError>(())
    /// ```
    pub fn reconnect(mut self, reconnect: bool) -> Self {
        self.options.reconnect = reconnect;
        self
    }

    /// The wait before the first reconnection attempt (default 1 s). Later attempts wait
    /// twice as long as the one before, with random jitter, up to `max_reconnect_delay`.
    ///
    /// ```
    /// use std::time::Duration;
    /// let client = roomz::AsyncClient::builder("http://localhost:8000")
    ///     .reconnect_delay(Duration::from_millis(250))
    ///     .build()?;
    /// assert_eq!(client.options().reconnect_delay, Duration::from_millis(250));
    /// # Ok::<(), roomz::client::ClientError>(())
    /// ```
    pub fn reconnect_delay(mut self, delay: Duration) -> Self {
        self.options.reconnect_delay = delay;
        self
    }

    /// The longest wait between reconnection attempts (default 30 s).
    ///
    /// ```
    /// use std::time::Duration;
    /// let client = roomz::AsyncClient::builder("http://localhost:8000")
    ///     .max_reconnect_delay(Duration::from_secs(5))
    ///     .build()?;
    /// assert_eq!(client.options().max_reconnect_delay, Duration::from_secs(5));
    /// # Ok::<(), roomz::client::ClientError>(())
    /// ```
    pub fn max_reconnect_delay(mut self, delay: Duration) -> Self {
        self.options.max_reconnect_delay = delay;
        self
    }

    /// How many failed reconnection attempts in a row end the client (default 5); it then
    /// reports [`ClientError::GaveUp`].
    ///
    /// ```
    /// let client = roomz::AsyncClient::builder("http://localhost:8000")
    ///     .max_reconnect_attempts(20)
    ///     .build()?;
    /// assert_eq!(client.options().max_reconnect_attempts, 20);
    /// # Ok::<(), roomz::client::ClientError>(())
    /// ```
    pub fn max_reconnect_attempts(mut self, attempts: u32) -> Self {
        self.options.max_reconnect_attempts = attempts;
        self
    }

    /// The longest wait for the server, per HTTP call, per connection attempt and per
    /// request on a connection (`rooms`, `join`, `history`...): past it the call fails
    /// with [`ClientError::Timeout`] (default 10 s). A request made while the client is
    /// reconnecting waits for the connection first.
    ///
    /// ```
    /// use std::time::Duration;
    /// let client = roomz::AsyncClient::builder("http://localhost:8000")
    ///     .connection_timeout(Duration::from_secs(3))
    ///     .build()?;
    /// assert_eq!(client.options().connection_timeout, Duration::from_secs(3));
    /// # Ok::<(), roomz::client::ClientError>(())
    /// ```
    pub fn connection_timeout(mut self, timeout: Duration) -> Self {
        self.options.connection_timeout = timeout;
        self
    }

    /// Where to keep the session between runs. After a login the session is written there
    /// (mode 0600, atomically); the next run uses it without a new magic link.
    /// [`AsyncClient::clear_cached_session`] deletes it.
    ///
    /// ```
    /// let client = roomz::AsyncClient::builder("http://localhost:8000")
    ///     .session_cache_file("/tmp/roomz-doc-session.json")
    ///     .build()?;
    /// assert!(client.options().session_cache_file.is_some());
    /// # Ok::<(), roomz::client::ClientError>(())
    /// ```
    pub fn session_cache_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.options.session_cache_file = Some(path.into());
        self
    }

    /// The display name to set on connect. Without it, `ROOMZ_DISPLAY_NAME` is used, else
    /// `display_name` under `[client]` in `~/.roomz/config.toml`, else none (others then see
    /// just the email).
    ///
    /// ```
    /// let client = roomz::AsyncClient::builder("http://localhost:8000")
    ///     .display_name("Alice")
    ///     .build()?;
    /// assert_eq!(client.options().display_name.as_deref(), Some("Alice"));
    /// # Ok::<(), roomz::client::ClientError>(())
    /// ```
    pub fn display_name(mut self, name: impl Into<String>) -> Self {
        self.options.display_name = Some(name.into());
        self.display_name_set = true;
        self
    }

    /// Reads the `[client]` section from this file instead of `~/.roomz/config.toml`.
    pub fn config_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.config_file = Some(path.into());
        self
    }

    /// Checks the parameters and makes the client. It does not connect: see
    /// [`AsyncClient::connect`].
    pub fn build(self) -> Result<AsyncClient, ClientError> {
        let mut options = self.options;
        options.server_url = parse_server_url(&self.server_url)?;
        check_duration("reconnect_delay", options.reconnect_delay)?;
        check_duration("max_reconnect_delay", options.max_reconnect_delay)?;
        check_duration("connection_timeout", options.connection_timeout)?;
        let named = match options.display_name.take() {
            Some(name) if self.display_name_set => Some((name, NameSource::Builder)),
            _ => resolve_display_name(
                std::env::var(DISPLAY_NAME_VAR).ok(),
                self.config_file.as_deref(),
            )?,
        };
        if let Some((name, source)) = named {
            options.display_name =
                canonical_display_name(&name).map_err(|e| source.error(e.to_string()))?;
        }
        Ok(AsyncClient::from_options(options))
    }
}

/// The longest wait any duration parameter may ask for.
const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

fn check_duration(name: &'static str, value: Duration) -> Result<(), ClientError> {
    let reason = if value.is_zero() {
        "it must be more than zero"
    } else if value > MAX_DURATION {
        "it must be at most a day"
    } else {
        return Ok(());
    };
    Err(ClientError::InvalidOption { name, reason: reason.to_owned() })
}

/// Where the display name came from, so an error about it points there.
#[derive(Debug, Clone, PartialEq)]
enum NameSource {
    Builder,
    Environment,
    File(PathBuf),
}

impl NameSource {
    fn error(self, reason: String) -> ClientError {
        match self {
            Self::Builder => ClientError::InvalidOption { name: "display_name", reason },
            Self::Environment => ClientError::InvalidOption { name: DISPLAY_NAME_VAR, reason },
            Self::File(path) => ClientError::Config { path, reason },
        }
    }
}

/// The display name from the environment, else from the configuration file.
fn resolve_display_name(
    from_env: Option<String>,
    config_file: Option<&std::path::Path>,
) -> Result<Option<(String, NameSource)>, ClientError> {
    if let Some(name) = from_env.filter(|n| !n.trim().is_empty()) {
        return Ok(Some((name, NameSource::Environment)));
    }
    let Some(path) = config_file else {
        return Ok(None);
    };
    let name = config::load(path)?.display_name;
    Ok(name.map(|name| (name, NameSource::File(path.to_owned()))))
}

/// Checks a server URL: http or https, with a host, and no query or fragment.
pub fn parse_server_url(raw: &str) -> Result<Url, ClientError> {
    let invalid =
        |reason: &str| ClientError::InvalidUrl { url: raw.to_owned(), reason: reason.to_owned() };
    let url = Url::parse(raw.trim()).map_err(|e| invalid(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("use http:// or https://"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("it has no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("it must not have a query or a fragment"));
    }
    Ok(url)
}

/// The URL of `path` on the server (which may live under a path prefix).
pub fn endpoint(server: &Url, path: &str) -> Url {
    let mut url = server.clone();
    let base = url.path().trim_end_matches('/').to_owned();
    url.set_path(&format!("{base}{path}"));
    url
}

/// The WebSocket URL: `ws://` for http, `wss://` for https.
pub fn websocket_url(server: &Url) -> Url {
    let mut url = endpoint(server, crate::protocol::http::WS_PATH);
    let scheme = if server.scheme() == "https" { "wss" } else { "ws" };
    url.set_scheme(scheme).expect("ws and wss are valid schemes for an http URL");
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert!(parse_server_url("ftp://x").is_err());
        assert!(parse_server_url("localhost:8000").is_err());
        let url = parse_server_url("https://chat.example.com/team/").unwrap();
        assert_eq!(websocket_url(&url).as_str(), "wss://chat.example.com/team/ws");
        assert_eq!(
            endpoint(&url, "/auth/verify").as_str(),
            "https://chat.example.com/team/auth/verify"
        );
    }

    #[test]
    fn display_name_prefers_the_environment_then_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.toml");
        std::fs::write(&file, "[client]\ndisplay_name = \"From File\"\n").unwrap();
        let env = Some("From Env".to_owned());
        let name = |env, file| resolve_display_name(env, file).unwrap().map(|(name, _)| name);
        assert_eq!(name(env, Some(&file)).as_deref(), Some("From Env"));
        assert_eq!(name(None, Some(&file)).as_deref(), Some("From File"));
        assert_eq!(name(None, Some(&dir.path().join("none"))), None);
    }

    #[test]
    fn a_bad_display_name_is_blamed_on_where_it_came_from() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.toml");
        let too_long = "x".repeat(500);
        std::fs::write(&file, format!("[client]\ndisplay_name = \"{too_long}\"\n")).unwrap();
        let from_file = ClientBuilder::new("http://localhost:8000").config_file(&file).build();
        if std::env::var_os(DISPLAY_NAME_VAR).is_none() {
            assert!(
                matches!(&from_file, Err(ClientError::Config { path, .. }) if *path == file),
                "{from_file:?}"
            );
        }
        let from_builder = ClientBuilder::new("http://localhost:8000")
            .config_file(&file)
            .display_name(too_long.as_str())
            .build();
        assert!(
            matches!(from_builder, Err(ClientError::InvalidOption { name: "display_name", .. })),
            "{from_builder:?}"
        );
    }

    #[test]
    fn durations_must_be_usable() {
        let build = |builder: ClientBuilder| builder.config_file("/nonexistent").build();
        let base = || ClientBuilder::new("http://localhost:8000");
        let zero = build(base().connection_timeout(Duration::ZERO));
        assert!(
            matches!(zero, Err(ClientError::InvalidOption { name: "connection_timeout", .. })),
            "{zero:?}"
        );
        let huge = build(base().reconnect_delay(Duration::MAX));
        assert!(
            matches!(huge, Err(ClientError::InvalidOption { name: "reconnect_delay", .. })),
            "{huge:?}"
        );
        assert!(build(base().max_reconnect_delay(Duration::from_secs(3600))).is_ok());
    }

    #[test]
    fn debug_hides_the_token() {
        let builder = ClientBuilder::new("http://localhost:8000").session_token("secret-token");
        assert!(!format!("{builder:?}").contains("secret-token"));
    }

    #[test]
    fn defaults_follow_the_reference() {
        let client = ClientBuilder::new("http://localhost:8000")
            .config_file("/nonexistent")
            .build()
            .unwrap();
        let o = client.options();
        assert!(o.reconnect);
        assert_eq!(o.reconnect_delay, Duration::from_secs(1));
        assert_eq!(o.max_reconnect_attempts, 5);
        assert_eq!(o.connection_timeout, Duration::from_secs(10));
        assert_eq!(o.session_cache_file, None);
    }
}
