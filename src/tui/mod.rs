//! `roomz chat`: the full-screen terminal client. It is built on the client library and
//! speaks to the server only through it; it never imports the server.
//!
//! The shape: one loop waits on the terminal, the client's events, the results of work it
//! started, and a one-second tick; each [`update::Event`] goes through [`update::update`],
//! which changes the [`state::State`] and returns [`update::Effect`]s; the loop carries the
//! effects out (their results come back as events) and [`view::draw`]s the state.

pub mod commands;
pub mod editor;
mod logging;
pub mod render;
pub mod scroll;
pub mod settings;
pub mod state;
mod terminal;
pub mod update;
pub mod view;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crossterm::event::{Event as TermEvent, EventStream};
use futures_util::StreamExt;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use self::settings::Settings;
use self::state::{State, Zone};
use self::update::{Effect, Event, PAGE, pending_reads, update};
use crate::client::{AsyncClient, ClientError, config};

/// Events handled between two drawings, at most.
const BATCH: usize = 512;

/// Where `roomz chat` connects when nothing says otherwise.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8000";

/// How `roomz chat` was started.
#[derive(Debug, Clone, Default)]
pub struct ChatOptions {
    /// `--server` or `ROOMZ_SERVER`.
    pub server: Option<String>,
    /// The configuration file (default `~/.roomz/config.toml`).
    pub config_file: Option<PathBuf>,
    /// The session cache (default `~/.roomz/session.json`).
    pub session_file: Option<PathBuf>,
}

/// Why `roomz chat` could not run.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("the terminal cannot be used: {0}")]
    Terminal(#[from] std::io::Error),
}

/// Runs the chat until the user quits.
pub async fn run(options: ChatOptions) -> Result<(), ChatError> {
    let log = logging::init();
    let config_file = options.config_file.or_else(config::default_path);
    let section = match &config_file {
        Some(path) => config::load(path)?,
        None => config::ClientSection::default(),
    };
    let settings = match &config_file {
        Some(path) => Settings::load(path)?,
        None => Settings::default(),
    };
    let server = options.server.or(section.server_url).unwrap_or_else(|| DEFAULT_SERVER.to_owned());
    let mut builder = AsyncClient::builder(&server);
    if let Some(path) = options.session_file.or_else(config::default_session_file) {
        builder = builder.session_cache_file(path);
    }
    if let Some(path) = &config_file {
        builder = builder.config_file(path);
    }
    let client = builder.build()?;
    tracing::info!(server = %client.server_url(), log = ?log, "chat: starting");

    let shown = client.server_url().as_str().trim_end_matches('/').to_owned();
    let mut state = State::new(shown, settings, Zone::Local);
    let mut guard = terminal::Guard::enter()?;
    let result = App::new(client.clone()).run(&mut guard, &mut state).await;
    // The terminal is the user's again at once; unsent messages get a moment to go out.
    drop(guard);
    let unsent = client.outbox_len();
    if unsent > 0 {
        #[allow(clippy::print_stderr)]
        {
            eprintln!("roomz: sending {unsent} unsent message(s) before leaving...");
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), client.close()).await;
    result
}

struct App {
    client: AsyncClient,
    results: mpsc::UnboundedSender<Event>,
    incoming: mpsc::UnboundedReceiver<Event>,
}

impl App {
    fn new(client: AsyncClient) -> Self {
        let (results, incoming) = mpsc::unbounded_channel();
        Self { client, results, incoming }
    }

