//! The Events API over HTTP: the file engine (SQLite runs) and PostgreSQL (PostgreSQL runs).

use crate::both_backends;
use crate::helpers::*;
use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;

both_backends!(
    a_single_append_returns_its_position_and_a_client_id_makes_it_idempotent,
    expected_versions_guard_concurrent_writers,
    a_batch_appends_atomically_to_one_stream,
    events_are_read_by_id_only_within_the_organization,
    catch_up_reads_are_gapless_filtered_and_paginated,
    streams_are_read_forward_and_backward,
    subscriptions_catch_up_then_go_live_and_resume_with_last_event_id,
    subscriptions_refuse_a_last_event_id_the_server_never_sent,
    subscriptions_end_once_their_token_is_revoked_or_expired,
    an_organization_holds_a_bounded_number_of_subscriptions,
    stats_report_the_organization_and_the_storage,
    invalid_events_are_rejected_and_write_nothing,
    viewers_may_read_events_but_not_append,
    resuming_past_the_last_position_is_refused,
    pages_of_large_events_stop_at_a_byte_budget_and_go_on_by_cursor,
    admin_only_events_are_left_out_for_members_and_viewers,
    an_idempotency_key_names_the_events_of_an_append,
);

/// An app whose outbox relay is off, so the event log holds only what the test appends.
async fn quiet_app(backend: Backend) -> TestApp {
    spawn_app_with(
        backend,
        |c| c.outbox.relay_enabled = false,
        axum::Router::new(),
    )
    .await
}

async fn append(app: &TestApp, token: &str, body: Value) -> reqwest::Response {
    app.post("/api/v1/events", token, &body).await
}

