//! `roomz copy-database`: moves a SQLite deployment onto PostgreSQL. Every table is copied
//! as it is (users, rooms with their ids and sequences, memberships and read markers,
//! messages, magic links and the rate-limit records), in one PostgreSQL transaction, into
//! a database that holds no data yet and no running node; then each table's rows are
//! counted on both sides. The servers must be stopped meanwhile: what they wrote after the
//! copy began would not be copied (the counts would then differ, and nothing is kept).

use sqlx::{Row, SqlitePool};

use super::StoreError;
use super::postgres::PgStore;
use super::sqlite::SqliteStore;

/// Rows read and written at a time.
const CHUNK: i64 = 5_000;

/// How many rows of each table were copied.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Copied {
    pub users: u64,
    pub rooms: u64,
    pub members: u64,
    pub messages: u64,
    pub magic_links: u64,
    pub link_requests: u64,
}

/// Why a copy did not happen (or was undone).
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the target database already holds {0}: copy only into a new database")]
    TargetNotEmpty(String),
    #[error("the copy does not match the source ({0}); nothing was kept")]
    Mismatch(String),
}

impl From<sqlx::Error> for CopyError {
    fn from(error: sqlx::Error) -> Self {
        Self::Store(StoreError::Database(error))
    }
}

/// Copies everything from `from` into `to`, which must hold no users.
pub async fn copy(from: &SqliteStore, to: &PgStore) -> Result<Copied, CopyError> {
    let source = from.pool();
    let mut tx = to.pool().begin().await?;
    // Nobody writes the target meanwhile, and it holds nothing yet.
    sqlx::query("LOCK TABLE users, rooms, room_members, messages, nodes IN EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await?;
    let there = count(&mut tx).await?;
    let nodes: i64 = sqlx::query_scalar("SELECT count(*) FROM nodes").fetch_one(&mut *tx).await?;
    if there != Copied::default() || nodes > 0 {
        let what =
            if nodes > 0 { format!("{nodes} running node(s)") } else { format!("{there:?}") };
        return Err(CopyError::TargetNotEmpty(what));
    }
    let mut copied = Copied::default();

    let rows =
        sqlx::query("SELECT email, display_name, created_at FROM users").fetch_all(source).await?;
    for chunk in rows.chunks(CHUNK as usize) {
        let emails: Vec<String> = column(chunk, "email")?;
        let names: Vec<Option<String>> = column(chunk, "display_name")?;
        let times: Vec<i64> = column(chunk, "created_at")?;
        sqlx::query(
            "INSERT INTO users (email, display_name, created_at)
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[])",
        )
        .bind(&emails)
        .bind(&names)
        .bind(&times)
        .execute(&mut *tx)
        .await?;
        copied.users += chunk.len() as u64;
    }

    let rows = sqlx::query("SELECT id, name, created_at, last_seq, member_count FROM rooms")
        .fetch_all(source)
        .await?;
    for chunk in rows.chunks(CHUNK as usize) {
        let ids: Vec<i64> = column(chunk, "id")?;
        let names: Vec<String> = column(chunk, "name")?;
        let times: Vec<i64> = column(chunk, "created_at")?;
        let last: Vec<i64> = column(chunk, "last_seq")?;
        let counts: Vec<i64> = column(chunk, "member_count")?;
        sqlx::query(
            "INSERT INTO rooms (id, name, created_at, last_seq, member_count)
             SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[])",
        )
        .bind(&ids)
        .bind(&names)
        .bind(&times)
        .bind(&last)
        .bind(&counts)
        .execute(&mut *tx)
        .await?;
        copied.rooms += chunk.len() as u64;
    }
    // Rooms made after the copy get ids past the copied ones.
    sqlx::query(
        "SELECT setval(pg_get_serial_sequence('rooms', 'id'), GREATEST(max(id), 1)) FROM rooms",
    )
    .execute(&mut *tx)
    .await?;

    let rows = sqlx::query("SELECT room_id, email, joined_at, last_read FROM room_members")
        .fetch_all(source)
        .await?;
    for chunk in rows.chunks(CHUNK as usize) {
        let rooms: Vec<i64> = column(chunk, "room_id")?;
        let emails: Vec<String> = column(chunk, "email")?;
        let times: Vec<i64> = column(chunk, "joined_at")?;
        let read: Vec<i64> = column(chunk, "last_read")?;
        sqlx::query(
            "INSERT INTO room_members (room_id, email, joined_at, last_read)
             SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::bigint[], $4::bigint[])",
        )
        .bind(&rooms)
        .bind(&emails)
        .bind(&times)
        .bind(&read)
        .execute(&mut *tx)
        .await?;
        copied.members += chunk.len() as u64;
    }

    copied.messages = copy_messages(source, &mut tx).await?;

    let rows =
        sqlx::query("SELECT token_hash, email, created_at, expires_at, used_at FROM magic_links")
            .fetch_all(source)
            .await?;
    for chunk in rows.chunks(CHUNK as usize) {
        let hashes: Vec<Vec<u8>> = column(chunk, "token_hash")?;
        let emails: Vec<String> = column(chunk, "email")?;
        let created: Vec<i64> = column(chunk, "created_at")?;
        let expires: Vec<i64> = column(chunk, "expires_at")?;
        let used: Vec<Option<i64>> = column(chunk, "used_at")?;
        sqlx::query(
            "INSERT INTO magic_links (token_hash, email, created_at, expires_at, used_at)
             SELECT * FROM UNNEST($1::bytea[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[])",
        )
        .bind(&hashes)
        .bind(&emails)
        .bind(&created)
        .bind(&expires)
        .bind(&used)
        .execute(&mut *tx)
        .await?;
        copied.magic_links += chunk.len() as u64;
    }

    let rows =
        sqlx::query("SELECT email, requested_at FROM link_requests").fetch_all(source).await?;
    for chunk in rows.chunks(CHUNK as usize) {
        let emails: Vec<String> = column(chunk, "email")?;
        let times: Vec<i64> = column(chunk, "requested_at")?;
        sqlx::query(
            "INSERT INTO link_requests (email, requested_at)
             SELECT * FROM UNNEST($1::text[], $2::bigint[])",
        )
        .bind(&emails)
        .bind(&times)
        .execute(&mut *tx)
        .await?;
        copied.link_requests += chunk.len() as u64;
    }

    let expected = count_source(source).await?;
    let found = count(&mut tx).await?;
    if found != expected || copied != expected {
        return Err(CopyError::Mismatch(format!("source {expected:?}, target {found:?}")));
    }
    tx.commit().await?;
    Ok(copied)
}

