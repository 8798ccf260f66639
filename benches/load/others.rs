//! The workloads besides fan-out: idle connections, ingest, history, and a reconnect storm.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use tokio::io::AsyncWriteExt;
use tokio::sync::Semaphore;

use crate::stats::Latencies;
use crate::target::{Kind, Target};
use crate::wire::{self, Frame, FrameReader};

type Connection = (FrameReader, tokio::net::tcp::OwnedWriteHalf);

/// Connects user `i` and says hello (with `since`, when given); returns after `synced`.
async fn greeted(target: &Target, i: usize, since: &str) -> std::io::Result<Connection> {
    let (mut frames, mut writer) = wire::connect(target.addr(i), "/ws", &target.session(i)).await?;
    let mut out = Vec::new();
    wire::text_frame(
        &mut out,
        format!(r#"{{"type":"hello","v":1,"since":{{{since}}}}}"#).as_bytes(),
    );
    writer.write_all(&out).await?;
    loop {
        match frames.next().await? {
            Frame::Text(text) if text.starts_with(br#"{"type":"synced""#) => {
                return Ok((frames, writer));
            }
            Frame::Close => return Err(std::io::Error::other("closed before synced")),
            _ => {}
        }
    }
}

async fn send_frame(
    writer: &mut tokio::net::tcp::OwnedWriteHalf,
    json: &str,
) -> std::io::Result<()> {
    let mut out = Vec::with_capacity(json.len() + 8);
    wire::text_frame(&mut out, json.as_bytes());
    writer.write_all(&out).await
}

/// Connects `count` clients, a bounded number at a time.
async fn many<T>(count: usize, make: impl Fn(usize) -> T) -> Vec<T::Output>
where
    T: std::future::Future,
{
    let gate = Arc::new(Semaphore::new(200));
    join_all((0..count).map(|i| {
        let gate = gate.clone();
        let work = make(i);
        async move {
            let _permit = gate.acquire().await.expect("semaphore");
            work.await
        }
    }))
    .await
}

/// Idle: the server's memory per connected, authenticated, idle client.
pub async fn idle(target: &Target, clients: usize) -> (u64, u64) {
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = target.rss();
    let connections: Vec<_> = match target.kind {
        Kind::Roomz => {
            many(clients, |i| async move {
                greeted(target, i, "").await.map(|c| Box::new(c) as Box<dyn Send>)
            })
            .await
        }
        Kind::Irc => {
            many(clients, |i| async move {
                irc_registered(target, i).await.map(|c| Box::new(c) as Box<dyn Send>)
            })
            .await
        }
    };
    let failed = connections.iter().filter(|c| c.is_err()).count();
    assert_eq!(failed, 0, "{failed} clients could not connect");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = target.rss();
    drop(connections);
    (before, after)
}

async fn irc_registered(
    target: &Target,
    i: usize,
) -> std::io::Result<tokio::io::BufReader<tokio::net::TcpStream>> {
    use tokio::io::AsyncBufReadExt;
    let mut stream = tokio::net::TcpStream::connect(target.addr(i)).await?;
    stream.write_all(format!("NICK i{i}\r\nUSER i{i} 0 * :idle\r\n").as_bytes()).await?;
    let mut reader = tokio::io::BufReader::new(stream);
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).await? == 0 {
            return Err(std::io::Error::other("closed"));
        }
        if let Some(server) = line.strip_prefix("PING ") {
            reader.get_mut().write_all(format!("PONG {server}").as_bytes()).await?;
        }
        if line.contains(" 001 ") {
            return Ok(reader);
        }
    }
}

