//! Selftests of tasks and preemption: a frame and its extension must
//! survive their task being switched out, and each task must get back its
//! own registers and PKRS.
//!
//! Each test runs as `init` (the selftest flow) with helper tasks it
//! spawns. A test stops its helpers and the tick before it checks anything,
//! so a failure never leaves a task running into the next test.

use super::{check, gpr_patterns, wait_until, Context, Outcome, EVENT_TIMEOUT_TSC};
use crate::arch::irqflags;
use crate::arch::pks::{self, KeyRights, PKRS_DEFAULT};
use crate::arch::{apic, gdt, idt};
use crate::entry::events;
use crate::entry::hooks;
use crate::sched::{self, TaskHandle};
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use extregs_regs::{ExtendedPtRegs, PtRegs};

use crate::arch::idt::NMI_VECTOR;
const INT3_VECTOR: u8 = 3;

/// Helper tasks stop when this is set.
static STOP: AtomicBool = AtomicBool::new(false);
/// What the spinning helper counted.
static SPINS: AtomicU64 = AtomicU64::new(0);

/// A helper that counts, with IF set, until [`STOP`].
fn spinner(_: usize) {
    while !STOP.load(Ordering::Relaxed) {
        SPINS.fetch_add(1, Ordering::Relaxed);
        core::hint::spin_loop();
    }
}

/// Spawns `entry`, or fails the test.
fn spawn(name: &str, entry: fn(usize)) -> Option<TaskHandle> {
    sched::spawn(format_args!("{name}"), entry, 0).ok()
}

/// Spawns a fresh [`spinner`] (its count at 0), or None.
fn start_spinner() -> Option<TaskHandle> {
    STOP.store(false, Ordering::Relaxed);
    SPINS.store(0, Ordering::Relaxed);
    spawn("st-spinner", spinner)
}

/// Stops the helpers and waits for `handle`'s exit, with IF set (the
/// helpers may need ticks to get the CPU), then stops the tick.
fn stop_and_wait(handle: TaskHandle) {
    STOP.store(true, Ordering::Relaxed);
    irqflags::local_irq_enable();
    sched::wait(handle);
    irqflags::local_irq_disable();
    sched::stop_tick();
}

/// A task spinning with IF set is preempted at a timer IRQ's exit, its
/// frame left on its own stack (check_frame counts any frame that is not),
/// and the other task runs.
pub fn preemption_on_irq_exit(_: &Context) -> Outcome {
    let Some(helper) = start_spinner() else {
        return Outcome::Fail;
    };
    let before = sched::counts();
    sched::start_tick();
    // init spins with IF set and never yields: only preemption can run
    // the helper.
    irqflags::local_irq_enable();
    let helper_ran = wait_until(|| SPINS.load(Ordering::Relaxed) > 0, EVENT_TIMEOUT_TSC);
    let back_after = wait_until(
        || sched::counts().irq_preemptions >= before.irq_preemptions + 4,
        EVENT_TIMEOUT_TSC,
    );
    irqflags::local_irq_disable();
    stop_and_wait(helper);
    let after = sched::counts();
    let preemptions = after.irq_preemptions - before.irq_preemptions;
    check!(helper_ran, "the helper never ran: init was not preempted");
    check!(back_after, "only {preemptions} preemptions");
    check!(
        after.model_errors == before.model_errors,
        "the RCU/lockdep model was wrong at a switch"
    );
    Outcome::Pass
}

