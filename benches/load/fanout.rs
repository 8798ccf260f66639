//! Fan-out: N clients in R rooms (client i in room i mod R), a fixed total rate of 200-byte
//! messages sent open-loop (each at its scheduled time, whatever happened before), and the
//! latency from that scheduled time to its receipt by every other member of the room.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, mpsc};

use crate::stats::Latencies;
use crate::target::{Kind, Target};
use crate::wire::{self, Frame};

/// What to run.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    pub clients: usize,
    pub rooms: usize,
    /// Messages per second, all senders together.
    pub rate: f64,
    pub size: usize,
    pub warmup: Duration,
    pub duration: Duration,
}

impl Spec {
    /// Members of room `r`.
    fn members(&self, r: usize) -> usize {
        self.clients / self.rooms + usize::from(r < self.clients % self.rooms)
    }
}

/// What came out.
#[derive(Debug)]
pub struct Outcome {
    pub sent: u64,
    pub expected: u64,
    pub delivered: u64,
    pub latencies: Latencies,
    pub cpu: Duration,
    pub rss: u64,
    pub window: Duration,
    pub lost_connections: u64,
    /// CPU the load generator itself used in the window.
    pub own_cpu: Duration,
}

/// The window in which sends are measured, as nanoseconds since `epoch` (set once the
/// schedule is known; readers consult it on every delivery).
struct Window {
    epoch: Instant,
    from: AtomicU64,
    to: AtomicU64,
}

impl Window {
    fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    fn contains(&self, at: u64) -> bool {
        (self.from.load(Ordering::Relaxed)..self.to.load(Ordering::Relaxed)).contains(&at)
    }
}

/// Per-client results, merged at the end.
#[derive(Default)]
struct Tally {
    latencies: Vec<u32>,
    delivered: u64,
}

enum Command {
    Send(u64),
    Pong(Vec<u8>),
}

