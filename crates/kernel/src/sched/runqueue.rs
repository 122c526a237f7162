//! The run queue every CPU schedules from, and its lock (the scheduler
//! lock): a FIFO of runnable task slots, each CPU taking the first task its
//! affinity allows. Taken only with interrupts off, never by an NMI; a CPU
//! that would take it twice panics instead of spinning on itself.

use super::*;

/// A FIFO of runnable task slots.
pub(super) struct RunQueue {
    slots: [u8; MAX_TASKS],
    head: usize,
    len: usize,
}

impl RunQueue {
    pub(super) const fn new() -> RunQueue {
        RunQueue { slots: [0; MAX_TASKS], head: 0, len: 0 }
    }

    pub(super) fn push(&mut self, slot: usize) {
        assert!(self.len < MAX_TASKS, "run queue overflow");
        self.slots[(self.head + self.len) % MAX_TASKS] = slot as u8;
        self.len += 1;
    }

    /// The queue position of the first task `cpu` may run.
    pub(super) fn first_allowed(&self, cpu: usize) -> Option<usize> {
        (0..self.len).find(|&position| {
            let slot = usize::from(self.slots[(self.head + position) % MAX_TASKS]);
            allowed_on(slot, cpu)
        })
    }

    pub(super) fn has_work_for(&self, cpu: usize) -> bool {
        self.first_allowed(cpu).is_some()
    }

    /// Takes the first task `cpu` may run out of the queue; the tasks
    /// before it keep their order.
    pub(super) fn take_first_allowed(&mut self, cpu: usize) -> Option<usize> {
        let position = self.first_allowed(cpu)?;
        let slot = usize::from(self.slots[(self.head + position) % MAX_TASKS]);
        for earlier in (0..position).rev() {
            self.slots[(self.head + earlier + 1) % MAX_TASKS] =
                self.slots[(self.head + earlier) % MAX_TASKS];
        }
        self.head = (self.head + 1) % MAX_TASKS;
        self.len -= 1;
        Some(slot)
    }
}

/// May the task in `slot` run on `cpu`?
pub(super) fn allowed_on(slot: usize, cpu: usize) -> bool {
    TASKS[slot].allowed_cpus.load(Ordering::Relaxed) & (1 << cpu) != 0
}

static RUN_QUEUE: Mutex<RunQueue> = Mutex::new(RunQueue::new());

/// The CPU holding the run-queue lock, plus one (0: none): a CPU that
/// takes it twice would spin on itself for ever, so it panics instead.
static RUN_QUEUE_HOLDER: AtomicUsize = AtomicUsize::new(0);

/// The run-queue lock, held.
pub(super) struct RunQueueGuard(spin::MutexGuard<'static, RunQueue>);

impl core::ops::Deref for RunQueueGuard {
    type Target = RunQueue;
    fn deref(&self) -> &RunQueue {
        &self.0
    }
}

impl core::ops::DerefMut for RunQueueGuard {
    fn deref_mut(&mut self) -> &mut RunQueue {
        &mut self.0
    }
}

impl Drop for RunQueueGuard {
    fn drop(&mut self) {
        // Before the inner guard unlocks (fields drop after this).
        RUN_QUEUE_HOLDER.store(0, Ordering::Relaxed);
    }
}

/// Takes the run-queue lock (the scheduler lock); interrupts must be off.
pub(super) fn run_queue() -> RunQueueGuard {
    debug_assert!(!x86_64::instructions::interrupts::are_enabled());
    let me = percpu::this_cpu() + 1;
    assert_ne!(
        RUN_QUEUE_HOLDER.load(Ordering::Relaxed),
        me,
        "the run-queue lock taken twice on one CPU"
    );
    let guard = RUN_QUEUE.lock();
    RUN_QUEUE_HOLDER.store(me, Ordering::Relaxed);
    RunQueueGuard(guard)
}
