//! The scheduler tick: every CPU's LAPIC timer ends time slices, only the
//! boot CPU's advances the tick count and wakes sleepers; the other CPUs
//! start and stop theirs at a reschedule IPI.

use super::*;

/// The scheduler tick, from the LAPIC timer's IRQ handler: wakes sleepers
/// whose tick has come and asks for a reschedule when another task is
/// runnable (a time slice is one tick).
pub fn scheduler_tick() {
    let cpu = percpu::this_cpu();
    // Only the boot CPU's tick is the clock (and wakes sleepers); every
    // CPU's tick ends time slices.
    if cpu == 0 {
        let now = TICKS.fetch_add(1, Ordering::Relaxed) + 1;
        if !INITIALISED.load(Ordering::Acquire) {
            return;
        }
        for (slot, task) in TASKS.iter().enumerate() {
            if task.state() == TaskState::Sleeping && task.wake_tick.load(Ordering::Relaxed) <= now
            {
                wake(slot);
            }
        }
    }
    if !INITIALISED.load(Ordering::Acquire) {
        return;
    }
    let current = CURRENT.this().load(Ordering::Relaxed);
    if run_queue().has_work_for(cpu) || !allowed_on(current, cpu) {
        NEED_RESCHED.this().store(true, Ordering::Relaxed);
    }
}

/// A reschedule IPI arrived (Linux's `scheduler_ipi`): look at the run
/// queue at this interrupt's exit, and start or stop this CPU's tick to
/// match the boot CPU's.
pub fn reschedule_ipi() {
    NEED_RESCHED.this().store(true, Ordering::Relaxed);
    sync_local_tick();
}

/// Starts or stops this CPU's LAPIC tick to match [`TICK_RUNNING`].
pub(super) fn sync_local_tick() {
    let wanted = TICK_RUNNING.load(Ordering::Relaxed);
    if TICK_ARMED.this().swap(wanted, Ordering::Relaxed) == wanted {
        return;
    }
    if wanted {
        apic::start_timer_us(apic::TimerMode::Periodic, 1_000_000 / TICK_HZ);
    } else {
        apic::stop_timer();
    }
}

/// Tells every other online CPU to match [`TICK_RUNNING`].
pub(super) fn sync_other_ticks() {
    let this = percpu::this_cpu();
    for (cpu, apic_id) in smp::online_cpus() {
        if cpu != this {
            apic::send_ipi(apic_id, apic::RESCHEDULE_VECTOR);
        }
    }
}

/// Starts the periodic tick at [`TICK_HZ`] on every online CPU (the
/// others start theirs at the reschedule IPI this sends).
pub fn start_tick() {
    TICK_RUNNING.store(true, Ordering::Relaxed);
    with_irqs_off(|| {
        sync_local_tick();
        sync_other_ticks();
    });
}

/// Stops the tick on every CPU.
pub fn stop_tick() {
    TICK_RUNNING.store(false, Ordering::Relaxed);
    with_irqs_off(|| {
        sync_local_tick();
        sync_other_ticks();
    });
    if let Some(sleeper) = TASKS.iter().find(|task| task.state() == TaskState::Sleeping) {
        panic!(
            "stop_tick with task {} ({}) asleep: it would never wake",
            sleeper.id.load(Ordering::Relaxed),
            sleeper.name()
        );
    }
}

/// The scheduler ticks since boot.
pub fn ticks() -> u64 {
    TICKS.load(Ordering::Relaxed)
}

/// Is the scheduler tick running?
pub fn tick_running() -> bool {
    TICK_RUNNING.load(Ordering::Relaxed)
}
