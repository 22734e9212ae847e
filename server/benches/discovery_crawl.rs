//! Discovery crawl throughput: a generated zone of 100,000 domains, 1% of
//! them opted in with signed TXT records, served by a real authoritative
//! server (NSD) on loopback, crawled with the politeness limits lifted
//! (DNS channel only: there is no web server per domain on loopback).
//! The reference is the same server's own ceiling, measured in the same
//! run with dnsperf over the same names. Run:
//!   cargo bench -p askee-server --bench discovery_crawl
//! Environment: ASKEE_BENCH_DOMAINS (default 100000),
//! ASKEE_BENCH_CONCURRENCY (default 512), ASKEE_BENCH_RESOLVERS (default 4).

use std::process::Command;
use std::time::{Duration, Instant};

use askee_server::service::discovery::{Crawler, CrawlerConfig, WellKnown};
use askee_server::{Clock, Config};
use askee_testkit::dns::{Nsd, generated_zone};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn dnsperf(nsd: &Nsd, domains: &[String], dir: &std::path::Path) -> Option<f64> {
    let queries = dir.join("queries.txt");
    let text: String = domains
        .iter()
        .map(|d| format!("_askee.{d} TXT\n"))
        .collect();
    std::fs::write(&queries, text).ok()?;
    let out = Command::new("dnsperf")
        .args(["-s", &nsd.addr.ip().to_string()])
        .args(["-p", &nsd.addr.port().to_string()])
        .arg("-d")
        .arg(&queries)
        .args(["-l", "10", "-c", "4", "-q", "500"])
        .output()
        .ok()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().find(|l| l.contains("Queries per second"))?;
    println!("dnsperf: {}", line.trim());
    if let Some(lost) = stdout.lines().find(|l| l.contains("Queries lost")) {
        println!("dnsperf: {}", lost.trim());
    }
    line.split(':').nth(1)?.trim().parse().ok()
}

#[tokio::main]
async fn main() {
    let n = env("ASKEE_BENCH_DOMAINS", 100_000);
    let concurrency = env("ASKEE_BENCH_CONCURRENCY", 512);
    let resolvers = env("ASKEE_BENCH_RESOLVERS", 4);
    let dir = tempfile::tempdir().unwrap();
    let now = Clock::System.now();
    let (zone, domains, opted) = generated_zone("bench.test", n, 100, now);
    let nsd = Nsd::start("bench.test", &zone);
    println!(
        "zone: {n} domains, {} opted in, served by nsd on {}",
        opted.len(),
        nsd.addr
    );

    let url = format!("sqlite://{}", dir.path().join("askee.db").display());
    let store = askee_server::store::open(&url).await.unwrap();
    let config = Config::new(dir.path().join("data"), "http://askee.test".into());
    let state = askee_server::state(config, store, Clock::System).unwrap();
    let t = Instant::now();
    state
        .store
        .discovery()
        .add_domains(&domains, now)
        .await
        .unwrap();
    println!("queued {n} domains in {:.2}s", t.elapsed().as_secs_f64());

    let crawler = Crawler::new(
        state.clone(),
        CrawlerConfig {
            // the same server several times: several sockets, one pacer each
            name_servers: vec![nsd.addr; resolvers],
            well_known: WellKnown::Off,
            concurrency,
            dns_timeout: Duration::from_secs(2),
            retries: 2,
            retry_backoff: Duration::from_millis(100),
            batch: 5000,
            ..CrawlerConfig::default()
        }
        .unlimited(),
    )
    .unwrap();
    let t = Instant::now();
    let summary = crawler.run_due().await.unwrap();
    let secs = t.elapsed().as_secs_f64();
    let rate = summary.checked as f64 / secs;
    println!(
        "crawl: {} domains in {secs:.2}s = {rate:.0} domains/s (concurrency {concurrency}, {resolvers} resolvers); opted in {}, new invitations {}, no answer {}, invalid {:?}",
        summary.checked, summary.opted_in, summary.invited, summary.retry, summary.invalid
    );
    assert_eq!(summary.opted_in as usize, opted.len(), "every opt-in found");

    let t = Instant::now();
    state
        .store
        .discovery()
        .add_domains(&domains, Clock::System.now())
        .await
        .unwrap();
    let again = crawler.run_due().await.unwrap();
    println!(
        "re-crawl: {:.0} domains/s, new invitations {} (must be 0)",
        again.checked as f64 / t.elapsed().as_secs_f64(),
        again.invited
    );
    assert_eq!(again.invited, 0);

    match dnsperf(&nsd, &domains, dir.path()) {
        Some(qps) => println!(
            "reference: nsd ceiling {qps:.0} queries/s (dnsperf, same names, same run); crawl at {:.0}% of it",
            100.0 * rate / qps
        ),
        None => {
            println!("reference: dnsperf not available (tests/setup.d/discovery.sh installs it)")
        }
    }
}
