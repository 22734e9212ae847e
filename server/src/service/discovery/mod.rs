//! The discovery crawler (the seed's DiscoveryService: poll, validate,
//! queue). It takes domains from the store's queue, resolves
//! `_askee.<domain>` TXT records, fetches `/.well-known/askee-participation`,
//! lets `askee_core::signal` decide, and queues one verified invitation per
//! (domain, key). QR codes arrive as uploaded PNG images.
//!
//! A lost answer (timeout, SERVFAIL, HTTP 5xx) is never taken as a "no":
//! it leaves everything as it was and the domain is retried with backoff.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use askee_core::signal::{self, Channel, Decision, Freshness, Rejection, Verdict, Verified};
use tokio::sync::Semaphore;

use crate::service::consent;
use crate::state::AppState;
use crate::store::StoreError;
use crate::store::discovery::{DiscoveredSignal, DomainCheck};

mod dns;
mod fetch;
mod pace;
pub mod qr;
pub mod queue;

pub use pace::Pacer;

#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("cannot build the dns resolver for {name_server}: {cause}")]
    Resolver { name_server: String, cause: String },
    #[error("cannot build the http client: {0}")]
    Http(#[source] reqwest::Error),
    #[error("cannot read the test root certificate: {0}")]
    Certificate(#[source] reqwest::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("crawl task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("qr image: {0}")]
    QrImage(String),
    #[error("qr code: {0}")]
    QrCode(String),
    #[error("qr payload rejected: {0}")]
    QrRejected(#[source] Rejection),
}

/// How the well-known document is fetched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WellKnown {
    /// Not fetched (a DNS-only crawl).
    Off,
    /// `https://<domain>/.well-known/askee-participation`, the default.
    Https,
    /// Plain `http://` (explicit test option only).
    InsecureHttpForTests,
}

#[derive(Debug, Clone)]
pub struct CrawlerConfig {
    /// Name servers to ask (UDP, then TCP on truncation); empty means the
    /// system's resolv.conf.
    pub name_servers: Vec<SocketAddr>,
    pub well_known: WellKnown,
    /// Test option: connect every well-known fetch to this address (and its
    /// port) instead of resolving the domain.
    pub well_known_connect: Option<SocketAddr>,
    /// Extra trusted root certificates (PEM), for test certificates.
    pub extra_roots_pem: Vec<Vec<u8>>,
    /// Domains checked at once.
    pub concurrency: usize,
    /// Global cap on DNS queries plus HTTP fetches per second (None: none).
    pub max_qps: Option<f64>,
    /// Cap per name server, queries per second (None: none).
    pub per_name_server_qps: Option<f64>,
    pub dns_timeout: Duration,
    pub http_timeout: Duration,
    /// Extra tries of a channel that gave no answer, within one check.
    pub retries: u32,
    /// First backoff between those tries; doubles each time.
    pub retry_backoff: Duration,
    /// A domain is checked again after its record's TTL, clamped to this
    /// range: the lower bound is the per-domain rate limit.
    pub min_recheck: Duration,
    pub max_recheck: Duration,
    /// Base of the backoff for a domain whose check got no answer (doubles
    /// per consecutive failure, capped at `max_recheck`).
    pub failure_backoff: Duration,
    pub freshness: Freshness,
    /// Domains taken from the queue per store round trip.
    pub batch: u32,
}

impl Default for CrawlerConfig {
    fn default() -> Self {
        Self {
            name_servers: Vec::new(),
            well_known: WellKnown::Https,
            well_known_connect: None,
            extra_roots_pem: Vec::new(),
            concurrency: 64,
            max_qps: Some(200.0),
            per_name_server_qps: Some(50.0),
            dns_timeout: Duration::from_secs(3),
            http_timeout: Duration::from_secs(10),
            retries: 2,
            retry_backoff: Duration::from_millis(500),
            min_recheck: Duration::from_secs(3600),
            max_recheck: Duration::from_secs(7 * 24 * 3600),
            failure_backoff: Duration::from_secs(300),
            freshness: Freshness::default(),
            batch: 1000,
        }
    }
}

impl CrawlerConfig {
    /// Politeness lifted (benchmarks and tests on loopback).
    pub fn unlimited(mut self) -> Self {
        self.max_qps = None;
        self.per_name_server_qps = None;
        self
    }
}

/// What the check of one domain came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A new invitation was queued.
    Invited { manifest_id: String },
    /// Opted in and verified before: nothing new.
    Known,
    /// Nothing (valid) published; `withdrawn` pending invitations ended.
    Absent { withdrawn: usize },
    /// A bad signal, with its reason; `withdrawn` as above.
    Rejected {
        rejection: Rejection,
        withdrawn: usize,
    },
    /// No answer from some channel: retried later, nothing changed.
    Retry { cause: String },
}

