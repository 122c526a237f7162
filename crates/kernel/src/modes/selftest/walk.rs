//! The breakpoint walks: a real NMI entry, and a real #DB entry, at every
//! instruction of the ways in and out (the kernel-mode entry paths, the
//! SYSCALL entry with its SYSRET exit, the IRET exit to user mode) and of
//! the context switch.
//!
//! An instruction breakpoint (DR0) is armed on every byte of a path in
//! turn, and an event that takes the path runs once per byte: where the
//! byte starts an instruction, the breakpoint's #DB interrupts the path
//! right there. For the NMI walk the #DB gate points at the NMI stub
//! ([`idt::with_debug_gate`]), so what runs is the real NMI entry, which
//! saves and restores everything a hardware NMI would make it save. At
//! each instruction the handler checks the kernel state (GS base, PKRS
//! and its cache, TSS.RSP0), and the event checks what came back.

use super::{check, wait_until, Context, Outcome, EVENT_TIMEOUT_TSC};
use crate::arch::apic::SELF_IPI_VECTOR;
use crate::arch::idt::{
    BREAKPOINT_VECTOR as INT3_VECTOR, DEBUG_VECTOR, GENERAL_PROTECTION_VECTOR as GP_VECTOR,
    INVALID_OPCODE_VECTOR, NMI_VECTOR, PAGE_FAULT_VECTOR,
};
use crate::arch::irqflags;
use crate::arch::pks::{self, KeyRights, PKRS_DEFAULT};
use crate::arch::{apic, gdt, idt};
use crate::debug::coverage;
use crate::debug::result;
use crate::debug::symbols::function_range;
use crate::entry::events::{self, expect_event, FrameEdit};
use crate::entry::hooks;
use crate::entry::{irq, nmi, paranoid};
use crate::modes::trampolines;
use crate::sched::{self, task::TASKS};
use crate::user::{self, programs};
use core::sync::atomic::{AtomicU16, AtomicU64, AtomicU8, Ordering};
use extregs_cmdline::FuzzKind;
use extregs_regs::PtRegs;

/// #DE (the IDT module names the other vectors walked here).
const DIVIDE_ERROR_VECTOR: u8 = 0;
/// RFLAGS.RF: suppresses an instruction breakpoint for one instruction.
const X86_EFLAGS_RF: u64 = 1 << 16;

/// The real entry a walk runs at each instruction.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum WalkEntry {
    /// The NMI entry: the #DB gate points at the NMI stub, on the NMI's
    /// IST stack, for the walk.
    Nmi,
    /// The #DB entry itself (its own stub and IST stack).
    Debug,
}

impl WalkEntry {
    fn vector(self) -> u8 {
        match self {
            WalkEntry::Nmi => NMI_VECTOR,
            WalkEntry::Debug => DEBUG_VECTOR,
        }
    }

    fn name(self) -> &'static str {
        match self {
            WalkEntry::Nmi => "an NMI",
            WalkEntry::Debug => "a #DB",
        }
    }
}

/// The vector the walk's hook takes (its [`WalkEntry`]'s).
static WALK_VECTOR: AtomicU8 = AtomicU8::new(NMI_VECTOR);
/// The kernel GS area of the CPU the breakpoint is armed on, as the walk
/// read it before arming (the handler must not find it through GS, the
/// very thing it checks).
static WALK_KERNEL_GS: AtomicU64 = AtomicU64::new(0);
/// Entries (of [`WALK_VECTOR`]) that hit the armed breakpoint.
static WALK_HITS: AtomicU64 = AtomicU64::new(0);
/// No vector: what [`WALK_ABSORBS`] holds outside [`absorbing`].
const NO_VECTOR: u16 = 0x100;
/// The vector of the event a walk raises whose handler the walk's hook
/// takes over (a walked #DB or NMI, which has no handler of its own to go
/// to; a user task's int3, which would kill it; an IRQ nothing asked for).
static WALK_ABSORBS: AtomicU16 = AtomicU16::new(NO_VECTOR);
/// Events of [`WALK_ABSORBS`]'s vector the hook took over.
static WALK_ABSORBED: AtomicU64 = AtomicU64::new(0);

/// Runs `body` with the walk's hook taking over every event of `vector`
/// (the event a walk raises to drive a stub that has no handler of its own
/// to go to, or whose handler would kill the driving task).
pub(super) fn absorbing<T>(vector: u8, body: impl FnOnce() -> T) -> T {
    WALK_ABSORBS.store(u16::from(vector), Ordering::Relaxed);
    let result = body();
    WALK_ABSORBS.store(NO_VECTOR, Ordering::Relaxed);
    result
}

/// Events the hook has taken over under [`absorbing`], ever.
pub(super) fn absorbed() -> u64 {
    WALK_ABSORBED.load(Ordering::Relaxed)
}

