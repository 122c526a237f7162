//! Fuzz campaigns: `mode=fuzz` boots run in parallel QEMU instances, each
//! running a batch of seeds (`seeds=A..B`, one `FUZZ` line per seed) so the
//! boot is paid once per batch; the seeds' lines are added up. A violation
//! ends its boot: the seeds of the batch after it go back in the queue.
//!
//! The CLI (`extregs fuzz`) draws a progress bar and handles Ctrl-C; this
//! module does the work, so tests run exactly what users run.

use crate::error::{Error, Result};
use crate::exit_codes::EXIT_SUCCESS;
use crate::qemu::{self, RunConfig};
use serde_json::{json, Map, Value};
use std::collections::VecDeque;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// What to run.
#[derive(Clone, Debug)]
pub struct CampaignConfig {
    pub seeds: Range<u64>,
    pub iterations: u64,
    pub max_depth: u32,
    pub jobs: usize,
    /// `-icount`: asynchronous events replay exactly (same digest).
    pub deterministic: bool,
    /// QEMU CPU model.
    pub cpu: String,
    /// Per-seed timeout (in a batch: from the boot, or the last seed's
    /// `FUZZ` line, to the next).
    pub timeout: Duration,
    /// Seeds per boot; 0: [`auto_seeds_per_boot`].
    pub seeds_per_boot: u64,
    /// `inject=NAME`: a fault for a fault-injection kernel build to switch on.
    pub inject: Option<String>,
    /// Every boot gets an NMI storm over QMP (foreign NMIs).
    pub nmi_storm: bool,
    /// Every boot runs one guest instruction per translation block.
    pub granular: bool,
    /// `foreign-timer-hz=` for every boot (0: no foreign timer).
    pub foreign_timer_hz: u32,
    /// CPUs each boot gets (QEMU's `-smp`): the kernel runs a fuzz lane
    /// on each, so a boot of N CPUs runs N of its seeds at once.
    pub smp: u32,
}

/// One seed's boot.
#[derive(Clone, Debug)]
pub struct SeedReport {
    pub seed: u64,
    /// The runner's verdict (0 success, 1 failure, 124 timeout, 2 set-up,
    /// 130 killed for Ctrl-C).
    pub exit: i32,
    pub why: String,
    /// The seed's summary: in a batch its `FUZZ` line (the failed seed's
    /// too, if it printed one), else the boot's RESULT, if it printed one.
    pub result: Option<Value>,
    /// The serial output, kept only for failures.
    pub serial: Option<String>,
    /// Entry-text offsets a foreign event interrupted (`COVERAGE_HIT`).
    pub coverage_hits: BTreeSet<u64>,
    /// The same, CPU by CPU (`COVERAGE_HIT_CPU`; empty on one CPU).
    pub coverage_hits_by_cpu: BTreeMap<u32, BTreeSet<u64>>,
    /// What no NMI can land on (`COVERAGE_NOT_RAISED`,
    /// `COVERAGE_NMI_BLOCKED`), when the boot printed it.
    pub coverage_unreachable: Option<crate::coverage::Unreachable>,
    /// The frames by kind and depth and by kind and interrupted context
    /// (`kind_depth`, `contexts`) of every seed of a batch boot, from its
    /// RESULT: a batch's `FUZZ` lines leave them out. One report of the
    /// boot carries them.
    pub boot_breakdowns: Option<Value>,
    /// This seed's frames count, but they are missing from `kind_depth`
    /// and `contexts`: its boot printed no RESULT of its seeds (it died in
    /// a seed, this one's violation included), or one that could not be
    /// used (a seed's line unreadable, or the report carrying it dropped
    /// after Ctrl-C).
    pub breakdowns_lost: bool,
}

/// A summary whose frames count without their kind × depth and context
/// split: a batch's `FUZZ` line, or a violation's RESULT (the frames its
/// seed validated, not the split).
fn frames_without_breakdowns(summary: &Value) -> bool {
    summary["frames"].as_u64().unwrap_or(0) > 0 && summary.get("kind_depth").is_none()
}

