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
use crate::exec::{Executor, Job, Requested, effective_limits};
use crate::home::Home;
use crate::journal::Journal;

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

/// What the daemon publishes for `askee-agent status`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunStatus {
    pub pid: u32,
    pub updated_at: i64,
    pub consent: String,
    pub activity: String,
    pub node_state: Option<String>,
    pub running: Vec<String>,
    pub completed: u64,
    pub failed: u64,
    pub cpu_ms_total: u64,
    pub pending_uploads: usize,
}

#[derive(Debug, Deserialize)]
struct WatchAnswer {
    status: String,
    #[serde(default)]
    reason: Option<String>,
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Exponential backoff with a cap: 0.5 s, 1 s, 2 s, … 30 s.
fn backoff(attempt: u32) -> Duration {
    let ms = 500u64.saturating_mul(1u64 << attempt.min(6));
    Duration::from_millis(ms).min(MAX_BACKOFF)
}

/// The on-disk queue of signed result reports awaiting upload.
pub struct Outbox {
    dir: PathBuf,
}

impl Outbox {
    pub fn open(dir: PathBuf) -> Result<Self, RunError> {
        std::fs::create_dir_all(&dir).map_err(|source| RunError::Outbox {
            path: dir.clone(),
            source,
        })?;
        Ok(Self { dir })
    }

    fn path_of(&self, assignment_id: &str) -> PathBuf {
        let h = signing::sha256(assignment_id.as_bytes());
        self.dir.join(format!("{}.json", hex::encode(&h[..16])))
    }

