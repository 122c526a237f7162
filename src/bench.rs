//! `extregs bench`: the thread's question measured. Each entry variant runs
//! the same trivial handler, so only the entry design differs.
//!
//! * **native**: the variants' stubs (`crates/bench`, built from the same
//!   `calling.S` and `extregs-entry` code as the kernel) run in this very
//!   process, in ring 3: a synthetic interrupt frame (`ss`=0x2b, `rsp`,
//!   `rflags`, `cs`=0x33, `rip`) is pushed and the stub entered with a jump;
//!   its `iretq` comes back. Real TSC cycles of the stub and entry code,
//!   without the CPU's own delivery. PKRS is a memory cell
//!   (`extregs_bench::CellPlatform`).
//! * **kernel**: `int $vector` round trips inside the booted kernel (QEMU;
//!   under TCG only the ratios mean anything), plus the kernel-only
//!   variants (`x86-interrupt`, and the real PKRS save/restore with and
//!   without a WRMSR).

use crate::qemu::{self, Accel, RunConfig};
use extregs_bench::{
    above_reserve, Placement, Stub, Summary, CELL_PKRS, CELL_PKRS_DEFAULT, EXTENSION_SIZES,
    HANDLER_RSP,
};
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::time::Duration;

// The stubs' handlers come from `extregs-bench` (feature `cell-handlers`).

/// The variants in report order.
pub const VARIANTS: [&str; 12] = [
    "floor",
    "x86-interrupt",
    "by-value",
    "by-reference",
    "extended",
    "extended+pks-hit",
    "extended+pks-write",
    "yield",
    "yield+pkrs-switch",
    "syscall-by-value",
    "syscall-extended",
    "syscall",
];

/// One variant in one harness.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub name: String,
    pub harness: String,
    /// None: the variant cannot run in this harness (`why` says so).
    pub summary: Option<Summary>,
    pub stack_bytes: Option<u64>,
    pub iterations: u64,
    pub why: Option<String>,
    /// Run by run, once [`combine`] merged repeated runs (empty before).
    pub repeats: Repeats,
    /// The size series: the state's bytes and where it is (`below`,
    /// `above`, `by-value`, `by-reference`); None for the other rows.
    pub extension_bytes: Option<u64>,
    pub placement: Option<String>,
}

/// One variant across the repeated runs of a harness: each run's median
/// per round trip, and its ratios to the same run's floor and by-value
/// medians (a ratio is only ever taken within one run).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Repeats {
    pub medians: Vec<f64>,
    pub to_floor: Vec<f64>,
    pub to_by_value: Vec<f64>,
}

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

/// One nesting depth of the kernel's `extended` variant.
#[derive(Clone, Debug, PartialEq)]
pub struct NestRow {
    pub depth: u64,
    pub summary: Summary,
    pub stack_bytes: u64,
    /// Each run's median, once [`combine_nesting`] merged repeated runs.
    pub medians: Vec<f64>,
}

/// The native harness's build, as the table header and the JSON name it.
pub fn native_build() -> Value {
    json!({"profile": extregs_bench::BUILD_PROFILE, "opt_level": extregs_bench::BUILD_OPT_LEVEL})
}

/// "profile dev, opt-level 2" for a table header.
pub fn describe_build(build: &Value) -> String {
    format!(
        "profile {}, opt-level {}",
        build["profile"].as_str().unwrap_or("?"),
        build["opt_level"].as_str().unwrap_or("?")
    )
}

/// Round trips timed per pair of TSC reads in the native harness. Some
/// hosts' TSC advances in steps (26 ticks on an AMD EPYC host here), which
/// quantised single round trips to multiples of the step; a batch of 32
/// resolves differences below one step (1/32 of it).
pub const NATIVE_BATCH: u64 = 32;

