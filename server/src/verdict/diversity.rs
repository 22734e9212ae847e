//! Sybil diversity when leasing: a node's candidates rank after the tasks
//! whose other replicas run under the same owner or network prefix.

/// The rank penalty of a candidate task, lower first: 2 when a live replica
/// runs under the node's owner (strongly avoided), plus 1 when one runs in
/// its network prefix. Counts are of the task's live replicas.
pub fn diversity_penalty(same_owner: i64, same_network: i64) -> i64 {
    2 * same_owner.min(1) + same_network.min(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_owner_weighs_more_than_the_same_network() {
        assert_eq!(diversity_penalty(0, 0), 0);
        assert_eq!(diversity_penalty(0, 3), 1);
        assert_eq!(diversity_penalty(1, 0), 2);
        assert_eq!(diversity_penalty(4, 2), 3);
    }
}
