//! Dying well: unhandled exceptions and panics print show_regs, the
//! `RESULT` line with `"ok":false`, and leave through the failure exit.

use crate::exit::{exit_qemu, ExitCode};
use crate::memory::PkeyPage;
use crate::{idt, pks, println, result, serial, show_regs, symbols};
use core::arch::asm;
use core::sync::atomic::{AtomicBool, Ordering};
use extregs_cmdline::OopsCause;
use extregs_regs::{ExtendedPtRegs, PtRegs};

/// Set by the first oops or panic; a second one (the dump itself failing)
/// leaves at once rather than recursing.
static DYING: AtomicBool = AtomicBool::new(false);

/// #PF error-code bits (SDM vol. 3 §4.7).
const PF_PRESENT: u64 = 1 << 0;
const PF_WRITE: u64 = 1 << 1;
const PF_USER: u64 = 1 << 2;
const PF_INSTRUCTION: u64 = 1 << 4;
const PF_PROTECTION_KEY: u64 = 1 << 5;

const PAGE_FAULT: u8 = 14;

pub fn begin_dying() {
    if DYING.swap(true, Ordering::SeqCst) {
        exit_qemu(ExitCode::Failure);
    }
    serial::force_unlock();
}

/// An exception nobody claimed: describe it, show_regs, fail.
pub fn die_unhandled(regs: &mut PtRegs, vector: u8) -> ! {
    begin_dying();
    println!(
        "extregs: oops: unhandled {} (vector {}){}",
        idt::exception_name(vector),
        vector,
        if regs.has_error_code() { "" } else { ", no error code" }
    );
    if regs.has_error_code() {
        println!("extregs: error code: {:#x}", regs.orig_ax);
    }
    if vector == PAGE_FAULT {
        describe_page_fault(regs);
        if let Some(ist) = crate::gdt::ist_guard_of(crate::traps::fault_address()) {
            println!(
                "extregs: stack overflow: the fault address is in the guard page below the {} IST stack",
                crate::gdt::ist_stack_name(ist)
            );
        }
    }
    // SAFETY: `regs` came from an entry stub (this is only called from
    // extregs_exception_entry).
    unsafe { show_regs::show_regs(regs) };
    crate::calltrace::print_call_trace(regs);
    finish("unhandled exception")
}

/// A double fault: never returns (no hook is asked). Names the stack the
/// fault hit when the interrupted RSP is in a guard page: the usual cause.
pub fn die_double_fault(regs: &mut PtRegs) -> ! {
    begin_dying();
    println!("extregs: oops: unhandled double fault (vector 8)");
    if regs.user_mode() {
        // The frame of the event that failed to enter is what the #DF saved;
        // what failed was the push at RSP0 (CR2 says where).
        let cr2 = x86_64::registers::control::Cr2::read_raw();
        println!(
            "extregs: double fault from user mode: the entry could not push its frame at RSP0 {:#x} (CR2 {cr2:#x})",
            crate::gdt::kernel_stack_top()
        );
        report_task_stack_guard(cr2);
    }
    match crate::gdt::ist_guard_of(regs.sp).filter(|_| !regs.user_mode()) {
        Some(ist) => println!(
            "extregs: stack overflow: RSP {:#x} is in the guard page below the {} IST stack",
            regs.sp,
            crate::gdt::ist_stack_name(ist)
        ),
        None if regs.user_mode() => {}
        None if report_task_stack_guard(regs.sp) => {}
        None if !x86_64::VirtAddr::try_new(regs.sp).is_ok_and(crate::memory::is_mapped) => {
            println!("extregs: stack overflow: RSP {:#x} is in an unmapped (guard) page", regs.sp)
        }
        None => {}
    }
    // SAFETY: `regs` came from the #DF entry stub.
    unsafe { show_regs::show_regs(regs) };
    crate::calltrace::print_call_trace(regs);
    finish("double fault")
}

