//! `mode=oops cause=machine-check-walk`, `cause=stack-overflow-walk` and
//! `cause=user-machine-check-walk`: the breakpoint walk (see the
//! selftests' walks) of an entry that never returns. A walk over #MC or #DF can't raise the entry once per
//! instruction, because the first one dies; so it single-steps: an
//! instruction breakpoint on the stub's first instruction, with the #DB
//! gate on the NMI stub, lets the real NMI entry interrupt it there, and
//! the handler sets TF in the interrupted frame, so the #DB of the next
//! single step is the NMI entry again, one instruction further, until the
//! entry calls its Rust handler. At each instruction the handler checks
//! the kernel state (GS base, PKRS and its cache, TSS.RSP0) and records
//! the coverage; then it prints both, and the handler dies as the plain
//! cause does.

use crate::arch::idt::{DEBUG_VECTOR, MACHINE_CHECK_VECTOR};
use crate::arch::{gdt, idt};
use crate::debug::coverage;
use crate::debug::oops;
use crate::entry::{hooks, paranoid};
use crate::modes::selftest::walk::{
    kernel_state_wrong, prepare_kernel_state_checks, report_kernel_state,
};
use crate::sched;
use crate::user::{self, programs, programs::IST_WALK_MACHINE_CHECK_VECTOR};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use extregs_regs::{PtRegs, NMI_VECTOR, X86_EFLAGS_RF, X86_EFLAGS_TF};

/// Instructions the walk's NMI entry interrupted.
static STEPS: AtomicU64 = AtomicU64::new(0);
/// What the handler found wrong (`kernel_state_wrong`'s bits), and where
/// it first did.
static WRONG: AtomicU64 = AtomicU64::new(0);
static FIRST_WRONG_AT: AtomicU64 = AtomicU64::new(0);
/// The walk is over (reported): this CPU's later NMIs (another CPU's oops
/// stopping this one, say) go to their handler as usual.
static DONE: AtomicBool = AtomicBool::new(false);

/// The walk's event hook: every NMI entry (the gated #DB of the breakpoint
/// and of each single step) interrupted the walked entry at `regs.ip`.
fn step_hook(regs: &mut PtRegs, vector: u8) -> bool {
    if vector != NMI_VECTOR || DONE.load(Ordering::Relaxed) {
        return false;
    }
    if !extregs_entry_asm::entry_text_range().contains(&regs.ip) {
        // The entry has called its handler, which is about to die: the walk
        // is over.
        regs.flags &= !X86_EFLAGS_TF;
        DONE.store(true, Ordering::Relaxed);
        let wrong = WRONG.load(Ordering::Relaxed);
        let name = "dying entry";
        report_kernel_state(name, "an NMI", FIRST_WRONG_AT.load(Ordering::Relaxed), wrong);
        println!(
            "# {name}: an NMI at each of its {} instructions before the handler{}",
            STEPS.load(Ordering::Relaxed),
            if wrong == 0 { "" } else { ", the kernel state wrong" }
        );
        coverage::print_hits();
        return true;
    }
    let wrong = kernel_state_wrong();
    if wrong != 0 && WRONG.fetch_or(wrong, Ordering::Relaxed) == 0 {
        FIRST_WRONG_AT.store(regs.ip, Ordering::Relaxed);
    }
    STEPS.fetch_add(1, Ordering::Relaxed);
    coverage::record(regs.ip);
    // TF: the next instruction traps too. RF: the breakpoint, a fault, does
    // not fire again on the first.
    regs.flags |= X86_EFLAGS_TF | X86_EFLAGS_RF;
    true
}

/// `cause=user-machine-check-walk`: a user task's `int $0xf2` through a
/// user gate to the #MC stub is a #MC from user mode (its frame moved to
/// `task_pt_regs`, then the user path of the common entry), walked as
/// [`walked`] walks the others, up to the handler, which dies.
pub fn walked_from_user_machine_check() -> ! {
    let stub = idt::stub_address(MACHINE_CHECK_VECTOR);
    let user_gate = idt::Gate {
        vector: IST_WALK_MACHINE_CHECK_VECTOR,
        stub,
        ist: Some(gdt::MACHINE_CHECK_IST_INDEX),
        user: true,
    };
    let nmi_gate = idt::Gate {
        vector: DEBUG_VECTOR,
        stub: idt::stub_address(NMI_VECTOR),
        ist: Some(gdt::NMI_IST_INDEX),
        user: false,
    };
    prepare_kernel_state_checks();
    paranoid::arm_execute_breakpoint(stub);
    hooks::with_event_hook(step_hook, || {
        idt::with_gates(&[nmi_gate, user_gate], || {
            // On this CPU: the breakpoint and the spare IDT are its own.
            let this_cpu = crate::arch::percpu::this_cpu();
            let spawned =
                user::spawn_on(format_args!("walk-mc"), programs::WALK_INT, 3, 0, 1 << this_cpu);
            match spawned {
                Ok(handle) => {
                    let status = sched::wait(handle);
                    println!("extregs: error: the #MC task exited with status {status}");
                }
                Err(why) => println!("extregs: error: spawning the #MC task: {why:?}"),
            }
        })
    });
    oops::finish("the user task's #MC did not die")
}

/// Runs `die`, which raises `vector`'s entry and never returns, with the
/// walk armed on that entry's stub. CPU 0 only (`die_on_cpu` refuses the
/// walked causes elsewhere): the spare IDT and this walk's state are one.
pub fn walked(vector: u8, die: fn() -> !) -> ! {
    prepare_kernel_state_checks();
    paranoid::arm_execute_breakpoint(idt::stub_address(vector));
    hooks::with_event_hook(step_hook, || {
        idt::with_debug_gate(idt::stub_address(NMI_VECTOR), Some(gdt::NMI_IST_INDEX), || die())
    });
    unreachable!("the walked entry returned")
}
