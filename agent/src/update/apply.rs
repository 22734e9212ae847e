//! Downloading, installing and self-checking a release.

use super::*;

impl Updater {
    /// Downloads both binaries of `release` (its agent target and the
    /// worker target of the same version) into a staging directory in
    /// `versions/`; nothing is kept unless both verified.
    pub async fn download(
        &self,
        repo: &tough::Repository,
        release: &Release,
    ) -> Result<Staged, UpdateError> {
        let versions = self.settings.layout.versions();
        let dir = versions.join(format!(".staging-{}", uuid::Uuid::new_v4().simple()));
        let result = async {
            std::fs::create_dir_all(&dir).map_err(|source| UpdateError::Write {
                path: dir.clone(),
                source,
            })?;
            let agent = self
                .download_to(
                    repo,
                    &release.name,
                    &dir.join(exe_name(rel::Component::Agent)),
                )
                .await?;
            let worker = self
                .download_to(
                    repo,
                    &release.worker_name(),
                    &dir.join(exe_name(rel::Component::Worker)),
                )
                .await?;
            Ok::<_, UpdateError>((agent, worker))
        }
        .await;
        if let Err(e) = &result {
            let _ = std::fs::remove_dir_all(&dir);
            self.refused(e)?;
        }
        let ((sha, len), (worker_sha, worker_len)) = result?;
        self.journal(
            "update.downloaded",
            json!({"target": release.name, "sha256": sha, "length": len,
                   "worker_target": release.worker_name(), "worker_sha256": worker_sha,
                   "worker_length": worker_len}),
        )?;
        Ok(Staged {
            dir,
            sha256: sha,
            worker_sha256: worker_sha,
        })
    }

