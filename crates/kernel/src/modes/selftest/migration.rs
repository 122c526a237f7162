//! Selftests of tasks that move between CPUs: a task preempted on one CPU
//! and resumed on another keeps its registers and PKRS, no CPU runs a task
//! that another CPU is still switching out, and a task's I/O permission
//! bitmap is its own. The first two need an AP (on one CPU they print
//! `# SKIP needs 2 CPUs`); the bitmap test runs on one CPU too.

use super::{check, wait_until, Context, Outcome, EVENT_TIMEOUT_TSC};
use crate::arch::irqflags;
use crate::arch::percpu::this_cpu;
use crate::arch::pks::{self, KeyRights};
use crate::sched::{self, TaskHandle};
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

/// The first online AP's CPU number, or the skip on one CPU.
fn first_ap() -> Result<usize, Outcome> {
    super::smp::first_ap().map(|(cpu, _)| cpu)
}

/// The key the migrating task changes (read-only) in its own PKRS.
const MIGRATING_KEY: u8 = 2;

static SPINNING: AtomicBool = AtomicBool::new(false);
/// Ends the migrating task's register spin.
static RELEASE: AtomicBool = AtomicBool::new(false);
static GPRS_INTACT: AtomicBool = AtomicBool::new(false);
static OWN_PKRS: AtomicU32 = AtomicU32::new(0);
/// The live PKRS and CPU after the spin (resumed from an interrupt frame)
/// and after the task-context move back to the AP.
static PKRS_AFTER_IRQ_RESUME: AtomicU32 = AtomicU32::new(0);
static CPU_AFTER_IRQ_RESUME: AtomicU64 = AtomicU64::new(u64::MAX);
static PKRS_AFTER_YIELD_RESUME: AtomicU32 = AtomicU32::new(0);
static CPU_AFTER_YIELD_RESUME: AtomicU64 = AtomicU64::new(u64::MAX);
static START_CPU: AtomicU64 = AtomicU64::new(u64::MAX);
/// The AP the migrating task starts and ends on.
static HOME_AP: AtomicU64 = AtomicU64::new(0);

/// Holds 12 GPRs with patterns until [`RELEASE`]; true when all come back.
/// Every instruction of the loop can be interrupted, and the task moved to
/// another CPU there: the registers then live in its frame on its stack.
fn spin_with_gprs_until_released(seed: u64) -> bool {
    let expected: [u64; 12] =
        core::array::from_fn(|index| seed.rotate_left(7 * index as u32) ^ (index as u64 + 1));
    let mut seen = expected;
    // SAFETY: the loop only reads RELEASE (a static, by its symbol) and
    // compares; every register it names is an input it leaves alone (an
    // interrupt may land anywhere in it and must give them back).
    unsafe {
        core::arch::asm!(
            "2:",
            "pause",
            "cmp byte ptr [rip + {release}], 0",
            "je 2b",
            release = sym RELEASE,
            inout("rax") seen[0],
            inout("rcx") seen[1],
            inout("rdx") seen[2],
            inout("rsi") seen[3],
            inout("rdi") seen[4],
            inout("r8") seen[5],
            inout("r9") seen[6],
            inout("r10") seen[7],
            inout("r11") seen[8],
            inout("r12") seen[9],
            inout("r13") seen[10],
            inout("r14") seen[11],
            options(nostack, readonly)
        );
    }
    seen == expected
}

/// The migrating task: starts on the AP with its own PKRS, spins with its
/// GPRs loaded while the boot CPU takes it away (an IPI preempts it, the
/// boot CPU resumes its frame), then moves itself back to the AP from task
/// context (a yield, whose switch installs its PKRS).
fn migrating_task(_: usize) {
    START_CPU.store(this_cpu() as u64, Ordering::SeqCst);
    if pks::enabled() {
        sched::pks_set_rights(MIGRATING_KEY, KeyRights::ReadOnly);
    }
    OWN_PKRS.store(sched::current_pkrs(), Ordering::SeqCst);
    SPINNING.store(true, Ordering::SeqCst);
    let intact = spin_with_gprs_until_released(0x6d19_7a7e_0000_0000 ^ this_cpu() as u64);
    GPRS_INTACT.store(intact, Ordering::SeqCst);
    CPU_AFTER_IRQ_RESUME.store(this_cpu() as u64, Ordering::SeqCst);
    PKRS_AFTER_IRQ_RESUME.store(pks::read_pkrs(), Ordering::SeqCst);
    let home = HOME_AP.load(Ordering::SeqCst) as usize;
    sched::set_current_affinity(1 << home);
    CPU_AFTER_YIELD_RESUME.store(this_cpu() as u64, Ordering::SeqCst);
    PKRS_AFTER_YIELD_RESUME.store(pks::read_pkrs(), Ordering::SeqCst);
}

