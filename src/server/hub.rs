//! The hub: which connections are open, which rooms each listens to, and the fan-out of
//! frames to them. It holds no data of its own: the store does; the hub only routes.
//!
//! Every connection has a bounded queue of [`Outbound`] items that its writer task drains.
//! Pushing never waits: a connection whose queue is full is closed as too slow (it catches
//! up by sequence number when it comes back), so one stalled reader never holds up a room.
//! A message is serialised once and its bytes are shared by every recipient.

use std::collections::HashSet;

use rustc_hash::FxHashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};

use axum::extract::ws::Utf8Bytes;
use tokio_util::sync::CancellationToken;

use super::metrics::Metrics;
use super::queue;
use crate::protocol::{
    ErrorCode, ErrorFrame, Member, PRESENCE_PUSH_MAX, RoomSummary, Seq, ServerFrame, close_code,
};

/// How much a connection's queue holds before the connection counts as too slow. Items:
/// room for several commit batches (each can put up to `committer::MAX_BATCH` messages and
/// as many acks in one queue). Bytes: a client that asks for history pages and never reads
/// them is dropped after a few megabytes, not a few gigabytes. The queue allocates as it
/// fills, so an idle connection does not pay for either.
pub const QUEUE_BOUNDS: queue::Bounds = queue::Bounds { items: 4096, bytes: 8 << 20 };

/// One message on its way to every listener of a room.
#[derive(Debug)]
pub struct Delivery {
    pub room: Arc<str>,
    pub seq: Seq,
    pub frame: Utf8Bytes,
}

/// What a connection's writer is asked to do, in order.
#[derive(Debug)]
pub enum Outbound {
    /// Send this frame as it is.
    Frame(Utf8Bytes),
    /// Send a room's message unless already sent, filling any gap before it from the store.
    Message(Arc<Delivery>),
    /// Send every message after each room's sequence, then `synced`.
    CatchUp(Vec<(Arc<str>, Seq)>),
    /// Start delivering a room's messages after `after`.
    Follow { room: Arc<str>, after: Seq },
    /// Stop delivering a room's messages.
    Unfollow(Arc<str>),
    /// Send whatever of a room's messages up to `upto` was not sent yet (after another
    /// node's notices may have been missed).
    Sync { room: Arc<str>, upto: Seq },
    /// Just flush (a pong tungstenite queued while reading goes out with it).
    Flush,
}

impl queue::Weigh for Outbound {
    /// The frame bytes the item holds alive. A shared message counts fully in every queue
    /// it waits in: a stalled reader is what keeps it alive.
    fn weight(&self) -> usize {
        match self {
            Self::Frame(bytes) => bytes.len(),
            Self::Message(delivery) => delivery.frame.len(),
            Self::CatchUp(_)
            | Self::Follow { .. }
            | Self::Unfollow(_)
            | Self::Sync { .. }
            | Self::Flush => 0,
        }
    }
}

/// Why the server closes a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    TooSlow,
    AccessRevoked,
    SessionExpired,
    ShuttingDown,
    /// The store could not be read to fill a gap in the connection's messages.
    StoreUnavailable,
    /// No `hello` in time.
    NoHello,
    /// `hello` asked for a protocol version this server does not speak.
    UnsupportedVersion,
}

impl CloseReason {
    /// The WebSocket close code and the error frame that precede the close.
    pub fn describe(self) -> (u16, ErrorCode, &'static str) {
        match self {
            Self::TooSlow => (
                close_code::TOO_SLOW,
                ErrorCode::TooSlow,
                "this connection fell too far behind; reconnect to catch up",
            ),
            Self::AccessRevoked => (
                close_code::ACCESS_REVOKED,
                ErrorCode::AccessRevoked,
                "this address is no longer allowed on this server",
            ),
            Self::SessionExpired => (
                close_code::SESSION_EXPIRED,
                ErrorCode::SessionExpired,
                "session expired: request a new link",
            ),
            Self::ShuttingDown => {
                (1001, ErrorCode::ShuttingDown, "the server is shutting down; reconnect shortly")
            }
            Self::StoreUnavailable => (
                1011,
                ErrorCode::StoreUnavailable,
                "the server cannot read its database right now; reconnect shortly to catch up",
            ),
            Self::NoHello => (
                close_code::HANDSHAKE_FAILED,
                ErrorCode::HelloRequired,
                "no hello in time: send {\"type\":\"hello\",\"v\":1} first",
            ),
            Self::UnsupportedVersion => (
                close_code::HANDSHAKE_FAILED,
                ErrorCode::UnsupportedVersion,
                "this server speaks protocol version 1 only; update roomz",
            ),
        }
    }
}

