//! The seed's predicate rules (`shared/seeds/001_*`) as pure decisions.
//!
//! One function per seed predicate, named after it. Each takes plain facts
//! (including `now`) and returns a decision that says *why* when it is
//! negative: one typed [`Reason`] per failed conjunct, all of them, not only
//! the first. A fact that is unknown (a missing profile, an unchecked
//! signature, a revocation status the store could not give, a threshold that
//! is not a number in `0..=1`) fails closed: it is a reason to refuse.
//!
//! The same rules are written as Datalog in the `askee-logic` crate, and a
//! property test there compares the two on thousands of random scenarios;
//! `logic/README.md` maps every seed predicate to its refinement here.
//!
//! Refinements the implementation needed (the seed leaves them open):
//! - reputations are fixed point, millionths of `0..=1` ([`Reputation`]), so a
//!   weighted score that is exactly a threshold in decimal reaches it (in
//!   `f64`, `0.4 * 0.7 + ...` can land a hair below);
//! - the seed's 0–100 score is [`Reputation::score_0_100`];
//! - assignment needs the larger of the task type's and the token's minimum
//!   reputation, and the task's duration within both maxima;
//! - Byzantine marking is sticky: once marked, a node stays excluded with
//!   reputation zero and its tokens are revoked;
//! - a quorum accepts only after at least `2f+1` results, when `f+1` distinct
//!   nodes agree on one digest; two digests reaching `f+1` means the bound of
//!   `f` Byzantine replicas was exceeded, and the task fails visibly.

use std::collections::BTreeMap;

use crate::token::{RevocationStatus, TokenError, check_lifetime};
use crate::wire::v1::{ConsentTokenPayload, Permissions};

/// Millionths in one unit of reputation.
pub const MICROS: u32 = 1_000_000;

/// A reputation in `0..=1`, held as millionths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Reputation(u32);

impl Reputation {
    pub const ZERO: Reputation = Reputation(0);
    pub const MAX: Reputation = Reputation(MICROS);

    /// `None` above one million.
    pub fn from_micros(micros: u32) -> Option<Self> {
        (micros <= MICROS).then_some(Self(micros))
    }

    /// Rounds to the nearest millionth; `None` for NaN, infinities and
    /// values outside `0..=1` (fail closed).
    pub fn from_f64(value: f64) -> Option<Self> {
        if !value.is_finite() || !(0.0..=1.0).contains(&value) {
            return None;
        }
        Some(Self((value * f64::from(MICROS)).round() as u32))
    }

    pub fn micros(self) -> u32 {
        self.0
    }

    pub fn as_f64(self) -> f64 {
        f64::from(self.0) / f64::from(MICROS)
    }

    /// The predicate file's `reputation_score`, 0 to 100.
    pub fn score_0_100(self) -> f64 {
        self.as_f64() * 100.0
    }
}

/// The seed's weights: completion 0.4, accuracy 0.3, uptime 0.2,
/// participation 0.1.
pub const WEIGHT_COMPLETION: f64 = 0.4;
pub const WEIGHT_ACCURACY: f64 = 0.3;
pub const WEIGHT_UPTIME: f64 = 0.2;
pub const WEIGHT_PARTICIPATION: f64 = 0.1;

/// The four rates `node_reputation` weighs, each in `0..=1`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReputationMetrics {
    /// `task_completion_rate`: tasks finished over tasks assigned.
    pub completion_rate: f64,
    /// `result_accuracy_rate`: results that agreed with the accepted quorum.
    pub accuracy_rate: f64,
    /// `uptime_reliability`: heartbeats answered over heartbeats expected.
    pub uptime_rate: f64,
    /// `network_participation`: active share of the observation window.
    pub participation_rate: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
