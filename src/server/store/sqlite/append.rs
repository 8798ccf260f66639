//! Appending a batch of messages in one transaction: the path every message takes, so it
//! makes one trip to SQLite's thread (each trip is two thread switches, which on a busy
//! machine cost more than the SQL). Sequences come from a cache of each room's newest
//! (valid because this process is the only writer of the file and appends one batch at a
//! time); the transaction is one multi-statement query: multi-row INSERTs, then room
//! sequences and the authors' read markers moved with one `UPDATE ... FROM` each. A batch
//! holding a resend (a message id already stored) fails on the unique index, is rolled
//! back, and is appended one message at a time instead.

use std::collections::HashMap;

use rustc_hash::FxHashMap;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{AssertSqlSafe, Connection, Row, SqliteConnection, SqlitePool};

use super::{seq_from_db, seq_to_db};
use crate::protocol::{Millis, Seq};
use crate::server::store::{Appended, NewMessage, StoreResult};

/// Rows per INSERT (six values each; SQLite takes up to 32,766 in one statement).
const ROWS_PER_INSERT: usize = 100;

/// The appending connection and the newest sequence of each room it wrote (by name, with
/// the room's id). Both sit behind one lock, held for a whole append, so batches never
/// interleave.
#[derive(Debug)]
pub struct Appender(tokio::sync::Mutex<Writer>);

#[derive(Debug)]
struct Writer {
    options: SqliteConnectOptions,
    /// `None` after a failure, until the next append opens it again.
    conn: Option<SqliteConnection>,
    sequences: FxHashMap<String, (i64, Seq)>,
}

impl Appender {
    pub async fn open(options: SqliteConnectOptions) -> StoreResult<Self> {
        let conn = SqliteConnection::connect_with(&options).await?;
        Ok(Self(tokio::sync::Mutex::new(Writer {
            options,
            conn: Some(conn),
            sequences: FxHashMap::default(),
        })))
    }

    /// Closes the appending connection; an append after this opens a new one.
    pub async fn close(&self) {
        if let Some(conn) = self.0.lock().await.conn.take()
            && let Err(error) = conn.close().await
        {
            tracing::warn!(%error, "store: closing the appending connection failed");
        }
    }

    /// Appends a batch; see the module documentation. `pool` serves the careful path.
    pub async fn append(
        &self,
        pool: &SqlitePool,
        batch: &[NewMessage],
        now: Millis,
    ) -> StoreResult<Vec<Appended>> {
        let mut writer = self.0.lock().await;
        let writer = &mut *writer;
        let conn = match &mut writer.conn {
            Some(conn) => conn,
            slot => slot.insert(SqliteConnection::connect_with(&writer.options).await?),
        };
        let rooms = rooms_of(conn, &writer.sequences, batch).await?;
        let plan = Plan::new(rooms, batch, now);
        match plan.write(conn).await {
            Ok(()) => {
                for (name, state) in &plan.rooms {
                    writer.sequences.insert((*name).to_owned(), *state);
                }
                Ok(plan.results)
            }
            Err(error) => {
                // The transaction stopped part way: end it, or drop the connection (a new
                // one is opened next time).
                if sqlx::query("ROLLBACK").execute(&mut *conn).await.is_err() {
                    writer.conn = None;
                }
                writer.sequences.clear();
                match error {
                    sqlx::Error::Database(e)
                        if e.kind() == sqlx::error::ErrorKind::UniqueViolation =>
                    {
                        one_by_one(pool, batch, now).await
                    }
                    other => Err(other.into()),
                }
            }
        }
    }
}

/// The id and newest sequence of each room of the batch: from the cache, else from the
/// database (only this path moves a room's sequence, so reading it here is safe).
async fn rooms_of<'a>(
    conn: &mut SqliteConnection,
    cache: &FxHashMap<String, (i64, Seq)>,
    batch: &'a [NewMessage],
) -> StoreResult<FxHashMap<&'a str, (i64, Seq)>> {
    let mut rooms: FxHashMap<&str, (i64, Seq)> = FxHashMap::default();
    let mut missing: Vec<&str> = Vec::new();
    for message in batch {
        let name = message.room.as_str();
        if rooms.contains_key(name) || missing.contains(&name) {
            continue;
        }
        match cache.get(name) {
            Some(state) => {
                rooms.insert(name, *state);
            }
            None => missing.push(name),
        }
    }
    if missing.is_empty() {
        return Ok(rooms);
    }
    let sql = format!(
        "SELECT id, name, last_seq FROM rooms WHERE name IN ({})",
        placeholders(1, missing.len())
    );
    let mut query = sqlx::query(AssertSqlSafe(sql));
    for name in &missing {
        query = query.bind(*name);
    }
    for row in query.fetch_all(&mut *conn).await? {
        let name: String = row.try_get("name")?;
        if let Some(found) = missing.iter().find(|m| **m == name) {
            rooms.insert(found, (row.try_get("id")?, seq_from_db(row.try_get("last_seq")?)));
        }
    }
    Ok(rooms)
}

