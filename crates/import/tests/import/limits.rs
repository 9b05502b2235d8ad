//! Caps: zip bombs, lying archive sizes, rows, columns.

use crate::files::{X, handwritten_xlsx, handwritten_xlsx_with, xlsx};
use std::io::{Cursor, Write};
use std::time::{Duration, Instant};
use trueline_core::assessments::{
    ACCEPTED_ANSWER_CHARS_MAX, ACCEPTED_ANSWERS_MAX, AnswerKey, OPTION_CHARS_MAX, OPTIONS_MAX,
};
use trueline_import::{
    COLUMNS_MAX, Format, ImportError, QUOTED_CHARS_MAX, ROWS_MAX, TEXT_CELL_BYTES_MAX,
    UPLOAD_BYTES_MAX, XLSX_DECOMPRESSED_BYTES_MAX, XLSX_STYLE_ATTRIBUTE_CHARS_MAX,
    XLSX_STYLE_XFS_MAX, XLSX_TEXT_BYTES_MAX, parse,
};
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

const MIB: usize = 1024 * 1024;

/// An archive whose entries are `sizes_mib[i]` MiB of zeros each, deflated at the highest
/// level (zeros compress about 1000:1).
fn zeros_archive(sizes_mib: &[usize]) -> Vec<u8> {
    let mut writer = ZipWriter::new(Cursor::new(Vec::new()));
    let options = SimpleFileOptions::default()
        .compression_method(CompressionMethod::Deflated)
        .compression_level(Some(9))
        .large_file(false);
    let chunk = vec![0u8; MIB];
    for (i, size) in sizes_mib.iter().enumerate() {
        writer
            .start_file(format!("xl/worksheets/sheet{i}.xml"), options)
            .expect("entry");
        for _ in 0..*size {
            writer.write_all(&chunk).expect("zeros");
        }
    }
    writer.finish().expect("archive").into_inner()
}

