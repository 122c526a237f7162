//! Kernel tasks and preemption, on every CPU.
//!
//! * One run queue for all CPUs, with round-robin [`schedule`]: a task that
//!   gives up the CPU while runnable goes to the back, and each CPU takes
//!   the first task its affinity allows ([`spawn_with_affinity`],
//!   [`set_affinity`]; [`spawn`] keeps a task on the boot CPU).
//! * Linux's `on_cpu` rule: a task switched out goes back on the queue only
//!   once the switch has saved its RSP ([`finish_task_switch`], on the next
//!   task's stack), and a wakeup of a task still switching out leaves the
//!   queueing to that switch; a CPU that picks a task whose `on_cpu` is
//!   still set panics rather than run it on a stale RSP.
//! * Wakeups and queued tasks kick an idle CPU the task may run on with a
//!   reschedule IPI; every CPU has its own LAPIC tick, and only the boot
//!   CPU's advances the tick count and wakes sleepers.
//! * [`spawn`], [`exit_current`], [`wait`] (for another task's exit),
//!   [`sleep_ticks`] and [`yield_now`]; the idle task runs when nothing
//!   else can.
//! * The LAPIC periodic timer is the tick ([`start_tick`]). A tick asks for a
//!   reschedule when another task is runnable. The generic entry's
//!   `irqentry_exit` then preempts the interrupted task if its frame had
//!   IF set and its preempt count is 0 (Linux's
//!   `irqentry_exit_cond_resched`, through [`preempt_schedule_irq`]); the
//!   task's frame and extension stay on its own stack until it is picked
//!   again, and the exit resumes with that frame's saved PKRS.
//! * [`preempt_disable`]/[`preempt_enable`]; the enable that drops the count
//!   to 0 preempts when a reschedule is pending.
//! * Per-task PKRS ([`pks_set_readwrite`], [`pks_set_noaccess`]): the
//!   switch installs the next task's value through the per-CPU cache, so a
//!   WRMSR happens only when the value changes.
//!
//! The run queue is behind a spin lock (the scheduler lock: it also orders
//! every task state change against the wakeups that race it) that is only
//! ever taken with interrupts off (an IRQ could otherwise find it held by
//! the code it interrupted); NMI handlers never take it.

pub mod ap;
pub mod idle;
mod pkrs;
mod preempt;
mod runqueue;
mod switch;
pub mod task;
mod tick;
pub mod user_state;

pub use pkrs::{
    current_pkrs, pks_reset_current, pks_set_noaccess, pks_set_readwrite, pks_set_rights,
};
pub use preempt::{
    exit_to_user_mode_work, force_fatal_signal, hardirq_enter, hardirq_exit, kill_current_task,
    need_resched, nmi_enter, nmi_exit, preempt_count, preempt_disable, preempt_enable,
    preempt_schedule_irq, schedule_before_user_return,
};
use runqueue::{allowed_on, run_queue, RunQueue};
pub use switch::{cancel_switch_hold, held_switch_result, hold_switch_out_of};
use switch::{finish_task_switch, kick, make_runnable, schedule, wake, SwitchKind};
pub use tick::{reschedule_ipi, scheduler_tick, start_tick, stop_tick, tick_running, ticks};

