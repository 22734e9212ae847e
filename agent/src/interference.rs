//! The seed's NonInterferenceValidator: five measurements of what a person
//! using this computer would feel, first alone and then while the agent runs
//! CPU-, memory- and cache-heavy tasks in the real sandbox at the given
//! limits, and the degradation of each against a bound (default 5%).
//!
//! 1. response time: a foreground workload's throughput (SHA-256 of 4 KiB
//!    blocks per second) and a latency probe's p99 (one 64 KiB hash);
//! 2. application launch: median time to spawn and reap `/bin/true`;
//! 3. input responsiveness: p99 overshoot of a 1 ms timer sleep, a proxy for
//!    how late an input handler would wake (no real input is injected);
//! 4. network: loopback TCP transfer rate;
//! 5. disk: fsync'ed 4 KiB writes per second in the scratch directory.
//!
//! Each probe runs in its own process (`askee-agent probe <kind>`), as the
//! volunteer's programs do: the idle monitor leaves the agent's own process
//! out of the machine's CPU use, so a probe inside the validator would be
//! invisible to it.
//!
//! Three columns per probe, measured together, probe by probe:
//! - `alone`: no task runs; the mean of one run before the two below and one
//!   after them (the load tasks are started for each probe and stopped
//!   again), so a machine that drifts over the minutes of a run (a VM
//!   throttled under sustained load: the same loopback probe alone measured
//!   5.2 → 3.7 GiB/s over six consecutive runs) does not count its drift as
//!   the tasks' doing;
//! - `with_tasks` ("held running"): the three tasks run beside the probe and
//!   nothing watches the machine, so they are never frozen (the worst case);
//! - `as_deployed`: the same tasks, watched by the agent's real idle monitor
//!   (host sensors, the configured thresholds and sampling interval, the
//!   tasks' CPU left out as in the daemon) and yielder. Before each probe the
//!   tasks are thawed and seen to run, and a fresh monitor starts as one that
//!   has watched the machine stay idle ([`IdleMonitor::spawn_idle_for`]): the
//!   volunteer comes back to a machine whose tasks run. Whether and when the
//!   yielder froze the tasks is recorded. This is what a volunteer feels, and
//!   the column the verdict is judged on.
//!
//! These are benchmarks: a run's verdict depends on the machine and what
//! else it does, so tests check the report's shape, never its verdict.

use std::fmt::Write as _;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use askee_sandbox::{Limits, Sandbox, SandboxConfig, SandboxError, TaskControl, TaskSpec};
use serde::Serialize;

use crate::config::{Config, ConfigError};
use crate::idle::{IdleMonitor, Sensors, SourceError};
use crate::journal::{self, Journal, JournalError};
use crate::yielder::{self, TaskSet};

#[derive(Debug, thiserror::Error)]
pub enum InterferenceError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot {op} at {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot {op} on loopback: {source}")]
    Net {
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the {task} load task in the sandbox: {source}")]
    Task {
        task: &'static str,
        #[source]
        source: SandboxError,
    },
    #[error("the {task} load task did not start within 10 s")]
    TaskStart { task: &'static str },
    #[error("cannot run the {probe} probe with {program}: {detail}")]
    Probe {
        probe: &'static str,
        program: PathBuf,
        detail: String,
    },
    #[error("cannot build the idle sensors: {source}")]
    Sensors {
        #[source]
        source: SourceError,
    },
    #[error("cannot use the validation journal: {source}")]
    Journal {
        #[source]
        source: JournalError,
    },
    #[error("cannot thaw task {task}: {source}")]
    Thaw {
        task: String,
        #[source]
        source: SandboxError,
    },
    #[error("task {task} did not run within 10 s of being thawed")]
    NotRunning { task: String },
}

/// Options of `askee-agent validate-non-interference`.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Seconds each measurement runs (each probe runs four times: alone,
    /// beside tasks held running, beside tasks under the idle monitor, alone).
    #[arg(long, default_value_t = 0.4)]
    pub seconds: f64,
    /// CPU limit of each load task, percent of one core.
    #[arg(long, default_value_t = 100)]
    pub cpu_percent: u32,
    /// Memory limit of each load task in MiB (the memory task touches half of it).
    #[arg(long, default_value_t = 256)]
    pub memory_mb: u64,
    /// Largest acceptable degradation, in percent (judged as deployed).
    #[arg(long, default_value_t = 5.0)]
    pub bound_percent: f64,
    /// The sandbox worker binary (default: `askee-agent-worker` beside this program).
    #[arg(long)]
    pub worker: Option<PathBuf>,
    /// The program whose `probe` command runs each probe in its own process
    /// (default: this program).
    #[arg(long, hide = true)]
    pub probe_program: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            seconds: 0.4,
            cpu_percent: 100,
            memory_mb: 256,
            bound_percent: 5.0,
            worker: None,
            probe_program: None,
        }
    }
}

