//! QEMU tests: boot the real kernel image under TCG through the runner
//! library (what `extregs run` uses) and check serial output and exit
//! status. Every boot has a timeout; nothing here measures time.

use extregs::campaign::{self, CampaignConfig};
use extregs::images;
use extregs::qemu::{self, Firmware, RunConfig};
use extregs::report::{self, Outcome, EXIT_KERNEL_FAILURE, EXIT_SUCCESS, EXIT_TIMEOUT, EXIT_USAGE};
use object::{Object, ObjectSection, ObjectSymbol};
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

const BOOT_TIMEOUT: Duration = Duration::from_secs(180);

fn boot(firmware: Firmware, cpu: &str, cmdline: &str) -> Outcome {
    let config = RunConfig {
        firmware,
        cpu: cpu.into(),
        cmdline: cmdline.into(),
        timeout: BOOT_TIMEOUT,
        ..RunConfig::default()
    };
    qemu::run(&config).expect("QEMU starts (make test installs it)")
}

fn dump(outcome: &Outcome) -> String {
    format!("--- serial ---\n{}\n--- qemu stderr ---\n{}", outcome.serial, outcome.qemu_stderr)
}

/// Asserts the runner's verdict, showing the whole boot when it differs.
fn assert_verdict(outcome: &Outcome, expected: i32) {
    assert_eq!(outcome.verdict().0, expected, "{}", dump(outcome));
}

fn assert_demo_succeeds(outcome: &Outcome, pks: bool) {
    assert_verdict(outcome, EXIT_SUCCESS);
    let result = outcome.result().expect("one RESULT line");
    assert_eq!(result["mode"], "demo");
    assert_eq!(result["ok"], true);
    assert_eq!(result["pks"], pks, "{}", dump(outcome));
    let show_regs = report::parse_show_regs(&outcome.serial).expect("a show_regs dump");
    assert_eq!(show_regs.cs, 0x10);
    assert_eq!(show_regs.task, Some((1, "init".to_string())), "{}", dump(outcome));
    if pks {
        // The saved PKRS (key 1 granted) next to the live default.
        assert!(
            outcome.serial.contains("PKRS: 55555550 live: 55555554 task: 55555550"),
            "{}",
            dump(outcome)
        );
        assert_eq!(show_regs.task_pkrs, Some(0x5555_5550));
        assert_eq!(result["saved_pkrs"], "55555550");
        assert_eq!(result["pkrs_after_iret"], "55555550");
    }
}

#[test]
fn bios_boot_with_pks() {
    assert_demo_succeeds(&boot(Firmware::Bios, "max", ""), true);
}

#[test]
fn uefi_boot_with_pks() {
    assert_demo_succeeds(&boot(Firmware::Uefi, "max", ""), true);
}

#[test]
fn qemu64_has_no_pks_and_still_succeeds() {
    let outcome = boot(Firmware::Bios, "qemu64", "");
    assert_demo_succeeds(&outcome, false);
    assert!(outcome.serial.contains("pks: not supported by this CPU"), "{}", dump(&outcome));
    assert!(outcome.serial.contains("PKRS: none (this CPU has no PKS)"));
}

/// The tests the entry issues require, by name.
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
    "pks_fault_callback_run_exception",
    "pkrs_cache_skips_wrmsr",
    "pks_kvm_unit_tests_matrix",
    "preemption_on_irq_exit",
    "preempt_disable_holds_off_preemption",
    "pkrs_per_task_after_switch",
    "pkrs_of_preempted_frame_restored_on_resume",
    "nmi_during_context_switch",
    "idle_task_irqs_record_exit_rcu",
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
];

fn selftest_results(outcome: &Outcome) -> Vec<report::KtapResult> {
    assert!(outcome.serial.contains("KTAP version 1\n"), "{}", dump(outcome));
    let results = outcome.ktap_results();
    assert_eq!(outcome.ktap_plan(), Some(results.len() as u32), "{}", dump(outcome));
    for (index, result) in results.iter().enumerate() {
        assert_eq!(result.number as usize, index + 1, "KTAP numbering");
    }
    for name in REQUIRED_SELFTESTS {
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
        assert!(result.ok && result.skip.is_none(), "{result:?}\n{}", dump(&outcome));
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
    assert_eq!(result["passed"], results.len());
    // The one unexpected vector the IRQ-stub test lets through loudly.
    assert!(
        outcome.serial.contains("extregs: unexpected interrupt on vector 0x40 (64)\n"),
        "{}",
        dump(&outcome)
    );
    // The APIC mode follows CPUID: x2APIC when the CPU has it.
    let x2apic = outcome.serial.contains("x2apic=yes");
    let mode = if x2apic { "apic: x2apic mode" } else { "apic: xapic mode" };
    assert!(outcome.serial.contains(mode), "{}", dump(&outcome));
}

/// A QMP socket path unique to this test process.
fn qmp_socket(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("extregs-{}-{name}.qmp", std::process::id()))
}

#[test]
fn idle_counts_every_nmi_injected_over_qmp() {
    const NMIS: u64 = 5;
    const SECONDS: u64 = 4;
    let socket = qmp_socket("idle");
    let _ = std::fs::remove_file(&socket);
    let (lines, serial) = std::sync::mpsc::channel();
    let config = RunConfig {
        cmdline: format!("mode=idle seconds={SECONDS}"),
        timeout: BOOT_TIMEOUT,
        qmp: Some(socket.clone()),
        serial_lines: Some(lines),
        ..RunConfig::default()
    };
    let kernel = std::thread::spawn(move || qemu::run(&config).expect("QEMU starts"));
    // Inject only once the kernel idles (before its IDT exists an NMI would
    // be fatal); space them so no two merge into one.
    let idling =
        serial.iter().any(|line| line.starts_with("extregs: idle: ") && line.contains(" s at HZ="));
    assert!(idling, "the kernel never started idling");
    let mut qmp = extregs::qmp::Qmp::connect(&socket, Duration::from_secs(10)).expect("QMP");
    for _ in 0..NMIS {
        qmp.inject_nmi().expect("inject-nmi");
        std::thread::sleep(Duration::from_millis(300));
    }
    drop(qmp);
    let outcome = kernel.join().unwrap();
    let _ = std::fs::remove_file(&socket);
    assert_verdict(&outcome, EXIT_SUCCESS);
    let result = outcome.result().expect("RESULT");
    assert_eq!(result["mode"], "idle");
    assert_eq!(result["ok"], true);
    assert_eq!(result["nmis"], NMIS, "{}", dump(&outcome));
    assert_eq!(result["timer_irqs"], SECONDS * 100);
    assert_eq!(result["frame_errors"], 0);
    assert_eq!(result["rcu_leaks"], 0);
    assert_eq!(result["pkrs_wrmsrs"], 0, "the PKRS cache let a WRMSR through");
    assert!(result["frames_checked"].as_u64().unwrap() >= SECONDS * 100 + NMIS);
}

#[test]
fn stack_overflow_ends_in_a_double_fault_dump_not_a_reset() {
    let outcome = boot(Firmware::Bios, "max", "mode=oops cause=stack-overflow");
    assert_verdict(&outcome, EXIT_KERNEL_FAILURE);
    assert!(
        outcome.serial.contains("extregs: oops: unhandled double fault (vector 8)"),
        "{}",
        dump(&outcome)
    );
    assert_eq!(outcome.serial.matches("booting").count(), 1, "the machine reset");
    let dump_regs = report::parse_show_regs(&outcome.serial).expect("show_regs of the #DF");
    assert!(dump_regs.rip_text.contains("recurse"), "RIP {}", dump_regs.rip_text);
    assert!(dump_regs.saved_pkrs.is_some(), "the #DF frame carries the saved PKRS");
    assert!(outcome.serial.contains("(PtRegs - 8) on the DF stack"), "{}", dump(&outcome));
    assert_eq!(outcome.result().unwrap()["ok"], false);
}

