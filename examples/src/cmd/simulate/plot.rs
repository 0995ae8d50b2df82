//! Plots: arrival rate and replicas over time, one panel per policy, with the minutes
//! that missed the attainment target marked (`replicas.svg`/`.png`), and attainment
//! against GPU-hours for every policy and every robustness point (`pareto.svg`/`.png`).
//!
//! Text is drawn with an embedded subset of DejaVu Sans (plotters' `ab_glyph` backend),
//! so no system font library is needed.

use std::path::Path;
use std::sync::Once;

use anyhow::{Context, Result, anyhow};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};
use vllm_scaling_core::sim::{PolicyReport, RunResult, TraceRequest, WindowInfo};

use super::RobustRow;

/// DejaVu Sans, subset to Latin-1 punctuation and a few symbols (license next to it).
static FONT: &[u8] = include_bytes!("DejaVuSans-subset.ttf");

fn register() -> Result<()> {
    static ONCE: Once = Once::new();
    let mut result = Ok(());
    ONCE.call_once(|| {
        result = register_font("sans-serif", FontStyle::Normal, FONT)
            .map_err(|_| anyhow!("the embedded font is not a valid TrueType font"));
    });
    result
}

const PANEL_HEIGHT: u32 = 210;
const WIDTH: u32 = 1200;
/// Room above the panels for the title, the windows line and the shared legend.
const HEADER_HEIGHT: u32 = 78;

const ARRIVALS: RGBColor = RGBColor(170, 170, 170);
const READY: RGBColor = RGBColor(230, 120, 20);
const DESIRED: RGBColor = RGBColor(30, 90, 200);
const MISS: RGBColor = RGBColor(200, 20, 40);

/// The windows, shortened for a plot title.
pub(super) fn short_label(w: &WindowInfo) -> String {
    if w.in_sample {
        "IN-SAMPLE (learned on the scored window)".to_owned()
    } else {
        format!(
            "out of sample: learned on {} requests, scored {:.0}-{:.0} s",
            w.train_requests,
            w.scored_from_secs,
            w.scored_from_secs + w.scored_span_secs
        )
    }
}

/// Each minute's share of the scored requests that missed the objective, `(minute, share)`.
fn minute_misses(scored: &[TraceRequest], ttft_secs: &[f64], slo_secs: f64) -> Vec<(usize, f64)> {
    let mut n: Vec<usize> = Vec::new();
    let mut missed: Vec<usize> = Vec::new();
    for (r, &t) in scored.iter().zip(ttft_secs) {
        let m = (r.arrival_secs / 60.0).floor().max(0.0) as usize;
        if n.len() <= m {
            n.resize(m + 1, 0);
            missed.resize(m + 1, 0);
        }
        n[m] += 1;
        missed[m] += usize::from(t.is_nan() || t > slo_secs);
    }
    n.iter()
        .zip(&missed)
        .enumerate()
        .filter(|(_, (n, _))| **n > 0)
        .map(|(m, (n, x))| (m, *x as f64 / *n as f64))
        .collect()
}

/// Writes `replicas.svg` and `replicas.png` into `dir`. `scored` are the scored
/// window's requests, in the order of each run's `ttft_secs`.
pub(super) fn write_plots(
    runs: &[RunResult],
    scored: &[TraceRequest],
    title: &str,
    slo_secs: f64,
    target: f64,
    dir: &Path,
) -> Result<()> {
    register()?;
    let height = PANEL_HEIGHT * runs.len().max(1) as u32 + HEADER_HEIGHT;
    let misses: Vec<Vec<(usize, f64)>> = runs.iter().map(|r| minute_misses(scored, &r.ttft_secs, slo_secs)).collect();
    let svg = dir.join("replicas.svg");
    {
        let root = SVGBackend::new(&svg, (WIDTH, height)).into_drawing_area();
        draw(&root, runs, &misses, title, target).with_context(|| format!("drawing {}", svg.display()))?;
        root.present().map_err(|e| anyhow!("{e}")).with_context(|| format!("writing {}", svg.display()))?;
    }
    let png = dir.join("replicas.png");
    {
        let root = BitMapBackend::new(&png, (WIDTH, height)).into_drawing_area();
        draw(&root, runs, &misses, title, target).with_context(|| format!("drawing {}", png.display()))?;
        root.present().map_err(|e| anyhow!("{e}")).with_context(|| format!("writing {}", png.display()))?;
    }
    Ok(())
}

