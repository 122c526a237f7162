//! `mode=fuzz seed=S iterations=N max-depth=D`: the nested-interrupt fuzzer.
//!
//! Each iteration a seeded PRNG (`rand_xoshiro`) writes an *event program*:
//! one [`Level`] per nesting depth, each with an event kind, a random value
//! for all 15 GPRs, a random PKRS for the interrupted context, and whether
//! the handler edits its frame (a GPR, or the saved PKRS through
//! `pks_update_saved`). Level 0 is raised from the mode's own context; the
//! handler of level d raises level d+1 from inside itself, so frames really
//! nest: on the kernel stack, and on the NMI IST stack below an NMI from
//! kernel mode.
//!
//! Every event is raised by a *trampoline* (assembly below) that loads the
//! level's 15 GPRs, executes the event at a known address (`site`) and, when
//! the handler lets it continue at `resume`, stores the 15 GPRs back. So the
//! handler can check the interrupted GPRs exactly, and the interrupted level
//! can check what came back after IRET.
//!
//! Every frame is checked ([`validate`]); the interrupted level re-checks
//! its GPRs and PKRS after return. The first violation prints show_regs, the
//! seed, iteration, event number and the event path from the outermost
//! level, a `RESULT` with `"ok":false`, and exits with failure.
//!
//! Asynchronous events (LAPIC timer, self-IPI) are armed before the
//! trampoline, which then spins in a loop with IF set until the handler moves
//! `ip` to `resume`; the loop counts down a memory counter, so an event that
//! never comes falls out of it and is reported instead of hanging. A self-NMI
//! is sent by the trampoline itself with a store to the ICR, so two GPRs of
//! that level carry the ICR address and value (x2APIC: the MSR operands).
//! Inside an NMI only synchronous events are raised (IF must stay clear and
//! NMIs are blocked); there the handler may also send a self-NMI before it
//! returns, which the entry must *latch* and the outer NMI then repeats (the
//! stub's latch below an NMI from kernel mode, the second one in
//! `crate::dispatch::paranoid_entry` below an NMI from ring 3).
//!
//! A `preempt` level is a timer IRQ whose handler wakes the fuzz partner
//! task and asks for a reschedule: the IRQ's exit switches to the partner,
//! which raises the rest of the program from its own stack and parks
//! again. The preempted level's frame and extension wait on the first
//! task's stack meanwhile; after the switch back, the exit restores the
//! PKRS that frame saved (with the handler's edits), which the level checks
//! after return like every other.
//!
//! One program in four runs level 0 in ring 3 ([`raise_from_user_mode`]):
//! a user task loads the GPRs and raises a SYSCALL, int3, ud2, a user #PF, a
//! timer IRQ or self-IPI (asked for by a SYSCALL, arriving after SYSRET), or
//! a real NMI it sets off itself with an `out` to the 8259
//! (`apic::arm_pic_nmi`; the 8259's acknowledgement in [`handle`] tells it
//! from the storm's). Below an NMI from ring 3 the frames stay on the task
//! stack.

mod check;
mod program;
mod raise;
mod report;

use crate::arch::apic::{self, SELF_IPI_VECTOR, TIMER_VECTOR};
use crate::arch::irqflags;
use crate::arch::memory;
use crate::arch::pks::{self, KeyRights, PksFault, PKRS_DEFAULT};
use crate::arch::{exit, gdt};
use crate::debug::{coverage, oops, result, show_regs};
use crate::entry::hooks;
use crate::entry::{fault, irq, nmi};
use crate::linux;
use crate::sched;
use crate::user;
use check::*;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use extregs_cmdline::FuzzSettings;
use extregs_regs::{ExtendedPtRegs, PtRegs, GENERIC_PTREGS_SIZE, NO_ERROR_CODE};
use program::*;
use raise::*;
use rand_core::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use report::*;
use x86_64::instructions::interrupts::without_interrupts;

use crate::modes::trampolines::{
    extregs_fuzz_spins, trampoline, FUZZ_PAGE_ADDRESS, SOFT_INT_VECTOR,
};
use extregs_cmdline::FuzzKind as Kind;

const FUZZ_PKEY: u8 = 1;
const FUZZ_PAGE_FILL: u64 = 0xf022_0f0d_dba1_1001;
const MAX_LEVELS: usize = extregs_cmdline::MAX_FUZZ_DEPTH as usize;

const PF_PRESENT: u64 = 1 << 0;
const PF_PROTECTION_KEY: u64 = 1 << 5;

