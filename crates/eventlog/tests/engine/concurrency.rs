use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use trueline_eventlog::{
    AppendError, Direction, EventId, ExpectedVersion, NewEvent, Options, OrgFilter, OrgId,
};

use crate::support::{Rng, assert_gapless, event, open_with, org, tempdir};

#[test]
fn sixty_four_writers_leave_gapless_positions_and_versions_and_every_ack_is_readable() {
    sixty_four_writers(Options::default());
}

#[test]
fn sixty_four_writers_with_tiny_segments_roll_correctly_under_load() {
    // About 25 events per segment: rolls, checkpoints and id merges happen mid-traffic.
    sixty_four_writers(Options {
        segment_size_bytes: 8 * 1024,
        ..Options::default()
    });
}

fn sixty_four_writers(options: Options) {
    let dir = tempdir();
    let (log, _) = open_with(dir.path(), options.clone());
    let log = Arc::new(log);
    let streams: Vec<(OrgId, String)> = (0..6)
        .map(|i| (org(1 + (i % 2) as u8), format!("stream-{i}")))
        .collect();
    type Acked = HashMap<EventId, (OrgId, String, NewEvent, u64)>;
    let acked: Arc<Mutex<Acked>> = Default::default();
    std::thread::scope(|s| {
        for t in 0..64u64 {
            let log = log.clone();
            let streams = streams.clone();
            let acked = acked.clone();
            s.spawn(move || {
                let mut rng = Rng::new(t + 1);
                for i in 0..25u64 {
                    let (o, stream) = &streams[rng.below(streams.len() as u64) as usize];
                    let current = log.stream_version(*o, stream);
                    let expected = match rng.below(4) {
                        0 => ExpectedVersion::Any,
                        1 => ExpectedVersion::Exact(current),
                        2 => ExpectedVersion::Exact(rng.below(current + 2)),
                        _ => ExpectedVersion::NoStream,
                    };
                    let n = 1 + rng.below(3);
                    let events: Vec<NewEvent> = (0..n)
                        .map(|k| {
                            let mut id = rng.bytes16();
                            id[0] = t as u8;
                            NewEvent {
                                id: EventId(id),
                                event_type: format!("type-{k}"),
                                timestamp_micros: (t * 1000 + i) as i64,
                                metadata: format!("{{\"t\":{t}}}").into_bytes(),
                                payload: vec![(t as u8).wrapping_add(i as u8); 200],
                            }
                        })
                        .collect();
                    match log.append(*o, stream, expected, events.clone()) {
                        Ok(recs) => {
                            let mut a = acked.lock().unwrap();
                            for (r, e) in recs.iter().zip(events) {
                                assert!(!r.duplicate);
                                a.insert(e.id, (*o, stream.clone(), e, r.global_position));
                            }
                        }
                        Err(AppendError::WrongExpectedVersion { .. }) => {}
                        Err(e) => panic!("unexpected append error {e}"),
                    }
                }
            });
        }
    });
    let acked = acked.lock().unwrap();
    assert!(
        acked.len() > 64,
        "too few successful appends: {}",
        acked.len()
    );
    assert_eq!(
        log.last_global_position(),
        acked.len() as u64,
        "unacknowledged events were written"
    );
    for (id, (o, stream, ev, pos)) in acked.iter() {
        let got = log.get(*id).unwrap().expect("acknowledged event readable");
        assert_eq!(
            (got.org, &got.stream, got.global_position),
            (*o, stream, *pos)
        );
        assert_eq!(
            (&got.payload, &got.metadata, &got.event_type),
            (&ev.payload, &ev.metadata, &ev.event_type)
        );
    }
    for (o, stream) in &streams {
        let evs = log
            .read_stream(*o, stream, 1, Direction::Forward, 10_000)
            .unwrap();
        assert_eq!(evs.len() as u64, log.stream_version(*o, stream));
        for (i, e) in evs.iter().enumerate() {
            assert_eq!(
                e.stream_version,
                i as u64 + 1,
                "stream version gap or duplicate"
            );
        }
    }
    assert_gapless(&log);
    // And the same after a reopen (checkpoints of many segments).
    drop(acked);
    let log = std::sync::Arc::into_inner(log).unwrap();
    drop(log);
    let (log, report) = open_with(dir.path(), options);
    assert!(report.is_clean());
    assert_gapless(&log);
}

#[test]
fn readers_polling_during_appends_never_see_a_gap() {
    let dir = tempdir();
    let (log, _) = open_with(dir.path(), Options::default());
    let log = Arc::new(log);
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    std::thread::scope(|s| {
        for r in 0..4 {
            let (log, done) = (log.clone(), done.clone());
            s.spawn(move || {
                let mut seen = 0u64;
                let mut polls = 0u64;
                while !done.load(std::sync::atomic::Ordering::Relaxed) || polls == 0 {
                    polls += 1;
                    let evs = log
                        .read_org(org(1), seen, 1000, OrgFilter::default())
                        .unwrap();
                    for e in evs {
                        assert_eq!(e.org_position, seen + 1, "reader {r} saw a gap");
                        seen = e.org_position;
                    }
                }
            });
        }
        let writers: Vec<_> = (0..16u64)
            .map(|t| {
                let log = log.clone();
                s.spawn(move || {
                    for i in 0..40u64 {
                        let n = t * 1000 + i;
                        let batch = vec![event(n * 2, "t", b"{}"), event(n * 2 + 1, "t", b"{}")];
                        log.append(org(1), &format!("s{t}"), ExpectedVersion::Any, batch)
                            .unwrap();
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    assert_eq!(log.org_stats(org(1)).last_org_position, 16 * 40 * 2);
}
