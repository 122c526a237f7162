//! The extended `pt_regs` frame.
//!
//! Every entry into the kernel builds the same frame on the stack (docs/design.md, "The frame"):
//!
//! ```text
//!   higher addresses
//!   +--------------------+  <- RSP before the event (the CPU aligns it to 16)
//!   | ss sp flags cs ip  |   pushed by the CPU
//!   | orig_ax            |   error code, or -1 when the vector has none
//!   | di si dx cx ax     |
//!   | r8 r9 r10 r11      |   saved by PUSH_AND_CLEAR_REGS, Linux order
//!   | bx bp r12..r15     |
//!   +--------------------+  <- &PtRegs (168 bytes)
//!   | arch:    pks       |   ArchExtRegs
//!   | generic: exit_rcu, |   GenericExtRegs
//!   |   lockdep          |   (`sub $GENERIC_PTREGS_SIZE, %rsp`)
//!   +--------------------+  <- &ExtendedPtRegs == container_of(&PtRegs)
//! ```
//!
//! Handlers receive `&mut PtRegs` only. Code that needs the per-interrupt state
//! recovers the whole frame with [`ExtendedPtRegs::from_regs`], the Rust
//! spelling of Linux's `container_of(regs, struct extended_pt_regs, regs)`.
//!
//! This crate is `no_std` and built both for the kernel and for the host (unit
//! tests and the asm-offsets generator), so the layout checked here is the
//! layout the assembly uses.

#![no_std]

use core::mem::size_of;
use memoffset::offset_of;
use static_assertions::const_assert_eq;

/// The register frame of an interrupted context, in Linux's x86_64 order
/// (`arch/x86/include/asm/ptrace.h`): callee-saved GPRs at the lowest
/// addresses, then the caller-clobbered ones, then `orig_ax` and the five words
/// the CPU pushes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PtRegs {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub bp: u64,
    pub bx: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub ax: u64,
    pub cx: u64,
    pub dx: u64,
    pub si: u64,
    pub di: u64,
    /// The CPU's error code, or `u64::MAX` (-1) when the vector has none.
    pub orig_ax: u64,
    pub ip: u64,
    pub cs: u64,
    pub flags: u64,
    pub sp: u64,
    pub ss: u64,
}

/// RFLAGS.IF: maskable interrupts enabled.
pub const X86_EFLAGS_IF: u64 = 1 << 9;
/// RFLAGS.TF: single-step.
pub const X86_EFLAGS_TF: u64 = 1 << 8;
/// RFLAGS.RF: resume flag (suppresses instruction breakpoints once).
pub const X86_EFLAGS_RF: u64 = 1 << 16;
/// RFLAGS bit 1, which always reads as one.
pub const X86_EFLAGS_FIXED: u64 = 1 << 1;

/// Value the entry stubs store in [`PtRegs::orig_ax`] for vectors without an
/// error code (Linux pushes `$-1` the same way).
pub const NO_ERROR_CODE: u64 = u64::MAX;

/// The low bit the entry stubs set in RBP to mark it as `&PtRegs` before
/// they call into Rust (Linux's `ENCODE_FRAME_POINTER`): a frame-pointer
/// walk that meets it has found an interrupt frame.
pub const ENCODED_FRAME_TAG: u64 = 1;

/// Architecture-independent per-interrupt state, the part of Linux's
/// `irqentry_state_t` that Lutomirski proposed to move below `pt_regs`.
///
/// The fields are plain bytes rather than `bool` on purpose: the entry
/// assembly only reserves this space (`sub`) and writes `vector`, so until
/// `irqentry_enter` writes the rest the bytes are whatever was on the
/// stack, and every bit pattern must be a valid value.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GenericExtRegs {
    /// Non-zero when `irqentry_enter` had to make RCU watch (the CPU was
    /// idle), so `irqentry_exit` must undo it.
    pub exit_rcu: u8,
    /// Non-zero when hardirqs were enabled (lockdep view) at NMI entry;
    /// `irqentry_nmi_exit` restores that state.
    pub lockdep_hardirqs_enabled: u8,
    /// How this frame was entered, written by the entry stub right after
    /// it reserves the extension (before it tags RBP, so an unwinder that
    /// finds the frame finds its own vector, never a stale one) and kept by
    /// the generic entry: [`ENTRY_VECTOR_RECORDED`] | the IDT vector, or
    /// [`ENTRY_SYSCALL`]; [`ENTRY_HARDIRQ_DONE`] is added when a hard
    /// interrupt's handler has finished (what follows, a preemption on the
    /// way out, is no longer IRQ context). An unwinder reads it to tell a
    /// hard interrupt's frame (`<IRQ>`) from an exception's on the same
    /// stack. It fills what was padding, so the extension stays 8 bytes.
    pub vector: u16,
}

