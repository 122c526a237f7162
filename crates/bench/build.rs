//! Generates asm-offsets for the benchmark stubs (the same generator the
//! entry stubs use).

fn main() {
    let out_dir =
        std::path::PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    asm_offsets::write_all(&out_dir).expect("writing the generated asm-offsets files");
    // The opt-level the measured stubs' handlers get, for the bench report.
    for key in ["PROFILE", "OPT_LEVEL"] {
        let value = std::env::var(key).unwrap_or_else(|_| "?".into());
        println!("cargo:rustc-env=EXTREGS_BENCH_BUILD_{key}={value}");
    }
    println!("cargo:rerun-if-changed=src/bench_64.S");
    println!("cargo:rerun-if-changed=src/bench_syscall_64.S");
    println!("cargo:rerun-if-changed=../entry-asm/src/calling.S");
    println!("cargo:rerun-if-changed=../regs/src/lib.rs");
    println!("cargo:rerun-if-changed=../../asm-offsets/src/lib.rs");
}
