//! The language the server and its clients speak: WebSocket frames, HTTP bodies, limits and
//! the text rules. The server and the clients both depend on this module and on nothing of
//! each other. docs/PROTOCOL.md describes every frame with an example.
//!
//! Frames are JSON objects tagged by `type`. The version is agreed once per connection: the
//! client's first frame is `hello` with `v`, and the server answers `welcome` with its own.
//! Fields a side does not know are ignored, so either side may add optional fields within a
//! version.

pub mod http;
pub mod text;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// Per-room sequence number. The first message of a room is 1; 0 means "none yet".
pub type Seq = u64;

/// Milliseconds since the Unix epoch, UTC.
pub type Millis = i64;

/// A frame from a client to the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame {
    /// Must be the first frame. `since` maps rooms to the last sequence the client has seen:
    /// the server sends everything after it, then `synced`.
    Hello {
        v: u32,
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        since: BTreeMap<String, Seq>,
    },
    /// Post a message. `id` is the client's own id for it (1 to 64 characters of
    /// `A-Za-z0-9._:-`); sending the same id again never makes a second message.
    Send { room: String, id: String, text: String },
    /// A page of messages older than `before` (the newest page when absent), oldest first.
    History {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        req: Option<u64>,
        room: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        before: Option<Seq>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<u32>,
    },
    /// The rooms of this user with member and unread counts.
    Rooms {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        req: Option<u64>,
    },
    /// Join a room, creating it if it does not exist.
    Join {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        req: Option<u64>,
        room: String,
    },
    /// Leave a room (not the default room).
    Leave {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        req: Option<u64>,
        room: String,
    },
    /// The members of a room and whether each is online, a page of at most
    /// [`MEMBERS_PAGE_MAX`] at a time, by email: the first page, or the page after `after`.
    Members {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        req: Option<u64>,
        room: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<String>,
    },
    /// Everything up to `seq` in `room` has been read. Markers only move forward.
    MarkRead { room: String, seq: Seq },
    /// Set (or, with null or an empty string, clear) this user's display name.
    SetName {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        req: Option<u64>,
        name: Option<String>,
    },
    /// Application-level liveness check; answered with `pong`.
    Ping {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        req: Option<u64>,
    },
}

/// A frame from the server to a client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    /// The answer to `hello`: who you are, the limits, and your rooms.
    Welcome {
        v: u32,
        email: String,
        name: Option<String>,
        session_expires_at: Millis,
        limits: Limits,
        rooms: Vec<RoomSummary>,
    },
    /// A message in one of your rooms, live or during catch-up.
    Message(Message),
    /// Your message `id` is committed to the store as `seq` of `room`.
    Ack { id: String, room: String, seq: Seq, ts: Millis },
    /// Catch-up after `hello` is complete: the last sequence sent per room.
    Synced { rooms: BTreeMap<String, Seq> },
    /// A page of history, oldest first. `more` says whether older messages exist.
    History {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        req: Option<u64>,
        room: String,
        messages: Vec<Message>,
        more: bool,
    },
    /// Your rooms.
    Rooms {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        req: Option<u64>,
        rooms: Vec<RoomSummary>,
    },
    /// You joined a room (sent to all your connections; `req` only to the one that asked).
    Joined {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        req: Option<u64>,
        room: RoomSummary,
    },
    /// You left a room (sent to all your connections).
    Left {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        req: Option<u64>,
        room: String,
    },
    /// Someone else joined one of your rooms.
    MemberJoined { room: String, member: Member },
    /// Someone else left one of your rooms.
    MemberLeft { room: String, email: String },
    /// A page of the members of a room, by email; `more` says a next page exists (ask
    /// with `after` = the last email of this one).
    Members {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        req: Option<u64>,
        room: String,
        members: Vec<Member>,
        #[serde(default)]
        more: bool,
    },
    /// A member of a room came online or went offline. Sent for rooms with at most
    /// [`PRESENCE_PUSH_MAX`] members online; in larger rooms ask with `members`.
    Presence { room: String, email: String, online: bool },
    /// Your read marker in `room` moved to `seq` (from this or another of your connections).
    Read { room: String, seq: Seq },
    /// A user's display name changed (`null`: they cleared it). `req` only goes to the
    /// connection that asked.
    Name {
        email: String,
        name: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        req: Option<u64>,
    },
    /// The answer to `ping`.
    Pong {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        req: Option<u64>,
    },
    /// Something went wrong with a frame; the connection stays open unless a close follows.
    Error(ErrorFrame),
}

/// A stored message as clients see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub room: String,
    pub seq: Seq,
    /// The id its author's client gave it.
    pub id: String,
    /// The author's email.
    pub author: String,
    /// The author's display name now, if they have one.
    pub name: Option<String>,
    pub text: String,
    /// When the server committed it.
    pub ts: Millis,
}

/// A room as one member sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomSummary {
    pub name: String,
    /// How many members the room has.
    pub members: u64,
    /// Sequence of the newest message (0 when empty).
    pub last_seq: Seq,
    /// This member's read marker.
    pub last_read: Seq,
    /// Messages after the read marker.
    pub unread: u64,
}

