//! The adapter's organization scoping of event ids over the engine's global id index.

use std::path::Path;
use trueline_core::ids::{EventId, OrgId};
use trueline_store::events::*;
use trueline_store_conformance::events::event;
use trueline_store_eventlog::{FileEventOptions, FileEventStore, FileOpenError, ID_KEY_FILE};

fn open(dir: &Path) -> Result<FileEventStore, FileOpenError> {
    FileEventStore::open(dir, FileEventOptions::default())
}

fn now() -> time::OffsetDateTime {
    trueline_core::clock::truncate_to_micros(time::OffsetDateTime::now_utc())
}

fn xor(a: &uuid::Uuid, b: &uuid::Uuid, c: &uuid::Uuid) -> uuid::Uuid {
    let (a, b, c) = (a.as_bytes(), b.as_bytes(), c.as_bytes());
    uuid::Uuid::from_bytes(std::array::from_fn(|i| a[i] ^ b[i] ^ c[i]))
}

/// With the organization id as the mask (the first version), `id ^ mine ^ theirs` stored the
/// same bytes as the other organization's `id`: the append answered `event_id_conflict`,
/// telling the caller the event existed, and claiming the id first blocked theirs.
#[tokio::test]
async fn an_id_crafted_from_both_organization_ids_reaches_nothing_of_the_other() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).unwrap();
    let (victim, prober) = (OrgId::new(), OrgId::new());
    let theirs = event("t.secret", r#"{"n":1}"#);
    let their_id = theirs.id;
    store
        .append(victim, "s", ExpectedVersion::Any, vec![theirs], now())
        .await
        .unwrap();

    let mut crafted = event("t.probe", r#"{"n":2}"#);
    crafted.id = EventId(xor(&their_id.0, &victim.0, &prober.0));
    let appended = store
        .append(prober, "s", ExpectedVersion::Any, vec![crafted], now())
        .await
        .expect("the crafted id is a new id in the prober's organization");
    assert!(!appended[0].duplicate);

    // Claiming the victim's next id first does not block it either.
    let next = EventId::new();
    let mut claim = event("t.claim", "{}");
    claim.id = EventId(xor(&next.0, &victim.0, &prober.0));
    store
        .append(prober, "s", ExpectedVersion::Any, vec![claim], now())
        .await
        .unwrap();
    let mut theirs_next = event("t.secret", r#"{"n":3}"#);
    theirs_next.id = next;
    store
        .append(victim, "s", ExpectedVersion::Any, vec![theirs_next], now())
        .await
        .expect("the victim's own id is still theirs");

    let victims = store
        .events_after(victim, 0, ReadLimit::events(10), &EventFilter::default())
        .await
        .unwrap();
    assert_eq!(
        victims
            .iter()
            .map(|e| (e.id, e.event_type.as_str()))
            .collect::<Vec<_>>(),
        vec![(their_id, "t.secret"), (next, "t.secret")]
    );
    assert!(store.event(prober, their_id).await.unwrap().is_none());
}

#[tokio::test]
async fn ids_map_back_after_a_restart_and_a_log_without_its_key_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let (org, e) = (OrgId::new(), event("t.kept", "{}"));
    let id = e.id;
    {
        let store = open(dir.path()).unwrap();
        store
            .append(org, "s", ExpectedVersion::Any, vec![e], now())
            .await
            .unwrap();
    }
    {
        let store = open(dir.path()).unwrap();
        let found = store
            .event(org, id)
            .await
            .unwrap()
            .expect("found by its id");
        assert_eq!(found.id, id);
    }

    let key = dir.path().join(ID_KEY_FILE);
    let bytes = std::fs::read(&key).unwrap();
    std::fs::remove_file(&key).unwrap();
    let err = open(dir.path())
        .err()
        .expect("a log with events needs its key");
    assert!(matches!(err, FileOpenError::IdKey(_)), "{err}");
    assert!(err.to_string().contains("missing"), "{err}");
    assert!(!key.exists(), "no new key was made for old events");

    std::fs::write(&key, &bytes).unwrap();
    let store = open(dir.path()).unwrap();
    assert!(store.event(org, id).await.unwrap().is_some());
}

/// A log written before the key existed holds `client id XOR organization id` and has no
/// key file: it refuses to open until the operator keeps its legacy ids, and then maps them
/// as they were written (and goes on so).
#[tokio::test]
async fn a_log_from_before_the_key_opens_once_its_legacy_ids_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let org = OrgId::new();
    let client = uuid::Uuid::new_v4();
    {
        let (log, _) =
            trueline_eventlog::EventLog::open(dir.path(), trueline_eventlog::Options::default())
                .unwrap();
        log.append(
            trueline_eventlog::OrgId(*org.0.as_bytes()),
            "s",
            trueline_eventlog::ExpectedVersion::Any,
            vec![trueline_eventlog::NewEvent {
                id: trueline_eventlog::EventId(
                    xor(&client, &org.0, &uuid::Uuid::nil()).into_bytes(),
                ),
                event_type: "t.old".into(),
                timestamp_micros: 1,
                metadata: b"{}".to_vec(),
                payload: b"1".to_vec(),
            }],
        )
        .unwrap();
    }
    let refused = open(dir.path()).err().expect("no key, events: refused");
    assert!(refused.to_string().contains("keep-legacy-ids"), "{refused}");

    trueline_store_eventlog::IdScope::keep_legacy(dir.path()).unwrap();
    let store = open(dir.path()).unwrap();
    assert!(store.legacy_ids());
    let found = store
        .event(org, EventId(client))
        .await
        .unwrap()
        .expect("mapped as written");
    assert_eq!(found.event_type, "t.old");
    // A retry of that append is still recognised as the same event.
    let mut retry = event("t.old", "1");
    retry.id = EventId(client);
    let again = store
        .append(org, "s", ExpectedVersion::Any, vec![retry], now())
        .await
        .unwrap();
    assert!(again[0].duplicate);
    drop(store);
    let twice = trueline_store_eventlog::IdScope::keep_legacy(dir.path()).unwrap_err();
    assert!(twice.detail.contains("exists"), "{twice}");
}
