//! The Linux personality: run an unmodified static x86-64 Linux program
//! on the extended frame (`mode=exec`, `extregs exec PATH`).
//!
//! A Linux process is one task with its own address space ([`mm`]), its
//! own signal state ([`signal`]), and Linux's syscall numbers and ABI
//! ([`syscall`]). [`exec`] loads the ELF and builds Linux's initial stack.
//! The kernel's own user programs (`user`) keep their own table and the
//! kernel's page table; which table a SYSCALL reaches is decided by the
//! task ([`is_linux_task`]).

pub mod errno;
pub mod exec;
pub mod mm;
pub mod signal;
pub mod syscall;

use crate::sched::{
    self,
    task::{MAX_TASKS, PERSONALITY_LINUX, TASKS},
};
use core::sync::atomic::Ordering;
use spin::Mutex;

/// One Linux process (one task: no threads, no fork).
pub struct Process {
    pub mm: mm::AddressSpace,
    pub signals: signal::SignalState,
    /// The program's name (`comm`, argv[0]'s last part), for messages.
    pub name: crate::sched::task::TaskName,
    /// The text mapping's range, for `show_signal_msg`'s `in prog[...]`.
    pub text: core::ops::Range<u64>,
}

/// The processes, by task slot.
static PROCESSES: [Mutex<Option<Process>>; MAX_TASKS] = [const { Mutex::new(None) }; MAX_TASKS];

/// Counts since boot, for `RESULT`.
pub mod counters {
    use core::sync::atomic::AtomicU64;
    pub static SIGNALS_DELIVERED: AtomicU64 = AtomicU64::new(0);
    pub static SIGRETURNS: AtomicU64 = AtomicU64::new(0);
    pub static SYSCALLS: AtomicU64 = AtomicU64::new(0);
    pub static ENOSYS_RETURNS: AtomicU64 = AtomicU64::new(0);
}

/// Installs the Linux personality into the layers below (its syscall
/// table and exception handling in `user::personality`, its signal
/// delivery in the exit-to-user loop's hook). Once, before the first
/// process starts.
pub fn init() {
    crate::user::personality::install_linux(syscall::dispatch, signal::force_fault);
    crate::entry::hooks::install_signal_delivery(signal::do_signal);
    sched::install_reaper(reap);
}

/// Runs `body` on the running task's process. Panics if it is none.
pub fn with_current<T>(body: impl FnOnce(&mut Process) -> T) -> T {
    let slot = sched::current_slot();
    let mut process = PROCESSES[slot].lock();
    let process = process.as_mut().expect("the running task is a Linux process");
    let result = body(process);
    // Linux's recalc_sigpending(): the exit-to-user loop reads the flag.
    TASKS[slot].signal_pending.store(process.signals.has_deliverable(), Ordering::Relaxed);
    result
}

/// Installs `process` as the running task's: its personality, and its
/// page table from now on. Interrupts off.
fn install_current(process: Process) {
    let slot = sched::current_slot();
    let table = process.mm.page_table();
    *PROCESSES[slot].lock() = Some(process);
    TASKS[slot].personality.store(PERSONALITY_LINUX, Ordering::Relaxed);
    // SAFETY: `table` is the process's level-4 table (kernel half copied by AddressSpace::new),
    // which stays alive until `reap`, after the task's exit has set 0 again.
    unsafe { sched::user_state::set_page_table(slot, table) };
}

/// Frees the memory of the process that ran in task slot `slot`, which
/// has exited (it left its page table on the way out: `sched`'s exit):
/// the scheduler's reaper, called by `wait` before the slot is free.
fn reap(slot: usize) {
    if let Some(process) = PROCESSES[slot].lock().take() {
        process.mm.destroy();
    }
}
