//! The format-neutral shape both readers produce: rows of non-empty cells with the row number
//! a person sees.

use crate::{COLUMNS_MAX, ImportError, QUOTED_CHARS_MAX, ROWS_MAX, TEXT_CELL_BYTES_MAX};

/// A non-empty cell.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Cell {
    /// Text as written (never only whitespace).
    Text(String),
    /// A spreadsheet number.
    Number(f64),
    /// A spreadsheet boolean.
    Bool(bool),
    /// A cell this import cannot use (a date, an error value); says what it is.
    Unsupported(String),
}

impl Cell {
    /// The text a person sees in the cell: numbers in their shortest form (`3`, not `3.0`).
    pub(crate) fn to_text(&self) -> String {
        match self {
            Cell::Text(s) => s.clone(),
            Cell::Number(x) => format!("{x}"),
            Cell::Bool(b) => if *b { "TRUE" } else { "FALSE" }.to_owned(),
            Cell::Unsupported(what) => what.clone(),
        }
    }
}

/// One non-blank row: its number (1-based) and its cells by 0-based column.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Row {
    pub(crate) number: u64,
    pub(crate) cells: Vec<(usize, Cell)>,
}

/// The header row and the data rows after it.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Table {
    pub(crate) header: Option<Row>,
    pub(crate) rows: Vec<Row>,
}

impl Table {
    /// Adds a row in reading order, enforcing the row and column caps as it goes so a huge
    /// file is refused without being held in memory. Blank rows are dropped.
    pub(crate) fn push(&mut self, row: Row) -> Result<(), ImportError> {
        if row.cells.is_empty() {
            return Ok(());
        }
        if row.cells.iter().any(|(column, _)| *column >= COLUMNS_MAX) {
            return Err(ImportError::TooManyColumns { max: COLUMNS_MAX });
        }
        if self.header.is_none() {
            self.header = Some(row);
        } else if self.rows.len() >= ROWS_MAX {
            return Err(ImportError::TooManyRows { max: ROWS_MAX });
        } else {
            self.rows.push(row);
        }
        Ok(())
    }
}

/// A text cell, or nothing when it is empty or only whitespace.
pub(crate) fn text_cell(text: &str) -> Option<Cell> {
    if text.len() > TEXT_CELL_BYTES_MAX {
        return Some(Cell::Unsupported(format!(
            "text of {} bytes (a cell holds at most {TEXT_CELL_BYTES_MAX})",
            text.len()
        )));
    }
    (!text.trim().is_empty()).then(|| Cell::Text(text.to_owned()))
}

/// `text` cut to [`QUOTED_CHARS_MAX`] characters (on a character boundary), with `…` when cut.
pub(crate) fn shortened(text: &str) -> String {
    match text.char_indices().nth(QUOTED_CHARS_MAX) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

/// `text` as an error message quotes it: [`shortened`], in quotes, control characters escaped.
pub(crate) fn quoted(text: &str) -> String {
    format!("{:?}", shortened(text))
}

/// The spreadsheet letter of a 0-based column: 0 → `A`, 25 → `Z`, 26 → `AA`.
pub(crate) fn column_letter(index: usize) -> String {
    let mut letters = Vec::new();
    let mut n = index + 1;
    while n > 0 {
        let rem = (n - 1) % 26;
        // `rem` is below 26, so the sum is an ASCII capital letter.
        letters.push(char::from(b'A' + rem as u8));
        n = (n - 1) / 26;
    }
    letters.iter().rev().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_letters_follow_spreadsheet_naming() {
        assert_eq!(column_letter(0), "A");
        assert_eq!(column_letter(25), "Z");
        assert_eq!(column_letter(26), "AA");
        assert_eq!(column_letter(701), "ZZ");
        assert_eq!(column_letter(702), "AAA");
    }

    #[test]
    fn quoted_values_are_cut_on_a_character_boundary() {
        assert_eq!(quoted("a\tb"), "\"a\\tb\"");
        let exact = "é".repeat(QUOTED_CHARS_MAX);
        assert_eq!(quoted(&exact), format!("\"{exact}\""));
        let long = "𝒜".repeat(QUOTED_CHARS_MAX + 1);
        assert_eq!(
            shortened(&long),
            format!("{}…", "𝒜".repeat(QUOTED_CHARS_MAX))
        );
    }

    #[test]
    fn numbers_read_as_a_person_sees_them() {
        assert_eq!(Cell::Number(3.0).to_text(), "3");
        assert_eq!(Cell::Number(0.1).to_text(), "0.1");
        assert_eq!(Cell::Bool(true).to_text(), "TRUE");
    }
}
