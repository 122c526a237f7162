//! The Rust side of every entry: exceptions, external interrupts, and the
//! paranoid entries (NMI, #DB, #MC, #DF).
//!
//! `entry_64.S` calls [`extregs_exception_entry`] with `&mut PtRegs` and the
//! vector. It picks the generic entry the vector needs (`irqentry_nmi_*` for
//! the paranoid ones, `irqentry_*` for the rest), checks the frame
//! ([`check_frame`]), then runs the handler: the NMI handler, the IRQ
//! dispatcher, or for exceptions the per-pkey PKS fault handlers and the
//! installed trap hook. Anything unclaimed is an oops.
//!
//! This module also holds the kernel's two generic-state models: RCU
//! watching (false while idle) and the lockdep-style "hardirqs enabled"
//! flag, which mirrors IF through [`local_irq_enable`]/[`local_irq_disable`].

use crate::{fault, gdt, irq, nmi, oops, paranoid, pks, println, sched, user};
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering};
use extregs_entry::{
    irqentry_enter, irqentry_exit, irqentry_nmi_enter, irqentry_nmi_exit, EntryPlatform,
    ExitToUserWork,
};
use extregs_entry_asm::FIRST_EXTERNAL_VECTOR;
use extregs_regs::{
    ArchExtRegs, ExtendedPtRegs, PtRegs, ENTRY_SYSCALL, ENTRY_VECTOR_RECORDED, GENERIC_PTREGS_SIZE,
};
use x86_64::registers::control::Cr2;

/// A handler that may claim an exception: returns true when it handled it
/// (and may edit the frame on the way).
pub type TrapHook = fn(regs: &mut PtRegs, vector: u8) -> bool;

/// The installed hook, as a raw function pointer (null: none). An atomic
/// rather than a lock, so a trap can read it whatever the trapped code held.
static TRAP_HOOK: AtomicPtr<()> = AtomicPtr::new(core::ptr::null_mut());

/// A hook offered *every* event first (IRQs and NMIs included, a kernel #PF
/// aside, which goes to the per-pkey PKS handlers): the fuzzer's. Null:
/// none.
static EVENT_HOOK: AtomicPtr<()> = AtomicPtr::new(core::ptr::null_mut());

/// RCU model: is RCU watching this CPU? False only inside the idle loop.
static RCU_WATCHING: AtomicBool = AtomicBool::new(true);
/// Lockdep model: are hardirqs enabled? Mirrors IF (off at boot).
static HARDIRQS_ENABLED: AtomicBool = AtomicBool::new(false);

/// Frames [`check_frame`] looked at, and how many were wrong.
static FRAMES_CHECKED: AtomicU64 = AtomicU64::new(0);
static FRAME_ERRORS: AtomicU64 = AtomicU64::new(0);

pub const DEBUG_VECTOR: u8 = 1;
pub use extregs_regs::NMI_VECTOR;
pub const DOUBLE_FAULT_VECTOR: u8 = 8;
pub const SEGMENT_NOT_PRESENT_VECTOR: u8 = 11;
pub const STACK_SEGMENT_VECTOR: u8 = 12;
pub const GENERAL_PROTECTION_VECTOR: u8 = 13;
pub const PAGE_FAULT_VECTOR: u8 = 14;
pub const MACHINE_CHECK_VECTOR: u8 = 18;

/// The kernel's side of the generic entry code.
pub struct KernelPlatform;