/// Messages in pages by (room, sequence), so a large history never sits in memory at once.
async fn copy_messages(
    source: &SqlitePool,
    tx: &mut sqlx::PgConnection,
) -> Result<u64, sqlx::Error> {
    let mut copied = 0;
    let (mut room, mut seq) = (i64::MIN, i64::MIN);
    loop {
        let rows = sqlx::query(
            "SELECT room_id, seq, author, client_id, body, created_at FROM messages
             WHERE room_id > ?1 OR (room_id = ?1 AND seq > ?2)
             ORDER BY room_id, seq LIMIT ?3",
        )
        .bind(room)
        .bind(seq)
        .bind(CHUNK)
        .fetch_all(source)
        .await?;
        let Some(last) = rows.last() else {
            return Ok(copied);
        };
        (room, seq) = (last.try_get("room_id")?, last.try_get("seq")?);
        let rooms: Vec<i64> = column(&rows, "room_id")?;
        let seqs: Vec<i64> = column(&rows, "seq")?;
        let authors: Vec<String> = column(&rows, "author")?;
        let ids: Vec<String> = column(&rows, "client_id")?;
        let bodies: Vec<String> = column(&rows, "body")?;
        let times: Vec<i64> = column(&rows, "created_at")?;
        sqlx::query(
            "INSERT INTO messages (room_id, seq, author, client_id, body, created_at)
             SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::text[], $4::text[],
                                  $5::text[], $6::bigint[])",
        )
        .bind(&rooms)
        .bind(&seqs)
        .bind(&authors)
        .bind(&ids)
        .bind(&bodies)
        .bind(&times)
        .execute(&mut *tx)
        .await?;
        copied += rows.len() as u64;
    }
}

/// One column of a chunk of SQLite rows.
fn column<'r, T>(rows: &'r [sqlx::sqlite::SqliteRow], name: &str) -> Result<Vec<T>, sqlx::Error>
where
    T: sqlx::Decode<'r, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite>,
{
    rows.iter().map(|row| row.try_get(name)).collect()
}

/// Counts the rows of every table (the same SQL on both databases).
const COUNT_SQL: &str = "SELECT (SELECT count(*) FROM users) AS users,
        (SELECT count(*) FROM rooms) AS rooms, (SELECT count(*) FROM room_members) AS members,
        (SELECT count(*) FROM messages) AS messages,
        (SELECT count(*) FROM magic_links) AS magic_links,
        (SELECT count(*) FROM link_requests) AS link_requests";

/// The rows of each table in the target, inside the copy's transaction.
async fn count(tx: &mut sqlx::PgConnection) -> Result<Copied, sqlx::Error> {
    let row = sqlx::query(COUNT_SQL).fetch_one(&mut *tx).await?;
    counted(|name| row.try_get::<i64, _>(name))
}

/// The rows of each table in the source.
async fn count_source(source: &SqlitePool) -> Result<Copied, sqlx::Error> {
    let row = sqlx::query(COUNT_SQL).fetch_one(source).await?;
    counted(|name| row.try_get::<i64, _>(name))
}

fn counted(get: impl Fn(&str) -> Result<i64, sqlx::Error>) -> Result<Copied, sqlx::Error> {
    let get =
        |name: &str| -> Result<u64, sqlx::Error> { Ok(u64::try_from(get(name)?).unwrap_or(0)) };
    Ok(Copied {
        users: get("users")?,
        rooms: get("rooms")?,
        members: get("members")?,
        messages: get("messages")?,
        magic_links: get("magic_links")?,
        link_requests: get("link_requests")?,
    })
}
