//! Per-client rate limiting (a token bucket per client address) and the
//! conversion of overload and timeouts into problem documents: the seed's
//! denial-of-service mitigations.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::Instant;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::problem::ApiError;
use crate::state::AppState;

struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Token buckets keyed by client address.
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<Option<IpAddr>, Bucket>>,
}

impl RateLimiter {
    pub fn new(rate: f64, burst: f64) -> Self {
        Self {
            rate,
            burst,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token; on refusal returns the seconds until one is free.
    pub fn take(&self, client: Option<IpAddr>, now: Instant) -> Result<(), u64> {
        let mut buckets = self.buckets.lock().expect("rate limiter lock");
        if buckets.len() > 100_000 {
            // Forget full buckets so memory stays bounded under address churn.
            let (rate, burst) = (self.rate, self.burst);
            buckets.retain(|_, b| {
                b.tokens + now.duration_since(b.updated).as_secs_f64() * rate < burst
            });
        }
        let b = buckets.entry(client).or_insert(Bucket {
            tokens: self.burst,
            updated: now,
        });
        b.tokens =
            (b.tokens + now.duration_since(b.updated).as_secs_f64() * self.rate).min(self.burst);
        b.updated = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - b.tokens) / self.rate).ceil().max(1.0) as u64)
        }
    }
}

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
                StatusCode::TOO_MANY_REQUESTS,
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
            StatusCode::REQUEST_TIMEOUT,
            "timeout",
            "the request took too long",
            "the request did not finish in time",
        )
        .into_response()
    } else if err.is::<tower::load_shed::error::Overloaded>() {
        let mut e = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bucket_refuses_past_burst_and_refills() {
        let l = RateLimiter::new(10.0, 2.0);
        let t0 = Instant::now();
        let ip = Some(IpAddr::from([127, 0, 0, 1]));
        assert!(l.take(ip, t0).is_ok());
        assert!(l.take(ip, t0).is_ok());
        assert_eq!(l.take(ip, t0), Err(1));
        // Another client has its own bucket.
        assert!(l.take(Some(IpAddr::from([127, 0, 0, 2])), t0).is_ok());
        assert!(l.take(ip, t0 + Duration::from_millis(100)).is_ok());
    }
}
