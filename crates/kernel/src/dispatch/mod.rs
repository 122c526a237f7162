//! The dispatcher: the Rust function every IDT entry stub calls, and the
//! one scope every event runs in.
//!
//! `entry_64.S` calls [`extregs_exception_entry`] with `&mut PtRegs` and
//! the vector. Every event, exception, IRQ or paranoid entry, then runs
//! the same four steps ([`run_entry`]), as Linux's `DEFINE_IDTENTRY_*`
//! wrappers own enter and exit and leave the handler only its body:
//!
//! 1. **enter**: the generic entry the vector needs (`irqentry_enter`, or
//!    `irqentry_nmi_enter` for the paranoid ones), which saves the
//!    interrupted context's state into the extension;
//! 2. **check**: the frame checker (`entry::check`);
//! 3. **handle**: the body: the NMI handler, the IRQ dispatcher, the user
//!    layer's exception handling, or for kernel exceptions the PKS fault
//!    handlers and the installed trap hook. Anything unclaimed is an oops;
//! 4. **exit**: the fuzzer's last fault-injection point, then the generic
//!    exit, which restores the extension's state.
//!
//! This is the top of the entry path: it sits above the user layer,
//! because an exception from user mode is the user layer's to handle.

use crate::arch::idt::{
    self, DEBUG_VECTOR, DOUBLE_FAULT_VECTOR, MACHINE_CHECK_VECTOR, NMI_VECTOR, PAGE_FAULT_VECTOR,
};
use crate::arch::pks;
use crate::debug::oops;
use crate::entry::platform::KernelPlatform;
use crate::entry::{check, fault, hooks, irq, nmi, paranoid};
use crate::sched;
use crate::user;
use core::sync::atomic::Ordering;
use extregs_entry::{irqentry_enter, irqentry_exit, irqentry_nmi_enter, irqentry_nmi_exit};
use extregs_entry_asm::FIRST_EXTERNAL_VECTOR;
use extregs_regs::{ExtendedPtRegs, PtRegs};
use x86_64::registers::control::Cr2;

/// Which flavour of the generic entry a frame gets.
#[derive(Clone, Copy, PartialEq, Eq)]
enum GenericEntry {
    /// `irqentry_enter`/`irqentry_exit`: exceptions and IRQs, and #DB/#MC
    /// from user mode (on the task stack, an ordinary entry from user mode).
    Irq,
    /// `irqentry_nmi_enter`/`irqentry_nmi_exit`: the paranoid entries from
    /// kernel mode, and NMIs from anywhere.
    Nmi,
}

/// The one scope every event runs in: enter → check → handle → exit.
///
/// `handle` is the event's body. `before_exit` runs after the fuzzer's
/// last injection point and before the generic exit: the #DB/#MC from
/// user mode put the paranoid state back there, before an exit that may
/// switch tasks.
///
/// # Safety
///
/// `regs` is the `PtRegs` of the frame an entry stub just built
/// (extension below it), entered through `vector`.
#[inline(always)]
unsafe fn run_entry(
    regs: &mut PtRegs,
    vector: u8,
    generic: GenericEntry,
    handle: impl FnOnce(&mut PtRegs),
    before_exit: impl FnOnce(),
) {
    match generic {
        // SAFETY: the stub built a whole ExtendedPtRegs around `regs` (this function's contract).
        GenericEntry::Irq => unsafe { irqentry_enter::<KernelPlatform>(regs) },
        // SAFETY: as above.
        GenericEntry::Nmi => unsafe { irqentry_nmi_enter::<KernelPlatform>(regs) },
    }
    check::check_frame(regs, vector);
    handle(regs);
    fault::before_exit(vector);
    before_exit();
    match generic {
        // SAFETY: the same frame the generic entry above ran on.
        GenericEntry::Irq => unsafe { irqentry_exit::<KernelPlatform>(regs) },
        // SAFETY: as above.
        GenericEntry::Nmi => unsafe { irqentry_nmi_exit::<KernelPlatform>(regs) },
    }
}