/// Set in [`GenericExtRegs::vector`] above an IDT vector (bits 0..=7), so a
/// recorded vector 0 (#DE) differs from "not recorded yet" (0).
pub const ENTRY_VECTOR_RECORDED: u16 = 0x100;

/// [`GenericExtRegs::vector`] of a frame `entry_SYSCALL_64` built.
pub const ENTRY_SYSCALL: u16 = 0x200;

// The stubs *add* ENTRY_VECTOR_RECORDED to the vector (`leal`), Rust ORs it:
// the same only while its low byte is clear. The three markers must be
// distinct bits, clear of the vector's byte.
const_assert_eq!(ENTRY_VECTOR_RECORDED & 0xff, 0);
const_assert_eq!(ENTRY_SYSCALL & 0xff, 0);
const_assert_eq!(ENTRY_HARDIRQ_DONE & 0xff, 0);
const_assert_eq!(ENTRY_VECTOR_RECORDED & ENTRY_SYSCALL, 0);
const_assert_eq!((ENTRY_VECTOR_RECORDED | ENTRY_SYSCALL) & ENTRY_HARDIRQ_DONE, 0);

/// Added to [`GenericExtRegs::vector`] once a hard interrupt's handler has
/// returned (Linux's `irq_exit_rcu()`: it would be back on the task stack).
pub const ENTRY_HARDIRQ_DONE: u16 = 0x8000;

/// The first vector of a hard (external) interrupt; below it the CPU's
/// exceptions.
pub const FIRST_EXTERNAL_VECTOR: u8 = 32;

/// The NMI's vector.
pub const NMI_VECTOR: u8 = 2;

/// Number of IDT vectors.
pub const NR_VECTORS: usize = 256;

/// What [`GenericExtRegs::vector`] says about the frame's entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryVector {
    /// A value no entry stub writes: a frame built by other code (a
    /// user task's first frame, the bench's stubs), or a corrupt one.
    Unknown,
    /// Entered through the IDT vector.
    Idt(u8),
    /// Entered through SYSCALL.
    Syscall,
}

impl GenericExtRegs {
    /// Records that the frame was entered through IDT vector `vector` (what
    /// the entry stubs write; for tests and synthetic frames).
    pub fn record_vector(&mut self, vector: u8) {
        self.vector = ENTRY_VECTOR_RECORDED | u16::from(vector);
    }

    /// How the frame was entered, as far as [`GenericExtRegs::vector`] says.
    pub fn entry_vector(&self) -> EntryVector {
        match self.vector & !ENTRY_HARDIRQ_DONE {
            ENTRY_SYSCALL => EntryVector::Syscall,
            v if v & 0xff00 == ENTRY_VECTOR_RECORDED => EntryVector::Idt(v as u8),
            _ => EntryVector::Unknown,
        }
    }

    /// Whether the frame is a hard interrupt's
    /// ([`EntryVector::is_hard_interrupt`]), done or not.
    pub fn is_hard_interrupt(&self) -> bool {
        self.entry_vector().is_hard_interrupt()
    }

    /// Marks a hard interrupt's handler as finished ([`ENTRY_HARDIRQ_DONE`]).
    pub fn mark_hardirq_done(&mut self) {
        self.vector |= ENTRY_HARDIRQ_DONE;
    }

