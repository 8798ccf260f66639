//! "Acknowledged means on disk": messages acknowledged before the server is killed with
//! SIGKILL are all there, once each, after a restart.

use std::collections::{BTreeMap, HashMap};

use roomz::protocol::{ClientFrame, ServerFrame};

use crate::support::{ALICE, Client, ServerProcess, base_env};

#[tokio::test]
async fn acknowledged_messages_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let vars = base_env(dir.path());
    let mut acked: BTreeMap<String, u64> = BTreeMap::new();
    let mut session = String::new();

    for round in 0..3 {
        let mut server = ServerProcess::spawn(dir.path(), &vars, &[]).ready().await;
        if session.is_empty() {
            session = server.login(ALICE).await;
        }
        let mut alice = Client::connect(&server.ws_url(), &session, HashMap::new()).await;
        // Pipeline a burst of sends, then kill the server while acks are still arriving.
        let burst = 400;
        let before_round = acked.len();
        for i in 0..burst {
            let id = format!("r{round}-{i}");
            alice
                .send(&ClientFrame::Send {
                    room: "general".into(),
                    id,
                    text: format!("round {round} message {i}"),
                })
                .await;
        }
        while acked.len() < before_round + 50 {
            let frame = alice.next().await;
            if let ServerFrame::Ack { id, seq, .. } = frame {
                acked.insert(id, seq);
            }
        }
        server.signal("KILL");
        // Acks that were already on the wire count too.
        while let Ok(frame) = alice.read().await {
            if let ServerFrame::Ack { id, seq, .. } = frame {
                acked.insert(id, seq);
            }
        }
        let _ = server.exit().await;
    }

    let server = ServerProcess::spawn(dir.path(), &vars, &[]).ready().await;
    let mut alice = Client::connect(&server.ws_url(), &session, HashMap::new()).await;
    let mut stored: BTreeMap<String, u64> = BTreeMap::new();
    for (messages, _) in alice.history_pages("general", 200).await {
        for message in messages {
            assert!(stored.insert(message.id, message.seq).is_none(), "a message is stored twice");
        }
    }
    let seqs: Vec<u64> = {
        let mut s: Vec<u64> = stored.values().copied().collect();
        s.sort_unstable();
        s
    };
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "sequence numbers have no gap");
    for (id, seq) in &acked {
        assert_eq!(stored.get(id), Some(seq), "acknowledged message {id} is missing or moved");
    }
    assert!(
        acked.len() >= 150,
        "the test acknowledged too little to mean anything: {}",
        acked.len()
    );
}
