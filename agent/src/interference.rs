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
//! These are benchmarks: a run's verdict depends on the machine and what
//! else it does, so tests check the report's shape, never its verdict.

use std::fmt::Write as _;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use askee_sandbox::{Limits, Sandbox, SandboxConfig, SandboxError, TaskSpec};
use serde::Serialize;

use crate::config::{Config, ConfigError};

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
}

/// Options of `askee-agent validate-non-interference`.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Seconds each measurement runs (each runs twice: alone and beside the tasks).
    #[arg(long, default_value_t = 0.4)]
    pub seconds: f64,
    /// CPU limit of each load task, percent of one core.
    #[arg(long, default_value_t = 100)]
    pub cpu_percent: u32,
    /// Memory limit of each load task in MiB (the memory task touches half of it).
    #[arg(long, default_value_t = 256)]
    pub memory_mb: u64,
    /// Largest acceptable degradation, in percent.
    #[arg(long, default_value_t = 5.0)]
    pub bound_percent: f64,
    /// The sandbox worker binary (default: `askee-agent-worker` beside this program).
    #[arg(long)]
    pub worker: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            seconds: 0.4,
            cpu_percent: 100,
            memory_mb: 256,
            bound_percent: 5.0,
            worker: None,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Measurement {
    pub name: &'static str,
    pub unit: &'static str,
    pub higher_is_better: bool,
    pub alone: f64,
    pub with_tasks: f64,
    /// Positive when the tasks made it worse.
    pub degradation_percent: f64,
    pub passed: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub seconds_per_measurement: f64,
    pub cpu_percent: u32,
    pub memory_mb: u64,
    pub bound_percent: f64,
    pub load_tasks: Vec<&'static str>,
    pub measurements: Vec<Measurement>,
}

impl Report {
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
        for m in &self.measurements {
            let _ = writeln!(
                out,
                "  {:<4} {:<28} alone {:>12.2} {:<8} with tasks {:>12.2}  {:+6.1}%",
                if m.passed { "ok" } else { "FAIL" },
                m.name,
                m.alone,
                m.unit,
                m.with_tasks,
                m.degradation_percent
            );
        }
        let _ = writeln!(
            out,
            "{}",
            if self.passed() {
                "No measurement degraded past the bound."
            } else {
                "Some measurement degraded past the bound."
            }
        );
        out
    }
}

struct Probe {
    name: &'static str,
    unit: &'static str,
    higher_is_better: bool,
}

const PROBES: [Probe; 6] = [
    Probe {
        name: "foreground throughput",
        unit: "blocks/s",
        higher_is_better: true,
    },
    Probe {
        name: "latency probe p99",
        unit: "us",
        higher_is_better: false,
    },
    Probe {
        name: "application launch median",
        unit: "us",
        higher_is_better: false,
    },
    Probe {
        name: "timer wakeup p99 (input)",
        unit: "us",
        higher_is_better: false,
    },
    Probe {
        name: "loopback tcp bandwidth",
        unit: "MiB/s",
        higher_is_better: true,
    },
    Probe {
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

fn measure_all(scratch: &Path, d: Duration) -> Result<Vec<f64>, InterferenceError> {
    Ok(vec![
        throughput(d),
        latency_p99(d),
        launch_median(d)?,
        timer_p99(d),
        loopback_bandwidth(d)?,
        fsync_writes(scratch, d)?,
    ])
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

/// Runs the validation for the agent whose home is `home`.
pub fn validate(home: &Path, opts: &Options) -> Result<Report, InterferenceError> {
    let config = Config::load(home)?;
    let scratch = config.scratch(home);
    std::fs::create_dir_all(&scratch).map_err(|source| InterferenceError::Io {
        op: "create the scratch directory",
        path: scratch.clone(),
        source,
    })?;
    let d = Duration::from_secs_f64(opts.seconds.max(0.05));
    let alone = measure_all(&scratch, d)?;

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
    let mut running = Vec::new();
    let mut names = Vec::new();
    let started = (|| {
        for (name, module) in load_modules(opts.memory_mb) {
            let mut spec = TaskSpec::wasm(module);
            spec.limits = limits.clone();
            let task = sandbox
                .spawn(&spec)
                .map_err(|source| InterferenceError::Task { task: name, source })?;
            running.push(task);
            names.push(name);
        }
        // Started means the task's processes exist (outer worker + runtime).
        let deadline = Instant::now() + Duration::from_secs(10);
        for (task, name) in running.iter().zip(&names) {
            let ctl = task.control();
            while ctl.pids().len() < 2 {
                if Instant::now() > deadline {
                    return Err(InterferenceError::TaskStart { task: name });
                }
                std::thread::yield_now();
            }
        }
        Ok(())
    })();
    let with = started.and_then(|()| measure_all(&scratch, d));
    for task in running {
        task.control().terminate();
        let _ = task.wait();
    }
    let with = with?;

    let measurements = PROBES
        .iter()
        .zip(alone.iter().zip(&with))
        .map(|(p, (&a, &w))| {
            let degradation = if a <= 0.0 {
                0.0
            } else if p.higher_is_better {
                (a - w) / a * 100.0
            } else {
                (w - a) / a * 100.0
            };
            Measurement {
                name: p.name,
                unit: p.unit,
                higher_is_better: p.higher_is_better,
                alone: a,
                with_tasks: w,
                degradation_percent: degradation,
                passed: degradation <= opts.bound_percent,
            }
        })
        .collect();
    Ok(Report {
        seconds_per_measurement: d.as_secs_f64(),
        cpu_percent: opts.cpu_percent,
        memory_mb: opts.memory_mb,
        bound_percent: opts.bound_percent,
        load_tasks: names,
        measurements,
    })
}
