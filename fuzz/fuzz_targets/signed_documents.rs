//! Signed documents agents and auditors read: checkpoints (signed notes),
//! revocation lists and revocation certificates.
#![no_main]

use askee_core::note::{self, Checkpoint};
use askee_core::signing::{open_revocation_list, verify_revocation_certificate};
use askee_core::wire::v1::{RevocationCertificate, SignedRevocationList};
use ed25519_dalek::SigningKey;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = SigningKey::from_bytes(&[5; 32]).verifying_key();
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Checkpoint::parse(text);
        assert!(note::open(text, "askee.test", &key).is_err() || text.contains('\u{2014}'));
    }
    if let Ok(list) = serde_json::from_slice::<SignedRevocationList>(data) {
        let _ = open_revocation_list(&key, &list);
    }
    if let Ok(cert) = serde_json::from_slice::<RevocationCertificate>(data) {
        let _ = verify_revocation_certificate(&key, &cert);
    }
});
