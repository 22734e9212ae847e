//! The well-known participation document parser.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(signal) = askee_core::signal::parse_document(data) {
        let _ = askee_core::signal::verify(
            signal,
            Some("example.org"),
            1_800_000_000,
            askee_core::signal::Freshness::default(),
        );
    }
});
