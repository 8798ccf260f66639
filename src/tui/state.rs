//! `State`: everything `roomz chat` shows, apart from how it is drawn. `update` changes it;
//! `view` draws it.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use chrono::{DateTime, FixedOffset, Local, TimeZone, Utc};

use super::editor::Editor;
use super::settings::Settings;
use crate::protocol::text::DEFAULT_ROOM;
use crate::protocol::{Message, Millis, RoomSummary, Seq};

/// Where a line of a room's log sits: messages by sequence, local notices just after the
/// message they followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    pub seq: Seq,
    /// 0 for the message itself; 1, 2, ... for notices shown after it.
    pub sub: u32,
}

/// One entry of a room's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Message(Message),
    /// A line from roomz chat itself (`/who`, errors), never sent anywhere.
    Notice {
        text: String,
        ts: Millis,
    },
}

impl Entry {
    pub fn ts(&self) -> Millis {
        match self {
            Self::Message(m) => m.ts,
            Self::Notice { ts, .. } => *ts,
        }
    }
}

/// The log of a room: what was loaded of its history, the live messages, and notices.
/// Ordered by [`Key`]; drawing walks it from the bottom, so its size does not matter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoomLog {
    pub entries: BTreeMap<Key, Entry>,
}

impl RoomLog {
    /// Adds a message; a sequence already there is not added twice.
    pub fn insert(&mut self, message: Message) -> bool {
        let key = Key { seq: message.seq, sub: 0 };
        if self.entries.contains_key(&key) {
            return false;
        }
        self.entries.insert(key, Entry::Message(message));
        true
    }

    /// Adds a notice after the newest entry.
    pub fn notice(&mut self, text: String, ts: Millis) {
        let key = match self.entries.last_key_value() {
            Some((last, _)) => Key { seq: last.seq, sub: last.sub + 1 },
            None => Key { seq: 0, sub: 1 },
        };
        self.entries.insert(key, Entry::Notice { text, ts });
    }

    /// The oldest message's sequence (for loading older history).
    pub fn oldest_seq(&self) -> Option<Seq> {
        self.entries.iter().find(|(k, _)| k.sub == 0).map(|(k, _)| k.seq)
    }

    /// The newest message's sequence.
    pub fn newest_seq(&self) -> Option<Seq> {
        self.entries.iter().rev().find(|(k, _)| k.sub == 0).map(|(k, _)| k.seq)
    }
}

/// Where the view of a room is scrolled to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Scroll {
    /// Following the newest messages.
    #[default]
    Bottom,
    /// The entry at the bottom of the view, and how many of its lines are hidden below.
    At { key: Key, hidden: u16 },
    /// At the oldest loaded message.
    Top,
}

/// A room as the chat shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Room {
    pub name: String,
    pub members: u64,
    pub last_seq: Seq,
    pub last_read: Seq,
    /// Messages from others not read yet.
    pub unread: u64,
    /// Someone mentioned you in a message not read yet.
    pub mentioned: bool,
    pub log: RoomLog,
    pub scroll: Scroll,
    /// The "new messages" line goes before this message.
    pub marker: Option<Seq>,
    /// Older history exists on the server (not loaded yet).
    pub more: bool,
    /// A history page was asked for and has not come yet.
    pub loading: bool,
    /// The newest page was asked for once.
    pub loaded: bool,
    /// The read marker to send, and when one was last sent.
    pub read_to_send: Option<Seq>,
}

impl Room {
    pub fn new(summary: &RoomSummary) -> Self {
        Self {
            name: summary.name.clone(),
            members: summary.members,
            last_seq: summary.last_seq,
            last_read: summary.last_read,
            unread: summary.unread,
            mentioned: false,
            log: RoomLog::default(),
            scroll: Scroll::Bottom,
            marker: None,
            more: summary.last_seq > 0,
            loading: false,
            loaded: false,
            read_to_send: None,
        }
    }

    pub fn update(&mut self, summary: &RoomSummary) {
        self.members = summary.members;
        self.last_seq = self.last_seq.max(summary.last_seq);
        self.last_read = self.last_read.max(summary.last_read);
        self.unread = self.last_seq.saturating_sub(self.last_read);
    }
}

/// The login screen's step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginStep {
    Email,
    /// A link was sent to this address: paste its token.
    Token {
        email: String,
    },
}

/// The login screen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    pub step: LoginStep,
    /// What went wrong, and what to do.
    pub error: Option<String>,
    /// A request is on its way.
    pub busy: bool,
}

/// Which screen is up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Screen {
    Login(Login),
    /// Connecting with a session; the main screen follows. With an error, it failed:
    /// Enter tries again.
    Connecting {
        error: Option<String>,
    },
    Main,
}

