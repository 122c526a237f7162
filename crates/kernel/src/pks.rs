//! Supervisor protection keys: CR4.PKS, the PKRS MSR, the kernel's default
//! rights, and the arch entry hooks that carry PKRS in the extension.
//!
//! PKRS holds two bits per key: bit 2k is access-disable (AD), bit 2k+1
//! write-disable (WD), for the 16 keys a supervisor PTE names in bits 62:59.

use core::sync::atomic::{AtomicBool, Ordering};
use extregs_regs::{ArchExtRegs, ExtendedPtRegs, PtRegs};
use x86_64::registers::control::{Cr4, Cr4Flags};
use x86_64::registers::model_specific::Msr;

/// IA32_PKRS.
pub const MSR_IA32_PKRS: u32 = 0x6e1;

/// Key 0 read/write, keys 1..=15 access-disabled: the value every entry
/// installs and the kernel runs with by default.
pub const PKRS_DEFAULT: u32 = 0x5555_5554;

/// Set once CR4.PKS is on.
static PKS_ENABLED: AtomicBool = AtomicBool::new(false);

/// Access rights a PKRS value gives one key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyRights {
    ReadWrite,
    ReadOnly,
    NoAccess,
}

impl KeyRights {
    /// The two PKRS bits for these rights (AD in bit 0, WD in bit 1).
    pub const fn bits(self) -> u32 {
        match self {
            KeyRights::ReadWrite => 0b00,
            KeyRights::ReadOnly => 0b10,
            KeyRights::NoAccess => 0b01,
        }
    }

    /// Short form used in dumps: `rw`, `r-`, `--`.
    pub const fn short(self) -> &'static str {
        match self {
            KeyRights::ReadWrite => "rw",
            KeyRights::ReadOnly => "r-",
            KeyRights::NoAccess => "--",
        }
    }
}

/// The rights `pkrs` gives `pkey`.
pub const fn key_rights(pkrs: u32, pkey: u8) -> KeyRights {
    let bits = (pkrs >> (2 * pkey as u32)) & 0b11;
    if bits & 0b01 != 0 {
        KeyRights::NoAccess
    } else if bits & 0b10 != 0 {
        KeyRights::ReadOnly
    } else {
        KeyRights::ReadWrite
    }
}

/// `pkrs` with `pkey`'s rights replaced.
pub const fn with_key_rights(pkrs: u32, pkey: u8, rights: KeyRights) -> u32 {
    let shift = 2 * pkey as u32;
    (pkrs & !(0b11 << shift)) | (rights.bits() << shift)
}

/// Is PKS on?
pub fn enabled() -> bool {
    PKS_ENABLED.load(Ordering::Relaxed)
}

/// Turns PKS on (when the CPU has it) with the default rights.
pub fn init(cpu_has_pks: bool) {
    if !cpu_has_pks {
        return;
    }
    // SAFETY: the CPU reports PKS, so CR4.PKS is a defined bit; every page
    // the kernel uses so far has pkey 0, which the default leaves read/write.
    unsafe {
        write_pkrs(PKRS_DEFAULT);
        Cr4::update(|flags| flags.insert(Cr4Flags::PROTECTION_KEY_SUPERVISOR));
    }
    PKS_ENABLED.store(true, Ordering::Relaxed);
}

/// Reads PKRS.
///
/// Must only be called when [`enabled`] (the MSR does not exist otherwise).
pub fn read_pkrs() -> u32 {
    // SAFETY: callers check `enabled()`, so IA32_PKRS exists. Reading it has
    // no side effects. The upper half is reserved and reads as 0.
    unsafe { Msr::new(MSR_IA32_PKRS).read() as u32 }
}

/// Writes PKRS.
///
/// # Safety
///
/// The CPU must have PKS, and the new rights must still allow every access
/// the kernel makes before they change again (the stack, code and data all
/// use key 0).
pub unsafe fn write_pkrs(value: u32) {
    // SAFETY: per the function contract; the upper half of the MSR is
    // written as 0 as the SDM requires.
    unsafe { Msr::new(MSR_IA32_PKRS).write(u64::from(value)) };
}

/// Entry hook: saves the interrupted PKRS into the extension and installs the
/// default, so the handler never inherits a context's extra rights.
pub fn arch_enter(arch: &mut ArchExtRegs) {
    if !enabled() {
        arch.pks = 0;
        return;
    }
    let interrupted = read_pkrs();
    arch.pks = interrupted;
    if interrupted != PKRS_DEFAULT {
        // SAFETY: PKS is on; the default keeps key 0 (all kernel memory)
        // read/write.
        unsafe { write_pkrs(PKRS_DEFAULT) };
    }
}

/// Exit hook: puts back the saved (possibly handler-edited) PKRS.
pub fn arch_exit(arch: &ArchExtRegs) {
    if !enabled() {
        return;
    }
    if read_pkrs() != arch.pks {
        // SAFETY: PKS is on; this is the value the interrupted context ran
        // with (or one a handler granted on purpose), restored right before
        // IRET returns to that context.
        unsafe { write_pkrs(arch.pks) };
    }
}

/// Grants or revokes `pkey` rights in the *saved* PKRS of the interrupted
/// context whose frame `regs` is: after IRET that context runs with the new
/// rights (the exit hook writes them).
///
/// # Safety
///
/// `regs` must be the `PtRegs` an entry stub handed to a handler (so the
/// extension lies below it), as for `ExtendedPtRegs::from_regs`.
pub unsafe fn pks_update_saved(regs: &mut PtRegs, pkey: u8, rights: KeyRights) {
    // SAFETY: per the function contract.
    let frame = unsafe { ExtendedPtRegs::from_regs(regs) };
    frame.arch.pks = with_key_rights(frame.arch.pks, pkey, rights);
}
