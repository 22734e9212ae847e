//! A volunteer over real HTTP, as the agent behaves: a fresh node key, a
//! signed join, then a signed grant of exactly what was proposed. Shared by
//! end-to-end tests and the grant-latency benchmark.

use std::time::{Duration, Instant};

use askee_core::signing::{self, signed_headers};
use askee_core::wire::v1::{GRANT_STATEMENT_VERSION, GrantStatement};
use askee_core::{SigningKey, b64};
use serde_json::{Value, json};

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Joins and grants; returns the grant response and the grant request's latency.
pub async fn join_and_grant(
    http: &reqwest::Client,
    base: &str,
) -> Result<(Value, Duration), reqwest::Error> {
    let node = SigningKey::generate(&mut rand::rngs::OsRng);
    let key = b64::encode(node.verifying_key().as_bytes());
    let body = serde_json::to_vec(&json!({ "node_public_key": key })).unwrap();
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    let mut req = http
        .post(format!("{base}/v1/invitations"))
        .header("content-type", "application/json")
        .body(body.clone());
    for (k, v) in signed_headers(&node, "POST", "/v1/invitations", &body, now(), &nonce) {
        req = req.header(k, v);
    }
    let m: Value = req.send().await?.error_for_status()?.json().await?;
    let statement = GrantStatement {
        version: GRANT_STATEMENT_VERSION.into(),
        manifest_id: m["manifest"]["manifest_id"]
            .as_str()
            .unwrap_or_default()
            .into(),
        manifest_digest: m["manifest_digest"].as_str().unwrap_or_default().into(),
        node_public_key: key,
        permissions: serde_json::from_value(m["manifest"]["proposed"].clone())
            .expect("manifest proposes permissions"),
        grant_expires_at: now() + 86_400,
        signed_at: now(),
        nonce: uuid::Uuid::new_v4().simple().to_string(),
    };
    let signed = signing::sign_grant(&node, &statement);
    let start = Instant::now();
    let granted: Value = http
        .post(format!("{base}/v1/grants"))
        .json(&signed)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok((granted, start.elapsed()))
}
