//! `spawn_app(Backend::…)` and friends.

use axum::Router;
use reqwest::{Method, RequestBuilder, Response};
use serde_json::{Value, json};
use sqlx::Row;
use std::sync::Arc;
use std::time::Duration;
use trueline::config::Config;
use trueline::startup::{Application, TestHooks};
use trueline_core::clock::OffsetClock;
use trueline_http::State;
use trueline_store_postgres::testing::TestDatabase;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Declares each listed `async fn name(backend: Backend)` as two tests:
/// `sqlite::name` and `postgres::name` (ignored unless PostgreSQL is configured).
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::helpers::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                #[ignore = "needs PostgreSQL: set TRUELINE_TEST_POSTGRES_URL and run with --ignored"]
                async fn $name() {
                    super::$name($crate::helpers::Backend::Postgres).await
                }
            )*
        }
    };
}

enum Db {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

pub struct TestApp {
    pub config: Config,
    pub address: String,
    pub client: reqwest::Client,
    pub clock: Arc<OffsetClock>,
    pub state: State,
    db: Db,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    pub server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _dir: tempfile::TempDir,
    _database: Option<TestDatabase>,
}

/// A configuration for tests: port 0, a temp data dir, cheap password hashing, no drain.
pub fn test_config(dir: &std::path::Path) -> Config {
    let mut config = Config {
        data_dir: dir.to_path_buf(),
        ..Config::default()
    };
    config.server.bind = "127.0.0.1:0".into();
    config.server.shutdown_drain_ms = 0;
    config.auth.password_memory_kib = 64;
    config.auth.password_iterations = 1;
    config.log.level = "warn".into();
    // Tests hammer one address; the rate-limit test turns limits back on.
    config.limits.enabled = false;
    config
}

pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, |_| {}, Router::new()).await
}

pub async fn spawn_app_with(
    backend: Backend,
    tweak: impl FnOnce(&mut Config),
    extra: Router<State>,
) -> TestApp {
    spawn_app_hooked(backend, tweak, extra, TestHooks::default()).await
}

/// Like [`spawn_app_with`] with test-only fault injection. The test's own database handle
/// connects directly, not through whatever `tweak` points the server at.
pub async fn spawn_app_hooked(
    backend: Backend,
    tweak: impl FnOnce(&mut Config),
    extra: Router<State>,
    hooks: TestHooks,
) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    let database = match backend {
        Backend::Sqlite => None,
        Backend::Postgres => {
            let database = TestDatabase::create().await;
            config.database.url = Some(database.url.clone());
            config.events.backend = "postgres".into();
            config.database.max_connections = 8;
            Some(database)
        }
    };
    let direct_url = config.database_url();
    tweak(&mut config);
    let clock = Arc::new(OffsetClock::new());
    let app = Application::build_with_hooks(config.clone(), clock.clone(), extra, hooks)
        .await
        .unwrap();
    let address = format!("http://{}", app.local_addr());
    let state = app.state.clone();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async move {
        let _ = rx.await;
    }));
    let db = match backend {
        Backend::Sqlite => Db::Sqlite(
            sqlx::SqlitePool::connect(&config.database_url())
                .await
                .unwrap(),
        ),
        Backend::Postgres => Db::Postgres(sqlx::PgPool::connect(&direct_url).await.unwrap()),
    };
    TestApp {
        config: config.clone(),
        address,
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap(),
        clock,
        state,
        db,
        shutdown: Some(tx),
        server: Some(server),
        _dir: dir,
        _database: database,
    }
}

/// Another server instance on the same database (PostgreSQL runs), with its own clock.
pub async fn spawn_second_instance(first: &TestApp) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let mut config = first.config.clone();
    config.data_dir = dir.path().to_path_buf();
    let clock = Arc::new(OffsetClock::new());
    let app = Application::build_with(config.clone(), clock.clone(), Router::new())
        .await
        .unwrap();
    let address = format!("http://{}", app.local_addr());
    let state = app.state.clone();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async move {
        let _ = rx.await;
    }));
    let db = Db::Postgres(sqlx::PgPool::connect(&config.database_url()).await.unwrap());
    TestApp {
        config,
        address,
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap(),
        clock,
        state,
        db,
        shutdown: Some(tx),
        server: Some(server),
        _dir: dir,
        _database: None,
    }
}