impl SeedReport {
    /// The report of a boot that ran seed `seed` alone (`seed=S`): its
    /// RESULT is its summary (and a replay's format), and the boot's
    /// interrupt points are its own.
    pub fn of_one_seed_boot(
        seed: u64,
        exit: i32,
        why: String,
        result: Option<Value>,
        serial: String,
    ) -> SeedReport {
        SeedReport {
            seed,
            exit,
            why,
            breakdowns_lost: result.as_ref().is_some_and(frames_without_breakdowns),
            result,
            coverage_hits: crate::coverage::hits_in(&serial),
            coverage_hits_by_cpu: crate::coverage::hits_by_cpu_in(&serial),
            coverage_unreachable: crate::coverage::unreachable_in(&serial),
            serial: (exit != EXIT_SUCCESS).then_some(serial),
            boot_breakdowns: None,
        }
    }

    pub fn ok(&self) -> bool {
        self.exit == EXIT_SUCCESS
    }

    fn number(&self, key: &str) -> u64 {
        self.result.as_ref().and_then(|r| r[key].as_u64()).unwrap_or(0)
    }

    pub fn frames(&self) -> u64 {
        self.number("frames")
    }

    /// The CPU whose lane ran the seed (its FUZZ line's `cpu`; a one-seed
    /// boot's lane is CPU 0's).
    pub fn cpu(&self) -> u64 {
        self.number("cpu")
    }

    /// The violated invariant, when the kernel named one.
    pub fn invariant(&self) -> Option<&str> {
        self.result.as_ref().and_then(|r| r["invariant"].as_str())
    }
}

/// Everything added up.
#[derive(Clone, Debug, Default)]
pub struct Totals {
    pub seeds_run: u64,
    pub seeds_failed: u64,
    pub iterations: u64,
    pub frames: u64,
    pub violations: u64,
    pub latched_nmis: u64,
    pub max_depth_reached: u64,
    pub kinds: BTreeMap<String, u64>,
    /// Frames per event kind and depth (`kind_depth` of the kernels).
    pub kind_depth: BTreeMap<String, Vec<u64>>,
    /// Frames per event kind and the context it interrupted (`task`,
    /// `user`, or the kind whose handler raised it).
    pub contexts: BTreeMap<String, BTreeMap<String, u64>>,
    /// Frames per event kind and the CPU whose lane ran the seed (`cpu0`,
    /// …; a `migrate` level's frames below it count for the lane's CPU).
    pub kind_cpu: BTreeMap<String, BTreeMap<String, u64>>,
    pub wall_seconds: f64,
    /// NMIs the kernels did not raise themselves (an `--nmi-storm`).
    pub foreign_nmis: u64,
    /// Of those, the ones that landed in user mode (a ring-3 fuzz level).
    pub foreign_user_nmis: u64,
    /// Foreign timer IRQs (`--foreign-timer`).
    pub foreign_irqs: u64,
    /// NMIs the kernels' lanes sent to other CPUs (`--smp`).
    pub cross_cpu_nmis: u64,
    /// `migrate` levels that resumed on another CPU.
    pub migrations: u64,
    /// Union of the seeds' interrupted entry-text offsets.
    pub coverage_hits: BTreeSet<u64>,
    /// The same, CPU by CPU.
    pub coverage_hits_by_cpu: BTreeMap<u32, BTreeSet<u64>>,
    /// Entry-text offsets the breakpoint walks interrupted with a real NMI
    /// entry (`fuzz --coverage` boots a selftest and the walked oopses).
    pub walk_coverage_hits: BTreeSet<u64>,
    /// What no NMI can land on, as the first boot that named it did.
    pub coverage_unreachable: Option<crate::coverage::Unreachable>,
    /// The coverage split by reachability, once [`Totals::measure_coverage`]
    /// ran with [`Totals::coverage_unreachable`] known.
    pub coverage_figures: Option<crate::coverage::Figures>,
    /// Instructions hit on each CPU, once [`Totals::measure_coverage`] ran.
    pub entry_points_by_cpu: BTreeMap<u32, u64>,
    /// (instructions hit, instructions in the entry text), once
    /// [`Totals::measure_coverage`] decoded the kernel's entry text.
    pub entry_points: Option<(u64, u64)>,
    /// Each seed's frames/s as its kernel measured it (boot excluded).
    pub kernel_frames_per_s: Vec<u64>,
    /// Microseconds the kernels spent fuzzing, every seed's added up
    /// (its lane's own clock: boot, output and waits between seeds are
    /// not in it).
    pub kernel_microseconds: u64,
    /// Parallel QEMUs the wall rate came from (0: unknown, a merge).
    pub jobs: u64,
    /// CPUs (fuzz lanes) in each of those QEMUs (0 or 1: one).
    pub cpus_per_boot: u64,
    /// Seeds whose frames are not in `kind_depth` and `contexts` (see
    /// [`SeedReport::breakdowns_lost`]).
    pub seeds_without_breakdowns: u64,
}

