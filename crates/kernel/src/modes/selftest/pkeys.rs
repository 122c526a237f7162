//! Selftests of the PKS policy: the per-key fault callback (Linux
//! `pks_test`'s RUN_EXCEPTION checks), the PKRS cache, and the access
//! matrix of kvm-unit-tests `x86/pks.c`.

use super::{check, observed_or_fail, Context, Outcome, PF_PRESENT, PF_PROTECTION_KEY, PF_WRITE};
use crate::arch::pks::{self, KeyRights, PksFault, PKRS_DEFAULT};
use crate::entry::events::{self, expect_event, FrameEdit};
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use extregs_regs::{ExtendedPtRegs, PtRegs};
use x86_64::registers::control::{Cr0, Cr0Flags};

/// What the callback saw: saved PKRS, live PKRS, calls.
static CALLBACK_SAVED: AtomicU32 = AtomicU32::new(0);
static CALLBACK_LIVE: AtomicU32 = AtomicU32::new(0);
static CALLBACK_CALLS: AtomicU64 = AtomicU64::new(0);

/// The test key's handler: record, then grant read/write in the *saved*
/// PKRS so the faulting load succeeds when retried.
fn grant_on_fault(regs: &mut PtRegs, fault: PksFault) -> bool {
    if CALLBACK_CALLS.fetch_add(1, Ordering::SeqCst) > 0 {
        // The retry faulted again: the grant never reached PKRS. Leave it
        // unresolved (an oops) rather than granting forever.
        return false;
    }
    // SAFETY: PKS fault handlers get the #PF stub's frame.
    let saved = unsafe { ExtendedPtRegs::from_regs(regs) }.arch.pks;
    CALLBACK_SAVED.store(saved, Ordering::SeqCst);
    CALLBACK_LIVE.store(pks::read_pkrs(), Ordering::SeqCst);
    // SAFETY: as above.
    unsafe { pks::pks_update_saved(regs, fault.pkey, KeyRights::ReadWrite) }
}

pub fn pks_fault_callback_run_exception(context: &Context) -> Outcome {
    let Some(page) = context.pkey_page else {
        return Outcome::Skip("no PKS");
    };
    // The interrupted context: the default, plus key 2 read-only so its
    // value is distinct from what the handler runs with; the test key stays
    // access-disabled.
    let interrupted = pks::with_key_rights(PKRS_DEFAULT, 2, KeyRights::ReadOnly);
    CALLBACK_CALLS.store(0, Ordering::SeqCst);
    pks::register_fault_handler(page.pkey, grant_on_fault);
    // SAFETY: PKS is on; key 0 stays read/write.
    unsafe { pks::write_pkrs(interrupted) };
    // SAFETY: the page is mapped; its key is access-disabled, so this load
    // faults, the callback grants the key in the saved PKRS, and the retried
    // load succeeds.
    let value = unsafe { core::ptr::read_volatile(page.address.as_ptr::<u64>()) };
    let after = pks::read_pkrs();
    pks::unregister_fault_handler(page.pkey);
    check!(
        CALLBACK_CALLS.load(Ordering::SeqCst) == 1,
        "{} callbacks",
        CALLBACK_CALLS.load(Ordering::SeqCst)
    );
    check!(value == super::PKEY_PAGE_FILL, "read {value:#x} after the retry");
    // pks_test RUN_EXCEPTION's three checks.
    let saved = CALLBACK_SAVED.load(Ordering::SeqCst);
    check!(
        saved == interrupted,
        "saved PKRS {saved:08x}, interrupted context had {interrupted:08x}"
    );
    let live = CALLBACK_LIVE.load(Ordering::SeqCst);
    check!(live == PKRS_DEFAULT, "live PKRS in the fault {live:08x}, default {PKRS_DEFAULT:08x}");
    let edited = pks::with_key_rights(interrupted, page.pkey, KeyRights::ReadWrite);
    check!(after == edited, "PKRS after return {after:08x}, callback-edited saved {edited:08x}");
    Outcome::Pass
}

