//! The workloads: what each sets up (untimed), what one operation sends, and what it checks
//! at the end.
//!
//! Every mutation carries something that makes it safe to repeat (an `Idempotency-Key`, or a
//! client-chosen event id), so a request whose outcome the client never learned (no answer,
//! or a 5xx) is *resolved* at the end by sending it again: the server either replays what it
//! did or does it now, and the books balance either way. A 5xx still fails the run. The
//! re-send carries the token of the client that sent the original: the server scopes
//! idempotency keys per organization, user and key, so under another user's token the same
//! key would be a new request and could apply a delta twice.
//!
//! Only one refusal is an *expected* outcome (see [`Fixture::outcome`]): a quantity delta
//! refused as `400 insufficient_quantity`. Every other non-2xx answer is a failure.

use crate::api::{Api, Method, Reply};
use crate::cli::Workload;
use crate::stats::{Outcome, Sample, classify};
use crate::verify::{
    AckedEvent, Check, Deltas, EventCheck, ItemExpectation, ItemObservation, StoredEvent,
    Verification, check_gapless, check_no_5xx, check_one_submission_per_invite, compare_item,
    compare_item_ids, same_json,
};
use anyhow::{Context, bail};
use futures_util::StreamExt;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use tokio::time::Instant;

/// Requests in flight while setting up and verifying (untimed phases).
pub const SETUP_CONCURRENCY: usize = 16;
/// Default number of items of the spread workload.
pub const SPREAD_ITEMS_DEFAULT: usize = 10_000;
/// Default number of items the mixed workload reads and changes.
pub const MIXED_ITEMS_DEFAULT: usize = 1_000;
/// Page size of every listing read during verification (the API's maximum).
const PAGE_LIMIT: usize = 200;
/// Events per append while populating events-read.
const POPULATE_BATCH: usize = 100;
/// Invites created per request for the submit workload.
const INVITES_PER_REQUEST: usize = 50;
const PASSWORD: &str = "bench passphrase, not a secret";
/// The type of every event `events-append` sends.
const APPENDED_TYPE: &str = "bench.appended";

/// What a workload needs from the command line.
#[derive(Debug, Clone)]
pub struct Params {
    pub workload: Workload,
    pub clients: usize,
    pub initial_qty: u64,
    pub max_delta: i64,
    pub items: Option<usize>,
    pub batch: usize,
    pub event_bytes: usize,
    pub populate: usize,
    pub streams: usize,
    pub invites: usize,
    pub questions: usize,
    pub token_per_client: bool,
    pub verify_by_id_max: usize,
    pub seed: u64,
}

/// The account a run acts as, and its tokens.
pub struct Session {
    pub api: Api,
    /// Unique per run: names, emails, idempotency keys.
    pub run_id: String,
    pub owner_token: String,
    /// One per client with `--token-per-client`, else empty (everyone uses the owner's).
    pub client_tokens: Vec<String>,
}

impl Session {
    pub fn token(&self, client: usize) -> &str {
        if self.client_tokens.is_empty() {
            &self.owner_token
        } else {
            &self.client_tokens[client % self.client_tokens.len()]
        }
    }

    /// Signs up a fresh account and organization; with `token_per_client`, also one member
    /// account per client, each logged in to the owner's organization.
    pub async fn sign_up(
        api: Api,
        run_id: String,
        clients: usize,
        token_per_client: bool,
    ) -> anyhow::Result<Self> {
        let email = format!("bench-{run_id}@example.com");
        let reply = api
            .post(
                "/api/v1/auth/signup",
                None,
                &json!({"email": email, "password": PASSWORD,
                        "organization_name": format!("bench {run_id}")}),
            )
            .await;
        let body = reply.ok_json("signing up the benchmark account (POST /api/v1/auth/signup)")?;
        let owner_token = str_at(&body, "/token/token")?;
        let org_id = str_at(&body, "/organization/id")?;
        let mut client_tokens = Vec::new();
        if token_per_client {
            let results: Vec<anyhow::Result<String>> = futures_util::stream::iter(0..clients)
                .map(|i| {
                    let (api, owner, org, run) = (&api, &owner_token, &org_id, &run_id);
                    async move { member_token(api, owner, org, run, i).await }
                })
                .buffered(4)
                .collect()
                .await;
            client_tokens = results.into_iter().collect::<anyhow::Result<_>>()?;
        }
        Ok(Self {
            api,
            run_id,
            owner_token,
            client_tokens,
        })
    }
}

async fn member_token(
    api: &Api,
    owner_token: &str,
    org_id: &str,
    run_id: &str,
    client: usize,
) -> anyhow::Result<String> {
    let email = format!("bench-{run_id}-c{client}@example.com");
    api.post(
        "/api/v1/auth/signup",
        None,
        &json!({"email": email, "password": PASSWORD,
                "organization_name": format!("bench {run_id} client {client}")}),
    )
    .await
    .ok_json("signing up a client account")?;
    api.post(
        "/api/v1/members",
        Some(owner_token),
        &json!({"email": email, "role": "member"}),
    )
    .await
    .ok_json("adding a client account as a member (POST /api/v1/members)")?;
    let body = api
        .post(
            "/api/v1/auth/tokens",
            None,
            &json!({"email": email, "password": PASSWORD, "organization_id": org_id}),
        )
        .await
        .ok_json("logging a client in to the benchmark organization")?;
    str_at(&body, "/token")
}

fn str_at(body: &Value, pointer: &str) -> anyhow::Result<String> {
    body.pointer(pointer)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .with_context(|| format!("the answer has no string at {pointer}: {body}"))
}

