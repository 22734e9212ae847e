//! Scale-out invariants of the coordinator store, with two store instances
//! (two connection pools, as two server processes have) on one database:
//! concurrent leases never give a task more replicas than it wants nor one
//! node two replicas of a task, and concurrent duplicate reports are
//! recorded once. Runs on PostgreSQL (SKIP LOCKED) and SQLite.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use askee_core::rules::ByzantinePolicy;
use askee_core::wire::v1::{NodeState, ReportStatus, TaskState};
use askee_server::store::{
    AuditDraft, LeaseChoice, LeaseQuery, Misbehaviour, NodeRecord, NodeStats, ResultInput, Store,
    TaskRecord,
};
use askee_testkit::pg::PgCluster;

fn audit(kind: &str) -> AuditDraft {
    AuditDraft {
        timestamp_ms: 1,
        kind: kind.into(),
        subject: "s".into(),
        data: serde_json::json!({}),
    }
}

fn node(k: usize) -> NodeRecord {
    NodeRecord {
        node_key: format!("node-{k:03}"),
        token_id: format!("tok-{k}"),
        grant_id: format!("grant-{k}"),
        token_expires_at: 4_000_000_000,
        token_payload_json: "{}".into(),
        profile_json: "{}".into(),
        cpu_cores: 4,
        ram_mb: 4096,
        storage_gb: 10,
        bandwidth_mbps: 10,
        owner: format!("owner-{k}"),
        network_prefix: "127.0.0.0/24".into(),
        state: NodeState::Active,
        registered_at: 0,
        last_heartbeat: 0,
        stats: NodeStats::default(),
        reputation_micros: 0,
        exclusion_reason: None,
    }
}

fn task(i: usize) -> TaskRecord {
    TaskRecord {
        task_id: format!("task-{i:04}"),
        operator: "op".into(),
        operator_key: "key".into(),
        statement_json: "{}".into(),
        signature: "sig".into(),
        module_sha256: "m".into(),
        task_type: "data-processing".into(),
        duration_hours: 1,
        cpu_cores: 1,
        ram_mb: 16,
        storage_gb: 0,
        bandwidth_mbps: 0,
        f: 1,
        max_replicas: 5,
        adaptive: false,
        known_digest: None,
        bootstrap: false,
        deadline: 4_000_000_000,
        state: TaskState::Pending,
        replicas_wanted: 3,
        replicas_active: 0,
        replicas_total: 0,
        results_received: 0,
        trusted_node: None,
        accepted_digest: None,
        reason: None,
        audit_index: None,
        created_ms: i as i64,
        updated_ms: i as i64,
    }
}

