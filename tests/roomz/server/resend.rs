//! The Resend mailer against a local HTTP mock of the Resend API: what it sends, that the
//! emailed link logs in, and how it retries.

use std::time::Duration;

use wiremock::matchers::{header, header_exists, method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use crate::support::{ALICE, TestServer};

const API_KEY: &str = "re_test_0123456789";

async fn server_with_mock(mock: &MockServer) -> TestServer {
    TestServer::start_with(&[
        ("EMAIL_SENDER", "resend"),
        ("RESEND_API_KEY", API_KEY),
        ("RESEND_BASE_URL", &mock.uri()),
        ("EMAIL_FROM", "roomz <login@example.com>"),
    ])
    .await
}

fn accepted() -> ResponseTemplate {
    ResponseTemplate::new(200)
        .set_body_json(serde_json::json!({ "id": "49a3999c-0ce1-4ea6-ab68-afcd6dc2e794" }))
}

async fn requests_after(mock: &MockServer, count: usize) -> Vec<Request> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let received = mock.received_requests().await.unwrap_or_default();
        if received.len() >= count || tokio::time::Instant::now() > deadline {
            return received;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_emailed_link_logs_in() {
    let mock = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/emails"))
        .and(header("authorization", format!("Bearer {API_KEY}").as_str()))
        .and(header_exists("idempotency-key"))
        .respond_with(accepted())
        .expect(1)
        .mount(&mock)
        .await;
    let server = server_with_mock(&mock).await;
    assert_eq!(server.request_link(ALICE).await.status(), 202);

    let sent = requests_after(&mock, 1).await;
    let body: serde_json::Value = serde_json::from_slice(&sent[0].body).unwrap();
    assert_eq!(body["to"], serde_json::json!([ALICE]));
    assert_eq!(body["from"], "roomz <login@example.com>");
    let text = body["text"].as_str().unwrap();
    let link = text
        .split_whitespace()
        .find(|w| w.contains("/auth/verify?token="))
        .expect("a link in the text");
    assert!(body["html"].as_str().unwrap().contains(link));
    assert_eq!(server.verify(link).await.status(), 200);
}

#[tokio::test]
async fn server_errors_and_rate_limits_are_retried_with_one_idempotency_key() {
    let mock = MockServer::start().await;
    let failure =
        serde_json::json!({ "statusCode": 500, "message": "boom", "name": "application_error" });
    Mock::given(method("POST"))
        .and(path("/emails"))
        .respond_with(ResponseTemplate::new(500).set_body_json(failure))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&mock)
        .await;
    Mock::given(method("POST"))
        .and(path("/emails"))
        .respond_with(ResponseTemplate::new(429).insert_header("ratelimit-reset", "1"))
        .up_to_n_times(1)
        .with_priority(2)
        .mount(&mock)
        .await;
    Mock::given(method("POST"))
        .and(path("/emails"))
        .respond_with(accepted())
        .with_priority(3)
        .mount(&mock)
        .await;
    let server = server_with_mock(&mock).await;
    server.request_link(ALICE).await;

    let sent = requests_after(&mock, 3).await;
    assert_eq!(sent.len(), 3, "a 500, a 429, then success");
    let keys: Vec<_> = sent.iter().map(|r| r.headers["idempotency-key"].clone()).collect();
    assert!(keys.iter().all(|k| *k == keys[0]), "retries reuse the idempotency key");
}

#[tokio::test]
async fn a_refused_email_is_not_retried() {
    let mock = MockServer::start().await;
    let invalid =
        serde_json::json!({ "statusCode": 422, "message": "bad from", "name": "validation_error" });
    Mock::given(method("POST"))
        .and(path("/emails"))
        .respond_with(ResponseTemplate::new(422).set_body_json(invalid))
        .mount(&mock)
        .await;
    let server = server_with_mock(&mock).await;
    assert_eq!(
        server.request_link(ALICE).await.status(),
        202,
        "the answer does not depend on the mailer"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(mock.received_requests().await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_call_that_outlasts_the_timeout_is_abandoned_and_tried_again() {
    use roomz::server::config::Secret;
    use roomz::server::mailer::{LinkMail, Mailer, ResendMailer};

    let mock = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/emails"))
        .respond_with(accepted().set_delay(Duration::from_secs(5)))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&mock)
        .await;
    Mock::given(method("POST")).and(path("/emails")).respond_with(accepted()).mount(&mock).await;
    let base = mock.uri().parse().unwrap();
    let mailer = ResendMailer::new(
        &Secret::new(API_KEY.to_owned()),
        base,
        "login@example.com",
        Duration::from_millis(300),
    )
    .unwrap();
    let mail = LinkMail {
        to: ALICE.to_owned(),
        link: "http://127.0.0.1:8000/auth/verify?token=x".to_owned(),
        valid_minutes: 15,
        idempotency_key: "key-1".to_owned(),
    };

    let sent = tokio::time::timeout(Duration::from_secs(4), mailer.send(&mail)).await;
    assert!(matches!(sent, Ok(Ok(()))), "the second try gets through: {sent:?}");
    let received = mock.received_requests().await.unwrap();
    assert_eq!(received.len(), 2, "the slow call, then the retry");
    assert_eq!(received[0].headers["idempotency-key"], received[1].headers["idempotency-key"]);
}
