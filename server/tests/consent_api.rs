//! The consent engine through the HTTP API alone, on both backends:
//! join → manifest → signed grant → token → verify → revoke → verify fails,
//! and every way a token, grant or signed request can be refused.

mod support;

use askee_core::wire::v1::ConsentToken;
use askee_core::{b64, signing};
use axum::http::StatusCode;
use serde_json::json;
use support::{Backend, TestServer, key_of, node, nonce};

async fn full_lifecycle(backend: Backend) {
    let s = TestServer::start(backend).await;
    let volunteer = node(1);
    let manifest = s.join(&volunteer).await;
    assert_eq!(manifest.state, "pending");
    assert_eq!(manifest.manifest.node_public_key, key_of(&volunteer));
    assert!(
        manifest
            .manifest
            .never_accessed
            .iter()
            .any(|s| s.contains("files"))
    );
    let fetched = s
        .get(&format!("/v1/manifests/{}", manifest.manifest.manifest_id))
        .await
        .expect(StatusCode::OK);
    assert_eq!(fetched["manifest_digest"], manifest.manifest_digest);
    // The digest a volunteer recomputes is the one the server names.
    assert_eq!(
        signing::manifest_digest(&manifest.manifest),
        manifest.manifest_digest
    );

    let mut chosen = manifest.manifest.proposed.clone();
    chosen.resources.cpu_percent_max = 25;
    chosen.tasks.allowlist = vec!["data-processing".into()];
    let st = s.statement(&volunteer, &manifest, chosen.clone());
    let granted = s
        .grant_with(&volunteer, &st)
        .await
        .expect(StatusCode::CREATED);
    let token: ConsentToken = serde_json::from_value(granted["consent_token"].clone()).unwrap();
    assert_eq!(token.payload.permissions, chosen);
    assert_eq!(token.payload.subject, key_of(&volunteer));
    assert_eq!(token.payload.version, "1.0");
    assert_eq!(
        token.revocation_url,
        format!("http://askee.test/revoke/{}", token.payload.token_id)
    );
    assert!(token.payload.expires_at - token.payload.issued_at <= 3600);

    let ok = s.verify(&token.token).await.expect(StatusCode::OK);
    assert_eq!(ok["valid"], true);
    assert_eq!(ok["payload"]["token_id"], token.payload.token_id.as_str());

    // The manifest is granted once.
    let again = s
        .grant_with(
            &volunteer,
            &s.statement(&volunteer, &manifest, chosen.clone()),
        )
        .await;
    again.problem(StatusCode::CONFLICT);

    let status = s
        .get(&format!("/revoke/{}", token.payload.token_id))
        .await
        .expect(StatusCode::OK);
    assert_eq!(status["status"], "active");

    let path = format!("/v1/tokens/{}/revoke", token.payload.token_id);
    let revoked = s
        .signed(&volunteer, &path, &json!({"reason": "changed my mind"}))
        .await
        .expect(StatusCode::OK);
    assert_eq!(revoked["status"], "revoked");
    assert_eq!(revoked["revoked_by"], "volunteer");

    let refused = s
        .verify(&token.token)
        .await
        .problem(StatusCode::UNAUTHORIZED);
    assert_eq!(refused["reason"], "revoked");
    assert!(
        refused["detail"]
            .as_str()
            .unwrap()
            .contains("changed my mind")
    );

    // Renewal after revocation is refused.
    let renew = s
        .signed(
            &volunteer,
            "/v1/tokens/renew",
            &json!({"token_id": token.payload.token_id}),
        )
        .await;
    assert_eq!(renew.problem(StatusCode::CONFLICT)["reason"], "revoked");

    // The signed revocation list names the grant.
    let list: askee_core::wire::v1::SignedRevocationList =
        serde_json::from_value(s.get("/v1/revocations").await.expect(StatusCode::OK)).unwrap();
    let opened =
        signing::open_revocation_list(&s.state.keys.signer().verifying_key(), &list).unwrap();
    assert!(opened.next_update > s.now());
    assert_eq!(opened.revoked.len(), 1);
    assert_eq!(
        opened.revoked[0].token_ids,
        vec![token.payload.token_id.clone()]
    );

    // Every consent action is in the audit log, in order.
    let entries = s.get("/v1/audit/entries").await.expect(StatusCode::OK);
    let kinds: Vec<&str> = entries
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["entry"]["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "invitation.create",
            "consent.grant",
            "token.issue",
            "consent.revoke"
        ]
    );
    // The grant entry carries the signed statement: the consent is provable.
    let grant_entry = &entries[1]["entry"]["data"];
    let proof = askee_core::wire::v1::SignedGrant {
        statement: grant_entry["statement"].as_str().unwrap().into(),
        signature: grant_entry["signature"].as_str().unwrap().into(),
    };
    assert_eq!(signing::open_grant(&proof).unwrap().0, st);
}