use crate::arch::irqflags;
use crate::arch::percpu::{self, PerCpu};
use crate::arch::{apic, pks, smp};
use core::sync::atomic::{compiler_fence, AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use extregs_entry_asm::extregs_context_switch;
use extregs_regs::NR_CPUS;
use extregs_regs::{ExtendedPtRegs, InactiveTaskFrame};
use spin::Mutex;
use task::{TaskName, TaskState, IDLE_SLOT, INIT_SLOT, MAX_TASKS, NO_CPU, TASKS};

/// Scheduler ticks per second.
pub const TICK_HZ: u32 = 250;

/// The running task's slot.
static CURRENT: PerCpu<AtomicUsize> = PerCpu::new(initial_current_slots());

/// Each CPU's running task before it schedules anything: init on the boot
/// CPU, and on each AP its idle task's slot from the very start (an NMI on
/// an AP before `become_ap_idle_task` must not count itself into init's
/// preempt count, which CPU 0 is using).
const fn initial_current_slots() -> [AtomicUsize; NR_CPUS] {
    let mut slots = [const { AtomicUsize::new(INIT_SLOT) }; NR_CPUS];
    let mut cpu = 1;
    while cpu < NR_CPUS {
        slots[cpu] = AtomicUsize::new(task::FIRST_AP_IDLE_SLOT + cpu - 1);
        cpu += 1;
    }
    slots
}
/// The slot a switch in flight is leaving, plus one (0: none): from the
/// moment CURRENT names the next task until that task runs on its own
/// stack, the CPU is still on this one's (an NMI or a single-step trap
/// there is on the stack of the task being left).
static SWITCHING_FROM: PerCpu<AtomicUsize> = PerCpu::new([const { AtomicUsize::new(0) }; NR_CPUS]);

/// What a hard interrupt handler adds to the running task's preempt count
/// while it runs (Linux's `HARDIRQ_OFFSET`): an interrupt nested in it
/// that returns to it with IF set must not preempt.
pub const HARDIRQ_OFFSET: u32 = 1 << 16;
/// What a paranoid entry (NMI, #DB, #MC, #DF) adds on top (Linux's
/// `NMI_OFFSET` with `HARDIRQ_OFFSET`, as `__nmi_enter` does).
pub const NMI_OFFSET: u32 = (1 << 20) + HARDIRQ_OFFSET;
/// The idle task runs with preemption disabled, as Linux's does: it is
/// never preempted at an interrupt's exit, it schedules when it sees a
/// reschedule pending.
const IDLE_PREEMPT_COUNT: u32 = 1;
/// Set by the tick when another task should run; cleared by `schedule`.
static NEED_RESCHED: PerCpu<AtomicBool> = PerCpu::new([const { AtomicBool::new(false) }; NR_CPUS]);
static INITIALISED: AtomicBool = AtomicBool::new(false);
static TICK_RUNNING: AtomicBool = AtomicBool::new(false);
static NEXT_PID: AtomicU64 = AtomicU64::new(2);

static TICKS: AtomicU64 = AtomicU64::new(0);
static CONTEXT_SWITCHES: AtomicU64 = AtomicU64::new(0);
static IRQ_PREEMPTIONS: AtomicU64 = AtomicU64::new(0);
static ENABLE_PREEMPTIONS: AtomicU64 = AtomicU64::new(0);
static USER_PREEMPTIONS: AtomicU64 = AtomicU64::new(0);
static USER_KILLS: AtomicU64 = AtomicU64::new(0);
/// Switches into a task that last ran on another CPU.
static MIGRATIONS: AtomicU64 = AtomicU64::new(0);
/// Context switches and preemptions (a running task switched out at an
/// interrupt's exit, a `preempt_enable` or a return to user mode), per CPU.
static CPU_CONTEXT_SWITCHES: PerCpu<AtomicU64> =
    PerCpu::new([const { AtomicU64::new(0) }; NR_CPUS]);
static CPU_PREEMPTIONS: PerCpu<AtomicU64> = PerCpu::new([const { AtomicU64::new(0) }; NR_CPUS]);
/// Calls of [`schedule`] per CPU (the half-switched-task selftest waits
/// for another CPU's).
static SCHEDULE_CALLS: PerCpu<AtomicU64> = PerCpu::new([const { AtomicU64::new(0) }; NR_CPUS]);
/// Is this CPU's LAPIC timer running as the tick?
static TICK_ARMED: PerCpu<AtomicBool> = PerCpu::new([const { AtomicBool::new(false) }; NR_CPUS]);
/// Switches that found the RCU or lockdep model wrong (RCU not watching,
/// or lockdep believing hardirqs on while the switch runs with IF clear).
static MODEL_ERRORS: AtomicU64 = AtomicU64::new(0);

/// Counts since boot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SchedCounts {
    pub ticks: u64,
    pub context_switches: u64,
    /// Tasks switched out at an interrupt's exit.
    pub irq_preemptions: u64,
    /// Tasks switched out by the `preempt_enable` that ended a
    /// non-preemptible section.
    pub enable_preemptions: u64,
    /// User tasks switched out on their way back to user mode.
    pub user_preemptions: u64,
    /// User tasks killed by a fault nothing handled.
    pub user_kills: u64,
    pub model_errors: u64,
    /// Switches into a task that last ran on another CPU.
    pub migrations: u64,
}

pub fn counts() -> SchedCounts {
    SchedCounts {
        ticks: TICKS.load(Ordering::Relaxed),
        context_switches: CONTEXT_SWITCHES.load(Ordering::Relaxed),
        irq_preemptions: IRQ_PREEMPTIONS.load(Ordering::Relaxed),
        enable_preemptions: ENABLE_PREEMPTIONS.load(Ordering::Relaxed),
        user_preemptions: USER_PREEMPTIONS.load(Ordering::Relaxed),
        user_kills: USER_KILLS.load(Ordering::Relaxed),
        model_errors: MODEL_ERRORS.load(Ordering::Relaxed),
        migrations: MIGRATIONS.load(Ordering::Relaxed),
    }
}

/// CPU `cpu`'s context switches and preemptions since boot.
pub fn cpu_counts(cpu: usize) -> (u64, u64) {
    (
        CPU_CONTEXT_SWITCHES.of(cpu).load(Ordering::Relaxed),
        CPU_PREEMPTIONS.of(cpu).load(Ordering::Relaxed),
    )
}

