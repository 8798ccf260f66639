//! The connection task: one per connected client. It owns the WebSocket, the outbox of
//! messages waiting for their `ack`, and the requests waiting for their answer; it
//! reconnects with backoff when the connection drops, says `hello` with the per-room
//! cursors so the server sends exactly what was missed, and sends the outbox again (the
//! server keeps one copy per message id).
//!
//! Messages leave the outbox in order: the task paces them to the rate the server announced,
//! and a message the server turned away for a moment holds back the ones after it.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message as WsMessage};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use url::Url;

use super::error::ClientError;
use super::events::{ConnectionState, Event};
use super::options::ClientOptions;
use super::session::{Session, SessionCache, root_cause};
use crate::protocol::{
    ClientFrame, ErrorCode, ErrorFrame, Limits, Millis, PROTOCOL_VERSION, RoomSummary, Seq,
    ServerFrame, close_code,
};

pub(super) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long the server may stay silent (it pings every 25 s) before the connection counts
/// as lost.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// A connection that held this long resets the count of failed reconnection attempts.
const STABLE_AFTER: Duration = Duration::from_secs(10);
/// Largest frame the client reads (history pages stay far below it).
const MAX_FRAME: usize = 16 << 20;
/// How long a message waits before it is sent again after a transient refusal.
const TRANSIENT_RETRY: Duration = Duration::from_secs(1);
/// The longest wait for a refused message or request the client accepts from the server.
const MAX_SERVER_WAIT: Duration = Duration::from_secs(3600);
/// The client paces itself a little below the server's announced rate, so that network
/// jitter does not push it over.
const PACE_MARGIN: f64 = 0.9;

/// A message acknowledged by the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// The message's id, chosen by the client: its `message` event carries it too.
    pub id: String,
    /// The room, as the server spells it.
    pub room: String,
    /// Its sequence number in the room.
    pub seq: Seq,
    /// When the server stored it (milliseconds since the Unix epoch).
    pub ts: Millis,
}

pub(super) type AckSender = oneshot::Sender<Result<Sent, ClientError>>;
pub(super) type Reply = oneshot::Sender<Result<ServerFrame, ClientError>>;

/// A message in the outbox.
pub(super) struct Outgoing {
    pub room: String,
    pub id: String,
    pub text: String,
    pub ack: AckSender,
    pub state: Delivery,
}

impl Outgoing {
    fn frame(&self) -> ClientFrame {
        ClientFrame::Send { room: self.room.clone(), id: self.id.clone(), text: self.text.clone() }
    }

    /// The size of its `send` frame, in bytes.
    pub fn frame_len(&self) -> usize {
        self.frame().to_json().len()
    }
}

/// Where an outbox message stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Delivery {
    /// To be sent, in order, as soon as there is a connection.
    Waiting,
    /// Sent on this connection; waiting for its `ack`.
    Sent,
    /// Refused for a while (`rate_limited` and the like): send again at this time.
    RetryAt(Instant),
}

/// What the client handle asks of the task.
pub(super) enum Command {
    Send(Outgoing),
    Request {
        frame: ClientFrame,
        reply: Reply,
    },
    /// A frame that has no answer (`mark_read`).
    Fire(ClientFrame),
    /// Close once the outbox is empty (or after `connection_timeout`).
    Close,
}

/// What the task and the handles share.
pub(super) struct Shared {
    pub state: watch::Sender<ConnectionState>,
    /// Messages handed to `send` and not yet acknowledged or failed.
    pub outbox: AtomicUsize,
    pub events: broadcast::Sender<Event>,
    /// Our email and display name, from the last `welcome` and `name`.
    pub me: Mutex<Option<(String, Option<String>)>>,
    /// Why the last task ended, for calls made after.
    pub ended: Mutex<Option<ClientError>>,
    /// The session in use (cleared when the server refuses it).
    pub session: Mutex<Option<Session>>,
    /// Per room, the last sequence delivered: kept across reconnects and `connect` calls,
    /// so a new `hello` asks for exactly what was missed.
    pub cursors: Mutex<HashMap<String, Seq>>,
    /// The server's limits, from the last `welcome`.
    pub limits: Mutex<Option<Limits>>,
}

