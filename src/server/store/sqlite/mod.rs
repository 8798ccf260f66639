//! The SQLite store: one database file in WAL mode with `synchronous=FULL`, so a committed
//! transaction survives a crash of the process or of the machine.
//!
//! Writes that read first (`append`, `join_room`, ...) run in `BEGIN IMMEDIATE`
//! transactions: they take the write lock up front, so two writers never race on a
//! sequence number or a member count.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqliteConnection, SqlitePool};

use super::{Appended, Joined, LinkQuota, LinkState, NewMessage, Store, StoreError, StoreResult};
use crate::protocol::text::DEFAULT_ROOM;
use crate::protocol::{Message, Millis, RoomSummary, Seq};

mod append;
pub mod backup;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("src/server/store/migrations/sqlite");

/// A WAL this many pages long (about 256 MiB) that a checkpoint cannot empty is worth a
/// warning.
const WAL_PAGES_WARNING: i64 = 65_536;

/// How long a writer waits for another writer's lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Magic links are kept this long after they expire, so a late click can still be told
/// "this link expired" rather than "unknown link".
const EXPIRED_LINK_RETENTION_MS: Millis = 24 * 60 * 60 * 1000;

/// The SQLite store.
#[derive(Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// The connection that appends messages, and the sequences it has written.
    appender: append::Appender,
}

impl SqliteStore {
    /// Opens (creating when missing) the database file and its folder, and migrates it.
    pub async fn open(path: &Path) -> StoreResult<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|source| StoreError::Io { path: dir.display().to_string(), source })?;
        }
        let options = SqliteConnectOptions::from_str("sqlite:")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT)
            // No checkpoint inside a commit: it would stall the messages waiting for that
            // commit. `checkpoint` runs them beside the writers instead.
            .pragma("wal_autocheckpoint", "0")
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .min_connections(1)
            // A connection in use errors by itself when the file is gone: no ping (a round
            // trip to its thread) before every use.
            .test_before_acquire(false)
            .connect_with(options.clone())
            .await?;
        MIGRATOR.run(&pool).await?;
        // Messages are appended on a connection of their own, outside the pool.
        let writer = options.statement_cache_capacity(512);
        Ok(Self { pool, appender: append::Appender::open(writer).await? })
    }

    /// The pool, for tests that look at the file directly.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

pub(super) fn seq_to_db(seq: Seq) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

pub(super) fn seq_from_db(value: i64) -> Seq {
    Seq::try_from(value).unwrap_or(0)
}

fn summary_from_row(row: &sqlx::sqlite::SqliteRow) -> StoreResult<RoomSummary> {
    let last_seq = seq_from_db(row.try_get("last_seq")?);
    let last_read = seq_from_db(row.try_get("last_read")?).min(last_seq);
    Ok(RoomSummary {
        name: row.try_get("name")?,
        members: seq_from_db(row.try_get("member_count")?),
        last_seq,
        last_read,
        unread: last_seq - last_read,
    })
}

fn message_from_row(room: &str, row: &sqlx::sqlite::SqliteRow) -> StoreResult<Message> {
    Ok(Message {
        room: room.to_owned(),
        seq: seq_from_db(row.try_get("seq")?),
        id: row.try_get("client_id")?,
        author: row.try_get("author")?,
        name: row.try_get("display_name")?,
        text: row.try_get("body")?,
        ts: row.try_get("created_at")?,
    })
}

/// One member's summary of one room: binds the email (?1) and the room name (?2).
const MEMBER_SUMMARY_SQL: &str = "SELECT r.name, r.last_seq, r.member_count, m.last_read
     FROM rooms r JOIN room_members m ON m.room_id = r.id
     WHERE m.email = ?1 AND r.name = ?2";

/// Adds `email` to `room` (creating the room) inside the caller's transaction.
async fn join_in(
    conn: &mut SqliteConnection,
    email: &str,
    room: &str,
    now: Millis,
) -> StoreResult<Joined> {
    sqlx::query(
        "INSERT INTO rooms (name, created_at) VALUES (?1, ?2) ON CONFLICT (name) DO NOTHING",
    )
    .bind(room)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    let inserted = sqlx::query(
        "INSERT INTO room_members (room_id, email, joined_at, last_read)
         SELECT id, ?2, ?3, last_seq FROM rooms WHERE name = ?1
         ON CONFLICT (room_id, email) DO NOTHING",
    )
    .bind(room)
    .bind(email)
    .bind(now)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if inserted == 1 {
        sqlx::query("UPDATE rooms SET member_count = member_count + 1 WHERE name = ?1")
            .bind(room)
            .execute(&mut *conn)
            .await?;
    }
    let row = sqlx::query(MEMBER_SUMMARY_SQL).bind(email).bind(room).fetch_one(&mut *conn).await?;
    Ok(Joined { summary: summary_from_row(&row)?, newly: inserted == 1 })
}

