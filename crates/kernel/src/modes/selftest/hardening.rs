//! Selftests of the races a review of the entry path found: each puts an
//! event at the instruction where the old code went wrong, and fails on
//! the old code (see the commit that added it).
//!
//! The tool for "an NMI at every instruction" is single-stepping with the
//! #DB gate pointed at the NMI entry stub ([`idt::with_debug_gate`]): every
//! instruction of the stepped sequence is then interrupted by the real NMI
//! entry, which saves and restores everything a hardware NMI would make it
//! save.

use super::{check, wait_until, Context, Outcome, EVENT_TIMEOUT_TSC};
use crate::arch::pks::{self, KeyRights, PksFault, PKRS_DEFAULT};
use crate::arch::{apic, gdt, idt, memory, serial};
use crate::entry::events::{self, expect_event, FrameEdit};
use crate::entry::hooks;
use crate::entry::paranoid;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use extregs_regs::PtRegs;

use crate::arch::idt::{DEBUG_VECTOR, NMI_VECTOR};
const INT3_VECTOR: u8 = 3;
/// RFLAGS.RF: suppresses an instruction breakpoint for one instruction.
const X86_EFLAGS_RF: u64 = 1 << 16;
/// The WRMSR opcode.
const WRMSR: [u8; 2] = [0x0f, 0x30];

/// What the stepping hook counted.
static STEPS: AtomicU64 = AtomicU64::new(0);
static STEPS_AT_WRMSR: AtomicU64 = AtomicU64::new(0);
static STEPS_WITH_WRONG_LIVE_PKRS: AtomicU64 = AtomicU64::new(0);
static STEP_VECTOR: AtomicU64 = AtomicU64::new(0);
/// While set, every stepping handler also tries to grant [`EDIT_PKEY`] in
/// its frame's saved PKRS; refusals are counted.
static STEP_EDITS: AtomicBool = AtomicBool::new(false);
static STEP_EDITS_REFUSED: AtomicU64 = AtomicU64::new(0);
const EDIT_PKEY: u8 = 2;

/// The event hook while stepping: every trap is one step. Checks the
/// handler's live PKRS itself (as check_frame does) and keeps TF set.
fn stepping_hook(regs: &mut PtRegs, vector: u8) -> bool {
    if u64::from(vector) != STEP_VECTOR.load(Ordering::Relaxed) {
        return false;
    }
    STEPS.fetch_add(1, Ordering::Relaxed);
    // SAFETY: `ip` is the interrupted kernel instruction: mapped code,
    // readable (pkey 0), at least two bytes before the end of the text.
    let opcode = unsafe { core::ptr::read_volatile(regs.ip as *const [u8; 2]) };
    if opcode == WRMSR {
        STEPS_AT_WRMSR.fetch_add(1, Ordering::Relaxed);
    }
    if pks::read_pkrs() != PKRS_DEFAULT {
        STEPS_WITH_WRONG_LIVE_PKRS.fetch_add(1, Ordering::Relaxed);
    }
    if STEP_EDITS.load(Ordering::Relaxed) {
        // SAFETY: `regs` is this entry's frame (the stepping gate's stub
        // built it); an edit refused changes nothing.
        let applied = unsafe { pks::pks_update_saved(regs, EDIT_PKEY, KeyRights::ReadWrite) };
        if !applied {
            STEP_EDITS_REFUSED.fetch_add(1, Ordering::Relaxed);
        }
    }
    true
}

/// The sequence stepped through: one PKRS write through the cache.
#[inline(never)]
extern "C" fn pkrs_write(value: u32) {
    // SAFETY: PKS is on (the caller checks); every value used keeps key 0.
    unsafe { pks::update_pkrs(value) };
}

/// Runs `pkrs_write(value)` with TF set, so every instruction of it traps.
fn single_step_pkrs_write(value: u32) {
    // SAFETY: POPF sets TF; the trap after each instruction is claimed by
    // the stepping hook, which keeps TF; the final POPF clears it (one more
    // trap after it). The call follows the C ABI (clobber_abi).
    unsafe {
        core::arch::asm!(
            "pushfq",
            "orq ${tf}, (%rsp)",
            "popfq",
            "call {function}",
            "pushfq",
            "andq ${not_tf}, (%rsp)",
            "popfq",
            tf = const events::X86_EFLAGS_TF,
            not_tf = const !events::X86_EFLAGS_TF,
            function = sym pkrs_write,
            in("edi") value,
            clobber_abi("C"),
            options(att_syntax)
        );
    }
}

