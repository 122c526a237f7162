//! What the QEMU tests share: booting the kernel image through the runner
//! library (what `extregs run` uses), showing a boot when an assert fails,
//! and reading the kernel ELF.

use extregs::qemu::{self, Firmware, RunConfig};
use extregs::report::Outcome;
use object::{Object, ObjectSection, ObjectSymbol};
use std::process::Command;
use std::time::Duration;

pub const BOOT_TIMEOUT: Duration = Duration::from_secs(180);

pub fn boot(firmware: Firmware, cpu: &str, cmdline: &str) -> Outcome {
    let config = RunConfig {
        firmware,
        cpu: cpu.into(),
        cmdline: cmdline.into(),
        timeout: BOOT_TIMEOUT,
        ..RunConfig::default()
    };
    qemu::run(&config).expect("QEMU starts (make test installs it)")
}

pub fn dump(outcome: &Outcome) -> String {
    format!("--- serial ---\n{}\n--- qemu stderr ---\n{}", outcome.serial, outcome.qemu_stderr)
}

/// Asserts the runner's verdict, showing the whole boot when it differs.
pub fn assert_verdict(outcome: &Outcome, expected: i32) {
    assert_eq!(outcome.verdict().0, expected, "{}", dump(outcome));
}

/// A QMP socket path unique to this test process.
pub fn qmp_socket(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("extregs-{}-{name}.qmp", std::process::id()))
}

pub fn extregs_cli(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_extregs")).args(args).output().expect("run extregs")
}

/// The bytes of the kernel ELF at virtual address `address`, if loaded.
pub fn image_bytes(elf: &object::File<'_>, address: u64, length: usize) -> Vec<u8> {
    let section = elf
        .sections()
        .find(|s| (s.address()..s.address() + s.size()).contains(&address))
        .expect("a section holds the address");
    let data = section.data().expect("section data");
    let start = (address - section.address()) as usize;
    data[start..start + length].to_vec()
}

/// The ELF address of a function symbol given by its demangled name.
pub fn symbol_address(elf: &object::File<'_>, demangled: &str) -> u64 {
    elf.symbols()
        .find(|s| s.name().is_ok_and(|n| format!("{:#}", rustc_demangle::demangle(n)) == demangled))
        .unwrap_or_else(|| panic!("symbol {demangled} in the kernel ELF"))
        .address()
}

/// `--gdb` serves on TCP port 1234: one such boot at a time.
pub static GDB_PORT: std::sync::Mutex<()> = std::sync::Mutex::new(());
