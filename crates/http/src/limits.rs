//! Rate limits and load shedding for `/api/…` (health, metrics and docs are never limited).
//!
//! - **Load shedding**: at most `max_in_flight` API requests run at once; beyond that the
//!   server answers `503 overloaded` with `Retry-After` at once instead of queueing without
//!   bound (queues turn a burst into timeouts for everyone). One client holds at most
//!   `max_in_flight_per_client` of them (`429 rate_limited` beyond): a request holds its
//!   place while its body arrives, and one client sending many bodies slowly (each may pause
//!   up to the body read timeout) held every place the server has.
//! - **Rate limits** (GCRA, `governor`): per client IP, per bearer token, and a much stricter
//!   one per IP on signup, login and share-link registration (credential stuffing, spam).
//!   A refusal is `429 rate_limited` with `Retry-After`; every limited response carries
//!   `RateLimit-Policy` and `RateLimit` (IETF draft-ietf-httpapi-ratelimit-headers).
//!
//! Limits are per server instance: behind a load balancer the effective limit is the sum.

use crate::problem::{ApiError, codes};
use crate::state::AppState;
use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock as _, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use sha2::{Digest, Sha256};
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

type Limiter<K> =
    RateLimiter<K, DefaultKeyedStateStore<K>, DefaultClock, StateInformationMiddleware>;

static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

#[derive(Debug, Clone)]
pub struct LimitSettings {
    pub enabled: bool,
    pub per_ip_per_second: u32,
    pub per_ip_burst: u32,
    pub per_token_per_second: u32,
    pub per_token_burst: u32,
    /// Signup, login and share-link registration, per IP.
    pub auth_per_ip_per_minute: u32,
    pub auth_per_ip_burst: u32,
    pub max_in_flight: usize,
    /// Of `max_in_flight`, what one client (IP, IPv6 /64) may hold at once.
    pub max_in_flight_per_client: usize,
}

impl Default for LimitSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            per_ip_per_second: 200,
            per_ip_burst: 400,
            per_token_per_second: 100,
            per_token_burst: 200,
            auth_per_ip_per_minute: 20,
            auth_per_ip_burst: 10,
            max_in_flight: 1024,
            max_in_flight_per_client: 128,
        }
    }
}

/// One limit: the limiter and the policy text it advertises.
struct Limit<K: std::hash::Hash + Eq + Clone> {
    name: &'static str,
    limiter: Limiter<K>,
    burst: u32,
    window_s: u64,
}

impl<K: std::hash::Hash + Eq + Clone> Limit<K> {
    fn new(name: &'static str, quota: Quota, burst: u32, window_s: u64) -> Self {
        Self {
            name,
            limiter: RateLimiter::keyed(quota).with_middleware(),
            burst,
            window_s,
        }
    }

    fn policy(&self) -> String {
        format!("\"{}\";q={};w={}", self.name, self.burst, self.window_s)
    }

    /// `Ok(remaining)` or `Err(seconds to wait)`.
    fn check(&self, key: &K) -> Result<u32, u64> {
        match self.limiter.check_key(key) {
            Ok(snapshot) => Ok(snapshot.remaining_burst_capacity()),
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                Err(wait.as_secs() + u64::from(wait.subsec_nanos() > 0))
            }
        }
    }
}

pub struct Limits {
    settings: LimitSettings,
    in_flight: Arc<Semaphore>,
    /// Requests in flight per client key.
    client_in_flight: crate::slots::KeyedSlots<IpAddr>,
    per_ip: Limit<IpAddr>,
    per_token: Limit<[u8; 16]>,
    auth: Limit<IpAddr>,
}

fn nonzero(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n.max(1)).unwrap_or(NonZeroU32::MIN)
}

impl Limits {
    pub fn new(settings: LimitSettings) -> Self {
        let per_second =
            |rate: u32, burst: u32| Quota::per_second(nonzero(rate)).allow_burst(nonzero(burst));
        let window = |rate: u32, burst: u32| u64::from(burst.div_ceil(rate.max(1)).max(1));
        Self {
            in_flight: Arc::new(Semaphore::new(settings.max_in_flight.max(1))),
            client_in_flight: crate::slots::KeyedSlots::default(),
            per_ip: Limit::new(
                "ip",
                per_second(settings.per_ip_per_second, settings.per_ip_burst),
                settings.per_ip_burst,
                window(settings.per_ip_per_second, settings.per_ip_burst),
            ),
            per_token: Limit::new(
                "token",
                per_second(settings.per_token_per_second, settings.per_token_burst),
                settings.per_token_burst,
                window(settings.per_token_per_second, settings.per_token_burst),
            ),
            auth: Limit::new(
                "auth",
                Quota::per_minute(nonzero(settings.auth_per_ip_per_minute))
                    .allow_burst(nonzero(settings.auth_per_ip_burst)),
                settings.auth_per_ip_burst,
                60,
            ),
            settings,
        }
    }

    /// Forgets keys whose buckets are full again (bounds memory; run periodically).
    pub fn forget_idle(&self) {
        self.per_ip.limiter.retain_recent();
        self.per_token.limiter.retain_recent();
        self.auth.limiter.retain_recent();
    }
}

fn is_auth_route(method: &Method, path: &str) -> bool {
    *method == Method::POST
        && (path == "/api/v1/auth/signup"
            || path == "/api/v1/auth/tokens"
            || (path.starts_with("/api/v1/public/share/") && path.ends_with("/register")))
}