/// An NMI, a #DB and an exception at every instruction of a PKRS write:
/// every one must run its handler with the default PKRS and leave the
/// interrupted write's result intact. (The old `write_pkrs` stored the
/// cache before the WRMSR; an NMI at the WRMSR then saw cache == default,
/// skipped its own WRMSR and ran with the interrupted context's rights.)
/// A fourth run has every NMI also edit its frame's saved PKRS: edits
/// inside a write must be refused, or the write's cache store would leave
/// cache and MSR apart.
pub fn pkrs_write_window_every_instruction(context: &Context) -> Outcome {
    let Some(page) = context.pkey_page else {
        return Outcome::Skip("no PKS");
    };
    let granted = pks::with_key_rights(PKRS_DEFAULT, page.pkey, KeyRights::ReadWrite);
    let gates = [
        ("NMI", idt::stub_address(NMI_VECTOR), Some(gdt::NMI_IST_INDEX), NMI_VECTOR, false),
        ("#DB", idt::stub_address(DEBUG_VECTOR), Some(gdt::DEBUG_IST_INDEX), DEBUG_VECTOR, false),
        ("exception", idt::stub_address(INT3_VECTOR), None, INT3_VECTOR, false),
        ("editing NMI", idt::stub_address(NMI_VECTOR), Some(gdt::NMI_IST_INDEX), NMI_VECTOR, true),
    ];
    for (name, stub, ist, vector, edits) in gates {
        STEPS.store(0, Ordering::Relaxed);
        STEPS_AT_WRMSR.store(0, Ordering::Relaxed);
        STEPS_WITH_WRONG_LIVE_PKRS.store(0, Ordering::Relaxed);
        STEP_EDITS_REFUSED.store(0, Ordering::Relaxed);
        STEP_VECTOR.store(u64::from(vector), Ordering::Relaxed);
        STEP_EDITS.store(edits, Ordering::Relaxed);
        // Grant, check, back to the default, check: each write stepped.
        let mut after = [(0, 0); 2];
        hooks::with_event_hook(stepping_hook, || {
            idt::with_debug_gate(stub, ist, || {
                for (index, value) in [granted, PKRS_DEFAULT].into_iter().enumerate() {
                    single_step_pkrs_write(value);
                    after[index] = (pks::read_pkrs(), pks::cached_pkrs());
                }
            })
        });
        STEP_EDITS.store(false, Ordering::Relaxed);
        paranoid::reset_debug_status();
        let steps = STEPS.load(Ordering::Relaxed);
        let at_wrmsr = STEPS_AT_WRMSR.load(Ordering::Relaxed);
        let wrong = STEPS_WITH_WRONG_LIVE_PKRS.load(Ordering::Relaxed);
        let refused = STEP_EDITS_REFUSED.load(Ordering::Relaxed);
        println!("# {name} entry at each of {steps} instructions, {at_wrmsr} of them a WRMSR");
        if edits {
            println!("# {name}: {refused} of {steps} saved-PKRS edits refused (inside a write)");
        }
        check!(steps > 20, "{name}: only {steps} steps: single-stepping did not work");
        check!(at_wrmsr >= 2, "{name}: no step landed on the two WRMSRs ({at_wrmsr})");
        check!(wrong == 0, "{name}: {wrong} handlers ran with a live PKRS other than the default");
        for (index, (live, cache)) in after.into_iter().enumerate() {
            check!(
                live == cache,
                "{name}: after write {index}: PKRS {live:08x}, cache {cache:08x}"
            );
        }
        if edits {
            // The edits outside the writes were applied (and then written
            // over by the next write); those inside were refused.
            check!(refused > 0, "{name}: no edit was refused inside a write");
            check!(refused < steps, "{name}: every edit was refused");
            // SAFETY: PKS is on; the default keeps key 0 read/write.
            unsafe { pks::update_pkrs(PKRS_DEFAULT) };
        } else {
            check!(after[0] == (granted, granted), "{name}: the grant was lost: {:08x?}", after[0]);
            check!(
                after[1] == (PKRS_DEFAULT, PKRS_DEFAULT),
                "{name}: the default was not restored: {:08x?}",
                after[1]
            );
        }
    }
    Outcome::Pass
}

