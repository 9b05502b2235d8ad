//! From a table to questions: the header decides which column is which, each row becomes
//! [`QuestionFields`] (the spreadsheet conventions: `|` lists, option text or 1-based
//! numbers, `value±tolerance`), and [`QuestionSpec::build`] applies the domain's rules. Every
//! problem of every row is collected; one bad row means no question is returned.

use crate::table::{Cell, Row, Table, column_letter, quoted, shortened};
use crate::{ImportError, RowError};
use std::collections::BTreeMap;
use trueline_core::assessments::text::answer_key;
use trueline_core::assessments::{
    CorrectInput, FieldValue, OPTIONS_MAX, QuestionFields, QuestionSpec, QuestionType, codes,
};
use trueline_core::validation::FieldError;

/// A cell in a column whose header is empty.
const UNEXPECTED_VALUE: &str = "unexpected_value";
/// A date, duration or error cell.
const UNSUPPORTED_CELL: &str = "unsupported_cell";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Column {
    Type,
    Prompt,
    Options,
    Correct,
    Points,
}

impl Column {
    const ALL: [Column; 5] = [
        Column::Type,
        Column::Prompt,
        Column::Options,
        Column::Correct,
        Column::Points,
    ];
    const REQUIRED: [Column; 3] = [Column::Type, Column::Prompt, Column::Correct];

    fn name(self) -> &'static str {
        match self {
            Column::Type => "type",
            Column::Prompt => "prompt",
            Column::Options => "options",
            Column::Correct => "correct",
            Column::Points => "points",
        }
    }
}

/// Which 0-based column index holds which field.
fn layout(header: &Row) -> Result<BTreeMap<usize, Column>, ImportError> {
    let mut layout = BTreeMap::new();
    for (index, cell) in &header.cells {
        let written = cell.to_text();
        let name = written.trim().to_lowercase();
        let Some(column) = Column::ALL.into_iter().find(|c| c.name() == name) else {
            return Err(ImportError::UnknownColumn {
                column: shortened(written.trim()),
            });
        };
        if layout.values().any(|c| *c == column) {
            return Err(ImportError::DuplicateColumn {
                column: column.name().to_owned(),
            });
        }
        layout.insert(*index, column);
    }
    for required in Column::REQUIRED {
        if !layout.values().any(|c| *c == required) {
            return Err(ImportError::MissingColumn {
                column: required.name(),
            });
        }
    }
    Ok(layout)
}

pub(crate) fn questions(table: Table) -> Result<Vec<QuestionSpec>, ImportError> {
    let Some(header) = table.header else {
        return Err(ImportError::Empty);
    };
    let layout = layout(&header)?;
    if table.rows.is_empty() {
        return Err(ImportError::Empty);
    }
    let mut specs = Vec::with_capacity(table.rows.len());
    let mut errors = Vec::new();
    for row in &table.rows {
        match question(&layout, row) {
            Ok(spec) => specs.push(spec),
            Err(mut row_errors) => errors.append(&mut row_errors),
        }
    }
    if errors.is_empty() {
        Ok(specs)
    } else {
        Err(ImportError::Rows(errors))
    }
}

/// Collects the errors of one row, in column order.
struct RowErrors {
    row: u64,
    errors: Vec<(usize, RowError)>,
}

impl RowErrors {
    fn push(&mut self, column: Column, code: &'static str, detail: impl Into<String>) {
        self.errors.push((
            column as usize,
            RowError {
                row: self.row,
                column: column.name().to_owned(),
                code,
                detail: detail.into(),
            },
        ));
    }

    fn into_sorted(mut self) -> Vec<RowError> {
        // Stable: within a column, errors keep the order they were found in.
        self.errors.sort_by_key(|(rank, _)| *rank);
        self.errors.into_iter().map(|(_, e)| e).collect()
    }
}

