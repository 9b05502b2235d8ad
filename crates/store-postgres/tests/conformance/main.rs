//! The conformance suite on PostgreSQL: every case in its own throwaway database.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod outbox_order;

use sqlx::Row;
use std::sync::Arc;
use trueline_store::Migrations;
use trueline_store_conformance::{Fixture, RawSql, conformance_suite};
use trueline_store_postgres::testing::TestDatabase;
use trueline_store_postgres::{PgOptions, PgStore};

struct Raw(sqlx::PgPool);

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
        // count(*) is bigint; plain integer columns are int4.
        row.try_get::<i64, _>(0)
            .or_else(|_| row.try_get::<i32, _>(0).map(i64::from))
            .unwrap()
    }
}

async fn postgres_fixture() -> Fixture {
    let database = TestDatabase::create().await;
    let store = PgStore::connect(&database.url, PgOptions::default())
        .await
        .unwrap();
    store.migrate_up().await.unwrap();
    let raw = Raw(store.pool().clone());
    Fixture {
        store: Arc::new(store),
        raw: Arc::new(raw),
        guard: Box::new(database),
    }
}

conformance_suite!(
    postgres_fixture,
    #[ignore = "needs PostgreSQL: set TRUELINE_TEST_POSTGRES_URL and run with --ignored"]
);

#[tokio::test]
#[ignore = "needs PostgreSQL: set TRUELINE_TEST_POSTGRES_URL and run with --ignored"]
async fn a_review_row_an_earlier_version_writes_without_a_step_is_numbered_next() {
    trueline_store_conformance::reviews::a_review_row_an_earlier_version_writes_without_a_step_is_numbered_next(
        &postgres_fixture().await,
    )
    .await;
}

mod event_store {
    use std::sync::Arc;
    use trueline_store::Migrations;
    use trueline_store_conformance::event_store_suite;
    use trueline_store_conformance::events::EventsFixture;
    use trueline_store_postgres::testing::TestDatabase;
    use trueline_store_postgres::{PgOptions, PgStore};

    async fn postgres_events() -> EventsFixture {
        let database = TestDatabase::create().await;
        let store = PgStore::connect(&database.url, PgOptions::default())
            .await
            .unwrap();
        store.migrate_up().await.unwrap();
        let events = store.event_store(trueline_store::events::EVENT_BYTES_MAX_DEFAULT);
        EventsFixture {
            events: Arc::new(events),
            guard: Box::new((database, store)),
        }
    }

    event_store_suite!(
        postgres_events,
        #[ignore = "needs PostgreSQL: set TRUELINE_TEST_POSTGRES_URL and run with --ignored"]
    );
}

/// A throwaway database with every migration applied (dropped with the first value).
async fn migrated_store() -> (TestDatabase, PgStore) {
    let database = TestDatabase::create().await;
    let store = PgStore::connect(&database.url, PgOptions::default())
        .await
        .unwrap();
    store.migrate_up().await.unwrap();
    (database, store)
}

/// Instances starting together on a fresh database migrate it once, one after another:
/// every start succeeds and exactly one reports the migrations as applied by it.
#[tokio::test]
#[ignore = "needs PostgreSQL: set TRUELINE_TEST_POSTGRES_URL and run with --ignored"]
async fn instances_starting_together_migrate_a_fresh_database_once() {
    let database = TestDatabase::create().await;
    let mut starts = Vec::new();
    for _ in 0..6 {
        let url = database.url.clone();
        starts.push(tokio::spawn(async move {
            let store = PgStore::connect(&url, PgOptions::default()).await.unwrap();
            let applied = store.migrate_up().await;
            store.pool().close().await;
            applied
        }));
    }
    let mut reporting = 0;
    for start in starts {
        let applied = start.await.unwrap().expect("every start succeeds");
        if !applied.is_empty() {
            reporting += 1;
        }
    }
    assert_eq!(reporting, 1, "exactly one instance applied the migrations");
}

