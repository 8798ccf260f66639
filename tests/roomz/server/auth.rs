//! The magic-link login over HTTP: request, page, redeem, rate limit, expiry, bad bodies.

use std::time::Duration;

use roomz::protocol::http::{ErrorBody, LinkRequested, Me, SessionGranted};

use crate::support::{ALICE, BOB, TestServer};

#[tokio::test]
async fn whole_login_from_request_to_me() {
    let server = TestServer::start().await;
    let answer = server.request_link(ALICE).await;
    assert_eq!(answer.status(), 202);
    let link = server.link_for(ALICE).await;
    let prefix = format!("{}auth/verify?token=", server.handle.public_url());
    assert!(link.starts_with(&prefix), "{link} should start with {prefix}");
    let token = link.strip_prefix(&prefix).unwrap();
    assert!(token.len() >= 43, "a token carries at least 256 bits");

    // Opening the link shows the token and does not use it up, however often.
    for _ in 0..2 {
        let page = server.http.get(&link).send().await.unwrap();
        assert_eq!(page.status(), 200);
        let csp = page.headers()["content-security-policy"].to_str().unwrap().to_owned();
        assert!(csp.contains("default-src 'none'"), "{csp}");
        assert_eq!(page.headers()["cache-control"], "no-store");
        assert_eq!(page.headers()["referrer-policy"], "no-referrer");
        let html = page.text().await.unwrap();
        assert!(html.contains(token) && html.contains("roomz chat") && html.contains("Copy"));
    }

    // The whole pasted link works as well as the bare token.
    let response = server.verify(&format!("  {link}\n")).await;
    assert_eq!(response.status(), 200);
    let cookie = response.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.starts_with("roomz_session=") && cookie.contains("HttpOnly"));
    assert!(cookie.contains("SameSite=Strict") && !cookie.contains("Secure"), "{cookie}");
    let granted: SessionGranted = response.json().await.unwrap();
    assert_eq!(granted.email, ALICE);
    assert!(granted.expires_at.ends_with('Z'));

    let me: Me = server.me(&granted.session).await.json().await.unwrap();
    assert_eq!((me.email.as_str(), me.display_name), (ALICE, None));
    let by_cookie = server
        .http
        .get(server.url("/api/me"))
        .header("cookie", format!("roomz_session={}", granted.session))
        .send()
        .await
        .unwrap();
    assert_eq!(by_cookie.status(), 200);

    // Used: the same 401 as a token that never existed, and the page says so.
    let reused = server.verify(token).await;
    assert_eq!(reused.status(), 401);
    let reused: ErrorBody = reused.json().await.unwrap();
    let wrong: ErrorBody = server.verify("A".repeat(43).as_str()).await.json().await.unwrap();
    assert_eq!(reused, wrong);
    let page = server.http.get(&link).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("no longer works"));
}

#[tokio::test]
async fn unknown_addresses_get_the_same_answer_and_no_link() {
    let server = TestServer::start().await;
    let allowed = server.request_link(ALICE).await;
    let allowed_status = allowed.status();
    let allowed: LinkRequested = allowed.json().await.unwrap();
    server.link_for(ALICE).await;

    let stranger = server.request_link("mallory@example.com").await;
    assert_eq!(stranger.status(), allowed_status);
    assert_eq!(stranger.json::<LinkRequested>().await.unwrap(), allowed);
    assert!(server.printed_nothing().await, "no link for an address not on the list");

    // Case and spaces do not matter: the allow-list is canonical.
    assert_eq!(server.request_link("  ALICE@Example.com ").await.status(), 202);
    server.link_for(ALICE).await;
}

