//! The input line: a small text editor with the readline keys people know, a history of
//! sent lines, multi-line drafts, and layout that places the cursor right on wide
//! characters (CJK, emoji).

use unicode_segmentation::UnicodeSegmentation;
use unicode_width::UnicodeWidthStr;

/// Most lines kept in the history of sent lines.
const HISTORY_MAX: usize = 500;

/// The draft being typed, with its cursor (a byte index on a grapheme boundary).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Editor {
    text: String,
    cursor: usize,
    history: Vec<String>,
    /// While browsing the history: which entry is shown, and the draft it replaced.
    browsing: Option<(usize, String)>,
}

/// The draft laid out for a box of some width: its rows and where the cursor is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub rows: Vec<String>,
    /// Column and row of the cursor, in terminal cells.
    pub cursor: (u16, u16),
}

impl Editor {
    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn is_empty(&self) -> bool {
        self.text.is_empty()
    }

    /// Replaces the whole draft, cursor at the end.
    pub fn set(&mut self, text: &str) {
        self.text = text.to_owned();
        self.cursor = self.text.len();
    }

    /// Empties the draft.
    pub fn clear(&mut self) {
        self.set("");
        self.browsing = None;
    }

    /// Takes the draft out (for sending) and remembers it in the history.
    pub fn take(&mut self) -> String {
        let text = std::mem::take(&mut self.text);
        self.cursor = 0;
        self.browsing = None;
        if !text.trim().is_empty() && self.history.last() != Some(&text) {
            self.history.push(text.clone());
            if self.history.len() > HISTORY_MAX {
                self.history.remove(0);
            }
        }
        text
    }

    /// Types one character. Control and bidi characters are dropped: the draft is drawn as
    /// typed, and what it sends is text like anyone's.
    pub fn insert(&mut self, c: char) {
        if c != '\n' && crate::protocol::text::is_unsafe_char(c) {
            return;
        }
        self.text.insert(self.cursor, c);
        self.cursor += c.len_utf8();
    }

    /// Pastes text: newlines kept (CR LF and CR become LF), a tab becomes four spaces,
    /// other control characters are dropped. With `multiline` false, line breaks become
    /// spaces.
    pub fn paste(&mut self, text: &str, multiline: bool) {
        let mut clean = crate::protocol::text::sanitize_message(text).into_owned();
        if !multiline {
            clean = clean.replace('\n', " ").trim().to_owned();
        }
        self.text.insert_str(self.cursor, &clean);
        self.cursor += clean.len();
    }

    fn previous_boundary(&self) -> usize {
        self.text[..self.cursor].grapheme_indices(true).next_back().map_or(0, |(at, _)| at)
    }

    fn next_boundary(&self) -> usize {
        self.text[self.cursor..]
            .graphemes(true)
            .next()
            .map_or(self.cursor, |g| self.cursor + g.len())
    }

    pub fn backspace(&mut self) {
        let from = self.previous_boundary();
        self.text.replace_range(from..self.cursor, "");
        self.cursor = from;
    }

    pub fn delete(&mut self) {
        let to = self.next_boundary();
        self.text.replace_range(self.cursor..to, "");
    }

    pub fn left(&mut self) {
        self.cursor = self.previous_boundary();
    }

    pub fn right(&mut self) {
        self.cursor = self.next_boundary();
    }

    fn line_start(&self) -> usize {
        self.text[..self.cursor].rfind('\n').map_or(0, |at| at + 1)
    }

    fn line_end(&self) -> usize {
        self.text[self.cursor..].find('\n').map_or(self.text.len(), |at| self.cursor + at)
    }

    /// Ctrl-A, Home.
    pub fn home(&mut self) {
        self.cursor = self.line_start();
    }

    /// Ctrl-E, End.
    pub fn end(&mut self) {
        self.cursor = self.line_end();
    }

    /// Ctrl-U: deletes from the start of the line to the cursor.
    pub fn delete_to_line_start(&mut self) {
        let from = self.line_start();
        self.text.replace_range(from..self.cursor, "");
        self.cursor = from;
    }

