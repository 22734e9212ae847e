//! The Datalog rules and `askee_core::rules` must agree on every verdict:
//! Byzantine exclusion, revocation, token validity, permission, eligibility
//! and the combined assignment decision, on thousands of random scenarios.
//! Values are drawn so that they often sit exactly on a threshold.

use std::collections::HashSet;

use askee_core::rules::{
    Action, ByzantineEvidence, ByzantinePolicy, NodeFacts, NodeProfile, Reputation,
    ReputationMetrics, ResourceProfile, RevocationFacts, SignatureFact, TaskFacts,
    TaskRequirements, TaskTypePolicy, TokenFacts, action_permitted, assignment_allowed,
    byzantine_node_excluded, consent_revoked, effective_reputation, revocation_status,
    task_assignment_eligible, valid_consent_token,
};
use askee_core::token::RevocationStatus;
use askee_core::wire::v1::{
    ConsentTokenPayload, Monitoring, Permissions, Resources, TOKEN_VERSION, TaskPermissions,
};
use askee_logic::{Amounts, NodeIn, Scenario, TaskIn, TokenIn, TypeIn, Verdicts, evaluate};
use proptest::prelude::*;

const TYPE_NAMES: [&str; 4] = [
    "ml-training",
    "data-processing",
    "scientific-compute",
    "other",
];
const NOW: i64 = 10_000;

fn rate() -> impl Strategy<Value = u64> {
    prop_oneof![3 => (5u64..=10).prop_map(|x| x * 100), 1 => 0u64..=1000]
}

fn micros() -> impl Strategy<Value = u32> {
    prop_oneof![3 => (0u32..=10).prop_map(|x| x * 100_000), 1 => 0u32..=1_000_000]
}

fn evidence() -> impl Strategy<Value = u32> {
    prop_oneof![15 => Just(0u32), 1 => 1u32..4]
}

/// Times on and around every boundary of the lifetime rule.
fn instant() -> impl Strategy<Value = i64> {
    proptest::sample::select(vec![
        NOW - 100,
        NOW - 1,
        NOW,
        NOW + 1,
        NOW + 59,
        NOW + 60,
        NOW + 61,
        NOW + 100,
    ])
}

/// Needs are drawn small and capacities larger, so that every bound is
/// both met and exceeded in a useful share of scenarios.
fn needs() -> impl Strategy<Value = Amounts> {
    amounts_in(0..3)
}

fn capacity() -> impl Strategy<Value = Amounts> {
    amounts_in(1..7)
}

fn amounts_in(r: std::ops::Range<u64>) -> impl Strategy<Value = Amounts> {
    (r.clone(), r.clone(), r.clone(), r.clone(), r).prop_map(|(a, b, c, d, e)| Amounts {
        cpu_cores: a,
        cpu_percent: b,
        ram_mb: c,
        storage_gb: d,
        bandwidth_mbps: e,
    })
}

fn node(id: u32) -> impl Strategy<Value = NodeIn> {
    (
        proptest::option::weighted(0.9, [rate(), rate(), rate(), rate()]),
        proptest::bool::weighted(0.1),
        [evidence(), evidence(), evidence(), evidence(), evidence()],
        proptest::option::weighted(0.9, capacity()),
    )
        .prop_map(move |(metrics, flagged, evidence, profile)| NodeIn {
            id,
            metrics,
            flagged,
            evidence,
            profile,
        })
}

fn token(id: u32) -> impl Strategy<Value = TokenIn> {
    (
        (0u32..3, 0u32..2),
        proptest::option::weighted(0.9, proptest::bool::weighted(0.9)),
        (instant(), instant()),
        (proptest::bool::weighted(0.1), proptest::bool::weighted(0.1)),
        proptest::sample::subsequence(vec![0u32, 1, 2, 3], 0..=4),
        0u32..50,
        proptest::option::weighted(0.9, micros()),
        capacity(),
    )
        .prop_map(
            move |(
                (subject, grant),
                signature_ok,
                (issued_at, expires_at),
                (user_revoked, revocation_unknown),
                allowlist,
                max_hours,
                min_reputation,
                limits,
            )| TokenIn {
                id,
                subject,
                grant,
                signature_ok,
                issued_at,
                expires_at,
                user_revoked,
                revocation_unknown,
                allowlist,
                max_hours,
                min_reputation,
                limits,
            },
        )
}

