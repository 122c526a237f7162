//! Statistics over repeated runs: medians, the run-to-run spread, and
//! rows combined across runs.

use super::*;
use extregs_bench::Summary;

/// The median of `values` (the mean of the middle two for an even count);
/// None for none.
pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let middle = sorted.len() / 2;
    Some(if sorted.len().is_multiple_of(2) {
        (sorted[middle - 1] + sorted[middle]) / 2.0
    } else {
        sorted[middle]
    })
}

/// Several runs' summaries of one variant as one: the lowest minimum, and
/// the median of the runs' medians, p99s and IQRs.
pub fn combine_summaries(summaries: &[Summary]) -> Option<Summary> {
    let of = |field: fn(&Summary) -> f64| median(&summaries.iter().map(field).collect::<Vec<_>>());
    Some(Summary {
        min: summaries.iter().map(|s| s.min).reduce(f64::min)?,
        median: of(|s| s.median)?,
        p99: of(|s| s.p99)?,
        iqr: of(|s| s.iqr)?,
    })
}

/// Merges repeated runs of one harness (each the rows of one run, in the
/// same order) into one row per variant: [`combine_summaries`], plus each
/// run's median and its ratios to that run's floor and by-value. A variant
/// that did not run in every run is reported as not run.
pub fn combine(runs: &[Vec<Row>]) -> Vec<Row> {
    let Some(first) = runs.first() else {
        return Vec::new();
    };
    first
        .iter()
        .map(|row| {
            let mut combined = Row { repeats: Repeats::default(), ..row.clone() };
            let mut summaries = Vec::new();
            for run in runs {
                let Some(summary) =
                    run.iter().find(|other| other.name == row.name).and_then(|r| r.summary)
                else {
                    continue;
                };
                summaries.push(summary);
                combined.repeats.medians.push(summary.median);
                if let Some(r) = ratio(Some(summary.median), median_of(run, "floor")) {
                    combined.repeats.to_floor.push(r);
                }
                if let Some(r) = ratio(Some(summary.median), median_of(run, "by-value")) {
                    combined.repeats.to_by_value.push(r);
                }
            }
            if summaries.len() == runs.len() {
                combined.summary = combine_summaries(&summaries);
            } else {
                combined.summary = None;
                combined.repeats = Repeats::default();
                if combined.why.is_none() {
                    combined.why =
                        Some(format!("ran in {} of {} runs", summaries.len(), runs.len()));
                }
            }
            combined
        })
        .collect()
}

/// Merges the nesting tables of repeated kernel runs by depth.
pub fn combine_nesting(runs: &[Vec<NestRow>]) -> Vec<NestRow> {
    let Some(first) = runs.first() else {
        return Vec::new();
    };
    first
        .iter()
        .filter_map(|row| {
            let summaries: Vec<Summary> = runs
                .iter()
                .filter_map(|run| run.iter().find(|other| other.depth == row.depth))
                .map(|other| other.summary)
                .collect();
            Some(NestRow {
                summary: combine_summaries(&summaries)?,
                medians: summaries.iter().map(|s| s.median).collect(),
                ..row.clone()
            })
        })
        .collect()
}

/// A variant's median, by name, in one harness's rows.
pub(crate) fn median_of(rows: &[Row], name: &str) -> Option<f64> {
    rows.iter().find(|row| row.name == name).and_then(|row| row.summary).map(|s| s.median)
}

/// `value / base` with two decimals, or "-".
pub(crate) fn ratio(value: Option<f64>, base: Option<f64>) -> Option<f64> {
    match (value, base) {
        (Some(value), Some(base)) if base > 0.0 => Some(value / base),
        _ => None,
    }
}

/// A row's ratio to its harness's floor or by-value: the median of the
/// run-by-run ratios when runs were repeated, else the ratio of medians.
pub(crate) fn row_ratio(row: &Row, rows: &[Row], base: &str) -> Option<f64> {
    let per_run = if base == "floor" { &row.repeats.to_floor } else { &row.repeats.to_by_value };
    median(per_run).or_else(|| ratio(row.summary.map(|s| s.median), median_of(rows, base)))
}

/// The spread of a row's run medians (max - min); None for one run.
pub fn spread(medians: &[f64]) -> Option<f64> {
    if medians.len() < 2 {
        return None;
    }
    let max = medians.iter().copied().fold(f64::MIN, f64::max);
    let min = medians.iter().copied().fold(f64::MAX, f64::min);
    Some(max - min)
}