impl EntryPlatform for KernelPlatform {
    fn rcu_is_watching() -> bool {
        RCU_WATCHING.load(Ordering::Relaxed)
    }
    fn rcu_irq_enter() {
        RCU_WATCHING.store(true, Ordering::Relaxed);
    }
    fn rcu_irq_exit() {
        RCU_WATCHING.store(false, Ordering::Relaxed);
    }
    fn lockdep_hardirqs_enabled() -> bool {
        HARDIRQS_ENABLED.load(Ordering::Relaxed)
    }
    fn lockdep_set_hardirqs_enabled(enabled: bool) {
        if fault::take_skip_lockdep_restore() {
            return;
        }
        HARDIRQS_ENABLED.store(enabled, Ordering::Relaxed);
    }
    fn arch_enter(arch: &mut ArchExtRegs) {
        pks::arch_enter(arch);
    }
    fn arch_exit(arch: &ArchExtRegs) {
        if fault::take_skip_arch_exit() {
            return;
        }
        pks::arch_exit(arch);
    }
    fn preempt_count() -> u32 {
        sched::preempt_count()
    }
    fn need_resched() -> bool {
        sched::need_resched()
    }
    fn preempt_schedule_irq() {
        sched::preempt_schedule_irq();
    }
    fn enter_from_user_mode() {
        // Context tracking: user mode is an extended quiescent state, as
        // idle is; an entry from user mode that finds RCU already watching
        // means an exit to user mode was missed.
        if RCU_WATCHING.swap(true, Ordering::Relaxed) {
            CONTEXT_TRACKING_ERRORS.fetch_add(1, Ordering::Relaxed);
        }
    }
    fn exit_to_user_mode() {
        RCU_WATCHING.store(false, Ordering::Relaxed);
    }
    fn exit_to_user_mode_work() -> ExitToUserWork {
        sched::exit_to_user_mode_work()
    }
    fn schedule_before_user_return() {
        sched::schedule_before_user_return();
    }
    fn kill_current_task() -> ! {
        sched::kill_current_task()
    }
}

/// Entries from user mode that found the context-tracking model saying
/// "kernel" (counted with the frame errors).
static CONTEXT_TRACKING_ERRORS: AtomicU64 = AtomicU64::new(0);

/// Runs `body` with `hook` offered every exception, then removes it.
pub fn with_trap_hook<T>(hook: TrapHook, body: impl FnOnce() -> T) -> T {
    TRAP_HOOK.store(hook as *mut (), Ordering::SeqCst);
    let result = body();
    TRAP_HOOK.store(core::ptr::null_mut(), Ordering::SeqCst);
    result
}

/// Runs `body` with `hook` offered every event before anything else.
pub fn with_event_hook<T>(hook: TrapHook, body: impl FnOnce() -> T) -> T {
    EVENT_HOOK.store(hook as *mut (), Ordering::SeqCst);
    let result = body();
    EVENT_HOOK.store(core::ptr::null_mut(), Ordering::SeqCst);
    result
}

fn event_hook_claims(regs: &mut PtRegs, vector: u8) -> bool {
    // A kernel #PF goes to the per-pkey PKS handlers; one from user mode is
    // offered like every other event.
    if vector == PAGE_FAULT_VECTOR && !regs.user_mode() {
        return false;
    }
    let raw = EVENT_HOOK.load(Ordering::SeqCst);
    if raw.is_null() {
        return false;
    }
    // SAFETY: only `with_event_hook` stores non-null values, each a
    // `TrapHook` cast to a pointer.
    let hook = unsafe { core::mem::transmute::<*mut (), TrapHook>(raw) };
    hook(regs, vector)
}

fn installed_hook() -> Option<TrapHook> {
    let raw = TRAP_HOOK.load(Ordering::SeqCst);
    if raw.is_null() {
        return None;
    }
    // SAFETY: the only non-null value ever stored is a `TrapHook` cast to a
    // pointer in `with_trap_hook`; fn pointers and data pointers have the same
    // size and representation on x86_64.
    Some(unsafe { core::mem::transmute::<*mut (), TrapHook>(raw) })
}

/// Is this vector one of Linux's paranoid (IST) entries?
fn is_paranoid(vector: u8) -> bool {
    matches!(vector, DEBUG_VECTOR | NMI_VECTOR | DOUBLE_FAULT_VECTOR | MACHINE_CHECK_VECTOR)
}

/// The IST stack a vector's gate switches to.
pub fn ist_index_of(vector: u8) -> Option<u16> {
    match vector {
        DOUBLE_FAULT_VECTOR => Some(gdt::DOUBLE_FAULT_IST_INDEX),
        NMI_VECTOR => Some(gdt::NMI_IST_INDEX),
        DEBUG_VECTOR => Some(gdt::DEBUG_IST_INDEX),
        MACHINE_CHECK_VECTOR => Some(gdt::MACHINE_CHECK_IST_INDEX),
        _ => None,
    }
}

