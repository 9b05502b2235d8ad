//! XLSX: the first visible worksheet of the workbook (the first worksheet when all are hidden),
//! read with calamine after a zip-bomb pre-check. A hidden sheet is one the person who
//! uploads the file does not see: a template's notes, a lookup table.
//!
//! The pre-check opens the archive itself and streams every entry through a reader bounded by
//! what is left of [`XLSX_DECOMPRESSED_BYTES_MAX`]; the declared sizes in the archive are never
//! trusted (they can lie), and reading stops as soon as the budget is exceeded, so a bomb costs
//! at most that many bytes of inflation. The styles and shared-strings parts are read as XML on
//! the way, for what calamine would copy or reserve from them ([`check_styles`],
//! [`shared_strings_declared`]): an allocation that fails aborts the process, which no
//! `catch_unwind` can turn into an error. Only then does calamine parse the archive, and cells
//! are streamed ([`calamine::Xlsx::worksheet_cells_reader`]) into a sparse table capped in rows
//! and columns, never a dense range (a single cell at `XFD1048576` would make calamine's dense
//! `Range` allocate billions of cells).
//!
//! calamine runs inside [`std::panic::catch_unwind`]: it is a third-party parser fed untrusted
//! bytes, and the robustness proptest found hostile XML that makes it panic (an arithmetic
//! overflow on a huge row number in `r="A99999999999"`, in builds with overflow checks). A
//! panic there becomes [`ImportError::NotXlsx`], never a failed request. (The default panic
//! hook still prints the panic message; it holds no file content.)

use crate::table::{Cell, Row, Table, text_cell};
use crate::{
    COLUMNS_MAX, ImportError, ROWS_MAX, TEXT_CELL_BYTES_MAX, XLSX_DECOMPRESSED_BYTES_MAX,
    XLSX_ENTRIES_MAX, XLSX_STYLE_ATTRIBUTE_CHARS_MAX, XLSX_STYLE_XFS_MAX, XLSX_TEXT_BYTES_MAX,
};
use calamine::{DataRef, Reader, SheetType, SheetVisible, Xlsx};
use quick_xml::events::Event;
use std::collections::BTreeMap;
use std::io::{self, Cursor, Read};
use std::panic::AssertUnwindSafe;

pub(crate) fn read(bytes: &[u8]) -> Result<Table, ImportError> {
    check_archive(bytes)?;
    // `read_sheet` only reads `bytes` and builds values it returns; nothing observable is left
    // half-updated if calamine unwinds, so asserting unwind safety is sound.
    std::panic::catch_unwind(AssertUnwindSafe(|| read_sheet(bytes))).unwrap_or_else(|_| {
        Err(ImportError::NotXlsx {
            detail: "the worksheet is malformed (the spreadsheet reader gave up on it)".into(),
        })
    })
}

