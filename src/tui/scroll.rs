//! The window onto a room's log: which lines are visible, and how scrolling moves it. It
//! walks the log from an anchor and wraps only the entries it shows, so a room of 100,000
//! messages costs what an empty one does.

use std::ops::Bound;

use ratatui::text::Line;

use super::render::entry_lines;
use super::state::{Entry, Key, Room, Scroll, State};

/// The entry before `key`.
fn previous(room: &Room, key: Key) -> Option<(Key, &Entry)> {
    room.log.entries.range(..key).next_back().map(|(k, e)| (*k, e))
}

/// The entry after `key`.
fn next(room: &Room, key: Key) -> Option<(Key, &Entry)> {
    room.log.entries.range((Bound::Excluded(key), Bound::Unbounded)).next().map(|(k, e)| (*k, e))
}

/// The lines of the entry at `key`.
fn lines(state: &State, room: &Room, key: Key, width: u16) -> Vec<Line<'static>> {
    let Some(entry) = room.log.entries.get(&key) else {
        return Vec::new();
    };
    let before = previous(room, key).map(|(_, e)| e);
    entry_lines(state, room, key, entry, before, width)
}

fn count(state: &State, room: &Room, key: Key, width: u16) -> usize {
    lines(state, room, key, width).len()
}

/// The lines to show in a `width` x `height` area.
pub fn visible(state: &State, room: &Room, width: u16, height: u16) -> Vec<Line<'static>> {
    let height = usize::from(height);
    let anchor = match room.scroll {
        Scroll::Bottom => room.log.entries.last_key_value().map(|(k, _)| (*k, 0)),
        Scroll::At { key, hidden } => Some((key, usize::from(hidden))),
        Scroll::Top => None,
    };
    let Some((anchor, hidden)) = anchor else {
        return from_top(state, room, width, height);
    };
    // Walk up from the anchor until the area is full.
    let mut collected: Vec<Vec<Line<'static>>> = Vec::new();
    let mut total = 0;
    let mut key = Some(anchor);
    while let Some(at) = key {
        let entry_lines = lines(state, room, at, width);
        total += entry_lines.len();
        collected.push(entry_lines);
        if total >= height + hidden {
            let mut all: Vec<Line<'static>> = collected.into_iter().rev().flatten().collect();
            all.truncate(all.len() - hidden);
            return all.split_off(all.len() - height);
        }
        key = previous(room, at).map(|(k, _)| k);
    }
    // The top of the log came first: show it from the top.
    from_top(state, room, width, height)
}

fn from_top(state: &State, room: &Room, width: u16, height: usize) -> Vec<Line<'static>> {
    let mut shown = Vec::new();
    for key in room.log.entries.keys() {
        if shown.len() >= height {
            break;
        }
        shown.extend(lines(state, room, *key, width));
    }
    shown.truncate(height);
    shown
}

/// Where a scroll ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Moved {
    /// Somewhere in the log.
    Within,
    /// At the top of what is loaded: older history should be fetched.
    AtTop,
    /// Back at the newest messages.
    AtBottom,
}

/// Scrolls the current room up by `rows`.
pub fn up(state: &mut State, rows: u16) -> Moved {
    let (width, height) = state.view;
    let Some(room) = state.room() else {
        return Moved::Within;
    };
    let start = match room.scroll {
        Scroll::Top => return Moved::AtTop,
        Scroll::Bottom => match room.log.entries.last_key_value() {
            Some((key, _)) => (*key, 0),
            None => return Moved::AtTop,
        },
        Scroll::At { key, hidden } => (key, usize::from(hidden)),
    };
    let (mut key, mut hidden) = start;
    hidden += usize::from(rows);
    loop {
        let here = count(state, room, key, width);
        if hidden < here {
            break;
        }
        match previous(room, key) {
            Some((before, _)) => {
                hidden -= here;
                key = before;
            }
            None => return at_top(state, width, height),
        }
    }
    // Not enough above to fill the area: that is the top.
    if lines_above(state, room, key, hidden, width) < usize::from(height) {
        return at_top(state, width, height);
    }
    set_scroll(state, Scroll::At { key, hidden: hidden as u16 });
    Moved::Within
}

/// How many lines are above and at the bottom row of the view, counting up to `limit`.
fn lines_above(state: &State, room: &Room, key: Key, hidden: usize, width: u16) -> usize {
    let limit = usize::from(state.view.1);
    let mut total = count(state, room, key, width).saturating_sub(hidden);
    let mut at = key;
    while total < limit {
        let Some((before, _)) = previous(room, at) else {
            break;
        };
        total += count(state, room, before, width);
        at = before;
    }
    total
}

/// Scrolls the current room down by `rows`.
pub fn down(state: &mut State, rows: u16) -> Moved {
    let (width, height) = state.view;
    let Some(room) = state.room() else {
        return Moved::AtBottom;
    };
    let start = match room.scroll {
        Scroll::Bottom => return Moved::AtBottom,
        Scroll::At { key, hidden } => Some((key, usize::from(hidden))),
        Scroll::Top => bottom_of_top_view(state, room, width, usize::from(height)),
    };
    let Some((mut key, hidden)) = start else {
        set_scroll(state, Scroll::Bottom);
        return Moved::AtBottom;
    };
    let mut rows = usize::from(rows);
    let mut hidden = hidden;
    while rows > 0 {
        if hidden >= rows {
            hidden -= rows;
            break;
        }
        rows -= hidden;
        match next(room, key) {
            Some((after, _)) => {
                key = after;
                hidden = count(state, room, key, width);
            }
            None => {
                set_scroll(state, Scroll::Bottom);
                return Moved::AtBottom;
            }
        }
    }
    let last = room.log.entries.last_key_value().map(|(k, _)| *k);
    if hidden == 0 && Some(key) == last {
        set_scroll(state, Scroll::Bottom);
        return Moved::AtBottom;
    }
    set_scroll(state, Scroll::At { key, hidden: hidden as u16 });
    Moved::Within
}

/// The entry at the bottom row when the log is shown from its top, and its hidden lines.
pub fn bottom_of_top_view(
    state: &State,
    room: &Room,
    width: u16,
    height: usize,
) -> Option<(Key, usize)> {
    let mut total = 0;
    for key in room.log.entries.keys() {
        total += count(state, room, *key, width);
        if total >= height {
            return Some((*key, total - height));
        }
    }
    None
}

/// Scrolled to the top. A log that fits on the screen is all in view: it stays "at the
/// bottom", so new messages in it are read as they come.
fn at_top(state: &mut State, width: u16, height: u16) -> Moved {
    let fits = state
        .room()
        .is_none_or(|room| bottom_of_top_view(state, room, width, usize::from(height)).is_none());
    if !fits {
        set_scroll(state, Scroll::Top);
    }
    Moved::AtTop
}

fn set_scroll(state: &mut State, scroll: Scroll) {
    if let Some(room) = state.room_mut() {
        room.scroll = scroll;
    }
}