pub enum RuleError {
    #[error("reputation metric {metric} is {value}, not a rate in 0..=1")]
    Metric { metric: &'static str, value: f64 },
}

/// `node_reputation(N, Score)`: the weighted sum of the four rates. A rate
/// that is not a number in `0..=1` is an error, never a guess.
pub fn node_reputation(m: &ReputationMetrics) -> Result<Reputation, RuleError> {
    for (metric, value) in [
        ("task_completion_rate", m.completion_rate),
        ("result_accuracy_rate", m.accuracy_rate),
        ("uptime_reliability", m.uptime_rate),
        ("network_participation", m.participation_rate),
    ] {
        if !value.is_finite() || !(0.0..=1.0).contains(&value) {
            return Err(RuleError::Metric { metric, value });
        }
    }
    let score = m.completion_rate * WEIGHT_COMPLETION
        + m.accuracy_rate * WEIGHT_ACCURACY
        + m.uptime_rate * WEIGHT_UPTIME
        + m.participation_rate * WEIGHT_PARTICIPATION;
    // The weights sum to one, so the score is in 0..=1 up to rounding.
    Ok(Reputation::from_f64(score.clamp(0.0, 1.0)).unwrap_or(Reputation::ZERO))
}

/// The resource profile a task type declares (the seed's labels).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResourceProfile {
    ComputeIntensive,
    MemoryIntensive,
    CpuIntensive,
}

impl ResourceProfile {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ComputeIntensive => "compute_intensive",
            Self::MemoryIntensive => "memory_intensive",
            Self::CpuIntensive => "cpu_intensive",
        }
    }
}

/// A task type the coordinator offers (an entry of the seed's allowlist).
#[derive(Debug, Clone, PartialEq)]
pub struct TaskTypePolicy {
    pub name: String,
    pub max_duration_hours: u32,
    pub min_reputation: Reputation,
    pub resource_profile: ResourceProfile,
}

/// The seed's `TaskAllowlist.APPROVED_TASKS`; the server makes it
/// configurable, these are the defaults.
pub fn default_task_types() -> Vec<TaskTypePolicy> {
    let policy = |name: &str, hours, min_micros, resource_profile| TaskTypePolicy {
        name: name.into(),
        max_duration_hours: hours,
        min_reputation: Reputation(min_micros),
        resource_profile,
    };
    vec![
        policy(
            "ml-training",
            24,
            700_000,
            ResourceProfile::ComputeIntensive,
        ),
        policy(
            "data-processing",
            8,
            500_000,
            ResourceProfile::MemoryIntensive,
        ),
        policy(
            "scientific-compute",
            48,
            900_000,
            ResourceProfile::CpuIntensive,
        ),
    ]
}

/// What a node's machine has (from the resource profiler).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NodeProfile {
    pub cpu_cores: u32,
    pub ram_mb: u64,
    pub storage_gb: u64,
    pub bandwidth_mbps: u64,
}

/// What a task needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TaskRequirements {
    pub cpu_cores: u32,
    pub cpu_percent: u32,
    pub ram_mb: u64,
    pub storage_gb: u64,
    pub bandwidth_mbps: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TaskFacts {
    pub task_type: String,
    pub duration_hours: u32,
    pub requirements: TaskRequirements,
}

/// What the coordinator knows about a node. `None` is an unknown fact.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NodeFacts {
    /// The node's public key (base64url), the token's `subject`.
    pub node_id: String,
    pub reputation: Option<Reputation>,
    /// `state_node_byzantine(N)`.
    pub byzantine: bool,
    pub profile: Option<NodeProfile>,
}

/// Whether the token's signature was checked against a known key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SignatureFact {
    Verified,
    Invalid,
    Unchecked,
}

/// A consent token with the facts its validity depends on.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenFacts {
    pub payload: ConsentTokenPayload,
    pub signature: SignatureFact,
    pub revocation: RevocationStatus,
}

/// A resource a limit or profile bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Resource {
    CpuPercent,
    CpuCores,
    RamMb,
    StorageGb,
    BandwidthMbps,
}

