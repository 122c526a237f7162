//! Picking the next task and switching to it, on any CPU, with Linux's
//! `on_cpu` rule ([`finish_task_switch`]: a task goes back on the run queue
//! only once its switch-out has saved its RSP), the wakeups that must not
//! break it, the kick that sends a queued task to an idle CPU, and the
//! selftests' hold on one switch.

use super::*;

/// Makes a sleeping or waiting task runnable. Interrupts off.
pub(super) fn wake(slot: usize) {
    let queued = {
        let mut queue = run_queue();
        matches!(TASKS[slot].state(), TaskState::Sleeping | TaskState::Waiting)
            && make_runnable(&mut queue, slot)
    };
    if queued {
        kick(slot);
    }
}

/// Marks a blocked task runnable and queues it, unless a CPU is still
/// switching away from it: that switch's [`finish_task_switch`] queues it
/// once its RSP is saved (or, if it has not switched yet, its `schedule`
/// finds it runnable and keeps it). True if queued here.
pub(super) fn make_runnable(queue: &mut RunQueue, slot: usize) -> bool {
    let task = &TASKS[slot];
    task.set_state(TaskState::Runnable);
    if task.on_cpu.load(Ordering::Acquire) {
        return false;
    }
    queue.push(slot);
    true
}

/// A task was queued: sends a reschedule IPI to an idle CPU it may run
/// on (or marks this CPU, if it is idle and allowed). A CPU that is busy
/// takes the task at its next tick or scheduling point. Interrupts off.
pub(super) fn kick(slot: usize) {
    let this = percpu::this_cpu();
    for (cpu, apic_id) in smp::online_cpus() {
        if !allowed_on(slot, cpu)
            || CURRENT.of(cpu).load(Ordering::Relaxed) != task::idle_slot_of(cpu)
        {
            continue;
        }
        NEED_RESCHED.of(cpu).store(true, Ordering::Relaxed);
        if cpu != this {
            apic::send_ipi(apic_id, apic::RESCHEDULE_VECTOR);
        }
        return;
    }
}

/// Linux's `finish_task_switch`: runs first thing in the task a switch
/// has just switched to, on its own stack, interrupts off. The task left
/// has had its RSP saved by now: its `on_cpu` clears (release order,
/// after that save) and, if it is still runnable, it goes back on the run
/// queue, where another CPU may pick it.
pub(super) fn finish_task_switch() {
    let from = SWITCHING_FROM.this().swap(0, Ordering::Relaxed);
    assert!(from != 0, "finish_task_switch without a switch in flight");
    let from = from - 1;
    let from_task = &TASKS[from];
    let queued = {
        let mut queue = run_queue();
        from_task.on_cpu.store(false, Ordering::Release);
        let requeue = !task::is_idle_slot(from) && from_task.state() == TaskState::Runnable;
        if requeue {
            queue.push(from);
        }
        requeue
    };
    if queued {
        kick(from);
    }
}

/// Why [`schedule`] runs: the running task blocks or yields, or it is
/// preempted (counted per CPU).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum SwitchKind {
    Blocking,
    Preemption,
}

/// Picks the next task and switches to it; returns (true) when this task
/// runs again, possibly on another CPU, or at once (false) when it stays on
/// the CPU. Interrupts must be off.
pub(super) fn schedule(kind: SwitchKind) -> bool {
    let cpu = percpu::this_cpu();
    let prev = CURRENT.this().load(Ordering::Relaxed);
    let prev_task = &TASKS[prev];
    let prev_is_idle = task::is_idle_slot(prev);
    // Linux's "scheduling while atomic": no switch inside a
    // preempt_disable section, an interrupt handler or an NMI.
    let expected_count = if prev_is_idle { IDLE_PREEMPT_COUNT } else { 0 };
    let count = prev_task.preempt_count.load(Ordering::Relaxed);
    if count != expected_count {
        panic!(
            "scheduling while atomic: task {} ({}) has preempt count {count:#x}",
            prev_task.id.load(Ordering::Relaxed),
            prev_task.name()
        );
    }
    let mut came_from = NO_CPU;
    let next = {
        let mut queue = run_queue();
        // A task that was about to block may have been woken already (by
        // another CPU, or an interrupt): it is still runnable. One whose
        // affinity no longer allows this CPU must go.
        let prev_runnable = !prev_is_idle
            && matches!(prev_task.state(), TaskState::Running | TaskState::Runnable)
            && allowed_on(prev, cpu);
        let taken = queue.take_first_allowed(cpu);
        // Counted after the look at the queue, under the lock (the
        // half-switched-task selftest's proof that this CPU looked).
        SCHEDULE_CALLS.this().fetch_add(1, Ordering::Relaxed);
        let next = match taken {
            Some(next) => next,
            None if prev_runnable => prev,
            None => task::idle_slot_of(cpu),
        };
        if next == prev {
            prev_task.set_state(TaskState::Running);
        } else {
            if prev_is_idle || matches!(prev_task.state(), TaskState::Running) {
                // Queued by finish_task_switch once the switch has saved
                // its RSP (never before: another CPU would pick it up).
                prev_task.set_state(TaskState::Runnable);
            }
            came_from = claim(next, cpu);
        }
        next
    };
    NEED_RESCHED.this().store(false, Ordering::Relaxed);
    if next == prev {
        return false;
    }
    if kind == SwitchKind::Preemption {
        CPU_PREEMPTIONS.this().fetch_add(1, Ordering::Relaxed);
    }
    switch_to(prev, next, came_from);
    true
}

