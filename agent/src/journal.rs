//! The volunteer's local audit log: an append-only, hash-chained JSON-lines
//! file in the agent's home. Every line commits to the one before it, so an
//! edited, deleted, reordered or inserted line breaks the chain at a point
//! that [`verify`] names.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use askee_core::signing::{canonical_json, sha256};
use serde::{Deserialize, Serialize};

/// The journal's file name in the agent's home.
pub const JOURNAL_FILE: &str = "journal.jsonl";

/// The hash that the first entry's `prev` names.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("cannot open journal {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot append to journal {path}: {source}")]
    Append {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read journal {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("journal {path} line {line} is malformed: {detail}")]
    Malformed {
        path: PathBuf,
        line: u64,
        detail: String,
    },
}

/// One line of the journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JournalEntry {
    pub seq: u64,
    /// Unix milliseconds.
    pub timestamp_ms: i64,
    /// What happened, e.g. `consent.grant`, `task.start`, `task.yield`.
    pub kind: String,
    pub data: serde_json::Value,
    /// Hex SHA-256 of the previous entry ([`GENESIS`] for the first).
    pub prev: String,
    /// Hex SHA-256 over `prev` and this entry's other fields.
    pub hash: String,
}

#[derive(Serialize)]
struct Hashed<'a> {
    seq: u64,
    timestamp_ms: i64,
    kind: &'a str,
    data: &'a serde_json::Value,
    prev: &'a str,
}

fn entry_hash(
    seq: u64,
    timestamp_ms: i64,
    kind: &str,
    data: &serde_json::Value,
    prev: &str,
) -> String {
    let mut bytes = b"askee-agent-journal-v1\0".to_vec();
    bytes.extend(canonical_json(&Hashed {
        seq,
        timestamp_ms,
        kind,
        data,
        prev,
    }));
    hex::encode(sha256(&bytes))
}

/// Where the chain breaks, if it does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// Line `line` (1-based) does not name the hash of the line before it:
    /// a line was deleted, inserted or reordered there.
    BrokenLink { line: u64 },
    /// Line `line`'s own hash does not match its contents: it was edited.
    Edited { line: u64 },
    /// Line `line` has the wrong sequence number.
    BadSequence {
        line: u64,
        expected: u64,
        found: u64,
    },
}

impl Finding {
    /// The 1-based line the finding is about.
    pub fn line(&self) -> u64 {
        match self {
            Finding::BrokenLink { line }
            | Finding::Edited { line }
            | Finding::BadSequence { line, .. } => *line,
        }
    }
}

/// An open journal. Appends are serialised and flushed to disk before
/// `append` returns, so a crash loses at most the entry being written.
/// The daemon and one-shot commands (`revoke`, `consent grant`) write the
/// same file, so each append holds an exclusive file lock and re-reads the
/// tail when another process wrote since.
pub struct Journal {
    path: PathBuf,
    tail: Mutex<Tail>,
}

struct Tail {
    file: File,
    next_seq: u64,
    last_hash: String,
    /// The file's length after this process last read or wrote it.
    len: u64,
}

impl Journal {
    /// Opens (creating if needed) the journal at `path`, reading it to find
    /// the chain's tail. A torn last line (a crash mid-write) is an error,
    /// not silently dropped.
    pub fn open(path: &Path) -> Result<Self, JournalError> {
        let entries = read(path).or_else(|e| match e {
            JournalError::Read { ref source, .. }
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                Ok(Vec::new())
            }
            other => Err(other),
        })?;
        let (next_seq, last_hash) = match entries.last() {
            Some(last) => (last.seq + 1, last.hash.clone()),
            None => (0, GENESIS.to_owned()),
        };
        let open_err = |source| JournalError::Open {
            path: path.to_owned(),
            source,
        };
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(open_err)?;
        let len = file.metadata().map_err(open_err)?.len();
        Ok(Self {
            path: path.to_owned(),
            tail: Mutex::new(Tail {
                file,
                next_seq,
                last_hash,
                len,
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one entry and syncs it to disk.
    pub fn append(
        &self,
        kind: &str,
        data: serde_json::Value,
    ) -> Result<JournalEntry, JournalError> {
        let mut tail = self.tail.lock().unwrap_or_else(|p| p.into_inner());
        let append_err = |source| JournalError::Append {
            path: self.path.clone(),
            source,
        };
        tail.file.lock().map_err(append_err)?;
        let result = self.append_locked(&mut tail, kind, data);
        // Closing the file would release the lock too; this one stays open.
        let unlocked = tail.file.unlock().map_err(append_err);
        let entry = result?;
        unlocked?;
        Ok(entry)
    }

    fn append_locked(
        &self,
        tail: &mut Tail,
        kind: &str,
        data: serde_json::Value,
    ) -> Result<JournalEntry, JournalError> {
        let append_err = |source| JournalError::Append {
            path: self.path.clone(),
            source,
        };
        let len = tail.file.metadata().map_err(append_err)?.len();
        if len != tail.len {
            // Another process appended: continue its chain, not ours.
            let entries = read(&self.path)?;
            (tail.next_seq, tail.last_hash) = match entries.last() {
                Some(last) => (last.seq + 1, last.hash.clone()),
                None => (0, GENESIS.to_owned()),
            };
        }
        let timestamp_ms = crate::clock::now_ms();
        let hash = entry_hash(tail.next_seq, timestamp_ms, kind, &data, &tail.last_hash);
        let entry = JournalEntry {
            seq: tail.next_seq,
            timestamp_ms,
            kind: kind.to_owned(),
            data,
            prev: tail.last_hash.clone(),
            hash,
        };
        let mut line = serde_json::to_vec(&entry).expect("journal entries serialise");
        line.push(b'\n');
        tail.file.write_all(&line).map_err(append_err)?;
        tail.file.sync_data().map_err(append_err)?;
        tail.len = len + line.len() as u64;
        tail.next_seq += 1;
        tail.last_hash = entry.hash.clone();
        Ok(entry)
    }
}

/// Reads every entry of the journal at `path` without checking the chain.
pub fn read(path: &Path) -> Result<Vec<JournalEntry>, JournalError> {
    let file = File::open(path).map_err(|source| JournalError::Read {
        path: path.to_owned(),
        source,
    })?;
    let mut entries = Vec::new();
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|source| JournalError::Read {
            path: path.to_owned(),
            source,
        })?;
        let entry = serde_json::from_str(&line).map_err(|e| JournalError::Malformed {
            path: path.to_owned(),
            line: i as u64 + 1,
            detail: e.to_string(),
        })?;
        entries.push(entry);
    }
    Ok(entries)
}

/// Like [`read`], but a journal that does not exist yet is empty.
pub fn read_if_any(path: &Path) -> Result<Vec<JournalEntry>, JournalError> {
    match read(path) {
        Err(JournalError::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            Ok(Vec::new())
        }
        other => other,
    }
}

/// Checks the chain of `entries`; an empty result means it is intact.
pub fn verify(entries: &[JournalEntry]) -> Vec<Finding> {
    let mut findings = Vec::new();
    let mut prev = GENESIS.to_owned();
    for (i, e) in entries.iter().enumerate() {
        let line = i as u64 + 1;
        if e.seq != i as u64 {
            findings.push(Finding::BadSequence {
                line,
                expected: i as u64,
                found: e.seq,
            });
        }
        if e.prev != prev {
            findings.push(Finding::BrokenLink { line });
        }
        if entry_hash(e.seq, e.timestamp_ms, &e.kind, &e.data, &e.prev) != e.hash {
            findings.push(Finding::Edited { line });
        }
        prev = e.hash.clone();
    }
    findings
}
