//! The entry and exit stubs, in one assembly file (`entry_64.S`).
//!
//! The `.S` files are assembled by this crate's build script (the GNU
//! assembler, with line information for `addr2line`) behind the generated
//! `asm-offsets.S`, so every frame offset they use is a `.set` constant
//! produced from the `extregs-regs` types at build time. This crate exports:
//!
//! * [`stub_addresses`]: one stub per vector (0..256) for the IDT: the 32
//!   exception vectors (NMI with its own nesting-safe stub), then the external
//!   interrupt vectors;
//! * [`asm_offsets`]: the generated constants as Rust items, checked here at
//!   compile time against `offset_of!` on the target itself.
//!
//! Each stub builds `PtRegs` and the extension below it and calls
//! `extregs_exception_entry(regs: &mut PtRegs, vector: u64)`, which the
//! kernel defines. The stubs hand Rust a pointer to `PtRegs`, never to the
//! extension: Rust finds the extension with `ExtendedPtRegs::from_regs`.

#![no_std]

use memoffset::offset_of;
use static_assertions::const_assert_eq;

/// The generated asm-offsets constants (see the `asm-offsets` crate).
pub mod asm_offsets {
    include!(concat!(env!("OUT_DIR"), "/asm_offsets.rs"));
}

use asm_offsets::*;
use extregs_regs::{ExtendedPtRegs, InactiveTaskFrame, PerCpuEntry, PtRegs, ThreadContext};

// The constants were computed by a build script on the host. Check them again
// here, compiled for the target that runs the stubs: if the layouts ever
// differed, the build fails instead of the stubs corrupting frames.
const_assert_eq!(PTREGS_R15, offset_of!(PtRegs, r15));
const_assert_eq!(PTREGS_R14, offset_of!(PtRegs, r14));
const_assert_eq!(PTREGS_R13, offset_of!(PtRegs, r13));
const_assert_eq!(PTREGS_R12, offset_of!(PtRegs, r12));
const_assert_eq!(PTREGS_BP, offset_of!(PtRegs, bp));
const_assert_eq!(PTREGS_BX, offset_of!(PtRegs, bx));
const_assert_eq!(PTREGS_R11, offset_of!(PtRegs, r11));
const_assert_eq!(PTREGS_R10, offset_of!(PtRegs, r10));
const_assert_eq!(PTREGS_R9, offset_of!(PtRegs, r9));
const_assert_eq!(PTREGS_R8, offset_of!(PtRegs, r8));
const_assert_eq!(PTREGS_AX, offset_of!(PtRegs, ax));
const_assert_eq!(PTREGS_CX, offset_of!(PtRegs, cx));
const_assert_eq!(PTREGS_DX, offset_of!(PtRegs, dx));
const_assert_eq!(PTREGS_SI, offset_of!(PtRegs, si));
const_assert_eq!(PTREGS_DI, offset_of!(PtRegs, di));
const_assert_eq!(PTREGS_ORIG_AX, offset_of!(PtRegs, orig_ax));
const_assert_eq!(PTREGS_IP, offset_of!(PtRegs, ip));
const_assert_eq!(PTREGS_CS, offset_of!(PtRegs, cs));
const_assert_eq!(PTREGS_FLAGS, offset_of!(PtRegs, flags));
const_assert_eq!(PTREGS_SP, offset_of!(PtRegs, sp));
const_assert_eq!(PTREGS_SS, offset_of!(PtRegs, ss));
const_assert_eq!(PTREGS_SIZE, core::mem::size_of::<PtRegs>());
const_assert_eq!(GENERIC_PTREGS_SIZE, extregs_regs::GENERIC_PTREGS_SIZE);
const_assert_eq!(EXTREGS_REGS, offset_of!(ExtendedPtRegs, regs));
const_assert_eq!(EXTENDED_PTREGS_SIZE, core::mem::size_of::<ExtendedPtRegs>());
const_assert_eq!(INACTIVE_TASK_FRAME_R15, offset_of!(InactiveTaskFrame, r15));
const_assert_eq!(INACTIVE_TASK_FRAME_BP, offset_of!(InactiveTaskFrame, bp));
const_assert_eq!(INACTIVE_TASK_FRAME_RET_ADDR, offset_of!(InactiveTaskFrame, ret_addr));
const_assert_eq!(THREAD_SP, offset_of!(ThreadContext, sp));
const_assert_eq!(PERCPU_TOP_OF_STACK, offset_of!(PerCpuEntry, top_of_stack));
const_assert_eq!(PERCPU_USER_RSP_SCRATCH, offset_of!(PerCpuEntry, user_rsp_scratch));
const_assert_eq!(PERCPU_IST_SCRATCH, offset_of!(PerCpuEntry, ist_scratch));
const_assert_eq!(PERCPU_CPU, offset_of!(PerCpuEntry, cpu));
const_assert_eq!(PERCPU_APIC_ID, offset_of!(PerCpuEntry, apic_id));
const_assert_eq!(PERCPU_SELF_ADDRESS, offset_of!(PerCpuEntry, self_address));
const_assert_eq!(PERCPU_SIZE, core::mem::size_of::<PerCpuEntry>());
const_assert_eq!(NR_CPUS, extregs_regs::NR_CPUS);
const_assert_eq!(
    NMI_TOP_NMI_STATE,
    offset_of!(extregs_regs::NmiStackTop, ist_top) + offset_of!(extregs_regs::IstTop, nmi_state)
);

