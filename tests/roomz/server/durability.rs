//! "Acknowledged means on disk": messages acknowledged before the server is killed with
//! SIGKILL are all there, once each, after a restart, and a listener that reconnects each
//! time gets each exactly once. `ROOMZ_KILL_ROUNDS` sets how many kills (default 5; a
//! longer run: `ROOMZ_KILL_ROUNDS=200 cargo test --test roomz durability`). And a backup
//! taken while messages are written is whole.

use std::collections::{BTreeMap, HashMap};

use roomz::protocol::{ClientFrame, ServerFrame};

use crate::support::{ALICE, BOB, Client, ServerProcess, base_env};

/// Messages a listener received, by id (each must come once), and where it stands.
#[derive(Default)]
struct Listener {
    received: BTreeMap<String, u64>,
    since: HashMap<String, u64>,
}

impl Listener {
    /// Takes every message frame the connection still delivers, until it ends.
    async fn drain(&mut self, client: &mut Client) {
        while let Ok(frame) = client.read().await {
            self.take(frame);
        }
    }

    fn take(&mut self, frame: ServerFrame) {
        if let ServerFrame::Message(message) = frame {
            let previous = self.received.insert(message.id.clone(), message.seq);
            assert!(previous.is_none(), "message {} delivered twice", message.id);
            self.since.insert(message.room, message.seq);
        }
    }
}

#[tokio::test]
async fn acknowledged_messages_survive_sigkill() {
    let rounds: usize =
        std::env::var("ROOMZ_KILL_ROUNDS").ok().and_then(|n| n.parse().ok()).unwrap_or(5);
    let dir = tempfile::tempdir().unwrap();
    let vars = base_env(dir.path());
    let mut acked: BTreeMap<String, u64> = BTreeMap::new();
    let mut session = String::new();
    let mut bob_session = String::new();
    let mut bob = Listener::default();

    for round in 0..rounds {
        let mut server = ServerProcess::spawn(dir.path(), &vars, &[]).ready().await;
        if session.is_empty() {
            session = server.login(ALICE).await;
            bob_session = server.login(BOB).await;
        }
        let mut alice = Client::connect(&server.ws_url(), &session, HashMap::new()).await;
        let mut listener = Client::connect(&server.ws_url(), &bob_session, bob.since.clone()).await;
        // Pipeline a burst of sends, then kill the server while acks are still arriving.
        let burst = 400;
        let before_round = acked.len();
        for i in 0..burst {
            let id = format!("r{round}-{i}");
            alice
                .send(&ClientFrame::Send {
                    room: "general".into(),
                    id,
                    text: format!("round {round} message {i}"),
                })
                .await;
        }
        while acked.len() < before_round + 50 {
            let frame = alice.next().await;
            if let ServerFrame::Ack { id, seq, .. } = frame {
                acked.insert(id, seq);
            }
        }
        server.signal("KILL");
        // Acks that were already on the wire count too.
        while let Ok(frame) = alice.read().await {
            if let ServerFrame::Ack { id, seq, .. } = frame {
                acked.insert(id, seq);
            }
        }
        bob.drain(&mut listener).await;
        let _ = server.exit().await;
    }

    let server = ServerProcess::spawn(dir.path(), &vars, &[]).ready().await;
    let mut alice = Client::connect(&server.ws_url(), &session, HashMap::new()).await;
    // The listener catches up on what it missed while the server was down.
    let mut listener = Client::connect(&server.ws_url(), &bob_session, bob.since.clone()).await;
    listener.wait_for(|f| matches!(f, ServerFrame::Synced { .. }).then_some(())).await;
    let mut stored: BTreeMap<String, u64> = BTreeMap::new();
    for (messages, _) in alice.history_pages("general", 200).await {
        for message in messages {
            assert!(stored.insert(message.id, message.seq).is_none(), "a message is stored twice");
        }
    }
    let seqs: Vec<u64> = {
        let mut s: Vec<u64> = stored.values().copied().collect();
        s.sort_unstable();
        s
    };
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "sequence numbers have no gap");
    for (id, seq) in &acked {
        assert_eq!(stored.get(id), Some(seq), "acknowledged message {id} is missing or moved");
    }
    // Frames read while waiting for `synced` were kept aside: take them, then compare.
    while let Some(frame) = listener.take_pending() {
        bob.take(frame);
    }
    assert_eq!(bob.received, stored, "the listener got every stored message exactly once");
    assert!(
        acked.len() >= 150,
        "the test acknowledged too little to mean anything: {}",
        acked.len()
    );
    eprintln!(
        "{rounds} SIGKILLs: {} acknowledged of {} stored, each stored and delivered once",
        acked.len(),
        stored.len()
    );
}

#[tokio::test]
async fn a_backup_of_a_live_server_is_whole_and_restores() {
    let dir = tempfile::tempdir().unwrap();
    let vars = base_env(dir.path());
    let mut server = ServerProcess::spawn(dir.path(), &vars, &[]).ready().await;
    let session = server.login(ALICE).await;
    let mut alice = Client::connect(&server.ws_url(), &session, HashMap::new()).await;
    for i in 0..100 {
        alice.post("general", &format!("before the backup {i}")).await;
    }
    // More go in while the backup is taken.
    for i in 0..300 {
        let frame = ClientFrame::Send {
            room: "general".into(),
            id: format!("during-{i}"),
            text: format!("during {i}"),
        };
        alice.send(&frame).await;
    }
    let copy = dir.path().join("backups/roomz-copy.db");
    std::fs::create_dir_all(copy.parent().unwrap()).unwrap();
    let backup = |path: std::path::PathBuf| {
        let (dir, vars) = (dir.path().to_owned(), vars.clone());
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_roomz"))
                .arg("backup")
                .arg(path)
                .current_dir(&dir)
                .env_clear()
                .env("HOME", &dir)
                .envs(vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .output()
                .unwrap()
        })
    };
    let out = backup(copy.clone()).await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("backed up"));
    let again = backup(copy.clone()).await.unwrap();
    assert!(!again.status.success(), "a backup never overwrites a file");
    drop(alice);
    server.signal("TERM");
    let _ = server.exit().await;

    // Restore: the copy in the database's place, without the old write-ahead log.
    for leftover in ["roomz.db-wal", "roomz.db-shm"] {
        let _ = std::fs::remove_file(dir.path().join(leftover));
    }
    std::fs::copy(&copy, dir.path().join("roomz.db")).unwrap();
    let server = ServerProcess::spawn(dir.path(), &vars, &[]).ready().await;
    let mut alice = Client::connect(&server.ws_url(), &session, HashMap::new()).await;
    let pages = alice.history_pages("general", 200).await;
    let mut seqs: Vec<u64> = pages.iter().flat_map(|(m, _)| m.iter().map(|m| m.seq)).collect();
    seqs.sort_unstable();
    assert!(seqs.len() >= 100, "everything acknowledged before the backup: {}", seqs.len());
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "one snapshot: no gap");
}
