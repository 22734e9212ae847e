//! The coordinator's side of the in-process harness: an operator with a
//! task-signing key and an uploaded module, signed task statements, node
//! registration with attestation, leases and signed result reports.

use askee_core::signing::{self, sign_result, sign_task};
use askee_core::wire::v1::*;
use askee_core::{SigningKey, b64};
use askee_server::service::auth::credential_hash;
use askee_server::store::OperatorRecord;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};

use super::{Reply, TestServer, key_of};

pub const MODULE: &[u8] = b"\0asm\x01\0\0\0";

pub fn profile() -> SystemProfile {
    serde_json::from_value(json!({
        "os": "linux",
        "cpu": {"arch": "x86_64", "model": "test", "cores": 4, "frequency_mhz": 0},
        "memory": {"total_mb": 4096, "available_mb": 2048},
        "storage": {"free_gb": 20, "total_gb": 40},
        "network": {"bandwidth_mbps": 100, "metered": null},
        "gpus": [],
        "containerSupport": {"isolation": "linux-namespaces", "cgroup_version": 2,
            "user_namespaces": true, "seccomp": true, "landlock_abi": 4, "wasm": true}
    }))
    .unwrap()
}

pub fn digest_of(answer: &str) -> String {
    hex::encode(signing::sha256(answer.as_bytes()))
}

pub struct Op {
    pub credential: String,
    pub key: SigningKey,
}

impl Op {
    pub fn auth(&self) -> (&'static str, String) {
        ("authorization", format!("Bearer {}", self.credential))
    }
}

pub async fn operator(s: &TestServer) -> Op {
    let credential = "askee_op_test-credential".to_string();
    s.state
        .store
        .create_operator(
            &OperatorRecord {
                name: "ops".into(),
                token_hash: credential_hash(&credential),
                created_at: s.now(),
            },
            askee_server::service::consent::draft(&s.state, "operator.create", "ops", json!({})),
        )
        .await
        .unwrap();
    let op = Op {
        credential,
        key: SigningKey::from_bytes(&[200; 32]),
    };
    let body = json!({"public_key": key_of(&op.key)});
    s.post_raw(
        "/v1/operators/keys",
        serde_json::to_vec(&body).unwrap(),
        &[op.auth()],
    )
    .await
    .expect(StatusCode::CREATED);
    let sha = hex::encode(signing::sha256(MODULE));
    let resp = s
        .send(
            Request::put(format!("/v1/modules/{sha}"))
                .header("authorization", format!("Bearer {}", op.credential))
                .header("content-type", "application/wasm")
                .body(Body::from(MODULE))
                .unwrap(),
        )
        .await;
    assert_eq!(resp.status, StatusCode::CREATED, "{}", resp.body);
    op
}

pub fn statement(s: &TestServer, f: u32, max_replicas: u32, nonce: &str) -> TaskStatement {
    TaskStatement {
        version: TASK_STATEMENT_VERSION.into(),
        module_sha256: hex::encode(signing::sha256(MODULE)),
        task_type: "data-processing".into(),
        inputs: TaskInputs {
            args: vec![nonce.into()],
            ..Default::default()
        },
        requirements: TaskRequirements {
            cpu_cores: 1,
            ram_mb: 64,
            storage_gb: 0,
            bandwidth_mbps: 0,
        },
        limits: TaskLimits {
            fuel: 1_000_000,
            memory_mb: 64,
            wall_seconds: 60,
            cpu_percent: 50,
        },
        random_seed: 1,
        deadline: s.now() + 3600,
        f,
        max_replicas,
        adaptive: false,
        nonce: nonce.into(),
    }
}

pub async fn submit(s: &TestServer, op: &Op, st: TaskStatement, known: Option<String>) -> String {
    let sub = TaskSubmission {
        signature: sign_task(&op.key, &st),
        statement: st,
        operator_public_key: key_of(&op.key),
        // In these tests every task with a known answer is a challenge for
        // new nodes.
        bootstrap: known.is_some(),
        known_digest: known,
    };
    let body = s
        .post_raw("/v1/tasks", serde_json::to_vec(&sub).unwrap(), &[op.auth()])
        .await
        .expect(StatusCode::CREATED);
    body["task_id"].as_str().unwrap().to_owned()
}

