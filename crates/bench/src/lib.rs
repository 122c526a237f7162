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
use extregs_entry::baseline::{
    irqentry_enter_by_reference, irqentry_enter_by_value, irqentry_exit_by_reference,
    irqentry_exit_by_value, IrqentryState,
};
use extregs_entry::{irqentry_enter, irqentry_exit, EntryPlatform};
use extregs_regs::{ArchExtRegs, PtRegs};

/// The generated asm-offsets constants.
pub mod asm_offsets {
    include!(concat!(env!("OUT_DIR"), "/asm_offsets.rs"));
}

// The host harness: the stubs reached through `int $vector` only.
#[cfg(not(target_os = "none"))]
core::arch::global_asm!(
    include_str!(concat!(env!("OUT_DIR"), "/asm-offsets.S")),
    // The benchmark never injects faults (calling.S asks).
    ".set EXTREGS_FAULT_INJECTION, 0",
    include_str!("../../entry-asm/src/calling.S"),
    include_str!("bench_64.S"),
    options(att_syntax)
);

// The kernel: the same stubs, and the SYSCALL entries.
#[cfg(target_os = "none")]
core::arch::global_asm!(
    include_str!(concat!(env!("OUT_DIR"), "/asm-offsets.S")),
    ".set EXTREGS_FAULT_INJECTION, 0",
    ".set BENCH_SYSCALL_NR, {bench_syscall_nr}",
    include_str!("../../entry-asm/src/calling.S"),
    include_str!("bench_64.S"),
    include_str!("bench_syscall_64.S"),
    bench_syscall_nr = const BENCH_SYSCALL_NR,
    options(att_syntax)
);

/// The syscall number the bench's SYSCALL entries time (any other goes on
/// to `entry_SYSCALL_64`): outside Linux's table.
pub const BENCH_SYSCALL_NR: u64 = 1005;

#[cfg(target_os = "none")]
extern "C" {
    static extregs_bench_syscall_by_value: u8;
    static extregs_bench_syscall_extended: u8;
    static extregs_bench_entry_text_start: u8;
    static extregs_bench_entry_text_end: u8;
}

/// The bench's SYSCALL entries, `[start, end)`: entry code (ring 0 on the
/// user's stack and GS until their SWAPGS), as the kernel's entry text is.
#[cfg(target_os = "none")]
pub fn syscall_entry_text_range() -> core::ops::Range<u64> {
    // Only the symbols' addresses are taken.
    (&raw const extregs_bench_entry_text_start) as u64
        ..(&raw const extregs_bench_entry_text_end) as u64
}

/// The bench's SYSCALL entries (by-value state, extended frame), for
/// MSR_LSTAR during a timed run.
#[cfg(target_os = "none")]
pub fn syscall_entry_addresses() -> (u64, u64) {
    // Only the symbols' addresses are taken.
    (
        (&raw const extregs_bench_syscall_by_value) as u64,
        (&raw const extregs_bench_syscall_extended) as u64,
    )
}

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

/// Where the size series keeps the entry state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// Directly below pt_regs, found with container_of (this design).
    Below,
    /// Above the CPU frame, where FRED puts its event data.
    Above,
    /// Returned by `enter`, handed to `exit` (Linux 5.10).
    ByValue,
    /// In the handler's frame, passed by pointer (Weiny V3).
    ByReference,
}

impl Placement {
    pub const ALL: [Placement; 4] =
        [Placement::Below, Placement::Above, Placement::ByValue, Placement::ByReference];

    /// The JSON's `placement` and the row names' middle part.
    pub fn name(self) -> &'static str {
        match self {
            Placement::Below => "below",
            Placement::Above => "above",
            Placement::ByValue => "by-value",
            Placement::ByReference => "by-reference",
        }
    }
}

/// The extension sizes of the size series, in bytes (the generator's list,
/// so the stubs' frame constants exist for each).
pub const EXTENSION_SIZES: [usize; 5] = [8, 16, 32, 64, 128];