async fn renewal_extends_until_grant_end(backend: Backend) {
    let s = TestServer::start(backend).await;
    let volunteer = node(2);
    let g = s.consent(&volunteer).await;
    s.advance(3000);
    let renewed: ConsentToken = serde_json::from_value(
        s.signed(
            &volunteer,
            "/v1/tokens/renew",
            &json!({"token_id": g.consent_token.payload.token_id}),
        )
        .await
        .expect(StatusCode::CREATED),
    )
    .unwrap();
    assert_eq!(renewed.payload.grant_id, g.grant_id);
    assert_ne!(renewed.payload.token_id, g.consent_token.payload.token_id);
    s.advance(700);
    // The first token has expired; the renewed one is valid.
    assert_eq!(
        s.verify(&g.consent_token.token)
            .await
            .problem(StatusCode::UNAUTHORIZED)["reason"],
        "expired"
    );
    s.verify(&renewed.token).await.expect(StatusCode::OK);
    // Another node cannot renew someone else's token.
    let other = s
        .signed(
            &node(3),
            "/v1/tokens/renew",
            &json!({"token_id": renewed.payload.token_id}),
        )
        .await;
    other.problem(StatusCode::FORBIDDEN);
    // Revoking through the renewed token revokes the whole grant.
    let cert_path = format!("/revoke/{}", g.consent_token.payload.token_id);
    let by_cert = s
        .post(
            &cert_path,
            &serde_json::to_value(&g.revocation_certificate).unwrap(),
        )
        .await
        .expect(StatusCode::OK);
    assert_eq!(by_cert["revoked_by"], "certificate");
    assert_eq!(
        s.verify(&renewed.token)
            .await
            .problem(StatusCode::UNAUTHORIZED)["reason"],
        "revoked"
    );
}

async fn forged_tokens_are_rejected_with_reasons(backend: Backend) {
    let s = TestServer::start(backend).await;
    let g = s.consent(&node(4)).await;
    let token = g.consent_token.token.clone();
    let parts: Vec<&str> = token.split('.').collect();
    let header = |v: serde_json::Value| b64::encode(serde_json::to_vec(&v).unwrap());
    let kid = s.state.keys.signer().kid().to_owned();

    let none = format!("{}.{}.", header(json!({"alg":"none","kid":kid})), parts[1]);
    assert_eq!(
        s.verify(&none).await.problem(StatusCode::UNAUTHORIZED)["reason"],
        "algorithm"
    );

    let mut hs = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    hs.kid = Some(kid.clone());
    let hs256 = jsonwebtoken::encode(
        &hs,
        &g.consent_token.payload,
        &jsonwebtoken::EncodingKey::from_secret(s.state.keys.signer().verifying_key().as_bytes()),
    )
    .unwrap();
    assert_eq!(
        s.verify(&hs256).await.problem(StatusCode::UNAUTHORIZED)["reason"],
        "algorithm"
    );

    let wrong_kid = format!(
        "{}.{}.{}",
        header(json!({"alg":"EdDSA","kid":"nope"})),
        parts[1],
        parts[2]
    );
    assert_eq!(
        s.verify(&wrong_kid).await.problem(StatusCode::UNAUTHORIZED)["reason"],
        "unknown_kid"
    );

    let mut payload = g.consent_token.payload.clone();
    payload.permissions.resources.cpu_percent_max = 100;
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        b64::encode(serde_json::to_vec(&payload).unwrap()),
        parts[2]
    );
    assert_eq!(
        s.verify(&tampered).await.problem(StatusCode::UNAUTHORIZED)["reason"],
        "bad_signature"
    );

    // A token properly signed by a stranger's key under our kid: bad signature.
    let stranger = askee_core::token::TokenSigner::new(node(99)).unwrap();
    let forged = stranger
        .issue(g.consent_token.payload.clone())
        .unwrap()
        .token;
    let fparts: Vec<&str> = forged.split('.').collect();
    let forged = format!("{}.{}.{}", parts[0], fparts[1], fparts[2]);
    assert_eq!(
        s.verify(&forged).await.problem(StatusCode::UNAUTHORIZED)["reason"],
        "bad_signature"
    );

    assert_eq!(
        s.verify("not-a-jwt")
            .await
            .problem(StatusCode::UNAUTHORIZED)["reason"],
        "malformed"
    );

    s.advance(3600);
    assert_eq!(
        s.verify(&token).await.problem(StatusCode::UNAUTHORIZED)["reason"],
        "expired"
    );
}

