//! The Rust side of every exception entry.
//!
//! `entry_64.S` calls [`extregs_exception_entry`] with `&mut PtRegs` and the
//! vector. It runs the generic entry (which saves PKRS and the generic state
//! into the extension), offers the event to the installed trap hook, and
//! treats anything unclaimed as an oops.

use crate::{oops, pks};
use core::sync::atomic::{AtomicBool, AtomicPtr, Ordering};
use extregs_entry::{irqentry_enter, irqentry_exit, EntryPlatform};
use extregs_regs::{ArchExtRegs, PtRegs};

/// A handler that may claim an event: returns true when it handled it (and
/// may edit the frame on the way).
pub type TrapHook = fn(regs: &mut PtRegs, vector: u8) -> bool;

/// The installed hook, as a raw function pointer (null: none). An atomic
/// rather than a lock, so a trap can read it whatever the trapped code held.
static TRAP_HOOK: AtomicPtr<()> = AtomicPtr::new(core::ptr::null_mut());

/// RCU model: is RCU watching this CPU? The kernel never idles yet, so it
/// always is; the entry code still checks it and records `exit_rcu`.
static RCU_WATCHING: AtomicBool = AtomicBool::new(true);
/// Lockdep model: were hardirqs enabled (mirrors IF)?
static HARDIRQS_ENABLED: AtomicBool = AtomicBool::new(false);

/// The kernel's side of the generic entry code.
pub struct KernelPlatform;

impl EntryPlatform for KernelPlatform {
    fn rcu_is_watching() -> bool {
        RCU_WATCHING.load(Ordering::Relaxed)
    }
    fn rcu_irq_enter() {
        RCU_WATCHING.store(true, Ordering::Relaxed);
    }
    fn rcu_irq_exit() {
        RCU_WATCHING.store(false, Ordering::Relaxed);
    }
    fn lockdep_hardirqs_enabled() -> bool {
        HARDIRQS_ENABLED.load(Ordering::Relaxed)
    }
    fn lockdep_set_hardirqs_enabled(enabled: bool) {
        HARDIRQS_ENABLED.store(enabled, Ordering::Relaxed);
    }
    fn arch_enter(arch: &mut ArchExtRegs) {
        pks::arch_enter(arch);
    }
    fn arch_exit(arch: &ArchExtRegs) {
        pks::arch_exit(arch);
    }
}

/// Runs `body` with `hook` offered every exception, then removes it.
pub fn with_trap_hook<T>(hook: TrapHook, body: impl FnOnce() -> T) -> T {
    TRAP_HOOK.store(hook as *mut (), Ordering::SeqCst);
    let result = body();
    TRAP_HOOK.store(core::ptr::null_mut(), Ordering::SeqCst);
    result
}

fn installed_hook() -> Option<TrapHook> {
    let raw = TRAP_HOOK.load(Ordering::SeqCst);
    if raw.is_null() {
        return None;
    }
    // SAFETY: the only non-null value ever stored is a `TrapHook` cast to a
    // pointer in `with_trap_hook`; fn pointers and data pointers have the same
    // size and representation on x86_64.
    Some(unsafe { core::mem::transmute::<*mut (), TrapHook>(raw) })
}

/// Called by `extregs_entry_common` in entry_64.S for every exception.
///
/// # Safety
///
/// Only the entry stubs call this, with `regs` pointing at the `PtRegs` of
/// the frame they just built (extension below it) and `vector` the vector
/// they were entered through.
#[no_mangle]
pub unsafe extern "C" fn extregs_exception_entry(regs: &mut PtRegs, vector: u64) {
    // SAFETY: the stub built a whole ExtendedPtRegs around `regs`.
    unsafe { irqentry_enter::<KernelPlatform>(regs) };
    let vector = vector as u8;
    let handled = installed_hook().is_some_and(|hook| hook(regs, vector));
    if !handled {
        oops::die_unhandled(regs, vector);
    }
    // SAFETY: the same frame irqentry_enter ran on.
    unsafe { irqentry_exit::<KernelPlatform>(regs) };
}

/// Is RCU watching this CPU (the model the generic entry code maintains)?
pub fn rcu_is_watching() -> bool {
    RCU_WATCHING.load(Ordering::Relaxed)
}

/// Marks this CPU as (not) watching, as entering or leaving idle would.
pub fn set_rcu_watching(watching: bool) {
    RCU_WATCHING.store(watching, Ordering::Relaxed);
}