impl Outcome {
    fn label(&self) -> &'static str {
        match self {
            Self::Invited { .. } => "invited",
            Self::Known => "known",
            Self::Absent { withdrawn: 0 } => "absent",
            Self::Absent { .. } => "withdrawn",
            Self::Rejected { .. } => "rejected",
            Self::Retry { .. } => "retry",
        }
    }
}

/// Totals of one crawl run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub checked: u64,
    /// Domains with a valid opt-in (new invitations plus known ones).
    pub opted_in: u64,
    pub invited: u64,
    pub withdrawn: u64,
    pub absent: u64,
    pub retry: u64,
    /// Invalid signals by reason.
    pub invalid: BTreeMap<&'static str, u64>,
}

impl Summary {
    fn add(&mut self, outcome: &Outcome) {
        self.checked += 1;
        match outcome {
            Outcome::Invited { .. } => {
                self.opted_in += 1;
                self.invited += 1;
            }
            Outcome::Known => self.opted_in += 1,
            Outcome::Absent { withdrawn } => {
                self.absent += 1;
                self.withdrawn += *withdrawn as u64;
            }
            Outcome::Rejected {
                rejection,
                withdrawn,
            } => {
                *self.invalid.entry(rejection.reason()).or_default() += 1;
                self.withdrawn += *withdrawn as u64;
            }
            Outcome::Retry { .. } => self.retry += 1,
        }
    }
}

fn metric_for(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Invited { .. } => "askee_discovery_invited_total",
        Outcome::Known => "askee_discovery_known_total",
        Outcome::Absent { withdrawn: 0 } => "askee_discovery_absent_total",
        Outcome::Absent { .. } => "askee_discovery_withdrawn_total",
        Outcome::Retry { .. } => "askee_discovery_retry_total",
        Outcome::Rejected { rejection, .. } => match rejection.reason() {
            "malformed" => "askee_discovery_rejected_malformed_total",
            "oversized" => "askee_discovery_rejected_oversized_total",
            "unsigned" => "askee_discovery_rejected_unsigned_total",
            "bad_signature" => "askee_discovery_rejected_bad_signature_total",
            "stale" => "askee_discovery_rejected_stale_total",
            "future_dated" => "askee_discovery_rejected_future_dated_total",
            "wrong_domain" => "askee_discovery_rejected_wrong_domain_total",
            "duplicate" => "askee_discovery_rejected_duplicate_total",
            _ => "askee_discovery_rejected_conflict_total",
        },
    }
}

/// A channel's answer plus the TTL it may be trusted for.
pub(crate) struct Answer {
    pub channel: Channel,
    pub ttl: Option<u32>,
    /// Why there was no answer, for `Channel::Unknown`.
    pub cause: Option<String>,
}

pub struct Crawler {
    state: AppState,
    config: CrawlerConfig,
    dns: dns::Dns,
    http: Option<fetch::Fetcher>,
    global: Option<Pacer>,
    /// Domains checked so far (for progress bars).
    pub progress: Arc<AtomicU64>,
}

impl Crawler {
    pub fn new(state: AppState, config: CrawlerConfig) -> Result<Arc<Self>, DiscoveryError> {
        let dns = dns::Dns::new(&config)?;
        let http = match config.well_known {
            WellKnown::Off => None,
            _ => Some(fetch::Fetcher::new(&config)?),
        };
        Ok(Arc::new(Self {
            global: config.max_qps.and_then(Pacer::per_second),
            dns,
            http,
            state,
            config,
            progress: Arc::new(AtomicU64::new(0)),
        }))
    }

    async fn pace(&self) {
        if let Some(p) = &self.global {
            p.wait().await;
        }
    }

