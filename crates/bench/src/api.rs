//! A lean HTTP/1.1 client: one request in, one [`Reply`] out (status, body, problem `code`).
//!
//! Hand-written on purpose (the workspace's general client is reqwest): the tool shares the
//! machine with the server it measures, so every microsecond it spends per request is taken
//! from the server. reqwest spent ~60 µs of CPU per request here (URL and IDNA parsing, its
//! pool, a connection task and a channel per request); this client writes the request and
//! parses the answer (httparse) in the calling task, over keep-alive connections it pools
//! itself. Plain `http://` only: the tool drives a server on the same or a nearby host.
//!
//! Transport failures (connection refused, timeout) are a [`Reply`] with status 0, so the
//! load loops count them like any other outcome instead of aborting the run.
//!
//! A request that fails on a reused keep-alive connection before any answer came back is
//! sent once more on a fresh connection only if repeating it is harmless: a GET or HEAD, a
//! request with an `Idempotency-Key`, or one the caller marks as carrying client-chosen ids
//! ([`Api::post_repeatable`]). The server may have applied the first copy before the
//! connection died; a repeated request could then be refused (a repeated `POST …/items` is
//! `409 name_taken`) and counted as a failure that never happened. Anything else gets a transport error, and
//! its outcome is resolved at the end like any other unknown one.

use anyhow::{Context, bail};
pub use http::Method;
use serde_json::Value;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Status recorded for a request that got no HTTP answer at all.
pub const TRANSPORT_ERROR: u16 = 0;
/// Largest response head (status line and headers) accepted.
const HEAD_BYTES_MAX: usize = 64 * 1024;
/// Headers parsed per response at most.
const HEADERS_MAX: usize = 64;
/// Largest response body accepted (the biggest answers are event pages).
const BODY_BYTES_MAX: usize = 256 * 1024 * 1024;
/// Bytes a connection's buffer has room for at least before each read.
const READ_CHUNK: usize = 16 * 1024;

#[derive(Clone)]
pub struct Api {
    inner: Arc<Inner>,
}

struct Inner {
    /// `http://host:port` plus any path prefix, without a trailing slash.
    base: String,
    /// `host:port` to connect to and to send as `Host`.
    authority: String,
    /// Path prefix of `base` (empty, or `/something`).
    prefix: String,
    timeout: Duration,
    /// Idle keep-alive connections.
    idle: Mutex<Vec<Connection>>,
}

struct Connection {
    stream: TcpStream,
    /// Bytes read but not yet consumed.
    buf: Vec<u8>,
}

#[derive(Debug, Clone)]
pub struct Reply {
    /// The HTTP status, or [`TRANSPORT_ERROR`].
    pub status: u16,
    pub body: Vec<u8>,
    /// For transport errors: what went wrong.
    pub error: Option<String>,
}

impl Reply {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The RFC 9457 `code` of an error body (`transport_error` when there was no answer).
    pub fn code(&self) -> Option<String> {
        if self.status == TRANSPORT_ERROR {
            return Some("transport_error".into());
        }
        if self.is_success() {
            return None;
        }
        serde_json::from_slice::<Value>(&self.body)
            .ok()
            .and_then(|v| v.get("code").and_then(Value::as_str).map(str::to_owned))
            .or_else(|| Some("no_problem_code".into()))
    }

    pub fn json(&self) -> anyhow::Result<Value> {
        serde_json::from_slice(&self.body).context("the server answered something that is not JSON")
    }

    /// The JSON body of a 2xx answer, or an error naming the request and the problem.
    pub fn ok_json(&self, what: &str) -> anyhow::Result<Value> {
        if !self.is_success() {
            bail!("{what}: {}", self.describe());
        }
        self.json().with_context(|| what.to_owned())
    }

    /// `404 not_found: detail…` or the transport error, for messages.
    pub fn describe(&self) -> String {
        if let Some(error) = &self.error {
            return format!("no answer ({error})");
        }
        let body = String::from_utf8_lossy(&self.body);
        let detail: String = body.chars().take(300).collect();
        format!("HTTP {} {}", self.status, detail)
    }

