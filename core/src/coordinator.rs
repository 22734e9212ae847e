//! Pure decisions of the task coordinator that the seed leaves open: how a
//! node's counters become the reputation metrics (with bootstrapping), how
//! long a task runs in whole hours, which network prefix a node counts as
//! (Sybil diversity), adaptive replication and spot checks, and the
//! validation of an operator's task statement.

use crate::rules::{
    NodeFacts, Reason, ReputationMetrics, TaskFacts, TaskRequirements, TaskTypePolicy, TokenFacts,
    VerificationPolicy, assignment_allowed,
};
use crate::validate::FieldError;
use crate::wire::v1::{TASK_STATEMENT_VERSION, TaskStatement};

/// Results a node must have judged before its rates stop being padded: a
/// new node earns eligibility through this many bootstrapping challenges
/// (tasks with known answers) or verified replicas.
pub const BOOTSTRAP_RESULTS: u64 = 3;

/// The smallest known-answer challenge (WebAssembly text for WASI preview
/// 1): it copies standard input to standard output, so the operator knows
/// the right answer for any input it picks. The demo's bootstrapping
/// challenges and the end-to-end tests use it.
pub const ECHO_CHALLENGE_WAT: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start") (local $n i32)
    (block $done (loop $more
      (i32.store (i32.const 0) (i32.const 64))
      (i32.store (i32.const 4) (i32.const 4096))
      (drop (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))
      (local.set $n (i32.load (i32.const 8)))
      (br_if $done (i32.eqz (local.get $n)))
      (i32.store (i32.const 4) (local.get $n))
      (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
      (br $more)))))"#;

/// A node's counters as the coordinator keeps them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct NodeCounters {
    /// Replicas leased to the node.
    pub assigned: u64,
    /// Replicas it reported as completed.
    pub completed: u64,
    /// Results that agreed with the accepted quorum or a known answer.
    pub agreed: u64,
    /// Results that disagreed.
    pub wrong: u64,
    /// Heartbeats received.
    pub heartbeats: u64,
    /// Seconds since registration.
    pub age_seconds: u64,
    /// Expected heartbeat interval in seconds.
    pub heartbeat_interval: u64,
    /// Whether the node is active now.
    pub active: bool,
}

/// The four rates of `node_reputation` from a node's counters. Rates are
/// padded to [`BOOTSTRAP_RESULTS`] judged results, so a new node starts
/// below every task type's floor and climbs by producing verified results;
/// heartbeats count against the number expected since registration.
pub fn reputation_metrics(c: &NodeCounters) -> ReputationMetrics {
    let rate = |num: u64, den: u64| -> f64 {
        if den == 0 {
            0.0
        } else {
            (num as f64 / den as f64).clamp(0.0, 1.0)
        }
    };
    let judged = c.agreed + c.wrong;
    let expected_beats = (c.age_seconds / c.heartbeat_interval.max(1)).max(1);
    ReputationMetrics {
        completion_rate: rate(c.completed, c.assigned.max(BOOTSTRAP_RESULTS)),
        accuracy_rate: rate(c.agreed, judged.max(BOOTSTRAP_RESULTS)),
        uptime_rate: rate(c.heartbeats.max(1), expected_beats),
        participation_rate: if c.active { 1.0 } else { 0.0 },
    }
}

/// Whole hours a task may run (its wall-clock limit, rounded up, at least 1).
pub fn duration_hours(wall_seconds: u64) -> u32 {
    u32::try_from(wall_seconds.div_ceil(3600).max(1)).unwrap_or(u32::MAX)
}

/// What eligibility rules see of a task statement.
pub fn task_facts(statement: &TaskStatement) -> TaskFacts {
    TaskFacts {
        task_type: statement.task_type.clone(),
        duration_hours: duration_hours(statement.limits.wall_seconds),
        requirements: TaskRequirements {
            cpu_cores: statement.requirements.cpu_cores,
            cpu_percent: statement.limits.cpu_percent,
            ram_mb: statement
                .requirements
                .ram_mb
                .max(statement.limits.memory_mb),
            storage_gb: statement.requirements.storage_gb,
            bandwidth_mbps: statement.requirements.bandwidth_mbps,
        },
    }
}