/// A legend strip drawn above the panels (outside them), left to right.
fn legend<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, entries: &[(&str, RGBColor, bool)]) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow!("{e:?}");
    let mut x = 60;
    let y = 12;
    for &(label, color, marker) in entries {
        if marker {
            area.draw(&Rectangle::new([(x + 4, y - 5), (x + 14, y + 5)], color.filled())).map_err(err)?;
        } else {
            area.draw(&PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(3))).map_err(err)?;
        }
        area.draw(&Text::new(label.to_owned(), (x + 24, y - 7), ("sans-serif", 13))).map_err(err)?;
        x += 34 + 7 * label.chars().count() as i32;
    }
    Ok(())
}

fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    runs: &[RunResult],
    misses: &[Vec<(usize, f64)>],
    title: &str,
    target: f64,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow!("{e:?}");
    root.fill(&WHITE).map_err(err)?;
    let (header, body) = root.split_vertically(HEADER_HEIGHT);
    header.draw(&Text::new(title.to_owned(), (20, 8), ("sans-serif", 20))).map_err(err)?;
    let (_, strip) = header.split_vertically(44);
    let miss_label = format!("minute with under {:.0} % within the SLO (darker: more missed)", 100.0 * target);
    legend(
        &strip,
        &[
            ("arrivals, req/s (right axis)", ARRIVALS, false),
            ("ready replicas", READY, false),
            ("desired replicas", DESIRED, false),
            (&miss_label, MISS, true),
        ],
    )?;
    let t_max = runs.iter().flat_map(|r| r.series.last()).map(|p| p.t_secs / 60.0).fold(1.0, f64::max);
    let rps_max = runs.iter().flat_map(|r| r.series.iter()).map(|p| p.arrival_rps).fold(1.0, f64::max) * 1.05;
    let replicas_max =
        runs.iter().flat_map(|r| r.series.iter()).map(|p| p.desired.max(p.ready)).max().unwrap_or(1).max(1);
    let replicas_max = (f64::from(replicas_max) * 1.1).ceil() as i32 + 1;
    let panels = body.split_evenly((runs.len().max(1), 1));
    for ((run, area), missed) in runs.iter().zip(panels.iter()).zip(misses) {
        let r = &run.report;
        let bad = missed.iter().filter(|(_, share)| *share > 1.0 - target + 1e-12).count();
        let caption = format!(
            "{}: {:.2} % within the SLO, {:.1} GPU-h, {} scale events, {} direction changes, {} of {} minutes under target",
            r.name,
            100.0 * r.slo_attainment,
            r.gpu_hours,
            r.scale_events,
            r.direction_changes,
            bad,
            missed.len()
        );
        let mut chart = ChartBuilder::on(area)
            .caption(caption, ("sans-serif", 14))
            .margin(6)
            .x_label_area_size(36)
            .y_label_area_size(48)
            .right_y_label_area_size(56)
            .build_cartesian_2d(0.0..t_max, 0..replicas_max)
            .map_err(err)?
            .set_secondary_coord(0.0..t_max, 0.0..rps_max);
        // Integer replica ticks (the axis is integer: plotters picks whole-number steps).
        chart
            .configure_mesh()
            .x_desc("minutes into the scored window")
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_desc("replicas")
            .y_labels(6)
            .y_label_formatter(&|v| format!("{v}"))
            .label_style(("sans-serif", 12))
            .axis_desc_style(("sans-serif", 12))
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(err)?;
        chart
            .configure_secondary_axes()
            .y_desc("arrivals req/s")
            .label_style(("sans-serif", 12))
            .axis_desc_style(("sans-serif", 12))
            .draw()
            .map_err(err)?;
        // Minutes under target: a red band along the top of the panel, darker for more misses.
        let top = replicas_max;
        let band = (f64::from(replicas_max) * 0.06).ceil() as i32;
        chart
            .draw_series(missed.iter().filter(|(_, share)| *share > 1.0 - target + 1e-12).map(|&(m, share)| {
                let alpha = (0.35 + 0.65 * (share * 5.0).min(1.0)).min(1.0);
                Rectangle::new([(m as f64, top - band), (m as f64 + 1.0, top)], MISS.mix(alpha).filled())
            }))
            .map_err(err)?;
        let arrivals = run.series.iter().map(|p| (p.t_secs / 60.0, p.arrival_rps));
        chart.draw_secondary_series(LineSeries::new(arrivals, ARRIVALS.stroke_width(1))).map_err(err)?;
        let stairs = |f: fn(&vllm_scaling_core::sim::SeriesPoint) -> i32| {
            let mut pts = Vec::with_capacity(run.series.len() * 2);
            let mut last: Option<i32> = None;
            for p in &run.series {
                let (t, v) = (p.t_secs / 60.0, f(p));
                if let Some(prev) = last {
                    pts.push((t, prev));
                }
                pts.push((t, v));
                last = Some(v);
            }
            pts
        };
        chart.draw_series(LineSeries::new(stairs(|p| p.ready), READY.stroke_width(2))).map_err(err)?;
        chart.draw_series(LineSeries::new(stairs(|p| p.desired), DESIRED.stroke_width(1))).map_err(err)?;
    }
    Ok(())
}

