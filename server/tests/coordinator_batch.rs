//! Batched result reports (`POST /v1/work/results/batch`, issue 5) over the
//! real router and store, on both backends: per-item outcomes for a mixed
//! batch (a good result, a replayed one, a bad result signature, a bad
//! field), nothing stored for refused items, a replayed request refused as a
//! whole with nothing changed, quorum decisions with their audit entries
//! inside a batch, and node counters folded from node events.

mod support;

use askee_core::SigningKey;
use askee_core::signing::{sign_result, signed_headers};
use askee_core::wire::v1::*;
use askee_server::store::AssignmentState;
use axum::http::StatusCode;
use serde_json::{Value, json};
use support::coordinator::*;
use support::{Backend, Reply, TestServer, key_of, node};

/// The batch request signed by `n` with the given nonce.
async fn send_batch(
    s: &TestServer,
    n: &SigningKey,
    nonce: &str,
    results: &[ResultReport],
) -> Reply {
    let path = "/v1/work/results/batch";
    let bytes = serde_json::to_vec(&json!({ "results": results })).unwrap();
    let headers = signed_headers(n, "POST", path, &bytes, s.now(), nonce);
    s.post_raw(path, bytes, &headers).await
}

fn acks(v: &Value) -> ResultBatchAck {
    serde_json::from_value(v.clone()).unwrap()
}

async fn assignment_of(
    s: &TestServer,
    task_id: &str,
    n: &SigningKey,
) -> askee_server::store::AssignmentRecord {
    s.state
        .store
        .assignments_of_task(task_id)
        .await
        .unwrap()
        .into_iter()
        .find(|a| a.node_key == key_of(n))
        .unwrap()
}