/// A batch with its sequences assigned, ready to be written in one round trip.
struct Plan<'a> {
    rooms: FxHashMap<&'a str, (i64, Seq)>,
    rows: Vec<(i64, Seq, &'a NewMessage)>,
    newest_by_author: FxHashMap<(i64, &'a str), Seq>,
    results: Vec<Appended>,
    now: Millis,
}

impl<'a> Plan<'a> {
    fn new(
        mut rooms: FxHashMap<&'a str, (i64, Seq)>,
        batch: &'a [NewMessage],
        now: Millis,
    ) -> Self {
        let mut results = Vec::with_capacity(batch.len());
        let mut rows = Vec::with_capacity(batch.len());
        let mut newest_by_author = FxHashMap::default();
        for message in batch {
            let Some((room_id, last)) = rooms.get_mut(message.room.as_str()) else {
                results.push(Appended::NoSuchRoom);
                continue;
            };
            *last += 1;
            rows.push((*room_id, *last, message));
            newest_by_author.insert((*room_id, message.author.as_str()), *last);
            results.push(Appended::New { seq: *last, ts: now });
        }
        Self { rooms, rows, newest_by_author, results, now }
    }

    /// One trip to SQLite: begin, insert every row, move the rooms' sequences and the
    /// authors' read markers, commit. A message id already stored makes an INSERT fail
    /// (and nothing is committed).
    async fn write(&self, conn: &mut SqliteConnection) -> Result<(), sqlx::Error> {
        if self.rows.is_empty() {
            return Ok(());
        }
        let mut sql = String::from("BEGIN IMMEDIATE;");
        for chunk in self.rows.chunks(ROWS_PER_INSERT) {
            sql.push_str(&format!(
                "INSERT INTO messages (room_id, seq, author, client_id, body, created_at) VALUES {};",
                placeholders(6, chunk.len())
            ));
        }
        sql.push_str(&format!(
            "UPDATE rooms SET last_seq = v.column2 FROM (VALUES {}) AS v \
             WHERE rooms.id = v.column1 AND rooms.last_seq < v.column2;",
            placeholders(2, self.rooms.len())
        ));
        // Writing in a room reads it: each author's marker moves to their newest message.
        sql.push_str(&format!(
            "UPDATE room_members SET last_read = v.column3 FROM (VALUES {}) AS v \
             WHERE room_members.room_id = v.column1 AND room_members.email = v.column2 \
               AND room_members.last_read < v.column3;",
            placeholders(3, self.newest_by_author.len())
        ));
        sql.push_str("COMMIT;");

        let mut query = sqlx::query(AssertSqlSafe(sql));
        for (room_id, seq, message) in &self.rows {
            query = query
                .bind(*room_id)
                .bind(seq_to_db(*seq))
                .bind(&message.author)
                .bind(&message.client_id)
                .bind(&message.text)
                .bind(self.now);
        }
        for (room_id, last) in self.rooms.values() {
            query = query.bind(*room_id).bind(seq_to_db(*last));
        }
        for ((room_id, author), seq) in &self.newest_by_author {
            query = query.bind(*room_id).bind(*author).bind(seq_to_db(*seq));
        }
        query.execute(&mut *conn).await?;
        Ok(())
    }
}

/// `(?, ?), (?, ?)`: `rows` groups of `width` placeholders (only placeholders: no data ever
/// goes into the SQL text).
fn placeholders(width: usize, rows: usize) -> String {
    let group = format!("({})", vec!["?"; width].join(", "));
    vec![group; rows].join(", ")
}

/// The careful path: one statement per message, for a batch holding a resend.
async fn one_by_one(
    pool: &SqlitePool,
    batch: &[NewMessage],
    now: Millis,
) -> StoreResult<Vec<Appended>> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    // room name -> (room id, last sequence so far in this transaction)
    let mut rooms: HashMap<&str, (i64, Seq)> = HashMap::new();
    // (room id, author) -> newest sequence they wrote in this batch
    let mut newest_by_author: HashMap<(i64, &str), Seq> = HashMap::new();
    let mut results = Vec::with_capacity(batch.len());

    for message in batch {
        let (room_id, last_seq) = match rooms.get(message.room.as_str()) {
            Some(state) => *state,
            None => {
                let row = sqlx::query("SELECT id, last_seq FROM rooms WHERE name = ?1")
                    .bind(&message.room)
                    .fetch_optional(&mut *tx)
                    .await?;
                let Some(row) = row else {
                    results.push(Appended::NoSuchRoom);
                    continue;
                };
                let state = (row.try_get("id")?, seq_from_db(row.try_get("last_seq")?));
                rooms.insert(&message.room, state);
                state
            }
        };
        let seq = last_seq + 1;
        let inserted = sqlx::query(
            "INSERT INTO messages (room_id, seq, author, client_id, body, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (author, client_id) DO NOTHING",
        )
        .bind(room_id)
        .bind(seq_to_db(seq))
        .bind(&message.author)
        .bind(&message.client_id)
        .bind(&message.text)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 1 {
            rooms.insert(&message.room, (room_id, seq));
            newest_by_author.insert((room_id, &message.author), seq);
            results.push(Appended::New { seq, ts: now });
            continue;
        }
        let earlier = sqlx::query(
            "SELECT r.name, m.seq, m.created_at FROM messages m JOIN rooms r ON r.id = m.room_id
             WHERE m.author = ?1 AND m.client_id = ?2",
        )
        .bind(&message.author)
        .bind(&message.client_id)
        .fetch_one(&mut *tx)
        .await?;
        results.push(Appended::Duplicate {
            room: earlier.try_get("name")?,
            seq: seq_from_db(earlier.try_get("seq")?),
            ts: earlier.try_get("created_at")?,
        });
    }

    for (room_id, last_seq) in rooms.values() {
        sqlx::query("UPDATE rooms SET last_seq = ?2 WHERE id = ?1 AND last_seq < ?2")
            .bind(room_id)
            .bind(seq_to_db(*last_seq))
            .execute(&mut *tx)
            .await?;
    }
    for ((room_id, author), seq) in &newest_by_author {
        sqlx::query("UPDATE room_members SET last_read = max(last_read, ?3) WHERE room_id = ?1 AND email = ?2")
            .bind(room_id)
            .bind(*author)
            .bind(seq_to_db(*seq))
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(results)
}
