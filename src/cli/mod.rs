//! The `extregs` subcommands, one module each (the binary's; the library
//! in `src/lib.rs` holds what they share with the tests).

pub mod bench;
pub mod exec;
pub mod fuzz;
pub mod run;
