//! What the client library tells the chat: connection changes, the welcome, messages,
//! membership, names, and the answers to the chat's own requests (sends, members, history).

use std::time::Instant;

use super::login::login_advice;
use super::{Effect, seen, short, start_over, switch};
use crate::client::{ClientError, ConnectionState, Event as ClientEvent, HistoryPage, Sent};
use crate::protocol::text::DEFAULT_ROOM;
use crate::protocol::{Member, Message, Millis, RoomSummary};
use crate::tui::render::mentions;
use crate::tui::scroll;
use crate::tui::state::{Link, Room, Screen, Scroll, State};

pub(super) fn client_event(
    state: &mut State,
    event: ClientEvent,
    now: Instant,
    effects: &mut Vec<Effect>,
) {
    match event {
        ClientEvent::Connection(connection) => match connection {
            ConnectionState::Connected => state.link = Link::Connected,
            ConnectionState::Reconnecting { attempt, delay } => {
                state.link = Link::Reconnecting { attempt, at: now + delay };
            }
            ConnectionState::GaveUp { error } => {
                if error.needs_login() {
                    start_over(state, login_advice(&error));
                } else {
                    state.link = Link::Offline { reason: error.to_string() };
                }
            }
            ConnectionState::Idle | ConnectionState::Closed => {}
        },
        ClientEvent::Welcome { email, name, rooms } => welcome(state, email, name, &rooms, effects),
        ClientEvent::Message(message) => message_arrived(state, message, effects),
        ClientEvent::Joined(summary) => joined(state, &summary, effects),
        ClientEvent::Left { room } => state.remove_room(&room),
        ClientEvent::MemberJoined { room, member } => {
            state.names.insert(member.email.clone(), member.name.clone());
            if let Some(room) = state.room_named(&room) {
                room.members += 1;
            }
        }
        ClientEvent::MemberLeft { room, .. } => {
            if let Some(room) = state.room_named(&room) {
                room.members = room.members.saturating_sub(1);
            }
        }
        ClientEvent::Name { email, name } => {
            if let Some((mine, my_name)) = &mut state.me
                && *mine == email
            {
                my_name.clone_from(&name);
            }
            state.names.insert(email, name);
        }
        ClientEvent::Read { room, seq } => {
            if let Some(room) = state.room_named(&room) {
                room.last_read = room.last_read.max(seq);
                room.unread = room.last_seq.saturating_sub(room.last_read);
                if room.unread == 0 {
                    room.mentioned = false;
                }
            }
        }
        ClientEvent::Outbox { .. } | ClientEvent::Presence { .. } | ClientEvent::Synced { .. } => {}
        ClientEvent::ServerError(error) => state.say(error.message, true, now),
        ClientEvent::Lagged(missed) => {
            // Some messages never reached the chat: start every room afresh from the server.
            state.say(format!("missed {missed} events while busy; reloading"), true, now);
            for room in &mut state.rooms {
                room.log = Default::default();
                room.scroll = Scroll::Bottom;
                room.loaded = false;
                room.loading = false;
                room.marker = None;
            }
            effects.push(Effect::Rooms);
            if let Some(room) = state.room_mut() {
                room.loading = true;
                effects.push(Effect::History { room: room.name.clone(), before: None });
            }
        }
    }
}

pub(super) fn welcome(
    state: &mut State,
    email: String,
    name: Option<String>,
    rooms: &[RoomSummary],
    effects: &mut Vec<Effect>,
) {
    state.names.insert(email.clone(), name.clone());
    state.me = Some((email, name));
    state.link = Link::Connected;
    let first = state.screen != Screen::Main;
    for summary in rooms {
        state.add_room(summary);
    }
    if first {
        state.screen = Screen::Main;
        state.editor.clear();
        let index = state.index_of(DEFAULT_ROOM).unwrap_or(0);
        switch(state, index, effects);
    }
}

pub(super) fn joined(state: &mut State, summary: &RoomSummary, effects: &mut Vec<Effect>) {
    state.add_room(summary);
    if state.joining.as_deref() == Some(summary.name.as_str()) {
        state.joining = None;
        if let Some(index) = state.index_of(&summary.name) {
            switch(state, index, effects);
        }
    }
}