fn scenario() -> impl Strategy<Value = Scenario> {
    let nodes = (node(0), node(1), node(2)).prop_map(|(a, b, c)| vec![a, b, c]);
    let tokens = (token(0), token(1), token(2), token(3)).prop_map(|(a, b, c, d)| vec![a, b, c, d]);
    let types = [
        proptest::option::weighted(0.8, (0u32..50, micros())),
        proptest::option::weighted(0.8, (0u32..50, micros())),
        proptest::option::weighted(0.8, (0u32..50, micros())),
        proptest::option::weighted(0.3, (0u32..50, micros())),
    ]
    .prop_map(|ts| {
        ts.into_iter()
            .enumerate()
            .filter_map(|(i, t)| {
                t.map(|(max_hours, min_reputation)| TypeIn {
                    id: i as u32,
                    max_hours,
                    min_reputation,
                })
            })
            .collect::<Vec<_>>()
    });
    let task = |id| {
        (0u32..4, 0u32..30, needs()).prop_map(move |(task_type, hours, needs)| TaskIn {
            id,
            task_type,
            hours,
            needs,
        })
    };
    let tasks = (task(0), task(1), task(2)).prop_map(|(a, b, c)| vec![a, b, c]);
    (
        nodes,
        tokens,
        types,
        tasks,
        [0u32..5, 0u32..5, 0u32..5, 0u32..5, 0u32..5],
        prop_oneof![
            3 => Just(Vec::new()),
            1 => proptest::sample::subsequence(vec![0u32, 1], 1..=2)
        ],
    )
        .prop_map(
            |(nodes, tokens, types, tasks, thresholds, revoked_grants)| Scenario {
                now: NOW,
                nodes,
                tokens,
                types,
                tasks,
                thresholds,
                revoked_grants,
            },
        )
}

fn node_id(id: u32) -> String {
    format!("node-{id}")
}

/// The same scenario decided by `askee_core::rules`, the way the
/// coordinator composes its functions.
fn decide_with_core(s: &Scenario) -> Verdicts {
    let policy = ByzantinePolicy {
        wrong_results: s.thresholds[0],
        invalid_signatures: s.thresholds[1],
        policy_violations: s.thresholds[2],
        consensus_failures: s.thresholds[3],
        malicious_patterns: s.thresholds[4],
    };
    let mut v = Verdicts::default();
    let mut nodes = Vec::new();
    for n in &s.nodes {
        let evidence = ByzantineEvidence {
            wrong_results: n.evidence[0],
            invalid_signatures: n.evidence[1],
            policy_violations: n.evidence[2],
            consensus_failures: n.evidence[3],
            malicious_patterns: n.evidence[4],
        };
        let exclusion = byzantine_node_excluded(n.flagged, &evidence, &policy);
        if exclusion.is_some() {
            v.excluded.insert(n.id);
        }
        let reputation = match n.metrics {
            Some([c, a, u, p]) => effective_reputation(
                &ReputationMetrics {
                    completion_rate: c as f64 / 1000.0,
                    accuracy_rate: a as f64 / 1000.0,
                    uptime_rate: u as f64 / 1000.0,
                    participation_rate: p as f64 / 1000.0,
                },
                exclusion.as_ref(),
            ),
            None => exclusion.as_ref().map(|e| e.reputation),
        };
        nodes.push((
            n.id,
            NodeFacts {
                node_id: node_id(n.id),
                reputation,
                byzantine: exclusion.is_some(),
                profile: n.profile.map(|p| NodeProfile {
                    cpu_cores: p.cpu_cores as u32,
                    ram_mb: p.ram_mb,
                    storage_gb: p.storage_gb,
                    bandwidth_mbps: p.bandwidth_mbps,
                }),
            },
        ));
    }
    let types: Vec<TaskTypePolicy> = s
        .types
        .iter()
        .map(|t| TaskTypePolicy {
            name: TYPE_NAMES[t.id as usize].into(),
            max_duration_hours: t.max_hours,
            min_reputation: Reputation::from_micros(t.min_reputation).unwrap(),
            resource_profile: ResourceProfile::CpuIntensive,
        })
        .collect();
    let mut tokens = Vec::new();
    for t in &s.tokens {
        let triggers = consent_revoked(&RevocationFacts {
            token_revoked_by_user: t.user_revoked,
            grant_revoked_by_user: s.revoked_grants.contains(&t.grant),
            subject_byzantine: v.excluded.contains(&t.subject),
        });
        if !triggers.is_empty() {
            v.revoked.insert(t.id);
        }
        let revocation = match (triggers.is_empty(), t.revocation_unknown) {
            (false, _) => revocation_status(&triggers, NOW),
            (true, true) => RevocationStatus::Unknown,
            (true, false) => RevocationStatus::Active,
        };
        let facts = TokenFacts {
            payload: ConsentTokenPayload {
                version: TOKEN_VERSION.into(),
                token_id: format!("tok-{}", t.id),
                grant_id: format!("grant-{}", t.grant),
                issuer: "coordinator".into(),
                subject: node_id(t.subject),
                issued_at: t.issued_at,
                expires_at: t.expires_at,
                permissions: Permissions {
                    resources: Resources {
                        cpu_percent_max: t.limits.cpu_percent as u32,
                        ram_mb_max: t.limits.ram_mb,
                        storage_gb_max: t.limits.storage_gb,
                        bandwidth_mbps_max: t.limits.bandwidth_mbps,
                    },
                    tasks: TaskPermissions {
                        allowlist: t
                            .allowlist
                            .iter()
                            .map(|&i| TYPE_NAMES[i as usize].into())
                            .collect(),
                        min_reputation: t.min_reputation.map_or(f64::NAN, |m| f64::from(m) / 1e6),
                        max_duration_hours: t.max_hours,
                    },
                    monitoring: Monitoring {
                        user_activity_yield: true,
                        resource_monitoring: true,
                        audit_logging: true,
                    },
                },
                revocation_url: format!("http://127.0.0.1/revoke/{}", t.id),
            },
            signature: match t.signature_ok {
                Some(true) => SignatureFact::Verified,
                Some(false) => SignatureFact::Invalid,
                None => SignatureFact::Unchecked,
            },
            revocation,
        };
        if valid_consent_token(&facts, NOW).holds() {
            v.valid.insert(t.id);
        }
        tokens.push((t.id, facts));
    }
    for k in &s.tasks {
        let task = TaskFacts {
            task_type: TYPE_NAMES[k.task_type as usize].into(),
            duration_hours: k.hours,
            requirements: TaskRequirements {
                cpu_cores: k.needs.cpu_cores as u32,
                cpu_percent: k.needs.cpu_percent as u32,
                ram_mb: k.needs.ram_mb,
                storage_gb: k.needs.storage_gb,
                bandwidth_mbps: k.needs.bandwidth_mbps,
            },
        };
        for (n, node) in &nodes {
            for (t, token) in &tokens {
                let key = (*n, k.id, *t);
                if action_permitted(&node.node_id, Action::RunTask(&task), token, NOW).holds() {
                    v.permitted.insert(key);
                }
                if task_assignment_eligible(node, &task, &token.payload.permissions, &types).holds()
                {
                    v.eligible.insert(key);
                }
                if assignment_allowed(node, &task, token, &types, NOW).holds() {
                    v.assignable.insert(key);
                }
            }
        }
    }
    v
}

