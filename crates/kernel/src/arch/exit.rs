//! Leaving QEMU with a status the runner maps (docs/design.md, "Contracts"): the
//! `isa-debug-exit` device at port 0xf4.

use x86_64::instructions::port::Port;

const ISA_DEBUG_EXIT_PORT: u16 = 0xf4;

/// What the kernel reports; QEMU exits with `(code << 1) | 1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum ExitCode {
    Success = 0x10,
    Failure = 0x11,
}

/// Ends the VM. Without the exit device (a plain QEMU command line that
/// forgot it), the CPU halts forever instead.
pub fn exit_qemu(code: ExitCode) -> ! {
    // SAFETY: writing the exit device's port only ends the VM; on a machine
    // without the device the write goes nowhere.
    unsafe { Port::new(ISA_DEBUG_EXIT_PORT).write(code as u32) };
    halt_forever()
}

/// Stops this CPU for good.
pub fn halt_forever() -> ! {
    loop {
        x86_64::instructions::interrupts::disable();
        x86_64::instructions::hlt();
    }
}
