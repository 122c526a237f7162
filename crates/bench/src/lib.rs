//! The entry variants `extregs bench` compares, built from the same parts
//! as the real entry path: `calling.S` (PUSH_AND_CLEAR_REGS, POP_REGS) and
//! the `extregs-entry` functions.
//!
//! * `floor`: the CPU frame and `iretq`;
//! * `by-value`: full pt_regs, `irqentry_enter` returns the state (Linux 5.10);
//! * `by-reference`: full pt_regs, the state in the handler's frame passed
//!   by pointer (Weiny V3);
//! * `extended`: the state in the extension below pt_regs, only
//!   `&mut PtRegs` passed (extregs);
//! * `extended_pks`: the same stub for the kernel's PKRS variants;
//! * `extended_nested`: the same stub, for the nesting table.
//!
//! The stubs call `extregs_bench_<variant>_handler(regs)`, which the user
//! of this crate defines with its platform, using [`by_value`],
//! [`by_reference`] and [`extended`] here. Every handler runs the same body
//! ([`handler_body`]): bump a counter and note RSP, so stack use can be
//! measured from inside the handler.

#![no_std]

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use extregs_entry::{
    irqentry_enter, irqentry_enter_by_reference, irqentry_enter_by_value, irqentry_exit,
    irqentry_exit_by_reference, irqentry_exit_by_value, EntryPlatform, IrqentryState,
};
use extregs_regs::{ArchExtRegs, PtRegs};

/// The generated asm-offsets constants.
pub mod asm_offsets {
    include!(concat!(env!("OUT_DIR"), "/asm_offsets.rs"));
}

core::arch::global_asm!(
    include_str!(concat!(env!("OUT_DIR"), "/asm-offsets.S")),
    // The benchmark never injects faults (calling.S asks).
    ".set EXTREGS_FAULT_INJECTION, 0",
    include_str!("../../entry-asm/src/calling.S"),
    include_str!("bench_64.S"),
    options(att_syntax)
);

extern "C" {
    fn extregs_bench_floor();
    fn extregs_bench_by_value();
    fn extregs_bench_by_reference();
    fn extregs_bench_extended();
    fn extregs_bench_extended_pks();
    fn extregs_bench_extended_nested();
}

/// A stub, for an IDT gate or a synthetic frame's jump.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stub {
    Floor,
    ByValue,
    ByReference,
    Extended,
    ExtendedPks,
    ExtendedNested,
}

impl Stub {
    pub fn address(self) -> u64 {
        let stub: unsafe extern "C" fn() = match self {
            Stub::Floor => extregs_bench_floor,
            Stub::ByValue => extregs_bench_by_value,
            Stub::ByReference => extregs_bench_by_reference,
            Stub::Extended => extregs_bench_extended,
            Stub::ExtendedPks => extregs_bench_extended_pks,
            Stub::ExtendedNested => extregs_bench_extended_nested,
        };
        stub as usize as u64
    }
}

/// Handler runs (the body's counter).
pub static COUNTER: AtomicU64 = AtomicU64::new(0);
/// RSP inside the last handler run.
pub static HANDLER_RSP: AtomicU64 = AtomicU64::new(0);

/// The one handler body every variant runs.
#[inline(always)]
pub fn handler_body() {
    let rsp: u64;
    // SAFETY: reads RSP only.
    unsafe {
        core::arch::asm!("mov {}, rsp", out(reg) rsp, options(nomem, nostack, preserves_flags))
    };
    HANDLER_RSP.store(rsp, Ordering::Relaxed);
    COUNTER.fetch_add(1, Ordering::Relaxed);
}

/// The by-value variant's handler.
///
/// # Safety
///
/// `regs` is the frame the `by_value` stub built.
#[inline(always)]
pub unsafe fn by_value<P: EntryPlatform>(regs: &mut PtRegs) {
    // SAFETY: per the function contract.
    let state = unsafe { irqentry_enter_by_value::<P>(regs) };
    handler_body();
    // SAFETY: the same frame and state.
    unsafe { irqentry_exit_by_value::<P>(regs, state) };
}

