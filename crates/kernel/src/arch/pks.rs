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
//! The cache and the MSR can't change in one instruction, and an NMI, #DB
//! or #MC can land between any two. So [`write_pkrs`] brackets its WRMSR
//! and cache store with a count of writes in progress. While the count is
//! zero the cache equals the MSR, and an entry trusts it (no RDMSR: the
//! fast path). An entry that finds the count non-zero interrupted a write
//! somewhere between its first and last instruction: it reads the MSR for
//! the interrupted context's live rights and resynchronises the cache from
//! it (the only RDMSR in the PKS hooks, and only in that window; the
//! selftests' `check_frame` reads the MSR too, as a check). Every exit
//! leaves MSR = cache = the interrupted context's (possibly edited) value,
//! and the interrupted write then completes as if nothing had happened;
//! editing the saved value of a context inside a write is refused
//! ([`pks_update_saved`]), since that write's cache store would undo it.
//!
//! A PKS fault (#PF with the PK bit) is first offered to the handler
//! registered for the page's key ([`register_fault_handler`]); it may grant
//! access by editing the *saved* PKRS ([`pks_update_saved`]) so the faulting
//! instruction succeeds when it is retried after IRET.

use crate::arch::hook_slot::HookSlot;
use crate::arch::percpu::PerCpu;
use core::sync::atomic::{compiler_fence, AtomicBool, AtomicU32, AtomicU64, Ordering};
use extregs_regs::NR_CPUS;
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

/// The value last written to PKRS (Linux: per-CPU `pkrs_cache`). Equal to
/// the MSR whenever [`PKRS_WRITES_IN_PROGRESS`] is zero.
static PKRS_CACHE: PerCpu<AtomicU32> = PerCpu::new([const { AtomicU32::new(0) }; NR_CPUS]);
/// [`write_pkrs`] calls between their first and last instruction, in this
/// context and every context it interrupted (each handler's own writes
/// finish before it returns, so they never leave the count changed).
static PKRS_WRITES_IN_PROGRESS: PerCpu<AtomicU32> =
    PerCpu::new([const { AtomicU32::new(0) }; NR_CPUS]);
/// WRMSRs to PKRS since boot.
static PKRS_WRMSR_COUNT: AtomicU64 = AtomicU64::new(0);
/// Entries on each CPU that found a write in progress and read the MSR.
static PKRS_RESYNCS: PerCpu<AtomicU64> = PerCpu::new([const { AtomicU64::new(0) }; NR_CPUS]);

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
/// `write_pkrs_text`: where [`write_pkrs`]'s code is, from the kernel's
/// symbol table (`None` without one: every edit then counts as inside a
/// write, see [`interrupted_a_pkrs_write`]).
pub fn init(cpu_has_pks: bool, write_pkrs_text: Option<core::ops::Range<u64>>) {
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
    // Where write_pkrs's code is, for `pks_update_saved` (read from the
    // symbol table once, at boot, so no handler ever scans it).
    if let Some(text) = write_pkrs_text {
        WRITE_PKRS_TEXT.0.store(text.start, Ordering::Relaxed);
        WRITE_PKRS_TEXT.1.store(text.end, Ordering::Relaxed);
    }
}

/// An AP's part of [`init`]: CR4.PKS and the default PKRS (through its own
/// per-CPU cache), when the boot CPU turned PKS on.
pub fn init_ap() {
    if !enabled() {
        return;
    }
    // SAFETY: as in `init` (the APs are the same CPU model as the boot CPU, which has PKS);
    // this CPU's PKRS cache is written with the MSR by `write_pkrs`.
    unsafe {
        write_pkrs(PKRS_DEFAULT);
        Cr4::update(|flags| flags.insert(Cr4Flags::PROTECTION_KEY_SUPERVISOR));
    }
}

/// `[start, end)` of [`write_pkrs`]'s code; empty until `init` found it.
static WRITE_PKRS_TEXT: (AtomicU64, AtomicU64) = (AtomicU64::new(0), AtomicU64::new(0));

