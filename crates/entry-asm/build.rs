//! Runs the asm-offsets generator, so `entry_64.S` sees only generated
//! constants (Linux's `asm-offsets.h`, made the same way at build time).

fn main() {
    let out_dir =
        std::path::PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    asm_offsets::write_all(&out_dir).expect("writing the generated asm-offsets files");
    println!("cargo:rerun-if-changed=src/entry_64.S");
    println!("cargo:rerun-if-changed=src/calling.S");
    println!("cargo:rerun-if-changed=src/switch_64.S");
    println!("cargo:rerun-if-changed=../regs/src/lib.rs");
    println!("cargo:rerun-if-changed=../../asm-offsets/src/lib.rs");
    // The fuzzer's proof by mutation (see crates/kernel/build.rs).
    println!("cargo::rustc-check-cfg=cfg(fault_injection)");
    println!("cargo:rerun-if-env-changed=EXTREGS_FAULT_INJECTION");
    if std::env::var_os("EXTREGS_FAULT_INJECTION").is_some_and(|value| value == "1") {
        println!("cargo:rustc-cfg=fault_injection");
    }
}