impl Totals {
    pub fn add(&mut self, report: &SeedReport) {
        self.seeds_run += 1;
        if !report.ok() {
            self.seeds_failed += 1;
        }
        if let Some(breakdowns) = &report.boot_breakdowns {
            self.add_counts(breakdowns);
        }
        if report.breakdowns_lost {
            self.seeds_without_breakdowns += 1;
        }
        self.coverage_hits.extend(&report.coverage_hits);
        for (cpu, hits) in &report.coverage_hits_by_cpu {
            self.coverage_hits_by_cpu.entry(*cpu).or_default().extend(hits);
        }
        if self.coverage_unreachable.is_none() {
            self.coverage_unreachable.clone_from(&report.coverage_unreachable);
        }
        self.max_depth_reached = self.max_depth_reached.max(report.number("max_depth_reached"));
        // A batch's RESULT (it names `seeds`, not a `seed`) sums the seeds of
        // its boot, whose own lines count already: it adds nothing here. (The
        // seed a failed boot is charged to carries it when that seed printed
        // no line, so it had nothing to add.)
        if report.result.as_ref().is_some_and(|result| result.get("seeds").is_some()) {
            return;
        }
        self.iterations += report.number("iterations");
        self.frames += report.frames();
        self.kernel_microseconds += report.number("microseconds");
        self.violations += report.number("violations");
        self.latched_nmis += report.number("latched_nmis");
        self.foreign_nmis += report.number("foreign_nmis");
        self.foreign_user_nmis += report.number("foreign_user_nmis");
        self.foreign_irqs += report.number("foreign_irqs");
        self.cross_cpu_nmis += report.number("cross_cpu_nmis");
        self.migrations += report.number("migrations");
        if report.ok() && report.frames() > 0 {
            self.kernel_frames_per_s.push(report.number("frames_per_s"));
        }
        if let Some(result) = &report.result {
            self.add_counts(result);
            let cpu = format!("cpu{}", report.cpu());
            for (kind, count) in result["kinds"].as_object().into_iter().flatten() {
                let count = count.as_u64().unwrap_or(0);
                if count > 0 {
                    *self
                        .kind_cpu
                        .entry(kind.clone())
                        .or_default()
                        .entry(cpu.clone())
                        .or_default() += count;
                }
            }
        }
    }

    /// Adds the per-kind counts of a RESULT, FUZZ line or campaign totals.
    pub fn add_counts(&mut self, counts: &Value) {
        for (kind, count) in counts["kinds"].as_object().into_iter().flatten() {
            *self.kinds.entry(kind.clone()).or_default() += count.as_u64().unwrap_or(0);
        }
        for (kind, depths) in counts["kind_depth"].as_object().into_iter().flatten() {
            let row = self.kind_depth.entry(kind.clone()).or_default();
            for (depth, count) in depths.as_array().into_iter().flatten().enumerate() {
                if row.len() <= depth {
                    row.resize(depth + 1, 0);
                }
                row[depth] += count.as_u64().unwrap_or(0);
            }
        }
        for (name, map) in [("contexts", &mut self.contexts), ("kind_cpu", &mut self.kind_cpu)] {
            for (kind, columns) in counts[name].as_object().into_iter().flatten() {
                let row = map.entry(kind.clone()).or_default();
                for (column, count) in columns.as_object().into_iter().flatten() {
                    *row.entry(column.clone()).or_default() += count.as_u64().unwrap_or(0);
                }
            }
        }
    }

    /// Decodes the kernel's entry text and sets `entry_points` from the
    /// union of hits; returns the decoded text (for a `--coverage` listing).
    pub fn measure_coverage(&mut self) -> crate::error::Result<crate::coverage::EntryText> {
        let text = crate::coverage::EntryText::from_elf(crate::images::kernel_elf())?;
        self.entry_points = Some((text.hit(&self.coverage_hits), text.total()));
        let with_walks: BTreeSet<u64> =
            self.coverage_hits.union(&self.walk_coverage_hits).copied().collect();
        self.coverage_figures =
            self.coverage_unreachable.as_ref().map(|ranges| text.figures(&with_walks, ranges));
        self.entry_points_by_cpu =
            self.coverage_hits_by_cpu.iter().map(|(cpu, hits)| (*cpu, text.hit(hits))).collect();
        Ok(text)
    }

