//! Chat over the WebSocket: messages, acknowledgements, history, catch-up, rooms, names,
//! presence and read markers, between real clients.

use std::collections::HashMap;

use roomz::protocol::{ClientFrame, ErrorCode, Member, ServerFrame};

use crate::support::{ALICE, BOB, CAROL, Client, TestServer};

#[tokio::test]
async fn two_users_chat_with_names() {
    let server = TestServer::start().await;
    let mut alice = server.connect(ALICE).await;
    let mut bob = server.connect(BOB).await;

    let (_, seq) = alice.post("general", "hello bob").await;
    assert_eq!(seq, 1);
    let seen = bob.message("general").await;
    assert_eq!((seen.seq, seen.author.as_str(), seen.text.as_str()), (1, ALICE, "hello bob"));
    assert_eq!(seen.name, None);
    assert_eq!(alice.message("general").await.seq, 1, "the sender's connections get it too");

    bob.send(&ClientFrame::SetName { req: None, name: Some("  Bob \u{202e}Builder ".into()) })
        .await;
    let renamed = alice
        .wait_for(|f| match f {
            ServerFrame::Name { email, name, .. } if email == BOB => Some(name.clone()),
            _ => None,
        })
        .await;
    assert_eq!(renamed.as_deref(), Some("Bob Builder"));
    bob.post("general", "hi alice").await;
    let reply = alice.message("general").await;
    assert_eq!((reply.seq, reply.name.as_deref()), (2, Some("Bob Builder")));

    let me: roomz::protocol::http::Me = server.me(&bob.session).await.json().await.unwrap();
    assert_eq!(me.display_name.as_deref(), Some("Bob Builder"), "the name is persisted");
}

#[tokio::test]
async fn a_resent_message_is_stored_once() {
    let server = TestServer::start().await;
    let mut alice = server.connect(ALICE).await;
    let mut bob = server.connect(BOB).await;
    let send =
        ClientFrame::Send { room: "general".into(), id: "same-id".into(), text: "once".into() };
    alice.send(&send).await;
    let first = alice.ack("same-id").await;
    alice.send(&send).await;
    assert_eq!(alice.ack("same-id").await, first);
    alice.post("general", "next").await;
    assert_eq!(bob.message("general").await.text, "once");
    assert_eq!(bob.message("general").await.text, "next", "no second copy in between");
}

#[tokio::test]
async fn history_pages_backwards() {
    let server = TestServer::start().await;
    let mut alice = server.connect(ALICE).await;
    for i in 1..=120 {
        alice
            .send(&ClientFrame::Send {
                room: "general".into(),
                id: format!("h{i}"),
                text: format!("n{i}"),
            })
            .await;
    }
    alice.ack("h120").await;

    let pages: Vec<_> = alice
        .history_pages("general", 50)
        .await
        .into_iter()
        .map(|(messages, more)| {
            assert!(messages.iter().all(|m| m.text == format!("n{}", m.seq)));
            let seqs: Vec<u64> = messages.iter().map(|m| m.seq).collect();
            (seqs.first().copied(), seqs.last().copied(), seqs.len(), more)
        })
        .collect();
    assert_eq!(
        pages,
        [
            (Some(71), Some(120), 50, true),
            (Some(21), Some(70), 50, true),
            (Some(1), Some(20), 20, false)
        ]
    );
    let limits = alice
        .request(|req| ClientFrame::History {
            req,
            room: "general".into(),
            before: None,
            limit: Some(100_000),
        })
        .await;
    let ServerFrame::History { messages, .. } = limits else { panic!() };
    assert_eq!(messages.len(), 120, "the page size is capped at 200, and 120 exist");
}

