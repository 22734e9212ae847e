//! The `askee:` QR payload parser.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(signal) = askee_core::signal::parse_uri(text) {
        let uri = askee_core::signal::to_uri(&signal);
        assert_eq!(askee_core::signal::parse_uri(&uri).as_ref(), Ok(&signal));
    }
});
