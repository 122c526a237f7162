//! The packed form's decoding, and prelink over synthetic ELF files: every
//! named word moved by the base and no other, the tags gone, and a
//! refusal for tables or targets outside the file.

use super::*;
use proptest::prelude::*;

const LOAD_VADDR: u64 = 0x1000;
const DATA_OFFSET: usize = 0x100;
const DT_RELA: u64 = 7;
const DT_HASH: u64 = 4;

/// An ELF64 file of one PT_LOAD (all of it, at LOAD_VADDR) and a
/// PT_DYNAMIC: `words` at DATA_OFFSET, then the RELR table, then the
/// dynamic entries (`dynamic`, where a DT_RELR value of u64::MAX stands for
/// the table's address).
fn synthetic_elf(words: &[u64], relr: &[u64], dynamic: &[(u64, u64)]) -> Vec<u8> {
    let mut file = vec![0u8; DATA_OFFSET];
    file[..4].copy_from_slice(b"\x7fELF");
    file[4] = 2; // ELFCLASS64
    file[5] = 1; // little-endian
    file[6] = 1;
    file[16..18].copy_from_slice(&3u16.to_le_bytes()); // ET_DYN
    file[18..20].copy_from_slice(&62u16.to_le_bytes()); // x86-64
    file[20..24].copy_from_slice(&1u32.to_le_bytes());
    file[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
    file[52..54].copy_from_slice(&64u16.to_le_bytes());
    file[54..56].copy_from_slice(&56u16.to_le_bytes());
    file[56..58].copy_from_slice(&2u16.to_le_bytes());
    file[58..60].copy_from_slice(&64u16.to_le_bytes());
    for word in words {
        file.extend_from_slice(&word.to_le_bytes());
    }
    let relr_offset = file.len() as u64;
    for entry in relr {
        file.extend_from_slice(&entry.to_le_bytes());
    }
    let dynamic_offset = file.len() as u64;
    for &(tag, value) in dynamic {
        let value =
            if tag == DT_RELR && value == u64::MAX { LOAD_VADDR + relr_offset } else { value };
        file.extend_from_slice(&tag.to_le_bytes());
        file.extend_from_slice(&value.to_le_bytes());
    }
    let length = file.len() as u64;
    // PT_LOAD is 1, PT_DYNAMIC 2.
    let program_header = |at: usize, kind: u32, offset: u64, size: u64, file: &mut Vec<u8>| {
        file[at..at + 4].copy_from_slice(&kind.to_le_bytes());
        file[at + 8..at + 16].copy_from_slice(&offset.to_le_bytes());
        file[at + 16..at + 24].copy_from_slice(&(LOAD_VADDR + offset).to_le_bytes());
        file[at + 32..at + 40].copy_from_slice(&size.to_le_bytes());
        file[at + 40..at + 48].copy_from_slice(&size.to_le_bytes());
    };
    program_header(64, 1, 0, length, &mut file);
    program_header(120, 2, dynamic_offset, length - dynamic_offset, &mut file);
    file
}

/// The link-time address of data word `index`.
fn word_address(index: usize) -> u64 {
    LOAD_VADDR + DATA_OFFSET as u64 + index as u64 * 8
}

/// The packed form of sorted word addresses, as lld writes it.
fn encode_relr(addresses: &[u64]) -> Vec<u64> {
    let mut table = Vec::new();
    let mut index = 0;
    while index < addresses.len() {
        table.push(addresses[index]);
        let mut base = addresses[index] + 8;
        index += 1;
        loop {
            let mut bitmap = 0u64;
            while index < addresses.len() && addresses[index] < base + 63 * 8 {
                bitmap |= 1 << ((addresses[index] - base) / 8 + 1);
                index += 1;
            }
            if bitmap == 0 {
                break;
            }
            table.push(bitmap | 1);
            base += 63 * 8;
        }
    }
    table
}

fn dynamic_entries(file: &[u8]) -> Vec<(u64, u64)> {
    let (_, (offset, size)) = load_segments(file).unwrap();
    file[offset as usize..(offset + size) as usize]
        .as_chunks::<16>()
        .0
        .iter()
        .map(|entry| (read_u64(entry, 0), read_u64(entry, 8)))
        .collect()
}

#[test]
fn decodes_addresses_and_bitmaps() {
    let table = [0x10000, (1 << 1) | (1 << 3) | 1, (1 << 63) | 1, 0x20000];
    assert_eq!(
        relr_addresses(&table),
        Ok(vec![0x10000, 0x10008, 0x10018, 0x10008 + 63 * 8 + 62 * 8, 0x20000])
    );
    assert_eq!(relr_addresses(&[0b101]), Err(Error::BitmapWithoutAddress));
}

#[test]
fn a_file_without_relr_comes_back_unchanged() {
    let file = synthetic_elf(&[1, 2, 3], &[], &[(DT_HASH, 0x1234), (0, 0)]);
    let prelinked = prelink(&file, 0xffff_8000_0000_0000).unwrap();
    assert_eq!(prelinked.file, file);
    assert!(prelinked.relocated.is_empty());
}

#[test]
fn refuses_tables_and_targets_outside_the_file() {
    assert!(matches!(prelink(b"not an elf", 0), Err(Error::NotElf(_))));
    let outside = synthetic_elf(&[0; 4], &[0x9000_0000], &[(DT_RELR, u64::MAX), (DT_RELRSZ, 8)]);
    assert_eq!(prelink(&outside, 1), Err(Error::OutsideSegments(0x9000_0000)));
    let no_size = synthetic_elf(&[0; 4], &[word_address(0)], &[(DT_RELR, u64::MAX)]);
    assert_eq!(prelink(&no_size, 1), Err(Error::BadRelrTags));
    let bad_entry = synthetic_elf(
        &[0; 4],
        &[word_address(0)],
        &[(DT_RELR, u64::MAX), (DT_RELRSZ, 8), (DT_RELRENT, 16)],
    );
    assert_eq!(prelink(&bad_entry, 1), Err(Error::BadRelrTags));
    let table_cut =
        synthetic_elf(&[0; 4], &[word_address(0)], &[(DT_RELR, u64::MAX), (DT_RELRSZ, 4096)]);
    assert!(matches!(prelink(&table_cut, 1), Err(Error::OutsideSegments(_))));
}

proptest! {
    #[test]
    fn moves_exactly_the_named_words_and_drops_the_tags(
        words in proptest::collection::vec(any::<u64>(), 1..400),
        picks in proptest::collection::vec(any::<prop::sample::Index>(), 0..200),
        base in any::<u64>(),
    ) {
        let mut named: Vec<usize> = picks.iter().map(|pick| pick.index(words.len())).collect();
        named.sort_unstable();
        named.dedup();
        let addresses: Vec<u64> = named.iter().map(|&index| word_address(index)).collect();
        let relr = encode_relr(&addresses);
        let dynamic = [
            (DT_HASH, 0x1234),
            (DT_RELR, u64::MAX),
            (DT_RELA, 0x5678),
            (DT_RELRSZ, relr.len() as u64 * 8),
            (DT_RELRENT, 8),
            (0, 0),
        ];
        let file = synthetic_elf(&words, &relr, &dynamic);
        let prelinked = prelink(&file, base).unwrap();
        prop_assert_eq!(&prelinked.relocated, &addresses);
        for (index, &word) in words.iter().enumerate() {
            let offset = DATA_OFFSET + index * 8;
            let expected = if named.contains(&index) { word.wrapping_add(base) } else { word };
            prop_assert_eq!(read_u64(&prelinked.file, offset), expected);
        }
        prop_assert_eq!(
            dynamic_entries(&prelinked.file),
            vec![(DT_HASH, 0x1234), (DT_RELA, 0x5678), (0, 0), (0, 0), (0, 0), (0, 0)]
        );
        prop_assert_eq!(prelinked.file.len(), file.len());
    }
}

proptest! {
    #[test]
    fn a_cut_or_changed_file_is_refused_or_relocated_never_a_panic(
        words in proptest::collection::vec(any::<u64>(), 1..40),
        flip in any::<(prop::sample::Index, u8)>(),
        cut in any::<prop::sample::Index>(),
    ) {
        let addresses: Vec<u64> = (0..words.len()).step_by(3).map(word_address).collect();
        let relr = encode_relr(&addresses);
        let dynamic = [(DT_RELR, u64::MAX), (DT_RELRSZ, relr.len() as u64 * 8), (0, 0)];
        let mut file = synthetic_elf(&words, &relr, &dynamic);
        let position = flip.0.index(file.len());
        file[position] ^= flip.1;
        let file = &file[..cut.index(file.len() + 1)];
        // What this checks is that nothing panics or reads past the file:
        // a relocated file, or an error, will do.
        if let Ok(prelinked) = prelink(file, 0x1000) {
            prop_assert_eq!(prelinked.file.len(), file.len());
        }
    }
}
