//! The mailer: how a magic link reaches its address. `console` prints it on standard output
//! (never through the log); `resend` sends it through the Resend API with a timeout and
//! retries.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use resend_rs::types::CreateEmailBaseOptions;

use crate::server::config::{MailerConfig, Secret};

/// One magic link to deliver.
#[derive(Debug, Clone)]
pub struct LinkMail {
    pub to: String,
    pub link: String,
    pub valid_minutes: u32,
    /// Names this delivery for the provider, so a retried send is not sent twice.
    pub idempotency_key: String,
}

/// A delivery that failed for good.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct MailError(String);

/// Something that delivers magic links.
#[async_trait]
pub trait Mailer: Send + Sync + 'static {
    /// Delivers one link.
    async fn send(&self, mail: &LinkMail) -> Result<(), MailError>;

    /// Short name for logs (`console`, `resend`).
    fn kind(&self) -> &'static str;
}

/// Builds the mailer the configuration asks for.
pub fn from_config(config: &MailerConfig, from: &str) -> Result<Arc<dyn Mailer>, MailError> {
    Ok(match config {
        MailerConfig::Console => Arc::new(ConsoleMailer::stdout()),
        MailerConfig::Resend { api_key, base_url } => {
            Arc::new(ResendMailer::new(api_key, base_url.clone(), from, RESEND_TIMEOUT)?)
        }
    })
}

type Sink = Arc<dyn Fn(&str) + Send + Sync>;

/// Prints each link as one line: `magic link for EMAIL (valid N minutes): LINK`.
pub struct ConsoleMailer {
    sink: Sink,
}

impl ConsoleMailer {
    /// Prints to standard output.
    pub fn stdout() -> Self {
        Self::with_sink(|line| {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            // A closed stdout must not take the server down; the log says a link was sent.
            let _ = writeln!(out, "{line}").and_then(|()| out.flush());
        })
    }

    /// Hands each line to `sink` instead (tests read links this way).
    pub fn with_sink(sink: impl Fn(&str) + Send + Sync + 'static) -> Self {
        Self { sink: Arc::new(sink) }
    }
}

#[async_trait]
impl Mailer for ConsoleMailer {
    async fn send(&self, mail: &LinkMail) -> Result<(), MailError> {
        (self.sink)(&format!(
            "magic link for {} (valid {} minutes): {}",
            mail.to, mail.valid_minutes, mail.link
        ));
        Ok(())
    }

    fn kind(&self) -> &'static str {
        "console"
    }
}

/// How long one call to the Resend API may take, unless told otherwise.
pub const RESEND_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts per email, the first included.
const RESEND_ATTEMPTS: u32 = 4;
/// Longest wait between attempts.
const RESEND_MAX_DELAY: Duration = Duration::from_secs(8);

/// Sends links through the Resend API.
pub struct ResendMailer {
    client: resend_rs::Resend,
    from: String,
}

impl ResendMailer {
    /// A mailer that gives each call to the API at most `timeout`, then tries again.
    pub fn new(
        api_key: &Secret,
        base_url: url::Url,
        from: &str,
        timeout: Duration,
    ) -> Result<Self, MailError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(|e| MailError(format!("cannot build the HTTP client: {e}")))?;
        let config =
            resend_rs::ConfigBuilder::new(api_key.expose()).base_url(base_url).client(http).build();
        Ok(Self { client: resend_rs::Resend::with_config(config), from: from.to_owned() })
    }

    fn email(&self, mail: &LinkMail) -> CreateEmailBaseOptions {
        let minutes = mail.valid_minutes;
        let link = &mail.link;
        let text = format!(
            "Open this link to log in to roomz:\n\n{link}\n\n\
             The page shows a token: paste it (or this whole link) into `roomz chat`.\n\
             The link works once and expires in {minutes} minutes.\n\
             If you did not ask for it, ignore this email."
        );
        let escaped = html_escape(link);
        let html = format!(
            "<p>Open this link to log in to roomz:</p>\
             <p><a href=\"{escaped}\">{escaped}</a></p>\
             <p>The page shows a token: paste it (or this whole link) into <code>roomz chat</code>. \
             The link works once and expires in {minutes} minutes.</p>\
             <p>If you did not ask for it, ignore this email.</p>"
        );
        CreateEmailBaseOptions::new(&self.from, [mail.to.as_str()], "Your roomz login link")
            .with_text(&text)
            .with_html(&html)
    }
}

/// Whether an error from Resend is worth another attempt, and how long to wait first.
fn retry_delay(error: &resend_rs::Error, attempt: u32) -> Option<Duration> {
    let backoff = Duration::from_millis(500 * 2u64.pow(attempt)).min(RESEND_MAX_DELAY);
    match error {
        resend_rs::Error::RateLimit { ratelimit_reset, .. } => {
            Some(ratelimit_reset.map_or(backoff, Duration::from_secs).min(RESEND_MAX_DELAY))
        }
        resend_rs::Error::Resend(response) if response.status_code >= 500 => Some(backoff),
        resend_rs::Error::Http(e) if e.is_timeout() || e.is_connect() || e.is_request() => {
            Some(backoff)
        }
        resend_rs::Error::Http(e) if e.status().is_some_and(|s| s.is_server_error()) => {
            Some(backoff)
        }
        // An answer that is not Resend's JSON (resend-rs keeps no status for it) usually
        // comes from a proxy in trouble; the idempotency key makes another try harmless.
        resend_rs::Error::Parse { .. } => Some(backoff),
        _ => None,
    }
}

#[async_trait]
impl Mailer for ResendMailer {
    async fn send(&self, mail: &LinkMail) -> Result<(), MailError> {
        let mut attempt = 0;
        loop {
            let email = self.email(mail).with_idempotency_key(&mail.idempotency_key);
            let error = match self.client.emails.send(email).await {
                Ok(_) => return Ok(()),
                Err(error) => error,
            };
            attempt += 1;
            match retry_delay(&error, attempt - 1) {
                Some(delay) if attempt < RESEND_ATTEMPTS => {
                    tracing::warn!(attempt, ?delay, error = %short(&error), "mailer: Resend failed, retrying");
                    tokio::time::sleep(delay).await;
                }
                _ => return Err(MailError(format!("Resend refused the email: {}", short(&error)))),
            }
        }
    }

    fn kind(&self) -> &'static str {
        "resend"
    }
}

/// An error's text, cut short: a proxy's HTML page has no place in a log line.
fn short(error: &resend_rs::Error) -> String {
    let text = error.to_string().replace(['\n', '\r'], " ");
    match text.char_indices().nth(200) {
        Some((at, _)) => format!("{}...", &text[..at]),
        None => text,
    }
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}
