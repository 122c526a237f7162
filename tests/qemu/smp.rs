//! More than one CPU: the kernel finds them in the MADT, with APIC IDs that
//! are not CPU numbers, starts each with INIT-SIPI-SIPI through its
//! real-mode trampoline, and brings each fully online with its own entry
//! state (docs/smp.md). Every mode then runs as before, on 2 and 4 CPUs,
//! under BIOS and UEFI, plain and under a QMP NMI storm (which raises
//! LINT1 on every CPU, so every AP takes NMIs through its own entry).

use crate::common::*;
use extregs::exit_codes::{EXIT_KERNEL_FAILURE, EXIT_SUCCESS};
use extregs::qemu::{self, Firmware, RunConfig};
use extregs::report::Outcome;

fn boot_with_cpus(firmware: Firmware, smp: &str, cmdline: &str, nmi_storm: bool) -> Outcome {
    let config = RunConfig {
        firmware,
        cmdline: cmdline.into(),
        timeout: BOOT_TIMEOUT,
        smp: Some(smp.into()),
        nmi_storm,
        ..RunConfig::default()
    };
    qemu::run(&config).expect("QEMU starts")
}

/// QEMU's `-smp 6,sockets=2,cores=3` numbers the APIC IDs 0, 1, 2 and 4,
/// 5, 6 (each socket's IDs are aligned to a power of two): the MADT lists
/// them in that order, under BIOS (SeaBIOS's tables) and UEFI (OVMF's),
/// every AP comes up, and RESULT counts them.
#[test]
fn every_cpu_of_the_madt_comes_up() {
    for (firmware, smp, madt, cpus) in [
        (Firmware::Bios, "6,sockets=2,cores=3", "MADT lists 6 CPUs (APIC IDs 0 1 2 4 5 6)", 6),
        (Firmware::Uefi, "4", "MADT lists 4 CPUs (APIC IDs 0 1 2 3)", 4),
        (Firmware::Bios, "1", "MADT lists 1 CPU (APIC ID 0)", 1),
    ] {
        let outcome = boot_with_cpus(firmware, smp, "mode=demo", false);
        assert_verdict(&outcome, EXIT_SUCCESS);
        let serial = &outcome.serial;
        assert!(serial.contains(&format!("extregs: acpi: {madt}")), "{}", dump(&outcome));
        if cpus > 1 {
            assert!(serial.contains("smp: Bringing up secondary CPUs ..."), "{}", dump(&outcome));
            let brought_up = format!("smp: Brought up 1 node, {cpus} CPUs");
            assert!(serial.contains(&brought_up), "{}", dump(&outcome));
        } else {
            assert!(!serial.contains("smp: "), "{}", dump(&outcome));
        }
        assert_eq!(outcome.result().expect("a RESULT")["cpus"], cpus, "{}", dump(&outcome));
    }
}

/// Every CPU count, firmware and storm setting the matrix below names.
fn assert_runs_on_every_setting(cmdline: &str, settings: &[(Firmware, u32, bool)]) {
    for &(firmware, cpus, storm) in settings {
        let outcome = boot_with_cpus(firmware, &cpus.to_string(), cmdline, storm);
        let setting = format!("{cmdline} on {cpus} CPUs, {firmware:?}, NMI storm {storm}");
        assert_verdict(&outcome, EXIT_SUCCESS);
        let result = outcome.result().expect("a RESULT");
        assert_eq!(result["cpus"], cpus, "{setting}\n{}", dump(&outcome));
        assert_eq!(result["frame_errors"], 0, "{setting}\n{}", dump(&outcome));
        let brought_up = format!("smp: Brought up 1 node, {cpus} CPUs");
        assert!(outcome.serial.contains(&brought_up), "{setting}\n{}", dump(&outcome));
        // A mode that runs long enough to count them (idle, one second)
        // must have taken the storm's NMIs; demo may end before the first.
        if let (true, Some(nmis)) = (storm, result.get("nmis")) {
            assert!(outcome.nmis_sent.unwrap_or(0) > 0, "{setting}\n{}", dump(&outcome));
            assert!(nmis.as_u64().unwrap_or(0) > 0, "{setting}\n{}", dump(&outcome));
            // QMP's inject-nmi reaches every CPU (each one's LINT1).
            let per_cpu = result["nmis_per_cpu"].as_array().expect("nmis_per_cpu");
            assert_eq!(per_cpu.len(), cpus as usize, "{setting}\n{}", dump(&outcome));
            for (cpu, count) in per_cpu.iter().enumerate() {
                assert!(
                    count.as_u64().unwrap_or(0) > 0,
                    "{setting}: CPU {cpu} took no NMI from outside\n{}",
                    dump(&outcome)
                );
            }
        }
    }
}

