//! Inventory cases: items, guarded deltas, batches, history, listing, concurrency.

use crate::fixtures::*;
use trueline_core::DomainError;
use trueline_core::accounts::Role;
use trueline_core::error::LineRejection;
use trueline_core::ids::{ItemId, OrgId};
use trueline_core::inventory::{Delta, ItemName, Quantity, Sku};
use trueline_core::validation::name_key;
use trueline_store::{
    Actor, HistoryKind, Item, ItemFilter, ItemPatch, ItemSort, NewItem, PageRequest, QtyChange,
    StoreError,
};

fn domain<T: std::fmt::Debug>(result: Result<T, StoreError>) -> DomainError {
    match result {
        Err(StoreError::Domain(e)) => e,
        other => panic!("expected a domain error, got {other:?}"),
    }
}

pub fn delta(d: i64) -> Delta {
    Delta::new(d).expect("valid delta")
}

pub fn new_item(name: &str, qty: u64) -> NewItem {
    NewItem {
        id: ItemId::new(),
        name: ItemName::parse(name).expect("valid name"),
        sku: None,
        qty: Quantity::new(qty).expect("valid qty"),
    }
}

/// An organization with an owner acting in it.
pub async fn owner_actor(f: &Fixture, email: &str) -> Actor {
    let s = sign_up(f, email).await;
    actor(s.organization.id, s.user.id, Role::Owner)
}

pub async fn create(f: &Fixture, actor: &Actor, name: &str, qty: u64) -> Item {
    f.store
        .create_item(actor, new_item(name, qty), None)
        .await
        .expect("create item")
}

/// Rows that any mutation writes (items, history records, outbox rows): a refused one must
/// leave all of them unchanged.
pub(crate) async fn trail(f: &Fixture) -> (i64, i64, i64) {
    (
        f.count("items").await,
        f.count("item_history").await,
        f.count("outbox").await,
    )
}