/// Sends one request and notes it as a sample of `kind`.
async fn timed(
    samples: &mut Vec<Sample>,
    kind: &'static str,
    request: impl std::future::Future<Output = Reply>,
) -> Reply {
    let started = Instant::now();
    let reply = request.await;
    samples.push(Sample {
        kind,
        status: reply.status,
        code: reply.code(),
        elapsed: started.elapsed(),
    });
    reply
}

/// The one refusal a workload provokes on purpose and the server is right to give: a
/// quantity delta that would take the stock below zero (likely with a small
/// `--initial-qty` or a large `--max-delta`). Nothing else has a correct refusal: each
/// invite of `submit` is started and submitted once, events carry fresh ids, reads ask for
/// what exists.
pub fn expected_refusal(sample: &Sample) -> bool {
    sample.kind == "qty_delta"
        && sample.status == 400
        && sample.code.as_deref() == Some("insufficient_quantity")
}

/// Whether the client cannot know if the server applied the request.
fn outcome_unknown(reply: &Reply) -> bool {
    reply.status == crate::api::TRANSPORT_ERROR || reply.status >= 500
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// Whether an operation did something or the workload has nothing left to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpEnd {
    Done,
    /// No work left (every invite used): the client stops.
    Exhausted,
}

pub enum Fixture {
    Inventory(Inventory),
    EventsAppend(EventsAppend),
    EventsRead(EventsRead),
    Submit(Submit),
}

impl Fixture {
    /// Creates what the workload needs; untimed.
    pub async fn setup(session: &Session, params: &Params) -> anyhow::Result<Self> {
        Ok(match params.workload {
            Workload::HotItem | Workload::Spread | Workload::Mixed => {
                Fixture::Inventory(Inventory::setup(session, params).await?)
            }
            Workload::EventsAppend => Fixture::EventsAppend(EventsAppend::new(params)?),
            Workload::EventsRead => Fixture::EventsRead(EventsRead::setup(session, params).await?),
            Workload::Submit => Fixture::Submit(Submit::setup(session, params).await?),
        })
    }

    /// One operation of client `client`; `seq` is unique within the run.
    pub async fn op(
        &self,
        session: &Session,
        client: usize,
        seq: u64,
        rng: &mut fastrand::Rng,
        samples: &mut Vec<Sample>,
    ) -> OpEnd {
        match self {
            Fixture::Inventory(f) => f.op(session, client, seq, rng, samples).await,
            Fixture::EventsAppend(f) => f.op(session, client, seq, samples).await,
            Fixture::EventsRead(f) => f.op(session, client, rng, samples).await,
            Fixture::Submit(f) => f.op(session, samples).await,
        }
    }

    /// How the operation that sent `samples` ended, for the figures.
    pub fn outcome(&self, samples: &[Sample]) -> Outcome {
        match self {
            Fixture::Inventory(_) => classify(samples, expected_refusal),
            _ => classify(samples, |_| false),
        }
    }

    /// The end-of-run checks. `all_status_counts` covers every request of the run.
    pub async fn verify(
        &self,
        session: &Session,
        all_status_counts: &BTreeMap<u16, u64>,
    ) -> Verification {
        let mut checks = vec![check_no_5xx(all_status_counts)];
        let result = match self {
            Fixture::Inventory(f) => f.verify(session).await,
            Fixture::EventsAppend(f) => f.verify(session).await,
            Fixture::EventsRead(f) => Ok(f.verify()),
            Fixture::Submit(f) => f.verify(session).await,
        };
        match result {
            Ok(more) => checks.extend(more),
            Err(e) => checks.push(Check::from_problems(
                "verification could run",
                String::new(),
                vec![format!("{e:#}")],
            )),
        }
        Verification::new(checks)
    }

    /// Facts about the set-up and the run worth printing.
    pub fn notes(&self) -> Vec<String> {
        match self {
            Fixture::Inventory(f) => f.notes(),
            Fixture::EventsAppend(f) => vec![format!(
                "{} events acknowledged (batch {})",
                lock(&f.acked).iter().map(Vec::len).sum::<usize>(),
                f.batch
            )],
            Fixture::EventsRead(f) => vec![format!(
                "{} events in {} streams populated before the run",
                f.events.len(),
                f.streams.len()
            )],
            Fixture::Submit(f) => vec![format!(
                "{} of {} invites used, {} submissions acknowledged",
                f.next.load(Ordering::Relaxed).min(f.invites.len()),
                f.invites.len(),
                lock(&f.acked).len()
            )],
        }
    }
}

// ---- inventory: hot-item, spread, mixed ----

/// A delta whose outcome the client never learned.
#[derive(Debug, Clone)]
struct PendingDelta {
    /// Whose token sent it: the re-send must use the same one.
    client: usize,
    item: usize,
    key: String,
    delta: i64,
}

/// A create (mixed) whose outcome the client never learned.
#[derive(Debug, Clone)]
struct PendingCreate {
    client: usize,
    key: String,
    body: Value,
}

pub struct Inventory {
    workload: Workload,
    item_ids: Vec<String>,
    initial_qty: u64,
    max_delta: i64,
    /// Per item, every delta answered 200 (a multiset: at most 2 × `--max-delta` entries,
    /// however long the run).
    acked: Vec<Mutex<Deltas>>,
    unknown: Mutex<Vec<PendingDelta>>,
    /// Items created during a mixed run: (id, qty).
    created: Mutex<Vec<(String, u64)>>,
    unknown_creates: Mutex<Vec<PendingCreate>>,
}

