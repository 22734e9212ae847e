//! The coordinator over the real router and store, on both backends:
//! attestation, bootstrapping challenges, leases to distinct nodes, the
//! 2f+1 / f+1 quorum with audit evidence, idempotent reports, Byzantine
//! exclusion with token revocation, lease expiry, replica growth up to a
//! cap, progress events and problem documents for bad input.

mod support;

use askee_core::signing::{self, sign_result, sign_task};
use askee_core::wire::v1::*;
use askee_core::{SigningKey, b64};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt as _;
use serde_json::json;
use support::coordinator::*;
use support::{Backend, TestServer, key_of, node};
use tower::ServiceExt as _;

async fn quorum_accepts_with_evidence_in_the_audit_log(backend: Backend) {
    let s = TestServer::start(backend).await;
    let op = operator(&s).await;
    let nodes: Vec<SigningKey> = (1..=4).map(node).collect();
    for (i, n) in nodes.iter().enumerate() {
        let reg = register(&s, n).await;
        assert_eq!(reg["state"], "active");
        // A fresh node is below every floor: no ordinary work yet.
        assert!(reg["reputation"].as_f64().unwrap() < 0.5);
        bootstrap(&s, &op, n, &i.to_string()).await;
    }
    let id = submit(&s, &op, statement(&s, 1, 3, "real-1"), None).await;
    let good = digest_of("right");
    let bad = digest_of("wrong");
    let mut leased = Vec::new();
    for n in &nodes[..3] {
        let a = lease(&s, n, 4).await;
        assert_eq!(a.len(), 1, "one replica per node");
        assert_eq!(a[0].task_id, id);
        // The agent can check the operator's signature over the statement.
        signing::verify_task(
            &b64::public_key(&a[0].operator_public_key).unwrap(),
            &a[0].statement,
            &a[0].operator_signature,
        )
        .unwrap();
        leased.push(a.into_iter().next().unwrap());
    }
    // Three replicas are out: the fourth node gets nothing.
    assert!(lease(&s, &nodes[3], 4).await.is_empty());
    let module = s.get(&leased[0].module.url).await;
    assert_eq!(module.status, StatusCode::OK);

    let ack = report(&s, &nodes[0], &leased[0], &good)
        .await
        .expect(StatusCode::OK);
    assert_eq!(ack["task_state"], "pending");
    let ack = report(&s, &nodes[2], &leased[2], &bad)
        .await
        .expect(StatusCode::OK);
    assert_eq!(ack["task_state"], "pending");
    let before = s.audit_size().await;
    let ack = report(&s, &nodes[1], &leased[1], &good)
        .await
        .expect(StatusCode::OK);
    assert_eq!(ack, json!({"recorded": true, "task_state": "verified"}));
    // Reporting again is answered, and counts nothing.
    let again = report(&s, &nodes[1], &leased[1], &good)
        .await
        .expect(StatusCode::OK);
    assert_eq!(again, json!({"recorded": false, "task_state": "verified"}));

    let st = task_status(&s, &op, &id).await;
    assert_eq!(st.state, TaskState::Verified);
    assert_eq!(st.accepted_digest.as_deref(), Some(good.as_str()));
    assert_eq!(st.evidence.len(), 3);
    assert_eq!(st.stdout.as_deref(), Some(b64::encode(b"out").as_str()));
    let idx = st.audit_index.unwrap();
    assert!(idx >= before);
    let entries = s.state.store.audit_entries(idx, idx + 1).await.unwrap();
    assert_eq!(entries[0].entry.kind, "task.verified");
    assert_eq!(entries[0].entry.subject, id);
    assert_eq!(entries[0].entry.data["digest"], good);
    assert_eq!(
        entries[0].entry.data["evidence"].as_array().unwrap().len(),
        3
    );

    // The dissenter lost accuracy; the agreeing nodes did not.
    let ledger = ledger(&s, &op).await;
    let entry = |n: &SigningKey| {
        ledger["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["node_id"] == key_of(n))
            .unwrap()
            .clone()
    };
    assert_eq!(entry(&nodes[2])["wrong"], 1);
    assert_eq!(entry(&nodes[0])["wrong"], 0);
    assert!(entry(&nodes[2])["reputation"].as_f64() < entry(&nodes[0])["reputation"].as_f64());

    // Progress events: the final state, then the stream ends.
    let resp = s
        .router
        .clone()
        .oneshot(
            Request::get(format!("/v1/tasks/{id}/events"))
                .header("authorization", op.auth().1)
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(
        resp.headers().get("content-type").unwrap(),
        "text/event-stream"
    );
    let text = resp.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&text);
    assert!(text.contains("event: progress"), "{text}");
    assert!(text.contains("\"state\":\"verified\""), "{text}");
}

async fn wrong_answers_exclude_and_revoke(backend: Backend) {
    let s = TestServer::start(backend).await;
    let op = operator(&s).await;
    let liar = node(9);
    let reg = register(&s, &liar).await;
    assert_eq!(reg["state"], "active");
    for i in 0..3 {
        let nonce = format!("c{i}");
        submit(
            &s,
            &op,
            statement(&s, 0, 2, &nonce),
            Some(digest_of(&nonce)),
        )
        .await;
        let got = lease(&s, &liar, 1).await;
        assert_eq!(got.len(), 1);
        report(&s, &liar, &got[0], &digest_of("lie"))
            .await
            .expect(StatusCode::OK);
    }
    // Excluded: no more work, reputation zero, token revoked, reason logged.
    let p = s
        .signed(&liar, "/v1/work/lease", &json!({"max_tasks": 1}))
        .await
        .problem(StatusCode::FORBIDDEN);
    assert_eq!(p["reason"], "byzantine");
    let n = s.state.store.node(&key_of(&liar)).await.unwrap().unwrap();
    assert_eq!(n.state, NodeState::Byzantine);
    assert_eq!(n.reputation_micros, 0);
    assert!(n.exclusion_reason.unwrap().contains("InconsistentResults"));
    let token = s.state.store.token(&n.token_id).await.unwrap().unwrap();
    let v = s.verify(&token.jwt).await.problem(StatusCode::UNAUTHORIZED);
    assert_eq!(v["reason"], "revoked");
    let size = s.audit_size().await;
    let kinds: Vec<String> = s
        .state
        .store
        .audit_entries(0, size)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.entry.kind)
        .collect();
    assert!(kinds.contains(&"node.byzantine".to_string()), "{kinds:?}");
    assert!(kinds.contains(&"consent.revoke".to_string()), "{kinds:?}");
    // Re-registering does not bring it back.
    let granted = s.consent(&liar).await;
    let ch = s
        .signed(&liar, "/v1/nodes/challenge", &json!({}))
        .await
        .expect(StatusCode::OK);
    let challenge = ch["challenge"].as_str().unwrap();
    let att = signing::sign_attestation(
        &liar,
        challenge,
        &granted.consent_token.payload.token_id,
        &profile(),
    );
    let reg = json!({"challenge": challenge, "consent_token": granted.consent_token.token,
        "profile": profile(), "attestation": att});
    s.signed(&liar, "/v1/nodes/register", &reg)
        .await
        .problem(StatusCode::CONFLICT);
}

