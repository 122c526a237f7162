//! The serial console (COM1, a 16550 UART driven by the `uart_16550` crate)
//! and the `print!`/`println!` macros.
//!
//! Everything the kernel says goes here: QEMU maps it to stdio, and the
//! runner and tests read it.

use crate::arch::hook_slot::HookSlot;
use crate::arch::percpu::PerCpu;
use core::cell::UnsafeCell;
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use extregs_regs::NR_CPUS;
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

/// Set once the kernel is dying: from then on every print goes straight to
/// the UART, whatever context it comes from.
static DYING: AtomicBool = AtomicBool::new(false);

/// Releases the console lock unconditionally, for the oops and panic paths:
/// the event may have hit while the lock was held, and nothing else runs
/// after an oops (one CPU, interrupts off).
pub fn force_unlock() {
    DYING.store(true, Ordering::SeqCst);
    if SERIAL.is_locked() {
        // SAFETY: only called on the way to the failure exit, when the holder
        // can never run again; see the function documentation.
        unsafe { SERIAL.force_unlock() };
    }
}

/// Output of paranoid handlers (NMI, #DB, #MC) that interrupted their own
/// CPU's console section (the code below them holds the console lock, or
/// waits for it). Waiting would deadlock, dropping would lose it, so it
/// waits here until the next print that can take the lock writes it out
/// first (Linux's printk defers NMI output the same way). A paranoid
/// handler on a CPU that is *not* in its console section waits for the
/// lock like any other code: the holder is another CPU, which will let go.
///
/// So only the CPU that holds (or waits for) the lock ever defers, and the
/// one-CPU argument below holds on any number of CPUs: writers reserve a
/// region with one `fetch_add`, so a nested writer (an NMI inside a #DB)
/// gets its own region, and every writer finishes before the code it
/// interrupted continues. `writers` counts the writers between their
/// reservation and the end of their copy: the flush runs only when it is
/// zero (no writer is below the flusher on the stack; no other CPU can be
/// writing, as it would have to be in its console section while this one
/// holds the lock), so every region below `reserved` is complete when it is
/// read.
struct DeferredOutput {
    bytes: UnsafeCell<[u8; DEFERRED_BYTES]>,
    reserved: AtomicUsize,
    writers: AtomicUsize,
    messages: AtomicU64,
    lost_bytes: AtomicU64,
}

const DEFERRED_BYTES: usize = 8192;

// SAFETY: see the type's documentation: disjoint regions per writer, and
// the reader reads only while `writers` is zero, i.e. no writer is
// between its reservation and the end of its copy (only the lock holder's
// CPU defers, and the reader holds the lock).
unsafe impl Sync for DeferredOutput {}

static DEFERRED: DeferredOutput = DeferredOutput {
    bytes: UnsafeCell::new([0; DEFERRED_BYTES]),
    reserved: AtomicUsize::new(0),
    writers: AtomicUsize::new(0),
    messages: AtomicU64::new(0),
    lost_bytes: AtomicU64::new(0),
};

/// Messages deferred so far, and bytes lost because the buffer was full.
pub fn deferred_counts() -> (u64, u64) {
    (DEFERRED.messages.load(Ordering::Relaxed), DEFERRED.lost_bytes.load(Ordering::Relaxed))
}

/// One deferred message, formatted on the stack first so nested writers
/// never interleave inside it.
struct LineBuffer {
    bytes: [u8; 512],
    length: usize,
    /// Bytes that did not fit.
    truncated: usize,
}

impl Write for LineBuffer {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let room = self.bytes.len() - self.length;
        let take = text.len().min(room);
        self.bytes[self.length..self.length + take].copy_from_slice(&text.as_bytes()[..take]);
        self.length += take;
        self.truncated += text.len() - take;
        Ok(())
    }
}

fn defer(args: fmt::Arguments<'_>) {
    let mut line = LineBuffer { bytes: [0; 512], length: 0, truncated: 0 };
    let _ = line.write_fmt(args);
    DEFERRED.lost_bytes.fetch_add(line.truncated as u64, Ordering::Relaxed);
    DEFERRED.writers.fetch_add(1, Ordering::SeqCst);
    let start = DEFERRED.reserved.fetch_add(line.length, Ordering::SeqCst);
    if start + line.length > DEFERRED_BYTES {
        DEFERRED.reserved.fetch_sub(line.length, Ordering::SeqCst);
        DEFERRED.lost_bytes.fetch_add(line.length as u64, Ordering::Relaxed);
        DEFERRED.writers.fetch_sub(1, Ordering::SeqCst);
        return;
    }
    // SAFETY: `start..start + length` was reserved by this writer alone
    // (see DeferredOutput), inside the buffer (checked above).
    unsafe {
        core::ptr::copy_nonoverlapping(
            line.bytes.as_ptr(),
            DEFERRED.bytes.get().cast::<u8>().add(start),
            line.length,
        )
    };
    DEFERRED.messages.fetch_add(1, Ordering::Relaxed);
    DEFERRED.writers.fetch_sub(1, Ordering::SeqCst);
}