impl Shared {
    pub fn emit(&self, event: Event) {
        // No receiver is fine: nobody is listening.
        let _ = self.events.send(event);
    }

    pub fn set_state(&self, state: ConnectionState) {
        self.state.send_replace(state.clone());
        self.emit(Event::Connection(state));
    }

    fn cursors(&self) -> std::sync::MutexGuard<'_, HashMap<String, Seq>> {
        self.cursors.lock().expect("cursor lock")
    }
}

/// The `welcome` of a connection.
pub(super) struct Welcome {
    pub email: String,
    pub name: Option<String>,
    pub rooms: Vec<RoomSummary>,
    pub limits: Limits,
}

/// Opens the WebSocket with the session.
pub(super) async fn open(url: &Url, session: &str, timeout: Duration) -> Result<Ws, ClientError> {
    let mut request = url
        .as_str()
        .into_client_request()
        .map_err(|e| ClientError::InvalidUrl { url: url.to_string(), reason: e.to_string() })?;
    let bearer = format!("Bearer {session}")
        .parse()
        .map_err(|_| ClientError::Protocol("the session is not a valid header value".into()))?;
    request.headers_mut().insert(tungstenite::http::header::AUTHORIZATION, bearer);
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_FRAME))
        .max_frame_size(Some(MAX_FRAME));
    let connecting = tokio_tungstenite::connect_async_with_config(request, Some(config), true);
    match tokio::time::timeout(timeout, connecting).await {
        Err(_) => Err(ClientError::Timeout { after: timeout }),
        Ok(Ok((ws, _))) => Ok(ws),
        Ok(Err(tungstenite::Error::Http(response))) => Err(match response.status().as_u16() {
            401 => ClientError::SessionExpired,
            403 => ClientError::AccessRevoked,
            status => {
                ClientError::Http { status, message: "the WebSocket upgrade was refused".into() }
            }
        }),
        Ok(Err(error)) => {
            Err(ClientError::Unreachable { url: url.to_string(), reason: root_cause(&error) })
        }
    }
}

/// Says `hello` with the cursors and waits for `welcome`.
pub(super) async fn greet(
    ws: &mut Ws,
    since: HashMap<String, Seq>,
    timeout: Duration,
) -> Result<Welcome, ClientError> {
    let hello = ClientFrame::Hello { v: PROTOCOL_VERSION, since: since.into_iter().collect() };
    let lost = |e: tungstenite::Error| ClientError::Unreachable {
        url: "the WebSocket".into(),
        reason: e.to_string(),
    };
    let waiting = async {
        ws.send(WsMessage::text(hello.to_json())).await.map_err(lost)?;
        let mut refusal = None;
        loop {
            let message = match ws.next().await {
                Some(Ok(message)) => message,
                Some(Err(e)) => return Err(lost(e)),
                None => {
                    return Err(ClientError::Protocol("the server closed before welcome".into()));
                }
            };
            match message {
                WsMessage::Text(text) => match serde_json::from_str::<ServerFrame>(&text) {
                    Ok(ServerFrame::Welcome { email, name, rooms, limits, .. }) => {
                        return Ok(Welcome { email, name, rooms, limits });
                    }
                    Ok(ServerFrame::Error(error)) => refusal = Some(error),
                    Ok(_) => {}
                    Err(e) => return Err(ClientError::Protocol(format!("unreadable frame: {e}"))),
                },
                WsMessage::Close(frame) => {
                    let code = frame.map_or(1005, |f| u16::from(f.code));
                    return Err(
                        close_error(code, refusal.as_ref()).unwrap_or(ClientError::Disconnected)
                    );
                }
                _ => {}
            }
        }
    };
    tokio::time::timeout(timeout, waiting)
        .await
        .map_err(|_| ClientError::Timeout { after: timeout })?
}

/// Opens and greets in one step.
async fn open_and_greet(
    url: Url,
    session: String,
    since: HashMap<String, Seq>,
    timeout: Duration,
) -> Result<(Ws, Welcome), ClientError> {
    let mut ws = open(&url, &session, timeout).await?;
    let welcome = greet(&mut ws, since, timeout).await?;
    Ok((ws, welcome))
}

