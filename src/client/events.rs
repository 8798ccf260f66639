//! What a client tells its user as it happens: messages, presence, membership and name
//! changes, and the state of its own connection.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::sync::broadcast;

use super::error::ClientError;
use crate::protocol::{ErrorFrame, Member, Message, RoomSummary, Seq};

/// The state of the client's connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionState {
    /// Not connected yet.
    Idle,
    /// Connected and caught up (or catching up).
    Connected,
    /// The connection dropped; attempt `attempt` starts after `delay`.
    Reconnecting { attempt: u32, delay: Duration },
    /// The client stopped trying; `error` says why (and, displayed, what to do). When
    /// [`ClientError::needs_login`] holds, only a new magic link helps.
    GaveUp { error: ClientError },
    /// The client was closed by its user.
    Closed,
}

/// Something that happened.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// The connection changed state.
    Connection(ConnectionState),
    /// Connected (again): who we are and our rooms. Messages missed while away follow.
    Welcome { email: String, name: Option<String>, rooms: Vec<RoomSummary> },
    /// Catch-up is complete: the last sequence per room.
    Synced { rooms: BTreeMap<String, Seq> },
    /// A message in one of our rooms (each exactly once, in order per room).
    Message(Message),
    /// We joined a room (from this client or another of our connections).
    Joined(RoomSummary),
    /// We left a room.
    Left { room: String },
    /// Someone else joined one of our rooms.
    MemberJoined { room: String, member: Member },
    /// Someone else left one of our rooms.
    MemberLeft { room: String, email: String },
    /// A member of a room came online or went offline.
    Presence { room: String, email: String, online: bool },
    /// Someone's display name changed (ours included).
    Name { email: String, name: Option<String> },
    /// Our read marker in a room moved.
    Read { room: String, seq: Seq },
    /// How many messages are waiting to be acknowledged by the server.
    Outbox { unsent: usize },
    /// An error the server sent that no single call was waiting for.
    ServerError(ErrorFrame),
    /// This receiver fell behind by more than [`EVENT_BUFFER`] events and missed this many.
    /// Reconnecting does not bring them back (the client had them): fetch each room's
    /// messages after the last one you saw with [`crate::AsyncClient::history`].
    Lagged(u64),
}

/// How many events a slow receiver may fall behind before it misses some.
pub const EVENT_BUFFER: usize = 4096;

/// A receiver of events. Each receiver gets every event sent after it was made.
#[derive(Debug)]
pub struct Events {
    receiver: broadcast::Receiver<Event>,
}

impl Events {
    pub(super) fn new(receiver: broadcast::Receiver<Event>) -> Self {
        Self { receiver }
    }

    /// The next event; `None` once the client is gone and every event was read.
    pub async fn recv(&mut self) -> Option<Event> {
        match self.receiver.recv().await {
            Ok(event) => Some(event),
            Err(broadcast::error::RecvError::Lagged(missed)) => Some(Event::Lagged(missed)),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }

    /// The next event if one is waiting, without waiting.
    pub fn try_recv(&mut self) -> Option<Event> {
        match self.receiver.try_recv() {
            Ok(event) => Some(event),
            Err(broadcast::error::TryRecvError::Lagged(missed)) => Some(Event::Lagged(missed)),
            Err(_) => None,
        }
    }
}
