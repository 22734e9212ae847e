//! The seed's eligibility, permission, revocation and Byzantine-exclusion
//! rules (`shared/seeds/001_*`, as refined in `askee_core::rules`) written as
//! Datalog with `crepe`. This is an independent statement of the same rules:
//! it shares no code with `askee_core::rules`, takes integer facts (reputation
//! in millionths, rates in thousandths) and derives the verdicts as
//! relations. The property test in `tests/agreement.rs` compares the two on
//! thousands of random scenarios; `README.md` maps each seed predicate to its
//! refinement and to the Rust function that implements it.
//!
//! Besides the seed's predicates it states two decisions of the coordinator
//! as built: the reputation a node's counters give
//! (`askee_core::coordinator::reputation_metrics` with bootstrapping, then
//! `node_reputation`), and which leases `POST /v1/work/lease` may hand out
//! (the store's candidate filter and `askee_core::coordinator::lease_choice`: bootstrapping
//! challenges exempt from the reputation floors, a bootstrapping node served
//! challenges first, a node never given the same task twice).

use std::collections::HashSet;

/// Evidence kinds of `byzantine_behavior_detected`, in the seed's order.
pub const EVIDENCE_KINDS: [u32; 5] = [
    KIND_WRONG_RESULTS,
    KIND_INVALID_SIGNATURES,
    KIND_POLICY_VIOLATIONS,
    KIND_CONSENSUS_FAILURES,
    KIND_MALICIOUS_PATTERNS,
];
pub const KIND_WRONG_RESULTS: u32 = 0;
pub const KIND_INVALID_SIGNATURES: u32 = 1;
pub const KIND_POLICY_VIOLATIONS: u32 = 2;
pub const KIND_CONSENSUS_FAILURES: u32 = 3;
pub const KIND_MALICIOUS_PATTERNS: u32 = 4;

/// Clock skew tolerated on `issued_at`, in seconds (the token module's).
pub const CLOCK_SKEW: i64 = 60;

/// Resource amounts: cpu cores, cpu percent, RAM MiB, storage GiB, Mbit/s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Amounts {
    pub cpu_cores: u64,
    pub cpu_percent: u64,
    pub ram_mb: u64,
    pub storage_gb: u64,
    pub bandwidth_mbps: u64,
}

/// A node's counters as the coordinator keeps them
/// (`askee_core::coordinator::NodeCounters`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CountersIn {
    pub assigned: u64,
    pub completed: u64,
    pub agreed: u64,
    pub wrong: u64,
    pub heartbeats: u64,
    pub age_seconds: u64,
    pub heartbeat_interval: u64,
    pub active: bool,
}

