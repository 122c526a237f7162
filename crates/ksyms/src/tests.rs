//! The table's round trip, its lookups at every edge, and that no malformed
//! table makes the reader panic or read past it.

extern crate std;

use super::*;
use proptest::prelude::*;
use std::string::String;
use std::vec::Vec;

fn name_of(table: &Table<'_>, index: usize) -> String {
    let mut name = Name::new();
    table.name(index, &mut name).unwrap();
    name.as_str().into()
}

#[test]
fn finds_every_function_and_nothing_between() {
    let symbols = [
        (0x1000, 0x10, "kernel::a::first"),
        (0x1010, 0x20, "kernel::a::second"),
        (0x1040, 0x8, "<kernel::a::Type as core::fmt::Debug>::fmt"),
    ];
    let bytes = encode(&symbols).unwrap();
    let table = Table::parse(&bytes).unwrap();
    assert_eq!(table.len(), 3);
    assert_eq!(table.find(0xfff), None);
    assert_eq!(table.find(0x1000), Some(Function { index: 0, start: 0x1000, size: 0x10 }));
    assert_eq!(table.find(0x100f).map(|f| f.index), Some(0));
    assert_eq!(table.find(0x1010).map(|f| f.index), Some(1));
    assert_eq!(table.find(0x1030), None, "the gap after the second");
    assert_eq!(table.find(0x1047).map(|f| f.index), Some(2));
    assert_eq!(table.find(0x1048), None);
    assert_eq!(table.find(u64::MAX), None);
    for (index, &(_, _, name)) in symbols.iter().enumerate() {
        assert_eq!(name_of(&table, index), name);
    }
}

#[test]
fn an_alias_names_the_first_symbol_given() {
    let bytes =
        encode(&[(0x20, 4, "b::second"), (0x10, 4, "a::first"), (0x10, 4, "a::alias")]).unwrap();
    let table = Table::parse(&bytes).unwrap();
    assert_eq!(table.len(), 2);
    assert_eq!(name_of(&table, table.find(0x12).unwrap().index), "a::first");
}

#[test]
fn the_writer_refuses_what_the_reader_could_not_answer() {
    assert_eq!(encode(&[(0x10, 8, "a"), (0x14, 8, "b")]), Err(Error::Overlap));
    assert_eq!(encode(&[(0x10, 8, "a"), (0x10, 16, "b")]), Err(Error::Overlap), "aliases' sizes");
    assert_eq!(encode(&[(0x10, 0, "a")]), Err(Error::EmptySymbol));
    assert_eq!(encode(&[(0xffff_fff0, 0x20, "a")]), Err(Error::AddressTooLarge));
    assert_eq!(encode(&[(0x10, 1, "a\0b")]), Err(Error::NulInName));
    assert_eq!(encode(&[(0x10, 1, "caf\u{e9}")]), Err(Error::NotAscii));
    let long = "x".repeat(MAX_NAME + 1);
    assert_eq!(encode(&[(0x10, 1, &long)]), Err(Error::NameTooLong));
    let longest = "y".repeat(MAX_NAME);
    let bytes = encode(&[(0x10, 1, &longest), (0x11, 1, &longest)]).unwrap();
    assert_eq!(name_of(&Table::parse(&bytes).unwrap(), 1), longest);
}

#[test]
fn names_share_prefixes_but_not_across_a_restart() {
    let names: Vec<String> =
        (0..RESTART_INTERVAL * 2 + 3).map(|i| std::format!("kernel::module::f{i:03}")).collect();
    let symbols: Vec<(u64, u64, &str)> =
        names.iter().enumerate().map(|(i, name)| (i as u64 * 16, 16, name.as_str())).collect();
    let bytes = encode(&symbols).unwrap();
    let plain: usize = names.iter().map(|name| name.len() + 1).sum();
    assert!(bytes.len() < HEADER_SIZE + symbols.len() * ENTRY_SIZE + plain / 2, "{}", bytes.len());
    let table = Table::parse(&bytes).unwrap();
    for (index, name) in names.iter().enumerate() {
        assert_eq!(&name_of(&table, index), name);
    }
    // A restart's name that claims a shared prefix is refused.
    let mut bad = bytes.clone();
    let restart = read_u32(table.restarts, 4).unwrap() as usize;
    let names_start = bytes.len() - table.names.len();
    bad[names_start + restart] = 3;
    let bad_table = Table::parse(&bad).unwrap();
    let mut name = Name::new();
    assert_eq!(bad_table.name(RESTART_INTERVAL, &mut name), Err(Error::BadPrefix));
}