const PALETTE: [RGBColor; 9] = [
    RGBColor(30, 90, 200),
    RGBColor(230, 120, 20),
    RGBColor(40, 150, 60),
    RGBColor(200, 20, 40),
    RGBColor(140, 80, 180),
    RGBColor(140, 90, 60),
    RGBColor(220, 100, 180),
    RGBColor(110, 110, 110),
    RGBColor(20, 170, 190),
];

/// Writes `pareto.svg` and `pareto.png`: attainment against GPU-hours of every policy
/// (large labelled points), every robustness point (small, the policy's colour) and the
/// oracle's lower bound.
pub(super) fn write_pareto(
    reports: &[&PolicyReport],
    robust: &[RobustRow],
    bound: Option<f64>,
    target: f64,
    title: &str,
    dir: &Path,
) -> Result<()> {
    register()?;
    let svg = dir.join("pareto.svg");
    {
        let root = SVGBackend::new(&svg, (1040, 600)).into_drawing_area();
        pareto(&root, reports, robust, bound, target, title).with_context(|| format!("drawing {}", svg.display()))?;
        root.present().map_err(|e| anyhow!("{e}")).with_context(|| format!("writing {}", svg.display()))?;
    }
    let png = dir.join("pareto.png");
    {
        let root = BitMapBackend::new(&png, (1040, 600)).into_drawing_area();
        pareto(&root, reports, robust, bound, target, title).with_context(|| format!("drawing {}", png.display()))?;
        root.present().map_err(|e| anyhow!("{e}")).with_context(|| format!("writing {}", png.display()))?;
    }
    Ok(())
}