    /// Adds the coverage of a walk boot's serial output (a selftest, a
    /// walked oops): the walks' hits, and what no NMI can land on if no
    /// boot named it yet.
    pub fn add_walk_coverage(&mut self, walk_serial: &str) {
        self.walk_coverage_hits.extend(crate::coverage::hits_in(walk_serial));
        if self.coverage_unreachable.is_none() {
            self.coverage_unreachable = crate::coverage::unreachable_in(walk_serial);
        }
    }

    /// Frames validated per second of campaign wall time (all jobs).
    pub fn frames_per_second(&self) -> f64 {
        if self.wall_seconds > 0.0 {
            self.frames as f64 / self.wall_seconds
        } else {
            0.0
        }
    }

    /// The median of the seeds' kernel-measured frames/s.
    pub fn kernel_median_frames_per_second(&self) -> Option<f64> {
        let mut rates = self.kernel_frames_per_s.clone();
        rates.sort_unstable();
        match rates.len() {
            0 => None,
            n if n % 2 == 1 => Some(rates[n / 2] as f64),
            n => Some((rates[n / 2 - 1] + rates[n / 2]) as f64 / 2.0),
        }
    }

    /// Wall frames/s over `jobs` × CPUs per boot × the per-seed median
    /// (one seed runs on one lane, one CPU). When the seeds' rates spread,
    /// the median is not the rate the lanes ran at; against that rate,
    /// the share of the ideal is [`Totals::kernel_time_share`].
    pub fn wall_to_kernel_ratio(&self) -> Option<f64> {
        let median = self.kernel_median_frames_per_second()?;
        let lanes = self.jobs * self.cpus_per_boot.max(1);
        (lanes > 0 && median > 0.0).then(|| self.frames_per_second() / (lanes as f64 * median))
    }

    /// The share of the lanes' time (jobs × CPUs per boot × wall time)
    /// that the kernels spent fuzzing: the campaign's wall rate over what
    /// lanes that never boot, or print or reset between seeds, would reach
    /// at the kernels' own rate (their frames over their fuzzing time).
    pub fn kernel_time_share(&self) -> Option<f64> {
        let lane_seconds = (self.jobs * self.cpus_per_boot.max(1)) as f64 * self.wall_seconds;
        (lane_seconds > 0.0 && self.kernel_microseconds > 0)
            .then(|| self.kernel_microseconds as f64 / 1e6 / lane_seconds)
    }

    pub fn to_json(&self) -> Value {
        json!({
            "kernel_median_frames_per_s": self.kernel_median_frames_per_second(),
            "kernel_seconds": self.kernel_microseconds as f64 / 1e6,
            "kernel_time_share": self.kernel_time_share(),
            "jobs": self.jobs,
            "cpus_per_boot": self.cpus_per_boot.max(1),
            "wall_to_kernel_ratio": self.wall_to_kernel_ratio(),
            "seeds_run": self.seeds_run,
            "seeds_failed": self.seeds_failed,
            "seeds_without_breakdowns": self.seeds_without_breakdowns,
            "iterations": self.iterations,
            "frames": self.frames,
            "violations": self.violations,
            "latched_nmis": self.latched_nmis,
            "max_depth_reached": self.max_depth_reached,
            "kinds": self.kinds,
            "kind_depth": self.kind_depth,
            "contexts": self.contexts,
            "kind_cpu": self.kind_cpu,
            "wall_seconds": self.wall_seconds,
            "frames_per_s": self.frames_per_second(),
            "foreign_nmis": self.foreign_nmis,
            "foreign_user_nmis": self.foreign_user_nmis,
            "foreign_irqs": self.foreign_irqs,
            "cross_cpu_nmis": self.cross_cpu_nmis,
            "migrations": self.migrations,
            "entry_points_hit": self.entry_points.map(|(hit, _)| hit),
            "entry_points_total": self.entry_points.map(|(_, total)| total),
            "entry_points_hit_offsets": self.coverage_hits,
            "entry_points_walk_hit_offsets": self.walk_coverage_hits,
            "entry_points_reachable": self.coverage_figures.map(|figures| figures.reachable),
            "entry_points_reachable_hit": self.coverage_figures.map(|figures| figures.reachable_hit),
            "entry_points_user_paths": self.coverage_figures.map(|figures| figures.user_paths),
            "entry_points_user_paths_hit": self.coverage_figures.map(|figures| figures.user_paths_hit),
            "entry_points_not_raised": self.coverage_figures.map(|figures| figures.not_raised),
            "entry_points_not_raised_hit": self.coverage_figures.map(|figures| figures.not_raised_hit),
            "entry_points_nmi_blocked": self.coverage_figures.map(|figures| figures.nmi_blocked),
            "entry_points_nmi_blocked_hit": self.coverage_figures.map(|figures| figures.nmi_blocked_hit),
            "entry_points_hit_by_cpu": self.entry_points_by_cpu,
            "entry_points_hit_offsets_by_cpu": self.coverage_hits_by_cpu,
        })
    }
}

