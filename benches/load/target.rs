//! The server under load, as a child process of its own (so its CPU time and memory can be
//! read from /proc): `roomz serve` on a fresh SQLite file, or InspIRCd.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use roomz::server::auth::session::SessionKeys;
use roomz::server::config::Secret;

const SECRET: &str = "load-generator-secret-that-is-long-enough-0123456789";

/// Which server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Roomz,
    Irc,
}

/// A running server under test: one process, or several nodes of roomz on one database.
pub struct Target {
    pub kind: Kind,
    nodes: Vec<Node>,
    _dir: tempfile::TempDir,
    keys: SessionKeys,
}

/// One server process.
struct Node {
    addr: SocketAddr,
    child: Child,
    log: Log,
}

/// The address of user `i`.
pub fn email(i: usize) -> String {
    format!("u{i}@load.test")
}

/// Where roomz keeps its data in a run: a new SQLite file, or with `LOAD_POSTGRES` (the URL
/// of any database on a PostgreSQL server) a new database on that server. `LOAD_NODES`
/// starts that many nodes on it.
async fn database(dir: &Path) -> String {
    let Ok(base) = std::env::var("LOAD_POSTGRES") else {
        return format!("sqlite:{}", dir.join("load.db").display());
    };
    use sqlx::Connection;
    let name = format!("roomz_load_{}", roomz::server::cluster::new_node_id());
    let mut admin = sqlx::PgConnection::connect(&base).await.expect("LOAD_POSTGRES answers");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .expect("a new database");
    let mut url = url::Url::parse(&base).expect("LOAD_POSTGRES is a URL");
    url.set_path(&name);
    url.to_string()
}

impl Target {
    /// Starts `roomz serve` for `users` users (`LOAD_NODES` nodes of it on PostgreSQL);
    /// `prepare` may fill a SQLite database first.
    pub async fn roomz(users: usize, prepare: Option<&dyn Fn(&Path)>) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let database = database(dir.path()).await;
        if let Some(prepare) = prepare {
            assert!(database.starts_with("sqlite:"), "this workload fills a SQLite database");
            prepare(&dir.path().join("load.db"));
        }
        // The allow-list of thousands goes in .env: the environment has a size limit.
        let mut env = std::fs::File::create(dir.path().join(".env")).expect(".env");
        let emails: Vec<String> = (0..users).map(email).collect();
        writeln!(env, "ALLOWED_EMAILS={}", emails.join(",")).expect("write .env");
        let count: usize =
            std::env::var("LOAD_NODES").ok().and_then(|n| n.parse().ok()).unwrap_or(1);
        assert!(count == 1 || !database.starts_with("sqlite:"), "LOAD_NODES needs LOAD_POSTGRES");
        let mut nodes = Vec::with_capacity(count);
        for _ in 0..count {
            nodes.push(roomz_node(dir.path(), &database));
        }
        let keys = SessionKeys::new(&Secret::new(SECRET), 1);
        Self { kind: Kind::Roomz, nodes, _dir: dir, keys }
    }

    /// Starts InspIRCd with flood limits out of the way.
    pub async fn inspircd() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("a free port")
            .local_addr()
            .expect("a bound address")
            .port();
        let config = dir.path().join("inspircd.conf");
        let text = include_str!("inspircd.conf")
            .replace("{PORT}", &port.to_string())
            .replace("{DIR}", &dir.path().display().to_string());
        std::fs::write(&config, text).expect("write inspircd.conf");
        let mut command = Command::new("inspircd");
        command
            .args(["--nofork", "--nopid", "--runasroot", "--config"])
            .arg(&config)
            .current_dir(dir.path());
        let (child, log, _) = spawn::<()>(command, None);
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                let keys = SessionKeys::new(&Secret::new(SECRET), 1);
                let nodes = vec![Node { addr, child, log }];
                return Self { kind: Kind::Irc, nodes, _dir: dir, keys };
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "InspIRCd did not listen on {addr}: {:?}",
            log.lock().expect("no thread panicked holding the lock")
        );
    }

    /// The address client `i` connects to: the nodes take turns.
    pub fn addr(&self, i: usize) -> SocketAddr {
        self.nodes[i % self.nodes.len()].addr
    }

    /// How many server processes serve the run.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// A session for user `i`, as `roomz token` would sign it.
    pub fn session(&self, i: usize) -> String {
        self.keys.issue(&email(i), chrono::Utc::now().timestamp_millis()).0
    }

    /// CPU time the servers used so far, together.
    pub fn cpu(&self) -> Duration {
        self.nodes.iter().map(|n| cpu_of(&format!("/proc/{}/stat", n.child.id()))).sum()
    }

    /// The servers' resident memory, together, in bytes.
    pub fn rss(&self) -> u64 {
        self.nodes.iter().map(|n| rss_of(n.child.id())).sum()
    }

    /// The last lines the servers logged (for a report when something went wrong).
    pub fn recent_log(&self) -> Vec<String> {
        self.nodes
            .iter()
            .flat_map(|n| n.log.lock().expect("no thread panicked holding the lock").clone())
            .collect()
    }
}

