//! Crashes: the real `trueline` binary under mixed concurrent load is killed with SIGKILL at
//! random moments and restarted on the same data (SQLite file + embedded event log in one data
//! directory, or one PostgreSQL database for both), and after every restart what the server
//! holds is checked against what its clients were told:
//!
//! - every write answered 2xx is there: created items, every acknowledged quantity delta and
//!   batch adjustment line in its item's history (once), every acknowledged event at the
//!   position it was given, every acknowledged candidate submission;
//! - nothing answered 4xx is there: deltas and batches refused for insufficient quantity,
//!   creates refused for a taken name, appends refused for a wrong expected version,
//!   submissions of attempts never started;
//! - each item's quantity is the sum of its history, never negative, and equals its initial
//!   quantity plus the acknowledged deltas, each once; versions, stream versions and log
//!   positions have no gaps;
//! - the outbox drains, and every committed change (history record, submission, every outbox
//!   row) has exactly one event in the log;
//! - every request the kill left without an answer is retried after the restart with the same
//!   `Idempotency-Key` / event id / invite, and takes effect exactly once. In a third of the
//!   rounds the server is killed a second time while it recovers, with retries in flight.
//!
//! The scenario and the figures of the long runs are in `docs/reliability.md`.
//!
//! The CI run is a smoke run of [`SMOKE_ROUNDS`] kills per backend. The long run:
//! `TRUELINE_CRASH_ROUNDS=30 cargo test -p trueline --test api crash -- --nocapture` (add
//! `--ignored` and `TRUELINE_TEST_POSTGRES_URL` for PostgreSQL). `TRUELINE_CRASH_SEED` replays
//! a run's random choices (kill delays, operations); the seed is printed at the start.

use crate::both_backends;
use crate::helpers::{Backend, PASSWORD, Rng};
use reqwest::RequestBuilder;
use serde_json::{Value, json};
use sqlx::Row;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use trueline_store_postgres::testing::TestDatabase;
use uuid::Uuid;

both_backends!(killed_at_random_moments_the_server_keeps_every_acknowledged_write_and_nothing_else);

const BIN: &str = env!("CARGO_BIN_EXE_trueline");
const ROUNDS_ENV: &str = "TRUELINE_CRASH_ROUNDS";
const SEED_ENV: &str = "TRUELINE_CRASH_SEED";
/// Kills per backend in the default (CI) run.
const SMOKE_ROUNDS: usize = 5;
/// The load runs this long (uniformly random, in ms) before the kill.
const KILL_AFTER_MS_MIN: u64 = 20;
const KILL_AFTER_MS_MAX: u64 = 1_500;
const STOCK_ITEMS: usize = 6;
const STOCK_QTY: u64 = 20;
/// Deltas of this size can never apply (stocks stay far below it): always refused.
const HOPELESS_DELTA: i64 = 1_000_000;
const DELTA_WORKERS: usize = 5;
const CREATE_WORKERS: usize = 1;
const APPEND_WORKERS: usize = 2;
/// Invites handed to the candidate worker per round: all but one are started and submitted;
/// the last is submitted without being started (refused).
const CANDIDATES_PER_ROUND: usize = 4;
const EVENT_TYPE: &str = "crash.appended";
/// How long a request without an answer may keep failing after the restart: a claim of a
/// killed request stays locked for max(`lock_ms`, `request_timeout_ms` + 1 s), 3 s here.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(30);
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// In this share of rounds the server is killed a second time while it recovers, after up
/// to this many ms.
const RECOVERY_KILL_PERCENT: u64 = 33;
const RECOVERY_KILL_AFTER_MS_MAX: u64 = 300;
/// Acknowledged writes of each round sent again after the restart: they must replay.
const REPLAYS_PER_ROUND: usize = 8;

// ---- the server process ----

/// How to start the server: the same data directory (and database) every time.
struct Launch {
    data_dir: PathBuf,
    database_url: Option<String>,
    stderr: PathBuf,
}

struct Server {
    child: Child,
    address: String,
    /// This process's `warn` and `error` log lines.
    alerts: Arc<Mutex<Vec<String>>>,
}

impl Launch {
    /// `trueline --data-dir <data_dir>` with the test's settings.
    fn command_in(&self, data_dir: &std::path::Path) -> Command {
        let mut command = Command::new(BIN);
        // The server refuses unknown TRUELINE_ variables (this test's own among them), and
        // a developer's settings must not leak in.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("TRUELINE_") {
                command.env_remove(name);
            }
        }
        command
            .arg("--data-dir")
            .arg(data_dir)
            // No stray ./trueline.toml from the test's working directory.
            .current_dir(data_dir)
            .env("TRUELINE_AUTH__PASSWORD_MEMORY_KIB", "64")
            .env("TRUELINE_AUTH__PASSWORD_ITERATIONS", "1")
            .env("TRUELINE_LIMITS__ENABLED", "false")
            .env("TRUELINE_SERVER__SHUTDOWN_DRAIN_MS", "0")
            // A killed request's idempotency claim is taken over after
            // max(lock_ms, request_timeout_ms + 1 s), and a killed relay's outbox lease after
            // `lease_s`: short here, so each round's retries and drain take seconds (the
            // defaults, 60 s and 30 s, behave the same, only slower).
            .env("TRUELINE_IDEMPOTENCY__LOCK_MS", "1000")
            .env("TRUELINE_SERVER__REQUEST_TIMEOUT_MS", "2000")
            .env("TRUELINE_OUTBOX__LEASE_S", "1")
            .env("TRUELINE_LOG__LEVEL", "warn,trueline::startup=info")
            // Small segments: the embedded log seals and rolls segments and writes index
            // checkpoints every few hundred events, so kills also land in those steps.
            .env("TRUELINE_EVENTS__SEGMENT_SIZE_BYTES", "65536");
        if let Some(url) = &self.database_url {
            command
                .env("TRUELINE_DATABASE__URL", url)
                .env("TRUELINE_EVENTS__BACKEND", "postgres")
                .env("TRUELINE_DATABASE__MAX_CONNECTIONS", "8");
        }
        command
    }

    /// The records of the embedded event log in `data_dir`, read offline.
    fn dump_eventlog(&self, data_dir: &std::path::Path) -> Vec<Value> {
        let dump = self
            .command_in(data_dir)
            .args(["eventlog", "dump"])
            .output()
            .unwrap();
        assert!(
            dump.status.success(),
            "eventlog dump: {}",
            String::from_utf8_lossy(&dump.stderr)
        );
        String::from_utf8(dump.stdout)
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    /// Outbox rows the killed relay had appended to the log but not yet marked published:
    /// the next relay publishes them again, and the log must recognise them by event id.
    /// Read from a copy of the data directory (opening the crashed SQLite file itself could
    /// checkpoint its WAL and spare the server's own recovery), or from PostgreSQL.
    async fn relayed_but_unmarked(&self, scratch: &std::path::Path) -> usize {
        let (pending, logged) = match &self.database_url {
            Some(url) => {
                let db = Db::Postgres(sqlx::PgPool::connect(url).await.unwrap());
                let found = (db.pending_outbox_ids().await, db.logged_ids().await);
                db.close().await;
                found
            }
            None => {
                let _ = std::fs::remove_dir_all(scratch);
                copy_dir(&self.data_dir, scratch);
                let url = format!("sqlite://{}", scratch.join("trueline.db").display());
                let db = Db::Sqlite(sqlx::SqlitePool::connect(&url).await.unwrap());
                let pending = db.pending_outbox_ids().await;
                db.close().await;
                let logged = self
                    .dump_eventlog(scratch)
                    .iter()
                    .map(client_event_id)
                    .collect();
                (pending, logged)
            }
        };
        pending.intersection(&logged).count()
    }

    fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Starts `trueline serve` on a free port; returns once it logged `server.started`.
    fn start(&self) -> Server {
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.stderr)
            .unwrap();
        let mut child = self
            .command_in(&self.data_dir)
            .args(["serve", "--bind", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("start trueline");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let alerts = Arc::new(Mutex::new(Vec::new()));
        let sink = alerts.clone();
        // Reads stdout to the end (a full pipe would stall the server).
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let Ok(value) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                if value["event"] == "server.started" {
                    let _ = tx.send(value["address"].as_str().unwrap_or_default().to_owned());
                } else if matches!(value["level"].as_str(), Some("warn" | "error")) {
                    sink.lock().unwrap().push(line);
                }
            }
        });
        let started = tokio::task::block_in_place(|| rx.recv_timeout(Duration::from_secs(60)));
        match started {
            Ok(address) => Server {
                child,
                address: format!("http://{address}"),
                alerts,
            },
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("trueline did not start; stderr:\n{}", self.stderr_text());
            }
        }
    }
}

