//! Tests of the client library (`AsyncClient`, `SyncClient`) and its examples, against real
//! servers.

mod api;
mod blocking;
mod faults;
mod login;
mod reliability;
