//! `extregs`: build-free front end to the extregs kernel images.
//!
//! `extregs run` boots the kernel under QEMU and exits 0 (kernel success),
//! 1 (kernel failure or crash), 2 (usage or set-up error) or 124 (timeout).
//! `extregs images` prints where the boot images (and the kernel ELF) are.
//! `extregs fuzz --seeds A..B` runs a fuzz campaign; `--seed S` replays one.
//! `extregs inject-nmi --qmp PATH` sends NMIs to a kernel started with
//! `extregs run --qmp PATH` (e.g. in `mode=idle`).

use clap::{Parser, Subcommand};
use extregs::bench;
use extregs::campaign::{self, CampaignConfig};
use extregs::images;
use extregs::qemu::{self, Accel, Firmware, RunConfig};
use extregs::qmp::Qmp;
use extregs::report::{EXIT_KERNEL_FAILURE, EXIT_SUCCESS, EXIT_USAGE};
use extregs_cmdline::MAX_FUZZ_SEEDS_PER_BOOT;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "extregs", version, about = "Boot and test the extregs kernel (extended pt_regs)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Boot the kernel under QEMU and report its result.
    Run(RunArgs),
    /// Print the paths of the BIOS and UEFI boot images (and the kernel ELF).
    Images,
    /// Inject NMIs through QMP into a kernel started with `run --qmp PATH`.
    InjectNmi(InjectNmiArgs),
    /// Fuzz nested interrupt frames: a campaign over a seed range, or the
    /// replay of one seed.
    Fuzz(Box<FuzzArgs>),
    /// Measure the entry variants (floor, x86-interrupt, by-value,
    /// by-reference, extended, extended+pks-hit/-write) side by side.
    Bench(BenchArgs),
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Harness {
    Native,
    Kernel,
    Both,
}

#[derive(clap::Args)]
struct BenchArgs {
    /// Where to run: ring 3 on this CPU, inside the booted kernel, or both.
    #[arg(long, value_enum, default_value = "both")]
    harness: Harness,
    /// QEMU accelerator for the kernel harness (KVM here cannot deliver
    /// guest exceptions; its failure is reported).
    #[arg(long, value_enum, default_value = "tcg")]
    accel: Accel,
    /// Timed round trips per variant, after a warm-up (kernel: at most 200000).
    #[arg(long, default_value_t = 100_000)]
    iterations: u64,
    /// Repeated runs of each harness (1 to 100; the kernel harness boots once
    /// per run). Rows carry the spread of the run medians, and every ratio
    /// is taken run by run, then the median of those is reported.
    #[arg(long, default_value_t = 5)]
    runs: u32,
    /// Write one JSON row per variant and harness.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Draw the medians (as ratios to each harness's floor) as an SVG bar chart.
    #[arg(long)]
    plot: Option<PathBuf>,
}

