//! The chat's behaviour as pure state changes: event in, state and effects out.

use std::time::{Duration, Instant};

use crossterm::event::KeyCode;
use roomz::client::{ClientError, ConnectionState, Event as ClientEvent, HistoryPage, Sent};
use roomz::protocol::ErrorCode;
use roomz::tui::state::{Link, LoginStep, Screen, Scroll};
use roomz::tui::update::{Effect, Event, update};

use super::support::{ME, T0, alt, connected, ctrl, key, message, room, state, type_text};

#[test]
fn the_login_journey() {
    let mut s = state();
    s.login(None);
    type_text(&mut s, "not an address");
    assert!(update(&mut s, key(KeyCode::Enter), Instant::now()).is_empty());
    let Screen::Login(login) = &s.screen else { panic!() };
    assert!(login.error.as_deref().is_some_and(|e| e.contains("not a valid email address")));

    update(&mut s, ctrl('u'), Instant::now());
    type_text(&mut s, "Alice@Example.com");
    let effects = update(&mut s, key(KeyCode::Enter), Instant::now());
    assert_eq!(effects, [Effect::RequestLink(ME.into())]);
    update(&mut s, Event::LinkRequested { email: ME.into(), result: Ok(()) }, Instant::now());
    let Screen::Login(login) = &s.screen else { panic!() };
    assert_eq!(login.step, LoginStep::Token { email: ME.into() });
    assert!(s.editor.is_empty());

    update(&mut s, Event::Paste("http://h/auth/verify?token=abc-DEF_1\n".into()), Instant::now());
    assert_eq!(
        s.editor.text(),
        "http://h/auth/verify?token=abc-DEF_1",
        "a paste on the login screen is one line"
    );
    let effects = update(&mut s, key(KeyCode::Enter), Instant::now());
    assert_eq!(effects, [Effect::Login("abc-DEF_1".into())]);
    update(&mut s, Event::LoggedIn(Err(ClientError::InvalidToken)), Instant::now());
    let Screen::Login(login) = &s.screen else { panic!() };
    assert!(login.error.as_deref().is_some_and(|e| e.contains("wrong, expired or already used")));

    let effects = update(&mut s, key(KeyCode::Enter), Instant::now());
    assert_eq!(effects, [Effect::Login("abc-DEF_1".into())]);
    let effects = update(&mut s, Event::LoggedIn(Ok(())), Instant::now());
    assert_eq!(effects, [Effect::Connect]);
    assert_eq!(s.screen, Screen::Connecting { error: None });

    let effects = update(
        &mut s,
        Event::Client(ClientEvent::Welcome {
            email: ME.into(),
            name: None,
            rooms: vec![room("general", 5, 5)],
        }),
        Instant::now(),
    );
    assert_eq!(s.screen, Screen::Main);
    assert_eq!(effects, [Effect::History { room: "general".into(), before: None }]);
}

#[test]
fn login_errors_say_what_to_do() {
    let mut s = state();
    s.login(None);
    type_text(&mut s, ME);
    update(&mut s, key(KeyCode::Enter), Instant::now());
    let limited = ClientError::RateLimited { retry_after: Duration::from_secs(1800) };
    update(&mut s, Event::LinkRequested { email: ME.into(), result: Err(limited) }, Instant::now());
    let Screen::Login(login) = &s.screen else { panic!() };
    assert_eq!(
        login.error.as_deref(),
        Some("Too many login links were asked for. Try again in 30 minutes.")
    );
    let soon = ClientError::RateLimited { retry_after: Duration::from_secs(40) };
    update(&mut s, key(KeyCode::Enter), Instant::now());
    update(&mut s, Event::LinkRequested { email: ME.into(), result: Err(soon) }, Instant::now());
    let Screen::Login(login) = &s.screen else { panic!() };
    assert_eq!(
        login.error.as_deref(),
        Some("Too many login links were asked for. Try again in 40 s.")
    );
    let down = ClientError::Unreachable { url: "http://x:1/".into(), reason: "refused".into() };
    update(&mut s, key(KeyCode::Enter), Instant::now());
    update(&mut s, Event::LinkRequested { email: ME.into(), result: Err(down) }, Instant::now());
    let Screen::Login(login) = &s.screen else { panic!() };
    assert!(
        login
            .error
            .as_deref()
            .is_some_and(|e| e.contains("Cannot reach the server at http://x:1/"))
    );
    // Esc on the token step goes back to the address.
    update(&mut s, Event::LinkRequested { email: ME.into(), result: Ok(()) }, Instant::now());
    update(&mut s, key(KeyCode::Esc), Instant::now());
    let Screen::Login(login) = &s.screen else { panic!() };
    assert_eq!((login.step.clone(), s.editor.text()), (LoginStep::Email, ME));
}

