//! Preempt counts and the entry's scheduling hooks: the generic entry asks
//! here whether the interrupted task may be preempted (Linux's
//! `preempt_count()`, `need_resched()`), what exit-to-user work is due, and
//! counts hard interrupts and NMIs into the running task's preempt count.

use super::*;

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
