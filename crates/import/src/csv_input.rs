//! CSV: UTF-8 with or without a byte-order mark, CRLF or LF (or CR) line ends, RFC 4180
//! quoting (commas, quotes and line breaks inside quoted fields).
//!
//! Line ends are unified to `\n` *before* parsing. That changes nothing a question can hold
//! (prompts unify line breaks anyway; other fields refuse control characters either way) and
//! lets blank lines — which the csv reader skips — be counted, so row numbers match what a
//! spreadsheet shows.

use crate::ImportError;
use crate::table::{Row, Table, text_cell};

pub(crate) fn read(bytes: &[u8]) -> Result<Table, ImportError> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let offset = e.valid_up_to();
        ImportError::NotUtf8 {
            byte_offset: offset,
            line: 1 + bytes[..offset].iter().filter(|b| **b == b'\n').count() as u64,
        }
    })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let text = text.replace("\r\n", "\n").replace('\r', "\n");
    check_quotes(&text)?;
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(text.as_bytes());
    let mut table = Table::default();
    let mut record = csv::StringRecord::new();
    let mut row_number: u64 = 0;
    loop {
        let start = reader.position().byte();
        let more = reader
            .read_record(&mut record)
            .map_err(|e| ImportError::MalformedCsv {
                detail: e.to_string(),
            })?;
        if !more {
            break;
        }
        // The reader skips blank lines silently; each `\n` before the record's first byte is
        // one of them (a record never starts with a line break: a quoted field starts with `"`).
        let skipped = usize::try_from(start)
            .ok()
            .and_then(|start| text.get(start..))
            .map_or(0, |rest| rest.bytes().take_while(|b| *b == b'\n').count());
        row_number += 1 + skipped as u64;
        let cells = record
            .iter()
            .enumerate()
            .filter_map(|(column, field)| text_cell(field).map(|cell| (column, cell)))
            .collect();
        table.push(Row {
            number: row_number,
            cells,
        })?;
    }
    Ok(table)
}

/// Refuses quoting the csv reader would accept silently: a quoted field never closed (the
/// reader takes every line after it into that field: rows vanish into one prompt) and text
/// right after a field's closing quote. `text` has `\n` line ends.
fn check_quotes(text: &str) -> Result<(), ImportError> {
    enum State {
        FieldStart,
        Unquoted,
        Quoted { opened_on: u64 },
        QuoteInQuoted { opened_on: u64 },
    }
    let mut state = State::FieldStart;
    let mut line: u64 = 1;
    for c in text.chars() {
        state = match (state, c) {
            (State::FieldStart, '"') => State::Quoted { opened_on: line },
            (State::FieldStart | State::Unquoted, ',' | '\n') => State::FieldStart,
            (State::FieldStart | State::Unquoted, _) => State::Unquoted,
            (State::Quoted { opened_on }, '"') => State::QuoteInQuoted { opened_on },
            (quoted @ State::Quoted { .. }, _) => quoted,
            (State::QuoteInQuoted { opened_on }, '"') => State::Quoted { opened_on },
            (State::QuoteInQuoted { .. }, ',' | '\n') => State::FieldStart,
            (State::QuoteInQuoted { .. }, other) => {
                return Err(ImportError::MalformedCsv {
                    detail: format!(
                        "line {line}: {other:?} right after the closing quote of a field; \
                         inside quotes, write a quote as \"\""
                    ),
                });
            }
        };
        if c == '\n' {
            line += 1;
        }
    }
    match state {
        State::Quoted { opened_on } => Err(ImportError::MalformedCsv {
            detail: format!("the quoted field opened on line {opened_on} is never closed"),
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::Cell;

    fn numbers(text: &str) -> Vec<u64> {
        let table = read(text.as_bytes()).expect("readable");
        table
            .header
            .iter()
            .chain(&table.rows)
            .map(|r| r.number)
            .collect()
    }

    #[test]
    fn row_numbers_count_blank_lines_and_not_line_breaks_inside_quotes() {
        assert_eq!(numbers("h\na\nb"), [1, 2, 3]);
        assert_eq!(
            numbers("h\r\n\r\na\n\n\n\"x\ny\"\r\n,\n  \nlast"),
            [1, 3, 6, 9]
        );
        assert_eq!(numbers("\n\nh\na"), [3, 4]);
        assert_eq!(numbers("h\ra\r\rb"), [1, 2, 4]);
    }

    #[test]
    fn a_byte_order_mark_is_dropped_and_quoted_fields_keep_commas_quotes_and_newlines() {
        let table = read("\u{feff}h1,h2\n\"a, \"\"b\"\"\r\nc\",d".as_bytes()).expect("readable");
        let header = table.header.expect("header");
        assert_eq!(header.cells[0], (0, Cell::Text("h1".into())));
        assert_eq!(
            table.rows[0].cells,
            [
                (0, Cell::Text("a, \"b\"\nc".into())),
                (1, Cell::Text("d".into()))
            ]
        );
    }

    #[test]
    fn quotes_left_open_or_followed_by_text_are_refused() {
        let malformed = |text: &str| match read(text.as_bytes()) {
            Err(ImportError::MalformedCsv { detail }) => detail,
            other => panic!("{text:?}: {other:?}"),
        };
        assert_eq!(
            malformed("type,correct,prompt\nshort_text,Paris,\"Q1?\nshort_text,Rome,Q2\n"),
            "the quoted field opened on line 2 is never closed"
        );
        assert!(malformed("h\n\"ab\"c,d\n").starts_with("line 2: 'c' right after"));
        // Escaped quotes, quotes inside unquoted text and empty quoted fields are fine.
        assert!(read("h1,h2\n\"a \"\"b\"\"\",x\"y\n\"\",\"\"\n".as_bytes()).is_ok());
    }

    #[test]
    fn invalid_utf8_is_refused_with_its_position() {
        assert_eq!(
            read(b"type,prompt\nok,\xff\xfe"),
            Err(ImportError::NotUtf8 {
                byte_offset: 15,
                line: 2
            })
        );
    }
}
