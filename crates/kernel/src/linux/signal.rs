//! Linux's signals for a process: handlers, the blocked and pending sets,
//! the alternate stack, delivery on the way back to user mode, and
//! `rt_sigreturn`.
//!
//! Delivery is the exit-to-user work loop's (`arch_do_signal`): every
//! return to user mode checks for a pending, unblocked signal, and
//! [`do_signal`] rewrites the one user frame it gets, `&mut PtRegs` at
//! `task_pt_regs`, to enter the handler, with Linux's `rt_sigframe` on the
//! user stack (`extregs_regs::linux_signal`). Nothing else is passed: the
//! process is the running task's, found from the CPU.
//!
//! Exceptions from user mode become signals here ([`force_fault`]) with
//! Linux's `si_code`, `trapno`, `err` and `cr2`. A signal whose action is
//! the default and which terminates ends the task with status 128 + the
//! signal; the default-ignored ones (SIGCHLD, SIGCONT, SIGURG, SIGWINCH)
//! and the stop signals (no job control here) are dropped. Standard and
//! real-time signals alike are kept as one pending bit each (real-time
//! ones do not queue).

use super::errno::*;
use super::{counters, with_current};
use crate::arch::fpu::FxState;
use crate::arch::idt::{
    GENERAL_PROTECTION_VECTOR, SEGMENT_NOT_PRESENT_VECTOR, STACK_SEGMENT_VECTOR,
};
use crate::arch::uaccess::{copy_from_user, copy_to_user};
use crate::sched::{self, user_state};
use core::sync::atomic::{AtomicU64, Ordering};
use extregs_regs::linux_signal::*;
use extregs_regs::{selectors, PtRegs, NO_ERROR_CODE, X86_EFLAGS_RF, X86_EFLAGS_TF};

pub const SIGILL: u32 = 4;
pub const SIGTRAP: u32 = 5;
pub const SIGBUS: u32 = 7;
pub const SIGFPE: u32 = 8;
pub const SIGKILL: u32 = 9;
pub const SIGSEGV: u32 = 11;
pub const SIGSTOP: u32 = 19;
const SIGCHLD: u32 = 17;
const SIGCONT: u32 = 18;
const SIGTSTP: u32 = 20;
const SIGTTIN: u32 = 21;
const SIGTTOU: u32 = 22;
const SIGURG: u32 = 23;
const SIGWINCH: u32 = 28;
const SIGSYS: u32 = 31;
/// Signals 1..=64.
pub const NSIG: u32 = 64;

const SIG_DFL: u64 = 0;
const SIG_IGN: u64 = 1;

const SA_SIGINFO: u64 = 0x4;
const SA_RESTORER: u64 = 0x0400_0000;
const SA_ONSTACK: u64 = 0x0800_0000;
const SA_RESTART: u64 = 0x1000_0000;
const SA_NODEFER: u64 = 0x4000_0000;
const SA_RESETHAND: u64 = 0x8000_0000;
/// The flags Linux keeps (`UAPI_SA_FLAGS`: SA_NOCLDSTOP, SA_NOCLDWAIT,
/// SA_SIGINFO, SA_EXPOSE_TAGBITS and the rest; SA_UNSUPPORTED is cleared):
/// the others are cleared, not refused, so a libc that sign-extends (musl)
/// still works.
const SA_KNOWN: u64 = 0x1
    | 0x2
    | SA_SIGINFO
    | 0x800
    | SA_RESTORER
    | SA_ONSTACK
    | SA_RESTART
    | SA_NODEFER
    | SA_RESETHAND;

const SS_ONSTACK: i32 = 1;
const SS_DISABLE: i32 = 2;
const SS_AUTODISARM: i32 = 1 << 31;

/// `si_code` values.
const SI_USER: i32 = 0;
const SI_KERNEL: i32 = 0x80;
const SI_TKILL: i32 = -6;
const ILL_ILLOPN: i32 = 2;
const FPE_INTDIV: i32 = 1;
const FPE_FLTINV: i32 = 7;
const SEGV_MAPERR: i32 = 1;
const SEGV_ACCERR: i32 = 2;
const BUS_ADRALN: i32 = 1;
const TRAP_BRKPT: i32 = 1;
const TRAP_TRACE: i32 = 2;
const TRAP_HWBKPT: i32 = 4;