    /// A hard interrupt's frame whose handler has not finished: what
    /// interrupted it, and its callers above the frame, run in IRQ context.
    pub fn in_hardirq(&self) -> bool {
        self.is_hard_interrupt() && self.vector & ENTRY_HARDIRQ_DONE == 0
    }
}

impl EntryVector {
    /// A recorded IDT vector at or above [`FIRST_EXTERNAL_VECTOR`].
    pub fn is_hard_interrupt(self) -> bool {
        matches!(self, EntryVector::Idt(vector) if vector >= FIRST_EXTERNAL_VECTOR)
    }
}

/// Architecture-specific per-interrupt state: on x86 the PKS register of the
/// interrupted context (Weiny's `pt_regs_auxiliary`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ArchExtRegs {
    /// Saved PKRS (MSR 0x6E1; a 32-bit value, the upper half of the MSR is 0).
    pub pks: u32,
}

/// The whole frame: the extension directly below [`PtRegs`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExtendedPtRegs {
    pub generic: GenericExtRegs,
    pub arch: ArchExtRegs,
    pub regs: PtRegs,
}

/// Size of [`PtRegs`]: 21 eight-byte words.
pub const PTREGS_SIZE: usize = size_of::<PtRegs>();

/// Bytes the entry assembly reserves below [`PtRegs`] for the extension.
pub const GENERIC_PTREGS_SIZE: usize = size_of::<ExtendedPtRegs>() - size_of::<PtRegs>();

// PtRegs must be exactly Linux's 168 bytes: the entry stubs build it from the
// five CPU words, orig_ax and 15 GPRs, and `PTREGS_SIZE` is what they skip.
const_assert_eq!(PTREGS_SIZE, 168);
// The extension is 8 bytes: generic and arch state cost no more per frame
// than Weiny's PKS-only `pt_regs_auxiliary`.
const_assert_eq!(GENERIC_PTREGS_SIZE, 8);
// The CPU pushes its frame on a 16-byte aligned RSP in 64-bit mode. The stub
// then adds orig_ax, the GPRs and the extension, and calls into Rust, whose
// ABI needs RSP % 16 == 0 at the `call`. So the frame must keep the alignment.
const_assert_eq!((PTREGS_SIZE + GENERIC_PTREGS_SIZE) % 16, 0);
// `regs` must be the last field so the extension lies *below* it and the
// frame ends where the CPU's words end.
const_assert_eq!(offset_of!(ExtendedPtRegs, regs), GENERIC_PTREGS_SIZE);
const_assert_eq!(offset_of!(ExtendedPtRegs, generic), 0);
const_assert_eq!(offset_of!(ExtendedPtRegs, arch), size_of::<GenericExtRegs>());

// Every field at Linux's offset: the asm-offsets generator and the stubs rely
// on this order, and show_regs dumps and outside tools read frames by it.
macro_rules! assert_ptregs_order {
    ($($field:ident),+ $(,)?) => {
        assert_ptregs_order!(@at 0usize; $($field),+);
    };
    (@at $index:expr; $field:ident $(, $rest:ident)*) => {
        const_assert_eq!(offset_of!(PtRegs, $field), $index * 8);
        assert_ptregs_order!(@at $index + 1usize; $($rest),*);
    };
    (@at $index:expr;) => {};
}
assert_ptregs_order!(
    r15, r14, r13, r12, bp, bx, r11, r10, r9, r8, ax, cx, dx, si, di, orig_ax, ip, cs, flags, sp,
    ss,
);

/// The five words the CPU pushes for every event in 64-bit mode, lowest
/// address first. They are also the last five fields of [`PtRegs`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IretFrame {
    pub ip: u64,
    pub cs: u64,
    pub flags: u64,
    pub sp: u64,
    pub ss: u64,
}

