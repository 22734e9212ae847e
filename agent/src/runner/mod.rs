//! The daemon (`askee-agent run`): registers the node, pulls work while the
//! machine is idle and consent holds, runs it in the sandbox, uploads signed
//! results, heartbeats, renews the token, and stops everything within a
//! second of a revocation or expiry.
//!
//! Consent is watched three ways, all failing closed: a long-poll on the
//! token's revocation URL (the push channel), the coordinator-signed
//! revocation list when the long-poll cannot be made (stale list = pause),
//! and a local timer at the token's expiry. Finished results go to an
//! on-disk outbox before any upload, so a coordinator outage or a restart
//! loses none.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use askee_core::b64;
use askee_core::signing;
use askee_core::wire::v1::{
    Assignment, ChallengeRequest, ConsentToken, Heartbeat, HeartbeatAck, LeaseRequest,
    LeaseResponse, NodeChallenge, NodeRegistered, NodeRegistration, NodeState, ReportStatus,
    ResourceUsage, ResultReport, ResultStatement, SignedRevocationList, SystemProfile,
};
use askee_sandbox::{TaskOutcome, Usage};
use ed25519_dalek::SigningKey;
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, watch};

use crate::activity::Activity;
use crate::client::{ClientError, Coordinator};
use crate::clock::now;
use crate::exec::{Executor, Job, Requested, effective_limits};
use crate::home::Home;
use crate::journal::Journal;

mod consent;
mod node;
mod outbox;
mod status;
mod work;

pub use outbox::Outbox;
pub use status::{RUN_STATUS_FILE, RunStatus};

/// Largest module the agent downloads.
const MAX_MODULE_BYTES: u64 = 64 << 20;
/// How long one long-poll on the revocation URL is held.
const WATCH_WAIT: Duration = Duration::from_secs(50);
/// Longest pause between retries when the coordinator cannot be reached.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("no consent token in {home}: run `askee-agent consent grant` first")]
    NoConsent { home: PathBuf },
    #[error(transparent)]
    Home(#[from] crate::home::HomeError),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Journal(#[from] crate::journal::JournalError),
    #[error("cannot use the outbox {path}: {source}")]
    Outbox {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Options of the daemon.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Tasks run at once.
    pub parallel: usize,
    /// Operator keys (base64url) whose tasks may run; empty trusts every
    /// operator the coordinator registered.
    pub allowed_operators: Vec<String>,
    /// Logical processors of the machine (scales the token's CPU share).
    pub cores: u32,
    /// Demo and test only: corrupt every completed result before it is
    /// digested and signed (a deliberately Byzantine node).
    pub byzantine_corrupt_results: bool,
}

/// Where consent stands for the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Consent {
    /// The token is valid, unexpired and unrevoked as far as we know.
    Active,
    /// Consent cannot be confirmed right now (revocation list stale, node
    /// not registered): no work runs until it can.
    Paused(String),
    /// Revoked or expired: no work runs until a new token is granted.
    Ended(String),
}

/// Exponential backoff with a cap: 0.5 s, 1 s, 2 s, … 30 s.
fn backoff(attempt: u32) -> Duration {
    let ms = 500u64.saturating_mul(1u64 << attempt.min(6));
    Duration::from_millis(ms).min(MAX_BACKOFF)
}

#[derive(Default)]
struct Counters {
    completed: u64,
    failed: u64,
    cpu_ms_total: u64,
}

/// The daemon's shared state.
pub struct Runner {
    home: Home,
    key: SigningKey,
    coord: Coordinator,
    journal: Arc<Journal>,
    exec: Executor,
    outbox: Outbox,
    profile: SystemProfile,
    opts: RunOptions,
    token: Mutex<ConsentToken>,
    consent: watch::Sender<Consent>,
    /// Bumped whenever the token is replaced (renewal or a new grant).
    token_epoch: watch::Sender<u64>,
    activity: watch::Receiver<Activity>,
    node_state: Mutex<Option<NodeState>>,
    heartbeat_every: Mutex<Duration>,
    upload_wake: tokio::sync::Notify,
    counters: Mutex<Counters>,
    slots: Arc<Semaphore>,
}

