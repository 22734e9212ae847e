----------------------------- MODULE Recovery -----------------------------
(***************************************************************************)
(* Node failure, lease expiry and reassignment. A task is leased to one     *)
(* live node; a live holder keeps its lease by heartbeats; when the holder  *)
(* fails its lease runs down and expires, and the task is reassigned. A     *)
(* failed node may never come back (no fairness on Restart); at most       *)
(* MaxFailures failures happen in a run, fewer than there are nodes.        *)
(***************************************************************************)
EXTENDS Naturals, FiniteSets

CONSTANTS Tasks, Nodes, LeaseTTL, Cap, MaxFailures, None, Bug

ASSUME MaxFailures < Cardinality(Nodes)

VARIABLES alive, lease, ttl, done, failures

vars == <<alive, lease, ttl, done, failures>>

Load(n) == Cardinality({t \in Tasks : lease[t] = n})

Init ==
  /\ alive = [n \in Nodes |-> TRUE]
  /\ lease = [t \in Tasks |-> None]
  /\ ttl = [t \in Tasks |-> 0]
  /\ done = [t \in Tasks |-> FALSE]
  /\ failures = 0

Assign(t, n) ==
  /\ ~done[t] /\ lease[t] = None /\ alive[n]
  /\ (Bug = "over_cap" \/ Load(n) < Cap)
  /\ lease' = [lease EXCEPT ![t] = n]
  /\ ttl' = [ttl EXCEPT ![t] = LeaseTTL]
  /\ UNCHANGED <<alive, done, failures>>

Complete(t) ==
  /\ lease[t] # None /\ alive[lease[t]]
  /\ done' = [done EXCEPT ![t] = TRUE]
  /\ lease' = [lease EXCEPT ![t] = None]
  /\ UNCHANGED <<alive, ttl, failures>>

Fail(n) ==
  /\ alive[n] /\ failures < MaxFailures
  /\ alive' = [alive EXCEPT ![n] = FALSE]
  /\ failures' = failures + 1
  /\ UNCHANGED <<lease, ttl, done>>

Restart(n) ==
  /\ ~alive[n] /\ alive' = [alive EXCEPT ![n] = TRUE]
  /\ UNCHANGED <<lease, ttl, done, failures>>

\* A dead holder sends no heartbeats: its lease runs down.
Tick(t) ==
  /\ lease[t] # None /\ ~alive[lease[t]] /\ ttl[t] > 0
  /\ ttl' = [ttl EXCEPT ![t] = @ - 1]
  /\ UNCHANGED <<alive, lease, done, failures>>

Expire(t) ==
  /\ Bug # "no_expiry"
  /\ lease[t] # None /\ ~alive[lease[t]] /\ ttl[t] = 0
  /\ lease' = [lease EXCEPT ![t] = None]
  /\ UNCHANGED <<alive, ttl, done, failures>>

Next == \/ \E t \in Tasks : Complete(t) \/ Tick(t) \/ Expire(t)
                            \/ \E n \in Nodes : Assign(t, n)
        \/ \E n \in Nodes : Fail(n) \/ Restart(n)

Spec == Init /\ [][Next]_vars
        /\ \A t \in Tasks : /\ WF_vars(Complete(t)) /\ WF_vars(Tick(t))
                            /\ WF_vars(Expire(t))
                            /\ WF_vars(\E n \in Nodes : Assign(t, n))

TypeOK ==
  /\ alive \in [Nodes -> BOOLEAN] /\ lease \in [Tasks -> Nodes \cup {None}]
  /\ ttl \in [Tasks -> 0..LeaseTTL] /\ done \in [Tasks -> BOOLEAN]
  /\ failures \in 0..MaxFailures

\* No node holds more leases than its capacity.
ResourceBounds == \A n \in Nodes : Load(n) <= Cap

\* A finished task is never leased again.
DoneIsFinal == \A t \in Tasks : done[t] => lease[t] = None

\* A lease moves only through expiry or completion, never straight to
\* another node (no task runs on two nodes under live leases).
LeaseHandover ==
  [][\A t \in Tasks : lease[t] # None /\ lease'[t] # None => lease'[t] = lease[t]]_vars

\* Fault recovery: every task is eventually done although nodes fail.
FaultRecovery == \A t \in Tasks : <>done[t]

\* A dead holder's task is eventually free or done.
LeaseRecovered == \A t \in Tasks :
  (lease[t] # None /\ ~alive[lease[t]]) ~> (lease[t] = None \/ alive[lease[t]])
=============================================================================
