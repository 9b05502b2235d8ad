//! Idempotency keys over HTTP.

use crate::both_backends;
use crate::helpers::*;
use reqwest::Method;
use serde_json::{Value, json};
use std::sync::Arc;
use trueline_core::clock::Clock;
use trueline_http::idempotency::fingerprint;
use trueline_store::{Claim, IdempotencyScope};

both_backends!(
    a_retried_delta_with_the_same_key_moves_the_quantity_exactly_once,
    a_replay_is_byte_identical_and_marked_replayed,
    the_same_key_for_a_different_request_is_422_and_changes_nothing,
    a_key_still_in_progress_is_409,
    a_rejected_request_stores_nothing_so_a_corrected_retry_succeeds,
    invalid_idempotency_keys_are_rejected,
    creates_and_member_changes_are_idempotent_too,
    responses_that_hand_out_a_secret_are_stored_sealed_to_the_callers_token,
    a_method_the_route_does_not_serve_is_405_whatever_the_key,
);

/// A request that times out while it waits (here: for a row another transaction holds)
/// releases its claim as its future is dropped, so the retry runs instead of getting
/// `idempotency_key_in_use` until the claim's lock expires (a minute by default).
#[tokio::test]
#[ignore = "needs PostgreSQL: set TRUELINE_TEST_POSTGRES_URL and run with --run-ignored all"]
async fn a_request_that_timed_out_releases_its_claim() {
    use sqlx::Connection;
    let app = spawn_app_with(
        Backend::Postgres,
        |c| c.server.request_timeout_ms = 300,
        axum::Router::new(),
    )
    .await;
    let ann = app.sign_up("ann@example.com").await;
    let item = app.create_item(&ann.token, "Milk", 10).await;
    let id = item["id"].as_str().unwrap().to_owned();
    let mut holder = sqlx::PgConnection::connect(&app.config.database_url())
        .await
        .unwrap();
    let mut held = holder.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM items WHERE id = $1::uuid FOR UPDATE")
        .bind(&id)
        .execute(&mut *held)
        .await
        .unwrap();
    let rename = |name: &'static str| {
        app.request(
            Method::PATCH,
            &format!("/api/v1/items/{id}"),
            Some(&ann.token),
        )
        .header("idempotency-key", "rename-1")
        .header("if-match", "\"v1\"")
        .json(&json!({"name": name}))
        .send()
    };
    let timed_out = rename("Oat milk").await.unwrap();
    assert_problem(timed_out, 503, "timeout").await;
    held.rollback().await.unwrap();
    // The release runs on its own task right after the timeout.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while app
        .scalar("SELECT count(*) FROM idempotency_keys WHERE key = 'rename-1'")
        .await
        != 0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the claim is still held"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let retried = rename("Oat milk").await.unwrap();
    assert_eq!(retried.status(), 200);
    let stored: Value = app
        .get(&format!("/api/v1/items/{id}"), &ann.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (stored["name"].as_str(), stored["version"].as_u64()),
        (Some("Oat milk"), Some(2))
    );
}

async fn a_retried_delta_with_the_same_key_moves_the_quantity_exactly_once(backend: Backend) {
    let app = Arc::new(spawn_app(backend).await);
    let ann = app.sign_up("ann@example.com").await;
    let item = app.create_item(&ann.token, "Milk", 10).await;
    let id = item["id"].as_str().unwrap().to_owned();
    // 4 concurrent, then 6 sequential: 10 sends of one request.
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (app, token, id) = (app.clone(), ann.token.clone(), id.clone());
        tasks.push(tokio::spawn(async move {
            app.patch_qty(&token, &id, &json!({"delta": -3}), Some("retry-1"))
                .await
                .status()
                .as_u16()
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    for _ in 0..6 {
        let response = app
            .patch_qty(&ann.token, &id, &json!({"delta": -3}), Some("retry-1"))
            .await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["idempotent-replayed"], "true");
        statuses.push(200);
    }
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 409),
        "{statuses:?}"
    );
    let item: Value = app
        .get(&format!("/api/v1/items/{id}"), &ann.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(item["qty"], 7, "moved exactly once");
    assert_eq!(
        app.scalar("SELECT count(*) FROM item_history WHERE kind = 'qty_changed'")
            .await,
        1
    );
    assert_eq!(
        app.scalar("SELECT count(*) FROM outbox WHERE event_type = 'inventory.item.qty_changed'")
            .await,
        1
    );
}

async fn a_replay_is_byte_identical_and_marked_replayed(backend: Backend) {
    let app = spawn_app(backend).await;
    let ann = app.sign_up("ann@example.com").await;
    let item = app.create_item(&ann.token, "Milk", 10).await;
    let id = item["id"].as_str().unwrap();
    let first = app
        .patch_qty(&ann.token, id, &json!({"delta": 2}), Some("\"quoted-key\""))
        .await;
    assert_eq!(first.status(), 200);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first_etag = first.headers()["etag"].clone();
    let first_body = first.bytes().await.unwrap();
    // Same request, re-serialized differently and with the bare form of the key.
    let again = app
        .request(
            Method::PATCH,
            &format!("/api/v1/items/{id}/qty"),
            Some(&ann.token),
        )
        .header("content-type", "application/json")
        .header("idempotency-key", "quoted-key")
        .body("{ \"delta\" : 2 }")
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 200);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.headers()["etag"], first_etag);
    assert_eq!(again.bytes().await.unwrap(), first_body, "byte-identical");
    let item: Value = app
        .get(&format!("/api/v1/items/{id}"), &ann.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(item["qty"], 12);
}

