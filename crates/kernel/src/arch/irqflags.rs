//! Interrupt flags and the two generic-state models the entry code keeps
//! honest: the lockdep-style "hardirqs enabled" flag, which mirrors IF
//! through [`local_irq_enable`]/[`local_irq_disable`], and RCU watching
//! (false only while the CPU idles, or runs user mode).
//!
//! The models are what the extension's generic part saves and restores
//! (`exit_rcu`, `lockdep_hardirqs_enabled`): the generic entry reads and
//! writes them through the kernel's `EntryPlatform`, the scheduler checks
//! them at every switch, and the idle loop stops RCU watching around its
//! `hlt`. They sit here, at the bottom, because all three use them.

use crate::arch::percpu::PerCpu;
use core::sync::atomic::{AtomicBool, Ordering};
use extregs_regs::NR_CPUS;

/// RCU model: is RCU watching this CPU? False only inside the idle loop
/// (and in user mode, through context tracking).
static RCU_WATCHING: PerCpu<AtomicBool> = PerCpu::new([const { AtomicBool::new(true) }; NR_CPUS]);
/// Lockdep model: are hardirqs enabled? Mirrors IF (off at boot).
static HARDIRQS_ENABLED: PerCpu<AtomicBool> =
    PerCpu::new([const { AtomicBool::new(false) }; NR_CPUS]);

/// Is RCU watching this CPU (the model the generic entry code maintains)?
pub fn rcu_is_watching() -> bool {
    RCU_WATCHING.this().load(Ordering::Relaxed)
}

/// Marks this CPU as (not) watching, as entering or leaving idle does.
pub fn set_rcu_watching(watching: bool) {
    RCU_WATCHING.this().store(watching, Ordering::Relaxed);
}

/// Marks this CPU as watching and says whether it already was (context
/// tracking's check on an entry from user mode).
pub fn swap_rcu_watching(watching: bool) -> bool {
    RCU_WATCHING.this().swap(watching, Ordering::Relaxed)
}

/// The lockdep model's "hardirqs enabled".
pub fn lockdep_hardirqs_enabled() -> bool {
    HARDIRQS_ENABLED.this().load(Ordering::Relaxed)
}

/// Sets the lockdep model's "hardirqs enabled" (the NMI exit's restore).
pub fn set_lockdep_hardirqs_enabled(enabled: bool) {
    HARDIRQS_ENABLED.this().store(enabled, Ordering::Relaxed);
}

/// `local_irq_enable()`: tell the model first, then STI (Linux's
/// `trace_hardirqs_on(); native_irq_enable()`).
pub fn local_irq_enable() {
    HARDIRQS_ENABLED.this().store(true, Ordering::Relaxed);
    x86_64::instructions::interrupts::enable();
}

/// `local_irq_disable()`: CLI first, then tell the model.
pub fn local_irq_disable() {
    x86_64::instructions::interrupts::disable();
    HARDIRQS_ENABLED.this().store(false, Ordering::Relaxed);
}

/// The model half of `local_irq_enable()`, for code that sets IF itself in
/// the same instruction sequence (the idle loop's `sti; hlt`).
pub fn local_irq_enable_model_only() {
    HARDIRQS_ENABLED.this().store(true, Ordering::Relaxed);
}

/// The model half of `local_irq_disable()`, after a raw `cli`.
pub fn local_irq_disable_model_only() {
    HARDIRQS_ENABLED.this().store(false, Ordering::Relaxed);
}