impl Inventory {
    async fn setup(session: &Session, params: &Params) -> anyhow::Result<Self> {
        let count = match params.workload {
            Workload::HotItem => 1,
            Workload::Spread => params.items.unwrap_or(SPREAD_ITEMS_DEFAULT),
            _ => params.items.unwrap_or(MIXED_ITEMS_DEFAULT),
        }
        .max(1);
        if params.max_delta < 1 {
            bail!("--max-delta must be at least 1");
        }
        let results: Vec<anyhow::Result<String>> = futures_util::stream::iter(0..count)
            .map(|i| async move {
                let body = json!({"name": format!("bench {} item {i}", session.run_id),
                                  "qty": params.initial_qty});
                let reply = session
                    .api
                    .post("/api/v1/items", Some(&session.owner_token), &body)
                    .await;
                str_at(
                    &reply.ok_json("creating an item (POST /api/v1/items)")?,
                    "/id",
                )
            })
            .buffered(SETUP_CONCURRENCY)
            .collect()
            .await;
        let item_ids = results.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Self {
            workload: params.workload,
            acked: (0..count).map(|_| Mutex::new(Deltas::default())).collect(),
            item_ids,
            initial_qty: params.initial_qty,
            max_delta: params.max_delta,
            unknown: Mutex::new(Vec::new()),
            created: Mutex::new(Vec::new()),
            unknown_creates: Mutex::new(Vec::new()),
        })
    }

    fn notes(&self) -> Vec<String> {
        let acked: u64 = self.acked.iter().map(|d| lock(d).count()).sum();
        let mut notes = vec![format!(
            "{} item(s) at initial qty {}; {acked} deltas acknowledged",
            self.item_ids.len(),
            self.initial_qty
        )];
        if self.workload == Workload::Mixed {
            notes.push(format!(
                "{} items created during the run",
                lock(&self.created).len()
            ));
        }
        notes
    }

    async fn op(
        &self,
        session: &Session,
        client: usize,
        seq: u64,
        rng: &mut fastrand::Rng,
        samples: &mut Vec<Sample>,
    ) -> OpEnd {
        let token = session.token(client);
        let key = format!("{}-{client}-{seq}", session.run_id);
        if self.workload == Workload::Mixed {
            // 80 % reads (half single items, half list pages), 10 % creates, 10 % deltas.
            match rng.u32(0..100) {
                0..40 => {
                    let id = &self.item_ids[rng.usize(0..self.item_ids.len())];
                    let path = format!("/api/v1/items/{id}");
                    timed(samples, "get_item", session.api.get(&path, Some(token))).await;
                    return OpEnd::Done;
                }
                40..80 => {
                    let path = "/api/v1/items?limit=20";
                    timed(samples, "list_items", session.api.get(path, Some(token))).await;
                    return OpEnd::Done;
                }
                80..90 => {
                    let qty = rng.u64(0..1000);
                    let body = json!({"name": format!("bench {key}"), "qty": qty});
                    let request = session.api.call(
                        Method::POST,
                        "/api/v1/items",
                        Some(token),
                        Some(&body),
                        Some(&key),
                    );
                    let reply = timed(samples, "create_item", request).await;
                    if reply.is_success() {
                        if let Ok(id) = reply.json().and_then(|b| str_at(&b, "/id")) {
                            lock(&self.created).push((id, qty));
                        }
                    } else if outcome_unknown(&reply) {
                        lock(&self.unknown_creates).push(PendingCreate { client, key, body });
                    }
                    return OpEnd::Done;
                }
                _ => {}
            }
        }
        let item = match self.workload {
            Workload::HotItem => 0,
            _ => rng.usize(0..self.item_ids.len()),
        };
        let magnitude = rng.i64(1..=self.max_delta);
        let delta = if rng.bool() { magnitude } else { -magnitude };
        let reply = self
            .send_delta(session, token, item, &key, delta, samples)
            .await;
        self.account(client, item, &key, delta, &reply);
        OpEnd::Done
    }

    async fn send_delta(
        &self,
        session: &Session,
        token: &str,
        item: usize,
        key: &str,
        delta: i64,
        samples: &mut Vec<Sample>,
    ) -> Reply {
        let path = format!("/api/v1/items/{}/qty", self.item_ids[item]);
        let body = json!({ "delta": delta });
        let request = session
            .api
            .call(Method::PATCH, &path, Some(token), Some(&body), Some(key));
        timed(samples, "qty_delta", request).await
    }

    fn account(&self, client: usize, item: usize, key: &str, delta: i64, reply: &Reply) {
        if reply.status == 200 {
            lock(&self.acked[item]).add(delta);
        } else if outcome_unknown(reply) {
            lock(&self.unknown).push(PendingDelta {
                client,
                item,
                key: key.to_owned(),
                delta,
            });
        }
    }

    async fn verify(&self, session: &Session) -> anyhow::Result<Vec<Check>> {
        let mut checks = Vec::new();
        // 1. Learn the outcome of every request that got no usable answer, by replaying it.
        let pending = std::mem::take(&mut *lock(&self.unknown));
        let pending_creates = std::mem::take(&mut *lock(&self.unknown_creates));
        let mut unresolved = Vec::new();
        for p in &pending {
            let mut scratch = Vec::new();
            let token = session.token(p.client);
            let reply = self
                .send_delta(session, token, p.item, &p.key, p.delta, &mut scratch)
                .await;
            self.account(p.client, p.item, &p.key, p.delta, &reply);
            if outcome_unknown(&reply) {
                unresolved.push(format!("delta with key {}: {}", p.key, reply.describe()));
            }
        }
        for PendingCreate { client, key, body } in &pending_creates {
            let reply = session
                .api
                .call(
                    Method::POST,
                    "/api/v1/items",
                    Some(session.token(*client)),
                    Some(body),
                    Some(key),
                )
                .await;
            if reply.is_success() {
                let id = str_at(&reply.json()?, "/id")?;
                let qty = body["qty"].as_u64().unwrap_or(0);
                lock(&self.created).push((id, qty));
            } else if outcome_unknown(&reply) {
                unresolved.push(format!("create with key {key}: {}", reply.describe()));
            }
        }
        checks.push(Check::from_problems(
            "unknown outcomes resolved",
            format!(
                "{} request(s) without a usable answer replayed with their Idempotency-Key",
                pending.len() + pending_creates.len()
            ),
            unresolved,
        ));

        // 2. Every item: quantity and history against the acknowledgements.
        let mut targets: Vec<(String, ItemExpectation)> = self
            .item_ids
            .iter()
            .zip(&self.acked)
            .map(|(id, acked)| {
                let want = ItemExpectation {
                    initial_qty: self.initial_qty,
                    acked_deltas: lock(acked).clone(),
                };
                (id.clone(), want)
            })
            .collect();
        let created = lock(&self.created).clone();
        let created_count = created.len();
        targets.extend(created.into_iter().map(|(id, qty)| {
            let want = ItemExpectation {
                initial_qty: qty,
                ..ItemExpectation::default()
            };
            (id, want)
        }));
        let acked_total: u64 = targets.iter().map(|(_, w)| w.acked_deltas.count()).sum();
        let results: Vec<anyhow::Result<Vec<String>>> = futures_util::stream::iter(&targets)
            .map(|(id, want)| async move {
                let got = observe_item(session, id).await?;
                Ok(compare_item(&format!("item {id}"), want, &got))
            })
            .buffer_unordered(SETUP_CONCURRENCY)
            .collect()
            .await;
        let mut problems = Vec::new();
        for result in results {
            problems.extend(result?);
        }
        checks.push(Check::from_problems(
            "quantities and history match the acknowledged deltas",
            format!(
                "{} items ({} created during the run), {acked_total} acknowledged deltas",
                targets.len(),
                created_count
            ),
            problems,
        ));

        // 3. The organization's items are exactly those set up and acknowledged as created
        //    (a fresh organization per run: nothing else is in it).
        let listed = list_item_ids(session).await?;
        let expected: HashSet<String> = targets.into_iter().map(|(id, _)| id).collect();
        checks.push(Check::from_problems(
            "the items listed are exactly those acknowledged",
            format!("{} items listed, {} expected", listed.len(), expected.len()),
            compare_item_ids(&expected, &listed),
        ));
        Ok(checks)
    }
}