/// The conformance suite's databases use this machine's default collation (often already
/// byte order), so it cannot tell a locale-ordered column apart: this checks the column.
#[tokio::test]
#[ignore = "needs PostgreSQL: set TRUELINE_TEST_POSTGRES_URL and run with --ignored"]
async fn item_names_sort_by_bytes_whatever_the_database_collation() {
    let (_database, store) = migrated_store().await;
    let collation: String = sqlx::query_scalar(
        "SELECT collation_name::text FROM information_schema.columns
         WHERE table_name = 'items' AND column_name = 'name_key'",
    )
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert_eq!(collation, "C");
}

/// A combined delta naming another organization's item neither reads nor locks that row:
/// with the owner holding the row locked, the foreign request answers `NotFound` at once
/// instead of waiting for the owner (which also told the sender the id exists).
#[tokio::test]
#[ignore = "needs PostgreSQL: set TRUELINE_TEST_POSTGRES_URL and run with --ignored"]
async fn a_combined_delta_on_another_organizations_item_does_not_lock_it() {
    use trueline_core::accounts::Role;
    use trueline_store::{AccountStore, DeltaJob, DeltaOutcome, ItemStore};
    use trueline_store_conformance::fixtures::{actor, signup_of};
    use trueline_store_conformance::inventory::{delta, new_item};
    let (_database, store) = migrated_store().await;
    let a = store
        .sign_up(signup_of("a@example.com", "A"))
        .await
        .unwrap();
    let b = store
        .sign_up(signup_of("b@example.com", "B"))
        .await
        .unwrap();
    let owner = actor(a.organization.id, a.user.id, Role::Owner);
    let stranger = actor(b.organization.id, b.user.id, Role::Owner);
    let item = store
        .create_item(&owner, new_item("Milk", 5), None)
        .await
        .unwrap();
    let mut holder = store.pool().begin().await.unwrap();
    sqlx::query("SELECT 1 FROM items WHERE id = $1 FOR UPDATE")
        .bind(item.id.0)
        .execute(&mut *holder)
        .await
        .unwrap();
    let job = DeltaJob {
        actor: stranger,
        item_id: item.id,
        delta: delta(1),
        idempotency: None,
    };
    let outcomes = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        store.apply_deltas(&[job]),
    )
    .await
    .expect("the foreign request does not wait for the owner's lock")
    .unwrap();
    assert!(
        matches!(
            outcomes[0],
            DeltaOutcome::Refused(trueline_core::DomainError::NotFound(_))
        ),
        "{outcomes:?}"
    );
    holder.rollback().await.unwrap();
    let stored = store.item(owner.org_id, item.id).await.unwrap().unwrap();
    assert_eq!((stored.qty, stored.version), (5, 1), "nothing changed");
}

/// A full disk refuses an append as the file engine does (`StorageFull`, HTTP 507), with
/// nothing written; simulated by a trigger raising PostgreSQL's `disk_full` (53100).
#[tokio::test]
#[ignore = "needs PostgreSQL: set TRUELINE_TEST_POSTGRES_URL and run with --ignored"]
async fn a_full_disk_refuses_an_append_as_storage_full() {
    use trueline_store::events::{
        AppendRefusal, EventStore, EventStoreError, ExpectedVersion, NewEvent,
    };
    let (_database, store) = migrated_store().await;
    for sql in [
        "CREATE FUNCTION full_disk() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN RAISE EXCEPTION 'could not extend file' USING ERRCODE = 'disk_full'; END $$",
        "CREATE TRIGGER full_disk BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION full_disk()",
    ] {
        sqlx::query(sql).execute(store.pool()).await.unwrap();
    }
    let events = store.event_store(trueline_store::events::EVENT_BYTES_MAX_DEFAULT);
    let org = trueline_core::ids::OrgId::new();
    let event = NewEvent {
        id: trueline_core::ids::EventId::new(),
        event_type: "t.x".into(),
        data: b"1".to_vec(),
        metadata: b"{}".to_vec(),
    };
    let refused = events
        .append(
            org,
            "s",
            ExpectedVersion::Any,
            vec![event],
            time::OffsetDateTime::now_utc(),
        )
        .await;
    assert!(
        matches!(
            refused,
            Err(EventStoreError::Refused(AppendRefusal::StorageFull))
        ),
        "{refused:?}"
    );
    assert_eq!(
        events.stats(org).await.unwrap().events,
        0,
        "nothing written"
    );
}

