//! The router: every HTTP path, the body limit, and one log line per request (its path
//! only: a query string can hold a magic-link token).

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{Request, StatusCode};
use axum::routing::get;
use axum::routing::post;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

use super::auth::routes;
use super::error::AppError;
use super::state::AppState;
use super::ws;
use crate::protocol::http::{AUTH_REQUEST_PATH, AUTH_VERIFY_PATH, HEALTH_PATH, ME_PATH, WS_PATH};

/// Largest HTTP request body.
const MAX_BODY: usize = 16 * 1024;

/// Builds the server's routes around `state`.
pub fn router(state: AppState) -> Router {
    let trace = TraceLayer::new_for_http()
        .make_span_with(|request: &Request<_>| {
            tracing::info_span!("http", method = %request.method(), path = %request.uri().path())
        })
        .on_request(())
        .on_response(DefaultOnResponse::new().level(Level::INFO))
        .on_failure(());
    Router::new()
        .route(AUTH_REQUEST_PATH, post(routes::request_link))
        .route(AUTH_VERIFY_PATH, get(routes::verify_page).post(routes::verify_token))
        .route(ME_PATH, get(routes::me))
        .route(WS_PATH, get(ws::upgrade))
        .route(HEALTH_PATH, get(health))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(trace)
        .with_state(state)
}

async fn health() -> &'static str {
    "ok\n"
}

async fn not_found() -> AppError {
    AppError::new(StatusCode::NOT_FOUND, "not_found", "no such path on this server")
}

async fn method_not_allowed() -> AppError {
    AppError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this path does not take that method; docs/PROTOCOL.md lists each path's method",
    )
}
