//! Host tests: tables built byte by byte, as firmware lays them out, and
//! malformed ones.

extern crate std;

use super::*;
use proptest::prelude::*;
use std::vec::Vec;

/// Physical memory from `BASE` up, as a byte vector.
struct FakeMemory {
    bytes: Vec<u8>,
}

const BASE: u64 = 0xe0000;

impl PhysicalMemory for FakeMemory {
    fn read(&self, address: u64, buffer: &mut [u8]) -> bool {
        let Some(start) = address.checked_sub(BASE) else { return false };
        let Some(end) = start.checked_add(buffer.len() as u64) else { return false };
        match self.bytes.get(start as usize..end as usize) {
            Some(bytes) => {
                buffer.copy_from_slice(bytes);
                true
            }
            None => false,
        }
    }
}

/// Sets byte `at` so that `bytes[range]` sums to 0.
fn fix_checksum(bytes: &mut [u8], range: core::ops::Range<usize>, at: usize) {
    bytes[at] = 0;
    let sum = bytes[range].iter().fold(0u8, |sum, byte| sum.wrapping_add(*byte));
    bytes[at] = 0u8.wrapping_sub(sum);
}

/// An SDT: header (checksum fixed) and `body`.
fn table(signature: &[u8; 4], body: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::new();
    bytes.extend_from_slice(signature);
    bytes.extend_from_slice(&((36 + body.len()) as u32).to_le_bytes());
    bytes.push(1); // revision
    bytes.push(0); // checksum
    bytes.extend_from_slice(b"EXTREG"); // OEM ID
    bytes.extend_from_slice(b"TESTTABL"); // OEM table ID
    bytes.extend_from_slice(&[0; 12]); // OEM revision, creator ID and revision
    bytes.extend_from_slice(body);
    let length = bytes.len();
    fix_checksum(&mut bytes, 0..length, 9);
    bytes
}

fn local_apic(uid: u8, apic_id: u8, flags: u32) -> Vec<u8> {
    let mut entry = std::vec![0, 8, uid, apic_id];
    entry.extend_from_slice(&flags.to_le_bytes());
    entry
}

fn x2apic(uid: u32, apic_id: u32, flags: u32) -> Vec<u8> {
    let mut entry = std::vec![9, 16, 0, 0];
    entry.extend_from_slice(&apic_id.to_le_bytes());
    entry.extend_from_slice(&flags.to_le_bytes());
    entry.extend_from_slice(&uid.to_le_bytes());
    entry
}

fn madt_body(entries: &[Vec<u8>]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&0xfee0_0000u32.to_le_bytes());
    body.extend_from_slice(&1u32.to_le_bytes()); // PCAT_COMPAT
                                                 // An I/O APIC entry (type 1, 12 bytes): skipped.
    body.extend_from_slice(&[1, 12, 0, 0, 0, 0, 0xc0, 0xfe, 0, 0, 0, 0]);
    for entry in entries {
        body.extend_from_slice(entry);
    }
    body
}

