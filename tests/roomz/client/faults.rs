//! The client against a network that misbehaves (through a proxy that cuts connections
//! and swallows answers) and a server that turns messages away: answers that never come
//! time out, an acknowledgement lost on the way is not a message sent twice, a flaky link
//! is never given up on while each attempt connects, and refused messages keep their order.

use std::time::Duration;

use roomz::AsyncClient;
use roomz::client::{ClientError, ConnectionState, Event};

use crate::proxy::Proxy;
use crate::support::{ALICE, BOB, TestServer, builder, event};

/// A client of `server` that goes through `proxy`, quick to reconnect and to time out.
async fn through(proxy: &Proxy, server: &TestServer, email: &str) -> AsyncClient {
    let client = builder(&proxy.url())
        .session_token(server.fresh_link(email).await)
        .reconnect_delay(Duration::from_millis(50))
        .max_reconnect_delay(Duration::from_millis(200))
        .connection_timeout(Duration::from_millis(700))
        .build()
        .unwrap();
    client.connect().await.unwrap();
    client
}

async fn connected(events: &mut roomz::client::Events) {
    event(events, |e| matches!(e, Event::Connection(ConnectionState::Connected)).then_some(()))
        .await;
}

#[tokio::test]
async fn a_request_whose_answer_never_comes_times_out() {
    let server = TestServer::start().await;
    let proxy = Proxy::start(server.addr()).await;
    let alice = through(&proxy, &server, ALICE).await;
    assert_eq!(alice.rooms().await.unwrap().len(), 1);

    proxy.swallow_answers(true);
    let asked = tokio::time::Instant::now();
    let answer = alice.rooms().await;
    assert_eq!(answer, Err(ClientError::Timeout { after: Duration::from_millis(700) }));
    assert!(asked.elapsed() < Duration::from_secs(5), "it waited {:?}", asked.elapsed());
}

#[tokio::test]
async fn a_lost_acknowledgement_does_not_store_the_message_twice() {
    let server = TestServer::start().await;
    let proxy = Proxy::start(server.addr()).await;
    let alice = through(&proxy, &server, ALICE).await;
    let bob = server.client(BOB).await;
    let mut alice_events = alice.events();
    let mut bob_events = bob.events();

    // The message reaches the server and is stored; its ack is swallowed.
    proxy.swallow_answers(true);
    let sending = alice.send("general", "exactly once");
    let stored = event(&mut bob_events, |e| match e {
        Event::Message(m) => Some(m),
        _ => None,
    })
    .await;
    assert_eq!(alice.outbox_len(), 1, "no ack yet");

    // The connection drops; the client reconnects and sends it again.
    proxy.swallow_answers(false);
    proxy.cut();
    connected(&mut alice_events).await;
    let sent = sending.await.unwrap();
    assert_eq!((sent.seq, sent.id.as_str()), (stored.seq, stored.id.as_str()));
    let page = bob.history("general", None, 10).await.unwrap();
    assert_eq!(page.messages.len(), 1, "{:?}", page.messages);
    let again = tokio::time::timeout(Duration::from_millis(300), async {
        loop {
            if let Some(Event::Message(m)) = bob_events.recv().await {
                return m;
            }
        }
    })
    .await;
    assert!(again.is_err(), "bob saw it twice: {again:?}");
}

#[tokio::test]
async fn a_link_that_keeps_dropping_is_not_given_up_while_each_attempt_connects() {
    let server = TestServer::start().await;
    let proxy = Proxy::start(server.addr()).await;
    let client = builder(&proxy.url())
        .session_token(server.fresh_link(ALICE).await)
        .reconnect_delay(Duration::from_millis(20))
        .max_reconnect_delay(Duration::from_millis(100))
        .max_reconnect_attempts(2)
        .build()
        .unwrap();
    client.connect().await.unwrap();
    let mut events = client.events();
    for _ in 0..5 {
        proxy.cut();
        connected(&mut events).await;
    }
    assert_eq!(client.state(), ConnectionState::Connected);
    client.send("general", "still here").await.unwrap();
}

