//! Leasing replicas to a node: candidates read without locks and ranked for
//! diversity, then taken in rounds under row locks (PostgreSQL: `SKIP
//! LOCKED`), then the replicas written.

use std::collections::{BTreeMap, VecDeque};

use sqlx::{AnyConnection, Row};

use super::rows::{TASK_COLUMNS, placeholders, task_from};
use crate::store::sql::{SqlStore, db};
use crate::store::{
    AssignmentRecord, AssignmentState, Backend, LeaseChoice, LeaseQuery, StoreError, TaskRecord,
};
use crate::verdict::diversity::diversity_penalty;

const OP: &str = "lease work";

/// The lock a candidate is taken under: PostgreSQL passes over rows another
/// transaction holds; SQLite's write transaction is exclusive already.
fn skip_locked(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => "",
        Backend::Postgres => " FOR NO KEY UPDATE SKIP LOCKED",
    }
}

/// `CoordinatorStore::lease`.
pub(super) async fn lease(
    store: &SqlStore,
    q: LeaseQuery<'_>,
) -> Result<Vec<(AssignmentRecord, TaskRecord)>, StoreError> {
    if q.max_tasks == 0 || q.task_types.is_empty() {
        return Ok(Vec::new());
    }
    let skip_locked = skip_locked(store.backend);
    let mut w = store.begin_write(OP).await?;
    let result = async {
        let ranked = rank_candidates(w.conn(), &q).await?;
        let taken = take_candidates(w.conn(), &q, ranked, skip_locked).await?;
        if !taken.leased.is_empty() {
            write_leases(w.conn(), &q, &taken).await?;
        }
        Ok(taken.leased)
    }
    .await;
    w.finish(result).await
}

/// The select of one page of takeable candidates: pending, short of
/// replicas, before their deadline, of an allowed type, not on this node
/// yet, after the cursor (`created_ms`, `task_id`), in queue order.
fn candidates_sql(task_types: usize, challenges_only: bool) -> String {
    let challenge = if challenges_only {
        " AND t.bootstrap = 1"
    } else {
        " AND t.bootstrap = 0"
    };
    format!(
        "SELECT {cols} FROM tasks t WHERE t.state = 'pending' \
         AND t.replicas_active < t.replicas_wanted AND t.deadline > $2{challenge} \
         AND t.task_type IN ({types}) AND NOT EXISTS (SELECT 1 FROM assignments a \
         WHERE a.task_id = t.task_id AND a.node_key = $1) \
         AND (t.created_ms > ${after_ms} OR (t.created_ms = ${after_ms} AND t.task_id > ${after_id})) \
         ORDER BY t.created_ms, t.task_id LIMIT $3",
        cols = TASK_COLUMNS
            .split(", ")
            .map(|c| format!("t.{}", c.trim()))
            .collect::<Vec<_>>()
            .join(", "),
        types = placeholders(4, task_types),
        after_ms = task_types + 4,
        after_id = task_types + 5,
    )
}

/// The window of takeable candidates, ranked for diversity (stable: queue
/// order within one diversity class). Pages go on past candidates this node
/// may not take (too big, wrong reputation floor, ...): a fixed window of the
/// oldest tasks let a few ineligible ones at the head of the queue starve the
/// node of eligible work behind them (issue 5).
async fn rank_candidates(
    conn: &mut AnyConnection,
    q: &LeaseQuery<'_>,
) -> Result<VecDeque<TaskRecord>, StoreError> {
    let sql = candidates_sql(q.task_types.len(), q.challenges_only);
    let window = i64::from(q.max_tasks) * 2 + 2;
    let mut cursor: (i64, String) = (i64::MIN, String::new());
    let mut ranked = Vec::new();
    loop {
        let mut query = sqlx::query(&sql).bind(q.node_key).bind(q.now).bind(window);
        for t in q.task_types {
            query = query.bind(t);
        }
        let rows = query
            .bind(cursor.0)
            .bind(&cursor.1)
            .fetch_all(&mut *conn)
            .await
            .map_err(db(OP))?;
        let last_page = (rows.len() as i64) < window;
        let mut page = Vec::with_capacity(rows.len());
        for r in &rows {
            let t = task_from(r, OP)?;
            cursor = (t.created_ms, t.task_id.clone());
            if (q.choose)(&t) != LeaseChoice::Skip {
                page.push(t);
            }
        }
        let penalties = diversity_penalties(conn, q, &page).await?;
        for t in page {
            let penalty = penalties.get(&t.task_id).copied().unwrap_or(0);
            ranked.push((penalty, t));
        }
        if last_page || ranked.len() as i64 >= window {
            break;
        }
    }
    ranked.sort_by_key(|(penalty, _)| *penalty);
    Ok(ranked.into_iter().map(|(_, t)| t).collect())
}