/// Makes the boot flow task 1 (`init`) and creates the idle task; unmaps
/// every task stack's guard page. Call once, after paging and PKS are set
/// up, with interrupts off.
pub fn init() {
    for slot in 0..MAX_TASKS {
        if slot != INIT_SLOT {
            crate::arch::memory::unmap_guard_page(x86_64::VirtAddr::new(
                task::guard_range(slot).start,
            ));
        }
    }
    let default_pkrs = if pks::enabled() { pks::PKRS_DEFAULT } else { 0 };
    let init = &TASKS[INIT_SLOT];
    init.id.store(1, Ordering::Relaxed);
    init.set_name(task::format_name(format_args!("init")));
    init.pkrs.store(default_pkrs, Ordering::Relaxed);
    init.switched_out_pkrs.store(default_pkrs, Ordering::Relaxed);
    // init runs on the bootloader's stack: the mapped pages around the
    // current RSP (the bootloader leaves an unmapped guard page below).
    let stack =
        crate::arch::memory::mapped_range_around(x86_64::VirtAddr::new(current_stack_pointer()));
    init.stack_bottom.store(stack.start, Ordering::Relaxed);
    init.stack_top.store(stack.end, Ordering::Relaxed);
    // SAFETY: boot, interrupts off; init never enters user mode, so its
    // stack top is only a well-defined value for TSS.RSP0.
    unsafe { crate::arch::gdt::set_kernel_stack_top(stack.end) };
    init.set_state(TaskState::Running);
    init.allowed_cpus.store(task::BOOT_CPU_ONLY, Ordering::Relaxed);
    init.last_cpu.store(0, Ordering::Relaxed);
    init.on_cpu.store(true, Ordering::Relaxed);
    CURRENT.this().store(INIT_SLOT, Ordering::Relaxed);
    let idle = &TASKS[IDLE_SLOT];
    prepare_new_task(
        IDLE_SLOT,
        0,
        task::format_name(format_args!("swapper/0")),
        idle_task,
        0,
        task::BOOT_CPU_ONLY,
    );
    idle.set_state(TaskState::Runnable);
    INITIALISED.store(true, Ordering::Release);
}

fn current_stack_pointer() -> u64 {
    let rsp: u64;
    // SAFETY: reads RSP; no memory is touched.
    unsafe { core::arch::asm!("mov {}, rsp", out(reg) rsp, options(nomem, nostack)) };
    rsp
}

/// The running task.
fn current_task() -> &'static task::Task {
    &TASKS[current_slot()]
}

/// The running task's slot, read so that a migration can't split the
/// read: finding this CPU's number and then its `CURRENT` are two steps,
/// and a task preempted between them and resumed on another CPU would read
/// the first CPU's task. With interrupts off no switch can come between;
/// once read, the slot stays right wherever the task goes.
fn current_slot_of_this_task() -> usize {
    if !x86_64::instructions::interrupts::are_enabled() {
        return CURRENT.this().load(Ordering::Relaxed);
    }
    x86_64::instructions::interrupts::without_interrupts(|| CURRENT.this().load(Ordering::Relaxed))
}

/// What dumps print about the running task.
#[derive(Clone, Copy)]
pub struct CurrentTask {
    pub pid: u32,
    pub name: TaskName,
}

/// The running task, for show_regs (safe from any handler: atomics only).
pub fn current() -> CurrentTask {
    let task = current_task();
    CurrentTask { pid: task.id.load(Ordering::Relaxed), name: task.name() }
}

/// The PID of the running task.
pub fn current_pid() -> u32 {
    current_task().id.load(Ordering::Relaxed)
}

/// Is `address` on the running task's kernel stack? (True before
/// [`init`]: there is only the boot flow.)
pub fn on_current_stack(address: u64) -> bool {
    if !INITIALISED.load(Ordering::Acquire) || current_task().stack().contains(&address) {
        return true;
    }
    // A switch in flight: the CPU may still be on the stack being left.
    match SWITCHING_FROM.this().load(Ordering::Relaxed) {
        0 => false,
        from => TASKS[from - 1].stack().contains(&address),
    }
}

/// The running task's stack, and the one a switch in flight is leaving
/// (for unwinders); the first is None before `init` ran.
pub fn current_stacks() -> [Option<core::ops::Range<u64>>; 2] {
    if !INITIALISED.load(Ordering::Acquire) {
        return [None, None];
    }
    let leaving = match SWITCHING_FROM.this().load(Ordering::Relaxed) {
        0 => None,
        from => Some(TASKS[from - 1].stack()),
    };
    [Some(current_task().stack()), leaving]
}

