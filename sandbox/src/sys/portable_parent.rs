// Shared by the Windows and macOS layers: a worker process started with OS-specific
// confinement, waited for with a wall-clock deadline. Included with `include!`.

/// Shared control of a running task.
#[derive(Debug)]
pub struct Control {
    child: std::sync::Mutex<Option<WorkerProcess>>,
    terminated: std::sync::atomic::AtomicBool,
}

impl Control {
    /// Freezing needs a cgroup freezer; not offered on this OS.
    pub fn freeze(&self) -> Result<(), SandboxError> {
        Err(SandboxError::Unsupported { what: "freeze on this OS".into() })
    }
    /// See [`Control::freeze`].
    pub fn thaw(&self) -> Result<(), SandboxError> {
        Err(SandboxError::Unsupported { what: "thaw on this OS".into() })
    }
    /// Never frozen on this OS.
    pub fn is_frozen(&self) -> Result<bool, SandboxError> {
        Ok(false)
    }
    /// Kill the worker (and with it, on Windows, the whole job).
    pub fn terminate(&self) {
        self.terminated.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Ok(mut c) = self.child.lock()
            && let Some(c) = c.as_mut()
        {
            let _ = c.kill();
        }
    }
    /// The worker's pid.
    pub fn pids(&self) -> Vec<i32> {
        self.child
            .lock()
            .ok()
            .and_then(|c| c.as_ref().map(|c| c.id() as i32))
            .into_iter()
            .collect()
    }
}