/// Migration 11 recounts the organizations' event bytes as the embedded engine stores them;
/// its down migration goes back to metadata + data.
#[tokio::test]
#[ignore = "needs PostgreSQL: set TRUELINE_TEST_POSTGRES_URL and run with --ignored"]
async fn migration_11_recounts_event_bytes_both_ways() {
    use trueline_store::events::{EventStore, ExpectedVersion, NewEvent};
    let (_database, store) = migrated_store().await;
    let events = store.event_store(trueline_store::events::EVENT_BYTES_MAX_DEFAULT);
    let org = trueline_core::ids::OrgId::new();
    let event = |data: &str| NewEvent {
        id: trueline_core::ids::EventId::new(),
        event_type: "t.x".into(),
        data: data.as_bytes().to_vec(),
        metadata: b"{}".to_vec(),
    };
    let now = time::OffsetDateTime::now_utc();
    events
        .append(
            org,
            "s1",
            ExpectedVersion::Any,
            vec![event("1"), event("[2]")],
            now,
        )
        .await
        .unwrap();
    let stored = (92 + 2 + 3 + 2 + 1) + (92 + 2 + 3 + 2 + 3);
    assert_eq!(events.stats(org).await.unwrap().bytes, stored);
    // Back to before 11 (every later migration goes first).
    let mut newer: Vec<i64> = store
        .migration_status()
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.version)
        .filter(|&v| v >= 11)
        .collect();
    newer.reverse();
    assert_eq!(store.migrate_down(newer.len() as u32).await.unwrap(), newer);
    assert_eq!(events.stats(org).await.unwrap().bytes, (2 + 1) + (2 + 3));
    store.migrate_up().await.unwrap();
    assert_eq!(events.stats(org).await.unwrap().bytes, stored);
}

/// A membership change locks the organization row `FOR NO KEY UPDATE`: an open transaction
/// that references the organization (a foreign-key check takes `FOR KEY SHARE`: a login's
/// token or audit row) does not hold it up. With `FOR UPDATE` the removal waited here, and a
/// login of the member being removed deadlocked with it.
#[tokio::test]
#[ignore = "needs PostgreSQL: set TRUELINE_TEST_POSTGRES_URL and run with --ignored"]
async fn membership_changes_do_not_wait_for_foreign_key_checks_on_the_organization() {
    use trueline_core::accounts::{Email, Role};
    use trueline_store::AccountStore;
    use trueline_store_conformance::fixtures::{actor, signup_of};
    let (_database, store) = migrated_store().await;
    let owner = store
        .sign_up(signup_of("owner@example.com", "A"))
        .await
        .unwrap();
    let member = store
        .sign_up(signup_of("member@example.com", "B"))
        .await
        .unwrap();
    let org = owner.organization.id;
    let act = actor(org, owner.user.id, Role::Owner);
    let email = Email::parse("member@example.com").unwrap();
    store
        .add_member(&act, &email, Role::Member, None)
        .await
        .unwrap();
    let pool = store.pool().clone();
    let mut referencing = pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM organizations WHERE id = $1 FOR KEY SHARE")
        .bind(org.0)
        .execute(&mut *referencing)
        .await
        .unwrap();
    let removed = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        store.remove_member(&act, member.user.id),
    )
    .await
    .expect("the removal does not wait for the open transaction");
    assert!(removed.unwrap());
    referencing.rollback().await.unwrap();
}

