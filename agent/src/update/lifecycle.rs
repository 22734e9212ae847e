//! The update across daemon starts: rollback of an unconfirmed release,
//! confirmation, restart, the daemon lock and the scheduled check.

use super::*;

/// What a daemon start decided about a pending release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartVerdict {
    /// Nothing pending, or the pending binary gets its first start.
    Continue,
    /// The pending binary started before without confirming: the previous
    /// binary is back in place; restart into it.
    RolledBack,
}

/// Called first when the daemon starts (`layout`: where the running agent
/// is installed, none when it runs outside a versioned layout).
pub fn on_start(
    home: &Path,
    layout: Option<&Layout>,
    journal: &Journal,
) -> Result<StartVerdict, UpdateError> {
    let mut state = UpdateState::load(home)?;
    let Some(mut pending) = state.pending.clone() else {
        return Ok(StartVerdict::Continue);
    };
    let running = match layout {
        Some(l) => Some(l.current()?),
        None => None,
    };
    let (Some(layout), Some(previous)) = (layout, pending.previous.clone()) else {
        state.pending = None;
        state.save(home)?;
        return Ok(StartVerdict::Continue);
    };
    if running.as_deref() != Some(pending.version.as_str()) {
        // Replaced by other means (the installer): nothing to confirm.
        state.pending = None;
        state.save(home)?;
        return Ok(StartVerdict::Continue);
    }
    pending.starts += 1;
    if pending.starts < 2 {
        state.pending = Some(pending);
        state.save(home)?;
        return Ok(StartVerdict::Continue);
    }
    layout
        .switch(&previous)
        .map_err(|e| UpdateError::Rollback {
            prev: layout.versions().join(&previous),
            binary: layout.binary(),
            source: std::io::Error::other(e.to_string()),
        })?;
    if !state.refused.contains(&pending.name) {
        state.refused.push(pending.name.clone());
    }
    state.pending = None;
    state.save(home)?;
    journal.append(
        "update.rolled_back",
        json!({"target": pending.name, "reason": "the new release started without confirming a successful start",
               "binary": layout.binary(), "current": layout.versions().join(&previous)}),
    )?;
    Ok(StartVerdict::RolledBack)
}

/// Called once the daemon has started successfully: the pending release
/// becomes the installed one.
pub fn confirm(home: &Path, layout: Option<&Layout>, journal: &Journal) -> Result<(), UpdateError> {
    let mut state = UpdateState::load(home)?;
    let Some(p) = state.pending.take() else {
        return Ok(());
    };
    let running = match layout {
        Some(l) => Some(l.current()?),
        None => None,
    };
    if running.as_deref() != Some(p.version.as_str()) {
        state.save(home)?;
        return Ok(());
    }
    journal.append(
        "update.confirmed",
        json!({"target": p.name, "version": p.version, "pid": std::process::id()}),
    )?;
    state.installed = Some(Installed {
        name: p.name,
        version: p.version,
        sha256: p.sha256,
        worker_sha256: p.worker_sha256,
    });
    state.save(home)
}

/// Replaces this process with `binary` and the same arguments (the pid
/// stays, so systemd sees one service). Returns only on failure.
pub fn restart(binary: &Path, args: &[OsString]) -> UpdateError {
    sys::exec(binary, args)
}

/// The home's daemon lock: held by `run` for its lifetime, tried by
/// `update apply`. Released on exit and on exec (close-on-exec).
pub struct DaemonLock {
    _file: std::fs::File,
}

impl DaemonLock {
    pub fn acquire(home: &Path) -> Result<Self, UpdateError> {
        let path = home.join(LOCK_FILE);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| UpdateError::Write {
                path: path.clone(),
                source,
            })?;
        match file.try_lock() {
            Ok(()) => Ok(Self { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => {
                Err(UpdateError::DaemonRunning { lock: path })
            }
            Err(std::fs::TryLockError::Error(source)) => Err(UpdateError::Write { path, source }),
        }
    }
}

/// The daemon's scheduled check: every `interval`, check; when a release is
/// available, download it, then take every work slot (`slots`, waiting for
/// running tasks to finish and keeping new ones from starting), install,
/// and restart into the new binary. Failures are journalled and retried at
/// the next interval.
pub async fn schedule(
    updater: Updater,
    interval: Duration,
    slots: std::sync::Arc<tokio::sync::Semaphore>,
    slot_count: u32,
    args: Vec<OsString>,
) {
    loop {
        tokio::time::sleep(interval).await;
        let (found, repo) = match updater.check().await {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "update check failed");
                continue;
            }
        };
        let (Check::Available { release, .. }, Some(repo)) = (found, repo) else {
            continue;
        };
        let staged = match updater.download(&repo, &release).await {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "update download failed");
                continue;
            }
        };
        // Updates never happen while a task runs: hold every slot.
        let Ok(permits) = slots.clone().acquire_many_owned(slot_count).await else {
            return;
        };
        if let Err(e) = updater.journal("update.quiesced", json!({"target": release.name})) {
            tracing::warn!(error = %e, "cannot journal");
        }
        match updater.install(&staged, &release).await {
            Ok(()) => {
                let binary = updater.settings.layout.binary();
                let _ = updater.journal(
                    "update.restart",
                    json!({"target": release.name, "binary": binary}),
                );
                let e = restart(&binary, &args);
                tracing::error!(error = %e, "cannot restart after the update");
                let _ = updater.journal("update.restart_failed", json!({"error": e.to_string()}));
            }
            Err(e) => tracing::warn!(error = %e, "update not installed"),
        }
        drop(permits);
    }
}
