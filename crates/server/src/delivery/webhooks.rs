//! Webhook deliveries: each is a job, attempted with a per-attempt timeout, retried with
//! exponential backoff and jitter, and moved to the dead-letter list after `max_attempts`.
//!
//! Every request is signed: `Trueline-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of
//! "<t>.<body>" with the webhook's secret>`. Receivers recompute it, compare in constant
//! time, and reject old timestamps (replays).

use super::backoff;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use trueline_core::ids::OrgId;
use trueline_http::State;
use trueline_http::webhooks::is_private;
use trueline_store::{AttemptOutcome, DeliveryAttempt, DeliveryLease, DueDelivery};

#[derive(Debug, Clone)]
pub struct WebhookSettings {
    pub timeout: Duration,
    pub max_attempts: u32,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    pub allow_private_targets: bool,
    /// How often to look for due deliveries.
    pub poll: Duration,
    /// Deliveries attempted at once.
    pub concurrency: u32,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            max_attempts: 15,
            backoff_base: Duration::from_secs(10),
            backoff_max: Duration::from_secs(3600),
            allow_private_targets: false,
            poll: Duration::from_millis(500),
            concurrency: 8,
        }
    }
}

/// `t=<unix>,v1=<hex hmac>` for `body` at `unix`.
pub fn signature(secret: &str, unix: i64, body: &[u8]) -> String {
    // HMAC accepts keys of any length: `new_from_slice` cannot fail for it.
    #[allow(clippy::expect_used)]
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(unix.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("t={unix},v1={hex}")
}

/// Resolves the URL's host once and checks every address, so DNS cannot swap a public
/// address for a private one between the check and the connection (the request is pinned
/// to the checked address).
/// `None`: the host is an IP address (checked here; nothing to resolve or pin).
async fn resolve(
    url: &reqwest::Url,
    allow_private: bool,
) -> Result<Option<(String, SocketAddr)>, String> {
    let port = url.port_or_known_default().ok_or("the URL has no port")?;
    // An IP literal is checked as it is: its `host_str` is bracketed for IPv6 (`[::1]`),
    // which no resolver accepts.
    let literal = match url.host().ok_or("the URL has no host")? {
        url::Host::Ipv4(v4) => Some(std::net::IpAddr::V4(v4)),
        url::Host::Ipv6(v6) => Some(std::net::IpAddr::V6(v6)),
        url::Host::Domain(_) => None,
    };
    if let Some(ip) = literal {
        if !allow_private && is_private(ip) {
            return Err(format!("{ip} is a private address; refused"));
        }
        return Ok(None);
    }
    let host = url.host_str().ok_or("the URL has no host")?.to_owned();
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .collect();
    let first = *addrs
        .first()
        .ok_or_else(|| format!("{host} has no address"))?;
    if !allow_private && addrs.iter().any(|a| is_private(a.ip())) {
        return Err(format!("{host} resolves to a private address; refused"));
    }
    Ok(Some((host, first)))
}

async fn attempt(
    d: &DueDelivery,
    settings: &WebhookSettings,
    unix: i64,
) -> (Option<u16>, Option<String>) {
    let body = serde_json::to_vec(&serde_json::json!({
        "id": d.event_id,
        "type": d.event_type,
        "data": d.payload,
    }))
    .unwrap_or_default();
    let url = match reqwest::Url::parse(&d.url) {
        Ok(url) => url,
        Err(e) => return (None, Some(format!("invalid URL: {e}"))),
    };
    // No proxy from the environment (`HTTPS_PROXY`, …): a proxy resolves the name itself, so
    // the address checked and pinned below would not be the one called.
    let mut client = reqwest::Client::builder()
        .timeout(settings.timeout)
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none());
    // The lookup has its own time limit: the system resolver may take far longer than the
    // request's timeout, and the attempt must end well within its lease.
    let resolved = tokio::time::timeout(
        settings.timeout,
        resolve(&url, settings.allow_private_targets),
    )
    .await
    .unwrap_or_else(|_| Err("resolving the host timed out".to_owned()));
    match resolved {
        Ok(Some((host, addr))) => client = client.resolve(&host, addr),
        Ok(None) => {}
        Err(e) => return (None, Some(e)),
    }
    let client = match client.build() {
        Ok(c) => c,
        Err(e) => return (None, Some(e.to_string())),
    };
    let sent = client
        .post(url)
        .header("content-type", "application/json")
        .header("user-agent", "trueline-webhooks/1")
        .header("trueline-signature", signature(&d.secret, unix, &body))
        .header("trueline-event-id", d.event_id.to_string())
        .header("trueline-delivery-id", d.id.to_string())
        .body(body)
        .send()
        .await;
    match sent {
        Ok(response) if response.status().is_success() => (Some(response.status().as_u16()), None),
        Ok(response) => (
            Some(response.status().as_u16()),
            Some(format!("receiver answered {}", response.status())),
        ),
        Err(e) if e.is_timeout() => (None, Some("timed out".to_owned())),
        // Without the URL: it may carry a secret (a token in its path or query, credentials),
        // and this text is logged and listed with the attempt.
        Err(e) => (None, Some(format!("request failed: {}", e.without_url()))),
    }
}