async fn concurrent_leases_and_reports(a: Arc<dyn Store>, b: Arc<dyn Store>) {
    const NODES: usize = 24;
    const TASKS: usize = 40;
    a.put_module("m", b"\0asm", "op", 0).await.unwrap();
    for k in 0..NODES {
        a.register_node(&node(k), audit("node.register"))
            .await
            .unwrap();
    }
    let tasks: Vec<TaskRecord> = (0..TASKS).map(task).collect();
    let audits = tasks.iter().map(|_| audit("task.submit")).collect();
    a.create_tasks(&tasks, audits).await.unwrap();

    // Every node leases from one of the two stores at once, repeatedly;
    // then, once nobody competes, the rows skipped while locked are taken.
    let lease_round = |store: Arc<dyn Store>, k: usize, rounds: usize| async move {
        let key = node(k).node_key;
        let types = vec!["data-processing".to_owned()];
        let new_id = || uuid::Uuid::new_v4().to_string();
        let choose = |_: &TaskRecord| LeaseChoice::Take;
        let mut got = Vec::new();
        for _ in 0..rounds {
            let leased = store
                .lease(LeaseQuery {
                    node_key: &key,
                    owner: "o",
                    network_prefix: "p",
                    max_tasks: 4,
                    task_types: &types,
                    challenges_only: false,
                    now: 1_000,
                    lease_expires_at: 2_000,
                    new_id: &new_id,
                    choose: &choose,
                })
                .await
                .unwrap();
            got.extend(leased.into_iter().map(|(a, _)| a));
        }
        got
    };
    let mut handles = Vec::new();
    for k in 0..NODES {
        let store = if k % 2 == 0 { a.clone() } else { b.clone() };
        handles.push(tokio::spawn(lease_round(store, k, 4)));
    }
    let mut per_task: HashMap<String, Vec<String>> = HashMap::new();
    let mut all = Vec::new();
    let mut leased = Vec::new();
    for h in handles {
        leased.extend(h.await.unwrap());
    }
    for k in 0..NODES {
        leased.extend(lease_round(b.clone(), k, 4).await);
    }
    for a in leased {
        per_task
            .entry(a.task_id.clone())
            .or_default()
            .push(a.node_key.clone());
        all.push(a);
    }
    // 24 nodes × 16 asks ≥ 40 tasks × 3 replicas: every replica is out,
    // none twice, never two on one node.
    assert_eq!(all.len(), TASKS * 3);
    for (t, nodes) in &per_task {
        assert_eq!(nodes.len(), 3, "task {t}: {nodes:?}");
        let distinct: HashSet<_> = nodes.iter().collect();
        assert_eq!(distinct.len(), 3, "task {t}: {nodes:?}");
    }

    // Every replica reported twice at once, through both stores.
    let mut handles = Vec::new();
    for asg in all {
        for store in [a.clone(), b.clone()] {
            let asg = asg.clone();
            handles.push(tokio::spawn(async move {
                store
                    .record_result(ResultInput {
                        node_key: asg.node_key.clone(),
                        assignment_id: asg.assignment_id.clone(),
                        task_id: asg.task_id.clone(),
                        status: ReportStatus::Completed,
                        result_digest: "ab".repeat(32),
                        signature: "sig".into(),
                        exit_code: 0,
                        stdout: String::new(),
                        failure: String::new(),
                        fuel_consumed: 0,
                        now_ms: 1_000_000,
                        heartbeat_interval: 30,
                        policy: ByzantinePolicy::default(),
                    })
                    .await
                    .unwrap()
                    .recorded
            }));
        }
    }
    let mut recorded = 0;
    for h in handles {
        if h.await.unwrap() {
            recorded += 1;
        }
    }
    // Once a task is verified the third report is answered but not
    // recorded; a duplicate is never recorded.
    assert!(recorded <= TASKS * 3, "{recorded}");
    assert!(recorded >= TASKS * 2, "{recorded}");
    let mut verified_entries = 0;
    let size = a.audit_size().await.unwrap();
    for e in a.audit_entries(0, size).await.unwrap() {
        if e.entry.kind == "task.verified" {
            verified_entries += 1;
        }
    }
    assert_eq!(verified_entries, TASKS, "one acceptance per task");
    for t in 0..TASKS {
        let rec = a.task(&task(t).task_id).await.unwrap().unwrap();
        assert_eq!(rec.state, TaskState::Verified);
        assert!(rec.results_received <= 3);
        assert!(rec.results_received >= 2);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_on_postgres() {
    let pg = PgCluster::start();
    let url = pg.create_database("askee");
    let a = askee_server::store::open(&url).await.unwrap();
    let b = askee_server::store::open(&url).await.unwrap();
    concurrent_leases_and_reports(a, b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("askee.db").display());
    let a = askee_server::store::open(&url).await.unwrap();
    let b = askee_server::store::open(&url).await.unwrap();
    concurrent_leases_and_reports(a, b).await;
}

/// Regression (issue 5, found by the formal review): recording a
/// misbehaviour recomputed the node's reputation with a fixed 30 s heartbeat
/// interval instead of the server's, so its uptime rate was wrong whenever
/// the interval was configured otherwise.
#[tokio::test]
async fn issue_5_misbehaviour_reputation_uses_the_configured_heartbeat_interval() {
    use askee_core::coordinator::{NodeCounters, reputation_metrics};
    use askee_core::rules::node_reputation;

    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("askee.db").display());
    let store = askee_server::store::open(&url).await.unwrap();
    let n = node(1);
    store
        .register_node(&n, audit("node.register"))
        .await
        .unwrap();
    let lenient = ByzantinePolicy {
        invalid_signatures: 5,
        ..ByzantinePolicy::default()
    };
    let (now_s, interval) = (600, 600);
    let excluded = store
        .record_misbehaviour(
            &n.node_key,
            Misbehaviour::InvalidSignature,
            "test",
            now_s * 1000,
            interval,
            lenient,
        )
        .await
        .unwrap();
    assert!(excluded.is_none());
    let after = store.node(&n.node_key).await.unwrap().unwrap();
    let expected = |heartbeat_interval| {
        let counters = NodeCounters {
            heartbeats: after.stats.heartbeats,
            age_seconds: now_s as u64,
            heartbeat_interval,
            active: true,
            ..NodeCounters::default()
        };
        node_reputation(&reputation_metrics(&counters))
            .unwrap()
            .micros()
    };
    assert_ne!(
        expected(interval),
        expected(30),
        "the test must tell them apart"
    );
    assert_eq!(after.reputation_micros, expected(interval));
}

/// A store on a fresh SQLite file (the lease and quorum SQL is shared with
/// PostgreSQL, which `two_stores_on_postgres` exercises).
async fn sqlite_store(dir: &tempfile::TempDir) -> Arc<dyn Store> {
    let url = format!("sqlite://{}", dir.path().join("askee.db").display());
    askee_server::store::open(&url).await.unwrap()
}

/// Leases for node `k` with a chooser; returns the leased assignments.
async fn lease_as(
    store: &Arc<dyn Store>,
    k: usize,
    max_tasks: u32,
    now: i64,
    lease_expires_at: i64,
    choose: &(dyn Fn(&TaskRecord) -> LeaseChoice + Send + Sync),
) -> Vec<askee_server::store::AssignmentRecord> {
    let key = node(k).node_key;
    let types = vec!["data-processing".to_owned()];
    let new_id = || uuid::Uuid::new_v4().to_string();
    store
        .lease(LeaseQuery {
            node_key: &key,
            owner: &node(k).owner,
            network_prefix: "p",
            max_tasks,
            task_types: &types,
            challenges_only: false,
            now,
            lease_expires_at,
            new_id: &new_id,
            choose,
        })
        .await
        .unwrap()
        .into_iter()
        .map(|(a, _)| a)
        .collect()
}

async fn report(
    store: &Arc<dyn Store>,
    a: &askee_server::store::AssignmentRecord,
    digest: &str,
) -> TaskState {
    store
        .record_result(ResultInput {
            node_key: a.node_key.clone(),
            assignment_id: a.assignment_id.clone(),
            task_id: a.task_id.clone(),
            status: ReportStatus::Completed,
            result_digest: digest.repeat(32),
            signature: "sig".into(),
            exit_code: 0,
            stdout: String::new(),
            failure: String::new(),
            fuel_consumed: 0,
            now_ms: 3_000_000,
            heartbeat_interval: 30,
            policy: ByzantinePolicy::default(),
        })
        .await
        .unwrap()
        .task_state
}

/// Regression (issue 5, found by the formal review): the lease looked only
/// at the oldest `2 * max_tasks + 2` pending tasks, so a node for which
/// those were all ineligible got nothing, however much eligible work waited
/// behind them.
#[tokio::test]
async fn issue_5_eligible_work_behind_many_ineligible_tasks_is_leased() {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite_store(&dir).await;
    store.put_module("m", b"\0asm", "op", 0).await.unwrap();
    store
        .register_node(&node(0), audit("node.register"))
        .await
        .unwrap();
    let tasks: Vec<TaskRecord> = (0..40).map(task).collect();
    let audits = tasks.iter().map(|_| audit("task.submit")).collect();
    store.create_tasks(&tasks, audits).await.unwrap();
    // Only the last three tasks fit this node (say, the others need more
    // memory than it has).
    let eligible: HashSet<String> = (37..40).map(|i| task(i).task_id).collect();
    let choose = |t: &TaskRecord| {
        if eligible.contains(&t.task_id) {
            LeaseChoice::Take
        } else {
            LeaseChoice::Skip
        }
    };
    let got = lease_as(&store, 0, 2, 1_000, 2_000, &choose).await;
    let ids: Vec<&str> = got.iter().map(|a| a.task_id.as_str()).collect();
    assert_eq!(ids, ["task-0037", "task-0038"], "oldest eligible first");
    let rest = lease_as(&store, 0, 2, 1_000, 2_000, &choose).await;
    let ids: Vec<&str> = rest.iter().map(|a| a.task_id.as_str()).collect();
    assert_eq!(ids, ["task-0039"]);
    assert!(
        lease_as(&store, 0, 2, 1_000, 2_000, &choose)
            .await
            .is_empty()
    );
}

/// Regression (issue 5, found by the formal review): the escalation cap
/// (`max_replicas`) counted replicas whose lease was lost, so a task that
/// had lost two replicas and then needed one more to reach a quorum failed
/// although only three results had come in.
#[tokio::test]
async fn issue_5_lost_replicas_do_not_use_up_the_escalation_cap() {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite_store(&dir).await;
    store.put_module("m", b"\0asm", "op", 0).await.unwrap();
    for k in 0..6 {
        store
            .register_node(&node(k), audit("node.register"))
            .await
            .unwrap();
    }
    // f = 1: three replicas wanted, at most five.
    let t = task(0);
    store
        .create_tasks(std::slice::from_ref(&t), vec![audit("task.submit")])
        .await
        .unwrap();
    let take = |_: &TaskRecord| LeaseChoice::Take;
    // Nodes 0 and 1 take replicas and vanish; node 2 holds a longer lease.
    lease_as(&store, 0, 1, 1_000, 2_000, &take).await;
    lease_as(&store, 1, 1, 1_000, 2_000, &take).await;
    let a2 = lease_as(&store, 2, 1, 1_000, 9_000, &take).await;
    let swept = store.sweep(3_000, 0, 3_000_000).await.unwrap();
    assert_eq!(swept.leases_expired, 2);
    let a3 = lease_as(&store, 3, 1, 3_000, 9_000, &take).await;
    let a4 = lease_as(&store, 4, 1, 3_000, 9_000, &take).await;
    assert_eq!(
        store
            .task(&t.task_id)
            .await
            .unwrap()
            .unwrap()
            .replicas_total,
        5
    );
    // Three results, three digests: no quorum yet, one more replica needed.
    assert_eq!(report(&store, &a2[0], "aa").await, TaskState::Pending);
    assert_eq!(report(&store, &a3[0], "bb").await, TaskState::Pending);
    assert_eq!(report(&store, &a4[0], "cc").await, TaskState::Pending);
    let rec = store.task(&t.task_id).await.unwrap().unwrap();
    assert_eq!(rec.replicas_wanted, 4, "escalated: {:?}", rec.reason);
    let a5 = lease_as(&store, 5, 1, 3_000, 9_000, &take).await;
    assert_eq!(a5.len(), 1);
    assert_eq!(report(&store, &a5[0], "aa").await, TaskState::Verified);
}

/// Issue 5 (throughput): a report appends its counter changes as node
/// events instead of locking node rows; the fold applies them in order
/// under the node's row lock. A wrong verdict must reset a trusted node's
/// streak (adaptive replication's trust) on the fold that precedes its next
/// lease, and a fold consumes each event exactly once.
async fn wrong_verdict_resets_the_streak_on_the_fold(store: Arc<dyn Store>) {
    store.put_module("m", b"\0asm", "op", 0).await.unwrap();
    let trusted = node(0);
    store
        .register_node(&trusted, audit("node.register"))
        .await
        .unwrap();
    let policy = ByzantinePolicy::default();
    let take = |_: &TaskRecord| LeaseChoice::Take;
    // Four known-answer tasks: three answered right (a streak of three once
    // folded), the fourth wrong.
    for i in 0..4 {
        let mut t = task(i);
        t.f = 0;
        t.replicas_wanted = 1;
        t.known_digest = Some("ab".repeat(32));
        store
            .create_tasks(&[t], vec![audit("task.submit")])
            .await
            .unwrap();
        let got = lease_as(&store, 0, 1, 1_000, 2_000, &take).await;
        assert_eq!(got.len(), 1);
        let answer = if i < 3 { "ab" } else { "cd" };
        let state = report(&store, &got[0], answer).await;
        if i < 3 {
            assert_eq!(state, TaskState::Verified);
            store
                .fold_node(&trusted.node_key, 3_000_000, 30, policy)
                .await
                .unwrap();
        }
    }
    // Not folded yet: the row is untouched by the report.
    let before = store.node(&trusted.node_key).await.unwrap().unwrap();
    assert_eq!((before.stats.streak, before.stats.wrong), (3, 0));
    let excluded = store
        .fold_node(&trusted.node_key, 3_000_000, 30, policy)
        .await
        .unwrap();
    assert!(excluded.is_none(), "one wrong result does not exclude");
    let after = store.node(&trusted.node_key).await.unwrap().unwrap();
    assert_eq!(after.stats.streak, 0);
    assert_eq!(after.stats.wrong, 1);
    assert_eq!(after.stats.completed, 4);
    assert_eq!(after.stats.agreed, 3);
    // Folding again changes nothing: every event was consumed once.
    store
        .fold_node(&trusted.node_key, 3_000_000, 30, policy)
        .await
        .unwrap();
    assert_eq!(
        store.node(&trusted.node_key).await.unwrap().unwrap().stats,
        after.stats
    );
    assert!(
        store
            .fold_pending(100, i64::MAX, 3_000_000, 30, policy)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn issue_5_wrong_verdict_resets_the_streak_on_the_fold_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    wrong_verdict_resets_the_streak_on_the_fold(sqlite_store(&dir).await).await;
}

#[tokio::test]
async fn issue_5_wrong_verdict_resets_the_streak_on_the_fold_postgres() {
    let pg = PgCluster::start();
    let url = pg.create_database("fold");
    wrong_verdict_resets_the_streak_on_the_fold(askee_server::store::open(&url).await.unwrap())
        .await;
}
