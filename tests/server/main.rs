//! Integration tests of `roomz serve`: the real server on 127.0.0.1:0 with a real SQLite
//! file, driven over real HTTP and WebSockets; the real binary where signals, exit codes
//! and crashes matter.

// A failed unwrap in a test is a failed test, with its line.
#![allow(clippy::unwrap_used)]

mod auth;
mod chat;
mod durability;
mod limits;
mod protocol_doc;
mod resend;
mod sessions;
mod startup;
mod support;
