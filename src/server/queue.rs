//! A connection's outbound queue: bounded, never waits to push, and wakes its writer only
//! when it goes from empty to not empty (a burst of deliveries costs one wake-up). It
//! closes when its sender is dropped; the receiver still gets what was queued before.
//!
//! It is this simple on purpose: one sender, one receiver, and a push on the path of every
//! delivery of every message.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

/// The queue was full; the item was not queued.
#[derive(Debug, PartialEq, Eq)]
pub struct Full;

struct State<T> {
    items: VecDeque<T>,
    closed: bool,
}

struct Shared<T> {
    state: Mutex<State<T>>,
    ready: Notify,
    capacity: usize,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The pushing end.
pub struct Sender<T>(Arc<Shared<T>>);

/// The draining end.
pub struct Receiver<T>(Arc<Shared<T>>);

/// A queue of at most `capacity` items.
pub fn queue<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State { items: VecDeque::new(), closed: false }),
        ready: Notify::new(),
        capacity,
    });
    (Sender(shared.clone()), Receiver(shared))
}

impl<T> Sender<T> {
    /// Queues an item unless the queue is full.
    pub fn push(&self, item: T) -> Result<(), Full> {
        let mut state = self.0.lock();
        if state.items.len() >= self.0.capacity {
            return Err(Full);
        }
        let was_empty = state.items.is_empty();
        state.items.push_back(item);
        drop(state);
        if was_empty {
            self.0.ready.notify_one();
        }
        Ok(())
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        self.0.lock().closed = true;
        self.0.ready.notify_one();
    }
}

impl<T> std::fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender").field("queued", &self.0.lock().items.len()).finish()
    }
}

impl<T> Receiver<T> {
    /// Moves up to `max` items into `out`, waiting for one if there is none; 0 once the
    /// sender is gone and the queue is empty.
    pub async fn recv_many(&mut self, out: &mut Vec<T>, max: usize) -> usize {
        loop {
            {
                let mut state = self.0.lock();
                if !state.items.is_empty() {
                    let count = state.items.len().min(max);
                    out.extend(state.items.drain(..count));
                    return count;
                }
                if state.closed {
                    return 0;
                }
            }
            // A push after the check above leaves a permit: this returns at once then.
            self.0.ready.notified().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bounded_ordered_and_closed_by_the_sender() {
        let (sender, mut receiver) = queue(3);
        for i in 0..3 {
            sender.push(i).unwrap();
        }
        assert_eq!(sender.push(3), Err(Full));
        let mut out = Vec::new();
        assert_eq!(receiver.recv_many(&mut out, 2).await, 2);
        sender.push(4).unwrap();
        drop(sender);
        assert_eq!(receiver.recv_many(&mut out, 10).await, 2);
        assert_eq!(out, [0, 1, 2, 4]);
        assert_eq!(receiver.recv_many(&mut out, 10).await, 0, "closed and empty");
    }

    #[tokio::test]
    async fn a_waiting_receiver_is_woken() {
        let (sender, mut receiver) = queue(10);
        let waiting = tokio::spawn(async move {
            let mut out = Vec::new();
            receiver.recv_many(&mut out, 10).await;
            out
        });
        tokio::task::yield_now().await;
        sender.push("hello").unwrap();
        assert_eq!(waiting.await.unwrap(), ["hello"]);
    }
}
