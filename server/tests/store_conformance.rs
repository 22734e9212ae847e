//! One conformance suite for the `Store` trait, run against a temp-file
//! SQLite database and a fresh database in a throwaway PostgreSQL cluster
//! (one cluster per test binary).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use askee_server::store::{
    self, AuditDraft, Backend, CheckpointRecord, GrantRecord, InvitationRecord, InvitationState,
    OperatorRecord, RevokeOutcome, Store, StoreError, TokenRecord,
};
use askee_testkit::pg::PgCluster;

static CLUSTER: OnceLock<PgCluster> = OnceLock::new();
static DB_SEQ: AtomicUsize = AtomicUsize::new(0);

fn pg_url() -> String {
    let cluster = CLUSTER.get_or_init(PgCluster::start);
    let n = DB_SEQ.fetch_add(1, Ordering::Relaxed);
    cluster.create_database(&format!("conformance_{n}"))
}

async fn sqlite() -> (Arc<dyn Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("askee.db").display());
    (store::open(&url).await.expect("open sqlite"), dir)
}

async fn postgres() -> (Arc<dyn Store>, String) {
    let url = pg_url();
    (store::open(&url).await.expect("open postgres"), url)
}

fn draft(kind: &str, subject: &str) -> AuditDraft {
    AuditDraft {
        timestamp_ms: 1_700_000_000_000,
        kind: kind.into(),
        subject: subject.into(),
        data: serde_json::json!({"k": kind, "n": [1, 2]}),
    }
}

fn invitation(id: &str, node: &str) -> InvitationRecord {
    InvitationRecord {
        manifest_id: id.into(),
        node_key: node.into(),
        source: "join".into(),
        domain: Some("example.org".into()),
        manifest_json: format!("{{\"id\":\"{id}\"}}"),
        manifest_digest: format!("digest-{id}"),
        created_at: 100,
        expires_at: 1_000,
        state: InvitationState::Pending,
    }
}

fn grant(id: &str, manifest: &str, node: &str) -> GrantRecord {
    GrantRecord {
        grant_id: id.into(),
        manifest_id: manifest.into(),
        node_key: node.into(),
        statement: "c3RhdGVtZW50".into(),
        signature: "c2ln".into(),
        permissions_json: "{\"cpu\":1}".into(),
        granted_at: 200,
        expires_at: 10_000,
        revoked_at: None,
        revoke_reason: None,
        revoked_by: None,
    }
}

fn token(id: &str, grant: &str, node: &str, issued_at: i64) -> TokenRecord {
    TokenRecord {
        token_id: id.into(),
        grant_id: grant.into(),
        node_key: node.into(),
        kid: "k1".into(),
        issued_at,
        expires_at: issued_at + 600,
        jwt: format!("jwt.{id}.sig"),
    }
}

async fn counts(s: &dyn Store, grant_id: &str) -> (bool, usize, u64) {
    (
        s.grant(grant_id).await.unwrap().is_some(),
        s.tokens_of_grant(grant_id).await.unwrap().len(),
        s.audit_size().await.unwrap(),
    )
}

async fn check_audit_consistent(s: &dyn Store) {
    let size = s.audit_size().await.unwrap();
    let entries = s.audit_entries(0, size).await.unwrap();
    let hashes = s.audit_leaf_hashes(size).await.unwrap();
    assert_eq!(entries.len() as u64, size);
    assert_eq!(hashes.len() as u64, size);
    for (i, (stored, hash)) in entries.iter().zip(&hashes).enumerate() {
        assert_eq!(stored.entry.index, i as u64, "dense indices");
        let (body, leaf) = askee_core::audit::leaf(&stored.entry);
        assert_eq!(body, stored.body);
        assert_eq!(&leaf, hash);
        assert_eq!(stored.leaf_hash, leaf);
    }
}