    fn transport(error: impl std::fmt::Display) -> Reply {
        Reply {
            status: TRANSPORT_ERROR,
            body: Vec::new(),
            error: Some(error.to_string()),
        }
    }
}

/// How a request on a connection failed.
enum Failure {
    /// Nothing came back and the request may never have reached the server: on a reused
    /// keep-alive connection the server may have closed it meanwhile; try a fresh one.
    Stale(std::io::Error),
    Other(String),
}

impl Api {
    pub fn new(base: &str, timeout: Duration) -> anyhow::Result<Self> {
        let base = base.trim_end_matches('/').to_owned();
        let Some(rest) = base.strip_prefix("http://") else {
            bail!("--url {base}: the load tool speaks plain http:// only");
        };
        let (authority, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.is_empty() || authority.contains(['@', '?', '#']) {
            bail!("--url {base}: expected http://host[:port][/prefix]");
        }
        let authority = if authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| !p.contains(']'))
        {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        Ok(Self {
            inner: Arc::new(Inner {
                base: base.clone(),
                authority,
                prefix: prefix.to_owned(),
                timeout,
                idle: Mutex::new(Vec::new()),
            }),
        })
    }

    pub fn base(&self) -> &str {
        &self.inner.base
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
        idempotency_key: Option<&str>,
    ) -> Reply {
        let repeatable = may_repeat(&method, idempotency_key.is_some());
        self.call_with(method, path, token, body, idempotency_key, repeatable)
            .await
    }

    /// A POST whose body carries client-chosen ids that make a second copy harmless (event
    /// appends: the same ids and content again → 200 with the original positions).
    pub async fn post_repeatable(&self, path: &str, token: Option<&str>, body: &Value) -> Reply {
        self.call_with(Method::POST, path, token, Some(body), None, true)
            .await
    }

    async fn call_with(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
        idempotency_key: Option<&str>,
        repeatable: bool,
    ) -> Reply {
        let request = self.encode(&method, path, token, body, idempotency_key);
        let send = self.send(&request, repeatable);
        match tokio::time::timeout(self.inner.timeout, send).await {
            Ok(reply) => reply,
            Err(_) => Reply::transport(format!(
                "no answer within {:?} ({method} {path})",
                self.inner.timeout
            )),
        }
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Reply {
        self.call(Method::GET, path, token, None, None).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> Reply {
        self.call(Method::POST, path, token, Some(body), None).await
    }

    fn encode(
        &self,
        method: &Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
        idempotency_key: Option<&str>,
    ) -> Vec<u8> {
        let body = body.map(|b| serde_json::to_vec(b).unwrap_or_default());
        let mut out = Vec::with_capacity(256 + body.as_ref().map_or(0, Vec::len));
        let head = format!(
            "{method} {}{path} HTTP/1.1\r\nhost: {}\r\n",
            self.inner.prefix, self.inner.authority
        );
        out.extend_from_slice(head.as_bytes());
        if let Some(token) = token {
            out.extend_from_slice(b"authorization: Bearer ");
            out.extend_from_slice(token.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        if let Some(key) = idempotency_key {
            out.extend_from_slice(b"idempotency-key: ");
            out.extend_from_slice(key.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        match &body {
            Some(body) => {
                let length = format!(
                    "content-type: application/json\r\ncontent-length: {}\r\n\r\n",
                    body.len()
                );
                out.extend_from_slice(length.as_bytes());
                out.extend_from_slice(body);
            }
            None if *method == Method::GET || *method == Method::HEAD => {
                out.extend_from_slice(b"\r\n");
            }
            None => out.extend_from_slice(b"content-length: 0\r\n\r\n"),
        }
        out
    }

    /// `repeatable`: the request may go out twice (see the module documentation).
    async fn send(&self, request: &[u8], repeatable: bool) -> Reply {
        let pooled = self
            .inner
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        if let Some(connection) = pooled {
            match self.exchange(connection, request).await {
                Ok(reply) => return reply,
                Err(Failure::Other(e)) => return Reply::transport(e),
                Err(Failure::Stale(e)) if !repeatable => {
                    return Reply::transport(format!(
                        "the kept-alive connection closed before an answer ({e}); not re-sent, \
                         as the server may have applied it"
                    ));
                }
                Err(Failure::Stale(_)) => {} // try once more on a fresh connection
            }
        }
        let connection = match TcpStream::connect(&self.inner.authority).await {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                Connection {
                    stream,
                    buf: Vec::with_capacity(READ_CHUNK),
                }
            }
            Err(e) => return Reply::transport(format!("connecting to {}: {e}", self.inner.base)),
        };
        match self.exchange(connection, request).await {
            Ok(reply) => reply,
            Err(Failure::Stale(e)) => Reply::transport(format!("connection closed: {e}")),
            Err(Failure::Other(e)) => Reply::transport(e),
        }
    }

    /// One request and its answer on `c`; a connection that can be reused goes back to the
    /// pool.
    async fn exchange(&self, mut c: Connection, request: &[u8]) -> Result<Reply, Failure> {
        c.buf.clear();
        c.stream.write_all(request).await.map_err(Failure::Stale)?;
        let (status, head_len, framing, close) = loop {
            let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
            let mut response = httparse::Response::new(&mut headers);
            match response.parse(&c.buf) {
                Ok(httparse::Status::Complete(head_len)) => {
                    let status = response.code.unwrap_or(0);
                    let (framing, close) = framing_of(&response)?;
                    // 1xx answers (e.g. 100 Continue) precede the real one.
                    if (100..200).contains(&status) {
                        c.buf.drain(..head_len);
                        continue;
                    }
                    break (status, head_len, framing, close);
                }
                Ok(httparse::Status::Partial) if c.buf.len() < HEAD_BYTES_MAX => {
                    let was_empty = c.buf.is_empty();
                    match read_more(&mut c).await {
                        Ok(0) if was_empty => {
                            return Err(Failure::Stale(std::io::ErrorKind::UnexpectedEof.into()));
                        }
                        Ok(0) => return Err(Failure::Other("connection closed mid-answer".into())),
                        Ok(_) => {}
                        Err(e) if was_empty => return Err(Failure::Stale(e)),
                        Err(e) => return Err(Failure::Other(format!("reading the answer: {e}"))),
                    }
                }
                Ok(httparse::Status::Partial) => {
                    return Err(Failure::Other("response head too large".into()));
                }
                Err(e) => return Err(Failure::Other(format!("malformed response: {e}"))),
            }
        };
        c.buf.drain(..head_len);
        let body = match framing {
            Framing::Length(n) => {
                if n > BODY_BYTES_MAX {
                    return Err(Failure::Other(format!("response body of {n} bytes")));
                }
                while c.buf.len() < n {
                    fill(&mut c).await?;
                }
                c.buf.drain(..n).collect()
            }
            Framing::Chunked => read_chunked(&mut c).await?,
            Framing::UntilClose => {
                // The end of the connection ends the body; a read error is not an end.
                while read_more(&mut c)
                    .await
                    .map_err(|e| Failure::Other(format!("reading the answer: {e}")))?
                    > 0
                {
                    if c.buf.len() > BODY_BYTES_MAX {
                        return Err(Failure::Other("response body too large".into()));
                    }
                }
                std::mem::take(&mut c.buf)
            }
        };
        if !close && framing != Framing::UntilClose {
            self.inner
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(c);
        }
        Ok(Reply {
            status,
            body,
            error: None,
        })
    }
}

/// Whether a request may be sent a second time after a stale connection.
fn may_repeat(method: &Method, has_idempotency_key: bool) -> bool {
    *method == Method::GET || *method == Method::HEAD || has_idempotency_key
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
}

fn framing_of(response: &httparse::Response<'_, '_>) -> Result<(Framing, bool), Failure> {
    let mut framing = Framing::UntilClose;
    let mut close = false;
    for h in response.headers.iter() {
        let value = std::str::from_utf8(h.value).unwrap_or("").trim();
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = value
                .parse()
                .map_err(|_| Failure::Other(format!("bad content-length {value:?}")))?;
            if framing != Framing::Chunked {
                framing = Framing::Length(n);
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            if value.to_ascii_lowercase().ends_with("chunked") {
                framing = Framing::Chunked;
            }
        } else if h.name.eq_ignore_ascii_case("connection") {
            close = value.eq_ignore_ascii_case("close");
        }
    }
    let no_body = matches!(response.code, Some(204 | 304)) || response.code < Some(200);
    if no_body {
        framing = Framing::Length(0);
    }
    Ok((framing, close))
}

/// Reads what the socket has into the connection's buffer, straight into its spare capacity.
/// (Not through a buffer on the stack: a 16 KiB array there made every request's future that
/// large, and it was zeroed and moved with the future, a fifth of the tool's CPU.)
async fn read_more(c: &mut Connection) -> std::io::Result<usize> {
    if c.buf.capacity() - c.buf.len() < READ_CHUNK / 2 {
        c.buf.reserve(READ_CHUNK);
    }
    c.stream.read_buf(&mut c.buf).await
}

/// Reads more of a body; the connection ending is an error here.
async fn fill(c: &mut Connection) -> Result<(), Failure> {
    match read_more(c).await {
        Ok(0) => Err(Failure::Other("connection closed mid-answer".into())),
        Ok(_) => Ok(()),
        Err(e) => Err(Failure::Other(format!("reading the answer: {e}"))),
    }
}

async fn read_chunked(c: &mut Connection) -> Result<Vec<u8>, Failure> {
    let mut body = Vec::new();
    loop {
        let line_end = loop {
            if let Some(i) = c.buf.windows(2).position(|w| w == b"\r\n") {
                break i;
            }
            if c.buf.len() > 1024 {
                return Err(Failure::Other("bad chunk size line".into()));
            }
            fill(c).await?;
        };
        let line = String::from_utf8_lossy(&c.buf[..line_end]).into_owned();
        let size_text = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| Failure::Other(format!("bad chunk size {size_text:?}")))?;
        c.buf.drain(..line_end + 2);
        if size == 0 {
            // Trailers (none expected) end with an empty line.
            loop {
                if let Some(i) = c.buf.windows(2).position(|w| w == b"\r\n") {
                    c.buf.drain(..i + 2);
                    if i == 0 {
                        return Ok(body);
                    }
                    continue;
                }
                fill(c).await?;
            }
        }
        if body.len() + size > BODY_BYTES_MAX {
            return Err(Failure::Other("response body too large".into()));
        }
        while c.buf.len() < size + 2 {
            fill(c).await?;
        }
        body.extend_from_slice(&c.buf[..size]);
        c.buf.drain(..size + 2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(status: u16, body: &str) -> Reply {
        Reply {
            status,
            body: body.as_bytes().to_vec(),
            error: None,
        }
    }

    #[test]
    fn problem_codes_are_read_from_error_bodies_only() {
        let problem = reply(400, r#"{"status":400,"code":"insufficient_quantity"}"#);
        assert_eq!(problem.code().as_deref(), Some("insufficient_quantity"));
        assert_eq!(reply(200, r#"{"code":"x"}"#).code(), None);
        assert_eq!(
            reply(502, "<html>bad gateway</html>").code().as_deref(),
            Some("no_problem_code")
        );
        let transport = Reply {
            status: TRANSPORT_ERROR,
            body: Vec::new(),
            error: Some("refused".into()),
        };
        assert_eq!(transport.code().as_deref(), Some("transport_error"));
    }

    /// A server on a free port: each accepted connection reads one request head at a time
    /// and answers with the next canned response of `script` for that connection; after its
    /// responses the connection is closed. Returns the base URL, the number of connections
    /// accepted and the requests seen.
    async fn scripted(
        script: Vec<Vec<&'static str>>,
    ) -> (
        String,
        Arc<std::sync::atomic::AtomicUsize>,
        Arc<Mutex<Vec<String>>>,
    ) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (a, s) = (accepted.clone(), seen.clone());
        tokio::spawn(async move {
            for responses in script {
                let (mut stream, _) = listener.accept().await.unwrap();
                a.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let s = s.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    for response in responses {
                        // Read one request: its head, then content-length bytes of body.
                        let (head_len, body_len) = loop {
                            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                                let head = String::from_utf8_lossy(&buf[..i]).to_lowercase();
                                let n = head
                                    .lines()
                                    .find_map(|l| l.strip_prefix("content-length: "))
                                    .map_or(0, |v| v.trim().parse().unwrap());
                                break (i + 4, n);
                            }
                            let mut chunk = [0u8; 4096];
                            let n = stream.read(&mut chunk).await.unwrap();
                            assert!(n > 0, "client closed before a full request");
                            buf.extend_from_slice(&chunk[..n]);
                        };
                        while buf.len() < head_len + body_len {
                            let mut chunk = [0u8; 4096];
                            let n = stream.read(&mut chunk).await.unwrap();
                            buf.extend_from_slice(&chunk[..n]);
                        }
                        let request: Vec<u8> = buf.drain(..head_len + body_len).collect();
                        s.lock().unwrap().push(String::from_utf8(request).unwrap());
                        stream.write_all(response.as_bytes()).await.unwrap();
                    }
                });
            }
        });
        (base, accepted, seen)
    }

    const OK: &str = "HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\n{\"ok\":true}";

    #[tokio::test]
    async fn requests_reuse_one_keep_alive_connection_and_carry_token_key_and_body() {
        let (base, accepted, seen) = scripted(vec![vec![OK, OK]]).await;
        let api = Api::new(&base, Duration::from_secs(5)).unwrap();
        let body = serde_json::json!({"delta": -1});
        let first = api
            .call(
                Method::PATCH,
                "/api/v1/items/1/qty",
                Some("tl_x"),
                Some(&body),
                Some("k1"),
            )
            .await;
        let second = api.get("/api/v1/items", None).await;
        assert_eq!(
            (first.status, second.status),
            (200, 200),
            "{first:?} {second:?}"
        );
        assert_eq!(first.json().unwrap()["ok"], true);
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
        let seen = seen.lock().unwrap().clone();
        assert!(
            seen[0].starts_with("PATCH /api/v1/items/1/qty HTTP/1.1\r\n"),
            "{}",
            seen[0]
        );
        assert!(seen[0].contains("authorization: Bearer tl_x\r\n"));
        assert!(seen[0].contains("idempotency-key: k1\r\n"));
        assert!(seen[0].ends_with("\r\n\r\n{\"delta\":-1}"), "{}", seen[0]);
        assert!(seen[1].starts_with("GET /api/v1/items HTTP/1.1\r\n"));
        assert!(!seen[1].contains("authorization"));
    }

    #[tokio::test]
    async fn chunked_bodies_and_interim_answers_are_read_whole() {
        let chunked = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 404 Not Found\r\n\
            transfer-encoding: chunked\r\n\r\n5;ext=1\r\n{\"cod\r\nf\r\ne\":\"not_found\"}\r\n\
            0\r\n\r\n";
        let (base, _, _) = scripted(vec![vec![chunked, OK]]).await;
        let api = Api::new(&base, Duration::from_secs(5)).unwrap();
        let reply = api.get("/x", None).await;
        assert_eq!(reply.status, 404, "{reply:?}");
        assert_eq!(reply.code().as_deref(), Some("not_found"));
        // The connection is still in step: the next answer is the next response.
        assert_eq!(api.get("/y", None).await.status, 200);
    }

    #[tokio::test]
    async fn a_pooled_connection_the_server_closed_is_replaced_once() {
        // Connection 1 answers once and closes; the second request finds it dead in the
        // pool and goes out again on connection 2.
        let (base, accepted, seen) = scripted(vec![vec![OK], vec![OK]]).await;
        let api = Api::new(&base, Duration::from_secs(5)).unwrap();
        assert_eq!(api.get("/a", None).await.status, 200);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let again = api.get("/b", None).await;
        assert_eq!(again.status, 200, "{again:?}");
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 2);
        assert_eq!(seen.lock().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn only_requests_safe_to_repeat_are_re_sent_after_a_stale_connection() {
        assert!(may_repeat(&Method::GET, false));
        assert!(may_repeat(&Method::HEAD, false));
        assert!(may_repeat(&Method::PATCH, true));
        assert!(!may_repeat(&Method::POST, false));
        // As in the test above, the pooled connection is dead when the POST goes out; the
        // POST has no Idempotency-Key, so it is not sent again on connection 2.
        let (base, accepted, seen) = scripted(vec![vec![OK], vec![OK, OK]]).await;
        let api = Api::new(&base, Duration::from_secs(5)).unwrap();
        assert_eq!(api.get("/a", None).await.status, 200);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let body = serde_json::json!({});
        let submit = api.post("/submit", None, &body).await;
        assert_eq!(submit.status, TRANSPORT_ERROR, "{submit:?}");
        assert!(
            submit
                .error
                .as_deref()
                .unwrap_or("")
                .contains("not re-sent")
        );
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
        // Client-chosen ids (post_repeatable) or an Idempotency-Key make the repeat safe.
        // Nothing is pooled now: this one opens connection 2 and keeps it.
        assert_eq!(
            api.post_repeatable("/events", None, &body).await.status,
            200
        );
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 2);
        assert_eq!(seen.lock().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn a_repeatable_post_goes_out_again_after_a_stale_connection() {
        let (base, accepted, seen) = scripted(vec![vec![OK], vec![OK]]).await;
        let api = Api::new(&base, Duration::from_secs(5)).unwrap();
        assert_eq!(api.get("/a", None).await.status, 200);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let body = serde_json::json!({"id": "e1"});
        let again = api.post_repeatable("/events", None, &body).await;
        assert_eq!(again.status, 200, "{again:?}");
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 2);
        assert!(seen.lock().unwrap()[1].starts_with("POST /events "));
    }

    #[tokio::test]
    async fn connection_close_and_bodies_until_close_are_not_reused() {
        let until_close = "HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nthe whole rest";
        let (base, accepted, _) = scripted(vec![vec![until_close], vec![OK]]).await;
        let api = Api::new(&base, Duration::from_secs(5)).unwrap();
        let reply = api.get("/a", None).await;
        assert_eq!(
            (reply.status, reply.body.as_slice()),
            (200, &b"the whole rest"[..])
        );
        assert_eq!(api.get("/b", None).await.status, 200);
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn no_server_no_answer_and_bad_urls_are_transport_errors_or_refused() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let silent = format!("http://{}", listener.local_addr().unwrap());
        let api = Api::new(&silent, Duration::from_millis(200)).unwrap();
        let reply = api.get("/", None).await;
        assert_eq!(reply.status, TRANSPORT_ERROR);
        assert!(
            reply
                .error
                .as_deref()
                .unwrap_or("")
                .contains("no answer within")
        );
        drop(listener);
        let refused = api.get("/", None).await;
        assert_eq!(refused.code().as_deref(), Some("transport_error"));
        assert!(Api::new("https://example.com", Duration::from_secs(1)).is_err());
        let prefixed = Api::new("http://localhost/base/", Duration::from_secs(1)).unwrap();
        assert_eq!(prefixed.inner.authority, "localhost:80");
        assert_eq!(prefixed.inner.prefix, "/base");
        assert_eq!(prefixed.base(), "http://localhost/base");
    }
}
