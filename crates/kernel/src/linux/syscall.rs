//! Linux's x86-64 syscall table, for Linux processes.
//!
//! The SYSCALL entry and its checks are the kernel's one path
//! (`user::syscall`); a Linux process's calls land in [`dispatch`]. What
//! is served is what static musl and glibc programs and Linux's x86
//! selftests ask for (docs/linux-abi.md lists it). Every other number
//! returns -ENOSYS, never a kill, and is named once on the console so a
//! missing call is easy to find.

use super::errno::*;
use super::{counters, signal, with_current};
use crate::arch::apic;
use crate::arch::serial;
use crate::arch::uaccess::{copy_from_user, copy_to_user, TASK_SIZE_MAX};
use crate::sched;
use core::sync::atomic::{AtomicU64, Ordering};
use extregs_regs::PtRegs;

const SYS_READ: u64 = 0;
const SYS_WRITE: u64 = 1;
const SYS_CLOSE: u64 = 3;
const SYS_FSTAT: u64 = 5;
const SYS_MMAP: u64 = 9;
const SYS_MPROTECT: u64 = 10;
const SYS_MUNMAP: u64 = 11;
const SYS_BRK: u64 = 12;
const SYS_RT_SIGACTION: u64 = 13;
const SYS_RT_SIGPROCMASK: u64 = 14;
pub const SYS_RT_SIGRETURN: u64 = 15;
const SYS_IOCTL: u64 = 16;
const SYS_WRITEV: u64 = 20;
const SYS_SCHED_YIELD: u64 = 24;
const SYS_MREMAP: u64 = 25;
const SYS_MADVISE: u64 = 28;
const SYS_NANOSLEEP: u64 = 35;
const SYS_GETPID: u64 = 39;
const SYS_GETTIMEOFDAY: u64 = 96;
const SYS_TIME: u64 = 201;
const SYS_EXIT: u64 = 60;
const SYS_KILL: u64 = 62;
const SYS_UNAME: u64 = 63;
const SYS_GETUID: u64 = 102;
const SYS_GETGID: u64 = 104;
const SYS_GETEUID: u64 = 107;
const SYS_GETEGID: u64 = 108;
const SYS_GETPPID: u64 = 110;
const SYS_RT_SIGPENDING: u64 = 127;
const SYS_SIGALTSTACK: u64 = 131;
const SYS_ARCH_PRCTL: u64 = 158;
const SYS_GETTID: u64 = 186;
const SYS_TKILL: u64 = 200;
const SYS_SET_TID_ADDRESS: u64 = 218;
const SYS_CLOCK_GETTIME: u64 = 228;
const SYS_EXIT_GROUP: u64 = 231;
const SYS_TGKILL: u64 = 234;
const SYS_NEWFSTATAT: u64 = 262;
const SYS_SET_ROBUST_LIST: u64 = 273;
const SYS_GETRANDOM: u64 = 318;

const ARCH_SET_GS: u64 = 0x1001;
const ARCH_SET_FS: u64 = 0x1002;
const ARCH_GET_FS: u64 = 0x1003;
const ARCH_GET_GS: u64 = 0x1004;

/// The most bytes one `write` takes (Linux's `MAX_RW_COUNT` is larger;
/// the console is slow).
const WRITE_MAX: u64 = 1 << 20;
/// `UIO_MAXIOV`.
const IOV_MAX: u64 = 1024;

/// -ENOSYS numbers already reported (one bit per number below 512).
static ENOSYS_REPORTED: [AtomicU64; 8] = [const { AtomicU64::new(0) }; 8];

