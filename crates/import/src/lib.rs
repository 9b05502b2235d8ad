//! Question import: the bytes of an uploaded CSV or XLSX file in, validated
//! [`QuestionSpec`]s out — all of them, or none.
//!
//! This crate owns reading spreadsheets safely (size caps, the zip-bomb pre-check, UTF-8) and
//! the spreadsheet *shape* of a question; every rule about what a question may be lives in
//! `trueline_core::assessments` and is applied through [`QuestionSpec::build`], so an imported
//! question is exactly as valid as one sent as JSON. No IO: the caller hands in the bytes.
//!
//! # The file
//! A CSV file, or the first visible worksheet of an XLSX workbook (a hidden sheet is only read
//! when no worksheet is visible). The first non-blank row holds the column names `type, prompt, options, correct, points`,
//! matched case-insensitively after trimming, in any order. `type`, `prompt` and `correct` are
//! required; `options` may be left out when no question needs it, and `points` is optional
//! (default 1). A column with any other name is refused ([`ImportError::UnknownColumn`]): a
//! typo in a header must not silently drop data. A column without a name is allowed only while
//! its cells are empty. Entirely blank rows are skipped.
//!
//! - `type`: `single_choice`, `multiple_choice`, `true_false`, `short_text`, `numeric` (case,
//!   spaces and hyphens forgiven: `Single choice` works).
//! - `options`: choice options separated by `|` (so an option cannot contain `|`).
//! - `correct`:
//!   - choice questions: an option's text (trimmed, compared ignoring case, width and spacing)
//!     or its **1-based** number; several separated by `|` for `multiple_choice`. When a value
//!     is both an option's text and a number (options `4|3|2|1`, correct `2`), the text wins;
//!   - `true_false`: `true` or `false` (any case) or a spreadsheet boolean;
//!   - `short_text`: the accepted answers separated by `|`;
//!   - `numeric`: `value` or `value±tolerance` (`+/-` and `+-` work too), e.g. `2.75±0.005`.
//! - `points`: a whole number 1..=100; a spreadsheet number `3.0` counts as 3.
//!
//! Row numbers in errors are the ones a person sees: the header is row 1 (when it is the first
//! line), the first data row is row 2, and blank rows still count.
//!
//! # Limits
//! [`UPLOAD_BYTES_MAX`], [`ROWS_MAX`], [`COLUMNS_MAX`], [`TEXT_CELL_BYTES_MAX`], and for XLSX
//! [`XLSX_DECOMPRESSED_BYTES_MAX`] and [`XLSX_ENTRIES_MAX`], checked by streaming every zip
//! entry through a bounded reader *before* calamine parses anything (declared sizes can lie),
//! together with what calamine would multiply or pre-allocate from a few bytes of XML
//! ([`XLSX_STYLE_ATTRIBUTE_CHARS_MAX`], [`XLSX_STYLE_XFS_MAX`], a shared-string count the part
//! cannot hold), and [`XLSX_TEXT_BYTES_MAX`] while the cells are read.
//! The number of questions an *assessment* may hold (`QUESTIONS_MAX`) is the caller's check.

mod csv_input;
mod rows;
mod table;
mod xlsx_input;

use trueline_core::assessments::{
    ACCEPTED_ANSWER_CHARS_MAX, ACCEPTED_ANSWERS_MAX, OPTION_CHARS_MAX, OPTIONS_MAX,
    PROMPT_CHARS_MAX, QuestionSpec,
};