/// A webhook deleted while the relay completes a round: the delivery's check of the webhook
/// waits for the delete and then sees it gone (`FOR KEY SHARE`), so the round completes
/// without that delivery. Under the statement's own snapshot it saw the row, the foreign key
/// then failed, and the whole round (every organization's rows) was an error.
#[tokio::test]
#[ignore = "needs PostgreSQL: set TRUELINE_TEST_POSTGRES_URL and run with --ignored"]
async fn a_webhook_deleted_during_a_relay_round_is_skipped() {
    use trueline_core::accounts::Role;
    use trueline_store::{AccountStore, DeliveryStore, Destination, NewDelivery, NewWebhook};
    use trueline_store_conformance::fixtures::{actor, signup_of};
    use uuid::Uuid;
    let (_database, store) = migrated_store().await;
    let a = store
        .sign_up(signup_of("a@example.com", "A"))
        .await
        .unwrap();
    let owner = actor(a.organization.id, a.user.id, Role::Owner);
    let hook = store
        .create_webhook(
            &owner,
            NewWebhook {
                id: Uuid::now_v7(),
                url: "https://example.com/hook".into(),
                event_types: vec![],
                secret: "s".repeat(40),
            },
            None,
        )
        .await
        .unwrap();
    let now = time::OffsetDateTime::now_utc();
    let rows = store
        .lease_outbox(
            Destination::EventLog,
            "test",
            now,
            now + time::Duration::seconds(30),
            10,
            100,
            &[],
        )
        .await
        .unwrap();
    assert!(!rows.is_empty(), "the sign-up's events");
    let mut deleting = store.pool().begin().await.unwrap();
    sqlx::query("DELETE FROM webhooks WHERE id = $1")
        .bind(hook.id)
        .execute(&mut *deleting)
        .await
        .unwrap();
    let seqs: Vec<i64> = rows.iter().map(|r| r.seq).collect();
    let delivery = NewDelivery {
        id: Uuid::now_v7(),
        webhook_id: hook.id,
        org_id: owner.org_id,
        event_id: rows[0].event_id,
        event_type: rows[0].event_type.clone(),
        payload: serde_json::json!({}),
    };
    let relay = {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .complete_outbox(Destination::EventLog, &seqs, &[delivery], now)
                .await
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    deleting.commit().await.unwrap();
    let completed = relay.await.unwrap().expect("the round completes");
    assert_eq!(completed, rows.len() as u64);
    let deliveries: i64 = sqlx::query_scalar("SELECT count(*) FROM webhook_deliveries")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(deliveries, 0, "no delivery for the deleted webhook");
}

/// A password change revokes tokens in several organizations, so its transaction writes
/// outbox rows of each, and their commit locks (migration 9's deferred trigger, one per
/// organization, in the order rows were inserted) must come in the same global order as a
/// combined batch's. Here another transaction holds the lock the change needs first and
/// then asks for the other one: in the shared order the change holds nothing yet and waits;
/// in another order it would hold that other lock and the two would deadlock.
#[tokio::test]
#[ignore = "needs PostgreSQL: set TRUELINE_TEST_POSTGRES_URL and run with --ignored"]
async fn a_password_change_takes_the_outbox_locks_in_the_shared_order() {
    use trueline_core::accounts::{Email, Role};
    use trueline_store::{AccountStore, PasswordChange};
    use trueline_store_conformance::fixtures::{
        FAKE_PASSWORD_HASH, actor, new_token, now, signup_of,
    };
    use uuid::Uuid;
    let (_database, store) = migrated_store().await;
    let pool = store.pool().clone();
    let lock_key = |org: Uuid| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT hashtextextended('trueline.outbox ' || $1::text, 0)",
            )
            .bind(org)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    // Two organizations whose lock order puts the change's own organization first: the
    // change used to write the other organizations' revocations first and its own record last.
    let (ann, keep, a, b) = loop {
        let ann_signup = signup_of(&format!("ann-{}@example.com", Uuid::new_v4()), "A");
        let keep = ann_signup.token.id;
        let ann = store.sign_up(ann_signup).await.unwrap();
        let bob = store
            .sign_up(signup_of(
                &format!("bob-{}@example.com", Uuid::new_v4()),
                "B",
            ))
            .await
            .unwrap();
        let (a, b) = (ann.organization.id.0, bob.organization.id.0);
        let (first, second) = if lock_key(a).await < lock_key(b).await {
            (a, b)
        } else {
            (b, a)
        };
        if first == a {
            let owner_b = actor(bob.organization.id, bob.user.id, Role::Owner);
            store
                .add_member(
                    &owner_b,
                    &Email::parse(&ann.user.email).unwrap(),
                    Role::Member,
                    None,
                )
                .await
                .unwrap();
            store
                .create_token(
                    new_token(ann.user.id, bob.organization.id, now()),
                    None,
                    "req",
                )
                .await
                .unwrap();
            break (ann, keep, first, second);
        }
    };
    let mut other = pool.begin().await.unwrap();
    sqlx::query(
        "SELECT pg_advisory_xact_lock(hashtextextended('trueline.outbox ' || $1::text, 0))",
    )
    .bind(a)
    .execute(&mut *other)
    .await
    .unwrap();
    let change = {
        let store = store.clone();
        let change = PasswordChange {
            user_id: ann.user.id,
            org_id: ann.organization.id,
            keep,
            checked_hash: FAKE_PASSWORD_HASH.to_owned(),
            new_hash: FAKE_PASSWORD_HASH.replace("c2FsdHNhbHQ", "bmV3c2FsdA"),
            request_id: "req-change".into(),
            now: now(),
        };
        tokio::spawn(async move { store.change_password(change).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    sqlx::query("SET LOCAL lock_timeout = '3s'")
        .execute(&mut *other)
        .await
        .unwrap();
    sqlx::query(
        "SELECT pg_advisory_xact_lock(hashtextextended('trueline.outbox ' || $1::text, 0))",
    )
    .bind(b)
    .execute(&mut *other)
    .await
    .expect("the change does not hold the second lock while it waits for the first");
    other.commit().await.unwrap();
    let revoked = change.await.unwrap().expect("the change commits");
    assert_eq!(revoked, 1, "the token in the other organization");
}

/// A member's removal cascades to their tokens; it locks them in id order first, as a
/// password change and revocations do (two orders could deadlock). Here the tokens' heap
/// and index order is the reverse of their ids (the lower one was updated, so its live
/// version comes last), and another transaction holds the higher one: the removal must hold the lower one
/// while it waits. The cascade alone went in heap order and waited holding nothing.
#[tokio::test]
#[ignore = "needs PostgreSQL: set TRUELINE_TEST_POSTGRES_URL and run with --ignored"]
async fn a_member_removal_locks_the_members_tokens_in_id_order() {
    use trueline_core::accounts::{Email, Role};
    use trueline_store::AccountStore;
    use trueline_store_conformance::fixtures::{actor, new_token, now, signup_of};
    let (_database, store) = migrated_store().await;
    let pool = store.pool().clone();
    let ann = store
        .sign_up(signup_of("ann@example.com", "A"))
        .await
        .unwrap();
    let bob = store
        .sign_up(signup_of("bob@example.com", "B"))
        .await
        .unwrap();
    let owner = actor(ann.organization.id, ann.user.id, Role::Owner);
    store
        .add_member(
            &owner,
            &Email::parse(&bob.user.email).unwrap(),
            Role::Member,
            None,
        )
        .await
        .unwrap();
    let mut ids = Vec::new();
    for _ in 0..2 {
        let token = new_token(bob.user.id, ann.organization.id, now());
        ids.push(token.id.0);
        store.create_token(token, None, "req").await.unwrap();
    }
    ids.sort();
    let (low, high) = (ids[0], ids[1]);
    // An indexed column, so not a HOT update: the index entries move with the row too.
    sqlx::query("UPDATE api_tokens SET token_hash = sha256(token_hash) WHERE id = $1")
        .bind(low)
        .execute(&pool)
        .await
        .unwrap();
    let heap_order: Vec<uuid::Uuid> = sqlx::query_scalar(
        "SELECT id FROM api_tokens WHERE org_id = $1 AND user_id = $2 ORDER BY ctid",
    )
    .bind(ann.organization.id.0)
    .bind(bob.user.id.0)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        heap_order,
        vec![high, low],
        "the set-up reverses the heap order"
    );
    let mut other = pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM api_tokens WHERE id = $1 FOR UPDATE")
        .bind(high)
        .execute(&mut *other)
        .await
        .unwrap();
    let removal = {
        let store = store.clone();
        let bob_id = bob.user.id;
        tokio::spawn(async move { store.remove_member(&owner, bob_id).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let probe = sqlx::query("SELECT 1 FROM api_tokens WHERE id = $1 FOR UPDATE NOWAIT")
        .bind(low)
        .execute(&pool)
        .await;
    other.commit().await.unwrap();
    let lock_not_available = match &probe {
        Err(sqlx::Error::Database(e)) => e.code().as_deref() == Some("55P03"),
        _ => false,
    };
    assert!(
        lock_not_available,
        "the removal holds the lower id while it waits for the higher: {probe:?}"
    );
    assert!(removal.await.unwrap().expect("the removal commits"));
    let left: i64 =
        sqlx::query_scalar("SELECT count(*) FROM api_tokens WHERE user_id = $1 AND org_id = $2")
            .bind(bob.user.id.0)
            .bind(ann.organization.id.0)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(left, 0);
}

/// The schema as PostgreSQL's catalog describes it (sqlx's bookkeeping aside): relations,
/// columns, constraints, indexes, triggers (and whether they are enabled), functions.
/// Columns are compared by name, not position: PostgreSQL adds a column back at the end of
/// its table (migration 9's down does, for `outbox.xid`), and no query reads columns by
/// position.
async fn schema_of(pool: &sqlx::PgPool) -> Vec<String> {
    let mut schema = Vec::new();
    for sql in [
        "SELECT concat_ws(' | ', relname, relkind) FROM pg_class
         WHERE relnamespace = 'public'::regnamespace AND relname NOT LIKE '\\_sqlx%'",
        "SELECT concat_ws(' | ', table_name, column_name, data_type,
                          is_nullable, column_default, collation_name)
         FROM information_schema.columns
         WHERE table_schema = 'public' AND table_name NOT LIKE '\\_sqlx%'",
        "SELECT concat_ws(' | ', conrelid::regclass, conname, pg_get_constraintdef(oid))
         FROM pg_constraint
         WHERE connamespace = 'public'::regnamespace AND conrelid::regclass::text NOT LIKE '\\_sqlx%'",
        "SELECT concat_ws(' | ', tablename, indexname, indexdef) FROM pg_indexes
         WHERE schemaname = 'public' AND tablename NOT LIKE '\\_sqlx%'",
        "SELECT concat_ws(' | ', tgrelid::regclass, tgname, tgenabled, pg_get_triggerdef(oid))
         FROM pg_trigger WHERE NOT tgisinternal",
        "SELECT concat_ws(' | ', proname, pg_get_functiondef(oid)) FROM pg_proc
         WHERE pronamespace = 'public'::regnamespace AND prokind = 'f'",
    ] {
        let mut rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_all(pool)
            .await
            .unwrap();
        rows.sort();
        schema.extend(rows);
    }
    schema
}

/// Every down migration leaves the schema exactly as its up migration found it: the store,
/// migrated down one version at a time, against a database made by running the up files one
/// at a time.
#[tokio::test]
#[ignore = "needs PostgreSQL: set TRUELINE_TEST_POSTGRES_URL and run with --ignored"]
async fn each_down_migration_restores_the_schema_its_up_migration_found() {
    let reference_database = TestDatabase::create().await;
    let reference = sqlx::PgPool::connect(&reference_database.url)
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
    reference.close().await;
    let (_database, store) = migrated_store().await;
    let same = |migrated: Vec<String>, made: Vec<String>, what: String| {
        let only_migrated: Vec<_> = migrated.iter().filter(|l| !made.contains(l)).collect();
        let only_made: Vec<_> = made.iter().filter(|l| !migrated.contains(l)).collect();
        assert!(
            migrated == made,
            "{what}: only in the store's schema {only_migrated:#?}, only in the up files' {only_made:#?}"
        );
    };
    let (latest, schema) = expected.pop().unwrap();
    same(
        schema_of(store.pool()).await,
        schema,
        format!("up to {latest}"),
    );
    let mut reverted = latest;
    while let Some((version, schema)) = expected.pop() {
        assert_eq!(store.migrate_down(1).await.unwrap(), [reverted]);
        same(
            schema_of(store.pool()).await,
            schema,
            format!("down from {reverted} to {version}"),
        );
        reverted = version;
    }
}
