//! The NMI handler, and the evidence the nested-NMI selftest needs.
//!
//! `entry_64.S` runs this through `irqentry_nmi_enter`/`irqentry_nmi_exit`
//! on the NMI IST stack (see its nested-NMI comment). The handler counts
//! NMIs and logs their frames; on request it executes an `int3` whose
//! handler sends a self-NMI, which is the deterministic way to make a second
//! NMI arrive while the first is still running.
//!
//! Nothing here takes a lock that interrupted code might hold: the logs are
//! `try_lock`ed and skipped when busy.

use crate::arch::apic;
use crate::arch::gdt;
use crate::arch::gdt::nmi_nesting_state as nmi_state;
use crate::arch::hook_slot::HookSlot;
use crate::arch::percpu::PerCpu;
use crate::entry::events::{observe, Observed};
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use extregs_regs::NR_CPUS;
use extregs_regs::{nmi_state as state, IretFrame, NmiStackTop, PtRegs};
use memoffset::offset_of;
use spin::Mutex;

static NMI_COUNT: AtomicU64 = AtomicU64::new(0);
/// NMIs each CPU handled, and the APIC ID its handler last read: an NMI
/// IPI's proof that it reached the CPU it was sent to.
static CPU_NMIS: PerCpu<AtomicU64> = PerCpu::new([const { AtomicU64::new(0) }; NR_CPUS]);
static CPU_NMI_APIC_ID: PerCpu<AtomicU32> =
    PerCpu::new([const { AtomicU32::new(u32::MAX) }; NR_CPUS]);

/// Frames of the NMIs since the last [`take_log`] (at most [`LOG_SIZE`]).
pub const LOG_SIZE: usize = 4;
static LOG: PerCpu<Mutex<([Option<Observed>; LOG_SIZE], usize)>> =
    PerCpu::new([const { Mutex::new(([None; LOG_SIZE], 0)) }; NR_CPUS]);

/// What the next NMI does beyond counting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum NmiAction {
    Nothing = 0,
    /// Execute `int3`; its handler sends a self-NMI (the nested-NMI test).
    Int3ThenSelfNmi = 1,
}

static ACTION: PerCpu<AtomicU8> =
    PerCpu::new([const { AtomicU8::new(NmiAction::Nothing as u8) }; NR_CPUS]);
/// A function the next NMI calls, once (`mode=oops
/// cause=nmi-stack-overflow` recurses there until the NMI stack overflows).
static NEXT_NMI_CALL: PerCpu<HookSlot<fn()>> = PerCpu::new([const { HookSlot::empty() }; NR_CPUS]);
/// Set while the handler's own `int3` is outstanding.
static INT3_ARMED: PerCpu<AtomicBool> = PerCpu::new([const { AtomicBool::new(false) }; NR_CPUS]);

/// What the outermost NMI saw after its `int3` returned.
#[derive(Clone, Copy, Debug)]
pub struct NestedEvidence {
    /// The int3 taken inside the NMI handler.
    pub int3: Observed,
    /// The NMI nesting state after the int3's IRETQ (PENDING if the second
    /// NMI arrived and was latched).
    pub state_after_int3: u8,
    /// The top of the NMI stack at that moment.
    pub stack_top: NmiStackTop,
}

static EVIDENCE: PerCpu<Mutex<Option<NestedEvidence>>> =
    PerCpu::new([const { Mutex::new(None) }; NR_CPUS]);
static INT3_OBSERVED: PerCpu<Mutex<Option<Observed>>> =
    PerCpu::new([const { Mutex::new(None) }; NR_CPUS]);

/// The second latch, for NMIs nested in an NMI from user mode (Linux's
/// per-CPU `nmi_state` in `exc_nmi`, arch/x86/kernel/nmi.c). An NMI from
/// user mode runs on the task stack with NMIs blocked, until an exception
/// inside its handler returns with IRETQ and unblocks them. An NMI then
/// arrives from kernel mode, which the stub's latch (the NMI nesting state,
/// for NMIs nested in a kernel-mode NMI) sees as outermost: it gets its own
/// frame on the NMI stack and reaches [`latch_inside_user_nmi`], which
/// latches it, and the user-mode NMI runs its handler again
/// ([`restart_user_nmi`]), as Linux's `nmi_restart` does.
static USER_NMI_STATE: PerCpu<AtomicU8> =
    PerCpu::new([const { AtomicU8::new(USER_NMI_NOT_RUNNING) }; NR_CPUS]);
