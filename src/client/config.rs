//! The client's files under `~/.roomz/`: the configuration file `config.toml` (its
//! `[client]` section, read by the library and by `roomz chat`; config.example.toml documents
//! every key) and the default place of the session cache.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::error::ClientError;

/// The `[client]` section. Unknown keys are ignored, so a newer file works with an older
/// roomz.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct ClientSection {
    /// How others see you: `Display Name (email)`.
    pub display_name: Option<String>,
    /// The server `roomz chat` connects to.
    pub server_url: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ConfigFile {
    client: ClientSection,
}

/// The path of the configuration file: `~/.roomz/config.toml` (`None` without a home).
pub fn default_path() -> Option<PathBuf> {
    directories::BaseDirs::new().map(|dirs| dirs.home_dir().join(".roomz").join("config.toml"))
}

/// Where `roomz chat` and the examples keep the session: `~/.roomz/session.json`
/// (`None` without a home).
pub fn default_session_file() -> Option<PathBuf> {
    directories::BaseDirs::new().map(|dirs| dirs.home_dir().join(".roomz").join("session.json"))
}

/// Reads the `[client]` section of `path`. A missing file is an empty section; a file that
/// is not valid TOML, or holds a key of the wrong type, is an error that says where.
pub fn load(path: &Path) -> Result<ClientSection, ClientError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Ok(ClientSection::default());
        }
        Err(error) => {
            return Err(ClientError::Config { path: path.to_owned(), reason: error.to_string() });
        }
    };
    let file: ConfigFile = toml::from_str(&text).map_err(|error| ClientError::Config {
        path: path.to_owned(),
        reason: error.to_string().trim_end().replace('\n', " "),
    })?;
    Ok(file.client)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_client_section_and_ignores_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        assert_eq!(load(&path).unwrap(), ClientSection::default(), "a missing file is empty");
        std::fs::write(
            &path,
            "[client]\ndisplay_name = \"Alice\"\nfuture_key = 1\n[other]\nx = 2\n",
        )
        .unwrap();
        assert_eq!(load(&path).unwrap().display_name.as_deref(), Some("Alice"));
        std::fs::write(&path, "[client]\ndisplay_name = 5\n").unwrap();
        let error = load(&path).unwrap_err().to_string();
        assert!(error.contains("config.toml") && error.contains("display_name"), "{error}");
    }
}
