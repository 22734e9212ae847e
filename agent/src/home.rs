//! The agent's home directory: the node's Ed25519 identity key (mode 0600)
//! and the local consent state (coordinator, manifest, grant, token).

use std::path::{Path, PathBuf};

use askee_core::b64;
use askee_core::wire::v1::{CapabilityManifest, ConsentToken, RevocationCertificate};
use ed25519_dalek::SigningKey;
use serde::{Deserialize, Serialize};

use crate::private_file;

#[derive(Debug, thiserror::Error)]
pub enum HomeError {
    #[error("no node key in {dir}; run `askee-agent init` first")]
    NoKey { dir: PathBuf },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is malformed: {detail}")]
    Malformed { path: PathBuf, detail: String },
}

/// What the agent remembers between commands.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct State {
    pub coordinator: Option<String>,
    pub manifest: Option<CapabilityManifest>,
    pub manifest_digest: Option<String>,
    pub grant_id: Option<String>,
    pub token: Option<ConsentToken>,
    pub revocation_certificate: Option<RevocationCertificate>,
}

pub struct Home {
    dir: PathBuf,
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), HomeError> {
    private_file::write(path, bytes).map_err(|source| HomeError::Write {
        path: path.to_owned(),
        source,
    })
}

impl Home {
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn key_path(&self) -> PathBuf {
        self.dir.join("node.key")
    }

    fn state_path(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    /// Creates the node key unless one exists; returns it and whether it is new.
    pub fn init(&self) -> Result<(SigningKey, bool), HomeError> {
        if self.key_path().exists() {
            return Ok((self.key()?, false));
        }
        std::fs::create_dir_all(&self.dir).map_err(|source| HomeError::Write {
            path: self.dir.clone(),
            source,
        })?;
        let key = SigningKey::generate(&mut rand::rngs::OsRng);
        write_private(&self.key_path(), b64::encode(key.to_bytes()).as_bytes())?;
        Ok((key, true))
    }

    pub fn key(&self) -> Result<SigningKey, HomeError> {
        let path = self.key_path();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(HomeError::NoKey {
                    dir: self.dir.clone(),
                });
            }
            Err(source) => return Err(HomeError::Read { path, source }),
        };
        let seed = b64::decode_array::<32>(text.trim()).map_err(|e| HomeError::Malformed {
            path,
            detail: e.to_string(),
        })?;
        Ok(SigningKey::from_bytes(&seed))
    }

    pub fn state(&self) -> Result<State, HomeError> {
        let path = self.state_path();
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| HomeError::Malformed {
                path,
                detail: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(source) => Err(HomeError::Read { path, source }),
        }
    }

    pub fn save(&self, state: &State) -> Result<(), HomeError> {
        let bytes = serde_json::to_vec_pretty(state).expect("state serialises");
        write_private(&self.state_path(), &bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_created_once_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(dir.path().join("askee"));
        let (k1, new1) = home.init().unwrap();
        let (k2, new2) = home.init().unwrap();
        assert!(new1 && !new2);
        assert_eq!(k1.to_bytes(), k2.to_bytes());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(home.key_path())
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn missing_key_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(dir.path().to_owned());
        assert!(matches!(home.key(), Err(HomeError::NoKey { .. })));
    }
}
