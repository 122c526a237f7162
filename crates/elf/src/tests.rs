//! Synthetic ELF files, each broken in one way, against [`plan`].

use super::*;
use proptest::prelude::*;

const USER_END: u64 = 0x7fff_ffff_f000;

/// One program header to write: (type, flags, offset, vaddr, filesz, memsz).
type Header = (u32, u32, u64, u64, u64, u64);

/// An ELF64 x86-64 file of type `elf_type` with these program headers
/// (right after the ELF header) and `length` bytes in all.
fn elf(elf_type: u16, entry: u64, headers: &[Header], length: usize) -> Vec<u8> {
    let mut file = vec![0u8; length.max(64 + headers.len() * 56)];
    file[..4].copy_from_slice(b"\x7fELF");
    file[4] = 2;
    file[5] = 1;
    file[6] = 1;
    file[16..18].copy_from_slice(&elf_type.to_le_bytes());
    file[18..20].copy_from_slice(&EM_X86_64.to_le_bytes());
    file[24..32].copy_from_slice(&entry.to_le_bytes());
    file[32..40].copy_from_slice(&64u64.to_le_bytes());
    file[52..54].copy_from_slice(&64u16.to_le_bytes());
    file[54..56].copy_from_slice(&56u16.to_le_bytes());
    file[56..58].copy_from_slice(&(headers.len() as u16).to_le_bytes());
    for (index, &(kind, flags, offset, vaddr, file_size, memory_size)) in headers.iter().enumerate()
    {
        let at = 64 + index * 56;
        file[at..at + 4].copy_from_slice(&kind.to_le_bytes());
        file[at + 4..at + 8].copy_from_slice(&flags.to_le_bytes());
        file[at + 8..at + 16].copy_from_slice(&offset.to_le_bytes());
        file[at + 16..at + 24].copy_from_slice(&vaddr.to_le_bytes());
        file[at + 32..at + 40].copy_from_slice(&file_size.to_le_bytes());
        file[at + 40..at + 48].copy_from_slice(&memory_size.to_le_bytes());
    }
    file
}

/// A typical static executable: headers and text from offset 0 at
/// 0x400000, data one page on.
fn good() -> Vec<u8> {
    elf(
        ET_EXEC,
        0x401000,
        &[
            (PT_LOAD, PF_R | PF_X, 0, 0x400000, 0x2000, 0x2000),
            (PT_LOAD, PF_R | PF_W, 0x2000, 0x402000, 0x100, 0x3000),
        ],
        0x2100,
    )
}

#[test]
fn a_static_executable_is_planned_at_its_link_addresses() {
    let plan = plan(&good(), USER_END).expect("a good file");
    assert_eq!(plan.segment_count, 2);
    assert_eq!(plan.entry, 0x401000);
    assert_eq!(plan.load_bias, 0);
    assert_eq!(plan.program_headers, 0x400040, "AT_PHDR from the segment that maps offset 64");
    assert_eq!(plan.program_header_count, 2);
    assert_eq!(plan.segments()[1].page_range(), 0x402000..0x405000);
    assert_eq!(plan.end_of_image(), 0x405000);
}

#[test]
fn a_static_pie_is_moved_by_the_base() {
    let file = elf(ET_DYN, 0x1000, &[(PT_LOAD, PF_R | PF_X, 0, 0, 0x2000, 0x2000)], 0x2000);
    let plan = plan(&file, USER_END).expect("static-PIE");
    assert_eq!(plan.entry, STATIC_PIE_BASE + 0x1000);
    assert_eq!(plan.segments()[0].address, STATIC_PIE_BASE);
    assert_eq!(plan.program_headers, STATIC_PIE_BASE + 64);
}

#[test]
fn a_pt_phdr_header_names_the_program_headers() {
    let file = elf(
        ET_EXEC,
        0x401000,
        &[
            (PT_PHDR, PF_R, 64, 0x400040, 112, 112),
            (PT_LOAD, PF_R | PF_X, 0, 0x400000, 0x2000, 0x2000),
        ],
        0x2000,
    );
    assert_eq!(plan(&file, USER_END).unwrap().program_headers, 0x400040);
}

#[test]
fn not_elf_and_other_machines_are_refused() {
    assert_eq!(plan(b"#!/bin/sh\n", USER_END), Err(ElfError::NotElf));
    assert_eq!(plan(b"", USER_END), Err(ElfError::NotElf));
    let mut arm = good();
    arm[18..20].copy_from_slice(&183u16.to_le_bytes());
    assert_eq!(plan(&arm, USER_END), Err(ElfError::NotX86_64 { class: 2, data: 1, machine: 183 }));
    let mut elf32 = good();
    elf32[4] = 1;
    assert!(matches!(plan(&elf32, USER_END), Err(ElfError::NotX86_64 { class: 1, .. })));
    let mut relocatable = good();
    relocatable[16] = 1;
    assert_eq!(plan(&relocatable, USER_END), Err(ElfError::NotExecutable { elf_type: 1 }));
}