#[derive(clap::Args)]
struct FuzzArgs {
    /// Seeds to run, `A..B` (B excluded) or `A..=B`, one QEMU boot each.
    #[arg(long, conflicts_with = "seed")]
    seeds: Option<String>,
    /// Replay one seed, showing the kernel's output.
    #[arg(long)]
    seed: Option<u64>,
    /// Event programs per seed.
    #[arg(long, default_value_t = 1000)]
    iterations: u64,
    /// Seeds one boot runs (`mode=fuzz seeds=A..B`, each from a fresh
    /// state); default: the range split evenly over the jobs, at most 64.
    #[arg(long, conflicts_with = "seed")]
    seeds_per_boot: Option<u64>,
    /// Deepest nesting (1..=12).
    #[arg(long, default_value_t = 8)]
    max_depth: u32,
    /// Parallel QEMU instances (default 2; a campaign only: a replay is one
    /// boot).
    #[arg(long)]
    jobs: Option<usize>,
    /// Write the campaign (settings, one row per seed, totals) as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Run QEMU with -icount so asynchronous events replay exactly and a
    /// seed always gives the same digest.
    #[arg(long)]
    deterministic: bool,
    /// QEMU CPU model.
    #[arg(long, default_value = "max")]
    cpu: String,
    /// Seconds a seed may take (from the boot, or from the previous seed of
    /// its batch) before the boot counts as hung (124).
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    /// Switch on a named fault (skip-gpr-restore, skip-pkrs-restore,
    /// extension-offset, nmi-exit-forgets-lockdep, nmi-reuses-ist-frame).
    /// Only a kernel built with EXTREGS_FAULT_INJECTION=1 accepts it.
    #[arg(long)]
    inject: Option<String>,
    /// Send NMIs from outside during every boot (QMP inject-nmi, back to
    /// back): foreign events the fuzzer validates and counts.
    #[arg(long)]
    nmi_storm: bool,
    /// One guest instruction per translation block (QEMU -singlestep), so
    /// foreign NMIs land at every instruction boundary (slower).
    #[arg(long)]
    granular: bool,
    /// Write the entry-text instructions no foreign event interrupted
    /// (offset, symbol+offset, instruction), one per line.
    #[arg(long)]
    coverage: Option<PathBuf>,
    /// Draw the campaign's coverage heat maps (event kind x depth, event
    /// kind x interrupted context, the entry text's interrupt points) as SVG.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// A foreign timer IRQ at this rate (Hz, 1..=10000): the PIT through
    /// the 8259, firing wherever IF=1, which the fuzzer validates and counts.
    #[arg(long)]
    foreign_timer: Option<u32>,
    /// Run only the K-th (1..=N) of N deterministic, contiguous slices of
    /// --seeds (for spreading one campaign over machines; `fuzz merge`
    /// joins their --json documents).
    #[arg(long, conflicts_with = "shard_from_env")]
    shard: Option<String>,
    /// Like --shard, with K taken from a batch engine's 0-based worker
    /// index in an environment variable: VAR/N (e.g.
    /// JOB_COMPLETION_INDEX/8 in a Kubernetes Indexed Job).
    #[arg(long)]
    shard_from_env: Option<String>,
    #[command(subcommand)]
    action: Option<FuzzAction>,
}

#[derive(Subcommand)]
enum FuzzAction {
    /// Merge the --json documents of a campaign's shards (or of campaigns
    /// with the same settings) into one: runs by seed, totals added up.
    Merge(MergeArgs),
    /// Draw the coverage heat maps of a campaign's --json document.
    Plot(PlotArgs),
}

#[derive(clap::Args)]
struct PlotArgs {
    /// A campaign document (`extregs fuzz --json`, or a merge).
    document: PathBuf,
    /// Where to write the SVG.
    #[arg(long)]
    plot: PathBuf,
}

#[derive(clap::Args)]
struct MergeArgs {
    /// The documents to merge.
    #[arg(required = true)]
    documents: Vec<PathBuf>,
    /// Where to write the merged document.
    #[arg(long)]
    json: PathBuf,
}

#[derive(clap::Args)]
struct InjectNmiArgs {
    /// The QMP socket given to `extregs run --qmp`.
    #[arg(long)]
    qmp: PathBuf,
    /// How many NMIs to send.
    #[arg(long, default_value_t = 1)]
    count: u32,
    /// Milliseconds between NMIs (NMIs that arrive together merge into one,
    /// as on hardware).
    #[arg(long, default_value_t = 100)]
    interval_ms: u64,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Firmware that boots the image.
    #[arg(long, value_enum, default_value = "bios")]
    firmware: Firmware,
    /// QEMU accelerator (TCG is the one that works everywhere).
    #[arg(long, value_enum, default_value = "tcg")]
    accel: Accel,
    /// QEMU CPU model (`max` has PKS under TCG; `qemu64` has none).
    #[arg(long, default_value = "max")]
    cpu: String,
    /// Kernel command line, e.g. "mode=selftest" (docs/design.md, "Contracts").
    #[arg(long, default_value = "")]
    cmdline: String,
    /// Seconds before QEMU is killed and the run reported as a timeout (124).
    #[arg(long, default_value_t = 120)]
    timeout: u64,
    /// Wait for gdb on localhost:1234 before the first instruction.
    #[arg(long)]
    gdb: bool,
    /// Serve QMP on this Unix socket (for `extregs inject-nmi` or any QMP
    /// client).
    #[arg(long)]
    qmp: Option<PathBuf>,
    /// Send NMIs from outside (QMP inject-nmi, back to back) from the
    /// kernel's mode line until it exits.
    #[arg(long)]
    nmi_storm: bool,
    /// One guest instruction per translation block (QEMU -singlestep), so
    /// NMIs and IRQs can land at every instruction boundary (slower).
    #[arg(long)]
    granular: bool,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            let code = if error.use_stderr() { EXIT_USAGE } else { EXIT_SUCCESS };
            return ExitCode::from(code as u8);
        }
    };
    let code = match cli.command {
        Command::Images => {
            println!("bios={}", images::bios_image().display());
            println!("uefi={}", images::uefi_image().display());
            println!("kernel={}", images::kernel_elf().display());
            EXIT_SUCCESS
        }
        Command::Run(args) => run(args),
        Command::InjectNmi(args) => inject_nmi(args),
        Command::Fuzz(args) => fuzz(*args),
        Command::Bench(args) => bench(args),
    };
    ExitCode::from(code as u8)
}

