//! Every coordinator request body, through the server's parser, then the
//! checks the server runs on it (statement validation, signature checks):
//! errors are values, never panics.
#![no_main]

use askee_core::validate::parse_json;
use askee_core::wire::v1::{
    Heartbeat, LeaseRequest, NodeRegistration, ResultBatch, ResultReport, ResultStatement,
    TaskBatch, TaskSubmission,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = parse_json::<NodeRegistration>(data);
    let _ = parse_json::<Heartbeat>(data);
    let _ = parse_json::<LeaseRequest>(data);
    let _ = parse_json::<TaskBatch>(data);
    let key = askee_core::SigningKey::from_bytes(&[1; 32]).verifying_key();
    let check = |r: &ResultReport| {
        let st = ResultStatement {
            assignment_id: &r.assignment_id,
            task_id: &r.task_id,
            node_id: "n",
            status: r.status,
            result_digest: &r.result_digest,
        };
        let _ = askee_core::signing::verify_result(&key, &st, &r.signature);
    };
    if let Ok(r) = parse_json::<ResultReport>(data) {
        check(&r);
    }
    // The batch endpoint: every item goes through the same checks.
    if let Ok(b) = parse_json::<ResultBatch>(data) {
        b.results.iter().for_each(check);
    }
    if let Ok(s) = parse_json::<TaskSubmission>(data) {
        let types = ["ml-training", "data-processing", "scientific-compute"];
        let _ = askee_core::coordinator::validate_statement(&s.statement, &types, 0, "statement.");
        if let Ok(key) = askee_core::b64::public_key(&s.operator_public_key) {
            let _ = askee_core::signing::verify_task(&key, &s.statement, &s.signature);
        }
        let _ = askee_core::signing::task_id(&s.statement);
    }
});
