//! `extregs bench`: both harnesses, repeated runs, the tables, the JSON
//! and the chart.

use extregs::bench;
use extregs::exit_codes::{EXIT_SUCCESS, EXIT_USAGE};
use extregs::qemu::{Accel, Firmware};
use std::path::PathBuf;

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Harness {
    Native,
    Kernel,
    Both,
}

#[derive(clap::Args)]
pub(crate) struct BenchArgs {
    /// Where to run: ring 3 on this CPU, inside the booted kernel, or both.
    #[arg(long, value_enum, default_value = "both")]
    pub(crate) harness: Harness,
    /// QEMU accelerator for the kernel harness (KVM here cannot deliver
    /// guest exceptions; its failure is reported).
    #[arg(long, value_enum, default_value = "tcg")]
    pub(crate) accel: Accel,
    /// Timed round trips per variant, after a warm-up (kernel: at most 200000).
    #[arg(long, default_value_t = 100_000)]
    pub(crate) iterations: u64,
    /// Repeated runs of each harness (1 to 100; the kernel harness boots once
    /// per run). Rows carry the spread of the run medians, and every ratio
    /// is taken run by run, then the median of those is reported.
    #[arg(long, default_value_t = 5)]
    pub(crate) runs: u32,
    /// Write one JSON row per variant and harness.
    #[arg(long)]
    pub(crate) json: Option<PathBuf>,
    /// Draw the medians (as ratios to each harness's floor) as an SVG bar chart.
    #[arg(long)]
    pub(crate) plot: Option<PathBuf>,
    /// Time boots instead of entries: boot this build's BIOS and UEFI
    /// images --runs times each (mode=demo) and report the time from
    /// QEMU's start to the kernel's first line and to RESULT.
    #[arg(long, conflicts_with = "peer")]
    pub(crate) boot: bool,
    /// Side by side with Linux: the same static program (a getpid loop and a
    /// raise -> handler -> rt_sigreturn loop, RDTSC in user mode) under
    /// `extregs exec` and under Debian's Linux 6.1 booted by the same QEMU,
    /// --runs times each (docs/linux-abi.md).
    #[arg(long)]
    pub(crate) peer: bool,
    /// Time a fuzz campaign two ways on this host, in turn, --runs times:
    /// one QEMU of 2 CPUs (--smp 2 --jobs 1) against two of 1 CPU (--smp 1
    /// --jobs 2), the same 24 seeds x 1000 iterations; reports each side's
    /// wall frames/s (boots included) and their ratio.
    #[arg(long, conflicts_with_all = ["boot", "peer"])]
    pub(crate) fuzz_smp: bool,
    /// With --boot: time this BIOS image too (another build's, to compare).
    #[arg(long, requires = "boot")]
    pub(crate) also_bios: Option<PathBuf>,
    /// With --boot: time this UEFI image too.
    #[arg(long, requires = "boot")]
    pub(crate) also_uefi: Option<PathBuf>,
}