/// The table. Runs with interrupts on; returns the value for `%rax`.
pub fn dispatch(regs: &mut PtRegs) -> i64 {
    counters::SYSCALLS.fetch_add(1, Ordering::Relaxed);
    let [a0, a1, a2, a3, a4] = [regs.di, regs.si, regs.dx, regs.r10, regs.r8];
    match regs.orig_ax {
        SYS_READ => match a0 {
            0 => 0,
            _ => -EBADF,
        },
        SYS_WRITE => write(a0, a1, a2),
        SYS_WRITEV => writev(a0, a1, a2),
        SYS_CLOSE => match a0 {
            0..=2 => 0,
            _ => -EBADF,
        },
        SYS_FSTAT => fstat(a0, a1),
        SYS_NEWFSTATAT => {
            // Only `fstatat(fd, "", buf, AT_EMPTY_PATH)` (glibc's fstat).
            const AT_EMPTY_PATH: u64 = 0x1000;
            if a3 & AT_EMPTY_PATH != 0 {
                fstat(a0, a2)
            } else {
                -ENOENT
            }
        }
        SYS_IOCTL => match a0 {
            0..=2 => -ENOTTY,
            _ => -EBADF,
        },
        SYS_MMAP => with_current(|process| process.mm.mmap(a0, a1, a2, a3, a4 as i64)),
        SYS_MPROTECT => with_current(|process| process.mm.mprotect(a0, a1, a2)),
        SYS_MUNMAP => with_current(|process| process.mm.munmap(a0, a1)),
        SYS_MREMAP => with_current(|process| process.mm.mremap(a0, a1, a2, a3, a4)),
        SYS_MADVISE => with_current(|process| process.mm.madvise(a0, a1, a2)),
        SYS_BRK => {
            with_current(
                |process| {
                    if a0 == 0 {
                        process.mm.brk as i64
                    } else {
                        process.mm.set_brk(a0)
                    }
                },
            )
        }
        SYS_RT_SIGACTION => signal::sigaction(a0, a1, a2, a3),
        SYS_RT_SIGPROCMASK => signal::sigprocmask(a0, a1, a2, a3),
        SYS_RT_SIGPENDING => signal::sigpending(a0, a1),
        SYS_RT_SIGRETURN => signal::sigreturn(regs),
        SYS_SIGALTSTACK => signal::sigaltstack(a0, a1, regs.sp),
        SYS_KILL => {
            let pid = u64::from(sched::current_pid());
            if a0 != pid && a0 != 0 && a0 as i64 != -1 {
                return -ESRCH;
            }
            send_self(a1, false)
        }
        SYS_TKILL => {
            if a0 != u64::from(sched::current_pid()) {
                return -ESRCH;
            }
            send_self(a1, true)
        }
        SYS_TGKILL => {
            let pid = u64::from(sched::current_pid());
            if a0 != pid || a1 != pid {
                return -ESRCH;
            }
            send_self(a2, true)
        }
        SYS_GETPID | SYS_GETTID | SYS_SET_TID_ADDRESS => i64::from(sched::current_pid()),
        SYS_GETPPID => 0,
        SYS_GETUID | SYS_GETGID | SYS_GETEUID | SYS_GETEGID => 0,
        SYS_SET_ROBUST_LIST => 0,
        SYS_SCHED_YIELD => {
            sched::yield_now();
            0
        }
        SYS_NANOSLEEP => nanosleep(a0),
        SYS_CLOCK_GETTIME => clock_gettime(a1),
        SYS_GETTIMEOFDAY => gettimeofday(a0),
        SYS_TIME => {
            let seconds = now_ns() / 1_000_000_000;
            if a0 != 0 && copy_to_user(a0, &seconds.to_le_bytes()).is_err() {
                return -EFAULT;
            }
            seconds as i64
        }
        SYS_UNAME => uname(a0),
        SYS_ARCH_PRCTL => arch_prctl(a0, a1),
        SYS_GETRANDOM => getrandom(a0, a1),
        SYS_EXIT | SYS_EXIT_GROUP => {
            let status = (a0 & 0xff) as i32;
            sched::exit_current_with_status(status)
        }
        number => {
            counters::ENOSYS_RETURNS.fetch_add(1, Ordering::Relaxed);
            report_enosys(number);
            -ENOSYS
        }
    }
}