/// The ids of every item of the organization (all pages of `GET /items`).
async fn list_item_ids(session: &Session) -> anyhow::Result<Vec<String>> {
    let mut ids = Vec::new();
    each_page(session, "/api/v1/items", "listing the items", |item| {
        ids.push(str_at(item, "/id")?);
        Ok(())
    })
    .await?;
    Ok(ids)
}

/// Hands every row of every page of the listing at `path` (`limit`, `cursor`,
/// `next_cursor`) to `each`, read with the owner's token.
async fn each_page(
    session: &Session,
    path: &str,
    what: &str,
    mut each: impl FnMut(&Value) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let token = Some(session.owner_token.as_str());
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("{path}?limit={PAGE_LIMIT}");
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={}", encode_query(c)));
        }
        let page = session.api.get(&url, token).await.ok_json(what)?;
        for row in page["data"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
            each(row)?;
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return Ok(()),
        }
    }
}

/// `GET /items/{id}` and every page of its history.
async fn observe_item(session: &Session, id: &str) -> anyhow::Result<ItemObservation> {
    let token = Some(session.owner_token.as_str());
    let item = session
        .api
        .get(&format!("/api/v1/items/{id}"), token)
        .await
        .ok_json("reading an item back")?;
    let qty = item["qty"]
        .as_u64()
        .with_context(|| format!("item without a qty: {item}"))?;
    let mut observation = ItemObservation {
        qty,
        ..ItemObservation::default()
    };
    each_page(
        session,
        &format!("/api/v1/items/{id}/history"),
        "reading an item's history",
        |record| {
            if record["kind"] == "qty_changed" {
                let delta = record["delta"]
                    .as_i64()
                    .with_context(|| format!("a qty_changed record without a delta: {record}"))?;
                observation.qty_changed_deltas.add(delta);
            }
            Ok(())
        },
    )
    .await?;
    Ok(observation)
}

