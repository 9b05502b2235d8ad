//! Building and running the server: open the store (creating the data dir and applying
//! migrations), bind the listener, serve until a shutdown signal, drain, exit.

use crate::config::Config;
use crate::telemetry;
use anyhow::Context as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use trueline_core::clock::{Clock, SystemClock};
use trueline_http::auth::{PasswordCost, PasswordHasher};
use trueline_http::{HttpSettings, State};
use trueline_store::Store;
use trueline_store::events::EventStore;
use trueline_store_eventlog::{Durability, FileEventOptions, FileEventStore};
use trueline_store_postgres::{PgOptions, PgStore};
use trueline_store_sqlite::{SqliteOptions, SqliteStore};

/// Test-only knobs that have no place in the configuration file.
#[doc(hidden)]
#[derive(Clone, Default)]
pub struct TestHooks {
    /// I/O faults (ENOSPC, EIO on write or fsync) injected into the file event log.
    pub event_log_faults: Option<Arc<dyn trueline_eventlog::FaultHook>>,
}

/// Opens the configured event store. The file backend logs what recovery did.
pub fn open_events(config: &Config, pg: Option<&PgStore>) -> anyhow::Result<Arc<dyn EventStore>> {
    Ok(open_events_with(config, pg, &TestHooks::default())?.0)
}

/// The event store, and the file log itself when that is the backend (for its pairing with
/// the database: `log_pairing`).
type OpenedEvents = (Arc<dyn EventStore>, Option<Arc<FileEventStore>>);

fn open_events_with(
    config: &Config,
    pg: Option<&PgStore>,
    hooks: &TestHooks,
) -> anyhow::Result<OpenedEvents> {
    match config.events.backend.as_str() {
        "postgres" => {
            let pg =
                pg.context("events.backend = \"postgres\" needs a postgres:// database.url")?;
            Ok((
                Arc::new(pg.event_store(config.events.event_bytes_max)),
                None,
            ))
        }
        "file" => {
            let dir = config.eventlog_dir();
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("creating the event log directory {}", dir.display()))?;
            let options = FileEventOptions {
                fault_hook: hooks.event_log_faults.clone(),
                ..file_options(config)?
            };
            let events = FileEventStore::open(&dir, options)
                .with_context(|| format!("opening the event log in {}", dir.display()))?;
            if config.is_postgres() {
                // Instances sharing the database would each keep their own log, and the
                // relays (which lease organizations across instances) would split an
                // organization's events between them.
                tracing::warn!(
                    event = "eventlog.local_with_postgres",
                    dir = %dir.display(),
                    "the event log is this instance's own directory: run one instance on this database, or set events.backend = \"postgres\" for several"
                );
            }
            if events.legacy_ids() {
                tracing::warn!(
                    event = "eventlog.legacy_ids",
                    dir = %dir.display(),
                    "this event log keeps ids XORed with the organization id (kept with `trueline eventlog keep-legacy-ids`): an organization that knows another's id can probe its event ids"
                );
            }
            let r = events.recovery();
            tracing::info!(
                event = "eventlog.recovered",
                dir = %dir.display(),
                duration_ms = r.duration.as_secs_f64() * 1000.0,
                segments = r.segments,
                records_scanned = r.records_scanned,
                records_from_checkpoint = r.records_from_checkpoint,
                truncated_bytes = r.truncated.as_ref().map_or(0, |t| t.truncated_bytes),
                truncated_segment = ?r.truncated.as_ref().map(|t| t.segment.display().to_string()),
                truncated_at = r.truncated.as_ref().map_or(0, |t| t.offset),
                truncated_reason = ?r.truncated.as_ref().map(|t| t.reason.clone()),
                last_global_position = r.last_global_position,
            );
            let events = Arc::new(events);
            Ok((events.clone(), Some(events)))
        }
        other => anyhow::bail!("events.backend must be \"file\" or \"postgres\" (got {other:?})"),
    }
}

pub fn file_options(config: &Config) -> anyhow::Result<FileEventOptions> {
    let e = &config.events;
    let durability = match e.durability.as_str() {
        "always" => Durability::Always,
        "interval" => Durability::IntervalMs(e.sync_interval_ms.max(1)),
        "never" => Durability::Never,
        other => {
            anyhow::bail!("events.durability must be always, interval or never (got {other:?})")
        }
    };
    let hours = |h: u64| (h > 0).then(|| Duration::from_secs(h * 3600));
    Ok(FileEventOptions {
        durability,
        segment_size_bytes: e.segment_size_bytes,
        event_bytes_max: e.event_bytes_max,
        retention: trueline_eventlog::Retention {
            max_age: hours(e.retention_max_age_hours),
            max_total_bytes: (e.retention_max_bytes > 0).then_some(e.retention_max_bytes),
        },
        cached_sealed_segments: e.cached_sealed_segments,
        fault_hook: None,
    })
}

