//! `mode=selftest`: KTAP version 1 tests of the extended frame on every
//! exception kind the kernel can raise on purpose.
//!
//! Each test raises one event through [`expect_event!`] (or the GPR
//! trampoline below), lets [`events::recording_hook`] capture the frame, and
//! checks what the handler saw and what came back after IRET.

mod hardening;
mod irqs;
mod linux;
mod migration;
mod paranoid;
mod pkeys;
mod sched;
mod smp;
mod tlb;
mod user;
pub(crate) mod walk;
mod walk_nmi;
mod walk_user;

use crate::arch::irqflags;
use crate::arch::memory::PkeyPage;
use crate::arch::pks::{self, KeyRights, PKRS_DEFAULT};
use crate::arch::{apic, gdt};
use crate::debug::{coverage, result};
use crate::entry::events::{self, expect_event, FrameEdit, Observed, FAULT_IP, RESUME_IP};
use crate::entry::hooks;
use crate::modes::trampolines;
use core::sync::atomic::Ordering;
use extregs_entry_asm::{asm_offsets, vector_has_error_code};
use extregs_regs::{EntryVector, PtRegs, GENERIC_PTREGS_SIZE, NO_ERROR_CODE};

/// How one test ended.
pub(crate) enum Outcome {
    Pass,
    Fail,
    Skip(&'static str),
}

/// Prints a KTAP diagnostic and fails the test when `condition` is false.
#[macro_export]
#[doc(hidden)]
macro_rules! selftest_check {
    ($condition:expr, $($message:tt)*) => {
        if !$condition {
            $crate::println!("# {}: {}", stringify!($condition), format_args!($($message)*));
            return $crate::modes::selftest::Outcome::Fail;
        }
    };
}
use selftest_check as check;

/// Everything a test may need from boot.
pub struct Context {
    pub pkey_page: Option<PkeyPage>,
    /// A *user* page with the same key (PKRS must never apply to it).
    pub user_pkey_page: Option<PkeyPage>,
}

/// Value the pkey page is filled with.
pub const PKEY_PAGE_FILL: u64 = 0x5eed_0f0d_dba1_1000;

type Test = fn(&Context) -> Outcome;

const TESTS: &[(&str, Test)] = &[
    ("container_of_below_ptregs", container_of_below_ptregs),
    ("divide_error_frame", divide_error_frame),
    ("int3_frame", int3_frame),
    ("invalid_opcode_frame", invalid_opcode_frame),
    ("general_protection_frame", general_protection_frame),
    ("pks_read_fault_frame", pks_read_fault_frame),
    ("pks_write_fault_frame", pks_write_fault_frame),
    ("gprs_round_trip", gprs_round_trip),
    ("gpr_edit_through_ptregs", gpr_edit_through_ptregs),
    ("pkrs_saved_live_restored", pkrs_saved_live_restored),
    ("pkrs_saved_edit_applies_after_iret", pkrs_saved_edit_applies_after_iret),
    ("exit_rcu_round_trip", exit_rcu_round_trip),
    ("irq_stubs_report_their_vectors", irqs::irq_stubs_report_their_vectors),
    ("lapic_timer_one_shot", irqs::lapic_timer_one_shot),
    ("lapic_timer_periodic", irqs::lapic_timer_periodic),
    ("self_ipi_fixed_vector", irqs::self_ipi_fixed_vector),
    ("spurious_vector_eoi_rule", irqs::spurious_vector_eoi_rule),
    ("idle_irq_records_exit_rcu", irqs::idle_irq_records_exit_rcu),
    ("idle_irq_nmi_nesting_rcu_lockdep", irqs::idle_irq_nmi_nesting_rcu_lockdep),
    ("nmi_self_on_ist", paranoid::nmi_self_on_ist),
    ("nmi_lockdep_round_trip", paranoid::nmi_lockdep_round_trip),
    ("nmi_int3_self_nmi_nested", paranoid::nmi_int3_self_nmi_nested),
    ("debug_single_step_on_ist", paranoid::debug_single_step_on_ist),
    ("debug_dr0_breakpoint_on_ist", paranoid::debug_dr0_breakpoint_on_ist),
    ("pkrs_write_window_every_instruction", hardening::pkrs_write_window_every_instruction),
    ("cr2_survives_paranoid_page_fault", hardening::cr2_survives_paranoid_page_fault),
    ("breakpoints_masked_in_paranoid_handlers", hardening::breakpoints_masked_in_paranoid_handlers),
    ("breakpoints_refused_where_entries_run", hardening::breakpoints_refused_where_entries_run),
    ("debug_recursion_shifts_the_ist", hardening::debug_recursion_shifts_the_ist),
    ("console_from_paranoid_handler", hardening::console_from_paranoid_handler),
    ("ist_stacks_have_guard_pages", hardening::ist_stacks_have_guard_pages),
    (
        "nmi_at_every_instruction_of_the_entry_paths",
        walk::nmi_at_every_instruction_of_the_entry_paths,
    ),
    ("nmi_at_every_irq_stub", walk::nmi_at_every_irq_stub),
    (
        "nmi_at_every_instruction_of_the_debug_entry",
        walk::nmi_at_every_instruction_of_the_debug_entry,
    ),
    (
        "debug_at_every_instruction_of_the_nmi_entry",
        walk::debug_at_every_instruction_of_the_nmi_entry,
    ),
    (
        "nmi_at_every_instruction_of_the_nmi_windows",
        walk_nmi::nmi_at_every_instruction_of_the_nmi_windows,
    ),
    ("pks_fault_callback_run_exception", pkeys::pks_fault_callback_run_exception),
    ("pkrs_cache_skips_wrmsr", pkeys::pkrs_cache_skips_wrmsr),
    ("pks_kvm_unit_tests_matrix", pkeys::pks_kvm_unit_tests_matrix),
    ("preemption_on_irq_exit", sched::preemption_on_irq_exit),
    ("preempt_disable_holds_off_preemption", sched::preempt_disable_holds_off_preemption),
    ("pkrs_per_task_after_switch", sched::pkrs_per_task_after_switch),
    (
        "pkrs_of_preempted_frame_restored_on_resume",
        sched::pkrs_of_preempted_frame_restored_on_resume,
    ),
    ("nmi_during_context_switch", sched::nmi_during_context_switch),
    (
        "nmi_at_every_instruction_of_the_context_switch",
        walk::nmi_at_every_instruction_of_the_context_switch,
    ),
    ("idle_task_irqs_record_exit_rcu", sched::idle_task_irqs_record_exit_rcu),
    // First of the user-mode tests: a broken way in or out is then the
    // walk's to report, at the instruction where it breaks.
    (
        "nmi_at_every_instruction_of_the_user_paths",
        walk::nmi_at_every_instruction_of_the_user_paths,
    ),
    (
        "nmi_at_every_instruction_of_the_ist_entries_from_user",
        walk_user::nmi_at_every_instruction_of_the_ist_entries_from_user,
    ),
    ("syscall_preserves_gprs", user::syscall_preserves_gprs),
    ("syscall_sysret_and_iret_paths", user::syscall_sysret_and_iret_paths),
    ("user_faults_kill_only_the_faulting_task", user::user_faults_kill_only_the_faulting_task),
    ("user_frames_sit_at_task_pt_regs", user::user_frames_sit_at_task_pt_regs),
    ("gs_base_right_after_every_return", user::gs_base_right_after_every_return),
    ("syscall_pointers_and_numbers_refused", user::syscall_pointers_and_numbers_refused),
    (
        "syscall_irq_nmi_nest_each_with_its_extension",
        user::syscall_irq_nmi_nest_each_with_its_extension,
    ),
    ("pkrs_never_applies_to_user_mode", user::pkrs_never_applies_to_user_mode),
    ("smap_stops_kernel_access_to_user_memory", user::smap_stops_kernel_access_to_user_memory),
    ("smep_stops_kernel_execution_of_user_pages", user::smep_stops_kernel_execution_of_user_pages),
    (
        "signal_delivered_and_returned_at_task_pt_regs",
        linux::signal_delivered_and_returned_at_task_pt_regs,
    ),
    ("sigreturn_forces_user_selectors", linux::sigreturn_forces_user_selectors),
    ("fpu_state_is_per_task", linux::fpu_state_is_per_task),
    ("each_cpu_has_its_own_entry_state", smp::each_cpu_has_its_own_entry_state),
    ("nmi_ipis_reach_each_cpu", smp::nmi_ipis_reach_each_cpu),
    (
        "nmi_on_one_cpu_runs_while_another_is_in_nmi",
        smp::nmi_on_one_cpu_runs_while_another_is_in_nmi,
    ),
    ("pkrs_cache_and_bracket_are_per_cpu", smp::pkrs_cache_and_bracket_are_per_cpu),
    ("user_nmi_latch_is_per_cpu", smp::user_nmi_latch_is_per_cpu),
    ("backtrace_answers_from_every_cpu", smp::backtrace_answers_from_every_cpu),
    ("icr_high_survives_a_nested_send", smp::icr_high_survives_a_nested_send),
    ("migration_keeps_pkrs_and_gprs", migration::migration_keeps_pkrs_and_gprs),
    ("nobody_runs_a_half_switched_task", migration::nobody_runs_a_half_switched_task),
    ("io_bitmap_is_per_task", migration::io_bitmap_is_per_task),
    ("tlb_shootdown_after_unmap", tlb::tlb_shootdown_after_unmap),
    ("tlb_shootdown_after_pkey_retag", tlb::tlb_shootdown_after_pkey_retag),
];

/// Runs every test, prints KTAP and the RESULT line; true when none failed.
pub fn run(context: &Context) -> bool {
    println!("KTAP version 1");
    println!("1..{}", TESTS.len());
    crate::entry::irq::set_recording(true);
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    for (number, (name, test)) in TESTS.iter().enumerate() {
        let (_, frame_errors_before) = result::frame_counts();
        // The tests count and walk this CPU's events exactly, so NMIs from
        // outside (a QMP storm) do not reach it while one runs; the other
        // CPUs keep taking them.
        let mut outcome = apic::with_outside_nmis_held(|| {
            hooks::with_trap_hook(events::recording_hook, || test(context))
        });
        // Every frame taken during the test went through check::check_frame.
        let (_, frame_errors_after) = result::frame_counts();
        if frame_errors_after != frame_errors_before {
            println!(
                "# {} frames failed the entry checks",
                frame_errors_after - frame_errors_before
            );
            outcome = Outcome::Fail;
        }
        // Every test leaves PKRS at the default, whatever it did: the
        // live value, and init's own.
        crate::sched::pks_reset_current();
        if pks::enabled() && pks::read_pkrs() != PKRS_DEFAULT {
            // SAFETY: PKS is on; the default keeps key 0 read/write.
            unsafe { pks::write_pkrs(PKRS_DEFAULT) };
        }
        match outcome {
            Outcome::Pass => {
                passed += 1;
                println!("ok {} {}", number + 1, name);
            }
            Outcome::Fail => {
                failed += 1;
                println!("not ok {} {}", number + 1, name);
            }
            Outcome::Skip(reason) => {
                skipped += 1;
                println!("ok {} {} # SKIP {}", number + 1, name, reason);
            }
        }
    }
    println!(
        "# extregs-selftest: pass:{passed} fail:{failed} skip:{skipped} total:{}",
        TESTS.len()
    );
    // Where the walks' NMI entries interrupted the entry text, for the
    // runner's coverage figures (the #DB walks are not counted).
    coverage::print_hits();
    let ok = failed == 0;
    result::emit(
        ok,
        format_args!(
            ",\"tests\":{},\"passed\":{passed},\"failed\":{failed},\"skipped\":{skipped}",
            TESTS.len()
        ),
    );
    ok
}

/// The handler's observation, or a failed test when it never ran.
#[macro_export]
#[doc(hidden)]
macro_rules! selftest_observed_or_fail {
    () => {
        match $crate::entry::events::observed() {
            Some(observed) => observed,
            None => {
                $crate::println!("# the handler never saw the event");
                return $crate::modes::selftest::Outcome::Fail;
            }
        }
    };
}
use selftest_observed_or_fail as observed_or_fail;

/// Checks vector, `orig_ax`, `ip` and the kernel segments of a frame.
pub(crate) fn check_frame(
    observed: &Observed,
    vector: u8,
    error_code: Option<u64>,
    ip: u64,
) -> Outcome {
    check!(observed.vector == vector, "vector {} (expected {})", observed.vector, vector);
    check!(
        observed.generic.entry_vector() == EntryVector::Idt(vector),
        "the extension records {:?} (vector {:#x} entered the frame)",
        observed.generic.entry_vector(),
        vector
    );
    let expected_orig_ax = error_code.unwrap_or(NO_ERROR_CODE);
    check!(
        observed.regs.orig_ax == expected_orig_ax,
        "orig_ax {:#x} (expected {:#x})",
        observed.regs.orig_ax,
        expected_orig_ax
    );
    check!(
        vector_has_error_code(vector) == error_code.is_some(),
        "the stub table disagrees about vector {}'s error code",
        vector
    );
    check!(observed.regs.ip == ip, "ip {:#x} (expected {:#x})", observed.regs.ip, ip);
    check!(
        observed.regs.cs == u64::from(gdt::KERNEL_CS.0),
        "cs {:#x} (expected __KERNEL_CS)",
        observed.regs.cs
    );
    check!(
        observed.regs.ss == u64::from(gdt::KERNEL_DS.0),
        "ss {:#x} (expected __KERNEL_DS)",
        observed.regs.ss
    );
    Outcome::Pass
}

fn container_of_below_ptregs(_: &Context) -> Outcome {
    events::arm(FrameEdit::None);
    expect_event!(setup: [], event: "int3");
    let observed = observed_or_fail!();
    check!(
        observed.regs_address - observed.extension_address == GENERIC_PTREGS_SIZE as u64,
        "extension at {:#x}, PtRegs at {:#x}",
        observed.extension_address,
        observed.regs_address
    );
    check!(
        GENERIC_PTREGS_SIZE == asm_offsets::GENERIC_PTREGS_SIZE,
        "asm-offsets says {}",
        asm_offsets::GENERIC_PTREGS_SIZE
    );
    check!(
        observed.extension_address % 16 == 0,
        "RSP at the call into Rust ({:#x}) is not 16-byte aligned",
        observed.extension_address
    );
    Outcome::Pass
}

fn divide_error_frame(_: &Context) -> Outcome {
    events::arm(FrameEdit::None);
    expect_event!(
        setup: ["xorl %edx, %edx", "movl $1, %eax", "xorl %ecx, %ecx"],
        event: "divl %ecx",
        out("rdx") _, out("rcx") _
    );
    let observed = observed_or_fail!();
    check_frame(&observed, 0, None, FAULT_IP.load(Ordering::SeqCst))
}

fn int3_frame(_: &Context) -> Outcome {
    events::arm(FrameEdit::None);
    expect_event!(setup: [], event: "int3");
    let observed = observed_or_fail!();
    // int3 is a trap: the saved ip is the instruction after it.
    check_frame(&observed, 3, None, RESUME_IP.load(Ordering::SeqCst))
}

fn invalid_opcode_frame(_: &Context) -> Outcome {
    events::arm(FrameEdit::None);
    expect_event!(setup: [], event: "ud2");
    let observed = observed_or_fail!();
    check_frame(&observed, 6, None, FAULT_IP.load(Ordering::SeqCst))
}

fn general_protection_frame(_: &Context) -> Outcome {
    events::arm(FrameEdit::None);
    expect_event!(
        setup: ["movabsq $0x8000000000000000, %rcx"],
        event: "movq (%rcx), %rcx",
        out("rcx") _
    );
    let observed = observed_or_fail!();
    // A non-canonical address: #GP with error code 0.
    check_frame(&observed, 13, Some(0), FAULT_IP.load(Ordering::SeqCst))
}

/// #PF error-code bits: present, write, protection key.
pub(crate) const PF_PRESENT: u64 = 1 << 0;
pub(crate) const PF_WRITE: u64 = 1 << 1;
pub(crate) const PF_PROTECTION_KEY: u64 = 1 << 5;

fn pks_read_fault_frame(context: &Context) -> Outcome {
    let Some(page) = context.pkey_page else {
        return Outcome::Skip("no PKS");
    };
    // The default PKRS access-disables the page's key: a read faults.
    events::arm(FrameEdit::None);
    expect_event!(
        setup: [],
        event: "movq ({address}), %rcx",
        address = in(reg) page.address.as_u64(), out("rcx") _
    );
    let observed = observed_or_fail!();
    if let Outcome::Fail = check_frame(
        &observed,
        14,
        Some(PF_PRESENT | PF_PROTECTION_KEY),
        FAULT_IP.load(Ordering::SeqCst),
    ) {
        return Outcome::Fail;
    }
    check!(observed.cr2 == page.address.as_u64(), "cr2 {:#x}", observed.cr2);
    Outcome::Pass
}

fn pks_write_fault_frame(context: &Context) -> Outcome {
    let Some(page) = context.pkey_page else {
        return Outcome::Skip("no PKS");
    };
    let read_only = pks::with_key_rights(PKRS_DEFAULT, page.pkey, KeyRights::ReadOnly);
    // SAFETY: PKS is on (there is a pkey page); key 0 stays read/write.
    unsafe { pks::write_pkrs(read_only) };
    // SAFETY: the page is mapped and its key now allows reads. (With
    // write-disable only, a read works and returns the page's fill...)
    let value = unsafe { core::ptr::read_volatile(page.address.as_ptr::<u64>()) };
    check!(value == PKEY_PAGE_FILL, "read {:#x} through the pkey page", value);
    // ...and a write faults.
    events::arm(FrameEdit::None);
    expect_event!(
        setup: [],
        event: "movq %rcx, ({address})",
        address = in(reg) page.address.as_u64(), in("rcx") 0u64
    );
    let observed = observed_or_fail!();
    if let Outcome::Fail = check_frame(
        &observed,
        14,
        Some(PF_PRESENT | PF_WRITE | PF_PROTECTION_KEY),
        FAULT_IP.load(Ordering::SeqCst),
    ) {
        return Outcome::Fail;
    }
    check!(observed.saved_pkrs == read_only, "saved PKRS {:08x}", observed.saved_pkrs);
    check!(pks::read_pkrs() == read_only, "PKRS after IRET {:08x}", pks::read_pkrs());
    Outcome::Pass
}

/// A distinct, recognisable value per GPR.
pub(crate) fn gpr_patterns() -> PtRegs {
    let pattern = |index: u64| 0xe1e2_0000_0000_0000 | (index << 40) | (index * 0x0101_0101);
    PtRegs {
        r15: pattern(1),
        r14: pattern(2),
        r13: pattern(3),
        r12: pattern(4),
        bp: pattern(5),
        bx: pattern(6),
        r11: pattern(7),
        r10: pattern(8),
        r9: pattern(9),
        r8: pattern(10),
        ax: pattern(11),
        cx: pattern(12),
        dx: pattern(13),
        si: pattern(14),
        di: pattern(15),
        ..PtRegs::default()
    }
}

/// Runs the trampoline with `edit`; returns (what the handler saw, what came
/// back).
pub(crate) fn int3_with_gprs(input: &PtRegs, edit: FrameEdit) -> (Option<Observed>, PtRegs) {
    // The fuzzer's int3 trampoline: loads all 15 GPRs from `input`,
    // executes int3, stores all 15 into `output`.
    let (trampoline, _, resume) =
        crate::modes::trampolines::trampoline(extregs_cmdline::FuzzKind::Int3);
    events::arm(edit);
    RESUME_IP.store(resume, Ordering::SeqCst);
    let mut output = PtRegs::default();
    // SAFETY: the trampoline reads `input` and writes `output` (both valid
    // PtRegs), restores every callee-saved register and executes one int3,
    // which the installed recording hook claims.
    unsafe { trampoline(input, &mut output) };
    (events::observed(), output)
}

/// Calls one of the fuzzer's GPR trampolines (every GPR loaded from
/// `input`, one event raised, every GPR stored after) and returns what it
/// stored; with `user_gs`, from kernel code running on the user's GS base
/// (SWAPGS before the call and after it), as an event on SYSCALL's first
/// instruction would find the CPU.
///
/// # Safety
///
/// The trampoline's event must be handled and returned from (a walk's
/// hook claims it). With `user_gs` it must also enter a paranoid stub
/// (NMI, #DB: the self-NMI trampoline, or the `int $n` one with its vector
/// routed to the #DB stub), which decides about GS from MSR_GS_BASE: a
/// stub that trusts the saved CS would run the kernel on the user's base.
pub(super) unsafe fn call_trampoline(
    trampoline: trampolines::Trampoline,
    input: &PtRegs,
    user_gs: bool,
) -> PtRegs {
    let mut output = PtRegs::default();
    if !user_gs {
        // The trampoline keeps every callee-saved register and raises one
        // event, which the caller guarantees is handled and returned from.
        // SAFETY: it reads `input` and writes `output`, both valid PtRegs
        // borrowed for the call only, and nothing else of Rust's.
        unsafe { trampoline(input, &mut output) };
        return output;
    }
    // Read before the SWAPGSes, not through GS after them.
    let kernel_gs = gdt::kernel_gs_base();
    x86_64::instructions::interrupts::without_interrupts(|| {
        // As above, called by hand between two SWAPGSes. The trampoline
        // touches no %gs (only `input`, `output`, the caller's stack and
        // the APIC's MMIO or MSR), interrupts are off, and the only entry
        // it raises is a paranoid one (the caller's promise), which finds
        // the user's GS base and swaps for itself; an int3 in that handler
        // trusts the saved CS, but runs after that swap. Nothing between
        // the SWAPGSes can fault into a stub that trusts CS.
        // SAFETY: the pointers are as above; the block is not `nostack`,
        // so RSP is aligned for the call, and clobber_abi("C") covers
        // what the call may change.
        unsafe {
            core::arch::asm!(
                "swapgs",
                "call {trampoline}",
                "swapgs",
                trampoline = in(reg) trampoline,
                in("rdi") input as *const PtRegs,
                in("rsi") &mut output as *mut PtRegs,
                clobber_abi("C"),
            )
        };
        // The kernel's GS base is back (a lost swap would crash later,
        // far from here). Compared with the base read before, and
        // swapped back first if it is not, so the panic can print.
        if x86_64::registers::model_specific::GsBase::read().as_u64() != kernel_gs {
            // SAFETY: puts the kernel's GS base back; interrupts are off.
            unsafe { core::arch::asm!("swapgs") };
            panic!("the trampoline's SWAPGSes did not pair");
        }
    });
    output
}

fn gprs_round_trip(_: &Context) -> Outcome {
    let input = gpr_patterns();
    let (observed, output) = int3_with_gprs(&input, FrameEdit::None);
    let Some(observed) = observed else {
        println!("# the handler never saw the int3");
        return Outcome::Fail;
    };
    for ((name, expected), ((_, in_frame), (_, returned))) in
        input.gprs().iter().zip(observed.regs.gprs().iter().zip(output.gprs().iter()))
    {
        check!(
            *in_frame == *expected,
            "{} in PtRegs {:#x}, loaded {:#x}",
            name,
            in_frame,
            expected
        );
        check!(*returned == *expected, "{} came back {:#x}, was {:#x}", name, returned, expected);
    }
    Outcome::Pass
}

fn gpr_edit_through_ptregs(_: &Context) -> Outcome {
    let input = gpr_patterns();
    let (new_r12, new_bx) = (0x1212_1212_dead_beef, 0xb0b0_b0b0_cafe_f00d);
    let (observed, output) = int3_with_gprs(&input, FrameEdit::Gprs { r12: new_r12, bx: new_bx });
    check!(observed.is_some(), "the handler never saw the int3");
    let expected = PtRegs { r12: new_r12, bx: new_bx, ..input };
    for ((name, want), (_, got)) in expected.gprs().iter().zip(output.gprs().iter()) {
        check!(*got == *want, "{} came back {:#x}, expected {:#x}", name, got, want);
    }
    Outcome::Pass
}

fn pkrs_saved_live_restored(context: &Context) -> Outcome {
    let Some(page) = context.pkey_page else {
        return Outcome::Skip("no PKS");
    };
    let interrupted = pks::with_key_rights(PKRS_DEFAULT, page.pkey, KeyRights::ReadWrite);
    // SAFETY: PKS is on; key 0 stays read/write.
    unsafe { pks::write_pkrs(interrupted) };
    events::arm(FrameEdit::None);
    expect_event!(setup: [], event: "int3");
    let after = pks::read_pkrs();
    let observed = observed_or_fail!();
    check!(
        observed.saved_pkrs == interrupted,
        "saved {:08x}, interrupted context had {:08x}",
        observed.saved_pkrs,
        interrupted
    );
    check!(
        observed.live_pkrs == PKRS_DEFAULT,
        "live PKRS in the handler {:08x}, default {:08x}",
        observed.live_pkrs,
        PKRS_DEFAULT
    );
    check!(after == interrupted, "PKRS after IRET {:08x}, saved {:08x}", after, interrupted);
    Outcome::Pass
}

fn pkrs_saved_edit_applies_after_iret(context: &Context) -> Outcome {
    let Some(page) = context.pkey_page else {
        return Outcome::Skip("no PKS");
    };
    // Interrupted context: default rights, so the page is off limits. The
    // handler grants the key in the *saved* PKRS only.
    events::arm(FrameEdit::GrantPkey(page.pkey));
    expect_event!(setup: [], event: "int3");
    let after = pks::read_pkrs();
    let observed = observed_or_fail!();
    let granted = pks::with_key_rights(PKRS_DEFAULT, page.pkey, KeyRights::ReadWrite);
    check!(observed.saved_pkrs == PKRS_DEFAULT, "saved {:08x}", observed.saved_pkrs);
    check!(after == granted, "PKRS after IRET {:08x}, handler granted {:08x}", after, granted);
    // SAFETY: the key is now granted, so the mapped page is readable.
    let value = unsafe { core::ptr::read_volatile(page.address.as_ptr::<u64>()) };
    check!(value == PKEY_PAGE_FILL, "read {:#x} through the granted key", value);
    Outcome::Pass
}

fn exit_rcu_round_trip(_: &Context) -> Outcome {
    // Pretend the CPU is idle (RCU not watching), as the idle loop will.
    irqflags::set_rcu_watching(false);
    events::arm(FrameEdit::None);
    expect_event!(setup: [], event: "int3");
    let watching_after = irqflags::rcu_is_watching();
    irqflags::set_rcu_watching(true);
    let observed = observed_or_fail!();
    check!(observed.rcu_watching, "RCU was not watching inside the handler");
    check!(
        observed.generic.exit_rcu == 1,
        "exit_rcu {} in the extension",
        observed.generic.exit_rcu
    );
    check!(!watching_after, "irqentry_exit did not undo rcu_irq_enter");
    // And while watching, exit_rcu stays clear.
    events::arm(FrameEdit::None);
    expect_event!(setup: [], event: "int3");
    let observed = observed_or_fail!();
    check!(observed.generic.exit_rcu == 0, "exit_rcu {} while watching", observed.generic.exit_rcu);
    check!(irqflags::rcu_is_watching(), "RCU stopped watching");
    Outcome::Pass
}

/// Spins until `condition` holds or about `max_tsc_ticks` TSC ticks pass
/// (a guard against hangs, not a timing assertion). True if it held.
pub(crate) fn wait_until(condition: impl Fn() -> bool, max_tsc_ticks: u64) -> bool {
    // SAFETY: RDTSC has no side effects.
    let start = unsafe { core::arch::x86_64::_rdtsc() };
    while !condition() {
        // SAFETY: as above.
        if unsafe { core::arch::x86_64::_rdtsc() } - start > max_tsc_ticks {
            return condition();
        }
        core::hint::spin_loop();
    }
    true
}

/// A generous guard for events that should arrive within microseconds.
pub(crate) const EVENT_TIMEOUT_TSC: u64 = 5_000_000_000;