/// The task whose stack guard page holds `address`: (PID, name).
pub fn task_of_guard_page(address: u64) -> Option<(u32, TaskName)> {
    let slot = task::guard_slot_of(address)?;
    let task = &TASKS[slot];
    Some((task.id.load(Ordering::Relaxed), task.name()))
}

/// A spawned task, to wait for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskHandle {
    slot: usize,
    pid: u32,
}

impl TaskHandle {
    pub fn pid(self) -> u32 {
        self.pid
    }

    /// The task's slot (its kernel stack is `task::stack_range(slot)`).
    pub fn slot(self) -> usize {
        self.slot
    }
}

/// Why a task could not be spawned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpawnError {
    /// Every slot is taken.
    NoFreeSlot,
}

/// Writes a new task's first frame: its stack starts as if
/// `context_switch` had switched it out right before `task_start`, below
/// the room of the frame every entry from user mode builds.
///
/// ```text
///   +--------------------+  <- stack top (16-byte aligned) = TSS.RSP0
///   | PtRegs             |   task_pt_regs: user frames (unused by kernel
///   | extension          |   tasks)
///   +--------------------+  <- still 16-byte aligned (176 bytes)
///   | 0                  |   task_start's return address: none (unwinders stop)
///   | task_start         |   InactiveTaskFrame::ret_addr
///   | bp bx r12..r15 = 0 |
///   +--------------------+  <- thread.sp
/// ```
///
/// After the switch's `ret`, RSP is 8 below a 16-byte boundary, as at the
/// entry of any function that was called.
fn prepare_new_task(
    slot: usize,
    pid: u32,
    name: TaskName,
    entry: fn(usize),
    arg: usize,
    allowed_cpus: u32,
) {
    let task = &TASKS[slot];
    task.allowed_cpus.store(allowed_cpus, Ordering::Relaxed);
    task.last_cpu.store(NO_CPU, Ordering::Relaxed);
    task.on_cpu.store(false, Ordering::Relaxed);
    task.user_ports.store(0, Ordering::Relaxed);
    task.ran_on.store(0, Ordering::Relaxed);
    let stack = task::stack_range(slot);
    task.id.store(pid, Ordering::Relaxed);
    task.set_name(name);
    let default_pkrs = if pks::enabled() { pks::PKRS_DEFAULT } else { 0 };
    task.pkrs.store(default_pkrs, Ordering::Relaxed);
    task.switched_out_pkrs.store(default_pkrs, Ordering::Relaxed);
    let preempt_count = if slot == IDLE_SLOT { IDLE_PREEMPT_COUNT } else { 0 };
    task.preempt_count.store(preempt_count, Ordering::Relaxed);
    task.waiter.store(0, Ordering::Relaxed);
    task.wakeup_pending.store(false, Ordering::Relaxed);
    task.entry.store(entry as *mut (), Ordering::Relaxed);
    task.arg.store(arg, Ordering::Relaxed);
    task.stack_bottom.store(stack.start, Ordering::Relaxed);
    task.stack_top.store(stack.end, Ordering::Relaxed);
    user_state::reset(slot);
    task.fatal_signal.store(0, Ordering::Relaxed);
    task.exit_status.store(0, Ordering::Relaxed);
    // The top ExtendedPtRegs of the stack is task_pt_regs' frame, where
    // every entry from user mode lands: the first kernel frames go below.
    let user_frame = core::mem::size_of::<ExtendedPtRegs>();
    let frame_offset = user_frame + 8 + core::mem::size_of::<InactiveTaskFrame>();
    let frame_pointer = task::stack_pointer_below_top(slot, frame_offset);
    let top_word = task::stack_pointer_below_top(slot, user_frame + 8);
    let frame =
        InactiveTaskFrame { ret_addr: task_start as *const () as u64, ..Default::default() };
    // SAFETY: the slot is free (or idle's, at init): nothing runs on its stack or points into it.
    // Both pointers come from the stacks' static (provenance over the whole array), lie inside
    // this slot's stack near its top and are 8-byte aligned (the top is page aligned).
    unsafe {
        frame_pointer.cast::<InactiveTaskFrame>().write(frame);
        top_word.cast::<u64>().write(0);
        (*task.thread.get()).sp = frame_pointer as u64;
    }
}

/// Creates a task running `entry(arg)` with the default PKRS and puts it on
/// the run queue; it runs on the boot CPU only. `name` is cut to 15 bytes.
pub fn spawn(
    name: core::fmt::Arguments<'_>,
    entry: fn(usize),
    arg: usize,
) -> Result<TaskHandle, SpawnError> {
    spawn_task(name, entry, arg, [0, 0, 0], task::BOOT_CPU_ONLY)
}