/// Percent-encodes a cursor for a query string (cursors are opaque).
fn encode_query(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

// ---- events-append ----

pub struct EventsAppend {
    batch: usize,
    payload: String,
    /// Every acknowledged event, compactly (its data is rebuilt from client, seq and index
    /// for the checks): in chunks, so that keeping hundreds of thousands never copies them all
    /// over again as one vector grows (that, and a copy of each event's JSON, took ~15 % of the
    /// tool's CPU and 780 MB at 64 clients).
    acked: Mutex<Vec<Vec<AckedAppend>>>,
    /// Appends without a usable answer: (path, body, client, seq).
    unknown: Mutex<Vec<(String, Value, usize, u64)>>,
    verify_by_id_max: usize,
    seed: u64,
}

/// An acknowledged event of `events-append`: what the tool sent is `EventsAppend::data`.
#[derive(Clone)]
struct AckedAppend {
    id: uuid::Uuid,
    position: u64,
    client: u32,
    seq: u64,
    index: u32,
}

/// Acknowledged events per chunk of [`EventsAppend::acked`].
const ACKED_CHUNK: usize = 64 * 1024;

fn random_text(rng: &mut fastrand::Rng, bytes: usize) -> String {
    (0..bytes).map(|_| rng.alphanumeric()).collect()
}

impl EventsAppend {
    fn new(params: &Params) -> anyhow::Result<Self> {
        if !(1..=1000).contains(&params.batch) {
            bail!("--batch must be between 1 and 1000 (the API's limit per append)");
        }
        let mut rng = fastrand::Rng::with_seed(params.seed);
        Ok(Self {
            batch: params.batch,
            payload: random_text(&mut rng, params.event_bytes),
            acked: Mutex::new(Vec::new()),
            unknown: Mutex::new(Vec::new()),
            verify_by_id_max: params.verify_by_id_max,
            seed: params.seed,
        })
    }

    fn stream(client: usize) -> String {
        format!("bench-{client}")
    }

    /// The data of event `i` of request `seq` of `client`.
    fn data(&self, client: usize, seq: u64, i: usize) -> Value {
        json!({"client": client, "seq": seq, "i": i, "payload": self.payload})
    }

    fn request(&self, client: usize, seq: u64) -> (String, Value) {
        let stream = Self::stream(client);
        let event = |i: usize| {
            json!({
                "id": uuid::Uuid::now_v7().to_string(),
                "type": APPENDED_TYPE,
                "data": self.data(client, seq, i),
            })
        };
        if self.batch == 1 {
            let mut body = event(0);
            body["stream"] = json!(stream);
            ("/api/v1/events".to_owned(), body)
        } else {
            let events: Vec<Value> = (0..self.batch).map(event).collect();
            (
                format!("/api/v1/streams/{stream}/events"),
                json!({ "events": events }),
            )
        }
    }

    /// Notes the acknowledged events of a 2xx answer to request `seq` of `client`.
    fn account(&self, body: &Value, reply: &Reply, client: usize, seq: u64) -> anyhow::Result<()> {
        let answer = reply.json()?;
        let sent: Vec<&Value> = match body.get("events") {
            Some(events) => events
                .as_array()
                .map(|a| a.iter().collect())
                .unwrap_or_default(),
            None => vec![body],
        };
        let acks: Vec<&Value> = match answer.get("events") {
            Some(events) => events
                .as_array()
                .map(|a| a.iter().collect())
                .unwrap_or_default(),
            None => vec![&answer],
        };
        if sent.len() != acks.len() {
            bail!("{} events sent but {} acknowledged", sent.len(), acks.len());
        }
        let stream = Self::stream(client);
        let mut noted = Vec::with_capacity(acks.len());
        for (index, (event, ack)) in sent.iter().zip(acks).enumerate() {
            if ack["id"] != event["id"] {
                bail!("acknowledged id {} for sent id {}", ack["id"], event["id"]);
            }
            if ack["stream"].as_str() != Some(stream.as_str()) {
                bail!(
                    "acknowledged in stream {} instead of {stream}",
                    ack["stream"]
                );
            }
            noted.push(AckedAppend {
                id: str_at(ack, "/id")?
                    .parse()
                    .context("ack id is not a UUID")?,
                position: ack["position"].as_u64().context("ack without position")?,
                client: client as u32,
                seq,
                index: index as u32,
            });
        }
        let mut acked = lock(&self.acked);
        for a in noted {
            match acked.last_mut() {
                Some(chunk) if chunk.len() < ACKED_CHUNK => chunk.push(a),
                _ => {
                    let mut chunk = Vec::with_capacity(ACKED_CHUNK);
                    chunk.push(a);
                    acked.push(chunk);
                }
            }
        }
        Ok(())
    }

    /// An acknowledged event as the checks compare it (its data rebuilt from client, seq and
    /// index; only after the measured window).
    fn acked_event(&self, a: &AckedAppend) -> AckedEvent {
        AckedEvent {
            id: a.id.to_string(),
            position: a.position,
            stream: Self::stream(a.client as usize),
            event_type: APPENDED_TYPE.to_owned(),
            data: self.data(a.client as usize, a.seq, a.index as usize),
        }
    }

    async fn op(
        &self,
        session: &Session,
        client: usize,
        seq: u64,
        samples: &mut Vec<Sample>,
    ) -> OpEnd {
        let (path, body) = self.request(client, seq);
        let kind = if self.batch == 1 {
            "append_event"
        } else {
            "append_batch"
        };
        // Client-chosen event ids make a re-send harmless (same ids and content → 200 with
        // the original positions), so the client may retry it on a stale connection.
        let request = session
            .api
            .post_repeatable(&path, Some(session.token(client)), &body);
        let reply = timed(samples, kind, request).await;
        if reply.is_success() {
            if self.account(&body, &reply, client, seq).is_err() {
                // A 2xx the tool cannot read is as bad as no answer: resolve it at the end.
                lock(&self.unknown).push((path, body, client, seq));
            }
        } else if outcome_unknown(&reply) {
            lock(&self.unknown).push((path, body, client, seq));
        }
        OpEnd::Done
    }

    async fn verify(&self, session: &Session) -> anyhow::Result<Vec<Check>> {
        let token = Some(session.owner_token.as_str());
        let mut checks = Vec::new();
        let pending = std::mem::take(&mut *lock(&self.unknown));
        let mut unresolved = Vec::new();
        let mut unsettled_ids = Vec::new();
        for (path, body, client, seq) in &pending {
            let client_token = Some(session.token(*client));
            let reply = session.api.post_repeatable(path, client_token, body).await;
            if !reply.is_success() || self.account(body, &reply, *client, *seq).is_err() {
                unresolved.push(format!("append to {path}: {}", reply.describe()));
                unsettled_ids.extend(sent_ids(body));
            }
        }
        checks.push(Check::from_problems(
            "unknown outcomes resolved",
            format!(
                "{} append(s) without a usable answer re-sent with their event ids",
                pending.len()
            ),
            unresolved,
        ));

        // The whole log of the organization, by position, checked page by page against the
        // acknowledgements (compact; each rebuilt only when its id is listed).
        let acked: Vec<AckedAppend> = lock(&self.acked).iter().flatten().cloned().collect();
        let mut check =
            EventCheck::new(acked.iter().map(|a| a.id.to_string())).unsettled(unsettled_ids);
        let mut positions = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                None => format!("/api/v1/events?after=0&limit={PAGE_LIMIT}"),
                Some(c) => format!(
                    "/api/v1/events?cursor={}&limit={PAGE_LIMIT}",
                    encode_query(c)
                ),
            };
            let mut page = session
                .api
                .get(&path, token)
                .await
                .ok_json("listing the event log")?;
            for event in page["data"]
                .as_array_mut()
                .map(Vec::as_mut_slice)
                .unwrap_or_default()
            {
                let position = event["position"]
                    .as_u64()
                    .context("event without position")?;
                positions.push(position);
                let stored = StoredEvent {
                    position,
                    stream: str_at(event, "/stream")?,
                    event_type: str_at(event, "/type")?,
                    data: event["data"].take(),
                    from_outbox: event["metadata"]["source"] == "outbox",
                };
                check.listed(&str_at(event, "/id")?, &stored, |i| {
                    self.acked_event(&acked[i])
                });
            }
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => break,
            }
        }
        checks.push(Check::from_problems(
            "positions have no gaps",
            format!("{} positions listed from 1", positions.len()),
            check_gapless(&positions).err().into_iter().collect(),
        ));
        let outbox_events = check.outbox_events();
        checks.push(Check::from_problems(
            "the log holds the acknowledged events as acknowledged, and no other append",
            format!(
                "{} acknowledged events; {outbox_events} events of the server's outbox not \
                 compared",
                acked.len()
            ),
            check.finish(),
        ));

        // By id: all of them, or a random sample when there are very many.
        let mut sample: Vec<&AckedAppend> = acked.iter().collect();
        if sample.len() > self.verify_by_id_max {
            fastrand::Rng::with_seed(self.seed).shuffle(&mut sample);
            sample.truncate(self.verify_by_id_max);
        }
        let results: Vec<Option<String>> = futures_util::stream::iter(&sample)
            .map(|a| async move {
                let event = self.acked_event(a);
                let reply = session
                    .api
                    .get(&format!("/api/v1/events/{}", event.id), token)
                    .await;
                let body = match reply.ok_json("reading an event by id") {
                    Ok(body) => body,
                    Err(e) => return Some(format!("event {}: {e:#}", event.id)),
                };
                let same = body["position"].as_u64() == Some(event.position)
                    && body["stream"].as_str() == Some(event.stream.as_str())
                    && body["type"].as_str() == Some(event.event_type.as_str())
                    && same_json(&body["data"], &event.data);
                (!same)
                    .then(|| format!("event {}: read by id differs from what was sent", event.id))
            })
            .buffer_unordered(SETUP_CONCURRENCY)
            .collect()
            .await;
        checks.push(Check::from_problems(
            "acknowledged events are readable by id with identical data",
            format!(
                "{} of {} acknowledged events read by id",
                sample.len(),
                acked.len()
            ),
            results.into_iter().flatten().collect(),
        ));
        Ok(checks)
    }
}

