//! Fuzz campaigns: many `mode=fuzz` boots, one per seed, run in parallel
//! QEMU instances, with their `RESULT` lines added up.
//!
//! The CLI (`extregs fuzz`) draws a progress bar and handles Ctrl-C; this
//! module does the work, so tests run exactly what users run.

use crate::qemu::{self, RunConfig};
use crate::report::EXIT_SUCCESS;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
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
    /// Per-seed timeout.
    pub timeout: Duration,
    /// `inject=NAME`: a fault for a fault-injection kernel build to switch on.
    pub inject: Option<String>,
    /// Every boot gets an NMI storm over QMP (foreign NMIs).
    pub nmi_storm: bool,
    /// Every boot runs one guest instruction per translation block.
    pub granular: bool,
    /// `foreign-timer-hz=` for every boot (0: no foreign timer).
    pub foreign_timer_hz: u32,
}

/// One seed's boot.
#[derive(Clone, Debug)]
pub struct SeedReport {
    pub seed: u64,
    /// The runner's verdict (0 success, 1 failure, 124 timeout, 2 set-up).
    pub exit: i32,
    pub why: String,
    /// The kernel's RESULT object, if it printed one.
    pub result: Option<Value>,
    /// The serial output, kept only for failures.
    pub serial: Option<String>,
    /// Entry-text offsets a foreign event interrupted (`COVERAGE_HIT`).
    pub coverage_hits: BTreeSet<u64>,
}

impl SeedReport {
    pub fn ok(&self) -> bool {
        self.exit == EXIT_SUCCESS
    }

    fn number(&self, key: &str) -> u64 {
        self.result.as_ref().and_then(|r| r[key].as_u64()).unwrap_or(0)
    }

    pub fn frames(&self) -> u64 {
        self.number("frames")
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
    pub wall_seconds: f64,
    /// NMIs the kernels did not raise themselves (an `--nmi-storm`).
    pub foreign_nmis: u64,
    /// Foreign timer IRQs (`--foreign-timer`).
    pub foreign_irqs: u64,
    /// Union of the seeds' interrupted entry-text offsets.
    pub coverage_hits: BTreeSet<u64>,
    /// (instructions hit, instructions in the entry text), once
    /// [`Totals::measure_coverage`] decoded the kernel's entry text.
    pub entry_points: Option<(u64, u64)>,
}

impl Totals {
    pub fn add(&mut self, report: &SeedReport) {
        self.seeds_run += 1;
        if !report.ok() {
            self.seeds_failed += 1;
        }
        self.iterations += report.number("iterations");
        self.frames += report.frames();
        self.violations += report.number("violations");
        self.latched_nmis += report.number("latched_nmis");
        self.foreign_nmis += report.number("foreign_nmis");
        self.foreign_irqs += report.number("foreign_irqs");
        self.coverage_hits.extend(&report.coverage_hits);
        self.max_depth_reached = self.max_depth_reached.max(report.number("max_depth_reached"));
        if let Some(kinds) = report.result.as_ref().and_then(|r| r["kinds"].as_object()) {
            for (kind, count) in kinds {
                *self.kinds.entry(kind.clone()).or_default() += count.as_u64().unwrap_or(0);
            }
        }
    }

    /// Decodes the kernel's entry text and sets `entry_points` from the
    /// union of hits; returns the decoded text (for a `--coverage` listing).
    pub fn measure_coverage(&mut self) -> Result<crate::coverage::EntryText, String> {
        let text = crate::coverage::EntryText::from_elf(crate::images::kernel_elf())?;
        self.entry_points = Some((text.hit(&self.coverage_hits), text.total()));
        Ok(text)
    }

    /// Frames validated per second of campaign wall time (all jobs).
    pub fn frames_per_second(&self) -> f64 {
        if self.wall_seconds > 0.0 {
            self.frames as f64 / self.wall_seconds
        } else {
            0.0
        }
    }

