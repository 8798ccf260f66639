//! What the server does with each client frame. Every frame is checked first (size,
//! allow-list, session expiry), then parsed, then handled; a handler's failure becomes an
//! error frame carrying the frame's `req` (and a `send`'s `id`), and the connection stays.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;

use crate::protocol::text::{
    DEFAULT_ROOM, canonical_display_name, canonical_room, sanitize_message,
};
use crate::protocol::{
    ClientFrame, ErrorCode, ErrorFrame, MEMBERS_PAGE_MAX, Member, PROTOCOL_VERSION, Seq,
    ServerFrame,
};
use crate::server::auth::session::Session;
use crate::server::cluster::Notice;
use crate::server::committer::Pending;
use crate::server::hub::{CloseReason, Conn};
use crate::server::metrics::Limited;
use crate::server::state::AppState;
use crate::server::store::{NewMessage, StoreError};

/// Most rooms one user may be a member of.
const MAX_ROOMS_PER_USER: usize = 500;
/// Messages per `history` page when the client does not say.
const DEFAULT_HISTORY_PAGE: u32 = 50;
/// Most bytes of messages in one `history` page; larger pages are cut, oldest first.
const HISTORY_PAGE_BYTES: usize = 512 * 1024;
/// Longest client message id.
const MAX_CLIENT_ID_LEN: usize = 64;
/// How long past its retry time a send refused for the rate holds back the sends after it,
/// waiting for it to come again.
const HOLD_GRACE_MS: u64 = 2_000;

type Handled = Result<(), ErrorFrame>;

fn fail(code: ErrorCode, message: impl Into<String>) -> ErrorFrame {
    ErrorFrame::new(code, message)
}

fn rate_limited(what: &str, wait_ms: u64) -> ErrorFrame {
    ErrorFrame {
        retry_after_ms: Some(wait_ms),
        ..fail(ErrorCode::RateLimited, format!("too many {what}; try again in {wait_ms} ms"))
    }
}

impl From<StoreError> for ErrorFrame {
    fn from(error: StoreError) -> Self {
        tracing::error!(%error, "ws: store failure while handling a frame");
        fail(
            ErrorCode::StoreUnavailable,
            "the server cannot reach its database right now; try again",
        )
    }
}

/// The correlation fields of a frame that failed to parse, read leniently so the error
/// can still say which request it answers.
#[derive(Deserialize)]
struct Correlation {
    req: Option<serde_json::Value>,
    id: Option<serde_json::Value>,
}

/// A send refused for the rate, which must come again before the sends after it are
/// taken: a connection's messages are stored in the order it sent them.
struct HeldBack {
    id: String,
    wait_ms: u64,
    until: crate::protocol::Millis,
}

/// One connection's handling state.
pub struct Connection {
    state: AppState,
    conn: Arc<Conn>,
    session: Session,
    greeted: bool,
    held_back: Option<HeldBack>,
}

impl Connection {
    pub fn new(state: AppState, conn: Arc<Conn>, session: Session) -> Self {
        Self { state, conn, session, greeted: false, held_back: None }
    }

    /// Whether `hello` was accepted.
    pub fn greeted(&self) -> bool {
        self.greeted
    }

    pub fn conn(&self) -> &Arc<Conn> {
        &self.conn
    }

    /// Ends the handling and hands back the connection.
    pub fn finish(self) -> Arc<Conn> {
        self.conn
    }

    /// A binary frame: the protocol is JSON text.
    pub fn binary(&self) {
        self.conn.send_error(fail(
            ErrorCode::BadFrame,
            "binary frames are not accepted; send JSON text frames",
        ));
    }

    /// Checks, parses and handles one text frame.
    pub async fn handle(&mut self, text: &str) {
        let max = self.state.limits.max_frame_bytes;
        if text.len() > max {
            let mut error = fail(
                ErrorCode::FrameTooLarge,
                format!("frame of {} bytes is over the limit of {max}", text.len()),
            );
            self.correlate(&mut error, text);
            self.conn.send_error(error);
            return;
        }
        let frame = match serde_json::from_str::<ClientFrame>(text) {
            Ok(frame) => frame,
            Err(e) => {
                let mut error = fail(ErrorCode::BadFrame, format!("cannot read the frame: {e}"));
                self.correlate(&mut error, text);
                self.conn.send_error(error);
                return;
            }
        };
        let (req, id) = correlation_of(&frame);
        if let Err(mut error) = self.dispatch(frame).await {
            error.req = error.req.or(req);
            error.id = error.id.or(id);
            self.conn.send_error(error);
        }
    }