#[tokio::test]
async fn reconnecting_catches_up_without_gaps_or_duplicates() {
    let server = TestServer::start().await;
    let mut alice = server.connect(ALICE).await;
    let mut bob = server.connect(BOB).await;
    for i in 0..5 {
        alice.post("general", &format!("before {i}")).await;
    }
    let mut last_seen = 0;
    while last_seen < 5 {
        last_seen = bob.message("general").await.seq;
    }
    let session = bob.session.clone();
    drop(bob);

    // Messages keep coming while bob is away, and while he reconnects.
    for i in 0..30 {
        alice.post("general", &format!("away {i}")).await;
    }
    let url = server.ws_url();
    let since = HashMap::from([("general".to_owned(), last_seen)]);
    let reconnect = tokio::spawn(async move { Client::connect(&url, &session, since).await });
    for i in 0..30 {
        alice.post("general", &format!("during {i}")).await;
    }
    let mut bob = reconnect.await.unwrap();
    let (_, last) = alice.post("general", "after").await;

    let mut seqs = Vec::new();
    while seqs.last() != Some(&last) {
        seqs.push(bob.message("general").await.seq);
    }
    let expected: Vec<u64> = (last_seen + 1..=last).collect();
    assert_eq!(seqs, expected, "every message after the last seen, once, in order");
    let synced = bob
        .wait_for(|f| match f {
            ServerFrame::Synced { rooms } => Some(rooms.clone()),
            _ => None,
        })
        .await;
    assert!(synced["general"] >= 35);
}

#[tokio::test]
async fn rooms_members_unread_counts_and_read_markers() {
    let server = TestServer::start().await;
    let mut alice = server.connect(ALICE).await;
    let mut bob = server.connect(BOB).await;

    let joined = alice.request(|req| ClientFrame::Join { req, room: "#Rust".into() }).await;
    let ServerFrame::Joined { room, .. } = joined else { panic!("{joined:?}") };
    assert_eq!((room.name.as_str(), room.members), ("rust", 1));

    bob.request(|req| ClientFrame::Join { req, room: "rust".into() }).await;
    let member = alice
        .wait_for(|f| match f {
            ServerFrame::MemberJoined { room, member } if room == "rust" => Some(member.clone()),
            _ => None,
        })
        .await;
    assert_eq!(member, Member { email: BOB.into(), name: None, online: true });

    for i in 0..3 {
        alice.post("rust", &format!("r{i}")).await;
    }
    let rooms = |frame: ServerFrame| match frame {
        ServerFrame::Rooms { rooms, .. } => rooms,
        other => panic!("{other:?}"),
    };
    let listed = rooms(bob.request(|req| ClientFrame::Rooms { req }).await);
    let rust = listed.iter().find(|r| r.name == "rust").unwrap();
    assert_eq!((rust.members, rust.last_seq, rust.unread), (2, 3, 3));
    assert_eq!(listed.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), ["general", "rust"]);

    bob.send(&ClientFrame::MarkRead { room: "rust".into(), seq: 2 }).await;
    let read = bob
        .wait_for(|f| match f {
            ServerFrame::Read { room, seq } if room == "rust" => Some(*seq),
            _ => None,
        })
        .await;
    assert_eq!(read, 2);
    let listed = rooms(bob.request(|req| ClientFrame::Rooms { req }).await);
    assert_eq!(listed.iter().find(|r| r.name == "rust").unwrap().unread, 1);
    assert_eq!(
        rooms(alice.request(|req| ClientFrame::Rooms { req }).await)[1].unread,
        0,
        "own messages count as read"
    );

    let members =
        bob.request(|req| ClientFrame::Members { req, room: "rust".into(), after: None }).await;
    let ServerFrame::Members { members, .. } = members else { panic!() };
    assert_eq!(
        members.iter().map(|m| (m.email.as_str(), m.online)).collect::<Vec<_>>(),
        [(ALICE, true), (BOB, true)]
    );

    bob.request(|req| ClientFrame::Leave { req, room: "rust".into() }).await;
    let gone = alice
        .wait_for(|f| match f {
            ServerFrame::MemberLeft { room, email } if room == "rust" => Some(email.clone()),
            _ => None,
        })
        .await;
    assert_eq!(gone, BOB);
    bob.send(&ClientFrame::Send { room: "rust".into(), id: "x1".into(), text: "hi".into() }).await;
    let refused = bob.error().await;
    assert_eq!((refused.code, refused.id.as_deref()), (ErrorCode::NotMember, Some("x1")));

    let cannot = bob.request(|req| ClientFrame::Leave { req, room: "general".into() }).await;
    assert!(matches!(cannot, ServerFrame::Error(e) if e.code == ErrorCode::CannotLeaveDefault));
    let invalid = bob.request(|req| ClientFrame::Join { req, room: "no spaces".into() }).await;
    assert!(matches!(invalid, ServerFrame::Error(e) if e.code == ErrorCode::InvalidRoom));
    let stranger = bob
        .request(|req| ClientFrame::History {
            req,
            room: "secret".into(),
            before: None,
            limit: None,
        })
        .await;
    assert!(matches!(stranger, ServerFrame::Error(e) if e.code == ErrorCode::NotMember));
}

