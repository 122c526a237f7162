//! Rendering: the tables, the JSON rows and the SVG chart.

use super::statistics::{row_ratio, spread};
use super::*;
use crate::error::{Error, Result};
use extregs_bench::{Placement, EXTENSION_SIZES};
use serde_json::{json, Value};

/// The size series of one harness as two grids, placement by size: median
/// cycles per round trip (with the spread of the run medians) and stack
/// bytes per frame.
pub fn size_table(rows: &[Row], title: &str) -> String {
    let mut text = format!("{title}\n");
    let sizes: Vec<u64> = EXTENSION_SIZES.iter().map(|&b| b as u64).collect();
    let cell = |placement: &str, bytes: u64| {
        rows.iter().find(|row| {
            row.placement.as_deref() == Some(placement) && row.extension_bytes == Some(bytes)
        })
    };
    for (heading, stack) in [("median cycles (spread)", false), ("stack bytes per frame", true)] {
        text.push_str(&format!("  {:<14}", heading.split(' ').next().unwrap_or_default()));
        for bytes in &sizes {
            text.push_str(&format!(" {:>14}", format!("{bytes} B")));
        }
        text.push_str(&format!("   ({heading})\n"));
        for placement in Placement::ALL {
            text.push_str(&format!("  {:<14}", placement.name()));
            for &bytes in &sizes {
                let shown = match (cell(placement.name(), bytes), stack) {
                    (Some(row), true) => row.stack_bytes.map_or("-".into(), |b| b.to_string()),
                    (Some(row), false) => {
                        row.summary.map_or("-".into(), |s| match spread(&row.repeats.medians) {
                            Some(spread) => format!("{:.1} ({spread:.1})", s.median),
                            None => format!("{:.1}", s.median),
                        })
                    }
                    (None, _) => "-".into(),
                };
                text.push_str(&format!(" {shown:>14}"));
            }
            text.push('\n');
        }
    }
    text
}

/// The table for one harness (the size series has its own, [`size_table`]).
pub fn table(rows: &[Row], title: &str) -> String {
    let mut text = format!("{title}\n");
    text.push_str(&format!(
        "  {:<20} {:>8} {:>8} {:>8} {:>7} {:>8} {:>7} {:>8} {:>10}\n",
        "variant", "min", "median", "p99", "iqr", "spread", "stack", "x floor", "x by-value"
    ));
    for row in rows.iter().filter(|row| row.extension_bytes.is_none()) {
        match row.summary {
            Some(summary) => {
                let show = |r: Option<f64>| r.map_or("-".to_string(), |r| format!("{r:.2}"));
                text.push_str(&format!(
                    "  {:<20} {:>8.1} {:>8.1} {:>8.1} {:>7.1} {:>8} {:>7} {:>8} {:>10}\n",
                    row.name,
                    summary.min,
                    summary.median,
                    summary.p99,
                    summary.iqr,
                    spread(&row.repeats.medians).map_or("-".into(), |s| format!("{s:.1}")),
                    row.stack_bytes.map_or("-".into(), |b| b.to_string()),
                    show(row_ratio(row, rows, "floor")),
                    show(row_ratio(row, rows, "by-value")),
                ));
            }
            None => text.push_str(&format!(
                "  {:<20} not run: {}\n",
                row.name,
                row.why.as_deref().unwrap_or("not available")
            )),
        }
    }
    text
}

