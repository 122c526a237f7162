//! `extregs fuzz`: a campaign over a seed range, the replay of one seed,
//! and `fuzz plot` / `fuzz merge` over campaign documents.

use clap::Subcommand;
use extregs::campaign::{self, CampaignConfig};
use extregs::error::Error;
use extregs::exit_codes::{EXIT_INTERRUPTED, EXIT_KERNEL_FAILURE, EXIT_SUCCESS, EXIT_USAGE};
use extregs::images;
use extregs::qemu::{self, RunConfig};
use extregs_cmdline::MAX_FUZZ_SEEDS_PER_BOOT;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(clap::Args)]
pub(crate) struct FuzzArgs {
    /// Seeds to run, `A..B` (B excluded) or `A..=B`, one QEMU boot each.
    #[arg(long, conflicts_with = "seed")]
    pub(crate) seeds: Option<String>,
    /// Replay one seed, showing the kernel's output.
    #[arg(long)]
    pub(crate) seed: Option<u64>,
    /// Event programs per seed.
    #[arg(long, default_value_t = 1000)]
    pub(crate) iterations: u64,
    /// Seeds one boot runs (`mode=fuzz seeds=A..B`, each from a fresh
    /// state); default: the range split evenly over the jobs, at most 64.
    #[arg(long, conflicts_with = "seed")]
    pub(crate) seeds_per_boot: Option<u64>,
    /// Deepest nesting (1..=12).
    #[arg(long, default_value_t = 8)]
    pub(crate) max_depth: u32,
    /// Parallel QEMU instances (default: the host's cores / --smp, at least
    /// 1; a campaign only: a replay is one boot).
    #[arg(long)]
    pub(crate) jobs: Option<usize>,
    /// Write the campaign (settings, one row per seed, totals) as JSON.
    #[arg(long)]
    pub(crate) json: Option<PathBuf>,
    /// Run QEMU with -icount so asynchronous events replay exactly and a
    /// seed always gives the same digest.
    #[arg(long)]
    pub(crate) deterministic: bool,
    /// QEMU CPU model.
    #[arg(long, default_value = "max")]
    pub(crate) cpu: String,
    /// Seconds a seed may take (from the boot, or from the previous seed of
    /// its batch) before the boot counts as hung (124).
    #[arg(long, default_value_t = 600)]
    pub(crate) timeout: u64,
    /// Switch on a named fault (skip-gpr-restore, skip-pkrs-restore,
    /// extension-offset, nmi-exit-forgets-lockdep, nmi-reuses-ist-frame;
    /// skip-tlb-shootdown is for the SMP selftests, see docs/smp.md).
    /// Only a kernel built with EXTREGS_FAULT_INJECTION=1 accepts it.
    #[arg(long)]
    pub(crate) inject: Option<String>,
    /// Send NMIs from outside during every boot (QMP inject-nmi, back to
    /// back): foreign events the fuzzer validates and counts.
    #[arg(long)]
    pub(crate) nmi_storm: bool,
    /// CPUs per boot (1 to 8), QEMU's -smp: the kernel runs a lane on every
    /// CPU, so one boot runs that many seeds at once, and the lanes send
    /// each other NMIs. Without --jobs, jobs x CPUs stays within the
    /// host's cores.
    #[arg(long, default_value_t = 1)]
    pub(crate) smp: u32,
    /// One guest instruction per translation block (QEMU -singlestep), so
    /// foreign NMIs land at every instruction boundary (slower).
    #[arg(long)]
    pub(crate) granular: bool,
    /// Write the entry-text instructions no foreign event interrupted
    /// (offset, symbol+offset, instruction), one per line.
    #[arg(long)]
    pub(crate) coverage: Option<PathBuf>,
    /// Draw the campaign's coverage heat maps (event kind x depth, event
    /// kind x interrupted context, the entry text's interrupt points) as SVG.
    #[arg(long)]
    pub(crate) plot: Option<PathBuf>,
    /// A foreign timer IRQ at this rate (Hz, 1..=10000): the PIT through
    /// the 8259, firing wherever IF=1, which the fuzzer validates and counts.
    #[arg(long)]
    pub(crate) foreign_timer: Option<u32>,
    /// Run only the K-th (1..=N) of N deterministic, contiguous slices of
    /// --seeds (for spreading one campaign over machines; `fuzz merge`
    /// joins their --json documents).
    #[arg(long, conflicts_with = "shard_from_env")]
    pub(crate) shard: Option<String>,
    /// Like --shard, with K taken from a batch engine's 0-based worker
    /// index in an environment variable: VAR/N (e.g.
    /// JOB_COMPLETION_INDEX/8 in a Kubernetes Indexed Job).
    #[arg(long)]
    pub(crate) shard_from_env: Option<String>,
    #[command(subcommand)]
    pub(crate) action: Option<FuzzAction>,
}

