//! The event programs: one level per nesting depth, drawn from the seed's
//! PRNG, and what each level must find in its frame and get back after
//! return.

use super::*;

/// The kinds a kernel-mode level draws from.
pub(super) const KINDS: &[Kind] = Kind::KERNEL;

/// The kinds of an outermost level run in ring 3 (Timer and SelfIpi arrive
/// right after a SYSCALL that asked for them, in the user wait loop; SelfNmi
/// is a real NMI the user task sets off with an `out` to the 8259, see
/// `apic::arm_pic_nmi`).
pub(super) const USER_KINDS: [Kind; 7] = Kind::USER;

/// Can this machine deliver the ring-3 level's NMI (`apic::probe_pic_nmi`,
/// once per boot)? If not, see [`user_kind`].
pub(super) static USER_NMI_AVAILABLE: AtomicBool = AtomicBool::new(false);

/// A ring-3 level's kind from a draw: without the PIC NMI on this machine,
/// an NMI level becomes an int3 (the same draws, so the rest of the
/// program stays the same).
pub(super) fn user_kind(draw: u32) -> Kind {
    match USER_KINDS[draw as usize % USER_KINDS.len()] {
        Kind::SelfNmi if !USER_NMI_AVAILABLE.load(Ordering::Relaxed) => Kind::Int3,
        kind => kind,
    }
}

/// Every kind, for the counters.
pub(super) const ALL_KINDS: usize = Kind::ALL.len();

/// RFLAGS in the user trampolines: IF and the fixed bit; nothing there
/// changes the arithmetic flags before the event, so it is what SYSCALL
/// saves in R11.
pub(super) const USER_FLAGS: u64 = extregs_regs::X86_EFLAGS_IF | extregs_regs::X86_EFLAGS_FIXED;

/// #PF error code of a user read of a page that is not present.
pub(super) const PF_USER: u64 = 1 << 2;

/// What raising and checking an event needs to know of its kind (its
/// name is shared with the runner: `extregs_cmdline::FuzzKind`).
pub(super) trait KindEvent {
    fn vector(&self) -> u8;
    fn error_code(&self) -> u64;
    fn is_async(&self) -> bool;
    fn is_maskable_irq(&self) -> bool;
    fn is_trap(&self) -> bool;
    fn needs_pks(&self) -> bool;
    fn switches_task(&self) -> bool;
}

impl KindEvent for Kind {
    fn vector(&self) -> u8 {
        match *self {
            Kind::IntN => SOFT_INT_VECTOR,
            Kind::Int3 => 3,
            Kind::Ud2 => 6,
            Kind::DivideError => 0,
            Kind::GeneralProtection => 13,
            Kind::PksResolved | Kind::PksFixup => 14,
            Kind::Timer | Kind::Preempt | Kind::Migrate => TIMER_VECTOR,
            Kind::SelfIpi => SELF_IPI_VECTOR,
            Kind::SelfNmi => 2,
            Kind::Syscall => user::syscall::SYSCALL_PSEUDO_VECTOR,
            Kind::UserPageFault => 14,
        }
    }

    fn error_code(&self) -> u64 {
        match *self {
            Kind::GeneralProtection => 0,
            Kind::PksResolved | Kind::PksFixup => PF_PRESENT | PF_PROTECTION_KEY,
            Kind::UserPageFault => PF_USER,
            Kind::Syscall => user::syscall::numbers::SYS_FUZZ_EVENT,
            _ => NO_ERROR_CODE,
        }
    }

    /// Delivered while the trampoline spins (IF set for the maskable ones).
    fn is_async(&self) -> bool {
        matches!(*self, Kind::Timer | Kind::SelfIpi | Kind::SelfNmi | Kind::Preempt | Kind::Migrate)
    }

    fn is_maskable_irq(&self) -> bool {
        matches!(*self, Kind::Timer | Kind::SelfIpi | Kind::Preempt | Kind::Migrate)
    }

    /// The IRQ's exit switches tasks (`preempt`, `migrate`).
    fn switches_task(&self) -> bool {
        matches!(*self, Kind::Preempt | Kind::Migrate)
    }

    /// A trap: the saved `ip` is already past the instruction.
    fn is_trap(&self) -> bool {
        matches!(*self, Kind::IntN | Kind::Int3 | Kind::Syscall)
    }

    fn needs_pks(&self) -> bool {
        matches!(*self, Kind::PksResolved | Kind::PksFixup)
    }
}

