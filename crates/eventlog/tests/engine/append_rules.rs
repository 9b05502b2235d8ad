use std::sync::{Arc, Mutex, mpsc};

use trueline_eventlog::{
    AppendError, EVENT_SIZE_DEFAULT_BYTES, EVENT_TYPE_LEN_MAX, ExpectedVersion, NewEvent, Options,
    STREAM_NAME_LEN_MAX,
};

use crate::support::{event, id, open, open_with, org, tempdir};

#[test]
fn expected_version_rules_are_enforced() {
    let dir = tempdir();
    let (log, _) = open(dir.path());
    let o = org(1);
    let wrong = |current| Err(AppendError::WrongExpectedVersion { current });
    assert_eq!(
        log.append(o, "s", ExpectedVersion::Exact(3), vec![event(1, "t", b"1")]),
        wrong(0)
    );
    log.append(o, "s", ExpectedVersion::NoStream, vec![event(1, "t", b"1")])
        .unwrap();
    assert_eq!(
        log.append(o, "s", ExpectedVersion::NoStream, vec![event(2, "t", b"2")]),
        wrong(1)
    );
    assert_eq!(
        log.append(o, "s", ExpectedVersion::Exact(0), vec![event(2, "t", b"2")]),
        wrong(1)
    );
    let r = log
        .append(o, "s", ExpectedVersion::Exact(1), vec![event(2, "t", b"2")])
        .unwrap();
    assert_eq!(r[0].stream_version, 2);
    assert_eq!(
        log.append(o, "s", ExpectedVersion::Exact(1), vec![event(3, "t", b"3")]),
        wrong(2)
    );
    let r = log
        .append(o, "s", ExpectedVersion::Any, vec![event(3, "t", b"3")])
        .unwrap();
    assert_eq!(r[0].stream_version, 3);
    // Another stream of the same org starts at version 1 but continues org positions.
    let r = log
        .append(
            o,
            "other",
            ExpectedVersion::Exact(0),
            vec![event(4, "t", b"4")],
        )
        .unwrap();
    assert_eq!(
        (r[0].stream_version, r[0].org_position, r[0].global_position),
        (1, 4, 4)
    );
    // The same stream name in another org is another stream.
    let r = log
        .append(
            org(2),
            "s",
            ExpectedVersion::NoStream,
            vec![event(5, "t", b"5")],
        )
        .unwrap();
    assert_eq!(
        (r[0].stream_version, r[0].org_position, r[0].global_position),
        (1, 1, 5)
    );
    assert_eq!(log.stream_version(o, "s"), 3);
    assert_eq!(log.stream_version(o, "missing"), 0);
}

#[test]
fn batch_is_appended_atomically_with_consecutive_versions() {
    let dir = tempdir();
    let (log, _) = open(dir.path());
    let batch: Vec<_> = (1..=5).map(|n| event(n, "t", b"{}")).collect();
    let r = log
        .append(org(1), "s", ExpectedVersion::NoStream, batch)
        .unwrap();
    assert_eq!(
        r.iter().map(|r| r.stream_version).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5]
    );
    assert_eq!(
        r.iter().map(|r| r.global_position).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5]
    );
    // A failing batch writes nothing.
    let bad = vec![event(6, "t", b"{}"), event(7, "", b"{}")];
    assert_eq!(
        log.append(org(1), "s", ExpectedVersion::Any, bad),
        Err(AppendError::EmptyEventType)
    );
    assert_eq!(log.last_global_position(), 5);
}

#[test]
fn retry_of_an_identical_batch_returns_the_originals_flagged_as_duplicates() {
    let dir = tempdir();
    let (log, _) = open(dir.path());
    let batch: Vec<_> = (1..=3).map(|n| event(n, "t", b"{\"x\":1}")).collect();
    let first = log
        .append(org(1), "s", ExpectedVersion::NoStream, batch.clone())
        .unwrap();
    log.append(
        org(1),
        "s",
        ExpectedVersion::Any,
        vec![event(10, "t", b"{}")],
    )
    .unwrap();
    // The expected version no longer holds, but a retry of a successful append succeeds.
    let again = log
        .append(org(1), "s", ExpectedVersion::NoStream, batch)
        .unwrap();
    assert_eq!(again.len(), 3);
    for (a, b) in first.iter().zip(&again) {
        assert!(!a.duplicate);
        assert!(b.duplicate);
        assert_eq!(
            (a.id, a.global_position, a.org_position),
            (b.id, b.global_position, b.org_position)
        );
        assert_eq!(a.stream_version, b.stream_version);
    }
    assert_eq!(log.last_global_position(), 4);
    // Also across a reopen (the id index comes from the checkpoint then).
    drop(log);
    let (log, _) = open(dir.path());
    let r = log
        .append(
            org(1),
            "s",
            ExpectedVersion::Any,
            vec![event(2, "t", b"{\"x\":1}")],
        )
        .unwrap();
    assert!(r[0].duplicate);
    assert_eq!(r[0].global_position, 2);
    // A different timestamp is still the same event.
    let mut e = event(3, "t", b"{\"x\":1}");
    e.timestamp_micros += 99;
    assert!(
        log.append(org(1), "s", ExpectedVersion::Any, vec![e])
            .unwrap()[0]
            .duplicate
    );
}

