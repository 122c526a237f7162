//! QEMU tests: boot the real kernel image under TCG through the runner
//! library (what `extregs run` uses) and check serial output and exit
//! status. Every boot has a timeout; nothing here measures time.
//!
//! One file per subject; what they share is in `tests/common/`.

#[path = "../common/mod.rs"]
mod common;

mod bench;
mod boot;
mod cli;
mod fuzz;
mod linux;
mod oops_and_traces;
mod selftest;
mod smp;
mod tasks_and_user;
