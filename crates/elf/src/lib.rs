//! The load plan of a static x86-64 ELF executable, for `execve`.
//!
//! The kernel's exec hands this crate the file's bytes and gets back what
//! to map where ([`LoadPlan`]): each `PT_LOAD` segment's user range, file
//! bytes and rights, the entry point, and where the program headers land
//! (for `AT_PHDR`). Nothing in the file is trusted: the header, every
//! program header and every segment is checked against the file's length
//! and the user address range before anything is mapped, the way Linux's
//! `load_elf_binary` refuses a file rather than half-loading it.
//!
//! Served: `ET_EXEC` at its link addresses, and `ET_DYN` without
//! `PT_INTERP` (static-PIE), moved by [`STATIC_PIE_BASE`]. Refused with a
//! reason ([`ElfError`]): anything not ELF64 little-endian x86-64, a
//! dynamically linked program (`PT_INTERP`), truncated headers or
//! segments, a segment larger in the file than in memory, segments whose
//! pages overlap in memory, a segment outside `[MIN_ADDRESS,
//! user_end)`, and an entry point outside every executable segment.
//! Nothing is allocated.

#![cfg_attr(not(test), no_std)]

/// The lowest address a segment may use (Linux's default
/// `mmap_min_addr`, 64 KiB): page 0 stays unmapped.
pub const MIN_ADDRESS: u64 = 0x1_0000;
/// Where a static-PIE (`ET_DYN`) program's address 0 goes (Linux's
/// `ELF_ET_DYN_BASE` area, without randomisation).
pub const STATIC_PIE_BASE: u64 = 0x5555_5555_4000;
/// The most `PT_LOAD` segments a program may have.
pub const MAX_SEGMENTS: usize = 16;
/// The page size segments are laid out in.
pub const PAGE_SIZE: u64 = 4096;

const ELF_HEADER_SIZE: usize = 64;
const PROGRAM_HEADER_SIZE: usize = 56;
const ET_EXEC: u16 = 2;
const ET_DYN: u16 = 3;
const EM_X86_64: u16 = 62;
const PT_LOAD: u32 = 1;
const PT_INTERP: u32 = 3;
const PT_PHDR: u32 = 6;

/// Segment rights (`p_flags`).
pub const PF_X: u32 = 1;
pub const PF_W: u32 = 2;
pub const PF_R: u32 = 4;

/// Why a file can't be executed. Each names the first problem found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElfError {
    /// No `\x7fELF` at the start.
    NotElf,
    /// ELF, but not 64-bit little-endian x86-64 (`class`, `data` and
    /// `machine` as found).
    NotX86_64 { class: u8, data: u8, machine: u16 },
    /// Neither `ET_EXEC` nor `ET_DYN`.
    NotExecutable { elf_type: u16 },
    /// The file ends inside the ELF header or the program headers.
    Truncated { needed: u64, length: u64 },
    /// `e_phentsize` is not 56.
    BadProgramHeaderSize { size: u16 },
    /// `PT_INTERP`: a dynamically linked program.
    Dynamic,
    /// No `PT_LOAD` segment, or more than [`MAX_SEGMENTS`].
    SegmentCount { count: usize },
    /// Segment `index`'s file bytes run past the end of the file.
    SegmentPastEndOfFile { index: usize },
    /// Segment `index` has more bytes in the file than in memory.
    FileSizeAboveMemorySize { index: usize },
    /// Segment `index`'s offset and address disagree modulo the page.
    Misaligned { index: usize },
    /// Segment `index` reaches outside `[MIN_ADDRESS, user_end)`.
    OutOfRange { index: usize, start: u64, end: u64 },
    /// Segments `first` and `second` share a page of memory.
    Overlap { first: usize, second: usize },
    /// The entry point is in no executable segment.
    EntryOutsideText { entry: u64 },
}

