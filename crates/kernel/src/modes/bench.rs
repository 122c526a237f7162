//! `mode=bench iterations=N`: the kernel harness of `extregs bench`.
//!
//! Each variant gets its own IDT vector whose gate points at that
//! variant's stub (`crates/bench`, or a Rust `extern "x86-interrupt"`
//! handler), and `int $vector` round trips are timed with the TSC. Every
//! handler runs the same body. Results are `BENCH {json}` lines (one per
//! variant, a `why` for those this CPU can't run) and `BENCH_NEST {json}`
//! lines for the `extended` variant nested 1, 2, 4 and 8 deep. Two more
//! rows time a `yield` round trip between two kernel tasks, with equal
//! and with different PKRS: the price of per-task PKRS.
//!
//! Under TCG the cycles measure the emulator: only ratios between variants
//! of the same run mean anything.

use crate::arch::{idt, pks, uaccess};
use crate::debug::result;
use crate::entry::platform::KernelPlatform;
use crate::sched;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use extregs_bench::{CellPlatform, Placement, Stub, Summary, EXTENSION_SIZES, HANDLER_RSP};
use extregs_entry::{irqentry_enter, irqentry_exit};
use extregs_regs::PtRegs;
use x86_64::structures::idt::InterruptStackFrame;

const FLOOR_VECTOR: u8 = 0xa0;
const X86_INTERRUPT_VECTOR: u8 = 0xa1;
const BY_VALUE_VECTOR: u8 = 0xa2;
const BY_REFERENCE_VECTOR: u8 = 0xa3;
const EXTENDED_VECTOR: u8 = 0xa4;
const EXTENDED_PKS_VECTOR: u8 = 0xa5;
const NESTED_VECTOR: u8 = 0xa6;
/// The size series: vector `SIZE_VECTORS + placement * 5 + size index`.
const SIZE_VECTORS: u8 = 0xb0;
const SIZE_ROWS: usize = Placement::ALL.len() * EXTENSION_SIZES.len();

/// # Safety
///
/// Called only by the `by_value` stub, with the frame it built.
#[no_mangle]
pub unsafe extern "C" fn extregs_bench_by_value_handler(regs: &mut PtRegs) {
    // SAFETY: per the function contract.
    unsafe { extregs_bench::by_value::<CellPlatform>(regs) }
}

/// # Safety
///
/// Called only by the `by_reference` stub, with the frame it built.
#[no_mangle]
pub unsafe extern "C" fn extregs_bench_by_reference_handler(regs: &mut PtRegs) {
    // SAFETY: per the function contract.
    unsafe { extregs_bench::by_reference::<CellPlatform>(regs) }
}

/// # Safety
///
/// Called only by the `extended` stub, with the frame it built.
#[no_mangle]
pub unsafe extern "C" fn extregs_bench_extended_handler(regs: &mut PtRegs) {
    // SAFETY: per the function contract.
    unsafe { extregs_bench::extended::<CellPlatform>(regs) }
}

/// The kernel's own platform: the real PKRS (cached) save and restore.
///
/// # Safety
///
/// Called only by the `extended_pks` stub, with the frame it built.
#[no_mangle]
pub unsafe extern "C" fn extregs_bench_extended_pks_handler(regs: &mut PtRegs) {
    // SAFETY: per the function contract.
    unsafe { extregs_bench::extended::<KernelPlatform>(regs) }
}

/// Levels still to nest below this one.
static NEST_LEFT: AtomicU64 = AtomicU64::new(0);

/// The `extended` handler that raises itself again while [`NEST_LEFT`] is
/// non-zero (the body runs first, so the deepest level notes RSP last).
///
/// # Safety
///
/// Called only by the `extended_nested` stub, with the frame it built.
#[no_mangle]
pub unsafe extern "C" fn extregs_bench_extended_nested_handler(regs: &mut PtRegs) {
    // SAFETY: per the function contract.
    unsafe { irqentry_enter::<CellPlatform>(regs) };
    extregs_bench::handler_body();
    if NEST_LEFT.load(Ordering::Relaxed) > 0 {
        NEST_LEFT.fetch_sub(1, Ordering::Relaxed);
        // SAFETY: the nested vector's gate is this same stub.
        unsafe { core::arch::asm!("int {v}", v = const NESTED_VECTOR) };
    }
    // SAFETY: the same frame.
    unsafe { irqentry_exit::<CellPlatform>(regs) };
}

