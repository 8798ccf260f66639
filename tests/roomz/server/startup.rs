//! Starting the real binary: every configuration error exits non-zero with the message
//! the configuration reference promises and a hint; good configurations start; SIGTERM
//! stops the server cleanly; no secret reaches the log.

use roomz::protocol::ErrorCode;

use crate::support::{ALICE, Client, SECRET, ServerProcess, base_env};

/// Variables to set (`Some`) or remove (`None`) from the base environment.
type Changes<'a> = Vec<(&'a str, Option<&'a str>)>;

fn env_with(dir: &std::path::Path, changes: &[(&str, Option<&str>)]) -> Vec<(String, String)> {
    let mut vars = base_env(dir);
    for (name, value) in changes {
        vars.retain(|(k, _)| k != name);
        if let Some(value) = value {
            vars.push(((*name).to_owned(), (*value).to_owned()));
        }
    }
    vars
}

async fn start_error(changes: &[(&str, Option<&str>)]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let vars = env_with(dir.path(), changes);
    ServerProcess::spawn(dir.path(), &vars, &[]).exit().await
}

#[tokio::test]
async fn each_configuration_error_names_the_problem_and_the_fix() {
    let cases: Vec<(Changes, &str)> = vec![
        (vec![("JWT_SECRET_KEY", None)], "Error: JWT_SECRET_KEY environment variable must be set"),
        (
            vec![("JWT_SECRET_KEY", Some("too-short"))],
            "Error: JWT_SECRET_KEY must be at least 32 characters",
        ),
        (vec![("ALLOWED_EMAILS", None)], "Error: ALLOWED_EMAILS environment variable must be set"),
        (
            vec![("ALLOWED_EMAILS", Some("alice@example.com, bob@@example.com"))],
            "Error: ALLOWED_EMAILS: \"bob@@example.com\" is not a valid email address",
        ),
        (
            vec![("EMAIL_SENDER", Some("smtp"))],
            "Error: EMAIL_SENDER must be \"console\" or \"resend\", not \"smtp\"",
        ),
        (
            vec![("EMAIL_SENDER", Some("resend"))],
            "Error: RESEND_API_KEY must be set when EMAIL_SENDER=resend",
        ),
        (
            vec![("EMAIL_SENDER", Some("resend")), ("RESEND_API_KEY", Some("sk_live_123"))],
            "Error: RESEND_API_KEY does not look like a Resend key (re_...)",
        ),
        (
            vec![
                ("EMAIL_SENDER", Some("resend")),
                ("RESEND_API_KEY", Some("re_1234567")),
                ("RESEND_BASE_URL", Some("nope")),
            ],
            "Error: RESEND_BASE_URL is not a usable URL",
        ),
        (vec![("EMAIL_FROM", Some("not an address"))], "Error: EMAIL_FROM is not a valid sender"),
        (
            vec![("JWT_EXPIRY_DAYS", Some("0"))],
            "Error: JWT_EXPIRY_DAYS must be a positive integer, not \"0\"",
        ),
        (
            vec![("MAGIC_LINK_EXPIRY_MINUTES", Some("soon"))],
            "Error: MAGIC_LINK_EXPIRY_MINUTES must be a positive integer, not \"soon\"",
        ),
        (
            vec![("MAGIC_LINK_RATE_LIMIT", Some("-5"))],
            "Error: MAGIC_LINK_RATE_LIMIT must be a positive integer, not \"-5\"",
        ),
        (
            vec![("RESEND_RATE_LIMIT", Some(" 5"))],
            "Error: RESEND_RATE_LIMIT must be a positive integer, not \" 5\"",
        ),
        (
            vec![("ROOMZ_MESSAGES_PER_SECOND", Some("2000000"))],
            "Error: ROOMZ_MESSAGES_PER_SECOND must be at most 1000000, not 2000000",
        ),
        (
            vec![("ROOMZ_MESSAGE_BURST", Some("lots"))],
            "Error: ROOMZ_MESSAGE_BURST must be a positive integer, not \"lots\"",
        ),
        (
            vec![("ROOMZ_BIND", Some("localhost:80"))],
            "Error: the bind address (--bind or ROOMZ_BIND) must be IP:PORT",
        ),
        (
            vec![("ROOMZ_PUBLIC_URL", Some("chat.example.com"))],
            "Error: ROOMZ_PUBLIC_URL is not a usable URL",
        ),
        (
            vec![("ROOMZ_COOKIE_SECURE", Some("maybe"))],
            "Error: ROOMZ_COOKIE_SECURE must be true or false",
        ),
        (
            vec![("DATABASE_URL", Some("mysql://db/roomz"))],
            "Error: DATABASE_URL must start with sqlite: or postgres: (this one starts with mysql:)",
        ),
        (
            vec![("DATABASE_URL", Some("postgres://roomz:hunter2@db"))],
            "Error: DATABASE_URL must name the PostgreSQL server and the database",
        ),
        (vec![("DATABASE_POOL_SIZE", Some("many"))], "Error: DATABASE_POOL_SIZE"),
        (
            vec![("ROOMZ_TLS_CERT", Some("/etc/roomz/cert.pem"))],
            "Error: ROOMZ_TLS_CERT is set without ROOMZ_TLS_KEY",
        ),
        (vec![("ROOMZ_METRICS_BIND", Some("9100"))], "Error: ROOMZ_METRICS_BIND must be IP:PORT"),
        (
            vec![("ROOMZ_TRUSTED_PROXIES", Some("127.0.0.1, proxy.lan"))],
            "Error: ROOMZ_TRUSTED_PROXIES: \"proxy.lan\" is not an IP address",
        ),
        (
            vec![("ROOMZ_MAX_CONNECTIONS_PER_USER", Some("0"))],
            "Error: ROOMZ_MAX_CONNECTIONS_PER_USER must be a positive integer",
        ),
        (
            vec![("JWT_PREVIOUS_SECRET_KEY", Some("too-short"))],
            "Error: JWT_PREVIOUS_SECRET_KEY must be at least 32 characters",
        ),
        (
            vec![("JWT_PREVIOUS_SECRET_KEY", Some(SECRET))],
            "Error: JWT_PREVIOUS_SECRET_KEY is the same as JWT_SECRET_KEY",
        ),
        (
            vec![("DATABASE_URL", Some("sqlite::memory:"))],
            "Error: DATABASE_URL must name a database file",
        ),
    ];
    for (changes, expected) in cases {
        let (code, stderr) = start_error(&changes).await;
        assert_eq!(code, Some(2), "{changes:?} exited with {code:?}:\n{stderr}");
        assert!(stderr.starts_with(expected), "{changes:?}: expected {expected:?}, got:\n{stderr}");
        assert!(stderr.contains("hint: "), "{changes:?} gives no hint:\n{stderr}");
        assert!(!stderr.contains(SECRET), "the secret leaked:\n{stderr}");
    }
}

