//! Linux idle sources: `/proc/stat` (minus the agent's and its tasks'
//! ticks), logind's `IdleHint` over the system D-Bus (works on Wayland and
//! X11 alike) with `/dev/input/event*` as the fallback, `/proc/net/dev`,
//! `/proc/meminfo` and `/proc/pressure/memory`, `/sys/class/power_supply`,
//! and `/proc/*/comm` for exclusive programs.
//!
//! X11's screensaver extension is deliberately absent: logind covers X11
//! sessions too, and evdev covers machines without logind.

use std::fs::File;
use std::io::Read as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use askee_core::idle::Power;

use crate::idle::procfs::{
    parse_meminfo, parse_net_dev, parse_pid_stat_cpu, parse_proc_stat, parse_psi_some_avg10,
};
use crate::idle::{
    CpuLoad, InputIdle, MemoryLoad, MemoryReading, NetworkRate, PowerSupply, Programs, Sensors,
    SourceError,
};
use crate::yielder::TaskSet;

fn read(path: &Path) -> Result<String, SourceError> {
    std::fs::read_to_string(path).map_err(|source| SourceError::Read {
        path: path.display().to_string(),
        source,
    })
}

fn malformed(path: &str) -> SourceError {
    SourceError::Malformed {
        path: path.into(),
        detail: "unexpected format".into(),
    }
}

pub fn host_sensors(tasks: TaskSet) -> Result<Sensors, SourceError> {
    Ok(Sensors {
        cpu: Box::new(ProcStat::new(tasks)),
        input: input_source(),
        network: Box::new(NetDev::default()),
        memory: Box::new(Meminfo),
        power: Box::new(PowerSupplyDir(PathBuf::from("/sys/class/power_supply"))),
        programs: Box::new(ProcComm),
        exclusive: Vec::new(),
    })
}

/// Host CPU busy ticks minus the ticks of the agent itself and of the
/// processes of its running tasks.
pub struct ProcStat {
    pids: Box<dyn Fn() -> Vec<i32> + Send>,
    prev: Option<(u64, u64, u64)>,
}

impl ProcStat {
    pub fn new(tasks: TaskSet) -> Self {
        Self::excluding(move || tasks.pids())
    }

    /// Excludes (besides the agent itself) the processes `pids` names at each sample.
    pub fn excluding(pids: impl Fn() -> Vec<i32> + Send + 'static) -> Self {
        Self {
            pids: Box::new(pids),
            prev: None,
        }
    }

    fn own_ticks(&self) -> u64 {
        let pid_ticks = |pid: &str| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|t| parse_pid_stat_cpu(&t))
                .unwrap_or(0)
        };
        let mut sum = pid_ticks("self");
        for pid in (self.pids)() {
            sum += pid_ticks(&pid.to_string());
        }
        sum
    }
}

impl CpuLoad for ProcStat {
    fn busy_percent(&mut self) -> Result<Option<f64>, SourceError> {
        let text = read(Path::new("/proc/stat"))?;
        let (total, busy) = parse_proc_stat(&text).ok_or_else(|| malformed("/proc/stat"))?;
        let own = self.own_ticks();
        let prev = self.prev.replace((total, busy, own));
        let Some((ptotal, pbusy, pown)) = prev else {
            return Ok(None);
        };
        let dt = total.saturating_sub(ptotal);
        if dt == 0 {
            // No tick elapsed: keep the older baseline for the next call.
            self.prev = Some((ptotal, pbusy, pown));
            return Ok(None);
        }
        // A task that exited between samples takes its ticks with it, so the
        // own share can only be under-counted: the host looks busier, never idler.
        let others = busy
            .saturating_sub(pbusy)
            .saturating_sub(own.saturating_sub(pown));
        Ok(Some((others as f64 * 100.0 / dt as f64).min(100.0)))
    }
}

fn input_source() -> Box<dyn InputIdle> {
    match Logind::connect() {
        Ok(l) => return Box::new(l),
        Err(e) => tracing::info!(error = %e, "logind unavailable; trying /dev/input"),
    }
    let ev = Evdev::open(Path::new("/dev/input"));
    if ev.devices.is_empty() {
        tracing::info!("no readable input devices: treating the machine as headless");
        Box::new(NoInput)
    } else {
        Box::new(ev)
    }
}

/// logind's aggregate idle hint (`org.freedesktop.login1.Manager.IdleHint`
/// and `IdleSinceHint`), which desktop sessions (GNOME, KDE, sway with
/// swayidle) keep up to date on Wayland and X11.
///
/// The D-Bus connection lives on its own thread with its own single-thread
/// runtime, so the source works from any context (inside or outside tokio)
/// and is dropped cleanly anywhere; queries go over a channel with a deadline.
pub struct Logind {
    requests: mpsc::Sender<mpsc::Sender<Result<Option<u64>, SourceError>>>,
}

const LOGIND_DEADLINE: Duration = Duration::from_secs(3);

