use super::fixtures::*;
use super::*;
use proptest::prelude::*;

#[test]
fn the_happy_path_is_allowed() {
    let d = assignment_allowed(&node(), &task(), &token(), &default_task_types(), NOW);
    assert_eq!(d, Eligibility::Eligible);
}

#[test]
fn each_conjunct_fails_with_its_own_reason() {
    let types = default_task_types();
    let check = |n: NodeFacts, t: TaskFacts, tok: TokenFacts| {
        assignment_allowed(&n, &t, &tok, &types, NOW)
            .reasons()
            .to_vec()
    };
    let mut n = node();
    n.node_id = "node-b".into();
    assert_eq!(check(n, task(), token()), [Reason::NotTokenHolder]);
    let mut tok = token();
    tok.signature = SignatureFact::Invalid;
    assert_eq!(check(node(), task(), tok), [Reason::SignatureInvalid]);
    let mut tok = token();
    tok.signature = SignatureFact::Unchecked;
    assert_eq!(check(node(), task(), tok), [Reason::SignatureUnchecked]);
    let mut tok = token();
    tok.revocation = RevocationStatus::Unknown;
    assert_eq!(check(node(), task(), tok), [Reason::RevocationUnknown]);
    let mut tok = token();
    tok.payload.expires_at = NOW;
    assert!(matches!(
        check(node(), task(), tok)[..],
        [Reason::Lifetime(TokenError::Expired { .. })]
    ));
    let mut t = task();
    t.task_type = "scientific-compute".into();
    // Not in the token's allowlist, and 0.85 is below the type's 0.9.
    assert_eq!(
        check(node(), t, token()),
        [
            Reason::TypeNotInTokenAllowlist {
                task_type: "scientific-compute".into()
            },
            Reason::ReputationBelowType {
                reputation: 850_000,
                min: 900_000
            }
        ]
    );
    let mut t = task();
    t.task_type = "crypto-mining".into();
    let mut tok = token();
    tok.payload
        .permissions
        .tasks
        .allowlist
        .push("crypto-mining".into());
    assert_eq!(
        check(node(), t, tok),
        [Reason::TypeNotOffered {
            task_type: "crypto-mining".into()
        }]
    );
    let mut t = task();
    t.task_type = "data-processing".into();
    t.duration_hours = 9;
    let mut tok = token();
    tok.payload.permissions.tasks.max_duration_hours = 10;
    assert_eq!(
        check(node(), t, tok),
        [Reason::DurationOverType { hours: 9, max: 8 }]
    );
    let mut t = task();
    t.duration_hours = 9;
    assert_eq!(
        check(node(), t, token()),
        [Reason::DurationOverToken { hours: 9, max: 8 }]
    );
    let mut n = node();
    n.reputation = Reputation::from_micros(750_000);
    assert_eq!(
        check(n, task(), token()),
        [Reason::ReputationBelowToken {
            reputation: 750_000,
            min: 800_000
        }]
    );
    let mut n = node();
    n.reputation = None;
    assert_eq!(check(n, task(), token()), [Reason::ReputationUnknown]);
    let mut tok = token();
    tok.payload.permissions.tasks.min_reputation = f64::NAN;
    assert_eq!(check(node(), task(), tok), [Reason::TokenThresholdInvalid]);
    let mut n = node();
    n.profile = None;
    assert_eq!(check(n, task(), token()), [Reason::ProfileUnknown]);
    let mut t = task();
    t.requirements.cpu_cores = 5;
    t.requirements.ram_mb = 4096;
    assert_eq!(
        check(node(), t, token()),
        [
            Reason::OverTokenLimit {
                resource: Resource::RamMb,
                requested: 4096,
                limit: 2048
            },
            Reason::OverNodeProfile {
                resource: Resource::CpuCores,
                requested: 5,
                available: 4
            }
        ]
    );
    let mut n = node();
    n.byzantine = true;
    assert_eq!(check(n, task(), token()), [Reason::NodeByzantine]);
}

#[test]
fn revoked_token_denies_every_action() {
    let mut tok = token();
    let triggers = consent_revoked(&RevocationFacts {
        grant_revoked_by_user: true,
        ..Default::default()
    });
    assert_eq!(triggers, [RevocationTrigger::UserRevokedGrant]);
    tok.revocation = revocation_status(&triggers, 9_500);
    let p = action_permitted(
        "node-a",
        Action::ReportResult {
            task_type: "ml-training",
        },
        &tok,
        NOW,
    );
    assert_eq!(
        p.reasons(),
        [Reason::Revoked {
            revoked_at: 9_500,
            reason: "user revoked the grant".into()
        }]
    );
    assert!(consent_revoked(&RevocationFacts::default()).is_empty());
}