#[test]
fn a_server_that_cannot_be_reached_at_start_can_be_tried_again() {
    let mut s = state();
    let down =
        ClientError::Unreachable { url: "http://127.0.0.1:8000/".into(), reason: "refused".into() };
    update(&mut s, Event::Connected(Err(down)), Instant::now());
    let Screen::Connecting { error: Some(error) } = &s.screen else { panic!("{:?}", s.screen) };
    assert!(error.starts_with("Cannot reach the server at http://127.0.0.1:8000/"));
    assert_eq!(update(&mut s, key(KeyCode::Enter), Instant::now()), [Effect::Connect]);
    assert_eq!(s.screen, Screen::Connecting { error: None });
}

#[test]
fn an_expired_session_goes_back_to_the_login() {
    let (mut s, _) = connected(&[room("general", 0, 0)]);
    let gave_up = ConnectionState::GaveUp { error: ClientError::SessionExpired };
    update(&mut s, Event::Client(ClientEvent::Connection(gave_up)), Instant::now());
    let Screen::Login(login) = &s.screen else { panic!("{:?}", s.screen) };
    assert_eq!(login.error.as_deref(), Some("Your session expired. Log in with a new link."));
}

#[test]
fn sending_messages_and_failures() {
    let (mut s, _) = connected(&[room("general", 0, 0)]);
    type_text(&mut s, "hello");
    let effects = update(&mut s, key(KeyCode::Enter), Instant::now());
    assert_eq!(effects, [Effect::Send { local: 1, room: "general".into(), text: "hello".into() }]);
    assert_eq!(s.unsent.len(), 1);
    let sent = Sent { id: "x".into(), room: "general".into(), seq: 1, ts: 0 };
    update(&mut s, Event::Sent { local: 1, result: Ok(sent) }, Instant::now());
    assert!(s.unsent.is_empty());

    type_text(&mut s, "too long");
    update(&mut s, key(KeyCode::Enter), Instant::now());
    let refused =
        ClientError::Rejected { code: ErrorCode::MessageTooLong, message: "limit is 10000".into() };
    update(&mut s, Event::Sent { local: 2, result: Err(refused) }, Instant::now());
    assert_eq!(s.editor.text(), "too long", "a refused message comes back to the input");
    assert!(s.notice.as_ref().is_some_and(|n| n.error && n.text.contains("limit is 10000")));

    // Alt-Enter makes a new line; Up brings back what was sent.
    s.editor.clear();
    type_text(&mut s, "one");
    update(&mut s, alt(KeyCode::Enter), Instant::now());
    type_text(&mut s, "two");
    assert_eq!(s.editor.text(), "one\ntwo");
    s.editor.clear();
    update(&mut s, key(KeyCode::Up), Instant::now());
    assert_eq!(s.editor.text(), "too long");
}

