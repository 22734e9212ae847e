//! Running assigned work in the sandbox: the tighter of the token's and the
//! task's limits, inputs written to a private per-job directory exposed
//! read-only, and a registry of running tasks so that a revocation, an
//! expiry or the user's return reaches every one of them at once.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use askee_core::wire::v1::Permissions;
use askee_sandbox::{Limits, Sandbox, SandboxError, TaskControl, TaskOutcome, TaskSpec};

use crate::yielder::TaskSet;

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("input file name {name:?} is not allowed: {why}")]
    InputName { name: String, why: &'static str },
    #[error("cannot prepare the directory of job {job}: {source}")]
    Prepare {
        job: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the sandbox refused job {job}: {source}")]
    Sandbox {
        job: String,
        #[source]
        source: SandboxError,
    },
    #[error("job {job} was stopped before it started: {why}")]
    Stopped { job: String, why: String },
}

/// What a task asks for; each bound is tightened by the token's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Requested {
    /// Percent of one core.
    pub cpu_percent: u32,
    pub memory_mb: u64,
    pub storage_mb: u64,
    pub wall_seconds: u64,
    pub fuel: u64,
}

/// Most input files a job may carry, and the longest name.
const MAX_INPUT_FILES: usize = 64;
const MAX_INPUT_NAME: usize = 128;

/// The limits a job runs under: for each resource the smaller of what the
/// task asks and what the volunteer granted. The token's CPU share is of the
/// whole machine (`cores` logical processors), the sandbox's of one core.
pub fn effective_limits(granted: &Permissions, requested: &Requested, cores: u32) -> Limits {
    let r = &granted.resources;
    let machine_share = r.cpu_percent_max.min(100) * cores.max(1);
    let wall_cap = u64::from(granted.tasks.max_duration_hours) * 3600;
    let wall = Duration::from_secs(requested.wall_seconds.min(wall_cap).max(1));
    Limits {
        cpu_percent: requested.cpu_percent.min(machine_share).max(1),
        memory_bytes: requested.memory_mb.min(r.ram_mb_max).max(1) << 20,
        storage_bytes: requested
            .storage_mb
            .min(r.storage_gb_max.saturating_mul(1024))
            .max(1)
            << 20,
        pids: 16,
        wall_time: wall,
        cpu_time: wall,
        fuel: requested.fuel,
        stdout_bytes: 1 << 20,
    }
}

/// One unit of work, as the agent runs it.
#[derive(Debug, Clone)]
pub struct Job {
    /// The assignment's id: one replica of one task on this node.
    pub id: String,
    pub module: Vec<u8>,
    pub args: Vec<String>,
    pub stdin: Vec<u8>,
    pub input_files: Vec<(String, Vec<u8>)>,
    pub random_seed: [u8; 32],
    pub limits: Limits,
}

/// The tasks running now, by job id: the yielder's [`TaskSet`] plus a gate.
/// A revocation closes the gate and terminates every task; the yielder
/// freezes and thaws the same set.
#[derive(Clone, Default)]
pub struct Registry {
    tasks: TaskSet,
    /// Set by `stop_all`: no job may start until `reopen`.
    closed: Arc<Mutex<Option<String>>>,
}

impl Registry {
    pub fn new(tasks: TaskSet) -> Self {
        Self {
            tasks,
            closed: Arc::default(),
        }
    }

    fn gate(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.closed.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The set the yielder and the idle monitor's CPU source watch.
    pub fn tasks(&self) -> &TaskSet {
        &self.tasks
    }

    /// Terminates every running task and refuses new ones until [`Registry::reopen`]:
    /// what a revocation or an expiry does. Returns how many were running.
    pub fn stop_all(&self, why: &str) -> usize {
        // Close first, under the gate, so a job starting concurrently is
        // either in the set (and killed here) or refused by `insert`.
        let mut gate = self.gate();
        *gate = Some(why.to_owned());
        let controls = self.tasks.controls();
        for (_, control) in &controls {
            control.terminate();
        }
        controls.len()
    }

    /// Terminates one running task; whether it was running.
    pub fn terminate(&self, id: &str) -> bool {
        match self.tasks.controls().into_iter().find(|(k, _)| k == id) {
            Some((_, control)) => {
                control.terminate();
                true
            }
            None => false,
        }
    }

    pub fn reopen(&self) {
        *self.gate() = None;
    }

    pub fn is_closed(&self) -> bool {
        self.gate().is_some()
    }

    pub fn running(&self) -> Vec<String> {
        self.tasks.controls().into_iter().map(|(k, _)| k).collect()
    }

    fn insert(&self, id: &str, control: TaskControl) -> Result<(), String> {
        let gate = self.gate();
        if let Some(why) = &*gate {
            control.terminate();
            return Err(why.clone());
        }
        self.tasks.insert(id, control);
        Ok(())
    }

    fn remove(&self, id: &str) {
        self.tasks.remove(id);
    }
}

/// Runs jobs in the sandbox, one private directory each under `scratch`.
pub struct Executor {
    sandbox: Arc<Sandbox>,
    scratch: PathBuf,
    registry: Registry,
}

fn check_input_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("empty");
    }
    if name.len() > MAX_INPUT_NAME {
        return Err("longer than 128 bytes");
    }
    if name == "." || name == ".." {
        return Err("a relative directory");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err("only letters, digits, '.', '_' and '-' are allowed");
    }
    Ok(())
}

