//! The user-mode state a context switch carries besides the stack: the
//! GS and FS bases, the x87/SSE registers and the address space (CR3).
//!
//! None of it is touched by kernel code, so while a task runs in the
//! kernel the registers still hold *its* user values: the switch saves
//! what is live into the task being left and loads the next task's, like
//! Linux's `__switch_to` (`save_fsgs`, `switch_fpu_prepare`/`finish`,
//! `switch_mm_irqs_off`). It runs with interrupts off, between the PKRS
//! switch and the stack switch. An NMI landing between two of these steps
//! runs on its IST stack, reads none of this state and writes none of it
//! back (the paranoid entry reads MSR_GS_BASE, never the user bases).

use super::task::{Task, MAX_TASKS, TASKS};
use crate::arch::fpu::{self, FxState};
use crate::arch::memory;
use core::cell::UnsafeCell;
use core::sync::atomic::Ordering;
use x86_64::registers::model_specific::{FsBase, KernelGsBase};
use x86_64::VirtAddr;

/// One task's saved x87/SSE registers.
struct FpuSlot(UnsafeCell<FxState>);

// SAFETY: a slot is written only by its own task's switch-out and by
// `reset` of a slot no task runs in, and read only by the switch into its
// task, or by its running task itself (signal frames); all of these run with
// interrupts off on the one CPU running or switching that task, so no two
// accesses overlap.
unsafe impl Sync for FpuSlot {}

/// Every task's saved x87/SSE area. All zero at boot (.bss, not 36 KB of
/// the kernel file): only a user-FPU task's switch-out writes or its
/// switch-in reads one, and only a spawned task becomes one, whose slot
/// [`reset`] has filled with the reset image (init and the idle tasks
/// never do; an all-zero area would be a valid FXRSTOR image anyway).
static FPU_STATES: [FpuSlot; MAX_TASKS] =
    [const { FpuSlot(UnsafeCell::new(FxState::zeroed())) }; MAX_TASKS];

/// Clears a slot's user state for a new task (no FPU, no bases, the
/// kernel's page table).
pub fn reset(slot: usize) {
    let task = &TASKS[slot];
    task.user_gs_base.store(0, Ordering::Relaxed);
    task.user_fs_base.store(0, Ordering::Relaxed);
    task.user_fpu.store(false, Ordering::Relaxed);
    task.page_table.store(0, Ordering::Relaxed);
    task.personality.store(super::task::PERSONALITY_KERNEL, Ordering::Relaxed);
    task.signal_pending.store(false, Ordering::Relaxed);
    // SAFETY: the slot is free (its old task is gone, the new one not yet runnable): nothing else
    // reads or writes its FPU area (`FpuSlot`'s rule).
    unsafe { *FPU_STATES[slot].0.get() = FxState::initial() };
}

/// Makes the running task a user task of its own registers: from now on
/// its x87/SSE state is switched with it, starting from the reset state
/// (the registers still hold whatever user task ran last). Interrupts off.
pub fn begin_user_fpu(slot: usize) {
    assert!(!x86_64::instructions::interrupts::are_enabled(), "begin_user_fpu with IF set");
    TASKS[slot].user_fpu.store(true, Ordering::Relaxed);
    // SAFETY: the reset image.
    unsafe { fpu::restore(&FxState::initial()) };
}

/// Runs `body` on the running task's saved FPU area, after saving the live
/// registers into it; loads the area back into the registers afterwards
/// (what `body` changed becomes live). Interrupts off, a user-FPU task.
///
/// # Safety
///
/// `body` leaves a state FXRSTOR accepts: the one it got, another FXSAVE
/// image, [`FxState::initial`], or one that passed
/// [`FxState::check_from_user`].
pub unsafe fn with_current_fpu_state<T>(slot: usize, body: impl FnOnce(&mut FxState) -> T) -> T {
    assert!(!x86_64::instructions::interrupts::are_enabled(), "FPU state access with IF set");
    assert!(TASKS[slot].user_fpu.load(Ordering::Relaxed), "task {slot} has no user FPU state");
    // SAFETY: `slot` is the running task (the caller's contract): only its own switch-out writes
    // its area, and with interrupts off none can start; the reference lives only for this call.
    let state = unsafe { &mut *FPU_STATES[slot].0.get() };
    fpu::save(state);
    let result = body(state);
    // SAFETY: the state FXSAVE wrote, as `body` left it (this function's contract).
    unsafe { fpu::restore(state) };
    result
}

/// Runs the running task on the page table at `table` from now on (its
/// own address space; 0: the kernel's). Interrupts off.
///
/// # Safety
///
/// As [`memory::switch_page_table`]: `table` is 0 or a level-4 table with
/// the kernel's upper half, alive until the task sets another (every
/// context switch into the task loads it again).
pub unsafe fn set_page_table(slot: usize, table: u64) {
    assert!(!x86_64::instructions::interrupts::are_enabled(), "set_page_table with IF set");
    TASKS[slot].page_table.store(table, Ordering::Relaxed);
    // SAFETY: this function's contract.
    unsafe { memory::switch_page_table(table) };
}

/// Switches the user state from task `prev` (running) to `next`.
pub fn switch(prev: usize, next: usize) {
    let (prev_task, next_task) = (&TASKS[prev], &TASKS[next]);
    switch_bases(prev_task, next_task);
    if prev_task.user_fpu.load(Ordering::Relaxed) {
        // SAFETY: `prev` is the running task being switched out: its area is written only here
        // (`FpuSlot`'s rule), interrupts are off.
        fpu::save(unsafe { &mut *FPU_STATES[prev].0.get() });
    }
    if next_task.user_fpu.load(Ordering::Relaxed) {
        // SAFETY: `next` is switched out: nothing writes its area until it runs again, and the
        // reference lives for this load only. FXRSTOR accepts it: FXSAVE wrote it, or `reset`
        // or `with_current_fpu_state` left the reset image or a checked state there.
        unsafe { fpu::restore(&*FPU_STATES[next].0.get()) };
    }
    // SAFETY: a task's page_table is 0 or the table `set_page_table` installed, which its owner
    // keeps alive until the task sets 0 again (its exit does, before the reaper frees it).
    unsafe { memory::switch_page_table(next_task.page_table.load(Ordering::Relaxed)) };
}

/// The user GS and FS bases go with the task. While a task runs in the
/// kernel, `MSR_KERNEL_GS_BASE` holds its user GS base (the entry's
/// SWAPGS put it there) and `MSR_FS_BASE` its user FS base, so the switch
/// saves both and loads the next task's. They are read back, not assumed:
/// without FSGSBASE user code still changes a base by loading a selector
/// (`mov %ax, %gs` sets it from the descriptor, 0), as Linux's
/// `save_base_legacy` knows. (The selectors themselves are not switched:
/// no user program here relies on a non-null FS or GS selector.)
/// An MSR is written only when the value differs.
fn switch_bases(prev_task: &Task, next_task: &Task) {
    let prev_gs = KernelGsBase::read().as_u64();
    prev_task.user_gs_base.store(prev_gs, Ordering::Relaxed);
    let next_gs = next_task.user_gs_base.load(Ordering::Relaxed);
    if prev_gs != next_gs {
        KernelGsBase::write(VirtAddr::new(next_gs));
    }
    let prev_fs = FsBase::read().as_u64();
    prev_task.user_fs_base.store(prev_fs, Ordering::Relaxed);
    let next_fs = next_task.user_fs_base.load(Ordering::Relaxed);
    if prev_fs != next_fs {
        FsBase::write(VirtAddr::new(next_fs));
    }
}