/// The Rust ecosystem's default: no pt_regs, the compiler saves what the
/// body clobbers.
extern "x86-interrupt" fn x86_interrupt_handler(_frame: InterruptStackFrame) {
    extregs_bench::handler_body();
}

/// `batch` `int $V` round trips timed by one pair of TSC reads: (TSC
/// ticks for all of them, RSP before each int). The TSC under TCG on some
/// hosts advances in steps (26 ticks on an AMD EPYC host here), so single
/// round trips were quantised to multiples of the step.
macro_rules! round_trips {
    ($vector:expr, $batch:expr) => {{
        let (start, end, top): (u64, u64, u64);
        // SAFETY: the vector's gate is a bench stub (or the x86-interrupt handler), which
        // restores every register (the loop counter included) and returns with iretq; RAX and
        // RDX are declared clobbered.
        unsafe {
            core::arch::asm!(
                "lfence",
                "rdtsc",
                "shl rdx, 32",
                "or rax, rdx",
                "mov {start}, rax",
                "mov {top}, rsp",
                "2:",
                "int {v}",
                "dec {count}",
                "jnz 2b",
                "lfence",
                "rdtsc",
                "shl rdx, 32",
                "or rax, rdx",
                "mov {end}, rax",
                v = const $vector,
                count = inout(reg) $batch => _,
                start = out(reg) start,
                end = out(reg) end,
                top = out(reg) top,
                out("rax") _,
                out("rdx") _,
            )
        };
        (end - start, top)
    }};
}

/// Round trips per TSC read in the flat variants.
pub const KERNEL_BATCH: u64 = 16;

fn round_trips(vector: u8, batch: u64) -> (u64, u64) {
    let batch = batch.max(1);
    match vector {
        FLOOR_VECTOR => round_trips!(FLOOR_VECTOR, batch),
        X86_INTERRUPT_VECTOR => round_trips!(X86_INTERRUPT_VECTOR, batch),
        BY_VALUE_VECTOR => round_trips!(BY_VALUE_VECTOR, batch),
        BY_REFERENCE_VECTOR => round_trips!(BY_REFERENCE_VECTOR, batch),
        EXTENDED_VECTOR => round_trips!(EXTENDED_VECTOR, batch),
        EXTENDED_PKS_VECTOR => round_trips!(EXTENDED_PKS_VECTOR, batch),
        _ => round_trips!(NESTED_VECTOR, batch),
    }
}

/// `batch` round trips of size-series row `row` (vector `SIZE_VECTORS +
/// row`), each with `reserve` bytes left free above the CPU frame (what an
/// `above` row's state needs; 0 for the others, the same instructions):
/// (TSC ticks for all, RSP before each reservation).
fn size_round_trips(row: usize, batch: u64, reserve: u64) -> (u64, u64) {
    macro_rules! rows {
        ($($row:literal),+) => {
            match row {
                $($row => {
                    let (start, end, top): (u64, u64, u64);
                    // SAFETY: as in `round_trips!` (a size stub restores every register, then
                    // iretq); RSP drops by `reserve` around the `int` and comes back, so frame and
                    // state lie in this loop's own stack below the old RSP.
                    unsafe {
                        core::arch::asm!(
                            "lfence",
                            "rdtsc",
                            "shl rdx, 32",
                            "or rax, rdx",
                            "mov {start}, rax",
                            "mov {top}, rsp",
                            "2:",
                            "sub rsp, {reserve}",
                            "int {v}",
                            "add rsp, {reserve}",
                            "dec {count}",
                            "jnz 2b",
                            "lfence",
                            "rdtsc",
                            "shl rdx, 32",
                            "or rax, rdx",
                            "mov {end}, rax",
                            v = const SIZE_VECTORS + $row,
                            reserve = in(reg) reserve,
                            count = inout(reg) batch.max(1) => _,
                            start = out(reg) start,
                            end = out(reg) end,
                            top = out(reg) top,
                            out("rax") _,
                            out("rdx") _,
                        )
                    };
                    (end - start, top)
                })+
                _ => unreachable!("size row {row}"),
            }
        };
    }
    rows!(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19)
}