/// The largest upload accepted, in bytes (5 MiB).
pub const UPLOAD_BYTES_MAX: usize = 5 * 1024 * 1024;
/// Data rows (questions) in one file.
pub const ROWS_MAX: usize = 1_000;
/// Columns that may hold anything at all; a value further right is refused.
pub const COLUMNS_MAX: usize = 64;
/// Total decompressed size of every entry of an XLSX archive (8 MiB). A real question
/// workbook of 1,000 rows decompresses to well under 2 MiB; calamine's structures take several
/// times what it inflates, so this also bounds the memory one import takes.
pub const XLSX_DECOMPRESSED_BYTES_MAX: u64 = 8 * 1024 * 1024;
/// Entries in an XLSX archive (a workbook written by a spreadsheet has a dozen or two).
pub const XLSX_ENTRIES_MAX: usize = 1_000;
/// Characters of one attribute value in an XLSX styles part: Excel's own limit for a number
/// format code (a font name has at most 31). calamine copies a format code and a font name
/// into every cell format that names them, so one long value is multiplied by
/// [`XLSX_STYLE_XFS_MAX`] at most.
pub const XLSX_STYLE_ATTRIBUTE_CHARS_MAX: usize = 255;
/// Cell formats (`xf` records) in an XLSX styles part: Excel's own limit.
pub const XLSX_STYLE_XFS_MAX: usize = 64_000;
/// Bytes of text in one cell: the longest cell holding a value the domain can accept. The
/// domain counts characters and a character takes up to 4 bytes in UTF-8, so a limit in bytes
/// must allow 4 per character: the longest such cell is a list of 10 options of 500
/// characters and its 9 separators (20,009 bytes; 20 accepted answers of 200 need 16,019, a
/// prompt of 2,000 characters 8,000). A longer cell is reported as a row error and never
/// copied.
pub const TEXT_CELL_BYTES_MAX: usize = {
    const UTF8_CHAR_BYTES_MAX: usize = 4;
    let options = OPTIONS_MAX * OPTION_CHARS_MAX * UTF8_CHAR_BYTES_MAX + (OPTIONS_MAX - 1);
    let answers = ACCEPTED_ANSWERS_MAX * ACCEPTED_ANSWER_CHARS_MAX * UTF8_CHAR_BYTES_MAX
        + (ACCEPTED_ANSWERS_MAX - 1);
    let prompt = PROMPT_CHARS_MAX * UTF8_CHAR_BYTES_MAX;
    let lists = if options > answers { options } else { answers };
    if lists > prompt { lists } else { prompt }
};
/// Bytes of text in all the cells of an XLSX sheet together (10 MiB). Cells may share one
/// string of the workbook, so a file of a few KiB could otherwise name one long string
/// thousands of times, each copied.
pub const XLSX_TEXT_BYTES_MAX: usize = 10 * 1024 * 1024;

/// Characters of a cell quoted in an error (longer text is cut, with `…`): enough to find the
/// cell, while a 20 KiB cell quoted whole, escaped, in each of its errors made a refusal of a
/// few MiB of CSV tens of MiB long.
pub const QUOTED_CHARS_MAX: usize = 80;

/// The media type of CSV uploads.
pub const CSV_MEDIA_TYPE: &str = "text/csv";
/// The media type of XLSX uploads.
pub const XLSX_MEDIA_TYPE: &str =
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet";

/// The two accepted file formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    Csv,
    Xlsx,
}

impl Format {
    /// The format named by a `Content-Type` value (parameters such as `; charset=utf-8` and
    /// letter case are ignored); `None` for anything else.
    pub fn from_media_type(media_type: &str) -> Option<Format> {
        let essence = media_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        match essence.as_str() {
            CSV_MEDIA_TYPE => Some(Format::Csv),
            XLSX_MEDIA_TYPE => Some(Format::Xlsx),
            _ => None,
        }
    }

    pub fn media_type(self) -> &'static str {
        match self {
            Format::Csv => CSV_MEDIA_TYPE,
            Format::Xlsx => XLSX_MEDIA_TYPE,
        }
    }
}

/// One problem in one row. `row` is the row number a person sees (header = 1); `column` is the
/// canonical column name (`correct`), or the column letter (`F`) for a column without a name.
/// `detail` quotes at most [`QUOTED_CHARS_MAX`] characters of a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    pub row: u64,
    pub column: String,
    pub code: &'static str,
    pub detail: String,
}