/// A member of a room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub email: String,
    pub name: Option<String>,
    pub online: bool,
}

/// The limits a server enforces, announced in `welcome` so clients can check before sending.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    /// Longest message text, in characters (after cleaning).
    pub max_message_chars: usize,
    /// Largest frame the server reads, in bytes; a larger one gets `frame_too_large`.
    pub max_frame_bytes: usize,
    /// Sustained messages per second per user.
    pub messages_per_second: u32,
    /// Messages a user may send in a burst above the sustained rate.
    pub message_burst: u32,
    /// Most messages in one `history` page.
    pub history_page_max: u32,
}

/// What went wrong, for a machine (`code`) and for a person (`message`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorFrame {
    pub code: ErrorCode,
    pub message: String,
    /// The `req` of the frame that failed, when it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub req: Option<u64>,
    /// The message id of a `send` that failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// For `rate_limited`: when to try again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

/// Machine-readable error codes. Clients match on these; the message is for people.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not JSON, not an object, unknown `type`, a missing or mistyped field, binary data.
    BadFrame,
    /// The frame is larger than `limits.max_frame_bytes`.
    FrameTooLarge,
    /// Another frame came before `hello`.
    HelloRequired,
    /// `hello` asked for a version this server does not speak.
    UnsupportedVersion,
    InvalidRoom,
    InvalidName,
    InvalidId,
    EmptyMessage,
    MessageTooLong,
    /// The room does not exist or you are not a member.
    NotMember,
    /// The default room cannot be left.
    CannotLeaveDefault,
    /// You are in as many rooms as the server allows.
    TooManyRooms,
    /// Over the message rate; `retry_after_ms` says when to try again.
    RateLimited,
    /// The server could not reach its store; nothing was saved, try again.
    StoreUnavailable,
    /// The session expired; the connection closes. Log in again.
    SessionExpired,
    /// Your address was removed from the allow-list; the connection closes.
    AccessRevoked,
    /// This connection fell too far behind; it closes. Reconnect and catch up.
    TooSlow,
    /// The server is shutting down; reconnect later.
    ShuttingDown,
    /// A code this build does not know (from a newer server).
    #[serde(other)]
    Unknown,
}

/// In rooms with more online members than this, presence changes are not pushed.
pub const PRESENCE_PUSH_MAX: usize = 200;

/// Most members in one `members` answer (a few hundred KB of JSON at most).
pub const MEMBERS_PAGE_MAX: u32 = 1000;

/// WebSocket close codes the server uses (besides the standard ones).
pub mod close_code {
    /// The session expired.
    pub const SESSION_EXPIRED: u16 = 4001;
    /// The address was removed from the allow-list.
    pub const ACCESS_REVOKED: u16 = 4003;
    /// The connection fell too far behind.
    pub const TOO_SLOW: u16 = 4008;
    /// No `hello` in time, or a wrong version.
    pub const HANDSHAKE_FAILED: u16 = 4002;
}

impl ErrorFrame {
    /// An error with no `req` or `id`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), req: None, id: None, retry_after_ms: None }
    }
}

impl ServerFrame {
    /// Serialises the frame. Serialising these types cannot fail: they hold only strings,
    /// numbers and maps with string keys.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("server frames always serialise")
    }
}

impl ClientFrame {
    /// Serialises the frame (see [`ServerFrame::to_json`] for why this cannot fail).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("client frames always serialise")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let frame =
            ClientFrame::Send { room: "general".into(), id: "m1".into(), text: "hi".into() };
        let json = frame.to_json();
        assert_eq!(json, r#"{"type":"send","room":"general","id":"m1","text":"hi"}"#);
        assert_eq!(serde_json::from_str::<ClientFrame>(&json).unwrap(), frame);

        let error = ServerFrame::Error(ErrorFrame::new(ErrorCode::NotMember, "no"));
        assert_eq!(error.to_json(), r#"{"type":"error","code":"not_member","message":"no"}"#);
    }

    #[test]
    fn message_is_flat() {
        let frame = ServerFrame::Message(Message {
            room: "r".into(),
            seq: 3,
            id: "i".into(),
            author: "a@b.co".into(),
            name: None,
            text: "t".into(),
            ts: 5,
        });
        let json = frame.to_json();
        assert!(json.starts_with(r#"{"type":"message","room":"r","seq":3"#), "{json}");
        assert_eq!(serde_json::from_str::<ServerFrame>(&json).unwrap(), frame);
    }

    #[test]
    fn unknown_types_are_refused_and_unknown_fields_ignored() {
        assert!(serde_json::from_str::<ClientFrame>(r#"{"type":"nope"}"#).is_err());
        assert!(serde_json::from_str::<ClientFrame>(r#"{"type":"ping","x":1}"#).is_ok());
        assert!(
            serde_json::from_str::<ClientFrame>(r#"{"type":"mark_read","room":"a","seq":-1}"#)
                .is_err()
        );
        let newer = r#"{"type":"error","code":"from_the_future","message":"m","req":3}"#;
        let ServerFrame::Error(error) = serde_json::from_str(newer).unwrap() else { panic!() };
        assert_eq!((error.code, error.req), (ErrorCode::Unknown, Some(3)));
    }
}