    /// The allow-list and the session's expiry, checked on every frame; when either fails
    /// the connection is told to close.
    pub fn still_allowed(&self) -> bool {
        if !self.state.allowlist.contains(&self.session.email) {
            tracing::info!(conn = self.conn.id, email = %self.session.email, "ws: address no longer allowed");
            self.conn.close(CloseReason::AccessRevoked);
            return false;
        }
        if self.session.expired_at(self.state.clock.now_ms()) {
            tracing::info!(conn = self.conn.id, email = %self.session.email, "ws: session expired");
            self.conn.close(CloseReason::SessionExpired);
            return false;
        }
        true
    }

    fn correlate(&self, error: &mut ErrorFrame, text: &str) {
        if let Ok(found) = serde_json::from_str::<Correlation>(text) {
            error.req = found.req.and_then(|v| v.as_u64());
            // Only an id that could be valid is echoed: a huge one would make a huge error.
            error.id = found
                .id
                .and_then(|v| v.as_str().map(str::to_owned))
                .filter(|id| id.len() <= MAX_CLIENT_ID_LEN);
        }
    }

    async fn dispatch(&mut self, frame: ClientFrame) -> Handled {
        if let ClientFrame::Hello { v, since } = frame {
            return self.hello(v, since).await;
        }
        if !self.greeted {
            return Err(fail(
                ErrorCode::HelloRequired,
                "send hello first: {\"type\":\"hello\",\"v\":1}",
            ));
        }
        if !matches!(frame, ClientFrame::Send { .. } | ClientFrame::Ping { .. })
            && let Err(wait_ms) =
                self.state.request_rate.take(&self.session.email, self.state.clock.now_ms())
        {
            self.state.metrics.limited(Limited::Requests);
            return Err(rate_limited("requests", wait_ms));
        }
        match frame {
            ClientFrame::Hello { .. } => unreachable!("handled above"),
            ClientFrame::Send { room, id, text } => self.send(room, id, text).await,
            ClientFrame::History { req, room, before, limit } => {
                self.history(req, &room, before, limit).await
            }
            ClientFrame::Rooms { req } => {
                let rooms = self.state.store.rooms_of(&self.session.email).await?;
                self.conn.send(&ServerFrame::Rooms { req, rooms });
                Ok(())
            }
            ClientFrame::Join { req, room } => self.join(req, &room).await,
            ClientFrame::Leave { req, room } => self.leave(req, &room).await,
            ClientFrame::Members { req, room, after } => {
                self.members(req, &room, after.as_deref()).await
            }
            ClientFrame::MarkRead { room, seq } => self.mark_read(&room, seq).await,
            ClientFrame::SetName { req, name } => self.set_name(req, name.as_deref()).await,
            ClientFrame::Ping { req } => {
                self.conn.send(&ServerFrame::Pong { req });
                Ok(())
            }
        }
    }

    async fn hello(&mut self, v: u32, since: BTreeMap<String, Seq>) -> Handled {
        if self.greeted {
            return Err(fail(ErrorCode::BadFrame, "hello was already received on this connection"));
        }
        if v != PROTOCOL_VERSION {
            tracing::info!(conn = self.conn.id, version = v, "ws: unsupported protocol version");
            self.conn.close(CloseReason::UnsupportedVersion);
            return Ok(());
        }
        let email = &self.session.email;
        let state = &self.state;
        // No join or leave of this user may fall between reading the rooms and listening.
        let _membership = state.membership.lock(email).await;
        let name = state.store.ensure_user(email, state.clock.now_ms()).await?;
        state.names.set(email, name.clone());
        let rooms = state.store.rooms_of(email).await?;
        // Each room is delivered from where the client says it is, or from now.
        let baselines: Vec<(Arc<str>, Seq)> = rooms
            .iter()
            .map(|r| {
                let after = since.get(&r.name).map_or(r.last_seq, |seen| (*seen).min(r.last_seq));
                (Arc::from(r.name.as_str()), after)
            })
            .collect();
        let welcome = ServerFrame::Welcome {
            v: PROTOCOL_VERSION,
            email: email.to_string(),
            name,
            session_expires_at: self.session.expires_at,
            limits: state.limits,
            rooms,
        };
        let names: Vec<Arc<str>> = baselines.iter().map(|(room, _)| room.clone()).collect();
        let single = !state.cluster.is_shared();
        let first = state.hub.register(&self.conn, welcome.to_json().into(), baselines, single);
        if first && !single {
            state.cluster.present(&state.hub, email, &names, true).await;
        }
        self.greeted = true;
        // Removing an address closes its registered connections; one removed while this
        // hello was reading the store is caught here, now that it is registered.
        self.still_allowed();
        Ok(())
    }