fn question(layout: &BTreeMap<usize, Column>, row: &Row) -> Result<QuestionSpec, Vec<RowError>> {
    let mut errors = RowErrors {
        row: row.number,
        errors: Vec::new(),
    };
    let mut cells: BTreeMap<Column, &Cell> = BTreeMap::new();
    for (index, cell) in &row.cells {
        match layout.get(index) {
            Some(column) => {
                if let Cell::Unsupported(what) = cell {
                    errors.push(
                        *column,
                        UNSUPPORTED_CELL,
                        format!("holds {what}, which a question cannot use; type it as text"),
                    );
                }
                cells.insert(*column, cell);
            }
            None => errors.errors.push((
                usize::MAX,
                RowError {
                    row: row.number,
                    column: column_letter(*index),
                    code: UNEXPECTED_VALUE,
                    detail: "this column has no name in the header row; leave it empty or \
                             name it"
                        .into(),
                },
            )),
        }
    }
    // Unsupported cells were reported above; later steps treat them as unreadable.
    let usable = |column: Column| -> FieldValue<&Cell> {
        match cells.get(&column) {
            None => FieldValue::Absent,
            Some(Cell::Unsupported(_)) => FieldValue::Rejected,
            Some(cell) => FieldValue::Present(*cell),
        }
    };

    let kind = match usable(Column::Type) {
        FieldValue::Present(cell) => {
            let written = cell.to_text();
            let normalized = written.trim().to_lowercase().replace([' ', '-'], "_");
            match QuestionType::parse(&normalized) {
                Some(kind) => FieldValue::Present(kind),
                None => {
                    errors.push(
                        Column::Type,
                        codes::INVALID_VALUE,
                        format!(
                            "unknown question type {}; expected one of {}",
                            quoted(written.trim()),
                            QuestionType::ALL.map(QuestionType::as_str).join(", ")
                        ),
                    );
                    FieldValue::Rejected
                }
            }
        }
        FieldValue::Absent => FieldValue::Absent,
        FieldValue::Rejected => FieldValue::Rejected,
    };
    let options = map(usable(Column::Options), |cell| split(&cell.to_text()));
    // The entries `correct` is resolved against (as written; the domain validates them).
    let option_entries: Option<Vec<String>> = match &options {
        FieldValue::Present(entries) => Some(entries.clone()),
        _ => None,
    };
    let mut fields = QuestionFields {
        kind,
        prompt: map(usable(Column::Prompt), Cell::to_text),
        points: points(usable(Column::Points), &mut errors),
        options,
        ..QuestionFields::default()
    };
    if let FieldValue::Present(kind) = fields.kind.clone() {
        let correct = usable(Column::Correct);
        match kind {
            QuestionType::SingleChoice | QuestionType::MultipleChoice => {
                fields.correct =
                    choice_correct(kind, correct, option_entries.as_deref(), &mut errors);
            }
            QuestionType::TrueFalse => {
                fields.correct = match correct {
                    FieldValue::Present(Cell::Bool(b)) => {
                        FieldValue::Present(CorrectInput::Boolean(*b))
                    }
                    FieldValue::Present(cell) => {
                        match cell.to_text().trim().to_lowercase().as_str() {
                            "true" => FieldValue::Present(CorrectInput::Boolean(true)),
                            "false" => FieldValue::Present(CorrectInput::Boolean(false)),
                            _ => {
                                errors.push(
                                    Column::Correct,
                                    codes::INVALID_VALUE,
                                    format!(
                                        "must be true or false, not {}",
                                        quoted(cell.to_text().trim())
                                    ),
                                );
                                FieldValue::Rejected
                            }
                        }
                    }
                    FieldValue::Absent => FieldValue::Absent,
                    FieldValue::Rejected => FieldValue::Rejected,
                };
            }
            QuestionType::ShortText => {
                fields.accepted_answers = map(correct, |cell| split(&cell.to_text()));
            }
            QuestionType::Numeric => match correct {
                FieldValue::Present(Cell::Number(x)) => fields.value = FieldValue::Present(*x),
                FieldValue::Present(Cell::Bool(_)) => {
                    errors.push(
                        Column::Correct,
                        codes::INVALID_TYPE,
                        "must be a number, or value±tolerance, not a boolean",
                    );
                    fields.value = FieldValue::Rejected;
                }
                FieldValue::Present(cell) => match value_and_tolerance(&cell.to_text()) {
                    Ok((value, tolerance)) => {
                        fields.value = FieldValue::Present(value);
                        if let Some(tolerance) = tolerance {
                            fields.tolerance = FieldValue::Present(tolerance);
                        }
                    }
                    Err((code, detail)) => {
                        errors.push(Column::Correct, code, detail);
                        fields.value = FieldValue::Rejected;
                    }
                },
                FieldValue::Absent => {}
                FieldValue::Rejected => fields.value = FieldValue::Rejected,
            },
        }
    }
    match QuestionSpec::build(fields) {
        Ok(spec) if errors.errors.is_empty() => Ok(spec),
        Ok(_) => Err(errors.into_sorted()),
        Err(domain_errors) => {
            for e in domain_errors {
                let (column, code, detail) = describe(e);
                errors.push(column, code, detail);
            }
            Err(errors.into_sorted())
        }
    }
}