#[derive(Subcommand)]
pub(crate) enum FuzzAction {
    /// Merge the --json documents of a campaign's shards (or of campaigns
    /// with the same settings) into one: runs by seed, totals added up.
    Merge(MergeArgs),
    /// Draw the coverage heat maps of a campaign's --json document.
    Plot(PlotArgs),
}

#[derive(clap::Args)]
pub(crate) struct PlotArgs {
    /// A campaign document (`extregs fuzz --json`, or a merge).
    pub(crate) document: PathBuf,
    /// Where to write the SVG.
    #[arg(long)]
    pub(crate) plot: PathBuf,
}

#[derive(clap::Args)]
pub(crate) struct MergeArgs {
    /// The documents to merge.
    #[arg(required = true)]
    pub(crate) documents: Vec<PathBuf>,
    /// Where to write the merged document.
    #[arg(long)]
    pub(crate) json: PathBuf,
}

pub(crate) fn fuzz(args: FuzzArgs) -> i32 {
    match &args.action {
        Some(FuzzAction::Merge(merge)) => return fuzz_merge(merge),
        Some(FuzzAction::Plot(plot)) => return fuzz_plot(plot),
        None => {}
    }
    if !(1..=12).contains(&args.max_depth) {
        eprintln!("extregs: --max-depth must be from 1 to 12");
        return EXIT_USAGE;
    }
    if args.foreign_timer.is_some_and(|hz| !(1..=10_000).contains(&hz)) {
        eprintln!("extregs: --foreign-timer must be from 1 to 10000 (Hz)");
        return EXIT_USAGE;
    }
    if !(1..=8).contains(&args.smp) {
        eprintln!("extregs: --smp must be from 1 to 8");
        return EXIT_USAGE;
    }
    if args.inject.is_some() && args.smp > 1 {
        eprintln!("extregs: --inject runs on one CPU (its fault flags are global): drop --smp");
        return EXIT_USAGE;
    }
    if args.iterations == 0 || args.jobs == Some(0) || args.timeout == 0 {
        eprintln!("extregs: --iterations, --jobs and --timeout must be at least 1");
        return EXIT_USAGE;
    }
    if args.seeds_per_boot.is_some_and(|n| !(1..=MAX_FUZZ_SEEDS_PER_BOOT).contains(&n)) {
        eprintln!("extregs: --seeds-per-boot must be from 1 to {MAX_FUZZ_SEEDS_PER_BOOT}");
        return EXIT_USAGE;
    }
    let mut seeds = match (&args.seeds, args.seed) {
        (Some(range), None) => match campaign::parse_seed_range(range) {
            Ok(seeds) => seeds,
            Err(error) => {
                eprintln!("extregs: {error}");
                return EXIT_USAGE;
            }
        },
        (None, Some(seed)) => {
            if args.shard.is_some() || args.shard_from_env.is_some() {
                eprintln!(
                    "extregs: --shard is for a campaign (--seeds); a replay (--seed) is one seed"
                );
                return EXIT_USAGE;
            }
            if args.jobs.is_some() {
                eprintln!(
                    "extregs: --jobs is for a campaign (--seeds); a replay (--seed) is one boot"
                );
                return EXIT_USAGE;
            }
            return replay(&args, seed);
        }
        _ => {
            eprintln!("extregs: give --seeds A..B for a campaign, --seed S to replay one, or `fuzz merge` to join shards");
            return EXIT_USAGE;
        }
    };
    let shard = match (&args.shard, &args.shard_from_env) {
        (Some(text), _) => Some(campaign::parse_shard(text)),
        (None, Some(text)) => {
            Some(campaign::parse_shard_from_env(text, |name| std::env::var(name).ok()))
        }
        (None, None) => None,
    };
    let (shard, full_range) = match shard {
        Some(Ok(shard)) => match campaign::shard_seeds(&seeds, shard) {
            Ok(slice) => {
                eprintln!(
                    "extregs: fuzz: shard {}/{} of seeds {}..{}: seeds {}..{}",
                    shard.index, shard.count, seeds.start, seeds.end, slice.start, slice.end
                );
                (Some(shard), std::mem::replace(&mut seeds, slice))
            }
            Err(error) => {
                eprintln!("extregs: {error}");
                return EXIT_USAGE;
            }
        },
        Some(Err(error)) => {
            eprintln!("extregs: {error}");
            return EXIT_USAGE;
        }
        None => (None, seeds.clone()),
    };
    let config = campaign_config(&args, seeds.clone(), args.jobs.unwrap_or(default_jobs(args.smp)));
    let cancel = Arc::new(AtomicBool::new(false));
    {
        let cancel = cancel.clone();
        if let Err(error) = ctrlc::set_handler(move || cancel.store(true, Ordering::SeqCst)) {
            eprintln!("extregs: cannot catch Ctrl-C: {error}");
        }
    }
    let bar = ProgressBar::new(seeds.end - seeds.start);
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} seeds  {msg}")
            .expect("a valid progress template")
            .progress_chars("=> "),
    );
    eprintln!(
        "extregs: fuzz: seeds {}..{} x {} iterations, max depth {}, {} jobs of {} CPU{}{}",
        seeds.start,
        seeds.end,
        args.iterations,
        args.max_depth,
        config.jobs,
        args.smp,
        if args.smp == 1 { "" } else { "s" },
        if args.deterministic { ", deterministic (-icount)" } else { "" }
    );
    // Without a terminal (a log, a pipe) the bar draws nothing: each
    // finished seed gets a plain line instead, so progress and failures
    // still show.
    let plain_progress = !std::io::stderr().is_terminal();
    let (reports, totals, interrupted) =
        campaign::run_campaign(&config, cancel, |report, totals| {
            if !report.ok() {
                let line = format!(
                    "extregs: fuzz: seed {} FAILED ({}{}); replay: {}",
                    report.seed,
                    report.invariant().map(|i| format!("invariant {i}, ")).unwrap_or_default(),
                    report.why,
                    campaign::replay_command(&config, report.seed)
                );
                if plain_progress {
                    eprintln!("{line}");
                } else {
                    bar.println(line);
                }
            } else if plain_progress {
                eprintln!(
                    "extregs: fuzz: seed {} done: {} frames ({}/{} seeds)",
                    report.seed,
                    report.frames(),
                    totals.seeds_run,
                    seeds.end - seeds.start
                );
            }
            bar.set_message(format!(
                "{} frames, {:.0} frames/s, {} failed",
                totals.frames,
                totals.frames_per_second(),
                totals.seeds_failed
            ));
            bar.inc(1);
        });
    bar.finish_and_clear();
    let mut totals = totals;
    if let Err(code) = report_coverage(&mut totals, &args) {
        return code;
    }
    println!(
        "extregs: fuzz: {} seeds{} ({} failed), {} iterations, {} frames validated in {:.1} s = {:.0} frames/s, {} violations, max depth {}, {} latched NMIs repeated",
        totals.seeds_run,
        if interrupted { " before Ctrl-C" } else { "" },
        totals.seeds_failed,
        totals.iterations,
        totals.frames,
        totals.wall_seconds,
        totals.frames_per_second(),
        totals.violations,
        totals.max_depth_reached,
        totals.latched_nmis
    );
    if args.deterministic {
        // The kernels' clock counts instructions under icount: their rates
        // are per virtual second, no fraction of the wall clock's.
        println!(
            "extregs: fuzz: --deterministic: the kernels' clock counts instructions, so their rates are not set against the wall clock"
        );
    } else if let (Some(median), Some(ratio)) =
        (totals.kernel_median_frames_per_second(), totals.wall_to_kernel_ratio())
    {
        println!(
            "extregs: fuzz: wall {:.0} frames/s = {ratio:.2} x (jobs={} x CPUs={} x {median:.0} frames/s, the median seed's rate inside its kernel)",
            totals.frames_per_second(),
            totals.jobs,
            totals.cpus_per_boot.max(1),
        );
    }
    if let Some(share) = totals.kernel_time_share().filter(|_| !args.deterministic) {
        println!(
            "extregs: fuzz: the kernels fuzzed {:.1} s of the lanes' {} x {:.1} s: {share:.2} of the ideal at their own rate ({:.0} frames/s, their frames over their fuzzing time)",
            totals.kernel_microseconds as f64 / 1e6,
            totals.jobs * totals.cpus_per_boot.max(1),
            totals.wall_seconds,
            totals.frames as f64 / (totals.kernel_microseconds as f64 / 1e6),
        );
    }
    if args.smp > 1 {
        println!(
            "extregs: fuzz: {} NMIs sent between CPUs, {} levels migrated to another CPU",
            totals.cross_cpu_nmis, totals.migrations
        );
    }
    let kinds: Vec<String> =
        totals.kinds.iter().map(|(kind, count)| format!("{kind} {count}")).collect();
    println!("extregs: fuzz: events: {}", kinds.join(", "));
    if totals.seeds_without_breakdowns > 0 {
        println!(
            "extregs: fuzz: kind_depth and contexts (the depth and context heat maps) leave out the frames of {} seeds: their boot's RESULT of its seeds was missing (it died in a seed) or could not be used",
            totals.seeds_without_breakdowns
        );
    }
    for report in reports.iter().filter(|report| !report.ok()) {
        println!(
            "extregs: fuzz: replay seed {}: {}",
            report.seed,
            campaign::replay_command(&config, report.seed)
        );
    }
    let mut document = campaign::to_json(&config, &reports, &totals, interrupted);
    if let Some(shard) = shard {
        campaign::mark_shard(&mut document, shard, &full_range);
    }
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&document).expect("JSON renders");
        if let Err(error) = std::fs::write(path, text + "\n") {
            eprintln!("extregs: cannot write {}: {error}", path.display());
            return EXIT_USAGE;
        }
        println!("extregs: fuzz: wrote {}", path.display());
    }
    if let Some(path) = &args.plot {
        if let Err(code) = draw_plot(&document, path) {
            return code;
        }
    }
    if interrupted {
        eprintln!("extregs: fuzz: interrupted");
        return EXIT_INTERRUPTED;
    }
    if totals.seeds_failed == 0 {
        EXIT_SUCCESS
    } else {
        EXIT_KERNEL_FAILURE
    }
}