/// consent → challenge → attested registration.
pub async fn register(s: &TestServer, n: &SigningKey) -> Value {
    let granted = s.consent(n).await;
    let ch = s
        .signed(n, "/v1/nodes/challenge", &json!({}))
        .await
        .expect(StatusCode::OK);
    let challenge = ch["challenge"].as_str().unwrap();
    let p = profile();
    let att = signing::sign_attestation(n, challenge, &granted.consent_token.payload.token_id, &p);
    let reg = NodeRegistration {
        challenge: challenge.into(),
        consent_token: granted.consent_token.token.clone(),
        profile: p,
        attestation: att,
    };
    s.signed(
        n,
        "/v1/nodes/register",
        &serde_json::to_value(&reg).unwrap(),
    )
    .await
    .expect(StatusCode::OK)
}

pub async fn lease(s: &TestServer, n: &SigningKey, max: u32) -> Vec<Assignment> {
    let r = s
        .signed(n, "/v1/work/lease", &json!({"max_tasks": max}))
        .await
        .expect(StatusCode::OK);
    serde_json::from_value(r["assignments"].clone()).unwrap()
}

pub async fn report(s: &TestServer, n: &SigningKey, a: &Assignment, digest: &str) -> Reply {
    report_with_usage(s, n, a, digest, ResourceUsage::default()).await
}

/// [`report`] with the resources the node claims the replica used.
pub async fn report_with_usage(
    s: &TestServer,
    n: &SigningKey,
    a: &Assignment,
    digest: &str,
    usage: ResourceUsage,
) -> Reply {
    let r = ResultReport {
        usage,
        ..signed_report(n, a, digest, n)
    };
    s.signed(n, "/v1/work/results", &serde_json::to_value(&r).unwrap())
        .await
}

/// `n`'s completed result for `a`, its result statement signed by `signer`
/// (`n` itself unless a test forges it).
pub fn signed_report(
    n: &SigningKey,
    a: &Assignment,
    digest: &str,
    signer: &SigningKey,
) -> ResultReport {
    let node_id = key_of(n);
    let signature = sign_result(
        signer,
        &ResultStatement {
            assignment_id: &a.assignment_id,
            task_id: &a.task_id,
            node_id: &node_id,
            status: ReportStatus::Completed,
            result_digest: digest,
        },
    );
    ResultReport {
        assignment_id: a.assignment_id.clone(),
        task_id: a.task_id.clone(),
        status: ReportStatus::Completed,
        result_digest: digest.into(),
        exit_code: 0,
        stdout: b64::encode(b"out"),
        outputs: Default::default(),
        failure: String::new(),
        usage: ResourceUsage::default(),
        signature,
    }
}

/// The reputation ledger, read as the operator.
pub async fn ledger(s: &TestServer, op: &Op) -> Value {
    s.send(
        Request::get("/v1/reputation")
            .header("authorization", op.auth().1)
            .body(Body::empty())
            .unwrap(),
    )
    .await
    .expect(StatusCode::OK)
}

/// A new node earns eligibility by answering challenges (known answers).
pub async fn bootstrap(s: &TestServer, op: &Op, n: &SigningKey, tag: &str) {
    for i in 0..3 {
        let nonce = format!("challenge-{tag}-{i}");
        submit(s, op, statement(s, 0, 1, &nonce), Some(digest_of(&nonce))).await;
        let got = lease(s, n, 1).await;
        assert_eq!(got.len(), 1, "a bootstrapping node gets a challenge");
        assert_eq!(got[0].statement.nonce, nonce);
        report(s, n, &got[0], &digest_of(&nonce))
            .await
            .expect(StatusCode::OK);
    }
}

pub async fn task_status(s: &TestServer, op: &Op, id: &str) -> TaskStatus {
    let r = s
        .send(
            Request::get(format!("/v1/tasks/{id}"))
                .header("authorization", op.auth().1)
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    serde_json::from_value(r.expect(StatusCode::OK)).unwrap()
}