#[test]
fn fuzz_under_an_nmi_storm_at_every_instruction_boundary_has_no_violations() {
    // Foreign NMIs (QMP inject-nmi, back to back) and a foreign timer IRQ
    // with one instruction per translation block: they land anywhere, the
    // entry text included; the fuzzer must tell them from its own events
    // and validate them.
    let config = CampaignConfig {
        seeds: 0..2,
        iterations: 150,
        max_depth: 8,
        jobs: 2,
        deterministic: false,
        cpu: "max".into(),
        timeout: Duration::from_secs(400),
        inject: None,
        nmi_storm: true,
        granular: true,
        foreign_timer_hz: 1000,
        seeds_per_boot: 0,
    };
    let (reports, totals, interrupted) =
        campaign::run_campaign(&config, Arc::new(AtomicBool::new(false)), |_, _| {});
    assert!(!interrupted);
    for report in &reports {
        assert!(report.ok(), "seed {} failed: {}\n{:?}", report.seed, report.why, report.serial);
        let result = report.result.as_ref().expect("a RESULT");
        assert_eq!(result["violations"], 0);
        assert_eq!(result["frame_errors"], 0);
        assert!(result["foreign_nmis"].as_u64().unwrap() > 0, "no foreign NMI arrived: {result}");
        assert!(result["foreign_irqs"].as_u64().unwrap() > 0, "no foreign IRQ arrived: {result}");
    }
    assert_eq!(totals.seeds_failed, 0);
}

#[test]
fn ist_stack_overflow_ends_in_a_double_fault_naming_the_guard_page() {
    let outcome = boot(Firmware::Bios, "max", "mode=oops cause=nmi-stack-overflow");
    assert_verdict(&outcome, EXIT_KERNEL_FAILURE);
    assert!(
        outcome.serial.contains("extregs: oops: unhandled double fault (vector 8)")
            && outcome.serial.contains("is in the guard page below the NMI IST stack"),
        "{}",
        dump(&outcome)
    );
    assert_eq!(outcome.serial.matches("booting").count(), 1, "the machine reset");
    let dump_regs = report::parse_show_regs(&outcome.serial).expect("show_regs of the #DF");
    assert!(dump_regs.rip_text.contains("recurse_until_overflow"), "RIP {}", dump_regs.rip_text);
    assert!(outcome.serial.contains("(PtRegs - 8) on the DF stack"), "{}", dump(&outcome));
}

#[test]
fn machine_check_is_fatal_even_with_hooks_that_would_claim_it() {
    let outcome = boot(Firmware::Bios, "max", "mode=oops cause=machine-check");
    assert_verdict(&outcome, EXIT_KERNEL_FAILURE);
    assert!(
        outcome.serial.contains("extregs: oops: machine check (vector 18)"),
        "{}",
        dump(&outcome)
    );
    let dump_regs = report::parse_show_regs(&outcome.serial).expect("show_regs of the #MC");
    // The interrupted context had key 1 granted: the #MC entry saved it.
    assert_eq!(dump_regs.saved_pkrs, Some(0x5555_5550), "{}", dump(&outcome));
    assert!(outcome.serial.contains("(PtRegs - 8) on the MCE stack"), "{}", dump(&outcome));
    let result = outcome.result().unwrap();
    assert_eq!(result["ok"], false);
    assert_eq!(result["error"], "machine check");
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
            || result.name == "cr2_survives_paranoid_page_fault";
        assert_eq!(result.skip.is_some(), skipped_here, "{result:?}");
    }
    assert_verdict(&outcome, EXIT_SUCCESS);
}

/// The checks every `mode=tasks` run must pass: all workers progressed,
/// nothing mismatched, every frame passed the entry checks.
fn assert_tasks_ok(outcome: &Outcome, workers: u64) -> serde_json::Value {
    assert_verdict(outcome, EXIT_SUCCESS);
    let result = outcome.result().expect("RESULT");
    assert_eq!(result["mode"], "tasks");
    assert_eq!(result["ok"], true, "{}", dump(outcome));
    assert_eq!(result["tasks"], workers);
    let per_task = result["per_task"].as_array().expect("per_task");
    assert_eq!(per_task.len() as u64, workers);
    assert!(per_task.iter().all(|n| n.as_u64().unwrap() > 0), "{result}");
    for key in ["pkrs_mismatches", "gpr_mismatches", "page_mismatches", "model_errors"] {
        assert_eq!(result[key], 0, "{key}: {result}");
    }
    assert_eq!(result["frame_errors"], 0);
    result
}

#[test]
fn tasks_mode_preempts_eight_workers_each_with_its_own_pkrs() {
    // (The README's run is `seconds=10`; 3 s at 250 Hz give 750 ticks.)
    let outcome = boot(Firmware::Bios, "max", "mode=tasks tasks=8 seconds=3");
    let result = assert_tasks_ok(&outcome, 8);
    assert_eq!(result["pks_checks"], true);
    let preemptions = result["preemptions"].as_u64().unwrap();
    assert!(preemptions >= 500, "only {preemptions} preemptions: {result}");
    assert!(result["context_switches"].as_u64().unwrap() >= preemptions);
    // Every timer frame that interrupted a worker saved that worker's own
    // PKRS, and the entry and exit of each IRQ preemption wrote PKRS (that
    // switch runs between two handler contexts: no WRMSR of its own).
    assert!(result["timer_frames_checked"].as_u64().unwrap() >= preemptions);
    let irq_preemptions = preemptions - result["enable_preemptions"].as_u64().unwrap();
    assert!(result["pkrs_wrmsrs"].as_u64().unwrap() >= 2 * irq_preemptions, "{result}");
    // Switches from task context too, where the switch installs PKRS.
    assert!(result["yields"].as_u64().unwrap() > 0, "{result}");
}

#[test]
fn tasks_mode_survives_an_nmi_storm() {
    let config = RunConfig {
        cmdline: "mode=tasks tasks=4 seconds=4".into(),
        timeout: BOOT_TIMEOUT,
        nmi_storm: true,
        ..RunConfig::default()
    };
    let outcome = qemu::run(&config).expect("QEMU starts");
    let result = assert_tasks_ok(&outcome, 4);
    let nmis = result["nmis"].as_u64().unwrap();
    assert!(nmis > 0, "no NMI arrived during the run: {result}");
    assert!(
        nmis <= outcome.nmis_sent.unwrap_or(0),
        "{nmis} NMIs handled, {:?} sent",
        outcome.nmis_sent
    );
}

#[test]
fn tasks_mode_without_pks_says_its_pks_checks_are_skipped() {
    let outcome = boot(Firmware::Bios, "qemu64", "mode=tasks tasks=3 seconds=2");
    let result = assert_tasks_ok(&outcome, 3);
    assert_eq!(result["pks"], false);
    assert_eq!(result["pks_checks"], false);
    assert!(outcome.serial.contains("PKS checks are skipped"), "{}", dump(&outcome));
}

