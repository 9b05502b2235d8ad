//! Hostile input over HTTP. The connection layer: deeply nested and oversized JSON, huge
//! request heads, slow-header (slowloris) and idle connections beyond the connection cap.
//! And a mutation fuzzer: every documented mutation endpoint gets broken versions of a valid
//! request (its JSON body mutated as a tree and as bytes, hostile `Idempotency-Key`,
//! `If-Match`, `Authorization` and `Content-Type` headers). Every answer must be a documented
//! status below 500, every refusal a problem+json body, and a refusal must change nothing.
//!
//! `TRUELINE_FUZZ_CASES` (default 8 per endpoint) and `TRUELINE_FUZZ_SEED` set the size and
//! the seed of the fuzz run; a failure prints the seed, the case and the request.

use crate::authz::{Body, World, documented_operations};
use crate::both_backends;
use crate::helpers::*;
use reqwest::Method;
use reqwest::header::HeaderValue;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

both_backends!(
    mutated_requests_to_every_mutation_endpoint_get_documented_answers_and_refusals_change_nothing,
);

fn nested(depth: usize) -> Value {
    let mut value = json!(1);
    for _ in 0..depth {
        value = json!([value]);
    }
    value
}

/// A value chosen to break validators: wrong types, extreme numbers, control characters,
/// huge strings and collections, deep nesting.
fn hostile_value(rng: &mut Rng) -> Value {
    match rng.index(20) {
        0 => Value::Null,
        1 => json!(true),
        2 => json!(-1),
        3 => json!(0),
        4 => json!(9_007_199_254_740_993_u64),
        5 => json!(u64::MAX),
        6 => json!(i64::MIN),
        7 => json!(1e308),
        8 => json!(0.5),
        9 => json!(""),
        10 => json!(" \t "),
        11 => json!("\u{0}\u{7}\u{1b}[31m\u{202e}ctrl"),
        12 => json!("x".repeat(70_000)),
        13 => json!("🦀".repeat(300)),
        14 => nested(100),
        15 => json!((0..5_000).collect::<Vec<_>>()),
        16 => Value::Object(
            (0..300)
                .map(|i| (format!("k{i}"), json!(i)))
                .collect::<Map<_, _>>(),
        ),
        17 => json!("00000000-0000-0000-0000-000000000000"),
        18 => json!("2026-13-45T99:99:99Z"),
        _ => json!({"$ref": "#/", "__proto__": {"admin": true}}),
    }
}

/// A node of `value`, reached by a random walk that stops at each level with probability ⅓.
fn pick_node<'a>(value: &'a mut Value, rng: &mut Rng) -> &'a mut Value {
    let len = match &*value {
        Value::Object(map) => map.len(),
        Value::Array(items) => items.len(),
        _ => 0,
    };
    if len == 0 || rng.index(3) == 0 {
        return value;
    }
    let i = rng.index(len);
    match value {
        Value::Object(map) => pick_node(map.values_mut().nth(i).expect("in range"), rng),
        Value::Array(items) => pick_node(&mut items[i], rng),
        _ => unreachable!("only containers have children"),
    }
}

/// One to three tree mutations of a JSON body.
fn mutate_tree(mut value: Value, rng: &mut Rng) -> (Value, String) {
    let mut done = Vec::new();
    for _ in 0..=rng.index(3) {
        let node = pick_node(&mut value, rng);
        match rng.index(6) {
            0 | 1 => {
                *node = hostile_value(rng);
                done.push("replaced a value");
            }
            2 => match node {
                Value::Object(map) if !map.is_empty() => {
                    let key = map.keys().nth(rng.index(map.len())).cloned();
                    if let Some(key) = key {
                        map.remove(&key);
                    }
                    done.push("removed a field");
                }
                _ => {
                    *node = Value::Null;
                    done.push("nulled a value");
                }
            },
            3 => match node {
                Value::Object(map) => {
                    map.insert("unexpected_field".into(), hostile_value(rng));
                    done.push("added an unknown field");
                }
                other => {
                    *other = json!([other.take()]);
                    done.push("wrapped a value in an array");
                }
            },
            4 => {
                *node = match node.take() {
                    Value::String(s) => s.parse::<f64>().map_or(json!(s.len()), |n| json!(n)),
                    Value::Number(n) => json!(n.to_string()),
                    Value::Bool(b) => json!(b.to_string()),
                    Value::Array(items) => json!({"0": items}),
                    Value::Object(map) => Value::Array(map.into_values().collect()),
                    Value::Null => json!("null"),
                };
                done.push("changed a value's type");
            }
            _ => {
                value = hostile_value(rng);
                done.push("replaced the whole body");
                break;
            }
        }
    }
    (value, done.join(", "))
}