// The hardware words at the end of PtRegs are an IretFrame: the NMI stub
// builds PtRegs on top of a copied IretFrame, so the two must agree.
const_assert_eq!(offset_of!(PtRegs, ip) + size_of::<IretFrame>(), PTREGS_SIZE);
const_assert_eq!(offset_of!(PtRegs, cs) - offset_of!(PtRegs, ip), offset_of!(IretFrame, cs));
const_assert_eq!(offset_of!(PtRegs, ss) - offset_of!(PtRegs, ip), offset_of!(IretFrame, ss));

/// The 16 bytes at the very top of every IST stack of every CPU, above the
/// TSS's IST pointer, so the CPU's pushes never reach them. A paranoid entry
/// finds them from RSP alone (every IST stack is one [`IST_BLOCK_SIZE`]
/// block, aligned to its size, so `RSP & -IST_BLOCK_SIZE` is the block's
/// start wherever on the stack the entry runs): that is how it learns this
/// CPU's GS area without trusting GS (this kernel runs in the lower half,
/// so Linux's sign test of MSR_GS_BASE can't tell a user GS from a kernel
/// one).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IstTop {
    /// The address of this CPU's [`PerCpuEntry`] (its kernel GS base).
    pub per_cpu: u64,
    /// The NMI entry's nesting state ([`nmi_state`]) in its low byte, on
    /// the NMI stack only (Linux keeps its "NMI executing" variable on the
    /// NMI stack too); unused on the others.
    pub nmi_state: u64,
}

/// The size and alignment of one IST stack's block: its guard page, the
/// stack, and the [`IstTop`] at the stack's top.
pub const IST_BLOCK_SIZE: usize = 64 * 1024;

/// The unmapped guard page at the bottom of every IST block.
pub const IST_GUARD_SIZE: usize = 4096;

/// The top of the NMI IST stack, which the NMI entry divides into four parts
/// so that a second NMI can never overwrite the first one's frame (see the
/// nested-NMI comment in `entry_64.S`):
///
/// ```text
///   +--------------------+  <- the stack's top (end of its IST block)
///   | ist_top            |   this CPU's GS area and the NMI nesting state
///   +--------------------+  <- TSS IST pointer for NMI (16-byte aligned)
///   | landing            |   where the CPU pushes *every* NMI's frame
///   | scratch            |   %rax while the stub decides what this NMI is
///   | iret_copy          |   the outermost NMI's frame, copied out of the
///   +--------------------+   landing zone; its PtRegs is built below it
/// ```
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NmiStackTop {
    pub iret_copy: IretFrame,
    pub scratch: u64,
    pub landing: IretFrame,
    pub ist_top: IstTop,
}

/// What `context_switch` leaves on the stack of a task it switches away
/// from (Linux's `struct inactive_task_frame`), lowest address first: the
/// callee-saved registers, then the address the switch returns to. The C
/// ABI lets the switch forget every other register: its caller saved what
/// it needs. A new task's stack starts with one of these, built by the
/// scheduler, whose `ret_addr` is the task's first instruction.
///
/// ```text
///   +--------------------+  <- higher addresses: the task's own frames
///   | ret_addr           |   pushed by the `call` into context_switch
///   | bp bx r12 r13 r14  |
///   | r15                |
///   +--------------------+  <- ThreadContext::sp while the task is switched out
/// ```
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InactiveTaskFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub bx: u64,
    pub bp: u64,
    pub ret_addr: u64,
}

// The switch reserves everything below `ret_addr` with one `sub`, so the
// return address must be the last word.
const_assert_eq!(
    offset_of!(InactiveTaskFrame, ret_addr) + size_of::<u64>(),
    size_of::<InactiveTaskFrame>()
);

/// The part of a task that `context_switch` reads and writes (the
/// `thread.sp` of Linux's `struct thread_struct`): the stack pointer of a
/// switched-out task, which points at its [`InactiveTaskFrame`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ThreadContext {
    pub sp: u64,
}

/// NMI entry state, kept in each CPU's [`NmiStackTop::ist_top`]: above the
/// landing zone, so a nested NMI reads and writes it without touching the
/// frames the outer NMI is using, and per CPU, so an NMI on one CPU never
/// sees another CPU's NMI as its own outer one.
pub mod linux_signal;