async fn mixed_batch_outcomes_per_item(backend: Backend) {
    let s = TestServer::start(backend).await;
    let op = operator(&s).await;
    let nodes: Vec<SigningKey> = (31..=33).map(node).collect();
    for (i, n) in nodes.iter().enumerate() {
        register(&s, n).await;
        bootstrap(&s, &op, n, &format!("batch-{i}")).await;
    }
    let ids: Vec<String> = {
        let mut ids = Vec::new();
        for t in ["b-1", "b-2", "b-3"] {
            ids.push(submit(&s, &op, statement(&s, 1, 3, t), None).await);
        }
        ids
    };
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    let by_task = |got: Vec<Assignment>| {
        let mut got = got;
        got.sort_by_key(|x| ids.iter().position(|i| *i == x.task_id));
        got
    };
    let la = by_task(lease(&s, a, 8).await);
    let lb = by_task(lease(&s, b, 8).await);
    let lc = by_task(lease(&s, c, 8).await);
    assert_eq!((la.len(), lb.len(), lc.len()), (3, 3, 3));
    let good = digest_of("right");

    // T1 reported once already through the single-result endpoint.
    report(&s, a, &la[0], &good).await.expect(StatusCode::OK);

    let mut bad_field = signed_report(a, &la[2], &good, a);
    bad_field.result_digest = "xyz".into();
    let items = vec![
        signed_report(a, &la[1], &good, a),         // new: recorded
        signed_report(a, &la[0], &good, a),         // replayed item: not recorded again
        signed_report(a, &la[2], &good, &node(99)), // result signed by another key
        bad_field,                                  // not a digest
    ];
    let batch_nonce = support::nonce();
    let r = send_batch(&s, a, &batch_nonce, &items)
        .await
        .expect(StatusCode::OK);
    let r = acks(&r);
    assert_eq!(r.results.len(), 4);
    for (item, ack) in items.iter().zip(&r.results) {
        assert_eq!(item.assignment_id, ack.assignment_id, "request order");
    }
    assert_eq!(
        r.results[0].ack,
        Some(ResultAck {
            recorded: true,
            task_state: TaskState::Pending
        })
    );
    assert_eq!(
        r.results[1].ack,
        Some(ResultAck {
            recorded: false,
            task_state: TaskState::Pending
        })
    );
    let p = r.results[2].problem.as_ref().unwrap();
    assert_eq!(
        (p.status, p.reason.as_deref()),
        (401, Some("bad_result_signature"))
    );
    assert!(r.results[2].ack.is_none());
    let p = r.results[3].problem.as_ref().unwrap();
    assert_eq!(p.status, 422);
    assert_eq!(p.errors[0].field, "results[3].result_digest");

    // Refused items stored nothing: T3's replica of A is still leased and
    // bare; the good item is stored whole.
    let t3 = assignment_of(&s, &ids[2], a).await;
    assert_eq!(t3.state, AssignmentState::Leased);
    assert_eq!((t3.signature, t3.result_digest), (None, None));
    let t2 = assignment_of(&s, &ids[1], a).await;
    assert_eq!(t2.state, AssignmentState::Reported);
    assert_eq!(t2.result_digest.as_deref(), Some(good.as_str()));
    assert_eq!(t2.signature.as_deref(), Some(items[0].signature.as_str()));
    // The forged result signature is Byzantine evidence, as for a single
    // report: the node is excluded and its token revoked.
    let rec = s.state.store.node(&key_of(a)).await.unwrap().unwrap();
    assert_eq!(rec.stats.invalid_signatures, 1);
    assert_eq!(rec.state, NodeState::Byzantine);
    let token = s.state.store.token(&rec.token_id).await.unwrap().unwrap();
    let v = s.verify(&token.jwt).await.problem(StatusCode::UNAUTHORIZED);
    assert_eq!(v["reason"], "revoked");

    // The same signed request again is a replay: refused whole, nothing
    // changes (not even the misbehaviour count).
    let audit_before = s.audit_size().await;
    let p = send_batch(&s, a, &batch_nonce, &items)
        .await
        .problem(StatusCode::UNAUTHORIZED);
    assert_eq!(p["reason"], "replayed_request");
    let t = s.state.store.task(&ids[1]).await.unwrap().unwrap();
    assert_eq!(t.results_received, 1);
    let rec = s.state.store.node(&key_of(a)).await.unwrap().unwrap();
    assert_eq!(rec.stats.invalid_signatures, 1);
    assert_eq!(s.audit_size().await, audit_before);

    // B's batch adds a second result to two tasks; C's completes both
    // quorums in one transaction: both verified, each with its audit entry
    // and evidence.
    // The same result twice in one batch counts once.
    let r = send_batch(
        &s,
        b,
        &support::nonce(),
        &[
            signed_report(b, &lb[1], &good, b),
            signed_report(b, &lb[0], &good, b),
            signed_report(b, &lb[1], &good, b),
        ],
    )
    .await
    .expect(StatusCode::OK);
    let recorded: Vec<bool> = acks(&r)
        .results
        .into_iter()
        .map(|a| a.ack.unwrap().recorded)
        .collect();
    assert_eq!(recorded, [true, true, false]);
    let t = s.state.store.task(&ids[1]).await.unwrap().unwrap();
    assert_eq!(t.results_received, 2);
    let r = send_batch(
        &s,
        c,
        &support::nonce(),
        &[
            signed_report(c, &lc[0], &good, c),
            signed_report(c, &lc[1], &good, c),
        ],
    )
    .await
    .expect(StatusCode::OK);
    for ack in acks(&r).results {
        assert_eq!(
            ack.ack,
            Some(ResultAck {
                recorded: true,
                task_state: TaskState::Verified
            })
        );
    }
    for id in &ids[..2] {
        let st = task_status(&s, &op, id).await;
        assert_eq!(st.state, TaskState::Verified);
        assert_eq!(st.accepted_digest.as_deref(), Some(good.as_str()));
        let idx = st.audit_index.expect("audit index of the verdict");
        let e = s.state.store.audit_entries(idx, idx + 1).await.unwrap();
        assert_eq!(e[0].entry.kind, "task.verified");
        assert_eq!(e[0].entry.subject, *id);
        assert_eq!(e[0].entry.data["evidence"].as_array().unwrap().len(), 3);
    }
    // A result sent again in a new request is answered, not recorded.
    let r = send_batch(
        &s,
        b,
        &support::nonce(),
        &[signed_report(b, &lb[0], &good, b)],
    )
    .await
    .expect(StatusCode::OK);
    assert_eq!(
        acks(&r).results[0].ack,
        Some(ResultAck {
            recorded: false,
            task_state: TaskState::Verified
        })
    );

    // Counters come from node events, folded before the ledger is read:
    // B has its three challenges and two agreeing results.
    let ledger = ledger(&s, &op).await;
    let entry = ledger["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["node_id"] == key_of(b))
        .unwrap()
        .clone();
    assert_eq!(entry["agreed"], 5);
    assert_eq!(entry["completed"], 5);
    assert_eq!(entry["wrong"], 0);
}

async fn batch_size_is_bounded(backend: Backend) {
    let s = TestServer::start(backend).await;
    let n = node(40);
    register(&s, &n).await;
    let p = send_batch(&s, &n, &support::nonce(), &[])
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(p["errors"][0]["field"], "results");
    let one = ResultReport {
        assignment_id: "a".into(),
        task_id: "t".into(),
        status: ReportStatus::Failed,
        result_digest: String::new(),
        exit_code: 1,
        stdout: String::new(),
        outputs: Default::default(),
        failure: "x".into(),
        usage: ResourceUsage::default(),
        signature: "s".into(),
    };
    let many = vec![one; MAX_RESULT_BATCH + 1];
    let p = send_batch(&s, &n, &support::nonce(), &many)
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(p["errors"][0]["field"], "results");
    // Unknown assignments are per-item problems, not a failed request.
    let r = send_batch(
        &s,
        &n,
        &support::nonce(),
        &[ResultReport {
            signature: sign_result(
                &n,
                &ResultStatement {
                    assignment_id: "a",
                    task_id: "t",
                    node_id: &key_of(&n),
                    status: ReportStatus::Failed,
                    result_digest: "",
                },
            ),
            ..many[0].clone()
        }],
    )
    .await
    .expect(StatusCode::OK);
    assert_eq!(acks(&r).results[0].problem.as_ref().unwrap().status, 404);
}

both_backends!(mixed_batch_outcomes_per_item, batch_size_is_bounded);
