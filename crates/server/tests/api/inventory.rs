//! Inventory over HTTP: items, guarded deltas, batches, history, concurrency.

use crate::both_backends;
use crate::helpers::*;
use reqwest::Method;
use serde_json::{Value, json};
use std::sync::Arc;

both_backends!(
    creating_an_item_returns_201_with_location_etag_and_a_history_record,
    invalid_items_are_rejected_with_every_field_and_change_nothing,
    names_are_unique_per_organization_ignoring_case,
    items_support_etags_and_conditional_get,
    updates_require_if_match_and_refuse_stale_versions,
    deleting_is_idempotent_and_keeps_the_history,
    a_delta_must_be_an_exact_json_integer,
    deltas_that_would_break_an_invariant_are_rejected_and_change_nothing,
    viewers_read_but_cannot_write_and_other_organizations_see_404,
    batch_adjustments_are_all_or_nothing_and_list_every_failing_line,
    listings_filter_sort_and_paginate,
    concurrent_random_deltas_never_lose_an_update_or_go_negative,
);

async fn creating_an_item_returns_201_with_location_etag_and_a_history_record(backend: Backend) {
    let app = spawn_app(backend).await;
    let ann = app.sign_up("ann@example.com").await;
    let response = app
        .post(
            "/api/v1/items",
            &ann.token,
            &json!({"name": " Milk ", "qty": 3, "sku": "MLK"}),
        )
        .await;
    assert_eq!(response.status(), 201);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    assert_eq!(response.headers()["etag"], "\"v1\"");
    let item: Value = response.json().await.unwrap();
    assert_eq!(
        location,
        format!("/api/v1/items/{}", item["id"].as_str().unwrap())
    );
    assert_eq!(
        (
            item["name"].as_str(),
            item["qty"].as_u64(),
            item["sku"].as_str()
        ),
        (Some("Milk"), Some(3), Some("MLK"))
    );
    assert_eq!(item["created_by"], ann.user_id.as_str());
    let fetched: Value = app.get(&location, &ann.token).await.json().await.unwrap();
    assert_eq!(fetched, item);
    let history: Value = app
        .get(&format!("{location}/history"), &ann.token)
        .await
        .json()
        .await
        .unwrap();
    let record = &history["data"][0];
    assert_eq!(
        (
            record["kind"].as_str(),
            record["delta"].as_i64(),
            record["qty_after"].as_u64()
        ),
        (Some("created"), Some(3), Some(3))
    );
    assert!(record["request_id"].is_string());
    let no_qty: Value = app
        .post("/api/v1/items", &ann.token, &json!({"name": "Eggs"}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(no_qty["qty"], 0);
    assert_eq!(no_qty["sku"], Value::Null);
}

async fn invalid_items_are_rejected_with_every_field_and_change_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    let ann = app.sign_up("ann@example.com").await;
    let before = app.snapshot().await;
    let body = json!({"name": "a\u{0007}b", "sku": ""});
    let problem = assert_problem(
        app.post("/api/v1/items", &ann.token, &body).await,
        400,
        "validation_failed",
    )
    .await;
    let fields: Vec<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["/name", "/sku"]);
    for (body, field, code) in [
        (json!({"name": "x".repeat(201)}), "/name", "too_long"),
        (json!({"name": "   "}), "/name", "empty"),
        (json!({"name": "Milk", "qty": -1}), "/qty", "out_of_range"),
        (json!({"name": "Milk", "qty": 1.5}), "/qty", "invalid_type"),
        (json!({"name": "Milk", "qty": true}), "/qty", "invalid_type"),
        (
            json!({"name": "Milk", "qty": 9007199254740992_u64}),
            "/qty",
            "out_of_range",
        ),
        (
            json!({"name": "Milk", "colour": "white"}),
            "/colour",
            "unknown_field",
        ),
        (json!({"qty": 1}), "/name", "missing_field"),
    ] {
        let problem = assert_problem(
            app.post("/api/v1/items", &ann.token, &body).await,
            400,
            "validation_failed",
        )
        .await;
        assert_eq!(
            (
                problem["errors"][0]["field"].as_str(),
                problem["errors"][0]["code"].as_str()
            ),
            (Some(field), Some(code)),
            "{body}"
        );
    }
    assert_eq!(app.snapshot().await, before);
}