/// Prints which task's stack guard page `address` is in; false when none.
fn report_task_stack_guard(address: u64) -> bool {
    let Some((pid, name)) = crate::sched::task_of_guard_page(address) else {
        return false;
    };
    println!(
        "extregs: stack overflow: {address:#x} is in the guard page below the stack of task {pid} ({name})"
    );
    true
}

/// A machine check: never returns (no hook is asked). Prints MCG_STATUS,
/// whose RIPV/EIPV/MCIP bits say whether the interrupted context could
/// have been restarted (`int $18` raises the vector with all three clear).
pub fn die_machine_check(regs: &mut PtRegs) -> ! {
    begin_dying();
    // SAFETY: MCG_STATUS exists on every CPU with MCE (QEMU's do); reading
    // it has no side effects.
    let status = unsafe { x86_64::registers::model_specific::Msr::new(0x17a).read() };
    println!(
        "extregs: oops: machine check (vector 18): MCG_STATUS {:#x} (RIPV {} EIPV {} MCIP {}): fatal in the kernel",
        status,
        status & 1,
        (status >> 1) & 1,
        (status >> 2) & 1
    );
    // SAFETY: `regs` came from the #MC entry stub.
    unsafe { show_regs::show_regs(regs) };
    crate::calltrace::print_call_trace(regs);
    finish("machine check")
}

/// A broken kernel invariant found inside a handler (Linux's `BUG()`).
pub fn bug(regs: &mut PtRegs, vector: u8, why: &str) -> ! {
    begin_dying();
    println!("extregs: BUG: {why} (vector {vector})");
    // SAFETY: `regs` came from an entry stub.
    unsafe { show_regs::show_regs(regs) };
    crate::calltrace::print_call_trace(regs);
    finish(why)
}

fn describe_page_fault(regs: &PtRegs) {
    // As the #PF entry read it first thing (CR2 may have changed since).
    let address = crate::traps::fault_address();
    let code = regs.orig_ax;
    println!(
        "BUG: {} {} at {:#018x} ({}{}{})",
        if code & PF_USER != 0 { "user" } else { "supervisor" },
        if code & PF_INSTRUCTION != 0 {
            "instruction fetch"
        } else if code & PF_WRITE != 0 {
            "write access"
        } else {
            "read access"
        },
        address,
        if code & PF_PRESENT != 0 { "protection fault" } else { "page not present" },
        if code & PF_PROTECTION_KEY != 0 { ", protection key" } else { "" },
        if code & PF_USER != 0 { ", user" } else { "" },
    );
    if code & PF_PROTECTION_KEY != 0 {
        describe_pks_violation(regs, address, code & PF_WRITE != 0);
    }
}

/// Which key, which right: the PTE names the key, the saved PKRS the rights.
fn describe_pks_violation(regs: &PtRegs, address: u64, write: bool) {
    let Some(flags) = x86_64::VirtAddr::try_new(address).ok().and_then(crate::memory::page_flags)
    else {
        println!("PKS: the faulting address has no 4 KiB mapping to name its key");
        return;
    };
    let pkey = ((flags.bits() >> crate::memory::PTE_PKEY_SHIFT) & 0xf) as u8;
    // SAFETY: `regs` came from an entry stub.
    let saved = unsafe { ExtendedPtRegs::from_regs_ref(regs) }.arch.pks;
    let rights = pks::key_rights(saved, pkey);
    let denied = match rights {
        pks::KeyRights::NoAccess => "access-disable (AD) set",
        pks::KeyRights::ReadOnly if write => "write-disable (WD) set",
        _ => "rights allow it: stale PKRS?",
    };
    println!(
        "PKS: {} of pkey {} denied: {} in saved PKRS {:08x} (key {} is {})",
        if write { "write" } else { "read" },
        pkey,
        denied,
        saved,
        pkey,
        rights.short()
    );
}

