//! The idle loop, and `mode=idle seconds=N`.
//!
//! Idling is where the RCU model means something: [`idle_once`] tells RCU
//! the CPU stops watching (Linux's `ct_idle_enter`), then `sti; hlt`. An
//! interrupt from there finds RCU not watching, so `irqentry_enter` makes it
//! watch and records `exit_rcu` in the extension; `irqentry_exit` undoes it
//! before IRET returns to the `hlt`.
//!
//! `mode=idle` runs the periodic LAPIC timer at [`HZ`] and idles until
//! `seconds * HZ` ticks have passed, counting timer IRQs and NMIs (QEMU's
//! `inject-nmi` over QMP is the way to send NMIs from outside).

use crate::{apic, irq, nmi, pks, println, result, traps};

/// Timer ticks per second in `mode=idle`.
pub const HZ: u32 = 100;

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
    traps::set_rcu_watching(false);
    // STI's one-instruction shadow makes `sti; hlt` atomic: an interrupt
    // pending now is taken at the HLT, never before it, so no wakeup is
    // lost. The lockdep model is told first, as local_irq_enable() does.
    traps::local_irq_enable_model_only();
    // SAFETY: IF is on only for the HLT; every vector's handler writes only kernel statics, and
    // CLI puts IF back. Not `nomem`: those handlers write what this function reads right after
    // (the RCU model, `run`'s IRQ counters), so the block counts as reading and writing memory.
    unsafe { core::arch::asm!("sti", "hlt", "cli", options(nostack)) };
    traps::local_irq_disable_model_only();
    let rcu_watching_after_wakeup = traps::rcu_is_watching();
    traps::set_rcu_watching(true);
    IdleExit { rcu_watching_after_wakeup }
}

/// `mode=idle`: periodic timer, idle for `seconds`, report counts.
pub fn run(seconds: u32) -> bool {
    let ticks_wanted = u64::from(seconds) * u64::from(HZ);
    let start = irq::counts();
    let nmis_before = nmi::count();
    let (frames_before, errors_before) = traps::frame_counts();
    let wrmsrs_before = pks::wrmsr_count();
    let mut rcu_leaks = 0u64;
    println!(
        "extregs: idle: {} s at HZ={} ({} mode, {} timer ticks/ms); NMIs welcome (QMP inject-nmi)",
        seconds,
        HZ,
        apic::current_mode().name(),
        apic::timer_ticks_per_ms()
    );
    apic::start_timer_us(apic::TimerMode::Periodic, 1_000_000 / HZ);
    while irq::counts().timer - start.timer < ticks_wanted {
        if idle_once().rcu_watching_after_wakeup {
            rcu_leaks += 1;
        }
    }
    apic::stop_timer();
    let end = irq::counts();
    let timer_irqs = end.timer - start.timer;
    let nmis = nmi::count() - nmis_before;
    let (frames, errors) = traps::frame_counts();
    let (frames_checked, frame_errors) = (frames - frames_before, errors - errors_before);
    let unexpected = end.unexpected - start.unexpected;
    // Idle runs with the default PKRS, so the cache must have saved every
    // entry and exit its WRMSR.
    let pkrs_wrmsrs = pks::wrmsr_count() - wrmsrs_before;
    println!(
        "extregs: idle: done: {timer_irqs} timer IRQs, {nmis} NMIs, {frames_checked} frames checked, {frame_errors} bad"
    );
    let ok = frame_errors == 0 && unexpected == 0 && rcu_leaks == 0;
    if rcu_leaks != 0 {
        println!("extregs: idle: RCU was left watching after {rcu_leaks} wakeups");
    }
    result::emit(
        ok,
        format_args!(
            ",\"seconds\":{seconds},\"hz\":{HZ},\"timer_irqs\":{timer_irqs},\"nmis\":{nmis},\"unexpected_irqs\":{unexpected},\"rcu_leaks\":{rcu_leaks},\"pkrs_wrmsrs\":{pkrs_wrmsrs}"
        ),
    );
    ok
}
