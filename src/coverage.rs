//! Interrupt-point coverage: which instructions of the kernel's entry text
//! (`entry_64.S`, between `extregs_entry_text_start` and `_end`) foreign
//! events interrupted.
//!
//! The kernel reports the entry-text offsets at which a foreign NMI was
//! delivered (`COVERAGE_HIT` line). Here the same text is decoded from the
//! kernel ELF (iced-x86), so the denominator is the number of real
//! instructions (alignment padding excluded), and the points never hit can
//! be listed with their symbols.

use crate::error::{Error, Result};
use iced_x86::{Decoder, DecoderOptions, Mnemonic};
use object::{Object, ObjectSection, ObjectSymbol, SymbolKind};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// One instruction of the entry text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryPoint {
    /// Offset from `extregs_entry_text_start`.
    pub offset: u64,
    /// `symbol+0xoff` (demangled) of the instruction.
    pub location: String,
    /// The instruction, for the listing.
    pub text: String,
}

/// The entry text decoded into instructions.
#[derive(Clone, Debug)]
pub struct EntryText {
    pub points: Vec<EntryPoint>,
}

impl EntryText {
    /// Decodes the entry text of the kernel ELF at `path`.
    pub fn from_elf(path: &Path) -> Result<EntryText> {
        let data = std::fs::read(path)
            .map_err(|error| Error::io(format!("reading {}", path.display()), error))?;
        let elf = object::File::parse(&*data)
            .map_err(|source| Error::Elf { what: format!("parsing {}", path.display()), source })?;
        let address_of = |name: &str| {
            elf.symbols()
                .find(|symbol| symbol.name() == Ok(name))
                .map(|symbol| symbol.address())
                .ok_or_else(|| Error::Usage(format!("{}: no symbol {name}", path.display())))
        };
        let start = address_of("extregs_entry_text_start")?;
        let end = address_of("extregs_entry_text_end")?;
        let section = elf
            .sections()
            .find(|section| {
                (section.address()..section.address() + section.size()).contains(&start)
            })
            .ok_or_else(|| {
                Error::Usage(format!("{}: no section holds the entry text", path.display()))
            })?;
        let bytes = section.data().map_err(|source| Error::Elf {
            what: format!("reading the entry text of {}", path.display()),
            source,
        })?;
        let from = (start - section.address()) as usize;
        let to = (end - section.address()) as usize;
        let text = bytes.get(from..to).ok_or_else(|| {
            Error::Usage(format!("{}: the entry text runs past its section", path.display()))
        })?;
        let mut functions: Vec<(u64, u64, String)> = elf
            .symbols()
            .filter(|symbol| symbol.kind() == SymbolKind::Text && symbol.size() > 0)
            .filter_map(|symbol| {
                let name = symbol.name().ok()?;
                Some((symbol.address(), symbol.size(), rustc_demangle::demangle(name).to_string()))
            })
            .collect();
        functions.sort();
        let locate = |address: u64| {
            functions
                .iter()
                .find(|(at, size, _)| (*at..at + size).contains(&address))
                .map(|(at, _, name)| format!("{name}+{:#x}", address - at))
                .unwrap_or_else(|| format!("entry_text+{:#x}", address - start))
        };
        let mut decoder = Decoder::with_ip(64, text, start, DecoderOptions::NONE);
        let mut points = Vec::new();
        while decoder.can_decode() {
            let instruction = decoder.decode();
            // Alignment padding between stubs is never executed.
            if instruction.is_invalid()
                || matches!(instruction.mnemonic(), Mnemonic::Nop | Mnemonic::Int3)
            {
                continue;
            }
            points.push(EntryPoint {
                offset: instruction.ip() - start,
                location: locate(instruction.ip()),
                text: format!("{instruction}"),
            });
        }
        Ok(EntryText { points })
    }

    /// Instructions in all.
    pub fn total(&self) -> u64 {
        self.points.len() as u64
    }

    /// Instructions among `hits` (offsets).
    pub fn hit(&self, hits: &BTreeSet<u64>) -> u64 {
        self.points.iter().filter(|point| hits.contains(&point.offset)).count() as u64
    }

    /// The instructions not in `hits`, one line each.
    pub fn missed_listing(&self, hits: &BTreeSet<u64>) -> String {
        self.points
            .iter()
            .filter(|point| !hits.contains(&point.offset))
            .map(|point| format!("{:#06x} {:<48} {}\n", point.offset, point.location, point.text))
            .collect()
    }
}

/// The offsets of a `COVERAGE_HIT a,b,…` line (hex) in `serial`.
pub fn hits_in(serial: &str) -> BTreeSet<u64> {
    serial
        .lines()
        .filter_map(|line| line.strip_prefix("COVERAGE_HIT "))
        .flat_map(|list| list.split(','))
        .filter_map(|offset| u64::from_str_radix(offset.trim(), 16).ok())
        .collect()
}

/// The offsets of each `COVERAGE_HIT_CPU k a,b,…` line in `serial`, by
/// CPU (a boot of more than one CPU prints one per CPU).
pub fn hits_by_cpu_in(serial: &str) -> BTreeMap<u32, BTreeSet<u64>> {
    let mut by_cpu: BTreeMap<u32, BTreeSet<u64>> = BTreeMap::new();
    for line in serial.lines() {
        let Some(rest) = line.strip_prefix("COVERAGE_HIT_CPU ") else {
            continue;
        };
        let (cpu, list) = rest.split_once(' ').unwrap_or((rest, ""));
        let Ok(cpu) = cpu.parse::<u32>() else {
            continue;
        };
        let offsets =
            list.split(',').filter_map(|offset| u64::from_str_radix(offset.trim(), 16).ok());
        by_cpu.entry(cpu).or_default().extend(offsets);
    }
    by_cpu
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hit_lines_parse_as_hex_offsets() {
        let serial = "x\nCOVERAGE_HIT 1a,2b,ff\nRESULT {}\n";
        assert_eq!(hits_in(serial), BTreeSet::from([0x1a, 0x2b, 0xff]));
        assert!(hits_in("COVERAGE_HIT \n").is_empty());
        let serial = "COVERAGE_HIT 1,2\nCOVERAGE_HIT_CPU 0 1\nCOVERAGE_HIT_CPU 1 2,ff\nCOVERAGE_HIT_CPU 2 \n";
        let by_cpu = hits_by_cpu_in(serial);
        assert_eq!(by_cpu[&0], BTreeSet::from([1]));
        assert_eq!(by_cpu[&1], BTreeSet::from([2, 0xff]));
        assert!(by_cpu[&2].is_empty());
        assert_eq!(
            hits_in(serial),
            BTreeSet::from([1, 2]),
            "the per-CPU lines are not the union's"
        );
    }

    #[test]
    fn the_kernel_entry_text_decodes_into_its_stubs() {
        let text = EntryText::from_elf(crate::images::kernel_elf()).expect("the kernel ELF");
        // 32 exception stubs, 224 two-instruction IRQ stubs, the NMI entry.
        assert!(text.total() > 32 + 2 * 224, "{} instructions", text.total());
        assert!(text.points.iter().any(|p| p.location.starts_with("asm_exc_nmi")));
        assert!(text.points.iter().any(|p| p.text.starts_with("iretq")));
        let hits = BTreeSet::from([text.points[0].offset]);
        assert_eq!(text.hit(&hits), 1);
        assert_eq!(text.missed_listing(&hits).lines().count() as u64, text.total() - 1);
    }
}
