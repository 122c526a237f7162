//! Where the build put the boot images and the kernel ELF.
//!
//! The root build script makes them from the kernel artifact; their paths are
//! compiled into the runner.

use std::path::Path;

/// The BIOS (MBR) disk image.
pub fn bios_image() -> &'static Path {
    Path::new(env!("EXTREGS_BIOS_IMAGE"))
}

/// The UEFI (GPT) disk image.
pub fn uefi_image() -> &'static Path {
    Path::new(env!("EXTREGS_UEFI_IMAGE"))
}

/// The kernel ELF, whole: symbols and DWARF, for gdb, `addr2line` and
/// `decode_stacktrace.sh`.
pub fn kernel_elf() -> &'static Path {
    Path::new(env!("EXTREGS_KERNEL_ELF"))
}

/// The kernel the images carry: [`kernel_elf`] without its debug sections
/// and with only its function symbols (the same code, and every symbol the
/// kernel reads).
pub fn booted_kernel_elf() -> &'static Path {
    Path::new(env!("EXTREGS_BOOTED_KERNEL_ELF"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use object::{Object, ObjectSection, ObjectSymbol, SymbolKind};
    use std::collections::BTreeSet;

    fn parse(path: &Path) -> Vec<u8> {
        std::fs::read(path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
    }

    /// The images carry the kernel without DWARF and data symbols (a boot
    /// reads the whole file), with every function symbol the kernel
    /// symbolises from; `kernel=` keeps the rest for gdb and addr2line.
    #[test]
    fn the_booted_kernel_is_the_kernel_without_its_dwarf() {
        let (full, booted) = (parse(kernel_elf()), parse(booted_kernel_elf()));
        let (full, booted) =
            (object::File::parse(&*full).unwrap(), object::File::parse(&*booted).unwrap());
        let debug = |elf: &object::File<'_>| -> Vec<String> {
            elf.sections()
                .filter_map(|section| section.name().ok().map(str::to_string))
                .filter(|name| name.starts_with(".debug_"))
                .collect()
        };
        assert!(debug(&full).contains(&".debug_line".to_string()), "{:?}", debug(&full));
        assert!(debug(&booted).is_empty(), "{:?}", debug(&booted));
        // Every function symbol, each at its address with its size: what
        // the kernel symbolises from. Only those are left.
        let symbols = |elf: &object::File<'_>, kinds: &[SymbolKind]| {
            elf.symbols()
                .filter(|symbol| kinds.contains(&symbol.kind()))
                .filter_map(|symbol| {
                    let name = symbol.name().ok().filter(|name| !name.is_empty())?;
                    Some((name.to_string(), symbol.address(), symbol.size()))
                })
                .collect::<BTreeSet<(String, u64, u64)>>()
        };
        let functions = [SymbolKind::Text];
        let (full_symbols, booted_symbols) =
            (symbols(&full, &functions), symbols(&booted, &functions));
        assert!(booted_symbols.len() > 1000, "{} symbols", booted_symbols.len());
        let others = [SymbolKind::Data, SymbolKind::Label, SymbolKind::Unknown];
        assert!(symbols(&full, &others).len() > 100, "the full ELF keeps its data symbols");
        let left: Vec<_> = symbols(&booted, &others).into_iter().take(5).collect();
        assert!(left.is_empty(), "the booted kernel still has data or label symbols: {left:?}");
        let differences: Vec<_> =
            full_symbols.symmetric_difference(&booted_symbols).take(5).collect();
        assert!(differences.is_empty(), "the symbol tables differ: {differences:?}");
        let text = |elf: &object::File<'_>| {
            elf.section_by_name(".text").expect(".text").data().expect("its bytes").to_vec()
        };
        assert_eq!(text(&full), text(&booted));
    }
}
