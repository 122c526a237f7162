//! The breakpoint walk of the NMI entry's own windows: a nested NMI at
//! every instruction of the NMI stub that an NMI can land on
//! ([`extregs_entry_asm::nmi_interruptible_range`]). NMIs are blocked from
//! an NMI's delivery until the next IRET, so inside the stub only the part
//! after an IRET in the handler can take one: the rest of that handler
//! pass (the GS swap back, `POP_REGS`, the state's decrement, the exit
//! window and its `iretq`) and the repeat it may run (the state marked
//! RUNNING again, the frame, the GS decision, the call). There a nested
//! NMI must mark the outermost one PENDING and return at once, or, in the
//! exit window, take the outermost one's place; either way the handler
//! runs once more, and the interrupted context gets every register back.
//!
//! The walks put the NMI stub's IST entries where NMIs are not blocked
//! (a #DB gated to it), which a real NMI arriving meanwhile would
//! overwrite: they run, as every selftest does, with NMIs from outside held
//! back (`apic::with_outside_nmis_held`), and send none of their own but
//! the ones they count.

use super::call_trampoline;
use super::walk::{kernel_state_wrong, prepare_kernel_state_checks, report_kernel_state};
use super::{check, Context, Outcome};
use crate::arch::idt::{self, Gate, BREAKPOINT_VECTOR, DEBUG_VECTOR};
use crate::arch::{apic, gdt};
use crate::debug::coverage;
use crate::entry::{hooks, paranoid};
use crate::modes::trampolines::{self, extregs_fuzz_spins};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use extregs_cmdline::FuzzKind;
use extregs_regs::{PtRegs, NMI_VECTOR};

/// Entries through [`extregs_walk_nested_nmi_gate`]: the breakpoint fired.
static GATE_HITS: AtomicU64 = AtomicU64::new(0);
/// Handler passes of the outermost NMI in the current step.
static PASSES: AtomicU64 = AtomicU64::new(0);
/// Where the first pass arms the breakpoint.
static ARM_AT: AtomicU64 = AtomicU64::new(0);
/// Whether the first pass sends a real nested self-NMI (so the outermost
/// repeats) before arming the breakpoint.
static SEND_NESTED: AtomicBool = AtomicBool::new(false);
/// `WRONG_*` bits the handler passes found (see [`kernel_state_wrong`]).
static WRONG: AtomicU64 = AtomicU64::new(0);

extern "C" {
    /// The walk's #DB gate: counts, disarms the breakpoint, and is the NMI
    /// entry from its first instruction on.
    fn extregs_walk_nested_nmi_gate();
}

// The #DB of the walk's breakpoint enters here on the NMI's IST stack, so
// what it meets is the NMI stub with the CPU's frame in the landing zone,
// as a nested NMI would: it counts itself and clears DR7 first, because
// the nested NMI's path returns with IRETQ without RF, onto the very
// instruction the breakpoint is on.
//
//   NMI IST at the gate:             around the DR7 write:
//   | landing: ip cs fl sp ss |      | landing: ip cs fl sp ss |
//   +-------------------------+ <-rsp| saved %rax              | <- rsp
//
// RSP is back where the CPU left it before the jmp.
core::arch::global_asm!(
    ".pushsection .text.extregs_walk_nested_nmi_gate, \"ax\"",
    ".globl extregs_walk_nested_nmi_gate",
    "extregs_walk_nested_nmi_gate:",
    "lock incq {hits}(%rip)",
    "pushq %rax",
    "xorl %eax, %eax",
    "movq %rax, %dr7",
    "popq %rax",
    "jmp asm_exc_nmi",
    ".popsection",
    hits = sym GATE_HITS,
    options(att_syntax)
);