/// Called by the entry stubs in entry_64.S for every vector.
///
/// # Safety
///
/// Only the entry stubs call this, with `regs` pointing at the `PtRegs` of
/// the frame they just built (extension below it) and `vector` the vector
/// they were entered through.
#[no_mangle]
pub unsafe extern "C" fn extregs_exception_entry(regs: &mut PtRegs, vector: u64) {
    let vector = vector as u8;
    if is_paranoid(vector) {
        // SAFETY: per this function's contract.
        unsafe { paranoid_entry(regs, vector) };
        return;
    }
    // #PF: CR2 first, as Linux's exc_page_fault reads it before
    // irqentry_enter. A paranoid event that lands before this line and
    // takes a #PF of its own puts CR2 back on its exit (paranoid::exit).
    let fault_address = (vector == PAGE_FAULT_VECTOR).then(Cr2::read_raw);
    // SAFETY: the stub built a whole ExtendedPtRegs around `regs`.
    unsafe { irqentry_enter::<KernelPlatform>(regs) };
    check_frame(regs, vector);
    // A hard interrupt's handler runs with HARDIRQ_OFFSET in the preempt
    // count (Linux's irq_enter_rcu/irq_exit_rcu), so an IRQ nested in it
    // never preempts; the count is back before irqentry_exit decides.
    let hardirq = usize::from(vector) >= FIRST_EXTERNAL_VECTOR;
    if hardirq {
        sched::hardirq_enter();
    }
    if hardirq && regs.user_mode() {
        user::counters::USER_IRQS.fetch_add(1, Ordering::Relaxed);
    }
    // A #GP (or #NP, #SS) on the IRETQ to user mode is the user task's
    // fault, before any hook may claim it (returning to that IRETQ would
    // fault again); Linux's error_entry checks the same three.
    if matches!(
        vector,
        SEGMENT_NOT_PRESENT_VECTOR | STACK_SEGMENT_VECTOR | GENERAL_PROTECTION_VECTOR
    ) && regs.ip == extregs_entry_asm::user_exit_addresses().1
    {
        user::bad_iret(regs);
    }
    if event_hook_claims(regs, vector) {
    } else if hardirq {
        irq::handle(regs, vector);
    } else if regs.user_mode() {
        user::handle_exception(regs, vector, fault_address);
    } else {
        handle_exception(regs, vector, fault_address);
    }
    if hardirq {
        sched::hardirq_exit();
        // The handler is done: a preemption on the way out (irqentry_exit)
        // is the task's, not IRQ context (Linux would be off the IRQ stack),
        // and a call trace from there must say so.
        // SAFETY: the stub built a whole ExtendedPtRegs around `regs` (this function's contract);
        // reaching below `regs` rests on its provenance (see ExtendedPtRegs::from_regs); the `&mut`
        // reborrows `regs` for this statement only, and nothing else refers to the frame.
        unsafe { ExtendedPtRegs::from_regs(regs) }.generic.mark_hardirq_done();
    }
    fault::before_exit(vector);
    // SAFETY: the same frame irqentry_enter ran on.
    unsafe { irqentry_exit::<KernelPlatform>(regs) };
    if regs.user_mode() {
        user::counters::IRET_EXITS.fetch_add(1, Ordering::Relaxed);
    }
}

