//! The Datalog rules and `askee_core::rules` must agree on every verdict:
//! Byzantine exclusion, revocation, token validity, permission, eligibility
//! and the combined assignment decision, the reputation a node's counters
//! give, and the leases the coordinator may hand out, on thousands of random
//! scenarios. Values are drawn so that they often sit exactly on a threshold.

use std::collections::HashSet;

use askee_core::coordinator::{
    AdaptivePolicy, BOOTSTRAP_RESULTS, LeaseCandidate, LeaseChoice, NodeCounters, TrustRecord,
    lease_choice, reputation_metrics,
};
use askee_core::rules::node_reputation;
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
use askee_logic::{
    Amounts, CountersIn, NodeIn, Scenario, TaskIn, TokenIn, TypeIn, Verdicts, evaluate,
};
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

/// Counters small enough that the product of the three rate denominators
/// (at most 6, 7 and 3) has fewer than six factors of two: the exact score
/// is then never a half-millionth, where `f64` rounding may fall either way.
fn counters() -> impl Strategy<Value = CountersIn> {
    (
        (0u64..=6, 0u64..=7),
        (0u64..=4, 0u64..=3),
        (0u64..=4, 1u64..=3, 0u64..=3),
        proptest::bool::weighted(0.8),
    )
        .prop_map(
            |((assigned, completed), (agreed, wrong), (heartbeats, interval, periods), active)| {
                CountersIn {
                    assigned,
                    completed,
                    agreed,
                    wrong,
                    heartbeats,
                    // Up to three expected heartbeats, plus a remainder.
                    age_seconds: periods * interval + periods % 2,
                    heartbeat_interval: interval,
                    active,
                }
            },
        )
}

#[derive(Debug, Clone)]
enum Record {
    Metrics([u64; 4]),
    Counters(CountersIn),
    Unknown,
}

