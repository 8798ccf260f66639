//! What the client promises when the connection does not hold: the server killed and
//! restarted mid-conversation loses nothing and doubles nothing; sends wait in the outbox;
//! reconnecting stops when told to.

use std::time::Duration;

use roomz::AsyncClient;
use roomz::client::{ClientError, ConnectionState, Event};

use crate::support::{ALICE, BOB, ServerProcess, TestServer, base_env, builder, event};

/// A client for a server process that reconnects quickly and patiently.
async fn patient_client(server: &mut ServerProcess, email: &str) -> AsyncClient {
    let session_token = server.login_link(email).await;
    let client = builder(&server.url(""))
        .session_token(session_token)
        .reconnect_delay(Duration::from_millis(100))
        .max_reconnect_delay(Duration::from_millis(500))
        .max_reconnect_attempts(50)
        .build()
        .unwrap();
    client.connect().await.unwrap();
    client
}

#[tokio::test]
async fn the_server_killed_and_restarted_mid_conversation_loses_and_doubles_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut vars = base_env(dir.path());
    let mut server = ServerProcess::spawn(dir.path(), &vars, &[]).ready().await;
    let alice = patient_client(&mut server, ALICE).await;
    let bob = patient_client(&mut server, BOB).await;
    let mut seen_by_bob = bob.events();
    let mut alice_states = alice.events();

    // Alice keeps sending, at her pace, whatever happens to the server.
    let total = 300;
    let sender = alice.clone();
    let sending = tokio::spawn(async move {
        let mut acks = Vec::new();
        for i in 0..total {
            acks.push(sender.send("general", &format!("m{i}")));
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
        let mut seqs = Vec::new();
        for ack in acks {
            seqs.push(ack.await.expect("every message is acknowledged in the end").seq);
        }
        seqs
    });

    // Kill the server while messages flow, and bring it back on the same address.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let addr = server.addr.unwrap();
    server.signal("KILL");
    let _ = server.exit().await;
    event(&mut alice_states, |e| {
        matches!(e, Event::Connection(ConnectionState::Reconnecting { .. })).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    vars.retain(|(k, _)| k != "ROOMZ_BIND");
    vars.push(("ROOMZ_BIND".into(), addr.to_string()));
    let _server = ServerProcess::spawn(dir.path(), &vars, &[]).ready().await;

    let seqs = sending.await.unwrap();
    assert_eq!(seqs, (1..=total as u64).collect::<Vec<_>>(), "acknowledged in order, without gaps");
    assert_eq!(alice.outbox_len(), 0);

    let mut texts = Vec::new();
    while texts.len() < total {
        let message = event(&mut seen_by_bob, |e| match e {
            Event::Message(m) if m.author == ALICE => Some(m),
            Event::Lagged(n) => panic!("bob's receiver lagged by {n}"),
            _ => None,
        })
        .await;
        texts.push(message.text);
    }
    let expected: Vec<String> = (0..total).map(|i| format!("m{i}")).collect();
    assert_eq!(texts, expected, "bob sees every message exactly once, in order");
}

#[tokio::test]
async fn messages_wait_in_the_outbox_while_the_server_is_away() {
    let server = TestServer::start().await;
    let alice = server.client(ALICE).await;
    let bob = server.client(BOB).await;
    let mut alice_events = alice.events();
    let mut bob_events = bob.events();

    let stopped = server.stop().await;
    event(&mut alice_events, |e| {
        matches!(e, Event::Connection(ConnectionState::Reconnecting { .. })).then_some(())
    })
    .await;
    let first = alice.send("general", "written while offline");
    let second = alice.send("general", "this one too");
    assert_eq!(alice.outbox_len(), 2);
    event(&mut alice_events, |e| matches!(e, Event::Outbox { unsent: 2 }).then_some(())).await;

    let _server = stopped.start().await;
    let (first, second) = (first.await.unwrap(), second.await.unwrap());
    assert_eq!((first.seq, second.seq), (1, 2));
    assert_eq!(alice.outbox_len(), 0);
    for expected in ["written while offline", "this one too"] {
        let text = event(&mut bob_events, |e| match e {
            Event::Message(m) => Some(m.text),
            _ => None,
        })
        .await;
        assert_eq!(text, expected);
    }
    // Nothing more: each went out exactly once.
    let more = tokio::time::timeout(Duration::from_millis(300), async {
        loop {
            if let Some(Event::Message(m)) = bob_events.recv().await {
                return m;
            }
        }
    })
    .await;
    assert!(more.is_err(), "an extra copy arrived: {more:?}");
}

#[tokio::test]
async fn the_client_gives_up_after_its_attempts_and_says_so() {
    let server = TestServer::start().await;
    let link = server.fresh_link(ALICE).await;
    let client = builder(&server.base_url())
        .session_token(link)
        .reconnect_delay(Duration::from_millis(20))
        .max_reconnect_delay(Duration::from_secs(10))
        .max_reconnect_attempts(4)
        .build()
        .unwrap();
    let mut events = client.events();
    client.connect().await.unwrap();
    let _stopped = server.stop().await;
    let mut delays = Vec::new();
    let reason = event(&mut events, |e| match e {
        Event::Connection(ConnectionState::Reconnecting { attempt, delay }) => {
            delays.push((attempt, delay));
            None
        }
        Event::Connection(ConnectionState::GaveUp { error }) => Some(error.to_string()),
        _ => None,
    })
    .await;
    // Each wait is between half and all of 20 ms doubled per attempt.
    assert_eq!(delays.iter().map(|(a, _)| *a).collect::<Vec<_>>(), [1, 2, 3, 4]);
    for (attempt, delay) in &delays {
        let full = Duration::from_millis(20 * 2u64.pow(attempt - 1));
        assert!(*delay >= full / 2 && *delay <= full, "attempt {attempt}: {delay:?}");
    }
    assert_eq!(reason, "disconnected: gave up after 4 reconnection attempts");
    assert_eq!(client.send("general", "anyone?").await, Err(ClientError::GaveUp { attempts: 4 }));
}

#[tokio::test]
async fn without_reconnect_a_drop_ends_the_client() {
    let server = TestServer::start().await;
    let link = server.fresh_link(ALICE).await;
    let client = builder(&server.base_url()).session_token(link).reconnect(false).build().unwrap();
    let mut events = client.events();
    client.connect().await.unwrap();
    let _stopped = server.stop().await;
    event(&mut events, |e| {
        matches!(e, Event::Connection(ConnectionState::GaveUp { .. })).then_some(())
    })
    .await;
    assert_eq!(client.rooms().await, Err(ClientError::Disconnected));
}

#[tokio::test]
async fn under_a_strict_rate_limit_messages_stay_in_order() {
    let server =
        TestServer::start_with(&[("ROOMZ_MESSAGES_PER_SECOND", "5"), ("ROOMZ_MESSAGE_BURST", "3")])
            .await;
    let alice = server.client(ALICE).await;
    let pending: Vec<_> = (0..12).map(|i| alice.send("general", &format!("r{i}"))).collect();
    let mut seqs = Vec::new();
    for ack in pending {
        seqs.push(ack.await.unwrap().seq);
    }
    assert_eq!(seqs, (1..=12).collect::<Vec<u64>>(), "paced to the server's rate, in order");
    let page = alice.history("general", None, 20).await.unwrap();
    let texts: Vec<_> = page.messages.iter().map(|m| m.text.clone()).collect();
    assert_eq!(texts, (0..12).map(|i| format!("r{i}")).collect::<Vec<_>>());
}

#[tokio::test]
async fn close_delivers_the_outbox_first_and_a_new_connect_catches_up() {
    let server = TestServer::start().await;
    let alice = server.client(ALICE).await;
    let bob = server.client(BOB).await;
    let last_words = alice.send("general", "sent just before closing");
    alice.close().await;
    assert_eq!(last_words.await.unwrap().seq, 1, "close waited for the acknowledgement");
    assert_eq!(alice.state(), ConnectionState::Closed);

    for i in 0..3 {
        bob.send("general", &format!("while alice was away {i}")).await.unwrap();
    }
    let mut events = alice.events();
    alice.connect().await.unwrap();
    let mut missed = Vec::new();
    while missed.last().map(String::as_str) != Some("while alice was away 2") {
        let text = event(&mut events, |e| match e {
            Event::Message(m) => Some(m.text),
            _ => None,
        })
        .await;
        missed.push(text);
    }
    // Her own last message comes first if its event had not reached her before she closed.
    if missed[0] == "sent just before closing" {
        missed.remove(0);
    }
    assert_eq!(
        missed,
        ["while alice was away 0", "while alice was away 1", "while alice was away 2"]
    );
}
