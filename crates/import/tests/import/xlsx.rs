//! XLSX workbooks: typed cells, hand-written XML parts, dates, malformed archives.

use crate::files::{X, handwritten_xlsx, handwritten_xlsx_with, xlsx, zip};
use trueline_core::assessments::{AnswerKey, QuestionSpec};
use trueline_import::{Format, ImportError, RowError, parse};

fn read(bytes: &[u8]) -> Result<Vec<QuestionSpec>, ImportError> {
    parse(bytes, Format::Xlsx)
}

fn header() -> Vec<X> {
    ["type", "prompt", "options", "correct", "points"]
        .map(X::S)
        .to_vec()
}

#[test]
fn a_workbook_with_strings_numbers_booleans_and_empty_cells_imports_every_type() {
    use X::*;
    let bytes = xlsx(&[
        header(),
        vec![S("single_choice"), S("2 + 2?"), S("3|4|5"), N(4.0), N(2.0)],
        vec![
            S("multiple_choice"),
            S("Even?"),
            S("1|2|3|4"),
            S("2|4"),
            Blank,
        ],
        vec![S("true_false"), S("Sky is blue"), Blank, B(true), N(1.0)],
        vec![S("short_text"), S("Say hi"), Blank, S("hi|hello")],
        vec![S("numeric"), N(42.0), Blank, N(2.5)],
        vec![S("numeric"), S("e?"), Blank, S("2.72+/-0.01"), N(3.0)],
    ]);
    let questions = read(&bytes).expect("imports");
    assert_eq!(questions.len(), 6);
    assert_eq!(
        questions[0].key(),
        &AnswerKey::SingleChoice {
            options: vec!["3".into(), "4".into(), "5".into()],
            correct: 1
        }
    );
    assert_eq!(questions[0].points(), 2);
    assert_eq!(
        questions[1].key(),
        &AnswerKey::MultipleChoice {
            options: vec!["1".into(), "2".into(), "3".into(), "4".into()],
            correct: vec![1, 3]
        }
    );
    assert_eq!(questions[1].points(), 1);
    assert_eq!(questions[2].key(), &AnswerKey::TrueFalse { correct: true });
    assert_eq!(questions[4].prompt(), "42");
    assert_eq!(
        questions[4].key(),
        &AnswerKey::Numeric {
            value: 2.5,
            tolerance: 0.0
        }
    );
    assert_eq!(
        questions[5].key(),
        &AnswerKey::Numeric {
            value: 2.72,
            tolerance: 0.01
        }
    );
    assert_eq!(questions[5].points(), 3);
}

#[test]
fn spreadsheet_numbers_must_be_whole_where_a_whole_number_is_required() {
    use X::*;
    let bytes = xlsx(&[
        header(),
        vec![S("true_false"), S("p"), Blank, S("FALSE"), N(2.5)],
        vec![S("single_choice"), S("p"), S("a|b"), N(1.5), B(true)],
        vec![S("true_false"), S("p"), Blank, N(1.0), N(1.0)],
        vec![S("numeric"), S("p"), Blank, B(false)],
    ]);
    let Err(ImportError::Rows(errors)) = read(&bytes) else {
        panic!("expected row errors")
    };
    let got: Vec<_> = errors
        .iter()
        .map(|e| (e.row, e.column.as_str(), e.code))
        .collect();
    assert_eq!(
        got,
        [
            (2, "points", "invalid_type"),
            (3, "correct", "invalid_correct_answer"),
            (3, "points", "invalid_type"),
            (4, "correct", "invalid_value"),
            (5, "correct", "invalid_type"),
        ]
    );
}

#[test]
fn date_cells_are_reported_not_guessed() {
    use X::*;
    let bytes = xlsx(&[header(), vec![S("short_text"), S("When?"), Blank, Date]]);
    assert_eq!(
        read(&bytes),
        Err(ImportError::Rows(vec![RowError {
            row: 2,
            column: "correct".into(),
            code: "unsupported_cell",
            detail: "holds a date or time, which a question cannot use; type it as text".into(),
        }]))
    );
}

