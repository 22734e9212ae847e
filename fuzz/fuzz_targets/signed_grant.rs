//! A signed grant as a volunteer sends it: base64 statement, JSON inside,
//! signature over it. No input may panic the opener.
#![no_main]

use askee_core::signing::open_grant;
use askee_core::wire::v1::SignedGrant;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: (String, String)| {
    let _ = open_grant(&SignedGrant {
        statement: data.0,
        signature: data.1,
    });
});
