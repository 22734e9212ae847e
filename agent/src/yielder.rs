//! Yield and resume: the running tasks are frozen (cgroup freezer) as soon as
//! the idle monitor says the machine is busy and thawed when it is idle
//! again. Each transition is journalled (`task.yield`, `task.resume`).
//!
//! The yielder reacts to the watch channel directly (no polling), and freezes
//! every task before it writes the journal, so the journal's fsync does not
//! delay the freeze.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use askee_sandbox::TaskControl;
use serde_json::json;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::activity::Activity;
use crate::journal::Journal;

/// The agent's running tasks, shared by the work loop (which adds and
/// removes them), the yielder (which freezes them) and the idle monitor's CPU
/// source (which does not count their CPU use). Cheap to clone.
#[derive(Clone, Default)]
pub struct TaskSet {
    tasks: Arc<Mutex<BTreeMap<String, TaskControl>>>,
    changed: Arc<Notify>,
}

impl TaskSet {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, TaskControl>> {
        self.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a running task; the yielder freezes it at once if the machine is busy.
    pub fn insert(&self, id: impl Into<String>, control: TaskControl) {
        self.lock().insert(id.into(), control);
        self.changed.notify_one();
    }

    pub fn remove(&self, id: &str) -> Option<TaskControl> {
        let c = self.lock().remove(id);
        self.changed.notify_one();
        c
    }

    pub fn controls(&self) -> Vec<(String, TaskControl)> {
        self.lock()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Host pids of every task's processes.
    pub fn pids(&self) -> Vec<i32> {
        self.lock().values().flat_map(|c| c.pids()).collect()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Starts the yielder on the current tokio runtime. It ends when the
/// activity channel's sender is dropped, thawing whatever it froze.
pub fn spawn(
    activity: watch::Receiver<Activity>,
    tasks: TaskSet,
    journal: Arc<Journal>,
) -> JoinHandle<()> {
    tokio::spawn(run(activity, tasks, journal))
}

async fn run(mut activity: watch::Receiver<Activity>, tasks: TaskSet, journal: Arc<Journal>) {
    let mut frozen: BTreeSet<String> = BTreeSet::new();
    loop {
        let now = activity.borrow_and_update().clone();
        apply(&now, &tasks, &journal, &mut frozen);
        tokio::select! {
            changed = activity.changed() => if changed.is_err() { break },
            _ = tasks.changed.notified() => {}
        }
    }
    apply(&Activity::Idle, &tasks, &journal, &mut frozen);
}

fn apply(now: &Activity, tasks: &TaskSet, journal: &Journal, frozen: &mut BTreeSet<String>) {
    let controls = tasks.controls();
    frozen.retain(|id| controls.iter().any(|(k, _)| k == id));
    let mut done = Vec::new();
    match now {
        Activity::Busy { reason } => {
            for (id, ctl) in &controls {
                if frozen.contains(id) {
                    continue;
                }
                match ctl.freeze() {
                    Ok(()) => {
                        frozen.insert(id.clone());
                        done.push(("task.yield", json!({ "task": id, "reason": reason })));
                    }
                    Err(e) => tracing::error!(task = %id, error = %e, "cannot freeze task"),
                }
            }
        }
        Activity::Idle => {
            for (id, ctl) in &controls {
                if !frozen.contains(id) {
                    continue;
                }
                match ctl.thaw() {
                    Ok(()) => {
                        frozen.remove(id);
                        done.push(("task.resume", json!({ "task": id })));
                    }
                    Err(e) => tracing::error!(task = %id, error = %e, "cannot thaw task"),
                }
            }
        }
    }
    for (kind, data) in done {
        if let Err(e) = journal.append(kind, data) {
            tracing::error!(error = %e, "cannot journal {kind}");
        }
    }
}
