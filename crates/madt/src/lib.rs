//! The CPUs of the machine, read from ACPI's MADT ("APIC" table), the way
//! the kernel finds what to start with INIT-SIPI-SIPI.
//!
//! From the RSDP (which `bootloader_api`'s `BootInfo` hands over) to the
//! RSDT or XSDT, to the MADT, to its Processor Local APIC and x2APIC
//! entries. Nothing is allocated and nothing is trusted: every table's
//! signature, length and checksum is checked, every read goes through
//! [`PhysicalMemory`] (which refuses what it does not map), and a malformed
//! entry ends the walk with an error instead of a loop or a read past the
//! table. A small parser rather than the `acpi` crate, whose handler trait
//! is large for the one table needed here.
//!
//! CPU numbers and APIC IDs are different numbers: QEMU's
//! `-smp 6,sockets=2,cores=3` gives APIC IDs 0, 1, 2, 4, 5, 6. [`Madt::cpus`]
//! keeps the MADT's order, which is the CPU numbering Linux uses too.

#![no_std]

/// Reads physical memory for the parser.
pub trait PhysicalMemory {
    /// Fills `buffer` from physical address `address`; false when any of
    /// it is not readable.
    fn read(&self, address: u64, buffer: &mut [u8]) -> bool;
}

/// The most CPUs a [`Madt`] keeps (more enabled or online-capable ones
/// are an error).
pub const MAX_CPUS: usize = 64;

/// One processor the MADT lists.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cpu {
    /// ACPI's processor UID.
    pub processor_uid: u32,
    /// The local APIC ID (an x2APIC ID for x2APIC entries).
    pub apic_id: u32,
    /// Usable now (flags bit 0).
    pub enabled: bool,
    /// Not enabled, but may be brought online (flags bit 1).
    pub online_capable: bool,
}

/// What the kernel needs of the MADT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Madt {
    /// The local APIC's physical address (after any 64-bit override).
    pub local_apic_address: u64,
    /// The MADT says the machine also has 8259s (PCAT_COMPAT).
    pub has_8259: bool,
    cpus: [Cpu; MAX_CPUS],
    count: usize,
}

impl Madt {
    /// Every processor that is enabled or may be brought online, in the
    /// MADT's order, each APIC ID once.
    pub fn cpus(&self) -> &[Cpu] {
        &self.cpus[..self.count]
    }

    /// The enabled processors, in the MADT's order.
    pub fn enabled_cpus(&self) -> impl Iterator<Item = &Cpu> {
        self.cpus().iter().filter(|cpu| cpu.enabled)
    }
}

/// Why the MADT could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// A table, or part of one, is not readable.
    Unreadable { address: u64 },
    /// No `RSD PTR ` at the RSDP address.
    BadRsdpSignature,
    /// A checksum does not add up to 0.
    BadChecksum { signature: [u8; 4] },
    /// A table's length is shorter than its header, or absurdly long.
    BadLength { signature: [u8; 4], length: u32 },
    /// The RSDT/XSDT names no table with the `APIC` signature.
    NoMadt,
    /// A MADT entry's length is too short for its type, or runs past the
    /// table.
    BadEntry { offset: u32, entry_type: u8, length: u8 },
    /// More processors than [`MAX_CPUS`].
    TooManyCpus,
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        fn name(signature: &[u8; 4]) -> &str {
            core::str::from_utf8(signature).unwrap_or("????")
        }
        match self {
            Error::Unreadable { address } => write!(f, "ACPI table at {address:#x} is not mapped"),
            Error::BadRsdpSignature => write!(f, "no RSDP signature at the RSDP address"),
            Error::BadChecksum { signature } => write!(f, "{} has a bad checksum", name(signature)),
            Error::BadLength { signature, length } => {
                write!(f, "{} has a bad length ({length})", name(signature))
            }
            Error::NoMadt => write!(f, "the RSDT/XSDT lists no MADT"),
            Error::BadEntry { offset, entry_type, length } => write!(
                f,
                "MADT entry at offset {offset} (type {entry_type}, length {length}) is malformed"
            ),
            Error::TooManyCpus => write!(f, "the MADT lists more than {MAX_CPUS} processors"),
        }
    }
}