/// `preempt_disable` keeps the helper off the CPU across many ticks that
/// ask for a reschedule; the `preempt_enable` switches at once.
pub fn preempt_disable_holds_off_preemption(_: &Context) -> Outcome {
    let Some(helper) = start_spinner() else {
        return Outcome::Fail;
    };
    let before = sched::counts();
    sched::start_tick();
    sched::preempt_disable();
    irqflags::local_irq_enable();
    let ticks_start = sched::ticks();
    let ticked = wait_until(
        || sched::ticks() >= ticks_start + 5 && sched::need_resched(),
        EVENT_TIMEOUT_TSC,
    );
    let spins_while_disabled = SPINS.load(Ordering::Relaxed);
    let preempted_while_disabled = sched::counts().irq_preemptions - before.irq_preemptions;
    sched::preempt_enable();
    // The enable switched to the helper, which runs until a tick gives the
    // CPU back. On a loaded host that tick may come before the helper's
    // first spin, so wait (bounded, interrupts on) for the helper to have
    // run at all; the switch at the enable is `enable_preemptions`.
    let enable_preemptions = sched::counts().enable_preemptions - before.enable_preemptions;
    wait_until(|| SPINS.load(Ordering::Relaxed) > 0, EVENT_TIMEOUT_TSC);
    let spins_after_enable = SPINS.load(Ordering::Relaxed);
    irqflags::local_irq_disable();
    stop_and_wait(helper);
    check!(preempted_while_disabled == 0, "{preempted_while_disabled} preemptions while disabled");
    check!(spins_while_disabled == 0, "the helper ran {spins_while_disabled} times meanwhile");
    check!(ticked, "no tick asked for a reschedule");
    check!(enable_preemptions == 1, "{enable_preemptions} switches at preempt_enable");
    check!(spins_after_enable > 0, "the helper never ran after preempt_enable");
    Outcome::Pass
}

/// What the PKRS helper saw: live PKRS when it started, and after init's
/// second switch to it.
static HELPER_PKRS_AT_START: AtomicU32 = AtomicU32::new(0);
static HELPER_PKRS_AFTER_SWITCH: AtomicU32 = AtomicU32::new(0);
static HELPER_OWN_PKRS: AtomicU32 = AtomicU32::new(0);
const INIT_KEY: u8 = 1;
const HELPER_KEY: u8 = 2;

fn pkrs_helper(_: usize) {
    HELPER_PKRS_AT_START.store(pks::read_pkrs(), Ordering::Relaxed);
    sched::pks_set_readwrite(HELPER_KEY);
    HELPER_OWN_PKRS.store(sched::current_pkrs(), Ordering::Relaxed);
    sched::yield_now();
    HELPER_PKRS_AFTER_SWITCH.store(pks::read_pkrs(), Ordering::Relaxed);
}

/// Two tasks with different PKRS yield to each other: each runs with its
/// own value after every switch, and the switch writes PKRS only when the
/// value changes.
pub fn pkrs_per_task_after_switch(_: &Context) -> Outcome {
    if !pks::enabled() {
        return Outcome::Skip("no PKS");
    }
    sched::pks_set_readwrite(INIT_KEY);
    let init_own = sched::current_pkrs();
    let Some(helper) = spawn("st-pkrs", pkrs_helper) else {
        return Outcome::Fail;
    };
    let wrmsrs_before = pks::wrmsr_count();
    sched::yield_now(); // to the helper, which sets its key and yields back
    let init_live_after_first = pks::read_pkrs();
    let wrmsrs_round_trip = pks::wrmsr_count() - wrmsrs_before;
    sched::yield_now(); // the helper records its PKRS and exits
    let init_live_after_second = pks::read_pkrs();
    sched::wait(helper);
    // Same value on both sides: no WRMSR.
    let wrmsrs_before_same = pks::wrmsr_count();
    sched::yield_now(); // nothing else is runnable: no switch at all
    let wrmsrs_same = pks::wrmsr_count() - wrmsrs_before_same;
    sched::pks_set_noaccess(INIT_KEY);
    let helper_own = HELPER_OWN_PKRS.load(Ordering::Relaxed);
    let helper_start = HELPER_PKRS_AT_START.load(Ordering::Relaxed);
    let helper_after = HELPER_PKRS_AFTER_SWITCH.load(Ordering::Relaxed);
    check!(
        init_own == pks::with_key_rights(PKRS_DEFAULT, INIT_KEY, KeyRights::ReadWrite),
        "{init_own:08x}"
    );
    check!(helper_start == PKRS_DEFAULT, "the new task started with PKRS {helper_start:08x}");
    check!(helper_after == helper_own, "helper: live {helper_after:08x}, own {helper_own:08x}");
    check!(
        init_live_after_first == init_own,
        "init: live {init_live_after_first:08x}, own {init_own:08x}"
    );
    check!(init_live_after_second == init_own, "init: live {init_live_after_second:08x}");
    // init -> helper (default), the helper's own grant, helper -> init.
    check!(wrmsrs_round_trip == 3, "{wrmsrs_round_trip} WRMSRs for one round trip");
    check!(wrmsrs_same == 0, "{wrmsrs_same} WRMSRs without a switch");
    Outcome::Pass
}

