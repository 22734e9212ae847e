//! The on-disk queue of signed result reports awaiting upload: a report is
//! stored before any upload attempt, so an outage or a restart loses none.

use super::*;
use crate::private_file;

/// The on-disk queue of signed result reports awaiting upload.
pub struct Outbox {
    dir: PathBuf,
}

impl Outbox {
    pub fn open(dir: PathBuf) -> Result<Self, RunError> {
        std::fs::create_dir_all(&dir).map_err(|source| RunError::Outbox {
            path: dir.clone(),
            source,
        })?;
        Ok(Self { dir })
    }

    pub(super) fn path_of(&self, assignment_id: &str) -> PathBuf {
        let h = signing::sha256(assignment_id.as_bytes());
        self.dir.join(format!("{}.json", hex::encode(&h[..16])))
    }

    /// Persists a report (write, sync, rename) before any upload attempt.
    pub fn put(&self, report: &ResultReport) -> Result<(), RunError> {
        let path = self.path_of(&report.assignment_id);
        let bytes = serde_json::to_vec(report).expect("reports serialise");
        private_file::write(&path, &bytes).map_err(|source| RunError::Outbox { path, source })
    }

    pub fn pending(&self) -> Vec<(PathBuf, ResultReport)> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for e in entries.flatten() {
            let path = e.path();
            if path.extension().is_some_and(|x| x == "json")
                && let Ok(bytes) = std::fs::read(&path)
                && let Ok(report) = serde_json::from_slice(&bytes)
            {
                out.push((path, report));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    pub fn len(&self) -> usize {
        self.pending().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn remove(&self, path: &Path) {
        let _ = std::fs::remove_file(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outbox_keeps_reports_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let report = ResultReport {
            assignment_id: "a/../1".into(),
            task_id: "t".into(),
            status: ReportStatus::Completed,
            result_digest: "00".repeat(32),
            exit_code: 0,
            stdout: String::new(),
            outputs: Default::default(),
            failure: String::new(),
            usage: ResourceUsage::default(),
            signature: "sig".into(),
        };
        let outbox = Outbox::open(dir.path().join("outbox")).unwrap();
        outbox.put(&report).unwrap();
        // The same assignment is one file however often it is filed.
        outbox.put(&report).unwrap();
        let reopened = Outbox::open(dir.path().join("outbox")).unwrap();
        let pending = reopened.pending();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].1, report);
        reopened.remove(&pending[0].0);
        assert!(reopened.is_empty());
    }
}
