//! The asm-offsets generator: Linux's `arch/x86/kernel/asm-offsets_64.c` plus
//! the Kbuild `sed` step, in Rust.
//!
//! Build scripts (which run on the host) call [`write_all`]. It reads the
//! layout of the `extregs-regs` types with `offset_of!`/`size_of` and writes
//! three files into `OUT_DIR`:
//!
//! * `asm-offsets.S`: `.set NAME, value` lines that the entry assembly
//!   includes in front of its source, so no offset is typed by hand;
//! * `asm-offsets.h`: the same constants as a readable C-style header, for
//!   people and outside tools (`#define PTREGS_R15 0 /* offsetof(...) */`);
//! * `asm_offsets.rs`: the same constants as Rust `pub const`s, so target code
//!   can assert at compile time that the generated values match the layout it
//!   was itself compiled with.
//!
//! The host and `x86_64-unknown-none` agree on the layout of these `repr(C)`
//! structs of `u64`/`u32`/`u16`/`u8`; the Rust constants make that a checked
//! fact rather than an assumption.

use core::mem::size_of;
use extregs_regs::{
    nmi_state, selectors, ArchExtRegs, ExtendedPtRegs, GenericExtRegs, InactiveTaskFrame,
    IretFrame, IstTop, NmiStackTop, PerCpuEntry, PtRegs, ThreadContext, ENCODED_FRAME_TAG,
    ENTRY_SYSCALL, ENTRY_VECTOR_RECORDED, FIRST_EXTERNAL_VECTOR, IST_BLOCK_SIZE, MSR_GS_BASE,
    NMI_VECTOR, NR_CPUS, NR_VECTORS,
};
use memoffset::offset_of;
use std::fmt::Write as _;
use std::io;
use std::path::Path;

/// One generated constant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AsmConstant {
    /// Assembler symbol, e.g. `PTREGS_R15`.
    pub name: String,
    pub value: usize,
    /// What the value is, for the header's comment.
    pub meaning: String,
}

fn constant(name: &str, value: usize, meaning: &str) -> AsmConstant {
    AsmConstant { name: name.to_string(), value, meaning: meaning.to_string() }
}

macro_rules! ptregs_offsets {
    ($($field:ident),+ $(,)?) => {
        [$((stringify!($field), offset_of!(PtRegs, $field))),+]
    };
}

/// The extension sizes `extregs bench` grows the state to (bytes): Weiny's
/// "the struct will grow", measured.
pub const BENCH_EXTENSION_SIZES: [usize; 5] = [8, 16, 32, 64, 128];