fn map<T>(value: FieldValue<&Cell>, f: impl FnOnce(&Cell) -> T) -> FieldValue<T> {
    match value {
        FieldValue::Present(cell) => FieldValue::Present(f(cell)),
        FieldValue::Absent => FieldValue::Absent,
        FieldValue::Rejected => FieldValue::Rejected,
    }
}

/// A `|`-separated list; entries are not trimmed here (the domain trims and reports empties).
fn split(text: &str) -> Vec<String> {
    text.split('|').map(str::to_owned).collect()
}

/// A whole number: a spreadsheet number without fraction (`3.0` is 3), or text that reads as
/// one (`3`, `3.0`).
fn points(value: FieldValue<&Cell>, errors: &mut RowErrors) -> FieldValue<i64> {
    let number = match value {
        FieldValue::Absent => return FieldValue::Absent,
        FieldValue::Rejected => return FieldValue::Rejected,
        FieldValue::Present(Cell::Number(x)) => Some(*x),
        FieldValue::Present(Cell::Text(text)) => {
            let text = text.trim();
            let digits = text.strip_prefix(['+', '-']).unwrap_or(text);
            if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
                // A whole number however long: the domain's range check (not a rounded
                // double, nor "not whole") answers one too large.
                let wide = if text.starts_with('-') {
                    i64::MIN
                } else {
                    i64::MAX
                };
                return FieldValue::Present(text.parse::<i64>().unwrap_or(wide));
            }
            text.parse::<f64>().ok()
        }
        FieldValue::Present(_) => None,
    };
    // 2^53: every integer up to it is exact in f64; the domain checks the real range.
    match number {
        Some(x) if x.is_finite() && x.fract() == 0.0 && x.abs() <= 9_007_199_254_740_991.0 => {
            // Integral and within ±2^53 (checked just above), so the cast is exact.
            FieldValue::Present(x as i64)
        }
        _ => {
            let written = match value {
                FieldValue::Present(cell) => cell.to_text(),
                _ => String::new(),
            };
            errors.push(
                Column::Points,
                codes::INVALID_TYPE,
                format!("must be a whole number, not {}", quoted(written.trim())),
            );
            FieldValue::Rejected
        }
    }
}

