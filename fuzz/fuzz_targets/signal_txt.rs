//! The DNS TXT participation record parser: split strings, several records.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // first byte picks how the input is cut into records and strings
    let Some((&cut, rest)) = data.split_first() else {
        return;
    };
    let records: Vec<Vec<Vec<u8>>> = rest
        .split(|b| *b == b'\n')
        .map(|r| r.chunks(usize::from(cut).max(1)).map(<[u8]>::to_vec).collect())
        .collect();
    if let Ok(Some(signal)) = askee_core::signal::parse_txt("example.org", &records) {
        let _ = askee_core::signal::verify(
            signal,
            Some("example.org"),
            1_800_000_000,
            askee_core::signal::Freshness::default(),
        );
    }
});
