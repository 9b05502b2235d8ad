//! CSV files: encodings, line ends, quoting, header rules and row errors.

use trueline_core::assessments::{AnswerKey, QuestionSpec, QuestionType};
use trueline_import::{Format, ImportError, RowError, parse};

pub fn csv(text: &str) -> Result<Vec<QuestionSpec>, ImportError> {
    parse(text.as_bytes(), Format::Csv)
}

/// `(row, column, code)` of every row error.
pub fn row_errors(
    result: Result<Vec<QuestionSpec>, ImportError>,
) -> Vec<(u64, String, &'static str)> {
    match result {
        Err(ImportError::Rows(errors)) => errors
            .into_iter()
            .map(
                |RowError {
                     row, column, code, ..
                 }| (row, column, code),
            )
            .collect(),
        other => panic!("expected row errors, got {other:?}"),
    }
}

fn e(row: u64, column: &str, code: &'static str) -> (u64, String, &'static str) {
    (row, column.to_owned(), code)
}

#[test]
fn a_csv_with_bom_crlf_quotes_commas_and_newlines_imports_every_type() {
    let text = "\u{feff}type,prompt,options,correct,points\r\n\
        single_choice,\"Capital of France, the country?\",\"Paris|Lyon|\"\"Big\"\" Marseille\",Paris,2\r\n\
        multiple_choice,\"Which are planets?\r\nPick all.\",Mars|Moon|Venus,1|venus,\r\n\
        true_false,The sky is blue,,TRUE,1\r\n\
        short_text,Say café,,Café|coffee,\r\n\
        numeric,11/4 to two decimals,,2.75±0.005,3\r\n";
    let questions = csv(text).expect("imports");
    assert_eq!(questions.len(), 5);
    assert_eq!(questions[0].prompt(), "Capital of France, the country?");
    assert_eq!(questions[0].points(), 2);
    assert_eq!(
        questions[0].key(),
        &AnswerKey::SingleChoice {
            options: vec!["Paris".into(), "Lyon".into(), "\"Big\" Marseille".into()],
            correct: 0
        }
    );
    assert_eq!(questions[1].prompt(), "Which are planets?\nPick all.");
    assert_eq!(questions[1].points(), 1);
    assert_eq!(
        questions[1].key(),
        &AnswerKey::MultipleChoice {
            options: vec!["Mars".into(), "Moon".into(), "Venus".into()],
            correct: vec![0, 2]
        }
    );
    assert_eq!(questions[2].key(), &AnswerKey::TrueFalse { correct: true });
    let AnswerKey::ShortText { accepted_answers } = questions[3].key() else {
        panic!("short text");
    };
    let texts: Vec<&str> = accepted_answers.iter().map(|a| a.text()).collect();
    assert_eq!(texts, ["Café", "coffee"]);
    assert_eq!(
        questions[4].key(),
        &AnswerKey::Numeric {
            value: 2.75,
            tolerance: 0.005
        }
    );
    assert_eq!(questions[4].points(), 3);
}

#[test]
fn lf_only_files_without_bom_and_without_a_trailing_newline_import_too() {
    let questions = csv("type,prompt,correct\ntrue_false,p,false").expect("imports");
    assert_eq!(questions[0].key(), &AnswerKey::TrueFalse { correct: false });
}

#[test]
fn headers_are_trimmed_case_insensitive_in_any_order_and_points_are_optional() {
    let text = " Correct ,POINTS,  Prompt,Type ,Options\n\
        2,5,Pick b,Single Choice,a|b\n\
        a,,Pick a,single-choice,a|b\n";
    let questions = csv(text).expect("imports");
    assert_eq!(questions[0].kind(), QuestionType::SingleChoice);
    assert_eq!(questions[0].points(), 5);
    assert_eq!(
        questions[0].key(),
        &AnswerKey::SingleChoice {
            options: vec!["a".into(), "b".into()],
            correct: 1
        }
    );
    // "1.0" is neither an option text nor a whole option number.
    assert_eq!(
        row_errors(csv("type,prompt,options,correct\nsingle_choice,p,a|b,1.0")),
        [e(2, "correct", "invalid_correct_answer")]
    );
    let questions = csv("type,prompt,correct,points\ntrue_false,p,true,3.0").expect("imports");
    assert_eq!(questions[0].points(), 3);
}

#[test]
fn unknown_duplicate_and_missing_columns_are_refused_by_name() {
    assert_eq!(
        csv("type,prompt,correct,answer\ntrue_false,p,true,x"),
        Err(ImportError::UnknownColumn {
            column: "answer".into()
        })
    );
    assert_eq!(
        csv("type,prompt,correct,Type\ntrue_false,p,true,x"),
        Err(ImportError::DuplicateColumn {
            column: "type".into()
        })
    );
    assert_eq!(
        csv("type,prompt,options\ntrue_false,p,"),
        Err(ImportError::MissingColumn { column: "correct" })
    );
    assert_eq!(
        csv("prompt,correct\np,true"),
        Err(ImportError::MissingColumn { column: "type" })
    );
}

#[test]
fn unnamed_columns_may_exist_only_while_their_cells_are_empty() {
    csv("type,prompt,correct,,\ntrue_false,p,true,,\n").expect("empty unnamed columns are fine");
    assert_eq!(
        row_errors(csv("type,prompt,correct,,\ntrue_false,p,true,,stray\n")),
        [e(2, "E", "unexpected_value")]
    );
}

