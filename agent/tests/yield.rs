//! Yield and resume with a real sandboxed task: readings injected into the
//! real idle monitor turn the machine busy and idle again; the yielder
//! freezes and thaws the task, the frozen task accrues no CPU time, and the
//! journal records both transitions.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use askee_agent::activity::Activity;
use askee_agent::idle::{
    CpuLoad, IdleMonitor, InputIdle, MemoryLoad, MemoryReading, NetworkRate, PowerSupply, Programs,
    Sensors, SourceError,
};
use askee_agent::journal::{self, Journal};
use askee_agent::yielder::{self, TaskSet};
use askee_core::idle::{IdleThresholds, Power};
use askee_sandbox::{TaskControl, TaskOutcome};

/// Readings the test sets: a quiet host whose input source says "used just
/// now" while `busy` is set.
#[derive(Clone, Default)]
struct Injected {
    busy: Arc<Mutex<bool>>,
}

impl Injected {
    fn set_busy(&self, b: bool) {
        *self.busy.lock().unwrap() = b;
    }
}

impl CpuLoad for Injected {
    fn busy_percent(&mut self) -> Result<Option<f64>, SourceError> {
        Ok(Some(1.0))
    }
}
impl InputIdle for Injected {
    fn idle_secs(&mut self) -> Result<Option<u64>, SourceError> {
        Ok(Some(if *self.busy.lock().unwrap() { 0 } else { 3_600 }))
    }
    fn kind(&self) -> &'static str {
        "injected"
    }
}
impl NetworkRate for Injected {
    fn bytes_per_sec(&mut self) -> Result<Option<u64>, SourceError> {
        Ok(Some(0))
    }
}
impl MemoryLoad for Injected {
    fn memory(&mut self) -> Result<MemoryReading, SourceError> {
        Ok(MemoryReading {
            used: 0.2,
            stall: Some(0.0),
        })
    }
}
impl PowerSupply for Injected {
    fn power(&mut self) -> Result<Power, SourceError> {
        Ok(Power::Mains)
    }
}
impl Programs for Injected {
    fn running(&mut self, _wanted: &[String]) -> Result<Vec<String>, SourceError> {
        Ok(Vec::new())
    }
}

/// Nanoseconds on CPU of every process of the task (`/proc/<pid>/schedstat`).
fn task_cpu_ns(ctl: &TaskControl) -> u64 {
    ctl.pids()
        .iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out waiting for {what}"
        );
        std::thread::yield_now();
    }
    start.elapsed()
}

/// CPU the task used over a measurement window of `window`.
fn cpu_over(ctl: &TaskControl, window: Duration) -> u64 {
    let before = task_cpu_ns(ctl);
    // A measurement window, not synchronisation.
    std::thread::sleep(window);
    task_cpu_ns(ctl).saturating_sub(before)
}

#[test]
fn busy_freezes_and_idle_thaws_a_sandboxed_task() {
    assert!(
        askee_sandbox::probe().cgroup_enforcing_version.is_some(),
        "this test needs an enforcing cgroup (run as root)"
    );
    let dir = tempfile::tempdir().unwrap();
    let (sandbox, spec) = common::spinning(dir.path());
    let running = sandbox.spawn(&spec).unwrap();
    let ctl = running.control();
    let waiter = std::thread::spawn(move || running.wait());
    wait_for("task processes", || ctl.pids().len() >= 2);

    let journal = Arc::new(Journal::open(&dir.path().join("journal.jsonl")).unwrap());
    let tasks = TaskSet::new();
    let injected = Injected::default();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (activity, yielder) = rt.block_on(async {
        let thresholds = IdleThresholds {
            cpu_quiet_secs: 0,
            network_quiet_secs: 0,
            ..IdleThresholds::default()
        };
        let sensors = Sensors {
            cpu: Box::new(injected.clone()),
            input: Box::new(injected.clone()),
            network: Box::new(injected.clone()),
            memory: Box::new(injected.clone()),
            power: Box::new(injected.clone()),
            programs: Box::new(injected.clone()),
            exclusive: Vec::new(),
        };
        let rx = IdleMonitor {
            sensors,
            thresholds,
            interval: Duration::from_millis(10),
        }
        .spawn();
        let y = yielder::spawn(rx.clone(), tasks.clone(), journal.clone());
        (rx, y)
    });
    let is_idle = || activity.borrow().is_idle();
    wait_for("idle", is_idle);
    tasks.insert("spin", ctl.clone());

    // The task runs at SCHED_IDLE, so on a loaded machine it may wait for
    // CPU: wait for it to run rather than expect a share in a fixed window.
    let runs = |ctl: &TaskControl| {
        let before = task_cpu_ns(ctl);
        wait_for("the task to use cpu", || task_cpu_ns(ctl) > before);
    };
    runs(&ctl);
    assert!(!ctl.is_frozen().unwrap());

    injected.set_busy(true);
    let took = wait_for("frozen", || ctl.is_frozen().unwrap());
    eprintln!("frozen {took:?} after the reading turned busy");
    assert!(
        matches!(&*activity.borrow(), Activity::Busy { reason } if reason.contains("keyboard"))
    );
    // The window is long against the scheduler's tick; the same task is
    // shown to run before and after, so zero growth means frozen.
    let frozen_ns = cpu_over(&ctl, Duration::from_millis(300));
    assert_eq!(frozen_ns, 0, "a frozen task used cpu");

    injected.set_busy(false);
    wait_for("thawed", || !ctl.is_frozen().unwrap());
    runs(&ctl);

    // A task that starts while the machine is busy is frozen as soon as the
    // work loop adds it.
    injected.set_busy(true);
    wait_for("frozen again", || ctl.is_frozen().unwrap());
    let late = sandbox.spawn(&spec).unwrap();
    let late_ctl = late.control();
    wait_for("late task processes", || late_ctl.pids().len() >= 2);
    assert!(!late_ctl.is_frozen().unwrap());
    tasks.insert("late", late_ctl.clone());
    wait_for("late task frozen", || late_ctl.is_frozen().unwrap());
    injected.set_busy(false);
    wait_for("both thawed", || {
        !ctl.is_frozen().unwrap() && !late_ctl.is_frozen().unwrap()
    });
    late_ctl.terminate();
    let _ = late.wait();
    tasks.remove("late");

    ctl.terminate();
    let (outcome, _) = waiter.join().unwrap().unwrap();
    assert!(
        matches!(outcome, TaskOutcome::Terminated { .. }),
        "{outcome:?}"
    );
    tasks.remove("spin");
    drop(activity);
    yielder.abort();
    drop(rt);

    let entries = journal::read(journal.path()).unwrap();
    assert!(journal::verify(&entries).is_empty());
    let kinds: Vec<&str> = entries.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "task.yield",
            "task.resume",
            "task.yield",
            "task.yield",
            "task.resume",
            "task.resume"
        ]
    );
    assert_eq!(entries[3].data["task"], "late");
    assert_eq!(entries[0].data["task"], "spin");
    assert!(
        entries[0].data["reason"]
            .as_str()
            .unwrap()
            .contains("keyboard")
    );
}
