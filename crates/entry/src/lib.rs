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
}

/// What [`EntryPlatform::exit_to_user_mode_work`] reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExitToUserWork {
    /// The scheduler wants the CPU for another task.
    pub need_resched: bool,
    /// The task took a fault nothing handled and must die.
    pub fatal_signal: bool,
}

impl ExitToUserWork {
    pub fn is_empty(self) -> bool {
        !self.need_resched && !self.fatal_signal
    }
}

/// Linux's `enter_from_user_mode()`: the entry work of every entry from
/// user mode (interrupt, exception or syscall). Saves the arch state,
/// tells lockdep hardirqs are off and context tracking that the CPU left
/// user mode. Nothing needs undoing later, so the generic state is zero.
fn enter_from_user_mode<P: EntryPlatform>(arch: &mut ArchExtRegs) -> GenericExtRegs {
    P::arch_enter(arch);
    P::lockdep_set_hardirqs_enabled(false);
    P::enter_from_user_mode();
    GenericExtRegs::default()
}

/// Linux's `exit_to_user_mode_loop()`: until no work is left, reschedule
/// and deliver the fatal signal (which does not return). Interrupts off.
fn exit_to_user_mode_loop<P: EntryPlatform>() {
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
    }
}

/// Linux's `irqentry_exit_to_user_mode()` (and the tail of
/// `syscall_exit_to_user_mode()`): the exit work loop, then context
/// tracking told the CPU is back in user mode, the arch state restored,
/// and last lockdep told hardirqs are on (IF is always set in user mode),
/// in Linux's order (`lockdep_hardirqs_on()` ends `exit_to_user_mode()`).
fn exit_to_user_mode<P: EntryPlatform>(arch: &ArchExtRegs) {
    exit_to_user_mode_loop::<P>();
    P::exit_to_user_mode();
    P::arch_exit(arch);
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
    exit_to_user_mode::<P>(&frame.arch);
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
        exit_to_user_mode::<P>(&frame.arch);
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

/// Linux 5.10's `irqentry_state_t` (plus the arch state, as Weiny's PKS
/// series needed): what the two designs the extension replaces carry
/// around. Eight bytes, so it fits a register.
///
/// These variants exist for the benchmark (`extregs bench`), which compares
/// them with the extension on the same frame and the same platform.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IrqentryState {
    pub generic: GenericExtRegs,
    pub arch: ArchExtRegs,
}

/// Linux 5.10: `irqentry_enter()` returns the state by value.
///
/// # Safety
///
/// `regs` is the interrupted context's frame; pair with
/// [`irqentry_exit_by_value`].
#[inline(never)]
pub unsafe fn irqentry_enter_by_value<P: EntryPlatform>(regs: &mut PtRegs) -> IrqentryState {
    let mut state = IrqentryState::default();
    if regs.user_mode() {
        state.generic = enter_from_user_mode::<P>(&mut state.arch);
        return state;
    }
    P::arch_enter(&mut state.arch);
    P::lockdep_set_hardirqs_enabled(false);
    if !P::rcu_is_watching() {
        P::rcu_irq_enter();
        state.generic.exit_rcu = 1;
    }
    state
}

/// Exit matching [`irqentry_enter_by_value`].
///
/// # Safety
///
/// As [`irqentry_enter_by_value`].
#[inline(never)]
pub unsafe fn irqentry_exit_by_value<P: EntryPlatform>(regs: &mut PtRegs, state: IrqentryState) {
    if regs.user_mode() {
        exit_to_user_mode::<P>(&state.arch);
        return;
    }
    if state.generic.exit_rcu != 0 {
        P::rcu_irq_exit();
    } else if regs.interrupts_enabled() {
        irqentry_exit_cond_resched::<P>();
    }
    P::lockdep_set_hardirqs_enabled(regs.interrupts_enabled());
    P::arch_exit(&state.arch);
}

