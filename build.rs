//! Builds the BIOS and UEFI boot images from the kernel artifact (bootloader
//! 0.11) and hands their paths, and the kernel ELF's, to the runner.

use bootloader::DiskImageBuilder;
use std::path::PathBuf;

fn main() {
    let kernel = PathBuf::from(
        std::env::var_os("CARGO_BIN_FILE_EXTREGS_KERNEL_kernel")
            .expect("cargo provides the kernel artifact (bindeps)"),
    );
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let bios_image = out_dir.join("extregs-bios.img");
    let uefi_image = out_dir.join("extregs-uefi.img");
    let builder = DiskImageBuilder::new(kernel.clone());
    builder.create_bios_image(&bios_image).expect("creating the BIOS image");
    builder.create_uefi_image(&uefi_image).expect("creating the UEFI image");
    println!("cargo:rustc-env=EXTREGS_BIOS_IMAGE={}", bios_image.display());
    println!("cargo:rustc-env=EXTREGS_UEFI_IMAGE={}", uefi_image.display());
    println!("cargo:rustc-env=EXTREGS_KERNEL_ELF={}", kernel.display());
}
