//! The frame checker: what every handler verifies about its own frame,
//! after the generic entry and before the handler body runs.
//!
//! Each check is one the extended-frame design promises (the extension at
//! its fixed place, the vector it records, the kernel's GS, the default
//! PKRS while a handler runs, the frame on the stack it belongs to). A
//! failure is counted for the `RESULT` line (`frame_errors`) and reported
//! once; RCU not watching, and an NMI handled inside an NMI, are BUGs, as
//! in Linux.

use crate::arch::gdt;
use crate::arch::idt::{DEBUG_VECTOR, DOUBLE_FAULT_VECTOR, MACHINE_CHECK_VECTOR, NMI_VECTOR};
use crate::arch::percpu::PerCpu;
use crate::arch::{irqflags, pks};
use crate::debug::{oops, result};
use crate::entry::{hooks, nmi, platform};
use crate::sched;
use core::sync::atomic::{AtomicU64, Ordering};
use extregs_regs::NR_CPUS;
use extregs_regs::{
    ExtendedPtRegs, PtRegs, ENTRY_SYSCALL, ENTRY_VECTOR_RECORDED, GENERIC_PTREGS_SIZE,
};

/// Frames from user mode checked since boot (`mode=user` reports them).
static USER_FRAMES_CHECKED: AtomicU64 = AtomicU64::new(0);

/// Frames from user mode checked since boot.
pub fn user_frames_checked() -> u64 {
    USER_FRAMES_CHECKED.load(Ordering::Relaxed)
}

/// The IST stack a vector's gate switches to.
pub fn ist_index_of(vector: u8) -> Option<u16> {
    match vector {
        DOUBLE_FAULT_VECTOR => Some(gdt::DOUBLE_FAULT_IST_INDEX),
        NMI_VECTOR => Some(gdt::NMI_IST_INDEX),
        DEBUG_VECTOR => Some(gdt::DEBUG_IST_INDEX),
        MACHINE_CHECK_VECTOR => Some(gdt::MACHINE_CHECK_IST_INDEX),
        _ => None,
    }
}
/// The checks every handler runs on its own frame, after the generic entry:
///
/// * RCU is watching (irqentry_enter made it watch if the CPU was idle);
/// * the extension sits exactly `GENERIC_PTREGS_SIZE` below `PtRegs`, and
///   records the vector (or SYSCALL) that entered the frame (the stub
///   wrote it; this compares it with the one the dispatcher was given);
/// * `cs`/`ss` are the kernel's selectors, or SS is null (ring 0 only);
/// * the live PKRS is the default (the arch hook installed it);
/// * a paranoid entry's frame lies on its IST stack, and the NMI's PtRegs
///   ends exactly at the copied frame at the top of the NMI stack; any
///   other frame not on an IST stack lies on the running task's stack;
/// * an NMI never interrupted code running on the NMI stack: a nested NMI
///   must have been latched by the entry, not handled (a BUG otherwise).
///
/// A failure is counted (`frame_errors` in RESULT) and reported once per
/// kind of failure; RCU not watching is a BUG, as in Linux.
pub fn check_frame(regs: &mut PtRegs, vector: u8) {
    check_frame_of(regs, Some(vector));
}

/// [`check_frame`] for the frame `entry_SYSCALL_64` built.
pub fn check_syscall_frame(regs: &mut PtRegs) {
    check_frame_of(regs, None);
}

/// The frame the bad-IRET fixup (`user::extregs_fixup_bad_iret`) built on
/// this CPU, until its fault has been handled (0: none). That frame
/// carries the IRET words the CPU refused, so its SS may be anything user
/// code asked for (Linux's fixup passes them on the same way): only its
/// selectors are exempt from the checks. The dispatcher also keeps the
/// hooks away from its fault ([`take_bad_iret_frame`]).
static BAD_IRET_FRAME: PerCpu<AtomicU64> = PerCpu::new([const { AtomicU64::new(0) }; NR_CPUS]);

/// Records the frame a bad-IRET fixup built at `address` on this CPU.
pub fn mark_bad_iret_frame(address: u64) {
    BAD_IRET_FRAME.this().store(address, Ordering::Relaxed);
}

/// Is `regs` the frame of a bad-IRET fixup on this CPU? Clears the mark:
/// the dispatcher asks once, as the fault is handled.
pub fn take_bad_iret_frame(regs: &PtRegs) -> bool {
    let address = regs as *const PtRegs as u64;
    BAD_IRET_FRAME.this().compare_exchange(address, 0, Ordering::Relaxed, Ordering::Relaxed).is_ok()
}

