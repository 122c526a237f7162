//! The IDT, built from the entry-asm stub table: every exception vector the
//! CPU can raise enters through a stub that builds the extended frame.
//!
//! Vectors 15, 22..=27 and 31 are reserved by Intel and never raised by the
//! CPU; the `x86_64` crate keeps them not-present, and their stubs stay
//! unused.

use crate::gdt::DOUBLE_FAULT_IST_INDEX;
use extregs_entry_asm::exception_stub_addresses;
use spin::Once;
use x86_64::structures::idt::InterruptDescriptorTable;
use x86_64::VirtAddr;

static IDT: Once<InterruptDescriptorTable> = Once::new();

/// Builds and loads the IDT. The GDT must be loaded first (the gates take
/// the current CS).
pub fn init() {
    let idt = IDT.call_once(|| {
        let stubs = exception_stub_addresses();
        let stub = |vector: usize| VirtAddr::new(stubs[vector] as u64);
        let mut idt = InterruptDescriptorTable::new();
        // SAFETY: each address is the entry stub for exactly that vector
        // (entry_64.S builds the table in vector order and checks it), and
        // the stubs handle the CPU's frame for it, error code or not.
        unsafe {
            // Vectors without an error code: the crate indexes these directly.
            for vector in [0u8, 1, 2, 3, 4, 5, 6, 7, 9, 16, 19, 20, 28] {
                idt[vector].set_handler_addr(stub(usize::from(vector)));
            }
            // Vectors with an error code, and #MC, are typed fields.
            idt.double_fault.set_handler_addr(stub(8)).set_stack_index(DOUBLE_FAULT_IST_INDEX);
            idt.invalid_tss.set_handler_addr(stub(10));
            idt.segment_not_present.set_handler_addr(stub(11));
            idt.stack_segment_fault.set_handler_addr(stub(12));
            idt.general_protection_fault.set_handler_addr(stub(13));
            idt.page_fault.set_handler_addr(stub(14));
            idt.alignment_check.set_handler_addr(stub(17));
            idt.machine_check.set_handler_addr(stub(18));
            idt.cp_protection_exception.set_handler_addr(stub(21));
            idt.vmm_communication_exception.set_handler_addr(stub(29));
            idt.security_exception.set_handler_addr(stub(30));
        }
        idt
    });
    idt.load();
}

/// Linux's name for an exception vector, for oops messages.
pub fn exception_name(vector: u8) -> &'static str {
    match vector {
        0 => "divide error",
        1 => "debug",
        2 => "NMI",
        3 => "int3",
        4 => "overflow",
        5 => "bounds",
        6 => "invalid opcode",
        7 => "device not available",
        8 => "double fault",
        9 => "coprocessor segment overrun",
        10 => "invalid TSS",
        11 => "segment not present",
        12 => "stack segment",
        13 => "general protection fault",
        14 => "page fault",
        16 => "coprocessor error",
        17 => "alignment check",
        18 => "machine check",
        19 => "SIMD coprocessor error",
        20 => "virtualization exception",
        21 => "control protection",
        28 => "hypervisor injection",
        29 => "VMM communication",
        30 => "security exception",
        _ => "reserved vector",
    }
}
