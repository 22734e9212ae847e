//! `askee-server discover`: load a domain list into the crawl queue, crawl
//! everything due with a progress bar, and print a summary.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use askee_core::signal::{self, Freshness};

use crate::service::discovery::{Crawler, CrawlerConfig, DiscoveryError, Summary, WellKnown};
use crate::state::AppState;

/// Crawl domains for participation signals and queue verified invitations.
#[derive(Debug, Clone, clap::Args)]
pub struct DiscoverArgs {
    /// File of domains, one per line (`#` comments and blank lines are
    /// skipped). They join the crawl queue; without it, whatever the queue
    /// holds that is due is crawled.
    #[arg(long)]
    pub domains: Option<PathBuf>,
    #[command(flatten)]
    pub crawl: CrawlArgs,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// How the crawler asks: shared by `discover` and the background crawl of
/// `serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct CrawlArgs {
    /// Name server to ask (IP:PORT), repeatable; default: /etc/resolv.conf.
    #[arg(long = "name-server")]
    pub name_servers: Vec<SocketAddr>,
    /// Only DNS: do not fetch /.well-known/askee-participation.
    #[arg(long)]
    pub no_well_known: bool,
    /// Domains checked at once.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Global cap on queries per second (DNS and HTTP together).
    #[arg(long, default_value_t = 200.0)]
    pub qps: f64,
    /// Cap on queries per second to each name server.
    #[arg(long, default_value_t = 50.0)]
    pub name_server_qps: f64,
    /// Lift the politeness limits (benchmarks against your own servers).
    #[arg(long)]
    pub no_politeness: bool,
    /// DNS timeout per query, in milliseconds.
    #[arg(long, default_value_t = 3000)]
    pub dns_timeout_ms: u64,
    /// Extra tries of a query that got no answer, with doubling backoff.
    #[arg(long, default_value_t = 2)]
    pub retries: u32,
    /// Oldest signal accepted, in days.
    #[arg(long, default_value_t = 365)]
    pub max_age_days: i64,
    /// Extra trusted root certificate (PEM) for well-known fetches (tests).
    #[arg(long, hide = true)]
    pub root_cert: Vec<PathBuf>,
    /// Test only: connect every well-known fetch to this address.
    #[arg(long, hide = true)]
    pub well_known_connect: Option<SocketAddr>,
    /// Test only: fetch the well-known document over plain HTTP.
    #[arg(long, hide = true)]
    pub insecure_http_well_known: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum DiscoverCommandError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Discovery(#[from] DiscoveryError),
}

impl DiscoverArgs {
    pub fn crawler_config(&self) -> Result<CrawlerConfig, DiscoverCommandError> {
        self.crawl.crawler_config()
    }
}

impl CrawlArgs {
    pub fn crawler_config(&self) -> Result<CrawlerConfig, DiscoverCommandError> {
        let mut roots = Vec::new();
        for path in &self.root_cert {
            roots.push(
                std::fs::read(path).map_err(|source| DiscoverCommandError::Read {
                    path: path.clone(),
                    source,
                })?,
            );
        }
        let config = CrawlerConfig {
            name_servers: self.name_servers.clone(),
            well_known: if self.no_well_known {
                WellKnown::Off
            } else if self.insecure_http_well_known {
                WellKnown::InsecureHttpForTests
            } else {
                WellKnown::Https
            },
            well_known_connect: self.well_known_connect,
            extra_roots_pem: roots,
            concurrency: self.concurrency,
            max_qps: Some(self.qps),
            per_name_server_qps: Some(self.name_server_qps),
            dns_timeout: Duration::from_millis(self.dns_timeout_ms),
            retries: self.retries,
            freshness: Freshness {
                max_age_secs: self.max_age_days * 24 * 3600,
                ..Freshness::default()
            },
            ..CrawlerConfig::default()
        };
        Ok(if self.no_politeness {
            config.unlimited()
        } else {
            config
        })
    }
}

/// Reads a domain list; lines that are not domain names are reported and
/// skipped.
pub fn read_domains(path: &PathBuf) -> Result<(Vec<String>, Vec<String>), DiscoverCommandError> {
    let text = std::fs::read_to_string(path).map_err(|source| DiscoverCommandError::Read {
        path: path.clone(),
        source,
    })?;
    let mut ok = Vec::new();
    let mut bad = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        match signal::normalize_domain(line) {
            Ok(d) => ok.push(d),
            Err(_) => bad.push(line.to_owned()),
        }
    }
    ok.sort();
    ok.dedup();
    Ok((ok, bad))
}

/// Runs the command: returns the summary and how long the crawl took.
pub async fn run(
    state: AppState,
    args: &DiscoverArgs,
) -> Result<(Summary, Duration), DiscoverCommandError> {
    let mut total = None;
    if let Some(path) = &args.domains {
        let (domains, bad) = read_domains(path)?;
        for b in &bad {
            tracing::warn!(line = %b, "not a domain name, skipped");
        }
        state
            .store
            .discovery()
            .add_domains(&domains, state.clock.now())
            .await
            .map_err(DiscoveryError::from)?;
        total = Some(domains.len() as u64);
    }
    let crawler = Crawler::new(state, args.crawler_config()?)?;
    let bar = if args.quiet {
        indicatif::ProgressBar::hidden()
    } else {
        let bar = match total {
            Some(n) => indicatif::ProgressBar::new(n),
            None => indicatif::ProgressBar::new_spinner(),
        };
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} domains ({per_sec})",
            )
            .expect("valid template"),
        );
        bar
    };
    let progress = crawler.progress.clone();
    let ticker = {
        let bar = bar.clone();
        tokio::spawn(async move {
            loop {
                bar.set_position(progress.load(Ordering::Relaxed));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let started = Instant::now();
    let result = crawler.run_due().await;
    let elapsed = started.elapsed();
    ticker.abort();
    bar.set_position(crawler.progress.load(Ordering::Relaxed));
    bar.finish_and_clear();
    Ok((result?, elapsed))
}

/// The summary in words.
pub fn render(summary: &Summary, elapsed: Duration) -> String {
    let rate = summary.checked as f64 / elapsed.as_secs_f64().max(1e-9);
    let mut out = format!(
        "checked {} domains in {:.1}s ({rate:.0}/s)\n  opted in: {} ({} new invitations)\n  nothing published: {}\n  withdrawn invitations: {}\n  no answer (retried later): {}\n",
        summary.checked,
        elapsed.as_secs_f64(),
        summary.opted_in,
        summary.invited,
        summary.absent,
        summary.withdrawn,
        summary.retry,
    );
    let invalid: u64 = summary.invalid.values().sum();
    out.push_str(&format!("  invalid: {invalid}\n"));
    for (reason, n) in &summary.invalid {
        out.push_str(&format!("    {reason}: {n}\n"));
    }
    out
}

/// The summary as JSON (for scripts and tests).
pub fn to_json(summary: &Summary, elapsed: Duration) -> serde_json::Value {
    serde_json::json!({
        "checked": summary.checked,
        "opted_in": summary.opted_in,
        "invited": summary.invited,
        "absent": summary.absent,
        "withdrawn": summary.withdrawn,
        "retry": summary.retry,
        "invalid": summary.invalid,
        "seconds": elapsed.as_secs_f64(),
    })
}