    /// The canonical name of a room this user is in, or the error to answer.
    fn member_room(&self, room: &str) -> Result<String, ErrorFrame> {
        let room = canonical_room(room).map_err(|e| fail(ErrorCode::InvalidRoom, e.message()))?;
        if !self.conn.listens_to(&room) {
            return Err(fail(
                ErrorCode::NotMember,
                format!("you are not a member of {room:?}; join it first"),
            ));
        }
        Ok(room)
    }

    async fn send(&mut self, room: String, id: String, text: String) -> Handled {
        let room = self.member_room(&room)?;
        let id_ok = (1..=MAX_CLIENT_ID_LEN).contains(&id.len())
            && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b));
        if !id_ok {
            return Err(fail(
                ErrorCode::InvalidId,
                "a message id is 1 to 64 characters of A-Z a-z 0-9 . _ : -",
            ));
        }
        let text = sanitize_message(&text).into_owned();
        if text.trim().is_empty() {
            return Err(fail(ErrorCode::EmptyMessage, "the message is empty"));
        }
        let max = self.state.limits.max_message_chars;
        let chars = text.chars().count();
        if chars > max {
            return Err(fail(
                ErrorCode::MessageTooLong,
                format!("the message has {chars} characters; the limit is {max}"),
            ));
        }
        let now = self.state.clock.now_ms();
        match self.held_back.take() {
            Some(held) if held.id != id && now < held.until => {
                let wait_ms = held.wait_ms;
                self.held_back = Some(held);
                return Err(rate_limited(
                    "messages (an earlier one must come again first)",
                    wait_ms,
                ));
            }
            _ => {}
        }
        if let Err(wait_ms) = self.state.message_rate.take(&self.session.email, now) {
            let until = now.saturating_add(i64::try_from(wait_ms + HOLD_GRACE_MS).unwrap_or(0));
            self.held_back = Some(HeldBack { id, wait_ms, until });
            self.state.metrics.limited(Limited::Messages);
            return Err(rate_limited("messages", wait_ms));
        }
        let message =
            NewMessage { room, author: self.session.email.to_string(), client_id: id, text };
        let pending = Pending { message, conn: self.conn.clone() };
        if self.state.committer.submit(pending).await.is_err() {
            return Err(fail(
                ErrorCode::ShuttingDown,
                "the server is shutting down; the message was not saved",
            ));
        }
        Ok(())
    }

    async fn history(
        &mut self,
        req: Option<u64>,
        room: &str,
        before: Option<Seq>,
        limit: Option<u32>,
    ) -> Handled {
        let room = self.member_room(room)?;
        let limit =
            limit.unwrap_or(DEFAULT_HISTORY_PAGE).clamp(1, self.state.limits.history_page_max);
        let mut messages = self.state.store.messages_before(&room, before, limit).await?;
        // Keep the page's frame small: drop the oldest messages past the byte budget (the
        // client asks again from the oldest it got).
        let mut bytes = 0;
        let keep_from = messages
            .iter()
            .rposition(|m| {
                bytes += m.text.len() + m.id.len() + m.author.len() + 128;
                bytes > HISTORY_PAGE_BYTES
            })
            .map_or(0, |over| (over + 1).min(messages.len() - 1));
        messages.drain(..keep_from);
        let more = messages.first().is_some_and(|m| m.seq > 1);
        self.conn.send(&ServerFrame::History { req, room, messages, more });
        Ok(())
    }

    async fn join(&mut self, req: Option<u64>, room: &str) -> Handled {
        let room = canonical_room(room).map_err(|e| fail(ErrorCode::InvalidRoom, e.message()))?;
        let email = &self.session.email;
        let _membership = self.state.membership.lock(email).await;
        if !self.conn.listens_to(&room) && self.conn.room_count() >= MAX_ROOMS_PER_USER {
            return Err(fail(
                ErrorCode::TooManyRooms,
                format!("you are in {MAX_ROOMS_PER_USER} rooms; leave one first"),
            ));
        }
        let joined = self.state.store.join_room(email, &room, self.state.clock.now_ms()).await?;
        let member = joined.newly.then(|| Member {
            email: email.to_string(),
            name: self.state.names.get(email),
            online: true,
        });
        if joined.newly {
            tracing::info!(email = %email, room = %room, "room: joined");
        }
        let newly = joined.newly;
        self.state.hub.joined(&self.conn, req, joined.summary, member);
        let notice = Notice::Joined { email: email.to_string(), room, newly };
        self.state.cluster.tell(notice).await;
        Ok(())
    }

    async fn leave(&mut self, req: Option<u64>, room: &str) -> Handled {
        let room = canonical_room(room).map_err(|e| fail(ErrorCode::InvalidRoom, e.message()))?;
        if room == DEFAULT_ROOM {
            return Err(fail(
                ErrorCode::CannotLeaveDefault,
                format!("everyone is a member of {DEFAULT_ROOM}"),
            ));
        }
        let _membership = self.state.membership.lock(&self.session.email).await;
        let removed = self.state.store.leave_room(&self.session.email, &room).await?;
        if !removed && !self.conn.listens_to(&room) {
            return Err(fail(ErrorCode::NotMember, format!("you are not a member of {room:?}")));
        }
        if removed {
            tracing::info!(email = %self.session.email, room = %room, "room: left");
        }
        self.state.hub.left(&self.conn, req, &room, removed);
        let email = self.session.email.to_string();
        self.state.cluster.tell(Notice::Left { email, room, announce: removed }).await;
        Ok(())
    }

    async fn members(&mut self, req: Option<u64>, room: &str, after: Option<&str>) -> Handled {
        let room = self.member_room(room)?;
        // One more than a page says whether another page follows.
        let mut page = self.state.store.members(&room, after, MEMBERS_PAGE_MAX + 1).await?;
        let more = page.len() > MEMBERS_PAGE_MAX as usize;
        page.truncate(MEMBERS_PAGE_MAX as usize);
        let emails: Vec<String> = page.iter().map(|(email, _)| email.clone()).collect();
        // Online here, or (in a cluster) on another node.
        let elsewhere =
            self.state.cluster.online_elsewhere(&emails).await.unwrap_or_else(|error| {
                tracing::warn!(%error, "cluster: presence on other nodes could not be read");
                Default::default()
            });
        let members = page
            .into_iter()
            .map(|(email, name)| Member {
                online: self.state.hub.is_online(&email) || elsewhere.contains(&email),
                email,
                name,
            })
            .collect();
        self.conn.send(&ServerFrame::Members { req, room, members, more });
        Ok(())
    }

    async fn mark_read(&mut self, room: &str, seq: Seq) -> Handled {
        let room = self.member_room(room)?;
        let email = &self.session.email;
        if let Some(seq) = self.state.store.mark_read(email, &room, seq).await? {
            self.state.hub.send_to_user(email, &ServerFrame::Read { room: room.clone(), seq });
            self.state.cluster.tell(Notice::Read { email: email.to_string(), room, seq }).await;
        }
        Ok(())
    }

    async fn set_name(&mut self, req: Option<u64>, name: Option<&str>) -> Handled {
        let name = canonical_display_name(name.unwrap_or_default())
            .map_err(|e| fail(ErrorCode::InvalidName, e.message()))?;
        let email = &self.session.email;
        self.state.store.set_display_name(email, name.as_deref()).await?;
        self.state.names.set(email, name.clone());
        tracing::info!(email = %email, "user: display name changed");
        let changed = ServerFrame::Name { email: email.to_string(), name: name.clone(), req: None };
        self.state.hub.broadcast_except(self.conn.id, &changed);
        self.conn.send(&ServerFrame::Name { email: email.to_string(), name, req });
        self.state.cluster.tell(Notice::Name { email: email.to_string() }).await;
        Ok(())
    }
}

/// The `req` and `id` of a frame, for its error answer.
fn correlation_of(frame: &ClientFrame) -> (Option<u64>, Option<String>) {
    match frame {
        // Only an id that could be valid is echoed: a huge one would make a huge error.
        ClientFrame::Send { id, .. } => {
            (None, Some(id.clone()).filter(|id| id.len() <= MAX_CLIENT_ID_LEN))
        }
        ClientFrame::History { req, .. }
        | ClientFrame::Rooms { req }
        | ClientFrame::Join { req, .. }
        | ClientFrame::Leave { req, .. }
        | ClientFrame::Members { req, .. }
        | ClientFrame::SetName { req, .. }
        | ClientFrame::Ping { req } => (*req, None),
        ClientFrame::Hello { .. } | ClientFrame::MarkRead { .. } => (None, None),
    }
}