/// Polls `check` every 20 ms until it holds or `seconds` pass; returns whether it held.
pub async fn eventually<F, Fut>(seconds: u64, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A user signed up through the API.
#[derive(Debug, Clone)]
pub struct Account {
    pub email: String,
    pub password: String,
    pub token: String,
    pub user_id: String,
    pub org_id: String,
}

pub const PASSWORD: &str = "correct horse battery staple";

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub fn request(&self, method: Method, path: &str, token: Option<&str>) -> RequestBuilder {
        let mut builder = self.client.request(method, self.url(path));
        if let Some(token) = token {
            builder = builder.bearer_auth(token);
        }
        builder
    }

    pub async fn get(&self, path: &str, token: &str) -> Response {
        self.request(Method::GET, path, Some(token))
            .send()
            .await
            .unwrap()
    }

    pub async fn delete(&self, path: &str, token: &str) -> Response {
        self.request(Method::DELETE, path, Some(token))
            .send()
            .await
            .unwrap()
    }

    pub async fn send_json(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: &Value,
    ) -> Response {
        self.request(method, path, token)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn post(&self, path: &str, token: &str, body: &Value) -> Response {
        self.send_json(Method::POST, path, Some(token), body).await
    }

    pub async fn sign_up(&self, email: &str) -> Account {
        let body = json!({"email": email, "password": PASSWORD, "organization_name": format!("{email}'s org")});
        let response = self
            .send_json(Method::POST, "/api/v1/auth/signup", None, &body)
            .await;
        assert_eq!(response.status(), 201, "signup of {email}");
        let body: Value = response.json().await.unwrap();
        Account {
            email: email.to_owned(),
            password: PASSWORD.to_owned(),
            token: body["token"]["token"].as_str().unwrap().to_owned(),
            user_id: body["user"]["id"].as_str().unwrap().to_owned(),
            org_id: body["organization"]["id"].as_str().unwrap().to_owned(),
        }
    }

    /// The first page (up to 1000) of the organization's events as `token` reads them.
    pub async fn first_events(&self, token: &str) -> Vec<Value> {
        let page: Value = self
            .get("/api/v1/events?after=0&limit=1000", token)
            .await
            .json()
            .await
            .unwrap();
        page["data"].as_array().unwrap().clone()
    }

    /// Logs `account` into `org_id`; returns the token.
    pub async fn log_in(&self, account: &Account, org_id: &str) -> String {
        let body = json!({"email": account.email, "password": account.password, "organization_id": org_id});
        let response = self
            .send_json(Method::POST, "/api/v1/auth/tokens", None, &body)
            .await;
        assert_eq!(response.status(), 201);
        let body: Value = response.json().await.unwrap();
        body["token"].as_str().unwrap().to_owned()
    }

    /// Adds `member` to `owner`'s organization with `role`; returns member's token there.
    pub async fn add_member(&self, owner: &Account, member: &Account, role: &str) -> String {
        let response = self
            .post(
                "/api/v1/members",
                &owner.token,
                &json!({"email": member.email, "role": role}),
            )
            .await;
        assert_eq!(response.status(), 201, "add member");
        self.log_in(member, &owner.org_id).await
    }

    pub async fn scalar(&self, sql: &str) -> i64 {
        match &self.db {
            Db::Sqlite(pool) => sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
                .fetch_one(pool)
                .await
                .unwrap()
                .try_get(0)
                .unwrap(),
            Db::Postgres(pool) => sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
                .fetch_one(pool)
                .await
                .unwrap()
                .try_get(0)
                .unwrap(),
        }
    }

    pub async fn execute(&self, sql: &str) -> Result<u64, String> {
        let query = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()));
        match &self.db {
            Db::Sqlite(pool) => query.execute(pool).await.map(|r| r.rows_affected()),
            Db::Postgres(pool) => sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
                .execute(pool)
                .await
                .map(|r| r.rows_affected()),
        }
        .map_err(|e| e.to_string())
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self.db, Db::Postgres(_))
    }

    pub async fn text(&self, sql: &str) -> String {
        match &self.db {
            Db::Sqlite(pool) => sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
                .fetch_one(pool)
                .await
                .unwrap()
                .try_get(0)
                .unwrap(),
            Db::Postgres(pool) => sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
                .fetch_one(pool)
                .await
                .unwrap()
                .try_get(0)
                .unwrap(),
        }
    }

    pub async fn count(&self, table: &str) -> i64 {
        self.scalar(&format!("SELECT count(*) FROM {table}")).await
    }

    /// Row counts of every table, to assert a rejected request changed nothing.
    pub async fn snapshot(&self) -> Vec<(String, i64)> {
        let mut out = Vec::new();
        for table in [
            "users",
            "organizations",
            "memberships",
            "api_tokens",
            "audit_log",
            "items",
            "item_history",
            "outbox",
            "idempotency_keys",
        ] {
            out.push((table.to_owned(), self.count(table).await));
        }
        out
    }

    /// Creates an item through the API; returns its JSON.
    pub async fn create_item(&self, token: &str, name: &str, qty: u64) -> Value {
        let response = self
            .post("/api/v1/items", token, &json!({"name": name, "qty": qty}))
            .await;
        assert_eq!(response.status(), 201, "create {name}");
        response.json().await.unwrap()
    }

    /// `PATCH /items/{id}/qty` with a raw JSON body.
    pub async fn patch_qty(
        &self,
        token: &str,
        id: &str,
        body: &Value,
        key: Option<&str>,
    ) -> Response {
        let mut request = self
            .request(
                Method::PATCH,
                &format!("/api/v1/items/{id}/qty"),
                Some(token),
            )
            .json(body);
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        request.send().await.unwrap()
    }

    pub fn trigger_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// The status of an unauthenticated `GET path` (health probes).
pub async fn status_of(app: &TestApp, path: &str) -> u16 {
    app.client
        .get(app.url(path))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Asserts a problem+json response with `status` and `code`; returns the body.
pub async fn assert_problem(response: Response, status: u16, code: &str) -> Value {
    assert_eq!(response.status(), status, "status");
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(content_type, "application/problem+json");
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], code, "problem code in {body}");
    assert_eq!(body["status"], status);
    assert_eq!(body["request_id"], request_id.as_str());
    assert!(body["title"].is_string() && body["detail"].is_string());
    body
}

/// A seedable SplitMix64, so a randomized test run can be replayed from its seed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// An index into something of length `len` (0 when it is empty).
    pub fn index(&mut self, len: usize) -> usize {
        self.below(len as u64) as usize
    }

    pub fn pick<'a, T>(&mut self, options: &'a [T]) -> &'a T {
        &options[self.index(options.len())]
    }

    pub fn percent(&mut self, p: u64) -> bool {
        self.below(100) < p
    }

    /// A non-zero delta in -5..=5.
    pub fn delta(&mut self) -> i64 {
        let d = self.below(10) as i64 - 5;
        if d >= 0 { d + 1 } else { d }
    }

    pub fn uuid(&mut self) -> uuid::Uuid {
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&self.next().to_le_bytes());
        bytes[8..].copy_from_slice(&self.next().to_le_bytes());
        uuid::Builder::from_random_bytes(bytes).into_uuid()
    }
}
