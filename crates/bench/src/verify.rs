//! The end-of-run checks, as pure comparisons of what the server *acknowledged* during the
//! run with what it *stores* afterwards. The workloads fetch the data; this module decides.

use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, HashSet};

/// Problems listed per check; the count says how many there were in all.
const PROBLEMS_LISTED_MAX: usize = 10;

#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct Check {
    pub name: String,
    pub passed: bool,
    pub detail: String,
    /// The first few problems (all of them are counted in `detail`).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub problems: Vec<String>,
}

impl Check {
    /// A check that passes iff `problems` is empty; `ok_detail` describes what was checked.
    pub fn from_problems(name: &str, ok_detail: String, problems: Vec<String>) -> Self {
        let passed = problems.is_empty();
        let detail = if passed {
            ok_detail
        } else {
            format!("{} problem(s); {ok_detail}", problems.len())
        };
        Self {
            name: name.to_owned(),
            passed,
            detail,
            problems: problems.into_iter().take(PROBLEMS_LISTED_MAX).collect(),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, PartialEq)]
pub struct Verification {
    pub passed: bool,
    pub checks: Vec<Check>,
}

impl Verification {
    pub fn new(checks: Vec<Check>) -> Self {
        Self {
            passed: checks.iter().all(|c| c.passed),
            checks,
        }
    }
}

/// Fails if any response of the run (warm-up included) was a 5xx. The verification's own
/// requests are not counted here: a replay that still gets a 5xx leaves its outcome unknown,
/// which fails "unknown outcomes resolved" instead.
pub fn check_no_5xx(all_status_counts: &BTreeMap<u16, u64>) -> Check {
    let server_errors: Vec<String> = all_status_counts
        .iter()
        .filter(|(status, n)| (500..600).contains(*status) && **n > 0)
        .map(|(status, n)| format!("{n} × HTTP {status}"))
        .collect();
    let total: u64 = all_status_counts.values().sum();
    Check::from_problems("no 5xx", format!("{total} responses"), server_errors)
}

/// Failed operations of the measured window against `--max-error-rate` (a fraction).
/// `answers`: the window's answers by status, for the message.
pub fn check_error_rate(failed: u64, total: u64, max_error_rate: f64, answers: &str) -> Check {
    let rate = if total == 0 {
        0.0
    } else {
        failed as f64 / total as f64
    };
    let detail = format!(
        "{failed} of {total} measured operations failed ({:.2} %; --max-error-rate {:.2} %)",
        rate * 100.0,
        max_error_rate * 100.0
    );
    let problems = if rate > max_error_rate {
        vec![format!(
            "more operations failed than allowed; answers by status: {answers}"
        )]
    } else {
        Vec::new()
    };
    Check::from_problems(
        "failed operations within --max-error-rate",
        detail,
        problems,
    )
}

/// A multiset of quantity deltas: delta → how many times.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Deltas(BTreeMap<i64, u64>);

impl Deltas {
    pub fn add(&mut self, delta: i64) {
        *self.0.entry(delta).or_default() += 1;
    }

    pub fn count(&self) -> u64 {
        self.0.values().sum()
    }

    /// In i128: a long run of large deltas must not overflow the comparison itself.
    pub fn sum(&self) -> i128 {
        self.0
            .iter()
            .map(|(&d, &n)| i128::from(d) * i128::from(n))
            .sum()
    }

    /// `+d ×n` of the deltas in `self` but not in `other` (with multiplicity).
    fn missing_from(&self, other: &Deltas) -> Vec<String> {
        self.0
            .iter()
            .filter_map(|(d, &n)| {
                let there = other.0.get(d).copied().unwrap_or(0);
                (n > there).then(|| format!("{d:+} ×{}", n - there))
            })
            .collect()
    }
}

impl FromIterator<i64> for Deltas {
    fn from_iter<I: IntoIterator<Item = i64>>(iter: I) -> Self {
        let mut deltas = Deltas::default();
        for d in iter {
            deltas.add(d);
        }
        deltas
    }
}

/// What the run was told about one item.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ItemExpectation {
    pub initial_qty: u64,
    /// The deltas answered 200.
    pub acked_deltas: Deltas,
}

