//! The allow-list: which addresses may log in and keep a session. Read on every request
//! and every WebSocket frame, so it is a lock-free snapshot that SIGHUP swaps whole.

use std::collections::HashSet;
use std::sync::Arc;

use arc_swap::ArcSwap;

/// The current set of allowed (canonical) addresses.
#[derive(Debug)]
pub struct AllowList {
    emails: ArcSwap<HashSet<String>>,
}

impl AllowList {
    pub fn new(emails: impl IntoIterator<Item = String>) -> Self {
        Self { emails: ArcSwap::from_pointee(emails.into_iter().collect()) }
    }

    /// Whether `email` (canonical) may use the server now.
    pub fn contains(&self, email: &str) -> bool {
        self.emails.load().contains(email)
    }

    /// How many addresses are allowed.
    pub fn len(&self) -> usize {
        self.emails.load().len()
    }

    /// Whether nobody is allowed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Replaces the list and returns the addresses that were removed, sorted.
    pub fn replace(&self, emails: impl IntoIterator<Item = String>) -> Vec<String> {
        let new: HashSet<String> = emails.into_iter().collect();
        let old = self.emails.swap(Arc::new(new.clone()));
        let mut removed: Vec<String> = old.difference(&new).cloned().collect();
        removed.sort();
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_reports_removed() {
        let list = AllowList::new(["a@x.io".to_owned(), "b@x.io".to_owned()]);
        assert!(list.contains("a@x.io"));
        assert_eq!(list.replace(["b@x.io".to_owned(), "c@x.io".to_owned()]), ["a@x.io"]);
        assert!(!list.contains("a@x.io"));
        assert!(list.contains("c@x.io"));
    }
}
