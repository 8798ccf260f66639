//! `view`: draws the state. It changes nothing but the size of the message area it
//! reports back (for scrolling), and it copes with any terminal size, down to one cell.

use std::time::Instant;

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Position, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph};
use unicode_width::UnicodeWidthStr;

mod login;

use super::commands::HELP;
use super::render::styled;
use super::scroll;
use super::state::{Link, Screen, Scroll, State};
use crate::protocol::text::sanitize_line;

/// The room list is shown from this width on.
const ROOM_LIST_FROM_WIDTH: u16 = 50;
const ROOM_LIST_WIDTH: u16 = 20;
/// Most rows the input grows to.
const INPUT_MAX_ROWS: u16 = 6;
const PROMPT: &str = "› ";

/// Draws everything; returns the size of the message area.
pub fn draw(frame: &mut Frame<'_>, state: &State, now: Instant) -> (u16, u16) {
    let area = frame.area();
    if area.width == 0 || area.height == 0 {
        return (0, 0);
    }
    let view = match &state.screen {
        Screen::Login(_) | Screen::Connecting { .. } => {
            login::draw(frame, state, area);
            state.view
        }
        Screen::Main => main(frame, state, area, now),
    };
    if state.help {
        help(frame, state, area);
    }
    view
}

fn main(frame: &mut Frame<'_>, state: &State, area: Rect, now: Instant) -> (u16, u16) {
    let palette = &state.settings.palette;
    let input = state.editor.layout(area.width.saturating_sub(PROMPT.width() as u16));
    let input_rows = (input.rows.len() as u16).clamp(1, INPUT_MAX_ROWS);
    let notice_rows = u16::from(state.notice.is_some());
    // From the bottom: status, input, separator, notice; the messages take the rest.
    let [top, notice_area, separator, input_area, status] = Layout::vertical([
        Constraint::Fill(1),
        Constraint::Length(notice_rows),
        Constraint::Length(u16::from(area.height >= 4)),
        Constraint::Length(input_rows),
        Constraint::Length(1),
    ])
    .areas(area);

    let show_rooms = area.width >= ROOM_LIST_FROM_WIDTH && top.height > 0;
    let [rooms_area, messages_area] = if show_rooms {
        Layout::horizontal([Constraint::Length(ROOM_LIST_WIDTH), Constraint::Fill(1)]).areas(top)
    } else {
        [Rect::default(), top]
    };
    if show_rooms {
        room_list(frame, state, rooms_area);
    }
    let elsewhere = if show_rooms { None } else { activity_elsewhere(state) };
    messages(frame, state, messages_area);
    if let Some(notice) = &state.notice {
        let style = if notice.error {
            Style::default().fg(Color::LightRed)
        } else {
            Style::default().fg(palette.accent)
        };
        let text = sanitize_line(&notice.text).into_owned();
        frame
            .render_widget(Paragraph::new(Span::styled(text, styled(palette, style))), notice_area);
    }
    separator_line(frame, state, separator, elsewhere.as_deref());

    // The input, with its cursor.
    let prompt = styled(palette, Style::default().fg(palette.accent).add_modifier(Modifier::BOLD));
    let first_row =
        input.rows.len().saturating_sub(usize::from(input_rows)).min(usize::from(input.cursor.1));
    let lines: Vec<Line<'_>> = input
        .rows
        .iter()
        .enumerate()
        .skip(first_row)
        .take(usize::from(input_rows))
        .map(|(i, row)| {
            let lead = if i == 0 { Span::styled(PROMPT, prompt) } else { Span::raw("  ") };
            Line::from(vec![lead, Span::raw(row.clone())])
        })
        .collect();
    frame.render_widget(Paragraph::new(lines), input_area);
    if !state.help && input_area.height > 0 {
        let x = input_area.x + PROMPT.width() as u16 + input.cursor.0;
        let y = input_area.y + input.cursor.1.saturating_sub(first_row as u16);
        if x < area.right() && y < input_area.bottom() {
            frame.set_cursor_position(Position { x, y });
        }
    }
    status_bar(frame, state, status, now);
    (messages_area.width, messages_area.height)
}