/// One failed conjunct of a predicate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// `node_owner_has_token`: the token's subject is another node.
    NotTokenHolder,
    /// `cryptographic_signature_valid`: the signature did not verify.
    SignatureInvalid,
    /// `cryptographic_signature_valid`: unknown, so refused.
    SignatureUnchecked,
    /// `state_token_revoked`.
    Revoked {
        revoked_at: i64,
        reason: String,
    },
    /// Revocation status unknown (store down, list stale): refused.
    RevocationUnknown,
    /// `token_expiry_not_passed`: expired, not yet valid or malformed times.
    Lifetime(TokenError),
    /// `action_within_token_scope`: the type is not in the token's allowlist.
    TypeNotInTokenAllowlist {
        task_type: String,
    },
    /// `task_type(TaskType)`: the coordinator does not offer this type.
    TypeNotOffered {
        task_type: String,
    },
    DurationOverToken {
        hours: u32,
        max: u32,
    },
    DurationOverType {
        hours: u32,
        max: u32,
    },
    /// The node's reputation is not known.
    ReputationUnknown,
    /// The token's `min_reputation` is not a number in `0..=1`.
    TokenThresholdInvalid,
    ReputationBelowType {
        reputation: u32,
        min: u32,
    },
    ReputationBelowToken {
        reputation: u32,
        min: u32,
    },
    /// The requirement exceeds what the token grants.
    OverTokenLimit {
        resource: Resource,
        requested: u64,
        limit: u64,
    },
    /// The node's profile is not known.
    ProfileUnknown,
    /// The requirement exceeds what the node's machine has.
    OverNodeProfile {
        resource: Resource,
        requested: u64,
        available: u64,
    },
    /// `state_node_byzantine(N)`.
    NodeByzantine,
}

/// The verdict of [`valid_consent_token`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Validity {
    Valid,
    Invalid(Vec<Reason>),
}

/// The verdict of [`action_permitted`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Permission {
    Permitted,
    Denied(Vec<Reason>),
}

/// The verdict of [`task_assignment_eligible`] and [`assignment_allowed`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Eligibility {
    Eligible,
    Ineligible(Vec<Reason>),
}

macro_rules! verdict_helpers {
    ($ty:ident, $yes:ident, $no:ident) => {
        impl $ty {
            fn from_reasons(reasons: Vec<Reason>) -> Self {
                if reasons.is_empty() {
                    Self::$yes
                } else {
                    Self::$no(reasons)
                }
            }

            pub fn holds(&self) -> bool {
                matches!(self, Self::$yes)
            }

            /// The failed conjuncts; empty when the predicate holds.
            pub fn reasons(&self) -> &[Reason] {
                match self {
                    Self::$yes => &[],
                    Self::$no(r) => r,
                }
            }
        }
    };
}
verdict_helpers!(Validity, Valid, Invalid);
verdict_helpers!(Permission, Permitted, Denied);
verdict_helpers!(Eligibility, Eligible, Ineligible);

/// `valid_consent_token(T)`: not revoked, not expired, signature valid.
pub fn valid_consent_token(token: &TokenFacts, now: i64) -> Validity {
    let mut reasons = Vec::new();
    match token.signature {
        SignatureFact::Verified => {}
        SignatureFact::Invalid => reasons.push(Reason::SignatureInvalid),
        SignatureFact::Unchecked => reasons.push(Reason::SignatureUnchecked),
    }
    match &token.revocation {
        RevocationStatus::Active => {}
        RevocationStatus::Revoked { revoked_at, reason } => reasons.push(Reason::Revoked {
            revoked_at: *revoked_at,
            reason: reason.clone(),
        }),
        RevocationStatus::Unknown => reasons.push(Reason::RevocationUnknown),
    }
    if let Err(e) = check_lifetime(&token.payload, now) {
        reasons.push(Reason::Lifetime(e));
    }
    Validity::from_reasons(reasons)
}

