//! Delivery guarantees: outbox → event log (exactly once, in order), relay takeover, two
//! relaying instances, NATS dedup, webhooks (signed, retried, dead-lettered, redelivered).

use crate::both_backends;
use crate::helpers::*;
use axum::Router;
use axum::routing::post;
use reqwest::Method;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use trueline::delivery::relay::{self, RelaySettings};
use trueline_core::clock::Clock;
use trueline_core::ids::OrgId;
use trueline_store::Destination;

both_backends!(
    every_committed_change_reaches_the_event_log_once_and_in_order,
    a_relay_that_died_mid_batch_is_taken_over_without_duplicates,
    a_run_partly_in_the_log_behind_an_unpublished_first_row_does_not_jam_the_relay,
    a_mixed_run_takes_the_rows_after_it_by_place_not_by_seq,
    published_outbox_rows_are_deleted_after_the_retention_and_their_events_stay,
    a_change_and_its_outbox_row_exist_together_or_not_at_all,
    webhooks_are_signed_retried_dead_lettered_and_redelivered,
    private_webhook_targets_are_refused_by_default,
);

/// Performs one mutation of every inventory and account kind; returns the org id.
async fn mutations(app: &TestApp) -> Account {
    let ann = app
        .sign_up(&format!("ann{}@example.com", uuid::Uuid::now_v7().simple()))
        .await;
    let item = app.create_item(&ann.token, "Milk", 5).await;
    let id = item["id"].as_str().unwrap();
    app.patch_qty(&ann.token, id, &json!({"delta": -2}), None)
        .await;
    app.request(
        Method::PATCH,
        &format!("/api/v1/items/{id}"),
        Some(&ann.token),
    )
    .header("if-match", "*")
    .json(&json!({"name": "Oat milk"}))
    .send()
    .await
    .unwrap();
    let eggs = app.create_item(&ann.token, "Eggs", 1).await;
    let body =
        json!({"adjustments": [{"item_id": id, "delta": 1}, {"item_id": eggs["id"], "delta": 2}]});
    app.post("/api/v1/inventory/adjustments", &ann.token, &body)
        .await;
    app.request(
        Method::DELETE,
        &format!("/api/v1/items/{}", eggs["id"].as_str().unwrap()),
        Some(&ann.token),
    )
    .send()
    .await
    .unwrap();
    ann
}

fn org_literal(app: &TestApp, org: &str) -> String {
    if app.is_postgres() {
        format!("'{org}'")
    } else {
        format!("X'{}'", org.replace('-', ""))
    }
}

async fn outbox_count(app: &TestApp, org: &str) -> i64 {
    let org_literal = org_literal(app, org);
    app.scalar(&format!(
        "SELECT count(*) FROM outbox WHERE org_id = {org_literal}"
    ))
    .await
}