/// What a walk's entry found wrong inside its handler (`WRONG_*` bits).
static WALK_WRONG: AtomicU64 = AtomicU64::new(0);
/// The GS base in the handler was not the walking CPU's kernel area, or
/// the swapped-out base (KERNEL_GS_BASE) was.
const WRONG_KERNEL_GS: u64 = 1 << 0;
/// PKRS and this CPU's PKRS cache disagreed in the handler.
const WRONG_PKRS_CACHE: u64 = 1 << 1;
/// TSS.RSP0, or its per-CPU copy that the SYSCALL entry and the IST
/// entries from user mode load, was not the top of the running task's
/// stack.
const WRONG_RSP0: u64 = 1 << 2;

/// The handler while a breakpoint walks a path: checks the kernel state
/// the entry must have set up, whatever instruction it interrupted (the
/// kernel's GS base and not the user's, PKRS equal to its cache, TSS.RSP0
/// and its per-CPU copy at the running task's stack top), counts, records
/// the coverage, and sets RF so the breakpointed instruction runs once the
/// entry returns. A GS base that is a user page usually faults before this
/// runs (the Rust entry reads GS first, and SMAP stops it): the check is
/// the backstop for one that points at kernel memory.
fn walk_hook(regs: &mut PtRegs, vector: u8) -> bool {
    if u16::from(vector) == WALK_ABSORBS.load(Ordering::Relaxed) {
        // An interrupt taken over still needs its EOI.
        if vector >= extregs_regs::FIRST_EXTERNAL_VECTOR && apic::in_service(vector) {
            apic::eoi();
        }
        WALK_ABSORBED.fetch_add(1, Ordering::Relaxed);
        return true;
    }
    if vector != WALK_VECTOR.load(Ordering::Relaxed) {
        return false;
    }
    WALK_WRONG.fetch_or(kernel_state_wrong(), Ordering::Relaxed);
    WALK_HITS.fetch_add(1, Ordering::Relaxed);
    // The coverage counts where a real NMI entry ran, not the #DB walk.
    if vector == NMI_VECTOR {
        coverage::record(regs.ip);
    }
    regs.flags |= X86_EFLAGS_RF;
    true
}

/// Notes this CPU's kernel GS area for [`kernel_state_wrong`], read before
/// any breakpoint is armed (not through GS, the very thing it checks).
pub(crate) fn prepare_kernel_state_checks() {
    WALK_KERNEL_GS.store(gdt::kernel_gs_base(), Ordering::Relaxed);
}

/// What is wrong with the kernel state a walk's handler runs in
/// (`WRONG_*` bits): the GS base not the walking CPU's kernel area, or the
/// swapped-out base that area; PKRS and its cache apart; TSS.RSP0 or its
/// per-CPU copy not the running task's stack top.
pub(crate) fn kernel_state_wrong() -> u64 {
    let mut wrong = 0;
    let kernel_gs = WALK_KERNEL_GS.load(Ordering::Relaxed);
    if x86_64::registers::model_specific::GsBase::read().as_u64() != kernel_gs
        || x86_64::registers::model_specific::KernelGsBase::read().as_u64() == kernel_gs
    {
        wrong |= WRONG_KERNEL_GS;
    }
    if pks::enabled() && pks::read_pkrs() != pks::cached_pkrs() {
        wrong |= WRONG_PKRS_CACHE;
    }
    let task_stack_top = TASKS[sched::current_slot()].stack().end;
    if gdt::kernel_stack_top() != task_stack_top
        || extregs_entry_asm::top_of_stack() != task_stack_top
    {
        wrong |= WRONG_RSP0;
    }
    wrong
}

/// Prints what `wrong` ([`kernel_state_wrong`]'s bits) says went wrong in
/// `entry_name`'s handler at `address`; true when nothing did.
pub(crate) fn report_kernel_state(name: &str, entry_name: &str, address: u64, wrong: u64) -> bool {
    for (bit, what) in [
        (WRONG_KERNEL_GS, "the GS base was not the kernel's"),
        (WRONG_PKRS_CACHE, "PKRS and its cache disagreed"),
        (WRONG_RSP0, "TSS.RSP0 was not the running task's stack top"),
    ] {
        if wrong & bit != 0 {
            println!("# {name}: in {entry_name} at {address:#x}, {what}");
        }
    }
    wrong == 0
}

/// Arms an instruction breakpoint on every byte of `ranges` in turn and
/// runs `event` once per byte: where the byte starts an instruction the
/// event's path runs into the breakpoint, and the real `entry` interrupts
/// it right there (up to `max_hits` times per event: a path the event
/// takes more than once). `event` checks what came back; the handler
/// checks the kernel state inside. Returns the number of instructions
/// interrupted.
fn entry_at_every_instruction(
    name: &str,
    entry: WalkEntry,
    ranges: &[core::ops::Range<u64>],
    max_hits: u64,
    mut event: impl FnMut() -> Result<(), &'static str>,
) -> Result<u64, ()> {
    entry_at_every_address(name, entry, ranges, max_hits, None, |_| event())
}

