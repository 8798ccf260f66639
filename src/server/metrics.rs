//! What `GET /metrics` reports, in the Prometheus text format: counters the server's parts
//! bump as they work (plain atomics: a delivery costs one relaxed add), the open
//! connections, and how long commits take. Served only on `ROOMZ_METRICS_BIND`, an address
//! of its own, so that the public listener never shows them.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the commit-time buckets, in seconds.
const COMMIT_BUCKETS: [f64; 12] =
    [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 5.0];

/// An authentication event, as the log names them too.
#[derive(Debug, Clone, Copy)]
pub enum AuthEvent {
    LinkRequested,
    LinkSent,
    LinkFailed,
    Verified,
    Rejected,
}

/// A limit that turned something away.
#[derive(Debug, Clone, Copy)]
pub enum Limited {
    LinksPerAddress,
    LinksPerNetwork,
    WrongTokens,
    Messages,
    Requests,
    Connections,
}

/// The server's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    messages: AtomicU64,
    duplicates: AtomicU64,
    deliveries: AtomicU64,
    slow_dropped: AtomicU64,
    auth: [AtomicU64; 5],
    limited: [AtomicU64; 6],
    store_errors: AtomicU64,
    commit_buckets: [AtomicU64; COMMIT_BUCKETS.len()],
    commit_count: AtomicU64,
    commit_micros: AtomicU64,
}

fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

impl Metrics {
    /// Messages stored (`new`), and resends answered with their first copy.
    pub fn stored(&self, new: u64, duplicates: u64) {
        bump(&self.messages, new);
        bump(&self.duplicates, duplicates);
    }

    /// Messages handed to connections' queues.
    pub fn delivered(&self, count: u64) {
        bump(&self.deliveries, count);
    }

    /// A connection dropped because it did not read fast enough.
    pub fn slow_dropped(&self) {
        bump(&self.slow_dropped, 1);
    }

    pub fn auth(&self, event: AuthEvent) {
        bump(&self.auth[event as usize], 1);
    }

    pub fn limited(&self, limit: Limited) {
        bump(&self.limited[limit as usize], 1);
    }

    /// A batch committed (or failed) after `took`.
    pub fn commit(&self, took: Duration, ok: bool) {
        if !ok {
            bump(&self.store_errors, 1);
        }
        let secs = took.as_secs_f64();
        if let Some(at) = COMMIT_BUCKETS.iter().position(|bound| secs <= *bound) {
            bump(&self.commit_buckets[at], 1);
        }
        bump(&self.commit_count, 1);
        bump(&self.commit_micros, u64::try_from(took.as_micros()).unwrap_or(u64::MAX));
    }

    /// The text of `GET /metrics`, with the gauges the caller reads now.
    pub fn render(&self, connections: usize, users_online: usize) -> String {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let mut out = String::with_capacity(4096);
        let mut metric = |name: &str, kind: &str, help: &str, samples: &[(String, u64)]| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        };
        let plain = |value: u64| vec![(String::new(), value)];
        metric(
            "roomz_connections",
            "gauge",
            "Open WebSocket connections that said hello.",
            &plain(connections as u64),
        );
        metric(
            "roomz_users_online",
            "gauge",
            "Users with at least one open connection here.",
            &plain(users_online as u64),
        );
        metric("roomz_messages_total", "counter", "Messages stored.", &plain(get(&self.messages)));
        metric(
            "roomz_message_resends_total",
            "counter",
            "Resent messages answered with their first copy.",
            &plain(get(&self.duplicates)),
        );
        metric(
            "roomz_deliveries_total",
            "counter",
            "Messages queued to connections.",
            &plain(get(&self.deliveries)),
        );
        metric(
            "roomz_slow_connections_dropped_total",
            "counter",
            "Connections dropped for not reading (queue full).",
            &plain(get(&self.slow_dropped)),
        );
        let events = ["requested", "sent", "send_failed", "verified", "rejected"];
        let auth: Vec<(String, u64)> = events
            .iter()
            .zip(&self.auth)
            .map(|(event, counter)| (format!("{{event=\"{event}\"}}"), get(counter)))
            .collect();
        metric("roomz_auth_events_total", "counter", "Magic-link and session events.", &auth);
        let limits = [
            "links_per_address",
            "links_per_network",
            "wrong_tokens",
            "messages",
            "requests",
            "connections",
        ];
        let limited: Vec<(String, u64)> = limits
            .iter()
            .zip(&self.limited)
            .map(|(limit, counter)| (format!("{{limit=\"{limit}\"}}"), get(counter)))
            .collect();
        metric(
            "roomz_rate_limited_total",
            "counter",
            "Requests, messages and connections a limit turned away.",
            &limited,
        );
        metric(
            "roomz_store_errors_total",
            "counter",
            "Commits of messages the store refused.",
            &plain(get(&self.store_errors)),
        );

        let _ = writeln!(
            out,
            "# HELP roomz_commit_seconds Time to store a batch of messages, acknowledgements waiting.\n\
             # TYPE roomz_commit_seconds histogram"
        );
        let mut cumulative = 0;
        for (bound, counter) in COMMIT_BUCKETS.iter().zip(&self.commit_buckets) {
            cumulative += get(counter);
            let _ = writeln!(out, "roomz_commit_seconds_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let count = get(&self.commit_count);
        let _ = writeln!(out, "roomz_commit_seconds_bucket{{le=\"+Inf\"}} {count}");
        let seconds = get(&self.commit_micros) as f64 / 1e6;
        let _ =
            writeln!(out, "roomz_commit_seconds_sum {seconds}\nroomz_commit_seconds_count {count}");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_format() {
        let metrics = Metrics::default();
        metrics.stored(3, 1);
        metrics.auth(AuthEvent::Verified);
        metrics.limited(Limited::WrongTokens);
        metrics.commit(Duration::from_micros(700), true);
        metrics.commit(Duration::from_secs(10), false);
        let text = metrics.render(2, 1);
        for line in [
            "# TYPE roomz_connections gauge",
            "roomz_connections 2",
            "roomz_messages_total 3",
            "roomz_message_resends_total 1",
            "roomz_auth_events_total{event=\"verified\"} 1",
            "roomz_rate_limited_total{limit=\"wrong_tokens\"} 1",
            "roomz_store_errors_total 1",
            "roomz_commit_seconds_bucket{le=\"0.0005\"} 0",
            "roomz_commit_seconds_bucket{le=\"0.001\"} 1",
            "roomz_commit_seconds_bucket{le=\"5\"} 1",
            "roomz_commit_seconds_bucket{le=\"+Inf\"} 2",
            "roomz_commit_seconds_count 2",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
    }
}
