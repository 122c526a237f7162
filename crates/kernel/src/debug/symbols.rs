//! Symbolising addresses from the kernel's own function-symbol table: the
//! `extregs-ksyms` table (names demangled at build time) in the booted ELF's
//! `.extregs_symbols` section, which the bootloader leaves in memory with
//! the rest of the file (`BootInfo::kernel_addr`/`kernel_len`).

use core::fmt;
use extregs_ksyms::{Name, Table};
use spin::Once;
use xmas_elf::ElfFile;

struct KernelImage {
    /// The function symbols (None: the ELF has no valid table).
    symbols: Option<Table<'static>>,
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
    let file = ElfFile::new(elf).ok();
    let text = file
        .as_ref()
        .and_then(|file| file.find_section_by_name(".text"))
        .map_or(0..0, |section| section.address()..section.address() + section.size());
    let symbols = file
        .as_ref()
        .and_then(|file| file.find_section_by_name(extregs_ksyms::SECTION))
        .and_then(|section| {
            let (offset, size) = (usize::try_from(section.offset()).ok()?, section.size());
            elf.get(offset..offset.checked_add(usize::try_from(size).ok()?)?)
        })
        .and_then(|bytes| Table::parse(bytes).ok());
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

/// A function symbol that contains an address.
pub struct Symbol {
    /// Demangled, without the hash (`rustc_demangle`'s `{:#}` form).
    pub name: Name,
    pub offset: u64,
    pub size: u64,
}

impl fmt::Display for Symbol {
    /// Linux's `%pS` form: `name+0xoff/0xlen`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}+{:#x}/{:#x}", self.name.as_str(), self.offset, self.size)
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
    let symbols = image.symbols.as_ref()?;
    let elf_address = address.checked_sub(image.image_offset)?;
    let function = symbols.find(elf_address)?;
    let mut name = Name::new();
    symbols.name(function.index, &mut name).ok()?;
    Some(Symbol { name, offset: elf_address - function.start, size: function.size })
}
