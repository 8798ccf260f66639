//! The HTTP side of login: ask for a magic link, look at it, redeem it, and ask who the
//! session belongs to. One log line per auth event; no token or session is ever logged.

use std::net::SocketAddr;
use std::sync::LazyLock;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256};

use super::links::{hash_label, hash_token, magic_link, new_token};
use super::session::{Authenticated, session_cookie};
use crate::protocol::http::{LinkRequest, LinkRequested, Me, SessionGranted, VerifyRequest};
use crate::protocol::text::{MAX_EMAIL_LEN, canonical_email, token_from_paste};
use crate::server::admission::{client_ip, network_of};
use crate::server::clock::rfc3339;
use crate::server::error::AppError;
use crate::server::mailer::LinkMail;
use crate::server::metrics::{AuthEvent, Limited};
use crate::server::state::AppState;
use crate::server::store::{LinkQuota, LinkState};

/// The magic-link rate limit counts requests over this window.
const RATE_WINDOW_MS: i64 = 60 * 60 * 1000;
/// Longest token field accepted (a whole pasted link fits).
const MAX_TOKEN_FIELD: usize = 4096;

const PAGE_TEMPLATE: &str = include_str!("../../../assets/verify.html");
const PAGE_SCRIPT: &str = include_str!("../../../assets/verify.js");

