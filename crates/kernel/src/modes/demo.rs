//! `mode=demo` (the default): the extended frame at work in one picture.
//!
//! The kernel grants itself pkey 1 (PKRS non-default), executes `int3`, and
//! the handler prints show_regs: the saved PKRS (the interrupted context's)
//! next to the live one (the entry default). After IRET the kernel checks it
//! got its PKRS back.

use crate::arch::memory::PkeyPage;
use crate::arch::pks::{self, KeyRights, PKRS_DEFAULT};
use crate::debug::{result, show_regs};
use crate::entry::events::{self, expect_event, FrameEdit};
use crate::entry::hooks;
use extregs_regs::PtRegs;

/// Prints show_regs for the demo's int3, then lets the recording hook
/// capture the frame and resume.
fn show_and_record(regs: &mut PtRegs, vector: u8) -> bool {
    if vector != 3 || events::observed().is_some() {
        return false;
    }
    println!("extregs: demo: in the int3 handler; show_regs of the interrupted context:");
    // SAFETY: hooks only get PtRegs from entry-stub frames.
    unsafe { show_regs::show_regs(regs) };
    events::recording_hook(regs, vector)
}

/// Runs the demo; true when every check held.
pub fn run(pkey_page: Option<PkeyPage>) -> bool {
    let interrupted = match pkey_page {
        Some(page) => {
            let granted = pks::with_key_rights(PKRS_DEFAULT, page.pkey, KeyRights::ReadWrite);
            println!(
                "extregs: demo: granting pkey {} read/write: PKRS {:08x} -> {:08x}",
                page.pkey, PKRS_DEFAULT, granted
            );
            // The running task's own PKRS (init's), and the live one.
            crate::sched::pks_set_readwrite(page.pkey);
            // SAFETY: the page is mapped and its key is now granted.
            let value = unsafe { core::ptr::read_volatile(page.address.as_ptr::<u64>()) };
            println!(
                "extregs: demo: read {:#018x} from the pkey-{} page at {:#x}",
                value,
                page.pkey,
                page.address.as_u64()
            );
            Some(granted)
        }
        None => {
            println!("extregs: demo: no PKS on this CPU; showing the frame without it");
            None
        }
    };
    println!("extregs: demo: executing int3");
    events::arm(FrameEdit::None);
    hooks::with_trap_hook(show_and_record, || expect_event!(setup: [], event: "int3"));
    let after = pks::enabled().then(pks::read_pkrs);
    if let Some(page) = pkey_page {
        crate::sched::pks_set_noaccess(page.pkey);
    }
    let Some(observed) = events::observed() else {
        println!("extregs: demo: the int3 handler never ran");
        result::emit(false, format_args!(",\"error\":\"int3 handler did not run\""));
        return false;
    };
    match (interrupted, after) {
        (Some(interrupted), Some(after)) => {
            let ok = observed.saved_pkrs == interrupted
                && observed.live_pkrs == PKRS_DEFAULT
                && after == interrupted;
            println!(
                "extregs: demo: saved PKRS {:08x}, live in handler {:08x}, after IRET {:08x}: {}",
                observed.saved_pkrs,
                observed.live_pkrs,
                after,
                if ok { "restored" } else { "WRONG" }
            );
            result::emit(
                ok,
                format_args!(
                    ",\"saved_pkrs\":\"{:08x}\",\"live_pkrs_in_handler\":\"{:08x}\",\"pkrs_after_iret\":\"{:08x}\"",
                    observed.saved_pkrs, observed.live_pkrs, after
                ),
            );
            ok
        }
        _ => {
            result::emit(true, format_args!(""));
            true
        }
    }
}