impl Executor {
    pub fn new(sandbox: Sandbox, scratch: PathBuf, registry: Registry) -> Self {
        Self {
            sandbox: Arc::new(sandbox),
            scratch,
            registry,
        }
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    fn job_dir(&self, id: &str) -> PathBuf {
        // Job ids come from the coordinator: hash them into a safe name.
        let h = askee_core::signing::sha256(id.as_bytes());
        self.scratch.join(hex::encode(&h[..12]))
    }

    /// Removes what earlier runs left behind (after a crash or a revocation).
    pub fn clean_scratch(&self) -> std::io::Result<()> {
        match std::fs::remove_dir_all(&self.scratch) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Runs `job` to its end in the sandbox. The job's directory is removed
    /// afterwards whatever the outcome.
    pub async fn run(&self, job: Job) -> Result<TaskOutcome, ExecError> {
        if job.input_files.len() > MAX_INPUT_FILES {
            return Err(ExecError::InputName {
                name: format!("({} files)", job.input_files.len()),
                why: "more than 64 input files",
            });
        }
        for (name, _) in &job.input_files {
            check_input_name(name).map_err(|why| ExecError::InputName {
                name: name.clone(),
                why,
            })?;
        }
        let dir = self.job_dir(&job.id);
        let result = self.run_in(&dir, job).await;
        let _ = std::fs::remove_dir_all(&dir);
        result
    }

    async fn run_in(&self, dir: &Path, job: Job) -> Result<TaskOutcome, ExecError> {
        let prepare = |source| ExecError::Prepare {
            job: job.id.clone(),
            source,
        };
        let input = dir.join("input");
        std::fs::create_dir_all(&input).map_err(prepare)?;
        for (name, bytes) in &job.input_files {
            std::fs::write(input.join(name), bytes).map_err(prepare)?;
        }
        let spec = TaskSpec {
            program: askee_sandbox::Program::Wasm(job.module),
            args: job.args,
            stdin: job.stdin,
            input_dir: Some(input),
            random_seed: job.random_seed,
            limits: job.limits,
        };
        let sandbox = self.sandbox.clone();
        let id = job.id.clone();
        let running = tokio::task::spawn_blocking(move || sandbox.spawn(&spec))
            .await
            .expect("sandbox spawn does not panic")
            .map_err(|source| ExecError::Sandbox {
                job: id.clone(),
                source,
            })?;
        if let Err(why) = self.registry.insert(&id, running.control()) {
            // Closed between lease and start: the task was terminated at once.
            let _ = tokio::task::spawn_blocking(move || running.wait()).await;
            return Err(ExecError::Stopped { job: id, why });
        }
        let waited = tokio::task::spawn_blocking(move || running.wait())
            .await
            .expect("sandbox wait does not panic");
        self.registry.remove(&id);
        waited
            .map(|(outcome, _)| outcome)
            .map_err(|source| ExecError::Sandbox { job: id, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use askee_core::wire::v1::{Monitoring, Resources, TaskPermissions};

    fn perms(cpu: u32, ram: u64, storage_gb: u64, hours: u32) -> Permissions {
        Permissions {
            resources: Resources {
                cpu_percent_max: cpu,
                ram_mb_max: ram,
                storage_gb_max: storage_gb,
                bandwidth_mbps_max: 1,
            },
            tasks: TaskPermissions {
                allowlist: vec!["scientific-compute".into()],
                min_reputation: 0.5,
                max_duration_hours: hours,
            },
            monitoring: Monitoring {
                user_activity_yield: true,
                resource_monitoring: true,
                audit_logging: true,
            },
        }
    }

    #[test]
    fn limits_take_the_tighter_side_of_each_resource() {
        let asked = Requested {
            cpu_percent: 100,
            memory_mb: 512,
            storage_mb: 64,
            wall_seconds: 10 * 3600,
            fuel: 1_000,
        };
        // 25% of a 2-core machine is half of one core; memory and duration
        // come from the token, storage and fuel from the task.
        let l = effective_limits(&perms(25, 256, 1, 2), &asked, 2);
        assert_eq!(l.cpu_percent, 50);
        assert_eq!(l.memory_bytes, 256 << 20);
        assert_eq!(l.storage_bytes, 64 << 20);
        assert_eq!(l.wall_time, Duration::from_secs(2 * 3600));
        assert_eq!(l.fuel, 1_000);
        // A modest task stays as asked.
        let small = Requested {
            cpu_percent: 30,
            memory_mb: 64,
            storage_mb: 8,
            wall_seconds: 60,
            fuel: 5,
        };
        let l = effective_limits(&perms(100, 4096, 10, 24), &small, 8);
        assert_eq!(
            (l.cpu_percent, l.memory_bytes, l.storage_bytes, l.wall_time),
            (30, 64 << 20, 8 << 20, Duration::from_secs(60))
        );
    }

    #[test]
    fn input_names_cannot_escape_the_input_directory() {
        for bad in [
            "",
            ".",
            "..",
            "../x",
            "a/b",
            "/etc",
            "a\0b",
            &"x".repeat(129),
        ] {
            assert!(check_input_name(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["data.txt", "corpus-1.bin", "A_b.c"] {
            assert!(check_input_name(good).is_ok(), "{good:?} refused");
        }
    }
}