/// The length of every ACPI table's header (the SDT header).
const SDT_HEADER: usize = 36;
/// The longest table this parser reads (the MADT of a large machine is a
/// few KiB; anything longer is corrupt).
const MAX_TABLE: u32 = 64 * 1024;
/// How many tables an RSDT/XSDT may list before it is taken as corrupt.
const MAX_TABLES: usize = 256;

fn read_array<const N: usize>(
    memory: &impl PhysicalMemory,
    address: u64,
) -> Result<[u8; N], Error> {
    let mut bytes = [0; N];
    if memory.read(address, &mut bytes) {
        Ok(bytes)
    } else {
        Err(Error::Unreadable { address })
    }
}

fn u32_at(bytes: &[u8], offset: usize) -> u32 {
    u32::from_le_bytes(bytes[offset..offset + 4].try_into().expect("four bytes"))
}

fn u64_at(bytes: &[u8], offset: usize) -> u64 {
    u64::from_le_bytes(bytes[offset..offset + 8].try_into().expect("eight bytes"))
}

/// Sums `length` bytes at `address` (a checksummed structure sums to 0).
fn checksum(memory: &impl PhysicalMemory, address: u64, length: u32) -> Result<u8, Error> {
    let mut sum = 0u8;
    let mut chunk = [0u8; 64];
    let mut done = 0u32;
    while done < length {
        let take = (length - done).min(chunk.len() as u32) as usize;
        let at = address + u64::from(done);
        if !memory.read(at, &mut chunk[..take]) {
            return Err(Error::Unreadable { address: at });
        }
        sum = chunk[..take].iter().fold(sum, |sum, byte| sum.wrapping_add(*byte));
        done += take as u32;
    }
    Ok(sum)
}

/// A table's signature and length, after checking its length and checksum.
fn checked_table(memory: &impl PhysicalMemory, address: u64) -> Result<([u8; 4], u32), Error> {
    let header: [u8; SDT_HEADER] = read_array(memory, address)?;
    let signature: [u8; 4] = header[..4].try_into().expect("four bytes");
    let length = u32_at(&header, 4);
    if (length as usize) < SDT_HEADER || length > MAX_TABLE {
        return Err(Error::BadLength { signature, length });
    }
    if checksum(memory, address, length)? != 0 {
        return Err(Error::BadChecksum { signature });
    }
    Ok((signature, length))
}

/// Reads the MADT, starting from the RSDP at physical `rsdp_address`.
pub fn read_madt(memory: &impl PhysicalMemory, rsdp_address: u64) -> Result<Madt, Error> {
    let madt_address = find_table(memory, rsdp_address, *b"APIC")?;
    parse_madt(memory, madt_address)
}

/// The physical address of the table with `wanted`'s signature, through
/// the XSDT when the RSDP has one (ACPI 2.0+), else the RSDT.
fn find_table(
    memory: &impl PhysicalMemory,
    rsdp_address: u64,
    wanted: [u8; 4],
) -> Result<u64, Error> {
    let rsdp: [u8; 36] = {
        // An ACPI 1.0 RSDP is only 20 bytes: read those first.
        let first: [u8; 20] = read_array(memory, rsdp_address)?;
        if &first[..8] != b"RSD PTR " {
            return Err(Error::BadRsdpSignature);
        }
        if checksum(memory, rsdp_address, 20)? != 0 {
            return Err(Error::BadChecksum { signature: *b"RSD " });
        }
        let mut whole = [0u8; 36];
        whole[..20].copy_from_slice(&first);
        if first[15] >= 2 {
            whole = read_array(memory, rsdp_address)?;
            if checksum(memory, rsdp_address, 36)? != 0 {
                return Err(Error::BadChecksum { signature: *b"RSD " });
            }
        }
        whole
    };
    let (table, entry_size) = match (rsdp[15] >= 2, u64_at(&rsdp, 24)) {
        (true, xsdt) if xsdt != 0 => (xsdt, 8),
        _ => (u64::from(u32_at(&rsdp, 16)), 4),
    };
    let (_, length) = checked_table(memory, table)?;
    let entries = ((length as usize - SDT_HEADER) / entry_size).min(MAX_TABLES);
    for index in 0..entries {
        let at = table + (SDT_HEADER + index * entry_size) as u64;
        let address = if entry_size == 8 {
            u64::from_le_bytes(read_array(memory, at)?)
        } else {
            u64::from(u32::from_le_bytes(read_array(memory, at)?))
        };
        let signature: [u8; 4] = read_array(memory, address)?;
        if signature == wanted {
            return Ok(address);
        }
    }
    Err(Error::NoMadt)
}

