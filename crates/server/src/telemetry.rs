//! Logs and metrics.
//!
//! Logs are one JSON object per line on stdout with the base fields of CONVENTIONS.md:
//! `timestamp`, `level`, `event`, `service`, `request_id` (from the request span), then the
//! event's own fields. A dedicated layer (rather than tracing-subscriber's JSON format, which
//! nests fields and spans) keeps every line flat and greppable: `jq 'select(.event == …)'`.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::cell::RefCell;
use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

pub const SERVICE_NAME: &str = "trueline";

/// Fields rendered once, as they are recorded: `(name, JSON value)`. A span's fields are
/// rendered when the span is created, so each line only copies bytes.
#[derive(Default)]
struct Rendered(Vec<(&'static str, String)>);

impl Rendered {
    fn push_json(&mut self, field: &Field, value: impl serde::Serialize) {
        let json = serde_json::to_string(&value).unwrap_or_else(|_| "null".to_owned());
        self.0.push((field.name(), json));
    }
}

impl Visit for Rendered {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.push_json(field, value);
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.push_json(field, value);
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.push_json(field, value);
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        // serde_json writes a non-finite float as `null`, as the JSON map did.
        self.push_json(field, value);
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.push_json(field, value);
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let mut text = String::new();
        let _ = write!(text, "{value:?}");
        self.push_json(field, text);
    }
}

/// Names the layer writes itself; a field of the same name is not repeated.
const BASE_FIELDS: [&str; 4] = ["timestamp", "level", "event", "service"];

/// The flat JSON-lines layer. It writes each line straight into a reused per-thread buffer
/// (no intermediate JSON map: building one cost ~10 µs per line, a quarter of the server's
/// CPU per request under `events-append`) and hands it to `sink` in one call, with its level.
struct JsonLines {
    sink: fn(&[u8], &tracing::Level),
}

/// Lines waiting for the next batched write to stdout.
static PENDING: Mutex<Vec<u8>> = Mutex::new(Vec::new());
/// Held while a batch is written, so batches reach stdout in the order they were taken.
static WRITING: Mutex<()> = Mutex::new(());
/// The longest an info line waits in [`PENDING`].
const LOG_FLUSH_INTERVAL: Duration = Duration::from_millis(50);
/// Past this much pending output the logging thread writes it out itself (back-pressure
/// when stdout is slow, as with one write per line).
const LOG_PENDING_BYTES_MAX: usize = 256 * 1024;

/// Log lines go to stdout in batches: one `write` per 50 ms (or 256 KiB) instead of one per
/// line, which at ~25,000 requests/s was ~5 % of the server's CPU in system time alone.
/// Warnings and errors are written at once, with every line before them. A clean exit
/// flushes ([`flush_logs`]); a killed process loses at most the last 50 ms of info and
/// debug lines (logs are diagnostics: the audit trail lives in the database).
fn write_stdout(line: &[u8], level: &tracing::Level) {
    let pending = {
        let mut pending = PENDING.lock().unwrap_or_else(PoisonError::into_inner);
        pending.extend_from_slice(line);
        pending.len()
    };
    if pending >= LOG_PENDING_BYTES_MAX || *level <= tracing::Level::WARN {
        flush_logs();
    }
}

/// Writes every pending log line to stdout now.
pub fn flush_logs() {
    let _writing = WRITING.lock().unwrap_or_else(PoisonError::into_inner);
    let batch = std::mem::take(&mut *PENDING.lock().unwrap_or_else(PoisonError::into_inner));
    if !batch.is_empty() {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(&batch);
        let _ = out.flush();
    }
}

thread_local! {
    static LINE: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

impl<S> Layer<S> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: Context<'_, S>,
    ) {
        let mut fields = Rendered::default();
        attrs.record(&mut fields);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(fields);
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut fields = Rendered::default();
        event.record(&mut fields);
        LINE.with_borrow_mut(|line| {
            line.clear();
            line.extend_from_slice(b"{\"timestamp\":\"");
            let _ = OffsetDateTime::now_utc().format_into(line, &Rfc3339);
            line.extend_from_slice(b"\",\"level\":\"");
            line.extend_from_slice(level_name(event.metadata().level()).as_bytes());
            line.extend_from_slice(b"\",\"event\":");
            match fields.0.iter().find(|(n, _)| *n == "event") {
                Some((_, v)) => line.extend_from_slice(v.as_bytes()),
                None => line.extend_from_slice(b"\"log\""),
            }
            line.extend_from_slice(b",\"service\":\"");
            line.extend_from_slice(SERVICE_NAME.as_bytes());
            line.push(b'"');
            // Written: the base names, then every field once. The event's own fields win
            // over its spans', and an inner span's over an outer one's.
            let mut written: Vec<&str> = BASE_FIELDS.to_vec();
            let mut member = |line: &mut Vec<u8>, name: &'static str, value: &str| {
                if written.contains(&name) {
                    return;
                }
                written.push(name);
                line.push(b',');
                let _ = serde_json::to_writer(&mut *line, name);
                line.push(b':');
                line.extend_from_slice(value.as_bytes());
            };
            for (name, value) in &fields.0 {
                member(line, name, value);
            }
            let target = event.metadata().target();
            if target != "log" && !target.starts_with("trueline") {
                let json = serde_json::to_string(target).unwrap_or_default();
                member(line, "target", &json);
            }
            if let Some(scope) = ctx.event_scope(event) {
                for span in scope {
                    if let Some(span_fields) = span.extensions().get::<Rendered>() {
                        for (name, value) in &span_fields.0 {
                            member(line, name, value);
                        }
                    }
                }
            }
            member(line, "request_id", "null");
            line.extend_from_slice(b"}\n");
            (self.sink)(line, event.metadata().level());
        });
    }
}

