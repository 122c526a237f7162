//! Interrupt-point coverage: which instructions of the kernel's entry text
//! (`entry_64.S`, between `extregs_entry_text_start` and `_end`) foreign
//! events interrupted.
//!
//! The kernel reports the entry-text offsets at which a foreign NMI was
//! delivered (`COVERAGE_HIT` line). Here the same text is decoded from the
//! kernel ELF (iced-x86), so the denominator is the number of real
//! instructions (alignment padding excluded), and the points never hit can
//! be listed with their symbols.
//!
//! The kernel also names what no NMI can land on: the stubs nothing raises
//! (`COVERAGE_NOT_RAISED`: the exceptions no test, mode or fuzz event
//! raises, and the compat SYSCALL entry) and the part of the NMI stub that
//! runs with NMIs blocked (`COVERAGE_NMI_BLOCKED`). Their instructions are
//! reported apart: the figure that counts is hits among the **reachable**
//! instructions, the rest, with the user entry and exit paths (SYSCALL,
//! SYSRET, the first entry to user mode, the IRET exit) as a figure of
//! their own.

use crate::error::{Error, Result};
use iced_x86::{Decoder, DecoderOptions, Mnemonic};
use object::{Object, ObjectSection, ObjectSymbol, SymbolKind};
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::Path;

/// The functions of the entry text that make up the user entry and exit
/// paths, for their own figure (the SYSRETQ and the IRETQ are labels
/// inside the first and the last).
pub const USER_PATH_FUNCTIONS: [&str; 3] =
    ["entry_SYSCALL_64", "extregs_enter_user_mode", "extregs_return_to_user"];

/// One instruction of the entry text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryPoint {
    /// Offset from `extregs_entry_text_start`.
    pub offset: u64,
    /// `symbol+0xoff` (demangled) of the instruction.
    pub location: String,
    /// The symbol alone (empty outside every function symbol).
    pub function: String,
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
                .map(|(at, _, name)| (format!("{name}+{:#x}", address - at), name.clone()))
                .unwrap_or_else(|| (format!("entry_text+{:#x}", address - start), String::new()))
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
            let (location, function) = locate(instruction.ip());
            points.push(EntryPoint {
                offset: instruction.ip() - start,
                location,
                function,
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

    /// The instructions not in `hits`, one line each: the reachable ones,
    /// then, each under a heading, those of the stubs nothing raises and
    /// those that run with NMIs blocked.
    pub fn missed_listing(&self, hits: &BTreeSet<u64>, unreachable: &Unreachable) -> String {
        let line = |point: &EntryPoint| {
            format!("{:#06x} {:<48} {}\n", point.offset, point.location, point.text)
        };
        let mut sections = [String::new(), String::new(), String::new()];
        for point in self.points.iter().filter(|point| !hits.contains(&point.offset)) {
            sections[unreachable.class(point.offset) as usize] += &line(point);
        }
        let [reachable, not_raised, nmi_blocked] = sections;
        let mut listing = reachable;
        for (heading, section) in
            [(NOT_RAISED_HEADING, not_raised), (NMI_BLOCKED_HEADING, nmi_blocked)]
        {
            if !section.is_empty() {
                listing += heading;
                listing += &section;
            }
        }
        listing
    }

    /// The figures for `hits`, given what no NMI can land on.
    pub fn figures(&self, hits: &BTreeSet<u64>, unreachable: &Unreachable) -> Figures {
        let mut figures = Figures::default();
        for point in &self.points {
            let hit = u64::from(hits.contains(&point.offset));
            match unreachable.class(point.offset) {
                Class::NotRaised => {
                    figures.not_raised += 1;
                    figures.not_raised_hit += hit;
                }
                Class::NmiBlocked => {
                    figures.nmi_blocked += 1;
                    figures.nmi_blocked_hit += hit;
                }
                Class::Reachable => {
                    figures.reachable += 1;
                    figures.reachable_hit += hit;
                    if USER_PATH_FUNCTIONS.contains(&point.function.as_str()) {
                        figures.user_paths += 1;
                        figures.user_paths_hit += hit;
                    }
                }
            }
        }
        figures
    }
}

/// The heading of the listing's part for the stubs nothing raises.
pub const NOT_RAISED_HEADING: &str =
    "# the stubs of vectors nothing raises (and the compat SYSCALL entry)\n";
/// The heading of the listing's part for the NMI stub's blocked part.
pub const NMI_BLOCKED_HEADING: &str = "# the NMI stub's instructions that run with NMIs blocked\n";

/// What no NMI can land on, as a boot named it (offsets into the entry
/// text).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Unreachable {
    /// The stubs of vectors nothing raises, and the compat SYSCALL entry
    /// (`COVERAGE_NOT_RAISED`).
    pub not_raised: Vec<Range<u64>>,
    /// The NMI stub but for the part an NMI can land on
    /// (`COVERAGE_NMI_BLOCKED`).
    pub nmi_blocked: Vec<Range<u64>>,
}

/// Which part of the report an instruction belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    Reachable = 0,
    NotRaised = 1,
    NmiBlocked = 2,
}

impl Unreachable {
    fn class(&self, offset: u64) -> Class {
        if in_ranges(offset, &self.not_raised) {
            Class::NotRaised
        } else if in_ranges(offset, &self.nmi_blocked) {
            Class::NmiBlocked
        } else {
            Class::Reachable
        }
    }
}

fn in_ranges(offset: u64, ranges: &[Range<u64>]) -> bool {
    ranges.iter().any(|range| range.contains(&offset))
}