impl Drop for Server {
    /// A failing test leaves no server behind.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// SIGKILL: no drain, no shutdown hooks, in-flight requests cut.
    fn kill(&mut self) {
        self.child.kill().expect("SIGKILL");
        tokio::task::block_in_place(|| self.child.wait()).unwrap();
    }

    /// SIGTERM and a clean exit.
    fn terminate(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let status = tokio::task::block_in_place(|| self.child.wait()).unwrap();
        assert!(
            status.success(),
            "SIGTERM leads to a clean exit: {status:?}"
        );
    }

    fn alerts(&self) -> Vec<String> {
        self.alerts.lock().unwrap().clone()
    }
}

/// The API's id of a dumped record (`eventlog dump` prints the ids the API shows).
fn client_event_id(record: &Value) -> Uuid {
    record["id"].as_str().unwrap().parse().unwrap()
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

// ---- what the clients did and were told ----

#[derive(Debug, Clone)]
enum Op {
    /// `PATCH /items/{id}/qty` with an Idempotency-Key. `hopeless`: can never apply.
    Delta {
        item: Uuid,
        delta: i64,
        hopeless: bool,
    },
    /// `POST /inventory/adjustments` (all or nothing) over distinct items, with an
    /// Idempotency-Key. `hopeless`: one line can never apply, so the whole batch is refused.
    Adjust {
        lines: Vec<(Uuid, i64)>,
        hopeless: bool,
    },
    /// `POST /items` with an Idempotency-Key. `duplicate`: the name is taken (refused).
    Create {
        name: String,
        qty: u64,
        duplicate: bool,
    },
    /// `POST /events` with a client id. `stale`: `expected_version: "no_stream"` on a stream
    /// that has events (refused).
    Append {
        id: Uuid,
        stream: String,
        data: Value,
        stale: bool,
    },
    /// A candidate's `start` then `submit`; `started: false` submits without starting
    /// (refused).
    Submit { invite: usize, started: bool },
}

#[derive(Debug, Clone)]
enum Outcome {
    /// A 2xx (or, for a retried submission, `already_submitted`: the first one committed).
    Acked {
        status: u16,
        body: Value,
        replayed: bool,
    },
    /// A 4xx other than `idempotency_key_in_use`: the request changed nothing.
    Refused { status: u16, code: String },
    /// No answer (connection cut by the kill), a 5xx, or `idempotency_key_in_use`: the
    /// client cannot know, and retries.
    Unknown(String),
}

impl Outcome {
    fn is_unknown(&self) -> bool {
        matches!(self, Outcome::Unknown(_))
    }

    fn is_acked(&self) -> bool {
        matches!(self, Outcome::Acked { .. })
    }
}

#[derive(Debug, Clone)]
struct Record {
    /// Idempotency-Key and X-Request-Id of every attempt of this operation.
    key: String,
    op: Op,
    outcome: Outcome,
    /// Why the first attempt got no definitive answer (`None` if it got one).
    first_unknown: Option<String>,
    /// Attempts after the restart until a definitive answer.
    retries: u32,
    /// A retry was told `idempotency_key_in_use`: the killed request's claim had to expire.
    waited_for_claim: bool,
}

#[derive(Debug, Clone)]
struct Invite {
    id: Uuid,
    token: String,
}

/// Talks to the current server process.
#[derive(Clone)]
struct Api {
    client: reqwest::Client,
    base: String,
    token: String,
    invites: Arc<Vec<Invite>>,
    requests: Arc<AtomicU64>,
}

impl Api {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn keyed(&self, request: RequestBuilder, key: &str) -> RequestBuilder {
        request
            .bearer_auth(&self.token)
            .header("idempotency-key", key)
            .header("x-request-id", key)
    }

    async fn call(&self, request: RequestBuilder) -> Outcome {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) => return Outcome::Unknown(format!("no response ({})", error_kind(&e))),
        };
        let status = response.status().as_u16();
        let replayed = response.headers().contains_key("idempotent-replayed");
        let bytes = match response.bytes().await {
            Ok(bytes) => bytes,
            Err(e) => return Outcome::Unknown(format!("{status}, body cut ({})", error_kind(&e))),
        };
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let code = body["code"].as_str().unwrap_or_default().to_owned();
        match status {
            200..=299 => Outcome::Acked {
                status,
                body,
                replayed,
            },
            500.. => Outcome::Unknown(format!("{status} {code}")),
            409 if code == "idempotency_key_in_use" => Outcome::Unknown(format!("{status} {code}")),
            _ => Outcome::Refused { status, code },
        }
    }

    async fn get_json(&self, path: &str, query: &[(&str, String)]) -> Value {
        let query: Vec<String> = query
            .iter()
            .map(|(k, v)| format!("{k}={}", percent_encode(v)))
            .collect();
        let response = self.get(&format!("{path}?{}", query.join("&"))).await;
        assert_eq!(response.status(), 200, "GET {path}");
        response.json().await.unwrap()
    }

    /// A read, retried while the (busy, slow debug-build) server sheds or times it out.
    async fn get(&self, path_and_query: &str) -> reqwest::Response {
        for _ in 0..20 {
            let response = self
                .client
                .get(self.url(path_and_query))
                .bearer_auth(&self.token)
                .send()
                .await
                .unwrap();
            if !response.status().is_server_error() {
                return response;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        panic!("GET {path_and_query} kept failing with 5xx");
    }

    /// Every element of a paginated list.
    async fn list_all(&self, path: &str, query: &[(&str, String)]) -> Vec<Value> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut q = query.to_vec();
            q.push(("limit", "200".into()));
            if let Some(c) = &cursor {
                q.push(("cursor", c.clone()));
            }
            let page = self.get_json(path, &q).await;
            out.extend(page["data"].as_array().unwrap().iter().cloned());
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => return out,
            }
        }
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn percent_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn error_kind(e: &reqwest::Error) -> &'static str {
    if e.is_connect() {
        "connect"
    } else if e.is_timeout() {
        "timeout"
    } else {
        "cut"
    }
}

