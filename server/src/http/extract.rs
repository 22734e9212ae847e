//! Request extractors that turn untrusted input into checked values, or into
//! a problem document naming what was wrong: JSON bodies with the path of the
//! offending field, node-key signed requests with replay protection, and
//! operator credentials, query strings, the client's address.

use std::convert::Infallible;
use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use ed25519_dalek::VerifyingKey;
use serde::de::DeserializeOwned;

use askee_core::b64;
use askee_core::signing::RequestToSign;

use crate::http::problem::{ApiError, ErrorKind};
use crate::service::auth;
use crate::state::AppState;
use crate::store::{NonceClaim, OperatorRecord};

pub const HEADER_NODE_KEY: &str = "askee-node-key";
pub const HEADER_TIMESTAMP: &str = "askee-timestamp";
pub const HEADER_NONCE: &str = "askee-nonce";
pub const HEADER_SIGNATURE: &str = "askee-signature";

/// Parses a JSON body, naming the offending field on failure.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    askee_core::validate::parse_json(bytes).map_err(|e| match e {
        askee_core::validate::BodyError::Shape(detail) => {
            ApiError::bad_request(format!("body is not the expected json: {detail}"))
        }
        askee_core::validate::BodyError::Field(f) => ApiError::fields(vec![f]),
    })
}

async fn read_body(req: Request, limit: usize) -> Result<(Parts, Bytes), ApiError> {
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::new(
            ErrorKind::TooLarge,
            "body-too-large",
            "the request body is too large",
            format!("bodies are limited to {limit} bytes"),
        )
    })?;
    Ok((parts, bytes))
}

fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let ok = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim())
        .is_some_and(|v| v == "application/json");
    if ok {
        Ok(())
    } else {
        Err(ApiError::not_json())
    }
}

/// A JSON body. Rejections are problem documents.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        require_json(req.headers())?;
        let (_, bytes) = read_body(req, state.config.max_body_bytes).await?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// A request signed with a node key: headers `askee-node-key`,
/// `askee-timestamp` (unix seconds), `askee-nonce` and `askee-signature`
/// over [`RequestToSign`]. The nonce is remembered, so a replay fails.
pub struct NodeSigned<T> {
    /// base64url node public key.
    pub node_key: String,
    pub key: VerifyingKey,
    pub body: T,
}

fn header<'a>(headers: &'a HeaderMap, name: &'static str) -> Result<&'a str, ApiError> {
    headers
        .get(name)
        .ok_or_else(|| {
            ApiError::unauthorized("missing_signature", format!("header {name} is missing"))
        })?
        .to_str()
        .map_err(|_| {
            ApiError::unauthorized("malformed_signature", format!("header {name} is not text"))
        })
}

impl<T: DeserializeOwned> FromRequest<AppState> for NodeSigned<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        require_json(req.headers())?;
        let (parts, bytes) = read_body(req, state.config.max_body_bytes).await?;
        let (node_key, key) = verify_node_signature(&parts, &bytes, state).await?;
        let body = parse_json(&bytes)?;
        Ok(Self {
            node_key,
            key,
            body,
        })
    }
}

/// A node-signed request whose nonce is checked for form but not consumed
/// yet: the handler hands [`NonceClaim`] to the store, which consumes it in
/// the transaction of the request's work (one commit per request). A
/// replay is refused there (`StoreError::ReplayedNonce`, 401
/// `replayed_request`) and stores nothing.
pub struct NodeSignedDeferred<T> {
    pub node_key: String,
    pub key: VerifyingKey,
    pub nonce: NonceClaim,
    pub body: T,
}

impl<T: DeserializeOwned> FromRequest<AppState> for NodeSignedDeferred<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        require_json(req.headers())?;
        let (parts, bytes) = read_body(req, state.config.max_body_bytes).await?;
        let (node_key, key, nonce) = check_node_signature(&parts, &bytes, state)?;
        let body = parse_json(&bytes)?;
        Ok(Self {
            node_key,
            key,
            nonce,
            body,
        })
    }
}

