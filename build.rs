//! Builds the BIOS and UEFI boot images from the kernel artifact (bootloader
//! 0.11) and hands their paths, and the kernel ELF's, to the runner.
//!
//! The images carry the kernel without its DWARF and its ELF symbol table,
//! with the function symbols in the compact, demangled form the kernel reads
//! (`extregs-ksyms`, section `.extregs_symbols`): the BIOS loader copies the
//! whole file a byte at a time, which under TCG cost about half a second
//! per MB while the loader's stack shared its code's page (see
//! docs/boot.md). The full ELF stays beside them for gdb,
//! `addr2line` and `decode_stacktrace.sh`: `extregs images` prints it as
//! `kernel=`.
//!
//! In the BIOS image, the loader's stacks are moved off the pages its code
//! runs from (`extregs-loader-stack`), which took about 0.7 s off every
//! BIOS boot under TCG (docs/boot.md, "Fourth pass").

use bootloader::{BootConfig, DiskImageBuilder};
use object::{Object, ObjectSection, ObjectSymbol, SymbolKind};
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
    strip_to_code_data_and_symbol_table(
        &kernel,
        &booted_kernel,
        &out_dir.join("kernel-symbols.ksyms"),
    );
    relocate_for_the_fixed_base(&booted_kernel);
    let mut builder = DiskImageBuilder::new(booted_kernel.clone());
    builder.set_boot_config(&boot_config());
    builder.create_bios_image(&bios_image).expect("creating the BIOS image");
    move_the_bios_loader_stacks(&bios_image);
    builder.create_uefi_image(&uefi_image).expect("creating the UEFI image");
    println!("cargo:rustc-env=EXTREGS_BIOS_IMAGE={}", bios_image.display());
    println!("cargo:rustc-env=EXTREGS_UEFI_IMAGE={}", uefi_image.display());
    println!("cargo:rustc-env=EXTREGS_KERNEL_ELF={}", kernel.display());
    println!("cargo:rustc-env=EXTREGS_BOOTED_KERNEL_ELF={}", booted_kernel.display());
}

/// Copies the ELF at `from` to `to` with nothing but its loadable sections
/// and, in section `extregs_ksyms::SECTION`, its function symbols as an
/// `extregs-ksyms` table (written to `table`): what the kernel's
/// `debug::symbols::lookup` reads. The names are demangled here (`{:#}`,
/// without hashes), so the kernel prints them as they are. The DWARF, the
/// ELF symbol table and the rest go. `$EXTREGS_OBJCOPY`, or binutils'
/// `objcopy` (which `make` installs).
fn strip_to_code_data_and_symbol_table(from: &Path, to: &Path, table: &Path) {
    println!("cargo:rerun-if-env-changed=EXTREGS_OBJCOPY");
    let elf = std::fs::read(from).unwrap_or_else(|error| panic!("{}: {error}", from.display()));
    let elf = object::File::parse(&*elf)
        .unwrap_or_else(|error| panic!("{} is not an ELF: {error}", from.display()));
    let functions: Vec<(u64, u64, String)> = elf
        .symbols()
        .filter(|symbol| symbol.kind() == SymbolKind::Text && symbol.size() > 0)
        .map(|symbol| {
            let name = symbol.name().unwrap_or_else(|error| {
                panic!("{}: a function symbol's name: {error}", from.display())
            });
            (symbol.address(), symbol.size(), format!("{:#}", rustc_demangle::demangle(name)))
        })
        .collect();
    assert!(functions.len() > 100, "{} has {} function symbols", from.display(), functions.len());
    let given: Vec<(u64, u64, &str)> =
        functions.iter().map(|(start, size, name)| (*start, *size, name.as_str())).collect();
    let encoded = extregs_ksyms::encode(&given).unwrap_or_else(|error| {
        panic!("{}: its function symbols can't go in a symbol table: {error:?}", from.display())
    });
    std::fs::write(table, encoded).unwrap_or_else(|error| panic!("{}: {error}", table.display()));
    let objcopy = std::env::var("EXTREGS_OBJCOPY").unwrap_or_else(|_| "objcopy".into());
    let status = std::process::Command::new(&objcopy)
        .arg("--strip-all")
        .arg("--add-section")
        .arg(format!("{}={}", extregs_ksyms::SECTION, table.display()))
        .arg("--set-section-flags")
        .arg(format!("{}=readonly", extregs_ksyms::SECTION))
        .arg(from)
        .arg(to)
        .status()
        .unwrap_or_else(|error| panic!("cannot run {objcopy} (binutils is needed): {error}"));
    assert!(status.success(), "{objcopy} --strip-all {} failed: {status}", from.display());
    // The table on pages of its own: the loader maps writable segments
    // onto the file's frames, and the kernel reads the table only from
    // pages no such segment covers (`debug::symbols::init`). A second
    // pass: objcopy does not align a section it adds in the same run.
    let status = std::process::Command::new(&objcopy)
        .arg("--set-section-alignment")
        .arg(format!("{}=4096", extregs_ksyms::SECTION))
        .arg(to)
        .status()
        .unwrap_or_else(|error| panic!("cannot run {objcopy}: {error}"));
    assert!(status.success(), "{objcopy} --set-section-alignment {} failed", to.display());
}

/// Applies the booted kernel's packed relative relocations (`DT_RELR`,
/// which the loader does not know) for the load address its
/// `BOOTLOADER_CONFIG` fixes, in place (`extregs-prelink`).
fn relocate_for_the_fixed_base(booted: &Path) {
    let elf = std::fs::read(booted).unwrap_or_else(|error| panic!("{}: {error}", booted.display()));
    let config = object::File::parse(&*elf)
        .ok()
        .and_then(|file| {
            file.section_by_name(".bootloader-config")?.data().ok().map(<[u8]>::to_vec)
        })
        .unwrap_or_else(|| panic!("{} has no .bootloader-config section", booted.display()));
    let config = bootloader_api::BootloaderConfig::deserialize(&config)
        .unwrap_or_else(|error| panic!("{}: its loader config: {error}", booted.display()));
    let bootloader_api::config::Mapping::FixedAddress(base) = config.mappings.kernel_base else {
        panic!(
            "{}: BOOTLOADER_CONFIG must fix mappings.kernel_base: the build applies the kernel's \
             DT_RELR relocations for that address",
            booted.display()
        )
    };
    let prelinked = extregs_prelink::prelink(&elf, base)
        .unwrap_or_else(|error| panic!("{}: can't relocate it: {error}", booted.display()));
    std::fs::write(booted, prelinked.file)
        .unwrap_or_else(|error| panic!("{}: {error}", booted.display()));
}

/// Moves the BIOS loader's stacks off the page its boot sector runs from
/// (`extregs-loader-stack`): under TCG, every store to a page that holds
/// translated code takes QEMU's self-modifying-code path, and the stock
/// stack cost about 0.7 s of every BIOS boot (docs/boot.md, "Fourth pass").
fn move_the_bios_loader_stacks(image: &Path) {
    let mut bytes =
        std::fs::read(image).unwrap_or_else(|error| panic!("{}: {error}", image.display()));
    extregs_loader_stack::move_stacks(&mut bytes).unwrap_or_else(|error| {
        panic!("{}: can't move the BIOS loader's stacks: {error}", image.display())
    });
    std::fs::write(image, bytes).unwrap_or_else(|error| panic!("{}: {error}", image.display()));
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
