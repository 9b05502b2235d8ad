//! Caps: zip bombs, lying archive sizes, rows, columns.

use crate::files::{X, handwritten_xlsx, xlsx};
use std::io::{Cursor, Write};
use std::time::{Duration, Instant};
use trueline_import::{
    COLUMNS_MAX, Format, ImportError, ROWS_MAX, TEXT_CELL_BYTES_MAX, UPLOAD_BYTES_MAX,
    XLSX_DECOMPRESSED_BYTES_MAX, XLSX_TEXT_BYTES_MAX, parse,
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
    // Only the 50 MiB budget is ever inflated, not the 400 MiB.
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
