//! The store failing under the server: the database locked by another program past the
//! server's patience; the disk full, as a small tmpfs and as a file-size limit on the server
//! process (what a full disk looks like to SQLite: a write that cannot grow the file; it
//! needs no privilege); and the database files made unwritable (immutable, which stops even
//! root). The server answers with errors and stays up, loses nothing it acknowledged, keeps
//! each sender's messages in the order sent, and recovers when the fault goes. The tmpfs and
//! immutable tests need root, and say so when they cannot run.

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
    let (mut acked, refused) = fill_until_refused(&mut alice).await;

    // Room again on the disk.
    let lifted = std::process::Command::new("prlimit")
        .args(["--pid", &server.child.id().to_string(), "--fsize=unlimited:unlimited"])
        .status()
        .unwrap();
    assert!(lifted.success());
    acked.extend(send_until_stored(&mut alice, &refused).await);
    server.signal("TERM");
    let _ = server.exit().await;
    all_there_after_a_restart(dir.path(), &vars, &session, &acked).await;
}

#[tokio::test]
async fn a_full_tmpfs_refuses_messages_loses_none_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let Some(disk) = SmallDisk::mount(&dir.path().join("disk"), "2m") else {
        eprintln!("skipped: mounting a tmpfs needs root (the file-size limit test covers it)");
        return;
    };
    let mut vars = base_env(dir.path());
    let db = format!("sqlite:{}", disk.path.join("roomz.db").display());
    vars.retain(|(k, _)| k != "DATABASE_URL");
    vars.push(("DATABASE_URL".into(), db));
    let mut server = ServerProcess::spawn(dir.path(), &vars, &[]).ready().await;
    let session = server.login(ALICE).await;
    let mut alice = Client::connect(&server.ws_url(), &session, HashMap::new()).await;
    let (mut acked, refused) = fill_until_refused(&mut alice).await;

    disk.grow("64m");
    acked.extend(send_until_stored(&mut alice, &refused).await);
    server.signal("TERM");
    let _ = server.exit().await;
    all_there_after_a_restart(dir.path(), &vars, &session, &acked).await;
}

#[tokio::test]
async fn an_unwritable_database_refuses_messages_loses_none_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let vars = base_env(dir.path());
    let mut server = ServerProcess::spawn(dir.path(), &vars, &[]).ready().await;
    let session = server.login(ALICE).await;
    let mut alice = Client::connect(&server.ws_url(), &session, HashMap::new()).await;
    let mut acked = BTreeMap::new();
    for i in 0..5 {
        let (id, seq) = alice.post("general", &format!("before {i}")).await;
        acked.insert(id, seq);
    }
    // Immutable files: not even root may write them (permissions would not stop root).
    let files: Vec<_> = ["roomz.db", "roomz.db-wal"].iter().map(|f| dir.path().join(f)).collect();
    if !chattr("+i", &files) {
        eprintln!("skipped: chattr +i needs root on a file system that has it");
        return;
    }
    let refused = "while-unwritable".to_owned();
    let frame = ClientFrame::Send { room: "general".into(), id: refused.clone(), text: "x".into() };
    alice.send(&frame).await;
    let code = alice
        .wait_for(|f| match f {
            ServerFrame::Error(e) if e.id.as_deref() == Some(refused.as_str()) => Some(e.code),
            ServerFrame::Ack { id, .. } if *id == refused => Some(ErrorCode::BadFrame),
            _ => None,
        })
        .await;
    assert!(chattr("-i", &files));
    assert_eq!(code, ErrorCode::StoreUnavailable, "refused, not stored");
    acked.extend(send_until_stored(&mut alice, &refused).await);
    server.signal("TERM");
    let _ = server.exit().await;
    all_there_after_a_restart(dir.path(), &vars, &session, &acked).await;
}

fn chattr(flag: &str, files: &[std::path::PathBuf]) -> bool {
    std::process::Command::new("chattr")
        .arg(flag)
        .args(files)
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A small tmpfs mounted for one test, unmounted when dropped.
struct SmallDisk {
    path: std::path::PathBuf,
}

impl SmallDisk {
    fn mount(path: &std::path::Path, size: &str) -> Option<Self> {
        std::fs::create_dir_all(path).ok()?;
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        mounted.then(|| Self { path: path.to_owned() })
    }

    fn grow(&self, size: &str) {
        let grown = std::process::Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.path)
            .status()
            .unwrap();
        assert!(grown.success());
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Large messages, one at a time, until the store refuses one: what was acknowledged, and
/// the id refused.
async fn fill_until_refused(alice: &mut Client) -> (BTreeMap<String, u64>, String) {
    let text = "x".repeat(9_000);
    let mut acked: BTreeMap<String, u64> = BTreeMap::new();
    for i in 0..5_000 {
        let id = format!("m{i}");
        let frame =
            ClientFrame::Send { room: "general".into(), id: id.clone(), text: text.clone() };
        alice.send(&frame).await;
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
                assert!(acked.len() > 10, "the store was full too soon to mean anything");
                // The server is still there, and says so.
                let pong = alice.request(|req| ClientFrame::Ping { req }).await;
                assert!(matches!(pong, ServerFrame::Pong { .. }));
                return (acked, id);
            }
        }
    }
    panic!("the store never filled up");
}

/// Sends the refused message again, and three more, until each is acknowledged.
async fn send_until_stored(alice: &mut Client, refused: &str) -> BTreeMap<String, u64> {
    let mut ids = vec![refused.to_owned()];
    ids.extend((0..3).map(|i| format!("after-{i}")));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut acked = BTreeMap::new();
    for id in ids {
        let seq = loop {
            assert!(tokio::time::Instant::now() < deadline, "the server never recovered");
            let frame =
                ClientFrame::Send { room: "general".into(), id: id.clone(), text: "back".into() };
            alice.send(&frame).await;
            let answer = alice
                .wait_for(|f| match f {
                    ServerFrame::Ack { id: acked_id, seq, .. } if *acked_id == id => {
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
        acked.insert(id, seq);
    }
    acked
}

/// Starts the server again: everything acknowledged is there, once, with no gap.
async fn all_there_after_a_restart(
    dir: &std::path::Path,
    vars: &[(String, String)],
    session: &str,
    acked: &BTreeMap<String, u64>,
) {
    let server = ServerProcess::spawn(dir, vars, &[]).ready().await;
    let mut alice = Client::connect(&server.ws_url(), session, HashMap::new()).await;
    let stored = stored(&mut alice).await;
    for (id, seq) in acked {
        assert_eq!(stored.get(id), Some(seq), "acknowledged message {id} is missing or moved");
    }
    let mut seqs: Vec<u64> = stored.values().copied().collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "no gap");
}