impl core::fmt::Display for ElfError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            ElfError::NotElf => f.write_str("not an ELF file"),
            ElfError::NotX86_64 { class, data, machine } => write!(
                f,
                "not an x86-64 ELF64 little-endian file (class {class}, data {data}, machine {machine})"
            ),
            ElfError::NotExecutable { elf_type } => {
                write!(f, "ELF type {elf_type} is neither ET_EXEC nor ET_DYN")
            }
            ElfError::Truncated { needed, length } => {
                write!(f, "truncated: the headers need {needed} bytes, the file has {length}")
            }
            ElfError::BadProgramHeaderSize { size } => {
                write!(f, "program header size {size}, not {PROGRAM_HEADER_SIZE}")
            }
            ElfError::Dynamic => f.write_str("dynamically linked (PT_INTERP): link it -static"),
            ElfError::SegmentCount { count } => {
                write!(f, "{count} PT_LOAD segments (1 to {MAX_SEGMENTS} are served)")
            }
            ElfError::SegmentPastEndOfFile { index } => {
                write!(f, "segment {index} runs past the end of the file")
            }
            ElfError::FileSizeAboveMemorySize { index } => {
                write!(f, "segment {index} has a file size above its memory size")
            }
            ElfError::Misaligned { index } => {
                write!(f, "segment {index}'s offset and address differ modulo the page size")
            }
            ElfError::OutOfRange { index, start, end } => {
                write!(f, "segment {index} at {start:#x}..{end:#x} is outside user space")
            }
            ElfError::Overlap { first, second } => {
                write!(f, "segments {first} and {second} overlap in memory")
            }
            ElfError::EntryOutsideText { entry } => {
                write!(f, "entry point {entry:#x} is in no executable segment")
            }
        }
    }
}

/// One `PT_LOAD` segment, moved to its load address.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Segment {
    /// The user address of the segment's first byte.
    pub address: u64,
    /// Bytes in memory; those past `file_size` are zero.
    pub memory_size: u64,
    /// Where its bytes start in the file.
    pub file_offset: u64,
    pub file_size: u64,
    /// `PF_R | PF_W | PF_X`.
    pub flags: u32,
}

impl Segment {
    /// `[first page, end of last page)` of the segment in memory.
    pub fn page_range(&self) -> core::ops::Range<u64> {
        let start = self.address & !(PAGE_SIZE - 1);
        let end = (self.address + self.memory_size).next_multiple_of(PAGE_SIZE);
        start..end
    }
}

/// What exec maps, and what the initial stack's auxv reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadPlan {
    pub segments: [Segment; MAX_SEGMENTS],
    pub segment_count: usize,
    /// The entry point (moved, for static-PIE).
    pub entry: u64,
    /// `AT_PHDR`: the program headers' user address (0 if no segment maps
    /// them).
    pub program_headers: u64,
    /// `AT_PHNUM`.
    pub program_header_count: u16,
    /// The amount every address was moved by (0 for `ET_EXEC`).
    pub load_bias: u64,
}

impl LoadPlan {
    /// The segments, in file order.
    pub fn segments(&self) -> &[Segment] {
        &self.segments[..self.segment_count]
    }

    /// The end of the highest segment, page aligned: where `brk` starts.
    pub fn end_of_image(&self) -> u64 {
        self.segments().iter().map(|segment| segment.page_range().end).max().unwrap_or(0)
    }
}

fn u16_at(bytes: &[u8], offset: usize) -> u16 {
    u16::from_le_bytes([bytes[offset], bytes[offset + 1]])
}

fn u32_at(bytes: &[u8], offset: usize) -> u32 {
    u32::from_le_bytes(bytes[offset..offset + 4].try_into().expect("4 bytes"))
}

fn u64_at(bytes: &[u8], offset: usize) -> u64 {
    u64::from_le_bytes(bytes[offset..offset + 8].try_into().expect("8 bytes"))
}

