//! The downloadable templates, and the generator of the committed XLSX one.

use rust_xlsxwriter::{Format as CellFormat, Workbook};
use trueline_core::assessments::{AnswerKey, QuestionSpec, QuestionType};
use trueline_import::{Format, parse, template_csv, template_xlsx};

fn expected_kinds() -> [QuestionType; 5] {
    QuestionType::ALL
}

#[test]
fn the_csv_template_reads_into_one_question_of_every_type() {
    let questions = parse(template_csv().as_bytes(), Format::Csv).expect("template imports");
    let kinds: Vec<QuestionType> = questions.iter().map(QuestionSpec::kind).collect();
    assert_eq!(kinds, expected_kinds());
    assert_eq!(
        questions[1].key(),
        &AnswerKey::MultipleChoice {
            options: vec!["Mars".into(), "Moon".into(), "Venus".into(), "Sun".into()],
            correct: vec![0, 2]
        }
    );
    assert_eq!(
        questions[4].key(),
        &AnswerKey::Numeric {
            value: 2.75,
            tolerance: 0.005
        }
    );
}

#[test]
fn the_xlsx_template_reads_into_the_same_questions_as_the_csv_template() {
    let from_csv = parse(template_csv().as_bytes(), Format::Csv).expect("csv template");
    let from_xlsx = parse(template_xlsx(), Format::Xlsx).expect("xlsx template");
    assert_eq!(from_xlsx, from_csv);
}

/// Writes the CSV template as a workbook: a bold header, readable column widths, points as
/// numbers, `true` as a spreadsheet boolean, and empty cells left unwritten.
fn template_workbook() -> Vec<u8> {
    let mut workbook = Workbook::new();
    let sheet = workbook.add_worksheet();
    sheet.set_name("Questions").expect("sheet name");
    let bold = CellFormat::new().set_bold();
    for (column, width) in [(0, 16.0), (1, 60.0), (2, 30.0), (3, 30.0), (4, 8.0)] {
        sheet.set_column_width(column, width).expect("width");
    }
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(template_csv().as_bytes());
    for (row, record) in reader.records().enumerate() {
        let record = record.expect("template record");
        for (column, field) in record.iter().enumerate() {
            let (row, column) = (row as u32, column as u16);
            if row == 0 {
                sheet
                    .write_string_with_format(row, column, field, &bold)
                    .expect("header");
            } else if field == "true" {
                sheet.write_boolean(row, column, true).expect("boolean");
            } else if let Ok(points) = field.parse::<u32>() {
                sheet
                    .write_number(row, column, f64::from(points))
                    .expect("number");
            } else if !field.is_empty() {
                sheet.write_string(row, column, field).expect("text");
            }
        }
    }
    workbook.save_to_buffer().expect("workbook")
}

/// A tool, not a check: with `TRUELINE_REGENERATE_TEMPLATES=1` it rewrites
/// templates/questions.xlsx (run it after changing templates/questions.csv). It is not
/// `#[ignore]`d because CI runs every ignored test against PostgreSQL and NATS.
#[test]
fn regenerate_the_xlsx_template_when_asked() {
    if std::env::var_os("TRUELINE_REGENERATE_TEMPLATES").is_none() {
        return;
    }
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/templates/questions.xlsx");
    std::fs::write(path, template_workbook()).expect("template written");
}