/// The handler while the walk runs. The int3 the first pass raises is
/// claimed (its IRETQ is the point). Every NMI pass has its kernel state
/// checked; the first one then unblocks NMIs with that int3, sends (with
/// [`SEND_NESTED`]) a real self-NMI, which nests at once and leaves the
/// outermost NMI PENDING (so it repeats), and arms the breakpoint, which
/// fires in the rest of this pass or in the repeat.
fn nested_walk_hook(_: &mut PtRegs, vector: u8) -> bool {
    match vector {
        BREAKPOINT_VECTOR => true,
        NMI_VECTOR => {
            WRONG.fetch_or(kernel_state_wrong(), Ordering::Relaxed);
            if PASSES.fetch_add(1, Ordering::Relaxed) == 0 {
                // SAFETY: an int3 that this hook claims; its IRETQ unblocks
                // NMIs, as any exception in an NMI handler does.
                unsafe { core::arch::asm!("int3") };
                if SEND_NESTED.load(Ordering::Relaxed) {
                    apic::send_self_nmi();
                }
                paranoid::arm_execute_breakpoint(ARM_AT.load(Ordering::Relaxed));
            }
            true
        }
        _ => false,
    }
}

/// A nested NMI at every instruction of the NMI stub an NMI can land on.
/// At each step a self-NMI from the fuzzer's NMI trampoline (every GPR
/// loaded with a pattern, and stored after) is the outermost one; its
/// first pass unblocks NMIs with an int3 and arms the breakpoint; the
/// breakpoint's #DB enters the NMI stub through a gate that disarms it
/// ([`extregs_walk_nested_nmi_gate`]). Each step runs four times: with and
/// without a real nested self-NMI in the first pass, and from kernel code
/// with the kernel's GS base and with the user's (as at SYSCALL's first
/// instruction), for both ways of the paranoid GS decision.
///
/// Without the real nested NMI the first pass is the last: on its way out
/// (state RUNNING) a nested NMI must cause exactly one repeat, and in the
/// exit window (state IDLE) take over, which is one pass more as well. With
/// it, the outermost NMI repeats anyway, and the breakpoint also fires in
/// the repeat, where a nested NMI adds a pass. Checked: the gate was entered
/// at most once; the handler passes (exactly one more than the gate's
/// entries without the real nested NMI; two, or three when the gate's entry
/// landed in the repeat, with it); the kernel state in every pass; the
/// GPRs.
pub fn nmi_at_every_instruction_of_the_nmi_windows(_: &Context) -> Outcome {
    let range = extregs_entry_asm::nmi_interruptible_range();
    prepare_kernel_state_checks();
    let gate = Gate {
        vector: DEBUG_VECTOR,
        stub: extregs_walk_nested_nmi_gate as *const () as u64,
        ist: Some(gdt::NMI_IST_INDEX),
        user: false,
    };
    let input = self_nmi_input();
    // Instructions the gate's NMI entry landed on: in any run, and in the
    // runs without the real nested NMI (the last pass's way out).
    let (mut instructions, mut last_pass_way_out) = (0, 0);
    for address in range.clone() {
        let (mut landed, mut landed_in_last_pass) = (false, false);
        for (send_nested, user_gs) in [(true, false), (true, true), (false, false), (false, true)] {
            SEND_NESTED.store(send_nested, Ordering::Relaxed);
            PASSES.store(0, Ordering::Relaxed);
            WRONG.store(0, Ordering::Relaxed);
            ARM_AT.store(address, Ordering::Relaxed);
            let hits_before = GATE_HITS.load(Ordering::Relaxed);
            let output = idt::with_gates(&[gate], || {
                let output = hooks::with_event_hook(nested_walk_hook, || {
                    self_nmi_with_gprs(&input, user_gs)
                });
                // Disarmed while the gate is still in place: a breakpoint
                // on the repeat's prologue never fires in a run without
                // the repeat.
                paranoid::disarm_breakpoints();
                output
            });
            paranoid::reset_debug_status();
            let hits = GATE_HITS.load(Ordering::Relaxed) - hits_before;
            let passes = PASSES.load(Ordering::Relaxed);
            let name = match (send_nested, user_gs) {
                (true, false) => "NMI windows, repeating",
                (true, true) => "NMI windows, repeating, user GS",
                (false, false) => "NMI windows, last pass",
                (false, true) => "NMI windows, last pass, user GS",
            };
            if !report_kernel_state(name, "an NMI", address, WRONG.load(Ordering::Relaxed)) {
                return Outcome::Fail;
            }
            check!(hits <= 1, "{name}: the gate at {address:#x} was entered {hits} times");
            let passes_ok = if send_nested {
                // A nested NMI in the first pass's way out changes nothing:
                // before the decrement the state is PENDING already (the
                // real nested NMI), after it RUNNING, and the repeat's
                // RUNNING mark overwrites the PENDING it sets, because the
                // pass that mark starts answers it. In the repeat after its
                // RUNNING mark (and at its `iretq`, a take-over) it adds a
                // pass; at the mark itself it is answered by the pass the
                // mark starts (Linux's repeat_nmi window, where a nested
                // NMI just returns).
                passes == 2 || (passes == 3 && hits == 1)
            } else {
                passes == 1 + hits
            };
            check!(
                passes_ok,
                "{name}: breakpoint at {address:#x}: {passes} handler passes, {hits} nested"
            );
            check!(output.gprs() == input.gprs(), "{name}: breakpoint at {address:#x}: GPRs lost");
            landed |= hits == 1;
            landed_in_last_pass |= !send_nested && hits == 1;
        }
        if landed {
            coverage::record(address);
            instructions += 1;
        }
        last_pass_way_out += u64::from(landed_in_last_pass);
    }
    println!(
        "# NMI windows: a nested NMI at each of their {instructions} instructions ({} bytes walked), {last_pass_way_out} of them on the last pass's way out",
        range.end - range.start
    );
    // Every instruction, exactly: the pass from the state's RUNNING mark
    // to the call is 56 (movb, push -1, PUSH_AND_CLEAR_REGS' 31,
    // PARANOID_GS_ENTER's 13 with the SWAPGS and movl of the user's GS
    // base, ASM_CLAC's testb and jz, cld, the vector, CALL_EXTREGS_ENTRY's
    // 6 up to the call), and from the return on 24 (the add,
    // PARANOID_GS_EXIT's testl, jz and SWAPGS, POP_REGS' 16, decb, jnz,
    // iretq, the repeat's jmp), plus the CLAC with SMAP and, in a
    // fault-injection build, POP_REGS' test of its flag (cmpb, jne). The
    // last pass's way out is the 24 but the repeat's jmp: 23.
    let fault_injection = if cfg!(fault_injection) { 2 } else { 0 };
    let expected = 56 + 24 + u64::from(crate::arch::uaccess::smap_enabled()) + fault_injection;
    check!(instructions == expected, "{instructions} instructions of the NMI windows interrupted");
    check!(
        last_pass_way_out == 23 + fault_injection,
        "{last_pass_way_out} instructions of the last pass's way out interrupted"
    );
    Outcome::Pass
}