    /// Ctrl-K: deletes from the cursor to the end of the line.
    pub fn delete_to_line_end(&mut self) {
        let to = self.line_end();
        self.text.replace_range(self.cursor..to, "");
    }

    fn word_start(&self) -> usize {
        let before = &self.text[..self.cursor];
        let trimmed = before.trim_end_matches(|c: char| c.is_whitespace() && c != '\n');
        // At the start of a line the "word" before the cursor is the line break.
        if trimmed.ends_with('\n') {
            return trimmed.len() - 1;
        }
        // After the space before the word; spaces may be wider than a byte (U+00A0, U+3000).
        trimmed
            .char_indices()
            .rev()
            .find(|(_, c)| c.is_whitespace())
            .map_or(0, |(at, space)| at + space.len_utf8())
    }

    /// Ctrl-W: deletes the word before the cursor (and the spaces after it).
    pub fn delete_word_back(&mut self) {
        let from = self.word_start();
        self.text.replace_range(from..self.cursor, "");
        self.cursor = from;
    }

    /// Alt-B, Ctrl-Left.
    pub fn word_left(&mut self) {
        self.cursor = self.word_start();
    }

    /// Alt-F, Ctrl-Right.
    pub fn word_right(&mut self) {
        let after = &self.text[self.cursor..];
        let skipped = after.len() - after.trim_start().len();
        let word = after[skipped..].find(char::is_whitespace).unwrap_or(after.len() - skipped);
        self.cursor += skipped + word;
    }

    /// Up: to the line above in a multi-line draft, else to the previous sent line.
    pub fn up(&mut self) {
        if self.line_start() > 0 {
            self.move_vertically(-1);
            return;
        }
        let at = match &self.browsing {
            Some((at, _)) if *at > 0 => at - 1,
            Some(_) => return,
            None if self.history.is_empty() => return,
            None => self.history.len() - 1,
        };
        let draft = match self.browsing.take() {
            Some((_, draft)) => draft,
            None => self.text.clone(),
        };
        self.set(&self.history[at].clone());
        self.browsing = Some((at, draft));
    }

    /// Down: to the line below in a multi-line draft, else to the next sent line (and
    /// finally back to the draft).
    pub fn down(&mut self) {
        if self.line_end() < self.text.len() {
            self.move_vertically(1);
            return;
        }
        let Some((at, draft)) = self.browsing.take() else {
            return;
        };
        if at + 1 < self.history.len() {
            self.set(&self.history[at + 1].clone());
            self.browsing = Some((at + 1, draft));
        } else {
            self.set(&draft);
        }
    }

    fn move_vertically(&mut self, direction: i8) {
        let column = self.text[self.line_start()..self.cursor].width();
        let target_start = if direction < 0 {
            let this_start = self.line_start();
            self.text[..this_start - 1].rfind('\n').map_or(0, |at| at + 1)
        } else {
            self.line_end() + 1
        };
        let line_end =
            self.text[target_start..].find('\n').map_or(self.text.len(), |at| target_start + at);
        let mut cursor = target_start;
        let mut width = 0;
        for (at, grapheme) in self.text[target_start..line_end].grapheme_indices(true) {
            if width + grapheme.width() > column {
                break;
            }
            width += grapheme.width();
            cursor = target_start + at + grapheme.len();
        }
        self.cursor = cursor;
    }