/// The RFLAGS bits `rt_sigreturn` takes from the frame (Linux's
/// `FIX_EFLAGS`): the arithmetic flags, DF, TF, RF and AC. IF, IOPL, NT
/// and VM stay as the kernel keeps them.
const FIX_EFLAGS: u64 =
    0x1 | 0x4 | 0x10 | 0x40 | 0x80 | 0x100 | 0x400 | 0x800 | 0x1_0000 | 0x4_0000;
/// What a handler starts without (Linux's `handle_signal`).
const HANDLER_CLEARS: u64 = X86_EFLAGS_TF | X86_EFLAGS_RF | 0x400;

fn bit(signal: u32) -> u64 {
    1 << (signal - 1)
}

/// Where the last delivery and the last `rt_sigreturn` found the user
/// frame (`&PtRegs` as an address): the selftests check both are
/// `task_pt_regs`.
pub static LAST_DELIVERY_FRAME: AtomicU64 = AtomicU64::new(0);
pub static LAST_SIGRETURN_FRAME: AtomicU64 = AtomicU64::new(0);

/// SIGKILL and SIGSTOP: never blocked, caught or ignored.
const UNBLOCKABLE: u64 = (1 << (SIGKILL - 1)) | (1 << (SIGSTOP - 1));
/// The synchronous signals, delivered before any other (Linux's
/// `SYNCHRONOUS_MASK`).
const SYNCHRONOUS: u64 = (1 << (SIGSEGV - 1))
    | (1 << (SIGBUS - 1))
    | (1 << (SIGILL - 1))
    | (1 << (SIGTRAP - 1))
    | (1 << (SIGFPE - 1))
    | (1 << (SIGSYS - 1));

/// The kernel's `struct sigaction` (x86-64): handler, flags, restorer,
/// mask.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SigAction {
    pub handler: u64,
    pub flags: u64,
    pub restorer: u64,
    pub mask: u64,
}

/// The trap behind the last exception-made signal (Linux's
/// `thread.trap_nr`, `error_code`, `cr2`): every signal frame reports it.
#[derive(Clone, Copy, Debug, Default)]
struct LastTrap {
    trapno: u64,
    err: u64,
    cr2: u64,
}

/// A process's signal state.
pub struct SignalState {
    actions: [SigAction; NSIG as usize],
    pub blocked: u64,
    pending: u64,
    infos: [SigInfo; NSIG as usize],
    alt_stack: StackT,
    last_trap: LastTrap,
}

impl SignalState {
    pub const fn new() -> SignalState {
        SignalState {
            actions: [SigAction { handler: 0, flags: 0, restorer: 0, mask: 0 }; NSIG as usize],
            blocked: 0,
            pending: 0,
            infos: [SigInfo {
                si_signo: 0,
                si_errno: 0,
                si_code: 0,
                padding: 0,
                first: 0,
                rest: [0; 13],
            }; NSIG as usize],
            alt_stack: StackT { ss_sp: 0, ss_flags: SS_DISABLE, padding: 0, ss_size: 0 },
            last_trap: LastTrap { trapno: 0, err: 0, cr2: 0 },
        }
    }

    fn deliverable(&self) -> u64 {
        self.pending & !self.blocked
    }

    /// Is a signal pending and not blocked?
    pub fn has_deliverable(&self) -> bool {
        self.deliverable() != 0
    }

    fn queue(&mut self, signal: u32, info: SigInfo) {
        if self.pending & bit(signal) == 0 {
            self.infos[signal as usize - 1] = info;
        }
        self.pending |= bit(signal);
    }

    /// Is `sp` inside the alternate stack (Linux's `__on_sig_stack`)?
    fn inside_alt_stack(&self, sp: u64) -> bool {
        self.alt_stack.ss_size != 0
            && sp > self.alt_stack.ss_sp
            && sp - self.alt_stack.ss_sp <= self.alt_stack.ss_size
    }

