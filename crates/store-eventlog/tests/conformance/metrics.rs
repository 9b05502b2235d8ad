//! What the adapter counts: `eventlog_events_total` is events written, so an idempotent retry
//! that finds its events already there counts none (as on PostgreSQL, which counts new rows).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use trueline_core::ids::OrgId;
use trueline_store::events::*;
use trueline_store_conformance::events::event;
use trueline_store_eventlog::{FileEventOptions, FileEventStore};

/// Counts `eventlog_events_total` increments; every other metric goes nowhere. Installed as
/// this thread's recorder only, so the tests running beside it do not move it.
#[derive(Default)]
struct EventsCounted(Arc<Total>);

#[derive(Default)]
struct Total(AtomicU64);

impl metrics::CounterFn for Total {
    fn increment(&self, value: u64) {
        self.0.fetch_add(value, Ordering::Relaxed);
    }
    fn absolute(&self, value: u64) {
        self.0.store(value, Ordering::Relaxed);
    }
}

impl metrics::Recorder for EventsCounted {
    fn describe_counter(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_gauge(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_histogram(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn register_counter(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Counter {
        if key.name() == "eventlog_events_total" {
            metrics::Counter::from_arc(self.0.clone())
        } else {
            metrics::Counter::noop()
        }
    }
    fn register_gauge(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
        metrics::Gauge::noop()
    }
    fn register_histogram(
        &self,
        _: &metrics::Key,
        _: &metrics::Metadata<'_>,
    ) -> metrics::Histogram {
        metrics::Histogram::noop()
    }
}

#[test]
fn a_retry_that_finds_its_events_counts_none() {
    let recorder = EventsCounted::default();
    let total = recorder.0.clone();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    metrics::with_local_recorder(&recorder, || {
        runtime.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let store =
                FileEventStore::open(&dir.path().join("eventlog"), FileEventOptions::default())
                    .unwrap();
            let org = OrgId::new();
            let now = trueline_core::clock::truncate_to_micros(time::OffsetDateTime::now_utc());
            let batch = vec![event("t.a", "1"), event("t.b", "2")];
            let first = store
                .append(org, "s", ExpectedVersion::Any, batch.clone(), now)
                .await
                .unwrap();
            assert!(first.iter().all(|a| !a.duplicate));
            assert_eq!(total.0.load(Ordering::Relaxed), 2);
            let again = store
                .append(org, "s", ExpectedVersion::Any, batch, now)
                .await
                .unwrap();
            assert!(again.iter().all(|a| a.duplicate));
            assert_eq!(
                total.0.load(Ordering::Relaxed),
                2,
                "the retry wrote nothing"
            );
        });
    });
}
