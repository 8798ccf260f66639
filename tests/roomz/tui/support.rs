//! Building blocks for the chat tests: a state at a known time, and events.

use std::time::Instant;

use chrono::FixedOffset;
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use roomz::client::Event as ClientEvent;
use roomz::protocol::{Message, RoomSummary};
use roomz::tui::settings::Settings;
use roomz::tui::state::{State, Zone};
use roomz::tui::update::{Effect, Event, update};

pub const ME: &str = "alice@example.com";
/// 2026-12-03 09:41 UTC.
pub const T0: i64 = 1_796_290_860_000;

/// A fresh chat state, times in UTC.
pub fn state() -> State {
    State::new(
        "http://127.0.0.1:8000".into(),
        Settings::default(),
        Zone::Fixed(FixedOffset::east_opt(0).unwrap()),
    )
}

pub fn room(name: &str, last_seq: u64, last_read: u64) -> RoomSummary {
    RoomSummary { name: name.into(), members: 3, last_seq, last_read, unread: last_seq - last_read }
}

pub fn message(room: &str, seq: u64, author: &str, text: &str) -> Message {
    Message {
        room: room.into(),
        seq,
        id: format!("id{seq}"),
        author: author.into(),
        name: None,
        text: text.into(),
        ts: T0 + seq as i64 * 60_000,
    }
}

/// A state on the main screen as `ME`, with these rooms.
pub fn connected(rooms: &[RoomSummary]) -> (State, Vec<Effect>) {
    let mut state = state();
    let effects = update(
        &mut state,
        Event::Client(ClientEvent::Welcome {
            email: ME.into(),
            name: Some("Alice".into()),
            rooms: rooms.to_vec(),
        }),
        Instant::now(),
    );
    (state, effects)
}

pub fn key(code: KeyCode) -> Event {
    Event::Key(KeyEvent::new(code, KeyModifiers::NONE))
}

pub fn ctrl(c: char) -> Event {
    Event::Key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::CONTROL))
}

pub fn alt(code: KeyCode) -> Event {
    Event::Key(KeyEvent::new(code, KeyModifiers::ALT))
}

/// Types text, one key per character.
pub fn type_text(state: &mut State, text: &str) {
    for c in text.chars() {
        update(state, key(KeyCode::Char(c)), Instant::now());
    }
}
