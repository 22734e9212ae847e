//! The result digest: SHA-256 over a canonical encoding of a task's outputs.
//!
//! Encoding (all integers unsigned 64-bit big endian, `len(x)` is the byte length):
//!
//! ```text
//! "askee-task-result-v1\0"
//! exit_code as i64 (two's complement)
//! len(stdout) stdout
//! number_of_files
//! for each file, sorted by path bytes: len(path) path len(contents) contents
//! ```
//!
//! Honest replicas running the same module with the same inputs produce the same bytes
//! and so the same digest; the encoding is unambiguous because every field is
//! length-prefixed.

use sha2::{Digest, Sha256};

use crate::types::OutputFile;

const DOMAIN: &[u8] = b"askee-task-result-v1\0";

/// Canonical encoding of a task result.
pub fn canonical_encoding(exit_code: i32, stdout: &[u8], outputs: &[OutputFile]) -> Vec<u8> {
    let mut sorted: Vec<&OutputFile> = outputs.iter().collect();
    sorted.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
    let mut out = Vec::with_capacity(
        DOMAIN.len()
            + 24
            + stdout.len()
            + sorted
                .iter()
                .map(|f| 16 + f.path.len() + f.contents.len())
                .sum::<usize>(),
    );
    out.extend_from_slice(DOMAIN);
    out.extend_from_slice(&i64::from(exit_code).to_be_bytes());
    put(&mut out, stdout);
    out.extend_from_slice(&(sorted.len() as u64).to_be_bytes());
    for f in sorted {
        put(&mut out, f.path.as_bytes());
        put(&mut out, &f.contents);
    }
    out
}

fn put(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// SHA-256 of [`canonical_encoding`].
pub fn result_digest(exit_code: i32, stdout: &[u8], outputs: &[OutputFile]) -> [u8; 32] {
    Sha256::digest(canonical_encoding(exit_code, stdout, outputs)).into()
}

/// SHA-256 of arbitrary bytes (module content hash).
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, contents: &[u8]) -> OutputFile {
        OutputFile {
            path: path.into(),
            contents: contents.to_vec(),
        }
    }

    #[test]
    fn order_of_files_does_not_matter() {
        let a = [file("a", b"1"), file("b/c", b"2")];
        let b = [file("b/c", b"2"), file("a", b"1")];
        assert_eq!(result_digest(0, b"x", &a), result_digest(0, b"x", &b));
    }

    #[test]
    fn boundaries_are_unambiguous() {
        // Moving a byte from stdout into a file name must change the digest.
        let a = result_digest(0, b"ab", &[file("c", b"")]);
        let b = result_digest(0, b"a", &[file("bc", b"")]);
        assert_ne!(a, b);
        assert_ne!(result_digest(0, b"", &[]), result_digest(1, b"", &[]));
    }

    #[test]
    fn encoding_layout() {
        let enc = canonical_encoding(-1, b"hi", &[file("f", b"z")]);
        let mut expected = DOMAIN.to_vec();
        expected.extend_from_slice(&[0xff; 8]);
        expected.extend_from_slice(&2u64.to_be_bytes());
        expected.extend_from_slice(b"hi");
        expected.extend_from_slice(&1u64.to_be_bytes());
        expected.extend_from_slice(&1u64.to_be_bytes());
        expected.extend_from_slice(b"f");
        expected.extend_from_slice(&1u64.to_be_bytes());
        expected.extend_from_slice(b"z");
        assert_eq!(enc, expected);
    }
}
