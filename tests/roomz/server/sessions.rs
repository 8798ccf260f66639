//! Sessions: forged and expired JWTs are refused everywhere, and removing an address from
//! the allow-list revokes its sessions at once (directly and by SIGHUP).

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use roomz::protocol::{ClientFrame, ErrorCode, PROTOCOL_VERSION, ServerFrame};
use serde_json::{Value, json};

use crate::support::{
    ALICE, BOB, CAROL, Client, SECRET, ServerProcess, TestServer, base_env, open_ws,
};

fn sign(claims: &Value, key: &str) -> String {
    let key = EncodingKey::from_secret(key.as_bytes()).unwrap();
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &key).unwrap()
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn claims(sub: &str) -> Value {
    json!({ "sub": sub, "iat": now(), "exp": now() + 3600, "iss": "roomz", "aud": "roomz" })
}

fn with(mut claims: Value, key: &str, value: Value) -> Value {
    if value.is_null() {
        claims.as_object_mut().unwrap().remove(key);
    } else {
        claims[key] = value;
    }
    claims
}

#[tokio::test]
async fn forged_and_expired_sessions_are_refused_on_http_and_ws() {
    let server = TestServer::start().await;
    let alg_none = {
        let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
        let payload = URL_SAFE_NO_PAD.encode(claims(ALICE).to_string());
        format!("{header}.{payload}.")
    };
    let hs512 = {
        let key = EncodingKey::from_secret(SECRET.as_bytes()).unwrap();
        jsonwebtoken::encode(&Header::new(Algorithm::HS512), &claims(ALICE), &key).unwrap()
    };
    let bad = [
        ("wrong key", sign(&claims(ALICE), "another-secret-that-is-long-enough-000")),
        ("alg none", alg_none),
        ("HS512", hs512),
        ("expired", sign(&with(claims(ALICE), "exp", json!(now() - 10)), SECRET)),
        ("exp as a string", sign(&with(claims(ALICE), "exp", json!("99999999999")), SECRET)),
        ("no exp", sign(&with(claims(ALICE), "exp", Value::Null), SECRET)),
        ("wrong audience", sign(&with(claims(ALICE), "aud", json!("other")), SECRET)),
        ("wrong issuer", sign(&with(claims(ALICE), "iss", json!("other")), SECRET)),
        ("no subject", sign(&with(claims(ALICE), "sub", Value::Null), SECRET)),
        ("issued in the future", sign(&with(claims(ALICE), "iat", json!(now() + 3600)), SECRET)),
        ("not on the list", sign(&claims("mallory@example.com"), SECRET)),
        ("garbage", "not.a.jwt".to_owned()),
    ];
    for (what, token) in &bad {
        let me = server.me(token).await;
        assert!(matches!(me.status().as_u16(), 401 | 403), "{what}: {}", me.status());
        let bearer = format!("Bearer {token}");
        let ws = open_ws(&server.ws_url(), &[("authorization", &bearer)]).await;
        assert!(ws.is_err(), "{what}: the WebSocket upgrade must be refused");
    }
    let expired = &bad[3].1;
    let body = server.me(expired).await;
    assert!(body.text().await.unwrap().contains("session expired"));

    let unauthenticated = server.http.get(server.url("/api/me")).send().await.unwrap();
    assert_eq!(unauthenticated.status(), 401);

    // The control: a correctly signed session works.
    let good = sign(&claims(ALICE), SECRET);
    let me = server.me(&good).await;
    assert_eq!(me.status(), 200);
}

#[tokio::test]
async fn a_session_ends_when_it_expires_even_mid_connection() {
    let server = TestServer::start_with(&[("JWT_EXPIRY_DAYS", "1")]).await;
    let mut alice = server.connect(ALICE).await;
    server.clock.advance(Duration::from_secs(24 * 3600 + 1));
    let me = server.me(&alice.session).await;
    assert_eq!(me.status(), 401);
    alice.send(&ClientFrame::Ping { req: None }).await;
    assert_eq!(alice.error().await.code, ErrorCode::SessionExpired);
    assert_eq!(alice.closed().await, "closed: 4001");
}

#[tokio::test]
async fn removing_an_address_revokes_its_sessions_at_once() {
    let server = TestServer::start().await;
    let mut alice = server.connect(ALICE).await;
    let mut bob = server.connect(BOB).await;
    let removed = server.handle.set_allowed_emails(vec![BOB.to_owned()]);
    assert_eq!(removed, [ALICE, CAROL]);

    assert_eq!(alice.error().await.code, ErrorCode::AccessRevoked);
    assert_eq!(alice.closed().await, "closed: 4003");
    let me = server.me(&alice.session).await;
    assert_eq!(me.status(), 403);
    let bearer = format!("Bearer {}", alice.session);
    assert!(open_ws(&server.ws_url(), &[("authorization", &bearer)]).await.is_err());

    bob.post("general", "still here").await;
}

