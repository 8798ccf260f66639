//! The `roomz` binary: parses the command line and hands over to the library.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use roomz::protocol::text::canonical_email;
use roomz::server::auth::session::SessionKeys;
use roomz::server::clock::rfc3339;
use roomz::server::config::{
    AllowListSource, Config, ConfigError, Loaded, VARIABLES_HELP, env_file_error,
};
use roomz::server::{ServerOptions, start};
use tokio::signal::unix::{SignalKind, signal};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::LevelFilter;

#[derive(Parser)]
#[command(name = "roomz", version, about = "Self-hosted chat for people who live in the terminal")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server: HTTP and WebSocket, magic-link login, SQLite storage.
    #[command(after_help = VARIABLES_HELP)]
    Serve {
        /// Address to listen on [env: ROOMZ_BIND] [default: 127.0.0.1:8000]
        #[arg(long, value_name = "IP:PORT")]
        bind: Option<String>,
        /// Serve HTTPS with this PEM certificate chain [env: ROOMZ_TLS_CERT]
        #[arg(long, value_name = "FILE", requires = "tls_key")]
        tls_cert: Option<String>,
        /// The certificate's PEM private key [env: ROOMZ_TLS_KEY]
        #[arg(long, value_name = "FILE", requires = "tls_cert")]
        tls_key: Option<String>,
    },
    /// Print a session for EMAIL, signed with the server's key, for a bot or a script.
    ///
    /// Reads the server's configuration (.env and the environment) like `roomz serve`. The
    /// session works like one from a magic link: with `Authorization: Bearer`, or with
    /// `AsyncClient`'s session cache.
    Token {
        /// An address on ALLOWED_EMAILS.
        email: String,
        /// How long the session lasts [default: JWT_EXPIRY_DAYS]
        #[arg(long, value_name = "DAYS", value_parser = clap::value_parser!(u32).range(1..=3650))]
        days: Option<u32>,
    },
    /// Make a consistent copy of the live SQLite database at PATH (a new file).
    ///
    /// The database is DATABASE_URL (from .env or the environment), as `roomz serve` reads
    /// it. The server may keep running: the copy is one snapshot. To restore, stop the
    /// server, put the copy in the database's place (removing any -wal and -shm file beside
    /// it), and start the server.
    Backup {
        /// The new file.
        path: std::path::PathBuf,
    },
    /// Copy a SQLite database into a new PostgreSQL one (stop the server first).
    ///
    /// The target is DATABASE_URL (from .env or the environment), or --to. Everything is
    /// copied in one transaction, into a database with no users yet, and the counts are
    /// checked; then start the nodes on the PostgreSQL database.
    CopyDatabase {
        /// The SQLite database: sqlite:PATH
        #[arg(long, value_name = "sqlite:PATH")]
        from: String,
        /// The PostgreSQL database [default: DATABASE_URL]. A password here shows in the
        /// process list: prefer DATABASE_URL.
        #[arg(long, value_name = "postgres://...")]
        to: Option<String>,
    },
    /// Open the full-screen chat: log in with a magic link once, then chat.
    #[command(after_help = CHAT_HELP)]
    Chat {
        /// The server [env: ROOMZ_SERVER] [default: server_url under [client] in
        /// ~/.roomz/config.toml, else http://127.0.0.1:8000]
        #[arg(long, value_name = "URL")]
        server: Option<String>,
    },
}

const CHAT_HELP: &str = "\
Files: ~/.roomz/config.toml (settings; see config.example.toml), ~/.roomz/session.json (the
session, kept after the first login), ~/.cache/roomz/chat.log (the log; RUST_LOG filters it).
ROOMZ_DISPLAY_NAME sets your display name. In the chat, F1 or /help lists keys and commands.";

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Serve { bind, tls_cert, tls_key } => serve(Flags { bind, tls_cert, tls_key }),
        Command::Chat { server } => chat(server),
        Command::Token { email, days } => token(&email, days),
        Command::CopyDatabase { from, to } => copy_database(&from, to),
        Command::Backup { path } => backup(&path),
    }
}

