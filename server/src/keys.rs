//! The coordinator's Ed25519 signing keys, kept as files (mode 0600) in the
//! data directory. Several server processes sharing one database share this
//! directory too. Rotation retires the active key but keeps it published in
//! the JWKS until every token it signed has expired.

use std::path::{Path, PathBuf};

use askee_core::b64;
use askee_core::token::{Keyring, TokenSigner, jwk};
use askee_core::wire::v1::JwkSet;
use ed25519_dalek::{SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read key directory {path}: {source}")]
    ReadDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read key file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("key file {path} is malformed: {detail}")]
    Malformed { path: PathBuf, detail: String },
    #[error("cannot write key file {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot prepare signing key: {0}")]
    Signer(#[from] askee_core::token::TokenError),
}

#[derive(Serialize, Deserialize)]
struct KeyFile {
    kid: String,
    /// base64url 32-byte Ed25519 seed.
    seed: String,
    created_at: i64,
    retired_at: Option<i64>,
}

struct LoadedKey {
    key: SigningKey,
    created_at: i64,
    retired_at: Option<i64>,
}

/// The active signer plus every key still trusted for verification.
pub struct KeySet {
    signer: TokenSigner,
    trusted: Vec<VerifyingKey>,
    /// Every key ever used, retired ones included: revocation certificates
    /// stay valid for the whole grant, beyond a key's token lifetime.
    history: Vec<VerifyingKey>,
    keyring: Keyring,
}

impl KeySet {
    pub fn signer(&self) -> &TokenSigner {
        &self.signer
    }

    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    pub fn jwks(&self) -> JwkSet {
        JwkSet {
            keys: self.trusted.iter().map(jwk).collect(),
        }
    }

    pub fn key_ids(&self) -> Vec<String> {
        self.trusted.iter().map(askee_core::token::key_id).collect()
    }

    /// The trusted key with this id.
    pub fn verifying_key(&self, kid: &str) -> Option<VerifyingKey> {
        self.trusted
            .iter()
            .find(|k| askee_core::token::key_id(k) == kid)
            .copied()
    }

    pub fn trusted(&self) -> &[VerifyingKey] {
        &self.trusted
    }

    /// Every key this coordinator ever used.
    pub fn history_keys(&self) -> &[VerifyingKey] {
        &self.history
    }

    /// A key of this coordinator, retired or not, by key id.
    pub fn historic_key(&self, kid: &str) -> Option<VerifyingKey> {
        self.history
            .iter()
            .find(|k| askee_core::token::key_id(k) == kid)
            .copied()
    }
}

fn key_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("keys")
}

fn load_all(dir: &Path) -> Result<Vec<LoadedKey>, KeyError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(KeyError::ReadDir {
                path: dir.to_owned(),
                source,
            });
        }
    };
    let mut keys = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|source| KeyError::ReadDir {
                path: dir.to_owned(),
                source,
            })?
            .path();
        if path.extension().is_none_or(|e| e != "key") {
            continue;
        }
        let text = std::fs::read_to_string(&path).map_err(|source| KeyError::Read {
            path: path.clone(),
            source,
        })?;
        let file: KeyFile = serde_json::from_str(&text).map_err(|e| KeyError::Malformed {
            path: path.clone(),
            detail: e.to_string(),
        })?;
        let seed = b64::decode_array::<32>(&file.seed).map_err(|e| KeyError::Malformed {
            path: path.clone(),
            detail: format!("seed: {e}"),
        })?;
        let key = SigningKey::from_bytes(&seed);
        if askee_core::token::key_id(&key.verifying_key()) != file.kid {
            return Err(KeyError::Malformed {
                path,
                detail: "kid does not match the key".into(),
            });
        }
        keys.push(LoadedKey {
            key,
            created_at: file.created_at,
            retired_at: file.retired_at,
        });
    }
    keys.sort_by_key(|k| k.created_at);
    Ok(keys)
}

