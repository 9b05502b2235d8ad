//! The event-store conformance suite on the embedded engine.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod id_scope;
mod metrics;

use std::sync::Arc;
use trueline_store_conformance::event_store_suite;
use trueline_store_conformance::events::EventsFixture;
use trueline_store_eventlog::{FileEventOptions, FileEventStore};

async fn file_events() -> EventsFixture {
    let dir = tempfile::tempdir().unwrap();
    let store =
        FileEventStore::open(&dir.path().join("eventlog"), FileEventOptions::default()).unwrap();
    EventsFixture {
        events: Arc::new(store),
        guard: Box::new(dir),
    }
}

event_store_suite!(file_events);
