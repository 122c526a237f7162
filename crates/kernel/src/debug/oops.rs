//! Dying well: unhandled exceptions and panics print show_regs, the
//! `RESULT` line with `"ok":false`, and leave through the failure exit.

use crate::arch::exit::{exit_qemu, ExitCode};
use crate::arch::idt::{self, PAGE_FAULT_VECTOR};
use crate::arch::percpu::this_cpu;
use crate::arch::{apic, smp};
use crate::arch::{gdt, pks, serial};
use crate::debug::{result, show_regs, symbols};
use core::arch::asm;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use extregs_regs::NR_CPUS;
use extregs_regs::{ExtendedPtRegs, PtRegs};

/// The CPU that oopsed or panicked first, plus one (0: none). It alone
/// prints the dump and the RESULT; a second oops on it (the dump itself
/// failing) leaves at once rather than recursing, and an oops on any other
/// CPU meanwhile stops that CPU silently (Linux's panic: the first CPU
/// wins, the others are stopped).
static DYING_CPU: AtomicUsize = AtomicUsize::new(0);

/// The CPUs that stopped because another one is dying.
static STOPPED: [AtomicBool; NR_CPUS] = [const { AtomicBool::new(false) }; NR_CPUS];

/// How long the dying CPU waits for the others to stop (Linux's
/// `smp_send_stop` waits up to a second too).
const STOP_TIMEOUT_MS: u64 = 1000;

/// #PF error-code bits (SDM vol. 3 §4.7).
const PF_PRESENT: u64 = 1 << 0;
const PF_WRITE: u64 = 1 << 1;
const PF_USER: u64 = 1 << 2;
const PF_INSTRUCTION: u64 = 1 << 4;
const PF_PROTECTION_KEY: u64 = 1 << 5;

/// Starts an oops: the first CPU to get here wins. It stops every other
/// CPU with an NMI (Linux's "stop other CPUs" on panic), so nothing else
/// prints or runs, then takes the console from whoever held it. A second
/// oops on the winner (the dump itself failing) exits at once; an oops on
/// another CPU meanwhile stops that CPU instead of printing a second dump.
pub fn begin_dying() {
    let me = this_cpu();
    match DYING_CPU.compare_exchange(0, me + 1, Ordering::SeqCst, Ordering::SeqCst) {
        Ok(_) => {}
        Err(owner) if owner == me + 1 => exit_qemu(ExitCode::Failure),
        Err(_) => stop_this_cpu(None),
    }
    stop_other_cpus();
    serial::force_unlock();
}

/// Is another CPU dying? Then this one must stop (its NMI handler asks
/// first thing).
pub fn another_cpu_is_dying() -> bool {
    let owner = DYING_CPU.load(Ordering::SeqCst);
    owner != 0 && owner != this_cpu() + 1
}

/// The stopped CPU whose turn it is to print its backtrace, plus one
/// (0: nobody's), and the CPUs that have printed theirs.
static BACKTRACE_TURN: AtomicUsize = AtomicUsize::new(0);
static BACKTRACE_DONE: [AtomicBool; NR_CPUS] = [const { AtomicBool::new(false) }; NR_CPUS];

/// How long the dying CPU waits for each stopped CPU's backtrace.
const BACKTRACE_TIMEOUT_MS: u64 = 1000;

/// Stops this CPU for good: it says so, waits for its turn to print its
/// backtrace after the dying CPU's dump (`regs`: the frame of the NMI that
/// stopped it; None when it stopped itself because it was dying too), then
/// `hlt`s with interrupts off until the dying CPU ends the machine. Inside
/// the NMI the dying CPU sent, NMIs stay blocked (no IRET comes), so the
/// CPU is quiet.
pub fn stop_this_cpu(regs: Option<&PtRegs>) -> ! {
    let me = this_cpu();
    STOPPED[me].store(true, Ordering::SeqCst);
    while BACKTRACE_TURN.load(Ordering::SeqCst) != me + 1 {
        core::hint::spin_loop();
    }
    match regs {
        Some(regs) => {
            println!("NMI backtrace for cpu {me}");
            // SAFETY: `regs` is the frame of the NMI that stopped this CPU, its extension below.
            unsafe { show_regs::show_regs(regs) };
            crate::debug::calltrace::print_call_trace_here();
        }
        None => println!("NMI backtrace for cpu {me} skipped: it oopsed too, after CPU {}", {
            DYING_CPU.load(Ordering::SeqCst).saturating_sub(1)
        }),
    }
    BACKTRACE_DONE[me].store(true, Ordering::SeqCst);
    loop {
        // SAFETY: stops this CPU; nothing it held is given back, which is the point (the dying
        // CPU forces the console lock). Not `nomem`: an NMI (outside an NMI handler) may still
        // come and its handler writes memory.
        unsafe { asm!("cli", "hlt", options(nostack)) };
    }
}