/// NMI, #DB, #MC and #DF: [`paranoid::enter`] before anything else (DR7,
/// DR6, the #DB IST shift, CR2), then the NMI flavour of the generic entry.
/// An NMI nested in an NMI from user mode is latched before all that, and
/// the user-mode NMI's handler runs again ([`nmi::latch_inside_user_nmi`]).
///
/// #DF and #MC never return: no hook is offered them, the frame is dumped
/// and the kernel dies (a double fault's frame can't be trusted to return
/// to; a machine check in the kernel is not recoverable here).
///
/// # Safety
///
/// As [`extregs_exception_entry`].
unsafe fn paranoid_entry(regs: &mut PtRegs, vector: u8) {
    if vector == NMI_VECTOR && nmi::latch_inside_user_nmi(regs) {
        // Nested in an NMI from user mode: that one runs again instead.
        return;
    }
    let saved = paranoid::enter(vector);
    // #DB and #MC from user mode were moved to the task stack by their
    // stub; an NMI from user mode was too but stays an NMI (Linux's exc_nmi
    // does); a #DF never moves and always dies here.
    if regs.user_mode() && matches!(vector, DEBUG_VECTOR | MACHINE_CHECK_VECTOR) {
        // SAFETY: per this function's contract.
        unsafe { paranoid_entry_from_user(regs, vector, saved) };
        return;
    }
    let user_nmi = regs.user_mode() && vector == NMI_VECTOR;
    if user_nmi {
        user::counters::USER_NMIS.fetch_add(1, Ordering::Relaxed);
    }
    loop {
        // SAFETY: the stub built a whole ExtendedPtRegs around `regs`.
        unsafe { irqentry_nmi_enter::<KernelPlatform>(regs) };
        check_frame(regs, vector);
        // NMI_OFFSET in the preempt count while the handler runs (Linux's
        // __nmi_enter): nothing in it may schedule.
        sched::nmi_enter();
        match vector {
            DOUBLE_FAULT_VECTOR => oops::die_double_fault(regs),
            MACHINE_CHECK_VECTOR => oops::die_machine_check(regs),
            _ if event_hook_claims(regs, vector) => {}
            NMI_VECTOR => nmi::handle(regs),
            _ => handle_exception(regs, vector, None),
        }
        sched::nmi_exit();
        fault::before_exit(vector);
        // SAFETY: the same frame irqentry_nmi_enter ran on.
        unsafe { irqentry_nmi_exit::<KernelPlatform>(regs) };
        if !(user_nmi && nmi::restart_user_nmi()) {
            break;
        }
    }
    paranoid::exit(saved);
    if regs.user_mode() {
        user::counters::IRET_EXITS.fetch_add(1, Ordering::Relaxed);
    }
}

/// #DB or #MC from user mode (Linux's `exc_debug_user`): the frame is
/// at task_pt_regs, so it is an ordinary entry from user mode: the user
/// path of the generic entry, no NMI_OFFSET, and the exit-to-user work,
/// which may switch tasks or kill this one. So the paranoid state (DR7,
/// the #DB IST shift, CR2) is put back *before* that exit.
///
/// # Safety
///
/// As [`extregs_exception_entry`].
unsafe fn paranoid_entry_from_user(regs: &mut PtRegs, vector: u8, saved: paranoid::ParanoidState) {
    // SAFETY: the stub built a whole ExtendedPtRegs around `regs`.
    unsafe { irqentry_enter::<KernelPlatform>(regs) };
    check_frame(regs, vector);
    match vector {
        MACHINE_CHECK_VECTOR => oops::die_machine_check(regs),
        _ if event_hook_claims(regs, vector) => {}
        _ => user::handle_exception(regs, vector, None),
    }
    fault::before_exit(vector);
    paranoid::exit(saved);
    // SAFETY: the same frame irqentry_enter ran on.
    unsafe { irqentry_exit::<KernelPlatform>(regs) };
    user::counters::IRET_EXITS.fetch_add(1, Ordering::Relaxed);
}

/// An exception (not an IRQ, not #DF/#MC): the int3 the NMI selftest
/// raises, PKS faults for their key's handler, then the installed hook.
/// `fault_address`: CR2 as the #PF entry read it first thing.
fn handle_exception(regs: &mut PtRegs, vector: u8, fault_address: Option<u64>) {
    if vector == 3 && nmi::claim_int3(regs) {
        return;
    }
    if let Some(address) = fault_address {
        if pks::handle_fault(regs, address) {
            return;
        }
        LAST_FAULT_ADDRESS.store(address, Ordering::Relaxed);
    }
    let handled = installed_hook().is_some_and(|hook| hook(regs, vector));
    if !handled {
        oops::die_unhandled(regs, vector);
    }
}

/// CR2 as the last #PF entry read it, for hooks and the oops path (CR2
/// itself may have changed since: a paranoid handler puts it back only on
/// its exit).
static LAST_FAULT_ADDRESS: AtomicU64 = AtomicU64::new(0);

/// The fault address of the #PF being handled, as its entry read it.
pub fn fault_address() -> u64 {
    LAST_FAULT_ADDRESS.load(Ordering::Relaxed)
}

