//! Persistence behind one trait: users, rooms, memberships, messages, read markers, magic
//! links and the magic-link rate limit. The server talks to [`Store`] only; each backend
//! owns its own SQL and migrations.
//!
//! Promises every backend keeps:
//! - `append` commits before it returns, and gives each room gap-free sequence numbers
//!   starting at 1; a message whose (author, client id) is already stored is not stored again.
//! - `redeem_magic_link` succeeds at most once per token, across all callers.
//! - `record_link_request` counts atomically: N concurrent requests never exceed the limit.

pub mod copy;
pub mod postgres;
pub mod sqlite;

use async_trait::async_trait;

use crate::protocol::{Message, Millis, RoomSummary, Seq};

/// A failure of the store. The server reports these as "try again" without details.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("cannot prepare the database at {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("cannot read the file {path} that {what} names: {source}")]
    File { what: String, path: String, source: std::io::Error },
    #[error("room {0:?} does not exist")]
    NoSuchRoom(String),
}

/// Result of a store operation.
pub type StoreResult<T> = Result<T, StoreError>;

/// A message to store, already checked and cleaned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    pub room: String,
    pub author: String,
    pub client_id: String,
    pub text: String,
}

/// What became of one message of a batch given to [`Store::append`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Appended {
    /// Stored now as `seq`.
    New { seq: Seq, ts: Millis },
    /// Stored earlier under the same (author, client id), as `seq` of `room`.
    Duplicate { room: String, seq: Seq, ts: Millis },
    /// The room does not exist (it was never created).
    NoSuchRoom,
}

/// Result of joining a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    pub summary: RoomSummary,
    /// False when the user was already a member.
    pub newly: bool,
}

/// Answer of the magic-link rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkQuota {
    /// Counted; go ahead.
    Granted,
    /// Over the limit; a request can succeed again after this many milliseconds.
    Exceeded { retry_after_ms: u64 },
}

/// What is known about a magic-link token, without using it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    Valid,
    /// Used, expired, superseded by a newer link, or never issued.
    Unusable,
}

/// The server's persistence.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Creates the user on first sight and makes them a member of the default room.
    /// Returns their display name.
    async fn ensure_user(&self, email: &str, now: Millis) -> StoreResult<Option<String>>;

    /// The user's display name (`None` if unset or unknown).
    async fn display_name(&self, email: &str) -> StoreResult<Option<String>>;

    /// Sets or clears the user's display name.
    async fn set_display_name(&self, email: &str, name: Option<&str>) -> StoreResult<()>;

    /// The rooms of a user, by name.
    async fn rooms_of(&self, email: &str) -> StoreResult<Vec<RoomSummary>>;

    /// Joins a room, creating it when it does not exist. A new member starts with every
    /// earlier message read.
    async fn join_room(&self, email: &str, room: &str, now: Millis) -> StoreResult<Joined>;

    /// Leaves a room. False when the user was not a member.
    async fn leave_room(&self, email: &str, room: &str) -> StoreResult<bool>;

    /// Up to `limit` members of a room with their display names, by email, after the
    /// email `after` when given.
    async fn members(
        &self,
        room: &str,
        after: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<(String, Option<String>)>>;

    /// Moves a read marker forward to `seq` (capped at the newest message). Returns the new
    /// marker when it moved.
    async fn mark_read(&self, email: &str, room: &str, seq: Seq) -> StoreResult<Option<Seq>>;

    /// Stores a batch of messages in one transaction; the answer has one entry per message,
    /// in order. Each author's read marker moves to their newest message.
    async fn append(&self, batch: &[NewMessage], now: Millis) -> StoreResult<Vec<Appended>>;

    /// Up to `limit` messages of `room` after `after`, oldest first.
    async fn messages_after(&self, room: &str, after: Seq, limit: u32)
    -> StoreResult<Vec<Message>>;

    /// Up to `limit` messages of `room` before `before` (the newest when `None`), oldest
    /// first.
    async fn messages_before(
        &self,
        room: &str,
        before: Option<Seq>,
        limit: u32,
    ) -> StoreResult<Vec<Message>>;

    /// Counts a magic-link request for `email` unless `limit` requests were already counted
    /// in the `window_ms` before `now`.
    async fn record_link_request(
        &self,
        email: &str,
        now: Millis,
        window_ms: Millis,
        limit: u32,
    ) -> StoreResult<LinkQuota>;

    /// Stores a new magic link (only the token's hash), superseding the unused older ones
    /// of that address.
    async fn create_magic_link(
        &self,
        email: &str,
        token_hash: &[u8],
        now: Millis,
        expires_at: Millis,
    ) -> StoreResult<()>;

    /// Whether a token could be redeemed now, without redeeming it.
    async fn magic_link_state(&self, token_hash: &[u8], now: Millis) -> StoreResult<LinkState>;

    /// Uses a token: returns its address the first time, within its lifetime; `None` after.
    async fn redeem_magic_link(
        &self,
        token_hash: &[u8],
        now: Millis,
    ) -> StoreResult<Option<String>>;

    /// Housekeeping the server runs every second, off the path of requests (SQLite copies
    /// its write-ahead log into the database file here).
    async fn checkpoint(&self) -> StoreResult<()> {
        Ok(())
    }

    /// Deletes rate-limit records and magic links that can no longer matter.
    async fn prune(&self, now: Millis) -> StoreResult<()>;

    /// Flushes and closes the store.
    async fn close(&self);
}
