//! The state every handler shares.

use crate::auth::{LoginLimiter, PasswordHasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use trueline_core::clock::Clock;
use trueline_store::Store;
use trueline_store::events::EventStore;

/// Transport settings the server's configuration decides.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// Largest accepted request body.
    pub body_limit_bytes: usize,
    /// Longest a request may take before a 503 `timeout`.
    pub request_timeout: Duration,
    /// Longest a request body may pause before a 408 `request_timeout` (`body_read`).
    pub body_read_timeout: Duration,
    /// Lifetime of a new API token.
    pub token_ttl: Duration,
    /// Failed logins allowed per (email, client) per window; per email from anywhere ten
    /// times as many, per client four times (`accounts::create_token`).
    pub login_failures_max: u32,
    pub login_failure_window: Duration,
    /// How long an idempotency claim stays locked to its request (longer than any request
    /// may take); after that a retry takes it over.
    pub idempotency_lock: Duration,
    /// Largest body of the event routes (a batch of up to 1000 events).
    pub events_body_limit_bytes: usize,
    /// Largest `data` + `metadata` of one event.
    pub event_bytes_max: usize,
    /// Published assessments per organization.
    pub published_assessments_max: u32,
    /// How long after its deadline a submission is still accepted (network latency).
    pub submit_grace: Duration,
    /// Event subscriptions (SSE) open at once per organization on this instance.
    pub subscriptions_per_org: usize,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            body_limit_bytes: 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            body_read_timeout: Duration::from_secs(10),
            token_ttl: Duration::from_secs(30 * 24 * 3600),
            login_failures_max: 5,
            login_failure_window: Duration::from_secs(15 * 60),
            idempotency_lock: Duration::from_secs(60),
            events_body_limit_bytes: 16 * 1024 * 1024,
            event_bytes_max: 1024 * 1024,
            published_assessments_max: 3,
            submit_grace: Duration::from_secs(30),
            subscriptions_per_org: 100,
        }
    }
}

/// Renders the Prometheus exposition (owned by the server, which installs the recorder).
pub type MetricsRenderer = Arc<dyn Fn() -> String + Send + Sync>;

/// What every handler shares, behind one `Arc`: axum clones the state for the router, every
/// `from_fn` layer and the request extension of every request, and one reference count is
/// far cheaper than the fifteen the fields would cost (measured: cloning and dropping the
/// unshared struct took ~6 % of the server's CPU under `events-append` at 64 clients).
#[derive(Clone)]
pub struct AppState(Arc<SharedState>);

impl std::ops::Deref for AppState {
    type Target = SharedState;
    fn deref(&self) -> &SharedState {
        &self.0
    }
}

impl From<SharedState> for AppState {
    fn from(shared: SharedState) -> Self {
        AppState(Arc::new(shared))
    }
}

/// Built with [`SharedState::new`] (defaults), adjusted, then frozen with `AppState::from`.
pub struct SharedState {
    pub store: Arc<dyn Store>,
    pub events: Arc<dyn EventStore>,
    pub clock: Arc<dyn Clock>,
    pub settings: Arc<HttpSettings>,
    pub passwords: PasswordHasher,
    pub login_limiter: Arc<LoginLimiter>,
    pub metrics: MetricsRenderer,
    /// Set when shutdown begins: `/readyz` fails first so load balancers stop sending traffic
    /// while in-flight requests finish.
    pub draining: Arc<AtomicBool>,
    /// Flips to `true` when shutdown begins; long-lived responses (SSE) end on it.
    pub shutdown: tokio::sync::watch::Sender<bool>,
    /// Poked after every successful mutation so the outbox relay publishes at once instead of
    /// waiting for its next poll.
    pub outbox_wake: Arc<tokio::sync::Notify>,
    /// Webhook settings the routes validate against.
    pub allow_private_webhook_targets: bool,
    /// Age of the oldest unpublished outbox row, in milliseconds (kept by the lag worker).
    pub outbox_lag_ms: Arc<std::sync::atomic::AtomicU64>,
    /// `/readyz` warns when the outbox lag exceeds this.
    pub outbox_lag_warn: Duration,
    /// Rate limits and the in-flight cap.
    pub limits: Arc<crate::limits::Limits>,
    /// Hot-row combining of quantity deltas (`None`: one transaction per request).
    pub combiner: Option<Arc<crate::combiner::Combiner>>,
    /// Open event subscriptions per organization (see `events::SubscriptionSlot`).
    pub subscriptions: crate::slots::KeyedSlots<trueline_core::ids::OrgId>,
}

impl SharedState {
    pub fn new(
        store: Arc<dyn Store>,
        events: Arc<dyn EventStore>,
        clock: Arc<dyn Clock>,
        settings: HttpSettings,
        passwords: PasswordHasher,
        metrics: MetricsRenderer,
    ) -> Self {
        let login_limiter = Arc::new(LoginLimiter::new(
            settings.login_failures_max,
            settings.login_failure_window,
        ));
        Self {
            store,
            events,
            clock,
            settings: Arc::new(settings),
            passwords,
            login_limiter,
            metrics,
            draining: Arc::new(AtomicBool::new(false)),
            shutdown: tokio::sync::watch::channel(false).0,
            outbox_wake: Arc::new(tokio::sync::Notify::new()),
            allow_private_webhook_targets: false,
            outbox_lag_ms: Arc::new(std::sync::atomic::AtomicU64::new(0)),
            outbox_lag_warn: Duration::from_secs(30),
            limits: Arc::new(crate::limits::Limits::new(
                crate::limits::LimitSettings::default(),
            )),
            combiner: None,
            subscriptions: crate::slots::KeyedSlots::default(),
        }
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Starts draining: `/readyz` fails and live streams end.
    pub fn begin_shutdown(&self) {
        self.draining.store(true, Ordering::SeqCst);
        self.shutdown.send_replace(true);
    }
}
