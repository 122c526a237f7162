//! The IDT, built from the entry-asm stub table: every exception vector the
//! CPU can raise, and every external-interrupt vector 32..=255, enters
//! through a stub that builds the extended frame. NMI, #DF, #DB and #MC run
//! on their IST stacks (Linux's paranoid entries).
//!
//! Vectors 15, 22..=27 and 31 are reserved by Intel and never raised by the
//! CPU; the `x86_64` crate keeps them not-present, and their stubs stay
//! unused.

use crate::arch::gdt::{
    DEBUG_IST_INDEX, DOUBLE_FAULT_IST_INDEX, MACHINE_CHECK_IST_INDEX, NMI_IST_INDEX,
};
use core::cell::UnsafeCell;
use core::mem::MaybeUninit;
use extregs_entry_asm::{stub_addresses, FIRST_EXTERNAL_VECTOR, NR_VECTORS};
use spin::Once;
use x86_64::structures::idt::InterruptDescriptorTable;
use x86_64::VirtAddr;

static IDT: Once<InterruptDescriptorTable> = Once::new();
/// The IDT of `mode=bench`: the kernel's, plus the benchmark's gates.
static BENCH_IDT: Once<InterruptDescriptorTable> = Once::new();

/// Loads a copy of the kernel's IDT with `gates` (vector, handler address)
/// replacing those vectors (the benchmark's variants). `init` loads the
/// kernel's own table again.
pub fn load_with_extra_gates(gates: &[(u8, u64)]) {
    let idt = BENCH_IDT.call_once(|| {
        let mut idt = IDT.get().expect("idt::init ran").clone();
        for &(vector, address) in gates {
            // SAFETY: each address is a benchmark entry stub (or the
            // benchmark's Rust-ABI interrupt handler) that handles the CPU's frame for a vector without
            // an error code and returns with iretq.
            unsafe {
                idt[vector].set_handler_addr(VirtAddr::new(address));
            }
        }
        idt
    });
    idt.load();
}

/// A second IDT for tests that route vector 1 (#DB), or a free vector, to
/// another entry stub (see [`with_gates`]). It starts as zero bytes, not as
/// `InterruptDescriptorTable::new()` (whose gates carry must-be-one bits), so
/// it takes no room in the kernel file (`.bss`; docs/boot.md):
/// [`with_gates`] writes all of it before it is ever loaded.
struct SpareIdt(UnsafeCell<MaybeUninit<InterruptDescriptorTable>>);

// SAFETY: one CPU; written only by `with_gates` while the kernel's own
// IDT is the one loaded (so the CPU does not read it meanwhile).
unsafe impl Sync for SpareIdt {}

static SPARE_IDT: SpareIdt = SpareIdt(UnsafeCell::new(MaybeUninit::zeroed()));

/// Runs `body` with vector 1 (#DB: single-step traps and hardware
/// breakpoints) entering through `stub` on IST `ist` (None: the current
/// stack), then reloads the kernel's IDT.
///
/// With the NMI stub as the #DB gate, every single-stepped instruction is
/// interrupted by the real NMI entry, so a test can put an NMI at *each*
/// instruction boundary of a sequence, deterministically. The CPU treats
/// the event as a #DB, so NMIs are not blocked: the NMI entry relies on
/// that blocking from delivery until it marks itself RUNNING, so a real
/// NMI arriving in those few instructions would overwrite the landing frame
/// being copied. The tests using this send no NMIs of their own meanwhile;
/// don't run them under an outside NMI storm.
pub fn with_debug_gate<T>(stub: u64, ist: Option<u16>, body: impl FnOnce() -> T) -> T {
    with_gates(&[Gate { vector: DEBUG_VECTOR, stub, ist, user: false }], body)
}

/// A gate [`with_gates`] puts in the IDT for a while.
#[derive(Clone, Copy)]
pub struct Gate {
    pub vector: u8,
    /// The entry stub the vector enters through.
    pub stub: u64,
    /// The IST stack (None: the current stack).
    pub ist: Option<u16>,
    /// Whether `int $vector` may come from user mode (DPL 3).
    pub user: bool,
}