/// A passing `mode=user` run: every task ended as expected (the ud2 one
/// killed with Linux's line), the spinners were preempted in user mode,
/// and every entry from user mode found its frame at task_pt_regs.
fn assert_user_ok(outcome: &Outcome) -> serde_json::Value {
    assert_verdict(outcome, EXIT_SUCCESS);
    let result = outcome.result().expect("RESULT");
    assert_eq!(result["mode"], "user");
    assert_eq!(result["ok"], true, "{}", dump(outcome));
    assert_eq!(result["frame_errors"], 0);
    assert_eq!(result["model_errors"], 0);
    assert_eq!(result["user_kills"], 1);
    assert!(outcome.serial.contains("hello from user mode, over SYSCALL and SYSRET\n"));
    let kill = outcome
        .serial
        .lines()
        .find(|line| line.starts_with("traps: user-ud["))
        .unwrap_or_else(|| panic!("no kill line: {}", dump(outcome)));
    assert!(kill.contains("] trap invalid opcode ip:7f8") && kill.ends_with("error:0"), "{kill}");
    let syscalls = result["syscalls"].as_u64().unwrap();
    assert!(syscalls > 10_000, "{result}");
    // Every syscall but the four exit calls returned, by SYSRET (no test
    // call asks for the IRET exit here; the fifth task is killed).
    assert_eq!(result["sysret_exits"].as_u64().unwrap(), syscalls - 4, "{result}");
    assert!(result["user_preemptions"].as_u64().unwrap() > 0, "{result}");
    let irqs = result["user_irqs"].as_u64().unwrap();
    assert!(irqs > 0, "{result}");
    // IRET exits: each task's first entry, each IRQ/NMI from user mode.
    let nmis = result["user_nmis"].as_u64().unwrap();
    assert_eq!(result["iret_exits"].as_u64().unwrap(), 5 + irqs + nmis, "{result}");
    assert!(result["user_frames_checked"].as_u64().unwrap() >= syscalls + irqs + nmis);
    result
}

#[test]
fn user_mode_runs_its_tasks_over_syscall_and_kills_the_faulting_one() {
    let outcome = boot(Firmware::Bios, "max", "mode=user");
    assert_user_ok(&outcome);
    // The killed task's frame, dumped (print-fatal-signals): a user frame.
    let regs = report::parse_show_regs(&outcome.serial).expect("show_regs of the killed task");
    assert_eq!(regs.cs, 0x33, "{}", dump(&outcome));
    assert!(regs.rip_text.starts_with("0x7f8"), "RIP {}", regs.rip_text);
    assert_eq!(
        regs.code.get(regs.code_rip_index..regs.code_rip_index + 2),
        Some(&[0x0f, 0x0b][..])
    );
    assert_eq!(regs.ss, Some(0x2b));
    assert_eq!(regs.saved_pkrs, Some(0x5555_5554), "user mode runs with the default PKRS");
    assert_eq!(regs.task.as_ref().map(|(_, name)| name.as_str()), Some("user-ud"));
}

#[test]
fn user_mode_without_pks() {
    let outcome = boot(Firmware::Bios, "qemu64", "mode=user");
    let result = assert_user_ok(&outcome);
    assert_eq!(result["pks"], false);
}

#[test]
fn user_mode_survives_an_nmi_storm_with_nmis_landing_in_user_mode() {
    let config = RunConfig {
        cmdline: "mode=user".into(),
        timeout: BOOT_TIMEOUT,
        nmi_storm: true,
        ..RunConfig::default()
    };
    let outcome = qemu::run(&config).expect("QEMU starts");
    let result = assert_user_ok(&outcome);
    assert!(result["user_nmis"].as_u64().unwrap() > 0, "no NMI landed in user mode: {result}");
}

#[test]
fn task_stack_overflow_ends_in_a_double_fault_naming_the_task() {
    let outcome = boot(Firmware::Bios, "max", "mode=oops cause=task-stack-overflow");
    assert_verdict(&outcome, EXIT_KERNEL_FAILURE);
    assert!(
        outcome.serial.contains("extregs: oops: unhandled double fault (vector 8)")
            && outcome.serial.contains("is in the guard page below the stack of task 2 (overflow)"),
        "{}",
        dump(&outcome)
    );
    assert_eq!(outcome.serial.matches("booting").count(), 1, "the machine reset");
    let dump_regs = report::parse_show_regs(&outcome.serial).expect("show_regs of the #DF");
    assert_eq!(dump_regs.task, Some((2, "overflow".to_string())), "{}", dump(&outcome));
    assert!(dump_regs.rip_text.contains("recurse_until_overflow"), "RIP {}", dump_regs.rip_text);
    assert_eq!(dump_regs.task_pkrs, Some(0x5555_5554));
}

#[test]
fn nested_oops_traces_every_level_with_its_extension() {
    let outcome = boot(Firmware::Bios, "max", "mode=oops cause=nested");
    assert_verdict(&outcome, EXIT_KERNEL_FAILURE);
    let serial = &outcome.serial;
    assert!(
        serial.contains("extregs: BUG: the NMI handler (mode=oops cause=nested)"),
        "{}",
        dump(&outcome)
    );
    let trace_start = serial.find("Call Trace:").expect("a call trace");
    let trace_end =
        serial[trace_start..].find("Kernel Offset:").expect("the trace ends") + trace_start;
    let trace: Vec<&str> = serial[trace_start..trace_end].lines().skip(1).collect();
    // The sections in order: the NMI handler on the NMI stack, then the
    // task stack the int3 and the timer IRQ ran on: IRQ context (the int3
    // inside the IRQ's handler) below the IRQ's frame, the task above it.
    let markers: Vec<&str> =
        trace.iter().copied().filter(|l| l.starts_with(" <") || l.starts_with(" </")).collect();
    assert_eq!(
        markers,
        [" <NMI>", " </NMI>", " <IRQ>", " </IRQ>", " <TASK>", " </TASK>"],
        "{}",
        dump(&outcome)
    );
    // Each frame's extension records its vector: the NMI's, the int3's
    // (inside <IRQ>), the timer IRQ's (whose registers are the task's, so
    // it opens <TASK>).
    let section_of = |index: usize| {
        trace[..index].iter().rev().find(|l| l.starts_with(" <")).copied().unwrap_or("")
    };
    let generic: Vec<(&str, &str)> = trace
        .iter()
        .enumerate()
        .filter(|(_, l)| l.starts_with("GENERIC: "))
        .map(|(index, l)| (section_of(index), l.split(" vector: ").nth(1).unwrap_or("")))
        .collect();
    let vectors: Vec<(&str, &str)> =
        generic.iter().map(|(s, rest)| (*s, rest.split(' ').next().unwrap_or(""))).collect();
    assert_eq!(
        vectors,
        [(" <NMI>", "0x02"), (" <IRQ>", "0x03"), (" <TASK>", "0xec")],
        "{}",
        dump(&outcome)
    );
    // Three interrupt frames crossed (the NMI's, the int3's, the IRQ's),
    // each with the interrupted registers and that frame's extension.
    let rips: Vec<&str> = trace.iter().copied().filter(|l| l.starts_with("RIP: 0010:")).collect();
    assert_eq!(rips.len(), 3, "{}", dump(&outcome));
    assert_eq!(trace.iter().filter(|l| l.starts_with("GENERIC: ")).count(), 3);
    assert_eq!(trace.iter().filter(|l| l.starts_with("PKRS: ")).count(), 3);
    assert!(
        rips[0].contains("write_icr"),
        "the NMI interrupted the self-NMI's ICR write: {}",
        rips[0]
    );
    assert!(rips[1].contains("nested_hook"), "the int3 interrupted the IRQ handler: {}", rips[1]);
    assert!(rips[2].contains("oops_nested"), "the IRQ interrupted the waiting task: {}", rips[2]);
    // Each level's functions in order, down to the mode's entry function,
    // on the walk's own lines (not the `? ` entries the stack scan adds).
    let trace: Vec<&str> = trace.iter().copied().filter(|l| !l.starts_with(" ? ")).collect();
    let mut at = 0;
    for name in [
        "asm_exc_nmi",
        "nested_hook",
        "extregs_entry_common",
        "oops_nested",
        "die_on_purpose",
        "kernel_main",
    ] {
        let found = trace[at..].iter().position(|l| l.contains(name));
        at += found.unwrap_or_else(|| panic!("no {name} after line {at}\n{}", dump(&outcome))) + 1;
    }
    // Every return address symbolises (` symbol+0xoff/0xsize`), and so
    // does every `? ` entry.
    let all_lines = serial[trace_start..trace_end].lines().skip(1);
    for line in
        all_lines.filter(|l| l.starts_with(' ') && !l.starts_with(" <") && !l.starts_with(" </"))
    {
        assert!(line.contains("+0x") && line.contains("/0x"), "not symbolised: {line}");
    }
    // The oops's own registers are still the first show_regs.
    let regs = report::parse_show_regs(serial).expect("show_regs of the #UD");
    assert!(regs.rip_text.contains("nested_hook"), "RIP {}", regs.rip_text);
}