pub fn pkrs_cache_skips_wrmsr(context: &Context) -> Outcome {
    let Some(page) = context.pkey_page else {
        return Outcome::Skip("no PKS");
    };
    check!(pks::read_pkrs() == pks::cached_pkrs(), "cache {:08x} != MSR", pks::cached_pkrs());
    // Interrupted with the default: entry and exit write nothing.
    let before = pks::wrmsr_count();
    events::arm(FrameEdit::None);
    expect_event!(setup: [], event: "int3");
    let _ = observed_or_fail!();
    check!(
        pks::wrmsr_count() == before,
        "{} WRMSRs for a default-PKRS int3",
        pks::wrmsr_count() - before
    );
    // Interrupted with another value: one WRMSR in, one out.
    let other = pks::with_key_rights(PKRS_DEFAULT, page.pkey, KeyRights::ReadOnly);
    // SAFETY: PKS is on; key 0 stays read/write.
    unsafe { pks::write_pkrs(other) };
    let before = pks::wrmsr_count();
    events::arm(FrameEdit::None);
    expect_event!(setup: [], event: "int3");
    let _ = observed_or_fail!();
    check!(
        pks::wrmsr_count() == before + 2,
        "{} WRMSRs for a non-default int3",
        pks::wrmsr_count() - before
    );
    check!(pks::read_pkrs() == other && pks::cached_pkrs() == other, "PKRS/cache after IRET");
    Outcome::Pass
}

/// Reads or writes one word at `address` with the recording hook armed;
/// returns the #PF error code if it faulted.
fn probe(address: u64, write: bool) -> Result<Option<u64>, ()> {
    events::arm(FrameEdit::None);
    if write {
        expect_event!(setup: [], event: "movq %rcx, ({address})", address = in(reg) address, in("rcx") super::PKEY_PAGE_FILL);
    } else {
        expect_event!(setup: [], event: "movq ({address}), %rcx", address = in(reg) address, out("rcx") _);
    }
    match events::observed() {
        None => Ok(None),
        Some(observed) if observed.vector == 14 => Ok(Some(observed.regs.orig_ax)),
        Some(observed) => {
            println!("# vector {} while probing {address:#x}", observed.vector);
            Err(())
        }
    }
}

pub fn pks_kvm_unit_tests_matrix(context: &Context) -> Outcome {
    let (Some(page), Some(user_page)) = (context.pkey_page, context.user_pkey_page) else {
        return Outcome::Skip("no PKS");
    };
    let pk_fault =
        |write: bool| Some(PF_PRESENT | PF_PROTECTION_KEY | if write { PF_WRITE } else { 0 });
    let original_cr0 = Cr0::read();
    let mut outcome = Outcome::Pass;
    'matrix: for write_protect in [true, false] {
        for rights in [KeyRights::NoAccess, KeyRights::ReadOnly] {
            // SAFETY: toggling CR0.WP only changes whether supervisor writes
            // honour read-only PTEs (and PKS write-disable); the kernel
            // writes no read-only page while it is off.
            unsafe {
                Cr0::update(|flags| flags.set(Cr0Flags::WRITE_PROTECT, write_protect));
            }
            let pkrs = pks::with_key_rights(PKRS_DEFAULT, page.pkey, rights);
            // SAFETY: PKS is on; key 0 stays read/write.
            unsafe { pks::write_pkrs(pkrs) };
            // Supervisor page: AD stops reads and writes; WD stops writes
            // only while CR0.WP is set.
            let expected_read = if rights == KeyRights::NoAccess { pk_fault(false) } else { None };
            let expected_write = match rights {
                KeyRights::NoAccess => pk_fault(true),
                _ if write_protect => pk_fault(true),
                _ => None,
            };
            let cases = [
                ("supervisor read", page.address.as_u64(), false, expected_read),
                ("supervisor write", page.address.as_u64(), true, expected_write),
                // User pages are never subject to PKRS.
                ("user read", user_page.address.as_u64(), false, None),
                ("user write", user_page.address.as_u64(), true, None),
            ];
            for (what, address, write, expected) in cases {
                // The user page is touched in a STAC window (SMAP).
                let got = if what.starts_with("user") {
                    crate::arch::uaccess::with_user_access(|| probe(address, write))
                } else {
                    probe(address, write)
                };
                if got != Ok(expected) {
                    println!(
                        "# {what} with {} WP={}: got {:?}, expected {:?}",
                        rights.short(),
                        u8::from(write_protect),
                        got,
                        expected
                    );
                    outcome = Outcome::Fail;
                    break 'matrix;
                }
            }
        }
    }
    // SAFETY: restores the CR0 the kernel booted with.
    unsafe { Cr0::write(original_cr0) };
    outcome
}