fn read_sheet(bytes: &[u8]) -> Result<Table, ImportError> {
    let mut workbook = Xlsx::new(Cursor::new(bytes)).map_err(not_xlsx)?;
    let worksheets = || {
        workbook
            .sheets_metadata()
            .iter()
            .filter(|sheet| sheet.typ == SheetType::WorkSheet)
    };
    let sheet = worksheets()
        .find(|sheet| sheet.visible == SheetVisible::Visible)
        .or_else(|| worksheets().next())
        .map(|sheet| sheet.name.clone())
        .ok_or(ImportError::NoWorksheet)?;
    let mut cells = workbook.worksheet_cells_reader(&sheet).map_err(not_xlsx)?;
    // Row → column → cell; both bounded below, so a hostile sheet cannot grow this.
    let mut rows: BTreeMap<u32, BTreeMap<usize, Cell>> = BTreeMap::new();
    // Text copied out of the workbook so far: shared strings are stored once but copied per
    // cell, so this (not the file's size) is what the copies cost.
    let mut text_bytes = 0usize;
    while let Some(cell) = cells.next_cell_with_formula_metadata().map_err(not_xlsx)? {
        let text_len = match &cell.value {
            DataRef::String(s) => s.len(),
            DataRef::SharedString(s) => s.len(),
            _ => 0,
        };
        if text_len > 0 {
            text_bytes += text_len.min(TEXT_CELL_BYTES_MAX + 1);
            if text_bytes > XLSX_TEXT_BYTES_MAX {
                return Err(ImportError::TooMuchText {
                    max_bytes: XLSX_TEXT_BYTES_MAX,
                });
            }
        }
        // A formula whose result was never saved (a file written by a program, not by a
        // spreadsheet) reads as empty: an empty `points` would silently become 1. A saved
        // result that is empty text (`=IF(A5="","",1)`) is a result, and an empty cell.
        let value = match (&cell.value, &cell.formula) {
            (DataRef::Empty, Some(_)) => Cell::Unsupported(
                "a formula without a saved result (open and save the file in a spreadsheet, \
                 or paste the values)"
                    .into(),
            ),
            (value, _) => match convert(value) {
                Some(value) => value,
                None => continue,
            },
        };
        let (row, column) = cell.pos;
        let column = usize::try_from(column).unwrap_or(usize::MAX);
        if column >= COLUMNS_MAX {
            return Err(ImportError::TooManyColumns { max: COLUMNS_MAX });
        }
        if !rows.contains_key(&row) && rows.len() > ROWS_MAX {
            // The header plus ROWS_MAX data rows are already held.
            return Err(ImportError::TooManyRows { max: ROWS_MAX });
        }
        rows.entry(row).or_default().insert(column, value);
    }
    // A number shown as `15%` or `1/2` is saved as 0.15 or 0.5: taken as the saved value it
    // would be a key the author never wrote. Which cells are shown so is known only from
    // their style, read in a second pass over the sheet (only when the workbook has such a
    // format at all; calamine reads values and styles in separate passes).
    let shown_as: BTreeMap<usize, &'static str> = cells
        .styles()
        .iter()
        .enumerate()
        .filter_map(|(id, style)| {
            let format = style.number_format.as_ref()?;
            number_shown_as(&format.format_code, format.format_id).map(|what| (id, what))
        })
        .collect();
    drop(cells);
    if !shown_as.is_empty() {
        let mut styles = workbook.worksheet_cells_reader(&sheet).map_err(not_xlsx)?;
        while let Some((row, column, style)) = styles.next_style_id().map_err(not_xlsx)? {
            let Some(what) = shown_as.get(&style) else {
                continue;
            };
            let column = usize::try_from(column).unwrap_or(usize::MAX);
            if let Some(cell) = rows.get_mut(&row).and_then(|cells| cells.get_mut(&column))
                && let Cell::Number(x) = *cell
            {
                *cell = Cell::Unsupported(format!("a {what} (saved as the number {x})"));
            }
        }
    }
    let mut table = Table::default();
    for (row, cells) in rows {
        table.push(Row {
            number: u64::from(row) + 1,
            cells: cells.into_iter().collect(),
        })?;
    }
    Ok(table)
}

/// What a number format shows a number as, when that is not the number itself: `percentage`
/// for a `%` in the code (built-in formats 9 `0%` and 10 `0.00%`), `fraction` for a `/`
/// (built-in 12 `# ?/?` and 13 `# ??/??`; date formats have one too, but calamine reads
/// those cells as dates). Quoted text, escaped characters and `[…]` sections (colours,
/// conditions, locales) are not format characters.
fn number_shown_as(code: &str, id: Option<u32>) -> Option<&'static str> {
    match id {
        Some(9 | 10) => return Some("percentage"),
        Some(12 | 13) => return Some("fraction"),
        _ => {}
    }
    let (mut quoted, mut escaped, mut bracketed) = (false, false, false);
    for c in code.chars() {
        match c {
            _ if escaped => escaped = false,
            '"' => quoted = !quoted,
            _ if quoted => {}
            // `\x` is a literal x; `_x` a space as wide as x; `*x` x repeated to fill.
            '\\' | '_' | '*' => escaped = true,
            '[' => bracketed = true,
            ']' => bracketed = false,
            _ if bracketed => {}
            '%' => return Some("percentage"),
            '/' => return Some("fraction"),
            _ => {}
        }
    }
    None
}

