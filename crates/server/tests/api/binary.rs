//! The `trueline` binary itself: its logs, `config` and `migrate` subcommands.

use crate::helpers::PASSWORD;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_trueline");

/// Starts `trueline serve` on a free port in `dir`; returns the child and its address, read
/// from the `server.started` log line.
fn start_server(dir: &std::path::Path) -> (Child, String, std::sync::mpsc::Receiver<String>) {
    start_server_with(dir, &[])
}

/// [`start_server`] with extra environment variables (configuration).
pub(crate) fn start_server_with(
    dir: &std::path::Path,
    env: &[(&str, String)],
) -> (Child, String, std::sync::mpsc::Receiver<String>) {
    // The test's HTTP client (reqwest on rustls without a built-in provider) needs one, also
    // when no in-process server installed it first.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut command = Command::new(BIN);
    // Only the configuration given here: the test runner's own TRUELINE_TEST_* variables
    // are not configuration keys and would stop the server.
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("TRUELINE_")) {
        command.env_remove(key);
    }
    let mut child = command
        .args(["serve", "--bind", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .env("TRUELINE_AUTH__PASSWORD_MEMORY_KIB", "64")
        .env("TRUELINE_AUTH__PASSWORD_ITERATIONS", "1")
        .env("TRUELINE_SERVER__SHUTDOWN_DRAIN_MS", "0")
        .env("TRUELINE_LOG__LEVEL", "debug")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start trueline");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let address = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("server.started line");
        let value: Value = serde_json::from_str(&line).expect("every log line is JSON");
        if value["event"] == "server.started" {
            break format!("http://{}", value["address"].as_str().unwrap());
        }
    };
    (child, address, rx)
}

/// Signs up `email` (organization "Ann") on the server at `address`; the response body.
async fn sign_up_over_http(client: &reqwest::Client, address: &str, email: &str) -> Value {
    let signup = json!({"email": email, "password": PASSWORD, "organization_name": "Ann"});
    client
        .post(format!("{address}/api/v1/auth/signup"))
        .json(&signup)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Every line the server wrote, once it has exited: the reader thread may still be passing
/// on what the last write held (the logger writes in batches, the rest at exit), so this
/// waits for the end of its output instead of taking what has arrived so far.
pub(crate) fn all_lines(lines: std::sync::mpsc::Receiver<String>) -> Vec<String> {
    let mut all = Vec::new();
    loop {
        match lines.recv_timeout(Duration::from_secs(10)) {
            Ok(line) => all.push(line),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return all,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                panic!("the server's output did not end after it exited")
            }
        }
    }
}

pub(crate) fn terminate(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "SIGTERM leads to a clean exit: {status:?}"
    );
}