pub(super) fn message_arrived(state: &mut State, message: Message, effects: &mut Vec<Effect>) {
    let me = state.me.clone();
    let mine = me.as_ref().is_some_and(|(email, _)| *email == message.author);
    let current = state.room().map(|r| r.name.clone());
    let watching =
        state.screen == Screen::Main && current.as_deref() == Some(message.room.as_str());
    let mentioned = !mine
        && me.as_ref().is_some_and(|(email, name)| mentions(&message.text, email, name.as_deref()));
    if !state.names.contains_key(&message.author) {
        state.names.insert(message.author.clone(), message.name.clone());
    }
    if mine
        && let Some(at) =
            state.unsent.iter().position(|u| u.room == message.room && u.text == message.text)
    {
        state.unsent.remove(at);
    }
    let Some(room) = state.room_named(&message.room) else {
        return;
    };
    let seq = message.seq;
    if !room.log.insert(message) {
        return;
    }
    // A message up to the summary's newest is already in its unread count (catch-up after
    // a reconnect delivers those); still, it may mention us.
    let counted = seq <= room.last_seq;
    room.last_seq = room.last_seq.max(seq);
    if mine {
        // Writing in a room reads it (the server moves the marker too).
        room.last_read = room.last_read.max(seq);
        room.unread = room.last_seq.saturating_sub(room.last_read);
        if room.unread == 0 {
            room.mentioned = false;
        }
        return;
    }
    if seq <= room.last_read {
        return;
    }
    let at_bottom = room.scroll == Scroll::Bottom;
    if !counted {
        room.unread += 1;
    }
    if mentioned {
        room.mentioned = true;
        if state.settings.bell {
            effects.push(Effect::Bell);
        }
    }
    if watching && at_bottom {
        seen(state);
    }
}

pub(super) fn sent(state: &mut State, local: u64, result: Result<Sent, ClientError>, now: Instant) {
    let Some(at) = state.unsent.iter().position(|u| u.local == local) else {
        return;
    };
    let unsent = state.unsent.remove(at);
    if let Err(error) = result {
        if state.editor.is_empty() && state.screen == Screen::Main {
            state.editor.set(&unsent.text);
        }
        state.say(
            format!("not sent ({}); the text is back in the input", short(&error)),
            true,
            now,
        );
    }
}

pub(super) fn members(
    state: &mut State,
    room: &str,
    result: Result<Vec<Member>, ClientError>,
    at: Millis,
    now: Instant,
) {
    let members = match result {
        Ok(members) => members,
        Err(error) => {
            return state.say(format!("cannot list members: {}", short(&error)), true, now);
        }
    };
    for member in &members {
        state.names.insert(member.email.clone(), member.name.clone());
    }
    let online = members.iter().filter(|m| m.online).count();
    let mut list: Vec<String> = members
        .iter()
        .map(|m| {
            let label = state.label(&m.email, m.name.as_deref());
            if m.online { format!("{label} (online)") } else { label }
        })
        .collect();
    list.sort();
    let count = match members.len() {
        1 => "1 member".to_owned(),
        n => format!("{n} members"),
    };
    let text = format!("{count} in {room}, {online} online: {}", list.join(", "));
    if let Some(room) = state.room_named(room) {
        room.log.notice(text, at);
    }
}

pub(super) fn history(
    state: &mut State,
    room_name: &str,
    result: Result<HistoryPage, ClientError>,
    now: Instant,
) {
    let (width, height) = state.view;
    let current = state.room().is_some_and(|r| r.name == room_name);
    let Some(index) = state.index_of(room_name) else {
        return;
    };
    let page = match result {
        Ok(page) => page,
        Err(error) => {
            state.rooms[index].loading = false;
            return state.say(format!("cannot load history: {}", short(&error)), true, now);
        }
    };
    // Seen from the top, the view keeps its place: anchor it where it is before inserting.
    if current && state.rooms[index].scroll == Scroll::Top {
        let anchor =
            scroll::bottom_of_top_view(state, &state.rooms[index], width, usize::from(height));
        state.rooms[index].scroll = match anchor {
            Some((key, hidden)) => Scroll::At { key, hidden: hidden as u16 },
            None => Scroll::Bottom,
        };
    }
    let me = state.me.clone();
    let room: &mut Room = &mut state.rooms[index];
    for message in page.messages {
        // A mention made while we were away shows too, until it is read.
        let unread = message.seq > room.last_read;
        if unread
            && let Some((email, name)) = &me
            && message.author != *email
            && mentions(&message.text, email, name.as_deref())
        {
            room.mentioned = true;
        }
        room.last_seq = room.last_seq.max(message.seq);
        room.log.insert(message);
    }
    room.more = page.more;
    room.loading = false;
    room.loaded = true;
    if current {
        seen(state);
    }
}
