//! The kernel's function-symbol table in the form the images carry it: a
//! compact table in the spirit of Linux's kallsyms, written by the root
//! build script from the full ELF's function symbols and read by the
//! kernel's `debug::symbols` without an allocator.
//!
//! Why not the ELF `.symtab`: the BIOS loader copies the kernel file a byte
//! at a time, about half a second per MB under TCG while the loader's stack
//! shared its code's page (docs/boot.md), and
//! `.symtab` plus `.strtab` were 130 KB of it, the names v0-mangled, with a
//! demangler (25 KB of code) in the kernel to print them. Here the names are
//! stored demangled (`{:#}`, no hashes), each sharing its prefix with the
//! one before it, and the rest compressed the way kallsyms compresses its
//! names: bytes 0x80 to 0xff stand for pairs of bytes or tokens (byte-pair
//! encoding, most frequent pair first). About 32 KB for 1,150 functions.
//!
//! The layout, all integers little-endian:
//!
//! ```text
//!   +---------------------------+  offset 0
//!   | magic "EXKSYMS2"          |  8 bytes
//!   | count: u32                |  functions
//!   | restarts: u32             |  ceil(count / RESTART_INTERVAL)
//!   +---------------------------+
//!   | tokens: 128 × [u8; 2]     |  token 0x80 + k stands for the pair k:
//!   |                           |  each a character (0x01..=0x7f) or a
//!   |                           |  token below 0x80 + k; unused: [0, 0]
//!   +---------------------------+
//!   | count × { start: u32,     |  sorted by start, no two overlapping:
//!   |           size: u32 }     |  ELF addresses (link-time), size > 0
//!   +---------------------------+
//!   | restarts × u32            |  where in the names the name of entry
//!   |                           |  k × RESTART_INTERVAL begins
//!   +---------------------------+
//!   | names, in entry order:    |  shared: bytes taken from the previous
//!   |   shared: u8, suffix, 0   |  name (0 at every restart), suffix: the
//!   |   ...                     |  rest, characters and tokens, then a NUL
//!   +---------------------------+
//! ```
//!
//! A lookup is a binary search over the entries and at most
//! `RESTART_INTERVAL` names decoded into a [`Name`] buffer. Every read is
//! bounds-checked: a malformed table is an [`Error`], never a panic or a
//! read past it. Names are ASCII (the writer refuses others).

#![no_std]

#[cfg(any(feature = "alloc", test))]
extern crate alloc;

/// The booted kernel's ELF section that holds the table (non-loaded: the
/// kernel reads it from the file the loader leaves in memory).
pub const SECTION: &str = ".extregs_symbols";

/// The table's first eight bytes.
pub const MAGIC: [u8; 8] = *b"EXKSYMS2";

/// Every this many entries a name starts from nothing (shared = 0), so a
/// lookup decodes at most this many names.
pub const RESTART_INTERVAL: usize = 32;

/// The longest name the table holds, in bytes (the writer refuses longer
/// ones; the longest of the kernel's is under 900).
pub const MAX_NAME: usize = 1024;

const HEADER_SIZE: usize = 16;
/// Tokens 0x80..=0xff.
const TOKENS: usize = 128;
const FIRST_TOKEN: u8 = 0x80;
const TOKEN_TABLE_SIZE: usize = TOKENS * 2;
/// The deepest a token can nest is one level per token: an expansion
/// stack of this many bytes is enough for any valid table.
const EXPANSION_STACK: usize = TOKENS + 2;
const ENTRY_SIZE: usize = 8;

/// What is wrong with a table (or with what the writer was given).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// It does not start with [`MAGIC`].
    BadMagic,
    /// It ends before its header, entries, restarts or a name do.
    Truncated,
    /// `restarts` is not `ceil(count / RESTART_INTERVAL)`.
    BadRestartCount,
    /// A name shares more bytes than the one before it has, or does not
    /// start from nothing at a restart.
    BadPrefix,
    /// A name is longer than [`MAX_NAME`].
    NameTooLong,
    /// A name is not UTF-8.
    NotUtf8,
    /// A name holds a token the table does not define, or a token whose
    /// pair names itself or a later token.
    BadToken,
    /// Writer: a name is not ASCII.
    NotAscii,
    /// Writer: a name holds a NUL byte.
    NulInName,
    /// Writer: a symbol's start or end does not fit in 32 bits.
    AddressTooLarge,
    /// Writer: a symbol of size 0.
    EmptySymbol,
    /// Writer: two symbols overlap, or start at the same address with
    /// different sizes.
    Overlap,
    /// Writer: more symbols, or more name bytes, than 32-bit fields hold.
    TooLarge,
    /// Reader: no entry with that index.
    NoSuchEntry,
}