/// Fault addresses the test's pkey handler saw, in order.
static FAULT_ADDRESSES: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];
static FAULTS_SEEN: AtomicUsize = AtomicUsize::new(0);
/// The address the paranoid handler reads (a second address on the page).
static INNER_FAULT_ADDRESS: AtomicU64 = AtomicU64::new(0);

/// The pkey handler: records the address and grants the key in the saved
/// PKRS, so the load is retried and succeeds.
fn recording_pks_handler(regs: &mut PtRegs, fault: PksFault) -> bool {
    let index = FAULTS_SEEN.fetch_add(1, Ordering::Relaxed);
    if let Some(slot) = FAULT_ADDRESSES.get(index) {
        slot.store(fault.address, Ordering::Relaxed);
    }
    // SAFETY: `regs` is the #PF entry's frame.
    unsafe { pks::pks_update_saved(regs, fault.pkey, KeyRights::ReadWrite) }
}

/// The paranoid handler that lands at the #PF stub's first instruction:
/// takes a #PF of its own at another address, then resumes the #PF entry
/// (RF set, so the instruction breakpoint does not fire again).
fn faulting_paranoid_hook(regs: &mut PtRegs, vector: u8) -> bool {
    if u64::from(vector) != STEP_VECTOR.load(Ordering::Relaxed) {
        return false;
    }
    STEPS.fetch_add(1, Ordering::Relaxed);
    let address = INNER_FAULT_ADDRESS.load(Ordering::Relaxed);
    // SAFETY: a read of the pkey page (mapped; the fault it raises is a
    // PKS fault the test's handler resolves by granting the key).
    let _ = unsafe { core::ptr::read_volatile(address as *const u64) };
    regs.flags |= X86_EFLAGS_RF;
    true
}

/// An NMI (and a #DB) landing on the #PF entry before it read CR2, whose
/// handler takes a #PF of its own: the interrupted #PF must still see its
/// own address. (The old entry read CR2 after the generic entry and never
/// restored it across paranoid handlers.)
pub fn cr2_survives_paranoid_page_fault(context: &Context) -> Outcome {
    let Some(page) = context.pkey_page else {
        return Outcome::Skip("no PKS");
    };
    let outer = page.address.as_u64();
    let inner = outer + 8;
    INNER_FAULT_ADDRESS.store(inner, Ordering::Relaxed);
    pks::register_fault_handler(page.pkey, recording_pks_handler);
    let gates = [
        ("NMI", idt::stub_address(NMI_VECTOR), Some(gdt::NMI_IST_INDEX), NMI_VECTOR),
        ("#DB", idt::stub_address(DEBUG_VECTOR), Some(gdt::DEBUG_IST_INDEX), DEBUG_VECTOR),
    ];
    let mut outcome = Outcome::Pass;
    for (name, stub, ist, vector) in gates {
        FAULTS_SEEN.store(0, Ordering::Relaxed);
        STEPS.store(0, Ordering::Relaxed);
        STEP_VECTOR.store(u64::from(vector), Ordering::Relaxed);
        let page_fault_stub = idt::stub_address(14);
        hooks::with_event_hook(faulting_paranoid_hook, || {
            idt::with_debug_gate(stub, ist, || {
                paranoid::arm_execute_breakpoint(page_fault_stub);
                // SAFETY: the key is access-disabled in the default PKRS,
                // so this raises a PKS #PF the registered handler resolves.
                let _ = unsafe { core::ptr::read_volatile(outer as *const u64) };
                paranoid::disarm_breakpoints();
            })
        });
        paranoid::reset_debug_status();
        // SAFETY: PKS is on; the default keeps key 0 read/write. (The
        // grant applied to this context too: back to the default.)
        unsafe { pks::update_pkrs(PKRS_DEFAULT) };
        let seen = FAULTS_SEEN.load(Ordering::Relaxed);
        let first = FAULT_ADDRESSES[0].load(Ordering::Relaxed);
        let second = FAULT_ADDRESSES[1].load(Ordering::Relaxed);
        println!("# {name}: #PF handlers saw {first:#x} then {second:#x}");
        if STEPS.load(Ordering::Relaxed) != 1 || seen != 2 || first != inner || second != outer {
            println!(
                "# {name}: {} paranoid events, {seen} faults; expected the inner #PF at {inner:#x}, then the outer at {outer:#x}",
                STEPS.load(Ordering::Relaxed)
            );
            outcome = Outcome::Fail;
        }
    }
    pks::unregister_fault_handler(page.pkey);
    outcome
}

