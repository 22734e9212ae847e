//! The demo operator's side of the API, over HTTP like any operator
//! client, and the task statements it signs.

use anyhow::{Context as _, bail};
use askee_core::wire::v1::{
    ReputationEntry, ReputationLedger, TASK_STATEMENT_VERSION, TaskCreated, TaskInputs, TaskLimits,
    TaskRequirements, TaskStatement, TaskStatus, TaskSubmission,
};
use askee_core::{SigningKey, b64, signing};

pub(super) fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The operator's side of the API, over HTTP like any operator client.
pub(super) struct Operator {
    pub(super) http: reqwest::Client,
    pub(super) base: String,
    pub(super) auth: String,
    pub(super) key: SigningKey,
}

impl Operator {
    pub(super) async fn check(
        resp: reqwest::Response,
        what: &str,
    ) -> anyhow::Result<reqwest::Response> {
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        bail!("{what} failed with {status}: {body}")
    }

    pub(super) async fn get<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
    ) -> anyhow::Result<T> {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .header("authorization", &self.auth)
            .send()
            .await
            .with_context(|| format!("GET {path}"))?;
        Ok(Self::check(resp, &format!("GET {path}"))
            .await?
            .json()
            .await?)
    }

    pub(super) async fn post(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> anyhow::Result<reqwest::Response> {
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .header("authorization", &self.auth)
            .json(body)
            .send()
            .await
            .with_context(|| format!("POST {path}"))?;
        Self::check(resp, &format!("POST {path}")).await
    }

    /// Uploads a module; returns its SHA-256 (hex).
    pub(super) async fn upload(&self, name: &str, bytes: Vec<u8>) -> anyhow::Result<String> {
        let sha = hex::encode(signing::sha256(&bytes));
        let resp = self
            .http
            .put(format!("{}/v1/modules/{sha}", self.base))
            .header("authorization", &self.auth)
            .header("content-type", "application/wasm")
            .body(bytes)
            .send()
            .await
            .with_context(|| format!("uploading {name}"))?;
        Self::check(resp, &format!("uploading {name}")).await?;
        Ok(sha)
    }

    /// Signs and submits a task; returns its id.
    pub(super) async fn submit(
        &self,
        statement: TaskStatement,
        known_digest: Option<String>,
    ) -> anyhow::Result<String> {
        let submission = TaskSubmission {
            signature: signing::sign_task(&self.key, &statement),
            operator_public_key: b64::encode(self.key.verifying_key().as_bytes()),
            statement,
            bootstrap: known_digest.is_some(),
            known_digest,
        };
        let created: TaskCreated = self
            .post("/v1/tasks", &serde_json::to_value(&submission)?)
            .await?
            .json()
            .await?;
        Ok(created.task_id)
    }

    pub(super) async fn task(&self, id: &str) -> anyhow::Result<TaskStatus> {
        self.get(&format!("/v1/tasks/{id}")).await
    }

    pub(super) async fn ledger(&self) -> anyhow::Result<Vec<ReputationEntry>> {
        Ok(self
            .get::<ReputationLedger>("/v1/reputation?limit=1000")
            .await?
            .nodes)
    }
}

pub(super) struct TaskSpec<'a> {
    pub(super) module_sha256: &'a str,
    pub(super) task_type: &'a str,
    pub(super) args: Vec<String>,
    pub(super) stdin: &'a [u8],
    pub(super) files: Vec<(&'a str, &'a [u8])>,
    pub(super) f: u32,
    pub(super) nonce: String,
}

pub(super) fn statement(t: TaskSpec<'_>) -> TaskStatement {
    TaskStatement {
        version: TASK_STATEMENT_VERSION.into(),
        module_sha256: t.module_sha256.into(),
        task_type: t.task_type.into(),
        inputs: TaskInputs {
            args: t.args,
            stdin: b64::encode(t.stdin),
            files: t
                .files
                .into_iter()
                .map(|(name, bytes)| (name.to_owned(), b64::encode(bytes)))
                .collect(),
        },
        requirements: TaskRequirements {
            cpu_cores: 1,
            ram_mb: 64,
            storage_gb: 0,
            bandwidth_mbps: 0,
        },
        limits: TaskLimits {
            fuel: 2_000_000_000,
            memory_mb: 64,
            wall_seconds: 60,
            cpu_percent: 50,
        },
        random_seed: 0,
        deadline: now() + 900,
        f: t.f,
        max_replicas: 2 * t.f + 3,
        adaptive: false,
        nonce: t.nonce,
    }
}