#[test]
fn truncated_files_are_refused() {
    let file = good();
    assert!(matches!(plan(&file[..40], USER_END), Err(ElfError::Truncated { needed: 64, .. })));
    assert!(matches!(plan(&file[..100], USER_END), Err(ElfError::Truncated { needed: 176, .. })));
    assert_eq!(plan(&file[..0x2050], USER_END), Err(ElfError::SegmentPastEndOfFile { index: 1 }));
}

#[test]
fn a_dynamic_program_is_refused() {
    let file = elf(
        ET_EXEC,
        0x401000,
        &[
            (PT_INTERP, PF_R, 0x200, 0x400200, 28, 28),
            (PT_LOAD, PF_R | PF_X, 0, 0x400000, 0x2000, 0x2000),
        ],
        0x2000,
    );
    assert_eq!(plan(&file, USER_END), Err(ElfError::Dynamic));
}

#[test]
fn overlapping_segments_are_refused() {
    let file = elf(
        ET_EXEC,
        0x401000,
        &[
            (PT_LOAD, PF_R | PF_X, 0, 0x400000, 0x2000, 0x2000),
            // Starts on the text's last page.
            (PT_LOAD, PF_R | PF_W, 0x1800, 0x401800, 0x100, 0x100),
        ],
        0x2000,
    );
    assert_eq!(plan(&file, USER_END), Err(ElfError::Overlap { first: 0, second: 1 }));
}

#[test]
fn out_of_range_segments_are_refused() {
    let low = elf(ET_EXEC, 0x1000, &[(PT_LOAD, PF_R | PF_X, 0, 0, 0x2000, 0x2000)], 0x2000);
    assert!(matches!(plan(&low, USER_END), Err(ElfError::OutOfRange { index: 0, start: 0, .. })));
    let high = elf(
        ET_EXEC,
        USER_END - 0x1000,
        &[(PT_LOAD, PF_R | PF_X, 0, USER_END - 0x1000, 0x1000, 0x2000)],
        0x1000,
    );
    assert!(matches!(plan(&high, USER_END), Err(ElfError::OutOfRange { .. })));
    let wrapping = elf(
        ET_EXEC,
        0x401000,
        &[(PT_LOAD, PF_R | PF_X, 0, 0x400000, 0x1000, u64::MAX - 0x1000)],
        0x1000,
    );
    assert!(matches!(plan(&wrapping, USER_END), Err(ElfError::OutOfRange { .. })));
    let kernel = elf(
        ET_EXEC,
        0xffff_8000_0000_1000,
        &[(PT_LOAD, PF_R | PF_X, 0, 0xffff_8000_0000_0000, 0x2000, 0x2000)],
        0x2000,
    );
    assert!(matches!(plan(&kernel, USER_END), Err(ElfError::OutOfRange { .. })));
}

#[test]
fn other_malformed_segments_are_refused() {
    let mut bigger_in_file = good();
    // Segment 1's filesz (at 64 + 56 + 32) above its memsz.
    bigger_in_file[152..160].copy_from_slice(&0x4000u64.to_le_bytes());
    assert!(plan(&bigger_in_file, USER_END).is_err());
    let misaligned =
        elf(ET_EXEC, 0x401000, &[(PT_LOAD, PF_R | PF_X, 0x10, 0x400000, 0x100, 0x100)], 0x2000);
    assert_eq!(plan(&misaligned, USER_END), Err(ElfError::Misaligned { index: 0 }));
    let no_text =
        elf(ET_EXEC, 0x401000, &[(PT_LOAD, PF_R | PF_W, 0, 0x400000, 0x2000, 0x2000)], 0x2000);
    assert_eq!(plan(&no_text, USER_END), Err(ElfError::EntryOutsideText { entry: 0x401000 }));
    let none = elf(ET_EXEC, 0x401000, &[], 0x2000);
    assert_eq!(plan(&none, USER_END), Err(ElfError::SegmentCount { count: 0 }));
    let mut bad_size = good();
    bad_size[54] = 32;
    assert_eq!(plan(&bad_size, USER_END), Err(ElfError::BadProgramHeaderSize { size: 32 }));
}

proptest! {
    /// Whatever the bytes, the planner answers (no panic), and every plan
    /// it gives keeps its segments inside the file and user space.
    #[test]
    fn any_bytes_give_an_answer(mut bytes in proptest::collection::vec(any::<u8>(), 0..512), keep_header in any::<bool>()) {
        if keep_header && bytes.len() >= 64 {
            let header = good();
            bytes[..20].copy_from_slice(&header[..20]);
        }
        if let Ok(plan) = plan(&bytes, USER_END) {
            for segment in plan.segments() {
                prop_assert!(segment.file_offset + segment.file_size <= bytes.len() as u64);
                prop_assert!(segment.page_range().end <= USER_END);
                prop_assert!(segment.address >= MIN_ADDRESS);
            }
        }
    }
}