fn report_enosys(number: u64) {
    if number >= 512 {
        println!("extregs: linux: syscall {number} is not served: -ENOSYS");
        return;
    }
    let (word, bit) = ((number / 64) as usize, 1u64 << (number % 64));
    if ENOSYS_REPORTED[word].fetch_or(bit, Ordering::Relaxed) & bit == 0 {
        println!("extregs: linux: syscall {number} is not served: -ENOSYS");
    }
}

fn send_self(signal: u64, tkill: bool) -> i64 {
    match signal::valid_signal(signal) {
        Ok(Some(signal)) => {
            signal::send_to_self(signal, tkill);
            0
        }
        Ok(None) => 0,
        Err(errno) => errno,
    }
}

/// `write(fd, buf, len)` to the console (fd 1 and 2), in chunks through
/// `copy_from_user`; bytes that are not UTF-8 print as U+FFFD.
fn write(fd: u64, buffer: u64, length: u64) -> i64 {
    if fd != 1 && fd != 2 {
        return -EBADF;
    }
    let length = length.min(WRITE_MAX);
    if buffer.checked_add(length).is_none_or(|end| end > TASK_SIZE_MAX) {
        return -EFAULT;
    }
    let mut chunk = [0u8; 256];
    let mut done = 0;
    while done < length {
        let size = (length - done).min(chunk.len() as u64) as usize;
        if copy_from_user(&mut chunk[..size], buffer + done).is_err() {
            return if done == 0 { -EFAULT } else { done as i64 };
        }
        for piece in chunk[..size].utf8_chunks() {
            serial::print_args(format_args!("{}", piece.valid()));
            if !piece.invalid().is_empty() {
                serial::print_args(format_args!("\u{fffd}"));
            }
        }
        done += size as u64;
    }
    length as i64
}

/// `writev(fd, iov, iovcnt)`.
fn writev(fd: u64, vectors: u64, count: u64) -> i64 {
    if count > IOV_MAX {
        return -EINVAL;
    }
    let mut total = 0i64;
    for index in 0..count {
        let mut entry = [0u8; 16];
        if copy_from_user(&mut entry, vectors + index * 16).is_err() {
            return -EFAULT;
        }
        let base = u64::from_le_bytes(entry[..8].try_into().expect("8 bytes"));
        let length = u64::from_le_bytes(entry[8..].try_into().expect("8 bytes"));
        if length == 0 {
            continue;
        }
        let written = write(fd, base, length);
        if written < 0 {
            return if total == 0 { written } else { total };
        }
        total += written;
    }
    total
}

/// `fstat` of the console descriptors: a character device, as a tty is.
fn fstat(fd: u64, buffer: u64) -> i64 {
    if fd > 2 {
        return -EBADF;
    }
    const S_IFCHR: u32 = 0o020000;
    let mut stat = [0u8; 144];
    stat[24..28].copy_from_slice(&(S_IFCHR | 0o620).to_le_bytes());
    stat[16..24].copy_from_slice(&1u64.to_le_bytes());
    stat[56..64].copy_from_slice(&1024u64.to_le_bytes());
    match copy_to_user(buffer, &stat) {
        Ok(()) => 0,
        Err(_) => -EFAULT,
    }
}

fn now_ns() -> u64 {
    // SAFETY: RDTSC has no side effects.
    let tsc = unsafe { core::arch::x86_64::_rdtsc() };
    let per_ms = apic::tsc_ticks_per_ms().max(1);
    ((u128::from(tsc) * 1_000_000) / u128::from(per_ms)) as u64
}

/// `clock_gettime(clock, ts)`: every clock counts from boot (TSC).
fn clock_gettime(timespec: u64) -> i64 {
    let ns = now_ns();
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&(ns / 1_000_000_000).to_le_bytes());
    bytes[8..].copy_from_slice(&(ns % 1_000_000_000).to_le_bytes());
    match copy_to_user(timespec, &bytes) {
        Ok(()) => 0,
        Err(_) => -EFAULT,
    }
}

