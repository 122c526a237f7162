//! The Rust half of `entry_SYSCALL_64` and the syscall table.
//!
//! The entry built the same `PtRegs` + extension an interrupt from user mode
//! would have (at `task_pt_regs`, `orig_ax` = the number, `cx`/`r11` = the
//! user RIP/RFLAGS) and calls [`extregs_syscall_entry`], which runs the
//! generic entry's user path around the call, then tells the assembly
//! whether SYSRETQ may return ([`sysret_allowed`], Linux's conditions) or
//! the IRET exit must.

use super::{counters, EFAULT};
use crate::arch::hook_slot::HookSlot;
use crate::arch::irqflags;
use crate::arch::percpu::PerCpu;
use crate::arch::serial;
use crate::arch::uaccess::{copy_from_user, copy_to_user, TASK_SIZE_MAX};
use crate::entry::check;
use crate::entry::hooks;
use crate::entry::platform;
use crate::sched;
use core::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use extregs_entry::{syscall_enter_from_user_mode, syscall_exit_to_user_mode};
use extregs_regs::NR_CPUS;
use extregs_regs::{selectors, ExtendedPtRegs, PtRegs, X86_EFLAGS_RF, X86_EFLAGS_TF};

/// Syscall numbers: Linux's where Linux has the call, 1000 and up for the
/// test calls.
pub mod numbers {
    pub const SYS_WRITE: u64 = 1;
    pub const SYS_SCHED_YIELD: u64 = 24;
    pub const SYS_GETPID: u64 = 39;
    pub const SYS_EXIT: u64 = 60;
    /// `sleep_ticks(n)`: sleeps `n` scheduler ticks (the tick must run).
    pub const SYS_SLEEP_TICKS: u64 = 1000;
    /// `get_regs(buf)`: copies the caller's own `PtRegs` (this syscall's
    /// frame) to `buf`.
    pub const SYS_GET_REGS: u64 = 1001;
    /// `set_return(rip, flags)`: return to `rip` (RCX too, so only the
    /// address decides SYSRET) with the `flags` bits among TF and RF set.
    pub const SYS_SET_RETURN: u64 = 1002;
    /// `get_user_pkrs()`: the PKRS user mode ran with (the value the entry
    /// saved in this syscall frame's extension).
    pub const SYS_GET_USER_PKRS: u64 = 1003;
    /// `set_return_ss(selector)`: return with this SS (a bad one makes
    /// the IRETQ fault in ring 0, the `bad_iret` case).
    pub const SYS_SET_RETURN_SS: u64 = 1004;
    /// `bench_nop()`: returns 0 (the bench's round trip).
    pub const SYS_BENCH_NOP: u64 = extregs_bench::BENCH_SYSCALL_NR;
    /// `self_ipi()`: sends a self-IPI from inside the syscall (interrupts
    /// on) and returns once its handler ran: an IRQ nested in a syscall.
    pub const SYS_SELF_IPI: u64 = 1006;
    /// `self_ipi_on_return()`: a self-IPI sent as the syscall returns, with
    /// interrupts off, so it arrives at the first user instructions after
    /// SYSRET (the fuzzer's IRQ from user mode).
    pub const SYS_SELF_IPI_ON_RETURN: u64 = 1007;
    /// `timer_on_return()`: the LAPIC timer armed (one-shot, one tick) as
    /// the syscall returns; it fires in user mode right after.
    pub const SYS_TIMER_ON_RETURN: u64 = 1008;
    /// `fuzz_event()`: hands the SYSCALL frame to the installed syscall
    /// hook (the fuzzer's, for a ring-3 level), interrupts off; -ENOSYS
    /// without one.
    pub const SYS_FUZZ_EVENT: u64 = 1009;
    /// `break_kernel_stack()`: only under `mode=oops cause=user-double-fault`
    /// (-ENOSYS otherwise): points TSS.RSP0 at the caller's guard page.
    pub const SYS_BREAK_KERNEL_STACK: u64 = 1010;
}
use numbers::*;

/// Linux's errno values the table returns (negated).
const ENOSYS: i64 = 38;
const EBADF: i64 = 9;
const EINVAL: i64 = 22;
const ETIMEDOUT: i64 = 110;

/// How long `self_ipi` waits for its IRQ (far beyond any delivery).
const SELF_IPI_TIMEOUT_MS: u64 = 1000;

