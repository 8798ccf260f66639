//! `GET /ws`: the upgrade (session and Origin checks, socket limits) and the life of one
//! connection: the reader loop here, the writer in [`writer`], the frame handlers in
//! [`frames`].

mod frames;
mod writer;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use futures_util::StreamExt;
use futures_util::stream::SplitStream;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use self::frames::Connection;
use self::writer::Writer;
use super::admission::{Admitted, Full, client_ip, network_of};
use super::auth::session::{Carrier, Session, authenticate};
use super::error::AppError;
use super::hub::{CloseReason, Outbound};
use super::metrics::Limited;
use super::state::AppState;
use crate::protocol::http::WS_PATH;

/// The largest WebSocket message the transport reads at all; larger ones end the
/// connection. Below it, frames over `limits.max_frame_bytes` get an error and the
/// connection stays.
const TRANSPORT_MAX_MESSAGE: usize = 1 << 20;
/// The read buffer: small, because most connections are idle most of the time (it grows
/// for a larger frame). Clients send little; a busy one costs a few more reads.
const READ_BUFFER: usize = 1024;
/// How much is gathered before a write: a batch of deliveries goes out in one `write`.
/// The buffer grows only when a connection is busy.
const WRITE_BUFFER: usize = 16 * 1024;
/// Most bytes waiting to be written to one socket before writes fail. It must hold the
/// largest frame the server sends (history pages are kept under 512 KiB).
const MAX_WRITE_BUFFER: usize = 4 << 20;
/// How long a connection may stay silent (no frame, no pong) before it counts as dead.
const IDLE_TIMEOUT: Duration = Duration::from_secs(75);
/// How long a client has to send `hello`.
const HELLO_TIMEOUT: Duration = Duration::from_secs(15);

