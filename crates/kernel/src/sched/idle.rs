//! The idle loop's one trip: where the RCU model means something.
//!
//! [`idle_once`] tells RCU the CPU stops watching (Linux's
//! `ct_idle_enter`), then `sti; hlt`. An interrupt from there finds RCU not
//! watching, so `irqentry_enter` makes it watch and records `exit_rcu` in
//! the extension; `irqentry_exit` undoes it before IRET returns to the
//! `hlt`.

use crate::arch::irqflags;

/// What one trip through idle saw.
#[derive(Clone, Copy, Debug)]
pub struct IdleExit {
    /// Was RCU watching right after `hlt` returned (before idle exit told it
    /// to)? False when every interrupt handled in idle undid its
    /// `rcu_irq_enter`.
    pub rcu_watching_after_wakeup: bool,
}

/// Idles until the next interrupt has been handled. Call with interrupts
/// disabled; returns with them disabled.
pub fn idle_once() -> IdleExit {
    irqflags::set_rcu_watching(false);
    // STI's one-instruction shadow makes `sti; hlt` atomic: an interrupt
    // pending now is taken at the HLT, never before it, so no wakeup is
    // lost. The lockdep model is told first, as local_irq_enable() does.
    irqflags::local_irq_enable_model_only();
    // SAFETY: IF is on only for the HLT; every handler writes only kernel statics, and CLI puts
    // IF back. Not `nomem`: the handlers write what this function reads right after (the RCU
    // model, `mode=idle`'s IRQ counters), so the block reads and writes memory.
    unsafe { core::arch::asm!("sti", "hlt", "cli", options(nostack)) };
    irqflags::local_irq_disable_model_only();
    let rcu_watching_after_wakeup = irqflags::rcu_is_watching();
    irqflags::set_rcu_watching(true);
    IdleExit { rcu_watching_after_wakeup }
}