/// Starts one `roomz serve` in `dir` (which holds the `.env` with the allow-list).
fn roomz_node(dir: &Path, database: &str) -> Node {
    // LOAD_WRAP runs the server under a profiler, named by its full path (the server's
    // environment is cleared), for example
    // LOAD_WRAP="/usr/bin/valgrind --tool=massif --massif-out-file=/tmp/roomz.massif".
    let wrap = std::env::var("LOAD_WRAP").unwrap_or_default();
    let mut words = wrap.split_whitespace();
    let mut command = match words.next() {
        Some(program) => {
            let mut command = Command::new(program);
            command.args(words).arg(env!("CARGO_BIN_EXE_roomz"));
            command
        }
        None => Command::new(env!("CARGO_BIN_EXE_roomz")),
    };
    command
        .arg("serve")
        .current_dir(dir)
        .env_clear()
        .env("HOME", dir)
        .env("JWT_SECRET_KEY", SECRET)
        .env("DATABASE_URL", database)
        .env("ROOMZ_BIND", "127.0.0.1:0")
        .env("ROOMZ_MESSAGES_PER_SECOND", "1000000")
        .env("ROOMZ_MESSAGE_BURST", "1000000")
        // Every client of the load generator comes from 127.0.0.1.
        .env("ROOMZ_MAX_CONNECTIONS_PER_ADDRESS", "10000000")
        .env("RUST_LOG", "warn,roomz::server=info,roomz::server::ws=warn,roomz::server::auth=warn");
    // Settings of the server's runtime can be passed through for experiments.
    for name in ["TOKIO_WORKER_THREADS"] {
        if let Ok(value) = std::env::var(format!("LOAD_{name}")) {
            command.env(name, value);
        }
    }
    let listening = |line: &str| -> Option<SocketAddr> {
        let at = line.find("roomz serve: listening")?;
        line[at..].split_whitespace().find_map(|w| w.strip_prefix("addr="))?.parse().ok()
    };
    let (child, log, addr) = spawn(command, Some(&listening));
    Node { addr: addr.expect("spawn returns the address it waited for"), child, log }
}

/// The resident memory of a process, in bytes.
fn rss_of(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

impl Drop for Target {
    /// Stops the servers the way an operator would (SIGTERM, so a profiler they run under
    /// writes its report), and kills those that do not end in time.
    fn drop(&mut self) {
        for node in &self.nodes {
            let _ = Command::new("kill").args(["-TERM", &node.child.id().to_string()]).status();
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        for node in &mut self.nodes {
            while std::time::Instant::now() < deadline {
                if let Ok(Some(_)) = node.child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = node.child.kill();
            let _ = node.child.wait();
        }
    }
}

/// The last lines a server wrote, for the message when it fails.
type Log = Arc<Mutex<Vec<String>>>;

/// Looks at one line of server output and returns what it was waiting for.
type ReadyTest<'a, T> = &'a dyn Fn(&str) -> Option<T>;

/// Starts a server and keeps draining its output (a full pipe would block it). With a
/// `ready` test, waits for the first line it accepts and returns what it found.
fn spawn<T>(mut command: Command, ready: Option<ReadyTest<'_, T>>) -> (Child, Log, Option<T>) {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the server starts");
    let log = Arc::new(Mutex::new(Vec::new()));
    let (lines, received) = std::sync::mpsc::channel::<String>();
    let outputs: [Option<Box<dyn Read + Send>>; 2] = [
        child.stdout.take().map(|o| Box::new(o) as Box<dyn Read + Send>),
        child.stderr.take().map(|e| Box::new(e) as Box<dyn Read + Send>),
    ];
    for output in outputs.into_iter().flatten() {
        let (log, lines) = (log.clone(), lines.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(output).lines().map_while(Result::ok) {
                let _ = lines.send(line.clone());
                let mut log = log.lock().expect("no thread panicked holding the lock");
                log.push(line);
                if log.len() > 200 {
                    log.remove(0);
                }
            }
        });
    }
    let Some(ready) = ready else {
        return (child, log, None);
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        match received.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => {
                if let Some(found) = ready(&line) {
                    return (child, log, Some(found));
                }
            }
            Err(_) => {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "the server exited with {status}: {:?}",
                        log.lock().expect("no thread panicked holding the lock")
                    );
                }
            }
        }
    }
    panic!(
        "the server never said it was ready: {:?}",
        log.lock().expect("no thread panicked holding the lock")
    );
}

/// CPU time (user and system) of the process whose stat file this is.
pub fn cpu_of(stat_path: &str) -> Duration {
    let stat = std::fs::read_to_string(stat_path).unwrap_or_default();
    // Fields after the command name (which is in parentheses): utime is the 14th field.
    let after = stat.rsplit(')').next().unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = [11, 12].iter().filter_map(|&i| fields.get(i)?.parse::<u64>().ok()).sum();
    Duration::from_secs_f64(ticks as f64 / clock_ticks() as f64)
}

fn clock_ticks() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
            .unwrap_or(100)
    })
}
