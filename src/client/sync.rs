//! `SyncClient`: the same API as [`AsyncClient`], blocking, for programs without an async
//! runtime of their own. It runs one in a background thread.

use std::time::Duration;

use super::{
    AsyncClient, ClientBuilder, ClientError, ClientOptions, ConnectionState, Event, Events,
    HistoryPage, Sent, Session,
};
use crate::protocol::http::Me;
use crate::protocol::{Member, RoomSummary, Seq};

/// A blocking roomz client.
///
/// ```no_run
/// use roomz::SyncClient;
///
/// let client = SyncClient::new(
///     roomz::AsyncClient::builder("http://localhost:8000").session_token("paste the token here"),
/// )?;
/// client.connect()?;
/// let sent = client.send("general", "hello from a script")?;
/// println!("message {} in {}", sent.seq, sent.room);
/// # Ok::<(), roomz::client::ClientError>(())
/// ```
#[derive(Debug)]
pub struct SyncClient {
    client: AsyncClient,
    events: std::sync::Mutex<Events>,
    /// Taken when the client is dropped, to shut it down the right way for the context.
    runtime: Option<tokio::runtime::Runtime>,
}

impl SyncClient {
    /// Builds the client from a builder (see [`AsyncClient::builder`] for every parameter).
    /// Fails inside an async runtime, where blocking would stall it. Nothing is sent
    /// before [`SyncClient::connect`].
    ///
    /// ```
    /// use std::time::Duration;
    /// use roomz::{AsyncClient, SyncClient};
    ///
    /// let client = SyncClient::new(
    ///     AsyncClient::builder("http://localhost:8000")
    ///         .session_token("paste the token here")
    ///         .connection_timeout(Duration::from_secs(5)),
    /// )?;
    /// assert_eq!(client.options().connection_timeout, Duration::from_secs(5));
    /// assert!(client.has_session()?, "the token will be traded on connect");
    /// assert_eq!(client.outbox_len(), 0);
    /// # Ok::<(), roomz::client::ClientError>(())
    /// ```
    pub fn new(builder: ClientBuilder) -> Result<Self, ClientError> {
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(ClientError::InsideRuntime);
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("roomz-client")
            .enable_all()
            .build()
            .map_err(|e| ClientError::Runtime(e.to_string()))?;
        let client = builder.build()?;
        let events = std::sync::Mutex::new(client.events());
        Ok(Self { client, events, runtime: Some(runtime) })
    }

    fn block<T>(&self, work: impl Future<Output = T>) -> Result<T, ClientError> {
        inside_runtime()?;
        let runtime = self.runtime.as_ref().ok_or(ClientError::Closed)?;
        Ok(runtime.block_on(work))
    }

    /// The asynchronous client inside, sharing this one's connection.
    pub fn as_async(&self) -> &AsyncClient {
        &self.client
    }

    /// The parameters this client was built with.
    pub fn options(&self) -> &ClientOptions {
        self.client.options()
    }

    /// Whether it can connect without a new magic link (see [`AsyncClient::has_session`]).
    pub fn has_session(&self) -> Result<bool, ClientError> {
        self.client.has_session()
    }

    /// Asks the server to email a magic link to `email`.
    pub fn request_magic_link(&self, email: &str) -> Result<(), ClientError> {
        self.block(self.client.request_magic_link(email))?
    }

    /// Trades a magic-link token (or the whole pasted link) for a session, and caches it.
    pub fn login(&self, token: &str) -> Result<Session, ClientError> {
        self.block(self.client.login(token))?
    }

    /// Logs in if needed, connects, and returns once the server said `welcome`.
    pub fn connect(&self) -> Result<(), ClientError> {
        self.block(self.client.connect())?
    }

    /// Logs out: closes the connection and deletes the cached session.
    pub fn clear_cached_session(&self) -> Result<(), ClientError> {
        self.block(self.client.clear_cached_session())?
    }

    /// Closes the connection and waits until it is closed.
    pub fn close(&self) {
        let _ = self.block(self.client.close());
    }

    /// The state of the connection now.
    pub fn state(&self) -> ConnectionState {
        self.client.state()
    }

