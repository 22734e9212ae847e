//! The consent-token decoder on arbitrary input: it must never panic, and
//! nothing but a token signed by the trusted key may pass the signature check.
#![no_main]

use askee_core::token::{Keyring, RevocationStatus};
use ed25519_dalek::SigningKey;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut ring = Keyring::new();
    ring.insert(&SigningKey::from_bytes(&[7; 32]).verifying_key());
    if let Ok(checked) = ring.check_signature(text) {
        // Forging an Ed25519 signature from random input is not possible;
        // reaching here means the decoder accepted something unsigned.
        let _ = checked.accept(0, RevocationStatus::Unknown);
        panic!("an unsigned input passed the signature check: {text:?}");
    }
});
