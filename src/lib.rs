//! roomz: self-hosted chat for people who live in the terminal.
//!
//! One crate holds the three parts, which meet only in [`protocol`]:
//! - [`protocol`]: the frames, HTTP bodies, limits and text rules both sides share;
//! - [`server`]: `roomz serve`, the HTTP and WebSocket server on SQLite;
//! - [`client`]: [`AsyncClient`] and [`SyncClient`], for `roomz chat`, bots and scripts;
//! - [`tui`]: `roomz chat`, the terminal client, built on [`client`].

// The library never writes to the terminal itself: it returns values and logs with
// `tracing`. (The binary, the examples and the benches do print.)
#![warn(clippy::print_stdout, clippy::print_stderr)]

pub mod client;
pub mod protocol;
pub mod server;
pub mod tui;

pub use client::{AsyncClient, SyncClient};

// The README's Rust example is compiled with the doctests, so it stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeExamples;
