//! Whole screens of `roomz chat`, drawn on ratatui's `TestBackend` and compared with the
//! snapshots in `snapshots/` (review changes with `cargo insta review`).

use std::time::{Duration, Instant};

use ratatui::Terminal;
use ratatui::backend::TestBackend;
use roomz::client::{ClientError, ConnectionState, Event as ClientEvent};
use roomz::protocol::Message;
use roomz::tui::state::{LoginStep, Screen, State};
use roomz::tui::update::{Event, update};
use roomz::tui::view;
use unicode_width::UnicodeWidthStr;

use super::support::{ME, T0, connected, message, room, state};

/// Draws the state at `width` x `height` and returns the screen as text, one quoted row
/// per line. A wide character's second cell must be left blank: anything else there would
/// be drawn over, so it fails the test.
fn screen(state: &mut State, width: u16, height: u16, now: Instant) -> String {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    let mut size = state.view;
    terminal.draw(|frame| size = view::draw(frame, state, now)).unwrap();
    state.view = size;
    let buffer = terminal.backend().buffer();
    let mut text = String::new();
    for (y, row) in buffer.content().chunks(usize::from(width)).enumerate() {
        text.push('"');
        let mut covered = 0;
        for (x, cell) in row.iter().enumerate() {
            if covered > 0 {
                assert!(
                    cell.symbol().trim().is_empty(),
                    "({x}, {y}) under a wide character holds {:?}",
                    cell.symbol()
                );
                covered -= 1;
                continue;
            }
            text.push_str(cell.symbol());
            covered = cell.symbol().width().saturating_sub(1);
        }
        text.push_str("\"\n");
    }
    text
}

fn deliver(state: &mut State, message: Message) {
    update(state, Event::Client(ClientEvent::Message(message)), Instant::now());
}

/// A lively main screen: three rooms, names, an action, a mention, wide characters.
fn busy() -> State {
    let (mut s, _) = connected(&[room("general", 4, 2), room("ops", 7, 4), room("rust", 1, 0)]);
    update(
        &mut s,
        Event::Client(ClientEvent::Name {
            email: "bob@example.com".into(),
            name: Some("Bob Builder".into()),
        }),
        Instant::now(),
    );
    let history = [
        message("general", 1, "bob@example.com", "morning! the deploy went fine"),
        message("general", 2, ME, "great, thanks"),
        message("general", 3, "carol@example.com", "/me brings coffee ☕"),
        message(
            "general",
            4,
            "bob@example.com",
            "@alice can you look at the 日本語 translation? It wraps over more than one line on a terminal this wide.",
        ),
    ];
    let page = roomz::client::HistoryPage { messages: history.to_vec(), more: false };
    update(&mut s, Event::History { room: "general".into(), result: Ok(page) }, Instant::now());
    deliver(&mut s, message("rust", 1, "bob@example.com", "@alice ping"));
    s
}

#[test]
fn login_screens() {
    let mut s = state();
    s.login(None);
    s.editor.set("alice@exa");
    insta::assert_snapshot!("login_email", screen(&mut s, 80, 16, Instant::now()));
    let Screen::Login(login) = &mut s.screen else { panic!() };
    login.step = LoginStep::Token { email: ME.into() };
    login.error = Some("That token is wrong, expired or already used. Paste it again, or press Esc to ask for a new link.".into());
    s.editor.clear();
    insta::assert_snapshot!("login_token_error", screen(&mut s, 80, 16, Instant::now()));
}

/// Draws a login screen and returns its rows and where the cursor is.
fn login_at(state: &State, width: u16, height: u16) -> (Vec<String>, (u16, u16), bool) {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    terminal.draw(|frame| _ = view::draw(frame, state, Instant::now())).unwrap();
    let backend = terminal.backend();
    let rows = backend
        .buffer()
        .content()
        .chunks(usize::from(width))
        .map(|row| row.iter().map(|c| c.symbol()).collect::<String>())
        .collect();
    let at = backend.cursor_position();
    (rows, (at.x, at.y), backend.cursor_visible())
}

#[test]
fn the_login_field_and_its_error_show_at_any_size() {
    let mut s = state();
    let long_error = "Cannot reach the server at http://127.0.0.1:8000: connection refused. \
                      Check the address, or start the server with roomz serve.";
    s.login(Some(long_error.into()));
    s.editor.set("alice@example.com");
    for (width, height) in [(80, 16), (40, 12), (30, 8), (20, 5), (20, 2)] {
        let (rows, (x, y), visible) = login_at(&s, width, height);
        let field = rows.iter().position(|r| r.contains("Email:"));
        let field = field.unwrap_or_else(|| panic!("{width}x{height}: no field in {rows:#?}"));
        assert!(visible, "{width}x{height}: no cursor");
        assert_eq!(usize::from(y), field, "{width}x{height}: the cursor is off the field");
        assert!(rows[field][usize::from(x)..].trim().is_empty(), "{width}x{height}: {rows:#?}");
        if height >= 8 {
            let all = rows.concat();
            assert!(all.contains("roomz serve."), "{width}x{height}: the error is cut: {rows:#?}");
        }
    }
    let (rows, _, _) = login_at(&s, 80, 16);
    assert!(rows.iter().any(|r| r.contains("Enter: send the link")), "{rows:#?}");
}

