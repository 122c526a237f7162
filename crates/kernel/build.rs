//! Build-time switch for the fuzzer's proof by mutation: with
//! `EXTREGS_FAULT_INJECTION=1` in the environment, `cfg(fault_injection)`
//! compiles in the named faults that `mode=fuzz inject=NAME` turns on. Normal
//! builds contain none of that code.
//!
//! It also records the build profile and opt-level for `mode=bench`.

fn main() {
    // What this kernel was built as, for `mode=bench` to report (cargo sets
    // OPT_LEVEL per package, after profile overrides).
    for key in ["PROFILE", "OPT_LEVEL", "DEBUG"] {
        let value = std::env::var(key).unwrap_or_else(|_| "?".into());
        println!("cargo:rustc-env=EXTREGS_BUILD_{key}={value}");
    }
    // Relative relocations packed (DT_RELR, a bitmap per 63 words) instead
    // of 24 bytes each in .rela.dyn: the root build script applies them
    // for the fixed load address (`BOOTLOADER_CONFIG`'s `kernel_base`)
    // before the kernel goes into the images, so the BIOS loader, which
    // copies the file a byte at a time, no longer copies 40 KB of
    // relocations (docs/boot.md).
    println!("cargo:rustc-link-arg-bins=-zpack-relative-relocs");
    println!("cargo::rustc-check-cfg=cfg(fault_injection)");
    println!("cargo:rerun-if-env-changed=EXTREGS_FAULT_INJECTION");
    if std::env::var_os("EXTREGS_FAULT_INJECTION").is_some_and(|value| value == "1") {
        println!("cargo:rustc-cfg=fault_injection");
    }
}