async fn deliver(state: &State, d: DueDelivery, settings: &WebhookSettings) {
    let now = state.clock.now();
    let started = Instant::now();
    let (status, error) = attempt(&d, settings, now.unix_timestamp()).await;
    let number = d.attempts + 1;
    let outcome = if error.is_none() {
        AttemptOutcome::Succeeded
    } else if number >= settings.max_attempts {
        AttemptOutcome::Dead
    } else {
        let wait = backoff(number, settings.backoff_base, settings.backoff_max);
        AttemptOutcome::RetryAt(
            now + time::Duration::try_from(wait).unwrap_or(time::Duration::MINUTE),
        )
    };
    let (status_sent, error_sent) = (status, error.clone());
    let record = DeliveryAttempt {
        attempt: number,
        at: now,
        status,
        error,
        duration_ms: started.elapsed().as_millis() as u64,
    };
    match state.store.record_attempt(&d, record, outcome).await {
        // Logged and counted once recorded: a worker whose lease was lost decided nothing.
        Ok(true) => match outcome {
            AttemptOutcome::Succeeded => {
                tracing::info!(event = "webhook.delivered", delivery_id = %d.id, attempt = number)
            }
            AttemptOutcome::RetryAt(_) => {
                tracing::info!(event = "webhook.retry_scheduled", delivery_id = %d.id, attempt = number, error = ?error_sent)
            }
            AttemptOutcome::Dead => {
                tracing::warn!(event = "webhook.dead_lettered", delivery_id = %d.id, attempt = number, error = ?error_sent);
                metrics::counter!("jobs_dead_lettered_total", "queue" => "webhooks").increment(1);
            }
        },
        // Redelivered, or taken over by another worker after the lease ran out, while this
        // attempt ran: the delivery's state is theirs now. What was sent stays in this line.
        Ok(false) => {
            tracing::warn!(event = "webhook.lease_lost", delivery_id = %d.id, attempt = number, status = ?status_sent, error = ?error_sent)
        }
        Err(e) => {
            tracing::warn!(event = "webhook.record_failed", delivery_id = %d.id, error = %e)
        }
    }
}

