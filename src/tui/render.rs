//! One entry of a room's log as terminal lines: its day separator, the "new messages" line,
//! time, author and text, wrapped to the width with wide characters counted right. Drawing
//! and scrolling both use this, so they agree on how many lines an entry takes.
//!
//! All text is cleaned again here: control and bidi characters never reach the terminal,
//! whatever the server let through.

use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use unicode_segmentation::UnicodeSegmentation;
use unicode_width::UnicodeWidthStr;

use super::commands::ACTION_PREFIX;
use super::settings::{AUTHOR_COLORS, Palette};
use super::state::{Entry, Key, Room, State};
use crate::protocol::text::{sanitize_line, sanitize_message};

/// The style of a part of the screen, or plain when colours are off.
pub fn styled(palette: &Palette, style: Style) -> Style {
    if palette.enabled { style } else { Style::default().add_modifier(style.add_modifier) }
}

/// A stable colour per author.
pub fn author_color(email: &str) -> Color {
    // FNV-1a: stable across runs and builds (unlike the std hasher).
    let hash = email
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    AUTHOR_COLORS[(hash % AUTHOR_COLORS.len() as u64) as usize]
}

/// Whether `text` mentions us: our email, `@` and the part of our email before the `@`, or
/// our display name as a whole word; case does not matter.
pub fn mentions(text: &str, email: &str, name: Option<&str>) -> bool {
    let text = text.to_lowercase();
    let local = email.split('@').next().unwrap_or_default();
    if text.contains(email) || (!local.is_empty() && contains_word(&text, &format!("@{local}"))) {
        return true;
    }
    name.map(str::to_lowercase)
        .is_some_and(|name| name.chars().count() >= 2 && contains_word(&text, &name))
}

fn contains_word(text: &str, word: &str) -> bool {
    let boundary = |c: Option<char>| c.is_none_or(|c| !c.is_alphanumeric());
    text.match_indices(word).any(|(at, _)| {
        boundary(text[..at].chars().next_back()) && boundary(text[at + word.len()..].chars().next())
    })
}

/// The lines of one entry. `previous` is the entry just above it (for the day separator).
pub fn entry_lines(
    state: &State,
    room: &Room,
    key: Key,
    entry: &Entry,
    previous: Option<&Entry>,
    width: u16,
) -> Vec<Line<'static>> {
    let palette = &state.settings.palette;
    let muted = styled(palette, Style::default().fg(palette.muted));
    let mut lines = Vec::new();

    let day = state.zone.at(entry.ts()).date_naive();
    if previous.is_none_or(|p| state.zone.at(p.ts()).date_naive() != day) {
        let label = day.format(" %A %-d %B %Y ").to_string();
        lines.push(rule(&label, width, muted));
    }
    if room.marker == Some(key.seq) && key.sub == 0 {
        let marker =
            styled(palette, Style::default().fg(Color::LightRed).add_modifier(Modifier::BOLD));
        lines.push(rule(" new messages ", width, marker));
    }

    let time = state.zone.at(entry.ts()).format(&state.settings.time_format).to_string();
    let time = sanitize_line(&time).into_owned();
    let indent = (time.width() + 1).min(usize::from(width / 2));
    let mut segments = vec![(time, muted), (" ".to_owned(), Style::default())];
    match entry {
        Entry::Notice { text, .. } => {
            let italic =
                styled(palette, Style::default().fg(palette.muted).add_modifier(Modifier::ITALIC));
            segments.push((format!("-- {}", sanitize_message(text)), italic));
        }
        Entry::Message(message) => {
            let label =
                sanitize_line(&state.label(&message.author, message.name.as_deref())).into_owned();
            let author = styled(
                palette,
                Style::default().fg(author_color(&message.author)).add_modifier(Modifier::BOLD),
            );
            let text = sanitize_message(&message.text);
            let (me, my_name) = match &state.me {
                Some((email, name)) => (email.as_str(), name.as_deref()),
                None => ("", None),
            };
            let mentioned = !me.is_empty() && message.author != me && mentions(&text, me, my_name);
            let body = if mentioned {
                styled(palette, Style::default().fg(palette.mention).add_modifier(Modifier::BOLD))
            } else {
                Style::default()
            };
            match text.strip_prefix(ACTION_PREFIX) {
                Some(action) => {
                    segments.push(("* ".to_owned(), author));
                    segments.push((label, author));
                    segments.push((format!(" {action}"), body.add_modifier(Modifier::ITALIC)));
                }
                None => {
                    segments.push((label, author));
                    segments.push((" ".to_owned(), Style::default()));
                    segments.push((text.into_owned(), body));
                }
            }
        }
    }
    lines.extend(wrap(segments, usize::from(width), indent));
    lines
}

/// A line across the width with a label in it: `── label ───`.
fn rule(label: &str, width: u16, style: Style) -> Line<'static> {
    let width = usize::from(width);
    let label_width = label.width();
    if label_width + 4 > width {
        return Line::from(Span::styled(truncate(label.trim(), width), style));
    }
    let right = width - label_width - 2;
    Line::from(Span::styled(format!("──{label}{}", "─".repeat(right)), style))
}