/// What a close code means when it ends the session for good.
fn close_error(code: u16, error: Option<&ErrorFrame>) -> Option<ClientError> {
    match code {
        close_code::SESSION_EXPIRED => Some(ClientError::SessionExpired),
        close_code::ACCESS_REVOKED => Some(ClientError::AccessRevoked),
        close_code::HANDSHAKE_FAILED => {
            Some(ClientError::Incompatible(error.map_or_else(
                || "the server refused the handshake".to_owned(),
                |e| e.message.clone(),
            )))
        }
        _ => None,
    }
}

/// How a connection ended.
enum Ended {
    /// The client was closed.
    Closed,
    /// The session cannot go on: no reconnecting.
    Fatal(ClientError),
    /// The connection dropped: reconnect.
    Lost(String),
}

/// A request waiting for its answer.
struct Pending {
    frame: ClientFrame,
    reply: Reply,
    /// Written to a connection at least once.
    sent: bool,
    /// Sent again after a reconnect (its first answer may have been lost).
    resent: bool,
    /// When it fails with a timeout; set while a connection carries it, so a request made
    /// while reconnecting waits for the connection first.
    deadline: Option<Instant>,
}

/// The client's own pacing: a token bucket a little below the server's.
struct Pace {
    tokens: f64,
    at: Instant,
}

/// The connection task.
pub(super) struct Task {
    options: ClientOptions,
    ws_url: Url,
    session: String,
    cache: Option<SessionCache>,
    shared: Arc<Shared>,
    commands: mpsc::UnboundedReceiver<Command>,
    outbox: VecDeque<Outgoing>,
    pending: BTreeMap<u64, Pending>,
    fires: Vec<ClientFrame>,
    next_req: u64,
    /// Reconnection attempts that failed in a row: the client gives up at
    /// `max_reconnect_attempts`.
    failed_attempts: u32,
    /// Reconnection attempts since the connection last held for [`STABLE_AFTER`]: the
    /// backoff grows with it, so a server that accepts and drops at once is not hammered.
    backoff_step: u32,
    pace: Pace,
    /// When to try the outbox again (pacing or a refusal).
    wake_at: Option<Instant>,
    /// Set by `close`: finish the outbox, then close, by this time.
    closing_by: Option<Instant>,
    /// The last error frame without a `req` or `id`: it explains the close that follows.
    last_error: Option<ErrorFrame>,
    last_heard: Instant,
}

impl Task {
    pub fn new(
        options: ClientOptions,
        ws_url: Url,
        session: String,
        cache: Option<SessionCache>,
        shared: Arc<Shared>,
        commands: mpsc::UnboundedReceiver<Command>,
    ) -> Self {
        Self {
            options,
            ws_url,
            session,
            cache,
            shared,
            commands,
            outbox: VecDeque::new(),
            pending: BTreeMap::new(),
            fires: Vec::new(),
            next_req: 0,
            failed_attempts: 0,
            backoff_step: 0,
            pace: Pace { tokens: 1.0, at: Instant::now() },
            wake_at: None,
            closing_by: None,
            last_error: None,
            last_heard: Instant::now(),
        }
    }

    /// Takes in a `welcome`: the identity, the limits, the rooms (reporting rooms joined or
    /// left elsewhere while we were away), and the state.
    pub fn welcomed(&mut self, welcome: Welcome, first: bool) {
        {
            let mut cursors = self.shared.cursors();
            if !cursors.is_empty() {
                let now: HashSet<&str> = welcome.rooms.iter().map(|r| r.name.as_str()).collect();
                let gone: Vec<String> =
                    cursors.keys().filter(|r| !now.contains(r.as_str())).cloned().collect();
                for room in gone {
                    cursors.remove(&room);
                    self.shared.emit(Event::Left { room });
                }
                for room in welcome.rooms.iter().filter(|r| !cursors.contains_key(&r.name)) {
                    self.shared.emit(Event::Joined(room.clone()));
                }
            }
            for room in &welcome.rooms {
                cursors.entry(room.name.clone()).or_insert(room.last_seq);
            }
        }
        *self.shared.limits.lock().expect("limits lock") = Some(welcome.limits);
        self.pace = Pace { tokens: self.burst(), at: Instant::now() };
        *self.shared.me.lock().expect("me lock") =
            Some((welcome.email.clone(), welcome.name.clone()));
        self.shared.set_state(ConnectionState::Connected);
        if first
            && let Some(name) = self.options.display_name.clone()
            && welcome.name.as_ref() != Some(&name)
        {
            self.fires.push(ClientFrame::SetName { req: None, name: Some(name) });
        }
        self.shared.emit(Event::Welcome {
            email: welcome.email,
            name: welcome.name,
            rooms: welcome.rooms,
        });
    }

