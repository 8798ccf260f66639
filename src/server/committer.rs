//! Group commit: messages from every connection queue up here; each turn of the loop takes
//! all that are waiting (up to a batch), stores them in one transaction, and only then
//! acknowledges them to their senders and hands them to the hub. One fsync serves the whole
//! batch, and "acknowledged" always means "on disk".
//!
//! When the store refuses a batch, each connection in it is held: its later messages are
//! refused too (they may already be queued) until the first refused one comes again, so a
//! connection's messages are stored in the order it sent them even across a store fault.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::hub::{Conn, Delivery, Hub};
use super::metrics::Metrics;
use super::names::NameCache;
use super::store::{Appended, NewMessage, Store};
use crate::protocol::{ErrorCode, ErrorFrame, Message, ServerFrame};
use crate::server::clock::Clock;

/// Most messages in one transaction. A batch lands in each listener's queue at once, so
/// this stays well below the items of `hub::QUEUE_BOUNDS`.
pub const MAX_BATCH: usize = 512;

/// Messages waiting for the committer before senders wait for room.
const QUEUE_CAPACITY: usize = 8192;
/// How long a connection held after a store fault waits for its refused message to come
/// again before the hold lapses (clients send again after about a second).
const HOLD_FOR_MS: i64 = 30_000;

/// A connection whose message `id` the store refused: nothing after it is stored first.
struct Hold {
    id: String,
    until: i64,
}

/// A message waiting to be stored, and the connection that sent it.
pub struct Pending {
    pub message: NewMessage,
    pub conn: Arc<Conn>,
}

/// The sending side of the committer.
#[derive(Clone)]
pub struct Committer {
    queue: mpsc::Sender<Pending>,
}

impl Committer {
    /// Starts the committer task. Once `stop` is cancelled it takes no new messages,
    /// stores those already queued, and ends.
    pub fn spawn(
        store: Arc<dyn Store>,
        hub: Arc<Hub>,
        names: Arc<NameCache>,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
        stop: CancellationToken,
    ) -> (Self, JoinHandle<()>) {
        let (queue, rx) = mpsc::channel(QUEUE_CAPACITY);
        let task = tokio::spawn(run(rx, stop, store, hub, names, clock, metrics));
        (Self { queue }, task)
    }

    /// Queues a message; waits while the queue is full, which slows only this sender.
    pub async fn submit(&self, pending: Pending) -> Result<(), Pending> {
        self.queue.send(pending).await.map_err(|e| e.0)
    }
}

async fn run(
    mut rx: mpsc::Receiver<Pending>,
    stop: CancellationToken,
    store: Arc<dyn Store>,
    hub: Arc<Hub>,
    names: Arc<NameCache>,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut stopping = false;
    let mut holds: HashMap<u64, Hold> = HashMap::new();
    loop {
        let received = tokio::select! {
            received = rx.recv_many(&mut batch, MAX_BATCH) => received,
            () = stop.cancelled(), if !stopping => {
                // What is queued is still received; then `recv_many` returns 0.
                rx.close();
                stopping = true;
                continue;
            }
        };
        if received == 0 {
            break;
        }
        let now = clock.now_ms();
        // A hold whose connection is gone (or went quiet) lapses.
        holds.retain(|_, hold| hold.until > now);
        let (messages, conns): (Vec<NewMessage>, Vec<Arc<Conn>>) = batch
            .drain(..)
            .filter(|p| admitted(&mut holds, p, now))
            .map(|p| (p.message, p.conn))
            .unzip();
        if messages.is_empty() {
            continue;
        }
        let started = std::time::Instant::now();
        let appended = store.append(&messages, now).await;
        metrics.commit(started.elapsed(), appended.is_ok());
        match appended {
            Ok(results) => {
                let new = results.iter().filter(|r| matches!(r, Appended::New { .. })).count();
                let resent =
                    results.iter().filter(|r| matches!(r, Appended::Duplicate { .. })).count();
                metrics.stored(new as u64, resent as u64);
                for ((message, conn), result) in messages.into_iter().zip(&conns).zip(results) {
                    settle(message, conn, result, &hub, &names);
                }
            }
            Err(error) => {
                tracing::error!(%error, messages = messages.len(), "committer: store refused a batch");
                for (message, conn) in messages.into_iter().zip(&conns) {
                    // The first refused message of each connection is the one to wait for.
                    holds.entry(conn.id).or_insert(Hold {
                        id: message.client_id.clone(),
                        until: now + HOLD_FOR_MS,
                    });
                    refuse(conn, message.client_id);
                }
            }
        }
    }
    tracing::debug!("committer: queue closed and drained");
}

/// Whether a message may go into the batch: not while its connection waits for an earlier
/// message the store refused (that one comes first, and lifts the hold).
fn admitted(holds: &mut HashMap<u64, Hold>, pending: &Pending, now: i64) -> bool {
    let Some(hold) = holds.get(&pending.conn.id) else {
        return true;
    };
    if hold.id == pending.message.client_id || now >= hold.until {
        holds.remove(&pending.conn.id);
        return true;
    }
    refuse(&pending.conn, pending.message.client_id.clone());
    false
}

/// Tells a sender its message was not stored and should come again.
fn refuse(conn: &Conn, id: String) {
    conn.send_error(ErrorFrame {
        id: Some(id),
        ..ErrorFrame::new(
            ErrorCode::StoreUnavailable,
            "the message was not saved: the server cannot write to its database; send it again",
        )
    });
}

/// Acknowledges one stored message to its sender and, when new, fans it out.
fn settle(message: NewMessage, conn: &Conn, result: Appended, hub: &Hub, names: &NameCache) {
    match result {
        Appended::New { seq, ts } => {
            conn.send(&ServerFrame::Ack {
                id: message.client_id.clone(),
                room: message.room.clone(),
                seq,
                ts,
            });
            let room: Arc<str> = message.room.as_str().into();
            let frame = ServerFrame::Message(Message {
                name: names.get(&message.author),
                room: message.room,
                seq,
                id: message.client_id,
                author: message.author,
                text: message.text,
                ts,
            });
            hub.publish(Delivery { room, seq, frame: frame.to_json().into() });
        }
        Appended::Duplicate { room, seq, ts } => {
            conn.send(&ServerFrame::Ack { id: message.client_id, room, seq, ts });
        }
        Appended::NoSuchRoom => conn.send_error(ErrorFrame {
            id: Some(message.client_id),
            ..ErrorFrame::new(
                ErrorCode::NotMember,
                format!("room {:?} does not exist", message.room),
            )
        }),
    }
}