/// What a handler changes in its own frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Mutation {
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
pub(super) struct Level {
    pub(super) kind: Kind,
    /// The GPRs the trampoline loads (other fields unused).
    pub(super) gprs: PtRegs,
    /// PKRS of the interrupted context.
    pub(super) pkrs: u32,
    /// The lockdep model's "hardirqs enabled" while the event hits; an NMI
    /// must save it and put it back (for maskable IRQs it mirrors IF: true).
    pub(super) lockdep_model: bool,
    pub(super) mutation: Mutation,
    /// Inside an NMI: the handler sends a self-NMI before it returns.
    pub(super) send_latched_nmi: bool,
}

/// A program's unused level: `generate` writes every level below `len`
/// before anything reads it. Its fields are all zero bits, so the lanes'
/// programs are .bss and not part of the kernel file the loader copies.
pub(super) const EMPTY_LEVEL: Level = Level {
    kind: Kind::IntN,
    gprs: PtRegs::ZERO,
    pkrs: 0,
    lockdep_model: false,
    mutation: Mutation::None,
    send_latched_nmi: false,
};

pub(super) struct Program {
    pub(super) levels: [Level; MAX_LEVELS],
    pub(super) len: usize,
    /// Level 0 runs in ring 3 (a user task raises it; its GPRs go in and
    /// come back through the fuzzer's user page).
    pub(super) user: bool,
    /// The ring-3 level's fault (int3, ud2 or a user #PF) ends in a signal:
    /// the level runs as a Linux process whose handler resumes it through
    /// `rt_sigreturn` (half of those levels, by a bit of its own GPRs, so
    /// no random draw moves).
    pub(super) user_signal: bool,
}

/// A lane's running program. It is written only by the lane's own task,
/// between iterations, when no event of the lane is outstanding and with
/// the lane's hooks off (`Lane::active` clear, so a foreign NMI meanwhile
/// goes to the kernel's NMI handler and never reads it). Only the handlers
/// of the lane's events read it, on whichever CPU runs the lane's task of
/// the moment: never while the writer runs, since the writer is that task
/// (or, on another CPU, no task of the lane runs while it writes: the
/// partner is parked and the user task has been waited for).
pub(super) struct ProgramCell(pub(super) UnsafeCell<Program>);
// SAFETY: see above: the writer never runs while a reader can, on any CPU.
unsafe impl Sync for ProgramCell {}

impl ProgramCell {
    pub(super) const fn new() -> ProgramCell {
        ProgramCell(UnsafeCell::new(Program {
            levels: [EMPTY_LEVEL; MAX_LEVELS],
            len: 0,
            user: false,
            user_signal: false,
        }))
    }
}

/// The program's readers: only an [`OwnLane`] (the running task's own
/// lane) reads it, so the reader is the lane's writer itself or runs while
/// no writer can (see [`ProgramCell`]).
impl OwnLane {
    /// Level `index` of this lane's program (a plain copy).
    pub(super) fn level(&self, index: usize) -> Level {
        // A place projection: one Level is copied out, and no reference to
        // the whole program is made.
        // SAFETY: `self` is the running task's own lane (an OwnLane): no
        // writer of this program runs meanwhile, on any CPU (ProgramCell).
        unsafe { (*self.program.0.get()).levels[index] }
    }

    pub(super) fn program_len(&self) -> usize {
        // SAFETY: as in `level`.
        unsafe { (*self.program.0.get()).len }
    }

    /// Does the ring-3 level end in a signal (and level `index` is it)?
    pub(super) fn is_user_signal_level(&self, index: usize) -> bool {
        // SAFETY: as in `level`.
        index == 0 && unsafe { (*self.program.0.get()).user && (*self.program.0.get()).user_signal }
    }

    /// Does level `index` run in ring 3?
    pub(super) fn is_user_level(&self, index: usize) -> bool {
        // SAFETY: as in `level`.
        index == 0 && unsafe { (*self.program.0.get()).user }
    }

    /// The event and resume addresses of level `index` (user ones for a
    /// ring-3 level).
    pub(super) fn sites(&self, index: usize, kind: Kind) -> (u64, u64) {
        if self.is_user_level(index) {
            let trampoline = user_trampoline(kind);
            (trampoline.site, trampoline.resume)
        } else {
            let (_, site, resume) = trampoline(kind);
            (site, resume)
        }
    }