const _: () = assert!(SIZE_ROWS == 20, "size_round_trips lists 20 rows");

/// Sample storage: one CPU, used only by this mode, one variant at a time.
struct Samples(UnsafeCell<[u64; extregs_cmdline::MAX_BENCH_ITERATIONS as usize]>);
// SAFETY: see above.
unsafe impl Sync for Samples {}
static SAMPLES: Samples =
    Samples(UnsafeCell::new([0; extregs_cmdline::MAX_BENCH_ITERATIONS as usize]));

/// Times `iterations` round trips on `vector` after a warm-up; returns the
/// summary and the stack bytes from the RSP before `int` to RSP inside the
/// handler (None when no handler body ran).
fn measure(vector: u8, iterations: usize) -> (Summary, Option<u64>) {
    measure_with(iterations, |batch| round_trips(vector, batch))
}

/// As [`measure`], for any round trip: `round_trips(batch)` gives (ticks,
/// RSP before).
fn measure_with(
    iterations: usize,
    mut round_trips: impl FnMut(u64) -> (u64, u64),
) -> (Summary, Option<u64>) {
    for _ in 0..(iterations.min(10_000) as u64 / KERNEL_BATCH).max(1) {
        round_trips(KERNEL_BATCH);
    }
    // SAFETY: only this function touches the samples, and never reentrantly.
    let samples = unsafe { &mut *SAMPLES.0.get() };
    HANDLER_RSP.store(0, Ordering::SeqCst);
    let mut stack = None;
    let batches = (iterations / KERNEL_BATCH as usize).max(1);
    for sample in samples.iter_mut().take(batches) {
        let (ticks, top) = round_trips(KERNEL_BATCH);
        *sample = ticks;
        let rsp = HANDLER_RSP.swap(0, Ordering::SeqCst);
        if rsp != 0 {
            stack = Some(top - rsp);
        }
    }
    (extregs_bench::summarize(&mut samples[..batches], KERNEL_BATCH), stack)
}

fn print_row(name: &str, iterations: usize, measured: Result<(Summary, Option<u64>), &str>) {
    print_row_with(format_args!("{name}"), format_args!(""), iterations, measured);
}

/// [`print_row`] with `extra` JSON fields (`,"key":value…`) before the rest.
fn print_row_with(
    name: core::fmt::Arguments<'_>,
    extra: core::fmt::Arguments<'_>,
    iterations: usize,
    measured: Result<(Summary, Option<u64>), &str>,
) {
    match measured {
        Ok((summary, stack)) => println!(
            "BENCH {{\"name\":\"{name}\"{extra},\"iterations\":{iterations},\"min\":{:.2},\"median\":{:.2},\"p99\":{:.2},\"iqr\":{:.2},\"stack_bytes\":{}}}",
            summary.min,
            summary.median,
            summary.p99,
            summary.iqr,
            // The floor has no handler: the CPU's frame is all it uses.
            stack.unwrap_or(40)
        ),
        Err(why) => {
            println!("BENCH {{\"name\":\"{name}\"{extra},\"iterations\":0,\"why\":\"{why}\"}}")
        }
    }
}

/// The size series: the state at 8..128 bytes in each placement, all on
/// the memory-cell platform, `above` rows with the state's bytes left free
/// above the CPU frame (the other rows run the same loop with 0).
fn measure_sizes(iterations: usize) {
    for (placement_index, placement) in Placement::ALL.into_iter().enumerate() {
        for (size_index, bytes) in EXTENSION_SIZES.into_iter().enumerate() {
            let row = placement_index * EXTENSION_SIZES.len() + size_index;
            let reserve = extregs_bench::above_reserve(placement, bytes);
            let measured = measure_with(iterations, |batch| size_round_trips(row, batch, reserve));
            print_row_with(
                format_args!("size-{}-{bytes}", placement.name()),
                format_args!(",\"extension_bytes\":{bytes},\"placement\":\"{}\"", placement.name()),
                iterations,
                Ok(measured),
            );
        }
    }
}