/// Results a bootstrapping node must have had judged right
/// (`askee_core::coordinator::BOOTSTRAP_RESULTS`).
pub const BOOTSTRAP_RESULTS: u64 = 3;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeIn {
    pub id: u32,
    /// Completion, accuracy, uptime, participation rates in thousandths;
    /// `None` when unknown.
    pub metrics: Option<[u64; 4]>,
    /// The coordinator's counters of a registered node; the reputation then
    /// comes from them (a scenario gives metrics or counters, not both).
    pub counters: Option<CountersIn>,
    /// The node's state is active (registered nodes only).
    pub active: bool,
    /// Tasks the node already had a replica of, in any state.
    pub had: Vec<u32>,
    /// Task types the lease request names; `None` asks for every type.
    pub requested: Option<Vec<u32>>,
    /// Marked Byzantine earlier (marking is sticky).
    pub flagged: bool,
    /// Evidence counts by kind (see [`EVIDENCE_KINDS`]).
    pub evidence: [u32; 5],
    /// Cores, RAM, storage, bandwidth the machine has (`cpu_percent` is
    /// ignored); `None` when unknown.
    pub profile: Option<Amounts>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenIn {
    pub id: u32,
    pub subject: u32,
    pub grant: u32,
    /// `Some(true)` verified, `Some(false)` invalid, `None` unchecked.
    pub signature_ok: Option<bool>,
    pub issued_at: i64,
    pub expires_at: i64,
    pub user_revoked: bool,
    /// The revocation store could not answer for this token.
    pub revocation_unknown: bool,
    pub allowlist: Vec<u32>,
    pub max_hours: u32,
    /// Minimum reputation in millionths; `None` when the token's value is
    /// not a number in `0..=1`.
    pub min_reputation: Option<u32>,
    /// Cpu percent, RAM, storage, bandwidth limits (`cpu_cores` ignored).
    pub limits: Amounts,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeIn {
    pub id: u32,
    pub max_hours: u32,
    pub min_reputation: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskIn {
    pub id: u32,
    pub task_type: u32,
    pub hours: u32,
    pub needs: Amounts,
    /// A bootstrapping challenge (known answer, for new nodes).
    pub bootstrap: bool,
    /// The task is pending (not verified, failed or cancelled).
    pub pending: bool,
    /// `replicas_active`, `replicas_wanted`.
    pub slots: (u64, u64),
    pub deadline: i64,
}

/// Everything the rules look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scenario {
    pub now: i64,
    pub nodes: Vec<NodeIn>,
    pub tokens: Vec<TokenIn>,
    pub types: Vec<TypeIn>,
    pub tasks: Vec<TaskIn>,
    /// Threshold per evidence kind.
    pub thresholds: [u32; 5],
    pub revoked_grants: Vec<u32>,
}

/// The derived verdicts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verdicts {
    /// `byzantine_node_excluded(N)`.
    pub excluded: HashSet<u32>,
    /// `consent_revoked(T, _)`.
    pub revoked: HashSet<u32>,
    /// `valid_consent_token(T)`.
    pub valid: HashSet<u32>,
    /// `action_permitted(N, run(Task), T)` as (node, task, token).
    pub permitted: HashSet<(u32, u32, u32)>,
    /// `task_assignment_eligible(N, Task)` under token T's permissions.
    pub eligible: HashSet<(u32, u32, u32)>,
    /// Both: the coordinator may assign.
    pub assignable: HashSet<(u32, u32, u32)>,
    /// The reputation assignment uses, in millionths, per node.
    pub reputation: HashSet<(u32, u64)>,
    /// A lease may hand task K to node N registered with token T.
    pub leasable: HashSet<(u32, u32, u32)>,
}

mod program {
    #![allow(clippy::all)]
    use crepe::crepe;

    crepe! {
        @input pub struct Now(pub i64);
        @input pub struct Node(pub u32);
        @input pub struct Metrics(pub u32, pub u64, pub u64, pub u64, pub u64);
        @input pub struct Flagged(pub u32);
        @input pub struct Evidence(pub u32, pub u32, pub u32);
        @input pub struct Threshold(pub u32, pub u32);
        // node, cores, ram, storage, bandwidth
        @input pub struct Profile(pub u32, pub u64, pub u64, pub u64, pub u64);
        // token, subject, grant
        @input pub struct Token(pub u32, pub u32, pub u32);
        @input pub struct SignatureOk(pub u32);
        @input pub struct Lifetime(pub u32, pub i64, pub i64);
        @input pub struct UserRevokedToken(pub u32);
        @input pub struct UserRevokedGrant(pub u32);
        @input pub struct RevocationUnknown(pub u32);
        @input pub struct Allows(pub u32, pub u32);
        @input pub struct TokenMaxHours(pub u32, pub u32);
        @input pub struct TokenMinRep(pub u32, pub u32);
        // token, cpu percent, ram, storage, bandwidth
        @input pub struct TokenLimits(pub u32, pub u64, pub u64, pub u64, pub u64);
        // type, max hours, min reputation
        @input pub struct TaskType(pub u32, pub u32, pub u32);
        // task, type, hours
        @input pub struct Task(pub u32, pub u32, pub u32);
        // task, cores, cpu percent, ram, storage, bandwidth
        @input pub struct Needs(pub u32, pub u64, pub u64, pub u64, pub u64, pub u64);
        // node, assigned, completed, agreed, wrong, heartbeats, age, interval, active
        @input pub struct Counters(pub u32, pub u64, pub u64, pub u64, pub u64, pub u64, pub u64, pub u64, pub bool);
        @input pub struct NodeActive(pub u32);
        @input pub struct HadReplica(pub u32, pub u32);
        @input pub struct RequestsAll(pub u32);
        @input pub struct Requests(pub u32, pub u32);
        @input pub struct Bootstrap(pub u32);
        @input pub struct Pending(pub u32);
        // task, replicas_active, replicas_wanted
        @input pub struct Slots(pub u32, pub u64, pub u64);
        @input pub struct Deadline(pub u32, pub i64);

        struct Reputation(u32, u64);
        struct EligibleExceptReputation(u32, u32, u32);
        struct Chosen(u32, u32, u32);
        struct Open(u32);
        struct WantsType(u32, u32);
        struct Candidate(u32, u32, u32);
        struct Bootstrapping(u32);
        struct ChallengeFor(u32, u32);
        struct TimeOk(u32);
        struct WithinTokenScope(u32, u32);
        struct WithinProfile(u32, u32);

        @output pub struct Byzantine(pub u32);
        @output pub struct Excluded(pub u32);
        @output pub struct Revoked(pub u32);
        @output pub struct Valid(pub u32);
        @output pub struct Permitted(pub u32, pub u32, pub u32);
        @output pub struct Eligible(pub u32, pub u32, pub u32);
        @output pub struct Assignable(pub u32, pub u32, pub u32);
        @output pub struct EffectiveReputation(pub u32, pub u64);
        @output pub struct Leasable(pub u32, pub u32, pub u32);

        // node_reputation: weights 0.4/0.3/0.2/0.1 on rates in thousandths,
        // exact, in millionths.
        Reputation(n, s) <- Metrics(n, c, a, u, p),
            let s = 400 * c + 300 * a + 200 * u + 100 * p;

        // reputation_metrics: completion over max(assigned, 3), accuracy
        // over max(judged, 3) (bootstrapping pads both), uptime as at least
        // one heartbeat over the beats expected since registration (at least
        // one, capped at 1), participation 1 when active; then the weights,
        // exactly in rationals, rounded half up to millionths.
        Reputation(n, s) <- Counters(n, asg, comp, agr, wr, hb, age, iv, act),
            let dc = std::cmp::max(asg, crate::BOOTSTRAP_RESULTS),
            let da = std::cmp::max(agr + wr, crate::BOOTSTRAP_RESULTS),
            let du = std::cmp::max(age / std::cmp::max(iv, 1), 1),
            let cn = std::cmp::min(comp, dc),
            let un = std::cmp::min(std::cmp::max(hb, 1), du),
            let p = if act { 1 } else { 0 },
            let x = 1_000_000 * (4 * cn * da * du + 3 * agr * dc * du + 2 * un * dc * da + p * dc * da * du),
            let d = 10 * dc * da * du,
            let s = (2 * x + d) / (2 * d);

        // byzantine_behavior_detected (sticky marking included).
        Byzantine(n) <- Flagged(n);
        Byzantine(n) <- Evidence(n, k, seen), Threshold(k, t),
            (seen >= if t == 0 { 1 } else { t });

        // byzantine_node_excluded: marked, reputation zero, no assignment.
        Excluded(n) <- Byzantine(n);
        EffectiveReputation(n, 0) <- Byzantine(n);
        EffectiveReputation(n, s) <- Reputation(n, s), !Byzantine(n);

        // consent_revoked: by the user (token or grant) or automatically.
        Revoked(t) <- UserRevokedToken(t);
        Revoked(t) <- Token(t, _, g), UserRevokedGrant(g);
        Revoked(t) <- Token(t, n, _), Byzantine(n);

        // token_expiry_not_passed.
        TimeOk(t) <- Lifetime(t, iat, exp), Now(now),
            (exp > iat), (iat <= now + crate::CLOCK_SKEW), (now < exp);

        // valid_consent_token.
        Valid(t) <- Token(t, _, _), SignatureOk(t), TimeOk(t),
            !Revoked(t), !RevocationUnknown(t);

        // action_within_token_scope for run(Task).
        WithinTokenScope(t, k) <- Task(k, ty, h), Allows(t, ty),
            TokenMaxHours(t, mh), (h <= mh),
            Needs(k, _, cpu, ram, st, bw), TokenLimits(t, lc, lr, ls, lb),
            (cpu <= lc), (ram <= lr), (st <= ls), (bw <= lb);

        WithinProfile(n, k) <- Profile(n, pc, pr, ps, pb),
            Needs(k, cores, _, ram, st, bw),
            (cores <= pc), (ram <= pr), (st <= ps), (bw <= pb);

        // action_permitted.
        Permitted(n, k, t) <- Token(t, n, _), Valid(t), WithinTokenScope(t, k);

        // task_assignment_eligible, refined.
        Eligible(n, k, t) <- Node(n), Task(k, ty, h), TaskType(ty, th, tmin),
            (h <= th), WithinTokenScope(t, k), TokenMinRep(t, kmin),
            EffectiveReputation(n, r),
            (r >= tmin as u64), (r >= kmin as u64),
            WithinProfile(n, k), !Byzantine(n);

        Assignable(n, k, t) <- Permitted(n, k, t), Eligible(n, k, t);

        // The lease (askee_core::coordinator::lease_choice): assignable, or for a
        // bootstrapping challenge eligible in every respect but reputation
        // (a known, too low or unknown one; an invalid token threshold still
        // refuses).
        EligibleExceptReputation(n, k, t) <- Node(n), Task(k, ty, h),
            TaskType(ty, th, _), (h <= th), WithinTokenScope(t, k),
            TokenMinRep(t, _), WithinProfile(n, k), !Byzantine(n);
        Chosen(n, k, t) <- Assignable(n, k, t);
        Chosen(n, k, t) <- Bootstrap(k), Permitted(n, k, t),
            EligibleExceptReputation(n, k, t);

        // The store's candidate filter: pending, fewer live replicas than
        // wanted, before its deadline, of a type the token allows, the
        // coordinator offers and the request asks for, never this node's
        // before; the node active with a valid token (else 403).
        Open(k) <- Pending(k), Slots(k, a, w), (a < w), Deadline(k, d), Now(now),
            (d > now);
        WantsType(n, ty) <- RequestsAll(n), TaskType(ty, _, _);
        WantsType(n, ty) <- Requests(n, ty);
        Candidate(n, k, t) <- NodeActive(n), Token(t, n, _), Valid(t), Open(k),
            Task(k, ty, _), WantsType(n, ty), Allows(t, ty), TaskType(ty, _, _),
            !HadReplica(n, k), Chosen(n, k, t);

        // A bootstrapping node (fewer than 3 agreed results) is offered
        // challenges only, and ordinary work when no challenge is left for
        // it; other nodes never get challenges.
        Bootstrapping(n) <- Counters(n, _, _, agr, _, _, _, _, _),
            (agr < crate::BOOTSTRAP_RESULTS);
        ChallengeFor(n, t) <- Bootstrapping(n), Candidate(n, k, t), Bootstrap(k);
        Leasable(n, k, t) <- Candidate(n, k, t), Bootstrapping(n), Bootstrap(k);
        Leasable(n, k, t) <- Candidate(n, k, t), Counters(n, _, _, _, _, _, _, _, _),
            !Bootstrapping(n), !Bootstrap(k);
        Leasable(n, k, t) <- Candidate(n, k, t), Bootstrapping(n), !Bootstrap(k),
            !ChallengeFor(n, t);
    }

    pub use self::Crepe as Runtime;
}

/// Runs the Datalog program on a scenario.
pub fn evaluate(s: &Scenario) -> Verdicts {
    use program::*;
    let mut rt = Runtime::new();
    rt.extend([Now(s.now)]);
    for n in &s.nodes {
        rt.extend([Node(n.id)]);
        if let Some([c, a, u, p]) = n.metrics {
            rt.extend([Metrics(n.id, c, a, u, p)]);
        }
        if let Some(c) = n.counters {
            rt.extend([Counters(
                n.id,
                c.assigned,
                c.completed,
                c.agreed,
                c.wrong,
                c.heartbeats,
                c.age_seconds,
                c.heartbeat_interval,
                c.active,
            )]);
        }
        if n.active {
            rt.extend([NodeActive(n.id)]);
        }
        rt.extend(n.had.iter().map(|&k| HadReplica(n.id, k)));
        match &n.requested {
            None => rt.extend([RequestsAll(n.id)]),
            Some(types) => rt.extend(types.iter().map(|&ty| Requests(n.id, ty))),
        }
        if n.flagged {
            rt.extend([Flagged(n.id)]);
        }
        for (kind, &seen) in EVIDENCE_KINDS.iter().zip(&n.evidence) {
            rt.extend([Evidence(n.id, *kind, seen)]);
        }
        if let Some(p) = n.profile {
            rt.extend([Profile(
                n.id,
                p.cpu_cores,
                p.ram_mb,
                p.storage_gb,
                p.bandwidth_mbps,
            )]);
        }
    }
    for (kind, &t) in EVIDENCE_KINDS.iter().zip(&s.thresholds) {
        rt.extend([Threshold(*kind, t)]);
    }
    for t in &s.tokens {
        rt.extend([Token(t.id, t.subject, t.grant)]);
        if t.signature_ok == Some(true) {
            rt.extend([SignatureOk(t.id)]);
        }
        rt.extend([Lifetime(t.id, t.issued_at, t.expires_at)]);
        if t.user_revoked {
            rt.extend([UserRevokedToken(t.id)]);
        }
        if t.revocation_unknown {
            rt.extend([RevocationUnknown(t.id)]);
        }
        rt.extend(t.allowlist.iter().map(|&ty| Allows(t.id, ty)));
        rt.extend([TokenMaxHours(t.id, t.max_hours)]);
        if let Some(m) = t.min_reputation {
            rt.extend([TokenMinRep(t.id, m)]);
        }
        let l = t.limits;
        rt.extend([TokenLimits(
            t.id,
            l.cpu_percent,
            l.ram_mb,
            l.storage_gb,
            l.bandwidth_mbps,
        )]);
    }
    rt.extend(s.revoked_grants.iter().map(|&g| UserRevokedGrant(g)));
    rt.extend(
        s.types
            .iter()
            .map(|ty| TaskType(ty.id, ty.max_hours, ty.min_reputation)),
    );
    for k in &s.tasks {
        rt.extend([Task(k.id, k.task_type, k.hours)]);
        if k.bootstrap {
            rt.extend([Bootstrap(k.id)]);
        }
        if k.pending {
            rt.extend([Pending(k.id)]);
        }
        rt.extend([Slots(k.id, k.slots.0, k.slots.1)]);
        rt.extend([Deadline(k.id, k.deadline)]);
        let n = k.needs;
        rt.extend([Needs(
            k.id,
            n.cpu_cores,
            n.cpu_percent,
            n.ram_mb,
            n.storage_gb,
            n.bandwidth_mbps,
        )]);
    }
    let (
        _byzantine,
        excluded,
        revoked,
        valid,
        permitted,
        eligible,
        assignable,
        reputation,
        leasable,
    ) = rt.run();
    Verdicts {
        excluded: excluded.into_iter().map(|Excluded(n)| n).collect(),
        revoked: revoked.into_iter().map(|Revoked(t)| t).collect(),
        valid: valid.into_iter().map(|Valid(t)| t).collect(),
        permitted: permitted
            .into_iter()
            .map(|Permitted(n, k, t)| (n, k, t))
            .collect(),
        eligible: eligible
            .into_iter()
            .map(|Eligible(n, k, t)| (n, k, t))
            .collect(),
        assignable: assignable
            .into_iter()
            .map(|Assignable(n, k, t)| (n, k, t))
            .collect(),
        reputation: reputation
            .into_iter()
            .map(|EffectiveReputation(n, s)| (n, s))
            .collect(),
        leasable: leasable
            .into_iter()
            .map(|Leasable(n, k, t)| (n, k, t))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn amounts(v: u64) -> Amounts {
        Amounts {
            cpu_cores: v,
            cpu_percent: v,
            ram_mb: v,
            storage_gb: v,
            bandwidth_mbps: v,
        }
    }

    fn scenario() -> Scenario {
        Scenario {
            now: 1_000,
            nodes: vec![NodeIn {
                id: 1,
                metrics: Some([1000, 1000, 1000, 1000]),
                counters: None,
                active: true,
                had: vec![],
                requested: None,
                flagged: false,
                evidence: [0; 5],
                profile: Some(amounts(8)),
            }],
            tokens: vec![TokenIn {
                id: 10,
                subject: 1,
                grant: 100,
                signature_ok: Some(true),
                issued_at: 900,
                expires_at: 2_000,
                user_revoked: false,
                revocation_unknown: false,
                allowlist: vec![5],
                max_hours: 8,
                min_reputation: Some(800_000),
                limits: amounts(8),
            }],
            types: vec![TypeIn {
                id: 5,
                max_hours: 24,
                min_reputation: 700_000,
            }],
            tasks: vec![TaskIn {
                id: 20,
                task_type: 5,
                hours: 4,
                needs: amounts(2),
                bootstrap: false,
                pending: true,
                slots: (0, 3),
                deadline: 5_000,
            }],
            thresholds: [3, 1, 1, 5, 1],
            revoked_grants: vec![],
        }
    }

    #[test]
    fn a_good_scenario_is_assignable_and_a_revoked_grant_stops_it() {
        let s = scenario();
        let v = evaluate(&s);
        assert!(v.assignable.contains(&(1, 20, 10)));
        let mut s2 = s.clone();
        s2.revoked_grants.push(100);
        let v = evaluate(&s2);
        assert!(v.revoked.contains(&10) && v.assignable.is_empty() && v.valid.is_empty());
        let mut s3 = s;
        s3.nodes[0].evidence[KIND_WRONG_RESULTS as usize] = 3;
        let v = evaluate(&s3);
        assert!(v.excluded.contains(&1) && v.revoked.contains(&10) && v.assignable.is_empty());
    }
}