#[test]
fn reputation_uses_the_seed_weights_and_exact_thresholds() {
    let m = |c, a, u, p| ReputationMetrics {
        completion_rate: c,
        accuracy_rate: a,
        uptime_rate: u,
        participation_rate: p,
    };
    assert_eq!(
        node_reputation(&m(1.0, 0.0, 0.0, 0.0)).unwrap().micros(),
        400_000
    );
    assert_eq!(
        node_reputation(&m(0.0, 1.0, 0.0, 0.0)).unwrap().micros(),
        300_000
    );
    assert_eq!(
        node_reputation(&m(0.0, 0.0, 1.0, 0.0)).unwrap().micros(),
        200_000
    );
    assert_eq!(
        node_reputation(&m(0.0, 0.0, 0.0, 1.0)).unwrap().micros(),
        100_000
    );
    // In f64 this sum is 0.49999999999999994, below the data-processing
    // threshold of 0.5; in fixed point it reaches it.
    let r = node_reputation(&m(0.5, 0.5, 0.5, 0.5)).unwrap();
    assert_eq!(r, Reputation::from_micros(500_000).unwrap());
    assert!(r >= default_task_types()[1].min_reputation);
    assert!((r.score_0_100() - 50.0).abs() < 1e-9);
    assert!(matches!(
        node_reputation(&m(1.1, 0.0, 0.0, 0.0)),
        Err(RuleError::Metric {
            metric: "task_completion_rate",
            ..
        })
    ));
    assert!(node_reputation(&m(0.5, f64::NAN, 0.0, 0.0)).is_err());
    assert_eq!(Reputation::from_f64(-0.1), None);
    assert_eq!(Reputation::from_f64(f64::INFINITY), None);
}

#[test]
fn byzantine_evidence_marks_excludes_and_revokes() {
    let p = ByzantinePolicy::default();
    let mut e = ByzantineEvidence {
        wrong_results: 2,
        consensus_failures: 4,
        ..Default::default()
    };
    assert!(byzantine_behavior_detected(&e, &p).is_empty());
    assert_eq!(byzantine_node_excluded(false, &e, &p), None);
    e.wrong_results = 3;
    assert_eq!(
        byzantine_behavior_detected(&e, &p),
        [ByzantineCause::InconsistentResults]
    );
    let ex = byzantine_node_excluded(false, &e, &p).unwrap();
    assert_eq!(ex.reputation, Reputation::ZERO);
    assert!(ex.revoke_tokens);
    let perfect = ReputationMetrics {
        completion_rate: 1.0,
        accuracy_rate: 1.0,
        uptime_rate: 1.0,
        participation_rate: 1.0,
    };
    assert_eq!(
        effective_reputation(&perfect, Some(&ex)),
        Some(Reputation::ZERO)
    );
    // Marking is sticky even without new evidence.
    assert!(byzantine_node_excluded(true, &ByzantineEvidence::default(), &p).is_some());
    for field in 0..3 {
        let mut e = ByzantineEvidence::default();
        match field {
            0 => e.invalid_signatures = 1,
            1 => e.policy_violations = 1,
            _ => e.malicious_patterns = 1,
        }
        assert_eq!(byzantine_behavior_detected(&e, &p).len(), 1);
    }
    // A zero threshold never marks a node on zero evidence.
    let zero = ByzantinePolicy {
        wrong_results: 0,
        invalid_signatures: 0,
        policy_violations: 0,
        consensus_failures: 0,
        malicious_patterns: 0,
    };
    assert!(byzantine_behavior_detected(&ByzantineEvidence::default(), &zero).is_empty());
}

fn d(b: u8) -> [u8; 32] {
    [b; 32]
}

#[test]
fn quorum_accepts_waits_extends_and_fails() {
    let p = VerificationPolicy {
        f: 1,
        max_replicas: 5,
    };
    assert_eq!((p.min_replicas(), p.threshold()), (3, 2));
    let r = |n, b| ReplicaResult {
        node_id: n,
        digest: d(b),
    };
    assert_eq!(
        consensus(&p, 3, &[r("a", 1), r("b", 1)]),
        QuorumDecision::Waiting { outstanding: 1 }
    );
    assert_eq!(
        consensus(&p, 3, &[r("a", 1), r("b", 2), r("c", 1)]),
        QuorumDecision::Accepted {
            digest: d(1),
            agreeing: 2
        }
    );
    // A node's duplicate result does not count twice.
    assert_eq!(
        consensus(&p, 3, &[r("a", 1), r("a", 1), r("b", 2)]),
        QuorumDecision::Waiting { outstanding: 1 }
    );
    assert_eq!(
        consensus(&p, 3, &[r("a", 1), r("b", 2), r("c", 3)]),
        QuorumDecision::AddReplicas { count: 1 }
    );
    assert_eq!(
        consensus(
            &p,
            5,
            &[r("a", 1), r("b", 2), r("c", 3), r("d", 4), r("e", 5)]
        ),
        QuorumDecision::Failed {
            distinct_digests: 5,
            best_agreement: 1,
            conflicting: false
        }
    );
    assert!(matches!(
        consensus(&p, 4, &[r("a", 1), r("b", 2), r("c", 1), r("d", 2)]),
        QuorumDecision::Failed {
            conflicting: true,
            ..
        }
    ));
}