/// When the yielder first froze the tasks during a probe, as deployed.
#[derive(Debug, Clone, Serialize)]
pub struct Yielded {
    /// Milliseconds from the probe's start to the first `task.yield`
    /// (journalled just after the freeze, millisecond resolution).
    pub after_ms: f64,
    /// The idle monitor's reason, in plain words.
    pub reason: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Measurement {
    pub name: &'static str,
    pub unit: &'static str,
    pub higher_is_better: bool,
    /// The mean of `alone_runs`.
    pub alone: f64,
    /// Alone just before and just after the runs beside the tasks: the two
    /// bracket them, so a machine whose speed drifts over the run (a VM
    /// throttled under sustained load) does not count its drift as the tasks'.
    pub alone_runs: [f64; 2],
    /// Beside the tasks held running: no idle monitor, never frozen (the
    /// worst case, not judged).
    pub with_tasks: f64,
    /// Of `with_tasks` against `alone`; positive when the tasks made it worse.
    pub degradation_percent: f64,
    /// Whether `degradation_percent` is within the bound (not judged).
    pub with_tasks_within_bound: bool,
    /// Beside the tasks under the agent's idle monitor and yielder.
    pub as_deployed: f64,
    /// Of `as_deployed` against `alone`; positive when worse.
    pub deployed_degradation_percent: f64,
    /// Whether and when the yielder froze the tasks during the deployed
    /// probe; `None`: they ran through it.
    pub yielded: Option<Yielded>,
    /// The verdict: `deployed_degradation_percent` within the bound.
    pub passed: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub seconds_per_measurement: f64,
    pub cpu_percent: u32,
    pub memory_mb: u64,
    pub bound_percent: f64,
    pub load_tasks: Vec<&'static str>,
    /// The column the verdict is judged on: `as_deployed`.
    pub judged_on: &'static str,
    /// The idle monitor's sampling interval in the deployed column.
    pub sample_interval_ms: u64,
    /// How long the deployed column's monitor takes the machine to have
    /// been idle when each probe starts.
    pub idle_for_secs: u64,
    pub measurements: Vec<Measurement>,
}

impl Report {
    /// The verdict, judged on the deployed column.
    pub fn passed(&self) -> bool {
        self.measurements.iter().all(|m| m.passed)
    }