/// `batch` synthetic-frame round trips through `stub`; returns (TSC ticks
/// for all of them, RSP before each frame was pushed).
#[inline(never)]
fn round_trips(stub: u64, batch: u64) -> (u64, u64) {
    let ticks: u64;
    let top: u64;
    // SAFETY: the asm pushes a ring-3 interrupt frame returning to label 2 and jumps to a stub
    // whose Rust handlers may change any caller-saved register (clobber_abi) and whose iretq pops
    // the frame; stub address, count and start time stay in callee-saved registers.
    unsafe {
        core::arch::asm!(
            "lfence",
            "rdtsc",
            "shl rdx, 32",
            "or rax, rdx",
            "mov r14, rax",
            "mov r15, rsp",
            "3:",
            "mov rcx, rsp",
            "push 0x2b",
            "push rcx",
            "pushfq",
            "push 0x33",
            "lea rcx, [rip + 2f]",
            "push rcx",
            "jmp r12",
            "2:",
            "dec r13",
            "jnz 3b",
            "lfence",
            "rdtsc",
            "shl rdx, 32",
            "or rax, rdx",
            "sub rax, r14",
            in("r12") stub,
            inout("r13") batch.max(1) => _,
            out("r14") _,
            out("r15") top,
            lateout("rax") ticks,
            clobber_abi("C"),
        );
    }
    (ticks, top)
}

/// Runs `stub` for `iterations` round trips (in batches of
/// [`NATIVE_BATCH`]) after a warm-up; returns the per-round-trip summary
/// and the stack bytes from the frame's top to RSP inside the handler (None
/// when no handler ran: the floor).
fn measure_native(stub: Stub, iterations: u64) -> (Summary, Option<u64>) {
    let address = stub.address();
    measure_native_with(iterations, |batch| round_trips(address, batch))
}

/// As [`measure_native`], for any batch of round trips: `round_trips(batch)`
/// gives (ticks, RSP at the frame's top).
fn measure_native_with(
    iterations: u64,
    mut round_trips: impl FnMut(u64) -> (u64, u64),
) -> (Summary, Option<u64>) {
    for _ in 0..(iterations.min(10_000) / NATIVE_BATCH).max(1) {
        round_trips(NATIVE_BATCH);
    }
    let batches = (iterations / NATIVE_BATCH).max(1);
    let mut samples = Vec::with_capacity(batches as usize);
    HANDLER_RSP.store(0, Ordering::SeqCst);
    let mut stack = None;
    for _ in 0..batches {
        let (ticks, top) = round_trips(NATIVE_BATCH);
        samples.push(ticks);
        let handler_rsp = HANDLER_RSP.swap(0, Ordering::SeqCst);
        if handler_rsp != 0 {
            stack = Some(top - handler_rsp);
        }
    }
    (extregs_bench::summarize(&mut samples, NATIVE_BATCH), stack)
}

/// The native harness: every variant it can run, and why not the others.
pub fn native(iterations: u64) -> Vec<Row> {
    CELL_PKRS.store(CELL_PKRS_DEFAULT, Ordering::SeqCst);
    VARIANTS
        .iter()
        .map(|&name| {
            let stub = match name {
                "floor" => Some(Stub::Floor),
                "by-value" => Some(Stub::ByValue),
                "by-reference" => Some(Stub::ByReference),
                "extended" => Some(Stub::Extended),
                _ => None,
            };
            match stub {
                Some(stub) => {
                    let (summary, stack) = measure_native(stub, iterations);
                    Row {
                        name: name.into(),
                        harness: "native".into(),
                        summary: Some(summary),
                        stack_bytes: Some(stack.unwrap_or(FRAME_ONLY_BYTES)),
                        iterations,
                        why: None,
                        repeats: Repeats::default(),
                        extension_bytes: None,
                        placement: None,
                    }
                }
                None => Row {
                    name: name.into(),
                    harness: "native".into(),
                    summary: None,
                    stack_bytes: None,
                    iterations,
                    repeats: Repeats::default(),
                    extension_bytes: None,
                    placement: None,
                    why: Some(match name {
                        "x86-interrupt" => "in-kernel only: a Rust x86-interrupt handler needs a real interrupt gate".into(),
                        "yield" | "yield+pkrs-switch" => "in-kernel only: needs kernel tasks".into(),
                        name if name.starts_with("syscall") => {
                            "in-kernel only: needs a ring-3 task and SYSCALL".into()
                        }
                        _ => "in-kernel only: needs the PKRS MSR".into(),
                    }),
                },
            }
        })
        .chain(size_rows("native", |placement, bytes| {
            let stub = extregs_bench::size_stub(placement, bytes).expect("a stub per size");
            measure_native_sized(stub, iterations, above_reserve(placement, bytes))
        }))
        .collect()
}