async fn forged_result_signature_excludes(backend: Backend) {
    let s = TestServer::start(backend).await;
    let op = operator(&s).await;
    let n = node(11);
    register(&s, &n).await;
    submit(&s, &op, statement(&s, 0, 1, "x"), Some(digest_of("x"))).await;
    let got = lease(&s, &n, 1).await;
    let node_id = key_of(&n);
    // Signed by another key.
    let sig = sign_result(
        &node(12),
        &ResultStatement {
            assignment_id: &got[0].assignment_id,
            task_id: &got[0].task_id,
            node_id: &node_id,
            status: ReportStatus::Completed,
            result_digest: &digest_of("x"),
        },
    );
    let body = json!({"assignment_id": got[0].assignment_id, "task_id": got[0].task_id,
        "status": "completed", "result_digest": digest_of("x"), "signature": sig});
    let p = s
        .signed(&n, "/v1/work/results", &body)
        .await
        .problem(StatusCode::UNAUTHORIZED);
    assert_eq!(p["reason"], "bad_result_signature");
    let rec = s.state.store.node(&node_id).await.unwrap().unwrap();
    assert_eq!(rec.state, NodeState::Byzantine);
}

/// An agent reports only what it leased: a validly signed result for
/// another node's assignment is a policy violation (Byzantine evidence that
/// excludes the reporter), and the rightful node's replica is untouched.
async fn reporting_another_nodes_assignment_is_a_policy_violation(backend: Backend) {
    let s = TestServer::start(backend).await;
    let op = operator(&s).await;
    let (owner, thief) = (node(13), node(14));
    register(&s, &owner).await;
    register(&s, &thief).await;
    submit(&s, &op, statement(&s, 0, 1, "p"), Some(digest_of("p"))).await;
    let got = lease(&s, &owner, 1).await;
    assert_eq!(got.len(), 1);
    let p = report(&s, &thief, &got[0], &digest_of("p"))
        .await
        .problem(StatusCode::FORBIDDEN);
    assert_eq!(p["reason"], "policy_violation");
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains(&got[0].assignment_id),
        "{p}"
    );
    let rec = s.state.store.node(&key_of(&thief)).await.unwrap().unwrap();
    assert_eq!(rec.state, NodeState::Byzantine);
    assert_eq!(rec.stats.policy_violations, 1);
    assert!(
        rec.exclusion_reason
            .as_deref()
            .unwrap()
            .contains("PolicyViolations"),
        "{:?}",
        rec.exclusion_reason
    );
    let owner_rec = s.state.store.node(&key_of(&owner)).await.unwrap().unwrap();
    assert_eq!(owner_rec.state, NodeState::Active);
    let ack = report(&s, &owner, &got[0], &digest_of("p"))
        .await
        .expect(StatusCode::OK);
    assert_eq!(ack["recorded"], true);
}