/// [`spawn`], for a task that may run on the CPUs of `allowed_cpus` (bit
/// `k`: CPU `k`; `task::ALL_CPUS` for any).
///
/// # Panics
///
/// If `allowed_cpus` names no online CPU.
pub fn spawn_with_affinity(
    name: core::fmt::Arguments<'_>,
    entry: fn(usize),
    arg: usize,
    allowed_cpus: u32,
) -> Result<TaskHandle, SpawnError> {
    spawn_task(name, entry, arg, [0, 0, 0], allowed_cpus)
}

/// [`spawn_with_affinity`], also recording the two first user-mode
/// arguments of a user task (`user::spawn`), which its start code reads
/// with [`current_user_args`].
pub fn spawn_with_user_args(
    name: core::fmt::Arguments<'_>,
    entry: fn(usize),
    arg: usize,
    user_args: [u64; 3],
    allowed_cpus: u32,
) -> Result<TaskHandle, SpawnError> {
    spawn_task(name, entry, arg, user_args, allowed_cpus)
}

fn spawn_task(
    name: core::fmt::Arguments<'_>,
    entry: fn(usize),
    arg: usize,
    user_args: [u64; 3],
    allowed_cpus: u32,
) -> Result<TaskHandle, SpawnError> {
    assert!(INITIALISED.load(Ordering::Acquire), "sched::init ran");
    let online = smp::online_mask();
    assert!(allowed_cpus & online != 0, "affinity {allowed_cpus:#x} names no online CPU");
    let name = task::format_name(name);
    let handle = with_irqs_off(|| {
        let mut queue = run_queue();
        let slot = (INIT_SLOT + 1..task::FIRST_AP_IDLE_SLOT)
            .find(|&slot| TASKS[slot].state() == TaskState::Free)
            .ok_or(SpawnError::NoFreeSlot)?;
        let pid = NEXT_PID.fetch_add(1, Ordering::Relaxed) as u32;
        prepare_new_task(slot, pid, name, entry, arg, allowed_cpus & task::ALL_CPUS);
        for (stored, value) in TASKS[slot].user_args.iter().zip(user_args) {
            stored.store(value, Ordering::Relaxed);
        }
        TASKS[slot].set_state(TaskState::Runnable);
        queue.push(slot);
        Ok(TaskHandle { slot, pid })
    })?;
    with_irqs_off(|| kick(handle.slot));
    Ok(handle)
}

/// The first code a new task runs (the `ret` of its first switch lands
/// here, interrupts off).
extern "C" fn task_start() -> ! {
    finish_task_switch();
    assert_on_own_stack("task_start");
    // The idle task keeps IF clear: it sets it only in `sti; hlt`.
    if !task::is_idle_slot(CURRENT.this().load(Ordering::Relaxed)) {
        irqflags::local_irq_enable();
    }
    let task = current_task();
    let entry = task.entry.load(Ordering::Relaxed);
    let arg = task.arg.load(Ordering::Relaxed);
    // SAFETY: prepare_new_task stored a `fn(usize)` cast to a pointer (fn
    // and data pointers have the same size and representation on x86_64),
    // and nothing else writes the field while the task lives.
    let entry = unsafe { core::mem::transmute::<*mut (), fn(usize)>(entry) };
    entry(arg);
    exit_current()
}

/// Ends the running task: it becomes a zombie until [`wait`] reaps it, and
/// the task waiting for it (if any) is woken.
pub fn exit_current() -> ! {
    exit_current_with_status(0)
}

/// [`exit_current`] with the status [`wait`] returns (an exit code, or
/// 128 + the signal of a killed task, as a shell reports it).
pub fn exit_current_with_status(status: i32) -> ! {
    irqflags::local_irq_disable();
    // A task with an address space of its own leaves it (back on the
    // kernel's page table): whoever reaps the task frees it.
    // SAFETY: 0 is the kernel's own table, always alive.
    unsafe { user_state::set_page_table(CURRENT.this().load(Ordering::Relaxed), 0) };
    let slot = CURRENT.this().load(Ordering::Relaxed);
    assert!(slot != INIT_SLOT && slot != IDLE_SLOT, "init and idle never exit");
    let task = &TASKS[slot];
    // Under the scheduler lock: a `wait` on another CPU either sees the
    // zombie or has registered itself as the waiter by now.
    let waiter = {
        let _queue = run_queue();
        task.exit_status.store(status, Ordering::Relaxed);
        task.set_state(TaskState::Zombie);
        task.waiter.swap(0, Ordering::Relaxed)
    };
    if waiter != 0 {
        wake(waiter - 1);
    }
    schedule(SwitchKind::Blocking);
    unreachable!("a zombie task was switched back in");
}

