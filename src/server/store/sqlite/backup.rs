//! `roomz backup PATH`: a consistent copy of a live SQLite store. SQLite's `VACUUM INTO`
//! reads one snapshot of the database (in WAL mode, writers go on meanwhile) and writes it
//! to a new file, compacted and whole (no `-wal` beside it); the copy is then opened and
//! checked before it is reported.

use std::path::Path;
use std::str::FromStr;

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Connection, SqliteConnection};

use super::BUSY_TIMEOUT;
use crate::server::store::{StoreError, StoreResult};

/// What a backup holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backup {
    pub messages: i64,
    pub users: i64,
    pub bytes: u64,
}

/// Copies the database at `from` into the new file `to` (which must not exist yet).
pub async fn backup(from: &Path, to: &Path) -> StoreResult<Backup> {
    let io = |path: &Path, source| StoreError::Io { path: path.display().to_string(), source };
    if !from.is_file() {
        let missing = std::io::Error::new(std::io::ErrorKind::NotFound, "no database here");
        return Err(io(from, missing));
    }
    if to.exists() {
        let exists = std::io::Error::new(std::io::ErrorKind::AlreadyExists, "will not overwrite");
        return Err(io(to, exists));
    }
    let folder = to.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !folder.is_dir() {
        let missing = std::io::Error::new(std::io::ErrorKind::NotFound, "no such folder");
        return Err(io(folder, missing));
    }
    let options = SqliteConnectOptions::from_str("sqlite:")?
        .filename(from)
        .busy_timeout(BUSY_TIMEOUT)
        .read_only(true);
    let mut source = SqliteConnection::connect_with(&options).await?;
    let target = to.to_str().ok_or_else(|| {
        io(to, std::io::Error::new(std::io::ErrorKind::InvalidInput, "the path is not UTF-8"))
    })?;
    sqlx::query("VACUUM INTO ?1").bind(target).execute(&mut source).await?;
    source.close().await?;
    // VACUUM INTO does not flush what it wrote: a backup is on disk before it is reported.
    std::fs::File::open(to).and_then(|f| f.sync_all()).map_err(|e| io(to, e))?;
    std::fs::File::open(folder).and_then(|f| f.sync_all()).map_err(|e| io(folder, e))?;

    // The copy must open and be whole before it counts as a backup.
    let options = SqliteConnectOptions::from_str("sqlite:")?.filename(to).read_only(true);
    let mut copy = SqliteConnection::connect_with(&options).await?;
    let check: String = sqlx::query_scalar("PRAGMA integrity_check").fetch_one(&mut copy).await?;
    if check != "ok" {
        return Err(StoreError::Database(sqlx::Error::Protocol(format!(
            "the copy failed its integrity check: {check}"
        ))));
    }
    let messages = sqlx::query_scalar("SELECT count(*) FROM messages").fetch_one(&mut copy).await?;
    let users = sqlx::query_scalar("SELECT count(*) FROM users").fetch_one(&mut copy).await?;
    copy.close().await?;
    let bytes = std::fs::metadata(to).map_err(|e| io(to, e))?.len();
    Ok(Backup { messages, users, bytes })
}
