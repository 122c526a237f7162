//! Selftests of the paranoid (IST) entries: NMI (self-NMI, the lockdep
//! round trip, and the nested-NMI case), #DB (single-step and a DR0
//! breakpoint). (The #MC entry never returns: `mode=oops cause=machine-check`
//! tests it.) Each checks that the frame is on its IST
//! stack and that PKRS is saved and restored like on every other path.

use super::{
    check, check_frame, observed_or_fail, wait_until, Context, Outcome, EVENT_TIMEOUT_TSC,
};
use crate::arch::gdt::nmi_nesting_state as nmi_state;
use crate::arch::irqflags;
use crate::arch::pks::{self, KeyRights, PKRS_DEFAULT};
use crate::arch::{apic, gdt};
use crate::entry::events::{self, expect_event, FrameEdit, Observed, FAULT_IP, RESUME_IP};
use crate::entry::nmi::{self, NmiAction};
use core::sync::atomic::Ordering;
use extregs_regs::nmi_state as state;

/// DR6.B0 (breakpoint 0 hit) and DR6.BS (single step).
const DR6_B0: u64 = 1 << 0;
const DR6_BS: u64 = 1 << 14;

/// A PKRS value the interrupted context runs with: the test key granted, so
/// the saved value differs from the default the handler must see.
fn interrupted_pkrs(context: &Context) -> Option<u32> {
    let page = context.pkey_page?;
    let value = pks::with_key_rights(PKRS_DEFAULT, page.pkey, KeyRights::ReadWrite);
    // SAFETY: PKS is on (there is a pkey page); key 0 stays read/write.
    unsafe { pks::write_pkrs(value) };
    Some(value)
}

/// The PKRS checks every paranoid frame gets (when PKS is on).
fn check_pkrs(observed: &Observed, interrupted: Option<u32>) -> Outcome {
    let Some(interrupted) = interrupted else {
        return Outcome::Pass;
    };
    check!(observed.saved_pkrs == interrupted, "saved PKRS {:08x}", observed.saved_pkrs);
    check!(observed.live_pkrs == PKRS_DEFAULT, "live PKRS {:08x}", observed.live_pkrs);
    check!(pks::read_pkrs() == interrupted, "PKRS after IRET {:08x}", pks::read_pkrs());
    Outcome::Pass
}

fn check_on_ist(observed: &Observed, ist: u16) -> Outcome {
    check!(
        gdt::ist_stack_of(observed.regs_address) == Some(ist),
        "PtRegs at {:#x} is not on the {} IST stack",
        observed.regs_address,
        gdt::ist_stack_name(ist)
    );
    Outcome::Pass
}

/// Sends one self-NMI and waits for it; returns its logged frame.
fn self_nmi() -> Option<Observed> {
    nmi::take_log();
    let before = nmi::count_this_cpu();
    apic::send_self_nmi();
    if !wait_until(|| nmi::count_this_cpu() != before, EVENT_TIMEOUT_TSC) {
        return None;
    }
    nmi::take_log().0[0]
}

pub fn nmi_self_on_ist(context: &Context) -> Outcome {
    let interrupted = interrupted_pkrs(context);
    let Some(observed) = self_nmi() else {
        println!("# the self-NMI never arrived");
        return Outcome::Fail;
    };
    check!(observed.vector == 2, "vector {}", observed.vector);
    check!(
        observed.regs.orig_ax == extregs_regs::NO_ERROR_CODE,
        "orig_ax {:#x}",
        observed.regs.orig_ax
    );
    if let Outcome::Fail = check_on_ist(&observed, gdt::NMI_IST_INDEX) {
        return Outcome::Fail;
    }
    check!(
        observed.regs_address == nmi::outermost_regs_address(),
        "NMI PtRegs at {:#x}, expected on the copied frame at {:#x}",
        observed.regs_address,
        nmi::outermost_regs_address()
    );
    check!(nmi_state() == state::IDLE, "NMI state {} after the NMI", nmi_state());
    check_pkrs(&observed, interrupted)
}

pub fn nmi_lockdep_round_trip(_: &Context) -> Outcome {
    for enabled in [true, false] {
        if enabled {
            irqflags::local_irq_enable();
        }
        let observed = self_nmi();
        let after = irqflags::lockdep_hardirqs_enabled();
        irqflags::local_irq_disable();
        let Some(observed) = observed else {
            println!("# the self-NMI never arrived");
            return Outcome::Fail;
        };
        check!(
            observed.generic.lockdep_hardirqs_enabled == u8::from(enabled),
            "NMI saved lockdep_hardirqs_enabled={} (model said {enabled})",
            observed.generic.lockdep_hardirqs_enabled
        );
        check!(!observed.lockdep_hardirqs_enabled, "hardirqs 'enabled' inside the NMI");
        check!(after == enabled, "NMI exit left the model at {after}, was {enabled}");
    }
    Outcome::Pass
}

pub fn nmi_int3_self_nmi_nested(context: &Context) -> Outcome {
    // It counts this CPU's NMIs exactly: NMIs from outside wait meanwhile.
    apic::with_outside_nmis_held(|| nmi_int3_self_nmi_nested_counted(context))
}

