--------------------------- MODULE Verification ---------------------------
(***************************************************************************)
(* Redundant verification of one task as the coordinator implements it     *)
(* (server/src/store/sql/work/: lease, record_result, expire_assignment;  *)
(* server/src/verdict/quorum.rs: apply_quorum; core::rules::consensus;    *)
(* core::coordinator::adaptive_replication and verification_policy).      *)
(*                                                                         *)
(* Up to F of the nodes are Byzantine (which ones is chosen by the initial *)
(* state from ByzChoices: one representative of every class of choices up  *)
(* to the symmetry of the nodes, trusted and untrusted ones apart) and may *)
(* answer any value, colluding included, or report a failure; honest nodes *)
(* answer Honest. The task                                                 *)
(* asks for 2F+1 replicas (replicas_wanted). A node never gets the same    *)
(* task twice. A lease may be lost (the node goes silent, offline or is    *)
(* excluded as Byzantine): it expires, the replica stops counting and the  *)
(* coordinator leases another; a late result still counts. A result judged *)
(* wrong against the task's known answer never counts (nor towards the     *)
(* cap) and another replica takes its place.                               *)
(*                                                                         *)
(* Adaptive replication: when the operator marked the task adaptive, the   *)
(* first lease may go to a node with a long record (Trusted, the           *)
(* min_streak rule) alone: replicas_wanted = 1, and its single result is   *)
(* accepted under the policy f = 0. Whether it does is a random draw (spot *)
(* checks keep full replication at least 2% of the time): both branches.   *)
(* A lost lease, a failure report or a wrong known answer from the trusted *)
(* node escalates the task to full replication (2F+1, the task's own f).   *)
(*                                                                         *)
(* Every completed result runs the quorum decision in the same step (one   *)
(* transaction): accept when at least 2f+1 counted results are in and      *)
(* exactly one value has f+1 votes; two values with f+1 fail visibly; with *)
(* every replica in and no quorum, add replicas up to MaxReplicas (known-  *)
(* wrong ones not counted), then fail visibly.                             *)
(***************************************************************************)
EXTENDS Naturals, FiniteSets

CONSTANTS Nodes, F, MaxReplicas, Values, Honest, None,
          ByzChoices,        \* the Byzantine sets to check (one per symmetry class)
          Trusted,           \* nodes whose streak allows a single replica
          AdaptiveChoices,   \* subset of BOOLEAN: the statement's adaptive flag
          KnownChoices,      \* subset of BOOLEAN: the task has a known answer
          MaxLosses,         \* most replicas lost (expired or failed) per run
          Bug

ASSUME Honest \in Values /\ None \notin Values /\ MaxReplicas >= 2 * F + 1
ASSUME Trusted \subseteq Nodes
ASSUME \A B \in ByzChoices : B \subseteq Nodes /\ Cardinality(B) <= F
ASSUME AdaptiveChoices \subseteq BOOLEAN /\ KnownChoices \subseteq BOOLEAN

VARIABLES byz, adaptive, known,
          asg,       \* [Nodes -> state of the node's replica of the task]
          result,    \* [Nodes -> reported value or None]
          wrong,     \* nodes whose result mismatched the known answer
          active,    \* replicas_active
          wanted,    \* replicas_wanted
          total,     \* replicas_total
          trusted,   \* trusted_node: the node trusted alone, or None
          losses, status, accepted, how

vars == <<byz, adaptive, known, asg, result, wrong, active, wanted, total,
          trusted, losses, status, accepted, how>>

AsgStates == {"none", "leased", "expired", "reported", "failed", "abandoned"}
Full == 2 * F + 1
Max(a, b) == IF a >= b THEN a ELSE b
Min(a, b) == IF a <= b THEN a ELSE b

Leased == {n \in Nodes : asg[n] = "leased"}
Counted(a, w) == {n \in Nodes : a[n] = "reported" /\ n \notin w}

\* core::rules::consensus on the counted results, under
\* core::coordinator::verification_policy(F, MaxReplicas, trusted # None).
Decision(a, r, w, want, tr) ==
  LET pf     == IF tr # None THEN 0 ELSE F
      pmax   == IF tr # None THEN 1 ELSE MaxReplicas
      thr    == IF Bug = "threshold_f" THEN pf ELSE pf + 1
      minr   == 2 * pf + 1
      c      == Counted(a, w)
      votes(v) == Cardinality({n \in c : r[n] = v})
      reach  == {v \in Values : votes(v) >= thr}
      best   == IF c = {} THEN 0
                ELSE CHOOSE b \in {votes(v) : v \in Values} :
                       \A v \in Values : votes(v) <= b
      asgd   == want - Cardinality(w)
      maxr   == Max(pmax, minr)
  IN  IF Bug # "threshold_f" /\ Cardinality(reach) > 1
        THEN [kind |-> "failed", reach |-> reach, count |-> 0]
      ELSE IF Cardinality(c) >= minr /\ reach # {}
        THEN [kind |-> "accepted", reach |-> reach, count |-> 0]
      ELSE IF Cardinality(c) < Max(asgd, minr)
        THEN [kind |-> "waiting", reach |-> reach, count |-> 0]
      ELSE IF asgd < maxr
        THEN [kind |-> "add", reach |-> reach,
              count |-> Min(Max(thr - best, 1), maxr - asgd)]
      ELSE [kind |-> "failed", reach |-> reach, count |-> 0]

Abandon(a) == [n \in Nodes |-> IF a[n] = "leased" THEN "abandoned" ELSE a[n]]

\* The decide step of record_result, on the state the report left.
Decide(a, r, w, want, tr) ==
  LET d   == Decision(a, r, w, want, tr)
      cap == MaxReplicas   \* task.max_replicas.max(policy.min_replicas())
      kw  == Cardinality(w)
      grown == Min(want + d.count, cap + kw)
  IN  CASE d.kind = "accepted" ->
             \* exactly one value reaches the threshold (any, under threshold_f)
             /\ status' = "accepted" /\ \E v \in d.reach : accepted' = v
             /\ how' = IF tr # None THEN "alone" ELSE "quorum"
             /\ asg' = Abandon(a) /\ wanted' = want
        [] d.kind = "failed" ->
             /\ status' = "failed" /\ asg' = Abandon(a) /\ wanted' = want
             /\ UNCHANGED <<accepted, how>>
        [] d.kind = "add" /\ grown > want /\ total < cap + kw ->
             /\ wanted' = grown /\ asg' = a
             /\ UNCHANGED <<status, accepted, how>>
        [] d.kind = "add" ->
             /\ status' = "failed" /\ asg' = Abandon(a) /\ wanted' = want
             /\ UNCHANGED <<accepted, how>>
        [] OTHER ->
             /\ asg' = a /\ wanted' = want
             /\ UNCHANGED <<status, accepted, how>>

Init ==
  /\ byz \in ByzChoices
  /\ adaptive \in AdaptiveChoices
  /\ known \in KnownChoices
  /\ asg = [n \in Nodes |-> "none"]
  /\ result = [n \in Nodes |-> None]
  /\ wrong = {}
  /\ active = 0 /\ wanted = Full /\ total = 0 /\ trusted = None
  /\ losses = 0 /\ status = "running" /\ accepted = None /\ how = "none"

\* lease: a pending task with fewer live replicas than wanted, to a node
\* that never had it; the first replica of an adaptive task may go alone
\* to a node with a long record.
Lease(n) ==
  /\ status = "running" /\ active < wanted /\ asg[n] = "none"
  /\ asg' = [asg EXCEPT ![n] = "leased"]
  /\ active' = active + 1 /\ total' = total + 1
  /\ \/ /\ adaptive /\ total = 0
        /\ (n \in Trusted \/ Bug = "untrusted_single")
        /\ wanted' = 1 /\ trusted' = n
     \/ UNCHANGED <<wanted, trusted>>
  /\ UNCHANGED <<byz, adaptive, known, result, wrong, losses, status, accepted, how>>

\* A lost trusted replica falls back to full replication.
Escalate(n) == IF trusted = n /\ Bug # "keep_trust_on_loss"
               THEN wanted' = Full /\ trusted' = None
               ELSE UNCHANGED <<wanted, trusted>>

\* The sweeper expires the lease of a silent, offline or excluded node.
Expire(n) ==
  /\ status = "running" /\ asg[n] = "leased" /\ losses < MaxLosses
  /\ asg' = [asg EXCEPT ![n] = "expired"]
  /\ active' = active - 1 /\ losses' = losses + 1
  /\ Escalate(n)
  /\ UNCHANGED <<byz, adaptive, known, result, wrong, total, status, accepted, how>>

\* A Byzantine node reports a failure instead of a result.
FailReport(n) ==
  /\ status = "running" /\ asg[n] \in {"leased", "expired"} /\ n \in byz
  /\ losses < MaxLosses
  /\ asg' = [asg EXCEPT ![n] = "failed"]
  /\ active' = IF asg[n] = "leased" THEN active - 1 ELSE active
  /\ losses' = losses + 1
  /\ Escalate(n)
  /\ UNCHANGED <<byz, adaptive, known, result, wrong, total, status, accepted, how>>

\* A completed result (a late one after expiry still counts), judged against
\* the known answer when there is one, then the quorum decision.
Report(n, v) ==
  /\ status = "running" /\ asg[n] \in {"leased", "expired"}
  /\ v \in (IF n \in byz THEN Values ELSE {Honest})
  /\ LET live    == asg[n] = "leased"
         isWrong == known /\ v # Honest /\ Bug # "spot_check_ignored"
         act1    == active + (IF live THEN 0 ELSE 1) - (IF isWrong THEN 1 ELSE 0)
         reset   == isWrong /\ trusted # None
         tr1     == IF reset THEN None ELSE trusted
         want1   == IF reset THEN Full ELSE wanted
         w1      == IF isWrong THEN wrong \cup {n} ELSE wrong
         a1      == [asg EXCEPT ![n] = "reported"]
         r1      == [result EXCEPT ![n] = v]
     IN  /\ result' = r1 /\ wrong' = w1 /\ active' = act1 /\ trusted' = tr1
         /\ Decide(a1, r1, w1, want1, tr1)
  /\ UNCHANGED <<byz, adaptive, known, total, losses>>

ReportAny(n) == \E v \in Values : Report(n, v)

Next == \E n \in Nodes : Lease(n) \/ Expire(n) \/ FailReport(n) \/ ReportAny(n)

\* Leasing is fair; a leased node eventually reports (or its lease is lost);
\* a late report after expiry may never come.
Spec == Init /\ [][Next]_vars
        /\ WF_vars(\E n \in Nodes : Lease(n))
        /\ \A n \in Nodes : WF_vars(asg[n] = "leased" /\ ReportAny(n))

TypeOK ==
  /\ byz \subseteq Nodes /\ adaptive \in BOOLEAN /\ known \in BOOLEAN
  /\ asg \in [Nodes -> AsgStates]
  /\ result \in [Nodes -> Values \cup {None}]
  /\ wrong \subseteq Nodes
  /\ active \in Nat /\ wanted \in Nat /\ total \in Nat
  /\ trusted \in Nodes \cup {None}
  /\ losses \in 0..MaxLosses
  /\ status \in {"running", "accepted", "failed"}
  /\ accepted \in Values \cup {None}
  /\ how \in {"none", "quorum", "alone"}

\* The assumption under which no wrong result is ever accepted: the task
\* is fully replicated, or has a known answer (a spot check), or no
\* Byzantine node has a record long enough to be trusted alone.
TrustAssumption == ~adaptive \/ known \/ byz \cap Trusted = {}

\* With at most F Byzantine replicas and the trust assumption, an accepted
\* result is the honest one.
NoWrongAcceptance ==
  TrustAssumption => (status = "accepted" => accepted = Honest)

\* What the code guarantees without the trust assumption: a wrong result is
\* accepted only alone, from a trusted Byzantine node, on an adaptive task
\* without a known answer (the deliberate trade-off of adaptive replication).
WrongOnlyFromTrustedAlone ==
  (status = "accepted" /\ accepted # Honest) =>
    /\ how = "alone" /\ adaptive /\ ~known
    /\ trusted \in byz \cap Trusted

\* A trusted replica is the task's only one.
TrustedAlone ==
  (status = "running" /\ trusted # None) =>
    /\ wanted = 1 /\ total = 1 /\ asg[trusted] = "leased"

\* The counters the store keeps match the replicas they count.
ActiveCounts ==
  status = "running" => active = Cardinality(Leased) + Cardinality(Counted(asg, wrong))

\* The cap bounds the replicas asked for (results judged wrong against a
\* known answer do not count); live leases never exceed what is asked for.
ReplicaBound ==
  /\ wanted <= MaxReplicas + Cardinality(wrong)
  /\ (status = "running" => Cardinality(Leased) <= wanted)

\* Every task is eventually decided, accepted or visibly failed.
TaskResolution == <>(status # "running")

\* Under the bounds and the trust assumption the honest value is accepted.
HonestAccepted ==
  TrustAssumption => <>(status = "accepted" /\ accepted = Honest)
=============================================================================