/// The size series in the kernel's order (placement, then size), each
/// measured by `measure(placement, bytes)`.
fn size_rows(
    harness: &str,
    mut measure: impl FnMut(Placement, usize) -> (Summary, Option<u64>, u64),
) -> Vec<Row> {
    let mut rows = Vec::new();
    for placement in Placement::ALL {
        for bytes in EXTENSION_SIZES {
            let (summary, stack, iterations) = measure(placement, bytes);
            rows.push(Row {
                name: size_row_name(placement.name(), bytes as u64),
                harness: harness.into(),
                summary: Some(summary),
                stack_bytes: stack,
                iterations,
                why: None,
                repeats: Repeats::default(),
                extension_bytes: Some(bytes as u64),
                placement: Some(placement.name().into()),
            });
        }
    }
    rows
}

/// A size-series row's name, e.g. `size-below-32` (the kernel's too).
pub fn size_row_name(placement: &str, bytes: u64) -> String {
    format!("size-{placement}-{bytes}")
}

/// As [`round_trips`], with `reserve` bytes left free above each frame
/// (the `above` rows' state; 0 for the other size rows, the same
/// instructions). The start time waits on the stack, as the frame's top
/// is measured below it.
#[inline(never)]
fn sized_round_trips(stub: u64, batch: u64, reserve: u64) -> (u64, u64) {
    let ticks: u64;
    let top: u64;
    // SAFETY: as in `round_trips`; RSP is lowered by `reserve` before each synthetic frame and
    // put back after its iretq, and the start time pushed first is popped last, so the stack
    // is balanced; stub, count and reserve stay in callee-saved registers.
    unsafe {
        core::arch::asm!(
            "lfence",
            "rdtsc",
            "shl rdx, 32",
            "or rax, rdx",
            "push rax",
            "mov r15, rsp",
            "3:",
            "sub rsp, r14",
            "mov rcx, rsp",
            "push 0x2b",
            "push rcx",
            "pushfq",
            "push 0x33",
            "lea rcx, [rip + 2f]",
            "push rcx",
            "jmp r12",
            "2:",
            "add rsp, r14",
            "dec r13",
            "jnz 3b",
            "lfence",
            "rdtsc",
            "shl rdx, 32",
            "or rax, rdx",
            "pop rcx",
            "sub rax, rcx",
            in("r12") stub,
            inout("r13") batch.max(1) => _,
            in("r14") reserve,
            out("r15") top,
            lateout("rax") ticks,
            clobber_abi("C"),
        );
    }
    (ticks, top)
}

/// [`measure_native`] for a size-series stub: (summary, stack bytes from
/// the frame's top, reservation included, to RSP in the handler,
/// iterations).
fn measure_native_sized(stub: u64, iterations: u64, reserve: u64) -> (Summary, Option<u64>, u64) {
    let (summary, stack) =
        measure_native_with(iterations, |batch| sized_round_trips(stub, batch, reserve));
    (summary, stack, iterations)
}

/// The CPU's frame without a handler: 5 words.
const FRAME_ONLY_BYTES: u64 = 40;

/// The kernel harness: boots `mode=bench` and reads its `BENCH` lines.
/// What the kernel harness measured: rows, the nesting table, the CPU
/// model, and the kernel's build (`profile`, `opt_level`,
/// `debug_assertions`, from its `BENCH_BUILD` line).
pub type KernelBench = (Vec<Row>, Vec<NestRow>, String, Value);