#[test]
fn repeated_text_becomes_tokens_and_a_bad_token_is_refused() {
    let names: Vec<String> = (0..50)
        .map(|i| std::format!("<kernel::entry::Thing{i} as core::fmt::Debug>::fmt::{{closure#0}}"))
        .collect();
    let symbols: Vec<(u64, u64, &str)> =
        names.iter().enumerate().map(|(i, name)| (i as u64 * 16, 16, name.as_str())).collect();
    let bytes = encode(&symbols).unwrap();
    let table = Table::parse(&bytes).unwrap();
    let used = table.tokens.chunks(2).filter(|pair| pair != &[0, 0]).count();
    assert!(used > 10, "{used} tokens");
    let plain: usize = names.iter().map(|name| name.len()).sum();
    assert!(table.names.len() < plain / 4, "{} of {plain}", table.names.len());
    for (index, name) in names.iter().enumerate() {
        assert_eq!(&name_of(&table, index), name);
    }
    // A token whose pair names itself would never end: refused.
    let tokens_start = HEADER_SIZE;
    let mut bad = bytes.clone();
    bad[tokens_start] = FIRST_TOKEN;
    let bad_table = Table::parse(&bad).unwrap();
    let refused = (0..names.len())
        .any(|index| bad_table.name(index, &mut Name::new()) == Err(Error::BadToken));
    assert!(refused, "no name used token 0x80");
}

#[test]
fn a_prefix_longer_than_255_bytes_is_shared_in_part() {
    let base = "p".repeat(300);
    let (a, b) = (std::format!("{base}a"), std::format!("{base}b"));
    let bytes = encode(&[(0, 1, &a), (1, 1, &b)]).unwrap();
    let table = Table::parse(&bytes).unwrap();
    assert_eq!(name_of(&table, 0), a);
    assert_eq!(name_of(&table, 1), b);
}

#[test]
fn a_bad_header_is_an_error() {
    assert_eq!(Table::parse(b"").unwrap_err(), Error::BadMagic);
    assert_eq!(Table::parse(&[&MAGIC[..], b"\x01"].concat()).unwrap_err(), Error::Truncated);
    assert_eq!(Table::parse(b"ELF.....xxxxxxxx").unwrap_err(), Error::BadMagic);
    let mut bytes = encode(&[(0, 1, "a")]).unwrap();
    bytes[12] = 2;
    assert_eq!(Table::parse(&bytes).unwrap_err(), Error::BadRestartCount);
    let empty = encode(&[]).unwrap();
    let table = Table::parse(&empty).unwrap();
    assert!(table.is_empty());
    assert_eq!(table.find(0), None);
    assert_eq!(table.name(0, &mut Name::new()), Err(Error::NoSuchEntry));
}

fn symbols_strategy() -> impl Strategy<Value = Vec<(u64, u64, String)>> {
    proptest::collection::vec(("[a-c:<> ]{0,40}", 1u64..64, 0u64..64), 0..80).prop_map(|items| {
        let mut start = 0;
        items
            .into_iter()
            .map(|(name, size, gap)| {
                start += gap;
                let symbol = (start, size, name);
                start += size;
                symbol
            })
            .collect()
    })
}

proptest! {
    #[test]
    fn every_name_and_address_comes_back(symbols in symbols_strategy()) {
        let given: Vec<(u64, u64, &str)> =
            symbols.iter().map(|(start, size, name)| (*start, *size, name.as_str())).collect();
        let bytes = encode(&given).unwrap();
        let table = Table::parse(&bytes).unwrap();
        prop_assert_eq!(table.len(), given.len());
        for (index, &(start, size, name)) in given.iter().enumerate() {
            let found = table.find(start + size - 1).unwrap();
            prop_assert_eq!(found, Function { index, start, size });
            prop_assert_eq!(table.find(start).unwrap().index, index);
            prop_assert_eq!(name_of(&table, index), name);
        }
    }

    #[test]
    fn a_cut_or_changed_table_never_panics(
        symbols in symbols_strategy(),
        cut in any::<prop::sample::Index>(),
        flip in any::<(prop::sample::Index, u8)>(),
    ) {
        let given: Vec<(u64, u64, &str)> =
            symbols.iter().map(|(start, size, name)| (*start, *size, name.as_str())).collect();
        let mut bytes = encode(&given).unwrap();
        let position = flip.0.index(bytes.len());
        bytes[position] ^= flip.1;
        let bytes = &bytes[..cut.index(bytes.len() + 1)];
        if let Ok(table) = Table::parse(bytes) {
            let mut name = Name::new();
            // What this checks is that nothing panics or reads past the
            // bytes: any answer, or an error, will do.
            for index in 0..table.len().min(200) {
                let _ = table.find(index as u64 * 7);
                let _ = table.name(index, &mut name);
            }
        }
    }
}
