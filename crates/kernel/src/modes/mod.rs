//! What the kernel does after boot: one module per `mode=` (and the
//! `RESULT` line every mode ends with).

pub mod bench;
pub mod demo;
pub mod fuzz;
pub mod idle;
pub mod result;
pub mod selftest;
pub mod tasks;
pub mod user;