/// The most seeds one boot runs when `--seeds-per-boot` is not given: at
/// 1,000 iterations a seed, about 20 s of fuzzing to a BIOS boot's 0.2 s
/// (docs/boot.md), so booting costs a campaign about 1 %. (Smaller
/// batches, tried at 32, did not raise the 1000 x 1000 campaign's rate.)
pub const MAX_AUTO_SEEDS_PER_BOOT: u64 = 128;

/// Seeds per boot when not given: at most [`MAX_AUTO_SEEDS_PER_BOOT`] (so
/// a violation requeues few seeds and the progress bar moves), in a number
/// of batches that the jobs share evenly (so none idles at the end).
pub fn auto_seeds_per_boot(seeds: &Range<u64>, jobs: usize) -> u64 {
    let (length, jobs) = (seeds.end - seeds.start, jobs.max(1) as u64);
    let batches = length.div_ceil(MAX_AUTO_SEEDS_PER_BOOT).div_ceil(jobs) * jobs;
    length.div_ceil(batches).max(1)
}

/// `per_boot` rounded up to whole rounds of a boot's `smp` lanes (one
/// seed per CPU at once), within the campaign's `length` seeds.
pub fn whole_lanes(per_boot: u64, smp: u32, length: u64) -> u64 {
    let lanes = u64::from(smp.max(1));
    (per_boot.div_ceil(lanes) * lanes).min(length).max(1)
}

/// The kernel command line for a batch of seeds (`seed=S` for one).
pub fn cmdline(config: &CampaignConfig, seeds: Range<u64>) -> String {
    let seeds = if seeds.end - seeds.start == 1 {
        format!("seed={}", seeds.start)
    } else {
        format!("seeds={}..{}", seeds.start, seeds.end)
    };
    let mut line = format!(
        "mode=fuzz {seeds} iterations={} max-depth={}",
        config.iterations, config.max_depth
    );
    if let Some(fault) = &config.inject {
        line.push_str(&format!(" inject={fault}"));
    }
    if config.foreign_timer_hz > 0 {
        line.push_str(&format!(" foreign-timer-hz={}", config.foreign_timer_hz));
    }
    line
}

/// The one-line command that replays a seed (with the same foreign
/// sources: a storm's NMIs land elsewhere each time, so such a replay
/// repeats the program, not the exact interleaving).
pub fn replay_command(config: &CampaignConfig, seed: u64) -> String {
    format!(
        "extregs fuzz --seed {seed} --iterations {} --max-depth {}{}{}{}{}{}{}{}",
        config.iterations,
        config.max_depth,
        if config.deterministic { " --deterministic" } else { "" },
        if config.cpu != "max" { format!(" --cpu {}", config.cpu) } else { String::new() },
        config.inject.as_ref().map(|fault| format!(" --inject {fault}")).unwrap_or_default(),
        if config.nmi_storm { " --nmi-storm" } else { "" },
        if config.granular { " --granular" } else { "" },
        if config.foreign_timer_hz > 0 {
            format!(" --foreign-timer {}", config.foreign_timer_hz)
        } else {
            String::new()
        },
        if config.smp > 1 { format!(" --smp {}", config.smp) } else { String::new() },
    )
}