/// The checks of a frame from user mode: Linux's selectors, exactly at
/// task_pt_regs of the running task (the extension right below it, the
/// top of its kernel stack), and user mode ran with the default PKRS.
fn check_user_frame(regs: &mut PtRegs, regs_address: u64) -> Option<&'static str> {
    USER_FRAMES_CHECKED.fetch_add(1, Ordering::Relaxed);
    let slot = sched::current_slot();
    // SAFETY: `regs` is an entry frame (the callers' contract).
    let saved_pkrs = unsafe { ExtendedPtRegs::from_regs(regs) }.arch.pks;
    let bad_iret_frame = BAD_IRET_FRAME.this().load(Ordering::Relaxed) == regs_address;
    let selectors_ok = regs.cs == u64::from(gdt::USER_CS.0)
        && (regs.ss == u64::from(gdt::USER_DS.0) || bad_iret_frame);
    if !selectors_ok {
        Some("user frame's cs/ss are not __USER_CS/__USER_DS")
    } else if regs_address != sched::task::task_pt_regs(slot) as u64 {
        Some("user frame is not at task_pt_regs of the running task")
    } else if pks::enabled() && saved_pkrs != pks::PKRS_DEFAULT {
        Some("user mode ran with a PKRS other than the default")
    } else {
        None
    }
}

fn check_frame_of(regs: &mut PtRegs, vector: Option<u8>) {
    // A SYSCALL's frame: checked as a user frame (no vector).
    let is_syscall = vector.is_none();
    let vector = vector.unwrap_or(u8::MAX);
    result::count_frame_checked();
    if !irqflags::rcu_is_watching() {
        oops::bug(regs, vector, "RCU is not watching in an interrupt handler");
    }
    // (With the fuzzer's hook installed, the fuzzer reports this itself,
    // with its seed and event path.)
    if vector == NMI_VECTOR
        && gdt::ist_stack_of(regs.sp) == Some(gdt::NMI_IST_INDEX)
        && !hooks::event_hook_installed()
    {
        // The entry let an NMI nest inside the NMI handler as if it were
        // the outermost one: its frame now overlays the first NMI's.
        oops::bug(regs, vector, "NMI handled while an NMI was running (not latched)");
    }
    let regs_address = regs as *mut PtRegs as u64;
    // SAFETY: `regs` is an entry-stub frame (only the IDT and SYSCALL
    // entries' handlers call this), the `&mut` theirs.
    let frame = unsafe { ExtendedPtRegs::from_regs(regs) };
    let (extension_address, recorded) = (frame as *mut _ as u64, frame.generic.vector);
    // The raw field, exactly as a stub writes it (no ENTRY_HARDIRQ_DONE a
    // stale value could carry).
    let entered =
        if is_syscall { ENTRY_SYSCALL } else { ENTRY_VECTOR_RECORDED | u16::from(vector) };
    let mut error = None;
    if regs_address - extension_address != GENERIC_PTREGS_SIZE as u64 {
        error = Some("extension is not GENERIC_PTREGS_SIZE below PtRegs");
    } else if recorded != entered {
        error = Some("the extension does not record the vector that entered the frame");
    } else if gs_base() != gdt::kernel_gs_base() {
        error = Some("GS base in the handler is not the per-CPU area (SWAPGS missed)");
    } else if platform::take_context_tracking_errors() != 0 {
        error = Some("entry from user mode found context tracking in kernel mode");
    } else if (regs.user_mode() || is_syscall) && vector != DOUBLE_FAULT_VECTOR {
        // (A #DF from user mode stays on its IST: checked as paranoid.)
        error = check_user_frame(regs, regs_address);
    } else if regs.user_mode()
        && (regs.cs != u64::from(gdt::USER_CS.0) || regs.ss != u64::from(gdt::USER_DS.0))
    {
        error = Some("user frame's cs/ss are not __USER_CS/__USER_DS");
    } else if !regs.user_mode()
        && (regs.cs != u64::from(gdt::KERNEL_CS.0)
            || (regs.ss != u64::from(gdt::KERNEL_DS.0) && regs.ss != 0))
    {
        // SS is the kernel's, or null: a 64-bit IST switch loads a null SS,
        // so code running in an IST handler (the int3 inside an NMI) is
        // interrupted with SS = 0.
        error = Some("cs/ss are not the kernel's");
    } else if pks::enabled() && pks::read_pkrs() != pks::PKRS_DEFAULT {
        error = Some("live PKRS in the handler is not the default");
    } else if let Some(ist) = ist_index_of(vector) {
        if gdt::ist_stack_of(regs_address) != Some(ist) {
            error = Some("paranoid frame is not on its IST stack");
        } else if vector == NMI_VECTOR && regs_address != nmi::outermost_regs_address() {
            error = Some("NMI PtRegs is not built on the copied frame at the NMI stack top");
        }
    } else if gdt::ist_stack_of(regs_address).is_none() && !sched::on_current_stack(regs_address) {
        // Not on an IST stack (an exception inside a paranoid handler
        // stays there): then on the running task's own stack, where a
        // preempted frame also waits until its task runs again.
        error = Some("frame is not on the running task's stack");
    }
    if let Some(why) = error {
        if result::count_frame_error() == 0 {
            if is_syscall {
                println!("extregs: bad SYSCALL frame: {why} (PtRegs at {regs_address:#x})");
            } else {
                println!(
                    "extregs: bad frame on vector {vector}: {why} (PtRegs at {regs_address:#x})"
                );
            }
        }
    }
}

/// The live GS base (MSR_GS_BASE).
fn gs_base() -> u64 {
    x86_64::registers::model_specific::GsBase::read().as_u64()
}
