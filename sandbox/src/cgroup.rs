//! cgroup detection and per-task control groups, for unified (v2), hybrid and legacy
//! (v1) hierarchies.
//!
//! The file-writing logic takes its roots from [`CgroupLayout`], which is parsed from
//! `/proc/self/mountinfo` and `/proc/self/cgroup` text, so it can be exercised against a
//! temporary directory tree laid out like cgroupfs.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::types::Limits;

/// Which cgroup hierarchies the host mounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CgroupMode {
    /// Only the v2 hierarchy.
    Unified,
    /// v1 controller hierarchies plus a v2 tree (often without controllers).
    Hybrid,
    /// Only v1 hierarchies.
    Legacy,
    /// No cgroup filesystem mounted.
    None,
}

/// The v1 controllers this crate uses.
pub const V1_CONTROLLERS: [&str; 6] = ["cpu", "cpuacct", "memory", "pids", "freezer", "blkio"];

/// Errors of cgroup operations.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// Reading a cgroup or proc file failed.
    #[error("reading {path}: {source}")]
    Read {
        /// File.
        path: PathBuf,
        /// Cause.
        source: io::Error,
    },
    /// Writing a cgroup file failed.
    #[error("writing {value:?} to {path}: {source}")]
    Write {
        /// File.
        path: PathBuf,
        /// Value written.
        value: String,
        /// Cause.
        source: io::Error,
    },
    /// Creating a cgroup directory failed.
    #[error("creating cgroup {path}: {source}")]
    Create {
        /// Directory.
        path: PathBuf,
        /// Cause.
        source: io::Error,
    },
    /// No hierarchy offers the controllers needed to enforce limits.
    #[error("no usable cgroup hierarchy (mode {mode:?})")]
    NoHierarchy {
        /// Detected mode.
        mode: CgroupMode,
    },
}

/// Where the hierarchies are mounted and where this process sits in them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupLayout {
    /// Detected mode.
    pub mode: CgroupMode,
    /// Directory of this process's cgroup in the v2 hierarchy, if mounted.
    pub v2_dir: Option<PathBuf>,
    /// Controllers enabled for children of `v2_dir` or available to it
    /// (`cgroup.controllers`).
    pub v2_controllers: Vec<String>,
    /// Per v1 controller: directory of this process's cgroup in that hierarchy.
    pub v1_dirs: BTreeMap<String, PathBuf>,
}

struct Mount {
    point: PathBuf,
    root: String,
    fstype: String,
    super_opts: String,
}

fn parse_mountinfo(text: &str) -> Vec<Mount> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let l: Vec<&str> = left.split(' ').collect();
        let r: Vec<&str> = right.split(' ').collect();
        if l.len() < 5 || r.len() < 3 {
            continue;
        }
        out.push(Mount {
            root: unescape(l[3]),
            point: PathBuf::from(unescape(l[4])),
            fstype: r[0].to_string(),
            super_opts: r[2].to_string(),
        });
    }
    out
}

