//! What the server tests share: a real server in this process (on 127.0.0.1:0, a SQLite file
//! in a temporary folder, console links captured), the real `roomz` binary as a child
//! process, and a small WebSocket client that speaks the protocol types.

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use roomz::protocol::http::{SessionGranted, VerifyRequest};
use roomz::protocol::{
    ClientFrame, ErrorCode, ErrorFrame, Message, PROTOCOL_VERSION, Seq, ServerFrame,
};
use roomz::server::clock::OffsetClock;
use roomz::server::config::{AllowListSource, Config};
use roomz::server::mailer::ConsoleMailer;
use roomz::server::{ServerHandle, ServerOptions, start};
use tempfile::TempDir;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message as WsMessage};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const SECRET: &str = "test-secret-that-is-long-enough-0123456789";
pub const ALICE: &str = "alice@example.com";
pub const BOB: &str = "bob@example.com";
pub const CAROL: &str = "carol@example.com";

/// How long a test waits for something that should happen at once.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// A server running in this process.
pub struct TestServer {
    pub dir: Arc<TempDir>,
    pub clock: OffsetClock,
    pub handle: ServerHandle,
    pub http: reqwest::Client,
    vars: Vec<(String, String)>,
    lines: Mutex<mpsc::UnboundedReceiver<String>>,
}

impl TestServer {
    /// A server allowing alice, bob and carol, with a generous message rate.
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// A server with extra variables (they win over the defaults). Its store is a SQLite
    /// file, or with `ROOMZ_TEST_BACKEND=postgres` a new PostgreSQL database.
    pub async fn start_with(vars: &[(&str, &str)]) -> Self {
        let dir = Arc::new(tempfile::tempdir().expect("temp dir"));
        let mut vars: Vec<(String, String)> =
            vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        if std::env::var("ROOMZ_TEST_BACKEND").as_deref() == Ok("postgres")
            && !vars.iter().any(|(k, _)| k == "DATABASE_URL")
        {
            let url = fresh_postgres_database().await.expect("ROOMZ_TEST_POSTGRES is set");
            vars.push(("DATABASE_URL".into(), url));
        }
        Self::boot(dir, OffsetClock::new(), vars).await
    }

    /// A node of a cluster: a server on the PostgreSQL database `url`, with its own clock.
    pub async fn node(url: &str) -> Self {
        Self::start_with(&[("DATABASE_URL", url)]).await
    }

    async fn boot(dir: Arc<TempDir>, clock: OffsetClock, vars: Vec<(String, String)>) -> Self {
        let mut env: HashMap<String, String> = HashMap::from([
            ("JWT_SECRET_KEY".into(), SECRET.into()),
            ("ALLOWED_EMAILS".into(), format!("{ALICE},{BOB},{CAROL}")),
            ("DATABASE_URL".into(), format!("sqlite:{}", dir.path().join("roomz.db").display())),
            ("ROOMZ_BIND".into(), "127.0.0.1:0".into()),
            ("ROOMZ_MESSAGES_PER_SECOND".into(), "100000".into()),
            ("ROOMZ_MESSAGE_BURST".into(), "100000".into()),
        ]);
        env.extend(vars.iter().cloned());
        let loaded = Config::from_lookup(|k| env.get(k).cloned(), AllowListSource::Environment)
            .expect("test configuration is valid");
        let (tx, rx) = mpsc::unbounded_channel();
        let uses_console = env.get("EMAIL_SENDER").is_none_or(|s| s != "resend");
        let mailer: Option<Arc<dyn roomz::server::mailer::Mailer>> = uses_console.then(|| {
            Arc::new(ConsoleMailer::with_sink(move |line| {
                let _ = tx.send(line.to_owned());
            })) as _
        });
        let options = ServerOptions { clock: Arc::new(clock.clone()), mailer };
        let handle = start(loaded.config, options).await.expect("server starts");
        Self { dir, clock, handle, http: reqwest::Client::new(), vars, lines: Mutex::new(rx) }
    }