impl Runner {
    pub fn new(
        home: Home,
        journal: Arc<Journal>,
        exec: Executor,
        profile: SystemProfile,
        activity: watch::Receiver<Activity>,
        opts: RunOptions,
    ) -> Result<Arc<Self>, RunError> {
        let key = home.key()?;
        let state = home.state()?;
        let (Some(base), Some(token)) = (state.coordinator, state.token) else {
            return Err(RunError::NoConsent {
                home: home.dir().to_owned(),
            });
        };
        let coord = Coordinator::new(&base, key.clone())?;
        let outbox = Outbox::open(home.dir().join("outbox"))?;
        Ok(Arc::new(Self {
            home,
            key,
            coord,
            journal,
            exec,
            outbox,
            profile,
            slots: Arc::new(Semaphore::new(opts.parallel.max(1))),
            opts,
            token: Mutex::new(token),
            consent: watch::Sender::new(Consent::Paused("not registered yet".into())),
            token_epoch: watch::Sender::new(0),
            activity,
            node_state: Mutex::new(None),
            heartbeat_every: Mutex::new(Duration::from_secs(10)),
            upload_wake: tokio::sync::Notify::new(),
            counters: Mutex::new(Counters::default()),
        }))
    }

    fn token(&self) -> ConsentToken {
        self.token.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn journal(&self, kind: &str, data: serde_json::Value) {
        if let Err(e) = self.journal.append(kind, data) {
            tracing::error!(error = %e, kind, "cannot write the local journal");
        }
    }

    /// The work slots and their number: holding all of them means no task
    /// runs and none starts (the self-update takes them before installing).
    pub fn slots(&self) -> (Arc<Semaphore>, u32) {
        (self.slots.clone(), self.opts.parallel.max(1) as u32)
    }

    /// A receiver of consent changes (tests and the status writer use it).
    pub fn consent(&self) -> watch::Receiver<Consent> {
        self.consent.subscribe()
    }

    fn set_consent(&self, next: Consent) {
        let changed = self.consent.send_if_modified(|c| {
            if *c == next {
                return false;
            }
            // An ended consent only gives way to a new token (`reopen`).
            if matches!(c, Consent::Ended(_)) {
                return false;
            }
            *c = next.clone();
            true
        });
        if !changed {
            return;
        }
        match &next {
            Consent::Active => {
                self.exec.registry().reopen();
                self.journal("work.resumed", serde_json::json!({}));
                tracing::info!("consent active: work may run while idle");
            }
            Consent::Paused(why) | Consent::Ended(why) => {
                let started = std::time::Instant::now();
                let killed = self.exec.registry().stop_all(why);
                let ended = matches!(next, Consent::Ended(_));
                self.journal(
                    if ended { "work.stopped" } else { "work.paused" },
                    serde_json::json!({
                        "reason": why,
                        "terminated": killed,
                        "token_id": self.token().payload.token_id,
                    }),
                );
                tracing::warn!(reason = %why, terminated = killed, elapsed_us = started.elapsed().as_micros() as u64,
                    "{}", if ended { "consent ended: every task stopped" } else { "work paused" });
            }
        }
    }

    /// Runs until `shutdown` resolves.
    pub async fn run(self: Arc<Self>, shutdown: impl std::future::Future<Output = ()>) {
        if let Err(e) = self.exec.clean_scratch() {
            tracing::warn!(error = %e, "cannot clean the task scratch space");
        }
        self.journal(
            "agent.start",
            serde_json::json!({"pid": std::process::id(), "token_id": self.token().payload.token_id}),
        );
        if self.opts.byzantine_corrupt_results {
            tracing::warn!(
                "BYZANTINE MODE (demo/test only): every completed result will be corrupted before it is signed"
            );
            eprintln!(
                "askee-agent: WARNING: --byzantine-corrupt-results is on; this node lies on purpose (demo/test only)"
            );
            self.journal(
                "byzantine.mode",
                serde_json::json!({"corrupt_results": true}),
            );
        }
        let tasks = vec![
            tokio::spawn(self.clone().consent_loop()),
            tokio::spawn(self.clone().expiry_loop()),
            tokio::spawn(self.clone().renewal_loop()),
            tokio::spawn(self.clone().heartbeat_loop()),
            tokio::spawn(self.clone().upload_loop()),
            tokio::spawn(self.clone().work_loop()),
            tokio::spawn(self.clone().new_grant_loop()),
            tokio::spawn(self.clone().status_loop()),
        ];
        shutdown.await;
        let killed = self.exec.registry().stop_all("agent shutting down");
        for t in &tasks {
            t.abort();
        }
        // Wait for terminated tasks to be reaped and their scratch removed.
        let _ = self
            .slots
            .acquire_many(self.opts.parallel.max(1) as u32)
            .await;
        self.journal(
            "agent.stop",
            serde_json::json!({"terminated": killed, "pending_uploads": self.outbox.len()}),
        );
        self.write_status();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_a_cap() {
        assert_eq!(backoff(0), Duration::from_millis(500));
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(3), Duration::from_secs(4));
        assert_eq!(backoff(20), MAX_BACKOFF);
    }
}