/// Something a node may do under a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action<'a> {
    /// Run this task.
    RunTask(&'a TaskFacts),
    /// Report a result of a task of this type.
    ReportResult { task_type: &'a str },
}

/// `action_within_token_scope(Action, T)`: the task type is in the token's
/// allowlist, and to run a task its duration and requirements are within the
/// token's maxima.
pub fn action_within_token_scope(action: Action<'_>, permissions: &Permissions) -> Vec<Reason> {
    let mut reasons = Vec::new();
    let task_type = match action {
        Action::RunTask(task) => task.task_type.as_str(),
        Action::ReportResult { task_type } => task_type,
    };
    if !permissions.tasks.allowlist.iter().any(|t| t == task_type) {
        reasons.push(Reason::TypeNotInTokenAllowlist {
            task_type: task_type.to_owned(),
        });
    }
    if let Action::RunTask(task) = action {
        let max = permissions.tasks.max_duration_hours;
        if task.duration_hours > max {
            reasons.push(Reason::DurationOverToken {
                hours: task.duration_hours,
                max,
            });
        }
        let limits = &permissions.resources;
        let req = &task.requirements;
        for (resource, requested, limit) in [
            (
                Resource::CpuPercent,
                u64::from(req.cpu_percent),
                u64::from(limits.cpu_percent_max),
            ),
            (Resource::RamMb, req.ram_mb, limits.ram_mb_max),
            (Resource::StorageGb, req.storage_gb, limits.storage_gb_max),
            (
                Resource::BandwidthMbps,
                req.bandwidth_mbps,
                limits.bandwidth_mbps_max,
            ),
        ] {
            if requested > limit {
                reasons.push(Reason::OverTokenLimit {
                    resource,
                    requested,
                    limit,
                });
            }
        }
    }
    reasons
}

/// `action_permitted(N, Action, T)`: the node holds the token, the token is
/// valid, and the action is within its scope.
pub fn action_permitted(
    node_id: &str,
    action: Action<'_>,
    token: &TokenFacts,
    now: i64,
) -> Permission {
    let mut reasons = Vec::new();
    if token.payload.subject != node_id {
        reasons.push(Reason::NotTokenHolder);
    }
    if let Validity::Invalid(r) = valid_consent_token(token, now) {
        reasons.extend(r);
    }
    reasons.extend(action_within_token_scope(
        action,
        &token.payload.permissions,
    ));
    Permission::from_reasons(reasons)
}

/// `task_assignment_eligible(N, TaskType)`, refined: the type is offered and
/// in the token's allowlist; the duration is within the token's and the
/// type's maxima; the reputation is at least the larger of the type's and the
/// token's minimum; the requirements are within the token's limits and the
/// node's profile; the node is not Byzantine.
pub fn task_assignment_eligible(
    node: &NodeFacts,
    task: &TaskFacts,
    permissions: &Permissions,
    task_types: &[TaskTypePolicy],
) -> Eligibility {
    // Allowlist, token duration and token limits.
    let mut reasons = action_within_token_scope(Action::RunTask(task), permissions);
    let policy = task_types.iter().find(|p| p.name == task.task_type);
    match policy {
        None => reasons.push(Reason::TypeNotOffered {
            task_type: task.task_type.clone(),
        }),
        Some(p) if task.duration_hours > p.max_duration_hours => {
            reasons.push(Reason::DurationOverType {
                hours: task.duration_hours,
                max: p.max_duration_hours,
            })
        }
        Some(_) => {}
    }
    let token_min = Reputation::from_f64(permissions.tasks.min_reputation);
    if token_min.is_none() {
        reasons.push(Reason::TokenThresholdInvalid);
    }
    match node.reputation {
        None => reasons.push(Reason::ReputationUnknown),
        Some(rep) => {
            if let Some(p) = policy
                && rep < p.min_reputation
            {
                reasons.push(Reason::ReputationBelowType {
                    reputation: rep.micros(),
                    min: p.min_reputation.micros(),
                });
            }
            if let Some(min) = token_min
                && rep < min
            {
                reasons.push(Reason::ReputationBelowToken {
                    reputation: rep.micros(),
                    min: min.micros(),
                });
            }
        }
    }
    match &node.profile {
        None => reasons.push(Reason::ProfileUnknown),
        Some(profile) => {
            let req = &task.requirements;
            for (resource, requested, available) in [
                (
                    Resource::CpuCores,
                    u64::from(req.cpu_cores),
                    u64::from(profile.cpu_cores),
                ),
                (Resource::RamMb, req.ram_mb, profile.ram_mb),
                (Resource::StorageGb, req.storage_gb, profile.storage_gb),
                (
                    Resource::BandwidthMbps,
                    req.bandwidth_mbps,
                    profile.bandwidth_mbps,
                ),
            ] {
                if requested > available {
                    reasons.push(Reason::OverNodeProfile {
                        resource,
                        requested,
                        available,
                    });
                }
            }
        }
    }
    if node.byzantine {
        reasons.push(Reason::NodeByzantine);
    }
    Eligibility::from_reasons(reasons)
}

/// What the coordinator checks before giving `task` to `node`:
/// `action_permitted(N, run(Task), T) ∧ task_assignment_eligible(N, Task)`.
/// Reasons appear once even when both predicates name them.
pub fn assignment_allowed(
    node: &NodeFacts,
    task: &TaskFacts,
    token: &TokenFacts,
    task_types: &[TaskTypePolicy],
    now: i64,
) -> Eligibility {
    let mut reasons = action_permitted(&node.node_id, Action::RunTask(task), token, now)
        .reasons()
        .to_vec();
    for r in task_assignment_eligible(node, task, &token.payload.permissions, task_types).reasons()
    {
        if !reasons.contains(r) {
            reasons.push(r.clone());
        }
    }
    Eligibility::from_reasons(reasons)
}

/// Evidence gathered about one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ByzantineEvidence {
    /// Results that disagreed with an accepted quorum.
    pub wrong_results: u32,
    /// Messages or results whose signature did not verify.
    pub invalid_signatures: u32,
    /// Sandbox or protocol policy violations reported by monitoring.
    pub policy_violations: u32,
    /// Tasks the node took part in that failed to reach a quorum.
    pub consensus_failures: u32,
    /// Patterns monitoring flags as malicious (e.g. escape attempts).
    pub malicious_patterns: u32,
}

