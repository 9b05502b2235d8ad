//! The conformance suite on SQLite: every case on a fresh database file.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use sqlx::Row;
use std::future::Future;
use std::sync::Arc;
use trueline_store::Migrations;
use trueline_store_conformance::{Fixture, RawSql, conformance_suite};
use trueline_store_sqlite::{SqliteOptions, SqliteStore};

struct Raw(sqlx::SqlitePool);

#[async_trait::async_trait]
impl RawSql for Raw {
    async fn execute(&self, sql: &str) -> Result<u64, String> {
        sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(&self.0)
            .await
            .map(|r| r.rows_affected())
            .map_err(|e| e.to_string())
    }

    async fn scalar(&self, sql: &str) -> i64 {
        let row = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
            .fetch_one(&self.0)
            .await
            .unwrap();
        row.try_get(0).unwrap()
    }
}

async fn sqlite_fixture() -> Fixture {
    sqlite_fixture_and_pool().await.0
}

/// The fixture, and the pool behind its raw SQL for queries that read typed rows.
async fn sqlite_fixture_and_pool() -> (Fixture, sqlx::SqlitePool) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("trueline.db").display());
    let store = SqliteStore::connect(&url, SqliteOptions::default())
        .await
        .unwrap();
    store.migrate_up().await.unwrap();
    let pool = store.bypass_pool().await.unwrap();
    let fixture = Fixture {
        store: Arc::new(store),
        raw: Arc::new(Raw(pool.clone())),
        guard: Box::new(dir),
    };
    (fixture, pool)
}

conformance_suite!(sqlite_fixture);

#[tokio::test]
async fn a_review_row_without_a_step_is_refused() {
    trueline_store_conformance::reviews::a_review_row_without_a_step_is_refused(
        &sqlite_fixture().await,
    )
    .await;
}

/// SQLite keeps resolved tokens in memory. A revocation whose request is dropped half-way
/// (a timeout, a client gone) may still commit on the connection's thread: the cache must
/// not go on answering with the token as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_dropped_half_way_never_leaves_the_token_cached_as_valid() {
    let f = sqlite_fixture().await;
    let mut stale = 0;
    for round in 0..40u64 {
        let signup =
            trueline_store_conformance::signup_of(&format!("u{round}@example.com"), "Acme");
        let hash = signup.token.hash;
        let id = signup.token.id;
        f.store.sign_up(signup).await.unwrap();
        // Resolved once: cached.
        assert!(f.store.token_by_hash(&hash).await.unwrap().is_some());
        // Polled a few times, with the connection's thread given 50 µs between polls, then
        // dropped: before, during or after its commit, depending on the round.
        {
            let mut revoke = std::pin::pin!(f.store.revoke_token(
                id,
                "req",
                trueline_store_conformance::now()
            ));
            for _ in 0..=round % 20 {
                let polled =
                    std::future::poll_fn(|cx| std::task::Poll::Ready(revoke.as_mut().poll(cx)))
                        .await;
                if polled.is_ready() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_micros(50 + 25 * (round / 20)));
            }
        }
        // What the database says, read around the store.
        let mut settled = false;
        for _ in 0..200 {
            let revoked_in_db = f
                .raw
                .scalar(&format!(
                    "SELECT count(*) FROM api_tokens WHERE id = x'{}' AND revoked_at IS NOT NULL",
                    id.0.simple()
                ))
                .await
                == 1;
            let resolved = f.store.token_by_hash(&hash).await.unwrap().unwrap();
            if resolved.revoked_at.is_some() == revoked_in_db {
                settled = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        if !settled {
            stale += 1;
        }
    }
    assert_eq!(
        stale, 0,
        "rounds where the cache kept answering with the old token"
    );
}