/// The event ids of an append's body (one event, or `events`).
fn sent_ids(body: &Value) -> Vec<String> {
    let events = match body.get("events").and_then(Value::as_array) {
        Some(events) => events.iter().collect(),
        None => vec![body],
    };
    events
        .into_iter()
        .filter_map(|e| e["id"].as_str().map(str::to_owned))
        .collect()
}

// ---- events-read ----

pub struct EventsRead {
    /// (id, data) of every populated event.
    events: Vec<(String, Value)>,
    streams: Vec<String>,
    problems: Mutex<Vec<String>>,
    problem_count: AtomicU64,
    reads: AtomicU64,
}

impl EventsRead {
    async fn setup(session: &Session, params: &Params) -> anyhow::Result<Self> {
        let streams: Vec<String> = (0..params.streams.max(1))
            .map(|s| format!("read-{s}"))
            .collect();
        let mut rng = fastrand::Rng::with_seed(params.seed);
        let payload = random_text(&mut rng, params.event_bytes);
        let batches = params.populate.max(1).div_ceil(POPULATE_BATCH);
        let results: Vec<anyhow::Result<Vec<(String, Value)>>> =
            futures_util::stream::iter(0..batches)
                .map(|b| {
                    let stream = &streams[b % streams.len()];
                    let payload = &payload;
                    async move {
                        let events: Vec<Value> = (0..POPULATE_BATCH)
                            .map(|i| {
                                json!({"type": "bench.populated",
                                       "data": {"batch": b, "i": i, "payload": payload}})
                            })
                            .collect();
                        let reply = session
                            .api
                            .post(
                                &format!("/api/v1/streams/{stream}/events"),
                                Some(&session.owner_token),
                                &json!({ "events": events }),
                            )
                            .await;
                        let answer = reply.ok_json("populating the event log")?;
                        let acks = answer["events"]
                            .as_array()
                            .context("no events in the answer")?;
                        acks.iter()
                            .zip(&events)
                            .map(|(ack, sent)| Ok((str_at(ack, "/id")?, sent["data"].clone())))
                            .collect()
                    }
                })
                .buffered(4)
                .collect()
                .await;
        let mut events = Vec::new();
        for batch in results {
            events.extend(batch?);
        }
        Ok(Self {
            events,
            streams,
            problems: Mutex::new(Vec::new()),
            problem_count: AtomicU64::new(0),
            reads: AtomicU64::new(0),
        })
    }