    /// Runs the connection until the client is closed or gives up.
    pub async fn run(mut self, mut ws: Ws) {
        loop {
            let started = Instant::now();
            let reason = match self.serve(&mut ws).await {
                Ended::Closed => return self.finish(ConnectionState::Closed, ClientError::Closed),
                Ended::Fatal(error) => return self.give_up(error),
                Ended::Lost(reason) => reason,
            };
            tracing::info!(%reason, "client: connection lost");
            if started.elapsed() >= STABLE_AFTER {
                self.backoff_step = 0;
            }
            if !self.options.reconnect || self.options.max_reconnect_attempts == 0 {
                return self.give_up(ClientError::Disconnected);
            }
            match self.reconnect().await {
                Ok((next, welcome)) => {
                    ws = next;
                    self.welcomed(welcome, false);
                }
                Err(Ended::Closed) => {
                    return self.finish(ConnectionState::Closed, ClientError::Closed);
                }
                Err(Ended::Fatal(error)) => return self.give_up(error),
                Err(Ended::Lost(_)) => unreachable!("reconnect ends with a connection or for good"),
            }
        }
    }

    /// Serves one connection until it ends.
    async fn serve(&mut self, ws: &mut Ws) -> Ended {
        self.last_heard = Instant::now();
        if let Err(reason) = self.resend(ws).await {
            return Ended::Lost(reason);
        }
        loop {
            if let Some(by) = self.closing_by
                && (self.outbox.is_empty() || Instant::now() >= by)
            {
                let _ = tokio::time::timeout(self.options.connection_timeout, ws.close(None)).await;
                return Ended::Closed;
            }
            let request_deadline = self.request_deadline();
            tokio::select! {
                command = self.commands.recv(), if self.closing_by.is_none() => {
                    let Some(command) = command else {
                        self.begin_closing();
                        continue;
                    };
                    if let Err(ended) = self.command(command, Some(ws)).await {
                        return ended;
                    }
                }
                next = ws.next() => {
                    let message = match next {
                        None => return Ended::Lost("the server closed the connection".into()),
                        Some(Err(error)) => return Ended::Lost(error.to_string()),
                        Some(Ok(message)) => message,
                    };
                    self.last_heard = Instant::now();
                    if let Some(ended) = self.message(message) {
                        return ended;
                    }
                }
                () = tokio::time::sleep_until(self.last_heard + IDLE_TIMEOUT) => {
                    return Ended::Lost("the server went silent".into());
                }
                () = sleep_until(self.wake_at) => {
                    if let Err(reason) = self.send_due(ws).await {
                        return Ended::Lost(reason);
                    }
                }
                () = sleep_until(request_deadline) => self.expire_requests(),
                () = sleep_until(self.closing_by) => {}
            }
        }
    }