/// The selftests pass on 2 and 4 CPUs, BIOS and UEFI, plain and under an
/// NMI storm, those that need a second CPU among them (none skipped). Under
/// the storm the boot CPU holds outside NMIs while each test runs (they
/// count and walk its events exactly); the APs take the storm throughout,
/// during the cross-CPU tests too.
#[test]
fn selftests_pass_on_2_and_4_cpus() {
    for (firmware, cpus, storm) in [
        (Firmware::Bios, 2, false),
        (Firmware::Bios, 4, true),
        (Firmware::Uefi, 2, true),
        (Firmware::Uefi, 4, false),
    ] {
        let outcome = boot_with_cpus(firmware, &cpus.to_string(), "mode=selftest", storm);
        let setting = format!("{cpus} CPUs, {firmware:?}, NMI storm {storm}");
        if storm {
            assert!(outcome.nmis_sent.unwrap_or(0) > 0, "{setting}\n{}", dump(&outcome));
        }
        assert_verdict(&outcome, EXIT_SUCCESS);
        let results = crate::selftest::selftest_results(&outcome);
        for result in &results {
            assert!(
                result.ok && result.skip.is_none(),
                "{setting}: {result:?}\n{}",
                dump(&outcome)
            );
        }
        assert_eq!(outcome.result().expect("a RESULT")["cpus"], cpus);
    }
}

/// `mode=idle` and `mode=demo` on 2 and 4 CPUs, BIOS and UEFI, plain and
/// under an NMI storm.
#[test]
fn idle_and_demo_run_on_2_and_4_cpus() {
    assert_runs_on_every_setting(
        "mode=idle seconds=1",
        &[(Firmware::Bios, 2, true), (Firmware::Uefi, 4, true), (Firmware::Bios, 4, false)],
    );
    assert_runs_on_every_setting(
        "mode=demo",
        &[(Firmware::Bios, 4, true), (Firmware::Uefi, 2, false), (Firmware::Bios, 2, false)],
    );
}

/// The part of `serial` from the line `NMI backtrace for cpu {cpu}` to the
/// next line that starts another CPU's dump or ends the backtrace.
fn dump_of(serial: &str, cpu: usize) -> Option<String> {
    let start = serial.find(&format!("NMI backtrace for cpu {cpu}\n"))?;
    let rest = &serial[start..];
    let mut lines = rest.lines();
    let first = lines.next()?.to_string();
    let body: Vec<&str> = lines
        .take_while(|line| {
            !line.starts_with("NMI backtrace for cpu ") && !line.starts_with("extregs: backtrace:")
        })
        .collect();
    Some(format!("{first}\n{}", body.join("\n")))
}

/// `mode=backtrace` on 2 and 4 CPUs, BIOS and UEFI, plain and under an NMI
/// storm: every CPU answers once, and its dump is whole: its own show_regs
/// (the extension's GENERIC line included) and a Call Trace whose `<NMI>`
/// section opens and closes inside it, with no line of another CPU's.
#[test]
fn backtrace_answers_from_every_cpu() {
    for (firmware, cpus, storm) in [
        (Firmware::Bios, 2usize, false),
        (Firmware::Bios, 4, true),
        (Firmware::Uefi, 4, false),
        (Firmware::Uefi, 2, true),
    ] {
        let outcome = boot_with_cpus(firmware, &cpus.to_string(), "mode=backtrace", storm);
        let setting = format!("{cpus} CPUs, {firmware:?}, NMI storm {storm}");
        assert_verdict(&outcome, EXIT_SUCCESS);
        let result = outcome.result().expect("a RESULT");
        assert_eq!(result["answered"], cpus, "{setting}\n{}", dump(&outcome));
        assert_eq!(result["asked"], cpus, "{setting}\n{}", dump(&outcome));
        for cpu in 0..cpus {
            let serial = &outcome.serial;
            let header = format!("NMI backtrace for cpu {cpu}\n");
            assert_eq!(
                serial.matches(&header).count(),
                1,
                "{setting}: cpu {cpu}\n{}",
                dump(&outcome)
            );
            let dump_text = dump_of(serial, cpu).expect("the dump");
            let comm =
                if cpu == 0 { "Comm: init".to_string() } else { format!("Comm: swapper/{cpu}") };
            for needed in [
                format!("CPU: {cpu} PID: "),
                comm,
                "GENERIC: ".into(),
                "on the NMI stack".into(),
                "Call Trace:".into(),
                " <NMI>".into(),
                " </NMI>".into(),
            ] {
                assert!(
                    dump_text.contains(&needed),
                    "{setting}: cpu {cpu} lacks {needed:?}\n{dump_text}"
                );
            }
            for other in (0..cpus).filter(|&other| other != cpu) {
                assert!(
                    !dump_text.contains(&format!("CPU: {other} PID: ")),
                    "{setting}: cpu {other}'s lines inside cpu {cpu}'s dump\n{dump_text}"
                );
            }
        }
    }
}