/// The by-reference variant's handler.
///
/// # Safety
///
/// `regs` is the frame the `by_reference` stub built.
#[inline(always)]
pub unsafe fn by_reference<P: EntryPlatform>(regs: &mut PtRegs) {
    let mut state = IrqentryState::default();
    // SAFETY: per the function contract.
    unsafe { irqentry_enter_by_reference::<P>(regs, &mut state) };
    handler_body();
    // SAFETY: the same frame and state.
    unsafe { irqentry_exit_by_reference::<P>(regs, &state) };
}

/// The extended variant's handler: only `&mut PtRegs`.
///
/// # Safety
///
/// `regs` is the frame an extended stub built (extension below it).
#[inline(always)]
pub unsafe fn extended<P: EntryPlatform>(regs: &mut PtRegs) {
    // SAFETY: per the function contract.
    unsafe { irqentry_enter::<P>(regs) };
    handler_body();
    // SAFETY: the same frame.
    unsafe { irqentry_exit::<P>(regs) };
}

/// A platform whose PKRS is a memory cell (the native harness, and the
/// kernel's variants without PKS): the same work as the kernel's hooks,
/// a cached value compared and written only when it changes, minus the MSR.
pub struct CellPlatform;

static CELL_RCU_WATCHING: AtomicU32 = AtomicU32::new(1);
static CELL_HARDIRQS: AtomicU32 = AtomicU32::new(0);
/// The PKRS "register" and its default.
pub static CELL_PKRS: AtomicU32 = AtomicU32::new(CELL_PKRS_DEFAULT);
pub const CELL_PKRS_DEFAULT: u32 = 0x5555_5554;

impl EntryPlatform for CellPlatform {
    fn rcu_is_watching() -> bool {
        CELL_RCU_WATCHING.load(Ordering::Relaxed) != 0
    }
    fn rcu_irq_enter() {
        CELL_RCU_WATCHING.store(1, Ordering::Relaxed);
    }
    fn rcu_irq_exit() {
        CELL_RCU_WATCHING.store(0, Ordering::Relaxed);
    }
    fn lockdep_hardirqs_enabled() -> bool {
        CELL_HARDIRQS.load(Ordering::Relaxed) != 0
    }
    fn lockdep_set_hardirqs_enabled(enabled: bool) {
        CELL_HARDIRQS.store(u32::from(enabled), Ordering::Relaxed);
    }
    fn arch_enter(arch: &mut ArchExtRegs) {
        let live = CELL_PKRS.load(Ordering::Relaxed);
        arch.pks = live;
        if live != CELL_PKRS_DEFAULT {
            CELL_PKRS.store(CELL_PKRS_DEFAULT, Ordering::Relaxed);
        }
    }
    fn arch_exit(arch: &ArchExtRegs) {
        if CELL_PKRS.load(Ordering::Relaxed) != arch.pks {
            CELL_PKRS.store(arch.pks, Ordering::Relaxed);
        }
    }
    // The preemption check costs what the kernel's does (two loads); the
    // harness never asks for a reschedule, so it never switches.
    fn preempt_count() -> u32 {
        CELL_PREEMPT_COUNT.load(Ordering::Relaxed)
    }
    fn need_resched() -> bool {
        CELL_NEED_RESCHED.load(Ordering::Relaxed) != 0
    }
    fn preempt_schedule_irq() {
        unreachable!("the bench harness never sets need_resched");
    }
    // The harness's frames are kernel frames; the user-mode hooks cost
    // what the kernel's do (one store each) should a row ever use them.
    fn enter_from_user_mode() {
        CELL_RCU_WATCHING.store(1, Ordering::Relaxed);
    }
    fn exit_to_user_mode() {
        CELL_RCU_WATCHING.store(0, Ordering::Relaxed);
    }
    fn exit_to_user_mode_work() -> extregs_entry::ExitToUserWork {
        extregs_entry::ExitToUserWork {
            need_resched: CELL_NEED_RESCHED.load(Ordering::Relaxed) != 0,
            fatal_signal: false,
        }
    }
    fn schedule_before_user_return() {
        unreachable!("the bench harness never sets need_resched");
    }
    fn kill_current_task() -> ! {
        unreachable!("the bench harness never kills");
    }
}