    /// Writes frames, then flushes, within `connection_timeout`.
    async fn write(&self, ws: &mut Ws, frames: Vec<String>) -> Result<(), String> {
        if frames.is_empty() {
            return Ok(());
        }
        let writing = async {
            for frame in frames {
                ws.feed(WsMessage::text(frame)).await?;
            }
            ws.flush().await
        };
        match tokio::time::timeout(self.options.connection_timeout, writing).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err("the server stopped taking data".into()),
        }
    }

    /// After (re)connecting: the requests still waiting, the frames without answer, and
    /// the outbox, in order.
    async fn resend(&mut self, ws: &mut Ws) -> Result<(), String> {
        let deadline = Instant::now() + self.options.connection_timeout;
        for pending in self.pending.values_mut() {
            pending.resent = pending.sent;
            pending.sent = true;
            pending.deadline = Some(deadline);
        }
        let frames: Vec<String> = self
            .pending
            .values()
            .map(|p| p.frame.to_json())
            .chain(self.fires.drain(..).map(|f| f.to_json()))
            .collect();
        self.write(ws, frames).await?;
        for outgoing in &mut self.outbox {
            outgoing.state = Delivery::Waiting;
        }
        self.send_due(ws).await
    }

    fn burst(&self) -> f64 {
        let limits = *self.shared.limits.lock().expect("limits lock");
        limits.map_or(1.0, |l| (f64::from(l.message_burst) * PACE_MARGIN).floor().max(1.0))
    }

    /// Takes a token from the pacing bucket, or says when one will be there.
    fn pace(&mut self, now: Instant) -> Result<(), Instant> {
        let limits = *self.shared.limits.lock().expect("limits lock");
        let Some(limits) = limits else {
            return Ok(());
        };
        let rate = f64::from(limits.messages_per_second) * PACE_MARGIN;
        if rate <= 0.0 {
            // A server that announces no rate gets no pacing: its refusals pace us instead.
            return Ok(());
        }
        let elapsed = now.saturating_duration_since(self.pace.at).as_secs_f64();
        self.pace.tokens = (self.pace.tokens + elapsed * rate).min(self.burst());
        self.pace.at = now;
        if self.pace.tokens >= 1.0 {
            self.pace.tokens -= 1.0;
            return Ok(());
        }
        Err(now + Duration::from_secs_f64((1.0 - self.pace.tokens) / rate))
    }

    /// Sends the outbox messages that may go now, in order: it stops at the first one that
    /// must wait (a refusal's retry time, or the pace), and so do all after it.
    async fn send_due(&mut self, ws: &mut Ws) -> Result<(), String> {
        let now = Instant::now();
        self.wake_at = None;
        let mut frames = Vec::new();
        for at in 0..self.outbox.len() {
            match self.outbox[at].state {
                Delivery::Sent => continue,
                Delivery::RetryAt(when) if when > now => {
                    self.wake_at = Some(when);
                    break;
                }
                Delivery::Waiting | Delivery::RetryAt(_) => {}
            }
            if let Err(when) = self.pace(now) {
                self.wake_at = Some(when);
                break;
            }
            self.outbox[at].state = Delivery::Sent;
            frames.push(self.outbox[at].frame().to_json());
        }
        self.write(ws, frames).await
    }

    /// The earliest time a request waiting for its answer times out.
    fn request_deadline(&self) -> Option<Instant> {
        self.pending.values().filter_map(|p| p.deadline).min()
    }

    /// Fails the requests whose answer did not come in time.
    fn expire_requests(&mut self) {
        let now = Instant::now();
        let after = self.options.connection_timeout;
        let expired: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline.is_some_and(|d| d <= now))
            .map(|(req, _)| *req)
            .collect();
        for req in expired {
            if let Some(pending) = self.pending.remove(&req) {
                let _ = pending.reply.send(Err(ClientError::Timeout { after }));
            }
        }
    }

    /// From now on, take no more commands and end once the outbox is empty, or at the
    /// latest after `connection_timeout`, connected or not.
    fn begin_closing(&mut self) {
        self.closing_by.get_or_insert(Instant::now() + self.options.connection_timeout);
    }

    /// Keeps a frame without an answer for the next connection. Only the last read marker
    /// of a room and the last name change matter, so earlier ones are dropped.
    fn keep_for_later(&mut self, frame: ClientFrame) {
        self.fires.retain(|kept| match (kept, &frame) {
            (ClientFrame::MarkRead { room: a, .. }, ClientFrame::MarkRead { room: b, .. }) => {
                a != b
            }
            (ClientFrame::SetName { .. }, ClientFrame::SetName { .. }) => false,
            _ => true,
        });
        self.fires.push(frame);
    }

    /// Handles a command; with a connection, sends what it asks for.
    async fn command(&mut self, command: Command, ws: Option<&mut Ws>) -> Result<(), Ended> {
        let frame = match command {
            Command::Close => {
                self.begin_closing();
                return Ok(());
            }
            Command::Send(outgoing) => {
                self.outbox.push_back(outgoing);
                self.outbox_changed();
                return match ws {
                    Some(ws) => self.send_due(ws).await.map_err(Ended::Lost),
                    None => Ok(()),
                };
            }
            Command::Request { frame, reply } => {
                self.next_req += 1;
                let req = self.next_req;
                let frame = with_req(frame, req);
                let deadline =
                    ws.is_some().then(|| Instant::now() + self.options.connection_timeout);
                let pending = Pending {
                    frame: frame.clone(),
                    reply,
                    sent: ws.is_some(),
                    resent: false,
                    deadline,
                };
                self.pending.insert(req, pending);
                frame
            }
            Command::Fire(frame) => {
                if ws.is_none() {
                    self.keep_for_later(frame);
                    return Ok(());
                }
                frame
            }
        };
        match ws {
            Some(ws) => self.write(ws, vec![frame.to_json()]).await.map_err(Ended::Lost),
            None => Ok(()),
        }
    }

    /// Handles one WebSocket message from the server.
    fn message(&mut self, message: WsMessage) -> Option<Ended> {
        match message {
            WsMessage::Text(text) => {
                match serde_json::from_str::<ServerFrame>(&text) {
                    Ok(frame) => self.frame(frame),
                    Err(error) => tracing::warn!(%error, "client: unreadable frame, ignored"),
                }
                None
            }
            WsMessage::Close(frame) => {
                let code = frame.map_or(1005, |f| u16::from(f.code));
                Some(match close_error(code, self.last_error.as_ref()) {
                    Some(error) => Ended::Fatal(error),
                    None => Ended::Lost(format!("the server closed the connection ({code})")),
                })
            }
            _ => None,
        }
    }

    fn frame(&mut self, frame: ServerFrame) {
        match frame {
            ServerFrame::Message(message) => {
                {
                    let mut cursors = self.shared.cursors();
                    let cursor = cursors.entry(message.room.clone()).or_insert(0);
                    if message.seq <= *cursor {
                        return;
                    }
                    *cursor = message.seq;
                }
                self.shared.emit(Event::Message(message));
            }
            ServerFrame::Ack { id, room, seq, ts } => {
                if let Some(at) = self.outbox.iter().position(|o| o.id == id) {
                    let outgoing = self.outbox.remove(at).expect("position is in range");
                    let _ = outgoing.ack.send(Ok(Sent { id, room, seq, ts }));
                    self.sent_off();
                }
            }
            ServerFrame::Error(error) => self.server_error(error),
            ServerFrame::History { req, .. }
            | ServerFrame::Rooms { req, .. }
            | ServerFrame::Members { req, .. }
            | ServerFrame::Pong { req } => self.answer(req, frame),
            ServerFrame::Joined { req, ref room } => {
                let room = room.clone();
                self.shared.cursors().entry(room.name.clone()).or_insert(room.last_seq);
                self.answer(req, frame);
                self.shared.emit(Event::Joined(room));
            }
            ServerFrame::Left { req, ref room } => {
                let room = room.clone();
                self.shared.cursors().remove(&room);
                self.answer(req, frame);
                self.shared.emit(Event::Left { room });
            }
            ServerFrame::Name { ref email, ref name, req } => {
                let (email, name) = (email.clone(), name.clone());
                let mut me = self.shared.me.lock().expect("me lock");
                if let Some((mine, current)) = me.as_mut()
                    && *mine == email
                {
                    *current = name.clone();
                }
                drop(me);
                self.answer(req, frame);
                self.shared.emit(Event::Name { email, name });
            }
            ServerFrame::MemberJoined { room, member } => {
                self.shared.emit(Event::MemberJoined { room, member });
            }
            ServerFrame::MemberLeft { room, email } => {
                self.shared.emit(Event::MemberLeft { room, email });
            }
            ServerFrame::Presence { room, email, online } => {
                self.shared.emit(Event::Presence { room, email, online });
            }
            ServerFrame::Read { room, seq } => self.shared.emit(Event::Read { room, seq }),
            ServerFrame::Synced { rooms } => self.shared.emit(Event::Synced { rooms }),
            ServerFrame::Welcome { .. } => tracing::warn!("client: a second welcome, ignored"),
        }
    }

    fn answer(&mut self, req: Option<u64>, frame: ServerFrame) {
        if let Some(pending) = req.and_then(|req| self.pending.remove(&req)) {
            let _ = pending.reply.send(Ok(frame));
        }
    }

    fn server_error(&mut self, error: ErrorFrame) {
        let position =
            error.id.as_ref().and_then(|id| self.outbox.iter().position(|o| &o.id == id));
        if let Some(at) = position {
            let retry = match error.code {
                ErrorCode::RateLimited => Some(retry_after(&error)),
                ErrorCode::StoreUnavailable | ErrorCode::ShuttingDown => Some(TRANSIENT_RETRY),
                _ => None,
            };
            match retry {
                // A passing refusal: the message (and, by order, every later one) waits.
                Some(wait) => {
                    let when = Instant::now() + wait;
                    self.outbox[at].state = Delivery::RetryAt(when);
                    self.wake_at = Some(self.wake_at.map_or(when, |w| w.min(when)));
                }
                None => {
                    let outgoing = self.outbox.remove(at).expect("position is in range");
                    let _ = outgoing.ack.send(Err(rejected(&error)));
                    self.sent_off();
                }
            }
            return;
        }
        if let Some(req) = error.req
            && let Some(pending) = self.pending.remove(&req)
        {
            let result = match (&pending.frame, error.code) {
                // A leave sent again after a reconnect: the first one worked.
                (ClientFrame::Leave { room, .. }, ErrorCode::NotMember) if pending.resent => {
                    Ok(ServerFrame::Left { req: Some(req), room: room.clone() })
                }
                (_, ErrorCode::RateLimited) => {
                    Err(ClientError::RateLimited { retry_after: retry_after(&error) })
                }
                _ => Err(rejected(&error)),
            };
            let _ = pending.reply.send(result);
            return;
        }
        self.last_error = Some(error.clone());
        self.shared.emit(Event::ServerError(error));
    }

    /// Reports the outbox size. The count itself is kept by the handles (up when a message
    /// is sent) and by this task (down when it leaves the outbox), so it is right from the
    /// moment `send` returns.
    fn outbox_changed(&self) {
        self.shared.emit(Event::Outbox { unsent: self.shared.outbox.load(Ordering::SeqCst) });
    }

    /// A message left the outbox (acknowledged, refused, or failed).
    fn sent_off(&self) {
        self.shared.outbox.fetch_sub(1, Ordering::SeqCst);
        self.outbox_changed();
    }

    /// Reconnects with backoff, queueing commands while it waits and while it connects.
    async fn reconnect(&mut self) -> Result<(Ws, Welcome), Ended> {
        let max = self.options.max_reconnect_attempts;
        loop {
            if self.failed_attempts >= max {
                return Err(Ended::Fatal(ClientError::GaveUp { attempts: max }));
            }
            self.failed_attempts += 1;
            self.backoff_step += 1;
            let attempt = self.failed_attempts;
            let delay = backoff(&self.options, self.backoff_step);
            self.shared.set_state(ConnectionState::Reconnecting { attempt, delay });
            let until = Instant::now() + delay;
            self.take_commands_until(std::pin::pin!(tokio::time::sleep_until(until))).await?;
            let since = self.shared.cursors().clone();
            let timeout = self.options.connection_timeout;
            let connecting =
                open_and_greet(self.ws_url.clone(), self.session.clone(), since, timeout);
            match self.take_commands_until(std::pin::pin!(connecting)).await? {
                Ok(connection) => {
                    self.failed_attempts = 0;
                    return Ok(connection);
                }
                Err(error) if error.is_final() => return Err(Ended::Fatal(error)),
                Err(error) => tracing::info!(attempt, %error, "client: reconnection failed"),
            }
        }
    }

    /// Waits for `work` while taking commands into the outbox and the request queue. Once
    /// the client is closing, the wait ends when the outbox is empty or the time is up.
    async fn take_commands_until<T>(
        &mut self,
        mut work: std::pin::Pin<&mut impl Future<Output = T>>,
    ) -> Result<T, Ended> {
        loop {
            if self.closing_by.is_some() && self.outbox.is_empty() {
                return Err(Ended::Closed);
            }
            tokio::select! {
                done = &mut work => return Ok(done),
                command = self.commands.recv(), if self.closing_by.is_none() => match command {
                    None => self.begin_closing(),
                    Some(command) => self.command(command, None).await?,
                },
                () = sleep_until(self.closing_by) => return Err(Ended::Closed),
            }
        }
    }

    fn give_up(self, error: ClientError) {
        if error.needs_login() {
            *self.shared.session.lock().expect("session lock") = None;
            if let Some(cache) = &self.cache
                && let Err(clear) = cache.clear_if_for(&self.options.server_url)
            {
                tracing::warn!(%clear, "client: cannot delete the rejected cached session");
            }
        }
        let state = ConnectionState::GaveUp { error: error.clone() };
        self.finish(state, error);
    }

    /// Ends the task: every waiting call, and every command not yet taken, gets `error`.
    fn finish(mut self, state: ConnectionState, error: ClientError) {
        *self.shared.ended.lock().expect("ended lock") = Some(error.clone());
        self.commands.close();
        while let Ok(command) = self.commands.try_recv() {
            match command {
                Command::Send(outgoing) => self.outbox.push_back(outgoing),
                Command::Request { reply, .. } => {
                    let _ = reply.send(Err(error.clone()));
                }
                Command::Fire(_) | Command::Close => {}
            }
        }
        for outgoing in std::mem::take(&mut self.outbox) {
            let _ = outgoing.ack.send(Err(error.clone()));
            self.shared.outbox.fetch_sub(1, Ordering::SeqCst);
        }
        for (_, pending) in std::mem::take(&mut self.pending) {
            let _ = pending.reply.send(Err(error.clone()));
        }
        self.outbox_changed();
        self.shared.set_state(state);
    }
}