/// One JSON row per variant and harness. With repeated runs, `min_cycles`
/// is the lowest minimum, the other cycle figures the medians of the runs'
/// ones, `median_spread_cycles` the spread of the run medians, and the
/// ratios the medians of the run-by-run ratios (each run's lists too).
pub fn row_json(row: &Row, rows_of_harness: &[Row]) -> Value {
    json!({
        "name": row.name,
        "harness": row.harness,
        "ran": row.summary.is_some(),
        "iterations": row.iterations,
        "min_cycles": row.summary.map(|s| s.min),
        "median_cycles": row.summary.map(|s| s.median),
        "p99_cycles": row.summary.map(|s| s.p99),
        "iqr_cycles": row.summary.map(|s| s.iqr),
        "stack_bytes": row.stack_bytes,
        "runs": row.repeats.medians.len(),
        "run_median_cycles": row.repeats.medians,
        "median_spread_cycles": spread(&row.repeats.medians),
        "ratio_to_floor": row.summary.and_then(|_| row_ratio(row, rows_of_harness, "floor")),
        "ratio_to_by_value": row.summary.and_then(|_| row_ratio(row, rows_of_harness, "by-value")),
        "extension_bytes": row.extension_bytes,
        "placement": row.placement,
        "ratio_to_floor_runs": row.repeats.to_floor,
        "ratio_to_by_value_runs": row.repeats.to_by_value,
        "why_not_run": row.why,
    })
}

/// Draws the medians as grouped bars (one group per variant, one bar per
/// harness), as ratios to each harness's floor so TCG and native share a
/// scale.
pub fn plot(rows: &[Row], path: &std::path::Path, caption: &str) -> Result<()> {
    use plotters::prelude::*;
    let harnesses: Vec<String> = {
        let mut names: Vec<String> = rows.iter().map(|r| r.harness.clone()).collect();
        names.dedup();
        names
    };
    let ratio_of = |harness: &str, name: &str| {
        let of_harness: Vec<Row> = rows.iter().filter(|r| r.harness == harness).cloned().collect();
        let row = of_harness.iter().find(|row| row.name == name)?;
        row.summary?;
        row_ratio(row, &of_harness, "floor")
    };
    let max = VARIANTS
        .iter()
        .flat_map(|name| harnesses.iter().filter_map(move |h| ratio_of(h, name)))
        .fold(1.0f64, f64::max);
    let has_sizes = rows.iter().any(|row| row.extension_bytes.is_some());
    let height = if has_sizes { 480 + SIZE_PANEL_HEIGHT } else { 480 };
    let whole = SVGBackend::new(path, (900, height)).into_drawing_area();
    whole.fill(&WHITE).map_err(|e| Error::draw("the bench chart", e))?;
    let (root, below) = whole.split_vertically(480);
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(60)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..VARIANTS.len() as f64, (BAR_BASE..max * 1.5).log_scale())
        .map_err(|e| Error::draw("the bench chart", e))?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        // A tick every half slot; only the slot centres get a name.
        .x_labels(VARIANTS.len() * 2 + 1)
        .x_label_formatter(&|x| {
            if (x.fract() - 0.5).abs() < 1e-6 {
                VARIANTS.get(x.floor() as usize).map(|s| s.to_string()).unwrap_or_default()
            } else {
                String::new()
            }
        })
        .y_desc("median cycles / floor (log scale)")
        .draw()
        .map_err(|e| Error::draw("the bench chart", e))?;
    let colours = [RGBColor(52, 101, 164), RGBColor(204, 0, 0)];
    let width = 0.8 / harnesses.len().max(1) as f64;
    for (index, harness) in harnesses.iter().enumerate() {
        let colour = colours[index % colours.len()];
        let bars: Vec<Rectangle<(f64, f64)>> = VARIANTS
            .iter()
            .enumerate()
            .filter_map(|(slot, name)| {
                let value = ratio_of(harness, name)?;
                let left = slot as f64 + 0.1 + width * index as f64;
                Some(Rectangle::new([(left, BAR_BASE), (left + width, value)], colour.filled()))
            })
            .collect();
        chart
            .draw_series(bars)
            .map_err(|e| Error::draw("the bench chart", e))?
            .label(harness.as_str())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], colour.filled()));
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE)
        .draw()
        .map_err(|e| Error::draw("the bench chart", e))?;
    if has_sizes {
        plot_sizes(rows, &below)?;
    }
    whole.present().map_err(|e| Error::draw("the bench chart", e))?;
    Ok(())
}

