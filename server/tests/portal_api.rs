//! The consent portal and the operator dashboard through the real router and
//! store, on both backends: pairing → choice (never wider, problems naming
//! the field) → a grant signed by the node key over exactly the choice →
//! status → revoke; every way a session or a page-made grant is refused; and
//! the dashboard's operator-only views over real nodes and tasks.

mod support;

use askee_core::signing;
use askee_core::wire::v1::*;
use askee_core::{SigningKey, b64};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};
use support::coordinator::{Op, digest_of, lease, operator, register, report, statement, submit};
use support::{Backend, Reply, TestServer, key_of, node};

const SESSION: &str = "askee-portal-session";
async fn pair(s: &TestServer, n: &SigningKey, manifest_id: Option<&str>) -> String {
    let r = s
        .signed(
            n,
            "/v1/portal/pairings",
            &json!({ "manifest_id": manifest_id }),
        )
        .await
        .expect(StatusCode::CREATED);
    let secret = r["session"].as_str().unwrap().to_owned();
    assert_eq!(secret.len(), 64);
    assert_eq!(
        r["url"].as_str().unwrap(),
        format!("http://askee.test/portal#{secret}"),
        "the secret travels in the fragment only"
    );
    secret
}

async fn get_with(s: &TestServer, path: &str, session: &str) -> Reply {
    s.send(
        Request::get(path)
            .header(SESSION, session)
            .body(Body::empty())
            .unwrap(),
    )
    .await
}

async fn post_with(s: &TestServer, path: &str, session: &str, body: &Value) -> Reply {
    s.post_raw(
        path,
        serde_json::to_vec(body).unwrap(),
        &[(SESSION, session.to_owned())],
    )
    .await
}