    /// Linux's `on_sig_stack`: an SS_AUTODISARM stack counts as never in
    /// use (it is disarmed while a handler runs on it).
    fn on_alt_stack(&self, sp: u64) -> bool {
        self.alt_stack.ss_flags & SS_AUTODISARM == 0 && self.inside_alt_stack(sp)
    }

    /// Linux's `sas_ss_flags(sp)`: disabled, in use, or neither (0).
    fn sas_ss_flags(&self, sp: u64) -> i32 {
        if self.alt_stack.ss_size == 0 {
            SS_DISABLE
        } else if self.on_alt_stack(sp) {
            SS_ONSTACK
        } else {
            0
        }
    }

    /// `ss_flags` as `sigaltstack` reports them.
    fn alt_stack_flags(&self, sp: u64) -> i32 {
        self.sas_ss_flags(sp) | (self.alt_stack.ss_flags & SS_AUTODISARM)
    }
}

/// Does the default action of `signal` ignore it?
fn ignored_by_default(signal: u32) -> bool {
    matches!(signal, SIGCHLD | SIGCONT | SIGURG | SIGWINCH | SIGSTOP | SIGTSTP | SIGTTIN | SIGTTOU)
}

fn info_of(signal: u32, code: i32, first: u64) -> SigInfo {
    SigInfo { si_signo: signal as i32, si_code: code, first, ..SigInfo::default() }
}

/// Sends `signal` to the running process from itself (`kill`, `tkill`,
/// `tgkill`).
pub fn send_to_self(signal: u32, code_is_tkill: bool) {
    let pid = u64::from(sched::current_pid());
    let code = if code_is_tkill { SI_TKILL } else { SI_USER };
    with_current(|process| process.signals.queue(signal, info_of(signal, code, pid)));
}

/// An exception from user mode in a Linux process becomes its signal
/// (Linux's `do_trap`, `do_general_protection`, `exc_page_fault`'s
/// `bad_area`, `exc_debug_user`), forced: blocked or ignored, it is
/// unblocked and its action reset to the default (Linux's
/// `force_sig_info`). When the default action will end the process,
/// Linux's message for it is printed now (`show_signal_msg`).
pub fn force_fault(regs: &mut PtRegs, vector: u8, fault_address: Option<u64>) {
    let debug_status = crate::entry::paranoid::debug_status();
    let error_code = if regs.has_error_code() { regs.orig_ax } else { 0 };
    let (signal, code, address) = match vector {
        0 => (SIGFPE, FPE_INTDIV, regs.ip),
        1 => {
            let code = if debug_status & (1 << 14) != 0 {
                TRAP_TRACE
            } else if debug_status & 0xf != 0 {
                TRAP_HWBKPT
            } else {
                TRAP_BRKPT
            };
            (SIGTRAP, code, regs.ip)
        }
        3 => (SIGTRAP, SI_KERNEL, 0),
        6 => (SIGILL, ILL_ILLOPN, regs.ip),
        16 | 19 => (SIGFPE, FPE_FLTINV, regs.ip),
        14 => {
            // Linux's bad_area (no mapping) or access_error (a mapping
            // without the right): the mapping decides, not the P bit.
            let address = fault_address.unwrap_or(0);
            let code = if with_current(|process| process.mm.covers(address)) {
                SEGV_ACCERR
            } else {
                SEGV_MAPERR
            };
            (SIGSEGV, code, address)
        }
        SEGMENT_NOT_PRESENT_VECTOR | STACK_SEGMENT_VECTOR => (SIGBUS, SI_KERNEL, 0),
        GENERAL_PROTECTION_VECTOR => (SIGSEGV, SI_KERNEL, 0),
        17 => (SIGBUS, BUS_ADRALN, regs.ip),
        _ => (SIGSEGV, SI_KERNEL, 0),
    };
    let fatal = with_current(|process| {
        let signals = &mut process.signals;
        signals.last_trap = LastTrap {
            trapno: u64::from(vector),
            err: error_code,
            cr2: fault_address.unwrap_or(0),
        };
        let index = signal as usize - 1;
        if signals.blocked & bit(signal) != 0 || signals.actions[index].handler == SIG_IGN {
            signals.actions[index].handler = SIG_DFL;
            signals.blocked &= !bit(signal);
        }
        signals.queue(signal, info_of(signal, code, address));
        signals.actions[index].handler == SIG_DFL
    });
    if fatal {
        let text = with_current(|process| (process.name, process.text.clone()));
        crate::user::report_linux_fault(regs, vector, fault_address, error_code, signal, text);
    }
}