    /// Persists a report (write, sync, rename) before any upload attempt.
    pub fn put(&self, report: &ResultReport) -> Result<(), RunError> {
        let path = self.path_of(&report.assignment_id);
        let tmp = path.with_extension("tmp");
        let write = || -> std::io::Result<()> {
            use std::io::Write as _;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&serde_json::to_vec(report).expect("reports serialise"))?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)
        };
        write().map_err(|source| RunError::Outbox { path, source })
    }

    pub fn pending(&self) -> Vec<(PathBuf, ResultReport)> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for e in entries.flatten() {
            let path = e.path();
            if path.extension().is_some_and(|x| x == "json")
                && let Ok(bytes) = std::fs::read(&path)
                && let Ok(report) = serde_json::from_slice(&bytes)
            {
                out.push((path, report));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    pub fn len(&self) -> usize {
        self.pending().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn remove(&self, path: &Path) {
        let _ = std::fs::remove_file(path);
    }
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

    async fn register(&self) -> Result<NodeRegistered, ClientError> {
        let token = self.token();
        let challenge: NodeChallenge = self
            .coord
            .signed_post("/v1/nodes/challenge", &ChallengeRequest::default())
            .await?;
        let attestation = signing::sign_attestation(
            &self.key,
            &challenge.challenge,
            &token.payload.token_id,
            &self.profile,
        );
        let reg: NodeRegistered = self
            .coord
            .signed_post(
                "/v1/nodes/register",
                &NodeRegistration {
                    challenge: challenge.challenge,
                    consent_token: token.token.clone(),
                    profile: self.profile.clone(),
                    attestation,
                },
            )
            .await?;
        *self.node_state.lock().unwrap_or_else(|p| p.into_inner()) = Some(reg.state);
        *self
            .heartbeat_every
            .lock()
            .unwrap_or_else(|p| p.into_inner()) =
            Duration::from_secs(reg.heartbeat_interval_seconds.clamp(1, 300));
        self.journal(
            "node.register",
            serde_json::json!({"state": reg.state.as_str(), "reputation": reg.reputation}),
        );
        Ok(reg)
    }

    /// Registers, then long-polls the revocation URL; on failure falls back to
    /// the signed revocation list and pauses when that is stale.
    async fn consent_loop(self: Arc<Self>) {
        let mut epochs = self.token_epoch.subscribe();
        let mut attempt = 0u32;
        let mut registered_epoch = None;
        loop {
            let epoch = *epochs.borrow_and_update();
            let token = self.token();
            if token.payload.expires_at <= now() {
                self.set_consent(Consent::Ended("consent token expired".into()));
            }
            if matches!(*self.consent.borrow(), Consent::Ended(_)) {
                // Nothing to watch until a new token arrives.
                let _ = epochs.changed().await;
                continue;
            }
            if registered_epoch != Some(epoch) {
                match self.register().await {
                    Ok(reg) if reg.state == NodeState::Active => {
                        registered_epoch = Some(epoch);
                        attempt = 0;
                    }
                    Ok(reg) => {
                        self.set_consent(Consent::Ended(format!(
                            "coordinator lists this node as {}",
                            reg.state.as_str()
                        )));
                        continue;
                    }
                    Err(e) if Coordinator::is_refusal(&e) => {
                        // A refused registration (token revoked, expired or
                        // unknown) is checked against the revocation URL below.
                        tracing::warn!(error = %e, "registration refused");
                        self.set_consent(Consent::Paused(format!("registration refused: {e}")));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot reach the coordinator to register");
                        self.set_consent(Consent::Paused("coordinator unreachable".into()));
                        self.crl_check(&token).await;
                        tokio::select! {
                            _ = tokio::time::sleep(backoff(attempt)) => {}
                            _ = epochs.changed() => {}
                        }
                        attempt += 1;
                        continue;
                    }
                }
            }
            // The long-poll answers "active" only when its wait runs out, so
            // the first look after (re)registering must not wait: work starts
            // as soon as the token is known to be good.
            let wait = if *self.consent.borrow() == Consent::Active {
                WATCH_WAIT
            } else {
                Duration::ZERO
            };
            let path = format!("/revoke/{}?wait={}", token.payload.token_id, wait.as_secs());
            let answer = tokio::select! {
                a = self.coord.get_long::<WatchAnswer>(&path, wait) => a,
                _ = epochs.changed() => continue,
            };
            match answer {
                Ok(a) if a.status == "active" => {
                    attempt = 0;
                    if registered_epoch == Some(epoch) {
                        self.set_consent(Consent::Active);
                    }
                }
                Ok(a) => {
                    let why = match a.reason {
                        Some(r) => format!("consent {}: {r}", a.status),
                        None => format!("consent {}", a.status),
                    };
                    self.set_consent(Consent::Ended(why));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "revocation long-poll failed; checking the revocation list");
                    self.crl_check(&token).await;
                    tokio::select! {
                        _ = tokio::time::sleep(backoff(attempt)) => {}
                        _ = epochs.changed() => {}
                    }
                    attempt += 1;
                }
            }
        }
    }

    /// The fallback: the coordinator-signed revocation list, cached on disk.
    /// A list naming our grant ends consent; no fresh list pauses work.
    async fn crl_check(&self, token: &ConsentToken) {
        let cache = self.home.dir().join("revocations.json");
        let fetched: Result<SignedRevocationList, _> = self.coord.get("/v1/revocations").await;
        let signed = match fetched {
            Ok(list) => {
                let _ = std::fs::write(&cache, serde_json::to_vec(&list).unwrap_or_default());
                Some(list)
            }
            Err(_) => std::fs::read(&cache)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok()),
        };
        let issuer = b64::public_key(&token.payload.issuer);
        let list = match (signed, issuer) {
            (Some(s), Ok(key)) => signing::open_revocation_list(&key, &s).ok(),
            _ => None,
        };
        match list {
            Some(l)
                if l.revoked
                    .iter()
                    .any(|r| r.grant_id == token.payload.grant_id) =>
            {
                self.set_consent(Consent::Ended(
                    "grant listed in the signed revocation list".into(),
                ));
            }
            Some(l) if l.next_update > now() => {
                // The list vouches for the grant until next_update; the
                // long-poll will be retried.
            }
            _ => self.set_consent(Consent::Paused(
                "revocation status unknown and the revocation list is stale".into(),
            )),
        }
    }

    /// Ends consent at the token's expiry unless it was renewed.
    async fn expiry_loop(self: Arc<Self>) {
        let mut epochs = self.token_epoch.subscribe();
        loop {
            epochs.borrow_and_update();
            let expires = self.token().payload.expires_at;
            let left = Duration::from_secs(expires.saturating_sub(now()).max(0) as u64);
            tokio::select! {
                _ = tokio::time::sleep(left) => {
                    if self.token().payload.expires_at <= now() {
                        self.set_consent(Consent::Ended("consent token expired".into()));
                        let _ = epochs.changed().await;
                    }
                }
                _ = epochs.changed() => {}
            }
        }
    }

    /// Renews the token when two thirds of its life have passed.
    async fn renewal_loop(self: Arc<Self>) {
        let mut attempt = 0u32;
        loop {
            let p = self.token().payload;
            let at = p.issued_at + (p.expires_at - p.issued_at) * 2 / 3;
            let wait = Duration::from_secs(at.saturating_sub(now()).max(0) as u64);
            tokio::time::sleep(wait).await;
            if matches!(*self.consent.borrow(), Consent::Ended(_)) {
                // Wait for a new grant to replace the token.
                let mut epochs = self.token_epoch.subscribe();
                epochs.borrow_and_update();
                let _ = epochs.changed().await;
                continue;
            }
            let renewed: Result<ConsentToken, _> = self
                .coord
                .signed_post(
                    "/v1/tokens/renew",
                    &serde_json::json!({"token_id": p.token_id}),
                )
                .await;
            match renewed {
                Ok(t) if t.payload.subject == p.subject && t.payload.grant_id == p.grant_id => {
                    attempt = 0;
                    self.journal(
                        "consent.renew",
                        serde_json::json!({"token_id": t.payload.token_id, "expires_at": t.payload.expires_at}),
                    );
                    self.replace_token(t);
                }
                Ok(_) => {
                    tracing::error!("renewal answered a token for another node or grant; ignored");
                    tokio::time::sleep(backoff(attempt)).await;
                    attempt += 1;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "token renewal failed");
                    if Coordinator::is_refusal(&e) {
                        // The grant ended; the consent loop will learn why.
                        tokio::time::sleep(Duration::from_secs(60)).await;
                    } else {
                        tokio::time::sleep(backoff(attempt)).await;
                        attempt += 1;
                    }
                }
            }
        }
    }

    fn replace_token(&self, token: ConsentToken) {
        if let Ok(mut state) = self.home.state() {
            state.token = Some(token.clone());
            if let Err(e) = self.home.save(&state) {
                tracing::error!(error = %e, "cannot save the renewed token");
            }
        }
        *self.token.lock().unwrap_or_else(|p| p.into_inner()) = token;
        self.token_epoch.send_modify(|n| *n += 1);
    }

    /// After consent ended, watches the home for a new grant (made with
    /// `askee-agent consent grant`) and resumes with it.
    async fn new_grant_loop(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            if !matches!(*self.consent.borrow(), Consent::Ended(_)) {
                continue;
            }
            let Ok(state) = self.home.state() else {
                continue;
            };
            let Some(fresh) = state.token else { continue };
            if fresh.payload.token_id == self.token().payload.token_id
                || fresh.payload.expires_at <= now()
            {
                continue;
            }
            self.journal(
                "consent.new_token",
                serde_json::json!({"token_id": fresh.payload.token_id}),
            );
            *self.token.lock().unwrap_or_else(|p| p.into_inner()) = fresh;
            // Leave `Ended` explicitly: only a new token may.
            self.consent
                .send_replace(Consent::Paused("registering the new token".into()));
            self.token_epoch.send_modify(|n| *n += 1);
        }
    }

    async fn heartbeat_loop(self: Arc<Self>) {
        loop {
            let every = *self
                .heartbeat_every
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            tokio::time::sleep(every).await;
            if *self.consent.borrow() != Consent::Active {
                continue;
            }
            let beat = Heartbeat {
                running: self.exec.registry().running(),
                accepting_work: self.activity.borrow().is_idle()
                    && self.slots.available_permits() > 0,
            };
            let ack: Result<HeartbeatAck, _> =
                self.coord.signed_post("/v1/nodes/heartbeat", &beat).await;
            match ack {
                Ok(ack) => {
                    for id in &ack.abandon {
                        if self.exec.registry().terminate(id) {
                            self.journal("task.abandon", serde_json::json!({"assignment_id": id}));
                        }
                    }
                    *self.node_state.lock().unwrap_or_else(|p| p.into_inner()) = Some(ack.state);
                    match ack.state {
                        NodeState::Byzantine | NodeState::Revoked => {
                            self.set_consent(Consent::Ended(format!(
                                "coordinator lists this node as {}",
                                ack.state.as_str()
                            )))
                        }
                        NodeState::Offline | NodeState::Active => {}
                    }
                }
                Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
            }
        }
    }

    async fn upload_loop(self: Arc<Self>) {
        let mut attempt = 0u32;
        loop {
            let mut failed = false;
            for (path, report) in self.outbox.pending() {
                let sent: Result<serde_json::Value, _> =
                    self.coord.signed_post("/v1/work/results", &report).await;
                match sent {
                    Ok(_) => {
                        self.outbox.remove(&path);
                        self.journal(
                            "result.uploaded",
                            serde_json::json!({"assignment_id": report.assignment_id, "task_id": report.task_id}),
                        );
                    }
                    Err(e) if Coordinator::is_refusal(&e) => {
                        // A considered refusal will not change on retry.
                        self.outbox.remove(&path);
                        self.journal(
                            "result.refused",
                            serde_json::json!({"assignment_id": report.assignment_id, "error": e.to_string()}),
                        );
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "result upload failed; kept in the outbox");
                        failed = true;
                        break;
                    }
                }
            }
            if failed {
                tokio::time::sleep(backoff(attempt)).await;
                attempt += 1;
            } else {
                attempt = 0;
                tokio::select! {
                    _ = self.upload_wake.notified() => {}
                    _ = tokio::time::sleep(Duration::from_secs(30)) => {}
                }
            }
        }
    }

    /// Waits until work may run: consent active and the machine idle.
    async fn ready(&self) {
        let mut consent = self.consent.subscribe();
        let mut activity = self.activity.clone();
        loop {
            if *consent.borrow_and_update() == Consent::Active
                && activity.borrow_and_update().is_idle()
            {
                return;
            }
            tokio::select! {
                _ = consent.changed() => {}
                _ = activity.changed() => {}
            }
        }
    }

    /// Whether work may run now (consent active and the machine idle).
    fn is_ready(&self) -> bool {
        *self.consent.borrow() == Consent::Active && self.activity.borrow().is_idle()
    }

    async fn work_loop(self: Arc<Self>) {
        let mut attempt = 0u32;
        loop {
            // Wait for work to be allowed before taking a slot, so an
            // update waiting for every slot (`slots`) is not held up by a
            // paused or busy machine.
            self.ready().await;
            let first = self
                .slots
                .clone()
                .acquire_owned()
                .await
                .expect("the semaphore is never closed");
            if !self.is_ready() {
                // Consent or the machine changed while waiting for a slot.
                continue;
            }
            let mut permits = vec![first];
            while let Ok(p) = self.slots.clone().try_acquire_owned() {
                permits.push(p);
            }
            let leased: Result<LeaseResponse, _> = self
                .coord
                .signed_post(
                    "/v1/work/lease",
                    &LeaseRequest {
                        max_tasks: permits.len() as u32,
                        task_types: Vec::new(),
                    },
                )
                .await;
            match leased {
                Ok(resp) => {
                    attempt = 0;
                    let none = resp.assignments.is_empty();
                    for a in resp.assignments {
                        let Some(permit) = permits.pop() else { break };
                        let me = self.clone();
                        tokio::spawn(async move {
                            me.run_assignment(a).await;
                            drop(permit);
                        });
                    }
                    drop(permits);
                    if none {
                        let mut consent = self.consent.subscribe();
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_secs(resp.retry_after_seconds.clamp(1, 60))) => {}
                            _ = consent.changed() => {}
                        }
                    }
                }
                Err(e) => {
                    drop(permits);
                    tracing::warn!(error = %e, "lease request failed");
                    tokio::time::sleep(backoff(attempt)).await;
                    attempt += 1;
                }
            }
        }
    }

    /// Everything the agent checks before running an assignment: the module's
    /// hash, the operator's signature and key, the task id, and that the
    /// token's scope covers the task (the coordinator checked too; consent
    /// is enforced on both sides).
    async fn prepare(&self, a: &Assignment) -> Result<Job, String> {
        let st = &a.statement;
        if !self.opts.allowed_operators.is_empty()
            && !self.opts.allowed_operators.contains(&a.operator_public_key)
        {
            return Err(format!(
                "operator key {} is not trusted here",
                a.operator_public_key
            ));
        }
        let operator = b64::public_key(&a.operator_public_key)
            .map_err(|e| format!("operator key is malformed: {e}"))?;
        signing::verify_task(&operator, st, &a.operator_signature)
            .map_err(|e| format!("operator signature refused: {e}"))?;
        if signing::task_id(st) != a.task_id {
            return Err("task id does not match the signed statement".into());
        }
        if a.module.sha256 != st.module_sha256 {
            return Err("module reference differs from the signed statement".into());
        }
        let perms = self.token().payload.permissions;
        if !perms.tasks.allowlist.contains(&st.task_type) {
            return Err(format!(
                "task type {} is not in the consent token's allowlist",
                st.task_type
            ));
        }
        if st.limits.wall_seconds > u64::from(perms.tasks.max_duration_hours) * 3600 {
            return Err("task is longer than the consent token allows".into());
        }
        let module = self.module(&st.module_sha256, &a.module.url).await?;
        let decode = |what: &str, text: &str| {
            b64::decode(text).map_err(|e| format!("{what} is not base64url: {e}"))
        };
        let stdin = decode("stdin", &st.inputs.stdin)?;
        let mut files = Vec::new();
        for (name, text) in &st.inputs.files {
            files.push((name.clone(), decode(&format!("input file {name}"), text)?));
        }
        let requested = Requested {
            cpu_percent: st.limits.cpu_percent,
            memory_mb: st.limits.memory_mb,
            storage_mb: st.requirements.storage_gb.saturating_mul(1024).max(16),
            wall_seconds: st.limits.wall_seconds,
            fuel: st.limits.fuel,
        };
        Ok(Job {
            id: a.assignment_id.clone(),
            module,
            args: st.inputs.args.clone(),
            stdin,
            input_files: files,
            random_seed: signing::task_random_seed(st.random_seed),
            limits: effective_limits(&perms, &requested, self.opts.cores),
        })
    }

    /// The module bytes, from the local cache or the coordinator, checked
    /// against their SHA-256 either way.
    async fn module(&self, sha: &str, url: &str) -> Result<Vec<u8>, String> {
        if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("module hash is not 64 hex digits".into());
        }
        let dir = self.home.dir().join("modules");
        let cached = dir.join(format!("{sha}.wasm"));
        if let Ok(bytes) = std::fs::read(&cached)
            && hex::encode(signing::sha256(&bytes)) == sha
        {
            return Ok(bytes);
        }
        if !url.starts_with('/') {
            return Err("module url must be a path on the coordinator".into());
        }
        let bytes = self
            .coord
            .get_bytes(url, MAX_MODULE_BYTES)
            .await
            .map_err(|e| format!("module download failed: {e}"))?;
        if hex::encode(signing::sha256(&bytes)) != sha {
            return Err("downloaded module does not match its sha256".into());
        }
        let _ = std::fs::create_dir_all(&dir);
        let _ = std::fs::write(&cached, &bytes);
        Ok(bytes)
    }

    async fn run_assignment(self: Arc<Self>, a: Assignment) {
        let job = match self.prepare(&a).await {
            Ok(job) => job,
            Err(why) => {
                self.journal(
                    "task.refused",
                    serde_json::json!({"assignment_id": a.assignment_id, "task_id": a.task_id, "reason": why}),
                );
                self.file_report(&a, failed_report(&a, &why, ResourceUsage::default()));
                return;
            }
        };
        self.journal(
            "task.start",
            serde_json::json!({
                "assignment_id": a.assignment_id,
                "task_id": a.task_id,
                "task_type": a.statement.task_type,
                "module_sha256": a.statement.module_sha256,
                "limits": {
                    "cpu_percent": job.limits.cpu_percent,
                    "memory_bytes": job.limits.memory_bytes,
                    "storage_bytes": job.limits.storage_bytes,
                    "wall_seconds": job.limits.wall_time.as_secs(),
                    "fuel": job.limits.fuel,
                },
            }),
        );
        let outcome = self.exec.run(job).await;
        let (report, label, usage) = match outcome {
            Ok(TaskOutcome::Terminated { usage }) => {
                // Stopped by revocation, expiry, shutdown or an abandon: the
                // work is void and nothing is reported.
                self.journal(
                    "task.terminated",
                    serde_json::json!({"assignment_id": a.assignment_id, "usage": usage_json(&usage)}),
                );
                self.count(false, &usage);
                return;
            }
            Ok(TaskOutcome::Completed {
                exit_code,
                mut digest,
                mut stdout,
                outputs,
                usage,
            }) => {
                if self.opts.byzantine_corrupt_results {
                    // Deliberate misbehaviour for demonstrations: the lie is
                    // signed like an honest answer, so only the quorum (or a
                    // known answer) can catch it.
                    corrupt(&mut stdout);
                    digest = askee_sandbox::digest::result_digest(exit_code, &stdout, &outputs);
                    tracing::warn!(task = %a.task_id, "BYZANTINE MODE: reporting a corrupted result");
                    self.journal(
                        "byzantine.corrupted",
                        serde_json::json!({"assignment_id": a.assignment_id, "task_id": a.task_id}),
                    );
                }
                let mut report = ResultReport {
                    assignment_id: a.assignment_id.clone(),
                    task_id: a.task_id.clone(),
                    status: ReportStatus::Completed,
                    result_digest: hex::encode(digest),
                    exit_code,
                    stdout: b64::encode(&stdout),
                    outputs: outputs
                        .iter()
                        .map(|f| (f.path.clone(), b64::encode(&f.contents)))
                        .collect(),
                    failure: String::new(),
                    usage: wire_usage(&usage),
                    signature: String::new(),
                };
                report.signature = self.sign(&report);
                (report, "completed".to_owned(), usage)
            }
            Ok(other) => {
                let (why, usage) = describe(&other);
                (failed_report(&a, &why, wire_usage(&usage)), why, usage)
            }
            Err(e) => {
                let why = e.to_string();
                (
                    failed_report(&a, &why, ResourceUsage::default()),
                    why,
                    Usage::default(),
                )
            }
        };
        let completed = report.status == ReportStatus::Completed;
        self.count(completed, &usage);
        self.journal(
            "task.finish",
            serde_json::json!({
                "assignment_id": a.assignment_id,
                "task_id": a.task_id,
                "outcome": label,
                "result_digest": report.result_digest,
                "usage": usage_json(&usage),
            }),
        );
        let mut report = report;
        if report.signature.is_empty() {
            report.signature = self.sign(&report);
        }
        self.file_report(&a, report);
    }

    fn count(&self, completed: bool, usage: &Usage) {
        let mut c = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        if completed {
            c.completed += 1;
        } else {
            c.failed += 1;
        }
        c.cpu_ms_total += usage.cpu_time.map_or(0, |d| d.as_millis() as u64);
    }

    fn sign(&self, r: &ResultReport) -> String {
        signing::sign_result(
            &self.key,
            &ResultStatement {
                assignment_id: &r.assignment_id,
                task_id: &r.task_id,
                node_id: &self.coord.node_id(),
                status: r.status,
                result_digest: &r.result_digest,
            },
        )
    }

    fn file_report(&self, a: &Assignment, mut report: ResultReport) {
        if report.signature.is_empty() {
            report.signature = self.sign(&report);
        }
        if let Err(e) = self.outbox.put(&report) {
            tracing::error!(error = %e, assignment = %a.assignment_id, "cannot store the result");
            return;
        }
        self.upload_wake.notify_one();
    }

    fn write_status(&self) {
        let c = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        let status = RunStatus {
            pid: std::process::id(),
            updated_at: now(),
            consent: match &*self.consent.borrow() {
                Consent::Active => "active".into(),
                Consent::Paused(w) => format!("paused: {w}"),
                Consent::Ended(w) => format!("ended: {w}"),
            },
            activity: match &*self.activity.borrow() {
                Activity::Idle => "idle".into(),
                Activity::Busy { reason } => format!("busy: {reason}"),
            },
            node_state: self
                .node_state
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .map(|s| s.as_str().to_owned()),
            running: self.exec.registry().running(),
            completed: c.completed,
            failed: c.failed,
            cpu_ms_total: c.cpu_ms_total,
            pending_uploads: self.outbox.len(),
        };
        drop(c);
        let path = self.home.dir().join("run-status.json");
        let tmp = path.with_extension("tmp");
        if std::fs::write(
            &tmp,
            serde_json::to_vec_pretty(&status).expect("status serialises"),
        )
        .and_then(|()| std::fs::rename(&tmp, &path))
        .is_err()
        {
            tracing::warn!(path = %path.display(), "cannot write the run status");
        }
    }

    async fn status_loop(self: Arc<Self>) {
        let mut consent = self.consent.subscribe();
        loop {
            self.write_status();
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                _ = consent.changed() => {}
            }
        }
    }
}