fn level_name(level: &tracing::Level) -> &'static str {
    match *level {
        tracing::Level::ERROR => "error",
        tracing::Level::WARN => "warn",
        tracing::Level::INFO => "info",
        tracing::Level::DEBUG => "debug",
        tracing::Level::TRACE => "trace",
    }
}

/// Installs the JSON log subscriber once per process (later calls are no-ops, which keeps
/// in-process test servers from fighting over the global subscriber).
pub fn init_logging(level: &str) {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let filter = EnvFilter::try_new(level)
            .or_else(|_| EnvFilter::try_new("info"))
            .unwrap_or_default()
            // The driver's per-statement logs would drown the request lines.
            .add_directive("sqlx=warn".parse().unwrap_or_default());
        let _ = tracing_subscriber::registry()
            .with(filter)
            .with(JsonLines { sink: write_stdout })
            .try_init();
        let _ = std::thread::Builder::new()
            .name("log-flush".into())
            .spawn(|| {
                loop {
                    std::thread::sleep(LOG_FLUSH_INTERVAL);
                    flush_logs();
                }
            });
    });
}

/// Buckets for request latency: 0.5 ms to 10 s (the hot paths live in the low milliseconds).
const LATENCY_BUCKETS_S: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Buckets for batch sizes (group commits, combined deltas): powers of two up to 1024.
const BATCH_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