/// A cell showing `15%` holds 0.15, and one showing `1/2` holds 0.5: taken as they are saved,
/// they would be keys and points the author never wrote, so they are reported with where.
/// Other number formats (decimals, thousands separators) are numbers as they are shown.
#[test]
fn numbers_shown_as_percentages_or_fractions_are_reported_not_taken_as_saved() {
    use X::*;
    let bytes = xlsx(&[
        header(),
        vec![S("numeric"), S("Rate?"), Blank, NumFormatIndex(0.15, 9)],
        vec![
            S("numeric"),
            S("Rate?"),
            Blank,
            NumFormatIndex(0.155, 10),
            NumFormat(1.0, "0%"),
        ],
        vec![S("numeric"), S("Rate?"), Blank, NumFormat(0.125, "0.0%")],
        vec![S("numeric"), S("Half?"), Blank, NumFormatIndex(0.5, 12)],
        vec![
            S("numeric"),
            S("Sixteenths?"),
            Blank,
            NumFormat(0.5625, "# ??/16"),
        ],
        vec![
            S("numeric"),
            S("Plain"),
            Blank,
            NumFormat(1234.5, "#,##0.00"),
            NumFormatIndex(2.0, 1),
        ],
    ]);
    let Err(ImportError::Rows(errors)) = read(&bytes) else {
        panic!("expected row errors")
    };
    let got: Vec<_> = errors
        .iter()
        .map(|e| (e.row, e.column.as_str(), e.code))
        .collect();
    assert_eq!(
        got,
        [
            (2, "correct", "unsupported_cell"),
            (3, "correct", "unsupported_cell"),
            (3, "points", "unsupported_cell"),
            (4, "correct", "unsupported_cell"),
            (5, "correct", "unsupported_cell"),
            (6, "correct", "unsupported_cell"),
        ],
        "{errors:#?}"
    );
    assert_eq!(
        errors[0].detail,
        "holds a percentage (saved as the number 0.15), which a question cannot use; type it \
         as text"
    );
    assert!(
        errors[4]
            .detail
            .starts_with("holds a fraction (saved as the number 0.5)")
    );
    // The same sheet without them imports, the formatted plain numbers as numbers.
    let plain = xlsx(&[
        header(),
        vec![
            S("numeric"),
            S("Plain"),
            Blank,
            NumFormat(1234.5, "#,##0.00"),
            NumFormatIndex(2.0, 1),
        ],
    ]);
    let questions = read(&plain).expect("imports");
    assert_eq!(
        questions[0].key(),
        &AnswerKey::Numeric {
            value: 1234.5,
            tolerance: 0.0
        }
    );
    assert_eq!(questions[0].points(), 2);
}

#[test]
fn leading_blank_rows_and_gaps_keep_the_row_numbers_a_person_sees() {
    use X::*;
    let bytes = xlsx(&[
        vec![],
        vec![Blank, Blank],
        header(),
        vec![S("true_false"), S("ok"), Blank, B(false)],
        vec![],
        vec![S("true_false"), S(""), Blank, S("maybe")],
    ]);
    let Err(ImportError::Rows(errors)) = read(&bytes) else {
        panic!("expected row errors")
    };
    let got: Vec<_> = errors
        .iter()
        .map(|e| (e.row, e.column.as_str(), e.code))
        .collect();
    assert_eq!(
        got,
        [
            (6, "prompt", "missing_field"),
            (6, "correct", "invalid_value")
        ]
    );
}

#[test]
fn inline_strings_self_closing_cells_and_shared_strings_are_read() {
    let sheet = r#"
<row r="1">
  <c r="A1" t="inlineStr"><is><t>Type</t></is></c>
  <c r="B1" t="s"><v>0</v></c>
  <c r="C1" t="inlineStr"><is><t> options </t></is></c>
  <c r="D1" t="inlineStr"><is><r><t>cor</t></r><r><t>rect</t></r></is></c>
  <c r="E1" t="s"><v>1</v></c>
</row>
<row r="2">
  <c r="A2" t="inlineStr"><is><t>single_choice</t></is></c>
  <c r="B2" t="s"><v>2</v></c>
  <c r="C2" t="inlineStr"><is><t>Red|Green</t></is></c>
  <c r="D2" t="s"><v>3</v></c>
  <c r="E2"/>
</row>
<row r="3"><c r="A3"/><c r="B3" s="1"/><c r="C3" t="s"/></row>
<row r="4">
  <c r="A4" t="inlineStr"><is><t>true_false</t></is></c>
  <c r="B4" t="inlineStr"><is><t>Is &amp; works?</t></is></c>
  <c r="C4"/>
  <c r="D4" t="b"><v>1</v></c>
  <c r="E4"><v>4</v></c>
</row>"#;
    let bytes = handwritten_xlsx(sheet, &["prompt", "points", "Colour of grass?", "green"]);
    let questions = read(&bytes).expect("imports");
    assert_eq!(questions.len(), 2);
    assert_eq!(questions[0].prompt(), "Colour of grass?");
    assert_eq!(
        questions[0].key(),
        &AnswerKey::SingleChoice {
            options: vec!["Red".into(), "Green".into()],
            correct: 1
        }
    );
    assert_eq!(questions[0].points(), 1);
    assert_eq!(questions[1].prompt(), "Is & works?");
    assert_eq!(questions[1].key(), &AnswerKey::TrueFalse { correct: true });
    assert_eq!(questions[1].points(), 4);
}