/// Stops the yield partner.
static PARTNER_STOP: AtomicBool = AtomicBool::new(false);
/// init's RSP as the partner last found it switched out.
static INIT_SWITCHED_OUT_SP: AtomicU64 = AtomicU64::new(0);

/// The other half of a yield round trip: yields straight back, with the
/// default PKRS (arg 0) or with pkey 2 granted (arg 1).
fn yield_partner(other_pkrs: usize) {
    if other_pkrs != 0 {
        sched::pks_set_readwrite(2);
    }
    while !PARTNER_STOP.load(Ordering::Relaxed) {
        INIT_SWITCHED_OUT_SP.store(sched::init_switched_out_stack_pointer(), Ordering::Relaxed);
        sched::yield_now();
    }
}

/// `batch` yield round trips (init -> partner -> init) timed by one pair
/// of TSC reads: (ticks, RSP before the first yield).
fn yield_round_trips(batch: u64) -> (u64, u64) {
    let top: u64;
    // SAFETY: reads RSP.
    unsafe { core::arch::asm!("mov {}, rsp", out(reg) top, options(nomem, nostack)) };
    // SAFETY: LFENCE and RDTSC have no side effects.
    let start = unsafe {
        core::arch::x86_64::_mm_lfence();
        core::arch::x86_64::_rdtsc()
    };
    for _ in 0..batch {
        sched::yield_now();
    }
    // SAFETY: as above.
    let end = unsafe {
        core::arch::x86_64::_mm_lfence();
        core::arch::x86_64::_rdtsc()
    };
    (end - start, top)
}

/// The price of per-task PKRS: a yield round trip between two tasks with
/// the same PKRS (the cache skips every WRMSR), then with different ones
/// (a WRMSR at each of the two switches). Stack: what a switched-out task
/// keeps below its caller's RSP.
fn measure_yields(iterations: usize) {
    let mut wrmsrs = [0u64; 2];
    for (index, (name, other_pkrs)) in
        [("yield", 0), ("yield+pkrs-switch", 1)].into_iter().enumerate()
    {
        if other_pkrs != 0 && !pks::enabled() {
            print_row(name, iterations, Err("this CPU has no PKS"));
            continue;
        }
        PARTNER_STOP.store(false, Ordering::Relaxed);
        let Ok(partner) = sched::spawn(format_args!("bench-yield"), yield_partner, other_pkrs)
        else {
            print_row(name, iterations, Err("no free task slot"));
            continue;
        };
        // Warm-up (and the partner's first run, which sets its PKRS).
        for _ in 0..(iterations.min(10_000) as u64 / KERNEL_BATCH).max(1) {
            yield_round_trips(KERNEL_BATCH);
        }
        // SAFETY: only this mode touches the samples, one variant at a time.
        let samples = unsafe { &mut *SAMPLES.0.get() };
        let batches = (iterations / KERNEL_BATCH as usize).max(1);
        let wrmsrs_before = pks::wrmsr_count();
        let mut stack = None;
        for sample in samples.iter_mut().take(batches) {
            let (ticks, top) = yield_round_trips(KERNEL_BATCH);
            *sample = ticks;
            stack = Some(top - INIT_SWITCHED_OUT_SP.load(Ordering::Relaxed));
        }
        wrmsrs[index] = pks::wrmsr_count() - wrmsrs_before;
        PARTNER_STOP.store(true, Ordering::Relaxed);
        sched::yield_now();
        sched::wait(partner);
        let summary = extregs_bench::summarize(&mut samples[..batches], KERNEL_BATCH);
        print_row(name, iterations, Ok((summary, stack)));
    }
    if pks::enabled() {
        let round_trips = (iterations / KERNEL_BATCH as usize).max(1) as u64 * KERNEL_BATCH;
        println!(
            "extregs: bench: WRMSRs to PKRS: {} for {round_trips} yield round trips, {} for {round_trips} yield+pkrs-switch",
            wrmsrs[0], wrmsrs[1]
        );
    }
}