pub mod nmi_state {
    /// No NMI is being handled.
    pub const IDLE: u8 = 0;
    /// The outermost NMI is being handled.
    pub const RUNNING: u8 = 1;
    /// A second NMI arrived meanwhile: the outermost runs the handler again.
    pub const PENDING: u8 = 2;
}

// The landing zone must end exactly at the IST pointer, right below the
// IstTop, so the CPU's five pushes fill it, and the copied frame must leave
// PtRegs plus extension 16-byte aligned for the call into Rust: the copy
// keeps the alignment the hardware frame had (IST pointer - 40) when the
// landing zone starts 16-byte aligned relative to the copy.
const_assert_eq!(
    offset_of!(NmiStackTop, landing) + size_of::<IretFrame>(),
    offset_of!(NmiStackTop, ist_top)
);
const_assert_eq!(offset_of!(NmiStackTop, ist_top) + size_of::<IstTop>(), size_of::<NmiStackTop>());
const_assert_eq!(offset_of!(NmiStackTop, landing) % 16, 0);
const_assert_eq!(size_of::<IstTop>() % 16, 0);
const_assert_eq!(IST_BLOCK_SIZE & (IST_BLOCK_SIZE - 1), 0);

/// The "extension at the wrong offset" fault of a fault-injection build
/// (`EXTREGS_FAULT_INJECTION=1`): extra bytes the accessor steps back, 0
/// until the kernel's `inject=extension-offset` sets it. Normal builds have
/// no such variable and always step back exactly `GENERIC_PTREGS_SIZE`.
#[cfg(fault_injection)]
pub static FAULT_EXTENSION_SKEW: core::sync::atomic::AtomicUsize =
    core::sync::atomic::AtomicUsize::new(0);

#[cfg(fault_injection)]
fn fault_skew() -> usize {
    FAULT_EXTENSION_SKEW.load(core::sync::atomic::Ordering::Relaxed)
}

#[cfg(not(fault_injection))]
const fn fault_skew() -> usize {
    0
}

impl ExtendedPtRegs {
    /// Recovers the whole frame from the `PtRegs` inside it (`container_of`).
    ///
    /// # Safety
    ///
    /// `regs` must be the `regs` field of an [`ExtendedPtRegs`]: a frame built
    /// by the extregs entry stubs (which reserve `GENERIC_PTREGS_SIZE` bytes
    /// below `PtRegs` before they call Rust), or one the caller laid out as a
    /// whole `ExtendedPtRegs`. A bare `PtRegs` (a copy, a local, one inside
    /// some other struct) has no extension below it, and the result would
    /// alias unrelated memory. The returned reference borrows `regs` mutably,
    /// so no other reference to the frame may be live while it is used.
    ///
    /// **Provenance and the aliasing model.** The result reaches 8 bytes
    /// *outside* the referent of `regs`. Whether that is allowed depends on
    /// the pointer's provenance, not on the address arithmetic:
    ///
    /// * In the kernel, `regs` comes from the entry stub as a raw address
    ///   (`lea EXTREGS_REGS(%rsp), %rdi`) into a stack frame no Rust
    ///   reference covers; the `&mut PtRegs` the Rust entry receives has
    ///   whatever provenance the whole stack has, and nothing else aliases
    ///   the frame while the handler runs (one CPU; a nested event builds its
    ///   own frame below).
    /// * Under Miri's Tree Borrows (`-Zmiri-tree-borrows`) this step is
    ///   accepted: a `&mut` reborrow gets permission for its referent but
    ///   its parent tag's access to the surrounding `ExtendedPtRegs` is kept,
    ///   so the container_of pointer, derived from the same allocation, may
    ///   use it. `make test` runs the regs and entry tests that way.
    /// * Under Stacked Borrows (Miri's default) it is UB: the tag of
    ///   `&mut frame.regs` only covers bytes 8..176 of the frame. Miri says:
    ///   "trying to retag from `<tag>` for Unique permission at `alloc[0x0]`,
    ///   but that tag does not exist in the borrow stack for this location
    ///   ... `<tag>` was created by a SharedReadWrite retag at offsets
    ///   `[0x8..0xb0]`". A sound-under-both form would have to hand the
    ///   generic entry a pointer to the whole frame, which the design card
    ///   rules out (it takes only `&mut PtRegs`).
    pub unsafe fn from_regs(regs: &mut PtRegs) -> &mut ExtendedPtRegs {
        let regs_address = regs as *mut PtRegs as *mut u8;
        // The caller guarantees `regs` sits at offset
        // `offset_of!(ExtendedPtRegs, regs)` inside a live ExtendedPtRegs, so
        // stepping back by that offset stays inside the same allocation and
        // yields a properly aligned pointer to its start.
        let frame = regs_address.wrapping_sub(offset_of!(ExtendedPtRegs, regs) + fault_skew());
        // SAFETY: `frame` is the start of that ExtendedPtRegs (see above); the
        // mutable borrow of `regs` is carried over to the result.
        unsafe { &mut *(frame as *mut ExtendedPtRegs) }
    }

