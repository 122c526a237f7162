//! `extregs bench`: the thread's question measured. Each entry variant runs
//! the same trivial handler, so only the entry design differs.
//!
//! * **native**: the variants' stubs (`crates/bench`, built from the same
//!   `calling.S` and `extregs-entry` code as the kernel) run in this very
//!   process, in ring 3: a synthetic interrupt frame (`ss`=0x2b, `rsp`,
//!   `rflags`, `cs`=0x33, `rip`) is pushed and the stub entered with a jump;
//!   its `iretq` comes back. Real TSC cycles of the stub and entry code,
//!   without the CPU's own delivery. PKRS is a memory cell
//!   (`extregs_bench::CellPlatform`).
//! * **kernel**: `int $vector` round trips inside the booted kernel (QEMU;
//!   under TCG only the ratios mean anything), plus the kernel-only
//!   variants (`x86-interrupt`, and the real PKRS save/restore with and
//!   without a WRMSR).

use extregs_bench::Summary;

pub mod boot;
pub mod campaign;
pub mod kernel;
pub mod native;
pub mod peer;
pub mod render;
pub mod statistics;

#[cfg(test)]
mod tests;

// The stubs' handlers come from `extregs-bench` (feature `cell-handlers`).

/// The variants in report order.
pub const VARIANTS: [&str; 12] = [
    "floor",
    "x86-interrupt",
    "by-value",
    "by-reference",
    "extended",
    "extended+pks-hit",
    "extended+pks-write",
    "yield",
    "yield+pkrs-switch",
    "syscall-by-value",
    "syscall-extended",
    "syscall",
];

/// One variant in one harness.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub name: String,
    pub harness: String,
    /// None: the variant cannot run in this harness (`why` says so).
    pub summary: Option<Summary>,
    pub stack_bytes: Option<u64>,
    pub iterations: u64,
    pub why: Option<String>,
    /// Run by run, once [`combine`] merged repeated runs (empty before).
    pub repeats: Repeats,
    /// The size series: the state's bytes and where it is (`below`,
    /// `above`, `by-value`, `by-reference`); None for the other rows.
    pub extension_bytes: Option<u64>,
    pub placement: Option<String>,
}

/// One variant across the repeated runs of a harness: each run's median
/// per round trip, and its ratios to the same run's floor and by-value
/// medians (a ratio is only ever taken within one run).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Repeats {
    pub medians: Vec<f64>,
    pub to_floor: Vec<f64>,
    pub to_by_value: Vec<f64>,
}

/// One nesting depth of the kernel's `extended` variant.
#[derive(Clone, Debug, PartialEq)]
pub struct NestRow {
    pub depth: u64,
    pub summary: Summary,
    pub stack_bytes: u64,
    /// Each run's median, once [`combine_nesting`] merged repeated runs.
    pub medians: Vec<f64>,
}