    /// Lays the draft out in rows of at most `width` cells, breaking long lines anywhere
    /// (a draft is edited, not read, so every character stays where the cursor expects).
    pub fn layout(&self, width: u16) -> Layout {
        let width = usize::from(width.max(2));
        let mut rows = vec![String::new()];
        let mut row_width = 0;
        let mut cursor = (0u16, 0u16);
        let mut place_cursor = |at: usize, rows: &Vec<String>, row_width: usize| {
            if at == self.cursor {
                cursor = (row_width as u16, (rows.len() - 1) as u16);
            }
        };
        for (at, grapheme) in self.text.grapheme_indices(true) {
            place_cursor(at, &rows, row_width);
            if grapheme == "\n" {
                rows.push(String::new());
                row_width = 0;
                continue;
            }
            let cell = grapheme.width();
            if row_width + cell > width - 1 {
                rows.push(String::new());
                row_width = 0;
                place_cursor(at, &rows, row_width);
            }
            rows.last_mut().expect("there is a row").push_str(grapheme);
            row_width += cell;
        }
        place_cursor(self.text.len(), &rows, row_width);
        Layout { rows, cursor }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn typed(text: &str) -> Editor {
        let mut editor = Editor::default();
        for c in text.chars() {
            editor.insert(c);
        }
        editor
    }

    #[test]
    fn control_and_bidi_characters_are_not_typed() {
        let e = typed("a\u{202e}b\u{2066}c\u{1b}d\u{9b}e\nf");
        assert_eq!(e.text(), "abcde\nf");
    }

    #[test]
    fn readline_keys() {
        let mut e = typed("hello brave new world");
        e.delete_word_back();
        assert_eq!(e.text(), "hello brave new ");
        e.home();
        e.insert('>');
        assert_eq!(e.text(), ">hello brave new ");
        e.end();
        e.word_left();
        e.word_left();
        e.delete_to_line_start();
        assert_eq!(e.text(), "brave new ");
        e.delete_to_line_end();
        assert_eq!(e.text(), "");
    }

    #[test]
    fn ctrl_w_at_the_start_of_a_line_joins_it_to_the_one_above() {
        let mut e = typed("first line\nsecond");
        e.delete_word_back();
        assert_eq!(e.text(), "first line\n");
        e.delete_word_back();
        assert_eq!(e.text(), "first line");
        e.delete_word_back();
        assert_eq!(e.text(), "first ");
    }

    #[test]
    fn spaces_wider_than_a_byte() {
        for space in ['\u{a0}', '\u{3000}', '\u{2003}'] {
            let mut e = typed(&format!("a{space}b"));
            e.delete_word_back();
            assert_eq!(e.text(), format!("a{space}"));
            let mut e = typed(&format!("one{space}two"));
            e.word_left();
            e.insert('!');
            assert_eq!(e.text(), format!("one{space}!two"));
            e.word_left();
            e.word_left();
            e.word_right();
            e.insert('?');
            assert_eq!(e.text(), format!("one?{space}!two"));
        }
    }

    #[test]
    fn wide_characters_move_as_one() {
        let mut e = typed("日本👩‍👩‍👧x");
        e.left();
        e.left();
        e.backspace();
        assert_eq!(e.text(), "日👩‍👩‍👧x", "the family emoji is one grapheme");
        let layout = e.layout(20);
        assert_eq!(layout.cursor, (2, 0), "after one wide character");
    }

    #[test]
    fn history_browses_and_returns_to_the_draft() {
        let mut e = typed("first");
        e.take();
        e.set("second");
        e.take();
        e.set("draft");
        e.up();
        assert_eq!(e.text(), "second");
        e.up();
        assert_eq!(e.text(), "first");
        e.up();
        assert_eq!(e.text(), "first");
        e.down();
        e.down();
        assert_eq!(e.text(), "draft");
    }

    #[test]
    fn multiline_drafts_and_paste() {
        let mut e = Editor::default();
        e.paste("line one\r\nline\ttwo\u{1b}[31m", true);
        assert_eq!(e.text(), "line one\nline    two[31m");
        e.up();
        assert_eq!(e.text(), "line one\nline    two[31m", "up moves within the draft");
        e.insert('!');
        assert_eq!(e.text(), "line one!\nline    two[31m");
        let mut single = Editor::default();
        single.paste("  token\n", false);
        assert_eq!(single.text(), "token");
    }

    #[test]
    fn layout_wraps_and_places_the_cursor() {
        let e = typed("abcdefgh");
        let layout = e.layout(5);
        assert_eq!(layout.rows, ["abcd", "efgh"]);
        assert_eq!(layout.cursor, (4, 1));
        let empty = Editor::default().layout(1);
        assert_eq!(empty.cursor, (0, 0));
    }
}