/// Interrupt-point coverage, split by reachability.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Figures {
    /// Instructions an NMI can land on, on a path some event takes.
    pub reachable: u64,
    /// Of those, the ones interrupted.
    pub reachable_hit: u64,
    /// Instructions of the user entry and exit paths ([`USER_PATH_FUNCTIONS`]).
    pub user_paths: u64,
    /// Of those, the ones interrupted.
    pub user_paths_hit: u64,
    /// Instructions of the stubs nothing raises.
    pub not_raised: u64,
    /// Of those, the ones interrupted: more than 0 means the kernel's list
    /// of raised vectors is wrong.
    pub not_raised_hit: u64,
    /// Instructions of the NMI stub that run with NMIs blocked.
    pub nmi_blocked: u64,
    /// Of those, the ones interrupted: more than 0 means the kernel's
    /// labels of the NMI stub's window are wrong.
    pub nmi_blocked_hit: u64,
}

impl Figures {
    /// Reachable instructions hit, in percent.
    pub fn reachable_percent(&self) -> f64 {
        if self.reachable == 0 {
            0.0
        } else {
            100.0 * self.reachable_hit as f64 / self.reachable as f64
        }
    }

    /// Hits where the kernel says no NMI can land.
    pub fn wrong_claims(&self) -> u64 {
        self.not_raised_hit + self.nmi_blocked_hit
    }
}

impl std::fmt::Display for Figures {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            formatter,
            "{} of {} reachable entry instructions hit ({:.1}%); user entry/exit paths {} of {}; \
             {} instructions in stubs nothing raises, {} run with NMIs blocked",
            self.reachable_hit,
            self.reachable,
            self.reachable_percent(),
            self.user_paths_hit,
            self.user_paths,
            self.not_raised,
            self.nmi_blocked
        )?;
        if self.wrong_claims() > 0 {
            write!(
                formatter,
                " (and {} of those hit: the kernel's claim is wrong)",
                self.wrong_claims()
            )?;
        }
        Ok(())
    }
}

/// What no NMI can land on, from a boot's `COVERAGE_NOT_RAISED` and
/// `COVERAGE_NMI_BLOCKED` lines (hex offset ranges `a-b,…`). None when the
/// boot printed no `COVERAGE_NOT_RAISED` line (a kernel without coverage,
/// or a boot that died first).
pub fn unreachable_in(serial: &str) -> Option<Unreachable> {
    let ranges = |prefix: &str| {
        let line = serial.lines().find_map(|line| line.strip_prefix(prefix))?;
        let range = |pair: &str| {
            let (start, end) = pair.trim().split_once('-')?;
            Some(u64::from_str_radix(start, 16).ok()?..u64::from_str_radix(end, 16).ok()?)
        };
        Some(line.split(',').filter_map(range).collect::<Vec<_>>())
    };
    Some(Unreachable {
        not_raised: ranges("COVERAGE_NOT_RAISED ")?,
        nmi_blocked: ranges("COVERAGE_NMI_BLOCKED ").unwrap_or_default(),
    })
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
        assert_eq!(
            text.missed_listing(&hits, &Unreachable::default()).lines().count() as u64,
            text.total() - 1
        );
    }

    #[test]
    fn figures_set_what_no_nmi_can_land_on_apart() {
        let text = EntryText::from_elf(crate::images::kernel_elf()).expect("the kernel ELF");
        let syscall: Vec<u64> = text
            .points
            .iter()
            .filter(|point| point.function == "entry_SYSCALL_64")
            .map(|point| point.offset)
            .collect();
        assert!(syscall.len() > 60, "entry_SYSCALL_64 is {} instructions", syscall.len());
        let (first, second) = (text.points[0].offset, text.points[1].offset);
        let unreachable = Unreachable {
            not_raised: vec![Range { start: first, end: first + 1 }],
            nmi_blocked: vec![Range { start: second, end: second + 1 }],
        };
        let hits: BTreeSet<u64> = syscall.iter().copied().chain([first]).collect();
        let figures = text.figures(&hits, &unreachable);
        assert_eq!((figures.not_raised, figures.not_raised_hit), (1, 1));
        assert_eq!((figures.nmi_blocked, figures.nmi_blocked_hit), (1, 0));
        assert_eq!(figures.reachable, text.total() - 2);
        assert_eq!(figures.reachable_hit, syscall.len() as u64);
        assert!(figures.user_paths > syscall.len() as u64, "SYSCALL, SYSRET and the IRET exit");
        assert_eq!(figures.user_paths_hit, syscall.len() as u64);
        assert!(figures.to_string().contains("the kernel's claim is wrong"));
        let listing = text.missed_listing(&BTreeSet::new(), &unreachable);
        let lines: Vec<&str> = listing.lines().collect();
        let total = text.total() as usize;
        assert_eq!(lines.len(), total + 2, "every point and two headings");
        assert_eq!(format!("{}\n", lines[total - 2]), NOT_RAISED_HEADING);
        assert_eq!(format!("{}\n", lines[total]), NMI_BLOCKED_HEADING);
    }

    #[test]
    fn unreachable_lines_parse_as_hex_ranges() {
        let serial = "x\nCOVERAGE_NOT_RAISED 430-4b0,21a0-21a7\nCOVERAGE_NMI_BLOCKED 10-20,30-40\n";
        let unreachable = unreachable_in(serial).unwrap();
        assert_eq!(unreachable.not_raised, vec![0x430..0x4b0, 0x21a0..0x21a7]);
        assert_eq!(unreachable.nmi_blocked, vec![0x10..0x20, 0x30..0x40]);
        assert_eq!(unreachable_in("COVERAGE_NOT_RAISED \n"), Some(Unreachable::default()));
        assert_eq!(unreachable_in("COVERAGE_HIT 1\n"), None);
    }
}
