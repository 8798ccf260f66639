//! `AppState`: what every handler and connection shares, built once at startup.

use std::ops::Deref;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use url::Url;

use super::admission::Connections;
use super::allowlist::AllowList;
use super::auth::session::SessionKeys;
use super::clock::Clock;
use super::cluster::Cluster;
use super::committer::Committer;
use super::config::Config;
use super::hub::Hub;
use super::locks::KeyedLocks;
use super::mailer::Mailer;
use super::metrics::Metrics;
use super::names::NameCache;
use super::ratelimit::TokenBuckets;
use super::store::Store;
use crate::protocol::Limits;

/// Cheap to clone: one `Arc` around [`Shared`].
#[derive(Clone)]
pub struct AppState(pub(crate) Arc<Shared>);

impl Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The server's shared parts.
pub struct Shared {
    pub config: Config,
    /// Base of magic links, and the only Origin a cookie session is accepted from.
    pub public_url: Url,
    pub cookie_secure: bool,
    pub limits: Limits,
    pub store: Arc<dyn Store>,
    pub hub: Arc<Hub>,
    pub committer: Committer,
    pub names: Arc<NameCache>,
    pub allowlist: AllowList,
    pub sessions: SessionKeys,
    pub mailer: Arc<dyn Mailer>,
    pub clock: Arc<dyn Clock>,
    /// Messages per user.
    pub message_rate: TokenBuckets,
    /// Magic-link requests per network (IPv4 address or IPv6 /64).
    pub link_request_rate: TokenBuckets,
    /// WebSocket requests other than `send` and `ping`, per user.
    pub request_rate: TokenBuckets,
    /// Wrong, used or expired tokens offered to `POST /auth/verify`, per network.
    pub failed_redemptions: TokenBuckets,
    /// Open WebSocket connections per user and per network.
    pub connections: Arc<Connections>,
    /// What `GET /metrics` reports.
    pub metrics: Arc<Metrics>,
    /// Serialises the membership changes of each user.
    pub membership: KeyedLocks,
    /// The other nodes on the same database, if any.
    pub cluster: Cluster,
    /// Connection tasks and mail deliveries, awaited at shutdown.
    pub tasks: TaskTracker,
    /// Cancelled when the server starts shutting down.
    pub shutdown: CancellationToken,
}