/// GPR patterns for the fuzzer's self-NMI trampoline, with the registers
/// its single store takes set up for this CPU.
fn self_nmi_input() -> PtRegs {
    let mut input = super::gpr_patterns();
    match apic::prepare_self_nmi_store() {
        apic::SelfNmiStore::XApic { icr_low, value } => {
            input.di = icr_low;
            input.ax = u64::from(value);
        }
        apic::SelfNmiStore::X2Apic { msr, high, low } => {
            input.cx = u64::from(msr);
            input.dx = u64::from(high);
            input.ax = u64::from(low);
        }
    }
    input
}

/// Sends a self-NMI from the fuzzer's trampoline with every GPR loaded
/// from `input`, and returns them as the trampoline stored them after;
/// with `user_gs`, from kernel code running on the user's GS base.
fn self_nmi_with_gprs(input: &PtRegs, user_gs: bool) -> PtRegs {
    let (trampoline, _, _) = trampolines::trampoline(FuzzKind::SelfNmi);
    // The trampoline's wait after the store: one round, the NMI has been
    // handled by then (it is delivered at the store's boundary).
    extregs_fuzz_spins.store(1, Ordering::SeqCst);
    // SAFETY: the self-NMI's entry is a paranoid one, and the walk's hook
    // handles it and returns.
    unsafe { call_trampoline(trampoline, input, user_gs) }
}