/// This CPU takes `next` (scheduler lock held). A task whose `on_cpu` is
/// still set is being switched out by some CPU that has not saved its RSP
/// yet: running it would resume it on a stale stack pointer.
/// Returns the CPU the task ran on before (`NO_CPU` for a new task).
pub(super) fn claim(next: usize, cpu: usize) -> u32 {
    let next_task = &TASKS[next];
    if next_task.on_cpu.load(Ordering::Acquire) {
        panic!(
            "CPU {cpu} picked task {} ({}) while CPU {} has not finished switching it out",
            next_task.id.load(Ordering::Relaxed),
            next_task.name(),
            next_task.last_cpu.load(Ordering::Relaxed)
        );
    }
    next_task.on_cpu.store(true, Ordering::Relaxed);
    next_task.set_state(TaskState::Running);
    // Under the lock, with on_cpu: whoever sees the task on a CPU sees
    // which one (set_affinity's IPI goes there).
    next_task.ran_on.fetch_or(1 << cpu, Ordering::Relaxed);
    next_task.last_cpu.swap(cpu as u32, Ordering::Relaxed)
}

/// A selftest's hold on one switch (see [`hold_switch_out_of`]): the task
/// slot plus one whose next switch-out waits, before its RSP is saved,
/// until another CPU has run `schedule`.
static HOLD_SWITCH_OF: AtomicUsize = AtomicUsize::new(0);

static HOLD_SWITCH_RESULT: AtomicU8 = AtomicU8::new(HOLD_PENDING);

const HOLD_PENDING: u8 = 0;

const HOLD_OTHER_CPU_SCHEDULED: u8 = 1;

const HOLD_TIMED_OUT: u8 = 2;

/// How long a held switch waits for the other CPU (a vCPU of a loaded
/// host may not run for a while).
const HOLD_TIMEOUT_MS: u64 = 5000;

/// Makes the next switch away from `handle`'s task on CPU `holder_cpu`
/// stop halfway, before the switch saves its RSP, until CPU `other_cpu`
/// has run [`schedule`] (it is sent a reschedule IPI) or
/// [`HOLD_TIMEOUT_MS`] have passed: the window in which a scheduler that queued the task too early
/// would let `other_cpu` run it. [`held_switch_result`] then says which.
pub fn hold_switch_out_of(handle: TaskHandle, holder_cpu: usize, other_cpu: usize) {
    HOLD_HOLDER_CPU.store(holder_cpu, Ordering::Relaxed);
    HOLD_OTHER_CPU.store(other_cpu, Ordering::Relaxed);
    HOLD_SWITCH_RESULT.store(HOLD_PENDING, Ordering::Relaxed);
    HOLD_SWITCH_OF.store(handle.slot + 1, Ordering::Release);
}

static HOLD_HOLDER_CPU: AtomicUsize = AtomicUsize::new(0);

static HOLD_OTHER_CPU: AtomicUsize = AtomicUsize::new(0);

/// Drops a hold that has not happened (so it can't catch a later task in
/// the same slot).
pub fn cancel_switch_hold() {
    HOLD_SWITCH_OF.store(0, Ordering::Release);
}

/// What the held switch saw: `Some(true)` if the other CPU scheduled
/// while the switch was held, `Some(false)` if it timed out, None if the
/// switch has not happened.
pub fn held_switch_result() -> Option<bool> {
    match HOLD_SWITCH_RESULT.load(Ordering::Acquire) {
        HOLD_OTHER_CPU_SCHEDULED => Some(true),
        HOLD_TIMED_OUT => Some(false),
        _ => None,
    }
}

