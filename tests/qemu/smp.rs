//! More than one CPU: the kernel finds them in the MADT (it does not start
//! them yet), with APIC IDs that are not CPU numbers.

use crate::common::*;
use extregs::exit_codes::EXIT_SUCCESS;
use extregs::qemu::{self, Firmware, RunConfig};

fn boot_with_cpus(firmware: Firmware, smp: &str) -> extregs::report::Outcome {
    let config = RunConfig {
        firmware,
        cmdline: "mode=demo".into(),
        timeout: BOOT_TIMEOUT,
        smp: Some(smp.into()),
        ..RunConfig::default()
    };
    qemu::run(&config).expect("QEMU starts")
}

/// QEMU's `-smp 6,sockets=2,cores=3` numbers the APIC IDs 0, 1, 2 and 4,
/// 5, 6 (each socket's IDs are aligned to a power of two): the MADT lists
/// them in that order, under BIOS (SeaBIOS's tables) and UEFI (OVMF's).
#[test]
fn the_madt_lists_every_cpu_with_its_apic_id() {
    for (firmware, smp, line) in [
        (Firmware::Bios, "6,sockets=2,cores=3", "MADT lists 6 CPUs (APIC IDs 0 1 2 4 5 6)"),
        (Firmware::Uefi, "4", "MADT lists 4 CPUs (APIC IDs 0 1 2 3)"),
        (Firmware::Bios, "1", "MADT lists 1 CPU (APIC ID 0)"),
    ] {
        let outcome = boot_with_cpus(firmware, smp);
        assert_verdict(&outcome, EXIT_SUCCESS);
        assert!(outcome.serial.contains(&format!("extregs: acpi: {line}")), "{}", dump(&outcome));
    }
}
