//! `update`: one event in, the state changed, the effects to carry out returned. Pure: it
//! does no I/O and reads no clock (the time comes with the call), so every behaviour of
//! the chat can be tested without a terminal or a server.

mod incoming;
mod login;

use std::time::Instant;

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use self::incoming::{client_event, history, joined, members, sent};
use self::login::{connect_failed, link_requested, login_failed, login_key};
use super::commands::{self, ACTION_PREFIX, Command, Line, NameChange};
use super::scroll::{self, Moved};
use super::state::{Link, QUIT_WINDOW, Screen, Scroll, State, Unsent};
use crate::client::{ClientError, Event as ClientEvent, HistoryPage, Sent};
use crate::protocol::text::{DEFAULT_ROOM, canonical_room};
use crate::protocol::{Member, Millis, RoomSummary, Seq};

/// Something that happened.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Key(KeyEvent),
    Paste(String),
    Resize(u16, u16),
    /// Once a second: countdowns, notices, read markers.
    Tick,
    Client(ClientEvent),
    LinkRequested {
        email: String,
        result: Result<(), ClientError>,
    },
    LoggedIn(Result<(), ClientError>),
    Connected(Result<(), ClientError>),
    Sent {
        local: u64,
        result: Result<Sent, ClientError>,
    },
    Joined(Result<RoomSummary, ClientError>),
    Left {
        room: String,
        result: Result<(), ClientError>,
    },
    NameSet(Result<Option<String>, ClientError>),
    Members {
        room: String,
        result: Result<Vec<Member>, ClientError>,
        /// When the answer came (milliseconds since the Unix epoch), for its notice.
        at: Millis,
    },
    History {
        room: String,
        result: Result<HistoryPage, ClientError>,
    },
    Rooms(Result<Vec<RoomSummary>, ClientError>),
    LoggedOut(Result<(), ClientError>),
}

/// Something to do outside the state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    RequestLink(String),
    Login(String),
    Connect,
    Send {
        local: u64,
        room: String,
        text: String,
    },
    Join(String),
    Leave(String),
    SetName(Option<String>),
    Members(String),
    History {
        room: String,
        before: Option<Seq>,
    },
    /// Ask for the rooms again (after events were missed).
    Rooms,
    MarkRead {
        room: String,
        seq: Seq,
    },
    Logout,
    Bell,
    /// Clear and redraw the whole screen (Ctrl-L).
    Redraw,
    Quit,
}

/// Messages per history page.
pub const PAGE: u32 = 100;

/// Applies one event.
pub fn update(state: &mut State, event: Event, now: Instant) -> Vec<Effect> {
    let mut effects = Vec::new();
    match event {
        Event::Key(key) if key.kind != KeyEventKind::Release => {
            key_pressed(state, key, now, &mut effects)
        }
        Event::Key(_) => {}
        Event::Paste(text) => {
            let multiline = state.screen == Screen::Main;
            state.editor.paste(&text, multiline);
        }
        Event::Resize(..) => {}
        Event::Tick => tick(state, now, &mut effects),
        Event::Client(event) => client_event(state, event, now, &mut effects),
        Event::LinkRequested { email, result } => link_requested(state, email, result),
        Event::LoggedIn(result) => match result {
            Ok(()) => {
                state.screen = Screen::Connecting { error: None };
                effects.push(Effect::Connect);
            }
            Err(error) => login_failed(state, &error),
        },
        Event::Connected(result) => {
            if let Err(error) = result {
                connect_failed(state, &error);
            }
        }
        Event::Sent { local, result } => sent(state, local, result, now),
        Event::Joined(result) => match result {
            Ok(summary) => joined(state, &summary, &mut effects),
            Err(error) => {
                state.joining = None;
                state.say(format!("cannot join: {}", short(&error)), true, now);
            }
        },
        Event::Left { room, result } => match result {
            Ok(()) => state.remove_room(&room),
            Err(error) => state.say(format!("cannot leave {room}: {}", short(&error)), true, now),
        },
        Event::NameSet(result) => match result {
            Ok(Some(name)) => state.say(format!("your display name is now {name}"), false, now),
            Ok(None) => {
                state.say("your display name is removed: others see your email", false, now)
            }
            Err(error) => state.say(format!("name not changed: {}", short(&error)), true, now),
        },
        Event::Members { room, result, at } => members(state, &room, result, at, now),
        Event::History { room, result } => history(state, &room, result, now),
        Event::Rooms(result) => match result {
            Ok(rooms) => {
                for summary in &rooms {
                    state.add_room(summary);
                }
            }
            Err(error) => state.say(format!("cannot list rooms: {}", short(&error)), true, now),
        },
        Event::LoggedOut(result) => {
            let message = match result {
                Ok(()) => "Logged out. Log in again with a new link.".to_owned(),
                Err(error) => format!("Logged out, but: {}", short(&error)),
            };
            start_over(state, message);
        }
    }
    effects
}

/// Back to the login screen with nothing of the old session kept (another address may log
/// in next).
fn start_over(state: &mut State, message: String) {
    *state = State::new(state.server.clone(), state.settings.clone(), state.zone);
    state.login(Some(message));
}

