//! Two `roomz serve` nodes on one PostgreSQL database, as a team that outgrew one machine
//! runs them: users on either node chat in one room in one order, magic links and their
//! rate limit hold across nodes, presence, names, read markers and joins cross over, and a
//! node whose listening connection is killed loses nothing; TLS to the database checks the
//! server's certificate; presence and read markers a node missed while not listening are
//! pushed when it listens again. Skipped without `ROOMZ_TEST_POSTGRES` (`.ci/test` starts
//! a server and requires them).

use std::collections::BTreeMap;

use roomz::protocol::{ClientFrame, Message, ServerFrame};

use crate::support::{ALICE, BOB, Client, TestServer, fresh_postgres_database};

/// Two nodes on a new database, and its URL.
async fn two_nodes() -> Option<(String, TestServer, TestServer)> {
    let url = fresh_postgres_database().await?;
    let a = TestServer::node(&url).await;
    let b = TestServer::node(&url).await;
    Some((url, a, b))
}

/// Sends `count` messages to `room` without waiting for their acks.
async fn send_many(client: &mut Client, room: &str, tag: &str, count: usize) {
    for i in 0..count {
        let frame = ClientFrame::Send {
            room: room.into(),
            id: format!("{tag}-{i}"),
            text: format!("{tag} {i}"),
        };
        client.send(&frame).await;
    }
}

/// The next `count` messages of `room` this client receives.
async fn receive(client: &mut Client, room: &str, count: usize) -> Vec<Message> {
    let mut messages = Vec::with_capacity(count);
    while messages.len() < count {
        messages.push(client.message(room).await);
    }
    messages
}

/// Sequence numbers 1.. in order, each once.
fn assert_in_order(messages: &[Message]) {
    let seqs: Vec<u64> = messages.iter().map(|m| m.seq).collect();
    let expected: Vec<u64> = (1..=messages.len() as u64).collect();
    assert_eq!(seqs, expected, "no gap, no duplicate, in order");
}

#[tokio::test]
async fn users_on_two_nodes_chat_in_one_order() {
    let Some((_, a, b)) = two_nodes().await else { return };
    let mut alice = a.connect(ALICE).await;
    let mut bob = b.connect(BOB).await;

    // Both write at once, each on their own node.
    send_many(&mut alice, "general", "alice", 40).await;
    send_many(&mut bob, "general", "bob", 40).await;
    let seen_by_alice = receive(&mut alice, "general", 80).await;
    let seen_by_bob = receive(&mut bob, "general", 80).await;
    assert_in_order(&seen_by_alice);
    assert_in_order(&seen_by_bob);
    let ids =
        |messages: &[Message]| -> Vec<String> { messages.iter().map(|m| m.id.clone()).collect() };
    assert_eq!(ids(&seen_by_alice), ids(&seen_by_bob), "one order for everyone");

    // History reads the same on both nodes.
    let history_a = alice.history_pages("general", 200).await;
    let history_b = bob.history_pages("general", 200).await;
    assert_eq!(history_a, history_b);
    assert_eq!(history_a[0].0.len(), 80);
}

#[tokio::test]
async fn magic_links_work_once_and_count_across_nodes() {
    let Some((_, a, b)) = two_nodes().await else { return };
    let link = a.fresh_link(ALICE).await;
    assert_eq!(b.verify(&link).await.status(), 200, "a link from node A works on node B");
    assert_eq!(a.verify(&link).await.status(), 401, "once");
    assert_eq!(b.verify(&link).await.status(), 401);

    // The hourly limit of five counts requests on both nodes (one above was the first).
    for node in [&b, &a, &b, &a] {
        assert_eq!(node.request_link(ALICE).await.status(), 202);
    }
    assert_eq!(a.request_link(ALICE).await.status(), 429);
    assert_eq!(b.request_link(ALICE).await.status(), 429);
}