/// A byte-level mutation of a serialized body.
fn mutate_bytes(text: &str, rng: &mut Rng) -> (Vec<u8>, &'static str) {
    let mut bytes = text.as_bytes().to_vec();
    let at = rng.index(bytes.len() + 1);
    let what = match rng.index(8) {
        0 => {
            bytes.truncate(at);
            "truncated"
        }
        1 => {
            bytes.insert(at, rng.next() as u8);
            "inserted a random byte"
        }
        2 => {
            bytes.extend_from_slice(b"}},]");
            "trailing garbage"
        }
        3 => {
            // Every field twice: `{"a":1,"a":1}`.
            if let Some(inner) = text.strip_prefix('{').and_then(|t| t.strip_suffix('}')) {
                bytes = format!("{{{inner},{inner}}}").into_bytes();
            }
            "duplicated fields"
        }
        4 => {
            let number = *rng.pick(&["1e400", "-0", "NaN", "Infinity", "0x10", "01", "1.", "-"]);
            let start = bytes.iter().position(u8::is_ascii_digit);
            if let Some(start) = start {
                let end = bytes[start..]
                    .iter()
                    .position(|b| !b.is_ascii_digit())
                    .map_or(bytes.len(), |n| start + n);
                bytes.splice(start..end, number.bytes());
            }
            "a non-JSON or overflowing number"
        }
        5 => {
            bytes.splice(0..0, "\u{feff}".bytes());
            "a byte-order mark"
        }
        6 => {
            let quote = bytes.iter().position(|b| *b == b'"').map_or(0, |q| q + 1);
            bytes.splice(quote..quote, [0xff, 0xfe, 0xc0, 0x80]);
            "invalid UTF-8 in a string"
        }
        _ => {
            bytes = vec![b'['; 10_000];
            "10 000 open brackets"
        }
    };
    (bytes, what)
}