/// Checks the session (and, for a cookie, the Origin), then upgrades.
pub async fn upgrade(
    State(state): State<AppState>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, AppError> {
    let auth = authenticate(&state, &headers)?;
    if auth.carrier == Carrier::Cookie {
        check_origin(&state, &headers)?;
    }
    let client = client_ip(remote, &headers, &state.config.trusted_proxies);
    let admitted =
        state.connections.admit(auth.session.email.clone(), network_of(client)).map_err(|full| {
            let (count, whose) = match full {
                Full::User(count) => (count, "for this user"),
                Full::Network(count) => (count, "from this address"),
            };
            tracing::warn!(email = %auth.session.email, %client, ?full, "ws: connection refused, too many open");
            state.metrics.limited(Limited::Connections);
            AppError::rate_limited(
                format!("{count} connections are open {whose} already; close one first"),
                10,
            )
        })?;
    let ws = ws.map_err(|rejection| {
        AppError::new(
            rejection.status(),
            "websocket_required",
            format!("{WS_PATH} takes WebSocket upgrades only ({})", rejection.body_text()),
        )
    })?;
    let session = auth.session;
    let ws = ws
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(MAX_WRITE_BUFFER)
        .max_message_size(TRANSPORT_MAX_MESSAGE)
        .max_frame_size(TRANSPORT_MAX_MESSAGE);
    Ok(ws.on_upgrade(move |socket| {
        // The connection gets a task of its own that holds only its reader loop; axum's
        // upgrade task, which also holds what the upgrade took, ends here. The task is
        // tracked, so shutdown can wait for it.
        let reading = start(state.clone(), socket, session, client, admitted);
        state.tasks.spawn(reading);
        std::future::ready(())
    }))
}

/// A cookie is sent by browsers whatever page made the request: accept it for a WebSocket
/// only from pages of this server.
fn check_origin(state: &AppState, headers: &HeaderMap) -> Result<(), AppError> {
    let expected = state.public_url.origin().ascii_serialization();
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    if origin == Some(expected.as_str()) {
        return Ok(());
    }
    tracing::warn!(?origin, "ws: cookie session from a foreign origin refused");
    Err(AppError::new(
        StatusCode::FORBIDDEN,
        "bad_origin",
        format!(
            "a session cookie is accepted only from {expected}; other clients send Authorization: Bearer"
        ),
    ))
}

/// Sets a connection up and returns its reader loop. Nothing here is awaited, so none of it
/// (the socket before it is split, the writer before it is spawned) takes room in the
/// future every open connection keeps.
fn start(
    state: AppState,
    socket: WebSocket,
    session: Session,
    remote: IpAddr,
    admitted: Admitted,
) -> impl Future<Output = ()> {
    let (sink, stream) = socket.split();
    let (conn, queue) = state.hub.connection(session.email.clone());
    tracing::info!(conn = conn.id, email = %conn.email, %remote, "ws: connected");

    let writer = Writer {
        sink,
        store: state.store.clone(),
        signal: conn.signal(),
        shutdown: state.shutdown.clone(),
        conn_id: conn.id,
    };
    let writer = tokio::spawn(writer.run(queue));
    let expires_in = Duration::from_millis(
        u64::try_from(session.expires_at - state.clock.now_ms()).unwrap_or(0),
    );
    let connection = Connection::new(state.clone(), conn, session);
    read(state, stream, writer, connection, expires_in, admitted)
}

/// The reader loop of one connection: frames in, handled one at a time, until the
/// connection ends for any reason; then it is unregistered and its writer waited for.
async fn read(
    state: AppState,
    mut stream: SplitStream<WebSocket>,
    mut writer: JoinHandle<&'static str>,
    mut connection: Connection,
    expires_in: Duration,
    // Counted against the limits until this loop ends.
    _admitted: Admitted,
) {
    let mut writer_done = false;
    let signal = connection.conn().signal();
    let expiry = tokio::time::sleep(expires_in);
    tokio::pin!(expiry);
    // Every future of the loop is made once, outside it: the loop turns on every frame.
    let closed = signal.closed();
    let shutdown = state.shutdown.cancelled();
    tokio::pin!(closed, shutdown);
    // The silence deadline moves only when its timer fires (to the last frame plus the
    // allowance), not on every frame.
    let mut last_frame = Instant::now();
    let silence = tokio::time::sleep_until(last_frame + HELLO_TIMEOUT);
    tokio::pin!(silence);

    let ended = loop {
        let next = tokio::select! {
            biased;
            () = &mut closed => break "closed by the server",
            () = &mut shutdown => break "server shutting down",
            ended = &mut writer => {
                writer_done = true;
                break ended.unwrap_or("the writer failed");
            }
            () = &mut expiry => {
                // A client that only listens still loses its session on time.
                connection.conn().close(CloseReason::SessionExpired);
                break "session expired";
            }
            () = &mut silence => {
                let allowed = if connection.greeted() { IDLE_TIMEOUT } else { HELLO_TIMEOUT };
                if last_frame.elapsed() < allowed {
                    silence.as_mut().reset(last_frame + allowed);
                    continue;
                }
                if connection.greeted() {
                    break "idle timeout";
                }
                connection.conn().close(CloseReason::NoHello);
                break "no hello in time";
            }
            next = stream.next() => next,
        };
        last_frame = Instant::now();
        let message = match next {
            None | Some(Ok(WsMessage::Close(_))) => break "closed by the client",
            Some(Err(_)) => break "transport error (oversized or malformed frame, or a reset)",
            Some(Ok(message)) => message,
        };
        if !connection.still_allowed() {
            break "access ended";
        }
        match message {
            // Boxed: the handlers' state is large and only lives while a frame is handled,
            // so an idle connection does not carry it.
            WsMessage::Text(text) => Box::pin(connection.handle(&text)).await,
            WsMessage::Binary(_) => connection.binary(),
            WsMessage::Ping(_) => connection.conn().push(Outbound::Flush),
            WsMessage::Pong(_) | WsMessage::Close(_) => {}
        }
    };

    let conn = connection.finish();
    tracing::info!(conn = conn.id, email = %conn.email, reason = ended, "ws: disconnected");
    if state.cluster.is_shared() {
        // Boxed: the database calls' state would otherwise sit in every connection's task.
        Box::pin(async {
            // As in `hello`: one user's comings and goings on this node, one at a time.
            let _membership = state.membership.lock(&conn.email).await;
            if let Some(rooms) = state.hub.unregister(&conn, false) {
                state.cluster.present(&state.hub, &conn.email, &rooms, false).await;
            }
        })
        .await;
    } else {
        state.hub.unregister(&conn, true);
    }
    drop(conn);
    if !writer_done {
        let _ = writer.await;
    }
}