/// The way a connection is told to close, shared by the connection and its writer.
#[derive(Debug, Default)]
pub struct CloseSignal {
    token: CancellationToken,
    reason: OnceLock<CloseReason>,
}

impl CloseSignal {
    /// Asks the connection to close; the first reason given wins.
    pub fn close(&self, reason: CloseReason) {
        let _ = self.reason.set(reason);
        self.token.cancel();
    }

    /// Why the connection was asked to close, if it was.
    pub fn reason(&self) -> Option<CloseReason> {
        self.reason.get().copied()
    }

    /// Resolves when the connection is asked to close.
    pub async fn closed(&self) {
        self.token.cancelled().await;
    }
}

/// One open WebSocket, as the rest of the server sees it. The queue's sending half lives
/// here: when the last `Arc<Conn>` is gone, the writer drains what is left and ends.
#[derive(Debug)]
pub struct Conn {
    pub id: u64,
    pub email: Arc<str>,
    queue: queue::Sender<Outbound>,
    metrics: Arc<Metrics>,
    signal: Arc<CloseSignal>,
    rooms: Mutex<HashSet<Arc<str>>>,
}

impl Conn {
    /// Queues an item for the writer; a full queue closes the connection as too slow.
    pub fn push(&self, item: Outbound) {
        match self.queue.push(item) {
            Ok(()) => {}
            Err(queue::Full) => {
                if self.signal.reason().is_none() {
                    tracing::warn!(conn = self.id, email = %self.email, "ws: queue full, dropping slow connection");
                    self.metrics.slow_dropped();
                }
                self.close(CloseReason::TooSlow);
            }
        }
    }

    /// Serialises and queues a frame.
    pub fn send(&self, frame: &ServerFrame) {
        self.push(Outbound::Frame(frame.to_json().into()));
    }

    /// Queues an error frame.
    pub fn send_error(&self, error: ErrorFrame) {
        self.send(&ServerFrame::Error(error));
    }

    /// Asks the connection to close; the first reason given wins.
    pub fn close(&self, reason: CloseReason) {
        self.signal.close(reason);
    }

    /// The close signal, for the writer.
    pub fn signal(&self) -> Arc<CloseSignal> {
        self.signal.clone()
    }

    /// Whether this connection's user is a member of `room` (as of their last join/leave).
    pub fn listens_to(&self, room: &str) -> bool {
        self.rooms.lock().expect("room set lock").contains(room)
    }

    /// How many rooms the connection listens to.
    pub fn room_count(&self) -> usize {
        self.rooms.lock().expect("room set lock").len()
    }
}

/// The connections listening to one room.
#[derive(Default)]
struct Room {
    conns: FxHashMap<u64, Arc<Conn>>,
    /// How many of those connections each user has.
    users: FxHashMap<Arc<str>, usize>,
}

#[derive(Default)]
struct Inner {
    rooms: FxHashMap<Arc<str>, Room>,
    users: FxHashMap<Arc<str>, Vec<Arc<Conn>>>,
}

impl Inner {
    fn listeners(&self, room: &str) -> impl Iterator<Item = &Arc<Conn>> {
        self.rooms.get(room).into_iter().flat_map(|r| r.conns.values())
    }

    /// How many distinct users listen to `room`.
    fn online_users(&self, room: &str) -> usize {
        self.rooms.get(room).map_or(0, |r| r.users.len())
    }

    fn listen(&mut self, conn: &Arc<Conn>, room: &Arc<str>) {
        if conn.rooms.lock().expect("room set lock").insert(room.clone()) {
            let listeners = self.rooms.entry(room.clone()).or_default();
            listeners.conns.insert(conn.id, conn.clone());
            *listeners.users.entry(conn.email.clone()).or_default() += 1;
        }
    }

    fn unlisten(&mut self, conn: &Conn, room: &str) {
        if !conn.rooms.lock().expect("room set lock").remove(room) {
            return;
        }
        let Some(listeners) = self.rooms.get_mut(room) else {
            return;
        };
        listeners.conns.remove(&conn.id);
        if let Some(count) = listeners.users.get_mut(&conn.email) {
            *count -= 1;
            if *count == 0 {
                listeners.users.remove(&conn.email);
            }
        }
        if listeners.conns.is_empty() {
            self.rooms.remove(room);
        }
    }

    /// Tells the other listeners of each room that `email` came or went, where the room is
    /// small enough for presence to be pushed.
    fn announce_presence(&self, email: &str, rooms: &[Arc<str>], online: bool) {
        for room in rooms {
            if self.online_users(room) > PRESENCE_PUSH_MAX {
                continue;
            }
            let frame =
                ServerFrame::Presence { room: room.to_string(), email: email.to_owned(), online };
            let bytes: Utf8Bytes = frame.to_json().into();
            for conn in self.listeners(room).filter(|c| *c.email != *email) {
                conn.push(Outbound::Frame(bytes.clone()));
            }
        }
    }
}