pub fn kernel(iterations: u64, accel: Accel) -> Result<KernelBench, String> {
    let config = RunConfig {
        accel,
        cmdline: format!("mode=bench iterations={iterations}"),
        timeout: Duration::from_secs(900),
        ..RunConfig::default()
    };
    let outcome = qemu::run(&config).map_err(|error| error.to_string())?;
    if outcome.qemu_stderr.contains("KVM internal error") {
        return Err("KVM cannot deliver guest exceptions on this host (\"KVM internal error\"): use --accel tcg".into());
    }
    let (code, why) = outcome.verdict();
    if code != 0 {
        let tail: Vec<&str> = outcome.serial.lines().rev().take(15).collect();
        return Err(format!(
            "the kernel harness failed: {why}\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        ));
    }
    let mut rows = Vec::new();
    let mut nesting = Vec::new();
    let mut build = Value::Null;
    for line in outcome.serial.lines() {
        if let Some(json) = line.strip_prefix("BENCH_BUILD ") {
            build = serde_json::from_str(json)
                .map_err(|e| format!("bad BENCH_BUILD line ({e}): {line}"))?;
        } else if let Some(json) = line.strip_prefix("BENCH ") {
            let value: Value =
                serde_json::from_str(json).map_err(|e| format!("bad BENCH line ({e}): {line}"))?;
            let summary = value["median"].as_f64().map(|median| Summary {
                min: value["min"].as_f64().unwrap_or(0.0),
                median,
                p99: value["p99"].as_f64().unwrap_or(0.0),
                iqr: value["iqr"].as_f64().unwrap_or(0.0),
            });
            rows.push(Row {
                name: value["name"].as_str().unwrap_or("?").into(),
                harness: "kernel".into(),
                summary,
                stack_bytes: value["stack_bytes"].as_u64(),
                iterations: value["iterations"].as_u64().unwrap_or(0),
                why: value["why"].as_str().map(String::from),
                repeats: Repeats::default(),
                extension_bytes: value["extension_bytes"].as_u64(),
                placement: value["placement"].as_str().map(String::from),
            });
        } else if let Some(json) = line.strip_prefix("BENCH_NEST ") {
            let value: Value = serde_json::from_str(json)
                .map_err(|e| format!("bad BENCH_NEST line ({e}): {line}"))?;
            nesting.push(NestRow {
                depth: value["depth"].as_u64().unwrap_or(0),
                summary: Summary {
                    min: value["min"].as_f64().unwrap_or(0.0),
                    median: value["median"].as_f64().unwrap_or(0.0),
                    p99: value["p99"].as_f64().unwrap_or(0.0),
                    iqr: value["iqr"].as_f64().unwrap_or(0.0),
                },
                stack_bytes: value["stack_bytes"].as_u64().unwrap_or(0),
                medians: Vec::new(),
            });
        }
    }
    let cpu = outcome
        .serial
        .lines()
        .find_map(|line| line.strip_prefix("extregs: cpu: "))
        .map(|text| text.split(": pks=").next().unwrap_or(text).to_string())
        .unwrap_or_else(|| "unknown".into());
    if build.is_null() {
        return Err("the kernel printed no BENCH_BUILD line".into());
    }
    Ok((rows, nesting, cpu, build))
}

/// A variant's median, by name, in one harness's rows.
fn median_of(rows: &[Row], name: &str) -> Option<f64> {
    rows.iter().find(|row| row.name == name).and_then(|row| row.summary).map(|s| s.median)
}

/// `value / base` with two decimals, or "-".
fn ratio(value: Option<f64>, base: Option<f64>) -> Option<f64> {
    match (value, base) {
        (Some(value), Some(base)) if base > 0.0 => Some(value / base),
        _ => None,
    }
}

/// A row's ratio to its harness's floor or by-value: the median of the
/// run-by-run ratios when runs were repeated, else the ratio of medians.
fn row_ratio(row: &Row, rows: &[Row], base: &str) -> Option<f64> {
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
pub fn plot(rows: &[Row], path: &std::path::Path, caption: &str) -> Result<(), String> {
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
    whole.fill(&WHITE).map_err(|e| e.to_string())?;
    let (root, below) = whole.split_vertically(480);
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(60)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..VARIANTS.len() as f64, (BAR_BASE..max * 1.5).log_scale())
        .map_err(|e| e.to_string())?;
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
        .map_err(|e| e.to_string())?;
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
            .map_err(|e| e.to_string())?
            .label(harness.as_str())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], colour.filled()));
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE)
        .draw()
        .map_err(|e| e.to_string())?;
    if has_sizes {
        plot_sizes(rows, &below)?;
    }
    whole.present().map_err(|e| e.to_string())?;
    Ok(())
}

const SIZE_PANEL_HEIGHT: u32 = 360;

/// The size series under the bars: median cycles against the state's
/// size, one line per placement, for each harness that ran it, and the
/// stack per frame (the kernel harness's, else the native one's).
fn plot_sizes(
    rows: &[Row],
    area: &plotters::drawing::DrawingArea<plotters::prelude::SVGBackend, plotters::coord::Shift>,
) -> Result<(), String> {
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
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_labels(5)
            .x_label_formatter(&|x| format!("{x:.0}"))
            .x_desc("extension bytes")
            .draw()
            .map_err(|e| e.to_string())?;
        for (index, placement) in Placement::ALL.into_iter().enumerate() {
            let colour = colours[index % colours.len()];
            let points = series(&harness, placement, stack);
            chart
                .draw_series(LineSeries::new(points.clone(), colour.stroke_width(2)))
                .map_err(|e| e.to_string())?
                .label(placement.name())
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 14, y)], colour.stroke_width(2))
                });
            chart
                .draw_series(points.into_iter().map(|p| Circle::new(p, 3, colour.filled())))
                .map_err(|e| e.to_string())?;
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
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

