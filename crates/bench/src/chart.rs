//! SVG charts (plotters with its SVG backend only: no fonts are rasterized, text stays text).
//!
//! - one run: successful operations per second (every second of the window, a stall drawn
//!   as zeroes) and p50/p99 latency, second by second (seconds without an operation have no
//!   latency and no point);
//! - a sweep: throughput vs concurrency and latency percentiles vs concurrency (medians as
//!   lines, every run as a faint dot), with concurrency on a log₂ axis.

use crate::report::{RunReport, SweepReport};
use anyhow::Context;
use plotters::prelude::*;
use std::path::{Path, PathBuf};

const SIZE: (u32, u32) = (900, 540);
const COLORS: [RGBColor; 5] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
];

struct Series {
    label: String,
    line: Vec<(f64, f64)>,
    /// Extra dots without a line (individual runs).
    dots: Vec<(f64, f64)>,
}

fn padded(min: f64, max: f64, log: bool) -> (f64, f64) {
    if log {
        let (lo, hi) = (min.max(1e-3), max.max(min.max(1e-3) * 10.0));
        (lo / 1.5, hi * 1.5)
    } else if (max - min).abs() < f64::EPSILON {
        (min - 1.0, max + 1.0)
    } else {
        let pad = (max - min) * 0.05;
        (min - pad, max + pad)
    }
}

fn bounds(series: &[Series], pick: fn(&(f64, f64)) -> f64) -> (f64, f64) {
    series
        .iter()
        .flat_map(|s| s.line.iter().chain(&s.dots))
        .map(pick)
        .fold(None, |range: Option<(f64, f64)>, v| match range {
            None => Some((v, v)),
            Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
        })
        // Nothing to draw (a run without a successful operation): an empty unit range.
        .unwrap_or((0.0, 1.0))
}