/// Did the context whose frame this is get interrupted inside
/// [`write_pkrs`]? Without the symbol table: whether any write is in
/// progress at all (conservative).
fn interrupted_a_pkrs_write(regs: &PtRegs) -> bool {
    let (start, end) =
        (WRITE_PKRS_TEXT.0.load(Ordering::Relaxed), WRITE_PKRS_TEXT.1.load(Ordering::Relaxed));
    if start == end {
        return PKRS_WRITES_IN_PROGRESS.this().load(Ordering::Relaxed) != 0;
    }
    (start..end).contains(&regs.ip)
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
    PKRS_CACHE.this().load(Ordering::Relaxed)
}

/// The interrupted context's live PKRS, for an entry: the cache (no
/// RDMSR), unless the entry interrupted a [`write_pkrs`]. Then the MSR is
/// read and the cache resynchronised from it, so that in the handler the
/// cache is the MSR again.
///
/// Must only be called when [`enabled`], from an entry hook.
fn interrupted_pkrs() -> u32 {
    if PKRS_WRITES_IN_PROGRESS.this().load(Ordering::Relaxed) == 0 {
        return cached_pkrs();
    }
    PKRS_RESYNCS.this().fetch_add(1, Ordering::Relaxed);
    let live = read_pkrs();
    PKRS_CACHE.this().store(live, Ordering::Relaxed);
    live
}

/// Entries on this CPU that found a write in progress and resynchronised
/// the cache from the MSR.
pub fn resyncs() -> u64 {
    PKRS_RESYNCS.this().load(Ordering::Relaxed)
}

/// [`write_pkrs`] calls in progress on this CPU (its bracket's count).
pub fn writes_in_progress() -> u32 {
    PKRS_WRITES_IN_PROGRESS.this().load(Ordering::Relaxed)
}

