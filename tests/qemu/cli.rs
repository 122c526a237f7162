//! The command line: exit statuses, `images`, and bad kernel command lines.

use crate::common::*;
use extregs::exit_codes::{EXIT_KERNEL_FAILURE, EXIT_SUCCESS, EXIT_TIMEOUT, EXIT_USAGE};
use extregs::images;
use extregs::qemu::Firmware;

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
    for cpus in ["0", "9"] {
        assert_eq!(extregs_cli(&["run", "--smp", cpus]).status.code(), Some(EXIT_USAGE), "{cpus}");
    }
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
