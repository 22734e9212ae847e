//! Base64url without padding: the one text encoding askee uses for keys,
//! signatures and digests on the wire.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signature, VerifyingKey};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("not base64url without padding")]
    Base64,
    #[error("expected {expected} bytes, got {actual}")]
    Length { expected: usize, actual: usize },
    #[error("not a valid ed25519 public key")]
    PublicKey,
}

pub fn encode(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn decode(text: &str) -> Result<Vec<u8>, DecodeError> {
    URL_SAFE_NO_PAD
        .decode(text.as_bytes())
        .map_err(|_| DecodeError::Base64)
}

pub fn decode_array<const N: usize>(text: &str) -> Result<[u8; N], DecodeError> {
    let bytes = decode(text)?;
    let actual = bytes.len();
    bytes.try_into().map_err(|_| DecodeError::Length {
        expected: N,
        actual,
    })
}

/// Parses a node or coordinator public key as sent on the wire.
pub fn public_key(text: &str) -> Result<VerifyingKey, DecodeError> {
    let bytes = decode_array::<32>(text)?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| DecodeError::PublicKey)
}

pub fn signature(text: &str) -> Result<Signature, DecodeError> {
    Ok(Signature::from_bytes(&decode_array::<64>(text)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_errors() {
        assert_eq!(decode(&encode(b"askee")).unwrap(), b"askee");
        assert_eq!(decode("a=="), Err(DecodeError::Base64));
        assert_eq!(
            decode_array::<32>(&encode([0u8; 31])),
            Err(DecodeError::Length {
                expected: 32,
                actual: 31
            })
        );
    }
}