/// Sends one attempt of `op`.
async fn send(api: &Api, op: &Op, key: &str) -> Outcome {
    match op {
        Op::Delta { item, delta, .. } => {
            let request = api
                .client
                .patch(api.url(&format!("/api/v1/items/{item}/qty")))
                .json(&json!({ "delta": delta }));
            api.call(api.keyed(request, key)).await
        }
        Op::Adjust { lines, .. } => {
            let adjustments: Vec<Value> = lines
                .iter()
                .map(|(item, delta)| json!({ "item_id": item, "delta": delta }))
                .collect();
            let request = api
                .client
                .post(api.url("/api/v1/inventory/adjustments"))
                .json(&json!({ "reason": "crash test", "adjustments": adjustments }));
            api.call(api.keyed(request, key)).await
        }
        Op::Create { name, qty, .. } => {
            let request = api
                .client
                .post(api.url("/api/v1/items"))
                .json(&json!({ "name": name, "qty": qty }));
            api.call(api.keyed(request, key)).await
        }
        Op::Append {
            id,
            stream,
            data,
            stale,
        } => {
            let mut body = json!({ "id": id, "type": EVENT_TYPE, "stream": stream, "data": data });
            if *stale {
                body["expected_version"] = json!("no_stream");
            }
            let request = api
                .client
                .post(api.url("/api/v1/events"))
                .bearer_auth(&api.token)
                .header("x-request-id", key)
                .json(&body);
            api.call(request).await
        }
        Op::Submit { invite, started } => {
            let token = &api.invites[*invite].token;
            let mut answers = json!({});
            if *started {
                let start = api
                    .client
                    .post(api.url(&format!("/api/v1/public/invites/{token}/start")));
                match api.call(start.header("x-request-id", key)).await {
                    Outcome::Acked { body, .. } => {
                        let question = body["questions"][0]["id"].as_str().unwrap_or_default();
                        answers[question] = json!(1);
                    }
                    other => return other,
                }
            }
            let submit = api
                .client
                .post(api.url(&format!("/api/v1/public/invites/{token}/submit")))
                .header("x-request-id", key)
                .json(&json!({ "answers": answers }));
            match api.call(submit).await {
                // A retry finding the submission of its first attempt.
                Outcome::Refused { code, .. } if code == "already_submitted" => Outcome::Acked {
                    status: 409,
                    body: Value::Null,
                    replayed: true,
                },
                other => other,
            }
        }
    }
}

/// Whether a definitive outcome is one this operation may have; `Some(reason)` if not.
fn unexpected(record: &Record) -> Option<String> {
    let fine = match (&record.op, &record.outcome) {
        (_, Outcome::Unknown(_)) => true,
        (Op::Delta { hopeless: true, .. }, Outcome::Refused { status: 400, code }) => {
            code == "insufficient_quantity"
        }
        (
            Op::Delta {
                hopeless: false, ..
            },
            Outcome::Acked { status: 200, .. },
        ) => true,
        (
            Op::Delta {
                hopeless: false, ..
            },
            Outcome::Refused { status: 400, code },
        ) => code == "insufficient_quantity",
        (Op::Adjust { hopeless: true, .. }, Outcome::Refused { status: 400, code }) => {
            code == "adjustments_rejected"
        }
        (
            Op::Adjust {
                hopeless: false, ..
            },
            Outcome::Acked { status: 200, .. },
        ) => true,
        (
            Op::Adjust {
                hopeless: false, ..
            },
            Outcome::Refused { status: 400, code },
        ) => code == "adjustments_rejected",
        (
            Op::Create {
                duplicate: true, ..
            },
            Outcome::Refused { status: 409, code },
        ) => code == "name_taken",
        (
            Op::Create {
                duplicate: false, ..
            },
            Outcome::Acked { status: 201, .. },
        ) => true,
        (Op::Append { stale: true, .. }, Outcome::Refused { status: 409, code }) => {
            code == "wrong_expected_version"
        }
        (Op::Append { stale: false, .. }, Outcome::Acked { status, .. }) => {
            *status == 201 || *status == 200
        }
        (Op::Submit { started: true, .. }, Outcome::Acked { .. }) => true,
        (Op::Submit { started: false, .. }, Outcome::Refused { status: 409, code }) => {
            code == "invalid_transition"
        }
        _ => false,
    };
    (!fine).then(|| {
        format!(
            "{}: {:?} was answered {:?}",
            record.key, record.op, record.outcome
        )
    })
}

// ---- the load ----

enum Role {
    Delta,
    Create,
    Append {
        stream: String,
        has_events: bool,
    },
    /// Invites still to use, the one to submit unstarted first in the list.
    Candidate(Vec<usize>),
}

struct Worker {
    api: Api,
    role: Role,
    rng: Rng,
    tag: String,
    stock: Arc<Vec<Uuid>>,
    stop: Arc<AtomicBool>,
    records: Arc<Mutex<Vec<Record>>>,
}

impl Worker {
    async fn run(mut self) {
        for n in 0.. {
            if self.stop.load(Ordering::SeqCst) {
                break;
            }
            let key = format!("{}-{n}", self.tag);
            let rng = &mut self.rng;
            let op = match &mut self.role {
                Role::Delta if rng.percent(20) => {
                    // Two or three distinct stock items.
                    let mut items: Vec<Uuid> = self.stock.to_vec();
                    let mut lines = Vec::new();
                    for _ in 0..2 + rng.below(2) {
                        let item = items.swap_remove(rng.below(items.len() as u64) as usize);
                        lines.push((item, rng.delta()));
                    }
                    let hopeless = rng.percent(15);
                    if hopeless {
                        lines[0].1 = -HOPELESS_DELTA;
                    }
                    Op::Adjust { lines, hopeless }
                }
                Role::Delta => {
                    let hopeless = rng.percent(15);
                    Op::Delta {
                        item: self.stock[rng.below(self.stock.len() as u64) as usize],
                        delta: if hopeless {
                            -HOPELESS_DELTA
                        } else {
                            rng.delta()
                        },
                        hopeless,
                    }
                }
                Role::Create => {
                    let duplicate = rng.percent(20);
                    let name = if duplicate {
                        format!("STOCK-{}", rng.below(STOCK_ITEMS as u64))
                    } else {
                        format!("item-{key}")
                    };
                    Op::Create {
                        name,
                        qty: rng.below(50),
                        duplicate,
                    }
                }
                Role::Append { stream, has_events } => Op::Append {
                    id: rng.uuid(),
                    stream: stream.clone(),
                    data: json!({ "key": key, "n": n, "text": "ünïcödé ✓ \"quoted\"" }),
                    stale: *has_events && rng.percent(15),
                },
                Role::Candidate(invites) => match invites.pop() {
                    Some(invite) => Op::Submit {
                        invite,
                        started: !invites.is_empty(),
                    },
                    None => break,
                },
            };
            let outcome = send(&self.api, &op, &key).await;
            if let (Role::Append { has_events, .. }, true) = (&mut self.role, outcome.is_acked()) {
                *has_events = true;
            }
            self.records.lock().unwrap().push(Record {
                key,
                op,
                outcome,
                first_unknown: None,
                retries: 0,
                waited_for_claim: false,
            });
        }
    }
}

