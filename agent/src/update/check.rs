//! Loading and verifying the release repository, and picking the newest
//! applicable release.

use super::*;

/// tough transport over reqwest (plain HTTP is fine: TUF metadata carries
/// its own signatures, hashes and expiry).
#[derive(Debug, Clone)]
pub(super) struct Http {
    pub(super) client: reqwest::Client,
}

#[tough::async_trait]
impl tough::Transport for Http {
    async fn fetch(&self, url: url::Url) -> Result<tough::TransportStream, tough::TransportError> {
        use tough::{TransportError, TransportErrorKind as K};
        let other = |e: String| TransportError::new_with_cause(K::Other, url.as_str(), e);
        let mut resp = self
            .client
            .get(url.clone())
            .send()
            .await
            .map_err(|e| other(e.to_string()))?;
        if matches!(resp.status().as_u16(), 404 | 410) {
            return Err(TransportError::new(K::FileNotFound, url.as_str()));
        }
        if !resp.status().is_success() {
            return Err(other(format!("HTTP status {}", resp.status())));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| other(e.to_string()))? {
            body.extend_from_slice(&chunk);
            if body.len() as u64 > MAX_FETCH_BYTES {
                return Err(other(format!(
                    "response larger than {MAX_FETCH_BYTES} bytes"
                )));
            }
        }
        let item: Result<tough::Bytes, TransportError> = Ok(tough::Bytes::from(body));
        Ok(Box::pin(futures_util::stream::once(std::future::ready(
            item,
        ))))
    }
}

pub(super) fn root_version(bytes: &[u8]) -> Option<u64> {
    let v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    v["signed"]["version"].as_u64()
}

impl Updater {
    fn trusted_root(&self) -> Result<Vec<u8>, UpdateError> {
        let shipped = std::fs::read(&self.settings.trusted_root).map_err(|source| {
            UpdateError::TrustedRoot {
                path: self.settings.trusted_root.clone(),
                source,
            }
        })?;
        let verified = std::fs::read(self.home.join(DATASTORE).join("root.json")).ok();
        Ok(match verified {
            Some(v) if root_version(&v) > root_version(&shipped) => v,
            _ => shipped,
        })
    }

    pub(super) async fn load(&self) -> Result<tough::Repository, UpdateError> {
        let base = self.settings.repository.trim_end_matches('/');
        let url = |sub: &str| {
            url::Url::parse(&format!("{base}/{sub}/")).map_err(|e| UpdateError::BadUrl {
                url: self.settings.repository.clone(),
                reason: e.to_string(),
            })
        };
        let (meta, targets) = (url("metadata")?, url("targets")?);
        let root = self.trusted_root()?;
        let store = self.home.join(DATASTORE);
        std::fs::create_dir_all(&store).map_err(|source| UpdateError::Write {
            path: store.clone(),
            source,
        })?;
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(600))
            .build()
            .map_err(|e| UpdateError::BadUrl {
                url: self.settings.repository.clone(),
                reason: e.to_string(),
            })?;
        tough::RepositoryLoader::new(&root, meta, targets)
            .transport(Http { client })
            .datastore(store)
            .expiration_enforcement(tough::ExpirationEnforcement::Safe)
            .load()
            .await
            .map_err(|e| UpdateError::Refused {
                repository: self.settings.repository.clone(),
                refusal: classify(&e),
                detail: detail(&e),
            })
    }

    /// Loads and verifies the repository and picks the newest applicable
    /// release (journalled as `update.check`, or `update.refused`).
    pub async fn check(&self) -> Result<(Check, Option<tough::Repository>), UpdateError> {
        let current = self.current_version()?;
        let repo = match self.load().await {
            Ok(r) => r,
            Err(e) => {
                self.refused(&e)?;
                return Err(e);
            }
        };
        let releases: Vec<Release> = repo
            .all_targets()
            .filter_map(|(name, t)| {
                let v = t.custom.get("version").and_then(|v| v.as_str());
                rel::parse_target(name.raw(), v).ok()
            })
            .collect();
        let state = UpdateState::load(&self.home)?;
        let pick = rel::choose(&releases, &self.settings.platform, current, &state.refused);
        let timestamp = repo.timestamp().signed.version.get();
        let snapshot = repo.snapshot().signed.version.get();
        let found = match pick {
            Some(r) => Check::Available {
                current,
                release: r.clone(),
            },
            None => Check::UpToDate { current },
        };
        self.journal(
            "update.check",
            json!({
                "repository": self.settings.repository,
                "current": current.to_string(),
                "available": pick.map(|r| r.version.to_string()),
                "target": pick.map(|r| r.name.clone()),
                "timestamp_version": timestamp,
                "snapshot_version": snapshot,
            }),
        )?;
        Ok((found, Some(repo)))
    }

    pub(super) fn refused(&self, e: &UpdateError) -> Result<(), UpdateError> {
        let (refusal, detail) = match e {
            UpdateError::Refused {
                refusal, detail, ..
            }
            | UpdateError::Target {
                refusal, detail, ..
            } => (refusal.to_string(), detail.clone()),
            other => ("error".to_owned(), other.to_string()),
        };
        self.journal(
            "update.refused",
            json!({"repository": self.settings.repository, "reason": refusal, "detail": detail}),
        )
    }
}