#[tokio::test]
async fn logs_are_json_lines_with_base_fields_and_never_contain_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, address, lines) = start_server(dir.path());
    // reqwest is built without a default TLS provider; in-process apps install ring's, but
    // this test may run before any of them.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::new();
    let body = sign_up_over_http(&client, &address, "ann@example.com").await;
    let token = body["token"]["token"].as_str().unwrap().to_owned();
    let me = client
        .get(format!("{address}/api/v1/me"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);
    let wrong = json!({"email": "ann@example.com", "password": "the wrong password"});
    client
        .post(format!("{address}/api/v1/auth/tokens"))
        .json(&wrong)
        .send()
        .await
        .unwrap();
    let login = json!({"email": "ann@example.com", "password": PASSWORD});
    let issued: Value = client
        .post(format!("{address}/api/v1/auth/tokens"))
        .json(&login)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let second_token = issued["token"].as_str().unwrap().to_owned();
    client
        .get(format!("{address}/api/v1/me"))
        .bearer_auth("tl_not_a_real_token")
        .send()
        .await
        .unwrap();
    // A refusal the store decides (an admin may not change an owner) is logged like one the
    // handler decides: `auth.denied`.
    let bob = json!({"email": "bob@example.com", "password": PASSWORD, "organization_name": "Bob"});
    let bob_signup = client
        .post(format!("{address}/api/v1/auth/signup"))
        .json(&bob)
        .send()
        .await
        .unwrap();
    assert_eq!(bob_signup.status(), 201);
    let added = client
        .post(format!("{address}/api/v1/members"))
        .bearer_auth(&token)
        .json(&json!({"email": "bob@example.com", "role": "admin"}))
        .send()
        .await
        .unwrap();
    assert_eq!(added.status(), 201);
    let org_id = body["organization"]["id"].as_str().unwrap();
    let bob_in_ann: Value = client
        .post(format!("{address}/api/v1/auth/tokens"))
        .json(&json!({"email": "bob@example.com", "password": PASSWORD, "organization_id": org_id}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ann_id = body["user"]["id"].as_str().unwrap();
    let refused = client
        .patch(format!("{address}/api/v1/members/{ann_id}"))
        .bearer_auth(bob_in_ann["token"].as_str().unwrap())
        .json(&json!({"role": "viewer"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    terminate(&mut child);
    let lines = all_lines(lines);
    assert!(lines.len() >= 6, "{lines:?}");
    let mut completed = 0;
    for line in &lines {
        for secret in [
            PASSWORD,
            "the wrong password",
            &token,
            &second_token,
            "tl_not_a_real_token",
        ] {
            assert!(
                !line.contains(secret),
                "a secret leaked into the log: {line}"
            );
        }
        let value: Value = serde_json::from_str(line).expect("JSON line");
        for field in ["timestamp", "level", "event", "service"] {
            assert!(value.get(field).is_some(), "{field} missing in {line}");
        }
        assert!(
            value.get("request_id").is_some(),
            "request_id key present in {line}"
        );
        if value["event"] == "http.request.completed" {
            completed += 1;
            for field in ["method", "route", "status", "latency_ms"] {
                assert!(value.get(field).is_some(), "{field} missing in {line}");
            }
            assert!(value["request_id"].is_string());
        }
    }
    assert_eq!(completed, 9, "one completion line per request");
    assert!(
        lines.iter().any(
            |l| l.contains("\"event\":\"auth.denied\"") && l.contains("\"required\":\"owner\"")
        ),
        "the store's refusal is logged"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("\"event\":\"auth.unauthorized\""))
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("\"event\":\"mutation.accounts.signup.success\""))
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("\"event\":\"server.stopped\""))
    );
}

#[test]
fn config_prints_the_effective_configuration_with_secrets_redacted() {
    let output = Command::new(BIN)
        .args([
            "--database-url",
            "postgres://app:hunter2secret@db.internal:5432/trueline",
            "config",
        ])
        .env("TRUELINE_SERVER__REQUEST_TIMEOUT_MS", "1234")
        .output()
        .unwrap();
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(!text.contains("hunter2secret"), "{text}");
    assert!(
        text.contains("postgres://app:***@db.internal:5432/trueline"),
        "{text}"
    );
    assert!(
        text.contains("request_timeout_ms = 1234"),
        "env vars apply: {text}"
    );
    assert!(
        text.contains("bind = \"127.0.0.1:8080\""),
        "defaults shown: {text}"
    );
}

#[test]
fn migrate_status_down_and_up_work_on_the_embedded_database() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let output = Command::new(BIN)
            .args(args)
            .arg("--data-dir")
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    };
    // Status only reads: on a directory without a database it says so and creates none.
    let nothing = Command::new(BIN)
        .args(["migrate", "status", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!nothing.status.success());
    assert!(String::from_utf8_lossy(&nothing.stderr).contains("there is no database"));
    assert!(!dir.path().join("trueline.db").exists());
    assert!(run(&["migrate", "up"]).contains("applied"));
    let status = run(&["migrate", "status"]);
    assert!(
        status.contains("applied") && !status.contains("pending"),
        "{status}"
    );
    // Without --yes, down lists what it would revert and changes nothing.
    let refused = Command::new(BIN)
        .args(["migrate", "down", "--steps", "2", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        said.contains("would revert 2 migration(s)") && said.contains("--yes"),
        "{said}"
    );
    let still = run(&["migrate", "status"]);
    assert!(!still.contains("pending"), "{still}");
    // Neither does down, on a directory that has none (a mistyped --data-dir).
    let elsewhere = tempfile::tempdir().unwrap();
    let nothing = Command::new(BIN)
        .args(["migrate", "down", "--yes", "--data-dir"])
        .arg(elsewhere.path())
        .output()
        .unwrap();
    assert!(!nothing.status.success());
    assert!(String::from_utf8_lossy(&nothing.stderr).contains("there is no database"));
    assert_eq!(
        std::fs::read_dir(elsewhere.path()).unwrap().count(),
        0,
        "nothing created"
    );
    assert!(run(&["migrate", "down", "--steps", "99", "--yes"]).contains("reverted"));
    assert!(!run(&["migrate", "status"]).contains("applied"));
    run(&["migrate", "up"]);
}

/// Nothing migrates a database a server is using: `migrate down` (or `up`) beside a running
/// server is refused and changes nothing (the server holds `<database>.server-lock`).
#[test]
fn migrations_are_refused_while_a_server_uses_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, _address, _lines) = start_server(dir.path());
    for args in [["migrate", "down"], ["migrate", "up"]] {
        let output = Command::new(BIN)
            .args(args)
            .arg("--data-dir")
            .arg(dir.path())
            .env_remove("TRUELINE_TEST_POSTGRES_URL")
            .output()
            .unwrap();
        assert!(!output.status.success(), "{args:?} ran beside the server");
        let error = String::from_utf8_lossy(&output.stderr);
        assert!(error.contains("another trueline server"), "{error}");
    }
    // Status only reads.
    let status = Command::new(BIN)
        .args(["migrate", "status", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let status = String::from_utf8_lossy(&status.stdout).to_string();
    assert!(
        status.contains("applied") && !status.contains("pending"),
        "{status}"
    );
    let _ = server.kill();
    let _ = server.wait();
}

#[test]
fn an_unusable_database_url_fails_startup_with_a_clear_error() {
    let output = Command::new(BIN)
        .args(["--database-url", "mysql://x", "--bind", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("sqlite:// or postgres://"));
}

/// Runs `trueline ARGS --data-dir DIR` to its end: (success, stdout + stderr). One still
/// running after 30 s (a server that started) is killed and counts as a success.
fn run_to_end(dir: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let mut command = Command::new(BIN);
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("TRUELINE_")) {
        command.env_remove(key);
    }
    let mut child = command
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .env("TRUELINE_AUTH__PASSWORD_MEMORY_KIB", "64")
        .env("TRUELINE_AUTH__PASSWORD_ITERATIONS", "1")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (
        output.status.success() || output.status.code().is_none(),
        text,
    )
}

/// Copies a directory of plain files.
fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

/// The database remembers its event log: a start with the log's directory gone, or with a
/// backup of it older than the database, refuses (it would hand out positions a second
/// time) and says how to go on; `trueline eventlog pair --yes` accepts the log as it is.
#[tokio::test]
async fn a_start_refuses_an_event_log_that_is_not_the_databases() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("eventlog");
    let client = reqwest::Client::new();
    // First run: a sign-up, whose events the relay publishes into the log.
    let (mut server, address, _lines) = start_server(dir.path());
    let body = sign_up_over_http(&client, &address, "ann@example.com").await;
    let token = body["token"]["token"].as_str().unwrap().to_owned();
    let append = |n: u64| {
        client
            .post(format!("{address}/api/v1/events"))
            .bearer_auth(&token)
            .json(&json!({"type": "test.appended", "data": n}))
            .send()
    };
    assert_eq!(append(1).await.unwrap().status(), 201);
    terminate(&mut server);
    let early = dir.path().join("eventlog-backup");
    copy_dir(&log, &early);
    // Second run: more events; then the log is swapped for the older copy.
    let (mut server, address, _lines) = start_server(dir.path());
    for n in 2..=4 {
        let appended = client
            .post(format!("{address}/api/v1/events"))
            .bearer_auth(&token)
            .json(&json!({"type": "test.appended", "data": n}))
            .send()
            .await
            .unwrap();
        assert_eq!(appended.status(), 201);
    }
    terminate(&mut server);
    let later = dir.path().join("eventlog-later");
    std::fs::rename(&log, &later).unwrap();

    let (started, said) = run_to_end(dir.path(), &["serve", "--bind", "127.0.0.1:0"], &[]);
    assert!(!started, "a missing log is refused");
    assert!(
        said.contains("has no log-id") && said.contains("pair --yes"),
        "{said}"
    );
    assert!(
        !log.exists(),
        "the refused start created no log (an unmounted volume stays empty)"
    );
    std::fs::rename(&early, &log).unwrap();
    let (started, said) = run_to_end(dir.path(), &["serve", "--bind", "127.0.0.1:0"], &[]);
    assert!(!started, "an older copy is refused");
    assert!(said.contains("acknowledged events are missing"), "{said}");

    let (paired, said) = run_to_end(dir.path(), &["eventlog", "pair"], &[]);
    assert!(!paired && said.contains("--yes"), "{said}");
    let (paired, said) = run_to_end(dir.path(), &["eventlog", "pair", "--yes"], &[]);
    assert!(paired, "{said}");
    assert!(said.contains("the database now takes log"), "{said}");
    let (mut server, _address, _lines) = start_server(dir.path());
    terminate(&mut server);
}

/// A database from before the pairing (no mark) whose relay published events had a log: the
/// first start with the pairing refuses an empty or missing log directory (an unmounted
/// volume) instead of adopting it, and adopts the log it finds there as it is.
#[tokio::test]
async fn a_first_start_with_the_pairing_refuses_a_missing_log_the_database_published_into() {
    use sqlx::Connection;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("eventlog");
    let client = reqwest::Client::new();
    let (mut server, address, _lines) = start_server(dir.path());
    let body = sign_up_over_http(&client, &address, "ann@example.com").await;
    let token = body["token"]["token"].as_str().unwrap().to_owned();
    // The relay has published the sign-up's events once the owner reads them.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let events = |address: String| {
        let request = client
            .get(format!("{address}/api/v1/events?after=0"))
            .bearer_auth(&token);
        async move {
            let page: Value = request.send().await.unwrap().json().await.unwrap();
            page["data"].as_array().unwrap().len()
        }
    };
    loop {
        if events(address.clone()).await > 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "nothing published");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    terminate(&mut server);
    // What a version before the pairing leaves: no mark, no log id.
    let url = format!("sqlite://{}", dir.path().join("trueline.db").display());
    let mut db = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query("DELETE FROM event_log_mark")
        .execute(&mut db)
        .await
        .unwrap();
    db.close().await.unwrap();
    std::fs::remove_file(log.join("log-id")).unwrap();
    let unmounted = dir.path().join("eventlog-volume");
    std::fs::rename(&log, &unmounted).unwrap();
    std::fs::create_dir(&log).unwrap();

    let (started, said) = run_to_end(dir.path(), &["serve", "--bind", "127.0.0.1:0"], &[]);
    assert!(!started, "an empty log directory is refused");
    assert!(
        said.contains("is empty or missing") && said.contains("pair --yes"),
        "{said}"
    );
    assert_eq!(
        std::fs::read_dir(&log).unwrap().count(),
        0,
        "the refused start created nothing in it"
    );
    std::fs::remove_dir(&log).unwrap();
    let (started, said) = run_to_end(dir.path(), &["serve", "--bind", "127.0.0.1:0"], &[]);
    assert!(!started && said.contains("is empty or missing"), "{said}");
    assert!(!log.exists());

    // The volume back: its log is adopted (given an id) and serves the events it holds.
    std::fs::rename(&unmounted, &log).unwrap();
    let (mut server, address, _lines) = start_server(dir.path());
    assert!(events(address).await > 0);
    terminate(&mut server);
    assert!(log.join("log-id").exists());
}