/// Called by the entry stubs in entry_64.S for every vector.
///
/// # Safety
///
/// Only the entry stubs call this, with `regs` pointing at the `PtRegs` of
/// the frame they just built (extension below it) and `vector` the vector
/// they were entered through.
#[no_mangle]
pub unsafe extern "C" fn extregs_exception_entry(regs: &mut PtRegs, vector: u64) {
    let vector = vector as u8;
    if idt::is_paranoid(vector) {
        // SAFETY: per this function's contract.
        unsafe { paranoid_entry(regs, vector) };
        return;
    }
    // #PF: CR2 first, as Linux's exc_page_fault reads it before
    // irqentry_enter. A paranoid event that lands before this line and
    // takes a #PF of its own puts CR2 back on its exit (paranoid::exit).
    let fault_address = (vector == PAGE_FAULT_VECTOR).then(Cr2::read_raw);
    // SAFETY: per this function's contract.
    unsafe {
        run_entry(
            regs,
            vector,
            GenericEntry::Irq,
            // The body runs inside this unsafe block, on the stub's frame
            // (handle_irq_or_exception's contract).
            |regs| handle_irq_or_exception(regs, vector, fault_address),
            || {},
        )
    };
    if regs.user_mode() {
        user::counters::IRET_EXITS.fetch_add(1, Ordering::Relaxed);
    }
}

/// The body of an exception or IRQ (not a paranoid entry).
///
/// # Safety
///
/// `regs` is the `PtRegs` of an entry stub's frame (the extension below
/// it), as [`extregs_exception_entry`] gets it: its only caller is that
/// function's `run_entry` body.
unsafe fn handle_irq_or_exception(regs: &mut PtRegs, vector: u8, fault_address: Option<u64>) {
    // A hard interrupt's handler runs with HARDIRQ_OFFSET in the preempt
    // count (Linux's irq_enter_rcu/irq_exit_rcu), so an IRQ nested in it
    // never preempts; the count is back before irqentry_exit decides.
    let hardirq = usize::from(vector) >= FIRST_EXTERNAL_VECTOR;
    if hardirq {
        sched::hardirq_enter();
    }
    if hardirq && regs.user_mode() {
        user::counters::USER_IRQS.fetch_add(1, Ordering::Relaxed);
    }
    // The fault of a refused IRET to user mode is the user's, and no hook
    // may claim it: returning would meet the same IRET again.
    let bad_iret = check::take_bad_iret_frame(regs);
    if !bad_iret && hooks::event_hook_claims(regs, vector) {
    } else if hardirq {
        irq::handle(regs, vector);
    } else if regs.user_mode() {
        user::handle_exception(regs, vector, fault_address);
    } else {
        handle_kernel_exception(regs, vector, fault_address);
    }
    if hardirq {
        sched::hardirq_exit();
        // The handler is done: a preemption on the way out (irqentry_exit)
        // is the task's, not IRQ context (Linux would be off the IRQ stack),
        // and a call trace from there must say so.
        // SAFETY: a whole ExtendedPtRegs surrounds `regs` (this function's contract), whose
        // provenance reaches below it (ExtendedPtRegs::from_regs); the `&mut` reborrows `regs`
        // for this statement only, and nothing else refers to the frame.
        unsafe { ExtendedPtRegs::from_regs(regs) }.generic.mark_hardirq_done();
    }
}

