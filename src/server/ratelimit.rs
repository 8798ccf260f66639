//! Token buckets by key: the per-user message rate (keyed by email, shared by all of a
//! user's connections) and the per-network magic-link request rate (keyed by IP address).

use std::collections::HashMap;
use std::sync::Mutex;

use crate::protocol::Millis;

/// Past this many keys, idle buckets are dropped before a new one is made.
const MAX_KEYS: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Millis,
}

/// One token bucket per key, refilled at `per_second` up to `burst`.
#[derive(Debug)]
pub struct TokenBuckets {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl TokenBuckets {
    pub fn new(per_second: f64, burst: u32) -> Self {
        Self { per_second, burst: f64::from(burst.max(1)), buckets: Mutex::default() }
    }

    /// Takes one token from `key`'s bucket, or says in how many milliseconds one will be
    /// there.
    pub fn take(&self, key: &str, now: Millis) -> Result<(), u64> {
        let mut buckets = self.buckets.lock().expect("rate lock");
        if buckets.len() >= MAX_KEYS && !buckets.contains_key(key) {
            self.drop_idle(&mut buckets, now);
        }
        let bucket =
            buckets.entry(key.to_owned()).or_insert(Bucket { tokens: self.burst, updated: now });
        bucket.tokens = self.refilled(bucket, now);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(());
        }
        let wait_secs = (1.0 - bucket.tokens) / self.per_second;
        Err((wait_secs * 1000.0).ceil() as u64)
    }

    /// Gives back a token taken for something that turned out not to count.
    pub fn refund(&self, key: &str) {
        if let Some(bucket) = self.buckets.lock().expect("rate lock").get_mut(key) {
            bucket.tokens = (bucket.tokens + 1.0).min(self.burst);
        }
    }

    /// Forgets the buckets that are full again: they behave as new ones would.
    pub fn forget_idle(&self, now: Millis) {
        let mut buckets = self.buckets.lock().expect("rate lock");
        self.drop_idle(&mut buckets, now);
    }

    fn drop_idle(&self, buckets: &mut HashMap<String, Bucket>, now: Millis) {
        buckets.retain(|_, bucket| self.refilled(bucket, now) < self.burst);
    }

    fn refilled(&self, bucket: &Bucket, now: Millis) -> f64 {
        let elapsed = (now - bucket.updated).max(0) as f64 / 1000.0;
        (bucket.tokens + elapsed * self.per_second).min(self.burst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_rate() {
        let rate = TokenBuckets::new(2.0, 3);
        for _ in 0..3 {
            assert!(rate.take("a", 0).is_ok());
        }
        assert_eq!(rate.take("a", 0), Err(500));
        assert!(rate.take("b", 0).is_ok(), "buckets are per key");
        assert!(rate.take("a", 500).is_ok());
        assert!(rate.take("a", 500).is_err());
    }

    #[test]
    fn idle_buckets_are_forgotten() {
        let rate = TokenBuckets::new(1.0, 2);
        rate.take("a", 0).unwrap();
        rate.take("b", 0).unwrap();
        rate.take("b", 0).unwrap();
        rate.forget_idle(1000);
        assert_eq!(rate.buckets.lock().unwrap().len(), 1, "a is full again, b is not");
    }
}