#[test]
fn every_row_error_is_reported_at_once_with_the_row_a_person_sees() {
    let text = "type,prompt,options,correct,points\n\
        single_choice,ok,a|b,a,1\n\
        \n\
        essay,p,,x,1\n\
        single_choice,,a|A|,c,101\n\
        multiple_choice,p,a|b|c,1|A|4,\n\
        true_false,p,a|b,yes,2.5\n\
        numeric,p,,\"3,14\",\n\
        numeric,p,,1±-1,\n\
        short_text,p,,x||X,\n\
        \"multiple_choice\",\"multi\nline\",a|b,,\n\
        single_choice,p,,a,\n";
    assert_eq!(
        row_errors(csv(text)),
        [
            e(4, "type", "invalid_value"),
            e(5, "prompt", "missing_field"),
            e(5, "options", "duplicate_option"),
            e(5, "options", "empty"),
            e(5, "correct", "invalid_correct_answer"),
            e(5, "points", "out_of_range"),
            e(6, "correct", "duplicate_index"),
            e(6, "correct", "invalid_correct_answer"),
            e(7, "options", "field_not_allowed"),
            e(7, "correct", "invalid_value"),
            e(7, "points", "invalid_type"),
            e(8, "correct", "invalid_value"),
            e(9, "correct", "out_of_range"),
            e(10, "correct", "empty"),
            e(10, "correct", "duplicate_answer"),
            e(11, "correct", "missing_field"),
            // The quoted line break keeps row 11 one row, as a spreadsheet shows it.
            e(12, "options", "missing_field"),
        ]
    );
}

/// An integer a double cannot hold exactly is refused, not rounded (as in a JSON body);
/// however long, a whole number of points is out of range, not "not whole".
#[test]
fn integers_beyond_what_a_double_holds_exactly_are_refused_not_rounded() {
    let text = "type,prompt,options,correct,points\n\
        numeric,p,,12345678901234567,\n\
        numeric,p,,1±9007199254740992,\n\
        numeric,p,,2,9007199254740993\n\
        numeric,p,,2,-123456789012345678901234567890\n\
        numeric,p,,9007199254740991±0,1\n";
    assert_eq!(
        row_errors(csv(text)),
        [
            e(2, "correct", "out_of_range"),
            e(3, "correct", "out_of_range"),
            e(4, "points", "out_of_range"),
            e(5, "points", "out_of_range"),
        ]
    );
    let Err(ImportError::Rows(errors)) = csv(text) else {
        panic!("expected row errors");
    };
    assert_eq!(
        errors[0].detail,
        "the value \"12345678901234567\" must be within ±(2^53-1); a double cannot hold a \
         larger integer exactly"
    );
}

#[test]
fn row_error_details_speak_in_spreadsheet_terms() {
    let Err(ImportError::Rows(errors)) =
        csv("type,prompt,options,correct\nmultiple_choice,p,a|b|a,1|A|9\nshort_text,p,,")
    else {
        panic!("expected row errors");
    };
    let details: Vec<&str> = errors.iter().map(|e| e.detail.as_str()).collect();
    assert_eq!(
        details,
        [
            "option 3 repeats an earlier option (compared ignoring case, width and spacing)",
            "\"1\" and \"A\" both name option 1 (\"a\")",
            "\"9\" is neither the text of an option nor an option number (1 to 3)",
            "`correct` must hold the accepted answers, separated by |",
        ]
    );
}

#[test]
fn an_option_text_wins_over_an_option_number() {
    let questions = csv("type,prompt,options,correct\nsingle_choice,p,4|3|2|1,2\n\
        single_choice,p,10|20|30,2\n")
    .expect("imports");
    let correct = |q: &QuestionSpec| match q.key() {
        AnswerKey::SingleChoice { correct, .. } => *correct,
        other => panic!("{other:?}"),
    };
    assert_eq!(correct(&questions[0]), 2, "the option whose text is 2");
    assert_eq!(
        correct(&questions[1]),
        1,
        "no option is 2: the second option"
    );
}

#[test]
fn a_single_choice_question_names_one_correct_option() {
    assert_eq!(
        row_errors(csv("type,prompt,options,correct\nsingle_choice,p,a|b,a|b")),
        [e(2, "correct", "invalid_correct_answer")]
    );
}

#[test]
fn files_without_questions_are_empty() {
    assert_eq!(csv(""), Err(ImportError::Empty));
    assert_eq!(csv("\u{feff}"), Err(ImportError::Empty));
    assert_eq!(csv("\r\n\n ,, \n"), Err(ImportError::Empty));
    assert_eq!(
        csv("type,prompt,correct\r\n\r\n,,\r\n"),
        Err(ImportError::Empty)
    );
}

#[test]
fn text_that_is_not_utf8_is_refused_with_where() {
    // "café" in Latin-1.
    let latin1 = b"type,prompt,correct\nshort_text,caf\xe9,x\n";
    assert_eq!(
        parse(latin1, Format::Csv),
        Err(ImportError::NotUtf8 {
            byte_offset: 34,
            line: 2
        })
    );
    let error = parse(latin1, Format::Csv).expect_err("not utf-8");
    assert_eq!(error.code(), "not_utf8");
}
