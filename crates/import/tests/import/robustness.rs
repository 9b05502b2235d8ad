//! No input makes the import panic. `TRUELINE_IMPORT_FUZZ_CASES` (default 256 per property)
//! sets the size of a run.

use crate::files::{X, xlsx};
use proptest::prelude::*;
use std::sync::OnceLock;
use trueline_import::{Format, ImportError, parse};

fn cases() -> u32 {
    std::env::var("TRUELINE_IMPORT_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

fn sample_workbook() -> &'static [u8] {
    static WORKBOOK: OnceLock<Vec<u8>> = OnceLock::new();
    WORKBOOK.get_or_init(|| {
        xlsx(&[
            ["type", "prompt", "options", "correct", "points"]
                .map(X::S)
                .to_vec(),
            vec![
                X::S("single_choice"),
                X::S("p"),
                X::S("a|b"),
                X::S("a"),
                X::N(2.0),
            ],
            vec![X::S("true_false"), X::S("q"), X::Blank, X::B(false)],
        ])
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        let _ = parse(&bytes, Format::Csv);
        let _ = parse(&bytes, Format::Xlsx);
    }

    #[test]
    fn a_mutated_workbook_never_panics(
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = sample_workbook().to_vec();
        for (at, value) in flips {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        let _ = parse(&bytes, Format::Xlsx);
        let _ = parse(&bytes[..cut.index(bytes.len())], Format::Xlsx);
    }

    #[test]
    fn arbitrary_csv_cells_import_or_name_real_rows(
        rows in prop::collection::vec(
            prop::collection::vec("[a-z_|,\"\n 0-9±.-]{0,12}", 5),
            0..12,
        ),
    ) {
        let mut text = String::from("type,prompt,options,correct,points\n");
        for row in &rows {
            let cells: Vec<String> =
                row.iter().map(|c| format!("\"{}\"", c.replace('"', "\"\""))).collect();
            text.push_str(&cells.join(","));
            text.push('\n');
        }
        match parse(text.as_bytes(), Format::Csv) {
            Ok(questions) => prop_assert!(questions.len() <= rows.len()),
            Err(ImportError::Rows(errors)) => {
                prop_assert!(!errors.is_empty());
                for e in errors {
                    prop_assert!(e.row >= 2 && e.row <= rows.len() as u64 + 1, "{e:?}");
                }
            }
            Err(ImportError::Empty) => {}
            Err(other) => prop_assert!(false, "unexpected {other:?}"),
        }
    }
}

const SHEET: &str = r#"<row r="1"><c r="A1" t="inlineStr"><is><t>type</t></is></c><c r="B1" t="s"><v>0</v></c><c r="C1" t="inlineStr"><is><t>correct</t></is></c></row><row r="2"><c r="A2" t="inlineStr"><is><t>true_false</t></is></c><c r="B2" t="s"><v>1</v></c><c r="C2" t="b"><v>1</v></c><c r="D2"/></row>"#;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn hostile_worksheet_xml_in_a_valid_archive_never_panics(
        edits in prop::collection::vec(
            (
                any::<prop::sample::Index>(),
                0usize..4,
                prop::sample::select(vec![
                    "<", ">", "\"", "/", "r=\"", "A0", "ZZZZ9", "99999999999", "t=\"s\"",
                    "t=\"b\"", "t=\"e\"", "t=\"d\"", "<v>", "</v>", "-1", "1e999", "&amp;", "&#0;",
                    "<c r=\"XFD1\">", "<row>", "</row>", "\u{fffd}", "",
                ]),
            ),
            1..6,
        ),
    ) {
        let mut sheet = SHEET.to_owned();
        for (at, delete, insert) in edits {
            let mut i = at.index(sheet.len() + 1);
            while !sheet.is_char_boundary(i) {
                i -= 1;
            }
            let mut end = (i + delete).min(sheet.len());
            while !sheet.is_char_boundary(end) {
                end += 1;
            }
            sheet.replace_range(i..end, insert);
        }
        let bytes = crate::files::handwritten_xlsx(&sheet, &["prompt", "p"]);
        let _ = parse(&bytes, Format::Xlsx);
    }
}