#[test]
fn files_that_are_not_workbooks_are_refused_clearly() {
    let good = xlsx(&[
        header(),
        vec![X::S("true_false"), X::S("p"), X::Blank, X::B(true)],
    ]);
    read(&good).expect("the untruncated file imports");
    let not_xlsx = |bytes: &[u8]| match read(bytes) {
        Err(ImportError::NotXlsx { detail }) => detail,
        other => panic!("expected NotXlsx, got {other:?}"),
    };
    not_xlsx(&good[..good.len() / 2]);
    not_xlsx(&good[..good.len() - 10]);
    not_xlsx(b"type,prompt,correct\ntrue_false,p,true\n");
    not_xlsx(b"");
    not_xlsx(&[0xff; 4096]);
    not_xlsx(b"PK\x03\x04 garbage that only starts like a zip");
    // A valid zip that is no workbook.
    not_xlsx(&zip(&[("hello.txt", b"hello")]));
    // A corrupt entry: flip bytes in the middle of the compressed data.
    let mut corrupt = good.clone();
    for byte in &mut corrupt[200..260] {
        *byte ^= 0x5a;
    }
    assert!(read(&corrupt).is_err());
    assert_eq!(read(b"").map_err(|e| e.code()), Err("not_xlsx"));
}

#[test]
fn a_workbook_whose_sheet_is_empty_has_no_questions() {
    assert_eq!(read(&xlsx(&[])), Err(ImportError::Empty));
    assert_eq!(read(&xlsx(&[header()])), Err(ImportError::Empty));
}

#[test]
fn a_worksheet_that_makes_the_spreadsheet_reader_fail_is_refused_not_crashed() {
    // calamine's cell-reference parser overflows on this row number (found by the
    // robustness proptest); the import reports a malformed workbook instead.
    let sheet = r#"<row r="1"><c r="A99999999999" t="inlineStr"><is><t>type</t></is></c></row>"#;
    assert!(matches!(
        read(&handwritten_xlsx(sheet, &[])),
        Err(ImportError::NotXlsx { .. })
    ));
}

/// A formula's saved result is what counts; a formula saved without one (a file written by a
/// program) is reported, not read as an empty cell (an empty `points` would become 1).
#[test]
fn formulas_count_by_their_saved_result_and_without_one_are_reported() {
    let sheet = r#"
<row r="1">
  <c r="A1" t="inlineStr"><is><t>type</t></is></c>
  <c r="B1" t="inlineStr"><is><t>prompt</t></is></c>
  <c r="C1" t="inlineStr"><is><t>correct</t></is></c>
  <c r="D1" t="inlineStr"><is><t>points</t></is></c>
</row>
<row r="2">
  <c r="A2" t="inlineStr"><is><t>true_false</t></is></c>
  <c r="B2" t="inlineStr"><is><t>Saved?</t></is></c>
  <c r="C2" t="b"><v>1</v></c>
  <c r="D2"><f>1+2</f><v>3</v></c>
</row>
<row r="3">
  <c r="A3" t="inlineStr"><is><t>true_false</t></is></c>
  <c r="B3" t="inlineStr"><is><t>Not saved?</t></is></c>
  <c r="C3" t="b"><v>1</v></c>
  <c r="D3"><f>1+2</f></c>
</row>"#;
    let bytes = handwritten_xlsx(sheet, &[]);
    let Err(ImportError::Rows(errors)) = read(&bytes) else {
        panic!("expected row errors");
    };
    assert_eq!(
        errors
            .iter()
            .map(|e| (e.row, e.column.as_str(), e.code))
            .collect::<Vec<_>>(),
        [(3, "points", "unsupported_cell")]
    );
    let saved = sheet.split("<row r=\"3\">").next().unwrap();
    let questions = read(&handwritten_xlsx(saved, &[])).expect("imports");
    assert_eq!(questions[0].points(), 3);
}