/// Boots one batch of seeds. Returns a report per seed that ran (in seed
/// order) and the seeds that did not (after a failing one), as ranges: the
/// batch's `FUZZ` lines give the seeds that passed (on N CPUs, N lanes
/// print them in any order); the seed the failing RESULT names (else the
/// first without a line) failed, with the boot's verdict and serial
/// output, and its line or else the boot's `RESULT`.
pub fn run_batch(
    config: &CampaignConfig,
    seeds: Range<u64>,
    cancel: Option<Arc<AtomicBool>>,
) -> (Vec<SeedReport>, Vec<Range<u64>>) {
    let count = seeds.end - seeds.start;
    let run = RunConfig {
        cpu: config.cpu.clone(),
        cmdline: cmdline(config, seeds.clone()),
        // Per seed: each FUZZ line restarts the clock.
        timeout: config.timeout,
        progress_prefix: (count > 1).then_some("FUZZ "),
        deterministic: config.deterministic,
        cancel,
        nmi_storm: config.nmi_storm,
        granular: config.granular,
        smp: (config.smp > 1).then(|| config.smp.to_string()),
        fw_cfg_files: Vec::new(),
        ..RunConfig::default()
    };
    let outcome = match qemu::run(&run) {
        Ok(outcome) => outcome,
        Err(error) => {
            let report = SeedReport {
                seed: seeds.start,
                exit: crate::exit_codes::EXIT_USAGE,
                why: error.to_string(),
                result: None,
                serial: None,
                coverage_hits: BTreeSet::new(),
                coverage_hits_by_cpu: BTreeMap::new(),
                coverage_unreachable: None,
                boot_breakdowns: None,
                breakdowns_lost: false,
            };
            let rest = seeds.start + 1..seeds.end;
            return (vec![report], std::iter::once(rest).filter(|rest| !rest.is_empty()).collect());
        }
    };
    let (exit, why) = outcome.verdict();
    let result = outcome.result();
    split_batch(seeds, exit, why, result, outcome.serial)
}

/// A batch's boot, seed by seed (see [`run_batch`]): `exit`/`why` are the
/// boot's verdict, `result` its `RESULT`, `serial` its output.
pub fn split_batch(
    seeds: Range<u64>,
    exit: i32,
    why: String,
    result: Option<Value>,
    serial: String,
) -> (Vec<SeedReport>, Vec<Range<u64>>) {
    if seeds.end - seeds.start == 1 {
        return (
            vec![SeedReport::of_one_seed_boot(seeds.start, exit, why, result, serial)],
            Vec::new(),
        );
    }
    let coverage_hits = crate::coverage::hits_in(&serial);
    let coverage_hits_by_cpu = crate::coverage::hits_by_cpu_in(&serial);
    let coverage_unreachable = crate::coverage::unreachable_in(&serial);
    let mut reports = Vec::new();
    let mut passed: BTreeMap<u64, Value> = BTreeMap::new();
    for line in serial.lines() {
        let summary = line.strip_prefix("FUZZ ").and_then(|json| serde_json::from_str(json).ok());
        if let Some(summary @ Value::Object(_)) = summary {
            if let Some(seed) = summary["seed"].as_u64().filter(|seed| seeds.contains(seed)) {
                passed.insert(seed, summary);
            }
        }
    }
    let all_passed = passed.len() as u64 == seeds.end - seeds.start;
    // The RESULT of a boot that ran all its seeds sums them (it names
    // `seeds`), with the split their lines leave out; a boot that died in a
    // seed printed that seed's RESULT instead, or none. The split matches
    // the frames counted only if every seed's line did too (one can be
    // unreadable, split by another CPU's output).
    let boot_breakdowns = result
        .as_ref()
        .filter(|result| all_passed && result.get("seeds").is_some())
        .filter(|result| result.get("kind_depth").is_some() && result.get("contexts").is_some())
        .map(|result| {
            json!({"kind_depth": result["kind_depth"].clone(), "contexts": result["contexts"].clone()})
        });
    for (&seed, summary) in &passed {
        reports.push(SeedReport {
            seed,
            exit: EXIT_SUCCESS,
            why: "kernel reported success".into(),
            result: Some(summary.clone()),
            serial: None,
            coverage_hits: BTreeSet::new(),
            coverage_hits_by_cpu: BTreeMap::new(),
            coverage_unreachable: None,
            boot_breakdowns: None,
            breakdowns_lost: boot_breakdowns.is_none() && frames_without_breakdowns(summary),
        });
    }
    if all_passed && exit == EXIT_SUCCESS {
        // The boot's interrupt points and breakdowns go with its last seed
        // (totals take the union, and the sum).
        if let Some(last) = reports.last_mut() {
            last.coverage_hits = coverage_hits;
            last.coverage_hits_by_cpu = coverage_hits_by_cpu;
            last.coverage_unreachable = coverage_unreachable;
            last.boot_breakdowns = boot_breakdowns;
        }
        return (reports, Vec::new());
    }
    // The seed the boot died in: the one its failing RESULT names, if that
    // printed no line; else the first without a line. If every seed printed
    // its line and the boot still failed (RESULT's frame_errors or
    // model_errors, a hang after the last seed), the failure is reported on
    // the last seed, which keeps its line's counts.
    let named = result.as_ref().and_then(|result| result["seed"].as_u64());
    let failed = named
        .filter(|seed| seeds.contains(seed) && !passed.contains_key(seed))
        .or_else(|| seeds.clone().find(|seed| !passed.contains_key(seed)))
        .unwrap_or(seeds.end - 1);
    let failed_line = passed.get(&failed).cloned();
    reports.retain(|report| report.seed != failed);
    let (exit, why) = if exit == EXIT_SUCCESS {
        (crate::exit_codes::EXIT_KERNEL_FAILURE, format!("seed {failed} printed no FUZZ line"))
    } else {
        (exit, why)
    };
    let summary = failed_line.or(result);
    reports.push(SeedReport {
        seed: failed,
        exit,
        why,
        breakdowns_lost: boot_breakdowns.is_none()
            && summary.as_ref().is_some_and(frames_without_breakdowns),
        result: summary,
        coverage_hits,
        coverage_hits_by_cpu,
        coverage_unreachable,
        serial: Some(serial),
        boot_breakdowns,
    });
    reports.sort_by_key(|report| report.seed);
    // The rest go back in the queue, as ranges.
    let mut unrun: Vec<Range<u64>> = Vec::new();
    for seed in seeds.filter(|seed| *seed != failed && !passed.contains_key(seed)) {
        match unrun.last_mut() {
            Some(range) if range.end == seed => range.end += 1,
            _ => unrun.push(seed..seed + 1),
        }
    }
    (reports, unrun)
}