/// Runs `body` inside this CPU's write bracket, as a [`write_pkrs`] in
/// flight would (for the test that another CPU's bracket is not this
/// one's). Entries on this CPU meanwhile read the MSR, which is correct
/// whatever the cache holds.
pub fn with_write_in_progress<T>(body: impl FnOnce() -> T) -> T {
    PKRS_WRITES_IN_PROGRESS.this().fetch_add(1, Ordering::Relaxed);
    compiler_fence(Ordering::SeqCst);
    let result = body();
    compiler_fence(Ordering::SeqCst);
    PKRS_WRITES_IN_PROGRESS.this().fetch_sub(1, Ordering::Relaxed);
    result
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
/// use key 0). Interrupts must be off: a task preempted inside the bracket
/// below would leave the count of writes in progress raised while other
/// tasks run (tasks change their PKRS through `sched::pks_set_rights`,
/// which disables them).
// Out of line, so `pks_update_saved` can tell from a frame's `ip` whether
// it interrupted a write.
#[inline(never)]
pub unsafe fn write_pkrs(value: u32) {
    assert!(!x86_64::instructions::interrupts::are_enabled(), "write_pkrs with interrupts enabled");
    // An event can land at any instruction here. Outside the bracket the
    // cache is the MSR. Inside it, an entry reads the MSR (old or new,
    // whichever the WRMSR left) instead of trusting the cache. Storing the
    // cache before the WRMSR *without* the bracket would let an NMI in
    // between believe the default was already live, skip its own WRMSR and
    // run its handler with this context's rights (the selftest
    // `pkrs_write_window_every_instruction` steps through every
    // instruction here with an NMI, a #DB and an exception).
    PKRS_WRITES_IN_PROGRESS.this().fetch_add(1, Ordering::Relaxed);
    // One CPU: the events that matter run on this CPU, so program order
    // is enough; the fences only stop the compiler from moving the
    // bracket's stores across the WRMSR and the cache store.
    compiler_fence(Ordering::SeqCst);
    PKRS_WRMSR_COUNT.fetch_add(1, Ordering::Relaxed);
    // SAFETY: per the function contract; the upper half of the MSR is
    // written as 0 as the SDM requires.
    unsafe { Msr::new(MSR_IA32_PKRS).write(u64::from(value)) };
    PKRS_CACHE.this().store(value, Ordering::Relaxed);
    compiler_fence(Ordering::SeqCst);
    PKRS_WRITES_IN_PROGRESS.this().fetch_sub(1, Ordering::Relaxed);
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

/// Entry hook: saves the interrupted PKRS (from the cache: no RDMSR unless
/// the event interrupted a [`write_pkrs`]) into the extension and installs
/// the default, so the handler never inherits a context's extra rights.
pub fn arch_enter(arch: &mut ArchExtRegs) {
    if !enabled() {
        arch.pks = 0;
        return;
    }
    arch.pks = interrupted_pkrs();
    // SAFETY: PKS is on; the default keeps key 0 (all kernel memory)
    // read/write.
    unsafe { update_pkrs(PKRS_DEFAULT) };
}

/// Exit hook: puts back the saved (possibly handler-edited) PKRS, with a
/// WRMSR only when it differs from what is live. The handler's own writes
/// have all completed, so the cache is the MSR here; on return both hold
/// the interrupted context's value, even if it was inside [`write_pkrs`].
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
/// rights (the exit hook writes them). Returns false, and changes nothing,
/// when that context was interrupted inside [`write_pkrs`] (its `ip` is in
/// that function's code): the write would store its own value in the cache
/// after the exit hook wrote the edited one to the MSR, leaving the two
/// apart. The decision is per frame: a PKS fault inside an NMI that itself
/// interrupted a write edits the fault's frame freely. Fault handlers'
/// frames never interrupted `write_pkrs`, so only a hook on an asynchronous
/// event can be refused.
///
/// # Safety
///
/// `regs` must be the `PtRegs` an entry stub handed to a handler (so the
/// extension lies below it), as for `ExtendedPtRegs::from_regs`.
#[must_use = "the edit is refused while a PKRS write is in progress below the handler"]
pub unsafe fn pks_update_saved(regs: &mut PtRegs, pkey: u8, rights: KeyRights) -> bool {
    if interrupted_a_pkrs_write(regs) {
        return false;
    }
    // SAFETY: per the function contract.
    let frame = unsafe { ExtendedPtRegs::from_regs(regs) };
    frame.arch.pks = with_key_rights(frame.arch.pks, pkey, rights);
    true
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

static FAULT_HANDLERS: [HookSlot<PksFaultHandler>; 16] = [const { HookSlot::empty() }; 16];

/// Installs `handler` for faults on pages tagged `pkey` (replacing any).
pub fn register_fault_handler(pkey: u8, handler: PksFaultHandler) {
    FAULT_HANDLERS[usize::from(pkey & 0xf)].set(handler);
}

/// Removes the handler for `pkey`.
pub fn unregister_fault_handler(pkey: u8) {
    FAULT_HANDLERS[usize::from(pkey & 0xf)].clear();
}

/// The key of the page holding `address`, from its PTE (bits 62:59).
pub fn pkey_of(address: u64) -> Option<u8> {
    let flags =
        x86_64::VirtAddr::try_new(address).ok().and_then(crate::arch::memory::page_flags)?;
    Some(((flags.bits() >> crate::arch::memory::PTE_PKEY_SHIFT) & 0xf) as u8)
}

/// #PF error-code bits this module reads.
const PF_WRITE: u64 = 1 << 1;
const PF_PROTECTION_KEY: u64 = 1 << 5;

/// Offers a #PF at `address` (CR2, as the #PF entry read it first thing) to
/// the handler of the faulting page's key. True when the fault was a PKS
/// fault and that handler resolved it.
pub fn handle_fault(regs: &mut PtRegs, address: u64) -> bool {
    if regs.orig_ax & PF_PROTECTION_KEY == 0 {
        return false;
    }
    let Some(pkey) = pkey_of(address) else {
        return false;
    };
    let Some(handler) = FAULT_HANDLERS[usize::from(pkey)].get() else {
        return false;
    };
    handler(regs, PksFault { pkey, address, write: regs.orig_ax & PF_WRITE != 0 })
}