#[test]
fn commands() {
    let (mut s, _) = connected(&[room("general", 0, 0)]);
    let run = |s: &mut roomz::tui::state::State, line: &str| {
        s.editor.set(line);
        update(s, key(KeyCode::Enter), Instant::now())
    };
    assert!(run(&mut s, "/frobnicate").is_empty());
    assert!(
        s.notice
            .as_ref()
            .is_some_and(|n| n.text.starts_with("unknown command /frobnicate: nothing was sent"))
    );
    assert_eq!(run(&mut s, "/join #Rust"), [Effect::Join("rust".into())]);
    let effects = update(&mut s, Event::Joined(Ok(room("rust", 4, 0))), Instant::now());
    assert_eq!(s.room().unwrap().name, "rust", "a confirmed join switches to the room");
    assert_eq!(effects, [Effect::History { room: "rust".into(), before: None }]);
    assert_eq!(run(&mut s, "/who"), [Effect::Members("rust".into())]);
    assert_eq!(
        run(&mut s, "/me waves"),
        [Effect::Send { local: 1, room: "rust".into(), text: "/me waves".into() }]
    );
    assert_eq!(run(&mut s, "/name Ada"), [Effect::SetName(Some("Ada".into()))]);
    assert_eq!(run(&mut s, "/leave"), [Effect::Leave("rust".into())]);
    update(&mut s, Event::Left { room: "rust".into(), result: Ok(()) }, Instant::now());
    assert_eq!(s.room().unwrap().name, "general");
    assert!(run(&mut s, "/leave").is_empty(), "general cannot be left");
    assert_eq!(
        run(&mut s, "//etc"),
        [Effect::Send { local: 2, room: "general".into(), text: "/etc".into() }]
    );
    assert_eq!(run(&mut s, "/logout"), [Effect::Logout]);
    run(&mut s, "/help");
    assert!(s.help);
    update(&mut s, key(KeyCode::Esc), Instant::now());
    assert!(!s.help);
    assert_eq!(run(&mut s, "/quit"), [Effect::Quit]);
    assert!(s.quit);
}

#[test]
fn ctrl_c_clears_then_quits() {
    let (mut s, _) = connected(&[room("general", 0, 0)]);
    let t = Instant::now();
    type_text(&mut s, "a draft");
    assert!(update(&mut s, ctrl('c'), t).is_empty());
    assert!(s.editor.is_empty(), "the first Ctrl-C clears the draft");
    assert!(!s.quit);
    // Too late for a double press: it arms again instead.
    assert!(update(&mut s, ctrl('c'), t + Duration::from_secs(5)).is_empty());
    assert_eq!(update(&mut s, ctrl('c'), t + Duration::from_secs(6)), [Effect::Quit]);
    assert!(s.quit);
}

#[test]
fn unread_mentions_bell_and_read_markers() {
    let (mut s, _) = connected(&[room("general", 10, 10), room("ops", 2, 2), room("rust", 0, 0)]);
    let names: Vec<_> = s.rooms.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["general", "ops", "rust"]);
    let now = Instant::now();
    let effects = update(
        &mut s,
        Event::Client(ClientEvent::Message(message("ops", 3, "bob@example.com", "deploy?"))),
        now,
    );
    assert!(effects.is_empty());
    let effects = update(
        &mut s,
        Event::Client(ClientEvent::Message(message("rust", 1, "bob@example.com", "@alice look"))),
        now,
    );
    assert_eq!(effects, [Effect::Bell], "a mention rings the bell");
    let ops = &s.rooms[1];
    assert_eq!((ops.unread, ops.mentioned), (1, false));
    assert!(s.rooms[2].mentioned);

    // Alt-A goes to the mention first, and reading it sends the marker on the next tick.
    let effects = update(&mut s, alt(KeyCode::Char('a')), now);
    assert_eq!(s.room().unwrap().name, "rust");
    assert_eq!(effects, [Effect::History { room: "rust".into(), before: None }]);
    let rust = s.room().unwrap();
    assert_eq!((rust.unread, rust.mentioned, rust.marker), (0, false, Some(1)));
    assert_eq!(
        update(&mut s, Event::Tick, now),
        [Effect::MarkRead { room: "rust".into(), seq: 1 }]
    );
    assert!(update(&mut s, Event::Tick, now).is_empty(), "sent once");

    // A message in the room on screen is read at once; our own never counts.
    update(
        &mut s,
        Event::Client(ClientEvent::Message(message("rust", 2, "bob@example.com", "hi"))),
        now,
    );
    update(&mut s, Event::Client(ClientEvent::Message(message("general", 11, ME, "mine"))), now);
    assert_eq!(s.room().unwrap().unread, 0);
    assert_eq!(s.rooms[0].unread, 0);
    // Read elsewhere: another device moved the marker.
    update(&mut s, Event::Client(ClientEvent::Read { room: "ops".into(), seq: 3 }), now);
    assert_eq!(s.rooms[1].unread, 0);
    update(&mut s, alt(KeyCode::Char('1')), now);
    assert_eq!(s.room().unwrap().name, "general");
    update(&mut s, ctrl('n'), now);
    assert_eq!(s.room().unwrap().name, "ops");
    update(&mut s, ctrl('p'), now);
    update(&mut s, ctrl('p'), now);
    assert_eq!(s.room().unwrap().name, "rust", "Ctrl-P wraps around");
}

