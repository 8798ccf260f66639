//! The text rules both sides agree on: what an email address, a room name and a display
//! name may be, and how untrusted text is made safe to store and to show in a terminal.
//!
//! Everything here is pure and allocation-light; nothing here does I/O.

use std::borrow::Cow;
use std::fmt;

/// The room every user is a member of and cannot leave.
pub const DEFAULT_ROOM: &str = "general";

/// Longest room name, in characters.
pub const MAX_ROOM_NAME_CHARS: usize = 32;

/// Longest display name, in characters.
pub const MAX_DISPLAY_NAME_CHARS: usize = 64;

/// Longest email address (RFC 5321 path limit).
pub const MAX_EMAIL_LEN: usize = 254;

/// Why a piece of text was refused. The message is written for the person who typed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidText(String);

impl InvalidText {
    fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }

    /// The explanation, ready to show.
    pub fn message(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for InvalidText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InvalidText {}

/// True for the characters that must never reach a terminal: C0 and C1 controls, DEL, and
/// the invisible marks that reorder text (bidi embeddings, overrides and isolates).
pub fn is_unsafe_char(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{1f}'
        | '\u{7f}'..='\u{9f}'
        | '\u{061c}'
        | '\u{200e}' | '\u{200f}'
        | '\u{202a}'..='\u{202e}'
        | '\u{2066}'..='\u{2069}'
    )
}

/// Cleans the text of a message: keeps newlines (CRLF and lone CR become LF, and the line
/// and paragraph separators too), turns a tab into four spaces, and drops every other
/// control and bidi character. Text that needs no change is returned as it came.
pub fn sanitize_message(text: &str) -> Cow<'_, str> {
    let needs_work = text
        .chars()
        .any(|c| (is_unsafe_char(c) && c != '\n') || c == '\u{2028}' || c == '\u{2029}');
    if !needs_work {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => {
                if chars.peek() != Some(&'\n') {
                    out.push('\n');
                }
            }
            '\n' | '\u{2028}' | '\u{2029}' => out.push('\n'),
            '\t' => out.push_str("    "),
            c if is_unsafe_char(c) => {}
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Cleans text that must stay on one line (display names, room topics, log fields):
/// every kind of line break and tab becomes a space, other unsafe characters are dropped.
pub fn sanitize_line(text: &str) -> Cow<'_, str> {
    if !text.chars().any(|c| is_unsafe_char(c) || c == '\u{2028}' || c == '\u{2029}') {
        return Cow::Borrowed(text);
    }
    let cleaned = text
        .chars()
        .filter_map(|c| match c {
            '\n' | '\r' | '\t' | '\u{2028}' | '\u{2029}' => Some(' '),
            c if is_unsafe_char(c) => None,
            c => Some(c),
        })
        .collect();
    Cow::Owned(cleaned)
}

/// Canonical form of an email address: trimmed and lowercased, then checked.
///
/// Accepted: `local@domain` in ASCII, where the local part uses the usual unquoted
/// characters and the domain has at least two dot-separated labels of letters, digits and
/// inner hyphens. Quoted local parts, IP-literal domains and non-ASCII addresses are refused:
/// an allow-list wants one spelling per person, and look-alike letters have no place in it.
///
/// ```
/// use roomz::protocol::text::canonical_email;
/// assert_eq!(canonical_email("  Alice@Example.COM ").unwrap(), "alice@example.com");
/// assert!(canonical_email("alice@localhost").is_err());
/// ```
pub fn canonical_email(input: &str) -> Result<String, InvalidText> {
    let email = input.trim().to_ascii_lowercase();
    let refuse = |why: &str| Err(InvalidText::new(format!("not a valid email address: {why}")));
    if email.is_empty() {
        return refuse("it is empty");
    }
    if email.len() > MAX_EMAIL_LEN {
        return refuse("it is longer than 254 characters");
    }
    if !email.is_ascii() {
        return refuse("only ASCII addresses are accepted");
    }
    let Some((local, domain)) = email.split_once('@') else {
        return refuse("it has no @");
    };
    if domain.contains('@') {
        return refuse("it has more than one @");
    }
    if local.is_empty() || local.len() > 64 {
        return refuse("the part before @ must be 1 to 64 characters");
    }
    let local_ok = local.split('.').all(|atom| {
        !atom.is_empty()
            && atom.chars().all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c))
    });
    if !local_ok {
        return refuse("the part before @ has a character or dot that is not allowed");
    }
    let labels: Vec<&str> = domain.split('.').collect();
    if labels.len() < 2 {
        return refuse("the domain needs a dot, as in example.com");
    }
    let label_ok = |label: &&str| {
        (1..=63).contains(&label.len())
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    if !labels.iter().all(label_ok) {
        return refuse("the domain is not a valid host name");
    }
    Ok(email)
}

