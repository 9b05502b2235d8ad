//! Logs and metrics.
//!
//! Logs are one JSON object per line on stdout with the base fields of CONVENTIONS.md:
//! `timestamp`, `level`, `event`, `service`, `request_id` (from the request span), then the
//! event's own fields. A dedicated layer (rather than tracing-subscriber's JSON format, which
//! nests fields and spans) keeps every line flat and greppable: `jq 'select(.event == …)'`.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde_json::{Map, Value};
use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::OnceLock;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

pub const SERVICE_NAME: &str = "trueline";

/// Collects an event's or span's fields as JSON values.
#[derive(Default)]
struct JsonFields(Map<String, Value>);

impl Visit for JsonFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let mut text = String::new();
        let _ = write!(text, "{value:?}");
        self.0.insert(field.name().to_owned(), Value::from(text));
    }
}

/// Writes each event as one flat JSON line.
struct JsonLines;

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
        let mut fields = JsonFields::default();
        attrs.record(&mut fields);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(fields);
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut fields = JsonFields::default();
        event.record(&mut fields);
        let mut line = Map::new();
        let now = OffsetDateTime::now_utc()
            .format(&Rfc3339)
            .unwrap_or_default();
        line.insert("timestamp".into(), Value::from(now));
        line.insert(
            "level".into(),
            Value::from(event.metadata().level().as_str().to_lowercase()),
        );
        let name = fields
            .0
            .remove("event")
            .unwrap_or_else(|| Value::from("log"));
        line.insert("event".into(), name);
        line.insert("service".into(), Value::from(SERVICE_NAME));
        // Span fields (request_id, …), innermost last so it wins.
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                if let Some(span_fields) = span.extensions().get::<JsonFields>() {
                    for (k, v) in &span_fields.0 {
                        line.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        line.entry("request_id").or_insert(Value::Null);
        if event.metadata().target() != "log" && !event.metadata().target().starts_with("trueline")
        {
            line.insert("target".into(), Value::from(event.metadata().target()));
        }
        for (k, v) in fields.0 {
            line.insert(k, v);
        }
        let mut bytes = serde_json::to_vec(&Value::Object(line)).unwrap_or_default();
        bytes.push(b'\n');
        let _ = std::io::stdout().lock().write_all(&bytes);
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
            .with(JsonLines)
            .try_init();
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