/// Every constant the entry assembly may use, computed from the types.
pub fn constants() -> Vec<AsmConstant> {
    let mut constants = Vec::new();
    let fields = ptregs_offsets!(
        r15, r14, r13, r12, bp, bx, r11, r10, r9, r8, ax, cx, dx, si, di, orig_ax, ip, cs, flags,
        sp, ss,
    );
    for (field, offset) in fields {
        constants.push(constant(
            &format!("PTREGS_{}", field.to_uppercase()),
            offset,
            &format!("offsetof(struct pt_regs, {field})"),
        ));
    }
    constants.push(constant("PTREGS_SIZE", size_of::<PtRegs>(), "sizeof(struct pt_regs)"));
    constants.push(constant(
        "GENERIC_PTREGS_SIZE",
        size_of::<ExtendedPtRegs>() - size_of::<PtRegs>(),
        "sizeof(struct extended_pt_regs) - sizeof(struct pt_regs): the extension below pt_regs",
    ));
    constants.push(constant(
        "CALL_PAD_BELOW_PTREGS",
        (16 - size_of::<PtRegs>() % 16) % 16,
        "bytes a stub with only pt_regs on the stack adds so its call is 16-byte aligned",
    ));
    for bytes in BENCH_EXTENSION_SIZES {
        // The size series of `extregs bench`: an extension of `bytes`
        // directly below pt_regs, then the pad that aligns the call.
        let below = size_of::<PtRegs>() + bytes;
        constants.push(constant(
            &format!("BENCH_BELOW_FRAME_{bytes}"),
            bytes + (16 - below % 16) % 16,
            &format!("a {bytes}-byte extension below pt_regs plus the pad to a 16-byte call"),
        ));
        // Above the CPU frame: what the caller leaves free above it (FRED's
        // CPU would), with room for the CPU's 16-byte alignment of RSP.
        constants.push(constant(
            &format!("BENCH_ABOVE_RESERVE_{bytes}"),
            (bytes + 16).div_ceil(16) * 16,
            &format!("stack kept free above the CPU frame for a {bytes}-byte extension"),
        ));
    }
    constants.push(constant(
        "EXTENDED_PTREGS_SIZE",
        size_of::<ExtendedPtRegs>(),
        "sizeof(struct extended_pt_regs)",
    ));
    constants.push(constant(
        "EXTREGS_GENERIC",
        offset_of!(ExtendedPtRegs, generic),
        "offsetof(struct extended_pt_regs, generic)",
    ));
    constants.push(constant(
        "EXTREGS_GENERIC_EXIT_RCU",
        offset_of!(ExtendedPtRegs, generic) + offset_of!(GenericExtRegs, exit_rcu),
        "offsetof(struct extended_pt_regs, generic.exit_rcu)",
    ));
    constants.push(constant(
        "EXTREGS_GENERIC_LOCKDEP_HARDIRQS_ENABLED",
        offset_of!(ExtendedPtRegs, generic) + offset_of!(GenericExtRegs, lockdep_hardirqs_enabled),
        "offsetof(struct extended_pt_regs, generic.lockdep_hardirqs_enabled)",
    ));
    constants.push(constant(
        "EXTREGS_GENERIC_VECTOR",
        offset_of!(ExtendedPtRegs, generic) + offset_of!(GenericExtRegs, vector),
        "offsetof(struct extended_pt_regs, generic.vector)",
    ));
    constants.push(constant(
        "EXTREGS_ARCH_PKS",
        offset_of!(ExtendedPtRegs, arch) + offset_of!(ArchExtRegs, pks),
        "offsetof(struct extended_pt_regs, arch.pks)",
    ));
    constants.push(constant(
        "EXTREGS_REGS",
        offset_of!(ExtendedPtRegs, regs),
        "offsetof(struct extended_pt_regs, regs)",
    ));
    for (field, offset) in [
        ("ip", offset_of!(IretFrame, ip)),
        ("cs", offset_of!(IretFrame, cs)),
        ("flags", offset_of!(IretFrame, flags)),
        ("sp", offset_of!(IretFrame, sp)),
        ("ss", offset_of!(IretFrame, ss)),
    ] {
        constants.push(constant(
            &format!("IRET_FRAME_{}", field.to_uppercase()),
            offset,
            &format!("offsetof(struct iret_frame, {field})"),
        ));
    }
    constants.push(constant(
        "IRET_FRAME_SIZE",
        size_of::<IretFrame>(),
        "sizeof(struct iret_frame)",
    ));
    for (field, offset) in [
        ("iret_copy", offset_of!(NmiStackTop, iret_copy)),
        ("scratch", offset_of!(NmiStackTop, scratch)),
        ("landing", offset_of!(NmiStackTop, landing)),
    ] {
        constants.push(constant(
            &format!("NMI_TOP_{}", field.to_uppercase()),
            offset,
            &format!("offsetof(struct nmi_stack_top, {field})"),
        ));
    }
    constants.push(constant(
        "NMI_TOP_NMI_STATE",
        offset_of!(NmiStackTop, ist_top) + offset_of!(IstTop, nmi_state),
        "offsetof(struct nmi_stack_top, ist_top.nmi_state): this CPU's NMI nesting state",
    ));
    constants.push(constant(
        "IST_BLOCK_SIZE",
        IST_BLOCK_SIZE,
        "the size and alignment of an IST stack's block: rsp & -IST_BLOCK_SIZE is its start",
    ));
    constants.push(constant(
        "IST_BLOCK_PER_CPU",
        IST_BLOCK_SIZE - size_of::<IstTop>() + offset_of!(IstTop, per_cpu),
        "offset in an IST block of ist_top.per_cpu: this CPU's GS area, found without GS",
    ));
    constants.push(constant(
        "NMI_TOP_SIZE",
        size_of::<NmiStackTop>(),
        "sizeof(struct nmi_stack_top): what the NMI IST stack keeps above the outermost PtRegs",
    ));
    for (field, offset) in [
        ("r15", offset_of!(InactiveTaskFrame, r15)),
        ("r14", offset_of!(InactiveTaskFrame, r14)),
        ("r13", offset_of!(InactiveTaskFrame, r13)),
        ("r12", offset_of!(InactiveTaskFrame, r12)),
        ("bx", offset_of!(InactiveTaskFrame, bx)),
        ("bp", offset_of!(InactiveTaskFrame, bp)),
        ("ret_addr", offset_of!(InactiveTaskFrame, ret_addr)),
    ] {
        constants.push(constant(
            &format!("INACTIVE_TASK_FRAME_{}", field.to_uppercase()),
            offset,
            &format!("offsetof(struct inactive_task_frame, {field})"),
        ));
    }
    constants.push(constant(
        "THREAD_SP",
        offset_of!(ThreadContext, sp),
        "offsetof(struct thread_struct, sp): a switched-out task's stack pointer",
    ));
    for (field, offset) in [
        ("top_of_stack", offset_of!(PerCpuEntry, top_of_stack)),
        ("user_rsp_scratch", offset_of!(PerCpuEntry, user_rsp_scratch)),
        ("ist_scratch", offset_of!(PerCpuEntry, ist_scratch)),
        ("self_address", offset_of!(PerCpuEntry, self_address)),
        ("cpu", offset_of!(PerCpuEntry, cpu)),
        ("apic_id", offset_of!(PerCpuEntry, apic_id)),
    ] {
        constants.push(constant(
            &format!("PERCPU_{}", field.to_uppercase()),
            offset,
            &format!("offsetof(struct per_cpu_entry, {field}): %gs-relative"),
        ));
    }
    constants.push(constant(
        "PERCPU_SIZE",
        size_of::<PerCpuEntry>(),
        "sizeof(struct per_cpu_entry)",
    ));
    for (name, value) in [
        ("KERNEL_CS", selectors::KERNEL_CS),
        ("KERNEL_DS", selectors::KERNEL_DS),
        ("USER_CS", selectors::USER_CS),
        ("USER_DS", selectors::USER_DS),
    ] {
        constants.push(constant(
            &format!("__{name}"),
            usize::from(value),
            &format!("segment selector __{name}"),
        ));
    }
    constants.push(constant("NR_CPUS", NR_CPUS, "the most CPUs: the per-CPU arrays' length"));
    constants.push(constant("MSR_GS_BASE", MSR_GS_BASE as usize, "MSR_GS_BASE: the live GS base"));
    constants.push(constant(
        "ENCODED_FRAME_TAG",
        ENCODED_FRAME_TAG as usize,
        "the tag bit of RBP = &PtRegs | tag, which marks an interrupt frame for unwinders",
    ));
    constants.push(constant(
        "ENTRY_VECTOR_RECORDED",
        usize::from(ENTRY_VECTOR_RECORDED),
        "generic.vector = this | the IDT vector that entered the frame",
    ));
    constants.push(constant(
        "ENTRY_SYSCALL",
        usize::from(ENTRY_SYSCALL),
        "generic.vector of a frame entry_SYSCALL_64 built",
    ));
    constants.push(constant("NMI_VECTOR", usize::from(NMI_VECTOR), "the NMI's vector"));
    constants.push(constant(
        "FIRST_EXTERNAL_VECTOR",
        usize::from(FIRST_EXTERNAL_VECTOR),
        "the first vector of an external interrupt",
    ));
    constants.push(constant("NR_VECTORS", NR_VECTORS, "number of IDT vectors"));
    for (name, value) in [
        ("IDLE", nmi_state::IDLE),
        ("RUNNING", nmi_state::RUNNING),
        ("PENDING", nmi_state::PENDING),
    ] {
        constants.push(constant(
            &format!("NMI_STATE_{name}"),
            usize::from(value),
            &format!("NMI nesting state value: {}", name.to_lowercase()),
        ));
    }
    constants
}