#[tokio::test]
async fn runtime_startup_failures_exit_non_zero_with_a_hint() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().to_string();
    let (code, stderr) = start_error(&[("ROOMZ_BIND", Some(&port))]).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("Error: cannot listen on {port}")) && stderr.contains("hint: "),
        "{stderr}"
    );

    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, "").unwrap();
    let url = format!("sqlite:{}/sub/roomz.db", blocker.display());
    let (code, stderr) = start_error(&[("DATABASE_URL", Some(&url))]).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("Error: cannot open the database"), "{stderr}");
}

#[tokio::test]
async fn a_dot_env_file_is_read_and_the_environment_wins() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(".env"),
        format!("JWT_SECRET_KEY={SECRET}\nALLOWED_EMAILS=alice@example.com\nMAGIC_LINK_RATE_LIMIT=not-a-number\n"),
    )
    .unwrap();
    let vars = env_with(dir.path(), &[("JWT_SECRET_KEY", None), ("ALLOWED_EMAILS", None)]);
    // The bad value in .env is used when the environment does not set it...
    let (code, stderr) = ServerProcess::spawn(dir.path(), &vars, &[]).exit().await;
    assert_eq!(code, Some(2));
    assert!(stderr.contains("MAGIC_LINK_RATE_LIMIT"), "{stderr}");
    // ...and overridden when it does.
    let vars = env_with(
        dir.path(),
        &[("JWT_SECRET_KEY", None), ("ALLOWED_EMAILS", None), ("MAGIC_LINK_RATE_LIMIT", Some("3"))],
    );
    let mut server = ServerProcess::spawn(dir.path(), &vars, &[]).ready().await;
    server.login(ALICE).await;

    // Only the working directory counts: a .env further up is not read.
    let below = dir.path().join("below");
    std::fs::create_dir(&below).unwrap();
    let (code, stderr) = ServerProcess::spawn(&below, &vars, &[]).exit().await;
    assert_eq!(code, Some(2));
    assert!(
        stderr.starts_with("Error: JWT_SECRET_KEY environment variable must be set"),
        "{stderr}"
    );

    std::fs::write(dir.path().join(".env"), "THIS LINE IS BROKEN\n").unwrap();
    let (code, stderr) = ServerProcess::spawn(dir.path(), &vars, &[]).exit().await;
    assert_eq!(code, Some(2));
    assert!(stderr.starts_with("Error: cannot read .env: a line is not NAME=value"), "{stderr}");

    // A line dotenvy cannot parse is named by its variable, never quoted: it may be a key.
    let leaked = "re_a-key-that-must-stay-out-of-every-message";
    std::fs::write(dir.path().join(".env"), format!("RESEND_API_KEY=\"{leaked}\nNEXT=1\n"))
        .unwrap();
    let (code, stderr) = ServerProcess::spawn(dir.path(), &vars, &[]).exit().await;
    assert_eq!(code, Some(2));
    assert!(
        stderr.starts_with("Error: cannot read .env: the line that sets RESEND_API_KEY"),
        "{stderr}"
    );
    assert!(!stderr.contains(leaked), "the key leaked:\n{stderr}");
}