/// A task preempted on an AP and resumed on the boot CPU comes back with
/// its 12 spin registers and exactly the PKRS its frame's extension saved;
/// moved back from task context, the switch installs its own PKRS on the
/// AP (not the value of the CPU it left).
pub fn migration_keeps_pkrs_and_gprs(_: &Context) -> Outcome {
    let ap = match first_ap() {
        Ok(ap) => ap,
        Err(skip) => return skip,
    };
    SPINNING.store(false, Ordering::SeqCst);
    RELEASE.store(false, Ordering::SeqCst);
    GPRS_INTACT.store(false, Ordering::SeqCst);
    CPU_AFTER_IRQ_RESUME.store(u64::MAX, Ordering::SeqCst);
    CPU_AFTER_YIELD_RESUME.store(u64::MAX, Ordering::SeqCst);
    HOME_AP.store(ap as u64, Ordering::SeqCst);
    sched::start_tick();
    let handle =
        match sched::spawn_with_affinity(format_args!("migrant"), migrating_task, 0, 1 << ap) {
            Ok(handle) => handle,
            Err(why) => {
                sched::stop_tick();
                crate::println!("# spawning the migrating task: {why:?}");
                return Outcome::Fail;
            }
        };
    let spinning = wait_until(|| SPINNING.load(Ordering::SeqCst), EVENT_TIMEOUT_TSC);
    let moved = spinning && move_to_boot_cpu(handle);
    RELEASE.store(true, Ordering::SeqCst);
    sched::wait(handle);
    sched::stop_tick();
    check!(spinning, "the task never started spinning on CPU {ap}");
    check!(moved, "the task never resumed on CPU 0 after its affinity moved there");
    check!(START_CPU.load(Ordering::SeqCst) == ap as u64, "the task did not start on CPU {ap}");
    check!(GPRS_INTACT.load(Ordering::SeqCst), "a spin register changed across the migration");
    check!(
        CPU_AFTER_IRQ_RESUME.load(Ordering::SeqCst) == 0,
        "the spin ended on CPU {} (expected 0)",
        CPU_AFTER_IRQ_RESUME.load(Ordering::SeqCst)
    );
    check!(
        CPU_AFTER_YIELD_RESUME.load(Ordering::SeqCst) == ap as u64,
        "after moving itself back the task ran on CPU {} (expected {ap})",
        CPU_AFTER_YIELD_RESUME.load(Ordering::SeqCst)
    );
    if pks::enabled() {
        let own = OWN_PKRS.load(Ordering::SeqCst);
        let after_irq = PKRS_AFTER_IRQ_RESUME.load(Ordering::SeqCst);
        let after_yield = PKRS_AFTER_YIELD_RESUME.load(Ordering::SeqCst);
        check!(own != pks::PKRS_DEFAULT, "the task's own PKRS {own:#x} is the default");
        check!(
            after_irq == own,
            "PKRS {after_irq:#x} after the IRQ-frame resume on CPU 0, own {own:#x}"
        );
        check!(
            after_yield == own,
            "PKRS {after_yield:#x} after the task-context resume on CPU {ap}, own {own:#x}"
        );
    }
    Outcome::Pass
}

/// Moves the spinning task to CPU 0 and yields until it has run there
/// (the tick takes CPU 0 back from it); false if it never did.
fn move_to_boot_cpu(handle: TaskHandle) -> bool {
    sched::set_affinity(handle, 1);
    wait_until(
        || {
            sched::yield_now();
            sched::last_cpu_of(handle) == Some(0)
        },
        EVENT_TIMEOUT_TSC,
    )
}

static STOP_YIELDERS: AtomicBool = AtomicBool::new(false);

/// Yields until [`STOP_YIELDERS`].
fn yielder(_: usize) {
    while !STOP_YIELDERS.load(Ordering::SeqCst) {
        sched::yield_now();
    }
}