/// A batch's reports after Ctrl-C: if the boot was killed for it, the
/// seeds it finished still count, and the one it was killed in is not a
/// result (a boot that failed on its own before keeps its failure). If
/// the dropped one carried the boot's depth and context split, the others
/// go without it.
pub fn finished_before_cancel(mut reports: Vec<SeedReport>) -> Vec<SeedReport> {
    let killed = |report: &SeedReport| report.exit == crate::exit_codes::EXIT_INTERRUPTED;
    let split_dropped =
        reports.iter().any(|report| killed(report) && report.boot_breakdowns.is_some());
    reports.retain(|report| !killed(report));
    for report in &mut reports {
        let counted = report.result.as_ref().is_some_and(frames_without_breakdowns);
        report.breakdowns_lost |= split_dropped && counted;
    }
    reports
}

/// Runs every seed on `config.jobs` workers. `on_report` sees each seed as
/// it finishes (the CLI's progress bar); `cancel` stops the campaign: no new
/// seeds start and running boots are killed. Returns the finished seeds in
/// seed order, the totals, and whether the campaign was cut short.
pub fn run_campaign(
    config: &CampaignConfig,
    cancel: Arc<AtomicBool>,
    mut on_report: impl FnMut(&SeedReport, &Totals),
) -> (Vec<SeedReport>, Totals, bool) {
    let started = Instant::now();
    let per_boot = match config.seeds_per_boot {
        0 => whole_lanes(
            auto_seeds_per_boot(&config.seeds, config.jobs),
            config.smp,
            config.seeds.end - config.seeds.start,
        ),
        n => n,
    };
    // The batches still to boot; a failed boot's unrun seeds go back in front.
    let queue: Arc<Mutex<VecDeque<Range<u64>>>> = Arc::new(Mutex::new(
        config
            .seeds
            .clone()
            .step_by(per_boot as usize)
            .map(|start| start..(start + per_boot).min(config.seeds.end))
            .collect(),
    ));
    let (sender, receiver) = mpsc::channel();
    let workers: Vec<_> = (0..config.jobs.max(1))
        .map(|_| {
            let (config, queue, sender, cancel) =
                (config.clone(), queue.clone(), sender.clone(), cancel.clone());
            std::thread::spawn(move || loop {
                if cancel.load(Ordering::SeqCst) {
                    break;
                }
                let Some(batch) = queue.lock().expect("queue lock").pop_front() else {
                    break;
                };
                let (reports, unrun) = run_batch(&config, batch, Some(cancel.clone()));
                let cancelled = cancel.load(Ordering::SeqCst);
                let results = if cancelled { finished_before_cancel(reports) } else { reports };
                if results.into_iter().any(|report| sender.send(report).is_err()) {
                    break;
                }
                if cancelled {
                    break;
                }
                let mut queue = queue.lock().expect("queue lock");
                for range in unrun.into_iter().rev().filter(|range| !range.is_empty()) {
                    queue.push_front(range);
                }
            })
        })
        .collect();
    drop(sender);
    let mut reports = Vec::new();
    let mut totals = Totals {
        jobs: config.jobs.max(1) as u64,
        cpus_per_boot: u64::from(config.smp.max(1)),
        ..Totals::default()
    };
    for report in receiver {
        totals.add(&report);
        totals.wall_seconds = started.elapsed().as_secs_f64();
        on_report(&report, &totals);
        reports.push(report);
    }
    for worker in workers {
        let _ = worker.join();
    }
    totals.wall_seconds = started.elapsed().as_secs_f64();
    reports.sort_by_key(|report| report.seed);
    let interrupted = cancel.load(Ordering::SeqCst);
    (reports, totals, interrupted)
}

