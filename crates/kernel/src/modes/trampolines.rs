//! The trampolines the fuzzer raises its events through, which the
//! selftests borrow (the int3 one, and the yield one for a context switch
//! with every GPR loaded).
//!
//! ```text
//!   extregs_fuzz_<kind>(input: *const PtRegs, output: *mut PtRegs)
//!
//!   | return address           |
//!   | rbx rbp r12 r13 r14 r15  |  callee-saved, pushed
//!   | output                   |  <- rsp while the GPRs hold the level's values
//! ```
//!
//! FUZZ_ENTER loads all 15 GPRs from `input` (rdi last); the event follows
//! at `_site`; at `_resume` FUZZ_LEAVE swaps rdi with the saved output
//! pointer and stores all 15 GPRs into `output`. Offsets come from
//! asm-offsets.

use crate::arch::apic;
use core::sync::atomic::AtomicU32;
use extregs_cmdline::FuzzKind as Kind;
use extregs_entry_asm::asm_offsets;
use extregs_regs::PtRegs;

/// The fuzzer's pkey page, at a fixed address so the PKS trampolines can
/// name it in the instruction (`movabs`) and leave every GPR random. Its
/// own level-4 slot (509) in the kernel half, so a Linux process's address
/// space maps it too (a ring-3 level may run as one).
pub const FUZZ_PAGE_ADDRESS: u64 = 0xffff_fe80_0000_0000;

/// The vector of the `int $n` trampoline.
pub const SOFT_INT_VECTOR: u8 = 0x81;