async fn bad_grants_store_nothing(backend: Backend) {
    let s = TestServer::start(backend).await;
    let volunteer = node(5);
    let m = s.join(&volunteer).await;
    let before = s.audit_size().await;

    let mut wide = m.manifest.proposed.clone();
    wide.resources.ram_mb_max += 1;
    wide.tasks.allowlist.push("crypto-mining".into());
    let p = s
        .grant_with(&volunteer, &s.statement(&volunteer, &m, wide))
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY);
    let fields: Vec<&str> = p["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert!(fields.contains(&"permissions.resources.ram_mb_max"), "{p}");
    assert!(fields.contains(&"permissions.tasks.allowlist[3]"), "{p}");

    // Signed by another key than the one it names.
    let st = s.statement(&volunteer, &m, m.manifest.proposed.clone());
    let forged = signing::sign_grant(&node(6), &st);
    let p = s
        .post("/v1/grants", &serde_json::to_value(forged).unwrap())
        .await
        .problem(StatusCode::UNAUTHORIZED);
    assert_eq!(p["reason"], "bad_signature");

    // Signed by another node for this node's manifest.
    let mut theirs = s.statement(&node(6), &m, m.manifest.proposed.clone());
    theirs.manifest_id = m.manifest.manifest_id.clone();
    let p = s
        .grant_with(&node(6), &theirs)
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY);
    assert!(p["detail"].as_str().unwrap().contains("node_public_key"));

    // A wrong manifest digest: not what was shown.
    let mut st2 = s.statement(&volunteer, &m, m.manifest.proposed.clone());
    st2.manifest_digest = b64::encode([0u8; 32]);
    s.grant_with(&volunteer, &st2)
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY);

    assert_eq!(
        s.audit_size().await,
        before,
        "a refused grant leaves no trace but its refusal"
    );
    assert!(
        s.state
            .store
            .grants_of_node(&key_of(&volunteer))
            .await
            .unwrap()
            .is_empty()
    );
    let fetched = s
        .get(&format!("/v1/manifests/{}", m.manifest.manifest_id))
        .await
        .expect(StatusCode::OK);
    assert_eq!(fetched["state"], "pending");
    // And the honest grant still goes through afterwards.
    s.grant_with(
        &volunteer,
        &s.statement(&volunteer, &m, m.manifest.proposed.clone()),
    )
    .await
    .expect(StatusCode::CREATED);
}

async fn signed_requests_resist_replay_and_tampering(backend: Backend) {
    let s = TestServer::start(backend).await;
    let volunteer = node(7);
    let body = serde_json::to_vec(&json!({"node_public_key": key_of(&volunteer)})).unwrap();
    let headers = signing::signed_headers(
        &volunteer,
        "POST",
        "/v1/invitations",
        &body,
        s.now(),
        &nonce(),
    );
    s.post_raw("/v1/invitations", body.clone(), &headers)
        .await
        .expect(StatusCode::CREATED);
    let replay = s
        .post_raw("/v1/invitations", body.clone(), &headers)
        .await
        .problem(StatusCode::UNAUTHORIZED);
    assert_eq!(replay["reason"], "replayed_request");

    let stale = signing::signed_headers(
        &volunteer,
        "POST",
        "/v1/invitations",
        &body,
        s.now() - 3600,
        &nonce(),
    );
    assert_eq!(
        s.post_raw("/v1/invitations", body.clone(), &stale)
            .await
            .problem(StatusCode::UNAUTHORIZED)["reason"],
        "stale_request"
    );

    let fresh = signing::signed_headers(
        &volunteer,
        "POST",
        "/v1/invitations",
        &body,
        s.now(),
        &nonce(),
    );
    let mut other_body = body.clone();
    other_body.push(b' ');
    assert_eq!(
        s.post_raw("/v1/invitations", other_body, &fresh)
            .await
            .problem(StatusCode::UNAUTHORIZED)["reason"],
        "bad_signature"
    );

    let missing = s
        .post_raw("/v1/invitations", body.clone(), &[])
        .await
        .problem(StatusCode::UNAUTHORIZED);
    assert_eq!(missing["reason"], "missing_signature");

    // Joining for another node's key is refused.
    let theirs = serde_json::to_vec(&json!({"node_public_key": key_of(&node(8))})).unwrap();
    let h = signing::signed_headers(
        &volunteer,
        "POST",
        "/v1/invitations",
        &theirs,
        s.now(),
        &nonce(),
    );
    let p = s
        .post_raw("/v1/invitations", theirs, &h)
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(p["errors"][0]["field"], "node_public_key");

    // A node cannot revoke another node's token; an operator can.
    let g = s.consent(&node(9)).await;
    let path = format!("/v1/tokens/{}/revoke", g.consent_token.payload.token_id);
    s.signed(&volunteer, &path, &json!({"reason": "x"}))
        .await
        .problem(StatusCode::FORBIDDEN);
    let credential = "askee_op_test-credential";
    s.state
        .store
        .create_operator(
            &askee_server::store::OperatorRecord {
                name: "ops".into(),
                token_hash: askee_server::service::auth::credential_hash(credential),
                created_at: s.now(),
            },
            askee_server::service::consent::draft(&s.state, "operator.create", "ops", json!({})),
        )
        .await
        .unwrap();
    let bad_op = [("authorization", "Bearer askee_op_wrong".to_string())];
    let body = serde_json::to_vec(&json!({"reason": "abuse report"})).unwrap();
    s.post_raw(&path, body.clone(), &bad_op)
        .await
        .problem(StatusCode::UNAUTHORIZED);
    let op = [("authorization", format!("Bearer {credential}"))];
    let r = s.post_raw(&path, body, &op).await.expect(StatusCode::OK);
    assert_eq!(r["revoked_by"], "operator:ops");
}

