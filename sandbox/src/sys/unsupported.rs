//! Operating systems without a sandbox layer: every operation reports it.

use std::path::Path;
use std::sync::Arc;

use crate::SandboxError;
use crate::probe::HostCapabilities;
use crate::proto::{AppliedConfinement, WorkerMode};
use crate::types::{TaskOutcome, TaskSpec};

include!("portable_parent.rs");

/// Not available.
pub fn kill_process(_pid: i32) {}

/// Not measured.
pub fn available_bytes(_path: &Path) -> Option<u64> {
    None
}

/// Probe the host.
pub fn probe() -> HostCapabilities {
    HostCapabilities {
        os: std::env::consts::OS.into(),
        ..Default::default()
    }
}

/// Never constructed.
pub struct Running {
    control: Arc<Control>,
}

/// Workers are not started ahead of their tasks on this platform: every task
/// starts its own.
pub fn keep_spare(_worker: &Path, _on: bool) {}

/// No spares on this platform.
pub fn spares_ready(_worker: &Path) -> usize {
    0
}

/// Always unsupported.
pub fn spawn(_w: &Path, _d: &Path, _m: WorkerMode, _s: &TaskSpec) -> Result<Running, SandboxError> {
    Err(SandboxError::Unsupported {
        what: std::env::consts::OS.into(),
    })
}

impl Running {
    /// Shared control.
    pub fn control(&self) -> Arc<Control> {
        self.control.clone()
    }
    /// Always unsupported.
    pub fn wait(self) -> Result<(TaskOutcome, AppliedConfinement), SandboxError> {
        Err(SandboxError::Unsupported {
            what: std::env::consts::OS.into(),
        })
    }
}

/// Always fails.
pub fn worker_main() -> i32 {
    2
}