fn limited(policy: String, wait_s: u64, name: &str) -> Response {
    tracing::info!(
        event = "http.rate_limited",
        limit = name,
        retry_after_s = wait_s
    );
    let mut response = ApiError::new(
        codes::RATE_LIMITED,
        format!("the {name} rate limit is exhausted; retry after {wait_s} s"),
    )
    .retry_after(wait_s)
    .into_response();
    if let Ok(v) = HeaderValue::from_str(&policy) {
        response.headers_mut().insert(RATELIMIT_POLICY.clone(), v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("\"{name}\";r=0;t={wait_s}")) {
        response.headers_mut().insert(RATELIMIT.clone(), v);
    }
    response
}

/// The key an address is limited under: an IPv6 client gets a whole /64 (one customer's
/// network; counting each of its 2^64 addresses apart would let it rotate past every
/// limit), and an IPv4-mapped IPv6 address is the IPv4 address.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from_bits(
                v6.to_bits() & !((1u128 << 64) - 1),
            )),
        },
    }
}

pub async fn layer(request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    if !path.starts_with("/api/") {
        return next.run(request).await;
    }
    let Some(state) = request.extensions().get::<AppState>().cloned() else {
        return next.run(request).await;
    };
    let limits = &state.limits;
    let Ok(_permit) = limits.in_flight.clone().try_acquire_owned() else {
        tracing::warn!(
            event = "http.shed",
            max_in_flight = limits.settings.max_in_flight
        );
        metrics::counter!("http_requests_shed_total").increment(1);
        return ApiError::new(
            codes::OVERLOADED,
            "the server is at capacity; retry shortly",
        )
        .retry_after(1)
        .into_response();
    };
    if !limits.settings.enabled {
        return next.run(request).await;
    }
    let ip = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| client_key(c.0.ip()));
    let mut advertised: Option<(String, String)> = None;
    let mut _client_slot = None;
    if let Some(ip) = ip {
        let cap = limits.settings.max_in_flight_per_client.max(1);
        // Given back when the request is answered (or dropped).
        let Some(slot) = limits.client_in_flight.take(ip, cap) else {
            tracing::info!(
                event = "http.rate_limited",
                limit = "in_flight",
                max_in_flight_per_client = cap
            );
            return ApiError::new(
                codes::RATE_LIMITED,
                format!(
                    "this client has {cap} requests in flight, its share of the server; \
                     retry when one is answered"
                ),
            )
            .retry_after(1)
            .into_response();
        };
        _client_slot = Some(slot);
        if is_auth_route(request.method(), &path) {
            match limits.auth.check(&ip) {
                Ok(remaining) => {
                    advertised =
                        Some((limits.auth.policy(), format!("\"auth\";r={remaining};t=60")))
                }
                Err(wait) => return limited(limits.auth.policy(), wait, "auth"),
            }
        }
        match limits.per_ip.check(&ip) {
            Ok(remaining) => {
                advertised.get_or_insert((
                    limits.per_ip.policy(),
                    format!("\"ip\";r={remaining};t={}", limits.per_ip.window_s),
                ));
            }
            Err(wait) => return limited(limits.per_ip.policy(), wait, "ip"),
        }
    }
    // Only a credential shaped like a token gets a bucket: anything else is refused with
    // 401 without a lookup, under the per-address limit alone. (A made-up value shaped
    // like a token still gets a bucket until the sweep; the per-address limit bounds how
    // fast one client can make them.)
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(crate::extract::bearer_token)
        .filter(|t| crate::auth::looks_like_token(t));
    if let Some(token) = token {
        // The bucket key is a hash of the token: tokens never sit in memory as keys. Of the
        // token itself, so `Bearer t`, `bearer t` and `Bearer  t` (one token to the
        // authenticator) share one bucket.
        let digest = Sha256::digest(token.as_bytes());
        let mut key = [0u8; 16];
        key.copy_from_slice(&digest[..16]);
        match limits.per_token.check(&key) {
            Ok(remaining) => {
                advertised = Some((
                    limits.per_token.policy(),
                    format!("\"token\";r={remaining};t={}", limits.per_token.window_s),
                ))
            }
            Err(wait) => return limited(limits.per_token.policy(), wait, "token"),
        }
    }
    let mut response = next.run(request).await;
    if let Some((policy, current)) = advertised
        && let (Ok(p), Ok(c)) = (
            HeaderValue::from_str(&policy),
            HeaderValue::from_str(&current),
        )
    {
        response.headers_mut().insert(RATELIMIT_POLICY.clone(), p);
        response.headers_mut().insert(RATELIMIT.clone(), c);
    }
    response
}

/// Sweeps idle limiter keys every minute until the process ends.
pub fn spawn_sweeper(limits: Arc<Limits>) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(60)).await;
            limits.forget_idle();
        }
    });
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests: a panic is the failure report.
mod tests {
    use super::client_key;
    use std::net::IpAddr;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv6_clients_are_limited_per_64_and_mapped_ipv4_as_ipv4() {
        assert_eq!(
            client_key(ip("2001:db8:1:2:aaaa:bbbb:cccc:dddd")),
            ip("2001:db8:1:2::")
        );
        assert_eq!(
            client_key(ip("2001:db8:1:2::1")),
            client_key(ip("2001:db8:1:2:ffff::9"))
        );
        assert_ne!(
            client_key(ip("2001:db8:1:2::1")),
            client_key(ip("2001:db8:1:3::1"))
        );
        assert_eq!(client_key(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(client_key(ip("192.0.2.7")), ip("192.0.2.7"));
    }
}
