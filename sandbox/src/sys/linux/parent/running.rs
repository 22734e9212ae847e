//! A running task: its output drained, the wall-clock limit kept, its end
//! classified.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::super::contract::receive_fds_on;
use super::super::errno;
use super::Control;
use super::process::Worker;
use super::spares::{NetnsFromTask, end_cgroup, refill_if_wanted};
use crate::SandboxError;
use crate::cgroup::TaskCgroup;
use crate::proto::{AppliedConfinement, WorkerReport};
use crate::types::{KillReason, TaskOutcome, Usage, WasmEnd, WasmRun};

/// A task started by [`spawn`].
pub struct Running {
    pub(super) worker: PathBuf,
    /// The request's socket, read once the task has ended for the mount
    /// namespace a spare handed back (`hand_over_namespaces`).
    pub(super) request: Option<UnixStream>,
    pub(super) child: Worker,
    pub(super) control: Arc<Control>,
    pub(super) started: Instant,
    pub(super) wall: Duration,
    pub(super) cpu_time: Duration,
    /// The worker's stdout, stderr and report pipes, drained by `wait`.
    pub(super) output: Output,
}

/// The worker's three output pipes, read by the waiting thread itself (one
/// `poll` over them and the worker's pidfd, no reader threads to start and to
/// wake and join at the end of every task).
pub(super) struct Output {
    /// stdout, stderr, reports; `None` once at end of file.
    pub(super) files: [Option<File>; 3],
    pub(super) bufs: [Vec<u8>; 3],
    /// How much of each is kept: the task's stdout limit, 64 KiB of stderr, all
    /// reports; beyond a cap the pipe is still drained so the writer does not
    /// block before it dies.
    pub(super) caps: [usize; 3],
}

/// stdout's index in [`Output`].
pub(super) const STDOUT: usize = 0;

impl Output {
    pub(super) fn open(&self) -> bool {
        self.files.iter().any(Option::is_some)
    }