const USER_NMI_NOT_RUNNING: u8 = 0;
const USER_NMI_EXECUTING: u8 = 1;
const USER_NMI_LATCHED: u8 = 2;
static USER_NMIS_LATCHED: AtomicU64 = AtomicU64::new(0);
/// Where the last NMI latched inside an NMI from user mode landed (0:
/// taken), for the coverage of its repeat ([`take_latched_ip`]).
static LATCHED_IP: PerCpu<AtomicU64> = PerCpu::new([const { AtomicU64::new(0) }; NR_CPUS]);

/// First thing for every NMI (before its generic entry). From user mode:
/// marks an NMI from user mode running and returns false. From kernel mode
/// inside such an NMI's handler: latches it and returns true (the caller
/// returns at once; the user-mode NMI will run again). Otherwise false.
pub fn latch_inside_user_nmi(regs: &PtRegs) -> bool {
    if regs.user_mode() {
        // NMIs are blocked from the event until an IRETQ, so none from user
        // mode can come while one from user mode runs.
        let before = USER_NMI_STATE.this().swap(USER_NMI_EXECUTING, Ordering::SeqCst);
        debug_assert_eq!(before, USER_NMI_NOT_RUNNING, "an NMI from user mode inside another");
        return false;
    }
    if USER_NMI_STATE.this().load(Ordering::SeqCst) == USER_NMI_NOT_RUNNING {
        return false;
    }
    USER_NMI_STATE.this().store(USER_NMI_LATCHED, Ordering::SeqCst);
    USER_NMIS_LATCHED.fetch_add(1, Ordering::Relaxed);
    LATCHED_IP.this().store(regs.ip, Ordering::Relaxed);
    true
}

/// Runs `body` with this CPU's user-NMI latch saying an NMI from user mode
/// is running, as inside one (for the test that another CPU's latch is not
/// this one's). A kernel-mode NMI on this CPU meanwhile is latched.
pub fn with_user_nmi_marked_running<T>(body: impl FnOnce() -> T) -> T {
    let before = USER_NMI_STATE.this().swap(USER_NMI_EXECUTING, Ordering::SeqCst);
    let result = body();
    USER_NMI_STATE.this().store(before, Ordering::SeqCst);
    result
}

/// In a handler run of an NMI from user mode: where the NMI latched since
/// its last run landed (kernel code in its handler), if one was.
pub fn take_latched_ip() -> Option<u64> {
    Some(LATCHED_IP.this().swap(0, Ordering::Relaxed)).filter(|&ip| ip != 0)
}

/// Last thing for an NMI from user mode (after its generic exit): true if
/// an NMI was latched meanwhile, so the handler must run again on the same
/// frame. One decrement, as Linux's `this_cpu_dec_return(nmi_state)`: an
/// NMI landing right after it finds the state clear and runs on its own.
pub fn restart_user_nmi() -> bool {
    let before = USER_NMI_STATE.this().fetch_sub(1, Ordering::SeqCst);
    debug_assert_ne!(before, USER_NMI_NOT_RUNNING, "no NMI from user mode was running");
    before == USER_NMI_LATCHED
}

/// NMIs latched inside an NMI from user mode since boot.
pub fn user_nmis_latched() -> u64 {
    USER_NMIS_LATCHED.load(Ordering::Relaxed)
}

/// NMIs CPU `cpu` handled since boot, and the APIC ID its handler read at
/// the last one (`u32::MAX` before the first).
pub fn count_on(cpu: usize) -> (u64, u32) {
    (CPU_NMIS.of(cpu).load(Ordering::SeqCst), CPU_NMI_APIC_ID.of(cpu).load(Ordering::SeqCst))
}

/// NMIs this CPU handled since boot.
pub fn count_this_cpu() -> u64 {
    CPU_NMIS.this().load(Ordering::SeqCst)
}

/// NMIs handled since boot, on every CPU (each repeat of the handler
/// counts).
pub fn count() -> u64 {
    NMI_COUNT.load(Ordering::SeqCst)
}

/// Makes this CPU's next NMI's handler call `call` (once).
pub fn call_in_next_nmi(call: fn()) {
    NEXT_NMI_CALL.this().set(call);
}

/// Runs `call` on CPU `cpu`, in its NMI handler: sets that CPU's next-NMI
/// call and sends it an NMI IPI (Linux's `smp_call_function_single`, over
/// NMI so it reaches the CPU whatever it has masked). Does not wait: the
/// caller waits for what `call` does.
pub fn call_on(cpu: usize, apic_id: u32, call: fn()) {
    NEXT_NMI_CALL.of(cpu).set(call);
    apic::send_nmi(apic_id);
}

/// Arms `action` for the next NMI only.
pub fn set_action(action: NmiAction) {
    ACTION.this().store(action as u8, Ordering::SeqCst);
}

