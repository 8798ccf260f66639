//! A connection's outbound queue: bounded in items and in bytes, never waits to push, and
//! wakes its writer only when it goes from empty to not empty (a burst of deliveries costs
//! one wake-up). It closes when its sender is dropped; the receiver still gets what was
//! queued before.
//!
//! It is this simple on purpose: one sender, one receiver, and a push on the path of every
//! delivery of every message.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

/// The queue was full; the item was not queued.
#[derive(Debug, PartialEq, Eq)]
pub struct Full;

/// What an item costs the queue's byte budget.
pub trait Weigh {
    fn weight(&self) -> usize;
}

/// How much a queue may hold.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub items: usize,
    pub bytes: usize,
}

struct State<T> {
    items: VecDeque<T>,
    bytes: usize,
    closed: bool,
}

struct Shared<T> {
    state: Mutex<State<T>>,
    ready: Notify,
    bounds: Bounds,
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

/// A queue of at most `bounds.items` items weighing at most `bounds.bytes` together. An
/// item heavier than the whole budget still goes into an empty queue.
pub fn queue<T: Weigh>(bounds: Bounds) -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State { items: VecDeque::new(), bytes: 0, closed: false }),
        ready: Notify::new(),
        bounds,
    });
    (Sender(shared.clone()), Receiver(shared))
}

impl<T: Weigh> Sender<T> {
    /// Queues an item unless the queue is full.
    pub fn push(&self, item: T) -> Result<(), Full> {
        let weight = item.weight();
        let mut state = self.0.lock();
        let was_empty = state.items.is_empty();
        let over_bytes = state.bytes + weight > self.0.bounds.bytes;
        if state.items.len() >= self.0.bounds.items || (over_bytes && !was_empty) {
            return Err(Full);
        }
        state.bytes += weight;
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

impl<T: Weigh> Receiver<T> {
    /// Moves up to `max` items into `out`, waiting for one if there is none; 0 once the
    /// sender is gone and the queue is empty.
    pub async fn recv_many(&mut self, out: &mut Vec<T>, max: usize) -> usize {
        loop {
            {
                let mut state = self.0.lock();
                if !state.items.is_empty() {
                    let count = state.items.len().min(max);
                    let start = out.len();
                    out.extend(state.items.drain(..count));
                    let taken: usize = out[start..].iter().map(Weigh::weight).sum();
                    state.bytes -= taken;
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

impl<T> Receiver<T> {
    /// Gives back the memory of an empty queue (it grew for a burst).
    pub fn shrink(&mut self) {
        let mut state = self.0.lock();
        if state.items.is_empty() {
            state.items = VecDeque::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Weigh for i32 {
        fn weight(&self) -> usize {
            1
        }
    }

    impl Weigh for &str {
        fn weight(&self) -> usize {
            self.len()
        }
    }

    #[tokio::test]
    async fn bounded_ordered_and_closed_by_the_sender() {
        let (sender, mut receiver) = queue(Bounds { items: 3, bytes: 1000 });
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
        let (sender, mut receiver) = queue(Bounds { items: 10, bytes: 1000 });
        let waiting = tokio::spawn(async move {
            let mut out = Vec::new();
            receiver.recv_many(&mut out, 10).await;
            out
        });
        tokio::task::yield_now().await;
        sender.push("hello").unwrap();
        assert_eq!(waiting.await.unwrap(), ["hello"]);
    }

    #[tokio::test]
    async fn bounded_in_bytes_and_a_big_item_fits_an_empty_queue() {
        let (sender, mut receiver) = queue(Bounds { items: 10, bytes: 8 });
        sender.push("12345").unwrap();
        assert_eq!(sender.push("1234"), Err(Full), "5 + 4 bytes is over 8");
        sender.push("123").unwrap();
        let mut out = Vec::new();
        receiver.recv_many(&mut out, 10).await;
        assert_eq!(out, ["12345", "123"]);
        sender.push("a twenty-byte item..").unwrap();
        assert_eq!(sender.push("x"), Err(Full));
        receiver.recv_many(&mut out, 10).await;
        sender.push("12345678").unwrap();
    }
}
