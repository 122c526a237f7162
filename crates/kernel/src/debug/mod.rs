//! Seeing what happened: show_regs and call traces, the oops path, the
//! kernel's own symbol table, interrupt-point coverage, and the `RESULT`
//! line every mode ends with.

pub mod calltrace;
pub mod coverage;
pub mod oops;
pub mod result;
pub mod show_regs;
pub mod symbols;