/// The assembler include: one `.set` per constant.
pub fn assembler_source(constants: &[AsmConstant]) -> String {
    let mut text = String::from("/* Generated by asm-offsets from extregs-regs. Do not edit. */\n");
    for c in constants {
        writeln!(text, ".set {}, {}", c.name, c.value).expect("writing to a String cannot fail");
    }
    text
}

/// The readable header, in the style of Linux's generated `asm-offsets.h`.
pub fn header(constants: &[AsmConstant]) -> String {
    let mut text = String::from(
        "/* SPDX-License-Identifier: MIT OR Apache-2.0 */\n\
         #ifndef __EXTREGS_ASM_OFFSETS_H__\n#define __EXTREGS_ASM_OFFSETS_H__\n\
         /*\n * Generated by asm-offsets from the extregs-regs types. Do not edit.\n */\n\n",
    );
    for c in constants {
        writeln!(text, "#define {:<42} {:>3} /* {} */", c.name, c.value, c.meaning)
            .expect("writing to a String cannot fail");
    }
    text.push_str("\n#endif\n");
    text
}

/// The same constants as Rust items, for compile-time cross-checks.
pub fn rust_source(constants: &[AsmConstant]) -> String {
    let mut text = String::from("// Generated by asm-offsets from extregs-regs. Do not edit.\n");
    for c in constants {
        writeln!(text, "/// {}\npub const {}: usize = {};", c.meaning, c.name, c.value)
            .expect("writing to a String cannot fail");
    }
    text
}