/// [`entry_at_every_instruction`] with an event that is told the address
/// the breakpoint is armed on (a walk over many stubs raises the one
/// that address belongs to), and with `extra_gate` in the IDT while the
/// walk runs.
pub(super) fn entry_at_every_address(
    name: &str,
    entry: WalkEntry,
    ranges: &[core::ops::Range<u64>],
    max_hits: u64,
    extra_gate: Option<idt::Gate>,
    mut event: impl FnMut(u64) -> Result<(), &'static str>,
) -> Result<u64, ()> {
    WALK_VECTOR.store(entry.vector(), Ordering::Relaxed);
    // The breakpoint is this CPU's (DR0 and DR7 are per CPU): the walking
    // task and the event's tasks stay here (init is the boot CPU's; the
    // event pins what it spawns), which the end checks.
    let walking_cpu = crate::arch::percpu::this_cpu();
    prepare_kernel_state_checks();
    let mut instructions = 0;
    for address in ranges.iter().flat_map(|range| range.clone()) {
        WALK_HITS.store(0, Ordering::Relaxed);
        WALK_WRONG.store(0, Ordering::Relaxed);
        let mut armed_event = || {
            paranoid::arm_execute_breakpoint(address);
            let outcome = event(address);
            paranoid::disarm_breakpoints();
            outcome
        };
        let nmi_gate = idt::Gate {
            vector: DEBUG_VECTOR,
            stub: idt::stub_address(NMI_VECTOR),
            ist: Some(gdt::NMI_IST_INDEX),
            user: false,
        };
        let gates = match (entry, extra_gate) {
            (WalkEntry::Nmi, Some(extra)) => &[nmi_gate, extra][..],
            (WalkEntry::Nmi, None) => &[nmi_gate][..],
            (WalkEntry::Debug, Some(extra)) => &[extra][..],
            (WalkEntry::Debug, None) => &[][..],
        };
        let outcome = hooks::with_event_hook(walk_hook, || match gates {
            [] => armed_event(),
            _ => idt::with_gates(gates, armed_event),
        });
        paranoid::reset_debug_status();
        assert_eq!(crate::arch::percpu::this_cpu(), walking_cpu, "{name}: the walk moved CPUs");
        let hits = WALK_HITS.load(Ordering::Relaxed);
        if let Err(why) = outcome {
            println!("# {name}: breakpoint at {address:#x}: {why}");
            return Err(());
        }
        if hits > max_hits {
            println!("# {name}: the breakpoint at {address:#x} fired {hits} times");
            return Err(());
        }
        let wrong = WALK_WRONG.load(Ordering::Relaxed);
        if !report_kernel_state(name, entry.name(), address, wrong) {
            return Err(());
        }
        instructions += u64::from(hits > 0);
    }
    let bytes: u64 = ranges.iter().map(|range| range.end - range.start).sum();
    println!(
        "# {name}: {} at each of its {instructions} instructions ({bytes} bytes walked)",
        entry.name()
    );
    Ok(instructions)
}

/// A real NMI entry, and then a real #DB entry, at **every** instruction
/// of three entry paths, by an instruction breakpoint walked over them
/// (for the NMI, with the #DB gate on the NMI stub): a deterministic
/// complement to the foreign-NMI storm, which only hits what chance gives
/// it:
///
/// * the int3 path: its stub (push -1, PUSH_AND_CLEAR_REGS, the vector,
///   the jmp) and the common tail (the extension reserved, the call,
///   POP_REGS, iretq), with all 15 GPRs and the interrupted PKRS checked
///   after every int3;
/// * the #GP stub, which has a CPU error code;
/// * a self-IPI's stub and the IRQ head (`extregs_irq_common`);
/// * the #DE and #UD stubs, and the #PF stub (a PKS fault, so only with
///   PKS), the other faults the kernel raises.
pub fn nmi_at_every_instruction_of_the_entry_paths(context: &Context) -> Outcome {
    let (common, irq_common) = extregs_entry_asm::common_paths();
    let ranges = (
        function_range(idt::stub_address(INT3_VECTOR)),
        function_range(common),
        function_range(idt::stub_address(GP_VECTOR)),
        function_range(irq_common),
    );
    let (Some(int3_stub), Some(tail), Some(gp_stub), Some(irq_head)) = ranges else {
        return Outcome::Skip("no symbol table for the entry stubs");
    };
    let interrupted_pkrs = context
        .pkey_page
        .map(|page| pks::with_key_rights(PKRS_DEFAULT, page.pkey, KeyRights::ReadWrite));
    let input = super::gpr_patterns();
    for entry in [WalkEntry::Nmi, WalkEntry::Debug] {
        let outcome = walk_entry_paths(
            entry,
            [&int3_stub, &tail, &gp_stub, &irq_head],
            interrupted_pkrs,
            &input,
        );
        if !matches!(outcome, Outcome::Pass) {
            return outcome;
        }
        let outcome = walk_fault_stubs(entry, context);
        if !matches!(outcome, Outcome::Pass) {
            return outcome;
        }
    }
    Outcome::Pass
}