/// Frees what an exited task held beyond its slot, installed by the layer
/// that gave it (the Linux personality: the address space); called by
/// [`wait`] with the zombie's slot, interrupts off, before the slot is
/// free again.
static REAPER: crate::arch::hook_slot::HookSlot<fn(usize)> =
    crate::arch::hook_slot::HookSlot::empty();

/// Installs the reaper (see [`REAPER`]).
pub fn install_reaper(reap: fn(usize)) {
    REAPER.set(reap);
}

/// Blocks until the task exits, then frees its slot; returns its exit
/// status (see [`exit_current_with_status`]).
pub fn wait(handle: TaskHandle) -> i32 {
    wait_and_cpus(handle).0
}

/// [`wait`], also returning every CPU the task ran on (bit `k`: CPU `k`),
/// read before its slot is freed.
pub fn wait_and_cpus(handle: TaskHandle) -> (i32, u32) {
    let task = &TASKS[handle.slot];
    loop {
        let reaped = with_irqs_off(|| {
            let queue = run_queue();
            assert_eq!(task.id.load(Ordering::Relaxed), handle.pid, "task waited for twice");
            if task.state() == TaskState::Zombie {
                drop(queue);
                // Its CPU may still be switching away from it, on its
                // stack: the slot (and the stack) is free only once that
                // switch has finished (Linux's `on_cpu`).
                while task.on_cpu.load(Ordering::Acquire) {
                    core::hint::spin_loop();
                }
                // What the task held beyond its slot (a Linux process's
                // address space) goes before the slot can be reused.
                if let Some(reap) = REAPER.get() {
                    reap(handle.slot);
                }
                // Everything read of the slot first: once it is free, a
                // spawn on another CPU may fill it.
                let _queue = run_queue();
                let status = task.exit_status.load(Ordering::Relaxed);
                let ran_on = task.ran_on.load(Ordering::Relaxed);
                task.id.store(0, Ordering::Relaxed);
                task.set_state(TaskState::Free);
                return Some((status, ran_on));
            }
            let waiter = CURRENT.this().load(Ordering::Relaxed) + 1;
            let previous = task.waiter.swap(waiter, Ordering::Relaxed);
            assert!(previous == 0 || previous == waiter, "a second task waits for the same task");
            current_task().set_state(TaskState::Waiting);
            drop(queue);
            schedule(SwitchKind::Blocking);
            None
        });
        if let Some(ended) = reaped {
            return ended;
        }
    }
}

/// Sleeps for `ticks` scheduler ticks (the tick must be running).
pub fn sleep_ticks(ticks: u64) {
    assert!(TICK_RUNNING.load(Ordering::Relaxed), "sleep_ticks needs the tick (start_tick)");
    with_irqs_off(|| {
        {
            let _queue = run_queue();
            let task = current_task();
            task.wake_tick
                .store(TICKS.load(Ordering::Relaxed).saturating_add(ticks), Ordering::Relaxed);
            task.set_state(TaskState::Sleeping);
        }
        schedule(SwitchKind::Blocking);
    });
}

/// Blocks the running task until [`unpark`] (no tick needed).
pub fn park() {
    with_irqs_off(|| {
        {
            // Under the scheduler lock, against an unpark on another CPU.
            let _queue = run_queue();
            let task = current_task();
            if task.wakeup_pending.swap(false, Ordering::Relaxed) {
                return;
            }
            task.set_state(TaskState::Parked);
        }
        schedule(SwitchKind::Blocking);
    });
}

/// Makes a [`park`]ed task runnable again and asks for a reschedule, so
/// the exit of the interrupt that calls this (from a handler, interrupts
/// off) preempts the interrupted task in its favour.
pub fn unpark_and_resched(handle: TaskHandle) {
    assert!(!x86_64::instructions::interrupts::are_enabled(), "unpark from a handler");
    assert_eq!(TASKS[handle.slot].id.load(Ordering::Relaxed), handle.pid, "unpark of a dead task");
    let task = &TASKS[handle.slot];
    let (queued, work_here) = {
        let mut queue = run_queue();
        let queued = if task.state() == TaskState::Parked {
            make_runnable(&mut queue, handle.slot)
        } else {
            // Not parked yet: its next park returns at once.
            task.wakeup_pending.store(true, Ordering::Relaxed);
            false
        };
        (queued, queue.has_work_for(percpu::this_cpu()))
    };
    if work_here {
        NEED_RESCHED.this().store(true, Ordering::Relaxed);
    }
    if queued {
        kick(handle.slot);
    }
}

/// Gives the CPU to the next runnable task, if any (this one goes to the
/// back of the run queue).
pub fn yield_now() {
    with_irqs_off(|| {
        schedule(SwitchKind::Blocking);
    });
}

