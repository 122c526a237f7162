//! Personalities: which ABI a user task's syscalls and exceptions follow
//! (Linux once had `struct exec_domain` for the same question).
//!
//! A task's `personality` (in `sched::task`) picks it. The kernel's own
//! programs use this layer's table (`user::syscall`) and its fault policy
//! (`user::handle_exception`). A higher layer that serves another ABI (the
//! Linux personality, `linux`) installs its syscall table and its
//! exception handling here once, before its first task runs; this layer
//! calls them for the tasks of that personality.

use crate::arch::hook_slot::HookSlot;
use crate::sched;
use core::sync::atomic::Ordering;
use extregs_regs::PtRegs;

/// The Linux personality's syscall table: the frame in, `%rax` out.
static LINUX_SYSCALL: HookSlot<fn(&mut PtRegs) -> i64> = HookSlot::empty();
/// The Linux personality's exceptions from user mode (they become
/// signals): the frame, the vector, CR2 for a #PF.
static LINUX_EXCEPTION: HookSlot<fn(&mut PtRegs, u8, Option<u64>)> = HookSlot::empty();

/// Installs the Linux personality's handlers.
pub fn install_linux(syscall: fn(&mut PtRegs) -> i64, exception: fn(&mut PtRegs, u8, Option<u64>)) {
    LINUX_SYSCALL.set(syscall);
    LINUX_EXCEPTION.set(exception);
}

/// Is the running task a Linux process?
pub fn current_is_linux() -> bool {
    sched::task::TASKS[sched::current_slot()].personality.load(Ordering::Relaxed)
        == sched::task::PERSONALITY_LINUX
}

/// The running task's syscall table, when it is not the kernel's own.
pub fn syscall_table() -> Option<fn(&mut PtRegs) -> i64> {
    if current_is_linux() {
        Some(LINUX_SYSCALL.get().expect("a Linux process runs, so its personality is installed"))
    } else {
        None
    }
}

/// The running task's exception handling, when it is not the kernel's
/// own.
pub fn exception_handler() -> Option<fn(&mut PtRegs, u8, Option<u64>)> {
    if current_is_linux() {
        Some(LINUX_EXCEPTION.get().expect("a Linux process runs, so its personality is installed"))
    } else {
        None
    }
}