/// Stack a harness leaves free above the CPU frame for a size-series row:
/// the generated reservation for an `above` row, 0 for the others (which
/// run the same loop).
pub fn above_reserve(placement: Placement, bytes: usize) -> u64 {
    if placement != Placement::Above {
        return 0;
    }
    (match bytes {
        8 => asm_offsets::BENCH_ABOVE_RESERVE_8,
        16 => asm_offsets::BENCH_ABOVE_RESERVE_16,
        32 => asm_offsets::BENCH_ABOVE_RESERVE_32,
        64 => asm_offsets::BENCH_ABOVE_RESERVE_64,
        128 => asm_offsets::BENCH_ABOVE_RESERVE_128,
        _ => unreachable!("no size {bytes}"),
    }) as u64
}

/// The generic entry state grown to `WORDS` words: the first word carries
/// what `irqentry_state` carries (exit_rcu, the lockdep flag) and the saved
/// PKRS; the rest stands for what a growing struct adds. Entry writes all
/// of it (a struct initialised as a whole); exit reads the first word.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SizedState<const WORDS: usize> {
    pub words: [u64; WORDS],
}

const SIZED_EXIT_RCU: u64 = 1 << 0;
const SIZED_LOCKDEP: u64 = 1 << 1;
const SIZED_PKRS_SHIFT: u32 = 32;

/// What every placement's entry does: the generic entry's work (RCU,
/// lockdep, the arch hook saving PKRS), into a whole new state.
#[inline(always)]
fn sized_state<P: EntryPlatform, const WORDS: usize>(regs: &PtRegs) -> SizedState<WORDS> {
    let mut first = 0;
    if !regs.user_mode() && !P::rcu_is_watching() {
        P::rcu_irq_enter();
        first |= SIZED_EXIT_RCU;
    }
    if P::lockdep_hardirqs_enabled() {
        first |= SIZED_LOCKDEP;
    }
    P::lockdep_set_hardirqs_enabled(false);
    let mut arch = ArchExtRegs::default();
    P::arch_enter(&mut arch);
    first |= u64::from(arch.pks) << SIZED_PKRS_SHIFT;
    let mut state = SizedState { words: [0; WORDS] };
    state.words[0] = first;
    state
}

/// What every placement's exit does: the same work undone from the state.
#[inline(always)]
fn sized_restore<P: EntryPlatform, const WORDS: usize>(state: &SizedState<WORDS>) {
    let first = state.words[0];
    P::arch_exit(&ArchExtRegs { pks: (first >> SIZED_PKRS_SHIFT) as u32 });
    P::lockdep_set_hardirqs_enabled(first & SIZED_LOCKDEP != 0);
    if first & SIZED_EXIT_RCU != 0 {
        P::rcu_irq_exit();
    }
}

/// Entry with the state at `state` (below, above, by reference). Out of
/// line, as Linux's entry functions (and the real variants here) are.
///
/// # Safety
///
/// `state` is valid for writes of a `SizedState<WORDS>` and aligned.
#[inline(never)]
pub unsafe fn sized_enter_at<P: EntryPlatform, const WORDS: usize>(
    regs: &PtRegs,
    state: *mut SizedState<WORDS>,
) {
    // SAFETY: per the function contract.
    unsafe { state.write(sized_state::<P, WORDS>(regs)) };
}

/// Exit with the state at `state`.
///
/// # Safety
///
/// `state` is what [`sized_enter_at`] wrote, still valid for reads.
#[inline(never)]
pub unsafe fn sized_exit_at<P: EntryPlatform, const WORDS: usize>(state: *const SizedState<WORDS>) {
    // SAFETY: per the function contract.
    sized_restore::<P, WORDS>(unsafe { &*state });
}

/// Entry returning the state by value.
#[inline(never)]
pub fn sized_enter_by_value<P: EntryPlatform, const WORDS: usize>(
    regs: &PtRegs,
) -> SizedState<WORDS> {
    sized_state::<P, WORDS>(regs)
}

/// Exit taking the state by value.
#[inline(never)]
pub fn sized_exit_by_value<P: EntryPlatform, const WORDS: usize>(state: SizedState<WORDS>) {
    sized_restore::<P, WORDS>(&state);
}