    /// Checks one domain and acts on it (queues or withdraws invitations).
    /// Does not touch the domain's queue row.
    pub async fn check(&self, domain: &str) -> Result<(Outcome, Option<u32>), DiscoveryError> {
        let domain = match signal::normalize_domain(domain) {
            Ok(d) => d,
            Err(rejection) => {
                return Ok((
                    Outcome::Rejected {
                        rejection,
                        withdrawn: 0,
                    },
                    None,
                ));
            }
        };
        let now = self.state.clock.now();
        let dns = self.with_retries(|| self.dns.lookup(&domain, now)).await;
        let wk = match &self.http {
            None => Answer {
                channel: Channel::Absent,
                ttl: None,
                cause: None,
            },
            Some(http) => {
                self.with_retries(|| http.fetch(&domain, now, self.config.freshness))
                    .await
            }
        };
        let ttl = dns.ttl;
        let cause = dns.cause.clone().or(wk.cause.clone());
        let outcome = match signal::decide(dns.channel, wk.channel) {
            Decision::Invite(verified) => invite(&self.state, &domain, verified).await?,
            Decision::Withdraw => {
                let withdrawn = withdraw(&self.state, &domain, None, "signal withdrawn").await?;
                Outcome::Absent { withdrawn }
            }
            Decision::Reject(rejection) => {
                tracing::warn!(%domain, reason = rejection.reason(), %rejection, "participation signal rejected");
                let withdrawn = withdraw(&self.state, &domain, None, rejection.reason()).await?;
                Outcome::Rejected {
                    rejection,
                    withdrawn,
                }
            }
            Decision::Retry => Outcome::Retry {
                cause: cause.unwrap_or_else(|| "no answer".into()),
            },
        };
        self.state.metrics.count(metric_for(&outcome));
        self.state.metrics.count("askee_discovery_checked_total");
        Ok((outcome, ttl))
    }

    async fn with_retries<F, Fut>(&self, mut attempt: F) -> Answer
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Answer>,
    {
        let mut backoff = self.config.retry_backoff;
        let mut tries = 0;
        loop {
            self.pace().await;
            let answer = attempt().await;
            if !matches!(answer.channel, Channel::Unknown) || tries >= self.config.retries {
                return answer;
            }
            tries += 1;
            tokio::time::sleep(backoff).await;
            backoff *= 2;
        }
    }

    fn next_check(&self, now: i64, outcome: &Outcome, ttl: Option<u32>, failures: i64) -> i64 {
        let secs = |d: Duration| d.as_secs() as i64;
        let min = secs(self.config.min_recheck).max(1);
        let max = secs(self.config.max_recheck).max(min);
        let wait = match outcome {
            Outcome::Retry { .. } => {
                let shift = failures.clamp(0, 20) as u32;
                secs(self.config.failure_backoff)
                    .max(1)
                    .saturating_mul(1 << shift)
                    .min(max)
            }
            _ => ttl.map(i64::from).unwrap_or(max).clamp(min, max),
        };
        now + wait
    }

    /// Crawls every domain due now, batch by batch, until none is left;
    /// each batch's results are written in one transaction, and each new
    /// invitation as soon as it is verified.
    pub async fn run_due(self: &Arc<Self>) -> Result<Summary, DiscoveryError> {
        let started = self.state.clock.now();
        let store = self.state.store.discovery();
        let semaphore = Arc::new(Semaphore::new(self.config.concurrency.max(1)));
        let mut summary = Summary::default();
        loop {
            let due = store.due_domains(started, self.config.batch).await?;
            if due.is_empty() {
                return Ok(summary);
            }
            let mut tasks = tokio::task::JoinSet::new();
            for item in due {
                let this = Arc::clone(self);
                let permit = Arc::clone(&semaphore)
                    .acquire_owned()
                    .await
                    .expect("semaphore never closed");
                tasks.spawn(async move {
                    let _permit = permit;
                    let result = this.check(&item.domain).await;
                    this.progress.fetch_add(1, Ordering::Relaxed);
                    (item, result)
                });
            }
            let mut checks = Vec::new();
            let mut first_error = None;
            while let Some(joined) = tasks.join_next().await {
                let (item, result) = joined?;
                let (outcome, ttl) = match result {
                    Ok(r) => r,
                    Err(e) => {
                        first_error.get_or_insert(e);
                        continue;
                    }
                };
                let now = self.state.clock.now().max(started);
                let failures = match outcome {
                    Outcome::Retry { .. } => item.failures + 1,
                    _ => 0,
                };
                let next = self.next_check(now, &outcome, ttl, item.failures);
                let reason = match &outcome {
                    Outcome::Rejected { rejection, .. } => Some(rejection.reason().to_owned()),
                    Outcome::Retry { cause } => Some(cause.clone()),
                    _ => None,
                };
                summary.add(&outcome);
                checks.push(DomainCheck {
                    domain: item.domain,
                    checked_at: now,
                    next_check_at: next,
                    failures,
                    outcome: outcome.label().to_owned(),
                    reason,
                });
            }
            store.record_checks(&checks).await?;
            if let Some(e) = first_error {
                return Err(e);
            }
        }
    }

