//! Sends one message and exits once the server has stored it.
//!
//! ```sh
//! # the first time, with the token (or the whole link) from the magic-link email:
//! ROOMZ_TOKEN='https://chat.example.com/auth/verify?token=...' \
//!     cargo run --example send -- https://chat.example.com general "deploy finished"
//! # afterwards the cached session is enough:
//! cargo run --example send -- https://chat.example.com general "deploy finished"
//! ```
//!
//! The session is cached in `ROOMZ_SESSION_FILE` (default `~/.roomz/session.json`).

use std::path::PathBuf;
use std::process::ExitCode;

use roomz::AsyncClient;
use roomz::client::ClientError;

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [server, room, words @ ..] = args.as_slice() else {
        eprintln!("usage: send SERVER_URL ROOM TEXT...");
        return ExitCode::from(2);
    };
    if words.is_empty() {
        eprintln!("usage: send SERVER_URL ROOM TEXT...");
        return ExitCode::from(2);
    }
    match send(server, room, &words.join(" ")).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("send: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn send(server: &str, room: &str, text: &str) -> Result<(), ClientError> {
    let mut builder = AsyncClient::builder(server).session_cache_file(session_file());
    if let Ok(token) = std::env::var("ROOMZ_TOKEN") {
        builder = builder.session_token(token);
    }
    let client = builder.build()?;
    client.connect().await?;
    let sent = client.send(room, text).await?;
    println!("sent as message {} in {}", sent.seq, sent.room);
    client.close().await;
    Ok(())
}

/// `ROOMZ_SESSION_FILE`, else the library's default, `~/.roomz/session.json`.
fn session_file() -> PathBuf {
    std::env::var_os("ROOMZ_SESSION_FILE")
        .map(PathBuf::from)
        .or_else(roomz::client::config::default_session_file)
        .unwrap_or_else(|| PathBuf::from("session.json"))
}
