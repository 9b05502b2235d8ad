//! Dependency faults: the database going away (refused or silently unreachable), event-log
//! disk errors (ENOSPC and EIO on write and on fsync), NATS going away. Each must give a
//! quick, clear answer, change nothing, and heal on its own when the fault clears.

use crate::helpers::*;
use axum::Router;
use reqwest::Method;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use trueline::startup::TestHooks;
use trueline_eventlog::{Fault, FaultSwitch};
use trueline_store::Destination;

/// What the proxy does with connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Forwards bytes both ways.
    Open,
    /// Drops every connection at once, as a stopped server (connection refused / reset).
    Refuse,
    /// Keeps connections open and forwards nothing, as a network partition.
    Blackhole,
}

/// A TCP proxy in front of a dependency, switchable between working, refusing and silent.
struct Proxy {
    address: SocketAddr,
    mode: watch::Sender<Mode>,
}

impl Proxy {
    async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (mode, watching) = watch::channel(Mode::Open);
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let mut watching = watching.clone();
                tokio::spawn(async move {
                    let mode = *watching.borrow_and_update();
                    match mode {
                        Mode::Refuse => drop(inbound),
                        Mode::Blackhole => {
                            // Held silently until the fault changes, then dropped.
                            let _ = watching.changed().await;
                            drop(inbound);
                        }
                        Mode::Open => {
                            let Ok(outbound) = TcpStream::connect(target).await else {
                                return;
                            };
                            let (mut a, mut b) = (inbound, outbound);
                            let fault = tokio::select! {
                                _ = tokio::io::copy_bidirectional(&mut a, &mut b) => return,
                                fault = watching.wait_for(|m| *m != Mode::Open) => {
                                    fault.map_or(Mode::Refuse, |m| *m)
                                }
                            };
                            // Forwarding has stopped; a partition keeps both ends open and
                            // silent until it heals, then they drop as after a timeout.
                            if fault == Mode::Blackhole {
                                let _ = watching.wait_for(|m| *m != Mode::Blackhole).await;
                            }
                            drop((a, b));
                        }
                    }
                });
            }
        });
        Self { address, mode }
    }

    fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }
}