/// Sleeps until `at`; without a time, forever.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// How long the server asks us to wait before trying again: a second when it does not say,
/// and never more than [`MAX_SERVER_WAIT`], whatever it says.
fn retry_after(error: &ErrorFrame) -> Duration {
    Duration::from_millis(error.retry_after_ms.unwrap_or(1000)).min(MAX_SERVER_WAIT)
}

fn rejected(error: &ErrorFrame) -> ClientError {
    ClientError::Rejected { code: error.code, message: error.message.clone() }
}

/// The wait before reconnection attempt `attempt` (from 1): the initial delay doubled per
/// attempt, capped, then between half and all of that at random ("equal jitter").
pub(super) fn backoff(options: &ClientOptions, attempt: u32) -> Duration {
    let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
    let capped = options.reconnect_delay.saturating_mul(factor).min(options.max_reconnect_delay);
    let mut random = [0u8; 8];
    let fraction = match getrandom::fill(&mut random) {
        Ok(()) => (u64::from_le_bytes(random) >> 11) as f64 / (1u64 << 53) as f64,
        Err(_) => 0.5,
    };
    capped / 2 + capped.mul_f64(fraction / 2.0)
}

/// Puts a request id into a request frame.
fn with_req(frame: ClientFrame, req: u64) -> ClientFrame {
    let req = Some(req);
    match frame {
        ClientFrame::History { room, before, limit, .. } => {
            ClientFrame::History { req, room, before, limit }
        }
        ClientFrame::Rooms { .. } => ClientFrame::Rooms { req },
        ClientFrame::Join { room, .. } => ClientFrame::Join { req, room },
        ClientFrame::Leave { room, .. } => ClientFrame::Leave { req, room },
        ClientFrame::Members { room, after, .. } => ClientFrame::Members { req, room, after },
        ClientFrame::SetName { name, .. } => ClientFrame::SetName { req, name },
        ClientFrame::Ping { .. } => ClientFrame::Ping { req },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let options = crate::client::AsyncClient::builder("http://localhost:8000")
            .reconnect_delay(Duration::from_secs(1))
            .max_reconnect_delay(Duration::from_secs(10))
            .config_file("/nonexistent")
            .build()
            .unwrap()
            .options()
            .clone();
        for (attempt, full) in [(1, 1), (2, 2), (3, 4), (4, 8), (5, 10), (9, 10), (60, 10)] {
            let full = Duration::from_secs(full);
            for _ in 0..20 {
                let delay = backoff(&options, attempt);
                assert!(delay >= full / 2 && delay <= full, "attempt {attempt}: {delay:?}");
            }
        }
    }
}