/// Forces SIGSEGV after a frame that could not be written or read
/// (Linux's `force_sigsegv`): a handler for SIGSEGV itself is reset first,
/// so the next try ends the process.
fn force_sigsegv(signals: &mut SignalState, failed_signal: u32) {
    if failed_signal == SIGSEGV {
        signals.actions[SIGSEGV as usize - 1].handler = SIG_DFL;
    }
    signals.blocked &= !bit(SIGSEGV);
    signals.queue(SIGSEGV, info_of(SIGSEGV, SI_KERNEL, 0));
}

/// Delivers the next pending, unblocked signal to the user frame `regs`:
/// drops it, ends the process, or enters its handler. Interrupts off (the
/// exit-to-user loop).
pub fn do_signal(regs: &mut PtRegs) {
    let slot = sched::current_slot();
    LAST_DELIVERY_FRAME.store(regs as *mut PtRegs as u64, Ordering::Relaxed);
    let outcome = with_current(|process| {
        let signals = &mut process.signals;
        let ready = signals.deliverable();
        if ready == 0 {
            return None;
        }
        let chosen = if ready & SYNCHRONOUS != 0 { ready & SYNCHRONOUS } else { ready };
        let signal = chosen.trailing_zeros() + 1;
        signals.pending &= !bit(signal);
        let info = signals.infos[signal as usize - 1];
        let action = signals.actions[signal as usize - 1];
        match action.handler {
            SIG_IGN => None,
            SIG_DFL if ignored_by_default(signal) => None,
            SIG_DFL => Some(Err(signal)),
            _ => Some(Ok(setup_frame(slot, signals, regs, signal, action, info))),
        }
    });
    match outcome {
        Some(Err(signal)) => sched::force_fatal_signal(signal),
        Some(Ok(true)) => {
            counters::SIGNALS_DELIVERED.fetch_add(1, Ordering::Relaxed);
        }
        _ => {}
    }
}