async fn invitations_lifecycle(s: Arc<dyn Store>) {
    s.ping().await.unwrap();
    assert_eq!(s.invitation("m1").await.unwrap(), None);
    let inv = invitation("m1", "node-a");
    s.create_invitation(&inv, draft("consent.invite", "node-a"))
        .await
        .unwrap();
    assert_eq!(s.invitation("m1").await.unwrap(), Some(inv.clone()));
    assert_eq!(s.audit_size().await.unwrap(), 1);
    let again = s
        .create_invitation(&inv, draft("consent.invite", "node-a"))
        .await;
    assert!(
        matches!(again, Err(StoreError::Duplicate { .. })),
        "{again:?}"
    );
    assert_eq!(
        s.audit_size().await.unwrap(),
        1,
        "failed insert appends nothing"
    );

    s.record_grant(
        &grant("g1", "m1", "node-a"),
        &token("t1", "g1", "node-a", 200),
        vec![draft("consent.grant", "node-a"), draft("token.issue", "t1")],
    )
    .await
    .unwrap();
    assert_eq!(
        s.invitation("m1").await.unwrap().unwrap().state,
        InvitationState::Granted
    );
    assert_eq!(
        s.grant("g1").await.unwrap(),
        Some(grant("g1", "m1", "node-a"))
    );
    assert_eq!(
        s.grants_of_node("node-a").await.unwrap(),
        vec![grant("g1", "m1", "node-a")]
    );
    assert_eq!(
        s.token("t1").await.unwrap(),
        Some(token("t1", "g1", "node-a", 200))
    );
    assert_eq!(s.audit_size().await.unwrap(), 3);

    // A second grant of the same manifest conflicts and stores nothing.
    let before = counts(&*s, "g2").await;
    let second = s
        .record_grant(
            &grant("g2", "m1", "node-a"),
            &token("t2", "g2", "node-a", 300),
            vec![draft("consent.grant", "node-a")],
        )
        .await;
    assert!(
        matches!(second, Err(StoreError::Conflict { .. })),
        "{second:?}"
    );
    assert_eq!(counts(&*s, "g2").await, before);
    assert_eq!(s.token("t2").await.unwrap(), None);

    // A grant whose token id collides is rolled back entirely: the
    // invitation stays pending.
    s.create_invitation(
        &invitation("m2", "node-a"),
        draft("consent.invite", "node-a"),
    )
    .await
    .unwrap();
    let size = s.audit_size().await.unwrap();
    let dup = s
        .record_grant(
            &grant("g3", "m2", "node-a"),
            &token("t1", "g3", "node-a", 300),
            vec![draft("consent.grant", "node-a")],
        )
        .await;
    assert!(matches!(dup, Err(StoreError::Duplicate { .. })), "{dup:?}");
    assert_eq!(
        s.invitation("m2").await.unwrap().unwrap().state,
        InvitationState::Pending
    );
    assert_eq!(s.grant("g3").await.unwrap(), None);
    assert_eq!(s.audit_size().await.unwrap(), size);
    check_audit_consistent(&*s).await;
}

async fn setup_grant(s: &dyn Store, g: &str, node: &str) {
    let m = format!("m-{g}");
    s.create_invitation(&invitation(&m, node), draft("consent.invite", node))
        .await
        .unwrap();
    s.record_grant(
        &grant(g, &m, node),
        &token(&format!("{g}-t0"), g, node, 200),
        vec![draft("consent.grant", node)],
    )
    .await
    .unwrap();
}

