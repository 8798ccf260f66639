//! Sessions: HS256 JWTs with `sub` (the email), `iat`, `exp`, `iss` and `aud`, and the
//! checks every request and WebSocket makes before it is served.
//!
//! Every session names the key that signed it (`kid`, a fingerprint that says nothing of
//! the key). A previous key (`JWT_PREVIOUS_SECRET_KEY`) still verifies the sessions it
//! signed, so a key can be rotated without logging everyone out; new sessions are always
//! signed with the current key.

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

/// A key that verifies sessions, and its fingerprint.
struct VerifyingKey {
    kid: String,
    decoding: DecodingKey,
}

/// Signs and checks sessions with the server's key (and checks with the previous one).
pub struct SessionKeys {
    encoding: EncodingKey,
    current: VerifyingKey,
    previous: Option<VerifyingKey>,
    validation: Validation,
    lifetime_ms: Millis,
}

impl std::fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionKeys")
            .field("kid", &self.current.kid)
            .field("previous_kid", &self.previous.as_ref().map(|k| &k.kid))
            .field("lifetime_ms", &self.lifetime_ms)
            .finish_non_exhaustive()
    }
}

/// The fingerprint of a key, as sessions name it: 12 hex digits of a SHA-256 of the key
/// (which cannot be worked back to the key).
pub fn key_id(secret: &Secret) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new()
        .chain_update(b"roomz session key ")
        .chain_update(secret.expose().as_bytes())
        .finalize();
    digest[..6].iter().map(|b| format!("{b:02x}")).collect()
}

fn verifying(secret: &Secret) -> VerifyingKey {
    let non_empty = "JWT keys were checked to be at least 32 characters";
    VerifyingKey {
        kid: key_id(secret),
        decoding: DecodingKey::from_secret(secret.expose().as_bytes()).expect(non_empty),
    }
}

impl SessionKeys {
    /// Keys from the configured secret, which the configuration checked is at least 32
    /// characters long (only an empty secret is refused by the JWT library).
    pub fn new(secret: &Secret, lifetime_days: u32) -> Self {
        let non_empty = "JWT_SECRET_KEY was checked to be at least 32 characters";
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iat", "sub", "iss", "aud"]);
        // Expiry is checked below against the server's clock, which tests can move.
        validation.validate_exp = false;
        Self {
            encoding: EncodingKey::from_secret(secret.expose().as_bytes()).expect(non_empty),
            current: verifying(secret),
            previous: None,
            validation,
            lifetime_ms: Millis::from(lifetime_days) * 24 * 60 * 60 * 1000,
        }
    }

    /// Also accepts the sessions the previous key signed, until it is removed.
    pub fn with_previous(mut self, previous: Option<&Secret>) -> Self {
        self.previous = previous.map(verifying);
        self
    }

    /// The fingerprint of the key new sessions are signed with.
    pub fn kid(&self) -> &str {
        &self.current.kid
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
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(self.current.kid.clone());
        let token = jsonwebtoken::encode(&header, &claims, &self.encoding)
            .expect("HS256 signing with an in-memory key cannot fail");
        (token, Session { email: email.into(), expires_at: claims.exp * 1000 })
    }

    /// Checks signature, algorithm, issuer, audience, issue time and expiry, with the key
    /// the session names (one without a `kid`, from before keys were named, is tried with
    /// each key).
    pub fn verify(&self, token: &str, now: Millis) -> Result<Session, Rejected> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| Rejected::Invalid)?;
        let keys: Vec<&VerifyingKey> = match header.kid.as_deref() {
            Some(kid) => {
                let known = std::iter::once(&self.current).chain(&self.previous);
                known.filter(|k| k.kid == kid).collect()
            }
            None => std::iter::once(&self.current).chain(&self.previous).collect(),
        };
        let claims = keys
            .iter()
            .find_map(|key| {
                jsonwebtoken::decode::<Claims>(token, &key.decoding, &self.validation).ok()
            })
            .ok_or(Rejected::Invalid)?
            .claims;
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
    fn sessions_name_their_key_and_the_previous_key_still_verifies() {
        let old = Secret::new("o".repeat(32));
        let new = Secret::new("n".repeat(32));
        let now = 1_700_000_000_000;
        let (from_old, _) = SessionKeys::new(&old, 30).issue("a@x.io", now);
        let header = jsonwebtoken::decode_header(&from_old).unwrap();
        assert_eq!(header.kid.as_deref(), Some(key_id(&old).as_str()));
        assert_eq!(key_id(&old).len(), 12);
        assert!(!key_id(&old).contains('o'), "the fingerprint is not the key");

        let rotated = SessionKeys::new(&new, 30).with_previous(Some(&old));
        assert!(rotated.verify(&from_old, now).is_ok(), "sessions of the previous key go on");
        let (from_new, _) = rotated.issue("a@x.io", now);
        assert_eq!(jsonwebtoken::decode_header(&from_new).unwrap().kid, Some(key_id(&new)));
        assert!(rotated.verify(&from_new, now).is_ok());
        let without_previous = SessionKeys::new(&new, 30);
        assert_eq!(without_previous.verify(&from_old, now), Err(Rejected::Invalid));
        assert!(without_previous.verify(&from_new, now).is_ok());

        // A session with no kid (signed before keys were named) is tried with each key.
        let claims = Claims {
            sub: "a@x.io".into(),
            iat: now / 1000,
            exp: now / 1000 + 60,
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
        };
        let key = EncodingKey::from_secret(old.expose().as_bytes()).unwrap();
        let unnamed = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap();
        assert!(rotated.verify(&unnamed, now).is_ok());
        assert_eq!(without_previous.verify(&unnamed, now), Err(Rejected::Invalid));
        // A kid naming another key is not tried with these.
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("ffffffffffff".into());
        let stranger = jsonwebtoken::encode(&header, &claims, &key).unwrap();
        assert_eq!(rotated.verify(&stranger, now), Err(Rejected::Invalid));
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