include!("linux_abi.rs");

// The entry code itself (calling.S, entry_64.S, switch_64.S over the
// generated asm-offsets.S) is assembled by build.rs, with line
// information, and linked whole into the kernel.

/// The entry faults of a fault-injection build (flag bytes in entry_64.S).
#[cfg(fault_injection)]
pub mod faults {
    extern "C" {
        /// Non-zero: the next exit through `extregs_entry_common` does not
        /// restore R12 (the flag clears itself).
        pub static mut extregs_fault_skip_r12: u8;
        /// Non-zero: every NMI is handled as the outermost one, reusing the
        /// NMI IST frame of the one it interrupted.
        pub static mut extregs_fault_nmi_reuse: u8;
    }
}

extern "C" {
    /// Saves the callee-saved registers on the current stack as an
    /// [`InactiveTaskFrame`], stores RSP into `prev.sp`, loads RSP from
    /// `next.sp` and returns through the frame found there (`switch_64.S`).
    ///
    /// # Safety
    ///
    /// `prev` must be writable and `next.sp` must point at an
    /// `InactiveTaskFrame` on a stack nothing else uses, whose `ret_addr`
    /// continues a switched-out task (or starts a new one); interrupts must
    /// be off (an IRQ handler that switched tasks meanwhile would find
    /// `prev.sp` stale).
    pub fn extregs_context_switch(prev: *mut ThreadContext, next: *const ThreadContext);
}

/// The first vector of an external interrupt (after the CPU's 32
/// exception vectors).
pub const FIRST_EXTERNAL_VECTOR: usize = extregs_regs::FIRST_EXTERNAL_VECTOR as usize;
/// Number of IDT vectors.
pub const NR_VECTORS: usize = extregs_regs::NR_VECTORS;

extern "C" {
    static extregs_exception_stub_table: [usize; NR_VECTORS];
    static extregs_entry_text_start: u8;
    static extregs_entry_text_end: u8;
    static extregs_entry_common: u8;
    static extregs_irq_common: u8;
    static extregs_paranoid_common: u8;
    static extregs_nmi_interruptible: [u64; 2];
    static extregs_return_to_user: u8;
    static extregs_syscall_sysretq: u8;
    static extregs_return_to_user_iretq: u8;
    static entry_SYSCALL_64: u8;
    static entry_SYSCALL32_ignore: u8;
    static mut extregs_per_cpu: [PerCpuEntry; extregs_regs::NR_CPUS];
    static mut extregs_smap_enabled: u8;
    fn extregs_enter_user_mode(regs: *const PtRegs) -> !;
}

/// The address of `entry_SYSCALL_64`, for MSR_LSTAR.
pub fn syscall_entry_address() -> u64 {
    // Only the symbol's address is taken.
    (&raw const entry_SYSCALL_64) as u64
}

/// The address of `entry_SYSCALL32_ignore`, for MSR_CSTAR.
pub fn compat_syscall_entry_address() -> u64 {
    // Only the symbol's address is taken.
    (&raw const entry_SYSCALL32_ignore) as u64
}

/// The address of `extregs_enter_user_mode`, a user task's first way out
/// to user mode (for the breakpoint walks).
pub fn enter_user_mode_address() -> u64 {
    extregs_enter_user_mode as *const () as u64
}

/// The user-mode exits: (`extregs_return_to_user`, its IRETQ, the SYSRETQ
/// of entry_SYSCALL_64). For tests and for show_regs.
pub fn user_exit_addresses() -> (u64, u64, u64) {
    // Only the symbols' addresses are taken.
    (
        (&raw const extregs_return_to_user) as u64,
        (&raw const extregs_return_to_user_iretq) as u64,
        (&raw const extregs_syscall_sysretq) as u64,
    )
}

/// CPU `cpu`'s entry area (its `%gs` in kernel mode), as a raw pointer
/// with the provenance of the whole static; its address is that CPU's
/// kernel GS base.
///
/// # Panics
///
/// If `cpu` is not below `NR_CPUS`.
pub fn per_cpu(cpu: usize) -> *mut PerCpuEntry {
    assert!(cpu < extregs_regs::NR_CPUS, "CPU {cpu} has no entry area");
    // Only the address is taken; no reference to the mutable static is
    // formed, and `cpu` is in bounds of the array.
    (&raw mut extregs_per_cpu).cast::<PerCpuEntry>().wrapping_add(cpu)
}

