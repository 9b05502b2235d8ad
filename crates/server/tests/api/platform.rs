//! The platform layer: problem+json for every error class, request ids, health, metrics,
//! OpenAPI, docs, panics, timeouts and graceful shutdown.

use crate::both_backends;
use crate::helpers::*;
use axum::routing::get;
use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;

both_backends!(
    malformed_json_is_400_malformed_json,
    a_body_that_is_not_json_is_415,
    an_oversized_body_is_413,
    unknown_routes_are_json_404_and_wrong_methods_405_with_allow,
    request_ids_are_kept_when_valid_and_generated_otherwise,
    livez_and_readyz_report_health_json,
    metrics_expose_the_request_histogram_and_pool_gauges,
    the_openapi_document_covers_every_route_and_error_response,
    the_docs_page_is_served_without_network,
    a_panicking_handler_is_a_500_problem_and_the_server_keeps_serving,
    a_slow_request_is_cut_off_with_a_503_timeout,
    shutdown_fails_readiness_first_and_lets_in_flight_requests_finish,
    requests_beyond_the_rate_limits_get_429_with_retry_after_and_ratelimit_headers,
    requests_beyond_the_in_flight_cap_are_shed_with_503,
);

async fn requests_beyond_the_rate_limits_get_429_with_retry_after_and_ratelimit_headers(
    backend: Backend,
) {
    let app = spawn_app_with(
        backend,
        |c| {
            c.limits.enabled = true;
            c.limits.per_token_per_second = 1;
            c.limits.per_token_burst = 3;
            c.limits.auth_per_ip_per_minute = 1;
            c.limits.auth_per_ip_burst = 2;
        },
        axum::Router::new(),
    )
    .await;
    let ann = app.sign_up("ann@example.com").await;
    let first = app.get("/api/v1/me", &ann.token).await;
    assert_eq!(first.status(), 200);
    assert!(
        first.headers()["ratelimit-policy"]
            .to_str()
            .unwrap()
            .contains("\"token\";q=3")
    );
    assert!(
        first.headers()["ratelimit"]
            .to_str()
            .unwrap()
            .starts_with("\"token\";r=")
    );
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(app.get("/api/v1/me", &ann.token).await.status().as_u16());
    }
    assert!(statuses.contains(&429), "{statuses:?}");
    let response = app.get("/api/v1/me", &ann.token).await;
    assert!(response.headers().contains_key("retry-after"));
    assert!(response.headers().contains_key("ratelimit-policy"));
    assert_problem(response, 429, "rate_limited").await;
    // A credential not shaped like a token gets no bucket of its own (one per made-up
    // value let any client grow the limiter's map): a 401, under the address's limit.
    let made_up = app.get("/api/v1/me", "not-a-token").await;
    assert!(
        !made_up
            .headers()
            .get("ratelimit")
            .is_some_and(|v| v.to_str().unwrap().starts_with("\"token\"")),
        "{:?}",
        made_up.headers()
    );
    assert_problem(made_up, 401, "invalid_token").await;
    // Signup and login are limited much more strictly, per client address.
    let login = json!({"email": "ann@example.com", "password": PASSWORD});
    let mut codes = Vec::new();
    for _ in 0..3 {
        codes.push(
            app.send_json(Method::POST, "/api/v1/auth/tokens", None, &login)
                .await
                .status()
                .as_u16(),
        );
    }
    assert_eq!(codes.last(), Some(&429), "{codes:?}");
    // Health and metrics are never limited.
    for _ in 0..10 {
        assert_eq!(
            app.client
                .get(app.url("/livez"))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
}

/// Behind a trusted proxy each client has its own address limits (named by the proxy in
/// `X-Forwarded-For`); without `server.trusted_proxies` the header means nothing.
#[tokio::test]
async fn clients_behind_a_trusted_proxy_are_limited_each_on_its_own() {
    let login = |app: &TestApp, client: &'static str| {
        app.request(Method::POST, "/api/v1/auth/tokens", None)
            .header("x-forwarded-for", client)
            .json(&json!({"email": "ann@example.com", "password": PASSWORD}))
            .send()
    };
    for trusted in [true, false] {
        let app = spawn_app_with(
            Backend::Sqlite,
            |c| {
                c.limits.enabled = true;
                c.limits.auth_per_ip_per_minute = 1;
                c.limits.auth_per_ip_burst = 2;
                if trusted {
                    c.server.trusted_proxies = vec!["127.0.0.0/8".into()];
                }
            },
            axum::Router::new(),
        )
        .await;
        // The signup used the first client's allowance (its own address: no header).
        app.sign_up("ann@example.com").await;
        let mut first = Vec::new();
        for _ in 0..3 {
            first.push(login(&app, "198.51.100.1").await.unwrap().status().as_u16());
        }
        assert_eq!(first.last(), Some(&429), "{first:?}");
        let other = login(&app, "198.51.100.2").await.unwrap().status().as_u16();
        if trusted {
            assert_eq!(
                other, 201,
                "another client behind the proxy has its own limit"
            );
        } else {
            assert_eq!(other, 429, "an untrusted peer cannot pick its key");
        }
    }
}