/// Flips the last byte of a result (or makes up one for an empty result).
fn corrupt(stdout: &mut Vec<u8>) {
    match stdout.last_mut() {
        Some(b) => *b ^= 0x01,
        None => stdout.push(b'?'),
    }
}

fn failed_report(a: &Assignment, why: &str, usage: ResourceUsage) -> ResultReport {
    ResultReport {
        assignment_id: a.assignment_id.clone(),
        task_id: a.task_id.clone(),
        status: ReportStatus::Failed,
        result_digest: String::new(),
        exit_code: 0,
        stdout: String::new(),
        outputs: Default::default(),
        failure: why.chars().take(500).collect(),
        usage,
        signature: String::new(),
    }
}

fn describe(outcome: &TaskOutcome) -> (String, Usage) {
    match outcome {
        TaskOutcome::Killed { reason, usage } => {
            (format!("killed on the {reason:?} limit"), usage.clone())
        }
        TaskOutcome::Denied { operation, usage } => {
            (format!("denied by the sandbox: {operation}"), usage.clone())
        }
        TaskOutcome::OutputTruncated { usage, .. } => {
            ("output over the limit".into(), usage.clone())
        }
        TaskOutcome::Trapped { message, usage } => (format!("trapped: {message}"), usage.clone()),
        TaskOutcome::Signaled { signal, usage } => {
            (format!("died on signal {signal}"), usage.clone())
        }
        TaskOutcome::Terminated { usage } => ("terminated".into(), usage.clone()),
        TaskOutcome::Completed { usage, .. } => ("completed".into(), usage.clone()),
    }
}

