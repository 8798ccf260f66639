//! A connection's writer: drains the connection's queue into the socket, several frames per
//! flush, and keeps the promise that each room's messages reach the client in sequence
//! order with no gap and no duplicate.
//!
//! It remembers, per room, the last sequence it sent. A message at or below it is a
//! duplicate and is skipped; a message further ahead than the next one means something was
//! missed (a race between catch-up and live delivery), and the gap is read from the store
//! before the message goes out.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message as WsMessage, Utf8Bytes, WebSocket};
use futures_util::stream::SplitSink;
use futures_util::{FutureExt, SinkExt};
use tokio_util::sync::CancellationToken;

use rustc_hash::FxHashMap;

use crate::protocol::{ErrorFrame, Seq, ServerFrame};
use crate::server::hub::{CloseReason, CloseSignal, Delivery, Outbound};
use crate::server::queue;
use crate::server::store::{Store, StoreError};

/// Items taken from the queue per flush.
const WRITE_BATCH: usize = 64;
/// Messages read from the store per catch-up query.
const CATCH_UP_PAGE: u32 = 500;
/// How long one flush may wait for the client to take data before it counts as gone.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the error and close frames that end a connection may take to go out.
const GOODBYE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a connection may keep sending what was queued after the server starts to shut
/// down.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(5);
/// How often the server pings an otherwise quiet connection.
const PING_INTERVAL: Duration = Duration::from_secs(25);

type Sink = SplitSink<WebSocket, WsMessage>;

/// Why a write failed; either way the connection is over.
enum WriteError {
    Socket,
    Store(StoreError),
}

impl From<axum::Error> for WriteError {
    fn from(_: axum::Error) -> Self {
        Self::Socket
    }
}

impl From<StoreError> for WriteError {
    fn from(error: StoreError) -> Self {
        Self::Store(error)
    }
}

/// What the writer needs besides its queue.
pub struct Writer {
    pub sink: Sink,
    pub store: Arc<dyn Store>,
    /// Fires when the connection is kicked (too slow, revoked, expired).
    pub signal: Arc<CloseSignal>,
    /// The server's shutdown: decides how the close frame reads when the queue ends.
    pub shutdown: CancellationToken,
    pub conn_id: u64,
}

/// The writer's memory: per room, the last sequence sent.
#[derive(Default)]
struct Cursors(FxHashMap<Arc<str>, Seq>);

