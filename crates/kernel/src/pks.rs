//! Supervisor protection keys: CR4.PKS, the PKRS MSR, the kernel's default
//! rights, and the arch entry hooks that carry PKRS in the extension.
//!
//! PKRS holds two bits per key: bit 2k is access-disable (AD), bit 2k+1
//! write-disable (WD), for the 16 keys a supervisor PTE names in bits 62:59.
//!
//! The live PKRS value is cached in memory (Weiny's per-CPU `pkrs_cache`;
//! this kernel runs on one CPU), so the entry and exit hooks never RDMSR, and
//! a WRMSR happens only when the value really changes. [`wrmsr_count`]
//! counts the WRMSRs for the selftests and the benchmark.
//!
//! A PKS fault (#PF with the PK bit) is first offered to the handler
//! registered for the page's key ([`register_fault_handler`]); it may grant
//! access by editing the *saved* PKRS ([`pks_update_saved`]) so the faulting
//! instruction succeeds when it is retried after IRET.

use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, Ordering};
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

/// The value last written to PKRS (Linux: per-CPU `pkrs_cache`).
static PKRS_CACHE: AtomicU32 = AtomicU32::new(0);
/// WRMSRs to PKRS since boot.
static PKRS_WRMSR_COUNT: AtomicU64 = AtomicU64::new(0);

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

/// The cached PKRS: what the last [`write_pkrs`] wrote.
pub fn cached_pkrs() -> u32 {
    PKRS_CACHE.load(Ordering::Relaxed)
}

/// WRMSRs to PKRS since boot.
pub fn wrmsr_count() -> u64 {
    PKRS_WRMSR_COUNT.load(Ordering::Relaxed)
}

/// Writes PKRS (always a WRMSR) and the cache.
///
/// # Safety
///
/// The CPU must have PKS, and the new rights must still allow every access
/// the kernel makes before they change again (the stack, code and data all
/// use key 0).
pub unsafe fn write_pkrs(value: u32) {
    // The cache first: an NMI between the two stores then saves the new
    // value, installs the default and on its exit writes the new value
    // back, which is what the WRMSR below writes too. The other order would
    // let that NMI restore the stale value.
    PKRS_CACHE.store(value, Ordering::Relaxed);
    PKRS_WRMSR_COUNT.fetch_add(1, Ordering::Relaxed);
    // SAFETY: per the function contract; the upper half of the MSR is
    // written as 0 as the SDM requires.
    unsafe { Msr::new(MSR_IA32_PKRS).write(u64::from(value)) };
}

/// Writes PKRS only when `value` differs from the cache.
///
/// # Safety
///
/// As [`write_pkrs`].
pub unsafe fn update_pkrs(value: u32) {
    if cached_pkrs() != value {
        // SAFETY: per the function contract.
        unsafe { write_pkrs(value) };
    }
}

/// Entry hook: saves the interrupted PKRS (from the cache, no RDMSR) into
/// the extension and installs the default, so the handler never inherits a
/// context's extra rights.
pub fn arch_enter(arch: &mut ArchExtRegs) {
    if !enabled() {
        arch.pks = 0;
        return;
    }
    arch.pks = cached_pkrs();
    // SAFETY: PKS is on; the default keeps key 0 (all kernel memory)
    // read/write.
    unsafe { update_pkrs(PKRS_DEFAULT) };
}

/// Exit hook: puts back the saved (possibly handler-edited) PKRS, with a
/// WRMSR only when it differs from what is live.
pub fn arch_exit(arch: &ArchExtRegs) {
    if !enabled() {
        return;
    }
    // SAFETY: PKS is on; this is the value the interrupted context ran with
    // (or one a handler granted on purpose), restored right before IRET
    // returns to that context.
    unsafe { update_pkrs(arch.pks) };
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

/// A PKS fault, as the per-key handler sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PksFault {
    pub pkey: u8,
    pub address: u64,
    pub write: bool,
}

/// A per-key PKS fault handler: returns true when it resolved the fault
/// (typically by [`pks_update_saved`]), so the instruction is retried.
pub type PksFaultHandler = fn(regs: &mut PtRegs, fault: PksFault) -> bool;

static FAULT_HANDLERS: [AtomicPtr<()>; 16] = [const { AtomicPtr::new(core::ptr::null_mut()) }; 16];

/// Installs `handler` for faults on pages tagged `pkey` (replacing any).
pub fn register_fault_handler(pkey: u8, handler: PksFaultHandler) {
    FAULT_HANDLERS[usize::from(pkey & 0xf)].store(handler as *mut (), Ordering::SeqCst);
}

/// Removes the handler for `pkey`.
pub fn unregister_fault_handler(pkey: u8) {
    FAULT_HANDLERS[usize::from(pkey & 0xf)].store(core::ptr::null_mut(), Ordering::SeqCst);
}

/// The key of the page holding `address`, from its PTE (bits 62:59).
pub fn pkey_of(address: u64) -> Option<u8> {
    let flags = x86_64::VirtAddr::try_new(address).ok().and_then(crate::memory::page_flags)?;
    Some(((flags.bits() >> crate::memory::PTE_PKEY_SHIFT) & 0xf) as u8)
}

/// #PF error-code bits this module reads.
const PF_WRITE: u64 = 1 << 1;
const PF_PROTECTION_KEY: u64 = 1 << 5;

/// Offers a #PF to the handler of the faulting page's key. True when the
/// fault was a PKS fault and that handler resolved it.
pub fn handle_fault(regs: &mut PtRegs) -> bool {
    if regs.orig_ax & PF_PROTECTION_KEY == 0 {
        return false;
    }
    let address = x86_64::registers::control::Cr2::read_raw();
    let Some(pkey) = pkey_of(address) else {
        return false;
    };
    let raw = FAULT_HANDLERS[usize::from(pkey)].load(Ordering::SeqCst);
    if raw.is_null() {
        return false;
    }
    // SAFETY: only `register_fault_handler` stores non-null values, each a
    // `PksFaultHandler` cast to a pointer (same size and representation).
    let handler = unsafe { core::mem::transmute::<*mut (), PksFaultHandler>(raw) };
    handler(regs, PksFault { pkey, address, write: regs.orig_ax & PF_WRITE != 0 })
}
