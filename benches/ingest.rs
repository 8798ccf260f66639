//! Ingest benchmark: acknowledged messages per second, and the latency from `send` to
//! `ack`, through the real server (in this process, on 127.0.0.1, with a SQLite file on
//! disk) and real WebSocket clients. Every ack means the message is committed.
//!
//! `cargo bench --bench ingest` (settings: ROOMZ_BENCH_CLIENTS, ROOMZ_BENCH_MESSAGES per
//! client, ROOMZ_BENCH_WINDOW sends in flight per client).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use roomz::protocol::{ClientFrame, PROTOCOL_VERSION, ServerFrame};
use roomz::server::config::{AllowListSource, Config};
use roomz::server::mailer::ConsoleMailer;
use roomz::server::{ServerOptions, start};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const SECRET: &str = "bench-secret-that-is-long-enough-0123456789";

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A session signed with the server's key, as an operator's tool would make one.
fn session(email: &str) -> String {
    let now = chrono::Utc::now().timestamp();
    let claims = serde_json::json!({ "sub": email, "iat": now, "exp": now + 3600, "iss": "roomz", "aud": "roomz" });
    let key = EncodingKey::from_secret(SECRET.as_bytes()).expect("key");
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).expect("sign")
}

/// One client: sends `messages` messages keeping `window` in flight; returns ack latencies.
async fn client(url: String, email: String, messages: usize, window: usize) -> Vec<Duration> {
    let mut request = url.into_client_request().expect("url");
    let bearer = format!("Bearer {}", session(&email)).parse().expect("header");
    request.headers_mut().insert("authorization", bearer);
    let (ws, _) = tokio_tungstenite::connect_async(request).await.expect("connect");
    let (mut tx, mut rx) = ws.split();
    let hello = ClientFrame::Hello { v: PROTOCOL_VERSION, since: Default::default() };
    tx.send(Message::text(hello.to_json())).await.expect("hello");

    let text = "x".repeat(200);
    let mut sent_at: HashMap<String, Instant> = HashMap::with_capacity(window);
    let mut latencies = Vec::with_capacity(messages);
    let mut next = 0;
    while latencies.len() < messages {
        while next < messages && sent_at.len() < window {
            let id = format!("{}-{next}", email.split('@').next().unwrap_or("c"));
            let frame =
                ClientFrame::Send { room: "general".into(), id: id.clone(), text: text.clone() };
            tx.feed(Message::text(frame.to_json())).await.expect("send");
            sent_at.insert(id, Instant::now());
            next += 1;
        }
        tx.flush().await.expect("flush");
        let Some(Ok(Message::Text(raw))) = rx.next().await else { panic!("connection ended") };
        // Fan-out frames are skipped cheaply; only acks are parsed.
        if !raw.starts_with(r#"{"type":"ack""#) {
            if raw.starts_with(r#"{"type":"error""#) {
                panic!("server refused a send: {raw}");
            }
            continue;
        }
        if let Ok(ServerFrame::Ack { id, .. }) = serde_json::from_str(&raw)
            && let Some(at) = sent_at.remove(&id)
        {
            latencies.push(at.elapsed());
        }
    }
    latencies
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[at]
}

fn main() {
    let clients = setting("ROOMZ_BENCH_CLIENTS", 20);
    let messages = setting("ROOMZ_BENCH_MESSAGES", 2_000);
    let window = setting("ROOMZ_BENCH_WINDOW", 64);
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let dir = tempfile::tempdir().expect("temp dir");
        let emails: Vec<String> = (0..clients).map(|i| format!("bench{i}@example.com")).collect();
        let env: HashMap<&str, String> = HashMap::from([
            ("JWT_SECRET_KEY", SECRET.to_owned()),
            ("ALLOWED_EMAILS", emails.join(",")),
            ("DATABASE_URL", format!("sqlite:{}", dir.path().join("bench.db").display())),
            ("ROOMZ_BIND", "127.0.0.1:0".to_owned()),
            ("ROOMZ_MESSAGES_PER_SECOND", "1000000".to_owned()),
            ("ROOMZ_MESSAGE_BURST", "1000000".to_owned()),
        ]);
        let loaded = Config::from_lookup(|k| env.get(k).cloned(), AllowListSource::Environment).expect("config");
        let mailer = Arc::new(ConsoleMailer::with_sink(|_| {}));
        let options = ServerOptions { mailer: Some(mailer), ..ServerOptions::default() };
        let server = start(loaded.config, options).await.expect("server");
        let url = format!("ws://{}/ws", server.local_addr());

        let started = Instant::now();
        let tasks: Vec<_> = emails
            .iter()
            .map(|email| tokio::spawn(client(url.clone(), email.clone(), messages, window)))
            .collect();
        let mut latencies = Vec::new();
        for task in tasks {
            latencies.extend(task.await.expect("client"));
        }
        let elapsed = started.elapsed();
        latencies.sort_unstable();
        let total = latencies.len();
        println!(
            "ingest: {clients} clients x {messages} messages of 200 bytes, {window} in flight each, all in one room"
        );
        println!(
            "  {total} acknowledged in {:.2} s = {:.0} acked messages/s (each ack after a durable commit)",
            elapsed.as_secs_f64(),
            total as f64 / elapsed.as_secs_f64()
        );
        println!(
            "  ack latency: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            percentile(&latencies, 0.50).as_secs_f64() * 1e3,
            percentile(&latencies, 0.99).as_secs_f64() * 1e3,
            latencies.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
        );
        server.shutdown().await;
    });
}
