//! Relocates the kernel at build time, for the one address it is loaded at.
//!
//! The kernel is a static PIE. Its pointers in `.data.rel.ro`, `.got` and
//! `.data` (vtables, panic locations, format pieces) need the load address
//! added, and the linker's usual form for that, one 24-byte `Elf64_Rela`
//! per word, was 40 KB of a kernel file that the BIOS loader copies a byte
//! at a time (docs/boot.md). The kernel is linked with
//! `-z pack-relative-relocs` instead: a `DT_RELR` table, an address per
//! run of words plus a bitmap per 63 words, about 1 KB. The loader
//! (bootloader 0.11) knows only `DT_RELA` and refuses the unknown tags, and
//! the kernel's `BOOTLOADER_CONFIG` fixes its load address. So [`prelink`]
//! applies the `DT_RELR` relocations to the file's bytes for that address
//! and takes the three `DT_RELR*` tags out of the dynamic section. What is
//! left in `DT_RELA` (words the packed form can't hold) the loader applies
//! as before.
//!
//! Nothing in the file is trusted: every address must fall in the file
//! bytes of a `PT_LOAD` segment, or [`prelink`] refuses with an [`Error`].

use object::elf::{FileHeader64, PT_DYNAMIC, PT_LOAD};
use object::read::elf::{FileHeader, ProgramHeader};
use object::LittleEndian;

/// `d_tag` of the packed relocations' size, address and entry size.
pub const DT_RELRSZ: u64 = 35;
pub const DT_RELR: u64 = 36;
pub const DT_RELRENT: u64 = 37;

/// Why a file can't be relocated.
#[derive(Debug, PartialEq, Eq)]
pub enum Error {
    /// Not an ELF64 little-endian file, or its program headers are cut.
    NotElf(String),
    /// No `PT_DYNAMIC` segment, or one outside the file.
    NoDynamic,
    /// `DT_RELR` without its size, or an entry size other than 8.
    BadRelrTags,
    /// An address (of the table, or one it relocates) is not in the file
    /// bytes of a loaded segment.
    OutsideSegments(u64),
    /// The table starts with a bitmap, which continues from no address.
    BitmapWithoutAddress,
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::NotElf(why) => write!(f, "not an ELF64 little-endian file: {why}"),
            Error::NoDynamic => write!(f, "no PT_DYNAMIC segment in the file"),
            Error::BadRelrTags => write!(f, "DT_RELR without DT_RELRSZ, or DT_RELRENT is not 8"),
            Error::BitmapWithoutAddress => write!(f, "DT_RELR starts with a bitmap"),
            Error::OutsideSegments(address) => {
                write!(f, "address {address:#x} is not in the file bytes of a PT_LOAD segment")
            }
        }
    }
}

impl std::error::Error for Error {}

/// What [`prelink`] did.
#[derive(Debug, PartialEq, Eq)]
pub struct Prelinked {
    /// The relocated file.
    pub file: Vec<u8>,
    /// The link-time addresses of the words it relocated.
    pub relocated: Vec<u64>,
}

/// A `PT_LOAD` segment's file bytes: where they load, where they are in
/// the file, and how many.
#[derive(Clone, Copy)]
struct Load {
    vaddr: u64,
    offset: u64,
    filesz: u64,
}

/// The loaded segments, and the dynamic segment's (offset, size).
fn load_segments(elf: &[u8]) -> Result<(Vec<Load>, (u64, u64)), Error> {
    let header = FileHeader64::<LittleEndian>::parse(elf)
        .map_err(|error| Error::NotElf(error.to_string()))?;
    let endian = header.endian().map_err(|error| Error::NotElf(error.to_string()))?;
    let mut loads = Vec::new();
    let mut dynamic = None;
    for segment in
        header.program_headers(endian, elf).map_err(|error| Error::NotElf(error.to_string()))?
    {
        let load = Load {
            vaddr: segment.p_vaddr(endian),
            offset: segment.p_offset(endian),
            filesz: segment.p_filesz(endian),
        };
        match segment.p_type(endian) {
            PT_LOAD => loads.push(load),
            PT_DYNAMIC => dynamic = Some((load.offset, load.filesz)),
            _ => {}
        }
    }
    Ok((loads, dynamic.ok_or(Error::NoDynamic)?))
}

