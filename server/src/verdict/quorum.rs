//! The quorum step for one task: from its replicas, accept a digest (and
//! judge every answer against it), ask for more replicas, wait, or fail.

use askee_core::coordinator::verification_policy;
use askee_core::rules::{QuorumDecision, ReplicaResult, consensus};

/// A judged result: against the accepted quorum or a known answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Judgement {
    Agreed,
    Wrong,
}

impl Judgement {
    /// `digest` judged against the `expected` one (hex); no digest is wrong.
    pub fn of(expected: &str, digest: Option<&str>) -> Self {
        if digest == Some(expected) {
            Self::Agreed
        } else {
            Self::Wrong
        }
    }

    /// As stored in `assignments.verdict` (and as the node event's kind).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Agreed => "agreed",
            Self::Wrong => "wrong",
        }
    }

    /// A stored verdict: `wrong`, or any other judgement as agreed.
    pub fn from_stored(verdict: &str) -> Self {
        if verdict == "wrong" {
            Self::Wrong
        } else {
            Self::Agreed
        }
    }
}

/// Where one replica stands, as far as the quorum is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicaStanding<'a> {
    /// Leased, not answered yet.
    Live,
    /// Its lease was lost before it answered: it did not use the cap up.
    Lost,
    /// It reported a completed result.
    Completed {
        /// Hex SHA-256 of the result, as reported.
        digest: Option<&'a str>,
        /// Set once judged (a known answer judges on arrival).
        judgement: Option<Judgement>,
    },
    /// Failed, abandoned: out of the count.
    Out,
}

/// One replica of the task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replica<'a> {
    pub node_key: &'a str,
    pub standing: ReplicaStanding<'a>,
}

/// The task's side of the quorum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuorumTask {
    pub f: u32,
    pub max_replicas: u32,
    /// Adaptive replication gave the task to one trusted node alone.
    pub trusted_single: bool,
    pub replicas_wanted: u32,
    /// Replicas ever leased, lost ones included.
    pub replicas_total: u32,
}

/// What the quorum concludes. Indices are into the replicas given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuorumVerdict {
    /// Results are still outstanding.
    Waiting,
    /// Every replica answered without a quorum: the task now wants this many
    /// replicas.
    MoreReplicas { replicas_wanted: u32 },
    /// A digest reached the quorum. Every completed replica not judged yet
    /// is judged against it; leases still live are abandoned.
    Accepted {
        /// Hex SHA-256 of the accepted result.
        digest: String,
        agreeing: u32,
        /// The `f` the quorum was reached under (0 for a trusted single
        /// replica).
        f: u32,
        judgements: Vec<(usize, Judgement)>,
    },
    /// The task fails: every completed replica shares the failed quorum
    /// (`blamed`); leases still live are abandoned.
    Failed { reason: String, blamed: Vec<usize> },
}

impl QuorumVerdict {
    /// Accepted or failed: the task is decided.
    pub fn is_final(&self) -> bool {
        matches!(self, Self::Accepted { .. } | Self::Failed { .. })
    }
}

/// The replicas a task wants for full replication: `2f+1` (an adaptive
/// single replica that fails or is lost falls back to this).
pub fn full_replication(f: u32) -> u32 {
    2 * f + 1
}

