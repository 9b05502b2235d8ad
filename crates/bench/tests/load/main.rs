//! Every workload against a real server started in-process on port 0 (a fresh SQLite data
//! directory each), for about a second, with the end-of-run checks on.
// Test code: a panic is the clearest failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use clap::Parser;
use std::collections::BTreeMap;
use std::sync::Arc;
use trueline::config::Config;
use trueline::startup::Application;
use trueline_bench::api::Api;
use trueline_bench::cli::{Cli, Command, CommonArgs, Workload};
use trueline_bench::report::{RunReport, Target};
use trueline_bench::run::{Endpoint, run_once};
use trueline_bench::workloads::{Fixture, Params, Session};

struct Server {
    url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config {
            data_dir: dir.path().to_path_buf(),
            ..Config::default()
        };
        config.server.bind = "127.0.0.1:0".into();
        config.server.shutdown_drain_ms = 0;
        // Cheap password hashing: the signups are set-up, not what is measured.
        config.auth.password_memory_kib = 64;
        config.auth.password_iterations = 1;
        config.log.level = "warn".into();
        config.limits.enabled = false;
        let app = Application::build(config).await.unwrap();
        let url = format!("http://{}", app.local_addr());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until_stopped(async move {
            let _ = stopped.await;
        }));
        Self {
            url,
            stop: Some(stop),
            task: Some(task),
            _dir: dir,
        }
    }

    fn endpoint(&self) -> Endpoint {
        Endpoint {
            url: self.url.clone(),
            // In-process: the sampled "server" is this test process.
            server_pid: Some(std::process::id()),
            target: Target {
                url: self.url.clone(),
                spawned: false,
                database: "sqlite (test)".into(),
            },
        }
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap().unwrap();
    }
}

/// Parses `trueline-bench run <workload> --url … <extra>` like a user would type it.
fn args(server: &Server, workload: &str, extra: &[&str]) -> (Workload, usize, CommonArgs) {
    let mut argv = vec![
        "trueline-bench",
        "run",
        workload,
        "--url",
        &server.url,
        "--duration",
        "1s",
        "--warmup",
        "200ms",
        "--seed",
        "42",
    ];
    argv.extend_from_slice(extra);
    let Command::Run(cmd) = Cli::try_parse_from(argv).unwrap().command else {
        unreachable!()
    };
    (cmd.workload, cmd.clients, cmd.common)
}

async fn run(server: &Server, workload: &str, extra: &[&str]) -> RunReport {
    let (workload, clients, common) = args(server, workload, extra);
    let report = run_once(workload, clients, &common, &server.endpoint(), 42)
        .await
        .unwrap();
    print!("{}", trueline_bench::report::render_run(&report));
    report
}

