//! Builds the BIOS and UEFI boot images from the kernel artifact (bootloader
//! 0.11) and hands their paths, and the kernel ELF's, to the runner.
//!
//! The images carry the kernel without its DWARF (`objcopy --strip-debug`):
//! the kernel reads only its symbol table at run time, and the loader reads
//! the whole file from disk, which under TCG is most of a boot (see
//! docs/boot.md). The full ELF stays beside them for gdb, `addr2line` and
//! `decode_stacktrace.sh`: `extregs images` prints it as `kernel=`.

use bootloader::{BootConfig, DiskImageBuilder};
use std::path::PathBuf;

fn main() {
    let kernel = PathBuf::from(
        std::env::var_os("CARGO_BIN_FILE_EXTREGS_KERNEL_kernel")
            .expect("cargo provides the kernel artifact (bindeps)"),
    );
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let bios_image = out_dir.join("extregs-bios.img");
    let uefi_image = out_dir.join("extregs-uefi.img");
    let booted_kernel = out_dir.join("kernel-stripped");
    strip_debug(&kernel, &booted_kernel);
    let mut builder = DiskImageBuilder::new(booted_kernel.clone());
    builder.set_boot_config(&boot_config());
    builder.create_bios_image(&bios_image).expect("creating the BIOS image");
    builder.create_uefi_image(&uefi_image).expect("creating the UEFI image");
    println!("cargo:rustc-env=EXTREGS_BIOS_IMAGE={}", bios_image.display());
    println!("cargo:rustc-env=EXTREGS_UEFI_IMAGE={}", uefi_image.display());
    println!("cargo:rustc-env=EXTREGS_KERNEL_ELF={}", kernel.display());
    println!("cargo:rustc-env=EXTREGS_BOOTED_KERNEL_ELF={}", booted_kernel.display());
}

/// Copies the ELF at `from` to `to` without its debug sections (symbols
/// stay). `$EXTREGS_OBJCOPY`, or binutils' `objcopy` (which `make`
/// installs).
fn strip_debug(from: &std::path::Path, to: &std::path::Path) {
    println!("cargo:rerun-if-env-changed=EXTREGS_OBJCOPY");
    let objcopy = std::env::var("EXTREGS_OBJCOPY").unwrap_or_else(|_| "objcopy".into());
    let status = std::process::Command::new(&objcopy)
        .arg("--strip-debug")
        .arg(from)
        .arg(to)
        .status()
        .unwrap_or_else(|error| panic!("cannot run {objcopy} (binutils is needed): {error}"));
    assert!(status.success(), "{objcopy} --strip-debug {} failed: {status}", from.display());
}

/// The loader's run-time configuration: its log on the serial console
/// only. Drawing every log line into the framebuffer, pixel by pixel, is
/// slow under TCG, and nothing looks at that screen (QEMU runs with
/// `-display none`).
fn boot_config() -> BootConfig {
    let mut config = BootConfig::default();
    config.frame_buffer_logging = false;
    config
}