fn hostile_header(rng: &mut Rng, valid: &[String]) -> HeaderValue {
    let mut options: Vec<Vec<u8>> = [
        "",
        " ",
        "*",
        "\"",
        ",,,",
        "W/",
        "\"v18446744073709551616\"",
        "\"v-1\"",
        "\"r0\", \"r1\", W/\"v1\"",
        "Bearer",
        "Bearer ",
        "Basic dXNlcjpwYXNz",
        "tl_",
        "a\tb",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    options.push("k".repeat(256).into_bytes());
    options.push("x".repeat(10_000).into_bytes());
    options.push(vec![0x80, 0xff, b'k', 0xfe]);
    options.push("ключ".as_bytes().to_vec());
    for v in valid {
        options.push(format!("{v}x").into_bytes());
        options.push(format!("{v} {v}").into_bytes());
        let mut changed = v.clone().into_bytes();
        if let Some(last) = changed.last_mut() {
            *last = if *last == b'A' { b'B' } else { b'A' };
        }
        options.push(changed);
    }
    let raw = rng.pick(&options).clone();
    HeaderValue::from_bytes(&raw).unwrap_or_else(|_| HeaderValue::from_static("?"))
}

async fn mutated_requests_to_every_mutation_endpoint_get_documented_answers_and_refusals_change_nothing(
    backend: Backend,
) {
    let cases: usize = std::env::var("TRUELINE_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let seed: u64 = std::env::var("TRUELINE_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(120_459_678);
    let mut rng = Rng(seed);
    let w = World::new(backend).await;
    let operations: Vec<_> = documented_operations(&w.app)
        .await
        .into_iter()
        .filter(|(method, ..)| matches!(method.as_str(), "POST" | "PUT" | "PATCH"))
        .collect();
    assert!(operations.len() >= 20, "the mutation endpoints were found");
    let mut by_status: BTreeMap<u16, usize> = BTreeMap::new();
    for (method, template, _, documented) in &operations {
        for case in 0..cases {
            let req = w.prepare(method, template).await;
            let state_before = w.state_of_a(&req.reads).await;
            let counts_before = w.counts().await;
            let token = w.owner.token.clone();
            let mut builder = w.app.request(
                Method::from_bytes(method.as_bytes()).unwrap(),
                &req.path,
                None,
            );
            let mut what = Vec::new();
            let mut authorization = HeaderValue::from_str(&format!("Bearer {token}")).unwrap();
            let mut content_type = None;
            let body: Vec<u8> = match (&req.body, rng.index(10)) {
                (Body::Json(value), 0..=5) => {
                    let (value, done) = mutate_tree(value.clone(), &mut rng);
                    what.push(format!("body: {done}"));
                    serde_json::to_vec(&value).unwrap()
                }
                (Body::Json(value), 6..=7) => {
                    let (bytes, done) = mutate_bytes(&value.to_string(), &mut rng);
                    what.push(format!("body bytes: {done}"));
                    bytes
                }
                (Body::Csv(csv), 0..=7) => {
                    let (bytes, done) = mutate_bytes(csv, &mut rng);
                    what.push(format!("CSV bytes: {done}"));
                    content_type = Some(HeaderValue::from_static("text/csv"));
                    bytes
                }
                (Body::Json(value), _) => serde_json::to_vec(value).unwrap(),
                (Body::Csv(csv), _) => csv.as_bytes().to_vec(),
                (Body::None, _) => Vec::new(),
            };
            if matches!(req.body, Body::Json(_)) {
                content_type = Some(HeaderValue::from_static("application/json"));
            }
            if req.if_match {
                let value = if rng.index(2) == 0 {
                    what.push("hostile If-Match".into());
                    hostile_header(&mut rng, &["\"v1\"".into(), "\"r1\"".into()])
                } else {
                    HeaderValue::from_static("*")
                };
                builder = builder.header("if-match", value);
            }
            if rng.index(4) == 0 {
                what.push("hostile Idempotency-Key".into());
                builder = builder.header("idempotency-key", hostile_header(&mut rng, &[]));
            } else if rng.index(3) == 0 {
                builder = builder.header("idempotency-key", format!("fuzz-{seed}-{case}"));
            }
            if rng.index(8) == 0 {
                what.push("hostile Authorization".into());
                authorization = hostile_header(&mut rng, &[format!("Bearer {token}")]);
            }
            if content_type.is_some() && rng.index(12) == 0 {
                what.push("hostile Content-Type".into());
                let hostile: [&'static str; 4] = [
                    "text/plain",
                    "application/json; charset=latin1",
                    "application/x-www-form-urlencoded",
                    "application/jsonx",
                ];
                let chosen = *rng.pick(&hostile);
                content_type = Some(HeaderValue::from_static(chosen));
            }
            builder = builder.header("authorization", authorization);
            if let Some(content_type) = content_type {
                builder = builder.header("content-type", content_type);
            }
            let context = format!(
                "{method} {template} case {case} (seed {seed}): {}; body {}",
                what.join("; "),
                String::from_utf8_lossy(&body[..body.len().min(300)])
            );
            let response = builder.body(body).send().await.unwrap();
            let status = response.status().as_u16();
            *by_status.entry(status).or_default() += 1;
            let headers = response.headers().clone();
            let text = response.text().await.unwrap();
            assert!(status < 500, "{context}\n→ {status} {text}");
            assert!(
                documented.contains(&status),
                "{context}\n→ undocumented status {status} {text}"
            );
            if status < 400 {
                continue;
            }
            assert_eq!(
                headers.get("content-type").map(|v| v.to_str().unwrap()),
                Some("application/problem+json"),
                "{context}\n→ {status} {text}"
            );
            let problem: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(problem["status"], status, "{context}");
            assert!(problem["code"].is_string(), "{context}\n→ {text}");
            assert_eq!(
                w.state_of_a(&req.reads).await,
                state_before,
                "{context}\n→ {status} {text}: the refusal changed what the owner sees"
            );
            assert_eq!(
                w.counts().await,
                counts_before,
                "{context}\n→ {status} {text}: the refusal changed rows"
            );
        }
    }
    eprintln!(
        "fuzzed {} mutation endpoints × {cases} cases (seed {seed}): answers by status {by_status:?}",
        operations.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deeply_nested_and_oversized_json_gets_a_clear_4xx_and_changes_nothing() {
    let app = spawn_app(Backend::Sqlite).await;
    let ann = app.sign_up("ann@example.com").await;
    let before = app.snapshot().await;
    let send = |body: Vec<u8>, path: &'static str| {
        app.request(Method::POST, path, Some(&ann.token))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    // 100 000 open brackets: serde_json's recursion limit (128) stops the parser early.
    let response = send(vec![b'['; 100_000], "/api/v1/items").await.unwrap();
    assert_problem(response, 400, "malformed_json").await;
    // Nesting in a free-form field (event data) beyond the limit, and within it.
    let deep = json!({"type": "t.deep", "stream": "deep", "data": nested(200)});
    let response = send(serde_json::to_vec(&deep).unwrap(), "/api/v1/events")
        .await
        .unwrap();
    assert_problem(response, 400, "malformed_json").await;
    assert_eq!(app.snapshot().await, before, "nothing changed");
    // A name of 900 KB (under the body limit) and a number beyond any integer.
    let long = json!({"name": "x".repeat(900_000), "qty": 1});
    let response = send(serde_json::to_vec(&long).unwrap(), "/api/v1/items")
        .await
        .unwrap();
    assert_problem(response, 400, "validation_failed").await;
    let response = send(
        br#"{"name": "Milk", "qty": 1e400}"#.to_vec(),
        "/api/v1/items",
    )
    .await
    .unwrap();
    assert!(response.status().is_client_error(), "1e400");
    // Over the body limit (1 MiB): refused before it is read whole.
    let response = send(vec![b' '; 2 * 1024 * 1024], "/api/v1/items")
        .await
        .unwrap();
    assert_problem(response, 413, "payload_too_large").await;
    assert_eq!(app.snapshot().await, before, "nothing changed");
    let shallow = json!({"type": "t.deep", "stream": "deep", "data": nested(60)});
    let response = send(serde_json::to_vec(&shallow).unwrap(), "/api/v1/events")
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "60 levels are fine");
}

/// A refusal sent before the body was read (413 over the limit, 401 without a token) must
/// reach a client that is still uploading: the server reads and discards the rest first
/// (`unread_body`). Without that, about one 8 MiB upload in three got "broken pipe" here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_of_large_uploads_reach_the_client_instead_of_a_reset() {
    let app = spawn_app(Backend::Sqlite).await;
    let ann = app.sign_up("ann@example.com").await;
    let before = app.snapshot().await;
    for round in 0..8 {
        let over_limit = app
            .request(Method::POST, "/api/v1/items", Some(&ann.token))
            .header("content-type", "application/json")
            .body(vec![b' '; 8 * 1024 * 1024])
            .send()
            .await
            .unwrap_or_else(|e| panic!("round {round}, 8 MiB over the limit: {e}"));
        assert_problem(over_limit, 413, "payload_too_large").await;
        let no_token = app
            .request(Method::POST, "/api/v1/items", None)
            .header("content-type", "application/json")
            .body(vec![b' '; 512 * 1024])
            .send()
            .await
            .unwrap_or_else(|e| panic!("round {round}, 512 KiB without a token: {e}"));
        assert_eq!(no_token.status(), 401, "round {round}");
    }
    assert_eq!(app.snapshot().await, before, "nothing changed");
}

/// `Expect: 100-continue`: a body the handler never reads is never asked for (the refusal comes
/// at once, without `100 Continue`); one it starts reading and then refuses over the limit is
/// read to its end after the answer, so the upload completes and the client reads its 413.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_waiting_for_100_continue_get_their_refusal() {
    let app = spawn_app(Backend::Sqlite).await;
    let ann = app.sign_up("ann@example.com").await;
    let before = app.snapshot().await;
    let address = app.address.trim_start_matches("http://").to_owned();
    let size = 8 * 1024 * 1024;
    let head = |token: Option<&str>| {
        let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
        format!(
            "POST /api/v1/items HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             Content-Length: {size}\r\nExpect: 100-continue\r\n{auth}\r\n"
        )
    };
    let mut refused = TcpStream::connect(&address).await.unwrap();
    refused.write_all(head(None).as_bytes()).await.unwrap();
    let answer = read_response_head(&mut refused).await;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    let mut upload = TcpStream::connect(&address).await.unwrap();
    upload
        .write_all(head(Some(&ann.token)).as_bytes())
        .await
        .unwrap();
    let go_on = read_response_head(&mut upload).await;
    assert!(go_on.starts_with("HTTP/1.1 100"), "{go_on}");
    upload
        .write_all(&vec![b' '; size])
        .await
        .expect("the whole body is taken, not cut off with a reset");
    let answer = read_response_head(&mut upload).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert_eq!(app.snapshot().await, before, "nothing changed");
}

/// Reads one response head (through its blank line) from a raw connection.
async fn read_response_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut byte)).await {
            Ok(Ok(1)) => head.push(byte[0]),
            other => panic!(
                "no complete response head ({other:?}) after {:?}",
                String::from_utf8_lossy(&head)
            ),
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_request_heads_get_431_and_the_server_keeps_serving() {
    let app = spawn_app(Backend::Sqlite).await;
    let ann = app.sign_up("ann@example.com").await;
    let huge = app
        .request(Method::GET, "/api/v1/me", Some(&ann.token))
        .header("x-padding", "p".repeat(100_000))
        .send()
        .await
        .unwrap();
    assert_problem(huge, 431, "request_head_too_large").await;
    let mut many = app.request(Method::GET, "/api/v1/me", Some(&ann.token));
    for i in 0..150 {
        many = many.header(format!("x-h{i}"), "v");
    }
    assert_problem(many.send().await.unwrap(), 431, "request_head_too_large").await;
    let huge_token = app
        .request(Method::GET, "/api/v1/me", Some(&"t".repeat(200_000)))
        .send()
        .await
        .unwrap();
    assert_problem(huge_token, 431, "request_head_too_large").await;
    let fine = app
        .request(Method::GET, "/api/v1/me", Some(&ann.token))
        .header("x-padding", "p".repeat(30_000))
        .send()
        .await
        .unwrap();
    assert_eq!(fine.status(), 200, "a 30 KB header is within the limit");
}

/// A request head hyper cannot read is answered before any of our code runs; the answer is
/// still a problem with a request id (`trueline::unreadable_head`), also after a good
/// request on the same connection, and the server goes on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_request_heads_are_answered_with_problems() {
    let app = spawn_app(Backend::Sqlite).await;
    let address = app.address.trim_start_matches("http://").to_owned();
    let heads: [&[u8]; 5] = [
        b"GET /api/v1/he alth HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /livez HTTP/1.1\r\nHost: x\r\nBad Header: 1\r\n\r\n",
        b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\nGET /livez HTTP/1.1\r\nHost: x\r\nBad Header: 1\r\n\r\n",
        b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n",
        // After an HTTP/1.0 keep-alive request, hyper answers in HTTP/1.0.
        b"GET /livez HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /livez HTTP/1.0\r\nBad Header: 1\r\n\r\n",
    ];
    for head in heads {
        let mut stream = TcpStream::connect(&address).await.unwrap();
        stream.write_all(head).await.unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
            .await
            .expect("answered and closed")
            .unwrap();
        let answer = String::from_utf8(answer).unwrap();
        // The last status line (a problem's detail may say "HTTP/1.1" too).
        let last = answer
            .match_indices("HTTP/1.")
            .map(|(at, _)| at)
            .filter(|at| *at == 0 || answer[..*at].ends_with('}'))
            .last()
            .unwrap();
        let (head, body) = answer[last..].split_once("\r\n\r\n").unwrap();
        assert_eq!(head.get(8..13), Some(" 400 "), "{answer}");
        assert!(
            head.contains("\r\ncontent-type: application/problem+json\r\n"),
            "{head}"
        );
        let problem: Value = serde_json::from_str(body).unwrap();
        assert_eq!(problem["code"], "bad_request", "{problem}");
        let id = problem["request_id"].as_str().unwrap();
        assert!(
            head.contains(&format!("\r\nx-request-id: {id}\r\n")),
            "{head}"
        );
        if last > 0 {
            assert_eq!(
                answer.get(8..13),
                Some(" 200 "),
                "the good request first: {answer}"
            );
        }
    }
    let fine = app
        .request(Method::GET, "/livez", None)
        .send()
        .await
        .unwrap();
    assert_eq!(fine.status(), 200);
}