/// Runs `body` with each of `gates` in the IDT, then reloads the kernel's
/// IDT: [`with_debug_gate`], and a free external vector routed to another
/// stub so that `int $vector` runs that stub (the walks of the #DB and NMI
/// stubs, whose own gates the walk's breakpoint needs). Only vectors whose
/// gate takes no error code (1, 32–255 and the like).
pub fn with_gates<T>(gates: &[Gate], body: impl FnOnce() -> T) -> T {
    let kernel = IDT.get().expect("idt::init ran");
    kernel.load();
    // SAFETY: the kernel's IDT is loaded, so the CPU does not read the
    // spare while it is rewritten; one CPU, and this function is not
    // reentered (a test runs it from task context).
    let spare = unsafe { &mut *SPARE_IDT.0.get() }.write(kernel.clone());
    for gate in gates {
        // A user gate lets ring 3 run its stub by `int`, which every stub
        // takes as an entry from user mode (the saved CS says so). A gate
        // to the NMI stub enters its IST with NMIs *not* blocked: a real
        // NMI meanwhile would overwrite the landing frame, so the callers
        // send none but the ones they wait for; the selftests also hold
        // NMIs from outside back, and a walked oops has no other source of
        // NMIs than one injected from outside on purpose. The callers pass
        // the NMI, #DB, #MC or int3 stub, or the walk's gate in front of
        // the NMI stub.
        // SAFETY: `stub` handles a frame without an error code and returns
        // with iretq, for a vector the CPU raises without one; `ist` names
        // one of the TSS's IST stacks.
        unsafe {
            let options = spare[gate.vector].set_handler_addr(VirtAddr::new(gate.stub));
            if let Some(index) = gate.ist {
                options.set_stack_index(index);
            }
            if gate.user {
                options.set_privilege_level(x86_64::PrivilegeLevel::Ring3);
            }
        }
    }
    // SAFETY: the spare IDT is a static, so it outlives its use; it is not
    // written again until the kernel's IDT is back.
    unsafe { spare.load_unsafe() };
    let result = body();
    kernel.load();
    result
}

/// The entry stub of `vector` (as the kernel's IDT uses it).
pub fn stub_address(vector: u8) -> u64 {
    stub_addresses()[usize::from(vector)] as u64
}

/// Builds and loads the IDT. The GDT must be loaded first (the gates take
/// the current CS).
pub fn init() {
    let idt = IDT.call_once(|| {
        let stubs = stub_addresses();
        let stub = |vector: usize| VirtAddr::new(stubs[vector] as u64);
        let mut idt = InterruptDescriptorTable::new();
        // SAFETY: each address is the entry stub for exactly that vector
        // (entry_64.S builds the table in vector order and checks it), and
        // the stubs handle the CPU's frame for it, error code or not.
        unsafe {
            // Vectors without an error code: the crate indexes these directly.
            for vector in [0u8, 3, 4, 5, 6, 7, 9, 16, 19, 20, 28] {
                idt[vector].set_handler_addr(stub(usize::from(vector)));
            }
            // int3 and into may be raised by user code itself (DPL 3, as
            // Linux's INTG_USER gates); every other gate refuses an
            // `int $n` from ring 3 with a #GP.
            for vector in [3u8, 4] {
                idt[vector]
                    .set_handler_addr(stub(usize::from(vector)))
                    .set_privilege_level(x86_64::PrivilegeLevel::Ring3);
            }
            // The paranoid entries, each on its own IST stack.
            idt.debug.set_handler_addr(stub(1)).set_stack_index(DEBUG_IST_INDEX);
            idt.non_maskable_interrupt.set_handler_addr(stub(2)).set_stack_index(NMI_IST_INDEX);
            // Vectors with an error code, and #MC, are typed fields.
            idt.double_fault.set_handler_addr(stub(8)).set_stack_index(DOUBLE_FAULT_IST_INDEX);
            idt.invalid_tss.set_handler_addr(stub(10));
            idt.segment_not_present.set_handler_addr(stub(11));
            idt.stack_segment_fault.set_handler_addr(stub(12));
            idt.general_protection_fault.set_handler_addr(stub(13));
            idt.page_fault.set_handler_addr(stub(14));
            idt.alignment_check.set_handler_addr(stub(17));
            idt.machine_check.set_handler_addr(stub(18)).set_stack_index(MACHINE_CHECK_IST_INDEX);
            idt.cp_protection_exception.set_handler_addr(stub(21));
            idt.vmm_communication_exception.set_handler_addr(stub(29));
            idt.security_exception.set_handler_addr(stub(30));
            // External interrupts: interrupt gates, so IF is clear in the
            // handler until it returns.
            for vector in FIRST_EXTERNAL_VECTOR..NR_VECTORS {
                idt[vector as u8].set_handler_addr(stub(vector));
            }
        }
        idt
    });
    idt.load();
}

/// The exception vectors the kernel's entry code names (SDM vol. 3 §6.3).
pub const DEBUG_VECTOR: u8 = 1;
pub use extregs_regs::NMI_VECTOR;
pub const BREAKPOINT_VECTOR: u8 = 3;
pub const INVALID_OPCODE_VECTOR: u8 = 6;
pub const DOUBLE_FAULT_VECTOR: u8 = 8;
pub const SEGMENT_NOT_PRESENT_VECTOR: u8 = 11;
pub const STACK_SEGMENT_VECTOR: u8 = 12;
pub const GENERAL_PROTECTION_VECTOR: u8 = 13;
pub const PAGE_FAULT_VECTOR: u8 = 14;
pub const MACHINE_CHECK_VECTOR: u8 = 18;

/// Is this vector one of Linux's paranoid (IST) entries: NMI, #DB, #MC
/// and #DF? Inlined: the dispatcher asks before `paranoid::enter` has
/// cleared DR7, where no breakpointable function may run.
#[inline(always)]
pub fn is_paranoid(vector: u8) -> bool {
    matches!(vector, DEBUG_VECTOR | NMI_VECTOR | DOUBLE_FAULT_VECTOR | MACHINE_CHECK_VECTOR)
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
