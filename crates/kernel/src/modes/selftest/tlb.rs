//! Selftests of TLB shootdowns: a task on an AP reads a kernel page (its
//! CPU's TLB now holds the entry) and spins; the boot CPU then unmaps the
//! page (and maps another frame there) or gives it a protection key the
//! task has no rights for; the task's next read must see the change. Under
//! QEMU's TCG, as on hardware, a CPU keeps using a cached entry until it
//! is flushed, so without the shootdown the AP reads the old frame, or
//! with the old key's rights. They need an AP (`# SKIP needs 2 CPUs`).

use super::{check, wait_until, Context, Outcome, EVENT_TIMEOUT_TSC};
use crate::arch::pks::{self, KeyRights, PksFault};
use crate::arch::{irqflags, memory, tlb};
use crate::sched;
use core::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use extregs_regs::PtRegs;
use x86_64::VirtAddr;

/// The first online AP's CPU number, or the skip on one CPU.
fn first_ap() -> Result<usize, Outcome> {
    super::smp::first_ap().map(|(cpu, _)| cpu)
}

const FIRST_FILL: u64 = 0x7b1f_0000_0000_0001;
const SECOND_FILL: u64 = 0x7b1f_0000_0000_0002;
/// The key the retag test gives its page (no task's default PKRS grants it).
const RETAG_KEY: u8 = 9;

/// The reader's page, its phase (0: start, 1: read once, 2: read again,
/// 3: done) and what it read each time.
static PAGE: AtomicU64 = AtomicU64::new(0);
static PHASE: AtomicU8 = AtomicU8::new(0);
static FIRST_READ: AtomicU64 = AtomicU64::new(0);
static SECOND_READ: AtomicU64 = AtomicU64::new(0);
/// PKS faults on [`RETAG_KEY`] (each resolved by granting the key).
static RETAG_FAULTS: AtomicU64 = AtomicU64::new(0);

/// Reads the page once (filling its CPU's TLB), waits, with interrupts
/// on and nothing else to switch to, for the boot CPU's change, then reads
/// again.
fn reader(_: usize) {
    let page = PAGE.load(Ordering::SeqCst) as *const u64;
    // SAFETY: the test mapped the page (key 0) before spawning this task and changes it only
    // between the two reads, through the page tables; a read is of an aligned word of it.
    FIRST_READ.store(unsafe { page.read_volatile() }, Ordering::SeqCst);
    // The test may have given up on this task already (phase 2 without a
    // first read): then it reads nothing more.
    if PHASE.compare_exchange(0, 1, Ordering::SeqCst, Ordering::SeqCst).is_err() {
        return;
    }
    while PHASE.load(Ordering::SeqCst) != 2 {
        core::hint::spin_loop();
    }
    // SAFETY: the page is mapped again (another frame) or retagged; a PKS fault on the new key is
    // resolved by `grant_retag_key`.
    SECOND_READ.store(unsafe { page.read_volatile() }, Ordering::SeqCst);
    PHASE.store(3, Ordering::SeqCst);
}

/// Runs the reader on `ap` and calls `change` between its two reads;
/// false if the reader never read, or never finished.
fn read_change_read(ap: usize, page: VirtAddr, change: impl FnOnce()) -> bool {
    PAGE.store(page.as_u64(), Ordering::SeqCst);
    PHASE.store(0, Ordering::SeqCst);
    FIRST_READ.store(0, Ordering::SeqCst);
    SECOND_READ.store(0, Ordering::SeqCst);
    let Ok(handle) = sched::spawn_with_affinity(format_args!("tlb-reader"), reader, 0, 1 << ap)
    else {
        return false;
    };
    // Selftests run with interrupts off; the shootdown waits for the AP,
    // and the AP's task waits for this CPU only through PHASE.
    irqflags::local_irq_enable();
    let read_once = wait_until(|| PHASE.load(Ordering::SeqCst) == 1, EVENT_TIMEOUT_TSC);
    if read_once {
        change();
    }
    PHASE.store(2, Ordering::SeqCst);
    let finished = wait_until(|| PHASE.load(Ordering::SeqCst) == 3, EVENT_TIMEOUT_TSC);
    irqflags::local_irq_disable();
    sched::wait(handle);
    read_once && finished
}