fn nmi_int3_self_nmi_nested_counted(_: &Context) -> Outcome {
    // Inside the NMI handler: int3; from the int3 handler: a self-NMI. The
    // int3's IRETQ unblocks NMIs, so that NMI lands on the NMI stack while
    // the first is still running. It must be latched, not overwrite the
    // first NMI's frame; the first then repeats the handler for it.
    nmi::take_log();
    nmi::take_evidence();
    let before = nmi::count_this_cpu();
    nmi::set_action(NmiAction::Int3ThenSelfNmi);
    apic::send_self_nmi();
    let both = wait_until(|| nmi::count_this_cpu() >= before + 2, EVENT_TIMEOUT_TSC);
    check!(both, "{} of 2 NMIs completed", nmi::count_this_cpu() - before);
    check!(nmi::count_this_cpu() == before + 2, "{} NMIs", nmi::count_this_cpu() - before);
    check!(nmi_state() == state::IDLE, "NMI state {} afterwards", nmi_state());
    let Some(evidence) = nmi::take_evidence() else {
        println!("# the first NMI recorded no evidence (its int3 never ran?)");
        return Outcome::Fail;
    };
    check!(
        evidence.state_after_int3 == state::PENDING,
        "after the int3 the NMI state was {}, not PENDING: the second NMI was not latched",
        evidence.state_after_int3
    );
    if let Outcome::Fail = check_on_ist(&evidence.int3, gdt::NMI_IST_INDEX) {
        return Outcome::Fail;
    }
    let (log, length) = nmi::take_log();
    check!(length == 2, "{length} NMI handler runs logged");
    let (Some(first), Some(second)) = (log[0], log[1]) else {
        return Outcome::Fail;
    };
    // The int3 frame is below the first NMI's frame on the same stack.
    check!(
        evidence.int3.regs_address < first.extension_address,
        "int3 frame not below the NMI frame"
    );
    // The second NMI's CPU frame landed in the landing zone (it returned into
    // the first NMI's handler)...
    let top = evidence.stack_top;
    check!(
        top.landing.ip != first.regs.ip && top.landing.cs == u64::from(gdt::KERNEL_CS.0),
        "landing zone ip {:#x}: the nested NMI's frame did not land there",
        top.landing.ip
    );
    // ...while the copy the first NMI returns through stayed intact.
    check!(top.iret_copy == nmi::frame_of(&first.regs), "the first NMI's copied frame changed");
    // The repeat ran on the same frame, for the same interrupted context.
    check!(second.regs_address == first.regs_address, "repeat on a different frame");
    check!(
        nmi::frame_of(&second.regs) == nmi::frame_of(&first.regs),
        "repeat saw ip {:#x}, first saw {:#x}",
        second.regs.ip,
        first.regs.ip
    );
    check!(second.regs.gprs() == first.regs.gprs(), "repeat saw different GPRs");
    Outcome::Pass
}

pub fn debug_single_step_on_ist(context: &Context) -> Outcome {
    let interrupted = interrupted_pkrs(context);
    events::arm(FrameEdit::None);
    // POPF sets TF; the trap comes after the *next* instruction (the nop).
    expect_event!(
        setup: ["pushfq", "orq ${tf}, (%rsp)", "popfq"],
        event: "nop",
        tf = const crate::entry::events::X86_EFLAGS_TF
    );
    let observed = observed_or_fail!();
    if let Outcome::Fail = check_frame(&observed, 1, None, RESUME_IP.load(Ordering::SeqCst)) {
        return Outcome::Fail;
    }
    check!(observed.dr6 & DR6_BS != 0, "DR6 {:#x} without BS", observed.dr6);
    if let Outcome::Fail = check_on_ist(&observed, gdt::DEBUG_IST_INDEX) {
        return Outcome::Fail;
    }
    check_pkrs(&observed, interrupted)
}

pub fn debug_dr0_breakpoint_on_ist(context: &Context) -> Outcome {
    let interrupted = interrupted_pkrs(context);
    events::arm(FrameEdit::None);
    // DR0 = the event instruction, DR7.L0 with RW0 = LEN0 = 0 (execute): a
    // fault before it runs. The hook resumes after it; the #DB entry's exit
    // re-arms DR7, so the test disarms it once the event is over.
    expect_event!(
        setup: ["leaq 3f(%rip), %rcx", "movq %rcx, %dr0", "movq $1, %rcx", "movq %rcx, %dr7"],
        event: "nop",
        out("rcx") _
    );
    let dr7_after = crate::entry::paranoid::dr7();
    crate::entry::paranoid::disarm_breakpoints();
    check!(dr7_after & 1 == 1, "DR7 {dr7_after:#x} after the #DB: the entry did not restore it");
    let observed = observed_or_fail!();
    if let Outcome::Fail = check_frame(&observed, 1, None, FAULT_IP.load(Ordering::SeqCst)) {
        return Outcome::Fail;
    }
    check!(observed.dr6 & DR6_B0 != 0, "DR6 {:#x} without B0", observed.dr6);
    if let Outcome::Fail = check_on_ist(&observed, gdt::DEBUG_IST_INDEX) {
        return Outcome::Fail;
    }
    check_pkrs(&observed, interrupted)
}