/// Two CPUs fight over the run queue: a task's switch-out on an AP is
/// held halfway (the switch has not saved its RSP) while the boot CPU,
/// where the task may also run, schedules. The boot CPU must not pick the
/// task then (a scheduler that queued it before the save would let it,
/// and the pick panics on the task's `on_cpu`); afterwards the task runs
/// on, and both tasks end.
pub fn nobody_runs_a_half_switched_task(_: &Context) -> Outcome {
    let ap = match first_ap() {
        Ok(ap) => ap,
        Err(skip) => return skip,
    };
    STOP_YIELDERS.store(false, Ordering::SeqCst);
    let spawned = (
        sched::spawn_with_affinity(format_args!("held"), yielder, 0, 1 << ap),
        sched::spawn_with_affinity(format_args!("partner"), yielder, 1, 1 << ap),
    );
    let (held, partner) = match spawned {
        (Ok(held), Ok(partner)) => (held, partner),
        (held, partner) => {
            STOP_YIELDERS.store(true, Ordering::SeqCst);
            for handle in [held, partner].into_iter().flatten() {
                sched::wait(handle);
            }
            crate::println!("# spawning the yielders failed");
            return Outcome::Fail;
        }
    };
    // Both yield on the AP, so every yield of `held` switches to `partner`.
    // The next switch away from `held` on the AP stops before its RSP is
    // saved until CPU 0 has scheduled; `held` may run on CPU 0 from now on.
    sched::hold_switch_out_of(held, ap, 0);
    sched::set_affinity(held, 1 | 1 << ap);
    // Selftests run with interrupts off: CPU 0 takes the hold's reschedule
    // IPI (and is preempted at its exit) only with them on.
    irqflags::local_irq_enable();
    let result = wait_until(|| sched::held_switch_result().is_some(), EVENT_TIMEOUT_TSC);
    irqflags::local_irq_disable();
    STOP_YIELDERS.store(true, Ordering::SeqCst);
    sched::cancel_switch_hold();
    sched::wait(held);
    sched::wait(partner);
    check!(result, "the held switch never happened");
    check!(
        sched::held_switch_result() == Some(true),
        "CPU 0 did not schedule while the switch on CPU {ap} was held"
    );
    Outcome::Pass
}

/// `in` from this port is harmless: it reads the master 8259's mask.
const OPENED_PORT: u16 = crate::arch::apic::PIC_MASTER_DATA;
/// A kernel user task killed by a #GP (Linux's SIGSEGV), as `wait` says.
const KILLED_BY_SIGSEGV: i32 = 128 + 11;

/// Runs the port-reading user program on `cpu`, its I/O bitmap opening
/// [`OPENED_PORT`] when `opened`; its exit status.
fn port_reader_status(cpu: usize, opened: bool) -> Option<i32> {
    use crate::user::{self, programs};
    // Spawned on the boot CPU, which runs this test and does not switch
    // before `wait`: the port is set before the task can run anywhere.
    let handle = user::spawn_on(
        format_args!("port-read"),
        programs::PORT_READ,
        u64::from(OPENED_PORT),
        0,
        1,
    )
    .ok()?;
    if opened {
        sched::set_user_port_access(handle, OPENED_PORT, true);
    }
    if cpu != 0 {
        sched::set_affinity(handle, 1 << cpu);
    }
    Some(sched::wait(handle))
}

/// The I/O permission bitmap is per task: a port opened for one user task
/// lets it read the port, on an AP, and never opens for the next task on
/// that CPU, for a task on another CPU, or after the task is gone; opened
/// for a task on the boot CPU, it works there too.
pub fn io_bitmap_is_per_task(_: &Context) -> Outcome {
    let ap = first_ap().unwrap_or(0);
    let runs = [
        ("opened, on the AP", ap, true, 0),
        ("not opened, next on the AP", ap, false, KILLED_BY_SIGSEGV),
        ("not opened, on CPU 0", 0, false, KILLED_BY_SIGSEGV),
        ("opened, on CPU 0", 0, true, 0),
        ("not opened, next on CPU 0", 0, false, KILLED_BY_SIGSEGV),
    ];
    for (what, cpu, opened, expected) in runs {
        let status = port_reader_status(cpu, opened);
        check!(
            status == Some(expected),
            "port {OPENED_PORT:#x} {what} (CPU {cpu}): status {status:?}, expected {expected}"
        );
    }
    Outcome::Pass
}
