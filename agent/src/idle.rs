//! Idle detection: measure the host, decide with the pure
//! [`askee_core::idle::assess`], publish the verdict as an [`Activity`].
//!
//! Every measurement is a small trait so that a test (or another platform)
//! can supply its own readings; [`Sensors::host`] builds the real ones for
//! this platform from `idle/sys/*.rs`. [`IdleMonitor::spawn`] samples them on
//! a tokio interval and publishes on a `tokio::sync::watch` channel.

use std::time::{Duration, Instant};

use askee_core::idle::{History, IdleThresholds, Power, Reading, assess};
use tokio::sync::watch;

use crate::activity::Activity;
use crate::yielder::TaskSet;

pub mod procfs;
mod sys;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is malformed: {detail}")]
    Malformed { path: String, detail: String },
    #[error("cannot ask logind over d-bus: {detail}")]
    Logind { detail: String },
    #[error("idle detection is not supported on this platform ({what})")]
    Unsupported { what: &'static str },
}

/// CPU use of the whole machine since the previous call, in percent, without
/// the agent and its tasks. `None` until there is a previous call.
pub trait CpuLoad: Send {
    fn busy_percent(&mut self) -> Result<Option<f64>, SourceError>;
}

/// Seconds since the last user input; `None` when the machine has no input
/// source at all.
pub trait InputIdle: Send {
    fn idle_secs(&mut self) -> Result<Option<u64>, SourceError>;
    /// Which mechanism answers (`logind`, `evdev`, `none`), for the report.
    fn kind(&self) -> &'static str;
}

/// Network traffic since the previous call, bytes per second over all
/// non-loopback interfaces. `None` until there is a previous call.
pub trait NetworkRate: Send {
    fn bytes_per_sec(&mut self) -> Result<Option<u64>, SourceError>;
}

/// Memory in use (0..1) and the PSI stall fraction (0..1) when the kernel has PSI.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MemoryReading {
    pub used: f64,
    pub stall: Option<f64>,
}

pub trait MemoryLoad: Send {
    fn memory(&mut self) -> Result<MemoryReading, SourceError>;
}

pub trait PowerSupply: Send {
    fn power(&mut self) -> Result<Power, SourceError>;
}

/// Names of the running programs among `wanted`.
pub trait Programs: Send {
    fn running(&mut self, wanted: &[String]) -> Result<Vec<String>, SourceError>;
}

/// The measurements of one host.
pub struct Sensors {
    pub cpu: Box<dyn CpuLoad>,
    pub input: Box<dyn InputIdle>,
    pub network: Box<dyn NetworkRate>,
    pub memory: Box<dyn MemoryLoad>,
    pub power: Box<dyn PowerSupply>,
    pub programs: Box<dyn Programs>,
    /// Programs whose presence pauses work (e.g. games, video calls).
    pub exclusive: Vec<String>,
}

/// What [`Sensors::read`] found: the reading and the sources that failed.
#[derive(Debug)]
pub struct Sample {
    pub reading: Reading,
    pub errors: Vec<SourceFailure>,
}

/// A source that could not be read in a sample.
#[derive(Debug)]
pub struct SourceFailure {
    /// Which source (`cpu`, `input`, `network`, `memory`, `power`, `programs`).
    pub source: &'static str,
    pub error: SourceError,
}

impl Sensors {
    /// This platform's sources. `tasks` are the agent's running tasks, whose
    /// CPU use (like the agent's own) does not count against idleness.
    pub fn host(tasks: TaskSet) -> Result<Self, SourceError> {
        sys::host_sensors(tasks)
    }