#[tokio::test]
async fn an_empty_allow_list_starts_with_a_warning_and_the_flag_beats_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let vars =
        env_with(dir.path(), &[("ALLOWED_EMAILS", Some("")), ("ROOMZ_BIND", Some("127.0.0.1:1"))]);
    let server = ServerProcess::spawn(dir.path(), &vars, &["--bind", "127.0.0.1:0"]).ready().await;
    assert!(
        server.stderr().contains("ALLOWED_EMAILS is empty: nobody can log in"),
        "{}",
        server.stderr()
    );
}

#[tokio::test]
async fn help_lists_every_variable() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_roomz"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for variable in [
        "JWT_SECRET_KEY",
        "ALLOWED_EMAILS",
        "EMAIL_SENDER",
        "RESEND_API_KEY",
        "EMAIL_FROM",
        "JWT_EXPIRY_DAYS",
        "MAGIC_LINK_EXPIRY_MINUTES",
        "MAGIC_LINK_RATE_LIMIT",
        "ROOMZ_BIND",
        "ROOMZ_PUBLIC_URL",
        "ROOMZ_COOKIE_SECURE",
        "DATABASE_URL",
        "DATABASE_POOL_SIZE",
        "JWT_PREVIOUS_SECRET_KEY",
        "ROOMZ_TRUSTED_PROXIES",
        "ROOMZ_METRICS_BIND",
        "ROOMZ_TLS_CERT",
        "ROOMZ_TLS_KEY",
        "--tls-cert",
        "ROOMZ_MAX_CONNECTIONS_PER_USER",
        "ROOMZ_MAX_CONNECTIONS_PER_ADDRESS",
        "--bind",
        "RESEND_BASE_URL",
        "RESEND_RATE_LIMIT",
        "ROOMZ_MESSAGES_PER_SECOND",
        "ROOMZ_MESSAGE_BURST",
        "RUST_LOG",
    ] {
        assert!(help.contains(variable), "--help does not mention {variable}:\n{help}");
    }
}

#[tokio::test]
async fn sigterm_closes_connections_cleanly_and_logs_hold_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let vars = base_env(dir.path());
    let mut server = ServerProcess::spawn(dir.path(), &vars, &[]).ready().await;
    let session = server.login(ALICE).await;
    let mut alice = Client::connect(&server.ws_url(), &session, Default::default()).await;
    alice.post("general", "before the shutdown").await;

    server.signal("TERM");
    let error = alice.error().await;
    assert_eq!(error.code, ErrorCode::ShuttingDown);
    assert_eq!(alice.closed().await, "closed: 1001");
    let (code, stderr) = server.exit().await;
    assert_eq!(code, Some(0));
    assert!(stderr.contains("roomz serve: stopped"), "{stderr}");

    // The log has the auth events, and none of the secrets.
    assert!(stderr.contains("auth: magic link requested") && stderr.contains("auth: verified"));
    assert!(!stderr.contains(SECRET), "the JWT key is in the log");
    assert!(!stderr.contains(&session), "the session is in the log");
    assert!(!stderr.contains("token="), "a magic link is in the log");
}

