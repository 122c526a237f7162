//! More than one CPU: the kernel finds them in the MADT, with APIC IDs that
//! are not CPU numbers, starts each with INIT-SIPI-SIPI through its
//! real-mode trampoline, and parks them (the entry state they would need is
//! still the boot CPU's alone: docs/design.md).

use crate::common::*;
use extregs::exit_codes::EXIT_SUCCESS;
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

/// With the APs parked, everything the boot CPU runs is as before: the
/// selftests pass, those that need a second CPU among them (a parked AP
/// takes an NMI IPI on its parking IDT), and an NMI storm (QMP inject-nmi
/// raises LINT1 on every CPU; the parked APs keep it masked) reaches the
/// boot CPU's handler.
#[test]
fn the_boot_cpu_runs_as_before_beside_parked_aps() {
    let outcome = boot_with_cpus(Firmware::Bios, "2", "mode=selftest", false);
    assert_verdict(&outcome, EXIT_SUCCESS);
    let results = crate::selftest::selftest_results(&outcome);
    for name in crate::selftest::NEED_TWO_CPUS {
        let result = results.iter().find(|result| result.name == *name).expect("the selftest");
        assert!(result.ok && result.skip.is_none(), "{result:?}\n{}", dump(&outcome));
    }
    let outcome = boot_with_cpus(Firmware::Bios, "2", "mode=idle seconds=2", true);
    assert_verdict(&outcome, EXIT_SUCCESS);
    let result = outcome.result().expect("a RESULT");
    assert!(result["nmis"].as_u64().unwrap() > 0, "{}", dump(&outcome));
    assert_eq!(result["cpus"], 2);
}
