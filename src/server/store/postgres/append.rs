//! Appending a batch of messages on PostgreSQL, where other nodes append to the same rooms.
//! One transaction: the batch's ids already stored are found first (a resend answers with
//! its first copy); the rooms' rows are locked in name order (two nodes never wait for each
//! other in a circle) and their sequences moved past the new messages; the messages go in
//! with one `INSERT ... UNNEST`; the authors' read markers move; and one notification per
//! room tells the other nodes which sequences to fetch. A row lock held to the commit means
//! a room's numbers are committed in order, whichever node took them.

use std::collections::BTreeMap;

use rustc_hash::FxHashMap;
use sqlx::{PgConnection, PgPool, Row};

use super::{seq_from_db, seq_to_db};
use crate::protocol::{Millis, Seq};
use crate::server::cluster::{self, NodeId, Notice};
use crate::server::store::{Appended, NewMessage, StoreResult};

/// Attempts of a batch that lost a race: another node stored one of its ids meanwhile.
const ATTEMPTS: usize = 3;

pub async fn append(
    pool: &PgPool,
    node: &NodeId,
    batch: &[NewMessage],
    now: Millis,
) -> StoreResult<Vec<Appended>> {
    let mut attempt = 1;
    loop {
        let mut tx = pool.begin().await?;
        match write(&mut tx, node, batch, now).await {
            Ok(results) => {
                tx.commit().await?;
                return Ok(results);
            }
            // A resend stored by another node between our look and our insert, or a deadlock
            // PostgreSQL broke by failing us: try the batch again.
            Err(sqlx::Error::Database(e)) if worth_retrying(&*e) && attempt < ATTEMPTS => {
                tx.rollback().await?;
                attempt += 1;
            }
            Err(other) => return Err(other.into()),
        }
    }
}

/// A unique violation (a resend that raced us), a deadlock (40P01) or a serialization
/// failure (40001): the same batch can succeed when tried again.
fn worth_retrying(error: &dyn sqlx::error::DatabaseError) -> bool {
    error.kind() == sqlx::error::ErrorKind::UniqueViolation
        || matches!(error.code().as_deref(), Some("40P01" | "40001"))
}

/// Where one message of the batch stands while it is planned.
enum Slot {
    /// Already stored.
    Done(Appended),
    /// New, in this room; numbered once the room is locked.
    New { room: usize },
    /// The same id as an earlier message of this batch.
    SameAs(usize),
}

async fn write(
    conn: &mut PgConnection,
    node: &NodeId,
    batch: &[NewMessage],
    now: Millis,
) -> Result<Vec<Appended>, sqlx::Error> {
    let stored = already_stored(conn, batch).await?;

    // The batch's rooms, by name (the order their rows are locked in).
    let mut rooms: BTreeMap<&str, usize> = BTreeMap::new();
    let mut first_of_id: FxHashMap<(&str, &str), usize> = FxHashMap::default();
    let mut slots = Vec::with_capacity(batch.len());
    for (at, message) in batch.iter().enumerate() {
        let id = (message.author.as_str(), message.client_id.as_str());
        if let Some(earlier) = stored.get(&id) {
            slots.push(Slot::Done(earlier.clone()));
        } else if let Some(first) = first_of_id.get(&id) {
            slots.push(Slot::SameAs(*first));
        } else {
            first_of_id.insert(id, at);
            let next = rooms.len();
            slots.push(Slot::New { room: *rooms.entry(message.room.as_str()).or_insert(next) });
        }
    }
    let mut counts = vec![0i64; rooms.len()];
    for slot in &slots {
        if let Slot::New { room } = slot {
            counts[*room] += 1;
        }
    }

    // Lock the rooms in name order and take their numbers.
    let names: Vec<&str> = rooms.keys().copied().collect();
    let locked = sqlx::query(
        "SELECT id, name, last_seq FROM rooms WHERE name = ANY($1) ORDER BY name FOR UPDATE",
    )
    .bind(&names)
    .fetch_all(&mut *conn)
    .await?;
    // Per room of the batch: (id, the sequence before this batch), when the room exists.
    let mut found: Vec<Option<(i64, Seq)>> = vec![None; rooms.len()];
    for row in &locked {
        let name: &str = row.try_get("name")?;
        if let Some(at) = rooms.get(name) {
            found[*at] = Some((row.try_get("id")?, seq_from_db(row.try_get("last_seq")?)));
        }
    }

    // Number the new messages, in batch order within each room.
    let mut next: Vec<Seq> = found.iter().map(|f| f.map_or(0, |(_, last)| last)).collect();
    let mut results: Vec<Appended> = Vec::with_capacity(batch.len());
    let mut rows = Rows::default();
    let mut newest_by_author: FxHashMap<(i64, &str), Seq> = FxHashMap::default();
    for (message, slot) in batch.iter().zip(&slots) {
        let result = match slot {
            Slot::Done(result) => result.clone(),
            Slot::SameAs(first) => same_as(&results[*first], message),
            Slot::New { room } => match found[*room] {
                None => Appended::NoSuchRoom,
                Some((room_id, _)) => {
                    next[*room] += 1;
                    let seq = next[*room];
                    rows.push(room_id, seq, message, now);
                    newest_by_author.insert((room_id, message.author.as_str()), seq);
                    Appended::New { seq, ts: now }
                }
            },
        };
        results.push(result);
    }
    if rows.is_empty() {
        return Ok(results);
    }

    rows.insert(conn).await?;
    let (moved_ids, moved_to): (Vec<i64>, Vec<i64>) = found
        .iter()
        .zip(&next)
        .filter_map(|(f, last)| f.filter(|(_, before)| before < last).map(|(id, _)| (id, *last)))
        .map(|(id, last)| (id, seq_to_db(last)))
        .unzip();
    sqlx::query(
        "UPDATE rooms SET last_seq = v.last FROM UNNEST($1::bigint[], $2::bigint[]) AS v(id, last)
         WHERE rooms.id = v.id",
    )
    .bind(&moved_ids)
    .bind(&moved_to)
    .execute(&mut *conn)
    .await?;
    move_read_markers(conn, &newest_by_author).await?;

    // One notification per room: the other nodes fetch these sequences and fan them out.
    let mut notices = Vec::new();
    for (name, at) in &rooms {
        if let Some((_, before)) = found[*at]
            && next[*at] > before
        {
            let notice =
                Notice::Messages { room: (*name).to_owned(), first: before + 1, last: next[*at] };
            notices.push(cluster::payload(node, &notice));
        }
    }
    sqlx::query("SELECT pg_notify($1, payload) FROM UNNEST($2::text[]) AS p(payload)")
        .bind(cluster::CHANNEL)
        .bind(&notices)
        .execute(&mut *conn)
        .await?;
    Ok(results)
}

