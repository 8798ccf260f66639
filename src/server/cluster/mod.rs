//! Several `roomz serve` nodes on one PostgreSQL database. The database holds everything;
//! what one node must tell the others (a committed batch, a user coming online, a name, a
//! read marker, a join or a leave) goes out as a PostgreSQL notification on [`CHANNEL`],
//! carrying ids and never message bodies. [`listener`] receives them, fetches what they
//! name and hands it to this node's hub; after a lost listening connection it reads again
//! whatever it may have missed.
//!
//! Presence across nodes: each node keeps a row per user it has connections for, and says
//! it is alive every few seconds (by the database's clock); a user is online while a live
//! node has a row for them. A node not heard from for 30 seconds is removed by the next
//! heartbeat of another, which takes its users offline everywhere.
//!
//! A single node on SQLite has no cluster: every call here is then a no-op (or asks only
//! the local hub).

pub mod listener;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sqlx::{AssertSqlSafe, PgPool};

use crate::protocol::{Millis, Seq};
use crate::server::config::Secret;
use crate::server::hub::Hub;
use crate::server::state::AppState;

/// The notification channel every node listens on.
pub const CHANNEL: &str = "roomz";

/// How often a node says it is alive.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);
/// A node not heard from for this long counts as gone (its users as offline).
const NODE_TIMEOUT_MS: Millis = 30_000;

/// This node's name among the nodes: random, new at every start.
pub type NodeId = Arc<str>;

/// A new node name.
pub fn new_node_id() -> NodeId {
    let mut bytes = [0u8; 8];
    // Without randomness (never seen on Linux), the time makes a name unique enough.
    if getrandom::fill(&mut bytes).is_err() {
        bytes = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default().to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect::<String>().into()
}

/// What one node tells the others.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "k")]
pub enum Notice {
    /// Messages `first..=last` of `room` were committed.
    #[serde(rename = "m")]
    Messages { room: String, first: Seq, last: Seq },
    /// The user came online (their first connection anywhere) or went offline.
    #[serde(rename = "p")]
    Presence { email: String, online: bool },
    /// The user's display name changed (read it from the store).
    #[serde(rename = "n")]
    Name { email: String },
    /// The user's read marker in `room` moved to `seq`.
    #[serde(rename = "r")]
    Read { email: String, room: String, seq: Seq },
    /// The user joined `room`; `newly` when they were not a member before.
    #[serde(rename = "j")]
    Joined { email: String, room: String, newly: bool },
    /// The user left `room`; `announce` when they were a member.
    #[serde(rename = "l")]
    Left { email: String, room: String, announce: bool },
    /// The sending node is alive (its own listener counts on hearing it).
    #[serde(rename = "a")]
    Alive,
}

#[derive(Serialize)]
struct Outgoing<'a> {
    node: &'a str,
    #[serde(flatten)]
    notice: &'a Notice,
}

#[derive(Deserialize)]
struct Incoming {
    node: String,
    #[serde(flatten)]
    notice: Notice,
}

/// The text of a notification: the sending node and the notice, as JSON (well under the
/// 8,000 bytes a notification may carry: room names and emails are short).
pub fn payload(node: &str, notice: &Notice) -> String {
    serde_json::to_string(&Outgoing { node, notice }).unwrap_or_default()
}

/// Reads a notification: its node and notice; `None` for a payload this version does not
/// understand.
pub fn parse(payload: &str) -> Option<(String, Notice)> {
    serde_json::from_str::<Incoming>(payload).ok().map(|i| (i.node, i.notice))
}

/// The database's clock, in milliseconds: every node's liveness is judged by one clock.
const DB_NOW: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

/// This node's part in the cluster, or nothing for a single node.
#[derive(Clone, Debug, Default)]
pub struct Cluster {
    peers: Option<Arc<Peers>>,
}

/// What a node of a cluster keeps.
#[derive(Debug)]
pub struct Peers {
    pub node: NodeId,
    pub pool: PgPool,
    /// The database URL, for the listener's own connection (it may hold a password).
    pub url: Secret,
    /// The users this node takes to be online on other nodes, as the presence notices
    /// have told it; compared with the database when the listener comes back, so that a
    /// change it missed meanwhile is pushed. `None` until the listener first catches up.
    elsewhere: Mutex<Option<HashSet<String>>>,
}

impl Peers {
    /// Notes that `email` is online on another node, or on none.
    fn note_elsewhere(&self, email: &str, online: bool) {
        let mut elsewhere = self.elsewhere.lock().expect("presence lock poisoned");
        if let Some(users) = elsewhere.as_mut() {
            if online {
                users.insert(email.to_owned());
            } else {
                users.remove(email);
            }
        }
    }

