//! The PostgreSQL store: one database that several `roomz serve` nodes share. The rules
//! are the SQLite store's; what changes is who else writes. Sequences are taken under the
//! room's row lock (see [`append`]), the magic-link rate limit counts under a per-address
//! advisory lock, and single use of a magic link rests on one conditional `UPDATE`. Each
//! committed batch of messages notifies the other nodes in its own transaction.

mod append;

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{PgConnection, Row};

use super::{Appended, Joined, LinkQuota, LinkState, NewMessage, Store, StoreError, StoreResult};
use crate::protocol::text::DEFAULT_ROOM;
use crate::protocol::{Message, Millis, RoomSummary, Seq};
use crate::server::cluster::NodeId;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("src/server/store/migrations/postgres");

/// How long a request waits for a free connection of the pool before it fails.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// Magic links are kept this long after they expire (as in the SQLite store).
const EXPIRED_LINK_RETENTION_MS: Millis = 24 * 60 * 60 * 1000;

/// The PostgreSQL store of one node.
#[derive(Debug)]
pub struct PgStore {
    pool: PgPool,
    node: NodeId,
}

impl PgStore {
    /// Connects (a pool of `pool_size` connections) and migrates the database. Nodes that
    /// start together migrate one at a time (sqlx holds an advisory lock meanwhile).
    pub async fn open(url: &str, pool_size: u32, node: NodeId) -> StoreResult<Self> {
        // Its error could quote the URL, password and all: say less.
        let options = PgConnectOptions::from_str(url).map_err(|_| {
            sqlx::Error::Configuration("DATABASE_URL could not be read as a PostgreSQL URL".into())
        })?;
        check_tls_files(url)?;
        let pool = PgPoolOptions::new()
            .max_connections(pool_size)
            .min_connections(1)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await?;
        MIGRATOR.run(&pool).await?;
        Ok(Self { pool, node })
    }

    /// The pool, for the cluster's listener and for tests.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

/// Reads each certificate and key file the URL names (`sslrootcert`, `sslcert`, `sslkey` and
/// their other spellings) before connecting: the driver's own error for a missing one does
/// not say which file it is.
fn check_tls_files(url: &str) -> StoreResult<()> {
    const FILES: [&str; 7] =
        ["sslrootcert", "ssl-root-cert", "ssl-ca", "sslcert", "ssl-cert", "sslkey", "ssl-key"];
    let Ok(url) = url::Url::parse(url) else { return Ok(()) };
    for (name, value) in url.query_pairs() {
        // A value may also be the PEM text itself.
        if !FILES.contains(&&*name) || value.starts_with("-----BEGIN") {
            continue;
        }
        std::fs::File::open(&*value).map_err(|source| StoreError::File {
            what: name.to_string(),
            path: value.to_string(),
            source,
        })?;
    }
    Ok(())
}

pub(super) fn seq_to_db(seq: Seq) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

pub(super) fn seq_from_db(value: i64) -> Seq {
    Seq::try_from(value).unwrap_or(0)
}

fn summary_from_row(row: &PgRow) -> StoreResult<RoomSummary> {
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

fn message_from_row(room: &str, row: &PgRow) -> StoreResult<Message> {
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

/// Takes a lock on one address until the transaction ends (PostgreSQL 11 or newer).
async fn lock_address(conn: &mut PgConnection, email: &str) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(email)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Adds `email` to `room` (creating the room) inside the caller's transaction.
async fn join_in(
    conn: &mut PgConnection,
    email: &str,
    room: &str,
    now: Millis,
) -> StoreResult<Joined> {
    sqlx::query(
        "INSERT INTO rooms (name, created_at) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
    )
    .bind(room)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    // The room's row is locked from here to the commit: a message appended meanwhile on
    // another node either counts as read (it came first) or is news to the new member.
    let inserted = sqlx::query(
        "INSERT INTO room_members (room_id, email, joined_at, last_read)
         SELECT id, $2, $3, last_seq FROM rooms WHERE name = $1 FOR UPDATE
         ON CONFLICT (room_id, email) DO NOTHING",
    )
    .bind(room)
    .bind(email)
    .bind(now)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if inserted == 1 {
        sqlx::query("UPDATE rooms SET member_count = member_count + 1 WHERE name = $1")
            .bind(room)
            .execute(&mut *conn)
            .await?;
    }
    let row = sqlx::query(
        "SELECT r.name, r.last_seq, r.member_count, m.last_read
         FROM rooms r JOIN room_members m ON m.room_id = r.id
         WHERE m.email = $1 AND r.name = $2",
    )
    .bind(email)
    .bind(room)
    .fetch_one(&mut *conn)
    .await?;
    Ok(Joined { summary: summary_from_row(&row)?, newly: inserted == 1 })
}

#[async_trait]
impl Store for PgStore {
    async fn ensure_user(&self, email: &str, now: Millis) -> StoreResult<Option<String>> {
        // Most connections are from known users: answer those with one read.
        let known = sqlx::query(
            "SELECT u.display_name,
                    EXISTS (SELECT 1 FROM room_members m JOIN rooms r ON r.id = m.room_id
                            WHERE m.email = u.email AND r.name = $2) AS in_default
             FROM users u WHERE u.email = $1",
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
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO users (email, created_at) VALUES ($1, $2) ON CONFLICT (email) DO NOTHING",
        )
        .bind(email)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        join_in(&mut tx, email, DEFAULT_ROOM, now).await?;
        let name = sqlx::query_scalar("SELECT display_name FROM users WHERE email = $1")
            .bind(email)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(name)
    }

    async fn display_name(&self, email: &str) -> StoreResult<Option<String>> {
        let name: Option<Option<String>> =
            sqlx::query_scalar("SELECT display_name FROM users WHERE email = $1")
                .bind(email)
                .fetch_optional(&self.pool)
                .await?;
        Ok(name.flatten())
    }

    async fn set_display_name(&self, email: &str, name: Option<&str>) -> StoreResult<()> {
        sqlx::query("UPDATE users SET display_name = $2 WHERE email = $1")
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
             WHERE m.email = $1 ORDER BY r.name",
        )
        .bind(email)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(summary_from_row).collect()
    }

    async fn join_room(&self, email: &str, room: &str, now: Millis) -> StoreResult<Joined> {
        let mut tx = self.pool.begin().await?;
        let joined = join_in(&mut tx, email, room, now).await?;
        tx.commit().await?;
        Ok(joined)
    }

    async fn leave_room(&self, email: &str, room: &str) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await?;
        // The room's row first, as appends and joins take it: locks in one order never
        // wait for each other in a circle.
        sqlx::query("SELECT id FROM rooms WHERE name = $1 FOR UPDATE")
            .bind(room)
            .execute(&mut *tx)
            .await?;
        let removed = sqlx::query(
            "DELETE FROM room_members WHERE email = $1
             AND room_id = (SELECT id FROM rooms WHERE name = $2)",
        )
        .bind(email)
        .bind(room)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if removed == 1 {
            sqlx::query("UPDATE rooms SET member_count = member_count - 1 WHERE name = $1")
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
             WHERE r.name = $1 AND m.email > $2 ORDER BY m.email LIMIT $3",
        )
        .bind(room)
        .bind(after.unwrap_or(""))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|row| Ok((row.try_get("email")?, row.try_get("display_name")?))).collect()
    }