/// `REPLACE` deletes the row it conflicts with; with recursive triggers on, that delete meets
/// the same guards as any other: the last owner cannot be replaced by a viewer, an audit
/// record or a history record cannot be rewritten.
#[tokio::test]
async fn replace_goes_through_the_guards_on_deletes() {
    use trueline_store_conformance::fixtures::sign_up;
    let f = sqlite_fixture().await;
    sign_up(&f, "owner@example.com").await;
    for (what, sql) in [
        (
            "the last owner replaced by a viewer",
            "INSERT OR REPLACE INTO memberships (org_id, user_id, role, created_at, updated_at)
             SELECT org_id, user_id, 'viewer', created_at, updated_at FROM memberships",
        ),
        (
            "an audit record rewritten",
            "REPLACE INTO audit_log SELECT * FROM audit_log",
        ),
    ] {
        let result = f.raw.execute(sql).await;
        assert!(result.is_err(), "{what}: {result:?}");
    }
    assert_eq!(
        f.raw
            .scalar("SELECT count(*) FROM memberships WHERE role = 'owner'")
            .await,
        1
    );
}

/// The schema as SQLite keeps it: every table, index and trigger with its statement (sqlx's
/// bookkeeping aside, and `sqlite_sequence`, which SQLite makes for the first AUTOINCREMENT
/// table and never drops).
async fn schema_of(pool: &sqlx::SqlitePool) -> Vec<(String, String, String, Option<String>)> {
    sqlx::query_as(
        "SELECT type, name, tbl_name, sql FROM sqlite_master
         WHERE tbl_name NOT LIKE '\\_sqlx%' ESCAPE '\\' AND name <> 'sqlite_sequence'
         ORDER BY type, name",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

/// Every down migration leaves the schema exactly as its up migration found it: the store,
/// migrated down one version at a time, against a database made by running the up files one
/// at a time.
#[tokio::test]
async fn each_down_migration_restores_the_schema_its_up_migration_found() {
    let dir = tempfile::tempdir().unwrap();
    let reference_url = format!("sqlite://{}", dir.path().join("ups.db").display());
    let reference = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(
            reference_url
                .parse::<sqlx::sqlite::SqliteConnectOptions>()
                .unwrap()
                .create_if_missing(true),
        )
        .await
        .unwrap();
    let migrations = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    let ups = trueline_store_conformance::schema::up_migration_files(&migrations);
    // The schema after each version, from the up files alone.
    let mut expected = vec![(0, schema_of(&reference).await)];
    for (version, path) in &ups {
        let sql = std::fs::read_to_string(path).unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&reference)
            .await
            .unwrap();
        expected.push((*version, schema_of(&reference).await));
    }
    let url = format!("sqlite://{}", dir.path().join("trueline.db").display());
    let store = SqliteStore::connect(&url, SqliteOptions::default())
        .await
        .unwrap();
    store.migrate_up().await.unwrap();
    let pool = store.bypass_pool().await.unwrap();
    let (latest, schema) = expected.pop().unwrap();
    assert_eq!(schema_of(&pool).await, schema, "up to {latest}");
    let mut reverted = latest;
    while let Some((version, schema)) = expected.pop() {
        assert_eq!(store.migrate_down(1).await.unwrap(), [reverted]);
        assert_eq!(
            schema_of(&pool).await,
            schema,
            "down from {reverted} to {version}"
        );
        reverted = version;
    }
}

/// Migration 15 rebuilds `item_history` (a CHECK cannot change in place): both ways, every
/// record stays as it was, with its row id, and the table keeps its guards (records cannot be
/// changed or deleted, a kind must be one of the five, a version is recorded once).
#[tokio::test]
async fn migration_15_rebuilds_history_with_its_records_and_guards() {
    use trueline_core::inventory::Delta;
    use trueline_store_conformance::inventory::{create, owner_actor};
    let (f, pool) = sqlite_fixture_and_pool().await;
    let a = owner_actor(&f, "owner@example.com").await;
    let item = create(&f, &a, "Milk", 10).await;
    for delta in [-3, 5, -1] {
        f.store
            .adjust_qty(&a, item.id, Delta::new(delta).unwrap(), None)
            .await
            .unwrap();
    }
    let records = || async {
        sqlx::query_as::<_, (i64, Vec<u8>, i64, String, i64, i64)>(
            "SELECT rowid, id, version, kind, delta, qty_after FROM item_history ORDER BY rowid",
        )
        .fetch_all(&pool)
        .await
        .unwrap()
    };
    let before = records().await;
    assert_eq!(before.len(), 4);
    let guarded = |step: &'static str| {
        let f = &f;
        async move {
            for (what, sql) in [
                ("a record changed", "UPDATE item_history SET delta = 7"),
                ("a record deleted", "DELETE FROM item_history"),
                (
                    "an unknown kind",
                    "INSERT INTO item_history (id, org_id, item_id, version, kind, delta,
                         qty_after, name, actor_user_id, request_id, at)
                     SELECT randomblob(16), org_id, item_id, 99, 'forged', 1, 1, name,
                         actor_user_id, request_id, at FROM item_history LIMIT 1",
                ),
                (
                    "a version recorded twice",
                    "INSERT INTO item_history (id, org_id, item_id, version, kind, delta,
                         qty_after, name, actor_user_id, request_id, at)
                     SELECT randomblob(16), org_id, item_id, version, 'qty_changed', 1, 1,
                         name, actor_user_id, request_id, at FROM item_history LIMIT 1",
                ),
            ] {
                let refused = f.raw.execute(sql).await;
                assert!(refused.is_err(), "{step}: {what}: {refused:?}");
            }
        }
    };
    guarded("at 15").await;
    // Down past 15, one step at a time (the migrations above it go first), so that a later
    // migration does not change this test.
    let mut reverted = Vec::new();
    while reverted.last() != Some(&15) {
        let step = f.store.migrate_down(1).await.unwrap();
        assert_eq!(step.len(), 1, "{reverted:?}");
        reverted.extend(step);
    }
    assert!(reverted.iter().all(|v| *v >= 15), "{reverted:?}");
    assert_eq!(records().await, before, "down");
    guarded("down at 14").await;
    let reapplied = f.store.migrate_up().await.unwrap();
    assert_eq!(reapplied.first(), Some(&15));
    assert_eq!(reapplied.len(), reverted.len());
    assert_eq!(records().await, before, "up again");
    guarded("up again at 15").await;
    assert_eq!(records().await, before, "the refusals changed nothing");
}

