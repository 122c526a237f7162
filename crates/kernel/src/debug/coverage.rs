//! Interrupt-point coverage of the entry text: which instructions of
//! `entry_64.S` (every stub, the common paths, the NMI entry, with the
//! `calling.S` macros expanded in them) a foreign event interrupted.
//!
//! One bit per byte of entry text, set at the interrupted RIP of every
//! foreign NMI that landed there: `hit` is the number of distinct
//! instructions interrupted. One CPU: the bitmap is written only by NMI
//! handlers, which never nest (a nested NMI is latched, not handled).

use core::sync::atomic::{AtomicU64, Ordering};

/// One bit per byte of entry text (the text is well under this).
const MAX_TEXT_BYTES: usize = 64 * 1024;
static HIT: [AtomicU64; MAX_TEXT_BYTES / 64] = [const { AtomicU64::new(0) }; MAX_TEXT_BYTES / 64];

/// Notes that an event interrupted `ip` (ignored outside the entry text).
pub fn record(ip: u64) {
    let text = extregs_entry_asm::entry_text_range();
    if !text.contains(&ip) {
        return;
    }
    let offset = (ip - text.start) as usize;
    if offset < MAX_TEXT_BYTES {
        HIT[offset / 64].fetch_or(1 << (offset % 64), Ordering::Relaxed);
    }
}

/// Distinct entry-text instructions a foreign event interrupted.
pub fn hit_count() -> u64 {
    HIT.iter().map(|word| u64::from(word.load(Ordering::Relaxed).count_ones())).sum()
}

/// Prints `COVERAGE_HIT off,off,…`: the entry-text offsets a foreign
/// event interrupted, for the runner, which decodes the kernel ELF's entry
/// text into instructions and reports hit/total and the points never hit.
pub fn print_hits() {
    print!("COVERAGE_HIT ");
    let mut first = true;
    for (index, word) in HIT.iter().enumerate() {
        let mut bits = word.load(Ordering::Relaxed);
        while bits != 0 {
            let bit = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            print!("{}{:x}", if first { "" } else { "," }, index * 64 + bit);
            first = false;
        }
    }
    println!();
}

/// The size of the entry text in bytes (the denominator the runner's
/// decoder refines into instructions).
pub fn text_bytes() -> u64 {
    let text = extregs_entry_asm::entry_text_range();
    text.end - text.start
}
