//! User access: SMEP and SMAP, and the one way kernel code touches user
//! memory ([`copy_from_user`], [`copy_to_user`], inside
//! [`with_user_access`]'s STAC window), as Linux's `uaccess.h`.
//!
//! The user address-space bounds live here too ([`USER_SPACE_BASE`],
//! [`TASK_SIZE_MAX`]): the checks below need them, and so do the syscall
//! exit's SYSRET test and the user layer's layout.

use crate::arch::{cpu, memory};
use core::sync::atomic::{AtomicBool, Ordering};
use x86_64::VirtAddr;

/// The user address space: level-4 slot 255.
pub const USER_SPACE_BASE: u64 = 0x7f80_0000_0000;

/// Linux's `TASK_SIZE_MAX`: the first address above user space (one page
/// below the canonical boundary). SYSRET is refused for RIPs at or above it
/// (the CVE-2012-0217 class: an Intel CPU raises the #GP of a non-canonical
/// RCX in ring 0, on the user's stack).
pub const TASK_SIZE_MAX: u64 = (1 << 47) - 4096;

const PAGE: u64 = 4096;

/// Is CR4.SMAP on (so kernel accesses to user pages need STAC)?
static SMAP_ENABLED: AtomicBool = AtomicBool::new(false);

/// Turns on SMEP (the kernel can't execute user pages) and SMAP (the
/// kernel can't touch user pages outside a STAC..CLAC window) where the
/// CPU has them, and tells the entry code to CLAC on entry. Boot, once.
pub fn enable_smep_smap(features: &cpu::CpuFeatures) {
    use x86_64::registers::control::{Cr4, Cr4Flags};
    // SAFETY: the kernel executes no user page, and touches user pages
    // only in `with_user_access` (the copy helpers) or through its
    // physical-map aliases; the entry code's CLAC flag is set right after.
    unsafe {
        Cr4::update(|flags| {
            flags.set(Cr4Flags::SUPERVISOR_MODE_EXECUTION_PROTECTION, features.smep);
            flags.set(Cr4Flags::SUPERVISOR_MODE_ACCESS_PREVENTION, features.smap);
        })
    };
    extregs_entry_asm::set_smap_enabled(features.smap);
    SMAP_ENABLED.store(features.smap, Ordering::Relaxed);
}

/// Is SMAP on?
pub fn smap_enabled() -> bool {
    SMAP_ENABLED.load(Ordering::Relaxed)
}

/// Runs `body` with RFLAGS.AC set when SMAP is on (Linux's
/// `user_access_begin()`/`user_access_end()`): the one window in which
/// kernel code may touch user pages. `body` must not schedule (a switch
/// does not save RFLAGS); an interrupt in the window clears AC for its
/// handler on entry and its IRETQ brings it back.
pub fn with_user_access<T>(body: impl FnOnce() -> T) -> T {
    let smap = smap_enabled();
    if smap {
        // SAFETY: STAC only sets AC (the CPU has SMAP: no #UD); it is
        // cleared again below before anything else runs.
        unsafe { core::arch::asm!("stac", options(nomem, nostack)) };
    }
    let result = body();
    if smap {
        // SAFETY: CLAC only clears AC.
        unsafe { core::arch::asm!("clac", options(nomem, nostack)) };
    }
    result
}

/// Why [`copy_from_user`]/[`copy_to_user`] refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadUserAddress;

/// Linux's `access_ok()` plus the page walk its fault fixup stands for:
/// `[address, address + length)` lies in user space (below
/// [`TASK_SIZE_MAX`]; the kernel's own lower-half pages are supervisor
/// pages, refused by the flags) and every page of it
/// is a present user page (writable too, when `write`).
fn user_range_ok(address: u64, length: usize, write: bool) -> bool {
    let Some(end) = address.checked_add(length as u64) else {
        return false;
    };
    if end > TASK_SIZE_MAX {
        return false;
    }
    let mut page = address & !(PAGE - 1);
    while page < end {
        use x86_64::structures::paging::PageTableFlags as Flags;
        let Some(flags) = memory::page_flags(VirtAddr::new(page)) else {
            return false;
        };
        if !flags.contains(Flags::PRESENT | Flags::USER_ACCESSIBLE)
            || (write && !flags.contains(Flags::WRITABLE))
        {
            return false;
        }
        page += PAGE;
    }
    true
}

/// Copies `destination.len()` bytes from user address `source`; refuses
/// (never faults) kernel, unmapped or straddling ranges.
///
/// Why the accesses are sound: every byte of a checked range stays on a
/// present user page (user pages are unmapped only by their own process's
/// `munmap`/`mprotect`/`mremap`/`brk`, and a process is one task, which is
/// busy in this copy; an interrupt in the middle only runs handlers, which
/// unmap nothing), and they happen
/// inside the STAC window. User pages are no Rust allocation: their frames
/// are otherwise reached only through the physical-map alias, by this
/// module, never while a copy runs, and the program text is also the
/// kernel's read-only `.text.extregs_user`, which no Rust code reads as
/// data. So no Rust reference aliases these bytes, and a pointer made from
/// the user address can only have that exposed address as its provenance.
/// The accesses are volatile bytes, which the compiler neither elides nor
/// widens.
pub fn copy_from_user(destination: &mut [u8], source: u64) -> Result<(), BadUserAddress> {
    if !user_range_ok(source, destination.len(), false) {
        return Err(BadUserAddress);
    }
    with_user_access(|| {
        for (offset, byte) in destination.iter_mut().enumerate() {
            // SAFETY: the byte is on a present user page (checked above; never unmapped), read in
            // the STAC window through a pointer whose provenance is the exposed user address; no
            // Rust allocation or reference covers user pages (the function doc has the argument).
            *byte = unsafe {
                core::ptr::read_volatile(core::ptr::with_exposed_provenance::<u8>(
                    (source + offset as u64) as usize,
                ))
            };
        }
    });
    Ok(())
}

/// Copies `source` to user address `destination`, with the checks of
/// [`copy_from_user`] (and writable pages).
pub fn copy_to_user(destination: u64, source: &[u8]) -> Result<(), BadUserAddress> {
    if !user_range_ok(destination, source.len(), true) {
        return Err(BadUserAddress);
    }
    with_user_access(|| {
        for (offset, byte) in source.iter().enumerate() {
            // SAFETY: as in `copy_from_user`: a present writable user page (never the read-only
            // text), in the STAC window, through a pointer made from a user address that no Rust
            // allocation or reference covers.
            unsafe {
                core::ptr::write_volatile(
                    core::ptr::with_exposed_provenance_mut::<u8>(
                        (destination + offset as u64) as usize,
                    ),
                    *byte,
                )
            };
        }
    });
    Ok(())
}