/// The Content-Security-Policy of the page: nothing but its own inline style and script.
static PAGE_CSP: LazyLock<String> = LazyLock::new(|| {
    let hash = STANDARD.encode(Sha256::digest(PAGE_SCRIPT.as_bytes()));
    format!(
        "default-src 'none'; style-src 'unsafe-inline'; script-src 'sha256-{hash}'; \
         base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
});

const ACCEPTED: &str = "If this address may use this server, a login link is on its way. \
                        It works once and expires soon.";

/// `POST /auth/request`: the same answer for every address, allowed or not.
pub async fn request_link(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Json<LinkRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<LinkRequested>), AppError> {
    let now = state.clock.now_ms();
    let remote = client_ip(peer, &headers, &state.config.trusted_proxies);
    if let Err(wait_ms) = state.link_request_rate.take(&network_of(remote), now) {
        let secs = wait_ms.div_ceil(1000);
        tracing::warn!(%remote, retry_after_secs = secs, "auth: rate limit exceeded (requests from one network)");
        state.metrics.limited(Limited::LinksPerNetwork);
        return Err(AppError::rate_limited(
            format!("too many login links were requested from your network; try again in {secs} s"),
            secs,
        ));
    }
    let Json(body) = body?;
    if body.email.len() > MAX_EMAIL_LEN * 4 {
        return Err(AppError::bad_request("invalid_email", "the email field is too long"));
    }
    let email = canonical_email(&body.email)
        .map_err(|e| AppError::bad_request("invalid_email", e.message()))?;
    let limit = state.config.magic_link_rate_limit;
    if let LinkQuota::Exceeded { retry_after_ms } =
        state.store.record_link_request(&email, now, RATE_WINDOW_MS, limit).await?
    {
        let secs = retry_after_ms.div_ceil(1000);
        tracing::warn!(email = %email, retry_after_secs = secs, "auth: rate limit exceeded (magic link requests)");
        state.metrics.limited(Limited::LinksPerAddress);
        let minutes = secs.div_ceil(60);
        return Err(AppError::rate_limited(
            format!(
                "too many login links were requested for this address; try again in {minutes} minute(s)"
            ),
            secs,
        ));
    }
    let allowed = state.allowlist.contains(&email);
    tracing::info!(email = %email, allowed, "auth: magic link requested");
    state.metrics.auth(AuthEvent::LinkRequested);
    if allowed {
        // Made and mailed in the background, so allowed and unknown addresses are
        // answered alike, and equally fast.
        let state2 = state.clone();
        state.tasks.spawn(async move { issue_and_mail(state2, email).await });
    }
    Ok((StatusCode::ACCEPTED, Json(LinkRequested { message: ACCEPTED.to_owned() })))
}

async fn issue_and_mail(state: AppState, email: String) {
    let token = match new_token() {
        Ok(token) => token,
        Err(error) => {
            tracing::error!(%error, "auth: no randomness for a token; link not sent");
            return;
        }
    };
    let now = state.clock.now_ms();
    let minutes = state.config.magic_link_expiry_minutes;
    let expires_at = now + i64::from(minutes) * 60 * 1000;
    if let Err(error) = state.store.create_magic_link(&email, &token.hash, now, expires_at).await {
        tracing::error!(%error, email = %email, "auth: cannot store a magic link; link not sent");
        return;
    }
    let mail = LinkMail {
        to: email.clone(),
        link: magic_link(&state.public_url, &token.token),
        valid_minutes: minutes,
        idempotency_key: format!("roomz-link-{}", hash_label(&token.hash)),
    };
    match state.mailer.send(&mail).await {
        Ok(()) => {
            tracing::info!(email = %email, via = state.mailer.kind(), "auth: magic link sent");
            state.metrics.auth(AuthEvent::LinkSent);
        }
        Err(error) => {
            tracing::error!(email = %email, via = state.mailer.kind(), %error, "auth: magic link not sent");
            state.metrics.auth(AuthEvent::LinkFailed);
        }
    }
}

/// `GET /auth/verify?token=...`: a page that shows the token to paste into `roomz chat`.
/// It never uses the token up: mail scanners open links too.
pub async fn verify_page(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Response, AppError> {
    let token = query
        .as_deref()
        .and_then(|q| url::form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == "token"))
        .map(|(_, v)| v.into_owned());
    let Some(token) = token.as_deref().and_then(token_from_paste) else {
        let content = "<p>This link is incomplete. Open the whole link from the email, or request a \
                       new one from <code>roomz chat</code>.</p>";
        return Ok(page(StatusCode::BAD_REQUEST, "Incomplete link", content));
    };
    let state_of_link =
        state.store.magic_link_state(&hash_token(token), state.clock.now_ms()).await?;
    if state_of_link == LinkState::Unusable {
        let content = "<p>This link was already used, has expired, or was replaced by a newer one.</p>\
                       <p>Request a new link from <code>roomz chat</code>.</p>";
        return Ok(page(StatusCode::OK, "This link no longer works", content));
    }
    let content = format!(
        "<p>Paste this token into <code>roomz chat</code> at the login prompt:</p>\
         <div class=\"token\"><code id=\"token\">{token}</code>\
         <button id=\"copy\" type=\"button\">Copy</button></div>\
         <p class=\"note\">The token works once. Nothing has happened yet: you are logged in only \
         when you paste it.</p>"
    );
    Ok(page(StatusCode::OK, "Your roomz login token", &content))
}

fn page(status: StatusCode, headline: &str, content: &str) -> Response {
    let html = PAGE_TEMPLATE
        .replace("{{HEADLINE}}", headline)
        .replace("{{CONTENT}}", content)
        .replace("{{SCRIPT}}", PAGE_SCRIPT);
    let mut response = (status, Html(html)).into_response();
    let headers = response.headers_mut();
    let csp = HeaderValue::from_str(&PAGE_CSP).expect("the CSP is ASCII");
    headers.insert(header::CONTENT_SECURITY_POLICY, csp);
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

/// `POST /auth/verify`: trades a magic-link token (or the whole link) for a session.
pub async fn verify_token(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Json<VerifyRequest>, JsonRejection>,
) -> Result<(HeaderMap, Json<SessionGranted>), AppError> {
    let now = state.clock.now_ms();
    let network = network_of(client_ip(peer, &headers, &state.config.trusted_proxies));
    // Taken up front (so that many tokens at once all count) and given back when the token
    // works. Past the limit a good token still works: nobody sharing the network can lock
    // the others out; a wrong one gets `429` instead of `401`.
    let over_limit = state.failed_redemptions.take(&network, now).err();
    let Json(body) = body?;
    if body.token.len() > MAX_TOKEN_FIELD {
        return Err(AppError::bad_request("invalid_token", "the token field is too long"));
    }
    let refused = || {
        state.metrics.auth(AuthEvent::Rejected);
        if let Some(wait_ms) = over_limit {
            let secs = wait_ms.div_ceil(1000);
            tracing::warn!(network = %network, retry_after_secs = secs, "auth: rate limit exceeded (wrong tokens from one network)");
            state.metrics.limited(Limited::WrongTokens);
            return AppError::rate_limited(
                format!("too many wrong login tokens from your network; try again in {secs} s"),
                secs,
            );
        }
        AppError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            "this login link is wrong, expired or already used; request a new one",
        )
    };
    let Some(token) = token_from_paste(&body.token) else {
        tracing::info!(reason = "malformed", "auth: verification rejected");
        return Err(refused());
    };
    let Some(email) = state.store.redeem_magic_link(&hash_token(token), now).await? else {
        tracing::info!(reason = "unknown, used or expired token", "auth: verification rejected");
        return Err(refused());
    };
    if !state.allowlist.contains(&email) {
        tracing::info!(email = %email, reason = "address no longer allowed", "auth: verification rejected");
        return Err(refused());
    }
    let (session, issued) = state.sessions.issue(&email, now);
    if over_limit.is_none() {
        state.failed_redemptions.refund(&network);
    }
    tracing::info!(email = %email, "auth: verified, session issued");
    state.metrics.auth(AuthEvent::Verified);
    let max_age = (issued.expires_at - now) / 1000;
    let cookie = session_cookie(&session, max_age, state.cookie_secure);
    let mut headers = HeaderMap::new();
    headers.insert(header::SET_COOKIE, HeaderValue::from_str(&cookie).expect("cookie is ASCII"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    let granted = SessionGranted { session, email, expires_at: rfc3339(issued.expires_at) };
    Ok((headers, Json(granted)))
}

/// `GET /api/me`: who this session belongs to.
pub async fn me(State(state): State<AppState>, auth: Authenticated) -> Result<Json<Me>, AppError> {
    let email = auth.session.email.to_string();
    let display_name = state.store.display_name(&email).await?;
    Ok(Json(Me { email, display_name, session_expires_at: rfc3339(auth.session.expires_at) }))
}