fn unescape(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// Join a cgroup path from `/proc/self/cgroup` below a mount whose root is `root`.
fn below(point: &Path, root: &str, path: &str) -> PathBuf {
    let rel = path.strip_prefix(root).unwrap_or(path);
    let rel = rel.trim_start_matches('/');
    if rel.is_empty() {
        point.to_path_buf()
    } else {
        point.join(rel)
    }
}

impl CgroupLayout {
    /// Detect from the running system.
    pub fn detect() -> Result<Self, CgroupError> {
        let mi = read("/proc/self/mountinfo")?;
        let pc = read("/proc/self/cgroup")?;
        Ok(Self::from_proc(&mi, &pc))
    }

    /// Build from the text of `/proc/self/mountinfo` and `/proc/self/cgroup`. Paths in the
    /// mountinfo are used as they are, so a test can point them into a temporary tree.
    pub fn from_proc(mountinfo: &str, proc_cgroup: &str) -> Self {
        let mounts = parse_mountinfo(mountinfo);
        let mut v2_path = None;
        let mut v1_paths: BTreeMap<String, String> = BTreeMap::new();
        for line in proc_cgroup.lines() {
            let mut parts = line.splitn(3, ':');
            let (Some(_), Some(ctrls), Some(path)) = (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            if ctrls.is_empty() {
                v2_path = Some(path.to_string());
            } else {
                for c in ctrls.split(',') {
                    v1_paths.insert(c.to_string(), path.to_string());
                }
            }
        }
        let mut v2_dir = None;
        let mut v1_dirs = BTreeMap::new();
        for m in &mounts {
            if m.fstype == "cgroup2" {
                let path = v2_path.as_deref().unwrap_or("/");
                v2_dir = Some(below(&m.point, &m.root, path));
            } else if m.fstype == "cgroup" {
                for opt in m.super_opts.split(',') {
                    if V1_CONTROLLERS.contains(&opt) && !v1_dirs.contains_key(opt) {
                        let path = v1_paths.get(opt).map(String::as_str).unwrap_or("/");
                        v1_dirs.insert(opt.to_string(), below(&m.point, &m.root, path));
                    }
                }
            }
        }
        let v2_controllers = v2_dir
            .as_ref()
            .and_then(|d| fs::read_to_string(d.join("cgroup.controllers")).ok())
            .map(|s| s.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default();
        let mode = match (v2_dir.is_some(), v1_dirs.is_empty()) {
            (true, true) => CgroupMode::Unified,
            (true, false) => CgroupMode::Hybrid,
            (false, false) => CgroupMode::Legacy,
            (false, true) => CgroupMode::None,
        };
        CgroupLayout {
            mode,
            v2_dir,
            v2_controllers,
            v1_dirs,
        }
    }

    /// Whether the v2 tree offers the controllers needed (memory, pids and cpu).
    pub fn v2_usable(&self) -> bool {
        self.v2_dir.is_some()
            && ["cpu", "memory", "pids"]
                .iter()
                .all(|c| self.v2_controllers.iter().any(|x| x == c))
    }

    /// Which version will enforce limits: 2, 1, or `None`.
    pub fn enforcing_version(&self) -> Option<u8> {
        if self.v2_usable() {
            Some(2)
        } else if self.v1_dirs.contains_key("memory") && self.v1_dirs.contains_key("pids") {
            Some(1)
        } else {
            None
        }
    }
}

fn read(path: impl AsRef<Path>) -> Result<String, CgroupError> {
    fs::read_to_string(path.as_ref()).map_err(|source| CgroupError::Read {
        path: path.as_ref().to_path_buf(),
        source,
    })
}

fn write(path: impl AsRef<Path>, value: &str) -> Result<(), CgroupError> {
    fs::write(path.as_ref(), value).map_err(|source| CgroupError::Write {
        path: path.as_ref().to_path_buf(),
        value: value.to_string(),
        source,
    })
}

fn write_if_present(path: impl AsRef<Path>, value: &str) -> Result<bool, CgroupError> {
    if path.as_ref().exists() {
        write(path, value)?;
        Ok(true)
    } else {
        Ok(false)
    }
}

fn mkdir(path: &Path) -> Result<(), CgroupError> {
    match fs::create_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(CgroupError::Create {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// CFS period used for the CPU quota, in microseconds.
pub const CPU_PERIOD_US: u64 = 100_000;

/// Quota in microseconds per [`CPU_PERIOD_US`] for a CPU percentage (100 = one core).
pub fn cpu_quota_us(cpu_percent: u32) -> u64 {
    (CPU_PERIOD_US * u64::from(cpu_percent.max(1)) / 100).max(1000)
}

/// `memory.high` for a `memory.max`: throttle and reclaim at 90 % before the kill.
pub fn memory_high(memory_max: u64) -> u64 {
    memory_max / 10 * 9
}

/// One task's control group, in whichever hierarchy enforces limits.
#[derive(Debug, Clone)]
pub enum TaskCgroup {
    /// A v2 cgroup directory.
    V2 {
        /// Directory.
        dir: PathBuf,
    },
    /// One directory per v1 controller.
    V1 {
        /// Controller name → directory.
        dirs: BTreeMap<String, PathBuf>,
    },
}

/// Usage read back from a cgroup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupUsage {
    /// CPU time.
    pub cpu_time: Option<Duration>,
    /// Peak memory.
    pub peak_memory_bytes: Option<u64>,
    /// Block I/O read bytes.
    pub io_read_bytes: Option<u64>,
    /// Block I/O write bytes.
    pub io_write_bytes: Option<u64>,
    /// OOM kills.
    pub oom_kills: u64,
    /// Fork failures on `pids.max`.
    pub pids_limit_hits: u64,
}

fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        (it.next() == Some(key)).then(|| it.next()?.parse().ok())?
    })
}

impl CgroupUsage {
    /// The counters accrued since `baseline` was read (the peak is not a counter
    /// and stays as read).
    pub fn since(&self, baseline: &CgroupUsage) -> CgroupUsage {
        let sub = |a: Option<u64>, b: Option<u64>| a.map(|a| a.saturating_sub(b.unwrap_or(0)));
        CgroupUsage {
            cpu_time: self
                .cpu_time
                .map(|t| t.saturating_sub(baseline.cpu_time.unwrap_or_default())),
            peak_memory_bytes: self.peak_memory_bytes,
            io_read_bytes: sub(self.io_read_bytes, baseline.io_read_bytes),
            io_write_bytes: sub(self.io_write_bytes, baseline.io_write_bytes),
            oom_kills: self.oom_kills.saturating_sub(baseline.oom_kills),
            pids_limit_hits: self
                .pids_limit_hits
                .saturating_sub(baseline.pids_limit_hits),
        }
    }
}

/// End what askee processes no longer alive left behind (a crash skips their
/// cleanup): task cgroups named `askee-<pid>-…` below this process's cgroups
/// whose pid does not exist. Their members are killed first (on v1, frozen,
/// killed and thawed, so a member its owner froze to yield cannot outlive
/// it), then the directories are removed.
pub fn remove_stale(layout: &CgroupLayout) {
    let mut stale: BTreeMap<String, TaskCgroup> = BTreeMap::new();
    let v2 = layout.v2_dir.iter().map(|d| (None, d));
    let v1 = layout.v1_dirs.iter().map(|(c, d)| (Some(c), d));
    for (controller, parent) in v2.chain(v1) {
        let Ok(entries) = fs::read_dir(parent) else {
            continue;
        };
        for e in entries.flatten() {
            let Some(name) = e.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if !owner_is_gone(&name) {
                continue;
            }
            match controller {
                None => {
                    stale.insert(format!("v2/{name}"), TaskCgroup::V2 { dir: e.path() });
                }
                Some(c) => {
                    let group = stale.entry(name).or_insert_with(|| TaskCgroup::V1 {
                        dirs: BTreeMap::new(),
                    });
                    if let TaskCgroup::V1 { dirs } = group {
                        dirs.insert(c.clone(), e.path());
                    }
                }
            }
        }
    }
    for group in stale.values() {
        let _ = group.kill_all();
        let _ = group.remove();
    }
}

/// Whether `name` is a task cgroup (`askee-<pid>-…`) whose owner has exited.
fn owner_is_gone(name: &str) -> bool {
    name.strip_prefix("askee-")
        .and_then(|rest| rest.split('-').next())
        .and_then(|p| p.parse::<u32>().ok())
        .is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
}

impl TaskCgroup {
    /// Create a cgroup named `name` below this process's cgroup and apply `limits`.
    pub fn create(layout: &CgroupLayout, name: &str, limits: &Limits) -> Result<Self, CgroupError> {
        match layout.enforcing_version() {
            Some(2) => {
                let parent = layout
                    .v2_dir
                    .clone()
                    .ok_or(CgroupError::NoHierarchy { mode: layout.mode })?;
                Self::create_v2(&parent, name, limits)
            }
            Some(_) => Self::create_v1(&layout.v1_dirs, name, limits),
            None => Err(CgroupError::NoHierarchy { mode: layout.mode }),
        }
    }

    /// v2: enable controllers for children of `parent` (moving this process into a leaf
    /// when the "no internal processes" rule requires it), create `parent/name` and write
    /// `cpu.max`, `memory.max`, `memory.high`, `memory.swap.max`, `pids.max`, and
    /// `cpu.idle` (a new cgroup is idle until [`TaskCgroup::set_idle`] says otherwise).
    pub fn create_v2(parent: &Path, name: &str, limits: &Limits) -> Result<Self, CgroupError> {
        let subtree = parent.join("cgroup.subtree_control");
        let enabled = fs::read_to_string(&subtree).unwrap_or_default();
        let want: Vec<&str> = ["cpu", "memory", "pids", "io"]
            .into_iter()
            .filter(|c| !enabled.split_whitespace().any(|e| e == *c))
            .collect();
        for c in want {
            match write(&subtree, &format!("+{c}")) {
                Ok(()) => {}
                Err(CgroupError::Write { ref source, .. })
                    if source.raw_os_error() == Some(16 /* EBUSY */) =>
                {
                    // Processes in `parent` forbid enabling controllers: move them into
                    // a leaf and retry once.
                    let leaf = parent.join("askee-supervisor");
                    mkdir(&leaf)?;
                    let procs = read(parent.join("cgroup.procs"))?;
                    for pid in procs.split_whitespace() {
                        // A process may exit meanwhile; that is not an error.
                        let _ = write(leaf.join("cgroup.procs"), pid);
                    }
                    write(&subtree, &format!("+{c}"))?;
                }
                Err(e) if c == "io" => {
                    tracing::debug!(error = %e, "io controller not available");
                }
                Err(e) => return Err(e),
            }
        }
        let dir = parent.join(name);
        mkdir(&dir)?;
        let cg = TaskCgroup::V2 { dir };
        cg.apply_limits(limits)?;
        cg.set_idle(true)?;
        Ok(cg)
    }

    /// Write `limits` into the cgroup's files, at creation or again for another task
    /// (a spare worker's cgroup gets its task's limits when the task arrives).
    pub fn apply_limits(&self, limits: &Limits) -> Result<(), CgroupError> {
        match self {
            TaskCgroup::V2 { dir } => {
                write(
                    dir.join("cpu.max"),
                    &format!("{} {}", cpu_quota_us(limits.cpu_percent), CPU_PERIOD_US),
                )?;
                write(
                    dir.join("memory.high"),
                    &memory_high(limits.memory_bytes).to_string(),
                )?;
                write(dir.join("memory.max"), &limits.memory_bytes.to_string())?;
                write_if_present(dir.join("memory.swap.max"), "0")?;
                write_if_present(dir.join("memory.oom.group"), "1")?;
                write(dir.join("pids.max"), &limits.pids.to_string())?;
            }
            TaskCgroup::V1 { dirs } => {
                if let Some(d) = dirs.get("cpu") {
                    write(d.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
                    write(
                        d.join("cpu.cfs_quota_us"),
                        &cpu_quota_us(limits.cpu_percent).to_string(),
                    )?;
                }
                if let Some(d) = dirs.get("memory") {
                    let bytes = limits.memory_bytes.to_string();
                    let memsw = d.join("memory.memsw.limit_in_bytes");
                    // memsw must stay >= limit_in_bytes at every step: when raising,
                    // memsw goes first; when lowering (or at creation), the limit.
                    let current: Option<u64> = fs::read_to_string(d.join("memory.limit_in_bytes"))
                        .ok()
                        .and_then(|v| v.trim().parse().ok());
                    let raising = current.is_some_and(|c| limits.memory_bytes > c);
                    if raising {
                        write_if_present(&memsw, &bytes)?;
                    }
                    write(d.join("memory.limit_in_bytes"), &bytes)?;
                    // v1 has no memory.high; the soft limit is its reclaim-first counterpart.
                    write_if_present(
                        d.join("memory.soft_limit_in_bytes"),
                        &memory_high(limits.memory_bytes).to_string(),
                    )?;
                    // Equal to the limit, so no swap is used.
                    if !raising {
                        write_if_present(&memsw, &bytes)?;
                    }
                }
                if let Some(d) = dirs.get("pids") {
                    write(d.join("pids.max"), &limits.pids.to_string())?;
                }
            }
        }
        Ok(())
    }

    /// v1: one cgroup per controller hierarchy.
    pub fn create_v1(
        v1_dirs: &BTreeMap<String, PathBuf>,
        name: &str,
        limits: &Limits,
    ) -> Result<Self, CgroupError> {
        let mut dirs = BTreeMap::new();
        for (ctrl, parent) in v1_dirs {
            let dir = parent.join(name);
            mkdir(&dir)?;
            dirs.insert(ctrl.clone(), dir);
        }
        let cg = TaskCgroup::V1 { dirs };
        cg.apply_limits(limits)?;
        cg.set_idle(true)?;
        Ok(cg)
    }

    /// Make the whole cgroup idle for the scheduler (`cpu.idle`, where the kernel
    /// has it: v2, and v1's cpu controller), or not; false when there is no such
    /// file.
    ///
    /// A process's own `SCHED_IDLE` ranks it only inside its cgroup: the cgroup
    /// itself competes with the volunteer's processes at full weight unless it
    /// is idle. The sandbox's own set-up runs in the same cgroup, so the sandbox
    /// lifts this while it sets a task up and tears it down, and sets it (through
    /// [`TaskCgroup::idle_file`], opened for the worker) while the task runs.
    pub fn set_idle(&self, idle: bool) -> Result<bool, CgroupError> {
        match self.idle_file() {
            Some(file) => write_if_present(file, if idle { "1" } else { "0" }),
            None => Ok(false),
        }
    }

    /// The `cpu.idle` file, where the kernel has one.
    pub fn idle_file(&self) -> Option<PathBuf> {
        let file = match self {
            TaskCgroup::V2 { dir } => dir.join("cpu.idle"),
            TaskCgroup::V1 { dirs } => dirs.get("cpu")?.join("cpu.idle"),
        };
        file.exists().then_some(file)
    }

    /// The files a single-threaded process writes `0` into to join the cgroup
    /// itself: v1's `tasks`, v2's `cgroup.procs`.
    ///
    /// On v1 a thread moving itself through `tasks` is the one migration that
    /// skips the kernel's global threadgroup lock, whose write side waits out an
    /// RCU grace period (8 ms on average, up to 16, on an idle 2-core machine;
    /// 0.2 ms through `tasks`). For a single-threaded process it moves the whole
    /// process. v2 moves only threads of threaded cgroups through
    /// `cgroup.threads`, so it joins through `cgroup.procs`.
    pub fn join_files(&self) -> Vec<PathBuf> {
        match self {
            TaskCgroup::V2 { dir } => vec![dir.join("cgroup.procs")],
            TaskCgroup::V1 { dirs } => dirs.values().map(|d| d.join("tasks")).collect(),
        }
    }

    /// Pids currently in the cgroup.
    pub fn pids(&self) -> Result<Vec<i32>, CgroupError> {
        let file = match self {
            TaskCgroup::V2 { dir } => dir.join("cgroup.procs"),
            TaskCgroup::V1 { dirs } => match dirs.get("pids").or_else(|| dirs.values().next()) {
                Some(d) => d.join("cgroup.procs"),
                None => return Ok(Vec::new()),
            },
        };
        Ok(read(file)?
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect())
    }

    /// Freeze every process of the task (yield to the user).
    pub fn freeze(&self) -> Result<(), CgroupError> {
        match self {
            TaskCgroup::V2 { dir } => write(dir.join("cgroup.freeze"), "1"),
            TaskCgroup::V1 { dirs } => match dirs.get("freezer") {
                Some(d) => write(d.join("freezer.state"), "FROZEN"),
                None => Err(CgroupError::NoHierarchy {
                    mode: CgroupMode::Legacy,
                }),
            },
        }
    }

    /// Thaw after [`TaskCgroup::freeze`].
    pub fn thaw(&self) -> Result<(), CgroupError> {
        match self {
            TaskCgroup::V2 { dir } => write(dir.join("cgroup.freeze"), "0"),
            TaskCgroup::V1 { dirs } => match dirs.get("freezer") {
                Some(d) => write(d.join("freezer.state"), "THAWED"),
                None => Err(CgroupError::NoHierarchy {
                    mode: CgroupMode::Legacy,
                }),
            },
        }
    }

    /// Whether the cgroup is frozen.
    pub fn is_frozen(&self) -> Result<bool, CgroupError> {
        match self {
            TaskCgroup::V2 { dir } => {
                Ok(keyed(&read(dir.join("cgroup.events"))?, "frozen") == Some(1))
            }
            TaskCgroup::V1 { dirs } => match dirs.get("freezer") {
                Some(d) => Ok(read(d.join("freezer.state"))?.trim() == "FROZEN"),
                None => Ok(false),
            },
        }
    }

    /// Kill every process in the cgroup: `cgroup.kill` on v2 when present, otherwise
    /// freeze, SIGKILL each member, thaw (so no member can fork between read and kill).
    pub fn kill_all(&self) -> Result<(), CgroupError> {
        if let TaskCgroup::V2 { dir } = self
            && write_if_present(dir.join("cgroup.kill"), "1")?
        {
            return Ok(());
        }
        let frozen = self.freeze().is_ok();
        let members = self.pids();
        for &pid in members.as_deref().unwrap_or_default() {
            crate::sys::kill_process(pid);
        }
        // Thaw whatever happened above: a member left frozen never acts on its
        // SIGKILL (or its parent-death signal) and outlives its owner.
        if frozen {
            self.thaw()?;
        }
        members.map(drop)
    }

    /// Usage accounting read back from the cgroup files.
    pub fn usage(&self) -> CgroupUsage {
        let mut u = CgroupUsage::default();
        match self {
            TaskCgroup::V2 { dir } => {
                let f = |n: &str| fs::read_to_string(dir.join(n)).unwrap_or_default();
                u.cpu_time = keyed(&f("cpu.stat"), "usage_usec").map(Duration::from_micros);
                u.peak_memory_bytes = f("memory.peak").trim().parse().ok();
                u.oom_kills = keyed(&f("memory.events"), "oom_kill").unwrap_or(0);
                u.pids_limit_hits = keyed(&f("pids.events"), "max").unwrap_or(0);
                let io = f("io.stat");
                let (mut r, mut w, mut any) = (0u64, 0u64, false);
                for line in io.lines() {
                    for kv in line.split_whitespace().skip(1) {
                        if let Some(v) = kv.strip_prefix("rbytes=") {
                            r += v.parse::<u64>().unwrap_or(0);
                            any = true;
                        } else if let Some(v) = kv.strip_prefix("wbytes=") {
                            w += v.parse::<u64>().unwrap_or(0);
                        }
                    }
                }
                if any || dir.join("io.stat").exists() {
                    u.io_read_bytes = Some(r);
                    u.io_write_bytes = Some(w);
                }
            }
            TaskCgroup::V1 { dirs } => {
                let f =
                    |c: &str, n: &str| dirs.get(c).and_then(|d| fs::read_to_string(d.join(n)).ok());
                u.cpu_time = f("cpuacct", "cpuacct.usage")
                    .and_then(|s| s.trim().parse().ok())
                    .map(Duration::from_nanos);
                u.peak_memory_bytes =
                    f("memory", "memory.max_usage_in_bytes").and_then(|s| s.trim().parse().ok());
                u.oom_kills = f("memory", "memory.oom_control")
                    .and_then(|s| keyed(&s, "oom_kill"))
                    .unwrap_or(0);
                u.pids_limit_hits = f("pids", "pids.events")
                    .and_then(|s| keyed(&s, "max"))
                    .unwrap_or(0);
                if let Some(io) = f("blkio", "blkio.throttle.io_service_bytes") {
                    let sum = |op: &str| {
                        io.lines()
                            .filter_map(|l| {
                                let p: Vec<&str> = l.split_whitespace().collect();
                                (p.len() == 3 && p[1] == op).then(|| p[2].parse::<u64>().ok())?
                            })
                            .sum::<u64>()
                    };
                    u.io_read_bytes = Some(sum("Read"));
                    u.io_write_bytes = Some(sum("Write"));
                }
            }
        }
        u
    }

    /// Make an ended task's cgroup ready for another task instead of removing it:
    /// true when it is empty, thawed and its peak-memory mark reset (the counters
    /// are read against a baseline). Only v1, where the peak can be reset for every
    /// reader; on v2 (a reset of `memory.peak` holds only for the file descriptor
    /// that wrote it) this is false and the cgroup is removed as before. Reusing
    /// spares the kernel a cgroup creation and a removal per task: on v1 both take
    /// the cgroup lock, and a removed cgroup's offlining holds it for milliseconds.
    pub fn reset_for_reuse(&self) -> Result<bool, CgroupError> {
        let TaskCgroup::V1 { dirs } = self else {
            return Ok(false);
        };
        if !self.pids()?.is_empty() {
            return Ok(false);
        }
        if self.is_frozen()? {
            self.thaw()?;
        }
        if let Some(d) = dirs.get("memory") {
            write(d.join("memory.max_usage_in_bytes"), "0")?;
        }
        Ok(true)
    }

    /// Remove the cgroup directories, waiting (bounded) for exited members to be
    /// released by the kernel.
    pub fn remove(&self) -> Result<(), CgroupError> {
        let dirs: Vec<&PathBuf> = match self {
            TaskCgroup::V2 { dir } => vec![dir],
            TaskCgroup::V1 { dirs } => dirs.values().collect(),
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        for d in dirs {
            loop {
                match fs::remove_dir(d) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    Err(e) if e.raw_os_error() == Some(16) && Instant::now() < deadline => {
                        // EBUSY: a member is still being torn down by the kernel.
                        std::thread::yield_now();
                    }
                    Err(source) => {
                        return Err(CgroupError::Create {
                            path: d.clone(),
                            source,
                        });
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID_MOUNTINFO: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    const HYBRID_CGROUP: &str = "\
8:pids:/
6:freezer:/
4:memory:/process_api/abc
2:cpuacct:/
1:cpu:/
0::/
";

    #[test]
    fn detects_hybrid_and_own_paths() {
        let l = CgroupLayout::from_proc(HYBRID_MOUNTINFO, HYBRID_CGROUP);
        assert_eq!(l.mode, CgroupMode::Hybrid);
        assert_eq!(
            l.v1_dirs.get("memory").unwrap(),
            Path::new("/sys/fs/cgroup/memory/process_api/abc")
        );
        assert_eq!(
            l.v1_dirs.get("pids").unwrap(),
            Path::new("/sys/fs/cgroup/pids")
        );
        assert_eq!(
            l.v2_dir.as_deref(),
            Some(Path::new("/sys/fs/cgroup/unified"))
        );
        assert_eq!(l.enforcing_version(), Some(1));
    }

    #[test]
    fn detects_unified_and_legacy() {
        let mi = "30 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";
        let l = CgroupLayout::from_proc(mi, "0::/user.slice/session-1.scope\n");
        assert_eq!(l.mode, CgroupMode::Unified);
        assert_eq!(
            l.v2_dir.as_deref(),
            Some(Path::new("/sys/fs/cgroup/user.slice/session-1.scope"))
        );
        let legacy: String = HYBRID_MOUNTINFO
            .lines()
            .filter(|l| !l.contains("cgroup2"))
            .map(|l| format!("{l}\n"))
            .collect();
        let l = CgroupLayout::from_proc(&legacy, HYBRID_CGROUP);
        assert_eq!(l.mode, CgroupMode::Legacy);
        assert_eq!(CgroupLayout::from_proc("", "").mode, CgroupMode::None);
    }

    #[test]
    fn quota_and_high() {
        assert_eq!(cpu_quota_us(50), 50_000);
        assert_eq!(cpu_quota_us(200), 200_000);
        assert_eq!(cpu_quota_us(0), 1000);
        assert_eq!(memory_high(1000), 900);
    }
}