/// Builds the `rt_sigframe` for `signal` on the user stack and points
/// `regs` at the handler (Linux's `get_sigframe`, `x64_setup_rt_frame`,
/// `handle_signal`). False when the frame could not be written (SIGSEGV
/// is forced instead).
fn setup_frame(
    slot: usize,
    signals: &mut SignalState,
    regs: &mut PtRegs,
    signal: u32,
    action: SigAction,
    info: SigInfo,
) -> bool {
    if action.flags & SA_RESTORER == 0 {
        // x86-64 has no vDSO restorer here: without one the handler could
        // not return (Linux refuses the same way).
        force_sigsegv(signals, signal);
        return false;
    }
    // Linux's get_sigframe: below the red zone, or at the top of the
    // alternate stack when the handler asks for it and it is not in use.
    let nested_on_alt_stack = signals.on_alt_stack(regs.sp);
    let mut sp = regs.sp.wrapping_sub(RED_ZONE);
    let mut entering_alt_stack = false;
    if action.flags & SA_ONSTACK != 0 && signals.sas_ss_flags(sp) == 0 {
        // Wrapping: a user-chosen stack may wrap; the copy below then
        // fails and SIGSEGV is forced, as on Linux.
        sp = signals.alt_stack.ss_sp.wrapping_add(signals.alt_stack.ss_size);
        entering_alt_stack = true;
    }
    let fpstate = (sp.wrapping_sub(FPSTATE_SIZE as u64)) & !(FPSTATE_ALIGN - 1);
    let frame_address =
        (fpstate.wrapping_sub(core::mem::size_of::<RtSigFrame>() as u64) & !15).wrapping_sub(8);
    // A frame that would leave the alternate stack it started on overflows
    // it: SIGSEGV instead (Linux returns a bogus address for the same).
    let overflowed_alt_stack =
        (nested_on_alt_stack || entering_alt_stack) && !signals.inside_alt_stack(frame_address);
    let trap = signals.last_trap;
    let frame = RtSigFrame {
        pretcode: action.restorer,
        uc: UContext {
            uc_flags: UC_SIGCONTEXT_SS | UC_STRICT_RESTORE_SS,
            uc_link: 0,
            uc_stack: StackT {
                ss_sp: signals.alt_stack.ss_sp,
                // Linux's __save_altstack: the flags as sigaltstack set them.
                ss_flags: signals.alt_stack.ss_flags,
                padding: 0,
                ss_size: signals.alt_stack.ss_size,
            },
            uc_mcontext: SigContext {
                r8: regs.r8,
                r9: regs.r9,
                r10: regs.r10,
                r11: regs.r11,
                r12: regs.r12,
                r13: regs.r13,
                r14: regs.r14,
                r15: regs.r15,
                di: regs.di,
                si: regs.si,
                bp: regs.bp,
                bx: regs.bx,
                dx: regs.dx,
                ax: regs.ax,
                cx: regs.cx,
                sp: regs.sp,
                ip: regs.ip,
                flags: regs.flags,
                cs: regs.cs as u16,
                gs: 0,
                fs: 0,
                ss: regs.ss as u16,
                err: trap.err,
                trapno: trap.trapno,
                oldmask: signals.blocked,
                cr2: trap.cr2,
                fpstate,
                reserved1: [0; 8],
            },
            uc_sigmask: signals.blocked,
        },
        info,
    };
    // The FPU image: the live registers (this task's), then the handler
    // starts from the reset state (Linux's `fpu__clear_user_states`).
    let mut image = [0u8; FPSTATE_SIZE];
    // SAFETY: the body leaves the reset image.
    unsafe {
        user_state::with_current_fpu_state(slot, |state| {
            image.copy_from_slice(&state.0);
            *state = FxState::initial();
        })
    };
    // Bytes 464..512 are software-reserved (`sw_reserved`): no XSAVE
    // magic here, so zero.
    image[464..].fill(0);
    let written = !overflowed_alt_stack
        && copy_to_user(fpstate, &image).is_ok()
        && copy_to_user(frame_address, &frame.to_bytes()).is_ok();
    if !written {
        // The interrupted state stays as it was: put its registers back.
        // SAFETY: `image` is the FXSAVE output taken above (its software-reserved bytes zeroed,
        // which FXRSTOR ignores).
        unsafe {
            user_state::with_current_fpu_state(slot, |state| state.0.copy_from_slice(&image))
        };
        force_sigsegv(signals, signal);
        return false;
    }
    regs.di = u64::from(signal);
    regs.si = frame_address + FRAME_INFO_OFFSET;
    regs.dx = frame_address + FRAME_UC_OFFSET;
    regs.ax = 0;
    regs.ip = action.handler;
    regs.sp = frame_address;
    regs.flags &= !HANDLER_CLEARS;
    regs.cs = u64::from(selectors::USER_CS);
    regs.ss = u64::from(selectors::USER_DS);
    regs.orig_ax = NO_ERROR_CODE;
    signals.blocked |= action.mask & !UNBLOCKABLE;
    if action.flags & SA_NODEFER == 0 {
        signals.blocked |= bit(signal);
    }
    if action.flags & SA_RESETHAND != 0 {
        signals.actions[signal as usize - 1] = SigAction::default();
    }
    // Linux's `__save_altstack`: an SS_AUTODISARM stack is disarmed by every
    // delivery, once its state is in the frame.
    if signals.alt_stack.ss_flags & SS_AUTODISARM != 0 {
        signals.alt_stack = StackT { ss_sp: 0, ss_flags: SS_DISABLE, padding: 0, ss_size: 0 };
    }
    true
}

