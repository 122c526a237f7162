//! The task table: every task's identity, state, saved stack pointer,
//! PKRS and preempt count, and the kernel stacks (each with an unmapped
//! guard page below it).
//!
//! Slot 0 is the idle task (PID 0, `swapper/0`) and slot 1 is `init`
//! (PID 1): the boot flow, which keeps running on the bootloader's stack.
//! Spawned tasks take the slots up to [`FIRST_AP_IDLE_SLOT`] and get
//! increasing PIDs; the last slots are the APs' idle tasks (PID 0,
//! `swapper/K`), each running on its slot's stack from the AP's boot on.
//!
//! Every field is an atomic or an `UnsafeCell` the switch alone touches, so
//! an NMI's show_regs can read the current task's name and PKRS without the
//! run-queue lock it must never take.

use core::cell::UnsafeCell;
use core::fmt;
use core::sync::atomic::{
    AtomicBool, AtomicI32, AtomicPtr, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering,
};
use extregs_regs::ThreadContext;

/// Task slots: idle, init and 64 more (`mode=tasks` runs up to 64
/// workers), then one idle task per AP (`swapper/K`).
pub const MAX_TASKS: usize = FIRST_AP_IDLE_SLOT + extregs_regs::NR_CPUS - 1;
/// The first AP idle task's slot; spawned tasks take the slots below it.
pub const FIRST_AP_IDLE_SLOT: usize = 66;

/// The slot of AP `cpu`'s idle task, `swapper/cpu`.
///
/// # Panics
///
/// If `cpu` is 0 (the boot CPU's idle task is [`IDLE_SLOT`]) or not below
/// `NR_CPUS`.
pub fn ap_idle_slot(cpu: usize) -> usize {
    assert!((1..extregs_regs::NR_CPUS).contains(&cpu), "CPU {cpu} is not an AP");
    FIRST_AP_IDLE_SLOT + cpu - 1
}
/// The idle task's slot (PID 0).
pub const IDLE_SLOT: usize = 0;
/// init's slot (PID 1): the boot flow.
pub const INIT_SLOT: usize = 1;

/// Bytes of each task's kernel stack. The IRQ path's Rust frames, a
/// preempted frame and a second task's nested frames must fit: the dev
/// build's frames are large.
pub const TASK_STACK_SIZE: usize = 64 * 1024;
/// The unmapped page below each task stack.
pub const TASK_GUARD_SIZE: usize = 4096;

/// What a task is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum TaskState {
    /// The slot holds no task.
    Free = 0,
    /// On the run queue.
    Runnable = 1,
    /// On the CPU.
    Running = 2,
    /// Until a tick (`wake_tick`).
    Sleeping = 3,
    /// Until a task it waits for exits.
    Waiting = 4,
    /// Exited; its slot is freed by the task that waits for it.
    Zombie = 5,
    /// Until another task or a handler unparks it.
    Parked = 6,
}

impl TaskState {
    fn from_raw(raw: u8) -> TaskState {
        match raw {
            1 => TaskState::Runnable,
            2 => TaskState::Running,
            3 => TaskState::Sleeping,
            4 => TaskState::Waiting,
            5 => TaskState::Zombie,
            6 => TaskState::Parked,
            _ => TaskState::Free,
        }
    }
}

/// Bytes of a task's name (Linux's `TASK_COMM_LEN`).
pub const TASK_COMM_LEN: usize = 16;

/// A task's name, copied out of its slot.
#[derive(Clone, Copy)]
pub struct TaskName {
    bytes: [u8; TASK_COMM_LEN],
    len: usize,
}

impl TaskName {
    pub fn as_str(&self) -> &str {
        core::str::from_utf8(&self.bytes[..self.len]).unwrap_or("?")
    }
}

impl fmt::Display for TaskName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Formats a name into a `TaskName`, cut at `TASK_COMM_LEN` bytes (on a
/// character boundary), as Linux's `comm` is.
struct NameWriter(TaskName);

impl fmt::Write for NameWriter {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        for character in text.chars() {
            let mut buffer = [0u8; 4];
            let encoded = character.encode_utf8(&mut buffer).as_bytes();
            if self.0.len + encoded.len() > TASK_COMM_LEN {
                return Ok(());
            }
            self.0.bytes[self.0.len..self.0.len + encoded.len()].copy_from_slice(encoded);
            self.0.len += encoded.len();
        }
        Ok(())
    }
}