/// Opens the configured store without migrating it.
pub async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    Ok(open_stores(config).await?.store)
}

/// The store for a read-only look beside a server that may be running (`migrate status`):
/// SQLite without the checkpointer, which belongs to whoever holds the server lock.
pub async fn open_store_as_guest(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    Ok(open_stores_with(config, false).await?.store)
}

/// The opened store, with its concrete handle.
pub struct Stores {
    pub store: Arc<dyn Store>,
    pub pg: Option<PgStore>,
    pub sqlite: Option<SqliteStore>,
}

/// Opens the configured store (not migrated).
pub async fn open_stores(config: &Config) -> anyhow::Result<Stores> {
    open_stores_with(config, true).await
}

async fn open_stores_with(config: &Config, owner: bool) -> anyhow::Result<Stores> {
    let url = config.database_url();
    let acquire_timeout = Duration::from_millis(config.database.acquire_timeout_ms);
    if config.is_postgres() {
        let options = PgOptions {
            max_connections: config.database.max_connections,
            acquire_timeout,
            ..PgOptions::default()
        };
        let store = PgStore::connect(&url, options)
            .await
            .context("connecting to PostgreSQL")?;
        Ok(Stores {
            store: Arc::new(store.clone()),
            pg: Some(store),
            sqlite: None,
        })
    } else if url.starts_with("sqlite:") {
        std::fs::create_dir_all(&config.data_dir).with_context(|| {
            format!("creating the data directory {}", config.data_dir.display())
        })?;
        let options = SqliteOptions {
            acquire_timeout,
            checkpoints: owner,
            ..SqliteOptions::default()
        };
        let store = SqliteStore::connect(&url, options)
            .await
            .context("opening SQLite")?;
        Ok(Stores {
            store: Arc::new(store.clone()),
            pg: None,
            sqlite: Some(store),
        })
    } else {
        anyhow::bail!(
            "database.url must start with sqlite:// or postgres:// (got {})",
            crate::config::redact_url(&url)
        )
    }
}

pub struct Application {
    listener: TcpListener,
    router: axum::Router,
    pub state: State,
    config: Config,
    trusted_proxies: Arc<[crate::client_addr::Cidr]>,
    /// The file event log, its id and the position marked at start, whose mark in the
    /// database a worker moves forward.
    log_marks: Option<(Arc<FileEventStore>, uuid::Uuid, u64)>,
    /// SQLite: held while this server runs (one server per database file).
    _sqlite_lock: Option<std::fs::File>,
    /// SQLite: closed when the server stops, so its checkpointer's last round truncates the
    /// WAL before the process exits.
    sqlite: Option<SqliteStore>,
    /// PostgreSQL: closed when the server stops, so each connection ends with a goodbye
    /// instead of being cut (which PostgreSQL logs as an unexpected end of the client's
    /// connection).
    pg: Option<PgStore>,
}

/// How long closing the PostgreSQL pool may wait for connections still in use.
const PG_CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// The file of a `sqlite:` URL.
pub fn sqlite_path(url: &str) -> String {
    url.trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:")
        .split('?')
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// An embedded database serves exactly one server process (and is migrated by nothing else
/// while one runs): takes `<database>.server-lock`; a second server, or `trueline migrate`
/// beside a running one, gets a clear error. `None` for PostgreSQL. Taken before anything
/// writes to the database: a second server used to migrate the live database first.
pub fn lock_sqlite(config: &Config) -> anyhow::Result<Option<std::fs::File>> {
    let url = config.database_url();
    // Not SQLite (PostgreSQL, or a scheme opening the store will refuse): no file to lock.
    if config.is_postgres() || !url.starts_with("sqlite:") {
        return Ok(None);
    }
    let path = sqlite_path(&url);
    let lock_path = format!("{path}.server-lock");
    if let Some(dir) = std::path::Path::new(&lock_path).parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the directory of {lock_path}"))?;
    }
    let lock = std::fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("opening {lock_path}"))?;
    match lock.try_lock() {
        Ok(()) => Ok(Some(lock)),
        Err(std::fs::TryLockError::WouldBlock) => {
            anyhow::bail!("another trueline server is using {path} (it holds {lock_path})")
        }
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("locking {lock_path}"))
        }
    }
}

