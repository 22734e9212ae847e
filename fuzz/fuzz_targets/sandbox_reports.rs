//! Worker report lines come from a process that ran untrusted code: parsing them must
//! never panic, whatever the bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(reports) = askee_sandbox::proto::parse_reports(data) {
        for r in reports {
            let _ = format!("{r:?}");
        }
    }
});
