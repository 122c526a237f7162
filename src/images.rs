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
/// and ELF symbol table, with its function symbols, demangled, in the
/// `extregs-ksyms` table the kernel reads (the same code, and every symbol
/// the kernel reads).
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

    /// The images carry the kernel without DWARF and without its ELF
    /// symbol table (a boot reads the whole file), with every function
    /// symbol the kernel symbolises from in its own table, demangled;
    /// `kernel=` keeps the rest for gdb and addr2line.
    #[test]
    fn the_booted_kernel_is_the_kernel_without_its_dwarf() {
        let (full, booted) = (parse(kernel_elf()), parse(booted_kernel_elf()));
        let (full, booted) =
            (object::File::parse(&*full).unwrap(), object::File::parse(&*booted).unwrap());
        let sections = |elf: &object::File<'_>| -> Vec<String> {
            elf.sections().filter_map(|section| section.name().ok().map(str::to_string)).collect()
        };
        let debug = |elf: &object::File<'_>| -> Vec<String> {
            sections(elf).into_iter().filter(|name| name.starts_with(".debug_")).collect()
        };
        assert!(debug(&full).contains(&".debug_line".to_string()), "{:?}", debug(&full));
        assert!(debug(&booted).is_empty(), "{:?}", debug(&booted));
        assert!(booted.symbols().next().is_none(), "the booted kernel has an ELF symbol table");
        // Every function symbol of the full ELF, in its symbol table's
        // order: the first at each address is what the kernel names.
        let mut expected = std::collections::BTreeMap::new();
        for symbol in full.symbols() {
            if symbol.kind() == SymbolKind::Text && symbol.size() > 0 {
                let name = format!("{:#}", rustc_demangle::demangle(symbol.name().unwrap()));
                expected.entry(symbol.address()).or_insert((symbol.size(), name));
            }
        }
        assert!(expected.len() > 1000, "{} functions", expected.len());
        let section = booted.section_by_name(extregs_ksyms::SECTION).expect("the symbol table");
        let bytes = section.data().unwrap();
        let table = extregs_ksyms::Table::parse(bytes).unwrap();
        assert_eq!(table.len(), expected.len());
        let mut name = extregs_ksyms::Name::new();
        for (&start, (size, expected_name)) in &expected {
            for address in [start, start + size - 1] {
                let function = table.find(address).unwrap_or_else(|| panic!("{address:#x}"));
                assert_eq!((function.start, function.size), (start, *size), "{expected_name}");
                table.name(function.index, &mut name).unwrap();
                assert_eq!(name.as_str(), expected_name);
            }
        }
        let names: BTreeSet<&str> = expected.values().map(|(_, name)| name.as_str()).collect();
        assert!(names.contains("kernel::kernel_main"), "demangled, without the hash");
        let text = |elf: &object::File<'_>| {
            elf.section_by_name(".text").expect(".text").data().expect("its bytes").to_vec()
        };
        assert_eq!(text(&full), text(&booted));
    }

    /// The booted kernel is relocated at build time for the load address
    /// its loader config fixes: every word the full ELF's `DT_RELR` table
    /// names (decoded by `object`, not by `extregs-prelink`) holds the full
    /// ELF's value plus that address, inside the image; the other loaded
    /// bytes are the full ELF's; no `DT_RELR` tag is left for the loader
    /// (which refuses it) to find.
    #[test]
    fn the_booted_kernel_is_relocated_for_its_fixed_address() {
        use object::read::elf::{ElfFile64, SectionHeader};
        let (full_bytes, booted_bytes) = (parse(kernel_elf()), parse(booted_kernel_elf()));
        let full = ElfFile64::<object::LittleEndian>::parse(&*full_bytes).unwrap();
        let booted = object::File::parse(&*booted_bytes).unwrap();
        let config = booted.section_by_name(".bootloader-config").unwrap().data().unwrap();
        let config = bootloader_api::BootloaderConfig::deserialize(config).unwrap();
        let bootloader_api::config::Mapping::FixedAddress(base) = config.mappings.kernel_base
        else {
            panic!("the kernel's loader config does not fix its address");
        };
        let endian = object::LittleEndian;
        let relocated: Vec<u64> = full
            .elf_section_table()
            .iter()
            .find_map(|section| section.relr(endian, &*full_bytes).unwrap())
            .expect("the kernel has a DT_RELR table")
            .collect();
        assert!(relocated.len() > 1000, "{} words", relocated.len());
        let loaded = || {
            full.sections().filter(|section| {
                matches!(section.flags(), object::SectionFlags::Elf { sh_flags, .. } if sh_flags.0 & object::elf::SHF_ALLOC.0 != 0)
            })
        };
        let image_end = loaded().map(|section| section.address() + section.size()).max();
        let mut moved: BTreeSet<(String, u64)> = BTreeSet::new();
        for &address in &relocated {
            let section = loaded()
                .find(|section| {
                    (section.address()..section.address() + section.size()).contains(&address)
                })
                .unwrap_or_else(|| panic!("{address:#x} is in no section"));
            let name = section.name().unwrap();
            let offset = (address - section.address()) as usize;
            let word =
                |data: &[u8]| u64::from_le_bytes(data[offset..offset + 8].try_into().unwrap());
            let full_word = word(section.data().unwrap());
            let booted_word = word(booted.section_by_name(name).unwrap().data().unwrap());
            assert_eq!(booted_word, full_word.wrapping_add(base), "{name}+{offset:#x}");
            assert!(full_word < image_end.unwrap(), "{name}+{offset:#x} points outside the image");
            moved.insert((name.to_string(), offset as u64));
        }
        // Every other loaded byte is the full ELF's (.dynamic aside, whose
        // DT_RELR tags went).
        let names: Vec<String> = loaded()
            .filter(|section| section.kind() != object::SectionKind::UninitializedData)
            .map(|section| section.name().unwrap().to_string())
            .filter(|name| name != ".dynamic")
            .collect();
        assert!(names.len() > 5, "{names:?}");
        for name in &names {
            let name = name.as_str();
            let (full_data, booted_data) = (
                full.section_by_name(name).unwrap().data().unwrap(),
                booted.section_by_name(name).unwrap().data().unwrap(),
            );
            assert_eq!(full_data.len(), booted_data.len(), "{name}");
            for (offset, (a, b)) in full_data.chunks(8).zip(booted_data.chunks(8)).enumerate() {
                let offset = offset as u64 * 8;
                assert!(
                    a == b || moved.contains(&(name.to_string(), offset)),
                    "{name}+{offset:#x}"
                );
            }
        }
        let again = extregs_prelink::prelink(&booted_bytes, base).unwrap();
        assert!(again.relocated.is_empty(), "a DT_RELR tag is left");
        // The table on pages no writable segment covers (the kernel reads
        // it from the file in memory, whose writable pages it writes).
        let table = booted.section_by_name(extregs_ksyms::SECTION).unwrap();
        let (table_start, _) = table.file_range().unwrap();
        assert_eq!(table_start % 4096, 0);
        let booted_elf = ElfFile64::<object::LittleEndian>::parse(&*booted_bytes).unwrap();
        for segment in booted_elf.elf_program_headers() {
            use object::read::elf::ProgramHeader;
            if segment.p_type(endian) == object::elf::PT_LOAD
                && segment.p_flags(endian).0 & object::elf::PF_W.0 != 0
            {
                let end = segment.p_offset(endian) + segment.p_filesz(endian);
                assert!(
                    end.next_multiple_of(4096) <= table_start,
                    "a writable segment's page holds the table"
                );
            }
        }
    }

    /// The kernel's large statics start zeroed, so they take no room in
    /// the file the loader copies: a field started non-zero moves a whole
    /// array into `.data` (docs/boot.md).
    #[test]
    fn the_large_statics_are_in_bss() {
        let full = parse(kernel_elf());
        let full = object::File::parse(&*full).unwrap();
        for wanted in [
            "kernel::sched::task::TASKS",
            "kernel::sched::user_state::FPU_STATES",
            "kernel::modes::fuzz::lane::LANES",
            "kernel::arch::idt::SPARE_IDT",
        ] {
            let symbol = full
                .symbols()
                .find(|symbol| {
                    symbol
                        .name()
                        .is_ok_and(|name| format!("{:#}", rustc_demangle::demangle(name)) == wanted)
                })
                .unwrap_or_else(|| panic!("{wanted} is not in the kernel ELF"));
            let section = full.section_by_index(symbol.section_index().unwrap()).unwrap();
            assert_eq!(section.name().unwrap(), ".bss", "{wanted}");
        }
    }

    /// The BIOS image carries the loader with its stacks moved: its boot
    /// sector sets `sp` to 0x7000 and its stage 3 gives stage 4 a stack at
    /// 0x90000, each once, and neither stock instruction is left
    /// (docs/boot.md, "Fourth pass"). Every BIOS boot test runs that loader.
    #[test]
    fn the_bios_image_carries_the_moved_stacks() {
        extregs_loader_stack::verify_moved(&parse(bios_image()))
            .unwrap_or_else(|error| panic!("{}: {error}", bios_image().display()));
    }
}