#[test]
fn the_connecting_screen_says_what_to_do() {
    let mut s = state();
    s.screen = Screen::Connecting {
        error: Some(
            "Cannot reach the server at http://127.0.0.1:8000: connection refused. Check the \
             address (--server, ROOMZ_SERVER or server_url), or start the server."
                .into(),
        ),
    };
    insta::assert_snapshot!("connecting_error", screen(&mut s, 60, 12, Instant::now()));
}

#[test]
fn main_screen() {
    let mut s = busy();
    insta::assert_snapshot!("main", screen(&mut s, 100, 16, Instant::now()));
}

#[test]
fn days_are_separated_and_new_messages_marked() {
    const DAY: i64 = 24 * 3600 * 1000;
    let (mut s, _) = connected(&[room("general", 4, 2)]);
    let mut history = [
        message("general", 1, "bob@example.com", "last thing on Thursday"),
        message("general", 2, ME, "see you tomorrow"),
        message("general", 3, "bob@example.com", "first thing on Friday"),
        message("general", 4, "carol@example.com", "and on Saturday"),
    ];
    history[2].ts += DAY;
    history[3].ts += 2 * DAY;
    let page = roomz::client::HistoryPage { messages: history.to_vec(), more: false };
    update(&mut s, Event::History { room: "general".into(), result: Ok(page) }, Instant::now());
    insta::assert_snapshot!("days", screen(&mut s, 70, 12, Instant::now()));
}

#[test]
fn narrow_and_tiny_terminals() {
    let mut s = busy();
    insta::assert_snapshot!("narrow", screen(&mut s, 40, 14, Instant::now()));
    insta::assert_snapshot!("tiny", screen(&mut s, 20, 5, Instant::now()));
    // Any size at all draws without a panic, the help on top too.
    for (width, height) in [(1, 1), (2, 1), (1, 3), (5, 2), (10, 3), (300, 2), (3, 100)] {
        screen(&mut s, width, height, Instant::now());
        s.help = true;
        screen(&mut s, width, height, Instant::now());
        s.help = false;
    }
    let mut login = state();
    login.login(Some("an error that is long enough to need wrapping on a small screen".into()));
    for (width, height) in [(1, 1), (8, 4), (20, 5)] {
        screen(&mut login, width, height, Instant::now());
    }
}

#[test]
fn resizing_while_scrolled_never_breaks() {
    let mut s = busy();
    for i in 5..300 {
        deliver(
            &mut s,
            message("general", i, "bob@example.com", &format!("line {i} with some words to wrap")),
        );
    }
    screen(&mut s, 100, 16, Instant::now());
    for _ in 0..5 {
        update(&mut s, super::support::key(crossterm::event::KeyCode::PageUp), Instant::now());
    }
    for (width, height) in [(30, 10), (200, 50), (12, 4), (100, 16)] {
        let text = screen(&mut s, width, height, Instant::now());
        assert!(text.lines().count() == usize::from(height));
        update(&mut s, super::support::key(crossterm::event::KeyCode::PageDown), Instant::now());
    }
}

#[test]
fn reconnecting_with_unsent_messages() {
    let mut s = busy();
    let now = Instant::now();
    let reconnecting =
        ConnectionState::Reconnecting { attempt: 2, delay: Duration::from_millis(3500) };
    update(&mut s, Event::Client(ClientEvent::Connection(reconnecting)), now);
    for text in ["are you there?", "hello?"] {
        s.editor.set(text);
        update(&mut s, super::support::key(crossterm::event::KeyCode::Enter), now);
    }
    insta::assert_snapshot!("reconnecting", screen(&mut s, 100, 10, now));
}

#[test]
fn help_overlay() {
    let mut s = busy();
    s.help = true;
    insta::assert_snapshot!("help", screen(&mut s, 80, 30, Instant::now()));
}