/// Resolves `correct` of a choice question to 0-based indices: each entry is an option's text
/// (compared on [`answer_key`]) or, failing that, its 1-based number.
fn choice_correct(
    kind: QuestionType,
    correct: FieldValue<&Cell>,
    options: Option<&[String]>,
    errors: &mut RowErrors,
) -> FieldValue<CorrectInput> {
    let cell = match correct {
        FieldValue::Present(cell) => cell,
        FieldValue::Absent => return FieldValue::Absent,
        FieldValue::Rejected => return FieldValue::Rejected,
    };
    // Without options there is nothing to resolve against; the domain reports the missing
    // options, which is the real problem.
    let Some(options) = options else {
        return FieldValue::Rejected;
    };
    // Entries are matched against the options and each other pairwise: with more options than
    // a question may have, the domain reports the options' length and nothing is matched;
    // more entries than options cannot be right either.
    if options.len() > OPTIONS_MAX {
        return FieldValue::Rejected;
    }
    let written = cell.to_text();
    let entries: Vec<&str> = written.split('|').map(str::trim).collect();
    if entries.len() > OPTIONS_MAX {
        errors.push(
            Column::Correct,
            codes::INVALID_LENGTH,
            format!(
                "names {} options; a question has at most {OPTIONS_MAX}",
                entries.len()
            ),
        );
        return FieldValue::Rejected;
    }
    if kind == QuestionType::SingleChoice && entries.len() > 1 {
        errors.push(
            Column::Correct,
            codes::INVALID_CORRECT_ANSWER,
            "a single_choice question has exactly one correct option; use multiple_choice \
             for several",
        );
        return FieldValue::Rejected;
    }
    let keys: Vec<String> = options.iter().map(|o| answer_key(o)).collect();
    let mut indices: Vec<i64> = Vec::with_capacity(entries.len());
    let mut named_by: Vec<&str> = Vec::with_capacity(entries.len());
    let mut failed = false;
    for entry in entries {
        if entry.is_empty() {
            errors.push(
                Column::Correct,
                codes::INVALID_CORRECT_ANSWER,
                "has an empty entry; separate correct options with a single |",
            );
            failed = true;
            continue;
        }
        let key = answer_key(entry);
        let by_text = keys.iter().position(|k| *k == key);
        let by_number = entry
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=options.len()).contains(n))
            .map(|n| n - 1);
        let Some(index) = by_text.or(by_number) else {
            errors.push(
                Column::Correct,
                codes::INVALID_CORRECT_ANSWER,
                format!(
                    "{} is neither the text of an option nor an option number (1 to {})",
                    quoted(entry),
                    options.len()
                ),
            );
            failed = true;
            continue;
        };
        if let Some(first) = indices.iter().position(|i| *i as usize == index) {
            errors.push(
                Column::Correct,
                codes::DUPLICATE_INDEX,
                format!(
                    "{} and {} both name option {} ({})",
                    quoted(named_by[first]),
                    quoted(entry),
                    index + 1,
                    quoted(options[index].trim())
                ),
            );
            failed = true;
            continue;
        }
        // `index` is below the option count, which is far below i64::MAX.
        indices.push(index as i64);
        named_by.push(entry);
    }
    if failed {
        return FieldValue::Rejected;
    }
    match (kind, indices.as_slice()) {
        (QuestionType::SingleChoice, [index]) => FieldValue::Present(CorrectInput::Index(*index)),
        _ => FieldValue::Present(CorrectInput::Indices(indices)),
    }
}

/// `value` or `value±tolerance` (also `+/-` and `+-`); a Unicode minus `−` reads as `-`.
fn value_and_tolerance(text: &str) -> Result<(f64, Option<f64>), (&'static str, String)> {
    let text = text.trim().replace('\u{2212}', "-");
    // The separator is searched after the first character so a leading sign stays the value's.
    let after_first = text.char_indices().nth(1).map_or(text.len(), |(i, _)| i);
    let separator = ["±", "+/-", "+-"].into_iter().find_map(|separator| {
        text[after_first..]
            .find(separator)
            .map(|at| (after_first + at, separator.len()))
    });
    match separator {
        Some((at, len)) => Ok((
            number(&text[..at], "the value")?,
            Some(number(&text[at + len..], "the tolerance")?),
        )),
        None => Ok((number(&text, "the value")?, None)),
    }
}

fn number(text: &str, what: &str) -> Result<f64, (&'static str, String)> {
    let text = text.trim();
    if text.is_empty() {
        return Err((
            codes::INVALID_VALUE,
            format!("{what} is missing; write value or value±tolerance"),
        ));
    }
    // As in a JSON body: a decimal is read as the nearest double, but an integer written as
    // one must be one a double holds exactly (`12345678901234567` would become …568).
    let digits = text.strip_prefix(['+', '-']).unwrap_or(text);
    if !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && text
            .parse::<i128>()
            .map_or(true, |n| n.unsigned_abs() > MAX_EXACT_INTEGER)
    {
        return Err((
            codes::OUT_OF_RANGE,
            format!(
                "{what} {} must be within ±(2^53-1); a double cannot hold a larger integer \
                 exactly",
                quoted(text)
            ),
        ));
    }
    match text.parse::<f64>() {
        // `parse` also reads "inf" and "NaN"; an answer key must be a finite number.
        Ok(x) if x.is_finite() => Ok(x),
        _ if text.contains(',') => Err((
            codes::INVALID_VALUE,
            format!(
                "{what} {} is not a number; use a dot as the decimal separator",
                quoted(text)
            ),
        )),
        _ => Err((
            codes::INVALID_VALUE,
            format!(
                "{what} {} is not a number; write value or value±tolerance, e.g. 2.75±0.01",
                quoted(text)
            ),
        )),
    }
}

