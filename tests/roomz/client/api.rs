//! Every call of the client library against a real server, the events it reports, and the
//! echo-bot example.

use std::process::Stdio;
use std::time::Duration;

use roomz::client::{ClientError, Event};
use roomz::protocol::ErrorCode;

use crate::support::{ALICE, BOB, TestServer, builder, event, example};

#[tokio::test]
async fn rooms_messages_history_members_and_read_markers() {
    let server = TestServer::start().await;
    let alice = server.client(ALICE).await;
    let bob = server.client(BOB).await;
    let mut alice_events = alice.events();
    let mut bob_events = bob.events();

    let joined = alice.join("#Ops").await.unwrap();
    assert_eq!((joined.name.as_str(), joined.members), ("ops", 1));
    event(&mut alice_events, |e| matches!(e, Event::Joined(r) if r.name == "ops").then_some(()))
        .await;
    bob.join("ops").await.unwrap();
    let member = event(&mut alice_events, |e| match e {
        Event::MemberJoined { room, member } if room == "ops" => Some(member),
        _ => None,
    })
    .await;
    assert_eq!(member.email, BOB);

    let sent = alice.send("ops", "deploy at 5").await.unwrap();
    assert_eq!((sent.room.as_str(), sent.seq), ("ops", 1));
    let seen = event(&mut bob_events, |e| match e {
        Event::Message(m) if m.room == "ops" => Some(m),
        _ => None,
    })
    .await;
    assert_eq!(
        (seen.author.as_str(), seen.text.as_str(), seen.id.as_str()),
        (ALICE, "deploy at 5", sent.id.as_str())
    );

    for i in 0..4 {
        alice.send("ops", &format!("n{i}")).await.unwrap();
    }
    let rooms = bob.rooms().await.unwrap();
    let ops = rooms.iter().find(|r| r.name == "ops").unwrap();
    assert_eq!((ops.members, ops.unread), (2, 5));
    bob.mark_read("ops", 3).unwrap();
    event(&mut bob_events, |e| {
        matches!(e, Event::Read { ref room, seq: 3 } if room == "ops").then_some(())
    })
    .await;
    assert_eq!(bob.rooms().await.unwrap().iter().find(|r| r.name == "ops").unwrap().unread, 2);

    let newest = bob.history("ops", None, 2).await.unwrap();
    assert_eq!(newest.messages.iter().map(|m| m.seq).collect::<Vec<_>>(), [4, 5]);
    assert!(newest.more);
    let older = bob.history("ops", Some(4), 10).await.unwrap();
    assert_eq!(older.messages.len(), 3);
    assert!(!older.more);

    let members = alice.members("ops").await.unwrap();
    assert_eq!(
        members.iter().map(|m| (m.email.as_str(), m.online)).collect::<Vec<_>>(),
        [(ALICE, true), (BOB, true)]
    );

    bob.leave("ops").await.unwrap();
    event(&mut alice_events, |e| {
        matches!(e, Event::MemberLeft { ref email, .. } if email == BOB).then_some(())
    })
    .await;
    let refused = bob.send("ops", "still here?").await.unwrap_err();
    assert!(
        matches!(refused, ClientError::Rejected { code: ErrorCode::NotMember, .. }),
        "{refused:?}"
    );
    let too_long = alice.send("ops", &"x".repeat(10_001)).await.unwrap_err();
    assert!(matches!(too_long, ClientError::Rejected { code: ErrorCode::MessageTooLong, .. }));
    assert_eq!(alice.outbox_len(), 0, "refused messages leave the outbox");
    let no = alice.join("not a room").await.unwrap_err();
    assert!(matches!(no, ClientError::Rejected { code: ErrorCode::InvalidRoom, .. }));
}