/// A function the table found: its ELF start address and size, and its
/// place in the table (for [`Table::name`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Function {
    pub index: usize,
    pub start: u64,
    pub size: u64,
}

/// A decoded name, held inline (no allocator): [`MAX_NAME`] bytes.
#[derive(Clone)]
pub struct Name {
    bytes: [u8; MAX_NAME],
    length: usize,
}

impl Name {
    /// The empty name.
    pub const fn new() -> Name {
        Name { bytes: [0; MAX_NAME], length: 0 }
    }

    /// The name. [`Table::name`] checked that it is UTF-8.
    pub fn as_str(&self) -> &str {
        core::str::from_utf8(&self.bytes[..self.length]).unwrap_or("")
    }
}

impl Default for Name {
    fn default() -> Name {
        Name::new()
    }
}

impl core::fmt::Debug for Name {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        core::fmt::Debug::fmt(self.as_str(), f)
    }
}

/// A parsed table over its bytes.
#[derive(Clone, Copy, Debug)]
pub struct Table<'a> {
    count: usize,
    tokens: &'a [u8],
    entries: &'a [u8],
    restarts: &'a [u8],
    names: &'a [u8],
}

fn read_u32(bytes: &[u8], offset: usize) -> Option<u32> {
    let word = bytes.get(offset..offset.checked_add(4)?)?;
    Some(u32::from_le_bytes([word[0], word[1], word[2], word[3]]))
}

