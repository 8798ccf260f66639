//! Several `roomz serve` nodes on one PostgreSQL database. The database holds everything;
//! what one node must tell the others (a committed batch, a user coming online, a name, a
//! read marker, a join or a leave) goes out as a PostgreSQL notification on [`CHANNEL`],
//! carrying ids and never message bodies. [`listener`] receives them, fetches what they
//! name and hands it to this node's hub; after a lost listening connection it reads again
//! whatever it may have missed.
//!
//! Presence across nodes: each node keeps a row per user it has connections for, and says
//! it is alive every few seconds; a user is online while a live node has a row for them.
//!
//! A single node on SQLite has no cluster: every call here is then a no-op (or asks only
//! the local hub).

pub mod listener;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use crate::protocol::{Millis, Seq};
use crate::server::hub::Hub;

/// The notification channel every node listens on.
pub const CHANNEL: &str = "roomz";

/// How often a node says it is alive.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);
/// A node not heard from for this long counts as gone (its users as offline).
const NODE_TIMEOUT_MS: Millis = 30_000;
/// Rows of nodes gone this long are deleted.
const NODE_FORGOTTEN_MS: Millis = 10 * 60 * 1000;

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
    /// The database URL, for the listener's own connection.
    pub url: String,
}

impl Cluster {
    /// A single node: nothing to tell anyone.
    pub fn single() -> Self {
        Self::default()
    }

    /// A node of a cluster on this database.
    pub fn shared(node: NodeId, pool: PgPool, url: String) -> Self {
        Self { peers: Some(Arc::new(Peers { node, pool, url })) }
    }

    /// The cluster's parts, when there is one.
    pub fn peers(&self) -> Option<&Arc<Peers>> {
        self.peers.as_ref()
    }

    /// Whether other nodes may exist (and presence is decided in the database).
    pub fn is_shared(&self) -> bool {
        self.peers.is_some()
    }

    /// Tells the other nodes. Best effort: a notice lost here is soft state (a name, a
    /// marker, presence) that the next connection reads from the store anyway.
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

    /// Says this node is alive (and joins the cluster the first time).
    pub async fn heartbeat(&self, now: Millis) -> Result<(), sqlx::Error> {
        let Some(peers) = &self.peers else {
            return Ok(());
        };
        sqlx::query(
            "INSERT INTO nodes (id, seen_at) VALUES ($1, $2)
             ON CONFLICT (id) DO UPDATE SET seen_at = EXCLUDED.seen_at",
        )
        .bind(&*peers.node)
        .bind(now)
        .execute(&peers.pool)
        .await?;
        sqlx::query("DELETE FROM nodes WHERE seen_at < $1")
            .bind(now - NODE_FORGOTTEN_MS)
            .execute(&peers.pool)
            .await?;
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

    /// Records that `email` has connections on this node (or no longer has), and says
    /// whether that changed their presence for the whole cluster.
    pub async fn set_present(
        &self,
        email: &str,
        here: bool,
        now: Millis,
    ) -> Result<bool, sqlx::Error> {
        let Some(peers) = &self.peers else {
            return Ok(true);
        };
        let statement = if here {
            "INSERT INTO presence (node, email) VALUES ($1, $2) ON CONFLICT DO NOTHING"
        } else {
            "DELETE FROM presence WHERE node = $1 AND email = $2"
        };
        sqlx::query(statement).bind(&*peers.node).bind(email).execute(&peers.pool).await?;
        let elsewhere: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM presence p JOIN nodes n ON n.id = p.node
             WHERE p.email = $1 AND p.node <> $2 AND n.seen_at > $3",
        )
        .bind(email)
        .bind(&*peers.node)
        .bind(now - NODE_TIMEOUT_MS)
        .fetch_one(&peers.pool)
        .await?;
        Ok(elsewhere == 0)
    }

    /// After a user's first connection on this node, or their last (`here` false), in a
    /// cluster: records it, and when that changes their presence everywhere, tells the
    /// members of their rooms, here through the hub and on the other nodes by a notice.
    pub async fn present(
        &self,
        hub: &Hub,
        email: &str,
        rooms: &[Arc<str>],
        here: bool,
        now: Millis,
    ) {
        match self.set_present(email, here, now).await {
            Ok(true) => {
                hub.announce_presence(email, rooms, here);
                self.tell(Notice::Presence { email: email.to_owned(), online: here }).await;
            }
            Ok(false) => {}
            Err(error) => tracing::warn!(%error, "cluster: presence could not be recorded"),
        }
    }

    /// Of these users, those with connections on another live node.
    pub async fn online_elsewhere(
        &self,
        emails: &[String],
        now: Millis,
    ) -> Result<HashSet<String>, sqlx::Error> {
        let Some(peers) = &self.peers else {
            return Ok(HashSet::new());
        };
        let online: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT p.email FROM presence p JOIN nodes n ON n.id = p.node
             WHERE p.email = ANY($1) AND p.node <> $2 AND n.seen_at > $3",
        )
        .bind(emails)
        .bind(&*peers.node)
        .bind(now - NODE_TIMEOUT_MS)
        .fetch_all(&peers.pool)
        .await?;
        Ok(online.into_iter().collect())
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