/// Opens a connection that sends a request head one line at a time, forever; returns how
/// long the server took to close it (`None`: still open after `give_up`).
async fn slow_client(address: String, give_up: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut stream = TcpStream::connect(address.trim_start_matches("http://").to_owned())
        .await
        .ok()?;
    let (mut reader, mut writer) = stream.split();
    let trickle = async {
        let _ = writer
            .write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\n")
            .await;
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if writer.write_all(b"X-Slow: 1\r\n").await.is_err() {
                return;
            }
        }
    };
    let closed = async {
        let mut buf = [0u8; 1024];
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::select! {
        () = closed => Some(started.elapsed()),
        () = trickle => Some(started.elapsed()),
        () = tokio::time::sleep(give_up) => None,
    }
}

/// Opens a connection that sends nothing; returns how long until the server closed it.
async fn idle_client(address: String, give_up: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut stream = TcpStream::connect(address.trim_start_matches("http://").to_owned())
        .await
        .ok()?;
    let mut buf = [0u8; 64];
    match tokio::time::timeout(give_up, stream.read(&mut buf)).await {
        Ok(_) => Some(started.elapsed()),
        Err(_) => None,
    }
}

/// One client holds at most `limits.max_in_flight_per_client` of the requests in flight: a
/// request holds its place while its body arrives, and one client sending bodies slowly
/// held every place of the server (`503 overloaded` for everyone). Past its share a client
/// gets `429`, others are served, and a place frees when one of its requests ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_past_its_share_of_requests_in_flight_gets_429_and_others_are_served() {
    let app = spawn_app_with(
        Backend::Sqlite,
        |c| {
            c.limits.enabled = true;
            c.limits.max_in_flight_per_client = 2;
            c.server.body_read_timeout_ms = 30_000;
            c.server.trusted_proxies = vec!["127.0.0.1/32".to_owned()];
        },
        axum::Router::new(),
    )
    .await;
    let ann = app.sign_up("ann@example.com").await;
    let address = app.address.trim_start_matches("http://").to_owned();
    // Two requests of client 10.0.0.1 whose bodies never come.
    let mut stalled = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(&address).await.unwrap();
        let head = format!(
            "POST /api/v1/items HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
             X-Forwarded-For: 10.0.0.1\r\nContent-Type: application/json\r\n\
             Content-Length: 100\r\n\r\n{{",
            ann.token
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        stalled.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = app.snapshot().await;
    let from = |client: &str| {
        app.request(Method::POST, "/api/v1/items", Some(&ann.token))
            .header("x-forwarded-for", client)
            .json(&json!({"name": format!("From {client}"), "qty": 1}))
            .send()
    };
    let refused = from("10.0.0.1").await.unwrap();
    assert_eq!(refused.headers()["retry-after"], "1");
    assert_problem(refused, 429, "rate_limited").await;
    assert_eq!(app.snapshot().await, before, "the refusal changed nothing");
    let other = from("10.0.0.2").await.unwrap();
    assert_eq!(other.status(), 201, "another client is served");
    // One of the stalled requests ends: its place is free again.
    drop(stalled.pop());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let retried = from("10.0.0.1").await.unwrap();
        if retried.status() == 201 {
            break;
        }
        assert_eq!(retried.status(), 429);
        assert!(Instant::now() < deadline, "the place was given back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One client holds at most its share of the connections: the ones past it are closed as
/// they come, and a place frees when one of its connections ends. (Rate limits count
/// requests: a client keeping every connection alive with a request every few seconds held
/// every slot of the server.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_past_its_connection_share_is_closed_at_once() {
    let app = spawn_app_with(
        Backend::Sqlite,
        |c| {
            c.server.max_connections_per_client = 4;
            c.server.header_read_timeout_ms = 20_000;
        },
        axum::Router::new(),
    )
    .await;
    let address = app.address.trim_start_matches("http://").to_owned();
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(TcpStream::connect(&address).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut fifth = TcpStream::connect(&address).await.unwrap();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(5), fifth.read(&mut buf))
        .await
        .expect("the fifth connection is closed at once, not left waiting");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    // One of the four ends: its place is free for a request.
    drop(held.pop());
    let fresh = reqwest::Client::new();
    assert!(
        eventually(5, || async {
            fresh
                .get(app.url("/livez"))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        })
        .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_connections_beyond_the_cap_are_cut_off_and_others_get_served() {
    const CAP: usize = 8;
    let app = spawn_app_with(
        Backend::Sqlite,
        |c| {
            c.server.max_connections = CAP;
            c.server.header_read_timeout_ms = 500;
        },
        axum::Router::new(),
    )
    .await;
    let give_up = Duration::from_secs(30);
    let slow: Vec<_> = (0..40)
        .map(|_| tokio::spawn(slow_client(app.address.clone(), give_up)))
        .collect();
    let idle: Vec<_> = (0..60)
        .map(|_| tokio::spawn(idle_client(app.address.clone(), give_up)))
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // 100 hostile connections against a cap of 8: a real client still gets its answer once
    // the header read timeout has cut off the ones ahead of it in the backlog.
    let started = Instant::now();
    let fresh = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let response = fresh.get(app.url("/livez")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let waited = started.elapsed();
    for (kind, handles) in [("slow", slow), ("idle", idle)] {
        for handle in handles {
            let closed_after = handle.await.unwrap();
            assert!(
                closed_after.is_some(),
                "a {kind} connection was never closed by the server"
            );
        }
    }
    eprintln!("100 hostile connections, cap {CAP}: a real request waited {waited:?}");
    assert_eq!(status_of(&app, "/livez").await, 200, "still serving");
}

/// A client that asks for a large answer and then reads nothing held its connection forever
/// (hyper has no write timeout, and the request timeout ends with the headers): with a cap of
/// one connection, nobody else was served again. Past `server.write_stall_timeout_ms` without
/// progress the connection is closed.
#[tokio::test]
async fn a_client_that_stops_reading_its_answer_loses_the_connection() {
    let app = spawn_app_with(
        Backend::Sqlite,
        |c| {
            c.server.max_connections = 1;
            c.server.write_stall_timeout_ms = 500;
            // The test client's own idle keep-alive connection gives the one place back soon.
            c.server.header_read_timeout_ms = 300;
            c.outbox.relay_enabled = false;
        },
        axum::Router::new(),
    )
    .await;
    let ann = app.sign_up("ann@example.com").await;
    let big = "x".repeat(1_000_000);
    for i in 0..9 {
        let body = json!({"type": "t", "data": big, "metadata": {"i": i}});
        let response = app.post("/api/v1/events", &ann.token, &body).await;
        assert_eq!(response.status(), 201);
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    // Nothing of the ~9 MB answer is read, through a small receive buffer.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let address = app.address.trim_start_matches("http://").parse().unwrap();
    let mut stalled = socket.connect(address).await.unwrap();
    let request = format!(
        "GET /api/v1/events?limit=1000 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n",
        ann.token
    );
    stalled.write_all(request.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let fresh = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let response = fresh
        .get(app.url("/livez"))
        .send()
        .await
        .expect("served once the stalled connection is cut");
    assert_eq!(response.status(), 200);
    eprintln!("served after {:?}", started.elapsed());
    drop(stalled);
}

/// Sends a request head announcing `length` body bytes, then `parts` of the body with
/// `pause` before each; returns the response head and body (the server answers early).
async fn send_body_slowly(
    address: &str,
    head: &str,
    length: usize,
    parts: &[&[u8]],
    pause: Duration,
) -> (String, Value) {
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream
        .write_all(format!("{head}content-length: {length}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    for part in parts {
        tokio::time::sleep(pause).await;
        // The server may have answered and closed already.
        if stream.write_all(part).await.is_err() {
            break;
        }
    }
    read_response(&mut stream).await
}

/// Reads one response whose body is JSON with a `content-length`.
async fn read_response(stream: &mut TcpStream) -> (String, Value) {
    let response_head = read_response_head(stream).await;
    let length: usize = response_head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length: ")
                .map(|v| v.trim().parse().unwrap())
        })
        .expect("a content-length");
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await.unwrap();
    (response_head, serde_json::from_slice(&body).unwrap())
}

/// A body that stops arriving is `408 request_timeout` after `server.body_read_timeout_ms`,
/// with or without an `Idempotency-Key`, and so is one still trickling in when the request
/// times out (it was a `503 timeout` saying a change might have been committed, while the
/// slot was held for the whole request timeout). Nothing changes; a bodyless slow handler
/// keeps its `503` (`platform::a_slow_request_is_cut_off_with_a_503_timeout`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_does_not_arrive_in_time_is_a_408_and_changes_nothing() {
    let app = spawn_app_with(
        Backend::Sqlite,
        |c| {
            c.server.body_read_timeout_ms = 300;
            c.server.request_timeout_ms = 1_500;
        },
        axum::Router::new(),
    )
    .await;
    let ann = app.sign_up("ann@example.com").await;
    let before = app.snapshot().await;
    let address = app.address.trim_start_matches("http://").to_owned();
    let head = |key: &str| {
        format!(
            "POST /api/v1/items HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\n\
             content-type: application/json\r\n{key}",
            ann.token
        )
    };
    let body = br#"{"name":"Milk","qty":1}"#;
    for key in ["", "idempotency-key: stalled-1\r\n"] {
        let started = Instant::now();
        let (status, problem) = send_body_slowly(
            &address,
            &head(key),
            body.len(),
            &[&body[..5]],
            Duration::ZERO,
        )
        .await;
        assert!(status.starts_with("HTTP/1.1 408"), "{key}: {status}");
        assert_eq!(problem["code"], "request_timeout", "{problem}");
        assert!(
            problem["detail"]
                .as_str()
                .unwrap()
                .contains("nothing was changed"),
            "{problem}"
        );
        assert!(started.elapsed() < Duration::from_millis(1_400), "{key}");
    }
    // Each part in time, the whole too slow for the request timeout.
    let parts: Vec<&[u8]> = body.chunks(2).collect();
    let (status, problem) = send_body_slowly(
        &address,
        &head(""),
        body.len(),
        &parts,
        Duration::from_millis(200),
    )
    .await;
    assert!(status.starts_with("HTTP/1.1 408"), "{status}");
    assert_eq!(problem["code"], "request_timeout", "{problem}");
    assert_eq!(app.snapshot().await, before, "nothing changed");
}

/// A body that breaks off (a malformed chunk) is `400 bad_request` with or without an
/// `Idempotency-Key` (with one it was `413 payload_too_large`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_breaks_off_is_a_400_with_or_without_a_key() {
    let app = spawn_app(Backend::Sqlite).await;
    let ann = app.sign_up("ann@example.com").await;
    let before = app.snapshot().await;
    let address = app.address.trim_start_matches("http://").to_owned();
    for key in ["", "idempotency-key: broken-1\r\n"] {
        let mut stream = TcpStream::connect(&address).await.unwrap();
        stream
            .write_all(
                format!(
                    "POST /api/v1/items HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\n\
                     content-type: application/json\r\ntransfer-encoding: chunked\r\n{key}\r\n\
                     5\r\n{{\"nam\r\nzz\r\n",
                    ann.token
                )
                .as_bytes(),
            )
            .await
            .unwrap();
        let (status, problem) = read_response(&mut stream).await;
        assert!(status.starts_with("HTTP/1.1 400"), "{key}: {status}");
        assert_eq!(problem["code"], "bad_request", "{problem}");
    }
    assert_eq!(app.snapshot().await, before, "nothing changed");
}

/// Bodies are JSON objects: an array (which serde's structs took, matched to the fields by
/// position), a number or a string is `400 validation_failed` (`invalid_type` at the root),
/// a body in a content coding is `415`, a path segment that is not UTF-8 is `400
/// bad_request` on every route, and a made-up history cursor of an unknown item is a `404`.
/// Nothing changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_must_be_plain_json_objects_and_paths_must_decode() {
    let app = spawn_app(Backend::Sqlite).await;
    let ann = app.sign_up("ann@example.com").await;
    let item = app.create_item(&ann.token, "Milk", 5).await;
    let item_id = item["id"].as_str().unwrap();
    let assessment = draft_assessment(&app, &ann.token).await;
    let before = app.snapshot().await;
    for body in [r#"["SeqItem", 5, null]"#, "[]", " 5", r#""Milk""#] {
        let response = app
            .request(Method::POST, "/api/v1/items", Some(&ann.token))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let problem = assert_problem(response, 400, "validation_failed").await;
        assert_eq!(problem["errors"][0]["field"], "", "{body}: {problem}");
        assert_eq!(
            problem["errors"][0]["code"], "invalid_type",
            "{body}: {problem}"
        );
    }
    // Below the top level too: an array where an object belongs is refused at its place.
    for (path, body, field) in [
        (
            "/api/v1/inventory/adjustments".to_owned(),
            format!(r#"{{"adjustments":[["{item_id}",-1]]}}"#),
            "/adjustments/0",
        ),
        (
            format!("/api/v1/assessments/{assessment}/invites"),
            r#"{"candidates":[["cand@example.com","Cand"]]}"#.to_owned(),
            "/candidates/0",
        ),
        (
            "/api/v1/streams/s/events".to_owned(),
            r#"{"events":[["t",{}]]}"#.to_owned(),
            "/events/0",
        ),
    ] {
        let (at, problem) =
            first_refusal(&app, Method::POST, &path, &ann.token, body.clone()).await;
        assert_eq!(
            at,
            (json!(field), json!("invalid_type")),
            "{body}: {problem}"
        );
    }
    let truncated = app
        .request(Method::POST, "/api/v1/items", Some(&ann.token))
        .header("content-type", "application/json")
        .body("[")
        .send()
        .await
        .unwrap();
    assert_problem(truncated, 400, "malformed_json").await;
    let gzip = app
        .request(Method::POST, "/api/v1/items", Some(&ann.token))
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(r#"{"name":"Milk","qty":1}"#)
        .send()
        .await
        .unwrap();
    assert_problem(gzip, 415, "unsupported_media_type").await;
    for path in ["/api/v1/items/%FF", "/api/v1/items/%FF/history"] {
        let response = app
            .request(Method::GET, path, Some(&ann.token))
            .send()
            .await
            .unwrap();
        assert_problem(response, 400, "bad_request").await;
    }
    let history = app
        .request(
            Method::GET,
            &format!("/api/v1/items/{}/history?cursor=MQ", uuid::Uuid::now_v7()),
            Some(&ann.token),
        )
        .send()
        .await
        .unwrap();
    assert_problem(history, 404, "not_found").await;
    assert_eq!(app.snapshot().await, before, "nothing changed");
}

/// Sends a JSON body that must be refused as `400 validation_failed`: the field and code of
/// its first error, and the problem.
async fn first_refusal(
    app: &TestApp,
    method: Method,
    path: &str,
    token: &str,
    body: String,
) -> ((Value, Value), Value) {
    let response = app
        .request(method, path, Some(token))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let problem = assert_problem(response, 400, "validation_failed").await;
    let error = &problem["errors"][0];
    ((error["field"].clone(), error["code"].clone()), problem)
}

/// A new draft assessment's id.
async fn draft_assessment(app: &TestApp, token: &str) -> String {
    let assessment: Value = app
        .post(
            "/api/v1/assessments",
            token,
            &json!({"title": "T", "time_limit_minutes": 30, "passing_score_percent": 50}),
        )
        .await
        .json()
        .await
        .unwrap();
    assessment["id"].as_str().unwrap().to_owned()
}

/// A member named twice in a body is refused (`duplicate_field`) in typed bodies, in a
/// question's definition and in an event's `data` (both were free-form values that kept the
/// last one without a word). Nothing changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_named_twice_are_refused_everywhere() {
    let app = spawn_app(Backend::Sqlite).await;
    let ann = app.sign_up("ann@example.com").await;
    let id = &draft_assessment(&app, &ann.token).await;
    let before = app.snapshot().await;
    for (path, body, field) in [
        (
            "/api/v1/items".to_owned(),
            r#"{"name":"Milk","qty":1,"qty":2}"#,
            "/qty",
        ),
        (
            format!("/api/v1/assessments/{id}/questions"),
            r#"{"type":"single_choice","prompt":"2+2?","options":["3","4"],"correct":0,"correct":1}"#,
            "",
        ),
        (
            "/api/v1/events".to_owned(),
            r#"{"type":"order.paid","data":{"amount":5,"note":"x","amount":500}}"#,
            "/data",
        ),
    ] {
        let response = app
            .request(Method::POST, &path, Some(&ann.token))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let problem = assert_problem(response, 400, "validation_failed").await;
        assert_eq!(
            problem["errors"][0]["code"], "duplicate_field",
            "{body}: {problem}"
        );
        assert!(
            problem["errors"][0]["field"]
                .as_str()
                .unwrap()
                .starts_with(field),
            "{body}: {problem}"
        );
    }
    assert_eq!(app.snapshot().await, before, "nothing changed");
}

/// An integer literal too wide for 64 bits was read by serde_json as the nearest double: a
/// numeric answer key of `123456789012345678901` was stored rounded where the README says an
/// integer must be within ±(2^53−1). Now every integer rule refuses it (`out_of_range`, at
/// its field) and nothing changes; an event's `data` keeps numbers as doubles, as documented.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn integers_too_wide_for_64_bits_are_out_of_range_not_rounded() {
    let app = spawn_app(Backend::Sqlite).await;
    let ann = app.sign_up("ann@example.com").await;
    let id = &draft_assessment(&app, &ann.token).await;
    let item = app.create_item(&ann.token, "Milk", 5).await;
    let item_id = item["id"].as_str().unwrap();
    let before = app.snapshot().await;
    for (method, path, body, field) in [
        (
            Method::POST,
            format!("/api/v1/assessments/{id}/questions"),
            r#"{"type":"numeric","prompt":"p","value":123456789012345678901,"tolerance":0}"#,
            "/value",
        ),
        (
            Method::POST,
            format!("/api/v1/assessments/{id}/questions"),
            r#"{"type":"numeric","prompt":"p","value":1,"tolerance":-99999999999999999999999}"#,
            "/tolerance",
        ),
        (
            Method::POST,
            "/api/v1/items".to_owned(),
            r#"{"name":"Oats","qty":123456789012345678901}"#,
            "/qty",
        ),
        (
            Method::PATCH,
            format!("/api/v1/items/{item_id}/qty"),
            r#"{"delta":-123456789012345678901}"#,
            "/delta",
        ),
    ] {
        let (at, problem) = first_refusal(&app, method, &path, &ann.token, body.to_owned()).await;
        assert_eq!(
            at,
            (json!(field), json!("out_of_range")),
            "{body}: {problem}"
        );
    }
    // A syntax error after a wide integer is reported where it is in the body as sent.
    let response = app
        .request(Method::POST, "/api/v1/items", Some(&ann.token))
        .header("content-type", "application/json")
        .body(r#"{"qty":123456789012345678901234567890,"name":}"#)
        .send()
        .await
        .unwrap();
    let problem = assert_problem(response, 400, "malformed_json").await;
    assert!(
        problem["detail"].as_str().unwrap().ends_with("column 46"),
        "{problem}"
    );
    assert_eq!(app.snapshot().await, before, "nothing changed");
    // Event data: numbers are doubles (README), so the integer is kept as the nearest one.
    let response = app
        .request(Method::POST, "/api/v1/events", Some(&ann.token))
        .header("content-type", "application/json")
        .body(r#"{"type":"t","data":{"n":123456789012345678901}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let appended: Value = response.json().await.unwrap();
    let event: Value = app
        .get(
            &format!("/api/v1/events/{}", appended["id"].as_str().unwrap()),
            &ann.token,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(event["data"]["n"], json!(1.2345678901234568e20));
}

/// Operations that take no body refuse one that says something (it was ignored: a publish
/// with `{"dry_run": true}` published); an empty body or `{}` is fine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_without_a_body_refuse_one_that_says_something() {
    let app = spawn_app(Backend::Sqlite).await;
    let ann = app.sign_up("ann@example.com").await;
    let id = &draft_assessment(&app, &ann.token).await;
    let question = json!({"type": "true_false", "prompt": "Rust is memory safe", "correct": true});
    let added = app
        .post(
            &format!("/api/v1/assessments/{id}/questions"),
            &ann.token,
            &question,
        )
        .await;
    assert_eq!(added.status(), 201);
    let publish = format!("/api/v1/assessments/{id}/publish");
    let before = app.snapshot().await;
    let refused = app
        .request(Method::POST, &publish, Some(&ann.token))
        .header("content-type", "application/json")
        .body(r#"{"dry_run": true}"#)
        .send()
        .await
        .unwrap();
    let problem = assert_problem(refused, 400, "validation_failed").await;
    assert_eq!(problem["errors"][0]["field"], "/dry_run", "{problem}");
    assert_eq!(problem["errors"][0]["code"], "unknown_field", "{problem}");
    let text = app
        .request(Method::POST, &publish, Some(&ann.token))
        .header("content-type", "text/plain")
        .body("dry run please")
        .send()
        .await
        .unwrap();
    assert_problem(text, 415, "unsupported_media_type").await;
    assert_eq!(app.snapshot().await, before, "nothing changed");
    let published = app
        .request(Method::POST, &publish, Some(&ann.token))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(published.status(), 200, "an empty object is no body");
}
