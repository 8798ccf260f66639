//! roomz: self-hosted chat for people who live in the terminal.
//!
//! One crate holds the three parts, which meet only in [`protocol`]:
//! - [`protocol`]: the frames, HTTP bodies, limits and text rules both sides share;
//! - [`server`]: `roomz serve`, the HTTP and WebSocket server on SQLite.

pub mod protocol;
pub mod server;