fn write_key(dir: &Path, key: &LoadedKey) -> Result<(), KeyError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    // Only the server's user may list or read the signing keys.
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(|source| KeyError::Write {
        path: dir.to_owned(),
        source,
    })?;
    let kid = askee_core::token::key_id(&key.key.verifying_key());
    let file = KeyFile {
        kid: kid.clone(),
        seed: b64::encode(key.key.to_bytes()),
        created_at: key.created_at,
        retired_at: key.retired_at,
    };
    let path = dir.join(format!("{kid}.key"));
    let tmp = dir.join(format!(".{kid}.key.tmp"));
    let write = || -> std::io::Result<()> {
        use std::io::Write as _;
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut f = opts.open(&tmp)?;
        f.write_all(serde_json::to_string_pretty(&file)?.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)
    };
    write().map_err(|source| KeyError::Write { path, source })
}

fn generate(now: i64) -> LoadedKey {
    LoadedKey {
        key: SigningKey::generate(&mut rand::rngs::OsRng),
        created_at: now,
        retired_at: None,
    }
}

/// Loads the keys, creating the first one when there is none. Keys retired
/// longer ago than `token_lifetime` are no longer trusted.
pub fn load_or_create(data_dir: &Path, now: i64, token_lifetime: i64) -> Result<KeySet, KeyError> {
    let dir = key_dir(data_dir);
    let mut keys = load_all(&dir)?;
    if !keys.iter().any(|k| k.retired_at.is_none()) {
        let key = generate(now);
        write_key(&dir, &key)?;
        keys.push(key);
    }
    let active = keys
        .iter()
        .rev()
        .find(|k| k.retired_at.is_none())
        .expect("an active key exists");
    let signer = TokenSigner::new(active.key.clone())?;
    let trusted: Vec<VerifyingKey> = keys
        .iter()
        .filter(|k| k.retired_at.is_none_or(|r| r + token_lifetime > now))
        .map(|k| k.key.verifying_key())
        .collect();
    let mut keyring = Keyring::new();
    for k in &trusted {
        keyring.insert(k);
    }
    Ok(KeySet {
        signer,
        trusted,
        history: keys.iter().map(|k| k.key.verifying_key()).collect(),
        keyring,
    })
}

/// Retires the active key and creates a new one. Returns the new key id.
pub fn rotate(data_dir: &Path, now: i64) -> Result<String, KeyError> {
    let dir = key_dir(data_dir);
    for mut key in load_all(&dir)? {
        if key.retired_at.is_none() {
            key.retired_at = Some(now);
            write_key(&dir, &key)?;
        }
    }
    let key = generate(now);
    write_key(&dir, &key)?;
    Ok(askee_core::token::key_id(&key.key.verifying_key()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_keeps_old_key_until_its_tokens_expire() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create(dir.path(), 1_000, 3_600).unwrap();
        let old_kid = first.signer().kid().to_owned();
        let again = load_or_create(dir.path(), 1_001, 3_600).unwrap();
        assert_eq!(
            again.signer().kid(),
            old_kid,
            "keys persist across restarts"
        );

        let new_kid = rotate(dir.path(), 2_000).unwrap();
        let rotated = load_or_create(dir.path(), 2_001, 3_600).unwrap();
        assert_eq!(rotated.signer().kid(), new_kid);
        assert!(rotated.keyring().contains(&old_kid));
        assert_eq!(rotated.jwks().keys.len(), 2);

        let later = load_or_create(dir.path(), 2_000 + 3_600, 3_600).unwrap();
        assert!(!later.keyring().contains(&old_kid));
        assert_eq!(later.jwks().keys.len(), 1);
    }

    #[cfg(unix)]
    #[test]
    fn key_files_are_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let keys = load_or_create(dir.path(), 1, 10).unwrap();
        let path = key_dir(dir.path()).join(format!("{}.key", keys.signer().kid()));
        let mode = std::fs::metadata(path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
