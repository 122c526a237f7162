//! Selftests of the Linux personality: a signal's delivery and its
//! `rt_sigreturn` both on the user frame at `task_pt_regs`, the selectors
//! `rt_sigreturn` forces, and the x87/SSE state each user task keeps.
//!
//! The signal tests run one of the kernel's own user programs
//! (`LINUX_SIGNAL`) as a Linux process (`linux::exec::spawn_kernel_program`):
//! its own address space, Linux's syscall table and signal ABI.

use super::{check, Context, Outcome};
use crate::debug::result;
use crate::linux::{self, counters, signal};
use crate::sched::{self, task};
use crate::user::{self, programs};
use core::sync::atomic::Ordering;

/// Runs `LINUX_SIGNAL` with `mode` as a Linux process; its exit status and
/// task slot.
fn run_linux_signal(mode: u64) -> Option<(i32, usize)> {
    let handle = linux::exec::spawn_kernel_program(
        programs::LINUX_SIGNAL,
        [mode, 0],
        0,
        sched::task::BOOT_CPU_ONLY,
    )
    .ok()?;
    let status = sched::wait(handle);
    Some((status, handle.slot()))
}

/// SIGUSR1 sent with tkill lands on that syscall's way out: the
/// exit-to-user loop delivers it to the frame at `task_pt_regs`, the
/// handler finds Linux's register ABI (RSP 8 mod 16, signal, siginfo,
/// ucontext), and its `rt_sigreturn` (again on `task_pt_regs`) brings back
/// every register the handler clobbered and tkill's result.
pub fn signal_delivered_and_returned_at_task_pt_regs(_: &Context) -> Outcome {
    let delivered = counters::SIGNALS_DELIVERED.load(Ordering::Relaxed);
    let sigreturns = counters::SIGRETURNS.load(Ordering::Relaxed);
    let errors = result::frame_counts().1;
    let Some((status, slot)) = run_linux_signal(0) else {
        return Outcome::Fail;
    };
    check!(status == 0, "the program exited with {status} (see LINUX_SIGNAL's codes)");
    check!(
        counters::SIGNALS_DELIVERED.load(Ordering::Relaxed) == delivered + 1
            && counters::SIGRETURNS.load(Ordering::Relaxed) == sigreturns + 1,
        "not one delivery and one sigreturn"
    );
    let task_pt_regs = task::task_pt_regs(slot) as u64;
    let delivery = signal::LAST_DELIVERY_FRAME.load(Ordering::Relaxed);
    let sigreturn = signal::LAST_SIGRETURN_FRAME.load(Ordering::Relaxed);
    check!(
        delivery == task_pt_regs,
        "delivered to {delivery:#x}, not task_pt_regs {task_pt_regs:#x}"
    );
    check!(sigreturn == task_pt_regs, "rt_sigreturn on {sigreturn:#x}, not {task_pt_regs:#x}");
    check!(result::frame_counts().1 == errors, "a frame failed the entry checks");
    Outcome::Pass
}

/// A handler that writes `__KERNEL_CS` into its frame's CS: `rt_sigreturn`
/// forces the user selectors, so the program goes on in ring 3 (accepting
/// the value would IRET to user code in ring 0).
pub fn sigreturn_forces_user_selectors(_: &Context) -> Outcome {
    let errors = result::frame_counts().1;
    let Some((status, _)) = run_linux_signal(1) else {
        return Outcome::Fail;
    };
    check!(status == 0, "the program exited with {status}");
    check!(result::frame_counts().1 == errors, "a frame failed the entry checks");
    Outcome::Pass
}

/// Two user tasks fill every XMM register with different values and yield
/// to each other 200 times each: neither ever sees the other's registers.
pub fn fpu_state_is_per_task(_: &Context) -> Outcome {
    let spawn =
        |value: u64| user::spawn(format_args!("st-xmm-{value:x}"), programs::XMM_YIELD, value, 0);
    let (Ok(first), Ok(second)) = (spawn(0x1111_2222_3333_4444), spawn(0x5555_6666_7777_8888))
    else {
        return Outcome::Fail;
    };
    let statuses = [sched::wait(first), sched::wait(second)];
    check!(statuses == [0, 0], "xmm-yield exited with {statuses:?} (1: another task's XMM value)");
    Outcome::Pass
}