#[tokio::test]
async fn rate_limit_counts_per_address_in_the_database() {
    let server = TestServer::start().await;
    for _ in 0..5 {
        assert_eq!(server.request_link(ALICE).await.status(), 202);
        assert_eq!(server.request_link("nobody@example.com").await.status(), 202);
    }
    for email in [ALICE, "nobody@example.com"] {
        let limited = server.request_link(email).await;
        assert_eq!(limited.status(), 429, "{email}");
        let retry: u64 = limited.headers()["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((3500..=3600).contains(&retry), "Retry-After {retry}");
        let body: ErrorBody = limited.json().await.unwrap();
        assert_eq!((body.code.as_str(), body.retry_after), ("rate_limited", Some(retry)));
    }
    assert_eq!(server.request_link(BOB).await.status(), 202, "other addresses are not affected");

    // The count survives a restart.
    let server = server.restart().await;
    assert_eq!(server.request_link(ALICE).await.status(), 429);

    // An hour later the window has moved on.
    server.clock.advance(Duration::from_secs(3601));
    assert_eq!(server.request_link(ALICE).await.status(), 202);
}

#[tokio::test]
async fn links_expire_and_a_new_link_supersedes_the_old() {
    let server = TestServer::start().await;
    server.request_link(ALICE).await;
    let expiring = server.link_for(ALICE).await;
    server.clock.advance(Duration::from_secs(15 * 60 + 1));
    let expired = server.verify(&expiring).await;
    assert_eq!(expired.status(), 401, "expired after 15 minutes");
    let expired: ErrorBody = expired.json().await.unwrap();
    let wrong: ErrorBody = server.verify("A".repeat(43).as_str()).await.json().await.unwrap();
    assert_eq!(expired, wrong, "an expired token is told apart from nothing");

    server.request_link(ALICE).await;
    let first = server.link_for(ALICE).await;
    server.request_link(ALICE).await;
    let second = server.link_for(ALICE).await;
    assert_eq!(server.verify(&first).await.status(), 401, "superseded");
    assert_eq!(server.verify(&second).await.status(), 200);
}

#[tokio::test]
async fn a_removed_address_cannot_redeem_its_link() {
    let server = TestServer::start().await;
    server.request_link(ALICE).await;
    let link = server.link_for(ALICE).await;
    server.handle.set_allowed_emails(vec![BOB.to_owned()]);
    assert_eq!(server.verify(&link).await.status(), 401);
}

#[tokio::test]
async fn bad_bodies_get_clear_client_errors() {
    let server = TestServer::start().await;
    let post = |path: &'static str, content_type: &'static str, body: String| {
        let request = server.http.post(server.url(path)).header("content-type", content_type);
        async move { request.body(body).send().await.unwrap() }
    };
    let cases = [
        ("/auth/request", "application/json", "{not json".to_owned(), 400, "malformed_json"),
        ("/auth/request", "application/json", r#"{"email": 5}"#.to_owned(), 422, "invalid_body"),
        ("/auth/request", "application/json", "{}".to_owned(), 422, "invalid_body"),
        (
            "/auth/request",
            "text/plain",
            r#"{"email":"a@b.co"}"#.to_owned(),
            415,
            "unsupported_media_type",
        ),
        (
            "/auth/request",
            "application/json",
            r#"{"email":"no-at-sign"}"#.to_owned(),
            400,
            "invalid_email",
        ),
        (
            "/auth/request",
            "application/json",
            format!(r#"{{"email":"{}"}}"#, "a".repeat(2000)),
            400,
            "invalid_email",
        ),
        (
            "/auth/request",
            "application/json",
            format!(r#"{{"email":"{}"}}"#, "a".repeat(100_000)),
            413,
            "body_too_large",
        ),
        ("/auth/verify", "application/json", r#"{"token": ["x"]}"#.to_owned(), 422, "invalid_body"),
        (
            "/auth/verify",
            "application/json",
            format!(r#"{{"token":"{}"}}"#, "t".repeat(5000)),
            400,
            "invalid_token",
        ),
        (
            "/auth/verify",
            "application/json",
            r#"{"token":"<script>"}"#.to_owned(),
            401,
            "invalid_token",
        ),
    ];
    for (path, content_type, body, status, code) in cases {
        let response = post(path, content_type, body.clone()).await;
        let got = response.status().as_u16();
        let error: ErrorBody = response.json().await.unwrap();
        assert_eq!(
            (got, error.code.as_str()),
            (status, code),
            "{path} {}",
            &body[..body.len().min(40)]
        );
        assert!(!error.error.is_empty());
    }
    let missing = server.http.get(server.url("/nope")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    let wrong_method = server.http.get(server.url("/auth/request")).send().await.unwrap();
    assert_eq!(wrong_method.status(), 405);
    let error: ErrorBody = wrong_method.json().await.unwrap();
    assert_eq!(error.code, "method_not_allowed");
    let session = server.login(ALICE).await;
    let plain_get = server.http.get(server.url("/ws")).bearer_auth(&session).send().await.unwrap();
    assert!(plain_get.status().is_client_error(), "{}", plain_get.status());
    let error: ErrorBody = plain_get.json().await.unwrap();
    assert_eq!(error.code, "websocket_required");
    let page = server.http.get(server.url("/auth/verify?token=%3Cb%3E")).send().await.unwrap();
    assert_eq!(page.status(), 400);
    assert!(!page.text().await.unwrap().contains("<b>"), "the page never echoes a bad token");
    let health = server.http.get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
}

#[tokio::test]
async fn the_cookie_is_secure_behind_https() {
    let server = TestServer::start_with(&[("ROOMZ_PUBLIC_URL", "https://chat.example.com")]).await;
    server.request_link(ALICE).await;
    let link = server.link_for(ALICE).await;
    assert!(link.starts_with("https://chat.example.com/auth/verify?token="), "{link}");
    let response = server.verify(&link).await;
    let cookie = response.headers()["set-cookie"].to_str().unwrap();
    assert!(cookie.ends_with("; Secure"), "{cookie}");
}

#[tokio::test]
async fn the_cookie_setting_wins_over_the_scheme() {
    for (url, setting, secure) in
        [("https://chat.example.com", "false", false), ("http://127.0.0.1:1", "true", true)]
    {
        let vars = [("ROOMZ_PUBLIC_URL", url), ("ROOMZ_COOKIE_SECURE", setting)];
        let server = TestServer::start_with(&vars).await;
        server.request_link(ALICE).await;
        let link = server.link_for(ALICE).await;
        let response = server.verify(&link).await;
        let cookie = response.headers()["set-cookie"].to_str().unwrap();
        assert_eq!(cookie.ends_with("; Secure"), secure, "{url} {setting}: {cookie}");
    }
}

#[tokio::test]
async fn one_network_cannot_flood_link_requests() {
    let server = TestServer::start().await;
    for i in 0..30 {
        let status = server.request_link(&format!("user{i}@example.com")).await.status();
        assert_eq!(status, 202, "request {i}");
    }
    let flooded = server.request_link("user30@example.com").await;
    assert_eq!(flooded.status(), 429);
    assert!(flooded.headers().contains_key("retry-after"));
    let body: ErrorBody = flooded.json().await.unwrap();
    assert!(body.error.contains("your network"), "{}", body.error);
    server.clock.advance(Duration::from_secs(60));
    assert_eq!(server.request_link(ALICE).await.status(), 202, "the bucket refills");
}

#[tokio::test]
async fn metrics_are_served_only_where_asked() {
    let plain = TestServer::start().await;
    assert!(plain.handle.metrics_addr().is_none());
    assert_eq!(plain.http.get(plain.url("/metrics")).send().await.unwrap().status(), 404);

    let server = TestServer::start_with(&[("ROOMZ_METRICS_BIND", "127.0.0.1:0")]).await;
    let mut alice = server.connect(ALICE).await;
    let _bob = server.connect(BOB).await;
    for i in 0..3 {
        alice.post("general", &format!("counted {i}")).await;
    }
    assert_eq!(server.verify("not-a-token").await.status(), 401);
    let url = format!("http://{}/metrics", server.handle.metrics_addr().unwrap());
    let response = reqwest::get(&url).await.unwrap();
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    let text = response.text().await.unwrap();
    let value = |name: &str| -> f64 {
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} in\n{text}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert_eq!(value("roomz_connections"), 2.0);
    assert_eq!(value("roomz_messages_total"), 3.0);
    assert_eq!(value("roomz_deliveries_total"), 6.0, "3 messages to 2 connections");
    assert_eq!(value("roomz_auth_events_total{event=\"verified\"}"), 2.0);
    assert_eq!(value("roomz_auth_events_total{event=\"rejected\"}"), 1.0);
    assert_eq!(value("roomz_commit_seconds_count"), 3.0);
    assert!(!text.contains(crate::support::SECRET));
}

#[tokio::test]
async fn https_and_secure_websockets_with_the_servers_own_certificate() {
    use std::sync::Arc;

    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    let dir = tempfile::tempdir().unwrap();
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.key_pair.serialize_pem()).unwrap();
    let server = TestServer::start_with(&[
        ("ROOMZ_TLS_CERT", cert.to_str().unwrap()),
        ("ROOMZ_TLS_KEY", key.to_str().unwrap()),
    ])
    .await;
    assert_eq!(server.handle.public_url().scheme(), "https", "links point at https");
    let base = format!("https://localhost:{}", server.addr().port());

    // Plain HTTP gets no answer from the TLS port; HTTPS does, with a Secure cookie.
    assert!(server.http.get(server.url("/healthz")).send().await.is_err());
    let https = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(made.cert.pem().as_bytes()).unwrap())
        .resolve("localhost", server.addr())
        .build()
        .unwrap();
    let health = https.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let asked = https
        .post(format!("{base}/auth/request"))
        .json(&serde_json::json!({ "email": ALICE }))
        .send()
        .await
        .unwrap();
    assert_eq!(asked.status(), 202);
    let link = server.link_for(ALICE).await;
    assert!(link.starts_with("https://"), "{link}");
    let verified = https
        .post(format!("{base}/auth/verify"))
        .json(&serde_json::json!({ "token": link }))
        .send()
        .await
        .unwrap();
    assert_eq!(verified.status(), 200);
    let cookie = verified.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.contains("; Secure"), "{cookie}");
    let session: SessionGranted = verified.json().await.unwrap();

    // A WebSocket over TLS.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(made.cert.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut request =
        format!("wss://localhost:{}/ws", server.addr().port()).into_client_request().unwrap();
    let bearer = format!("Bearer {}", session.session).parse().unwrap();
    request.headers_mut().insert("authorization", bearer);
    let tcp = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
    let connector = tokio_tungstenite::Connector::Rustls(Arc::new(tls));
    let (mut ws, _) =
        tokio_tungstenite::client_async_tls_with_config(request, tcp, None, Some(connector))
            .await
            .unwrap();
    ws.send(tokio_tungstenite::tungstenite::Message::text(r#"{"type":"hello","v":1}"#))
        .await
        .unwrap();
    let welcome = ws.next().await.unwrap().unwrap().into_text().unwrap();
    assert!(welcome.starts_with(r#"{"type":"welcome""#), "{welcome}");
}