async fn renewal_and_revocation(s: Arc<dyn Store>) {
    setup_grant(&*s, "g1", "node-a").await;
    setup_grant(&*s, "g2", "node-b").await;
    s.record_renewal(
        &token("g1-t1", "g1", "node-a", 500),
        draft("token.renew", "g1-t1"),
    )
    .await
    .unwrap();
    assert_eq!(s.tokens_of_grant("g1").await.unwrap().len(), 2);

    // Renewal at or past the grant's end is refused.
    let size = s.audit_size().await.unwrap();
    let late = s
        .record_renewal(
            &token("g1-late", "g1", "node-a", 10_000),
            draft("token.renew", "x"),
        )
        .await;
    assert!(matches!(late, Err(StoreError::Conflict { .. })), "{late:?}");
    assert_eq!(s.token("g1-late").await.unwrap(), None);
    assert_eq!(s.audit_size().await.unwrap(), size);

    let unknown = s
        .record_renewal(
            &token("x", "nope", "node-a", 500),
            draft("token.renew", "x"),
        )
        .await;
    assert!(
        matches!(unknown, Err(StoreError::NotFound { .. })),
        "{unknown:?}"
    );

    // Revocation, then idempotence.
    let outcome = s
        .revoke_grant(
            "g1",
            600,
            "volunteer asked",
            "volunteer",
            draft("consent.revoke", "g1"),
        )
        .await
        .unwrap();
    assert_eq!(outcome, RevokeOutcome::Revoked);
    let size = s.audit_size().await.unwrap();
    let again = s
        .revoke_grant("g1", 700, "other", "system", draft("consent.revoke", "g1"))
        .await
        .unwrap();
    assert_eq!(
        again,
        RevokeOutcome::AlreadyRevoked {
            at: 600,
            reason: "volunteer asked".into()
        }
    );
    assert_eq!(
        s.audit_size().await.unwrap(),
        size,
        "no entry for a no-op revoke"
    );
    let g = s.grant("g1").await.unwrap().unwrap();
    assert_eq!(g.revoked_at, Some(600));
    assert_eq!(g.revoked_by.as_deref(), Some("volunteer"));

    let missing = s
        .revoke_grant("nope", 1, "r", "system", draft("consent.revoke", "nope"))
        .await;
    assert!(
        matches!(missing, Err(StoreError::NotFound { .. })),
        "{missing:?}"
    );

    // Renewal after revocation is refused.
    let after = s
        .record_renewal(
            &token("g1-t2", "g1", "node-a", 800),
            draft("token.renew", "g1-t2"),
        )
        .await;
    assert!(
        matches!(after, Err(StoreError::Conflict { .. })),
        "{after:?}"
    );
    assert_eq!(s.audit_size().await.unwrap(), size);

    // The revocation list holds g1 with both its tokens, until its end.
    let revoked = s.revoked_grants(1_000).await.unwrap();
    assert_eq!(revoked.len(), 1);
    assert_eq!(revoked[0].0.grant_id, "g1");
    assert_eq!(revoked[0].1, vec!["g1-t0".to_owned(), "g1-t1".to_owned()]);
    assert!(s.revoked_grants(10_000).await.unwrap().is_empty());
    check_audit_consistent(&*s).await;
}

async fn concurrent_renew_and_revoke(s: Arc<dyn Store>) {
    setup_grant(&*s, "g1", "node-a").await;
    let mut tasks = Vec::new();
    for i in 0..10 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let id = format!("r{i}");
            s.record_renewal(
                &token(&id, "g1", "node-a", 300 + i),
                draft("token.renew", &id),
            )
            .await
            .map(|()| (id, false))
        }));
    }
    let s2 = s.clone();
    let revoke = tokio::spawn(async move {
        s2.revoke_grant("g1", 400, "r", "system", draft("consent.revoke", "g1"))
            .await
            .unwrap()
    });
    let mut renewed = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            Ok((id, _)) => renewed.push(id),
            Err(StoreError::Conflict { .. }) => {}
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(revoke.await.unwrap(), RevokeOutcome::Revoked);
    // Every token that was stored is in the revocation list.
    let revoked = s.revoked_grants(0).await.unwrap();
    assert_eq!(revoked[0].1.len(), renewed.len() + 1);
    // The revoke's audit entry comes after every accepted renewal's.
    let size = s.audit_size().await.unwrap();
    let entries = s.audit_entries(0, size).await.unwrap();
    let last = entries.last().unwrap();
    assert_eq!(last.entry.kind, "consent.revoke");
    check_audit_consistent(&*s).await;
}

async fn nonces_and_operators(s: Arc<dyn Store>) {
    assert!(s.use_nonce("k", "n1", 100, 10).await.unwrap());
    assert!(!s.use_nonce("k", "n1", 100, 20).await.unwrap(), "replay");
    assert!(s.use_nonce("other", "n1", 100, 20).await.unwrap());
    // Past its expiry the nonce is forgotten.
    assert!(s.use_nonce("k", "n1", 300, 100).await.unwrap());
    assert!(!s.use_nonce("k", "n1", 300, 150).await.unwrap());

    let op = OperatorRecord {
        name: "alice".into(),
        token_hash: "ab".repeat(32),
        created_at: 5,
    };
    assert_eq!(
        s.operator_by_token_hash(&op.token_hash).await.unwrap(),
        None
    );
    s.create_operator(&op, draft("operator.create", "alice"))
        .await
        .unwrap();
    assert_eq!(
        s.operator_by_token_hash(&op.token_hash).await.unwrap(),
        Some(op.clone())
    );
    let size = s.audit_size().await.unwrap();
    let dup = s
        .create_operator(&op, draft("operator.create", "alice"))
        .await;
    assert!(matches!(dup, Err(StoreError::Duplicate { .. })), "{dup:?}");
    assert_eq!(s.audit_size().await.unwrap(), size);
}

