//! Generic entry code, in the shape Lutomirski proposed.
//!
//! Linux 5.10's `irqentry_enter()` returned an `irqentry_state_t` by value and
//! every caller had to carry it to `irqentry_exit()`. Here the entry functions
//! take only `&mut PtRegs`; the state lives in the extension the entry
//! assembly reserved below `PtRegs`, found with
//! [`ExtendedPtRegs::from_regs`](extregs_regs::ExtendedPtRegs::from_regs).
//!
//! The crate is generic over [`EntryPlatform`], which supplies the RCU and
//! lockdep models and the architecture hooks. The hooks get the opaque
//! [`ArchExtRegs`] to save and restore; this crate never looks inside it (on
//! x86 it holds the PKS register, which the kernel's hooks manage).
//!
//! Order matters and mirrors Linux: the arch state is saved first on entry
//! (so the handler runs with the kernel's defaults before it touches
//! anything) and restored last on exit.

#![no_std]

use extregs_regs::{ArchExtRegs, ExtendedPtRegs, GenericExtRegs, PtRegs};

/// What the generic entry code needs from the kernel that runs it.
///
/// All functions act on the current CPU. The kernel implements this once;
/// host tests implement it with a mock.
pub trait EntryPlatform {
    /// Is RCU watching this CPU (false while the CPU is idle)?
    fn rcu_is_watching() -> bool;
    /// Make RCU watch this CPU (Linux: `ct_irq_enter()` from idle).
    fn rcu_irq_enter();
    /// Let RCU stop watching again (Linux: `ct_irq_exit()` back to idle).
    fn rcu_irq_exit();
    /// Lockdep's view: were hardirqs enabled?
    fn lockdep_hardirqs_enabled() -> bool;
    /// Set lockdep's view of the hardirq state.
    fn lockdep_set_hardirqs_enabled(enabled: bool);
    /// Save the interrupted context's arch state into `arch` and install the
    /// kernel's entry defaults.
    fn arch_enter(arch: &mut ArchExtRegs);
    /// Restore the arch state from `arch` (which a handler may have edited).
    fn arch_exit(arch: &ArchExtRegs);
    /// The current task's preempt count (Linux: `preempt_count()`); 0 means
    /// it may be preempted.
    fn preempt_count() -> u32;
    /// Has the scheduler asked for a reschedule (Linux: `need_resched()`)?
    fn need_resched() -> bool;
    /// Switches to another task from an interrupt's exit, interrupts off,
    /// and returns once this task is picked again (Linux:
    /// `preempt_schedule_irq()`). Other tasks' handlers and exits run
    /// meanwhile, so arch state may have changed when it returns.
    fn preempt_schedule_irq();
    /// Context tracking, leaving user mode (Linux's `user_exit_irqoff()`
    /// in `enter_from_user_mode()`): RCU watches again. Interrupts off.
    fn enter_from_user_mode();
    /// Context tracking, returning to user mode (`user_enter_irqoff()`):
    /// RCU stops watching this CPU. Interrupts off.
    fn exit_to_user_mode();
    /// The work pending before a return to user mode (Linux's thread-info
    /// flags: `_TIF_NEED_RESCHED`, `_TIF_SIGPENDING`).
    fn exit_to_user_mode_work() -> ExitToUserWork;
    /// Switches to another task on the way to user mode and returns when
    /// this one runs again (Linux's `schedule()` in the exit loop).
    fn schedule_before_user_return();
    /// The pending fatal signal: the task dies here (Linux's
    /// `arch_do_signal_or_restart()` ending in `do_exit()`).
    fn kill_current_task() -> !;
    /// Delivers the pending signals to the user frame `regs` (Linux's
    /// `arch_do_signal_or_restart(regs)`): it may rewrite `regs` to enter
    /// a handler, with the signal frame on the user stack. `regs` is the
    /// frame at `task_pt_regs`; whatever the platform needs beyond it it
    /// reaches through the extension accessor, never a second argument.
    fn arch_do_signal(regs: &mut PtRegs);
}

/// What [`EntryPlatform::exit_to_user_mode_work`] reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExitToUserWork {
    /// The scheduler wants the CPU for another task.
    pub need_resched: bool,
    /// The task took a fault nothing handled and must die.
    pub fatal_signal: bool,
    /// A signal is pending and not blocked (`_TIF_SIGPENDING`).
    pub signal_pending: bool,
}

impl ExitToUserWork {
    pub fn is_empty(self) -> bool {
        !self.need_resched && !self.fatal_signal && !self.signal_pending
    }
}

/// Linux's `enter_from_user_mode()`: the entry work of every entry from
/// user mode (interrupt, exception or syscall). Saves the arch state,
/// tells lockdep hardirqs are off and context tracking that the CPU left
/// user mode. Nothing needs undoing later, so the generic state is zero.
pub(crate) fn enter_from_user_mode<P: EntryPlatform>(arch: &mut ArchExtRegs) -> GenericExtRegs {
    P::arch_enter(arch);
    P::lockdep_set_hardirqs_enabled(false);
    P::enter_from_user_mode();
    GenericExtRegs::default()
}