#[tokio::test]
async fn presence_names_markers_and_joins_cross_nodes() {
    let Some((_, a, b)) = two_nodes().await else { return };
    let mut alice_a = a.connect(ALICE).await;
    let mut alice_b = b.connect(ALICE).await;

    // Bob comes online on B: alice hears it on A, and A lists him as online.
    let mut bob = b.connect(BOB).await;
    let presence = alice_a
        .wait_for(|f| match f {
            ServerFrame::Presence { email, online, .. } if email == BOB => Some(*online),
            _ => None,
        })
        .await;
    assert!(presence);
    let members = alice_a
        .request(|req| ClientFrame::Members { req, room: "general".into(), after: None })
        .await;
    let ServerFrame::Members { members, .. } = members else { panic!("{members:?}") };
    let online: BTreeMap<String, bool> = members.into_iter().map(|m| (m.email, m.online)).collect();
    assert_eq!(online.get(BOB), Some(&true), "{online:?}");

    // A name set on B reaches A.
    bob.request(|req| ClientFrame::SetName { req, name: Some("Bob on B".into()) }).await;
    let name = alice_a
        .wait_for(|f| match f {
            ServerFrame::Name { email, name, .. } if email == BOB => Some(name.clone()),
            _ => None,
        })
        .await;
    assert_eq!(name.as_deref(), Some("Bob on B"));

    // Alice joins on A: her connection on B follows; bob joining on B is news on A.
    alice_a.request(|req| ClientFrame::Join { req, room: "ops".into() }).await;
    let joined = alice_b
        .wait_for(|f| match f {
            ServerFrame::Joined { room, .. } if room.name == "ops" => Some(room.clone()),
            _ => None,
        })
        .await;
    assert_eq!(joined.members, 1);
    bob.request(|req| ClientFrame::Join { req, room: "ops".into() }).await;
    let newcomer = alice_a
        .wait_for(|f| match f {
            ServerFrame::MemberJoined { room, member } if room == "ops" => {
                Some(member.email.clone())
            }
            _ => None,
        })
        .await;
    assert_eq!(newcomer, BOB);

    // A message bob writes on B in the new room reaches both of alice's connections, and
    // her read marker set on A moves on B.
    let (_, seq) = bob.post("ops", "hello ops").await;
    assert_eq!(alice_a.message("ops").await.seq, seq);
    assert_eq!(alice_b.message("ops").await.seq, seq);
    alice_a.send(&ClientFrame::MarkRead { room: "ops".into(), seq }).await;
    let read = alice_b
        .wait_for(|f| match f {
            ServerFrame::Read { room, seq } if room == "ops" => Some(*seq),
            _ => None,
        })
        .await;
    assert_eq!(read, seq);

    // Bob leaves B altogether: alice hears he went offline.
    drop(bob);
    let presence = alice_a
        .wait_for(|f| match f {
            ServerFrame::Presence { email, online: false, .. } if email == BOB => Some(()),
            _ => None,
        })
        .await;
    assert_eq!(presence, ());
}

#[tokio::test]
async fn a_killed_listening_connection_loses_nothing() {
    let Some((url, a, b)) = two_nodes().await else { return };
    let mut alice = a.connect(ALICE).await;
    let mut bob = b.connect(BOB).await;

    send_many(&mut alice, "general", "before", 60).await;
    // Every node's listening connection is killed while messages flow.
    let killed = kill_listeners(&url).await;
    assert!(killed >= 2, "each node listens ({killed} killed)");
    send_many(&mut alice, "general", "during", 60).await;
    let seen = receive(&mut bob, "general", 120).await;
    assert_in_order(&seen);

    // And the cluster still carries new messages afterwards.
    send_many(&mut alice, "general", "after", 10).await;
    let later = receive(&mut bob, "general", 10).await;
    assert_eq!(later.first().map(|m| m.seq), Some(121));
    assert_eq!(later.last().map(|m| m.seq), Some(130));
}

/// Terminates the database backends that serve `LISTEN` on this database; how many.
async fn kill_listeners(url: &str) -> usize {
    use sqlx::Connection;
    let mut admin = sqlx::PgConnection::connect(url).await.unwrap();
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = current_database() AND query LIKE 'LISTEN%'",
    )
    .fetch_all(&mut admin)
    .await
    .unwrap();
    killed.len()
}

