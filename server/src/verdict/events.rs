//! Node events: the counter changes a result batch defers, stored as runs so
//! that no other node's row is locked by a report.

use std::collections::BTreeMap;

/// What happened to one of a node's replicas; stored by name
/// (`node_events.kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeEventKind {
    /// It reported a completed result.
    Completed,
    /// It reported a failed run.
    Failed,
    /// Its result agreed with the accepted quorum or a known answer.
    Agreed,
    /// Its result disagreed.
    Wrong,
    /// It answered a task that failed without a quorum.
    ConsensusFailure,
}

impl NodeEventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Agreed => "agreed",
            Self::Wrong => "wrong",
            Self::ConsensusFailure => "consensus_failure",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "completed" => Self::Completed,
            "failed" => Self::Failed,
            "agreed" => Self::Agreed,
            "wrong" => Self::Wrong,
            "consensus_failure" => Self::ConsensusFailure,
            _ => return None,
        })
    }
}

impl From<super::quorum::Judgement> for NodeEventKind {
    fn from(judgement: super::quorum::Judgement) -> Self {
        match judgement {
            super::quorum::Judgement::Agreed => Self::Agreed,
            super::quorum::Judgement::Wrong => Self::Wrong,
        }
    }
}

/// One event of one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeEvent {
    pub node_key: String,
    pub kind: NodeEventKind,
    pub at_ms: i64,
}

impl NodeEvent {
    pub fn new(node_key: &str, kind: NodeEventKind, at_ms: i64) -> Self {
        Self {
            node_key: node_key.to_owned(),
            kind,
            at_ms,
        }
    }
}

/// A node's consecutive events of one kind, stored as one row.
#[derive(Debug, PartialEq, Eq)]
pub struct EventRun<'a> {
    pub node_key: &'a str,
    pub kind: NodeEventKind,
    /// The last event's time.
    pub at_ms: i64,
    pub times: u64,
}

/// `events` in order, as runs: each node's sequence of kinds is kept exactly
/// (so a `wrong` resets the streak where it fell), with consecutive events of
/// one kind merged. Runs come in the order of their first event, so every
/// node's runs are in order.
pub fn event_runs(events: &[NodeEvent]) -> Vec<EventRun<'_>> {
    let mut runs: Vec<EventRun<'_>> = Vec::new();
    // Each node's latest run, by index into `runs`.
    let mut latest: BTreeMap<&str, usize> = BTreeMap::new();
    for event in events {
        match latest.get(event.node_key.as_str()) {
            Some(&i) if runs[i].kind == event.kind => {
                runs[i].times += 1;
                runs[i].at_ms = event.at_ms;
            }
            _ => {
                latest.insert(&event.node_key, runs.len());
                runs.push(EventRun {
                    node_key: &event.node_key,
                    kind: event.kind,
                    at_ms: event.at_ms,
                    times: 1,
                });
            }
        }
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::NodeEventKind::{Agreed, Completed, Wrong};
    use super::*;

    fn ev(node: &str, kind: NodeEventKind, at: i64) -> NodeEvent {
        NodeEvent::new(node, kind, at)
    }

    #[test]
    fn event_runs_merge_a_nodes_consecutive_kinds_and_keep_its_order() {
        let events = vec![
            ev("a", Completed, 1),
            ev("b", Agreed, 2),
            ev("a", Completed, 3),
            ev("a", Agreed, 4),
            ev("b", Agreed, 5),
            ev("a", Wrong, 6),
            ev("a", Agreed, 7),
            ev("a", Agreed, 8),
        ];
        let runs: Vec<(&str, &str, i64, u64)> = event_runs(&events)
            .into_iter()
            .map(|r| (r.node_key, r.kind.as_str(), r.at_ms, r.times))
            .collect();
        assert_eq!(
            runs,
            vec![
                ("a", "completed", 3, 2),
                ("b", "agreed", 5, 2),
                ("a", "agreed", 4, 1),
                ("a", "wrong", 6, 1),
                ("a", "agreed", 8, 2),
            ]
        );
        // Every event is counted once.
        let total: u64 = event_runs(&events).iter().map(|r| r.times).sum();
        assert_eq!(total, events.len() as u64);
    }

    #[test]
    fn no_events_make_no_runs() {
        assert!(event_runs(&[]).is_empty());
    }

    #[test]
    fn event_kinds_round_trip_by_name() {
        for kind in [
            Completed,
            NodeEventKind::Failed,
            Agreed,
            Wrong,
            NodeEventKind::ConsensusFailure,
        ] {
            assert_eq!(NodeEventKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(NodeEventKind::parse("heartbeat"), None);
    }
}