    pub fn words(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Beside {} tasks at {}% CPU and {} MiB each (bound {}%):",
            self.load_tasks.join(", "),
            self.cpu_percent,
            self.memory_mb,
            self.bound_percent
        );
        let _ = writeln!(
            out,
            "  judged as deployed: each probe starts with the tasks running and the agent's idle\n  \
             monitor (every {} ms, started as after {} s of idleness) and yielder watching; they\n  \
             freeze the tasks when the machine turns busy. Held running: the tasks run beside\n  \
             the probe with nothing watching (the worst case, shown, not judged).",
            self.sample_interval_ms, self.idle_for_secs
        );
        let _ = writeln!(
            out,
            "  {:<4} {:<26} {:>12} {:<8} {:>12} {:>7} {:>12} {:>7}  tasks frozen",
            "", "measurement", "alone", "unit", "held running", "change", "as deployed", "change"
        );
        for m in &self.measurements {
            let frozen = match &m.yielded {
                Some(y) => format!("after {:.0} ms: {}", y.after_ms, y.reason),
                None => "never".to_owned(),
            };
            let _ = writeln!(
                out,
                "  {:<4} {:<26} {:>12.2} {:<8} {:>12.2} {:>+6.1}% {:>12.2} {:>+6.1}%  {}",
                if m.passed { "ok" } else { "FAIL" },
                m.name,
                m.alone,
                m.unit,
                m.with_tasks,
                m.degradation_percent,
                m.as_deployed,
                m.deployed_degradation_percent,
                frozen
            );
        }
        let held_over = self
            .measurements
            .iter()
            .filter(|m| !m.with_tasks_within_bound)
            .count();
        let _ = writeln!(
            out,
            "{} Held running (worst case): {held_over} of {} past the bound.",
            if self.passed() {
                "As deployed, no measurement degraded past the bound."
            } else {
                "As deployed, some measurement degraded past the bound."
            },
            self.measurements.len()
        );
        out
    }
}

/// The probes, each runnable alone in its own process (`askee-agent probe`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProbeKind {
    Throughput,
    Latency,
    Launch,
    Timer,
    Tcp,
    Fsync,
}

impl ProbeKind {
    fn arg(self) -> &'static str {
        match self {
            ProbeKind::Throughput => "throughput",
            ProbeKind::Latency => "latency",
            ProbeKind::Launch => "launch",
            ProbeKind::Timer => "timer",
            ProbeKind::Tcp => "tcp",
            ProbeKind::Fsync => "fsync",
        }
    }
}

struct Probe {
    kind: ProbeKind,
    name: &'static str,
    unit: &'static str,
    higher_is_better: bool,
}

const PROBES: [Probe; 6] = [
    Probe {
        kind: ProbeKind::Throughput,
        name: "foreground throughput",
        unit: "blocks/s",
        higher_is_better: true,
    },
    Probe {
        kind: ProbeKind::Latency,
        name: "latency probe p99",
        unit: "us",
        higher_is_better: false,
    },
    Probe {
        kind: ProbeKind::Launch,
        name: "application launch median",
        unit: "us",
        higher_is_better: false,
    },
    Probe {
        kind: ProbeKind::Timer,
        name: "timer wakeup p99 (input)",
        unit: "us",
        higher_is_better: false,
    },
    Probe {
        kind: ProbeKind::Tcp,
        name: "loopback tcp bandwidth",
        unit: "MiB/s",
        higher_is_better: true,
    },
    Probe {
        kind: ProbeKind::Fsync,
        name: "fsync'ed writes",
        unit: "writes/s",
        higher_is_better: true,
    },
];

fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)]
}