/// How much evidence marks a node Byzantine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ByzantinePolicy {
    /// "Repeated wrong results": this many mark the node.
    pub wrong_results: u32,
    pub invalid_signatures: u32,
    pub policy_violations: u32,
    /// `fails_consensus_repeatedly`: this many failed quorums.
    pub consensus_failures: u32,
    pub malicious_patterns: u32,
}

impl Default for ByzantinePolicy {
    /// Wrong results are repeated at 3 (failing hardware yields an occasional
    /// one), quorum failures at 5 (they do not say who was wrong); a single
    /// invalid signature, policy violation or malicious pattern is enough.
    fn default() -> Self {
        Self {
            wrong_results: 3,
            invalid_signatures: 1,
            policy_violations: 1,
            consensus_failures: 5,
            malicious_patterns: 1,
        }
    }
}

/// A disjunct of `byzantine_behavior_detected` that holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ByzantineCause {
    /// `produces_inconsistent_results`.
    InconsistentResults,
    /// `cryptographic_signature_valid` failed on the node's messages.
    InvalidSignatures,
    /// `violates_security_policies`.
    PolicyViolations,
    /// `fails_consensus_repeatedly`.
    RepeatedConsensusFailure,
    /// `exhibits_malicious_patterns`.
    MaliciousPatterns,
}

/// `byzantine_behavior_detected(N)`: every disjunct that holds; empty when
/// none does. A zero threshold is treated as one (zero evidence never
/// marks a node).
pub fn byzantine_behavior_detected(
    evidence: &ByzantineEvidence,
    policy: &ByzantinePolicy,
) -> Vec<ByzantineCause> {
    [
        (
            ByzantineCause::InconsistentResults,
            evidence.wrong_results,
            policy.wrong_results,
        ),
        (
            ByzantineCause::InvalidSignatures,
            evidence.invalid_signatures,
            policy.invalid_signatures,
        ),
        (
            ByzantineCause::PolicyViolations,
            evidence.policy_violations,
            policy.policy_violations,
        ),
        (
            ByzantineCause::RepeatedConsensusFailure,
            evidence.consensus_failures,
            policy.consensus_failures,
        ),
        (
            ByzantineCause::MaliciousPatterns,
            evidence.malicious_patterns,
            policy.malicious_patterns,
        ),
    ]
    .into_iter()
    .filter(|&(_, seen, threshold)| seen >= threshold.max(1))
    .map(|(cause, _, _)| cause)
    .collect()
}

/// What excluding a Byzantine node means: `state_node_byzantine`,
/// `reputation_score_zero`, `excluded_from_task_assignment`, and its tokens
/// revoked (an automatic revocation trigger).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exclusion {
    /// Why; empty when the node was marked earlier (marking is sticky).
    pub causes: Vec<ByzantineCause>,
    pub reputation: Reputation,
    pub revoke_tokens: bool,
}