/// What the server stores for that item afterwards.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ItemObservation {
    /// `GET /items/{id}` → `qty`.
    pub qty: u64,
    /// The `delta`s of the `qty_changed` records of `GET /items/{id}/history` (all pages).
    pub qty_changed_deltas: Deltas,
}

/// Problems of one item (empty: the server's state is exactly what it acknowledged).
pub fn compare_item(label: &str, want: &ItemExpectation, got: &ItemObservation) -> Vec<String> {
    let mut problems = Vec::new();
    let acked_sum = want.acked_deltas.sum();
    let expected_qty = i128::from(want.initial_qty) + acked_sum;
    if i128::from(got.qty) != expected_qty {
        problems.push(format!(
            "{label}: qty {} but initial {} + acknowledged deltas {acked_sum} = {expected_qty}",
            got.qty, want.initial_qty
        ));
    }
    let (records, acked) = (got.qty_changed_deltas.count(), want.acked_deltas.count());
    if records != acked {
        problems.push(format!(
            "{label}: {records} qty_changed history records but {acked} deltas acknowledged"
        ));
    }
    let history_sum = got.qty_changed_deltas.sum();
    if history_sum != acked_sum {
        problems.push(format!(
            "{label}: history deltas sum to {history_sum} but acknowledged deltas to {acked_sum}"
        ));
    }
    // Same count and sum can still hide a wrong record ({+3, -1} stored for {+1, +1}).
    // A lost or extra delta already failed above: say nothing twice.
    if problems.is_empty() && got.qty_changed_deltas != want.acked_deltas {
        let missing = want.acked_deltas.missing_from(&got.qty_changed_deltas);
        let unexpected = got.qty_changed_deltas.missing_from(&want.acked_deltas);
        problems.push(format!(
            "{label}: history deltas differ from the acknowledged ones (not in the history: \
             {}; never acknowledged: {})",
            first_few(&missing),
            first_few(&unexpected)
        ));
    }
    problems
}

fn first_few(items: &[String]) -> String {
    let mut text = items.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
    if items.len() > 5 {
        text.push_str(&format!(", … ({} in all)", items.len()));
    }
    text
}

/// The items the server lists against those the run created and was told about: an item
/// nobody was told of is a create applied without an acknowledgement.
pub fn compare_item_ids(expected: &HashSet<String>, listed: &[String]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut seen = HashSet::with_capacity(listed.len());
    for id in listed {
        if !seen.insert(id.as_str()) {
            problems.push(format!("item {id} is listed twice"));
        } else if !expected.contains(id) {
            problems.push(format!(
                "item {id} is listed but its creation was never acknowledged"
            ));
        }
    }
    let mut missing: Vec<&String> = expected
        .iter()
        .filter(|id| !seen.contains(id.as_str()))
        .collect();
    missing.sort();
    problems.extend(
        missing
            .into_iter()
            .map(|id| format!("item {id} was acknowledged but is not listed")),
    );
    problems
}

/// Positions of an organization's log must be 1, 2, 3, … in order, with nothing missing.
pub fn check_gapless(positions: &[u64]) -> Result<(), String> {
    for (expected, &position) in (1u64..).zip(positions) {
        if position != expected {
            return Err(if position > expected {
                format!("position {expected} is missing (the next one listed is {position})")
            } else {
                format!("position {position} listed after {}", expected - 1)
            });
        }
    }
    Ok(())
}

/// An append the server acknowledged.
#[derive(Debug, Clone, PartialEq)]
pub struct AckedEvent {
    pub id: String,
    pub position: u64,
    pub stream: String,
    pub event_type: String,
    pub data: Value,
}

/// An event as the server lists or returns it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub position: u64,
    pub stream: String,
    pub event_type: String,
    pub data: Value,
    /// Published by the server's outbox relay (metadata `"source": "outbox"`): the record of
    /// a mutation (sign-up, …), not an append of the tool's.
    pub from_outbox: bool,
}

