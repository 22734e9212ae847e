//! A node's reputation from its counters (`node_reputation` over the rates
//! `reputation_metrics` derives).

use askee_core::coordinator::{NodeCounters, reputation_metrics};
use askee_core::rules::node_reputation;

use super::counters::NodeStats;

/// The reputation of a node that is not excluded, in millionths; zero when a
/// rate cannot be computed.
pub fn reputation_micros(
    stats: &NodeStats,
    age_seconds: u64,
    heartbeat_interval: u64,
    active: bool,
) -> u32 {
    let counters = NodeCounters {
        assigned: stats.assigned,
        completed: stats.completed,
        agreed: stats.agreed,
        wrong: stats.wrong,
        heartbeats: stats.heartbeats,
        age_seconds,
        heartbeat_interval,
        active,
    };
    node_reputation(&reputation_metrics(&counters))
        .map(|r| r.micros())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reliable() -> NodeStats {
        NodeStats {
            heartbeats: 100,
            assigned: 50,
            completed: 50,
            agreed: 50,
            streak: 50,
            ..NodeStats::default()
        }
    }

    #[test]
    fn a_new_node_starts_low_and_verified_results_raise_it() {
        let new = reputation_micros(&NodeStats::default(), 0, 30, true);
        let proven = reputation_micros(&reliable(), 100 * 30, 30, true);
        assert!(new < proven, "{new} < {proven}");
        assert!(proven <= 1_000_000);
    }

    #[test]
    fn wrong_results_and_inactivity_lower_it() {
        let good = reputation_micros(&reliable(), 100 * 30, 30, true);
        let wrong = NodeStats {
            agreed: 30,
            wrong: 20,
            ..reliable()
        };
        assert!(reputation_micros(&wrong, 100 * 30, 30, true) < good);
        assert!(reputation_micros(&reliable(), 100 * 30, 30, false) < good);
    }

    #[test]
    fn missed_heartbeats_lower_it() {
        let good = reputation_micros(&reliable(), 100 * 30, 30, true);
        // Ten times the age for the same heartbeats: a tenth of the uptime.
        assert!(reputation_micros(&reliable(), 1000 * 30, 30, true) < good);
    }
}