async fn bad_bodies_get_problem_documents(backend: Backend) {
    let s = TestServer::start(backend).await;
    let p = s
        .post("/v1/grants", &json!({"statement": "x"}))
        .await
        .problem(StatusCode::BAD_REQUEST);
    assert!(p["detail"].as_str().unwrap().contains("signature"), "{p}");
    let p = s
        .post("/v1/tokens/verify", &json!({"token": 5}))
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(p["errors"][0]["field"], "token");
    let p = s
        .post("/v1/tokens/verify", &json!({"token": "a", "extra": 1}))
        .await;
    assert_eq!(
        p.problem(StatusCode::UNPROCESSABLE_ENTITY)["errors"][0]["field"],
        "extra"
    );
    let big = vec![b' '; 70 * 1024];
    s.post_raw("/v1/tokens/verify", big, &[])
        .await
        .problem(StatusCode::PAYLOAD_TOO_LARGE);
    let mut req = axum::http::Request::post("/v1/tokens/verify");
    req = req.header("content-type", "text/plain");
    s.send(req.body(axum::body::Body::from("{}")).unwrap())
        .await
        .problem(StatusCode::UNSUPPORTED_MEDIA_TYPE);
    s.get("/v1/nope").await.problem(StatusCode::NOT_FOUND);
    s.get("/v1/grants")
        .await
        .problem(StatusCode::METHOD_NOT_ALLOWED);
    s.get("/v1/audit/proof/inclusion?index=x&size=1")
        .await
        .problem(StatusCode::BAD_REQUEST);
    s.get("/v1/audit/proof/inclusion?index=5&size=1")
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY);
    s.get("/revoke/unknown")
        .await
        .problem(StatusCode::NOT_FOUND);
}

async fn audit_proofs_verify(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.consent(&node(10)).await;
    let first: askee_server::service::audit::CheckpointResponse =
        serde_json::from_value(s.get("/v1/audit/checkpoint").await.expect(StatusCode::OK)).unwrap();
    assert_eq!(first.size, 3);
    s.consent(&node(11)).await;
    let second: askee_server::service::audit::CheckpointResponse =
        serde_json::from_value(s.get("/v1/audit/checkpoint").await.expect(StatusCode::OK)).unwrap();
    assert_eq!(second.size, 6);
    let origin = s.state.config.log_origin();
    let vk = s.state.keys.signer().verifying_key();
    let text = askee_core::note::open(&second.note, &origin, &vk).unwrap();
    let cp = askee_core::note::Checkpoint::parse(text).unwrap();
    assert_eq!(b64::encode(cp.root), second.root);

    let hashes = |v: &serde_json::Value| -> Vec<[u8; 32]> {
        v["proof"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| b64::decode_array(h.as_str().unwrap()).unwrap())
            .collect()
    };
    for index in 0..6 {
        let p = s
            .get(&format!("/v1/audit/proof/inclusion?index={index}&size=6"))
            .await
            .expect(StatusCode::OK);
        let entries = s
            .get(&format!(
                "/v1/audit/entries?start={index}&end={}",
                index + 1
            ))
            .await
            .expect(StatusCode::OK);
        let entry: askee_core::wire::v1::AuditEntry =
            serde_json::from_value(entries[0]["entry"].clone()).unwrap();
        let (_, leaf) = askee_core::audit::leaf(&entry);
        askee_core::merkle::verify_inclusion(index, 6, &leaf, &hashes(&p), &cp.root).unwrap();
    }
    let c = s
        .get("/v1/audit/proof/consistency?first=3&second=6")
        .await
        .expect(StatusCode::OK);
    let r1: [u8; 32] = b64::decode_array(&first.root).unwrap();
    askee_core::merkle::verify_consistency(3, 6, &r1, &cp.root, &hashes(&c)).unwrap();
}