pub(crate) const SIZE_PANEL_HEIGHT: u32 = 360;

/// The size series under the bars: median cycles against the state's
/// size, one line per placement, for each harness that ran it, and the
/// stack per frame (the kernel harness's, else the native one's).
pub(crate) fn plot_sizes(
    rows: &[Row],
    area: &plotters::drawing::DrawingArea<plotters::prelude::SVGBackend, plotters::coord::Shift>,
) -> Result<()> {
    use plotters::prelude::*;
    let colours =
        [RGBColor(52, 101, 164), RGBColor(204, 0, 0), RGBColor(78, 154, 6), RGBColor(117, 80, 123)];
    let harnesses: Vec<&str> = ["native", "kernel"]
        .into_iter()
        .filter(|h| rows.iter().any(|r| r.harness == *h && r.extension_bytes.is_some()))
        .collect();
    let stack_harness = if harnesses.contains(&"kernel") { "kernel" } else { "native" };
    let panels = area.split_evenly((1, harnesses.len() + 1));
    let series = |harness: &str, placement: Placement, stack: bool| -> Vec<(f64, f64)> {
        rows.iter()
            .filter(|r| r.harness == harness && r.placement.as_deref() == Some(placement.name()))
            .filter_map(|r| {
                let bytes = r.extension_bytes? as f64;
                let value = if stack { r.stack_bytes? as f64 } else { r.summary?.median };
                Some((bytes, value))
            })
            .collect()
    };
    let mut plots: Vec<(String, String, bool)> =
        harnesses.iter().map(|h| (format!("{h}: median cycles"), h.to_string(), false)).collect();
    plots.push((format!("{stack_harness}: stack bytes per frame"), stack_harness.into(), true));
    for (panel, (caption, harness, stack)) in panels.iter().zip(plots) {
        let values: Vec<f64> = Placement::ALL
            .iter()
            .flat_map(|&p| series(&harness, p, stack))
            .map(|(_, v)| v)
            .collect();
        let (low, high) =
            values.iter().fold((f64::MAX, f64::MIN), |(low, high), &v| (low.min(v), high.max(v)));
        if values.is_empty() {
            continue;
        }
        let margin = ((high - low) * 0.15).max(1.0);
        let mut chart = ChartBuilder::on(panel)
            .caption(caption, ("sans-serif", 14))
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(50)
            .build_cartesian_2d((6f64..160f64).log_scale(), (low - margin)..(high + margin))
            .map_err(|e| Error::draw("the bench chart", e))?;
        chart
            .configure_mesh()
            .x_labels(5)
            .x_label_formatter(&|x| format!("{x:.0}"))
            .x_desc("extension bytes")
            .draw()
            .map_err(|e| Error::draw("the bench chart", e))?;
        for (index, placement) in Placement::ALL.into_iter().enumerate() {
            let colour = colours[index % colours.len()];
            let points = series(&harness, placement, stack);
            chart
                .draw_series(LineSeries::new(points.clone(), colour.stroke_width(2)))
                .map_err(|e| Error::draw("the bench chart", e))?
                .label(placement.name())
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 14, y)], colour.stroke_width(2))
                });
            chart
                .draw_series(points.into_iter().map(|p| Circle::new(p, 3, colour.filled())))
                .map_err(|e| Error::draw("the bench chart", e))?;
        }
        if stack {
            // One legend for the three panels (the colours are the same);
            // the stack lines rise to the right, so the lower right is free.
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::LowerRight)
                .border_style(BLACK)
                .background_style(WHITE.mix(0.8))
                .label_font(("sans-serif", 11))
                .draw()
                .map_err(|e| Error::draw("the bench chart", e))?;
        }
    }
    Ok(())
}

/// Where the log-scale bars start (below the floor's 1.0).
pub(crate) const BAR_BASE: f64 = 0.5;