    /// Takes `now` as who is online on other nodes; returns what this node believed before
    /// (`None` the first time).
    fn replace_elsewhere(&self, now: HashSet<String>) -> Option<HashSet<String>> {
        self.elsewhere.lock().expect("presence lock poisoned").replace(now)
    }
}

impl Cluster {
    /// A single node: nothing to tell anyone.
    pub fn single() -> Self {
        Self::default()
    }

    /// A node of a cluster on this database.
    pub fn shared(node: NodeId, pool: PgPool, url: Secret) -> Self {
        let elsewhere = Mutex::new(None);
        Self { peers: Some(Arc::new(Peers { node, pool, url, elsewhere })) }
    }

    /// The cluster's parts, when there is one.
    pub fn peers(&self) -> Option<&Arc<Peers>> {
        self.peers.as_ref()
    }

    /// Whether other nodes may exist (and presence is decided in the database).
    pub fn is_shared(&self) -> bool {
        self.peers.is_some()
    }

    /// Tells the other nodes. Best effort: what a lost notice carried is read again from
    /// the database after the listener reconnects, or by the clients when they do.
    pub async fn tell(&self, notice: Notice) {
        let Some(peers) = &self.peers else {
            return;
        };
        let sent = sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(payload(&peers.node, &notice))
            .execute(&peers.pool)
            .await;
        if let Err(error) = sent {
            tracing::warn!(%error, "cluster: a notice could not be sent");
        }
    }

    /// Every few seconds: says this node is alive (and tells its own listener, which
    /// counts silence), makes the database's list of who is online here match this node,
    /// and takes offline the users of nodes that stopped saying they are alive.
    pub async fn heartbeat(&self, state: &AppState) -> Result<(), sqlx::Error> {
        let Some(peers) = &self.peers else {
            return Ok(());
        };
        let fresh: bool = sqlx::query_scalar(AssertSqlSafe(format!(
            "INSERT INTO nodes (id, seen_at) VALUES ($1, {DB_NOW})
             ON CONFLICT (id) DO UPDATE SET seen_at = EXCLUDED.seen_at
             RETURNING xmax = 0"
        )))
        .bind(&*peers.node)
        .fetch_one(&peers.pool)
        .await?;
        let here = state.hub.users();
        sqlx::query("DELETE FROM presence WHERE node = $1 AND NOT (email = ANY($2))")
            .bind(&*peers.node)
            .bind(&here)
            .execute(&peers.pool)
            .await?;
        sqlx::query(
            "INSERT INTO presence (node, email) SELECT $1, email FROM UNNEST($2::text[]) AS u(email)
             ON CONFLICT DO NOTHING",
        )
        .bind(&*peers.node)
        .bind(&here)
        .execute(&peers.pool)
        .await?;
        if fresh && !here.is_empty() {
            // This node had been taken for gone: its users are online again.
            tracing::warn!("cluster: this node was missing from the node list; rejoined");
            for email in here {
                self.tell(Notice::Presence { email, online: true }).await;
            }
        }
        self.tell(Notice::Alive).await;
        self.reap(state).await
    }

    /// Forgets the nodes not heard from in time; the users who were online only there go
    /// offline, here and (by a notice) everywhere. One node does it: the delete is atomic.
    async fn reap(&self, state: &AppState) -> Result<(), sqlx::Error> {
        let Some(peers) = &self.peers else {
            return Ok(());
        };
        let stranded: Vec<String> = sqlx::query_scalar(AssertSqlSafe(format!(
            "WITH gone AS (DELETE FROM nodes WHERE seen_at < {DB_NOW} - $1 RETURNING id)
             SELECT DISTINCT email FROM presence WHERE node IN (SELECT id FROM gone)"
        )))
        .bind(NODE_TIMEOUT_MS)
        .fetch_all(&peers.pool)
        .await?;
        if stranded.is_empty() {
            return Ok(());
        }
        let still = self.online_elsewhere(&stranded).await?;
        for email in stranded.iter().filter(|e| !still.contains(*e)) {
            peers.note_elsewhere(email, false);
        }
        for email in stranded.into_iter().filter(|e| !still.contains(e) && !state.hub.is_online(e))
        {
            tracing::info!(email = %email, "cluster: offline with the node that stopped");
            announce_here(state, &email, false).await;
            self.tell(Notice::Presence { email, online: false }).await;
        }
        Ok(())
    }