    fn problem(&self, text: String) {
        self.problem_count.fetch_add(1, Ordering::Relaxed);
        let mut problems = lock(&self.problems);
        if problems.len() < 10 {
            problems.push(text);
        }
    }

    async fn op(
        &self,
        session: &Session,
        client: usize,
        rng: &mut fastrand::Rng,
        samples: &mut Vec<Sample>,
    ) -> OpEnd {
        let token = Some(session.token(client));
        self.reads.fetch_add(1, Ordering::Relaxed);
        if rng.bool() {
            let (id, data) = &self.events[rng.usize(0..self.events.len())];
            let path = format!("/api/v1/events/{id}");
            let request = session.api.get(&path, token);
            let reply = timed(samples, "get_event", request).await;
            match reply.ok_json("GET /events/{id}") {
                Ok(body) if same_json(&body["data"], data) => {}
                Ok(_) => self.problem(format!("event {id}: data read differs from data written")),
                Err(e) => self.problem(format!("event {id}: {e:#}")),
            }
        } else {
            let stream = &self.streams[rng.usize(0..self.streams.len())];
            let path = format!("/api/v1/streams/{stream}?limit=50");
            let request = session.api.get(&path, token);
            let reply = timed(samples, "read_stream", request).await;
            match reply.ok_json("GET /streams/{s}") {
                Ok(body) => {
                    let events = body["data"].as_array().map(Vec::as_slice).unwrap_or(&[]);
                    if events.is_empty() || events.iter().any(|e| e["stream"] != stream.as_str()) {
                        self.problem(format!("stream {stream}: empty or foreign events"));
                    }
                }
                Err(e) => self.problem(format!("stream {stream}: {e:#}")),
            }
        }
        OpEnd::Done
    }

    fn verify(&self) -> Vec<Check> {
        // Only the first few problems are kept (reads are many); the count is exact.
        let total = self.problem_count.load(Ordering::Relaxed);
        let reads = self.reads.load(Ordering::Relaxed);
        vec![Check {
            name: "every read answered 200 with the data written".into(),
            passed: total == 0,
            detail: if total == 0 {
                format!("{reads} reads")
            } else {
                format!("{total} problem(s); {reads} reads")
            },
            problems: lock(&self.problems).clone(),
        }]
    }
}

// ---- submit ----

pub struct Submit {
    question_ids: Vec<String>,
    /// Invite tokens, handed out in order.
    invites: Vec<String>,
    next: AtomicUsize,
    acked: Mutex<Vec<usize>>,
    unknown: Mutex<Vec<usize>>,
}

/// The assessments API is newer than this tool's first version: say so plainly on a 404.
fn assessments_route(reply: &Reply, what: &str) -> anyhow::Result<Value> {
    if reply.status == 404 || reply.status == 405 {
        bail!(
            "the server does not have the assessments API: {what} answered {} ({}). The submit \
             workload needs POST /api/v1/assessments, …/questions, …/publish, …/invites and \
             /api/v1/public/invites/{{token}}[/start|/submit] (see docs/benchmarks.md)",
            reply.status,
            reply.code().unwrap_or_default()
        );
    }
    reply.ok_json(what)
}