/// Canonical form of a room name: trimmed, a leading `#` dropped, lowercased, then checked.
/// A room name is 1 to 32 characters of `a-z`, `0-9`, `-`, `_` and `.`, starting with a
/// letter or digit.
///
/// ```
/// use roomz::protocol::text::canonical_room;
/// assert_eq!(canonical_room("#Rust-Lang").unwrap(), "rust-lang");
/// assert!(canonical_room("no spaces").is_err());
/// ```
pub fn canonical_room(input: &str) -> Result<String, InvalidText> {
    let trimmed = input.trim();
    let name = trimmed.strip_prefix('#').unwrap_or(trimmed).to_ascii_lowercase();
    let refuse = |why: &str| Err(InvalidText::new(format!("invalid room name: {why}")));
    if name.is_empty() {
        return refuse("it is empty");
    }
    if name.chars().count() > MAX_ROOM_NAME_CHARS {
        return refuse("it is longer than 32 characters");
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return refuse("it must start with a letter or a digit");
    }
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
        return refuse("use only letters, digits, '-', '_' and '.'");
    }
    Ok(name)
}

/// Canonical form of a display name: cleaned to one line, inner runs of spaces collapsed,
/// trimmed. An empty result means "no display name" (`None`).
///
/// ```
/// use roomz::protocol::text::canonical_display_name;
/// assert_eq!(canonical_display_name("  Ada \u{202e} Lovelace ").unwrap().as_deref(), Some("Ada Lovelace"));
/// assert_eq!(canonical_display_name("   ").unwrap(), None);
/// ```
pub fn canonical_display_name(input: &str) -> Result<Option<String>, InvalidText> {
    let cleaned = sanitize_line(input);
    let name = cleaned.split_whitespace().collect::<Vec<_>>().join(" ");
    if name.is_empty() {
        return Ok(None);
    }
    if name.chars().count() > MAX_DISPLAY_NAME_CHARS {
        return Err(InvalidText::new(format!(
            "invalid display name: it is longer than {MAX_DISPLAY_NAME_CHARS} characters"
        )));
    }
    Ok(Some(name))
}

/// How a person is shown: `Display Name (email)`, or just the email without a name.
pub fn display_label(email: &str, name: Option<&str>) -> String {
    match name {
        Some(name) => format!("{name} ({email})"),
        None => email.to_owned(),
    }
}

/// Takes what a user pasted (a bare token, or the whole magic link) and returns the token.
///
/// ```
/// use roomz::protocol::text::token_from_paste;
/// assert_eq!(token_from_paste(" abc_DEF-123 "), Some("abc_DEF-123"));
/// assert_eq!(token_from_paste("https://chat.example.com/auth/verify?token=abc&x=1"), Some("abc"));
/// assert_eq!(token_from_paste("not a token"), None);
/// ```
pub fn token_from_paste(pasted: &str) -> Option<&str> {
    let pasted = pasted.trim();
    let candidate = match pasted.find("token=") {
        Some(at) => {
            let rest = &pasted[at + "token=".len()..];
            rest.split(['&', '#']).next().unwrap_or_default()
        }
        None => pasted,
    };
    let well_formed = !candidate.is_empty()
        && candidate.len() <= MAX_TOKEN_LEN
        && candidate.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    well_formed.then_some(candidate)
}

/// Longest token accepted from a paste. Real magic-link tokens are 43 characters.
pub const MAX_TOKEN_LEN: usize = 128;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_keeps_newlines_and_drops_controls() {
        let raw = "a\r\nb\rc\u{1b}[31mred\u{7}\u{9b}x\u{202e}y\u{2067}z\td";
        assert_eq!(sanitize_message(raw), "a\nb\nc[31mredxyz    d");
    }

    #[test]
    fn clean_message_is_borrowed() {
        assert!(matches!(sanitize_message("héllo\nwörld 🎉"), Cow::Borrowed(_)));
    }

    #[test]
    fn line_has_no_breaks() {
        assert_eq!(sanitize_line("a\nb\u{2028}c\u{0}d"), "a b cd");
    }

    #[test]
    fn emails() {
        for ok in ["a@b.co", "first.last+tag@sub.example.org", "x_y@a-b.example"] {
            assert!(canonical_email(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "plain",
            "a@b",
            "a@@b.com",
            "a@b@c.com",
            ".a@b.com",
            "a..b@c.com",
            "a@-b.com",
            "a@b.com-",
            "a b@c.com",
            "é@b.com",
            "a@b..com",
            "\"q\"@b.com",
        ] {
            assert!(canonical_email(bad).is_err(), "{bad}");
        }
        assert!(canonical_email(&format!("{}@b.com", "a".repeat(65))).is_err());
    }

    #[test]
    fn rooms() {
        assert_eq!(canonical_room("General").unwrap(), "general");
        for bad in ["", "#", "-x", "a/b", "ß", &"x".repeat(33)] {
            assert!(canonical_room(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names() {
        assert_eq!(canonical_display_name("a\n\nb").unwrap().as_deref(), Some("a b"));
        assert!(canonical_display_name(&"n".repeat(65)).is_err());
        assert_eq!(display_label("a@b.co", Some("Ann")), "Ann (a@b.co)");
        assert_eq!(display_label("a@b.co", None), "a@b.co");
    }

    #[test]
    fn pasted_tokens() {
        assert_eq!(token_from_paste("http://h/auth/verify?token=t0k#frag"), Some("t0k"));
        assert_eq!(token_from_paste("http://h/auth/verify?token="), None);
        assert_eq!(token_from_paste("<script>"), None);
        assert_eq!(token_from_paste(&"a".repeat(129)), None);
    }
}
