//! Booting: the demo on BIOS and UEFI, with and without PKS, idle under
//! QMP NMIs, and the plain QEMU command line the README documents.

use crate::common::*;
use extregs::exit_codes::EXIT_SUCCESS;
use extregs::images;
use extregs::qemu::{self, Firmware, RunConfig};
use extregs::report::{self, Outcome};
use std::process::Command;
use std::time::Duration;

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
    assert_eq!(output.status.code(), Some(extregs::exit_codes::QEMU_EXIT_SUCCESS), "{serial}");
    assert!(serial.contains("RESULT {\"mode\":\"selftest\",\"ok\":true"), "{serial}");
}
