//! The fuzzer's injected faults (`mode=fuzz inject=NAME`), for its proof
//! by mutation: each breaks one entry path on purpose so a test can show
//! the fuzzer reports it, naming the right invariant.
//!
//! The faults exist only in a fault-injection build
//! (`EXTREGS_FAULT_INJECTION=1`, which sets `cfg(fault_injection)` here, in
//! `extregs-entry-asm` and in `extregs-regs`); a normal kernel refuses
//! `inject=` and contains none of this code's effects.

use core::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use extregs_cmdline::Fault;

/// The active fault (index into `Fault::ALL` + 1), or 0.
static ACTIVE: AtomicU8 = AtomicU8::new(0);
/// Armed for the next arch exit / lockdep restore only.
static SKIP_NEXT_ARCH_EXIT: AtomicBool = AtomicBool::new(false);
static SKIP_NEXT_LOCKDEP_RESTORE: AtomicBool = AtomicBool::new(false);

fn index_of(fault: Fault) -> u8 {
    Fault::ALL.iter().position(|(f, _)| *f == fault).expect("every fault is listed") as u8 + 1
}

/// The command-line name of a fault.
pub fn name(fault: Fault) -> &'static str {
    Fault::ALL.iter().find(|(f, _)| *f == fault).map(|(_, name)| *name).unwrap_or("?")
}

/// Switches `fault` on for the rest of the run.
pub fn activate(fault: Fault) -> Result<(), &'static str> {
    if !cfg!(fault_injection) {
        return Err("this kernel was built without fault injection (build it with EXTREGS_FAULT_INJECTION=1)");
    }
    // The flags are global and armed for the next exit on any CPU: another
    // CPU's exit would consume them (or skip its own registers). The
    // shootdown fault is a plain switch, and needs a second CPU to matter.
    if fault != Fault::SkipTlbShootdown && crate::arch::smp::cpus_online() > 1 {
        return Err("fault injection runs on one CPU: boot with --smp 1");
    }
    ACTIVE.store(index_of(fault), Ordering::SeqCst);
    #[cfg(fault_injection)]
    match fault {
        Fault::ExtensionOffset => extregs_regs::FAULT_EXTENSION_SKEW.store(8, Ordering::SeqCst),
        // SAFETY: a flag byte in entry_64.S's .data that only the NMI stub
        // reads; one CPU, set before any NMI of the run.
        Fault::NmiReusesIstFrame => unsafe {
            (&raw mut extregs_entry_asm::faults::extregs_fault_nmi_reuse).write_volatile(1)
        },
        Fault::SkipTlbShootdown => crate::arch::tlb::skip_remote_flushes(),
        _ => {}
    }
    Ok(())
}

fn is_active(fault: Fault) -> bool {
    cfg!(fault_injection) && ACTIVE.load(Ordering::Relaxed) == index_of(fault)
}

/// Called on every entry right before the generic exit work: arms the
/// faults that break one path's exit.
pub fn before_exit(vector: u8) {
    if !cfg!(fault_injection) {
        return;
    }
    if is_active(Fault::SkipGprRestore) && vector == 3 {
        #[cfg(fault_injection)]
        // SAFETY: a flag byte in entry_64.S's .data, read (and cleared) by
        // the exit of this very entry; one CPU.
        unsafe {
            (&raw mut extregs_entry_asm::faults::extregs_fault_skip_r12).write_volatile(1)
        };
    }
    if is_active(Fault::SkipPkrsRestore) && usize::from(vector) >= 32 {
        SKIP_NEXT_ARCH_EXIT.store(true, Ordering::SeqCst);
    }
    if is_active(Fault::NmiExitForgetsLockdep) && vector == 2 {
        SKIP_NEXT_LOCKDEP_RESTORE.store(true, Ordering::SeqCst);
    }
}

/// Should this arch exit be skipped (the PKRS restore fault)?
pub fn take_skip_arch_exit() -> bool {
    // Normal builds: a constant, so the entry's exit path pays nothing.
    cfg!(fault_injection) && SKIP_NEXT_ARCH_EXIT.swap(false, Ordering::SeqCst)
}

/// Should this lockdep restore be skipped (the NMI lockdep fault)?
pub fn take_skip_lockdep_restore() -> bool {
    cfg!(fault_injection) && SKIP_NEXT_LOCKDEP_RESTORE.swap(false, Ordering::SeqCst)
}
