//! A bot that repeats, with `echo: ` in front, every message others post in its rooms.
//!
//! ```sh
//! ROOMZ_TOKEN='<token or link>' cargo run --example echo_bot -- http://localhost:8000
//! ```
//!
//! It logs in like the `send` example (`ROOMZ_TOKEN` the first time, then the session cached
//! in `ROOMZ_SESSION_FILE`), optionally joins the rooms named after the server URL, and runs
//! until Ctrl-C, reconnecting by itself when the connection drops.

use std::path::PathBuf;
use std::process::ExitCode;

use roomz::AsyncClient;
use roomz::client::{ClientError, ConnectionState, Event};

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((server, rooms)) = args.split_first() else {
        eprintln!("usage: echo_bot SERVER_URL [ROOM...]");
        return ExitCode::from(2);
    };
    match run(server, rooms).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("echo_bot: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(server: &str, rooms: &[String]) -> Result<(), ClientError> {
    let mut builder = AsyncClient::builder(server).session_cache_file(session_file());
    if let Ok(token) = std::env::var("ROOMZ_TOKEN") {
        builder = builder.session_token(token);
    }
    let client = builder.build()?;
    let mut events = client.events();
    client.connect().await?;
    for room in rooms {
        client.join(room).await?;
    }
    let me = client.identity().map(|(email, _)| email).unwrap_or_default();
    println!("echo_bot: listening as {me}");

    loop {
        let event = tokio::select! {
            event = events.recv() => event,
            _ = tokio::signal::ctrl_c() => break,
        };
        match event {
            Some(Event::Message(message)) if message.author != me => {
                // Sent in the background: a slow acknowledgement never holds up reading.
                let reply = client.send(&message.room, &format!("echo: {}", message.text));
                tokio::spawn(async move {
                    if let Err(error) = reply.await {
                        eprintln!("echo_bot: an echo was not sent: {error}");
                    }
                });
            }
            Some(Event::Connection(ConnectionState::GaveUp { error })) => return Err(error),
            Some(Event::Connection(state)) => println!("echo_bot: {state:?}"),
            Some(_) => {}
            None => break,
        }
    }
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