pub(crate) fn bench(args: BenchArgs) -> i32 {
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
    if args.boot {
        return boot(&args);
    }
    if args.peer {
        return peer(&args);
    }
    if args.fuzz_smp {
        return fuzz_smp(&args);
    }
    let runs = args.runs;
    let mut rows = Vec::new();
    let mut nesting = Vec::new();
    let mut kernel_build = serde_json::Value::Null;
    let mut code = EXIT_SUCCESS;
    if args.harness != Harness::Kernel {
        let native_runs: Vec<Vec<bench::Row>> =
            (0..runs).map(|_| bench::native::native(args.iterations)).collect();
        let native = bench::statistics::combine(&native_runs);
        println!(
            "{}",
            bench::render::table(
                &native,
                &format!(
                    "native harness: ring 3 on {} ({}; TSC cycles per round trip, synthetic frame + iretq, {} round trips per TSC read; {runs} runs: min of mins, medians of the runs' figures, spread = max - min of the run medians, ratios run by run)",
                    bench::native::host_cpu(),
                    bench::native::describe_build(&bench::native::native_build()),
                    bench::native::NATIVE_BATCH
                )
            )
        );
        println!(
            "{}",
            bench::render::size_table(
                &native,
                "extension size: native harness, the state grown from 8 to 128 bytes in each place"
            )
        );
        rows.extend(native);
    }
    if args.harness != Harness::Native {
        let mut measured = Ok(Vec::new());
        for run in 0..runs {
            match (bench::kernel::kernel(args.iterations, args.accel), &mut measured) {
                (Ok(result), Ok(results)) => results.push(result),
                (Err(error), _) => {
                    measured = Err((run + 1, error));
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
            (
                bench::statistics::combine(&row_runs),
                bench::statistics::combine_nesting(&nest_runs),
                first_cpu,
                first_build,
            )
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
                    bench::render::table(
                        &kernel_rows,
                        &format!("kernel harness: QEMU {accel} on {cpu} (kernel {}; TSC cycles per `int $vector` round trip, 16 per TSC read; {runs} boots, figures as above; under TCG only ratios mean anything)", bench::native::describe_build(&build))
                    )
                );
                println!(
                    "{}",
                    bench::render::size_table(
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
                    let spread = bench::statistics::spread(&row.medians)
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
            Err((run, error)) => {
                eprintln!("extregs: bench: run {run} of {runs}: {error}");
                code = error.exit_code();
            }
        }
    }
    if let Some(path) = &args.json {
        let harness_rows = |harness: &str| -> Vec<bench::Row> {
            rows.iter().filter(|r| r.harness == harness).cloned().collect()
        };
        let json_rows: Vec<serde_json::Value> = rows
            .iter()
            .map(|row| bench::render::row_json(row, &harness_rows(&row.harness)))
            .collect();
        let nest_json: Vec<serde_json::Value> = nesting
            .iter()
            .map(|n| {
                serde_json::json!({"name": "extended", "harness": "kernel", "depth": n.depth,
                    "min_cycles": n.summary.min, "median_cycles": n.summary.median,
                    "p99_cycles": n.summary.p99, "iqr_cycles": n.summary.iqr,
                    "stack_bytes": n.stack_bytes, "runs": n.medians.len(),
                    "run_median_cycles": n.medians,
                    "median_spread_cycles": bench::statistics::spread(&n.medians)})
            })
            .collect();
        let document = serde_json::json!({
            "host_cpu": bench::native::host_cpu(),
            "native_build": bench::native::native_build(),
            "native_round_trips_per_tsc_read": bench::native::NATIVE_BATCH,
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
            bench::render::plot(&rows, path, "extregs: entry variants, median cycles / floor")
        {
            eprintln!("extregs: cannot draw {}: {error}", path.display());
            return EXIT_USAGE;
        }
        println!("extregs: bench: drew {}", path.display());
    }
    code
}

/// `extregs bench --peer`: the peer program under extregs and under Linux
/// 6.1, `--runs` times each ([`bench::peer`]).
fn peer(args: &BenchArgs) -> i32 {
    let series = match bench::peer::measure(args.runs) {
        Ok(series) => series,
        Err(error) => {
            eprintln!("extregs: bench --peer: {error}");
            return error.exit_code();
        }
    };
    print!("{}", series.table());
    if let Err(code) = write_section(args, "peer", series.to_json()) {
        return code;
    }
    if let Some(path) = &args.plot {
        if let Err(error) = series.plot(path) {
            eprintln!("extregs: bench --peer: {error}");
            return EXIT_USAGE;
        }
        println!("extregs: bench: drew {}", path.display());
    }
    EXIT_SUCCESS
}

/// `extregs bench --boot`: this build's images, and any others named, each
/// booted `--runs` times per firmware.
fn boot(args: &BenchArgs) -> i32 {
    if args.plot.is_some() {
        eprintln!("extregs: bench --boot draws no chart (--plot is for the entry variants)");
        return EXIT_USAGE;
    }
    let mut images = vec![
        (Firmware::Bios, extregs::images::bios_image().to_path_buf()),
        (Firmware::Uefi, extregs::images::uefi_image().to_path_buf()),
    ];
    images.extend(args.also_bios.iter().map(|path| (Firmware::Bios, path.clone())));
    images.extend(args.also_uefi.iter().map(|path| (Firmware::Uefi, path.clone())));
    println!("{}", bench::boot::table_header());
    let mut series = Vec::new();
    for (firmware, image) in images {
        match bench::boot::measure(firmware, &image, args.runs) {
            Ok(measured) => {
                println!("{}  {}", measured.table_row(), image.display());
                series.push(measured);
            }
            Err(error) => {
                eprintln!("extregs: bench --boot: {error}");
                return error.exit_code();
            }
        }
    }
    let boots = series.iter().map(bench::boot::BootSeries::to_json).collect::<Vec<_>>();
    if let Err(code) = write_section(args, "boot", serde_json::json!(boots)) {
        return code;
    }
    EXIT_SUCCESS
}

/// `extregs bench --fuzz-smp`: the SMP campaign against two single-CPU
/// boots (`bench::campaign`).
fn fuzz_smp(args: &BenchArgs) -> i32 {
    if args.plot.is_some() {
        eprintln!("extregs: bench --fuzz-smp draws no chart (--plot is for the entry variants)");
        return EXIT_USAGE;
    }
    let comparison = match bench::campaign::measure(args.runs) {
        Ok(comparison) => comparison,
        Err(why) => {
            eprintln!("extregs: bench --fuzz-smp: {why}");
            return extregs::exit_codes::EXIT_KERNEL_FAILURE;
        }
    };
    print!("{}", comparison.table());
    if let Err(code) = write_section(args, "fuzz_smp", comparison.to_json()) {
        return code;
    }
    EXIT_SUCCESS
}

/// Writes `--json` (if given) as `{section: value, "host_cpu": …}`, the
/// document of the `--boot`, `--peer` and `--fuzz-smp` measurements.
fn write_section(args: &BenchArgs, section: &str, value: serde_json::Value) -> Result<(), i32> {
    let Some(path) = &args.json else {
        return Ok(());
    };
    let mut document = serde_json::Map::new();
    document.insert(section.to_string(), value);
    document.insert("host_cpu".into(), serde_json::json!(bench::native::host_cpu()));
    let text = serde_json::to_string_pretty(&serde_json::Value::Object(document)).unwrap() + "\n";
    std::fs::write(path, text).map_err(|error| {
        eprintln!("extregs: cannot write {}: {error}", path.display());
        EXIT_USAGE
    })
}
