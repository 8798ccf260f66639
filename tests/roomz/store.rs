//! The store's promises, checked on every backend: the same tests against a SQLite file
//! and against a PostgreSQL database (when `ROOMZ_TEST_POSTGRES` names a server), plus what
//! only several nodes on one PostgreSQL database can show: concurrent appends to one room
//! and concurrent magic-link requests stay exact.

use std::sync::Arc;

use roomz::protocol::Seq;
use roomz::server::cluster::new_node_id;
use roomz::server::store::postgres::PgStore;
use roomz::server::store::sqlite::SqliteStore;
use roomz::server::store::{Appended, LinkQuota, LinkState, NewMessage, Store};

use crate::support::fresh_postgres_database;

/// A store on a new SQLite file (the folder lives as long as the test).
async fn sqlite() -> (tempfile::TempDir, Arc<dyn Store>) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("nested/roomz.db")).await.unwrap();
    (dir, Arc::new(store))
}

/// A store on a new PostgreSQL database, when there is a server to make one on.
async fn postgres() -> Option<Arc<dyn Store>> {
    let url = fresh_postgres_database().await?;
    Some(Arc::new(PgStore::open(&url, 4, new_node_id()).await.unwrap()))
}

/// Runs each contract test on both backends.
macro_rules! on_every_backend {
    ($($test:ident),* $(,)?) => {
        mod sqlite_backend {
            $(
                #[tokio::test]
                async fn $test() {
                    let (_dir, store) = super::sqlite().await;
                    super::$test(store).await;
                }
            )*
        }
        mod postgres_backend {
            $(
                #[tokio::test]
                async fn $test() {
                    if let Some(store) = super::postgres().await {
                        super::$test(store).await;
                    }
                }
            )*
        }
    };
}

on_every_backend!(
    sequences_are_per_room_and_resends_are_idempotent,
    big_batches_across_rooms_and_a_resend_in_between,
    unread_counts_follow_markers,
    joining_and_leaving_count_members,
    members_come_in_pages_by_email,
    magic_links_are_single_use_and_superseded,
    link_requests_are_limited_per_window,
);

fn msg(room: &str, author: &str, id: &str) -> NewMessage {
    NewMessage {
        room: room.into(),
        author: author.into(),
        client_id: id.into(),
        text: format!("text {id}"),
    }
}

async fn sequences_are_per_room_and_resends_are_idempotent(store: Arc<dyn Store>) {
    store.ensure_user("a@x.io", 1).await.unwrap();
    store.join_room("a@x.io", "other", 1).await.unwrap();
    let out = store
        .append(
            &[
                msg("general", "a@x.io", "1"),
                msg("other", "a@x.io", "2"),
                msg("general", "a@x.io", "3"),
                msg("general", "a@x.io", "1"),
            ],
            10,
        )
        .await
        .unwrap();
    assert_eq!(out[0], Appended::New { seq: 1, ts: 10 });
    assert_eq!(out[1], Appended::New { seq: 1, ts: 10 });
    assert_eq!(out[2], Appended::New { seq: 2, ts: 10 });
    assert_eq!(out[3], Appended::Duplicate { room: "general".into(), seq: 1, ts: 10 });
    let again = store
        .append(&[msg("general", "a@x.io", "3"), msg("general", "a@x.io", "4")], 20)
        .await
        .unwrap();
    assert_eq!(again[0], Appended::Duplicate { room: "general".into(), seq: 2, ts: 10 });
    assert_eq!(again[1], Appended::New { seq: 3, ts: 20 });
    assert_eq!(
        store.append(&[msg("nowhere", "a@x.io", "9")], 1).await.unwrap(),
        [Appended::NoSuchRoom]
    );

    let page = store.messages_before("general", None, 2).await.unwrap();
    assert_eq!(page.iter().map(|m| m.seq).collect::<Vec<_>>(), [2, 3]);
    let after = store.messages_after("general", 1, 10).await.unwrap();
    assert_eq!(after.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(), ["3", "4"]);
}