fn tsc() -> u64 {
    // SAFETY: RDTSC has no side effects.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// The most bytes one `write` prints.
const WRITE_MAX: usize = 256;

/// An IRQ to raise as a task's running syscall returns (`*_on_return`),
/// by task slot: on N CPUs two tasks' syscalls run at once, and a task
/// may change CPUs inside one (interrupts are on there); the IRQ goes to
/// the CPU that runs the exit, where the task then returns to user mode.
static IRQ_ON_RETURN: [AtomicU8; crate::sched::task::MAX_TASKS] =
    [const { AtomicU8::new(IRQ_ON_RETURN_NONE) }; crate::sched::task::MAX_TASKS];
const IRQ_ON_RETURN_NONE: u8 = 0;
const IRQ_ON_RETURN_SELF_IPI: u8 = 1;
const IRQ_ON_RETURN_TIMER: u8 = 2;

/// The hook `fuzz_event` hands its frame to.
static SYSCALL_HOOK: PerCpu<HookSlot<hooks::TrapHook>> =
    PerCpu::new([const { HookSlot::empty() }; NR_CPUS]);

/// `break_kernel_stack` is allowed (set by the one oops mode that uses it).
static BREAKING_THE_KERNEL_STACK_ALLOWED: AtomicBool = AtomicBool::new(false);

/// Lets `break_kernel_stack` do its damage (mode=oops cause=user-double-fault).
pub fn allow_breaking_the_kernel_stack() {
    BREAKING_THE_KERNEL_STACK_ALLOWED.store(true, Ordering::SeqCst);
}

/// The pseudo-vector a syscall hook is called with (SYSCALL has none).
pub const SYSCALL_PSEUDO_VECTOR: u8 = 0x80;

/// Runs `body` with `hook` receiving every `fuzz_event` syscall's frame,
/// on every CPU (the fuzzer's lanes run on all).
pub fn with_syscall_hook_on_every_cpu<T>(hook: hooks::TrapHook, body: impl FnOnce() -> T) -> T {
    for cpu in 0..NR_CPUS {
        SYSCALL_HOOK.of(cpu).set(hook);
    }
    let result = body();
    for cpu in 0..NR_CPUS {
        SYSCALL_HOOK.of(cpu).clear();
    }
    result
}

/// The last `get_regs` copy and where its frame was (for the selftests).
static LAST_GET_REGS: spin::Mutex<(u64, PtRegs)> = spin::Mutex::new((0, PtRegs::ZERO));

/// Called by `entry_SYSCALL_64` with interrupts off; returns true when
/// SYSRETQ may return to user mode.
///
/// # Safety
///
/// Only `entry_SYSCALL_64` calls this, with `regs` the frame it built at
/// the top of the running task's kernel stack (extension below it).
#[no_mangle]
pub unsafe extern "C" fn extregs_syscall_entry(regs: &mut PtRegs) -> bool {
    // SAFETY: the entry built a whole ExtendedPtRegs around `regs`.
    unsafe { syscall_enter_from_user_mode::<platform::KernelPlatform>(regs) };
    check::check_syscall_frame(regs);
    counters::SYSCALLS.fetch_add(1, Ordering::Relaxed);
    // As Linux's entry: the number is in orig_ax; until the table answers,
    // the frame's ax says -ENOSYS.
    regs.ax = (-ENOSYS) as u64;
    irqflags::local_irq_enable();
    let result = match super::personality::syscall_table() {
        Some(table) => table(regs),
        None => dispatch(regs),
    };
    regs.ax = result as u64;
    irqflags::local_irq_disable();
    match IRQ_ON_RETURN[crate::sched::current_slot()].swap(IRQ_ON_RETURN_NONE, Ordering::Relaxed) {
        IRQ_ON_RETURN_SELF_IPI => {
            crate::arch::apic::send_self_ipi(crate::arch::apic::SELF_IPI_VECTOR)
        }
        IRQ_ON_RETURN_TIMER => {
            crate::arch::apic::start_timer(crate::arch::apic::TimerMode::OneShot, 1)
        }
        _ => {}
    }
    // SAFETY: the same frame syscall_enter_from_user_mode ran on.
    unsafe { syscall_exit_to_user_mode::<platform::KernelPlatform>(regs) };
    let sysret = sysret_allowed(regs);
    if sysret {
        counters::SYSRET_EXITS.fetch_add(1, Ordering::Relaxed);
    } else {
        counters::IRET_EXITS.fetch_add(1, Ordering::Relaxed);
    }
    sysret
}

/// Linux's conditions for SYSRETQ (`do_syscall_64`): it reloads RIP from
/// RCX and RFLAGS from R11 and CS/SS from STAR, so the frame must say
/// exactly that; the RIP must be below [`TASK_SIZE_MAX`] (an Intel CPU
/// faults on a non-canonical RCX in ring 0); and TF/RF must be clear
/// (SYSRET with TF set traps on the first user instruction with the frame
/// already gone; RF is not restored).
pub fn sysret_allowed(regs: &PtRegs) -> bool {
    regs.cx == regs.ip
        && regs.ip < TASK_SIZE_MAX
        && regs.r11 == regs.flags
        && regs.cs == u64::from(selectors::USER_CS)
        && regs.ss == u64::from(selectors::USER_DS)
        && regs.flags & (X86_EFLAGS_TF | X86_EFLAGS_RF) == 0
}

/// The table. Runs with interrupts on; returns the value for `%rax`.
fn dispatch(regs: &mut PtRegs) -> i64 {
    let (arg0, arg1, arg2) = (regs.di, regs.si, regs.dx);
    match regs.orig_ax {
        SYS_WRITE => write(arg0, arg1, arg2),
        SYS_SCHED_YIELD => {
            sched::yield_now();
            0
        }
        SYS_GETPID => i64::from(sched::current_pid()),
        SYS_BENCH_NOP => {
            // The bench handlers' body (a counter, RSP noted for the
            // stack column), so the real path does what they do.
            extregs_bench::handler_body();
            0
        }
        SYS_EXIT => sched::exit_current_with_status((arg0 & 0xff) as i32),
        SYS_SLEEP_TICKS => {
            if !sched::tick_running() {
                return -EINVAL;
            }
            sched::sleep_ticks(arg0.min(1000));
            0
        }
        SYS_SELF_IPI => {
            let before = crate::entry::irq::counts().self_ipi;
            crate::arch::apic::send_self_ipi(crate::arch::apic::SELF_IPI_VECTOR);
            let start = tsc();
            let timeout = crate::arch::apic::tsc_ticks_per_ms() * SELF_IPI_TIMEOUT_MS;
            while crate::entry::irq::counts().self_ipi == before {
                if tsc() - start > timeout {
                    return -ETIMEDOUT;
                }
                core::hint::spin_loop();
            }
            0
        }
        SYS_SELF_IPI_ON_RETURN => {
            IRQ_ON_RETURN[crate::sched::current_slot()]
                .store(IRQ_ON_RETURN_SELF_IPI, Ordering::Relaxed);
            0
        }
        SYS_TIMER_ON_RETURN => {
            IRQ_ON_RETURN[crate::sched::current_slot()]
                .store(IRQ_ON_RETURN_TIMER, Ordering::Relaxed);
            0
        }
        SYS_FUZZ_EVENT => {
            let Some(hook) = SYSCALL_HOOK.this().get() else {
                return -ENOSYS;
            };
            irqflags::local_irq_disable();
            hook(regs, SYSCALL_PSEUDO_VECTOR);
            irqflags::local_irq_enable();
            0
        }
        SYS_BREAK_KERNEL_STACK => {
            if !BREAKING_THE_KERNEL_STACK_ALLOWED.load(Ordering::SeqCst) {
                return -ENOSYS;
            }
            let guard_top = sched::task::guard_range(sched::current_slot()).end;
            irqflags::local_irq_disable();
            // SAFETY: wrong on purpose, in the one oops mode that asks: the next user entry pushes
            // into the guard page and ends in a #DF. SYSRET does not use RSP0, so this syscall
            // still returns; interrupts stay off until it does.
            unsafe { crate::arch::gdt::set_kernel_stack_top(guard_top) };
            0
        }
        SYS_GET_REGS => {
            let address = regs as *const PtRegs as u64;
            // SAFETY: `regs` is a whole PtRegs; its bytes are read-only here.
            let bytes = unsafe {
                core::slice::from_raw_parts(
                    (regs as *const PtRegs).cast::<u8>(),
                    core::mem::size_of::<PtRegs>(),
                )
            };
            match copy_to_user(arg0, bytes) {
                Ok(()) => {
                    *LAST_GET_REGS.lock() = (address, *regs);
                    0
                }
                Err(_) => -EFAULT,
            }
        }
        SYS_SET_RETURN => {
            regs.ip = arg0;
            regs.cx = arg0;
            regs.flags |= arg1 & (X86_EFLAGS_TF | X86_EFLAGS_RF);
            0
        }
        SYS_SET_RETURN_SS => {
            regs.ss = arg0 & 0xffff;
            0
        }
        SYS_GET_USER_PKRS => {
            // SAFETY: `regs` is the syscall frame, extension below it.
            let frame = unsafe { ExtendedPtRegs::from_regs(regs) };
            i64::from(frame.arch.pks)
        }
        _ => -ENOSYS,
    }
}

/// `write(fd, buf, len)`: fd 1 or 2, the bytes through [`copy_from_user`].
fn write(fd: u64, buffer: u64, length: u64) -> i64 {
    if fd != 1 && fd != 2 {
        return -EBADF;
    }
    let length = (length as usize).min(WRITE_MAX);
    let mut bytes = [0u8; WRITE_MAX];
    if copy_from_user(&mut bytes[..length], buffer).is_err() {
        return -EFAULT;
    }
    match core::str::from_utf8(&bytes[..length]) {
        Ok(text) => serial::print_args(format_args!("{text}")),
        Err(_) => println!("extregs: write: {length} bytes that are not UTF-8"),
    }
    length as i64
}

/// The last `get_regs`: where its frame was (0: never called) and what it
/// copied.
pub fn last_get_regs() -> (u64, PtRegs) {
    *LAST_GET_REGS.lock()
}