#[tokio::test]
async fn presence_follows_connections() {
    let server = TestServer::start().await;
    let mut alice = server.connect(ALICE).await;
    let carol = server.connect(CAROL).await;
    let online = |who: &'static str, state: bool| {
        move |f: &ServerFrame| match f {
            ServerFrame::Presence { room, email, online }
                if room == "general" && email == who && *online == state =>
            {
                Some(())
            }
            _ => None,
        }
    };
    alice.wait_for(online(CAROL, true)).await;
    let mut second = server.connect(CAROL).await;
    drop(carol);
    // Carol still has a connection: she stays online.
    second.send(&ClientFrame::Ping { req: Some(9) }).await;
    second.wait_for(|f| matches!(f, ServerFrame::Pong { .. }).then_some(())).await;
    let members = alice
        .request(|req| ClientFrame::Members { req, room: "general".into(), after: None })
        .await;
    let ServerFrame::Members { members, .. } = members else { panic!() };
    assert!(members.iter().any(|m| m.email == CAROL && m.online));
    drop(second);
    alice.wait_for(online(CAROL, false)).await;
}

#[tokio::test]
async fn one_user_on_two_connections_sees_everything_on_both() {
    let server = TestServer::start().await;
    let mut laptop = server.connect(ALICE).await;
    let mut phone = server.connect(ALICE).await;
    laptop.post("general", "from the laptop").await;
    assert_eq!(phone.message("general").await.text, "from the laptop");
    laptop.request(|req| ClientFrame::Join { req, room: "ops".into() }).await;
    let joined = phone
        .wait_for(|f| match f {
            ServerFrame::Joined { room, req } => Some((room.name.clone(), *req)),
            _ => None,
        })
        .await;
    assert_eq!(joined, ("ops".to_owned(), None), "the other connection joins too, without the req");
    laptop.post("ops", "in ops").await;
    assert_eq!(phone.message("ops").await.text, "in ops");
}

#[tokio::test]
async fn untrusted_text_is_cleaned_before_it_is_stored() {
    let server = TestServer::start().await;
    let mut alice = server.connect(ALICE).await;
    let mut bob = server.connect(BOB).await;
    alice.post("general", "red\u{1b}[31m\u{7}\u{9b}2J \u{202e}evil\u{2066}\r\nline two\ttab").await;
    let seen = bob.message("general").await;
    assert_eq!(seen.text, "red[31m2J evil\nline two    tab");
    let empty = ClientFrame::Send {
        room: "general".into(),
        id: "e1".into(),
        text: "\u{1b}\u{202e} \n".into(),
    };
    alice.send(&empty).await;
    assert_eq!(alice.error().await.code, ErrorCode::EmptyMessage);
}

#[tokio::test]
async fn history_pages_stay_small_when_messages_are_long() {
    let server = TestServer::start().await;
    let mut alice = server.connect(ALICE).await;
    let long = "é".repeat(10_000);
    for i in 1..=80 {
        alice
            .send(&ClientFrame::Send {
                room: "general".into(),
                id: format!("l{i}"),
                text: long.clone(),
            })
            .await;
    }
    alice.ack("l80").await;
    let mut seen = Vec::new();
    for (messages, _) in alice.history_pages("general", 200).await {
        assert!(messages.len() < 80, "a page of 80 x 20 KB would be over the budget");
        seen.splice(0..0, messages.iter().map(|m| m.seq));
    }
    assert_eq!(seen, (1..=80).collect::<Vec<_>>(), "cut pages still cover everything, in order");
}