/// Draws `document`'s coverage pictures into `path` (the entry text from
/// this build's kernel ELF).
pub(crate) fn draw_plot(document: &serde_json::Value, path: &Path) -> Result<(), i32> {
    let text = match extregs::coverage::EntryText::from_elf(images::kernel_elf()) {
        Ok(text) => Some(text),
        Err(error) => {
            eprintln!("extregs: fuzz: the entry-text picture is left out: {error}");
            None
        }
    };
    if let Err(error) = extregs::fuzz_plot::plot(document, text.as_ref(), path) {
        eprintln!("extregs: fuzz: cannot draw {}: {error}", path.display());
        return Err(EXIT_USAGE);
    }
    println!("extregs: fuzz: drew {}", path.display());
    Ok(())
}

/// `extregs fuzz plot DOCUMENT.json --plot FILE.svg`.
pub(crate) fn fuzz_plot(args: &PlotArgs) -> i32 {
    let document = std::fs::read_to_string(&args.document)
        .map_err(|error| Error::io(format!("reading {}", args.document.display()), error))
        .and_then(|text| {
            serde_json::from_str::<serde_json::Value>(&text).map_err(|error| {
                Error::json(format!("{} is not JSON", args.document.display()), error)
            })
        });
    match document {
        Ok(document) => match draw_plot(&document, &args.plot) {
            Ok(()) => EXIT_SUCCESS,
            Err(code) => code,
        },
        Err(error) => {
            eprintln!("extregs: fuzz plot: {error}");
            error.exit_code()
        }
    }
}