#[async_trait]
impl Store for SqliteStore {
    async fn ensure_user(&self, email: &str, now: Millis) -> StoreResult<Option<String>> {
        // Most connections are from known users: answer those with one read.
        let known = sqlx::query(
            "SELECT u.display_name,
                    EXISTS (SELECT 1 FROM room_members m JOIN rooms r ON r.id = m.room_id
                            WHERE m.email = u.email AND r.name = ?2) AS in_default
             FROM users u WHERE u.email = ?1",
        )
        .bind(email)
        .bind(DEFAULT_ROOM)
        .fetch_optional(&self.pool)
        .await?;
        if let Some(row) = &known
            && row.try_get::<bool, _>("in_default")?
        {
            return Ok(row.try_get("display_name")?);
        }

        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query(
            "INSERT INTO users (email, created_at) VALUES (?1, ?2) ON CONFLICT (email) DO NOTHING",
        )
        .bind(email)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        join_in(&mut tx, email, DEFAULT_ROOM, now).await?;
        let name = sqlx::query_scalar("SELECT display_name FROM users WHERE email = ?1")
            .bind(email)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(name)
    }

    async fn display_name(&self, email: &str) -> StoreResult<Option<String>> {
        let name: Option<Option<String>> =
            sqlx::query_scalar("SELECT display_name FROM users WHERE email = ?1")
                .bind(email)
                .fetch_optional(&self.pool)
                .await?;
        Ok(name.flatten())
    }

    async fn set_display_name(&self, email: &str, name: Option<&str>) -> StoreResult<()> {
        sqlx::query("UPDATE users SET display_name = ?2 WHERE email = ?1")
            .bind(email)
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn rooms_of(&self, email: &str) -> StoreResult<Vec<RoomSummary>> {
        let rows = sqlx::query(
            "SELECT r.name, r.last_seq, r.member_count, m.last_read
             FROM room_members m JOIN rooms r ON r.id = m.room_id
             WHERE m.email = ?1 ORDER BY r.name",
        )
        .bind(email)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(summary_from_row).collect()
    }

    async fn join_room(&self, email: &str, room: &str, now: Millis) -> StoreResult<Joined> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let joined = join_in(&mut tx, email, room, now).await?;
        tx.commit().await?;
        Ok(joined)
    }

    async fn leave_room(&self, email: &str, room: &str) -> StoreResult<bool> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let removed = sqlx::query(
            "DELETE FROM room_members WHERE email = ?1
             AND room_id = (SELECT id FROM rooms WHERE name = ?2)",
        )
        .bind(email)
        .bind(room)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if removed == 1 {
            sqlx::query("UPDATE rooms SET member_count = member_count - 1 WHERE name = ?1")
                .bind(room)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(removed == 1)
    }

    async fn members(
        &self,
        room: &str,
        after: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<(String, Option<String>)>> {
        let rows = sqlx::query(
            "SELECT m.email, u.display_name
             FROM room_members m JOIN rooms r ON r.id = m.room_id
             LEFT JOIN users u ON u.email = m.email
             WHERE r.name = ?1 AND m.email > ?2 ORDER BY m.email LIMIT ?3",
        )
        .bind(room)
        .bind(after.unwrap_or(""))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|row| Ok((row.try_get("email")?, row.try_get("display_name")?))).collect()
    }

    async fn mark_read(&self, email: &str, room: &str, seq: Seq) -> StoreResult<Option<Seq>> {
        let marker: Option<i64> = sqlx::query_scalar(
            "UPDATE room_members
             SET last_read = min(?3, (SELECT last_seq FROM rooms WHERE id = room_members.room_id))
             WHERE email = ?1 AND room_id = (SELECT id FROM rooms WHERE name = ?2)
               AND last_read < min(?3, (SELECT last_seq FROM rooms WHERE id = room_members.room_id))
             RETURNING last_read",
        )
        .bind(email)
        .bind(room)
        .bind(seq_to_db(seq))
        .fetch_optional(&self.pool)
        .await?;
        Ok(marker.map(seq_from_db))
    }

    async fn append(&self, batch: &[NewMessage], now: Millis) -> StoreResult<Vec<Appended>> {
        self.appender.append(&self.pool, batch, now).await
    }