/// The arch state in the extension of the user frame `regs` (read after
/// the exit work, by value).
fn extension_of(regs: &mut PtRegs) -> ArchExtRegs {
    // `regs` is a child of the caller's `&mut ExtendedPtRegs` (`&mut frame.regs`): under Tree
    // Borrows, container_of back to the whole frame stays within that parent's permission.
    // SAFETY: `regs` is inside a whole ExtendedPtRegs (the callers' contracts); nothing else
    // refers to the extension during this read, and the new reference lives only for it.
    unsafe { ExtendedPtRegs::from_regs(regs) }.arch
}

/// Linux's `exit_to_user_mode_loop()`: until no work is left, deliver
/// the fatal signal (which does not return), reschedule, and deliver the
/// pending signals to `regs`. Interrupts off. Every return to user mode
/// passes here, so a signal unblocked by a syscall (`rt_sigprocmask`) or
/// sent to oneself (`tkill`) lands on that syscall's way out.
fn exit_to_user_mode_loop<P: EntryPlatform>(regs: &mut PtRegs) {
    loop {
        let work = P::exit_to_user_mode_work();
        if work.is_empty() {
            return;
        }
        if work.fatal_signal {
            P::kill_current_task();
        }
        if work.need_resched {
            P::schedule_before_user_return();
        }
        if work.signal_pending {
            P::arch_do_signal(regs);
        }
    }
}

/// Linux's `irqentry_exit_to_user_mode()` (and the tail of
/// `syscall_exit_to_user_mode()`): the exit work loop, then context
/// tracking told the CPU is back in user mode, the arch state restored,
/// and last lockdep told hardirqs are on (IF is always set in user mode),
/// in Linux's order (`lockdep_hardirqs_on()` ends `exit_to_user_mode()`).
///
/// The work loop gets the frame's `regs` alone (signal delivery rewrites
/// them); `arch` is read only afterwards, so no borrow of the extension is
/// held while the platform works on the frame.
pub(crate) fn exit_to_user_mode<P: EntryPlatform>(
    regs: &mut PtRegs,
    arch: impl FnOnce(&mut PtRegs) -> ArchExtRegs,
) {
    exit_to_user_mode_loop::<P>(regs);
    P::exit_to_user_mode();
    P::arch_exit(&arch(regs));
    P::lockdep_set_hardirqs_enabled(true);
}

/// Entry work of a SYSCALL (Linux's `syscall_enter_from_user_mode()`
/// before it enables interrupts): as [`irqentry_enter`] from user mode.
///
/// # Safety
///
/// As [`irqentry_enter`]: `regs` is the SYSCALL frame the entry built
/// (extension below it); pair with [`syscall_exit_to_user_mode`].
#[inline(never)]
pub unsafe fn syscall_enter_from_user_mode<P: EntryPlatform>(regs: &mut PtRegs) {
    // SAFETY: the caller guarantees `regs` is inside an ExtendedPtRegs.
    let frame = unsafe { ExtendedPtRegs::from_regs(regs) };
    let generic = enter_from_user_mode::<P>(&mut frame.arch);
    set_generic_state(frame, generic);
}

/// Exit work of a SYSCALL, interrupts off again (Linux's
/// `syscall_exit_to_user_mode()`).
///
/// # Safety
///
/// As [`irqentry_exit`].
#[inline(never)]
pub unsafe fn syscall_exit_to_user_mode<P: EntryPlatform>(regs: &mut PtRegs) {
    // SAFETY: the caller guarantees `regs` is inside an ExtendedPtRegs.
    let frame = unsafe { ExtendedPtRegs::from_regs(regs) };
    exit_to_user_mode::<P>(&mut frame.regs, extension_of);
}

/// Linux's `irqentry_exit_cond_resched()`: preempt the interrupted kernel
/// code when nothing forbids it (preempt count 0) and the scheduler wants
/// to. The caller has checked that the interrupted context had IF set and
/// that RCU was watching on entry.
pub fn irqentry_exit_cond_resched<P: EntryPlatform>() {
    if P::preempt_count() == 0 && P::need_resched() {
        P::preempt_schedule_irq();
    }
}