/// Installs the Prometheus recorder once per process and returns its handle.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS_S)
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Suffix("_batch_size".into()), BATCH_BUCKETS)
                })
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    thread_local! {
        static CAPTURED: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
    }

    fn capture(line: &[u8], _level: &tracing::Level) {
        CAPTURED.with_borrow_mut(|c| c.push(String::from_utf8_lossy(line).into_owned()));
    }

    /// The lines `f` logs, each parsed (and checked to be exactly one line).
    fn logged(f: impl FnOnce()) -> Vec<Value> {
        CAPTURED.with_borrow_mut(Vec::clear);
        let subscriber = tracing_subscriber::registry().with(JsonLines { sink: capture });
        tracing::subscriber::with_default(subscriber, f);
        CAPTURED.with_borrow(|c| {
            c.iter()
                .map(|l| {
                    assert!(l.ends_with('\n') && l.matches('\n').count() == 1, "{l:?}");
                    serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))
                })
                .collect()
        })
    }

    #[test]
    fn warnings_carry_the_request_id_when_the_level_is_warn() {
        CAPTURED.with_borrow_mut(Vec::clear);
        let subscriber = tracing_subscriber::registry()
            .with(EnvFilter::new("warn"))
            .with(JsonLines { sink: capture });
        tracing::subscriber::with_default(subscriber, || {
            let span = trueline_http::observe::request_span("r-7");
            let _in = span.enter();
            tracing::info!(event = "http.request.completed");
            tracing::error!(event = "error.db");
        });
        let lines: Vec<Value> = CAPTURED.with_borrow(|c| {
            c.iter()
                .map(|l| serde_json::from_str(l).unwrap_or_default())
                .collect()
        });
        let [line] = lines.as_slice() else {
            panic!("{lines:?}")
        };
        assert_eq!(line["event"], "error.db");
        assert_eq!(line["request_id"], "r-7");
    }

    #[test]
    fn a_line_is_flat_json_with_the_base_fields_span_fields_and_event_fields() {
        let lines = logged(|| {
            let span = tracing::info_span!("request", request_id = "r-1");
            let _in = span.enter();
            tracing::info!(event = "mutation.x.success", count = 3u64, delta = -2i64,
                ratio = 0.5, ok = true, note = %"a \"quoted\"\n\u{2028} ✓");
        });
        let [line] = lines.as_slice() else {
            panic!("{lines:?}")
        };
        assert_eq!(line["event"], "mutation.x.success");
        assert_eq!(line["level"], "info");
        assert_eq!(line["service"], SERVICE_NAME);
        assert_eq!(line["request_id"], "r-1");
        assert_eq!(line["count"], 3);
        assert_eq!(line["delta"], -2);
        assert_eq!(line["ratio"], 0.5);
        assert_eq!(line["ok"], true);
        assert_eq!(line["note"], "a \"quoted\"\n\u{2028} ✓");
        let timestamp = line["timestamp"].as_str().unwrap_or_default();
        assert!(
            OffsetDateTime::parse(timestamp, &Rfc3339).is_ok(),
            "{timestamp}"
        );
    }

    #[test]
    fn every_name_appears_once_and_the_innermost_value_wins() {
        let lines = logged(|| {
            let outer = tracing::info_span!("outer", request_id = "outer", a = 1u64);
            let _o = outer.enter();
            let inner = tracing::info_span!("inner", request_id = "inner");
            let _i = inner.enter();
            tracing::warn!(event = "e", a = 2u64, level = "shadowed", timestamp = 5u64);
            tracing::warn!("no event name");
        });
        let raw = CAPTURED.with_borrow(Clone::clone);
        for l in &raw {
            for name in ["\"request_id\"", "\"a\"", "\"level\"", "\"timestamp\""] {
                assert!(l.matches(name).count() <= 1, "{name} twice in {l}");
            }
        }
        assert_eq!(lines[0]["request_id"], "inner");
        assert_eq!(lines[0]["a"], 2);
        assert_eq!(lines[0]["level"], "warn");
        assert_eq!(lines[1]["event"], "log");
        assert_eq!(lines[1]["message"], "no event name");
        assert_eq!(lines[1]["a"], 1);
    }

    #[test]
    fn outside_a_request_the_request_id_is_null_and_foreign_targets_are_named() {
        let lines = logged(|| {
            tracing::error!(target: "hyper", event = "x", f = f64::NAN);
        });
        assert_eq!(lines[0]["request_id"], Value::Null);
        assert_eq!(lines[0]["target"], "hyper");
        assert_eq!(lines[0]["level"], "error");
        assert_eq!(lines[0]["f"], Value::Null);
    }
}
