//! The two designs the extension replaces, for the bench (`extregs
//! bench`) to compare on the same frame and the same platform: Linux
//! 5.10's `irqentry_enter()` returning its state by value, and Ira Weiny's
//! V3 passing it by reference into the caller's frame.

use crate::{enter_from_user_mode, exit_to_user_mode, irqentry_exit_cond_resched, EntryPlatform};
use extregs_regs::{ArchExtRegs, GenericExtRegs, PtRegs};

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
        exit_to_user_mode::<P>(regs, |_| state.arch);
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
        exit_to_user_mode::<P>(regs, |_| state.arch);
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
