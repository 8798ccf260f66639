//! The client library: [`AsyncClient`] for async programs, [`SyncClient`] for the rest.
//! `roomz chat` is built on it; so are bots and scripts. It speaks to the server only
//! through [`crate::protocol`].
//!
//! A client logs in with a magic-link token (or a cached session), keeps one WebSocket
//! open, reconnects with backoff when it drops, catches every room up from the last message
//! it saw, and sends again what was not acknowledged (the server keeps one copy per message
//! id). Calls wait while the connection is being re-established.
//!
//! ```no_run
//! # async fn run() -> Result<(), roomz::client::ClientError> {
//! use roomz::client::{AsyncClient, Event};
//!
//! let client = AsyncClient::builder("http://localhost:8000")
//!     .session_cache_file("/home/me/.roomz/session.json")
//!     .build()?;
//! if !client.has_session()? {
//!     client.request_magic_link("alice@example.com").await?;
//!     let token = "paste the token or the link from the email here";
//!     client.login(token).await?;
//! }
//! client.connect().await?;
//! let mut events = client.events();
//! let sent = client.send("general", "hello").await?;
//! println!("stored as message {} of {}", sent.seq, sent.room);
//! while let Some(event) = events.recv().await {
//!     if let Event::Message(message) = event {
//!         println!("{}: {}", message.author, message.text);
//!     }
//! }
//! # Ok(())
//! # }
//! ```

pub mod config;
mod connection;
mod error;
mod events;
mod options;
mod session;
mod sync;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use url::Url;

pub use self::connection::Sent;
use self::connection::{Command, Delivery, Outgoing, Shared, Task};
pub use self::error::ClientError;
pub use self::events::{ConnectionState, Event, Events};
pub use self::options::{ClientBuilder, ClientOptions, DISPLAY_NAME_VAR};
pub use self::session::Session;
use self::session::{Api, SessionCache};
pub use self::sync::SyncClient;
use crate::protocol::http::Me;
use crate::protocol::text::{canonical_email, canonical_room};
use crate::protocol::{ClientFrame, ErrorCode, Member, Message, RoomSummary, Seq, ServerFrame};

/// The frame limit assumed before the server announced its own.
const MAX_FRAME_BYTES: usize = 64 * 1024;

/// A roomz client for async (tokio) programs. Cheap to clone: clones share one connection.
#[derive(Clone)]
pub struct AsyncClient {
    inner: Arc<Inner>,
}

struct Inner {
    options: ClientOptions,
    api: Api,
    cache: Option<SessionCache>,
    shared: Arc<Shared>,
    commands: Mutex<Option<mpsc::UnboundedSender<Command>>>,
    /// The connection task, awaited by `close`.
    task: tokio::sync::Mutex<Option<JoinHandle<()>>>,
    /// The `session_token` option was traded already (it works once).
    token_spent: AtomicBool,
    /// Keeps the state channel open for `state()` before and after the task.
    state: watch::Receiver<ConnectionState>,
}

impl std::fmt::Debug for AsyncClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncClient")
            .field("server_url", &self.inner.options.server_url.as_str())
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

/// A page of history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryPage {
    /// Oldest first.
    pub messages: Vec<Message>,
    /// Whether older messages exist (ask again with `before` = the first `seq`).
    pub more: bool,
}

impl AsyncClient {
    /// Starts building a client for the server at `server_url`.
    ///
    /// ```
    /// let client = roomz::AsyncClient::builder("http://localhost:8000").build()?;
    /// assert_eq!(client.options().server_url.as_str(), "http://localhost:8000/");
    /// # Ok::<(), roomz::client::ClientError>(())
    /// ```
    pub fn builder(server_url: &str) -> ClientBuilder {
        ClientBuilder::new(server_url)
    }

    fn from_options(options: ClientOptions) -> Self {
        let (state, state_rx) = watch::channel(ConnectionState::Idle);
        let (events, _) = broadcast::channel(events::EVENT_BUFFER);
        let shared = Arc::new(Shared {
            state,
            outbox: AtomicUsize::new(0),
            events,
            me: Mutex::new(None),
            ended: Mutex::new(None),
            session: Mutex::new(None),
            cursors: Mutex::new(HashMap::new()),
            limits: Mutex::new(None),
        });
        let inner = Inner {
            api: Api::new(options.server_url.clone(), options.connection_timeout),
            cache: options.session_cache_file.clone().map(SessionCache::new),
            shared,
            commands: Mutex::new(None),
            task: tokio::sync::Mutex::new(None),
            token_spent: AtomicBool::new(false),
            state: state_rx,
            options,
        };
        Self { inner: Arc::new(inner) }
    }