/// The #DE, #UD and #PF stubs walked with `entry`, each with the fault it
/// stands for raised and fixed up at every step (the #PF as a read of the
/// PKS test page, whose key the default PKRS access-disables).
fn walk_fault_stubs(entry: WalkEntry, context: &Context) -> Outcome {
    let stub = |vector: u8| function_range(idt::stub_address(vector));
    let (Some(divide_error), Some(invalid_op), Some(page_fault)) =
        (stub(DIVIDE_ERROR_VECTOR), stub(INVALID_OPCODE_VECTOR), stub(PAGE_FAULT_VECTOR))
    else {
        return Outcome::Skip("no symbol table for the fault stubs");
    };
    let divide_path = walk_fault("#DE stub", entry, &divide_error, DIVIDE_ERROR_VECTOR, || {
        expect_event!(
            setup: ["xorl %edx, %edx", "movl $1, %eax", "xorl %ecx, %ecx"],
            event: "divl %ecx",
            out("rdx") _, out("rcx") _
        );
    });
    let invalid_op_path = walk_fault("#UD stub", entry, &invalid_op, INVALID_OPCODE_VECTOR, || {
        expect_event!(setup: [], event: "ud2");
    });
    let (Ok(divide_path), Ok(invalid_op_path)) = (divide_path, invalid_op_path) else {
        return Outcome::Fail;
    };
    // The same IDTENTRY as the int3 stub: 34 each.
    check!(divide_path == 34, "{divide_path} instructions of the #DE stub interrupted");
    check!(invalid_op_path == 34, "{invalid_op_path} instructions of the #UD stub interrupted");
    let Some(page) = context.pkey_page else {
        return Outcome::Pass;
    };
    let Ok(page_fault_path) = walk_fault("#PF stub", entry, &page_fault, PAGE_FAULT_VECTOR, || {
        expect_event!(
            setup: [],
            event: "movq ({address}), %rcx",
            address = in(reg) page.address.as_u64(), out("rcx") _
        );
    }) else {
        return Outcome::Fail;
    };
    // An error-code stub, as the #GP one: 33.
    check!(page_fault_path == 33, "{page_fault_path} instructions of the #PF stub interrupted");
    Outcome::Pass
}

/// One fault stub walked with `entry`: at every step `raise` takes the
/// fault (armed to be fixed up), and the handler must have seen `vector`.
fn walk_fault(
    name: &str,
    entry: WalkEntry,
    stub: &core::ops::Range<u64>,
    vector: u8,
    mut raise: impl FnMut(),
) -> Result<u64, ()> {
    entry_at_every_instruction(name, entry, core::slice::from_ref(stub), 1, || {
        events::arm(FrameEdit::None);
        raise();
        match events::observed() {
            Some(observed) if observed.vector == vector => Ok(()),
            Some(_) => Err("another vector was observed"),
            None => Err("the fault was not handled"),
        }
    })
}

/// [`nmi_at_every_instruction_of_the_entry_paths`] with one entry.
fn walk_entry_paths(
    entry: WalkEntry,
    [int3_stub, tail, gp_stub, irq_head]: [&core::ops::Range<u64>; 4],
    interrupted_pkrs: Option<u32>,
    input: &PtRegs,
) -> Outcome {
    // The IRQ stubs have no symbols; both of the self-IPI stub's
    // instructions (push the vector, jmp) start in its first 8 bytes.
    let ipi_stub = idt::stub_address(SELF_IPI_VECTOR);
    let ipi_stub = ipi_stub..ipi_stub + 8;
    let int3_path = entry_at_every_instruction(
        "int3 path",
        entry,
        &[int3_stub.clone(), tail.clone()],
        1,
        || {
            if let Some(value) = interrupted_pkrs {
                // SAFETY: PKS is on; key 0 stays read/write.
                unsafe { pks::write_pkrs(value) };
            }
            let (observed, output) = super::int3_with_gprs(input, FrameEdit::None);
            let live = interrupted_pkrs.map(|_| pks::read_pkrs());
            if pks::enabled() {
                // SAFETY: PKS is on; the default keeps key 0 read/write.
                unsafe { pks::update_pkrs(PKRS_DEFAULT) };
            }
            match () {
                _ if observed.is_none() => Err("the int3 was not handled"),
                _ if output.gprs() != input.gprs() => Err("the GPRs did not come back"),
                _ if live != interrupted_pkrs => Err("the interrupted PKRS did not come back"),
                _ => Ok(()),
            }
        },
    );
    let gp_path =
        entry_at_every_instruction("#GP stub", entry, core::slice::from_ref(gp_stub), 1, || {
            events::arm(FrameEdit::None);
            expect_event!(
                setup: ["movabsq $0x8000000000000000, %rcx"],
                event: "movq (%rcx), %rcx",
                out("rcx") _
            );
            match events::observed() {
                Some(observed) if observed.vector == 13 && observed.regs.orig_ax == 0 => Ok(()),
                Some(_) => Err("the #GP frame was wrong"),
                None => Err("the #GP was not handled"),
            }
        });
    let irq_path = entry_at_every_instruction(
        "self-IPI stub and IRQ head",
        entry,
        &[ipi_stub, irq_head.clone()],
        1,
        || {
            let before = irq::counts().self_ipi;
            apic::send_self_ipi(SELF_IPI_VECTOR);
            irqflags::local_irq_enable();
            let arrived = wait_until(|| irq::counts().self_ipi != before, EVENT_TIMEOUT_TSC);
            irqflags::local_irq_disable();
            if arrived {
                Ok(())
            } else {
                Err("the self-IPI never arrived")
            }
        },
    );
    let (Ok(int3_path), Ok(gp_path), Ok(irq_path)) = (int3_path, gp_path, irq_path) else {
        return Outcome::Fail;
    };
    // Every instruction, exactly: the int3 stub is 34 (push -1, sub, 15
    // stores, 15 clears, the vector, the jmp) and the tail 35 for a kernel
    // frame (testb, jnz, the bad-IRET RIP check's lea, cmp and jne, the
    // SWAPGS fence's lfence, ASM_CLAC's testb and jz, cld, sub, the
    // recorded vector's lea and movw, lea, the tagged frame pointer's lea,
    // call, add, testb, jnz, 15 loads, add,
    // iretq; the SWAPGS of a user frame is jumped over), plus the CLAC
    // itself with SMAP; the #GP stub has no push (33);
    // the IRQ stub is 2 (push, jmp) and the IRQ head 34 (sub, 15 stores,
    // 15 clears, two movs, the jmp). A change to the stubs changes these.
    // A fault-injection build adds POP_REGS' test of its flag (cmpb, jne)
    // and the exit's clearing of it (movb).
    let fault_injection = if cfg!(fault_injection) { 3 } else { 0 };
    let tail = 35 + u64::from(crate::arch::uaccess::smap_enabled()) + fault_injection;
    check!(int3_path == 34 + tail, "{int3_path} instructions of the int3 path interrupted");
    check!(gp_path == 33, "{gp_path} instructions of the #GP stub interrupted");
    check!(irq_path == 2 + 34, "{irq_path} instructions of the IRQ path interrupted");
    Outcome::Pass
}