/// What Linux's `scripts/decode_stacktrace.sh` does with `sym+0xoff/0xsize`:
/// the symbol's address in the kernel ELF plus the offset, less one (the
/// call, not the return), through `addr2line`.
#[test]
fn nested_oops_trace_decodes_with_addr2line() {
    use object::{Object, ObjectSymbol};
    let outcome = boot(Firmware::Bios, "max", "mode=oops cause=nested");
    assert_verdict(&outcome, EXIT_KERNEL_FAILURE);
    let elf_path = extregs::images::kernel_elf();
    let data = std::fs::read(elf_path).expect("the kernel ELF");
    let elf = object::File::parse(&*data).expect("an ELF");
    let address_of = |name: &str| {
        elf.symbols().find_map(|symbol| {
            let demangled = format!("{:#}", rustc_demangle::demangle(symbol.name().ok()?));
            (demangled == name).then(|| symbol.address())
        })
    };
    let trace = outcome.serial.split("Call Trace:\n").nth(1).expect("a call trace");
    let mut resolved = 0;
    for line in trace.lines().take_while(|l| !l.starts_with("Kernel Offset")) {
        // ` name+0xoff/0xsize` or ` ? name+0xoff/0xsize` (not the markers,
        // not the nested registers).
        let reliable = !line.starts_with(" ? ");
        let Some(line) = line.strip_prefix(" ? ").or_else(|| line.strip_prefix(' ')) else {
            continue;
        };
        let Some((name, rest)) = line.rsplit_once("+0x") else {
            continue;
        };
        let Some((offset, _)) = rest.split_once("/0x") else { continue };
        let offset = u64::from_str_radix(offset, 16).expect("a hex offset");
        let base = address_of(name).unwrap_or_else(|| panic!("{name} is not in the ELF"));
        if !reliable {
            // A `? ` entry is any text address left on the stack (often
            // core's code, or just past a function's end): its symbol must
            // be the ELF's; its line is not required.
            continue;
        }
        let output = Command::new("addr2line")
            .args(["-e", elf_path.to_str().unwrap(), &format!("{:#x}", base + offset - 1)])
            .output()
            .expect("addr2line (binutils; `make` installs it)");
        let place = String::from_utf8_lossy(&output.stdout).trim().to_string();
        // The entry stubs are assembly without line info; Rust has it.
        if name.starts_with("asm_exc_")
            || name.starts_with("extregs_entry_common")
            || name == "_start"
        {
            continue;
        }
        let repo = env!("CARGO_MANIFEST_DIR");
        assert!(
            place.starts_with(repo)
                && place.rsplit(':').next().is_some_and(|l| l.parse::<u32>().is_ok_and(|n| n > 0)),
            "{line} -> {place}"
        );
        resolved += 1;
    }
    assert!(resolved >= 6, "{resolved} entries resolved\n{}", dump(&outcome));
}

/// A chain broken on purpose: the walk stops at the frame whose saved RBP
/// was overwritten, says so, and the callers only the stack still holds
/// print after it as `? ` entries.
#[test]
fn broken_chain_trace_stops_and_lists_the_rest_as_unreliable() {
    let outcome = boot(Firmware::Bios, "max", "mode=oops cause=broken-chain");
    assert_verdict(&outcome, EXIT_KERNEL_FAILURE);
    let regs = report::parse_show_regs(&outcome.serial).expect("show_regs of the #UD");
    assert!(regs.rip_text.contains("oops_broken_chain"), "RIP {}", regs.rip_text);
    let trace = outcome.serial.split("Call Trace:\n").nth(1).expect("a call trace");
    let lines: Vec<&str> = trace.lines().take_while(|l| l.starts_with(' ')).collect();
    let stop = lines
        .iter()
        .position(|l| *l == " [call trace stopped: frame pointer outside the known stacks]")
        .unwrap_or_else(|| panic!("no stop marker\n{}", dump(&outcome)));
    // The walk reached the function's caller, reliably, and no further.
    assert!(lines[..stop].iter().any(|l| l.starts_with(" kernel::modes::oops::die_on_purpose+")));
    assert!(lines[..stop].iter().all(|l| !l.contains("kernel_main")), "{}", dump(&outcome));
    // The caller's callers, found on the stack, unreliable.
    assert!(
        lines[stop..].iter().any(|l| l.starts_with(" ? kernel::kernel_main+0x")),
        "{}",
        dump(&outcome)
    );
    assert!(lines[stop + 1..]
        .iter()
        .all(|l| l.starts_with(" ? ") || l.starts_with(" </") || l.ends_with(" not shown]")));
    assert_eq!(lines.last(), Some(&" </TASK>"), "{}", dump(&outcome));
}

#[test]
fn every_oops_ends_with_a_call_trace() {
    let outcome = boot(Firmware::Bios, "max", "mode=oops cause=ud2");
    assert_verdict(&outcome, EXIT_KERNEL_FAILURE);
    let trace = outcome.serial.split("Call Trace:\n").nth(1).expect("a call trace");
    let lines: Vec<&str> = trace.lines().take_while(|l| l.starts_with(' ')).collect();
    assert_eq!(lines.first(), Some(&" <TASK>"), "{}", dump(&outcome));
    assert_eq!(lines.last(), Some(&" </TASK>"), "{}", dump(&outcome));
    assert!(lines.iter().any(|l| l.contains("die_on_purpose")), "{}", dump(&outcome));
    assert!(lines.iter().any(|l| l.contains("kernel_main")), "{}", dump(&outcome));
}

#[test]
fn user_double_fault_stays_on_the_df_stack_and_names_the_task() {
    let outcome = boot(Firmware::Bios, "max", "mode=oops cause=user-double-fault");
    assert_verdict(&outcome, EXIT_KERNEL_FAILURE);
    for line in [
        "extregs: oops: unhandled double fault (vector 8)",
        "extregs: double fault from user mode: the entry could not push its frame at RSP0",
        "is in the guard page below the stack of task 2 (user-df)",
        "(PtRegs - 8) on the DF stack",
    ] {
        assert!(outcome.serial.contains(line), "no '{line}'\n{}", dump(&outcome));
    }
    assert!(!outcome.serial.contains("bad frame"), "{}", dump(&outcome));
    assert_eq!(outcome.serial.matches("booting").count(), 1, "the machine reset");
    let regs = report::parse_show_regs(&outcome.serial).expect("show_regs of the #DF");
    // The user frame the #DF saved: the int3 that could not enter.
    assert_eq!((regs.cs, regs.ss), (0x33, Some(0x2b)), "{}", dump(&outcome));
    assert_eq!(regs.code.get(regs.code_rip_index), Some(&0xcc), "RIP at the int3");
    assert_eq!(regs.task, Some((2, "user-df".to_string())));
}

