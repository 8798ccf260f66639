//! Passwordless login: magic-link tokens (`links`), JWT sessions (`session`), and the HTTP
//! handlers that join them (`routes`). Tokens and sessions never reach a log line.

pub mod links;
pub mod routes;
pub mod session;