/// `byzantine_node_excluded(N)`: `Some` when the node is, or from this
/// evidence becomes, Byzantine.
pub fn byzantine_node_excluded(
    already_byzantine: bool,
    evidence: &ByzantineEvidence,
    policy: &ByzantinePolicy,
) -> Option<Exclusion> {
    let causes = byzantine_behavior_detected(evidence, policy);
    (already_byzantine || !causes.is_empty()).then_some(Exclusion {
        causes,
        reputation: Reputation::ZERO,
        revoke_tokens: true,
    })
}

/// The reputation assignment uses: zero for an excluded node, the weighted
/// score otherwise, unknown when a metric is not a rate.
pub fn effective_reputation(
    metrics: &ReputationMetrics,
    exclusion: Option<&Exclusion>,
) -> Option<Reputation> {
    match exclusion {
        Some(e) => Some(e.reputation),
        None => node_reputation(metrics).ok(),
    }
}

/// Facts about one token that can revoke it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct RevocationFacts {
    /// The volunteer revoked this token.
    pub token_revoked_by_user: bool,
    /// The volunteer revoked the grant the token was issued under (renewals
    /// share the grant, so every token of it goes).
    pub grant_revoked_by_user: bool,
    /// The token's subject was excluded as Byzantine.
    pub subject_byzantine: bool,
}

/// A disjunct of `consent_revoked` that holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RevocationTrigger {
    /// `user_initiates_revocation`, of the token.
    UserRevokedToken,
    /// `user_initiates_revocation`, of the grant.
    UserRevokedGrant,
    /// `automatic_revocation_trigger`: the subject is Byzantine.
    SubjectByzantine,
}

impl RevocationTrigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UserRevokedToken => "user revoked the token",
            Self::UserRevokedGrant => "user revoked the grant",
            Self::SubjectByzantine => "node excluded as byzantine",
        }
    }
}

/// `consent_revoked(T, Reason)`: every trigger that holds; empty when none.
pub fn consent_revoked(facts: &RevocationFacts) -> Vec<RevocationTrigger> {
    [
        (
            facts.token_revoked_by_user,
            RevocationTrigger::UserRevokedToken,
        ),
        (
            facts.grant_revoked_by_user,
            RevocationTrigger::UserRevokedGrant,
        ),
        (facts.subject_byzantine, RevocationTrigger::SubjectByzantine),
    ]
    .into_iter()
    .filter_map(|(holds, t)| holds.then_some(t))
    .collect()
}

/// The `state_token_revoked` status a token gets from its triggers.
pub fn revocation_status(triggers: &[RevocationTrigger], revoked_at: i64) -> RevocationStatus {
    match triggers.first() {
        None => RevocationStatus::Active,
        Some(t) => RevocationStatus::Revoked {
            revoked_at,
            reason: t.as_str().to_owned(),
        },
    }
}

/// Redundant verification with up to `f` Byzantine replicas per task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VerificationPolicy {
    /// Byzantine replicas tolerated per task.
    pub f: u32,
    /// Most replicas ever assigned to one task; at least `2f+1`.
    pub max_replicas: u32,
}

impl VerificationPolicy {
    pub fn min_replicas(&self) -> u32 {
        2 * self.f + 1
    }

    pub fn threshold(&self) -> u32 {
        self.f + 1
    }
}

/// One replica's result: who sent it and the digest of what it computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReplicaResult<'a> {
    pub node_id: &'a str,
    pub digest: [u8; 32],
}

/// The verdict of [`consensus`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuorumDecision {
    /// `state_consensus_achieved(Ta, Result)`.
    Accepted { digest: [u8; 32], agreeing: u32 },
    /// Results are still outstanding from assigned replicas.
    Waiting { outstanding: u32 },
    /// Every assigned replica answered without a quorum: assign this many more.
    AddReplicas { count: u32 },
    /// The cap is reached without a quorum, or two digests both reached
    /// `f+1` (more than `f` Byzantine replicas): the task fails visibly.
    Failed {
        distinct_digests: u32,
        best_agreement: u32,
        conflicting: bool,
    },
}