fn postgres_address() -> SocketAddr {
    let url = std::env::var("TRUELINE_TEST_POSTGRES_URL").expect("TRUELINE_TEST_POSTGRES_URL");
    let authority = url
        .split("://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap()
        .rsplit('@')
        .next()
        .unwrap()
        .to_owned();
    let authority = if authority.contains(':') {
        authority
    } else {
        format!("{authority}:5432")
    };
    std::net::ToSocketAddrs::to_socket_addrs(&authority)
        .unwrap()
        .next()
        .unwrap()
}

/// The same database URL with `address` as host and port.
fn through(url: &str, address: SocketAddr) -> String {
    let (scheme, rest) = url.split_once("://").unwrap();
    let (authority, path) = rest.split_once('/').unwrap();
    let user = authority
        .rsplit_once('@')
        .map(|(user, _)| format!("{user}@"))
        .unwrap_or_default();
    format!("{scheme}://{user}{address}/{path}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set TRUELINE_TEST_POSTGRES_URL and run with --ignored"]
async fn a_database_outage_is_a_quick_503_and_heals_without_a_restart() {
    let proxy = Proxy::start(postgres_address()).await;
    let app = spawn_app_with(
        Backend::Postgres,
        |c| {
            let url = c.database.url.clone().unwrap();
            c.database.url = Some(through(&url, proxy.address));
            c.database.acquire_timeout_ms = 1_000;
        },
        Router::new(),
    )
    .await;
    let ann = app.sign_up("ann@example.com").await;
    let item = app.create_item(&ann.token, "Milk", 10).await;
    let id = item["id"].as_str().unwrap().to_owned();
    let qty_path = format!("/api/v1/items/{id}/qty");
    let mut applied = 0i64;
    for (round, mode) in [Mode::Refuse, Mode::Blackhole].into_iter().enumerate() {
        let before = app.snapshot().await;
        proxy.set(mode);
        let key = format!("outage-{round}");
        let started = Instant::now();
        let refused = app
            .request(Method::PATCH, &qty_path, Some(&ann.token))
            .header("idempotency-key", &key)
            .json(&json!({"delta": -1}))
            .send()
            .await
            .unwrap();
        let took = started.elapsed();
        assert!(
            refused.headers().contains_key("retry-after"),
            "{mode:?}: Retry-After on {} {:?}",
            refused.status(),
            refused.headers()
        );
        assert_problem(refused, 503, "dependency_unavailable").await;
        assert!(
            took < Duration::from_secs(5),
            "{mode:?}: answered within the acquire timeout, not hung ({took:?})"
        );
        let read = app.get(&format!("/api/v1/items/{id}"), &ann.token).await;
        assert_problem(read, 503, "dependency_unavailable").await;
        let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
        assert_eq!(ready.status(), 503, "{mode:?}: not ready");
        assert!(ready.headers().contains_key("retry-after"), "{mode:?}");
        // The driver's error (hosts, users, databases) goes to the log, not to anyone asking.
        let body = ready.text().await.unwrap();
        assert!(!body.contains("error"), "{mode:?}: {body}");
        assert_eq!(status_of(&app, "/livez").await, 200, "{mode:?}: alive");
        proxy.set(Mode::Open);
        // No restart: the pool reconnects by itself.
        assert!(
            eventually(20, || async { status_of(&app, "/readyz").await == 200 }).await,
            "{mode:?}: ready again"
        );
        assert_eq!(
            app.snapshot().await,
            before,
            "{mode:?}: the refused request changed nothing"
        );
        // The client retries with the same key: applied exactly once.
        for _ in 0..2 {
            let retried = app
                .request(Method::PATCH, &qty_path, Some(&ann.token))
                .header("idempotency-key", &key)
                .json(&json!({"delta": -1}))
                .send()
                .await
                .unwrap();
            assert_eq!(retried.status(), 200, "{mode:?}: the retry succeeds");
        }
        applied += 1;
    }
    let item: Value = app
        .get(&format!("/api/v1/items/{id}"), &ann.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(item["qty"].as_i64(), Some(10 - applied));
    let history: Value = app
        .get(&format!("/api/v1/items/{id}/history"), &ann.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        history["data"].as_array().unwrap().len() as i64,
        1 + applied,
        "created, then one record per applied retry"
    );
}

async fn append(app: &TestApp, token: &str, n: u32) -> reqwest::Response {
    app.post(
        "/api/v1/events",
        token,
        &json!({"type": "test.fault", "stream": "faults", "data": {"n": n}}),
    )
    .await
}

async fn positions(app: &TestApp, token: &str) -> Vec<u64> {
    app.first_events(token)
        .await
        .iter()
        .map(|e| e["position"].as_u64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_log_disk_faults_refuse_appends_and_the_log_stays_whole() {
    let faults = Arc::new(FaultSwitch::default());
    let app = spawn_app_hooked(
        Backend::Sqlite,
        |c| {
            c.outbox.poll_ms = 50;
        },
        Router::new(),
        TestHooks {
            event_log_faults: Some(faults.clone()),
        },
    )
    .await;
    let ann = app.sign_up("ann@example.com").await;
    assert_eq!(append(&app, &ann.token, 0).await.status(), 201);
    let cases = [
        (Fault::WriteNoSpace { after_bytes: 7 }, 507, "storage_full"),
        (
            Fault::WriteIo { after_bytes: 7 },
            503,
            "dependency_unavailable",
        ),
        (Fault::SyncNoSpace, 507, "storage_full"),
        (Fault::SyncIo, 503, "dependency_unavailable"),
    ];
    let mut accepted = 1;
    for (n, (fault, status, code)) in cases.into_iter().enumerate() {
        faults.set(Some(fault));
        let refused = append(&app, &ann.token, 100 + n as u32).await;
        assert_problem(refused, status, code).await;
        // Inventory still works (SQLite); its event waits in the outbox.
        app.create_item(&ann.token, &format!("Item {n}"), 1).await;
        faults.set(None);
        assert_eq!(
            append(&app, &ann.token, n as u32 + 1).await.status(),
            201,
            "{fault:?}: appends resume once the fault clears"
        );
        accepted += 1;
    }
    let drained = || async {
        app.state
            .store
            .outbox_stats(Destination::EventLog)
            .await
            .map(|s| s.pending == 0)
            .unwrap_or(false)
    };
    assert!(
        eventually(30, drained).await,
        "the relay backs off and catches up"
    );
    let log = positions(&app, &ann.token).await;
    assert_eq!(
        log,
        (1..=log.len() as u64).collect::<Vec<_>>(),
        "no gaps: failed appends left no position behind"
    );
    let page: Value = app
        .get("/api/v1/events?after=0&limit=1000", &ann.token)
        .await
        .json()
        .await
        .unwrap();
    let events = page["data"].as_array().unwrap();
    let direct = events.iter().filter(|e| e["type"] == "test.fault").count();
    assert_eq!(direct, accepted, "exactly the acknowledged appends");
    assert!(
        events
            .iter()
            .all(|e| e["type"] != "test.fault" || e["data"]["n"].as_u64().unwrap() < 100),
        "no refused append is in the log"
    );
    let outbox_events = app.count("outbox").await as usize;
    assert_eq!(
        events.len() - direct,
        outbox_events,
        "every committed change exactly once"
    );
    // The files themselves: the offline verifier finds nothing wrong.
    let data_dir = app.config.data_dir.clone();
    let mut app = app;
    app.trigger_shutdown();
    let _ = app.server.take().unwrap().await;
    // This process still holds the log (its lock), and verify refuses a log in use: the
    // files are verified as copied (every append was synced before it was answered).
    let copy = tempfile::tempdir().unwrap();
    let copied = copy.path().join("eventlog");
    std::fs::create_dir_all(&copied).unwrap();
    for entry in std::fs::read_dir(data_dir.join("eventlog")).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().is_some_and(|n| n != "LOCK") {
            std::fs::copy(&path, copied.join(path.file_name().unwrap())).unwrap();
        }
    }
    let verified = std::process::Command::new(env!("CARGO_BIN_EXE_trueline"))
        .args(["eventlog", "verify", "--data-dir"])
        .arg(copy.path())
        .output()
        .unwrap();
    assert!(
        verified.status.success(),
        "verify: {}{}",
        String::from_utf8_lossy(&verified.stdout),
        String::from_utf8_lossy(&verified.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs NATS JetStream: set TRUELINE_TEST_NATS_URL and run with --ignored"]
async fn a_nats_outage_is_caught_up_without_loss_or_duplicates() {
    let url = std::env::var("TRUELINE_TEST_NATS_URL").expect("TRUELINE_TEST_NATS_URL is not set");
    let target = std::net::ToSocketAddrs::to_socket_addrs(url.trim_start_matches("nats://"))
        .unwrap()
        .next()
        .unwrap();
    let proxy = Proxy::start(target).await;
    let tag = uuid::Uuid::now_v7().simple().to_string();
    let stream = format!("TLFAULT{tag}");
    let app = spawn_app_with(
        Backend::Sqlite,
        |c| {
            c.publish.nats.url = Some(format!("nats://{}", proxy.address));
            c.publish.nats.stream = stream.clone();
            c.publish.nats.subject_prefix = format!("tlfault{tag}");
            c.outbox.poll_ms = 50;
        },
        Router::new(),
    )
    .await;
    let ann = app.sign_up("ann@example.com").await;
    app.create_item(&ann.token, "Before", 1).await;
    // A row is NATS-pending only once the event log has it: both caught up, the log first.
    let caught_up = |destination| {
        let store = app.state.store.clone();
        async move {
            store
                .outbox_stats(destination)
                .await
                .is_ok_and(|s| s.pending == 0)
        }
    };
    let nats_drained =
        || async { caught_up(Destination::EventLog).await && caught_up(Destination::Nats).await };
    assert!(eventually(20, nats_drained).await);
    for mode in [Mode::Refuse, Mode::Blackhole] {
        proxy.set(mode);
        for n in 0..5 {
            app.create_item(&ann.token, &format!("{mode:?} {n}"), 1)
                .await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        proxy.set(Mode::Open);
        assert!(
            eventually(60, nats_drained).await,
            "{mode:?}: the relay catches up"
        );
    }
    let client = async_nats::connect(&url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let mut s = js.get_stream(&stream).await.unwrap();
    let messages = s.info().await.unwrap().state.messages;
    assert_eq!(
        messages,
        app.count("outbox").await as u64,
        "every event once: none lost, duplicates dropped by Nats-Msg-Id"
    );
    js.delete_stream(&stream).await.unwrap();
}

/// The embedded database serves one server: a restart after a crash releases at once the
/// idempotency claims and relay leases the dead process held (no waiting for them to
/// expire), and a second server on the same database file is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_sqlite_server_releases_what_the_dead_one_held_and_refuses_a_second() {
    let mut app = spawn_app(Backend::Sqlite).await;
    let ann = app.sign_up("ann@example.com").await;
    let now = trueline_core::clock::Clock::now(&*app.clock);
    let scope = trueline_store::IdempotencyScope::new(
        trueline_core::ids::OrgId(ann.org_id.parse().unwrap()),
        trueline_core::ids::UserId(ann.user_id.parse().unwrap()),
        "in-flight-when-killed".into(),
    );
    // What a process killed mid-request leaves behind: a locked claim (and, below, a lease).
    app.state
        .store
        .claim(&scope, &[7; 32], now, now + time::Duration::hours(1))
        .await
        .unwrap();
    // A second server on the same database file is refused while the first runs.
    let elsewhere = tempfile::tempdir().unwrap();
    let mut config = app.config.clone();
    config.data_dir = elsewhere.path().to_path_buf();
    config.database.url = Some(app.config.database_url());
    let second = trueline::startup::Application::build(config.clone()).await;
    let error = format!("{:#}", second.err().expect("a second server is refused"));
    assert!(error.contains("another trueline server"), "{error}");
    // Stop the first (as a crash would, its claim and lease stay) and start again.
    app.trigger_shutdown();
    let _ = app.server.take().unwrap().await;
    app.execute(&format!(
        "INSERT INTO outbox_leases (destination, org_id, holder, until)
         SELECT 'eventlog', id, 'dead-relay', {} FROM organizations",
        (now + time::Duration::hours(1)).unix_timestamp() * 1_000_000
    ))
    .await
    .unwrap();
    assert_eq!(app.count("outbox_leases").await, 1);
    // (The same database file; a fresh event log, as the old one is still open in `app`: the
    // database takes it, as `trueline eventlog pair --yes` would.)
    let fresh_log = tempfile::tempdir().unwrap();
    let fresh_id = uuid::Uuid::new_v4();
    let fresh_dir = fresh_log.path().join("eventlog");
    std::fs::create_dir_all(&fresh_dir).unwrap();
    std::fs::write(fresh_dir.join("log-id"), format!("{fresh_id}\n")).unwrap();
    app.execute(&format!(
        "UPDATE event_log_mark SET log_id = X'{}', position = 0",
        fresh_id.simple()
    ))
    .await
    .unwrap();
    let mut config = app.config.clone();
    config.data_dir = fresh_log.path().to_path_buf();
    config.database.url = Some(app.config.database_url());
    let restarted = trueline::startup::Application::build(config).await.unwrap();
    // The restart released the claim as of its own start-up time, which may be seconds after
    // `now` on a busy machine (the first server's shutdown): compare with a time after it.
    let restarted_at = time::OffsetDateTime::now_utc();
    let pending_locked = app
        .scalar(&format!(
            "SELECT count(*) FROM idempotency_keys WHERE state = 'pending' AND locked_until > {}",
            restarted_at.unix_timestamp_nanos() / 1_000
        ))
        .await;
    assert_eq!(
        pending_locked, 0,
        "the dead request's claim can be taken over now"
    );
    assert_eq!(
        app.count("outbox_leases").await,
        0,
        "the dead relay's leases are gone"
    );
    drop(restarted);
}