/// A real NMI entry at every instruction of a #DB from kernel mode: its
/// stub and the paranoid path it shares with #MC and #DF
/// (`extregs_paranoid_common`: the GS decision from MSR_GS_BASE, the call,
/// the GS swap back, `POP_REGS`, `iretq`). The walk's breakpoint is a #DB
/// itself (vector 1's gate goes to the NMI stub), so the walked #DB comes
/// through another vector routed to the #DB stub on the #DB's IST stack:
/// the fuzzer's `int $n` trampoline's, which loads every GPR with a
/// pattern and stores them after. The #DB's Rust entry runs the paranoid
/// bookkeeping (DR7, DR6, the IST shift) and the walk's hook takes it over
/// there: the #DB must have reached its handler once, and the GPRs come
/// back. Each step raises it twice, the second time with the user's GS
/// base live in kernel mode (as a #DB on SYSCALL's first instruction finds
/// it), so both ways of the paranoid GS decision are walked. Only the NMI
/// walks it: a #DB nested in the #DB stub before its IST shift is the one
/// thing the entry assumes cannot happen (no breakpoint is ever put in the
/// entry text outside these walks).
pub fn nmi_at_every_instruction_of_the_debug_entry(_: &Context) -> Outcome {
    let ranges = (
        function_range(idt::stub_address(DEBUG_VECTOR)),
        function_range(extregs_entry_asm::paranoid_common_address()),
    );
    let (Some(debug_stub), Some(paranoid_common)) = ranges else {
        return Outcome::Skip("no symbol table for the #DB entry");
    };
    // The fuzzer's `int $n` trampoline (GPR patterns in, GPRs out) raises
    // the walked #DB: its vector goes to the #DB stub, on the #DB's IST.
    let soft_debug_gate = idt::Gate {
        vector: trampolines::SOFT_INT_VECTOR,
        stub: idt::stub_address(DEBUG_VECTOR),
        ist: Some(gdt::DEBUG_IST_INDEX),
        user: false,
    };
    let (int_n, _, _) = trampolines::trampoline(FuzzKind::IntN);
    let input = super::gpr_patterns();
    let walk = absorbing(DEBUG_VECTOR, || {
        entry_at_every_address(
            "#DB stub and paranoid path",
            WalkEntry::Nmi,
            &[debug_stub, paranoid_common],
            2,
            Some(soft_debug_gate),
            |_| {
                let before = absorbed();
                // The second #DB comes with the user's GS base live, as a
                // #DB on SYSCALL's first instruction finds it.
                let outputs = [false, true].map(|user_gs| {
                    // SAFETY: the `int $n` trampoline's vector enters the
                    // #DB stub (the walk's gate), a paranoid one, and the
                    // walk's hook takes the #DB over.
                    unsafe { super::call_trampoline(int_n, &input, user_gs) }
                });
                match () {
                    _ if absorbed() != before + 2 => {
                        Err("the #DBs did not reach their handler once each")
                    }
                    _ if outputs.iter().any(|output| output.gprs() != input.gprs()) => {
                        Err("the GPRs did not come back")
                    }
                    _ => Ok(()),
                }
            },
        )
    });
    let Ok(instructions) = walk else {
        return Outcome::Fail;
    };
    // Every instruction, exactly: the stub's way from kernel mode is 36
    // (push -1, the CS test and its jnz, PUSH_AND_CLEAR_REGS' 31, the
    // vector, the jmp) and the paranoid path 43 (PARANOID_GS_ENTER's 13
    // with the SWAPGS and the movl the user's GS base takes,
    // ASM_CLAC's testb and jz, cld, CALL_EXTREGS_ENTRY's 7,
    // PARANOID_GS_EXIT's testl, jz and SWAPGS, POP_REGS' 16, iretq), plus
    // the CLAC with SMAP; a fault-injection build adds POP_REGS' test of
    // its flag (cmpb, jne).
    let fault_injection = if cfg!(fault_injection) { 2 } else { 0 };
    let expected = 36 + 43 + u64::from(crate::arch::uaccess::smap_enabled()) + fault_injection;
    check!(instructions == expected, "{instructions} instructions of the #DB entry interrupted");
    Outcome::Pass
}

