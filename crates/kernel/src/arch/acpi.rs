//! The CPUs the firmware's ACPI tables list (the MADT), read through the
//! physical-memory mapping from the RSDP the loader found.
//!
//! This is the first step of bringing the other CPUs up: it finds them.
//! The kernel still runs on the boot CPU alone (docs/design.md, "Per-CPU
//! and per-task state", says what each one will need first).

use crate::arch::memory;
use extregs_madt::{Madt, PhysicalMemory};
use x86_64::{PhysAddr, VirtAddr};

/// Physical memory as the kernel maps it: every page the loader's
/// physical-memory mapping covers, nothing else.
struct MappedPhysicalMemory;

impl PhysicalMemory for MappedPhysicalMemory {
    fn read(&self, address: u64, buffer: &mut [u8]) -> bool {
        let Some(end) = address.checked_add(buffer.len() as u64) else { return false };
        // Every page of the range must be mapped (a table may cross a page).
        let mut page = address & !0xfff;
        while page < end {
            let Some(virtual_page) = PhysAddr::try_new(page).ok().map(memory::physical_to_virtual)
            else {
                return false;
            };
            if !memory::is_mapped(virtual_page) {
                return false;
            }
            page += 0x1000;
        }
        let source: VirtAddr = memory::physical_to_virtual(PhysAddr::new(address));
        for (offset, byte) in buffer.iter_mut().enumerate() {
            // SAFETY: a byte on a page of the loader's physical-memory mapping (checked above),
            // which no Rust allocation or reference covers: exposed provenance from its address,
            // and a volatile byte read, which can't be an invalid value.
            *byte = unsafe {
                core::ptr::read_volatile(core::ptr::with_exposed_provenance::<u8>(
                    source.as_u64() as usize + offset,
                ))
            };
        }
        true
    }
}

/// Reads the MADT from the RSDP at physical `rsdp_address`.
pub fn read_madt(rsdp_address: u64) -> Result<Madt, extregs_madt::Error> {
    extregs_madt::read_madt(&MappedPhysicalMemory, rsdp_address)
}

/// Prints the CPUs the MADT lists, as one line (`extregs: acpi: MADT
/// lists 6 CPUs (APIC IDs 0 1 2 4 5 6)`), or why it could not be read;
/// returns the MADT.
pub fn print_cpus(rsdp_address: Option<u64>) -> Option<Madt> {
    let Some(rsdp_address) = rsdp_address else {
        println!("extregs: acpi: the loader found no RSDP: no MADT, one CPU");
        return None;
    };
    match read_madt(rsdp_address) {
        Ok(madt) => {
            let count = madt.enabled_cpus().count();
            print!(
                "extregs: acpi: MADT lists {count} CPU{} (APIC ID{}",
                if count == 1 { "" } else { "s" },
                if count == 1 { "" } else { "s" }
            );
            for cpu in madt.enabled_cpus() {
                print!(" {}", cpu.apic_id);
            }
            println!("), local APIC at {:#x}", madt.local_apic_address);
            Some(madt)
        }
        Err(why) => {
            println!("extregs: acpi: cannot read the MADT: {why}");
            None
        }
    }
}
