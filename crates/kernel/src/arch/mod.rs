//! The x86_64 machine: descriptor tables and IST stacks, the local APIC,
//! paging and protection keys, CPU features, and the few devices the kernel
//! talks to (serial console, fw_cfg, the exit port).

pub mod apic;
pub mod cpu;
pub mod exit;
pub mod fwcfg;
pub mod gdt;
pub mod idt;
pub mod memory;
pub mod pks;
pub mod serial;