/// Memory holding an RSDP at `BASE` (revision 0 with an RSDT, or 2 with an
/// XSDT), the root table, a decoy table, and `madt` (a whole table).
fn machine(madt: &[u8], xsdt: bool) -> FakeMemory {
    let decoy = table(b"FACP", &[0; 16]);
    let (decoy_at, madt_at) = (BASE + 0x100, BASE + 0x200);
    let root_at = BASE + 0x40;
    let root = if xsdt {
        let mut body = decoy_at.to_le_bytes().to_vec();
        body.extend_from_slice(&madt_at.to_le_bytes());
        table(b"XSDT", &body)
    } else {
        let mut body = (decoy_at as u32).to_le_bytes().to_vec();
        body.extend_from_slice(&(madt_at as u32).to_le_bytes());
        table(b"RSDT", &body)
    };
    let mut bytes = std::vec![0u8; 0x200 + madt.len()];
    let rsdp = &mut bytes[..36];
    rsdp[..8].copy_from_slice(b"RSD PTR ");
    rsdp[9..15].copy_from_slice(b"EXTREG");
    rsdp[15] = if xsdt { 2 } else { 0 };
    rsdp[16..20].copy_from_slice(&(root_at as u32).to_le_bytes());
    if xsdt {
        rsdp[20..24].copy_from_slice(&36u32.to_le_bytes());
        // The XSDT is what an ACPI 2.0 reader must use: the RSDT address
        // points nowhere useful.
        rsdp[16..20].copy_from_slice(&0xdead_0000u32.to_le_bytes());
        rsdp[24..32].copy_from_slice(&root_at.to_le_bytes());
    }
    // The first 20 bytes sum to 0, then all 36 (ACPI 2.0's extended sum).
    fix_checksum(rsdp, 0..20, 8);
    if xsdt {
        fix_checksum(rsdp, 0..36, 32);
    }
    bytes[0x40..0x40 + root.len()].copy_from_slice(&root);
    bytes[0x100..0x100 + decoy.len()].copy_from_slice(&decoy);
    bytes[0x200..].copy_from_slice(madt);
    FakeMemory { bytes }
}

/// QEMU's `-smp 6,sockets=2,cores=3`: APIC IDs with a gap.
fn six_cpus_with_a_gap() -> Vec<Vec<u8>> {
    [0, 1, 2, 4, 5, 6].iter().enumerate().map(|(uid, id)| local_apic(uid as u8, *id, 1)).collect()
}

#[test]
fn cpus_come_in_madt_order_with_their_apic_ids() {
    for xsdt in [false, true] {
        let memory = machine(&table(b"APIC", &madt_body(&six_cpus_with_a_gap())), xsdt);
        let madt = read_madt(&memory, BASE).expect("a MADT");
        let ids: Vec<u32> = madt.enabled_cpus().map(|cpu| cpu.apic_id).collect();
        assert_eq!(ids, [0, 1, 2, 4, 5, 6], "xsdt {xsdt}");
        let uids: Vec<u32> = madt.cpus().iter().map(|cpu| cpu.processor_uid).collect();
        assert_eq!(uids, [0, 1, 2, 3, 4, 5]);
        assert_eq!(madt.local_apic_address, 0xfee0_0000);
        assert!(madt.has_8259);
    }
}

#[test]
fn disabled_and_online_capable_cpus_are_told_apart() {
    let entries = [local_apic(0, 0, 1), local_apic(1, 1, 0), local_apic(2, 2, 2)];
    let memory = machine(&table(b"APIC", &madt_body(&entries)), true);
    let madt = read_madt(&memory, BASE).unwrap();
    // The one that can never run is left out.
    assert_eq!(madt.cpus().len(), 2);
    assert_eq!(madt.enabled_cpus().count(), 1);
    assert!(!madt.cpus()[1].enabled && madt.cpus()[1].online_capable);
}

#[test]
fn a_cpu_listed_twice_and_the_broadcast_id_are_left_out() {
    let entries = [local_apic(0, 0, 1), local_apic(1, 0xff, 1), x2apic(0, 0, 1), x2apic(2, 2, 1)];
    let memory = machine(&table(b"APIC", &madt_body(&entries)), false);
    let ids: Vec<u32> =
        read_madt(&memory, BASE).unwrap().cpus().iter().map(|cpu| cpu.apic_id).collect();
    assert_eq!(ids, [0, 2]);
}

#[test]
fn x2apic_entries_and_an_address_override() {
    let mut override_entry = std::vec![5, 12, 0, 0];
    override_entry.extend_from_slice(&0x1_fee0_0000u64.to_le_bytes());
    let entries = [local_apic(0, 0, 1), x2apic(7, 300, 1), override_entry];
    let memory = machine(&table(b"APIC", &madt_body(&entries)), false);
    let madt = read_madt(&memory, BASE).unwrap();
    assert_eq!(
        madt.cpus()[1],
        Cpu { processor_uid: 7, apic_id: 300, enabled: true, online_capable: false }
    );
    assert_eq!(madt.local_apic_address, 0x1_fee0_0000);
}

