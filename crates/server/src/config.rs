//! Configuration: defaults that work with zero setup, then an optional `trueline.toml`, then
//! `TRUELINE_<SECTION>__<KEY>` environment variables, then command-line flags.

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The file read when present in the working directory (or named by `--config`).
pub const DEFAULT_CONFIG_FILE: &str = "trueline.toml";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the embedded database and the event log live (created on first start).
    pub data_dir: PathBuf,
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub auth: AuthConfig,
    pub idempotency: IdempotencyConfig,
    pub events: EventsConfig,
    pub outbox: OutboxConfig,
    pub publish: PublishConfig,
    pub webhooks: WebhooksConfig,
    pub assessments: AssessmentsConfig,
    pub limits: LimitsConfig,
    pub inventory: InventoryConfig,
    pub log: LogConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct InventoryConfig {
    /// Hot-row combining: concurrent quantity deltas share one transaction.
    pub combine_deltas: bool,
    /// Deltas per combined transaction.
    pub combine_max_batch: usize,
    /// Deltas waiting at most; beyond it, `503 overloaded`.
    pub combine_queue: usize,
}

impl Default for InventoryConfig {
    fn default() -> Self {
        Self {
            combine_deltas: true,
            combine_max_batch: 256,
            combine_queue: 8192,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    pub enabled: bool,
    pub per_ip_per_second: u32,
    pub per_ip_burst: u32,
    pub per_token_per_second: u32,
    pub per_token_burst: u32,
    /// Signup, login and share-link registration, per client IP.
    pub auth_per_ip_per_minute: u32,
    pub auth_per_ip_burst: u32,
    /// API requests served at once; beyond it, `503 overloaded` at once.
    pub max_in_flight: usize,
    /// Of those, what one client may hold; beyond it, `429 rate_limited`.
    pub max_in_flight_per_client: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let d = trueline_http::limits::LimitSettings::default();
        Self {
            enabled: d.enabled,
            per_ip_per_second: d.per_ip_per_second,
            per_ip_burst: d.per_ip_burst,
            per_token_per_second: d.per_token_per_second,
            per_token_burst: d.per_token_burst,
            auth_per_ip_per_minute: d.auth_per_ip_per_minute,
            auth_per_ip_burst: d.auth_per_ip_burst,
            max_in_flight: d.max_in_flight,
            max_in_flight_per_client: d.max_in_flight_per_client,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AssessmentsConfig {
    /// Published assessments per organization.
    pub published_max: u32,
    /// Submissions are accepted this long after the deadline (network latency).
    pub submit_grace_s: u64,
    /// How often overdue attempts are auto-submitted.
    pub sweep_interval_s: u64,
}

impl Default for AssessmentsConfig {
    fn default() -> Self {
        Self {
            published_max: 3,
            submit_grace_s: 30,
            sweep_interval_s: 5,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OutboxConfig {
    /// How often the relay looks for rows committed by other instances (local commits wake
    /// it at once).
    pub poll_ms: u64,
    /// `/readyz` warns when the oldest unpublished change is older than this.
    pub lag_warn_s: u64,
    /// How long a relay holds an organization before another instance may take it over.
    pub lease_s: u64,
    /// Run the relay in this instance (every instance may; they share the work).
    pub relay_enabled: bool,
    /// Rows every destination published are deleted this long after their commit (the
    /// events stay in the event log). Every instance must agree on `publish.nats`: one
    /// without it does not wait for NATS.
    pub retention_hours: u64,
    /// How often published rows past the retention are deleted.
    pub purge_interval_s: u64,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        Self {
            poll_ms: 1_000,
            lag_warn_s: 30,
            lease_s: 30,
            relay_enabled: true,
            retention_hours: 24,
            purge_interval_s: 600,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PublishConfig {
    pub nats: NatsConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NatsConfig {
    /// `nats://host:4222`; unset: no NATS publishing.
    pub url: Option<String>,
    /// The JetStream stream (created if missing, with subjects `<subject_prefix>.>`).
    pub stream: String,
    /// Subjects are `<subject_prefix>.<organization>.<event type>`.
    pub subject_prefix: String,
    /// How long JetStream remembers a message id to drop a republished row (the stream's
    /// `duplicate_window`, set when the stream is created). A relay that published a round
    /// and died before marking it publishes the round again when it restarts or its lease
    /// runs out: that must fall within the window, or consumers see the events twice.
    pub duplicate_window_s: u64,
}

impl Default for NatsConfig {
    fn default() -> Self {
        Self {
            url: None,
            stream: "TRUELINE".into(),
            subject_prefix: "trueline".into(),
            duplicate_window_s: 3600,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    /// Allow loopback and private-network targets (tests; never on a public deployment).
    pub allow_private_targets: bool,
    pub timeout_ms: u64,
    pub max_attempts: u32,
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    pub poll_ms: u64,
    pub concurrency: u32,
    /// How long finished deliveries (succeeded or dead) and their attempts are kept.
    pub delivery_retention_hours: u64,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        Self {
            allow_private_targets: false,
            timeout_ms: 10_000,
            // Waits of 5–10 s doubling up to an hour: a receiver down for a few hours
            // (3.2–6.4 h in all) still gets its deliveries. Eight attempts from 1 s gave up
            // after about two minutes.
            max_attempts: 15,
            backoff_base_ms: 10_000,
            backoff_max_ms: 3_600_000,
            poll_ms: 500,
            concurrency: 8,
            delivery_retention_hours: 24 * 30,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EventsConfig {
    /// `file` (the embedded engine, one server per directory) or `postgres` (many instances;
    /// needs a `postgres://` database.url).
    pub backend: String,
    /// Directory of the file backend (default `<data_dir>/eventlog`).
    pub dir: Option<PathBuf>,
    /// `always` (acknowledge after fdatasync), `interval` (fsync every `sync_interval_ms`),
    /// or `never` (the OS decides).
    pub durability: String,
    pub sync_interval_ms: u64,
    pub segment_size_bytes: u64,
    /// Largest `data` + `metadata` of one event.
    pub event_bytes_max: usize,
    /// Largest request body of the event routes.
    pub body_limit_bytes: usize,
    /// Drop sealed segments older than this (0: keep forever).
    pub retention_max_age_hours: u64,
    /// Drop the oldest sealed segments beyond this total size (0: no limit).
    pub retention_max_bytes: u64,
    /// Sealed segments kept in the OS page cache besides the active one; older ones are
    /// dropped from it after each roll (0: every sealed one; 4294967295: never, the kernel
    /// decides). Reads of dropped segments go to the disk.
    pub cached_sealed_segments: u32,
    /// Event subscriptions (SSE) an organization may hold open at once on one instance.
    pub subscriptions_per_org: usize,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            backend: "file".into(),
            dir: None,
            durability: "always".into(),
            sync_interval_ms: 10,
            segment_size_bytes: 128 * 1024 * 1024,
            event_bytes_max: 1024 * 1024,
            body_limit_bytes: 16 * 1024 * 1024,
            retention_max_age_hours: 0,
            retention_max_bytes: 0,
            cached_sealed_segments: trueline_eventlog::CACHED_SEALED_SEGMENTS_DEFAULT,
            subscriptions_per_org: 100,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct IdempotencyConfig {
    /// How long completed idempotency records are kept (and replayed).
    pub retention_hours: u64,
    /// How long a claim stays locked to its request; at least the request timeout + 1 s is
    /// used whatever is set (a claim must outlive the request that holds it).
    pub lock_ms: u64,
    /// How often the purge job runs.
    pub purge_interval_s: u64,
}

impl Default for IdempotencyConfig {
    fn default() -> Self {
        Self {
            retention_hours: 24,
            lock_ms: 60_000,
            purge_interval_s: 600,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub bind: String,
    pub request_timeout_ms: u64,
    /// A request body whose next bytes do not come within this time is refused with `408
    /// request_timeout` (nothing was changed); so is one still unread at the request timeout.
    pub body_read_timeout_ms: u64,
    pub body_limit_bytes: usize,
    /// After SIGTERM, how long `/readyz` fails while requests are still served, so load
    /// balancers stop routing here before the listener closes.
    pub shutdown_drain_ms: u64,
    /// How long in-flight requests get to finish after the listener closes.
    pub shutdown_grace_ms: u64,
    /// Open connections at most; further clients wait in the kernel's accept backlog.
    pub max_connections: usize,
    /// Open connections one client (an IPv4 address, an IPv6 /64) may hold; its further
    /// connections are closed at once. Trusted proxies are exempt.
    pub max_connections_per_client: usize,
    /// A request head must arrive within this time; idle keep-alive connections close
    /// after it too (slowloris protection).
    pub header_read_timeout_ms: u64,
    /// A connection whose client takes nothing of a response for this long is closed (a
    /// client that stops reading would otherwise hold its connection forever).
    pub write_stall_timeout_ms: u64,
    /// A larger request head (request line and headers) is refused with 431.
    pub max_request_head_bytes: usize,
    /// Proxies (addresses or ranges, e.g. `10.0.0.0/8`) whose `X-Forwarded-For` names the
    /// client for rate limits and login throttling; empty: the TCP peer is the client.
    pub trusted_proxies: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `sqlite://…` (default: `<data_dir>/trueline.db`) or `postgres://…`.
    pub url: Option<String>,
    pub max_connections: u32,
    pub acquire_timeout_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    pub token_ttl_days: u32,
    /// argon2id memory cost (KiB) and iterations; lower them only for tests.
    pub password_memory_kib: u32,
    pub password_iterations: u32,
    pub login_failures_max: u32,
    pub login_failure_window_s: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// An `EnvFilter` directive: `info`, `debug`, `trueline_http=debug,info`, …
    pub level: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./data"),
            server: ServerConfig::default(),
            database: DatabaseConfig::default(),
            auth: AuthConfig::default(),
            idempotency: IdempotencyConfig::default(),
            events: EventsConfig::default(),
            outbox: OutboxConfig::default(),
            publish: PublishConfig::default(),
            webhooks: WebhooksConfig::default(),
            assessments: AssessmentsConfig::default(),
            limits: LimitsConfig::default(),
            inventory: InventoryConfig::default(),
            log: LogConfig::default(),
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            bind: "127.0.0.1:8080".into(),
            request_timeout_ms: 30_000,
            body_read_timeout_ms: 10_000,
            body_limit_bytes: 1024 * 1024,
            shutdown_drain_ms: 1_000,
            shutdown_grace_ms: 30_000,
            max_connections: 1024,
            max_connections_per_client: 256,
            header_read_timeout_ms: 10_000,
            write_stall_timeout_ms: 60_000,
            max_request_head_bytes: 64 * 1024,
            trusted_proxies: Vec::new(),
        }
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: None,
            max_connections: 16,
            acquire_timeout_ms: 5_000,
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            token_ttl_days: 30,
            password_memory_kib: 19 * 1024,
            password_iterations: 2,
            login_failures_max: 5,
            login_failure_window_s: 15 * 60,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
        }
    }
}

/// Flags given on the command line (highest precedence).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,
}

impl Config {
    /// Layers the sources. `file`: an explicit `--config` (must exist) or `None` to read
    /// `trueline.toml` only if present.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Self, Box<figment::Error>> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        figment = match file {
            Some(path) => {
                if !path.exists() {
                    return Err(Box::new(figment::Error::from(format!(
                        "config file {} does not exist",
                        path.display()
                    ))));
                }
                figment.merge(Toml::file(path))
            }
            None => figment.merge(Toml::file(DEFAULT_CONFIG_FILE)),
        };
        figment = figment.merge(
            Env::prefixed("TRUELINE_")
                .filter(|key| is_configuration_key(key.as_str()))
                .split("__"),
        );
        if let Some(dir) = &overrides.data_dir {
            figment = figment.merge(Serialized::default("data_dir", dir));
        }
        if let Some(bind) = &overrides.bind {
            figment = figment.merge(Serialized::default("server.bind", bind));
        }
        if let Some(url) = &overrides.database_url {
            figment = figment.merge(Serialized::default("database.url", url));
        }
        let config: Config = figment.extract().map_err(Box::new)?;
        let problems = config.problems();
        if !problems.is_empty() {
            return Err(Box::new(figment::Error::from(problems.join("; "))));
        }
        Ok(config)
    }

    /// Settings that would make the server misbehave rather than do what they say: zero
    /// timeouts (every request or connection refused), "forever" values whose time arithmetic
    /// overflows (a worker panics), a retention that deletes what it should keep. Empty when
    /// all is well.
    pub fn problems(&self) -> Vec<String> {
        const DAY_MS: u64 = 86_400_000;
        const TEN_YEARS_H: u64 = 87_600;
        let mut problems = Vec::new();
        let mut within = |name: &str, value: u64, low: u64, high: u64| {
            if !(low..=high).contains(&value) {
                problems.push(format!("{name} must be within {low}..={high} (is {value})"));
            }
        };
        within(
            "server.request_timeout_ms",
            self.server.request_timeout_ms,
            1,
            DAY_MS,
        );
        within(
            "server.body_read_timeout_ms",
            self.server.body_read_timeout_ms,
            1,
            DAY_MS,
        );
        within(
            "server.header_read_timeout_ms",
            self.server.header_read_timeout_ms,
            1,
            DAY_MS,
        );
        within(
            "server.max_connections_per_client",
            self.server.max_connections_per_client as u64,
            1,
            u64::MAX,
        );
        within(
            "server.write_stall_timeout_ms",
            self.server.write_stall_timeout_ms,
            1,
            DAY_MS,
        );
        within(
            "server.shutdown_drain_ms",
            self.server.shutdown_drain_ms,
            0,
            DAY_MS,
        );
        within(
            "server.shutdown_grace_ms",
            self.server.shutdown_grace_ms,
            0,
            DAY_MS,
        );
        // Two at least on PostgreSQL: a migration holds one connection and reads what is
        // applied on another (with one, every start waited out the acquire timeout).
        // (SQLite does not use the setting.)
        if self.is_postgres() {
            within(
                "database.max_connections",
                u64::from(self.database.max_connections),
                2,
                10_000,
            );
        }
        within(
            "database.acquire_timeout_ms",
            self.database.acquire_timeout_ms,
            1,
            DAY_MS,
        );
        within(
            "idempotency.retention_hours",
            self.idempotency.retention_hours,
            1,
            TEN_YEARS_H,
        );
        within("idempotency.lock_ms", self.idempotency.lock_ms, 1, DAY_MS);
        within("outbox.lease_s", self.outbox.lease_s, 1, 86_400);
        within(
            "webhooks.concurrency",
            u64::from(self.webhooks.concurrency),
            1,
            256,
        );
        within(
            "webhooks.delivery_retention_hours",
            self.webhooks.delivery_retention_hours,
            0,
            TEN_YEARS_H,
        );
        within(
            "outbox.retention_hours",
            self.outbox.retention_hours,
            0,
            TEN_YEARS_H,
        );
        within(
            "webhooks.timeout_ms",
            self.webhooks.timeout_ms,
            1,
            3_600_000,
        );
        within(
            "webhooks.backoff_base_ms",
            self.webhooks.backoff_base_ms,
            1,
            DAY_MS,
        );
        within(
            "webhooks.backoff_max_ms",
            self.webhooks.backoff_max_ms,
            self.webhooks.backoff_base_ms,
            DAY_MS,
        );
        within(
            "assessments.submit_grace_s",
            self.assessments.submit_grace_s,
            0,
            86_400,
        );
        within(
            "events.retention_max_age_hours",
            self.events.retention_max_age_hours,
            0,
            TEN_YEARS_H * 10,
        );
        if self.events.backend == "file" {
            within(
                "events.segment_size_bytes",
                self.events.segment_size_bytes,
                trueline_eventlog::SEGMENT_SIZE_MIN_BYTES,
                trueline_eventlog::SEGMENT_SIZE_MAX_BYTES,
            );
        }
        // Argon2's own bounds (one lane: at least 8 KiB).
        within(
            "auth.password_memory_kib",
            u64::from(self.auth.password_memory_kib),
            8,
            0x0FFF_FFFF,
        );
        within(
            "auth.password_iterations",
            u64::from(self.auth.password_iterations),
            1,
            u64::from(u32::MAX),
        );
        if self.events.retention_max_bytes != 0
            && self.events.retention_max_bytes < self.events.segment_size_bytes
        {
            problems.push(format!(
                "events.retention_max_bytes ({}) must be 0 (keep all) or at least \
                 events.segment_size_bytes ({}): below it every segment goes once sealed",
                self.events.retention_max_bytes, self.events.segment_size_bytes
            ));
        }
        // Checked here, before anything is opened or migrated, rather than where they are
        // used: a start that would refuse them must not first migrate a (shared) database.
        match self.events.backend.as_str() {
            "file" => {}
            "postgres" if self.is_postgres() => {}
            "postgres" => problems
                .push("events.backend = \"postgres\" needs a postgres:// database.url".to_owned()),
            other => problems.push(format!(
                "events.backend must be \"file\" or \"postgres\" (is {other:?})"
            )),
        }
        if !["always", "interval", "never"].contains(&self.events.durability.as_str()) {
            problems.push(format!(
                "events.durability must be always, interval or never (is {:?})",
                self.events.durability
            ));
        }
        // A level, or filter directives (`info,trueline=debug`); a lone word that is not a
        // level would be read as a target name and log almost nothing.
        let level = self.log.level.trim().to_ascii_lowercase();
        let a_level = ["off", "error", "warn", "info", "debug", "trace"].contains(&level.as_str());
        let directives = level.contains(['=', ','])
            && tracing_subscriber::EnvFilter::try_new(&self.log.level).is_ok();
        if !a_level && !directives {
            problems.push(format!(
                "log.level {:?} is not a level or filter (error, warn, info, debug, trace)",
                self.log.level
            ));
        }
        problems
    }

    /// The database URL in effect: the configured one or the SQLite file in the data dir.
    pub fn database_url(&self) -> String {
        self.database
            .url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("trueline.db").display()))
    }

    /// Directory of the embedded event log.
    pub fn eventlog_dir(&self) -> PathBuf {
        self.events
            .dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("eventlog"))
    }

    pub fn is_postgres(&self) -> bool {
        let url = self.database_url();
        url.starts_with("postgres://") || url.starts_with("postgresql://")
    }

    /// The configuration as TOML with secrets (passwords and tokens in URLs) redacted.
    pub fn to_redacted_toml(&self) -> String {
        let mut shown = self.clone();
        shown.database.url = Some(redact_url(&self.database_url()));
        shown.publish.nats.url = self.publish.nats.url.as_deref().map(redact_url);
        toml::to_string_pretty(&shown).unwrap_or_else(|e| format!("# cannot render config: {e}"))
    }
}

/// Redacts the secrets of a URL: the password of `scheme://user:password@host/…`, the whole
/// user part when it has no password (a token: `nats://token@host`; a user name of a database
/// URL stays), and the values of query parameters that carry one (`password=`, `token=`, …).
pub fn redact_url(url: &str) -> String {
    // A SQLite URL names a file: no credentials to hide (and `sqlite:data.db` has no `//`).
    if url.starts_with("sqlite:") {
        return url.to_owned();
    }
    let Some(scheme_end) = url.find("://") else {
        // A keyword string (`host=db password=x`): nothing tells where a secret is in it, so
        // none of it is shown. A bare `host:port` (NATS adds the scheme) is read as a URL.
        if url.contains(['=', ' ']) {
            return "*** (not a URL)".to_owned();
        }
        let shown = redact_url(&format!("nats://{url}"));
        return shown.trim_start_matches("nats://").to_owned();
    };
    let scheme = &url[..scheme_end];
    let rest = &url[scheme_end + 3..];
    // The user information ends at the last `@` before the query: a password may hold `/`
    // or `#`, which would otherwise end the authority early and leave the password in the
    // "path". (An `@` in the query, `?user=a@b`, is not one.)
    let before_query = rest.find('?').unwrap_or(rest.len());
    let after_userinfo = rest[..before_query].rfind('@').map_or(0, |at| at + 1);
    let authority_end = rest[after_userinfo..]
        .find(['/', '?'])
        .map_or(rest.len(), |i| after_userinfo + i);
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rfind('@') {
        None => authority.to_owned(),
        Some(at) => {
            let (userinfo, host) = authority.split_at(at);
            match userinfo.find(':') {
                Some(colon) => format!("{}:***{host}", &userinfo[..colon]),
                None if scheme.starts_with("postgres") => authority.to_owned(),
                None => format!("***{host}"),
            }
        }
    };
    let tail = match tail.split_once('?') {
        None => tail.to_owned(),
        Some((path, query)) => {
            let params: Vec<String> = query
                .split('&')
                .map(|param| match param.split_once('=') {
                    Some((name, _)) if is_secret_parameter(name) => format!("{name}=***"),
                    _ => param.to_owned(),
                })
                .collect();
            format!("{path}?{}", params.join("&"))
        }
    };
    format!("{scheme}://{authority}{tail}")
}

fn is_secret_parameter(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    [
        "password",
        "passwd",
        "pass",
        "token",
        "secret",
        "sslpassword",
    ]
    .iter()
    .any(|secret| name == *secret)
}

/// `TRUELINE_TEST_*` (after the prefix: `TEST_*`) belong to the test suites (database and
/// broker URLs), not to the configuration: a shell exporting them can still run the server.
fn is_configuration_key(key: &str) -> bool {
    // `TRUELINE_CONFIG` names the file (`--config`), it is not a setting in it.
    !key.get(..5)
        .is_some_and(|p| p.eq_ignore_ascii_case("test_"))
        && !key.eq_ignore_ascii_case("config")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_test_suites_variables_are_not_configuration() {
        assert!(!is_configuration_key("TEST_POSTGRES_URL"));
        assert!(!is_configuration_key("test_nats_url"));
        assert!(is_configuration_key("SERVER__BIND"));
        assert!(is_configuration_key("TEST"));
    }

    #[test]
    fn database_passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact_url("sqlite://./data/x.db"), "sqlite://./data/x.db");
        assert_eq!(
            redact_url("postgres://app@db/x?sslmode=require&password=hunter2"),
            "postgres://app@db/x?sslmode=require&password=***"
        );
        assert_eq!(redact_url("nats://s3cr3t@h:4222"), "nats://***@h:4222");
        assert_eq!(redact_url("nats://u:p@h:4222"), "nats://u:***@h:4222");
        assert_eq!(redact_url("nats://h:4222"), "nats://h:4222");
        // A password with `/` or `#` in it, an `@` in the query, a keyword string.
        assert_eq!(
            redact_url("postgres://u:pa/ss#w@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(
            redact_url("postgres://h/db?application_name=a@b&password=x"),
            "postgres://h/db?application_name=a@b&password=***"
        );
        assert_eq!(redact_url("host=db password=x"), "*** (not a URL)");
        // Files and bare addresses are shown as they are.
        assert_eq!(redact_url("sqlite:data.db"), "sqlite:data.db");
        assert_eq!(
            redact_url("sqlite:///srv/a@b/trueline.db"),
            "sqlite:///srv/a@b/trueline.db"
        );
        assert_eq!(redact_url("localhost:4222"), "localhost:4222");
        assert_eq!(redact_url("tok@localhost:4222"), "***@localhost:4222");
    }

    #[test]
    fn the_defaults_have_no_problems_and_broken_values_are_named() {
        assert_eq!(Config::default().problems(), Vec::<String>::new());
        let mut broken = Config::default();
        broken.server.request_timeout_ms = 0;
        broken.idempotency.retention_hours = 1_000_000_000;
        broken.webhooks.backoff_base_ms = 0;
        broken.events.retention_max_bytes = 1;
        broken.log.level = "loud".into();
        broken.events.backend = "pg".into();
        broken.events.durability = "alway".into();
        broken.events.segment_size_bytes = 100;
        broken.auth.password_memory_kib = 1;
        let problems = broken.problems().join("\n");
        for name in [
            "server.request_timeout_ms",
            "idempotency.retention_hours",
            "webhooks.backoff_base_ms",
            "events.retention_max_bytes",
            "log.level",
            "events.backend",
            "events.durability",
            "events.segment_size_bytes",
            "auth.password_memory_kib",
        ] {
            assert!(problems.contains(name), "{name} not in {problems}");
        }
    }

    #[test]
    fn trueline_config_names_the_file_and_is_not_a_setting() {
        assert!(!is_configuration_key("CONFIG"));
        assert!(!is_configuration_key("config"));
        assert!(is_configuration_key("CONFIG__X"));
    }

    #[test]
    fn defaults_serve_sqlite_under_data_on_localhost_8080() {
        let config = Config::default();
        assert_eq!(config.server.bind, "127.0.0.1:8080");
        assert_eq!(config.database_url(), "sqlite://./data/trueline.db");
        assert!(!config.is_postgres());
    }
}
