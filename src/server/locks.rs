//! Per-key async locks, so the membership changes of one user (a `hello` reading their rooms,
//! a `join`, a `leave`) happen one at a time across all of that user's connections.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::OwnedMutexGuard;

/// One lock per key, made on first use. Keys are users, so the map stays as small as the
/// allow-list.
#[derive(Debug, Default)]
pub struct KeyedLocks {
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl KeyedLocks {
    pub fn new() -> Self {
        Self::default()
    }

    /// Forgets the locks nobody holds or waits for.
    pub fn forget_idle(&self) {
        self.locks.lock().expect("lock map").retain(|_, lock| Arc::strong_count(lock) > 1);
    }

    /// Waits for `key`'s lock; it is held until the guard is dropped.
    pub async fn lock(&self, key: &str) -> OwnedMutexGuard<()> {
        let lock = self.locks.lock().expect("lock map").entry(key.to_owned()).or_default().clone();
        lock.lock_owned().await
    }
}