fn logind_err(detail: impl std::fmt::Display) -> SourceError {
    SourceError::Logind {
        detail: detail.to_string(),
    }
}

async fn logind_property(
    conn: &zbus::Connection,
    name: &str,
) -> Result<zbus::zvariant::OwnedValue, SourceError> {
    let err = |e: zbus::Error| logind_err(format!("{name}: {e}"));
    let reply = conn
        .call_method(
            Some("org.freedesktop.login1"),
            "/org/freedesktop/login1",
            Some("org.freedesktop.DBus.Properties"),
            "Get",
            &("org.freedesktop.login1.Manager", name),
        )
        .await
        .map_err(err)?;
    reply
        .body()
        .deserialize::<zbus::zvariant::OwnedValue>()
        .map_err(err)
}

async fn logind_idle_secs(conn: &zbus::Connection) -> Result<Option<u64>, SourceError> {
    let idle = bool::try_from(logind_property(conn, "IdleHint").await?).map_err(logind_err)?;
    if !idle {
        return Ok(Some(0));
    }
    let since_us =
        u64::try_from(logind_property(conn, "IdleSinceHint").await?).map_err(logind_err)?;
    let now_us = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0);
    Ok(Some(now_us.saturating_sub(since_us) / 1_000_000))
}

impl Logind {
    /// Connects to the system bus and checks that logind answers.
    pub fn connect() -> Result<Self, SourceError> {
        let (ready_tx, ready_rx) = mpsc::channel();
        let (requests, incoming) =
            mpsc::channel::<mpsc::Sender<Result<Option<u64>, SourceError>>>();
        std::thread::Builder::new()
            .name("askee-logind".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => return drop(ready_tx.send(Err(logind_err(e)))),
                };
                let conn = match rt.block_on(async {
                    let conn = zbus::Connection::system().await.map_err(logind_err)?;
                    logind_idle_secs(&conn).await?;
                    Ok::<_, SourceError>(conn)
                }) {
                    Ok(c) => c,
                    Err(e) => return drop(ready_tx.send(Err(e))),
                };
                if ready_tx.send(Ok(())).is_err() {
                    return;
                }
                // Ends when the source (the only sender) is dropped.
                for reply in incoming {
                    let _ = reply.send(rt.block_on(logind_idle_secs(&conn)));
                }
            })
            .map_err(logind_err)?;
        match ready_rx.recv_timeout(LOGIND_DEADLINE) {
            Ok(Ok(())) => Ok(Self { requests }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(logind_err("no answer from the system bus within 3 s")),
        }
    }
}

impl InputIdle for Logind {
    fn idle_secs(&mut self) -> Result<Option<u64>, SourceError> {
        let (tx, rx) = mpsc::channel();
        self.requests
            .send(tx)
            .map_err(|_| logind_err("the d-bus thread stopped"))?;
        rx.recv_timeout(LOGIND_DEADLINE)
            .map_err(|_| logind_err("no answer from logind within 3 s"))?
    }

    fn kind(&self) -> &'static str {
        "logind"
    }
}

/// The kernel's input event devices, read without blocking: any event since
/// the last sample is input now. Needs read access to `/dev/input/event*`
/// (root or the `input` group). Input before the agent started is unknown,
/// so the idle clock starts when the source opens.
pub struct Evdev {
    devices: Vec<File>,
    last_input: Instant,
}

impl Evdev {
    pub fn open(dir: &Path) -> Self {
        let mut devices = Vec::new();
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                if !e.file_name().to_string_lossy().starts_with("event") {
                    continue;
                }
                if let Ok(f) = std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_NONBLOCK)
                    .open(e.path())
                {
                    devices.push(f);
                }
            }
        }
        Self {
            devices,
            last_input: Instant::now(),
        }
    }
}

impl InputIdle for Evdev {
    fn idle_secs(&mut self) -> Result<Option<u64>, SourceError> {
        let mut buf = [0u8; 4096];
        for dev in &mut self.devices {
            // Drain what queued up since the last sample.
            while let Ok(n) = dev.read(&mut buf) {
                if n == 0 {
                    break;
                }
                self.last_input = Instant::now();
            }
        }
        Ok(Some(self.last_input.elapsed().as_secs()))
    }

    fn kind(&self) -> &'static str {
        "evdev"
    }
}

/// No input source: a headless machine.
pub struct NoInput;

impl InputIdle for NoInput {
    fn idle_secs(&mut self) -> Result<Option<u64>, SourceError> {
        Ok(None)
    }

    fn kind(&self) -> &'static str {
        "none"
    }
}

#[derive(Default)]
pub struct NetDev {
    prev: Option<(u64, Instant)>,
}

