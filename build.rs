//! Builds the BIOS and UEFI boot images from the kernel artifact (bootloader
//! 0.11) and hands their paths, and the kernel ELF's, to the runner.
//!
//! The images carry the kernel without its DWARF and with only its function
//! symbols (`objcopy --strip-all --keep-symbols`): the kernel reads nothing
//! else of its symbol table at run time, and the BIOS loader copies the
//! whole file a byte at a time, which under TCG costs about half a second
//! per MB (see docs/boot.md). The full ELF stays beside them for gdb,
//! `addr2line` and `decode_stacktrace.sh`: `extregs images` prints it as
//! `kernel=`.

use bootloader::{BootConfig, DiskImageBuilder};
use object::{Object, ObjectSymbol, SymbolKind};
use std::path::{Path, PathBuf};

fn main() {
    let kernel = PathBuf::from(
        std::env::var_os("CARGO_BIN_FILE_EXTREGS_KERNEL_kernel")
            .expect("cargo provides the kernel artifact (bindeps)"),
    );
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let bios_image = out_dir.join("extregs-bios.img");
    let uefi_image = out_dir.join("extregs-uefi.img");
    let booted_kernel = out_dir.join("kernel-booted");
    keep_only_function_symbols(&kernel, &booted_kernel, &out_dir.join("kernel-functions.txt"));
    let mut builder = DiskImageBuilder::new(booted_kernel.clone());
    builder.set_boot_config(&boot_config());
    builder.create_bios_image(&bios_image).expect("creating the BIOS image");
    builder.create_uefi_image(&uefi_image).expect("creating the UEFI image");
    println!("cargo:rustc-env=EXTREGS_BIOS_IMAGE={}", bios_image.display());
    println!("cargo:rustc-env=EXTREGS_UEFI_IMAGE={}", uefi_image.display());
    println!("cargo:rustc-env=EXTREGS_KERNEL_ELF={}", kernel.display());
    println!("cargo:rustc-env=EXTREGS_BOOTED_KERNEL_ELF={}", booted_kernel.display());
}

/// Copies the ELF at `from` to `to` with nothing but its loadable sections
/// and the function symbols of its symbol table (named in `keep_list`,
/// which this writes): what the kernel's `debug::symbols::lookup` reads.
/// The data and label symbols, the DWARF and the rest go.
/// `$EXTREGS_OBJCOPY`, or binutils' `objcopy` (which `make` installs).
fn keep_only_function_symbols(from: &Path, to: &Path, keep_list: &Path) {
    println!("cargo:rerun-if-env-changed=EXTREGS_OBJCOPY");
    let elf = std::fs::read(from).unwrap_or_else(|error| panic!("{}: {error}", from.display()));
    let elf = object::File::parse(&*elf)
        .unwrap_or_else(|error| panic!("{} is not an ELF: {error}", from.display()));
    let mut functions: Vec<&str> = elf
        .symbols()
        .filter(|symbol| symbol.kind() == SymbolKind::Text)
        .map(|symbol| {
            symbol.name().unwrap_or_else(|error| {
                panic!("{}: a function symbol's name: {error}", from.display())
            })
        })
        .filter(|name| !name.is_empty())
        .collect();
    // objcopy reads the list a name per line, with `#` starting a comment
    // and blanks trimmed: a name it would misread would silently go.
    if let Some(name) = functions.iter().find(|name| {
        !name.bytes().all(|byte| byte.is_ascii_alphanumeric() || b"_.$".contains(&byte))
    }) {
        panic!("{}: function symbol {name:?} can't go in objcopy's keep list", from.display());
    }
    functions.sort_unstable();
    functions.dedup();
    assert!(!functions.is_empty(), "{} has no function symbols", from.display());
    let list: String = functions.iter().map(|name| format!("{name}\n")).collect();
    std::fs::write(keep_list, list)
        .unwrap_or_else(|error| panic!("{}: {error}", keep_list.display()));
    let objcopy = std::env::var("EXTREGS_OBJCOPY").unwrap_or_else(|_| "objcopy".into());
    let status = std::process::Command::new(&objcopy)
        .arg("--strip-all")
        .arg(format!("--keep-symbols={}", keep_list.display()))
        .arg(from)
        .arg(to)
        .status()
        .unwrap_or_else(|error| panic!("cannot run {objcopy} (binutils is needed): {error}"));
    assert!(status.success(), "{objcopy} --strip-all {} failed: {status}", from.display());
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