/// The registry of open connections.
#[derive(Default)]
pub struct Hub {
    inner: RwLock<Inner>,
    next_id: AtomicU64,
    metrics: Arc<Metrics>,
}

impl Hub {
    /// A hub that counts its deliveries and dropped connections in `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self { metrics, ..Self::default() }
    }

    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        self.inner.read().expect("hub lock poisoned")
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().expect("hub lock poisoned")
    }

    /// Makes a connection and the receiving end of its queue. It is not registered yet.
    pub fn connection(&self, email: Arc<str>) -> (Arc<Conn>, queue::Receiver<Outbound>) {
        let (queue, rx) = queue::queue(QUEUE_BOUNDS);
        let conn = Conn {
            id: self.next_id.fetch_add(1, Ordering::Relaxed) + 1,
            email,
            queue,
            metrics: self.metrics.clone(),
            signal: Arc::default(),
            rooms: Mutex::new(HashSet::new()),
        };
        (Arc::new(conn), rx)
    }

    /// Registers a connection after its `hello`: queues `welcome` and the catch-up, then
    /// starts routing the rooms' messages to it. All under one lock, so no message can slip
    /// between the catch-up and the live stream. Returns whether it is the user's first
    /// connection here; with `announce`, the rooms' members are then told they came online
    /// (a node of a cluster leaves that to the cluster, which knows the other nodes).
    pub fn register(
        &self,
        conn: &Arc<Conn>,
        welcome: Utf8Bytes,
        rooms: Vec<(Arc<str>, Seq)>,
        announce: bool,
    ) -> bool {
        let mut inner = self.write();
        conn.push(Outbound::Frame(welcome));
        let names: Vec<Arc<str>> = rooms.iter().map(|(room, _)| room.clone()).collect();
        conn.push(Outbound::CatchUp(rooms));
        for room in &names {
            inner.listen(conn, room);
        }
        let sessions = inner.users.entry(conn.email.clone()).or_default();
        sessions.push(conn.clone());
        let first = sessions.len() == 1;
        if first && announce {
            inner.announce_presence(&conn.email, &names, true);
        }
        first
    }

    /// Forgets a connection. When it was the user's last here, returns their rooms; with
    /// `announce`, their members are then told the user went offline.
    pub fn unregister(&self, conn: &Conn, announce: bool) -> Option<Vec<Arc<str>>> {
        let mut inner = self.write();
        let rooms: Vec<Arc<str>> =
            conn.rooms.lock().expect("room set lock").iter().cloned().collect();
        for room in &rooms {
            inner.unlisten(conn, room);
        }
        let sessions = inner.users.get_mut(&conn.email)?;
        sessions.retain(|c| c.id != conn.id);
        if !sessions.is_empty() {
            return None;
        }
        inner.users.remove(&conn.email);
        if announce {
            inner.announce_presence(&conn.email, &rooms, false);
        }
        Some(rooms)
    }

    /// Tells the members of `rooms` here that `email` came online or went offline.
    pub fn announce_presence(&self, email: &str, rooms: &[Arc<str>], online: bool) {
        self.read().announce_presence(email, rooms, online);
    }

    /// Whether any connection here listens to `room`.
    pub fn has_listeners(&self, room: &str) -> bool {
        self.read().rooms.contains_key(room)
    }

    /// The rooms some connection here listens to.
    pub fn rooms(&self) -> Vec<Arc<str>> {
        self.read().rooms.keys().cloned().collect()
    }

    /// Has every listener of `room` send what it has not sent up to `upto`.
    pub fn sync(&self, room: &str, upto: Seq) {
        let inner = self.read();
        let Some((name, _)) = inner.rooms.get_key_value(room) else {
            return;
        };
        for conn in inner.listeners(room) {
            conn.push(Outbound::Sync { room: name.clone(), upto });
        }
    }

    /// Routes a committed message to every connection listening to its room.
    pub fn publish(&self, delivery: Delivery) {
        let delivery = Arc::new(delivery);
        let inner = self.read();
        let mut count = 0;
        for conn in inner.listeners(&delivery.room) {
            conn.push(Outbound::Message(delivery.clone()));
            count += 1;
        }
        self.metrics.delivered(count);
    }

    /// After `email` joined `room`: every connection of theirs starts listening after
    /// `after` and gets `joined` (`req` goes only to `asking`); when the join is new, the
    /// room's other listeners get `member_joined`.
    pub fn joined(
        &self,
        asking: &Conn,
        req: Option<u64>,
        summary: RoomSummary,
        member: Option<Member>,
    ) {
        self.join_here(&asking.email, Some((asking.id, req)), summary, member);
    }

    /// The same for a join made on another node.
    pub fn joined_elsewhere(&self, email: &str, summary: RoomSummary, member: Option<Member>) {
        self.join_here(email, None, summary, member);
    }

    fn join_here(
        &self,
        email: &str,
        asking: Option<(u64, Option<u64>)>,
        summary: RoomSummary,
        member: Option<Member>,
    ) {
        let room: Arc<str> = summary.name.as_str().into();
        let after = summary.last_seq;
        let mut inner = self.write();
        if let Some(member) = member {
            let frame = ServerFrame::MemberJoined { room: room.to_string(), member }.to_json();
            let bytes: Utf8Bytes = frame.into();
            for conn in inner.listeners(&room).filter(|c| *c.email != *email) {
                conn.push(Outbound::Frame(bytes.clone()));
            }
        }
        let sessions = inner.users.get(email).cloned().unwrap_or_default();
        for conn in &sessions {
            // `joined` first: the room's messages must not reach a client that does not
            // know the room yet.
            let req = asking.and_then(|(id, req)| req.filter(|_| id == conn.id));
            conn.send(&ServerFrame::Joined { req, room: summary.clone() });
            conn.push(Outbound::Follow { room: room.clone(), after });
            inner.listen(conn, &room);
        }
    }

    /// After `email` left `room`: their connections stop listening and get `left`; the
    /// other listeners get `member_left` when `announce` is set.
    pub fn left(&self, asking: &Conn, req: Option<u64>, room: &str, announce: bool) {
        self.leave_here(&asking.email, Some((asking.id, req)), room, announce);
    }

    /// The same for a leave made on another node.
    pub fn left_elsewhere(&self, email: &str, room: &str, announce: bool) {
        self.leave_here(email, None, room, announce);
    }

    fn leave_here(
        &self,
        email: &str,
        asking: Option<(u64, Option<u64>)>,
        room: &str,
        announce: bool,
    ) {
        let mut inner = self.write();
        let sessions = inner.users.get(email).cloned().unwrap_or_default();
        for conn in &sessions {
            inner.unlisten(conn, room);
            conn.push(Outbound::Unfollow(room.into()));
            let req = asking.and_then(|(id, req)| req.filter(|_| id == conn.id));
            conn.send(&ServerFrame::Left { req, room: room.to_owned() });
        }
        if announce {
            let frame = ServerFrame::MemberLeft { room: room.to_owned(), email: email.to_owned() };
            let bytes: Utf8Bytes = frame.to_json().into();
            for conn in inner.listeners(room) {
                conn.push(Outbound::Frame(bytes.clone()));
            }
        }
    }

    /// Sends a frame to every connection of one user.
    pub fn send_to_user(&self, email: &str, frame: &ServerFrame) {
        let inner = self.read();
        if let Some(sessions) = inner.users.get(email) {
            let bytes: Utf8Bytes = frame.to_json().into();
            for conn in sessions {
                conn.push(Outbound::Frame(bytes.clone()));
            }
        }
    }

    /// Sends a frame to every open connection but one.
    pub fn broadcast_except(&self, except: u64, frame: &ServerFrame) {
        let bytes: Utf8Bytes = frame.to_json().into();
        let inner = self.read();
        for conn in inner.users.values().flatten().filter(|c| c.id != except) {
            conn.push(Outbound::Frame(bytes.clone()));
        }
    }

    /// How many users have at least one open connection.
    pub fn user_count(&self) -> usize {
        self.read().users.len()
    }

    /// The users with at least one open connection.
    pub fn users(&self) -> Vec<String> {
        self.read().users.keys().map(|email| email.to_string()).collect()
    }

    /// The rooms the connections of `email` listen to.
    pub fn rooms_of_user(&self, email: &str) -> Vec<Arc<str>> {
        let inner = self.read();
        let conn = inner.users.get(email).and_then(|sessions| sessions.first());
        conn.map(|c| c.rooms.lock().expect("room set lock").iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Whether the user has at least one open connection.
    pub fn is_online(&self, email: &str) -> bool {
        self.read().users.contains_key(email)
    }

    /// Closes every connection of one user.
    pub fn close_user(&self, email: &str, reason: CloseReason) -> usize {
        let inner = self.read();
        let sessions = inner.users.get(email).map_or(&[][..], Vec::as_slice);
        for conn in sessions {
            conn.close(reason);
        }
        sessions.len()
    }

    /// How many connections are registered.
    pub fn connection_count(&self) -> usize {
        self.read().users.values().map(Vec::len).sum()
    }
}