#[test]
fn a_zip_bomb_is_refused_quickly_before_calamine_sees_it() {
    let bomb = zeros_archive(&[400]);
    assert!(
        bomb.len() < UPLOAD_BYTES_MAX,
        "the bomb fits in an upload: {}",
        bomb.len()
    );
    let started = Instant::now();
    assert_eq!(
        parse(&bomb, Format::Xlsx),
        Err(ImportError::ZipBomb {
            max_bytes: XLSX_DECOMPRESSED_BYTES_MAX
        })
    );
    // Only the 8 MiB budget is ever inflated, not the 400 MiB.
    eprintln!(
        "bomb of {} bytes refused in {:?}",
        bomb.len(),
        started.elapsed()
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn the_decompressed_cap_is_on_the_total_of_all_entries() {
    // Each entry is under the cap; together they are over it.
    let many = zeros_archive(&[20, 20, 20]);
    assert_eq!(
        parse(&many, Format::Xlsx),
        Err(ImportError::ZipBomb {
            max_bytes: XLSX_DECOMPRESSED_BYTES_MAX
        })
    );
}

/// 8 MiB: a real workbook of 1,000 questions inflates to under 2 MiB, and calamine's
/// structures take several times what it reads.
#[test]
fn a_workbook_inflating_to_more_than_8_mib_is_refused() {
    assert_eq!(
        parse(&zeros_archive(&[3, 3, 3]), Format::Xlsx),
        Err(ImportError::ZipBomb {
            max_bytes: XLSX_DECOMPRESSED_BYTES_MAX
        })
    );
}

#[test]
fn declared_sizes_that_lie_do_not_get_past_the_check() {
    let mut archive = zeros_archive(&[60]);
    // Claim 1,000 uncompressed bytes in the local header (offset 22) and the central
    // directory entry (offset 24 from its signature).
    archive[22..26].copy_from_slice(&1000u32.to_le_bytes());
    let central = archive
        .windows(4)
        .rposition(|w| w == b"PK\x01\x02")
        .expect("central directory");
    archive[central + 24..central + 28].copy_from_slice(&1000u32.to_le_bytes());
    let started = Instant::now();
    let result = parse(&archive, Format::Xlsx);
    eprintln!("lying sizes: {result:?} in {:?}", started.elapsed());
    assert!(
        matches!(
            result,
            Err(ImportError::ZipBomb { .. } | ImportError::NotXlsx { .. })
        ),
        "{result:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

fn csv_with_rows(rows: usize) -> String {
    let mut text = String::from("type,prompt,correct\n");
    for i in 0..rows {
        text.push_str(&format!("true_false,Question {i},true\n"));
    }
    text
}

#[test]
fn a_thousand_questions_import_and_one_more_is_too_many() {
    let questions = parse(csv_with_rows(ROWS_MAX).as_bytes(), Format::Csv).expect("imports");
    assert_eq!(questions.len(), ROWS_MAX);
    assert_eq!(
        parse(csv_with_rows(ROWS_MAX + 1).as_bytes(), Format::Csv),
        Err(ImportError::TooManyRows { max: ROWS_MAX })
    );
    // Blank rows do not count.
    let mut spaced = csv_with_rows(ROWS_MAX);
    spaced.push_str("\n\n,,\n");
    assert!(parse(spaced.as_bytes(), Format::Csv).is_ok());
}

#[test]
fn too_many_rows_in_a_workbook_are_refused() {
    let row = vec![X::S("true_false"), X::S("p"), X::B(true)];
    let mut rows = vec![vec![X::S("type"), X::S("prompt"), X::S("correct")]];
    rows.extend(std::iter::repeat_n(row, ROWS_MAX + 1));
    assert_eq!(
        parse(&xlsx(&rows), Format::Xlsx),
        Err(ImportError::TooManyRows { max: ROWS_MAX })
    );
    rows.pop();
    assert_eq!(
        parse(&xlsx(&rows), Format::Xlsx).map(|q| q.len()),
        Ok(ROWS_MAX)
    );
}

#[test]
fn a_value_beyond_the_column_cap_is_refused_without_building_a_dense_sheet() {
    let mut text = String::from("type,prompt,correct");
    text.push_str(&",".repeat(COLUMNS_MAX));
    text.push_str("x\n");
    assert_eq!(
        parse(text.as_bytes(), Format::Csv),
        Err(ImportError::TooManyColumns { max: COLUMNS_MAX })
    );
    // A single far-away cell (XFD1048576) must not make anyone allocate the whole sheet.
    let sheet = r#"<row r="1"><c r="A1" t="inlineStr"><is><t>type</t></is></c></row>
<row r="1048576"><c r="XFD1048576"><v>1</v></c></row>"#;
    assert_eq!(
        parse(&crate::files::handwritten_xlsx(sheet, &[]), Format::Xlsx),
        Err(ImportError::TooManyColumns { max: COLUMNS_MAX })
    );
    let sheet = r#"<row r="1"><c r="A1" t="inlineStr"><is><t>type</t></is></c></row>
<row r="1048576"><c r="A1048576"><v>1</v></c></row>"#;
    assert!(matches!(
        parse(&crate::files::handwritten_xlsx(sheet, &[]), Format::Xlsx),
        Err(ImportError::MissingColumn { .. })
    ));
}

/// One long shared string (stored once, a few KiB compressed) named by many cells: each cell
/// would copy it. Refused once the copies would pass the sheet's text budget.
#[test]
fn one_long_shared_string_named_by_many_cells_is_refused() {
    let long = "a".repeat(MIB);
    let mut sheet = String::new();
    for row in 1..=20 {
        sheet.push_str(&format!("<row r=\"{row}\">"));
        for column in 0..COLUMNS_MAX {
            let letter = char::from(b'A' + (column % 26) as u8);
            let prefix = if column >= 26 {
                char::from(b'A' + (column / 26 - 1) as u8).to_string()
            } else {
                String::new()
            };
            sheet.push_str(&format!(
                "<c r=\"{prefix}{letter}{row}\" t=\"s\"><v>0</v></c>"
            ));
        }
        sheet.push_str("</row>");
    }
    let file = handwritten_xlsx(&sheet, &[&long]);
    assert!(file.len() < 64 * 1024, "the file is small: {}", file.len());
    assert_eq!(
        parse(&file, Format::Xlsx),
        Err(ImportError::TooMuchText {
            max_bytes: XLSX_TEXT_BYTES_MAX
        })
    );
}

/// A cell longer than any field can be is a row error, in CSV as in XLSX, and is not copied.
#[test]
fn a_cell_longer_than_the_cell_limit_is_a_row_error() {
    let prompt = "p".repeat(TEXT_CELL_BYTES_MAX + 1);
    let text = format!("type,prompt,correct\nshort_text,{prompt},x\n");
    let Err(ImportError::Rows(errors)) = parse(text.as_bytes(), Format::Csv) else {
        panic!("expected row errors");
    };
    assert_eq!(
        errors
            .iter()
            .map(|e| (e.row, e.column.as_str(), e.code))
            .collect::<Vec<_>>(),
        [(2, "prompt", "unsupported_cell")]
    );
    let file = xlsx(&[
        vec![X::S("type"), X::S("prompt"), X::S("correct")],
        vec![X::S("short_text"), X::S(prompt.clone().leak()), X::S("x")],
    ]);
    let Err(ImportError::Rows(errors)) = parse(&file, Format::Xlsx) else {
        panic!("expected row errors");
    };
    assert_eq!(errors[0].code, "unsupported_cell");
}

/// A cell listing thousands of options or correct entries is refused by its length, not
/// matched entry against entry (that was quadratic) nor reported item by item.
#[test]
fn long_lists_in_a_cell_are_refused_by_their_length() {
    let list = (0..2_000)
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join("|");
    let text = format!(
        "type,prompt,options,correct\nmultiple_choice,p,{list},{list}\nmultiple_choice,p,a|b,{list}\n"
    );
    let Err(ImportError::Rows(errors)) = parse(text.as_bytes(), Format::Csv) else {
        panic!("expected row errors");
    };
    let found: Vec<(u64, &str, &str)> = errors
        .iter()
        .map(|e| (e.row, e.column.as_str(), e.code))
        .collect();
    assert_eq!(
        found,
        [
            (2, "options", "invalid_length"),
            (3, "correct", "invalid_length")
        ]
    );
}

/// A workbook whose `sheetData` is `header` and one valid question, with `styles` as its
/// styles part.
fn with_styles(styles: &str) -> Vec<u8> {
    let sheet = r#"<row r="1">
  <c r="A1" t="inlineStr"><is><t>type</t></is></c>
  <c r="B1" t="inlineStr"><is><t>prompt</t></is></c>
  <c r="C1" t="inlineStr"><is><t>correct</t></is></c>
</row>
<row r="2">
  <c r="A2" t="inlineStr" s="0"><is><t>true_false</t></is></c>
  <c r="B2" t="inlineStr"><is><t>Styled?</t></is></c>
  <c r="C2" t="b"><v>1</v></c>
</row>"#;
    handwritten_xlsx_with(sheet, &[], &[("xl/styles.xml", styles.as_bytes())])
}

fn styles(format_code: &str, font_name: &str, xfs: usize) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<styleSheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">
<numFmts count="1"><numFmt numFmtId="164" formatCode="{format_code}"/></numFmts>
<fonts count="1"><font><sz val="11"/><name val="{font_name}"/></font></fonts>
<cellXfs count="{xfs}">{}</cellXfs>
</styleSheet>"#,
        r#"<xf numFmtId="164" fontId="0"/>"#.repeat(xfs)
    )
}

/// calamine copies a format code and a font name into every cell format naming them, before
/// reading a cell: a long one named by many formats asked for terabytes (an abort). The
/// values past Excel's own limits are refused (here one copy of each, which calamine would
/// read harmlessly; `xlsx_input::tests` has the shapes that abort).
#[test]
fn style_values_and_cell_formats_past_excels_limits_are_refused() {
    let long = "0".repeat(XLSX_STYLE_ATTRIBUTE_CHARS_MAX + 1);
    let longest = "0".repeat(XLSX_STYLE_ATTRIBUTE_CHARS_MAX);
    for refused in [
        styles(&long, "Calibri", 1),
        styles("0.00", &long, 1),
        styles("0.00", "Calibri", XLSX_STYLE_XFS_MAX + 1),
    ] {
        let result = parse(&with_styles(&refused), Format::Xlsx);
        assert!(
            matches!(result, Err(ImportError::NotXlsx { .. })),
            "{result:?}"
        );
    }
    for accepted in [
        styles(&longest, &longest, 1),
        styles("0.00", "Calibri", XLSX_STYLE_XFS_MAX),
    ] {
        assert_eq!(
            parse(&with_styles(&accepted), Format::Xlsx).map(|q| q.len()),
            Ok(1)
        );
    }
}

/// calamine reserves the declared `uniqueCount` of shared strings up front (10^13 aborted the
/// process); a count the part cannot hold (5 bytes a string at least) is refused. Here the
/// count is small enough that calamine would read it harmlessly.
#[test]
fn a_shared_string_count_the_part_cannot_hold_is_refused() {
    let sheet = r#"<row r="1">
  <c r="A1" t="s"><v>0</v></c><c r="B1" t="s"><v>1</v></c><c r="C1" t="s"><v>2</v></c>
</row>
<row r="2">
  <c r="A2" t="inlineStr"><is><t>true_false</t></is></c>
  <c r="B2" t="inlineStr"><is><t>p</t></is></c>
  <c r="C2" t="b"><v>1</v></c>
</row>"#;
    let strings = |unique_count: usize| {
        format!(
            r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" count="3" uniqueCount="{unique_count}"><si><t>type</t></si><si><t>prompt</t></si><si><t>correct</t></si></sst>"#
        )
    };
    let fits = strings(3);
    let file = |part: &str| {
        handwritten_xlsx_with(sheet, &[], &[("xl/sharedStrings.xml", part.as_bytes())])
    };
    assert_eq!(parse(&file(&fits), Format::Xlsx).map(|q| q.len()), Ok(1));
    let result = parse(&file(&strings(fits.len())), Format::Xlsx);
    assert!(
        matches!(result, Err(ImportError::NotXlsx { .. })),
        "{result:?}"
    );
}

/// The domain counts characters, and a character takes up to 4 bytes: the longest lists a
/// question may hold, in 4-byte characters, import from a cell as they do as JSON.
#[test]
fn the_longest_values_the_domain_accepts_fit_in_a_cell() {
    // Distinct letters of 4 bytes each (U+1D400 MATHEMATICAL BOLD CAPITAL A onwards; they
    // fold to different keys).
    let wide = |i: usize, chars: usize| {
        let c = char::from_u32(0x1D400 + i as u32).expect("a character");
        assert_eq!(c.len_utf8(), 4);
        c.to_string().repeat(chars)
    };
    let options: Vec<String> = (0..OPTIONS_MAX)
        .map(|i| wide(i, OPTION_CHARS_MAX))
        .collect();
    let answers: Vec<String> = (0..ACCEPTED_ANSWERS_MAX)
        .map(|i| wide(i, ACCEPTED_ANSWER_CHARS_MAX))
        .collect();
    let (options, answers) = (options.join("|"), answers.join("|"));
    assert_eq!(options.len(), TEXT_CELL_BYTES_MAX);
    let text = format!(
        "type,prompt,options,correct\nsingle_choice,p,{options},2\nshort_text,p,,{answers}\n"
    );
    let questions = parse(text.as_bytes(), Format::Csv).expect("imports");
    assert_eq!(questions.len(), 2);
    let AnswerKey::SingleChoice { options: read, .. } = questions[0].key() else {
        panic!("a single choice question");
    };
    assert_eq!(read.len(), OPTIONS_MAX);
    let file = xlsx(&[
        vec![
            X::S("type"),
            X::S("prompt"),
            X::S("options"),
            X::S("correct"),
        ],
        vec![
            X::S("single_choice"),
            X::S("p"),
            X::S(options.leak()),
            X::S("2"),
        ],
        vec![
            X::S("short_text"),
            X::S("p"),
            X::Blank,
            X::S(answers.leak()),
        ],
    ]);
    assert_eq!(parse(&file, Format::Xlsx).map(|q| q.len()), Ok(2));
}

/// An error quotes at most 80 characters of a cell: quoting a long cell whole (escaped), in
/// each of its errors, made a refusal tens of MiB long.
#[test]
fn errors_quote_at_most_80_characters_of_a_cell() {
    let long = "\u{1}".repeat(TEXT_CELL_BYTES_MAX);
    let text = format!(
        "type,prompt,correct,points\n{long},p,x,{long}\nnumeric,p,{long},1\ntrue_false,p,{long},1\n"
    );
    let Err(ImportError::Rows(errors)) = parse(text.as_bytes(), Format::Csv) else {
        panic!("expected row errors");
    };
    assert_eq!(errors.len(), 4, "{errors:?}");
    for error in &errors {
        let escaped = "\\u{1}".repeat(QUOTED_CHARS_MAX);
        assert!(
            error.detail.contains(&format!("\"{escaped}…\"")),
            "{}",
            error.detail
        );
        assert!(error.detail.len() < 700, "{}", error.detail.len());
    }
    let header = "x".repeat(TEXT_CELL_BYTES_MAX);
    let text = format!("type,prompt,correct,{header}\n");
    let Err(e @ ImportError::UnknownColumn { .. }) = parse(text.as_bytes(), Format::Csv) else {
        panic!("expected an unknown column");
    };
    assert!(e.to_string().len() < 200, "{e}");
}