/// Opens `port` to `handle`'s user mode (`allowed`), or closes it again:
/// the task's own I/O permission bits (Linux's `ioperm()`), loaded by
/// every switch into it, on whichever CPU. Takes effect at once if the task
/// runs on this CPU, otherwise at its next switch in.
///
/// # Panics
///
/// If `port` is past the bitmap (`gdt::USER_PORTS`), or the task is not
/// alive.
pub fn set_user_port_access(handle: TaskHandle, port: u16, allowed: bool) {
    assert!(port < crate::arch::gdt::USER_PORTS, "port {port:#x} is past the I/O bitmap");
    let task = &TASKS[handle.slot];
    with_irqs_off(|| {
        // Under the scheduler lock, which a reap holds to free the slot:
        // the bits go to this task, never to the next one in its slot.
        let _queue = run_queue();
        assert_eq!(task.id.load(Ordering::Relaxed), handle.pid, "port access of a dead task");
        let bit = 1u64 << port;
        let ports = if allowed {
            task.user_ports.fetch_or(bit, Ordering::Relaxed) | bit
        } else {
            task.user_ports.fetch_and(!bit, Ordering::Relaxed) & !bit
        };
        if CURRENT.this().load(Ordering::Relaxed) == handle.slot {
            crate::arch::gdt::load_user_ports(ports);
        }
    });
}

/// The CPU `handle`'s task last ran on (None before it first ran).
pub fn last_cpu_of(handle: TaskHandle) -> Option<usize> {
    let cpu = TASKS[handle.slot].last_cpu.load(Ordering::Relaxed);
    (cpu != NO_CPU).then_some(cpu as usize)
}

/// [`set_affinity`] of the running task: it yields, and resumes on a CPU
/// of `allowed_cpus`.
pub fn set_current_affinity(allowed_cpus: u32) {
    let slot = current_slot();
    let handle = TaskHandle { slot, pid: TASKS[slot].id.load(Ordering::Relaxed) };
    set_affinity(handle, allowed_cpus);
}

/// Called, in the task being switched away from, for every context switch
/// that finds the lockdep or RCU model wrong (the fuzzer charges it to the
/// task's lane).
static MODEL_ERROR_OBSERVER: crate::arch::hook_slot::HookSlot<fn()> =
    crate::arch::hook_slot::HookSlot::empty();

/// Installs (`Some`) or removes the model-error observer.
pub fn observe_model_errors(observer: Option<fn()>) {
    MODEL_ERROR_OBSERVER.set_or_clear(observer);
}

/// From an interrupt handler (interrupts off): forgets a reschedule this
/// CPU was asked for (a reschedule IPI, or the flag another CPU's `kick`
/// set while this one looked idle), so this interrupt's exit does not
/// switch tasks. For code whose task must switch only at its own points
/// (the fuzzer's lanes, which give the CPU away between iterations).
pub fn forget_reschedule_request() {
    assert!(
        !x86_64::instructions::interrupts::are_enabled(),
        "forget_reschedule_request from a handler"
    );
    NEED_RESCHED.this().store(false, Ordering::Relaxed);
}

/// From an interrupt handler (interrupts off): lets the interrupted task
/// run only on the CPUs of `allowed_cpus`, and asks this interrupt's exit
/// to reschedule, which switches away from the task if this CPU is no
/// longer one of them (its frames wait on its stack; another CPU resumes
/// it). The fuzzer's `migrate` event.
///
/// # Panics
///
/// If interrupts are on, or `allowed_cpus` names no online CPU.
pub fn move_current_at_exit(allowed_cpus: u32) {
    assert!(
        !x86_64::instructions::interrupts::are_enabled(),
        "move_current_at_exit from a handler"
    );
    assert!(
        allowed_cpus & smp::online_mask() != 0,
        "affinity {allowed_cpus:#x} names no online CPU"
    );
    {
        let _queue = run_queue();
        current_task().allowed_cpus.store(allowed_cpus & task::ALL_CPUS, Ordering::Relaxed);
    }
    NEED_RESCHED.this().store(true, Ordering::Relaxed);
}

