//! The relay's view of the PostgreSQL outbox: an organization's rows in commit order.

use sqlx::{PgPool, Postgres, Transaction};
use std::time::Duration;
use time::OffsetDateTime;
use trueline_store::{DeliveryStore, Destination};
use trueline_store_postgres::PgStore;
use uuid::Uuid;

/// Gives the transaction its id now (PostgreSQL assigns one at the first write).
async fn take_xid(tx: &mut Transaction<'static, Postgres>) {
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut **tx)
        .await
        .unwrap();
}

async fn insert_row(tx: &mut Transaction<'static, Postgres>, org: Uuid, stream: &str, n: i64) {
    sqlx::query(
        "INSERT INTO outbox (event_id, org_id, event_type, stream, payload, created_at)
         VALUES ($1, $2, 't', $3, jsonb_build_object('n', $4::bigint), now())",
    )
    .bind(Uuid::new_v4())
    .bind(org)
    .bind(stream)
    .bind(n)
    .execute(&mut **tx)
    .await
    .unwrap();
}

/// Leases and marks published whatever the relay may publish now, in the order it gets it.
async fn relay_round(store: &PgStore) -> Vec<(String, i64)> {
    let now = OffsetDateTime::now_utc();
    let rows = store
        .lease_outbox(
            Destination::EventLog,
            "test",
            now,
            now + time::Duration::seconds(30),
            10,
            1000,
            &[],
        )
        .await
        .unwrap();
    let seqs: Vec<i64> = rows.iter().map(|r| r.seq).collect();
    store
        .complete_outbox(Destination::EventLog, &seqs, &[], now)
        .await
        .unwrap();
    rows.into_iter()
        .map(|r| {
            let payload: serde_json::Value = serde_json::from_str(r.payload.get()).unwrap();
            (r.stream, payload["n"].as_i64().unwrap())
        })
        .collect()
}

/// Transaction ids follow a transaction's first write: here the one that commits second has
/// the oldest id, and a third one, still running, has an id between theirs. The guard by
/// transaction id this replaced published only the second commit (the first one's id was
/// not older than every running transaction's) and the first one a round later.
#[tokio::test]
#[ignore = "needs PostgreSQL: set TRUELINE_TEST_POSTGRES_URL and run with --ignored"]
async fn rows_are_published_in_commit_order_whatever_the_transaction_ids() {
    let (_database, store) = crate::migrated_store().await;
    let pool: &PgPool = store.pool();
    let org = Uuid::new_v4();
    let mut commits_second = pool.begin().await.unwrap();
    take_xid(&mut commits_second).await;
    let mut running = pool.begin().await.unwrap();
    take_xid(&mut running).await;
    let mut commits_first = pool.begin().await.unwrap();
    take_xid(&mut commits_first).await;

    insert_row(&mut commits_first, org, "a", 1).await;
    commits_first.commit().await.unwrap();
    insert_row(&mut commits_second, org, "a", 2).await;
    commits_second.commit().await.unwrap();

    assert_eq!(
        relay_round(&store).await,
        vec![("a".to_owned(), 1), ("a".to_owned(), 2)]
    );
    running.rollback().await.unwrap();
}

/// Many writers of one organization, each taking its transaction id early (a write before
/// the contended row, as a request's idempotency claim does) and then changing one counter
/// row and writing two outbox rows; a relay runs all along. The counter's row lock orders the
/// commits, so the published values must be exactly 1, 2, 3, … in that order.
#[tokio::test]
#[ignore = "needs PostgreSQL: set TRUELINE_TEST_POSTGRES_URL and run with --ignored"]
async fn a_relay_running_beside_many_writers_publishes_their_rows_in_commit_order() {
    const WRITERS: i64 = 16;
    const EACH: i64 = 25;
    let (_database, store) = crate::migrated_store().await;
    let pool = store.pool().clone();
    sqlx::query("CREATE TABLE scratch (n bigint)")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("CREATE TABLE counter (n bigint NOT NULL)")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO counter VALUES (0)")
        .execute(&pool)
        .await
        .unwrap();
    let org = Uuid::new_v4();

    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let pool = pool.clone();
        writers.push(tokio::spawn(async move {
            for i in 0..EACH {
                let mut tx = pool.begin().await.unwrap();
                sqlx::query("INSERT INTO scratch VALUES ($1)")
                    .bind(w)
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                // Spread the moments the ids are taken against the moments of the lock.
                tokio::time::sleep(Duration::from_micros(((w * 7 + i * 13) % 5 * 300) as u64))
                    .await;
                let n: i64 = sqlx::query_scalar("UPDATE counter SET n = n + 1 RETURNING n")
                    .fetch_one(&mut *tx)
                    .await
                    .unwrap();
                // Two rows per transaction: numbered together at commit, in insert order.
                insert_row(&mut tx, org, &format!("s{}", n % 3), 2 * n - 1).await;
                insert_row(&mut tx, org, &format!("s{}", n % 5), 2 * n).await;
                tx.commit().await.unwrap();
            }
        }));
    }
    let total = 2 * WRITERS * EACH;
    let mut published = Vec::new();
    while (published.len() as i64) < total {
        let round = relay_round(&store).await;
        if round.is_empty() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        published.extend(round.into_iter().map(|(_, n)| n));
    }
    for writer in writers {
        writer.await.unwrap();
    }
    assert_eq!(published, (1..=total).collect::<Vec<_>>());
    let unnumbered: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE ord IS NULL")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        unnumbered, 0,
        "every committed row has its commit-order number"
    );
}
