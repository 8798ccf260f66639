//! Sessions on the client side: the HTTP calls of the login (ask for a magic link, trade
//! its token for a session, ask who we are), and the session cache file that spares a new
//! magic link on every start.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use url::Url;

use super::error::ClientError;
use super::options::endpoint;
use crate::protocol::http::{
    AUTH_REQUEST_PATH, AUTH_VERIFY_PATH, ErrorBody, LinkRequest, ME_PATH, Me, SessionGranted,
    VerifyRequest,
};

/// A session this client holds.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// The server it belongs to.
    pub server_url: String,
    /// The address it was granted to.
    pub email: String,
    /// The JWT: never printed.
    pub session: String,
    /// RFC 3339.
    pub expires_at: String,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("server_url", &self.server_url)
            .field("email", &self.email)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// The HTTP side of the server, as the client uses it.
#[derive(Debug, Clone)]
pub struct Api {
    http: reqwest::Client,
    server: Url,
    timeout: Duration,
}

impl Api {
    pub fn new(server: Url, timeout: Duration) -> Self {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .unwrap_or_default();
        Self { http, server, timeout }
    }

    /// `POST /auth/request`.
    pub async fn request_magic_link(&self, email: &str) -> Result<(), ClientError> {
        let body = LinkRequest { email: email.to_owned() };
        let response = self
            .call(self.http.post(endpoint(&self.server, AUTH_REQUEST_PATH)).json(&body))
            .await?;
        match response.status() {
            status if status.is_success() => Ok(()),
            _ => Err(error_of(response).await),
        }
    }

    /// `POST /auth/verify`: the token (or the pasted link) for a session.
    pub async fn verify(&self, token: &str) -> Result<Session, ClientError> {
        let body = VerifyRequest { token: token.trim().to_owned() };
        let response =
            self.call(self.http.post(endpoint(&self.server, AUTH_VERIFY_PATH)).json(&body)).await?;
        match response.status() {
            StatusCode::OK => {
                let granted: SessionGranted = response
                    .json()
                    .await
                    .map_err(|e| ClientError::Protocol(format!("unreadable session: {e}")))?;
                Ok(Session {
                    server_url: self.server.to_string(),
                    email: granted.email,
                    session: granted.session,
                    expires_at: granted.expires_at,
                })
            }
            StatusCode::UNAUTHORIZED => Err(ClientError::InvalidToken),
            _ => Err(error_of(response).await),
        }
    }

    /// `GET /api/me`.
    pub async fn me(&self, session: &str) -> Result<Me, ClientError> {
        let request = self.http.get(endpoint(&self.server, ME_PATH)).bearer_auth(session);
        let response = self.call(request).await?;
        match response.status() {
            StatusCode::OK => response
                .json()
                .await
                .map_err(|e| ClientError::Protocol(format!("unreadable /api/me: {e}"))),
            _ => Err(error_of(response).await),
        }
    }

    async fn call(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, ClientError> {
        request.send().await.map_err(|e| transport_error(&self.server, self.timeout, &e))
    }
}

/// What a failed HTTP call or WebSocket attempt means to the caller.
pub fn transport_error(server: &Url, timeout: Duration, error: &reqwest::Error) -> ClientError {
    if error.is_timeout() {
        return ClientError::Timeout { after: timeout };
    }
    ClientError::Unreachable { url: server.to_string(), reason: root_cause(error) }
}

/// The innermost cause of an error, which is the one that says what happened.
pub fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// Turns an HTTP error answer into a [`ClientError`].
async fn error_of(response: reqwest::Response) -> ClientError {
    let status = response.status();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let body = response.json::<ErrorBody>().await.ok();
    match status {
        StatusCode::UNAUTHORIZED => ClientError::SessionExpired,
        StatusCode::FORBIDDEN => ClientError::AccessRevoked,
        StatusCode::TOO_MANY_REQUESTS => {
            let secs = retry_after.or(body.and_then(|b| b.retry_after)).unwrap_or(60);
            ClientError::RateLimited { retry_after: Duration::from_secs(secs) }
        }
        _ => ClientError::Http {
            status: status.as_u16(),
            message: body.map_or_else(|| status.to_string(), |b| b.error),
        },
    }
}

/// The session cache file.
#[derive(Debug, Clone)]
pub struct SessionCache {
    path: PathBuf,
}

impl SessionCache {
    pub fn new(path: PathBuf) -> Self {
        Self { path }
    }