/// A cell as the import sees it; `None` for an empty cell.
fn convert(value: &DataRef<'_>) -> Option<Cell> {
    match value {
        DataRef::Empty => None,
        DataRef::String(s) => text_cell(s),
        DataRef::SharedString(s) => text_cell(s),
        DataRef::Float(x) => Some(Cell::Number(as_displayed(*x))),
        // Exact up to 2^53; a wider integer goes on as its digits, which the row rules
        // refuse as out of range rather than read as a rounded double.
        DataRef::Int(i) if i.unsigned_abs() > 9_007_199_254_740_991 => {
            Some(Cell::Text(i.to_string()))
        }
        DataRef::Int(i) => Some(Cell::Number(*i as f64)),
        DataRef::Bool(b) => Some(Cell::Bool(*b)),
        DataRef::DateTime(_) | DataRef::DateTimeIso(_) => {
            Some(Cell::Unsupported("a date or time".into()))
        }
        DataRef::DurationIso(_) => Some(Cell::Unsupported("a duration".into())),
        DataRef::Error(e) => Some(Cell::Unsupported(format!("the error value {e}"))),
    }
}

/// `x` rounded to the 15 significant digits a spreadsheet shows and computes in: `=0.1+0.2` is
/// saved as 0.30000000000000004 and `=0.1*30` as 2.9999999999999996, which the person sees as
/// 0.3 and 3 (an answer key of 0.30000000000000004, or points refused as not whole, would
/// not be what they wrote).
fn as_displayed(x: f64) -> f64 {
    // Scientific notation with 14 digits after the point is 15 significant digits. The text
    // always parses back; only the largest numbers round up past f64::MAX, and stay as they are.
    format!("{x:.14e}")
        .parse::<f64>()
        .ok()
        .filter(|rounded| rounded.is_finite() == x.is_finite())
        .unwrap_or(x)
}

fn not_xlsx(e: impl std::fmt::Display) -> ImportError {
    ImportError::NotXlsx {
        detail: e.to_string(),
    }
}

/// Refuses archives that are not zip files, are encrypted or corrupt, hold too many entries,
/// or inflate to more than [`XLSX_DECOMPRESSED_BYTES_MAX`] in total, and workbooks whose styles
/// or shared strings would make calamine allocate far more than the archive inflates to (see
/// [`check_styles`] and [`shared_strings_declared`]).
fn check_archive(bytes: &[u8]) -> Result<(), ImportError> {
    let mut archive = zip::ZipArchive::new(Cursor::new(bytes)).map_err(not_xlsx)?;
    if archive.len() > XLSX_ENTRIES_MAX {
        return Err(ImportError::TooManyEntries {
            max: XLSX_ENTRIES_MAX,
        });
    }
    let mut budget = XLSX_DECOMPRESSED_BYTES_MAX;
    for index in 0..archive.len() {
        let mut entry = archive.by_index(index).map_err(not_xlsx)?;
        // calamine finds parts by name ignoring case, and the workbook's folder is wherever
        // `_rels/.rels` puts it: any entry that ends like a styles or shared-strings part may
        // be the one it reads.
        let name = entry.name().map_err(not_xlsx)?.to_ascii_lowercase();
        // One byte past the budget is enough to know it is exceeded.
        let mut bounded = entry.by_ref().take(budget + 1);
        let scanned = if name.ends_with("sharedstrings.xml") {
            shared_strings_declared(&mut bounded)
        } else if name.ends_with("styles.xml") {
            check_styles(&mut bounded).map(|()| 0)
        } else {
            Ok(0)
        };
        // Whatever the scan left unread is inflated too: the size decides first, so a bomb is
        // reported as one even when its cut-off XML is malformed.
        let rest = io::copy(&mut bounded, &mut io::sink());
        let inflated = budget + 1 - bounded.limit();
        if inflated > budget {
            return Err(ImportError::ZipBomb {
                max_bytes: XLSX_DECOMPRESSED_BYTES_MAX,
            });
        }
        rest.map_err(|e| not_xlsx(format!("entry {index} is corrupt: {e}")))?;
        let strings_declared = scanned?;
        // calamine reserves room for the declared number of strings up front; the smallest
        // string, `<si/>`, takes 5 bytes, so a part cannot hold more than a fifth of its size.
        let strings_max = inflated / SHARED_STRING_BYTES_MIN;
        if strings_declared > strings_max {
            return Err(not_xlsx(format!(
                "the shared strings part declares {strings_declared} strings; its {inflated} \
                 bytes hold at most {strings_max}"
            )));
        }
        budget -= inflated;
    }
    Ok(())
}