/// The preempted task's iterations and PKRS mismatches; the other task's
/// PKRS changes while the first is switched out.
static PREEMPTED_ITERATIONS: AtomicU64 = AtomicU64::new(0);
static PREEMPTED_MISMATCHES: AtomicU64 = AtomicU64::new(0);
static PREEMPTED_RESUMES_SEEN: AtomicU64 = AtomicU64::new(0);
static OTHER_CHANGES: AtomicU64 = AtomicU64::new(0);
static TIMER_FRAMES: AtomicU64 = AtomicU64::new(0);
static TIMER_FRAME_MISMATCHES: AtomicU64 = AtomicU64::new(0);

fn preempted_task(_: usize) {
    sched::pks_set_readwrite(INIT_KEY);
    let own = sched::current_pkrs();
    let mut last_changes = OTHER_CHANGES.load(Ordering::Relaxed);
    while !STOP.load(Ordering::Relaxed) {
        if pks::read_pkrs() != own {
            PREEMPTED_MISMATCHES.fetch_add(1, Ordering::Relaxed);
        }
        let changes = OTHER_CHANGES.load(Ordering::Relaxed);
        if changes != last_changes {
            // The other task ran (and changed its PKRS) since the last
            // check: this task was preempted and has resumed.
            PREEMPTED_RESUMES_SEEN.fetch_add(1, Ordering::Relaxed);
            last_changes = changes;
        }
        PREEMPTED_ITERATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

fn pkrs_changing_task(_: usize) {
    let mut key = HELPER_KEY;
    while !STOP.load(Ordering::Relaxed) {
        sched::pks_set_readwrite(key);
        OTHER_CHANGES.fetch_add(1, Ordering::Relaxed);
        sched::pks_set_noaccess(key);
        key = if key == 15 { HELPER_KEY } else { key + 1 };
    }
}

/// Every timer IRQ's frame saved the interrupted task's own PKRS.
fn timer_frame_hook(regs: &mut PtRegs, vector: u8) -> bool {
    if vector == apic::TIMER_VECTOR {
        TIMER_FRAMES.fetch_add(1, Ordering::Relaxed);
        // SAFETY: an event hook is offered only entry-stub frames.
        let saved = unsafe { ExtendedPtRegs::from_regs(regs) }.arch.pks;
        if saved != sched::current_pkrs() {
            TIMER_FRAME_MISMATCHES.fetch_add(1, Ordering::Relaxed);
        }
    }
    false
}

/// A task is preempted with its own PKRS saved in its frame's extension;
/// another task changes its own PKRS meanwhile; on resume the exit puts
/// back exactly the saved value.
pub fn pkrs_of_preempted_frame_restored_on_resume(_: &Context) -> Outcome {
    if !pks::enabled() {
        return Outcome::Skip("no PKS");
    }
    STOP.store(false, Ordering::Relaxed);
    for counter in [
        &PREEMPTED_ITERATIONS,
        &PREEMPTED_MISMATCHES,
        &PREEMPTED_RESUMES_SEEN,
        &OTHER_CHANGES,
        &TIMER_FRAMES,
        &TIMER_FRAME_MISMATCHES,
    ] {
        counter.store(0, Ordering::Relaxed);
    }
    let (Some(first), Some(second)) =
        (spawn("st-preempted", preempted_task), spawn("st-changer", pkrs_changing_task))
    else {
        return Outcome::Fail;
    };
    sched::start_tick();
    let resumed = hooks::with_event_hook(timer_frame_hook, || {
        irqflags::local_irq_enable();
        // init sleeps; the two tasks take turns at every tick.
        let resumed =
            wait_until(|| PREEMPTED_RESUMES_SEEN.load(Ordering::Relaxed) >= 5, EVENT_TIMEOUT_TSC);
        irqflags::local_irq_disable();
        STOP.store(true, Ordering::Relaxed);
        irqflags::local_irq_enable();
        sched::wait(first);
        sched::wait(second);
        irqflags::local_irq_disable();
        resumed
    });
    sched::stop_tick();
    let resumes = PREEMPTED_RESUMES_SEEN.load(Ordering::Relaxed);
    let mismatches = PREEMPTED_MISMATCHES.load(Ordering::Relaxed);
    let frames = TIMER_FRAMES.load(Ordering::Relaxed);
    let frame_mismatches = TIMER_FRAME_MISMATCHES.load(Ordering::Relaxed);
    println!("# {resumes} resumes after the other task changed its PKRS, {frames} timer frames");
    check!(resumed, "the task resumed only {resumes} times after the other ran");
    check!(mismatches == 0, "{mismatches} checks saw a PKRS other than the task's own");
    check!(
        frame_mismatches == 0,
        "{frame_mismatches} of {frames} timer frames saved a foreign PKRS"
    );
    Outcome::Pass
}

/// The stepping hook: every single-step trap (entering through the stub
/// the #DB gate points at) is one step; counts the steps inside
/// `context_switch`.
static STEPS: AtomicU64 = AtomicU64::new(0);
static STEPS_IN_SWITCH: AtomicU64 = AtomicU64::new(0);
static STEP_VECTOR: AtomicU64 = AtomicU64::new(0);
static SWITCH_TEXT: (AtomicU64, AtomicU64) = (AtomicU64::new(0), AtomicU64::new(0));

fn stepping_hook(regs: &mut PtRegs, vector: u8) -> bool {
    if u64::from(vector) != STEP_VECTOR.load(Ordering::Relaxed) {
        return false;
    }
    STEPS.fetch_add(1, Ordering::Relaxed);
    let (start, end) =
        (SWITCH_TEXT.0.load(Ordering::Relaxed), SWITCH_TEXT.1.load(Ordering::Relaxed));
    if (start..end).contains(&regs.ip) {
        STEPS_IN_SWITCH.fetch_add(1, Ordering::Relaxed);
    }
    true
}

/// A helper that yields straight back (once), then exits.
fn yield_back(_: usize) {
    sched::pks_set_readwrite(HELPER_KEY);
    sched::yield_now();
}

/// The real NMI entry, then an exception entry, at every instruction of a
/// switch to another task and back (single-stepped, with the #DB gate on
/// the NMI stub, then on the int3 stub): the callee-saved registers and
/// each task's PKRS survive, and every frame passes the entry checks. The
/// exception entry pushes its frame on whichever stack RSP is on, so its
/// pass also checks that a frame taken while a switch is in flight (the
/// next task already current, RSP still on the one being left) is on a
/// task stack the entry accepts.
pub fn nmi_during_context_switch(_: &Context) -> Outcome {
    let switch = extregs_entry_asm::extregs_context_switch as *const () as u64;
    let Some(symbol) = crate::debug::symbols::lookup(switch) else {
        return Outcome::Skip("no symbol table");
    };
    SWITCH_TEXT.0.store(switch - symbol.offset, Ordering::Relaxed);
    SWITCH_TEXT.1.store(switch - symbol.offset + symbol.size, Ordering::Relaxed);
    let gates = [
        ("NMI", idt::stub_address(NMI_VECTOR), Some(gdt::NMI_IST_INDEX), NMI_VECTOR),
        ("exception", idt::stub_address(INT3_VECTOR), None, INT3_VECTOR),
    ];
    for (name, stub, ist, vector) in gates {
        if pks::enabled() {
            sched::pks_set_readwrite(INIT_KEY);
        }
        let init_own = sched::current_pkrs();
        let Some(helper) = spawn("st-yield-back", yield_back) else {
            return Outcome::Fail;
        };
        STEPS.store(0, Ordering::Relaxed);
        STEPS_IN_SWITCH.store(0, Ordering::Relaxed);
        STEP_VECTOR.store(u64::from(vector), Ordering::Relaxed);
        let input = gpr_patterns();
        let mut output = PtRegs::default();
        let trampoline = crate::modes::trampolines::yield_trampoline();
        hooks::with_event_hook(stepping_hook, || {
            idt::with_debug_gate(stub, ist, || {
                // SAFETY: POPF sets TF; the stepping hook claims every trap after it (keeping
                // TF) and the second POPF clears it. The trampoline reads `input`, writes
                // `output`, restores every callee-saved register and follows the C ABI.
                unsafe {
                    core::arch::asm!(
                        "pushfq",
                        "orq ${tf}, (%rsp)",
                        "popfq",
                        "call *{trampoline}",
                        "pushfq",
                        "andq ${not_tf}, (%rsp)",
                        "popfq",
                        tf = const events::X86_EFLAGS_TF,
                        not_tf = const !events::X86_EFLAGS_TF,
                        trampoline = in(reg) trampoline,
                        in("rdi") &input as *const PtRegs,
                        in("rsi") &mut output as *mut PtRegs,
                        clobber_abi("C"),
                        options(att_syntax)
                    );
                }
            })
        });
        crate::entry::paranoid::reset_debug_status();
        let live_after = if pks::enabled() { pks::read_pkrs() } else { 0 };
        sched::yield_now(); // the helper exits
        sched::wait(helper);
        if pks::enabled() {
            sched::pks_set_noaccess(INIT_KEY);
        }
        let steps = STEPS.load(Ordering::Relaxed);
        let in_switch = STEPS_IN_SWITCH.load(Ordering::Relaxed);
        println!(
            "# {name} entry at each of {steps} instructions, {in_switch} of them in context_switch"
        );
        // Two switches (init -> helper, helper -> init), 17 instructions
        // each.
        check!(in_switch >= 34, "{name}: only {in_switch} steps inside context_switch");
        for (register, before, after) in [
            ("rbx", input.bx, output.bx),
            ("rbp", input.bp, output.bp),
            ("r12", input.r12, output.r12),
            ("r13", input.r13, output.r13),
            ("r14", input.r14, output.r14),
            ("r15", input.r15, output.r15),
        ] {
            check!(before == after, "{name}: {register}: {before:#x} before, {after:#x} after");
        }
        check!(
            live_after == init_own,
            "{name}: init's PKRS after the switch back: {live_after:08x}"
        );
    }
    Outcome::Pass
}

/// Timer frames from the idle task, and whether each recorded `exit_rcu`.
static IDLE_FRAMES: AtomicU64 = AtomicU64::new(0);
static IDLE_FRAMES_WITHOUT_EXIT_RCU: AtomicU64 = AtomicU64::new(0);

fn idle_frame_hook(regs: &mut PtRegs, vector: u8) -> bool {
    if vector == apic::TIMER_VECTOR && sched::current_pid() == 0 {
        IDLE_FRAMES.fetch_add(1, Ordering::Relaxed);
        // SAFETY: an event hook is offered only entry-stub frames.
        if unsafe { ExtendedPtRegs::from_regs(regs) }.generic.exit_rcu != 1 {
            IDLE_FRAMES_WITHOUT_EXIT_RCU.fetch_add(1, Ordering::Relaxed);
        }
    }
    false
}

/// init sleeps with nothing else runnable: the idle task runs, and each
/// tick interrupts it in `hlt` with RCU not watching, so every one of its
/// frames records `exit_rcu` (and never preempts it). The tick that wakes
/// init leaves idle to switch back to it: RCU watches and lockdep agrees
/// with IF afterwards, and no switch found the models wrong.
pub fn idle_task_irqs_record_exit_rcu(_: &Context) -> Outcome {
    IDLE_FRAMES.store(0, Ordering::Relaxed);
    IDLE_FRAMES_WITHOUT_EXIT_RCU.store(0, Ordering::Relaxed);
    let before = sched::counts();
    sched::start_tick();
    hooks::with_event_hook(idle_frame_hook, || {
        irqflags::local_irq_enable();
        sched::sleep_ticks(5);
        irqflags::local_irq_disable();
    });
    sched::stop_tick();
    let frames = IDLE_FRAMES.load(Ordering::Relaxed);
    let without = IDLE_FRAMES_WITHOUT_EXIT_RCU.load(Ordering::Relaxed);
    let after = sched::counts();
    check!(frames >= 4, "only {frames} timer frames from the idle task");
    check!(without == 0, "{without} of {frames} idle frames without exit_rcu");
    check!(irqflags::rcu_is_watching(), "RCU not watching after idle");
    check!(!irqflags::lockdep_hardirqs_enabled(), "lockdep believes IRQs are on with IF clear");
    check!(
        after.model_errors == before.model_errors,
        "the RCU/lockdep model was wrong at a switch"
    );
    check!(after.context_switches >= before.context_switches + 2, "init never went idle");
    Outcome::Pass
}
