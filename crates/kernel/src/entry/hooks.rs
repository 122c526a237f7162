//! The hooks the modes install into the entry path: the trap hook (offered
//! every exception nothing else claimed) and the event hook (offered every
//! event first: the fuzzer's). Each slot is per CPU: a hook is offered the
//! events of the CPU that installed it, never another CPU's.

use crate::arch::hook_slot::HookSlot;
use crate::arch::idt::PAGE_FAULT_VECTOR;
use crate::arch::percpu::PerCpu;
use extregs_regs::PtRegs;
use extregs_regs::NR_CPUS;

/// A handler that may claim an exception: returns true when it handled it
/// (and may edit the frame on the way).
pub type TrapHook = fn(regs: &mut PtRegs, vector: u8) -> bool;

/// The installed trap hook. An atomic slot rather than a lock, so a trap
/// can read it whatever the trapped code held.
static TRAP_HOOK: PerCpu<HookSlot<TrapHook>> = PerCpu::new([const { HookSlot::empty() }; NR_CPUS]);

/// A hook offered *every* event first (IRQs and NMIs included, a kernel #PF
/// aside, which goes to the per-pkey PKS handlers): the fuzzer's.
static EVENT_HOOK: PerCpu<HookSlot<TrapHook>> = PerCpu::new([const { HookSlot::empty() }; NR_CPUS]);

/// Runs `body` with `hook` offered every exception, then removes it.
pub fn with_trap_hook<T>(hook: TrapHook, body: impl FnOnce() -> T) -> T {
    TRAP_HOOK.this().with(hook, body)
}

/// Runs `body` with `hook` offered every event before anything else.
pub fn with_event_hook<T>(hook: TrapHook, body: impl FnOnce() -> T) -> T {
    EVENT_HOOK.this().with(hook, body)
}

/// Runs `body` with `hook` offered every event before anything else on
/// every CPU (for tasks that migrate: `mode=tasks`'s workers), then
/// removes it from each.
pub fn with_event_hook_on_every_cpu<T>(hook: TrapHook, body: impl FnOnce() -> T) -> T {
    for cpu in 0..extregs_regs::NR_CPUS {
        EVENT_HOOK.of(cpu).set(hook);
    }
    let result = body();
    for cpu in 0..extregs_regs::NR_CPUS {
        EVENT_HOOK.of(cpu).clear();
    }
    result
}

/// Is an event hook installed? (The frame checker leaves a nested NMI to
/// the fuzzer's own report when it is.)
pub fn event_hook_installed() -> bool {
    EVENT_HOOK.this().is_set()
}

/// Offers the event to the event hook; true when it claimed it.
pub fn event_hook_claims(regs: &mut PtRegs, vector: u8) -> bool {
    // A kernel #PF goes to the per-pkey PKS handlers; one from user mode is
    // offered like every other event.
    if vector == PAGE_FAULT_VECTOR && !regs.user_mode() {
        return false;
    }
    EVENT_HOOK.this().get().is_some_and(|hook| hook(regs, vector))
}

/// Signal delivery, installed by the layer that owns the signal state (the
/// Linux personality): the exit-to-user loop calls it with the user frame
/// when the task's `signal_pending` flag is set. One for all CPUs.
static SIGNAL_DELIVERY: HookSlot<fn(&mut PtRegs)> = HookSlot::empty();

/// Installs the signal delivery (once, before any task can have a signal
/// pending).
pub fn install_signal_delivery(deliver: fn(&mut PtRegs)) {
    SIGNAL_DELIVERY.set(deliver);
}

/// Delivers the running task's pending signals to `regs` (the exit-to-user
/// loop's `arch_do_signal`). A pending flag with no delivery installed is
/// a kernel bug.
pub fn deliver_signals(regs: &mut PtRegs) {
    let deliver =
        SIGNAL_DELIVERY.get().expect("a signal is pending, but no signal delivery is installed");
    deliver(regs);
}

/// Offers the exception to the trap hook; true when it claimed it.
pub fn trap_hook_claims(regs: &mut PtRegs, vector: u8) -> bool {
    TRAP_HOOK.this().get().is_some_and(|hook| hook(regs, vector))
}