/// The network a node counts as for replica diversity: the /24 of an IPv4
/// address, the /48 of an IPv6 one.
pub fn network_prefix(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.0/24", o[0], o[1], o[2])
        }
        std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => network_prefix(std::net::IpAddr::V4(v4)),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}::/48", s[0], s[1], s[2])
            }
        },
    }
}

/// Adaptive replication (BOINC's scheme with spot checks), made stricter
/// where BOINC accepts some wrong results: trust needs a long clean streak,
/// a longer one after every wrong result, and then falls off quickly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AdaptivePolicy {
    /// Consecutive valid results before a node with no wrong result is ever
    /// trusted alone; a node with `w` wrong results on record needs
    /// `min_streak · (1 + w)²`. A node that errs at rate `e` reaches the
    /// first threshold with probability `(1 − e)^min_streak` per run
    /// (0.5% for `e` = 10% at 50).
    pub min_streak: u64,
    /// How fast full replication falls once trusted: its chance is
    /// `(decay / (streak − needed + decay))²`.
    pub decay: u64,
    /// Share of single-replica tasks (millionths) that are still fully
    /// replicated as a spot check, however long the record.
    pub spot_check_micros: u32,
}

impl Default for AdaptivePolicy {
    fn default() -> Self {
        Self {
            min_streak: 50,
            decay: 5,
            spot_check_micros: 10_000,
        }
    }
}

/// The part of a node's record adaptive replication looks at.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct TrustRecord {
    /// Consecutive results judged valid.
    pub streak: u64,
    /// Results judged wrong, ever.
    pub wrong: u64,
}

/// The decision for an adaptive task's first replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Replication {
    /// Replicate fully: `2f+1` replicas and the usual quorum.
    Full,
    /// Trust the leasing node's result alone.
    Single,
}

/// The clean streak a node needs before adaptive replication ever trusts
/// it alone.
pub fn trust_threshold(policy: &AdaptivePolicy, wrong: u64) -> u64 {
    let times = wrong.saturating_add(1);
    policy
        .min_streak
        .max(1)
        .saturating_mul(times.saturating_mul(times))
}

/// Decides whether an adaptive task is given to a node alone. Below
/// [`trust_threshold`] it is always full; above, the chance of full
/// replication is `(decay / (streak − threshold + decay))²`, never below the
/// spot-check share. `random` is a uniformly random number the caller draws.
pub fn adaptive_replication(
    policy: &AdaptivePolicy,
    record: TrustRecord,
    random: u64,
) -> Replication {
    let needed = trust_threshold(policy, record.wrong);
    if record.streak < needed {
        return Replication::Full;
    }
    let micros = 1_000_000u128;
    let k = u128::from(policy.decay.max(1));
    let over = u128::from(record.streak - needed) + k;
    let replicate = (micros * k * k / (over * over))
        .max(u128::from(policy.spot_check_micros))
        .min(micros);
    if u128::from(random) % micros < replicate {
        Replication::Full
    } else {
        Replication::Single
    }
}

/// What a lease makes of one candidate task for one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LeaseChoice {
    /// Not for this node.
    Skip,
    /// Take one replica under the usual quorum.
    Take,
    /// Adaptive replication: this node alone, under spot checks.
    TakeAlone,
}

/// A pending task as the lease sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct LeaseCandidate {
    /// The facts of the task's signed statement; `None` when the stored
    /// statement cannot be read, which never leases.
    pub facts: Option<TaskFacts>,
    /// A bootstrapping challenge (known answer).
    pub bootstrap: bool,
    /// The operator allowed adaptive replication.
    pub adaptive: bool,
    /// Replicas ever assigned so far.
    pub replicas_total: u32,
}

