//! Display names of the users seen since start, in memory, so the fan-out can label a
//! message without asking the store. The store stays the truth; this follows it.

use std::collections::HashMap;
use std::sync::RwLock;

/// email -> display name (`None`: the user has none).
#[derive(Debug, Default)]
pub struct NameCache {
    names: RwLock<HashMap<String, Option<String>>>,
}

impl NameCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// The display name last recorded for `email`.
    pub fn get(&self, email: &str) -> Option<String> {
        self.names.read().expect("name cache lock").get(email).cloned().flatten()
    }

    /// The users whose names are recorded.
    pub fn emails(&self) -> Vec<String> {
        self.names.read().expect("name cache lock").keys().cloned().collect()
    }

    /// Records the display name of `email`.
    pub fn set(&self, email: &str, name: Option<String>) {
        self.names.write().expect("name cache lock").insert(email.to_owned(), name);
    }
}