/// Bytes of the smallest shared string, `<si/>`.
const SHARED_STRING_BYTES_MIN: u64 = 5;

/// An XML reader configured as calamine configures its own, so both see the same elements.
fn xml_reader<R: Read>(part: R) -> quick_xml::Reader<io::BufReader<R>> {
    let mut reader = quick_xml::Reader::from_reader(io::BufReader::new(part));
    let config = reader.config_mut();
    config.check_end_names = false;
    config.check_comments = false;
    config.trim_text(false);
    reader
}

/// Refuses a styles part with an attribute value longer than
/// [`XLSX_STYLE_ATTRIBUTE_CHARS_MAX`] or more than [`XLSX_STYLE_XFS_MAX`] cell formats.
///
/// calamine copies a cell format's number format code and font (name included) into every
/// cell format (`xf`) naming them, while parsing the workbook, before a cell is read: one
/// format code of 20 MiB named by 1.4 million `<xf numFmtId="164"/>` (50 MiB of XML) asked for
/// terabytes, and a failed allocation aborts the process (`catch_unwind` cannot catch it).
/// Bounding both bounds the copies: at worst 64,000 × two values of 255 four-byte characters
/// (about 128 MiB), at most about 33 MiB in ASCII; a real workbook has a few dozen formats.
fn check_styles(part: impl Read) -> Result<(), ImportError> {
    let mut reader = xml_reader(part);
    let mut buf = Vec::new();
    let mut xfs = 0usize;
    // Only the cell formats (`cellXfs`) are counted, as calamine copies them and as Excel
    // bounds them; the cell style formats (`cellStyleXfs`) are not copied.
    let mut in_cell_xfs = false;
    loop {
        buf.clear();
        let event = reader
            .read_event_into(&mut buf)
            .map_err(|e| not_xlsx(format!("the styles part is malformed: {e}")))?;
        let element = match event {
            Event::Start(element) => {
                if element.local_name().as_ref() == "cellXfs" {
                    in_cell_xfs = true;
                }
                element
            }
            Event::Empty(element) => element,
            Event::End(end) => {
                if end.local_name().as_ref() == "cellXfs" {
                    in_cell_xfs = false;
                }
                continue;
            }
            Event::Eof => return Ok(()),
            _ => continue,
        };
        if in_cell_xfs && element.local_name().as_ref() == "xf" {
            xfs += 1;
            if xfs > XLSX_STYLE_XFS_MAX {
                return Err(not_xlsx(format!(
                    "the styles part has more than {XLSX_STYLE_XFS_MAX} cell formats"
                )));
            }
        }
        for attribute in element.attributes().with_checks(false) {
            let attribute =
                attribute.map_err(|e| not_xlsx(format!("the styles part is malformed: {e}")))?;
            // Counted as calamine decodes it (entities resolved); undecodable, as written.
            let chars = quick_xml::escape::unescape(&attribute.value)
                .map_or_else(|_| attribute.value.chars().count(), |v| v.chars().count());
            if chars > XLSX_STYLE_ATTRIBUTE_CHARS_MAX {
                return Err(not_xlsx(format!(
                    "a value in the styles part is {chars} characters long; at most \
                     {XLSX_STYLE_ATTRIBUTE_CHARS_MAX} are allowed"
                )));
            }
        }
    }
}

