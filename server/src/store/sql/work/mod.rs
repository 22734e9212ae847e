//! SQL implementation of [`CoordinatorStore`] for both backends: each method
//! delegates to the file of its concern; the decisions themselves (quorum,
//! exclusion, reputation, event runs) are pure functions in `crate::verdict`.
//!
//! Row locks: PostgreSQL locks task rows with `FOR NO KEY UPDATE` (lease
//! candidates with `FOR NO KEY UPDATE SKIP LOCKED`, so concurrent servers never
//! wait on each other's candidates and never lease one replica twice; `NO KEY`
//! so foreign-key checks of inserts naming the row do not wait, see
//! `SqlStore::for_update`); SQLite write transactions are exclusive already.

mod batch;
mod lease;
mod node_standing;
mod nodes;
mod operators;
mod results;
mod rows;
mod sweep;
mod tasks;

use async_trait::async_trait;

use askee_core::rules::ByzantinePolicy;
use askee_core::wire::v1::NodeState;

use super::SqlStore;
use crate::store::{
    AssignmentRecord, AuditDraft, CoordinatorStore, Exclusion, LeaseQuery, Misbehaviour,
    NodeRecord, NonceClaim, ResultInput, ResultOutcome, StoreError, SweepReport, TaskRecord,
};
use node_standing::Judging;

#[async_trait]
impl CoordinatorStore for SqlStore {
    async fn create_challenge(
        &self,
        challenge: &str,
        node_key: &str,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        nodes::create_challenge(self, challenge, node_key, expires_at).await
    }

    async fn take_challenge(
        &self,
        challenge: &str,
        node_key: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        nodes::take_challenge(self, challenge, node_key, now).await
    }

    async fn register_node(&self, n: &NodeRecord, audit: AuditDraft) -> Result<(), StoreError> {
        nodes::register_node(self, n, audit).await
    }

    async fn node(&self, node_key: &str) -> Result<Option<NodeRecord>, StoreError> {
        nodes::node(self, node_key).await
    }

    async fn heartbeat(
        &self,
        node_key: &str,
        now: i64,
        running: &[String],
        lease_expires_at: i64,
    ) -> Result<(NodeState, Vec<String>), StoreError> {
        nodes::heartbeat(self, node_key, now, running, lease_expires_at).await
    }

    async fn add_operator_key(
        &self,
        operator: &str,
        public_key: &str,
        now: i64,
        audit: AuditDraft,
    ) -> Result<(), StoreError> {
        operators::add_operator_key(self, operator, public_key, now, audit).await
    }

    async fn operator_of_key(&self, public_key: &str) -> Result<Option<String>, StoreError> {
        operators::operator_of_key(self, public_key).await
    }

    async fn put_module(
        &self,
        sha256: &str,
        bytes: &[u8],
        operator: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        operators::put_module(self, sha256, bytes, operator, now).await
    }

    async fn module(&self, sha256: &str) -> Result<Option<Vec<u8>>, StoreError> {
        operators::module(self, sha256).await
    }

    async fn module_size(&self, sha256: &str) -> Result<Option<u64>, StoreError> {
        operators::module_size(self, sha256).await
    }

    async fn create_tasks(
        &self,
        tasks: &[TaskRecord],
        audits: Vec<AuditDraft>,
    ) -> Result<Vec<bool>, StoreError> {
        tasks::create_tasks(self, tasks, audits).await
    }

    async fn task(&self, task_id: &str) -> Result<Option<TaskRecord>, StoreError> {
        tasks::task(self, task_id).await
    }

    async fn assignments_of_task(
        &self,
        task_id: &str,
    ) -> Result<Vec<AssignmentRecord>, StoreError> {
        tasks::assignments_of_task(self, task_id).await
    }

    async fn lease(
        &self,
        q: LeaseQuery<'_>,
    ) -> Result<Vec<(AssignmentRecord, TaskRecord)>, StoreError> {
        lease::lease(self, q).await
    }

    async fn assignment(
        &self,
        assignment_id: &str,
    ) -> Result<Option<AssignmentRecord>, StoreError> {
        tasks::assignment(self, assignment_id).await
    }

    async fn record_results(
        &self,
        nonce: Option<&NonceClaim>,
        inputs: Vec<ResultInput>,
    ) -> Result<Vec<Result<ResultOutcome, StoreError>>, StoreError> {
        results::record_results(self, nonce, inputs).await
    }

    async fn fold_node(
        &self,
        node_key: &str,
        now_ms: i64,
        heartbeat_interval: u64,
        policy: ByzantinePolicy,
    ) -> Result<Option<Exclusion>, StoreError> {
        let judging = Judging {
            now_ms,
            heartbeat_interval,
            policy: &policy,
        };
        node_standing::fold_node(self, node_key, judging).await
    }

    async fn fold_pending(
        &self,
        limit: u32,
        before_ms: i64,
        now_ms: i64,
        heartbeat_interval: u64,
        policy: ByzantinePolicy,
    ) -> Result<Vec<Exclusion>, StoreError> {
        let judging = Judging {
            now_ms,
            heartbeat_interval,
            policy: &policy,
        };
        node_standing::fold_pending(self, limit, before_ms, judging).await
    }

    async fn record_misbehaviour(
        &self,
        node_key: &str,
        kind: Misbehaviour,
        what: &str,
        now_ms: i64,
        heartbeat_interval: u64,
        policy: ByzantinePolicy,
    ) -> Result<Option<Exclusion>, StoreError> {
        let judging = Judging {
            now_ms,
            heartbeat_interval,
            policy: &policy,
        };
        node_standing::record_misbehaviour(self, node_key, kind, what, judging).await
    }

    async fn cancel_task(
        &self,
        task_id: &str,
        operator: &str,
        now_ms: i64,
        audit: AuditDraft,
    ) -> Result<TaskRecord, StoreError> {
        tasks::cancel_task(self, task_id, operator, now_ms, audit).await
    }

    async fn sweep(
        &self,
        now: i64,
        offline_before: i64,
        now_ms: i64,
    ) -> Result<SweepReport, StoreError> {
        sweep::sweep(self, now, offline_before, now_ms).await
    }

    async fn reputation_ledger(&self, limit: u32) -> Result<Vec<NodeRecord>, StoreError> {
        nodes::reputation_ledger(self, limit).await
    }

    async fn excluded_unrevoked(&self) -> Result<Vec<Exclusion>, StoreError> {
        nodes::excluded_unrevoked(self).await
    }
}