#[test]
fn existing_id_with_different_content_is_a_conflict() {
    let dir = tempdir();
    let (log, _) = open(dir.path());
    log.append(
        org(1),
        "s",
        ExpectedVersion::Any,
        vec![event(1, "t", b"{\"a\":1}")],
    )
    .unwrap();
    let conflict = Err(AppendError::EventIdConflict { id: id(1) });
    let cases = [
        (org(1), "s", event(1, "t", b"{\"a\":2}")),
        (org(1), "s", event(1, "u", b"{\"a\":1}")),
        (org(1), "s2", event(1, "t", b"{\"a\":1}")),
        (org(2), "s", event(1, "t", b"{\"a\":1}")),
        (
            org(1),
            "s",
            NewEvent {
                metadata: b"other".to_vec(),
                ..event(1, "t", b"{\"a\":1}")
            },
        ),
    ];
    for (o, s, e) in cases {
        assert_eq!(log.append(o, s, ExpectedVersion::Any, vec![e]), conflict);
    }
    assert_eq!(log.last_global_position(), 1);
}

#[test]
fn batch_mixing_existing_and_new_ids_is_a_conflict() {
    let dir = tempdir();
    let (log, _) = open(dir.path());
    log.append(org(1), "s", ExpectedVersion::Any, vec![event(1, "t", b"1")])
        .unwrap();
    let r = log.append(
        org(1),
        "s",
        ExpectedVersion::Any,
        vec![
            event(5, "t", b"5"),
            event(1, "t", b"1"),
            event(2, "t", b"2"),
        ],
    );
    assert_eq!(r, Err(AppendError::EventIdConflict { id: id(1) }));
    // Existing ids that are not one contiguous run in batch order are a conflict too.
    log.append(org(1), "s", ExpectedVersion::Any, vec![event(2, "t", b"2")])
        .unwrap();
    let r = log.append(
        org(1),
        "s",
        ExpectedVersion::Any,
        vec![event(2, "t", b"2"), event(1, "t", b"1")],
    );
    assert!(
        matches!(r, Err(AppendError::EventIdConflict { .. })),
        "{r:?}"
    );
    assert_eq!(log.last_global_position(), 2);
}

#[test]
fn duplicate_id_inside_one_batch_is_rejected() {
    let dir = tempdir();
    let (log, _) = open(dir.path());
    let r = log.append(
        org(1),
        "s",
        ExpectedVersion::Any,
        vec![event(1, "t", b"1"), event(1, "t", b"1")],
    );
    assert_eq!(r, Err(AppendError::DuplicateIdInBatch { id: id(1) }));
}

#[test]
fn limits_are_enforced_with_precise_errors_and_the_maximums_are_accepted() {
    let dir = tempdir();
    let (log, _) = open(dir.path());
    let o = org(1);
    let any = ExpectedVersion::Any;
    let max_name = "é".repeat(STREAM_NAME_LEN_MAX / 2);
    assert_eq!(max_name.len(), STREAM_NAME_LEN_MAX);
    log.append(o, &max_name, any, vec![event(1, "t", b"")])
        .unwrap();
    let long_name = format!("{max_name}x");
    assert_eq!(
        log.append(o, &long_name, any, vec![event(2, "t", b"")]),
        Err(AppendError::StreamNameTooLong {
            len: STREAM_NAME_LEN_MAX + 1,
            max: STREAM_NAME_LEN_MAX
        })
    );
    assert_eq!(
        log.append(o, "", any, vec![event(2, "t", b"")]),
        Err(AppendError::EmptyStreamName)
    );
    let max_type = "t".repeat(EVENT_TYPE_LEN_MAX);
    log.append(o, "s", any, vec![event(3, &max_type, b"")])
        .unwrap();
    assert_eq!(
        log.append(o, "s", any, vec![event(4, &format!("{max_type}t"), b"")]),
        Err(AppendError::EventTypeTooLong {
            len: EVENT_TYPE_LEN_MAX + 1,
            max: EVENT_TYPE_LEN_MAX
        })
    );
    // metadata (7 bytes from `event`) + payload count together.
    let payload = vec![b'x'; EVENT_SIZE_DEFAULT_BYTES - 7];
    log.append(o, "s", any, vec![event(5, "t", &payload)])
        .unwrap();
    let payload = vec![b'x'; EVENT_SIZE_DEFAULT_BYTES - 6];
    assert_eq!(
        log.append(o, "s", any, vec![event(6, "t", &payload)]),
        Err(AppendError::EventTooLarge {
            size: EVENT_SIZE_DEFAULT_BYTES + 1,
            max: EVENT_SIZE_DEFAULT_BYTES
        })
    );
    let batch: Vec<_> = (100..1100).map(|n| event(n, "t", b"")).collect();
    log.append(o, "big", any, batch).unwrap();
    let batch: Vec<_> = (2000..3001).map(|n| event(n, "t", b"")).collect();
    assert_eq!(
        log.append(o, "big", any, batch),
        Err(AppendError::BatchTooLarge {
            count: 1001,
            max: 1000
        })
    );
    assert_eq!(
        log.append(o, "s", any, vec![]),
        Err(AppendError::EmptyBatch)
    );
    assert_eq!(log.last_global_position(), 1003);
}

