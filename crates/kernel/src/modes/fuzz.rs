//! `mode=fuzz seed=S iterations=N max-depth=D`: the nested-interrupt fuzzer.
//!
//! Each iteration a seeded PRNG (`rand_xoshiro`) writes an *event program*:
//! one [`Level`] per nesting depth, each with an event kind, a random value
//! for all 15 GPRs, a random PKRS for the interrupted context, and whether
//! the handler edits its frame (a GPR, or the saved PKRS through
//! `pks_update_saved`). Level 0 is raised from the mode's own context; the
//! handler of level d raises level d+1 from inside itself, so frames really
//! nest: on the kernel stack, and on the NMI IST stack below an NMI from
//! kernel mode.
//!
//! Every event is raised by a *trampoline* (assembly below) that loads the
//! level's 15 GPRs, executes the event at a known address (`site`) and, when
//! the handler lets it continue at `resume`, stores the 15 GPRs back. So the
//! handler can check the interrupted GPRs exactly, and the interrupted level
//! can check what came back after IRET.
//!
//! Every frame is checked ([`validate`]); the interrupted level re-checks
//! its GPRs and PKRS after return. The first violation prints show_regs, the
//! seed, iteration, event number and the event path from the outermost
//! level, a `RESULT` with `"ok":false`, and exits with failure.
//!
//! Asynchronous events (LAPIC timer, self-IPI) are armed before the
//! trampoline, which then spins in a loop with IF set until the handler moves
//! `ip` to `resume`; the loop counts down a memory counter, so an event that
//! never comes falls out of it and is reported instead of hanging. A self-NMI
//! is sent by the trampoline itself with a store to the ICR, so two GPRs of
//! that level carry the ICR address and value (x2APIC: the MSR operands).
//! Inside an NMI only synchronous events are raised (IF must stay clear and
//! NMIs are blocked); there the handler may also send a self-NMI before it
//! returns, which the entry must *latch* and the outer NMI then repeats (the
//! stub's latch below an NMI from kernel mode, the second one in
//! `crate::dispatch::paranoid_entry` below an NMI from ring 3).
//!
//! A `preempt` level is a timer IRQ whose handler wakes the fuzz partner
//! task and asks for a reschedule: the IRQ's exit switches to the partner,
//! which raises the rest of the program from its own stack and parks
//! again. The preempted level's frame and extension wait on the first
//! task's stack meanwhile; after the switch back, the exit restores the
//! PKRS that frame saved (with the handler's edits), which the level checks
//! after return like every other.
//!
//! One program in four runs level 0 in ring 3 ([`raise_from_user_mode`]):
//! a user task loads the GPRs and raises a SYSCALL, int3, ud2, a user #PF, a
//! timer IRQ or self-IPI (asked for by a SYSCALL, arriving after SYSRET), or
//! a real NMI it sets off itself with an `out` to the 8259
//! (`apic::arm_pic_nmi`; the 8259's acknowledgement in [`handle`] tells it
//! from the storm's). Below an NMI from ring 3 the frames stay on the task
//! stack.

use crate::arch::apic::{self, SELF_IPI_VECTOR, TIMER_VECTOR};
use crate::arch::irqflags;
use crate::arch::memory;
use crate::arch::pks::{self, KeyRights, PksFault, PKRS_DEFAULT};
use crate::arch::{exit, gdt};
use crate::debug::{coverage, oops, result, show_regs};
use crate::entry::hooks;
use crate::entry::{fault, irq, nmi};
use crate::sched;
use crate::user;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use extregs_cmdline::FuzzSettings;
use extregs_entry_asm::asm_offsets;
use extregs_regs::{ExtendedPtRegs, PtRegs, GENERIC_PTREGS_SIZE, NO_ERROR_CODE};
use rand_core::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use x86_64::instructions::interrupts::without_interrupts;

/// The fuzzer's pkey page, at a fixed address so the PKS trampolines can
/// name it in the instruction (`movabs`) and leave every GPR random. Its
/// own level-4 slot (253): the last one of the lower half is user space.
pub const FUZZ_PAGE_ADDRESS: u64 = 0x7e80_0000_0000;
const FUZZ_PKEY: u8 = 1;
const FUZZ_PAGE_FILL: u64 = 0xf022_0f0d_dba1_1001;
/// The vector of the fuzzer's `int n`.
pub const SOFT_INT_VECTOR: u8 = 0x81;
const MAX_LEVELS: usize = extregs_cmdline::MAX_FUZZ_DEPTH as usize;

const PF_PRESENT: u64 = 1 << 0;
const PF_PROTECTION_KEY: u64 = 1 << 5;

/// Spins of an asynchronous trampoline's wait loop before it gives up (the
/// event never came). Seconds of TCG time: a self-IPI is pending before the
/// loop starts, but the timer's expiry is a QEMU host timer, which a busy
/// host can delay by many milliseconds (2,000,000 spins were too few with
/// two QEMUs on two cores).
const ASYNC_SPINS: u32 = 1_000_000_000;

/// One kind of event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    IntN,
    Int3,
    Ud2,
    DivideError,
    GeneralProtection,
    PksResolved,
    PksFixup,
    Timer,
    SelfIpi,
    SelfNmi,
    /// A timer IRQ whose exit preempts the interrupted task: the fuzz
    /// partner task runs the rest of the program on its own stack, then
    /// parks, and the preempted frame resumes.
    Preempt,
    /// Ring 3 only: a SYSCALL (`fuzz_event`), whose frame the syscall hook
    /// hands to the fuzzer.
    Syscall,
    /// Ring 3 only: a load from an unmapped user page.
    UserPageFault,
}

/// The kinds a kernel-mode level draws from: every kind but the two
/// ring-3-only ones, which come last in [`ALL_KINDS_IN_ORDER`].
const KINDS: &[Kind] = ALL_KINDS_IN_ORDER.split_at(ALL_KINDS - 2).0;

/// The kinds of an outermost level run in ring 3 (Timer and SelfIpi arrive
/// right after a SYSCALL that asked for them, in the user wait loop; SelfNmi
/// is a real NMI the user task sets off with an `out` to the 8259, see
/// `apic::arm_pic_nmi`).
const USER_KINDS: [Kind; 7] = [
    Kind::Syscall,
    Kind::Int3,
    Kind::Ud2,
    Kind::UserPageFault,
    Kind::Timer,
    Kind::SelfIpi,
    Kind::SelfNmi,
];

/// Can this machine deliver the ring-3 level's NMI (`apic::probe_pic_nmi`,
/// once per boot)? If not, see [`user_kind`].
static USER_NMI_AVAILABLE: AtomicBool = AtomicBool::new(false);

/// A ring-3 level's kind from a draw: without the PIC NMI on this machine,
/// an NMI level becomes an int3 (the same draws, so the rest of the
/// program stays the same).
fn user_kind(draw: u32) -> Kind {
    match USER_KINDS[draw as usize % USER_KINDS.len()] {
        Kind::SelfNmi if !USER_NMI_AVAILABLE.load(Ordering::Relaxed) => Kind::Int3,
        kind => kind,
    }
}

/// Every kind, for the counters.
const ALL_KINDS: usize = 13;

/// RFLAGS in the user trampolines: IF and the fixed bit; nothing there
/// changes the arithmetic flags before the event, so it is what SYSCALL
/// saves in R11.
const USER_FLAGS: u64 = extregs_regs::X86_EFLAGS_IF | extregs_regs::X86_EFLAGS_FIXED;

/// #PF error code of a user read of a page that is not present.
const PF_USER: u64 = 1 << 2;

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::IntN => "int_n",
            Kind::Int3 => "int3",
            Kind::Ud2 => "ud2",
            Kind::DivideError => "divide_error",
            Kind::GeneralProtection => "general_protection",
            Kind::PksResolved => "pks_fault_resolved",
            Kind::PksFixup => "pks_fault_fixup",
            Kind::Timer => "timer",
            Kind::SelfIpi => "self_ipi",
            Kind::SelfNmi => "self_nmi",
            Kind::Preempt => "preempt",
            Kind::Syscall => "syscall",
            Kind::UserPageFault => "page_fault",
        }
    }

    fn vector(self) -> u8 {
        match self {
            Kind::IntN => SOFT_INT_VECTOR,
            Kind::Int3 => 3,
            Kind::Ud2 => 6,
            Kind::DivideError => 0,
            Kind::GeneralProtection => 13,
            Kind::PksResolved | Kind::PksFixup => 14,
            Kind::Timer | Kind::Preempt => TIMER_VECTOR,
            Kind::SelfIpi => SELF_IPI_VECTOR,
            Kind::SelfNmi => 2,
            Kind::Syscall => user::syscall::SYSCALL_PSEUDO_VECTOR,
            Kind::UserPageFault => 14,
        }
    }

    fn error_code(self) -> u64 {
        match self {
            Kind::GeneralProtection => 0,
            Kind::PksResolved | Kind::PksFixup => PF_PRESENT | PF_PROTECTION_KEY,
            Kind::UserPageFault => PF_USER,
            Kind::Syscall => user::syscall::numbers::SYS_FUZZ_EVENT,
            _ => NO_ERROR_CODE,
        }
    }

    /// Delivered while the trampoline spins (IF set for the maskable ones).
    fn is_async(self) -> bool {
        matches!(self, Kind::Timer | Kind::SelfIpi | Kind::SelfNmi | Kind::Preempt)
    }

    fn is_maskable_irq(self) -> bool {
        matches!(self, Kind::Timer | Kind::SelfIpi | Kind::Preempt)
    }

    /// A trap: the saved `ip` is already past the instruction.
    fn is_trap(self) -> bool {
        matches!(self, Kind::IntN | Kind::Int3 | Kind::Syscall)
    }

    fn needs_pks(self) -> bool {
        matches!(self, Kind::PksResolved | Kind::PksFixup)
    }
}

