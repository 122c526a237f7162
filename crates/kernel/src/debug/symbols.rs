//! Symbolising addresses from the kernel's own function-symbol table: the
//! `extregs-ksyms` table (names demangled at build time) in the booted ELF's
//! `.extregs_symbols` section, which the bootloader leaves in memory with
//! the rest of the file (`BootInfo::kernel_addr`/`kernel_len`).
//!
//! The in-memory file is not all read-only: the loader maps the writable
//! segments (`.data`, `.got`) straight onto the file's own frames, so the
//! kernel writes there. So no reference to the whole file is ever made:
//! [`init`] reads the ELF and section headers with raw reads, and keeps a
//! slice of the table's bytes only, after checking that no writable
//! segment's pages cover them (the root `build.rs` puts the table on pages
//! of its own).

use core::fmt;
use core::ops::Range;
use extregs_ksyms::{Name, Table};
use spin::Once;

struct KernelImage {
    /// The function symbols (None: the ELF has no valid table).
    symbols: Option<Table<'static>>,
    /// Runtime address = ELF virtual address + this.
    image_offset: u64,
    /// The `.text` section's ELF addresses (empty if the ELF has none).
    text: Range<u64>,
}

static KERNEL_IMAGE: Once<KernelImage> = Once::new();

/// The kernel file in memory, read field by field without a reference to
/// it (see the module doc).
struct KernelFile {
    start: *const u8,
    length: usize,
}

impl KernelFile {
    /// `N` bytes at `offset`, if the file has them.
    fn bytes<const N: usize>(&self, offset: u64) -> Option<[u8; N]> {
        let offset = usize::try_from(offset).ok()?;
        if offset.checked_add(N)? > self.length {
            return None;
        }
        // SAFETY: `init`'s caller guarantees `length` readable bytes at
        // `start`; this reads N of them by value (no reference is formed,
        // so a write elsewhere to these frames can't alias one).
        Some(unsafe { self.start.add(offset).cast::<[u8; N]>().read_unaligned() })
    }

    fn u16(&self, offset: u64) -> Option<u16> {
        self.bytes(offset).map(u16::from_le_bytes)
    }

    fn u32(&self, offset: u64) -> Option<u32> {
        self.bytes(offset).map(u32::from_le_bytes)
    }

    fn u64(&self, offset: u64) -> Option<u64> {
        self.bytes(offset).map(u64::from_le_bytes)
    }

    /// Whether the NUL-terminated string at `offset` is `name`.
    fn name_is(&self, offset: u64, name: &[u8]) -> bool {
        name.iter().chain(&[0]).enumerate().all(|(index, &byte)| {
            offset.checked_add(index as u64).is_some_and(|at| self.bytes::<1>(at) == Some([byte]))
        })
    }

    /// Whether a loaded segment the kernel may write (`PT_LOAD` with
    /// `PF_W`) covers any page of the file range `range`: the loader maps
    /// such a segment's pages straight onto the file's frames. None if the
    /// program headers can't be read.
    fn writable_page_covers(&self, range: &Range<u64>) -> Option<bool> {
        const PT_LOAD: u32 = 1;
        const PF_W: u32 = 2;
        let (phoff, phentsize, phnum) = (self.u64(32)?, self.u16(54)?, self.u16(56)?);
        for index in 0..u64::from(phnum) {
            let header = phoff.checked_add(index * u64::from(phentsize))?;
            if self.u32(header)? != PT_LOAD || self.u32(header + 4)? & PF_W == 0 {
                continue;
            }
            let (offset, filesz) = (self.u64(header + 8)?, self.u64(header + 32)?);
            let pages =
                offset & !0xfff..offset.checked_add(filesz)?.checked_next_multiple_of(4096)?;
            if range.start < pages.end && pages.start < range.end {
                return Some(true);
            }
        }
        Some(false)
    }

    /// The section named `name`: its file offset, address and size.
    fn section(&self, name: &[u8]) -> Option<(u64, u64, u64)> {
        let (shoff, shentsize, shnum, shstrndx) =
            (self.u64(40)?, self.u16(58)?, self.u16(60)?, self.u16(62)?);
        let header = |index: u16| shoff.checked_add(u64::from(index) * u64::from(shentsize));
        let names = self.u64(header(shstrndx)?.checked_add(24)?)?;
        (0..shnum).find_map(|index| {
            let header = header(index)?;
            let name_offset = names.checked_add(u64::from(self.u32(header)?))?;
            self.name_is(name_offset, name).then_some(())?;
            Some((self.u64(header + 24)?, self.u64(header + 16)?, self.u64(header + 32)?))
        })
    }
}

