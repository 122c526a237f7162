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
//! trampoline, which then halts in a loop with IF set until the handler
//! moves `ip` to `resume` (an IRQ that never comes leaves it halted, for the
//! runner's timeout). A self-NMI
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
mod lane;
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
use lane::{lane, Lane, OwnLane, LANES, SHARED};
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

/// Rounds of an asynchronous trampoline's wait loop before it gives up
/// (the event never came): spins of the NMI loop, wake-ups of the halting
/// IRQ loop. Seconds of TCG time: the timer's expiry is a QEMU host timer,
/// which a busy host can delay by many milliseconds (2,000,000 spins were
/// too few with two QEMUs on two cores).
const ASYNC_SPINS: u32 = 1_000_000_000;

/// Event labels for the coverage pictures: a kind raised in the kernel
/// (index `kind`), or in ring 3 (`ALL_KINDS + kind`, named `user_<kind>`).
const LABELS: usize = 2 * ALL_KINDS;
/// What an event interrupted: the fuzzer's task (0), user mode (1), or
/// the handler of the level below it (2 + that level's label).
const CONTEXTS: usize = 2 + LABELS;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// `mode=fuzz`: one lane per online CPU (at most one per seed), each a
/// task on its CPU running seeds from its own state (see [`lane`]).
pub fn run(settings: FuzzSettings) -> bool {
    let cpus = crate::arch::smp::online_cpus().count();
    let lanes = (settings.seed_count.min(cpus as u64)) as usize;
    if pks::enabled() {
        memory::map_pkey_page_at(
            FUZZ_PKEY,
            FUZZ_PAGE_FILL,
            x86_64::VirtAddr::new(FUZZ_PAGE_ADDRESS),
        );
        pks::register_fault_handler(FUZZ_PKEY, pks_fault);
    }
    let max_depth = settings.max_depth as usize;
    let batch = settings.seed_count > 1;
    if batch {
        // The parser made sure seed + seed_count fits.
        print!("extregs: fuzz: seeds={}..{}", settings.seed, settings.seed + settings.seed_count);
    } else {
        print!("extregs: fuzz: seed={}", settings.seed);
    }
    println!(
        " iterations={} max-depth={} (pks={}, {} mode, {lanes} lane{} on {cpus} CPU{})",
        settings.iterations,
        max_depth,
        pks::enabled(),
        apic::current_mode().name(),
        if lanes == 1 { "" } else { "s" },
        if cpus == 1 { "" } else { "s" },
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
    // Each seed's window of foreign events and checks starts where the
    // previous one (on any lane) ended, so the FUZZ lines add up to the
    // boot's.
    let shared = SHARED.call_once(|| lane::Shared {
        settings,
        next_seed_offset: AtomicU64::new(0),
        totals: spin::Mutex::new(SeedSummary::default()),
        window: spin::Mutex::new(Window::now()),
    });
    let mut lane_tasks = [None; extregs_regs::NR_CPUS];
    lane::observe_errors(true);
    hooks::with_event_hook_on_every_cpu(event_hook, || {
        user::syscall::with_syscall_hook_on_every_cpu(event_hook, || {
            for ((index, slot), (cpu, _)) in
                lane_tasks.iter_mut().enumerate().zip(crate::arch::smp::online_cpus()).take(lanes)
            {
                *slot = Some(start_lane(index, cpu));
            }
            for task in lane_tasks.iter().flatten() {
                let status = sched::wait(*task);
                if status != 0 {
                    panic!("fuzz lane task {} ended with status {status}", task.pid());
                }
            }
        })
    });
    lane::observe_errors(false);
    if settings.foreign_timer_hz > 0 {
        apic::stop_foreign_timer();
    }
    for lane in LANES.iter().take(lanes) {
        if let Some(partner) = lane.partner.get() {
            lane.partner_stop.store(true, Ordering::SeqCst);
            without_interrupts(|| {
                sched::unpark_and_resched(*partner);
            });
            sched::wait(*partner);
        }
    }
    let totals = *shared.totals.lock();
    let cross_cpu_nmis = totals.cross_cpu_nmis;
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
    // With several lanes, the seeds' times add up to more than the boot's:
    // frames/s is per lane (what one CPU validates).
    print!(
        "{} iterations, {} frames validated in {} ms ({} frames/s per lane), max depth {}",
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
        "extregs: fuzz: {} foreign NMIs and {} foreign IRQs validated ({cross_cpu_nmis} NMIs sent by the lanes to other CPUs); they interrupted {entry_points_hit} distinct instructions of the {}-byte entry text",
        totals.foreign_nmis,
        totals.foreign_irqs,
        coverage::text_bytes()
    );
    print!(
        "RESULT {{\"mode\":\"fuzz\",\"ok\":{ok},\"pks\":{},\"cpus\":{cpus},\"lanes\":{lanes},\"frames_checked\":{frames_checked},\"frame_errors\":{frame_errors}",
        pks::enabled(),
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
    totals.print_fields(if batch {
        Summary::BatchResult
    } else {
        Summary::OneSeedResult { seed: settings.seed }
    });
    println!("}}");
    ok
}

/// Sets up lane `index` at home on `cpu` (its user page, its partner task,
/// parked) and starts its task.
fn start_lane(index: usize, cpu: usize) -> sched::TaskHandle {
    let lane = &LANES[index];
    lane.index.store(index, Ordering::Relaxed);
    lane.home_cpu.store(cpu, Ordering::Relaxed);
    lane.user_page.store(user::fuzz_page(index), Ordering::Relaxed);
    let home = 1 << cpu;
    let partner =
        match sched::spawn_with_affinity(format_args!("fuzz-partner{index}"), partner, index, home)
        {
            Ok(handle) => handle,
            Err(why) => panic!("spawning a fuzz partner task: {why:?}"),
        };
    // Both bind themselves to the lane first thing (they may run on their
    // CPU before this returns); the partner is known before the lane starts.
    lane.partner.call_once(|| partner);
    match sched::spawn_with_affinity(format_args!("fuzz-lane{index}"), lane::lane_main, index, home)
    {
        Ok(handle) => handle,
        Err(why) => panic!("spawning a fuzz lane task: {why:?}"),
    }
}

/// Runs one seed's `iterations` programs on `lane` from a fresh state:
/// every per-seed counter and the digest start over, and the PRNG is
/// seeded with `seed` alone, so the seed's digest does not depend on the
/// seeds a batch ran before it, nor on the lane or CPU (each iteration
/// ends with every frame unwound, the PKRS and the lockdep model put back;
/// `raise` checks both).
fn run_seed(lane: &Lane, seed: u64, iterations: u64, max_depth: usize) -> SeedSummary {
    lane.reset_for_seed(seed);
    let frame_errors_before = lane.frame_errors.load(Ordering::Relaxed);
    let model_errors_before = lane.model_errors.load(Ordering::Relaxed);
    let cross_cpu_nmis_before = lane.cross_cpu_nmis.load(Ordering::Relaxed);
    let migrations_before = lane.migrations.load(Ordering::Relaxed);
    let several_cpus = crate::arch::smp::cpus_online() > 1;
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let start = tsc_now();
    lane.seed_started_tsc.store(start, Ordering::Relaxed);
    for iteration in 0..iterations {
        lane.iteration.store(iteration, Ordering::Relaxed);
        // Foreign NMIs may come at any time: while the program is rewritten
        // the hook stands aside (they go to the kernel's NMI handler), so
        // nothing reads it meanwhile.
        lane.active.store(false, Ordering::SeqCst);
        // A store is only a release: keep the rewrite below it.
        core::sync::atomic::compiler_fence(Ordering::SeqCst);
        if several_cpus {
            between_iterations(lane);
        }
        // SAFETY: with `active` clear no handler reads the program, and no
        // fuzz event of this lane is outstanding between iterations; only
        // this lane's task writes it.
        generate(&mut rng, max_depth, unsafe { &mut *lane.program.0.get() });
        lane.handled.store(0, Ordering::SeqCst);
        lane.repeated.store(0, Ordering::SeqCst);
        lane.own_nmi_ip.store(0, Ordering::SeqCst);
        lane.depth.store(0, Ordering::SeqCst);
        lane.active.store(true, Ordering::SeqCst);
        raise(0);
    }
    lane.active.store(false, Ordering::SeqCst);
    let microseconds = seed_microseconds(lane, tsc_now());
    // The program's own NMIs never reach the kernel's NMI handler (the hook
    // claims them), so every NMI it took was foreign: the ones between this
    // seed's iterations and those since the previous seed ended.
    let (before, after) = {
        let mut window = SHARED.get().expect("set up").window.lock();
        let before = *window;
        *window = Window::now();
        (before, *window)
    };
    SeedSummary {
        iterations,
        frames: lane.frames.load(Ordering::Relaxed),
        microseconds,
        max_depth_reached: lane.max_depth_reached.load(Ordering::Relaxed) as u64,
        latched_nmis: lane.latched_nmis.load(Ordering::Relaxed),
        digest: lane.digest.load(Ordering::Relaxed),
        kinds: core::array::from_fn(|kind| lane.kind_counts[kind].load(Ordering::Relaxed)),
        user_kinds: core::array::from_fn(|kind| {
            lane.user_kind_counts[kind].load(Ordering::Relaxed)
        }),
        depths: core::array::from_fn(|label| {
            core::array::from_fn(|depth| lane.depth_counts[label][depth].load(Ordering::Relaxed))
        }),
        contexts: core::array::from_fn(|label| {
            core::array::from_fn(|context| {
                lane.context_counts[label][context].load(Ordering::Relaxed)
            })
        }),
        foreign_nmis: lane.foreign_nmis.load(Ordering::Relaxed)
            + (after.kernel_nmis - before.kernel_nmis),
        foreign_user_nmis: lane.foreign_user_nmis.load(Ordering::Relaxed),
        foreign_irqs: after.foreign_irqs - before.foreign_irqs,
        frame_errors: lane.frame_errors.load(Ordering::Relaxed) - frame_errors_before,
        model_errors: lane.model_errors.load(Ordering::Relaxed) - model_errors_before,
        user_nmis_latched: after.user_nmis_latched - before.user_nmis_latched,
        cross_cpu_nmis: lane.cross_cpu_nmis.load(Ordering::Relaxed) - cross_cpu_nmis_before,
        migrations: lane.migrations.load(Ordering::Relaxed) - migrations_before,
    }
}

/// Between two iterations on N CPUs: interrupts on for a moment (another
/// CPU's TLB shootdown may be waiting for this one), the CPU given to any
/// task queued for it (a lane a `migrate` level moved here, a user task),
/// and this lane's task back home if an iteration moved it.
fn between_iterations(lane: &Lane) {
    irqflags::local_irq_enable();
    // Past the STI shadow, so a pending interrupt is taken here.
    x86_64::instructions::nop();
    irqflags::local_irq_disable();
    sched::yield_now();
    if lane.away.swap(false, Ordering::Relaxed) {
        sched::set_current_affinity(1 << lane.home_cpu.load(Ordering::Relaxed));
    }
}