    async fn mark_read(&self, email: &str, room: &str, seq: Seq) -> StoreResult<Option<Seq>> {
        let marker: Option<i64> = sqlx::query_scalar(
            "UPDATE room_members m SET last_read = LEAST($3, r.last_seq)
             FROM rooms r
             WHERE r.id = m.room_id AND m.email = $1 AND r.name = $2
               AND m.last_read < LEAST($3, r.last_seq)
             RETURNING m.last_read",
        )
        .bind(email)
        .bind(room)
        .bind(seq_to_db(seq))
        .fetch_optional(&self.pool)
        .await?;
        Ok(marker.map(seq_from_db))
    }

    async fn append(&self, batch: &[NewMessage], now: Millis) -> StoreResult<Vec<Appended>> {
        append::append(&self.pool, &self.node, batch, now).await
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
             WHERE m.room_id = (SELECT id FROM rooms WHERE name = $1) AND m.seq > $2
             ORDER BY m.seq LIMIT $3",
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
             WHERE m.room_id = (SELECT id FROM rooms WHERE name = $1) AND m.seq < $2
             ORDER BY m.seq DESC LIMIT $3",
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
        let mut tx = self.pool.begin().await?;
        // Requests for one address count one at a time, whichever node they reach: without
        // the lock two could both see four and make six.
        lock_address(&mut tx, email).await?;
        let times: Vec<i64> = sqlx::query_scalar(
            "SELECT requested_at FROM link_requests WHERE email = $1 AND requested_at > $2
             ORDER BY requested_at",
        )
        .bind(email)
        .bind(window_start)
        .fetch_all(&mut *tx)
        .await?;
        if times.len() < limit as usize {
            sqlx::query("INSERT INTO link_requests (email, requested_at) VALUES ($1, $2)")
                .bind(email)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            return Ok(LinkQuota::Granted);
        }
        tx.commit().await?;
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
        let mut tx = self.pool.begin().await?;
        // One address's links are made one at a time on every node, so that the newest
        // always supersedes the others.
        lock_address(&mut tx, email).await?;
        sqlx::query("DELETE FROM magic_links WHERE email = $1 AND used_at IS NULL")
            .bind(email)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO magic_links (token_hash, email, created_at, expires_at)
             VALUES ($1, $2, $3, $4)",
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
        let valid: Option<i32> = sqlx::query_scalar(
            "SELECT 1 FROM magic_links
             WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2",
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
        // Two nodes redeeming one token at once: the second waits for the first's row lock,
        // then finds `used_at` set and updates nothing.
        let email = sqlx::query_scalar(
            "UPDATE magic_links SET used_at = $2
             WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2
             RETURNING email",
        )
        .bind(token_hash)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        Ok(email)
    }

    async fn prune(&self, now: Millis) -> StoreResult<()> {
        let two_hours = 2 * 60 * 60 * 1000;
        sqlx::query("DELETE FROM link_requests WHERE requested_at < $1")
            .bind(now - two_hours)
            .execute(&self.pool)
            .await?;
        sqlx::query("DELETE FROM magic_links WHERE expires_at < $1")
            .bind(now - EXPIRED_LINK_RETENTION_MS)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}