/// Remembers where the kernel ELF is, for [`lookup`].
///
/// # Safety
///
/// `file` must point to the kernel ELF the bootloader loaded, `length`
/// bytes, mapped readable for the rest of the kernel's life, whose pages
/// no one writes except through the kernel's own writable segments.
pub unsafe fn init(file: *const u8, length: usize, image_offset: u64) {
    let file = KernelFile { start: file, length };
    let is_elf64 = file.bytes::<5>(0) == Some(*b"\x7fELF\x02");
    let text = is_elf64
        .then(|| file.section(b".text"))
        .flatten()
        .map_or(0..0, |(_, address, size)| address..address.saturating_add(size));
    let table = || -> Option<Table<'static>> {
        let (offset, _, size) = file.section(extregs_ksyms::SECTION.as_bytes())?;
        let end = offset.checked_add(size)?;
        if end > length as u64 || file.writable_page_covers(&(offset..end))? {
            return None;
        }
        let start = file.start.wrapping_add(offset as usize);
        // SAFETY: `offset..end` is in the file, mapped readable for good,
        // and no writable segment's pages cover it (both checked above):
        // nothing writes these bytes while the shared slice lives.
        let bytes = unsafe { core::slice::from_raw_parts(start, size as usize) };
        Table::parse(bytes).ok()
    };
    let symbols = if is_elf64 { table() } else { None };
    KERNEL_IMAGE.call_once(|| KernelImage { symbols, image_offset, text });
}

/// Whether `address` (a runtime address) lies in the kernel's `.text`: a
/// quick test for every word of a stack before [`lookup`] searches the
/// symbol table (the call trace's `? ` entries).
pub fn is_text(address: u64) -> bool {
    KERNEL_IMAGE.get().is_some_and(|image| {
        address.checked_sub(image.image_offset).is_some_and(|elf| image.text.contains(&elf))
    })
}

/// Is the symbol table there (set up at boot, and valid)?
pub fn available() -> bool {
    KERNEL_IMAGE.get().is_some_and(|image| image.symbols.is_some())
}

/// The offset the kernel was loaded at (Linux prints it as "Kernel Offset").
pub fn image_offset() -> Option<u64> {
    KERNEL_IMAGE.get().map(|image| image.image_offset)
}

/// A function symbol that contains an address. Its name is decoded only
/// when asked for ([`Symbol::name`], or printing), into a [`Name`] of
/// 1 KiB: lookups on the call trace's and the NMI backtrace's stacks stay
/// small.
#[derive(Clone, Copy)]
pub struct Symbol {
    index: usize,
    pub offset: u64,
    pub size: u64,
}

impl Symbol {
    /// Decodes the name (demangled, without the hash: `rustc_demangle`'s
    /// `{:#}` form) into `name`; false if the table's entry is malformed.
    pub fn name(&self, name: &mut Name) -> bool {
        KERNEL_IMAGE
            .get()
            .and_then(|image| image.symbols.as_ref())
            .is_some_and(|symbols| symbols.name(self.index, name).is_ok())
    }
}

impl fmt::Display for Symbol {
    /// Linux's `%pS` form: `name+0xoff/0xlen`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut name = Name::new();
        let name = if self.name(&mut name) { name.as_str() } else { "(bad symbol table entry)" };
        write!(f, "{name}+{:#x}/{:#x}", self.offset, self.size)
    }
}

/// The code range of the function holding `address` (its symbol's start
/// and size), if the symbol table has it.
pub fn function_range(address: u64) -> Option<Range<u64>> {
    let symbol = lookup(address)?;
    let start = address - symbol.offset;
    Some(start..start + symbol.size)
}

/// The function symbol containing runtime address `address`, if the symbol
/// table is there and has one.
pub fn lookup(address: u64) -> Option<Symbol> {
    let image = KERNEL_IMAGE.get()?;
    let symbols = image.symbols.as_ref()?;
    let elf_address = address.checked_sub(image.image_offset)?;
    let function = symbols.find(elf_address)?;
    Some(Symbol {
        index: function.index,
        offset: elf_address - function.start,
        size: function.size,
    })
}
