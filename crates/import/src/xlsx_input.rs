//! XLSX: the first worksheet of the workbook, read with calamine after a zip-bomb pre-check.
//!
//! The pre-check opens the archive itself and streams every entry through a reader bounded by
//! what is left of [`XLSX_DECOMPRESSED_BYTES_MAX`]; the declared sizes in the archive are never
//! trusted (they can lie), and reading stops as soon as the budget is exceeded, so a bomb costs
//! at most that many bytes of inflation. Only then does calamine parse the archive, and cells
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
    XLSX_ENTRIES_MAX, XLSX_TEXT_BYTES_MAX,
};
use calamine::{DataRef, Reader, SheetType, Xlsx};
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
    let sheet = workbook
        .sheets_metadata()
        .iter()
        .find(|sheet| sheet.typ == SheetType::WorkSheet)
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
        // spreadsheet) reads as empty: an empty `points` would silently become 1.
        let value = match (convert(&cell.value), &cell.formula) {
            (Some(value), _) => value,
            (None, Some(_)) => Cell::Unsupported(
                "a formula without a saved result (open and save the file in a spreadsheet, \
                 or paste the values)"
                    .into(),
            ),
            (None, None) => continue,
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
    let mut table = Table::default();
    for (row, cells) in rows {
        table.push(Row {
            number: u64::from(row) + 1,
            cells: cells.into_iter().collect(),
        })?;
    }
    Ok(table)
}

/// A cell as the import sees it; `None` for an empty cell.
fn convert(value: &DataRef<'_>) -> Option<Cell> {
    match value {
        DataRef::Empty => None,
        DataRef::String(s) => text_cell(s),
        DataRef::SharedString(s) => text_cell(s),
        DataRef::Float(x) => Some(Cell::Number(*x)),
        // Exact up to 2^53, far beyond any count or answer a question file holds.
        DataRef::Int(i) => Some(Cell::Number(*i as f64)),
        DataRef::Bool(b) => Some(Cell::Bool(*b)),
        DataRef::DateTime(_) | DataRef::DateTimeIso(_) => {
            Some(Cell::Unsupported("a date or time".into()))
        }
        DataRef::DurationIso(_) => Some(Cell::Unsupported("a duration".into())),
        DataRef::Error(e) => Some(Cell::Unsupported(format!("the error value {e}"))),
    }
}

fn not_xlsx(e: impl std::fmt::Display) -> ImportError {
    ImportError::NotXlsx {
        detail: e.to_string(),
    }
}

/// Refuses archives that are not zip files, are encrypted or corrupt, hold too many entries,
/// or inflate to more than [`XLSX_DECOMPRESSED_BYTES_MAX`] in total.
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
        // One byte past the budget is enough to know it is exceeded.
        let inflated = io::copy(&mut entry.by_ref().take(budget + 1), &mut io::sink())
            .map_err(|e| not_xlsx(format!("entry {index} is corrupt: {e}")))?;
        if inflated > budget {
            return Err(ImportError::ZipBomb {
                max_bytes: XLSX_DECOMPRESSED_BYTES_MAX,
            });
        }
        budget -= inflated;
    }
    Ok(())
}