/// The read markers waiting to be sent (each tick, and on the way out).
pub fn pending_reads(state: &mut State) -> Vec<Effect> {
    state
        .rooms
        .iter_mut()
        .filter_map(|room| {
            room.read_to_send.take().map(|seq| Effect::MarkRead { room: room.name.clone(), seq })
        })
        .collect()
}

/// An error's message, without the parts that only repeat what the screen says.
fn short(error: &ClientError) -> String {
    match error {
        ClientError::Rejected { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

fn key_pressed(state: &mut State, key: KeyEvent, now: Instant, effects: &mut Vec<Effect>) {
    let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
    let alt = key.modifiers.contains(KeyModifiers::ALT);
    if ctrl && key.code == KeyCode::Char('c') {
        return interrupt(state, now, effects);
    }
    state.quit_armed = None;
    if state.help {
        state.help = false;
        return;
    }
    if ctrl && key.code == KeyCode::Char('l') {
        effects.push(Effect::Redraw);
        return;
    }
    if let Screen::Login(_) = state.screen {
        return login_key(state, key, effects);
    }
    if let Screen::Connecting { error } = &mut state.screen {
        if key.code == KeyCode::Enter && error.is_some() {
            *error = None;
            effects.push(Effect::Connect);
        }
        return;
    }
    match key.code {
        KeyCode::F(1) => state.help = true,
        KeyCode::Enter if alt => state.editor.insert('\n'),
        KeyCode::Enter => submit(state, now, effects),
        KeyCode::PageUp => page(state, true, effects),
        KeyCode::PageDown => page(state, false, effects),
        KeyCode::Char(c @ '1'..='9') if alt => {
            let index = usize::from(c as u8 - b'1');
            if index < state.rooms.len() {
                switch(state, index, effects);
            }
        }
        KeyCode::Char('a') if alt => next_active(state, effects),
        KeyCode::Char('n') if ctrl => cycle(state, 1, effects),
        KeyCode::Char('p') if ctrl => cycle(state, -1, effects),
        _ => edit(state, key),
    }
}

/// Editing keys, shared by the login screen and the main screen.
fn edit(state: &mut State, key: KeyEvent) {
    let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
    let alt = key.modifiers.contains(KeyModifiers::ALT);
    let editor = &mut state.editor;
    match key.code {
        KeyCode::Char('a') if ctrl => editor.home(),
        KeyCode::Char('e') if ctrl => editor.end(),
        KeyCode::Char('w') if ctrl => editor.delete_word_back(),
        KeyCode::Char('u') if ctrl => editor.delete_to_line_start(),
        KeyCode::Char('k') if ctrl => editor.delete_to_line_end(),
        KeyCode::Char('b') if ctrl => editor.left(),
        KeyCode::Char('f') if ctrl => editor.right(),
        KeyCode::Char('h') if ctrl => editor.backspace(),
        KeyCode::Char('d') if ctrl => editor.delete(),
        KeyCode::Char('b') if alt => editor.word_left(),
        KeyCode::Char('f') if alt => editor.word_right(),
        KeyCode::Left if ctrl => editor.word_left(),
        KeyCode::Right if ctrl => editor.word_right(),
        KeyCode::Char(c) if !ctrl && !alt => editor.insert(c),
        KeyCode::Backspace => editor.backspace(),
        KeyCode::Delete => editor.delete(),
        KeyCode::Left => editor.left(),
        KeyCode::Right => editor.right(),
        KeyCode::Home => editor.home(),
        KeyCode::End => editor.end(),
        KeyCode::Up => editor.up(),
        KeyCode::Down => editor.down(),
        _ => {}
    }
}

/// Ctrl-C: the first press clears the draft, the second (soon after) quits.
fn interrupt(state: &mut State, now: Instant, effects: &mut Vec<Effect>) {
    if state.quit_armed.is_some_and(|at| now.duration_since(at) <= QUIT_WINDOW) {
        state.quit = true;
        effects.push(Effect::Quit);
        return;
    }
    state.editor.clear();
    state.help = false;
    state.quit_armed = Some(now);
    state.say("press Ctrl-C again to quit", false, now);
}

fn submit(state: &mut State, now: Instant, effects: &mut Vec<Effect>) {
    let text = state.editor.take();
    match commands::parse(&text) {
        Line::Empty => {}
        Line::Message(text) => send(state, text, effects),
        Line::Command(command) => run_command(state, command, now, effects),
    }
}

fn send(state: &mut State, text: String, effects: &mut Vec<Effect>) {
    let Some(room) = state.room().map(|r| r.name.clone()) else {
        return;
    };
    state.next_local += 1;
    let local = state.next_local;
    state.unsent.push(Unsent { local, room: room.clone(), text: text.clone() });
    if let Some(room) = state.room_mut() {
        room.scroll = Scroll::Bottom;
    }
    seen(state);
    effects.push(Effect::Send { local, room, text });
}

fn run_command(state: &mut State, command: Command, now: Instant, effects: &mut Vec<Effect>) {
    let room = state.room().map(|r| r.name.clone()).unwrap_or_else(|| DEFAULT_ROOM.to_owned());
    match command {
        Command::Name(None) => {
            let current = state.me.as_ref().and_then(|(_, name)| name.clone());
            let text = match current {
                Some(name) => format!(
                    "your display name is {name}; /name NAME changes it, /name - removes it"
                ),
                None => "you have no display name; /name NAME sets one".to_owned(),
            };
            state.say(text, false, now);
        }
        Command::Name(Some(NameChange::Set(name))) => effects.push(Effect::SetName(Some(name))),
        Command::Name(Some(NameChange::Remove)) => effects.push(Effect::SetName(None)),
        Command::Join(name) => match canonical_room(&name) {
            Ok(name) => match state.index_of(&name) {
                Some(index) => switch(state, index, effects),
                None => {
                    state.joining = Some(name.clone());
                    effects.push(Effect::Join(name));
                }
            },
            Err(error) => state.say(error.to_string(), true, now),
        },
        Command::Leave if room == DEFAULT_ROOM => {
            state.say(format!("everyone stays in {DEFAULT_ROOM}: it cannot be left"), true, now);
        }
        Command::Leave => effects.push(Effect::Leave(room)),
        Command::Who => effects.push(Effect::Members(room)),
        Command::Me(action) => send(state, format!("{ACTION_PREFIX}{action}"), effects),
        Command::Help => state.help = true,
        Command::Logout => {
            // Unsent messages get their chance first, which can take a moment.
            let text = match state.unsent.len() {
                0 => "logging out...".to_owned(),
                n => format!("logging out: sending {n} unsent first..."),
            };
            state.say(text, false, now);
            effects.push(Effect::Logout);
        }
        Command::Quit => {
            state.quit = true;
            effects.push(Effect::Quit);
        }
        Command::Reconnect => match state.link {
            Link::Offline { .. } => {
                state.link = Link::Connecting;
                effects.push(Effect::Connect);
            }
            _ => state.say("already connected (or trying)", false, now),
        },
        Command::Usage(usage) => state.say(usage, true, now),
        Command::Unknown(word) => {
            state.say(
                format!("unknown command /{word}: nothing was sent (/help lists the commands)"),
                true,
                now,
            );
        }
    }
}

/// PgUp / PgDn: a page at a time; at the top, older history is fetched.
fn page(state: &mut State, up: bool, effects: &mut Vec<Effect>) {
    let rows = state.view.1.saturating_sub(2).max(1);
    let moved = if up { scroll::up(state, rows) } else { scroll::down(state, rows) };
    match moved {
        Moved::AtTop => load_older(state, effects),
        Moved::AtBottom => seen(state),
        Moved::Within => {}
    }
}

fn load_older(state: &mut State, effects: &mut Vec<Effect>) {
    let Some(room) = state.room_mut() else {
        return;
    };
    if room.more && !room.loading {
        room.loading = true;
        effects.push(Effect::History { room: room.name.clone(), before: room.log.oldest_seq() });
    }
}

/// Switches to the room at `index`.
fn switch(state: &mut State, index: usize, effects: &mut Vec<Effect>) {
    if index >= state.rooms.len() {
        return;
    }
    state.current = index;
    let room = &mut state.rooms[index];
    room.marker = (room.unread > 0).then_some(room.last_read + 1);
    room.scroll = Scroll::Bottom;
    if !room.loaded && !room.loading {
        room.loading = true;
        effects.push(Effect::History { room: room.name.clone(), before: None });
    }
    seen(state);
}

fn cycle(state: &mut State, step: isize, effects: &mut Vec<Effect>) {
    let count = state.rooms.len() as isize;
    if count > 0 {
        let index = (state.current as isize + step).rem_euclid(count) as usize;
        switch(state, index, effects);
    }
}

/// Alt-A: the next room with a mention, else with unread messages.
fn next_active(state: &mut State, effects: &mut Vec<Effect>) {
    let count = state.rooms.len();
    let order = (1..count).map(|step| (state.current + step) % count);
    let target = order
        .clone()
        .find(|&i| state.rooms[i].mentioned)
        .or_else(|| order.clone().find(|&i| state.rooms[i].unread > 0));
    if let Some(index) = target {
        switch(state, index, effects);
    }
}

/// The current room is on screen at its newest messages: everything in it is read.
fn seen(state: &mut State) {
    if state.screen != Screen::Main {
        return;
    }
    let Some(room) = state.room_mut() else {
        return;
    };
    if room.scroll != Scroll::Bottom {
        return;
    }
    room.unread = 0;
    room.mentioned = false;
    if room.last_seq > room.last_read {
        room.last_read = room.last_seq;
        room.read_to_send = Some(room.last_seq);
    }
}

fn tick(state: &mut State, now: Instant, effects: &mut Vec<Effect>) {
    if state.notice.as_ref().is_some_and(|n| n.until <= now) {
        state.notice = None;
    }
    if state.quit_armed.is_some_and(|at| now.duration_since(at) > QUIT_WINDOW) {
        state.quit_armed = None;
    }
    // Read markers go out at most once a tick per room.
    effects.extend(pending_reads(state));
}