/// Runs the load and kills the server after a random delay; returns every operation sent.
async fn load_and_kill(
    api: &Api,
    world: &World,
    ledger: &[Record],
    server: &mut Server,
    round: usize,
    rng: &mut Rng,
) -> (Vec<Record>, Duration) {
    let stop = Arc::new(AtomicBool::new(false));
    let records = Arc::new(Mutex::new(Vec::new()));
    let mut roles: Vec<(String, Role)> = Vec::new();
    for w in 0..DELTA_WORKERS {
        roles.push((format!("r{round}-d{w}"), Role::Delta));
    }
    for w in 0..CREATE_WORKERS {
        roles.push((format!("r{round}-c{w}"), Role::Create));
    }
    for w in 0..APPEND_WORKERS {
        let stream = format!("crash-{w}");
        let has_events = ledger.iter().any(|r| {
            matches!(&r.op, Op::Append { stream: s, .. } if *s == stream) && r.outcome.is_acked()
        });
        roles.push((
            format!("r{round}-e{w}"),
            Role::Append { stream, has_events },
        ));
    }
    let first = (round - 1) * CANDIDATES_PER_ROUND;
    roles.push((
        format!("r{round}-s0"),
        Role::Candidate((first..first + CANDIDATES_PER_ROUND).collect()),
    ));
    let tasks: Vec<_> = roles
        .into_iter()
        .map(|(tag, role)| {
            tokio::spawn(
                Worker {
                    api: api.clone(),
                    role,
                    rng: Rng(rng.next()),
                    tag,
                    stock: world.stock.clone(),
                    stop: stop.clone(),
                    records: records.clone(),
                }
                .run(),
            )
        })
        .collect();
    let kill_after =
        Duration::from_millis(KILL_AFTER_MS_MIN + rng.below(KILL_AFTER_MS_MAX - KILL_AFTER_MS_MIN));
    tokio::time::sleep(kill_after).await;
    stop.store(true, Ordering::SeqCst);
    server.kill();
    for task in tasks {
        task.await.unwrap();
    }
    let records = std::mem::take(&mut *records.lock().unwrap());
    (records, kill_after)
}

