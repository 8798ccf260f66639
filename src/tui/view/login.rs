//! The screens before the chat: the login (email, then token) and the connecting screen.
//! Every line is wrapped before the box is measured, and on a short terminal the rows
//! around the input field are the ones kept, so the field and its error always show.

use ratatui::Frame;
use ratatui::layout::{Position, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use unicode_width::UnicodeWidthStr;

use super::tail;
use crate::protocol::text::sanitize_line;
use crate::tui::render::{styled, wrap};
use crate::tui::state::{LoginStep, Screen, State};

/// The widest the login box grows.
const BOX_WIDTH: u16 = 72;

/// The rows of the screen, wrapped, and where the input field is among them.
struct Rows {
    lines: Vec<Line<'static>>,
    width: usize,
    /// The field's row and the column its cursor is in.
    field: Option<(usize, u16)>,
}

impl Rows {
    fn text(&mut self, text: &str, style: Style) {
        let text = sanitize_line(text).into_owned();
        self.lines.extend(wrap(vec![(text, style)], self.width, 0));
    }

    fn blank(&mut self) {
        self.lines.push(Line::default());
    }

    /// The input field: one row, showing the end of a long paste (where the cursor is).
    fn field(&mut self, prefix: &'static str, text: &str, style: Style) {
        let room = self.width.saturating_sub(prefix.width() + 1);
        let text = tail(text, room);
        let column = (prefix.width() + text.width()) as u16;
        self.field = Some((self.lines.len(), column));
        self.lines.push(Line::from(vec![Span::styled(prefix, style), Span::raw(text)]));
    }
}

pub(super) fn draw(frame: &mut Frame<'_>, state: &State, area: Rect) {
    let palette = &state.settings.palette;
    let width = area.width.min(BOX_WIDTH);
    let accent = styled(palette, Style::default().fg(palette.accent).add_modifier(Modifier::BOLD));
    let muted = styled(palette, Style::default().fg(palette.muted));
    let error = styled(palette, Style::default().fg(Color::LightRed));

    let mut rows = Rows { lines: Vec::new(), width: usize::from(width), field: None };
    let server = sanitize_line(&state.server).into_owned();
    rows.lines.extend(wrap(
        vec![("roomz".to_owned(), accent), (format!(" · {server}"), muted)],
        rows.width,
        0,
    ));
    rows.blank();
    match &state.screen {
        Screen::Login(login) => {
            let (intro, prefix, hint) = match &login.step {
                LoginStep::Email => (
                    "Log in with a magic link: type your email address, and a link to log in \
                     will be sent to it."
                        .to_owned(),
                    "Email: ",
                    "Enter: send the link · Ctrl-C twice: quit",
                ),
                LoginStep::Token { email } => (
                    format!(
                        "A login link is on its way to {email}. Open it, then paste the token \
                         it shows (or the whole link) here."
                    ),
                    "Token: ",
                    "Enter: log in · Esc: another address · Ctrl-C twice: quit",
                ),
            };
            rows.text(&intro, Style::default());
            rows.blank();
            rows.field(prefix, state.editor.text(), accent);
            rows.blank();
            match (&login.error, login.busy) {
                (_, true) => rows.text("working…", muted),
                (Some(message), false) => rows.text(message, error),
                (None, false) => rows.blank(),
            }
            rows.blank();
            rows.text(hint, muted);
        }
        Screen::Connecting { error: Some(message) } => {
            rows.text(message, error);
            rows.blank();
            rows.text("Enter: try again · Ctrl-C twice: quit", muted);
        }
        _ => rows.text("Connecting…", Style::default()),
    }
    if let Some(notice) = &state.notice {
        rows.text(&notice.text, muted);
    }
    place(frame, state, area, width, rows);
}

/// Puts the rows in a box a third of the way down, keeping the field's rows when the
/// terminal is too short for all of them.
fn place(frame: &mut Frame<'_>, state: &State, area: Rect, width: u16, rows: Rows) {
    let height = usize::from(area.height);
    let total = rows.lines.len();
    let start = match rows.field {
        Some((row, _)) => total.saturating_sub(height).min(row),
        None => 0,
    };
    let shown: Vec<Line<'static>> = rows.lines.into_iter().skip(start).take(height).collect();
    let shown_height = shown.len() as u16;
    let x = area.x + (area.width - width) / 2;
    let y = area.y + (area.height - shown_height) / 3;
    frame.render_widget(Paragraph::new(shown), Rect { x, y, width, height: shown_height });
    if let Some((row, column)) = rows.field
        && !state.help
    {
        let cursor = Position { x: x.saturating_add(column), y: y + (row - start) as u16 };
        if cursor.x < area.right() && cursor.y < area.bottom() {
            frame.set_cursor_position(cursor);
        }
    }
}