/// NMI, #DB, #MC and #DF: [`paranoid::enter`] before anything else (DR7,
/// DR6, the #DB IST shift, CR2), then the NMI flavour of the generic entry.
/// An NMI nested in an NMI from user mode is latched before all that, and
/// the user-mode NMI's handler runs again ([`nmi::latch_inside_user_nmi`]).
///
/// #DF and #MC never return: no hook is offered them, the frame is dumped
/// and the kernel dies (a double fault's frame can't be trusted to return
/// to; a machine check in the kernel is not recoverable here).
///
/// # Safety
///
/// As [`extregs_exception_entry`].
unsafe fn paranoid_entry(regs: &mut PtRegs, vector: u8) {
    if vector == NMI_VECTOR && nmi::latch_inside_user_nmi(regs) {
        // Nested in an NMI from user mode: that one runs again instead.
        return;
    }
    let saved = paranoid::enter(vector);
    // #DB and #MC from user mode were moved to the task stack by their
    // stub; an NMI from user mode was too but stays an NMI (Linux's exc_nmi
    // does); a #DF never moves and always dies here.
    if regs.user_mode() && matches!(vector, DEBUG_VECTOR | MACHINE_CHECK_VECTOR) {
        // SAFETY: per this function's contract.
        unsafe { paranoid_entry_from_user(regs, vector, saved) };
        return;
    }
    let user_nmi = regs.user_mode() && vector == NMI_VECTOR;
    if user_nmi {
        user::counters::USER_NMIS.fetch_add(1, Ordering::Relaxed);
        user::counters::CPU_USER_NMIS[crate::arch::percpu::this_cpu()]
            .fetch_add(1, Ordering::Relaxed);
    }
    loop {
        // SAFETY: per this function's contract.
        unsafe {
            run_entry(
                regs,
                vector,
                GenericEntry::Nmi,
                |regs| {
                    // NMI_OFFSET in the preempt count while the handler runs
                    // (Linux's __nmi_enter): nothing in it may schedule.
                    sched::nmi_enter();
                    match vector {
                        DOUBLE_FAULT_VECTOR => oops::die_double_fault(regs),
                        MACHINE_CHECK_VECTOR => oops::die_machine_check(regs),
                        _ if hooks::event_hook_claims(regs, vector) => {}
                        NMI_VECTOR => nmi::handle(regs),
                        _ => handle_kernel_exception(regs, vector, None),
                    }
                    sched::nmi_exit();
                },
                || {},
            )
        };
        if !(user_nmi && nmi::restart_user_nmi()) {
            break;
        }
    }
    paranoid::exit(saved);
    if regs.user_mode() {
        user::counters::IRET_EXITS.fetch_add(1, Ordering::Relaxed);
    }
}

/// #DB or #MC from user mode (Linux's `exc_debug_user`): the frame is
/// at task_pt_regs, so it is an ordinary entry from user mode: the user
/// path of the generic entry, no NMI_OFFSET, and the exit-to-user work,
/// which may switch tasks or kill this one. So the paranoid state (DR7,
/// the #DB IST shift, CR2) is put back *before* that exit.
///
/// # Safety
///
/// As [`extregs_exception_entry`].
unsafe fn paranoid_entry_from_user(regs: &mut PtRegs, vector: u8, saved: paranoid::ParanoidState) {
    // SAFETY: per this function's contract.
    unsafe {
        run_entry(
            regs,
            vector,
            GenericEntry::Irq,
            |regs| match vector {
                MACHINE_CHECK_VECTOR => oops::die_machine_check(regs),
                _ if hooks::event_hook_claims(regs, vector) => {}
                _ => user::handle_exception(regs, vector, None),
            },
            || paranoid::exit(saved),
        )
    };
    user::counters::IRET_EXITS.fetch_add(1, Ordering::Relaxed);
}

/// A kernel-mode exception (not an IRQ, not #DF/#MC): the int3 the NMI
/// selftest raises, PKS faults for their key's handler, then the installed
/// trap hook. `fault_address`: CR2 as the #PF entry read it first thing.
fn handle_kernel_exception(regs: &mut PtRegs, vector: u8, fault_address: Option<u64>) {
    if vector == idt::BREAKPOINT_VECTOR && nmi::claim_int3(regs) {
        return;
    }
    if let Some(address) = fault_address {
        if pks::handle_fault(regs, address) {
            return;
        }
    }
    if !hooks::trap_hook_claims(regs, vector) {
        oops::die_unhandled(regs, vector, fault_address);
    }
}
