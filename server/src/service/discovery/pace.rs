//! Politeness: a pacer hands out evenly spaced start times, so callers
//! together stay under a rate however many of them wait at once.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

pub struct Pacer {
    interval: Duration,
    next: Mutex<Instant>,
}

impl Pacer {
    /// A pacer for `rate` events per second; `None` for a rate that is not
    /// a positive finite number (no limit).
    pub fn per_second(rate: f64) -> Option<Self> {
        (rate.is_finite() && rate > 0.0).then(|| Self {
            interval: Duration::from_secs_f64(1.0 / rate),
            next: Mutex::new(Instant::now()),
        })
    }

    /// Waits for this caller's slot.
    pub async fn wait(&self) {
        let slot = {
            let mut next = self.next.lock().expect("pacer lock");
            let slot = (*next).max(Instant::now());
            *next = slot + self.interval;
            slot
        };
        tokio::time::sleep_until(slot).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn slots_are_spaced_by_the_interval() {
        let pacer = Pacer::per_second(100.0).unwrap();
        let start = Instant::now();
        for _ in 0..11 {
            pacer.wait().await;
        }
        // ten intervals of 10 ms at least passed between the first and last slot
        assert!(start.elapsed() >= Duration::from_millis(100));
        assert!(Pacer::per_second(0.0).is_none());
        assert!(Pacer::per_second(f64::INFINITY).is_none());
    }
}
