//! Selftests of the external-interrupt paths: every IRQ stub, the LAPIC
//! timer in both modes, the fixed self-IPI, the spurious vector's EOI rule,
//! and interrupts taken from idle (the RCU model) with an NMI nested inside
//! (the lockdep model).

use super::{check, wait_until, Context, Outcome, EVENT_TIMEOUT_TSC};
use crate::arch::apic::{
    self, ERROR_VECTOR, RESCHEDULE_VECTOR, SELF_IPI_VECTOR, SPURIOUS_VECTOR, TIMER_VECTOR,
};
use crate::arch::irqflags;
use crate::arch::tlb::TLB_SHOOTDOWN_VECTOR;
use crate::entry::irq::{self, IpiAction};
use crate::entry::nmi;
use crate::sched::idle;
use extregs_regs::{EntryVector, NO_ERROR_CODE};

/// Lets pending interrupts in until `condition` holds (or the guard runs
/// out), then disables them again. True if the condition held.
pub(super) fn with_irqs_enabled_until(condition: impl Fn() -> bool) -> bool {
    irqflags::local_irq_enable();
    let held = wait_until(condition, EVENT_TIMEOUT_TSC);
    irqflags::local_irq_disable();
    held
}

/// The external vectors without a handler of their own (218 of the 224):
/// a self-IPI on one arrives as an unexpected interrupt, counted and
/// reported with its number.
pub(super) fn vectors_without_a_handler() -> impl Iterator<Item = u8> {
    (32..=255u8).filter(|vector| {
        !matches!(
            *vector,
            TIMER_VECTOR
                | SELF_IPI_VECTOR
                | ERROR_VECTOR
                | SPURIOUS_VECTOR
                | RESCHEDULE_VECTOR
                | TLB_SHOOTDOWN_VECTOR
        )
    })
}

pub fn irq_stubs_report_their_vectors(_: &Context) -> Outcome {
    // Every external vector without a handler: a self-IPI on it must arrive
    // exactly once, reported as that vector (so each of the 224 stubs pushes
    // its own number). Quiet, except for the last one, which shows the
    // report a user would see.
    irq::set_report_unexpected(false);
    let mut tested = 0;
    for vector in vectors_without_a_handler() {
        if vector == 0x40 {
            irq::set_report_unexpected(true);
        }
        let before = irq::counts().unexpected;
        apic::send_self_ipi(vector);
        let arrived = with_irqs_enabled_until(|| irq::counts().unexpected != before);
        irq::set_report_unexpected(false);
        if !arrived
            || irq::counts().unexpected != before + 1
            || irq::last_unexpected_vector() != vector
        {
            irq::set_report_unexpected(true);
            check!(arrived, "self-IPI on vector {vector:#04x} never arrived");
            check!(
                irq::last_unexpected_vector() == vector,
                "self-IPI on vector {vector:#04x} arrived as vector {:#04x}",
                irq::last_unexpected_vector()
            );
            check!(
                false,
                "vector {vector:#04x} counted {} times",
                irq::counts().unexpected - before
            );
        }
        check!(!apic::in_service(vector), "vector {vector:#04x} still in service (no EOI)");
        tested += 1;
    }
    irq::set_report_unexpected(true);
    check!(tested == 218, "tested {tested} vectors");
    Outcome::Pass
}

pub fn lapic_timer_one_shot(_: &Context) -> Outcome {
    let before = irq::counts().timer;
    irq::take_last_frame();
    apic::start_timer_us(apic::TimerMode::OneShot, 1000);
    let fired = with_irqs_enabled_until(|| irq::counts().timer != before);
    check!(fired, "the one-shot timer never fired");
    // A one-shot count stays at 0 once it ran out; no second tick follows.
    check!(apic::timer_current() == 0, "current count {} after one shot", apic::timer_current());
    with_irqs_enabled_until(|| irq::counts().timer > before + 1);
    let after = irq::counts().timer;
    apic::stop_timer();
    check!(after == before + 1, "{} timer IRQs from one one-shot", after - before);
    let Some(frame) = irq::take_last_frame() else {
        return check_failed("no timer frame recorded");
    };
    check!(frame.vector == TIMER_VECTOR, "vector {:#x}", frame.vector);
    check!(frame.regs.orig_ax == NO_ERROR_CODE, "orig_ax {:#x}", frame.regs.orig_ax);
    check!(frame.regs.interrupts_enabled(), "the interrupted context had IF clear");
    check!(!frame.lockdep_hardirqs_enabled, "lockdep says hardirqs on inside the IRQ");
    check!(frame.generic.exit_rcu == 0, "exit_rcu set outside idle");
    check!(
        frame.generic.entry_vector() == EntryVector::Idt(TIMER_VECTOR)
            && frame.generic.in_hardirq(),
        "the extension records {:?} (vector field {:#x}) for the timer IRQ in its handler",
        frame.generic.entry_vector(),
        frame.generic.vector
    );
    Outcome::Pass
}

pub fn lapic_timer_periodic(_: &Context) -> Outcome {
    let before = irq::counts().timer;
    apic::start_timer_us(apic::TimerMode::Periodic, 500);
    let ticked = with_irqs_enabled_until(|| irq::counts().timer >= before + 5);
    apic::stop_timer();
    // A tick the APIC accepted before the stop stays pending: let it in
    // now, or it lands in the next test's IRQ window (and its frame
    // replaces that test's last one).
    let drained = with_irqs_enabled_until(|| !apic::pending(TIMER_VECTOR));
    check!(ticked, "only {} periodic ticks", irq::counts().timer - before);
    check!(drained, "a tick still pending after the timer stopped");
    Outcome::Pass
}