async fn the_same_key_for_a_different_request_is_422_and_changes_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    let ann = app.sign_up("ann@example.com").await;
    let item = app.create_item(&ann.token, "Milk", 10).await;
    let other = app.create_item(&ann.token, "Eggs", 10).await;
    let (id, other_id) = (item["id"].as_str().unwrap(), other["id"].as_str().unwrap());
    assert_eq!(
        app.patch_qty(&ann.token, id, &json!({"delta": 1}), Some("k"))
            .await
            .status(),
        200
    );
    let before = app.snapshot().await;
    let body = assert_problem(
        app.patch_qty(&ann.token, id, &json!({"delta": 2}), Some("k"))
            .await,
        422,
        "idempotency_key_reused",
    )
    .await;
    assert!(body["detail"].is_string());
    assert_problem(
        app.patch_qty(&ann.token, other_id, &json!({"delta": 1}), Some("k"))
            .await,
        422,
        "idempotency_key_reused",
    )
    .await;
    assert_eq!(app.snapshot().await, before);
    // Keys are per user: another member may use the same key freely.
    let bob = app.sign_up("bob@example.com").await;
    let bob_token = app.add_member(&ann, &bob, "member").await;
    assert_eq!(
        app.patch_qty(&bob_token, id, &json!({"delta": 2}), Some("k"))
            .await
            .status(),
        200
    );
}

async fn a_key_still_in_progress_is_409(backend: Backend) {
    let app = spawn_app(backend).await;
    let ann = app.sign_up("ann@example.com").await;
    let item = app.create_item(&ann.token, "Milk", 10).await;
    let id = item["id"].as_str().unwrap();
    let me: Value = app
        .get("/api/v1/me", &ann.token)
        .await
        .json()
        .await
        .unwrap();
    let scope = IdempotencyScope::new(
        uuid::Uuid::parse_str(me["organization"]["id"].as_str().unwrap())
            .unwrap()
            .into(),
        uuid::Uuid::parse_str(me["user"]["id"].as_str().unwrap())
            .unwrap()
            .into(),
        "busy".into(),
    );
    // Claim the key exactly as the middleware would for this request, as if a first request
    // were still running.
    let now = app.clock.now();
    let body = serde_json::to_vec(&json!({"delta": 1})).unwrap();
    let print = fingerprint(&Method::PATCH, &format!("/api/v1/items/{id}/qty"), &body);
    let claim = app
        .state
        .store
        .claim(&scope, &print, now, now + time::Duration::minutes(1))
        .await
        .unwrap();
    assert_eq!(claim, Claim::Acquired);
    let before = app.snapshot().await;
    let response = app
        .patch_qty(&ann.token, id, &json!({"delta": 1}), Some("busy"))
        .await;
    assert!(
        response.headers().contains_key("retry-after"),
        "{response:?}"
    );
    assert_problem(response, 409, "idempotency_key_in_use").await;
    assert_eq!(app.snapshot().await, before);
    // After the lock expires (the first request died), a retry takes the key over.
    app.clock.advance(time::Duration::minutes(2));
    assert_eq!(
        app.patch_qty(&ann.token, id, &json!({"delta": 1}), Some("busy"))
            .await
            .status(),
        200
    );
}