#[test]
fn scrolling_loads_older_history_at_the_top() {
    let (mut s, _) = connected(&[room("general", 1000, 1000)]);
    s.view = (60, 10);
    let page: Vec<_> = (901..=1000)
        .map(|seq| message("general", seq, "bob@example.com", &format!("n{seq}")))
        .collect();
    update(
        &mut s,
        Event::History {
            room: "general".into(),
            result: Ok(HistoryPage { messages: page, more: true }),
        },
        Instant::now(),
    );
    assert_eq!(s.room().unwrap().log.entries.len(), 100);

    update(&mut s, key(KeyCode::PageUp), Instant::now());
    assert!(matches!(s.room().unwrap().scroll, Scroll::At { .. }));
    let mut effects = Vec::new();
    for _ in 0..40 {
        effects = update(&mut s, key(KeyCode::PageUp), Instant::now());
        if !effects.is_empty() {
            break;
        }
    }
    assert_eq!(effects, [Effect::History { room: "general".into(), before: Some(901) }]);
    assert_eq!(s.room().unwrap().scroll, Scroll::Top);
    // While the page is on its way, no second request.
    assert!(update(&mut s, key(KeyCode::PageUp), Instant::now()).is_empty());

    let older: Vec<_> = (801..=900)
        .map(|seq| message("general", seq, "bob@example.com", &format!("n{seq}")))
        .collect();
    update(
        &mut s,
        Event::History {
            room: "general".into(),
            result: Ok(HistoryPage { messages: older, more: false }),
        },
        Instant::now(),
    );
    let room = s.room().unwrap();
    assert_eq!(room.log.entries.len(), 200);
    assert!(
        matches!(room.scroll, Scroll::At { key, .. } if key.seq > 901),
        "the view stays where it was"
    );

    // New messages while scrolled up count as unread; PgDn back to the bottom reads them.
    update(
        &mut s,
        Event::Client(ClientEvent::Message(message("general", 1001, "bob@example.com", "new"))),
        Instant::now(),
    );
    assert_eq!(s.room().unwrap().unread, 1);
    for _ in 0..100 {
        update(&mut s, key(KeyCode::PageDown), Instant::now());
    }
    let room = s.room().unwrap();
    assert_eq!((room.scroll, room.unread), (Scroll::Bottom, 0));
}

