//! Discovery's operator API: submitting domains to the crawl queue,
//! uploading QR code images, listing discovered invitations, and metrics.

mod support;

use askee_core::signal::{self, Statement};
use askee_core::{SigningKey, b64};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::json;
use support::{Backend, T0, TestServer};

const CREDENTIAL: &str = "askee_op_discovery-test";

async fn with_operator(backend: Backend) -> TestServer {
    let s = TestServer::start(backend).await;
    s.state
        .store
        .create_operator(
            &askee_server::store::OperatorRecord {
                name: "ops".into(),
                token_hash: askee_server::service::auth::credential_hash(CREDENTIAL),
                created_at: s.now(),
            },
            askee_server::service::consent::draft(&s.state, "operator.create", "ops", json!({})),
        )
        .await
        .unwrap();
    s
}

fn op() -> [(&'static str, String); 1] {
    [("authorization", format!("Bearer {CREDENTIAL}"))]
}

fn png_of(text: &str) -> Vec<u8> {
    let code = qrcode::QrCode::new(text.as_bytes()).unwrap();
    let img = code.render::<image::Luma<u8>>().build();
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

async fn upload(s: &TestServer, png: Vec<u8>, content_type: &str) -> support::Reply {
    s.send(
        Request::post("/v1/discovery/qr")
            .header("content-type", content_type)
            .header("authorization", format!("Bearer {CREDENTIAL}"))
            .body(Body::from(png))
            .unwrap(),
    )
    .await
}

async fn operator_api(backend: Backend) {
    let s = with_operator(backend).await;
    let body =
        serde_json::to_vec(&json!({"domains": ["Example.ORG.", "example.org", "bad..name"]}))
            .unwrap();
    s.post_raw("/v1/discovery/domains", body.clone(), &[])
        .await
        .problem(StatusCode::UNAUTHORIZED);
    let r = s
        .post_raw("/v1/discovery/domains", body.clone(), &op())
        .await
        .expect(StatusCode::ACCEPTED);
    assert_eq!(
        (r["queued"].as_u64(), r["new"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(r["refused"][0]["domain"], "bad..name");
    // the same again: queued, nothing new
    let r = s
        .post_raw("/v1/discovery/domains", body, &op())
        .await
        .expect(StatusCode::ACCEPTED);
    assert_eq!(r["new"], 0);
    let due = s
        .state
        .store
        .discovery()
        .due_domains(s.now(), 10)
        .await
        .unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].domain, "example.org");

    // a QR code: a new invitation, then "known"
    let key = SigningKey::from_bytes(&[8; 32]);
    let statement = signal::sign(
        &key,
        &Statement {
            domain: None,
            capabilities: None,
            coordinator: None,
            timestamp: T0 - 10,
        },
    );
    let png = png_of(&signal::to_uri(&statement));
    let r = upload(&s, png.clone(), "image/png")
        .await
        .expect(StatusCode::CREATED);
    assert_eq!(r["outcome"], "invited");
    let manifest_id = r["manifest_id"].as_str().unwrap().to_owned();
    let r = upload(&s, png.clone(), "image/png")
        .await
        .expect(StatusCode::OK);
    assert_eq!(r["outcome"], "known");
    upload(&s, png, "application/json")
        .await
        .problem(StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // a stale statement is refused with its reason
    let mut old = statement.clone();
    old.timestamp = T0 - 400 * 24 * 3600;
    let old = signal::sign(
        &key,
        &Statement {
            domain: None,
            capabilities: None,
            coordinator: None,
            timestamp: old.timestamp,
        },
    );
    let p = upload(&s, png_of(&signal::to_uri(&old)), "image/png")
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(p["reason"], "stale");

    // the invitation is listed, and its manifest is the consent engine's
    let list = s
        .send(
            Request::get("/v1/discovery/invitations?limit=10")
                .header("authorization", format!("Bearer {CREDENTIAL}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .expect(StatusCode::OK);
    let invitations = list["invitations"].as_array().unwrap();
    assert_eq!(invitations.len(), 1);
    assert_eq!(invitations[0]["source"], "qr");
    assert_eq!(invitations[0]["state"], "pending");
    assert_eq!(
        invitations[0]["node_public_key"],
        b64::encode(key.verifying_key().as_bytes())
    );
    let m = s
        .get(&format!("/v1/manifests/{manifest_id}"))
        .await
        .expect(StatusCode::OK);
    assert_eq!(
        m["manifest"]["node_public_key"],
        b64::encode(key.verifying_key().as_bytes())
    );
    let metrics = s.state.metrics.render();
    assert!(
        metrics.contains("askee_discovery_invited_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("askee_discovery_known_total 1"),
        "{metrics}"
    );
}

both_backends!(operator_api);