fn truncate(text: &str, width: usize) -> String {
    let mut out = String::new();
    let mut used = 0;
    for grapheme in text.graphemes(true) {
        if used + grapheme.width() > width {
            break;
        }
        used += grapheme.width();
        out.push_str(grapheme);
    }
    out
}

/// Wraps styled segments to `width` cells; lines after the first start `indent` cells in.
/// Breaks at spaces where it can, inside a word only when the word is longer than a line.
pub fn wrap(segments: Vec<(String, Style)>, width: usize, indent: usize) -> Vec<Line<'static>> {
    let width = width.max(1);
    let indent = indent.min(width.saturating_sub(1));
    let mut lines: Vec<Line<'static>> = Vec::new();
    let mut line: Vec<Span<'static>> = Vec::new();
    let mut used = 0;
    let new_line =
        |lines: &mut Vec<Line<'static>>, line: &mut Vec<Span<'static>>, used: &mut usize| {
            trim_end(line);
            lines.push(Line::from(std::mem::take(line)));
            if indent > 0 {
                line.push(Span::raw(" ".repeat(indent)));
            }
            *used = indent;
        };
    for (text, style) in segments {
        for token in tokens(&text) {
            if token == "\n" {
                new_line(&mut lines, &mut line, &mut used);
                continue;
            }
            let token_width = token.width();
            let is_space = token.chars().all(char::is_whitespace);
            if used + token_width <= width {
                line.push(Span::styled(token.to_owned(), style));
                used += token_width;
                continue;
            }
            if is_space {
                // Spaces at a break are dropped.
                new_line(&mut lines, &mut line, &mut used);
                continue;
            }
            if token_width <= width - indent && used > indent {
                new_line(&mut lines, &mut line, &mut used);
                line.push(Span::styled(token.to_owned(), style));
                used += token_width;
                continue;
            }
            // A word longer than the line: cut it where it must be cut.
            for grapheme in token.graphemes(true) {
                let cell = grapheme.width();
                if used + cell > width && used > indent {
                    new_line(&mut lines, &mut line, &mut used);
                }
                line.push(Span::styled(grapheme.to_owned(), style));
                used += cell;
            }
        }
    }
    trim_end(&mut line);
    lines.push(Line::from(line));
    lines
}

/// Drops the spaces a line ends with (they would only show as trailing blanks).
fn trim_end(line: &mut Vec<Span<'static>>) {
    while line.last().is_some_and(|s| s.content.chars().all(char::is_whitespace)) {
        line.pop();
    }
}

/// Splits text into words, runs of spaces, and line breaks.
fn tokens(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut kind = None;
    for (at, c) in text.char_indices() {
        let this = if c == '\n' { 2 } else { u8::from(c.is_whitespace()) };
        if kind != Some(this) || this == 2 {
            if at > start {
                out.push(&text[start..at]);
            }
            start = at;
            kind = Some(this);
        }
    }
    if start < text.len() {
        out.push(&text[start..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(lines: &[Line<'_>]) -> Vec<String> {
        lines.iter().map(|l| l.spans.iter().map(|s| s.content.as_ref()).collect()).collect()
    }

    #[test]
    fn wraps_words_and_indents() {
        let segments = vec![
            ("12:00 ".to_owned(), Style::default()),
            ("one two three four".to_owned(), Style::default()),
        ];
        assert_eq!(plain(&wrap(segments, 14, 6)), ["12:00 one two", "      three", "      four"]);
    }

    #[test]
    fn breaks_long_words_and_keeps_newlines() {
        let segments = vec![("abcdefghij\nk".to_owned(), Style::default())];
        assert_eq!(plain(&wrap(segments, 4, 0)), ["abcd", "efgh", "ij", "k"]);
    }

    #[test]
    fn wide_characters_count_two_cells() {
        let segments = vec![("日本語のテキスト".to_owned(), Style::default())];
        let lines = plain(&wrap(segments, 6, 0));
        assert_eq!(lines, ["日本語", "のテキ", "スト"]);
        for line in lines {
            assert!(line.width() <= 6);
        }
    }

    #[test]
    fn a_zero_width_never_loops() {
        let segments = vec![("text".to_owned(), Style::default())];
        assert!(!wrap(segments, 0, 5).is_empty());
    }

    #[test]
    fn mentions_by_name_email_or_handle() {
        let me = "ada@example.com";
        assert!(mentions("ping @ada please", me, None));
        assert!(mentions("ADA@EXAMPLE.COM look", me, None));
        assert!(mentions("thanks Ada Lovelace!", me, Some("Ada Lovelace")));
        assert!(!mentions("armada", me, Some("Ada")));
        assert!(!mentions("@adam hi", me, None));
    }

    #[test]
    fn author_colours_are_stable() {
        assert_eq!(author_color("a@x.io"), author_color("a@x.io"));
    }
}
