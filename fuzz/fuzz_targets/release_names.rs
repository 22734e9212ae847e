//! Release target names and versions from the update repository's signed
//! targets metadata (`askee_core::release`): parse, round-trip, choose.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // "<name>\n<custom version>"
    let (name, custom) = match text.split_once('\n') {
        Some((n, c)) => (n, Some(c)),
        None => (text, None),
    };
    if let Ok(v) = askee_core::release::Version::parse(name) {
        assert_eq!(askee_core::release::Version::parse(&v.to_string()), Ok(v));
    }
    if let Ok(r) = askee_core::release::parse_target(name, custom) {
        let again =
            askee_core::release::component_target_name(r.component, r.version, &r.platform)
                .unwrap();
        assert_eq!(again, r.name);
        // The worker of the same release parses back as that worker (when
        // its longer name is still within the limit).
        if r.worker_name().len() > askee_core::release::MAX_TARGET_NAME {
            return;
        }
        let w = askee_core::release::parse_target(&r.worker_name(), custom).unwrap();
        assert_eq!(w.component, askee_core::release::Component::Worker);
        assert_eq!((w.version, &w.platform), (r.version, &r.platform));
        let pair = [r.clone(), w];
        let chosen = askee_core::release::choose(
            &pair,
            &r.platform,
            askee_core::release::Version { major: 0, minor: 0, patch: 0 },
            &[],
        );
        let agent = r.component == askee_core::release::Component::Agent;
        assert_eq!(chosen.is_some(), agent && r.version.to_string() != "0.0.0");
        // Alone, a release is never complete.
        let alone = askee_core::release::choose(
            std::slice::from_ref(&r),
            &r.platform,
            askee_core::release::Version { major: 0, minor: 0, patch: 0 },
            &[],
        );
        assert!(alone.is_none());
    }
});
