//! The extregs runner: boots the kernel image under QEMU and turns what
//! happens into an exit status (docs/design.md, "Contracts").
//!
//! The `extregs` binary and the QEMU tests in `tests/` both go through this
//! library, so the tests exercise exactly what users run.

pub mod bench;
pub mod campaign;
pub mod coverage;
pub mod error;
pub mod exit_codes;
pub mod fuzz_plot;
pub mod images;
pub mod qemu;
pub mod qmp;
pub mod report;