async fn names_are_unique_per_organization_ignoring_case(backend: Backend) {
    let app = spawn_app(backend).await;
    let ann = app.sign_up("ann@example.com").await;
    let bob = app.sign_up("bob@example.com").await;
    app.create_item(&ann.token, "Milk", 1).await;
    let before = app.snapshot().await;
    assert_problem(
        app.post("/api/v1/items", &ann.token, &json!({"name": "mILK"}))
            .await,
        409,
        "name_taken",
    )
    .await;
    assert_eq!(app.snapshot().await, before);
    app.create_item(&bob.token, "milk", 1).await;
}

async fn items_support_etags_and_conditional_get(backend: Backend) {
    let app = spawn_app(backend).await;
    let ann = app.sign_up("ann@example.com").await;
    let item = app.create_item(&ann.token, "Milk", 1).await;
    let path = format!("/api/v1/items/{}", item["id"].as_str().unwrap());
    let response = app
        .request(Method::GET, &path, Some(&ann.token))
        .header("if-none-match", "\"v1\"")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 304);
    app.patch_qty(
        &ann.token,
        item["id"].as_str().unwrap(),
        &json!({"delta": 1}),
        None,
    )
    .await;
    let response = app
        .request(Method::GET, &path, Some(&ann.token))
        .header("if-none-match", "\"v1\"")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["etag"], "\"v2\"");
}

async fn updates_require_if_match_and_refuse_stale_versions(backend: Backend) {
    let app = spawn_app(backend).await;
    let ann = app.sign_up("ann@example.com").await;
    let item = app.create_item(&ann.token, "Milk", 1).await;
    let path = format!("/api/v1/items/{}", item["id"].as_str().unwrap());
    let before = app.snapshot().await;
    let rename = json!({"name": "Oat milk"});
    let response = app
        .send_json(Method::PATCH, &path, Some(&ann.token), &rename)
        .await;
    assert_problem(response, 428, "precondition_required").await;
    let response = app
        .request(Method::PATCH, &path, Some(&ann.token))
        .header("if-match", "\"v9\"")
        .json(&rename)
        .send()
        .await
        .unwrap();
    let problem = assert_problem(response, 412, "precondition_failed").await;
    assert!(problem["detail"].as_str().unwrap().contains("version 1"));
    assert_eq!(app.snapshot().await, before);
    let response = app
        .request(Method::PATCH, &path, Some(&ann.token))
        .header("if-match", "\"v1\"")
        .json(&rename)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["etag"], "\"v2\"");
    let updated: Value = response.json().await.unwrap();
    assert_eq!(updated["name"], "Oat milk");
    let clear = json!({"sku": null});
    let response = app
        .request(Method::PATCH, &path, Some(&ann.token))
        .header("if-match", "*")
        .json(&clear)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

