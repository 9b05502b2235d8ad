use trueline_eventlog::{Direction, ExpectedVersion, OrgFilter};

use crate::support::{event, id, open, org, tempdir};

#[test]
fn org_reads_follow_org_positions_and_apply_filters() {
    let dir = tempdir();
    let (log, _) = open(dir.path());
    for n in 1..=30u64 {
        let stream = if n % 3 == 0 { "a" } else { "b" };
        let ty = if n % 2 == 0 { "even" } else { "odd" };
        let o = if n % 5 == 0 { org(2) } else { org(1) };
        log.append(o, stream, ExpectedVersion::Any, vec![event(n, ty, b"{}")])
            .unwrap();
    }
    let all = log.read_org(org(1), 0, 100, OrgFilter::default()).unwrap();
    assert_eq!(all.len(), 24);
    assert!(
        all.iter()
            .enumerate()
            .all(|(i, e)| e.org_position == i as u64 + 1 && e.org == org(1))
    );
    let page = log.read_org(org(1), 10, 5, OrgFilter::default()).unwrap();
    assert_eq!(
        page.iter().map(|e| e.org_position).collect::<Vec<_>>(),
        vec![11, 12, 13, 14, 15]
    );
    let even = log
        .read_org(
            org(1),
            0,
            100,
            OrgFilter {
                event_type: Some("even"),
                stream: None,
            },
        )
        .unwrap();
    assert!(even.iter().all(|e| e.event_type == "even"));
    assert_eq!(even.len(), 12);
    let a_odd = log
        .read_org(
            org(1),
            3,
            100,
            OrgFilter {
                event_type: Some("odd"),
                stream: Some("a"),
            },
        )
        .unwrap();
    let expected: Vec<u64> = (1..=30u64)
        .filter(|n| n % 3 == 0 && n % 2 == 1 && n % 5 != 0)
        .collect();
    let got: Vec<u64> = a_odd.iter().map(|e| e.global_position).collect();
    assert_eq!(
        got,
        expected.into_iter().filter(|p| *p > 3).collect::<Vec<_>>()
    );
    assert!(
        log.read_org(
            org(1),
            0,
            10,
            OrgFilter {
                event_type: Some("nope"),
                stream: None
            }
        )
        .unwrap()
        .is_empty()
    );
    assert!(
        log.read_org(org(9), 0, 10, OrgFilter::default())
            .unwrap()
            .is_empty()
    );
    assert!(
        log.read_org(org(1), 24, 10, OrgFilter::default())
            .unwrap()
            .is_empty()
    );
}

#[test]
fn stream_reads_go_forward_and_backward_from_a_version() {
    let dir = tempdir();
    let (log, _) = open(dir.path());
    let batch: Vec<_> = (1..=10)
        .map(|n| event(n, "t", format!("{n}").as_bytes()))
        .collect();
    log.append(org(1), "s", ExpectedVersion::NoStream, batch)
        .unwrap();
    let fwd = log
        .read_stream(org(1), "s", 4, Direction::Forward, 3)
        .unwrap();
    assert_eq!(
        fwd.iter().map(|e| e.stream_version).collect::<Vec<_>>(),
        vec![4, 5, 6]
    );
    let back = log
        .read_stream(org(1), "s", 4, Direction::Backward, 10)
        .unwrap();
    assert_eq!(
        back.iter().map(|e| e.stream_version).collect::<Vec<_>>(),
        vec![4, 3, 2, 1]
    );
    let end = log
        .read_stream(org(1), "s", u64::MAX, Direction::Backward, 2)
        .unwrap();
    assert_eq!(
        end.iter().map(|e| e.stream_version).collect::<Vec<_>>(),
        vec![10, 9]
    );
    assert!(
        log.read_stream(org(1), "s", 11, Direction::Forward, 2)
            .unwrap()
            .is_empty()
    );
    assert!(
        log.read_stream(org(1), "x", 1, Direction::Forward, 2)
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        log.read_stream(org(1), "s", 0, Direction::Forward, 1)
            .unwrap()[0]
            .payload,
        b"1"
    );
}

#[test]
fn stats_count_events_bytes_and_streams() {
    let dir = tempdir();
    let (log, _) = open(dir.path());
    log.append(
        org(1),
        "a",
        ExpectedVersion::Any,
        vec![event(1, "t", b"{}"), event(2, "t", b"{}")],
    )
    .unwrap();
    log.append(
        org(1),
        "b",
        ExpectedVersion::Any,
        vec![event(3, "t", b"{}")],
    )
    .unwrap();
    let s = log.org_stats(org(1));
    assert_eq!(
        (
            s.events,
            s.streams,
            s.first_org_position,
            s.last_org_position
        ),
        (3, 2, 1, 3)
    );
    assert!(s.bytes > 3 * 92);
    assert_eq!(log.org_stats(org(7)), Default::default());
    let st = log.storage_stats();
    assert_eq!(
        (
            st.segments,
            st.events,
            st.first_global_position,
            st.last_global_position
        ),
        (1, 3, 1, 3)
    );
    assert!(st.index_memory_bytes > 0);
    assert!(log.get(id(99)).unwrap().is_none());
}

#[test]
fn event_log_is_send_and_sync_so_it_can_be_shared_with_arc() {
    fn shareable<T: Send + Sync + 'static>() {}
    shareable::<trueline_eventlog::EventLog>();
    shareable::<std::sync::Arc<trueline_eventlog::EventLog>>();
}
