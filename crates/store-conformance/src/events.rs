//! Event-store cases, run on the embedded engine and on PostgreSQL.

use std::sync::Arc;
use time::OffsetDateTime;
use trueline_core::clock::truncate_to_micros;
use trueline_core::ids::{EventId, OrgId};
use trueline_store::events::*;

/// A fresh event store (and whatever keeps it alive).
pub struct EventsFixture {
    pub events: Arc<dyn EventStore>,
    pub guard: Box<dyn Send + Sync>,
}

fn now() -> OffsetDateTime {
    truncate_to_micros(OffsetDateTime::now_utc())
}

pub fn event(event_type: &str, data: &str) -> NewEvent {
    NewEvent {
        id: EventId::new(),
        event_type: event_type.to_owned(),
        data: data.as_bytes().to_vec(),
        metadata: b"{}".to_vec(),
    }
}

async fn append(
    f: &EventsFixture,
    org: OrgId,
    stream: &str,
    events: Vec<NewEvent>,
) -> Vec<Appended> {
    f.events
        .append(org, stream, ExpectedVersion::Any, events, now())
        .await
        .expect("append")
}

fn refusal<T: std::fmt::Debug>(r: Result<T, EventStoreError>) -> AppendRefusal {
    match r {
        Err(EventStoreError::Refused(refusal)) => refusal,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

pub async fn appends_assign_gapless_positions_and_stream_versions(f: &EventsFixture) {
    let org = OrgId::new();
    let a = append(
        f,
        org,
        "cart-1",
        vec![event("added", "1"), event("added", "2")],
    )
    .await;
    let b = append(f, org, "cart-2", vec![event("added", "3")]).await;
    let c = append(f, org, "cart-1", vec![event("removed", "4")]).await;
    let positions: Vec<u64> = a.iter().chain(&b).chain(&c).map(|x| x.position).collect();
    assert_eq!(positions, [1, 2, 3, 4]);
    let versions: Vec<u64> = a
        .iter()
        .chain(&b)
        .chain(&c)
        .map(|x| x.stream_version)
        .collect();
    assert_eq!(versions, [1, 2, 1, 3]);
    assert!(a.iter().all(|x| !x.duplicate));
    let other = append(f, OrgId::new(), "cart-1", vec![event("added", "1")]).await;
    assert_eq!(
        (other[0].position, other[0].stream_version),
        (1, 1),
        "positions are per organization"
    );
}

pub async fn expected_versions_are_enforced(f: &EventsFixture) {
    let org = OrgId::new();
    let t = now();
    f.events
        .append(
            org,
            "s",
            ExpectedVersion::NoStream,
            vec![event("a", "1")],
            t,
        )
        .await
        .expect("no_stream");
    let again = f
        .events
        .append(
            org,
            "s",
            ExpectedVersion::NoStream,
            vec![event("a", "2")],
            t,
        )
        .await;
    assert_eq!(
        refusal(again),
        AppendRefusal::WrongExpectedVersion { current: 1 }
    );
    let stale = f
        .events
        .append(
            org,
            "s",
            ExpectedVersion::Exact(0),
            vec![event("a", "2")],
            t,
        )
        .await;
    assert_eq!(
        refusal(stale),
        AppendRefusal::WrongExpectedVersion { current: 1 }
    );
    f.events
        .append(
            org,
            "s",
            ExpectedVersion::Exact(1),
            vec![event("a", "2")],
            t,
        )
        .await
        .expect("exact");
    let missing = f
        .events
        .append(
            org,
            "nope",
            ExpectedVersion::Exact(3),
            vec![event("a", "2")],
            t,
        )
        .await;
    assert_eq!(
        refusal(missing),
        AppendRefusal::WrongExpectedVersion { current: 0 }
    );
    assert_eq!(
        f.events.stats(org).await.expect("stats").last_position,
        2,
        "refusals wrote nothing"
    );
}

pub async fn client_ids_make_appends_idempotent(f: &EventsFixture) {
    let org = OrgId::new();
    let batch = vec![event("a", "1"), event("b", "{\"x\":2}")];
    let first = append(f, org, "s", batch.clone()).await;
    append(f, org, "s", vec![event("c", "3")]).await;
    let again = f
        .events
        .append(org, "s", ExpectedVersion::Exact(0), batch.clone(), now())
        .await
        .expect("retry");
    assert!(again.iter().all(|x| x.duplicate));
    assert_eq!(
        again.iter().map(|x| x.position).collect::<Vec<_>>(),
        first.iter().map(|x| x.position).collect::<Vec<_>>()
    );
    let mut changed = batch[0].clone();
    changed.data = b"999".to_vec();
    assert!(matches!(
        refusal(
            f.events
                .append(org, "s", ExpectedVersion::Any, vec![changed], now())
                .await
        ),
        AppendRefusal::EventIdConflict { .. }
    ));
    let mixed = vec![batch[0].clone(), event("new", "0")];
    assert!(matches!(
        refusal(
            f.events
                .append(org, "s", ExpectedVersion::Any, mixed, now())
                .await
        ),
        AppendRefusal::EventIdConflict { .. }
    ));
    let other_stream = f
        .events
        .append(
            org,
            "t",
            ExpectedVersion::Any,
            vec![batch[0].clone()],
            now(),
        )
        .await;
    assert!(matches!(
        refusal(other_stream),
        AppendRefusal::EventIdConflict { .. }
    ));
    let twice = vec![batch[0].clone(), batch[0].clone()];
    assert!(matches!(
        refusal(
            f.events
                .append(OrgId::new(), "s", ExpectedVersion::Any, twice, now())
                .await
        ),
        AppendRefusal::DuplicateIdInBatch { .. }
    ));
    assert_eq!(f.events.stats(org).await.expect("stats").last_position, 3);
    // The run is one of the stream's versions, whatever other streams appended in between:
    // both backends answer a batch of two single appends (another stream's event between
    // them) as duplicates, and refuse it out of order.
    let org = OrgId::new();
    let (a, b) = (event("a", "1"), event("b", "2"));
    append(f, org, "s", vec![a.clone()]).await;
    append(f, org, "t", vec![event("x", "0")]).await;
    append(f, org, "s", vec![b.clone()]).await;
    let joined = f
        .events
        .append(
            org,
            "s",
            ExpectedVersion::Any,
            vec![a.clone(), b.clone()],
            now(),
        )
        .await
        .expect("a contiguous run of the stream");
    assert_eq!(
        joined
            .iter()
            .map(|x| (x.position, x.stream_version, x.duplicate))
            .collect::<Vec<_>>(),
        vec![(1, 1, true), (3, 2, true)]
    );
    assert!(matches!(
        refusal(
            f.events
                .append(org, "s", ExpectedVersion::Any, vec![b, a], now())
                .await
        ),
        AppendRefusal::EventIdConflict { .. }
    ));
}

/// A refused retry names the same event on every backend: the first (in the request's
/// order) whose content differs from the stored one; else, when some ids are new, the first
/// existing one in the request's order; else the first out of the stream's order.
pub async fn a_conflict_names_the_same_event_on_every_backend(f: &EventsFixture) {
    let org = OrgId::new();
    let (a, b) = (event("a", "1"), event("b", "2"));
    append(f, org, "s", vec![a.clone(), b.clone()]).await;
    let conflict = |r| match refusal(r) {
        AppendRefusal::EventIdConflict { id } => id,
        other => panic!("expected a conflict, got {other:?}"),
    };
    let mut changed_b = b.clone();
    changed_b.data = b"20".to_vec();
    let differs = f
        .events
        .append(
            org,
            "s",
            ExpectedVersion::Any,
            vec![a.clone(), event("new", "0"), changed_b],
            now(),
        )
        .await;
    assert_eq!(conflict(differs), b.id, "the event whose content differs");
    let mixed = f
        .events
        .append(
            org,
            "s",
            ExpectedVersion::Any,
            vec![event("new", "0"), b.clone(), a.clone()],
            now(),
        )
        .await;
    assert_eq!(
        conflict(mixed),
        b.id,
        "the first existing one, in the request's order"
    );
    let reordered = f
        .events
        .append(
            org,
            "s",
            ExpectedVersion::Any,
            vec![b.clone(), a.clone()],
            now(),
        )
        .await;
    assert_eq!(
        conflict(reordered),
        a.id,
        "the first out of the stream's order"
    );
    assert_eq!(
        f.events.stats(org).await.expect("stats").last_position,
        2,
        "refusals wrote nothing"
    );
}

pub async fn event_ids_are_scoped_to_the_organization(f: &EventsFixture) {
    let (a, b) = (OrgId::new(), OrgId::new());
    let shared = event("a", "1");
    append(f, a, "s", vec![shared.clone()]).await;
    let mut other = shared.clone();
    other.data = b"2".to_vec();
    let in_b = append(f, b, "s", vec![other]).await;
    assert!(
        !in_b[0].duplicate,
        "another organization may use the same id"
    );
    assert_eq!(
        f.events
            .event(a, shared.id)
            .await
            .expect("get")
            .expect("found")
            .data,
        b"1"
    );
    assert_eq!(
        f.events
            .event(b, shared.id)
            .await
            .expect("get")
            .expect("found")
            .data,
        b"2"
    );
    assert!(
        f.events
            .event(OrgId::new(), shared.id)
            .await
            .expect("get")
            .is_none()
    );
}

pub async fn reads_by_position_type_stream_and_direction(f: &EventsFixture) {
    let org = OrgId::new();
    for i in 1..=5 {
        let stream = if i % 2 == 0 { "even" } else { "odd" };
        let kind = if i <= 3 { "early" } else { "late" };
        append(f, org, stream, vec![event(kind, &i.to_string())]).await;
    }
    let all = f
        .events
        .events_after(org, 0, ReadLimit::events(100), &EventFilter::default())
        .await
        .expect("read");
    assert_eq!(
        all.iter().map(|e| e.position).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    let page = f
        .events
        .events_after(org, 2, ReadLimit::events(2), &EventFilter::default())
        .await
        .expect("read");
    assert_eq!(page.iter().map(|e| e.position).collect::<Vec<_>>(), [3, 4]);
    let late = EventFilter {
        event_type: Some("late".into()),
        stream: None,
    };
    assert_eq!(
        f.events
            .events_after(org, 0, ReadLimit::events(100), &late)
            .await
            .expect("read")
            .len(),
        2
    );
    let odd = EventFilter {
        event_type: None,
        stream: Some("odd".into()),
    };
    assert_eq!(
        f.events
            .events_after(org, 0, ReadLimit::events(100), &odd)
            .await
            .expect("read")
            .len(),
        3
    );
    let forward = f
        .events
        .read_stream(org, "odd", 2, ReadDirection::Forward, ReadLimit::events(10))
        .await
        .expect("read");
    assert_eq!(
        forward.iter().map(|e| e.stream_version).collect::<Vec<_>>(),
        [2, 3]
    );
    let backward = f
        .events
        .read_stream(
            org,
            "odd",
            u64::MAX,
            ReadDirection::Backward,
            ReadLimit::events(2),
        )
        .await
        .expect("read");
    assert_eq!(
        backward
            .iter()
            .map(|e| e.stream_version)
            .collect::<Vec<_>>(),
        [3, 2]
    );
    assert!(
        f.events
            .read_stream(
                org,
                "missing",
                1,
                ReadDirection::Forward,
                ReadLimit::events(10)
            )
            .await
            .expect("read")
            .is_empty()
    );
}

pub async fn unicode_payloads_round_trip_exactly(f: &EventsFixture) {
    let org = OrgId::new();
    let data = "{\"t\":\"héllo 👋🏽 e\u{301} \u{2028} \u{10FFFF} 中文\"}";
    let mut e = event("ünï✓", data);
    e.metadata = "{\"m\":\"\u{2029}\"}".as_bytes().to_vec();
    let appended = append(f, org, "strëam-✓", vec![e.clone()]).await;
    let got = f
        .events
        .event(org, e.id)
        .await
        .expect("get")
        .expect("found");
    assert_eq!(
        (
            got.data,
            got.metadata,
            got.event_type.as_str(),
            got.stream.as_str()
        ),
        (e.data, e.metadata, "ünï✓", "strëam-✓")
    );
    assert_eq!(got.position, appended[0].position);
}

pub async fn stats_count_events_bytes_and_streams(f: &EventsFixture) {
    let org = OrgId::new();
    assert_eq!(
        f.events.stats(org).await.expect("stats"),
        EventStats::default()
    );
    append(f, org, "a", vec![event("x", "1"), event("x", "22")]).await;
    append(f, org, "b", vec![event("x", "333")]).await;
    let stats = f.events.stats(org).await.expect("stats");
    assert_eq!(
        (
            stats.events,
            stats.streams,
            stats.first_position,
            stats.last_position
        ),
        (3, 2, 1, 3)
    );
    // The same figure on both backends: the embedded engine's record size (92 bytes of
    // header, then stream, type, metadata `{}` and data).
    assert_eq!(
        stats.bytes,
        (92 + 1 + 1 + 2 + 1) + (92 + 1 + 1 + 2 + 2) + (92 + 1 + 1 + 2 + 3)
    );
}

pub async fn oversized_events_are_refused(f: &EventsFixture) {
    let org = OrgId::new();
    let mut big = event("x", "");
    big.data = vec![b'1'; EVENT_BYTES_MAX_DEFAULT + 1];
    assert!(matches!(
        refusal(
            f.events
                .append(org, "s", ExpectedVersion::Any, vec![big], now())
                .await
        ),
        AppendRefusal::EventTooLarge { .. }
    ));
    assert_eq!(f.events.stats(org).await.expect("stats").last_position, 0);
}

/// An append over [`trueline_store::events::APPEND_BYTES_MAX`] in all is refused alike on
/// every backend (the embedded engine's bound was a 500 there and a 201 on PostgreSQL).
pub async fn appends_over_the_append_bound_are_refused(f: &EventsFixture) {
    let org = OrgId::new();
    let max = trueline_store::events::APPEND_BYTES_MAX;
    let each = EVENT_BYTES_MAX_DEFAULT as u64 - 200;
    let count = max / each + 1;
    let events: Vec<_> = (0..count)
        .map(|_| {
            let mut e = event("x", "");
            e.data = vec![b'1'; each as usize];
            e
        })
        .collect();
    assert!(trueline_store::events::append_stored_bytes("s", &events) > max);
    assert!(matches!(
        refusal(
            f.events
                .append(org, "s", ExpectedVersion::Any, events, now())
                .await
        ),
        AppendRefusal::AppendTooLarge { .. }
    ));
    assert_eq!(f.events.stats(org).await.expect("stats").last_position, 0);
}

/// A read stops after the event whose data and metadata reach the byte bound (at least one
/// event), on catch-up and stream reads alike.
pub async fn reads_stop_at_their_byte_bound(f: &EventsFixture) {
    let org = OrgId::new();
    let events: Vec<_> = (0..5)
        .map(|_| {
            let mut e = event("t", "");
            e.data = vec![b'1'; 1000];
            e
        })
        .collect();
    let metadata = events[0].metadata.len();
    f.events
        .append(org, "s", ExpectedVersion::Any, events, now())
        .await
        .expect("append");
    let bound = ReadLimit {
        events: 100,
        bytes: 2 * (1000 + metadata) + 1,
    };
    let after = f
        .events
        .events_after(org, 0, bound, &EventFilter::default())
        .await
        .expect("read");
    assert_eq!(
        after.iter().map(|e| e.position).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert!(bound.stopped_by_bytes(&after));
    let backward = f
        .events
        .read_stream(org, "s", u64::MAX, ReadDirection::Backward, bound)
        .await
        .expect("read");
    assert_eq!(
        backward
            .iter()
            .map(|e| e.stream_version)
            .collect::<Vec<_>>(),
        [5, 4, 3]
    );
    let tiny = ReadLimit {
        events: 100,
        bytes: 0,
    };
    let one = f
        .events
        .read_stream(org, "s", 1, ReadDirection::Forward, tiny)
        .await
        .expect("read");
    assert_eq!(one.len(), 1, "at least one event");
    let all = f
        .events
        .events_after(org, 0, ReadLimit::events(100), &EventFilter::default())
        .await
        .expect("read");
    assert_eq!(all.len(), 5);
    assert!(!ReadLimit::events(100).stopped_by_bytes(&all));
}

pub async fn concurrent_appends_leave_no_gaps_or_duplicates(f: &EventsFixture) {
    let org = OrgId::new();
    let mut tasks = Vec::new();
    for w in 0..64 {
        let events = f.events.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            for i in 0..10 {
                let stream = format!("s{}", (w + i) % 4);
                let e = event("t", &format!("{{\"w\":{w},\"i\":{i}}}"));
                let r = events
                    .append(org, &stream, ExpectedVersion::Any, vec![e.clone()], now())
                    .await
                    .expect("append");
                mine.push((e, r[0].clone(), stream));
            }
            mine
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("task"));
    }
    let mut positions: Vec<u64> = all.iter().map(|(_, r, _)| r.position).collect();
    positions.sort_unstable();
    assert_eq!(positions, (1..=640).collect::<Vec<_>>());
    for (e, r, stream) in &all {
        let got = f
            .events
            .event(org, e.id)
            .await
            .expect("get")
            .expect("readable");
        assert_eq!(
            (&got.data, got.position, &got.stream),
            (&e.data, r.position, stream)
        );
    }
    for s in 0..4 {
        let events = f
            .events
            .read_stream(
                org,
                &format!("s{s}"),
                1,
                ReadDirection::Forward,
                ReadLimit::events(1000),
            )
            .await
            .expect("read");
        let versions: Vec<u64> = events.iter().map(|e| e.stream_version).collect();
        assert_eq!(
            versions,
            (1..=versions.len() as u64).collect::<Vec<_>>(),
            "stream s{s} is gapless"
        );
    }
}

pub async fn appends_wake_subscribers(f: &EventsFixture) {
    let mut changes = f.events.changes();
    let seen = *changes.borrow_and_update();
    append(f, OrgId::new(), "s", vec![event("a", "1")]).await;
    tokio::time::timeout(std::time::Duration::from_secs(5), changes.changed())
        .await
        .expect("woken")
        .expect("open");
    assert_ne!(*changes.borrow(), seen);
}

pub async fn many_batches_are_appended_in_order_and_stop_at_an_up_front_refusal(f: &EventsFixture) {
    let org = OrgId::new();
    let batch = |stream: &str, events: Vec<NewEvent>| StreamBatch {
        stream: stream.to_owned(),
        expected: ExpectedVersion::Any,
        events,
    };
    let outcomes = f
        .events
        .append_many(
            org,
            vec![
                batch("a", vec![event("x", "1"), event("x", "2")]),
                batch("b", vec![event("x", "3")]),
                batch("a", vec![event("x", "4")]),
            ],
            now(),
        )
        .await;
    let appended: Vec<(u64, u64)> = outcomes
        .into_iter()
        .flat_map(|o| o.expect("appended"))
        .map(|a| (a.position, a.stream_version))
        .collect();
    assert_eq!(appended, [(1, 1), (2, 2), (3, 1), (4, 3)]);

    // A batch refused before it is appended stops the ones after it.
    let mut big = event("x", "");
    big.data = vec![b'1'; EVENT_BYTES_MAX_DEFAULT + 1];
    let outcomes = f
        .events
        .append_many(
            org,
            vec![
                batch("c", vec![event("x", "5")]),
                batch("c", vec![big]),
                batch("c", vec![event("x", "6")]),
            ],
            now(),
        )
        .await;
    assert_eq!(outcomes.len(), 2, "nothing after the refused batch");
    assert!(outcomes[0].is_ok());
    assert!(matches!(
        refusal(outcomes.into_iter().nth(1).expect("second")),
        AppendRefusal::EventTooLarge { .. }
    ));
    let stats = f.events.stats(org).await.expect("stats");
    assert_eq!((stats.events, stats.last_position), (5, 5));
}

/// One `#[tokio::test]` per event-store case; `$make` builds a fresh [`EventsFixture`].
#[macro_export]
macro_rules! event_store_suite {
    ($make:path $(, #[$attr:meta])*) => {
        $crate::__event_cases!($make, [$(#[$attr])*],
            appends_assign_gapless_positions_and_stream_versions,
            expected_versions_are_enforced,
            client_ids_make_appends_idempotent,
            a_conflict_names_the_same_event_on_every_backend,
            event_ids_are_scoped_to_the_organization,
            reads_by_position_type_stream_and_direction,
            unicode_payloads_round_trip_exactly,
            stats_count_events_bytes_and_streams,
            oversized_events_are_refused,
            appends_over_the_append_bound_are_refused,
            reads_stop_at_their_byte_bound,
            many_batches_are_appended_in_order_and_stop_at_an_up_front_refusal,
            concurrent_appends_leave_no_gaps_or_duplicates,
            appends_wake_subscribers,
        );
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __event_cases {
    ($make:path, $attrs:tt, $($case:ident),* $(,)?) => {$(
        $crate::__event_case!($make, $attrs, $case);
    )*};
}

#[doc(hidden)]
#[macro_export]
macro_rules! __event_case {
    ($make:path, [$(#[$attr:meta])*], $case:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        $(#[$attr])*
        async fn $case() {
            let fixture = $make().await;
            $crate::events::$case(&fixture).await;
        }
    };
}