/// Where the log-scale bars start (below the floor's 1.0).
const BAR_BASE: f64 = 0.5;

/// The host CPU's name, from /proc/cpuinfo.
pub fn host_cpu() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|line| line.starts_with("model name"))
                .and_then(|line| line.split(':').nth(1))
                .map(|name| name.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

#[cfg(test)]
mod tests {
    use super::{
        combine, combine_nesting, median, row_json, size_row_name, size_table, NestRow, Repeats,
        Row, Summary,
    };
    use std::collections::BTreeMap;

    fn row(name: &str, median: f64) -> Row {
        Row {
            name: name.into(),
            harness: "kernel".into(),
            summary: Some(Summary { min: median - 1.0, median, p99: median + 10.0, iqr: 2.0 }),
            stack_bytes: Some(192),
            iterations: 100,
            why: None,
            repeats: Repeats::default(),
            extension_bytes: None,
            placement: None,
        }
    }

    fn size_row(placement: &str, bytes: u64, median: f64, stack: u64) -> Row {
        Row {
            extension_bytes: Some(bytes),
            placement: Some(placement.into()),
            stack_bytes: Some(stack),
            ..row(&size_row_name(placement, bytes), median)
        }
    }

    #[test]
    fn the_size_table_is_placement_by_size() {
        let mut rows = vec![row("floor", 100.0)];
        for (index, bytes) in [8, 16, 32, 64, 128].into_iter().enumerate() {
            rows.push(size_row("below", bytes, 700.0 + index as f64, 184 + bytes));
            rows.push(size_row("above", bytes, 710.0, 200 + bytes));
        }
        let runs = [rows.clone(), rows.clone()];
        let combined = combine(&runs);
        let text = size_table(&combined, "title");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "title");
        assert!(lines[1].contains("8 B") && lines[1].contains("128 B"), "{text}");
        // Medians with the (zero) spread of the two runs; a placement that
        // did not run shows dashes.
        assert!(lines[2].starts_with("  below") && lines[2].contains("704.0 (0.0)"), "{text}");
        assert!(lines[4].starts_with("  by-value") && lines[4].contains('-'), "{text}");
        let stack = lines.iter().position(|l| l.contains("stack bytes")).unwrap();
        assert!(lines[stack + 1].contains("192") && lines[stack + 1].contains("312"), "{text}");
        // The size rows stay out of the main table, and carry their fields.
        assert!(!super::table(&combined, "t").contains("size-below-8"));
        let json = row_json(&combined[1], &combined);
        assert_eq!(
            (json["extension_bytes"].as_u64(), json["placement"].as_str()),
            (Some(8), Some("below"))
        );
        assert_eq!(json["name"], "size-below-8");
    }

    #[test]
    fn repeated_runs_take_ratios_run_by_run() {
        // Run 1: floor 100, by-value 200, extended 300 (3.0x, 1.5x);
        // run 2: floor 400, by-value 400, extended 400 (1.0x, 1.0x);
        // run 3: floor 100, by-value 100, extended 150 (1.5x, 1.5x).
        let runs = vec![
            vec![row("floor", 100.0), row("by-value", 200.0), row("extended", 300.0)],
            vec![row("floor", 400.0), row("by-value", 400.0), row("extended", 400.0)],
            vec![row("floor", 100.0), row("by-value", 100.0), row("extended", 150.0)],
        ];
        let combined = combine(&runs);
        let extended = &combined[2];
        assert_eq!(extended.repeats.medians, [300.0, 400.0, 150.0]);
        assert_eq!(extended.repeats.to_floor, [3.0, 1.0, 1.5]);
        assert_eq!(extended.repeats.to_by_value, [1.5, 1.0, 1.5]);
        let summary = extended.summary.unwrap();
        assert_eq!((summary.min, summary.median, summary.p99), (149.0, 300.0, 310.0));
        let json = row_json(extended, &combined);
        // The median of the run-by-run ratios (1.5), not the ratio of the
        // median medians (300 / 100 = 3.0).
        assert_eq!(json["ratio_to_floor"], 1.5);
        assert_eq!(json["ratio_to_by_value"], 1.5);
        assert_eq!(json["runs"], 3);
        assert_eq!(json["median_spread_cycles"], 250.0);
        assert_eq!(json["ratio_to_floor_runs"], serde_json::json!([3.0, 1.0, 1.5]));
    }

    #[test]
    fn a_variant_missing_from_a_run_is_not_run() {
        let mut missing = row("extended", 300.0);
        missing.summary = None;
        missing.why = Some("needs PKS".into());
        let runs = vec![
            vec![row("floor", 100.0), row("extended", 300.0)],
            vec![row("floor", 100.0), missing],
        ];
        let combined = combine(&runs);
        assert!(combined[1].summary.is_none());
        assert!(combined[1].repeats.medians.is_empty());
        assert_eq!(combined[0].repeats.medians, [100.0, 100.0]);
    }

    #[test]
    fn medians_and_nesting_merge() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        let nest = |median: f64| NestRow {
            depth: 2,
            summary: Summary { min: median, median, p99: median, iqr: 0.0 },
            stack_bytes: 384,
            medians: Vec::new(),
        };
        let merged = combine_nesting(&[vec![nest(10.0)], vec![nest(30.0)], vec![nest(20.0)]]);
        assert_eq!(merged[0].summary.median, 20.0);
        assert_eq!(merged[0].summary.min, 10.0);
        assert_eq!(merged[0].medians, [10.0, 30.0, 20.0]);
    }

    /// `[profile.<profile>.package.<name>]` sections of the workspace
    /// manifest: package name -> its settings, in order.
    fn package_overrides(manifest: &str, profile: &str) -> BTreeMap<String, Vec<String>> {
        let header = format!("[profile.{profile}.package.");
        let mut overrides = BTreeMap::new();
        let mut current: Option<String> = None;
        for line in manifest.lines().map(str::trim) {
            if line.starts_with('[') {
                current = line
                    .strip_prefix(header.as_str())
                    .and_then(|rest| rest.strip_suffix(']'))
                    .map(String::from);
                if let Some(name) = &current {
                    overrides.insert(name.clone(), Vec::new());
                }
            } else if let Some(name) = &current {
                if !line.is_empty() && !line.starts_with('#') {
                    overrides.get_mut(name).expect("inserted").push(line.to_string());
                }
            }
        }
        overrides
    }

    /// `cargo run --release -- bench` must measure the kernel and handlers
    /// that `cargo run -- bench` does: every measured package has the same
    /// code-generation settings in both profiles (an override applies to
    /// one profile only, which once made the release kernel a different
    /// one: 208 vs 192 bytes of stack, 3.95x vs 1.79x the floor).
    #[test]
    fn dev_and_release_build_the_measured_code_alike() {
        let manifest = include_str!("../Cargo.toml");
        let dev = package_overrides(manifest, "dev");
        let release = package_overrides(manifest, "release");
        // Everything the kernel image and the native handlers are built
        // from: the workspace crates they link, and every dependency.
        for package in [
            "extregs-kernel",
            "extregs-regs",
            "extregs-entry",
            "extregs-entry-asm",
            "extregs-cmdline",
            "extregs-bench",
            "\"*\"",
        ] {
            let settings =
                dev.get(package).unwrap_or_else(|| panic!("no dev override for {package}"));
            for key in [
                "opt-level",
                "debug-assertions",
                "overflow-checks",
                "codegen-units",
                "incremental",
                "debug",
            ] {
                assert!(
                    settings.iter().any(|line| line.starts_with(key)),
                    "{package}: dev override does not pin {key}"
                );
            }
            assert_eq!(Some(settings), release.get(package), "{package}: dev and release differ");
        }
    }

    #[test]
    fn summaries_resolve_below_one_tick_when_batched() {
        // 32 round trips per sample: 26-tick steps no longer quantise.
        let mut samples =
            vec![32 * 104 + 13, 32 * 104 + 13, 32 * 104 + 13, 32 * 104 + 26, 32 * 104 + 26];
        let summary = extregs_bench::summarize(&mut samples, 32);
        assert!((summary.median - (104.0 + 13.0 / 32.0)).abs() < 1e-9, "{summary:?}");
        assert!(summary.min < summary.p99);
    }
}