static CELL_PREEMPT_COUNT: AtomicU32 = AtomicU32::new(0);
static CELL_NEED_RESCHED: AtomicU32 = AtomicU32::new(0);

/// The cargo profile this crate (the measured handlers of the native
/// harness) was built with, and its opt-level.
pub const BUILD_PROFILE: &str = env!("EXTREGS_BENCH_BUILD_PROFILE");
pub const BUILD_OPT_LEVEL: &str = env!("EXTREGS_BENCH_BUILD_OPT_LEVEL");

/// Sorted samples reduced to what the report shows, in TSC ticks per round
/// trip (fractional when a sample timed a batch of round trips).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Summary {
    pub min: f64,
    pub median: f64,
    pub p99: f64,
    /// The spread: interquartile range (p75 - p25).
    pub iqr: f64,
}

/// Summarises `samples` (sorts them in place), each the ticks of
/// `round_trips_per_sample` round trips. Empty gives zeros.
pub fn summarize(samples: &mut [u64], round_trips_per_sample: u64) -> Summary {
    if samples.is_empty() {
        return Summary::default();
    }
    samples.sort_unstable();
    let per_trip = round_trips_per_sample.max(1) as f64;
    let at =
        |fraction: f64| samples[((samples.len() - 1) as f64 * fraction) as usize] as f64 / per_trip;
    Summary {
        min: samples[0] as f64 / per_trip,
        median: at(0.5),
        p99: at(0.99),
        iqr: at(0.75) - at(0.25),
    }
}

/// The handlers the stubs call, on the memory-cell platform, for binaries
/// without their own (the runner's native harness). Compiled here, so they
/// get this crate's optimisation like the rest of the measured code.
#[cfg(feature = "cell-handlers")]
mod cell_handlers {
    use super::{by_reference, by_value, extended, CellPlatform};
    use extregs_regs::PtRegs;

    /// # Safety
    ///
    /// Called only by the `by_value` stub, with the frame it built.
    #[no_mangle]
    pub unsafe extern "C" fn extregs_bench_by_value_handler(regs: &mut PtRegs) {
        // SAFETY: per the function contract.
        unsafe { by_value::<CellPlatform>(regs) }
    }

    /// # Safety
    ///
    /// Called only by the `by_reference` stub, with the frame it built.
    #[no_mangle]
    pub unsafe extern "C" fn extregs_bench_by_reference_handler(regs: &mut PtRegs) {
        // SAFETY: per the function contract.
        unsafe { by_reference::<CellPlatform>(regs) }
    }

    /// # Safety
    ///
    /// Called only by the extended stubs, with the frame they built.
    #[no_mangle]
    pub unsafe extern "C" fn extregs_bench_extended_handler(regs: &mut PtRegs) {
        // SAFETY: per the function contract.
        unsafe { extended::<CellPlatform>(regs) }
    }

    /// The kernel's PKRS variant has no host counterpart; the symbol exists
    /// so the stub links, and runs the cell platform if ever entered.
    ///
    /// # Safety
    ///
    /// As [`extregs_bench_extended_handler`].
    #[no_mangle]
    pub unsafe extern "C" fn extregs_bench_extended_pks_handler(regs: &mut PtRegs) {
        // SAFETY: per the function contract.
        unsafe { extended::<CellPlatform>(regs) }
    }

    /// As [`extregs_bench_extended_pks_handler`], for the nesting stub.
    ///
    /// # Safety
    ///
    /// As [`extregs_bench_extended_handler`].
    #[no_mangle]
    pub unsafe extern "C" fn extregs_bench_extended_nested_handler(regs: &mut PtRegs) {
        // SAFETY: per the function contract.
        unsafe { extended::<CellPlatform>(regs) }
    }
}