fn finish(why: &str) -> ! {
    if let Some(offset) = symbols::image_offset() {
        println!("Kernel Offset: {offset:#x}");
    }
    println!("---[ end trace ]---");
    result::emit(false, format_args!(",\"error\":\"{why}\""));
    exit_qemu(ExitCode::Failure)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    begin_dying();
    println!("extregs: panic: {info}");
    let mut frame = ExtendedPtRegs::default();
    capture_current(&mut frame.regs);
    if pks::enabled() {
        frame.arch.pks = pks::read_pkrs();
    }
    println!("extregs: registers at the panic (GPRs other than RSP/RBP not captured):");
    // SAFETY: `frame.regs` is the regs field of a whole ExtendedPtRegs.
    unsafe { show_regs::show_regs(&frame.regs) };
    crate::calltrace::print_call_trace(&frame.regs);
    finish("panic")
}

/// Fills the parts of `regs` that describe "here": RIP, RSP, RBP, CS, SS and
/// RFLAGS of the caller.
#[inline(always)]
fn capture_current(regs: &mut PtRegs) {
    let (ip, sp, bp, cs, ss, flags): (u64, u64, u64, u64, u64, u64);
    // SAFETY: only reads registers (and pushes/pops one word for RFLAGS).
    unsafe {
        asm!(
            "leaq 0(%rip), {ip}",
            "movq %rsp, {sp}",
            "movq %rbp, {bp}",
            "movq %cs, {cs}",
            "movq %ss, {ss}",
            "pushfq",
            "popq {flags}",
            ip = out(reg) ip, sp = out(reg) sp, bp = out(reg) bp,
            cs = out(reg) cs, ss = out(reg) ss, flags = out(reg) flags,
            options(att_syntax)
        );
    }
    *regs = PtRegs {
        ip,
        sp,
        bp,
        cs,
        ss,
        flags,
        orig_ax: extregs_regs::NO_ERROR_CODE,
        ..PtRegs::default()
    };
}

/// Recurses, 512 bytes of stack a level, until the stack it runs on hits
/// its guard page (the kernel stack's, or an IST stack's from inside an NMI
/// handler). Never returns on purpose.
#[allow(unconditional_recursion)]
#[inline(never)]
pub fn recurse_until_overflow(depth: u64) -> u64 {
    let mut filler = [depth; 64];
    core::hint::black_box(&mut filler);
    recurse_until_overflow(depth + 1) + filler[(depth % 64) as usize]
}

/// `mode=oops`: dies of `cause`, to show (and test) the oops path.
pub fn die_on_purpose(cause: OopsCause, pkey_page: Option<PkeyPage>) -> ! {
    println!("extregs: oops: dying on purpose ({cause:?})");
    match cause {
        OopsCause::InvalidOpcode => oops_invalid_opcode(),
        OopsCause::GeneralProtection => oops_general_protection(),
        OopsCause::PksViolation => match pkey_page {
            Some(page) => oops_pks_violation(page.address.as_u64()),
            None => {
                println!("extregs: error: cause=pks needs a CPU with PKS (try -cpu max)");
                result::emit(false, format_args!(",\"error\":\"no PKS\""));
                exit_qemu(ExitCode::Failure)
            }
        },
        OopsCause::Panic => panic!("deliberate panic (mode=oops cause=panic)"),
        OopsCause::StackOverflow => with_claim_everything_hooks(oops_stack_overflow),
        OopsCause::NmiStackOverflow => oops_nmi_stack_overflow(),
        OopsCause::MachineCheck => with_claim_everything_hooks(oops_machine_check),
        OopsCause::TaskStackOverflow => oops_task_stack_overflow(),
        OopsCause::UserDoubleFault => oops_user_double_fault(),
        OopsCause::Nested => oops_nested(),
        OopsCause::BrokenChain => oops_broken_chain(),
    }
}