    pub fn to_json(&self) -> Value {
        json!({
            "seeds_run": self.seeds_run,
            "seeds_failed": self.seeds_failed,
            "iterations": self.iterations,
            "frames": self.frames,
            "violations": self.violations,
            "latched_nmis": self.latched_nmis,
            "max_depth_reached": self.max_depth_reached,
            "kinds": self.kinds,
            "wall_seconds": self.wall_seconds,
            "frames_per_s": self.frames_per_second(),
            "foreign_nmis": self.foreign_nmis,
            "foreign_irqs": self.foreign_irqs,
            "entry_points_hit": self.entry_points.map(|(hit, _)| hit),
            "entry_points_total": self.entry_points.map(|(_, total)| total),
        })
    }
}

/// The kernel command line for one seed.
pub fn cmdline(config: &CampaignConfig, seed: u64) -> String {
    let mut line = format!(
        "mode=fuzz seed={seed} iterations={} max-depth={}",
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
        "extregs fuzz --seed {seed} --iterations {} --max-depth {}{}{}{}{}{}{}",
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
    )
}

/// Boots one seed.
pub fn run_seed(config: &CampaignConfig, seed: u64, cancel: Option<Arc<AtomicBool>>) -> SeedReport {
    let run = RunConfig {
        cpu: config.cpu.clone(),
        cmdline: cmdline(config, seed),
        timeout: config.timeout,
        deterministic: config.deterministic,
        cancel,
        nmi_storm: config.nmi_storm,
        granular: config.granular,
        ..RunConfig::default()
    };
    match qemu::run(&run) {
        Ok(outcome) => {
            let (exit, why) = outcome.verdict();
            SeedReport {
                seed,
                exit,
                why,
                result: outcome.result(),
                coverage_hits: crate::coverage::hits_in(&outcome.serial),
                serial: (exit != EXIT_SUCCESS).then_some(outcome.serial),
            }
        }
        Err(error) => SeedReport {
            seed,
            exit: crate::report::EXIT_USAGE,
            why: error.to_string(),
            result: None,
            serial: None,
            coverage_hits: BTreeSet::new(),
        },
    }
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
    let next = Arc::new(AtomicU64::new(config.seeds.start));
    let (sender, receiver) = mpsc::channel();
    let workers: Vec<_> = (0..config.jobs.max(1))
        .map(|_| {
            let (config, next, sender, cancel) =
                (config.clone(), next.clone(), sender.clone(), cancel.clone());
            std::thread::spawn(move || loop {
                if cancel.load(Ordering::SeqCst) {
                    break;
                }
                let seed = next.fetch_add(1, Ordering::SeqCst);
                if seed >= config.seeds.end {
                    break;
                }
                let report = run_seed(&config, seed, Some(cancel.clone()));
                // A boot killed by Ctrl-C is not a result.
                if cancel.load(Ordering::SeqCst) && !report.ok() {
                    break;
                }
                if sender.send(report).is_err() {
                    break;
                }
            })
        })
        .collect();
    drop(sender);
    let mut reports = Vec::new();
    let mut totals = Totals::default();
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
                    "max_depth_reached",
                    "frames_per_s",
                    "digest",
                    "latched_nmis",
                    "foreign_nmis",
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
        "deterministic": config.deterministic,
        "cpu": config.cpu,
        "nmi_storm": config.nmi_storm,
        "granular": config.granular,
        "foreign_timer_hz": config.foreign_timer_hz,
        "interrupted": interrupted,
        "totals": totals.to_json(),
        "runs": seeds,
    })
}

/// Parses `A..B` (B excluded) or `A..=B`.
pub fn parse_seed_range(text: &str) -> Result<Range<u64>, String> {
    let (start, end, inclusive) = if let Some((a, b)) = text.split_once("..=") {
        (a, b, true)
    } else if let Some((a, b)) = text.split_once("..") {
        (a, b, false)
    } else {
        return Err(format!("seed range '{text}' is not A..B or A..=B"));
    };
    let number = |part: &str| {
        part.trim()
            .parse::<u64>()
            .map_err(|_| format!("'{part}' in seed range '{text}' is not a number"))
    };
    let (start, end) = (number(start)?, number(end)?);
    let end = if inclusive {
        end.checked_add(1).ok_or_else(|| format!("seed range '{text}' overflows"))?
    } else {
        end
    };
    if start >= end {
        return Err(format!("seed range '{text}' is empty"));
    }
    Ok(start..end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_ranges_parse_or_explain() {
        assert_eq!(parse_seed_range("0..10").unwrap(), 0..10);
        assert_eq!(parse_seed_range("5..=5").unwrap(), 5..6);
        assert!(parse_seed_range("3..3").unwrap_err().contains("empty"));
        assert!(parse_seed_range("a..3").unwrap_err().contains("not a number"));
        assert!(parse_seed_range("7").unwrap_err().contains("not A..B"));
    }

    #[test]
    fn totals_add_up_results() {
        let report = |seed, frames, ok: bool| SeedReport {
            seed,
            exit: if ok { 0 } else { 1 },
            why: String::new(),
            result: Some(json!({"frames": frames, "iterations": 10, "max_depth_reached": seed,
                "violations": u64::from(!ok), "kinds": {"int3": 2, "ud2": 1},
                "foreign_nmis": 4})),
            serial: None,
            coverage_hits: BTreeSet::from([seed, 7]),
        };
        let mut totals = Totals::default();
        totals.add(&report(3, 100, true));
        totals.add(&report(5, 50, false));
        assert_eq!((totals.seeds_run, totals.seeds_failed, totals.frames), (2, 1, 150));
        assert_eq!((totals.violations, totals.max_depth_reached, totals.iterations), (1, 5, 20));
        // Foreign NMIs add up; interrupt points are a union across seeds.
        assert_eq!(totals.foreign_nmis, 8);
        assert_eq!(totals.coverage_hits, BTreeSet::from([3, 5, 7]));
        assert_eq!(totals.kinds["int3"], 4);
    }

    #[test]
    fn replay_names_every_setting() {
        let config = CampaignConfig {
            seeds: 0..1,
            iterations: 1000,
            max_depth: 8,
            jobs: 2,
            deterministic: true,
            cpu: "max".into(),
            timeout: Duration::from_secs(1),
            inject: None,
            nmi_storm: false,
            granular: false,
            foreign_timer_hz: 0,
        };
        assert_eq!(
            replay_command(&config, 42),
            "extregs fuzz --seed 42 --iterations 1000 --max-depth 8 --deterministic"
        );
    }
}
