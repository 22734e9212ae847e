//! A node's counters and what changes them: its folded events and the
//! misbehaviour it is caught at outside the quorum.

use super::events::NodeEventKind;

/// A node's counters, as stored on its row.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeStats {
    pub heartbeats: u64,
    pub assigned: u64,
    pub completed: u64,
    pub failed: u64,
    pub agreed: u64,
    pub wrong: u64,
    pub invalid_signatures: u64,
    /// Protocol violations, such as reporting another node's assignment.
    pub policy_violations: u64,
    /// Signed claims no honest agent can make (`impossible_claim`).
    pub malicious_patterns: u64,
    pub consensus_failures: u64,
    pub streak: u64,
}

/// Misbehaviour a node is caught at outside the quorum, counted as
/// Byzantine evidence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Misbehaviour {
    /// A message or result whose signature did not verify.
    InvalidSignature,
    /// A signed request the protocol forbids, such as a result for another
    /// node's assignment.
    PolicyViolation,
    /// A signed claim no honest agent can make, such as more fuel consumed
    /// than the task allows (`askee_core::coordinator::impossible_claim`).
    MaliciousPattern,
}

impl NodeStats {
    /// Counts `times` consecutive events of one kind. Events must be applied
    /// in the order they happened: an agreed result extends the streak, a
    /// wrong one resets it.
    pub fn apply_event(&mut self, kind: NodeEventKind, times: u64) {
        match kind {
            NodeEventKind::Completed => self.completed += times,
            NodeEventKind::Failed => self.failed += times,
            NodeEventKind::Agreed => {
                self.agreed += times;
                self.streak += times;
            }
            NodeEventKind::Wrong => {
                self.wrong += times;
                self.streak = 0;
            }
            NodeEventKind::ConsensusFailure => self.consensus_failures += times,
        }
    }

    /// Counts one misbehaviour.
    pub fn count_misbehaviour(&mut self, kind: Misbehaviour) {
        match kind {
            Misbehaviour::InvalidSignature => self.invalid_signatures += 1,
            Misbehaviour::PolicyViolation => self.policy_violations += 1,
            Misbehaviour::MaliciousPattern => self.malicious_patterns += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_count_in_order_and_a_wrong_result_resets_the_streak() {
        let mut stats = NodeStats::default();
        stats.apply_event(NodeEventKind::Completed, 3);
        stats.apply_event(NodeEventKind::Agreed, 2);
        stats.apply_event(NodeEventKind::Wrong, 1);
        stats.apply_event(NodeEventKind::Agreed, 1);
        stats.apply_event(NodeEventKind::Failed, 1);
        stats.apply_event(NodeEventKind::ConsensusFailure, 2);
        assert_eq!(
            stats,
            NodeStats {
                completed: 3,
                agreed: 3,
                wrong: 1,
                streak: 1,
                failed: 1,
                consensus_failures: 2,
                ..NodeStats::default()
            }
        );
    }

    #[test]
    fn each_misbehaviour_has_its_own_counter() {
        let mut stats = NodeStats::default();
        stats.count_misbehaviour(Misbehaviour::InvalidSignature);
        stats.count_misbehaviour(Misbehaviour::PolicyViolation);
        stats.count_misbehaviour(Misbehaviour::PolicyViolation);
        stats.count_misbehaviour(Misbehaviour::MaliciousPattern);
        assert_eq!(stats.invalid_signatures, 1);
        assert_eq!(stats.policy_violations, 2);
        assert_eq!(stats.malicious_patterns, 1);
        assert_eq!(stats.wrong, 0);
    }
}