/// Ingest: `clients` clients, each in a room of its own, keep `window` sends in flight.
/// Returns acknowledged messages per second and the ack latencies.
pub async fn ingest(
    target: &Target,
    clients: usize,
    window: usize,
    duration: Duration,
) -> (f64, Latencies) {
    let connections = many(clients, |i| async move {
        let (mut frames, mut writer) = greeted(target, i, "").await?;
        send_frame(&mut writer, &format!(r#"{{"type":"join","room":"ingest{i}"}}"#)).await?;
        loop {
            if let Frame::Text(text) = frames.next().await?
                && text.starts_with(br#"{"type":"joined""#)
            {
                return Ok::<_, std::io::Error>((frames, writer));
            }
        }
    })
    .await;
    let started = Instant::now();
    let until = started + duration;
    let tasks = connections.into_iter().enumerate().map(|(i, connection)| {
        let (mut frames, mut writer) = connection.expect("connected");
        tokio::spawn(async move {
            let mut sent_at: HashMap<u64, Instant> = HashMap::new();
            let mut latencies = Vec::new();
            let mut next = 0u64;
            let text = "x".repeat(200);
            loop {
                let mut out = Vec::new();
                while sent_at.len() < window && Instant::now() < until {
                    next += 1;
                    let json = format!(
                        r#"{{"type":"send","room":"ingest{i}","id":"{next}","text":"{text}"}}"#
                    );
                    wire::text_frame(&mut out, json.as_bytes());
                    sent_at.insert(next, Instant::now());
                }
                if !out.is_empty() && writer.write_all(&out).await.is_err() {
                    break;
                }
                if sent_at.is_empty() {
                    break;
                }
                match frames.next().await {
                    Ok(Frame::Text(text)) if text.starts_with(br#"{"type":"ack","id":""#) => {
                        if let Some(id) = wire::number(&text[20..])
                            && let Some(at) = sent_at.remove(&id)
                        {
                            latencies.push(at.elapsed().as_micros() as u32);
                        }
                    }
                    Ok(Frame::Ping) => {
                        let _ = writer.write_all(&wire::PONG).await;
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            latencies
        })
    });
    let mut all = Vec::new();
    for task in join_all(tasks).await {
        all.extend(task.expect("client task"));
    }
    let elapsed = started.elapsed().as_secs_f64();
    (all.len() as f64 / elapsed, Latencies::new(all))
}

/// Members of the history room who take turns asking: the server limits each user's
/// requests (a burst of 60, then 20 a second), and one reader would measure that limit.
pub const HISTORY_READERS: usize = 50;

/// History: pages of 50 from a room of `messages` messages (filled before the server
/// started), one request at a time, from the newest page and from random depths.
pub async fn history(target: &Target, messages: u64, requests: usize) -> Latencies {
    let readers = many(HISTORY_READERS, |i| greeted(target, i, "")).await;
    let mut readers: Vec<Connection> = readers.into_iter().map(|r| r.expect("connected")).collect();
    let mut latencies = Vec::with_capacity(requests);
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for req in 0..requests {
        // xorshift: a spread of depths, the same every run.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let before = if req % 4 == 0 {
            String::new()
        } else {
            format!(r#","before":{}"#, 1 + seed % messages)
        };
        let json =
            format!(r#"{{"type":"history","req":{req},"room":"history","limit":50{before}}}"#);
        let (frames, writer) = &mut readers[req % HISTORY_READERS];
        let started = Instant::now();
        send_frame(writer, &json).await.expect("send");
        loop {
            match frames.next().await.expect("answer") {
                Frame::Text(text) if text.starts_with(br#"{"type":"history""#) => break,
                Frame::Text(text) if text.starts_with(br#"{"type":"error""#) => {
                    panic!("history refused: {}", String::from_utf8_lossy(text))
                }
                Frame::Ping => writer.write_all(&wire::PONG).await.expect("pong"),
                _ => {}
            }
        }
        latencies.push(started.elapsed().as_micros() as u32);
    }
    Latencies::new(latencies)
}

/// Fills a fresh database with one room of `messages` messages (run before the server
/// starts on it). It runs on a thread of its own: the caller is inside the async runtime.
pub fn fill_history(path: &std::path::Path, messages: u64) {
    std::thread::scope(|scope| {
        scope.spawn(|| fill_history_now(path, messages)).join().expect("the fill finished");
    });
}

fn fill_history_now(path: &std::path::Path, messages: u64) {
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        use roomz::server::store::Store;
        let store = roomz::server::store::sqlite::SqliteStore::open(path).await.expect("open");
        let now = chrono::Utc::now().timestamp_millis();
        for reader in 0..HISTORY_READERS {
            let email = crate::target::email(reader);
            store.ensure_user(&email, now).await.expect("user");
            store.join_room(&email, "history", now).await.expect("room");
        }
        let pool = store.pool();
        sqlx::query(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1)
             INSERT INTO messages (room_id, seq, author, client_id, body, created_at)
             SELECT (SELECT id FROM rooms WHERE name = 'history'), i, ?2, 'h' || i,
                    printf('message %d of a long history, with enough text to look like chat', i), ?3 + i
             FROM n",
        )
        .bind(messages as i64)
        .bind(crate::target::email(0))
        .bind(now)
        .execute(pool)
        .await
        .expect("fill");
        sqlx::query("UPDATE rooms SET last_seq = ?1 WHERE name = 'history'")
            .bind(messages as i64)
            .execute(pool)
            .await
            .expect("last_seq");
        store.close().await;
    });
}

/// Reconnect storm: `clients` clients in `rooms` rooms all drop; `backlog` messages per
/// room are posted meanwhile; all come back at once with their cursors. Returns the time
/// until every client has every message it missed.
pub async fn storm(target: &Target, clients: usize, rooms: usize, backlog: usize) -> Duration {
    // Join everyone to a room, and note where each room stands.
    let joined = many(clients, |i| async move {
        let (mut frames, mut writer) = greeted(target, i, "").await?;
        send_frame(&mut writer, &format!(r#"{{"type":"join","room":"storm{}"}}"#, i % rooms))
            .await?;
        loop {
            if let Frame::Text(text) = frames.next().await?
                && text.starts_with(br#"{"type":"joined""#)
            {
                return Ok::<_, std::io::Error>(());
            }
        }
    })
    .await;
    assert!(joined.iter().all(Result::is_ok), "clients could not join");
    // Everyone is gone now (the connections above were dropped). Post the backlog.
    let (mut answers, mut poster) = greeted(target, clients, "").await.expect("poster");
    for room in 0..rooms {
        join_within_the_request_rate(&mut answers, &mut poster, &format!("storm{room}")).await;
        let mut out = Vec::new();
        for k in 0..backlog {
            let json = format!(
                r#"{{"type":"send","room":"storm{room}","id":"b{room}-{k}","text":"backlog {k}"}}"#
            );
            wire::text_frame(&mut out, json.as_bytes());
        }
        poster.write_all(&out).await.expect("backlog");
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    // All come back at once, each from where its room was (sequence 0: the rooms were new).
    let started = Instant::now();
    let back = many(clients, |i| async move {
        let (mut frames, _writer) =
            greeted_counting(target, i, &format!(r#""storm{}":0"#, i % rooms), backlog).await?;
        let _ = &mut frames;
        Ok::<_, std::io::Error>(())
    })
    .await;
    let failed = back.iter().filter(|r| r.is_err()).count();
    assert_eq!(failed, 0, "{failed} clients did not catch up");
    started.elapsed()
}

/// Joins a room, waiting and asking again while the server's request rate says so.
async fn join_within_the_request_rate(
    answers: &mut FrameReader,
    writer: &mut tokio::net::tcp::OwnedWriteHalf,
    room: &str,
) {
    loop {
        send_frame(writer, &format!(r#"{{"type":"join","room":"{room}"}}"#)).await.expect("join");
        loop {
            match answers.next().await.expect("an answer to join") {
                Frame::Text(text) if text.starts_with(br#"{"type":"joined""#) => return,
                Frame::Text(text) if text.starts_with(br#"{"type":"error""#) => break,
                Frame::Ping => writer.write_all(&wire::PONG).await.expect("pong"),
                _ => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Says hello with `since` and returns once `synced` came after `expected` messages.
async fn greeted_counting(
    target: &Target,
    i: usize,
    since: &str,
    expected: usize,
) -> std::io::Result<Connection> {
    let (mut frames, mut writer) = wire::connect(target.addr(i), "/ws", &target.session(i)).await?;
    let mut out = Vec::new();
    wire::text_frame(
        &mut out,
        format!(r#"{{"type":"hello","v":1,"since":{{{since}}}}}"#).as_bytes(),
    );
    writer.write_all(&out).await?;
    let mut messages = 0;
    loop {
        match frames.next().await? {
            Frame::Text(text) if text.starts_with(br#"{"type":"message""#) => messages += 1,
            Frame::Text(text) if text.starts_with(br#"{"type":"synced""#) => {
                if messages < expected {
                    return Err(std::io::Error::other(format!(
                        "{messages} of {expected} messages"
                    )));
                }
                return Ok((frames, writer));
            }
            Frame::Close => return Err(std::io::Error::other("closed")),
            _ => {}
        }
    }
}

/// The disk's durable-write latency: `writes` overwrites of 4 KiB in a preallocated file,
/// each followed by fdatasync and a millisecond's pause (a commit at a time, as at a low
/// message rate). This is the floor under every acknowledged message.
pub fn disk(writes: usize) -> Latencies {
    use std::io::{Seek, SeekFrom, Write};
    const SPAN: u64 = 4 << 20;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut file = std::fs::File::create(dir.path().join("probe.wal")).expect("probe file");
    file.write_all(&vec![0u8; SPAN as usize]).expect("preallocate");
    file.sync_all().expect("sync");
    let page = [7u8; 4096];
    let mut latencies = Vec::with_capacity(writes);
    for i in 0..writes as u64 {
        file.seek(SeekFrom::Start((i * 4096) % SPAN)).expect("seek");
        let started = Instant::now();
        file.write_all(&page).expect("write");
        file.sync_data().expect("fdatasync");
        latencies.push(started.elapsed().as_micros() as u32);
        std::thread::sleep(Duration::from_millis(1));
    }
    Latencies::new(latencies)
}