#[test]
fn hostile_text_never_reaches_the_terminal() {
    let (mut s, _) = connected(&[room("general", 0, 0), room("ev\u{1b}[2Jil\u{202e}", 0, 0)]);
    let hostile = [
        "\u{1b}]0;pwned\u{7}title",
        "\u{1b}[2J\u{1b}[Hclear",
        "\u{9b}31mcsi",
        "\u{202e}evil\u{2066}isolate",
        "bell\u{7}\u{7}",
        "tab\there",
    ];
    for (i, text) in hostile.iter().enumerate() {
        let mut m = message("general", i as u64 + 1, "mallory@example.com", text);
        m.name = Some(format!("Mal\u{1b}[31m\u{202e}lory{i}"));
        deliver(&mut s, m);
    }
    // The status bar shows our own name and the reason the client went offline.
    s.me = Some((ME.into(), Some("Ali\u{202e}ce".into())));
    let said = "\u{202e}no\u{2066}".to_owned();
    let offline = ConnectionState::GaveUp { error: ClientError::Protocol(said) };
    update(&mut s, Event::Client(ClientEvent::Connection(offline)), Instant::now());
    // A member list and a notice carry untrusted names and text too.
    let members = vec![roomz::protocol::Member {
        email: "eve@example.com".into(),
        name: Some("Who\u{1b}]8;;http://x\u{7}ami\u{2067}".into()),
        online: true,
    }];
    let answer = Event::Members { room: "general".into(), result: Ok(members), at: T0 };
    update(&mut s, answer, Instant::now());
    s.say("notice \u{1b}[5mblink\u{9b}", true, Instant::now());
    let mut terminal = Terminal::new(TestBackend::new(100, 20)).unwrap();
    terminal
        .draw(|frame| {
            view::draw(frame, &s, Instant::now());
        })
        .unwrap();
    for cell in terminal.backend().buffer().content() {
        let symbol = cell.symbol();
        assert!(
            !symbol.chars().any(roomz::protocol::text::is_unsafe_char),
            "an unsafe character reached a cell: {symbol:?}"
        );
    }
    let text = terminal.backend().to_string();
    assert!(
        text.contains("title") && text.contains("isolate") && text.contains("Mal[31mlory0"),
        "{text}"
    );
    assert!(
        text.contains("Alice (alice@example.com)") && text.contains("from the server: no"),
        "{text}"
    );
    assert!(text.contains("#ev[2Jil") && text.contains("notice [5mblink"), "{text}");
    assert!(text.contains("Who]8;;http://xami (eve@example.com)"), "{text}");
}

/// The cell where `needle` starts on the screen.
fn find(terminal: &Terminal<TestBackend>, needle: &str) -> ratatui::buffer::Cell {
    let buffer = terminal.backend().buffer();
    let width = usize::from(buffer.area.width);
    for (y, row) in buffer.content().chunks(width).enumerate() {
        let text: String = row.iter().map(|c| c.symbol()).collect();
        if let Some(at) = text.find(needle) {
            let x = text[..at].chars().count();
            return buffer[(x as u16, y as u16)].clone();
        }
    }
    panic!("{needle:?} is not on the screen");
}

#[test]
fn colours_mark_the_current_room_mentions_and_authors() {
    use ratatui::style::{Color, Modifier};
    let mut s = busy();
    let draw = |s: &State| {
        let mut terminal = Terminal::new(TestBackend::new(100, 16)).unwrap();
        terminal.draw(|frame| _ = view::draw(frame, s, Instant::now())).unwrap();
        terminal
    };
    let terminal = draw(&s);
    let current = find(&terminal, "#general");
    assert_eq!((current.fg, current.bg), (Color::Black, Color::Cyan));
    let unread = find(&terminal, "#ops");
    assert!(unread.modifier.contains(Modifier::BOLD) && unread.bg == Color::Reset);
    let mention = find(&terminal, "@alice can you");
    assert_eq!(mention.fg, Color::Yellow, "a mention is in the mention colour");
    let plain = find(&terminal, "morning!");
    assert_eq!(plain.fg, Color::Reset);
    // Author colours are a fixed hash of the email: the same in every run and build.
    assert_eq!(
        find(&terminal, "Bob Builder").fg,
        roomz::tui::render::author_color("bob@example.com")
    );
    assert_eq!(roomz::tui::render::author_color("bob@example.com"), Color::Green);
    assert_eq!(roomz::tui::render::author_color("carol@example.com"), Color::LightGreen);

    // Without colours, the current room is in reverse video, unlike an unread one.
    s.settings.palette.enabled = false;
    let terminal = draw(&s);
    let current = find(&terminal, "#general");
    assert!(current.modifier.contains(Modifier::REVERSED), "{current:?}");
    assert_eq!((current.fg, current.bg), (Color::Reset, Color::Reset));
    assert!(!find(&terminal, "#ops").modifier.contains(Modifier::REVERSED));
    assert_eq!(find(&terminal, "@alice can you").fg, Color::Reset);
}

#[test]
fn a_long_room_list_keeps_the_current_room_in_view() {
    let names: Vec<String> = (0..30).map(|i| format!("room{i:02}")).collect();
    let rooms: Vec<_> = names.iter().map(|n| room(n, 0, 0)).collect();
    let (mut s, _) = connected(&rooms);
    s.current = 25;
    let text = screen(&mut s, 80, 12, Instant::now());
    assert!(text.contains("#room25"), "{text}");
    assert!(!text.contains("#room00"), "{text}");
}