fn throughput(d: Duration) -> f64 {
    let block = [7u8; 4096];
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < d {
        std::hint::black_box(askee_core::signing::sha256(std::hint::black_box(&block)));
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn latency_p99(d: Duration) -> f64 {
    let buf = vec![3u8; 64 << 10];
    let start = Instant::now();
    let mut samples = Vec::new();
    while start.elapsed() < d {
        let t = Instant::now();
        std::hint::black_box(askee_core::signing::sha256(std::hint::black_box(&buf)));
        samples.push(t.elapsed().as_secs_f64() * 1e6);
    }
    percentile(samples, 0.99)
}

fn launch_median(d: Duration) -> Result<f64, InterferenceError> {
    let (program, args): (PathBuf, &[&str]) = if Path::new("/bin/true").exists() {
        (PathBuf::from("/bin/true"), &[])
    } else {
        let exe = std::env::current_exe().map_err(|source| InterferenceError::Io {
            op: "locate this program",
            path: PathBuf::new(),
            source,
        })?;
        (exe, &["--version"])
    };
    let start = Instant::now();
    let mut samples = Vec::new();
    while start.elapsed() < d || samples.len() < 5 {
        let t = Instant::now();
        std::process::Command::new(&program)
            .args(args)
            .stdout(std::process::Stdio::null())
            .status()
            .map_err(|source| InterferenceError::Io {
                op: "launch",
                path: program.clone(),
                source,
            })?;
        samples.push(t.elapsed().as_secs_f64() * 1e6);
    }
    Ok(percentile(samples, 0.5))
}

fn timer_p99(d: Duration) -> f64 {
    let start = Instant::now();
    let mut samples = Vec::new();
    while start.elapsed() < d {
        let t = Instant::now();
        std::thread::sleep(Duration::from_millis(1));
        samples.push((t.elapsed().as_secs_f64() - 0.001).max(0.0) * 1e6);
    }
    percentile(samples, 0.99)
}

fn loopback_bandwidth(d: Duration) -> Result<f64, InterferenceError> {
    let net = |op| move |source| InterferenceError::Net { op, source };
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(net("listen"))?;
    let addr = listener.local_addr().map_err(net("listen"))?;
    let reader = std::thread::spawn(move || -> std::io::Result<u64> {
        let (mut s, _) = listener.accept()?;
        let mut buf = vec![0u8; 256 << 10];
        let mut total = 0u64;
        loop {
            match s.read(&mut buf)? {
                0 => return Ok(total),
                n => total += n as u64,
            }
        }
    });
    let mut s = std::net::TcpStream::connect(addr).map_err(net("connect"))?;
    let chunk = vec![1u8; 64 << 10];
    let start = Instant::now();
    let mut sent = 0u64;
    while start.elapsed() < d {
        s.write_all(&chunk).map_err(net("send"))?;
        sent += chunk.len() as u64;
    }
    drop(s);
    let received = reader
        .join()
        .map_err(|_| InterferenceError::Net {
            op: "receive",
            source: std::io::Error::other("reader thread panicked"),
        })?
        .map_err(net("receive"))?;
    let secs = start.elapsed().as_secs_f64();
    Ok(received.min(sent) as f64 / secs / f64::from(1 << 20))
}

fn fsync_writes(dir: &Path, d: Duration) -> Result<f64, InterferenceError> {
    let path = dir.join(format!("askee-interference-{}.tmp", std::process::id()));
    let io = |op| {
        let path = path.clone();
        move |source| InterferenceError::Io { op, path, source }
    };
    let mut f = std::fs::File::create(&path).map_err(io("create"))?;
    let block = [0u8; 4096];
    let start = Instant::now();
    let mut n = 0u64;
    let result = (|| {
        while start.elapsed() < d || n < 3 {
            f.write_all(&block).map_err(io("write"))?;
            f.sync_data().map_err(io("fsync"))?;
            n += 1;
        }
        Ok(n as f64 / start.elapsed().as_secs_f64())
    })();
    let _ = std::fs::remove_file(&path);
    result
}

/// Runs one probe for `d` in this process and returns its figure (what
/// `askee-agent probe` prints).
pub fn run_probe(kind: ProbeKind, d: Duration, scratch: &Path) -> Result<f64, InterferenceError> {
    match kind {
        ProbeKind::Throughput => Ok(throughput(d)),
        ProbeKind::Latency => Ok(latency_p99(d)),
        ProbeKind::Launch => launch_median(d),
        ProbeKind::Timer => Ok(timer_p99(d)),
        ProbeKind::Tcp => loopback_bandwidth(d),
        ProbeKind::Fsync => fsync_writes(scratch, d),
    }
}

/// Runs one probe in its own process (`program probe <kind>`).
async fn measure(
    program: &Path,
    probe: &Probe,
    d: Duration,
    scratch: &Path,
) -> Result<f64, InterferenceError> {
    let fail = |detail: String| InterferenceError::Probe {
        probe: probe.name,
        program: program.to_owned(),
        detail,
    };
    let out = tokio::process::Command::new(program)
        // A home so the program starts without HOME; the probe reads none.
        .arg("--home")
        .arg(scratch)
        .args(["probe", probe.kind.arg(), "--seconds"])
        .arg(d.as_secs_f64().to_string())
        .arg("--dir")
        .arg(scratch)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| fail(e.to_string()))?;
    if !out.status.success() {
        return Err(fail(format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .parse()
        .map_err(|_| fail(format!("printed {:?}, not a number", text.trim())))
}

/// Nanoseconds on CPU of every process of a task (`/proc/<pid>/schedstat`).
pub fn task_cpu_ns(ctl: &TaskControl) -> u64 {
    ctl.pids()
        .iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// The agent as deployed around a set of running tasks: its real idle
/// monitor (host sensors that leave this process and the tasks out of the
/// CPU use, thresholds and sampling interval from [`Config`]) and its real
/// yielder, which journals to `journal`.
pub struct Deployed {
    tasks: TaskSet,
    config: Config,
    journal: Arc<Journal>,
}

impl Deployed {
    pub fn new(tasks: TaskSet, config: Config, journal: Arc<Journal>) -> Self {
        Self {
            tasks,
            config,
            journal,
        }
    }

    /// How long the machine is taken to have been idle when a foreground
    /// run starts: the longest quiet period the thresholds ask for.
    pub fn idle_for(&self) -> Duration {
        Duration::from_secs(
            self.config
                .idle
                .cpu_quiet_secs
                .max(self.config.idle.network_quiet_secs),
        )
    }

    pub fn sample_interval(&self) -> Duration {
        self.config.sample_interval()
    }

    /// Runs `foreground` the way a volunteer comes back to a machine whose
    /// tasks run: every task is thawed and seen to use CPU, a fresh idle
    /// monitor starts as one that has watched the machine stay idle
    /// ([`IdleMonitor::spawn_idle_for`]) with the yielder on its verdicts,
    /// then `foreground` runs. Afterwards the monitor and yielder stop and
    /// every task is thawed again. Returns `foreground`'s value and when the
    /// yielder first froze the tasks, if it did.
    pub async fn beside<T>(
        &self,
        foreground: impl Future<Output = T>,
    ) -> Result<(T, Option<Yielded>), InterferenceError> {
        self.thaw_and_wait_running().await?;
        let journalled = self.journal_entries()?.len();
        let mut sensors = Sensors::host(self.tasks.clone())
            .map_err(|source| InterferenceError::Sensors { source })?;
        sensors.exclusive = self.config.exclusive_programs.clone();
        let activity = IdleMonitor {
            sensors,
            thresholds: self.config.idle.clone(),
            interval: self.sample_interval(),
        }
        .spawn_idle_for(self.idle_for());
        let yielder = yielder::spawn(activity.clone(), self.tasks.clone(), self.journal.clone());
        let started = SystemTime::now();
        let value = foreground.await;
        // Without its last receiver the monitor stops at its next sample.
        yielder.abort();
        let _ = yielder.await;
        drop(activity);
        self.thaw_all()?;
        let started_ms = started
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64() * 1e3)
            .unwrap_or(0.0);
        let yielded = self
            .journal_entries()?
            .into_iter()
            .skip(journalled)
            .find(|e| e.kind == "task.yield")
            .map(|e| Yielded {
                after_ms: (e.timestamp_ms as f64 - started_ms).max(0.0),
                reason: e.data["reason"].as_str().unwrap_or_default().to_owned(),
            });
        Ok((value, yielded))
    }

    fn journal_entries(&self) -> Result<Vec<journal::JournalEntry>, InterferenceError> {
        journal::read_if_any(self.journal.path())
            .map_err(|source| InterferenceError::Journal { source })
    }

    fn thaw_all(&self) -> Result<(), InterferenceError> {
        for (task, ctl) in self.tasks.controls() {
            ctl.thaw()
                .map_err(|source| InterferenceError::Thaw { task, source })?;
        }
        Ok(())
    }

    /// Thaws every task and waits (at most 10 s) until each has used CPU.
    async fn thaw_and_wait_running(&self) -> Result<(), InterferenceError> {
        self.thaw_all()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        for (task, ctl) in self.tasks.controls() {
            let before = task_cpu_ns(&ctl);
            while task_cpu_ns(&ctl) <= before {
                if Instant::now() > deadline {
                    return Err(InterferenceError::NotRunning { task });
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        Ok(())
    }
}

/// A WASI module that stores to every `stride`-th byte of its `pages` of
/// memory, round after round, forever.
fn toucher(pages: u64, stride: u64) -> Vec<u8> {
    let size = pages * 65_536;
    format!(
        r#"(module (memory (export "memory") {pages})
  (func (export "_start") (local $i i32)
    (loop $outer
      (local.set $i (i32.const 0))
      (loop $inner
        (i32.store (local.get $i) (local.get $i))
        (local.set $i (i32.add (local.get $i) (i32.const {stride})))
        (br_if $inner (i32.lt_u (local.get $i) (i32.const {size}))))
      (br $outer))))"#
    )
    .into_bytes()
}

/// The load tasks: (name, module).
fn load_modules(memory_mb: u64) -> Vec<(&'static str, Vec<u8>)> {
    vec![
        (
            "cpu",
            br#"(module (memory (export "memory") 1) (func (export "_start") (loop $l (br $l))))"#
                .to_vec(),
        ),
        // Half the limit: the runtime itself lives in the same cgroup.
        ("memory", toucher((memory_mb * 16 / 2).max(1), 4096)),
        // 8 MiB walked a cache line at a time: larger than most L2s.
        ("cache", toucher(128, 64)),
    ]
}

/// `askee-agent-worker` beside the current executable (or its parent, for
/// test binaries in `target/<profile>/deps`).
pub fn default_worker() -> PathBuf {
    let name = format!("askee-agent-worker{}", std::env::consts::EXE_SUFFIX);
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe.parent().unwrap_or(Path::new("."));
    let cands = [dir.join(&name), dir.parent().unwrap_or(dir).join(&name)];
    cands
        .iter()
        .find(|p| p.exists())
        .cloned()
        .unwrap_or_else(|| cands[0].clone())
}

fn degradation(p: &Probe, alone: f64, with: f64) -> f64 {
    if alone <= 0.0 {
        0.0
    } else if p.higher_is_better {
        (alone - with) / alone * 100.0
    } else {
        (with - alone) / alone * 100.0
    }
}

/// Starts the three load tasks and waits (at most 10 s) until each has its
/// processes (outer worker and runtime); they are added to `tasks` and
/// `running` as they start, so the caller stops whatever did start.
async fn start_load(
    sandbox: &Sandbox,
    limits: &Limits,
    memory_mb: u64,
    tasks: &TaskSet,
    running: &mut Vec<(&'static str, askee_sandbox::RunningTask)>,
) -> Result<(), InterferenceError> {
    for (name, module) in load_modules(memory_mb) {
        let mut spec = TaskSpec::wasm(module);
        spec.limits = limits.clone();
        let task = sandbox
            .spawn(&spec)
            .map_err(|source| InterferenceError::Task { task: name, source })?;
        tasks.insert(name, task.control());
        running.push((name, task));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    for (name, task) in running.iter() {
        let ctl = task.control();
        while ctl.pids().len() < 2 {
            if Instant::now() > deadline {
                return Err(InterferenceError::TaskStart { task: name });
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    Ok(())
}

/// Runs the validation for the agent whose home is `home` (its
/// `config.toml` gives the scratch directory and the idle monitor's
/// settings). The validation's own journal of yields lives in the scratch
/// directory and is removed afterwards; the volunteer's journal is untouched.
pub async fn validate(home: &Path, opts: &Options) -> Result<Report, InterferenceError> {
    let config = Config::load(home)?;
    let scratch = config.scratch(home);
    std::fs::create_dir_all(&scratch).map_err(|source| InterferenceError::Io {
        op: "create the scratch directory",
        path: scratch.clone(),
        source,
    })?;
    let program = match &opts.probe_program {
        Some(p) => p.clone(),
        None => std::env::current_exe().map_err(|source| InterferenceError::Io {
            op: "locate this program",
            path: PathBuf::new(),
            source,
        })?,
    };
    let d = Duration::from_secs_f64(opts.seconds.max(0.05));

    let sandbox = Sandbox::new(SandboxConfig {
        worker: opts.worker.clone().unwrap_or_else(default_worker),
        work_dir: scratch.join("interference"),
        spare_worker: false,
    })
    .map_err(|source| InterferenceError::Task {
        task: "any",
        source,
    })?;
    let limits = Limits {
        cpu_percent: opts.cpu_percent,
        memory_bytes: opts.memory_mb << 20,
        fuel: u64::MAX,
        wall_time: Duration::from_secs(3600),
        cpu_time: Duration::from_secs(3600),
        ..Limits::default()
    };
    let tasks = TaskSet::new();
    let journal_path = scratch.join("interference-journal.jsonl");
    let _ = std::fs::remove_file(&journal_path);
    let deployed = Deployed::new(
        tasks.clone(),
        config,
        Arc::new(
            Journal::open(&journal_path).map_err(|source| InterferenceError::Journal { source })?,
        ),
    );
    let names: Vec<&'static str> = load_modules(opts.memory_mb)
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    // Per probe, in this order: alone, beside the tasks held running, beside
    // them as deployed, alone again. Measuring each probe's columns together
    // (rather than every probe alone, then every probe beside the tasks) and
    // bracketing them with two alone runs keeps the machine's drift over the
    // minutes of a run out of the comparison.
    let mut rows = Vec::with_capacity(PROBES.len());
    for p in &PROBES {
        let before = measure(&program, p, d, &scratch).await?;
        let mut running = Vec::new();
        let beside = async {
            start_load(&sandbox, &limits, opts.memory_mb, &tasks, &mut running).await?;
            let held = measure(&program, p, d, &scratch).await?;
            let (value, yielded) = deployed.beside(measure(&program, p, d, &scratch)).await?;
            Ok::<_, InterferenceError>((held, value?, yielded))
        }
        .await;
        for (name, task) in running {
            task.control().terminate();
            let _ = task.wait();
            tasks.remove(name);
        }
        let (held, dep, yielded) = beside?;
        let after = measure(&program, p, d, &scratch).await?;
        rows.push(([before, after], held, dep, yielded));
    }
    let _ = std::fs::remove_file(&journal_path);

    let measurements = PROBES
        .iter()
        .zip(rows)
        .map(|(p, (alone_runs, h, dep, yielded))| {
            let a = (alone_runs[0] + alone_runs[1]) / 2.0;
            let held_degradation = degradation(p, a, h);
            let deployed_degradation = degradation(p, a, dep);
            Measurement {
                name: p.name,
                unit: p.unit,
                higher_is_better: p.higher_is_better,
                alone: a,
                alone_runs,
                with_tasks: h,
                degradation_percent: held_degradation,
                with_tasks_within_bound: held_degradation <= opts.bound_percent,
                as_deployed: dep,
                deployed_degradation_percent: deployed_degradation,
                yielded,
                passed: deployed_degradation <= opts.bound_percent,
            }
        })
        .collect();
    Ok(Report {
        seconds_per_measurement: d.as_secs_f64(),
        cpu_percent: opts.cpu_percent,
        memory_mb: opts.memory_mb,
        bound_percent: opts.bound_percent,
        load_tasks: names,
        judged_on: "as_deployed",
        sample_interval_ms: deployed.sample_interval().as_millis() as u64,
        idle_for_secs: deployed.idle_for().as_secs(),
        measurements,
    })
}