#[tokio::test]
async fn a_session_that_expires_while_away_ends_the_client_without_a_loop() {
    let server = TestServer::start().await;
    let proxy = Proxy::start(server.addr()).await;
    let alice = through(&proxy, &server, ALICE).await;
    let mut events = alice.events();
    server.clock.advance(Duration::from_secs(31 * 24 * 3600));
    proxy.cut();
    let error = event(&mut events, |e| match e {
        Event::Connection(ConnectionState::GaveUp { error }) => Some(error),
        _ => None,
    })
    .await;
    assert_eq!(error, ClientError::SessionExpired);
    assert!(!alice.has_session().unwrap());
}

#[tokio::test]
async fn close_while_reconnecting_waits_for_the_outbox() {
    let server = TestServer::start().await;
    let alice = builder(&server.base_url())
        .session_token(server.fresh_link(ALICE).await)
        .reconnect_delay(Duration::from_millis(50))
        .max_reconnect_delay(Duration::from_millis(100))
        .max_reconnect_attempts(100)
        .connection_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    alice.connect().await.unwrap();
    let mut events = alice.events();
    let stopped = server.stop().await;
    event(&mut events, |e| {
        matches!(e, Event::Connection(ConnectionState::Reconnecting { .. })).then_some(())
    })
    .await;
    let sending = alice.send("general", "sent on the way out");
    let closing = tokio::spawn({
        let alice = alice.clone();
        async move { alice.close().await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let server = stopped.start().await;
    assert_eq!(sending.await.unwrap().seq, 1);
    closing.await.unwrap();
    assert_eq!(alice.state(), ConnectionState::Closed);
    let bob = server.client(BOB).await;
    assert_eq!(bob.history("general", None, 10).await.unwrap().messages.len(), 1);
}

#[tokio::test]
async fn a_login_that_cannot_reach_the_server_keeps_the_token() {
    let server = TestServer::start().await;
    let link = server.fresh_link(ALICE).await;
    let stopped = server.stop().await;
    let client = builder(&format!("http://{}", stopped.addr()))
        .session_token(link)
        .connection_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    assert!(matches!(client.connect().await, Err(ClientError::Unreachable { .. })));
    let _server = stopped.start().await;
    client.connect().await.unwrap();
    assert_eq!(client.identity().unwrap().0, ALICE);
}

#[tokio::test]
async fn messages_turned_away_for_the_rate_keep_their_order() {
    // Two connections of one user share its rate: each paces itself, together they go over,
    // and the server turns some messages away. Each connection's messages still land in
    // the order it sent them.
    let server = TestServer::start_with(&[
        ("ROOMZ_MESSAGES_PER_SECOND", "20"),
        ("ROOMZ_MESSAGE_BURST", "5"),
    ])
    .await;
    let phone = server.client(ALICE).await;
    let laptop = server.client(ALICE).await;
    let per_client = 25;
    let mut pending = Vec::new();
    for i in 0..per_client {
        pending.push(phone.send("general", &format!("phone {i}")));
        pending.push(laptop.send("general", &format!("laptop {i}")));
    }
    for sent in pending {
        sent.await.unwrap();
    }
    let mut texts = Vec::new();
    let mut before = None;
    loop {
        let page = phone.history("general", before, 200).await.unwrap();
        texts.splice(0..0, page.messages.iter().map(|m| m.text.clone()));
        before = page.messages.first().map(|m| m.seq);
        if !page.more {
            break;
        }
    }
    for device in ["phone", "laptop"] {
        let order: Vec<usize> =
            texts.iter().filter_map(|t| t.strip_prefix(device)?.trim().parse().ok()).collect();
        assert_eq!(order, (0..per_client).collect::<Vec<_>>(), "{device}: {texts:?}");
    }
}