#[test]
fn the_connection_as_it_is() {
    let (mut s, _) = connected(&[room("general", 0, 0)]);
    let now = Instant::now();
    let reconnecting = ConnectionState::Reconnecting { attempt: 2, delay: Duration::from_secs(4) };
    update(&mut s, Event::Client(ClientEvent::Connection(reconnecting)), now);
    assert_eq!(s.link, Link::Reconnecting { attempt: 2, at: now + Duration::from_secs(4) });
    let gave_up = ConnectionState::GaveUp { error: ClientError::GaveUp { attempts: 5 } };
    update(&mut s, Event::Client(ClientEvent::Connection(gave_up)), now);
    assert!(matches!(s.link, Link::Offline { .. }));
    s.editor.set("/reconnect");
    assert_eq!(update(&mut s, key(KeyCode::Enter), now), [Effect::Connect]);
}

#[test]
fn missed_events_reload_every_room() {
    let (mut s, _) = connected(&[room("general", 3, 3), room("ops", 2, 0)]);
    update(
        &mut s,
        Event::Client(ClientEvent::Message(message("general", 4, "bob@example.com", "x"))),
        Instant::now(),
    );
    let effects = update(&mut s, Event::Client(ClientEvent::Lagged(9)), Instant::now());
    assert_eq!(effects, [Effect::Rooms, Effect::History { room: "general".into(), before: None }]);
    assert!(s.rooms.iter().all(|r| r.log.entries.is_empty() && !r.loaded));
    update(
        &mut s,
        Event::Rooms(Ok(vec![room("general", 9, 9), room("ops", 5, 0)])),
        Instant::now(),
    );
    assert_eq!(s.rooms[1].unread, 5, "the server's counts are taken again");
}

#[test]
fn writing_from_another_device_reads_the_room() {
    let (mut s, _) = connected(&[room("general", 0, 0), room("ops", 0, 0)]);
    for seq in 1..=3 {
        update(
            &mut s,
            Event::Client(ClientEvent::Message(message("ops", seq, "bob@example.com", "@alice"))),
            Instant::now(),
        );
    }
    assert_eq!((s.rooms[1].unread, s.rooms[1].mentioned), (3, true));
    update(
        &mut s,
        Event::Client(ClientEvent::Message(message("ops", 4, ME, "on it"))),
        Instant::now(),
    );
    assert_eq!((s.rooms[1].unread, s.rooms[1].mentioned), (0, false));
}

#[test]
fn a_short_room_stays_read_after_pgup() {
    let (mut s, _) = connected(&[room("general", 1, 1)]);
    s.view = (80, 20);
    update(
        &mut s,
        Event::Client(ClientEvent::Message(message("general", 2, "bob@example.com", "hi"))),
        Instant::now(),
    );
    update(&mut s, key(KeyCode::PageUp), Instant::now());
    assert_eq!(s.room().unwrap().scroll, Scroll::Bottom, "nothing to scroll: it all fits");
    update(
        &mut s,
        Event::Client(ClientEvent::Message(message("general", 3, "bob@example.com", "still here"))),
        Instant::now(),
    );
    assert_eq!(s.room().unwrap().unread, 0);
}

#[test]
fn read_markers_are_kept_for_the_way_out() {
    let (mut s, _) = connected(&[room("general", 1, 0)]);
    // Reading happened (switching in), no tick since: quitting still sends the marker.
    assert_eq!(
        roomz::tui::update::pending_reads(&mut s),
        [Effect::MarkRead { room: "general".into(), seq: 1 }]
    );
    assert!(roomz::tui::update::pending_reads(&mut s).is_empty());
}

#[test]
fn a_mention_in_loaded_history_marks_the_room() {
    let (mut s, _) = connected(&[room("general", 0, 0), room("ops", 2, 0)]);
    let page = HistoryPage {
        messages: vec![message("ops", 1, "bob@example.com", "@alice while you were out")],
        more: false,
    };
    update(&mut s, Event::History { room: "ops".into(), result: Ok(page) }, Instant::now());
    assert!(s.rooms[1].mentioned);
}

