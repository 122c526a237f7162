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

use crate::sched::{self, task::MAX_TASKS};
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

/// Is the running task a Linux process?
pub fn is_linux_task() -> bool {
    is_linux_slot(sched::current_slot())
}

/// Is task slot `slot` a Linux process?
pub fn is_linux_slot(slot: usize) -> bool {
    crate::sched::task::TASKS[slot].page_table.load(Ordering::Relaxed) != 0
}

/// Runs `body` on the running task's process. Panics if it is none.
pub fn with_current<T>(body: impl FnOnce(&mut Process) -> T) -> T {
    let slot = sched::current_slot();
    let mut process = PROCESSES[slot].lock();
    body(process.as_mut().expect("the running task is a Linux process"))
}

/// Installs `process` as the running task's and switches to its page
/// table. Interrupts off.
fn install_current(process: Process) {
    let slot = sched::current_slot();
    let table = process.mm.page_table();
    *PROCESSES[slot].lock() = Some(process);
    crate::sched::task::TASKS[slot].page_table.store(table, Ordering::Relaxed);
    crate::arch::memory::switch_page_table(table);
}

/// The running Linux process is ending: back to the kernel's page table,
/// then its memory is freed. Called by the task's exit, interrupts off.
pub fn exit_current() {
    let slot = sched::current_slot();
    if !is_linux_slot(slot) {
        return;
    }
    crate::sched::task::TASKS[slot].page_table.store(0, Ordering::Relaxed);
    crate::arch::memory::switch_page_table(0);
    if let Some(process) = PROCESSES[slot].lock().take() {
        process.mm.destroy();
    }
}