    /// How many messages are waiting for the server's acknowledgement.
    pub fn outbox_len(&self) -> usize {
        self.client.outbox_len()
    }

    /// Our email and display name, as of the last `welcome` or name change.
    pub fn identity(&self) -> Option<(String, Option<String>)> {
        self.client.identity()
    }

    /// The server this client talks to.
    pub fn server_url(&self) -> &url::Url {
        self.client.server_url()
    }

    /// Queues a message and returns its id at once, without waiting for the server: it
    /// goes out like [`SyncClient::send`]'s, in order, and again after a reconnect. Its
    /// `message` event carries this id; [`SyncClient::outbox_len`] counts those still
    /// waiting.
    pub fn send_queued(&self, room: &str, text: &str) -> Result<String, ClientError> {
        inside_runtime()?;
        let pending = self.client.send(room, text);
        let id = pending.id().to_owned();
        match pending.refused() {
            Some(error) => Err(error.clone()),
            None => Ok(id),
        }
    }

    /// Sends a message and waits for the server's acknowledgement.
    pub fn send(&self, room: &str, text: &str) -> Result<Sent, ClientError> {
        // Checked first: inside a runtime nothing is sent at all.
        inside_runtime()?;
        let pending = self.client.send(room, text);
        self.block(pending)?
    }

    /// Our rooms, with member and unread counts.
    pub fn rooms(&self) -> Result<Vec<RoomSummary>, ClientError> {
        self.block(self.client.rooms())?
    }

    /// Joins a room (creating it when new).
    pub fn join(&self, room: &str) -> Result<RoomSummary, ClientError> {
        self.block(self.client.join(room))?
    }

    /// Leaves a room.
    pub fn leave(&self, room: &str) -> Result<(), ClientError> {
        self.block(self.client.leave(room))?
    }

    /// Up to `limit` messages before `before` (the newest when `None`), oldest first.
    pub fn history(
        &self,
        room: &str,
        before: Option<Seq>,
        limit: u32,
    ) -> Result<HistoryPage, ClientError> {
        self.block(self.client.history(room, before, limit))?
    }

    /// The members of a room and whether each is online.
    pub fn members(&self, room: &str) -> Result<Vec<Member>, ClientError> {
        self.block(self.client.members(room))?
    }

    /// Marks everything up to `seq` in `room` as read.
    pub fn mark_read(&self, room: &str, seq: Seq) -> Result<(), ClientError> {
        inside_runtime()?;
        self.client.mark_read(room, seq)
    }

    /// Sets (or, with `None`, clears) our display name, for everyone at once.
    pub fn set_display_name(&self, name: Option<&str>) -> Result<Option<String>, ClientError> {
        self.block(self.client.set_display_name(name))?
    }

    /// Who the session belongs to, from the server (`GET /api/me`).
    pub fn me(&self) -> Result<Me, ClientError> {
        self.block(self.client.me())?
    }

    /// The next event, waiting at most `timeout`; `None` when none came in time or the
    /// client is gone. Events are kept from the moment the client was made; a program that
    /// reads none for a long time gets [`Event::Lagged`] and fetches what it missed with
    /// [`SyncClient::history`].
    pub fn next_event(&self, timeout: Duration) -> Option<Event> {
        let mut events = self.events.lock().expect("events lock");
        self.block(async { tokio::time::timeout(timeout, events.recv()).await.ok().flatten() })
            .ok()
            .flatten()
    }
}

/// Blocking inside an async runtime would stall it (or panic): refuse instead.
fn inside_runtime() -> Result<(), ClientError> {
    match tokio::runtime::Handle::try_current() {
        Ok(_) => Err(ClientError::InsideRuntime),
        Err(_) => Ok(()),
    }
}

impl Drop for SyncClient {
    fn drop(&mut self) {
        let Some(runtime) = self.runtime.take() else {
            return;
        };
        if inside_runtime().is_ok() {
            // Let the connection finish its outbox and close cleanly.
            runtime.block_on(self.client.close());
            runtime.shutdown_timeout(Duration::from_secs(1));
        } else {
            // Dropped inside async code: no blocking allowed there.
            self.client.begin_close();
            runtime.shutdown_background();
        }
    }
}
