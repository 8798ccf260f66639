//! The listening side of a node: one connection of its own that `LISTEN`s on the channel,
//! and hands every notice from another node to this node's hub. Messages are fetched once
//! per room and fanned out like local ones. When the connection drops, or goes silent (the
//! node's own heartbeat notice stops coming back, as on a connection a firewall dropped
//! without a word), it connects again, listens, and only then reads where every room this
//! node serves stands, which rooms its users are in, their read markers and who is online
//! elsewhere, so nothing committed while it was away is missed (the writers fill any gap
//! from the store, and skip what they sent).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use sqlx::Row;
use sqlx::postgres::{PgListener, PgNotification};

use super::{CHANNEL, Notice, Peers, parse};
use crate::protocol::{Member, Seq, ServerFrame};
use crate::server::hub::Delivery;
use crate::server::state::AppState;
use crate::server::store::StoreError;

/// Messages read from the store per query when a notice names many.
const FETCH_PAGE: u32 = 500;
/// Notifications taken at once, so that a burst is fetched once per room.
const DRAIN_MAX: usize = 1024;
/// Longest wait between two attempts to connect again.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Silence after which the listening connection counts as lost: the node's own heartbeat
/// notice comes every few seconds.
const SILENCE: Duration = Duration::from_secs(4 * super::HEARTBEAT_EVERY.as_secs());