async fn well_known_documents(backend: Backend) {
    let s = TestServer::start(backend).await;
    let jwks = s.get("/.well-known/jwks.json").await.expect(StatusCode::OK);
    let key = &jwks["keys"][0];
    assert_eq!(key["kty"], "OKP");
    assert_eq!(key["crv"], "Ed25519");
    assert_eq!(key["alg"], "EdDSA");
    assert_eq!(key["kid"], s.state.keys.signer().kid());
    let info = s
        .get("/.well-known/askee-coordinator")
        .await
        .expect(StatusCode::OK);
    assert_eq!(info["key_ids"][0], s.state.keys.signer().kid());
    let types: Vec<&str> = info["task_types"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        ["ml-training", "data-processing", "scientific-compute"]
    );
    s.get("/healthz").await.expect(StatusCode::OK);
    s.get("/readyz").await.expect(StatusCode::OK);
    let metrics = s.get("/metrics").await.expect(StatusCode::OK);
    assert!(
        metrics.as_str().unwrap().contains(
            "askee_http_requests_total{method=\"GET\",route=\"/readyz\",status=\"200\"} 1"
        )
    );
}

/// The revocation URL as a long-poll: a waiting agent hears of the
/// revocation (and of expiry) without waiting out its poll.
async fn revocation_long_poll_answers_on_revocation_and_expiry(backend: Backend) {
    let s = TestServer::start(backend).await;
    let volunteer = node(7);
    let granted = s.consent(&volunteer).await;
    let token_id = granted.consent_token.payload.token_id.clone();
    let watch = format!("/revoke/{token_id}?wait=50");
    // Without a change, a short wait answers with the active status.
    let quiet = s
        .get(&format!("/revoke/{token_id}?wait=1"))
        .await
        .expect(StatusCode::OK);
    assert_eq!(quiet["status"], "active");
    let started = std::time::Instant::now();
    let (polled, revoked) = tokio::join!(s.get(&watch), async {
        tokio::task::yield_now().await;
        s.signed(
            &volunteer,
            &format!("/v1/tokens/{token_id}/revoke"),
            &json!({"reason": "long-poll test"}),
        )
        .await
    });
    revoked.expect(StatusCode::OK);
    let polled = polled.expect(StatusCode::OK);
    assert_eq!(polled["status"], "revoked");
    assert_eq!(polled["reason"], "long-poll test");
    // Far below the 50 s the poll asked for: the revocation woke it.
    assert!(started.elapsed() < std::time::Duration::from_secs(25));

    // Expiry also ends a long-poll.
    let other = node(8);
    let granted = s.consent(&other).await;
    let token_id = granted.consent_token.payload.token_id.clone();
    let lifetime = granted.consent_token.payload.expires_at - s.now();
    let watch = format!("/revoke/{token_id}?wait=50");
    let (polled, ()) = tokio::join!(s.get(&watch), async {
        tokio::task::yield_now().await;
        s.advance(lifetime + 1);
    });
    assert_eq!(polled.expect(StatusCode::OK)["status"], "expired");

    // A bad wait is a problem document naming the query.
    let bad = s.get(&format!("/revoke/{token_id}?wait=soon")).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
}

both_backends!(
    revocation_long_poll_answers_on_revocation_and_expiry,
    full_lifecycle,
    renewal_extends_until_grant_end,
    forged_tokens_are_rejected_with_reasons,
    bad_grants_store_nothing,
    signed_requests_resist_replay_and_tampering,
    bad_bodies_get_problem_documents,
    audit_proofs_verify,
    well_known_documents,
);
