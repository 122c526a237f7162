//! The KTAP selftests: every required test passes with PKS, and only the
//! PKS tests skip without it.

use crate::common::*;
use extregs::exit_codes::EXIT_SUCCESS;
use extregs::qemu::Firmware;
use extregs::report::{self, Outcome};

/// The tests the entry issues require, by name (with [`NEED_TWO_CPUS`]).
const REQUIRED_SELFTESTS: &[&str] = &[
    "container_of_below_ptregs",
    "divide_error_frame",
    "int3_frame",
    "invalid_opcode_frame",
    "general_protection_frame",
    "pks_read_fault_frame",
    "pks_write_fault_frame",
    "gprs_round_trip",
    "gpr_edit_through_ptregs",
    "pkrs_saved_live_restored",
    "pkrs_saved_edit_applies_after_iret",
    "exit_rcu_round_trip",
    "irq_stubs_report_their_vectors",
    "lapic_timer_one_shot",
    "lapic_timer_periodic",
    "self_ipi_fixed_vector",
    "spurious_vector_eoi_rule",
    "idle_irq_records_exit_rcu",
    "idle_irq_nmi_nesting_rcu_lockdep",
    "nmi_self_on_ist",
    "nmi_lockdep_round_trip",
    "nmi_int3_self_nmi_nested",
    "debug_single_step_on_ist",
    "debug_dr0_breakpoint_on_ist",
    "pkrs_write_window_every_instruction",
    "cr2_survives_paranoid_page_fault",
    "breakpoints_masked_in_paranoid_handlers",
    "breakpoints_refused_where_entries_run",
    "debug_recursion_shifts_the_ist",
    "console_from_paranoid_handler",
    "ist_stacks_have_guard_pages",
    "nmi_at_every_instruction_of_the_entry_paths",
    "debug_at_every_instruction_of_the_nmi_entry",
    "pks_fault_callback_run_exception",
    "pkrs_cache_skips_wrmsr",
    "pks_kvm_unit_tests_matrix",
    "preemption_on_irq_exit",
    "preempt_disable_holds_off_preemption",
    "pkrs_per_task_after_switch",
    "pkrs_of_preempted_frame_restored_on_resume",
    "nmi_during_context_switch",
    "nmi_at_every_instruction_of_the_context_switch",
    "idle_task_irqs_record_exit_rcu",
    "nmi_at_every_instruction_of_the_user_paths",
    "syscall_preserves_gprs",
    "syscall_sysret_and_iret_paths",
    "user_faults_kill_only_the_faulting_task",
    "user_frames_sit_at_task_pt_regs",
    "gs_base_right_after_every_return",
    "syscall_pointers_and_numbers_refused",
    "syscall_irq_nmi_nest_each_with_its_extension",
    "pkrs_never_applies_to_user_mode",
    "smap_stops_kernel_access_to_user_memory",
    "smep_stops_kernel_execution_of_user_pages",
    "signal_delivered_and_returned_at_task_pt_regs",
    "sigreturn_forces_user_selectors",
    "fpu_state_is_per_task",
    "io_bitmap_is_per_task",
];

/// The selftests that need a second CPU: on one they print `# SKIP needs
/// 2 CPUs` (tests/qemu/smp.rs runs them with two).
pub const NEED_TWO_CPUS: &[&str] = &[
    "each_cpu_has_its_own_entry_state",
    "nmi_ipis_reach_each_cpu",
    "nmi_on_one_cpu_runs_while_another_is_in_nmi",
    "pkrs_cache_and_bracket_are_per_cpu",
    "user_nmi_latch_is_per_cpu",
    "backtrace_answers_from_every_cpu",
    "icr_high_survives_a_nested_send",
    "migration_keeps_pkrs_and_gprs",
    "nobody_runs_a_half_switched_task",
    "tlb_shootdown_after_unmap",
    "tlb_shootdown_after_pkey_retag",
];