    async fn run(
        mut self,
        guard: &mut terminal::Guard,
        state: &mut State,
    ) -> Result<(), ChatError> {
        let mut terminal_events = EventStream::new();
        let mut client_events = self.client.events();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut terminate = signal(SignalKind::terminate())?;
        let mut hangup = signal(SignalKind::hangup())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        if self.client.has_session()? {
            self.carry_out(Effect::Connect, guard)?;
        } else {
            state.login(None);
        }
        let mut dirty = true;
        loop {
            if dirty {
                let mut view = state.view;
                guard.terminal.draw(|frame| view = view::draw(frame, state, Instant::now()))?;
                state.view = view;
            }
            let event = tokio::select! {
                event = terminal_events.next() => match event {
                    Some(Ok(TermEvent::Key(key))) => Event::Key(key),
                    Some(Ok(TermEvent::Paste(text))) => Event::Paste(text),
                    Some(Ok(TermEvent::Resize(width, height))) => Event::Resize(width, height),
                    Some(Ok(_)) => {
                        dirty = false;
                        continue;
                    }
                    Some(Err(error)) => return Err(error.into()),
                    None => return Ok(()),
                },
                Some(event) = client_events.recv() => Event::Client(event),
                Some(event) = self.incoming.recv() => event,
                _ = tick.tick() => Event::Tick,
                _ = terminate.recv() => return self.leave(state, guard),
                _ = hangup.recv() => return self.leave(state, guard),
                _ = interrupt.recv() => return self.leave(state, guard),
            };
            dirty = true;
            self.handle(state, event, guard)?;
            // Take what else is waiting before drawing again: a burst of messages is drawn
            // once, and the client's event buffer is drained as fast as it fills.
            for _ in 0..BATCH {
                let Some(event) = client_events
                    .try_recv()
                    .map(Event::Client)
                    .or_else(|| self.incoming.try_recv().ok())
                else {
                    break;
                };
                self.handle(state, event, guard)?;
            }
            if state.quit {
                return self.leave(state, guard);
            }
        }
    }

    fn handle(
        &self,
        state: &mut State,
        event: Event,
        guard: &mut terminal::Guard,
    ) -> Result<(), ChatError> {
        for effect in update(state, event, Instant::now()) {
            self.carry_out(effect, guard)?;
        }
        Ok(())
    }

    /// On the way out: the read markers not sent yet go first.
    fn leave(&self, state: &mut State, guard: &mut terminal::Guard) -> Result<(), ChatError> {
        for effect in pending_reads(state) {
            self.carry_out(effect, guard)?;
        }
        Ok(())
    }

    /// Starts the work an effect asks for; its result comes back as an event.
    fn carry_out(&self, effect: Effect, guard: &mut terminal::Guard) -> Result<(), ChatError> {
        let client = self.client.clone();
        let results = self.results.clone();
        let report = move |event: Event| {
            let _ = results.send(event);
        };
        match effect {
            Effect::RequestLink(email) => {
                tokio::spawn(async move {
                    let result = client.request_magic_link(&email).await;
                    report(Event::LinkRequested { email, result });
                });
            }
            Effect::Login(token) => {
                tokio::spawn(async move {
                    report(Event::LoggedIn(client.login(&token).await.map(|_| ())))
                });
            }
            Effect::Connect => {
                tokio::spawn(async move { report(Event::Connected(client.connect().await)) });
            }
            Effect::Send { local, room, text } => {
                // Queued now, in order; acknowledged later.
                let pending = client.send(&room, &text);
                tokio::spawn(async move { report(Event::Sent { local, result: pending.await }) });
            }
            Effect::Join(room) => {
                tokio::spawn(async move { report(Event::Joined(client.join(&room).await)) });
            }
            Effect::Leave(room) => {
                tokio::spawn(async move {
                    let result = client.leave(&room).await;
                    report(Event::Left { room, result });
                });
            }
            Effect::SetName(name) => {
                tokio::spawn(async move {
                    report(Event::NameSet(client.set_display_name(name.as_deref()).await))
                });
            }
            Effect::Members(room) => {
                tokio::spawn(async move {
                    let result = client.members(&room).await;
                    let at = chrono::Utc::now().timestamp_millis();
                    report(Event::Members { room, result, at });
                });
            }
            Effect::History { room, before } => {
                tokio::spawn(async move {
                    let result = client.history(&room, before, PAGE).await;
                    report(Event::History { room, result });
                });
            }
            Effect::Rooms => {
                tokio::spawn(async move { report(Event::Rooms(client.rooms().await)) });
            }
            Effect::MarkRead { room, seq } => {
                if let Err(error) = client.mark_read(&room, seq) {
                    tracing::debug!(%error, "chat: read marker not sent");
                }
            }
            Effect::Logout => {
                tokio::spawn(async move {
                    report(Event::LoggedOut(client.clear_cached_session().await))
                });
            }
            Effect::Bell => terminal::bell(),
            Effect::Redraw => guard.terminal.clear()?,
            Effect::Quit => {}
        }
        Ok(())
    }
}