/// A real NMI entry, and then a real #DB entry, at both instructions (push
/// the vector, jmp) of every IRQ stub whose vector has no handler of its
/// own: 218 of the 224 (the self-IPI's stub is walked with the IRQ head).
/// At every step a self-IPI on the stub's vector must arrive once, as that
/// vector.
pub fn nmi_at_every_irq_stub(_: &Context) -> Outcome {
    // The IRQ stubs have no symbols; both of a stub's instructions (push
    // the vector, jmp) start in its first 8 bytes (a vector of 0x80 or
    // more takes a longer push and a 16-byte slot).
    let mut stubs = [const { 0..0 }; 224];
    let mut count = 0;
    for vector in super::irqs::vectors_without_a_handler() {
        let stub = idt::stub_address(vector);
        stubs[count] = stub..stub + 8;
        count += 1;
    }
    let stubs = &stubs[..count];
    let vector_of = |address: u64| {
        super::irqs::vectors_without_a_handler().find(|vector| {
            let stub = idt::stub_address(*vector);
            (stub..stub + 8).contains(&address)
        })
    };
    irq::set_report_unexpected(false);
    let mut outcome = Outcome::Pass;
    for entry in [WalkEntry::Nmi, WalkEntry::Debug] {
        let walk = entry_at_every_address("IRQ stubs", entry, stubs, 1, None, |address| {
            let vector = vector_of(address).ok_or("the breakpoint is in no walked stub")?;
            let before = irq::counts().unexpected;
            apic::send_self_ipi(vector);
            let arrived =
                super::irqs::with_irqs_enabled_until(|| irq::counts().unexpected != before);
            match () {
                _ if !arrived => Err("the self-IPI never arrived"),
                _ if irq::counts().unexpected != before + 1 => Err("the self-IPI counted twice"),
                _ if irq::last_unexpected_vector() != vector => Err("another vector arrived"),
                _ => Ok(()),
            }
        });
        match walk {
            Ok(instructions) if instructions == 2 * count as u64 => {}
            Ok(instructions) => {
                println!("# {instructions} instructions of {count} IRQ stubs interrupted");
                outcome = Outcome::Fail;
                break;
            }
            Err(()) => {
                outcome = Outcome::Fail;
                break;
            }
        }
    }
    irq::set_report_unexpected(true);
    if !matches!(outcome, Outcome::Pass) {
        return outcome;
    }
    walk_handled_irq_stubs()
}

/// The stubs of the vectors with handlers of their own, but the self-IPI's
/// (walked with the IRQ head): the LAPIC timer, the shootdown, reschedule,
/// APIC error and spurious vectors. A self-IPI on each drives its stub,
/// and the walk's hook takes the interrupt over (with its EOI), so no
/// handler runs where nothing asked for it.
fn walk_handled_irq_stubs() -> Outcome {
    use crate::arch::apic::{ERROR_VECTOR, RESCHEDULE_VECTOR, SPURIOUS_VECTOR, TIMER_VECTOR};
    use crate::arch::tlb::TLB_SHOOTDOWN_VECTOR;
    for vector in
        [TIMER_VECTOR, TLB_SHOOTDOWN_VECTOR, RESCHEDULE_VECTOR, ERROR_VECTOR, SPURIOUS_VECTOR]
    {
        let stub = idt::stub_address(vector);
        let stub = stub..stub + 8;
        for entry in [WalkEntry::Nmi, WalkEntry::Debug] {
            let walk = absorbing(vector, || {
                let stubs = core::slice::from_ref(&stub);
                entry_at_every_address("IRQ stub", entry, stubs, 1, None, |_| {
                    let before = absorbed();
                    apic::send_self_ipi(vector);
                    if super::irqs::with_irqs_enabled_until(|| absorbed() != before) {
                        Ok(())
                    } else {
                        Err("the self-IPI never arrived")
                    }
                })
            });
            // Two instructions each: push the vector, jmp.
            check!(walk == Ok(2), "vector {vector:#04x}'s stub: {walk:?} instructions");
        }
    }
    Outcome::Pass
}

