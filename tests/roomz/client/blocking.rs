//! `SyncClient` from a program without an async runtime.

use std::time::Duration;

use roomz::SyncClient;
use roomz::client::{ClientError, Event};

use crate::support::{ALICE, TestServer, builder};

#[test]
fn a_plain_thread_sends_reads_history_and_events() {
    // The server gets a runtime of its own; the client below runs on this plain thread.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime.block_on(TestServer::start());
    let link = runtime.block_on(server.fresh_link(ALICE));

    let client = SyncClient::new(builder(&server.base_url()).session_token(link)).unwrap();
    client.connect().unwrap();
    let sent = client.send("general", "from a script").unwrap();
    assert_eq!(sent.seq, 1);
    let page = client.history("general", None, 10).unwrap();
    assert_eq!(page.messages[0].text, "from a script");
    assert_eq!(client.rooms().unwrap()[0].name, "general");
    assert_eq!(client.me().unwrap().email, ALICE);

    let mut saw_message = false;
    while let Some(event) = client.next_event(Duration::from_secs(2)) {
        if matches!(event, Event::Message(ref m) if m.text == "from a script") {
            saw_message = true;
            break;
        }
    }
    assert!(saw_message, "the message event reached the blocking client");
    assert_eq!(client.identity().map(|(email, _)| email).as_deref(), Some(ALICE));

    // Queued sends return at once and go out in order.
    let ids: Vec<String> =
        (0..3).map(|i| client.send_queued("general", &format!("queued {i}")).unwrap()).collect();
    let mut seen = Vec::new();
    while seen.len() < ids.len() {
        match client.next_event(Duration::from_secs(5)) {
            Some(Event::Message(m)) if m.text.starts_with("queued") => seen.push(m.id),
            Some(_) => {}
            None => panic!("the queued messages did not all arrive: {seen:?}"),
        }
    }
    assert_eq!(seen, ids);

    // Inside a runtime it refuses, and sends nothing.
    let inside = tokio::runtime::Runtime::new().unwrap();
    let refused = inside.block_on(async { client.send("general", "from inside") });
    assert_eq!(refused.unwrap_err(), ClientError::InsideRuntime);
    assert_eq!(client.outbox_len(), 0);
    assert_eq!(client.history("general", None, 10).unwrap().messages.len(), 4);
    drop(client);
    runtime.block_on(server.handle.shutdown());
}

#[tokio::test]
async fn inside_a_runtime_it_refuses_instead_of_blocking() {
    let result = SyncClient::new(builder("http://localhost:8000"));
    assert_eq!(result.unwrap_err(), ClientError::InsideRuntime);
}
