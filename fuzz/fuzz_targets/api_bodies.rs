//! Every request body the HTTP API reads, through the same parser the
//! server uses: errors are values, never panics.
#![no_main]

use askee_core::validate::parse_json;
use askee_core::wire::v1::{
    GrantStatement, RevocationCertificate, SignedGrant, SignedRevocationList,
};
use libfuzzer_sys::fuzz_target;

#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct Join {
    node_public_key: String,
}

fuzz_target!(|data: &[u8]| {
    let _ = parse_json::<SignedGrant>(data);
    let _ = parse_json::<GrantStatement>(data);
    let _ = parse_json::<RevocationCertificate>(data);
    let _ = parse_json::<SignedRevocationList>(data);
    let _ = parse_json::<serde_json::Value>(data);
    if let Ok(g) = parse_json::<GrantStatement>(data) {
        let allowed = ["ml-training", "data-processing", "scientific-compute"];
        let _ = askee_core::validate::permissions(&g.permissions, &allowed, "permissions.");
    }
});