/// `extregs fuzz merge A.json B.json … --json ALL.json`.
pub(crate) fn fuzz_merge(args: &MergeArgs) -> i32 {
    let mut documents = Vec::new();
    for path in &args.documents {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(error) => {
                eprintln!("extregs: cannot read {}: {error}", path.display());
                return EXIT_USAGE;
            }
        };
        match serde_json::from_str(&text) {
            Ok(document) => documents.push((path.display().to_string(), document)),
            Err(error) => {
                eprintln!("extregs: {} is not JSON: {error}", path.display());
                return EXIT_USAGE;
            }
        }
    }
    let merged = match campaign::merge(&documents) {
        Ok(merged) => merged,
        Err(error) => {
            eprintln!("extregs: fuzz merge: {error}");
            return EXIT_USAGE;
        }
    };
    let totals = &merged["totals"];
    println!(
        "extregs: fuzz merge: {} documents, seeds {}{}: {} seeds ({} failed), {} frames, {} violations",
        documents.len(),
        merged["seeds"].as_str().unwrap_or("?"),
        if merged["complete"] == false { " (not every shard)" } else { "" },
        totals["seeds_run"],
        totals["seeds_failed"],
        totals["frames"],
        totals["violations"]
    );
    let text = serde_json::to_string_pretty(&merged).expect("JSON renders");
    if let Err(error) = std::fs::write(&args.json, text + "\n") {
        eprintln!("extregs: cannot write {}: {error}", args.json.display());
        return EXIT_USAGE;
    }
    println!("extregs: fuzz merge: wrote {}", args.json.display());
    if totals["seeds_failed"].as_u64().unwrap_or(0) == 0 {
        EXIT_SUCCESS
    } else {
        EXIT_KERNEL_FAILURE
    }
}

