//! The APs' side of the scheduler: each AP's boot flow becomes its idle
//! task `swapper/K` ([`become_ap_idle_task`]), which idles, runs the tasks
//! the shared run queue holds for it, and runs the work CPU 0 leaves it
//! ([`run_on_ap`]).

use super::task::{self, TaskState, TASKS};
use crate::arch::percpu::PerCpu;
use crate::arch::{apic, irqflags, pks};
use core::sync::atomic::Ordering;
use extregs_regs::NR_CPUS;

/// AP `cpu`'s boot stack, which stays its idle task's: the stack of its
/// task slot (the guard page below it was unmapped by [`init`]).
pub fn ap_idle_stack(cpu: usize) -> core::ops::Range<u64> {
    task::stack_range(task::ap_idle_slot(cpu))
}

/// Makes the boot flow of AP `cpu`, running on [`ap_idle_stack`], its idle
/// task `swapper/cpu` (PID 0, idle's preempt count, the default PKRS), the
/// current task of this CPU, with TSS.RSP0 at its stack's top. Runs on
/// that AP, interrupts off, after [`init`] on the boot CPU.
pub fn become_ap_idle_task(cpu: usize) {
    assert!(super::INITIALISED.load(Ordering::Acquire), "sched::init ran before the APs start");
    let slot = task::ap_idle_slot(cpu);
    let task = &TASKS[slot];
    let stack = task::stack_range(slot);
    assert!(stack.contains(&super::current_stack_pointer()), "AP {cpu} runs on its idle stack");
    task.id.store(0, Ordering::Relaxed);
    task.set_name(task::format_name(format_args!("swapper/{cpu}")));
    let default_pkrs = if pks::enabled() { pks::PKRS_DEFAULT } else { 0 };
    task.pkrs.store(default_pkrs, Ordering::Relaxed);
    task.switched_out_pkrs.store(default_pkrs, Ordering::Relaxed);
    task.preempt_count.store(super::IDLE_PREEMPT_COUNT, Ordering::Relaxed);
    task.stack_bottom.store(stack.start, Ordering::Relaxed);
    task.stack_top.store(stack.end, Ordering::Relaxed);
    task.set_state(TaskState::Running);
    task.allowed_cpus.store(1 << cpu, Ordering::Relaxed);
    task.last_cpu.store(cpu as u32, Ordering::Relaxed);
    task.on_cpu.store(true, Ordering::Relaxed);
    super::CURRENT.this().store(slot, Ordering::Relaxed);
    // SAFETY: interrupts off; the idle task never enters user mode, so its stack top is only a
    // well-defined value for this CPU's TSS.RSP0.
    unsafe { crate::arch::gdt::set_kernel_stack_top(stack.end) };
}

/// Work each AP's idle loop runs once, in its idle task ([`run_on_ap`]).
static AP_WORK: PerCpu<crate::arch::hook_slot::HookSlot<fn()>> =
    PerCpu::new([const { crate::arch::hook_slot::HookSlot::empty() }; NR_CPUS]);

/// An AP's idle task: runs the work [`run_on_ap`] leaves it, and
/// otherwise idles until the run queue holds a task for this CPU, which it
/// switches to (as the boot CPU's idle task does).
pub fn ap_idle_loop() -> ! {
    loop {
        irqflags::local_irq_disable();
        match AP_WORK.this().take() {
            Some(work) => work(),
            None => super::idle_until_work(),
        }
    }
}

/// Makes AP `cpu` (APIC ID `apic_id`) run `work` once in its idle task,
/// with interrupts off, and wakes it with a reschedule IPI. Does not wait.
pub fn run_on_ap(cpu: usize, apic_id: u32, work: fn()) {
    AP_WORK.of(cpu).set(work);
    apic::send_ipi(apic_id, apic::RESCHEDULE_VECTOR);
}