    /// Reads every source once. A failing source gives `None` for its field
    /// (the decision fails closed where that matters) and is listed in
    /// `errors`; a failing power or program source counts as unknown power and
    /// no exclusive program, and is listed too.
    pub fn read(&mut self, started: Instant) -> Sample {
        let mut errors = Vec::new();
        let (cpu_percent, input_idle_secs) = self.read_activity(&mut errors);
        let e = &mut errors;
        let network_bytes_per_sec = recorded(e, "network", self.network.bytes_per_sec()).flatten();
        let memory = recorded(e, "memory", self.memory.memory());
        let power = recorded(e, "power", self.power.power()).unwrap_or(Power::Unknown);
        let exclusive_running = if self.exclusive.is_empty() {
            Vec::new()
        } else {
            recorded(e, "programs", self.programs.running(&self.exclusive)).unwrap_or_default()
        };
        Sample {
            reading: Reading {
                at_ms: started.elapsed().as_millis() as u64,
                cpu_percent,
                input_idle_secs,
                network_bytes_per_sec,
                memory_used: memory.map(|m| m.used),
                memory_stall: memory.and_then(|m| m.stall),
                power,
                exclusive_running,
            },
            errors,
        }
    }

    /// CPU use and input idleness, the signs of the volunteer coming back; a
    /// failing input source counts as recent input (fail closed).
    fn read_activity(&mut self, errors: &mut Vec<SourceFailure>) -> (Option<f64>, Option<u64>) {
        let cpu_percent = recorded(errors, "cpu", self.cpu.busy_percent()).flatten();
        let input_idle_secs = recorded(errors, "input", self.input.idle_secs()).unwrap_or(Some(0));
        (cpu_percent, input_idle_secs)
    }

    /// Reads only the sources that show the volunteer coming back (CPU and
    /// input) and keeps the others from `previous`: cheap enough to run every
    /// 100 ms, where a full read (the exclusive-program scan reads every
    /// `/proc/*/comm`) is not.
    pub fn read_fast(&mut self, started: Instant, previous: &Reading) -> Sample {
        let mut errors = Vec::new();
        let (cpu_percent, input_idle_secs) = self.read_activity(&mut errors);
        Sample {
            reading: Reading {
                at_ms: started.elapsed().as_millis() as u64,
                cpu_percent,
                input_idle_secs,
                ..previous.clone()
            },
            errors,
        }
    }
}

/// The value of a source, or `None` with its error recorded under `what`.
fn recorded<T>(
    errors: &mut Vec<SourceFailure>,
    what: &'static str,
    r: Result<T, SourceError>,
) -> Option<T> {
    r.map_err(|error| {
        errors.push(SourceFailure {
            source: what,
            error,
        })
    })
    .ok()
}

/// How often the slow sources (network, memory, power, exclusive programs)
/// are read when the monitor samples more often than this.
pub const SLOW_SOURCES_INTERVAL: Duration = Duration::from_secs(1);

/// Samples [`Sensors`] every `interval` and publishes the verdict. CPU and input
/// are read at every sample; the slow sources once per
/// [`SLOW_SOURCES_INTERVAL`] (every sample when `interval` is longer).
pub struct IdleMonitor {
    pub sensors: Sensors,
    pub thresholds: IdleThresholds,
    pub interval: Duration,
}

/// The first value on the channel, before any sample.
pub const STARTING: &str = "starting the idle monitor";

impl IdleMonitor {
    /// Starts sampling on the current tokio runtime. The task ends when every
    /// receiver is dropped. A reading whose input source fails counts as
    /// recent input (fail closed).
    pub fn spawn(self) -> watch::Receiver<Activity> {
        let (tx, rx) = watch::channel(Activity::Busy {
            reason: STARTING.into(),
        });
        tokio::spawn(self.run(tx, None));
        rx
    }

    /// Starts sampling like [`spawn`](Self::spawn), but as a monitor that
    /// has already watched the machine stay idle for `idle_for`: the quiet
    /// periods (CPU, network) are taken to have begun `idle_for` ago and the
    /// first value on the channel is [`Activity::Idle`]. The sensors are
    /// read once before the first sample (and that reading discarded) so the
    /// rate sources (CPU, network) have a baseline, as they would after a
    /// long watch; every later reading is real and decides as usual, so the
    /// first sample whose reading is busy turns the channel busy.
    ///
    /// Used to measure what a volunteer feels on coming back to a machine
    /// whose tasks run (`validate-non-interference`).
    pub fn spawn_idle_for(self, idle_for: Duration) -> watch::Receiver<Activity> {
        let (tx, rx) = watch::channel(Activity::Idle);
        tokio::spawn(self.run(tx, Some(idle_for)));
        rx
    }

