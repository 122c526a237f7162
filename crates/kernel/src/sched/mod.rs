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
pub mod task;
pub mod user_state;

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

/// A FIFO of runnable task slots.
struct RunQueue {
    slots: [u8; MAX_TASKS],
    head: usize,
    len: usize,
}

impl RunQueue {
    const fn new() -> RunQueue {
        RunQueue { slots: [0; MAX_TASKS], head: 0, len: 0 }
    }

    fn push(&mut self, slot: usize) {
        assert!(self.len < MAX_TASKS, "run queue overflow");
        self.slots[(self.head + self.len) % MAX_TASKS] = slot as u8;
        self.len += 1;
    }

    /// The queue position of the first task `cpu` may run.
    fn first_allowed(&self, cpu: usize) -> Option<usize> {
        (0..self.len).find(|&position| {
            let slot = usize::from(self.slots[(self.head + position) % MAX_TASKS]);
            allowed_on(slot, cpu)
        })
    }

    fn has_work_for(&self, cpu: usize) -> bool {
        self.first_allowed(cpu).is_some()
    }

    /// Takes the first task `cpu` may run out of the queue; the tasks
    /// before it keep their order.
    fn take_first_allowed(&mut self, cpu: usize) -> Option<usize> {
        let position = self.first_allowed(cpu)?;
        let slot = usize::from(self.slots[(self.head + position) % MAX_TASKS]);
        for earlier in (0..position).rev() {
            self.slots[(self.head + earlier + 1) % MAX_TASKS] =
                self.slots[(self.head + earlier) % MAX_TASKS];
        }
        self.head = (self.head + 1) % MAX_TASKS;
        self.len -= 1;
        Some(slot)
    }
}

/// May the task in `slot` run on `cpu`?
fn allowed_on(slot: usize, cpu: usize) -> bool {
    TASKS[slot].allowed_cpus.load(Ordering::Relaxed) & (1 << cpu) != 0
}

static RUN_QUEUE: Mutex<RunQueue> = Mutex::new(RunQueue::new());
/// The CPU holding the run-queue lock, plus one (0: none): a CPU that
/// takes it twice would spin on itself for ever, so it panics instead.
static RUN_QUEUE_HOLDER: AtomicUsize = AtomicUsize::new(0);

