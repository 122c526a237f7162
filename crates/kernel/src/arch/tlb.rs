//! TLB shootdowns: a change that takes a kernel mapping away or narrows
//! it (an unmap, a new protection key) reaches every online CPU's TLB
//! before it counts as done.
//!
//! The CPU making the change flushes its own TLB, then sends every other
//! online CPU an IPI on [`TLB_SHOOTDOWN_VECTOR`] (Linux carries its
//! shootdowns on `CALL_FUNCTION_VECTOR`), whose handler flushes the same
//! pages and acknowledges with the request's generation; the sender waits
//! for every acknowledgement, for at most [`SHOOTDOWN_TIMEOUT_MS`], and
//! panics naming the CPU that did not answer.
//!
//! The sender waits with interrupts off (it may not migrate, and its own
//! TLB is already flushed). A CPU may therefore wait for a sender's lock
//! (the shootdown lock, or the kernel's page-table lock, which senders
//! hold) with interrupts off, where the IPI can't reach it: every such
//! wait answers the request in flight itself while it spins
//! ([`answer_pending_shootdown`]), so no two CPUs wait for each other.
//!
//! What needs no shootdown: a new mapping (the TLB caches no
//! not-present entry; a new page table is zeroed before it is linked, as
//! every frame the allocator hands out is), and a Linux process's own lower half, which only
//! the one CPU running the process can have cached (a process has one
//! thread, and every CR3 load of a switch flushes the other CPUs' entries
//! of it; see `docs/smp.md`).

use crate::arch::percpu::{this_cpu, PerCpu};
use crate::arch::{apic, smp};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use extregs_regs::NR_CPUS;
use x86_64::VirtAddr;

/// The IPI vector of a shootdown (Linux's `CALL_FUNCTION_VECTOR`).
pub const TLB_SHOOTDOWN_VECTOR: u8 = 0xfc;
/// How long a sender waits for every other CPU to flush.
pub const SHOOTDOWN_TIMEOUT_MS: u64 = 5000;
/// Past this many pages a flush is a full (non-global) flush, CR3 reloaded.
const FULL_FLUSH_PAGES: u64 = 32;

/// Held by the CPU whose shootdown is in flight (taken with interrupts on).
static SHOOTDOWN_LOCK: AtomicBool = AtomicBool::new(false);
/// The request in flight: its first page, its page count and its number.
static REQUEST_START: AtomicU64 = AtomicU64::new(0);
static REQUEST_PAGES: AtomicU64 = AtomicU64::new(0);
static GENERATION: AtomicU64 = AtomicU64::new(0);
/// The last request each CPU has flushed.
static FLUSHED: PerCpu<AtomicU64> = PerCpu::new([const { AtomicU64::new(0) }; NR_CPUS]);
/// Shootdowns sent and shootdown IPIs handled, since boot.
static SHOOTDOWNS: AtomicU64 = AtomicU64::new(0);
static IPIS_HANDLED: AtomicU64 = AtomicU64::new(0);
/// The fault-injection build's `inject=skip-tlb-shootdown`: flush this
/// CPU only.
static SKIP_REMOTE_FLUSH: AtomicBool = AtomicBool::new(false);

/// Flushes `pages` pages from `start` on this CPU.
fn flush_local(start: u64, pages: u64) {
    if pages > FULL_FLUSH_PAGES {
        x86_64::instructions::tlb::flush_all();
        return;
    }
    for page in 0..pages {
        x86_64::instructions::tlb::flush(VirtAddr::new_truncate(start + page * 4096));
    }
}

/// Flushes `pages` pages from `start` out of every online CPU's TLB and
/// returns once each has (the shootdown). Call from task context with
/// interrupts on, after the page-table change.
///
/// # Panics
///
/// When a CPU does not flush within [`SHOOTDOWN_TIMEOUT_MS`].
pub fn flush_kernel_range(start: VirtAddr, pages: u64) {
    while SHOOTDOWN_LOCK
        .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        answer_pending_shootdown();
        core::hint::spin_loop();
    }
    x86_64::instructions::interrupts::without_interrupts(|| {
        flush_local(start.as_u64(), pages);
        SHOOTDOWNS.fetch_add(1, Ordering::Relaxed);
        if SKIP_REMOTE_FLUSH.load(Ordering::Relaxed) {
            return;
        }
        REQUEST_START.store(start.as_u64(), Ordering::Relaxed);
        REQUEST_PAGES.store(pages, Ordering::Relaxed);
        let generation = GENERATION.fetch_add(1, Ordering::Release) + 1;
        let me = this_cpu();
        for (cpu, apic_id) in smp::online_cpus() {
            if cpu != me {
                apic::send_ipi(apic_id, TLB_SHOOTDOWN_VECTOR);
            }
        }
        // SAFETY: RDTSC reads a counter; no memory is touched.
        let start_tsc = unsafe { core::arch::x86_64::_rdtsc() };
        let timeout = apic::tsc_ticks_per_ms() * SHOOTDOWN_TIMEOUT_MS;
        for (cpu, _) in smp::online_cpus() {
            while cpu != me && FLUSHED.of(cpu).load(Ordering::Acquire) < generation {
                // SAFETY: as above.
                if unsafe { core::arch::x86_64::_rdtsc() } - start_tsc > timeout {
                    panic!(
                        "TLB shootdown of {pages} pages at {start:#x}: CPU {cpu} did not flush within {SHOOTDOWN_TIMEOUT_MS} ms"
                    );
                }
                core::hint::spin_loop();
            }
        }
    });
    SHOOTDOWN_LOCK.store(false, Ordering::Release);
}

/// The shootdown IPI's handler: flush the request in flight and say so.
pub fn handle_shootdown_ipi() {
    IPIS_HANDLED.fetch_add(1, Ordering::Relaxed);
    answer_pending_shootdown();
}

/// Flushes the request in flight, if this CPU has not yet, and
/// acknowledges it: the IPI's work, also done by a CPU that spins for a
/// lock a sender may hold (its interrupts may be off).
pub fn answer_pending_shootdown() {
    // Interrupts off: a task preempted between finding this CPU's slot and
    // the flush would flush another CPU's TLB and acknowledge for this one.
    x86_64::instructions::interrupts::without_interrupts(|| {
        // The sender stored the request before it bumped the generation
        // (release), and stores the next request only after every CPU
        // acknowledged this one.
        let generation = GENERATION.load(Ordering::Acquire);
        let flushed = FLUSHED.this();
        if flushed.load(Ordering::Relaxed) >= generation {
            return;
        }
        flush_local(REQUEST_START.load(Ordering::Relaxed), REQUEST_PAGES.load(Ordering::Relaxed));
        flushed.store(generation, Ordering::Release);
    });
}

/// Shootdowns sent and shootdown IPIs handled since boot.
pub fn counts() -> (u64, u64) {
    (SHOOTDOWNS.load(Ordering::Relaxed), IPIS_HANDLED.load(Ordering::Relaxed))
}

/// `inject=skip-tlb-shootdown` (fault-injection builds): every shootdown
/// flushes the sending CPU only, so another CPU may keep using a stale
/// entry; the shootdown selftests must catch it.
#[cfg(fault_injection)]
pub fn skip_remote_flushes() {
    SKIP_REMOTE_FLUSH.store(true, Ordering::SeqCst);
}