async fn audit_and_checkpoints(s: Arc<dyn Store>) {
    assert_eq!(s.audit_size().await.unwrap(), 0);
    assert!(s.append_audit(vec![]).await.unwrap().is_empty());
    let idx = s
        .append_audit(vec![draft("a", "x"), draft("b", "y"), draft("c", "z")])
        .await
        .unwrap();
    assert_eq!(idx, vec![0, 1, 2]);
    assert_eq!(
        s.append_audit(vec![draft("d", "w")]).await.unwrap(),
        vec![3]
    );
    let entries = s.audit_entries(1, 3).await.unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0].entry.kind, "b");
    assert_eq!(entries[1].entry.subject, "z");
    assert_eq!(s.audit_leaf_hashes(2).await.unwrap().len(), 2);
    check_audit_consistent(&*s).await;

    assert_eq!(s.latest_checkpoint().await.unwrap(), None);
    let hashes = s.audit_leaf_hashes(4).await.unwrap();
    let c2 = CheckpointRecord {
        size: 2,
        root: askee_core::merkle::root(&hashes[..2]),
        note: "note 2".into(),
        created_at_ms: 1,
    };
    let c4 = CheckpointRecord {
        size: 4,
        root: askee_core::merkle::root(&hashes),
        note: "note 4".into(),
        created_at_ms: 2,
    };
    s.save_checkpoint(&c4).await.unwrap();
    s.save_checkpoint(&c2).await.unwrap();
    let again = CheckpointRecord {
        note: "later".into(),
        created_at_ms: 3,
        ..c4.clone()
    };
    s.save_checkpoint(&again).await.unwrap();
    assert_eq!(s.latest_checkpoint().await.unwrap(), Some(c4.clone()));
    assert_eq!(s.checkpoints().await.unwrap(), vec![c2.clone(), c4.clone()]);
    let forked = CheckpointRecord {
        root: [7; 32],
        ..c4.clone()
    };
    assert!(matches!(
        s.save_checkpoint(&forked).await,
        Err(StoreError::Conflict { .. })
    ));
    assert_eq!(s.latest_checkpoint().await.unwrap(), Some(c4));
}

async fn concurrent_appends(stores: Vec<Arc<dyn Store>>) {
    let mut tasks = Vec::new();
    for i in 0..40 {
        let s = stores[i % stores.len()].clone();
        tasks.push(tokio::spawn(async move {
            s.append_audit(vec![draft("c", &format!("t{i}")), draft("c2", "x")])
                .await
                .unwrap()
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        let idx = t.await.unwrap();
        assert_eq!(idx[1], idx[0] + 1, "one call's entries are contiguous");
        all.extend(idx);
    }
    all.sort_unstable();
    assert_eq!(all, (0..80).collect::<Vec<u64>>());
    check_audit_consistent(&*stores[0]).await;
}

macro_rules! both {
    ($name:ident) => {
        mod $name {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                let (s, _dir) = super::sqlite().await;
                assert_eq!(s.backend(), Backend::Sqlite);
                super::$name(s).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                let (s, _url) = super::postgres().await;
                assert_eq!(s.backend(), Backend::Postgres);
                super::$name(s).await;
            }
        }
    };
}

both!(invitations_lifecycle);
both!(renewal_and_revocation);
both!(concurrent_renew_and_revoke);
both!(nonces_and_operators);
both!(audit_and_checkpoints);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_sqlite() {
    let (s, _dir) = sqlite().await;
    concurrent_appends(vec![s]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_postgres_two_pools() {
    let (s, url) = postgres().await;
    // A second pool on the same database stands for a second server process.
    let other = store::open(&url).await.expect("open second pool");
    concurrent_appends(vec![s, other]).await;
}

#[tokio::test]
async fn reopening_sqlite_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("a.db").display());
    let s = store::open(&url).await.unwrap();
    s.append_audit(vec![draft("a", "x")]).await.unwrap();
    drop(s);
    let s = store::open(&url).await.unwrap();
    assert_eq!(s.audit_size().await.unwrap(), 1);
    check_audit_consistent(&*s).await;
}

#[tokio::test]
async fn unknown_scheme_is_refused() {
    assert!(matches!(
        store::open("mysql://h/db").await,
        Err(StoreError::Url { .. })
    ));
}