fn wire_usage(u: &Usage) -> ResourceUsage {
    ResourceUsage {
        wall_ms: u.wall_time.as_millis() as u64,
        cpu_ms: u.cpu_time.map_or(0, |d| d.as_millis() as u64),
        peak_memory_bytes: u.peak_memory_bytes.unwrap_or(0),
        fuel_consumed: u.fuel_consumed.unwrap_or(0),
    }
}

fn usage_json(u: &Usage) -> serde_json::Value {
    serde_json::to_value(wire_usage(u)).expect("usage serialises")
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

    #[test]
    fn outbox_keeps_reports_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let report = ResultReport {
            assignment_id: "a/../1".into(),
            task_id: "t".into(),
            status: ReportStatus::Completed,
            result_digest: "00".repeat(32),
            exit_code: 0,
            stdout: String::new(),
            outputs: Default::default(),
            failure: String::new(),
            usage: ResourceUsage::default(),
            signature: "sig".into(),
        };
        let outbox = Outbox::open(dir.path().join("outbox")).unwrap();
        outbox.put(&report).unwrap();
        // The same assignment is one file however often it is filed.
        outbox.put(&report).unwrap();
        let reopened = Outbox::open(dir.path().join("outbox")).unwrap();
        let pending = reopened.pending();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].1, report);
        reopened.remove(&pending[0].0);
        assert!(reopened.is_empty());
    }
}