    /// Stops this server and starts another on the same address, database and clock.
    pub async fn restart(self) -> Self {
        let stopped = self.stop().await;
        stopped.start().await
    }

    /// Stops this server; what it returns starts it again on the same address.
    pub async fn stop(self) -> Stopped {
        let mut vars = self.vars.clone();
        vars.retain(|(k, _)| k != "ROOMZ_BIND");
        vars.push(("ROOMZ_BIND".into(), self.addr().to_string()));
        let stopped = Stopped { dir: self.dir.clone(), clock: self.clock.clone(), vars };
        self.handle.shutdown().await;
        stopped
    }

    pub fn addr(&self) -> SocketAddr {
        self.handle.local_addr()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr())
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr())
    }

    /// Asks for a magic link.
    pub async fn request_link(&self, email: &str) -> reqwest::Response {
        self.http
            .post(self.url("/auth/request"))
            .json(&serde_json::json!({ "email": email }))
            .send()
            .await
            .expect("request reaches the server")
    }

    /// The next link the console mailer printed for `email`.
    pub async fn link_for(&self, email: &str) -> String {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            if let Ok(line) = self.lines.lock().expect("lines").try_recv()
                && line.starts_with(&format!("magic link for {email} "))
            {
                return link_of(&line);
            }
            assert!(tokio::time::Instant::now() < deadline, "no magic link for {email}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Whether any link was printed (after a short wait).
    pub async fn printed_nothing(&self) -> bool {
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.lines.lock().expect("lines").try_recv().is_err()
    }

    /// Trades a token or link for a session.
    pub async fn verify(&self, token: &str) -> reqwest::Response {
        self.http
            .post(self.url("/auth/verify"))
            .json(&VerifyRequest { token: token.to_owned() })
            .send()
            .await
            .expect("verify reaches the server")
    }

    /// The whole login: ask, read the console, redeem. Returns the session.
    pub async fn login(&self, email: &str) -> String {
        assert_eq!(self.request_link(email).await.status(), 202);
        let link = self.link_for(email).await;
        let response = self.verify(&link).await;
        assert_eq!(response.status(), 200, "verify failed: {:?}", response.text().await);
        response.json::<SessionGranted>().await.expect("session body").session
    }

    /// `GET /api/me` with a session.
    pub async fn me(&self, session: &str) -> reqwest::Response {
        self.http.get(self.url("/api/me")).bearer_auth(session).send().await.expect("me")
    }

    /// Logs in and connects with `hello`; waits for `welcome` and `synced`.
    pub async fn connect(&self, email: &str) -> Client {
        let session = self.login(email).await;
        Client::connect(&self.ws_url(), &session, HashMap::new()).await
    }
}

/// A stopped [`TestServer`], ready to start again where it was.
pub struct Stopped {
    dir: Arc<TempDir>,
    clock: OffsetClock,
    vars: Vec<(String, String)>,
}

impl Stopped {
    /// The address it listened on, where it starts again.
    pub fn addr(&self) -> String {
        let bind = self.vars.iter().find(|(k, _)| k == "ROOMZ_BIND");
        bind.map(|(_, v)| v.clone()).expect("a stopped server keeps its address")
    }

    pub async fn start(self) -> TestServer {
        TestServer::boot(self.dir, self.clock, self.vars).await
    }

    /// Sets (or, with `None`, removes) a variable for the next start.
    pub fn with(mut self, name: &str, value: Option<&str>) -> Self {
        self.vars.retain(|(k, _)| k != name);
        if let Some(value) = value {
            self.vars.push((name.to_owned(), value.to_owned()));
        }
        self
    }

    /// Its store, to fill while it is stopped.
    pub async fn open_store(&self) -> Arc<dyn roomz::server::store::Store> {
        let url = self.vars.iter().find(|(k, _)| k == "DATABASE_URL").map(|(_, v)| v.clone());
        match url {
            Some(url) if url.starts_with("postgres") => {
                let node = roomz::server::cluster::new_node_id();
                let store = roomz::server::store::postgres::PgStore::open(&url, 2, node);
                Arc::new(store.await.expect("the test database opens"))
            }
            _ => {
                let path = self.dir.path().join("roomz.db");
                let store = roomz::server::store::sqlite::SqliteStore::open(&path);
                Arc::new(store.await.expect("the test database opens"))
            }
        }
    }
}

fn link_of(line: &str) -> String {
    line.rsplit(' ').next().expect("the link ends the line").to_owned()
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A protocol-level WebSocket client.
pub struct Client {
    ws: Ws,
    pending: VecDeque<ServerFrame>,
    pub session: String,
    pub welcome: Option<ServerFrame>,
    next_id: u64,
}

/// Opens a WebSocket with a bearer session (and extra headers).
pub async fn open_ws(url: &str, headers: &[(&str, &str)]) -> Result<Ws, tungstenite::Error> {
    let mut request = url.into_client_request()?;
    for (name, value) in headers {
        request.headers_mut().insert(
            tungstenite::http::HeaderName::from_bytes(name.as_bytes()).expect("header name"),
            value.parse().expect("header value"),
        );
    }
    let (ws, _) = tokio_tungstenite::connect_async(request).await?;
    Ok(ws)
}

impl Client {
    /// Opens the socket without saying hello.
    pub async fn open(url: &str, session: &str) -> Self {
        let bearer = format!("Bearer {session}");
        let ws = open_ws(url, &[("authorization", &bearer)]).await.expect("upgrade accepted");
        Self {
            ws,
            pending: VecDeque::new(),
            session: session.to_owned(),
            welcome: None,
            next_id: 0,
        }
    }

    /// Opens, says hello with `since`, and waits for `welcome` and `synced`.
    pub async fn connect(url: &str, session: &str, since: HashMap<String, Seq>) -> Self {
        let mut client = Self::open(url, session).await;
        client
            .send(&ClientFrame::Hello { v: PROTOCOL_VERSION, since: since.into_iter().collect() })
            .await;
        let welcome = client.next().await;
        assert!(
            matches!(welcome, ServerFrame::Welcome { .. }),
            "expected welcome, got {welcome:?}"
        );
        client.welcome = Some(welcome);
        client
    }

    pub async fn send(&mut self, frame: &ClientFrame) {
        self.send_raw(&frame.to_json()).await;
    }

    pub async fn send_raw(&mut self, text: &str) {
        self.ws.send(WsMessage::text(text)).await.expect("frame sent");
    }

    pub async fn send_ws(&mut self, message: WsMessage) -> Result<(), tungstenite::Error> {
        self.ws.send(message).await
    }

    /// A frame read earlier and kept aside by [`Client::wait_for`], if any.
    pub fn take_pending(&mut self) -> Option<ServerFrame> {
        self.pending.pop_front()
    }

    /// The next frame from the server (failing the test after [`PATIENCE`]).
    pub async fn next(&mut self) -> ServerFrame {
        if let Some(frame) = self.pending.pop_front() {
            return frame;
        }
        self.read().await.unwrap_or_else(|end| panic!("connection ended: {end}"))
    }

    /// Reads one frame from the socket, or says how the connection ended.
    pub async fn read(&mut self) -> Result<ServerFrame, String> {
        loop {
            let message = tokio::time::timeout(PATIENCE, self.ws.next())
                .await
                .map_err(|_| "timed out waiting for a frame".to_owned())?;
            match message {
                Some(Ok(WsMessage::Text(text))) => {
                    return Ok(serde_json::from_str(&text).unwrap_or_else(|e| {
                        panic!("server sent an unreadable frame {text}: {e}")
                    }));
                }
                Some(Ok(WsMessage::Close(frame))) => {
                    return Err(format!("closed: {}", frame.map_or(0, |f| u16::from(f.code))));
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(format!("error: {e}")),
                None => return Err("ended".to_owned()),
            }
        }
    }

    /// The first frame that `wanted` accepts; other frames stay queued, in order.
    pub async fn wait_for<T>(&mut self, mut wanted: impl FnMut(&ServerFrame) -> Option<T>) -> T {
        if let Some(at) = self.pending.iter().position(|f| wanted(f).is_some()) {
            let frame = self.pending.remove(at).expect("present");
            return wanted(&frame).expect("accepted");
        }
        loop {
            let frame = self.read().await.unwrap_or_else(|end| panic!("connection ended: {end}"));
            if let Some(found) = wanted(&frame) {
                return found;
            }
            self.pending.push_back(frame);
        }
    }

    /// Reads until the connection closes and returns its close code.
    pub async fn closed(&mut self) -> String {
        loop {
            match self.read().await {
                Ok(frame) => self.pending.push_back(frame),
                Err(end) => return end,
            }
        }
    }

    /// Waits for the next message event of `room`.
    pub async fn message(&mut self, room: &str) -> Message {
        self.wait_for(|f| match f {
            ServerFrame::Message(m) if m.room == room => Some(m.clone()),
            _ => None,
        })
        .await
    }

    /// Waits for the next error frame.
    pub async fn error(&mut self) -> roomz::protocol::ErrorFrame {
        self.wait_for(|f| match f {
            ServerFrame::Error(e) => Some(e.clone()),
            _ => None,
        })
        .await
    }

    /// Sends a message with a fresh id and returns (id, seq) once acknowledged.
    pub async fn post(&mut self, room: &str, text: &str) -> (String, Seq) {
        self.next_id += 1;
        let id = format!("m{}-{}", self.next_id, std::process::id());
        self.send(&ClientFrame::Send { room: room.into(), id: id.clone(), text: text.into() })
            .await;
        let seq = self.ack(&id).await;
        (id, seq)
    }

    /// Waits for the ack of `id`.
    pub async fn ack(&mut self, id: &str) -> Seq {
        self.wait_for(|f| match f {
            ServerFrame::Ack { id: acked, seq, .. } if acked == id => Some(*seq),
            ServerFrame::Error(e) if e.id.as_deref() == Some(id) => panic!("send refused: {e:?}"),
            _ => None,
        })
        .await
    }

    /// Every `history` page of `room`, newest first, with its `more` flag.
    pub async fn history_pages(&mut self, room: &str, limit: u32) -> Vec<(Vec<Message>, bool)> {
        let mut pages = Vec::new();
        let mut before = None;
        loop {
            let page = self
                .request(|req| ClientFrame::History {
                    req,
                    room: room.into(),
                    before,
                    limit: Some(limit),
                })
                .await;
            let (messages, more) = match page {
                ServerFrame::History { messages, more, .. } => (messages, more),
                // A long walk meets the request rate: wait it out and ask again.
                ServerFrame::Error(ErrorFrame {
                    code: ErrorCode::RateLimited,
                    retry_after_ms: Some(wait),
                    ..
                }) => {
                    tokio::time::sleep(Duration::from_millis(wait)).await;
                    continue;
                }
                other => panic!("{other:?}"),
            };
            before = messages.first().map(|m| m.seq);
            pages.push((messages, more));
            if !more {
                return pages;
            }
        }
    }

    /// Sends a request frame and waits for the answer carrying its `req`.
    pub async fn request(&mut self, make: impl FnOnce(Option<u64>) -> ClientFrame) -> ServerFrame {
        self.next_id += 1;
        let req = self.next_id;
        self.send(&make(Some(req))).await;
        self.wait_for(|f| (req_of(f) == Some(req)).then(|| f.clone())).await
    }
}

fn req_of(frame: &ServerFrame) -> Option<u64> {
    match frame {
        ServerFrame::History { req, .. }
        | ServerFrame::Rooms { req, .. }
        | ServerFrame::Joined { req, .. }
        | ServerFrame::Left { req, .. }
        | ServerFrame::Members { req, .. }
        | ServerFrame::Name { req, .. }
        | ServerFrame::Pong { req } => *req,
        ServerFrame::Error(e) => e.req,
        _ => None,
    }
}

/// The real `roomz` binary, run as a child process in its own folder.
pub struct ServerProcess {
    pub child: Child,
    pub addr: Option<SocketAddr>,
    stdout: mpsc::UnboundedReceiver<String>,
    stderr: Arc<Mutex<String>>,
}

/// Variables every child server gets (tests add or override).
pub fn base_env(dir: &Path) -> Vec<(String, String)> {
    vec![
        ("JWT_SECRET_KEY".into(), SECRET.into()),
        ("ALLOWED_EMAILS".into(), format!("{ALICE},{BOB},{CAROL}")),
        ("DATABASE_URL".into(), format!("sqlite:{}", dir.join("roomz.db").display())),
        ("ROOMZ_BIND".into(), "127.0.0.1:0".into()),
        ("ROOMZ_MESSAGES_PER_SECOND".into(), "100000".into()),
        ("ROOMZ_MESSAGE_BURST".into(), "100000".into()),
    ]
}

impl ServerProcess {
    /// Starts `roomz serve` in `dir` with exactly these variables (plus HOME=dir).
    pub fn spawn(dir: &Path, vars: &[(String, String)], args: &[&str]) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_roomz"));
        command.arg("serve").args(args);
        Self::spawn_command(command, dir, vars)
    }

    /// Starts `sh -c SCRIPT roomz`: the script runs the binary (its `$0`) as it likes, for
    /// example under a resource limit.
    pub fn spawn_in_shell(dir: &Path, vars: &[(String, String)], script: &str) -> Self {
        let mut command = Command::new("sh");
        command.args(["-c", script, env!("CARGO_BIN_EXE_roomz")]);
        Self::spawn_command(command, dir, vars)
    }

    fn spawn_command(mut command: Command, dir: &Path, vars: &[(String, String)]) -> Self {
        command
            .current_dir(dir)
            .env_clear()
            .env("HOME", dir)
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("RUST_LOG", "info")
            .envs(vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("roomz binary starts");

        let (tx, stdout) = mpsc::unbounded_channel();
        let out = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let err = child.stderr.take().expect("stderr");
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let mut all = sink.lock().expect("stderr");
                all.push_str(&line);
                all.push('\n');
            }
        });
        Self { child, addr: None, stdout, stderr }
    }

    /// Waits for the "listening" log line and records the address.
    pub async fn ready(mut self) -> Self {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            if let Some(addr) = self.stderr().lines().find_map(|l| {
                let at = l.find("roomz serve: listening")?;
                let rest = &l[at..];
                let addr = rest.split_whitespace().find_map(|w| w.strip_prefix("addr="))?;
                addr.parse().ok()
            }) {
                self.addr = Some(addr);
                return self;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("roomz exited with {status}:\n{}", self.stderr());
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "roomz never listened:\n{}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Everything the process wrote to standard error so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().expect("stderr").clone()
    }

    /// Waits for the process to exit; returns its code and standard error.
    pub async fn exit(mut self) -> (Option<i32>, String) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                // Let the reader thread catch up with the last lines.
                tokio::time::sleep(Duration::from_millis(50)).await;
                return (status.code(), self.stderr());
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "roomz did not exit:\n{}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr.expect("ready"))
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr.expect("ready"))
    }

    /// Sends a signal (`HUP`, `TERM`, `KILL`) to the process.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Asks for a magic link and reads it from the process's standard output.
    pub async fn login_link(&mut self, email: &str) -> String {
        let http = reqwest::Client::new();
        let response = http
            .post(self.url("/auth/request"))
            .json(&serde_json::json!({ "email": email }))
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), 202);
        self.printed_link(email).await
    }

    /// The next magic link for `email` that the console mailer prints on standard output.
    pub async fn printed_link(&mut self, email: &str) -> String {
        let prefix = format!("magic link for {email} ");
        let line = tokio::time::timeout(PATIENCE, async {
            loop {
                let line = self.stdout.recv().await.expect("stdout open");
                if line.starts_with(&prefix) {
                    return line;
                }
            }
        })
        .await
        .expect("a link on stdout");
        link_of(&line)
    }

    /// Logs in through HTTP, reading the link from the process's standard output.
    pub async fn login(&mut self, email: &str) -> String {
        let link = self.login_link(email).await;
        let response = reqwest::Client::new()
            .post(self.url("/auth/verify"))
            .json(&VerifyRequest { token: link })
            .send()
            .await
            .expect("verify");
        assert_eq!(response.status(), 200);
        response.json::<SessionGranted>().await.expect("session").session
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl TestServer {
    /// The server's base URL, as clients are given it.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// A fresh magic link for `email` (asked for and read from the console mailer).
    pub async fn fresh_link(&self, email: &str) -> String {
        assert_eq!(self.request_link(email).await.status(), 202);
        self.link_for(email).await
    }

    /// A connected library client for `email`, logged in with a fresh magic link.
    pub async fn client(&self, email: &str) -> roomz::AsyncClient {
        let client = builder(&self.base_url())
            .session_token(self.fresh_link(email).await)
            .reconnect_delay(Duration::from_millis(100))
            .build()
            .expect("client builds");
        client.connect().await.expect("client connects");
        client
    }
}

/// A client builder that reads no `~/.roomz/config.toml`: the tests must not depend on the
/// settings of the machine they run on.
pub fn builder(url: &str) -> roomz::client::ClientBuilder {
    roomz::AsyncClient::builder(url).config_file("/nonexistent/roomz-tests/config.toml")
}

/// The path of an example program, which `cargo test` builds next to the test binary.
pub fn example(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let profile = exe.parent().and_then(Path::parent).expect("target/<profile>");
    let path = profile.join("examples").join(name);
    assert!(
        path.exists(),
        "{} is missing: run the tests with `cargo test`, which builds examples",
        path.display()
    );
    path
}

/// The next event that `wanted` accepts, within [`PATIENCE`].
pub async fn event<T>(
    events: &mut roomz::client::Events,
    mut wanted: impl FnMut(roomz::client::Event) -> Option<T>,
) -> T {
    tokio::time::timeout(PATIENCE, async {
        loop {
            let event = events.recv().await.expect("the client is alive");
            if let Some(found) = wanted(event) {
                return found;
            }
        }
    })
    .await
    .expect("the event came in time")
}

/// A new, empty database on the PostgreSQL server `ROOMZ_TEST_POSTGRES` names (a URL of any
/// database on it, such as `postgres://roomz@127.0.0.1:55432/postgres`); its URL. `None`
/// when the variable is unset, so PostgreSQL tests are skipped, unless
/// `ROOMZ_REQUIRE_POSTGRES` is set (as `.ci/test` does): then a missing server fails them.
pub async fn fresh_postgres_database() -> Option<String> {
    use sqlx::Connection;
    let Ok(base) = std::env::var("ROOMZ_TEST_POSTGRES") else {
        assert!(
            std::env::var_os("ROOMZ_REQUIRE_POSTGRES").is_none(),
            "ROOMZ_REQUIRE_POSTGRES is set but ROOMZ_TEST_POSTGRES is not"
        );
        eprintln!("skipped: set ROOMZ_TEST_POSTGRES (.ci/test starts a PostgreSQL server)");
        return None;
    };
    let mut url = url::Url::parse(&base).expect("ROOMZ_TEST_POSTGRES is a URL");
    let name = format!("roomz_test_{}", roomz::server::cluster::new_node_id());
    let mut admin = sqlx::PgConnection::connect(&base).await.expect("the test PostgreSQL answers");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .expect("a test database");
    url.set_path(&name);
    Some(url.to_string())
}