/// Runs the delivery worker until `stop` flips, then lets the attempts in flight finish.
///
/// A pool of `concurrency` slots: a new delivery is leased as soon as a slot frees (a round
/// that waited for its slowest attempt let one receiver that hangs slow every delivery).
/// One organization holds at most half the slots (rounded up) and the organizations take
/// turns, so other organizations' deliveries go out beside a backlog of retries instead of
/// waiting behind it.
pub async fn run(state: State, settings: WebhookSettings, mut stop: watch::Receiver<bool>) {
    let slots = settings.concurrency.max(1) as usize;
    let per_org = settings.concurrency.div_ceil(2).max(1);
    let mut in_flight = tokio::task::JoinSet::new();
    let mut orgs_of: HashMap<tokio::task::Id, OrgId> = HashMap::new();
    loop {
        if *stop.borrow() {
            break;
        }
        while let Some(done) = in_flight.try_join_next_with_id() {
            orgs_of.remove(&finished_task(done));
        }
        let free = slots.saturating_sub(in_flight.len());
        let mut leased = 0;
        if free > 0 {
            let now = state.clock.now();
            // Longer than an attempt can take (the lookup's limit plus the request's), so no
            // other worker takes a delivery over while its attempt still runs.
            let lease =
                time::Duration::try_from(settings.timeout * 3).unwrap_or(time::Duration::MINUTE);
            let mut counts: HashMap<OrgId, u32> = HashMap::new();
            for org in orgs_of.values() {
                *counts.entry(*org).or_default() += 1;
            }
            let busy: Vec<(OrgId, u32)> = counts.into_iter().collect();
            let turns = DeliveryLease {
                per_org,
                in_flight: &busy,
            };
            match state
                .store
                .lease_deliveries(now, now + lease, free as u32, turns)
                .await
            {
                Ok(due) => {
                    leased = due.len();
                    for d in due {
                        let org = d.org_id;
                        let (state, settings) = (state.clone(), settings.clone());
                        let task =
                            in_flight.spawn(async move { deliver(&state, d, &settings).await });
                        orgs_of.insert(task.id(), org);
                    }
                }
                Err(e) => tracing::warn!(event = "webhook.lease_failed", error = %e),
            }
        }
        if leased == 0 || in_flight.len() >= slots {
            tokio::select! {
                _ = stop.changed() => {}
                () = tokio::time::sleep(settings.poll) => {}
                Some(done) = in_flight.join_next_with_id() => {
                    orgs_of.remove(&finished_task(done));
                }
            }
        }
    }
    while in_flight.join_next().await.is_some() {}
}

/// The task of a finished attempt. One that panicked is logged; its delivery is attempted
/// again once its lease runs out.
fn finished_task(done: Result<(tokio::task::Id, ()), tokio::task::JoinError>) -> tokio::task::Id {
    match done {
        Ok((id, ())) => id,
        Err(e) => {
            tracing::error!(event = "webhook.attempt_panicked", error = %e);
            e.id()
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests: a panic is the failure report.
mod tests {
    use super::*;

    #[test]
    fn signatures_are_hmac_sha256_of_timestamp_dot_body() {
        // Reference computed with: printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac secret
        let sig = signature("secret", 1_700_000_000, br#"{"a":1}"#);
        assert_eq!(
            sig,
            "t=1700000000,v1=49f24e537407743fa4a0242bb63b94b9a47ee99cbbe071ccd8a22550ae411686"
        );
        assert_ne!(sig, signature("other", 1_700_000_000, br#"{"a":1}"#));
    }

    #[tokio::test]
    async fn ip_literals_are_checked_as_they_are_and_need_no_resolving() {
        let url = |u: &str| reqwest::Url::parse(u).unwrap();
        // Bracketed IPv6 hosts used to reach the resolver as "[::1]" and always fail.
        assert_eq!(resolve(&url("http://[::1]:9000/h"), true).await, Ok(None));
        assert_eq!(
            resolve(&url("https://[2001:db8::1]/h"), false).await,
            Ok(None)
        );
        assert_eq!(resolve(&url("http://10.1.2.3/h"), true).await, Ok(None));
        for private in [
            "http://[::1]/h",
            "http://[fd00::1]/h",
            "http://127.0.0.1/h",
            "http://198.18.0.1/h",
            "http://240.0.0.1/h",
            "http://192.0.0.8/h",
            "http://[64:ff9b::a00:1]/h",   // NAT64 of 10.0.0.1
            "http://[fec0::1]/h",          // site-local
            "http://[::a00:1]/h",          // IPv4-compatible 10.0.0.1
            "http://[2002:a00:1::1]/h",    // 6to4 of 10.0.0.1
            "http://[2002:a9fe:a9fe::]/h", // 6to4 of 169.254.169.254
        ] {
            let refused = resolve(&url(private), false).await.unwrap_err();
            assert!(refused.contains("private"), "{private}: {refused}");
        }
        for public in [
            "http://8.8.8.8/h",
            "http://[64:ff9b::808:808]/h",
            "http://[2002:808:808::1]/h",
        ] {
            assert_eq!(resolve(&url(public), false).await, Ok(None), "{public}");
        }
        // Names are resolved and pinned.
        let (host, addr) = resolve(&url("http://localhost:9000/h"), true)
            .await
            .unwrap()
            .unwrap();
        assert_eq!((host.as_str(), addr.port()), ("localhost", 9000));
    }
}