/// `extregs fuzz --seed S`: one boot, its output shown.
/// The campaign settings `fuzz` was given, for `seeds` on `jobs` workers.
pub(crate) fn campaign_config(
    args: &FuzzArgs,
    seeds: std::ops::Range<u64>,
    jobs: usize,
) -> CampaignConfig {
    CampaignConfig {
        seeds,
        iterations: args.iterations,
        max_depth: args.max_depth,
        jobs,
        deterministic: args.deterministic,
        cpu: args.cpu.clone(),
        timeout: Duration::from_secs(args.timeout),
        inject: args.inject.clone(),
        nmi_storm: args.nmi_storm,
        granular: args.granular,
        foreign_timer_hz: args.foreign_timer.unwrap_or(0),
        seeds_per_boot: args.seeds_per_boot.unwrap_or(0),
        smp: args.smp,
    }
}

/// Parallel boots without `--jobs` for boots of `smp` CPUs: QEMU's TCG runs
/// one host thread per vCPU, so jobs x CPUs stays within the host's cores
/// (`available_parallelism`; 2 if unknown), at least 1.
pub(crate) fn default_jobs(smp: u32) -> usize {
    let cores = std::thread::available_parallelism().map_or(2, |cores| cores.get());
    jobs_within(cores, smp)
}