/// A request whose client goes away before its answer still leaves its closing log line:
/// `http.request.aborted` with status 499 (it left no line at all).
#[tokio::test]
async fn a_request_dropped_before_its_answer_is_logged_as_aborted() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    // Password hashing slow enough (~0.1-0.5 s) for a login to be under way when its
    // client leaves.
    let slow = [
        ("TRUELINE_AUTH__PASSWORD_MEMORY_KIB", "65536".to_owned()),
        ("TRUELINE_AUTH__PASSWORD_ITERATIONS", "3".to_owned()),
    ];
    let (mut server, address, lines) = start_server_with(dir.path(), &slow);
    let client = reqwest::Client::new();
    sign_up_over_http(&client, &address, "ann@example.com").await;
    let host = address.trim_start_matches("http://");
    let login = json!({"email": "ann@example.com", "password": PASSWORD}).to_string();
    let mut socket = std::net::TcpStream::connect(host).unwrap();
    write!(
        socket,
        "POST /api/v1/auth/tokens HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nx-request-id: left-early\r\n\r\n{login}",
        login.len()
    )
    .unwrap();
    socket.flush().unwrap();
    std::thread::sleep(Duration::from_millis(100));
    drop(socket);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let closing = loop {
        let line = lines
            .recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
            .expect("a closing line for the request");
        let value: Value = serde_json::from_str(&line).unwrap();
        if value["request_id"] == "left-early"
            && value["event"]
                .as_str()
                .unwrap()
                .starts_with("http.request.")
            && value["event"] != "http.request.started"
        {
            break value;
        }
    };
    assert_eq!(closing["event"], "http.request.aborted", "{closing}");
    assert_eq!(closing["status"], 499, "{closing}");
    assert_eq!(closing["route"], "/api/v1/auth/tokens", "{closing}");
    terminate(&mut server);
}