async fn a_rejected_request_stores_nothing_so_a_corrected_retry_succeeds(backend: Backend) {
    let app = spawn_app(backend).await;
    let ann = app.sign_up("ann@example.com").await;
    let item = app.create_item(&ann.token, "Milk", 1).await;
    let id = item["id"].as_str().unwrap();
    let before = app.snapshot().await;
    assert_problem(
        app.patch_qty(&ann.token, id, &json!({"delta": true}), Some("fix-me"))
            .await,
        400,
        "validation_failed",
    )
    .await;
    assert_problem(
        app.patch_qty(&ann.token, id, &json!({"delta": -5}), Some("fix-me"))
            .await,
        400,
        "insufficient_quantity",
    )
    .await;
    assert_eq!(
        app.snapshot().await,
        before,
        "no idempotency record for rejected requests"
    );
    assert_eq!(
        app.patch_qty(&ann.token, id, &json!({"delta": -1}), Some("fix-me"))
            .await
            .status(),
        200
    );
}

async fn invalid_idempotency_keys_are_rejected(backend: Backend) {
    let app = spawn_app(backend).await;
    let ann = app.sign_up("ann@example.com").await;
    let item = app.create_item(&ann.token, "Milk", 1).await;
    let id = item["id"].as_str().unwrap();
    let before = app.snapshot().await;
    for key in ["", "\"\"", &"k".repeat(256)] {
        let response = app
            .patch_qty(&ann.token, id, &json!({"delta": 1}), Some(key))
            .await;
        let problem = assert_problem(response, 400, "validation_failed").await;
        assert_eq!(problem["errors"][0]["code"], "invalid_idempotency_key");
    }
    assert_eq!(app.snapshot().await, before);
}

async fn creates_and_member_changes_are_idempotent_too(backend: Backend) {
    let app = spawn_app(backend).await;
    let ann = app.sign_up("ann@example.com").await;
    let create = |key: &'static str| {
        app.request(Method::POST, "/api/v1/items", Some(&ann.token))
            .header("idempotency-key", key)
            .json(&json!({"name": "Milk", "qty": 1}))
    };
    let first = create("c1").send().await.unwrap();
    assert_eq!(first.status(), 201);
    let location = first.headers()["location"].clone();
    let second = create("c1").send().await.unwrap();
    assert_eq!(
        second.status(),
        201,
        "the replay repeats the 201, not a 409 name_taken"
    );
    assert_eq!(second.headers()["location"], location);
    assert_eq!(app.count("items").await, 1);
    let bob = app.sign_up("bob@example.com").await;
    let add = || {
        app.request(Method::POST, "/api/v1/members", Some(&ann.token))
            .header("idempotency-key", "m1")
            .json(&json!({"email": bob.email, "role": "member"}))
    };
    assert_eq!(add().send().await.unwrap().status(), 201);
    assert_eq!(add().send().await.unwrap().status(), 201);
    let org = app
        .request(Method::POST, "/api/v1/organizations", Some(&ann.token))
        .header("idempotency-key", "o1")
        .json(&json!({"name": "Two"}));
    assert_eq!(org.send().await.unwrap().status(), 201);
    let org = app
        .request(Method::POST, "/api/v1/organizations", Some(&ann.token))
        .header("idempotency-key", "o1")
        .json(&json!({"name": "Two"}));
    assert_eq!(org.send().await.unwrap().status(), 201);
    assert_eq!(app.count("organizations").await, 3);
}

/// Stored responses that hold `secret`, read straight from the table.
async fn stored_responses_containing(app: &TestApp, secret: &str) -> i64 {
    // Tokens and webhook secrets are base64url or hex: safe to inline.
    assert!(
        secret
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    );
    let sql = if app.is_postgres() {
        format!(
            "SELECT count(*) FROM idempotency_keys WHERE position(convert_to('{secret}', 'UTF8') in response_body) > 0"
        )
    } else {
        format!(
            "SELECT count(*) FROM idempotency_keys WHERE instr(response_body, CAST('{secret}' AS BLOB)) > 0"
        )
    };
    app.scalar(&sql).await
}