/// A real NMI entry, and then a real #DB entry, at every instruction of the
/// ways in from user mode and out to it, driven by user tasks: the
/// breakpoint walk of [`nmi_at_every_instruction_of_the_entry_paths`] over
/// `entry_SYSCALL_64`
/// (SWAPGS, the stack switch on the user's RSP, the frame, the call, and
/// the SYSRET exit down to its SWAPGS and SYSRETQ) and over
/// `extregs_return_to_user` (POP_REGS, SWAPGS, IRETQ). At each instruction
/// the entry's handler checks the kernel's GS base, PKRS against its cache
/// and TSS.RSP0; then the task checks every GPR after its getpid and
/// reads its PID through the user GS base (`gpr-check`), every entry from
/// user mode checks its frame at `task_pt_regs` (frame_errors), and the
/// task must run to its `exit(0)`.
pub fn nmi_at_every_instruction_of_the_user_paths(_: &Context) -> Outcome {
    let (return_to_user, _, _) = extregs_entry_asm::user_exit_addresses();
    let ranges = (
        function_range(extregs_entry_asm::syscall_entry_address()),
        function_range(extregs_entry_asm::enter_user_mode_address()),
        function_range(return_to_user),
    );
    let (Some(syscall_path), Some(enter_user_mode), Some(iret_exit)) = ranges else {
        return Outcome::Skip("no symbol table for the user entry and exit");
    };
    for entry in [WalkEntry::Nmi, WalkEntry::Debug] {
        let outcome = walk_user_paths(entry, &syscall_path, [&enter_user_mode, &iret_exit]);
        if !matches!(outcome, Outcome::Pass) {
            return outcome;
        }
    }
    Outcome::Pass
}

/// [`nmi_at_every_instruction_of_the_user_paths`] with one entry.
fn walk_user_paths(
    entry: WalkEntry,
    syscall_path: &core::ops::Range<u64>,
    [enter_user_mode, iret_exit]: [&core::ops::Range<u64>; 2],
) -> Outcome {
    let errors = result::frame_counts().1;
    let gpr_check_on_this_cpu = || {
        let this_cpu = crate::arch::percpu::this_cpu();
        let spawned =
            user::spawn_on(format_args!("st-walk"), programs::GPR_CHECK, 0, 0, 1 << this_cpu);
        let Ok(handle) = spawned else {
            return Err("gpr-check could not be spawned");
        };
        match sched::wait(handle) {
            0 => Ok(()),
            _ => Err("gpr-check found a wrong register (or a wrong GS base) after its getpid"),
        }
    };
    // The task's getpid and its exit both enter through entry_SYSCALL_64;
    // the SYSRET exit runs for the getpid only.
    let sysret_before = user::counts().sysret_exits;
    let syscall_walk = entry_at_every_instruction(
        "SYSCALL entry and SYSRET exit",
        entry,
        core::slice::from_ref(syscall_path),
        2,
        gpr_check_on_this_cpu,
    );
    let sysrets = user::counts().sysret_exits - sysret_before;
    // The task's first entry to user mode jumps from
    // extregs_enter_user_mode into the IRET exit (the tick is stopped; an
    // IRQ from user mode, a reschedule IPI say, would add one).
    let iret_walk = entry_at_every_instruction(
        "first entry to user mode and the IRET exit",
        entry,
        &[enter_user_mode.clone(), iret_exit.clone()],
        2,
        gpr_check_on_this_cpu,
    );
    let (Ok(syscall_instructions), Ok(iret_instructions)) = (syscall_walk, iret_walk) else {
        return Outcome::Fail;
    };
    check!(
        result::frame_counts().1 == errors,
        "a user frame failed the entry checks during the walk"
    );
    check!(
        sysrets >= syscall_path.end - syscall_path.start,
        "{sysrets} SYSRET exits: a getpid left by IRET"
    );
    // Every instruction, exactly: entry_SYSCALL_64 is 68 (SWAPGS, the two
    // RSP moves, the six pushes of the frame, PUSH_AND_CLEAR_REGS' 31, cld,
    // CALL_EXTREGS_ENTRY's 6 (the extension reserved, the recorded vector,
    // the frame argument, the tagged frame pointer, the call, the extension
    // released), testb, jz, POP_REGS' 16, the RSP load, SWAPGS, SYSRETQ);
    // extregs_enter_user_mode is 2 (the RSP load, the jmp) and
    // extregs_return_to_user 18 (POP_REGS' 16, SWAPGS, IRETQ). A change to
    // them changes these.
    // A fault-injection build adds POP_REGS' test of its flag (cmpb, jne)
    // and each exit's clearing of it (movb).
    let fault_injection = if cfg!(fault_injection) { 3 } else { 0 };
    check!(
        syscall_instructions == 68 + fault_injection,
        "{syscall_instructions} instructions of entry_SYSCALL_64 interrupted"
    );
    check!(
        iret_instructions == 2 + 18 + fault_injection,
        "{iret_instructions} instructions of the IRET exit interrupted"
    );
    Outcome::Pass
}