/// Sybil diversity: the penalty of each candidate with replicas already,
/// from the owners and network prefixes of its live replicas; one query for
/// the page.
async fn diversity_penalties(
    conn: &mut AnyConnection,
    q: &LeaseQuery<'_>,
    page: &[TaskRecord],
) -> Result<BTreeMap<String, i64>, StoreError> {
    let shared: Vec<&str> = page
        .iter()
        .filter(|t| t.replicas_total > 0)
        .map(|t| t.task_id.as_str())
        .collect();
    let mut penalties = BTreeMap::new();
    if shared.is_empty() {
        return Ok(penalties);
    }
    let sql = format!(
        // Only the task ids filter rows, so the planner goes by the
        // (task_id, node_key) index; a filter on state let stale statistics
        // pick a scan of every live assignment.
        "SELECT a.task_id, \
         COALESCE(SUM(CASE WHEN a.state IN ('leased', 'reported') \
         AND n.owner = $1 THEN 1 ELSE 0 END), 0) AS same_owner, \
         COALESCE(SUM(CASE WHEN a.state IN ('leased', 'reported') \
         AND n.network_prefix = $2 THEN 1 ELSE 0 END), 0) AS same_net \
         FROM assignments a JOIN nodes n ON n.node_key = a.node_key \
         WHERE a.task_id IN ({}) GROUP BY a.task_id",
        placeholders(3, shared.len())
    );
    let mut query = sqlx::query(&sql).bind(q.owner).bind(q.network_prefix);
    for id in &shared {
        query = query.bind(*id);
    }
    for r in query.fetch_all(&mut *conn).await.map_err(db(OP))? {
        let id: String = r.try_get("task_id").map_err(db(OP))?;
        let same_owner: i64 = r.try_get("same_owner").map_err(db(OP))?;
        let same_net: i64 = r.try_get("same_net").map_err(db(OP))?;
        penalties.insert(id, diversity_penalty(same_owner, same_net));
    }
    Ok(penalties)
}

/// What the rounds took: the replicas, and the tasks taken as one replica
/// among others (their counts are raised in one statement).
struct Taken {
    leased: Vec<(AssignmentRecord, TaskRecord)>,
    shared: Vec<String>,
}

/// Candidates were read without locks; each one taken is locked now
/// (PostgreSQL: `SKIP LOCKED`, so a task another server is leasing or a
/// report is deciding is passed over, never waited on, and rounds cannot
/// deadlock) and checked again, so only the tasks taken are locked, and only
/// from here to commit. In rounds: for each candidate passed over the next in
/// rank order is tried, until the node has `max_tasks` or the window is used
/// up (one round took about half: every leaser looks at the oldest tasks,
/// which reports are deciding meanwhile).
async fn take_candidates(
    conn: &mut AnyConnection,
    q: &LeaseQuery<'_>,
    mut queue: VecDeque<TaskRecord>,
    skip_locked: &str,
) -> Result<Taken, StoreError> {
    let mut taken = Taken {
        leased: Vec::new(),
        shared: Vec::new(),
    };
    while taken.leased.len() < q.max_tasks as usize && !queue.is_empty() {
        let want = (q.max_tasks as usize - taken.leased.len()).min(queue.len());
        let picked: Vec<TaskRecord> = queue.drain(..want).collect();
        let mut locked = lock_candidates(conn, q.node_key, &picked, skip_locked).await?;
        // Ranked order; the choice is made again on the locked row.
        for candidate in picked {
            let Some(t) = locked.remove(&candidate.task_id) else {
                continue;
            };
            let choice = (q.choose)(&t);
            if choice == LeaseChoice::Skip {
                continue;
            }
            let replica = take_one(conn, q, t, choice, &mut taken.shared).await?;
            taken.leased.push(replica);
        }
    }
    Ok(taken)
}