#[tokio::test]
async fn a_sqlite_deployment_moves_to_postgres() {
    let Some(url) = fresh_postgres_database().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let sqlite = format!("sqlite:{}", dir.path().join("before.db").display());
    let before = TestServer::start_with(&[("DATABASE_URL", &sqlite)]).await;
    let mut alice = before.connect(ALICE).await;
    let mut bob = before.connect(BOB).await;
    bob.request(|req| ClientFrame::SetName { req, name: Some("Bob".into()) }).await;
    alice.request(|req| ClientFrame::Join { req, room: "ops".into() }).await;
    for i in 0..30 {
        alice.post("general", &format!("general {i}")).await;
        bob.post("general", &format!("reply {i}")).await;
    }
    alice.post("ops", "only alice here").await;
    let history = alice.history_pages("general", 200).await;
    drop((alice, bob));
    before.stop().await;

    let copy = |to: String| {
        let from = sqlite.clone();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_roomz"))
                .args(["copy-database", "--from", &from, "--to", &to])
                .env_clear()
                .output()
                .unwrap()
        })
    };
    let out = copy(url.clone()).await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("copied 2 users, 2 rooms, 3 memberships, 61 messages"), "{said}");

    // The same users, rooms, names and history on PostgreSQL; new messages go on from there.
    let after = TestServer::node(&url).await;
    let mut alice = after.connect(ALICE).await;
    assert_eq!(alice.history_pages("general", 200).await, history);
    let ServerFrame::Welcome { rooms, .. } = alice.welcome.clone().unwrap() else { panic!() };
    let names: Vec<&str> = rooms.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["general", "ops"]);
    assert_eq!(history[0].0.last().unwrap().name.as_deref(), Some("Bob"));
    // (A fresh id: the copied messages hold this client's first ids already.)
    let id = "first-on-postgres".to_owned();
    let text = "first on postgres".to_owned();
    alice.send(&ClientFrame::Send { room: "general".into(), id: id.clone(), text }).await;
    assert_eq!(alice.ack(&id).await, 61);
    alice.request(|req| ClientFrame::Join { req, room: "new-room".into() }).await;

    // A second copy into a database in use is refused.
    let again = copy(url).await.unwrap();
    assert!(!again.status.success());
    let said = String::from_utf8_lossy(&again.stderr);
    assert!(said.contains("already holds 1 running node"), "{said}");
}

#[tokio::test]
async fn the_users_of_a_node_that_stopped_answering_go_offline() {
    let Some((url, a, _b)) = two_nodes().await else { return };
    let mut alice = a.connect(ALICE).await;
    let carol_went = |f: &ServerFrame| match f {
        ServerFrame::Presence { email, online: false, .. } if email == crate::support::CAROL => {
            Some(())
        }
        _ => None,
    };
    // Carol has been here (she is a member of general), and left.
    drop(a.connect(crate::support::CAROL).await);
    alice.wait_for(carol_went).await;

    // A node that crashed with carol on it: its last word long ago.
    use sqlx::Connection;
    let mut db = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::query("INSERT INTO nodes (id, seen_at) VALUES ('crashed', 0)")
        .execute(&mut db)
        .await
        .unwrap();
    sqlx::query("INSERT INTO presence (node, email) VALUES ('crashed', $1)")
        .bind(crate::support::CAROL)
        .execute(&mut db)
        .await
        .unwrap();
    // The next heartbeat of a live node forgets it, and says carol went offline.
    alice.wait_for(carol_went).await;
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM nodes WHERE id = 'crashed'")
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!(left, 0);
}

/// The URL of `url`'s database with TLS required and the server's certificate checked:
/// against the test authority (`Some`) or against the system's roots (`None`).
fn verified(url: &str, authority: Option<&str>) -> String {
    let mut url = url::Url::parse(url).unwrap();
    url.set_query(None);
    url.query_pairs_mut().append_pair("sslmode", "verify-full");
    if let Some(authority) = authority {
        url.query_pairs_mut().append_pair("sslrootcert", authority);
    }
    url.to_string()
}

#[tokio::test]
async fn tls_to_postgresql_checks_the_certificate() {
    use sqlx::Connection;
    let Some(url) = fresh_postgres_database().await else { return };
    let authority = std::env::var("ROOMZ_TEST_POSTGRES_CA").unwrap_or_default();
    if authority.is_empty() {
        eprintln!("skipped: the test PostgreSQL takes no TLS (.ci/with-postgres needs openssl)");
        return;
    }

    // Verified against the authority that signed the server's certificate: the node works,
    // and every connection it holds is encrypted.
    let node = TestServer::node(&verified(&url, Some(&authority))).await;
    let mut alice = node.connect(ALICE).await;
    alice.post("general", "over TLS").await;
    let database = url::Url::parse(&url).unwrap().path().trim_start_matches('/').to_owned();
    let mut admin = sqlx::PgConnection::connect(&url).await.unwrap();
    let (encrypted, plain): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl)
         FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
         WHERE a.datname = $1 AND a.pid <> pg_backend_pid()",
    )
    .bind(&database)
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert!(encrypted >= 1 && plain == 0, "{encrypted} encrypted, {plain} plain");
    drop(alice);
    node.stop().await;

    // A certificate no trusted authority signed stops the start, with the reason and no
    // password.
    let dir = tempfile::tempdir().unwrap();
    let mut with_password = url::Url::parse(&verified(&url, None)).unwrap();
    with_password.set_password(Some("hunter2-not-logged")).unwrap();
    let mut vars = crate::support::base_env(dir.path());
    vars.retain(|(name, _)| name != "DATABASE_URL");
    vars.push(("DATABASE_URL".into(), with_password.to_string()));
    let (code, stderr) = crate::support::ServerProcess::spawn(dir.path(), &vars, &[]).exit().await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("Error: cannot open the database"), "{stderr}");
    assert!(stderr.to_lowercase().contains("certificate"), "{stderr}");
    assert!(stderr.contains("hint: check DATABASE_URL: that PostgreSQL runs"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");

    // A certificate file that is not there is named.
    let missing = dir.path().join("no-such-ca.crt");
    let missing = missing.to_str().unwrap();
    vars.retain(|(name, _)| name != "DATABASE_URL");
    vars.push(("DATABASE_URL".into(), verified(&url, Some(missing))));
    let (code, stderr) = crate::support::ServerProcess::spawn(dir.path(), &vars, &[]).exit().await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot read the file {missing} that sslrootcert names")),
        "{stderr}"
    );
}

