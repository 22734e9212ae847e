//! Per-client rate limiting: a token bucket per client address (the HTTP
//! middleware that applies it is `http::limit`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

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
