//! What the kernel does after boot: one module per `mode=`.

pub mod backtrace;
pub mod bench;
pub mod demo;
pub mod exec;
pub mod fuzz;
pub mod idle;
pub mod oops;
pub mod oops_walk;
pub mod selftest;
pub mod tasks;
pub mod trampolines;
pub mod user;
