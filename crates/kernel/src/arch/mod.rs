//! The x86_64 machine, the floor everything else stands on: descriptor
//! tables and IST stacks, the local APIC, paging and protection keys,
//! CPU features, interrupt flags and the RCU/lockdep models, user access
//! (SMEP/SMAP), the few devices the kernel talks to (serial console,
//! fw_cfg, the exit port), and the hook slots through which higher layers
//! answer the questions this one asks.

// First, so its `print!`/`println!` are in scope in every module after it
// (`#[macro_use]` here and on `mod arch`).
#[macro_use]
pub mod serial;

pub mod acpi;
pub mod apic;
pub mod cpu;
pub mod entry_text;
pub mod exit;
pub mod fpu;
pub mod fwcfg;
pub mod gdt;
pub mod hook_slot;
pub mod idt;
pub mod irqflags;
pub mod memory;
pub mod percpu;
pub mod pks;
pub mod smp;
pub mod tlb;
pub mod uaccess;