pub async fn run(target: &Target, spec: Spec) -> Outcome {
    let epoch = Instant::now();
    let lost = Arc::new(AtomicU64::new(0));
    let tallies: Vec<Arc<Mutex<Tally>>> = (0..spec.clients).map(|_| Arc::default()).collect();
    let window =
        Arc::new(Window { epoch, from: AtomicU64::new(u64::MAX), to: AtomicU64::new(u64::MAX) });

    // Connect everyone (a bounded number at a time), then start reading and writing.
    let gate = Arc::new(Semaphore::new(200));
    let connecting = (0..spec.clients).map(|i| {
        let gate = gate.clone();
        async move {
            let _permit = gate.acquire().await.expect("semaphore");
            connect(target, i, i % spec.rooms).await
        }
    });
    let mut senders = Vec::with_capacity(spec.clients);
    for (i, connection) in join_all(connecting).await.into_iter().enumerate() {
        let (reader, writer) =
            connection.unwrap_or_else(|e| panic!("client {i} could not connect: {e}"));
        let (commands, receive) = mpsc::unbounded_channel();
        senders.push(commands.clone());
        let (tally, window, lost) = (tallies[i].clone(), window.clone(), lost.clone());
        tokio::spawn(write_loop(target.kind, writer, receive, i, i % spec.rooms, spec.size));
        match reader {
            Reader::Ws(frames) => tokio::spawn(read_ws(frames, i, window, tally, lost, commands)),
            Reader::Irc(lines) => tokio::spawn(read_irc(lines, i, window, tally, lost, commands)),
        };
    }

    // The schedule: message k goes at epoch + start + k / rate, from client k mod N.
    let start = epoch.elapsed() + Duration::from_millis(200);
    let measure_from = start + spec.warmup;
    let measure_to = measure_from + spec.duration;
    window.from.store(measure_from.as_nanos() as u64, Ordering::Relaxed);
    window.to.store(measure_to.as_nanos() as u64, Ordering::Relaxed);
    let total = (spec.rate * (spec.warmup + spec.duration).as_secs_f64()) as u64;
    let mut next = 0u64;
    let mut sent_in_window = 0u64;
    let mut expected = 0u64;
    let mut cpu_from = None;
    let mut ticker = tokio::time::interval(Duration::from_millis(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    while next < total {
        ticker.tick().await;
        let now = epoch.elapsed();
        if cpu_from.is_none() && now >= measure_from {
            cpu_from = Some((target.cpu(), crate::target::cpu_of("/proc/self/stat")));
        }
        while next < total {
            let at = start + Duration::from_secs_f64(next as f64 / spec.rate);
            if at > now {
                break;
            }
            let client = (next as usize) % spec.clients;
            let at_nanos = at.as_nanos() as u64;
            if (measure_from..measure_to).contains(&at) {
                sent_in_window += 1;
                expected += (spec.members(client % spec.rooms) - 1) as u64;
            }
            let _ = senders[client].send(Command::Send(at_nanos));
            next += 1;
        }
    }
    let (server_from, own_from) = cpu_from.unwrap_or_default();
    let cpu = target.cpu() - server_from;
    let own_cpu = crate::target::cpu_of("/proc/self/stat") - own_from;
    let rss = target.rss();
    // Let the last deliveries arrive.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let mut latencies = Vec::new();
    let mut delivered = 0;
    for tally in &tallies {
        let mut tally = tally.lock().expect("no thread panicked holding the lock");
        delivered += tally.delivered;
        latencies.append(&mut tally.latencies);
    }
    Outcome {
        sent: sent_in_window,
        expected,
        delivered,
        latencies: Latencies::new(latencies),
        cpu,
        rss,
        window: spec.duration,
        lost_connections: lost.load(Ordering::Relaxed),
        own_cpu,
    }
}

enum Reader {
    Ws(wire::FrameReader),
    Irc(BufReader<tokio::net::tcp::OwnedReadHalf>),
}

/// Connects client `i` and puts it in room `room`.
async fn connect(
    target: &Target,
    i: usize,
    room: usize,
) -> std::io::Result<(Reader, tokio::net::tcp::OwnedWriteHalf)> {
    match target.kind {
        Kind::Roomz => {
            let (mut frames, mut writer) =
                wire::connect(target.addr(i), "/ws", &target.session(i)).await?;
            let mut out = Vec::new();
            wire::text_frame(&mut out, br#"{"type":"hello","v":1}"#);
            wire::text_frame(
                &mut out,
                format!(r#"{{"type":"join","room":"load{room}"}}"#).as_bytes(),
            );
            writer.write_all(&out).await?;
            loop {
                if let Frame::Text(text) = frames.next().await? {
                    if text.starts_with(br#"{"type":"joined""#) {
                        break;
                    }
                    if text.starts_with(br#"{"type":"error""#) {
                        return Err(std::io::Error::other(
                            String::from_utf8_lossy(text).into_owned(),
                        ));
                    }
                }
            }
            Ok((Reader::Ws(frames), writer))
        }
        Kind::Irc => {
            let stream = TcpStream::connect(target.addr(i)).await?;
            stream.set_nodelay(true)?;
            let (read, mut writer) = stream.into_split();
            let mut lines = BufReader::with_capacity(16 * 1024, read);
            writer.write_all(format!("NICK u{i}\r\nUSER u{i} 0 * :load\r\n").as_bytes()).await?;
            let mut joined = false;
            let mut line = Vec::new();
            loop {
                line.clear();
                if lines.read_until(b'\n', &mut line).await? == 0 {
                    return Err(std::io::Error::other("the IRC server closed"));
                }
                if line.starts_with(b"PING ") {
                    let mut pong = b"PONG ".to_vec();
                    pong.extend_from_slice(&line[5..]);
                    writer.write_all(&pong).await?;
                } else if wire::find(&line, b" 001 ").is_some() && !joined {
                    writer.write_all(format!("JOIN #load{room}\r\n").as_bytes()).await?;
                    joined = true;
                } else if wire::find(&line, b" 366 ").is_some() {
                    break;
                } else if line.starts_with(b"ERROR") {
                    return Err(std::io::Error::other(String::from_utf8_lossy(&line).into_owned()));
                }
            }
            Ok((Reader::Irc(lines), writer))
        }
    }
}

/// Writes what the schedule asks, several frames per write when several are due.
async fn write_loop(
    kind: Kind,
    mut writer: tokio::net::tcp::OwnedWriteHalf,
    mut commands: mpsc::UnboundedReceiver<Command>,
    me: usize,
    room: usize,
    size: usize,
) {
    let mut out = Vec::with_capacity(4096);
    let mut count = 0u64;
    let mut batch = Vec::with_capacity(64);
    while commands.recv_many(&mut batch, 64).await > 0 {
        out.clear();
        for command in batch.drain(..) {
            match command {
                Command::Pong(bytes) => out.extend_from_slice(&bytes),
                Command::Send(at) => {
                    count += 1;
                    let mut text = format!("t{me}:{at}:");
                    text.extend(std::iter::repeat_n('x', size.saturating_sub(text.len())));
                    match kind {
                        Kind::Roomz => {
                            let frame = format!(
                                r#"{{"type":"send","room":"load{room}","id":"{me}-{count}","text":"{text}"}}"#
                            );
                            wire::text_frame(&mut out, frame.as_bytes());
                        }
                        Kind::Irc => out.extend_from_slice(
                            format!("PRIVMSG #load{room} :{text}\r\n").as_bytes(),
                        ),
                    }
                }
            }
        }
        if writer.write_all(&out).await.is_err() {
            return;
        }
    }
}

/// Reads `t{sender}:{nanos}:` at the start of a message text; the delivery counts when
/// another client sent it within the window.
fn record(text: &[u8], me: usize, window: &Window, tally: &Mutex<Tally>) {
    let Some(rest) = text.strip_prefix(b"t") else { return };
    let Some(sender) = wire::number(rest) else { return };
    if sender as usize == me {
        return;
    }
    let digits = rest.iter().position(|&b| b == b':').map_or(0, |p| p + 1);
    let Some(at) = wire::number(&rest[digits..]) else { return };
    if !window.contains(at) {
        return;
    }
    let latency = window.now().saturating_sub(at) / 1000;
    let mut tally = tally.lock().expect("no thread panicked holding the lock");
    tally.delivered += 1;
    tally.latencies.push(latency.min(u64::from(u32::MAX)) as u32);
}

async fn read_ws(
    mut frames: wire::FrameReader,
    me: usize,
    window: Arc<Window>,
    tally: Arc<Mutex<Tally>>,
    lost: Arc<AtomicU64>,
    commands: mpsc::UnboundedSender<Command>,
) {
    let marker = br#""text":""#;
    loop {
        let frame = match frames.next().await {
            Ok(frame) => frame,
            Err(_) => {
                lost.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        match frame {
            Frame::Text(text) if text.starts_with(br#"{"type":"message""#) => {
                if let Some(at) = wire::find(text, marker) {
                    record(&text[at + marker.len()..], me, &window, &tally);
                }
            }
            Frame::Ping => {
                let _ = commands.send(Command::Pong(wire::PONG.to_vec()));
            }
            Frame::Close => {
                lost.fetch_add(1, Ordering::Relaxed);
                return;
            }
            _ => {}
        }
    }
}

async fn read_irc(
    mut lines: BufReader<tokio::net::tcp::OwnedReadHalf>,
    me: usize,
    window: Arc<Window>,
    tally: Arc<Mutex<Tally>>,
    lost: Arc<AtomicU64>,
    commands: mpsc::UnboundedSender<Command>,
) {
    let mut line = Vec::with_capacity(512);
    loop {
        line.clear();
        match lines.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => {
                lost.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Ok(_) => {}
        }
        if line.starts_with(b"PING ") {
            let mut pong = b"PONG ".to_vec();
            pong.extend_from_slice(&line[5..]);
            let _ = commands.send(Command::Pong(pong));
            continue;
        }
        if let Some(at) = wire::find(&line, b" PRIVMSG ")
            && let Some(text) = wire::find(&line[at..], b" :").map(|t| at + t + 2)
        {
            record(&line[text..], me, &window, &tally);
        }
    }
}