async fn big_batches_across_rooms_and_a_resend_in_between(store: Arc<dyn Store>) {
    store.ensure_user("a@x.io", 1).await.unwrap();
    for room in ["r1", "r2"] {
        store.join_room("a@x.io", room, 1).await.unwrap();
    }
    let rooms = ["general", "r1", "r2"];
    let batch = |from: usize, to: usize| -> Vec<NewMessage> {
        (from..to).map(|i| msg(rooms[i % 3], "a@x.io", &format!("b{i}"))).collect()
    };
    let seqs = |out: &[Appended]| -> Vec<Seq> {
        out.iter()
            .map(|a| match a {
                Appended::New { seq, .. } | Appended::Duplicate { seq, .. } => *seq,
                Appended::NoSuchRoom => 0,
            })
            .collect()
    };
    let first = store.append(&batch(0, 250), 5).await.unwrap();
    assert_eq!(&seqs(&first)[..6], [1, 1, 1, 2, 2, 2]);
    assert_eq!(
        seqs(&first)[249],
        84,
        "250 messages over 3 rooms: the last is the 84th of its room"
    );
    // A resend in a batch takes the careful path; the fast path after it goes on right.
    let mut mixed = batch(250, 253);
    mixed.push(msg("general", "a@x.io", "b0"));
    let second = store.append(&mixed, 6).await.unwrap();
    assert_eq!(second[3], Appended::Duplicate { room: "general".into(), seq: 1, ts: 5 });
    let third = store.append(&batch(253, 256), 7).await.unwrap();
    // 256 messages round-robin: general has 86, r1 and r2 have 85 each.
    assert_eq!(seqs(&third), [85, 85, 86]);
    for (room, count) in [("general", 86), ("r1", 85), ("r2", 85)] {
        let all = store.messages_after(room, 0, 1000).await.unwrap();
        let numbers: Vec<Seq> = all.iter().map(|m| m.seq).collect();
        assert_eq!(numbers, (1..=count).collect::<Vec<_>>(), "{room} has no gap");
    }
    assert_eq!(store.rooms_of("a@x.io").await.unwrap()[0].last_seq, 86);
}

async fn unread_counts_follow_markers(store: Arc<dyn Store>) {
    store.ensure_user("a@x.io", 1).await.unwrap();
    store.ensure_user("b@x.io", 1).await.unwrap();
    let batch: Vec<_> = (0..5).map(|i| msg("general", "a@x.io", &i.to_string())).collect();
    store.append(&batch, 2).await.unwrap();
    let rooms = store.rooms_of("b@x.io").await.unwrap();
    assert_eq!((rooms[0].members, rooms[0].unread), (2, 5));
    assert_eq!(store.rooms_of("a@x.io").await.unwrap()[0].unread, 0, "own messages are read");
    assert_eq!(store.mark_read("b@x.io", "general", 3).await.unwrap(), Some(3));
    assert_eq!(
        store.mark_read("b@x.io", "general", 2).await.unwrap(),
        None,
        "markers only move forward"
    );
    assert_eq!(
        store.mark_read("b@x.io", "general", 99).await.unwrap(),
        Some(5),
        "capped at the newest"
    );
    assert_eq!(store.rooms_of("b@x.io").await.unwrap()[0].unread, 0);
}

async fn joining_and_leaving_count_members(store: Arc<dyn Store>) {
    store.ensure_user("a@x.io", 1).await.unwrap();
    store.ensure_user("b@x.io", 1).await.unwrap();
    assert!(store.join_room("a@x.io", "rust", 1).await.unwrap().newly);
    let second = store.join_room("a@x.io", "rust", 1).await.unwrap();
    assert!(!second.newly);
    assert_eq!(store.join_room("b@x.io", "rust", 1).await.unwrap().summary.members, 2);
    assert!(store.leave_room("a@x.io", "rust").await.unwrap());
    assert!(!store.leave_room("a@x.io", "rust").await.unwrap());
    assert_eq!(store.members("rust", None, 10).await.unwrap(), [("b@x.io".to_owned(), None)]);
}

async fn members_come_in_pages_by_email(store: Arc<dyn Store>) {
    for user in ["c@x.io", "a@x.io", "d@x.io", "b@x.io", "e@x.io"] {
        store.ensure_user(user, 1).await.unwrap();
        store.join_room(user, "big", 1).await.unwrap();
    }
    let emails = |page: Vec<(String, Option<String>)>| -> Vec<String> {
        page.into_iter().map(|(email, _)| email).collect()
    };
    assert_eq!(emails(store.members("big", None, 2).await.unwrap()), ["a@x.io", "b@x.io"]);
    let next = store.members("big", Some("b@x.io"), 2).await.unwrap();
    assert_eq!(emails(next), ["c@x.io", "d@x.io"]);
    assert_eq!(emails(store.members("big", Some("d@x.io"), 2).await.unwrap()), ["e@x.io"]);
    assert!(store.members("big", Some("e@x.io"), 2).await.unwrap().is_empty());
}