/// Unmapping a kernel page shoots it down: after the boot CPU unmaps the
/// page and maps another frame at the same address, the AP that read the
/// page before reads the new frame, not the old one through its TLB.
pub fn tlb_shootdown_after_unmap(_: &Context) -> Outcome {
    let ap = match first_ap() {
        Ok(ap) => ap,
        Err(skip) => return skip,
    };
    let page = memory::map_pkey_page(0, FIRST_FILL).address;
    let (shootdowns_before, _) = tlb::counts();
    let ran = read_change_read(ap, page, || {
        // SAFETY: the test's own pkey page: only the reader task reads it, through PAGE, and it
        // reads again only once a frame is mapped there again (below).
        let old_frame = unsafe { memory::unmap_kernel_page(page) };
        let new_frame = memory::allocate_zeroed_frame();
        let alias = memory::physical_to_virtual(new_frame.start_address()).as_mut_ptr::<u64>();
        // SAFETY: a frame just allocated (nothing else maps it but the physical map): its first
        // word, through that alias.
        unsafe { alias.write_volatile(SECOND_FILL) };
        // SAFETY: the frame is this test's, and the page's old mapping is gone (unmapped above).
        unsafe { memory::map_kernel_page(page, new_frame, 0) };
        // SAFETY: unmapped and shot down above: no entry, TLB entry or pointer reaches it.
        unsafe { memory::free_frame(old_frame) };
    });
    let (shootdowns_after, _) = tlb::counts();
    check!(ran, "the reader on CPU {ap} did not read twice");
    check!(FIRST_READ.load(Ordering::SeqCst) == FIRST_FILL, "the first read missed the page");
    let second = SECOND_READ.load(Ordering::SeqCst);
    check!(
        second == SECOND_FILL,
        "CPU {ap} read {second:#x} after the unmap: the old (freed) frame, through a stale TLB entry"
    );
    check!(shootdowns_after > shootdowns_before, "the unmap sent no shootdown");
    Outcome::Pass
}

/// A PKS fault on [`RETAG_KEY`]: counted, and resolved by granting the
/// key in the faulting frame's saved PKRS.
fn grant_retag_key(regs: &mut PtRegs, fault: PksFault) -> bool {
    RETAG_FAULTS.fetch_add(1, Ordering::SeqCst);
    // SAFETY: `regs` is the #PF entry's frame, handed to this handler.
    unsafe { pks::pks_update_saved(regs, fault.pkey, KeyRights::ReadWrite) }
}

/// Changing a page's protection key shoots it down: the AP that read the
/// page under key 0 faults on its next read, under a key its PKRS denies.
pub fn tlb_shootdown_after_pkey_retag(context: &Context) -> Outcome {
    let ap = match first_ap() {
        Ok(ap) => ap,
        Err(skip) => return skip,
    };
    if context.pkey_page.is_none() {
        return Outcome::Skip("PKS is not supported by this CPU");
    }
    let page = memory::map_pkey_page(0, FIRST_FILL).address;
    RETAG_FAULTS.store(0, Ordering::SeqCst);
    pks::register_fault_handler(RETAG_KEY, grant_retag_key);
    let ran = read_change_read(ap, page, || memory::set_page_pkey(page, RETAG_KEY));
    pks::unregister_fault_handler(RETAG_KEY);
    check!(ran, "the reader on CPU {ap} did not read twice");
    check!(FIRST_READ.load(Ordering::SeqCst) == FIRST_FILL, "the first read missed the page");
    check!(SECOND_READ.load(Ordering::SeqCst) == FIRST_FILL, "the second read missed the page");
    let faults = RETAG_FAULTS.load(Ordering::SeqCst);
    check!(
        faults == 1,
        "{faults} PKS faults on key {RETAG_KEY} after the retag (expected 1): CPU {ap} kept the old key's rights"
    );
    Outcome::Pass
}