/// Parses the MADT at physical `address`.
pub fn parse_madt(memory: &impl PhysicalMemory, address: u64) -> Result<Madt, Error> {
    let (signature, length) = checked_table(memory, address)?;
    if signature != *b"APIC" || (length as usize) < SDT_HEADER + 8 {
        return Err(Error::BadLength { signature, length });
    }
    let fixed: [u8; 8] = read_array(memory, address + SDT_HEADER as u64)?;
    let mut madt = Madt {
        local_apic_address: u64::from(u32_at(&fixed, 0)),
        has_8259: u32_at(&fixed, 4) & 1 != 0,
        cpus: [Cpu::default(); MAX_CPUS],
        count: 0,
    };
    let mut offset = SDT_HEADER as u32 + 8;
    while offset + 2 <= length {
        let [entry_type, entry_length] = read_array(memory, address + u64::from(offset))?;
        let bad = Error::BadEntry { offset, entry_type, length: entry_length };
        if entry_length < 2 || offset + u32::from(entry_length) > length {
            return Err(bad);
        }
        let mut entry = [0u8; 255];
        let entry = &mut entry[..usize::from(entry_length)];
        if !memory.read(address + u64::from(offset), entry) {
            return Err(Error::Unreadable { address: address + u64::from(offset) });
        }
        match entry_type {
            // Processor Local APIC: UID u8, APIC ID u8, flags u32.
            0 => {
                if entry_length < 8 {
                    return Err(bad);
                }
                // APIC ID 0xff is the xAPIC broadcast, never a CPU (Linux
                // skips it too).
                if entry[3] != 0xff {
                    push(&mut madt, u32::from(entry[2]), u32::from(entry[3]), u32_at(entry, 4))?;
                }
            }
            // Local APIC address override: reserved u16, address u64.
            5 => {
                if entry_length < 12 {
                    return Err(bad);
                }
                madt.local_apic_address = u64_at(entry, 4);
            }
            // Processor Local x2APIC: reserved u16, x2APIC ID u32,
            // flags u32, UID u32.
            9 => {
                if entry_length < 16 {
                    return Err(bad);
                }
                push(&mut madt, u32_at(entry, 12), u32_at(entry, 4), u32_at(entry, 8))?;
            }
            _ => {}
        }
        offset += u32::from(entry_length);
    }
    Ok(madt)
}

/// Keeps a processor entry, unless it can never run (neither enabled nor
/// online-capable) or names an APIC ID already listed (firmware may list a
/// CPU both as a local APIC and as an x2APIC).
fn push(madt: &mut Madt, processor_uid: u32, apic_id: u32, flags: u32) -> Result<(), Error> {
    if flags & 0b11 == 0 || madt.cpus().iter().any(|cpu| cpu.apic_id == apic_id) {
        return Ok(());
    }
    let slot = madt.cpus.get_mut(madt.count).ok_or(Error::TooManyCpus)?;
    *slot = Cpu { processor_uid, apic_id, enabled: flags & 1 != 0, online_capable: flags & 2 != 0 };
    madt.count += 1;
    Ok(())
}

#[cfg(test)]
mod tests;