/// Whether a candidate task may go to this node, and how: the seed's
/// `assignment_allowed` (permission and eligibility), except that a
/// bootstrapping challenge waives the reputation floors (it is how a new
/// node earns a reputation; every other reason still blocks it), then
/// adaptive replication for an adaptive task's first replica. A challenge
/// or a task already replicated is never taken alone; a spot check may go
/// first to a trusted node too, so it cannot tell checked tasks from
/// trusted ones. `random` is a uniformly random number the caller draws.
#[allow(clippy::too_many_arguments)]
pub fn lease_choice(
    node: &NodeFacts,
    token: &TokenFacts,
    task_types: &[TaskTypePolicy],
    adaptive: &AdaptivePolicy,
    record: TrustRecord,
    now: i64,
    candidate: &LeaseCandidate,
    random: u64,
) -> LeaseChoice {
    let Some(facts) = &candidate.facts else {
        return LeaseChoice::Skip;
    };
    let verdict = assignment_allowed(node, facts, token, task_types, now);
    let blocking = verdict.reasons().iter().any(|r| {
        !(candidate.bootstrap
            && matches!(
                r,
                Reason::ReputationBelowType { .. }
                    | Reason::ReputationBelowToken { .. }
                    | Reason::ReputationUnknown
            ))
    });
    if blocking {
        return LeaseChoice::Skip;
    }
    if candidate.adaptive
        && !candidate.bootstrap
        && candidate.replicas_total == 0
        && adaptive_replication(adaptive, record, random) == Replication::Single
    {
        return LeaseChoice::TakeAlone;
    }
    LeaseChoice::Take
}

/// A claim about a replica's work that no honest agent can make (the seed's
/// `exhibits_malicious_patterns`): the sandbox stops a module when its fuel runs
/// out, so an honest report never claims more fuel than the task's statement
/// allows. Fuel is deterministic, so this is never a measuring error. `None`
/// when the claim is possible.
pub fn impossible_claim(fuel_limit: u64, fuel_consumed: u64) -> Option<String> {
    (fuel_consumed > fuel_limit).then(|| {
        format!("{fuel_consumed} fuel consumed where the task allows at most {fuel_limit}")
    })
}

/// The verification policy of a task: `f` and its cap, or `f = 0` with one
/// replica when adaptive replication trusted a node alone.
pub fn verification_policy(f: u32, max_replicas: u32, trusted_single: bool) -> VerificationPolicy {
    if trusted_single {
        VerificationPolicy {
            f: 0,
            max_replicas: 1,
        }
    } else {
        VerificationPolicy { f, max_replicas }
    }
}

/// Most Byzantine replicas one task may tolerate; bounds the replica count.
pub const MAX_F: u32 = 10;