/// The checks every handler runs on its own frame, after the generic entry:
///
/// * RCU is watching (irqentry_enter made it watch if the CPU was idle);
/// * the extension sits exactly `GENERIC_PTREGS_SIZE` below `PtRegs`, and
///   records the vector (or SYSCALL) that entered the frame (the stub
///   wrote it; this compares it with the one the dispatcher was given);
/// * `cs`/`ss` are the kernel's selectors, or SS is null (ring 0 only);
/// * the live PKRS is the default (the arch hook installed it);
/// * a paranoid entry's frame lies on its IST stack, and the NMI's PtRegs
///   ends exactly at the copied frame at the top of the NMI stack; any
///   other frame not on an IST stack lies on the running task's stack;
/// * an NMI never interrupted code running on the NMI stack: a nested NMI
///   must have been latched by the entry, not handled (a BUG otherwise).
///
/// A failure is counted (`frame_errors` in RESULT) and reported once per
/// kind of failure; RCU not watching is a BUG, as in Linux.
pub fn check_frame(regs: &mut PtRegs, vector: u8) {
    check_frame_of(regs, Some(vector));
}

/// [`check_frame`] for the frame `entry_SYSCALL_64` built.
pub fn check_syscall_frame(regs: &mut PtRegs) {
    check_frame_of(regs, None);
}

/// The checks of a frame from user mode: Linux's selectors, exactly at
/// task_pt_regs of the running task (the extension right below it, the
/// top of its kernel stack), and user mode ran with the default PKRS.
fn check_user_frame(regs: &mut PtRegs, regs_address: u64) -> Option<&'static str> {
    user::counters::USER_FRAMES_CHECKED.fetch_add(1, Ordering::Relaxed);
    let slot = sched::current_slot();
    // SAFETY: `regs` is an entry frame (the callers' contract).
    let saved_pkrs = unsafe { ExtendedPtRegs::from_regs(regs) }.arch.pks;
    if regs.cs != u64::from(gdt::USER_CS.0) || regs.ss != u64::from(gdt::USER_DS.0) {
        Some("user frame's cs/ss are not __USER_CS/__USER_DS")
    } else if regs_address != crate::sched::task::task_pt_regs(slot) as u64 {
        Some("user frame is not at task_pt_regs of the running task")
    } else if pks::enabled() && saved_pkrs != pks::PKRS_DEFAULT {
        Some("user mode ran with a PKRS other than the default")
    } else {
        None
    }
}