fn diff<T: std::hash::Hash + Eq + Clone + std::fmt::Debug>(
    a: &HashSet<T>,
    b: &HashSet<T>,
) -> (Vec<T>, Vec<T>) {
    (
        a.difference(b).cloned().collect(),
        b.difference(a).cloned().collect(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn datalog_and_core_rules_agree(s in scenario()) {
        let datalog = evaluate(&s);
        let core = decide_with_core(&s);
        prop_assert_eq!(&datalog.excluded, &core.excluded, "excluded {:?}", diff(&datalog.excluded, &core.excluded));
        prop_assert_eq!(&datalog.revoked, &core.revoked, "revoked {:?}", diff(&datalog.revoked, &core.revoked));
        prop_assert_eq!(&datalog.valid, &core.valid, "valid {:?}", diff(&datalog.valid, &core.valid));
        prop_assert_eq!(&datalog.permitted, &core.permitted, "permitted {:?}", diff(&datalog.permitted, &core.permitted));
        prop_assert_eq!(&datalog.eligible, &core.eligible, "eligible {:?}", diff(&datalog.eligible, &core.eligible));
        prop_assert_eq!(&datalog.assignable, &core.assignable, "assignable {:?}", diff(&datalog.assignable, &core.assignable));
    }
}

/// The generator reaches both verdicts of every rule often enough for the
/// comparison above to mean something.
#[test]
fn scenarios_cover_both_verdicts() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let strategy = scenario();
    let (mut excluded, mut revoked, mut valid, mut permitted, mut eligible, mut assignable) =
        (0, 0, 0, 0, 0, 0);
    let cases = 500;
    for _ in 0..cases {
        let s = strategy.new_tree(&mut runner).unwrap().current();
        let v = evaluate(&s);
        excluded += v.excluded.len();
        revoked += v.revoked.len();
        valid += v.valid.len();
        permitted += v.permitted.len();
        eligible += v.eligible.len();
        assignable += v.assignable.len();
    }
    // Per scenario: 3 nodes, 4 tokens, 3 tasks, so 36 triples.
    for (name, got, out_of) in [
        ("excluded", excluded, 3 * cases),
        ("revoked", revoked, 4 * cases),
        ("valid", valid, 4 * cases),
        ("permitted", permitted, 36 * cases),
        ("eligible", eligible, 36 * cases),
        ("assignable", assignable, 36 * cases),
    ] {
        eprintln!("{name}: {got} of {out_of}");
        assert!(
            got > 0 && got < out_of,
            "{name}: {got} of {out_of} hold; the generator does not exercise both verdicts"
        );
    }
}