#[tokio::test]
async fn ctrl_c_stops_cleanly_and_every_auth_event_has_its_log_line() {
    let dir = tempfile::tempdir().unwrap();
    let vars = env_with(dir.path(), &[("MAGIC_LINK_RATE_LIMIT", Some("2"))]);
    let mut server = ServerProcess::spawn(dir.path(), &vars, &[]).ready().await;
    let session = server.login(ALICE).await;
    let http = reqwest::Client::new();
    let verify = |token: &str| {
        http.post(server.url("/auth/verify")).json(&serde_json::json!({ "token": token })).send()
    };
    assert_eq!(verify("not-a-real-token").await.unwrap().status(), 401);
    let request = || {
        http.post(server.url("/auth/request")).json(&serde_json::json!({ "email": ALICE })).send()
    };
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(request().await.unwrap().status().as_u16());
    }
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
    let mut alice = Client::connect(&server.ws_url(), &session, Default::default()).await;
    alice.post("general", "before ctrl-c").await;

    server.signal("INT");
    assert_eq!(alice.error().await.code, ErrorCode::ShuttingDown);
    let (code, stderr) = server.exit().await;
    assert_eq!(code, Some(0), "{stderr}");
    for line in [
        "auth: magic link requested",
        "auth: magic link sent",
        "auth: verified, session issued",
        "auth: verification rejected",
        "auth: rate limit exceeded (magic link requests)",
        "ws: connected",
        "ws: disconnected",
        "roomz serve: stopped",
    ] {
        assert!(stderr.contains(line), "no {line:?} in the log:\n{stderr}");
    }
    // A clean stop folds the write-ahead log into the database file.
    let wal = dir.path().join("roomz.db-wal");
    assert!(std::fs::metadata(&wal).map_or(true, |m| m.len() == 0), "the WAL is left behind");
}

#[tokio::test]
async fn the_token_command_signs_a_session_the_server_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let vars = base_env(dir.path());
    let token = |email: &str, extra: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_roomz"))
            .arg("token")
            .arg(email)
            .args(extra)
            .current_dir(dir.path())
            .env_clear()
            .env("HOME", dir.path())
            .envs(vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .unwrap()
    };
    let signed = token("Alice@Example.com", &["--days", "2"]);
    assert!(signed.status.success(), "{}", String::from_utf8_lossy(&signed.stderr));
    let session = String::from_utf8(signed.stdout).unwrap().trim().to_owned();
    assert_eq!(session.matches('.').count(), 2, "one JWT on standard output: {session}");

    let server = ServerProcess::spawn(dir.path(), &vars, &[]).ready().await;
    let me = reqwest::Client::new()
        .get(server.url("/api/me"))
        .bearer_auth(&session)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);
    let me: roomz::protocol::http::Me = me.json().await.unwrap();
    assert_eq!(me.email, ALICE);

    let stranger = token("mallory@example.com", &[]);
    assert_eq!(stranger.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&stranger.stderr).contains("is not on ALLOWED_EMAILS"));
    assert_eq!(token(ALICE, &["--days", "0"]).status.code(), Some(2));
}

#[tokio::test]
async fn a_certificate_that_cannot_be_read_stops_the_start() {
    let (code, stderr) = start_error(&[
        ("ROOMZ_TLS_CERT", Some("/nonexistent/cert.pem")),
        ("ROOMZ_TLS_KEY", Some("/nonexistent/key.pem")),
    ])
    .await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.starts_with("Error: cannot use the TLS certificate: /nonexistent/cert.pem"),
        "{stderr}"
    );
    assert!(
        stderr.contains("hint: ROOMZ_TLS_CERT must hold the PEM certificate chain"),
        "{stderr}"
    );
}