/// The hold itself, in `switch_to` between the state changes and the
/// context switch.
pub(super) fn hold_switch_if_asked(prev: usize) {
    if HOLD_SWITCH_OF.load(Ordering::Acquire) != prev + 1
        || HOLD_HOLDER_CPU.load(Ordering::Relaxed) != percpu::this_cpu()
    {
        return;
    }
    HOLD_SWITCH_OF.store(0, Ordering::Relaxed);
    let other = HOLD_OTHER_CPU.load(Ordering::Relaxed);
    let before = SCHEDULE_CALLS.of(other).load(Ordering::Relaxed);
    NEED_RESCHED.of(other).store(true, Ordering::Relaxed);
    apic::send_ipi(crate::arch::gdt::apic_id_of(other), apic::RESCHEDULE_VECTOR);
    let deadline = tsc() + apic::tsc_ticks_per_ms() * HOLD_TIMEOUT_MS;
    let result = loop {
        // Each call counts right after its look at the queue, under the
        // lock, so a count past `before` is a look during the hold.
        if SCHEDULE_CALLS.of(other).load(Ordering::Relaxed) > before {
            break HOLD_OTHER_CPU_SCHEDULED;
        }
        if tsc() > deadline {
            break HOLD_TIMED_OUT;
        }
        core::hint::spin_loop();
    };
    HOLD_SWITCH_RESULT.store(result, Ordering::Release);
}

pub(super) fn tsc() -> u64 {
    // SAFETY: RDTSC reads a counter; no memory is touched.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Switches from `prev` (running) to `next` (claimed by this CPU, after it
/// last ran on `came_from`). Returns when `prev` is switched back in, on
/// whichever CPU picks it.
pub(super) fn switch_to(prev: usize, next: usize, came_from: u32) {
    let cpu = percpu::this_cpu();
    let (prev_task, next_task) = (&TASKS[prev], &TASKS[next]);
    // Never from an IST stack (or any stack not the task's own).
    assert_on_own_stack("switch_to, leaving");
    // Nothing may switch with the models claiming otherwise: IF is off, so
    // lockdep must say hardirqs are off, and RCU must watch (only the idle
    // loop's `hlt` doesn't, and it is over before idle switches).
    if irqflags::lockdep_hardirqs_enabled() || !irqflags::rcu_is_watching() {
        MODEL_ERRORS.fetch_add(1, Ordering::Relaxed);
        if let Some(observe) = super::MODEL_ERROR_OBSERVER.get() {
            observe();
        }
    }
    if pks::enabled() {
        prev_task.switched_out_pkrs.store(pks::cached_pkrs(), Ordering::Relaxed);
        // SAFETY: PKS is on; every value a task runs with keeps key 0 (all
        // kernel memory, the stacks included) read/write.
        unsafe { pks::update_pkrs(next_task.switched_out_pkrs.load(Ordering::Relaxed)) };
    }
    // SAFETY: `next` is switched out and this CPU claimed it after an acquire load found its
    // `on_cpu` clear, which the CPU that switched it out set with release order after saving its
    // RSP: only this switch reads its ThreadContext now, and nothing writes it meanwhile.
    let next_sp = unsafe { (*next_task.thread.get()).sp };
    if !next_task.stack().contains(&next_sp) {
        panic!(
            "switch to task {} ({}): its saved RSP {next_sp:#x} is outside its stack {:#x?}",
            next_task.id.load(Ordering::Relaxed),
            next_task.name(),
            next_task.stack()
        );
    }
    // SAFETY: interrupts are off and `next` runs next: its user frames must land at the top of its
    // own kernel stack (a stale RSP0 would build them on the previous task's). An NMI before the
    // switch comes from kernel mode and uses its IST, not RSP0.
    unsafe { crate::arch::gdt::set_kernel_stack_top(next_task.stack_top.load(Ordering::Relaxed)) };
    user_state::switch(prev, next);
    crate::arch::gdt::load_user_ports(next_task.user_ports.load(Ordering::Relaxed));
    if came_from != NO_CPU && came_from as usize != cpu {
        MIGRATIONS.fetch_add(1, Ordering::Relaxed);
    }
    SWITCHING_FROM.this().store(prev + 1, Ordering::Relaxed);
    CURRENT.this().store(next, Ordering::Relaxed);
    CONTEXT_SWITCHES.fetch_add(1, Ordering::Relaxed);
    CPU_CONTEXT_SWITCHES.this().fetch_add(1, Ordering::Relaxed);
    hold_switch_if_asked(prev);
    // SAFETY: interrupts off; `prev` runs, so its ThreadContext is ours; `next` is claimed by this
    // CPU, so its `sp` points at the InactiveTaskFrame its last switch (or prepare_new_task) left
    // on its own stack, which nothing else uses. Both pointers come from the TASKS static.
    unsafe { extregs_context_switch(prev_task.thread.get(), next_task.thread.get()) };
    // Back in `prev`, on its own stack (on the CPU that picked it): the
    // switch into it is complete, and the task this CPU left can be queued.
    finish_task_switch();
    assert_on_own_stack("switch_to");
}