    async fn download_to(
        &self,
        repo: &tough::Repository,
        target: &str,
        staged: &Path,
    ) -> Result<(String, u64), UpdateError> {
        use sha2::Digest as _;
        use std::io::Write as _;
        let target_err = |e: tough::error::Error| UpdateError::Target {
            target: target.to_owned(),
            refusal: classify(&e),
            detail: detail(&e),
        };
        let name = tough::TargetName::new(target).map_err(target_err)?;
        let signed = repo
            .targets()
            .signed
            .find_target(&name, false)
            .map_err(|_| UpdateError::TargetMissing {
                target: target.to_owned(),
            })?
            .clone();
        let stream = repo
            .read_target(&name)
            .await
            .map_err(target_err)?
            .ok_or_else(|| UpdateError::TargetMissing {
                target: target.to_owned(),
            })?;
        let mut stream = std::pin::pin!(stream);
        let werr = |source| UpdateError::Write {
            path: staged.to_owned(),
            source,
        };
        let mut file = std::fs::File::create(staged).map_err(werr)?;
        let mut h = sha2::Sha256::new();
        let mut len = 0u64;
        // tough checks the length and hash as the stream ends: nothing is
        // used unless the whole stream succeeded.
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(target_err)?;
            h.update(&chunk);
            len += chunk.len() as u64;
            file.write_all(&chunk).map_err(werr)?;
        }
        let sha = hex::encode(h.finalize());
        if sha != hex::encode(signed.hashes.sha256.as_ref()) || len != signed.length {
            return Err(UpdateError::Target {
                target: target.to_owned(),
                refusal: Refusal::Mismatch {
                    what: "target".into(),
                },
                detail: format!(
                    "got {len} bytes with sha256 {sha}, signed {} bytes with sha256 {}",
                    signed.length,
                    hex::encode(signed.hashes.sha256.as_ref())
                ),
            });
        }
        file.sync_all().map_err(werr)?;
        drop(file);
        sys::make_executable(staged).map_err(werr)?;
        Ok((sha, len))
    }

    /// Installs the staged pair as `versions/<version>` and switches
    /// `current` to it (the previous version stays), runs the new agent's
    /// self-check (which checks the new worker too) and switches back if it
    /// fails. On success the release is pending until a start confirms it.
    pub async fn install(&self, staged: &Staged, release: &Release) -> Result<(), UpdateError> {
        let layout = &self.settings.layout;
        let name = release.version.to_string();
        let previous = layout.current()?;
        let dest = layout.versions().join(&name);
        if name == previous {
            return Err(UpdateError::Write {
                path: dest,
                source: std::io::Error::other("this version is the running one"),
            });
        }
        // A leftover of an earlier attempt is replaced whole.
        let _ = std::fs::remove_dir_all(&dest);
        std::fs::rename(&staged.dir, &dest).map_err(|source| UpdateError::Write {
            path: dest.clone(),
            source,
        })?;
        layout.switch(&name)?;
        let bin = layout.binary();
        self.journal(
            "update.installed",
            json!({"target": release.name, "version": name,
                   "sha256": staged.sha256, "worker_target": release.worker_name(),
                   "worker_sha256": staged.worker_sha256, "binary": bin,
                   "directory": dest, "previous": layout.versions().join(&previous)}),
        )?;
        match self_check(&bin).await {
            Ok(report) => {
                self.journal(
                    "update.self_check",
                    json!({"target": release.name, "ok": true, "report": report}),
                )?;
                let mut state = UpdateState::load(&self.home)?;
                state.pending = Some(Pending {
                    name: release.name.clone(),
                    version: name.clone(),
                    sha256: staged.sha256.clone(),
                    worker_sha256: staged.worker_sha256.clone(),
                    previous: Some(previous.clone()),
                    starts: 0,
                });
                state.save(&self.home)?;
                layout.prune(&[&name, &previous]);
                Ok(())
            }
            Err(reason) => {
                self.journal(
                    "update.self_check",
                    json!({"target": release.name, "ok": false, "reason": reason}),
                )?;
                layout
                    .switch(&previous)
                    .map_err(|e| UpdateError::Rollback {
                        prev: layout.versions().join(&previous),
                        binary: bin.clone(),
                        source: std::io::Error::other(e.to_string()),
                    })?;
                let _ = std::fs::remove_dir_all(&dest);
                let mut state = UpdateState::load(&self.home)?;
                if !state.refused.contains(&release.name) {
                    state.refused.push(release.name.clone());
                }
                state.save(&self.home)?;
                self.journal(
                    "update.rolled_back",
                    json!({"target": release.name, "reason": reason, "binary": bin,
                           "current": layout.versions().join(&previous)}),
                )?;
                Err(UpdateError::SelfCheck {
                    target: release.name.clone(),
                    reason,
                })
            }
        }
    }

    /// Check, download and install (one shot). Refused while a daemon holds
    /// the home's lock: the daemon updates itself between tasks.
    pub async fn apply(&self) -> Result<Applied, UpdateError> {
        let _lock = DaemonLock::acquire(&self.home)?;
        let (found, repo) = self.check().await?;
        let (release, repo) = match (found, repo) {
            (Check::Available { release, .. }, Some(repo)) => (release, repo),
            (Check::UpToDate { current } | Check::Available { current, .. }, _) => {
                return Ok(Applied::UpToDate { current });
            }
        };
        let staged = self.download(&repo, &release).await?;
        self.install(&staged, &release).await?;
        Ok(Applied::Installed {
            release,
            sha256: staged.sha256,
        })
    }
}

/// Runs `<binary> self-check`; its JSON report, or why it failed.
pub async fn self_check(binary: &Path) -> Result<serde_json::Value, String> {
    let child = tokio::process::Command::new(binary)
        .arg("self-check")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = match tokio::time::timeout(SELF_CHECK_TIMEOUT, child).await {
        Err(_) => return Err(format!("no answer within {SELF_CHECK_TIMEOUT:?}")),
        Ok(Err(e)) => return Err(format!("cannot run {}: {e}", binary.display())),
        Ok(Ok(out)) => out,
    };
    if !out.status.success() {
        return Err(format!(
            "exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("its report is not JSON: {e}"))?;
    if report["ok"] != true {
        return Err(format!("it reports a failure: {report}"));
    }
    Ok(report)
}