    /// One read from pipe `i` (readable or at end of file); false when the
    /// read went past its cap.
    pub(super) fn read(&mut self, i: usize, scratch: &mut [u8]) -> bool {
        let Some(f) = &mut self.files[i] else {
            return true;
        };
        match f.read(scratch) {
            Ok(0) => self.files[i] = None,
            Ok(n) => {
                let room = self.caps[i].saturating_sub(self.bufs[i].len());
                self.bufs[i].extend_from_slice(&scratch[..n.min(room)]);
                return n <= room;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => self.files[i] = None,
        }
        true
    }
}

pub(super) fn pidfd_open(pid: i32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags; it returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    // SAFETY: a non-negative return is a fresh fd we own.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// How the worker ended, from [`Running::drain_until_exit`].
struct Exited {
    status: std::process::ExitStatus,
    /// The task's cgroup, taken from [`Control`] once the worker was reaped.
    cgroup: Option<TaskCgroup>,
    /// The wall-clock limit was reached and the task killed.
    wall_killed: bool,
}

/// What the worker reported.
#[derive(Default)]
struct Reports {
    confinement: AppliedConfinement,
    wasm: Option<WasmRun>,
    /// The task's exit code or signal; the first report is the task's own
    /// (from the sandbox's init).
    exit: Option<(Option<i32>, Option<i32>)>,
}

impl Reports {
    /// Sort the reports; a failed set-up is the run's error.
    fn sort(parsed: Vec<WorkerReport>) -> Result<Reports, SandboxError> {
        let mut out = Reports::default();
        for r in parsed {
            match r {
                WorkerReport::Confined(c) => out.confinement = c,
                WorkerReport::Wasm(w) => out.wasm = Some(w),
                WorkerReport::TaskExit { code, signal } => {
                    out.exit.get_or_insert((code, signal));
                }
                WorkerReport::SetupFailed { stage, message } => {
                    return Err(SandboxError::SetupFailed { stage, message });
                }
            }
        }
        Ok(out)
    }
}

impl Running {
    /// Shared control.
    pub fn control(&self) -> Arc<Control> {
        self.control.clone()
    }

    /// Wait for the end and classify it.
    pub fn wait(mut self) -> Result<(TaskOutcome, AppliedConfinement), SandboxError> {
        let mut exited = self.drain_until_exit()?;
        let wall_time = self.started.elapsed();
        let [stdout, stderr, reports] = std::mem::take(&mut self.output.bufs);
        let cg_usage = exited
            .cgroup
            .as_ref()
            .map(|c| c.usage().since(&self.control.baseline))
            .unwrap_or_default();
        let parsed = crate::proto::parse_reports(&reports);
        self.release(exited.cgroup.take(), parsed.as_deref().ok());
        refill_if_wanted(&self.worker);

        let mut usage = Usage {
            wall_time,
            cpu_time: cg_usage.cpu_time,
            peak_memory_bytes: cg_usage.peak_memory_bytes,
            io_read_bytes: cg_usage.io_read_bytes,
            io_write_bytes: cg_usage.io_write_bytes,
            oom_kills: cg_usage.oom_kills,
            pids_limit_hits: cg_usage.pids_limit_hits,
            fuel_consumed: None,
        };
        let parsed = parsed.map_err(|e| SandboxError::Protocol {
            message: format!("bad report line: {e}"),
        })?;
        let Reports {
            confinement,
            wasm,
            exit,
        } = Reports::sort(parsed)?;
        if let Some(w) = &wasm {
            usage.fuel_consumed = Some(w.fuel_consumed);
        }
        let outcome = self.outcome(&exited, wasm, exit, usage, stdout, stderr)?;
        Ok((outcome, confinement))
    }

    /// Drain the worker's pipes until it has been reaped and they are closed;
    /// kill the task at its wall-clock limit (frozen time does not count) or
    /// when its stdout passes its cap.
    fn drain_until_exit(&mut self) -> Result<Exited, SandboxError> {
        let pidfd = pidfd_open(self.control.worker_pid);
        let mut wall_killed = false;
        let mut status = None;
        let mut cgroup = None;
        let mut scratch = vec![0u8; 64 << 10];
        loop {
            let mut timeout = None;
            if status.is_none() && !wall_killed {
                match self.until_wall_limit() {
                    Some(t) => timeout = Some(t),
                    None => {
                        wall_killed = true;
                        self.control.kill_all();
                    }
                }
            }
            if status.is_none() && (wall_killed || pidfd.is_none()) {
                // Killed, or no pidfd to wake on: look again now and then.
                timeout = Some(Duration::from_millis(50));
            }
            if status.is_some() && !self.output.open() {
                break;
            }
            let watch = pidfd.as_ref().filter(|_| status.is_none());
            let worker_gone = self.poll_once(watch, pidfd.is_some(), timeout, &mut scratch)?;
            if status.is_none() && worker_gone {
                let (s, c) = self.reap()?;
                status = Some(s);
                cgroup = c;
            }
        }
        Ok(Exited {
            status: status.expect("the loop ends once the worker is reaped"),
            cgroup,
            wall_killed,
        })
    }

    /// How long to wait before looking at the wall clock again; `None` once
    /// the task is past its limit (and not frozen).
    fn until_wall_limit(&self) -> Option<Duration> {
        let frozen_since = self
            .control
            .frozen_since
            .lock()
            .map(|f| *f)
            .unwrap_or_default();
        let frozen = Duration::from_millis(self.control.frozen_total_ms.load(Ordering::Relaxed))
            + frozen_since.map(|t| t.elapsed()).unwrap_or_default();
        let deadline = self.started + self.wall + frozen;
        let now = Instant::now();
        if now < deadline {
            Some((deadline - now).min(Duration::from_millis(250)))
        } else if frozen_since.is_some() {
            // Frozen time does not count; wait for the thaw.
            Some(Duration::from_millis(50))
        } else {
            None
        }
    }

    /// One `poll` over the open pipes and `pidfd` (the worker's, until it has
    /// exited), reading what is ready; whether the worker has exited (by its
    /// pidfd when `have_pidfd`, else by a `waitpid` without waiting).
    fn poll_once(
        &mut self,
        pidfd: Option<&OwnedFd>,
        have_pidfd: bool,
        timeout: Option<Duration>,
        scratch: &mut [u8],
    ) -> Result<bool, SandboxError> {
        let mut pfds: Vec<libc::pollfd> = Vec::with_capacity(4);
        let mut which = Vec::with_capacity(4);
        for (i, f) in self.output.files.iter().enumerate() {
            if let Some(f) = f {
                pfds.push(libc::pollfd {
                    fd: f.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                });
                which.push(Some(i));
            }
        }
        if let Some(fd) = pidfd {
            pfds.push(libc::pollfd {
                fd: fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
            which.push(None);
        }
        let ms = timeout.map_or(-1, |t| t.as_millis().min(i32::MAX as u128) as i32);
        // SAFETY: `pfds` is a valid array of `pfds.len()` pollfds.
        let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, ms) };
        if n < 0 && errno().kind() != std::io::ErrorKind::Interrupted {
            return Err(SandboxError::Io {
                op: "poll worker pipes".into(),
                path: PathBuf::new(),
                source: errno(),
            });
        }
        for (pfd, w) in pfds.iter().zip(&which) {
            if pfd.revents == 0 {
                continue;
            }
            if let Some(i) = *w {
                let within = self.output.read(i, scratch);
                if !within && i == STDOUT && !self.control.truncated.swap(true, Ordering::SeqCst) {
                    self.control.kill_all();
                }
            }
        }
        Ok(if have_pidfd {
            pfds.iter()
                .zip(&which)
                .any(|(p, w)| w.is_none() && p.revents != 0)
        } else {
            matches!(self.child.try_wait(), Ok(Some(_)))
        })
    }

    /// Reap the exited worker, end the task's control of its cgroup and kill
    /// what is left in it.
    fn reap(&mut self) -> Result<(std::process::ExitStatus, Option<TaskCgroup>), SandboxError> {
        let status = self.child.wait().map_err(|source| SandboxError::Io {
            op: "wait for worker".into(),
            path: PathBuf::new(),
            source,
        })?;
        // Stragglers (e.g. a fork bomb's children when the worker died) go
        // too, and with them the last writers of the pipes. With the
        // worker reaped nothing can join the cgroup any more, so an empty
        // one needs no kill-all (on v1 that is a freeze and a thaw), and
        // the worker's own pid is not signalled: it may already be reused.
        let cgroup = self.control.end();
        if let Some(cg) = &cgroup
            && cg.pids().map_or(true, |p| !p.is_empty())
            && let Err(e) = cg.kill_all()
        {
            tracing::warn!(error = %e, "cgroup kill-all of stragglers failed");
        }
        Ok((status, cgroup))
    }

    /// What a spare handed back is let go of with its cgroup, off this path;
    /// its network namespace may serve a later task.
    fn release(&mut self, cgroup: Option<TaskCgroup>, parsed: Option<&[WorkerReport]>) {
        let mut held = self
            .request
            .take()
            .and_then(|s| receive_fds_on(s.as_raw_fd(), libc::MSG_DONTWAIT).ok())
            .unwrap_or_default();
        let confined = parsed.and_then(|rs| {
            rs.iter().find_map(|r| match r {
                WorkerReport::Confined(c) => Some(c),
                _ => None,
            })
        });
        let netns = NetnsFromTask::take(&mut held, confined);
        match cgroup {
            Some(c) => end_cgroup(&self.worker, c, held, netns),
            None => drop((held, netns)),
        }
    }

    /// The task's outcome from how it ended and what the worker reported.
    fn outcome(
        &self,
        exited: &Exited,
        wasm: Option<WasmRun>,
        exit: Option<(Option<i32>, Option<i32>)>,
        usage: Usage,
        stdout: Vec<u8>,
        stderr: Vec<u8>,
    ) -> Result<TaskOutcome, SandboxError> {
        use std::os::unix::process::ExitStatusExt;
        Ok(if self.control.terminated.load(Ordering::SeqCst) {
            TaskOutcome::Terminated { usage }
        } else if self.control.truncated.load(Ordering::SeqCst) {
            TaskOutcome::OutputTruncated { stdout, usage }
        } else if exited.wall_killed {
            TaskOutcome::Killed {
                reason: KillReason::WallTime,
                usage,
            }
        } else if let Some(w) = wasm {
            wasm_outcome(w, usage)
        } else {
            match exit {
                Some((_, Some(sig))) => classify_signal(sig, usage, self.cpu_time),
                Some((Some(code), None)) => TaskOutcome::Completed {
                    exit_code: code,
                    digest: crate::digest::result_digest(code, &stdout, &[]),
                    stdout,
                    outputs: Vec::new(),
                    usage,
                },
                // The task filled its cgroup and the kernel's OOM killer chose
                // a sandbox process (the largest) before the task: a fork
                // storm's kernel memory counts against the task's limit too.
                None if exited.status.signal() == Some(libc::SIGKILL) && usage.oom_kills > 0 => {
                    TaskOutcome::Killed {
                        reason: KillReason::Memory,
                        usage,
                    }
                }
                _ => {
                    return Err(SandboxError::WorkerFailed {
                        status: exited.status.to_string(),
                        stderr: String::from_utf8_lossy(&stderr).into_owned(),
                    });
                }
            }
        })
    }
}

/// A wasm run's outcome, as its runtime reported it.
fn wasm_outcome(w: WasmRun, usage: Usage) -> TaskOutcome {
    match w.end {
        WasmEnd::Exited(code) => TaskOutcome::Completed {
            exit_code: code,
            digest: crate::digest::result_digest(code, &w.stdout, &w.outputs),
            stdout: w.stdout,
            outputs: w.outputs,
            usage,
        },
        WasmEnd::Killed(reason) => TaskOutcome::Killed { reason, usage },
        WasmEnd::OutputTruncated => TaskOutcome::OutputTruncated {
            stdout: w.stdout,
            usage,
        },
        WasmEnd::Trapped(message) => TaskOutcome::Trapped { message, usage },
    }
}

pub(super) fn classify_signal(sig: i32, usage: Usage, cpu_limit: Duration) -> TaskOutcome {
    let reason = match sig {
        libc::SIGSYS => {
            return TaskOutcome::Denied {
                operation: "system call outside the seccomp allowlist".into(),
                usage,
            };
        }
        libc::SIGXCPU => Some(KillReason::CpuTime),
        libc::SIGXFSZ => Some(KillReason::Storage),
        libc::SIGKILL if usage.oom_kills > 0 => Some(KillReason::Memory),
        libc::SIGKILL if usage.cpu_time.is_some_and(|t| t >= cpu_limit) => {
            Some(KillReason::CpuTime)
        }
        _ => None,
    };
    match reason {
        Some(reason) => TaskOutcome::Killed { reason, usage },
        None => TaskOutcome::Signaled { signal: sig, usage },
    }
}
