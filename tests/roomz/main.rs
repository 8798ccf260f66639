//! Integration tests, in one binary: the real server on 127.0.0.1:0 with a real SQLite file,
//! driven over real HTTP and WebSockets (`server`) and through the client library (`client`);
//! the real binary where signals, exit codes and crashes matter.

// A failed unwrap in a test is a failed test, with its line.
#![allow(clippy::unwrap_used)]

mod client;
mod cluster;
mod hostile;
mod proxy;
mod server;
mod store;
mod support;
pub mod tui;
