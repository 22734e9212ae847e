//! In-process harness for the HTTP API: the real router over a real store
//! (a temp-file SQLite database or a throwaway PostgreSQL cluster), driven
//! with `Router::oneshot`, and a volunteer that signs like an agent does.

#![allow(dead_code)]

pub mod coordinator;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use askee_core::signing::{self, signed_headers};
use askee_core::wire::v1::{
    GRANT_STATEMENT_VERSION, GrantResponse, GrantStatement, ManifestResponse, Permissions,
};
use askee_core::{SigningKey, b64};
use askee_server::{AppState, Clock, Config};
use askee_testkit::pg::PgCluster;
use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt as _;
use serde_json::Value;
use tower::ServiceExt as _;

#[derive(Clone, Copy, Debug)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub struct TestServer {
    pub router: Router,
    pub state: AppState,
    pub clock: Arc<AtomicI64>,
    pub database_url: String,
    pub dir: tempfile::TempDir,
    // Dropped last: stops the cluster after the pool is gone.
    pub pg: Option<PgCluster>,
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Reply {
    /// Asserts the status and returns the body, showing the problem if not.
    pub fn expect(self, status: StatusCode) -> Value {
        assert_eq!(self.status, status, "unexpected reply: {}", self.body);
        self.body
    }

    /// Asserts a problem document with this status and returns it.
    pub fn problem(self, status: StatusCode) -> Value {
        assert_eq!(self.status, status, "unexpected reply: {}", self.body);
        assert_eq!(
            self.headers.get("content-type").unwrap(),
            "application/problem+json"
        );
        assert_eq!(self.body["status"], status.as_u16());
        assert!(self.body["detail"].as_str().is_some_and(|d| !d.is_empty()));
        self.body
    }
}

pub const T0: i64 = 1_800_000_000;

impl TestServer {
    pub async fn start(backend: Backend) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (database_url, pg) = match backend {
            Backend::Sqlite => (
                format!("sqlite://{}", dir.path().join("askee.db").display()),
                None,
            ),
            Backend::Postgres => {
                let pg = PgCluster::start();
                (pg.create_database("askee"), Some(pg))
            }
        };
        Self::open(database_url, dir, pg).await
    }

    pub async fn open(database_url: String, dir: tempfile::TempDir, pg: Option<PgCluster>) -> Self {
        let store = askee_server::store::open(&database_url).await.unwrap();
        let clock = Arc::new(AtomicI64::new(T0 * 1000));
        let config = Config::new(dir.path().join("data"), "http://askee.test".into());
        let state = askee_server::state(config, store, Clock::Manual(clock.clone())).unwrap();
        Self {
            router: askee_server::app(state.clone()),
            state,
            clock,
            database_url,
            dir,
            pg,
        }
    }

    pub fn now(&self) -> i64 {
        self.clock.load(Ordering::SeqCst) / 1000
    }

    pub fn advance(&self, secs: i64) {
        self.clock.fetch_add(secs * 1000, Ordering::SeqCst);
    }

    pub async fn send(&self, req: Request<Body>) -> Reply {
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        Reply {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(Request::get(path).body(Body::empty()).unwrap())
            .await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Reply {
        self.post_raw(path, serde_json::to_vec(body).unwrap(), &[])
            .await
    }

    pub async fn post_raw(&self, path: &str, body: Vec<u8>, headers: &[(&str, String)]) -> Reply {
        let mut req = Request::post(path).header("content-type", "application/json");
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        self.send(req.body(Body::from(body)).unwrap()).await
    }

    /// A request signed by `node` with a fresh nonce.
    pub async fn signed(&self, node: &SigningKey, path: &str, body: &Value) -> Reply {
        let bytes = serde_json::to_vec(body).unwrap();
        let headers = signed_headers(node, "POST", path, &bytes, self.now(), &nonce());
        self.post_raw(path, bytes, &headers).await
    }

    pub async fn join(&self, node: &SigningKey) -> ManifestResponse {
        let body = serde_json::json!({"node_public_key": key_of(node)});
        serde_json::from_value(
            self.signed(node, "/v1/invitations", &body)
                .await
                .expect(StatusCode::CREATED),
        )
        .unwrap()
    }

    /// The statement a volunteer would sign for this manifest.
    pub fn statement(
        &self,
        node: &SigningKey,
        m: &ManifestResponse,
        permissions: Permissions,
    ) -> GrantStatement {
        GrantStatement {
            version: GRANT_STATEMENT_VERSION.into(),
            manifest_id: m.manifest.manifest_id.clone(),
            manifest_digest: m.manifest_digest.clone(),
            node_public_key: key_of(node),
            permissions,
            grant_expires_at: self.now() + 7 * 24 * 3600,
            signed_at: self.now(),
            nonce: nonce(),
        }
    }

    pub async fn grant_with(&self, node: &SigningKey, statement: &GrantStatement) -> Reply {
        let signed = signing::sign_grant(node, statement);
        self.post("/v1/grants", &serde_json::to_value(signed).unwrap())
            .await
    }

    /// join → manifest → grant of exactly what was proposed.
    pub async fn consent(&self, node: &SigningKey) -> GrantResponse {
        let m = self.join(node).await;
        let st = self.statement(node, &m, m.manifest.proposed.clone());
        serde_json::from_value(self.grant_with(node, &st).await.expect(StatusCode::CREATED))
            .unwrap()
    }

    pub async fn verify(&self, token: &str) -> Reply {
        self.post("/v1/tokens/verify", &serde_json::json!({ "token": token }))
            .await
    }

    pub async fn audit_size(&self) -> u64 {
        self.state.store.audit_size().await.unwrap()
    }
}

pub fn node(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

pub fn key_of(node: &SigningKey) -> String {
    b64::encode(node.verifying_key().as_bytes())
}

pub fn nonce() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Runs each listed async test function against both backends.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test] async fn $name() { super::$name(super::support::Backend::Sqlite).await })*
        }
        mod postgres {
            $(#[tokio::test] async fn $name() { super::$name(super::support::Backend::Postgres).await })*
        }
    };
}