/// A start refused by its settings or its address refuses before it opens, creates or
/// migrates the database (on PostgreSQL a shared one).
#[test]
fn a_start_refused_by_its_settings_or_address_leaves_no_database_behind() {
    let dir = tempfile::tempdir().unwrap();
    for (name, value) in [
        ("TRUELINE_EVENTS__DURABILITY", "alway"),
        ("TRUELINE_EVENTS__BACKEND", "pg"),
        ("TRUELINE_EVENTS__SEGMENT_SIZE_BYTES", "100"),
        ("TRUELINE_AUTH__PASSWORD_MEMORY_KIB", "1"),
    ] {
        let (started, said) = run_to_end(
            dir.path(),
            &["serve", "--bind", "127.0.0.1:0"],
            &[(name, value)],
        );
        assert!(!started, "{name}={value}: {said}");
        let key = name
            .trim_start_matches("TRUELINE_")
            .replace("__", ".")
            .to_lowercase();
        assert!(said.contains(&key), "{name}: {said}");
    }
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let (started, said) = run_to_end(dir.path(), &["serve", "--bind", &address], &[]);
    assert!(!started, "{said}");
    assert!(said.contains("binding"), "{said}");
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        !dir.path().join("trueline.db").exists(),
        "no database created: {left:?}"
    );
}