#[test]
fn malformed_command_lines_fail_with_one_error_line() {
    for (cmdline, reason) in [
        ("mode=bogus", "bad value 'bogus' for 'mode'"),
        ("mode", "malformed command-line word 'mode'"),
        ("colour=red", "unknown command-line key 'colour'"),
        ("seed=1", "key 'seed' does not apply to mode=demo"),
        ("mode=oops", "mode=oops needs cause="),
        ("mode=tasks tasks=0", "bad value '0' for 'tasks' (expected a number from 1 to 64)"),
        ("mode=tasks tasks=65", "bad value '65' for 'tasks' (expected a number from 1 to 64)"),
        ("mode=tasks tasks=eight", "bad value 'eight' for 'tasks'"),
    ] {
        let outcome = boot(Firmware::Bios, "max", cmdline);
        let errors: Vec<&str> =
            outcome.serial.lines().filter(|l| l.starts_with("extregs: error:")).collect();
        assert_eq!(errors.len(), 1, "{cmdline}: {}", dump(&outcome));
        assert!(errors[0].contains(reason), "{cmdline}: {}", errors[0]);
        assert!(outcome.result_lines().is_empty(), "{cmdline}: mode must not run");
        assert_eq!(outcome.verdict().0, EXIT_KERNEL_FAILURE, "{cmdline}");
    }
}

/// The bytes of the kernel ELF at virtual address `address`, if loaded.
fn image_bytes(elf: &object::File<'_>, address: u64, length: usize) -> Vec<u8> {
    let section = elf
        .sections()
        .find(|s| (s.address()..s.address() + s.size()).contains(&address))
        .expect("a section holds the address");
    let data = section.data().expect("section data");
    let start = (address - section.address()) as usize;
    data[start..start + length].to_vec()
}

/// The ELF address of a function symbol given by its demangled name.
fn symbol_address(elf: &object::File<'_>, demangled: &str) -> u64 {
    elf.symbols()
        .find(|s| s.name().is_ok_and(|n| format!("{:#}", rustc_demangle::demangle(n)) == demangled))
        .unwrap_or_else(|| panic!("symbol {demangled} in the kernel ELF"))
        .address()
}

#[test]
fn unhandled_exception_dumps_code_bytes_of_the_image() {
    let outcome = boot(Firmware::Bios, "max", "mode=oops cause=ud2");
    assert_verdict(&outcome, EXIT_KERNEL_FAILURE);
    assert!(outcome.serial.contains("oops: unhandled invalid opcode (vector 6)"));
    assert_eq!(outcome.result().unwrap()["ok"], false);
    let dump_regs = report::parse_show_regs(&outcome.serial).expect("show_regs");
    // RIP: 0010:kernel::modes::oops::oops_invalid_opcode+0x1/0x5
    let (symbol, offsets) = dump_regs.rip_text.split_once('+').expect("a symbolised RIP");
    let offset =
        u64::from_str_radix(offsets.split('/').next().unwrap().trim_start_matches("0x"), 16)
            .unwrap();
    assert_eq!(symbol, "kernel::modes::oops::oops_invalid_opcode");
    let elf_bytes = std::fs::read(images::kernel_elf()).expect("kernel ELF");
    let elf = object::File::parse(&*elf_bytes).expect("parse the kernel ELF");
    let rip = symbol_address(&elf, symbol) + offset;
    let first = rip - dump_regs.code_rip_index as u64;
    assert_eq!(image_bytes(&elf, first, dump_regs.code.len()), dump_regs.code);
    assert_eq!(&dump_regs.code[dump_regs.code_rip_index..][..2], [0x0f, 0x0b], "ud2 at RIP");
}

#[test]
fn unresolved_pks_fault_is_an_oops_that_names_key_and_right() {
    let outcome = boot(Firmware::Bios, "max", "mode=oops cause=pks");
    assert_verdict(&outcome, EXIT_KERNEL_FAILURE);
    assert!(outcome.serial.contains("protection key"), "{}", dump(&outcome));
    assert!(
        outcome.serial.contains("PKS: read of pkey 1 denied: access-disable (AD) set"),
        "{}",
        dump(&outcome)
    );
    let dump_regs = report::parse_show_regs(&outcome.serial).expect("show_regs");
    assert_eq!(dump_regs.saved_pkrs, Some(0x5555_5554));
}

#[test]
fn panic_and_gp_print_show_regs_and_fail() {
    for cmdline in ["mode=oops cause=panic", "mode=oops cause=gp"] {
        let outcome = boot(Firmware::Bios, "max", cmdline);
        assert_verdict(&outcome, EXIT_KERNEL_FAILURE);
        assert!(report::parse_show_regs(&outcome.serial).is_some(), "{}", dump(&outcome));
        assert_eq!(outcome.result().unwrap()["ok"], false);
    }
}

fn extregs_cli(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_extregs")).args(args).output().expect("run extregs")
}

/// `--gdb` serves on TCP port 1234: one such boot at a time.
static GDB_PORT: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// gdb's `bt` from a handler nested three deep walks through each entry
/// stub (their call-frame information describes PtRegs) into the
/// interrupted functions, down to the mode's entry function.
#[test]
fn gdb_backtrace_walks_through_the_entry_stubs() {
    // Where the bootloader loads the kernel (the same for every boot of
    // this image): the `Kernel Offset:` line of an oops.
    let oops = boot(Firmware::Bios, "max", "mode=oops cause=ud2");
    let offset = oops
        .serial
        .lines()
        .find_map(|l| l.strip_prefix("Kernel Offset: "))
        .expect("the oops names the kernel offset")
        .trim()
        .to_string();
    let _port = GDB_PORT.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut qemu = Command::new(env!("CARGO_BIN_EXE_extregs"))
        .args(["run", "--gdb", "--timeout", "120", "--cmdline", "mode=oops cause=nested"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start QEMU");
    let listening = (0..200).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        std::net::TcpStream::connect("127.0.0.1:1234").is_ok()
    });
    assert!(listening, "QEMU's gdb stub never listened");
    let elf = images::kernel_elf().to_str().unwrap().to_string();
    let gdb = Command::new("gdb")
        .args(["-batch", "-nx", "-ex", "set confirm off", "-ex", "set pagination off"])
        .args(["-ex", &format!("symbol-file -o {offset} {elf}")])
        .args(["-ex", "target remote 127.0.0.1:1234"])
        // The hook runs for the timer IRQ, the int3, then the NMI.
        .args([
            "-ex",
            "hbreak nested_hook",
            "-ex",
            "continue",
            "-ex",
            "continue",
            "-ex",
            "continue",
        ])
        .args(["-ex", "bt", "-ex", "kill"])
        .output()
        .expect("gdb (`make` installs it)");
    let _ = qemu.kill();
    let _ = qemu.wait();
    let text = String::from_utf8_lossy(&gdb.stdout).to_string();
    let frames: Vec<&str> = text.lines().filter(|l| l.starts_with('#')).collect();
    // Each level's frames in order, through the stubs, without a frame gdb
    // could not place before the mode's entry function.
    let mut at = 0;
    for name in [
        "nested_hook",
        "asm_exc_nmi",
        "write_icr",
        "extregs_entry_common",
        "extregs_entry_common",
        "oops_nested",
        "die_on_purpose",
        "kernel_main",
    ] {
        let found = frames[at..].iter().position(|f| f.contains(name));
        at += found.unwrap_or_else(|| panic!("no {name} after frame {at}:\n{text}")) + 1;
    }
    assert!(!frames[..at].iter().any(|f| f.contains("?? ()")), "{text}");
}

#[test]
fn cli_images_prints_existing_paths() {
    let output = extregs_cli(&["images"]);
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    for (key, path) in [
        ("bios=", images::bios_image()),
        ("uefi=", images::uefi_image()),
        ("kernel=", images::kernel_elf()),
    ] {
        let line = text.lines().find(|l| l.starts_with(key)).expect(key);
        assert_eq!(std::path::Path::new(&line[key.len()..]), path);
        assert!(path.exists());
    }
}