/// `cause=broken-chain`: overwrites this function's saved copy of its
/// caller's RBP with an address outside every stack, then executes ud2.
/// The oops's call trace reaches the caller (`die_on_purpose`) and stops
/// there with a marker; the older callers, which only the stack still
/// holds, print as `? ` entries.
#[inline(never)]
fn oops_broken_chain() -> ! {
    // SAFETY: the word at RBP is the slot this function's prologue pushed, in no Rust allocation
    // and under no reference; the asm writes it through the register. Only a return would use it
    // (this never returns: the #UD's oops ends the VM); the unwinder reads it to show the break.
    unsafe { asm!("movq $0xdead000, (%rbp)", "ud2", options(att_syntax, noreturn)) }
}

/// `cause=nested`: init takes a timer IRQ; the IRQ's handler executes
/// int3; the int3's handler sends a self-NMI, which arrives at once (no NMI
/// is running); the NMI's handler BUGs with `ud2`. The #UD's oops shows the
/// NMI handler's frames on the NMI stack, then each interrupt frame crossed
/// (NMI, int3, IRQ) with its registers and extension, down to init's own.
fn oops_nested() -> ! {
    crate::traps::with_event_hook(nested_hook, || {
        crate::apic::start_timer(crate::apic::TimerMode::OneShot, 1);
        loop {
            // SAFETY: IF is on only for the HLT; the timer's handler (the hook) never returns
            // here: its chain ends in the NMI's BUG, which ends the kernel. Not `nomem`: the
            // handlers write memory this loop's caller may read.
            unsafe { asm!("sti", "hlt", "cli", options(nostack)) };
        }
    })
}

/// The three handlers of [`oops_nested`] (the hook sees every vector).
fn nested_hook(regs: &mut PtRegs, vector: u8) -> bool {
    const INT3: u8 = 3;
    const NMI: u8 = 2;
    const INVALID_OPCODE: u8 = 6;
    match vector {
        crate::apic::TIMER_VECTOR => {
            crate::apic::eoi();
            // SAFETY: int3 is a trap this hook handles; IRET comes back after it.
            unsafe { asm!("int3", options(nostack)) };
            true
        }
        INT3 => {
            crate::apic::send_self_nmi();
            // The NMI arrives right after the ICR write; wait for it anyway.
            for _ in 0..1_000_000 {
                core::hint::spin_loop();
            }
            bug(regs, vector, "the self-NMI never came (mode=oops cause=nested)")
        }
        NMI => {
            // SAFETY: ud2 raises #UD, which this hook sends to `bug` (never returns).
            unsafe { asm!("ud2", options(nostack, noreturn)) }
        }
        INVALID_OPCODE => bug(regs, vector, "the NMI handler (mode=oops cause=nested)"),
        _ => false,
    }
}

/// A user task breaks its own kernel stack top on purpose (a test syscall,
/// answered only in this mode) and executes int3: the CPU's push of the
/// frame at RSP0 faults in the guard page, so does the #PF's, and the #DF
/// that follows comes from user mode. It must stay on the DF IST stack and
/// die with a dump of the user frame; init waits for the task meanwhile.
fn oops_user_double_fault() -> ! {
    crate::user::syscall::allow_breaking_the_kernel_stack();
    match crate::user::spawn(
        format_args!("user-df"),
        crate::user::programs::BREAK_KERNEL_STACK,
        0,
        0,
    ) {
        Ok(handle) => {
            let status = crate::sched::wait(handle);
            println!("extregs: error: the user task ended with status {status}, no #DF");
        }
        Err(why) => println!("extregs: error: spawning the user task: {why:?}"),
    }
    finish("no double fault from user mode")
}