fn fields(problem: &Value) -> Vec<String> {
    problem["errors"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| e["field"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

async fn pair_choose_grant_revoke(backend: Backend) {
    let s = TestServer::start(backend).await;
    let volunteer = node(1);
    let m = s.join(&volunteer).await;
    let id = m.manifest.manifest_id.clone();
    let secret = pair(&s, &volunteer, Some(&id)).await;

    let view = get_with(&s, "/v1/portal/session", &secret)
        .await
        .expect(StatusCode::OK);
    assert_eq!(view["state"], "review");
    assert_eq!(view["manifest"]["manifest_digest"], m.manifest_digest);
    assert_eq!(view["node_public_key"], key_of(&volunteer));

    // Wider than proposed: refused, naming the field.
    let mut wide = m.manifest.proposed.clone();
    wide.resources.cpu_percent_max += 1;
    let end = s.now() + 86_400;
    let p = post_with(
        &s,
        "/v1/portal/choice",
        &secret,
        &json!({"permissions": wide, "grant_expires_at": end}),
    )
    .await
    .problem(StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        fields(&p),
        vec!["permissions.resources.cpu_percent_max".to_owned()]
    );
    let late = m.manifest.grant_expires_at_max + 1;
    let p = post_with(
        &s,
        "/v1/portal/choice",
        &secret,
        &json!({"permissions": m.manifest.proposed, "grant_expires_at": late}),
    )
    .await
    .problem(StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(fields(&p), vec!["grant_expires_at".to_owned()]);
    let p = post_with(&s, "/v1/portal/choice", &secret, &json!({"permissions": 1}))
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY);
    assert!(p["detail"].as_str().unwrap().contains("permissions") || !fields(&p).is_empty());

    // A page cannot grant: no choice yet, and a grant needs the node key.
    let mut chosen = m.manifest.proposed.clone();
    chosen.resources.cpu_percent_max = 20;
    chosen.resources.ram_mb_max = 512;
    chosen.tasks.allowlist = vec!["data-processing".into()];
    let mut st = s.statement(&volunteer, &m, chosen.clone());
    st.grant_expires_at = end;
    post_with(
        &s,
        "/v1/portal/grant",
        &secret,
        &serde_json::to_value(signing::sign_grant(&volunteer, &st)).unwrap(),
    )
    .await
    .problem(StatusCode::CONFLICT);

    let chosen_view = post_with(
        &s,
        "/v1/portal/choice",
        &secret,
        &json!({"permissions": chosen, "grant_expires_at": end}),
    )
    .await
    .expect(StatusCode::OK);
    assert_eq!(chosen_view["state"], "chosen");
    // One choice per pairing.
    post_with(
        &s,
        "/v1/portal/choice",
        &secret,
        &json!({"permissions": m.manifest.proposed, "grant_expires_at": end}),
    )
    .await
    .problem(StatusCode::CONFLICT);
    // The agent's long-poll answers at once when the state moved on.
    let waited = get_with(&s, "/v1/portal/session?wait=30&seen=review", &secret)
        .await
        .expect(StatusCode::OK);
    assert_eq!(waited["state"], "chosen");
    assert_eq!(
        waited["choice"]["permissions"],
        serde_json::to_value(&chosen).unwrap()
    );

    // What a page could send: the statement with a forged signature.
    let mut forged = signing::sign_grant(&volunteer, &st);
    forged.signature = b64::encode([7u8; 64]);
    let p = post_with(
        &s,
        "/v1/portal/grant",
        &secret,
        &serde_json::to_value(&forged).unwrap(),
    )
    .await
    .problem(StatusCode::UNAUTHORIZED);
    assert_eq!(p["reason"], "bad_signature");
    // Signed by another key (naming itself): not the session's node.
    let intruder = node(9);
    let mut other = st.clone();
    other.node_public_key = key_of(&intruder);
    let p = post_with(
        &s,
        "/v1/portal/grant",
        &secret,
        &serde_json::to_value(signing::sign_grant(&intruder, &other)).unwrap(),
    )
    .await
    .problem(StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(fields(&p), vec!["statement.node_public_key".to_owned()]);
    // Signed by the node but over other limits than the choice.
    let mut wider_st = st.clone();
    wider_st.permissions = m.manifest.proposed.clone();
    let p = post_with(
        &s,
        "/v1/portal/grant",
        &secret,
        &serde_json::to_value(signing::sign_grant(&volunteer, &wider_st)).unwrap(),
    )
    .await
    .problem(StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(fields(&p), vec!["statement.permissions".to_owned()]);
    // Nothing was granted by any of that.
    assert_eq!(
        s.state
            .store
            .grants_of_node(&key_of(&volunteer))
            .await
            .unwrap()
            .len(),
        0
    );

    // The node's signature over exactly the choice grants.
    let granted = post_with(
        &s,
        "/v1/portal/grant",
        &secret,
        &serde_json::to_value(signing::sign_grant(&volunteer, &st)).unwrap(),
    )
    .await
    .expect(StatusCode::CREATED);
    let token: ConsentToken = serde_json::from_value(granted["consent_token"].clone()).unwrap();
    assert_eq!(token.payload.permissions, chosen);
    // Single use.
    post_with(
        &s,
        "/v1/portal/grant",
        &secret,
        &serde_json::to_value(signing::sign_grant(&volunteer, &st)).unwrap(),
    )
    .await
    .problem(StatusCode::CONFLICT);
    let view = get_with(&s, "/v1/portal/session?wait=30&seen=chosen", &secret)
        .await
        .expect(StatusCode::OK);
    assert_eq!(view["state"], "granted");
    assert_eq!(view["token_id"], token.payload.token_id.as_str());

    let status = get_with(&s, "/v1/portal/status", &secret)
        .await
        .expect(StatusCode::OK);
    assert_eq!(status["grants"][0]["tokens"][0]["status"], "active");
    assert_eq!(
        status["grants"][0]["tokens"][0]["token_id"],
        token.payload.token_id.as_str()
    );
    let kinds: Vec<&str> = status["audit"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["kind"].as_str().unwrap())
        .collect();
    for kind in [
        "invitation.create",
        "portal.pair",
        "portal.choice",
        "consent.grant",
        "token.issue",
    ] {
        assert!(kinds.contains(&kind), "{kind} missing from {kinds:?}");
    }
    assert!(status["usage"].is_null(), "not registered yet");

    // Revoke from the page: the consent engine's revocation, seen at once.
    let revoked = post_with(
        &s,
        "/v1/portal/revoke",
        &secret,
        &json!({"token_id": token.payload.token_id}),
    )
    .await
    .expect(StatusCode::OK);
    assert_eq!(revoked["status"], "revoked");
    assert_eq!(revoked["revoked_by"], "volunteer");
    let watched = s
        .get(&format!("/revoke/{}?wait=30", token.payload.token_id))
        .await
        .expect(StatusCode::OK);
    assert_eq!(watched["status"], "revoked");
    s.verify(&token.token)
        .await
        .problem(StatusCode::UNAUTHORIZED);
    let status = get_with(&s, "/v1/portal/status", &secret)
        .await
        .expect(StatusCode::OK);
    assert_eq!(status["grants"][0]["tokens"][0]["status"], "revoked");
}

async fn sessions_are_refused(backend: Backend) {
    let s = TestServer::start(backend).await;
    let volunteer = node(2);
    let m = s.join(&volunteer).await;
    let id = m.manifest.manifest_id.clone();

    let p = s
        .get("/v1/portal/session")
        .await
        .problem(StatusCode::UNAUTHORIZED);
    assert_eq!(p["reason"], "bad_session");
    let p = get_with(&s, "/v1/portal/session", "not-hex")
        .await
        .problem(StatusCode::UNAUTHORIZED);
    assert_eq!(p["reason"], "bad_session");
    let p = get_with(&s, "/v1/portal/status", &"a".repeat(64))
        .await
        .problem(StatusCode::UNAUTHORIZED);
    assert_eq!(p["reason"], "unknown_session");

    // Pairing needs the node's signature, and its own manifest.
    s.post("/v1/portal/pairings", &json!({"manifest_id": id}))
        .await
        .problem(StatusCode::UNAUTHORIZED);
    let p = s
        .signed(&node(3), "/v1/portal/pairings", &json!({"manifest_id": id}))
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(fields(&p), vec!["manifest_id".to_owned()]);
    s.signed(
        &volunteer,
        "/v1/portal/pairings",
        &json!({"manifest_id": "nope"}),
    )
    .await
    .problem(StatusCode::NOT_FOUND);
    let p = s
        .signed(
            &volunteer,
            "/v1/portal/pairings",
            &json!({"manifest_id": id, "extra": 1}),
        )
        .await;
    assert!(p.status.is_client_error(), "{}", p.body);

    // A status-only session cannot choose.
    let status_only = pair(&s, &volunteer, None).await;
    let v = get_with(&s, "/v1/portal/session", &status_only)
        .await
        .expect(StatusCode::OK);
    assert_eq!(v["state"], "status");
    post_with(
        &s,
        "/v1/portal/choice",
        &status_only,
        &json!({"permissions": m.manifest.proposed, "grant_expires_at": s.now() + 60}),
    )
    .await
    .problem(StatusCode::CONFLICT);

    // Sessions expire.
    let secret = pair(&s, &volunteer, Some(&id)).await;
    s.advance(askee_server::service::portal::SESSION_LIFETIME_SECS);
    let p = get_with(&s, "/v1/portal/session", &secret)
        .await
        .problem(StatusCode::UNAUTHORIZED);
    assert_eq!(p["reason"], "session_expired");

    // A revoke through a session only reaches the session's own node.
    let other = node(4);
    let granted = s.consent(&other).await;
    let fresh = pair(&s, &volunteer, None).await;
    post_with(
        &s,
        "/v1/portal/revoke",
        &fresh,
        &json!({"token_id": granted.consent_token.payload.token_id}),
    )
    .await
    .problem(StatusCode::FORBIDDEN);
}

/// One bootstrapping challenge (f = 0, a known answer) leased and answered.
async fn run_challenge(s: &TestServer, op: &Op, n: &SigningKey) -> String {
    let nonce = "dashboard-challenge";
    let task_id = submit(s, op, statement(s, 0, 1, nonce), Some(digest_of(nonce))).await;
    let a = lease(s, n, 1).await;
    assert_eq!(a.len(), 1);
    report(s, n, &a[0], &digest_of(nonce))
        .await
        .expect(StatusCode::OK);
    task_id
}

async fn get_op(s: &TestServer, op: &Op, path: &str) -> Value {
    s.send(
        Request::get(path)
            .header("authorization", op.auth().1)
            .body(Body::empty())
            .unwrap(),
    )
    .await
    .expect(StatusCode::OK)
}

async fn dashboard_views(backend: Backend) {
    let s = TestServer::start(backend).await;
    let op = operator(&s).await;
    let worker = node(5);
    register(&s, &worker).await;
    let task_id = run_challenge(&s, &op, &worker).await;
    s.state
        .store
        .discovery()
        .add_domains(&["volunteers.example".into()], s.now())
        .await
        .unwrap();
    let cp = askee_server::service::audit::checkpoint_now(
        s.state.store.as_ref(),
        &s.state.keys,
        &s.state.config.log_origin(),
        s.state.clock.now_ms(),
    )
    .await
    .unwrap();

    for path in [
        "/v1/dashboard/nodes",
        "/v1/dashboard/tasks",
        "/v1/dashboard/discovery",
        "/v1/dashboard/checkpoints",
        "/v1/dashboard/throughput",
    ] {
        let p = s.get(path).await.problem(StatusCode::UNAUTHORIZED);
        assert_eq!(p["reason"], "missing_credential", "{path}");
        let p = s
            .send(
                Request::get(path)
                    .header("authorization", "Bearer wrong")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .problem(StatusCode::UNAUTHORIZED);
        assert_eq!(p["reason"], "unknown_credential", "{path}");
    }

    let nodes = get_op(&s, &op, "/v1/dashboard/nodes").await;
    assert_eq!(nodes.as_array().unwrap().len(), 1);
    assert_eq!(nodes[0]["node_key"], key_of(&worker));
    assert_eq!(nodes[0]["state"], "active");
    assert_eq!(nodes[0]["cpu_cores"], 4);
    assert_eq!(nodes[0]["completed"], 1);

    let tasks = get_op(&s, &op, "/v1/dashboard/tasks").await;
    assert_eq!(tasks[0]["task_id"], task_id.as_str());
    assert_eq!(tasks[0]["state"], "verified");
    assert_eq!(tasks[0]["quorum"], 1);
    assert_eq!(tasks[0]["replicas_total"], 1);
    assert_eq!(tasks[0]["bootstrap"], true);

    let queue = get_op(&s, &op, "/v1/dashboard/discovery").await;
    assert_eq!(queue[0]["domain"], "volunteers.example");

    let cps = get_op(&s, &op, "/v1/dashboard/checkpoints").await;
    assert_eq!(cps[0]["size"], cp.size);
    assert_eq!(cps[0]["root"], hex::encode(cp.root));

    let tp = get_op(&s, &op, "/v1/dashboard/throughput").await;
    let counts: Vec<u64> = tp["verified"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(counts.len(), 60);
    assert_eq!(counts.iter().sum::<u64>(), 1);
    assert_eq!(*counts.last().unwrap(), 1, "verified this minute");

    // The volunteer's status page sees the same node from its own side.
    let secret = pair(&s, &worker, None).await;
    let status = get_with(&s, "/v1/portal/status", &secret)
        .await
        .expect(StatusCode::OK);
    assert_eq!(status["usage"]["state"], "active");
    assert_eq!(status["usage"]["completed"], 1);
    assert_eq!(status["tasks"][0]["task_id"], task_id.as_str());
    assert_eq!(status["tasks"][0]["state"], "reported");
}

async fn pages_are_served(backend: Backend) {
    let s = TestServer::start(backend).await;
    for (path, kind) in [
        ("/portal", "text/html"),
        ("/dashboard", "text/html"),
        ("/web/portal.js", "text/javascript"),
        ("/web/dashboard.js", "text/javascript"),
        ("/web/common.js", "text/javascript"),
        ("/web/style.css", "text/css"),
    ] {
        let r = s.get(path).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        let ct = r.headers["content-type"].to_str().unwrap();
        assert!(ct.starts_with(kind), "{path}: {ct}");
        let csp = r.headers["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"));
        assert_eq!(r.headers["referrer-policy"], "no-referrer");
    }
}

both_backends!(
    pair_choose_grant_revoke,
    sessions_are_refused,
    dashboard_views,
    pages_are_served
);