/// Retries every operation without a definitive answer (same key, id, content) until it
/// gets one.
async fn resolve(api: &Api, records: &mut [Record]) -> Vec<String> {
    let open: Vec<usize> = (0..records.len())
        .filter(|&i| records[i].outcome.is_unknown())
        .collect();
    let retries = open.iter().map(|&i| {
        let (op, key) = (records[i].op.clone(), records[i].key.clone());
        async move {
            let deadline = Instant::now() + RESOLVE_TIMEOUT;
            let (mut attempts, mut in_use) = (0, false);
            loop {
                let outcome = send(api, &op, &key).await;
                attempts += 1;
                if !outcome.is_unknown() || Instant::now() > deadline {
                    return (outcome, attempts, in_use);
                }
                in_use |= matches!(&outcome, Outcome::Unknown(why) if why.contains("idempotency_key_in_use"));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    });
    let outcomes = futures_util::future::join_all(retries).await;
    let mut problems = Vec::new();
    for (i, (outcome, attempts, in_use)) in open.into_iter().zip(outcomes) {
        let record = &mut records[i];
        record.retries += attempts;
        record.waited_for_claim |= in_use;
        record.outcome = outcome;
        if let Outcome::Unknown(last) = &record.outcome {
            problems.push(format!(
                "{}: still no definitive answer after {RESOLVE_TIMEOUT:?} of retries: {last}",
                record.key
            ));
        }
    }
    problems
}

/// Restarts the server and kills it again after a short random delay, while it recovers
/// (its relay republishing what the last kill left) and while one retry of each unanswered
/// request runs; a retry the kill cuts stays unanswered. Returns the delay and the server's
/// warnings.
async fn kill_during_recovery(
    launch: &Launch,
    api: &mut Api,
    records: &mut [Record],
    rng: &mut Rng,
) -> (Duration, Vec<String>) {
    let mut server = launch.start();
    api.base = server.address.clone();
    let delay = Duration::from_millis(rng.below(RECOVERY_KILL_AFTER_MS_MAX));
    let open: Vec<usize> = (0..records.len())
        .filter(|&i| records[i].outcome.is_unknown())
        .collect();
    let attempts = futures_util::future::join_all(open.iter().map(|&i| {
        let (op, key, api) = (records[i].op.clone(), records[i].key.clone(), api.clone());
        async move { send(&api, &op, &key).await }
    }));
    let kill = async {
        tokio::time::sleep(delay).await;
        server.kill();
    };
    let (outcomes, ()) = tokio::join!(attempts, kill);
    for (i, outcome) in open.into_iter().zip(outcomes) {
        records[i].retries += 1;
        if !outcome.is_unknown() {
            records[i].outcome = outcome;
        }
    }
    (delay, server.alerts())
}

/// Sends acknowledged writes of this round again: each must replay its first answer.
async fn replay_some(api: &Api, records: &[Record]) -> (usize, Vec<String>) {
    let mut problems = Vec::new();
    let mut replayed = 0;
    let candidates = records.iter().filter(|r| {
        r.outcome.is_acked() && r.first_unknown.is_none() && !matches!(r.op, Op::Submit { .. })
    });
    for record in candidates.take(REPLAYS_PER_ROUND) {
        let Outcome::Acked { body: first, .. } = &record.outcome else {
            continue;
        };
        let again = send(api, &record.op, &record.key).await;
        replayed += 1;
        let fine = match (&record.op, &again) {
            (
                Op::Append { .. },
                Outcome::Acked {
                    status: 200, body, ..
                },
            ) => body["position"] == first["position"] && body["id"] == first["id"],
            (
                _,
                Outcome::Acked {
                    replayed: true,
                    body,
                    ..
                },
            ) => body == first,
            _ => false,
        };
        if !fine {
            problems.push(format!(
                "{}: sent again, {:?} was answered {again:?}, first {first}",
                record.key, record.op
            ));
        }
    }
    (replayed, problems)
}

// ---- direct database reads (verification only) ----

enum Db {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

struct HistoryRow {
    request_id: String,
    item_id: Uuid,
    kind: String,
    delta: i64,
    version: i64,
}

macro_rules! on_db {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            Db::Sqlite($pool) => $body,
            Db::Postgres($pool) => $body,
        }
    };
}

impl Db {
    async fn open(launch: &Launch) -> Db {
        match &launch.database_url {
            Some(url) => Db::Postgres(sqlx::PgPool::connect(url).await.unwrap()),
            None => {
                let url = format!("sqlite://{}", launch.data_dir.join("trueline.db").display());
                Db::Sqlite(sqlx::SqlitePool::connect(&url).await.unwrap())
            }
        }
    }

    async fn close(self) {
        on_db!(self, pool => pool.close().await)
    }

    async fn pending_outbox(&self) -> i64 {
        let sql = "SELECT count(*) FROM outbox WHERE published_at IS NULL";
        on_db!(self, pool => sqlx::query(sql).fetch_one(pool).await.unwrap().get(0))
    }

    async fn outbox_ids(&self) -> Vec<Uuid> {
        let sql = "SELECT event_id FROM outbox";
        on_db!(self, pool => sqlx::query(sql)
            .fetch_all(pool)
            .await
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect())
    }

    async fn pending_outbox_ids(&self) -> HashSet<Uuid> {
        let sql = "SELECT event_id FROM outbox WHERE published_at IS NULL";
        on_db!(self, pool => sqlx::query(sql)
            .fetch_all(pool)
            .await
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect())
    }

    /// The ids in the PostgreSQL event log.
    async fn logged_ids(&self) -> HashSet<Uuid> {
        let sql = "SELECT id FROM events";
        on_db!(self, pool => sqlx::query(sql)
            .fetch_all(pool)
            .await
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect())
    }

    async fn history(&self) -> Vec<HistoryRow> {
        let sql = "SELECT request_id, item_id, kind, delta, version FROM item_history";
        on_db!(self, pool => sqlx::query(sql)
            .fetch_all(pool)
            .await
            .unwrap()
            .iter()
            .map(|row| HistoryRow {
                request_id: row.get(0),
                item_id: row.get(1),
                kind: row.get(2),
                delta: row.get(3),
                version: row.get(4),
            })
            .collect())
    }
}

// ---- verification ----

/// The fixed part of the scenario, created before the first kill.
struct World {
    stock: Arc<Vec<Uuid>>,
    stock_keys: HashSet<String>,
    assessment: String,
}

async fn setup(api: &mut Api, rounds: usize) -> World {
    let signup =
        json!({"email": "crash@example.com", "password": PASSWORD, "organization_name": "Crash"});
    let response = api
        .client
        .post(api.url("/api/v1/auth/signup"))
        .json(&signup)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "signup");
    let body: Value = response.json().await.unwrap();
    api.token = body["token"]["token"].as_str().unwrap().to_owned();
    let mut stock = Vec::new();
    let mut stock_keys = HashSet::new();
    for i in 0..STOCK_ITEMS {
        let key = format!("setup-stock-{i}");
        let op = Op::Create {
            name: format!("stock-{i}"),
            qty: STOCK_QTY,
            duplicate: false,
        };
        let Outcome::Acked { body, .. } = send(api, &op, &key).await else {
            panic!("creating stock item {i}");
        };
        stock.push(body["id"].as_str().unwrap().parse().unwrap());
        stock_keys.insert(key);
    }
    let post = |path: &str, body: Value| {
        api.client
            .post(api.url(path))
            .bearer_auth(&api.token)
            .json(&body)
            .send()
    };
    let assessment: Value = post(
        "/api/v1/assessments",
        json!({"title": "Crash", "time_limit_minutes": 240, "passing_score_percent": 50, "show_score_to_candidate": true}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let id = assessment["id"].as_str().unwrap().to_owned();
    let question =
        json!({"type": "single_choice", "prompt": "2+2?", "options": ["3", "4"], "correct": 1});
    let added = post(&format!("/api/v1/assessments/{id}/questions"), question)
        .await
        .unwrap();
    assert_eq!(added.status(), 201, "add question");
    let published = post(&format!("/api/v1/assessments/{id}/publish"), json!({}))
        .await
        .unwrap();
    assert_eq!(published.status(), 200, "publish");
    let mut invites = Vec::new();
    let wanted = rounds * CANDIDATES_PER_ROUND;
    while invites.len() < wanted {
        let candidates: Vec<Value> = (invites.len()..wanted.min(invites.len() + 500))
            .map(|i| json!({ "email": format!("candidate-{i}@example.com") }))
            .collect();
        let response = post(
            &format!("/api/v1/assessments/{id}/invites"),
            json!({ "candidates": candidates }),
        )
        .await
        .unwrap();
        assert_eq!(response.status(), 201, "invites");
        let body: Value = response.json().await.unwrap();
        for invite in body["invites"].as_array().unwrap() {
            invites.push(Invite {
                id: invite["id"].as_str().unwrap().parse().unwrap(),
                token: invite["token"].as_str().unwrap().to_owned(),
            });
        }
    }
    api.invites = Arc::new(invites);
    World {
        stock: Arc::new(stock),
        stock_keys,
        assessment: id,
    }
}

/// What the server holds, read after the outbox drained.
struct Holdings {
    items: HashMap<Uuid, Value>,
    history: Vec<HistoryRow>,
    events: Vec<Value>,
    submissions: Vec<Value>,
    outbox: HashSet<Uuid>,
}

/// Waits for the outbox to drain, then reads everything the checks need.
async fn read_holdings(api: &Api, db: &Db, world: &World, problems: &mut Vec<String>) -> Holdings {
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    let mut pending = db.pending_outbox().await;
    while pending > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        pending = db.pending_outbox().await;
    }
    if pending > 0 {
        problems.push(format!(
            "the outbox did not drain within {DRAIN_TIMEOUT:?}: {pending} rows pending"
        ));
    }
    let items = api
        .list_all("/api/v1/items", &[])
        .await
        .into_iter()
        .map(|i| (i["id"].as_str().unwrap().parse().unwrap(), i))
        .collect();
    let submissions_path = format!("/api/v1/assessments/{}/submissions", world.assessment);
    Holdings {
        items,
        history: db.history().await,
        events: api
            .list_all("/api/v1/events", &[("after", "0".into())])
            .await,
        submissions: api.list_all(&submissions_path, &[]).await,
        outbox: db.outbox_ids().await.into_iter().collect(),
    }
}

/// Checks everything the server holds against everything its clients were told.
async fn verify(
    api: &Api,
    db: &Db,
    world: &World,
    ledger: &[Record],
    this_round: &[Record],
) -> (Holdings, Vec<String>) {
    let mut problems = Vec::new();
    let held = read_holdings(api, db, world, &mut problems).await;
    check_items(world, ledger, &held, &mut problems);
    for id in world.stock.iter() {
        check_stock_item(api, *id, ledger, &held, &mut problems).await;
    }
    check_events(ledger, &held, &mut problems);
    check_reads_by_id(api, this_round, &mut problems).await;
    check_outbox(&held, &mut problems);
    check_submissions(api, ledger, &held, &mut problems);
    (held, problems)
}

/// Items are exactly the stock and the acknowledged creates; each item's quantity and
/// version are the sum and count of its history records; each acknowledged create has one
/// `created` record, a refused one none; no history record has a request id no client sent.
fn check_items(world: &World, ledger: &[Record], held: &Holdings, problems: &mut Vec<String>) {
    let known_keys: HashSet<&str> = ledger
        .iter()
        .map(|r| r.key.as_str())
        .chain(world.stock_keys.iter().map(String::as_str))
        .collect();
    let mut history_by_key: HashMap<&str, Vec<&HistoryRow>> = HashMap::new();
    for row in &held.history {
        history_by_key
            .entry(row.request_id.as_str())
            .or_default()
            .push(row);
        if !known_keys.contains(row.request_id.as_str()) {
            problems.push(format!(
                "a history record of item {} (v{}) has request id {:?}, which no client sent",
                row.item_id, row.version, row.request_id
            ));
        }
    }
    let mut expected: HashSet<Uuid> = world.stock.iter().copied().collect();
    for record in ledger {
        let Op::Create { name, qty, .. } = &record.op else {
            continue;
        };
        let rows = history_by_key
            .get(record.key.as_str())
            .map_or(&[][..], Vec::as_slice);
        match &record.outcome {
            Outcome::Acked { body, .. } => {
                let id: Uuid = body["id"].as_str().unwrap().parse().unwrap();
                expected.insert(id);
                match held.items.get(&id) {
                    None => problems.push(format!("{}: created item {id} is missing", record.key)),
                    Some(item) if item["name"] != name.as_str() || item["qty"] != *qty => problems
                        .push(format!(
                            "{}: created {name:?} with qty {qty}, the server holds {item}",
                            record.key
                        )),
                    Some(_) => {}
                }
                if rows.len() != 1 || rows[0].item_id != id || rows[0].kind != "created" {
                    problems.push(format!(
                        "{}: created item {id} has {} history records with this request id",
                        record.key,
                        rows.len()
                    ));
                }
            }
            Outcome::Refused { .. } if !rows.is_empty() => problems.push(format!(
                "{}: a refused create left {} history records",
                record.key,
                rows.len()
            )),
            _ => {}
        }
    }
    let mut sums: HashMap<Uuid, (i64, usize)> = HashMap::new();
    for row in &held.history {
        let (sum, count) = sums.entry(row.item_id).or_default();
        *sum += row.delta;
        *count += 1;
    }
    for (id, item) in &held.items {
        let (sum, count) = sums.get(id).copied().unwrap_or_default();
        if item["qty"] != sum || item["version"] != count || sum < 0 {
            problems.push(format!(
                "item {id}: qty {} version {}, its {count} history records sum to {sum}",
                item["qty"], item["version"]
            ));
        }
    }
    for id in held.items.keys() {
        if !expected.contains(id) {
            problems.push(format!(
                "item {id} exists but no client was told it was created"
            ));
        }
    }
    for id in &expected {
        if !held.items.contains_key(id) {
            problems.push(format!("item {id} was acknowledged but is missing"));
        }
    }
}

/// A stock item's quantity is the sum of its history (read through the API), never
/// negative on the way, and equals its initial quantity plus the acknowledged deltas and
/// adjustment lines, each in the history exactly once; refused ones are not in it (so a
/// batch is in every one of its items' histories or in none).
async fn check_stock_item(
    api: &Api,
    id: Uuid,
    ledger: &[Record],
    held: &Holdings,
    problems: &mut Vec<String>,
) {
    let Some(item) = held.items.get(&id) else {
        return;
    };
    let records = api
        .list_all(&format!("/api/v1/items/{id}/history"), &[])
        .await;
    let mut qty: i64 = 0;
    let mut by_key: HashMap<&str, Vec<&Value>> = HashMap::new();
    for (i, r) in records.iter().enumerate() {
        qty += r["delta"].as_i64().unwrap();
        if r["version"] != (i as u64 + 1) {
            problems.push(format!(
                "item {id}: history record {i} has version {}",
                r["version"]
            ));
        }
        if qty < 0 || r["qty_after"] != qty {
            problems.push(format!(
                "item {id} v{}: qty_after {} but the deltas so far sum to {qty}",
                r["version"], r["qty_after"]
            ));
        }
        by_key
            .entry(r["request_id"].as_str().unwrap())
            .or_default()
            .push(r);
    }
    if item["qty"] != qty || item["version"] != records.len() {
        problems.push(format!(
            "item {id}: qty {} version {}, its {} history records sum to {qty}",
            item["qty"],
            item["version"],
            records.len()
        ));
    }
    let mut expected = STOCK_QTY as i64;
    for record in ledger {
        let delta = match &record.op {
            Op::Delta { item, delta, .. } if *item == id => *delta,
            Op::Adjust { lines, .. } => match lines.iter().find(|(item, _)| *item == id) {
                Some((_, delta)) => *delta,
                None => continue,
            },
            _ => continue,
        };
        let found = by_key
            .get(record.key.as_str())
            .map_or(&[][..], Vec::as_slice);
        match &record.outcome {
            Outcome::Acked { .. } => {
                expected += delta;
                if found.len() != 1 || found[0]["delta"] != delta {
                    problems.push(format!(
                        "{}: acknowledged delta {delta} on {id} is in its history {} times",
                        record.key,
                        found.len()
                    ));
                }
            }
            _ if !found.is_empty() => problems.push(format!(
                "{}: refused delta {delta} on {id} is in its history {} times",
                record.key,
                found.len()
            )),
            _ => {}
        }
    }
    if item["qty"] != expected {
        problems.push(format!(
            "item {id}: qty {} but initial {STOCK_QTY} + acknowledged deltas = {expected}",
            item["qty"]
        ));
    }
}

fn events_by_id(held: &Holdings) -> HashMap<Uuid, &Value> {
    held.events
        .iter()
        .map(|e| (e["id"].as_str().unwrap().parse().unwrap(), e))
        .collect()
}

/// The log has no gaps (positions, stream versions) and no duplicate ids; every
/// acknowledged append is in it once, at the position it was given, with its content; no
/// refused or never-acknowledged append is.
fn check_events(ledger: &[Record], held: &Holdings, problems: &mut Vec<String>) {
    let mut stream_versions: HashMap<&str, u64> = HashMap::new();
    let mut ids = HashSet::new();
    for (i, event) in held.events.iter().enumerate() {
        if event["position"] != (i as u64 + 1) {
            problems.push(format!(
                "event log gap: event {i} is at position {}",
                event["position"]
            ));
        }
        let stream = event["stream"].as_str().unwrap();
        let version = stream_versions.entry(stream).or_default();
        *version += 1;
        if event["stream_version"] != *version {
            problems.push(format!(
                "stream {stream}: the event at position {} has version {}, expected {version}",
                event["position"], event["stream_version"]
            ));
        }
        if !ids.insert(event["id"].as_str().unwrap()) {
            problems.push(format!("event {} is in the log twice", event["id"]));
        }
    }
    let by_id = events_by_id(held);
    let mut acked = HashSet::new();
    for record in ledger {
        let Op::Append {
            id, stream, data, ..
        } = &record.op
        else {
            continue;
        };
        match (&record.outcome, by_id.get(id)) {
            (Outcome::Acked { body, .. }, Some(event)) => {
                acked.insert(*id);
                if event["position"] != body["position"]
                    || event["stream"] != stream.as_str()
                    || event["type"] != EVENT_TYPE
                    || event["data"] != *data
                {
                    problems.push(format!(
                        "{}: acknowledged {body}, the log holds {event}",
                        record.key
                    ));
                }
            }
            (Outcome::Acked { .. }, None) => problems.push(format!(
                "{}: acknowledged event {id} is missing",
                record.key
            )),
            (_, Some(event)) => problems.push(format!(
                "{}: refused event {id} is in the log: {event}",
                record.key
            )),
            (_, None) => {}
        }
    }
    for (id, event) in &by_id {
        if event["type"] == EVENT_TYPE && !acked.contains(id) {
            problems.push(format!(
                "event {id} is in the log but was never acknowledged"
            ));
        }
    }
}

/// `GET /events/{id}` finds this round's acknowledged appends at their position and none of
/// the refused ones.
async fn check_reads_by_id(api: &Api, this_round: &[Record], problems: &mut Vec<String>) {
    for record in this_round {
        let Op::Append { id, .. } = &record.op else {
            continue;
        };
        let response = api.get(&format!("/api/v1/events/{id}")).await;
        let status = response.status().as_u16();
        let fine = match &record.outcome {
            Outcome::Acked { body, .. } => {
                status == 200
                    && response.json::<Value>().await.unwrap()["position"] == body["position"]
            }
            _ => status == 404,
        };
        if !fine {
            problems.push(format!(
                "{}: GET /events/{id} answered {status} after {:?}",
                record.key, record.outcome
            ));
        }
    }
}

/// Every outbox row is in the log exactly once, and nothing else claims to come from the
/// outbox; every history record has exactly one matching `inventory.item.*` event.
fn check_outbox(held: &Holdings, problems: &mut Vec<String>) {
    let relayed: HashSet<Uuid> = events_by_id(held)
        .into_iter()
        .filter(|(_, e)| e["metadata"]["source"] == "outbox")
        .map(|(id, _)| id)
        .collect();
    for id in held.outbox.difference(&relayed) {
        problems.push(format!("outbox event {id} is not in the log"));
    }
    for id in relayed.difference(&held.outbox) {
        problems.push(format!("event {id} came from no outbox row"));
    }
    let mut item_events: HashMap<(Uuid, i64), Vec<&Value>> = HashMap::new();
    for event in &held.events {
        if event["type"]
            .as_str()
            .unwrap()
            .starts_with("inventory.item.")
        {
            let data = &event["data"];
            let item = data["item_id"].as_str().unwrap().parse().unwrap();
            let version = data["version"].as_i64().unwrap();
            item_events.entry((item, version)).or_default().push(event);
        }
    }
    for row in &held.history {
        let found = item_events
            .get(&(row.item_id, row.version))
            .map_or(&[][..], Vec::as_slice);
        let fine = match found {
            [event] => {
                event["type"] == format!("inventory.item.{}", row.kind)
                    && event["data"]["request_id"] == row.request_id.as_str()
                    && (row.kind != "qty_changed" || event["data"]["delta"] == row.delta)
            }
            _ => false,
        };
        if !fine {
            problems.push(format!(
                "history record {} v{} ({} {}) has {} events: {found:?}",
                row.item_id,
                row.version,
                row.kind,
                row.delta,
                found.len()
            ));
        }
    }
    let events = item_events.values().map(Vec::len).sum::<usize>();
    if events != held.history.len() {
        problems.push(format!(
            "{events} item events for {} history records",
            held.history.len()
        ));
    }
}

/// One submission per acknowledged candidate, none for refused ones, one event each.
fn check_submissions(api: &Api, ledger: &[Record], held: &Holdings, problems: &mut Vec<String>) {
    let mut events: HashMap<Uuid, usize> = HashMap::new();
    for event in &held.events {
        if event["type"] == "assessments.submission.submitted" {
            let id = event["data"]["submission_id"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap();
            *events.entry(id).or_default() += 1;
        }
    }
    let mut per_invite: HashMap<Uuid, usize> = HashMap::new();
    for s in &held.submissions {
        *per_invite
            .entry(s["invite_id"].as_str().unwrap().parse().unwrap())
            .or_default() += 1;
        let id: Uuid = s["id"].as_str().unwrap().parse().unwrap();
        let found = events.remove(&id).unwrap_or(0);
        if found != 1 {
            problems.push(format!("submission {id} has {found} events"));
        }
    }
    if !events.is_empty() {
        problems.push(format!(
            "submission events without a submission: {events:?}"
        ));
    }
    let mut acked = 0;
    for record in ledger {
        let Op::Submit { invite, .. } = record.op else {
            continue;
        };
        let found = per_invite
            .get(&api.invites[invite].id)
            .copied()
            .unwrap_or(0);
        let wanted = usize::from(record.outcome.is_acked());
        acked += wanted;
        if found != wanted {
            problems.push(format!(
                "{}: invite {invite} has {found} submissions after {:?}",
                record.key, record.outcome
            ));
        }
    }
    if held.submissions.len() != acked {
        problems.push(format!(
            "{} submissions for {acked} acknowledged",
            held.submissions.len()
        ));
    }
}

// ---- the test ----

#[derive(Debug, Default)]
struct Totals {
    operations: usize,
    acked: usize,
    refused: usize,
    unknown: usize,
    /// Unknown outcomes whose first attempt turned out to have committed (replayed on retry).
    unknown_committed: usize,
    /// Unknown outcomes refused on retry (nothing committed, and now refused).
    unknown_refused: usize,
    unknown_reasons: BTreeMap<String, usize>,
    /// Retries told `idempotency_key_in_use` until the killed request's claim expired.
    waited_for_claim: usize,
    retries: usize,
    /// Outbox rows in the log but not marked published when the server was killed.
    relayed_but_unmarked: usize,
    replays: usize,
    kill_after_ms: Vec<u64>,
    /// Second kills, during recovery.
    recovery_kill_after_ms: Vec<u64>,
}

async fn killed_at_random_moments_the_server_keeps_every_acknowledged_write_and_nothing_else(
    backend: Backend,
) {
    let rounds: usize = std::env::var(ROUNDS_ENV)
        .ok()
        .map(|r| r.parse().expect("TRUELINE_CRASH_ROUNDS is a number"))
        .unwrap_or(SMOKE_ROUNDS);
    let seed: u64 = std::env::var(SEED_ENV).ok().map_or_else(
        || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        },
        |s| s.parse().expect("TRUELINE_CRASH_SEED is a number"),
    );
    eprintln!("crash test ({backend:?}): {rounds} rounds, {SEED_ENV}={seed}");
    let started = Instant::now();
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let database = match backend {
        Backend::Sqlite => None,
        Backend::Postgres => Some(TestDatabase::create().await),
    };
    let launch = Launch {
        data_dir: dir.path().join("data"),
        database_url: database.as_ref().map(|d| d.url.clone()),
        stderr: dir.path().join("stderr.log"),
    };
    std::fs::create_dir_all(&launch.data_dir).unwrap();
    let mut server = launch.start();
    // reqwest is built without a TLS provider of its own (plain HTTP here, but it insists).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut api = Api {
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap(),
        base: server.address.clone(),
        token: String::new(),
        invites: Arc::new(Vec::new()),
        requests: Arc::new(AtomicU64::new(0)),
    };
    let world = setup(&mut api, rounds).await;
    let mut ledger: Vec<Record> = Vec::new();
    let mut totals = Totals::default();
    let mut alerts: Vec<String> = Vec::new();
    let mut served_ids: Vec<Uuid> = Vec::new();
    for round in 1..=rounds {
        let (mut records, kill_after) =
            load_and_kill(&api, &world, &ledger, &mut server, round, &mut rng).await;
        totals.kill_after_ms.push(kill_after.as_millis() as u64);
        alerts.extend(server.alerts());
        totals.relayed_but_unmarked += launch
            .relayed_but_unmarked(&dir.path().join("snapshot"))
            .await;
        for record in &mut records {
            if let Outcome::Unknown(why) = &record.outcome {
                record.first_unknown = Some(why.clone());
            }
        }
        let mut problems: Vec<String> = records.iter().filter_map(unexpected).collect();
        let mut recovery_kill = None;
        if rng.percent(RECOVERY_KILL_PERCENT) {
            let (delay, server_alerts) =
                kill_during_recovery(&launch, &mut api, &mut records, &mut rng).await;
            recovery_kill = Some(delay.as_millis());
            totals.recovery_kill_after_ms.push(delay.as_millis() as u64);
            alerts.extend(server_alerts);
            totals.relayed_but_unmarked += launch
                .relayed_but_unmarked(&dir.path().join("snapshot"))
                .await;
        }

        server = launch.start();
        api.base = server.address.clone();
        problems.extend(resolve(&api, &mut records).await);
        problems.extend(records.iter().filter_map(unexpected));
        let (replays, replay_problems) = replay_some(&api, &records).await;
        totals.replays += replays;
        problems.extend(replay_problems);

        for record in &records {
            totals.operations += 1;
            match &record.outcome {
                Outcome::Acked { .. } => totals.acked += 1,
                _ => totals.refused += 1,
            }
            if let Some(reason) = &record.first_unknown {
                totals.unknown += 1;
                totals.retries += record.retries as usize;
                totals.waited_for_claim += usize::from(record.waited_for_claim);
                *totals.unknown_reasons.entry(reason.clone()).or_default() += 1;
                match &record.outcome {
                    Outcome::Acked { replayed: true, .. } => totals.unknown_committed += 1,
                    Outcome::Acked { status: 200, .. }
                        if matches!(record.op, Op::Append { .. }) =>
                    {
                        totals.unknown_committed += 1
                    }
                    Outcome::Refused { .. } => totals.unknown_refused += 1,
                    _ => {}
                }
            }
        }
        let this_round = records.clone();
        ledger.extend(records);
        let db = Db::open(&launch).await;
        let (held, verify_problems) = verify(&api, &db, &world, &ledger, &this_round).await;
        db.close().await;
        served_ids = held
            .events
            .iter()
            .map(|e| e["id"].as_str().unwrap().parse().unwrap())
            .collect();
        problems.extend(verify_problems);
        eprintln!(
            "round {round}/{rounds}: killed after {} ms{}; {} operations ({} without an \
             answer); now {} items, {} history records, {} events, {} submissions; {:.1} s so far",
            kill_after.as_millis(),
            recovery_kill.map_or(String::new(), |ms| format!(", again {ms} ms into recovery")),
            this_round.len(),
            this_round
                .iter()
                .filter(|r| r.first_unknown.is_some())
                .count(),
            held.items.len(),
            held.history.len(),
            held.events.len(),
            held.submissions.len(),
            started.elapsed().as_secs_f64()
        );
        assert!(
            problems.is_empty(),
            "round {round} ({SEED_ENV}={seed}): {} problems:\n{}\nserver warnings:\n{}",
            problems.len(),
            problems.join("\n"),
            alerts.join("\n")
        );
    }

    alerts.extend(server.alerts());
    server.terminate();
    if backend == Backend::Sqlite {
        // Offline, the embedded log verifies clean and its global positions have no gaps.
        let verified = launch
            .command_in(&launch.data_dir)
            .args(["eventlog", "verify"])
            .output()
            .unwrap();
        assert!(
            verified.status.success()
                && !String::from_utf8_lossy(&verified.stdout).contains("problem:"),
            "eventlog verify: {}{}",
            String::from_utf8_lossy(&verified.stdout),
            String::from_utf8_lossy(&verified.stderr)
        );
        let records = launch.dump_eventlog(&launch.data_dir);
        let positions = records
            .iter()
            .map(|r| r["global_position"].as_u64().unwrap());
        assert!(
            positions.eq(1..=records.len() as u64),
            "global positions have gaps"
        );
        let ids: Vec<Uuid> = records.iter().map(client_event_id).collect();
        if ids != served_ids {
            // A compact account (the full lists run to thousands of ids).
            let served: HashSet<&Uuid> = served_ids.iter().collect();
            let on_disk: HashSet<&Uuid> = ids.iter().collect();
            let first_difference = ids.iter().zip(&served_ids).position(|(a, b)| a != b);
            let extra: Vec<String> = records
                .iter()
                .filter(|r| !served.contains(&client_event_id(r)))
                .take(10)
                .map(Value::to_string)
                .collect();
            let missing: Vec<&Uuid> = served_ids
                .iter()
                .filter(|id| !on_disk.contains(id))
                .take(10)
                .collect();
            panic!(
                "the log on disk is not what the API served ({SEED_ENV}={seed}): {} records on \
                 disk, {} served; first difference at index {first_difference:?}; on disk but \
                 not served (first 10): {extra:#?}; served but not on disk (first 10): \
                 {missing:?}; server warnings:\n{}",
                ids.len(),
                served_ids.len(),
                alerts.join("\n")
            );
        }
    }
    let internal_errors = alerts
        .iter()
        .filter(|l| l.contains("\"error.unhandled\""))
        .count();
    eprintln!(
        "crash test ({backend:?}) passed: {rounds} rounds in {:.1} s, seed {seed}; \
         {} requests; {} write operations: {} acknowledged, {} refused; \
         {} without an answer, retried with the same key/id: {} had committed before the kill, \
         {} refused on retry, the rest applied once on retry; reasons {:?}; {} retries, \
         {} of them waited for the killed request's idempotency claim to expire; \
         {} outbox rows were in the log but unmarked at a kill (republished); \
         {} acknowledged writes replayed; kill delays {:?} ms; \
         {} second kills during recovery after {:?} ms; \
         {} server warn/error lines ({internal_errors} error.unhandled)",
        started.elapsed().as_secs_f64(),
        api.requests.load(Ordering::Relaxed),
        totals.operations,
        totals.acked,
        totals.refused,
        totals.unknown,
        totals.unknown_committed,
        totals.unknown_refused,
        totals.unknown_reasons,
        totals.retries,
        totals.waited_for_claim,
        totals.relayed_but_unmarked,
        totals.replays,
        totals.kill_after_ms,
        totals.recovery_kill_after_ms.len(),
        totals.recovery_kill_after_ms,
        alerts.len(),
    );
    drop(database);
}