/// `cores / smp`, at least 1.
fn jobs_within(cores: usize, smp: u32) -> usize {
    (cores / smp.max(1) as usize).max(1)
}

/// Decodes the entry text, prints the campaign's interrupt-point coverage
/// and, with `--coverage`, boots the breakpoint walks ([`walk_boots`]) to
/// count their NMIs as well, prints the figures split by reachability and
/// writes the listing of what was never hit; Err(exit code) when it can't.
pub(crate) fn report_coverage(totals: &mut campaign::Totals, args: &FuzzArgs) -> Result<(), i32> {
    let listing = args.coverage.as_deref();
    if listing.is_some() {
        for serial in walk_boots(args)? {
            totals.add_walk_coverage(&serial);
        }
    }
    let text = match totals.measure_coverage() {
        Ok(text) => text,
        Err(error) if listing.is_some() => {
            eprintln!("extregs: --coverage: cannot decode the kernel's entry text: {error}");
            return Err(EXIT_USAGE);
        }
        Err(_) => return Ok(()),
    };
    let (hit, total) = totals.entry_points.unwrap_or_default();
    println!(
        "extregs: fuzz: {} foreign NMIs ({} in user mode), {} foreign IRQs; interrupt points of the entry text hit: {hit} of {total}",
        totals.foreign_nmis, totals.foreign_user_nmis, totals.foreign_irqs
    );
    for (cpu, hit_here) in &totals.entry_points_by_cpu {
        println!("extregs: fuzz:   on CPU {cpu}: {hit_here} of {total}");
    }
    let Some(path) = listing else {
        return Ok(());
    };
    let (Some(figures), Some(unreachable)) =
        (totals.coverage_figures, &totals.coverage_unreachable)
    else {
        eprintln!(
            "extregs: --coverage: no boot named the stubs nothing raises (COVERAGE_NOT_RAISED)"
        );
        return Err(EXIT_KERNEL_FAILURE);
    };
    println!("extregs: coverage: fuzz and the breakpoint walks: {figures}");
    let with_walks = totals.coverage_hits.union(&totals.walk_coverage_hits).copied().collect();
    let missed = text.missed_listing(&with_walks, unreachable);
    if let Err(error) = std::fs::write(path, missed) {
        eprintln!("extregs: cannot write {}: {error}", path.display());
        return Err(EXIT_USAGE);
    }
    println!(
        "extregs: coverage: wrote the {} reachable points never hit, and the {} no NMI can land on, to {}",
        figures.reachable - figures.reachable_hit,
        figures.not_raised + figures.nmi_blocked - figures.wrong_claims(),
        path.display()
    );
    if figures.wrong_claims() > 0 {
        eprintln!("extregs: coverage: an NMI landed where the kernel says none can");
        return Err(EXIT_KERNEL_FAILURE);
    }
    Ok(())
}

