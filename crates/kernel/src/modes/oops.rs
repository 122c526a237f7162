//! `mode=oops cause=…`: the kernel dies on purpose, to show (and test)
//! every way the oops path (`debug::oops`) can be reached: an unclaimed
//! exception, a panic, a double fault from a stack overflow (the kernel
//! stack, a task's, the NMI stack's, or a user task's kernel stack), a
//! machine check, a nested event chain, and a broken frame-pointer chain.

use crate::arch::exit::{exit_qemu, ExitCode};
use crate::arch::idt::{
    BREAKPOINT_VECTOR, DOUBLE_FAULT_VECTOR, INVALID_OPCODE_VECTOR, MACHINE_CHECK_VECTOR, NMI_VECTOR,
};
use crate::arch::memory::PkeyPage;
use crate::arch::pks;
use crate::debug::{oops, result};
use crate::entry::hooks;
use core::arch::asm;
use extregs_cmdline::{OopsCause, OopsCpu};
use extregs_regs::PtRegs;

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

/// The cause and pkey page AP `cpu=` dies of ([`die_on_cpu`]).
static AP_CAUSE: spin::Once<(OopsCause, Option<PkeyPage>)> = spin::Once::new();

/// How long CPU 0 waits for the AP it asked to die (the AP's oops stops
/// CPU 0 long before).
const AP_DEATH_TIMEOUT_MS: u64 = 10_000;

/// `mode=oops cause=… cpu=K`: CPU K dies of `cause`, in its idle task
/// (`sched::ap::run_on_ap`), while CPU 0 waits; the AP's oops stops CPU 0 with
/// an NMI and prints the one dump and RESULT. `cpu=all`: every online CPU
/// dies of it at once, CPU 0 right after it asked the others, and still
/// one dump comes out. A CPU that is not online, or a cause that needs CPU
/// 0's scheduler, is refused.
pub fn die_on_cpu(cpu: OopsCpu, cause: OopsCause, pkey_page: Option<PkeyPage>) -> ! {
    let victims = match cpu {
        OopsCpu::Cpu(0) => die_on_purpose(cause, pkey_page),
        OopsCpu::Cpu(cpu) => {
            let cpu = cpu as usize;
            if !crate::arch::smp::cpu_online(cpu) {
                refuse_cpu(format_args!("cpu={cpu}: CPU {cpu} is not online"));
            }
            cpu..cpu + 1
        }
        OopsCpu::All => 1..extregs_regs::NR_CPUS,
    };
    if matches!(cause, OopsCause::TaskStackOverflow | OopsCause::UserDoubleFault) {
        refuse_cpu(format_args!(
            "cause={cause:?} runs tasks, which only CPU 0 schedules: use cpu=0"
        ));
    }
    if matches!(
        cause,
        OopsCause::MachineCheckWalk
            | OopsCause::StackOverflowWalk
            | OopsCause::UserMachineCheckWalk
    ) {
        refuse_cpu(format_args!(
            "cause={cause:?} walks with the one spare IDT and one walk state: use cpu=0"
        ));
    }
    AP_CAUSE.call_once(|| (cause, pkey_page));
    let asked = || crate::arch::smp::online_cpus().filter(|(c, _)| victims.contains(c));
    for (victim, _) in asked() {
        println!("extregs: oops: asking CPU {victim} to die");
    }
    // No print between the wake-ups: the CPUs die as close together as
    // they can.
    for (victim, apic_id) in asked() {
        crate::sched::ap::run_on_ap(victim, apic_id, || {
            let (cause, pkey_page) = *AP_CAUSE.get().expect("die_on_cpu set the cause");
            die_on_purpose(cause, pkey_page)
        });
    }
    if cpu == OopsCpu::All {
        die_on_purpose(cause, pkey_page);
    }
    // Nothing here ends the wait: the AP's oops stops this CPU first.
    crate::modes::selftest::wait_until(
        || false,
        crate::arch::apic::tsc_ticks_per_ms() * AP_DEATH_TIMEOUT_MS,
    );
    println!("extregs: error: CPU {} did not die within {AP_DEATH_TIMEOUT_MS} ms", victims.start);
    result::emit(false, format_args!(",\"error\":\"the CPU did not die\""));
    exit_qemu(ExitCode::Failure)
}

/// A `cpu=` the kernel can't honour: one `extregs: error:` line, RESULT,
/// the failure exit.
fn refuse_cpu(why: core::fmt::Arguments<'_>) -> ! {
    println!("extregs: error: {why}");
    result::emit(false, format_args!(",\"error\":\"bad cpu=\""));
    exit_qemu(ExitCode::Failure)
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
        OopsCause::MachineCheckWalk => {
            super::oops_walk::walked(MACHINE_CHECK_VECTOR, oops_machine_check)
        }
        OopsCause::StackOverflowWalk => {
            super::oops_walk::walked(DOUBLE_FAULT_VECTOR, oops_stack_overflow)
        }
        OopsCause::UserMachineCheckWalk => super::oops_walk::walked_from_user_machine_check(),
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
    hooks::with_event_hook(nested_hook, || {
        crate::arch::apic::start_timer(crate::arch::apic::TimerMode::OneShot, 1);
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
    match vector {
        crate::arch::apic::TIMER_VECTOR => {
            crate::arch::apic::eoi();
            // SAFETY: int3 is a trap this hook handles; IRET comes back after it.
            unsafe { asm!("int3", options(nostack)) };
            true
        }
        BREAKPOINT_VECTOR => {
            crate::arch::apic::send_self_nmi();
            // The NMI arrives right after the ICR write; wait for it anyway.
            for _ in 0..1_000_000 {
                core::hint::spin_loop();
            }
            oops::bug(regs, vector, "the self-NMI never came (mode=oops cause=nested)")
        }
        NMI_VECTOR => {
            // SAFETY: ud2 raises #UD, which this hook sends to `bug` (never returns).
            unsafe { asm!("ud2", options(nostack, noreturn)) }
        }
        INVALID_OPCODE_VECTOR => {
            oops::bug(regs, vector, "the NMI handler (mode=oops cause=nested)")
        }
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
    oops::finish("no double fault from user mode")
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
    oops::finish("task stack overflow did not fault")
}

/// A hook that claims every event it is offered: installed as both the
/// trap hook and the event hook by the #DF and #MC causes, to show that
/// those two never return through a hook.
fn claim_everything(_: &mut PtRegs, _: u8) -> bool {
    true
}

fn with_claim_everything_hooks(die: fn() -> !) -> ! {
    hooks::with_trap_hook(claim_everything, || hooks::with_event_hook(claim_everything, || die()))
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

/// What the NMI's handler calls in `cause=nmi-stack-overflow`: never
/// returns (the guard page below the NMI stack ends it in a #DF).
fn overflow_the_nmi_stack() {
    recurse_until_overflow(0);
}

/// Recurses inside an NMI handler until the NMI IST stack runs into its
/// guard page: the #PF can't push its frame there, so the CPU raises #DF
/// (on the DF stack), which names the NMI stack's guard page.
fn oops_nmi_stack_overflow() -> ! {
    crate::entry::nmi::call_in_next_nmi(overflow_the_nmi_stack);
    crate::arch::apic::send_self_nmi();
    // The NMI is delivered at once and never returns; a kernel that gets
    // here has no NMI or no guard page.
    for _ in 0..100_000_000u64 {
        core::hint::spin_loop();
    }
    println!("extregs: error: the NMI handler returned: no guard page below the NMI stack?");
    oops::finish("NMI stack overflow did not fault")
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
    oops::finish("stack overflow did not fault")
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