    /// Immutable version of [`ExtendedPtRegs::from_regs`].
    ///
    /// # Safety
    ///
    /// Same as [`ExtendedPtRegs::from_regs`].
    pub unsafe fn from_regs_ref(regs: &PtRegs) -> &ExtendedPtRegs {
        let regs_address = regs as *const PtRegs as *const u8;
        let frame = regs_address.wrapping_sub(offset_of!(ExtendedPtRegs, regs) + fault_skew());
        // SAFETY: as in `from_regs`; the shared borrow is carried over.
        unsafe { &*(frame as *const ExtendedPtRegs) }
    }
}

impl PtRegs {
    /// All zero (a `const` `Default`).
    pub const ZERO: PtRegs = PtRegs {
        r15: 0,
        r14: 0,
        r13: 0,
        r12: 0,
        bp: 0,
        bx: 0,
        r11: 0,
        r10: 0,
        r9: 0,
        r8: 0,
        ax: 0,
        cx: 0,
        dx: 0,
        si: 0,
        di: 0,
        orig_ax: 0,
        ip: 0,
        cs: 0,
        flags: 0,
        sp: 0,
        ss: 0,
    };

    /// The 15 general-purpose registers with their Linux names, in frame
    /// order. Used by show_regs, selftests and the fuzzer to compare frames.
    pub fn gprs(&self) -> [(&'static str, u64); 15] {
        [
            ("r15", self.r15),
            ("r14", self.r14),
            ("r13", self.r13),
            ("r12", self.r12),
            ("bp", self.bp),
            ("bx", self.bx),
            ("r11", self.r11),
            ("r10", self.r10),
            ("r9", self.r9),
            ("r8", self.r8),
            ("ax", self.ax),
            ("cx", self.cx),
            ("dx", self.dx),
            ("si", self.si),
            ("di", self.di),
        ]
    }

    /// True when the interrupted context ran with IF set (IRET sets it again).
    pub fn interrupts_enabled(&self) -> bool {
        self.flags & X86_EFLAGS_IF != 0
    }

    /// True when the vector delivered an error code in `orig_ax`.
    pub fn has_error_code(&self) -> bool {
        self.orig_ax != NO_ERROR_CODE
    }

    /// True when the interrupted context ran in ring 3 (Linux's
    /// `user_mode(regs)`: the RPL bits of the saved CS).
    pub fn user_mode(&self) -> bool {
        self.cs & 3 == 3
    }
}

/// Linux's segment selectors (`arch/x86/include/asm/segment.h`), so dumps
/// and the SYSCALL/SYSRET MSR layout read the same as Linux's.
pub mod selectors {
    /// `__KERNEL32_CS`: GDT entry 1.
    pub const KERNEL32_CS: u16 = 0x08;
    /// `__KERNEL_CS`: GDT entry 2.
    pub const KERNEL_CS: u16 = 0x10;
    /// `__KERNEL_DS`: GDT entry 3 (also SYSCALL's SS: `STAR[47:32] + 8`).
    pub const KERNEL_DS: u16 = 0x18;
    /// `__USER32_CS`: GDT entry 4, RPL 3. SYSRET's base (`STAR[63:48]`):
    /// 64-bit SYSRET loads CS = base + 16 and SS = base + 8.
    pub const USER32_CS: u16 = 0x23;
    /// `__USER_DS`: GDT entry 5, RPL 3.
    pub const USER_DS: u16 = 0x2b;
    /// `__USER_CS`: GDT entry 6, RPL 3.
    pub const USER_CS: u16 = 0x33;
    /// The TSS: GDT entries 8 and 9 (Linux's `GDT_ENTRY_TSS`).
    pub const TSS: u16 = 0x40;
}

/// `MSR_GS_BASE`: the live GS base, which the paranoid entries read to learn
/// whether the interrupted code already ran with the kernel's GS.
pub const MSR_GS_BASE: u32 = 0xc000_0101;

/// The most CPUs the kernel runs (the boot CPU included): the length of
/// every per-CPU array, the entry assembly's GS areas among them.
pub const NR_CPUS: usize = 8;

/// The per-CPU data the entry assembly reaches through `%gs` (parts of
/// Linux's `pcpu_hot` and `cpu_tss_rw`), one per CPU, each on its own cache
/// line. While a CPU runs kernel code its GS base points at its own; in
/// user mode it holds the user's GS base and `MSR_KERNEL_GS_BASE` holds
/// this address until SWAPGS exchanges them.
#[repr(C, align(64))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PerCpuEntry {
    /// The top of the running task's kernel stack (Linux's
    /// `cpu_current_top_of_stack`), equal to TSS.RSP0: where a frame from
    /// user mode is built, `task_pt_regs` lying right below it.
    pub top_of_stack: u64,
    /// The user RSP while the SYSCALL entry moves to the kernel stack
    /// (Linux's `rsp_scratch`).
    pub user_rsp_scratch: u64,
    /// `%rdx` while an IST entry from user mode copies its frame from the
    /// IST stack to the task stack.
    pub ist_scratch: u64,
    /// This structure's own address, so Rust can check the GS base.
    pub self_address: u64,
    /// The CPU's number (0 for the boot CPU; Linux's `cpu_number`), which
    /// indexes every per-CPU array.
    pub cpu: u64,
    /// The CPU's local APIC ID (a different number: it may have gaps).
    pub apic_id: u64,
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_signal_frame_has_linuxs_offsets() {
        use crate::linux_signal::*;
        // Linux 6.1: struct rt_sigframe { char *pretcode; struct ucontext uc; struct siginfo
        // info; }, sigcontext_64 with ip at 16 * 8, the selectors after flags.
        let expected = [
            ("uc", 8),
            ("info", 312),
            ("uc_mcontext", 40),
            ("uc_sigmask", 296),
            ("uc_stack", 16),
            ("sc.ip", 128),
            ("sc.flags", 136),
            ("sc.cs", 144),
            ("sc.ss", 150),
            ("sc.err", 152),
            ("sc.cr2", 176),
            ("sc.fpstate", 184),
        ];
        assert_eq!(frame_offsets(), expected);
        assert_eq!(FRAME_UC_OFFSET, 8);
        assert_eq!(FRAME_INFO_OFFSET, 312);
        let frame = RtSigFrame { pretcode: 0x1122, ..Default::default() };
        assert_eq!(RtSigFrame::from_bytes(frame.to_bytes()), frame);
        assert_eq!(frame.to_bytes()[..2], [0x22, 0x11]);
    }