fn node(id: u32) -> impl Strategy<Value = NodeIn> {
    (
        prop_oneof![
            4 => [rate(), rate(), rate(), rate()].prop_map(Record::Metrics),
            5 => counters().prop_map(Record::Counters),
            1 => Just(Record::Unknown),
        ],
        proptest::bool::weighted(0.1),
        [evidence(), evidence(), evidence(), evidence(), evidence()],
        proptest::option::weighted(0.9, capacity()),
        (
            proptest::bool::weighted(0.9),
            proptest::sample::subsequence(vec![0u32, 1, 2], 0..=1),
            proptest::option::weighted(
                0.3,
                proptest::sample::subsequence(vec![0u32, 1, 2, 3], 0..=3),
            ),
        ),
    )
        .prop_map(
            move |(record, flagged, evidence, profile, (active, had, requested))| {
                let (metrics, counters) = match record {
                    Record::Metrics(m) => (Some(m), None),
                    Record::Counters(c) => (None, Some(c)),
                    Record::Unknown => (None, None),
                };
                NodeIn {
                    id,
                    metrics,
                    counters,
                    active,
                    had,
                    requested,
                    flagged,
                    evidence,
                    profile,
                }
            },
        )
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
        (
            (0u32..4, 0u32..30, needs()),
            (
                proptest::bool::weighted(0.4),
                proptest::bool::weighted(0.9),
                (0u64..3, 0u64..4),
                instant(),
            ),
        )
            .prop_map(
                move |((task_type, hours, needs), (bootstrap, pending, slots, deadline))| TaskIn {
                    id,
                    task_type,
                    hours,
                    needs,
                    bootstrap,
                    pending,
                    slots,
                    deadline,
                },
            )
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
        let metrics = match (n.metrics, n.counters) {
            (Some([c, a, u, p]), _) => Some(ReputationMetrics {
                completion_rate: c as f64 / 1000.0,
                accuracy_rate: a as f64 / 1000.0,
                uptime_rate: u as f64 / 1000.0,
                participation_rate: p as f64 / 1000.0,
            }),
            // What the store does after every judged result
            // (verdict::reputation): the counters' metrics, then the weights.
            (None, Some(c)) => Some(reputation_metrics(&NodeCounters {
                assigned: c.assigned,
                completed: c.completed,
                agreed: c.agreed,
                wrong: c.wrong,
                heartbeats: c.heartbeats,
                age_seconds: c.age_seconds,
                heartbeat_interval: c.heartbeat_interval,
                active: c.active,
            })),
            (None, None) => None,
        };
        if let (Some(m), None) = (&metrics, &exclusion) {
            assert!(node_reputation(m).is_ok(), "counters give rates in 0..=1");
        }
        let reputation = match metrics {
            Some(m) => effective_reputation(&m, exclusion.as_ref()),
            None => exclusion.as_ref().map(|e| e.reputation),
        };
        if let Some(r) = reputation {
            v.reputation.insert((n.id, u64::from(r.micros())));
        }
        nodes.push((
            n,
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
        tokens.push((t, facts));
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
                let key = (n.id, k.id, t.id);
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
    // The lease, composed the way `POST /v1/work/lease` does it: the route's
    // checks (registered, active, token valid), the store's candidate filter
    // (`SqlStore::lease`) and `askee_core::coordinator::lease_choice`, then the
    // bootstrapping node's two queries (challenges first, ordinary work only
    // when no challenge was leased).
    let candidate = |n: &NodeIn, node: &NodeFacts, k: &TaskIn, t: &TokenIn, token: &TokenFacts| {
        let offered: Vec<&str> = types.iter().map(|p| p.name.as_str()).collect();
        let type_name = TYPE_NAMES[k.task_type as usize];
        let task_types: Vec<&String> = token
            .payload
            .permissions
            .tasks
            .allowlist
            .iter()
            .filter(|ty| offered.contains(&ty.as_str()))
            .filter(|ty| match &n.requested {
                None => true,
                Some(r) => r.iter().any(|&i| TYPE_NAMES[i as usize] == ty.as_str()),
            })
            .collect();
        let registered = n.counters.is_some() && t.subject == n.id;
        let open = k.pending && k.slots.0 < k.slots.1 && k.deadline > NOW;
        let facts = TaskFacts {
            task_type: type_name.into(),
            duration_hours: k.hours,
            requirements: TaskRequirements {
                cpu_cores: k.needs.cpu_cores as u32,
                cpu_percent: k.needs.cpu_percent as u32,
                ram_mb: k.needs.ram_mb,
                storage_gb: k.needs.storage_gb,
                bandwidth_mbps: k.needs.bandwidth_mbps,
            },
        };
        // Adaptive replication is off here: the choice is take or skip.
        let choice = lease_choice(
            node,
            token,
            &types,
            &AdaptivePolicy::default(),
            TrustRecord::default(),
            NOW,
            &LeaseCandidate {
                facts: Some(facts),
                bootstrap: k.bootstrap,
                adaptive: false,
                replicas_total: 0,
            },
            0,
        );
        registered
            && n.active
            && valid_consent_token(token, NOW).holds()
            && open
            && task_types.iter().any(|ty| ty.as_str() == type_name)
            && !n.had.contains(&k.id)
            && choice != LeaseChoice::Skip
    };
    for (n, node) in &nodes {
        let Some(c) = n.counters else { continue };
        let bootstrapping = c.agreed < BOOTSTRAP_RESULTS;
        for (t, token) in &tokens {
            let pick = |challenges: bool| -> Vec<u32> {
                s.tasks
                    .iter()
                    .filter(|k| k.bootstrap == challenges && candidate(n, node, k, t, token))
                    .map(|k| k.id)
                    .collect()
            };
            let mut leased = pick(bootstrapping);
            if leased.is_empty() && bootstrapping {
                leased = pick(false);
            }
            v.leasable
                .extend(leased.into_iter().map(|k| (n.id, k, t.id)));
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

/// Scenarios biased towards leases: valid tokens, registered active nodes
/// without Byzantine evidence, so that the lease's own conditions decide.
fn lease_scenario() -> impl Strategy<Value = Scenario> {
    (
        scenario(),
        [counters(), counters(), counters()],
        proptest::collection::vec(proptest::bool::weighted(0.8), 10),
    )
        .prop_map(|(mut s, counters, friendly)| {
            for (t, ok) in s.tokens.iter_mut().zip(&friendly) {
                if *ok {
                    t.signature_ok = Some(true);
                    t.issued_at = NOW - 100;
                    t.expires_at = NOW + 100;
                    t.user_revoked = false;
                    t.revocation_unknown = false;
                    t.allowlist = vec![0, 1, 2, 3];
                }
            }
            for ((n, c), ok) in s.nodes.iter_mut().zip(counters).zip(&friendly[4..]) {
                n.metrics = None;
                n.counters = Some(c);
                if *ok {
                    n.flagged = false;
                    n.evidence = [0; 5];
                }
            }
            for (k, ok) in s.tasks.iter_mut().zip(&friendly[7..]) {
                if *ok {
                    k.pending = true;
                    k.slots = (0, 3);
                    k.deadline = NOW + 100;
                }
            }
            if friendly[0] {
                s.revoked_grants.clear();
            }
            s
        })
}

fn compare(s: &Scenario) -> Result<(), TestCaseError> {
    let datalog = evaluate(s);
    let core = decide_with_core(s);
    prop_assert_eq!(
        &datalog.excluded,
        &core.excluded,
        "excluded {:?}",
        diff(&datalog.excluded, &core.excluded)
    );
    prop_assert_eq!(
        &datalog.revoked,
        &core.revoked,
        "revoked {:?}",
        diff(&datalog.revoked, &core.revoked)
    );
    prop_assert_eq!(
        &datalog.valid,
        &core.valid,
        "valid {:?}",
        diff(&datalog.valid, &core.valid)
    );
    prop_assert_eq!(
        &datalog.permitted,
        &core.permitted,
        "permitted {:?}",
        diff(&datalog.permitted, &core.permitted)
    );
    prop_assert_eq!(
        &datalog.eligible,
        &core.eligible,
        "eligible {:?}",
        diff(&datalog.eligible, &core.eligible)
    );
    prop_assert_eq!(
        &datalog.assignable,
        &core.assignable,
        "assignable {:?}",
        diff(&datalog.assignable, &core.assignable)
    );
    prop_assert_eq!(
        &datalog.reputation,
        &core.reputation,
        "reputation {:?}",
        diff(&datalog.reputation, &core.reputation)
    );
    prop_assert_eq!(
        &datalog.leasable,
        &core.leasable,
        "leasable {:?}",
        diff(&datalog.leasable, &core.leasable)
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn datalog_and_core_rules_agree(s in scenario()) {
        compare(&s)?;
    }

    #[test]
    fn datalog_and_core_leases_agree(s in lease_scenario()) {
        compare(&s)?;
    }
}

/// What one generator covers: (name, how often it holds, out of).
fn coverage(
    strategy: impl Strategy<Value = Scenario>,
    cases: usize,
) -> Vec<(&'static str, usize, usize)> {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let mut got = [0usize; 10];
    for _ in 0..cases {
        let s = strategy.new_tree(&mut runner).unwrap().current();
        let v = evaluate(&s);
        // Leases only the bootstrapping exemption allows.
        let exempt = v.leasable.difference(&v.assignable).count();
        // Bootstrapping nodes given ordinary work (no challenge left).
        let fallback = v
            .leasable
            .iter()
            .filter(|&&(n, k, _)| {
                let node = &s.nodes[n as usize];
                node.counters.is_some_and(|c| c.agreed < 3) && !s.tasks[k as usize].bootstrap
            })
            .count();
        let from_counters = s.nodes.iter().filter(|n| n.counters.is_some()).count();
        for (slot, n) in got.iter_mut().zip([
            v.excluded.len(),
            v.revoked.len(),
            v.valid.len(),
            v.permitted.len(),
            v.eligible.len(),
            v.assignable.len(),
            v.leasable.len(),
            exempt,
            fallback,
            from_counters,
        ]) {
            *slot += n;
        }
    }
    // Per scenario: 3 nodes, 4 tokens, 3 tasks, so 36 triples.
    let names = [
        ("excluded", 3),
        ("revoked", 4),
        ("valid", 4),
        ("permitted", 36),
        ("eligible", 36),
        ("assignable", 36),
        ("leasable", 36),
        ("leasable by the bootstrap exemption only", 36),
        ("ordinary work for a bootstrapping node", 36),
        ("reputation from counters", 3),
    ];
    names
        .iter()
        .zip(got)
        .map(|(&(name, per), n)| (name, n, per * cases))
        .collect()
}

/// The generators reach both verdicts of every rule often enough for the
/// comparisons above to mean something (at least 20 times in 500
/// scenarios, and never always).
#[test]
fn scenarios_cover_both_verdicts() {
    // Deeply nested strategies need more stack than a test thread's default
    // in debug builds.
    std::thread::Builder::new()
        .stack_size(64 << 20)
        .spawn(|| {
            let general = coverage(scenario(), 500);
            let leases = coverage(lease_scenario(), 500);
            for (which, names) in [
                ("scenario", &general[..6]),
                ("scenario", &general[9..]),
                ("lease_scenario", &leases[6..9]),
            ] {
                for &(name, got, out_of) in names {
                    eprintln!("{which}: {name}: {got} of {out_of}");
                    assert!(
                        got >= 20 && got < out_of,
                        "{which}: {name}: {got} of {out_of} hold; the generator does not exercise both verdicts"
                    );
                }
            }
        })
        .expect("spawn the coverage thread")
        .join()
        .expect("coverage holds");
}