    /// The server's background crawl: every `every`, crawls whatever the
    /// queue holds that is due (domains submitted through the API, re-checks
    /// after a record's TTL, retries after a lost answer). Runs until the
    /// task is dropped; a failed round is logged and the next one retries.
    pub async fn background(self: Arc<Self>, every: Duration) {
        let mut tick = tokio::time::interval(every.max(Duration::from_secs(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match self.run_due().await {
                Ok(summary) if summary.checked > 0 => {
                    tracing::info!(
                        checked = summary.checked,
                        opted_in = summary.opted_in,
                        "background crawl round"
                    );
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "background crawl round failed"),
            }
        }
    }

    /// [`import_qr`] with this crawler's freshness window.
    pub async fn import_qr(&self, png: &[u8]) -> Result<Outcome, DiscoveryError> {
        import_qr(&self.state, png, self.config.freshness).await
    }
}

/// Imports a QR code from an uploaded PNG image: decodes it, verifies
/// the signed statement and queues its invitation once per (domain, key).
pub async fn import_qr(
    state: &AppState,
    png: &[u8],
    freshness: Freshness,
) -> Result<Outcome, DiscoveryError> {
    {
        let payload = qr::decode_png(png)?;
        let parsed = signal::parse_uri(&payload).map_err(DiscoveryError::QrRejected)?;
        let domain = parsed.domain.clone().unwrap_or_default();
        let now = state.clock.now();
        match signal::verify(parsed, None, now, freshness) {
            Ok(Verdict::Ready(verified)) => {
                let outcome = invite(state, &domain, verified).await?;
                state.metrics.count(metric_for(&outcome));
                Ok(outcome)
            }
            Ok(Verdict::NotReady) => Err(DiscoveryError::QrRejected(Rejection::Malformed {
                detail: "a qr code must say consent=ready".into(),
            })),
            Err(rejection) => {
                tracing::warn!(reason = rejection.reason(), %rejection, "qr signal rejected");
                Err(DiscoveryError::QrRejected(rejection))
            }
        }
    }
}

async fn invite(
    state: &AppState,
    domain: &str,
    verified: Verified,
) -> Result<Outcome, DiscoveryError> {
    let signal = verified.signal;
    let store = state.store.discovery();
    // a new key for the domain replaces the old one's pending invitation
    if !domain.is_empty() {
        withdraw(state, domain, Some(&signal.public_key), "key replaced").await?;
    }
    if store.is_discovered(domain, &signal.public_key).await? {
        return Ok(Outcome::Known);
    }
    let now = state.clock.now();
    let (_, invitation, audit) = consent::new_invitation(
        state,
        &signal.public_key,
        &signal.source,
        Some(domain).filter(|d| !d.is_empty()),
        now,
    );
    let record = DiscoveredSignal {
        domain: domain.to_owned(),
        node_key: signal.public_key.clone(),
        source: signal.source.clone(),
        signal_json: serde_json::to_string(&signal).expect("signal serialises"),
        verified_at: now,
    };
    if store.record_discovered(&record, &invitation, audit).await? {
        tracing::info!(%domain, key = %signal.public_key, source = %signal.source, manifest_id = %invitation.manifest_id, "invitation queued");
        Ok(Outcome::Invited {
            manifest_id: invitation.manifest_id,
        })
    } else {
        Ok(Outcome::Known)
    }
}

async fn withdraw(
    state: &AppState,
    domain: &str,
    keep: Option<&str>,
    reason: &str,
) -> Result<usize, DiscoveryError> {
    let ids = state
        .store
        .discovery()
        .withdraw_discovered(domain, keep, state.clock.now_ms(), reason)
        .await?;
    for id in &ids {
        tracing::info!(%domain, manifest_id = %id, reason, "discovered invitation withdrawn");
    }
    Ok(ids.len())
}