/// Spins of an asynchronous trampoline's wait loop before it gives up (the
/// event never came). Seconds of TCG time: a self-IPI is pending before the
/// loop starts, but the timer's expiry is a QEMU host timer, which a busy
/// host can delay by many milliseconds (2,000,000 spins were too few with
/// two QEMUs on two cores).
const ASYNC_SPINS: u32 = 1_000_000_000;

static ACTIVE: AtomicBool = AtomicBool::new(false);
/// Levels whose handler is running (so the next event is for this level).
static DEPTH: AtomicUsize = AtomicUsize::new(0);
/// Bit d: level d's event was handled (its handler ran to the end).
static HANDLED: AtomicU32 = AtomicU32::new(0);
/// Bit d: level d (an NMI) saw the repeat of a latched NMI.
static REPEATED: AtomicU32 = AtomicU32::new(0);
/// Where each level's PtRegs was (for the nesting checks).
static FRAME_ADDRESS: [AtomicU64; MAX_LEVELS] = [const { AtomicU64::new(0) }; MAX_LEVELS];
static FRAMES: AtomicU64 = AtomicU64::new(0);
static KIND_COUNTS: [AtomicU64; ALL_KINDS] = [const { AtomicU64::new(0) }; ALL_KINDS];
/// The ring-3 levels' kinds, counted apart (`user_<kind>` in RESULT).
static USER_KIND_COUNTS: [AtomicU64; ALL_KINDS] = [const { AtomicU64::new(0) }; ALL_KINDS];

/// Event labels for the coverage pictures: a kind raised in the kernel
/// (index `kind`), or in ring 3 (`ALL_KINDS + kind`, named `user_<kind>`).
const LABELS: usize = 2 * ALL_KINDS;
/// What an event interrupted: the fuzzer's task (0), user mode (1), or
/// the handler of the level below it (2 + that level's label).
const CONTEXTS: usize = 2 + LABELS;
/// Frames per event label and depth (`kind_depth` in FUZZ and RESULT).
static DEPTH_COUNTS: [[AtomicU64; MAX_LEVELS]; LABELS] =
    [const { [const { AtomicU64::new(0) }; MAX_LEVELS] }; LABELS];
/// Frames per event label and interrupted context (`contexts`).
static CONTEXT_COUNTS: [[AtomicU64; CONTEXTS]; LABELS] =
    [const { [const { AtomicU64::new(0) }; CONTEXTS] }; LABELS];

/// Foreign NMIs that landed in user mode.
static FOREIGN_USER_NMIS: AtomicU64 = AtomicU64::new(0);
static LATCHED_NMIS: AtomicU64 = AtomicU64::new(0);
static MAX_DEPTH_REACHED: AtomicUsize = AtomicUsize::new(0);
static DIGEST: AtomicU64 = AtomicU64::new(FNV_OFFSET);
static SEED: AtomicU64 = AtomicU64::new(0);
static ITERATION: AtomicU64 = AtomicU64::new(0);
static EVENT_NUMBER: AtomicU64 = AtomicU64::new(0);

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Folds `value` into the trace digest (FNV-1a over its bytes).
fn digest(value: u64) {
    let mut hash = DIGEST.load(Ordering::Relaxed);
    for byte in value.to_le_bytes() {
        hash = (hash ^ u64::from(byte)).wrapping_mul(FNV_PRIME);
    }
    DIGEST.store(hash, Ordering::Relaxed);
}

