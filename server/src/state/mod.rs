//! What the server process holds and every layer reads: the store, the
//! configuration, the signing keys, the clock, metrics, the per-client rate
//! limiter, revocation wake-ups and the portal's pairings.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use crate::config::Config;
use crate::keys::KeySet;

use crate::metrics::Metrics;
use crate::store::Store;
pub use limiter::RateLimiter;
pub use pairings::Pairings;

pub mod limiter;
pub mod pairings;

/// Where handlers read the time from. Tests pin it to check expiry at exact
/// instants; the server reads the system clock.
#[derive(Clone)]
pub enum Clock {
    System,
    Manual(Arc<AtomicI64>),
}

impl Clock {
    /// Unix seconds.
    pub fn now(&self) -> i64 {
        self.now_ms().div_euclid(1000)
    }

    pub fn now_ms(&self) -> i64 {
        match self {
            Self::System => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0),
            Self::Manual(ms) => ms.load(Ordering::SeqCst),
        }
    }
}

#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub config: Arc<Config>,
    pub keys: Arc<KeySet>,
    pub clock: Clock,
    pub metrics: Arc<Metrics>,
    pub limiter: Arc<RateLimiter>,
    /// Bumped after every revocation this process commits, so long-polls on
    /// the revocation URL wake at once; revocations made by another server
    /// process sharing the database are seen by the long-poll's own re-check.
    pub revocations: Arc<tokio::sync::watch::Sender<u64>>,
    /// The consent portal's one-time pairings (in this process's memory).
    pub portal: Arc<Pairings>,
}
