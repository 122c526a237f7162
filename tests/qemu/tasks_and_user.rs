//! Tasks and user mode: preemption with per-task PKRS, SYSCALL and the
//! IRET exit, user faults, and both under an NMI storm.

use crate::common::*;
use extregs::exit_codes::EXIT_SUCCESS;
use extregs::qemu::{self, Firmware, RunConfig};
use extregs::report::{self, Outcome};

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

/// On 2 CPUs, and on 4 under a QMP NMI storm, the workers run on every
/// CPU: each CPU's tick preempts them, a worker preempted on one CPU
/// resumes on another (migrations), and every worker still finds its own
/// registers and PKRS.
#[test]
fn tasks_mode_spreads_its_workers_over_every_cpu() {
    for (cpus, storm) in [(2u64, false), (4, true)] {
        let config = RunConfig {
            cmdline: "mode=tasks tasks=8 seconds=3".into(),
            timeout: BOOT_TIMEOUT,
            smp: Some(cpus.to_string()),
            nmi_storm: storm,
            ..RunConfig::default()
        };
        let outcome = qemu::run(&config).expect("QEMU starts");
        let result = assert_tasks_ok(&outcome, 8);
        let setting = format!("{cpus} CPUs, NMI storm {storm}: {result}");
        assert_eq!(result["cpus"], cpus, "{setting}");
        assert!(result["migrations"].as_u64().unwrap() > 0, "{setting}");
        // Each CPU's timer frames were checked (the saved PKRS is the
        // interrupted worker's own, on every CPU).
        for key in ["cpu_context_switches", "cpu_preemptions", "cpu_timer_frames_checked"] {
            let per_cpu = result[key].as_array().expect(key);
            assert_eq!(per_cpu.len() as u64, cpus, "{key}: {setting}");
            for (cpu, count) in per_cpu.iter().enumerate() {
                assert!(count.as_u64().unwrap() > 0, "{key}: CPU {cpu} has none: {setting}");
            }
        }
        if storm {
            assert!(result["nmis"].as_u64().unwrap() > 0, "{setting}");
        }
    }
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
    // Every syscall but the exit calls returned, by SYSRET (no test call
    // asks for the IRET exit here; one task is killed, the others exit).
    let exits = result["tasks"].as_u64().unwrap() - 1;
    assert_eq!(result["sysret_exits"].as_u64().unwrap(), syscalls - exits, "{result}");
    assert!(result["user_preemptions"].as_u64().unwrap() > 0, "{result}");
    let irqs = result["user_irqs"].as_u64().unwrap();
    assert!(irqs > 0, "{result}");
    // IRET exits: each task's first entry, each IRQ/NMI from user mode.
    let nmis = result["user_nmis"].as_u64().unwrap();
    let tasks = result["tasks"].as_u64().unwrap();
    assert_eq!(result["iret_exits"].as_u64().unwrap(), tasks + irqs + nmis, "{result}");
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

/// On 2 CPUs, and on 4 under a QMP NMI storm, the user tasks run on every
/// CPU (one more spinner than CPUs, so each CPU's tick preempts one in user
/// mode), spinners move between CPUs, and the storm's NMIs land in user
/// mode on more than one CPU.
#[test]
fn user_mode_runs_user_tasks_on_every_cpu() {
    for (cpus, storm) in [(2u64, false), (4, true)] {
        let config = RunConfig {
            cmdline: "mode=user".into(),
            timeout: BOOT_TIMEOUT,
            smp: Some(cpus.to_string()),
            nmi_storm: storm,
            ..RunConfig::default()
        };
        let outcome = qemu::run(&config).expect("QEMU starts");
        let result = assert_user_ok(&outcome);
        let setting = format!("{cpus} CPUs, NMI storm {storm}: {result}");
        assert_eq!(result["cpus"], cpus, "{setting}");
        assert_eq!(result["tasks"], 3 + cpus + 1, "{setting}");
        assert!(result["migrations"].as_u64().unwrap() > 0, "{setting}");
        let per_cpu = result["cpu_user_nmis"].as_array().expect("cpu_user_nmis");
        assert_eq!(per_cpu.len() as u64, cpus, "{setting}");
        if storm {
            let cpus_with_user_nmis = per_cpu.iter().filter(|n| n.as_u64().unwrap() > 0).count();
            assert!(
                cpus_with_user_nmis > 1,
                "user-mode NMIs on {cpus_with_user_nmis} CPU: {setting}"
            );
        }
    }
}