/// (sum of deltas, number of records, versions) over the item's whole history.
async fn history_sum(f: &Fixture, org: OrgId, item: ItemId) -> (i64, usize, Vec<u64>) {
    let mut records = Vec::new();
    let mut after = None;
    loop {
        let page = f
            .store
            .history(org, item, PageRequest { limit: 200, after })
            .await
            .expect("history");
        records.extend(page.items);
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    let sum = records.iter().map(|r| r.delta).sum();
    (
        sum,
        records.len(),
        records.iter().map(|r| r.version).collect(),
    )
}

pub async fn items_are_created_with_history_and_outbox_in_one_transaction(f: &Fixture) {
    let a = owner_actor(f, "ann@example.com").await;
    let before = trail(f).await;
    let mut new = new_item("  Milk ", 7);
    new.sku = Some(Sku::parse("MLK-1").expect("valid"));
    let item = f.store.create_item(&a, new, None).await.expect("create");
    assert_eq!(
        (
            item.name.as_str(),
            item.sku.as_deref(),
            item.qty,
            item.version
        ),
        ("Milk", Some("MLK-1"), 7, 1)
    );
    assert_eq!(item.created_by, a.user_id);
    assert_eq!(trail(f).await, (before.0 + 1, before.1 + 1, before.2 + 1));
    let history = f
        .store
        .history(
            a.org_id,
            item.id,
            PageRequest {
                limit: 10,
                after: None,
            },
        )
        .await
        .expect("history");
    let record = &history.items[0];
    assert_eq!(
        (record.kind, record.delta, record.qty_after, record.version),
        (HistoryKind::Created, 7, 7, 1)
    );
    assert_eq!(record.request_id, a.request_id);
    assert_eq!(
        f.store.item(a.org_id, item.id).await.expect("get"),
        Some(item)
    );
}

pub async fn names_are_unique_per_organization_case_insensitively(f: &Fixture) {
    let a = owner_actor(f, "ann@example.com").await;
    let b = owner_actor(f, "bob@example.com").await;
    create(f, &a, "Milk", 1).await;
    let before = trail(f).await;
    let taken = f.store.create_item(&a, new_item("MILK", 2), None).await;
    assert!(matches!(domain(taken), DomainError::NameTaken { .. }));
    assert_eq!(trail(f).await, before, "a refused create writes nothing");
    create(f, &b, "milk", 3).await;
    let eggs = create(f, &a, "Eggs", 1).await;
    let patch = ItemPatch {
        name: Some(ItemName::parse("milk").expect("valid")),
        sku: None,
    };
    let renamed = f.store.update_item(&a, eggs.id, Some(1), patch, None).await;
    assert!(matches!(domain(renamed), DomainError::NameTaken { .. }));
}

/// Names that render alike are one name: a precomposed `é` and `e` with a combining accent,
/// `ß` and `SS` (Unicode canonical caseless matching, `validation::name_key`).
pub async fn names_equal_under_unicode_normalization_and_case_folding_collide(f: &Fixture) {
    let a = owner_actor(f, "ann@example.com").await;
    create(f, &a, "Caf\u{e9}", 1).await;
    create(f, &a, "Stra\u{df}e", 1).await;
    let before = trail(f).await;
    for taken in ["Cafe\u{301}", "CAF\u{c9}", "STRASSE", "strasse"] {
        let refused = f.store.create_item(&a, new_item(taken, 2), None).await;
        assert!(
            matches!(domain(refused), DomainError::NameTaken { .. }),
            "{taken:?} is taken"
        );
    }
    assert_eq!(trail(f).await, before, "refused creates write nothing");
    // Compatibility forms are other names.
    create(f, &a, "x\u{b2}", 1).await;
    create(f, &a, "x2", 1).await;
}

/// Rows written under the earlier key rule (plain lowercase, no normalization) get today's
/// keys when the store migrates: what migration 10 (SQLite) / 14 (PostgreSQL) lists in
/// `unicode_rekeys`. Simulated here by writing the old keys back and listing every row.
pub async fn keys_of_the_earlier_rule_are_recomputed_after_migrating(f: &Fixture) {
    let a = owner_actor(f, "ann@example.com").await;
    let nfd = create(f, &a, "Cafe\u{301}", 1).await;
    let strasse = create(f, &a, "Stra\u{df}e", 1).await;
    sign_up(f, "jos\u{e9}@example.com").await;
    let old_keys = [
        "UPDATE items SET name_key = 'cafe\u{301}' WHERE name = 'Cafe\u{301}'",
        "UPDATE items SET name_key = 'stra\u{df}e' WHERE name = 'Stra\u{df}e'",
        "UPDATE users SET email = 'jose\u{301}@example.com' WHERE email = 'jos\u{e9}@example.com'",
    ];
    for sql in old_keys {
        assert_eq!(f.raw.execute(sql).await, Ok(1), "{sql}");
    }
    // Under the old keys `STRASSE` was another name: now its key is the one `Straße` gets.
    create(f, &a, "STRASSE", 1).await;
    for sql in [
        "INSERT INTO unicode_rekeys (table_name, row_id) SELECT 'items', id FROM items",
        "INSERT INTO unicode_rekeys (table_name, row_id) SELECT 'users', id FROM users",
    ] {
        f.raw.execute(sql).await.expect("list the rows");
    }
    assert!(f.store.migrate_up().await.expect("migrate").is_empty());
    assert_eq!(
        f.count("unicode_rekeys").await,
        1,
        "every listed row done but the conflicting one, listed for the next start"
    );
    assert!(f.store.migrate_up().await.expect("again").is_empty());
    assert_eq!(
        f.count("unicode_rekeys").await,
        1,
        "still there, still refused"
    );
    let has = |sql: &'static str| async move { f.raw.scalar(sql).await };
    assert_eq!(
        has("SELECT count(*) FROM items WHERE name_key = 'caf\u{e9}'").await,
        1,
        "the decomposed name has the composed key"
    );
    assert_eq!(
        has("SELECT count(*) FROM items WHERE name_key = 'stra\u{df}e'").await,
        1,
        "the key another row holds is left as it was"
    );
    assert_eq!(
        has("SELECT count(*) FROM users WHERE email = 'jos\u{e9}@example.com'").await,
        1,
        "the email is composed again"
    );
    let refused = f
        .store
        .create_item(&a, new_item("CAF\u{c9}", 2), None)
        .await;
    assert!(matches!(domain(refused), DomainError::NameTaken { .. }));
    assert_eq!(
        f.store
            .item(a.org_id, nfd.id)
            .await
            .expect("get")
            .map(|i| i.name),
        Some("Cafe\u{301}".to_owned()),
        "the name itself is kept as it was typed"
    );
    // The row left with its old key pages exactly once in name order, both ways (its cursor
    // carries the stored key), and takes an edit that keeps its name.
    for sort in [ItemSort::NameAsc, ItemSort::NameDesc] {
        let filter = ItemFilter {
            name_contains: None,
            min_qty: None,
            max_qty: None,
            sort,
        };
        let (mut seen, mut after) = (Vec::new(), None);
        loop {
            let page = f
                .store
                .items(a.org_id, &filter, PageRequest { limit: 1, after })
                .await
                .expect("page");
            seen.extend(page.items.iter().map(|i| i.id));
            assert!(seen.len() <= 3, "{sort:?}: a row came back");
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        assert_eq!(seen.len(), 3, "{sort:?}: every item once");
    }
    let patch = ItemPatch {
        name: None,
        sku: Some(Some(Sku::parse("S-1").expect("valid"))),
    };
    let edited = f
        .store
        .update_item(&a, strasse.id, None, patch, None)
        .await
        .expect("an edit keeping the name is no rename");
    assert_eq!(edited.name_key, "stra\u{df}e");
    // Sending the same name again (a client that always sends every field) is no rename
    // either: the stored key stays, and no conflict with the other row's key is raised.
    let patch = ItemPatch {
        name: Some(ItemName::parse("Stra\u{df}e").expect("valid")),
        sku: Some(Some(Sku::parse("S-2").expect("valid"))),
    };
    let edited = f
        .store
        .update_item(&a, strasse.id, None, patch, None)
        .await
        .expect("the same name sent again is no rename");
    assert_eq!(
        (edited.name_key.as_str(), edited.sku.as_deref()),
        ("stra\u{df}e", Some("S-2"))
    );
}

pub async fn guarded_deltas_refuse_negative_and_overflow_and_change_nothing(f: &Fixture) {
    let a = owner_actor(f, "ann@example.com").await;
    let item = create(f, &a, "Milk", 1).await;
    let before = trail(f).await;
    let refused = f.store.adjust_qty(&a, item.id, delta(-2), None).await;
    assert_eq!(
        domain(refused),
        DomainError::InsufficientQuantity {
            item_id: item.id,
            current: 1,
            delta: -2
        }
    );
    let max = create(f, &a, "Max", Quantity::MAX.get()).await;
    let before_max = trail(f).await;
    let overflow = f.store.adjust_qty(&a, max.id, delta(1), None).await;
    assert!(
        matches!(domain(overflow), DomainError::QuantityOverflow { current, .. } if current == Quantity::MAX.get())
    );
    assert_eq!(trail(f).await, before_max);
    assert_eq!(before.0 + 1, before_max.0);
    let ok = f
        .store
        .adjust_qty(&a, item.id, delta(-1), None)
        .await
        .expect("to zero");
    assert_eq!((ok.qty, ok.version), (0, 2));
    assert_eq!(history_sum(f, a.org_id, item.id).await.0, 0);
}

pub async fn another_organizations_item_is_not_found_and_unchanged(f: &Fixture) {
    let a = owner_actor(f, "ann@example.com").await;
    let b = owner_actor(f, "bob@example.com").await;
    let item = create(f, &a, "Milk", 5).await;
    let before = trail(f).await;
    assert_eq!(
        domain(f.store.adjust_qty(&b, item.id, delta(1), None).await),
        DomainError::NotFound("item")
    );
    assert_eq!(
        domain(
            f.store
                .update_item(&b, item.id, None, ItemPatch::default(), None)
                .await
        ),
        DomainError::NotFound("item")
    );
    assert!(
        !f.store
            .delete_item(&b, item.id)
            .await
            .expect("delete is idempotent")
    );
    assert!(
        f.store
            .item(b.org_id, item.id)
            .await
            .expect("get")
            .is_none()
    );
    let history = f
        .store
        .history(
            b.org_id,
            item.id,
            PageRequest {
                limit: 10,
                after: None,
            },
        )
        .await;
    assert_eq!(domain(history), DomainError::NotFound("item"));
    assert_eq!(trail(f).await, before);
    assert_eq!(
        f.store
            .item(a.org_id, item.id)
            .await
            .expect("get")
            .expect("exists")
            .qty,
        5
    );
}

pub async fn updates_check_the_expected_version(f: &Fixture) {
    let a = owner_actor(f, "ann@example.com").await;
    let item = create(f, &a, "Milk", 5).await;
    let patch = ItemPatch {
        name: Some(ItemName::parse("Oat milk").expect("valid")),
        sku: None,
    };
    let stale = f
        .store
        .update_item(&a, item.id, Some(7), patch.clone(), None)
        .await;
    assert_eq!(
        domain(stale),
        DomainError::VersionMismatch {
            expected: 7,
            current: 1
        }
    );
    let renamed = f
        .store
        .update_item(&a, item.id, Some(1), patch, None)
        .await
        .expect("rename");
    assert_eq!((renamed.name.as_str(), renamed.version), ("Oat milk", 2));
    let sku = ItemPatch {
        name: None,
        sku: Some(Some(Sku::parse("OAT").expect("valid"))),
    };
    let updated = f
        .store
        .update_item(&a, item.id, None, sku, None)
        .await
        .expect("sku");
    assert_eq!((updated.sku.as_deref(), updated.version), (Some("OAT"), 3));
    let clear = ItemPatch {
        name: None,
        sku: Some(None),
    };
    assert_eq!(
        f.store
            .update_item(&a, item.id, Some(3), clear, None)
            .await
            .expect("clear")
            .sku,
        None
    );
    let kinds: Vec<HistoryKind> = f
        .store
        .history(
            a.org_id,
            item.id,
            PageRequest {
                limit: 10,
                after: None,
            },
        )
        .await
        .expect("history")
        .items
        .iter()
        .map(|r| r.kind)
        .collect();
    assert_eq!(
        kinds,
        [
            HistoryKind::Created,
            HistoryKind::Renamed,
            HistoryKind::Updated,
            HistoryKind::Updated
        ]
    );
}

pub async fn deletes_are_idempotent_and_keep_history(f: &Fixture) {
    let a = owner_actor(f, "ann@example.com").await;
    let item = create(f, &a, "Milk", 5).await;
    f.store
        .adjust_qty(&a, item.id, delta(3), None)
        .await
        .expect("add");
    assert!(f.store.delete_item(&a, item.id).await.expect("delete"));
    let before = trail(f).await;
    assert!(
        !f.store
            .delete_item(&a, item.id)
            .await
            .expect("delete again")
    );
    assert_eq!(
        trail(f).await,
        before,
        "deleting an absent item changes nothing"
    );
    assert!(
        f.store
            .item(a.org_id, item.id)
            .await
            .expect("get")
            .is_none()
    );
    let (sum, count, versions) = history_sum(f, a.org_id, item.id).await;
    assert_eq!(
        (sum, count, versions),
        (0, 3, vec![1, 2, 3]),
        "created +5, +3, deleted -8"
    );
    // Past its end, a deleted item's history is an empty page; an id that never had any is
    // not found, with or without a cursor.
    let past = f
        .store
        .history(
            a.org_id,
            item.id,
            PageRequest {
                limit: 10,
                after: Some(3),
            },
        )
        .await
        .expect("past the end");
    assert!(past.items.is_empty());
    for after in [None, Some(1)] {
        let unknown = f
            .store
            .history(a.org_id, ItemId::new(), PageRequest { limit: 10, after })
            .await;
        assert!(
            matches!(unknown, Err(StoreError::Domain(DomainError::NotFound(_)))),
            "{after:?}: {unknown:?}"
        );
    }
    create(f, &a, "milk", 1).await;
}

pub async fn batches_are_all_or_nothing_and_list_every_failing_line(f: &Fixture) {
    let a = owner_actor(f, "ann@example.com").await;
    let milk = create(f, &a, "Milk", 2).await;
    let eggs = create(f, &a, "Eggs", 1).await;
    let before = trail(f).await;
    let lines = [
        QtyChange {
            item_id: milk.id,
            delta: delta(-1),
        },
        QtyChange {
            item_id: eggs.id,
            delta: delta(-2),
        },
        QtyChange {
            item_id: ItemId::new(),
            delta: delta(1),
        },
        QtyChange {
            item_id: milk.id,
            delta: delta(-2),
        },
    ];
    let refused = domain(f.store.adjust_batch(&a, None, &lines, None).await);
    let DomainError::AdjustmentsRejected(rejections) = refused else {
        panic!("{refused:?}")
    };
    let indexes: Vec<usize> = rejections
        .iter()
        .map(|LineRejection { index, .. }| *index)
        .collect();
    assert_eq!(
        indexes,
        [1, 2, 3],
        "line 3 fails against the running qty (2-1-2)"
    );
    assert_eq!(trail(f).await, before);
    let lines = [
        QtyChange {
            item_id: milk.id,
            delta: delta(-1),
        },
        QtyChange {
            item_id: eggs.id,
            delta: delta(4),
        },
        QtyChange {
            item_id: milk.id,
            delta: delta(-1),
        },
    ];
    let items = f
        .store
        .adjust_batch(&a, Some("stocktake".into()), &lines, None)
        .await
        .expect("batch");
    assert_eq!(
        items.iter().map(|i| (i.id, i.qty)).collect::<Vec<_>>(),
        [(milk.id, 0), (eggs.id, 5)]
    );
    assert_eq!(trail(f).await, (before.0, before.1 + 3, before.2 + 3));
    let history = f
        .store
        .history(
            a.org_id,
            milk.id,
            PageRequest {
                limit: 10,
                after: None,
            },
        )
        .await
        .expect("h");
    assert_eq!(
        history.items.last().expect("record").reason.as_deref(),
        Some("stocktake")
    );
}

pub async fn crossing_batches_do_not_deadlock(f: &Fixture) {
    let a = owner_actor(f, "ann@example.com").await;
    let x = create(f, &a, "X", 1_000).await;
    let y = create(f, &a, "Y", 1_000).await;
    let mut tasks = Vec::new();
    for i in 0..16 {
        let store = f.store.clone();
        let a = a.clone();
        let lines = if i % 2 == 0 {
            vec![
                QtyChange {
                    item_id: x.id,
                    delta: delta(-1),
                },
                QtyChange {
                    item_id: y.id,
                    delta: delta(1),
                },
            ]
        } else {
            vec![
                QtyChange {
                    item_id: y.id,
                    delta: delta(-1),
                },
                QtyChange {
                    item_id: x.id,
                    delta: delta(1),
                },
            ]
        };
        tasks.push(tokio::spawn(async move {
            for _ in 0..10 {
                store
                    .adjust_batch(&a, None, &lines, None)
                    .await
                    .expect("no deadlock, no refusal");
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    let x = f.store.item(a.org_id, x.id).await.expect("get").expect("x");
    let y = f.store.item(a.org_id, y.id).await.expect("get").expect("y");
    assert_eq!(x.qty + y.qty, 2_000);
    assert_eq!(x.version, 1 + 160);
}

pub async fn concurrent_deltas_never_lose_updates_or_go_negative(f: &Fixture) {
    let a = owner_actor(f, "ann@example.com").await;
    let items: Vec<Item> = vec![create(f, &a, "A", 3).await, create(f, &a, "B", 0).await];
    let mut tasks = Vec::new();
    for t in 0..32u64 {
        let store = f.store.clone();
        let a = a.clone();
        let ids: Vec<ItemId> = items.iter().map(|i| i.id).collect();
        tasks.push(tokio::spawn(async move {
            let mut accepted: Vec<(ItemId, i64)> = Vec::new();
            let mut rng = t
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            for _ in 0..25 {
                rng = rng
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let id = ids[(rng >> 33) as usize % ids.len()];
                let d = ((rng >> 40) % 5) as i64 - 2;
                let d = if d == 0 { 1 } else { d };
                match store.adjust_qty(&a, id, delta(d), None).await {
                    Ok(item) => {
                        assert!(item.qty <= 1_000);
                        accepted.push((id, d));
                    }
                    Err(StoreError::Domain(DomainError::InsufficientQuantity { .. })) => {}
                    Err(e) => panic!("unexpected error {e:?}"),
                }
            }
            accepted
        }));
    }
    let mut accepted = Vec::new();
    for t in tasks {
        accepted.extend(t.await.expect("task"));
    }
    for item in &items {
        let sum: i64 = accepted
            .iter()
            .filter(|(id, _)| *id == item.id)
            .map(|(_, d)| d)
            .sum();
        let count = accepted.iter().filter(|(id, _)| *id == item.id).count();
        let now = f
            .store
            .item(a.org_id, item.id)
            .await
            .expect("get")
            .expect("exists");
        assert_eq!(now.qty as i64, item.qty as i64 + sum, "no lost update");
        let (history_sum, records, versions) = history_sum(f, a.org_id, item.id).await;
        assert_eq!(history_sum, now.qty as i64);
        assert_eq!(
            records,
            count + 1,
            "one record per accepted delta plus created"
        );
        assert_eq!(
            versions,
            (1..=records as u64).collect::<Vec<_>>(),
            "versions are gapless"
        );
    }
    let negative = f
        .raw
        .scalar("SELECT count(*) FROM item_history WHERE qty_after < 0")
        .await;
    assert_eq!(negative, 0);
}

pub async fn listings_filter_sort_and_page_without_gaps(f: &Fixture) {
    let a = owner_actor(f, "ann@example.com").await;
    let other = owner_actor(f, "bob@example.com").await;
    create(f, &other, "Milk of another org", 1).await;
    let names = [
        "Milk",
        "oat milk",
        "Eggs",
        "Bread",
        "MILKSHAKE",
        "Flour",
        "Sugar",
    ];
    for (i, name) in names.iter().enumerate() {
        create(f, &a, name, (i as u64 * 7) % 5).await;
    }
    let all = |sort, q: Option<&str>, min, max| ItemFilter {
        name_contains: q.map(str::to_owned),
        min_qty: min,
        max_qty: max,
        sort,
    };
    for sort in [
        ItemSort::NameAsc,
        ItemSort::NameDesc,
        ItemSort::QtyAsc,
        ItemSort::QtyDesc,
        ItemSort::CreatedAsc,
        ItemSort::CreatedDesc,
    ] {
        let filter = all(sort, None, None, None);
        let mut seen: Vec<Item> = Vec::new();
        let mut after = None;
        loop {
            let page = f
                .store
                .items(a.org_id, &filter, PageRequest { limit: 2, after })
                .await
                .expect("page");
            seen.extend(page.items);
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        assert_eq!(seen.len(), names.len(), "{sort:?}: every item exactly once");
        let mut expected = seen.clone();
        expected.sort_by(|x, y| {
            let key = match sort {
                ItemSort::NameAsc | ItemSort::NameDesc => name_key(&x.name).cmp(&name_key(&y.name)),
                ItemSort::QtyAsc | ItemSort::QtyDesc => x.qty.cmp(&y.qty),
                ItemSort::CreatedAsc | ItemSort::CreatedDesc => x.created_at.cmp(&y.created_at),
            }
            .then(x.id.cmp(&y.id));
            if matches!(
                sort,
                ItemSort::NameDesc | ItemSort::QtyDesc | ItemSort::CreatedDesc
            ) {
                key.reverse()
            } else {
                key
            }
        });
        assert_eq!(seen, expected, "{sort:?}");
    }
    let milk = f
        .store
        .items(
            a.org_id,
            &all(ItemSort::NameAsc, Some("milk"), None, None),
            PageRequest {
                limit: 50,
                after: None,
            },
        )
        .await
        .expect("q");
    let found: Vec<&str> = milk.items.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(found, ["Milk", "MILKSHAKE", "oat milk"]);
    let ranged = f
        .store
        .items(
            a.org_id,
            &all(ItemSort::QtyAsc, None, Some(2), Some(3)),
            PageRequest {
                limit: 50,
                after: None,
            },
        )
        .await
        .expect("range");
    assert!(!ranged.items.is_empty() && ranged.items.iter().all(|i| (2..=3).contains(&i.qty)));
}

pub async fn the_schema_refuses_negative_quantities_and_history_rewrites(f: &Fixture) {
    let a = owner_actor(f, "ann@example.com").await;
    let item = create(f, &a, "Milk", 1).await;
    for statement in [
        "UPDATE items SET qty = -1",
        "UPDATE items SET qty = 9007199254740992",
        "UPDATE items SET name = ''",
        "UPDATE item_history SET delta = 100",
        "DELETE FROM item_history",
        "UPDATE items SET version = 0",
    ] {
        assert!(
            f.raw.execute(statement).await.is_err(),
            "{statement} must be refused"
        );
    }
    assert_eq!(
        f.store
            .item(a.org_id, item.id)
            .await
            .expect("get")
            .expect("exists"),
        item
    );
    assert_eq!(f.count("item_history").await, 1);
}

pub async fn outbox_rows_exist_exactly_for_committed_changes(f: &Fixture) {
    let a = owner_actor(f, "ann@example.com").await;
    let start = f.count("outbox").await;
    assert_eq!(start, 1, "signup wrote accounts.organization.created");
    let item = create(f, &a, "Milk", 1).await;
    f.store
        .adjust_qty(&a, item.id, delta(2), None)
        .await
        .expect("ok");
    let _ = f.store.adjust_qty(&a, item.id, delta(-10), None).await;
    let patch = ItemPatch {
        name: Some(ItemName::parse("Oat").expect("valid")),
        sku: None,
    };
    f.store
        .update_item(&a, item.id, None, patch, None)
        .await
        .expect("rename");
    f.store.delete_item(&a, item.id).await.expect("delete");
    let types = [
        ("accounts.organization.created", 1),
        ("inventory.item.created", 1),
        ("inventory.item.qty_changed", 1),
        ("inventory.item.updated", 1),
        ("inventory.item.deleted", 1),
    ];
    for (event_type, expected) in types {
        let n = f
            .raw
            .scalar(&format!(
                "SELECT count(*) FROM outbox WHERE event_type = '{event_type}'"
            ))
            .await;
        assert_eq!(n, expected, "{event_type}");
    }
    assert_eq!(f.count("outbox").await, 5);
    let member = sign_up(f, "bob@example.com").await;
    let email = trueline_core::accounts::Email::parse(&member.user.email).expect("valid");
    f.store
        .add_member(&a, &email, Role::Viewer, None)
        .await
        .expect("add");
    let n = f
        .raw
        .scalar("SELECT count(*) FROM outbox WHERE event_type = 'accounts.member.added'")
        .await;
    assert_eq!(n, 1);
}

pub fn job(a: &Actor, item: ItemId, d: i64, key: Option<(&str, u8)>) -> trueline_store::DeltaJob {
    trueline_store::DeltaJob {
        actor: a.clone(),
        item_id: item,
        delta: delta(d),
        idempotency: key.map(|(key, print)| trueline_store::InlineIdempotency {
            scope: trueline_store::IdempotencyScope::new(a.org_id, a.user_id, key.to_owned()),
            fingerprint: [print; 32],
            locked_until: a.now + time::Duration::minutes(1),
            render: std::sync::Arc::new(|item: &Item| trueline_store::StoredResponse {
                status: 200,
                headers: vec![],
                body: item.qty.to_string().into_bytes(),
            }),
        }),
    }
}

pub async fn combined_deltas_apply_in_order_and_refuse_individually(f: &Fixture) {
    use trueline_store::DeltaOutcome;
    let a = owner_actor(f, "ann@example.com").await;
    let x = create(f, &a, "X", 2).await;
    let y = create(f, &a, "Y", 0).await;
    let before = trail(f).await;
    let jobs = vec![
        job(&a, x.id, -1, Some(("k1", 1))),
        job(&a, y.id, -1, None),
        job(&a, x.id, -2, None),
        job(&a, x.id, 5, Some(("k1", 1))),
        job(&a, ItemId::new(), 1, None),
        job(&a, x.id, 3, Some(("k2", 2))),
        job(&a, y.id, 1, Some(("k2", 9))),
    ];
    let outcomes = f.store.apply_deltas(&jobs).await.expect("batch");
    let summary: Vec<String> = outcomes
        .iter()
        .map(|o| match o {
            DeltaOutcome::Applied(item) => format!("applied {}", item.qty),
            DeltaOutcome::Replayed(r) => format!("replayed {}", String::from_utf8_lossy(&r.body)),
            DeltaOutcome::Refused(e) => format!(
                "refused {}",
                match e {
                    DomainError::InsufficientQuantity { .. } => "insufficient",
                    DomainError::NotFound(_) => "not_found",
                    DomainError::IdempotencyKeyReused => "reused",
                    _ => "other",
                }
            ),
        })
        .collect();
    assert_eq!(
        summary,
        [
            "applied 1",            // x: 2 - 1
            "refused insufficient", // y: 0 - 1
            "refused insufficient", // x: 1 - 2, against the running quantity
            "replayed 1",           // same key, same request: the stored response
            "refused not_found",
            "applied 4",      // x: 1 + 3
            "refused reused", // k2 again with another request
        ]
    );
    assert_eq!(
        f.store
            .item(a.org_id, x.id)
            .await
            .expect("get")
            .expect("x")
            .qty,
        4
    );
    let after = trail(f).await;
    assert_eq!(
        (after.1 - before.1, after.2 - before.2),
        (2, 2),
        "one history record and event per applied delta"
    );
    let completed = f
        .raw
        .scalar("SELECT count(*) FROM idempotency_keys WHERE state = 'completed'")
        .await;
    let pending = f
        .raw
        .scalar("SELECT count(*) FROM idempotency_keys WHERE state = 'pending'")
        .await;
    assert_eq!(
        (completed, pending),
        (2, 0),
        "refused deltas leave no key behind"
    );
}

fn summarize(outcomes: &[trueline_store::DeltaOutcome]) -> Vec<String> {
    use trueline_store::DeltaOutcome;
    outcomes
        .iter()
        .map(|o| match o {
            DeltaOutcome::Applied(item) => format!("applied {}", item.qty),
            DeltaOutcome::Replayed(r) => format!("replayed {}", String::from_utf8_lossy(&r.body)),
            DeltaOutcome::Refused(e) => format!(
                "refused {}",
                match e {
                    DomainError::InsufficientQuantity { .. } => "insufficient",
                    DomainError::QuantityOverflow { .. } => "overflow",
                    DomainError::NotFound(_) => "not_found",
                    DomainError::IdempotencyKeyReused => "reused",
                    DomainError::IdempotencyKeyInUse => "in_use",
                    _ => "other",
                }
            ),
        })
        .collect()
}

async fn key_state(f: &Fixture, key: &str) -> String {
    let n = f
        .raw
        .scalar(&format!(
            "SELECT count(*) FROM idempotency_keys WHERE key = '{key}' AND state = 'completed'"
        ))
        .await;
    let p = f
        .raw
        .scalar(&format!(
            "SELECT count(*) FROM idempotency_keys WHERE key = '{key}' AND state = 'pending'"
        ))
        .await;
    match (n, p) {
        (1, 0) => "completed".into(),
        (0, 1) => "pending".into(),
        (0, 0) => "absent".into(),
        other => format!("{other:?}"),
    }
}

pub async fn combined_deltas_honour_keys_of_earlier_requests(f: &Fixture) {
    let a = owner_actor(f, "ann@example.com").await;
    let b = owner_actor(f, "bea@example.com").await;
    let x = create(f, &a, "X", 10).await;
    let foreign = create(f, &b, "Foreign", 5).await;
    let first = f
        .store
        .apply_deltas(&[job(&a, x.id, -1, Some(("done", 1)))])
        .await
        .expect("first batch");
    assert_eq!(summarize(&first), ["applied 9"]);
    let scope =
        |key: &str| trueline_store::IdempotencyScope::new(a.org_id, a.user_id, key.to_owned());
    let minute = time::Duration::minutes(1);
    for (key, print, locked_until) in [
        ("busy", 2, a.now + minute),
        ("stale", 3, a.now - minute),
        ("stale-refused", 4, a.now - minute),
        ("stale-corrected", 6, a.now - minute),
    ] {
        let claim = f
            .store
            .claim(&scope(key), &[print; 32], a.now - minute * 2, locked_until)
            .await
            .expect("claim");
        assert_eq!(claim, trueline_store::Claim::Acquired);
    }
    let jobs = vec![
        job(&a, x.id, -1, Some(("done", 1))),
        job(&a, x.id, -1, Some(("busy", 2))),
        job(&a, x.id, -1, Some(("stale", 3))),
        job(&a, x.id, -100, Some(("stale-refused", 4))),
        job(&a, foreign.id, -1, None),
        job(&a, x.id, -100, Some(("retry", 5))),
        job(&a, x.id, 2, Some(("retry", 5))),
        job(&a, x.id, 2, Some(("retry", 5))),
        job(&a, x.id, 1, Some(("stale-corrected", 16))),
    ];
    let outcomes = f.store.apply_deltas(&jobs).await.expect("batch");
    assert_eq!(
        summarize(&outcomes),
        [
            "replayed 9",           // completed by the first batch
            "refused in_use",       // its claim is still locked
            "applied 8",            // an expired claim is taken over
            "refused insufficient", // and a refused one is dropped
            "refused not_found",    // another organization's item
            "refused insufficient",
            "applied 10", // the same key after its refusal: a new request
            "replayed 10",
            "applied 11", // an expired claim of another request: taken over all the same
        ]
    );
    let mut state = Vec::new();
    for key in [
        "done",
        "busy",
        "stale",
        "stale-refused",
        "retry",
        "stale-corrected",
    ] {
        state.push(key_state(f, key).await);
    }
    assert_eq!(
        state,
        [
            "completed",
            "pending",
            "completed",
            "absent",
            "completed",
            "completed"
        ]
    );
    // The taken-over key is the new request's: it replays for its body, not the dead one's.
    let later = a.now + minute;
    for (print, expected) in [(16, "replay"), (6, "mismatch")] {
        let claim = f
            .store
            .claim(&scope("stale-corrected"), &[print; 32], later, later)
            .await
            .expect("claim");
        let got = match claim {
            trueline_store::Claim::Replay(_) => "replay",
            trueline_store::Claim::Mismatch => "mismatch",
            _ => "other",
        };
        assert_eq!(got, expected);
    }
    let item = f.store.item(a.org_id, x.id).await.expect("get").expect("x");
    assert_eq!((item.qty, item.version), (11, 5));
    assert_eq!(
        history_sum(f, a.org_id, x.id).await,
        (11, 5, vec![1, 2, 3, 4, 5])
    );
    let untouched = f
        .store
        .item(b.org_id, foreign.id)
        .await
        .expect("get")
        .expect("foreign");
    assert_eq!((untouched.qty, untouched.version), (5, 1));
    let events = f
        .raw
        .scalar("SELECT count(*) FROM outbox WHERE event_type = 'inventory.item.qty_changed'")
        .await;
    assert_eq!(events, 4);
}

/// Batches handed out one after the other: the run asks for the next only once the previous
/// one's outcome is back, and ends when none is ready.
pub struct QueuedBatches {
    pub queued: std::collections::VecDeque<Vec<trueline_store::DeltaJob>>,
    pub outcomes: Vec<Result<Vec<String>, String>>,
    handed_out: usize,
}

impl QueuedBatches {
    pub fn new(batches: Vec<Vec<trueline_store::DeltaJob>>) -> Self {
        QueuedBatches {
            queued: batches.into(),
            outcomes: Vec::new(),
            handed_out: 0,
        }
    }
}

impl trueline_store::DeltaBatches for QueuedBatches {
    fn next_ready(&mut self) -> Option<Vec<trueline_store::DeltaJob>> {
        assert_eq!(
            self.outcomes.len(),
            self.handed_out,
            "asked for a batch before the previous one's outcome"
        );
        let next = self.queued.pop_front()?;
        self.handed_out += 1;
        Some(next)
    }

    fn done(&mut self, outcome: Result<Vec<trueline_store::DeltaOutcome>, StoreError>) {
        self.outcomes
            .push(outcome.map(|o| summarize(&o)).map_err(|e| e.to_string()));
    }
}

/// A run of batches: each its own transaction, in order (a later batch sees what an earlier
/// one applied, a key completed earlier replays), every outcome handed back.
pub async fn a_run_of_combined_batches_applies_each_in_order(f: &Fixture) {
    let a = owner_actor(f, "ann@example.com").await;
    let x = create(f, &a, "X", 1).await;
    let mut batches = QueuedBatches::new(vec![
        vec![job(&a, x.id, -1, Some(("k1", 1))), job(&a, x.id, -1, None)],
        vec![job(&a, x.id, 5, Some(("k1", 1))), job(&a, x.id, 2, None)],
        vec![job(&a, x.id, -3, Some(("k2", 2)))],
    ]);
    f.store.apply_delta_batches(&mut batches).await;
    assert_eq!(
        batches.outcomes,
        [
            Ok(vec![
                "applied 0".to_owned(),
                "refused insufficient".to_owned()
            ]),
            Ok(vec!["replayed 0".to_owned(), "applied 2".to_owned()]),
            Ok(vec!["refused insufficient".to_owned()]),
        ]
    );
    let item = f.store.item(a.org_id, x.id).await.expect("get").expect("x");
    assert_eq!((item.qty, item.version), (2, 3));
    assert_eq!(key_state(f, "k1").await, "completed");
    assert_eq!(key_state(f, "k2").await, "absent");
    // Nothing ready: nothing runs.
    let mut none = QueuedBatches::new(vec![]);
    f.store.apply_delta_batches(&mut none).await;
    assert!(none.outcomes.is_empty());
}

/// A batch that fails half-way (here its outbox table is gone, so the event insert fails
/// after the item's update and history record) changes nothing, and leaves the writer
/// usable: no transaction stays open, and the same request applies once the table is back.
pub async fn a_combined_batch_that_fails_half_way_changes_nothing(f: &Fixture) {
    let a = owner_actor(f, "ann@example.com").await;
    let x = create(f, &a, "X", 5).await;
    let before = trail(f).await;
    f.raw
        .execute("ALTER TABLE outbox RENAME TO outbox_away")
        .await
        .expect("rename");
    let failed = f
        .store
        .apply_deltas(&[job(&a, x.id, -1, Some(("k", 1))), job(&a, x.id, -1, None)])
        .await;
    assert!(failed.is_err(), "{failed:?}");
    f.raw
        .execute("ALTER TABLE outbox_away RENAME TO outbox")
        .await
        .expect("rename back");
    assert_eq!(trail(f).await, before, "no item, history record or event");
    let item = f.store.item(a.org_id, x.id).await.expect("get").expect("x");
    assert_eq!((item.qty, item.version), (5, 1));
    assert_eq!(key_state(f, "k").await, "absent");
    let outcomes = f
        .store
        .apply_deltas(&[job(&a, x.id, -1, Some(("k", 1)))])
        .await
        .expect("batch");
    assert_eq!(summarize(&outcomes), ["applied 4"]);
    assert_eq!(key_state(f, "k").await, "completed");
}

/// More jobs than one multi-row statement holds: every delta, record, event and key lands.
pub async fn large_combined_batches_apply_every_delta(f: &Fixture) {
    let a = owner_actor(f, "ann@example.com").await;
    let mut items = Vec::new();
    for name in ["P", "Q", "R"] {
        items.push(create(f, &a, name, 0).await);
    }
    let keys: Vec<String> = (0..1200).map(|i| format!("key-{i}")).collect();
    let jobs: Vec<_> = (0..1200)
        .map(|i| {
            let key = (i % 2 == 0).then(|| (keys[i].as_str(), 7));
            job(&a, items[i % 3].id, 1, key)
        })
        .collect();
    let outcomes = f.store.apply_deltas(&jobs).await.expect("batch");
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, trueline_store::DeltaOutcome::Applied(_)))
    );
    for item in &items {
        let (sum, records, versions) = history_sum(f, a.org_id, item.id).await;
        assert_eq!((sum, records), (400, 401));
        assert_eq!(versions, (1..=401).collect::<Vec<u64>>());
        let now = f
            .store
            .item(a.org_id, item.id)
            .await
            .expect("get")
            .expect("item");
        assert_eq!((now.qty, now.version), (400, 401));
    }
    let completed = f
        .raw
        .scalar("SELECT count(*) FROM idempotency_keys WHERE state = 'completed'")
        .await;
    assert_eq!(completed, 600);
    let events = f
        .raw
        .scalar("SELECT count(*) FROM outbox WHERE event_type = 'inventory.item.qty_changed'")
        .await;
    assert_eq!(events, 1200);
}

/// Two combined batches with no item in common, each holding changes of organizations A and
/// B in the opposite order: their outbox rows take per-organization locks at commit
/// (PostgreSQL), which must be taken in one order whatever the batch's, or the two wait for
/// each other until the database aborts one (40P01, a 503 for every request in it).
pub async fn combined_batches_of_two_organizations_in_opposite_orders_do_not_deadlock(f: &Fixture) {
    use trueline_store::DeltaOutcome;
    const ROUNDS: usize = 40;
    let a = owner_actor(f, "ann@example.com").await;
    let b = owner_actor(f, "bob@example.com").await;
    let (a1, a2) = (create(f, &a, "A1", 0).await, create(f, &a, "A2", 0).await);
    let (b1, b2) = (create(f, &b, "B1", 0).await, create(f, &b, "B2", 0).await);
    for _ in 0..ROUNDS {
        let first = [job(&a, a1.id, 1, None), job(&b, b1.id, 1, None)];
        let second = [job(&b, b2.id, 1, None), job(&a, a2.id, 1, None)];
        let (one, two) = tokio::join!(f.store.apply_deltas(&first), f.store.apply_deltas(&second));
        for outcomes in [one.expect("first batch"), two.expect("second batch")] {
            assert!(
                outcomes
                    .iter()
                    .all(|o| matches!(o, DeltaOutcome::Applied(_))),
                "{outcomes:?}"
            );
        }
    }
    for (actor, item) in [(&a, &a1), (&a, &a2), (&b, &b1), (&b, &b2)] {
        let now = f
            .store
            .item(actor.org_id, item.id)
            .await
            .expect("get")
            .expect("exists");
        assert_eq!(now.qty, ROUNDS as u64);
    }
}