    /// Leaves the cluster: this node's users count as offline at once.
    pub async fn leave(&self) {
        let Some(peers) = &self.peers else {
            return;
        };
        if let Err(error) = sqlx::query("DELETE FROM nodes WHERE id = $1")
            .bind(&*peers.node)
            .execute(&peers.pool)
            .await
        {
            tracing::warn!(%error, "cluster: could not leave the node list");
        }
    }

    /// After a user's first connection on this node, or their last (`here` false), in a
    /// cluster: records it, and when that changes their presence everywhere, tells the
    /// members of their rooms, here through the hub and on the other nodes by a notice.
    pub async fn present(&self, hub: &Hub, email: &str, rooms: &[Arc<str>], here: bool) {
        let changed = self.set_present(email, here).await;
        if let (Some(peers), Ok(alone), false) = (&self.peers, &changed, here) {
            // What leaving showed of the other nodes: kept for the listener's next catch-up.
            peers.note_elsewhere(email, !alone);
        }
        match changed {
            Ok(true) => {
                hub.announce_presence(email, rooms, here);
                self.tell(Notice::Presence { email: email.to_owned(), online: here }).await;
            }
            Ok(false) => {}
            // The next heartbeat writes this node's list again.
            Err(error) => tracing::warn!(%error, "cluster: presence could not be recorded"),
        }
    }

    /// Records that `email` has connections on this node (or no longer has), and says
    /// whether they are online nowhere else (so the change is theirs everywhere).
    async fn set_present(&self, email: &str, here: bool) -> Result<bool, sqlx::Error> {
        let Some(peers) = &self.peers else {
            return Ok(true);
        };
        let statement = if here {
            "INSERT INTO presence (node, email) VALUES ($1, $2) ON CONFLICT DO NOTHING"
        } else {
            "DELETE FROM presence WHERE node = $1 AND email = $2"
        };
        sqlx::query(statement).bind(&*peers.node).bind(email).execute(&peers.pool).await?;
        Ok(self.online_elsewhere(&[email.to_owned()]).await?.is_empty())
    }

    /// Every user with connections on another live node.
    async fn everyone_elsewhere(&self) -> Result<HashSet<String>, sqlx::Error> {
        let Some(peers) = &self.peers else {
            return Ok(HashSet::new());
        };
        let online: Vec<String> = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT DISTINCT p.email FROM presence p JOIN nodes n ON n.id = p.node
             WHERE p.node <> $1 AND n.seen_at > {DB_NOW} - $2"
        )))
        .bind(&*peers.node)
        .bind(NODE_TIMEOUT_MS)
        .fetch_all(&peers.pool)
        .await?;
        Ok(online.into_iter().collect())
    }

    /// Of these users, those with connections on another live node.
    pub async fn online_elsewhere(
        &self,
        emails: &[String],
    ) -> Result<HashSet<String>, sqlx::Error> {
        let Some(peers) = &self.peers else {
            return Ok(HashSet::new());
        };
        let online: Vec<String> = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT DISTINCT p.email FROM presence p JOIN nodes n ON n.id = p.node
             WHERE p.email = ANY($1) AND p.node <> $2 AND n.seen_at > {DB_NOW} - $3"
        )))
        .bind(emails)
        .bind(&*peers.node)
        .bind(NODE_TIMEOUT_MS)
        .fetch_all(&peers.pool)
        .await?;
        Ok(online.into_iter().collect())
    }
}

/// Tells the members of `email`'s rooms on this node that they came online or went.
pub async fn announce_here(state: &AppState, email: &str, online: bool) {
    match state.store.rooms_of(email).await {
        Ok(rooms) => {
            let rooms: Vec<Arc<str>> = rooms.iter().map(|r| Arc::from(r.name.as_str())).collect();
            state.hub.announce_presence(email, &rooms, online);
        }
        Err(error) => tracing::warn!(%error, "cluster: the rooms of a user could not be read"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_round_trip_and_strangers_are_ignored() {
        let notice = Notice::Messages { room: "rust".into(), first: 4, last: 9 };
        let text = payload("abc", &notice);
        assert_eq!(text, r#"{"node":"abc","k":"m","room":"rust","first":4,"last":9}"#);
        assert_eq!(parse(&text), Some(("abc".to_owned(), notice)));
        assert_eq!(parse(r#"{"node":"abc","k":"zz"}"#), None);
        assert_eq!(parse("not json"), None);
        assert_eq!(new_node_id().len(), 16);
    }
}
