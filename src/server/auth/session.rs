//! Sessions: HS256 JWTs with `sub` (the email), `iat`, `exp`, `iss` and `aud`, and the
//! checks every request and WebSocket makes before it is served.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::header::{AUTHORIZATION, COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::protocol::Millis;
use crate::protocol::http::SESSION_COOKIE;
use crate::server::config::Secret;
use crate::server::error::AppError;
use crate::server::state::AppState;

/// The `iss` and `aud` of every roomz session.
const ISSUER: &str = "roomz";
const AUDIENCE: &str = "roomz";

/// How far in the future `iat` may be (clocks of several nodes disagree a little).
const IAT_SKEW_SECS: i64 = 60;

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    iat: i64,
    exp: i64,
    iss: String,
    aud: String,
}

/// A verified session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub email: Arc<str>,
    pub expires_at: Millis,
}

impl Session {
    /// Whether the session has run out at `now`.
    pub fn expired_at(&self, now: Millis) -> bool {
        now >= self.expires_at
    }
}

/// Why a session token was refused. Logged as a reason; never shown with the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    Invalid,
    Expired,
}

/// Signs and checks sessions with the server's key.
pub struct SessionKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    lifetime_ms: Millis,
}

impl std::fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionKeys")
            .field("lifetime_ms", &self.lifetime_ms)
            .finish_non_exhaustive()
    }
}

impl SessionKeys {
    /// Keys from the configured secret, which the configuration checked is at least 32
    /// characters long (only an empty secret is refused by the JWT library).
    pub fn new(secret: &Secret, lifetime_days: u32) -> Self {
        let bytes = secret.expose().as_bytes();
        let non_empty = "JWT_SECRET_KEY was checked to be at least 32 characters";
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iat", "sub", "iss", "aud"]);
        // Expiry is checked below against the server's clock, which tests can move.
        validation.validate_exp = false;
        Self {
            encoding: EncodingKey::from_secret(bytes).expect(non_empty),
            decoding: DecodingKey::from_secret(bytes).expect(non_empty),
            validation,
            lifetime_ms: Millis::from(lifetime_days) * 24 * 60 * 60 * 1000,
        }
    }

    /// Signs a session for `email` starting at `now`.
    pub fn issue(&self, email: &str, now: Millis) -> (String, Session) {
        let expires_at = now + self.lifetime_ms;
        let claims = Claims {
            sub: email.to_owned(),
            iat: now / 1000,
            exp: expires_at / 1000,
            iss: ISSUER.to_owned(),
            aud: AUDIENCE.to_owned(),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 signing with an in-memory key cannot fail");
        (token, Session { email: email.into(), expires_at: claims.exp * 1000 })
    }

    /// Checks signature, algorithm, issuer, audience, issue time and expiry.
    pub fn verify(&self, token: &str, now: Millis) -> Result<Session, Rejected> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|_| Rejected::Invalid)?;
        let claims = data.claims;
        let now_secs = now / 1000;
        if claims.iat > now_secs + IAT_SKEW_SECS || claims.sub.is_empty() {
            return Err(Rejected::Invalid);
        }
        if now_secs >= claims.exp {
            return Err(Rejected::Expired);
        }
        Ok(Session { email: claims.sub.into(), expires_at: claims.exp.saturating_mul(1000) })
    }
}

/// How a request carried its session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carrier {
    Bearer,
    Cookie,
}

/// The session token of a request: `Authorization: Bearer` first, then the cookie.
pub fn token_from_headers(headers: &HeaderMap) -> Option<(&str, Carrier)> {
    let bearer = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim);
    if let Some(token) = bearer {
        return Some((token, Carrier::Bearer));
    }
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| (value.trim(), Carrier::Cookie))
}

/// The `Set-Cookie` value that stores a session in a browser.
pub fn session_cookie(token: &str, max_age_secs: i64, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!(
        "{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_secs}{secure}"
    )
}

/// A request's session, checked against the keys, the clock and the allow-list.
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub session: Session,
    pub carrier: Carrier,
}

/// Authenticates a request from its headers.
pub fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Authenticated, AppError> {
    let Some((token, carrier)) = token_from_headers(headers) else {
        return Err(AppError::unauthorized(
            "log in first: send the session as Authorization: Bearer <session>",
        ));
    };
    let session = match state.sessions.verify(token, state.clock.now_ms()) {
        Ok(session) => session,
        Err(reason) => {
            tracing::info!(?reason, ?carrier, "auth: session rejected");
            let message = match reason {
                Rejected::Expired => "session expired: request a new link",
                Rejected::Invalid => "invalid session: log in again",
            };
            return Err(AppError::unauthorized(message));
        }
    };
    if !state.allowlist.contains(&session.email) {
        tracing::info!(email = %session.email, "auth: session of an address no longer allowed");
        return Err(AppError::new(
            StatusCode::FORBIDDEN,
            "access_revoked",
            "this address is no longer allowed on this server",
        ));
    }
    Ok(Authenticated { session, carrier })
}

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        authenticate(state, &parts.headers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(secret: &str) -> SessionKeys {
        SessionKeys::new(&Secret::new(secret), 30)
    }

    #[test]
    fn issued_sessions_verify_until_they_expire() {
        let k = keys("k".repeat(32).as_str());
        let now = 1_700_000_000_000;
        let (token, session) = k.issue("a@x.io", now);
        assert_eq!(k.verify(&token, now).unwrap(), session);
        assert_eq!(k.verify(&token, session.expires_at), Err(Rejected::Expired));
        assert_eq!(keys(&"j".repeat(32)).verify(&token, now), Err(Rejected::Invalid));
    }

    #[test]
    fn cookie_and_bearer() {
        let mut headers = HeaderMap::new();
        headers.insert(COOKIE, "a=b; roomz_session=tok; c=d".parse().unwrap());
        assert_eq!(token_from_headers(&headers), Some(("tok", Carrier::Cookie)));
        headers.insert(AUTHORIZATION, "Bearer bt".parse().unwrap());
        assert_eq!(token_from_headers(&headers), Some(("bt", Carrier::Bearer)));
        assert!(session_cookie("t", 5, true).ends_with("Max-Age=5; Secure"));
    }
}
