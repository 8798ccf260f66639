//! Drawing benchmark of `roomz chat`: the time to draw a whole frame (at the newest
//! messages, in the middle of the room and at its start), to handle a PgUp, a typed key
//! (drawn) and an arriving message (drawn), with 10, 1,000 and 100,000 messages in the room.
//! The view wraps only the messages it shows, so each should cost the same whatever the size
//! of the room: the last line gives the ratio of the costs at 100,000 and at 10.
//!
//! `cargo bench --bench tui`

use std::hint::black_box;
use std::time::{Duration, Instant};

use chrono::FixedOffset;
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use roomz::client::Event as ClientEvent;
use roomz::protocol::{Message, RoomSummary};
use roomz::tui::settings::Settings;
use roomz::tui::state::{Key, Scroll, State, Zone};
use roomz::tui::update::{Event, update};
use roomz::tui::view;

const PARAGRAPH: &str =
    "a line of chat long enough to wrap on a terminal of the usual width, with some 日本語 too; ";
const WIDTH: u16 = 120;
const HEIGHT: u16 = 40;

fn state_with(messages: u64) -> State {
    let zone = Zone::Fixed(FixedOffset::east_opt(0).expect("UTC"));
    let mut state = State::new("http://127.0.0.1:8000".into(), Settings::default(), zone);
    let room = RoomSummary {
        name: "general".into(),
        members: 50,
        last_seq: messages,
        last_read: messages,
        unread: 0,
    };
    let welcome =
        ClientEvent::Welcome { email: "me@example.com".into(), name: None, rooms: vec![room] };
    update(&mut state, Event::Client(welcome), Instant::now());
    let log = &mut state.rooms[0].log;
    for seq in 1..=messages {
        log.insert(Message {
            room: "general".into(),
            seq,
            id: format!("m{seq}"),
            author: format!("user{}@example.com", seq % 37),
            name: (seq % 3 == 0).then(|| format!("User {}", seq % 37)),
            // Five lines or so each: even 10 messages fill the screen, so every room size
            // draws the same amount and only the size of the room differs.
            text: format!("message {seq}: {}", PARAGRAPH.repeat(5)),
            ts: 1_796_290_860_000 + seq as i64 * 7_000,
        });
    }
    state.view = (WIDTH - 20, HEIGHT - 3);
    state
}

fn per_iteration(iterations: u32, mut work: impl FnMut()) -> Duration {
    for _ in 0..iterations / 10 {
        work();
    }
    let started = Instant::now();
    for _ in 0..iterations {
        work();
    }
    started.elapsed() / iterations
}

fn draw(terminal: &mut Terminal<TestBackend>, state: &State, now: Instant) {
    terminal
        .draw(|f| {
            black_box(view::draw(f, state, now));
        })
        .expect("draw");
}

fn main() {
    let mut terminal = Terminal::new(TestBackend::new(WIDTH, HEIGHT)).expect("test backend");
    println!("roomz chat, {WIDTH}x{HEIGHT} terminal, one room");
    let mut costs = Vec::new();
    for messages in [10, 1_000, 100_000] {
        let mut state = state_with(messages);
        let now = Instant::now();
        let frame = per_iteration(500, || draw(&mut terminal, &state, now));

        // Scrolled to the middle of the room, and to its oldest message.
        let middle = Key { seq: messages / 2, sub: 0 };
        state.rooms[0].scroll = Scroll::At { key: middle, hidden: 0 };
        let frame_middle = per_iteration(500, || draw(&mut terminal, &state, now));
        state.rooms[0].scroll = Scroll::Top;
        let frame_top = per_iteration(500, || draw(&mut terminal, &state, now));
        state.rooms[0].scroll = Scroll::Bottom;

        let page_up = KeyEvent::new(KeyCode::PageUp, KeyModifiers::NONE);
        let page_down = KeyEvent::new(KeyCode::PageDown, KeyModifiers::NONE);
        let scroll = per_iteration(500, || {
            black_box(update(&mut state, Event::Key(page_up), now));
            black_box(update(&mut state, Event::Key(page_down), now));
        }) / 2;
        // A key typed and the frame drawn again; the draft stays one line long.
        let key = KeyEvent::new(KeyCode::Char('x'), KeyModifiers::NONE);
        let typing = per_iteration(500, || {
            if state.editor.text().len() >= 40 {
                state.editor.clear();
            }
            black_box(update(&mut state, Event::Key(key), now));
            draw(&mut terminal, &state, now);
        });
        state.editor.clear();

        // A message arrives and the frame is drawn again, as in a busy room.
        let mut next = messages;
        let arrival = per_iteration(500, || {
            next += 1;
            let message = Message {
                room: "general".into(),
                seq: next,
                id: format!("m{next}"),
                author: "someone@example.com".into(),
                name: None,
                text: "a new message arrives".into(),
                ts: 1_796_290_860_000 + next as i64 * 7_000,
            };
            black_box(update(&mut state, Event::Client(ClientEvent::Message(message)), now));
            draw(&mut terminal, &state, now);
        });
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        println!(
            "  {messages:>7} messages: draw a frame {:>6.1} us (middle {:>6.1}, top {:>6.1}), \
             PgUp/PgDn {:>6.1} us, a key typed and drawn {:>6.1} us, a message in and drawn \
             {:>6.1} us",
            us(frame),
            us(frame_middle),
            us(frame_top),
            us(scroll),
            us(typing),
            us(arrival),
        );
        costs.push([frame, frame_middle, frame_top, scroll, typing, arrival]);
    }
    if let (Some(small), Some(large)) = (costs.first(), costs.last()) {
        let ratio: Vec<String> = small
            .iter()
            .zip(large)
            .map(|(s, l)| format!("{:.2}", l.as_secs_f64() / s.as_secs_f64()))
            .collect();
        println!(
            "  100,000 vs 10 messages (frame, middle, top, PgUp/PgDn, key, message): {}",
            ratio.join(", ")
        );
    }
}