    use super::*;
    use proptest::prelude::*;

    fn frame_with(regs: PtRegs, generic: GenericExtRegs, pks: u32) -> ExtendedPtRegs {
        ExtendedPtRegs { generic, arch: ArchExtRegs { pks }, regs }
    }

    #[test]
    fn container_of_is_generic_ptregs_size_below_regs() {
        let mut frame = ExtendedPtRegs::default();
        let frame_address = &frame as *const ExtendedPtRegs as usize;
        let regs_address = &frame.regs as *const PtRegs as usize;
        assert_eq!(regs_address - frame_address, GENERIC_PTREGS_SIZE);
        // SAFETY: `frame.regs` is the regs field of a whole ExtendedPtRegs.
        let recovered = unsafe { ExtendedPtRegs::from_regs(&mut frame.regs) };
        assert_eq!(recovered as *mut ExtendedPtRegs as usize, frame_address);
    }

    #[test]
    fn layout_matches_linux() {
        assert_eq!(size_of::<PtRegs>(), 168);
        assert_eq!(offset_of!(PtRegs, orig_ax), 15 * 8);
        assert_eq!(offset_of!(PtRegs, ss), 20 * 8);
        assert_eq!(GENERIC_PTREGS_SIZE, 8);
    }

    #[test]
    fn entry_vector_tells_not_recorded_from_vector_0() {
        let mut generic = GenericExtRegs::default();
        assert_eq!(generic.entry_vector(), EntryVector::Unknown);
        generic.record_vector(0);
        assert_eq!(generic.entry_vector(), EntryVector::Idt(0));
        assert!(!generic.is_hard_interrupt());
        generic.record_vector(FIRST_EXTERNAL_VECTOR - 1);
        assert!(!generic.is_hard_interrupt());
        generic.record_vector(0xec);
        assert_eq!(generic.entry_vector(), EntryVector::Idt(0xec));
        assert!(generic.is_hard_interrupt());
        generic.vector = ENTRY_SYSCALL;
        assert_eq!(generic.entry_vector(), EntryVector::Syscall);
        assert!(!generic.is_hard_interrupt());
        // A hard interrupt stays one when its handler is done, but its
        // frame no longer puts what follows in IRQ context.
        generic.record_vector(0xec);
        assert!(generic.in_hardirq());
        generic.mark_hardirq_done();
        assert_eq!(generic.entry_vector(), EntryVector::Idt(0xec));
        assert!(generic.is_hard_interrupt() && !generic.in_hardirq());
        generic.record_vector(3);
        assert!(!generic.in_hardirq());
        // Stack garbage that no entry writes is not taken for a vector.
        generic.vector = 0xdead;
        assert_eq!(generic.entry_vector(), EntryVector::Unknown);
    }

