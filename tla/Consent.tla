---------------------------- MODULE Consent ----------------------------
(***************************************************************************)
(* The consent lifecycle of one coordinator with a few volunteers:          *)
(* publish -> verify -> invitation -> grant -> token -> renewal, expiry,    *)
(* revocation, and the work a node runs under its token.                    *)
(* Time is abstract: a token has ttl ticks left; renewal resets it.         *)
(* Bug selects a deliberately broken variant (see the *_bug.cfg files).     *)
(***************************************************************************)
EXTENDS Naturals, FiniteSets

CONSTANTS Users, Types, MaxTTL, MaxRenewals, MaxLimit, Bug

Phases == {"idle", "published", "verified", "rejected", "invited",
           "granted", "declined"}

VARIABLES phase, scope, limit, ttl, renewals, revoked, running

vars == <<phase, scope, limit, ttl, renewals, revoked, running>>

TypeOK ==
  /\ phase \in [Users -> Phases]
  /\ scope \in [Users -> SUBSET Types]
  /\ limit \in [Users -> 0..MaxLimit]
  /\ ttl \in [Users -> 0..MaxTTL]
  /\ renewals \in [Users -> 0..MaxRenewals]
  /\ revoked \in [Users -> BOOLEAN]
  /\ running \in [Users -> SUBSET Types]

\* valid_consent_token: issued, not revoked, not expired (signatures are
\* abstracted: only the coordinator issues tokens in this model).
ValidToken(u) == phase[u] = "granted" /\ ~revoked[u] /\ ttl[u] > 0

Init ==
  /\ phase = [u \in Users |-> "idle"]
  /\ scope = [u \in Users |-> {}]
  /\ limit = [u \in Users |-> 0]
  /\ ttl = [u \in Users |-> 0]
  /\ renewals = [u \in Users |-> 0]
  /\ revoked = [u \in Users |-> FALSE]
  /\ running = [u \in Users |-> {}]

SetPhase(u, p) == phase' = [phase EXCEPT ![u] = p]

\* The volunteer publishes a signal (voluntary: no fairness).
Publish(u) == phase[u] = "idle" /\ SetPhase(u, "published")
              /\ UNCHANGED <<scope, limit, ttl, renewals, revoked, running>>

\* Discovery checks the signal: authentic or not.
Verify(u) == phase[u] = "published" /\ SetPhase(u, "verified")
             /\ UNCHANGED <<scope, limit, ttl, renewals, revoked, running>>
Reject(u) == phase[u] = "published" /\ SetPhase(u, "rejected")
             /\ UNCHANGED <<scope, limit, ttl, renewals, revoked, running>>

Invite(u) == phase[u] = "verified" /\ SetPhase(u, "invited")
             /\ UNCHANGED <<scope, limit, ttl, renewals, revoked, running>>

\* The volunteer grants scoped permissions and limits, or declines.
Grant(u, s, l) ==
  /\ phase[u] = "invited" /\ SetPhase(u, "granted")
  /\ scope' = [scope EXCEPT ![u] = s]
  /\ limit' = [limit EXCEPT ![u] = l]
  /\ ttl' = [ttl EXCEPT ![u] = MaxTTL]
  /\ UNCHANGED <<renewals, revoked, running>>
Decline(u) == phase[u] = "invited" /\ SetPhase(u, "declined")
              /\ UNCHANGED <<scope, limit, ttl, renewals, revoked, running>>
Decide(u) == \/ \E s \in SUBSET Types, l \in 1..MaxLimit : s # {} /\ Grant(u, s, l)
             \/ Decline(u)

\* The coordinator assigns a task of type t: action_permitted and the
\* resource part of task_assignment_eligible.
Assign(u, t) ==
  /\ IF Bug = "assign_unchecked" THEN phase[u] = "granted" ELSE ValidToken(u)
  /\ IF Bug = "scope_unchecked" THEN TRUE ELSE t \in scope[u]
  /\ t \notin running[u]
  /\ IF Bug = "over_limit" THEN TRUE ELSE Cardinality(running[u]) < limit[u]
  /\ running' = [running EXCEPT ![u] = @ \cup {t}]
  /\ UNCHANGED <<phase, scope, limit, ttl, renewals, revoked>>

Finish(u, t) == t \in running[u]
                /\ running' = [running EXCEPT ![u] = @ \ {t}]
                /\ UNCHANGED <<phase, scope, limit, ttl, renewals, revoked>>

\* Time passes for a token; at expiry the agent stops its work.
Tick(u) ==
  /\ phase[u] = "granted" /\ ttl[u] > 0
  /\ ttl' = [ttl EXCEPT ![u] = @ - 1]
  /\ running' = IF ttl[u] = 1 /\ Bug # "expiry_keeps_running"
                  THEN [running EXCEPT ![u] = {}] ELSE running
  /\ UNCHANGED <<phase, scope, limit, renewals, revoked>>

\* Renewal under the same grant, before expiry, while not revoked.
Renew(u) ==
  /\ ValidToken(u) /\ renewals[u] < MaxRenewals /\ ttl[u] < MaxTTL
  /\ ttl' = [ttl EXCEPT ![u] = MaxTTL]
  /\ renewals' = [renewals EXCEPT ![u] = @ + 1]
  /\ UNCHANGED <<phase, scope, limit, revoked, running>>

\* The volunteer (or an automatic trigger) revokes; running work stops.
Revoke(u) ==
  /\ phase[u] = "granted" /\ ~revoked[u]
  /\ revoked' = [revoked EXCEPT ![u] = TRUE]
  /\ running' = IF Bug = "revoke_keeps_running" THEN running
                ELSE [running EXCEPT ![u] = {}]
  /\ UNCHANGED <<phase, scope, limit, ttl, renewals>>

Next == \E u \in Users :
          \/ Publish(u) \/ Verify(u) \/ Reject(u) \/ Invite(u) \/ Decide(u)
          \/ Tick(u) \/ Renew(u) \/ Revoke(u)
          \/ \E t \in Types : Assign(u, t) \/ Finish(u, t)

Fairness ==
  \A u \in Users :
    /\ WF_vars(Verify(u) \/ Reject(u))
    /\ IF Bug = "invite_stalls" THEN TRUE ELSE WF_vars(Invite(u))
    /\ WF_vars(Decide(u))
    /\ WF_vars(Tick(u))
    /\ \A t \in Types : WF_vars(Assign(u, t))

Spec == Init /\ [][Next]_vars /\ Fairness

-----------------------------------------------------------------------------
\* Safety.
ConsentPreservation ==
  \A u \in Users : \A t \in running[u] : ValidToken(u) /\ t \in scope[u]

ResourceBounds == \A u \in Users : Cardinality(running[u]) <= limit[u]

RevocationStops == \A u \in Users : revoked[u] => running[u] = {}

\* After a revocation no new assignment is made (an action property).
RevocationNoNewWork ==
  [][\A u \in Users : revoked[u] => running'[u] \subseteq running[u]]_vars

\* Liveness.
DiscoveryProgress ==
  \A u \in Users : phase[u] = "published" ~> phase[u] \notin {"idle", "published"}

ConsentResolution ==
  \A u \in Users : phase[u] = "verified" ~> phase[u] \in {"granted", "declined"}

WorkDistribution ==
  \A u \in Users : (ValidToken(u) /\ running[u] = {}) ~> (running[u] # {} \/ ~ValidToken(u))

\* A token ends: every grant eventually stops running work.
ConsentEnds == \A u \in Users : phase[u] = "granted" ~> running[u] = {} /\ ~ValidToken(u)
=============================================================================