/// The boots whose breakpoint walks `--coverage` counts: one selftest,
/// and the three walked `mode=oops` causes (the #MC entry from kernel and
/// from user mode and the #DF entry, which never return, walked up to
/// their handlers). Their serial output, or the
/// exit code when one did not end as it must (the selftest passing, each
/// oops dying of its cause after its walk line).
fn walk_boots(args: &FuzzArgs) -> Result<Vec<String>, i32> {
    let boots = [
        ("mode=selftest", EXIT_SUCCESS),
        ("mode=oops cause=machine-check-walk", EXIT_KERNEL_FAILURE),
        ("mode=oops cause=stack-overflow-walk", EXIT_KERNEL_FAILURE),
        ("mode=oops cause=user-machine-check-walk", EXIT_KERNEL_FAILURE),
    ];
    let mut serials = Vec::new();
    for (cmdline, expected_exit) in boots {
        let config = RunConfig {
            cpu: args.cpu.clone(),
            cmdline: cmdline.into(),
            timeout: Duration::from_secs(args.timeout),
            ..RunConfig::default()
        };
        let outcome = match qemu::run(&config) {
            Ok(outcome) => outcome,
            Err(error) => {
                eprintln!("extregs: --coverage: cannot boot {cmdline}: {error}");
                return Err(EXIT_USAGE);
            }
        };
        let (exit, why) = outcome.verdict();
        let walked = cmdline == "mode=selftest"
            || (outcome.serial.contains("# dying entry: an NMI at each of its")
                && !outcome.serial.contains("the kernel state wrong"));
        if exit != expected_exit || !walked {
            eprintln!("extregs: --coverage: the walk boot {cmdline} went wrong: {why}");
            return Err(EXIT_KERNEL_FAILURE);
        }
        serials.push(outcome.serial);
    }
    Ok(serials)
}

/// `fuzz --seed S`: one boot with its output shown; `--json` writes it as a
/// one-seed campaign (the same format as `--seeds`).
pub(crate) fn replay(args: &FuzzArgs, seed: u64) -> i32 {
    let campaign_config = campaign_config(args, seed..seed + 1, 1);
    let config = RunConfig {
        cpu: args.cpu.clone(),
        cmdline: campaign::cmdline(&campaign_config, seed..seed + 1),
        timeout: Duration::from_secs(args.timeout),
        deterministic: args.deterministic,
        echo: true,
        nmi_storm: args.nmi_storm,
        granular: args.granular,
        smp: (args.smp > 1).then(|| args.smp.to_string()),
        fw_cfg_files: Vec::new(),
        ..RunConfig::default()
    };
    let outcome = match qemu::run(&config) {
        Ok(outcome) => outcome,
        Err(error) => {
            eprintln!("extregs: {error}");
            return EXIT_USAGE;
        }
    };
    let (code, why) = outcome.verdict();
    eprintln!("extregs: {why} (exit {code})");
    if let Some(sent) = outcome.nmis_sent {
        eprintln!("extregs: NMI storm: {sent} NMIs sent over QMP");
    }
    if args.json.is_some() || args.coverage.is_some() || args.plot.is_some() {
        let report = campaign::SeedReport::of_one_seed_boot(
            seed,
            code,
            why,
            outcome.result(),
            outcome.serial.clone(),
        );
        let mut totals = campaign::Totals::default();
        totals.add(&report);
        if let Err(code) = report_coverage(&mut totals, args) {
            return code;
        }
        let document = campaign::to_json(&campaign_config, &[report], &totals, false);
        if let Some(path) = &args.json {
            let text = serde_json::to_string_pretty(&document).expect("JSON renders");
            if let Err(error) = std::fs::write(path, text + "\n") {
                eprintln!("extregs: cannot write {}: {error}", path.display());
                return EXIT_USAGE;
            }
            eprintln!("extregs: fuzz: wrote {}", path.display());
        }
        if let Some(path) = &args.plot {
            if let Err(code) = draw_plot(&document, path) {
                return code;
            }
        }
    }
    code
}

#[cfg(test)]
mod tests {
    use super::jobs_within;

    #[test]
    fn default_jobs_keep_jobs_times_cpus_within_the_cores() {
        assert_eq!(jobs_within(2, 1), 2);
        assert_eq!(jobs_within(2, 2), 1);
        assert_eq!(jobs_within(2, 4), 1, "one boot even if it has more CPUs than cores");
        assert_eq!(jobs_within(16, 4), 4);
        assert_eq!(jobs_within(8, 3), 2);
    }
}