    /// The parameters this client was built with.
    pub fn options(&self) -> &ClientOptions {
        &self.inner.options
    }

    /// Whether the client can connect without a new magic link: it has a session, a
    /// `session_token` to trade, or a cached session for this server.
    pub fn has_session(&self) -> Result<bool, ClientError> {
        let in_hand = self.inner.shared.session.lock().expect("session lock").is_some();
        let token = self.inner.options.session_token.is_some()
            && !self.inner.token_spent.load(Ordering::SeqCst);
        if in_hand || token {
            return Ok(true);
        }
        match &self.inner.cache {
            Some(cache) => Ok(cache.load(&self.inner.options.server_url)?.is_some()),
            None => Ok(false),
        }
    }

    /// Asks the server to email a magic link to `email`. The answer is the same whether or
    /// not the address may log in.
    pub async fn request_magic_link(&self, email: &str) -> Result<(), ClientError> {
        let email = canonical_email(email).map_err(|e| ClientError::InvalidEmail {
            email: email.to_owned(),
            reason: e.to_string(),
        })?;
        self.inner.api.request_magic_link(&email).await
    }
    /// Trades a magic-link token (or the whole pasted link) for a session, and caches it
    /// when a `session_cache_file` is set. The token works once: if the cache cannot be
    /// written, the session still serves this client (a warning is logged), and the next
    /// start needs a new link.
    pub async fn login(&self, token: &str) -> Result<Session, ClientError> {
        let session = self.inner.api.verify(token).await?;
        // Someone else logging in on this client: what the last one had seen is not theirs.
        let previous =
            self.inner.shared.me.lock().expect("me lock").as_ref().map(|(email, _)| email.clone());
        if previous.is_some_and(|email| email != session.email) {
            self.inner.shared.cursors.lock().expect("cursor lock").clear();
        }
        *self.inner.shared.session.lock().expect("session lock") = Some(session.clone());
        if let Some(cache) = self.inner.cache.clone() {
            // Written and flushed to disk off the async threads.
            let saving = session.clone();
            let saved = tokio::task::spawn_blocking(move || cache.save(&saving)).await;
            match saved {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    tracing::warn!(%error, "client: the session works, but it could not be cached");
                }
                Err(error) => tracing::warn!(%error, "client: caching the session failed"),
            }
        }
        Ok(session)
    }

    /// The session to connect with: the one in hand, the `session_token` traded now, or
    /// the cached one. A token that no longer works (used already, say, by an earlier run)
    /// falls back to the cached session.
    async fn session(&self) -> Result<Session, ClientError> {
        if let Some(session) = self.inner.shared.session.lock().expect("session lock").clone() {
            return Ok(session);
        }
        let unspent = !self.inner.token_spent.load(Ordering::SeqCst);
        let token = self.inner.options.session_token.as_ref().filter(|_| unspent);
        let traded = match token {
            // Spent only when the server took it or refused it: a login that could not reach
            // the server leaves the token for the next `connect`.
            Some(token) => match self.login(token).await {
                Ok(session) => {
                    self.inner.token_spent.store(true, Ordering::SeqCst);
                    return Ok(session);
                }
                Err(ClientError::InvalidToken) => {
                    self.inner.token_spent.store(true, Ordering::SeqCst);
                    Err(ClientError::InvalidToken)
                }
                Err(other) => return Err(other),
            },
            None => Err(ClientError::NotLoggedIn),
        };
        let cached = match &self.inner.cache {
            Some(cache) => cache.load(&self.inner.options.server_url)?,
            None => None,
        };
        let session = match (cached, traded) {
            (Some(session), _) => session,
            (None, Err(error)) => return Err(error),
            (None, Ok(session)) => session,
        };
        *self.inner.shared.session.lock().expect("session lock") = Some(session.clone());
        Ok(session)
    }

    /// Connects: logs in if needed, opens the WebSocket, and waits for the server's
    /// `welcome`. From then on the client keeps the connection up by itself. A session the
    /// server refuses is [`ClientError::SessionExpired`] (and is removed from the cache).
    pub async fn connect(&self) -> Result<(), ClientError> {
        let mut task = self.inner.task.lock().await;
        let running = self
            .inner
            .commands
            .lock()
            .expect("commands lock")
            .as_ref()
            .is_some_and(|c| !c.is_closed());
        if running {
            return Ok(());
        }
        // A task that is still closing finishes first: two would share one outbox count.
        if let Some(previous) = task.take() {
            let _ = previous.await;
        }
        let session = self.session().await?;
        let ws_url = options::websocket_url(&self.inner.options.server_url);
        let timeout = self.inner.options.connection_timeout;
        let since = self.inner.shared.cursors.lock().expect("cursor lock").clone();
        let opened = match connection::open(&ws_url, &session.session, timeout).await {
            Ok(mut ws) => {
                connection::greet(&mut ws, since, timeout).await.map(|welcome| (ws, welcome))
            }
            Err(error) => Err(error),
        };
        let (ws, welcome) = match opened {
            Ok(connection) => connection,
            Err(error) => {
                if error.needs_login() {
                    self.forget_session()?;
                }
                return Err(error);
            }
        };
        let (commands, receiver) = mpsc::unbounded_channel();
        let mut connection = Task::new(
            self.inner.options.clone(),
            ws_url,
            session.session,
            self.inner.cache.clone(),
            self.inner.shared.clone(),
            receiver,
        );
        // Calls made on hearing `welcome` must find the connection: commands first.
        *self.inner.shared.ended.lock().expect("ended lock") = None;
        *self.inner.commands.lock().expect("commands lock") = Some(commands);
        // Before returning: `identity()` and `state()` are right once `connect` is done.
        connection.welcomed(welcome, true);
        *task = Some(tokio::spawn(connection.run(ws)));
        Ok(())
    }
    /// Forgets the session and what it had seen, so another login starts clean.
    fn forget_session(&self) -> Result<(), ClientError> {
        *self.inner.shared.session.lock().expect("session lock") = None;
        self.inner.shared.cursors.lock().expect("cursor lock").clear();
        *self.inner.shared.me.lock().expect("me lock") = None;
        match &self.inner.cache {
            Some(cache) => cache.clear_if_for(&self.inner.options.server_url),
            None => Ok(()),
        }
    }

    /// Logs out: closes the connection and deletes the cached session. The session itself
    /// stays valid on the server until it expires (`JWT_EXPIRY_DAYS`); removing the address
    /// from `ALLOWED_EMAILS` is what ends every session of an address at once.
    pub async fn clear_cached_session(&self) -> Result<(), ClientError> {
        self.close().await;
        self.forget_session()
    }

    /// Closes the connection once the outbox is empty (waiting at most
    /// `connection_timeout` for the server's acknowledgements), and waits until it is
    /// closed. Messages still unacknowledged then fail with [`ClientError::Closed`].
    pub async fn close(&self) {
        self.begin_close();
        let mut task = self.inner.task.lock().await;
        // A `connect` that held the lock until now may have started a connection: close it.
        self.begin_close();
        let Some(mut running) = task.take() else {
            return;
        };
        let patience = self.inner.options.connection_timeout * 2;
        if !matches!(tokio::time::timeout(patience, &mut running).await, Ok(Ok(()))) {
            // The task did not finish (or panicked): end it, wait until it is gone, and say
            // for it how it ended.
            running.abort();
            let _ = running.await;
            let shared = &self.inner.shared;
            *shared.ended.lock().expect("ended lock") = Some(ClientError::Closed);
            shared.outbox.store(0, Ordering::SeqCst);
            shared.emit(Event::Outbox { unsent: 0 });
            shared.set_state(ConnectionState::Closed);
        }
    }

    /// Asks the connection to close, without waiting.
    fn begin_close(&self) {
        if let Some(commands) = self.inner.commands.lock().expect("commands lock").take() {
            let _ = commands.send(Command::Close);
        }
    }

    /// A receiver of everything that happens from now on. Make it before `connect` to see
    /// the first `welcome`.
    pub fn events(&self) -> Events {
        Events::new(self.inner.shared.events.subscribe())
    }

    /// The state of the connection now.
    pub fn state(&self) -> ConnectionState {
        self.inner.state.borrow().clone()
    }

    /// How many messages are waiting for the server's acknowledgement ("2 unsent").
    pub fn outbox_len(&self) -> usize {
        self.inner.shared.outbox.load(Ordering::SeqCst)
    }

    /// Our email and display name, as of the last `welcome` or name change.
    pub fn identity(&self) -> Option<(String, Option<String>)> {
        self.inner.shared.me.lock().expect("me lock").clone()
    }

    fn command(&self, command: Command) -> Result<(), ClientError> {
        let commands = self.inner.commands.lock().expect("commands lock");
        let Some(sender) = commands.as_ref() else {
            return Err(self.ended().unwrap_or(ClientError::NotLoggedIn));
        };
        sender.send(command).map_err(|_| self.ended().unwrap_or(ClientError::Closed))
    }

    fn ended(&self) -> Option<ClientError> {
        self.inner.shared.ended.lock().expect("ended lock").clone()
    }

    /// Sends a message. It goes into the outbox at once (in call order), out as soon as
    /// there is a connection, and again after a reconnect until the server acknowledges
    /// it; the server never stores it twice. Await the result for the sequence number the
    /// server gave it; dropping the result does not cancel the send.
    pub fn send(&self, room: &str, text: &str) -> PendingSend {
        let id = new_message_id();
        let (ack, receiver) = oneshot::channel();
        let room = canonical_room(room).unwrap_or_else(|_| room.to_owned());
        let outgoing =
            Outgoing { room, id: id.clone(), text: text.to_owned(), ack, state: Delivery::Waiting };
        // Too big for a frame: the server would refuse it, or drop the connection each time
        // it went out again.
        let limits = *self.inner.shared.limits.lock().expect("limits lock");
        let max = limits.map_or(MAX_FRAME_BYTES, |l| l.max_frame_bytes);
        let size = outgoing.frame_len();
        if size > max {
            let refused = Some(ClientError::Rejected {
                code: ErrorCode::FrameTooLarge,
                message: format!("the message takes {size} bytes; the server takes at most {max}"),
            });
            return PendingSend { id, receiver, refused, client: self.clone() };
        }
        // Counted before it is handed over, so `outbox_len` is right when `send` returns;
        // the connection task counts it down when it leaves the outbox.
        self.inner.shared.outbox.fetch_add(1, Ordering::SeqCst);
        let refused = self.command(Command::Send(outgoing)).err();
        if refused.is_some() {
            self.inner.shared.outbox.fetch_sub(1, Ordering::SeqCst);
        }
        PendingSend { id, receiver, refused, client: self.clone() }
    }

    async fn request(&self, frame: ClientFrame) -> Result<ServerFrame, ClientError> {
        let (reply, answer) = oneshot::channel();
        self.command(Command::Request { frame, reply })?;
        answer.await.unwrap_or_else(|_| Err(self.ended().unwrap_or(ClientError::Closed)))
    }

    /// Our rooms, with member and unread counts.
    pub async fn rooms(&self) -> Result<Vec<RoomSummary>, ClientError> {
        match self.request(ClientFrame::Rooms { req: None }).await? {
            ServerFrame::Rooms { rooms, .. } => Ok(rooms),
            other => Err(unexpected(&other)),
        }
    }

    /// Joins a room (creating it when new).
    pub async fn join(&self, room: &str) -> Result<RoomSummary, ClientError> {
        match self.request(ClientFrame::Join { req: None, room: room.to_owned() }).await? {
            ServerFrame::Joined { room, .. } => Ok(room),
            other => Err(unexpected(&other)),
        }
    }

    /// Leaves a room.
    pub async fn leave(&self, room: &str) -> Result<(), ClientError> {
        match self.request(ClientFrame::Leave { req: None, room: room.to_owned() }).await? {
            ServerFrame::Left { .. } => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// Up to `limit` messages before `before` (the newest when `None`), oldest first.
    pub async fn history(
        &self,
        room: &str,
        before: Option<Seq>,
        limit: u32,
    ) -> Result<HistoryPage, ClientError> {
        let frame =
            ClientFrame::History { req: None, room: room.to_owned(), before, limit: Some(limit) };
        match self.request(frame).await? {
            ServerFrame::History { messages, more, .. } => Ok(HistoryPage { messages, more }),
            other => Err(unexpected(&other)),
        }
    }

    /// The members of a room and whether each is online.
    pub async fn members(&self, room: &str) -> Result<Vec<Member>, ClientError> {
        let mut all: Vec<Member> = Vec::new();
        // The server answers a page at a time, by email; a large room takes several, and
        // each counts against the server's request rate: past it, wait as it says.
        loop {
            let after = all.last().map(|m| m.email.clone());
            let frame =
                ClientFrame::Members { req: None, room: room.to_owned(), after: after.clone() };
            let page = match self.request(frame).await {
                Ok(ServerFrame::Members { members, more, .. }) => (members, more),
                Ok(other) => return Err(unexpected(&other)),
                Err(ClientError::RateLimited { retry_after }) if after.is_some() => {
                    tokio::time::sleep(retry_after).await;
                    continue;
                }
                Err(error) => return Err(error),
            };
            let (members, more) = page;
            // Each page must move forward, or a confused server would keep us here.
            let forward = members.last().is_some_and(|m| Some(&m.email) > after.as_ref());
            all.extend(members);
            if !more || !forward {
                return Ok(all);
            }
        }
    }

    /// Marks everything up to `seq` in `room` as read (markers only move forward).
    pub fn mark_read(&self, room: &str, seq: Seq) -> Result<(), ClientError> {
        self.command(Command::Fire(ClientFrame::MarkRead { room: room.to_owned(), seq }))
    }

    /// Sets (or, with `None`, clears) our display name, for everyone at once.
    pub async fn set_display_name(
        &self,
        name: Option<&str>,
    ) -> Result<Option<String>, ClientError> {
        let frame = ClientFrame::SetName { req: None, name: name.map(str::to_owned) };
        match self.request(frame).await? {
            ServerFrame::Name { name, .. } => Ok(name),
            other => Err(unexpected(&other)),
        }
    }

    /// Who the session belongs to, asked of the server over HTTP.
    pub async fn me(&self) -> Result<Me, ClientError> {
        let session = self.session().await?;
        let me = self.inner.api.me(&session.session).await;
        if me.as_ref().is_err_and(ClientError::needs_login) {
            self.forget_session()?;
        }
        me
    }

    /// The server this client talks to.
    pub fn server_url(&self) -> &Url {
        &self.inner.options.server_url
    }
}

fn unexpected(frame: &ServerFrame) -> ClientError {
    ClientError::Protocol(format!("unexpected answer: {}", frame.to_json()))
}

/// A message id: the time in milliseconds and 64 random bits, so ids sort by time and
/// never collide.
fn new_message_id() -> String {
    let mut random = [0u8; 8];
    let bits = match getrandom::fill(&mut random) {
        Ok(()) => u64::from_le_bytes(random),
        Err(_) => std::process::id().into(),
    };
    let millis = chrono::Utc::now().timestamp_millis();
    format!("{millis:x}-{bits:016x}")
}

/// A message on its way: its id now, its acknowledgement when awaited.
#[must_use = "the message is sent either way; await this to learn its sequence number"]
pub struct PendingSend {
    id: String,
    receiver: oneshot::Receiver<Result<Sent, ClientError>>,
    refused: Option<ClientError>,
    client: AsyncClient,
}

impl PendingSend {
    /// The id the message is sent under (the `id` of its `message` event).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Why the message was refused before it reached the outbox, if it was.
    pub fn refused(&self) -> Option<&ClientError> {
        self.refused.as_ref()
    }
}

impl Future for PendingSend {
    type Output = Result<Sent, ClientError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some(error) = self.refused.take() {
            return Poll::Ready(Err(error));
        }
        match Pin::new(&mut self.receiver).poll(cx) {
            Poll::Ready(Ok(result)) => Poll::Ready(result),
            Poll::Ready(Err(_)) => {
                Poll::Ready(Err(self.client.ended().unwrap_or(ClientError::Closed)))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_are_valid_and_distinct() {
        let a = new_message_id();
        let b = new_message_id();
        assert_ne!(a, b);
        assert!(a.len() <= 64 && a.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-'), "{a}");
    }

    #[tokio::test]
    async fn calls_before_connect_say_what_is_missing() {
        let client =
            AsyncClient::builder("http://127.0.0.1:9").config_file("/nonexistent").build().unwrap();
        assert_eq!(client.rooms().await, Err(ClientError::NotLoggedIn));
        assert_eq!(client.send("general", "x").await, Err(ClientError::NotLoggedIn));
        assert_eq!(client.connect().await, Err(ClientError::NotLoggedIn));
        assert!(!client.has_session().unwrap());
        assert_eq!(client.state(), ConnectionState::Idle);
    }
}