/// The largest `uniqueCount` a shared-strings part declares (0 when none does).
///
/// calamine reserves room for that many strings before reading one: `uniqueCount` of 10^13 in
/// a part of a few bytes was an allocation failure, which aborts the process. The caller
/// compares it with the part's inflated size. (`count`, the number of cells naming a shared
/// string, is not checked: calamine ignores it, and a sheet naming one string in every cell
/// rightly declares a count far above what the part could hold as distinct strings.)
fn shared_strings_declared(part: impl Read) -> Result<u64, ImportError> {
    let mut reader = xml_reader(part);
    let mut buf = Vec::new();
    let mut declared = 0u64;
    loop {
        buf.clear();
        let event = reader
            .read_event_into(&mut buf)
            .map_err(|e| not_xlsx(format!("the shared strings part is malformed: {e}")))?;
        let element = match event {
            Event::Start(element) | Event::Empty(element) => element,
            Event::Eof => return Ok(declared),
            _ => continue,
        };
        if element.local_name().as_ref() != "sst" {
            continue;
        }
        for attribute in element.attributes().with_checks(false) {
            let attribute = attribute
                .map_err(|e| not_xlsx(format!("the shared strings part is malformed: {e}")))?;
            let value = attribute.value.as_ref();
            // calamine reads only plain digits (leading zeros allowed); anything else it
            // ignores, and a number of digits too large for 64 bits is as absurd as it looks.
            if attribute.key.local_name().as_ref() == "uniqueCount"
                && !value.is_empty()
                && value.bytes().all(|b| b.is_ascii_digit())
            {
                declared = declared.max(value.parse().unwrap_or(u64::MAX));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! The pre-check alone, on the shapes that abort the process inside calamine: these must
    //! never reach `parse` in a test (without the check, the test binary would die).

    use super::*;
    use std::io::Write;
    use zip::write::SimpleFileOptions;

    const MIB: usize = 1024 * 1024;

    fn archive(entries: &[(&str, &str)]) -> Vec<u8> {
        let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let options = SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .compression_level(Some(9));
        for (name, contents) in entries {
            writer.start_file(*name, options).expect("entry started");
            writer
                .write_all(contents.as_bytes())
                .expect("entry written");
        }
        writer.finish().expect("archive finished").into_inner()
    }

    fn refused(entries: &[(&str, &str)]) -> bool {
        matches!(
            check_archive(&archive(entries)),
            Err(ImportError::NotXlsx { .. })
        )
    }

    /// The attack scaled to fit the decompressed budget: 300,000 cell formats naming a format
    /// code of 1 MiB (6.7 MiB of XML) would have calamine copy 300 GB.
    #[test]
    fn integer_cells_a_double_cannot_hold_go_on_as_their_digits() {
        let exact = 9_007_199_254_740_991_i64;
        assert_eq!(
            convert(&DataRef::Int(exact)),
            Some(Cell::Number(exact as f64))
        );
        assert_eq!(
            convert(&DataRef::Int(-exact - 2)),
            Some(Cell::Text("-9007199254740993".into()))
        );
        assert_eq!(
            convert(&DataRef::Int(i64::MIN)),
            Some(Cell::Text(i64::MIN.to_string()))
        );
    }

    #[test]
    fn a_long_format_code_named_by_many_cell_formats_is_refused() {
        let styles = format!(
            r#"<styleSheet><numFmts count="1"><numFmt numFmtId="164" formatCode="{}"/></numFmts><cellXfs>{}</cellXfs></styleSheet>"#,
            "0".repeat(MIB),
            r#"<xf numFmtId="164"/>"#.repeat(300_000)
        );
        assert!(styles.len() < XLSX_DECOMPRESSED_BYTES_MAX as usize);
        assert!(refused(&[("xl/styles.xml", &styles)]));
        // Either half alone is refused too, wherever the part is and however it is spelled.
        let code_only = format!(
            r#"<styleSheet><numFmts><numFmt numFmtId="164" formatCode="{}"/></numFmts></styleSheet>"#,
            "0".repeat(XLSX_STYLE_ATTRIBUTE_CHARS_MAX + 1)
        );
        assert!(refused(&[("book/STYLES.XML", &code_only)]));
        let formats_only = format!(
            "<styleSheet><cellXfs>{}</cellXfs></styleSheet>",
            "<xf/>".repeat(XLSX_STYLE_XFS_MAX + 1)
        );
        assert!(refused(&[("xl\\styles.xml", &formats_only)]));
    }

    #[test]
    fn a_long_font_name_is_refused() {
        let styles = format!(
            r#"<styleSheet><fonts><font><name val="{}"/></font></fonts><cellXfs>{}</cellXfs></styleSheet>"#,
            "F".repeat(MIB),
            r#"<xf fontId="0"/>"#.repeat(300_000)
        );
        assert!(refused(&[("xl/styles.xml", &styles)]));
    }

    #[test]
    fn style_values_are_counted_in_characters_as_calamine_decodes_them() {
        let styles = |code: &str| {
            format!(
                r#"<styleSheet><numFmts><numFmt numFmtId="164" formatCode="{code}"/></numFmts><cellXfs><xf numFmtId="164"/></cellXfs></styleSheet>"#
            )
        };
        // 255 characters of 4 bytes, and 255 quotes written as `&quot;`: both fit.
        let wide = "𝒜".repeat(XLSX_STYLE_ATTRIBUTE_CHARS_MAX);
        let quotes = "&quot;".repeat(XLSX_STYLE_ATTRIBUTE_CHARS_MAX);
        let formats = "<xf/>".repeat(XLSX_STYLE_XFS_MAX - 1);
        // Cell style formats are not cell formats: calamine copies nothing into them.
        let style_formats = "<xf/>".repeat(XLSX_STYLE_XFS_MAX + 1);
        for fits in [
            styles(&wide),
            styles(&quotes),
            format!("<styleSheet><cellXfs>{formats}</cellXfs></styleSheet>"),
            format!(
                "<styleSheet><cellStyleXfs>{style_formats}</cellStyleXfs><cellXfs><xf/></cellXfs></styleSheet>"
            ),
        ] {
            check_archive(&archive(&[("xl/styles.xml", &fits)])).expect("fits");
        }
    }

    /// calamine reserves `uniqueCount` strings before reading one: 10^13 is an allocation
    /// failure (an abort), from a part of a few dozen bytes.
    #[test]
    fn a_shared_string_count_the_part_cannot_hold_is_refused() {
        for count in [
            "10000000000000",
            "99999999999999999999999",
            "00000000000000000041",
        ] {
            let strings = format!(r#"<sst uniqueCount="{count}"><si><t>a</t></si></sst>"#);
            assert!(strings.len() / 5 < 41, "{strings}");
            // Wherever `_rels/.rels` moved the workbook's folder, in any case.
            for name in ["xl/sharedStrings.xml", "book/SHAREDSTRINGS.XML"] {
                assert!(refused(&[(name, &strings)]), "{name} {count}");
            }
        }
        // A count the part can hold passes, and so does `count` (the cells naming a shared
        // string, which calamine ignores and a real sheet rightly declares high).
        let strings = r#"<sst count="100000" uniqueCount="1"><si><t>a</t></si></sst>"#;
        check_archive(&archive(&[("xl/sharedStrings.xml", strings)])).expect("fits");
    }

    #[test]
    fn the_decompressed_budget_decides_before_the_xml_of_a_part() {
        // Cut off by the budget, the XML is malformed (a tag never closed); what is reported
        // is the size.
        let huge = format!(r#"<sst uniqueCount="1" x="{}"/>"#, "a".repeat(9 * MIB));
        assert_eq!(
            check_archive(&archive(&[("xl/sharedStrings.xml", &huge)])),
            Err(ImportError::ZipBomb {
                max_bytes: XLSX_DECOMPRESSED_BYTES_MAX
            })
        );
    }

    #[test]
    fn percentage_and_fraction_formats_are_recognised_and_others_are_not() {
        for (code, id, shown) in [
            ("0%", Some(9), Some("percentage")),
            ("General", Some(10), Some("percentage")),
            ("0.0%", Some(164), Some("percentage")),
            ("[Red]0.00%;-0%", None, Some("percentage")),
            ("# ?/?", Some(12), Some("fraction")),
            ("# ??/16", Some(165), Some("fraction")),
            ("General", Some(0), None),
            ("0.00", Some(2), None),
            ("#,##0", Some(3), None),
            ("0.00\\%", None, None),
            ("0 \"%\"", None, None),
            ("0_%", None, None),
            ("[$%-409]0", None, None),
        ] {
            assert_eq!(number_shown_as(code, id), shown, "{code} {id:?}");
        }
    }

    #[test]
    fn numbers_are_rounded_to_the_fifteen_digits_a_spreadsheet_shows() {
        assert_eq!(as_displayed(0.1 + 0.2), 0.3);
        assert_eq!(as_displayed(0.1 * 30.0), 3.0);
        assert_eq!(as_displayed(2.75), 2.75);
        assert_eq!(as_displayed(123_456_789_012_345.0), 123_456_789_012_345.0);
        assert_eq!(as_displayed(-1e-300), -1e-300);
        assert_eq!(as_displayed(f64::MAX), f64::MAX);
        assert_eq!(as_displayed(f64::INFINITY), f64::INFINITY);
        assert!(as_displayed(f64::NAN).is_nan());
    }
}