/// What a handler changes in its own frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mutation {
    None,
    /// R12 of the interrupted context.
    R12(u64),
    /// A key's rights in the saved PKRS (through `pks_update_saved`).
    SavedPkrs {
        pkey: u8,
        rights: KeyRights,
    },
}

/// One nesting level of an event program.
#[derive(Clone, Copy, Debug)]
struct Level {
    kind: Kind,
    /// The GPRs the trampoline loads (other fields unused).
    gprs: PtRegs,
    /// PKRS of the interrupted context.
    pkrs: u32,
    /// The lockdep model's "hardirqs enabled" while the event hits; an NMI
    /// must save it and put it back (for maskable IRQs it mirrors IF: true).
    lockdep_model: bool,
    mutation: Mutation,
    /// Inside an NMI: the handler sends a self-NMI before it returns.
    send_latched_nmi: bool,
}

const EMPTY_LEVEL: Level = Level {
    kind: Kind::Int3,
    gprs: PtRegs::ZERO,
    pkrs: PKRS_DEFAULT,
    lockdep_model: false,
    mutation: Mutation::None,
    send_latched_nmi: false,
};

struct Program {
    levels: [Level; MAX_LEVELS],
    len: usize,
    /// Level 0 runs in ring 3 (a user task raises it; its GPRs go in and
    /// come back through the fuzzer's user page).
    user: bool,
}

/// The running program. One CPU: it is written only between iterations,
/// when no fuzz event is outstanding and with the fuzz hook off (`ACTIVE`
/// clear, so a foreign NMI meanwhile goes to the kernel's NMI handler and
/// never reads it); only the hook's handlers read it.
struct ProgramCell(UnsafeCell<Program>);
// SAFETY: see above; the kernel runs on one CPU and the writer never runs
// while a reader (a handler of this program) can.
unsafe impl Sync for ProgramCell {}

static PROGRAM: ProgramCell = ProgramCell(UnsafeCell::new(Program {
    levels: [EMPTY_LEVEL; MAX_LEVELS],
    len: 0,
    user: false,
}));

fn level(index: usize) -> Level {
    // SAFETY: a plain copy out of the program; see ProgramCell.
    unsafe { (*PROGRAM.0.get()).levels[index] }
}

fn program_len() -> usize {
    // SAFETY: as in `level`.
    unsafe { (*PROGRAM.0.get()).len }
}

/// Does level `index` run in ring 3?
fn is_user_level(index: usize) -> bool {
    // SAFETY: as in `level`.
    index == 0 && unsafe { (*PROGRAM.0.get()).user }
}

/// The user trampoline of a ring-3 level's kind.
fn user_trampoline(kind: Kind) -> user::programs::FuzzTrampoline {
    use user::programs::UserFuzzEvent;
    user::programs::fuzz_trampoline(match kind {
        Kind::Syscall => UserFuzzEvent::Syscall,
        Kind::Int3 => UserFuzzEvent::Int3,
        Kind::Ud2 => UserFuzzEvent::Ud2,
        Kind::UserPageFault => UserFuzzEvent::PageFault,
        Kind::SelfNmi => UserFuzzEvent::Nmi,
        _ => UserFuzzEvent::Irq,
    })
}

/// The event and resume addresses of level `index` (user ones for a ring-3
/// level).
fn sites(index: usize, kind: Kind) -> (u64, u64) {
    if is_user_level(index) {
        let trampoline = user_trampoline(kind);
        (trampoline.site, trampoline.resume)
    } else {
        let (_, site, resume) = trampoline(kind);
        (site, resume)
    }
}

static ACTIVE: AtomicBool = AtomicBool::new(false);
/// Levels whose handler is running (so the next event is for this level).
static DEPTH: AtomicUsize = AtomicUsize::new(0);
/// Bit d: level d's event was handled (its handler ran to the end).
static HANDLED: AtomicU32 = AtomicU32::new(0);
/// Bit d: level d (an NMI) saw the repeat of a latched NMI.
static REPEATED: AtomicU32 = AtomicU32::new(0);
/// Where each level's PtRegs was (for the nesting checks).
static FRAME_ADDRESS: [AtomicU64; MAX_LEVELS] = [const { AtomicU64::new(0) }; MAX_LEVELS];
static FRAMES: AtomicU64 = AtomicU64::new(0);
static KIND_COUNTS: [AtomicU64; ALL_KINDS] = [const { AtomicU64::new(0) }; ALL_KINDS];
/// The ring-3 levels' kinds, counted apart (`user_<kind>` in RESULT).
static USER_KIND_COUNTS: [AtomicU64; ALL_KINDS] = [const { AtomicU64::new(0) }; ALL_KINDS];

/// Event labels for the coverage pictures: a kind raised in the kernel
/// (index `kind`), or in ring 3 (`ALL_KINDS + kind`, named `user_<kind>`).
const LABELS: usize = 2 * ALL_KINDS;
/// What an event interrupted: the fuzzer's task (0), user mode (1), or
/// the handler of the level below it (2 + that level's label).
const CONTEXTS: usize = 2 + LABELS;
/// Frames per event label and depth (`kind_depth` in FUZZ and RESULT).
static DEPTH_COUNTS: [[AtomicU64; MAX_LEVELS]; LABELS] =
    [const { [const { AtomicU64::new(0) }; MAX_LEVELS] }; LABELS];
/// Frames per event label and interrupted context (`contexts`).
static CONTEXT_COUNTS: [[AtomicU64; CONTEXTS]; LABELS] =
    [const { [const { AtomicU64::new(0) }; CONTEXTS] }; LABELS];

/// The label index of level `index`'s event.
fn label(index: usize) -> usize {
    level(index).kind as usize + if is_user_level(index) { ALL_KINDS } else { 0 }
}

/// Prints label `index`'s name (`int3`, `user_int3`).
fn print_label(index: usize) {
    let user = if index >= ALL_KINDS { "user_" } else { "" };
    let kind = ALL_KINDS_IN_ORDER[index % ALL_KINDS];
    print!("\"{user}{}\"", kind.name());
}

/// Every kind, indexed by its discriminant (checked below).
const ALL_KINDS_IN_ORDER: [Kind; ALL_KINDS] = [
    Kind::IntN,
    Kind::Int3,
    Kind::Ud2,
    Kind::DivideError,
    Kind::GeneralProtection,
    Kind::PksResolved,
    Kind::PksFixup,
    Kind::Timer,
    Kind::SelfIpi,
    Kind::SelfNmi,
    Kind::Preempt,
    Kind::Syscall,
    Kind::UserPageFault,
];
const _: () = {
    let mut index = 0;
    while index < ALL_KINDS {
        assert!(ALL_KINDS_IN_ORDER[index] as usize == index);
        index += 1;
    }
};
/// Foreign NMIs that landed in user mode.
static FOREIGN_USER_NMIS: AtomicU64 = AtomicU64::new(0);
static LATCHED_NMIS: AtomicU64 = AtomicU64::new(0);
static MAX_DEPTH_REACHED: AtomicUsize = AtomicUsize::new(0);
static DIGEST: AtomicU64 = AtomicU64::new(FNV_OFFSET);
static SEED: AtomicU64 = AtomicU64::new(0);
static ITERATION: AtomicU64 = AtomicU64::new(0);
static EVENT_NUMBER: AtomicU64 = AtomicU64::new(0);

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Folds `value` into the trace digest (FNV-1a over its bytes).
fn digest(value: u64) {
    let mut hash = DIGEST.load(Ordering::Relaxed);
    for byte in value.to_le_bytes() {
        hash = (hash ^ u64::from(byte)).wrapping_mul(FNV_PRIME);
    }
    DIGEST.store(hash, Ordering::Relaxed);
}