    proptest! {
        /// Writing through the accessor lands in the frame's extension and
        /// never touches PtRegs; reading back gives what was written.
        #[test]
        fn extension_round_trips_through_container_of(
            words in proptest::array::uniform21(any::<u64>()),
            pks in any::<u32>(),
            exit_rcu in any::<u8>(),
            lockdep in any::<u8>(),
        ) {
            let regs = PtRegs {
                r15: words[0], r14: words[1], r13: words[2], r12: words[3], bp: words[4],
                bx: words[5], r11: words[6], r10: words[7], r9: words[8], r8: words[9],
                ax: words[10], cx: words[11], dx: words[12], si: words[13], di: words[14],
                orig_ax: words[15], ip: words[16], cs: words[17], flags: words[18],
                sp: words[19], ss: words[20],
            };
            let mut frame = frame_with(regs, GenericExtRegs::default(), 0);
            {
                // SAFETY: frame.regs lives inside a whole ExtendedPtRegs.
                let ext = unsafe { ExtendedPtRegs::from_regs(&mut frame.regs) };
                ext.arch.pks = pks;
                ext.generic.exit_rcu = exit_rcu;
                ext.generic.lockdep_hardirqs_enabled = lockdep;
                ext.regs.ax ^= 1;
            }
            prop_assert_eq!(frame.arch.pks, pks);
            prop_assert_eq!(frame.generic.exit_rcu, exit_rcu);
            prop_assert_eq!(frame.generic.lockdep_hardirqs_enabled, lockdep);
            let mut expected = regs;
            expected.ax ^= 1;
            prop_assert_eq!(frame.regs, expected);
            // SAFETY: as above.
            let again = unsafe { ExtendedPtRegs::from_regs_ref(&frame.regs) };
            prop_assert_eq!(again.arch.pks, pks);
        }
    }
}