/// The connection as the status bar tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Link {
    Connecting,
    Connected,
    /// Reconnecting: the next attempt starts at `at`.
    Reconnecting {
        attempt: u32,
        at: Instant,
    },
    /// Gave up: why.
    Offline {
        reason: String,
    },
}

/// A message typed here and not yet acknowledged by the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsent {
    pub local: u64,
    pub room: String,
    pub text: String,
}

/// A transient line above the input: errors and confirmations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub text: String,
    pub error: bool,
    pub until: Instant,
}

/// How times are shown: in the local time zone, or a fixed offset (tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Zone {
    Local,
    Fixed(FixedOffset),
}

impl Zone {
    pub fn at(self, ms: Millis) -> DateTime<FixedOffset> {
        let utc = DateTime::<Utc>::from_timestamp_millis(ms).unwrap_or_default();
        match self {
            Self::Local => utc.with_timezone(&Local).fixed_offset(),
            Self::Fixed(offset) => offset.from_utc_datetime(&utc.naive_utc()),
        }
    }
}

/// How long a notice stays.
pub const NOTICE_FOR: Duration = Duration::from_secs(6);
/// The window for the second Ctrl-C.
pub const QUIT_WINDOW: Duration = Duration::from_secs(2);

/// Everything the chat shows.
#[derive(Debug, Clone)]
pub struct State {
    pub screen: Screen,
    /// The server, as shown in the status bar.
    pub server: String,
    pub settings: Settings,
    pub zone: Zone,
    /// Our email and display name once connected.
    pub me: Option<(String, Option<String>)>,
    pub rooms: Vec<Room>,
    pub current: usize,
    /// Display names by email, as learned from messages, members and name changes.
    pub names: HashMap<String, Option<String>>,
    pub editor: Editor,
    pub link: Link,
    pub unsent: Vec<Unsent>,
    pub next_local: u64,
    pub notice: Option<Notice>,
    pub help: bool,
    /// The first Ctrl-C, waiting for the second.
    pub quit_armed: Option<Instant>,
    pub quit: bool,
    /// The size of the message area, for scrolling (updated as the screen is drawn).
    pub view: (u16, u16),
    /// The room a `/join` switches to when it is confirmed.
    pub joining: Option<String>,
}

impl State {
    pub fn new(server: String, settings: Settings, zone: Zone) -> Self {
        Self {
            screen: Screen::Connecting { error: None },
            server,
            settings,
            zone,
            me: None,
            rooms: Vec::new(),
            current: 0,
            names: HashMap::new(),
            editor: Editor::default(),
            link: Link::Connecting,
            unsent: Vec::new(),
            next_local: 0,
            notice: None,
            help: false,
            quit_armed: None,
            quit: false,
            view: (80, 20),
            joining: None,
        }
    }

    /// The login screen at its first step.
    pub fn login(&mut self, error: Option<String>) {
        self.screen = Screen::Login(Login { step: LoginStep::Email, error, busy: false });
        self.editor.clear();
    }

    pub fn room(&self) -> Option<&Room> {
        self.rooms.get(self.current)
    }

    pub fn room_mut(&mut self) -> Option<&mut Room> {
        self.rooms.get_mut(self.current)
    }

    pub fn room_named(&mut self, name: &str) -> Option<&mut Room> {
        self.rooms.iter_mut().find(|r| r.name == name)
    }

    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.rooms.iter().position(|r| r.name == name)
    }

    /// Adds a room (or updates it), keeping `general` first and the rest by name.
    pub fn add_room(&mut self, summary: &RoomSummary) {
        let current = self.room().map(|r| r.name.clone());
        match self.room_named(&summary.name) {
            Some(room) => room.update(summary),
            None => self.rooms.push(Room::new(summary)),
        }
        self.rooms.sort_by(|a, b| {
            (a.name != DEFAULT_ROOM, &a.name).cmp(&(b.name != DEFAULT_ROOM, &b.name))
        });
        if let Some(index) = current.and_then(|name| self.index_of(&name)) {
            self.current = index;
        }
    }

    /// Removes a room; the view moves to `general` when it was the current one.
    pub fn remove_room(&mut self, name: &str) {
        let current = self.room().map(|r| r.name.clone());
        self.rooms.retain(|r| r.name != name);
        self.current = current
            .filter(|c| c != name)
            .and_then(|c| self.index_of(&c))
            .or_else(|| self.index_of(DEFAULT_ROOM))
            .unwrap_or(0);
    }

    /// How a person is shown: `Display Name (email)`, or the email.
    pub fn label(&self, email: &str, name_in_message: Option<&str>) -> String {
        let known = self.names.get(email).cloned().flatten();
        let name = known.as_deref().or(name_in_message);
        crate::protocol::text::display_label(email, name)
    }

    pub fn say(&mut self, text: impl Into<String>, error: bool, now: Instant) {
        self.notice = Some(Notice { text: text.into(), error, until: now + NOTICE_FOR });
    }
}