#[test]
fn a_session_that_ends_forgets_everything_of_it() {
    let (mut s, _) = connected(&[room("general", 2, 2), room("ops", 0, 0)]);
    s.editor.set("draft");
    let gave_up = ConnectionState::GaveUp { error: ClientError::AccessRevoked };
    update(&mut s, Event::Client(ClientEvent::Connection(gave_up)), Instant::now());
    assert!(matches!(s.screen, Screen::Login(_)));
    assert!(s.rooms.is_empty() && s.me.is_none() && s.editor.is_empty());
}

#[test]
fn keys_of_the_main_screen() {
    let (mut s, _) = connected(&[room("general", 0, 0)]);
    assert_eq!(update(&mut s, ctrl('l'), Instant::now()), [Effect::Redraw]);
    update(&mut s, key(KeyCode::F(1)), Instant::now());
    assert!(s.help, "F1 opens the help");
    update(&mut s, key(KeyCode::Char('x')), Instant::now());
    assert!(!s.help && s.editor.is_empty(), "any key closes it, and types nothing");

    type_text(&mut s, "hello big world");
    update(&mut s, key(KeyCode::Home), Instant::now());
    type_text(&mut s, ">");
    update(&mut s, key(KeyCode::End), Instant::now());
    type_text(&mut s, "!");
    assert_eq!(s.editor.text(), ">hello big world!");
    update(&mut s, ctrl('a'), Instant::now());
    update(&mut s, ctrl('e'), Instant::now());
    update(&mut s, ctrl('w'), Instant::now());
    assert_eq!(s.editor.text(), ">hello big ");
    update(&mut s, ctrl('u'), Instant::now());
    assert!(s.editor.is_empty());

    // A paste keeps its newlines and is sent as one message.
    update(&mut s, Event::Paste("line one\nline two".into()), Instant::now());
    let effects = update(&mut s, key(KeyCode::Enter), Instant::now());
    let sent: Vec<&str> = effects
        .iter()
        .filter_map(|e| match e {
            Effect::Send { text, .. } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(sent, ["line one\nline two"]);
}

#[test]
fn the_bell_can_be_turned_off() {
    let (mut s, _) = connected(&[room("general", 0, 0), room("ops", 0, 0)]);
    let mention = |seq| message("ops", seq, "bob@example.com", "@alice look");
    let effects = update(&mut s, Event::Client(ClientEvent::Message(mention(1))), Instant::now());
    assert!(effects.contains(&Effect::Bell), "{effects:?}");
    s.settings.bell = false;
    let effects = update(&mut s, Event::Client(ClientEvent::Message(mention(2))), Instant::now());
    assert!(!effects.contains(&Effect::Bell), "{effects:?}");
    assert!(s.rooms[1].mentioned, "the mention is still marked");
}

#[test]
fn who_lists_the_members_with_who_is_online() {
    let (mut s, _) = connected(&[room("general", 0, 0)]);
    s.editor.set("/who");
    assert_eq!(
        update(&mut s, key(KeyCode::Enter), Instant::now()),
        [Effect::Members("general".into())]
    );
    let members = vec![
        roomz::protocol::Member {
            email: "bob@example.com".into(),
            name: Some("Bob".into()),
            online: true,
        },
        roomz::protocol::Member { email: ME.into(), name: Some("Alice".into()), online: true },
        roomz::protocol::Member { email: "carol@example.com".into(), name: None, online: false },
    ];
    let answer = Event::Members { room: "general".into(), result: Ok(members), at: T0 };
    update(&mut s, answer, Instant::now());
    let notice = s.rooms[0].log.entries.values().last().map(|e| match e {
        roomz::tui::state::Entry::Notice { text, .. } => text.clone(),
        other => panic!("{other:?}"),
    });
    assert_eq!(
        notice.as_deref(),
        Some(
            "3 members in general, 2 online: Alice (alice@example.com) (online), \
             Bob (bob@example.com) (online), carol@example.com"
        )
    );
}
