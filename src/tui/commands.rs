//! Slash commands: what a line typed in `roomz chat` asks for.

/// What a submitted line means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// Nothing to do (an empty line).
    Empty,
    /// A message to send.
    Message(String),
    /// A command.
    Command(Command),
}

/// A slash command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `/name NAME` (`/name -` removes it); `None` with no argument.
    Name(Option<NameChange>),
    Join(String),
    Leave,
    Who,
    Me(String),
    Help,
    Logout,
    Quit,
    Reconnect,
    /// A known command used the wrong way: the text says how to use it.
    Usage(&'static str),
    /// Not a command: the word the user typed.
    Unknown(String),
}

/// What `/name` sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameChange {
    Set(String),
    Remove,
}

/// Every command with its help line, for `/help`.
pub const HELP: &[(&str, &str)] = &[
    ("/name NAME", "set your display name (/name - removes it)"),
    ("/join ROOM", "join a room (created if new) and switch to it"),
    ("/leave", "leave the current room"),
    ("/who", "list the members of the current room"),
    ("/me ACTION", "send an action: * You waves"),
    ("/reconnect", "connect again after the client gave up"),
    ("/logout", "forget the session on this machine"),
    ("/help", "show keys and commands (also F1)"),
    ("/quit", "leave roomz chat (also Ctrl-C twice)"),
    ("//text", "send a message that starts with /"),
];

/// Reads a submitted line.
pub fn parse(line: &str) -> Line {
    if line.trim().is_empty() {
        return Line::Empty;
    }
    let Some(rest) = line.strip_prefix('/') else {
        return Line::Message(line.to_owned());
    };
    if rest.starts_with('/') {
        return Line::Message(rest.to_owned());
    }
    let (word, argument) = match rest.split_once(char::is_whitespace) {
        Some((word, argument)) => (word, argument.trim()),
        None => (rest, ""),
    };
    let command = match (word.to_ascii_lowercase().as_str(), argument) {
        ("name" | "nick", "") => Command::Name(None),
        ("name" | "nick", "-") => Command::Name(Some(NameChange::Remove)),
        ("name" | "nick", name) => Command::Name(Some(NameChange::Set(name.to_owned()))),
        ("join" | "j", "") => Command::Usage("usage: /join ROOM"),
        ("join" | "j", room) => Command::Join(room.to_owned()),
        ("leave" | "part", _) => Command::Leave,
        ("who" | "names", _) => Command::Who,
        ("me", "") => Command::Usage("usage: /me ACTION"),
        ("me", action) => Command::Me(action.to_owned()),
        ("help" | "h" | "?", _) => Command::Help,
        ("logout", _) => Command::Logout,
        ("quit" | "exit" | "q", _) => Command::Quit,
        ("reconnect", _) => Command::Reconnect,
        _ => Command::Unknown(word.to_owned()),
    };
    Line::Command(command)
}

/// The text a `/me` action is sent as, and how it is recognised when it arrives.
pub const ACTION_PREFIX: &str = "/me ";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_commands() {
        assert_eq!(parse("  "), Line::Empty);
        assert_eq!(parse("hello /join"), Line::Message("hello /join".into()));
        assert_eq!(parse("//etc/hosts"), Line::Message("/etc/hosts".into()));
        assert_eq!(parse("/join  #rust "), Line::Command(Command::Join("#rust".into())));
        assert_eq!(parse("/JOIN"), Line::Command(Command::Usage("usage: /join ROOM")));
        assert_eq!(
            parse("/name Ada Lovelace"),
            Line::Command(Command::Name(Some(NameChange::Set("Ada Lovelace".into()))))
        );
        assert_eq!(parse("/name -"), Line::Command(Command::Name(Some(NameChange::Remove))));
        assert_eq!(parse("/me waves"), Line::Command(Command::Me("waves".into())));
        assert_eq!(parse("/frobnicate now"), Line::Command(Command::Unknown("frobnicate".into())));
        assert_eq!(parse("/quit"), Line::Command(Command::Quit));
    }
}