    fn error(&self, reason: impl ToString) -> ClientError {
        ClientError::SessionCache { path: self.path.clone(), reason: reason.to_string() }
    }

    /// The cached session for `server`, if there is one. A file for another server counts
    /// as none; a file that cannot be read or parsed is an error.
    pub fn load(&self, server: &Url) -> Result<Option<Session>, ClientError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(self.error(error)),
        };
        let session: Session = serde_json::from_str(&text).map_err(|e| {
            self.error(format!("not a session file ({e}); delete it and log in again"))
        })?;
        Ok((session.server_url == server.as_str()).then_some(session))
    }

    /// Writes the session: to a temporary file readable only by its owner, flushed to disk,
    /// then renamed over the cache, so a crash never leaves half a file.
    pub fn save(&self, session: &Session) -> Result<(), ClientError> {
        let dir =
            self.path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        create_private_dir(dir).map_err(|e| self.error(e))?;
        let json = serde_json::to_vec_pretty(session).map_err(|e| self.error(e))?;
        // A fresh file with a random name, created exclusively and readable only by its
        // owner (tempfile's default): no one can plant a file or a link in its place.
        let mut file = tempfile::Builder::new()
            .prefix(".session-")
            .tempfile_in(dir)
            .map_err(|e| self.error(e))?;
        file.write_all(&json).map_err(|e| self.error(e))?;
        file.as_file().sync_all().map_err(|e| self.error(e))?;
        file.persist(&self.path).map_err(|e| self.error(e.error))?;
        Ok(())
    }

    /// Deletes the cache if it holds a session for `server` (a session of another server
    /// is left alone). A missing or unreadable file is left as it is.
    pub fn clear_if_for(&self, server: &Url) -> Result<(), ClientError> {
        match self.load(server) {
            Ok(Some(_)) => self.clear(),
            _ => Ok(()),
        }
    }

    /// Deletes the cache (logging out). A missing file is fine.
    pub fn clear(&self) -> Result<(), ClientError> {
        match std::fs::remove_file(&self.path) {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(error) => Err(self.error(error)),
        }
    }
}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.exists() {
        return Ok(());
    }
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(server: &str) -> Session {
        Session {
            server_url: server.to_owned(),
            email: "a@x.io".into(),
            session: "jwt".into(),
            expires_at: "2030-01-01T00:00:00.000Z".into(),
        }
    }

    #[test]
    fn the_cache_is_private_atomic_and_per_server() {
        let dir = tempfile::tempdir().unwrap();
        let cache = SessionCache::new(dir.path().join("nested/session.json"));
        let server = Url::parse("http://localhost:8000").unwrap();
        assert_eq!(cache.load(&server).unwrap(), None);
        cache.save(&session(server.as_str())).unwrap();
        assert_eq!(cache.load(&server).unwrap(), Some(session(server.as_str())));
        let other = Url::parse("http://elsewhere:8000").unwrap();
        assert_eq!(cache.load(&other).unwrap(), None, "a session of another server is not used");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&cache.path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("nested")).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file stays behind");
        cache.clear().unwrap();
        cache.clear().unwrap();
        assert_eq!(cache.load(&server).unwrap(), None);
        std::fs::write(&cache.path, "garbage").unwrap();
        assert!(matches!(cache.load(&server), Err(ClientError::SessionCache { .. })));
        assert!(!format!("{:?}", session("s")).contains("jwt"), "Debug hides the session");
    }
}