fn run(args: RunArgs) -> i32 {
    if args.timeout == 0 {
        eprintln!("extregs: --timeout must be at least 1 second");
        return EXIT_USAGE;
    }
    let config = RunConfig {
        firmware: args.firmware,
        accel: args.accel,
        cpu: args.cpu,
        cmdline: args.cmdline,
        timeout: Duration::from_secs(args.timeout),
        progress_prefix: None,
        gdb: args.gdb,
        echo: true,
        qmp: args.qmp,
        deterministic: false,
        cancel: None,
        serial_lines: None,
        granular: args.granular,
        nmi_storm: args.nmi_storm,
    };
    if config.nmi_storm && config.accel == Accel::Kvm {
        eprintln!("extregs: --nmi-storm needs TCG here (KVM cannot deliver guest exceptions)");
        return EXIT_USAGE;
    }
    if config.gdb {
        eprintln!("extregs: QEMU waits for gdb: target remote localhost:1234");
    }
    match qemu::run(&config) {
        Ok(outcome) => {
            let (code, why) = outcome.verdict();
            if let Some(sent) = outcome.nmis_sent {
                eprintln!("extregs: NMI storm: {sent} NMIs sent over QMP");
            }
            if !outcome.qemu_stderr.trim().is_empty() {
                eprintln!("qemu: {}", outcome.qemu_stderr.trim_end());
            }
            eprintln!("extregs: {why} (exit {code})");
            code
        }
        Err(error) => {
            eprintln!("extregs: {error}");
            EXIT_USAGE
        }
    }
}

fn inject_nmi(args: InjectNmiArgs) -> i32 {
    let mut qmp = match Qmp::connect(&args.qmp, Duration::from_secs(5)) {
        Ok(qmp) => qmp,
        Err(error) => {
            eprintln!("extregs: {error}");
            return EXIT_USAGE;
        }
    };
    for sent in 0..args.count {
        if sent > 0 {
            std::thread::sleep(Duration::from_millis(args.interval_ms));
        }
        if let Err(error) = qmp.inject_nmi() {
            eprintln!("extregs: after {sent} NMIs: {error}");
            return EXIT_USAGE;
        }
    }
    eprintln!("extregs: injected {} NMIs", args.count);
    EXIT_SUCCESS
}

fn fuzz(args: FuzzArgs) -> i32 {
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
    let config = campaign_config(&args, seeds.clone(), args.jobs.unwrap_or(DEFAULT_FUZZ_JOBS));
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
        "extregs: fuzz: seeds {}..{} x {} iterations, max depth {}, {} jobs{}",
        seeds.start,
        seeds.end,
        args.iterations,
        args.max_depth,
        config.jobs,
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
    if let Err(code) = report_coverage(&mut totals, args.coverage.as_deref()) {
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
    if let (Some(median), Some(ratio)) =
        (totals.kernel_median_frames_per_second(), totals.wall_to_kernel_ratio())
    {
        println!(
            "extregs: fuzz: wall {:.0} frames/s = {ratio:.2} x (jobs={} x {median:.0} frames/s, the median seed's rate inside its kernel)",
            totals.frames_per_second(),
            totals.jobs,
        );
    }
    let kinds: Vec<String> =
        totals.kinds.iter().map(|(kind, count)| format!("{kind} {count}")).collect();
    println!("extregs: fuzz: events: {}", kinds.join(", "));
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
        return 130;
    }
    if totals.seeds_failed == 0 {
        EXIT_SUCCESS
    } else {
        EXIT_KERNEL_FAILURE
    }
}