/// `mode=oops cause=ud2 cpu=K`: CPU K dies in its idle task. It stops the
/// other CPUs with an NMI and prints the only dump and the only RESULT, on
/// 2 and 4 CPUs, BIOS and UEFI, plain and under an NMI storm; with
/// `cpu=all` every CPU dies at once and one dump still comes out. A CPU
/// that is not online is refused.
#[test]
fn an_oops_on_an_ap_gives_one_dump() {
    for (firmware, cpus, storm, cpu) in [
        (Firmware::Bios, 2usize, false, 1),
        (Firmware::Uefi, 4usize, true, 3),
        (Firmware::Bios, 4usize, true, 2),
        (Firmware::Uefi, 2usize, false, 1),
    ] {
        let cmdline = format!("mode=oops cause=ud2 cpu={cpu}");
        let outcome = boot_with_cpus(firmware, &cpus.to_string(), &cmdline, storm);
        let setting = format!("{cmdline} on {cpus} CPUs, {firmware:?}, NMI storm {storm}");
        assert_verdict(&outcome, EXIT_KERNEL_FAILURE);
        let serial = &outcome.serial;
        assert_eq!(
            serial.matches("extregs: oops: unhandled").count(),
            1,
            "{setting}\n{}",
            dump(&outcome)
        );
        assert_eq!(serial.matches("\nRESULT ").count(), 1, "{setting}\n{}", dump(&outcome));
        let victim = format!("CPU: {cpu} PID: 0 Comm: swapper/{cpu}");
        assert!(serial.contains(&victim), "{setting}\n{}", dump(&outcome));
        assert!(!serial.contains("did not stop"), "{setting}\n{}", dump(&outcome));
        // After the dump, each stopped CPU's backtrace, once, from the NMI
        // that stopped it; then the RESULT.
        let (dump_part, after) = serial.split_once("---[ end trace ]---").expect("the dump");
        assert_eq!(dump_part.matches("\nCPU: ").count(), 1, "{setting}\n{}", dump(&outcome));
        for other in (0..cpus).filter(|&other| other != cpu) {
            let header = format!("NMI backtrace for cpu {other}\n");
            assert_eq!(after.matches(&header).count(), 1, "{setting}\n{}", dump(&outcome));
            assert!(
                after.contains(&format!("CPU: {other} PID: ")),
                "{setting}\n{}",
                dump(&outcome)
            );
        }
        assert!(after.contains(" <NMI>"), "{setting}\n{}", dump(&outcome));
        assert!(!after.contains("printed no backtrace"), "{setting}\n{}", dump(&outcome));
        assert_eq!(outcome.result().expect("a RESULT")["error"], "unhandled exception");
    }
    // Every CPU oopses at once (CPU 0 wakes the others, then dies too):
    // still one dump and one RESULT, whichever CPU won.
    for (firmware, cpus) in [(Firmware::Bios, 4usize), (Firmware::Uefi, 2)] {
        let outcome =
            boot_with_cpus(firmware, &cpus.to_string(), "mode=oops cause=ud2 cpu=all", false);
        assert_verdict(&outcome, EXIT_KERNEL_FAILURE);
        let serial = &outcome.serial;
        assert_eq!(serial.matches("extregs: oops: unhandled").count(), 1, "{}", dump(&outcome));
        assert_eq!(serial.matches("\nRESULT ").count(), 1, "{}", dump(&outcome));
        let (dump_part, after) = serial.split_once("---[ end trace ]---").expect("the dump");
        assert_eq!(dump_part.matches("\nCPU: ").count(), 1, "{}", dump(&outcome));
        // Every other CPU answers after the dump: a backtrace, or the line
        // saying it oopsed too.
        assert_eq!(after.matches("NMI backtrace for cpu ").count(), cpus - 1, "{}", dump(&outcome));
    }
    let outcome = boot_with_cpus(Firmware::Bios, "2", "mode=oops cause=ud2 cpu=5", false);
    assert_verdict(&outcome, EXIT_KERNEL_FAILURE);
    assert!(
        outcome.serial.contains("extregs: error: cpu=5: CPU 5 is not online"),
        "{}",
        dump(&outcome)
    );
}

/// Every mode runs on 8 CPUs (the most) and its RESULT counts them.
#[test]
fn every_mode_runs_on_8_cpus() {
    for cmdline in [
        "mode=demo",
        "mode=selftest",
        "mode=idle seconds=1",
        "mode=tasks tasks=4 seconds=1",
        "mode=user",
        "mode=fuzz seed=3 iterations=100",
        "mode=bench iterations=1000",
        "mode=backtrace",
    ] {
        let outcome = boot_with_cpus(Firmware::Bios, "8", cmdline, false);
        assert_verdict(&outcome, EXIT_SUCCESS);
        let result = outcome.result().expect("a RESULT");
        assert_eq!(result["cpus"], 8, "{cmdline}\n{}", dump(&outcome));
        assert_eq!(result["frame_errors"], 0, "{cmdline}\n{}", dump(&outcome));
    }
}
