//! Logging in with the library: by token, by cached session across processes, logging out,
//! and sessions the server no longer accepts.

use std::process::Command;
use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use roomz::client::{ClientError, ConnectionState, Event, Session};

use crate::support::{ALICE, BOB, SECRET, TestServer, builder, event, example};

/// Runs the `send` example as its own process (off the test's thread, which also runs the
/// server).
async fn send_example(
    server: &TestServer,
    session_file: &std::path::Path,
    token: Option<&str>,
    text: &str,
) -> std::process::Output {
    let mut command = Command::new(example("send"));
    command
        .args([server.base_url().as_str(), "general", text])
        .env_clear()
        .env("HOME", server.dir.path())
        .env("ROOMZ_SESSION_FILE", session_file);
    if let Some(token) = token {
        command.env("ROOMZ_TOKEN", token);
    }
    tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .expect("the send example runs")
}

#[tokio::test]
async fn a_token_then_the_cached_session_across_processes_then_logout() {
    let server = TestServer::start().await;
    let cache = server.dir.path().join("client/session.json");
    let link = server.fresh_link(ALICE).await;

    let first = send_example(&server, &cache, Some(&link), "first run, by token").await;
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    assert_eq!(String::from_utf8_lossy(&first.stdout).trim(), "sent as message 1 in general");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&cache).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the session cache is private");
    }
    let cached = std::fs::read_to_string(&cache).unwrap();
    assert!(!cached.contains(&link), "the cache holds the session, not the one-time token");

    // A second process: no token, the cached session is enough.
    let second = send_example(&server, &cache, None, "second run, from the cache").await;
    assert!(second.status.success(), "{}", String::from_utf8_lossy(&second.stderr));
    assert_eq!(String::from_utf8_lossy(&second.stdout).trim(), "sent as message 2 in general");

    // The library in this process uses the same cache, then logs out.
    let client = builder(&server.base_url()).session_cache_file(&cache).build().unwrap();
    assert!(client.has_session().unwrap());
    client.connect().await.unwrap();
    let page = client.history("general", None, 10).await.unwrap();
    let texts: Vec<_> = page.messages.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(texts, ["first run, by token", "second run, from the cache"]);
    client.clear_cached_session().await.unwrap();
    assert!(!cache.exists());
    assert_eq!(client.state(), ConnectionState::Closed);

    let third = send_example(&server, &cache, None, "no session any more").await;
    assert!(!third.status.success());
    assert!(String::from_utf8_lossy(&third.stderr).contains("not logged in"), "{third:?}");
}

#[tokio::test]
async fn the_api_logs_in_by_email_and_token() {
    let server = TestServer::start().await;
    let client = builder(&server.base_url()).build().unwrap();
    assert!(!client.has_session().unwrap());
    assert_eq!(client.connect().await, Err(ClientError::NotLoggedIn));
    client.request_magic_link(" Alice@Example.com ").await.unwrap();
    let link = server.link_for(ALICE).await;
    assert_eq!(client.login("wrong-token").await.unwrap_err(), ClientError::InvalidToken);
    let session = client.login(&link).await.unwrap();
    assert_eq!(session.email, ALICE);
    assert!(!format!("{session:?}").contains(&session.session), "Debug never shows the session");
    assert_eq!(
        client.login(&link).await.unwrap_err(),
        ClientError::InvalidToken,
        "links work once"
    );
    client.connect().await.unwrap();
    assert_eq!(client.me().await.unwrap().email, ALICE);
    for _ in 0..5 {
        client.request_magic_link(BOB).await.unwrap();
    }
    assert!(matches!(client.request_magic_link(BOB).await, Err(ClientError::RateLimited { .. })));
    let unreachable = builder("http://127.0.0.1:9").build().unwrap();
    assert!(matches!(
        unreachable.request_magic_link(ALICE).await,
        Err(ClientError::Unreachable { .. })
    ));
}

fn expired_session(server: &TestServer) -> Session {
    let now = chrono::Utc::now().timestamp();
    let claims = serde_json::json!({ "sub": ALICE, "iat": now - 100, "exp": now - 10, "iss": "roomz", "aud": "roomz" });
    let key = EncodingKey::from_secret(SECRET.as_bytes()).unwrap();
    Session {
        server_url: format!("{}/", server.base_url()),
        email: ALICE.into(),
        session: jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap(),
        expires_at: "2020-01-01T00:00:00.000Z".into(),
    }
}

#[tokio::test]
async fn an_expired_cached_session_is_a_clear_error_and_is_forgotten() {
    let server = TestServer::start().await;
    let cache = server.dir.path().join("session.json");
    std::fs::write(&cache, serde_json::to_string(&expired_session(&server)).unwrap()).unwrap();
    let client = builder(&server.base_url()).session_cache_file(&cache).build().unwrap();
    assert!(client.has_session().unwrap());
    let error = client.connect().await.unwrap_err();
    assert_eq!(error, ClientError::SessionExpired);
    assert_eq!(error.to_string(), "session expired: request a new link");
    assert!(!cache.exists(), "a refused session is removed from the cache");
    assert_eq!(client.state(), ConnectionState::Idle, "no reconnect loop");
}