pub fn format_name(name: fmt::Arguments<'_>) -> TaskName {
    let mut writer = NameWriter(TaskName { bytes: [0; TASK_COMM_LEN], len: 0 });
    // NameWriter never fails; it truncates.
    let _ = fmt::write(&mut writer, name);
    writer.0
}

/// One task.
pub struct Task {
    pub id: AtomicU32,
    name: [AtomicU8; TASK_COMM_LEN],
    name_len: AtomicUsize,
    state: AtomicU8,
    /// The saved stack pointer while switched out (`context_switch`).
    pub thread: UnsafeCell<ThreadContext>,
    /// The task's own PKRS: what it runs with in task context
    /// (`pks_set_readwrite`/`pks_set_noaccess` change it).
    pub pkrs: AtomicU32,
    /// The PKRS that was live when the task was switched out, installed
    /// again when it is switched in: its own value if it switched out from
    /// task context (yield, sleep, preempt_enable), the handlers' default
    /// if it was preempted at an interrupt's exit (whose restore then puts
    /// back the value its frame's extension saved).
    pub switched_out_pkrs: AtomicU32,
    pub preempt_count: AtomicU32,
    /// The tick a sleeping task wakes at.
    pub wake_tick: AtomicU64,
    /// What a new task runs: `entry(arg)` (a `fn(usize)`, kept as a
    /// pointer so its provenance survives).
    pub entry: AtomicPtr<()>,
    pub arg: AtomicUsize,
    /// An unpark that came while the task was not parked: its next park
    /// returns at once (no wakeup is lost).
    pub wakeup_pending: AtomicBool,
    /// The slot of the task waiting for this one to exit, plus one (0:
    /// none).
    pub waiter: AtomicUsize,
    /// `[bottom, top)` of the task's kernel stack.
    pub stack_bottom: AtomicU64,
    pub stack_top: AtomicU64,
    /// The user-mode GS base (what `MSR_KERNEL_GS_BASE` holds while the
    /// task runs in the kernel); switched with the task.
    pub user_gs_base: AtomicU64,
    /// A fault nothing handled: the task dies on its way back to user mode
    /// (Linux's pending fatal signal), with this signal number.
    pub fatal_signal: AtomicU32,
    /// The status `wait` reports: the exit code, or 128 + the signal.
    pub exit_status: AtomicI32,
    /// A user task's first `%rdi` and `%rsi`, and one more word for its
    /// start code.
    pub user_args: [AtomicU64; 3],
    /// The task runs user code: its x87/SSE registers are switched with
    /// it (`user_state`).
    pub user_fpu: AtomicBool,
    /// The user-mode FS base (`MSR_FS_BASE`, which no kernel code uses),
    /// saved while switched out.
    pub user_fs_base: AtomicU64,
    /// The physical address of the level-4 table the task runs on: 0 for
    /// the kernel's own (every kernel task and the kernel's user
    /// programs), a Linux process's own otherwise (`linux::mm`).
    pub page_table: AtomicU64,
    /// The ABI the task's user code speaks: [`PERSONALITY_KERNEL`] (the
    /// kernel's own programs) or [`PERSONALITY_LINUX`].
    pub personality: AtomicU8,
    /// A signal is pending and not blocked (Linux's `TIF_SIGPENDING`):
    /// the exit-to-user loop delivers it. Kept by the personality that
    /// owns the signal state.
    pub signal_pending: AtomicBool,
    /// Linux's `on_cpu`: set by the CPU that picks the task (under the
    /// scheduler lock), cleared with release order by the CPU that switched
    /// away from it once its switch has saved the task's RSP
    /// (`finish_task_switch`). No CPU may switch to a task while it is set:
    /// its saved RSP would be stale.
    pub on_cpu: AtomicBool,
    /// The CPUs the task may run on, one bit each (bit `k`: CPU `k`).
    pub allowed_cpus: AtomicU32,
    /// The CPU the task last ran on (`NO_CPU` before it ran; 0 in a free
    /// slot).
    pub last_cpu: AtomicU32,
    /// The I/O ports the task's user mode may use (bit `p`: port `p`,
    /// below `gdt::USER_PORTS`), loaded into the TSS of whichever CPU runs
    /// it (Linux's per-task `ioperm()` bitmap).
    pub user_ports: AtomicU64,
    /// Every CPU the task has run on (bit `k`: CPU `k`).
    pub ran_on: AtomicU32,
}