/// The size series' handlers (`extregs_bench_size_<placement>_<bytes>_handler`)
/// on the memory-cell platform, for the kernel and the host alike, and the
/// stubs' addresses.
macro_rules! size_series {
    ($($module:ident: $bytes:literal bytes = $words:literal words),+ $(,)?) => {
        $(
            mod $module {
                use super::*;
                const _: () = assert!(core::mem::size_of::<SizedState<$words>>() == $bytes);

                /// # Safety
                ///
                /// Called only by its stub: `regs` is that stub's pt_regs,
                /// with the state's bytes below it (from the stub's frame,
                /// so the pointer may reach them).
                #[export_name = concat!("extregs_bench_size_below_", $bytes, "_handler")]
                pub unsafe extern "C" fn below(regs: *mut PtRegs) {
                    // SAFETY: the stub put the state right below pt_regs; `regs` is its raw
                    // stack pointer (provenance of the whole frame), and nothing else refers
                    // to either while the handler runs.
                    unsafe {
                        let state = regs.cast::<u8>().sub($bytes).cast::<SizedState<$words>>();
                        sized_enter_at::<CellPlatform, $words>(&*regs, state);
                        handler_body();
                        sized_exit_at::<CellPlatform, $words>(state);
                    }
                }

                /// # Safety
                ///
                /// Called only by its stub, from a harness that left the
                /// state's bytes free right above the CPU frame.
                #[export_name = concat!("extregs_bench_size_above_", $bytes, "_handler")]
                pub unsafe extern "C" fn above(regs: *mut PtRegs) {
                    // SAFETY: the harness reserved the state right above the CPU frame (ss
                    // ends pt_regs); `regs` is the stub's raw stack pointer, whose provenance
                    // covers that stack, and nothing else refers to the state meanwhile.
                    unsafe {
                        let state = regs.add(1).cast::<SizedState<$words>>();
                        sized_enter_at::<CellPlatform, $words>(&*regs, state);
                        handler_body();
                        sized_exit_at::<CellPlatform, $words>(state);
                    }
                }

                /// # Safety
                ///
                /// Called only by its stub, with the pt_regs it built.
                #[export_name = concat!("extregs_bench_size_by_value_", $bytes, "_handler")]
                pub unsafe extern "C" fn by_value(regs: &mut PtRegs) {
                    let state = sized_enter_by_value::<CellPlatform, $words>(regs);
                    handler_body();
                    sized_exit_by_value::<CellPlatform, $words>(state);
                }

                /// # Safety
                ///
                /// Called only by its stub, with the pt_regs it built.
                #[export_name = concat!("extregs_bench_size_by_reference_", $bytes, "_handler")]
                pub unsafe extern "C" fn by_reference(regs: &mut PtRegs) {
                    let mut state = core::mem::MaybeUninit::<SizedState<$words>>::uninit();
                    // SAFETY: a local MaybeUninit: valid and aligned for the write, then read
                    // back by exit after enter wrote all of it.
                    unsafe {
                        sized_enter_at::<CellPlatform, $words>(regs, state.as_mut_ptr());
                        handler_body();
                        sized_exit_at::<CellPlatform, $words>(state.as_ptr());
                    }
                }
            }
        )+

        /// The stub of a size-series row.
        pub fn size_stub(placement: Placement, bytes: usize) -> Option<u64> {
            extern "C" {
                $(
                    #[link_name = concat!("extregs_bench_size_below_", $bytes)]
                    fn $module();
                )+
            }
            mod above {
                extern "C" {
                    $(
                        #[link_name = concat!("extregs_bench_size_above_", $bytes)]
                        pub fn $module();
                    )+
                }
            }
            mod by_value {
                extern "C" {
                    $(
                        #[link_name = concat!("extregs_bench_size_by_value_", $bytes)]
                        pub fn $module();
                    )+
                }
            }
            mod by_reference {
                extern "C" {
                    $(
                        #[link_name = concat!("extregs_bench_size_by_reference_", $bytes)]
                        pub fn $module();
                    )+
                }
            }
            let stub: unsafe extern "C" fn() = match (placement, bytes) {
                $(
                    (Placement::Below, $bytes) => $module,
                    (Placement::Above, $bytes) => above::$module,
                    (Placement::ByValue, $bytes) => by_value::$module,
                    (Placement::ByReference, $bytes) => by_reference::$module,
                )+
                _ => return None,
            };
            Some(stub as usize as u64)
        }
    };
}