async fn deleting_is_idempotent_and_keeps_the_history(backend: Backend) {
    let app = spawn_app(backend).await;
    let ann = app.sign_up("ann@example.com").await;
    let item = app.create_item(&ann.token, "Milk", 4).await;
    let id = item["id"].as_str().unwrap();
    let path = format!("/api/v1/items/{id}");
    assert_eq!(
        app.request(Method::DELETE, &path, Some(&ann.token))
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    let before = app.snapshot().await;
    assert_eq!(
        app.request(Method::DELETE, &path, Some(&ann.token))
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    assert_eq!(app.snapshot().await, before);
    assert_problem(app.get(&path, &ann.token).await, 404, "not_found").await;
    let history: Value = app
        .get(&format!("{path}/history"), &ann.token)
        .await
        .json()
        .await
        .unwrap();
    let kinds: Vec<&str> = history["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["created", "deleted"]);
    assert_eq!(history["data"][1]["delta"], -4);
}

async fn a_delta_must_be_an_exact_json_integer(backend: Backend) {
    let app = spawn_app(backend).await;
    let ann = app.sign_up("ann@example.com").await;
    let item = app.create_item(&ann.token, "Milk", 5).await;
    let id = item["id"].as_str().unwrap();
    let before = app.snapshot().await;
    for (body, field, code) in [
        (json!({"delta": true}), "/delta", "invalid_type"),
        (json!({"delta": false}), "/delta", "invalid_type"),
        (json!({"delta": 1.0}), "/delta", "invalid_type"),
        (json!({"delta": "1"}), "/delta", "invalid_type"),
        (json!({"delta": null}), "/delta", "invalid_type"),
        (json!({"delta": [1]}), "/delta", "invalid_type"),
        (json!({}), "/delta", "missing_field"),
        (json!({"delta": 1, "note": "x"}), "/note", "unknown_field"),
        (json!({"delta": 0}), "/delta", "invalid_value"),
        (
            json!({"delta": 9007199254740992_i64}),
            "/delta",
            "out_of_range",
        ),
        (
            json!({"delta": -9007199254740992_i64}),
            "/delta",
            "out_of_range",
        ),
    ] {
        let problem = assert_problem(
            app.patch_qty(&ann.token, id, &body, None).await,
            400,
            "validation_failed",
        )
        .await;
        let error = &problem["errors"][0];
        assert_eq!(
            (error["field"].as_str(), error["code"].as_str()),
            (Some(field), Some(code)),
            "{body}"
        );
    }
    let response = app
        .request(
            Method::PATCH,
            &format!("/api/v1/items/{id}/qty"),
            Some(&ann.token),
        )
        .header("content-type", "application/json")
        .body("{\"delta\": 1e0}")
        .send()
        .await
        .unwrap();
    assert_problem(response, 400, "validation_failed").await;
    assert_eq!(
        app.snapshot().await,
        before,
        "no rejected delta changed anything"
    );
    let item: Value = app
        .get(&format!("/api/v1/items/{id}"), &ann.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(item["qty"], 5);
}

async fn deltas_that_would_break_an_invariant_are_rejected_and_change_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    let ann = app.sign_up("ann@example.com").await;
    let item = app.create_item(&ann.token, "Milk", 1).await;
    let id = item["id"].as_str().unwrap();
    let before = app.snapshot().await;
    let problem = assert_problem(
        app.patch_qty(&ann.token, id, &json!({"delta": -2}), None)
            .await,
        400,
        "insufficient_quantity",
    )
    .await;
    assert!(
        problem["detail"].as_str().unwrap().contains("has qty 1"),
        "{problem}"
    );
    let full = app.create_item(&ann.token, "Full", 9007199254740991).await;
    let before_full = app.snapshot().await;
    let overflow = app
        .patch_qty(
            &ann.token,
            full["id"].as_str().unwrap(),
            &json!({"delta": 1}),
            None,
        )
        .await;
    assert_problem(overflow, 400, "quantity_overflow").await;
    assert_eq!(app.snapshot().await, before_full);
    let unknown = uuid::Uuid::now_v7().to_string();
    assert_problem(
        app.patch_qty(&ann.token, &unknown, &json!({"delta": 1}), None)
            .await,
        404,
        "not_found",
    )
    .await;
    let ok: Value = app
        .patch_qty(&ann.token, id, &json!({"delta": -1}), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(ok["qty"], 0);
    assert_ne!(
        app.snapshot().await,
        before,
        "the accepted delta did change state"
    );
}

async fn viewers_read_but_cannot_write_and_other_organizations_see_404(backend: Backend) {
    let app = spawn_app(backend).await;
    let ann = app.sign_up("ann@example.com").await;
    let viewer = app.sign_up("viewer@example.com").await;
    let stranger = app.sign_up("stranger@example.com").await;
    let viewer_token = app.add_member(&ann, &viewer, "viewer").await;
    let item = app.create_item(&ann.token, "Milk", 5).await;
    let id = item["id"].as_str().unwrap();
    let before = app.snapshot().await;
    assert_eq!(
        app.get(&format!("/api/v1/items/{id}"), &viewer_token)
            .await
            .status(),
        200
    );
    assert_problem(
        app.patch_qty(&viewer_token, id, &json!({"delta": -1}), None)
            .await,
        403,
        "insufficient_role",
    )
    .await;
    assert_problem(
        app.post("/api/v1/items", &viewer_token, &json!({"name": "X"}))
            .await,
        403,
        "insufficient_role",
    )
    .await;
    assert_problem(
        app.patch_qty(&stranger.token, id, &json!({"delta": -1}), None)
            .await,
        404,
        "not_found",
    )
    .await;
    assert_problem(
        app.get(&format!("/api/v1/items/{id}"), &stranger.token)
            .await,
        404,
        "not_found",
    )
    .await;
    assert_problem(
        app.get(&format!("/api/v1/items/{id}/history"), &stranger.token)
            .await,
        404,
        "not_found",
    )
    .await;
    let delete = app
        .request(
            Method::DELETE,
            &format!("/api/v1/items/{id}"),
            Some(&stranger.token),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        delete.status(),
        204,
        "deleting what you cannot see is a no-op"
    );
    assert_eq!(app.snapshot().await, before);
    let list: Value = app
        .get("/api/v1/items", &stranger.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["data"].as_array().unwrap().len(), 0);
}

async fn batch_adjustments_are_all_or_nothing_and_list_every_failing_line(backend: Backend) {
    let app = spawn_app(backend).await;
    let ann = app.sign_up("ann@example.com").await;
    let milk = app.create_item(&ann.token, "Milk", 2).await;
    let eggs = app.create_item(&ann.token, "Eggs", 0).await;
    let (m, e) = (milk["id"].as_str().unwrap(), eggs["id"].as_str().unwrap());
    let before = app.snapshot().await;
    let body = json!({"reason": "stocktake", "adjustments": [
        {"item_id": m, "delta": -1},
        {"item_id": e, "delta": -1},
        {"item_id": uuid::Uuid::now_v7(), "delta": 3},
        {"item_id": m, "delta": -5},
    ]});
    let problem = assert_problem(
        app.post("/api/v1/inventory/adjustments", &ann.token, &body)
            .await,
        400,
        "adjustments_rejected",
    )
    .await;
    let errors: Vec<(String, String)> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["field"].as_str().unwrap().to_owned(),
                e["code"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        errors,
        [
            (
                "/adjustments/1/delta".to_owned(),
                "insufficient_quantity".to_owned()
            ),
            ("/adjustments/2/item_id".to_owned(), "not_found".to_owned()),
            (
                "/adjustments/3/delta".to_owned(),
                "insufficient_quantity".to_owned()
            ),
        ]
    );
    assert_eq!(app.snapshot().await, before, "nothing applied");
    for bad in [
        json!({"adjustments": []}),
        json!({"adjustments": vec![json!({"item_id": m, "delta": 1}); 101]}),
    ] {
        assert_problem(
            app.post("/api/v1/inventory/adjustments", &ann.token, &bad)
                .await,
            400,
            "validation_failed",
        )
        .await;
    }
    let body = json!({"reason": "delivery", "adjustments": [{"item_id": m, "delta": 3}, {"item_id": e, "delta": 2}, {"item_id": m, "delta": -1}]});
    let response = app
        .post("/api/v1/inventory/adjustments", &ann.token, &body)
        .await;
    assert_eq!(response.status(), 200);
    let result: Value = response.json().await.unwrap();
    let qtys: Vec<u64> = result["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["qty"].as_u64().unwrap())
        .collect();
    assert_eq!(qtys, [4, 2]);
    let all: Value = app
        .get(&format!("/api/v1/items/{m}/history"), &ann.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(all["data"].as_array().unwrap().len(), 3);
    assert_eq!(all["data"][2]["reason"], "delivery");
}

async fn listings_filter_sort_and_paginate(backend: Backend) {
    let app = spawn_app(backend).await;
    let ann = app.sign_up("ann@example.com").await;
    for (name, qty) in [
        ("Milk", 5),
        ("oat milk", 1),
        ("Eggs", 12),
        ("Bread", 0),
        ("Milkshake", 7),
    ] {
        app.create_item(&ann.token, name, qty).await;
    }
    let names = |v: &Value| -> Vec<String> {
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let milk: Value = app
        .get("/api/v1/items?q=MILK&sort=name", &ann.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(names(&milk), ["Milk", "Milkshake", "oat milk"]);
    let ranged: Value = app
        .get("/api/v1/items?min_qty=1&max_qty=7&sort=-qty", &ann.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(names(&ranged), ["Milkshake", "Milk", "oat milk"]);
    let mut walked = Vec::new();
    let mut path = "/api/v1/items?sort=-name&limit=2".to_owned();
    loop {
        let page: Value = app.get(&path, &ann.token).await.json().await.unwrap();
        walked.extend(names(&page));
        match page["next_cursor"].as_str() {
            Some(c) => path = format!("/api/v1/items?sort=-name&limit=2&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(walked, ["oat milk", "Milkshake", "Milk", "Eggs", "Bread"]);
    let first: Value = app
        .get("/api/v1/items?sort=qty&limit=1", &ann.token)
        .await
        .json()
        .await
        .unwrap();
    let cursor = first["next_cursor"].as_str().unwrap();
    let mixed = app
        .get(
            &format!("/api/v1/items?sort=name&cursor={cursor}"),
            &ann.token,
        )
        .await;
    assert_problem(mixed, 400, "invalid_cursor").await;
    // Cursors are base64 JSON: a tampered key of the wrong type or out of range is a 400 on
    // both backends (PostgreSQL would fail comparing bigint to text, or on the timestamp).
    let id = uuid::Uuid::nil();
    for (sort, cursor) in [
        ("qty", json!({"sort": "QtyAsc", "key": "x", "id": id})),
        ("-qty", json!({"sort": "QtyDesc", "key": -1, "id": id})),
        ("name", json!({"sort": "NameAsc", "key": 5, "id": id})),
        (
            "name",
            json!({"sort": "NameAsc", "key": "a\u{0}", "id": id}),
        ),
        (
            "created_at",
            json!({"sort": "CreatedAsc", "key": i64::MAX, "id": id}),
        ),
        (
            "-created_at",
            json!({"sort": "CreatedDesc", "key": "2026", "id": id}),
        ),
    ] {
        use base64::Engine as _;
        let cursor = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(cursor.to_string());
        let tampered = app
            .get(
                &format!("/api/v1/items?sort={sort}&cursor={cursor}"),
                &ann.token,
            )
            .await;
        assert_problem(tampered, 400, "invalid_cursor").await;
    }
    let item = app.create_item(&ann.token, "Cursor probe", 1).await;
    let history = app
        .get(
            &format!(
                "/api/v1/items/{}/history?cursor={}",
                item["id"].as_str().unwrap(),
                {
                    use base64::Engine as _;
                    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(u64::MAX.to_string())
                }
            ),
            &ann.token,
        )
        .await;
    assert_problem(history, 400, "invalid_cursor").await;
    for bad in [
        "sort=colour",
        "min_qty=5&max_qty=1",
        "min_qty=-1",
        "limit=500",
        "unknown=1",
    ] {
        assert_problem(
            app.get(&format!("/api/v1/items?{bad}"), &ann.token).await,
            400,
            "validation_failed",
        )
        .await;
    }
}

/// 64 tasks × 200 random deltas against a few items with small stock.
async fn concurrent_random_deltas_never_lose_an_update_or_go_negative(backend: Backend) {
    let app = Arc::new(spawn_app(backend).await);
    let ann = app.sign_up("ann@example.com").await;
    let mut items = Vec::new();
    for (name, qty) in [("A", 3), ("B", 0), ("C", 10)] {
        let item = app.create_item(&ann.token, name, qty).await;
        items.push((item["id"].as_str().unwrap().to_owned(), qty as i64));
    }
    let items = Arc::new(items);
    let mut tasks = Vec::new();
    for t in 0..64u64 {
        let app = app.clone();
        let token = ann.token.clone();
        let items = items.clone();
        tasks.push(tokio::spawn(async move {
            let mut accepted: Vec<(usize, i64)> = Vec::new();
            let mut rejected = 0;
            let mut rng = t.wrapping_mul(0x9E3779B97F4A7C15) | 1;
            for _ in 0..200 {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let index = (rng % items.len() as u64) as usize;
                let delta = ((rng >> 8) % 7) as i64 - 3;
                let delta = if delta == 0 { 2 } else { delta };
                let response = app
                    .patch_qty(&token, &items[index].0, &json!({"delta": delta}), None)
                    .await;
                match response.status().as_u16() {
                    200 => accepted.push((index, delta)),
                    400 => {
                        let body: Value = response.json().await.unwrap();
                        assert_eq!(body["code"], "insufficient_quantity");
                        rejected += 1;
                    }
                    other => panic!(
                        "unexpected status {other}: {}",
                        response.text().await.unwrap()
                    ),
                }
            }
            (accepted, rejected)
        }));
    }
    let mut accepted = Vec::new();
    for t in tasks {
        accepted.extend(t.await.unwrap().0);
    }
    for (index, (id, initial)) in items.iter().enumerate() {
        let sum: i64 = accepted
            .iter()
            .filter(|(i, _)| *i == index)
            .map(|(_, d)| d)
            .sum();
        let count = accepted.iter().filter(|(i, _)| *i == index).count() as i64;
        let item: Value = app
            .get(&format!("/api/v1/items/{id}"), &ann.token)
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(
            item["qty"].as_i64().unwrap(),
            initial + sum,
            "no lost update on {id}"
        );
        assert_eq!(item["version"].as_i64().unwrap(), 1 + count);
    }
    let changes = app
        .scalar("SELECT count(*) FROM item_history WHERE kind = 'qty_changed'")
        .await;
    assert_eq!(
        changes,
        accepted.len() as i64,
        "one audit record per accepted delta"
    );
    assert_eq!(
        app.scalar("SELECT count(*) FROM item_history WHERE qty_after < 0")
            .await,
        0
    );
    let events = app
        .scalar("SELECT count(*) FROM outbox WHERE event_type = 'inventory.item.qty_changed'")
        .await;
    assert_eq!(
        events,
        accepted.len() as i64,
        "one event per accepted delta"
    );
}

/// Two instances on one PostgreSQL, each combining its own requests: keyed deltas, batch
/// adjustments crossing the same items, and retries of every key on the other instance. No
/// deadlock, no lost or doubled update, never negative; the guarded database is the authority.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set TRUELINE_TEST_POSTGRES_URL and run with --ignored"]
async fn two_instances_combine_deltas_on_one_postgres_without_losing_or_doubling_any() {
    let first = Arc::new(spawn_app(Backend::Postgres).await);
    let second = Arc::new(spawn_second_instance(&first).await);
    let ann = first.sign_up("ann@example.com").await;
    let mut items = Vec::new();
    for (name, qty) in [("A", 5), ("B", 0), ("C", 20)] {
        let item = first.create_item(&ann.token, name, qty).await;
        items.push((item["id"].as_str().unwrap().to_owned(), qty as i64));
    }
    let items = Arc::new(items);
    let mut tasks = Vec::new();
    for t in 0..48u64 {
        let (here, there) = if t % 2 == 0 {
            (first.clone(), second.clone())
        } else {
            (second.clone(), first.clone())
        };
        let token = ann.token.clone();
        let items = items.clone();
        tasks.push(tokio::spawn(async move {
            let mut accepted: Vec<(usize, i64)> = Vec::new();
            let mut rng = (t + 1).wrapping_mul(0x9E3779B97F4A7C15) | 1;
            for n in 0..60 {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let index = (rng % 3) as usize;
                let delta = ((rng >> 8) % 7) as i64 - 3;
                let delta = if delta == 0 { 2 } else { delta };
                if n % 10 == 9 {
                    // A batch across two items (the non-combined path, rows in id order).
                    let other = (index + 1) % 3;
                    let lines = json!({"adjustments": [
                        {"item_id": items[index].0, "delta": delta},
                        {"item_id": items[other].0, "delta": -delta},
                    ]});
                    let response = here
                        .post("/api/v1/inventory/adjustments", &token, &lines)
                        .await;
                    match response.status().as_u16() {
                        200 => accepted.extend([(index, delta), (other, -delta)]),
                        400 => {
                            let body: Value = response.json().await.unwrap();
                            assert_eq!(body["code"], "adjustments_rejected");
                        }
                        other => panic!("batch: {other}: {}", response.text().await.unwrap()),
                    }
                    continue;
                }
                let key = format!("t{t}-n{n}");
                let body = json!({"delta": delta});
                let response = here
                    .patch_qty(&token, &items[index].0, &body, Some(&key))
                    .await;
                let status = response.status().as_u16();
                let first_body: Value = response.json().await.unwrap();
                // The retry on the other instance replays the stored outcome exactly.
                let retry = there
                    .patch_qty(&token, &items[index].0, &body, Some(&key))
                    .await;
                match status {
                    200 => {
                        assert_eq!(retry.status(), 200);
                        let replayed: Value = retry.json().await.unwrap();
                        assert_eq!(replayed, first_body, "a replay, not a second delta");
                        accepted.push((index, delta));
                    }
                    400 => {
                        assert_eq!(first_body["code"], "insufficient_quantity");
                        // Nothing was stored for a refused request: the retry is new and
                        // may apply now; count it if it did.
                        if retry.status() == 200 {
                            accepted.push((index, delta));
                        }
                    }
                    other => panic!("delta: {other}: {first_body}"),
                }
            }
            accepted
        }));
    }
    let mut accepted = Vec::new();
    for t in tasks {
        accepted.extend(t.await.unwrap());
    }
    for (index, (id, initial)) in items.iter().enumerate() {
        let sum: i64 = accepted
            .iter()
            .filter(|(i, _)| *i == index)
            .map(|(_, d)| d)
            .sum();
        let item: Value = first
            .get(&format!("/api/v1/items/{id}"), &ann.token)
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(item["qty"].as_i64().unwrap(), initial + sum, "{id}");
    }
    assert_eq!(
        first
            .scalar("SELECT count(*) FROM item_history WHERE kind = 'qty_changed'")
            .await,
        accepted.len() as i64,
        "one audit record per accepted change"
    );
    assert_eq!(
        first
            .scalar("SELECT count(*) FROM item_history WHERE qty_after < 0")
            .await,
        0
    );
}
