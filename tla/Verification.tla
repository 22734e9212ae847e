--------------------------- MODULE Verification ---------------------------
(***************************************************************************)
(* Redundant verification of one task. Up to F of the nodes are Byzantine   *)
(* (which ones is chosen by the initial state, every choice is checked) and *)
(* may answer any value, colluding included; honest nodes answer Honest.    *)
(* The coordinator assigns 2F+1 replicas, accepts once at least 2F+1        *)
(* results are in and F+1 agree on one value (and no other value does),     *)
(* adds replicas one at a time up to MaxReplicas, then fails visibly.       *)
(***************************************************************************)
EXTENDS Naturals, FiniteSets

CONSTANTS Nodes, F, MaxReplicas, Values, Honest, None, Bug

ASSUME Honest \in Values /\ None \notin Values /\ MaxReplicas >= 2 * F + 1
ASSUME Cardinality(Nodes) >= MaxReplicas

VARIABLES byz, assigned, result, status, accepted

vars == <<byz, assigned, result, status, accepted>>

Threshold == IF Bug = "threshold_f" THEN F ELSE F + 1
MinReplicas == 2 * F + 1

Answered == {n \in assigned : result[n] # None}
Votes(v) == Cardinality({n \in Answered : result[n] = v})
Reaching == {v \in Values : Votes(v) >= Threshold}

Init ==
  /\ byz \in {B \in SUBSET Nodes : Cardinality(B) <= F}
  /\ assigned \in {A \in SUBSET Nodes : Cardinality(A) = MinReplicas}
  /\ result = [n \in Nodes |-> None]
  /\ status = "running"
  /\ accepted = None

\* A replica answers: honest nodes the honest value, Byzantine ones anything.
Submit(n) ==
  /\ status = "running" /\ n \in assigned /\ result[n] = None
  /\ \E v \in (IF n \in byz THEN Values ELSE {Honest}) :
        result' = [result EXCEPT ![n] = v]
  /\ UNCHANGED <<byz, assigned, status, accepted>>

Accept ==
  /\ status = "running"
  /\ Cardinality(Answered) >= MinReplicas
  /\ \E v \in Reaching :
       /\ (Bug = "threshold_f" \/ Reaching = {v})
       /\ status' = "accepted" /\ accepted' = v
  /\ UNCHANGED <<byz, assigned, result>>

NoQuorum == Answered = assigned /\ ~(\E v \in Reaching : Reaching = {v})

AddReplica ==
  /\ status = "running" /\ NoQuorum /\ Cardinality(assigned) < MaxReplicas
  /\ \E n \in Nodes \ assigned : assigned' = assigned \cup {n}
  /\ UNCHANGED <<byz, result, status, accepted>>

Fail ==
  /\ status = "running" /\ NoQuorum /\ Cardinality(assigned) >= MaxReplicas
  /\ status' = "failed"
  /\ UNCHANGED <<byz, assigned, result, accepted>>

Next == Accept \/ AddReplica \/ Fail \/ \E n \in Nodes : Submit(n)

Spec == Init /\ [][Next]_vars
        /\ WF_vars(Accept) /\ WF_vars(AddReplica) /\ WF_vars(Fail)
        /\ \A n \in Nodes : WF_vars(Submit(n))

TypeOK ==
  /\ byz \subseteq Nodes /\ assigned \subseteq Nodes
  /\ result \in [Nodes -> Values \cup {None}]
  /\ status \in {"running", "accepted", "failed"}
  /\ accepted \in Values \cup {None}

\* With at most F Byzantine replicas, an accepted result is the honest one.
NoWrongAcceptance == status = "accepted" => accepted = Honest

ReplicaBound == Cardinality(assigned) <= MaxReplicas

\* Every task is eventually decided, accepted or visibly failed.
TaskResolution == <>(status # "running")

\* With at most F Byzantine replicas every answer arrives, so the honest
\* value is accepted (failure is only for a broken bound).
HonestAccepted == <>(status = "accepted" /\ accepted = Honest)
=============================================================================