/// Sets TF for one `nop`: one single-step #DB, which the installed event
/// hook must claim (clearing TF in its frame).
fn single_step_one_nop() {
    // SAFETY: POPF sets TF; the trap after the nop is claimed by the test's
    // event hook, which clears TF in the frame; no register changes.
    unsafe {
        core::arch::asm!(
            "pushfq",
            "orq ${tf}, (%rsp)",
            "popfq",
            "nop",
            tf = const events::X86_EFLAGS_TF,
            options(att_syntax)
        )
    };
}

/// Called by the tests' breakpoint; never inlined, so it has an address.
#[inline(never)]
#[no_mangle]
extern "C" fn extregs_selftest_breakpoint_target() {
    core::hint::black_box(());
}

static BREAKPOINT_HITS: AtomicU64 = AtomicU64::new(0);
static NMIS_CLAIMED: AtomicU64 = AtomicU64::new(0);
static DR7_INSIDE: AtomicU64 = AtomicU64::new(0);
/// 1: the NMI's hook calls the target; 2: the #DB's hook does.
static CALL_TARGET_FROM: AtomicU64 = AtomicU64::new(0);

/// Counts breakpoint #DBs; NMIs and single-step #DBs call the target.
fn breakpoint_hook(regs: &mut PtRegs, vector: u8) -> bool {
    if vector == DEBUG_VECTOR && paranoid::debug_status() & 1 != 0 {
        // DR6.B0: the breakpoint fired (a fault): step over the target's
        // first instruction with RF.
        BREAKPOINT_HITS.fetch_add(1, Ordering::Relaxed);
        regs.flags |= X86_EFLAGS_RF;
        return true;
    }
    let from = CALL_TARGET_FROM.load(Ordering::Relaxed);
    if (vector == NMI_VECTOR && from == 1) || (vector == DEBUG_VECTOR && from == 2) {
        DR7_INSIDE.store(paranoid::dr7(), Ordering::Relaxed);
        extregs_selftest_breakpoint_target();
        regs.flags &= !events::X86_EFLAGS_TF;
        if vector == NMI_VECTOR {
            NMIS_CLAIMED.fetch_add(1, Ordering::Relaxed);
        }
        return true;
    }
    false
}

/// A breakpoint armed in DR7 must not fire inside an NMI or #DB handler
/// (the #DB would re-enter the #DB IST, and its IRETQ unblock NMIs), and
/// must be armed again after them.
pub fn breakpoints_masked_in_paranoid_handlers(_: &Context) -> Outcome {
    BREAKPOINT_HITS.store(0, Ordering::Relaxed);
    let target = extregs_selftest_breakpoint_target as *const () as u64;
    let outcome = hooks::with_event_hook(breakpoint_hook, || {
        if let Err(why) = paranoid::set_execute_breakpoint(target) {
            println!("# a breakpoint on the target was refused: {why}");
            return Outcome::Fail;
        }
        // The breakpoint works outside handlers.
        extregs_selftest_breakpoint_target();
        check!(BREAKPOINT_HITS.load(Ordering::Relaxed) == 1, "the breakpoint did not fire");
        // Inside an NMI.
        CALL_TARGET_FROM.store(1, Ordering::Relaxed);
        let before = NMIS_CLAIMED.load(Ordering::Relaxed);
        apic::send_self_nmi();
        let arrived =
            wait_until(|| NMIS_CLAIMED.load(Ordering::Relaxed) != before, EVENT_TIMEOUT_TSC);
        check!(arrived, "the self-NMI never arrived");
        // Inside a #DB (single-step).
        CALL_TARGET_FROM.store(2, Ordering::Relaxed);
        let dr7_in_nmi = DR7_INSIDE.swap(0, Ordering::Relaxed);
        single_step_one_nop();
        CALL_TARGET_FROM.store(0, Ordering::Relaxed);
        let dr7_in_db = DR7_INSIDE.load(Ordering::Relaxed);
        let dr7_after = paranoid::dr7();
        check!(
            BREAKPOINT_HITS.load(Ordering::Relaxed) == 1,
            "the breakpoint fired inside a paranoid handler ({} hits)",
            BREAKPOINT_HITS.load(Ordering::Relaxed)
        );
        check!(dr7_in_nmi == paranoid::DR7_RESET, "DR7 {dr7_in_nmi:#x} inside the NMI");
        check!(dr7_in_db == paranoid::DR7_RESET, "DR7 {dr7_in_db:#x} inside the #DB");
        check!(dr7_after & 1 == 1, "DR7 {dr7_after:#x} afterwards: not restored");
        extregs_selftest_breakpoint_target();
        check!(BREAKPOINT_HITS.load(Ordering::Relaxed) == 2, "the breakpoint is gone afterwards");
        Outcome::Pass
    });
    paranoid::disarm_breakpoints();
    paranoid::reset_debug_status();
    outcome
}