pub fn self_ipi_fixed_vector(_: &Context) -> Outcome {
    let before = irq::counts().self_ipi;
    irq::take_last_frame();
    apic::send_self_ipi(SELF_IPI_VECTOR);
    // IF is clear: the IPI must wait.
    check!(irq::counts().self_ipi == before, "the IPI arrived with IF clear");
    check!(with_irqs_enabled_until(|| irq::counts().self_ipi != before), "the IPI never arrived");
    check!(irq::counts().self_ipi == before + 1, "{} IPIs", irq::counts().self_ipi - before);
    check!(!apic::in_service(SELF_IPI_VECTOR), "still in service after the handler's EOI");
    let Some(frame) = irq::take_last_frame() else {
        return check_failed("no IPI frame recorded");
    };
    check!(frame.vector == SELF_IPI_VECTOR, "vector {:#x}", frame.vector);
    check!(frame.regs.orig_ax == NO_ERROR_CODE, "orig_ax {:#x}", frame.regs.orig_ax);
    check!(
        frame.regs_address - frame.extension_address == extregs_regs::GENERIC_PTREGS_SIZE as u64,
        "extension not GENERIC_PTREGS_SIZE below PtRegs"
    );
    Outcome::Pass
}

pub fn spurious_vector_eoi_rule(_: &Context) -> Outcome {
    // A fixed IPI on the spurious vector is in service, unlike a real
    // spurious interrupt: the handler must see that and EOI it.
    let before = irq::counts().spurious;
    apic::send_self_ipi(SPURIOUS_VECTOR);
    check!(with_irqs_enabled_until(|| irq::counts().spurious != before), "never arrived");
    check!(!apic::in_service(SPURIOUS_VECTOR), "spurious vector left in service");
    // And the APIC still delivers: a later IPI gets through.
    let ipis = irq::counts().self_ipi;
    apic::send_self_ipi(SELF_IPI_VECTOR);
    check!(with_irqs_enabled_until(|| irq::counts().self_ipi != ipis), "APIC stuck after it");
    Outcome::Pass
}

pub fn idle_irq_records_exit_rcu(_: &Context) -> Outcome {
    irq::take_last_frame();
    apic::send_self_ipi(SELF_IPI_VECTOR); // pending until the idle STI
    let exit = idle::idle_once();
    let Some(frame) = irq::take_last_frame() else {
        return check_failed("no IRQ taken from idle");
    };
    check!(frame.rcu_watching, "RCU not watching inside the IRQ from idle");
    check!(frame.generic.exit_rcu == 1, "exit_rcu {} for an IRQ from idle", frame.generic.exit_rcu);
    check!(!exit.rcu_watching_after_wakeup, "irqentry_exit left RCU watching");
    check!(irqflags::rcu_is_watching(), "idle exit did not make RCU watch again");
    // The timer from idle too.
    apic::start_timer_us(apic::TimerMode::OneShot, 200);
    let exit = idle::idle_once();
    apic::stop_timer();
    let Some(frame) = irq::take_last_frame() else {
        return check_failed("no timer IRQ taken from idle");
    };
    check!(frame.vector == TIMER_VECTOR, "woke by vector {:#x}", frame.vector);
    check!(frame.generic.exit_rcu == 1, "timer from idle: exit_rcu {}", frame.generic.exit_rcu);
    check!(!exit.rcu_watching_after_wakeup, "timer exit left RCU watching");
    Outcome::Pass
}

pub fn idle_irq_nmi_nesting_rcu_lockdep(context: &Context) -> Outcome {
    // It counts this CPU's NMIs exactly: NMIs from outside wait meanwhile.
    apic::with_outside_nmis_held(|| idle_irq_nmi_nesting_counted(context))
}

fn idle_irq_nmi_nesting_counted(_: &Context) -> Outcome {
    // idle -> IPI (makes RCU watch, exit_rcu=1; hardirqs off) -> NMI (RCU
    // already watching: exit_rcu=0; saves hardirqs=off) -> back out.
    irq::take_last_frame();
    nmi::take_log();
    let nmis = nmi::count_this_cpu();
    irq::set_ipi_action(IpiAction::SendSelfNmi);
    apic::send_self_ipi(SELF_IPI_VECTOR);
    let exit = idle::idle_once();
    irq::set_ipi_action(IpiAction::Nothing);
    check!(
        nmi::count_this_cpu() == nmis + 1,
        "{} NMIs from inside the IPI",
        nmi::count_this_cpu() - nmis
    );
    let (log, length) = nmi::take_log();
    check!(length == 1, "{length} NMI frames logged");
    let (Some(irq_frame), Some(nmi_frame)) = (irq::take_last_frame(), log[0]) else {
        return check_failed("frames missing");
    };
    check!(
        irq_frame.generic.exit_rcu == 1,
        "IPI from idle: exit_rcu {}",
        irq_frame.generic.exit_rcu
    );
    check!(
        nmi_frame.generic.exit_rcu == 0,
        "NMI inside IPI: exit_rcu {}",
        nmi_frame.generic.exit_rcu
    );
    check!(nmi_frame.rcu_watching, "RCU not watching inside the NMI");
    check!(
        nmi_frame.generic.lockdep_hardirqs_enabled == 0,
        "NMI saved hardirqs-enabled={} inside an IRQ handler",
        nmi_frame.generic.lockdep_hardirqs_enabled
    );
    check!(!nmi_frame.regs.interrupts_enabled(), "NMI interrupted a context with IF set");
    check!(!exit.rcu_watching_after_wakeup, "RCU left watching after the nest unwound");
    Outcome::Pass
}

fn check_failed(why: &str) -> Outcome {
    println!("# {why}");
    Outcome::Fail
}
