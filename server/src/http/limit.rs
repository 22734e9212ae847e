//! The HTTP side of the seed's denial-of-service mitigations: the per-client
//! rate limit (see [`crate::state::limiter`]) as middleware, and overload and
//! timeouts of the tower layers as problem documents.

use std::net::SocketAddr;
use std::time::Instant;

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::http::problem::{ApiError, ErrorKind};
use crate::state::AppState;

pub async fn rate_limit(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let client = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    match state.limiter.take(client, Instant::now()) {
        Ok(()) => next.run(req).await,
        Err(retry_after) => {
            state.metrics.count("askee_rate_limited_total");
            let mut e = ApiError::new(
                ErrorKind::RateLimited,
                "rate-limited",
                "too many requests",
                format!("this client sends too many requests; retry in {retry_after} s"),
            );
            e.retry_after = Some(retry_after);
            e.into_response()
        }
    }
}

/// Turns errors of the tower layers (timeout, load shedding) into problems.
pub async fn handle_layer_error(err: tower::BoxError) -> Response {
    if err.is::<tower::timeout::error::Elapsed>() {
        ApiError::new(
            ErrorKind::Timeout,
            "timeout",
            "the request took too long",
            "the request did not finish in time",
        )
        .into_response()
    } else if err.is::<tower::load_shed::error::Overloaded>() {
        let mut e = ApiError::new(
            ErrorKind::Unavailable,
            "overloaded",
            "the server is overloaded",
            "too many requests are in flight; retry shortly",
        );
        e.retry_after = Some(1);
        e.into_response()
    } else {
        ApiError::internal(err.to_string()).into_response()
    }
}