proptest! {
    /// NoWrongAcceptance: with at most f Byzantine replicas answering
    /// anything (colluding included), an accepted digest is the honest one.
    #[test]
    fn accepted_result_is_honest(
        f in 0u32..3,
        extra in 0u32..3,
        byz_answers in proptest::collection::vec(0u8..3, 0..3),
        order in proptest::collection::vec(any::<u16>(), 8),
    ) {
        let p = VerificationPolicy { f, max_replicas: 2 * f + 1 + extra };
        let byz = byz_answers.len().min(f as usize);
        let assigned = p.max_replicas as usize;
        let names: Vec<String> = (0..assigned).map(|i| format!("n{i}")).collect();
        let mut results: Vec<ReplicaResult> = names
            .iter()
            .enumerate()
            .map(|(i, n)| ReplicaResult {
                node_id: n,
                digest: if i < byz { d(byz_answers[i] + 1) } else { d(0) },
            })
            .collect();
        results.sort_by_key(|r| order[r.node_id[1..].parse::<usize>().unwrap() % 8]);
        for k in 0..=results.len() {
            if let QuorumDecision::Accepted { digest, agreeing } =
                consensus(&p, assigned as u32, &results[..k])
            {
                prop_assert_eq!(digest, d(0));
                prop_assert!(agreeing > f);
                prop_assert!(k as u32 >= p.min_replicas());
            }
        }
        // Every replica answered and at most f lied: the honest majority wins.
        let all = consensus(&p, assigned as u32, &results);
        let accepted = matches!(all, QuorumDecision::Accepted { digest, .. } if digest == d(0));
        prop_assert!(accepted);
    }

    /// Replicas are never added past the cap, a failure without conflict
    /// happens only at the cap, and a quorum is never left unaccepted.
    #[test]
    fn consensus_respects_the_cap_and_accepts_a_quorum(
        f in 0u32..3,
        extra in 0u32..4,
        assigned_extra in 0u32..4,
        answers in proptest::collection::vec(0u8..3, 0..10),
    ) {
        let p = VerificationPolicy { f, max_replicas: 2 * f + 1 + extra };
        let assigned = (p.min_replicas() + assigned_extra).min(p.max_replicas);
        let names: Vec<String> = (0..answers.len()).map(|i| format!("n{i}")).collect();
        let results: Vec<ReplicaResult> = answers
            .iter()
            .take(assigned as usize)
            .zip(&names)
            .map(|(&a, n)| ReplicaResult { node_id: n, digest: d(a) })
            .collect();
        let mut tally = [0u32; 3];
        for &a in answers.iter().take(assigned as usize) {
            tally[a as usize] += 1;
        }
        let reaching = tally.iter().filter(|&&n| n > f).count();
        match consensus(&p, assigned, &results) {
            QuorumDecision::AddReplicas { count } => {
                prop_assert!(count >= 1 && assigned + count <= p.max_replicas);
                prop_assert_eq!(reaching, 0);
            }
            QuorumDecision::Failed { conflicting: false, .. } => {
                prop_assert!(assigned >= p.max_replicas);
                prop_assert_eq!(reaching, 0);
            }
            QuorumDecision::Failed { conflicting: true, .. } => prop_assert!(reaching > 1),
            QuorumDecision::Accepted { agreeing, .. } => {
                prop_assert_eq!(reaching, 1);
                prop_assert!(agreeing > f && results.len() as u32 >= p.min_replicas());
            }
            QuorumDecision::Waiting { outstanding } => {
                prop_assert_eq!(results.len() as u32 + outstanding, assigned);
                prop_assert!(reaching <= 1);
            }
        }
    }

    /// Any conjunct that fails makes the whole decision negative, and
    /// the decision is positive exactly when no reason is given.
    #[test]
    fn eligibility_is_the_conjunction(
        rep in 0u32..=MICROS,
        byz in any::<bool>(),
        hours in 0u32..60,
        ram in 0u64..10_000,
        type_idx in 0usize..4,
        now in 8_000i64..14_000,
    ) {
        let types = default_task_types();
        let mut n = node();
        n.reputation = Reputation::from_micros(rep);
        n.byzantine = byz;
        let mut t = task();
        t.duration_hours = hours;
        t.requirements.ram_mb = ram;
        t.task_type = ["ml-training", "data-processing", "scientific-compute", "other"][type_idx].into();
        let tok = token();
        let d = assignment_allowed(&n, &t, &tok, &types, now);
        let policy = types.iter().find(|p| p.name == t.task_type);
        let expected = !byz
            && tok.payload.permissions.tasks.allowlist.contains(&t.task_type)
            && policy.is_some_and(|p| hours <= p.max_duration_hours && rep >= p.min_reputation.micros())
            && hours <= 8
            && rep >= 800_000
            && ram <= 2048
            && (9_000 - 60..12_600).contains(&now);
        prop_assert_eq!(d.holds(), expected);
        prop_assert_eq!(d.holds(), d.reasons().is_empty());
    }
}
