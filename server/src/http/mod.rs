//! The HTTP layer: everything that knows axum. Extractors turn requests
//! into checked values, handlers (one file per area) call one service
//! function each and map its answer, `problem` maps service errors to
//! problem documents, `limit` holds the rate-limit and overload responses.
//! This file assembles the routes and the OpenAPI document that describes
//! them (committed as `openapi/openapi.json`).

use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{get, post};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::state::AppState;
use problem::{ApiError, ErrorKind};

mod consent;
mod coordinator;
mod dashboard;
mod discovery;
pub mod extract;
pub mod limit;
mod ops;
mod portal;
pub mod problem;
mod tasks;
pub mod updates;
mod web;

const SIGNED: &str = "node_signature";

async fn not_found(req: Request) -> ApiError {
    ApiError::not_found(format!("route {}", req.uri().path()))
}

async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::new(
        ErrorKind::MethodNotAllowed,
        "method-not-allowed",
        "method not allowed",
        format!("{} is not allowed on {}", req.method(), req.uri().path()),
    )
}

async fn observe(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().clone();
    let start = Instant::now();
    let mut resp = next.run(req).await;
    state.metrics.observe_request(
        method.as_str(),
        &route,
        resp.status().as_u16(),
        start.elapsed(),
    );
    resp.headers_mut()
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    resp
}

/// The routes without the protective layers (see [`crate::app`]).
pub fn routes(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/openapi.json", get(ops::openapi_json))
        .route("/.well-known/jwks.json", get(ops::jwks))
        .route("/.well-known/askee-coordinator", get(ops::coordinator))
        .route("/v1/invitations", post(consent::join))
        .route("/v1/manifests/{manifest_id}", get(consent::get_manifest))
        .route("/v1/grants", post(consent::grant))
        .route("/v1/tokens/verify", post(consent::verify))
        .route("/v1/tokens/renew", post(consent::renew))
        .route("/v1/tokens/{token_id}/revoke", post(consent::revoke))
        .route("/revoke/{token_id}", post(consent::revoke_by_certificate))
        .route("/v1/revocations", get(consent::revocations))
        .route("/v1/audit/entries", get(consent::audit_entries))
        .route("/v1/audit/checkpoint", get(consent::audit_checkpoint))
        .route("/v1/audit/proof/inclusion", get(consent::audit_inclusion))
        .route(
            "/v1/audit/proof/consistency",
            get(consent::audit_consistency),
        )
        .merge(coordinator::routes())
        .merge(discovery::routes())
        .merge(portal::routes())
        .merge(dashboard::routes())
        .merge(web::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// Routes that may be held open (long-polls); [`crate::app`] gives them their
/// own concurrency cap instead of the request timeout.
pub fn watch_routes(state: AppState) -> Router {
    Router::new()
        .route("/revoke/{token_id}", get(consent::revocation_status))
        .merge(portal::watch_routes())
        .layer(axum::middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            SIGNED,
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "askee-signature",
                "base64url (no padding) Ed25519 signature by the node key over the bytes \
                 `askee-request-v1\\0` followed by the UTF-8 text `METHOD\\nPATH_AND_QUERY\\nTIMESTAMP\\nNONCE\\nBODY_SHA256` \
                 (upper-case method, the request target as sent, the askee-timestamp value, the askee-nonce value, \
                 lower-case hex SHA-256 of the exact body bytes); sent with headers askee-node-key (base64url public key), \
                 askee-timestamp (unix seconds, within the server's allowed skew) and askee-nonce; a nonce is accepted once",
            ))),
        );
        components.add_security_scheme(
            "operator",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "operator credential from `askee-server operator create`",
                    ))
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "askee control plane", description = "Consent-first volunteer computing: consent engine, revocation, audit log.", version = "1"),
    paths(
        ops::healthz, ops::readyz, ops::metrics, ops::jwks, ops::coordinator, consent::join,
        consent::get_manifest, consent::grant, consent::verify, consent::renew, consent::revoke,
        consent::revocation_status, consent::revoke_by_certificate, consent::revocations,
        consent::audit_entries, consent::audit_checkpoint, consent::audit_inclusion,
        consent::audit_consistency
    ),
    modifiers(&Security),
    tags(
        (name = "consent", description = "invitations, manifests and signed grants"),
        (name = "tokens", description = "consent token verification, renewal and revocation"),
        (name = "revocation", description = "the revocation URL and the signed revocation list"),
        (name = "audit", description = "the tamper-evident audit log"),
        (name = "well-known", description = "discovery documents"),
        (name = "ops", description = "health and metrics")
    )
)]
pub struct ApiDoc;

/// The OpenAPI document as pretty JSON with a trailing newline: the exact
/// content of `openapi/openapi.json`.
pub fn openapi_document() -> String {
    let mut doc = ApiDoc::openapi();
    doc.merge(coordinator::CoordinatorApi::openapi());
    doc.merge(discovery::DiscoveryApi::openapi());
    doc.merge(portal::PortalApi::openapi());
    doc.merge(dashboard::DashboardApi::openapi());
    let mut s = doc.to_pretty_json().expect("openapi serialises");
    s.push('\n');
    s
}
