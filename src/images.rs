//! Where the build put the boot images and the kernel ELF.
//!
//! The root build script makes them from the kernel artifact; their paths are
//! compiled into the runner.

use std::path::Path;

/// The BIOS (MBR) disk image.
pub fn bios_image() -> &'static Path {
    Path::new(env!("EXTREGS_BIOS_IMAGE"))
}

/// The UEFI (GPT) disk image.
pub fn uefi_image() -> &'static Path {
    Path::new(env!("EXTREGS_UEFI_IMAGE"))
}

/// The kernel ELF the images were made from (with its symbol table).
pub fn kernel_elf() -> &'static Path {
    Path::new(env!("EXTREGS_KERNEL_ELF"))
}