/// Every acknowledged event must be stored at its acknowledged position, in its stream, with
/// the type and data that were sent; and every other event of the run's organization must be
/// one the server's outbox published. An append whose answer was lost is no exception: the
/// tool re-sends it with the same ids before checking, and the server answers it (200 with
/// the original position if it had been applied), so it is acknowledged by then. Only the
/// ids of re-sends that still got no usable answer are excused ([`EventCheck::unsettled`]):
/// those already fail "unknown outcomes resolved".
///
/// Fed the listed log page by page, so that neither the log nor the acknowledged events are
/// ever held as JSON (at 64 clients that took the tool to 720 MB): an acknowledged event is
/// rebuilt only when its id is listed.
#[derive(Debug, Default)]
pub struct EventCheck {
    /// Acknowledged event id → its index in acknowledgement order.
    index: HashMap<String, usize>,
    listed: Vec<bool>,
    unsettled: HashSet<String>,
    outbox_events: u64,
    problems: Vec<String>,
}

impl EventCheck {
    /// `ids`: the acknowledged events' ids, in acknowledgement order.
    pub fn new(ids: impl IntoIterator<Item = String>) -> Self {
        let index: HashMap<String, usize> =
            ids.into_iter().enumerate().map(|(i, id)| (id, i)).collect();
        let listed = vec![false; index.len()];
        EventCheck {
            index,
            listed,
            ..EventCheck::default()
        }
    }

    /// Ids of appends whose outcome stayed unknown after their re-send: they may be stored.
    pub fn unsettled(mut self, ids: impl IntoIterator<Item = String>) -> Self {
        self.unsettled.extend(ids);
        self
    }

    /// Events listed that the server's outbox published (not compared).
    pub fn outbox_events(&self) -> u64 {
        self.outbox_events
    }

    /// One event of the listed log; `acked(i)` rebuilds acknowledged event `i` (only called
    /// when `id` was acknowledged).
    pub fn listed(
        &mut self,
        id: &str,
        stored: &StoredEvent,
        acked: impl FnOnce(usize) -> AckedEvent,
    ) {
        let Some(&i) = self.index.get(id) else {
            if stored.from_outbox {
                self.outbox_events += 1;
            } else if !self.unsettled.contains(id) {
                self.problems.push(format!(
                    "event {id} is stored in {} at position {} but was never acknowledged",
                    stored.stream, stored.position
                ));
            }
            return;
        };
        self.listed[i] = true;
        let event = acked(i);
        if stored.position != event.position {
            self.problems.push(format!(
                "event {id} acknowledged at position {} is stored at {}",
                event.position, stored.position
            ));
        }
        if stored.stream != event.stream {
            self.problems.push(format!(
                "event {id} was appended to {} but is stored in {}",
                event.stream, stored.stream
            ));
        }
        if stored.event_type != event.event_type {
            self.problems.push(format!(
                "event {id} was appended as type {} but is stored as {}",
                event.event_type, stored.event_type
            ));
        }
        if !same_json(&stored.data, &event.data) {
            self.problems.push(format!(
                "event {id}: stored data differs from the sent data"
            ));
        }
    }

    /// The problems found, then every acknowledged event that was never listed (in
    /// acknowledgement order).
    pub fn finish(self) -> Vec<String> {
        let mut missing: Vec<(usize, String)> = self
            .index
            .into_iter()
            .filter(|(_, i)| !self.listed[*i])
            .map(|(id, i)| (i, id))
            .collect();
        missing.sort_unstable();
        let mut problems = self.problems;
        problems.extend(
            missing
                .into_iter()
                .map(|(_, id)| format!("event {id} was acknowledged but is not stored")),
        );
        problems
    }
}

/// JSON equality where numbers compare by value (the event log stores numbers as doubles,
/// so `5` may come back as `5.0`).
pub fn same_json(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x == y || x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same_json(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_json(v, w)))
        }
        _ => a == b,
    }
}