core::arch::global_asm!(
    ".macro FUZZ_ENTER name",
    ".text",
    ".p2align 4",
    ".globl extregs_fuzz_\\name",
    "extregs_fuzz_\\name:",
    "pushq %rbx",
    "pushq %rbp",
    "pushq %r12",
    "pushq %r13",
    "pushq %r14",
    "pushq %r15",
    "pushq %rsi",
    "movq {r15}(%rdi), %r15",
    "movq {r14}(%rdi), %r14",
    "movq {r13}(%rdi), %r13",
    "movq {r12}(%rdi), %r12",
    "movq {bp}(%rdi), %rbp",
    "movq {bx}(%rdi), %rbx",
    "movq {r11}(%rdi), %r11",
    "movq {r10}(%rdi), %r10",
    "movq {r9}(%rdi), %r9",
    "movq {r8}(%rdi), %r8",
    "movq {ax}(%rdi), %rax",
    "movq {cx}(%rdi), %rcx",
    "movq {dx}(%rdi), %rdx",
    "movq {si}(%rdi), %rsi",
    "movq {di}(%rdi), %rdi",
    ".globl extregs_fuzz_\\name\\()_site",
    "extregs_fuzz_\\name\\()_site:",
    ".endm",
    ".macro FUZZ_RESUME name",
    ".globl extregs_fuzz_\\name\\()_resume",
    "extregs_fuzz_\\name\\()_resume:",
    ".endm",
    ".macro FUZZ_LEAVE name",
    "FUZZ_RESUME \\name",
    "FUZZ_STORE",
    ".endm",
    ".macro FUZZ_STORE",
    "xchgq %rdi, (%rsp)",
    "movq %r15, {r15}(%rdi)",
    "movq %r14, {r14}(%rdi)",
    "movq %r13, {r13}(%rdi)",
    "movq %r12, {r12}(%rdi)",
    "movq %rbp, {bp}(%rdi)",
    "movq %rbx, {bx}(%rdi)",
    "movq %r11, {r11}(%rdi)",
    "movq %r10, {r10}(%rdi)",
    "movq %r9, {r9}(%rdi)",
    "movq %r8, {r8}(%rdi)",
    "movq %rax, {ax}(%rdi)",
    "movq %rcx, {cx}(%rdi)",
    "movq %rdx, {dx}(%rdi)",
    "movq %rsi, {si}(%rdi)",
    "popq {di}(%rdi)",
    "popq %r15",
    "popq %r14",
    "popq %r13",
    "popq %r12",
    "popq %rbp",
    "popq %rbx",
    "ret",
    ".endm",
    // The wait loop of the asynchronous events: no GPR is touched.
    ".macro FUZZ_WAIT",
    "1: decl {spins}(%rip)",
    "jnz 1b",
    ".endm",
    "FUZZ_ENTER int_n",
    "int ${soft_int}",
    "FUZZ_LEAVE int_n",
    "FUZZ_ENTER int3",
    "int3",
    "FUZZ_LEAVE int3",
    "FUZZ_ENTER ud2",
    "ud2",
    "FUZZ_LEAVE ud2",
    "FUZZ_ENTER divide_error",
    "divq {zero}(%rip)",
    "FUZZ_LEAVE divide_error",
    "FUZZ_ENTER general_protection",
    "movabsq 0x8000000000000000, %rax",
    "FUZZ_LEAVE general_protection",
    // Both PKS kinds load from the fuzz page; the callback decides.
    "FUZZ_ENTER pks",
    "movabsq {page}, %rax",
    "FUZZ_LEAVE pks",
    // The handler resumes at the CLI, so IF is clear again on the way out.
    // The loop halts until an interrupt, so the vCPU waits for the IRQ
    // without spinning: under TCG a LAPIC timer fires in QEMU's main loop,
    // which a spinning vCPU thread keeps off a host core (a campaign then
    // validated a third more frames per second on 1-CPU boots, half as many
    // again on 2-CPU boots; docs/smp.md). An IRQ
    // that never comes leaves the CPU halted, for the runner's timeout.
    "FUZZ_ENTER irq",
    "sti",
    "1: hlt",
    "decl {spins}(%rip)",
    "jnz 1b",
    "FUZZ_RESUME irq",
    "cli",
    "FUZZ_STORE",
    // xAPIC: rdi = &ICR low, eax = NMI | assert; the store sends it.
    "FUZZ_ENTER nmi_xapic",
    "movl %eax, (%rdi)",
    "FUZZ_WAIT",
    "FUZZ_LEAVE nmi_xapic",
    // x2APIC: ecx = ICR MSR, edx:eax = destination : NMI | assert.
    "FUZZ_ENTER nmi_x2apic",
    "wrmsr",
    "FUZZ_WAIT",
    "FUZZ_LEAVE nmi_x2apic",
    // Not an event: a voluntary switch to the next task and back, with the
    // callee-saved registers loaded (the selftests check they survive).
    "FUZZ_ENTER yield",
    "call {yield_now}",
    "FUZZ_LEAVE yield",
    r15 = const asm_offsets::PTREGS_R15,
    r14 = const asm_offsets::PTREGS_R14,
    r13 = const asm_offsets::PTREGS_R13,
    r12 = const asm_offsets::PTREGS_R12,
    bp = const asm_offsets::PTREGS_BP,
    bx = const asm_offsets::PTREGS_BX,
    r11 = const asm_offsets::PTREGS_R11,
    r10 = const asm_offsets::PTREGS_R10,
    r9 = const asm_offsets::PTREGS_R9,
    r8 = const asm_offsets::PTREGS_R8,
    ax = const asm_offsets::PTREGS_AX,
    cx = const asm_offsets::PTREGS_CX,
    dx = const asm_offsets::PTREGS_DX,
    si = const asm_offsets::PTREGS_SI,
    di = const asm_offsets::PTREGS_DI,
    spins = sym extregs_fuzz_spins,
    zero = sym extregs_fuzz_zero,
    soft_int = const SOFT_INT_VECTOR,
    page = const FUZZ_PAGE_ADDRESS,
    yield_now = sym crate::sched::yield_from_asm,
    options(att_syntax)
);

/// The wait loop's counter (set before each asynchronous event).
#[no_mangle]
pub static extregs_fuzz_spins: AtomicU32 = AtomicU32::new(0);
/// The divisor of the #DE trampoline.
#[no_mangle]
static extregs_fuzz_zero: u64 = 0;

pub(crate) type Trampoline = unsafe extern "C" fn(input: *const PtRegs, output: *mut PtRegs);