/// The logged NMI frames, oldest first, clearing the log.
pub fn take_log() -> ([Option<Observed>; LOG_SIZE], usize) {
    core::mem::replace(&mut *LOG.this().lock(), ([None; LOG_SIZE], 0))
}

/// The nested-NMI evidence of the last `Int3ThenSelfNmi` NMI, clearing it.
pub fn take_evidence() -> Option<NestedEvidence> {
    EVIDENCE.this().lock().take()
}

/// The top of the NMI IST stack, where the entry keeps the landing zone and
/// the outermost NMI's copied frame.
fn stack_top_address() -> u64 {
    gdt::nmi_stack_top() as u64
}

/// Where the outermost NMI's `PtRegs` must be: ending exactly at the copied
/// frame (`iret_copy` is its `ip..ss`).
pub fn outermost_regs_address() -> u64 {
    stack_top_address() + offset_of!(NmiStackTop, iret_copy) as u64 - offset_of!(PtRegs, ip) as u64
}

/// A snapshot of the NMI stack top.
pub fn read_stack_top() -> NmiStackTop {
    // Only this CPU's hardware pushes and NMI stub write those bytes, never while it reads here.
    // SAFETY: derived from the IST area's static (gdt::nmi_stack_top), in bounds, u64-aligned, no
    // Rust reference covers it; a volatile read of plain integers can't be invalid.
    unsafe { core::ptr::read_volatile(gdt::nmi_stack_top()) }
}

/// The NMI handler proper (after `irqentry_nmi_enter`).
pub fn handle(regs: &mut PtRegs) {
    // Another CPU oopsed and sent this NMI to stop this one.
    if crate::debug::oops::another_cpu_is_dying() {
        crate::debug::oops::stop_this_cpu(Some(regs));
    }
    NMI_COUNT.fetch_add(1, Ordering::SeqCst);
    CPU_NMIS.this().fetch_add(1, Ordering::SeqCst);
    CPU_NMI_APIC_ID.this().store(apic::id(), Ordering::SeqCst);
    crate::entry::backtrace::nmi_cpu_backtrace(regs);
    apic::note_probed_pic_nmi();
    if let Some(mut log) = LOG.this().try_lock() {
        let (entries, length) = &mut *log;
        if *length < LOG_SIZE {
            // SAFETY: `regs` is the NMI stub's frame.
            entries[*length] = Some(unsafe { observe(regs, 2) });
            *length += 1;
        }
    }
    if let Some(call) = NEXT_NMI_CALL.this().take() {
        call();
    }
    let action = ACTION.this().swap(NmiAction::Nothing as u8, Ordering::SeqCst);
    if action == NmiAction::Int3ThenSelfNmi as u8 {
        INT3_ARMED.this().store(true, Ordering::SeqCst);
        // SAFETY: int3 is a trap that claim_int3 handles; IRET resumes after it with every GPR
        // back from the frame. Not `nomem`: that handler writes INT3_OBSERVED and INT3_ARMED,
        // which this one reads next, so the block must count as a memory access.
        unsafe { core::arch::asm!("int3", options(nostack)) };
        // The int3's IRETQ unblocked NMIs, so the self-NMI its handler sent
        // arrives here, nested, and must only be latched. Give it a moment.
        let mut spins = 0u32;
        while nmi_state() != state::PENDING && spins < 1_000_000 {
            core::hint::spin_loop();
            spins += 1;
        }
        let evidence_int3 = INT3_OBSERVED.this().try_lock().and_then(|mut o| o.take());
        if let (Some(int3), Some(mut evidence)) = (evidence_int3, EVIDENCE.this().try_lock()) {
            *evidence = Some(NestedEvidence {
                int3,
                state_after_int3: nmi_state(),
                stack_top: read_stack_top(),
            });
        }
    }
}

/// The `int3` handler's part: claims the int3 the NMI handler executed and
/// sends the self-NMI from inside it (still blocked: NMIs stay blocked until
/// this int3 returns).
pub fn claim_int3(regs: &mut PtRegs) -> bool {
    if !INT3_ARMED.this().swap(false, Ordering::SeqCst) {
        return false;
    }
    if let Some(mut observed) = INT3_OBSERVED.this().try_lock() {
        // SAFETY: `regs` is the int3 stub's frame.
        *observed = Some(unsafe { observe(regs, 3) });
    }
    apic::send_self_nmi();
    true
}

/// The copied frame of the outermost NMI as an IretFrame (for the tests).
pub fn frame_of(regs: &PtRegs) -> IretFrame {
    IretFrame { ip: regs.ip, cs: regs.cs, flags: regs.flags, sp: regs.sp, ss: regs.ss }
}