#[test]
fn concurrent_retries_of_the_same_batch_write_it_once() {
    let dir = tempdir();
    let (log, _) = open(dir.path());
    let log = Arc::new(log);
    let batch: Vec<_> = (1..=3).map(|n| event(n, "t", b"{}")).collect();
    let results: Vec<_> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..16)
            .map(|_| {
                let log = log.clone();
                let batch = batch.clone();
                s.spawn(move || {
                    log.append(org(1), "s", ExpectedVersion::Any, batch)
                        .unwrap()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(results.iter().filter(|r| !r[0].duplicate).count(), 1);
    for r in &results {
        assert_eq!(
            r.iter().map(|e| e.global_position).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
    }
    assert_eq!(log.last_global_position(), 3);
}

/// The writer checks a whole group's ids against the log before it starts on the group; a
/// segment that fills up mid-group publishes the first part of the group, and the retries
/// after it must then find those events in the log, not write them twice. Appends and their
/// retries are queued in the callback form so they share groups, with tiny segments so rolls
/// fall between them.
#[test]
fn a_retry_queued_in_the_same_group_after_a_roll_is_a_duplicate() {
    let dir = tempdir();
    let options = Options {
        segment_size_bytes: 4 * 1024,
        ..Options::default()
    };
    let (log, _) = open_with(dir.path(), options);
    let (tx, rx) = mpsc::channel();
    let rounds = 300u64;
    for n in 1..=rounds {
        for attempt in 0..2 {
            let tx = tx.clone();
            log.append_with(
                org(1),
                &format!("s{}", n % 7),
                ExpectedVersion::Any,
                vec![event(n, "t", &[b'x'; 150])],
                Box::new(move |r| tx.send((n, attempt, r)).unwrap()),
            );
        }
    }
    drop(tx);
    let mut positions = std::collections::HashMap::new();
    for (n, attempt, r) in rx.iter() {
        let r = r.unwrap_or_else(|e| panic!("event {n} attempt {attempt}: {e:?}"));
        assert_eq!(r[0].duplicate, attempt == 1, "event {n} attempt {attempt}");
        let first = *positions.entry(n).or_insert(r[0].global_position);
        assert_eq!(first, r[0].global_position, "event {n}: one position");
    }
    assert_eq!(positions.len() as u64, rounds);
    assert_eq!(
        log.last_global_position(),
        rounds,
        "every event written once"
    );
    assert!(
        log.storage_stats().segments > 10,
        "rolls happened between the appends"
    );
}

#[test]
fn append_with_calls_back_once_and_the_listener_sees_each_commit() {
    let dir = tempdir();
    let (log, _) = open(dir.path());
    let notices = Arc::new(Mutex::new(Vec::new()));
    let n2 = notices.clone();
    log.set_commit_listener(Arc::new(move |n| n2.lock().unwrap().push(n)));
    let (tx, rx) = mpsc::channel();
    log.append_with(
        org(1),
        "s",
        ExpectedVersion::Any,
        vec![event(1, "t", b"{}")],
        Box::new(move |r| {
            tx.send(r).unwrap();
        }),
    );
    let r = rx.recv().unwrap().unwrap();
    assert_eq!(r[0].global_position, 1);
    // Rejected up front: still exactly one callback.
    let (tx, rx) = mpsc::channel();
    log.append_with(
        org(1),
        "",
        ExpectedVersion::Any,
        vec![event(2, "t", b"{}")],
        Box::new(move |r| {
            tx.send(r).unwrap();
        }),
    );
    assert_eq!(rx.recv().unwrap(), Err(AppendError::EmptyStreamName));
    assert!(rx.recv().is_err());
    log.append(
        org(2),
        "s",
        ExpectedVersion::Any,
        vec![event(3, "t", b"{}")],
    )
    .unwrap();
    let notices = notices.lock().unwrap();
    assert_eq!(notices.len(), 2);
    assert_eq!(notices[0].last_global_position, 1);
    assert_eq!(notices[0].orgs, vec![(org(1), 1)]);
    assert_eq!(notices[1].orgs, vec![(org(2), 1)]);
}

#[test]
fn event_is_visible_to_readers_when_its_append_returns() {
    let dir = tempdir();
    let (log, _) = open(dir.path());
    for n in 1..=50 {
        let r = log
            .append(
                org(1),
                "s",
                ExpectedVersion::Any,
                vec![event(n, "t", b"{}")],
            )
            .unwrap();
        assert_eq!(
            log.get(id(n)).unwrap().unwrap().global_position,
            r[0].global_position
        );
    }
}
