//! The roomz load generator: starts `roomz serve` (or InspIRCd) as a child process and runs
//! open-loop workloads against it, reporting latency, delivery, server CPU and memory.
//! docs/performance.md explains each workload and shows a run.
//!
//! `cargo bench --bench load -- <workload> [options]`, or `-- compare` for the side-by-side
//! table; `-- --help` lists everything.

mod fanout;
mod others;
mod stats;
mod target;
mod wire;

use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use self::stats::{Latencies, fmt_ms, mib};
use self::target::{Kind, Target};

#[derive(Parser)]
#[command(name = "load", about = "Load generator for roomz (and InspIRCd, for comparison)")]
struct Cli {
    #[command(subcommand)]
    workload: Option<Workload>,
}

#[derive(Clone, Copy, ValueEnum)]
enum Server {
    Roomz,
    Inspircd,
}

#[derive(Subcommand)]
enum Workload {
    /// N clients in R rooms, a fixed total rate, latency to every other member.
    Fanout {
        #[arg(long, value_enum, default_value = "roomz")]
        server: Server,
        #[arg(long, default_value_t = 100)]
        clients: usize,
        #[arg(long, default_value_t = 1)]
        rooms: usize,
        /// Deliveries per second to aim at (messages/s times the other members of a room).
        #[arg(long, default_value_t = 100_000.0)]
        deliveries: f64,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long, default_value_t = 3)]
        warmup: u64,
    },
    /// N connected, authenticated, idle clients: server memory per connection.
    Idle {
        #[arg(long, value_enum, default_value = "roomz")]
        server: Server,
        #[arg(long, default_value_t = 10_000)]
        clients: usize,
    },
    /// Acknowledged messages per second, each after a durable commit.
    Ingest {
        #[arg(long, default_value_t = 50)]
        clients: usize,
        /// Sends in flight per client.
        #[arg(long, default_value_t = 64)]
        window: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// Pages of 50 from a room of many messages.
    History {
        #[arg(long, default_value_t = 1_000_000)]
        messages: u64,
        #[arg(long, default_value_t = 2_000)]
        requests: usize,
    },
    /// Everyone drops, a backlog builds, everyone comes back at once.
    Storm {
        #[arg(long, default_value_t = 1_000)]
        clients: usize,
        #[arg(long, default_value_t = 100)]
        rooms: usize,
        /// Messages posted to each room while everyone is away.
        #[arg(long, default_value_t = 100)]
        backlog: usize,
    },
    /// The disk under the store: 4 KiB overwrites of a file in the temporary folder, each
    /// followed by fdatasync, as a SQLite commit in WAL mode does.
    Disk {
        #[arg(long, default_value_t = 3_000)]
        writes: usize,
    },
    /// The table of docs/performance.md: roomz and InspIRCd side by side, then the rest.
    Compare {
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// The fan-out rows of the comparison for roomz alone, as `LOAD_POSTGRES` and
    /// `LOAD_NODES` set it up, as a table.
    Rows {
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
}

/// The fan-out rows of the comparison: clients, rooms, deliveries per second.
const ROWS: [(usize, usize, f64); 5] = [
    (100, 1, 396_000.0),
    (100, 1, 792_000.0),
    (1_000, 100, 100_000.0),
    (1_000, 10, 100_000.0),
    (10_000, 1_000, 9_000.0),
];

#[tokio::main]
async fn main() {
    // `cargo bench` adds `--bench` at the end; it means nothing here.
    let cli = Cli::parse_from(std::env::args().filter(|arg| arg != "--bench"));
    let Some(workload) = cli.workload else {
        println!("load: no workload given (`cargo bench --bench load -- --help` lists them)");
        return;
    };
    match workload {
        Workload::Fanout { server, clients, rooms, deliveries, seconds, warmup } => {
            let spec = spec(clients, rooms, deliveries, seconds, warmup);
            let target = start(server, clients).await;
            let outcome = fanout::run(&target, spec).await;
            println!("{}", fanout_line(&target, &spec, &outcome));
            if outcome.lost_connections > 0 {
                eprintln!("the server's last log lines:\n{}", target.recent_log().join("\n"));
            }
        }
        Workload::Idle { server, clients } => {
            let target = start(server, clients).await;
            let (before, after) = others::idle(&target, clients).await;
            println!("{}", idle_line(&target, clients, before, after));
        }
        Workload::Ingest { clients, window, seconds } => {
            let target = Target::roomz(clients, None).await;
            let (rate, latencies) =
                others::ingest(&target, clients, window, Duration::from_secs(seconds)).await;
            println!("{}", ingest_line(&name(&target), clients, window, rate, &latencies));
        }
        Workload::History { messages, requests } => {
            let fill = move |path: &std::path::Path| others::fill_history(path, messages);
            let target = Target::roomz(others::HISTORY_READERS, Some(&fill)).await;
            let latencies = others::history(&target, messages, requests).await;
            println!("{}", history_line(messages, &latencies));
        }
        Workload::Storm { clients, rooms, backlog } => {
            let target = Target::roomz(clients + 1, None).await;
            let took = others::storm(&target, clients, rooms, backlog).await;
            println!("{}", storm_line(clients, rooms, backlog, took));
        }
        Workload::Disk { writes } => {
            let latencies = tokio::task::spawn_blocking(move || others::disk(writes))
                .await
                .expect("the disk probe ran");
            println!(
                "disk: {writes} writes of 4 KiB, each made durable with fdatasync: latency p50/p99/p99.9/max {} ms",
                latencies.summary()
            );
        }
        Workload::Compare { seconds } => compare(seconds).await,
        Workload::Rows { seconds } => rows(seconds).await,
    }
}

fn spec(clients: usize, rooms: usize, deliveries: f64, seconds: u64, warmup: u64) -> fanout::Spec {
    let members = (clients / rooms).max(2);
    fanout::Spec {
        clients,
        rooms,
        rate: deliveries / (members - 1) as f64,
        size: 200,
        warmup: Duration::from_secs(warmup),
        duration: Duration::from_secs(seconds),
    }
}

async fn start(server: Server, users: usize) -> Target {
    match server {
        Server::Roomz => Target::roomz(users, None).await,
        Server::Inspircd => Target::inspircd().await,
    }
}

fn name(target: &Target) -> String {
    match target.kind {
        Kind::Roomz if std::env::var_os("LOAD_POSTGRES").is_some() => {
            format!("roomz on PostgreSQL, {} node(s)", target.node_count())
        }
        Kind::Roomz => "roomz".to_owned(),
        Kind::Irc => "InspIRCd".to_owned(),
    }
}

fn fanout_line(target: &Target, spec: &fanout::Spec, outcome: &fanout::Outcome) -> String {
    let share = 100.0 * outcome.delivered as f64 / outcome.expected.max(1) as f64;
    let per_delivery = outcome.cpu.as_secs_f64() * 1e6 / outcome.delivered.max(1) as f64;
    format!(
        "{}: fan-out, {} clients, {} rooms, {:.0} messages/s ({} sent): {:.0} deliveries/s, {share:.2}% delivered ({} of {}), \
         latency p50/p99/p99.9/max {} ms, server CPU {per_delivery:.2} us/delivery (load generator {:.2}), RSS {}, {} connections lost",
        name(target),
        spec.clients,
        spec.rooms,
        spec.rate,
        outcome.sent,
        outcome.delivered as f64 / outcome.window.as_secs_f64(),
        outcome.delivered,
        outcome.expected,
        outcome.latencies.summary(),
        outcome.own_cpu.as_secs_f64() * 1e6 / outcome.delivered.max(1) as f64,
        mib(outcome.rss),
        outcome.lost_connections,
    )
}

fn idle_line(target: &Target, clients: usize, before: u64, after: u64) -> String {
    let per = after.saturating_sub(before) as f64 / clients as f64 / 1024.0;
    format!(
        "{}: idle, {clients} connected clients: RSS {} before, {} after: {per:.1} KiB per connection",
        name(target),
        mib(before),
        mib(after)
    )
}

fn ingest_line(
    name: &str,
    clients: usize,
    window: usize,
    rate: f64,
    latencies: &Latencies,
) -> String {
    format!(
        "{name}: ingest, {clients} clients x {window} in flight: {rate:.0} acknowledged messages/s, \
         ack latency p50/p99/p99.9/max {} ms",
        latencies.summary()
    )
}

fn history_line(messages: u64, latencies: &Latencies) -> String {
    format!(
        "roomz: history, pages of 50 from a room of {messages} messages, {} requests: latency p50/p99/p99.9/max {} ms",
        latencies.len(),
        latencies.summary()
    )
}

fn storm_line(clients: usize, rooms: usize, backlog: usize, took: Duration) -> String {
    format!(
        "roomz: reconnect storm, {clients} clients in {rooms} rooms, {backlog} missed messages each: all caught up in {} ms",
        fmt_ms(took.as_secs_f64() * 1000.0)
    )
}

/// The label of a fan-out row.
fn row_label(clients: usize, rooms: usize, deliveries: f64) -> String {
    format!(
        "{clients} clients in rooms of {}, {:.0}k deliveries/s",
        clients / rooms,
        deliveries / 1000.0
    )
}

/// The table cells of one fan-out outcome: latencies, the share delivered, CPU per delivery.
fn cells(outcome: &fanout::Outcome) -> [String; 3] {
    let share = 100.0 * outcome.delivered as f64 / outcome.expected.max(1) as f64;
    let per = outcome.cpu.as_secs_f64() * 1e6 / outcome.delivered.max(1) as f64;
    [outcome.latencies.summary(), format!("{share:.2}%"), format!("{per:.2} us")]
}

/// Runs the fan-out rows on roomz alone and prints them as markdown.
async fn rows(seconds: u64) {
    let mut table = vec![
        "| workload | p50/p99/p99.9/max (ms) | delivered | roomz CPU/delivery |".to_owned(),
        "|---|---|---|---|".to_owned(),
    ];
    let mut label = String::new();
    for (clients, rooms, deliveries) in ROWS {
        let spec = spec(clients, rooms, deliveries, seconds, 3);
        let target = start(Server::Roomz, clients).await;
        let outcome = fanout::run(&target, spec).await;
        eprintln!("{}", fanout_line(&target, &spec, &outcome));
        label = name(&target);
        table.push(format!(
            "| {} | {} |",
            row_label(clients, rooms, deliveries),
            cells(&outcome).join(" | ")
        ));
    }
    println!("{label}:\n\n{}", table.join("\n"));
}

/// Runs the comparison and prints it as the markdown of docs/performance.md.
async fn compare(seconds: u64) {
    let mut table = vec![
        "| workload | roomz p50/p99/p99.9/max (ms) | roomz delivered | roomz CPU/delivery | InspIRCd p50/p99/p99.9/max (ms) | InspIRCd delivered | InspIRCd CPU/delivery |".to_owned(),
        "|---|---|---|---|---|---|---|".to_owned(),
    ];
    for (clients, rooms, deliveries) in ROWS {
        let spec = spec(clients, rooms, deliveries, seconds, 3);
        let mut row = vec![row_label(clients, rooms, deliveries)];
        for server in [Server::Roomz, Server::Inspircd] {
            let target = start(server, clients).await;
            let outcome = fanout::run(&target, spec).await;
            eprintln!("{}", fanout_line(&target, &spec, &outcome));
            row.extend(cells(&outcome));
        }
        table.push(format!("| {} |", row.join(" | ")));
    }
    let mut idle = vec!["memory per idle connection (10,000 clients)".to_owned()];
    for server in [Server::Roomz, Server::Inspircd] {
        let target = start(server, 10_000).await;
        let (before, after) = others::idle(&target, 10_000).await;
        eprintln!("{}", idle_line(&target, 10_000, before, after));
        idle.push(format!("{:.1} KiB", after.saturating_sub(before) as f64 / 10_000.0 / 1024.0));
        idle.push(String::new());
        idle.push(String::new());
    }
    table.push(format!("| {} |", idle.join(" | ")));
    println!("{}", table.join("\n"));
}
