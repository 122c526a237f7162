//! Host tests of the generic entry, on a mock platform.

extern crate std;

use super::*;
use crate::baseline::*;
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
    signal_pending: bool,
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
            ExitToUserWork {
                need_resched: c.need_resched,
                fatal_signal: c.fatal_signal,
                signal_pending: c.signal_pending,
            }
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
    fn arch_do_signal(regs: &mut PtRegs) {
        CPU.with(|c| {
            let mut c = c.borrow_mut();
            assert!(c.rcu_watching, "signal delivered with RCU not watching");
            c.signal_pending = false;
            c.calls.push("arch_do_signal");
        });
        // What a handler's entry does to the frame: the test reads it back.
        regs.ip = SIGNAL_HANDLER_IP;
    }
}

/// The RIP the mock's signal delivery sends the user frame to.
const SIGNAL_HANDLER_IP: u64 = 0x40_1234;

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
fn a_pending_signal_is_delivered_to_the_frame_on_the_way_out() {
    reset_cpu_in_user(0x5555_5554);
    set_preemption(0, true);
    let mut frame = user_frame();
    // SAFETY: a whole frame.
    unsafe { syscall_enter_from_user_mode::<MockPlatform>(&mut frame.regs) };
    CPU.with(|c| c.borrow_mut().signal_pending = true);
    // SAFETY: the same frame.
    unsafe { syscall_exit_to_user_mode::<MockPlatform>(&mut frame.regs) };
    assert_eq!(
        frame.regs.ip, SIGNAL_HANDLER_IP,
        "the delivery wrote the frame the exit returns to"
    );
    assert_eq!(
        cpu(|c| c.calls.clone()),
        [
            "arch_enter",
            "enter_from_user_mode",
            "schedule_before_user_return",
            "arch_do_signal",
            "exit_to_user_mode",
            "arch_exit"
        ],
        "Linux's order: schedule, then signals, then context tracking"
    );
    assert_eq!(
        cpu(|c| c.arch_register),
        0x5555_5554,
        "delivery leaves the extension's state alone"
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
        generic: GenericExtRegs { exit_rcu: 0xa5, lockdep_hardirqs_enabled: 0x5a, vector: 0xdead },
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
        // Every frame pointer is made from this one with `with_addr`, so it
        // carries the buffer's provenance (strict provenance: no integer is
        // ever turned back into a pointer).
        let stack_pointer = stack.as_mut_ptr().cast::<u8>();
        let base = stack_pointer.addr();
        let frame_at = |address: usize| stack_pointer.with_addr(address).cast::<ExtendedPtRegs>();
        let frame_size = core::mem::size_of::<ExtendedPtRegs>();
        reset_cpu(start_watching, false, 0x10);
        // Open entries: (frame address, is_nmi, state before, GPR pattern).
        type OpenEntry = (usize, bool, (bool, bool, u32), u64);
        let mut open: Vec<OpenEntry> = Vec::new();
        let mut sp = base + STACK_BYTES;
        for (exit_now, is_nmi, arch_value, gap_words, pattern, hardirqs) in ops {
            if exit_now && !open.is_empty() {
                let (address, was_nmi, before, pattern) = open.pop().unwrap();
                // SAFETY: `address` is a frame carved out of `stack` below, and `frame_at` gives
                // the pointer the buffer's provenance; no other reference into it is live.
                let frame = unsafe { &mut *frame_at(address) };
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
            let frame = unsafe { &mut *frame_at(address) };
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
            let frame = unsafe { &mut *frame_at(address) };
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