async fn expired_leases_and_silent_nodes_put_work_back(backend: Backend) {
    let s = TestServer::start(backend).await;
    let op = operator(&s).await;
    let a = node(21);
    let b = node(22);
    register(&s, &a).await;
    register(&s, &b).await;
    let id = submit(&s, &op, statement(&s, 0, 1, "t"), Some(digest_of("t"))).await;
    let got = lease(&s, &a, 1).await;
    assert_eq!(got[0].task_id, id);
    assert!(lease(&s, &b, 1).await.is_empty());
    // A heartbeat naming the assignment extends its lease.
    let hb = s
        .signed(
            &a,
            "/v1/nodes/heartbeat",
            &json!({"running": [got[0].assignment_id], "accepting_work": false}),
        )
        .await
        .expect(StatusCode::OK);
    assert_eq!(hb["abandon"], json!([]));
    // Node a goes silent past three heartbeats and the lease: the work goes
    // back and b takes it.
    s.advance(400);
    s.signed(&b, "/v1/nodes/heartbeat", &json!({}))
        .await
        .expect(StatusCode::OK);
    let swept = askee_server::service::coordinator::sweep_once(&s.state)
        .await
        .unwrap();
    assert_eq!(swept.nodes_offline, 1);
    assert_eq!(swept.leases_expired, 1);
    let got_b = lease(&s, &b, 1).await;
    assert_eq!(got_b.len(), 1);
    assert_eq!(got_b[0].task_id, id);
    report(&s, &b, &got_b[0], &digest_of("t"))
        .await
        .expect(StatusCode::OK);
    assert_eq!(task_status(&s, &op, &id).await.state, TaskState::Verified);
    // The silent node's late report counts nothing once the task is decided.
    let late = report(&s, &a, &got[0], &digest_of("t"))
        .await
        .expect(StatusCode::OK);
    assert_eq!(late["recorded"], false);
}