    async fn messages_after(
        &self,
        room: &str,
        after: Seq,
        limit: u32,
    ) -> StoreResult<Vec<Message>> {
        let rows = sqlx::query(
            "SELECT m.seq, m.client_id, m.author, u.display_name, m.body, m.created_at
             FROM messages m LEFT JOIN users u ON u.email = m.author
             WHERE m.room_id = (SELECT id FROM rooms WHERE name = ?1) AND m.seq > ?2
             ORDER BY m.seq LIMIT ?3",
        )
        .bind(room)
        .bind(seq_to_db(after))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|row| message_from_row(room, row)).collect()
    }

    async fn messages_before(
        &self,
        room: &str,
        before: Option<Seq>,
        limit: u32,
    ) -> StoreResult<Vec<Message>> {
        let rows = sqlx::query(
            "SELECT m.seq, m.client_id, m.author, u.display_name, m.body, m.created_at
             FROM messages m LEFT JOIN users u ON u.email = m.author
             WHERE m.room_id = (SELECT id FROM rooms WHERE name = ?1) AND m.seq < ?2
             ORDER BY m.seq DESC LIMIT ?3",
        )
        .bind(room)
        .bind(before.map_or(i64::MAX, seq_to_db))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().rev().map(|row| message_from_row(room, row)).collect()
    }

    async fn record_link_request(
        &self,
        email: &str,
        now: Millis,
        window_ms: Millis,
        limit: u32,
    ) -> StoreResult<LinkQuota> {
        let window_start = now - window_ms;
        // One statement: SQLite runs it under the write lock, so the count and the insert
        // cannot interleave with another request's.
        let counted = sqlx::query(
            "INSERT INTO link_requests (email, requested_at)
             SELECT ?1, ?2
             WHERE (SELECT count(*) FROM link_requests WHERE email = ?1 AND requested_at > ?3) < ?4",
        )
        .bind(email)
        .bind(now)
        .bind(window_start)
        .bind(i64::from(limit))
        .execute(&self.pool)
        .await?
        .rows_affected();
        if counted == 1 {
            return Ok(LinkQuota::Granted);
        }
        let times: Vec<i64> = sqlx::query_scalar(
            "SELECT requested_at FROM link_requests WHERE email = ?1 AND requested_at > ?2
             ORDER BY requested_at",
        )
        .bind(email)
        .bind(window_start)
        .fetch_all(&self.pool)
        .await?;
        // A request succeeds again once enough of the counted ones have left the window.
        let must_expire = times.len().saturating_sub(limit as usize);
        let frees_at = times.get(must_expire).map_or(now, |t| t + window_ms);
        let retry_after_ms = u64::try_from(frees_at - now).unwrap_or(0).max(1000);
        Ok(LinkQuota::Exceeded { retry_after_ms })
    }

    async fn create_magic_link(
        &self,
        email: &str,
        token_hash: &[u8],
        now: Millis,
        expires_at: Millis,
    ) -> StoreResult<()> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query("DELETE FROM magic_links WHERE email = ?1 AND used_at IS NULL")
            .bind(email)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO magic_links (token_hash, email, created_at, expires_at) VALUES (?1, ?2, ?3, ?4)",
        )
        .bind(token_hash)
        .bind(email)
        .bind(now)
        .bind(expires_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn magic_link_state(&self, token_hash: &[u8], now: Millis) -> StoreResult<LinkState> {
        let valid: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM magic_links WHERE token_hash = ?1 AND used_at IS NULL AND expires_at > ?2",
        )
        .bind(token_hash)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        Ok(if valid.is_some() { LinkState::Valid } else { LinkState::Unusable })
    }

    async fn redeem_magic_link(
        &self,
        token_hash: &[u8],
        now: Millis,
    ) -> StoreResult<Option<String>> {
        let email = sqlx::query_scalar(
            "UPDATE magic_links SET used_at = ?2
             WHERE token_hash = ?1 AND used_at IS NULL AND expires_at > ?2
             RETURNING email",
        )
        .bind(token_hash)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        Ok(email)
    }

    async fn prune(&self, now: Millis) -> StoreResult<()> {
        // The rate-limit window is an hour; keep one more.
        let two_hours = 2 * 60 * 60 * 1000;
        sqlx::query("DELETE FROM link_requests WHERE requested_at < ?1")
            .bind(now - two_hours)
            .execute(&self.pool)
            .await?;
        sqlx::query("DELETE FROM magic_links WHERE expires_at < ?1")
            .bind(now - EXPIRED_LINK_RETENTION_MS)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn checkpoint(&self) -> StoreResult<()> {
        // PASSIVE: copies what it can into the database file without waiting for (or
        // blocking) readers and writers; the WAL starts over once it is all copied.
        let row = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").fetch_one(&self.pool).await?;
        let (log, copied): (i64, i64) = (row.try_get(1)?, row.try_get(2)?);
        if log > WAL_PAGES_WARNING && copied < log {
            tracing::warn!(log, copied, "store: the WAL is growing faster than it is checkpointed");
        }
        Ok(())
    }

    async fn close(&self) {
        self.appender.close().await;
        // Everything committed is already durable; this folds the WAL into the database
        // file so a stopped server leaves one file behind.
        if let Err(error) = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)").execute(&self.pool).await
        {
            tracing::warn!(%error, "store: the final checkpoint failed");
        }
        self.pool.close().await;
    }
}