/// Invite tokens and webhook secrets are shown once; a retry with the same key must show the
/// same ones, so the stored response holds them, sealed (encrypted) to the bearer token of the
/// request: the database, which holds that token only as a hash, never has them readable. A
/// replay with the same token is byte-identical; with another token of the same user it is a
/// 409 that reveals nothing.
async fn responses_that_hand_out_a_secret_are_stored_sealed_to_the_callers_token(backend: Backend) {
    let app = spawn_app(backend).await;
    let ann = app.sign_up("ann@example.com").await;
    let a: Value = app
        .post(
            "/api/v1/assessments",
            &ann.token,
            &json!({"title": "T", "time_limit_minutes": 5, "passing_score_percent": 50}),
        )
        .await
        .json()
        .await
        .unwrap();
    let a = a["id"].as_str().unwrap().to_owned();
    let question = json!({"type": "true_false", "prompt": "Yes?", "correct": true});
    app.post(
        &format!("/api/v1/assessments/{a}/questions"),
        &ann.token,
        &question,
    )
    .await;
    app.post(
        &format!("/api/v1/assessments/{a}/publish"),
        &ann.token,
        &json!({}),
    )
    .await;
    let other_token = app.log_in(&ann, &ann.org_id).await;
    let requests = [
        (
            format!("/api/v1/assessments/{a}/invites"),
            json!({"candidates": [{"email": "cand@example.com"}]}),
            "/invites/0/token",
        ),
        (
            "/api/v1/webhooks".to_owned(),
            json!({"url": "https://hooks.example.com/x", "event_types": ["inventory.*"]}),
            "/secret",
        ),
        (
            format!("/api/v1/assessments/{a}/share-link"),
            json!({}),
            "/token",
        ),
    ];
    for (path, body, pointer) in requests {
        let send = |token: &str| {
            app.request(Method::POST, &path, Some(token))
                .header("idempotency-key", format!("sealed-{path}"))
                .json(&body)
                .send()
        };
        let first = send(&ann.token).await.unwrap();
        assert_eq!(first.status(), 201, "{path}");
        let first = first.bytes().await.unwrap();
        let value: Value = serde_json::from_slice(&first).unwrap();
        let secret = value.pointer(pointer).unwrap().as_str().unwrap().to_owned();
        assert_eq!(
            stored_responses_containing(&app, &secret).await,
            0,
            "{path}: the stored response holds the secret readable"
        );
        let replay = send(&ann.token).await.unwrap();
        assert_eq!(replay.status(), 201);
        assert_eq!(replay.headers()["idempotent-replayed"], "true");
        assert_eq!(
            replay.bytes().await.unwrap(),
            first,
            "byte-identical replay"
        );
        let elsewhere = send(&other_token).await.unwrap();
        let problem = assert_problem(elsewhere, 409, "idempotency_key_other_token").await;
        assert!(!problem.to_string().contains(&secret));
    }
    // The replayed share link is the one in force (the retry did not replace it).
    let share: Value = app
        .request(
            Method::POST,
            &format!("/api/v1/assessments/{a}/share-link"),
            Some(&ann.token),
        )
        .header(
            "idempotency-key",
            format!("sealed-/api/v1/assessments/{a}/share-link"),
        )
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let register = app
        .client
        .post(app.url(share["register_url"].as_str().unwrap()))
        .json(&json!({"email": "via-link@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(register.status(), 201, "the replayed link works");
}

/// A method the route does not serve is `405` with or without a key, also with a key already
/// used for the route's own method (it was `422 idempotency_key_reused`), and it claims no key.
async fn a_method_the_route_does_not_serve_is_405_whatever_the_key(backend: Backend) {
    let app = spawn_app(backend).await;
    let ann = app.sign_up("ann@example.com").await;
    let created = app
        .request(Method::POST, "/api/v1/items", Some(&ann.token))
        .header("idempotency-key", "k-1")
        .json(&json!({"name": "Milk", "qty": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let keys = app.count("idempotency_keys").await;
    for (method, key) in [
        (Method::PATCH, "k-1"),
        (Method::PUT, "k-1"),
        (Method::PATCH, "k-2"),
    ] {
        let refused = app
            .request(method.clone(), "/api/v1/items", Some(&ann.token))
            .header("idempotency-key", key)
            .json(&json!({"name": "Milk", "qty": 1}))
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 405, "{method} with {key}");
    }
    assert_eq!(app.count("idempotency_keys").await, keys, "no key claimed");
}