static INNER_DEBUG_FRAME: AtomicU64 = AtomicU64::new(0);
static OUTER_DEBUG_FRAME: AtomicU64 = AtomicU64::new(0);
static DEBUG_IST_IN_HANDLER: AtomicU64 = AtomicU64::new(0);

/// The outer #DB (single-step) executes `int $1`; the inner one records its
/// frame. Both resume normally.
fn recursion_hook(regs: &mut PtRegs, vector: u8) -> bool {
    if vector != DEBUG_VECTOR {
        return false;
    }
    let address = regs as *mut PtRegs as u64;
    if OUTER_DEBUG_FRAME.load(Ordering::Relaxed) == 0 {
        OUTER_DEBUG_FRAME.store(address, Ordering::Relaxed);
        DEBUG_IST_IN_HANDLER.store(gdt::debug_ist_pointer(), Ordering::Relaxed);
        let saved = *regs;
        // SAFETY: `int $1` enters through the #DB gate (on its IST, like
        // any #DB); the inner run of this hook claims it and it returns
        // right after the instruction.
        unsafe { core::arch::asm!("int $1", options(nostack)) };
        if *regs != saved {
            // The inner #DB overwrote this frame: report it as a bad frame.
            OUTER_DEBUG_FRAME.store(u64::MAX, Ordering::Relaxed);
        }
        regs.flags &= !events::X86_EFLAGS_TF;
    } else {
        INNER_DEBUG_FRAME.store(address, Ordering::Relaxed);
    }
    true
}

/// A #DB raised inside the #DB handler (`int $1`) lands below the running
/// frame, on the shifted #DB stack, and both return (the old entry had the
/// CPU push the inner frame over the outer one).
pub fn debug_recursion_shifts_the_ist(_: &Context) -> Outcome {
    OUTER_DEBUG_FRAME.store(0, Ordering::Relaxed);
    INNER_DEBUG_FRAME.store(0, Ordering::Relaxed);
    let ist_before = gdt::debug_ist_pointer();
    events::arm(FrameEdit::None);
    hooks::with_event_hook(recursion_hook, || {
        expect_event!(
            setup: ["pushfq", "orq ${tf}, (%rsp)", "popfq"],
            event: "nop",
            tf = const events::X86_EFLAGS_TF
        );
    });
    paranoid::reset_debug_status();
    let outer = OUTER_DEBUG_FRAME.load(Ordering::Relaxed);
    let inner = INNER_DEBUG_FRAME.load(Ordering::Relaxed);
    check!(outer != u64::MAX, "the inner #DB overwrote the outer #DB's frame");
    check!(outer != 0 && inner != 0, "frames: outer {outer:#x}, inner {inner:#x}");
    check!(
        inner + gdt::DEBUG_IST_SHIFT - 4096 < outer,
        "inner frame {inner:#x} not a shift below the outer {outer:#x}"
    );
    check!(
        gdt::ist_stack_of(inner) == Some(gdt::DEBUG_IST_INDEX),
        "inner frame {inner:#x} is not on the #DB stack"
    );
    check!(
        DEBUG_IST_IN_HANDLER.load(Ordering::Relaxed) == ist_before - gdt::DEBUG_IST_SHIFT,
        "the #DB IST pointer was not shifted in the handler"
    );
    check!(gdt::debug_ist_pointer() == ist_before, "the #DB IST pointer was not put back");
    Outcome::Pass
}

