//! External interrupts (vectors 32..=255): the dispatcher the IRQ stubs
//! reach through `irqentry_enter`/`irqentry_exit`.
//!
//! Each known vector has a counter; the last frame of each kind is kept
//! for the selftests. An unexpected vector is reported with its number (as
//! Linux's "No irq handler for vector") and acknowledged.

use crate::arch::apic::{self, ERROR_VECTOR, SELF_IPI_VECTOR, SPURIOUS_VECTOR, TIMER_VECTOR};
use crate::entry::events::{observe, Observed};
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use extregs_regs::PtRegs;
use spin::Mutex;

static TIMER_IRQS: AtomicU64 = AtomicU64::new(0);
static SELF_IPIS: AtomicU64 = AtomicU64::new(0);
static SPURIOUS: AtomicU64 = AtomicU64::new(0);
static RESCHEDULE_IPIS: AtomicU64 = AtomicU64::new(0);
static APIC_ERRORS: AtomicU64 = AtomicU64::new(0);
static UNEXPECTED: AtomicU64 = AtomicU64::new(0);
static LAST_UNEXPECTED_VECTOR: AtomicU8 = AtomicU8::new(0);
static REPORT_UNEXPECTED: AtomicBool = AtomicBool::new(true);

/// The last IRQ frame seen, for the selftests (only while they record:
/// a snapshot reads DR6, CR2 and PKRS, which the idle loop and the fuzzer
/// should not pay for on every IRQ).
static LAST_FRAME: Mutex<Option<Observed>> = Mutex::new(None);
static RECORD_FRAMES: AtomicBool = AtomicBool::new(false);

/// Keep (or stop keeping) the last IRQ frame for [`take_last_frame`].
pub fn set_recording(record: bool) {
    RECORD_FRAMES.store(record, Ordering::SeqCst);
}

/// Something a test asks the self-IPI handler to do from inside the IRQ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum IpiAction {
    Nothing = 0,
    /// Send a self-NMI from inside the IRQ handler (NMI nested in an IRQ).
    SendSelfNmi = 1,
}

static IPI_ACTION: AtomicU8 = AtomicU8::new(IpiAction::Nothing as u8);

/// Sets what the next self-IPIs do.
pub fn set_ipi_action(action: IpiAction) {
    IPI_ACTION.store(action as u8, Ordering::SeqCst);
}

/// Counts of every kind of IRQ since boot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IrqCounts {
    pub timer: u64,
    pub self_ipi: u64,
    pub spurious: u64,
    pub apic_errors: u64,
    pub unexpected: u64,
}

pub fn counts() -> IrqCounts {
    IrqCounts {
        timer: TIMER_IRQS.load(Ordering::SeqCst),
        self_ipi: SELF_IPIS.load(Ordering::SeqCst),
        spurious: SPURIOUS.load(Ordering::SeqCst),
        apic_errors: APIC_ERRORS.load(Ordering::SeqCst),
        unexpected: UNEXPECTED.load(Ordering::SeqCst),
    }
}

/// The vector of the last unexpected interrupt.
pub fn last_unexpected_vector() -> u8 {
    LAST_UNEXPECTED_VECTOR.load(Ordering::SeqCst)
}

/// Print (or not) a line per unexpected vector. Counting never stops.
pub fn set_report_unexpected(report: bool) {
    REPORT_UNEXPECTED.store(report, Ordering::SeqCst);
}

/// The last IRQ frame, taken (so the next read sees only a newer one).
pub fn take_last_frame() -> Option<Observed> {
    LAST_FRAME.lock().take()
}

/// Dispatches one external interrupt. Called with IF clear, after
/// `irqentry_enter`.
/// IRQs of the foreign timer (`apic::start_foreign_timer`).
static FOREIGN_TIMER_IRQS: AtomicU64 = AtomicU64::new(0);

/// Foreign timer IRQs handled since boot.
pub fn foreign_timer_irqs() -> u64 {
    FOREIGN_TIMER_IRQS.load(Ordering::SeqCst)
}

pub fn handle(regs: &mut PtRegs, vector: u8) {
    // An IRQ can't interrupt a holder of this lock (it is taken only here
    // and by take_last_frame with IF clear... or by a test between IRQs), so
    // try_lock only fails if a test holds it across an IRQ; then the frame
    // is simply not recorded.
    if RECORD_FRAMES.load(Ordering::Relaxed) {
        if let Some(mut last) = LAST_FRAME.try_lock() {
            // SAFETY: `regs` is the IRQ stub's frame.
            *last = Some(unsafe { observe(regs, vector) });
        }
    }
    match vector {
        // The 8259's IRQ 0 arrives as ExtINT, which sets no local APIC ISR
        // bit; anything in service on this vector came through the local
        // APIC (a fixed IPI) and is merely unexpected.
        apic::FOREIGN_TIMER_VECTOR if !apic::in_service(vector) => {
            FOREIGN_TIMER_IRQS.fetch_add(1, Ordering::SeqCst);
            crate::debug::coverage::record(regs.ip);
            apic::end_foreign_timer_irq();
        }
        TIMER_VECTOR => {
            TIMER_IRQS.fetch_add(1, Ordering::SeqCst);
            // EOI before the tick: the exit may switch tasks, and the
            // next task must not run with the timer still in service.
            apic::eoi();
            crate::sched::scheduler_tick();
        }
        SELF_IPI_VECTOR => {
            SELF_IPIS.fetch_add(1, Ordering::SeqCst);
            if IPI_ACTION.load(Ordering::SeqCst) == IpiAction::SendSelfNmi as u8 {
                apic::send_self_nmi();
            }
            apic::eoi();
        }
        apic::RESCHEDULE_VECTOR => {
            // Another CPU queued a task for this one, or changed the tick
            // (sched::kick, start_tick), or left an idle AP work
            // (sched::ap::run_on_ap).
            RESCHEDULE_IPIS.fetch_add(1, Ordering::SeqCst);
            apic::eoi();
            crate::sched::reschedule_ipi();
        }
        crate::arch::tlb::TLB_SHOOTDOWN_VECTOR => {
            // Another CPU changed a kernel mapping and waits for this
            // CPU's TLB to forget the old entry.
            crate::arch::tlb::handle_shootdown_ipi();
            apic::eoi();
        }
        SPURIOUS_VECTOR => {
            // A real spurious interrupt sets no ISR bit and must not be
            // EOI'd; one delivered as an ordinary interrupt on this vector
            // (e.g. a fixed IPI) is in service and must be.
            SPURIOUS.fetch_add(1, Ordering::SeqCst);
            if apic::in_service(SPURIOUS_VECTOR) {
                apic::eoi();
            }
        }
        ERROR_VECTOR => {
            APIC_ERRORS.fetch_add(1, Ordering::SeqCst);
            println!("extregs: APIC error interrupt");
            apic::eoi();
        }
        _ => {
            UNEXPECTED.fetch_add(1, Ordering::SeqCst);
            LAST_UNEXPECTED_VECTOR.store(vector, Ordering::SeqCst);
            if REPORT_UNEXPECTED.load(Ordering::SeqCst) {
                println!("extregs: unexpected interrupt on vector {vector:#04x} ({vector})");
            }
            if apic::in_service(vector) {
                apic::eoi();
            }
        }
    }
}