/// The (event id, type) of an organization's outbox rows in sequence order, as text.
/// The eight outbox rows of `mutations`, leased (for 30 s) by `holder` as a relay would.
async fn leased_by(
    app: &TestApp,
    holder: &str,
    account: &Account,
) -> (OrgId, Vec<trueline_store::OutboxRow>) {
    let now = app.clock.now();
    let mut rows = Vec::new();
    for _ in 0..500 {
        rows = app
            .state
            .store
            .lease_outbox(
                Destination::EventLog,
                holder,
                now,
                now + time::Duration::seconds(30),
                10,
                100,
                &[],
            )
            .await
            .unwrap();
        if rows.len() >= 8 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let org = OrgId(uuid::Uuid::parse_str(&account.org_id).unwrap());
    (org, rows.into_iter().filter(|r| r.org_id == org).collect())
}

async fn outbox_of(app: &TestApp, org: &str) -> Vec<String> {
    let org_literal = org_literal(app, org);
    let count = outbox_count(app, org).await;
    let mut out = Vec::new();
    for i in 0..count {
        let id_expr = if app.is_postgres() {
            "event_id::text"
        } else {
            "lower(hex(event_id))"
        };
        let sql = format!(
            "SELECT {id_expr} FROM outbox WHERE org_id = {org_literal} ORDER BY seq LIMIT 1 OFFSET {i}"
        );
        out.push(app.text(&sql).await.replace('-', ""));
    }
    out
}

async fn log_of(app: &TestApp, token: &str) -> Vec<String> {
    app.first_events(token)
        .await
        .iter()
        .map(|e| e["id"].as_str().unwrap().replace('-', ""))
        .collect()
}

async fn drained(app: &TestApp) -> bool {
    app.state
        .store
        .outbox_stats(Destination::EventLog)
        .await
        .map(|s| s.pending == 0)
        .unwrap_or(false)
}

async fn every_committed_change_reaches_the_event_log_once_and_in_order(backend: Backend) {
    let app = spawn_app(backend).await;
    let ann = mutations(&app).await;
    assert!(
        eventually(15, || drained(&app)).await,
        "the relay drains the outbox"
    );
    let outbox = outbox_of(&app, &ann.org_id).await;
    let log = log_of(&app, &ann.token).await;
    assert_eq!(
        outbox.len(),
        8,
        "signup, 2 creates, delta, rename, 2 batch lines, delete"
    );
    assert_eq!(
        log, outbox,
        "every outbox event exactly once, in commit order"
    );
    let event: Value = app
        .get(
            "/api/v1/events?type=inventory.item.qty_changed&limit=1",
            &ann.token,
        )
        .await
        .json()
        .await
        .unwrap();
    let first = &event["data"][0];
    assert_eq!(
        (
            first["data"]["delta"].as_i64(),
            first["data"]["qty_after"].as_i64()
        ),
        (Some(-2), Some(3))
    );
    assert!(first["stream"].as_str().unwrap().starts_with("item-"));
}

async fn published_outbox_rows_are_deleted_after_the_retention_and_their_events_stay(
    backend: Backend,
) {
    let app = spawn_app_with(backend, |c| c.outbox.purge_interval_s = 1, Router::new()).await;
    let ann = mutations(&app).await;
    assert!(eventually(15, || drained(&app)).await);
    let outbox = outbox_of(&app, &ann.org_id).await;
    assert_eq!(outbox.len(), 8);
    // Inside the retention nothing goes.
    tokio::time::sleep(std::time::Duration::from_millis(1_500)).await;
    assert_eq!(outbox_of(&app, &ann.org_id).await, outbox);
    app.clock.advance(time::Duration::hours(25));
    assert!(
        eventually(15, || async { outbox_count(&app, &ann.org_id).await == 0 }).await,
        "published rows past the retention are deleted"
    );
    assert_eq!(
        log_of(&app, &ann.token).await,
        outbox,
        "the event log keeps every event"
    );
}

async fn a_relay_that_died_mid_batch_is_taken_over_without_duplicates(backend: Backend) {
    let app = spawn_app_with(backend, |c| c.outbox.relay_enabled = false, Router::new()).await;
    let ann = mutations(&app).await;
    // A relay leases the rows, publishes half of them, and dies before marking anything.
    let (org, mine) = leased_by(&app, "dead-relay", &ann).await;
    let (done, failure) = relay::publish_to_log(&app.state, org, &mine[..5]).await;
    assert_eq!((done.len(), failure), (5, None));
    assert!(!drained(&app).await);
    // Its lease expires; a healthy relay takes over.
    app.clock.advance(time::Duration::seconds(31));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let settings = RelaySettings {
        holder: "healthy".into(),
        ..RelaySettings::default()
    };
    let task = tokio::spawn(relay::run(
        app.state.clone(),
        Destination::EventLog,
        settings,
        None,
        app.state.outbox_wake.clone(),
        stopped,
    ));
    assert!(eventually(15, || drained(&app)).await);
    let _ = stop.send(true);
    task.await.unwrap();
    let outbox = outbox_of(&app, &ann.org_id).await;
    let log = log_of(&app, &ann.token).await;
    assert_eq!(
        log, outbox,
        "exactly once and in order, despite the republished half"
    );
}

/// A run whose middle is in the log while its first row is not (PostgreSQL's relay could
/// publish a later row first while it ordered by transaction id, and a relay dying before it
/// marked that row left this; the commit-order number of migration 9 ended that, but an
/// operator's replay or a bug must not be able to jam the relay either). Appended whole,
/// such a run is refused as an id conflict round after round: the organization's
/// publishing must not stop there.
async fn a_run_partly_in_the_log_behind_an_unpublished_first_row_does_not_jam_the_relay(
    backend: Backend,
) {
    let app = spawn_app_with(backend, |c| c.outbox.relay_enabled = false, Router::new()).await;
    let ann = mutations(&app).await;
    let (org, mine) = leased_by(&app, "relay", &ann).await;
    // Rows 1..4 are one run (the milk item's create, delta, rename); its middle row is in
    // the log already.
    assert_eq!(mine[1].stream, mine[2].stream);
    assert_eq!(mine[2].stream, mine[3].stream);
    let (done, failure) = relay::publish_to_log(&app.state, org, &mine[2..3]).await;
    assert_eq!((done.len(), failure), (1, None));
    let (done, failure) = relay::publish_to_log(&app.state, org, &mine).await;
    assert_eq!(failure, None, "the relay is stuck");
    assert_eq!(done.len(), mine.len());
    let mut outbox = outbox_of(&app, &ann.org_id).await;
    let mut log = log_of(&app, &ann.token).await;
    outbox.sort();
    log.sort();
    assert_eq!(log, outbox, "every event once");
}

/// The same, with the rows in commit order rather than `seq` order (on PostgreSQL a
/// transaction that began later may commit first): the rows after the mixed run are taken by
/// their place, so one with a smaller `seq` is not left out of the round.
async fn a_mixed_run_takes_the_rows_after_it_by_place_not_by_seq(backend: Backend) {
    let app = spawn_app_with(backend, |c| c.outbox.relay_enabled = false, Router::new()).await;
    let ann = mutations(&app).await;
    let (org, mine) = leased_by(&app, "relay", &ann).await;
    assert_eq!(mine[1].stream, mine[2].stream);
    assert_eq!(mine[2].stream, mine[3].stream);
    assert_ne!(mine[0].stream, mine[1].stream);
    assert!(mine[0].seq < mine[1].seq);
    let (done, failure) = relay::publish_to_log(&app.state, org, &mine[2..3]).await;
    assert_eq!((done.len(), failure), (1, None));
    // Committed in this order: the run of rows 1..4 (its middle row in the log), then row 0.
    let order = [
        mine[1].clone(),
        mine[2].clone(),
        mine[3].clone(),
        mine[0].clone(),
    ];
    let (done, failure) = relay::publish_to_log(&app.state, org, &order).await;
    assert_eq!(failure, None);
    let mut published = done.clone();
    published.sort();
    let mut expected: Vec<i64> = order.iter().map(|r| r.seq).collect();
    expected.sort();
    assert_eq!(published, expected, "every row of the round, row 0 too");
}

/// One organization's row that keeps failing (here: an event over the log's size limit)
/// backs off that organization alone: another organization's changes still reach the log at
/// once, not after the relay's growing backoff.
#[tokio::test]
async fn a_failing_organization_does_not_hold_back_the_others() {
    let app = spawn_app_with(
        Backend::Sqlite,
        |c| c.events.event_bytes_max = 1024,
        Router::new(),
    )
    .await;
    let ann = app.sign_up("ann@example.com").await;
    let bob = app.sign_up("bob@example.com").await;
    let payload = json!({"big": "x".repeat(4096)}).to_string();
    app.execute(&format!(
        "INSERT INTO outbox (event_id, org_id, event_type, stream, payload, created_at)
         VALUES (randomblob(16), {}, 'test.big', 'big', '{payload}', 0)",
        org_literal(&app, &ann.org_id)
    ))
    .await
    .unwrap();
    // While ann's row keeps failing (and a relay-wide backoff would keep growing: 0.2, 0.4,
    // 0.8, 1.6, 3.2 s, …), each of bob's changes reaches the log at once.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    for round in 0..5 {
        let before = log_of(&app, &bob.token).await.len();
        app.create_item(&bob.token, &format!("Item {round}"), 1)
            .await;
        let started = std::time::Instant::now();
        while log_of(&app, &bob.token).await.len() == before {
            assert!(
                started.elapsed() < std::time::Duration::from_secs(1),
                "bob's change {round} waited behind ann's failing row"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    }
    let failures = app
        .scalar("SELECT attempts FROM outbox WHERE event_type = 'test.big'")
        .await;
    assert!(failures >= 3, "the big row was tried {failures} times");

    // More failing organizations than a round takes (16), all with rows older than bob's:
    // leased and set aside, they took every place of every round, and bob waited for as long
    // as they failed. Backing off, they are not leased at all.
    for i in 0..20 {
        let org = app.sign_up(&format!("failing{i}@example.com")).await;
        app.execute(&format!(
            "INSERT INTO outbox (event_id, org_id, event_type, stream, payload, created_at)
             VALUES (randomblob(16), {}, 'test.big', 'big', '{payload}', 0)",
            org_literal(&app, &org.org_id)
        ))
        .await
        .unwrap();
    }
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    for round in 0..3 {
        let before = log_of(&app, &bob.token).await.len();
        app.create_item(&bob.token, &format!("Later {round}"), 1)
            .await;
        let started = std::time::Instant::now();
        while log_of(&app, &bob.token).await.len() == before {
            assert!(
                started.elapsed() < std::time::Duration::from_secs(2),
                "bob's change {round} waited behind 20 failing organizations"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

async fn a_change_and_its_outbox_row_exist_together_or_not_at_all(backend: Backend) {
    let app = spawn_app_with(backend, |c| c.outbox.relay_enabled = false, Router::new()).await;
    let ann = app.sign_up("ann@example.com").await;
    let bob = app.sign_up("bob@example.com").await;
    let item = app.create_item(&ann.token, "Milk", 5).await;
    let id = item["id"].as_str().unwrap().to_owned();
    // Make every outbox insert fail: the transaction must lose its business write too.
    if app.is_postgres() {
        app.execute("CREATE FUNCTION fail_outbox() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'injected'; END $$").await.unwrap();
        app.execute("CREATE TRIGGER outbox_fails BEFORE INSERT ON outbox FOR EACH ROW EXECUTE FUNCTION fail_outbox()").await.unwrap();
    } else {
        app.execute("CREATE TRIGGER outbox_fails BEFORE INSERT ON outbox BEGIN SELECT RAISE(ABORT, 'injected'); END").await.unwrap();
    }
    let before = app.snapshot().await;
    let attempts: Vec<(&str, reqwest::Response)> = vec![
        (
            "create item",
            app.post("/api/v1/items", &ann.token, &json!({"name": "Eggs"}))
                .await,
        ),
        (
            "qty delta",
            app.patch_qty(&ann.token, &id, &json!({"delta": 1}), None)
                .await,
        ),
        (
            "rename",
            app.request(
                Method::PATCH,
                &format!("/api/v1/items/{id}"),
                Some(&ann.token),
            )
            .header("if-match", "*")
            .json(&json!({"name": "X"}))
            .send()
            .await
            .unwrap(),
        ),
        (
            "batch",
            app.post(
                "/api/v1/inventory/adjustments",
                &ann.token,
                &json!({"adjustments": [{"item_id": id, "delta": 1}]}),
            )
            .await,
        ),
        (
            "delete",
            app.request(
                Method::DELETE,
                &format!("/api/v1/items/{id}"),
                Some(&ann.token),
            )
            .send()
            .await
            .unwrap(),
        ),
        (
            "add member",
            app.post(
                "/api/v1/members",
                &ann.token,
                &json!({"email": bob.email, "role": "member"}),
            )
            .await,
        ),
        (
            "create organization",
            app.post("/api/v1/organizations", &ann.token, &json!({"name": "Two"}))
                .await,
        ),
        (
            "create webhook",
            app.post(
                "/api/v1/webhooks",
                &ann.token,
                &json!({"url": "https://example.com/h"}),
            )
            .await,
        ),
        (
            "signup",
            app.send_json(
                Method::POST,
                "/api/v1/auth/signup",
                None,
                &json!({"email": "c@example.com", "password": PASSWORD, "organization_name": "C"}),
            )
            .await,
        ),
    ];
    for (what, response) in attempts {
        assert_eq!(response.status(), 500, "{what}");
    }
    assert_eq!(
        app.snapshot().await,
        before,
        "no change committed without its outbox row"
    );
    let item: Value = app
        .get(&format!("/api/v1/items/{id}"), &ann.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (item["qty"].as_u64(), item["name"].as_str()),
        (Some(5), Some("Milk"))
    );
}

type Received = Arc<Mutex<Vec<(axum::http::HeaderMap, Vec<u8>)>>>;

/// A webhook receiver: answers 500 `fail_first` times, then 200; records what it got.
#[derive(Clone, Default)]
struct Receiver {
    received: Received,
    fail_first: Arc<Mutex<usize>>,
}

async fn start_receiver(receiver: Receiver) -> String {
    let app = Router::new().route(
        "/hook",
        post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let receiver = receiver.clone();
                async move {
                    receiver
                        .received
                        .lock()
                        .unwrap()
                        .push((headers, body.to_vec()));
                    let mut failures = receiver.fail_first.lock().unwrap();
                    if *failures > 0 {
                        *failures -= 1;
                        axum::http::StatusCode::INTERNAL_SERVER_ERROR
                    } else {
                        axum::http::StatusCode::NO_CONTENT
                    }
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{address}/hook")
}

fn verify_signature(secret: &str, header: &str, body: &[u8]) -> bool {
    let Some((t, v1)) = header.split_once(",v1=") else {
        return false;
    };
    let t: i64 = t.trim_start_matches("t=").parse().unwrap();
    trueline::delivery::webhooks::signature(secret, t, body) == format!("t={t},v1={v1}")
}

async fn webhooks_are_signed_retried_dead_lettered_and_redelivered(backend: Backend) {
    let app = spawn_app_with(
        backend,
        |c| {
            c.webhooks.allow_private_targets = true;
            c.webhooks.max_attempts = 3;
            c.webhooks.backoff_base_ms = 20;
            c.webhooks.backoff_max_ms = 100;
            c.webhooks.poll_ms = 20;
        },
        Router::new(),
    )
    .await;
    let flaky = Receiver {
        fail_first: Arc::new(Mutex::new(2)),
        ..Receiver::default()
    };
    let dead = Receiver {
        fail_first: Arc::new(Mutex::new(usize::MAX)),
        ..Receiver::default()
    };
    let (flaky_url, dead_url) = (
        start_receiver(flaky.clone()).await,
        start_receiver(dead.clone()).await,
    );
    let ann = app.sign_up("ann@example.com").await;
    let created: Value = app
        .post(
            "/api/v1/webhooks",
            &ann.token,
            &json!({"url": flaky_url, "event_types": ["inventory.item.created"]}),
        )
        .await
        .json()
        .await
        .unwrap();
    let secret = created["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"));
    let dead_hook: Value = app
        .post(
            "/api/v1/webhooks",
            &ann.token,
            &json!({"url": dead_url, "event_types": ["inventory.*"]}),
        )
        .await
        .json()
        .await
        .unwrap();
    let listed: Value = app
        .get("/api/v1/webhooks", &ann.token)
        .await
        .json()
        .await
        .unwrap();
    assert!(
        !listed.to_string().contains(&secret),
        "the secret is shown once"
    );
    app.create_item(&ann.token, "Milk", 1).await;
    // The flaky receiver gets 3 attempts: two 500s, then success.
    assert!(eventually(15, || async { flaky.received.lock().unwrap().len() >= 3 }).await);
    let received = flaky.received.lock().unwrap().clone();
    for (headers, body) in &received {
        let sig = headers["trueline-signature"].to_str().unwrap();
        assert!(verify_signature(&secret, sig, body), "signature verifies");
        let payload: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(payload["type"], "inventory.item.created");
    }
    let event_ids: Vec<&str> = received
        .iter()
        .map(|(h, _)| h["trueline-event-id"].to_str().unwrap())
        .collect();
    assert!(
        event_ids.windows(2).all(|w| w[0] == w[1]),
        "retries carry the same event id"
    );
    let hook_id = created["id"].as_str().unwrap();
    let path = format!("/api/v1/webhooks/{hook_id}/deliveries");
    assert!(
        eventually(10, || async {
            let list: Value = app.get(&path, &ann.token).await.json().await.unwrap();
            list["data"][0]["state"] == "succeeded"
        })
        .await
    );
    let list: Value = app.get(&path, &ann.token).await.json().await.unwrap();
    let delivery = &list["data"][0];
    assert_eq!(
        (
            delivery["attempts"].as_u64(),
            delivery["attempt_log"].as_array().unwrap().len()
        ),
        (Some(3), 3)
    );
    assert_eq!(delivery["attempt_log"][0]["status"], 500);
    // The always-failing receiver ends in the dead-letter list after 3 attempts.
    let dead_id = dead_hook["id"].as_str().unwrap();
    let dead_path = format!("/api/v1/webhooks/{dead_id}/deliveries?state=dead");
    assert!(
        eventually(15, || async {
            let list: Value = app.get(&dead_path, &ann.token).await.json().await.unwrap();
            list["data"].as_array().is_some_and(|d| !d.is_empty())
        })
        .await
    );
    let list: Value = app.get(&dead_path, &ann.token).await.json().await.unwrap();
    let dead_delivery = &list["data"][0];
    assert_eq!(dead_delivery["attempts"], 3);
    assert_eq!(dead.received.lock().unwrap().len(), 3);
    // Redelivery after the receiver recovered.
    *dead.fail_first.lock().unwrap() = 0;
    let redeliver = format!(
        "/api/v1/webhooks/{dead_id}/deliveries/{}/redeliver",
        dead_delivery["id"].as_str().unwrap()
    );
    let response = app.post(&redeliver, &ann.token, &json!({})).await;
    assert_eq!(response.status(), 200);
    let all = format!("/api/v1/webhooks/{dead_id}/deliveries");
    assert!(
        eventually(10, || async {
            let list: Value = app.get(&all, &ann.token).await.json().await.unwrap();
            list["data"][0]["state"] == "succeeded"
        })
        .await
    );
    assert_eq!(dead.received.lock().unwrap().len(), 4);
    // Other organizations see none of it.
    let bob = app.sign_up("bob@example.com").await;
    assert_problem(app.get(&path, &bob.token).await, 404, "not_found").await;
}

/// A receiver that accepts connections and never answers holds its organization's
/// deliveries for the whole timeout; another organization's delivery goes out meanwhile
/// (a round of deliveries waited for its slowest: every organization waited behind one
/// that hangs, as long as its retries were due first).
#[tokio::test]
async fn a_receiver_that_hangs_slows_only_its_own_organization() {
    let app = spawn_app_with(
        Backend::Sqlite,
        |c| {
            c.webhooks.allow_private_targets = true;
            c.webhooks.timeout_ms = 8_000;
            c.webhooks.concurrency = 2;
            c.webhooks.poll_ms = 20;
        },
        Router::new(),
    )
    .await;
    let hanging = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hanging_url = format!("http://{}/hook", hanging.local_addr().unwrap());
    let accepted = Arc::new(Mutex::new(Vec::new()));
    let held = accepted.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = hanging.accept().await {
            held.lock().unwrap().push(stream);
        }
    });
    let ann = app.sign_up("ann@example.com").await;
    app.post(
        "/api/v1/webhooks",
        &ann.token,
        &json!({"url": hanging_url, "event_types": ["inventory.*"]}),
    )
    .await;
    for name in ["A", "B", "C", "D"] {
        app.create_item(&ann.token, name, 1).await;
    }
    assert!(eventually(10, || async { !accepted.lock().unwrap().is_empty() }).await);

    let bob = app.sign_up("bob@example.com").await;
    let receiver = Receiver::default();
    let url = start_receiver(receiver.clone()).await;
    app.post(
        "/api/v1/webhooks",
        &bob.token,
        &json!({"url": url, "event_types": ["inventory.*"]}),
    )
    .await;
    let created = std::time::Instant::now();
    app.create_item(&bob.token, "Milk", 1).await;
    assert!(
        eventually(10, || async {
            !receiver.received.lock().unwrap().is_empty()
        })
        .await
    );
    let waited = created.elapsed();
    assert!(
        waited < std::time::Duration::from_secs(4),
        "the other organization's delivery waited {waited:?} behind a receiver that hangs"
    );
    // Ann's organization held one of the two slots, never both.
    assert_eq!(accepted.lock().unwrap().len(), 1);
}

async fn private_webhook_targets_are_refused_by_default(backend: Backend) {
    let app = spawn_app(backend).await;
    let ann = app.sign_up("ann@example.com").await;
    let before = app.snapshot().await;
    // Within 2,000 characters as sent, 4,214 once percent-encoded (as stored): it was a 500.
    let encoded_too_long = format!("https://example.com/{}", "é".repeat(700));
    for url in [
        "http://127.0.0.1:9000/h",
        "http://localhost/h",
        "http://10.0.0.5/h",
        "http://0.1.2.3/h",
        "http://[64:ff9b:1::a00:1]/h",
        "ftp://example.com/h",
        encoded_too_long.as_str(),
    ] {
        let problem = assert_problem(
            app.post("/api/v1/webhooks", &ann.token, &json!({"url": url}))
                .await,
            400,
            "validation_failed",
        )
        .await;
        assert_eq!(problem["errors"][0]["code"], "invalid_url", "{url}");
    }
    assert_eq!(
        app.snapshot().await,
        before,
        "the refused webhooks changed nothing"
    );
    let member = app.sign_up("member@example.com").await;
    let token = app.add_member(&ann, &member, "member").await;
    assert_problem(
        app.post(
            "/api/v1/webhooks",
            &token,
            &json!({"url": "https://example.com/h"}),
        )
        .await,
        403,
        "insufficient_role",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set TRUELINE_TEST_POSTGRES_URL and run with --ignored"]
async fn two_instances_on_one_postgres_both_relay_without_duplicates_or_reordering() {
    let first = spawn_app(Backend::Postgres).await;
    let second = spawn_second_instance(&first).await;
    let accounts: Vec<Account> = futures_util::future::join_all((0..4).map(|i| {
        let app = if i % 2 == 0 { &first } else { &second };
        mutations(app)
    }))
    .await;
    assert!(eventually(20, || drained(&first)).await);
    for ann in &accounts {
        let outbox = outbox_of(&first, &ann.org_id).await;
        assert_eq!(log_of(&first, &ann.token).await, outbox);
        assert_eq!(
            log_of(&second, &ann.token).await,
            outbox,
            "both instances serve the same log"
        );
    }
    let distinct = first.scalar("SELECT count(DISTINCT id) FROM events").await;
    assert_eq!(distinct, first.scalar("SELECT count(*) FROM events").await);
    assert_eq!(distinct, first.count("outbox").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs NATS JetStream: set TRUELINE_TEST_NATS_URL and run with --ignored"]
async fn nats_receives_every_event_once_even_when_republished() {
    let url = std::env::var("TRUELINE_TEST_NATS_URL").expect("TRUELINE_TEST_NATS_URL is not set");
    let tag = uuid::Uuid::now_v7().simple().to_string();
    let stream = format!("TLTEST{tag}");
    let prefix = format!("tltest{tag}");
    let app = spawn_app_with(
        Backend::Sqlite,
        |c| {
            c.publish.nats.url = Some(url.clone());
            c.publish.nats.stream = stream.clone();
            c.publish.nats.subject_prefix = prefix.clone();
            c.outbox.poll_ms = 50;
        },
        Router::new(),
    )
    .await;
    mutations(&app).await;
    // A row is NATS-pending only once the event log has it: look at the event log first.
    // (In the other order, NATS could be caught up with the one row the log had, and the log
    // take the other seven before the second look: "drained" with one message sent.)
    let nats_drained = || async {
        drained(&app).await
            && app
                .state
                .store
                .outbox_stats(Destination::Nats)
                .await
                .map(|s| s.pending == 0)
                .unwrap_or(false)
    };
    assert!(eventually(20, nats_drained).await);
    let client = async_nats::connect(&url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let messages = || async {
        let mut s = js.get_stream(&stream).await.unwrap();
        s.info().await.unwrap().state.messages
    };
    let total = app.count("outbox").await as u64;
    assert_eq!(messages().await, total);
    // Created with the configured duplicate window (an hour), not JetStream's two minutes.
    let window = js
        .get_stream(&stream)
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .config
        .duplicate_window;
    assert_eq!(window, std::time::Duration::from_secs(3600));
    // Pretend the relay crashed before marking: everything is published again.
    app.execute("UPDATE outbox SET nats_published_at = NULL")
        .await
        .unwrap();
    assert!(eventually(20, nats_drained).await);
    assert_eq!(
        messages().await,
        total,
        "JetStream dropped the duplicates (Nats-Msg-Id)"
    );
    js.delete_stream(&stream).await.unwrap();
}