/// With the lock held: releases at once what a previous, dead process still held (pending
/// idempotency claims, outbox and delivery leases) instead of letting retries wait up to
/// `idempotency.lock_ms` and the relay up to `outbox.lease_s`.
async fn release_leftovers(sqlite: &SqliteStore, now: time::OffsetDateTime) -> anyhow::Result<()> {
    let released = sqlite
        .release_leftovers(now)
        .await
        .context("releasing what a previous process held")?;
    if released.any() {
        tracing::info!(
            event = "db.leftovers_released",
            idempotency_claims = released.idempotency_claims,
            outbox_leases = released.outbox_leases,
            delivery_leases = released.delivery_leases,
        );
    }
    Ok(())
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        Self::build_with_clock(config, Arc::new(SystemClock)).await
    }

    /// Like [`build`](Self::build) with a chosen clock (tests of expiry and deadlines).
    pub async fn build_with_clock(config: Config, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        Self::build_with(config, clock, axum::Router::new()).await
    }

    /// Like [`build_with_clock`](Self::build_with_clock) plus extra routes under the same
    /// middleware (tests only).
    pub async fn build_with(
        config: Config,
        clock: Arc<dyn Clock>,
        extra: axum::Router<State>,
    ) -> anyhow::Result<Self> {
        Self::build_with_hooks(config, clock, extra, TestHooks::default()).await
    }

    /// Like [`build_with`](Self::build_with) plus test-only fault injection.
    #[doc(hidden)]
    pub async fn build_with_hooks(
        config: Config,
        clock: Arc<dyn Clock>,
        extra: axum::Router<State>,
        hooks: TestHooks,
    ) -> anyhow::Result<Self> {
        // reqwest (webhooks) uses rustls without a built-in provider: install ring's once.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let trusted_proxies: Arc<[crate::client_addr::Cidr]> =
            crate::client_addr::parse_all(&config.server.trusted_proxies)
                .map_err(|e| anyhow::anyhow!("server.trusted_proxies: {e}"))?
                .into();
        // What can refuse the start without the database goes first: a start that fails on
        // its address or its settings must not have migrated a (shared) database before.
        let listener = TcpListener::bind(&config.server.bind)
            .await
            .with_context(|| format!("binding {}", config.server.bind))?;
        let passwords = PasswordHasher::new(PasswordCost {
            memory_kib: config.auth.password_memory_kib,
            iterations: config.auth.password_iterations,
        })?;
        if config.events.backend == "file" {
            file_options(&config)?;
        }
        // The server lock first: opening the store starts its checkpointer, which must never
        // run beside another server's (a refused second server's last round truncated the
        // live WAL under the running one).
        let sqlite_lock = lock_sqlite(&config)?;
        let Stores { store, pg, sqlite } = open_stores(&config).await?;
        let applied = match store.migrate_up().await {
            Ok(applied) => applied,
            Err(e) => {
                let cause = match &pg {
                    Some(pg) => pg.connection_error().await,
                    None => None,
                };
                return Err(anyhow::Error::from(e).context(match cause {
                    Some(cause) => {
                        format!("applying migrations: cannot connect to PostgreSQL: {cause}")
                    }
                    None => "applying migrations".to_owned(),
                }));
            }
        };
        if !applied.is_empty() {
            tracing::info!(event = "db.migrated", versions = ?applied, backend = store.backend());
        }
        if let Some(sqlite) = &sqlite {
            release_leftovers(sqlite, clock.now()).await?;
        }
        let settings = HttpSettings {
            body_limit_bytes: config.server.body_limit_bytes,
            request_timeout: Duration::from_millis(config.server.request_timeout_ms),
            body_read_timeout: Duration::from_millis(config.server.body_read_timeout_ms),
            token_ttl: Duration::from_secs(u64::from(config.auth.token_ttl_days) * 24 * 3600),
            login_failures_max: config.auth.login_failures_max,
            login_failure_window: Duration::from_secs(config.auth.login_failure_window_s),
            idempotency_lock: Duration::from_millis(
                config
                    .idempotency
                    .lock_ms
                    .max(config.server.request_timeout_ms + 1_000),
            ),
            events_body_limit_bytes: config.events.body_limit_bytes,
            event_bytes_max: config.events.event_bytes_max,
            published_assessments_max: config.assessments.published_max,
            submit_grace: Duration::from_secs(config.assessments.submit_grace_s),
            subscriptions_per_org: config.events.subscriptions_per_org,
        };
        // The embedded log is paired with its database (`log_pairing`) on the embedded
        // configuration; with PostgreSQL every instance keeps a log of its own.
        let paired = config.events.backend == "file" && !config.is_postgres();
        if paired {
            crate::log_pairing::check_before_open(store.as_ref(), &config.eventlog_dir()).await?;
        }
        let (events, file_log) = open_events_with(&config, pg.as_ref(), &hooks)?;
        let log_marks = match file_log.filter(|_| paired) {
            Some(log) => {
                let (log_id, marked) = crate::log_pairing::check_at_start(
                    store.as_ref(),
                    &config.eventlog_dir(),
                    &log,
                    config.events.durability == "always",
                    clock.now(),
                )
                .await?;
                Some((log, log_id, marked))
            }
            None => None,
        };
        let metrics = telemetry::metrics_handle();
        let mut state = trueline_http::state::SharedState::new(
            store,
            events,
            clock,
            settings,
            passwords,
            Arc::new(move || metrics.render()),
        );
        state.allow_private_webhook_targets = config.webhooks.allow_private_targets;
        let l = &config.limits;
        state.limits = Arc::new(trueline_http::limits::Limits::new(
            trueline_http::limits::LimitSettings {
                enabled: l.enabled,
                per_ip_per_second: l.per_ip_per_second,
                per_ip_burst: l.per_ip_burst,
                per_token_per_second: l.per_token_per_second,
                per_token_burst: l.per_token_burst,
                auth_per_ip_per_minute: l.auth_per_ip_per_minute,
                auth_per_ip_burst: l.auth_per_ip_burst,
                max_in_flight: l.max_in_flight,
                max_in_flight_per_client: l.max_in_flight_per_client,
            },
        ));
        trueline_http::limits::spawn_sweeper(state.limits.clone());
        if config.inventory.combine_deltas {
            state.combiner = Some(
                trueline_http::combiner::Combiner::start(
                    state.store.clone(),
                    config.inventory.combine_max_batch,
                    config.inventory.combine_queue,
                )
                .context("starting the delta combiner")?,
            );
        }
        state.outbox_lag_warn = Duration::from_secs(config.outbox.lag_warn_s);
        let state = State::from(state);
        let router = trueline_http::app_with(state.clone(), extra);
        Ok(Self {
            listener,
            router,
            state,
            config,
            trusted_proxies,
            log_marks,
            _sqlite_lock: sqlite_lock,
            sqlite,
            pg,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// Serves until `shutdown` resolves, then: `/readyz` fails for `shutdown_drain_ms` while
    /// requests are still served, the listener closes, in-flight requests get
    /// `shutdown_grace_ms` to finish, and the store is closed.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let addr = self.local_addr();
        tracing::info!(
            event = "server.started",
            address = %addr,
            backend = self.state.store.backend(),
        );
        let (stop_workers, workers_stopped) = tokio::sync::watch::channel(false);
        let mut workers =
            crate::workers::spawn_all(&self.state, &self.config, workers_stopped.clone());
        let durable = self.config.events.durability == "always";
        let log_marks = self.log_marks.clone().filter(|_| durable);
        if let Some((log, log_id, marked)) = log_marks.clone() {
            workers.push(tokio::spawn(crate::log_pairing::keep_marking(
                self.state.store.clone(),
                log,
                log_id,
                marked,
                self.state.clock.clone(),
                workers_stopped,
            )));
        }
        let state_for_shutdown = self.state.clone();
        let drain = Duration::from_millis(self.config.server.shutdown_drain_ms);
        let grace = Duration::from_millis(self.config.server.shutdown_grace_ms);
        let closing = Arc::new(tokio::sync::Notify::new());
        let closing_signal = closing.clone();
        let graceful = async move {
            shutdown.await;
            state_for_shutdown.begin_shutdown();
            tracing::info!(
                event = "server.draining",
                drain_ms = drain.as_millis() as u64
            );
            tokio::time::sleep(drain).await;
            tracing::info!(event = "server.closing_listener");
            closing_signal.notify_one();
        };
        let configured = self.config.server.max_connections;
        let open_files_limit = crate::open_files::raise_limit();
        let open_files = crate::open_files::open_now();
        let outbound = u64::from(self.config.database.max_connections)
            + u64::from(self.config.webhooks.concurrency);
        let max_connections =
            crate::open_files::connection_cap(configured, open_files_limit, open_files, outbound);
        if max_connections < configured {
            tracing::warn!(
                event = "server.connections_capped",
                configured,
                max_connections,
                open_files_limit,
                open_files,
            );
        }
        let limits = crate::serve::ConnectionLimits {
            max_connections,
            max_connections_per_client: self.config.server.max_connections_per_client,
            header_read_timeout: Duration::from_millis(self.config.server.header_read_timeout_ms),
            write_stall_timeout: Duration::from_millis(self.config.server.write_stall_timeout_ms),
            max_request_head_bytes: self.config.server.max_request_head_bytes,
            trusted_proxies: self.trusted_proxies.clone(),
        };
        let server = crate::serve::serve(self.listener, self.router, limits, graceful);
        let deadline = async move {
            closing.notified().await;
            tokio::time::sleep(grace).await;
        };
        tokio::select! {
            () = server => {}
            () = deadline => {
                tracing::warn!(event = "server.grace_expired", grace_ms = grace.as_millis() as u64);
            }
        }
        // Workers finish their current step, within the grace once more: one stuck on a
        // dependency that stopped answering (a blackholed database) must not keep the process
        // from exiting (a second signal ends the process at once: `shutdown_signal`).
        let _ = stop_workers.send(true);
        let aborts: Vec<_> = workers
            .iter()
            .map(tokio::task::JoinHandle::abort_handle)
            .collect();
        if tokio::time::timeout(grace, futures_util::future::join_all(workers))
            .await
            .is_err()
        {
            let unfinished = aborts.iter().filter(|a| !a.is_finished()).count();
            tracing::warn!(
                event = "server.workers_unfinished",
                unfinished,
                grace_ms = grace.as_millis() as u64
            );
            for abort in aborts {
                abort.abort();
            }
        }
        // The last mark, once nothing appends any more (the relay stopped with the workers).
        if let Some((log, log_id, _)) = log_marks {
            crate::log_pairing::mark_now(
                self.state.store.as_ref(),
                &log,
                log_id,
                self.state.clock.now(),
            )
            .await;
        }
        if let Some(sqlite) = &self.sqlite {
            sqlite.close().await;
        }
        if let Some(pg) = &self.pg
            && tokio::time::timeout(PG_CLOSE_TIMEOUT, pg.close())
                .await
                .is_err()
        {
            tracing::warn!(
                event = "server.pool_not_closed",
                timeout_ms = PG_CLOSE_TIMEOUT.as_millis() as u64,
                "PostgreSQL connections still in use when the server stopped"
            );
        }
        tracing::info!(event = "server.stopped");
        Ok(())
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
/// A second signal while the server drains (a second or more after the first) stops it at
/// once (exit code 130): an operator who asks twice does not want to wait out the grace
/// periods. The listeners are registered once,
/// before the first signal, so a second one sent right after the first is not missed.
pub async fn shutdown_signal() {
    let mut signals = Signals::new();
    signals.next().await;
    let first = std::time::Instant::now();
    tracing::info!(event = "server.signal_received");
    tokio::spawn(async move {
        loop {
            signals.next().await;
            // One Ctrl-C can arrive as two signals (a process manager forwarding a SIGTERM
            // after the terminal's SIGINT): only one a second later counts as asking again.
            if first.elapsed() >= Duration::from_secs(1) {
                break;
            }
        }
        tracing::warn!(event = "server.forced_exit", code = 130);
        std::process::exit(130);
    });
}

/// SIGINT (Ctrl-C) and SIGTERM, as one stream.
struct Signals {
    #[cfg(unix)]
    interrupt: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    terminate: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn new() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Self {
                interrupt: signal(SignalKind::interrupt()).ok(),
                terminate: signal(SignalKind::terminate()).ok(),
            }
        }
        #[cfg(not(unix))]
        Self {}
    }

    async fn next(&mut self) {
        #[cfg(unix)]
        {
            async fn one(signal: &mut Option<tokio::signal::unix::Signal>) {
                match signal {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            }
            tokio::select! {
                () = one(&mut self.interrupt) => {},
                () = one(&mut self.terminate) => {},
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