impl Submit {
    async fn setup(session: &Session, params: &Params) -> anyhow::Result<Self> {
        let api = &session.api;
        let token = Some(session.owner_token.as_str());
        let draft = api
            .post(
                "/api/v1/assessments",
                token,
                &json!({"title": format!("bench {}", session.run_id),
                        "time_limit_minutes": 60, "passing_score_percent": 50}),
            )
            .await;
        let id = str_at(
            &assessments_route(&draft, "POST /api/v1/assessments")?,
            "/id",
        )?;
        for q in 0..params.questions.max(1) {
            let reply = api
                .post(
                    &format!("/api/v1/assessments/{id}/questions"),
                    token,
                    &json!({"type": "single_choice", "prompt": format!("Question {q}?"),
                            "options": ["right", "wrong", "also wrong"], "correct": 0}),
                )
                .await;
            assessments_route(&reply, "POST /api/v1/assessments/{id}/questions")?;
        }
        let reply = api
            .post(
                &format!("/api/v1/assessments/{id}/publish"),
                token,
                &json!({}),
            )
            .await;
        assessments_route(&reply, "POST /api/v1/assessments/{id}/publish")?;
        let mut invites = Vec::with_capacity(params.invites);
        let mut n = 0;
        while n < params.invites.max(1) {
            let count = INVITES_PER_REQUEST.min(params.invites.max(1) - n);
            let candidates: Vec<Value> = (n..n + count)
                .map(|i| json!({"email": format!("candidate-{}-{i}@example.com", session.run_id)}))
                .collect();
            let reply = api
                .post(
                    &format!("/api/v1/assessments/{id}/invites"),
                    token,
                    &json!({ "candidates": candidates }),
                )
                .await;
            let body = assessments_route(&reply, "POST /api/v1/assessments/{id}/invites")?;
            for invite in body["invites"]
                .as_array()
                .context("no invites in the answer")?
            {
                invites.push(str_at(invite, "/token")?);
            }
            n += count;
        }
        // The question ids from the employer's view: a candidate's view lists the
        // questions only once the attempt started (before, the submits answered nothing).
        invites.first().context("no invite was created")?;
        let reply = api.get(&format!("/api/v1/assessments/{id}"), token).await;
        let body = assessments_route(&reply, "GET /api/v1/assessments/{id}")?;
        let question_ids = body["questions"]
            .as_array()
            .filter(|questions| !questions.is_empty())
            .context("the assessment shows no questions")?
            .iter()
            .map(|q| str_at(q, "/id"))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Self {
            question_ids,
            invites,
            next: AtomicUsize::new(0),
            acked: Mutex::new(Vec::new()),
            unknown: Mutex::new(Vec::new()),
        })
    }

    /// Every question answered with option `choice` (the submit sends 0).
    fn answers_choosing(&self, choice: usize) -> Value {
        let answers: serde_json::Map<String, Value> = self
            .question_ids
            .iter()
            .map(|q| (q.clone(), json!(choice)))
            .collect();
        json!({ "answers": answers })
    }

    fn answers(&self) -> Value {
        self.answers_choosing(0)
    }

    async fn op(&self, session: &Session, samples: &mut Vec<Sample>) -> OpEnd {
        let index = self.next.fetch_add(1, Ordering::Relaxed);
        let Some(token) = self.invites.get(index) else {
            return OpEnd::Exhausted;
        };
        let api = &session.api;
        let base = format!("/api/v1/public/invites/{token}");
        timed(samples, "invite_get", api.get(&base, None)).await;
        let (start_path, empty) = (format!("{base}/start"), json!({}));
        let start = timed(samples, "invite_start", api.post(&start_path, None, &empty)).await;
        if !start.is_success() {
            return OpEnd::Done;
        }
        let body = self.answers();
        let submit_path = format!("{base}/submit");
        let submit = timed(
            samples,
            "invite_submit",
            api.post(&submit_path, None, &body),
        )
        .await;
        if submit.is_success() {
            lock(&self.acked).push(index);
        } else if outcome_unknown(&submit) {
            lock(&self.unknown).push(index);
        }
        OpEnd::Done
    }

    async fn verify(&self, session: &Session) -> anyhow::Result<Vec<Check>> {
        let body = self.answers();
        // A second submission with other answers (the same ones are answered as a retry of
        // the first, with its 201).
        let other = self.answers_choosing(1);
        let acked = lock(&self.acked).clone();
        let resubmits: Vec<(String, u16, Option<String>)> = futures_util::stream::iter(&acked)
            .map(|&i| {
                let body = &other;
                async move {
                    let path = format!("/api/v1/public/invites/{}/submit", self.invites[i]);
                    let reply = session.api.post(&path, None, body).await;
                    (format!("#{i}"), reply.status, reply.code())
                }
            })
            .buffer_unordered(SETUP_CONCURRENCY)
            .collect()
            .await;
        let mut checks = vec![check_one_submission_per_invite(&resubmits)];
        let unknown = lock(&self.unknown).clone();
        let mut unresolved = Vec::new();
        for i in &unknown {
            let path = format!("/api/v1/public/invites/{}/submit", self.invites[*i]);
            let reply = session.api.post(&path, None, &body).await;
            let settled = reply.is_success()
                || (reply.status == 409 && reply.code().as_deref() == Some("already_submitted"));
            if !settled {
                unresolved.push(format!("invite #{i}: {}", reply.describe()));
            }
        }
        checks.push(Check::from_problems(
            "unknown outcomes resolved",
            format!(
                "{} submission(s) without a usable answer re-sent",
                unknown.len()
            ),
            unresolved,
        ));
        Ok(checks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_are_percent_encoded_for_the_query_string() {
        assert_eq!(encode_query("abc-_.~9"), "abc-_.~9");
        assert_eq!(encode_query("a+b/c="), "a%2Bb%2Fc%3D");
    }

    #[test]
    fn the_outcome_is_unknown_only_without_an_answer_or_after_a_5xx() {
        let reply = |status| Reply {
            status,
            body: Vec::new(),
            error: None,
        };
        assert!(outcome_unknown(&reply(0)));
        assert!(outcome_unknown(&reply(503)));
        assert!(!outcome_unknown(&reply(400)));
        assert!(!outcome_unknown(&reply(200)));
    }

    #[test]
    fn only_insufficient_quantity_on_a_delta_is_an_expected_refusal() {
        let sample = |kind, status, code: &str| Sample {
            kind,
            status,
            code: Some(code.to_owned()),
            elapsed: std::time::Duration::ZERO,
        };
        assert!(expected_refusal(&sample(
            "qty_delta",
            400,
            "insufficient_quantity"
        )));
        assert!(!expected_refusal(&sample("qty_delta", 429, "rate_limited")));
        assert!(!expected_refusal(&sample(
            "qty_delta",
            400,
            "validation_failed"
        )));
        assert!(!expected_refusal(&sample(
            "create_item",
            400,
            "insufficient_quantity"
        )));
        assert!(!expected_refusal(&sample(
            "invite_submit",
            409,
            "already_submitted"
        )));
    }

    #[test]
    fn the_ids_of_a_single_or_batched_append_are_found() {
        let single = json!({"id": "a", "type": "t", "data": {}, "stream": "s"});
        assert_eq!(sent_ids(&single), vec!["a".to_owned()]);
        let batch = json!({"events": [{"id": "a"}, {"id": "b"}]});
        assert_eq!(sent_ids(&batch), vec!["a".to_owned(), "b".to_owned()]);
    }

    #[test]
    fn a_404_on_the_assessments_routes_is_explained() {
        let reply = Reply {
            status: 404,
            body: br#"{"code":"not_found"}"#.to_vec(),
            error: None,
        };
        let e = assessments_route(&reply, "POST /api/v1/assessments").unwrap_err();
        let text = format!("{e:#}");
        assert!(text.contains("does not have the assessments API"), "{text}");
        assert!(text.contains("404 (not_found)"), "{text}");
    }
}