/// Submissions: every acknowledged submission, submitted again with other answers, must be
/// refused as `409 already_submitted`. `resubmits` holds (invite, status, code) of those second tries.
pub fn check_one_submission_per_invite(resubmits: &[(String, u16, Option<String>)]) -> Check {
    let problems = resubmits
        .iter()
        .filter(|(_, status, code)| {
            !(*status == 409 && code.as_deref() == Some("already_submitted"))
        })
        .map(|(invite, status, code)| {
            format!(
                "invite {invite}: a second submission answered {status} {}",
                code.as_deref().unwrap_or("")
            )
        })
        .collect();
    Check::from_problems(
        "one submission per invite",
        format!(
            "{} acknowledged submissions each refused a second time",
            resubmits.len()
        ),
        problems,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn want(initial_qty: u64, deltas: &[i64]) -> ItemExpectation {
        ItemExpectation {
            initial_qty,
            acked_deltas: deltas.iter().copied().collect(),
        }
    }

    fn got(qty: u64, deltas: &[i64]) -> ItemObservation {
        ItemObservation {
            qty,
            qty_changed_deltas: deltas.iter().copied().collect(),
        }
    }

    #[test]
    fn an_item_matching_its_acknowledgements_has_no_problems() {
        let problems = compare_item(
            "item a",
            &want(1_000, &[-5, 1, -3]),
            &got(993, &[1, -3, -5]),
        );
        assert!(problems.is_empty(), "{problems:?}");
    }

    #[test]
    fn a_lost_acknowledged_delta_is_reported_on_qty_count_and_sum() {
        let problems = compare_item("item a", &want(10, &[3, 2]), &got(12, &[2]));
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].contains("qty 12 but initial 10 + acknowledged deltas 5 = 15"));
    }

    #[test]
    fn an_applied_but_unacknowledged_delta_is_caught_too() {
        // The server changed the quantity without telling the client: also a lie.
        assert_eq!(compare_item("x", &want(10, &[]), &got(9, &[-1])).len(), 3);
    }

    #[test]
    fn history_records_with_the_right_count_and_sum_but_wrong_deltas_are_caught() {
        // {+3, -1} stored for the acknowledged {+1, +1}: qty, count and sum all agree.
        let problems = compare_item("item a", &want(10, &[1, 1]), &got(12, &[3, -1]));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].contains("not in the history: +1 ×2; never acknowledged: -1 ×1, +3 ×1"),
            "{problems:?}"
        );
    }

    #[test]
    fn deltas_are_a_multiset_with_an_overflow_free_sum() {
        let d: Deltas = [i64::MAX, i64::MAX, -1].into_iter().collect();
        assert_eq!(d.count(), 3);
        assert_eq!(d.sum(), 2 * i128::from(i64::MAX) - 1);
        let same: Deltas = [-1, i64::MAX, i64::MAX].into_iter().collect();
        assert_eq!(d, same);
    }

    #[test]
    fn listed_items_must_be_exactly_the_acknowledged_ones() {
        let expected: HashSet<String> = ["a", "b", "c"].map(str::to_owned).into();
        let listed = ["a", "b", "c"].map(str::to_owned);
        assert!(compare_item_ids(&expected, &listed).is_empty());
        let listed = ["a", "b", "x", "b"].map(str::to_owned);
        let problems = compare_item_ids(&expected, &listed);
        assert_eq!(
            problems,
            vec![
                "item x is listed but its creation was never acknowledged".to_owned(),
                "item b is listed twice".to_owned(),
                "item c was acknowledged but is not listed".to_owned(),
            ]
        );
    }

    #[test]
    fn the_error_rate_check_fails_only_above_the_allowed_fraction() {
        let ok = check_error_rate(0, 1000, 0.0, "200: 1000");
        assert!(ok.passed, "{ok:?}");
        assert!(
            ok.detail
                .contains("0 of 1000 measured operations failed (0.00 %")
        );
        let failed = check_error_rate(950, 1000, 0.0, "200: 50  429: 950");
        assert!(!failed.passed);
        assert!(failed.problems[0].contains("429: 950"), "{failed:?}");
        assert!(check_error_rate(10, 1000, 0.01, "").passed);
        assert!(!check_error_rate(11, 1000, 0.01, "").passed);
        assert!(check_error_rate(0, 0, 0.0, "").passed);
    }

    #[test]
    fn gapless_positions_start_at_one_and_step_by_one() {
        assert!(check_gapless(&[]).is_ok());
        assert!(check_gapless(&[1, 2, 3]).is_ok());
        assert!(
            check_gapless(&[1, 2, 4])
                .unwrap_err()
                .contains("position 3 is missing")
        );
        assert!(
            check_gapless(&[2, 3])
                .unwrap_err()
                .contains("position 1 is missing")
        );
        assert!(
            check_gapless(&[1, 2, 2])
                .unwrap_err()
                .contains("listed after 2")
        );
    }

    fn acked(id: &str, position: u64, data: Value) -> AckedEvent {
        AckedEvent {
            id: id.into(),
            position,
            stream: "s".into(),
            event_type: "bench.appended".into(),
            data,
        }
    }

    fn stored(position: u64, stream: &str, data: Value) -> StoredEvent {
        StoredEvent {
            position,
            stream: stream.into(),
            event_type: "bench.appended".into(),
            data,
            from_outbox: false,
        }
    }

    #[test]
    fn acknowledged_events_must_be_stored_where_and_as_acknowledged() {
        let acked = [
            acked("a", 1, json!({"n": 5, "text": "héllo"})),
            acked("b", 2, json!({"n": 6})),
            acked("c", 3, json!(1)),
            acked("d", 4, json!(2)),
        ];
        let stored = [
            ("a", stored(1, "s", json!({"text": "héllo", "n": 5.0}))),
            ("b", stored(7, "t", json!({"n": 7}))),
            (
                "d",
                StoredEvent {
                    event_type: "other.type".into(),
                    ..stored(4, "s", json!(2))
                },
            ),
        ];
        let mut check = EventCheck::new(acked.iter().map(|e| e.id.clone()));
        for (id, event) in &stored {
            check.listed(id, event, |i| acked[i].clone());
        }
        let problems = check.finish();
        assert_eq!(problems.len(), 5, "{problems:?}");
        assert!(problems[0].contains("acknowledged at position 2 is stored at 7"));
        assert!(
            problems[3].contains("appended as type bench.appended but is stored as other.type")
        );
        assert!(problems[4].contains("event c was acknowledged but is not stored"));
    }

    #[test]
    fn unacknowledged_events_fail_unless_the_outbox_published_them_or_their_resend_is_unsettled() {
        let mut check = EventCheck::new(["a".to_owned()]).unsettled(["lost".to_owned()]);
        let a = acked("a", 1, json!(1));
        check.listed("a", &stored(1, "s", json!(1)), |_| a.clone());
        let outbox = StoredEvent {
            from_outbox: true,
            event_type: "organization.created".into(),
            ..stored(2, "organization", json!({}))
        };
        check.listed("signup", &outbox, |_| unreachable!());
        check.listed("lost", &stored(3, "s", json!(2)), |_| unreachable!());
        check.listed("phantom", &stored(4, "s", json!(3)), |_| unreachable!());
        assert_eq!(check.outbox_events(), 1);
        let problems = check.finish();
        assert_eq!(
            problems,
            vec![
                "event phantom is stored in s at position 4 but was never acknowledged".to_owned()
            ]
        );
    }

    #[test]
    fn json_numbers_compare_by_value_but_nothing_else_is_loosened() {
        assert!(same_json(&json!([1, {"a": 2}]), &json!([1.0, {"a": 2.0}])));
        assert!(!same_json(&json!({"a": 1}), &json!({"a": 1, "b": 2})));
        assert!(!same_json(&json!("1"), &json!(1)));
        assert!(!same_json(&json!([1, 2]), &json!([2, 1])));
    }

    #[test]
    fn a_single_5xx_anywhere_in_the_run_fails_the_check() {
        assert!(check_no_5xx(&BTreeMap::from([(200, 10), (400, 3)])).passed);
        let failed = check_no_5xx(&BTreeMap::from([(200, 10), (503, 1)]));
        assert!(!failed.passed);
        assert_eq!(failed.problems, vec!["1 × HTTP 503".to_owned()]);
    }

    #[test]
    fn a_second_submission_must_be_refused_as_already_submitted() {
        let ok = [("i1".to_owned(), 409, Some("already_submitted".to_owned()))];
        assert!(check_one_submission_per_invite(&ok).passed);
        let accepted_twice = [
            ("i1".to_owned(), 409, Some("already_submitted".to_owned())),
            ("i2".to_owned(), 200, None),
        ];
        let check = check_one_submission_per_invite(&accepted_twice);
        assert!(!check.passed);
        assert!(check.problems[0].contains("invite i2"));
    }

    #[test]
    fn a_verification_passes_only_if_every_check_does() {
        let good = Check::from_problems("a", "fine".into(), vec![]);
        let bad = Check::from_problems("b", "checked 3".into(), vec!["x".into()]);
        assert!(Verification::new(vec![good.clone()]).passed);
        assert!(!Verification::new(vec![good, bad.clone()]).passed);
        assert_eq!(bad.detail, "1 problem(s); checked 3");
    }
}
