//! Plots of arrival rate and replicas over time, one panel per policy, as SVG and PNG.
//!
//! Text is drawn with an embedded subset of DejaVu Sans (plotters' `ab_glyph` backend),
//! so no system font library is needed.

use std::path::Path;
use std::sync::Once;

use anyhow::{Context, Result, anyhow};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};
use vllm_scaling_core::sim::RunResult;

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

const PANEL_HEIGHT: u32 = 230;
const WIDTH: u32 = 1200;

/// Writes `replicas.svg` and `replicas.png` into `dir`.
pub(super) fn write_plots(runs: &[RunResult], title: &str, dir: &Path) -> Result<()> {
    register()?;
    let height = PANEL_HEIGHT * runs.len().max(1) as u32 + 40;
    let svg = dir.join("replicas.svg");
    {
        let root = SVGBackend::new(&svg, (WIDTH, height)).into_drawing_area();
        draw(&root, runs, title).with_context(|| format!("drawing {}", svg.display()))?;
        root.present().map_err(|e| anyhow!("{e}")).with_context(|| format!("writing {}", svg.display()))?;
    }
    let png = dir.join("replicas.png");
    {
        let root = BitMapBackend::new(&png, (WIDTH, height)).into_drawing_area();
        draw(&root, runs, title).with_context(|| format!("drawing {}", png.display()))?;
        root.present().map_err(|e| anyhow!("{e}")).with_context(|| format!("writing {}", png.display()))?;
    }
    Ok(())
}

fn draw<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, runs: &[RunResult], title: &str) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow!("{e:?}");
    root.fill(&WHITE).map_err(err)?;
    let root = root.titled(title, ("sans-serif", 22)).map_err(err)?;
    let t_max = runs.iter().flat_map(|r| r.series.last()).map(|p| p.t_secs / 60.0).fold(1.0, f64::max);
    let rps_max = runs.iter().flat_map(|r| r.series.iter()).map(|p| p.arrival_rps).fold(1.0, f64::max) * 1.05;
    let replicas_max =
        runs.iter().flat_map(|r| r.series.iter()).map(|p| p.desired.max(p.ready)).max().unwrap_or(1).max(1);
    let replicas_max = f64::from(replicas_max) * 1.1 + 1.0;
    let panels = root.split_evenly((runs.len().max(1), 1));
    for (run, area) in runs.iter().zip(panels.iter()) {
        let r = &run.report;
        let caption = format!(
            "{}: TTFT within SLO {:.2} %, {:.1} GPU-h, {} scale events, {} direction changes",
            r.name,
            100.0 * r.slo_attainment,
            r.gpu_hours,
            r.scale_events,
            r.direction_changes
        );
        let mut chart = ChartBuilder::on(area)
            .caption(caption, ("sans-serif", 15))
            .margin(6)
            .x_label_area_size(24)
            .y_label_area_size(48)
            .right_y_label_area_size(56)
            .build_cartesian_2d(0.0..t_max, 0.0..replicas_max)
            .map_err(err)?
            .set_secondary_coord(0.0..t_max, 0.0..rps_max);
        chart
            .configure_mesh()
            .x_desc("minutes")
            .y_desc("replicas")
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
        let arrivals = run.series.iter().map(|p| (p.t_secs / 60.0, p.arrival_rps));
        chart
            .draw_secondary_series(LineSeries::new(arrivals, RGBColor(170, 170, 170).stroke_width(1)))
            .map_err(err)?
            .label("arrivals (req/s, right axis)")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], RGBColor(170, 170, 170)));
        let step = |f: fn(&vllm_scaling_core::sim::SeriesPoint) -> i32| {
            let mut pts = Vec::with_capacity(run.series.len() * 2);
            let mut last: Option<f64> = None;
            for p in &run.series {
                let (t, v) = (p.t_secs / 60.0, f64::from(f(p)));
                if let Some(prev) = last {
                    pts.push((t, prev));
                }
                pts.push((t, v));
                last = Some(v);
            }
            pts
        };
        chart
            .draw_series(LineSeries::new(step(|p| p.ready), RGBColor(230, 120, 20).stroke_width(2)))
            .map_err(err)?
            .label("ready replicas")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], RGBColor(230, 120, 20)));
        chart
            .draw_series(LineSeries::new(step(|p| p.desired), RGBColor(30, 90, 200).stroke_width(1)))
            .map_err(err)?
            .label("desired replicas")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], RGBColor(30, 90, 200)));
        chart
            .configure_series_labels()
            .label_font(("sans-serif", 11))
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK.mix(0.3))
            .position(SeriesLabelPosition::UpperLeft)
            .draw()
            .map_err(err)?;
    }
    Ok(())
}
