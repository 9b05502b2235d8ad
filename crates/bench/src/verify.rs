//! The end-of-run checks, as pure comparisons of what the server *acknowledged* during the
//! run with what it *stores* afterwards. The workloads fetch the data; this module decides.

use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};

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

/// Fails if any response of the run (warm-up and verification replays included) was a 5xx.
pub fn check_no_5xx(all_status_counts: &BTreeMap<u16, u64>) -> Check {
    let server_errors: Vec<String> = all_status_counts
        .iter()
        .filter(|(status, n)| (500..600).contains(*status) && **n > 0)
        .map(|(status, n)| format!("{n} × HTTP {status}"))
        .collect();
    let total: u64 = all_status_counts.values().sum();
    Check::from_problems("no 5xx", format!("{total} responses"), server_errors)
}

/// What the run was told about one item.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ItemExpectation {
    pub initial_qty: u64,
    /// Sum of the deltas answered 200.
    pub acked_delta_sum: i64,
    /// Number of deltas answered 200.
    pub acked_count: u64,
}

/// What the server stores for that item afterwards.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ItemObservation {
    /// `GET /items/{id}` → `qty`.
    pub qty: u64,
    /// `qty_changed` records in `GET /items/{id}/history` (all pages).
    pub qty_changed_records: u64,
    /// The sum of their `delta`s.
    pub qty_changed_delta_sum: i64,
}

/// Problems of one item (empty: the server's state is exactly what it acknowledged).
pub fn compare_item(label: &str, want: ItemExpectation, got: ItemObservation) -> Vec<String> {
    let mut problems = Vec::new();
    let expected_qty = i128::from(want.initial_qty) + i128::from(want.acked_delta_sum);
    if i128::from(got.qty) != expected_qty {
        problems.push(format!(
            "{label}: qty {} but initial {} + acknowledged deltas {} = {expected_qty}",
            got.qty, want.initial_qty, want.acked_delta_sum
        ));
    }
    if got.qty_changed_records != want.acked_count {
        problems.push(format!(
            "{label}: {} qty_changed history records but {} deltas acknowledged",
            got.qty_changed_records, want.acked_count
        ));
    }
    if got.qty_changed_delta_sum != want.acked_delta_sum {
        problems.push(format!(
            "{label}: history deltas sum to {} but acknowledged deltas to {}",
            got.qty_changed_delta_sum, want.acked_delta_sum
        ));
    }
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
    pub data: Value,
}

/// An event as the server lists or returns it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub position: u64,
    pub stream: String,
    pub data: Value,
}

/// Every acknowledged event must be stored at its acknowledged position, in its stream, with
/// the data that was sent. Fed the listed log page by page, so that neither the log nor the
/// acknowledged events are ever held as JSON (at 64 clients that took the tool to 720 MB):
/// an acknowledged event is rebuilt only when its id is listed.
#[derive(Debug, Default)]
pub struct EventCheck {
    /// Acknowledged event id → its index in acknowledgement order.
    index: HashMap<String, usize>,
    listed: Vec<bool>,
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
            problems: Vec::new(),
        }
    }

    /// One event of the listed log; `acked(i)` rebuilds acknowledged event `i` (only called
    /// when `id` was acknowledged). Events nobody acknowledged are not checked here.
    pub fn listed(
        &mut self,
        id: &str,
        stored: &StoredEvent,
        acked: impl FnOnce(usize) -> AckedEvent,
    ) {
        let Some(&i) = self.index.get(id) else {
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

/// Submissions: every acknowledged submission, submitted again, must be refused as
/// `409 already_submitted`. `resubmits` holds (invite, status, code) of those second tries.
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

    #[test]
    fn an_item_matching_its_acknowledgements_has_no_problems() {
        let want = ItemExpectation {
            initial_qty: 1_000,
            acked_delta_sum: -7,
            acked_count: 3,
        };
        let got = ItemObservation {
            qty: 993,
            qty_changed_records: 3,
            qty_changed_delta_sum: -7,
        };
        assert!(compare_item("item a", want, got).is_empty());
    }

    #[test]
    fn a_lost_acknowledged_delta_is_reported_on_qty_count_and_sum() {
        let want = ItemExpectation {
            initial_qty: 10,
            acked_delta_sum: 5,
            acked_count: 2,
        };
        let got = ItemObservation {
            qty: 12,
            qty_changed_records: 1,
            qty_changed_delta_sum: 2,
        };
        let problems = compare_item("item a", want, got);
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].contains("qty 12 but initial 10 + acknowledged deltas 5 = 15"));
    }

    #[test]
    fn an_applied_but_unacknowledged_delta_is_caught_too() {
        // The server changed the quantity without telling the client: also a lie.
        let want = ItemExpectation {
            initial_qty: 10,
            acked_delta_sum: 0,
            acked_count: 0,
        };
        let got = ItemObservation {
            qty: 9,
            qty_changed_records: 1,
            qty_changed_delta_sum: -1,
        };
        assert_eq!(compare_item("x", want, got).len(), 3);
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

    #[test]
    fn acknowledged_events_must_be_stored_where_and_as_acknowledged() {
        let acked = [
            AckedEvent {
                id: "a".into(),
                position: 1,
                stream: "s".into(),
                data: json!({"n": 5, "text": "héllo"}),
            },
            AckedEvent {
                id: "b".into(),
                position: 2,
                stream: "s".into(),
                data: json!({"n": 6}),
            },
            AckedEvent {
                id: "c".into(),
                position: 3,
                stream: "s".into(),
                data: json!(1),
            },
        ];
        let stored = [
            (
                "a",
                StoredEvent {
                    position: 1,
                    stream: "s".into(),
                    data: json!({"text": "héllo", "n": 5.0}),
                },
            ),
            (
                "b",
                StoredEvent {
                    position: 7,
                    stream: "t".into(),
                    data: json!({"n": 7}),
                },
            ),
            (
                "not-acknowledged",
                StoredEvent {
                    position: 2,
                    stream: "s".into(),
                    data: json!(null),
                },
            ),
        ];
        let mut check = EventCheck::new(acked.iter().map(|e| e.id.clone()));
        for (id, event) in &stored {
            check.listed(id, event, |i| acked[i].clone());
        }
        let problems = check.finish();
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(problems[0].contains("acknowledged at position 2 is stored at 7"));
        assert!(problems[3].contains("event c was acknowledged but is not stored"));
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
