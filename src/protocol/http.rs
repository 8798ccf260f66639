//! The JSON bodies of the HTTP API (`/auth/*`, `/api/me`) and its paths.

use serde::{Deserialize, Serialize};

/// Path to ask for a magic link.
pub const AUTH_REQUEST_PATH: &str = "/auth/request";
/// Path of the magic link itself (GET shows the token) and of its redemption (POST).
pub const AUTH_VERIFY_PATH: &str = "/auth/verify";
/// Path that tells a session who it belongs to.
pub const ME_PATH: &str = "/api/me";
/// Path of the WebSocket.
pub const WS_PATH: &str = "/ws";
/// Path of the liveness check.
pub const HEALTH_PATH: &str = "/healthz";
/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "roomz_session";

/// Body of `POST /auth/request`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkRequest {
    pub email: String,
}

/// Answer to `POST /auth/request`: the same whether or not the address is allowed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkRequested {
    pub message: String,
}

/// Body of `POST /auth/verify`: the token, or the whole magic link as pasted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyRequest {
    pub token: String,
}

/// Answer to `POST /auth/verify`: a session (a JWT) for `email`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionGranted {
    pub session: String,
    pub email: String,
    /// RFC 3339, UTC.
    pub expires_at: String,
}

/// Answer to `GET /api/me`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Me {
    pub email: String,
    pub display_name: Option<String>,
    /// RFC 3339, UTC.
    pub session_expires_at: String,
}

/// Body of every 4xx and 5xx answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Machine-readable, snake_case (`invalid_token`, `rate_limited`, ...).
    pub code: String,
    /// For people: what happened and what to do.
    pub error: String,
    /// For `rate_limited`: seconds until a new request can succeed (also `Retry-After`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
}
