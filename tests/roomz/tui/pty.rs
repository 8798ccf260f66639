//! The real `roomz chat` binary in a pseudo-terminal against the real `roomz serve` binary,
//! used as a person would: log in with the link the console mailer printed, chat with a
//! second client, quit, come back straight in from the cached session, log out, and log in
//! again with the bare token.

use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use portable_pty::{CommandBuilder, PtySize, native_pty_system};
use roomz::client::Event;

use crate::support::{ALICE, BOB, PATIENCE, ServerProcess, base_env, builder, event};

/// The chat running in a pseudo-terminal, its screen kept by a terminal emulator.
struct Chat {
    child: Box<dyn portable_pty::Child + Send + Sync>,
    /// Says when the reader has seen the end of the output.
    drained: std::sync::mpsc::Receiver<()>,
    /// Closing the master would hang up the terminal: it lives as long as the chat.
    _master: Box<dyn portable_pty::MasterPty + Send>,
    writer: Box<dyn Write + Send>,
    screen: Arc<Mutex<vt100::Parser>>,
    raw: Arc<Mutex<Vec<u8>>>,
}

impl Chat {
    fn start(server: &str, home: &std::path::Path) -> Self {
        Self::spawn(&["--server", server], &[], home)
    }

    /// `roomz chat` with these arguments and variables (and HOME, TERM), nothing else.
    fn spawn(args: &[&str], vars: &[(&str, &str)], home: &std::path::Path) -> Self {
        let pty = native_pty_system()
            .openpty(PtySize { rows: 24, cols: 100, pixel_width: 0, pixel_height: 0 })
            .expect("a pseudo-terminal");
        let mut command = CommandBuilder::new(env!("CARGO_BIN_EXE_roomz"));
        command.arg("chat");
        command.args(args);
        command.env_clear();
        command.env("HOME", home);
        command.env("TERM", "xterm-256color");
        for (name, value) in vars {
            command.env(name, value);
        }
        let child = pty.slave.spawn_command(command).expect("roomz chat starts");
        drop(pty.slave);
        let mut reader = pty.master.try_clone_reader().expect("reader");
        let writer = pty.master.take_writer().expect("writer");
        let size = |n| std::num::NonZeroU16::new(n).expect("not zero");
        let screen = Arc::new(Mutex::new(vt100::Parser::new(size(24), size(100), 0)));
        let raw = Arc::new(Mutex::new(Vec::new()));
        let (into_screen, into_raw) = (screen.clone(), raw.clone());
        let (done, drained) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            while let Ok(n) = reader.read(&mut buffer) {
                if n == 0 {
                    break;
                }
                into_screen.lock().unwrap().process(&buffer[..n]);
                into_raw.lock().unwrap().extend_from_slice(&buffer[..n]);
            }
            let _ = done.send(());
        });
        Self { child, drained, _master: pty.master, writer, screen, raw }
    }

    fn contents(&self) -> String {
        self.screen.lock().unwrap().screen().contents()
    }

    /// Waits until the screen shows `text`.
    async fn shows(&self, text: &str) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while !self.contents().contains(text) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the screen never showed {text:?}:\n{}",
                self.contents()
            );
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    }

    fn type_keys(&mut self, keys: &str) {
        self.writer.write_all(keys.as_bytes()).unwrap();
        self.writer.flush().unwrap();
    }

    /// Pastes text the way a terminal does with bracketed paste on.
    fn paste(&mut self, text: &str) {
        self.type_keys(&format!("\u{1b}[200~{text}\u{1b}[201~"));
    }
    /// Waits for the exit, and for the last of the output to be read.
    async fn exit_code(&mut self) -> u32 {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let _ = self.drained.recv_timeout(Duration::from_secs(5));
                return status.exit_code();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "roomz chat did not exit:\n{}",
                self.contents()
            );
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    }
}

impl Drop for Chat {
    fn drop(&mut self) {
        // A failed test must not leave a chat running.
        let _ = self.child.kill();
    }
}

