//! What users can set for `roomz chat` in the `[chat]` section of `~/.roomz/config.toml`:
//! the time format, the bell, and colours. Every value is checked when the file is read, so
//! a bad value is an error that names the key, never a surprise later. A key roomz does not
//! know is ignored (a newer file still works with an older roomz) and named in the log.

use std::path::Path;

use chrono::format::StrftimeItems;
use ratatui::style::Color;
use serde::Deserialize;

use crate::client::ClientError;

/// The `[chat]` section as written.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ChatSection {
    time_format: Option<String>,
    bell: Option<bool>,
    colors: Option<bool>,
    accent: Option<String>,
    mention: Option<String>,
    muted: Option<String>,
}

/// The keys of `[chat]` this version knows.
const KNOWN_KEYS: [&str; 6] = ["time_format", "bell", "colors", "accent", "mention", "muted"];

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct File {
    chat: ChatSection,
}

/// The palette the screen is drawn with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Palette {
    /// The current room, your own name, the status of a good connection.
    pub accent: Color,
    /// Messages that mention you.
    pub mention: Color,
    /// Times, separators, hints.
    pub muted: Color,
    /// Whether to use colour at all (`colors = false` draws in the terminal's default).
    pub enabled: bool,
}

/// Colours given to authors, chosen by a hash of their email so each keeps one.
pub const AUTHOR_COLORS: [Color; 10] = [
    Color::Cyan,
    Color::Green,
    Color::Yellow,
    Color::Magenta,
    Color::Blue,
    Color::LightRed,
    Color::LightCyan,
    Color::LightGreen,
    Color::LightMagenta,
    Color::LightBlue,
];

/// The chat's settings, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// strftime format of message times (default `%H:%M`).
    pub time_format: String,
    /// Ring the terminal bell when someone mentions you (default true).
    pub bell: bool,
    pub palette: Palette,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            time_format: "%H:%M".to_owned(),
            bell: true,
            palette: Palette {
                accent: Color::Cyan,
                mention: Color::Yellow,
                muted: Color::DarkGray,
                enabled: true,
            },
        }
    }
}

impl Settings {
    /// Reads the `[chat]` section of `path` (a missing file gives the defaults).
    pub fn load(path: &Path) -> Result<Self, ClientError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => {
                return Err(ClientError::Config { path: path.to_owned(), reason: e.to_string() });
            }
        };
        Self::parse(&text).map_err(|reason| ClientError::Config { path: path.to_owned(), reason })
    }

    /// Reads the `[chat]` section of a configuration file's text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let file: File =
            toml::from_str(text).map_err(|e| e.to_string().trim_end().replace('\n', " "))?;
        let chat = file.chat;
        log_unknown_keys(text);
        let mut settings = Self::default();
        if let Some(format) = chat.time_format {
            if StrftimeItems::new(&format).parse().is_err() || format.chars().any(char::is_control)
            {
                return Err(format!(
                    "[chat] time_format {format:?} is not a valid strftime format, such as \"%H:%M\""
                ));
            }
            settings.time_format = format;
        }
        settings.bell = chat.bell.unwrap_or(settings.bell);
        settings.palette.enabled = chat.colors.unwrap_or(true);
        let color = |key: &str, value: Option<String>, default: Color| {
            match value {
            None => Ok(default),
            Some(name) => name.parse::<Color>().map_err(|_| {
                format!("[chat] {key} = {name:?} is not a colour: use a name (cyan, light-red, ...), an index (0-255) or #rrggbb")
            }),
        }
        };
        settings.palette.accent = color("accent", chat.accent, settings.palette.accent)?;
        settings.palette.mention = color("mention", chat.mention, settings.palette.mention)?;
        settings.palette.muted = color("muted", chat.muted, settings.palette.muted)?;
        Ok(settings)
    }
}

/// Names in the log the `[chat]` keys this version ignores. (Read apart from the settings:
/// collecting them there would make serde lose the key a type error belongs to.)
fn log_unknown_keys(text: &str) {
    let Ok(table) = text.parse::<toml::Table>() else {
        return;
    };
    let Some(chat) = table.get("chat").and_then(toml::Value::as_table) else {
        return;
    };
    for key in chat.keys().filter(|key| !KNOWN_KEYS.contains(&key.as_str())) {
        tracing::warn!(key, "chat: [chat] has no such setting; it is ignored");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_file_is_valid() {
        let example = include_str!("../../config.example.toml");
        let settings = Settings::parse(example).expect("config.example.toml parses");
        assert_eq!(settings.palette.muted, Color::DarkGray);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, example).unwrap();
        let client = crate::client::config::load(&path).unwrap();
        // Commented out: a copied file must not name everyone Alice.
        assert_eq!(client.display_name, None);
        assert_eq!(client.server_url.as_deref(), Some("http://127.0.0.1:8000"));
        let uncommented = example.replace("# display_name", "display_name");
        std::fs::write(&path, uncommented).unwrap();
        let client = crate::client::config::load(&path).unwrap();
        assert_eq!(client.display_name.as_deref(), Some("Alice"));
    }

    #[test]
    fn reads_checks_and_defaults() {
        assert_eq!(Settings::parse("").unwrap(), Settings::default());
        let s = Settings::parse(
            "[chat]\ntime_format = \"%H:%M:%S\"\nbell = false\naccent = \"#ff8800\"\n",
        )
        .unwrap();
        assert_eq!((s.time_format.as_str(), s.bell), ("%H:%M:%S", false));
        assert_eq!(s.palette.accent, Color::Rgb(0xff, 0x88, 0x00));
        assert!(
            Settings::parse("[chat]\ntime_format = \"%Q\"\n").unwrap_err().contains("time_format")
        );
        assert!(
            Settings::parse("[chat]\nmention = \"sparkly\"\n").unwrap_err().contains("mention")
        );
        assert!(Settings::parse("[chat]\nbell = \"yes\"\n").unwrap_err().contains("bell"));
        let unknown = Settings::parse("[chat]\ncolour = false\nbell = false\n").unwrap();
        assert!(!unknown.bell, "an unknown key is ignored, the rest is read");
    }
}