async fn a_single_append_returns_its_position_and_a_client_id_makes_it_idempotent(
    backend: Backend,
) {
    let app = quiet_app(backend).await;
    let ann = app.sign_up("ann@example.com").await;
    let response = append(
        &app,
        &ann.token,
        json!({"type": "order.placed", "data": {"total": 12.5, "note": "héllo 👋"}}),
    )
    .await;
    assert_eq!(response.status(), 201);
    let first: Value = response.json().await.unwrap();
    assert_eq!(
        (
            first["position"].as_u64(),
            first["stream"].as_str(),
            first["stream_version"].as_u64()
        ),
        (Some(1), Some("default"), Some(1))
    );
    let id = uuid::Uuid::now_v7();
    let body =
        json!({"id": id, "type": "order.paid", "stream": "order-1", "data": [1, "two", null]});
    let created: Value = append(&app, &ann.token, body.clone())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(created["position"], 2);
    let again = append(&app, &ann.token, body.clone()).await;
    assert_eq!(
        again.status(),
        200,
        "same id and content: the original position"
    );
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["position"], 2);
    let mut changed = body.clone();
    changed["data"] = json!("different");
    assert_problem(
        append(&app, &ann.token, changed).await,
        409,
        "event_id_conflict",
    )
    .await;
    let event: Value = app
        .get(&format!("/api/v1/events/{id}"), &ann.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(event["data"], json!([1, "two", null]));
    assert_eq!(event["type"], "order.paid");
    let stats: Value = app
        .get("/api/v1/stats", &ann.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(stats["organization"]["last_position"], 2);
}

async fn expected_versions_guard_concurrent_writers(backend: Backend) {
    let app = quiet_app(backend).await;
    let ann = app.sign_up("ann@example.com").await;
    let body =
        |v: Value| json!({"type": "t", "stream": "acct-1", "data": 1, "expected_version": v});
    assert_eq!(
        append(&app, &ann.token, body(json!("no_stream")))
            .await
            .status(),
        201
    );
    let problem = assert_problem(
        append(&app, &ann.token, body(json!("no_stream"))).await,
        409,
        "wrong_expected_version",
    )
    .await;
    assert_eq!(problem["current_version"], 1);
    assert_problem(
        append(&app, &ann.token, body(json!(0))).await,
        409,
        "wrong_expected_version",
    )
    .await;
    assert_eq!(append(&app, &ann.token, body(json!(1))).await.status(), 201);
    assert_eq!(
        append(&app, &ann.token, body(json!("any"))).await.status(),
        201
    );
    for bad in [json!(-1), json!("sometimes"), json!(1.5), json!(true)] {
        assert_problem(
            append(&app, &ann.token, body(bad)).await,
            400,
            "validation_failed",
        )
        .await;
    }
    let stream: Value = app
        .get("/api/v1/streams/acct-1", &ann.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(stream["data"].as_array().unwrap().len(), 3);
}

async fn a_batch_appends_atomically_to_one_stream(backend: Backend) {
    let app = quiet_app(backend).await;
    let ann = app.sign_up("ann@example.com").await;
    let events: Vec<Value> = (0..5)
        .map(|i| json!({"type": "line", "data": {"i": i}}))
        .collect();
    let response = app
        .post(
            "/api/v1/streams/cart-9/events",
            &ann.token,
            &json!({"events": events}),
        )
        .await;
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    let versions: Vec<u64> = body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["stream_version"].as_u64().unwrap())
        .collect();
    assert_eq!(versions, [1, 2, 3, 4, 5]);
    let stale = json!({"expected_version": 2, "events": [{"type": "line", "data": 1}]});
    assert_problem(
        app.post("/api/v1/streams/cart-9/events", &ann.token, &stale)
            .await,
        409,
        "wrong_expected_version",
    )
    .await;
    assert_problem(
        app.post(
            "/api/v1/streams/cart-9/events",
            &ann.token,
            &json!({"events": []}),
        )
        .await,
        400,
        "validation_failed",
    )
    .await;
    let many: Vec<Value> = (0..1001).map(|_| json!({"type": "x", "data": 0})).collect();
    assert_problem(
        app.post(
            "/api/v1/streams/cart-9/events",
            &ann.token,
            &json!({"events": many}),
        )
        .await,
        400,
        "validation_failed",
    )
    .await;
    let stats: Value = app
        .get("/api/v1/stats", &ann.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        stats["organization"]["events"], 5,
        "refused batches wrote nothing"
    );
}

async fn events_are_read_by_id_only_within_the_organization(backend: Backend) {
    let app = quiet_app(backend).await;
    let ann = app.sign_up("ann@example.com").await;
    let bob = app.sign_up("bob@example.com").await;
    let created: Value = append(&app, &ann.token, json!({"type": "t", "data": {}}))
        .await
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap();
    assert_eq!(
        app.get(&format!("/api/v1/events/{id}"), &ann.token)
            .await
            .status(),
        200
    );
    assert_problem(
        app.get(&format!("/api/v1/events/{id}"), &bob.token).await,
        404,
        "not_found",
    )
    .await;
    assert_problem(
        app.get(
            &format!("/api/v1/events/{}", uuid::Uuid::now_v7()),
            &ann.token,
        )
        .await,
        404,
        "not_found",
    )
    .await;
    let bobs: Value = app
        .get("/api/v1/events", &bob.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(bobs["data"].as_array().unwrap().len(), 0);
}

async fn catch_up_reads_are_gapless_filtered_and_paginated(backend: Backend) {
    let app = quiet_app(backend).await;
    let ann = app.sign_up("ann@example.com").await;
    for i in 0..7 {
        let kind = if i % 2 == 0 { "even" } else { "odd" };
        append(
            &app,
            &ann.token,
            json!({"type": kind, "stream": format!("s{}", i % 3), "data": i}),
        )
        .await;
    }
    let mut positions = Vec::new();
    let mut path = "/api/v1/events?limit=3".to_owned();
    loop {
        let page: Value = app.get(&path, &ann.token).await.json().await.unwrap();
        positions.extend(
            page["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["position"].as_u64().unwrap()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => path = format!("/api/v1/events?limit=3&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(positions, (1..=7).collect::<Vec<_>>());
    let after: Value = app
        .get("/api/v1/events?after=5", &ann.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(after["data"].as_array().unwrap().len(), 2);
    let odd: Value = app
        .get("/api/v1/events?type=odd", &ann.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(odd["data"].as_array().unwrap().len(), 3);
    let s0: Value = app
        .get("/api/v1/events?stream=s0", &ann.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(s0["data"].as_array().unwrap().len(), 3);
    assert_problem(
        app.get("/api/v1/events?limit=0", &ann.token).await,
        400,
        "validation_failed",
    )
    .await;
    for cursor in ["abc", "9007199254740992"] {
        assert_problem(
            app.get(&format!("/api/v1/events?cursor={cursor}"), &ann.token)
                .await,
            400,
            "invalid_cursor",
        )
        .await;
    }
    // A NUL (which PostgreSQL text cannot hold) or another control character in a name is
    // a 400 on both backends.
    for path in [
        "/api/v1/events?type=a%00b",
        "/api/v1/events?stream=%00",
        "/api/v1/events?stream=",
        "/api/v1/streams/a%00b",
        "/api/v1/streams/a%0Ab",
    ] {
        assert_problem(app.get(path, &ann.token).await, 400, "validation_failed").await;
    }
}

async fn streams_are_read_forward_and_backward(backend: Backend) {
    let app = quiet_app(backend).await;
    let ann = app.sign_up("ann@example.com").await;
    let events: Vec<Value> = (1..=5).map(|i| json!({"type": "t", "data": i})).collect();
    app.post(
        "/api/v1/streams/s/events",
        &ann.token,
        &json!({"events": events}),
    )
    .await;
    let versions = |v: &Value| -> Vec<u64> {
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["stream_version"].as_u64().unwrap())
            .collect()
    };
    let forward: Value = app
        .get("/api/v1/streams/s?from=2&limit=2", &ann.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(versions(&forward), [2, 3]);
    assert_eq!(forward["next_cursor"], "4");
    let backward: Value = app
        .get("/api/v1/streams/s?direction=backward&limit=2", &ann.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(versions(&backward), [5, 4]);
    let next: Value = app
        .get(
            &format!(
                "/api/v1/streams/s?direction=backward&cursor={}",
                backward["next_cursor"].as_str().unwrap()
            ),
            &ann.token,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(versions(&next), [3, 2, 1]);
    let none: Value = app
        .get("/api/v1/streams/nothing", &ann.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(none["data"].as_array().unwrap().len(), 0);
    assert_problem(
        app.get("/api/v1/streams/s?direction=sideways", &ann.token)
            .await,
        400,
        "validation_failed",
    )
    .await;
}

/// Reads SSE messages until `count` `data:` lines arrived; returns (id, data) pairs.
async fn read_sse(response: &mut reqwest::Response, count: usize) -> Vec<(u64, Value)> {
    let mut buffer = String::new();
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while out.len() < count {
        let chunk = tokio::time::timeout_at(deadline, response.chunk())
            .await
            .expect("SSE in time")
            .unwrap()
            .expect("open");
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let message: String = buffer.drain(..end + 2).collect();
            let id = message
                .lines()
                .find_map(|l| l.strip_prefix("id:"))
                .map(|v| v.trim().parse().unwrap());
            let data = message
                .lines()
                .find_map(|l| l.strip_prefix("data:"))
                .map(|v| serde_json::from_str(v.trim()).unwrap());
            if let (Some(id), Some(data)) = (id, data) {
                out.push((id, data));
            }
        }
    }
    out
}

async fn subscriptions_catch_up_then_go_live_and_resume_with_last_event_id(backend: Backend) {
    let app = quiet_app(backend).await;
    let ann = app.sign_up("ann@example.com").await;
    for i in 0..3 {
        append(&app, &ann.token, json!({"type": "t", "data": i})).await;
    }
    let mut response = app
        .request(
            Method::GET,
            "/api/v1/events/subscribe?after=1",
            Some(&ann.token),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let caught_up = read_sse(&mut response, 2).await;
    assert_eq!(
        caught_up.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        [2, 3]
    );
    append(&app, &ann.token, json!({"type": "live", "data": "now"})).await;
    let live = read_sse(&mut response, 1).await;
    assert_eq!((live[0].0, live[0].1["data"].clone()), (4, json!("now")));
    drop(response);
    let mut resumed = app
        .request(Method::GET, "/api/v1/events/subscribe", Some(&ann.token))
        .header("last-event-id", "3")
        .send()
        .await
        .unwrap();
    let again = read_sse(&mut resumed, 1).await;
    assert_eq!(
        again[0].0, 4,
        "Last-Event-ID resumes right after what was seen"
    );
}

async fn subscriptions_refuse_a_last_event_id_the_server_never_sent(backend: Backend) {
    let app = quiet_app(backend).await;
    let ann = app.sign_up("ann@example.com").await;
    append(&app, &ann.token, json!({"type": "t", "data": 1})).await;
    for (value, code) in [
        ("abc", "invalid_value"),
        ("-1", "invalid_value"),
        ("0", "invalid_value"),
        ("+1", "invalid_value"),
        ("1.5", "invalid_value"),
        ("18446744073709551615", "out_of_range"),
        ("9007199254740992", "out_of_range"),
    ] {
        let response = app
            .request(Method::GET, "/api/v1/events/subscribe", Some(&ann.token))
            .header("last-event-id", value)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "Last-Event-ID {value}");
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["code"], "validation_failed", "{value}");
        assert_eq!(problem["errors"][0]["field"], "/header/last-event-id");
        assert_eq!(problem["errors"][0]["code"], code, "{value}");
    }
    // An empty one is no resume point: `after` (here: none) decides.
    let mut response = app
        .request(Method::GET, "/api/v1/events/subscribe", Some(&ann.token))
        .header("last-event-id", " ")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(read_sse(&mut response, 1).await[0].0, 1);
}

/// Reads until the server ends the stream; panics if it is still open after 10 s.
async fn wait_for_the_end(response: &mut reqwest::Response) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let chunk = tokio::time::timeout_at(deadline, response.chunk())
            .await
            .expect("the server ends the stream in time");
        match chunk {
            Ok(Some(_)) => continue,
            Ok(None) | Err(_) => return,
        }
    }
}

async fn subscriptions_end_once_their_token_is_revoked_or_expired(backend: Backend) {
    let app = quiet_app(backend).await;
    let ann = app.sign_up("ann@example.com").await;
    append(&app, &ann.token, json!({"type": "t", "data": 1})).await;
    let open = || async {
        let mut response = app
            .request(Method::GET, "/api/v1/events/subscribe", Some(&ann.token))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(read_sse(&mut response, 1).await[0].0, 1);
        response
    };

    // Expired: once the server's clock is past the token's expiry, the next check ends it.
    let mut subscription = open().await;
    app.clock.advance(time::Duration::days(30));
    wait_for_the_end(&mut subscription).await;
    assert_problem(
        app.request(Method::GET, "/api/v1/events/subscribe", Some(&ann.token))
            .send()
            .await
            .unwrap(),
        401,
        "token_expired",
    )
    .await;
    app.clock.advance(time::Duration::days(-30));

    // Revoked (e.g. from another session): a check at most 30 s later ends it.
    let mut subscription = open().await;
    let revoked = app
        .request(
            Method::DELETE,
            "/api/v1/auth/tokens/current",
            Some(&ann.token),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 204);
    // Within the recheck interval the open stream goes on (one lookup per 30 s, not per read).
    append_as_someone_else(&app, &ann).await;
    assert_eq!(read_sse(&mut subscription, 1).await[0].0, 2);
    app.clock.advance(time::Duration::seconds(31));
    wait_for_the_end(&mut subscription).await;
    assert_problem(
        app.request(Method::GET, "/api/v1/events/subscribe", Some(&ann.token))
            .send()
            .await
            .unwrap(),
        401,
        "invalid_token",
    )
    .await;
}

async fn an_organization_holds_a_bounded_number_of_subscriptions(backend: Backend) {
    let app = spawn_app_with(
        backend,
        |c| {
            c.outbox.relay_enabled = false;
            c.events.subscriptions_per_org = 2;
        },
        axum::Router::new(),
    )
    .await;
    let ann = app.sign_up("ann@example.com").await;
    let bob = app.sign_up("bob@example.com").await;
    let open = |token: &str| {
        app.request(Method::GET, "/api/v1/events/subscribe", Some(token))
            .send()
    };
    let first = open(&ann.token).await.unwrap();
    let second = open(&ann.token).await.unwrap();
    assert_eq!(
        (first.status().as_u16(), second.status().as_u16()),
        (200, 200)
    );
    let third = open(&ann.token).await.unwrap();
    assert!(third.headers().contains_key("retry-after"));
    assert_problem(third, 429, "too_many_subscriptions").await;
    // Another organization's are its own.
    assert_eq!(open(&bob.token).await.unwrap().status(), 200);
    // A closed one gives its place back (once the server notices the client is gone).
    drop(first);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let again = open(&ann.token).await.unwrap();
        if again.status() == 200 {
            break;
        }
        assert_eq!(again.status(), 429);
        assert!(
            std::time::Instant::now() < deadline,
            "the place never came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(second);
}

/// A live subscriber that falls behind by more than retention keeps: its stream ends once it
/// reaches what was dropped (the reconnect is the 410), instead of jumping over it. The
/// client stops reading after the first event, so the server's writes stall on the socket
/// while ~70 MB of events go by and retention keeps only the last few MiB.
#[tokio::test]
async fn a_live_subscription_that_falls_behind_retention_ends_rather_than_skips() {
    let app = spawn_app_with(
        Backend::Sqlite,
        |c| {
            c.outbox.relay_enabled = false;
            c.events.segment_size_bytes = 2 * 1024 * 1024;
            c.events.retention_max_bytes = 4 * 1024 * 1024;
        },
        axum::Router::new(),
    )
    .await;
    let ann = app.sign_up("ann@example.com").await;
    append(&app, &ann.token, json!({"type": "t", "data": 0})).await;
    let mut subscription = app
        .request(Method::GET, "/api/v1/events/subscribe", Some(&ann.token))
        .send()
        .await
        .unwrap();
    assert_eq!(read_sse(&mut subscription, 1).await[0].0, 1);
    let big = "x".repeat(900 * 1024);
    for i in 0..80 {
        let body = json!({"type": "t", "data": big, "metadata": {"i": i}});
        assert_eq!(append(&app, &ann.token, body).await.status(), 201);
    }
    // Everything the subscriber gets is consecutive, and the stream ends before the end.
    let mut ids = vec![1];
    let mut buffer = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let chunk = tokio::time::timeout_at(deadline, subscription.chunk())
            .await
            .expect("the server ends the stream in time");
        match chunk {
            Ok(Some(bytes)) => buffer.extend_from_slice(&bytes),
            Ok(None) | Err(_) => break,
        }
        while let Some(end) = buffer.windows(2).position(|w| w == b"\n\n") {
            let message: Vec<u8> = buffer.drain(..end + 2).collect();
            let text = String::from_utf8_lossy(&message);
            if let Some(id) = text.lines().find_map(|l| l.strip_prefix("id:")) {
                ids.push(id.trim().parse::<u64>().unwrap());
            }
        }
    }
    let last = *ids.last().unwrap();
    assert_eq!(ids, (1..=last).collect::<Vec<_>>(), "no event skipped");
    assert!(last < 81, "the stream ended at the gap (last sent: {last})");
    let resumed = app
        .request(Method::GET, "/api/v1/events/subscribe", Some(&ann.token))
        .header("last-event-id", last.to_string())
        .send()
        .await
        .unwrap();
    assert_problem(resumed, 410, "events_dropped").await;
}

/// Retention (embedded log) dropped the oldest events: reading or subscribing after a
/// position whose next events are gone is `410 events_dropped`, not a silent skip; from the
/// start, reads begin at the oldest kept event.
#[tokio::test]
async fn resuming_after_events_retention_dropped_is_410() {
    let app = spawn_app_with(
        Backend::Sqlite,
        |c| {
            c.outbox.relay_enabled = false;
            c.events.segment_size_bytes = 4096;
            c.events.retention_max_bytes = 4096;
        },
        axum::Router::new(),
    )
    .await;
    let ann = app.sign_up("ann@example.com").await;
    for i in 0..60 {
        let body = json!({"type": "t", "data": "x".repeat(200), "metadata": {"i": i}});
        assert_eq!(append(&app, &ann.token, body).await.status(), 201);
    }
    let page: Value = app
        .get("/api/v1/events?limit=1", &ann.token)
        .await
        .json()
        .await
        .unwrap();
    let oldest = page["data"][0]["position"].as_u64().unwrap();
    assert!(
        oldest > 2,
        "retention dropped the first segments (oldest kept: {oldest})"
    );
    for path in [
        "/api/v1/events?after=1".to_owned(),
        "/api/v1/events?after=1&type=t".to_owned(),
    ] {
        let response = app.get(&path, &ann.token).await;
        assert_problem(response, 410, "events_dropped").await;
    }
    let resumed = app
        .request(Method::GET, "/api/v1/events/subscribe", Some(&ann.token))
        .header("last-event-id", "1")
        .send()
        .await
        .unwrap();
    assert_problem(resumed, 410, "events_dropped").await;
    // A subscription from the start begins at the oldest kept event.
    for query in ["", "?after=0"] {
        let mut from_start = app
            .request(
                Method::GET,
                &format!("/api/v1/events/subscribe{query}"),
                Some(&ann.token),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(from_start.status(), 200);
        assert_eq!(read_sse(&mut from_start, 1).await[0].0, oldest, "{query:?}");
    }
    // Right before the oldest kept, nothing was skipped.
    let from_oldest = app
        .get(&format!("/api/v1/events?after={}", oldest - 1), &ann.token)
        .await;
    assert_eq!(from_oldest.status(), 200);

    // The same for a stream read by version (every event above is in stream "s" below).
    for i in 0..60 {
        let body =
            json!({"type": "t", "stream": "s", "data": "y".repeat(200), "metadata": {"i": i}});
        assert_eq!(append(&app, &ann.token, body).await.status(), 201);
    }
    let page: Value = app
        .get("/api/v1/streams/s?limit=1", &ann.token)
        .await
        .json()
        .await
        .unwrap();
    let oldest = page["data"][0]["stream_version"].as_u64().unwrap();
    assert!(
        oldest > 3,
        "retention dropped the stream's first versions ({oldest})"
    );
    for path in [
        "/api/v1/streams/s?from=2".to_owned(),
        format!("/api/v1/streams/s?from={}&direction=backward", oldest - 1),
    ] {
        let response = app.get(&path, &ann.token).await;
        assert_problem(response, 410, "events_dropped").await;
    }
    // Walking back, the last page's cursor points below the oldest kept version, and
    // following it is the 410: the oldest kept is never taken for the first.
    let last_page: Value = app
        .get(
            &format!(
                "/api/v1/streams/s?from={}&direction=backward&limit=2",
                oldest + 1
            ),
            &ann.token,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(last_page["data"].as_array().unwrap().len(), 2);
    assert_eq!(last_page["next_cursor"], json!((oldest - 1).to_string()));
    for path in [
        format!("/api/v1/streams/s?from={oldest}"),
        "/api/v1/streams/s".to_owned(),
        "/api/v1/streams/s?from=1".to_owned(),
        "/api/v1/streams/s?direction=backward&from=0".to_owned(),
    ] {
        assert_eq!(app.get(&path, &ann.token).await.status(), 200, "{path}");
    }
    // Nothing of stream "default" (the first 60 events) is kept any more: reading it anywhere
    // but from the start is the 410, not an empty page.
    for path in [
        "/api/v1/streams/default?from=2",
        "/api/v1/streams/default?direction=backward",
    ] {
        assert_problem(app.get(path, &ann.token).await, 410, "events_dropped").await;
    }
    assert_eq!(
        app.get("/api/v1/streams/default", &ann.token)
            .await
            .status(),
        200
    );
    // Another organization's appends push out every event of Ann's: resuming after any of
    // her positions but the last is the 410; at the last she is caught up.
    let bob = app.sign_up("bob@example.com").await;
    for i in 0..60 {
        let body = json!({"type": "t", "data": "z".repeat(200), "metadata": {"i": i}});
        assert_eq!(append(&app, &bob.token, body).await.status(), 201);
    }
    let stats: Value = app
        .get("/api/v1/stats", &ann.token)
        .await
        .json()
        .await
        .unwrap();
    let last = stats["organization"]["last_position"].as_u64().unwrap();
    assert_eq!(stats["organization"]["events"], json!(0), "{stats}");
    assert_problem(
        app.get("/api/v1/events?after=100", &ann.token).await,
        410,
        "events_dropped",
    )
    .await;
    let caught_up = app
        .get(&format!("/api/v1/events?after={last}"), &ann.token)
        .await;
    assert_eq!(caught_up.status(), 200);
}

/// Appends event 2 to `member`'s organization with another token of the same member.
async fn append_as_someone_else(app: &TestApp, member: &Account) {
    let token = app.log_in(member, &member.org_id).await;
    assert_eq!(
        append(app, &token, json!({"type": "t", "data": 2}))
            .await
            .status(),
        201
    );
}

async fn stats_report_the_organization_and_the_storage(backend: Backend) {
    let app = quiet_app(backend).await;
    let ann = app.sign_up("ann@example.com").await;
    append(
        &app,
        &ann.token,
        json!({"type": "t", "stream": "a", "data": 1}),
    )
    .await;
    append(
        &app,
        &ann.token,
        json!({"type": "t", "stream": "b", "data": 2}),
    )
    .await;
    let stats: Value = app
        .get("/api/v1/stats", &ann.token)
        .await
        .json()
        .await
        .unwrap();
    let org = &stats["organization"];
    assert_eq!(
        (
            org["events"].as_u64(),
            org["streams"].as_u64(),
            org["first_position"].as_u64(),
            org["last_position"].as_u64()
        ),
        (Some(2), Some(2), Some(1), Some(2))
    );
    let expected_backend = if backend == Backend::Sqlite {
        "file"
    } else {
        "postgres"
    };
    assert_eq!(stats["storage"]["backend"], expected_backend);
}

async fn invalid_events_are_rejected_and_write_nothing(backend: Backend) {
    let app = spawn_app_with(
        backend,
        |c| {
            c.events.event_bytes_max = 1024;
            c.outbox.relay_enabled = false;
        },
        axum::Router::new(),
    )
    .await;
    let ann = app.sign_up("ann@example.com").await;
    for (body, status, code) in [
        (json!({"type": "", "data": 1}), 400, "validation_failed"),
        (
            json!({"type": "x".repeat(129), "data": 1}),
            400,
            "validation_failed",
        ),
        (
            json!({"type": "t", "data": 1, "stream": "s".repeat(257)}),
            400,
            "validation_failed",
        ),
        (
            json!({"type": "t", "data": 1, "metadata": [1]}),
            400,
            "validation_failed",
        ),
        // Reserved for the events the server records for committed changes.
        (
            json!({"type": "accounts.member.added", "data": 1, "metadata": {"source": "outbox"}}),
            400,
            "validation_failed",
        ),
        (json!({"type": "t"}), 400, "validation_failed"),
        (
            json!({"type": "t", "data": 1, "extra": 1}),
            400,
            "validation_failed",
        ),
        (
            json!({"type": "t", "data": "x".repeat(2000)}),
            413,
            "event_too_large",
        ),
    ] {
        assert_problem(append(&app, &ann.token, body.clone()).await, status, code).await;
    }
    let stats: Value = app
        .get("/api/v1/stats", &ann.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(stats["organization"]["events"], 0);
}

async fn viewers_may_read_events_but_not_append(backend: Backend) {
    let app = quiet_app(backend).await;
    let ann = app.sign_up("ann@example.com").await;
    let viewer = app.sign_up("viewer@example.com").await;
    let token = app.add_member(&ann, &viewer, "viewer").await;
    append(&app, &ann.token, json!({"type": "t", "data": 1})).await;
    assert_eq!(app.get("/api/v1/events", &token).await.status(), 200);
    assert_problem(
        append(&app, &token, json!({"type": "t", "data": 1})).await,
        403,
        "insufficient_role",
    )
    .await;
}

/// A reader resuming after a position the organization never reached (a log restored from an
/// older backup) would wait for numbers it has already seen: `409 position_ahead`, on the
/// catch-up read and the subscription; at the last position itself it is simply caught up.
async fn resuming_past_the_last_position_is_refused(backend: Backend) {
    let app = quiet_app(backend).await;
    let ann = app.sign_up("ann@example.com").await;
    assert_eq!(
        append(&app, &ann.token, json!({"type": "t", "data": 1}))
            .await
            .status(),
        201
    );
    for path in ["/api/v1/events?after=5", "/api/v1/events?after=2&type=t"] {
        assert_problem(app.get(path, &ann.token).await, 409, "position_ahead").await;
    }
    let resumed = app
        .request(Method::GET, "/api/v1/events/subscribe", Some(&ann.token))
        .header("last-event-id", "5")
        .send()
        .await
        .unwrap();
    assert_problem(resumed, 409, "position_ahead").await;
    let caught_up: Value = app
        .get("/api/v1/events?after=1", &ann.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(caught_up["data"], json!([]));
    // An organization without events: position 0 is the start, anything else is ahead.
    let bob = app.sign_up("bob@example.com").await;
    assert_eq!(
        app.get("/api/v1/events?after=0", &bob.token).await.status(),
        200
    );
    assert_problem(
        app.get("/api/v1/events?after=1", &bob.token).await,
        409,
        "position_ahead",
    )
    .await;
}

/// A page of large events stops at a byte budget (8 MiB) with a cursor, instead of holding
/// up to `limit` × 1 MiB in memory; following the cursors reads every event once, in order.
async fn pages_of_large_events_stop_at_a_byte_budget_and_go_on_by_cursor(backend: Backend) {
    let app = quiet_app(backend).await;
    let ann = app.sign_up("ann@example.com").await;
    let big = "x".repeat(1_000_000);
    for i in 0..12 {
        let body = json!({"type": "t", "stream": "big", "data": big, "metadata": {"i": i}});
        assert_eq!(append(&app, &ann.token, body).await.status(), 201);
    }
    for (first, next) in [
        (
            "/api/v1/events?limit=1000",
            "/api/v1/events?limit=1000&cursor=",
        ),
        (
            "/api/v1/streams/big?limit=1000",
            "/api/v1/streams/big?limit=1000&cursor=",
        ),
        (
            "/api/v1/streams/big?limit=1000&direction=backward",
            "/api/v1/streams/big?limit=1000&direction=backward&cursor=",
        ),
    ] {
        let mut seen = Vec::new();
        let mut pages = 0;
        let mut path = first.to_owned();
        loop {
            let page: Value = app.get(&path, &ann.token).await.json().await.unwrap();
            let data = page["data"].as_array().unwrap();
            assert!(data.len() <= 9, "{first}: a page of {} MiB", data.len());
            pages += 1;
            seen.extend(data.iter().map(|e| e["metadata"]["i"].as_u64().unwrap()));
            match page["next_cursor"].as_str() {
                Some(cursor) => path = format!("{next}{cursor}"),
                None => break,
            }
        }
        let mut expected: Vec<u64> = (0..12).collect();
        if first.contains("backward") {
            expected.reverse();
        }
        assert_eq!(seen, expected, "{first}");
        assert!(pages >= 2, "{first}");
    }
}

/// Types and positions of the organization's events as `token` reads them.
async fn listed(app: &TestApp, token: &str) -> Vec<(u64, String)> {
    app.first_events(token)
        .await
        .iter()
        .map(|e| {
            (
                e["position"].as_u64().unwrap(),
                e["type"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// What the REST routes show admins only (webhooks, logins, invites, submissions) is not
/// readable through the event log below admin: a viewer's pages, stream reads, reads by id
/// and subscription leave those events out, while an admin sees everything.
async fn admin_only_events_are_left_out_for_members_and_viewers(backend: Backend) {
    let app = spawn_app_with(
        backend,
        |c| c.webhooks.allow_private_targets = true,
        axum::Router::new(),
    )
    .await;
    let owner = app.sign_up("owner@example.com").await;
    let viewer = app.sign_up("viewer@example.com").await;
    let viewer_token = app.add_member(&owner, &viewer, "viewer").await;
    let member = app.sign_up("member@example.com").await;
    let member_token = app.add_member(&owner, &member, "member").await;
    let hook = json!({"url": "http://127.0.0.1:9/hook", "event_types": ["nothing.*"]});
    let created = app.post("/api/v1/webhooks", &owner.token, &hook).await;
    assert_eq!(created.status(), 201);
    let admin_only =
        |t: &str| t.starts_with("accounts.webhook.") || t.starts_with("accounts.token.");
    let everything = || async { listed(&app, &owner.token).await };
    assert!(
        eventually(15, || async {
            everything()
                .await
                .iter()
                .any(|(_, t)| t == "accounts.webhook.created")
        })
        .await,
        "the relay brings the webhook's event to the log"
    );
    let all = everything().await;
    assert!(all.iter().any(|(_, t)| t == "accounts.token.issued"));
    let seen = listed(&app, &viewer_token).await;
    let expected: Vec<_> = all
        .iter()
        .filter(|(_, t)| !admin_only(t))
        .cloned()
        .collect();
    assert!(expected.iter().any(|(_, t)| t == "accounts.member.added"));
    assert_eq!(seen, expected, "everything but the admin-only events");
    assert_eq!(listed(&app, &member_token).await, expected, "members alike");
    // Filtered by type, by stream, by id: the same rule.
    let by_type = app
        .get(
            "/api/v1/events?type=accounts.webhook.created",
            &viewer_token,
        )
        .await;
    let by_type: Value = by_type.json().await.unwrap();
    assert_eq!(by_type["data"], json!([]));
    assert_eq!(
        by_type["next_cursor"],
        Value::Null,
        "no positions of hidden events"
    );
    let hook_event: Value = app
        .get("/api/v1/events?type=accounts.webhook.created", &owner.token)
        .await
        .json()
        .await
        .unwrap();
    let hook_event = &hook_event["data"][0];
    let path = format!("/api/v1/events/{}", hook_event["id"].as_str().unwrap());
    assert_eq!(app.get(&path, &owner.token).await.status(), 200);
    assert_problem(
        app.get(&path, &viewer_token).await,
        403,
        "insufficient_role",
    )
    .await;
    let stream = format!("/api/v1/streams/{}", hook_event["stream"].as_str().unwrap());
    let stream_page: Value = app.get(&stream, &viewer_token).await.json().await.unwrap();
    assert!(
        stream_page["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| !admin_only(e["type"].as_str().unwrap())),
        "{stream_page}"
    );
    // A subscription skips them too, in catch-up and live.
    let mut subscription = app
        .request(Method::GET, "/api/v1/events/subscribe", Some(&viewer_token))
        .send()
        .await
        .unwrap();
    let caught_up = read_sse(&mut subscription, expected.len()).await;
    assert_eq!(
        caught_up.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        expected.iter().map(|(p, _)| *p).collect::<Vec<_>>()
    );
    let another = app.post("/api/v1/webhooks", &owner.token, &hook).await;
    assert_eq!(another.status(), 201);
    assert!(
        eventually(15, || async {
            let hooks = everything().await;
            hooks
                .iter()
                .filter(|(_, t)| t == "accounts.webhook.created")
                .count()
                == 2
        })
        .await,
        "the second webhook's event is in the log before the next append"
    );
    append(&app, &owner.token, json!({"type": "after.hook", "data": 1})).await;
    let live = read_sse(&mut subscription, 1).await;
    assert_eq!(
        live[0].1["type"], "after.hook",
        "the hook's event was skipped"
    );
}

/// An append with an `Idempotency-Key` and no event ids is safe to retry: its events get ids
/// derived from the key, so the same request again appends nothing (200, the original
/// positions), other content under the key is `409 event_id_conflict`, and another user's
/// same key is another request. A malformed key is refused before anything is written.
async fn an_idempotency_key_names_the_events_of_an_append(backend: Backend) {
    let app = quiet_app(backend).await;
    let ann = app.sign_up("ann@example.com").await;
    let bob = app.sign_up("bob@example.com").await;
    let bob_token = app.add_member(&ann, &bob, "member").await;
    let keyed = |token: &str, path: &str, key: &str, body: &Value| {
        app.request(Method::POST, path, Some(token))
            .header("idempotency-key", key)
            .json(body)
            .send()
    };
    let one = json!({"type": "order.placed", "data": {"n": 1}});
    let first = keyed(&ann.token, "/api/v1/events", "k-1", &one)
        .await
        .unwrap();
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    let again = keyed(&ann.token, "/api/v1/events", "k-1", &one)
        .await
        .unwrap();
    assert_eq!(again.status(), 200, "a retry appends nothing");
    let again: Value = again.json().await.unwrap();
    assert_eq!(
        (&again["id"], &again["position"]),
        (&first["id"], &first["position"])
    );
    assert_problem(
        keyed(
            &ann.token,
            "/api/v1/events",
            "k-1",
            &json!({"type": "order.placed", "data": 2}),
        )
        .await
        .unwrap(),
        409,
        "event_id_conflict",
    )
    .await;
    let bobs = keyed(&bob_token, "/api/v1/events", "k-1", &one)
        .await
        .unwrap();
    assert_eq!(bobs.status(), 201, "another user's key is another request");
    let bobs: Value = bobs.json().await.unwrap();
    assert_ne!(bobs["id"], first["id"]);

    let batch = json!({"events": [
        {"type": "line.added", "data": 1},
        {"type": "line.added", "data": 2, "id": uuid::Uuid::now_v7()},
        {"type": "line.added", "data": 3},
    ]});
    let path = "/api/v1/streams/order-9/events";
    let created = keyed(&ann.token, path, "k-2", &batch).await.unwrap();
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await.unwrap();
    assert_eq!(
        created["events"][1]["id"], batch["events"][1]["id"],
        "a client id is kept"
    );
    let replayed = keyed(&ann.token, path, "k-2", &batch).await.unwrap();
    assert_eq!(replayed.status(), 200);
    let replayed: Value = replayed.json().await.unwrap();
    assert_eq!(replayed, created);

    let before = app.first_events(&ann.token).await;
    assert_eq!(before.len(), 5);
    assert_problem(
        keyed(&ann.token, "/api/v1/events", &"k".repeat(256), &one)
            .await
            .unwrap(),
        400,
        "validation_failed",
    )
    .await;
    assert_eq!(
        app.first_events(&ann.token).await,
        before,
        "nothing appended"
    );
}