/// The answer for a second message with the id of an earlier one in the same batch.
fn same_as(first: &Appended, message: &NewMessage) -> Appended {
    match first {
        Appended::New { seq, ts } => {
            Appended::Duplicate { room: message.room.clone(), seq: *seq, ts: *ts }
        }
        other => other.clone(),
    }
}

/// The batch's (author, client id) pairs already stored, with their first copy.
async fn already_stored<'a>(
    conn: &mut PgConnection,
    batch: &'a [NewMessage],
) -> Result<FxHashMap<(&'a str, &'a str), Appended>, sqlx::Error> {
    let authors: Vec<&str> = batch.iter().map(|m| m.author.as_str()).collect();
    let ids: Vec<&str> = batch.iter().map(|m| m.client_id.as_str()).collect();
    let found = sqlx::query(
        "SELECT m.author, m.client_id, r.name, m.seq, m.created_at
         FROM messages m JOIN rooms r ON r.id = m.room_id
         JOIN UNNEST($1::text[], $2::text[]) AS b(author, client_id)
           ON m.author = b.author AND m.client_id = b.client_id",
    )
    .bind(&authors)
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await?;
    let mut stored = FxHashMap::default();
    for row in &found {
        let (author, client_id): (String, String) =
            (row.try_get("author")?, row.try_get("client_id")?);
        let Some(message) = batch.iter().find(|m| m.author == author && m.client_id == client_id)
        else {
            continue;
        };
        stored.insert(
            (message.author.as_str(), message.client_id.as_str()),
            Appended::Duplicate {
                room: row.try_get("name")?,
                seq: seq_from_db(row.try_get("seq")?),
                ts: row.try_get("created_at")?,
            },
        );
    }
    Ok(stored)
}

/// The new rows, column by column, for one `INSERT ... UNNEST`.
#[derive(Default)]
struct Rows<'a> {
    room_ids: Vec<i64>,
    seqs: Vec<i64>,
    authors: Vec<&'a str>,
    client_ids: Vec<&'a str>,
    bodies: Vec<&'a str>,
    times: Vec<i64>,
}

impl<'a> Rows<'a> {
    fn push(&mut self, room_id: i64, seq: Seq, message: &'a NewMessage, now: Millis) {
        self.room_ids.push(room_id);
        self.seqs.push(seq_to_db(seq));
        self.authors.push(&message.author);
        self.client_ids.push(&message.client_id);
        self.bodies.push(&message.text);
        self.times.push(now);
    }

    fn is_empty(&self) -> bool {
        self.seqs.is_empty()
    }

    async fn insert(&self, conn: &mut PgConnection) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO messages (room_id, seq, author, client_id, body, created_at)
             SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::text[], $4::text[],
                                  $5::text[], $6::bigint[])",
        )
        .bind(&self.room_ids)
        .bind(&self.seqs)
        .bind(&self.authors)
        .bind(&self.client_ids)
        .bind(&self.bodies)
        .bind(&self.times)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }
}

/// Writing in a room reads it: each author's marker moves to their newest message.
async fn move_read_markers(
    conn: &mut PgConnection,
    newest: &FxHashMap<(i64, &str), Seq>,
) -> Result<(), sqlx::Error> {
    let mut room_ids = Vec::with_capacity(newest.len());
    let mut emails = Vec::with_capacity(newest.len());
    let mut seqs = Vec::with_capacity(newest.len());
    for ((room_id, email), seq) in newest {
        room_ids.push(*room_id);
        emails.push(*email);
        seqs.push(seq_to_db(*seq));
    }
    sqlx::query(
        "UPDATE room_members SET last_read = GREATEST(last_read, v.seq)
         FROM UNNEST($1::bigint[], $2::text[], $3::bigint[]) AS v(room_id, email, seq)
         WHERE room_members.room_id = v.room_id AND room_members.email = v.email",
    )
    .bind(&room_ids)
    .bind(&emails)
    .bind(&seqs)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