impl<'a> Table<'a> {
    /// Checks the header and that the entries and restarts are there (the
    /// names are checked as they are decoded).
    pub fn parse(bytes: &'a [u8]) -> Result<Table<'a>, Error> {
        if bytes.len() < HEADER_SIZE {
            return Err(if bytes.starts_with(&MAGIC) { Error::Truncated } else { Error::BadMagic });
        }
        if bytes[..8] != MAGIC {
            return Err(Error::BadMagic);
        }
        let count = read_u32(bytes, 8).ok_or(Error::Truncated)? as usize;
        let restarts = read_u32(bytes, 12).ok_or(Error::Truncated)? as usize;
        if restarts != count.div_ceil(RESTART_INTERVAL) {
            return Err(Error::BadRestartCount);
        }
        let tokens_end = HEADER_SIZE + TOKEN_TABLE_SIZE;
        let entries_end = count
            .checked_mul(ENTRY_SIZE)
            .and_then(|size| size.checked_add(tokens_end))
            .ok_or(Error::Truncated)?;
        let restarts_end = restarts
            .checked_mul(4)
            .and_then(|size| size.checked_add(entries_end))
            .ok_or(Error::Truncated)?;
        if bytes.len() < restarts_end {
            return Err(Error::Truncated);
        }
        Ok(Table {
            count,
            tokens: &bytes[HEADER_SIZE..tokens_end],
            entries: &bytes[tokens_end..entries_end],
            restarts: &bytes[entries_end..restarts_end],
            names: &bytes[restarts_end..],
        })
    }

    /// How many functions the table holds.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Entry `index`: its start and size.
    fn entry(&self, index: usize) -> Function {
        let offset = index * ENTRY_SIZE;
        // `parse` sized `entries` to `count` entries, and callers keep
        // `index < count`.
        let start = read_u32(self.entries, offset).unwrap_or(0);
        let size = read_u32(self.entries, offset + 4).unwrap_or(0);
        Function { index, start: u64::from(start), size: u64::from(size) }
    }

    /// The function whose `[start, start + size)` holds `address` (an ELF
    /// address), if one does.
    pub fn find(&self, address: u64) -> Option<Function> {
        // The entries are sorted by start: the last one starting at or
        // below `address` is the only one that can hold it.
        let (mut low, mut high) = (0, self.count);
        while low < high {
            let middle = low + (high - low) / 2;
            if self.entry(middle).start <= address {
                low = middle + 1;
            } else {
                high = middle;
            }
        }
        let candidate = self.entry(low.checked_sub(1)?);
        (address - candidate.start < candidate.size).then_some(candidate)
    }

    /// Decodes the name of entry `index` into `name`.
    pub fn name(&self, index: usize, name: &mut Name) -> Result<(), Error> {
        if index >= self.count {
            return Err(Error::NoSuchEntry);
        }
        let restart = index / RESTART_INTERVAL;
        let mut at = read_u32(self.restarts, restart * 4).ok_or(Error::Truncated)? as usize;
        name.length = 0;
        for current in restart * RESTART_INTERVAL..=index {
            let shared = usize::from(*self.names.get(at).ok_or(Error::Truncated)?);
            if shared > name.length || (current % RESTART_INTERVAL == 0 && shared != 0) {
                return Err(Error::BadPrefix);
            }
            let rest = self.names.get(at + 1..).ok_or(Error::Truncated)?;
            let suffix_length = rest.iter().position(|&byte| byte == 0).ok_or(Error::Truncated)?;
            name.length = shared;
            for &byte in &rest[..suffix_length] {
                self.expand(byte, name)?;
            }
            at += 1 + suffix_length + 1;
        }
        core::str::from_utf8(&name.bytes[..name.length]).map_err(|_| Error::NotUtf8)?;
        Ok(())
    }

    /// Appends what `byte` (a character or a token) stands for to `name`.
    fn expand(&self, byte: u8, name: &mut Name) -> Result<(), Error> {
        // Depth first, left before right: pop a byte, write a character
        // or push the token's pair right-first. A token's pair may only
        // name lower tokens, so this ends, and the stack stays under
        // EXPANSION_STACK.
        let mut stack = [0u8; EXPANSION_STACK];
        stack[0] = byte;
        let mut depth = 1;
        while depth > 0 {
            depth -= 1;
            let current = stack[depth];
            if current < FIRST_TOKEN {
                if current == 0 {
                    return Err(Error::BadToken);
                }
                if name.length == MAX_NAME {
                    return Err(Error::NameTooLong);
                }
                name.bytes[name.length] = current;
                name.length += 1;
                continue;
            }
            let index = usize::from(current - FIRST_TOKEN) * 2;
            let (left, right) = (self.tokens[index], self.tokens[index + 1]);
            let names_a_later_token = |part: u8| part >= current;
            if left == 0 || right == 0 || names_a_later_token(left) || names_a_later_token(right) {
                return Err(Error::BadToken);
            }
            if depth + 2 > EXPANSION_STACK {
                return Err(Error::BadToken);
            }
            stack[depth] = right;
            stack[depth + 1] = left;
            depth += 2;
        }
        Ok(())
    }
}

/// Writes a table of `symbols`, given as (ELF start, size, name) in the
/// ELF symbol table's order. Symbols that start where an earlier one does
/// (aliases) are left out, so a lookup names the first, as a search of the
/// ELF table would.
#[cfg(any(feature = "alloc", test))]
pub fn encode(symbols: &[(u64, u64, &str)]) -> Result<alloc::vec::Vec<u8>, Error> {
    use alloc::vec::Vec;
    let mut sorted: Vec<(u64, u64, &str)> = symbols.to_vec();
    // Stable: of the symbols at one address, the first given stays first.
    sorted.sort_by_key(|&(start, _, _)| start);
    // Aliases must agree on the size: the one kept answers for both.
    if sorted.windows(2).any(|pair| pair[0].0 == pair[1].0 && pair[0].1 != pair[1].1) {
        return Err(Error::Overlap);
    }
    sorted.dedup_by_key(|&mut (start, _, _)| start);
    for &(start, size, name) in &sorted {
        if size == 0 {
            return Err(Error::EmptySymbol);
        }
        let end = start.checked_add(size).ok_or(Error::AddressTooLarge)?;
        if end > u64::from(u32::MAX) || size > u64::from(u32::MAX) {
            return Err(Error::AddressTooLarge);
        }
        if name.len() > MAX_NAME {
            return Err(Error::NameTooLong);
        }
        if name.bytes().any(|byte| byte == 0) {
            return Err(Error::NulInName);
        }
        if !name.is_ascii() {
            return Err(Error::NotAscii);
        }
    }
    if sorted.windows(2).any(|pair| pair[0].0 + pair[0].1 > pair[1].0) {
        return Err(Error::Overlap);
    }
    // Each name: the bytes it shares with the one before (none at a
    // restart), and the rest, to be compressed.
    let mut suffixes: Vec<(u8, Vec<u8>)> = Vec::new();
    let mut previous: &[u8] = &[];
    for (index, &(_, _, name)) in sorted.iter().enumerate() {
        let name = name.as_bytes();
        if index % RESTART_INTERVAL == 0 {
            previous = &[];
        }
        let shared = previous
            .iter()
            .zip(name)
            .take(usize::from(u8::MAX))
            .take_while(|(a, b)| a == b)
            .count();
        suffixes.push((shared as u8, name[shared..].to_vec()));
        previous = name;
    }
    let tokens = compress(&mut suffixes);
    let count = u32::try_from(sorted.len()).map_err(|_| Error::TooLarge)?;
    let restarts = sorted.len().div_ceil(RESTART_INTERVAL);
    let mut table = Vec::new();
    table.extend_from_slice(&MAGIC);
    table.extend_from_slice(&count.to_le_bytes());
    table.extend_from_slice(&(restarts as u32).to_le_bytes());
    for pair in tokens {
        table.extend_from_slice(&pair);
    }
    for &(start, size, _) in &sorted {
        table.extend_from_slice(&(start as u32).to_le_bytes());
        table.extend_from_slice(&(size as u32).to_le_bytes());
    }
    let mut names = Vec::new();
    let mut restart_offsets = Vec::new();
    for (index, (shared, suffix)) in suffixes.iter().enumerate() {
        if index % RESTART_INTERVAL == 0 {
            restart_offsets.push(u32::try_from(names.len()).map_err(|_| Error::TooLarge)?);
        }
        names.push(*shared);
        names.extend_from_slice(suffix);
        names.push(0);
    }
    for offset in restart_offsets {
        table.extend_from_slice(&offset.to_le_bytes());
    }
    table.extend_from_slice(&names);
    Ok(table)
}

/// Byte-pair encoding of the suffixes, in place: up to 128 times, the most
/// frequent pair of adjacent bytes (characters or tokens made before)
/// becomes the next token, while a pair still occurs three times or more
/// (twice saves nothing worth a token). Ties go to the smallest pair, so
/// the table is a function of the names. Returns the token table.
#[cfg(any(feature = "alloc", test))]
fn compress(suffixes: &mut [(u8, alloc::vec::Vec<u8>)]) -> [[u8; 2]; TOKENS] {
    use alloc::collections::BTreeMap;
    let mut tokens = [[0u8; 2]; TOKENS];
    for (index, token) in (FIRST_TOKEN..=u8::MAX).enumerate() {
        let mut counts: BTreeMap<[u8; 2], usize> = BTreeMap::new();
        for (_, suffix) in suffixes.iter() {
            for pair in suffix.windows(2) {
                *counts.entry([pair[0], pair[1]]).or_default() += 1;
            }
        }
        // Most frequent first; of equals, the smallest pair (the map's
        // order, which max_by_key keeps the last of: hence the reverse).
        let Some((&pair, &count)) = counts.iter().rev().max_by_key(|&(_, &count)| count) else {
            break;
        };
        if count < 3 {
            break;
        }
        tokens[index] = pair;
        for (_, suffix) in suffixes.iter_mut() {
            let mut merged = alloc::vec::Vec::with_capacity(suffix.len());
            let mut at = 0;
            while at < suffix.len() {
                if suffix[at..].starts_with(&pair) {
                    merged.push(token);
                    at += 2;
                } else {
                    merged.push(suffix[at]);
                    at += 1;
                }
            }
            *suffix = merged;
        }
    }
    tokens
}

#[cfg(test)]
mod tests;