/// `rt_sigreturn()`: restores the interrupted context from the frame the
/// handler returned from (RSP - 8: its `ret` popped `pretcode`). CS and SS
/// are forced to the user selectors, RFLAGS takes only [`FIX_EFLAGS`] from
/// the frame, an fpstate with reserved MXCSR bits is refused; a frame that
/// can't be read or is refused forces SIGSEGV. Returns the restored
/// `%rax`.
pub fn sigreturn(regs: &mut PtRegs) -> i64 {
    let slot = sched::current_slot();
    LAST_SIGRETURN_FRAME.store(regs as *mut PtRegs as u64, Ordering::Relaxed);
    let frame_address = regs.sp.wrapping_sub(8);
    let mut bytes = [0u8; 440];
    let frame =
        copy_from_user(&mut bytes, frame_address).ok().map(|()| RtSigFrame::from_bytes(bytes));
    let Some(frame) = frame else {
        with_current(|process| force_sigsegv(&mut process.signals, 0));
        return regs.ax as i64;
    };
    let context = frame.uc.uc_mcontext;
    let mut fpu = FxState::initial();
    if context.fpstate != 0 {
        let loaded = copy_from_user(&mut fpu.0, context.fpstate).is_ok();
        if !loaded || fpu.check_from_user().is_err() {
            with_current(|process| force_sigsegv(&mut process.signals, 0));
            return regs.ax as i64;
        }
    }
    regs.r8 = context.r8;
    regs.r9 = context.r9;
    regs.r10 = context.r10;
    regs.r11 = context.r11;
    regs.r12 = context.r12;
    regs.r13 = context.r13;
    regs.r14 = context.r14;
    regs.r15 = context.r15;
    regs.di = context.di;
    regs.si = context.si;
    regs.bp = context.bp;
    regs.bx = context.bx;
    regs.dx = context.dx;
    regs.ax = context.ax;
    regs.cx = context.cx;
    regs.sp = context.sp;
    regs.ip = context.ip;
    regs.flags = (regs.flags & !FIX_EFLAGS) | (context.flags & FIX_EFLAGS);
    regs.cs = u64::from(selectors::USER_CS);
    regs.ss = u64::from(selectors::USER_DS);
    regs.orig_ax = NO_ERROR_CODE;
    x86_64::instructions::interrupts::without_interrupts(|| {
        // SAFETY: `fpu` is the reset image or passed `check_from_user` above.
        unsafe { user_state::with_current_fpu_state(slot, |state| *state = fpu) };
    });
    with_current(|process| {
        let signals = &mut process.signals;
        signals.blocked = frame.uc.uc_sigmask & !UNBLOCKABLE;
        let _ = set_alt_stack(signals, &frame.uc.uc_stack, context.sp);
    });
    counters::SIGRETURNS.fetch_add(1, Ordering::Relaxed);
    context.ax as i64
}

/// `sigaltstack`'s change, shared with `rt_sigreturn`'s restore.
fn set_alt_stack(signals: &mut SignalState, new: &StackT, sp: u64) -> Result<(), i64> {
    if signals.on_alt_stack(sp) {
        return Err(-EPERM);
    }
    let mode = new.ss_flags & !SS_AUTODISARM;
    if mode == SS_DISABLE {
        signals.alt_stack = StackT { ss_sp: 0, ss_flags: SS_DISABLE, padding: 0, ss_size: 0 };
        return Ok(());
    }
    if mode != 0 && mode != SS_ONSTACK {
        return Err(-EINVAL);
    }
    if new.ss_size < MIN_SIGNAL_STACK {
        return Err(-ENOMEM);
    }
    signals.alt_stack =
        StackT { ss_sp: new.ss_sp, ss_flags: new.ss_flags, padding: 0, ss_size: new.ss_size };
    Ok(())
}

fn read_stack_t(address: u64) -> Result<StackT, i64> {
    let mut bytes = [0u8; 24];
    copy_from_user(&mut bytes, address).map_err(|_| -EFAULT)?;
    let word = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    Ok(StackT { ss_sp: word(0), ss_flags: word(8) as u32 as i32, padding: 0, ss_size: word(16) })
}

