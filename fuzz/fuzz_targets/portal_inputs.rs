//! The consent portal's untrusted inputs: the session header and the
//! volunteer's choice, through the same parser and checks the server runs.
//! Errors are values, never panics.
#![no_main]

use askee_core::portal::{ChoiceRequest, check_choice, parse_session};
use askee_core::validate::parse_json;
use askee_core::wire::v1::*;
use libfuzzer_sys::fuzz_target;

fn manifest() -> CapabilityManifest {
    let proposed = Permissions {
        resources: Resources {
            cpu_percent_max: 50,
            ram_mb_max: 2048,
            storage_gb_max: 10,
            bandwidth_mbps_max: 10,
        },
        tasks: TaskPermissions {
            allowlist: vec!["data-processing".into(), "ml-training".into()],
            min_reputation: 0.5,
            max_duration_hours: 4,
        },
        monitoring: Monitoring {
            user_activity_yield: true,
            resource_monitoring: true,
            audit_logging: true,
        },
    };
    CapabilityManifest {
        manifest_id: "m".into(),
        operator: OperatorInfo {
            name: "op".into(),
            contact: "c".into(),
            coordinator_url: "https://c".into(),
        },
        node_public_key: "k".into(),
        task_types: vec![],
        proposed,
        grant_expires_at_max: 2_000_000_000,
        token_lifetime_seconds: 3600,
        execution: String::new(),
        data_access: vec![],
        never_accessed: vec![],
        revocation: String::new(),
        created_at: 1_700_000_000,
        expires_at: 1_900_000_000,
    }
}

fuzz_target!(|data: &[u8]| {
    let _ = parse_session(Some(data));
    if let Ok(choice) = parse_json::<ChoiceRequest>(data) {
        let allowed = ["ml-training", "data-processing", "scientific-compute"];
        let _ = check_choice(&choice, &manifest(), &allowed, 1_800_000_000);
    }
});