/// The number of the CPU running this (`%gs:PERCPU_CPU`; Linux's
/// `smp_processor_id()`).
///
/// Kernel mode only, once this CPU's GS base is set: a precondition this
/// safe function can't check, met because setting it (`gdt::init_gs`) is
/// the first thing the boot CPU and each AP do, and every entry from user
/// mode swaps GS before Rust runs.
pub fn this_cpu() -> usize {
    let cpu: u64;
    // SAFETY: a %gs-relative load of this CPU's own area (the GS base is its
    // PerCpuEntry in kernel mode, see above); `cpu` is written once, before
    // the CPU runs any code that asks, and never changes.
    unsafe {
        core::arch::asm!(
            "mov {cpu}, qword ptr gs:[{offset}]",
            cpu = out(reg) cpu,
            offset = const PERCPU_CPU,
            options(nostack, readonly, preserves_flags)
        );
    }
    cpu as usize
}

/// Sets `%gs:PERCPU_TOP_OF_STACK`, which the SYSCALL entry and the IST
/// entries from user mode load as their stack, on this CPU.
///
/// # Safety
///
/// Interrupts off (no user entry can read it halfway: it is one aligned
/// store anyway), and `top` is the top of the kernel stack of the task that
/// will run next in user mode on this CPU.
pub unsafe fn set_top_of_stack(top: u64) {
    // SAFETY: this CPU's area of entry_64.S's static array, written only through raw pointers
    // (no Rust reference to it exists), read by the entry code %gs-relative on this CPU only;
    // interrupts off.
    unsafe { (&raw mut (*per_cpu(this_cpu())).top_of_stack).write_volatile(top) };
}

/// Tells the entry code whether to CLAC on entry (the CPU has SMAP and the
/// kernel turned it on). Set once at boot, before any user access.
pub fn set_smap_enabled(enabled: bool) {
    // SAFETY: a byte in entry_64.S's .data, written through a raw pointer
    // (no reference to the mutable static); the entry code only reads it.
    unsafe { (&raw mut extregs_smap_enabled).write_volatile(u8::from(enabled)) };
}

/// `%gs:PERCPU_TOP_OF_STACK` as the entry code will use it next on this
/// CPU.
pub fn top_of_stack() -> u64 {
    // SAFETY: an aligned read of a field of this CPU's area (see
    // `set_top_of_stack`); no reference is formed.
    unsafe { (&raw const (*per_cpu(this_cpu())).top_of_stack).read_volatile() }
}

/// Leaves for user mode through the IRET exit with the frame at `regs`
/// (the first return of a user task, Linux's ret_from_fork).
///
/// # Safety
///
/// `regs` must be `task_pt_regs` of the running task: a whole user frame
/// (extension below it) at the top of its kernel stack, with the generic
/// exit-to-user work done and interrupts off. Everything the caller has on
/// the stack below is abandoned.
pub unsafe fn enter_user_mode(regs: *const PtRegs) -> ! {
    // SAFETY: per this function's contract.
    unsafe { extregs_enter_user_mode(regs) }
}

/// The addresses of the two shared paths of `entry_64.S`: the common
/// exception/IRQ tail (reserve the extension, call Rust, POP_REGS, iretq)
/// and the IRQ head (save the GPRs, vector into %esi).
pub fn common_paths() -> (u64, u64) {
    // Only the symbols' addresses are taken; nothing is read through them.
    ((&raw const extregs_entry_common) as u64, (&raw const extregs_irq_common) as u64)
}

/// The address of `extregs_paranoid_common`: the path #DB and #MC from
/// kernel mode, and every #DF, share after their stubs.
pub fn paranoid_common_address() -> u64 {
    // Only the symbol's address is taken; nothing is read through it.
    (&raw const extregs_paranoid_common) as u64
}

/// The part of the NMI stub an NMI can land on (`.Lnmi_run` up to
/// `.Lnmi_nested`): the outermost NMI's handler pass from its start (where
/// a repeat starts too) through its exit. The rest of the stub runs with
/// NMIs blocked.
pub fn nmi_interruptible_range() -> core::ops::Range<u64> {
    // SAFETY: two `.quad`s that entry_64.S defines in a read-only-after-
    // relocation section and nothing writes; a plain copy out of the static.
    let [start, end] = unsafe { extregs_nmi_interruptible };
    start..end
}

/// The address range of `entry_64.S`'s code: every stub, the common paths
/// and the NMI entry.
pub fn entry_text_range() -> core::ops::Range<u64> {
    // Only the symbols' addresses are taken; nothing is read through them.
    (&raw const extregs_entry_text_start) as u64..(&raw const extregs_entry_text_end) as u64
}

/// Addresses of the entry stubs, indexed by vector (0..256).
pub fn stub_addresses() -> [usize; NR_VECTORS] {
    // SAFETY: the table is defined in entry_64.S with exactly one `.quad` per
    // vector (the IDTENTRY macros and the IRQ `.rept` check the count at
    // assembly time) and is never written after relocation.
    unsafe { extregs_exception_stub_table }
}

/// True when the CPU pushes an error code for this exception vector. The
/// stubs push -1 into `orig_ax` for all the others; this list must agree with
/// the `has_error_code` column of the IDTENTRY lines in `entry_64.S`, which
/// the kernel's selftests check by reading `orig_ax`.
pub const fn vector_has_error_code(vector: u8) -> bool {
    matches!(vector, 8 | 10 | 11 | 12 | 13 | 14 | 17 | 21 | 29 | 30)
}