/// A kernel task recurses into the guard page below its own stack; init
/// waits for it (the #DF ends the run first).
fn oops_task_stack_overflow() -> ! {
    fn overflow(_: usize) {
        let stack_here = 0u8;
        println!(
            "extregs: task {} recursing from rsp ~{:#x} into its stack's guard page",
            crate::sched::current_pid(),
            &stack_here as *const u8 as u64
        );
        let sum = recurse_until_overflow(0);
        println!("extregs: error: recursion returned {sum}: no guard page below the task stack?");
    }
    match crate::sched::spawn(format_args!("overflow"), overflow, 0) {
        Ok(handle) => {
            crate::sched::wait(handle);
        }
        Err(why) => println!("extregs: error: spawning the overflowing task: {why:?}"),
    }
    finish("task stack overflow did not fault")
}

/// A hook that claims every event it is offered: installed as both the
/// trap hook and the event hook by the #DF and #MC causes, to show that
/// those two never return through a hook.
fn claim_everything(_: &mut PtRegs, _: u8) -> bool {
    true
}

fn with_claim_everything_hooks(die: fn() -> !) -> ! {
    crate::traps::with_trap_hook(claim_everything, || {
        crate::traps::with_event_hook(claim_everything, || die())
    })
}

/// `int $18` enters through the #MC gate (its IST, the paranoid entry)
/// without the MCE banks: fatal, whatever hooks are installed.
fn oops_machine_check() -> ! {
    if pks::enabled() {
        // SAFETY: PKS is on; key 0 stays read/write. (A non-default PKRS,
        // so the dump shows the extension saved it.)
        unsafe {
            pks::write_pkrs(pks::with_key_rights(pks::PKRS_DEFAULT, 1, pks::KeyRights::ReadWrite))
        };
    }
    // SAFETY: the #MC entry never returns (it dies with a dump).
    unsafe { asm!("int $18", "ud2", options(att_syntax, noreturn)) }
}

/// Recurses inside an NMI handler until the NMI IST stack runs into its
/// guard page: the #PF can't push its frame there, so the CPU raises #DF
/// (on the DF stack), which names the NMI stack's guard page.
fn oops_nmi_stack_overflow() -> ! {
    crate::nmi::set_action(crate::nmi::NmiAction::RecurseUntilOverflow);
    crate::apic::send_self_nmi();
    // The NMI is delivered at once and never returns; a kernel that gets
    // here has no NMI or no guard page.
    for _ in 0..100_000_000u64 {
        core::hint::spin_loop();
    }
    println!("extregs: error: the NMI handler returned: no guard page below the NMI stack?");
    finish("NMI stack overflow did not fault")
}

/// Recurses until the kernel stack runs into its guard page. The #PF that
/// follows can't push its frame on the same stack, so the CPU raises #DF,
/// which runs on its own IST stack and dumps the overflowed frame.
fn oops_stack_overflow() -> ! {
    let stack_here = 0u8;
    println!(
        "extregs: recursing from rsp ~{:#x} into the kernel stack's guard page",
        &stack_here as *const u8 as u64
    );
    let sum = recurse_until_overflow(0);
    println!("extregs: error: recursion returned {sum}: no guard page below the stack?");
    finish("stack overflow did not fault")
}

#[inline(never)]
fn oops_invalid_opcode() -> ! {
    // SAFETY: ud2 raises #UD, which nothing claims: the oops path ends the VM.
    unsafe { asm!("ud2", options(att_syntax, noreturn)) }
}

#[inline(never)]
fn oops_general_protection() -> ! {
    // SAFETY: the load from a non-canonical address raises #GP, which
    // nothing claims: the oops path ends the VM.
    unsafe {
        asm!(
            "movabsq $0x8000000000000000, %rax",
            "movq (%rax), %rax",
            "ud2",
            options(att_syntax, noreturn)
        )
    }
}

#[inline(never)]
fn oops_pks_violation(address: u64) -> ! {
    // SAFETY: the page's key is access-disabled in the default PKRS, so the
    // load raises #PF with the PK bit, which nothing claims.
    unsafe {
        asm!(
            "movq ({address}), %rax",
            "ud2",
            address = in(reg) address,
            options(att_syntax, noreturn)
        )
    }
}
