//! The serial console (COM1, a 16550 UART driven by the `uart_16550` crate)
//! and the `print!`/`println!` macros.
//!
//! Everything the kernel says goes here: QEMU maps it to stdio, and the
//! runner and tests read it.

use core::fmt::{self, Write};
use spin::Mutex;
use uart_16550::backend::PioBackend;
use uart_16550::{Config, Uart16550};

/// The legacy COM1 I/O port base.
const COM1_PORT: u16 = 0x3f8;

/// COM1 once [`init`] ran.
static SERIAL: Mutex<Option<SerialConsole>> = Mutex::new(None);

struct SerialConsole(Uart16550<PioBackend>);

impl Write for SerialConsole {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        self.0.send_bytes_exact(text.as_bytes());
        Ok(())
    }
}

/// Sets up COM1. Called first thing at boot.
pub fn init() {
    // SAFETY: COM1 at 0x3f8 is the standard PC UART; nothing else in the
    // kernel drives these ports.
    let mut uart = unsafe { Uart16550::new_port(COM1_PORT) }.expect("COM1 port range is valid");
    // A missing UART leaves the console silent rather than stopping the boot:
    // the exit status still tells the runner what happened.
    if uart.init(Config::default()).is_ok() {
        *SERIAL.lock() = Some(SerialConsole(uart));
    }
}

/// Releases the console lock unconditionally, for the oops and panic paths:
/// the event may have hit while the lock was held, and nothing else runs
/// after an oops (one CPU, interrupts off).
pub fn force_unlock() {
    if SERIAL.is_locked() {
        // SAFETY: only called on the way to the failure exit, when the holder
        // can never run again; see the function documentation.
        unsafe { SERIAL.force_unlock() };
    }
}

#[doc(hidden)]
pub fn print_args(args: fmt::Arguments<'_>) {
    // With IF clear an IRQ handler can't find the lock held by the code it
    // interrupted. An NMI can, so inside an NMI a busy console drops the
    // message instead of deadlocking.
    x86_64::instructions::interrupts::without_interrupts(|| {
        let in_nmi = extregs_entry_asm::nmi_state() != extregs_regs::nmi_state::IDLE;
        let mut guard = if in_nmi {
            match SERIAL.try_lock() {
                Some(guard) => guard,
                None => return,
            }
        } else {
            SERIAL.lock()
        };
        if let Some(console) = guard.as_mut() {
            let _ = console.write_fmt(args);
        }
    })
}

/// Prints to the serial console.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => { $crate::serial::print_args(format_args!($($arg)*)) };
}

/// Prints a line to the serial console.
#[macro_export]
macro_rules! println {
    () => { $crate::print!("\n") };
    ($($arg:tt)*) => { $crate::serial::print_args(format_args!("{}\n", format_args!($($arg)*))) };
}
