//! `roomz serve`: the HTTP and WebSocket server. This module assembles the parts and owns
//! their lifecycle (start, allow-list reload, shutdown); each part lives in its own module.
//!
//! The server depends on [`crate::protocol`] and never on the client or the TUI.

pub mod admission;
pub mod allowlist;
pub mod auth;
pub mod clock;
pub mod cluster;
pub mod committer;
pub mod config;
pub mod error;
pub mod http;
pub mod hub;
pub mod locks;
pub mod mailer;
pub mod metrics;
pub mod names;
pub mod queue;
pub mod ratelimit;
pub mod state;
pub mod store;
pub mod tls;
mod ws;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use url::Url;

use self::admission::Connections;
use self::allowlist::AllowList;
use self::auth::session::SessionKeys;
use self::clock::{Clock, SystemClock};
use self::cluster::Cluster;
use self::committer::Committer;
use self::config::{AllowListSource, Config, DatabaseConfig};
use self::hub::{CloseReason, Hub};
use self::locks::KeyedLocks;
use self::mailer::{MailError, Mailer};
use self::metrics::Metrics;
use self::names::NameCache;
use self::ratelimit::TokenBuckets;
use self::state::{AppState, Shared};
use self::store::postgres::PgStore;
use self::store::sqlite::SqliteStore;
use self::store::{Store, StoreError};
use crate::protocol::Limits;

/// Longest message text, in characters.
pub const MAX_MESSAGE_CHARS: usize = 10_000;
/// Largest frame read, in bytes (a message of the longest length, escaped, fits).
pub const MAX_FRAME_BYTES: usize = 64 * 1024;
/// Most messages per `history` page.
pub const HISTORY_PAGE_MAX: u32 = 200;

/// Magic-link requests one network may make at once, then per second: a guard against
/// one client filling the database with requests for made-up addresses.
const LINK_REQUEST_BURST: u32 = 30;
const LINK_REQUESTS_PER_SECOND: f64 = 10.0 / 60.0;

/// WebSocket requests other than `send` and `ping` one user may make at once, then per
/// second: joins, name changes and the like cost the server more than they should be
/// allowed to cost everyone else.
const REQUEST_BURST: u32 = 60;
const REQUESTS_PER_SECOND: f64 = 20.0;

/// Wrong tokens one network may offer at once, then per second (ten per ten minutes): a
/// 256-bit token cannot be guessed, but nobody gets to keep trying.
const FAILED_REDEMPTION_BURST: u32 = 10;
const FAILED_REDEMPTIONS_PER_SECOND: f64 = 10.0 / 600.0;