    async fn run(self, tx: watch::Sender<Activity>, idle_for: Option<Duration>) {
        let IdleMonitor {
            mut sensors,
            thresholds,
            interval,
        } = self;
        let started = Instant::now();
        let mut history = History::default();
        // The monitor's clock reads `offset_ms` at `started`.
        let mut offset_ms = 0;
        let mut ticker = tokio::time::interval(interval);
        if let Some(idle_for) = idle_for {
            offset_ms = idle_for.as_millis() as u64;
            history = History {
                cpu_quiet_since_ms: Some(0),
                network_quiet_since_ms: Some(0),
            };
            let primed = tokio::task::spawn_blocking(move || {
                let _baseline = sensors.read(started);
                sensors
            })
            .await;
            let Ok(primed) = primed else {
                tracing::error!("idle sensors panicked; stopping the monitor");
                tx.send_replace(Activity::Busy {
                    reason: "the idle monitor stopped".into(),
                });
                return;
            };
            sensors = primed;
            // The first sample one interval after the baseline, not at once.
            ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        }
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut sensors = Some(sensors);
        let mut reported_errors = false;
        // Every `slow_every`-th sample reads every source; the others only
        // the fast ones (a count, not a clock, so it is exact under test).
        let slow_every = (SLOW_SOURCES_INTERVAL.as_millis() / interval.as_millis().max(1)).max(1);
        let mut samples: u128 = 0;
        let mut full: Option<Reading> = None;
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = tx.closed() => return,
            }
            let Some(mut s) = sensors.take() else { return };
            let previous = full.clone().filter(|_| !samples.is_multiple_of(slow_every));
            samples += 1;
            let joined = tokio::task::spawn_blocking(move || {
                let sample = match &previous {
                    Some(p) => s.read_fast(started, p),
                    None => s.read(started),
                };
                (s, sample, previous.is_none())
            })
            .await;
            let Ok((s, mut sample, was_full)) = joined else {
                tracing::error!("idle sensors panicked; stopping the monitor");
                tx.send_replace(Activity::Busy {
                    reason: "the idle monitor stopped".into(),
                });
                return;
            };
            sensors = Some(s);
            sample.reading.at_ms += offset_ms;
            if was_full {
                full = Some(sample.reading.clone());
            }
            if !sample.errors.is_empty() && !reported_errors {
                for failure in &sample.errors {
                    tracing::warn!(source = failure.source, error = %failure.error, "idle source unavailable");
                }
                reported_errors = true;
            }
            let (next, verdict) = assess(&thresholds, &history, &sample.reading);
            history = next;
            let activity = match verdict {
                Ok(()) => Activity::Idle,
                Err(busy) => Activity::Busy {
                    reason: busy.to_string(),
                },
            };
            tx.send_if_modified(|cur| {
                if *cur == activity {
                    false
                } else {
                    tracing::debug!(?activity, "activity changed");
                    *cur = activity;
                    true
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[derive(Clone, Default)]
    struct Calls {
        fast: Arc<AtomicUsize>,
        slow: Arc<AtomicUsize>,
    }

    struct Cpu(Calls, tokio::sync::mpsc::UnboundedSender<()>);
    impl CpuLoad for Cpu {
        fn busy_percent(&mut self) -> Result<Option<f64>, SourceError> {
            self.0.fast.fetch_add(1, Ordering::SeqCst);
            let _ = self.1.send(());
            Ok(Some(1.0))
        }
    }
    struct Input;
    impl InputIdle for Input {
        fn idle_secs(&mut self) -> Result<Option<u64>, SourceError> {
            Ok(Some(10_000))
        }
        fn kind(&self) -> &'static str {
            "test"
        }
    }
    struct Slow(Calls);
    impl NetworkRate for Slow {
        fn bytes_per_sec(&mut self) -> Result<Option<u64>, SourceError> {
            self.0.slow.fetch_add(1, Ordering::SeqCst);
            Ok(Some(0))
        }
    }
    impl MemoryLoad for Slow {
        fn memory(&mut self) -> Result<MemoryReading, SourceError> {
            Ok(MemoryReading {
                used: 0.1,
                stall: Some(0.0),
            })
        }
    }
    impl PowerSupply for Slow {
        fn power(&mut self) -> Result<Power, SourceError> {
            Ok(Power::Mains)
        }
    }
    impl Programs for Slow {
        fn running(&mut self, _wanted: &[String]) -> Result<Vec<String>, SourceError> {
            self.0.slow.fetch_add(1, Ordering::SeqCst);
            Ok(Vec::new())
        }
    }

    /// A CPU source whose value the test sets; it signals every read.
    struct SetCpu(
        Arc<std::sync::Mutex<f64>>,
        tokio::sync::mpsc::UnboundedSender<()>,
    );
    impl CpuLoad for SetCpu {
        fn busy_percent(&mut self) -> Result<Option<f64>, SourceError> {
            let _ = self.1.send(());
            Ok(Some(*self.0.lock().unwrap()))
        }
    }

    /// A monitor started as after a long idle spell says idle at once and
    /// stays idle on quiet readings (the quiet periods are not restarted),
    /// and the first busy reading turns it busy.
    #[tokio::test]
    async fn spawn_idle_for_starts_idle_and_turns_busy_on_a_busy_reading() {
        let cpu = Arc::new(std::sync::Mutex::new(1.0));
        let (tx, mut reads) = tokio::sync::mpsc::unbounded_channel();
        let calls = Calls::default();
        let sensors = Sensors {
            cpu: Box::new(SetCpu(cpu.clone(), tx)),
            input: Box::new(Input),
            network: Box::new(Slow(calls.clone())),
            memory: Box::new(Slow(calls.clone())),
            power: Box::new(Slow(calls.clone())),
            programs: Box::new(Slow(calls)),
            exclusive: Vec::new(),
        };
        let mut rx = IdleMonitor {
            sensors,
            thresholds: IdleThresholds::default(),
            interval: Duration::from_millis(10),
        }
        .spawn_idle_for(Duration::from_secs(300));
        assert_eq!(*rx.borrow_and_update(), Activity::Idle);
        // The baseline read, then samples; the 6th read starts only after the
        // 5th reading was assessed.
        for _ in 0..6 {
            reads.recv().await.expect("the monitor samples");
        }
        assert!(!rx.has_changed().unwrap(), "{:?}", *rx.borrow());
        *cpu.lock().unwrap() = 90.0;
        rx.changed().await.expect("the monitor runs");
        assert!(
            matches!(&*rx.borrow(), Activity::Busy { reason } if reason.contains("CPU 90%")),
            "{:?}",
            *rx.borrow()
        );
    }

    /// Sampling every 10 ms reads CPU and input every time, and the network,
    /// memory, power and the exclusive-program scan every 100th time.
    #[tokio::test]
    async fn slow_sources_are_read_once_per_slow_interval() {
        let calls = Calls::default();
        let (tx, mut ticks) = tokio::sync::mpsc::unbounded_channel();
        let sensors = Sensors {
            cpu: Box::new(Cpu(calls.clone(), tx)),
            input: Box::new(Input),
            network: Box::new(Slow(calls.clone())),
            memory: Box::new(Slow(calls.clone())),
            power: Box::new(Slow(calls.clone())),
            programs: Box::new(Slow(calls.clone())),
            exclusive: vec!["steam".into()],
        };
        let rx = IdleMonitor {
            sensors,
            thresholds: IdleThresholds::default(),
            interval: Duration::from_millis(10),
        }
        .spawn();
        // The 202nd sample starts only once the 201st has read every source.
        for _ in 0..202 {
            ticks.recv().await.expect("the monitor samples");
        }
        drop(rx);
        let fast = calls.fast.load(Ordering::SeqCst);
        // Samples 1, 101 and 201 were full: network and programs once each.
        let slow = calls.slow.load(Ordering::SeqCst);
        assert!(fast >= 202, "{fast}");
        assert_eq!(slow, 6, "{slow} slow reads for {fast} samples");
    }
}