/// Checks an operator's task statement field by field.
pub fn validate_statement(
    s: &TaskStatement,
    task_types: &[&str],
    now: i64,
    prefix: &str,
) -> Vec<FieldError> {
    let mut out = Vec::new();
    let mut err = |field: &str, problem: String| {
        out.push(FieldError {
            field: format!("{prefix}{field}"),
            problem,
        })
    };
    if s.version != TASK_STATEMENT_VERSION {
        err(
            "version",
            format!("must be {TASK_STATEMENT_VERSION:?}, got {:?}", s.version),
        );
    }
    if s.module_sha256.len() != 64
        || !s
            .module_sha256
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        err(
            "module_sha256",
            "must be 64 lower-case hex digits".to_owned(),
        );
    }
    if !task_types.contains(&s.task_type.as_str()) {
        err(
            "task_type",
            format!(
                "{:?} is not offered; offered: {}",
                s.task_type,
                task_types.join(", ")
            ),
        );
    }
    if s.f > MAX_F {
        err("f", format!("must be at most {MAX_F}, got {}", s.f));
    }
    let min = 2 * s.f.min(MAX_F) + 1;
    if s.max_replicas < min || s.max_replicas > 4 * MAX_F + 1 {
        err(
            "max_replicas",
            format!(
                "must be from 2f+1 = {min} to {}, got {}",
                4 * MAX_F + 1,
                s.max_replicas
            ),
        );
    }
    if s.deadline <= now {
        err(
            "deadline",
            format!("must be in the future (now is {now}), got {}", s.deadline),
        );
    }
    if !(1..=100).contains(&s.limits.cpu_percent) {
        err(
            "limits.cpu_percent",
            format!("must be from 1 to 100, got {}", s.limits.cpu_percent),
        );
    }
    for (field, value) in [
        ("limits.fuel", s.limits.fuel),
        ("limits.memory_mb", s.limits.memory_mb),
        ("limits.wall_seconds", s.limits.wall_seconds),
    ] {
        if value == 0 {
            err(field, "must be positive".to_owned());
        }
    }
    if s.nonce.is_empty() || s.nonce.len() > 128 {
        err("nonce", "must be 1 to 128 characters".to_owned());
    }
    for name in s.inputs.files.keys() {
        if name.is_empty()
            || name.starts_with('/')
            || name
                .split('/')
                .any(|p| p == ".." || p == "." || p.is_empty())
        {
            err(
                &format!("inputs.files.{name}"),
                "must be a relative path without . or .. parts".to_owned(),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::{Reputation, node_reputation};

    #[test]
    fn new_nodes_start_below_every_floor_and_earn_eligibility() {
        let mut c = NodeCounters {
            heartbeats: 1,
            age_seconds: 0,
            heartbeat_interval: 10,
            active: true,
            ..Default::default()
        };
        let fresh = node_reputation(&reputation_metrics(&c)).unwrap();
        assert!(fresh < Reputation::from_f64(0.5).unwrap(), "{fresh:?}");
        c.assigned = 3;
        c.completed = 3;
        c.agreed = 3;
        let earned = node_reputation(&reputation_metrics(&c)).unwrap();
        assert_eq!(earned, Reputation::MAX);
        c.assigned = 4;
        c.completed = 4;
        c.wrong = 1;
        let dented = node_reputation(&reputation_metrics(&c)).unwrap();
        assert!(dented < earned);
    }

    #[test]
    fn adaptive_replication_trusts_only_long_records_and_keeps_spot_checks() {
        let p = AdaptivePolicy::default();
        let clean = |streak| TrustRecord { streak, wrong: 0 };
        for r in 0..1000 {
            assert_eq!(
                adaptive_replication(&p, clean(49), r * 997),
                Replication::Full
            );
            assert_eq!(
                adaptive_replication(&p, clean(50), r * 997),
                Replication::Full
            );
            // One wrong result on record: four times the streak.
            let erred = TrustRecord {
                streak: 199,
                wrong: 1,
            };
            assert_eq!(adaptive_replication(&p, erred, r * 997), Replication::Full);
        }
        assert_eq!(trust_threshold(&p, 0), 50);
        assert_eq!(trust_threshold(&p, 2), 450);
        assert_eq!(trust_threshold(&p, u64::MAX), u64::MAX);
        let singles = |record| {
            (0..10_000u64)
                .filter(|r| {
                    adaptive_replication(&p, record, r.wrapping_mul(0x9E37_79B9_7F4A_7C15))
                        == Replication::Single
                })
                .count()
        };
        let at55 = singles(clean(55));
        let at60 = singles(clean(60));
        let at5000 = singles(clean(5000));
        // (5/10)² = 25% and (5/15)² = 11% replicated.
        assert!((7_300..=7_700).contains(&at55), "{at55}");
        assert!((8_700..=9_100).contains(&at60), "{at60}");
        assert!(at55 < at60 && at60 < at5000);
        // Spot checks: never more than 99% single.
        assert!((9_800..=9_960).contains(&at5000), "{at5000}");
        let erred = singles(TrustRecord {
            streak: 5000,
            wrong: 2,
        });
        assert!((9_800..=9_960).contains(&erred), "{erred}");
        let extreme = TrustRecord {
            streak: u64::MAX,
            wrong: 0,
        };
        assert!(singles(extreme) >= 9_800);
    }

    /// `lease_choice` against `assignment_allowed`, over every combination
    /// of the facts it branches on: a challenge waives only the reputation
    /// floors, nothing else leases an ineligible task, and only an adaptive
    /// ordinary task's first replica may go alone.
    #[test]
    fn lease_choice_follows_the_eligibility_rules() {
        use crate::rules::default_task_types;
        use crate::rules::fixtures::{NOW, node, task, token};
        use crate::token::RevocationStatus;
        let types = default_task_types();
        let adaptive = AdaptivePolicy::default();
        let reputations = [None, Some(0), Some(100_000), Some(850_000), Some(1_000_000)];
        let mut seen = std::collections::BTreeSet::new();
        for reputation in reputations {
            for revoked in [false, true] {
                for too_big in [false, true] {
                    for bootstrap in [false, true] {
                        for adaptive_task in [false, true] {
                            for replicas_total in [0, 1] {
                                for streak in [0, 49, 50, 1_000_000] {
                                    for random in [0, 999_999] {
                                        let mut n = node();
                                        n.reputation = reputation.and_then(Reputation::from_micros);
                                        let mut tok = token();
                                        if revoked {
                                            tok.revocation = RevocationStatus::Revoked {
                                                revoked_at: NOW - 1,
                                                reason: "test".into(),
                                            };
                                        }
                                        let mut t = task();
                                        if too_big {
                                            t.requirements.ram_mb = 1 << 30;
                                        }
                                        let candidate = LeaseCandidate {
                                            facts: Some(t.clone()),
                                            bootstrap,
                                            adaptive: adaptive_task,
                                            replicas_total,
                                        };
                                        let record = TrustRecord { streak, wrong: 0 };
                                        let got = lease_choice(
                                            &n, &tok, &types, &adaptive, record, NOW, &candidate,
                                            random,
                                        );
                                        let verdict = assignment_allowed(&n, &t, &tok, &types, NOW);
                                        let only_reputation = verdict.reasons().iter().all(|r| {
                                            matches!(
                                                r,
                                                Reason::ReputationBelowType { .. }
                                                    | Reason::ReputationBelowToken { .. }
                                                    | Reason::ReputationUnknown
                                            )
                                        });
                                        let may = verdict.reasons().is_empty()
                                            || (bootstrap && only_reputation);
                                        assert_eq!(
                                            got != LeaseChoice::Skip,
                                            may,
                                            "{candidate:?} {verdict:?}"
                                        );
                                        if got == LeaseChoice::TakeAlone {
                                            assert!(
                                                adaptive_task && !bootstrap && replicas_total == 0
                                            );
                                            assert_eq!(
                                                adaptive_replication(&adaptive, record, random),
                                                Replication::Single
                                            );
                                        }
                                        seen.insert(format!("{got:?}"));
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        assert_eq!(seen.len(), 3, "every outcome occurs: {seen:?}");
        let unreadable = LeaseCandidate {
            facts: None,
            bootstrap: true,
            adaptive: false,
            replicas_total: 0,
        };
        assert_eq!(
            lease_choice(
                &node(),
                &token(),
                &types,
                &adaptive,
                TrustRecord::default(),
                NOW,
                &unreadable,
                0
            ),
            LeaseChoice::Skip
        );
    }

    #[test]
    fn only_more_fuel_than_the_task_allows_is_impossible() {
        assert_eq!(impossible_claim(1_000, 0), None);
        assert_eq!(impossible_claim(1_000, 1_000), None, "killed at the limit");
        let claim = impossible_claim(1_000, 1_001).unwrap();
        assert!(claim.contains("1001") && claim.contains("1000"), "{claim}");
        assert!(impossible_claim(0, u64::MAX).is_some());
    }

    #[test]
    fn prefixes_group_neighbours() {
        let a = network_prefix("10.1.2.3".parse().unwrap());
        let b = network_prefix("10.1.2.200".parse().unwrap());
        let c = network_prefix("10.1.3.3".parse().unwrap());
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(
            network_prefix("2001:db8:1:2::1".parse().unwrap()),
            "2001:db8:1::/48"
        );
    }

    #[test]
    fn duration_rounds_up() {
        assert_eq!(duration_hours(0), 1);
        assert_eq!(duration_hours(3600), 1);
        assert_eq!(duration_hours(3601), 2);
    }
}