/// The dying CPU's part: an NMI to every other CPU, whose handler stops it,
/// and a bounded wait for each online one to say so; one that does not is
/// named (it may be spinning with NMIs blocked).
fn stop_other_cpus() {
    let me = this_cpu();
    // An AP that dies before it is online may have no local APIC set up
    // to send with: the others are not stopped, its dump still comes out.
    if !smp::cpu_online(me) {
        return;
    }
    let others = || smp::online_cpus().map(|(cpu, _)| cpu).filter(move |&cpu| cpu != me);
    if others().next().is_none() {
        return;
    }
    // To each online CPU by APIC ID, never by shorthand: a CPU the MADT
    // lists that is not online (left out, or still on its way up) must not
    // get an NMI it has no IDT for.
    for (_, apic_id) in smp::online_cpus().filter(|&(cpu, _)| cpu != me) {
        apic::send_nmi(apic_id);
    }
    let ticks = apic::tsc_ticks_per_ms() * STOP_TIMEOUT_MS;
    // SAFETY: RDTSC has no side effects.
    let start = unsafe { core::arch::x86_64::_rdtsc() };
    while others().any(|cpu| !STOPPED[cpu].load(Ordering::SeqCst))
        // SAFETY: as above.
        && unsafe { core::arch::x86_64::_rdtsc() } - start < ticks
    {
        core::hint::spin_loop();
    }
    serial::force_unlock();
    for cpu in others().filter(|&cpu| !STOPPED[cpu].load(Ordering::SeqCst)) {
        println!("extregs: oops: CPU {cpu} did not stop within {STOP_TIMEOUT_MS} ms");
    }
}

/// An exception nobody claimed: describe it, show_regs, fail.
/// `fault_address`: a #PF's CR2, as its entry read it.
pub fn die_unhandled(regs: &mut PtRegs, vector: u8, fault_address: Option<u64>) -> ! {
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
    if let (PAGE_FAULT_VECTOR, Some(address)) = (vector, fault_address) {
        describe_page_fault(regs, address);
        if let Some(ist) = gdt::ist_guard_of(address) {
            println!(
                "extregs: stack overflow: the fault address is in the guard page below the {} IST stack",
                crate::arch::gdt::ist_stack_name(ist)
            );
        }
    }
    // SAFETY: `regs` came from an entry stub (this is only called from
    // extregs_exception_entry).
    unsafe { show_regs::show_regs(regs) };
    crate::debug::calltrace::print_call_trace(regs);
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
            crate::arch::gdt::kernel_stack_top()
        );
        report_task_stack_guard(cr2);
    }
    match crate::arch::gdt::ist_guard_of(regs.sp).filter(|_| !regs.user_mode()) {
        Some(ist) => println!(
            "extregs: stack overflow: RSP {:#x} is in the guard page below the {} IST stack",
            regs.sp,
            crate::arch::gdt::ist_stack_name(ist)
        ),
        None if regs.user_mode() => {}
        None if report_task_stack_guard(regs.sp) => {}
        None if !x86_64::VirtAddr::try_new(regs.sp).is_ok_and(crate::arch::memory::is_mapped) => {
            println!("extregs: stack overflow: RSP {:#x} is in an unmapped (guard) page", regs.sp)
        }
        None => {}
    }
    // SAFETY: `regs` came from the #DF entry stub.
    unsafe { show_regs::show_regs(regs) };
    crate::debug::calltrace::print_call_trace(regs);
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
    crate::debug::calltrace::print_call_trace(regs);
    finish("machine check")
}

/// A broken kernel invariant found inside a handler (Linux's `BUG()`).
pub fn bug(regs: &mut PtRegs, vector: u8, why: &str) -> ! {
    begin_dying();
    println!("extregs: BUG: {why} (vector {vector})");
    // SAFETY: `regs` came from an entry stub.
    unsafe { show_regs::show_regs(regs) };
    crate::debug::calltrace::print_call_trace(regs);
    finish(why)
}

/// `address`: CR2 as the #PF entry read it first thing (CR2 may have
/// changed since).
fn describe_page_fault(regs: &PtRegs, address: u64) {
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
    let Some(flags) =
        x86_64::VirtAddr::try_new(address).ok().and_then(crate::arch::memory::page_flags)
    else {
        println!("PKS: the faulting address has no 4 KiB mapping to name its key");
        return;
    };
    let pkey = ((flags.bits() >> crate::arch::memory::PTE_PKEY_SHIFT) & 0xf) as u8;
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

/// Ends an oops: the kernel offset, the end marker, a failed `RESULT`
/// naming `why`, and the failure exit.
pub fn finish(why: &str) -> ! {
    if let Some(offset) = symbols::image_offset() {
        println!("Kernel Offset: {offset:#x}");
    }
    println!("---[ end trace ]---");
    backtrace_stopped_cpus();
    result::emit(false, format_args!(",\"error\":\"{why}\""));
    exit_qemu(ExitCode::Failure)
}

/// After the dump: every CPU that stopped prints its backtrace in turn
/// (Linux's panic prints all CPUs' backtraces the same way), the console
/// handed to it while the dying CPU waits (bounded; one that does not
/// finish is named).
fn backtrace_stopped_cpus() {
    let me = this_cpu();
    for (cpu, _) in smp::online_cpus().filter(|&(cpu, _)| cpu != me) {
        if !STOPPED[cpu].load(Ordering::SeqCst) {
            continue;
        }
        serial::force_unlock_for(cpu);
        BACKTRACE_TURN.store(cpu + 1, Ordering::SeqCst);
        let ticks = apic::tsc_ticks_per_ms() * BACKTRACE_TIMEOUT_MS;
        // SAFETY: RDTSC has no side effects.
        let start = unsafe { core::arch::x86_64::_rdtsc() };
        while !BACKTRACE_DONE[cpu].load(Ordering::SeqCst)
            // SAFETY: as above.
            && unsafe { core::arch::x86_64::_rdtsc() } - start < ticks
        {
            core::hint::spin_loop();
        }
        BACKTRACE_TURN.store(0, Ordering::SeqCst);
        serial::force_unlock();
        if !BACKTRACE_DONE[cpu].load(Ordering::SeqCst) {
            println!(
                "extregs: oops: CPU {cpu} printed no backtrace within {BACKTRACE_TIMEOUT_MS} ms"
            );
        }
    }
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
    crate::debug::calltrace::print_call_trace(&frame.regs);
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
