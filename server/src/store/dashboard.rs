//! Read-only views for the operator dashboard and the volunteer's status
//! page: recent tasks, the discovery queue, a node's assignments and its
//! audit trail. Nothing here writes.

use async_trait::async_trait;

use super::StoreError;

/// A task as the dashboard lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskSummary {
    pub task_id: String,
    pub task_type: String,
    pub state: String,
    pub f: u32,
    pub max_replicas: u32,
    pub replicas_wanted: u32,
    pub replicas_active: u32,
    pub replicas_total: u32,
    pub results_received: u32,
    pub bootstrap: bool,
    pub accepted_digest: Option<String>,
    pub created_ms: i64,
    pub updated_ms: i64,
}

/// A domain in the discovery queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedDomain {
    pub domain: String,
    pub added_at: i64,
    pub next_check_at: i64,
    pub failures: i64,
    pub last_checked_at: Option<i64>,
    pub last_outcome: Option<String>,
    pub last_reason: Option<String>,
}

/// One replica a node ran (or holds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeAssignment {
    pub assignment_id: String,
    pub task_id: String,
    pub task_type: String,
    pub state: String,
    pub verdict: Option<String>,
    pub leased_at: i64,
    pub reported_at_ms: Option<i64>,
}

/// An audit entry as stored (its body is the canonical JSON leaf data).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectAuditEntry {
    pub index: u64,
    pub timestamp_ms: i64,
    pub kind: String,
    pub body: String,
}

#[async_trait]
pub trait DashboardStore: Send + Sync {
    /// The most recently created tasks, newest first.
    async fn recent_tasks(&self, limit: u32) -> Result<Vec<TaskSummary>, StoreError>;

    /// When each task verified since `since_ms` was last updated (its
    /// verification time), oldest first.
    async fn verified_times(&self, since_ms: i64) -> Result<Vec<i64>, StoreError>;

    /// The discovery queue in the order it will be checked.
    async fn discovery_queue(&self, limit: u32) -> Result<Vec<QueuedDomain>, StoreError>;

    /// A node's assignments, newest first.
    async fn assignments_of_node(
        &self,
        node_key: &str,
        limit: u32,
    ) -> Result<Vec<NodeAssignment>, StoreError>;

    /// The audit entries whose subject is `subject`, newest first.
    async fn audit_of_subject(
        &self,
        subject: &str,
        limit: u32,
    ) -> Result<Vec<SubjectAuditEntry>, StoreError>;
}