/// Frames `client` gets in `window`, however many.
async fn frames_within(client: &mut Client, window: std::time::Duration) -> Vec<ServerFrame> {
    let mut frames = Vec::new();
    let deadline = tokio::time::Instant::now() + window;
    while let Ok(Ok(frame)) = tokio::time::timeout_at(deadline, client.read()).await {
        frames.push(frame);
    }
    frames
}

#[tokio::test]
async fn presence_and_markers_missed_while_not_listening_are_pushed_after() {
    use sqlx::Connection;
    let Some(url) = fresh_postgres_database().await else { return };
    let b = TestServer::node(&url).await;

    // Node A logs in as a role of its own, which (unlike a superuser) a connection limit
    // holds: with the limit at 0, A's listener cannot come back until it is lifted.
    let role = format!("roomz_node_{}", roomz::server::cluster::new_node_id());
    let mut admin = sqlx::PgConnection::connect(&url).await.unwrap();
    for statement in [
        format!("CREATE ROLE {role} LOGIN"),
        format!("GRANT CREATE, USAGE ON SCHEMA public TO {role}"),
        format!("GRANT ALL ON ALL TABLES IN SCHEMA public TO {role}"),
        format!("GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {role}"),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(statement)).execute(&mut admin).await.unwrap();
    }
    let mut a_url = url::Url::parse(&url).unwrap();
    a_url.set_username(&role).unwrap();
    let a = TestServer::node(a_url.as_str()).await;

    let mut alice_a = a.connect(ALICE).await;
    let mut alice_b = b.connect(ALICE).await;
    let mut bob = b.connect(BOB).await;
    alice_a
        .wait_for(|f| match f {
            ServerFrame::Presence { email, online: true, .. } if email == BOB => Some(()),
            _ => None,
        })
        .await;
    let (_, seq) = bob.post("general", "read me on the other node").await;
    assert_eq!(alice_a.message("general").await.seq, seq);

    // A stops listening, and stays away.
    sqlx::query(sqlx::AssertSqlSafe(format!("ALTER ROLE {role} CONNECTION LIMIT 0")))
        .execute(&mut admin)
        .await
        .unwrap();
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE usename = $1 AND query LIKE 'LISTEN%'",
    )
    .bind(&role)
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert_eq!(killed, [true]);

    // Meanwhile on B: alice reads the message, bob goes. A hears of neither.
    alice_b.send(&ClientFrame::MarkRead { room: "general".into(), seq }).await;
    drop(bob);
    let missed = frames_within(&mut alice_a, std::time::Duration::from_millis(1500)).await;
    assert!(
        !missed
            .iter()
            .any(|f| matches!(f, ServerFrame::Read { .. } | ServerFrame::Presence { .. })),
        "{missed:?}"
    );

    // A listens again: the marker and bob's going reach alice on A.
    sqlx::query(sqlx::AssertSqlSafe(format!("ALTER ROLE {role} CONNECTION LIMIT -1")))
        .execute(&mut admin)
        .await
        .unwrap();
    let read = alice_a
        .wait_for(|f| match f {
            ServerFrame::Read { room, seq } if room == "general" => Some(*seq),
            _ => None,
        })
        .await;
    assert_eq!(read, seq);
    alice_a
        .wait_for(|f| match f {
            ServerFrame::Presence { email, online: false, .. } if email == BOB => Some(()),
            _ => None,
        })
        .await;

    drop((alice_a, alice_b));
    a.stop().await;
    b.stop().await;
    for statement in [format!("DROP OWNED BY {role}"), format!("DROP ROLE {role}")] {
        sqlx::query(sqlx::AssertSqlSafe(statement)).execute(&mut admin).await.unwrap();
    }
}
