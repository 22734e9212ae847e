//! Prometheus metrics in the text exposition format: request counts by
//! route and status, request latency histograms, and domain counters.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

/// What has been counted so far.
#[derive(Default)]
struct Counts {
    /// Requests by (method, route, status).
    requests: BTreeMap<(String, String, u16), u64>,
    latency: BTreeMap<String, Histogram>,
    counters: BTreeMap<&'static str, u64>,
}

#[derive(Default)]
pub struct Metrics {
    counts: Mutex<Counts>,
}

impl Metrics {
    pub fn observe_request(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        let mut counts = self.counts.lock().expect("metrics lock");
        *counts
            .requests
            .entry((method.to_owned(), route.to_owned(), status))
            .or_default() += 1;
        let h = counts.latency.entry(route.to_owned()).or_default();
        let secs = elapsed.as_secs_f64();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if secs <= *bound {
                h.counts[i] += 1;
            }
        }
        h.sum += secs;
        h.count += 1;
    }

    pub fn count(&self, name: &'static str) {
        self.add(name, 1);
    }

    pub fn add(&self, name: &'static str, n: u64) {
        *self
            .counts
            .lock()
            .expect("metrics lock")
            .counters
            .entry(name)
            .or_default() += n;
    }

    pub fn render(&self) -> String {
        let counts = self.counts.lock().expect("metrics lock");
        let mut out = String::new();
        out.push_str(
            "# HELP askee_http_requests_total HTTP requests by method, route and status.\n",
        );
        out.push_str("# TYPE askee_http_requests_total counter\n");
        for ((method, route, status), n) in &counts.requests {
            let _ = writeln!(
                out,
                "askee_http_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
        out.push_str("# HELP askee_http_request_duration_seconds HTTP request latency by route.\n");
        out.push_str("# TYPE askee_http_request_duration_seconds histogram\n");
        for (route, h) in &counts.latency {
            for (i, bound) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "askee_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"{bound}\"}} {}",
                    h.counts[i]
                );
            }
            let _ = writeln!(
                out,
                "askee_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "askee_http_request_duration_seconds_sum{{route=\"{route}\"}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "askee_http_request_duration_seconds_count{{route=\"{route}\"}} {}",
                h.count
            );
        }
        for (name, n) in &counts.counters {
            let _ = writeln!(out, "# TYPE {name} counter\n{name} {n}");
        }
        out
    }
}
