//! The coordinator's pure verdicts: what a task's quorum concludes from its
//! replicas, how a node's events fold into its counters, when a node is
//! excluded as Byzantine and what its reputation is, how a lease candidate
//! ranks for diversity.
//!
//! Plain data in, decision out: no database, no HTTP, no clock (the time is
//! an argument). The SQL store loads rows, asks a verdict and writes the
//! outcome (`store::sql::work`); the rules themselves come from
//! `askee_core::rules` and `askee_core::coordinator`.

pub mod counters;
pub mod diversity;
pub mod events;
pub mod exclusion;
pub mod quorum;
pub mod reputation;

pub use counters::{Misbehaviour, NodeStats};
pub use events::{EventRun, NodeEvent, NodeEventKind, event_runs};
pub use exclusion::{NodeFacts, NodeStanding, node_standing};
pub use quorum::{Judgement, QuorumTask, QuorumVerdict, Replica, ReplicaStanding};