/// 2^53 − 1: every integer up to it is exact in a double, not every one beyond.
const MAX_EXACT_INTEGER: u128 = 9_007_199_254_740_991;

/// The column, code and detail of a domain error, in the spreadsheet's terms.
fn describe(e: FieldError) -> (Column, &'static str, String) {
    let mut segments = e.field.trim_start_matches('/').split('/');
    let field = segments.next().unwrap_or_default();
    let position = segments.next().and_then(|s| s.parse::<usize>().ok());
    let column = match field {
        "type" => Column::Type,
        "prompt" => Column::Prompt,
        "points" => Column::Points,
        "options" => Column::Options,
        _ => Column::Correct,
    };
    let detail = match (field, e.code, position) {
        (_, codes::MISSING_FIELD, _) => match field {
            "options" => "is required for a choice question: separate the options with |".into(),
            "accepted_answers" => "`correct` must hold the accepted answers, separated by |".into(),
            "value" => "`correct` must hold the value, or value±tolerance".into(),
            _ => "is required".into(),
        },
        ("options", codes::DUPLICATE_OPTION, Some(i)) => format!(
            "option {} repeats an earlier option (compared ignoring case, width and spacing)",
            i + 1
        ),
        ("options", _, Some(i)) => format!("option {}: {}", i + 1, e.detail),
        ("accepted_answers", codes::DUPLICATE_ANSWER, Some(i)) => format!(
            "accepted answer {} repeats an earlier one (compared ignoring case, width and \
             spacing)",
            i + 1
        ),
        ("accepted_answers", _, Some(i)) => format!("accepted answer {}: {}", i + 1, e.detail),
        ("accepted_answers", _, None) => format!("accepted answers: {}", e.detail),
        ("value", _, _) => format!("the value {}", e.detail),
        ("tolerance", _, _) => format!("the tolerance {}", e.detail),
        _ => e.detail,
    };
    (column, e.code, detail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_with_tolerances_read_in_every_spelling() {
        assert_eq!(value_and_tolerance("2.75"), Ok((2.75, None)));
        assert_eq!(value_and_tolerance(" 2.75 ± 0.01 "), Ok((2.75, Some(0.01))));
        assert_eq!(value_and_tolerance("2.75+/-0.01"), Ok((2.75, Some(0.01))));
        assert_eq!(value_and_tolerance("-3+-1"), Ok((-3.0, Some(1.0))));
        assert_eq!(value_and_tolerance("+3+-1e-3"), Ok((3.0, Some(0.001))));
        assert_eq!(value_and_tolerance("\u{2212}2"), Ok((-2.0, None)));
        for bad in ["", "±1", "3±", "abc", "3,14", "inf", "NaN", "1±2±3"] {
            assert!(value_and_tolerance(bad).is_err(), "{bad}");
        }
    }

    /// An integer a double cannot hold exactly is refused, as in a JSON body; decimals are
    /// read as the nearest double, as documented.
    #[test]
    fn integers_beyond_what_a_double_holds_exactly_are_refused() {
        assert_eq!(
            value_and_tolerance("9007199254740991"),
            Ok((9_007_199_254_740_991.0, None))
        );
        assert_eq!(
            value_and_tolerance("-9007199254740991±1"),
            Ok((-9_007_199_254_740_991.0, Some(1.0)))
        );
        for (text, what) in [
            ("9007199254740992", "the value"),
            ("12345678901234567", "the value"),
            ("-12345678901234567", "the value"),
            ("+123456789012345678901234567890123456789012", "the value"),
            ("1±12345678901234567", "the tolerance"),
        ] {
            let (code, detail) = value_and_tolerance(text).expect_err(text);
            assert_eq!(code, codes::OUT_OF_RANGE, "{text}");
            assert!(detail.starts_with(what), "{text}: {detail}");
        }
        assert_eq!(
            value_and_tolerance("12345678901234567.0"),
            Ok((12_345_678_901_234_568.0, None))
        );
        assert_eq!(value_and_tolerance("6.022e23"), Ok((6.022e23, None)));
    }
}