/// A run of combined batches keeps the writer connection from one batch to the next, but not
/// from another writer: a write that waits gets the connection after the current batch, while
/// batches keep coming (here they stop only once that write is done).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_of_combined_batches_lets_a_waiting_writer_in() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use trueline_store_conformance::inventory::{create, job, new_item, owner_actor};
    let f = sqlite_fixture().await;
    let a = owner_actor(&f, "ann@example.com").await;
    let x = create(&f, &a, "X", 0).await;
    let written = Arc::new(AtomicBool::new(false));

    struct Endless {
        jobs: trueline_store::DeltaJob,
        until: Arc<AtomicBool>,
        ran: usize,
    }
    impl trueline_store::DeltaBatches for Endless {
        fn next_ready(&mut self) -> Option<Vec<trueline_store::DeltaJob>> {
            // Bounded, so that a writer kept out fails the test instead of hanging it.
            (!self.until.load(Ordering::SeqCst) && self.ran < 20_000)
                .then(|| vec![self.jobs.clone()])
        }
        fn done(
            &mut self,
            outcome: Result<Vec<trueline_store::DeltaOutcome>, trueline_store::StoreError>,
        ) {
            outcome.unwrap();
            self.ran += 1;
        }
    }
    let mut batches = Endless {
        jobs: job(&a, x.id, 1, None),
        until: written.clone(),
        ran: 0,
    };
    let store = f.store.clone();
    let (other, stop) = (a.clone(), written.clone());
    let writer = tokio::spawn(async move {
        // Once the run is under way.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let created = store.create_item(&other, new_item("Y", 0), None).await;
        stop.store(true, Ordering::SeqCst);
        created
    });
    f.store.apply_delta_batches(&mut batches).await;
    writer
        .await
        .unwrap()
        .expect("the waiting write got the connection");
    assert!(
        batches.ran < 20_000,
        "the run stopped because the write was done"
    );
    let item = f.store.item(a.org_id, x.id).await.unwrap().unwrap();
    assert_eq!(item.qty as usize, batches.ran);
}