async fn no_quorum_grows_replicas_then_fails_visibly(backend: Backend) {
    let s = TestServer::start(backend).await;
    let op = operator(&s).await;
    let nodes: Vec<SigningKey> = (30..34).map(node).collect();
    for (i, n) in nodes.iter().enumerate() {
        register(&s, n).await;
        bootstrap(&s, &op, n, &format!("q{i}")).await;
    }
    let id = submit(&s, &op, statement(&s, 1, 4, "split"), None).await;
    for (i, n) in nodes.iter().take(3).enumerate() {
        let a = lease(&s, n, 1).await;
        report(&s, n, &a[0], &digest_of(&format!("answer-{i}")))
            .await
            .expect(StatusCode::OK);
    }
    // Three different answers: one more replica, up to the cap of 4.
    let st = task_status(&s, &op, &id).await;
    assert_eq!(st.state, TaskState::Pending);
    let a = lease(&s, &nodes[3], 1).await;
    assert_eq!(a.len(), 1);
    let ack = report(&s, &nodes[3], &a[0], &digest_of("answer-3"))
        .await
        .expect(StatusCode::OK);
    assert_eq!(ack["task_state"], "failed");
    let st = task_status(&s, &op, &id).await;
    assert!(st.reason.unwrap().contains("no quorum"));
    assert_eq!(st.evidence.len(), 4);
}

async fn bad_input_is_a_problem(backend: Backend) {
    let s = TestServer::start(backend).await;
    let op = operator(&s).await;
    let n = node(40);
    // Unregistered nodes get no work.
    let p = s
        .signed(&n, "/v1/work/lease", &json!({"max_tasks": 1}))
        .await
        .problem(StatusCode::FORBIDDEN);
    assert_eq!(p["reason"], "not_registered");
    register(&s, &n).await;
    s.signed(&n, "/v1/work/lease", &json!({"max_tasks": 0}))
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY);
    // A registration with an unknown challenge.
    let granted = s.consent(&node(41)).await;
    let att = signing::sign_attestation(
        &node(41),
        "nope",
        &granted.consent_token.payload.token_id,
        &profile(),
    );
    let reg = json!({"challenge": "nope", "consent_token": granted.consent_token.token,
        "profile": profile(), "attestation": att});
    let p = s
        .signed(&node(41), "/v1/nodes/register", &reg)
        .await
        .problem(StatusCode::UNAUTHORIZED);
    assert_eq!(p["reason"], "unknown_challenge");
    // Someone else's token.
    let p = s
        .signed(&node(42), "/v1/nodes/register", &reg)
        .await
        .problem(StatusCode::FORBIDDEN);
    assert!(p["detail"].as_str().unwrap().contains("another node"));
    // A task signed by another key.
    let st = statement(&s, 1, 3, "bad");
    let sub = json!({"statement": st, "operator_public_key": key_of(&op.key),
        "signature": sign_task(&node(43), &st)});
    let p = s
        .post_raw("/v1/tasks", serde_json::to_vec(&sub).unwrap(), &[op.auth()])
        .await
        .problem(StatusCode::UNAUTHORIZED);
    assert_eq!(p["reason"], "bad_task_signature");
    // A type outside the allowlist and f too small for max_replicas.
    let mut st = statement(&s, 1, 2, "bad2");
    st.task_type = "crypto-mining".into();
    let sub = json!({"statement": st, "operator_public_key": key_of(&op.key),
        "signature": sign_task(&op.key, &st)});
    let p = s
        .post_raw("/v1/tasks", serde_json::to_vec(&sub).unwrap(), &[op.auth()])
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY);
    let fields: Vec<&str> = p["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["statement.task_type", "statement.max_replicas"]);
    // No credential.
    s.post_raw("/v1/tasks", serde_json::to_vec(&sub).unwrap(), &[])
        .await
        .problem(StatusCode::UNAUTHORIZED);
    // A module whose bytes do not match the name.
    let r = s
        .send(
            Request::put(format!("/v1/modules/{}", "0".repeat(64)))
                .header("authorization", op.auth().1)
                .body(Body::from(MODULE))
                .unwrap(),
        )
        .await;
    r.problem(StatusCode::UNPROCESSABLE_ENTITY);
    // A result for an assignment that does not exist.
    let fake = Assignment {
        assignment_id: "nope".into(),
        task_id: "nope".into(),
        module: ModuleRef {
            sha256: String::new(),
            url: String::new(),
            size_bytes: 0,
        },
        statement: statement(&s, 0, 1, "n"),
        operator_public_key: String::new(),
        operator_signature: String::new(),
        lease_expires_at: 0,
    };
    report(&s, &n, &fake, &digest_of("n"))
        .await
        .problem(StatusCode::NOT_FOUND);
    // Cancel: pending → cancelled, then a conflict.
    let id = submit(&s, &op, statement(&s, 1, 3, "c"), None).await;
    let path = format!("/v1/tasks/{id}/cancel");
    s.post_raw(&path, b"{}".to_vec(), &[op.auth()])
        .await
        .expect(StatusCode::OK);
    s.post_raw(&path, b"{}".to_vec(), &[op.auth()])
        .await
        .problem(StatusCode::CONFLICT);
    // Resubmitting the same statement is the same task.
    let st = statement(&s, 1, 3, "same");
    let a = submit(&s, &op, st.clone(), None).await;
    let b = submit(&s, &op, st, None).await;
    assert_eq!(a, b);
}