#[test]
fn cli_exit_statuses() {
    assert_eq!(extregs_cli(&["run", "--firmware", "floppy"]).status.code(), Some(EXIT_USAGE));
    assert_eq!(extregs_cli(&["run", "--cmdline", "mode=demo,x"]).status.code(), Some(EXIT_USAGE));
    for runs in ["0", "101", "five"] {
        let refused = extregs_cli(&["bench", "--harness", "native", "--runs", runs]);
        assert_eq!(refused.status.code(), Some(EXIT_USAGE), "--runs {runs}");
    }
    let failed = extregs_cli(&["run", "--cmdline", "mode=oops cause=ud2"]);
    assert_eq!(failed.status.code(), Some(EXIT_KERNEL_FAILURE));
    // --gdb makes QEMU wait for a debugger forever: a real hang.
    let gdb_port = GDB_PORT.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let hung = extregs_cli(&["run", "--gdb", "--timeout", "3"]);
    drop(gdb_port);
    assert_eq!(hung.status.code(), Some(EXIT_TIMEOUT));
    let ok = extregs_cli(&["run"]);
    assert_eq!(ok.status.code(), Some(EXIT_SUCCESS));
    assert!(String::from_utf8_lossy(&ok.stdout).contains("RESULT {\"mode\":\"demo\""));
}

/// The plain QEMU command line the README documents boots the image too.
#[test]
fn readme_plain_qemu_command_line_boots() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let line = readme
        .lines()
        .find(|l| l.trim_start().starts_with("qemu-system-x86_64 "))
        .expect("README has a plain qemu-system-x86_64 command");
    let command = line.trim().replace("$BIOS_IMAGE", &images::bios_image().display().to_string());
    let output = Command::new("timeout")
        .args(["180", "sh", "-c", &command])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run the README command");
    let serial = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(qemu::QEMU_EXIT_SUCCESS), "{serial}");
    assert!(serial.contains("RESULT {\"mode\":\"selftest\",\"ok\":true"), "{serial}");
}

fn campaign_config(
    seeds: std::ops::Range<u64>,
    iterations: u64,
    deterministic: bool,
) -> CampaignConfig {
    CampaignConfig {
        seeds,
        iterations,
        max_depth: 8,
        jobs: 2,
        deterministic,
        cpu: "max".into(),
        timeout: BOOT_TIMEOUT,
        inject: None,
        nmi_storm: false,
        granular: false,
        foreign_timer_hz: 0,
        seeds_per_boot: 0,
    }
}

#[test]
fn short_fuzz_campaign_finds_no_violations() {
    let config = campaign_config(0..4, 200, false);
    let (reports, totals, interrupted) =
        campaign::run_campaign(&config, Arc::new(AtomicBool::new(false)), |_, _| {});
    assert!(!interrupted);
    for report in &reports {
        assert!(
            report.ok(),
            "seed {}: {}\n{}",
            report.seed,
            report.why,
            report.serial.clone().unwrap_or_default()
        );
    }
    assert_eq!(totals.seeds_run, 4);
    assert_eq!(totals.violations, 0);
    assert_eq!(totals.iterations, 800);
    assert_eq!(totals.max_depth_reached, 8, "programs reach the full depth");
    // Every kind of event was raised, and NMIs were latched inside NMIs.
    for kind in [
        "int_n",
        "int3",
        "ud2",
        "divide_error",
        "general_protection",
        "pks_fault_resolved",
        "pks_fault_fixup",
        "timer",
        "self_ipi",
        "self_nmi",
        "preempt",
        // The outermost level in ring 3.
        "user_syscall",
        "user_int3",
        "user_ud2",
        "user_page_fault",
        "user_timer",
        "user_self_ipi",
        "user_self_nmi",
    ] {
        assert!(
            totals.kinds.get(kind).copied().unwrap_or(0) > 0,
            "no {kind} events: {:?}",
            totals.kinds
        );
    }
    assert!(totals.latched_nmis > 0);
}

#[test]
fn deterministic_fuzz_gives_the_same_digest_twice() {
    let config = campaign_config(11..12, 100, true);
    let digest = |seed| {
        let (mut reports, unrun) = campaign::run_batch(&config, seed..seed + 1, None);
        assert!(unrun.is_empty());
        let report = reports.remove(0);
        assert!(report.ok(), "{}", report.why);
        report.result.unwrap()["digest"].as_str().unwrap().to_string()
    };
    let first = digest(11);
    assert_eq!(first, digest(11), "same seed, same digest");
    assert_ne!(first, digest(12), "another seed, another trace");
}

#[test]
fn several_seeds_in_one_boot_give_each_seed_its_own_digest() {
    // One boot per seed, then all five in one boot (`seeds=20..25`): every
    // seed starts from a fresh state, so the digests and counts agree.
    let digests = |seeds_per_boot| {
        let config = CampaignConfig { seeds_per_boot, ..campaign_config(20..25, 60, true) };
        let (reports, totals, _) =
            campaign::run_campaign(&config, Arc::new(AtomicBool::new(false)), |_, _| {});
        assert_eq!(totals.seeds_run, 5);
        let rows: Vec<(u64, String, u64)> = reports
            .iter()
            .map(|report| {
                assert!(report.ok(), "seed {}: {}", report.seed, report.why);
                let result = report.result.as_ref().expect("a summary");
                (
                    report.seed,
                    result["digest"].as_str().expect("a digest").to_string(),
                    result["frames"].as_u64().expect("frames"),
                )
            })
            .collect();
        (rows, totals)
    };
    let (one_per_boot, _) = digests(1);
    let (batched, totals) = digests(5);
    assert_eq!(one_per_boot, batched);
    // The campaign reports its wall rate against the kernels' own.
    assert!(totals.kernel_median_frames_per_second().unwrap() > 0.0);
    assert!(totals.wall_to_kernel_ratio().unwrap() > 0.0);
}