/// The campaign as JSON: the settings, one row per seed, the totals.
pub fn to_json(
    config: &CampaignConfig,
    reports: &[SeedReport],
    totals: &Totals,
    interrupted: bool,
) -> Value {
    let seeds: Vec<Value> = reports
        .iter()
        .map(|report| {
            let mut row = Map::new();
            row.insert("seed".into(), json!(report.seed));
            row.insert("ok".into(), json!(report.ok()));
            row.insert("exit".into(), json!(report.exit));
            if let Some(result) = &report.result {
                for key in [
                    "frames",
                    "microseconds",
                    "max_depth_reached",
                    "frames_per_s",
                    "digest",
                    "latched_nmis",
                    "user_nmis_latched",
                    "foreign_nmis",
                    "foreign_user_nmis",
                    "foreign_irqs",
                    "entry_points_hit",
                    "invariant",
                ] {
                    if !result[key].is_null() {
                        row.insert(key.into(), result[key].clone());
                    }
                }
            }
            if !report.ok() {
                row.insert("why".into(), json!(report.why));
                row.insert("replay".into(), json!(replay_command(config, report.seed)));
            }
            Value::Object(row)
        })
        .collect();
    json!({
        "seeds": format!("{}..{}", config.seeds.start, config.seeds.end),
        "iterations": config.iterations,
        "max_depth": config.max_depth,
        "jobs": config.jobs,
        "seeds_per_boot": config.seeds_per_boot,
        "deterministic": config.deterministic,
        "cpu": config.cpu,
        "nmi_storm": config.nmi_storm,
        "granular": config.granular,
        "foreign_timer_hz": config.foreign_timer_hz,
        "smp": config.smp,
        "interrupted": interrupted,
        "totals": totals.to_json(),
        "runs": seeds,
    })
}

/// Parses `A..B` (B excluded) or `A..=B`.
pub fn parse_seed_range(text: &str) -> Result<Range<u64>> {
    let (start, end, inclusive) = if let Some((a, b)) = text.split_once("..=") {
        (a, b, true)
    } else if let Some((a, b)) = text.split_once("..") {
        (a, b, false)
    } else {
        return Err(Error::Usage(format!("seed range '{text}' is not A..B or A..=B")));
    };
    let number = |part: &str| {
        part.trim()
            .parse::<u64>()
            .map_err(|_| Error::Usage(format!("'{part}' in seed range '{text}' is not a number")))
    };
    let (start, end) = (number(start)?, number(end)?);
    let end = if inclusive {
        end.checked_add(1).ok_or_else(|| Error::Usage(format!("seed range '{text}' overflows")))?
    } else {
        end
    };
    if start >= end {
        return Err(Error::Usage(format!("seed range '{text}' is empty")));
    }
    Ok(start..end)
}

mod shard;
pub use shard::*;

#[cfg(test)]
mod tests;