#[test]
fn broken_tables_are_refused_with_a_reason() {
    let good = table(b"APIC", &madt_body(&six_cpus_with_a_gap()));
    // A MADT byte changed: its checksum no longer adds up.
    let mut corrupt = good.clone();
    corrupt[50] ^= 1;
    assert_eq!(
        read_madt(&machine(&corrupt, true), BASE),
        Err(Error::BadChecksum { signature: *b"APIC" })
    );
    // An entry of length 0 (would loop forever) and one past the end.
    for (length, entry) in [(0u8, 0u8), (200, 0)] {
        let mut body = madt_body(&[]);
        body.extend_from_slice(&[entry, length, 0, 0, 0, 0, 0, 0]);
        let result = read_madt(&machine(&table(b"APIC", &body), false), BASE);
        assert!(matches!(result, Err(Error::BadEntry { .. })), "{result:?}");
    }
    // A local APIC entry too short for its fields.
    let mut body = madt_body(&[]);
    body.extend_from_slice(&[0, 4, 0, 0]);
    let result = read_madt(&machine(&table(b"APIC", &body), false), BASE);
    assert!(matches!(result, Err(Error::BadEntry { entry_type: 0, length: 4, .. })), "{result:?}");
    // No RSDP signature; a root table naming no MADT.
    let mut memory = machine(&good, true);
    memory.bytes[0] = b'X';
    assert_eq!(read_madt(&memory, BASE), Err(Error::BadRsdpSignature));
    let memory = machine(&table(b"SSDT", &[0; 8]), true);
    assert_eq!(read_madt(&memory, BASE), Err(Error::NoMadt));
    // An RSDP outside mapped memory.
    assert_eq!(read_madt(&memory, 0x1000), Err(Error::Unreadable { address: 0x1000 }));
    // More processors than the parser keeps (disabled ones don't count).
    let disabled: Vec<Vec<u8>> = (0..100).map(|id| local_apic(id as u8, id as u8, 0)).collect();
    let memory = machine(&table(b"APIC", &madt_body(&disabled)), true);
    assert_eq!(read_madt(&memory, BASE).unwrap().cpus().len(), 0);
    let many: Vec<Vec<u8>> = (0..=MAX_CPUS).map(|id| local_apic(id as u8, id as u8, 1)).collect();
    let memory = machine(&table(b"APIC", &madt_body(&many)), true);
    assert_eq!(read_madt(&memory, BASE), Err(Error::TooManyCpus));
}

proptest! {
    /// Whatever bytes the MADT holds (checksum fixed, so the parser must
    /// walk them), the parser answers: a MADT or an error, never a panic,
    /// a loop or a read outside the table.
    #[test]
    fn any_madt_body_is_parsed_or_refused(body in proptest::collection::vec(any::<u8>(), 8..300)) {
        let memory = machine(&table(b"APIC", &body), true);
        if let Ok(madt) = read_madt(&memory, BASE) {
            prop_assert!(madt.cpus().len() <= MAX_CPUS);
        }
    }

    /// Any set of well-formed enabled processors comes back exactly, in
    /// order, each APIC ID once.
    #[test]
    fn well_formed_processors_come_back(ids in proptest::collection::btree_set(0u8..0xff, 0..40)) {
        let entries: Vec<Vec<u8>> =
            ids.iter().enumerate().map(|(uid, id)| local_apic(uid as u8, *id, 1)).collect();
        let memory = machine(&table(b"APIC", &madt_body(&entries)), false);
        let madt = read_madt(&memory, BASE).unwrap();
        let got: Vec<u32> = madt.cpus().iter().map(|cpu| cpu.apic_id).collect();
        let want: Vec<u32> = ids.iter().map(|id| u32::from(*id)).collect();
        prop_assert_eq!(got, want);
    }
}
