//! The connection task: one per connected client. It owns the WebSocket, the outbox of
//! messages waiting for their `ack`, the requests waiting for their answer, and the
//! per-room cursors; it reconnects with backoff when the connection drops, says `hello`
//! with the cursors so the server sends exactly what was missed, and sends the outbox
//! again (the server keeps one copy per message id).

use std::collections::{BTreeMap, HashMap, VecDeque};
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
use super::session::{SessionCache, root_cause};
use crate::protocol::{
    ClientFrame, ErrorCode, ErrorFrame, Millis, PROTOCOL_VERSION, RoomSummary, Seq, ServerFrame,
    close_code,
};

pub(super) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long the server may stay silent (it pings every 25 s) before the connection counts
/// as lost.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest frame the client reads (history pages stay far below it).
const MAX_FRAME: usize = 16 << 20;
/// How long a message waits before it is sent again after a transient refusal.
const TRANSIENT_RETRY: Duration = Duration::from_secs(1);

/// A message acknowledged by the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    pub id: String,
    pub room: String,
    pub seq: Seq,
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

/// Where an outbox message stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Delivery {
    /// To be sent as soon as there is a connection.
    Waiting,
    /// Sent on this connection; waiting for its `ack`.
    Sent,
    /// Refused for a while (`rate_limited` and the like): send again at this time.
    RetryAt(Instant),
}

impl Outgoing {
    fn frame(&self) -> ClientFrame {
        ClientFrame::Send { room: self.room.clone(), id: self.id.clone(), text: self.text.clone() }
    }
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
    Close,
}

/// What the task and the handles share.
pub(super) struct Shared {
    pub state: watch::Sender<ConnectionState>,
    pub outbox: AtomicUsize,
    pub events: broadcast::Sender<Event>,
    /// Our email and display name, from the last `welcome` and `name`.
    pub me: Mutex<Option<(String, Option<String>)>>,
    /// Why the task ended, for calls made after.
    pub ended: Mutex<Option<ClientError>>,
}

impl Shared {
    pub fn emit(&self, event: Event) {
        // No receiver is fine: nobody is listening.
        let _ = self.events.send(event);
    }

    fn set_state(&self, state: ConnectionState) {
        self.state.send_replace(state.clone());
        self.emit(Event::Connection(state));
    }
}