/// `mode=fuzz`.
pub fn run(settings: FuzzSettings) -> bool {
    match sched::spawn(format_args!("fuzz-partner"), partner, 0) {
        Ok(handle) => {
            PARTNER.call_once(|| handle);
            // Let it park.
            sched::yield_now();
        }
        Err(why) => panic!("spawning the fuzz partner task: {why:?}"),
    }
    if pks::enabled() {
        memory::map_pkey_page_at(
            FUZZ_PKEY,
            FUZZ_PAGE_FILL,
            x86_64::VirtAddr::new(FUZZ_PAGE_ADDRESS),
        );
        pks::register_fault_handler(FUZZ_PKEY, pks_fault);
    }
    SEED.store(settings.seed, Ordering::Relaxed);
    let max_depth = settings.max_depth as usize;
    let batch = settings.seed_count > 1;
    if batch {
        // The parser made sure seed + seed_count fits.
        print!("extregs: fuzz: seeds={}..{}", settings.seed, settings.seed + settings.seed_count);
    } else {
        print!("extregs: fuzz: seed={}", settings.seed);
    }
    println!(
        " iterations={} max-depth={} (pks={}, {} mode)",
        settings.iterations,
        max_depth,
        pks::enabled(),
        apic::current_mode().name()
    );
    // Before any fault is switched on: the probe's NMIs are the kernel's.
    match without_interrupts(apic::probe_pic_nmi) {
        Ok(()) => USER_NMI_AVAILABLE.store(true, Ordering::Relaxed),
        Err(why) => println!(
            "extregs: fuzz: ring-3 levels raise no NMI here ({why}): a ring-3 NMI level becomes an int3"
        ),
    }
    if let Some(injected) = settings.inject {
        if let Err(why) = fault::activate(injected) {
            println!("extregs: error: inject={}: {why}", fault::name(injected));
            result::emit(false, format_args!(",\"error\":\"{why}\""));
            return false;
        }
        println!(
            "extregs: fuzz: injecting fault {} (the fuzzer must catch it)",
            fault::name(injected)
        );
    }
    let model_errors_before = sched::counts().model_errors;
    if settings.foreign_timer_hz > 0 {
        println!(
            "extregs: fuzz: foreign timer at {} Hz (PIT through the 8259 on LINT0)",
            settings.foreign_timer_hz
        );
        apic::start_foreign_timer(settings.foreign_timer_hz);
    }
    let _ = user::fuzz_page();
    let mut totals = SeedSummary::default();
    // Each seed's window of foreign events and checks starts where the
    // previous one ended, so the FUZZ lines add up to the boot's.
    let mut window = Window::now();
    hooks::with_event_hook(event_hook, || {
        user::syscall::with_syscall_hook(event_hook, || {
            for offset in 0..settings.seed_count {
                let seed = settings.seed + offset;
                let summary = run_seed(seed, settings.iterations, max_depth, &mut window);
                if batch {
                    if summary.frame_errors + summary.model_errors > 0 {
                        // Name this seed: check_frame printed what it found.
                        report_and_die(
                            "frame_check",
                            0,
                            format_args!(
                                "{} frames failed the entry checks, {} switches the models",
                                summary.frame_errors, summary.model_errors
                            ),
                        );
                    }
                    print!("FUZZ {{");
                    summary.print_fields(Some(seed), true);
                    println!("}}");
                }
                totals.add(&summary);
            }
        })
    });
    if settings.foreign_timer_hz > 0 {
        apic::stop_foreign_timer();
    }
    if let Some(partner) = PARTNER.get() {
        PARTNER_STOP.store(true, Ordering::SeqCst);
        without_interrupts(|| {
            sched::unpark_and_resched(*partner);
        });
        sched::wait(*partner);
    }
    let (frames_checked, frame_errors) = result::frame_counts();
    // The preempt events' switches must also have found the RCU and lockdep
    // models right.
    let model_errors = sched::counts().model_errors - model_errors_before;
    if model_errors != 0 {
        println!(
            "extregs: fuzz: {model_errors} context switches found the RCU/lockdep model wrong"
        );
    }
    let ok = frame_errors == 0 && model_errors == 0;
    if batch {
        print!("extregs: fuzz: {} seeds x ", settings.seed_count);
    } else {
        print!("extregs: fuzz: ");
    }
    print!(
        "{} iterations, {} frames validated in {} ms ({} frames/s), max depth {}",
        totals.iterations,
        totals.frames,
        totals.microseconds / 1000,
        totals.frames_per_s(),
        totals.max_depth_reached,
    );
    if batch {
        println!();
    } else {
        println!(", digest {:016x}", totals.digest);
    }
    let entry_points_hit = coverage::hit_count();
    coverage::print_hits();
    println!(
        "extregs: fuzz: {} foreign NMIs and {} foreign IRQs validated; they interrupted {entry_points_hit} distinct instructions of the {}-byte entry text",
        totals.foreign_nmis,
        totals.foreign_irqs,
        coverage::text_bytes()
    );
    print!(
        "RESULT {{\"mode\":\"fuzz\",\"ok\":{ok},\"pks\":{},\"cpus\":{},\"frames_checked\":{frames_checked},\"frame_errors\":{frame_errors}",
        pks::enabled(),
        crate::arch::smp::cpus_online()
    );
    print!(
        ",\"model_errors\":{model_errors},\"entry_points_hit\":{entry_points_hit},\"entry_text_bytes\":{},\"max_depth\":{max_depth},\"user_nmi\":{},\"user_signals\":{}",
        coverage::text_bytes(),
        USER_NMI_AVAILABLE.load(Ordering::Relaxed),
        USER_SIGNALS.load(Ordering::Relaxed)
    );
    if batch {
        print!(",\"seeds\":\"{}..{}\"", settings.seed, settings.seed + settings.seed_count);
    }
    // A single seed's totals are its own summary (with its digest); a batch's
    // add the seeds up (their digests are on their FUZZ lines).
    print!(",");
    totals.print_fields(if batch { None } else { Some(settings.seed) }, false);
    println!("}}");
    ok
}

