//! Tests of `roomz serve` at the protocol level: raw HTTP and WebSocket frames.

mod auth;
mod chat;
mod durability;
mod faults;
mod limits;
mod protocol_doc;
mod resend;
mod sessions;
mod startup;
