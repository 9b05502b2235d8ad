//! Criterion micro-benchmarks of the pure domain (`trueline-core`), the CPU floor under every
//! request: item-name validation, strict delta JSON parsing, and scoring a 50-question
//! attempt. (The event-log engine has its own benches in `crates/eventlog/benches`.)
//!
//! Run: `cargo bench -p trueline-bench --bench domain`.
// Benchmark code: a panic is the clearest failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{BenchmarkId, Criterion, Throughput};
use serde_json::json;
use std::collections::HashMap;
use std::hint::black_box;
use trueline_core::assessments::{Answer, PassingScorePercent, QuestionSpec, score_attempt};
use trueline_core::inventory::{Delta, ItemName};

fn item_names(c: &mut Criterion) {
    let mut group = c.benchmark_group("item_name_parse");
    let long = "Ω".repeat(200);
    let cases = [
        ("short", "Milk"),
        ("padded", "   Oat milk, 1 l (organic)   "),
        ("unicode_200_chars", long.as_str()),
        ("rejected_control_char", "Milk\u{7}"),
    ];
    for (name, input) in cases {
        group.throughput(Throughput::Bytes(input.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(name), input, |b, input| {
            b.iter(|| ItemName::parse(black_box(input)))
        });
    }
    group.finish();
}

fn deltas(c: &mut Criterion) {
    let mut group = c.benchmark_group("delta_json");
    for (name, input) in [
        ("small", "-3"),
        ("max", "9007199254740991"),
        ("rejected_float", "1.0"),
        ("rejected_string", "\"5\""),
    ] {
        group.bench_with_input(BenchmarkId::from_parameter(name), input, |b, input| {
            b.iter(|| serde_json::from_str::<Delta>(black_box(input)))
        });
    }
    group.finish();
}

fn scoring(c: &mut Criterion) {
    const QUESTIONS: usize = 50;
    let questions: Vec<(String, QuestionSpec)> = (0..QUESTIONS)
        .map(|i| {
            let spec = QuestionSpec::from_json(&json!({
                "type": "single_choice",
                "prompt": format!("Question {i}: which option is right?"),
                "options": ["right", "wrong", "also wrong", "not this one"],
                "correct": 0,
            }))
            .unwrap();
            (format!("q{i:02}"), spec)
        })
        .collect();
    // Two thirds right, one third wrong.
    let answers: HashMap<String, Answer> = questions
        .iter()
        .enumerate()
        .map(|(i, (id, spec))| {
            let chosen = if i % 3 == 0 { 1 } else { 0 };
            (id.clone(), Answer::parse(spec, &json!(chosen)).unwrap())
        })
        .collect();
    let passing = PassingScorePercent::new(60).unwrap();
    let score = score_attempt(&questions, &answers, passing).unwrap();
    assert_eq!(score.total, QUESTIONS as u64);

    let mut group = c.benchmark_group("score_attempt");
    group.throughput(Throughput::Elements(QUESTIONS as u64));
    group.bench_function("single_choice_50", |b| {
        b.iter(|| score_attempt(black_box(&questions), black_box(&answers), passing))
    });
    group.finish();
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    item_names(&mut criterion);
    deltas(&mut criterion);
    scoring(&mut criterion);
    criterion.final_summary();
}