/// How often the store's write-ahead log is checkpointed.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// How often expired magic links and old rate-limit records are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(10 * 60);
/// How long shutdown waits for connections to say goodbye.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// What tests (and embedders) may replace.
pub struct ServerOptions {
    pub clock: Arc<dyn Clock>,
    /// `None`: the mailer the configuration names.
    pub mailer: Option<Arc<dyn Mailer>>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self { clock: Arc::new(SystemClock), mailer: None }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("cannot open the database: {0}")]
    Store(#[from] StoreError),
    #[error("cannot open the database: {0}")]
    Postgres(StoreError),
    #[error("cannot set up the mailer: {0}")]
    Mailer(#[from] MailError),
    #[error("cannot use the TLS certificate: {0}")]
    Tls(#[from] tls::TlsError),
}

impl StartError {
    /// What the operator can do about it.
    pub fn hint(&self) -> &'static str {
        match self {
            Self::Bind { .. } => {
                "another program may use that port: pick another with --bind or ROOMZ_BIND"
            }
            Self::Store(_) => {
                "check DATABASE_URL, the folder's permissions and the free disk space"
            }
            Self::Postgres(_) => {
                "check DATABASE_URL: that PostgreSQL runs, is reachable from here and lets this \
                 user in, and for TLS its sslmode and sslrootcert (docs/deploy.md)"
            }
            Self::Mailer(_) => "check EMAIL_SENDER and the Resend settings",
            Self::Tls(_) => {
                "ROOMZ_TLS_CERT must hold the PEM certificate chain and ROOMZ_TLS_KEY its PEM private key"
            }
        }
    }
}

/// A running server.
pub struct ServerHandle {
    addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    tls: Option<tls::CurrentConfig>,
    state: AppState,
    serve: JoinHandle<std::io::Result<()>>,
    committer: JoinHandle<()>,
    committer_stop: CancellationToken,
    pruner: JoinHandle<()>,
}

/// Binds, opens the store, and starts serving.
pub async fn start(config: Config, options: ServerOptions) -> Result<ServerHandle, StartError> {
    let listener = TcpListener::bind(config.bind)
        .await
        .map_err(|source| StartError::Bind { addr: config.bind, source })?;
    let addr =
        listener.local_addr().map_err(|source| StartError::Bind { addr: config.bind, source })?;
    let tls = match &config.tls {
        Some(files) => Some(Arc::new(arc_swap::ArcSwap::new(tls::load(files)?))),
        None => None,
    };
    let public_url =
        config.public_url.clone().unwrap_or_else(|| default_public_url(addr, tls.is_some()));
    let cookie_secure = config.cookie_secure.unwrap_or(public_url.scheme() == "https");

    let (store, cluster): (Arc<dyn Store>, Cluster) = match &config.database {
        DatabaseConfig::Sqlite { path } => {
            (Arc::new(SqliteStore::open(path).await?), Cluster::single())
        }
        DatabaseConfig::Postgres { url, pool_size } => {
            let node = cluster::new_node_id();
            let store = PgStore::open(url.expose(), *pool_size, node.clone())
                .await
                .map_err(StartError::Postgres)?;
            let cluster = Cluster::shared(node, store.pool().clone(), url.clone());
            (Arc::new(store), cluster)
        }
    };
    let mailer = match options.mailer {
        Some(mailer) => mailer,
        None => mailer::from_config(&config.mailer, &config.email_from)?,
    };
    let metrics = Arc::new(Metrics::default());
    let hub = Arc::new(Hub::new(metrics.clone()));
    let names = Arc::new(NameCache::new());
    let committer_stop = CancellationToken::new();
    let (committer, committer_task) = Committer::spawn(
        store.clone(),
        hub.clone(),
        names.clone(),
        options.clock.clone(),
        metrics.clone(),
        committer_stop.clone(),
    );
    let limits = Limits {
        max_message_chars: MAX_MESSAGE_CHARS,
        max_frame_bytes: MAX_FRAME_BYTES,
        messages_per_second: config.messages_per_second,
        message_burst: config.message_burst,
        history_page_max: HISTORY_PAGE_MAX,
    };
    let state = AppState(Arc::new(Shared {
        public_url,
        cookie_secure,
        limits,
        store,
        hub,
        committer,
        names,
        allowlist: AllowList::new(config.allowed_emails.iter().cloned()),
        sessions: SessionKeys::new(&config.jwt_secret, config.jwt_expiry_days)
            .with_previous(config.jwt_previous_secret.as_ref()),
        mailer,
        clock: options.clock,
        message_rate: TokenBuckets::new(
            f64::from(config.messages_per_second),
            config.message_burst,
        ),
        link_request_rate: TokenBuckets::new(LINK_REQUESTS_PER_SECOND, LINK_REQUEST_BURST),
        request_rate: TokenBuckets::new(REQUESTS_PER_SECOND, REQUEST_BURST),
        failed_redemptions: TokenBuckets::new(
            FAILED_REDEMPTIONS_PER_SECOND,
            FAILED_REDEMPTION_BURST,
        ),
        connections: Connections::new(
            config.max_connections_per_user as usize,
            config.max_connections_per_address as usize,
        ),
        metrics,
        membership: KeyedLocks::new(),
        cluster,
        tasks: TaskTracker::new(),
        shutdown: CancellationToken::new(),
        config,
    }));

    // A node is in the node list before its first connection says who is online on it.
    state.cluster.heartbeat(&state).await.map_err(StoreError::from)?;
    let app = http::router(state.clone()).into_make_service_with_connect_info::<SocketAddr>();
    let metrics_addr = match state.config.metrics_bind {
        Some(addr) => Some(serve_metrics(state.clone(), addr).await?),
        None => None,
    };
    let stopped = state.shutdown.clone();
    let serve = match tls.clone() {
        None => {
            let listener = listener.tap_io(|tcp| {
                // Chat frames are small: send each at once instead of waiting for a packet.
                if let Err(error) = tcp.set_nodelay(true) {
                    tracing::debug!(%error, "cannot set TCP_NODELAY");
                }
            });
            tokio::spawn(async move {
                axum::serve(listener, app).with_graceful_shutdown(stopped.cancelled_owned()).await
            })
        }
        Some(current) => {
            let listener = tls::TlsListener::new(listener, current)
                .map_err(|source| StartError::Bind { addr, source })?
                // (No-op: it makes the peer's address available to handlers.)
                .tap_io(|_| {});
            tokio::spawn(async move {
                axum::serve(listener, app).with_graceful_shutdown(stopped.cancelled_owned()).await
            })
        }
    };
    let pruner = tokio::spawn(prune_periodically(state.clone()));
    tokio::spawn(checkpoint_periodically(state.clone()));
    if state.cluster.is_shared() {
        tokio::spawn(cluster::listener::run(state.clone()));
        tokio::spawn(heartbeat_periodically(state.clone()));
    }

    tracing::info!(
        %addr,
        public_url = %state.public_url,
        database = ?state.config.database,
        allowed = state.allowlist.len(),
        mailer = state.mailer.kind(),
        session_key = state.sessions.kid(),
        metrics = ?metrics_addr,
        "roomz serve: listening"
    );
    Ok(ServerHandle {
        addr,
        metrics_addr,
        tls,
        state,
        serve,
        committer: committer_task,
        committer_stop,
        pruner,
    })
}

fn default_public_url(addr: SocketAddr, https: bool) -> Url {
    let host = match addr.ip() {
        ip if ip.is_unspecified() => "localhost".to_owned(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    let scheme = if https { "https" } else { "http" };
    Url::parse(&format!("{scheme}://{host}:{}", addr.port()))
        .expect("a socket address makes a valid URL")
}

async fn checkpoint_periodically(state: AppState) {
    let mut every = tokio::time::interval(CHECKPOINT_EVERY);
    loop {
        tokio::select! {
            () = state.shutdown.cancelled() => return,
            _ = every.tick() => {
                if let Err(error) = state.store.checkpoint().await {
                    tracing::warn!(%error, "store: checkpoint failed");
                }
            }
        }
    }
}

/// Serves `GET /metrics` on an address of its own, until shutdown. Returns the address.
async fn serve_metrics(state: AppState, addr: SocketAddr) -> Result<SocketAddr, StartError> {
    let listener =
        TcpListener::bind(addr).await.map_err(|source| StartError::Bind { addr, source })?;
    let bound = listener.local_addr().map_err(|source| StartError::Bind { addr, source })?;
    let stopped = state.shutdown.clone();
    let app =
        axum::Router::new().route("/metrics", axum::routing::get(metrics_text)).with_state(state);
    tokio::spawn(async move {
        axum::serve(listener, app).with_graceful_shutdown(stopped.cancelled_owned()).await
    });
    Ok(bound)
}

async fn metrics_text(
    axum::extract::State(state): axum::extract::State<AppState>,
) -> ([(axum::http::HeaderName, &'static str); 1], String) {
    let text = state.metrics.render(state.hub.connection_count(), state.hub.user_count());
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}

/// Says every few seconds that this node is alive: its users count as online meanwhile.
async fn heartbeat_periodically(state: AppState) {
    let mut every = tokio::time::interval(cluster::HEARTBEAT_EVERY);
    loop {
        tokio::select! {
            () = state.shutdown.cancelled() => return,
            _ = every.tick() => {
                if let Err(error) = state.cluster.heartbeat(&state).await {
                    tracing::warn!(%error, "cluster: the heartbeat failed");
                }
            }
        }
    }
}

async fn prune_periodically(state: AppState) {
    let mut every = tokio::time::interval(PRUNE_EVERY);
    loop {
        tokio::select! {
            () = state.shutdown.cancelled() => return,
            _ = every.tick() => {
                let now = state.clock.now_ms();
                if let Err(error) = state.store.prune(now).await {
                    tracing::warn!(%error, "store: pruning old magic links failed");
                }
                state.message_rate.forget_idle(now);
                state.link_request_rate.forget_idle(now);
                state.request_rate.forget_idle(now);
                state.failed_redemptions.forget_idle(now);
                state.membership.forget_idle();
            }
        }
    }
}

impl ServerHandle {
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where `GET /metrics` is served, when it is.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The base URL of magic links.
    pub fn public_url(&self) -> &Url {
        &self.state.public_url
    }

    /// How many WebSocket connections have said hello and are open.
    pub fn connection_count(&self) -> usize {
        self.state.hub.connection_count()
    }

    /// Replaces the allow-list; the connections of removed addresses close at once.
    /// Returns the removed addresses.
    pub fn set_allowed_emails(&self, emails: Vec<String>) -> Vec<String> {
        let removed = self.state.allowlist.replace(emails);
        for email in &removed {
            let closed = self.state.hub.close_user(email, CloseReason::AccessRevoked);
            tracing::info!(email = %email, closed, "auth: address removed from the allow-list");
        }
        if self.state.allowlist.is_empty() {
            tracing::warn!("ALLOWED_EMAILS is now empty: nobody can log in");
        }
        removed
    }

    /// Reads the TLS certificate and key again (a renewed certificate, on SIGHUP): new
    /// connections get it; a file that does not load changes nothing.
    pub fn reload_tls(&self) {
        let (Some(current), Some(files)) = (&self.tls, &self.state.config.tls) else {
            return;
        };
        match tls::load(files) {
            Ok(config) => {
                current.store(config);
                tracing::info!("SIGHUP: TLS certificate reloaded");
            }
            Err(error) => tracing::error!(%error, "SIGHUP: TLS certificate not reloaded"),
        }
    }

    /// Re-reads the allow-list from the `.env` file it came from (the SIGHUP action).
    /// A list from the process environment cannot change; a broken file changes nothing.
    pub fn reload_allowlist(&self) {
        match &self.state.config.allowlist_source {
            AllowListSource::Environment => tracing::warn!(
                "SIGHUP: ALLOWED_EMAILS comes from the process environment, which cannot change \
                 while roomz runs; restart roomz to change it, or move it into .env"
            ),
            AllowListSource::EnvFile(path) => match config::allowed_emails_from_file(path) {
                Ok(emails) => {
                    let count = emails.len();
                    let removed = self.set_allowed_emails(emails);
                    tracing::info!(
                        allowed = count,
                        removed = removed.len(),
                        "SIGHUP: allow-list reloaded"
                    );
                }
                Err(error) => tracing::error!(
                    "SIGHUP: allow-list not reloaded: {}; {}",
                    error.message,
                    error.hint
                ),
            },
        }
    }

    /// Stops accepting, lets every connection finish what it was sending (pending messages
    /// are committed and acknowledged, then a close frame goes out), and closes the store.
    pub async fn shutdown(self) {
        tracing::info!("roomz serve: shutting down");
        let state = self.state;
        state.shutdown.cancel();
        state.tasks.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, state.tasks.wait()).await.is_err() {
            tracing::warn!("shutdown: some connections did not close in time");
        }
        self.committer_stop.cancel();
        if tokio::time::timeout(SHUTDOWN_GRACE, self.committer).await.is_err() {
            tracing::error!(
                "shutdown: the committer did not finish; unacknowledged messages may be lost"
            );
        }
        let _ = self.pruner.await;
        match tokio::time::timeout(SHUTDOWN_GRACE, self.serve).await {
            Ok(Ok(Err(error))) => {
                tracing::warn!(%error, "shutdown: the listener ended with an error")
            }
            Err(_) => tracing::warn!("shutdown: HTTP connections did not close in time"),
            _ => {}
        }
        state.cluster.leave().await;
        state.store.close().await;
        tracing::info!("roomz serve: stopped");
    }
}
