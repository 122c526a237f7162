//! The native harness: the variants' stubs in this very process, in ring
//! 3, entered through a synthetic interrupt frame and left with `iretq`.

use super::*;
use extregs_bench::{
    above_reserve, Placement, Stub, Summary, CELL_PKRS, CELL_PKRS_DEFAULT, EXTENSION_SIZES,
    HANDLER_RSP,
};
use serde_json::{json, Value};
use std::sync::atomic::Ordering;

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
pub(crate) fn round_trips(stub: u64, batch: u64) -> (u64, u64) {
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
pub(crate) fn measure_native(stub: Stub, iterations: u64) -> (Summary, Option<u64>) {
    let address = stub.address();
    measure_native_with(iterations, |batch| round_trips(address, batch))
}

/// As [`measure_native`], for any batch of round trips: `round_trips(batch)`
/// gives (ticks, RSP at the frame's top).
pub(crate) fn measure_native_with(
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
pub(crate) fn size_rows(
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
pub(crate) fn sized_round_trips(stub: u64, batch: u64, reserve: u64) -> (u64, u64) {
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
pub(crate) fn measure_native_sized(
    stub: u64,
    iterations: u64,
    reserve: u64,
) -> (Summary, Option<u64>, u64) {
    let (summary, stack) =
        measure_native_with(iterations, |batch| sized_round_trips(stub, batch, reserve));
    (summary, stack, iterations)
}

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

/// The CPU's frame without a handler: 5 words.
pub(crate) const FRAME_ONLY_BYTES: u64 = 40;