impl Writer {
    /// Runs until the queue ends (every sender gone) or the connection is kicked; then sends
    /// the close. Ends early, without a close, when the socket fails or stops taking data.
    /// Returns how the connection ended, for the log.
    pub async fn run(mut self, mut queue: queue::Receiver<Outbound>) -> &'static str {
        let mut cursors = Cursors::default();
        // Grows with the batches a busy connection gets; given back at each ping.
        let mut items = Vec::new();
        let mut ping = tokio::time::interval(PING_INTERVAL);
        ping.reset();
        let signal = self.signal.clone();
        // Once the server shuts down, what is queued gets a short while to go out.
        let shutdown = self.shutdown.clone();
        let drain_deadline = async move {
            shutdown.cancelled().await;
            tokio::time::sleep(SHUTDOWN_DRAIN).await;
        };
        tokio::pin!(drain_deadline);
        // Made once: polling a fresh one on every turn of the loop costs on every delivery.
        let closed = signal.closed();
        tokio::pin!(closed);
        let farewell = loop {
            tokio::select! {
                biased;
                () = &mut closed => break signal.reason(),
                () = &mut drain_deadline => break Some(CloseReason::ShuttingDown),
                received = queue.recv_many(&mut items, WRITE_BATCH) => {
                    if received == 0 {
                        break self.shutdown.is_cancelled().then_some(CloseReason::ShuttingDown);
                    }
                    // Boxed: the state of a write, its timers and the store paths, lives only
                    // while a batch goes out, not in every idle connection's writer.
                    let written = tokio::select! {
                        written = Box::pin(self.write(&mut cursors, items.drain(..))) => written,
                        () = &mut closed => break signal.reason(),
                        () = &mut drain_deadline => break Some(CloseReason::ShuttingDown),
                    };
                    match written {
                        Ok(()) => {}
                        Err(WriteError::Store(error)) => {
                            tracing::error!(conn = self.conn_id, %error, "ws: cannot read the store to fill a gap; closing");
                            break Some(CloseReason::StoreUnavailable);
                        }
                        Err(WriteError::Socket) => return "the client stopped taking data",
                    }
                }
                _ = ping.tick() => {
                    // Every ping, what a burst made the queue and the batch grow is given
                    // back: most connections are idle most of the time.
                    items = Vec::new();
                    queue.shrink();
                    // Boxed, like every rare path: its timers need no room in idle writers.
                    if Box::pin(self.send(WsMessage::Ping(Default::default()))).await.is_err() {
                        return "the client stopped taking data";
                    }
                }
            }
        };
        Box::pin(self.say_goodbye(farewell)).await;
        match farewell {
            Some(CloseReason::StoreUnavailable) => "the store could not be read",
            Some(_) => "closed by the server",
            None => "closed",
        }
    }

    /// Queues one frame in the socket's buffer. When the buffer is full this waits for the
    /// client, at most [`WRITE_TIMEOUT`].
    async fn feed(&mut self, message: WsMessage) -> Result<(), WriteError> {
        within_write_timeout(self.sink.feed(message)).await
    }

    /// Sends what is buffered; fails when the client takes no data for [`WRITE_TIMEOUT`].
    async fn flush(&mut self) -> Result<(), WriteError> {
        within_write_timeout(self.sink.flush()).await
    }

    async fn send(&mut self, message: WsMessage) -> Result<(), WriteError> {
        self.feed(message).await?;
        self.flush().await
    }

    /// Writes a batch of queue items, then flushes once.
    async fn write(
        &mut self,
        cursors: &mut Cursors,
        items: impl Iterator<Item = Outbound>,
    ) -> Result<(), WriteError> {
        for item in items {
            match item {
                Outbound::Frame(bytes) => self.feed(WsMessage::Text(bytes)).await?,
                Outbound::Message(delivery) => self.deliver(cursors, &delivery).await?,
                // Boxed, like every path that reads the store: their state would otherwise
                // sit in every idle connection's writer.
                Outbound::CatchUp(rooms) => Box::pin(self.catch_up(cursors, rooms)).await?,
                Outbound::Follow { room, after } => {
                    // A message may have been committed between the join and this item:
                    // send whatever the store has after `after` now.
                    if !cursors.0.contains_key(&room) {
                        Box::pin(self.send_from_store(cursors, &room, after, None)).await?;
                    }
                }
                Outbound::Unfollow(room) => {
                    cursors.0.remove(&room);
                }
                Outbound::Sync { room, upto } => {
                    if let Some(&last) = cursors.0.get(&room)
                        && last < upto
                    {
                        Box::pin(self.send_from_store(cursors, &room, last, Some(upto))).await?;
                    }
                }
                Outbound::Flush => {}
            }
        }
        self.flush().await
    }

    /// Sends one live message in order, reading any gap before it from the store.
    async fn deliver(
        &mut self,
        cursors: &mut Cursors,
        delivery: &Delivery,
    ) -> Result<(), WriteError> {
        let Some(&last) = cursors.0.get(&delivery.room) else {
            // Not following the room (left it, or the message raced a leave): skip.
            return Ok(());
        };
        if delivery.seq <= last {
            return Ok(());
        }
        if delivery.seq > last + 1 {
            let gap = self.send_from_store(cursors, &delivery.room, last, Some(delivery.seq - 1));
            Box::pin(gap).await?;
        }
        self.feed(WsMessage::Text(delivery.frame.clone())).await?;
        if let Some(cursor) = cursors.0.get_mut(&delivery.room) {
            *cursor = delivery.seq;
        }
        Ok(())
    }

    /// Sends everything after each room's sequence, then `synced`.
    async fn catch_up(
        &mut self,
        cursors: &mut Cursors,
        rooms: Vec<(Arc<str>, Seq)>,
    ) -> Result<(), WriteError> {
        let mut synced = BTreeMap::new();
        for (room, after) in rooms {
            let last = self.send_from_store(cursors, &room, after, None).await?;
            synced.insert(room.to_string(), last);
        }
        let frame = ServerFrame::Synced { rooms: synced };
        self.feed(WsMessage::Text(frame.to_json().into())).await?;
        Ok(())
    }

    /// Sends the stored messages of `room` after `after` (up to `until` when given) and
    /// moves the room's cursor. Returns the last sequence sent (or `after`).
    async fn send_from_store(
        &mut self,
        cursors: &mut Cursors,
        room: &Arc<str>,
        after: Seq,
        until: Option<Seq>,
    ) -> Result<Seq, WriteError> {
        let mut last = after;
        loop {
            let page = self.store.messages_after(room, last, CATCH_UP_PAGE).await?;
            let full = page.len() == CATCH_UP_PAGE as usize;
            for message in page {
                if until.is_some_and(|until| message.seq > until) {
                    cursors.0.insert(room.clone(), last);
                    return Ok(last);
                }
                last = message.seq;
                let frame = ServerFrame::Message(message).to_json();
                self.feed(WsMessage::Text(frame.into())).await?;
            }
            if !full || until.is_some_and(|until| last >= until) {
                break;
            }
        }
        cursors.0.insert(room.clone(), last);
        Ok(last)
    }

    /// Sends the error frame and close frame that explain why the connection ends. A client
    /// that does not take them within [`GOODBYE_TIMEOUT`] is simply dropped.
    async fn say_goodbye(mut self, reason: Option<CloseReason>) {
        let goodbye = async {
            let close = match reason {
                Some(reason) => {
                    let (code, error, message) = reason.describe();
                    let frame = ServerFrame::Error(ErrorFrame::new(error, message)).to_json();
                    self.sink.feed(WsMessage::Text(frame.into())).await?;
                    CloseFrame { code, reason: Utf8Bytes::from_static(message_for_close(reason)) }
                }
                None => CloseFrame { code: 1000, reason: Utf8Bytes::from_static("bye") },
            };
            self.sink.send(WsMessage::Close(Some(close))).await
        };
        let _ = tokio::time::timeout(GOODBYE_TIMEOUT, goodbye).await;
    }
}

/// Awaits a write to the socket; fails when the client takes no data for [`WRITE_TIMEOUT`].
/// Most writes end at once (the socket takes the bytes): those need no timer, and this is
/// the path of every delivery.
async fn within_write_timeout(
    write: impl Future<Output = Result<(), axum::Error>>,
) -> Result<(), WriteError> {
    let mut write = std::pin::pin!(write);
    if let Some(result) = (&mut write).now_or_never() {
        return Ok(result?);
    }
    match tokio::time::timeout(WRITE_TIMEOUT, write).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(WriteError::Socket),
    }
}

/// Close reasons must fit in 123 bytes; these are short forms of the error messages.
fn message_for_close(reason: CloseReason) -> &'static str {
    match reason {
        CloseReason::TooSlow => "too slow",
        CloseReason::AccessRevoked => "access revoked",
        CloseReason::SessionExpired => "session expired",
        CloseReason::ShuttingDown => "server shutting down",
        CloseReason::StoreUnavailable => "database unavailable",
        CloseReason::NoHello => "no hello",
        CloseReason::UnsupportedVersion => "unsupported protocol version",
    }
}