extern "C" {
    fn extregs_fuzz_yield(input: *const PtRegs, output: *mut PtRegs);
    fn extregs_fuzz_int_n(input: *const PtRegs, output: *mut PtRegs);
    fn extregs_fuzz_int_n_site();
    fn extregs_fuzz_int_n_resume();
    fn extregs_fuzz_int3(input: *const PtRegs, output: *mut PtRegs);
    fn extregs_fuzz_int3_site();
    fn extregs_fuzz_int3_resume();
    fn extregs_fuzz_ud2(input: *const PtRegs, output: *mut PtRegs);
    fn extregs_fuzz_ud2_site();
    fn extregs_fuzz_ud2_resume();
    fn extregs_fuzz_divide_error(input: *const PtRegs, output: *mut PtRegs);
    fn extregs_fuzz_divide_error_site();
    fn extregs_fuzz_divide_error_resume();
    fn extregs_fuzz_general_protection(input: *const PtRegs, output: *mut PtRegs);
    fn extregs_fuzz_general_protection_site();
    fn extregs_fuzz_general_protection_resume();
    fn extregs_fuzz_pks(input: *const PtRegs, output: *mut PtRegs);
    fn extregs_fuzz_pks_site();
    fn extregs_fuzz_pks_resume();
    fn extregs_fuzz_irq(input: *const PtRegs, output: *mut PtRegs);
    fn extregs_fuzz_irq_site();
    fn extregs_fuzz_irq_resume();
    fn extregs_fuzz_nmi_xapic(input: *const PtRegs, output: *mut PtRegs);
    fn extregs_fuzz_nmi_xapic_site();
    fn extregs_fuzz_nmi_xapic_resume();
    fn extregs_fuzz_nmi_x2apic(input: *const PtRegs, output: *mut PtRegs);
    fn extregs_fuzz_nmi_x2apic_site();
    fn extregs_fuzz_nmi_x2apic_resume();
}

/// The trampoline that loads every GPR, yields to the next task
/// (`sched::yield_now`), and stores every GPR: only the callee-saved ones
/// (rbx, rbp, r12–r15) must come back, as after any call.
pub(crate) fn yield_trampoline() -> Trampoline {
    extregs_fuzz_yield
}

/// A kind's trampoline, event address and resume address (the selftests
/// use the int3 one too).
pub(crate) fn trampoline(kind: Kind) -> (Trampoline, u64, u64) {
    let entry = |f: Trampoline, site: unsafe extern "C" fn(), resume: unsafe extern "C" fn()| {
        (f, site as usize as u64, resume as usize as u64)
    };
    match kind {
        Kind::IntN => entry(extregs_fuzz_int_n, extregs_fuzz_int_n_site, extregs_fuzz_int_n_resume),
        Kind::Int3 => entry(extregs_fuzz_int3, extregs_fuzz_int3_site, extregs_fuzz_int3_resume),
        Kind::Ud2 => entry(extregs_fuzz_ud2, extregs_fuzz_ud2_site, extregs_fuzz_ud2_resume),
        Kind::DivideError => entry(
            extregs_fuzz_divide_error,
            extregs_fuzz_divide_error_site,
            extregs_fuzz_divide_error_resume,
        ),
        Kind::GeneralProtection => entry(
            extregs_fuzz_general_protection,
            extregs_fuzz_general_protection_site,
            extregs_fuzz_general_protection_resume,
        ),
        Kind::PksResolved | Kind::PksFixup => {
            entry(extregs_fuzz_pks, extregs_fuzz_pks_site, extregs_fuzz_pks_resume)
        }
        Kind::Timer | Kind::SelfIpi | Kind::Preempt | Kind::Migrate => {
            entry(extregs_fuzz_irq, extregs_fuzz_irq_site, extregs_fuzz_irq_resume)
        }
        Kind::SelfNmi => match apic::current_mode() {
            apic::Mode::X2Apic => entry(
                extregs_fuzz_nmi_x2apic,
                extregs_fuzz_nmi_x2apic_site,
                extregs_fuzz_nmi_x2apic_resume,
            ),
            apic::Mode::XApic { .. } => entry(
                extregs_fuzz_nmi_xapic,
                extregs_fuzz_nmi_xapic_site,
                extregs_fuzz_nmi_xapic_resume,
            ),
        },
        Kind::Syscall | Kind::UserPageFault => {
            panic!("{}: a ring-3 kind has no kernel trampoline", kind.name())
        }
    }
}