/// The SYSCALL round trip of a user task (SYSCALL -> entry -> generic entry
/// -> SYSRETQ), with LSTAR on each design's entry in turn: `syscall-by-value`
/// and `syscall-extended` run the same bench handlers as the `int` rows
/// (user frames take the generic entry's user path), `syscall` is the
/// kernel's real path (entry checks, table, SYSRET decision). The user
/// program times batches of [`programs::BENCH_SYSCALL_BATCH`] with RDTSC.
fn measure_syscalls(iterations: usize) -> bool {
    use crate::user::{self, programs};
    use x86_64::registers::model_specific::LStar;
    let (by_value, extended) = extregs_bench::syscall_entry_addresses();
    let real = extregs_entry_asm::syscall_entry_address();
    let max_batches = (user::BENCH_BUFFER_PAGES * 4096 / 8) as usize;
    let batches = (iterations / programs::BENCH_SYSCALL_BATCH as usize).clamp(1, max_batches);
    let mut ok = true;
    for (name, entry) in
        [("syscall-by-value", by_value), ("syscall-extended", extended), ("syscall", real)]
    {
        let buffer = user::bench_buffer();
        HANDLER_RSP.store(0, Ordering::SeqCst);
        LStar::write(x86_64::VirtAddr::new(entry));
        let spawned = user::spawn(
            format_args!("bench-syscall"),
            programs::BENCH_SYSCALLS,
            batches as u64,
            buffer,
        );
        let Ok(handle) = spawned else {
            LStar::write(x86_64::VirtAddr::new(real));
            print_row(name, iterations, Err("could not spawn the user task"));
            ok = false;
            continue;
        };
        let status = sched::wait(handle);
        LStar::write(x86_64::VirtAddr::new(real));
        if status != 0 {
            print_row(name, iterations, Err("the user task failed"));
            ok = false;
            continue;
        }
        // SAFETY: only this mode touches the samples, one variant at a time.
        let samples = unsafe { &mut *SAMPLES.0.get() };
        for (index, sample) in samples.iter_mut().take(batches).enumerate() {
            let mut bytes = [0u8; 8];
            if uaccess::copy_from_user(&mut bytes, buffer + 8 * index as u64).is_err() {
                ok = false;
            }
            *sample = u64::from_le_bytes(bytes);
        }
        // The handlers note RSP; the frame starts at the task's stack top.
        let top = crate::sched::task::stack_range(handle.slot()).end;
        let rsp = HANDLER_RSP.swap(0, Ordering::SeqCst);
        let stack = (rsp != 0).then(|| top - rsp);
        let summary =
            extregs_bench::summarize(&mut samples[..batches], programs::BENCH_SYSCALL_BATCH);
        print_row(name, batches * programs::BENCH_SYSCALL_BATCH as usize, Ok((summary, stack)));
    }
    ok
}

