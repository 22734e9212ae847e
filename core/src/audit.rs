//! How an audit entry becomes a Merkle leaf: the canonical JSON of the entry,
//! which includes its own index, so that moving an entry to another place
//! changes its hash.

use crate::merkle::{Hash, leaf_hash};
use crate::signing::canonical_json;
use crate::wire::v1::AuditEntry;

/// The leaf bytes and leaf hash of an entry.
pub fn leaf(entry: &AuditEntry) -> (String, Hash) {
    let body = String::from_utf8(canonical_json(entry)).expect("serde_json writes utf-8");
    let hash = leaf_hash(body.as_bytes());
    (body, hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_is_part_of_the_leaf() {
        let mut e = AuditEntry {
            index: 0,
            timestamp_ms: 1,
            kind: "consent.grant".into(),
            subject: "n".into(),
            data: serde_json::json!({"a": 1}),
        };
        let (_, h0) = leaf(&e);
        e.index = 1;
        assert_ne!(leaf(&e).1, h0);
    }
}