size_series!(
    size_8: 8 bytes = 1 words,
    size_16: 16 bytes = 2 words,
    size_32: 32 bytes = 4 words,
    size_64: 64 bytes = 8 words,
    size_128: 128 bytes = 16 words,
);

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
            signal_pending: false,
        }
    }
    fn schedule_before_user_return() {
        unreachable!("the bench harness never sets need_resched");
    }
    fn kill_current_task() -> ! {
        unreachable!("the bench harness never kills");
    }
    fn arch_do_signal(_regs: &mut PtRegs) {
        unreachable!("the bench harness never signals");
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

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;

    /// CELL_PKRS is one global cell and the test harness runs tests on
    /// several threads: the tests that set it and read it back hold this,
    /// or one's store lands between the other's store and its check.
    static CELL_PKRS_TESTS: std::sync::Mutex<()> = std::sync::Mutex::new(());

    /// The size series' handlers on a stack of their own: the state lands
    /// exactly where each placement says, whole, and PKRS comes back.
    #[test]
    fn each_placement_keeps_its_state_where_it_says() {
        const WORD: usize = core::mem::size_of::<u64>();
        const REGS_AT: usize = 24;
        let ptregs_words = core::mem::size_of::<PtRegs>() / WORD;
        let _cell = CELL_PKRS_TESTS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut stack = [u64::MAX; 64];
        let base = stack.as_mut_ptr();
        let interrupted_pkrs = 0x1234_5678;
        // SAFETY: `regs` points into `stack` (its provenance), aligned for PtRegs, with 24
        // words below it and 64 - 24 - 21 above: room for every state the handlers write.
        unsafe {
            let regs = base.add(REGS_AT).cast::<PtRegs>();
            regs.write(PtRegs { cs: 0x10, ..PtRegs::default() });
            CELL_PKRS.store(interrupted_pkrs, Ordering::SeqCst);
            size_16::below(regs);
            assert_eq!(CELL_PKRS.load(Ordering::SeqCst), interrupted_pkrs, "PKRS restored");
            size_32::above(regs);
            assert_eq!(CELL_PKRS.load(Ordering::SeqCst), interrupted_pkrs);
        }
        // Below: 2 words right under pt_regs, the first with the saved PKRS.
        assert_eq!(stack[REGS_AT - 2] >> SIZED_PKRS_SHIFT, u64::from(interrupted_pkrs));
        assert_eq!(stack[REGS_AT - 1], 0, "the rest of the state is written too");
        assert_eq!(stack[REGS_AT - 3], u64::MAX, "nothing below the state");
        // Above: 4 words right over ss.
        let above = REGS_AT + ptregs_words;
        assert_eq!(stack[above] >> SIZED_PKRS_SHIFT, u64::from(interrupted_pkrs));
        assert_eq!(stack[above + 1..above + 4], [0; 3]);
        assert_eq!(stack[above + 4], u64::MAX, "nothing above the state");
        CELL_PKRS.store(CELL_PKRS_DEFAULT, Ordering::SeqCst);
    }

    #[test]
    fn by_value_and_by_reference_restore_what_they_saved() {
        let _cell = CELL_PKRS_TESTS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut regs = PtRegs { cs: 0x10, ..PtRegs::default() };
        CELL_PKRS.store(0x0bad_cafe, Ordering::SeqCst);
        // SAFETY: `regs` is a whole PtRegs; these two keep their state in their own frames.
        unsafe {
            size_128::by_value(&mut regs);
            assert_eq!(CELL_PKRS.load(Ordering::SeqCst), 0x0bad_cafe);
            size_64::by_reference(&mut regs);
            assert_eq!(CELL_PKRS.load(Ordering::SeqCst), 0x0bad_cafe);
        }
        CELL_PKRS.store(CELL_PKRS_DEFAULT, Ordering::SeqCst);
    }

    #[test]
    fn every_size_and_placement_has_a_stub() {
        for placement in Placement::ALL {
            for bytes in EXTENSION_SIZES {
                assert!(size_stub(placement, bytes).is_some(), "{placement:?} {bytes}");
            }
        }
        assert_eq!(size_stub(Placement::Below, 24), None);
        assert_eq!(above_reserve(Placement::Below, 128), 0);
        assert_eq!(above_reserve(Placement::Above, 8), 32);
    }
}
