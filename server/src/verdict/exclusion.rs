//! A node's standing after its counters change: excluded as Byzantine when
//! the evidence says so (sticky, reputation zero), otherwise its recomputed
//! reputation.

use askee_core::rules::{ByzantineEvidence, ByzantinePolicy, byzantine_node_excluded};
use askee_core::wire::v1::NodeState;

use super::counters::NodeStats;
use super::reputation::reputation_micros;

/// What the standing of a node is judged from.
#[derive(Debug, Clone, Copy)]
pub struct NodeFacts<'a> {
    pub state: NodeState,
    pub exclusion_reason: Option<&'a str>,
    /// Registration time, seconds.
    pub registered_at: i64,
    pub stats: &'a NodeStats,
}

/// A node's state, reputation and exclusion reason to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStanding {
    pub state: NodeState,
    pub reputation_micros: u32,
    pub exclusion_reason: Option<String>,
    /// Excluded by this judgement (it was not Byzantine before): its token
    /// must be revoked and the exclusion audited.
    pub newly_excluded: bool,
}

/// The Byzantine evidence a node's counters hold (each saturating at
/// `u32::MAX`).
pub fn evidence(stats: &NodeStats) -> ByzantineEvidence {
    let capped = |n: u64| n.min(u64::from(u32::MAX)) as u32;
    ByzantineEvidence {
        wrong_results: capped(stats.wrong),
        invalid_signatures: capped(stats.invalid_signatures),
        policy_violations: capped(stats.policy_violations),
        consensus_failures: capped(stats.consensus_failures),
        malicious_patterns: capped(stats.malicious_patterns),
    }
}

/// Judges a node at `now` (seconds): exclusion first, reputation otherwise.
/// `heartbeat_interval` (seconds) is the server's, for the uptime rate.
pub fn node_standing(
    node: &NodeFacts<'_>,
    now: i64,
    heartbeat_interval: u64,
    policy: &ByzantinePolicy,
) -> NodeStanding {
    let stats = node.stats;
    let already = node.state == NodeState::Byzantine;
    match byzantine_node_excluded(already, &evidence(stats), policy) {
        Some(exclusion) => {
            // Marking is sticky: an earlier reason stays.
            let exclusion_reason = if already {
                node.exclusion_reason.map(str::to_owned)
            } else {
                Some(format!(
                    "{:?} (wrong results {}, invalid signatures {}, policy violations {}, failed quorums {})",
                    exclusion.causes,
                    stats.wrong,
                    stats.invalid_signatures,
                    stats.policy_violations,
                    stats.consensus_failures
                ))
            };
            NodeStanding {
                state: NodeState::Byzantine,
                reputation_micros: 0,
                exclusion_reason,
                newly_excluded: !already,
            }
        }
        None => {
            let age_seconds = u64::try_from(now - node.registered_at).unwrap_or(0);
            NodeStanding {
                state: node.state,
                reputation_micros: reputation_micros(
                    stats,
                    age_seconds,
                    heartbeat_interval,
                    node.state == NodeState::Active,
                ),
                exclusion_reason: node.exclusion_reason.map(str::to_owned),
                newly_excluded: false,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(state: NodeState, stats: &NodeStats) -> NodeFacts<'_> {
        NodeFacts {
            state,
            exclusion_reason: None,
            registered_at: 1_000,
            stats,
        }
    }

    fn judge(state: NodeState, stats: NodeStats) -> NodeStanding {
        node_standing(
            &facts(state, &stats),
            1_000 + 3_000,
            30,
            &ByzantinePolicy::default(),
        )
    }

    #[test]
    fn an_honest_node_keeps_its_state_and_gets_its_reputation() {
        let stats = NodeStats {
            heartbeats: 100,
            assigned: 20,
            completed: 20,
            agreed: 20,
            ..NodeStats::default()
        };
        let standing = judge(NodeState::Active, stats);
        assert_eq!(standing.state, NodeState::Active);
        assert!(!standing.newly_excluded);
        assert_eq!(standing.exclusion_reason, None);
        assert_eq!(
            standing.reputation_micros,
            reputation_micros(&stats, 3_000, 30, true)
        );
        assert!(standing.reputation_micros > 0);
    }

    #[test]
    fn wrong_results_exclude_at_the_threshold_not_before() {
        let policy = ByzantinePolicy::default();
        let below = NodeStats {
            wrong: u64::from(policy.wrong_results) - 1,
            ..NodeStats::default()
        };
        assert_eq!(judge(NodeState::Active, below).state, NodeState::Active);
        let at = NodeStats {
            wrong: u64::from(policy.wrong_results),
            ..NodeStats::default()
        };
        let standing = judge(NodeState::Active, at);
        assert_eq!(standing.state, NodeState::Byzantine);
        assert_eq!(standing.reputation_micros, 0);
        assert!(standing.newly_excluded);
        let reason = standing.exclusion_reason.unwrap();
        assert!(reason.starts_with("[InconsistentResults]"), "{reason}");
        assert!(reason.contains("wrong results 3"), "{reason}");
    }

    #[test]
    fn one_invalid_signature_policy_violation_or_malicious_pattern_excludes() {
        for stats in [
            NodeStats {
                invalid_signatures: 1,
                ..NodeStats::default()
            },
            NodeStats {
                policy_violations: 1,
                ..NodeStats::default()
            },
            NodeStats {
                malicious_patterns: 1,
                ..NodeStats::default()
            },
        ] {
            let standing = judge(NodeState::Active, stats);
            assert_eq!(standing.state, NodeState::Byzantine, "{stats:?}");
            assert!(standing.newly_excluded);
        }
    }

    #[test]
    fn failed_quorums_exclude_only_when_repeated() {
        let four = NodeStats {
            consensus_failures: 4,
            ..NodeStats::default()
        };
        assert_eq!(judge(NodeState::Active, four).state, NodeState::Active);
        let five = NodeStats {
            consensus_failures: 5,
            ..NodeStats::default()
        };
        assert_eq!(judge(NodeState::Active, five).state, NodeState::Byzantine);
    }

    #[test]
    fn exclusion_is_sticky_and_keeps_the_first_reason() {
        let stats = NodeStats::default();
        let node = NodeFacts {
            exclusion_reason: Some("first"),
            ..facts(NodeState::Byzantine, &stats)
        };
        let standing = node_standing(&node, 4_000, 30, &ByzantinePolicy::default());
        assert_eq!(
            standing,
            NodeStanding {
                state: NodeState::Byzantine,
                reputation_micros: 0,
                exclusion_reason: Some("first".into()),
                newly_excluded: false,
            }
        );
    }

    #[test]
    fn an_offline_node_keeps_its_state() {
        let standing = judge(NodeState::Offline, NodeStats::default());
        assert_eq!(standing.state, NodeState::Offline);
        assert!(!standing.newly_excluded);
    }

    #[test]
    fn evidence_saturates_at_u32() {
        let stats = NodeStats {
            wrong: u64::MAX,
            ..NodeStats::default()
        };
        assert_eq!(evidence(&stats).wrong_results, u32::MAX);
    }
}