impl NetworkRate for NetDev {
    fn bytes_per_sec(&mut self) -> Result<Option<u64>, SourceError> {
        let text = read(Path::new("/proc/net/dev"))?;
        let bytes = parse_net_dev(&text).ok_or_else(|| malformed("/proc/net/dev"))?;
        let now = Instant::now();
        let Some((pbytes, pat)) = self.prev.replace((bytes, now)) else {
            return Ok(None);
        };
        let secs = now.duration_since(pat).as_secs_f64();
        if secs <= 0.0 {
            return Ok(None);
        }
        Ok(Some((bytes.saturating_sub(pbytes) as f64 / secs) as u64))
    }
}

pub struct Meminfo;

impl MemoryLoad for Meminfo {
    fn memory(&mut self) -> Result<MemoryReading, SourceError> {
        let text = read(Path::new("/proc/meminfo"))?;
        let used = parse_meminfo(&text).ok_or_else(|| malformed("/proc/meminfo"))?;
        // PSI needs CONFIG_PSI (and psi=1 on some distributions): optional.
        let stall = std::fs::read_to_string("/proc/pressure/memory")
            .ok()
            .and_then(|t| parse_psi_some_avg10(&t));
        Ok(MemoryReading { used, stall })
    }
}

/// `/sys/class/power_supply/*`: mains when any `Mains` or `USB` supply is
/// online (or a battery reports charging/full), else the lowest battery
/// `capacity`, else unknown (no battery).
pub struct PowerSupplyDir(pub PathBuf);

impl PowerSupply for PowerSupplyDir {
    fn power(&mut self) -> Result<Power, SourceError> {
        let Ok(entries) = std::fs::read_dir(&self.0) else {
            return Ok(Power::Unknown);
        };
        let attr = |dir: &Path, name: &str| {
            std::fs::read_to_string(dir.join(name))
                .map(|s| s.trim().to_owned())
                .unwrap_or_default()
        };
        let mut mains = false;
        let mut lowest: Option<u8> = None;
        for e in entries.flatten() {
            let dir = e.path();
            match attr(&dir, "type").as_str() {
                "Mains" | "USB" => mains |= attr(&dir, "online") == "1",
                "Battery" => {
                    if matches!(attr(&dir, "status").as_str(), "Charging" | "Full") {
                        mains = true;
                    }
                    if let Ok(c) = attr(&dir, "capacity").parse::<u8>() {
                        lowest = Some(lowest.map_or(c, |l| l.min(c)));
                    }
                }
                _ => {}
            }
        }
        Ok(match (mains, lowest) {
            (true, _) => Power::Mains,
            (false, Some(percent)) => Power::Battery { percent },
            (false, None) => Power::Unknown,
        })
    }
}

/// Matches `/proc/*/comm` (the kernel keeps 15 bytes of the name) against
/// the wanted names, case-insensitively.
pub struct ProcComm;

impl Programs for ProcComm {
    fn running(&mut self, wanted: &[String]) -> Result<Vec<String>, SourceError> {
        let entries = std::fs::read_dir("/proc").map_err(|source| SourceError::Read {
            path: "/proc".into(),
            source,
        })?;
        let short = |s: &str| s.chars().take(15).collect::<String>().to_lowercase();
        let wanted_short: Vec<String> = wanted.iter().map(|w| short(w)).collect();
        let mut found = Vec::new();
        for e in entries.flatten() {
            let name = e.file_name();
            if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            // A process may exit between listing and reading: skip it.
            let Ok(comm) = std::fs::read_to_string(e.path().join("comm")) else {
                continue;
            };
            let comm = short(comm.trim_end_matches('\n'));
            for (w, ws) in wanted.iter().zip(&wanted_short) {
                if *ws == comm && !found.contains(w) {
                    found.push(w.clone());
                }
            }
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two CPU sources sampled at the same moments, one told to exclude a
    /// spinning child process and one not, differ by about its share.
    #[test]
    fn cpu_source_excludes_the_given_processes() {
        let mut child = std::process::Command::new("sh")
            .args(["-c", "while :; do :; done"])
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let mut told = ProcStat::excluding(move || vec![pid]);
        let mut blind = ProcStat::excluding(Vec::new);
        let ticks = || {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|t| parse_pid_stat_cpu(&t))
                .unwrap()
        };
        assert_eq!(told.busy_percent().unwrap(), None);
        assert_eq!(blind.busy_percent().unwrap(), None);
        let (before, start) = (ticks(), Instant::now());
        // Wait until the child has run for 20 ticks (bounded).
        while ticks() < before + 20 {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "the child did not run"
            );
            std::thread::yield_now();
        }
        let t = told.busy_percent().unwrap().expect("ticks passed");
        let b = blind.busy_percent().unwrap().expect("ticks passed");
        let _ = child.kill();
        let _ = child.wait();
        eprintln!("told {t:.1}%, blind {b:.1}%");
        assert!(
            b - t > 0.5,
            "excluding the child changed nothing: {b:.1}% vs {t:.1}%"
        );
        assert!(t >= 0.0 && b <= 100.0);
    }
}