/// Lets the task run only on the CPUs of `allowed_cpus` (bit `k`: CPU
/// `k`). A task running on a CPU it may no longer use is moved at that
/// CPU's next scheduling point: at once for the running task (it yields),
/// at the next interrupt's exit for a task on another CPU (which is sent a
/// reschedule IPI).
///
/// # Panics
///
/// If `allowed_cpus` names no online CPU, or the task is not alive.
pub fn set_affinity(handle: TaskHandle, allowed_cpus: u32) {
    let online = smp::online_mask();
    assert!(allowed_cpus & online != 0, "affinity {allowed_cpus:#x} names no online CPU");
    let task = &TASKS[handle.slot];
    with_irqs_off(|| {
        {
            let _queue = run_queue();
            assert_eq!(task.id.load(Ordering::Relaxed), handle.pid, "affinity of a dead task");
            task.allowed_cpus.store(allowed_cpus & task::ALL_CPUS, Ordering::Relaxed);
        }
        if CURRENT.this().load(Ordering::Relaxed) == handle.slot {
            schedule(SwitchKind::Blocking);
            return;
        }
        let (on_cpu, running_on) = {
            let _queue = run_queue();
            (task.on_cpu.load(Ordering::Relaxed), task.last_cpu.load(Ordering::Relaxed) as usize)
        };
        if on_cpu && allowed_cpus & (1 << running_on) == 0 {
            NEED_RESCHED.of(running_on).store(true, Ordering::Relaxed);
            apic::send_ipi(crate::arch::gdt::apic_id_of(running_on), apic::RESCHEDULE_VECTOR);
        }
        kick(handle.slot);
    });
}

/// init's saved stack pointer (its `InactiveTaskFrame`), read by a task
/// that runs while init is switched out (the bench's yield partner).
pub fn init_switched_out_stack_pointer() -> u64 {
    // SAFETY: a plain read of an aligned u64 in the TASKS static; only the
    // switch writes it, with interrupts off, and not while the caller runs
    // (init is switched out).
    unsafe { core::ptr::read_volatile(&raw const (*TASKS[INIT_SLOT].thread.get()).sp) }
}

/// [`yield_now`] for assembly callers (the selftests' GPR trampoline).
pub extern "C" fn yield_from_asm() {
    yield_now();
}

/// Runs `body` with interrupts off (and the lockdep model told), then puts
/// IF back as it was (Linux's `local_irq_save`/`local_irq_restore`).
fn with_irqs_off<T>(body: impl FnOnce() -> T) -> T {
    let were_enabled = x86_64::instructions::interrupts::are_enabled();
    if were_enabled {
        irqflags::local_irq_disable();
    }
    let result = body();
    if were_enabled {
        irqflags::local_irq_enable();
    }
    result
}

/// Sets the running task's user FS base (`arch_prctl(ARCH_SET_FS)`): the
/// store and the MSR write happen with interrupts off, as for the GS base.
pub fn set_current_user_fs_base(base: u64) {
    with_irqs_off(|| {
        current_task().user_fs_base.store(base, Ordering::Relaxed);
        x86_64::registers::model_specific::FsBase::write(x86_64::VirtAddr::new(base));
    });
}

/// Sets the running task's user GS base (it takes effect at its next
/// return to user mode). Interrupts may be on: the store and the MSR write
/// happen with them off, so a switch between them can't reload the old one.
pub fn set_current_user_gs_base(base: u64) {
    with_irqs_off(|| {
        current_task().user_gs_base.store(base, Ordering::Relaxed);
        x86_64::registers::model_specific::KernelGsBase::write(x86_64::VirtAddr::new(base));
    });
}

/// A task that runs again must run on its own stack: anything else means
/// a switch restored the wrong stack pointer, and going on would run one
/// task's frames as another's.
fn assert_on_own_stack(place: &str) {
    let rsp = current_stack_pointer();
    let task = current_task();
    if !task.stack().contains(&rsp) {
        panic!(
            "{place}: task {} ({}) resumed with RSP {rsp:#x}, outside its stack {:#x?}",
            task.id.load(Ordering::Relaxed),
            task.name(),
            task.stack()
        );
    }
}

/// The idle task: `sti; hlt` until something is runnable (an interrupt
/// from here finds RCU not watching and records `exit_rcu`; its exit never
/// preempts, as in Linux), then schedule.
fn idle_task(_: usize) {
    loop {
        idle_until_work();
    }
}

/// One round of a CPU's idle task: `sti; hlt` unless a reschedule is due
/// or the run queue holds a task this CPU may run, then schedule.
/// Interrupts off on return.
pub(crate) fn idle_until_work() {
    irqflags::local_irq_disable();
    // A task queued after this look kicks this CPU (it finds it idle) with
    // a reschedule IPI, which the `sti; hlt` takes.
    let work = run_queue().has_work_for(percpu::this_cpu());
    if !work && !NEED_RESCHED.this().load(Ordering::Relaxed) {
        idle::idle_once();
    }
    schedule(SwitchKind::Blocking);
}

/// The running task's user arguments (see [`spawn_with_user_args`]).
pub fn current_user_args() -> [u64; 3] {
    let task = current_task();
    core::array::from_fn(|index| task.user_args[index].load(Ordering::Relaxed))
}

/// The running task's slot (its kernel stack is `task::stack_range(slot)`).
pub fn current_slot() -> usize {
    current_slot_of_this_task()
}
