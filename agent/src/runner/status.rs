//! What the daemon publishes for `askee-agent status` (`run-status.json`).

use super::*;

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

/// The run status's file name in the home.
pub const RUN_STATUS_FILE: &str = "run-status.json";

impl RunStatus {
    /// What the daemon last published, if it ever did (a missing or
    /// unreadable file reads as none).
    pub fn read(home: &Path) -> Option<Self> {
        let bytes = std::fs::read(home.join(RUN_STATUS_FILE)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}

impl Runner {
    pub(super) fn write_status(&self) {
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
        let path = self.home.dir().join(RUN_STATUS_FILE);
        let bytes = serde_json::to_vec_pretty(&status).expect("status serialises");
        if crate::private_file::write(&path, &bytes).is_err() {
            tracing::warn!(path = %path.display(), "cannot write the run status");
        }
    }

    pub(super) async fn status_loop(self: Arc<Self>) {
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