#[test]
fn cli_fuzz_replays_a_seed_and_rejects_bad_arguments() {
    let replay_json =
        std::env::temp_dir().join(format!("extregs-{}-replay.json", std::process::id()));
    let replay = extregs_cli(&[
        "fuzz",
        "--seed",
        "3",
        "--iterations",
        "20",
        "--json",
        replay_json.to_str().unwrap(),
    ]);
    assert_eq!(
        replay.status.code(),
        Some(EXIT_SUCCESS),
        "{}",
        String::from_utf8_lossy(&replay.stderr)
    );
    let stdout = String::from_utf8_lossy(&replay.stdout);
    assert!(stdout.contains("RESULT {\"mode\":\"fuzz\",\"ok\":true"), "{stdout}");
    assert!(stdout.contains("\"seed\":3,\"iterations\":20"), "{stdout}");
    // --json is honoured for a replay too: a one-seed campaign document.
    let document: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&replay_json).expect("replay JSON written"))
            .unwrap();
    let _ = std::fs::remove_file(&replay_json);
    assert_eq!(document["runs"][0]["seed"], 3, "{document}");
    assert!(document["totals"]["frames"].as_u64().unwrap() > 0, "{document}");
    for bad in [
        &["fuzz", "--seeds", "5..5"][..],
        &["fuzz", "--seed", "3", "--jobs", "2"],
        &["fuzz", "--seeds", "0..2", "--max-depth", "13"],
        &["fuzz"],
        &["fuzz", "--seeds", "0..2", "--seed", "1"],
        &["fuzz", "--seeds", "0..6", "--shard", "0/3"],
        &["fuzz", "--seeds", "0..6", "--shard", "4/3"],
        &["fuzz", "--seeds", "0..6", "--shard", "1/0"],
        &["fuzz", "--seeds", "0..2", "--shard", "1/3"],
        &["fuzz", "--seed", "1", "--shard", "1/2"],
        &["fuzz", "--seeds", "0..2", "--seeds-per-boot", "0"],
        &["fuzz", "--seeds", "0..2", "--seeds-per-boot", "100001"],
        &["fuzz", "--seed", "1", "--seeds-per-boot", "2"],
    ] {
        assert_eq!(extregs_cli(bad).status.code(), Some(EXIT_USAGE), "{bad:?}");
    }
    let json = std::env::temp_dir().join(format!("extregs-{}-campaign.json", std::process::id()));
    let svg = std::env::temp_dir().join(format!("extregs-{}-campaign.svg", std::process::id()));
    let campaign = extregs_cli(&[
        "fuzz",
        "--seeds",
        "0..2",
        "--iterations",
        "10",
        "--json",
        json.to_str().unwrap(),
        "--plot",
        svg.to_str().unwrap(),
    ]);
    assert_eq!(campaign.status.code(), Some(EXIT_SUCCESS));
    let document: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(document["runs"].as_array().unwrap().len(), 2);
    assert_eq!(document["totals"]["violations"], 0);
    // The coverage pictures, drawn live and again from the document; the
    // kernels' per-depth and per-context counts add up to the frames.
    let frames = document["totals"]["frames"].as_u64().unwrap();
    let by_depth: u64 = document["totals"]["kind_depth"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|row| row.as_array().unwrap().iter().map(|c| c.as_u64().unwrap()))
        .sum();
    let by_context: u64 = document["totals"]["contexts"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|row| row.as_object().unwrap().values().map(|c| c.as_u64().unwrap()))
        .sum();
    assert_eq!((by_depth, by_context), (frames, frames));
    let live = std::fs::read_to_string(&svg).expect("--plot wrote an SVG");
    assert!(live.contains("nesting depth") && live.contains("entry text"), "three heat maps");
    let _ = std::fs::remove_file(&svg);
    let replot =
        extregs_cli(&["fuzz", "plot", json.to_str().unwrap(), "--plot", svg.to_str().unwrap()]);
    assert_eq!(replot.status.code(), Some(EXIT_SUCCESS));
    assert_eq!(std::fs::read_to_string(&svg).unwrap(), live, "the same picture from the JSON");
    let _ = std::fs::remove_file(&json);
    let _ = std::fs::remove_file(&svg);
    // Not a campaign document, or no document at all.
    let not_json = std::env::temp_dir().join(format!("extregs-{}-not.json", std::process::id()));
    std::fs::write(&not_json, "[1, 2]").unwrap();
    let bad = extregs_cli(&["fuzz", "plot", not_json.to_str().unwrap(), "--plot", "/tmp/x.svg"]);
    assert_eq!(bad.status.code(), Some(EXIT_USAGE));
    let _ = std::fs::remove_file(&not_json);
    let missing = extregs_cli(&["fuzz", "plot", "/nonexistent.json", "--plot", "/tmp/x.svg"]);
    assert_eq!(missing.status.code(), Some(EXIT_USAGE));
}

#[test]
fn sharded_campaign_merged_equals_the_unsharded_one() {
    let dir = std::env::temp_dir();
    let path = |name: &str| dir.join(format!("extregs-{}-{name}.json", std::process::id()));
    let (full, first, second, merged) =
        (path("full"), path("shard1"), path("shard2"), path("merged"));
    let campaign = |extra: &[&str], json: &std::path::Path| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_extregs"));
        command.args(["fuzz", "--seeds", "0..5", "--iterations", "30", "--deterministic"]);
        command.args(extra).arg("--json").arg(json);
        let output = command.output().expect("extregs runs");
        assert_eq!(output.status.code(), Some(EXIT_SUCCESS), "{extra:?}: {output:?}");
    };
    campaign(&[], &full);
    campaign(&["--shard", "1/2"], &first);
    // The second slice as the Slurm array task with index 1 runs it: the
    // job script in docs/, with the 0-based index in SLURM_ARRAY_TASK_ID.
    let out_dir = dir.join(format!("extregs-{}-slurm", std::process::id()));
    let script = Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/extregs-fuzz.sbatch"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("SLURM_SUBMIT_DIR")
        .env("SLURM_ARRAY_TASK_ID", "1")
        .env("SEEDS", "0..5")
        .env("SHARDS", "2")
        .env("ITERATIONS", "30")
        .env("EXTRA", "--deterministic")
        .env("OUT", &out_dir)
        .output()
        .expect("bash runs the Slurm job script");
    assert_eq!(script.status.code(), Some(EXIT_SUCCESS), "{script:?}");
    std::fs::rename(out_dir.join("shard-1.json"), &second).expect("the script wrote shard-1.json");
    let _ = std::fs::remove_dir(&out_dir);
    let merge = extregs_cli(&[
        "fuzz",
        "merge",
        second.to_str().unwrap(),
        first.to_str().unwrap(),
        "--json",
        merged.to_str().unwrap(),
    ]);
    assert_eq!(merge.status.code(), Some(EXIT_SUCCESS), "{merge:?}");
    let overlap = extregs_cli(&[
        "fuzz",
        "merge",
        first.to_str().unwrap(),
        first.to_str().unwrap(),
        "--json",
        merged.with_extension("overlap").to_str().unwrap(),
    ]);
    assert_eq!(overlap.status.code(), Some(EXIT_USAGE), "overlapping slices must be refused");
    let read = |path: &std::path::Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    };
    let (full_doc, first_doc, merged_doc) = (read(&full), read(&first), read(&merged));
    for path in [&full, &first, &second, &merged] {
        let _ = std::fs::remove_file(path);
    }
    assert_eq!(first_doc["shard"]["of"], "0..5");
    assert_eq!(first_doc["seeds"], "0..2", "slice 1 of 2 of five seeds");
    assert_eq!(merged_doc["seeds"], "0..5");
    assert_eq!(merged_doc["complete"], true);
    let digests = |doc: &serde_json::Value| -> Vec<(u64, String)> {
        doc["runs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|run| (run["seed"].as_u64().unwrap(), run["digest"].as_str().unwrap().to_string()))
            .collect()
    };
    assert_eq!(digests(&merged_doc), digests(&full_doc), "per-seed digests");
    for key in ["seeds_run", "iterations", "frames", "violations", "latched_nmis", "kinds"] {
        assert_eq!(merged_doc["totals"][key], full_doc["totals"][key], "totals.{key}");
    }
}