/// The replicas that reported a completed result, in order.
pub fn completed(replicas: &[Replica<'_>]) -> Vec<usize> {
    (0..replicas.len())
        .filter(|&i| matches!(replicas[i].standing, ReplicaStanding::Completed { .. }))
        .collect()
}

/// A reported digest as bytes; one that is not 32 bytes of hex counts as
/// zeros (agreeing with no honest result).
fn digest_bytes(digest: Option<&str>) -> [u8; 32] {
    hex::decode(digest.unwrap_or_default())
        .ok()
        .and_then(|b| b.try_into().ok())
        .unwrap_or([0; 32])
}

/// Every completed replica not judged yet, judged against the accepted
/// digest (a spot-checked single result was judged on arrival).
fn judge_unjudged(replicas: &[Replica<'_>], accepted: &str) -> Vec<(usize, Judgement)> {
    replicas
        .iter()
        .enumerate()
        .filter_map(|(i, r)| match r.standing {
            ReplicaStanding::Completed {
                digest,
                judgement: None,
            } => Some((i, Judgement::of(accepted, digest))),
            _ => None,
        })
        .collect()
}

/// The quorum step for one task. Results judged wrong against a known answer
/// never count, and the replicas that gave them do not use the cap up.
pub fn apply_quorum(task: &QuorumTask, replicas: &[Replica<'_>]) -> QuorumVerdict {
    let completed = completed(replicas);
    let mut counted = Vec::with_capacity(completed.len());
    for &i in &completed {
        if let ReplicaStanding::Completed { digest, judgement } = replicas[i].standing
            && judgement != Some(Judgement::Wrong)
        {
            counted.push(ReplicaResult {
                node_id: replicas[i].node_key,
                digest: digest_bytes(digest),
            });
        }
    }
    let known_wrong = (completed.len() - counted.len()) as u32;
    let policy = verification_policy(task.f, task.max_replicas, task.trusted_single);
    let assigned = task.replicas_wanted.saturating_sub(known_wrong);
    let fail = |reason: String| QuorumVerdict::Failed {
        reason,
        blamed: completed.clone(),
    };
    match consensus(&policy, assigned, &counted) {
        QuorumDecision::Waiting { .. } => QuorumVerdict::Waiting,
        QuorumDecision::AddReplicas { count } => {
            let cap = task.max_replicas.max(policy.min_replicas());
            let wanted = (task.replicas_wanted + count).min(cap + known_wrong);
            // The cap bounds the results a task may gather; a replica whose
            // lease was lost never answered, so it does not use the cap up
            // (issue 5: a task with lost replicas failed short of quorum).
            let lost = replicas
                .iter()
                .filter(|r| r.standing == ReplicaStanding::Lost)
                .count() as u32;
            let spent = task.replicas_total.saturating_sub(lost);
            if wanted > task.replicas_wanted && spent < cap + known_wrong {
                QuorumVerdict::MoreReplicas {
                    replicas_wanted: wanted,
                }
            } else {
                fail(format!(
                    "no quorum of {} agreeing results within {} replicas",
                    policy.threshold(),
                    cap
                ))
            }
        }
        QuorumDecision::Failed {
            distinct_digests,
            best_agreement,
            conflicting,
        } => fail(if conflicting {
            format!(
                "conflicting quorums: {distinct_digests} digests, more than f = {} byzantine replicas",
                task.f
            )
        } else {
            format!(
                "no quorum: best agreement {best_agreement} of {} needed, {distinct_digests} distinct digests",
                policy.threshold()
            )
        }),
        QuorumDecision::Accepted { digest, agreeing } => {
            let digest = hex::encode(digest);
            let judgements = judge_unjudged(replicas, &digest);
            QuorumVerdict::Accepted {
                digest,
                agreeing,
                f: policy.f,
                judgements,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    const C: &str = "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc";
    const D: &str = "dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd";
    const E: &str = "eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee";
    const NODES: [&str; 8] = ["n0", "n1", "n2", "n3", "n4", "n5", "n6", "n7"];

    /// A task with `f = 1` (three replicas, two must agree), capped at 5.
    fn task(replicas_wanted: u32, replicas_total: u32) -> QuorumTask {
        QuorumTask {
            f: 1,
            max_replicas: 5,
            trusted_single: false,
            replicas_wanted,
            replicas_total,
        }
    }

    fn done(digest: &'static str) -> ReplicaStanding<'static> {
        ReplicaStanding::Completed {
            digest: Some(digest),
            judgement: None,
        }
    }

    fn judged(digest: &'static str, judgement: Judgement) -> ReplicaStanding<'static> {
        ReplicaStanding::Completed {
            digest: Some(digest),
            judgement: Some(judgement),
        }
    }

    fn replicas(standings: &[ReplicaStanding<'static>]) -> Vec<Replica<'static>> {
        standings
            .iter()
            .zip(NODES)
            .map(|(&standing, node_key)| Replica { node_key, standing })
            .collect()
    }

    #[test]
    fn agreeing_replicas_are_accepted_and_judged() {
        let r = replicas(&[done(A), done(A), done(A)]);
        assert_eq!(
            apply_quorum(&task(3, 3), &r),
            QuorumVerdict::Accepted {
                digest: A.into(),
                agreeing: 3,
                f: 1,
                judgements: vec![
                    (0, Judgement::Agreed),
                    (1, Judgement::Agreed),
                    (2, Judgement::Agreed)
                ],
            }
        );
    }

    #[test]
    fn a_dissenting_replica_is_judged_wrong() {
        let r = replicas(&[done(A), done(B), done(A)]);
        let QuorumVerdict::Accepted {
            digest,
            agreeing,
            judgements,
            ..
        } = apply_quorum(&task(3, 3), &r)
        else {
            panic!("not accepted");
        };
        assert_eq!((digest.as_str(), agreeing), (A, 2));
        assert_eq!(
            judgements,
            vec![
                (0, Judgement::Agreed),
                (1, Judgement::Wrong),
                (2, Judgement::Agreed)
            ]
        );
    }

    #[test]
    fn outstanding_replicas_are_waited_for() {
        let r = replicas(&[done(A), done(A), ReplicaStanding::Live]);
        assert_eq!(apply_quorum(&task(3, 3), &r), QuorumVerdict::Waiting);
        let r = replicas(&[done(A)]);
        assert_eq!(apply_quorum(&task(3, 1), &r), QuorumVerdict::Waiting);
    }

    #[test]
    fn three_different_answers_ask_for_another_replica() {
        let r = replicas(&[done(A), done(B), done(C)]);
        assert_eq!(
            apply_quorum(&task(3, 3), &r),
            QuorumVerdict::MoreReplicas { replicas_wanted: 4 }
        );
    }

    #[test]
    fn no_quorum_at_the_cap_fails_and_blames_every_answer() {
        let r = replicas(&[
            done(A),
            done(B),
            done(C),
            ReplicaStanding::Out,
            done(D),
            done(E),
        ]);
        let verdict = apply_quorum(&task(5, 6), &r);
        assert_eq!(
            verdict,
            QuorumVerdict::Failed {
                reason: "no quorum: best agreement 1 of 2 needed, 5 distinct digests".into(),
                blamed: vec![0, 1, 2, 4, 5],
            }
        );
        assert!(verdict.is_final());
    }

    #[test]
    fn the_cap_spent_without_a_quorum_fails() {
        // Five replicas leased, four answered differently, one failed: no
        // room for the replica that could agree.
        let r = replicas(&[done(A), done(B), done(C), done(D), ReplicaStanding::Out]);
        assert_eq!(
            apply_quorum(&task(4, 5), &r),
            QuorumVerdict::Failed {
                reason: "no quorum of 2 agreeing results within 5 replicas".into(),
                blamed: vec![0, 1, 2, 3],
            }
        );
    }

    #[test]
    fn lost_replicas_do_not_use_the_cap_up() {
        // Issue 5: four different answers and one lost lease still leave
        // room for a fifth answer.
        let standings = [done(A), done(B), done(C), done(D), ReplicaStanding::Lost];
        assert_eq!(
            apply_quorum(&task(4, 5), &replicas(&standings)),
            QuorumVerdict::MoreReplicas { replicas_wanted: 5 }
        );
    }

    #[test]
    fn two_quorums_conflict() {
        let t = QuorumTask {
            max_replicas: 7,
            ..task(5, 5)
        };
        let r = replicas(&[done(A), done(A), done(B), done(B), ReplicaStanding::Live]);
        assert_eq!(
            apply_quorum(&t, &r),
            QuorumVerdict::Failed {
                reason: "conflicting quorums: 2 digests, more than f = 1 byzantine replicas".into(),
                blamed: vec![0, 1, 2, 3],
            }
        );
    }

    #[test]
    fn a_known_wrong_answer_never_counts_and_makes_room() {
        // The wrong answer is already judged: it is neither counted nor
        // judged again, and the task may gather one more result.
        let r = replicas(&[judged(B, Judgement::Wrong), done(A), done(A)]);
        assert_eq!(
            apply_quorum(&task(4, 3), &r),
            QuorumVerdict::Waiting,
            "three counted results are wanted"
        );
        let r = replicas(&[judged(B, Judgement::Wrong), done(A), done(A), done(A)]);
        assert_eq!(
            apply_quorum(&task(4, 4), &r),
            QuorumVerdict::Accepted {
                digest: A.into(),
                agreeing: 3,
                f: 1,
                judgements: vec![
                    (1, Judgement::Agreed),
                    (2, Judgement::Agreed),
                    (3, Judgement::Agreed)
                ],
            }
        );
    }

    #[test]
    fn a_trusted_single_replica_is_accepted_alone() {
        let t = QuorumTask {
            trusted_single: true,
            ..task(1, 1)
        };
        let r = replicas(&[judged(A, Judgement::Agreed)]);
        assert_eq!(
            apply_quorum(&t, &r),
            QuorumVerdict::Accepted {
                digest: A.into(),
                agreeing: 1,
                f: 0,
                judgements: vec![],
            }
        );
    }

    #[test]
    fn an_unreadable_digest_agrees_with_nothing() {
        let r = replicas(&[done(A), done(A), done("not hex")]);
        let QuorumVerdict::Accepted { judgements, .. } = apply_quorum(&task(3, 3), &r) else {
            panic!("not accepted");
        };
        assert_eq!(judgements[2], (2, Judgement::Wrong));
        let missing = [
            done(A),
            done(A),
            ReplicaStanding::Completed {
                digest: None,
                judgement: None,
            },
        ];
        let QuorumVerdict::Accepted { judgements, .. } =
            apply_quorum(&task(3, 3), &replicas(&missing))
        else {
            panic!("not accepted");
        };
        assert_eq!(judgements[2], (2, Judgement::Wrong));
    }

    #[test]
    fn judgements_read_back_as_stored() {
        assert_eq!(Judgement::of(A, Some(A)), Judgement::Agreed);
        assert_eq!(Judgement::of(A, Some(B)), Judgement::Wrong);
        assert_eq!(Judgement::of(A, None), Judgement::Wrong);
        for j in [Judgement::Agreed, Judgement::Wrong] {
            assert_eq!(Judgement::from_stored(j.as_str()), j);
        }
        assert_eq!(full_replication(1), 3);
        assert_eq!(full_replication(0), 1);
    }
}