/// [`Task::last_cpu`] of a task that has not run yet.
pub const NO_CPU: u32 = u32::MAX;
/// [`Task::allowed_cpus`] of a task that may run anywhere.
pub const ALL_CPUS: u32 = (1 << extregs_regs::NR_CPUS) - 1;
/// [`Task::allowed_cpus`] of a task that stays on the boot CPU.
pub const BOOT_CPU_ONLY: u32 = 1;

/// Is `slot` an idle task's (`swapper/0` or an AP's `swapper/K`)?
pub fn is_idle_slot(slot: usize) -> bool {
    slot == IDLE_SLOT || slot >= FIRST_AP_IDLE_SLOT
}

/// The idle task of CPU `cpu`.
pub fn idle_slot_of(cpu: usize) -> usize {
    if cpu == 0 {
        IDLE_SLOT
    } else {
        ap_idle_slot(cpu)
    }
}

/// The kernel's own user programs (`user::programs`).
pub const PERSONALITY_KERNEL: u8 = 0;
/// A Linux process (`linux`).
pub const PERSONALITY_LINUX: u8 = 1;

// SAFETY: every field but `thread` is atomic. `thread` is written only by
// `context_switch` (storing the RSP of the task being switched *out*, which
// is the running task, on the CPU running it) and by `spawn` (before the
// task is on the run queue), and read only by the switch *into* the task,
// on whichever CPU picked it, and by the bench's partner task reading
// init's while init is switched out. The switch into a task reads `thread`
// only after an acquire load of `on_cpu` found it clear, and the CPU that
// switched the task out clears `on_cpu` with release order after its store
// of `thread`; a task is on the run queue only while `on_cpu` is clear. So
// no read overlaps a write, on one CPU or across CPUs (the writes run with
// interrupts off, and NMI handlers never touch it).
unsafe impl Sync for Task {}

impl Task {
    /// A free slot: every byte zero, so [`TASKS`] is in `.bss`, not in the
    /// kernel file the loader copies (docs/boot.md). A slot's CPU fields
    /// mean nothing until it is taken: `prepare_new_task`, init's and the
    /// APs' idle set-up store its `allowed_cpus` and `last_cpu`.
    const fn new() -> Task {
        Task {
            id: AtomicU32::new(0),
            name: [const { AtomicU8::new(0) }; TASK_COMM_LEN],
            name_len: AtomicUsize::new(0),
            state: AtomicU8::new(TaskState::Free as u8),
            thread: UnsafeCell::new(ThreadContext { sp: 0 }),
            pkrs: AtomicU32::new(0),
            switched_out_pkrs: AtomicU32::new(0),
            preempt_count: AtomicU32::new(0),
            wake_tick: AtomicU64::new(0),
            entry: AtomicPtr::new(core::ptr::null_mut()),
            wakeup_pending: AtomicBool::new(false),
            arg: AtomicUsize::new(0),
            waiter: AtomicUsize::new(0),
            stack_bottom: AtomicU64::new(0),
            stack_top: AtomicU64::new(0),
            user_gs_base: AtomicU64::new(0),
            fatal_signal: AtomicU32::new(0),
            exit_status: AtomicI32::new(0),
            user_args: [const { AtomicU64::new(0) }; 3],
            user_fpu: AtomicBool::new(false),
            user_fs_base: AtomicU64::new(0),
            page_table: AtomicU64::new(0),
            personality: AtomicU8::new(PERSONALITY_KERNEL),
            signal_pending: AtomicBool::new(false),
            on_cpu: AtomicBool::new(false),
            allowed_cpus: AtomicU32::new(0),
            last_cpu: AtomicU32::new(0),
            user_ports: AtomicU64::new(0),
            ran_on: AtomicU32::new(0),
        }
    }

    pub fn state(&self) -> TaskState {
        TaskState::from_raw(self.state.load(Ordering::Relaxed))
    }

    pub fn set_state(&self, state: TaskState) {
        self.state.store(state as u8, Ordering::Relaxed);
    }

    pub fn name(&self) -> TaskName {
        let mut name = TaskName { bytes: [0; TASK_COMM_LEN], len: 0 };
        name.len = self.name_len.load(Ordering::Relaxed).min(TASK_COMM_LEN);
        for (byte, stored) in name.bytes.iter_mut().zip(&self.name) {
            *byte = stored.load(Ordering::Relaxed);
        }
        name
    }

