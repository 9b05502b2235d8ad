use proptest::prelude::*;
use trueline_eventlog::{
    Direction, EVENT_TYPE_LEN_MAX, EventId, EventLog, ExpectedVersion, NewEvent, OrgFilter, OrgId,
    STREAM_NAME_LEN_MAX, StoredEvent,
};

use crate::support::{open, tempdir};

/// Characters that tend to break byte/char confusion: multi-byte, combining marks, line and
/// paragraph separators, NUL, BOM, emoji with modifiers.
fn tricky_char() -> impl Strategy<Value = char> {
    prop_oneof![
        any::<char>(),
        prop::sample::select(vec![
            '\u{0}',
            '\n',
            '"',
            '\\',
            '\u{301}',
            '\u{2028}',
            '\u{2029}',
            '\u{feff}',
            '🎉',
            '👍',
            '\u{1f3fd}',
            'é',
            '中',
            '\u{10ffff}',
        ]),
    ]
}

/// A non-empty string of at most `max` UTF-8 bytes (cut at a char boundary).
fn name(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(tricky_char(), 1..80).prop_map(move |cs| {
        let mut s = String::new();
        for c in cs {
            if s.len() + c.len_utf8() > max {
                break;
            }
            s.push(c);
        }
        s
    })
}

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..600),
        prop::collection::vec(tricky_char(), 0..100)
            .prop_map(|cs| cs.into_iter().collect::<String>().into_bytes()),
    ]
}

fn new_event() -> impl Strategy<Value = NewEvent> {
    (
        any::<[u8; 16]>(),
        name(EVENT_TYPE_LEN_MAX),
        any::<i64>(),
        bytes(),
        bytes(),
    )
        .prop_map(
            |(id, event_type, timestamp_micros, metadata, payload)| NewEvent {
                id: EventId(id),
                event_type,
                timestamp_micros,
                metadata,
                payload,
            },
        )
}

fn appends() -> impl Strategy<Value = Vec<(u8, String, Vec<NewEvent>)>> {
    prop::collection::vec(
        (
            0u8..3,
            name(STREAM_NAME_LEN_MAX),
            prop::collection::vec(new_event(), 1..5),
        ),
        1..8,
    )
}

fn check(log: &EventLog, written: &[(OrgId, String, NewEvent, u64)]) {
    for (org, stream, ev, pos) in written {
        let got = log.get(ev.id).unwrap().expect("event readable by id");
        let expected = StoredEvent {
            id: ev.id,
            global_position: *pos,
            org_position: got.org_position,
            org: *org,
            stream: stream.clone(),
            stream_version: got.stream_version,
            event_type: ev.event_type.clone(),
            timestamp_micros: ev.timestamp_micros,
            metadata: ev.metadata.clone(),
            payload: ev.payload.clone(),
        };
        assert_eq!(got, expected);
        let by_stream = log
            .read_stream(*org, stream, got.stream_version, Direction::Forward, 1)
            .unwrap();
        assert_eq!(by_stream[0], got);
        let by_org = log
            .read_org(*org, got.org_position - 1, 1, OrgFilter::default())
            .unwrap();
        assert_eq!(by_org[0], got);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn every_field_round_trips_exactly_before_and_after_reopen(appends in appends()) {
        let dir = tempdir();
        let (log, _) = open(dir.path());
        let mut written = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (o, stream, events) in appends {
            // Random ids may repeat across appends; keep each id once.
            let events: Vec<_> = events.into_iter().filter(|e| seen.insert(e.id)).collect();
            if events.is_empty() {
                continue;
            }
            let org = OrgId([o; 16]);
            let rec = log.append(org, &stream, ExpectedVersion::Any, events.clone()).unwrap();
            for (r, e) in rec.iter().zip(events) {
                prop_assert!(!r.duplicate);
                written.push((org, stream.clone(), e, r.global_position));
            }
        }
        check(&log, &written);
        drop(log);
        let (log, report) = open(dir.path());
        prop_assert!(report.is_clean());
        check(&log, &written);
    }
}
