//! Audit checkpoints in the C2SP `tlog-checkpoint` layout, signed with the
//! C2SP `signed-note` format (Ed25519, key hash = first four bytes of
//! SHA-256(name || "\n" || 0x01 || public key)).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};

use crate::merkle::Hash;
use crate::signing::sha256;

const ED25519_ALG: u8 = 0x01;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NoteError {
    #[error("note has no blank line between text and signatures")]
    NoSeparator,
    #[error("checkpoint line {line} is malformed: {cause}")]
    Checkpoint { line: usize, cause: &'static str },
    #[error("no signature line from key {name:?}")]
    NoSignature { name: String },
    #[error("signature line is malformed")]
    SignatureLine,
    #[error("signature from {name:?} does not verify")]
    BadSignature { name: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
}

impl Checkpoint {
    /// The note text: origin, size and root hash, one per line.
    pub fn body(&self) -> String {
        format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            STANDARD.encode(self.root)
        )
    }

    pub fn parse(body: &str) -> Result<Self, NoteError> {
        let lines: Vec<&str> = body.split('\n').collect();
        if lines.len() < 4 || !body.ends_with('\n') {
            return Err(NoteError::Checkpoint {
                line: lines.len(),
                cause: "a checkpoint has origin, size and root lines",
            });
        }
        let origin = lines[0];
        if origin.is_empty() {
            return Err(NoteError::Checkpoint {
                line: 1,
                cause: "origin is empty",
            });
        }
        let size = lines[1].parse::<u64>().map_err(|_| NoteError::Checkpoint {
            line: 2,
            cause: "size is not a decimal number",
        })?;
        let root: Hash = STANDARD
            .decode(lines[2])
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or(NoteError::Checkpoint {
                line: 3,
                cause: "root is not a base64 sha-256 hash",
            })?;
        Ok(Self {
            origin: origin.to_owned(),
            size,
            root,
        })
    }
}

fn key_hash(name: &str, key: &VerifyingKey) -> [u8; 4] {
    let mut data = Vec::with_capacity(name.len() + 34);
    data.extend_from_slice(name.as_bytes());
    data.push(b'\n');
    data.push(ED25519_ALG);
    data.extend_from_slice(key.as_bytes());
    let h = sha256(&data);
    [h[0], h[1], h[2], h[3]]
}

/// A verifier key in the signed-note text form `name+hash+base64(alg||key)`.
pub fn verifier_key(name: &str, key: &VerifyingKey) -> String {
    let mut k = vec![ED25519_ALG];
    k.extend_from_slice(key.as_bytes());
    format!(
        "{name}+{}+{}",
        hex::encode(key_hash(name, key)),
        STANDARD.encode(k)
    )
}

/// Signs note text (which must end in a newline) as `name`.
pub fn sign(text: &str, name: &str, key: &SigningKey) -> String {
    debug_assert!(text.ends_with('\n'));
    let sig = key.sign(text.as_bytes());
    let mut blob = key_hash(name, &key.verifying_key()).to_vec();
    blob.extend_from_slice(&sig.to_bytes());
    format!("{text}\n\u{2014} {name} {}\n", STANDARD.encode(blob))
}

/// Verifies a signed note against one known key and returns its text.
pub fn open<'a>(note: &'a str, name: &str, key: &VerifyingKey) -> Result<&'a str, NoteError> {
    let split = note.rfind("\n\n").ok_or(NoteError::NoSeparator)?;
    let (text, sigs) = (&note[..split + 1], &note[split + 2..]);
    let want = key_hash(name, key);
    for line in sigs.lines() {
        let rest = line
            .strip_prefix("\u{2014} ")
            .ok_or(NoteError::SignatureLine)?;
        let (line_name, blob) = rest.split_once(' ').ok_or(NoteError::SignatureLine)?;
        if line_name != name {
            continue;
        }
        let blob = STANDARD
            .decode(blob)
            .map_err(|_| NoteError::SignatureLine)?;
        if blob.len() != 68 || blob[..4] != want {
            continue;
        }
        let sig = Signature::from_bytes(blob[4..].try_into().expect("length checked"));
        return key
            .verify(text.as_bytes(), &sig)
            .map(|()| text)
            .map_err(|_| NoteError::BadSignature {
                name: name.to_owned(),
            });
    }
    Err(NoteError::NoSignature {
        name: name.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_round_trip_and_tamper() {
        let key = SigningKey::from_bytes(&[5; 32]);
        let cp = Checkpoint {
            origin: "askee.test/audit".into(),
            size: 42,
            root: [9; 32],
        };
        let note = sign(&cp.body(), "askee.test", &key);
        let text = open(&note, "askee.test", &key.verifying_key()).unwrap();
        assert_eq!(Checkpoint::parse(text).unwrap(), cp);

        let edited = note.replace("\n42\n", "\n43\n");
        assert_eq!(
            open(&edited, "askee.test", &key.verifying_key()),
            Err(NoteError::BadSignature {
                name: "askee.test".into()
            })
        );
        let other = SigningKey::from_bytes(&[6; 32]);
        assert!(matches!(
            open(&note, "askee.test", &other.verifying_key()),
            Err(NoteError::NoSignature { .. })
        ));
    }

    #[test]
    fn verifier_key_matches_the_signed_note_layout() {
        let key = SigningKey::from_bytes(&[5; 32]);
        let vk = verifier_key("askee.test", &key.verifying_key());
        let parts: Vec<&str> = vk.split('+').collect();
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[1].len(), 8);
        assert_eq!(STANDARD.decode(parts[2]).unwrap()[0], ED25519_ALG);
    }
}