/// The file offset of the 8 bytes at link-time address `address`.
fn file_offset(loads: &[Load], file_length: usize, address: u64) -> Result<usize, Error> {
    loads
        .iter()
        .find(|load| {
            address >= load.vaddr
                && address.checked_add(8).is_some_and(|end| {
                    load.vaddr
                        .checked_add(load.filesz)
                        .is_some_and(|segment_end| end <= segment_end)
                })
        })
        .and_then(|load| load.offset.checked_add(address - load.vaddr))
        .and_then(|offset| usize::try_from(offset).ok())
        .filter(|&offset| offset.checked_add(8).is_some_and(|end| end <= file_length))
        .ok_or(Error::OutsideSegments(address))
}

fn read_u64(bytes: &[u8], offset: usize) -> u64 {
    u64::from_le_bytes(bytes[offset..offset + 8].try_into().expect("8 bytes"))
}

/// The addresses a `DT_RELR` table relocates, in its order: an even entry
/// is an address (and the next word follows it), an odd one a bitmap whose
/// bits 1 to 63 name the 63 words after the last address covered.
pub fn relr_addresses(table: &[u64]) -> Result<Vec<u64>, Error> {
    let mut addresses = Vec::new();
    let mut next = None;
    for &entry in table {
        if entry & 1 == 0 {
            addresses.push(entry);
            next = Some(entry.wrapping_add(8));
        } else {
            // A bitmap continues from an address: one first is malformed.
            let next = next.as_mut().ok_or(Error::BitmapWithoutAddress)?;
            for bit in 1..64 {
                if entry >> bit & 1 == 1 {
                    addresses.push(next.wrapping_add((bit - 1) * 8));
                }
            }
            *next = next.wrapping_add(63 * 8);
        }
    }
    Ok(addresses)
}

/// Applies `elf`'s `DT_RELR` relocations for load address `base` and takes
/// the `DT_RELR*` tags out of its dynamic section (later entries move up,
/// `DT_NULL` fills the end). Entries after the first `DT_NULL` are not
/// read. A file with a dynamic segment but no `DT_RELR` comes back as it
/// is.
pub fn prelink(elf: &[u8], base: u64) -> Result<Prelinked, Error> {
    let (loads, (dynamic_offset, dynamic_size)) = load_segments(elf)?;
    let dynamic_start = usize::try_from(dynamic_offset).map_err(|_| Error::NoDynamic)?;
    let dynamic_end = usize::try_from(dynamic_size)
        .ok()
        .and_then(|size| dynamic_start.checked_add(size))
        .filter(|&end| end <= elf.len())
        .ok_or(Error::NoDynamic)?;
    let entries: Vec<(u64, u64)> = elf[dynamic_start..dynamic_end]
        .as_chunks::<16>()
        .0
        .iter()
        .map(|entry| (read_u64(entry, 0), read_u64(entry, 8)))
        .take_while(|&(tag, _)| tag != 0)
        .collect();
    let tag =
        |wanted: u64| entries.iter().find(|&&(tag, _)| tag == wanted).map(|&(_, value)| value);
    let mut file = elf.to_vec();
    let Some(table_address) = tag(DT_RELR) else {
        return Ok(Prelinked { file, relocated: Vec::new() });
    };
    let table_size = tag(DT_RELRSZ).ok_or(Error::BadRelrTags)?;
    if tag(DT_RELRENT).is_some_and(|size| size != 8) || table_size % 8 != 0 {
        return Err(Error::BadRelrTags);
    }
    // Every word of the table must be in the file too.
    let table = (0..table_size / 8)
        .map(|index| {
            let address = table_address
                .checked_add(index * 8)
                .ok_or(Error::OutsideSegments(table_address))?;
            Ok(read_u64(elf, file_offset(&loads, elf.len(), address)?))
        })
        .collect::<Result<Vec<u64>, Error>>()?;
    let relocated = relr_addresses(&table)?;
    for &address in &relocated {
        let offset = file_offset(&loads, elf.len(), address)?;
        let value = read_u64(&file, offset).wrapping_add(base);
        file[offset..offset + 8].copy_from_slice(&value.to_le_bytes());
    }
    let kept: Vec<(u64, u64)> = entries
        .iter()
        .copied()
        .filter(|&(tag, _)| ![DT_RELR, DT_RELRSZ, DT_RELRENT].contains(&tag))
        .chain(std::iter::repeat((0, 0)))
        .take((dynamic_end - dynamic_start) / 16)
        .collect();
    for (index, (tag, value)) in kept.into_iter().enumerate() {
        let at = dynamic_start + index * 16;
        file[at..at + 8].copy_from_slice(&tag.to_le_bytes());
        file[at + 8..at + 16].copy_from_slice(&value.to_le_bytes());
    }
    Ok(Prelinked { file, relocated })
}

#[cfg(test)]
mod tests;