fn assert_verified(report: &RunReport) {
    assert!(
        report.verification.passed,
        "{}",
        trueline_bench::report::render_run(report)
    );
    assert!(report.results.operations > 0);
    assert!(report.results.throughput_per_s > 0.0);
    assert!(report.results.latency_us.p50_us > 0);
    assert_eq!(report.results.failed_operations, 0);
    assert_eq!(report.results.error_rate, 0.0);
    // Every second of the window has a point, busy or not.
    assert_eq!(
        report.results.timeline.len() as u64,
        (report.results.measured_s as u64).max(1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_item_spread_and_mixed_balance_their_books() {
    let server = Server::start().await;
    let hot = run(&server, "hot-item", &["--clients", "4"]).await;
    assert_verified(&hot);
    assert!(hot.results.status_counts.get(&200).copied().unwrap_or(0) > 0);
    assert!(
        hot.results.server.is_some(),
        "the server process was sampled"
    );
    let spread = run(&server, "spread", &["--clients", "4", "--items", "200"]).await;
    assert_verified(&spread);
    let mixed = run(&server, "mixed", &["--clients", "4", "--items", "50"]).await;
    assert_verified(&mixed);
    for kind in ["get_item", "list_items", "create_item", "qty_delta"] {
        assert!(mixed.results.per_request_us.contains_key(kind), "{kind}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_stock_makes_rejections_that_are_counted_by_code_and_still_balance() {
    let server = Server::start().await;
    let report = run(
        &server,
        "hot-item",
        // Deltas as large as the stock itself: a walk with ±1..5 steps could drift up and
        // stay clear of zero for the whole second, so rejections would only be likely.
        &[
            "--clients",
            "4",
            "--initial-qty",
            "3",
            "--max-delta",
            "1000000",
        ],
    )
    .await;
    assert_verified(&report);
    assert!(
        report
            .results
            .code_counts
            .get("insufficient_quantity")
            .copied()
            .unwrap_or(0)
            > 0,
        "{:?}",
        report.results.code_counts
    );
    // Refusals the workload provokes are neither failures nor throughput.
    assert!(report.results.refused_operations > 0);
    assert_eq!(report.results.failed_operations, 0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_open_loop_keeps_its_schedule_and_verifies() {
    let server = Server::start().await;
    let report = run(&server, "hot-item", &["--clients", "4", "--rate", "100"]).await;
    assert_verified(&report);
    let open = report.results.open_loop.clone().unwrap();
    assert_eq!(open.scheduled, 100, "1 s at 100/s after the warm-up");
    assert_eq!(open.sent + open.unsent, open.scheduled);
    assert_eq!(report.results.operations, open.sent);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_appended_single_and_batched_then_read_back() {
    let server = Server::start().await;
    let single = run(&server, "events-append", &["--clients", "4"]).await;
    assert_verified(&single);
    let batched = run(
        &server,
        "events-append",
        &["--clients", "2", "--batch", "10"],
    )
    .await;
    assert_verified(&batched);
    assert!(batched.results.per_request_us.contains_key("append_batch"));
    let read = run(
        &server,
        "events-read",
        &["--clients", "4", "--populate", "300", "--streams", "3"],
    )
    .await;
    assert_verified(&read);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_token_per_client_works() {
    let server = Server::start().await;
    let report = run(
        &server,
        "hot-item",
        &["--clients", "3", "--token-per-client"],
    )
    .await;
    assert_verified(&report);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_explains_a_server_without_the_assessments_api() {
    let server = Server::start().await;
    let (workload, clients, common) = args(&server, "submit", &["--clients", "2"]);
    // The assessments API may or may not exist yet: either the run verifies, or it fails
    // saying plainly that the routes are missing.
    match run_once(workload, clients, &common, &server.endpoint(), 1).await {
        Ok(report) => assert_verified(&report),
        Err(e) => {
            let text = format!("{e:#}");
            assert!(text.contains("does not have the assessments API"), "{text}");
        }
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checks_catch_a_change_the_run_was_not_told_about() {
    let server = Server::start().await;
    let api = Api::new(&server.url, std::time::Duration::from_secs(30)).unwrap();
    let session = Session::sign_up(api.clone(), "liar".into(), 1, false)
        .await
        .unwrap();
    let params = Params {
        workload: Workload::HotItem,
        clients: 1,
        initial_qty: 100,
        max_delta: 5,
        items: None,
        batch: 1,
        event_bytes: 10,
        populate: 0,
        streams: 1,
        invites: 0,
        questions: 1,
        token_per_client: false,
        verify_by_id_max: 10,
        seed: 1,
    };
    let fixture = Arc::new(Fixture::setup(&session, &params).await.unwrap());
    let mut rng = fastrand::Rng::with_seed(1);
    let mut samples = Vec::new();
    for seq in 0..5 {
        fixture.op(&session, 0, seq, &mut rng, &mut samples).await;
    }
    assert!(fixture.verify(&session, &BTreeMap::new()).await.passed);
    // A delta behind the tool's back: the server's books no longer match what it told us.
    let list = api.get("/api/v1/items", Some(&session.owner_token)).await;
    let id = list.json().unwrap()["data"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let reply = api
        .call(
            trueline_bench::api::Method::PATCH,
            &format!("/api/v1/items/{id}/qty"),
            Some(&session.owner_token),
            Some(&serde_json::json!({"delta": -1})),
            Some("out-of-band"),
        )
        .await;
    assert_eq!(reply.status, 200);
    let verification = fixture.verify(&session, &BTreeMap::new()).await;
    assert!(!verification.passed);
    let failed: Vec<_> = verification.checks.iter().filter(|c| !c.passed).collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].problems.len(), 3, "{:?}", failed[0].problems);
    // And a 5xx anywhere in the run fails it too.
    let with_5xx = fixture
        .verify(&session, &BTreeMap::from([(200, 5), (500, 1)]))
        .await;
    assert!(
        with_5xx
            .checks
            .iter()
            .any(|c| c.name == "no 5xx" && !c.passed)
    );
    server.stop().await;
}