#[test]
fn cli_fuzz_campaign_stops_cleanly_on_ctrl_c() {
    let child = Command::new(env!("CARGO_BIN_EXE_extregs"))
        .args(["fuzz", "--seeds", "0..1000", "--iterations", "210", "--jobs", "2"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start a campaign");
    // Let a few seeds finish, then Ctrl-C (SIGINT) as a terminal would.
    std::thread::sleep(Duration::from_secs(6));
    let interrupted = Command::new("kill").args(["-INT", &child.id().to_string()]).status();
    assert!(interrupted.unwrap().success());
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{stdout}\n{stderr}");
    assert!(stderr.contains("extregs: fuzz: interrupted"), "{stderr}");
    // The totals of what did finish, and no QEMU left behind.
    let totals =
        stdout.lines().find(|l| l.contains(" seeds before Ctrl-C (")).expect("totals line");
    assert!(totals.contains("0 failed"), "{totals}");
    assert!(!totals.starts_with("extregs: fuzz: 0 seeds"), "no seed finished in 6 s: {totals}");
    // (No other test uses 210 iterations.)
    std::thread::sleep(Duration::from_millis(500));
    let leftover = Command::new("pgrep").args(["-f", "iterations=210 max-depth"]).output().unwrap();
    assert!(leftover.stdout.is_empty(), "QEMU still running after Ctrl-C");
}

#[test]
fn bench_runs_both_harnesses_and_reports_every_variant() {
    let dir = std::env::temp_dir();
    let json = dir.join(format!("extregs-{}-bench.json", std::process::id()));
    let svg = dir.join(format!("extregs-{}-bench.svg", std::process::id()));
    let output = extregs_cli(&[
        "bench",
        "--harness",
        "both",
        "--iterations",
        "20000",
        "--runs",
        "2",
        "--json",
        json.to_str().unwrap(),
        "--plot",
        svg.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(EXIT_SUCCESS),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // The table names the harness, the CPU and the accelerator.
    assert!(stdout.contains("native harness: ring 3 on "), "{stdout}");
    assert!(stdout.contains("kernel harness: QEMU TCG on "), "{stdout}");
    assert!(stdout.contains("nesting: extended"), "{stdout}");
    let document: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let plot = std::fs::read_to_string(&svg).unwrap();
    let _ = std::fs::remove_file(&json);
    let _ = std::fs::remove_file(&svg);
    assert!(plot.contains("<svg") && plot.contains("extended"), "not an SVG chart");
    assert!(plot.contains("extension bytes"), "the size series is drawn");
    let rows = document["rows"].as_array().unwrap();
    for harness in ["native", "kernel"] {
        let of: Vec<&serde_json::Value> = rows
            .iter()
            .filter(|r| r["harness"] == harness && r["extension_bytes"].is_null())
            .collect();
        let names: Vec<&str> = of.iter().map(|r| r["name"].as_str().unwrap()).collect();
        assert_eq!(
            names,
            [
                "floor",
                "x86-interrupt",
                "by-value",
                "by-reference",
                "extended",
                "extended+pks-hit",
                "extended+pks-write",
                "yield",
                "yield+pkrs-switch",
                "syscall-by-value",
                "syscall-extended",
                "syscall"
            ],
            "{harness}: every variant, each either measured or with a reason"
        );
        // The floor's lowest round trip over both runs: a slow stretch of
        // the TCG host during one run's floor row raises that run's median
        // (and so the merged one) but not the other run's minimum.
        let floor = of[0]["min_cycles"].as_f64().unwrap();
        for row in &of {
            if row["ran"] == true {
                for key in ["min_cycles", "median_cycles", "p99_cycles"] {
                    assert!(row[key].as_f64().unwrap() > 0.0, "{harness} {}: {key}", row["name"]);
                }
                assert!(row["iqr_cycles"].as_f64().unwrap() >= 0.0);
                // Two runs, each with its own median and ratio to its own
                // floor; the row's ratio is the median (mean of two) of those.
                assert_eq!(row["runs"], 2, "{row}");
                assert_eq!(row["run_median_cycles"].as_array().unwrap().len(), 2);
                assert!(row["median_spread_cycles"].as_f64().unwrap() >= 0.0);
                let per_run: Vec<f64> = row["ratio_to_floor_runs"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| r.as_f64().unwrap())
                    .collect();
                assert_eq!(per_run.len(), 2, "{row}");
                let expected = (per_run[0] + per_run[1]) / 2.0;
                let reported = row["ratio_to_floor"].as_f64().unwrap();
                assert!((reported - expected).abs() < 1e-9, "{row}");
                assert!(row["stack_bytes"].as_u64().unwrap() > 0);
                assert!(row["iterations"].as_u64().unwrap() >= 20000);
                // The floor is an `int`/`iretq` round trip; the syscall
                // rows enter by SYSCALL, which has its own (lower) floor.
                // No variant's fastest round trip beats the floor's.
                // `x86-interrupt` is within about 5% of the floor under TCG,
                // so one noisy run can put it a little below: a tenth of
                // slack for it, none for the rest.
                let name = row["name"].as_str().unwrap();
                let slack = if name == "x86-interrupt" { 0.9 } else { 1.0 };
                assert!(
                    name.starts_with("syscall")
                        || row["min_cycles"].as_f64().unwrap() >= floor * slack,
                    "{harness}: {name} is cheaper than the floor: {row}"
                );
            } else {
                assert!(row["why_not_run"].as_str().is_some_and(|why| !why.is_empty()));
            }
        }
    }
    // The size series: in both harnesses, every placement at every size,
    // measured twice; the stack per frame grows with the state: by its
    // 120 more bytes from 8 to 128, less what 16-byte rounding of the
    // frames absorbed at the small end.
    for harness in ["native", "kernel"] {
        let sized: Vec<&serde_json::Value> = rows
            .iter()
            .filter(|r| r["harness"] == harness && !r["extension_bytes"].is_null())
            .collect();
        assert_eq!(sized.len(), 20, "{harness}: 4 placements x 5 sizes");
        for placement in ["below", "above", "by-value", "by-reference"] {
            let series: Vec<(u64, u64, f64)> = sized
                .iter()
                .filter(|r| r["placement"] == placement)
                .map(|r| {
                    assert_eq!(r["ran"], true, "{r}");
                    assert_eq!(r["runs"], 2, "{r}");
                    (
                        r["extension_bytes"].as_u64().unwrap(),
                        r["stack_bytes"].as_u64().unwrap(),
                        r["median_cycles"].as_f64().unwrap(),
                    )
                })
                .collect();
            let sizes: Vec<u64> = series.iter().map(|s| s.0).collect();
            assert_eq!(sizes, [8, 16, 32, 64, 128], "{harness} {placement}");
            assert!(series.windows(2).all(|w| w[1].1 >= w[0].1), "{harness} {placement}");
            assert!(series[4].1 - series[0].1 >= 120 - 16, "{harness} {placement}: {series:?}");
            assert!(series.iter().all(|s| s.2 > 0.0));
        }
    }
    // The native harness runs the four it can; the kernel runs all twelve
    // (with PKS, which -cpu max has); both run the 20 rows of the series.
    assert_eq!(rows.iter().filter(|r| r["harness"] == "native" && r["ran"] == true).count(), 24);
    assert_eq!(rows.iter().filter(|r| r["harness"] == "kernel" && r["ran"] == true).count(), 32);
    // The SYSCALL round trips: the extended frame costs its 8 bytes of
    // stack more than pt_regs alone (with the pad word: the same), and the
    // real path (entry checks and the table) more than both.
    let kernel_row = |name: &str| {
        rows.iter().find(|r| r["harness"] == "kernel" && r["name"] == name).unwrap().clone()
    };
    let real = kernel_row("syscall");
    assert!(
        real["stack_bytes"].as_u64().unwrap()
            > kernel_row("syscall-extended")["stack_bytes"].as_u64().unwrap(),
        "{real}"
    );
    let nesting = document["nesting"].as_array().unwrap();
    // Both builds are named: the kernel's (from its BENCH_BUILD line) and the
    // native harness's, with the same opt-level in every profile.
    assert_eq!(document["kernel_build"]["opt_level"], "2", "{document}");
    assert_eq!(document["native_build"]["opt_level"], "3", "{document}");
    assert!(stdout.contains("kernel profile "), "{stdout}");
    let depths: Vec<u64> = nesting.iter().map(|n| n["depth"].as_u64().unwrap()).collect();
    assert_eq!(depths, [1, 2, 4, 8]);
    let stacks: Vec<u64> = nesting.iter().map(|n| n["stack_bytes"].as_u64().unwrap()).collect();
    assert!(stacks.windows(2).all(|pair| pair[1] > pair[0]), "stack grows with depth: {stacks:?}");
}