async fn blocked() -> &'static str {
    tokio::time::sleep(Duration::from_millis(800)).await;
    "done"
}

async fn requests_beyond_the_in_flight_cap_are_shed_with_503(backend: Backend) {
    let extra = axum::Router::new().route("/api/v1/test/slow", get(blocked));
    let app =
        std::sync::Arc::new(spawn_app_with(backend, |c| c.limits.max_in_flight = 2, extra).await);
    let mut slow = Vec::new();
    for _ in 0..2 {
        let app = app.clone();
        slow.push(tokio::spawn(async move {
            app.client
                .get(app.url("/api/v1/test/slow"))
                .send()
                .await
                .unwrap()
                .status()
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let shed = app
        .client
        .get(app.url("/api/v1/test/slow"))
        .send()
        .await
        .unwrap();
    assert!(shed.headers().contains_key("retry-after"));
    assert_problem(shed, 503, "overloaded").await;
    assert_eq!(
        app.client
            .get(app.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200,
        "probes are not shed"
    );
    for t in slow {
        assert_eq!(t.await.unwrap(), 200);
    }
}

async fn malformed_json_is_400_malformed_json(backend: Backend) {
    let app = spawn_app(backend).await;
    let before = app.snapshot().await;
    let response = app
        .request(Method::POST, "/api/v1/auth/signup", None)
        .header("content-type", "application/json")
        .body("{\"email\": ")
        .send()
        .await
        .unwrap();
    assert_problem(response, 400, "malformed_json").await;
    let response = app
        .request(Method::POST, "/api/v1/auth/signup", None)
        .header("content-type", "application/json")
        .body("{} trailing")
        .send()
        .await
        .unwrap();
    assert_problem(response, 400, "malformed_json").await;
    assert_eq!(app.snapshot().await, before);
    // Errors of axum's own extractors get generic codes, not the first domain code of their
    // status: a path segment that is not UTF-8 is no JSON error.
    let response = app
        .request(Method::GET, "/api/v1/public/invites/%FF", None)
        .send()
        .await
        .unwrap();
    assert_problem(response, 400, "bad_request").await;
}

async fn a_body_that_is_not_json_is_415(backend: Backend) {
    let app = spawn_app(backend).await;
    let response = app
        .request(Method::POST, "/api/v1/auth/signup", None)
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_problem(response, 415, "unsupported_media_type").await;
    let response = app
        .request(Method::POST, "/api/v1/auth/signup", None)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_problem(response, 415, "unsupported_media_type").await;
}

async fn an_oversized_body_is_413(backend: Backend) {
    let app = spawn_app_with(
        backend,
        |c| c.server.body_limit_bytes = 1024,
        axum::Router::new(),
    )
    .await;
    let body =
        json!({"email": "a@example.com", "password": "x".repeat(2048), "organization_name": "x"});
    let response = app
        .send_json(Method::POST, "/api/v1/auth/signup", None, &body)
        .await;
    assert_problem(response, 413, "payload_too_large").await;
    assert_eq!(app.count("users").await, 0);
}

async fn unknown_routes_are_json_404_and_wrong_methods_405_with_allow(backend: Backend) {
    let app = spawn_app(backend).await;
    let response = app
        .client
        .get(app.url("/api/v1/nothing-here"))
        .send()
        .await
        .unwrap();
    assert_problem(response, 404, "not_found").await;
    let response = app.client.put(app.url("/api/v1/me")).send().await.unwrap();
    let allow = response.headers()["allow"].to_str().unwrap().to_owned();
    assert!(allow.contains("GET"), "{allow}");
    assert_problem(response, 405, "method_not_allowed").await;
}

async fn request_ids_are_kept_when_valid_and_generated_otherwise(backend: Backend) {
    let app = spawn_app(backend).await;
    let response = app
        .client
        .get(app.url("/livez"))
        .header("x-request-id", "client-id-42")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "client-id-42");
    let response = app
        .client
        .get(app.url("/nope"))
        .header("x-request-id", "bad id with spaces")
        .send()
        .await
        .unwrap();
    let id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_ne!(id, "bad id with spaces");
    assert!(uuid::Uuid::parse_str(&id).is_ok());
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["request_id"], id.as_str());
}

async fn livez_and_readyz_report_health_json(backend: Backend) {
    let app = spawn_app(backend).await;
    for path in ["/livez", "/readyz"] {
        let response = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()["content-type"],
            "application/health+json"
        );
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["status"], "pass", "{path}: {body}");
    }
}

async fn metrics_expose_the_request_histogram_and_pool_gauges(backend: Backend) {
    let app = spawn_app(backend).await;
    app.client.get(app.url("/livez")).send().await.unwrap();
    let ann = app.sign_up("ann@example.com").await;
    let item = app.create_item(&ann.token, "Milk", 1).await;
    let id = item["id"].as_str().unwrap();
    let patched = app
        .patch_qty(&ann.token, id, &json!({"delta": 1}), Some("metrics-1"))
        .await;
    assert_eq!(patched.status(), 200);
    let appended = app
        .post(
            "/api/v1/events",
            &ann.token,
            &json!({"type": "test.metrics", "data": {}}),
        )
        .await;
    assert_eq!(appended.status(), 201);
    let text = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("http_request_duration_seconds_bucket{"),
        "{text}"
    );
    assert!(text.contains("route=\"/livez\""));
    assert!(text.contains("db_pool_connections{state=\"idle\"}"));
    let mut histograms = vec![
        "inventory_combined_batch_size",
        "inventory_combined_batch_seconds",
    ];
    if backend == Backend::Sqlite {
        // The file event log (PostgreSQL runs use the PostgreSQL event store).
        histograms.extend([
            "eventlog_append_batch_size",
            "eventlog_fsync_duration_seconds",
        ]);
    }
    for name in histograms {
        assert!(
            text.contains(&format!("{name}_bucket{{")),
            "{name} is a histogram"
        );
    }
    assert!(text.contains("eventlog_events_total"));
}