fn backup(path: &std::path::Path) -> ExitCode {
    // Only DATABASE_URL matters here (from .env in the working directory, as for serve).
    let _ = dotenvy::from_path(".env");
    let database = match roomz::server::config::database_config(std::env::var("DATABASE_URL").ok())
    {
        Ok(database) => database,
        Err(error) => return fail(&error),
    };
    let database = match &database {
        roomz::server::config::DatabaseConfig::Sqlite { path } => path.clone(),
        roomz::server::config::DatabaseConfig::Postgres { .. } => {
            return fail(&ConfigError {
                message: "DATABASE_URL is PostgreSQL: back it up with pg_dump".into(),
                hint:
                    "pg_dump --format=custom --file=roomz.dump \"$DATABASE_URL\" (docs/deploy.md)"
                        .into(),
            });
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("Error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let made = runtime.block_on(roomz::server::store::sqlite::backup::backup(&database, path));
    match made {
        Ok(backup) => {
            println!(
                "backed up {} to {}: {} messages, {} users, {} bytes",
                database.display(),
                path.display(),
                backup.messages,
                backup.users,
                backup.bytes
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("Error: the backup failed: {error}");
            eprintln!("  hint: give a new file in a folder you can write to");
            ExitCode::FAILURE
        }
    }
}

fn copy_database(from: &str, to: Option<String>) -> ExitCode {
    let Some(path) = from.strip_prefix("sqlite://").or_else(|| from.strip_prefix("sqlite:")) else {
        return fail(&ConfigError {
            message: "--from must be a SQLite database, sqlite:PATH".into(),
            hint: "for example --from sqlite:/var/lib/roomz/roomz.db".into(),
        });
    };
    if !std::path::Path::new(path).is_file() {
        return fail(&ConfigError {
            message: format!("there is no SQLite database at {path}"),
            hint: "give the file DATABASE_URL named before the move".into(),
        });
    }
    let _ = dotenvy::from_path(".env");
    let target = to.or_else(|| std::env::var("DATABASE_URL").ok()).unwrap_or_default();
    if !(target.starts_with("postgres://") || target.starts_with("postgresql://")) {
        return fail(&ConfigError {
            message: "the target must be a PostgreSQL database (DATABASE_URL or --to)".into(),
            hint: "set DATABASE_URL=postgres://USER:PASSWORD@HOST/DATABASE".into(),
        });
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("Error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        use roomz::server::store::{copy, postgres::PgStore, sqlite::SqliteStore};
        let source = match SqliteStore::open(std::path::Path::new(path)).await {
            Ok(store) => store,
            Err(error) => {
                eprintln!("Error: cannot open {path}: {error}");
                return ExitCode::FAILURE;
            }
        };
        let node = roomz::server::cluster::new_node_id();
        let target = match PgStore::open(&target, 2, node).await {
            Ok(store) => store,
            Err(error) => {
                eprintln!("Error: cannot open the PostgreSQL database: {error}");
                eprintln!("  hint: check DATABASE_URL and that the server accepts connections");
                return ExitCode::FAILURE;
            }
        };
        match copy::copy(&source, &target).await {
            Ok(copied) => {
                println!(
                    "copied {} users, {} rooms, {} memberships, {} messages, {} magic links, {} \
                     rate-limit records",
                    copied.users,
                    copied.rooms,
                    copied.members,
                    copied.messages,
                    copied.magic_links,
                    copied.link_requests
                );
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("Error: {error}");
                ExitCode::FAILURE
            }
        }
    })
}

fn token(email: &str, days: Option<u32>) -> ExitCode {
    let config = match load_config(Flags::default()) {
        Ok(loaded) => loaded.config,
        Err(error) => return fail(&error),
    };
    let email = match canonical_email(email) {
        Ok(email) => email,
        Err(error) => {
            return fail(&ConfigError {
                message: error.to_string(),
                hint: "give the address, as in alice@example.com".into(),
            });
        }
    };
    if !config.allowed_emails.contains(&email) {
        return fail(&ConfigError {
            message: format!(
                "{email} is not on ALLOWED_EMAILS: the server would refuse its session"
            ),
            hint: "add it to ALLOWED_EMAILS first".into(),
        });
    }
    let keys = SessionKeys::new(&config.jwt_secret, days.unwrap_or(config.jwt_expiry_days));
    let (token, session) = keys.issue(&email, chrono::Utc::now().timestamp_millis());
    println!("{token}");
    eprintln!("a session for {email}, valid until {}", rfc3339(session.expires_at));
    ExitCode::SUCCESS
}

fn chat(server: Option<String>) -> ExitCode {
    let server = server.or_else(|| std::env::var("ROOMZ_SERVER").ok().filter(|s| !s.is_empty()));
    let options = roomz::tui::ChatOptions { server, ..Default::default() };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("Error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(roomz::tui::run(options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("Error: {error}");
            ExitCode::from(2)
        }
    }
}

/// Reads the server's configuration: `.env` in the working directory, then the environment
/// (which wins), then `--bind`.
/// What `roomz serve`'s flags set; each wins over its variable.
#[derive(Default)]
struct Flags {
    bind: Option<String>,
    tls_cert: Option<String>,
    tls_key: Option<String>,
}

fn load_config(flags: Flags) -> Result<Loaded, ConfigError> {
    // Where ALLOWED_EMAILS comes from decides what SIGHUP can change: only .env is re-read.
    let allowlist_in_environment = std::env::var_os("ALLOWED_EMAILS").is_some();
    // Only the working directory's .env: never one found further up the tree.
    let env_path = std::path::Path::new(".env");
    let env_file = match dotenvy::from_path(env_path) {
        Ok(()) => Some(std::env::current_dir().map_or(env_path.to_owned(), |d| d.join(".env"))),
        Err(error) if error.not_found() => None,
        Err(error) => {
            return Err(ConfigError {
                message: format!("cannot read .env: {}", env_file_error(&error)),
                hint: "fix the line it names; each line is NAME=value".to_owned(),
            });
        }
    };
    let source = match env_file {
        Some(path) if !allowlist_in_environment => AllowListSource::EnvFile(path),
        _ => AllowListSource::Environment,
    };
    let lookup = |name: &str| {
        let flag = match name {
            "ROOMZ_BIND" => &flags.bind,
            "ROOMZ_TLS_CERT" => &flags.tls_cert,
            "ROOMZ_TLS_KEY" => &flags.tls_key,
            _ => &None,
        };
        flag.clone().or_else(|| std::env::var_os(name).map(|v| v.to_string_lossy().into_owned()))
    };
    Config::from_lookup(lookup, source)
}

fn serve(flags: Flags) -> ExitCode {
    let loaded = match load_config(flags) {
        Ok(loaded) => loaded,
        Err(error) => return fail(&error),
    };
    init_tracing();
    for warning in &loaded.warnings {
        tracing::warn!("{warning}");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("Error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(loaded.config))
}

async fn run(config: Config) -> ExitCode {
    // Listening before the store opens: a signal during start-up must not kill the process
    // with its default action.
    let signals = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    );
    let (Ok(mut interrupt), Ok(mut terminate), Ok(mut hangup)) = signals else {
        eprintln!("Error: cannot listen for signals");
        eprintln!("  hint: the process may not handle signals here; run it from a normal shell");
        return ExitCode::FAILURE;
    };
    let handle = match start(config, ServerOptions::default()).await {
        Ok(handle) => handle,
        Err(error) => {
            eprintln!("Error: {error}");
            eprintln!("  hint: {}", error.hint());
            return ExitCode::FAILURE;
        }
    };
    loop {
        tokio::select! {
            _ = interrupt.recv() => break,
            _ = terminate.recv() => break,
            _ = hangup.recv() => {
                handle.reload_allowlist();
                handle.reload_tls();
            }
        }
    }
    handle.shutdown().await;
    ExitCode::SUCCESS
}

fn fail(error: &ConfigError) -> ExitCode {
    eprintln!("Error: {}", error.message);
    eprintln!("  hint: {}", error.hint);
    ExitCode::from(2)
}

/// Logs go to standard error, filtered by RUST_LOG (default: info), coloured only on a
/// terminal.
fn init_tracing() {
    let filter =
        EnvFilter::builder().with_default_directive(LevelFilter::INFO.into()).from_env_lossy();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(filter)
        .init();
}