fn room_list(frame: &mut Frame<'_>, state: &State, area: Rect) {
    let palette = &state.settings.palette;
    let block = Block::default()
        .borders(Borders::RIGHT)
        .border_style(styled(palette, Style::default().fg(palette.muted)));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let width = usize::from(inner.width);
    // More rooms than rows: the list scrolls so that the current room is always in it.
    let rows = usize::from(inner.height);
    let first = (state.current + 1).saturating_sub(rows);
    let lines: Vec<Line<'_>> = state
        .rooms
        .iter()
        .enumerate()
        .skip(first)
        .take(rows)
        .map(|(i, room)| {
            let mark = if room.mentioned { "@" } else { "" };
            let count = if room.unread > 0 {
                format!("{mark}{}", room.unread.min(9999))
            } else {
                mark.to_owned()
            };
            // Rooms 1 to 9 show the digit that Alt takes to reach them.
            let key = if i < 9 { char::from(b'1' + i as u8) } else { ' ' };
            let name_width = width.saturating_sub(count.width() + 4);
            let name = clip(&format!("#{}", sanitize_line(&room.name)), name_width);
            let pad = width.saturating_sub(name.width() + count.width() + 2);
            let text = format!("{key} {name}{}{count}", " ".repeat(pad));
            let style = if i == state.current && !palette.enabled {
                // Without colours, reverse video is what sets it apart from unread rooms.
                Style::default().add_modifier(Modifier::BOLD | Modifier::REVERSED)
            } else if i == state.current {
                Style::default().fg(Color::Black).bg(palette.accent).add_modifier(Modifier::BOLD)
            } else if room.mentioned {
                styled(palette, Style::default().fg(palette.mention).add_modifier(Modifier::BOLD))
            } else if room.unread > 0 {
                Style::default().add_modifier(Modifier::BOLD)
            } else {
                Style::default()
            };
            Line::from(Span::styled(text, style))
        })
        .collect();
    frame.render_widget(Paragraph::new(lines), inner);
}

fn messages(frame: &mut Frame<'_>, state: &State, area: Rect) {
    if area.width == 0 || area.height == 0 {
        return;
    }
    let Some(room) = state.room() else {
        return;
    };
    let mut lines = scroll::visible(state, room, area.width, area.height);
    let palette = &state.settings.palette;
    let muted = styled(palette, Style::default().fg(palette.muted));
    if room.log.entries.is_empty() {
        let text = if room.loading { "loading…" } else { "no messages yet: say something" };
        lines = vec![Line::from(Span::styled(text, muted))];
    }
    // Show what is above the oldest line loaded, when the view is at the top.
    if room.scroll == Scroll::Top
        && (room.loading || !room.more)
        && (lines.len() as u16) < area.height
    {
        let text = if room.loading { "loading older messages…" } else { "start of the room" };
        lines.insert(0, Line::from(Span::styled(text, muted)));
    }
    // Messages sit at the bottom of the area, as in every chat.
    let blank = usize::from(area.height).saturating_sub(lines.len());
    let mut shown: Vec<Line<'_>> = vec![Line::default(); blank];
    shown.extend(lines);
    for unsent in state.unsent.iter().filter(|u| u.room == room.name) {
        if room.scroll != Scroll::Bottom {
            break;
        }
        let text = format!("(unsent) {}", sanitize_line(&unsent.text));
        shown.push(Line::from(Span::styled(clip(&text, usize::from(area.width)), muted)));
        shown.remove(0);
    }
    frame.render_widget(Paragraph::new(shown), area);
}

/// What the hidden room list would show of the other rooms: their new messages, and a
/// mention.
fn activity_elsewhere(state: &State) -> Option<String> {
    let others = state.rooms.iter().enumerate().filter(|(i, _)| *i != state.current);
    let (unread, mentioned) = others.fold((0, false), |(unread, mentioned), (_, room)| {
        (unread + room.unread, mentioned || room.mentioned)
    });
    match (unread, mentioned) {
        (0, false) => None,
        (_, true) => Some(format!("@ {unread} new elsewhere (Alt-A)")),
        (_, false) => Some(format!("{unread} new elsewhere (Alt-A)")),
    }
}

fn separator_line(frame: &mut Frame<'_>, state: &State, area: Rect, elsewhere: Option<&str>) {
    if area.height == 0 {
        return;
    }
    let palette = &state.settings.palette;
    let muted = styled(palette, Style::default().fg(palette.muted));
    let Some(room) = state.room() else {
        frame.render_widget(
            Paragraph::new(Span::styled("─".repeat(usize::from(area.width)), muted)),
            area,
        );
        return;
    };
    let members =
        if room.members == 1 { "1 member".to_owned() } else { format!("{} members", room.members) };
    let mut label = format!(" #{} · ", sanitize_line(&room.name));
    if let Some(elsewhere) = elsewhere {
        label.push_str(elsewhere);
        label.push_str(" · ");
    }
    label.push_str(&members);
    label.push(' ');
    if room.scroll != Scroll::Bottom {
        label.push_str(&if room.unread > 0 {
            format!("· scrolled up, {} new below (PgDn) ", room.unread)
        } else {
            "· scrolled up (PgDn) ".to_owned()
        });
    }
    let label = clip(&label, usize::from(area.width).saturating_sub(2));
    let rest = usize::from(area.width).saturating_sub(label.width() + 2);
    let line = Line::from(vec![
        Span::styled("──", muted),
        Span::styled(label, styled(palette, Style::default().fg(palette.accent))),
        Span::styled("─".repeat(rest), muted),
    ]);
    frame.render_widget(Paragraph::new(line), area);
}

