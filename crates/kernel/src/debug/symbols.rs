//! Symbolising addresses from the kernel's own ELF symbol table, which the
//! bootloader leaves in memory (`BootInfo::kernel_addr`/`kernel_len`).

use core::fmt;
use spin::Once;
use xmas_elf::sections::SectionData;
use xmas_elf::symbol_table::{Entry, Type};
use xmas_elf::ElfFile;

struct KernelImage {
    elf: &'static [u8],
    /// Runtime address = ELF virtual address + this.
    image_offset: u64,
    /// The `.text` section's ELF addresses (empty if the ELF has none).
    text: core::ops::Range<u64>,
}

static KERNEL_IMAGE: Once<KernelImage> = Once::new();

/// Remembers where the kernel ELF is, for [`lookup`].
///
/// # Safety
///
/// `elf` must be the kernel ELF the bootloader loaded, mapped and never
/// written for the rest of the kernel's life.
pub unsafe fn init(elf: &'static [u8], image_offset: u64) {
    let text = ElfFile::new(elf)
        .ok()
        .and_then(|file| file.find_section_by_name(".text"))
        .map_or(0..0, |section| section.address()..section.address() + section.size());
    KERNEL_IMAGE.call_once(|| KernelImage { elf, image_offset, text });
}

/// Whether `address` (a runtime address) lies in the kernel's `.text`: a
/// quick test for every word of a stack before [`lookup`] searches the
/// symbol table (the call trace's `? ` entries).
pub fn is_text(address: u64) -> bool {
    KERNEL_IMAGE.get().is_some_and(|image| {
        address.checked_sub(image.image_offset).is_some_and(|elf| image.text.contains(&elf))
    })
}

/// Is the symbol table there (set up at boot)?
pub fn available() -> bool {
    KERNEL_IMAGE.get().is_some()
}

/// The offset the kernel was loaded at (Linux prints it as "Kernel Offset").
pub fn image_offset() -> Option<u64> {
    KERNEL_IMAGE.get().map(|image| image.image_offset)
}

/// A function symbol that contains an address.
pub struct Symbol {
    pub name: &'static str,
    pub offset: u64,
    pub size: u64,
}

impl fmt::Display for Symbol {
    /// Linux's `%pS` form: `name+0xoff/0xlen`, the name demangled.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#}+{:#x}/{:#x}", rustc_demangle::demangle(self.name), self.offset, self.size)
    }
}

/// The code range of the function holding `address` (its symbol's start
/// and size), if the symbol table has it.
pub fn function_range(address: u64) -> Option<core::ops::Range<u64>> {
    let symbol = lookup(address)?;
    let start = address - symbol.offset;
    Some(start..start + symbol.size)
}

/// The function symbol containing runtime address `address`, if the symbol
/// table is there and has one.
pub fn lookup(address: u64) -> Option<Symbol> {
    let image = KERNEL_IMAGE.get()?;
    let elf = ElfFile::new(image.elf).ok()?;
    let elf_address = address.checked_sub(image.image_offset)?;
    let symtab = elf.find_section_by_name(".symtab")?;
    let SectionData::SymbolTable64(entries) = symtab.get_data(&elf).ok()? else {
        return None;
    };
    let entry = entries.iter().find(|entry| {
        entry.get_type() == Ok(Type::Func)
            && entry.size() > 0
            && (entry.value()..entry.value() + entry.size()).contains(&elf_address)
    })?;
    Some(Symbol {
        name: entry.get_name(&elf).ok()?,
        offset: elf_address - entry.value(),
        size: entry.size(),
    })
}