static PRINTED_FROM_DEBUG: AtomicU64 = AtomicU64::new(0);

fn printing_debug_hook(regs: &mut PtRegs, vector: u8) -> bool {
    if vector != DEBUG_VECTOR {
        return false;
    }
    println!("# printed from a #DB handler while the console lock was held");
    PRINTED_FROM_DEBUG.fetch_add(1, Ordering::Relaxed);
    regs.flags &= !events::X86_EFLAGS_TF;
    true
}

/// A #DB handler that prints while the interrupted code holds the console
/// lock: its line is deferred, not a deadlock, and comes out afterwards.
pub fn console_from_paranoid_handler(_: &Context) -> Outcome {
    let (deferred_before, lost_before) = serial::deferred_counts();
    hooks::with_event_hook(printing_debug_hook, || {
        serial::with_console_locked(|| {
            single_step_one_nop();
        })
    });
    paranoid::reset_debug_status();
    println!("# the console is free again");
    let (deferred_after, lost_after) = serial::deferred_counts();
    check!(PRINTED_FROM_DEBUG.load(Ordering::Relaxed) >= 1, "the #DB handler never ran");
    check!(
        deferred_after == deferred_before + 1,
        "{} lines deferred",
        deferred_after - deferred_before
    );
    check!(lost_after == lost_before, "{} bytes lost", lost_after - lost_before);
    Outcome::Pass
}

/// The page below every IST stack is unmapped (an overflow faults there
/// instead of running into the next stack), the stacks themselves mapped.
pub fn ist_stacks_have_guard_pages(_: &Context) -> Outcome {
    for index in 0..4 {
        let guard = gdt::ist_guard_range(index);
        let stack = gdt::ist_stack_range(index);
        check!(guard.end == stack.start, "IST {index}: guard not right below the stack");
        check!(
            !memory::is_mapped(x86_64::VirtAddr::new(guard.start)),
            "IST {index} ({}): guard page at {:#x} is mapped",
            gdt::ist_stack_name(index),
            guard.start
        );
        check!(
            memory::is_mapped(x86_64::VirtAddr::new(stack.start))
                && memory::is_mapped(x86_64::VirtAddr::new(stack.end - 8)),
            "IST {index}: the stack itself is not mapped"
        );
    }
    Outcome::Pass
}

/// Breakpoints where a paranoid entry runs before it clears DR7 are
/// refused: a data breakpoint on the NMI state byte, the entry stubs, the
/// IST stacks, the TSS. Ordinary kernel code is not.
pub fn breakpoints_refused_where_entries_run(_: &Context) -> Outcome {
    let refused = [
        ("the NMI nesting state", gdt::nmi_nesting_state_address()),
        ("asm_exc_nmi", idt::stub_address(NMI_VECTOR)),
        ("asm_exc_debug", idt::stub_address(DEBUG_VECTOR)),
        ("the NMI IST stack", gdt::ist_stack_range(gdt::NMI_IST_INDEX).end - 8),
        ("the TSS", gdt::tss_range().start),
        // The Rust entry, which runs before DR7 is cleared and the #DB
        // stack is moved.
        ("extregs_exception_entry", crate::dispatch::extregs_exception_entry as *const () as u64),
        ("pks::arch_enter", pks::arch_enter as *const () as u64),
        // A method and a trait implementation: demangled with a leading `<`.
        ("KernelPlatform::arch_enter", {
            use extregs_entry::EntryPlatform;
            <crate::entry::platform::KernelPlatform as EntryPlatform>::arch_enter as *const ()
                as u64
        }),
        // The bench's SYSCALL entries: entry code outside entry_64.S.
        ("extregs_bench_syscall_extended", extregs_bench::syscall_entry_addresses().1),
    ];
    for (name, address) in refused {
        let result = paranoid::set_execute_breakpoint(address);
        paranoid::disarm_breakpoints();
        check!(result.is_err(), "a breakpoint on {name} ({address:#x}) was accepted");
    }
    let ordinary = extregs_selftest_breakpoint_target as *const () as u64;
    check!(paranoid::breakpoint_refused(ordinary).is_none(), "ordinary code refused");
    Outcome::Pass
}