/// The bytes that undo the chat's terminal setup, in the last output of `chat`.
fn assert_restored(chat: &Chat) {
    let raw = chat.raw.lock().unwrap().clone();
    let tail = String::from_utf8_lossy(&raw[raw.len().saturating_sub(300)..]).into_owned();
    assert!(tail.contains("\u{1b}[?1049l"), "the alternate screen was left: {tail:?}");
    assert!(tail.contains("\u{1b}[?2004l"), "bracketed paste was turned off: {tail:?}");
    assert!(tail.contains("\u{1b}[?25h"), "the cursor is shown again: {tail:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_in_chat_quit_come_back_and_log_out() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::spawn(dir.path(), &base_env(dir.path()), &[]).ready().await;
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();

    // The journey of a new user: email, the link `roomz serve` printed, and in.
    let mut chat = Chat::start(&server.url(""), &home);
    chat.shows("Email:").await;
    chat.type_keys("alice@example.com\r");
    chat.shows("A login link is on its way to alice@example.com").await;
    let link = server.printed_link(ALICE).await;
    chat.paste(&link);
    chat.type_keys("\r");
    chat.shows("#general").await;
    chat.shows("● connected").await;
    let session = home.join(".roomz/session.json");
    assert!(session.exists(), "the session is cached");
    let log = home.join(".cache/roomz/chat.log");
    assert!(log.exists(), "the log goes to a file");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode =
            |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&session), 0o600);
        assert_eq!(mode(&log), 0o600, "the log is private too");
    }

    // A message typed here reaches another client; one from there shows here.
    let bob = builder(&server.url("")).session_token(server.login_link(BOB).await).build().unwrap();
    bob.connect().await.unwrap();
    let mut bob_events = bob.events();
    chat.type_keys("hello from the pty\r");
    let seen = event(&mut bob_events, |e| match e {
        Event::Message(m) if m.author == ALICE => Some(m.text),
        _ => None,
    })
    .await;
    assert_eq!(seen, "hello from the pty");
    bob.send("general", "hi alice, from bob").await.unwrap();
    chat.shows("bob@example.com hi alice, from bob").await;

    chat.type_keys("/frobnicate\r");
    chat.shows("unknown command /frobnicate").await;
    chat.type_keys("/quit\r");
    assert_eq!(chat.exit_code().await, 0);
    assert_restored(&chat);

    // Next time: straight in, from the cached session; Ctrl-C twice leaves as cleanly.
    let mut again = Chat::start(&server.url(""), &home);
    again.shows("#general").await;
    again.shows("hi alice, from bob").await;
    assert!(!again.contents().contains("Email:"));
    again.type_keys("\u{3}");
    again.shows("press Ctrl-C again to quit").await;
    again.type_keys("\u{3}");
    assert_eq!(again.exit_code().await, 0);
    assert_restored(&again);

    // /logout forgets the session; the bare token from the next link logs in again.
    let mut third = Chat::start(&server.url(""), &home);
    third.shows("● connected").await;
    third.type_keys("/logout\r");
    third.shows("Email:").await;
    assert!(!session.exists(), "the cached session is deleted");
    third.type_keys("alice@example.com\r");
    third.shows("A login link is on its way").await;
    let link = server.printed_link(ALICE).await;
    let token = link.rsplit("token=").next().unwrap().to_owned();
    third.paste(&token);
    third.type_keys("\r");
    third.shows("● connected").await;
    assert!(session.exists());
    third.type_keys("/quit\r");
    assert_eq!(third.exit_code().await, 0);
}

/// Arguments, variables, HOME, and the server the chat should say it uses.
type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a std::path::Path, &'a str);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_flag_beats_the_variable_beats_the_config_file() {
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join(".roomz")).unwrap();
    std::fs::write(
        home.path().join(".roomz/config.toml"),
        "[client]\nserver_url = \"http://from-the-file.test:1\"\n",
    )
    .unwrap();
    let from_env = [("ROOMZ_SERVER", "http://from-the-variable.test:2")];
    let empty_home = tempfile::tempdir().unwrap();
    let cases: [Case; 4] = [
        (
            &["--server", "http://from-the-flag.test:3"],
            &from_env,
            home.path(),
            "from-the-flag.test:3",
        ),
        (&[], &from_env, home.path(), "from-the-variable.test:2"),
        (&[], &[], home.path(), "from-the-file.test:1"),
        (&[], &[], empty_home.path(), "127.0.0.1:8000"),
    ];
    for (args, vars, home, shown) in cases {
        let mut chat = Chat::spawn(args, vars, home);
        chat.shows("Email:").await;
        assert!(
            chat.contents().contains(&format!("roomz · http://{shown}")),
            "{}",
            chat.contents()
        );
        chat.type_keys("\u{3}\u{3}");
        chat.exit_code().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_gives_the_terminal_back() {
    let home = tempfile::tempdir().unwrap();
    for signal in ["TERM", "HUP"] {
        let mut chat = Chat::spawn(&["--server", "http://127.0.0.1:9"], &[], home.path());
        chat.shows("Email:").await;
        let pid = chat.child.process_id().expect("the chat runs").to_string();
        let killed =
            std::process::Command::new("kill").args([&format!("-{signal}"), &pid]).status();
        assert!(killed.unwrap().success());
        assert_eq!(chat.exit_code().await, 0, "SIG{signal} is a normal way out");
        assert_restored(&chat);
    }
}