#[tokio::test]
async fn a_frame_from_a_removed_address_is_refused_even_before_hello() {
    // An open socket that has not said hello is not yet known to the hub, so removing the
    // address cannot close it: the check on the next frame must.
    let server = TestServer::start().await;
    let session = server.login(ALICE).await;
    let mut alice = Client::open(&server.ws_url(), &session).await;
    server.handle.set_allowed_emails(vec![BOB.to_owned()]);

    alice.send(&ClientFrame::Hello { v: PROTOCOL_VERSION, since: Default::default() }).await;
    assert_eq!(alice.error().await.code, ErrorCode::AccessRevoked);
    assert_eq!(alice.closed().await, "closed: 4003");
}

#[tokio::test]
async fn cookie_sessions_need_the_servers_own_origin() {
    let server = TestServer::start().await;
    let session = server.login(ALICE).await;
    let cookie = format!("roomz_session={session}");
    let foreign = [("cookie", cookie.as_str()), ("origin", "https://evil.example")];
    assert!(open_ws(&server.ws_url(), &foreign).await.is_err());
    assert!(open_ws(&server.ws_url(), &[("cookie", cookie.as_str())]).await.is_err());
    let origin = server.handle.public_url().origin().ascii_serialization();
    let own = [("cookie", cookie.as_str()), ("origin", origin.as_str())];
    assert!(open_ws(&server.ws_url(), &own).await.is_ok());
}

#[tokio::test]
async fn sighup_rereads_the_allow_list_from_dot_env() {
    let dir = tempfile::tempdir().unwrap();
    let mut vars = base_env(dir.path());
    let list = vars.iter().position(|(k, _)| k == "ALLOWED_EMAILS").unwrap();
    let (_, allowed) = vars.remove(list);
    let write_env = |emails: &str| {
        std::fs::write(dir.path().join(".env"), format!("ALLOWED_EMAILS={emails}\n")).unwrap()
    };
    write_env(&allowed);

    let mut server = ServerProcess::spawn(dir.path(), &vars, &[]).ready().await;
    let session = server.login(ALICE).await;
    let mut alice = Client::connect(&server.ws_url(), &session, Default::default()).await;

    // A broken file changes nothing.
    write_env("alice@example.com,not-an-address");
    server.signal("HUP");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pong = alice.request(|req| ClientFrame::Ping { req }).await;
    assert!(matches!(pong, ServerFrame::Pong { .. }), "{pong:?}");
    assert!(server.stderr().contains("allow-list not reloaded"));

    // A file that does not parse is described, never quoted: its lines may hold keys.
    let leaked = "a-secret-on-an-unparsable-line-0123456789";
    std::fs::write(dir.path().join(".env"), format!("JWT_SECRET_KEY='{leaked}\n")).unwrap();
    server.signal("HUP");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(server.stderr().contains("the line that sets JWT_SECRET_KEY cannot be parsed"));
    assert!(!server.stderr().contains(leaked), "{}", server.stderr());

    write_env(BOB);
    server.signal("HUP");
    assert_eq!(alice.error().await.code, ErrorCode::AccessRevoked);
    assert_eq!(alice.closed().await, "closed: 4003");
    let me = reqwest::Client::new()
        .get(server.url("/api/me"))
        .bearer_auth(&session)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 403);
    assert!(server.stderr().contains("allow-list reloaded"));
}

#[tokio::test]
async fn a_rotated_key_keeps_the_sessions_of_the_previous_one() {
    let server = TestServer::start().await;
    let before = server.login(ALICE).await;
    assert_eq!(kid_of(&before).len(), 12, "every session names its key");
    let new_key = "a-new-key-after-the-rotation-0123456789";

    // The new key signs; the previous one still verifies what it signed.
    let server = server
        .stop()
        .await
        .with("JWT_SECRET_KEY", Some(new_key))
        .with("JWT_PREVIOUS_SECRET_KEY", Some(SECRET))
        .start()
        .await;
    assert_eq!(server.me(&before).await.status(), 200);
    let mut alice = Client::connect(&server.ws_url(), &before, Default::default()).await;
    alice.post("general", "still here after the rotation").await;
    let after = server.login(BOB).await;
    assert_ne!(kid_of(&after), kid_of(&before));

    // Once the previous key is removed, its sessions end; the new ones go on.
    let server = server.stop().await.with("JWT_PREVIOUS_SECRET_KEY", None).start().await;
    assert_eq!(server.me(&before).await.status(), 401);
    assert_eq!(server.me(&after).await.status(), 200);
}

fn kid_of(token: &str) -> String {
    jsonwebtoken::decode_header(token).unwrap().kid.unwrap_or_default()
}
