//! Per-CPU variables (Linux's `DEFINE_PER_CPU`): one slot per CPU, the
//! running CPU's found through its GS area's CPU number.
//!
//! Every slot holds atomics or other `Sync` state, so a slot may be read
//! from another CPU (dumps, tests) without tearing; what makes a variable
//! *per CPU* is that each CPU's entries, exits and handlers touch only
//! their own slot. Where each per-CPU item lives is listed in
//! `docs/smp.md`.

use extregs_regs::NR_CPUS;

/// The number of the CPU running this (Linux's `smp_processor_id()`).
pub fn this_cpu() -> usize {
    extregs_entry_asm::this_cpu()
}

/// One `T` per CPU.
pub struct PerCpu<T>([T; NR_CPUS]);

impl<T> PerCpu<T> {
    /// A variable whose CPU `k` starts as `slots[k]`.
    pub const fn new(slots: [T; NR_CPUS]) -> PerCpu<T> {
        PerCpu(slots)
    }

    /// This CPU's slot (Linux's `this_cpu_ptr`). Tasks migrate between
    /// CPUs, so the caller must stay on this CPU until it is done with the
    /// reference (interrupts or preemption off, or a handler), unless any
    /// CPU's slot would do.
    pub fn this(&self) -> &T {
        &self.0[this_cpu()]
    }

    /// CPU `cpu`'s slot (Linux's `per_cpu_ptr`).
    ///
    /// # Panics
    ///
    /// If `cpu` is not below `NR_CPUS`.
    pub fn of(&self, cpu: usize) -> &T {
        &self.0[cpu]
    }
}
