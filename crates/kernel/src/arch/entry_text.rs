//! The kernel's entry text: the instructions that run before an entry has
//! switched to a trustworthy stack and GS base, or after an exit has given
//! them up. The entry stubs (`crates/entry-asm`) and the bench's SYSCALL
//! entries (`crates/bench`), which live in two objects, so two ranges.
//!
//! Breakpoints there are refused (`entry::paranoid`), and a call trace
//! stops at a frame that interrupted them (`debug::calltrace`): the RBP
//! such code runs with may be the user's.

use core::ops::Range;

/// Every range of entry text.
pub fn ranges() -> [Range<u64>; 2] {
    [extregs_entry_asm::entry_text_range(), extregs_bench::syscall_entry_text_range()]
}

/// Is `address` in the entry text?
pub fn contains(address: u64) -> bool {
    ranges().iter().any(|range| range.contains(&address))
}