/// `gettimeofday(tv, tz)`: seconds and microseconds since boot; `tz`
/// ignored (Linux's is obsolete).
fn gettimeofday(timeval: u64) -> i64 {
    if timeval == 0 {
        return 0;
    }
    let ns = now_ns();
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&(ns / 1_000_000_000).to_le_bytes());
    bytes[8..].copy_from_slice(&((ns % 1_000_000_000) / 1000).to_le_bytes());
    match copy_to_user(timeval, &bytes) {
        Ok(()) => 0,
        Err(_) => -EFAULT,
    }
}

/// `nanosleep(req, rem)`: waits, rescheduling, until the time has passed.
fn nanosleep(request: u64) -> i64 {
    let mut bytes = [0u8; 16];
    if copy_from_user(&mut bytes, request).is_err() {
        return -EFAULT;
    }
    let seconds = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
    let nanoseconds = u64::from_le_bytes(bytes[8..].try_into().expect("8 bytes"));
    if nanoseconds >= 1_000_000_000 || seconds as i64 <= -1 {
        return -EINVAL;
    }
    let end =
        now_ns().saturating_add(seconds.saturating_mul(1_000_000_000)).saturating_add(nanoseconds);
    while now_ns() < end {
        sched::yield_now();
        core::hint::spin_loop();
    }
    0
}

/// `uname(buf)`: Linux, x86_64.
fn uname(buffer: u64) -> i64 {
    let mut bytes = [0u8; 6 * 65];
    for (index, field) in
        ["Linux", "extregs", "6.1.0-extregs", "#1", "x86_64", "(none)"].iter().enumerate()
    {
        bytes[index * 65..index * 65 + field.len()].copy_from_slice(field.as_bytes());
    }
    match copy_to_user(buffer, &bytes) {
        Ok(()) => 0,
        Err(_) => -EFAULT,
    }
}

/// `arch_prctl(code, addr)`: the FS and GS bases.
fn arch_prctl(code: u64, address: u64) -> i64 {
    match code {
        ARCH_SET_FS | ARCH_SET_GS => {
            if address >= TASK_SIZE_MAX {
                return -EPERM;
            }
            if code == ARCH_SET_FS {
                sched::set_current_user_fs_base(address);
            } else {
                sched::set_current_user_gs_base(address);
            }
            0
        }
        ARCH_GET_FS | ARCH_GET_GS => {
            let value = if code == ARCH_GET_FS {
                x86_64::registers::model_specific::FsBase::read().as_u64()
            } else {
                x86_64::registers::model_specific::KernelGsBase::read().as_u64()
            };
            match copy_to_user(address, &value.to_le_bytes()) {
                Ok(()) => 0,
                Err(_) => -EFAULT,
            }
        }
        _ => -EINVAL,
    }
}

/// `getrandom(buf, len, flags)`: RDRAND where the CPU has it, else a
/// TSC-seeded generator (no entropy claims: this is a test kernel).
fn getrandom(buffer: u64, length: u64) -> i64 {
    let length = length.min(256);
    let mut bytes = [0u8; 256];
    fill_random(&mut bytes[..length as usize]);
    match copy_to_user(buffer, &bytes[..length as usize]) {
        Ok(()) => length as i64,
        Err(_) => -EFAULT,
    }
}

/// Fills `bytes` with RDRAND output, or a xorshift of the TSC.
pub fn fill_random(bytes: &mut [u8]) {
    let rdrand = raw_cpuid::CpuId::new().get_feature_info().is_some_and(|info| info.has_rdrand());
    // SAFETY: RDTSC has no side effects.
    let mut state = unsafe { core::arch::x86_64::_rdtsc() } | 1;
    for chunk in bytes.chunks_mut(8) {
        let mut value = 0u64;
        // SAFETY: RDRAND exists (CPUID said so) and only writes `value`; a
        // failed draw (CF clear) leaves the xorshift value below.
        let drawn = rdrand && unsafe { core::arch::x86_64::_rdrand64_step(&mut value) } == 1;
        if !drawn {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            value = state;
        }
        chunk.copy_from_slice(&value.to_le_bytes()[..chunk.len()]);
    }
}
