//! Plots of a result, as SVG (text is left to the viewer, so no font is needed here):
//! `<scenario>-throughput.svg` (per second over the run) and `<scenario>-latency.svg`
//! (latency by percentile).

use std::path::Path;

use plotters::prelude::*;

use super::report::Report;

fn bounds(values: impl Iterator<Item = f64> + Clone) -> f64 {
    values.fold(0.0_f64, f64::max).max(f64::MIN_POSITIVE) * 1.1
}

/// Draws whichever plots the report has data for.
///
/// # Errors
/// A file that cannot be written.
pub fn draw(report: &Report, out: &Path) -> anyhow::Result<()> {
    if report.throughput.len() >= 2 {
        let path = out.join(format!("{}-throughput.svg", report.scenario));
        line_chart(
            &path,
            &format!("{}: throughput over the run", report.scenario),
            "seconds",
            "per second",
            &report.throughput,
        )?;
    }
    if !report.percentiles.is_empty() {
        let path = out.join(format!("{}-latency.svg", report.scenario));
        line_chart(
            &path,
            &format!("{}: latency by percentile", report.scenario),
            "percentile",
            "ms",
            &report.percentiles,
        )?;
    }
    Ok(())
}

fn line_chart(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    points: &[(f64, f64)],
) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
    let x_min = points.iter().map(|p| p.0).fold(f64::INFINITY, f64::min);
    let x_max = points.iter().map(|p| p.0).fold(f64::NEG_INFINITY, f64::max);
    let x_max = if x_max > x_min { x_max } else { x_min + 1.0 };
    let y_max = bounds(points.iter().map(|p| p.1));
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(x_min..x_max, 0.0..y_max)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    chart
        .draw_series(LineSeries::new(
            points.iter().copied(),
            BLUE.stroke_width(2),
        ))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    chart
        .draw_series(points.iter().map(|&p| Circle::new(p, 3, BLUE.filled())))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    root.present().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}