/// Runs one seed's `iterations` programs from a fresh state: every
/// per-seed counter and the digest start over, and the PRNG is seeded
/// with `seed` alone, so the seed's digest does not depend on the seeds a
/// batch ran before it (each iteration ends with every frame unwound, the
/// PKRS and the lockdep model put back; `raise` checks both).
fn run_seed(seed: u64, iterations: u64, max_depth: usize, window: &mut Window) -> SeedSummary {
    SEED.store(seed, Ordering::Relaxed);
    FRAMES.store(0, Ordering::Relaxed);
    for counter in KIND_COUNTS.iter().chain(USER_KIND_COUNTS.iter()) {
        counter.store(0, Ordering::Relaxed);
    }
    for counter in DEPTH_COUNTS.iter().flatten().chain(CONTEXT_COUNTS.iter().flatten()) {
        counter.store(0, Ordering::Relaxed);
    }
    FOREIGN_NMIS.store(0, Ordering::Relaxed);
    FOREIGN_USER_NMIS.store(0, Ordering::Relaxed);
    LATCHED_NMIS.store(0, Ordering::Relaxed);
    MAX_DEPTH_REACHED.store(0, Ordering::Relaxed);
    DIGEST.store(FNV_OFFSET, Ordering::Relaxed);
    EVENT_NUMBER.store(0, Ordering::Relaxed);
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    // SAFETY: RDTSC has no side effects.
    let start = unsafe { core::arch::x86_64::_rdtsc() };
    for iteration in 0..iterations {
        ITERATION.store(iteration, Ordering::Relaxed);
        // Foreign NMIs may come at any time: while the program is rewritten
        // the hook stands aside (they go to the kernel's NMI handler), so
        // nothing reads it meanwhile.
        ACTIVE.store(false, Ordering::SeqCst);
        // A store is only a release: keep the rewrite below it.
        core::sync::atomic::compiler_fence(Ordering::SeqCst);
        // SAFETY: with ACTIVE clear no handler reads the program, and no fuzz
        // event is outstanding between iterations.
        generate(&mut rng, max_depth, unsafe { &mut *PROGRAM.0.get() });
        HANDLED.store(0, Ordering::SeqCst);
        REPEATED.store(0, Ordering::SeqCst);
        OWN_NMI_IP.store(0, Ordering::SeqCst);
        DEPTH.store(0, Ordering::SeqCst);
        ACTIVE.store(true, Ordering::SeqCst);
        raise(0);
    }
    ACTIVE.store(false, Ordering::SeqCst);
    // SAFETY: as above.
    let cycles = unsafe { core::arch::x86_64::_rdtsc() } - start;
    // The program's own NMIs never reach the kernel's NMI handler (the hook
    // claims them), so every NMI it took was foreign: the ones between this
    // seed's iterations and those since the previous seed ended.
    let (before, after) = (*window, Window::now());
    *window = after;
    SeedSummary {
        iterations,
        frames: FRAMES.load(Ordering::Relaxed),
        microseconds: (cycles * 1000 / apic::tsc_ticks_per_ms()).max(1),
        max_depth_reached: MAX_DEPTH_REACHED.load(Ordering::Relaxed) as u64,
        latched_nmis: LATCHED_NMIS.load(Ordering::Relaxed),
        digest: DIGEST.load(Ordering::Relaxed),
        kinds: core::array::from_fn(|kind| KIND_COUNTS[kind].load(Ordering::Relaxed)),
        user_kinds: core::array::from_fn(|kind| USER_KIND_COUNTS[kind].load(Ordering::Relaxed)),
        depths: core::array::from_fn(|label| {
            core::array::from_fn(|depth| DEPTH_COUNTS[label][depth].load(Ordering::Relaxed))
        }),
        contexts: core::array::from_fn(|label| {
            core::array::from_fn(|context| CONTEXT_COUNTS[label][context].load(Ordering::Relaxed))
        }),
        foreign_nmis: FOREIGN_NMIS.load(Ordering::Relaxed)
            + (after.kernel_nmis - before.kernel_nmis),
        foreign_user_nmis: FOREIGN_USER_NMIS.load(Ordering::Relaxed),
        foreign_irqs: after.foreign_irqs - before.foreign_irqs,
        frame_errors: after.frame_errors - before.frame_errors,
        model_errors: after.model_errors - before.model_errors,
        user_nmis_latched: after.user_nmis_latched - before.user_nmis_latched,
    }
}
