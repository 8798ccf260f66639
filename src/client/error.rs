//! `ClientError`: everything a caller of the client library can be told went wrong, each
//! with what to do about it.

use std::path::PathBuf;
use std::time::Duration;

use crate::protocol::ErrorCode;

/// An error of the client library.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The server URL cannot be used.
    #[error("invalid server URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },

    /// A parameter of the client builder cannot be used.
    #[error("invalid client option {name}: {reason}")]
    InvalidOption { name: &'static str, reason: String },

    /// The address given for a magic link is not an email address.
    #[error("{email:?} is {reason}: give an address such as alice@example.com")]
    InvalidEmail { email: String, reason: String },

    /// There is no session: log in with a magic link first.
    #[error("not logged in: request a magic link and log in with its token")]
    NotLoggedIn,

    /// The session ran out (or the server no longer accepts it).
    #[error("session expired: request a new link")]
    SessionExpired,

    /// The address was removed from the server's allow-list.
    #[error(
        "access revoked: this address is no longer allowed on the server; once it is allowed \
         again, request a new link"
    )]
    AccessRevoked,

    /// The magic-link token is wrong, expired or already used.
    #[error("this login link is wrong, expired or already used; request a new one")]
    InvalidToken,

    /// The server refuses more requests for now.
    #[error("rate limited: try again in {} s", retry_after.as_secs().max(1))]
    RateLimited { retry_after: Duration },

    /// The server could not be reached.
    #[error("cannot reach the server at {url}: {reason}")]
    Unreachable { url: String, reason: String },

    /// The server did not answer in time.
    #[error("the server did not answer within {} s", after.as_secs_f32())]
    Timeout { after: Duration },

    /// The server refused a request or a message, and sending it again will not help.
    #[error("the server refused it ({code:?}): {message}")]
    Rejected { code: ErrorCode, message: String },

    /// The server refused this client's handshake (a protocol version it does not speak):
    /// trying again will not help.
    #[error("the server refused this client: {0}; use a roomz client of the server's version")]
    Incompatible(String),

    /// The server answered something this client does not understand.
    #[error("unexpected answer from the server: {0}")]
    Protocol(String),

    /// The server answered an HTTP request with an error.
    #[error("the server answered {status}: {message}")]
    Http { status: u16, message: String },

    /// The connection was lost and reconnecting failed `attempts` times in a row.
    #[error("disconnected: gave up after {attempts} reconnection attempts")]
    GaveUp { attempts: u32 },

    /// The connection was lost and reconnecting is turned off.
    #[error("disconnected from the server")]
    Disconnected,

    /// The client was closed.
    #[error("the client is closed")]
    Closed,

    /// The session cache file could not be read or written.
    #[error("session cache {path}: {reason}")]
    SessionCache { path: PathBuf, reason: String },

    /// The client configuration file is not valid.
    #[error("configuration file {path}: {reason}")]
    Config { path: PathBuf, reason: String },

    /// `SyncClient` could not start its background runtime.
    #[error("cannot start the client's runtime: {0}")]
    Runtime(String),

    /// `SyncClient` was used inside an async runtime, where blocking would stall it.
    #[error("SyncClient cannot be used inside an async runtime; use AsyncClient there")]
    InsideRuntime,
}

impl ClientError {
    /// Whether this ends the session for good (log in again), as opposed to a failure that a
    /// retry or a reconnect may mend.
    pub fn needs_login(&self) -> bool {
        matches!(
            self,
            Self::NotLoggedIn | Self::SessionExpired | Self::AccessRevoked | Self::InvalidToken
        )
    }

    /// Whether reconnecting cannot mend it: a new login is needed, or the server will never
    /// take this client.
    pub fn is_final(&self) -> bool {
        self.needs_login() || matches!(self, Self::Incompatible(_))
    }
}