/// `sigaltstack(new, old)`.
pub fn sigaltstack(new: u64, old: u64, sp: u64) -> i64 {
    let new = if new != 0 {
        match read_stack_t(new) {
            Ok(stack) => Some(stack),
            Err(errno) => return errno,
        }
    } else {
        None
    };
    with_current(|process| {
        let signals = &mut process.signals;
        let previous = StackT {
            ss_sp: signals.alt_stack.ss_sp,
            ss_flags: signals.alt_stack_flags(sp),
            padding: 0,
            ss_size: signals.alt_stack.ss_size,
        };
        if let Some(new) = new {
            if let Err(errno) = set_alt_stack(signals, &new, sp) {
                return errno;
            }
        }
        if old != 0 {
            let mut bytes = [0u8; 24];
            bytes[..8].copy_from_slice(&previous.ss_sp.to_le_bytes());
            bytes[8..12].copy_from_slice(&previous.ss_flags.to_le_bytes());
            bytes[16..].copy_from_slice(&previous.ss_size.to_le_bytes());
            if copy_to_user(old, &bytes).is_err() {
                return -EFAULT;
            }
        }
        0
    })
}

/// `rt_sigaction(signal, act, oldact, sigsetsize)`.
pub fn sigaction(signal: u64, new: u64, old: u64, set_size: u64) -> i64 {
    if set_size != 8 {
        return -EINVAL;
    }
    if signal == 0 || signal > u64::from(NSIG) {
        return -EINVAL;
    }
    let signal = signal as u32;
    let new = if new != 0 {
        if bit(signal) & UNBLOCKABLE != 0 {
            return -EINVAL;
        }
        let mut bytes = [0u8; 32];
        if copy_from_user(&mut bytes, new).is_err() {
            return -EFAULT;
        }
        let word = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
        Some(SigAction {
            handler: word(0),
            flags: word(8) & SA_KNOWN,
            restorer: word(16),
            mask: word(24) & !UNBLOCKABLE,
        })
    } else {
        None
    };
    with_current(|process| {
        let signals = &mut process.signals;
        let previous = signals.actions[signal as usize - 1];
        if let Some(new) = new {
            signals.actions[signal as usize - 1] = new;
            let now_ignored =
                new.handler == SIG_IGN || (new.handler == SIG_DFL && ignored_by_default(signal));
            if now_ignored {
                signals.pending &= !bit(signal);
            }
        }
        if old != 0 {
            let mut bytes = [0u8; 32];
            for (index, word) in
                [previous.handler, previous.flags, previous.restorer, previous.mask]
                    .iter()
                    .enumerate()
            {
                bytes[index * 8..index * 8 + 8].copy_from_slice(&word.to_le_bytes());
            }
            if copy_to_user(old, &bytes).is_err() {
                return -EFAULT;
            }
        }
        0
    })
}

/// `rt_sigprocmask(how, set, oldset, sigsetsize)`.
pub fn sigprocmask(how: u64, set: u64, old: u64, set_size: u64) -> i64 {
    const SIG_BLOCK: u64 = 0;
    const SIG_UNBLOCK: u64 = 1;
    const SIG_SETMASK: u64 = 2;
    if set_size != 8 {
        return -EINVAL;
    }
    let new = if set != 0 {
        let mut bytes = [0u8; 8];
        if copy_from_user(&mut bytes, set).is_err() {
            return -EFAULT;
        }
        if how > SIG_SETMASK {
            return -EINVAL;
        }
        Some(u64::from_le_bytes(bytes))
    } else {
        None
    };
    with_current(|process| {
        let signals = &mut process.signals;
        let previous = signals.blocked;
        if let Some(new) = new {
            signals.blocked = match how {
                SIG_BLOCK => previous | new,
                SIG_UNBLOCK => previous & !new,
                _ => new,
            } & !UNBLOCKABLE;
        }
        if old != 0 && copy_to_user(old, &previous.to_le_bytes()).is_err() {
            return -EFAULT;
        }
        0
    })
}

/// `rt_sigpending(set, sigsetsize)`.
pub fn sigpending(set: u64, set_size: u64) -> i64 {
    if set_size > 8 {
        return -EINVAL;
    }
    let pending = with_current(|process| process.signals.pending & process.signals.blocked);
    if copy_to_user(set, &pending.to_le_bytes()[..set_size as usize]).is_err() {
        return -EFAULT;
    }
    0
}

/// Checks a signal number from `kill`/`tkill`: 0 (probe) or 1..=64.
pub fn valid_signal(signal: u64) -> Result<Option<u32>, i64> {
    match signal {
        0 => Ok(None),
        1..=64 => Ok(Some(signal as u32)),
        _ => Err(-EINVAL),
    }
}