/// `mode=bench`.
pub fn run(iterations: u64) -> bool {
    let iterations = iterations as usize;
    let mut gates = [(0u8, 0u64); 7 + SIZE_ROWS];
    gates[..7].copy_from_slice(&[
        (FLOOR_VECTOR, Stub::Floor.address()),
        (X86_INTERRUPT_VECTOR, x86_interrupt_handler as *const () as u64),
        (BY_VALUE_VECTOR, Stub::ByValue.address()),
        (BY_REFERENCE_VECTOR, Stub::ByReference.address()),
        (EXTENDED_VECTOR, Stub::Extended.address()),
        (EXTENDED_PKS_VECTOR, Stub::ExtendedPks.address()),
        (NESTED_VECTOR, Stub::ExtendedNested.address()),
    ]);
    for (placement_index, placement) in Placement::ALL.into_iter().enumerate() {
        for (size_index, bytes) in EXTENSION_SIZES.into_iter().enumerate() {
            let row = placement_index * EXTENSION_SIZES.len() + size_index;
            let stub = extregs_bench::size_stub(placement, bytes).expect("a stub per size");
            gates[7 + row] = (SIZE_VECTORS + row as u8, stub);
        }
    }
    idt::load_with_extra_gates(&gates);
    println!(
        "extregs: bench: {iterations} round trips per variant after a warm-up (int $vector, {KERNEL_BATCH} per TSC read; nesting: 1 per read)"
    );
    println!(
        "BENCH_BUILD {{\"profile\":\"{}\",\"opt_level\":\"{}\",\"debug_assertions\":{}}}",
        env!("EXTREGS_BUILD_PROFILE"),
        env!("EXTREGS_BUILD_OPT_LEVEL"),
        cfg!(debug_assertions)
    );
    for (name, vector) in [
        ("floor", FLOOR_VECTOR),
        ("x86-interrupt", X86_INTERRUPT_VECTOR),
        ("by-value", BY_VALUE_VECTOR),
        ("by-reference", BY_REFERENCE_VECTOR),
        ("extended", EXTENDED_VECTOR),
    ] {
        print_row(name, iterations, Ok(measure(vector, iterations)));
    }
    if pks::enabled() {
        // SAFETY: PKS is on; the default keeps key 0 read/write.
        // (Interrupted with the default: the cache saves both WRMSRs.)
        unsafe { pks::update_pkrs(pks::PKRS_DEFAULT) };
        let before = pks::wrmsr_count();
        let hit = measure(EXTENDED_PKS_VECTOR, iterations);
        let hit_wrmsrs = pks::wrmsr_count() - before;
        print_row("extended+pks-hit", iterations, Ok(hit));
        // Interrupted with another value: one WRMSR in, one out.
        let other = pks::with_key_rights(pks::PKRS_DEFAULT, 1, pks::KeyRights::ReadWrite);
        // SAFETY: as above; key 0 stays read/write.
        unsafe { pks::write_pkrs(other) };
        let before = pks::wrmsr_count();
        let write = measure(EXTENDED_PKS_VECTOR, iterations);
        let write_wrmsrs = pks::wrmsr_count() - before;
        // SAFETY: as above.
        unsafe { pks::write_pkrs(pks::PKRS_DEFAULT) };
        print_row("extended+pks-write", iterations, Ok(write));
        println!("extregs: bench: WRMSRs to PKRS: {hit_wrmsrs} for pks-hit, {write_wrmsrs} for pks-write (warm-up included)");
    } else {
        print_row("extended+pks-hit", iterations, Err("this CPU has no PKS"));
        print_row("extended+pks-write", iterations, Err("this CPU has no PKS"));
    }
    measure_yields(iterations);
    let syscalls_ok = measure_syscalls(iterations);
    measure_sizes(iterations);
    for depth in [1u64, 2, 4, 8] {
        let mut samples_done = 0;
        let nest_iterations = iterations.min(20_000);
        // SAFETY: as in measure.
        let samples = unsafe { &mut *SAMPLES.0.get() };
        let mut deepest = 0;
        for sample in samples.iter_mut().take(nest_iterations) {
            NEST_LEFT.store(depth - 1, Ordering::SeqCst);
            HANDLER_RSP.store(0, Ordering::SeqCst);
            let (ticks, top) = round_trips(NESTED_VECTOR, 1);
            *sample = ticks;
            deepest = top - HANDLER_RSP.load(Ordering::SeqCst);
            samples_done += 1;
        }
        let summary = extregs_bench::summarize(&mut samples[..samples_done], 1);
        println!(
            "BENCH_NEST {{\"depth\":{depth},\"iterations\":{samples_done},\"min\":{:.2},\"median\":{:.2},\"p99\":{:.2},\"iqr\":{:.2},\"stack_bytes\":{deepest}}}",
            summary.min, summary.median, summary.p99, summary.iqr
        );
    }
    idt::init();
    result::emit(syscalls_ok, format_args!(",\"iterations\":{iterations}"));
    syscalls_ok
}