/// Writes out what paranoid handlers deferred, oldest first. Called with
/// the console lock held; does nothing while a writer is mid-copy below the
/// caller (a paranoid handler that interrupted `defer`, or the dying path),
/// since its region is not complete yet.
fn flush_deferred(console: &mut SerialConsole) {
    if DEFERRED.writers.load(Ordering::SeqCst) != 0 {
        if DYING.load(Ordering::SeqCst) {
            console.0.send_bytes_exact(
                b"[extregs: deferred console output withheld: a writer was interrupted]\n",
            );
        }
        return;
    }
    let mut written = 0;
    loop {
        let reserved = DEFERRED.reserved.load(Ordering::Relaxed);
        if reserved == written {
            // Nothing new since: empty the buffer unless a writer got in.
            if DEFERRED
                .reserved
                .compare_exchange(reserved, 0, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
            {
                return;
            }
            continue;
        }
        // SAFETY: every region below `reserved` is complete (see
        // DeferredOutput) and nobody writes below it again until the
        // compare_exchange above resets the buffer.
        let pending = unsafe {
            core::slice::from_raw_parts(
                DEFERRED.bytes.get().cast::<u8>().add(written),
                reserved - written,
            )
        };
        console.0.send_bytes_exact(pending);
        written = reserved;
    }
}

/// Asks whether the code printing now must not wait for the console lock
/// (a paranoid handler: NMI, #DB, #MC, #DF), which only the entry layer
/// knows: it installs the answer at boot ([`set_must_not_wait`]).
static MUST_NOT_WAIT: HookSlot<fn() -> bool> = HookSlot::empty();

/// Installs the question [`print_args`] asks before it waits for the lock.
pub fn set_must_not_wait(question: fn() -> bool) {
    MUST_NOT_WAIT.set(question);
}

fn must_not_wait() -> bool {
    MUST_NOT_WAIT.get().is_some_and(|question| question())
}

/// Is this CPU in its console section: holding the console lock, or
/// spinning for it? A paranoid handler that finds its own CPU there must
/// not wait (the code it interrupted may hold the lock); on any other CPU
/// it may.
static IN_CONSOLE_SECTION: PerCpu<AtomicBool> =
    PerCpu::new([const { AtomicBool::new(false) }; NR_CPUS]);

/// Runs `body` in this CPU's console section with the lock held (IF clear,
/// as every holder of the lock: an IRQ handler that prints would otherwise
/// spin on it forever). `Err(())` without running it when this is a
/// paranoid handler that interrupted its own CPU's console section and the
/// lock is taken.
fn in_console_section<T>(body: impl FnOnce(&mut SerialConsole) -> T) -> Result<Option<T>, ()> {
    x86_64::instructions::interrupts::without_interrupts(|| {
        let section = IN_CONSOLE_SECTION.this();
        let interrupted_own_section = section.swap(true, Ordering::SeqCst);
        let dying = DYING.load(Ordering::SeqCst);
        let mut guard = if interrupted_own_section && !dying && must_not_wait() {
            match SERIAL.try_lock() {
                Some(guard) => guard,
                None => return Err(()),
            }
        } else {
            SERIAL.lock()
        };
        let result = guard.as_mut().map(body);
        drop(guard);
        section.store(interrupted_own_section, Ordering::SeqCst);
        Ok(result)
    })
}

#[doc(hidden)]
pub fn print_args(args: fmt::Arguments<'_>) {
    let printed = in_console_section(|console| {
        // Earlier deferred lines first, so the order is kept.
        flush_deferred(console);
        let _ = console.write_fmt(args);
    });
    if printed.is_err() {
        defer(args);
    }
}

/// Runs `body` with the console lock held, as code printing a long message
/// would: for the selftest that a paranoid handler printing meanwhile
/// neither deadlocks nor loses its output.
pub fn with_console_locked<T>(body: impl FnOnce() -> T) -> T {
    match in_console_section(|_| body()) {
        Ok(Some(result)) => result,
        _ => panic!("with_console_locked: no console, or called from a nested paranoid handler"),
    }
}

/// Prints to the serial console.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => { $crate::arch::serial::print_args(format_args!($($arg)*)) };
}

/// Prints a line to the serial console.
#[macro_export]
macro_rules! println {
    () => { $crate::print!("\n") };
    ($($arg:tt)*) => { $crate::arch::serial::print_args(format_args!("{}\n", format_args!($($arg)*))) };
}