/// A real NMI entry, and then a real #DB entry, at every instruction of
/// the context switch (`extregs_context_switch`: the callee-saved registers
/// stored, prev's RSP saved, next's loaded, its registers loaded, `ret`).
/// A kernel task on this CPU that returns at once drives it: init switches
/// to it, and it switches away when it exits. The handler's TSS.RSP0 check
/// is the point: the scheduler has set RSP0 to next's stack top, and named
/// next the running task, before the switch's first instruction, so at
/// every one of them RSP0 is the running task's (a user entry can't come
/// in the switch, but an RSP0 that lags behind the task is one edit away
/// from a user frame on another task's stack).
pub fn nmi_at_every_instruction_of_the_context_switch(_: &Context) -> Outcome {
    let Some(switch) =
        function_range(extregs_entry_asm::extregs_context_switch as *const () as u64)
    else {
        return Outcome::Skip("no symbol table for the context switch");
    };
    let switch_to_a_task_and_back = || {
        let Ok(handle) = sched::spawn(format_args!("st-walk-switch"), |_| {}, 0) else {
            return Err("the task could not be spawned");
        };
        match sched::wait(handle) {
            0 => Ok(()),
            _ => Err("the task did not exit 0"),
        }
    };
    for entry in [WalkEntry::Nmi, WalkEntry::Debug] {
        // Into the task, and out of it to init (its exit wakes init before
        // it switches away).
        let Ok(instructions) = entry_at_every_instruction(
            "context switch",
            entry,
            core::slice::from_ref(&switch),
            2,
            switch_to_a_task_and_back,
        ) else {
            return Outcome::Fail;
        };
        // Every instruction, exactly: 17 (sub, the six stores of the
        // callee-saved registers, the two RSP moves, the six loads, add,
        // ret). A change to the switch changes this.
        check!(instructions == 17, "{instructions} instructions of the context switch interrupted");
    }
    Outcome::Pass
}

/// A real #DB entry at every instruction the outermost NMI runs, from the
/// NMI stub's first instruction to its final IRETQ: the nesting-state
/// test, the exit-window test, the frame copy, the paranoid GS decision,
/// the call, POP_REGS, the state's decrement and the exit window. A
/// self-NMI from init drives it. The #DB runs on its own IST stack, so
/// the NMI's landing frame and its copy are untouched; its IRETQ unblocks
/// NMIs while the NMI runs, which is safe only because no other NMI comes
/// meanwhile (none is sent; don't run this under an outside NMI storm).
/// An NMI at these instructions is a nested NMI, a different walk: the
/// nested, repeat and take-over branches are not taken here.
pub fn debug_at_every_instruction_of_the_nmi_entry(_: &Context) -> Outcome {
    let Some(nmi_entry) = function_range(idt::stub_address(NMI_VECTOR)) else {
        return Outcome::Skip("no symbol table for the NMI entry");
    };
    let self_nmi = || {
        let before = nmi::count_this_cpu();
        apic::send_self_nmi();
        if wait_until(|| nmi::count_this_cpu() != before, EVENT_TIMEOUT_TSC) {
            Ok(())
        } else {
            Err("the self-NMI was not handled")
        }
    };
    let Ok(instructions) = entry_at_every_instruction(
        "outermost NMI",
        WalkEntry::Debug,
        core::slice::from_ref(&nmi_entry),
        1,
        self_nmi,
    ) else {
        return Outcome::Fail;
    };
    // Every instruction the outermost NMI runs, exactly: 96 plus the CLAC
    // with SMAP. The kernel-mode test and the nesting test (testb, jnz,
    // pushq, cmpb, jne), the exit-window test up to the jb taken (leaq,
    // cmpq, jb), the five-word frame copy (10 movs), popq and leaq, the
    // RUNNING mark and orig_ax (movb, pushq), PUSH_AND_CLEAR_REGS' 31,
    // PARANOID_GS_ENTER's 11 (its SWAPGS and movl jumped over), ASM_CLAC's
    // testb and jz, cld, the vector, CALL_EXTREGS_ENTRY's 7 (with the
    // vector from %esi), PARANOID_GS_EXIT's testl and jz, POP_REGS' 16, the
    // decb, the jnz and IRETQ. A fault-injection build adds the reuse
    // fault's cmpb and jne and POP_REGS' cmpb and jne.
    let fault_injection = if cfg!(fault_injection) { 4 } else { 0 };
    let expected = 96 + u64::from(crate::arch::uaccess::smap_enabled()) + fault_injection;
    check!(
        instructions == expected,
        "{instructions} instructions of the outermost NMI interrupted"
    );
    Outcome::Pass
}
