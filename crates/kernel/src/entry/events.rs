//! Raising one expected exception and capturing its frame: the shared
//! machinery of the demo and the selftests.
//!
//! [`expect_event!`] records the address of the instruction that raises the
//! event (`3:`) and of the one after it (`4:`) in two statics, then runs it.
//! The [`recording_hook`] claims exactly one exception, snapshots the frame
//! and its extension, applies the requested [`FrameEdit`], and resumes at
//! `4:` (like a Linux exception-table fixup).

use crate::arch::idt::DEBUG_VECTOR;
use crate::arch::irqflags;
use crate::arch::pks;
use core::sync::atomic::{AtomicU64, Ordering};
use extregs_regs::{ExtendedPtRegs, GenericExtRegs, PtRegs};
use spin::Mutex;

/// Address of the instruction expected to raise the event.
pub static FAULT_IP: AtomicU64 = AtomicU64::new(0);
/// Where the handler resumes the interrupted code.
pub static RESUME_IP: AtomicU64 = AtomicU64::new(0);

/// What the handler saw.
#[derive(Clone, Copy, Debug)]
pub struct Observed {
    pub vector: u8,
    pub regs: PtRegs,
    pub generic: GenericExtRegs,
    /// `ext.arch.pks` as the handler found it.
    pub saved_pkrs: u32,
    /// PKRS live inside the handler (0 without PKS).
    pub live_pkrs: u32,
    pub regs_address: u64,
    pub extension_address: u64,
    pub cr2: u64,
    /// DR6 as the #DB entry found it (which debug condition hit); 0 for
    /// other vectors.
    pub dr6: u64,
    pub rcu_watching: bool,
    /// The lockdep model's "hardirqs enabled" inside the handler.
    pub lockdep_hardirqs_enabled: bool,
    /// RFLAGS.AC inside the handler (the entry clears it with SMAP).
    pub handler_ac: bool,
}

/// Snapshots a frame and the CPU state its handler runs with.
///
/// # Safety
///
/// `regs` must be the `PtRegs` of an entry-stub frame.
pub unsafe fn observe(regs: &mut PtRegs, vector: u8) -> Observed {
    let regs_address = regs as *mut PtRegs as u64;
    // SAFETY: per the function contract.
    let frame = unsafe { ExtendedPtRegs::from_regs(regs) };
    // The #DB entry read and reset DR6; it kept the value for the handler.
    let dr6 = if vector == DEBUG_VECTOR { crate::entry::paranoid::debug_status() } else { 0 };
    Observed {
        vector,
        regs: frame.regs,
        generic: frame.generic,
        saved_pkrs: frame.arch.pks,
        live_pkrs: if pks::enabled() { pks::read_pkrs() } else { 0 },
        regs_address,
        extension_address: frame as *mut ExtendedPtRegs as u64,
        cr2: x86_64::registers::control::Cr2::read_raw(),
        dr6,
        rcu_watching: irqflags::rcu_is_watching(),
        lockdep_hardirqs_enabled: irqflags::lockdep_hardirqs_enabled(),
        handler_ac: x86_64::registers::rflags::read()
            .contains(x86_64::registers::rflags::RFlags::ALIGNMENT_CHECK),
    }
}

/// A change the handler makes to the interrupted context, through
/// `&mut PtRegs` or the extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameEdit {
    None,
    /// Set R12 and RBX (RBX: the register LLVM reserves, so only the frame
    /// can carry a new value back).
    Gprs {
        r12: u64,
        bx: u64,
    },
    /// Grant `pkey` read/write in the saved PKRS.
    GrantPkey(u8),
}

static OBSERVED: Mutex<Option<Observed>> = Mutex::new(None);
static EDIT: Mutex<FrameEdit> = Mutex::new(FrameEdit::None);

/// Prepares for one event: clears the last observation, sets the edit.
pub fn arm(edit: FrameEdit) {
    *OBSERVED.lock() = None;
    *EDIT.lock() = edit;
}

/// What the handler saw of the last event, if it ran.
pub fn observed() -> Option<Observed> {
    *OBSERVED.lock()
}

/// Claims the first exception after [`arm`]; any second one is left to the
/// oops path, so a stray fault can't hide behind the test.
pub fn recording_hook(regs: &mut PtRegs, vector: u8) -> bool {
    let mut observed = OBSERVED.lock();
    if observed.is_some() {
        return false;
    }
    let edit = *EDIT.lock();
    // SAFETY: hooks only ever get the PtRegs of an entry-stub frame.
    *observed = Some(unsafe { observe(regs, vector) });
    // SAFETY: as above.
    let frame = unsafe { ExtendedPtRegs::from_regs(regs) };
    match edit {
        FrameEdit::None => {}
        FrameEdit::Gprs { r12, bx } => {
            frame.regs.r12 = r12;
            frame.regs.bx = bx;
        }
        FrameEdit::GrantPkey(pkey) => {
            // The tests' events never interrupt a PKRS write, so the grant
            // is never refused; if it were, the missing grant would show in
            // their checks of the PKRS after IRET.
            let rights = pks::KeyRights::ReadWrite;
            // SAFETY: `frame.regs` is the entry frame's PtRegs.
            let _granted = unsafe { pks::pks_update_saved(&mut frame.regs, pkey, rights) };
        }
    }
    if vector == DEBUG_VECTOR {
        // A single-step trap must not fire again on the way back. (DR7 is
        // the #DB entry's to restore: a test that armed a breakpoint
        // disarms it itself once the event is over.)
        frame.regs.flags &= !X86_EFLAGS_TF;
    }
    frame.regs.ip = RESUME_IP.load(Ordering::SeqCst);
    true
}

/// RFLAGS.TF: single-step.
pub const X86_EFLAGS_TF: u64 = 1 << 8;

/// Runs `setup` instructions, then the `event` instruction at label `3:`,
/// with label `4:` after it, recording both addresses for the hook first.
/// Extra operands (inputs, clobbers) follow; RAX is always clobbered.
macro_rules! expect_event {
    (setup: [$($setup:literal),*], event: $event:literal $(, $($operands:tt)+)?) => {
        // SAFETY: the instructions raise exactly one exception that the
        // installed recording hook claims and resumes past (label 4); all
        // registers they touch are declared as operands or clobbers.
        unsafe {
            core::arch::asm!(
                "leaq 3f(%rip), %rax",
                "movq %rax, {fault_ip}(%rip)",
                "leaq 4f(%rip), %rax",
                "movq %rax, {resume_ip}(%rip)",
                $($setup,)*
                "3:",
                $event,
                "4:",
                fault_ip = sym $crate::entry::events::FAULT_IP,
                resume_ip = sym $crate::entry::events::RESUME_IP,
                out("rax") _,
                $($($operands)+,)?
                options(att_syntax)
            )
        }
    };
}
pub(crate) use expect_event;
