//! No secret leaks: the real binary runs every flow that handles one (passwords at signup and
//! login, bearer tokens, invite and share-link tokens, webhook signing secrets), right and
//! wrong, with its JSON logs captured; then no log line, no error body, no event of the event
//! log and no webhook delivery (as received, and as listed by the API) contains any of them,
//! and the database holds bearer, invite and share-link tokens only as SHA-256 hashes.

use crate::both_backends;
use crate::helpers::{Backend, PASSWORD};
use axum::Router;
use axum::routing::post;
use reqwest::Method;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use trueline_store_postgres::testing::TestDatabase;

both_backends!(secrets_never_reach_logs_error_bodies_events_or_webhook_payloads);

/// Every response of the run, for the error-body scan.
struct Flow {
    client: reqwest::Client,
    address: String,
    responses: Vec<(String, u16, String)>,
}

impl Flow {
    async fn call(
        &mut self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        self.call_keyed(method, path, token, body, None).await
    }

    /// With an `Idempotency-Key`, so the response is also stored for replay.
    async fn call_keyed(
        &mut self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        key: Option<&str>,
    ) -> (u16, Value) {
        let mut request = self
            .client
            .request(method.clone(), format!("{}{path}", self.address));
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        self.responses
            .push((format!("{method} {path}"), status, text.clone()));
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn expect(
        &mut self,
        status: u16,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Value {
        let (got, value) = self.call(method, path, token, body).await;
        assert_eq!(got, status, "{path}: {value}");
        value
    }
}

type Received = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// A webhook receiver that records the headers and body of every delivery.
async fn start_receiver(received: Received) -> String {
    let app = Router::new().route(
        "/hook",
        post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let received = received.clone();
                async move {
                    received
                        .lock()
                        .unwrap()
                        .push((format!("{headers:?}"), body.to_vec()));
                    axum::http::StatusCode::NO_CONTENT
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{address}/hook")
}

async fn secrets_never_reach_logs_error_bodies_events_or_webhook_payloads(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let database = match backend {
        Backend::Sqlite => None,
        Backend::Postgres => Some(TestDatabase::create().await),
    };
    let mut env = vec![
        (
            "TRUELINE_WEBHOOKS__ALLOW_PRIVATE_TARGETS",
            "true".to_owned(),
        ),
        ("TRUELINE_WEBHOOKS__POLL_MS", "20".to_owned()),
        ("TRUELINE_LIMITS__ENABLED", "false".to_owned()),
    ];
    if let Some(database) = &database {
        env.push(("TRUELINE_DATABASE__URL", database.url.clone()));
        env.push(("TRUELINE_EVENTS__BACKEND", "postgres".to_owned()));
    }
    let (mut child, address, lines) = crate::binary::start_server_with(dir.path(), &env);
    let received: Received = Arc::default();
    let hook_url = start_receiver(received.clone()).await;
    let mut flow = Flow {
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap(),
        address,
        responses: Vec::new(),
    };
    let mut secrets: Vec<(&str, String)> = vec![("password", PASSWORD.to_owned())];

    // Passwords: signup, a second signup of the same email, a too-short one, logins.
    let signup =
        json!({"email": "ann@example.com", "password": PASSWORD, "organization_name": "Ann"});
    let body = flow
        .expect(201, Method::POST, "/api/v1/auth/signup", None, Some(signup))
        .await;
    let token = body["token"]["token"].as_str().unwrap().to_owned();
    secrets.push(("signup token", token.clone()));
    let taken_password = "another long passphrase 1";
    let again =
        json!({"email": "ann@example.com", "password": taken_password, "organization_name": "Ann"});
    flow.expect(409, Method::POST, "/api/v1/auth/signup", None, Some(again))
        .await;
    secrets.push(("password of a refused signup", taken_password.to_owned()));
    let short = "shrt-pw!9";
    let too_short =
        json!({"email": "bob@example.com", "password": short, "organization_name": "Bob"});
    flow.expect(
        400,
        Method::POST,
        "/api/v1/auth/signup",
        None,
        Some(too_short),
    )
    .await;
    secrets.push(("too-short password", short.to_owned()));
    let wrong_password = "the wrong passphrase 2";
    let wrong = json!({"email": "ann@example.com", "password": wrong_password});
    flow.expect(401, Method::POST, "/api/v1/auth/tokens", None, Some(wrong))
        .await;
    secrets.push(("wrong password", wrong_password.to_owned()));
    let login = json!({"email": "ann@example.com", "password": PASSWORD});
    let issued = flow
        .expect(201, Method::POST, "/api/v1/auth/tokens", None, Some(login))
        .await;
    let second = issued["token"].as_str().unwrap().to_owned();
    secrets.push(("login token", second.clone()));

    // Bearer tokens that are refused: unknown, malformed, revoked.
    let unknown = format!("tl_{}", "Q".repeat(43));
    flow.expect(401, Method::GET, "/api/v1/me", Some(&unknown), None)
        .await;
    secrets.push(("unknown bearer token", unknown));
    let malformed = "tl_secret-looking-but-malformed";
    flow.expect(401, Method::GET, "/api/v1/me", Some(malformed), None)
        .await;
    secrets.push(("malformed bearer token", malformed.to_owned()));
    flow.expect(
        204,
        Method::DELETE,
        "/api/v1/auth/tokens/current",
        Some(&second),
        None,
    )
    .await;
    flow.expect(401, Method::GET, "/api/v1/me", Some(&second), None)
        .await;

    // A webhook secret, and a delivery signed with it. Creations that hand out a secret are
    // sent with an Idempotency-Key (and replayed), so their stored copies are scanned too.
    // The receiver's own token in the URL's query: admins read the URL back, but the
    // `accounts.webhook.created` event tells only its origin.
    let url_token = format!("rcv_{}", uuid::Uuid::new_v4().simple());
    secrets.push(("webhook URL token", url_token.clone()));
    let hook_body = json!({"url": format!("{hook_url}?token={url_token}"), "event_types": ["*"]});
    let mut hook = Value::Null;
    for _ in 0..2 {
        let (status, body) = flow
            .call_keyed(
                Method::POST,
                "/api/v1/webhooks",
                Some(&token),
                Some(hook_body.clone()),
                Some("hook-1"),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        assert!(hook.is_null() || hook == body, "the replay is the same");
        hook = body;
    }
    let webhook_secret = hook["secret"].as_str().unwrap().to_owned();
    assert!(webhook_secret.starts_with("whsec_"));
    secrets.push(("webhook secret", webhook_secret.clone()));
    let hook_id = hook["id"].as_str().unwrap().to_owned();
    flow.expect(
        201,
        Method::POST,
        "/api/v1/items",
        Some(&token),
        Some(json!({"name": "Milk", "qty": 1})),
    )
    .await;

    // Invite and share-link tokens, used right and wrong.
    let a = flow
        .expect(
            201,
            Method::POST,
            "/api/v1/assessments",
            Some(&token),
            Some(json!({"title": "T", "time_limit_minutes": 5, "passing_score_percent": 50})),
        )
        .await;
    let a = a["id"].as_str().unwrap().to_owned();
    flow.expect(
        201,
        Method::POST,
        &format!("/api/v1/assessments/{a}/questions"),
        Some(&token),
        Some(json!({"type": "true_false", "prompt": "Yes?", "correct": true})),
    )
    .await;
    flow.expect(
        200,
        Method::POST,
        &format!("/api/v1/assessments/{a}/publish"),
        Some(&token),
        Some(json!({})),
    )
    .await;
    let mut invites = Value::Null;
    for _ in 0..2 {
        let (status, body) = flow
            .call_keyed(
                Method::POST,
                &format!("/api/v1/assessments/{a}/invites"),
                Some(&token),
                Some(json!({"candidates": [{"email": "cand@example.com"}]})),
                Some("invite-1"),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        assert!(
            invites.is_null() || invites == body,
            "the replay is the same"
        );
        invites = body;
    }
    let invite = invites["invites"][0]["token"].as_str().unwrap().to_owned();
    secrets.push(("invite token", invite.clone()));
    let link = flow
        .expect(
            201,
            Method::POST,
            &format!("/api/v1/assessments/{a}/share-link"),
            Some(&token),
            Some(json!({})),
        )
        .await;
    let share = link["token"].as_str().unwrap().to_owned();
    secrets.push(("share-link token", share.clone()));
    // Keyed and replayed: the key is the candidate's secret there, stored only hashed, and
    // the stored answer (with the invite token) sealed.
    let registration_key = uuid::Uuid::new_v4().to_string();
    secrets.push(("share registration key", registration_key.clone()));
    let mut registered = Value::Null;
    for _ in 0..2 {
        let (status, body) = flow
            .call_keyed(
                Method::POST,
                &format!("/api/v1/public/share/{share}/register"),
                None,
                Some(json!({"email": "self@example.com"})),
                Some(&registration_key),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        assert!(
            registered.is_null() || registered == body,
            "the replay is the same"
        );
        registered = body;
    }
    let registered = registered["token"].as_str().unwrap().to_owned();
    secrets.push(("registered invite token", registered.clone()));
    flow.expect(
        409,
        Method::POST,
        &format!("/api/v1/public/share/{share}/register"),
        None,
        Some(json!({"email": "cand@example.com"})),
    )
    .await;
    let wrong_invite = format!("tli_{}", "Z".repeat(43));
    for path in [
        format!("/api/v1/public/invites/{wrong_invite}"),
        format!("/api/v1/public/invites/{wrong_invite}/start"),
        format!("/api/v1/public/invites/{share}"),
        format!("/api/v1/public/share/{invite}/register"),
    ] {
        let method = if path.ends_with("/start") || path.ends_with("/register") {
            Method::POST
        } else {
            Method::GET
        };
        let body = path
            .ends_with("/register")
            .then(|| json!({"email": "x@example.com"}));
        flow.expect(404, method, &path, None, body).await;
    }
    secrets.push(("unknown invite token", wrong_invite));
    flow.expect(
        200,
        Method::POST,
        &format!("/api/v1/public/invites/{invite}/start"),
        None,
        None,
    )
    .await;
    flow.expect(
        400,
        Method::PUT,
        &format!("/api/v1/public/invites/{invite}/answers"),
        None,
        Some(json!({"answers": {"not-a-question": true}})),
    )
    .await;
    flow.expect(
        201,
        Method::POST,
        &format!("/api/v1/public/invites/{invite}/submit"),
        None,
        Some(json!({})),
    )
    .await;
    // Sent again, it is answered as a retry of the first; with other answers, refused.
    flow.expect(
        201,
        Method::POST,
        &format!("/api/v1/public/invites/{invite}/submit"),
        None,
        Some(json!({})),
    )
    .await;
    flow.expect(
        409,
        Method::POST,
        &format!("/api/v1/public/invites/{invite}/submit"),
        None,
        Some(json!({"answers": {"not-a-question": true}})),
    )
    .await;

    // A password change: refused with a wrong current password and with a weak new one,
    // then made (with the token the rest of the flow uses, which keeps working).
    let change =
        |current: &str, new: &str| json!({"current_password": current, "new_password": new});
    let wrong_current = "a wrong current passphrase 3";
    let weak_new = "shrt-pw!5";
    let new_password = "the new passphrase of ann 6";
    for (status, body) in [
        (400, change(wrong_current, "an unused passphrase 4")),
        (400, change(PASSWORD, weak_new)),
        (200, change(PASSWORD, new_password)),
    ] {
        flow.expect(
            status,
            Method::PUT,
            "/api/v1/me/password",
            Some(&token),
            Some(body),
        )
        .await;
    }
    secrets.push(("wrong current password", wrong_current.to_owned()));
    secrets.push(("unused new password", "an unused passphrase 4".to_owned()));
    secrets.push(("weak new password", weak_new.to_owned()));
    secrets.push(("new password", new_password.to_owned()));

    // Everything the outbox published: the event log (events API) and webhook deliveries.
    let deliveries_path = format!("/api/v1/webhooks/{hook_id}/deliveries?limit=200");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let deliveries = loop {
        let (_, list) = flow
            .call(Method::GET, &deliveries_path, Some(&token), None)
            .await;
        let all = list["data"].as_array().cloned().unwrap_or_default();
        if !all.is_empty() && all.iter().all(|d| d["state"] == "succeeded") {
            break list;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "deliveries settle: {list}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let events = flow
        .expect(
            200,
            Method::GET,
            "/api/v1/events?after=0&limit=1000",
            Some(&token),
            None,
        )
        .await;
    assert!(
        events["data"].as_array().unwrap().len() >= 5,
        "the flows produced events: {events}"
    );
    let received = received.lock().unwrap().clone();
    assert!(!received.is_empty(), "the receiver got deliveries");
    crate::binary::terminate(&mut child);
    let log = crate::binary::all_lines(lines);
    assert!(log.len() > 40, "the run logged: {}", log.len());

    let errors: Vec<&(String, u16, String)> = flow
        .responses
        .iter()
        .filter(|(_, s, _)| *s >= 400)
        .collect();
    assert!(
        errors.len() >= 12,
        "error bodies were produced: {}",
        errors.len()
    );
    let event_text = events.to_string();
    let delivery_text = deliveries.to_string();
    for (what, secret) in &secrets {
        for line in &log {
            assert!(!line.contains(secret.as_str()), "{what} in the log: {line}");
        }
        for (request, status, body) in &errors {
            assert!(
                !body.contains(secret.as_str()),
                "{what} in the {status} body of {request}: {body}"
            );
        }
        assert!(!event_text.contains(secret.as_str()), "{what} in an event");
        assert!(
            !delivery_text.contains(secret.as_str()),
            "{what} in a delivery"
        );
        for (headers, body) in &received {
            assert!(
                !headers.contains(secret.as_str())
                    && !String::from_utf8_lossy(body).contains(secret.as_str()),
                "{what} in a webhook request"
            );
        }
    }

    eprintln!(
        "secrets: {} secrets × {} log lines, {} error bodies, {} events, {} deliveries ({} received)",
        secrets.len(),
        log.len(),
        errors.len(),
        events["data"].as_array().map_or(0, Vec::len),
        deliveries["data"].as_array().map_or(0, Vec::len),
        received.len()
    );

    // At rest: tokens only as SHA-256 (and passwords only as argon2id hashes). The webhook
    // secret is stored as is (the server signs with it), and so is the webhook's URL.
    let at_rest: Vec<&(&str, String)> = secrets
        .iter()
        .filter(|(what, _)| !matches!(*what, "webhook secret" | "webhook URL token"))
        .collect();
    match &database {
        None => {
            let mut bytes = Vec::new();
            for file in ["trueline.db", "trueline.db-wal"] {
                if let Ok(content) = std::fs::read(dir.path().join(file)) {
                    bytes.extend(content);
                }
            }
            assert!(bytes.len() > 100_000, "read the database files");
            // A control: the scan finds a secret that is there.
            assert!(
                bytes
                    .windows(webhook_secret.len())
                    .any(|w| w == webhook_secret.as_bytes()),
                "the scan sees the webhook secret, which is stored as is"
            );
            for (what, secret) in &at_rest {
                assert!(
                    !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                    "{what} is stored in the SQLite files"
                );
            }
            let pool = sqlx::SqlitePool::connect(&format!(
                "sqlite://{}",
                dir.path().join("trueline.db").display()
            ))
            .await
            .unwrap();
            for (table, column, secret) in [
                ("api_tokens", "token_hash", &token),
                ("invites", "token_hash", &invite),
                ("invites", "token_hash", &registered),
                ("assessments", "share_token_hash", &share),
            ] {
                let hash = trueline_http::auth::hash_token(secret);
                let found: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                    "SELECT count(*) FROM {table} WHERE {column} = ?1"
                )))
                .bind(&hash[..])
                .fetch_one(&pool)
                .await
                .unwrap();
                assert_eq!(found, 1, "{table}.{column} holds the SHA-256 of the token");
            }
        }
        Some(database) => {
            let pool = sqlx::PgPool::connect(&database.url).await.unwrap();
            let tables: Vec<String> = sqlx::query_scalar(
                "SELECT table_name::text FROM information_schema.tables
                 WHERE table_schema = 'public' AND table_type = 'BASE TABLE'",
            )
            .fetch_all(&pool)
            .await
            .unwrap();
            assert!(tables.len() > 10, "{tables:?}");
            // A control: the scan finds a secret that is there.
            let control: i64 =
                sqlx::query_scalar("SELECT count(*) FROM webhooks t WHERE strpos(t::text, $1) > 0")
                    .bind(webhook_secret.as_str())
                    .fetch_one(&pool)
                    .await
                    .unwrap();
            assert_eq!(
                control, 1,
                "the scan sees the webhook secret, which is stored as is"
            );
            for table in &tables {
                for (what, secret) in &at_rest {
                    let found: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                        "SELECT count(*) FROM \"{table}\" t WHERE strpos(t::text, $1) > 0"
                    )))
                    .bind(secret.as_str())
                    .fetch_one(&pool)
                    .await
                    .unwrap();
                    assert_eq!(found, 0, "{what} is stored in {table}");
                }
            }
            for (table, column, secret) in [
                ("api_tokens", "token_hash", &token),
                ("invites", "token_hash", &invite),
                ("invites", "token_hash", &registered),
                ("assessments", "share_token_hash", &share),
            ] {
                let hash = trueline_http::auth::hash_token(secret);
                let found: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                    "SELECT count(*) FROM {table} WHERE {column} = $1"
                )))
                .bind(&hash[..])
                .fetch_one(&pool)
                .await
                .unwrap();
                assert_eq!(found, 1, "{table}.{column} holds the SHA-256 of the token");
            }
            pool.close().await;
        }
    }
}
