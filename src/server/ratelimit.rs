//! The per-user message rate: a token bucket per address, shared by all of that user's
//! connections, refilled at `rate` per second up to `burst`.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::protocol::Millis;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Millis,
}

/// Token buckets by email.
#[derive(Debug)]
pub struct MessageRate {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl MessageRate {
    pub fn new(per_second: u32, burst: u32) -> Self {
        Self {
            per_second: f64::from(per_second),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::default(),
        }
    }

    /// Takes one message from `email`'s bucket, or says in how many milliseconds one
    /// will be there.
    pub fn take(&self, email: &str, now: Millis) -> Result<(), u64> {
        let mut buckets = self.buckets.lock().expect("rate lock");
        let bucket =
            buckets.entry(email.to_owned()).or_insert(Bucket { tokens: self.burst, updated: now });
        let elapsed = (now - bucket.updated).max(0) as f64 / 1000.0;
        bucket.tokens = (bucket.tokens + elapsed * self.per_second).min(self.burst);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(());
        }
        let wait_secs = (1.0 - bucket.tokens) / self.per_second;
        Err((wait_secs * 1000.0).ceil() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_rate() {
        let rate = MessageRate::new(2, 3);
        for _ in 0..3 {
            assert!(rate.take("a", 0).is_ok());
        }
        assert_eq!(rate.take("a", 0), Err(500));
        assert!(rate.take("b", 0).is_ok(), "buckets are per user");
        assert!(rate.take("a", 500).is_ok());
        assert!(rate.take("a", 500).is_err());
    }
}
