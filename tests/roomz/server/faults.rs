//! The store failing under the server: the database locked by another program past the
//! server's patience, and the disk full (a file-size limit on the server process, which is
//! what a full disk looks like to SQLite: a write that cannot grow the file). The server
//! answers with errors and stays up, loses nothing it acknowledged, keeps each sender's
//! messages in the order sent, and recovers when the fault goes.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use roomz::protocol::{ClientFrame, ErrorCode, ServerFrame};
use sqlx::Connection;

use crate::support::{ALICE, Client, ServerProcess, TestServer, base_env, builder};

/// Every stored message of `general`, by id, with its sequence number; no id twice.
async fn stored(client: &mut Client) -> BTreeMap<String, u64> {
    let mut stored = BTreeMap::new();
    for (messages, _) in client.history_pages("general", 200).await {
        for message in messages {
            assert!(stored.insert(message.id, message.seq).is_none(), "a message stored twice");
        }
    }
    stored
}

#[tokio::test]
async fn a_locked_database_refuses_for_a_while_and_keeps_the_order() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("locked.db");
    let url = format!("sqlite:{}", db.display());
    let server = TestServer::start_with(&[("DATABASE_URL", &url)]).await;
    let alice =
        builder(&server.base_url()).session_token(server.fresh_link(ALICE).await).build().unwrap();
    alice.connect().await.unwrap();
    alice.send("general", "before the lock").await.unwrap();

    // Another program takes the write lock and keeps it past the server's patience (5 s).
    let mut other = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query("BEGIN EXCLUSIVE").execute(&mut other).await.unwrap();
    let sends: Vec<_> = (0..20).map(|i| alice.send("general", &format!("in order {i}"))).collect();
    tokio::time::sleep(Duration::from_millis(6_500)).await;
    assert!(alice.outbox_len() > 0, "nothing could be stored meanwhile");
    sqlx::query("ROLLBACK").execute(&mut other).await.unwrap();
    drop(other);

    // Every send goes through once the lock is gone, and in the order it was made.
    let mut seqs = Vec::new();
    for send in sends {
        let sent = tokio::time::timeout(Duration::from_secs(15), send).await.unwrap().unwrap();
        seqs.push(sent.seq);
    }
    assert_eq!(seqs, (2..=21).collect::<Vec<u64>>(), "stored once each, in the order sent");
}

#[tokio::test]
async fn a_full_disk_refuses_messages_loses_none_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let vars = base_env(dir.path());
    // SIGXFSZ ignored, so a write past the limit fails with EFBIG as on a full disk.
    let limited = "trap '' XFSZ; exec prlimit --fsize=2000000:unlimited \"$0\" serve";
    let mut server = ServerProcess::spawn_in_shell(dir.path(), &vars, limited).ready().await;
    let session = server.login(ALICE).await;
    let mut alice = Client::connect(&server.ws_url(), &session, HashMap::new()).await;

    // Large messages, one at a time, until the store refuses one.
    let text = "x".repeat(9_000);
    let mut acked: BTreeMap<String, u64> = BTreeMap::new();
    let mut refused = None;
    for i in 0..2_000 {
        let id = format!("m{i}");
        alice
            .send(&ClientFrame::Send { room: "general".into(), id: id.clone(), text: text.clone() })
            .await;
        let answer = alice
            .wait_for(|f| match f {
                ServerFrame::Ack { id: acked_id, seq, .. } if *acked_id == id => Some(Ok(*seq)),
                ServerFrame::Error(e) if e.id.as_deref() == Some(id.as_str()) => Some(Err(e.code)),
                _ => None,
            })
            .await;
        match answer {
            Ok(seq) => {
                acked.insert(id, seq);
            }
            Err(code) => {
                assert_eq!(code, ErrorCode::StoreUnavailable);
                refused = Some(id);
                break;
            }
        }
    }
    let refused = refused.expect("the file-size limit was never reached");
    assert!(acked.len() > 10, "the limit came too soon to mean anything");
    // The server is still there, and says so.
    let pong = alice.request(|req| ClientFrame::Ping { req }).await;
    assert!(matches!(pong, ServerFrame::Pong { .. }));

    // Room again on the disk: the refused message, sent again, is stored, and so are others.
    let lifted = std::process::Command::new("prlimit")
        .args(["--pid", &server.child.id().to_string(), "--fsize=unlimited:unlimited"])
        .status()
        .unwrap();
    assert!(lifted.success());
    let mut after = vec![refused.clone()];
    after.extend((0..3).map(|i| format!("after-{i}")));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    for id in &after {
        let seq = loop {
            assert!(tokio::time::Instant::now() < deadline, "the server never recovered");
            alice
                .send(&ClientFrame::Send {
                    room: "general".into(),
                    id: id.clone(),
                    text: "back".into(),
                })
                .await;
            let answer = alice
                .wait_for(|f| match f {
                    ServerFrame::Ack { id: acked_id, seq, .. } if acked_id == id => {
                        Some(Some(*seq))
                    }
                    ServerFrame::Error(e) if e.id.as_deref() == Some(id.as_str()) => Some(None),
                    _ => None,
                })
                .await;
            match answer {
                Some(seq) => break seq,
                None => tokio::time::sleep(Duration::from_millis(300)).await,
            }
        };
        acked.insert(id.clone(), seq);
    }

    // After a restart, everything acknowledged is there, once, with no gap.
    server.signal("TERM");
    let _ = server.exit().await;
    let server = ServerProcess::spawn(dir.path(), &vars, &[]).ready().await;
    let mut alice = Client::connect(&server.ws_url(), &session, HashMap::new()).await;
    let stored = stored(&mut alice).await;
    for (id, seq) in &acked {
        assert_eq!(stored.get(id), Some(seq), "acknowledged message {id} is missing or moved");
    }
    let mut seqs: Vec<u64> = stored.values().copied().collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "no gap");
}
