//! [`KernelPlatform`]: the kernel's side of the generic entry code
//! (`extregs_entry::EntryPlatform`). It connects the generic entry to the
//! RCU and lockdep models (`arch::irqflags`), the PKS arch hooks that save
//! and restore the extension's PKRS, and the scheduler's preemption and
//! exit-to-user work; the fuzzer's named faults skip two of its steps.

use crate::arch::{irqflags, pks};
use crate::entry::fault;
use crate::sched;
use core::sync::atomic::{AtomicU64, Ordering};
use extregs_entry::{EntryPlatform, ExitToUserWork};
use extregs_regs::ArchExtRegs;

/// The kernel's side of the generic entry code.
pub struct KernelPlatform;

impl EntryPlatform for KernelPlatform {
    fn rcu_is_watching() -> bool {
        irqflags::rcu_is_watching()
    }
    fn rcu_irq_enter() {
        irqflags::set_rcu_watching(true);
    }
    fn rcu_irq_exit() {
        irqflags::set_rcu_watching(false);
    }
    fn lockdep_hardirqs_enabled() -> bool {
        irqflags::lockdep_hardirqs_enabled()
    }
    fn lockdep_set_hardirqs_enabled(enabled: bool) {
        if fault::take_skip_lockdep_restore() {
            return;
        }
        irqflags::set_lockdep_hardirqs_enabled(enabled);
    }
    fn arch_enter(arch: &mut ArchExtRegs) {
        pks::arch_enter(arch);
    }
    fn arch_exit(arch: &ArchExtRegs) {
        if fault::take_skip_arch_exit() {
            return;
        }
        pks::arch_exit(arch);
    }
    fn preempt_count() -> u32 {
        sched::preempt_count()
    }
    fn need_resched() -> bool {
        sched::need_resched()
    }
    fn preempt_schedule_irq() {
        sched::preempt_schedule_irq();
    }
    fn enter_from_user_mode() {
        // Context tracking: user mode is an extended quiescent state, as
        // idle is; an entry from user mode that finds RCU already watching
        // means an exit to user mode was missed.
        if irqflags::swap_rcu_watching(true) {
            CONTEXT_TRACKING_ERRORS.fetch_add(1, Ordering::Relaxed);
        }
    }
    fn exit_to_user_mode() {
        irqflags::set_rcu_watching(false);
    }
    fn exit_to_user_mode_work() -> ExitToUserWork {
        sched::exit_to_user_mode_work()
    }
    fn schedule_before_user_return() {
        sched::schedule_before_user_return();
    }
    fn kill_current_task() -> ! {
        sched::kill_current_task()
    }
    fn arch_do_signal(regs: &mut extregs_regs::PtRegs) {
        crate::entry::hooks::deliver_signals(regs)
    }
}

/// Entries from user mode that found the context-tracking model saying
/// "kernel" (counted with the frame errors).
static CONTEXT_TRACKING_ERRORS: AtomicU64 = AtomicU64::new(0);

/// How many entries from user mode found context tracking in kernel mode
/// since the last call (the frame checker reports them).
pub fn take_context_tracking_errors() -> u64 {
    CONTEXT_TRACKING_ERRORS.swap(0, Ordering::Relaxed)
}