    pub fn set_name(&self, name: TaskName) {
        for (stored, byte) in self.name.iter().zip(name.bytes) {
            stored.store(byte, Ordering::Relaxed);
        }
        self.name_len.store(name.len, Ordering::Relaxed);
    }

    pub fn stack(&self) -> core::ops::Range<u64> {
        self.stack_bottom.load(Ordering::Relaxed)..self.stack_top.load(Ordering::Relaxed)
    }
}

/// The task table.
pub static TASKS: [Task; MAX_TASKS] = [const { Task::new() }; MAX_TASKS];

/// A guard page and the stack above it, both page aligned; the stack top is
/// 16-byte aligned.
#[repr(C, align(4096))]
struct TaskStackSlot {
    guard: [u8; TASK_GUARD_SIZE],
    stack: [u8; TASK_STACK_SIZE],
}

/// One stack slot per task slot (init's goes unused: init keeps the
/// bootloader's stack).
struct TaskStacks(UnsafeCell<[TaskStackSlot; MAX_TASKS]>);

// SAFETY: Rust never forms references into the stacks: spawn writes a new
// task's first frame through a raw pointer derived from the static (while
// the slot is free, so no code runs on that stack), and after that only the
// task that owns the stack uses it, as its stack (so the static's bytes are
// aliased by the frames of whatever runs there, which only ever reach them
// through RSP). The guard pages are unmapped at boot although they lie
// inside this static: nothing reads the static through a reference, so
// nothing may assume those bytes dereferenceable.
unsafe impl Sync for TaskStacks {}

static TASK_STACKS: TaskStacks = TaskStacks(UnsafeCell::new(
    [const { TaskStackSlot { guard: [0; TASK_GUARD_SIZE], stack: [0; TASK_STACK_SIZE] } };
        MAX_TASKS],
));

fn stack_slot_address(slot: usize) -> u64 {
    stack_slot_pointer(slot) as u64
}

/// The start of slot `slot` (its guard page), as a pointer derived from the
/// stacks' static.
fn stack_slot_pointer(slot: usize) -> *mut u8 {
    assert!(slot < MAX_TASKS);
    // In bounds of the static: slot < MAX_TASKS.
    TASK_STACKS.0.get().cast::<u8>().wrapping_add(slot * core::mem::size_of::<TaskStackSlot>())
}

/// A pointer `offset_from_top` bytes below the top of slot `slot`'s stack,
/// derived from the stacks' static (for writing a new task's first frame).
pub fn stack_pointer_below_top(slot: usize, offset_from_top: usize) -> *mut u8 {
    assert!(offset_from_top <= TASK_STACK_SIZE);
    stack_slot_pointer(slot).wrapping_add(core::mem::size_of::<TaskStackSlot>() - offset_from_top)
}

/// `[bottom, top)` of slot `slot`'s stack.
pub fn stack_range(slot: usize) -> core::ops::Range<u64> {
    let bottom = stack_slot_address(slot) + TASK_GUARD_SIZE as u64;
    bottom..bottom + TASK_STACK_SIZE as u64
}

/// The guard page below slot `slot`'s stack.
pub fn guard_range(slot: usize) -> core::ops::Range<u64> {
    let guard = stack_slot_address(slot);
    guard..guard + TASK_GUARD_SIZE as u64
}

/// Linux's `task_pt_regs(task)`: where a frame from user mode lies, at the
/// very top of slot `slot`'s kernel stack (TSS.RSP0 while the task runs);
/// its extension lies right below ([`task_ext_regs`]).
pub fn task_pt_regs(slot: usize) -> *mut extregs_regs::PtRegs {
    stack_pointer_below_top(slot, core::mem::size_of::<extregs_regs::PtRegs>()).cast()
}

/// The whole extended frame at [`task_pt_regs`]: `container_of` of it.
pub fn task_ext_regs(slot: usize) -> *mut extregs_regs::ExtendedPtRegs {
    stack_pointer_below_top(slot, core::mem::size_of::<extregs_regs::ExtendedPtRegs>()).cast()
}

/// The slot whose stack guard page holds `address`.
pub fn guard_slot_of(address: u64) -> Option<usize> {
    (0..MAX_TASKS).find(|&slot| slot != INIT_SLOT && guard_range(slot).contains(&address))
}
