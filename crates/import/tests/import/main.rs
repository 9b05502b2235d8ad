//! The import's integration suite: real files in, questions or precise errors out.
//!
//! - `csv_text`: text files (BOM, CRLF, quoting, header rules, row errors);
//! - `xlsx`: workbooks written by rust_xlsxwriter and by hand (inline strings, self-closing
//!   cells, shared strings), dates, malformed archives;
//! - `limits`: zip bombs, styles and shared strings the reader would multiply, row, column,
//!   cell and size caps, quoted values;
//! - `template`: the downloadable templates read into one question of every type;
//! - `robustness`: arbitrary and mutated bytes never panic.

// Test helpers (file builders) are not `#[test]` functions, so clippy.toml's test allowance
// does not reach them; a failed builder is a broken test, which is what `expect` says.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod csv_text;
mod files;
mod limits;
mod robustness;
mod template;
mod xlsx;