/// `=IF(A5="","",1)` saved with its empty result is an empty cell, not a formula "without a
/// saved result"; so is a result of only spaces.
#[test]
fn a_formula_whose_saved_result_is_empty_text_is_an_empty_cell() {
    let sheet = r#"
<row r="1">
  <c r="A1" t="inlineStr"><is><t>type</t></is></c>
  <c r="B1" t="inlineStr"><is><t>prompt</t></is></c>
  <c r="C1" t="inlineStr"><is><t>options</t></is></c>
  <c r="D1" t="inlineStr"><is><t>correct</t></is></c>
  <c r="E1" t="inlineStr"><is><t>points</t></is></c>
</row>
<row r="2">
  <c r="A2" t="inlineStr"><is><t>true_false</t></is></c>
  <c r="B2" t="inlineStr"><is><t>Empty results?</t></is></c>
  <c r="C2" t="str"><f>IF(A5="","",1)</f><v></v></c>
  <c r="D2" t="b"><v>1</v></c>
  <c r="E2" t="str"><f>IF(A5="","  ",1)</f><v>  </v></c>
</row>"#;
    let questions = read(&handwritten_xlsx(sheet, &[])).expect("imports");
    assert_eq!(questions[0].key(), &AnswerKey::TrueFalse { correct: true });
    assert_eq!(questions[0].points(), 1);
}

/// A spreadsheet computes and shows 15 significant digits; the bits beyond (`=0.1+0.2` is
/// saved as 0.30000000000000004) are not what the person wrote.
#[test]
fn numbers_are_read_as_the_spreadsheet_shows_them() {
    use X::*;
    let bytes = xlsx(&[
        header(),
        vec![
            S("numeric"),
            S("0.1 + 0.2?"),
            Blank,
            N(0.1 + 0.2),
            N(0.1 * 30.0),
        ],
    ]);
    let questions = read(&bytes).expect("imports");
    assert_eq!(
        questions[0].key(),
        &AnswerKey::Numeric {
            value: 0.3,
            tolerance: 0.0
        }
    );
    assert_eq!(questions[0].points(), 3);
}

/// A workbook of a `Notes` sheet and a `Questions` sheet, `Notes` first.
fn two_sheets(notes_state: &str, questions_state: &str) -> Vec<u8> {
    let workbook = format!(
        r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships">
<sheets><sheet name="Notes" sheetId="1" {notes_state} r:id="rId1"/><sheet name="Questions" sheetId="2" {questions_state} r:id="rId3"/></sheets>
</workbook>"#
    );
    let rels = r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">
<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet" Target="worksheets/sheet1.xml"/>
<Relationship Id="rId2" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/sharedStrings" Target="sharedStrings.xml"/>
<Relationship Id="rId3" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet" Target="worksheets/sheet2.xml"/>
</Relationships>"#;
    let questions = r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData>
<row r="1">
  <c r="A1" t="inlineStr"><is><t>type</t></is></c>
  <c r="B1" t="inlineStr"><is><t>prompt</t></is></c>
  <c r="C1" t="inlineStr"><is><t>correct</t></is></c>
</row>
<row r="2">
  <c r="A2" t="inlineStr"><is><t>true_false</t></is></c>
  <c r="B2" t="inlineStr"><is><t>Visible?</t></is></c>
  <c r="C2" t="b"><v>1</v></c>
</row>
</sheetData></worksheet>"#;
    let notes =
        r#"<row r="1"><c r="A1" t="inlineStr"><is><t>Fill in the next sheet</t></is></c></row>"#;
    handwritten_xlsx_with(
        notes,
        &[],
        &[
            ("xl/workbook.xml", workbook.as_bytes()),
            ("xl/_rels/workbook.xml.rels", rels.as_bytes()),
            ("xl/worksheets/sheet2.xml", questions.as_bytes()),
        ],
    )
}

/// A hidden sheet (a template's notes, a lookup table) is not what the person sees and fills
/// in: the first visible worksheet is read, and a hidden one only when none is visible.
#[test]
fn the_first_visible_worksheet_is_read() {
    for hidden in [r#"state="hidden""#, r#"state="veryHidden""#] {
        let questions = read(&two_sheets(hidden, "")).expect("imports");
        assert_eq!(questions[0].prompt(), "Visible?");
    }
    let notes_read = |bytes: &[u8]| matches!(read(bytes), Err(ImportError::UnknownColumn { column }) if column == "Fill in the next sheet");
    assert!(notes_read(&two_sheets("", "")));
    assert!(notes_read(&two_sheets(
        r#"state="hidden""#,
        r#"state="hidden""#
    )));
}