/// The quorum decision for one task with `assigned` replicas so far. A node's
/// result counts once (its first); results from nodes not among the assigned
/// are the caller's to drop. Accepts only with at least `2f+1` results and
/// `f+1` distinct nodes agreeing on one digest.
pub fn consensus(
    policy: &VerificationPolicy,
    assigned: u32,
    results: &[ReplicaResult<'_>],
) -> QuorumDecision {
    let mut seen: Vec<&str> = Vec::new();
    let mut tally: BTreeMap<[u8; 32], u32> = BTreeMap::new();
    for r in results {
        if seen.contains(&r.node_id) {
            continue;
        }
        seen.push(r.node_id);
        *tally.entry(r.digest).or_default() += 1;
    }
    let received = seen.len() as u32;
    let best = tally.values().copied().max().unwrap_or(0);
    let reaching: Vec<_> = tally
        .iter()
        .filter(|&(_, &n)| n >= policy.threshold())
        .collect();
    let max_replicas = policy.max_replicas.max(policy.min_replicas());
    if reaching.len() > 1 {
        return QuorumDecision::Failed {
            distinct_digests: tally.len() as u32,
            best_agreement: best,
            conflicting: true,
        };
    }
    if received >= policy.min_replicas()
        && let Some(&(digest, &agreeing)) = reaching.first()
    {
        return QuorumDecision::Accepted {
            digest: *digest,
            agreeing,
        };
    }
    if received < assigned.max(policy.min_replicas()) {
        return QuorumDecision::Waiting {
            outstanding: assigned.max(policy.min_replicas()) - received,
        };
    }
    if assigned < max_replicas {
        // Enough new replicas that the leading digest could reach f+1.
        let needed = policy.threshold().saturating_sub(best).max(1);
        return QuorumDecision::AddReplicas {
            count: needed.min(max_replicas - assigned),
        };
    }
    QuorumDecision::Failed {
        distinct_digests: tally.len() as u32,
        best_agreement: best,
        conflicting: false,
    }
}

/// Facts the rules' tests and the coordinator decisions' tests share: one
/// node, token and task for which every rule holds at [`fixtures::NOW`].
#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;
    use crate::wire::v1::{Monitoring, Resources, TOKEN_VERSION, TaskPermissions};

    pub(crate) const NOW: i64 = 10_000;

    pub(crate) fn permissions() -> Permissions {
        Permissions {
            resources: Resources {
                cpu_percent_max: 50,
                ram_mb_max: 2048,
                storage_gb_max: 10,
                bandwidth_mbps_max: 10,
            },
            tasks: TaskPermissions {
                allowlist: vec!["ml-training".into(), "data-processing".into()],
                min_reputation: 0.8,
                max_duration_hours: 8,
            },
            monitoring: Monitoring {
                user_activity_yield: true,
                resource_monitoring: true,
                audit_logging: true,
            },
        }
    }

    pub(crate) fn token() -> TokenFacts {
        TokenFacts {
            payload: ConsentTokenPayload {
                version: TOKEN_VERSION.into(),
                token_id: "tok".into(),
                grant_id: "grant".into(),
                issuer: "iss".into(),
                subject: "node-a".into(),
                issued_at: 9_000,
                expires_at: 12_600,
                permissions: permissions(),
                revocation_url: "http://127.0.0.1/revoke/tok".into(),
            },
            signature: SignatureFact::Verified,
            revocation: RevocationStatus::Active,
        }
    }

    pub(crate) fn node() -> NodeFacts {
        NodeFacts {
            node_id: "node-a".into(),
            reputation: Reputation::from_micros(850_000),
            byzantine: false,
            profile: Some(NodeProfile {
                cpu_cores: 4,
                ram_mb: 8192,
                storage_gb: 100,
                bandwidth_mbps: 100,
            }),
        }
    }

    pub(crate) fn task() -> TaskFacts {
        TaskFacts {
            task_type: "ml-training".into(),
            duration_hours: 4,
            requirements: TaskRequirements {
                cpu_cores: 2,
                cpu_percent: 50,
                ram_mb: 1024,
                storage_gb: 5,
                bandwidth_mbps: 1,
            },
        }
    }
}

#[cfg(test)]
mod tests;
