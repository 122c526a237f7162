//! `mode=user`: ring-3 tasks on the extended frame, a demo of every user
//! path at once.
//!
//! With the scheduler tick running, init starts and waits for:
//!
//! * `user-hello`: a hello world over `write` and `exit` (SYSCALL/SYSRET);
//! * `user-spin`: one more spinner than there are CPUs (two on one CPU),
//!   with callee-saved registers holding patterns, preempted by the timer
//!   in user mode (each tick's frame lands at `task_pt_regs`), checking
//!   their registers and GS base;
//! * `user-ud`: executes `ud2` and is killed, with Linux's one line;
//! * `user-syscalls`: 10,000 getpid calls, each result and its GS base
//!   checked.
//!
//! Every task may run on every online CPU (each CPU's tick preempts the
//! spinners, and a spinner preempted in user mode on one CPU may return to
//! user mode on another). Under `--nmi-storm`, NMIs land in user mode too
//! (`user_nmis`, and per CPU `cpu_user_nmis`). The
//! RESULT line carries the counters of the user paths; the mode passes when
//! every task ended as it should, the spinners were preempted in user mode,
//! and no frame failed the entry checks.

use crate::debug::result;
use crate::sched::{self, TaskHandle};
use crate::user::{self, programs};

/// Syscalls of `user-syscalls`.
const SYSCALL_LOOP_CALLS: u64 = 10_000;
/// Outer iterations of each spinner (1000 inner ones each): a few seconds
/// of TCG time, many ticks.
const SPIN_ITERATIONS: u64 = 20_000;
/// Linux's shell status of a task killed by SIGILL (128 + 4).
const KILLED_BY_SIGILL: i32 = 128 + 4;

/// Spinners at most: one more than the most CPUs.
const MAX_SPINNERS: usize = extregs_regs::NR_CPUS + 1;

struct Expected {
    handle: TaskHandle,
    name: &'static str,
    status: i32,
}

fn spawn(name: &'static str, program: programs::Program, arg0: u64, status: i32) -> Expected {
    let online = crate::arch::smp::online_mask();
    match user::spawn_on(format_args!("{name}"), program, arg0, 0, online) {
        Ok(handle) => Expected { handle, name, status },
        Err(why) => panic!("spawning {name}: {why:?}"),
    }
}

/// Runs the demo tasks and reports.
pub fn run() -> bool {
    let sched_before = sched::counts();
    let user_before = user::counts();
    let (frames_before, _) = result::frame_counts();
    let cpu_nmis_before: [u64; extregs_regs::NR_CPUS] = core::array::from_fn(|cpu| {
        user::counters::CPU_USER_NMIS[cpu].load(core::sync::atomic::Ordering::Relaxed)
    });
    let migrations_before = sched::counts().migrations;
    // The killed task's registers are dumped (Linux's print-fatal-signals).
    user::set_print_fatal_signals(true);
    sched::start_tick();
    // More spinners than CPUs, so every CPU's tick has one to preempt.
    let spinners = (crate::arch::smp::cpus_online() as usize + 1).clamp(2, MAX_SPINNERS);
    let others = [
        spawn("user-hello", programs::HELLO, 0, 0),
        spawn("user-ud", programs::UD2, 0, KILLED_BY_SIGILL),
        spawn("user-syscalls", programs::SYSCALL_LOOP, SYSCALL_LOOP_CALLS, 0),
    ];
    let spinning: [Option<Expected>; MAX_SPINNERS] = core::array::from_fn(|index| {
        (index < spinners).then(|| spawn("user-spin", programs::SPIN, SPIN_ITERATIONS, 0))
    });
    let tasks_run = others.len() + spinners;
    let mut all_as_expected = true;
    for task in others.iter().chain(spinning.iter().flatten()) {
        let status = sched::wait(task.handle);
        let verdict = if status == task.status { "as expected" } else { "WRONG" };
        println!(
            "extregs: user: {}[{}] ended with status {status} ({verdict})",
            task.name,
            task.handle.pid()
        );
        all_as_expected &= status == task.status;
    }
    sched::stop_tick();
    user::set_print_fatal_signals(false);
    let sched_counts = sched::counts();
    let counts = user::counts();
    let syscalls = counts.syscalls - user_before.syscalls;
    let sysret_exits = counts.sysret_exits - user_before.sysret_exits;
    let iret_exits = counts.iret_exits - user_before.iret_exits;
    let user_kills = sched_counts.user_kills - sched_before.user_kills;
    let user_preemptions = sched_counts.user_preemptions - sched_before.user_preemptions;
    let user_frames = counts.user_frames_checked - user_before.user_frames_checked;
    let user_irqs = counts.user_irqs - user_before.user_irqs;
    let user_nmis = counts.user_nmis - user_before.user_nmis;
    let model_errors = sched_counts.model_errors - sched_before.model_errors;
    let migrations = sched_counts.migrations - migrations_before;
    let online_cpus = crate::arch::smp::cpus_online() as usize;
    let cpu_user_nmis: [u64; extregs_regs::NR_CPUS] = core::array::from_fn(|cpu| {
        user::counters::CPU_USER_NMIS[cpu].load(core::sync::atomic::Ordering::Relaxed)
            - cpu_nmis_before[cpu]
    });
    let (frames_after, _) = result::frame_counts();
    println!(
        "extregs: user: {syscalls} syscalls ({sysret_exits} SYSRET exits, {iret_exits} IRET exits), {user_preemptions} user preemptions, {user_kills} killed, {user_frames} user frames checked at task_pt_regs ({user_irqs} IRQs, {user_nmis} NMIs from user mode)"
    );
    let ok = all_as_expected
        && user_kills == 1
        && user_preemptions > 0
        && syscalls > SYSCALL_LOOP_CALLS
        && model_errors == 0;
    result::emit(
        ok,
        format_args!(
            ",\"syscalls\":{syscalls},\"sysret_exits\":{sysret_exits},\"iret_exits\":{iret_exits},\"user_kills\":{user_kills},\"user_preemptions\":{user_preemptions},\"user_frames_checked\":{user_frames},\"user_irqs\":{user_irqs},\"user_nmis\":{user_nmis},\"model_errors\":{model_errors},\"frames_in_mode\":{},\"migrations\":{migrations},\"tasks\":{tasks_run},\"cpu_user_nmis\":{}",
            frames_after - frames_before,
            result::JsonList(&cpu_user_nmis[..online_cpus])
        ),
    );
    ok
}
