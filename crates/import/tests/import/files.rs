//! Builders for test files.

use rust_xlsxwriter::{ExcelDateTime, Format, Workbook};
use std::io::{Cursor, Write};
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

/// A spreadsheet cell for [`xlsx`].
#[derive(Debug, Clone)]
pub enum X {
    S(&'static str),
    N(f64),
    B(bool),
    /// A formatted blank: rust_xlsxwriter writes it as a self-closing `<c r=".." s=".."/>`.
    Blank,
    Date,
    /// A number with a custom number format code.
    NumFormat(f64, &'static str),
    /// A number with a built-in number format, by its index.
    NumFormatIndex(f64, u8),
}

/// A workbook whose first worksheet holds `rows` from A1.
pub fn xlsx(rows: &[Vec<X>]) -> Vec<u8> {
    let mut workbook = Workbook::new();
    let sheet = workbook.add_worksheet();
    let blank = Format::new().set_bold();
    let date = Format::new().set_num_format("yyyy-mm-dd");
    for (r, row) in rows.iter().enumerate() {
        for (c, cell) in row.iter().enumerate() {
            let (r, c) = (r as u32, c as u16);
            match cell {
                X::S(s) => sheet.write_string(r, c, *s).map(|_| ()),
                X::N(x) => sheet.write_number(r, c, *x).map(|_| ()),
                X::B(b) => sheet.write_boolean(r, c, *b).map(|_| ()),
                X::Blank => sheet.write_blank(r, c, &blank).map(|_| ()),
                X::Date => sheet
                    .write_datetime_with_format(
                        r,
                        c,
                        ExcelDateTime::from_ymd(2024, 5, 1).expect("date"),
                        &date,
                    )
                    .map(|_| ()),
                X::NumFormat(x, code) => sheet
                    .write_number_with_format(r, c, *x, &Format::new().set_num_format(*code))
                    .map(|_| ()),
                X::NumFormatIndex(x, index) => sheet
                    .write_number_with_format(r, c, *x, &Format::new().set_num_format_index(*index))
                    .map(|_| ()),
            }
            .expect("cell written");
        }
    }
    workbook.save_to_buffer().expect("workbook saved")
}

/// A zip archive of `(name, contents)` entries, deflated.
pub fn zip(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut writer = ZipWriter::new(Cursor::new(Vec::new()));
    let options = SimpleFileOptions::default().compression_method(CompressionMethod::Deflated);
    for (name, contents) in entries {
        writer.start_file(*name, options).expect("entry started");
        writer.write_all(contents).expect("entry written");
    }
    writer.finish().expect("archive finished").into_inner()
}

/// A minimal workbook written by hand around `sheet_data` (the inside of `<sheetData>`), with
/// the given shared strings.
pub fn handwritten_xlsx(sheet_data: &str, shared_strings: &[&str]) -> Vec<u8> {
    handwritten_xlsx_with(sheet_data, shared_strings, &[])
}

/// [`handwritten_xlsx`] with `parts` (name, contents) replacing the entries of the same name
/// or added after them.
pub fn handwritten_xlsx_with(
    sheet_data: &str,
    shared_strings: &[&str],
    parts: &[(&str, &[u8])],
) -> Vec<u8> {
    let content_types = r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">
<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>
<Default Extension="xml" ContentType="application/xml"/>
<Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>
<Override PartName="/xl/worksheets/sheet1.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>
<Override PartName="/xl/sharedStrings.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sharedStrings+xml"/>
</Types>"#;
    let root_rels = r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">
<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" Target="xl/workbook.xml"/>
</Relationships>"#;
    let workbook = r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships">
<sheets><sheet name="Questions" sheetId="1" r:id="rId1"/></sheets>
</workbook>"#;
    let workbook_rels = r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">
<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet" Target="worksheets/sheet1.xml"/>
<Relationship Id="rId2" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/sharedStrings" Target="sharedStrings.xml"/>
</Relationships>"#;
    let sheet = format!(
        r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData>{sheet_data}</sheetData></worksheet>"#
    );
    let strings: String = shared_strings
        .iter()
        .map(|s| format!("<si><t xml:space=\"preserve\">{s}</t></si>"))
        .collect();
    let shared = format!(
        r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" count="{n}" uniqueCount="{n}">{strings}</sst>"#,
        n = shared_strings.len()
    );
    let mut entries: Vec<(&str, &[u8])> = vec![
        ("[Content_Types].xml", content_types.as_bytes()),
        ("_rels/.rels", root_rels.as_bytes()),
        ("xl/workbook.xml", workbook.as_bytes()),
        ("xl/_rels/workbook.xml.rels", workbook_rels.as_bytes()),
        ("xl/worksheets/sheet1.xml", sheet.as_bytes()),
        ("xl/sharedStrings.xml", shared.as_bytes()),
    ];
    for (name, contents) in parts {
        match entries.iter_mut().find(|(existing, _)| existing == name) {
            Some(entry) => entry.1 = contents,
            None => entries.push((name, contents)),
        }
    }
    zip(&entries)
}