/// Issue 5: the seed's `exhibits_malicious_patterns` was never detected. Fuel
/// is deterministic and the sandbox stops a module at its limit, so a validly
/// signed report claiming more fuel than the task allows is a malicious
/// pattern: refused, counted, and (threshold 1) the node is excluded. A claim
/// at the limit is honest (a module killed for fuel).
async fn issue_5_a_claim_of_more_fuel_than_the_task_allows_is_a_malicious_pattern(
    backend: Backend,
) {
    let s = TestServer::start(backend).await;
    let op = operator(&s).await;
    let (honest, liar) = (node(15), node(16));
    register(&s, &honest).await;
    register(&s, &liar).await;
    submit(&s, &op, statement(&s, 0, 1, "m"), Some(digest_of("m"))).await;
    let got = lease(&s, &liar, 1).await;
    assert_eq!(got.len(), 1);
    let inflated = ResourceUsage {
        fuel_consumed: 1_000_001,
        ..Default::default()
    };
    let p = report_with_usage(&s, &liar, &got[0], &digest_of("m"), inflated)
        .await
        .problem(StatusCode::FORBIDDEN);
    assert_eq!(p["reason"], "malicious_pattern");
    assert!(p["detail"].as_str().unwrap().contains("1000001"), "{p}");
    let rec = s.state.store.node(&key_of(&liar)).await.unwrap().unwrap();
    assert_eq!(rec.state, NodeState::Byzantine);
    assert_eq!(rec.stats.malicious_patterns, 1);
    assert!(
        rec.exclusion_reason
            .as_deref()
            .unwrap()
            .contains("MaliciousPatterns"),
        "{:?}",
        rec.exclusion_reason
    );

    submit(&s, &op, statement(&s, 0, 1, "n"), Some(digest_of("n"))).await;
    let got = lease(&s, &honest, 1).await;
    assert_eq!(got.len(), 1);
    let at_limit = ResourceUsage {
        fuel_consumed: 1_000_000,
        ..Default::default()
    };
    report_with_usage(&s, &honest, &got[0], &digest_of("n"), at_limit)
        .await
        .expect(StatusCode::OK);
    let rec = s.state.store.node(&key_of(&honest)).await.unwrap().unwrap();
    assert_eq!(rec.state, NodeState::Active);
    assert_eq!(rec.stats.malicious_patterns, 0);
}

both_backends!(
    quorum_accepts_with_evidence_in_the_audit_log,
    wrong_answers_exclude_and_revoke,
    forged_result_signature_excludes,
    reporting_another_nodes_assignment_is_a_policy_violation,
    issue_5_a_claim_of_more_fuel_than_the_task_allows_is_a_malicious_pattern,
    expired_leases_and_silent_nodes_put_work_back,
    no_quorum_grows_replicas_then_fails_visibly,
    bad_input_is_a_problem,
);