fn status_bar(frame: &mut Frame<'_>, state: &State, area: Rect, now: Instant) {
    if area.height == 0 {
        return;
    }
    let palette = &state.settings.palette;
    let who = match &state.me {
        Some((email, name)) => crate::protocol::text::display_label(email, name.as_deref()),
        None => "not logged in".to_owned(),
    };
    let (link, link_style) = link_text(state, now);
    let unsent = match state.unsent.len() {
        0 => String::new(),
        n => format!(" · {n} unsent"),
    };
    let right = format!("{link}{unsent} ");
    let left = format!(" {} · {}", sanitize_line(&who), state.server);
    let width = usize::from(area.width);
    let left = clip(&left, width.saturating_sub(right.width() + 1));
    let pad = width.saturating_sub(left.width() + right.width());
    let bar = styled(palette, Style::default().bg(Color::DarkGray).fg(Color::White));
    let line = Line::from(vec![
        Span::styled(left, bar),
        Span::styled(" ".repeat(pad), bar),
        Span::styled(clip(&right, width), bar.patch(styled(palette, link_style))),
    ]);
    frame.render_widget(Paragraph::new(line), area);
}

/// The connection as it is, for the status bar.
fn link_text(state: &State, now: Instant) -> (String, Style) {
    match &state.link {
        Link::Connecting => ("connecting…".to_owned(), Style::default().fg(Color::Yellow)),
        Link::Connected => ("● connected".to_owned(), Style::default().fg(Color::LightGreen)),
        Link::Reconnecting { attempt, at } => {
            let wait = at.saturating_duration_since(now).as_secs_f32().ceil() as u64;
            let text = if wait > 0 {
                format!("◌ reconnecting in {wait} s (attempt {attempt})")
            } else {
                format!("◌ reconnecting (attempt {attempt})")
            };
            (text, Style::default().fg(Color::Yellow))
        }
        Link::Offline { reason } => (
            format!("✕ offline: {} · /reconnect", sanitize_line(reason)),
            Style::default().fg(Color::LightRed),
        ),
    }
}

fn help(frame: &mut Frame<'_>, state: &State, area: Rect) {
    let palette = &state.settings.palette;
    let accent = styled(palette, Style::default().fg(palette.accent).add_modifier(Modifier::BOLD));
    let keys: &[(&str, &str)] = &[
        ("Enter", "send"),
        ("Alt-Enter", "new line in the message"),
        ("Up / Down", "earlier lines you sent"),
        ("PgUp / PgDn", "scroll (older history loads at the top)"),
        ("Alt-1..9", "go to room 1..9"),
        ("Ctrl-N / Ctrl-P", "next / previous room"),
        ("Alt-A", "next room with new messages"),
        ("Ctrl-A / Ctrl-E", "start / end of line"),
        ("Ctrl-W / Ctrl-U", "delete word / to start of line"),
        ("Ctrl-L", "redraw the screen"),
        ("Ctrl-C", "clear the input; twice: quit"),
        ("F1", "this help"),
    ];
    let mut lines = vec![Line::from(Span::styled("Keys", accent))];
    lines.extend(
        keys.iter().map(|(k, v)| {
            Line::from(vec![Span::styled(format!("  {k:<16}"), accent), Span::raw(*v)])
        }),
    );
    lines.push(Line::default());
    lines.push(Line::from(Span::styled("Commands", accent)));
    lines.extend(
        HELP.iter().map(|(c, v)| {
            Line::from(vec![Span::styled(format!("  {c:<16}"), accent), Span::raw(*v)])
        }),
    );
    lines.push(Line::default());
    lines.push(Line::from("Press any key to close."));
    let width = area.width.min(66);
    let height = (lines.len() as u16 + 2).min(area.height);
    let popup = Rect {
        x: area.x + (area.width - width) / 2,
        y: area.y + (area.height - height) / 2,
        width,
        height,
    };
    frame.render_widget(Clear, popup);
    let block = Block::default().borders(Borders::ALL).title(" roomz help ");
    frame.render_widget(Paragraph::new(lines).block(block), popup);
}

/// The longest end of `text` that fits in `width` cells.
pub(super) fn tail(text: &str, width: usize) -> String {
    use unicode_segmentation::UnicodeSegmentation;
    let mut kept = Vec::new();
    let mut used = 0;
    for grapheme in text.graphemes(true).rev() {
        let cell = grapheme.width();
        if used + cell > width {
            break;
        }
        used += cell;
        kept.push(grapheme);
    }
    kept.into_iter().rev().collect()
}

/// The longest start of `text` that fits in `width` cells.
fn clip(text: &str, width: usize) -> String {
    use unicode_segmentation::UnicodeSegmentation;
    let mut out = String::new();
    let mut used = 0;
    for grapheme in text.graphemes(true) {
        let cell = grapheme.width();
        if used + cell > width {
            break;
        }
        used += cell;
        out.push_str(grapheme);
    }
    out
}