/// Entry work for exceptions and interrupts.
///
/// Saves the arch state, tells lockdep that hardirqs are off (the gate
/// cleared IF, or the handler runs as if it had), then records in the
/// extension whether RCU had to be made to watch (`exit_rcu`), replacing the
/// value Linux 5.10 returned. The extension's `vector` is the entry stub's
/// and is left as it is.
///
/// # Safety
///
/// `regs` must be the `PtRegs` of a frame built by the entry stubs (or a
/// whole [`ExtendedPtRegs`] laid out by the caller): the extension below it is
/// written. Pair every call with exactly one [`irqentry_exit`] on the same
/// frame.
// Out of line, as Linux's noinstr entry functions are (and as the by-value
// and by-reference variants are, so the benchmark compares like with like).
#[inline(never)]
pub unsafe fn irqentry_enter<P: EntryPlatform>(regs: &mut PtRegs) {
    // SAFETY: the caller guarantees `regs` is inside an ExtendedPtRegs.
    let frame = unsafe { ExtendedPtRegs::from_regs(regs) };
    if frame.regs.user_mode() {
        let generic = enter_from_user_mode::<P>(&mut frame.arch);
        set_generic_state(frame, generic);
        return;
    }
    P::arch_enter(&mut frame.arch);
    P::lockdep_set_hardirqs_enabled(false);
    let mut generic = GenericExtRegs::default();
    if !P::rcu_is_watching() {
        P::rcu_irq_enter();
        generic.exit_rcu = 1;
    }
    set_generic_state(frame, generic);
}

/// Writes the generic entry's state into the frame's extension, keeping the
/// [`GenericExtRegs::vector`] the entry stub recorded there.
fn set_generic_state(frame: &mut ExtendedPtRegs, state: GenericExtRegs) {
    frame.generic = GenericExtRegs { vector: frame.generic.vector, ..state };
}

/// Exit work matching [`irqentry_enter`]: undoes what `exit_rcu` records,
/// or, when the interrupted code ran with IF set, preempts it if the
/// scheduler asks ([`irqentry_exit_cond_resched`]; an interrupt from idle,
/// with `exit_rcu`, never preempts, as in Linux); tells lockdep hardirqs
/// are on again when IRET will set IF (Linux checks `regs_irqs_disabled()`
/// the same way), then restores the arch state last.
///
/// # Safety
///
/// `regs` must be the frame [`irqentry_enter`] ran on, with its extension
/// untouched except through the documented accessors.
// Out of line, as Linux's noinstr entry functions are (and as the by-value
// and by-reference variants are, so the benchmark compares like with like).
#[inline(never)]
pub unsafe fn irqentry_exit<P: EntryPlatform>(regs: &mut PtRegs) {
    // SAFETY: the caller guarantees `regs` is inside an ExtendedPtRegs.
    let frame = unsafe { ExtendedPtRegs::from_regs(regs) };
    if frame.regs.user_mode() {
        exit_to_user_mode::<P>(&mut frame.regs, extension_of);
        return;
    }
    if frame.generic.exit_rcu != 0 {
        P::rcu_irq_exit();
    } else if frame.regs.interrupts_enabled() {
        // The task may be switched out here, with this frame and its
        // extension left on its stack; whatever the tasks that run
        // meanwhile do to the arch state, the restore below reads this
        // frame's extension.
        irqentry_exit_cond_resched::<P>();
    }
    P::lockdep_set_hardirqs_enabled(frame.regs.interrupts_enabled());
    P::arch_exit(&frame.arch);
}

/// Entry work for NMIs: saves lockdep's hardirq state into the extension and
/// marks hardirqs disabled, makes RCU watch if needed, saves the arch state.
///
/// # Safety
///
/// As [`irqentry_enter`]; pair with [`irqentry_nmi_exit`].
// Out of line, as Linux's noinstr entry functions are (and as the by-value
// and by-reference variants are, so the benchmark compares like with like).
#[inline(never)]
pub unsafe fn irqentry_nmi_enter<P: EntryPlatform>(regs: &mut PtRegs) {
    // SAFETY: the caller guarantees `regs` is inside an ExtendedPtRegs.
    let frame = unsafe { ExtendedPtRegs::from_regs(regs) };
    P::arch_enter(&mut frame.arch);
    let mut generic = GenericExtRegs {
        lockdep_hardirqs_enabled: u8::from(P::lockdep_hardirqs_enabled()),
        ..GenericExtRegs::default()
    };
    P::lockdep_set_hardirqs_enabled(false);
    if !P::rcu_is_watching() {
        P::rcu_irq_enter();
        generic.exit_rcu = 1;
    }
    set_generic_state(frame, generic);
}

/// Exit work matching [`irqentry_nmi_enter`]: restores lockdep's hardirq state
/// and RCU from the extension, then the arch state.
///
/// # Safety
///
/// As [`irqentry_exit`].
// Out of line, as Linux's noinstr entry functions are (and as the by-value
// and by-reference variants are, so the benchmark compares like with like).
#[inline(never)]
pub unsafe fn irqentry_nmi_exit<P: EntryPlatform>(regs: &mut PtRegs) {
    // SAFETY: the caller guarantees `regs` is inside an ExtendedPtRegs.
    let frame = unsafe { ExtendedPtRegs::from_regs(regs) };
    if frame.generic.exit_rcu != 0 {
        P::rcu_irq_exit();
    }
    P::lockdep_set_hardirqs_enabled(frame.generic.lockdep_hardirqs_enabled != 0);
    P::arch_exit(&frame.arch);
}

pub mod baseline;

#[cfg(test)]
mod tests;