fn check_frame_of(regs: &mut PtRegs, vector: Option<u8>) {
    // A SYSCALL's frame: checked as a user frame (no vector).
    let is_syscall = vector.is_none();
    let vector = vector.unwrap_or(u8::MAX);
    FRAMES_CHECKED.fetch_add(1, Ordering::Relaxed);
    if !rcu_is_watching() {
        oops::bug(regs, vector, "RCU is not watching in an interrupt handler");
    }
    // (With the fuzzer's hook installed, the fuzzer reports this itself,
    // with its seed and event path.)
    if vector == NMI_VECTOR
        && gdt::ist_stack_of(regs.sp) == Some(gdt::NMI_IST_INDEX)
        && EVENT_HOOK.load(Ordering::SeqCst).is_null()
    {
        // The entry let an NMI nest inside the NMI handler as if it were
        // the outermost one: its frame now overlays the first NMI's.
        oops::bug(regs, vector, "NMI handled while an NMI was running (not latched)");
    }
    let regs_address = regs as *mut PtRegs as u64;
    // SAFETY: `regs` is an entry-stub frame (only the IDT and SYSCALL
    // entries' handlers call this), the `&mut` theirs.
    let frame = unsafe { ExtendedPtRegs::from_regs(regs) };
    let (extension_address, recorded) = (frame as *mut _ as u64, frame.generic.vector);
    // The raw field, exactly as a stub writes it (no ENTRY_HARDIRQ_DONE a
    // stale value could carry).
    let entered =
        if is_syscall { ENTRY_SYSCALL } else { ENTRY_VECTOR_RECORDED | u16::from(vector) };
    let mut error = None;
    if regs_address - extension_address != GENERIC_PTREGS_SIZE as u64 {
        error = Some("extension is not GENERIC_PTREGS_SIZE below PtRegs");
    } else if recorded != entered {
        error = Some("the extension does not record the vector that entered the frame");
    } else if gs_base() != gdt::kernel_gs_base() {
        error = Some("GS base in the handler is not the per-CPU area (SWAPGS missed)");
    } else if CONTEXT_TRACKING_ERRORS.swap(0, Ordering::Relaxed) != 0 {
        error = Some("entry from user mode found context tracking in kernel mode");
    } else if (regs.user_mode() || is_syscall) && vector != DOUBLE_FAULT_VECTOR {
        // (A #DF from user mode stays on its IST: checked as paranoid.)
        error = check_user_frame(regs, regs_address);
    } else if regs.user_mode()
        && (regs.cs != u64::from(gdt::USER_CS.0) || regs.ss != u64::from(gdt::USER_DS.0))
    {
        error = Some("user frame's cs/ss are not __USER_CS/__USER_DS");
    } else if !regs.user_mode()
        && (regs.cs != u64::from(gdt::KERNEL_CS.0)
            || (regs.ss != u64::from(gdt::KERNEL_DS.0) && regs.ss != 0))
    {
        // SS is the kernel's, or null: a 64-bit IST switch loads a null SS,
        // so code running in an IST handler (the int3 inside an NMI) is
        // interrupted with SS = 0.
        error = Some("cs/ss are not the kernel's");
    } else if pks::enabled() && pks::read_pkrs() != pks::PKRS_DEFAULT {
        error = Some("live PKRS in the handler is not the default");
    } else if let Some(ist) = ist_index_of(vector) {
        if gdt::ist_stack_of(regs_address) != Some(ist) {
            error = Some("paranoid frame is not on its IST stack");
        } else if vector == NMI_VECTOR && regs_address != nmi::outermost_regs_address() {
            error = Some("NMI PtRegs is not built on the copied frame at the NMI stack top");
        }
    } else if gdt::ist_stack_of(regs_address).is_none() && !sched::on_current_stack(regs_address) {
        // Not on an IST stack (an exception inside a paranoid handler
        // stays there): then on the running task's own stack, where a
        // preempted frame also waits until its task runs again.
        error = Some("frame is not on the running task's stack");
    }
    if let Some(why) = error {
        if FRAME_ERRORS.fetch_add(1, Ordering::Relaxed) == 0 {
            if is_syscall {
                println!("extregs: bad SYSCALL frame: {why} (PtRegs at {regs_address:#x})");
            } else {
                println!(
                    "extregs: bad frame on vector {vector}: {why} (PtRegs at {regs_address:#x})"
                );
            }
        }
    }
}

/// The live GS base (MSR_GS_BASE).
fn gs_base() -> u64 {
    x86_64::registers::model_specific::GsBase::read().as_u64()
}

/// (frames checked, frames that failed a check) since boot.
pub fn frame_counts() -> (u64, u64) {
    (FRAMES_CHECKED.load(Ordering::Relaxed), FRAME_ERRORS.load(Ordering::Relaxed))
}

/// Is RCU watching this CPU (the model the generic entry code maintains)?
pub fn rcu_is_watching() -> bool {
    RCU_WATCHING.load(Ordering::Relaxed)
}

/// Marks this CPU as (not) watching, as entering or leaving idle does.
pub fn set_rcu_watching(watching: bool) {
    RCU_WATCHING.store(watching, Ordering::Relaxed);
}

/// The lockdep model's "hardirqs enabled".
pub fn lockdep_hardirqs_enabled() -> bool {
    HARDIRQS_ENABLED.load(Ordering::Relaxed)
}

/// `local_irq_enable()`: tell the model first, then STI (Linux's
/// `trace_hardirqs_on(); native_irq_enable()`).
pub fn local_irq_enable() {
    HARDIRQS_ENABLED.store(true, Ordering::Relaxed);
    x86_64::instructions::interrupts::enable();
}

/// `local_irq_disable()`: CLI first, then tell the model.
pub fn local_irq_disable() {
    x86_64::instructions::interrupts::disable();
    HARDIRQS_ENABLED.store(false, Ordering::Relaxed);
}

/// The model half of `local_irq_enable()`, for code that sets IF itself in
/// the same instruction sequence (the idle loop's `sti; hlt`).
pub fn local_irq_enable_model_only() {
    HARDIRQS_ENABLED.store(true, Ordering::Relaxed);
}

/// The model half of `local_irq_disable()`, after a raw `cli`.
pub fn local_irq_disable_model_only() {
    HARDIRQS_ENABLED.store(false, Ordering::Relaxed);
}