/// Checks a node signature over a request and consumes its nonce.
pub async fn verify_node_signature(
    parts: &Parts,
    body: &[u8],
    state: &AppState,
) -> Result<(String, VerifyingKey), ApiError> {
    let (node_key, key, claim) = check_node_signature(parts, body, state)?;
    // Only a correctly signed request may consume a nonce.
    auth::use_nonce(state, &claim).await?;
    Ok((node_key, key))
}

/// Checks a node signature over a request (headers, skew, signature) and
/// returns the nonce to consume.
pub fn check_node_signature(
    parts: &Parts,
    body: &[u8],
    state: &AppState,
) -> Result<(String, VerifyingKey, NonceClaim), ApiError> {
    let headers = &parts.headers;
    let node_key = header(headers, HEADER_NODE_KEY)?;
    let key = b64::public_key(node_key).map_err(|e| {
        ApiError::unauthorized(
            "malformed_signature",
            format!("header {HEADER_NODE_KEY}: {e}"),
        )
    })?;
    let timestamp: i64 = header(headers, HEADER_TIMESTAMP)?.parse().map_err(|_| {
        ApiError::unauthorized(
            "malformed_signature",
            format!("header {HEADER_TIMESTAMP} is not unix seconds"),
        )
    })?;
    let nonce = header(headers, HEADER_NONCE)?;
    if !(8..=128).contains(&nonce.len())
        || !nonce
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(ApiError::unauthorized(
            "malformed_signature",
            format!("header {HEADER_NONCE} must be 8 to 128 characters of [A-Za-z0-9_-]"),
        ));
    }
    let signature = header(headers, HEADER_SIGNATURE)?;
    let now = state.clock.now();
    let skew = state.config.request_skew.as_secs() as i64;
    if (timestamp - now).abs() > skew {
        return Err(ApiError::unauthorized(
            "stale_request",
            format!("request timestamp {timestamp} is more than {skew} s from server time {now}"),
        ));
    }
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    RequestToSign {
        method: parts.method.as_str(),
        path_and_query: path,
        timestamp,
        nonce,
        body,
    }
    .verify(&key, signature)
    .map_err(|e| ApiError::unauthorized("bad_signature", e.to_string()))?;
    Ok((
        node_key.to_owned(),
        key,
        NonceClaim {
            node_key: node_key.to_owned(),
            nonce: nonce.to_owned(),
            expires_at: timestamp + 2 * skew,
            now,
        },
    ))
}

/// An authenticated operator (`Authorization: Bearer <credential>`).
pub struct Operator(pub OperatorRecord);

pub async fn operator_from_headers(
    headers: &HeaderMap,
    state: &AppState,
) -> Result<Option<OperatorRecord>, ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let credential = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            ApiError::unauthorized(
                "malformed_credential",
                "authorization must be `Bearer <credential>`",
            )
        })?;
    auth::operator(state, credential).await.map(Some)
}

impl FromRequestParts<AppState> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        operator_from_headers(&parts.headers, state)
            .await?
            .map(Operator)
            .ok_or_else(|| {
                ApiError::unauthorized("missing_credential", "an operator credential is required")
            })
    }
}

/// Query strings, with problems instead of plain-text rejections.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::try_from_uri(&parts.uri)
            .map(|q| ApiQuery(q.0))
            .map_err(|e| ApiError::bad_request(format!("query string: {}", e.body_text())))
    }
}

/// The client's address when the server was started with connect info
/// (tests driving the router in process have none).
pub struct PeerAddr(pub Option<SocketAddr>);

impl<S: Send + Sync> FromRequestParts<S> for PeerAddr {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        Ok(PeerAddr(
            parts
                .extensions
                .get::<axum::extract::ConnectInfo<SocketAddr>>()
                .map(|c| c.0),
        ))
    }
}

/// A JSON body of at most `limit` bytes (task submissions, which may be
/// larger than other bodies); `what` names the body in the refusal.
pub async fn json_body<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: axum::body::Body,
    limit: usize,
    what: &str,
) -> Result<T, ApiError> {
    require_json(headers)?;
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::too_large(
            "the request body is too large",
            format!("{what} are limited to {limit} bytes"),
        )
    })?;
    parse_json(&bytes)
}
