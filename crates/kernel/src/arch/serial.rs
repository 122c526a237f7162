//! The serial console (COM1, a 16550 UART driven by the `uart_16550` crate)
//! and the `print!`/`println!` macros.
//!
//! Everything the kernel says goes here: QEMU maps it to stdio, and the
//! runner and tests read it.

use crate::arch::percpu::this_cpu;
use core::cell::UnsafeCell;
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use uart_16550::backend::PioBackend;
use uart_16550::{Config, Uart16550};

/// The legacy COM1 I/O port base.
const COM1_PORT: u16 = 0x3f8;

/// COM1 once [`init`] ran, behind the console lock [`CONSOLE_OWNER`].
struct Console(UnsafeCell<Option<SerialConsole>>);

// SAFETY: the UART is reached only by the CPU that owns the console lock
// (`with_console`: a compare-exchange of CONSOLE_OWNER from 0 to its
// number), or by the dying CPU once every other CPU is stopped
// (`force_unlock`); `init` writes it before any other CPU runs.
unsafe impl Sync for Console {}

static SERIAL: Console = Console(UnsafeCell::new(None));

/// The console lock: the CPU holding it, plus one (0: free). The owner is
/// part of the lock word itself, so a paranoid handler can always tell
/// whether the code it interrupted on its own CPU holds the lock: there is
/// no instruction at which the lock is taken but the owner unknown.
static CONSOLE_OWNER: AtomicUsize = AtomicUsize::new(0);

struct SerialConsole(Uart16550<PioBackend>);

impl Write for SerialConsole {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        self.0.send_bytes_exact(text.as_bytes());
        Ok(())
    }
}

/// Sets up COM1. Called first thing at boot, before any other CPU runs.
pub fn init() {
    // SAFETY: COM1 at 0x3f8 is the standard PC UART; nothing else in the
    // kernel drives these ports.
    let mut uart = unsafe { Uart16550::new_port(COM1_PORT) }.expect("COM1 port range is valid");
    // A missing UART leaves the console silent rather than stopping the boot:
    // the exit status still tells the runner what happened.
    if uart.init(Config::default()).is_ok() {
        // SAFETY: boot, one CPU, nothing printed yet: no other reference to the console exists.
        unsafe { *SERIAL.0.get() = Some(SerialConsole(uart)) };
    }
}

/// Set once the kernel is dying, to the CPU that may print plus one: the
/// dying CPU, or a stopped CPU it handed the console to for its backtrace
/// (while it waits). That CPU's prints go straight to the UART, whatever
/// context they come from and whoever held the lock: every other CPU is
/// stopped or waiting.
static DYING: AtomicUsize = AtomicUsize::new(0);

/// For the oops and panic paths, on the dying CPU once it stopped the
/// others: takes the console whoever held it (the event may have hit
/// while this CPU, or a CPU now stopped, held the lock).
pub fn force_unlock() {
    DYING.store(this_cpu() + 1, Ordering::SeqCst);
}

/// A write-through of the CPU [`DYING`] names is running.
static DYING_WRITE_IN_PROGRESS: AtomicBool = AtomicBool::new(false);

/// The dying CPU hands the console to stopped CPU `cpu` for its backtrace
/// (it waits meanwhile, and takes it back with [`force_unlock`]).
pub fn force_unlock_for(cpu: usize) {
    DYING.store(cpu + 1, Ordering::SeqCst);
}

/// Does the code this CPU interrupted hold the console lock? (A paranoid
/// handler then can't wait for it.)
pub fn held_by_this_cpu() -> bool {
    CONSOLE_OWNER.load(Ordering::SeqCst) == this_cpu() + 1
}

/// Output of paranoid handlers (NMI, #DB, #MC) whose own CPU holds the
/// console lock (the code below them is printing). Waiting would deadlock,
/// dropping would lose it, so it waits here until the next print that
/// takes the lock writes it out first (Linux's printk defers NMI output
/// the same way). A handler on any other CPU waits for the lock like any
/// other code: the holder is another CPU, which will let go.
///
/// So only the CPU that holds the lock ever defers, and only from
/// handlers nested in its printing code; the flush runs in that printing
/// code (the lock held) after they all returned. Writers reserve a region
/// with one `fetch_add`, so a nested writer (an NMI inside a #DB) gets its
/// own region, and every writer finishes before the code it interrupted
/// continues. `writers` counts the writers between their reservation and
/// the end of their copy: the flush runs only when it is zero (no writer is
/// below the flusher on the stack, and none can be on another CPU, which
/// would have to hold the lock), so every region below `reserved` is
/// complete when it is read.
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
// between its reservation and the end of its copy (only handlers nested in
// the lock holder defer, and the reader is that holder).
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
        if DYING.load(Ordering::SeqCst) != 0 {
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

/// Runs `body` with the console, IF clear (as every holder of the lock:
/// an IRQ handler that prints would otherwise spin on it forever).
/// `Err(())` without running it when the code this interrupted on this CPU
/// holds the lock: only a paranoid handler (NMI, #DB, #MC) can be nested
/// there, and it must not wait. The dying CPU writes straight through.
fn with_console<T>(body: impl FnOnce(&mut SerialConsole) -> T) -> Result<Option<T>, ()> {
    x86_64::instructions::interrupts::without_interrupts(|| {
        let me = this_cpu() + 1;
        match DYING.load(Ordering::SeqCst) {
            0 => {}
            dying if dying == me => {
                // A handler nested in this CPU's own write-through defers (the flush of the
                // next write prints it), so only one write-through runs at a time.
                if DYING_WRITE_IN_PROGRESS.swap(true, Ordering::SeqCst) {
                    return Err(());
                }
                // SAFETY: every other CPU is stopped, parked below or waits for this one (the
                // dying CPU hands the console over), and nested writers defer (the flag above):
                // one user of the UART.
                let result = unsafe { (*SERIAL.0.get()).as_mut() }.map(body);
                DYING_WRITE_IN_PROGRESS.store(false, Ordering::SeqCst);
                return Ok(result);
            }
            // Another CPU is dying, and this one did not stop (it took no NMI): it never
            // prints again, so the dying CPU's output stays its own.
            _ => loop {
                core::hint::spin_loop();
            },
        }
        if CONSOLE_OWNER.load(Ordering::SeqCst) == me {
            return Err(());
        }
        while CONSOLE_OWNER.compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed).is_err() {
            core::hint::spin_loop();
        }
        // A paranoid handler nested here on this CPU sees itself as the owner and defers.
        // SAFETY: this CPU owns the console lock (the compare-exchange above): no other CPU
        // reaches the UART until the release below, and nothing nested here does: one reference.
        let result = unsafe { (*SERIAL.0.get()).as_mut() }.map(body);
        CONSOLE_OWNER.store(0, Ordering::Release);
        Ok(result)
    })
}

#[doc(hidden)]
pub fn print_args(args: fmt::Arguments<'_>) {
    let printed = with_console(|console| {
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
    match with_console(|_| body()) {
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