pub fn selftest_results(outcome: &Outcome) -> Vec<report::KtapResult> {
    assert!(outcome.serial.contains("KTAP version 1\n"), "{}", dump(outcome));
    let results = outcome.ktap_results();
    assert_eq!(outcome.ktap_plan(), Some(results.len() as u32), "{}", dump(outcome));
    for (index, result) in results.iter().enumerate() {
        assert_eq!(result.number as usize, index + 1, "KTAP numbering");
    }
    for name in REQUIRED_SELFTESTS.iter().chain(NEED_TWO_CPUS) {
        assert!(
            results.iter().any(|r| r.name == *name),
            "selftest {name} missing\n{}",
            dump(outcome)
        );
    }
    results
}

#[test]
fn selftests_all_pass_with_pks() {
    let outcome = boot(Firmware::Bios, "max", "mode=selftest");
    let results = selftest_results(&outcome);
    for result in &results {
        let needs_two_cpus = NEED_TWO_CPUS.contains(&result.name.as_str());
        assert!(result.ok, "{result:?}\n{}", dump(&outcome));
        assert_eq!(
            result.skip.as_deref(),
            needs_two_cpus.then_some("needs 2 CPUs"),
            "{result:?}\n{}",
            dump(&outcome)
        );
    }
    assert_verdict(&outcome, EXIT_SUCCESS);
    // console_from_paranoid_handler: the #DB handler's line, deferred while
    // the console was locked, comes out, and before the test's next line.
    let deferred =
        outcome.serial.find("# printed from a #DB handler while the console lock was held");
    let after = outcome.serial.find("# the console is free again");
    assert!(
        matches!((deferred, after), (Some(d), Some(a)) if d < a),
        "deferred line missing or out of order\n{}",
        dump(&outcome)
    );
    let result = outcome.result().unwrap();
    assert_eq!(result["pks"], true);
    assert_eq!(result["passed"], results.len() - NEED_TWO_CPUS.len());
    // The one unexpected vector the IRQ-stub test lets through loudly.
    assert!(
        outcome.serial.contains("extregs: unexpected interrupt on vector 0x40 (64)\n"),
        "{}",
        dump(&outcome)
    );
    // The walks' coverage: every instruction of the user entry and exit
    // paths took a real NMI entry, and no NMI landed where the kernel says
    // none can (a stub nothing raises, the NMI stub's blocked part).
    let unreachable =
        extregs::coverage::unreachable_in(&outcome.serial).expect("COVERAGE_NOT_RAISED");
    let text = extregs::coverage::EntryText::from_elf(extregs::images::kernel_elf()).unwrap();
    let figures = text.figures(&extregs::coverage::hits_in(&outcome.serial), &unreachable);
    assert!(figures.user_paths > 80 && figures.not_raised > 0, "{figures}");
    assert!(figures.nmi_blocked > 0, "{figures}");
    assert_eq!(figures.user_paths_hit, figures.user_paths, "{figures}");
    assert_eq!(figures.wrong_claims(), 0, "{figures}");
    // The APIC mode follows CPUID: x2APIC when the CPU has it.
    let x2apic = outcome.serial.contains("x2apic=yes");
    let mode = if x2apic { "apic: x2apic mode" } else { "apic: xapic mode" };
    assert!(outcome.serial.contains(mode), "{}", dump(&outcome));
}

#[test]
fn selftests_without_pks_skip_only_pks_tests() {
    let outcome = boot(Firmware::Bios, "qemu64", "mode=selftest");
    let results = selftest_results(&outcome);
    for result in &results {
        assert!(result.ok, "{result:?}\n{}", dump(&outcome));
        // The CR2 test needs a PKS fault as its recoverable #PF; qemu64
        // has no SMAP or SMEP either.
        let skipped_here = result.name.starts_with("pks")
            || result.name.starts_with("pkrs")
            || result.name.starts_with("smap")
            || result.name.starts_with("smep")
            || result.name == "cr2_survives_paranoid_page_fault"
            || NEED_TWO_CPUS.contains(&result.name.as_str());
        assert_eq!(result.skip.is_some(), skipped_here, "{result:?}");
    }
    assert_verdict(&outcome, EXIT_SUCCESS);
}