/// The run-queue lock, held.
struct RunQueueGuard(spin::MutexGuard<'static, RunQueue>);

impl core::ops::Deref for RunQueueGuard {
    type Target = RunQueue;
    fn deref(&self) -> &RunQueue {
        &self.0
    }
}

impl core::ops::DerefMut for RunQueueGuard {
    fn deref_mut(&mut self) -> &mut RunQueue {
        &mut self.0
    }
}

impl Drop for RunQueueGuard {
    fn drop(&mut self) {
        // Before the inner guard unlocks (fields drop after this).
        RUN_QUEUE_HOLDER.store(0, Ordering::Relaxed);
    }
}

/// Takes the run-queue lock (the scheduler lock); interrupts must be off.
fn run_queue() -> RunQueueGuard {
    debug_assert!(!x86_64::instructions::interrupts::are_enabled());
    let me = percpu::this_cpu() + 1;
    assert_ne!(
        RUN_QUEUE_HOLDER.load(Ordering::Relaxed),
        me,
        "the run-queue lock taken twice on one CPU"
    );
    let guard = RUN_QUEUE.lock();
    RUN_QUEUE_HOLDER.store(me, Ordering::Relaxed);
    RunQueueGuard(guard)
}

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
/// If `allowed_cpus` names no CPU.
pub fn spawn_with_affinity(
    name: core::fmt::Arguments<'_>,
    entry: fn(usize),
    arg: usize,
    allowed_cpus: u32,
) -> Result<TaskHandle, SpawnError> {
    spawn_task(name, entry, arg, [0, 0, 0], allowed_cpus)
}

/// [`spawn`], also recording the two first user-mode arguments of a user
/// task (`user::spawn`), which its start code reads with
/// [`current_user_args`].
pub fn spawn_with_user_args(
    name: core::fmt::Arguments<'_>,
    entry: fn(usize),
    arg: usize,
    user_args: [u64; 3],
) -> Result<TaskHandle, SpawnError> {
    spawn_task(name, entry, arg, user_args, task::BOOT_CPU_ONLY)
}

fn spawn_task(
    name: core::fmt::Arguments<'_>,
    entry: fn(usize),
    arg: usize,
    user_args: [u64; 3],
    allowed_cpus: u32,
) -> Result<TaskHandle, SpawnError> {
    assert!(INITIALISED.load(Ordering::Acquire), "sched::init ran");
    assert!(allowed_cpus & task::ALL_CPUS != 0, "a task must be allowed on some CPU");
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
    let task = &TASKS[handle.slot];
    loop {
        let done = with_irqs_off(|| {
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
                task.set_state(TaskState::Free);
                task.id.store(0, Ordering::Relaxed);
                return true;
            }
            let waiter = CURRENT.this().load(Ordering::Relaxed) + 1;
            let previous = task.waiter.swap(waiter, Ordering::Relaxed);
            assert!(previous == 0 || previous == waiter, "a second task waits for the same task");
            current_task().set_state(TaskState::Waiting);
            drop(queue);
            schedule(SwitchKind::Blocking);
            false
        });
        if done {
            return task.exit_status.load(Ordering::Relaxed);
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
    let online = smp::online_cpus().fold(0u32, |mask, (cpu, _)| mask | 1 << cpu);
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
        let running_on = task.last_cpu.load(Ordering::Relaxed) as usize;
        if task.on_cpu.load(Ordering::Acquire) && allowed_cpus & (1 << running_on) == 0 {
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

/// Makes a sleeping or waiting task runnable. Interrupts off.
fn wake(slot: usize) {
    let queued = {
        let mut queue = run_queue();
        matches!(TASKS[slot].state(), TaskState::Sleeping | TaskState::Waiting)
            && make_runnable(&mut queue, slot)
    };
    if queued {
        kick(slot);
    }
}

/// Marks a blocked task runnable and queues it, unless a CPU is still
/// switching away from it: that switch's [`finish_task_switch`] queues it
/// once its RSP is saved (or, if it has not switched yet, its `schedule`
/// finds it runnable and keeps it). True if queued here.
fn make_runnable(queue: &mut RunQueue, slot: usize) -> bool {
    let task = &TASKS[slot];
    task.set_state(TaskState::Runnable);
    if task.on_cpu.load(Ordering::Acquire) {
        return false;
    }
    queue.push(slot);
    true
}

/// A task was queued: sends a reschedule IPI to an idle CPU it may run
/// on (or marks this CPU, if it is idle and allowed). A CPU that is busy
/// takes the task at its next tick or scheduling point. Interrupts off.
fn kick(slot: usize) {
    let this = percpu::this_cpu();
    for (cpu, apic_id) in smp::online_cpus() {
        if !allowed_on(slot, cpu)
            || CURRENT.of(cpu).load(Ordering::Relaxed) != task::idle_slot_of(cpu)
        {
            continue;
        }
        NEED_RESCHED.of(cpu).store(true, Ordering::Relaxed);
        if cpu != this {
            apic::send_ipi(apic_id, apic::RESCHEDULE_VECTOR);
        }
        return;
    }
}

/// Linux's `finish_task_switch`: runs first thing in the task a switch
/// has just switched to, on its own stack, interrupts off. The task left
/// has had its RSP saved by now: its `on_cpu` clears (release order,
/// after that save) and, if it is still runnable, it goes back on the run
/// queue, where another CPU may pick it.
fn finish_task_switch() {
    let from = SWITCHING_FROM.this().swap(0, Ordering::Relaxed);
    assert!(from != 0, "finish_task_switch without a switch in flight");
    let from = from - 1;
    let from_task = &TASKS[from];
    let queued = {
        let mut queue = run_queue();
        from_task.on_cpu.store(false, Ordering::Release);
        let requeue = !task::is_idle_slot(from) && from_task.state() == TaskState::Runnable;
        if requeue {
            queue.push(from);
        }
        requeue
    };
    if queued {
        kick(from);
    }
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

/// Why [`schedule`] runs: the running task blocks or yields, or it is
/// preempted (counted per CPU).
#[derive(Clone, Copy, PartialEq, Eq)]
enum SwitchKind {
    Blocking,
    Preemption,
}

/// Picks the next task and switches to it; returns (true) when this task
/// runs again, possibly on another CPU, or at once (false) when it stays on
/// the CPU. Interrupts must be off.
fn schedule(kind: SwitchKind) -> bool {
    let cpu = percpu::this_cpu();
    let prev = CURRENT.this().load(Ordering::Relaxed);
    let prev_task = &TASKS[prev];
    let prev_is_idle = task::is_idle_slot(prev);
    // Linux's "scheduling while atomic": no switch inside a
    // preempt_disable section, an interrupt handler or an NMI.
    let expected_count = if prev_is_idle { IDLE_PREEMPT_COUNT } else { 0 };
    let count = prev_task.preempt_count.load(Ordering::Relaxed);
    if count != expected_count {
        panic!(
            "scheduling while atomic: task {} ({}) has preempt count {count:#x}",
            prev_task.id.load(Ordering::Relaxed),
            prev_task.name()
        );
    }
    SCHEDULE_CALLS.this().fetch_add(1, Ordering::Relaxed);
    let next = {
        let mut queue = run_queue();
        // A task that was about to block may have been woken already (by
        // another CPU, or an interrupt): it is still runnable. One whose
        // affinity no longer allows this CPU must go.
        let prev_runnable = !prev_is_idle
            && matches!(prev_task.state(), TaskState::Running | TaskState::Runnable)
            && allowed_on(prev, cpu);
        let next = match queue.take_first_allowed(cpu) {
            Some(next) => next,
            None if prev_runnable => prev,
            None => task::idle_slot_of(cpu),
        };
        if next == prev {
            prev_task.set_state(TaskState::Running);
        } else {
            if prev_is_idle || matches!(prev_task.state(), TaskState::Running) {
                // Queued by finish_task_switch once the switch has saved
                // its RSP (never before: another CPU would pick it up).
                prev_task.set_state(TaskState::Runnable);
            }
            claim(next, cpu);
        }
        next
    };
    NEED_RESCHED.this().store(false, Ordering::Relaxed);
    if next == prev {
        return false;
    }
    if kind == SwitchKind::Preemption {
        CPU_PREEMPTIONS.this().fetch_add(1, Ordering::Relaxed);
    }
    switch_to(prev, next);
    true
}

/// This CPU takes `next` (scheduler lock held). A task whose `on_cpu` is
/// still set is being switched out by some CPU that has not saved its RSP
/// yet: running it would resume it on a stale stack pointer.
fn claim(next: usize, cpu: usize) {
    let next_task = &TASKS[next];
    if next_task.on_cpu.load(Ordering::Acquire) {
        panic!(
            "CPU {cpu} picked task {} ({}) while CPU {} has not finished switching it out",
            next_task.id.load(Ordering::Relaxed),
            next_task.name(),
            next_task.last_cpu.load(Ordering::Relaxed)
        );
    }
    next_task.on_cpu.store(true, Ordering::Relaxed);
    next_task.set_state(TaskState::Running);
}

/// A selftest's hold on one switch (see [`hold_switch_out_of`]): the task
/// slot plus one whose next switch-out waits, before its RSP is saved,
/// until another CPU has run `schedule`.
static HOLD_SWITCH_OF: AtomicUsize = AtomicUsize::new(0);
static HOLD_SWITCH_RESULT: AtomicU8 = AtomicU8::new(HOLD_PENDING);
const HOLD_PENDING: u8 = 0;
const HOLD_OTHER_CPU_SCHEDULED: u8 = 1;
const HOLD_TIMED_OUT: u8 = 2;

/// Makes the next switch away from `handle`'s task on CPU `holder_cpu`
/// stop halfway, before the switch saves its RSP, until CPU `other_cpu`
/// has run [`schedule`] (it is sent a reschedule IPI) or a second has
/// passed: the window in which a scheduler that queued the task too early
/// would let `other_cpu` run it. [`held_switch_result`] then says which.
pub fn hold_switch_out_of(handle: TaskHandle, holder_cpu: usize, other_cpu: usize) {
    HOLD_HOLDER_CPU.store(holder_cpu, Ordering::Relaxed);
    HOLD_OTHER_CPU.store(other_cpu, Ordering::Relaxed);
    HOLD_SWITCH_RESULT.store(HOLD_PENDING, Ordering::Relaxed);
    HOLD_SWITCH_OF.store(handle.slot + 1, Ordering::Release);
}
static HOLD_HOLDER_CPU: AtomicUsize = AtomicUsize::new(0);
static HOLD_OTHER_CPU: AtomicUsize = AtomicUsize::new(0);

/// Drops a hold that has not happened (so it can't catch a later task in
/// the same slot).
pub fn cancel_switch_hold() {
    HOLD_SWITCH_OF.store(0, Ordering::Release);
}

/// What the held switch saw: `Some(true)` if the other CPU scheduled
/// while the switch was held, `Some(false)` if it timed out, None if the
/// switch has not happened.
pub fn held_switch_result() -> Option<bool> {
    match HOLD_SWITCH_RESULT.load(Ordering::Acquire) {
        HOLD_OTHER_CPU_SCHEDULED => Some(true),
        HOLD_TIMED_OUT => Some(false),
        _ => None,
    }
}

/// The hold itself, in `switch_to` between the state changes and the
/// context switch.
fn hold_switch_if_asked(prev: usize) {
    if HOLD_SWITCH_OF.load(Ordering::Acquire) != prev + 1
        || HOLD_HOLDER_CPU.load(Ordering::Relaxed) != percpu::this_cpu()
    {
        return;
    }
    HOLD_SWITCH_OF.store(0, Ordering::Relaxed);
    let other = HOLD_OTHER_CPU.load(Ordering::Relaxed);
    let before = SCHEDULE_CALLS.of(other).load(Ordering::Relaxed);
    NEED_RESCHED.of(other).store(true, Ordering::Relaxed);
    apic::send_ipi(crate::arch::gdt::apic_id_of(other), apic::RESCHEDULE_VECTOR);
    let deadline = tsc() + apic::tsc_ticks_per_ms() * 1000;
    let result = loop {
        // Each call counts before it looks at the queue, so a count past
        // `before` is a look at the queue during the hold.
        if SCHEDULE_CALLS.of(other).load(Ordering::Relaxed) > before {
            break HOLD_OTHER_CPU_SCHEDULED;
        }
        if tsc() > deadline {
            break HOLD_TIMED_OUT;
        }
        core::hint::spin_loop();
    };
    HOLD_SWITCH_RESULT.store(result, Ordering::Release);
}

fn tsc() -> u64 {
    // SAFETY: RDTSC reads a counter; no memory is touched.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Switches from `prev` (running) to `next` (claimed by this CPU). Returns
/// when `prev` is switched back in, on whichever CPU picks it.
fn switch_to(prev: usize, next: usize) {
    let cpu = percpu::this_cpu();
    let (prev_task, next_task) = (&TASKS[prev], &TASKS[next]);
    // Never from an IST stack (or any stack not the task's own).
    assert_on_own_stack("switch_to, leaving");
    // Nothing may switch with the models claiming otherwise: IF is off, so
    // lockdep must say hardirqs are off, and RCU must watch (only the idle
    // loop's `hlt` doesn't, and it is over before idle switches).
    if irqflags::lockdep_hardirqs_enabled() || !irqflags::rcu_is_watching() {
        MODEL_ERRORS.fetch_add(1, Ordering::Relaxed);
    }
    if pks::enabled() {
        prev_task.switched_out_pkrs.store(pks::cached_pkrs(), Ordering::Relaxed);
        // SAFETY: PKS is on; every value a task runs with keeps key 0 (all
        // kernel memory, the stacks included) read/write.
        unsafe { pks::update_pkrs(next_task.switched_out_pkrs.load(Ordering::Relaxed)) };
    }
    // SAFETY: `next` is switched out and this CPU claimed it after an acquire load found its
    // `on_cpu` clear, which the CPU that switched it out set with release order after saving its
    // RSP: only this switch reads its ThreadContext now, and nothing writes it meanwhile.
    let next_sp = unsafe { (*next_task.thread.get()).sp };
    if !next_task.stack().contains(&next_sp) {
        panic!(
            "switch to task {} ({}): its saved RSP {next_sp:#x} is outside its stack {:#x?}",
            next_task.id.load(Ordering::Relaxed),
            next_task.name(),
            next_task.stack()
        );
    }
    // SAFETY: interrupts are off and `next` runs next: its user frames must land at the top of its
    // own kernel stack (a stale RSP0 would build them on the previous task's). An NMI before the
    // switch comes from kernel mode and uses its IST, not RSP0.
    unsafe { crate::arch::gdt::set_kernel_stack_top(next_task.stack_top.load(Ordering::Relaxed)) };
    user_state::switch(prev, next);
    let last_cpu = next_task.last_cpu.swap(cpu as u32, Ordering::Relaxed);
    if last_cpu != NO_CPU && last_cpu as usize != cpu {
        MIGRATIONS.fetch_add(1, Ordering::Relaxed);
    }
    SWITCHING_FROM.this().store(prev + 1, Ordering::Relaxed);
    CURRENT.this().store(next, Ordering::Relaxed);
    CONTEXT_SWITCHES.fetch_add(1, Ordering::Relaxed);
    CPU_CONTEXT_SWITCHES.this().fetch_add(1, Ordering::Relaxed);
    hold_switch_if_asked(prev);
    // SAFETY: interrupts off; `prev` runs, so its ThreadContext is ours; `next` is claimed by this
    // CPU, so its `sp` points at the InactiveTaskFrame its last switch (or prepare_new_task) left
    // on its own stack, which nothing else uses. Both pointers come from the TASKS static.
    unsafe { extregs_context_switch(prev_task.thread.get(), next_task.thread.get()) };
    // Back in `prev`, on its own stack (on the CPU that picked it): the
    // switch into it is complete, and the task this CPU left can be queued.
    finish_task_switch();
    assert_on_own_stack("switch_to");
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

/// The scheduler tick, from the LAPIC timer's IRQ handler: wakes sleepers
/// whose tick has come and asks for a reschedule when another task is
/// runnable (a time slice is one tick).
pub fn scheduler_tick() {
    let cpu = percpu::this_cpu();
    // Only the boot CPU's tick is the clock (and wakes sleepers); every
    // CPU's tick ends time slices.
    if cpu == 0 {
        let now = TICKS.fetch_add(1, Ordering::Relaxed) + 1;
        if !INITIALISED.load(Ordering::Acquire) {
            return;
        }
        for (slot, task) in TASKS.iter().enumerate() {
            if task.state() == TaskState::Sleeping && task.wake_tick.load(Ordering::Relaxed) <= now
            {
                wake(slot);
            }
        }
    }
    if !INITIALISED.load(Ordering::Acquire) {
        return;
    }
    let current = CURRENT.this().load(Ordering::Relaxed);
    if run_queue().has_work_for(cpu) || !allowed_on(current, cpu) {
        NEED_RESCHED.this().store(true, Ordering::Relaxed);
    }
}

/// A reschedule IPI arrived (Linux's `scheduler_ipi`): look at the run
/// queue at this interrupt's exit, and start or stop this CPU's tick to
/// match the boot CPU's.
pub fn reschedule_ipi() {
    NEED_RESCHED.this().store(true, Ordering::Relaxed);
    sync_local_tick();
}

/// Starts or stops this CPU's LAPIC tick to match [`TICK_RUNNING`].
fn sync_local_tick() {
    let wanted = TICK_RUNNING.load(Ordering::Relaxed);
    if TICK_ARMED.this().swap(wanted, Ordering::Relaxed) == wanted {
        return;
    }
    if wanted {
        apic::start_timer_us(apic::TimerMode::Periodic, 1_000_000 / TICK_HZ);
    } else {
        apic::stop_timer();
    }
}

/// Tells every other online CPU to match [`TICK_RUNNING`].
fn sync_other_ticks() {
    let this = percpu::this_cpu();
    for (cpu, apic_id) in smp::online_cpus() {
        if cpu != this {
            apic::send_ipi(apic_id, apic::RESCHEDULE_VECTOR);
        }
    }
}

/// Starts the periodic tick at [`TICK_HZ`] on every online CPU (the
/// others start theirs at the reschedule IPI this sends).
pub fn start_tick() {
    TICK_RUNNING.store(true, Ordering::Relaxed);
    with_irqs_off(|| {
        sync_local_tick();
        sync_other_ticks();
    });
}

/// Stops the tick on every CPU.
pub fn stop_tick() {
    TICK_RUNNING.store(false, Ordering::Relaxed);
    with_irqs_off(|| {
        sync_local_tick();
        sync_other_ticks();
    });
    if let Some(sleeper) = TASKS.iter().find(|task| task.state() == TaskState::Sleeping) {
        panic!(
            "stop_tick with task {} ({}) asleep: it would never wake",
            sleeper.id.load(Ordering::Relaxed),
            sleeper.name()
        );
    }
}

/// The scheduler ticks since boot.
pub fn ticks() -> u64 {
    TICKS.load(Ordering::Relaxed)
}

/// The platform hooks of the generic entry.
pub fn preempt_count() -> u32 {
    current_task().preempt_count.load(Ordering::Relaxed)
}

pub fn need_resched() -> bool {
    NEED_RESCHED.this().load(Ordering::Relaxed)
}

/// Linux's `preempt_schedule_irq()`: called by `irqentry_exit` with
/// interrupts off, preempt count 0 and a reschedule pending; switches away
/// and returns when this task is picked again.
pub fn preempt_schedule_irq() {
    assert!(
        preempt_count() == 0 && !x86_64::instructions::interrupts::are_enabled(),
        "preempt_schedule_irq with preempt count {:#x} or IF set",
        preempt_count()
    );
    loop {
        if schedule(SwitchKind::Preemption) {
            IRQ_PREEMPTIONS.fetch_add(1, Ordering::Relaxed);
        }
        if !NEED_RESCHED.this().load(Ordering::Relaxed) {
            break;
        }
    }
}

/// The running task's user arguments (see [`spawn_with_user_args`]).
pub fn current_user_args() -> [u64; 3] {
    let task = current_task();
    core::array::from_fn(|index| task.user_args[index].load(Ordering::Relaxed))
}

/// Is the scheduler tick running?
pub fn tick_running() -> bool {
    TICK_RUNNING.load(Ordering::Relaxed)
}

/// The running task's slot (its kernel stack is `task::stack_range(slot)`).
pub fn current_slot() -> usize {
    current_slot_of_this_task()
}

/// Linux's `force_sig_fault()` of a fatal signal: the running task dies
/// on its way back to user mode (the exit work loop's
/// [`kill_current_task`]).
pub fn force_fatal_signal(signal: u32) {
    current_task().fatal_signal.store(signal, Ordering::Relaxed);
}

/// The exit-to-user work pending for the running task.
pub fn exit_to_user_mode_work() -> extregs_entry::ExitToUserWork {
    extregs_entry::ExitToUserWork {
        need_resched: NEED_RESCHED.this().load(Ordering::Relaxed),
        fatal_signal: current_task().fatal_signal.load(Ordering::Relaxed) != 0,
        signal_pending: current_task().signal_pending.load(Ordering::Relaxed),
    }
}

/// The exit loop's reschedule: the user task is switched out (it was
/// preempted in user mode, or its syscall ended with a reschedule due).
pub fn schedule_before_user_return() {
    assert!(
        preempt_count() == 0 && !x86_64::instructions::interrupts::are_enabled(),
        "schedule before a user return with preempt count {:#x} or IF set",
        preempt_count()
    );
    if schedule(SwitchKind::Preemption) {
        USER_PREEMPTIONS.fetch_add(1, Ordering::Relaxed);
    }
}

/// The exit loop's fatal signal: the task dies with status 128 + signal.
pub fn kill_current_task() -> ! {
    let signal = current_task().fatal_signal.load(Ordering::Relaxed);
    USER_KILLS.fetch_add(1, Ordering::Relaxed);
    exit_current_with_status(128 + signal as i32)
}

/// A hard interrupt handler starts (Linux's `irq_enter_rcu`): the running
/// task's preempt count gains [`HARDIRQ_OFFSET`] until [`hardirq_exit`].
pub fn hardirq_enter() {
    current_task().preempt_count.fetch_add(HARDIRQ_OFFSET, Ordering::Relaxed);
}

/// The hard interrupt handler is done (before `irqentry_exit`).
pub fn hardirq_exit() {
    current_task().preempt_count.fetch_sub(HARDIRQ_OFFSET, Ordering::Relaxed);
}

/// A paranoid entry's handler starts (Linux's `__nmi_enter`).
pub fn nmi_enter() {
    current_task().preempt_count.fetch_add(NMI_OFFSET, Ordering::Relaxed);
}

/// The paranoid handler is done.
pub fn nmi_exit() {
    current_task().preempt_count.fetch_sub(NMI_OFFSET, Ordering::Relaxed);
}

/// Holds preemption off for the running task until the matching
/// [`preempt_enable`].
pub fn preempt_disable() {
    current_task().preempt_count.fetch_add(1, Ordering::Relaxed);
    compiler_fence(Ordering::SeqCst);
}

/// Ends a [`preempt_disable`] section; the enable that drops the count to 0
/// switches at once when a reschedule is pending (and IF is set).
pub fn preempt_enable() {
    compiler_fence(Ordering::SeqCst);
    let previous = current_task().preempt_count.fetch_sub(1, Ordering::Relaxed);
    assert!(previous != 0, "preempt_enable without preempt_disable");
    if previous == 1
        && NEED_RESCHED.this().load(Ordering::Relaxed)
        && x86_64::instructions::interrupts::are_enabled()
    {
        irqflags::local_irq_disable();
        if schedule(SwitchKind::Preemption) {
            ENABLE_PREEMPTIONS.fetch_add(1, Ordering::Relaxed);
        }
        irqflags::local_irq_enable();
    }
}

/// Sets the running task's rights for `pkey` (its own PKRS, and the live
/// one: it runs in task context).
pub fn pks_set_rights(pkey: u8, rights: pks::KeyRights) {
    assert!((1..16).contains(&pkey), "pkey {pkey}: key 0 is all kernel memory, keys end at 15");
    with_irqs_off(|| {
        let task = current_task();
        let value = pks::with_key_rights(task.pkrs.load(Ordering::Relaxed), pkey, rights);
        task.pkrs.store(value, Ordering::Relaxed);
        if pks::enabled() {
            // SAFETY: PKS is on; key 0 (all kernel memory) keeps its rights
            // unless a caller revokes them on purpose.
            unsafe { pks::update_pkrs(value) };
        }
    });
}

/// Grants the running task read/write access to `pkey`'s pages.
pub fn pks_set_readwrite(pkey: u8) {
    pks_set_rights(pkey, pks::KeyRights::ReadWrite);
}

/// Revokes the running task's access to `pkey`'s pages.
pub fn pks_set_noaccess(pkey: u8) {
    pks_set_rights(pkey, pks::KeyRights::NoAccess);
}

/// Puts the running task's own PKRS, and the live one, back to the
/// default (the selftest harness, after each test).
pub fn pks_reset_current() {
    with_irqs_off(|| {
        let default_pkrs = if pks::enabled() { pks::PKRS_DEFAULT } else { 0 };
        current_task().pkrs.store(default_pkrs, Ordering::Relaxed);
        if pks::enabled() {
            // SAFETY: PKS is on; the default keeps key 0 read/write.
            unsafe { pks::update_pkrs(default_pkrs) };
        }
    });
}

/// The running task's own PKRS.
pub fn current_pkrs() -> u32 {
    current_task().pkrs.load(Ordering::Relaxed)
}