#[tokio::test]
async fn display_names_from_the_option_the_file_and_the_call() {
    let server = TestServer::start().await;
    let bob = server.client(BOB).await;
    let mut bob_events = bob.events();

    let alice = builder(&server.base_url())
        .session_token(server.fresh_link(ALICE).await)
        .display_name("  Alice \u{202e}Liddell ")
        .build()
        .unwrap();
    alice.connect().await.unwrap();
    let named = event(&mut bob_events, |e| match e {
        Event::Name { email, name } if email == ALICE => Some(name),
        _ => None,
    })
    .await;
    assert_eq!(named.as_deref(), Some("Alice Liddell"), "set on connect, cleaned, for everyone");
    assert_eq!(alice.me().await.unwrap().display_name.as_deref(), Some("Alice Liddell"));
    assert_eq!(alice.set_display_name(Some("Alice")).await.unwrap().as_deref(), Some("Alice"));
    assert_eq!(alice.identity(), Some((ALICE.to_owned(), Some("Alice".to_owned()))));
    assert_eq!(alice.set_display_name(None).await.unwrap(), None);
    let bad = alice.set_display_name(Some(&"n".repeat(65))).await.unwrap_err();
    assert!(matches!(bad, ClientError::Rejected { code: ErrorCode::InvalidName, .. }));

    if std::env::var_os(roomz::client::DISPLAY_NAME_VAR).is_none() {
        let file = server.dir.path().join("config.toml");
        std::fs::write(&file, "[client]\ndisplay_name = \"Bob From The File\"\n").unwrap();
        let bob_again = builder(&server.base_url())
            .session_token(server.fresh_link(BOB).await)
            .config_file(&file)
            .build()
            .unwrap();
        assert_eq!(bob_again.options().display_name.as_deref(), Some("Bob From The File"));
        bob_again.connect().await.unwrap();
        let named = event(&mut bob_events, |e| match e {
            Event::Name { email, name } if email == BOB => Some(name),
            _ => None,
        })
        .await;
        assert_eq!(named.as_deref(), Some("Bob From The File"));
    }
}

#[tokio::test]
async fn the_echo_bot_example_answers() {
    let server = TestServer::start().await;
    let link = server.fresh_link(BOB).await;
    let mut bot = tokio::process::Command::new(example("echo_bot"))
        .arg(server.base_url())
        .env_clear()
        .env("HOME", server.dir.path())
        .env("ROOMZ_SESSION_FILE", server.dir.path().join("bot-session.json"))
        .env("ROOMZ_TOKEN", link)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let alice = server.client(ALICE).await;
    let mut events = alice.events();
    // The bot may still be connecting: say it until it answers.
    let echo = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            alice.send("general", "hello bot").await.unwrap();
            let answer = tokio::time::timeout(Duration::from_millis(500), async {
                loop {
                    if let Some(Event::Message(m)) = events.recv().await
                        && m.author == BOB
                    {
                        return m.text;
                    }
                }
            })
            .await;
            if let Ok(text) = answer {
                return text;
            }
        }
    })
    .await
    .expect("the bot answered");
    assert_eq!(echo, "echo: hello bot");
    // The bot knows its own messages: it never answers its echo.
    let more = tokio::time::timeout(Duration::from_millis(1500), async {
        loop {
            if let Some(Event::Message(m)) = events.recv().await
                && m.author == BOB
                && m.text.starts_with("echo: echo: ")
            {
                return m.text;
            }
        }
    })
    .await;
    assert!(more.is_err(), "the bot echoed itself: {more:?}");
    bot.kill().await.unwrap();
}

#[tokio::test]
async fn presence_comes_and_goes_as_events() {
    let server = TestServer::start().await;
    let alice = server.client(ALICE).await;
    let mut events = alice.events();
    let bob = server.client(BOB).await;
    let online = |wanted: bool| {
        move |e: Event| match e {
            Event::Presence { room, email, online } if email == BOB && online == wanted => {
                Some(room)
            }
            _ => None,
        }
    };
    assert_eq!(event(&mut events, online(true)).await, "general");
    let members = alice.members("general").await.unwrap();
    assert!(members.iter().any(|m| m.email == BOB && m.online), "{members:?}");
    bob.close().await;
    assert_eq!(event(&mut events, online(false)).await, "general");
}

#[tokio::test]
async fn the_members_of_a_large_room_come_in_pages() {
    let stopped = TestServer::start().await.stop().await;
    let store = stopped.open_store().await;
    let crowd = roomz::protocol::MEMBERS_PAGE_MAX as usize * 2 + 10;
    for i in 0..crowd {
        store.ensure_user(&format!("member{i:05}@example.com"), 1).await.unwrap();
    }
    store.close().await;
    let server = stopped.start().await;

    let alice = server.client(ALICE).await;
    let members = alice.members("general").await.unwrap();
    assert_eq!(members.len(), crowd + 1, "every page, alice included");
    let mut emails: Vec<&str> = members.iter().map(|m| m.email.as_str()).collect();
    emails.dedup();
    assert_eq!(emails.len(), crowd + 1, "no member twice");
    assert!(emails.is_sorted(), "by email, page after page");
}