    /// The GPRs a level's handler must find in its frame: what the level
    /// loaded, except that for a ring-3 IRQ level the SYSCALL that asked
    /// for the IRQ has returned 0 in RAX by then, a SYSCALL's own frame
    /// says -ENOSYS in RAX until the table answers (the number is in
    /// orig_ax), and a kernel self-NMI names this CPU.
    pub(super) fn frame_gprs(&self, index: usize, level: &Level) -> PtRegs {
        let mut gprs = level.gprs;
        let user = self.is_user_level(index);
        if user && level.kind.is_maskable_irq() {
            gprs.ax = 0;
        }
        if user && level.kind == Kind::Syscall {
            gprs.ax = extregs_entry_asm::ENOSYS.wrapping_neg();
        }
        if level.kind == Kind::SelfNmi && !user {
            aim_self_nmi(&mut gprs);
        }
        gprs
    }
}

/// Level `index` of the running task's lane's program (for the cold
/// paths; the hot ones look the lane up once and use its methods).
pub(super) fn level(index: usize) -> Level {
    lane().level(index)
}

pub(super) fn program_len() -> usize {
    lane().program_len()
}

/// Does level `index` of the running task's lane run in ring 3?
pub(super) fn is_user_level(index: usize) -> bool {
    lane().is_user_level(index)
}

/// Points a kernel self-NMI level's GPRs at the CPU that raises (or
/// checks) it: the program is the seed's, and a seed runs on any CPU. The
/// x2APIC store names this CPU's APIC ID in EDX; an xAPIC store's
/// destination is ICR high, which `raise` sets up on this CPU.
pub(super) fn aim_self_nmi(gprs: &mut PtRegs) {
    if let apic::SelfNmiStore::X2Apic { high, .. } = apic::self_nmi_store() {
        gprs.dx = (gprs.dx & !0xffff_ffff) | u64::from(high);
    }
}

/// The user trampoline of a ring-3 level's kind.
pub(super) fn user_trampoline(kind: Kind) -> user::programs::FuzzTrampoline {
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

/// A random PKRS for an interrupted context: key 0 read/write (all kernel
/// memory), every other key random; for the PKS kinds the fuzz key denies
/// reads, so the load faults.
pub(super) fn random_pkrs(rng: &mut Xoshiro256PlusPlus, kind: Kind) -> u32 {
    let mut pkrs = (rng.next_u32() & !0b11) | (PKRS_DEFAULT & 0b11);
    if kind.needs_pks() {
        pkrs = pks::with_key_rights(pkrs, FUZZ_PKEY, KeyRights::NoAccess);
    }
    pkrs
}

pub(super) fn random_gprs(rng: &mut Xoshiro256PlusPlus) -> PtRegs {
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

pub(super) fn generate(rng: &mut Xoshiro256PlusPlus, max_depth: usize, program: &mut Program) {
    // Half the programs go to the full depth, the rest stop anywhere.
    let len =
        if rng.next_u32() & 1 == 0 { max_depth } else { 1 + (rng.next_u32() as usize % max_depth) };
    let with_pks = pks::enabled();
    let mut in_nmi = false;
    let mut switched = false;
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
            // count forbids it, as in Linux. A migration is a preemption
            // too (at most one of the two per program).
            if (in_nmi && kind.is_async())
                || (kind.needs_pks() && !with_pks)
                || (kind.switches_task() && (switched || in_hardirq))
            {
                continue;
            }
            break kind;
        };
        switched |= kind.switches_task();
        // `int $0x81` enters through an external-interrupt stub, so its
        // handler runs as a hard interrupt too.
        in_hardirq |= kind.is_async() || kind == Kind::IntN;
        let mut gprs = random_gprs(rng);
        if kind == Kind::SelfNmi {
            // Aimed at the raising CPU when it is raised (`aim_self_nmi`).
            match apic::self_nmi_store() {
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
    let first = &program.levels[0];
    program.user_signal = program.user
        && matches!(first.kind, Kind::Int3 | Kind::Ud2 | Kind::UserPageFault)
        && first.gprs.r15 >> 63 == 1;
}

/// A ring-3 outermost level: random GPRs, except that a level whose event
/// is (or is asked for by) a SYSCALL carries the number in RAX, and RCX and
/// R11 already hold what SYSCALL writes there (the RIP after it and the
/// user RFLAGS), so every GPR can be checked exactly; and an NMI level's AL
/// holds the 8259 mask its `out` writes. User mode runs with
/// the default PKRS; its saved PKRS is never edited (user mode must never
/// see kernel rights).
pub(super) fn user_level(rng: &mut Xoshiro256PlusPlus, kind: Kind) -> Level {
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
pub(super) const SYSCALL_INSTRUCTION_BYTES: u64 = 2;
