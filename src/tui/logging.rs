//! The chat's log: a file under the cache folder (`~/.cache/roomz/chat.log`), never the
//! screen. The previous run's log is kept once, as `chat.log.1`, when it grew large.

use std::fs::{File, OpenOptions};
use std::path::PathBuf;
use std::sync::Mutex;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::LevelFilter;

/// A log over this size is moved aside at start.
const ROTATE_OVER: u64 = 5 * 1024 * 1024;

/// Where the log goes: `$XDG_CACHE_HOME/roomz/chat.log` or `~/.cache/roomz/chat.log`.
pub fn path() -> Option<PathBuf> {
    directories::ProjectDirs::from("", "", "roomz").map(|dirs| dirs.cache_dir().join("chat.log"))
}

/// Sends `tracing` to the log file (filtered by `RUST_LOG`, default info). Without a place
/// for the file, nothing is logged: the screen is never used.
pub fn init() -> Option<PathBuf> {
    let path = path()?;
    let file = open(&path).ok()?;
    let filter =
        EnvFilter::builder().with_default_directive(LevelFilter::INFO.into()).from_env_lossy();
    tracing_subscriber::fmt()
        .with_writer(Mutex::new(file))
        .with_ansi(false)
        .with_env_filter(filter)
        .try_init()
        .ok()?;
    Some(path)
}

fn open(path: &PathBuf) -> std::io::Result<File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    if std::fs::metadata(path).is_ok_and(|m| m.len() > ROTATE_OVER) {
        let _ = std::fs::rename(path, path.with_extension("log.1"));
    }
    let mut options = OpenOptions::new();
    options.create(true).append(true);
    // The log names addresses and rooms: for its owner's eyes only.
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}