/// Locks the picked candidates that are still takeable by this node.
async fn lock_candidates(
    conn: &mut AnyConnection,
    node_key: &str,
    picked: &[TaskRecord],
    skip_locked: &str,
) -> Result<BTreeMap<String, TaskRecord>, StoreError> {
    let lock_sql = format!(
        "SELECT {TASK_COLUMNS} FROM tasks WHERE task_id IN ({}) AND state = 'pending' \
         AND replicas_active < replicas_wanted AND NOT EXISTS (SELECT 1 FROM assignments a \
         WHERE a.task_id = tasks.task_id AND a.node_key = $1) ORDER BY task_id{skip_locked}",
        placeholders(2, picked.len())
    );
    let mut query = sqlx::query(&lock_sql).bind(node_key);
    for t in picked {
        query = query.bind(&t.task_id);
    }
    let mut locked = BTreeMap::new();
    for r in query.fetch_all(&mut *conn).await.map_err(db(OP))? {
        let t = task_from(&r, OP)?;
        locked.insert(t.task_id.clone(), t);
    }
    Ok(locked)
}

/// Takes one replica of a locked task. Adaptive replication gives a task
/// nobody has taken yet to a trusted node alone (its row written now); any
/// other task joins `shared`.
async fn take_one(
    conn: &mut AnyConnection,
    q: &LeaseQuery<'_>,
    mut t: TaskRecord,
    choice: LeaseChoice,
    shared: &mut Vec<String>,
) -> Result<(AssignmentRecord, TaskRecord), StoreError> {
    let alone = choice == LeaseChoice::TakeAlone && t.replicas_total == 0;
    t.replicas_active += 1;
    t.replicas_total += 1;
    if alone {
        t.replicas_wanted = 1;
        t.trusted_node = Some(q.node_key.to_owned());
        sqlx::query(
            "UPDATE tasks SET replicas_active = $2, replicas_total = $3, \
             replicas_wanted = $4, trusted_node = $5 WHERE task_id = $1",
        )
        .bind(&t.task_id)
        .bind(i64::from(t.replicas_active))
        .bind(i64::from(t.replicas_total))
        .bind(i64::from(t.replicas_wanted))
        .bind(&t.trusted_node)
        .execute(&mut *conn)
        .await
        .map_err(db(OP))?;
    } else {
        shared.push(t.task_id.clone());
    }
    let replica = AssignmentRecord {
        assignment_id: (q.new_id)(),
        task_id: t.task_id.clone(),
        node_key: q.node_key.to_owned(),
        state: AssignmentState::Leased,
        leased_at: q.now,
        lease_expires_at: q.lease_expires_at,
        status: None,
        result_digest: None,
        signature: None,
        exit_code: None,
        stdout: None,
        failure: None,
        verdict: None,
        reported_at_ms: None,
    };
    Ok((replica, t))
}

/// One statement each for the counts of the shared tasks, the replicas' rows
/// and the node's `assigned` counter.
async fn write_leases(
    conn: &mut AnyConnection,
    q: &LeaseQuery<'_>,
    taken: &Taken,
) -> Result<(), StoreError> {
    if !taken.shared.is_empty() {
        let sql = format!(
            "UPDATE tasks SET replicas_active = replicas_active + 1, \
             replicas_total = replicas_total + 1 WHERE task_id IN ({})",
            placeholders(1, taken.shared.len())
        );
        let mut query = sqlx::query(&sql);
        for id in &taken.shared {
            query = query.bind(id);
        }
        query.execute(&mut *conn).await.map_err(db(OP))?;
    }
    let values: Vec<String> = (0..taken.leased.len())
        .map(|k| format!("(${}, ${}, $1, 'leased', $2, $3)", 2 * k + 4, 2 * k + 5))
        .collect();
    let sql = format!(
        "INSERT INTO assignments (assignment_id, task_id, node_key, state, leased_at, \
         lease_expires_at) VALUES {}",
        values.join(", ")
    );
    let mut query = sqlx::query(&sql)
        .bind(q.node_key)
        .bind(q.now)
        .bind(q.lease_expires_at);
    for (a, _) in &taken.leased {
        query = query.bind(&a.assignment_id).bind(&a.task_id);
    }
    query.execute(&mut *conn).await.map_err(db(OP))?;
    sqlx::query("UPDATE nodes SET assigned = assigned + $2 WHERE node_key = $1")
        .bind(q.node_key)
        .bind(taken.leased.len() as i64)
        .execute(&mut *conn)
        .await
        .map_err(db(OP))?;
    Ok(())
}
