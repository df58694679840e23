//! Pictures of a run: the demo's request timeline, and the benchmark's gap comparison.
//!
//! SVG keeps the pictures free of system fonts and small enough to keep in a results folder.

use std::path::Path;

use anyhow::{Result, anyhow};
use plotters::prelude::*;

/// One request as the timeline shows it: when it ended (seconds of demo time), how long it
/// took (milliseconds), whether it succeeded and whether it was a write.
#[derive(Clone, Copy, Debug)]
pub struct Point {
    pub t_s: f64,
    pub latency_ms: f64,
    pub ok: bool,
    pub write: bool,
}

/// A vertical marker: an instant (seconds of demo time) and its label.
pub struct Marker {
    pub t_s: f64,
    pub label: String,
}

fn err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("drawing: {e}")
}

/// Request latency over time (log scale; failures in red at the time they gave up) above the
/// requests answered and failed per 100 ms, with the markers on both.
pub fn draw_timeline(path: &Path, title: &str, points: &[Point], markers: &[Marker]) -> Result<()> {
    let end = points.iter().map(|p| p.t_s).fold(1.0, f64::max);
    let root = SVGBackend::new(path, (1200, 700)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let root = root.titled(title, ("sans-serif", 20)).map_err(err)?;
    let (top, bottom) = root.split_vertically(430);

    let max_latency = points
        .iter()
        .map(|p| p.latency_ms)
        .fold(1.0, f64::max)
        .max(10.0);
    let mut chart = ChartBuilder::on(&top)
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..end, (0.05..max_latency * 1.5).log_scale())
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("time (s)")
        .y_desc("request latency (ms)")
        .draw()
        .map_err(err)?;
    let series = [
        ("read answered", GREEN.mix(0.5), false, true),
        ("write acknowledged", BLUE.mix(0.6), true, true),
    ];
    for (label, color, write, ok) in series {
        chart
            .draw_series(
                points
                    .iter()
                    .filter(|p| p.ok == ok && p.write == write)
                    .map(|p| Circle::new((p.t_s, p.latency_ms.max(0.06)), 1, color.filled())),
            )
            .map_err(err)?
            .label(label)
            .legend(move |(x, y)| Circle::new((x, y), 3, color.filled()));
    }
    chart
        .draw_series(
            points
                .iter()
                .filter(|p| !p.ok)
                .map(|p| Cross::new((p.t_s, p.latency_ms.max(0.06)), 3, RED)),
        )
        .map_err(err)?
        .label("request failed")
        .legend(|(x, y)| Cross::new((x, y), 3, RED));
    // Labels step down the chart so that markers close in time stay readable.
    for (k, m) in markers.iter().enumerate() {
        chart
            .draw_series(LineSeries::new(
                [(m.t_s, 0.05), (m.t_s, max_latency * 1.5)],
                BLACK.mix(0.6),
            ))
            .map_err(err)?;
        chart
            .draw_series([Text::new(
                m.label.clone(),
                (m.t_s, max_latency * 1.2 / 1.8f64.powi(k as i32 % 3)),
                ("sans-serif", 13).into_font(),
            )])
            .map_err(err)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;

    // Requests per 100 ms bucket.
    let buckets = (end * 10.0).ceil() as usize + 1;
    let mut ok = vec![0u32; buckets];
    let mut failed = vec![0u32; buckets];
    for p in points {
        let b = ((p.t_s * 10.0) as usize).min(buckets - 1);
        if p.ok {
            ok[b] += 1;
        } else {
            failed[b] += 1;
        }
    }
    let top_count = ok.iter().chain(&failed).copied().max().unwrap_or(1).max(1);
    let mut chart = ChartBuilder::on(&bottom)
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..end, 0u32..top_count + top_count / 5 + 1)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("time (s)")
        .y_desc("requests / 100 ms")
        .draw()
        .map_err(err)?;
    for (label, counts, color) in [("answered", &ok, GREEN), ("failed", &failed, RED)] {
        chart
            .draw_series(LineSeries::new(
                counts
                    .iter()
                    .enumerate()
                    .map(|(i, &c)| (i as f64 / 10.0, c)),
                color.stroke_width(2),
            ))
            .map_err(err)?
            .label(label)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 15, y)], color.stroke_width(2)));
    }
    for m in markers {
        chart
            .draw_series(LineSeries::new(
                [(m.t_s, 0), (m.t_s, top_count + top_count / 5)],
                BLACK.mix(0.6),
            ))
            .map_err(err)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

/// One bar group of the benchmark picture: a configuration and its gaps (ms), one per run.
pub struct GapSeries {
    pub name: String,
    pub gaps_ms: Vec<f64>,
}

/// Every run's client-visible gap per configuration (dots) with the median (bar), log scale.
pub fn draw_gaps(path: &Path, title: &str, series: &[GapSeries]) -> Result<()> {
    let max = series
        .iter()
        .flat_map(|s| s.gaps_ms.iter().copied())
        .fold(10.0, f64::max);
    let root = SVGBackend::new(path, (1100, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let names: Vec<String> = series.iter().map(|s| s.name.clone()).collect();
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(
            -0.5f64..series.len() as f64 - 0.5,
            (1.0f64..max * 2.0).log_scale(),
        )
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(series.len().max(1))
        .x_label_formatter(&|x| {
            let i = x.round();
            if (x - i).abs() < 0.01 && i >= 0.0 {
                names.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .y_desc("client-visible gap (ms)")
        .draw()
        .map_err(err)?;
    for (i, s) in series.iter().enumerate() {
        let x = i as f64;
        if let Some(stats) = crate::report::Stats::of(&s.gaps_ms) {
            chart
                .draw_series([Rectangle::new(
                    [(x - 0.3, 1.0), (x + 0.3, stats.median.max(1.0))],
                    BLUE.mix(0.25).filled(),
                )])
                .map_err(err)?;
        }
        chart
            .draw_series(s.gaps_ms.iter().enumerate().map(|(k, &g)| {
                let spread = (k as f64 / s.gaps_ms.len().max(1) as f64 - 0.5) * 0.4;
                Circle::new((x + spread, g.max(1.0)), 3, BLACK.filled())
            }))
            .map_err(err)?;
    }
    root.present().map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_a_timeline_and_gaps() {
        let dir = std::env::temp_dir().join(format!("timeline-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let points: Vec<Point> = (0..200)
            .map(|i| Point {
                t_s: f64::from(i) * 0.01,
                latency_ms: 1.0 + f64::from(i % 7),
                ok: i % 50 != 0,
                write: i % 4 == 0,
            })
            .collect();
        let markers = [Marker {
            t_s: 1.0,
            label: "power failure".into(),
        }];
        let p = dir.join("t.svg");
        draw_timeline(&p, "test", &points, &markers).unwrap();
        let svg = std::fs::read_to_string(&p).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("power failure"));
        let g = dir.join("g.svg");
        draw_gaps(
            &g,
            "gaps",
            &[GapSeries {
                name: "agent".into(),
                gaps_ms: vec![10.0, 12.0, 30.0],
            }],
        )
        .unwrap();
        assert!(std::fs::read_to_string(&g).unwrap().contains("agent"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
