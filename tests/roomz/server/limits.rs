//! Bad input and limits on the WebSocket: every bad frame is answered and the connection
//! stays; rates and sizes are enforced; a client that stops reading is dropped without
//! slowing anyone else, and catches up when it returns.

use std::collections::HashMap;

use roomz::protocol::{ClientFrame, ErrorCode, ServerFrame};
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::support::{ALICE, BOB, Client, TestServer};

async fn still_answers(client: &mut Client) {
    let pong = client.request(|req| ClientFrame::Ping { req }).await;
    assert!(matches!(pong, ServerFrame::Pong { .. }), "{pong:?}");
}

#[tokio::test]
async fn bad_frames_get_errors_and_the_connection_stays() {
    let server = TestServer::start().await;
    let session = server.login(ALICE).await;
    let mut alice = Client::open(&server.ws_url(), &session).await;

    alice.send(&ClientFrame::Rooms { req: Some(1) }).await;
    let early = alice.error().await;
    assert_eq!((early.code, early.req), (ErrorCode::HelloRequired, Some(1)));
    alice.send(&ClientFrame::Hello { v: 1, since: Default::default() }).await;
    alice.wait_for(|f| matches!(f, ServerFrame::Synced { .. }).then_some(())).await;

    let cases: [(&str, ErrorCode, Option<u64>); 6] = [
        ("not json", ErrorCode::BadFrame, None),
        ("[1,2,3]", ErrorCode::BadFrame, None),
        (r#"{"type":"fly","req":7}"#, ErrorCode::BadFrame, Some(7)),
        (r#"{"type":"join","req":8}"#, ErrorCode::BadFrame, Some(8)),
        (
            r#"{"type":"history","req":9,"room":"general","before":"x"}"#,
            ErrorCode::BadFrame,
            Some(9),
        ),
        (r#"{"type":"hello","v":1}"#, ErrorCode::BadFrame, None),
    ];
    for (raw, code, req) in cases {
        alice.send_raw(raw).await;
        let error = alice.error().await;
        assert_eq!((error.code, error.req), (code, req), "{raw}: {}", error.message);
        assert!(!error.message.is_empty());
    }
    alice.send_ws(WsMessage::binary(vec![1, 2, 3])).await.unwrap();
    assert_eq!(alice.error().await.code, ErrorCode::BadFrame);

    let send =
        |id: &str, text: String| ClientFrame::Send { room: "general".into(), id: id.into(), text };
    alice.send(&send("long", "x".repeat(10_001))).await;
    let error = alice.error().await;
    assert_eq!((error.code, error.id.as_deref()), (ErrorCode::MessageTooLong, Some("long")));
    alice.send(&send("bad id!", "hi".into())).await;
    assert_eq!(alice.error().await.code, ErrorCode::InvalidId);
    alice.send(&send("big", "y".repeat(70_000))).await;
    let error = alice.error().await;
    assert_eq!((error.code, error.id.as_deref()), (ErrorCode::FrameTooLarge, Some("big")));
    alice.send(&ClientFrame::SetName { req: Some(3), name: Some("n".repeat(65)) }).await;
    assert_eq!(alice.error().await.code, ErrorCode::InvalidName);
    still_answers(&mut alice).await;
    alice.post("general", "x".repeat(10_000).as_str()).await;

    // Beyond the transport's hard cap the connection ends, as it must.
    let _ = alice.send_ws(WsMessage::text("z".repeat(2 << 20))).await;
    let end = alice.closed().await;
    assert!(end.starts_with("closed") || end.starts_with("error") || end == "ended", "{end}");
}

#[tokio::test]
async fn a_wrong_protocol_version_is_refused() {
    let server = TestServer::start().await;
    let session = server.login(ALICE).await;
    let mut alice = Client::open(&server.ws_url(), &session).await;
    alice.send(&ClientFrame::Hello { v: 99, since: Default::default() }).await;
    assert_eq!(alice.error().await.code, ErrorCode::UnsupportedVersion);
    assert_eq!(alice.closed().await, "closed: 4002");
}

#[tokio::test]
async fn the_message_rate_is_per_user() {
    let server =
        TestServer::start_with(&[("ROOMZ_MESSAGES_PER_SECOND", "1"), ("ROOMZ_MESSAGE_BURST", "3")])
            .await;
    let mut alice = server.connect(ALICE).await;
    let mut phone = server.connect(ALICE).await;
    let mut bob = server.connect(BOB).await;
    for i in 0..3 {
        alice.post("general", &format!("ok {i}")).await;
    }
    phone
        .send(&ClientFrame::Send {
            room: "general".into(),
            id: "over".into(),
            text: "one more".into(),
        })
        .await;
    let limited = phone.error().await;
    assert_eq!((limited.code, limited.id.as_deref()), (ErrorCode::RateLimited, Some("over")));
    assert!(limited.retry_after_ms.is_some_and(|ms| ms > 0 && ms <= 1000), "{limited:?}");
    bob.post("general", "bob is not limited").await;
    let limits = match alice.welcome.as_ref().unwrap() {
        ServerFrame::Welcome { limits, .. } => *limits,
        _ => unreachable!(),
    };
    assert_eq!((limits.messages_per_second, limits.message_burst), (1, 3));
}

#[tokio::test]
async fn a_send_turned_away_for_the_rate_holds_back_the_sends_after_it() {
    let server = TestServer::start_with(&[
        ("ROOMZ_MESSAGES_PER_SECOND", "10"),
        ("ROOMZ_MESSAGE_BURST", "1"),
    ])
    .await;
    let mut alice = server.connect(ALICE).await;
    let send = |id: &str| ClientFrame::Send {
        room: "general".into(),
        id: id.into(),
        text: format!("message {id}"),
    };
    alice.post("general", "the burst").await;
    alice.send(&send("first")).await;
    let refused = alice.error().await;
    assert_eq!((refused.code, refused.id.as_deref()), (ErrorCode::RateLimited, Some("first")));

    // The bucket has refilled, but "second" must not overtake "first".
    tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    alice.send(&send("second")).await;
    let held = alice.error().await;
    assert_eq!((held.code, held.id.as_deref()), (ErrorCode::RateLimited, Some("second")));
    assert!(held.retry_after_ms.is_some());

    alice.send(&send("first")).await;
    let first = alice.ack("first").await;
    tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    alice.send(&send("second")).await;
    assert_eq!(alice.ack("second").await, first + 1);
}

#[tokio::test]
async fn a_client_that_stops_reading_is_dropped_and_catches_up() {
    let server = TestServer::start().await;
    let mut alice = server.connect(ALICE).await;
    let stalled = server.connect(BOB).await;
    let session = stalled.session.clone();
    let mut watcher = server.connect(BOB).await;
    let connections = server.handle.connection_count();

    // Bob's first connection never reads again. Alice keeps talking; her acks keep coming
    // and the server closes the stalled connection once its queue is full.
    let text = "w".repeat(8_000);
    let mut last = 0;
    let mut sent = 0;
    while server.handle.connection_count() == connections {
        let (_, seq) = alice.post("general", &text).await;
        last = seq;
        sent += 1;
        assert!(sent < 20_000, "the stalled connection was never dropped");
        if sent % 100 == 0 {
            // The live connection keeps up, so it is never the one dropped.
            while watcher.message("general").await.seq < seq {}
        }
    }
    drop(stalled);

    // Reconnecting from the start of the room delivers everything, in order.
    let since = HashMap::from([("general".to_owned(), 0)]);
    let mut bob = Client::connect(&server.ws_url(), &session, since).await;
    let mut expected = 1;
    while expected <= last {
        assert_eq!(bob.message("general").await.seq, expected);
        expected += 1;
    }
}

#[tokio::test]
async fn requests_other_than_sends_are_rate_limited_too() {
    let server = TestServer::start().await;
    let mut alice = server.connect(ALICE).await;
    for req in 0..80 {
        alice.send(&ClientFrame::Rooms { req: Some(req) }).await;
    }
    let limited = alice.error().await;
    assert_eq!(limited.code, ErrorCode::RateLimited);
    assert!(limited.req.is_some() && limited.retry_after_ms.is_some());
    alice.post("general", "sends have their own budget").await;
}

#[tokio::test]
async fn a_client_that_asks_for_history_and_never_reads_is_dropped() {
    let server = TestServer::start().await;
    let mut alice = server.connect(ALICE).await;
    let text = "h".repeat(2_500);
    for _ in 0..200 {
        alice.post("general", &text).await;
    }
    let greedy = server.connect(BOB).await;
    let connections = server.handle.connection_count();

    // Each answer is a page of about 500 KB that Bob never reads: past the queue's byte
    // budget the server lets the connection go instead of holding the pages.
    let mut greedy = greedy;
    let mut asked = 0;
    while server.handle.connection_count() == connections {
        let frame = ClientFrame::History {
            req: Some(asked),
            room: "general".into(),
            before: None,
            limit: Some(200),
        };
        if greedy.send_ws(WsMessage::text(serde_json::to_string(&frame).unwrap())).await.is_err() {
            break;
        }
        asked += 1;
        assert!(asked < 2_000, "the connection that never reads was never dropped");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    still_answers(&mut alice).await;
}

#[tokio::test]
async fn open_connections_are_limited_per_user_and_per_address() {
    let server = TestServer::start_with(&[
        ("ROOMZ_MAX_CONNECTIONS_PER_USER", "2"),
        ("ROOMZ_MAX_CONNECTIONS_PER_ADDRESS", "3"),
    ])
    .await;
    let (alice, bob) = (server.login(ALICE).await, server.login(BOB).await);
    let bearer = |session: &str| format!("Bearer {session}");
    let open = |session: String| {
        let url = server.ws_url();
        async move { crate::support::open_ws(&url, &[("authorization", &bearer(&session))]).await }
    };
    let first = open(alice.clone()).await.unwrap();
    let _second = open(alice.clone()).await.unwrap();
    let third = open(alice.clone()).await.unwrap_err().to_string();
    assert!(third.contains("429"), "a third for alice: {third}");
    let _bob = open(bob.clone()).await.unwrap();
    let fourth = open(bob.clone()).await.unwrap_err().to_string();
    assert!(fourth.contains("429"), "a fourth from this address: {fourth}");

    // A closed connection frees its place.
    drop(first);
    let deadline = tokio::time::Instant::now() + crate::support::PATIENCE;
    while open(alice.clone()).await.is_err() {
        assert!(tokio::time::Instant::now() < deadline, "the place was never freed");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn wrong_tokens_are_limited_per_network_behind_a_trusted_proxy() {
    let server = TestServer::start_with(&[("ROOMZ_TRUSTED_PROXIES", "127.0.0.1")]).await;
    let verify_from = |client: &'static str, token: String| {
        let request = server
            .http
            .post(server.url("/auth/verify"))
            .header("x-forwarded-for", format!("10.0.0.1, {client}"))
            .json(&serde_json::json!({ "token": token }));
        async move { request.send().await.unwrap() }
    };
    for i in 0..10 {
        let wrong = verify_from("203.0.113.1", format!("wrong-token-{i}")).await;
        assert_eq!(wrong.status(), 401);
    }
    let limited = verify_from("203.0.113.1", "one-more-wrong-token".into()).await;
    assert_eq!(limited.status(), 429, "ten wrong tokens, then the eleventh waits");
    assert!(limited.headers().contains_key("retry-after"));
    // Nobody is locked out by a neighbour: a good token from the same network still works,
    // and another client behind the same proxy has its own allowance.
    let link = server.fresh_link(ALICE).await;
    assert_eq!(verify_from("203.0.113.1", link).await.status(), 200);
    assert_eq!(verify_from("203.0.113.2", "wrong".into()).await.status(), 401);
}