/// Why a file was refused. Nothing is imported in every case.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImportError {
    #[error("the file is {size_bytes} bytes; the limit is {max_bytes}")]
    TooLarge { size_bytes: usize, max_bytes: usize },
    #[error("the file holds no questions")]
    Empty,
    #[error("the file is not UTF-8 text: invalid byte at offset {byte_offset} (line {line})")]
    NotUtf8 { byte_offset: usize, line: u64 },
    #[error("the CSV cannot be read: {detail}")]
    MalformedCsv { detail: String },
    #[error("the file is not a readable XLSX workbook: {detail}")]
    NotXlsx { detail: String },
    #[error("the workbook decompresses to more than {max_bytes} bytes; refusing to read it")]
    ZipBomb { max_bytes: u64 },
    #[error("the workbook has more than {max} archive entries")]
    TooManyEntries { max: usize },
    #[error("the sheet's cells hold more than {max_bytes} bytes of text")]
    TooMuchText { max_bytes: usize },
    #[error("the workbook has no worksheet")]
    NoWorksheet,
    #[error("the required column `{column}` is missing from the header row")]
    MissingColumn { column: &'static str },
    #[error("unknown column {column:?}; the columns are type, prompt, options, correct and points")]
    UnknownColumn { column: String },
    #[error("the column `{column}` appears twice in the header row")]
    DuplicateColumn { column: String },
    #[error("a value lies beyond column {max}; a question file has at most {max} columns")]
    TooManyColumns { max: usize },
    #[error("the file has more than {max} questions")]
    TooManyRows { max: usize },
    #[error("{} problem(s) in the rows; nothing was imported", .0.len())]
    Rows(Vec<RowError>),
}

impl ImportError {
    /// The stable code the transport reports.
    pub fn code(&self) -> &'static str {
        match self {
            ImportError::TooLarge { .. } => "file_too_large",
            ImportError::Empty => "empty_file",
            ImportError::NotUtf8 { .. } => "not_utf8",
            ImportError::MalformedCsv { .. } => "malformed_csv",
            ImportError::NotXlsx { .. } => "not_xlsx",
            ImportError::ZipBomb { .. } => "zip_bomb",
            ImportError::TooManyEntries { .. } => "too_many_entries",
            ImportError::TooMuchText { .. } => "too_much_text",
            ImportError::NoWorksheet => "no_worksheet",
            ImportError::MissingColumn { .. } => "missing_column",
            ImportError::UnknownColumn { .. } => "unknown_column",
            ImportError::DuplicateColumn { .. } => "duplicate_column",
            ImportError::TooManyColumns { .. } => "too_many_columns",
            ImportError::TooManyRows { .. } => "too_many_rows",
            ImportError::Rows(_) => "invalid_rows",
        }
    }
}

/// Reads every question of an uploaded file, or says why none can be imported.
pub fn parse(bytes: &[u8], format: Format) -> Result<Vec<QuestionSpec>, ImportError> {
    if bytes.len() > UPLOAD_BYTES_MAX {
        return Err(ImportError::TooLarge {
            size_bytes: bytes.len(),
            max_bytes: UPLOAD_BYTES_MAX,
        });
    }
    let table = match format {
        Format::Csv => csv_input::read(bytes)?,
        Format::Xlsx => xlsx_input::read(bytes)?,
    };
    rows::questions(table)
}

/// A CSV template with one example of every question type.
pub fn template_csv() -> &'static str {
    include_str!("../templates/questions.csv")
}

/// The same template as an XLSX workbook (generated from the CSV by the ignored test
/// `regenerate_the_xlsx_template`; another test proves both read into the same questions).
pub fn template_xlsx() -> &'static [u8] {
    include_bytes!("../templates/questions.xlsx")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types_pick_the_format_ignoring_parameters_and_case() {
        assert_eq!(Format::from_media_type("text/csv"), Some(Format::Csv));
        assert_eq!(
            Format::from_media_type("Text/CSV; charset=utf-8"),
            Some(Format::Csv)
        );
        assert_eq!(Format::from_media_type(XLSX_MEDIA_TYPE), Some(Format::Xlsx));
        assert_eq!(Format::from_media_type("application/json"), None);
        assert_eq!(Format::from_media_type(""), None);
        assert_eq!(Format::Xlsx.media_type(), XLSX_MEDIA_TYPE);
    }

    #[test]
    fn uploads_over_the_limit_are_refused_before_reading() {
        let big = vec![b'a'; UPLOAD_BYTES_MAX + 1];
        for format in [Format::Csv, Format::Xlsx] {
            assert_eq!(
                parse(&big, format),
                Err(ImportError::TooLarge {
                    size_bytes: UPLOAD_BYTES_MAX + 1,
                    max_bytes: UPLOAD_BYTES_MAX
                })
            );
        }
    }
}