/// Draws `document`'s coverage pictures into `path` (the entry text from
/// this build's kernel ELF).
fn draw_plot(document: &serde_json::Value, path: &Path) -> Result<(), i32> {
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
fn fuzz_plot(args: &PlotArgs) -> i32 {
    let document = std::fs::read_to_string(&args.document)
        .map_err(|error| format!("cannot read {}: {error}", args.document.display()))
        .and_then(|text| {
            serde_json::from_str::<serde_json::Value>(&text)
                .map_err(|error| format!("{} is not JSON: {error}", args.document.display()))
        });
    match document {
        Ok(document) => match draw_plot(&document, &args.plot) {
            Ok(()) => EXIT_SUCCESS,
            Err(code) => code,
        },
        Err(error) => {
            eprintln!("extregs: fuzz plot: {error}");
            EXIT_USAGE
        }
    }
}

/// `extregs fuzz merge A.json B.json … --json ALL.json`.
fn fuzz_merge(args: &MergeArgs) -> i32 {
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
fn campaign_config(args: &FuzzArgs, seeds: std::ops::Range<u64>, jobs: usize) -> CampaignConfig {
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
    }
}

/// Parallel boots of a campaign without `--jobs`.
const DEFAULT_FUZZ_JOBS: usize = 2;

/// `fuzz --seed S`: one boot with its output shown; `--json` writes it as a
/// one-seed campaign (the same format as `--seeds`).
/// Decodes the entry text, prints the campaign's interrupt-point coverage
/// and writes the `--coverage` listing; Err(exit code) when it can't.
fn report_coverage(totals: &mut campaign::Totals, listing: Option<&Path>) -> Result<(), i32> {
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
    if let Some(path) = listing {
        let missed = text.missed_listing(&totals.coverage_hits);
        if let Err(error) = std::fs::write(path, missed) {
            eprintln!("extregs: cannot write {}: {error}", path.display());
            return Err(EXIT_USAGE);
        }
        println!("extregs: fuzz: wrote the {} points never hit to {}", total - hit, path.display());
    }
    Ok(())
}

fn replay(args: &FuzzArgs, seed: u64) -> i32 {
    let campaign_config = campaign_config(args, seed..seed + 1, 1);
    let config = RunConfig {
        cpu: args.cpu.clone(),
        cmdline: campaign::cmdline(&campaign_config, seed..seed + 1),
        timeout: Duration::from_secs(args.timeout),
        deterministic: args.deterministic,
        echo: true,
        nmi_storm: args.nmi_storm,
        granular: args.granular,
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
        let report = campaign::SeedReport {
            seed,
            exit: code,
            why,
            result: outcome.result(),
            coverage_hits: extregs::coverage::hits_in(&outcome.serial),
            serial: (code != EXIT_SUCCESS).then_some(outcome.serial.clone()),
        };
        let mut totals = campaign::Totals::default();
        totals.add(&report);
        if let Err(code) = report_coverage(&mut totals, args.coverage.as_deref()) {
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

fn bench(args: BenchArgs) -> i32 {
    if args.iterations == 0 || args.iterations > extregs_cmdline::MAX_BENCH_ITERATIONS {
        eprintln!(
            "extregs: --iterations must be from 1 to {}",
            extregs_cmdline::MAX_BENCH_ITERATIONS
        );
        return EXIT_USAGE;
    }
    if !(1..=100).contains(&args.runs) {
        eprintln!("extregs: --runs must be from 1 to 100");
        return EXIT_USAGE;
    }
    let runs = args.runs;
    let mut rows = Vec::new();
    let mut nesting = Vec::new();
    let mut kernel_build = serde_json::Value::Null;
    let mut code = EXIT_SUCCESS;
    if args.harness != Harness::Kernel {
        let native_runs: Vec<Vec<bench::Row>> =
            (0..runs).map(|_| bench::native(args.iterations)).collect();
        let native = bench::combine(&native_runs);
        println!(
            "{}",
            bench::table(
                &native,
                &format!(
                    "native harness: ring 3 on {} ({}; TSC cycles per round trip, synthetic frame + iretq, {} round trips per TSC read; {runs} runs: min of mins, medians of the runs' figures, spread = max - min of the run medians, ratios run by run)",
                    bench::host_cpu(),
                    bench::describe_build(&bench::native_build()),
                    bench::NATIVE_BATCH
                )
            )
        );
        println!(
            "{}",
            bench::size_table(
                &native,
                "extension size: native harness, the state grown from 8 to 128 bytes in each place"
            )
        );
        rows.extend(native);
    }
    if args.harness != Harness::Native {
        let mut measured = Ok(Vec::new());
        for run in 0..runs {
            match (bench::kernel(args.iterations, args.accel), &mut measured) {
                (Ok(result), Ok(results)) => results.push(result),
                (Err(error), _) => {
                    measured = Err(format!("run {} of {runs}: {error}", run + 1));
                    break;
                }
                (Ok(_), Err(_)) => unreachable!("the loop stops at the first failure"),
            }
        }
        let combined = measured.map(|results| {
            let (first_cpu, first_build) =
                results.first().map(|r| (r.2.clone(), r.3.clone())).unwrap_or_default();
            let row_runs: Vec<Vec<bench::Row>> = results.iter().map(|r| r.0.clone()).collect();
            let nest_runs: Vec<Vec<bench::NestRow>> = results.iter().map(|r| r.1.clone()).collect();
            (bench::combine(&row_runs), bench::combine_nesting(&nest_runs), first_cpu, first_build)
        });
        match combined {
            Ok((kernel_rows, nest_rows, cpu, build)) => {
                let accel = match args.accel {
                    Accel::Tcg => "TCG",
                    Accel::Kvm => "KVM",
                    Accel::Auto => "auto",
                };
                println!(
                    "{}",
                    bench::table(
                        &kernel_rows,
                        &format!("kernel harness: QEMU {accel} on {cpu} (kernel {}; TSC cycles per `int $vector` round trip, 16 per TSC read; {runs} boots, figures as above; under TCG only ratios mean anything)", bench::describe_build(&build))
                    )
                );
                println!(
                    "{}",
                    bench::size_table(
                        &kernel_rows,
                        "extension size: kernel harness, the state grown from 8 to 128 bytes in each place"
                    )
                );
                println!("nesting: extended, kernel harness (cycles for the outermost round trip)");
                println!(
                    "  {:>5} {:>8} {:>8} {:>8} {:>7} {:>8} {:>7}",
                    "depth", "min", "median", "p99", "iqr", "spread", "stack"
                );
                for row in &nest_rows {
                    let spread = bench::spread(&row.medians)
                        .map_or("-".to_string(), |spread| format!("{spread:.1}"));
                    println!(
                        "  {:>5} {:>8.1} {:>8.1} {:>8.1} {:>7.1} {:>8} {:>7}",
                        row.depth,
                        row.summary.min,
                        row.summary.median,
                        row.summary.p99,
                        row.summary.iqr,
                        spread,
                        row.stack_bytes
                    );
                }
                println!();
                rows.extend(kernel_rows);
                nesting = nest_rows;
                kernel_build = build;
            }
            Err(error) => {
                eprintln!("extregs: bench: {error}");
                code = EXIT_KERNEL_FAILURE;
            }
        }
    }
    if let Some(path) = &args.json {
        let harness_rows = |harness: &str| -> Vec<bench::Row> {
            rows.iter().filter(|r| r.harness == harness).cloned().collect()
        };
        let json_rows: Vec<serde_json::Value> =
            rows.iter().map(|row| bench::row_json(row, &harness_rows(&row.harness))).collect();
        let nest_json: Vec<serde_json::Value> = nesting
            .iter()
            .map(|n| {
                serde_json::json!({"name": "extended", "harness": "kernel", "depth": n.depth,
                    "min_cycles": n.summary.min, "median_cycles": n.summary.median,
                    "p99_cycles": n.summary.p99, "iqr_cycles": n.summary.iqr,
                    "stack_bytes": n.stack_bytes, "runs": n.medians.len(),
                    "run_median_cycles": n.medians,
                    "median_spread_cycles": bench::spread(&n.medians)})
            })
            .collect();
        let document = serde_json::json!({
            "host_cpu": bench::host_cpu(),
            "native_build": bench::native_build(),
            "native_round_trips_per_tsc_read": bench::NATIVE_BATCH,
            "kernel_build": kernel_build,
            "iterations": args.iterations,
            "runs": runs,
            "rows": json_rows,
            "nesting": nest_json,
        });
        if let Err(error) =
            std::fs::write(path, serde_json::to_string_pretty(&document).unwrap() + "\n")
        {
            eprintln!("extregs: cannot write {}: {error}", path.display());
            return EXIT_USAGE;
        }
        println!("extregs: bench: wrote {}", path.display());
    }
    if let Some(path) = &args.plot {
        if let Err(error) =
            bench::plot(&rows, path, "extregs: entry variants, median cycles / floor")
        {
            eprintln!("extregs: cannot draw {}: {error}", path.display());
            return EXIT_USAGE;
        }
        println!("extregs: bench: drew {}", path.display());
    }
    code
}
