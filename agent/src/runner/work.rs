//! Taking, running and reporting work: leases, module downloads, the
//! sandboxed run, signed results and their upload.

use super::*;
use askee_sandbox::OutputFile;

impl Runner {
    pub(super) async fn upload_loop(self: Arc<Self>) {
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
    pub(super) async fn ready(&self) {
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
    pub(super) fn is_ready(&self) -> bool {
        *self.consent.borrow() == Consent::Active && self.activity.borrow().is_idle()
    }

    pub(super) async fn work_loop(self: Arc<Self>) {
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
    pub(super) async fn prepare(&self, a: &Assignment) -> Result<Job, String> {
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
    pub(super) async fn module(&self, sha: &str, url: &str) -> Result<Vec<u8>, String> {
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

    pub(super) async fn run_assignment(self: Arc<Self>, a: Assignment) {
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
                digest,
                stdout,
                outputs,
                usage,
            }) => {
                let report = self.completed_report(&a, exit_code, digest, stdout, &outputs, &usage);
                (report, "completed".to_owned(), usage)
            }
            Ok(other) => {
                let (why, usage) = outcome_words(&other);
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

    /// The signed report of a completed task (corrupted first in the
    /// demo-only Byzantine mode).
    fn completed_report(
        &self,
        a: &Assignment,
        exit_code: i32,
        mut digest: [u8; 32],
        mut stdout: Vec<u8>,
        outputs: &[OutputFile],
        usage: &Usage,
    ) -> ResultReport {
        if self.opts.byzantine_corrupt_results {
            // Deliberate misbehaviour for demonstrations: the lie is
            // signed like an honest answer, so only the quorum (or a
            // known answer) can catch it.
            corrupt(&mut stdout);
            digest = askee_sandbox::digest::result_digest(exit_code, &stdout, outputs);
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
            usage: wire_usage(usage),
            signature: String::new(),
        };
        report.signature = self.sign(&report);
        report
    }

    pub(super) fn count(&self, completed: bool, usage: &Usage) {
        let mut c = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        if completed {
            c.completed += 1;
        } else {
            c.failed += 1;
        }
        c.cpu_ms_total += usage.cpu_time.map_or(0, |d| d.as_millis() as u64);
    }

    pub(super) fn sign(&self, r: &ResultReport) -> String {
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

    pub(super) fn file_report(&self, a: &Assignment, mut report: ResultReport) {
        if report.signature.is_empty() {
            report.signature = self.sign(&report);
        }
        if let Err(e) = self.outbox.put(&report) {
            tracing::error!(error = %e, assignment = %a.assignment_id, "cannot store the result");
            return;
        }
        self.upload_wake.notify_one();
    }
}

/// Flips the last byte of a result (or makes up one for an empty result).
pub(super) fn corrupt(stdout: &mut Vec<u8>) {
    match stdout.last_mut() {
        Some(b) => *b ^= 0x01,
        None => stdout.push(b'?'),
    }
}

pub(super) fn failed_report(a: &Assignment, why: &str, usage: ResourceUsage) -> ResultReport {
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

/// Why a task did not complete, in words for the report and the journal,
/// and what it used.
pub(super) fn outcome_words(outcome: &TaskOutcome) -> (String, Usage) {
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

pub(super) fn wire_usage(u: &Usage) -> ResourceUsage {
    ResourceUsage {
        wall_ms: u.wall_time.as_millis() as u64,
        cpu_ms: u.cpu_time.map_or(0, |d| d.as_millis() as u64),
        peak_memory_bytes: u.peak_memory_bytes.unwrap_or(0),
        fuel_consumed: u.fuel_consumed.unwrap_or(0),
    }
}

pub(super) fn usage_json(u: &Usage) -> serde_json::Value {
    serde_json::to_value(wire_usage(u)).expect("usage serialises")
}