#[tokio::test]
async fn a_session_that_expires_while_connected_ends_without_reconnecting() {
    let server = TestServer::start_with(&[("JWT_EXPIRY_DAYS", "1")]).await;
    let cache = server.dir.path().join("session.json");
    let client = builder(&server.base_url())
        .session_token(server.fresh_link(ALICE).await)
        .session_cache_file(&cache)
        .build()
        .unwrap();
    client.connect().await.unwrap();
    assert!(cache.exists());
    let mut events = client.events();
    server.clock.advance(Duration::from_secs(24 * 3600 + 1));
    assert_eq!(client.rooms().await, Err(ClientError::SessionExpired));
    let reason = event(&mut events, |e| match e {
        Event::Connection(ConnectionState::GaveUp { error }) => Some(error),
        Event::Connection(ConnectionState::Reconnecting { .. }) => panic!("it must not reconnect"),
        _ => None,
    })
    .await;
    assert_eq!(reason.to_string(), "session expired: request a new link");
    assert_eq!(client.send("general", "too late").await, Err(ClientError::SessionExpired));
    assert!(!cache.exists(), "the refused session is removed from the cache");
    assert!(!client.has_session().unwrap());
}

#[tokio::test]
async fn removing_the_address_ends_the_client() {
    let server = TestServer::start().await;
    let client = server.client(ALICE).await;
    let mut events = client.events();
    server.handle.set_allowed_emails(vec![BOB.to_owned()]);
    let reason = event(&mut events, |e| match e {
        Event::Connection(ConnectionState::GaveUp { error }) => Some(error),
        _ => None,
    })
    .await;
    assert_eq!(reason, ClientError::AccessRevoked);
    assert_eq!(client.rooms().await, Err(ClientError::AccessRevoked));
}

#[tokio::test]
async fn the_bare_token_logs_in_as_well_as_the_link() {
    let server = TestServer::start().await;
    let link = server.fresh_link(ALICE).await;
    let token = roomz::protocol::text::token_from_paste(&link).unwrap().to_owned();
    assert!(!token.contains('/'), "{token}");
    let client = builder(&server.base_url()).session_token(format!("  {token}\n")).build().unwrap();
    client.connect().await.unwrap();
    assert_eq!(client.me().await.unwrap().email, ALICE);
}

#[tokio::test]
async fn a_cached_session_of_a_removed_address_is_a_clear_error_and_is_forgotten() {
    let server = TestServer::start().await;
    let cache = server.dir.path().join("session.json");
    let first = builder(&server.base_url())
        .session_token(server.fresh_link(ALICE).await)
        .session_cache_file(&cache)
        .build()
        .unwrap();
    first.connect().await.unwrap();
    first.close().await;
    assert!(cache.exists());
    server.handle.set_allowed_emails(vec![BOB.to_owned()]);

    let next_start = builder(&server.base_url()).session_cache_file(&cache).build().unwrap();
    let error = next_start.connect().await.unwrap_err();
    assert_eq!(error, ClientError::AccessRevoked);
    assert!(error.to_string().contains("request a new link"), "{error}");
    assert!(!cache.exists(), "a refused session is removed from the cache");
    assert_eq!(next_start.state(), ConnectionState::Idle, "no reconnect loop");
}

#[tokio::test]
async fn the_display_name_comes_from_the_environment_before_the_config_file() {
    let server = TestServer::start().await;
    let home = server.dir.path().join("home");
    std::fs::create_dir_all(home.join(".roomz")).unwrap();
    std::fs::write(home.join(".roomz/config.toml"), "[client]\ndisplay_name = \"From The File\"\n")
        .unwrap();
    let run = |name_from_env: Option<&'static str>, token: String| {
        let mut command = Command::new(example("send"));
        command
            .args([server.base_url().as_str(), "general", "hello"])
            .env_clear()
            .env("HOME", &home)
            .env("ROOMZ_SESSION_FILE", home.join("session.json"))
            .env("ROOMZ_TOKEN", token);
        if let Some(name) = name_from_env {
            command.env(roomz::client::DISPLAY_NAME_VAR, name);
        }
        command
    };
    let name_of = async |email: &str| {
        let bob = server.client(BOB).await;
        let members = bob.members("general").await.unwrap();
        members.into_iter().find(|m| m.email == email).and_then(|m| m.name)
    };

    let mut from_file = run(None, server.fresh_link(ALICE).await);
    let out = tokio::task::spawn_blocking(move || from_file.output()).await.unwrap().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(name_of(ALICE).await.as_deref(), Some("From The File"));

    let mut from_env = run(Some("From The Environment"), server.fresh_link(ALICE).await);
    let out = tokio::task::spawn_blocking(move || from_env.output()).await.unwrap().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(name_of(ALICE).await.as_deref(), Some("From The Environment"));
}
