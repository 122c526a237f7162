//! `extregs bench --fuzz-smp`: one host, two ways to use its two cores for
//! a fuzz campaign, measured in one run: one QEMU of two CPUs (two fuzz
//! lanes, `--smp 2 --jobs 1`) against two QEMUs of one CPU each (`--smp 1
//! --jobs 2`). Both run the same seeds, in turn, `runs` times; the figure
//! is the campaign's validated frames per second of wall time, boots
//! included, and the SMP campaign's rate over the two single-CPU boots'.

use crate::campaign::{self, CampaignConfig};
use serde_json::{json, Value};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

/// The campaign each side runs (the short campaign of docs/fuzzing.md).
pub const SEEDS: std::ops::Range<u64> = 0..24;
pub const ITERATIONS: u64 = 1000;

/// One side's campaigns: wall frames/s, run by run.
#[derive(Clone, Debug, Default)]
pub struct Side {
    pub smp: u32,
    pub jobs: usize,
    pub frames_per_s: Vec<f64>,
    pub wall_seconds: Vec<f64>,
}

/// Both sides, and the per-run ratio SMP / single-CPU.
#[derive(Clone, Debug)]
pub struct Comparison {
    pub smp: Side,
    pub single: Side,
    pub ratios: Vec<f64>,
}

fn config(smp: u32, jobs: usize) -> CampaignConfig {
    CampaignConfig {
        seeds: SEEDS,
        iterations: ITERATIONS,
        max_depth: 8,
        jobs,
        deterministic: false,
        cpu: "max".into(),
        timeout: Duration::from_secs(600),
        inject: None,
        nmi_storm: false,
        granular: false,
        foreign_timer_hz: 0,
        seeds_per_boot: 0,
        smp,
    }
}

/// Runs one side's campaign once; its wall frames/s and seconds, or which
/// seed failed (a kernel failure: the fuzzer found something).
fn run_once(side: &Side) -> Result<(f64, f64), String> {
    let config = config(side.smp, side.jobs);
    let (reports, totals, _) =
        campaign::run_campaign(&config, Arc::new(AtomicBool::new(false)), |_, _| {});
    if let Some(failed) = reports.iter().find(|report| !report.ok()) {
        return Err(format!(
            "--smp {} --jobs {}: seed {} failed: {} (replay: {})",
            side.smp,
            side.jobs,
            failed.seed,
            failed.why,
            campaign::replay_command(&config, failed.seed)
        ));
    }
    Ok((totals.frames_per_second(), totals.wall_seconds))
}

/// Both campaigns, alternating, `runs` times.
pub fn measure(runs: u32) -> Result<Comparison, String> {
    let mut smp = Side { smp: 2, jobs: 1, ..Side::default() };
    let mut single = Side { smp: 1, jobs: 2, ..Side::default() };
    let mut ratios = Vec::new();
    for _ in 0..runs {
        let (smp_rate, smp_wall) = run_once(&smp)?;
        let (single_rate, single_wall) = run_once(&single)?;
        smp.frames_per_s.push(smp_rate);
        smp.wall_seconds.push(smp_wall);
        single.frames_per_s.push(single_rate);
        single.wall_seconds.push(single_wall);
        ratios.push(smp_rate / single_rate);
    }
    Ok(Comparison { smp, single, ratios })
}

impl Comparison {
    /// The table: each side's median (and range) of wall frames/s, and the
    /// median of the run-by-run ratios.
    pub fn table(&self) -> String {
        let describe = |side: &Side| {
            let median = super::statistics::median(&side.frames_per_s).unwrap_or(0.0);
            let low = side.frames_per_s.iter().copied().fold(f64::INFINITY, f64::min);
            let high = side.frames_per_s.iter().copied().fold(0.0, f64::max);
            let wall = super::statistics::median(&side.wall_seconds).unwrap_or(0.0);
            format!(
                "--smp {} --jobs {}: {median:>8.0} frames/s wall (runs {low:.0}..{high:.0}), median campaign {wall:.1} s\n",
                side.smp, side.jobs
            )
        };
        let ratio = super::statistics::median(&self.ratios).unwrap_or(0.0);
        format!(
            "fuzz campaign, seeds {}..{} x {} iterations, {} runs, wall time including boots:\n{}{}SMP / single-CPU boots: {ratio:.2} (median of the runs' ratios: {})\n",
            SEEDS.start,
            SEEDS.end,
            ITERATIONS,
            self.ratios.len(),
            describe(&self.smp),
            describe(&self.single),
            self.ratios.iter().map(|r| format!("{r:.3}")).collect::<Vec<_>>().join(", ")
        )
    }

    pub fn to_json(&self) -> Value {
        let side = |side: &Side| {
            json!({
                "smp": side.smp,
                "jobs": side.jobs,
                "frames_per_s": side.frames_per_s,
                "wall_seconds": side.wall_seconds,
                "median_frames_per_s": super::statistics::median(&side.frames_per_s),
            })
        };
        json!({
            "seeds": format!("{}..{}", SEEDS.start, SEEDS.end),
            "iterations": ITERATIONS,
            "smp": side(&self.smp),
            "single": side(&self.single),
            "ratios": self.ratios,
            "median_ratio": super::statistics::median(&self.ratios),
        })
    }
}