async fn the_openapi_document_covers_every_route_and_error_response(backend: Backend) {
    let app = spawn_app(backend).await;
    let spec: Value = app
        .client
        .get(app.url("/api/v1/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let paths = spec["paths"].as_object().unwrap();
    for (path, methods) in [
        ("/api/v1/auth/signup", vec!["post"]),
        ("/api/v1/auth/tokens", vec!["post"]),
        ("/api/v1/auth/tokens/current", vec!["delete"]),
        ("/api/v1/me", vec!["get"]),
        ("/api/v1/organizations", vec!["get", "post"]),
        ("/api/v1/members", vec!["get", "post"]),
        ("/api/v1/members/{user_id}", vec!["patch", "delete"]),
        ("/livez", vec!["get"]),
        ("/readyz", vec!["get"]),
        ("/metrics", vec!["get"]),
    ] {
        for method in methods {
            let op = &paths[path][method];
            assert!(op.is_object(), "{method} {path} is documented");
            for status in ["500", "503"] {
                assert!(
                    op["responses"][status].is_object(),
                    "{method} {path} documents {status}"
                );
            }
            // Rate limits apply under /api/ only.
            assert_eq!(
                op["responses"]["429"].is_object(),
                path.starts_with("/api/"),
                "{method} {path} and 429"
            );
        }
    }
    // Idempotency-Key errors only where the idempotency layer runs: authenticated writes,
    // not signup, login, the candidates' routes or the event appends (ids, not keys).
    let conflict = |path: &str, method: &str| {
        paths[path][method]["responses"]["422"]["description"]
            .as_str()
            .unwrap_or_default()
            .contains("Idempotency")
    };
    assert!(conflict("/api/v1/members", "post"));
    assert!(!conflict("/api/v1/auth/signup", "post"));
    assert!(!conflict("/api/v1/auth/tokens", "post"));
    assert!(!conflict("/api/v1/events", "post"));
    assert!(!conflict("/api/v1/public/invites/{token}/submit", "post"));
    let patch = &paths["/api/v1/members/{user_id}"]["patch"]["responses"];
    for status in ["200", "400", "401", "403", "404", "409", "413", "415"] {
        assert!(
            patch[status].is_object(),
            "PATCH members documents {status}"
        );
    }
    assert!(spec["components"]["schemas"]["Problem"].is_object());
    assert!(spec["components"]["securitySchemes"]["bearer"].is_object());
}

async fn the_docs_page_is_served_without_network(backend: Backend) {
    let app = spawn_app(backend).await;
    let response = app.client.get(app.url("/docs/")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let html = response.text().await.unwrap();
    assert!(html.contains("swagger-ui"));
    assert!(
        !html.contains("https://"),
        "no external assets: the page works offline"
    );
    let response = app
        .client
        .get(app.url("/docs/swagger-ui-bundle.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "assets are embedded in the binary");
}

async fn panicking() -> &'static str {
    panic!("deliberate test panic")
}

async fn a_panicking_handler_is_a_500_problem_and_the_server_keeps_serving(backend: Backend) {
    let extra = axum::Router::new().route("/test/panic", get(panicking));
    let app = spawn_app_with(backend, |_| {}, extra).await;
    let response = app.client.get(app.url("/test/panic")).send().await.unwrap();
    let problem = assert_problem(response, 500, "internal_error").await;
    assert!(
        !problem.to_string().contains("deliberate"),
        "no internals in the body"
    );
    assert_eq!(
        app.client
            .get(app.url("/livez"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

async fn sleeping() -> &'static str {
    tokio::time::sleep(Duration::from_secs(5)).await;
    "done"
}

async fn a_slow_request_is_cut_off_with_a_503_timeout(backend: Backend) {
    let extra = axum::Router::new().route("/test/slow", get(sleeping));
    let app = spawn_app_with(backend, |c| c.server.request_timeout_ms = 200, extra).await;
    let response = app.client.get(app.url("/test/slow")).send().await.unwrap();
    assert!(response.headers().contains_key("retry-after") || response.status() == 503);
    assert_problem(response, 503, "timeout").await;
}

async fn half_second() -> &'static str {
    tokio::time::sleep(Duration::from_millis(700)).await;
    "finished"
}

async fn shutdown_fails_readiness_first_and_lets_in_flight_requests_finish(backend: Backend) {
    let extra = axum::Router::new().route("/test/slow", get(half_second));
    let mut app = spawn_app_with(backend, |c| c.server.shutdown_drain_ms = 400, extra).await;
    let client = app.client.clone();
    let slow_url = app.url("/test/slow");
    let in_flight = tokio::spawn(async move { client.get(slow_url).send().await.unwrap() });
    tokio::time::sleep(Duration::from_millis(100)).await;
    app.trigger_shutdown();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503, "readiness fails while draining");
    // The failing probe keeps its health body (it was once turned into a `timeout` problem).
    assert_eq!(
        ready.headers()["content-type"].to_str().unwrap(),
        "application/health+json"
    );
    let health: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(health["status"], "fail", "{health}");
    assert_eq!(
        health["checks"]["server:draining"][0]["status"], "fail",
        "{health}"
    );
    let live = app.client.get(app.url("/livez")).send().await.unwrap();
    assert_eq!(live.status(), 200, "liveness still passes");
    let response = in_flight.await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "finished");
    let server = app.server.take().unwrap();
    let result = tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .unwrap()
        .unwrap();
    assert!(result.is_ok(), "the server stops cleanly: {result:?}");
}

/// A server on PostgreSQL that stops closes its pool: each connection says goodbye instead of
/// being cut when the process exits (PostgreSQL logs those as unexpected ends of a client's
/// connection), and none is left open while the process lives on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set TRUELINE_TEST_POSTGRES_URL and run with --ignored"]
async fn a_server_that_stops_closes_its_postgres_connections() {
    // Named, to tell the server's connections from the test's own.
    let mut app = spawn_app_with(
        Backend::Postgres,
        |c| {
            let url = c.database_url();
            let separator = if url.contains('?') { '&' } else { '?' };
            c.database.url = Some(format!("{url}{separator}application_name=trueline_stop"));
        },
        axum::Router::new(),
    )
    .await;
    let ours = "SELECT count(*) FROM pg_stat_activity
                WHERE application_name = 'trueline_stop' AND datname = current_database()";
    // Connections in use: a sign-up, its reads and writes.
    app.sign_up("ann@example.com").await;
    assert!(
        app.scalar(ours).await > 0,
        "the server has connections open"
    );
    app.trigger_shutdown();
    let server = app.server.take().unwrap();
    let result = tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .unwrap()
        .unwrap();
    assert!(result.is_ok(), "the server stops cleanly: {result:?}");
    // The test still holds the server's state (and so its pool) alive: only closing ends them.
    // A backend leaves `pg_stat_activity` a moment after its client said goodbye.
    assert!(
        eventually(5, || async { app.scalar(ours).await == 0 }).await,
        "the server's connections are closed"
    );
}