/// Writes `asm-offsets.S`, `asm-offsets.h` and `asm_offsets.rs` into `out_dir`.
pub fn write_all(out_dir: &Path) -> io::Result<()> {
    let constants = constants();
    std::fs::write(out_dir.join("asm-offsets.S"), assembler_source(&constants))?;
    std::fs::write(out_dir.join("asm-offsets.h"), header(&constants))?;
    std::fs::write(out_dir.join("asm_offsets.rs"), rust_source(&constants))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use extregs_regs::GENERIC_PTREGS_SIZE;

    fn value_of(name: &str) -> usize {
        constants()
            .into_iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("{name} not generated"))
            .value
    }

    #[test]
    fn generated_values_equal_offset_of() {
        assert_eq!(value_of("PTREGS_R15"), offset_of!(PtRegs, r15));
        assert_eq!(value_of("PTREGS_BP"), offset_of!(PtRegs, bp));
        assert_eq!(value_of("PTREGS_DI"), offset_of!(PtRegs, di));
        assert_eq!(value_of("PTREGS_ORIG_AX"), offset_of!(PtRegs, orig_ax));
        assert_eq!(value_of("PTREGS_IP"), offset_of!(PtRegs, ip));
        assert_eq!(value_of("PTREGS_SS"), offset_of!(PtRegs, ss));
        assert_eq!(value_of("PTREGS_SIZE"), size_of::<PtRegs>());
        assert_eq!(value_of("GENERIC_PTREGS_SIZE"), GENERIC_PTREGS_SIZE);
        assert_eq!(value_of("EXTREGS_ARCH_PKS"), offset_of!(ExtendedPtRegs, arch));
        assert_eq!(value_of("EXTREGS_REGS"), GENERIC_PTREGS_SIZE);
    }

    #[test]
    fn bench_size_frames_keep_the_call_aligned() {
        for bytes in BENCH_EXTENSION_SIZES {
            let below = value_of(&format!("BENCH_BELOW_FRAME_{bytes}"));
            assert!(below >= bytes && below < bytes + 16, "{bytes}: {below}");
            assert!((size_of::<PtRegs>() + below).is_multiple_of(16), "{bytes}");
            let above = value_of(&format!("BENCH_ABOVE_RESERVE_{bytes}"));
            // Room for the state even when the CPU aligns RSP down by 8.
            assert!(above >= bytes + 8 && above.is_multiple_of(16), "{bytes}: {above}");
        }
        // The 8-byte size is the real extension's.
        assert_eq!(value_of("BENCH_BELOW_FRAME_8"), GENERIC_PTREGS_SIZE);
    }

    #[test]
    fn every_ptregs_field_has_a_distinct_word_offset() {
        let mut offsets: Vec<usize> = constants()
            .iter()
            .filter(|c| c.name.starts_with("PTREGS_") && c.name != "PTREGS_SIZE")
            .map(|c| c.value)
            .collect();
        assert_eq!(offsets.len(), 21);
        offsets.sort_unstable();
        assert_eq!(offsets, (0..21).map(|i| i * 8).collect::<Vec<_>>());
    }

    /// The entry assembly must take every frame offset from the generated
    /// constants: no memory operand may start with a number (`8(%rsp)`), and
    /// no `sub`/`add` on RSP may use a literal size.
    #[test]
    fn entry_assembly_has_no_numeric_frame_offsets() {
        for (file, source) in [
            ("entry_64.S", include_str!("../../crates/entry-asm/src/entry_64.S")),
            ("calling.S", include_str!("../../crates/entry-asm/src/calling.S")),
            ("bench_64.S", include_str!("../../crates/bench/src/bench_64.S")),
            ("switch_64.S", include_str!("../../crates/entry-asm/src/switch_64.S")),
        ] {
            assert_no_numeric_frame_offsets(file, source);
        }
    }

    fn assert_no_numeric_frame_offsets(file: &str, source: &str) {
        let mut in_comment = false;
        for (number, line) in source.lines().enumerate() {
            let mut code = String::new();
            let mut rest = line;
            while !rest.is_empty() {
                if in_comment {
                    match rest.find("*/") {
                        Some(end) => {
                            rest = &rest[end + 2..];
                            in_comment = false;
                        }
                        None => rest = "",
                    }
                } else {
                    match rest.find("/*") {
                        Some(start) => {
                            code.push_str(&rest[..start]);
                            rest = &rest[start + 2..];
                            in_comment = true;
                        }
                        None => {
                            code.push_str(rest);
                            rest = "";
                        }
                    }
                }
            }
            for (index, _) in code.match_indices("(%") {
                let displacement = code[..index]
                    .rsplit(|c: char| c.is_whitespace() || c == ',')
                    .next()
                    .unwrap_or("");
                assert!(
                    !displacement.starts_with(|c: char| c.is_ascii_digit() || c == '-'),
                    "{}:{}: numeric offset in `{}`",
                    file,
                    number + 1,
                    code.trim()
                );
            }
            let adjusts_rsp =
                (code.contains("subq") || code.contains("addq")) && code.contains("%rsp");
            let literal_immediate = code
                .match_indices('$')
                .any(|(index, _)| code[index + 1..].starts_with(|c: char| c.is_ascii_digit()));
            assert!(
                !(adjusts_rsp && literal_immediate),
                "{}:{}: literal stack adjustment in `{}`",
                file,
                number + 1,
                code.trim()
            );
        }
    }

    /// Every `asm!` block (not `global_asm!`) in the kernel and the runner,
    /// as (file, first line, text up to the closing parenthesis).
    fn inline_asm_blocks() -> Vec<(String, usize, String)> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut files = Vec::new();
        let mut pending = vec![root.join("crates/kernel/src"), root.join("src")];
        while let Some(directory) = pending.pop() {
            for entry in std::fs::read_dir(&directory).expect("source directory") {
                let path = entry.expect("directory entry").path();
                if path.is_dir() {
                    pending.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    files.push(path);
                }
            }
        }
        let mut blocks = Vec::new();
        for path in files {
            let source = std::fs::read_to_string(&path).expect("readable source");
            for (start, _) in source.match_indices("asm!(") {
                if source[..start].ends_with("global_") {
                    continue;
                }
                let mut depth = 0;
                let mut end = start;
                for (offset, c) in source[start + 4..].char_indices() {
                    match c {
                        '(' => depth += 1,
                        ')' => depth -= 1,
                        _ => {}
                    }
                    if depth == 0 {
                        end = start + 4 + offset;
                        break;
                    }
                }
                let line = source[..start].lines().count();
                blocks.push((path.display().to_string(), line, source[start..=end].to_string()));
            }
        }
        blocks
    }

    /// An `asm!` block that raises an event or waits for one runs handlers,
    /// and handlers write memory the surrounding Rust reads: such a block
    /// must not promise `nomem` (the compiler could keep values in
    /// registers across it, or move stores over it). Neither may a block
    /// that jumps into entry stubs or calls Rust without declaring the
    /// C ABI's clobbers (the callee may use any caller-saved register,
    /// SSE and AVX included).
    #[test]
    fn inline_asm_that_runs_handlers_declares_what_they_touch() {
        let raises_events = ["int3", "int $", "int {", "\"int", "hlt", "sti", "ud2", "int1"];
        let blocks = inline_asm_blocks();
        assert!(blocks.len() > 10, "found only {} asm! blocks", blocks.len());
        for (file, line, text) in &blocks {
            if raises_events.iter().any(|needle| text.contains(needle)) {
                assert!(
                    !text.contains("nomem"),
                    "{file}:{line}: an asm! block that runs handlers says nomem:\n{text}"
                );
            }
            let calls_out =
                text.contains("\"call ") || text.contains("\"jmp {") || text.contains("\"call {");
            if calls_out {
                assert!(
                    text.contains("clobber_abi(\"C\")"),
                    "{file}:{line}: an asm! block that calls or jumps into code without clobber_abi(\"C\"):\n{text}"
                );
            }
        }
    }

    #[test]
    fn outputs_name_every_constant() {
        let constants = constants();
        let asm = assembler_source(&constants);
        let header = header(&constants);
        let rust = rust_source(&constants);
        for c in &constants {
            assert!(asm.contains(&format!(".set {}, {}\n", c.name, c.value)), "{}", c.name);
            assert!(header.contains(&format!("#define {:<42} {:>3}", c.name, c.value)));
            assert!(rust.contains(&format!("pub const {}: usize = {};", c.name, c.value)));
        }
    }
}