/// A chart with a linear y axis; `log2_x` plots x on a log₂ scale (concurrency levels).
fn linear_chart(
    path: &Path,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    series: &[Series],
    log2_x: bool,
) -> anyhow::Result<()> {
    let tx = |x: f64| if log2_x { x.max(1.0).log2() } else { x };
    let series: Vec<Series> = series
        .iter()
        .map(|s| Series {
            label: s.label.clone(),
            line: s.line.iter().map(|&(x, y)| (tx(x), y)).collect(),
            dots: s.dots.iter().map(|&(x, y)| (tx(x), y)).collect(),
        })
        .collect();
    let (x0, x1) = bounds(&series, |p| p.0);
    let (_, y1) = bounds(&series, |p| p.1);
    let (x0, x1) = if log2_x {
        (x0 - 0.3, x1 + 0.3)
    } else {
        padded(x0, x1, false)
    };
    let y1 = if y1 > 0.0 { y1 * 1.1 } else { 1.0 };
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(x0..x1, 0.0..y1)?;
    // One label per power of two, or per whole second up to ten (no repeated labels).
    let x_labels = if log2_x {
        ((x1 - x0).ceil() as usize).max(2)
    } else {
        ((x1 - x0).ceil() as usize).clamp(2, 10)
    };
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .x_labels(x_labels)
        .x_label_formatter(&|v| {
            if log2_x {
                format!("{:.0}", 2f64.powf(*v))
            } else {
                format!("{v:.0}")
            }
        })
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()?;
    draw_series(&mut chart, &series)?;
    root.present()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

fn draw_series<'a, DB: DrawingBackend + 'a, X, Y>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<X, Y>>,
    series: &[Series],
) -> anyhow::Result<()>
where
    X: plotters::coord::ranged1d::Ranged<ValueType = f64>,
    Y: plotters::coord::ranged1d::Ranged<ValueType = f64>,
    DB::ErrorType: 'static,
{
    for (i, s) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(
                s.line.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(|e| anyhow::anyhow!("{e:?}"))?
            .label(s.label.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart
            .draw_series(s.line.iter().map(|&p| Circle::new(p, 4, color.filled())))
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        chart
            .draw_series(
                s.dots
                    .iter()
                    .map(|&p| Circle::new(p, 3, color.mix(0.45).filled())),
            )
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    Ok(())
}

/// Charts of one run; returns the files written.
pub fn run_charts(dir: &Path, report: &RunReport) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let name = format!("{}-c{}", report.workload, report.parameters.clients);
    let t = &report.results.timeline;
    let throughput = dir.join(format!("{name}-throughput.svg"));
    linear_chart(
        &throughput,
        &format!(
            "{}: operations per second ({})",
            report.workload, report.parameters.mode
        ),
        "seconds after warm-up",
        "operations/s",
        &[Series {
            label: format!("{} client(s)", report.parameters.clients),
            line: t
                .iter()
                .map(|p| (p.second as f64, p.operations as f64))
                .collect(),
            dots: Vec::new(),
        }],
        false,
    )?;
    let latency = dir.join(format!("{name}-latency.svg"));
    let busy = || t.iter().filter(|p| p.operations > 0);
    linear_chart(
        &latency,
        &format!("{}: latency per second", report.workload),
        "seconds after warm-up",
        "latency (ms)",
        &[
            Series {
                label: "p50".into(),
                line: busy()
                    .map(|p| (p.second as f64, p.p50_us as f64 / 1000.0))
                    .collect(),
                dots: Vec::new(),
            },
            Series {
                label: "p99".into(),
                line: busy()
                    .map(|p| (p.second as f64, p.p99_us as f64 / 1000.0))
                    .collect(),
                dots: Vec::new(),
            },
        ],
        false,
    )?;
    Ok(vec![throughput, latency])
}

/// "Throughput vs concurrency" and "latency percentiles vs concurrency" of a sweep.
pub fn sweep_charts(dir: &Path, report: &SweepReport) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let points = &report.points;
    let throughput = dir.join(format!("{}-throughput-vs-clients.svg", report.workload));
    linear_chart(
        &throughput,
        &format!(
            "{}: throughput vs concurrency (median of {} runs)",
            report.workload, report.runs_per_level
        ),
        "clients (log scale)",
        "operations/s",
        &[Series {
            label: "median".into(),
            line: points
                .iter()
                .map(|p| (p.clients as f64, p.median.throughput_per_s))
                .collect(),
            dots: points
                .iter()
                .flat_map(|p| {
                    p.runs
                        .iter()
                        .map(|r| (p.clients as f64, r.throughput_per_s))
                })
                .collect(),
        }],
        true,
    )?;

    let latency = dir.join(format!("{}-latency-vs-clients.svg", report.workload));
    let x = |clients: usize| (clients as f64).max(1.0).log2();
    let percentile = |label: &str, f: fn(&crate::report::RunSummary) -> f64| Series {
        label: label.to_owned(),
        line: points
            .iter()
            .map(|p| (x(p.clients), f(&p.median) / 1000.0))
            .collect(),
        // A run without a latency (no successful operation) has no place on a log axis.
        dots: points
            .iter()
            .flat_map(|p| p.runs.iter().map(|r| (x(p.clients), f(r) / 1000.0)))
            .filter(|&(_, y)| y > 0.0)
            .collect(),
    };
    let series = [
        percentile("p50", |r| r.p50_us),
        percentile("p90", |r| r.p90_us),
        percentile("p99", |r| r.p99_us),
        percentile("p99.9", |r| r.p999_us),
    ];
    let (x0, x1) = bounds(&series, |p| p.0);
    let (y0, y1) = bounds(&series, |p| p.1);
    let (y0, y1) = padded(y0, y1, true);
    let latency_path = latency.clone();
    let root = SVGBackend::new(&latency_path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "{}: latency percentiles vs concurrency (median of {} runs)",
                report.workload, report.runs_per_level
            ),
            ("sans-serif", 22),
        )
        .margin(16)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d((x0 - 0.3)..(x1 + 0.3), (y0..y1).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("clients (log scale)")
        .y_desc("latency (ms, log scale)")
        .x_labels(((x1 - x0 + 0.6).ceil() as usize).max(2))
        .x_label_formatter(&|v| format!("{:.0}", 2f64.powf(*v)))
        .y_label_formatter(&|v| {
            if *v >= 1.0 {
                format!("{v:.0}")
            } else {
                format!("{v:.2}")
            }
        })
        .draw()?;
    draw_series(&mut chart, &series)?;
    root.present()
        .with_context(|| format!("writing {}", latency.display()))?;
    Ok(vec![throughput, latency])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{RunSummary, SweepPoint};
    use crate::stats::TimelinePoint;

    #[test]
    fn run_and_sweep_charts_are_written_as_svg() {
        let dir = tempfile::tempdir().unwrap();
        let mut report = crate::report::tests::sample_report();
        report.results.timeline = (0..5)
            .map(|s| TimelinePoint {
                second: s,
                operations: 400 + s * 10,
                p50_us: 2000,
                p99_us: 9000,
            })
            .collect();
        let files = run_charts(dir.path(), &report).unwrap();
        for file in &files {
            let svg = std::fs::read_to_string(file).unwrap();
            assert!(svg.starts_with("<svg"), "{}", &svg[..50.min(svg.len())]);
            assert!(svg.contains("operations") || svg.contains("latency"));
        }
        let run = |t: f64| RunSummary {
            throughput_per_s: t,
            p50_us: 1000.0,
            p90_us: 2000.0,
            p99_us: 5000.0,
            p999_us: 9000.0,
            max_us: 20000.0,
            verified: true,
            ..RunSummary::default()
        };
        let sweep = SweepReport {
            tool: "t".into(),
            date: "d".into(),
            workload: "hot-item".into(),
            runs_per_level: 3,
            parameters: report.parameters.clone(),
            target: report.target.clone(),
            machine: report.machine.clone(),
            points: [1usize, 4, 16, 64]
                .iter()
                .map(|&c| SweepPoint::new(c, vec![run(100.0 * c as f64), run(90.0 * c as f64)]))
                .collect(),
            run_reports: Vec::new(),
        };
        let files = sweep_charts(dir.path(), &sweep).unwrap();
        let svg = std::fs::read_to_string(&files[1]).unwrap();
        assert!(svg.contains("p99.9"));
        assert!(svg.contains(">64<") || svg.contains("64"));
        // Every run is a dot too: 4 percentiles × 4 levels × 2 runs.
        assert_eq!(svg.matches(r#"r="3""#).count(), 32, "{svg}");
    }

    #[test]
    fn a_run_that_stalled_or_never_succeeded_still_charts() {
        let dir = tempfile::tempdir().unwrap();
        let mut report = crate::report::tests::sample_report();
        report.results.timeline = (0..3)
            .map(|s| TimelinePoint {
                second: s,
                operations: 0,
                p50_us: 0,
                p99_us: 0,
            })
            .collect();
        run_charts(dir.path(), &report).unwrap();
    }

    #[test]
    fn a_single_concurrency_level_still_charts() {
        let dir = tempfile::tempdir().unwrap();
        let report = crate::report::tests::sample_report();
        let sweep = SweepReport {
            tool: "t".into(),
            date: "d".into(),
            workload: "spread".into(),
            runs_per_level: 1,
            parameters: report.parameters.clone(),
            target: report.target.clone(),
            machine: report.machine.clone(),
            points: vec![SweepPoint::new(
                64,
                vec![RunSummary {
                    throughput_per_s: 10.0,
                    p50_us: 1.0,
                    p90_us: 1.0,
                    p99_us: 1.0,
                    p999_us: 1.0,
                    ..RunSummary::default()
                }],
            )],
            run_reports: Vec::new(),
        };
        sweep_charts(dir.path(), &sweep).unwrap();
    }
}