/// Runs until the server shuts down.
pub async fn run(state: AppState) {
    let Some(peers) = state.cluster.peers().cloned() else {
        return;
    };
    let mut backoff = Duration::from_millis(100);
    loop {
        let mut listener = match listen(&peers).await {
            Ok(listener) => listener,
            Err(error) => {
                tracing::warn!(%error, ?backoff, "cluster: cannot listen for other nodes; retrying");
                tokio::select! {
                    () = state.shutdown.cancelled() => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        // Listening now: what committed before is read here, what commits after is told.
        if let Err(error) = catch_up(&state, &peers).await {
            tracing::warn!(%error, "cluster: catching up after connecting failed; connecting again");
            tokio::select! {
                () = state.shutdown.cancelled() => return,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
            continue;
        }
        backoff = Duration::from_millis(100);
        loop {
            let received = tokio::select! {
                () = state.shutdown.cancelled() => return,
                received = tokio::time::timeout(SILENCE, listener.try_recv()) => received,
            };
            let Ok(received) = received else {
                tracing::warn!("cluster: the listening connection went silent; connecting again");
                break;
            };
            match received {
                Ok(Some(first)) => {
                    let mut batch = vec![first];
                    while batch.len() < DRAIN_MAX
                        && let Some(next) = listener.next_buffered()
                    {
                        batch.push(next);
                    }
                    handle(&state, &peers, &batch).await;
                }
                Ok(None) => {
                    tracing::warn!("cluster: the listening connection was lost; connecting again");
                    break;
                }
                Err(error) => {
                    tracing::warn!(%error, "cluster: listening failed; connecting again");
                    break;
                }
            }
        }
    }
}

async fn listen(peers: &Peers) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect(peers.url.expose()).await.map_err(redact)?;
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

/// A connection error without the URL it may quote (the URL may hold a password).
fn redact(error: sqlx::Error) -> sqlx::Error {
    match error {
        sqlx::Error::Configuration(_) => {
            sqlx::Error::Configuration("DATABASE_URL could not be read".into())
        }
        other => other,
    }
}

/// Handles a burst of notifications: messages fetched once per room (rooms at once),
/// everything else in order.
async fn handle(state: &AppState, peers: &Peers, batch: &[PgNotification]) {
    let mut ranges: BTreeMap<String, (Seq, Seq)> = BTreeMap::new();
    let mut others = Vec::new();
    for notification in batch {
        let Some((node, notice)) = parse(notification.payload()) else {
            tracing::debug!("cluster: a notice this version does not know, ignored");
            continue;
        };
        if *node == *peers.node {
            continue;
        }
        match notice {
            Notice::Messages { room, first, last } => {
                let range = ranges.entry(room).or_insert((first, last));
                *range = (range.0.min(first), range.1.max(last));
            }
            Notice::Alive => {}
            other => others.push(other),
        }
    }
    let fetches = ranges.iter().map(|(room, (first, last))| async move {
        if let Err(error) = fan_out(state, room, *first, *last).await {
            // Each writer reads what it misses from the store itself (and a writer that
            // cannot either closes, and its client catches up on reconnecting).
            tracing::warn!(%error, "cluster: messages of another node could not be fetched");
            state.hub.sync(room, *last);
        }
    });
    join_all(fetches).await;
    for notice in others {
        if let Err(error) = apply(state, notice).await {
            tracing::warn!(%error, "cluster: a notice could not be applied");
        }
    }
}

/// Fetches messages `first..=last` of `room` and hands them to the hub.
async fn fan_out(state: &AppState, room: &str, first: Seq, last: Seq) -> Result<(), StoreError> {
    if !state.hub.has_listeners(room) {
        return Ok(());
    }
    let room_name: Arc<str> = room.into();
    let mut after = first.saturating_sub(1);
    while after < last {
        let want = u32::try_from(last - after).unwrap_or(FETCH_PAGE).min(FETCH_PAGE);
        let page = state.store.messages_after(room, after, want).await?;
        let Some(newest) = page.last().map(|m| m.seq) else {
            break;
        };
        for message in page {
            let seq = message.seq;
            let frame = ServerFrame::Message(message).to_json().into();
            state.hub.publish(Delivery { room: room_name.clone(), seq, frame });
        }
        after = newest;
    }
    Ok(())
}

/// Applies one notice that is not about messages.
async fn apply(state: &AppState, notice: Notice) -> Result<(), StoreError> {
    match notice {
        Notice::Messages { .. } | Notice::Alive => {}
        Notice::Presence { email, .. } => {
            // As the database says now: notices from two nodes may arrive out of order.
            let elsewhere = state.cluster.online_elsewhere(std::slice::from_ref(&email)).await?;
            if let Some(peers) = state.cluster.peers() {
                peers.note_elsewhere(&email, !elsewhere.is_empty());
            }
            let online = state.hub.is_online(&email) || !elsewhere.is_empty();
            super::announce_here(state, &email, online).await;
        }
        Notice::Name { email } => {
            let name = state.store.display_name(&email).await?;
            state.names.set(&email, name.clone());
            state.hub.broadcast_except(0, &ServerFrame::Name { email, name, req: None });
        }
        Notice::Read { email, room, seq } => {
            state.hub.send_to_user(&email, &ServerFrame::Read { room, seq });
        }
        Notice::Joined { email, room, newly } => {
            // As in `hello`: not between its reading the rooms and its listening.
            let _membership = state.membership.lock(&email).await;
            let summary = state.store.rooms_of(&email).await?.into_iter().find(|r| r.name == room);
            let Some(summary) = summary else {
                return Ok(());
            };
            let member = newly.then(|| Member {
                name: state.names.get(&email),
                email: email.clone(),
                online: true,
            });
            state.hub.joined_elsewhere(&email, summary, member);
        }
        Notice::Left { email, room, announce } => {
            let _membership = state.membership.lock(&email).await;
            state.hub.left_elsewhere(&email, &room, announce);
        }
    }
    Ok(())
}

/// Makes the rooms each user here follows match the database (a join or a leave made on
/// another node while this one was not listening), and sends each user their read markers
/// again (one moved on another node meanwhile; clients only ever move a marker forward).
async fn reconcile_users(state: &AppState) -> Result<(), StoreError> {
    for email in state.hub.users() {
        let _membership = state.membership.lock(&email).await;
        let stored = state.store.rooms_of(&email).await?;
        let followed = state.hub.rooms_of_user(&email);
        for summary in &stored {
            if !followed.iter().any(|r| **r == *summary.name) {
                state.hub.joined_elsewhere(&email, summary.clone(), None);
            }
        }
        for room in followed.iter().filter(|r| !stored.iter().any(|s| *s.name == ***r)) {
            state.hub.left_elsewhere(&email, room, false);
        }
        for summary in stored.into_iter().filter(|s| s.last_read > 0) {
            let frame = ServerFrame::Read { room: summary.name, seq: summary.last_read };
            state.hub.send_to_user(&email, &frame);
        }
    }
    Ok(())
}

/// Pushes the presence changes of other nodes' users that this node missed: who is online
/// elsewhere now, against what the notices had told it.
async fn reconcile_presence(state: &AppState, peers: &Peers) -> Result<(), StoreError> {
    let now = state.cluster.everyone_elsewhere().await?;
    let Some(before) = peers.replace_elsewhere(now.clone()) else {
        return Ok(());
    };
    for email in before.symmetric_difference(&now) {
        if !state.hub.is_online(email) {
            super::announce_here(state, email, now.contains(email)).await;
        }
    }
    Ok(())
}

/// After (re)connecting: every room this node serves is brought up to where the database
/// says it is; its users' rooms and read markers, who is online elsewhere and the display
/// names it remembers are read again.
async fn catch_up(state: &AppState, peers: &Peers) -> Result<(), StoreError> {
    reconcile_users(state).await?;
    reconcile_presence(state, peers).await?;
    let rooms: Vec<String> = state.hub.rooms().iter().map(|r| r.to_string()).collect();
    if !rooms.is_empty() {
        let rows = sqlx::query("SELECT name, last_seq FROM rooms WHERE name = ANY($1)")
            .bind(&rooms)
            .fetch_all(&peers.pool)
            .await?;
        for row in rows {
            let name: String = row.try_get("name")?;
            let last: i64 = row.try_get("last_seq")?;
            state.hub.sync(&name, Seq::try_from(last).unwrap_or(0));
        }
    }
    let known = state.names.emails();
    if !known.is_empty() {
        let rows = sqlx::query("SELECT email, display_name FROM users WHERE email = ANY($1)")
            .bind(&known)
            .fetch_all(&peers.pool)
            .await?;
        for row in rows {
            let email: String = row.try_get("email")?;
            let name: Option<String> = row.try_get("display_name")?;
            if state.names.get(&email) != name {
                state.names.set(&email, name.clone());
                state.hub.broadcast_except(0, &ServerFrame::Name { email, name, req: None });
            }
        }
    }
    Ok(())
}