/// The `welcome` of a connection.
pub(super) struct Welcome {
    pub email: String,
    pub name: Option<String>,
    pub rooms: Vec<RoomSummary>,
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
    since: &HashMap<String, Seq>,
    timeout: Duration,
) -> Result<Welcome, ClientError> {
    let hello =
        ClientFrame::Hello { v: PROTOCOL_VERSION, since: since.clone().into_iter().collect() };
    let lost = |e: tungstenite::Error| ClientError::Unreachable {
        url: "the WebSocket".into(),
        reason: e.to_string(),
    };
    ws.send(WsMessage::text(hello.to_json())).await.map_err(lost)?;
    let waiting = async {
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
                    Ok(ServerFrame::Welcome { email, name, rooms, .. }) => {
                        return Ok(Welcome { email, name, rooms });
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

/// What a close code means when it ends the session for good.
fn close_error(code: u16, error: Option<&ErrorFrame>) -> Option<ClientError> {
    match code {
        close_code::SESSION_EXPIRED => Some(ClientError::SessionExpired),
        close_code::ACCESS_REVOKED => Some(ClientError::AccessRevoked),
        close_code::HANDSHAKE_FAILED => {
            Some(ClientError::Protocol(error.map_or_else(
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
}

/// The connection task.
pub(super) struct Task {
    pub options: ClientOptions,
    pub ws_url: Url,
    pub session: String,
    pub cache: Option<SessionCache>,
    pub shared: Arc<Shared>,
    pub commands: mpsc::UnboundedReceiver<Command>,
    outbox: VecDeque<Outgoing>,
    pending: BTreeMap<u64, Pending>,
    fires: Vec<ClientFrame>,
    cursors: HashMap<String, Seq>,
    next_req: u64,
    /// The last error frame without a `req` or `id`: it explains the close that follows.
    last_error: Option<ErrorFrame>,
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
            cursors: HashMap::new(),
            next_req: 0,
            last_error: None,
        }
    }

    /// Runs the connection until the client is closed or gives up.
    pub async fn run(mut self, mut ws: Ws, welcome: Welcome) {
        self.welcomed(welcome, true);
        loop {
            let reason = match self.serve(&mut ws).await {
                Ended::Closed => return self.finish(ConnectionState::Closed, ClientError::Closed),
                Ended::Fatal(error) => return self.give_up(error),
                Ended::Lost(reason) => reason,
            };
            tracing::info!(%reason, "client: connection lost");
            if !self.options.reconnect {
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

    fn welcomed(&mut self, welcome: Welcome, first: bool) {
        for room in &welcome.rooms {
            self.cursors.entry(room.name.clone()).or_insert(room.last_seq);
        }
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

    /// Serves one connection until it ends.
    async fn serve(&mut self, ws: &mut Ws) -> Ended {
        if let Err(reason) = self.resend(ws).await {
            return Ended::Lost(reason);
        }
        loop {
            let retry_at = self
                .outbox
                .iter()
                .filter_map(|o| match o.state {
                    Delivery::RetryAt(at) => Some(at),
                    _ => None,
                })
                .min();
            let retry = async {
                match retry_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                command = self.commands.recv() => {
                    let Some(command) = command else {
                        let _ = ws.close(None).await;
                        return Ended::Closed;
                    };
                    if let Err(ended) = self.command(command, Some(ws)).await {
                        return ended;
                    }
                }
                next = tokio::time::timeout(IDLE_TIMEOUT, ws.next()) => {
                    let message = match next {
                        Err(_) => return Ended::Lost("the server went silent".into()),
                        Ok(None) => return Ended::Lost("the server closed the connection".into()),
                        Ok(Some(Err(error))) => return Ended::Lost(error.to_string()),
                        Ok(Some(Ok(message))) => message,
                    };
                    if let Some(ended) = self.message(message) {
                        return ended;
                    }
                }
                () = retry => {
                    if let Err(reason) = self.send_due(ws).await {
                        return Ended::Lost(reason);
                    }
                }
            }
        }
    }

    /// After (re)connecting: the requests still waiting, the frames without answer, and
    /// the outbox, in order.
    async fn resend(&mut self, ws: &mut Ws) -> Result<(), String> {
        let frames: Vec<String> = self
            .pending
            .values()
            .map(|p| p.frame.to_json())
            .chain(self.fires.drain(..).map(|f| f.to_json()))
            .collect();
        for frame in frames {
            ws.feed(WsMessage::text(frame)).await.map_err(|e| e.to_string())?;
        }
        for outgoing in &mut self.outbox {
            outgoing.state = Delivery::Waiting;
        }
        self.send_due(ws).await
    }

    /// Sends every outbox message that may go now.
    async fn send_due(&mut self, ws: &mut Ws) -> Result<(), String> {
        let now = Instant::now();
        let due = |state: Delivery| match state {
            Delivery::Waiting => true,
            Delivery::Sent => false,
            Delivery::RetryAt(at) => at <= now,
        };
        for outgoing in self.outbox.iter_mut().filter(|o| due(o.state)) {
            outgoing.state = Delivery::Sent;
            ws.feed(WsMessage::text(outgoing.frame().to_json()))
                .await
                .map_err(|e| e.to_string())?;
        }
        ws.flush().await.map_err(|e| e.to_string())
    }

    /// Handles a command; with a connection, sends what it asks for.
    async fn command(&mut self, command: Command, ws: Option<&mut Ws>) -> Result<(), Ended> {
        let frame = match command {
            Command::Close => return Err(Ended::Closed),
            Command::Send(mut outgoing) => {
                let frame = outgoing.frame();
                outgoing.state = if ws.is_some() { Delivery::Sent } else { Delivery::Waiting };
                self.outbox.push_back(outgoing);
                self.outbox_changed();
                if ws.is_none() {
                    return Ok(());
                }
                frame
            }
            Command::Request { frame, reply } => {
                self.next_req += 1;
                let req = self.next_req;
                let frame = with_req(frame, req);
                self.pending.insert(req, Pending { frame: frame.clone(), reply });
                frame
            }
            Command::Fire(frame) => {
                if ws.is_none() {
                    self.fires.push(frame);
                    return Ok(());
                }
                frame
            }
        };
        if let Some(ws) = ws
            && let Err(error) = ws.send(WsMessage::text(frame.to_json())).await
        {
            return Err(Ended::Lost(error.to_string()));
        }
        Ok(())
    }

    /// Handles one WebSocket message from the server.
    fn message(&mut self, message: WsMessage) -> Option<Ended> {
        match message {
            WsMessage::Text(text) => match serde_json::from_str::<ServerFrame>(&text) {
                Ok(frame) => {
                    self.frame(frame);
                    None
                }
                Err(error) => {
                    tracing::warn!(%error, "client: unreadable frame from the server, ignored");
                    None
                }
            },
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
                let cursor = self.cursors.entry(message.room.clone()).or_insert(0);
                if message.seq <= *cursor {
                    return;
                }
                *cursor = message.seq;
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
                self.cursors.entry(room.name.clone()).or_insert(room.last_seq);
                self.answer(req, frame);
                self.shared.emit(Event::Joined(room));
            }
            ServerFrame::Left { req, ref room } => {
                let room = room.clone();
                self.cursors.remove(&room);
                self.answer(req, frame);
                self.shared.emit(Event::Left { room });
            }
            ServerFrame::Name { email, name } => {
                let mine = self
                    .shared
                    .me
                    .lock()
                    .expect("me lock")
                    .as_ref()
                    .is_some_and(|(me, _)| *me == email);
                if mine {
                    *self.shared.me.lock().expect("me lock") = Some((email.clone(), name.clone()));
                    let waiting = self
                        .pending
                        .iter()
                        .find(|(_, p)| matches!(p.frame, ClientFrame::SetName { .. }));
                    if let Some(&req) = waiting.map(|(req, _)| req) {
                        let frame = ServerFrame::Name { email: email.clone(), name: name.clone() };
                        self.answer(Some(req), frame);
                    }
                }
                self.shared.emit(Event::Name { email, name });
            }
            ServerFrame::MemberJoined { room, member } => {
                self.shared.emit(Event::MemberJoined { room, member })
            }
            ServerFrame::MemberLeft { room, email } => {
                self.shared.emit(Event::MemberLeft { room, email })
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
        if let Some(at) =
            error.id.as_ref().and_then(|id| self.outbox.iter().position(|o| &o.id == id))
        {
            let retry = match error.code {
                ErrorCode::RateLimited => {
                    Some(Duration::from_millis(error.retry_after_ms.unwrap_or(1000)))
                }
                ErrorCode::StoreUnavailable | ErrorCode::ShuttingDown => Some(TRANSIENT_RETRY),
                _ => None,
            };
            match retry {
                // A passing refusal: the message stays in the outbox and goes again later.
                Some(wait) => self.outbox[at].state = Delivery::RetryAt(Instant::now() + wait),
                None => {
                    let outgoing = self.outbox.remove(at).expect("position is in range");
                    let _ = outgoing.ack.send(Err(rejected(&error)));
                    self.sent_off();
                }
            }
            return;
        }
        if let Some(pending) = error.req.and_then(|req| self.pending.remove(&req)) {
            let failure = match error.code {
                ErrorCode::RateLimited => ClientError::RateLimited {
                    retry_after: Duration::from_millis(error.retry_after_ms.unwrap_or(1000)),
                },
                _ => rejected(&error),
            };
            let _ = pending.reply.send(Err(failure));
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

    /// Reconnects with backoff, queueing commands while it waits.
    async fn reconnect(&mut self) -> Result<(Ws, Welcome), Ended> {
        let attempts = self.options.max_reconnect_attempts;
        for attempt in 1..=attempts {
            let delay = backoff(&self.options, attempt);
            self.shared.set_state(ConnectionState::Reconnecting { attempt, delay });
            self.wait_queueing(delay).await?;
            let timeout = self.options.connection_timeout;
            let opened = match open(&self.ws_url, &self.session, timeout).await {
                Ok(mut ws) => {
                    greet(&mut ws, &self.cursors, timeout).await.map(|welcome| (ws, welcome))
                }
                Err(error) => Err(error),
            };
            match opened {
                Ok(connection) => return Ok(connection),
                Err(error) if error.needs_login() => return Err(Ended::Fatal(error)),
                Err(error) => tracing::info!(attempt, %error, "client: reconnection failed"),
            }
        }
        Err(Ended::Fatal(ClientError::GaveUp { attempts }))
    }

    /// Waits, while taking commands into the outbox and the request queue.
    async fn wait_queueing(&mut self, delay: Duration) -> Result<(), Ended> {
        let until = Instant::now() + delay;
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(until) => return Ok(()),
                command = self.commands.recv() => match command {
                    None => return Err(Ended::Closed),
                    Some(command) => self.command(command, None).await?,
                },
            }
        }
    }

    fn give_up(self, error: ClientError) {
        if error.needs_login()
            && let Some(cache) = &self.cache
            && let Err(clear) = cache.clear()
        {
            tracing::warn!(%clear, "client: cannot delete the rejected cached session");
        }
        let state = ConnectionState::GaveUp { reason: error.to_string() };
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

fn rejected(error: &ErrorFrame) -> ClientError {
    ClientError::Rejected { code: error.code, message: error.message.clone() }
}

/// The wait before reconnection attempt `attempt` (from 1): the initial delay doubled per
/// attempt, capped, then between half and all of that at random ("equal jitter").
pub(super) fn backoff(options: &ClientOptions, attempt: u32) -> Duration {
    let doubled =
        options.reconnect_delay.saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)));
    let capped = doubled.min(options.max_reconnect_delay);
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
        ClientFrame::Members { room, .. } => ClientFrame::Members { req, room },
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
        for (attempt, full) in [(1, 1), (2, 2), (3, 4), (4, 8), (5, 10), (9, 10)] {
            let full = Duration::from_secs(full);
            for _ in 0..20 {
                let delay = backoff(&options, attempt);
                assert!(delay >= full / 2 && delay <= full, "attempt {attempt}: {delay:?}");
            }
        }
    }
}
