//! `self-check`: this binary runs, knows its version and can probe the
//! sandbox; the worker beside it runs and speaks this agent's protocol
//! version. The updater runs it on a new binary before keeping it.

use std::path::{Path, PathBuf};

use askee_sandbox::proto::{PROTOCOL_VERSION, PROTOCOL_VERSION_FLAG};
use serde_json::json;

use super::CommandError;

/// Why the worker did not tell its protocol version.
#[derive(Debug, thiserror::Error)]
enum WorkerQueryError {
    #[error("run {path}")]
    Run {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("exited with {status}: {stderr}")]
    Exited {
        status: std::process::ExitStatus,
        stderr: String,
    },
    #[error("answered {answer:?}, not a protocol version")]
    Answer {
        answer: String,
        #[source]
        source: std::num::ParseIntError,
    },
}

/// Prints the report as JSON; fails unless the worker speaks this agent's
/// protocol.
pub fn self_check() -> Result<(), CommandError> {
    let worker = crate::interference::default_worker();
    let probe = askee_sandbox::probe();
    let answer = worker_protocol(&worker);
    let ok = answer.as_ref().is_ok_and(|v| *v == PROTOCOL_VERSION);
    println!(
        "{}",
        json!({
            "ok": ok,
            "version": env!("CARGO_PKG_VERSION"),
            "platform": askee_core::release::host_platform(),
            "worker": worker,
            "worker_present": worker.exists(),
            "worker_protocol": answer.as_ref().ok(),
            "protocol": PROTOCOL_VERSION,
            "sandbox": probe,
        })
    );
    match answer {
        // Only the outermost message, as before: the report above has the rest.
        Err(e) => Err(CommandError::WorkerSilent {
            worker,
            reason: e.to_string(),
        }),
        Ok(spoken) if spoken != PROTOCOL_VERSION => Err(CommandError::WorkerProtocol {
            worker,
            spoken,
            expected: PROTOCOL_VERSION,
        }),
        Ok(_) => Ok(()),
    }
}

/// Asks `worker --protocol-version` (the caller's own time limit bounds it).
fn worker_protocol(worker: &Path) -> Result<u32, WorkerQueryError> {
    let out = std::process::Command::new(worker)
        .arg(PROTOCOL_VERSION_FLAG)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|source| WorkerQueryError::Run {
            path: worker.to_owned(),
            source,
        })?;
    if !out.status.success() {
        return Err(WorkerQueryError::Exited {
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .parse()
        .map_err(|source| WorkerQueryError::Answer {
            answer: text.trim().to_owned(),
            source,
        })
}