/// A second SIGTERM while the server drains ends it at once, with exit code 130.
#[test]
fn a_second_signal_ends_a_draining_server_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new(BIN);
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("TRUELINE_")) {
        command.env_remove(key);
    }
    let mut child = command
        .args(["serve", "--bind", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env("TRUELINE_SERVER__SHUTDOWN_DRAIN_MS", "60000")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let started = lines
        .by_ref()
        .map_while(Result::ok)
        .any(|l| l.contains("\"event\":\"server.started\""));
    assert!(started);
    let term = || {
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap()
    };
    term();
    // The first signal is being handled (the server drains for a minute).
    assert!(
        lines
            .by_ref()
            .map_while(Result::ok)
            .any(|l| l.contains("\"event\":\"server.draining\""))
    );
    // One second after the first: sooner counts as the same request (one Ctrl-C may arrive
    // as two signals).
    std::thread::sleep(Duration::from_millis(1100));
    let asked = std::time::Instant::now();
    term();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "{:?}",
        asked.elapsed()
    );
}

/// A database a newer version migrated: `migrate status` lists the migration this binary does
/// not know and fails, and `migrate down` refuses rather than revert around it.
#[tokio::test]
async fn migrations_unknown_to_the_binary_are_reported_not_reverted_around() {
    use sqlx::Connection;
    let dir = tempfile::tempdir().unwrap();
    let (ok, said) = run_to_end(dir.path(), &["migrate", "up"], &[]);
    assert!(ok, "{said}");
    let url = format!("sqlite://{}", dir.path().join("trueline.db").display());
    let mut db = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
         VALUES (999, 'from the future', 1, x'00', 0)",
    )
    .execute(&mut db)
    .await
    .unwrap();
    db.close().await.unwrap();
    let (ok, said) = run_to_end(dir.path(), &["migrate", "status"], &[]);
    assert!(!ok, "{said}");
    assert!(
        said.contains(" 999  applied") && said.contains("unknown to this binary"),
        "{said}"
    );
    let (ok, said) = run_to_end(dir.path(), &["migrate", "down", "--yes"], &[]);
    assert!(!ok && said.contains("[999]"), "{said}");
}