// ---------------------------------------------------------------------------
// Trampolines.
//
//   extregs_fuzz_<kind>(input: *const PtRegs, output: *mut PtRegs)
//
//   | return address           |
//   | rbx rbp r12 r13 r14 r15  |  callee-saved, pushed
//   | output                   |  <- rsp while the GPRs hold the level's values
//
// FUZZ_ENTER loads all 15 GPRs from `input` (rdi last); the event follows at
// `_site`; at `_resume` FUZZ_LEAVE swaps rdi with the saved output pointer
// and stores all 15 GPRs into `output`. Offsets come from asm-offsets.
// ---------------------------------------------------------------------------
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
    "FUZZ_ENTER irq",
    "sti",
    "FUZZ_WAIT",
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
static extregs_fuzz_spins: AtomicU32 = AtomicU32::new(0);
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
        Kind::Timer | Kind::SelfIpi | Kind::Preempt => {
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

// ---------------------------------------------------------------------------
// Generating programs.
// ---------------------------------------------------------------------------

/// A random PKRS for an interrupted context: key 0 read/write (all kernel
/// memory), every other key random; for the PKS kinds the fuzz key denies
/// reads, so the load faults.
fn random_pkrs(rng: &mut Xoshiro256PlusPlus, kind: Kind) -> u32 {
    let mut pkrs = (rng.next_u32() & !0b11) | (PKRS_DEFAULT & 0b11);
    if kind.needs_pks() {
        pkrs = pks::with_key_rights(pkrs, FUZZ_PKEY, KeyRights::NoAccess);
    }
    pkrs
}

fn random_gprs(rng: &mut Xoshiro256PlusPlus) -> PtRegs {
    PtRegs {
        r15: rng.next_u64(),
        r14: rng.next_u64(),
        r13: rng.next_u64(),
        r12: rng.next_u64(),
        bp: rng.next_u64(),
        bx: rng.next_u64(),
        r11: rng.next_u64(),
        r10: rng.next_u64(),
        r9: rng.next_u64(),
        r8: rng.next_u64(),
        ax: rng.next_u64(),
        cx: rng.next_u64(),
        dx: rng.next_u64(),
        si: rng.next_u64(),
        di: rng.next_u64(),
        ..PtRegs::default()
    }
}

fn generate(rng: &mut Xoshiro256PlusPlus, max_depth: usize, program: &mut Program) {
    // Half the programs go to the full depth, the rest stop anywhere.
    let len =
        if rng.next_u32() & 1 == 0 { max_depth } else { 1 + (rng.next_u32() as usize % max_depth) };
    let with_pks = pks::enabled();
    let mut in_nmi = false;
    let mut preempted = false;
    let mut in_hardirq = false;
    // One program in four starts in ring 3.
    program.user = rng.next_u32().is_multiple_of(4);
    for (index, slot) in program.levels.iter_mut().take(len).enumerate() {
        if index == 0 && program.user {
            let kind = user_kind(rng.next_u32());
            in_hardirq |= kind.is_async();
            in_nmi |= kind == Kind::SelfNmi;
            *slot = user_level(rng, kind);
            continue;
        }
        let kind = loop {
            let kind = KINDS[rng.next_u32() as usize % KINDS.len()];
            // Inside an NMI: IF stays clear and NMIs are blocked, so only
            // synchronous events. One preemption per program (the partner
            // runs the rest, and it has no partner of its own), and never
            // inside an interrupt handler: its HARDIRQ_OFFSET in the preempt
            // count forbids it, as in Linux.
            if (in_nmi && kind.is_async())
                || (kind.needs_pks() && !with_pks)
                || (kind == Kind::Preempt && (preempted || in_hardirq))
            {
                continue;
            }
            break kind;
        };
        preempted |= kind == Kind::Preempt;
        // `int $0x81` enters through an external-interrupt stub, so its
        // handler runs as a hard interrupt too.
        in_hardirq |= kind.is_async() || kind == Kind::IntN;
        let mut gprs = random_gprs(rng);
        if kind == Kind::SelfNmi {
            match apic::prepare_self_nmi_store() {
                apic::SelfNmiStore::XApic { icr_low, value } => {
                    gprs.di = icr_low;
                    gprs.ax = (gprs.ax & !0xffff_ffff) | u64::from(value);
                }
                apic::SelfNmiStore::X2Apic { msr, high, low } => {
                    gprs.cx = (gprs.cx & !0xffff_ffff) | u64::from(msr);
                    gprs.dx = (gprs.dx & !0xffff_ffff) | u64::from(high);
                    gprs.ax = (gprs.ax & !0xffff_ffff) | u64::from(low);
                }
            }
        }
        let mutation = match rng.next_u32() % 4 {
            0 => Mutation::R12(rng.next_u64()),
            1 if with_pks => Mutation::SavedPkrs {
                // Keys 2..=15: key 0 must stay read/write, key 1 is the
                // fuzz page's.
                pkey: 2 + (rng.next_u32() % 14) as u8,
                rights: [KeyRights::ReadWrite, KeyRights::ReadOnly, KeyRights::NoAccess]
                    [rng.next_u32() as usize % 3],
            },
            _ => Mutation::None,
        };
        *slot = Level {
            kind,
            gprs,
            pkrs: if with_pks { random_pkrs(rng, kind) } else { 0 },
            // Maskable IRQs arrive with IF set, which the model mirrors; an
            // NMI may hit whatever the model says.
            lockdep_model: kind.is_maskable_irq()
                || (kind == Kind::SelfNmi && rng.next_u32() & 1 == 0),
            mutation,
            // The level's handler, inside an NMI, sends a self-NMI that must
            // be latched until the outer NMI is done.
            send_latched_nmi: in_nmi && rng.next_u32().is_multiple_of(4),
        };
        in_nmi |= kind == Kind::SelfNmi;
    }
    program.len = len;
}

/// A ring-3 outermost level: random GPRs, except that a level whose event
/// is (or is asked for by) a SYSCALL carries the number in RAX, and RCX and
/// R11 already hold what SYSCALL writes there (the RIP after it and the
/// user RFLAGS), so every GPR can be checked exactly; and an NMI level's AL
/// holds the 8259 mask its `out` writes. User mode runs with
/// the default PKRS; its saved PKRS is never edited (user mode must never
/// see kernel rights).
fn user_level(rng: &mut Xoshiro256PlusPlus, kind: Kind) -> Level {
    use user::syscall::numbers::{SYS_FUZZ_EVENT, SYS_SELF_IPI_ON_RETURN, SYS_TIMER_ON_RETURN};
    let mut gprs = random_gprs(rng);
    let number = match kind {
        Kind::Syscall => Some(SYS_FUZZ_EVENT),
        Kind::Timer => Some(SYS_TIMER_ON_RETURN),
        Kind::SelfIpi => Some(SYS_SELF_IPI_ON_RETURN),
        _ => None,
    };
    if let Some(number) = number {
        gprs.ax = number;
        gprs.cx = user_trampoline(kind).site + SYSCALL_INSTRUCTION_BYTES;
        gprs.r11 = USER_FLAGS;
    }
    if kind == Kind::SelfNmi {
        gprs.ax = (gprs.ax & !0xff) | u64::from(apic::PIC_MASK_IRQ0_OPEN);
    }
    Level {
        kind,
        gprs,
        pkrs: if pks::enabled() { PKRS_DEFAULT } else { 0 },
        lockdep_model: true,
        mutation: if rng.next_u32() & 1 == 0 {
            Mutation::R12(rng.next_u64())
        } else {
            Mutation::None
        },
        send_latched_nmi: false,
    }
}

/// `syscall` is two bytes (0f 05).
const SYSCALL_INSTRUCTION_BYTES: u64 = 2;

/// The GPRs a level's handler must find in its frame: what the level
/// loaded, except that for a ring-3 IRQ level the SYSCALL that asked for
/// the IRQ has returned 0 in RAX by then, and a SYSCALL's own frame says
/// -ENOSYS in RAX until the table answers (the number is in orig_ax).
fn frame_gprs(index: usize, level: &Level) -> PtRegs {
    let mut gprs = level.gprs;
    if is_user_level(index) && level.kind.is_maskable_irq() {
        gprs.ax = 0;
    }
    if is_user_level(index) && level.kind == Kind::Syscall {
        gprs.ax = extregs_entry_asm::ENOSYS.wrapping_neg();
    }
    gprs
}

// ---------------------------------------------------------------------------
// Raising a level and checking what comes back.
// ---------------------------------------------------------------------------

/// The GPRs level `index` must see after return.
fn expected_gprs_after(index: usize, level: &Level) -> PtRegs {
    let mut expected = frame_gprs(index, level);
    if is_user_level(index) && level.kind == Kind::Syscall {
        // The syscall's return value.
        expected.ax = 0;
    }
    if let Mutation::R12(value) = level.mutation {
        expected.r12 = value;
    }
    if level.kind == Kind::PksResolved {
        // The retried load succeeded.
        expected.ax = FUZZ_PAGE_FILL;
    }
    expected
}

/// The PKRS the interrupted level must run with after return.
fn expected_pkrs_after(level: &Level) -> u32 {
    if !pks::enabled() {
        return 0;
    }
    let mut pkrs = level.pkrs;
    if let Mutation::SavedPkrs { pkey, rights } = level.mutation {
        pkrs = pks::with_key_rights(pkrs, pkey, rights);
    }
    if level.kind == Kind::PksResolved {
        pkrs = pks::with_key_rights(pkrs, FUZZ_PKEY, KeyRights::ReadWrite);
    }
    pkrs
}

/// Raises level `index` from the current context and checks the return.
fn raise(index: usize) {
    if is_user_level(index) {
        raise_from_user_mode();
        return;
    }
    let level = level(index);
    let (entry, _, _) = trampoline(level.kind);
    EVENT_NUMBER.fetch_add(1, Ordering::Relaxed);
    let partner_runs_before = PARTNER_RUNS.load(Ordering::SeqCst);
    match level.kind {
        Kind::Timer | Kind::Preempt => apic::start_timer(apic::TimerMode::OneShot, 1),
        Kind::SelfIpi => apic::send_self_ipi(SELF_IPI_VECTOR),
        _ => {}
    }
    extregs_fuzz_spins.store(ASYNC_SPINS, Ordering::SeqCst);
    if level.kind == Kind::SelfNmi {
        OWN_NMI_IP.store(0, Ordering::SeqCst);
    }
    HANDLED.fetch_and(!(1 << index), Ordering::SeqCst);
    REPEATED.fetch_and(!(1 << index), Ordering::SeqCst);
    let model_before = irqflags::lockdep_hardirqs_enabled();
    if level.lockdep_model {
        irqflags::local_irq_enable_model_only();
    } else {
        irqflags::local_irq_disable_model_only();
    }
    if pks::enabled() {
        // SAFETY: PKS is on and the generated value keeps key 0 read/write.
        unsafe { pks::write_pkrs(level.pkrs) };
    }
    let mut output = PtRegs::default();
    // SAFETY: the trampoline reads `input` and writes `output` (both valid
    // PtRegs), keeps every callee-saved register, and raises exactly one
    // event that the fuzz hook handles (and resumes past, where needed).
    unsafe { entry(&level.gprs, &mut output) };
    let live_pkrs = if pks::enabled() { pks::read_pkrs() } else { 0 };
    let model_after = irqflags::lockdep_hardirqs_enabled();
    if pks::enabled() {
        // SAFETY: PKS is on; the default keeps key 0 read/write.
        unsafe { pks::update_pkrs(PKRS_DEFAULT) };
    }
    if model_before {
        irqflags::local_irq_enable_model_only();
    } else {
        irqflags::local_irq_disable_model_only();
    }
    if HANDLED.load(Ordering::SeqCst) & (1 << index) == 0 {
        violation_after(
            index,
            &output,
            "event_delivered",
            format_args!("the {} event never reached its handler", level.kind.name()),
        );
    }
    if level.kind == Kind::Preempt && PARTNER_RUNS.load(Ordering::SeqCst) == partner_runs_before {
        violation_after(
            index,
            &output,
            "preempted",
            format_args!("the preempt event's exit never switched to the partner task"),
        );
    }
    let expected = expected_gprs_after(index, &level);
    for ((name, want), (_, got)) in expected.gprs().iter().zip(output.gprs().iter()) {
        if want != got {
            violation_after(
                index,
                &output,
                "gprs_after_return",
                format_args!("{name} came back {got:#018x}, expected {want:#018x}"),
            );
        }
    }
    let pkrs_expected = expected_pkrs_after(&level);
    if live_pkrs != pkrs_expected {
        violation_after(
            index,
            &output,
            "pkrs_after_return",
            format_args!("PKRS {live_pkrs:08x} after return, expected {pkrs_expected:08x}"),
        );
    }
    if model_after != level.lockdep_model {
        violation_after(
            index,
            &output,
            "lockdep_after_return",
            format_args!(
                "hardirqs-enabled model {model_after} after return, was {}",
                level.lockdep_model
            ),
        );
    }
    if level.kind == Kind::SelfNmi
        && (index + 1..program_len()).any(|i| self::level(i).send_latched_nmi)
        && REPEATED.load(Ordering::SeqCst) & (1 << index) == 0
    {
        violation_after(
            index,
            &output,
            "nmi_latched_and_repeated",
            format_args!("an NMI sent inside this NMI was never handled by a repeat"),
        );
    }
}

/// Raises the ring-3 outermost level: a user task runs the kind's user
/// trampoline with the level's GPRs (written to the fuzzer's user page),
/// which raises the event from user mode and, after the return, stores its
/// GPRs back there and exits; then checks them like any level's.
fn raise_from_user_mode() {
    let level = level(0);
    let trampoline = user_trampoline(level.kind);
    EVENT_NUMBER.fetch_add(1, Ordering::Relaxed);
    HANDLED.fetch_and(!1, Ordering::SeqCst);
    let page = user::fuzz_page();
    let output_address = page + USER_OUTPUT_OFFSET;
    user::write_user_ptregs(page, &level.gprs);
    let pic_nmi = level.kind == Kind::SelfNmi;
    if pic_nmi {
        // The NMI the user task's `out` sets off; the port is open to ring 3
        // only while this level's task is the one user task.
        if let Err(why) = without_interrupts(apic::arm_pic_nmi) {
            report_and_die("user_nmi_source", 0, format_args!("{why}"));
        }
        PIC_NMI_ARMED.store(true, Ordering::SeqCst);
        gdt::set_user_port_access(apic::PIC_MASTER_DATA, true);
    }
    let spawned = user::spawn(format_args!("fuzz-user"), trampoline.program, page, output_address);
    let Ok(handle) = spawned else {
        report_and_die("user_task", 0, format_args!("could not spawn the user task"));
    };
    let status = sched::wait(handle);
    if pic_nmi {
        gdt::set_user_port_access(apic::PIC_MASTER_DATA, false);
        PIC_NMI_ARMED.store(false, Ordering::SeqCst);
        without_interrupts(apic::disarm_pic_nmi);
    }
    let output = user::read_user_ptregs(output_address).unwrap_or_default();
    if status != 0 {
        violation_after(
            0,
            &output,
            "user_task",
            format_args!("the ring-3 level's task ended with status {status}"),
        );
    }
    if HANDLED.load(Ordering::SeqCst) & 1 == 0 {
        violation_after(
            0,
            &output,
            "event_delivered",
            format_args!("the user {} event never reached its handler", level.kind.name()),
        );
    }
    if level.kind == Kind::SelfNmi
        && (1..program_len()).any(|i| self::level(i).send_latched_nmi)
        && REPEATED.load(Ordering::SeqCst) & 1 == 0
    {
        violation_after(
            0,
            &output,
            "nmi_latched_and_repeated",
            format_args!("an NMI sent inside the NMI from ring 3 was never handled by a repeat"),
        );
    }
    let expected = expected_gprs_after(0, &level);
    for ((name, want), (_, got)) in expected.gprs().iter().zip(output.gprs().iter()) {
        if want != got {
            violation_after(
                0,
                &output,
                "gprs_after_return",
                format_args!("{name} came back {got:#018x} to user mode, expected {want:#018x}"),
            );
        }
    }
}

/// Where in the fuzzer's user page the trampoline stores its GPRs.
const USER_OUTPUT_OFFSET: u64 = 512;

/// The ring-3 NMI level's 8259 NMI is armed and not yet acknowledged
/// (every NMI meanwhile asks the 8259 whether it was that one).
static PIC_NMI_ARMED: AtomicBool = AtomicBool::new(false);

/// Does level `index` run below an NMI taken in kernel mode (on the NMI
/// stack)? An NMI from ring 3 runs its handler on the task stack.
fn nmi_ancestor(index: usize) -> bool {
    (0..index).any(|i| level(i).kind == Kind::SelfNmi && !is_user_level(i))
}

// ---------------------------------------------------------------------------
// The handlers.
// ---------------------------------------------------------------------------

/// The event hook (everything but #PF): claims the event of the current
/// level while fuzzing.
fn event_hook(regs: &mut PtRegs, vector: u8) -> bool {
    // The foreign timer is no level's event: the IRQ dispatcher counts it
    // (and records its interrupt point); check_frame has validated it.
    if !ACTIVE.load(Ordering::SeqCst) || vector == apic::FOREIGN_TIMER_VECTOR {
        return false;
    }
    handle(regs, vector);
    true
}

/// The fuzz page's PKS fault handler.
fn pks_fault(regs: &mut PtRegs, fault: PksFault) -> bool {
    if !ACTIVE.load(Ordering::SeqCst) || fault.address != FUZZ_PAGE_ADDRESS {
        return false;
    }
    handle(regs, 14);
    true
}

/// NMIs the program did not raise (QMP `inject-nmi`, a storm) that came
/// in while an iteration ran: checked for latching like every NMI (first
/// thing in [`handle`]), validated by the entry checks that need no program
/// (`check::check_frame`: extension offset, CS/SS, live PKRS, IST
/// placement and the NMI frame on the copy), counted, and otherwise left
/// alone: they never enter the digest. Those between iterations go to the
/// kernel's NMI handler and are counted from `nmi::count`.
static FOREIGN_NMIS: AtomicU64 = AtomicU64::new(0);
/// The `ip` the running chain's own NMI left in its frame (0: none yet),
/// so a latched repeat can be told from a foreign NMI.
static OWN_NMI_IP: AtomicU64 = AtomicU64::new(0);

/// Is this NMI one the program did not raise? `from_pic`: the 8259 had the
/// armed IRQ 0 pending when this NMI came (see [`PIC_NMI_ARMED`]).
fn is_foreign_nmi(regs: &PtRegs, depth: usize, from_pic: bool) -> bool {
    if depth >= program_len() {
        return true;
    }
    let level = level(depth);
    if level.kind != Kind::SelfNmi {
        return true;
    }
    if HANDLED.load(Ordering::SeqCst) & (1 << depth) != 0 {
        // After the level's NMI ran: the program's own only as the one
        // repeat a deeper level asked for, on the same interrupted context.
        let expects_repeat = (depth + 1..program_len()).any(|i| self::level(i).send_latched_nmi);
        let repeated = REPEATED.load(Ordering::SeqCst) & (1 << depth) != 0;
        return !(expects_repeat && !repeated && regs.ip == OWN_NMI_IP.load(Ordering::SeqCst));
    }
    // Before it: in ring 3 the 8259 says whether it raised this one. If it
    // did, it is the program's wherever it landed ([`validate`] then checks
    // ip and cs, so an entry that garbled them is reported as such).
    if is_user_level(depth) {
        return !from_pic;
    }
    // In the kernel the program's own lands right after the trampoline's
    // ICR store (`site`), in its wait loop; one at `site` itself came
    // before the store sent anything.
    let (site, resume) = sites(depth, level.kind);
    !(site < regs.ip && regs.ip <= resume)
}

fn handle(regs: &mut PtRegs, vector: u8) {
    let depth = DEPTH.load(Ordering::SeqCst);
    // Before anything else can touch the 8259 (a console byte moves an IRQ
    // line): acknowledge the armed ring-3 NMI, or in QEMU's 8259 model every
    // update would raise another.
    let from_pic = vector == 2
        && PIC_NMI_ARMED.load(Ordering::SeqCst)
        && apic::acknowledge_pic_nmi()
        && PIC_NMI_ARMED.swap(false, Ordering::SeqCst);
    // First, for every NMI, the program's or not: one that interrupted
    // NMI-stack code must have been latched by the entry, never handled.
    if vector == 2 && gdt::ist_stack_of(regs.sp) == Some(gdt::NMI_IST_INDEX) {
        // The entry handled an NMI that hit NMI-stack code instead of
        // latching it: this frame now overlays the outer NMI's.
        violation(
            regs,
            depth,
            "nmi_not_latched",
            format_args!(
                "an NMI interrupted code on the NMI stack (sp {:#x}) and was handled, not latched",
                regs.sp
            ),
        );
    }
    // A repeat of an NMI from user mode for an NMI latched in its handler:
    // that one landed in the kernel, here.
    let latched_ip = if vector == 2 && regs.user_mode() { nmi::take_latched_ip() } else { None };
    if vector == 2 && is_foreign_nmi(regs, depth, from_pic) {
        FOREIGN_NMIS.fetch_add(1, Ordering::Relaxed);
        if regs.user_mode() && latched_ip.is_none() {
            FOREIGN_USER_NMIS.fetch_add(1, Ordering::Relaxed);
        }
        coverage::record(latched_ip.unwrap_or(regs.ip));
        return;
    }
    // A latched NMI's repeat: the NMI level already ran (its handler is
    // done, so DEPTH is back at it) and the entry runs it again.
    if vector == 2 && depth < program_len() && HANDLED.load(Ordering::SeqCst) & (1 << depth) != 0 {
        let level = level(depth);
        if level.kind != Kind::SelfNmi {
            violation(regs, depth, "event_kind", format_args!("a second NMI at a non-NMI level"));
        }
        validate(regs, vector, depth, &level, true);
        REPEATED.fetch_or(1 << depth, Ordering::SeqCst);
        LATCHED_NMIS.fetch_add(1, Ordering::Relaxed);
        return;
    }
    if depth >= program_len() {
        violation(
            regs,
            depth,
            "event_kind",
            format_args!("vector {vector} beyond the program ({} levels)", program_len()),
        );
    }
    let level = level(depth);
    validate(regs, vector, depth, &level, false);
    FRAME_ADDRESS[depth].store(regs as *mut PtRegs as u64, Ordering::SeqCst);
    if level.kind.is_maskable_irq() {
        // Ack early (as Linux's sysvec handlers do), so nested IRQs of any
        // priority can come in while this handler raises the next level.
        apic::eoi();
    }
    DEPTH.store(depth + 1, Ordering::SeqCst);
    MAX_DEPTH_REACHED.fetch_max(depth + 1, Ordering::Relaxed);
    if level.kind == Kind::Preempt {
        // The rest of the program runs in the partner task, after this
        // IRQ's exit has switched to it, with this frame and its
        // extension left on the interrupted task's stack.
        PARTNER_START.store(depth + 1, Ordering::SeqCst);
        match PARTNER.get() {
            Some(partner) => sched::unpark_and_resched(*partner),
            None => violation(regs, depth, "preempted", format_args!("no partner task")),
        }
    } else if depth + 1 < program_len() {
        raise(depth + 1);
    }
    // This level's edits of its own frame. (The trampolines never write
    // PKRS, so an edit is never refused; if one were, the level's PKRS
    // check after return would report it.)
    let mut edits_applied = true;
    match level.mutation {
        Mutation::None => {}
        Mutation::R12(value) => regs.r12 = value,
        Mutation::SavedPkrs { pkey, rights } => {
            // SAFETY: `regs` is this event's entry frame.
            edits_applied &= unsafe { pks::pks_update_saved(regs, pkey, rights) }
        }
    }
    let (_, resume) = sites(depth, level.kind);
    match level.kind {
        Kind::PksResolved => {
            // SAFETY: `regs` is this event's entry frame; granting the fuzz
            // key makes the retried load succeed.
            edits_applied &= unsafe { pks::pks_update_saved(regs, FUZZ_PKEY, KeyRights::ReadWrite) }
        }
        kind if kind.is_trap() => {}
        // Faults and the wait loops continue after the event.
        _ => regs.ip = resume,
    }
    if !edits_applied {
        violation(
            regs,
            depth,
            "pkrs_edit_refused",
            format_args!("pks_update_saved refused an edit"),
        );
    }
    if level.send_latched_nmi {
        // NMIs are blocked until the outer NMI's IRET... or this handler's:
        // the NMI arrives right after it returns, still inside the outer NMI.
        apic::send_self_nmi();
    }
    if vector == 2 {
        // What a latched repeat will find in the frame (after this
        // handler's edits: ip moved to `resume`).
        OWN_NMI_IP.store(regs.ip, Ordering::SeqCst);
    }
    DEPTH.store(depth, Ordering::SeqCst);
    HANDLED.fetch_or(1 << depth, Ordering::SeqCst);
}

/// Every check on one frame. `repeat`: the second run of an NMI level,
/// which sees the state its first run left (mutations applied).
fn validate(regs: &mut PtRegs, vector: u8, depth: usize, level: &Level, repeat: bool) {
    FRAMES.fetch_add(1, Ordering::Relaxed);
    let user_level = is_user_level(depth);
    if user_level {
        USER_KIND_COUNTS[level.kind as usize].fetch_add(1, Ordering::Relaxed);
    } else {
        KIND_COUNTS[level.kind as usize].fetch_add(1, Ordering::Relaxed);
    }
    let context = match depth {
        0 if user_level => 1,
        0 => 0,
        _ => 2 + label(depth - 1),
    };
    DEPTH_COUNTS[label(depth)][depth].fetch_add(1, Ordering::Relaxed);
    CONTEXT_COUNTS[label(depth)][context].fetch_add(1, Ordering::Relaxed);
    let (site, resume) = sites(depth, level.kind);
    let regs_address = regs as *mut PtRegs as u64;
    digest(ITERATION.load(Ordering::Relaxed));
    digest(depth as u64);
    digest(u64::from(user_level));
    digest(u64::from(vector));
    digest(regs.orig_ax);
    digest(regs.ip.wrapping_sub(site));
    if vector != level.kind.vector() {
        violation(
            regs,
            depth,
            "vector",
            format_args!(
                "vector {vector}, the level raised {} (vector {})",
                level.kind.name(),
                level.kind.vector()
            ),
        );
    }
    // SAFETY: `regs` is an entry-stub frame (the hooks get nothing else).
    let frame = unsafe { ExtendedPtRegs::from_regs(regs) };
    let extension_address = frame as *mut ExtendedPtRegs as u64;
    let (saved_pkrs, generic) = (frame.arch.pks, frame.generic);
    if regs_address.wrapping_sub(extension_address) != GENERIC_PTREGS_SIZE as u64 {
        violation(
            regs,
            depth,
            "extension_offset",
            format_args!("extension at {extension_address:#x}, PtRegs at {regs_address:#x}"),
        );
    }
    let expected =
        if repeat { expected_gprs_after(depth, level) } else { frame_gprs(depth, level) };
    for ((name, want), (_, got)) in expected.gprs().iter().zip(regs.gprs().iter()) {
        if want != got {
            violation(
                regs,
                depth,
                "gprs",
                format_args!("{name} is {got:#018x} in the frame, the level loaded {want:#018x}"),
            );
        }
    }
    let ip_ok = if level.kind.is_async() {
        (site..=resume).contains(&regs.ip)
    } else if level.kind.is_trap() {
        regs.ip == resume
    } else {
        regs.ip == site
    };
    if !ip_ok {
        violation(
            regs,
            depth,
            "ip",
            format_args!("ip {:#x}; event at {site:#x}, resume at {resume:#x}", regs.ip),
        );
    }
    if user_level {
        // From ring 3: Linux's user selectors, the frame exactly at
        // task_pt_regs of the user task, IF set (as always in user mode).
        if regs.cs != u64::from(gdt::USER_CS.0) || regs.ss != u64::from(gdt::USER_DS.0) {
            violation(regs, depth, "cs", format_args!("cs {:#x} ss {:#x}", regs.cs, regs.ss));
        }
        let expected_frame = sched::task::task_pt_regs(sched::current_slot()) as u64;
        if regs_address != expected_frame {
            violation(
                regs,
                depth,
                "user_frame",
                format_args!("PtRegs at {regs_address:#x}, task_pt_regs is {expected_frame:#x}"),
            );
        }
        if !regs.interrupts_enabled() {
            violation(regs, depth, "flags", format_args!("IF clear in a user frame"));
        }
    } else if regs.cs != u64::from(gdt::KERNEL_CS.0) {
        violation(regs, depth, "cs", format_args!("cs {:#x}", regs.cs));
    }
    if regs.orig_ax != level.kind.error_code() {
        violation(
            regs,
            depth,
            "orig_ax",
            format_args!("orig_ax {:#x}, expected {:#x}", regs.orig_ax, level.kind.error_code()),
        );
    }
    if !user_level
        && level.kind.is_maskable_irq() != regs.interrupts_enabled()
        && level.kind != Kind::SelfNmi
    {
        violation(
            regs,
            depth,
            "flags",
            format_args!("IF {} in the interrupted flags", regs.interrupts_enabled()),
        );
    }
    if pks::enabled() {
        let want = if repeat { expected_pkrs_after(level) } else { level.pkrs };
        if saved_pkrs != want {
            violation(
                regs,
                depth,
                "saved_pkrs",
                format_args!(
                    "saved PKRS {saved_pkrs:08x}, the interrupted level ran with {want:08x}"
                ),
            );
        }
        let live = pks::read_pkrs();
        if live != PKRS_DEFAULT {
            violation(
                regs,
                depth,
                "live_pkrs",
                format_args!("live PKRS {live:08x} in the handler, default {PKRS_DEFAULT:08x}"),
            );
        }
    }
    // RCU watches everywhere the fuzzer runs but in user mode (it never
    // idles), so only an NMI from ring 3 must make RCU watch and say so; the
    // other ring-3 events enter through enter_from_user_mode, which needs no
    // exit_rcu.
    let want_exit_rcu = u8::from(user_level && level.kind == Kind::SelfNmi);
    if generic.exit_rcu != want_exit_rcu {
        violation(
            regs,
            depth,
            "exit_rcu",
            format_args!("exit_rcu {}, expected {want_exit_rcu}", generic.exit_rcu),
        );
    }
    if level.kind == Kind::SelfNmi
        && generic.lockdep_hardirqs_enabled != u8::from(level.lockdep_model)
    {
        violation(
            regs,
            depth,
            "lockdep_saved",
            format_args!(
                "NMI saved hardirqs-enabled {}, the model said {}",
                generic.lockdep_hardirqs_enabled, level.lockdep_model
            ),
        );
    }
    if irqflags::lockdep_hardirqs_enabled() {
        violation(
            regs,
            depth,
            "lockdep_in_handler",
            format_args!("hardirqs 'enabled' inside a handler"),
        );
    }
    // Nesting: a kernel-mode NMI's frame is on the copied frame at the NMI
    // stack top; anything else lies below its parent's frame, on the NMI
    // stack if a kernel-mode NMI is an ancestor, on the kernel stack
    // otherwise (a ring-3 level's frame, NMI or not, at task_pt_regs).
    let stack = gdt::ist_stack_of(regs_address);
    if level.kind == Kind::SelfNmi && !user_level {
        if regs_address != nmi::outermost_regs_address() {
            violation(
                regs,
                depth,
                "nmi_frame",
                format_args!(
                    "NMI PtRegs at {regs_address:#x}, expected {:#x}",
                    nmi::outermost_regs_address()
                ),
            );
        }
        if gdt::ist_stack_of(regs.sp) == Some(gdt::NMI_IST_INDEX) {
            violation(
                regs,
                depth,
                "nmi_not_latched",
                format_args!("an NMI interrupted code on the NMI stack"),
            );
        }
    } else {
        let expected_stack = if nmi_ancestor(depth) { Some(gdt::NMI_IST_INDEX) } else { None };
        if stack != expected_stack {
            violation(
                regs,
                depth,
                "stack",
                format_args!(
                    "frame at {regs_address:#x} on stack {:?}, expected {:?}",
                    stack, expected_stack
                ),
            );
        }
        if depth > 0 && self::level(depth - 1).kind == Kind::Preempt {
            // The first event the partner raised: on the partner's own
            // stack, while the preempted parent frame waits on the other.
            let parent = FRAME_ADDRESS[depth - 1].load(Ordering::SeqCst);
            let partner = PARTNER.get().map_or(0, |partner| partner.pid());
            if sched::current_pid() != partner || sched::on_current_stack(parent) {
                violation(
                    regs,
                    depth,
                    "preempt_nesting",
                    format_args!(
                        "frame at {regs_address:#x} in PID {}, the preempted parent's at {parent:#x}",
                        sched::current_pid()
                    ),
                );
            }
        } else if depth > 0 {
            let parent = FRAME_ADDRESS[depth - 1].load(Ordering::SeqCst);
            if regs_address + core::mem::size_of::<PtRegs>() as u64
                > parent - GENERIC_PTREGS_SIZE as u64
            {
                violation(
                    regs,
                    depth,
                    "nesting",
                    format_args!(
                        "frame at {regs_address:#x} not below its parent's at {parent:#x}"
                    ),
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Violations and the run.
// ---------------------------------------------------------------------------

fn print_path(depth: usize) {
    print!("extregs: fuzz: path:");
    for index in 0..=depth.min(program_len().saturating_sub(1)) {
        print!("{} {}", if index == 0 { "" } else { " >" }, level(index).kind.name());
    }
    println!();
}

fn report_and_die(invariant: &str, depth: usize, detail: core::fmt::Arguments<'_>) -> ! {
    println!(
        "extregs: fuzz: seed={} iteration={} event={} level={}",
        SEED.load(Ordering::Relaxed),
        ITERATION.load(Ordering::Relaxed),
        EVENT_NUMBER.load(Ordering::Relaxed),
        depth
    );
    print_path(depth);
    result::emit(
        false,
        format_args!(
            ",\"seed\":{},\"iteration\":{},\"event\":{},\"level\":{depth},\"violations\":1,\"invariant\":\"{invariant}\",\"frames\":{},\"error\":\"{detail}\"",
            SEED.load(Ordering::Relaxed),
            ITERATION.load(Ordering::Relaxed),
            EVENT_NUMBER.load(Ordering::Relaxed),
            FRAMES.load(Ordering::Relaxed),
        ),
    );
    exit::exit_qemu(exit::ExitCode::Failure)
}

/// A frame broke an invariant: show it and die.
fn violation(regs: &PtRegs, depth: usize, invariant: &str, detail: core::fmt::Arguments<'_>) -> ! {
    oops::begin_dying();
    println!("extregs: fuzz: VIOLATION {invariant}: {detail}");
    // SAFETY: the hooks only get entry-stub frames.
    unsafe { show_regs::show_regs(regs) };
    // From here, not from `regs`: the trampolines run with a random RBP,
    // and this handler's callers lead through the frame anyway.
    crate::debug::calltrace::print_call_trace_here();
    report_and_die(invariant, depth, detail)
}

/// What came back after an event broke an invariant: show it as a frame.
fn violation_after(
    depth: usize,
    output: &PtRegs,
    invariant: &str,
    detail: core::fmt::Arguments<'_>,
) -> ! {
    oops::begin_dying();
    println!("extregs: fuzz: VIOLATION {invariant}: {detail}");
    println!("extregs: fuzz: registers of level {depth}'s context after the return:");
    let mut frame = ExtendedPtRegs { regs: *output, ..ExtendedPtRegs::default() };
    // The context went on at the trampoline's resume point.
    frame.regs.ip = sites(depth, level(depth).kind).1;
    if is_user_level(depth) {
        frame.regs.cs = u64::from(gdt::USER_CS.0);
        frame.regs.ss = u64::from(gdt::USER_DS.0);
        frame.arch.pks = if pks::enabled() { PKRS_DEFAULT } else { 0 };
    } else {
        frame.regs.cs = u64::from(gdt::KERNEL_CS.0);
        frame.regs.ss = u64::from(gdt::KERNEL_DS.0);
        if pks::enabled() {
            frame.arch.pks = pks::read_pkrs();
        }
    }
    // SAFETY: `frame.regs` is inside a whole ExtendedPtRegs.
    unsafe { show_regs::show_regs(&frame.regs) };
    // The context came back: its callers are this code's.
    crate::debug::calltrace::print_call_trace_here();
    report_and_die(invariant, depth, detail)
}

/// The task a `preempt` event switches to, and what it does.
static PARTNER: spin::Once<sched::TaskHandle> = spin::Once::new();
/// The level the partner raises next (the one after the preempt event).
static PARTNER_START: AtomicUsize = AtomicUsize::new(0);
/// Programs (possibly empty) the partner ran to the end.
static PARTNER_RUNS: AtomicU64 = AtomicU64::new(0);
static PARTNER_STOP: AtomicBool = AtomicBool::new(false);

/// The partner task: parked until a `preempt` event's handler unparks it;
/// then (switched to by that IRQ's exit) raises the rest of the program,
/// parks again, and the preempted task resumes.
fn partner(_: usize) {
    loop {
        sched::park();
        if PARTNER_STOP.load(Ordering::SeqCst) {
            return;
        }
        // As in the mode's own context: events are raised with IF clear.
        irqflags::local_irq_disable();
        let start = PARTNER_START.load(Ordering::SeqCst);
        if start < program_len() {
            DEPTH.store(start, Ordering::SeqCst);
            raise(start);
            DEPTH.store(start - 1, Ordering::SeqCst);
        }
        PARTNER_RUNS.fetch_add(1, Ordering::SeqCst);
    }
}

/// `mode=fuzz`.
pub fn run(settings: FuzzSettings) -> bool {
    match sched::spawn(format_args!("fuzz-partner"), partner, 0) {
        Ok(handle) => {
            PARTNER.call_once(|| handle);
            // Let it park.
            sched::yield_now();
        }
        Err(why) => panic!("spawning the fuzz partner task: {why:?}"),
    }
    if pks::enabled() {
        memory::map_pkey_page_at(
            FUZZ_PKEY,
            FUZZ_PAGE_FILL,
            x86_64::VirtAddr::new(FUZZ_PAGE_ADDRESS),
        );
        pks::register_fault_handler(FUZZ_PKEY, pks_fault);
    }
    SEED.store(settings.seed, Ordering::Relaxed);
    let max_depth = settings.max_depth as usize;
    let batch = settings.seed_count > 1;
    if batch {
        // The parser made sure seed + seed_count fits.
        print!("extregs: fuzz: seeds={}..{}", settings.seed, settings.seed + settings.seed_count);
    } else {
        print!("extregs: fuzz: seed={}", settings.seed);
    }
    println!(
        " iterations={} max-depth={} (pks={}, {} mode)",
        settings.iterations,
        max_depth,
        pks::enabled(),
        apic::current_mode().name()
    );
    // Before any fault is switched on: the probe's NMIs are the kernel's.
    match without_interrupts(apic::probe_pic_nmi) {
        Ok(()) => USER_NMI_AVAILABLE.store(true, Ordering::Relaxed),
        Err(why) => println!(
            "extregs: fuzz: ring-3 levels raise no NMI here ({why}): a ring-3 NMI level becomes an int3"
        ),
    }
    if let Some(injected) = settings.inject {
        if let Err(why) = fault::activate(injected) {
            println!("extregs: error: inject={}: {why}", fault::name(injected));
            result::emit(false, format_args!(",\"error\":\"{why}\""));
            return false;
        }
        println!(
            "extregs: fuzz: injecting fault {} (the fuzzer must catch it)",
            fault::name(injected)
        );
    }
    let model_errors_before = sched::counts().model_errors;
    if settings.foreign_timer_hz > 0 {
        println!(
            "extregs: fuzz: foreign timer at {} Hz (PIT through the 8259 on LINT0)",
            settings.foreign_timer_hz
        );
        apic::start_foreign_timer(settings.foreign_timer_hz);
    }
    let _ = user::fuzz_page();
    let mut totals = SeedSummary::default();
    // Each seed's window of foreign events and checks starts where the
    // previous one ended, so the FUZZ lines add up to the boot's.
    let mut window = Window::now();
    hooks::with_event_hook(event_hook, || {
        user::syscall::with_syscall_hook(event_hook, || {
            for offset in 0..settings.seed_count {
                let seed = settings.seed + offset;
                let summary = run_seed(seed, settings.iterations, max_depth, &mut window);
                if batch {
                    if summary.frame_errors + summary.model_errors > 0 {
                        // Name this seed: check_frame printed what it found.
                        report_and_die(
                            "frame_check",
                            0,
                            format_args!(
                                "{} frames failed the entry checks, {} switches the models",
                                summary.frame_errors, summary.model_errors
                            ),
                        );
                    }
                    print!("FUZZ {{");
                    summary.print_fields(Some(seed), true);
                    println!("}}");
                }
                totals.add(&summary);
            }
        })
    });
    if settings.foreign_timer_hz > 0 {
        apic::stop_foreign_timer();
    }
    if let Some(partner) = PARTNER.get() {
        PARTNER_STOP.store(true, Ordering::SeqCst);
        without_interrupts(|| {
            sched::unpark_and_resched(*partner);
        });
        sched::wait(*partner);
    }
    let (frames_checked, frame_errors) = result::frame_counts();
    // The preempt events' switches must also have found the RCU and lockdep
    // models right.
    let model_errors = sched::counts().model_errors - model_errors_before;
    if model_errors != 0 {
        println!(
            "extregs: fuzz: {model_errors} context switches found the RCU/lockdep model wrong"
        );
    }
    let ok = frame_errors == 0 && model_errors == 0;
    if batch {
        print!("extregs: fuzz: {} seeds x ", settings.seed_count);
    } else {
        print!("extregs: fuzz: ");
    }
    print!(
        "{} iterations, {} frames validated in {} ms ({} frames/s), max depth {}",
        totals.iterations,
        totals.frames,
        totals.microseconds / 1000,
        totals.frames_per_s(),
        totals.max_depth_reached,
    );
    if batch {
        println!();
    } else {
        println!(", digest {:016x}", totals.digest);
    }
    let entry_points_hit = coverage::hit_count();
    coverage::print_hits();
    println!(
        "extregs: fuzz: {} foreign NMIs and {} foreign IRQs validated; they interrupted {entry_points_hit} distinct instructions of the {}-byte entry text",
        totals.foreign_nmis,
        totals.foreign_irqs,
        coverage::text_bytes()
    );
    print!(
        "RESULT {{\"mode\":\"fuzz\",\"ok\":{ok},\"pks\":{},\"frames_checked\":{frames_checked},\"frame_errors\":{frame_errors}",
        pks::enabled()
    );
    print!(
        ",\"model_errors\":{model_errors},\"entry_points_hit\":{entry_points_hit},\"entry_text_bytes\":{},\"max_depth\":{max_depth},\"user_nmi\":{}",
        coverage::text_bytes(),
        USER_NMI_AVAILABLE.load(Ordering::Relaxed)
    );
    if batch {
        print!(",\"seeds\":\"{}..{}\"", settings.seed, settings.seed + settings.seed_count);
    }
    // A single seed's totals are its own summary (with its digest); a batch's
    // add the seeds up (their digests are on their FUZZ lines).
    print!(",");
    totals.print_fields(if batch { None } else { Some(settings.seed) }, false);
    println!("}}");
    ok
}

/// Counters a seed's window runs from: foreign events the kernel's own
/// handlers took, the foreign timer's IRQs, the entry checks and the
/// models' complaints, and NMIs latched inside NMIs from user mode.
#[derive(Clone, Copy, Debug)]
struct Window {
    kernel_nmis: u64,
    foreign_irqs: u64,
    frame_errors: u64,
    model_errors: u64,
    user_nmis_latched: u64,
}

impl Window {
    fn now() -> Window {
        Window {
            kernel_nmis: nmi::count(),
            foreign_irqs: irq::foreign_timer_irqs(),
            frame_errors: result::frame_counts().1,
            model_errors: sched::counts().model_errors,
            user_nmis_latched: nmi::user_nmis_latched(),
        }
    }
}

/// One seed's run (or, added up, a batch's): what `FUZZ` lines and
/// `RESULT` report.
#[derive(Clone, Copy, Debug, Default)]
struct SeedSummary {
    iterations: u64,
    frames: u64,
    /// Time in the seed's iterations (TSC; boot and set-up excluded).
    microseconds: u64,
    max_depth_reached: u64,
    latched_nmis: u64,
    /// The seed's trace digest (a batch's totals carry the last seed's,
    /// which is not printed).
    digest: u64,
    kinds: [u64; ALL_KINDS],
    user_kinds: [u64; ALL_KINDS],
    depths: [[u64; MAX_LEVELS]; LABELS],
    contexts: [[u64; CONTEXTS]; LABELS],
    foreign_nmis: u64,
    foreign_user_nmis: u64,
    foreign_irqs: u64,
    /// Frames that failed `check_frame`, and context switches that found
    /// the models wrong, in the seed's window.
    frame_errors: u64,
    model_errors: u64,
    /// NMIs latched inside NMIs from user mode (their handler's repeats).
    user_nmis_latched: u64,
}

impl SeedSummary {
    fn frames_per_s(&self) -> u64 {
        self.frames * 1_000_000 / self.microseconds.max(1)
    }

    fn add(&mut self, seed: &SeedSummary) {
        self.iterations += seed.iterations;
        self.frames += seed.frames;
        self.microseconds += seed.microseconds;
        self.max_depth_reached = self.max_depth_reached.max(seed.max_depth_reached);
        self.latched_nmis += seed.latched_nmis;
        self.digest = seed.digest;
        for (total, count) in self.kinds.iter_mut().zip(seed.kinds) {
            *total += count;
        }
        for (total, count) in self.user_kinds.iter_mut().zip(seed.user_kinds) {
            *total += count;
        }
        for (totals, counts) in self.depths.iter_mut().zip(seed.depths) {
            for (total, count) in totals.iter_mut().zip(counts) {
                *total += count;
            }
        }
        for (totals, counts) in self.contexts.iter_mut().zip(seed.contexts) {
            for (total, count) in totals.iter_mut().zip(counts) {
                *total += count;
            }
        }
        self.foreign_nmis += seed.foreign_nmis;
        self.foreign_user_nmis += seed.foreign_user_nmis;
        self.foreign_irqs += seed.foreign_irqs;
        self.frame_errors += seed.frame_errors;
        self.model_errors += seed.model_errors;
        self.user_nmis_latched += seed.user_nmis_latched;
    }

    /// Prints the JSON fields (inside a `FUZZ {…}` object, or the rest of
    /// a RESULT object). `seed`: the one seed these are of, with its digest.
    /// `checks`: the window's entry-check and model counts too (a RESULT
    /// has the boot's own).
    fn print_fields(&self, seed: Option<u64>, checks: bool) {
        if let Some(seed) = seed {
            print!("\"seed\":{seed},");
        }
        print!(
            "\"iterations\":{},\"frames\":{},\"microseconds\":{},\"frames_per_s\":{},\"max_depth_reached\":{},\"violations\":0,\"latched_nmis\":{},\"foreign_nmis\":{},\"foreign_user_nmis\":{},\"foreign_irqs\":{},",
            self.iterations,
            self.frames,
            self.microseconds,
            self.frames_per_s(),
            self.max_depth_reached,
            self.latched_nmis,
            self.foreign_nmis,
            self.foreign_user_nmis,
            self.foreign_irqs,
        );
        if checks {
            print!(
                "\"frame_errors\":{},\"model_errors\":{},",
                self.frame_errors, self.model_errors
            );
        }
        print!("\"user_nmis_latched\":{},", self.user_nmis_latched);
        if seed.is_some() {
            print!("\"digest\":\"{:016x}\",", self.digest);
        }
        print!("\"kinds\":{{");
        for (index, kind) in KINDS.iter().enumerate() {
            print!(
                "{}\"{}\":{}",
                if index == 0 { "" } else { "," },
                kind.name(),
                self.kinds[*kind as usize]
            );
        }
        for kind in USER_KINDS {
            print!(",\"user_{}\":{}", kind.name(), self.user_kinds[kind as usize]);
        }
        // Frames by depth, and by what they interrupted: the rows with any.
        print!("}},\"kind_depth\":{{");
        let mut first = true;
        for (index, counts) in self.depths.iter().enumerate() {
            if counts.iter().all(|&count| count == 0) {
                continue;
            }
            print!("{}", if first { "" } else { "," });
            first = false;
            print_label(index);
            print!(":[");
            for (depth, count) in counts.iter().enumerate() {
                print!("{}{count}", if depth == 0 { "" } else { "," });
            }
            print!("]");
        }
        print!("}},\"contexts\":{{");
        first = true;
        for (index, counts) in self.contexts.iter().enumerate() {
            if counts.iter().all(|&count| count == 0) {
                continue;
            }
            print!("{}", if first { "" } else { "," });
            first = false;
            print_label(index);
            print!(":{{");
            let mut first_context = true;
            for (context, &count) in counts.iter().enumerate().filter(|(_, &count)| count > 0) {
                print!("{}", if first_context { "" } else { "," });
                first_context = false;
                match context {
                    0 => print!("\"task\""),
                    1 => print!("\"user\""),
                    parent => print_label(parent - 2),
                }
                print!(":{count}");
            }
            print!("}}");
        }
        print!("}}");
    }
}

/// Runs one seed's `iterations` programs from a fresh state: every
/// per-seed counter and the digest start over, and the PRNG is seeded
/// with `seed` alone, so the seed's digest does not depend on the seeds a
/// batch ran before it (each iteration ends with every frame unwound, the
/// PKRS and the lockdep model put back; `raise` checks both).
fn run_seed(seed: u64, iterations: u64, max_depth: usize, window: &mut Window) -> SeedSummary {
    SEED.store(seed, Ordering::Relaxed);
    FRAMES.store(0, Ordering::Relaxed);
    for counter in KIND_COUNTS.iter().chain(USER_KIND_COUNTS.iter()) {
        counter.store(0, Ordering::Relaxed);
    }
    for counter in DEPTH_COUNTS.iter().flatten().chain(CONTEXT_COUNTS.iter().flatten()) {
        counter.store(0, Ordering::Relaxed);
    }
    FOREIGN_NMIS.store(0, Ordering::Relaxed);
    FOREIGN_USER_NMIS.store(0, Ordering::Relaxed);
    LATCHED_NMIS.store(0, Ordering::Relaxed);
    MAX_DEPTH_REACHED.store(0, Ordering::Relaxed);
    DIGEST.store(FNV_OFFSET, Ordering::Relaxed);
    EVENT_NUMBER.store(0, Ordering::Relaxed);
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    // SAFETY: RDTSC has no side effects.
    let start = unsafe { core::arch::x86_64::_rdtsc() };
    for iteration in 0..iterations {
        ITERATION.store(iteration, Ordering::Relaxed);
        // Foreign NMIs may come at any time: while the program is rewritten
        // the hook stands aside (they go to the kernel's NMI handler), so
        // nothing reads it meanwhile.
        ACTIVE.store(false, Ordering::SeqCst);
        // A store is only a release: keep the rewrite below it.
        core::sync::atomic::compiler_fence(Ordering::SeqCst);
        // SAFETY: with ACTIVE clear no handler reads the program, and no fuzz
        // event is outstanding between iterations.
        generate(&mut rng, max_depth, unsafe { &mut *PROGRAM.0.get() });
        HANDLED.store(0, Ordering::SeqCst);
        REPEATED.store(0, Ordering::SeqCst);
        OWN_NMI_IP.store(0, Ordering::SeqCst);
        DEPTH.store(0, Ordering::SeqCst);
        ACTIVE.store(true, Ordering::SeqCst);
        raise(0);
    }
    ACTIVE.store(false, Ordering::SeqCst);
    // SAFETY: as above.
    let cycles = unsafe { core::arch::x86_64::_rdtsc() } - start;
    // The program's own NMIs never reach the kernel's NMI handler (the hook
    // claims them), so every NMI it took was foreign: the ones between this
    // seed's iterations and those since the previous seed ended.
    let (before, after) = (*window, Window::now());
    *window = after;
    SeedSummary {
        iterations,
        frames: FRAMES.load(Ordering::Relaxed),
        microseconds: (cycles * 1000 / apic::tsc_ticks_per_ms()).max(1),
        max_depth_reached: MAX_DEPTH_REACHED.load(Ordering::Relaxed) as u64,
        latched_nmis: LATCHED_NMIS.load(Ordering::Relaxed),
        digest: DIGEST.load(Ordering::Relaxed),
        kinds: core::array::from_fn(|kind| KIND_COUNTS[kind].load(Ordering::Relaxed)),
        user_kinds: core::array::from_fn(|kind| USER_KIND_COUNTS[kind].load(Ordering::Relaxed)),
        depths: core::array::from_fn(|label| {
            core::array::from_fn(|depth| DEPTH_COUNTS[label][depth].load(Ordering::Relaxed))
        }),
        contexts: core::array::from_fn(|label| {
            core::array::from_fn(|context| CONTEXT_COUNTS[label][context].load(Ordering::Relaxed))
        }),
        foreign_nmis: FOREIGN_NMIS.load(Ordering::Relaxed)
            + (after.kernel_nmis - before.kernel_nmis),
        foreign_user_nmis: FOREIGN_USER_NMIS.load(Ordering::Relaxed),
        foreign_irqs: after.foreign_irqs - before.foreign_irqs,
        frame_errors: after.frame_errors - before.frame_errors,
        model_errors: after.model_errors - before.model_errors,
        user_nmis_latched: after.user_nmis_latched - before.user_nmis_latched,
    }
}