/// Weiny's V3: the state lives in the caller's frame, passed by reference.
///
/// # Safety
///
/// As [`irqentry_enter_by_value`]; pair with [`irqentry_exit_by_reference`]
/// on the same `state`.
#[inline(never)]
pub unsafe fn irqentry_enter_by_reference<P: EntryPlatform>(
    regs: &mut PtRegs,
    state: &mut IrqentryState,
) {
    if regs.user_mode() {
        state.generic = enter_from_user_mode::<P>(&mut state.arch);
        return;
    }
    P::arch_enter(&mut state.arch);
    P::lockdep_set_hardirqs_enabled(false);
    state.generic = GenericExtRegs::default();
    if !P::rcu_is_watching() {
        P::rcu_irq_enter();
        state.generic.exit_rcu = 1;
    }
}

/// Exit matching [`irqentry_enter_by_reference`].
///
/// # Safety
///
/// As [`irqentry_enter_by_reference`].
#[inline(never)]
pub unsafe fn irqentry_exit_by_reference<P: EntryPlatform>(
    regs: &mut PtRegs,
    state: &IrqentryState,
) {
    if regs.user_mode() {
        exit_to_user_mode::<P>(&state.arch);
        return;
    }
    if state.generic.exit_rcu != 0 {
        P::rcu_irq_exit();
    } else if regs.interrupts_enabled() {
        irqentry_exit_cond_resched::<P>();
    }
    P::lockdep_set_hardirqs_enabled(regs.interrupts_enabled());
    P::arch_exit(&state.arch);
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use core::cell::RefCell;
    use proptest::prelude::*;
    use std::vec::Vec;

    /// A mock CPU: an RCU flag, a lockdep flag and an arch "register", plus a
    /// log of every hook call so ordering can be asserted.
    #[derive(Default)]
    struct MockCpu {
        rcu_watching: bool,
        hardirqs_enabled: bool,
        arch_register: u32,
        arch_default: u32,
        preempt_count: u32,
        need_resched: bool,
        /// What another task leaves in the arch register when this one is
        /// preempted (it runs with its own value meanwhile).
        other_task_arch_register: u32,
        preemptions: u32,
        /// Context tracking: the mock CPU is in user mode.
        in_user: bool,
        /// A fatal signal is pending for the current task.
        fatal_signal: bool,
        /// The hook call logged last when lockdep was last told hardirqs
        /// are on (Linux tells it last on the way to user mode).
        lockdep_on_after: Option<&'static str>,
        calls: Vec<&'static str>,
    }

    std::thread_local! {
        static CPU: RefCell<MockCpu> = RefCell::new(MockCpu::default());
    }

    struct MockPlatform;

    impl EntryPlatform for MockPlatform {
        fn rcu_is_watching() -> bool {
            CPU.with(|c| c.borrow().rcu_watching)
        }
        fn rcu_irq_enter() {
            CPU.with(|c| {
                let mut c = c.borrow_mut();
                assert!(!c.rcu_watching, "rcu_irq_enter while already watching");
                c.rcu_watching = true;
                c.calls.push("rcu_irq_enter");
            })
        }
        fn rcu_irq_exit() {
            CPU.with(|c| {
                let mut c = c.borrow_mut();
                assert!(c.rcu_watching, "rcu_irq_exit while not watching");
                c.rcu_watching = false;
                c.calls.push("rcu_irq_exit");
            })
        }
        fn lockdep_hardirqs_enabled() -> bool {
            CPU.with(|c| c.borrow().hardirqs_enabled)
        }
        fn lockdep_set_hardirqs_enabled(enabled: bool) {
            CPU.with(|c| {
                let mut c = c.borrow_mut();
                c.hardirqs_enabled = enabled;
                if enabled {
                    c.lockdep_on_after = c.calls.last().copied();
                }
            })
        }
        fn arch_enter(arch: &mut ArchExtRegs) {
            CPU.with(|c| {
                let mut c = c.borrow_mut();
                arch.pks = c.arch_register;
                c.arch_register = c.arch_default;
                c.calls.push("arch_enter");
            })
        }
        fn arch_exit(arch: &ArchExtRegs) {
            CPU.with(|c| {
                let mut c = c.borrow_mut();
                c.arch_register = arch.pks;
                c.calls.push("arch_exit");
            })
        }
        fn preempt_count() -> u32 {
            CPU.with(|c| c.borrow().preempt_count)
        }
        fn need_resched() -> bool {
            CPU.with(|c| c.borrow().need_resched)
        }
        fn preempt_schedule_irq() {
            CPU.with(|c| {
                let mut c = c.borrow_mut();
                assert!(c.rcu_watching, "preempted with RCU not watching");
                c.need_resched = false;
                c.preemptions += 1;
                c.arch_register = c.other_task_arch_register;
                c.calls.push("preempt_schedule_irq");
            })
        }
        fn enter_from_user_mode() {
            CPU.with(|c| {
                let mut c = c.borrow_mut();
                assert!(c.in_user && !c.rcu_watching, "entered from user mode twice");
                c.in_user = false;
                c.rcu_watching = true;
                c.calls.push("enter_from_user_mode");
            })
        }
        fn exit_to_user_mode() {
            CPU.with(|c| {
                let mut c = c.borrow_mut();
                assert!(!c.in_user && c.rcu_watching, "exit to user mode from user mode");
                c.in_user = true;
                c.rcu_watching = false;
                c.calls.push("exit_to_user_mode");
            })
        }
        fn exit_to_user_mode_work() -> ExitToUserWork {
            CPU.with(|c| {
                let c = c.borrow();
                ExitToUserWork { need_resched: c.need_resched, fatal_signal: c.fatal_signal }
            })
        }
        fn schedule_before_user_return() {
            CPU.with(|c| {
                let mut c = c.borrow_mut();
                assert!(c.rcu_watching, "scheduled with RCU not watching");
                c.need_resched = false;
                c.preemptions += 1;
                c.calls.push("schedule_before_user_return");
            })
        }
        fn kill_current_task() -> ! {
            CPU.with(|c| c.borrow_mut().calls.push("kill_current_task"));
            std::panic::panic_any(KilledTask)
        }
    }

    /// What the mock's `kill_current_task` unwinds with.
    struct KilledTask;

    /// A frame that interrupted user mode (RPL 3, IF set as always there).
    fn user_frame() -> ExtendedPtRegs {
        let mut frame = garbage_frame();
        frame.regs.cs = 0x33;
        frame.regs.ss = 0x2b;
        frame.regs.flags = extregs_regs::X86_EFLAGS_IF | extregs_regs::X86_EFLAGS_FIXED;
        frame
    }

    /// The mock CPU running a user task: RCU not watching, IF on.
    fn reset_cpu_in_user(arch_register: u32) {
        reset_cpu(false, true, arch_register);
        CPU.with(|c| c.borrow_mut().in_user = true);
    }

    #[test]
    fn user_entry_takes_the_user_path_of_all_three_variants() {
        type Enter = unsafe fn(&mut ExtendedPtRegs);
        fn extension(frame: &mut ExtendedPtRegs) {
            // SAFETY: a whole ExtendedPtRegs.
            unsafe { irqentry_enter::<MockPlatform>(&mut frame.regs) };
            cpu(|c| assert!(!c.in_user && c.rcu_watching && !c.hardirqs_enabled));
            assert_eq!(frame.generic.vector, 0xdead, "the stub's vector is kept");
            // SAFETY: the same frame.
            unsafe { irqentry_exit::<MockPlatform>(&mut frame.regs) };
        }
        fn by_value(frame: &mut ExtendedPtRegs) {
            // SAFETY: the variants only read the frame.
            let state = unsafe { irqentry_enter_by_value::<MockPlatform>(&mut frame.regs) };
            assert_eq!(state.generic, GenericExtRegs::default());
            // SAFETY: as above.
            unsafe { irqentry_exit_by_value::<MockPlatform>(&mut frame.regs, state) };
        }
        fn by_reference(frame: &mut ExtendedPtRegs) {
            let mut state = IrqentryState::default();
            // SAFETY: the variants only read the frame.
            unsafe { irqentry_enter_by_reference::<MockPlatform>(&mut frame.regs, &mut state) };
            // SAFETY: as above.
            unsafe { irqentry_exit_by_reference::<MockPlatform>(&mut frame.regs, &state) };
        }
        for variant in [extension as Enter, by_value, by_reference] {
            reset_cpu_in_user(0x5555_5554);
            let mut frame = user_frame();
            // SAFETY: each variant is given a whole frame.
            unsafe { variant(&mut frame) };
            let calls = cpu(|c| c.calls.clone());
            assert_eq!(
                calls,
                ["arch_enter", "enter_from_user_mode", "exit_to_user_mode", "arch_exit"],
                "no rcu_irq_enter/exit: context tracking does it"
            );
            cpu(|c| assert!(c.in_user && !c.rcu_watching && c.hardirqs_enabled));
            // Linux's order: context tracking, the arch state, lockdep last.
            assert_eq!(cpu(|c| c.lockdep_on_after), Some("arch_exit"));
        }
    }

    #[test]
    fn exit_to_user_runs_the_work_loop_and_a_fatal_signal_kills() {
        reset_cpu_in_user(0x5555_5554);
        set_preemption(0, true);
        let mut frame = user_frame();
        // SAFETY: a whole frame.
        unsafe { irqentry_enter::<MockPlatform>(&mut frame.regs) };
        CPU.with(|c| c.borrow_mut().fatal_signal = true);
        let killed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            // SAFETY: the same frame.
            unsafe { irqentry_exit::<MockPlatform>(&mut frame.regs) };
        }));
        let payload = killed.expect_err("the fatal signal kills the task");
        assert!(payload.is::<KilledTask>());
        let calls = cpu(|c| c.calls.clone());
        assert_eq!(calls, ["arch_enter", "enter_from_user_mode", "kill_current_task"]);
        // Without the signal: reschedule, then return to user mode.
        reset_cpu_in_user(0x5555_5554);
        set_preemption(0, true);
        let mut frame = user_frame();
        // SAFETY: a whole frame.
        unsafe { irqentry_enter::<MockPlatform>(&mut frame.regs) };
        // SAFETY: the same frame.
        unsafe { irqentry_exit::<MockPlatform>(&mut frame.regs) };
        assert_eq!(cpu(|c| c.preemptions), 1);
        assert_eq!(
            cpu(|c| c.calls.clone()),
            [
                "arch_enter",
                "enter_from_user_mode",
                "schedule_before_user_return",
                "exit_to_user_mode",
                "arch_exit"
            ]
        );
    }

    #[test]
    fn syscall_entry_and_exit_are_the_user_path() {
        reset_cpu_in_user(0x5555_5554);
        let mut frame = user_frame();
        // SAFETY: a whole frame.
        unsafe { syscall_enter_from_user_mode::<MockPlatform>(&mut frame.regs) };
        // The generic state is the entry's; the vector the stub's (kept).
        assert_eq!(
            frame.generic,
            GenericExtRegs { vector: 0xdead, ..GenericExtRegs::default() },
            "no garbage left in the extension's generic state"
        );
        assert_eq!(frame.arch.pks, 0x5555_5554);
        // SAFETY: the same frame.
        unsafe { syscall_exit_to_user_mode::<MockPlatform>(&mut frame.regs) };
        cpu(|c| assert!(c.in_user && !c.rcu_watching && c.hardirqs_enabled));
        assert_eq!(cpu(|c| c.arch_register), 0x5555_5554);
    }

    fn reset_cpu(rcu_watching: bool, hardirqs_enabled: bool, arch_register: u32) {
        CPU.with(|c| {
            *c.borrow_mut() = MockCpu {
                rcu_watching,
                hardirqs_enabled,
                arch_register,
                arch_default: 0x5555_5554,
                calls: Vec::new(),
                ..MockCpu::default()
            }
        });
    }

    fn cpu<T>(f: impl FnOnce(&MockCpu) -> T) -> T {
        CPU.with(|c| f(&c.borrow()))
    }

    /// A frame whose extension holds garbage, like the stack after `sub`
    /// (its vector stands for the one the stub would have recorded).
    fn garbage_frame() -> ExtendedPtRegs {
        ExtendedPtRegs {
            generic: GenericExtRegs {
                exit_rcu: 0xa5,
                lockdep_hardirqs_enabled: 0x5a,
                vector: 0xdead,
            },
            ..ExtendedPtRegs::default()
        }
    }

    /// A frame that interrupted kernel code with IF set or clear.
    fn frame_with_interrupts(enabled: bool) -> ExtendedPtRegs {
        let mut frame = garbage_frame();
        if enabled {
            frame.regs.flags |= extregs_regs::X86_EFLAGS_IF;
        }
        frame
    }

    fn set_preemption(preempt_count: u32, need_resched: bool) {
        CPU.with(|c| {
            let mut c = c.borrow_mut();
            c.preempt_count = preempt_count;
            c.need_resched = need_resched;
            c.other_task_arch_register = 0x1234_5670;
        });
    }

    #[test]
    fn exit_preempts_only_what_linux_preempts() {
        // (IF in the frame, RCU watching on entry, preempt count,
        // need_resched) -> preempted?
        for if_set in [false, true] {
            for watching in [false, true] {
                for count in [0, 1, 2] {
                    for resched in [false, true] {
                        reset_cpu(watching, if_set, 7);
                        set_preemption(count, resched);
                        let mut frame = frame_with_interrupts(if_set);
                        // SAFETY: frame.regs is inside a whole ExtendedPtRegs.
                        unsafe { irqentry_enter::<MockPlatform>(&mut frame.regs) };
                        // SAFETY: as above.
                        unsafe { irqentry_exit::<MockPlatform>(&mut frame.regs) };
                        let expected = if_set && watching && count == 0 && resched;
                        assert_eq!(
                            cpu(|c| c.preemptions) == 1,
                            expected,
                            "IF {if_set}, watching {watching}, count {count}, resched {resched}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn preempted_frame_restores_its_own_arch_state() {
        reset_cpu(true, true, 0x5555_5550);
        set_preemption(0, true);
        let mut frame = frame_with_interrupts(true);
        // SAFETY: frame.regs is inside a whole ExtendedPtRegs.
        unsafe { irqentry_enter::<MockPlatform>(&mut frame.regs) };
        // SAFETY: as above.
        unsafe { irqentry_exit::<MockPlatform>(&mut frame.regs) };
        // The other task left its own value; the exit wrote back the one
        // this frame's extension saved, after the switch.
        assert_eq!(cpu(|c| c.arch_register), 0x5555_5550);
        assert_eq!(cpu(|c| c.calls.clone()), ["arch_enter", "preempt_schedule_irq", "arch_exit"]);
        assert!(cpu(|c| c.hardirqs_enabled));
    }

    #[test]
    fn all_three_variants_preempt_alike() {
        for variant in 0..3 {
            reset_cpu(true, true, 3);
            set_preemption(0, true);
            let mut frame = frame_with_interrupts(true);
            // SAFETY: frame.regs is inside a whole ExtendedPtRegs.
            unsafe {
                match variant {
                    0 => {
                        irqentry_enter::<MockPlatform>(&mut frame.regs);
                        irqentry_exit::<MockPlatform>(&mut frame.regs);
                    }
                    1 => {
                        let state = irqentry_enter_by_value::<MockPlatform>(&mut frame.regs);
                        irqentry_exit_by_value::<MockPlatform>(&mut frame.regs, state);
                    }
                    _ => {
                        let mut state = IrqentryState::default();
                        irqentry_enter_by_reference::<MockPlatform>(&mut frame.regs, &mut state);
                        irqentry_exit_by_reference::<MockPlatform>(&mut frame.regs, &state);
                    }
                }
            }
            assert_eq!(cpu(|c| (c.preemptions, c.arch_register)), (1, 3), "variant {variant}");
        }
    }

    #[test]
    fn nmi_entry_keeps_the_stubs_vector() {
        reset_cpu(true, true, 3);
        let mut frame = frame_with_interrupts(true);
        // SAFETY: frame.regs is inside a whole ExtendedPtRegs.
        unsafe { irqentry_nmi_enter::<MockPlatform>(&mut frame.regs) };
        assert_eq!(frame.generic.vector, 0xdead);
        assert_eq!((frame.generic.exit_rcu, frame.generic.lockdep_hardirqs_enabled), (0, 1));
        // SAFETY: as above.
        unsafe { irqentry_nmi_exit::<MockPlatform>(&mut frame.regs) };
    }

    #[test]
    fn nmi_exit_never_preempts() {
        reset_cpu(true, true, 3);
        set_preemption(0, true);
        let mut frame = frame_with_interrupts(true);
        // SAFETY: frame.regs is inside a whole ExtendedPtRegs.
        unsafe { irqentry_nmi_enter::<MockPlatform>(&mut frame.regs) };
        // SAFETY: as above.
        unsafe { irqentry_nmi_exit::<MockPlatform>(&mut frame.regs) };
        assert_eq!(cpu(|c| c.preemptions), 0);
    }

    #[test]
    fn enter_from_idle_records_exit_rcu_and_exit_undoes_it() {
        reset_cpu(false, true, 7);
        let mut frame = garbage_frame();
        // SAFETY: frame.regs is inside a whole ExtendedPtRegs.
        unsafe { irqentry_enter::<MockPlatform>(&mut frame.regs) };
        assert_eq!(frame.generic.exit_rcu, 1);
        assert_eq!(
            frame.generic.vector, 0xdead,
            "the generic entry keeps the vector the stub recorded"
        );
        assert!(cpu(|c| c.rcu_watching));
        // SAFETY: as above.
        unsafe { irqentry_exit::<MockPlatform>(&mut frame.regs) };
        assert!(!cpu(|c| c.rcu_watching));
        assert_eq!(
            cpu(|c| c.calls.clone()),
            ["arch_enter", "rcu_irq_enter", "rcu_irq_exit", "arch_exit"]
        );
    }

    #[test]
    fn enter_while_watching_leaves_rcu_alone() {
        reset_cpu(true, false, 7);
        let mut frame = garbage_frame();
        // SAFETY: frame.regs is inside a whole ExtendedPtRegs.
        unsafe { irqentry_enter::<MockPlatform>(&mut frame.regs) };
        assert_eq!(frame.generic.exit_rcu, 0);
        // SAFETY: as above.
        unsafe { irqentry_exit::<MockPlatform>(&mut frame.regs) };
        assert!(cpu(|c| c.rcu_watching));
        assert_eq!(cpu(|c| c.calls.clone()), ["arch_enter", "arch_exit"]);
    }

    #[test]
    fn arch_state_is_saved_defaulted_and_restored_with_handler_edits() {
        reset_cpu(true, false, 0x1234);
        let mut frame = garbage_frame();
        // SAFETY: frame.regs is inside a whole ExtendedPtRegs.
        unsafe { irqentry_enter::<MockPlatform>(&mut frame.regs) };
        assert_eq!(frame.arch.pks, 0x1234);
        assert_eq!(cpu(|c| c.arch_register), 0x5555_5554);
        // A handler editing the saved value.
        frame.arch.pks = 0x4321;
        // SAFETY: as above.
        unsafe { irqentry_exit::<MockPlatform>(&mut frame.regs) };
        assert_eq!(cpu(|c| c.arch_register), 0x4321);
    }

    #[test]
    fn by_value_and_by_reference_do_what_the_extension_does() {
        for by_value in [true, false] {
            reset_cpu(false, true, 0x1234);
            let mut frame = garbage_frame();
            let mut state = IrqentryState::default();
            // SAFETY: frame.regs is a valid PtRegs (these variants never
            // look below it).
            unsafe {
                if by_value {
                    state = irqentry_enter_by_value::<MockPlatform>(&mut frame.regs);
                } else {
                    irqentry_enter_by_reference::<MockPlatform>(&mut frame.regs, &mut state);
                }
            }
            assert_eq!(state.generic.exit_rcu, 1);
            assert_eq!(state.arch.pks, 0x1234);
            assert!(cpu(|c| c.rcu_watching) && !cpu(|c| c.hardirqs_enabled));
            // SAFETY: as above.
            unsafe {
                if by_value {
                    irqentry_exit_by_value::<MockPlatform>(&mut frame.regs, state);
                } else {
                    irqentry_exit_by_reference::<MockPlatform>(&mut frame.regs, &state);
                }
            }
            assert!(!cpu(|c| c.rcu_watching));
            assert_eq!(cpu(|c| c.arch_register), 0x1234);
            // The frame below PtRegs was never touched.
            assert_eq!(frame.generic.exit_rcu, 0xa5);
        }
    }

    proptest! {
        /// Any nesting of entries (each with its own frame and its own
        /// interrupted state) unwinds back to exactly the state before it.
        #[test]
        fn nested_enter_exit_round_trips(
            levels in proptest::collection::vec((any::<bool>(), any::<u32>()), 1..12),
            start_watching in any::<bool>(),
            start_hardirqs in any::<bool>(),
        ) {
            reset_cpu(start_watching, start_hardirqs, 0x10);
            let mut frames: Vec<ExtendedPtRegs> = levels.iter().map(|_| garbage_frame()).collect();
            let mut before = Vec::new();
            for (frame, &(is_nmi, arch_value)) in frames.iter_mut().zip(&levels) {
                CPU.with(|c| c.borrow_mut().arch_register = arch_value);
                // The CPU pushes the interrupted IF, which the lockdep model
                // mirrors (an NMI may hit where they differ; it doesn't care).
                if cpu(|c| c.hardirqs_enabled) {
                    frame.regs.flags |= extregs_regs::X86_EFLAGS_IF;
                }
                before.push(cpu(|c| (c.rcu_watching, c.hardirqs_enabled, c.arch_register)));
                // SAFETY: frame.regs is inside a whole ExtendedPtRegs.
                unsafe {
                    if is_nmi {
                        irqentry_nmi_enter::<MockPlatform>(&mut frame.regs);
                    } else {
                        irqentry_enter::<MockPlatform>(&mut frame.regs);
                    }
                }
                prop_assert!(cpu(|c| c.rcu_watching));
                prop_assert_eq!(frame.arch.pks, arch_value);
                prop_assert!(!cpu(|c| c.hardirqs_enabled), "hardirqs on inside a handler");
            }
            for ((frame, &(is_nmi, _)), expected) in
                frames.iter_mut().zip(&levels).zip(before).rev()
            {
                // SAFETY: as above.
                unsafe {
                    if is_nmi {
                        irqentry_nmi_exit::<MockPlatform>(&mut frame.regs);
                    } else {
                        irqentry_exit::<MockPlatform>(&mut frame.regs);
                    }
                }
                prop_assert_eq!(cpu(|c| (c.rcu_watching, c.hardirqs_enabled, c.arch_register)), expected);
            }
        }

        /// Arbitrary interleavings of nested entries and exits on one
        /// simulated stack: each entry carves a frame (PtRegs with the
        /// extension below it, like the stubs) out of a byte buffer below its
        /// parent, with a random gap for the handler's own locals. Checks the
        /// accessor arithmetic (the extension is exactly GENERIC_PTREGS_SIZE
        /// below PtRegs and never touches the parent's frame), that every exit
        /// pairs with the innermost open entry, and that each exit restores
        /// exactly the state its entry saw.
        #[test]
        fn nested_events_on_a_simulated_stack(
            ops in proptest::collection::vec(
                (any::<bool>(), any::<bool>(), any::<u32>(), 0usize..8, any::<u64>(), any::<bool>()),
                1..64,
            ),
            start_watching in any::<bool>(),
        ) {
            const STACK_BYTES: usize = 64 * 1024;
            // u128 words: the buffer is 16-byte aligned, as a kernel stack is.
            let mut stack = std::vec![0u128; STACK_BYTES / 16];
            let base = stack.as_mut_ptr() as usize;
            let frame_size = core::mem::size_of::<ExtendedPtRegs>();
            reset_cpu(start_watching, false, 0x10);
            // Open entries: (frame address, is_nmi, state before, GPR pattern).
            type OpenEntry = (usize, bool, (bool, bool, u32), u64);
            let mut open: Vec<OpenEntry> = Vec::new();
            let mut sp = base + STACK_BYTES;
            for (exit_now, is_nmi, arch_value, gap_words, pattern, hardirqs) in ops {
                if exit_now && !open.is_empty() {
                    let (address, was_nmi, before, pattern) = open.pop().unwrap();
                    // SAFETY: `address` is a frame carved out of `stack` below.
                    let frame = unsafe { &mut *(address as *mut ExtendedPtRegs) };
                    // Nested frames never wrote into this one's PtRegs.
                    prop_assert_eq!(frame.regs.r15, pattern);
                    prop_assert_eq!(frame.regs.di, !pattern);
                    // SAFETY: as above.
                    unsafe {
                        if was_nmi {
                            irqentry_nmi_exit::<MockPlatform>(&mut frame.regs);
                        } else {
                            irqentry_exit::<MockPlatform>(&mut frame.regs);
                        }
                    }
                    prop_assert_eq!(cpu(|c| (c.rcu_watching, c.hardirqs_enabled, c.arch_register)), before);
                    sp = open.last().map_or(base + STACK_BYTES, |(parent, ..)| *parent);
                    continue;
                }
                // Carve a frame below the current one (16-byte aligned, as the
                // CPU aligns RSP and the stubs keep it), after a gap.
                let top = (sp - 16 * gap_words) & !15;
                let address = top - frame_size;
                prop_assume!(address >= base);
                CPU.with(|c| {
                    let mut c = c.borrow_mut();
                    c.arch_register = arch_value;
                    // The interrupted code may have enabled interrupts (an
                    // NMI may even hit where lockdep and IF disagree).
                    c.hardirqs_enabled = hardirqs;
                });
                let before = cpu(|c| (c.rcu_watching, c.hardirqs_enabled, c.arch_register));
                // SAFETY: [address, top) lies inside `stack`, aligned for
                // ExtendedPtRegs, and no live reference points into it.
                let frame = unsafe { &mut *(address as *mut ExtendedPtRegs) };
                *frame = garbage_frame();
                frame.regs.r15 = pattern;
                frame.regs.di = !pattern;
                if before.1 {
                    frame.regs.flags |= extregs_regs::X86_EFLAGS_IF;
                }
                let regs_address = &frame.regs as *const PtRegs as usize;
                // SAFETY: frame.regs is inside a whole ExtendedPtRegs.
                let found = unsafe { ExtendedPtRegs::from_regs(&mut frame.regs) } as *mut ExtendedPtRegs as usize;
                prop_assert_eq!(regs_address - found, extregs_regs::GENERIC_PTREGS_SIZE);
                prop_assert_eq!(found, address);
                if let Some((parent, ..)) = open.last() {
                    prop_assert!(address + frame_size <= *parent, "frame overlaps its parent");
                }
                // SAFETY: as above.
                unsafe {
                    if is_nmi {
                        irqentry_nmi_enter::<MockPlatform>(&mut frame.regs);
                    } else {
                        irqentry_enter::<MockPlatform>(&mut frame.regs);
                    }
                }
                prop_assert!(cpu(|c| c.rcu_watching));
                prop_assert_eq!(frame.arch.pks, arch_value);
                open.push((address, is_nmi, before, pattern));
                sp = address;
            }
            // Unwind whatever is still open.
            while let Some((address, was_nmi, before, _)) = open.pop() {
                // SAFETY: as above.
                let frame = unsafe { &mut *(address as *mut ExtendedPtRegs) };
                // SAFETY: as above.
                unsafe {
                    if was_nmi {
                        irqentry_nmi_exit::<MockPlatform>(&mut frame.regs);
                    } else {
                        irqentry_exit::<MockPlatform>(&mut frame.regs);
                    }
                }
                prop_assert_eq!(cpu(|c| (c.rcu_watching, c.hardirqs_enabled, c.arch_register)), before);
            }
            prop_assert_eq!(cpu(|c| c.rcu_watching), start_watching);
        }
    }
}