/// A PostgreSQL server that cannot be reached fails the start with the cause (here: the
/// connection refused), not only the pool's "timed out".
#[test]
fn an_unreachable_postgres_fails_startup_with_its_cause() {
    let dir = tempfile::tempdir().unwrap();
    let (started, said) = run_to_end(
        dir.path(),
        &[
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--database-url",
            "postgres://postgres@127.0.0.1:1/x",
        ],
        &[("TRUELINE_DATABASE__ACQUIRE_TIMEOUT_MS", "300")],
    );
    assert!(!started, "{said}");
    assert!(said.contains("cannot connect to PostgreSQL"), "{said}");
    assert!(said.to_lowercase().contains("refused"), "{said}");
}

/// `eventlog verify` tells damage to the log (exit 1) from damaged index checkpoints, which
/// the server rebuilds from the log (listed, exit 0).
#[tokio::test]
async fn verify_fails_on_a_damaged_log_but_not_on_a_damaged_checkpoint() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let (mut server, address, _lines) = start_server(dir.path());
    let client = reqwest::Client::new();
    let body = sign_up_over_http(&client, &address, "ann@example.com").await;
    let token = body["token"]["token"].as_str().unwrap().to_owned();
    let appended = client
        .post(format!("{address}/api/v1/events"))
        .bearer_auth(&token)
        .json(&json!({"type": "test.appended", "data": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(appended.status(), 201);
    terminate(&mut server);
    let log = dir.path().join("eventlog");
    let checkpoint = std::fs::read_dir(&log)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.extension().is_some_and(|e| e == "idx")
                && p.file_name().is_some_and(|n| n != "streams.idx")
        })
        .expect("a checkpoint written at the clean stop");
    std::fs::write(&checkpoint, b"garbage").unwrap();
    let (ok, said) = run_to_end(dir.path(), &["eventlog", "verify"], &[]);
    assert!(ok, "{said}");
    assert!(
        said.contains("problem:") && said.contains("the log is whole"),
        "{said}"
    );
    let segment = std::fs::read_dir(&log)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "seg"))
        .unwrap();
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes[40] ^= 0xff;
    std::fs::write(&segment, bytes).unwrap();
    let (ok, said) = run_to_end(dir.path(), &["eventlog", "verify"], &[]);
    assert!(!ok, "{said}");
}

/// The allocator runs with the options `main.rs` exports (one arena): jemalloc prints the
/// options it read when asked for its statistics at exit.
#[cfg(target_os = "linux")]
#[test]
fn jemalloc_runs_with_one_arena() {
    let out = Command::new(BIN)
        .arg("--version")
        .env("MALLOC_CONF", "stats_print:true")
        .output()
        .expect("run trueline");
    assert!(out.status.success());
    let stats = String::from_utf8_lossy(&out.stderr);
    assert!(
        stats.contains("malloc_conf: \"narenas:1\""),
        "the binary's malloc_conf was not read: {}",
        stats.lines().take(20).collect::<Vec<_>>().join("\n")
    );
    assert!(stats.contains("opt.narenas: 1"), "{stats:.2000}");
}
