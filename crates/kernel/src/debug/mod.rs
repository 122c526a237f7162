//! Seeing what happened: show_regs and call traces, oopses, the kernel's
//! own symbol table and interrupt-point coverage.

pub mod calltrace;
pub mod coverage;
pub mod oops;
pub mod show_regs;
pub mod symbols;