fn pareto<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    reports: &[&PolicyReport],
    robust: &[RobustRow],
    bound: Option<f64>,
    target: f64,
    title: &str,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow!("{e:?}");
    root.fill(&WHITE).map_err(err)?;
    let (header, rest) = root.split_vertically(34);
    header.draw(&Text::new(title.to_owned(), (12, 8), ("sans-serif", 16))).map_err(err)?;
    let (plots, side) = rest.split_horizontally(780);
    let color = |name: &str| {
        let i = reports.iter().position(|r| r.name == name).unwrap_or(PALETTE.len() - 1);
        PALETTE[i % PALETTE.len()]
    };
    let points: Vec<(f64, f64)> = reports
        .iter()
        .map(|r| (100.0 * r.slo_attainment, r.gpu_hours))
        .chain(robust.iter().map(|r| (100.0 * r.slo_attainment, r.gpu_hours)))
        .chain(bound.map(|b| (100.0 * target, b)))
        .collect();
    let y_max = points.iter().map(|p| p.1).fold(0.0, f64::max) * 1.08 + 0.1;
    let x_min = points.iter().map(|p| p.0).fold(100.0, f64::min);
    // Left: every point; right: the neighbourhood of the target, where the policies worth
    // comparing are.
    let zoom_lo = (100.0 * target - 2.0).max(0.0);
    let full_lo = (x_min - 0.5).floor().clamp(0.0, zoom_lo);
    let (left, right) = plots.split_horizontally(330);
    for (area, lo, caption) in [(&left, full_lo, "all points"), (&right, zoom_lo, "around the target")] {
        let mut chart = ChartBuilder::on(area)
            .caption(caption, ("sans-serif", 13))
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(56)
            // A little room right of 100 % so points there are drawn whole.
            .build_cartesian_2d(lo..100.0 + 0.03 * (100.0 - lo), 0.0..y_max)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("within the TTFT objective, % (scored window)")
            .y_desc("GPU-hours (scored window)")
            .x_labels(if lo < zoom_lo { 5 } else { 9 })
            .label_style(("sans-serif", 11))
            .axis_desc_style(("sans-serif", 12))
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(err)?;
        chart
            .draw_series(LineSeries::new(
                vec![(100.0 * target, 0.0), (100.0 * target, y_max)],
                RGBColor(120, 120, 120).stroke_width(1),
            ))
            .map_err(err)?;
        let inside = |x: f64| x >= lo;
        chart
            .draw_series(
                robust.iter().filter(|r| inside(100.0 * r.slo_attainment)).map(|r| {
                    Circle::new((100.0 * r.slo_attainment, r.gpu_hours), 3, color(&r.policy).mix(0.55).filled())
                }),
            )
            .map_err(err)?;
        chart
            .draw_series(
                reports
                    .iter()
                    .filter(|r| inside(100.0 * r.slo_attainment))
                    .map(|r| Circle::new((100.0 * r.slo_attainment, r.gpu_hours), 6, color(&r.name).filled())),
            )
            .map_err(err)?;
        if let Some(b) = bound {
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(100.0 * target - 0.015 * (100.0 - lo), b - y_max * 0.008), (100.0 * target, b + y_max * 0.008)],
                    BLACK.filled(),
                )))
                .map_err(err)?;
        }
    }
    // The legend, outside the plot.
    let mut y = 40;
    side.draw(&Text::new("policies (large: nominal run)".to_owned(), (10, y - 24), ("sans-serif", 13))).map_err(err)?;
    for r in reports {
        side.draw(&Circle::new((18, y), 6, color(&r.name).filled())).map_err(err)?;
        side.draw(&Text::new(r.name.clone(), (32, y - 7), ("sans-serif", 13))).map_err(err)?;
        y += 22;
    }
    y += 10;
    if !robust.is_empty() {
        side.draw(&Circle::new((18, y), 3, RGBColor(110, 110, 110).filled())).map_err(err)?;
        side.draw(&Text::new("robustness points (small,".to_owned(), (32, y - 7), ("sans-serif", 13))).map_err(err)?;
        y += 16;
        side.draw(&Text::new("the policy's colour)".to_owned(), (32, y - 7), ("sans-serif", 13))).map_err(err)?;
        y += 22;
    }
    if bound.is_some() {
        side.draw(&Rectangle::new([(14, y - 5), (22, y + 5)], BLACK.filled())).map_err(err)?;
        side.draw(&Text::new("oracle lower bound at the target".to_owned(), (32, y - 7), ("sans-serif", 13)))
            .map_err(err)?;
        y += 22;
    }
    side.draw(&PathElement::new(vec![(10, y), (26, y)], RGBColor(120, 120, 120).stroke_width(1))).map_err(err)?;
    side.draw(&Text::new(format!("target {:.0} %", 100.0 * target), (32, y - 7), ("sans-serif", 13))).map_err(err)?;
    Ok(())
}