async fn magic_links_are_single_use_and_superseded(store: Arc<dyn Store>) {
    store.create_magic_link("a@x.io", b"h1", 0, 100).await.unwrap();
    store.create_magic_link("a@x.io", b"h2", 0, 100).await.unwrap();
    assert_eq!(store.redeem_magic_link(b"h1", 1).await.unwrap(), None, "superseded");
    assert_eq!(store.magic_link_state(b"h2", 1).await.unwrap(), LinkState::Valid);
    assert_eq!(store.redeem_magic_link(b"h2", 100).await.unwrap(), None, "expired");
    store.create_magic_link("a@x.io", b"h3", 0, 100).await.unwrap();
    assert_eq!(store.redeem_magic_link(b"h3", 1).await.unwrap().as_deref(), Some("a@x.io"));
    assert_eq!(store.redeem_magic_link(b"h3", 2).await.unwrap(), None, "used");
}

async fn link_requests_are_limited_per_window(store: Arc<dyn Store>) {
    let window = 100_000;
    for t in 0..3 {
        assert_eq!(
            store.record_link_request("a@x.io", t * 10, window, 3).await.unwrap(),
            LinkQuota::Granted
        );
    }
    assert_eq!(
        store.record_link_request("a@x.io", 30, window, 3).await.unwrap(),
        LinkQuota::Exceeded { retry_after_ms: 99_970 }
    );
    assert_eq!(
        store.record_link_request("b@x.io", 30, window, 3).await.unwrap(),
        LinkQuota::Granted
    );
    assert_eq!(
        store.record_link_request("a@x.io", 100_001, window, 3).await.unwrap(),
        LinkQuota::Granted
    );
}

/// Two nodes append to one room at once: every number is taken once, none is skipped.
#[tokio::test]
async fn two_nodes_appending_to_one_room_number_it_without_gaps() {
    let Some(url) = fresh_postgres_database().await else { return };
    let a = Arc::new(PgStore::open(&url, 4, new_node_id()).await.unwrap());
    let b = Arc::new(PgStore::open(&url, 4, new_node_id()).await.unwrap());
    a.ensure_user("a@x.io", 1).await.unwrap();
    b.ensure_user("b@x.io", 1).await.unwrap();
    let writer = |store: Arc<PgStore>, author: &'static str| {
        tokio::spawn(async move {
            for batch in 0..20 {
                let messages: Vec<NewMessage> = (0..5)
                    .map(|i| msg("general", author, &format!("{author}-{batch}-{i}")))
                    .collect();
                store.append(&messages, 1).await.unwrap();
            }
        })
    };
    let (one, two) = tokio::join!(writer(a.clone(), "a@x.io"), writer(b.clone(), "b@x.io"));
    one.unwrap();
    two.unwrap();
    let all = a.messages_after("general", 0, 1000).await.unwrap();
    let seqs: Vec<Seq> = all.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, (1..=200).collect::<Vec<_>>());
    assert_eq!(b.rooms_of("b@x.io").await.unwrap()[0].last_seq, 200);
}

/// Ten requests for one address at once, five allowed: exactly five are counted.
#[tokio::test]
async fn concurrent_magic_link_requests_never_exceed_the_limit() {
    let Some(url) = fresh_postgres_database().await else { return };
    let a = Arc::new(PgStore::open(&url, 8, new_node_id()).await.unwrap());
    let b = Arc::new(PgStore::open(&url, 8, new_node_id()).await.unwrap());
    let requests = (0..10).map(|i| {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        tokio::spawn(
            async move { store.record_link_request("a@x.io", 1_000 + i, 3_600_000, 5).await },
        )
    });
    let mut granted = 0;
    for request in futures_util::future::join_all(requests).await {
        if request.unwrap().unwrap() == LinkQuota::Granted {
            granted += 1;
        }
    }
    assert_eq!(granted, 5);
}