/// Checks `file` and plans its load into user space `[MIN_ADDRESS,
/// user_end)`.
pub fn plan(file: &[u8], user_end: u64) -> Result<LoadPlan, ElfError> {
    let length = file.len() as u64;
    if file.len() < 4 || &file[..4] != b"\x7fELF" {
        return Err(ElfError::NotElf);
    }
    if file.len() < ELF_HEADER_SIZE {
        return Err(ElfError::Truncated { needed: ELF_HEADER_SIZE as u64, length });
    }
    let (class, data, machine) = (file[4], file[5], u16_at(file, 18));
    if class != 2 || data != 1 || machine != EM_X86_64 {
        return Err(ElfError::NotX86_64 { class, data, machine });
    }
    let elf_type = u16_at(file, 16);
    if elf_type != ET_EXEC && elf_type != ET_DYN {
        return Err(ElfError::NotExecutable { elf_type });
    }
    let entry = u64_at(file, 24);
    let program_header_offset = u64_at(file, 32);
    let program_header_size = u16_at(file, 54);
    let program_header_count = u16_at(file, 56);
    if program_header_size as usize != PROGRAM_HEADER_SIZE {
        return Err(ElfError::BadProgramHeaderSize { size: program_header_size });
    }
    let headers_end = program_header_offset
        .checked_add(u64::from(program_header_count) * PROGRAM_HEADER_SIZE as u64)
        .filter(|&end| end <= length)
        .ok_or(ElfError::Truncated {
            needed: program_header_offset
                .saturating_add(u64::from(program_header_count) * PROGRAM_HEADER_SIZE as u64),
            length,
        })?;
    let load_bias = if elf_type == ET_DYN { STATIC_PIE_BASE } else { 0 };
    let mut plan = LoadPlan {
        segments: [Segment::default(); MAX_SEGMENTS],
        segment_count: 0,
        entry: entry.wrapping_add(load_bias),
        program_headers: 0,
        program_header_count,
        load_bias,
    };
    let mut phdr_segment_address = None;
    let mut load_count = 0usize;
    for index in 0..usize::from(program_header_count) {
        let header = &file[program_header_offset as usize + index * PROGRAM_HEADER_SIZE..]
            [..PROGRAM_HEADER_SIZE];
        let kind = u32_at(header, 0);
        match kind {
            PT_INTERP => return Err(ElfError::Dynamic),
            PT_PHDR => phdr_segment_address = Some(u64_at(header, 16).wrapping_add(load_bias)),
            PT_LOAD => {}
            _ => continue,
        }
        if kind != PT_LOAD {
            continue;
        }
        load_count += 1;
        if load_count > MAX_SEGMENTS {
            continue;
        }
        let segment = Segment {
            flags: u32_at(header, 4),
            file_offset: u64_at(header, 8),
            address: u64_at(header, 16).wrapping_add(load_bias),
            file_size: u64_at(header, 32),
            memory_size: u64_at(header, 40),
        };
        let segment_index = load_count - 1;
        check_segment(&segment, segment_index, length, user_end)?;
        for (other_index, other) in plan.segments().iter().enumerate() {
            let (a, b) = (segment.page_range(), other.page_range());
            if a.start < b.end && b.start < a.end {
                return Err(ElfError::Overlap { first: other_index, second: segment_index });
            }
        }
        plan.segments[segment_index] = segment;
        plan.segment_count = load_count;
    }
    if load_count == 0 || load_count > MAX_SEGMENTS {
        return Err(ElfError::SegmentCount { count: load_count });
    }
    if !plan.segments().iter().any(|segment| {
        segment.flags & PF_X != 0
            && (segment.address..segment.address + segment.memory_size).contains(&plan.entry)
    }) {
        return Err(ElfError::EntryOutsideText { entry: plan.entry });
    }
    plan.program_headers = phdr_segment_address.unwrap_or_else(|| {
        // No PT_PHDR: the headers' address is wherever a segment maps
        // their file bytes.
        plan.segments()
            .iter()
            .find(|segment| {
                segment.file_offset <= program_header_offset
                    && headers_end <= segment.file_offset + segment.file_size
            })
            .map_or(0, |segment| segment.address + (program_header_offset - segment.file_offset))
    });
    Ok(plan)
}

fn check_segment(
    segment: &Segment,
    index: usize,
    file_length: u64,
    user_end: u64,
) -> Result<(), ElfError> {
    if segment.file_offset.checked_add(segment.file_size).is_none_or(|end| end > file_length) {
        return Err(ElfError::SegmentPastEndOfFile { index });
    }
    if segment.file_size > segment.memory_size {
        return Err(ElfError::FileSizeAboveMemorySize { index });
    }
    if segment.file_offset % PAGE_SIZE != segment.address % PAGE_SIZE {
        return Err(ElfError::Misaligned { index });
    }
    let end = segment.address.checked_add(segment.memory_size);
    match end {
        Some(end)
            if segment.address >= MIN_ADDRESS
                && end.checked_next_multiple_of(PAGE_SIZE).is_some_and(|end| end <= user_end) =>
        {
            Ok(())
        }
        _ => Err(ElfError::OutOfRange {
            index,
            start: segment.address,
            end: end.unwrap_or(u64::MAX),
        }),
    }
}

#[cfg(test)]
mod tests;
