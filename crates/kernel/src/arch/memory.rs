//! Paging: the bootloader's page tables seen through its physical-memory
//! mapping, a frame allocator over the usable regions, and the pkey-tagged
//! test page that shows PKS really guards memory.

use bootloader_api::info::{MemoryRegionKind, MemoryRegions};
use core::sync::atomic::{AtomicU64, Ordering};
use spin::Mutex;
use x86_64::registers::control::Cr3;
use x86_64::structures::paging::{
    FrameAllocator, Mapper, OffsetPageTable, Page, PageTable, PageTableFlags, PhysFrame, Size4KiB,
};
use x86_64::{PhysAddr, VirtAddr};

/// The first address of the kernel half: level-4 slots 256..512. The
/// bootloader places everything there (`BOOTLOADER_CONFIG`), and so does
/// [`map_in_free_slot`]; the lower half is user space.
pub const KERNEL_HALF_START: u64 = 0xffff_8000_0000_0000;
/// The first level-4 slot of the kernel half.
pub const KERNEL_HALF_FIRST_SLOT: usize = 256;

/// Kernel-half level-4 slots given an empty level-3 table at [`init`] and
/// not used yet, one bit each (bit `s - 256`). Every slot of the kernel
/// half is present from `init` on, so a process's level-4 table copies the
/// kernel half once and sees every later kernel mapping (Linux
/// preallocates its kernel PGDs for the same reason).
static FREE_KERNEL_SLOTS: Mutex<[u64; 4]> = Mutex::new([0; 4]);

/// Where the bootloader mapped all of physical memory (0 before [`init`]).
static PHYSICAL_MEMORY_OFFSET: AtomicU64 = AtomicU64::new(0);

/// Hands out the usable frames of the bootloader's memory map, in order,
/// after any frame given back with [`free_frame`] (a list threaded
/// through the free frames' first words, read through the physical map).
struct BootFrameAllocator {
    regions: &'static MemoryRegions,
    next: usize,
    /// The most recently freed frame's physical address (0: none).
    free_list: u64,
    /// Frames on the free list.
    free_count: u64,
}

/// Frames below this are never handed out: the AP trampoline's frame is
/// among them ([`trampoline_frame`]), and real-mode code may use the rest.
const LOW_MEMORY_END: u64 = 0x10_0000;

// SAFETY: frames come only from regions the bootloader marked Usable, at
// or above 1 MiB, and each is returned at most once until it is freed
// again (`next` only grows; a freed frame leaves the list when handed out).
unsafe impl FrameAllocator<Size4KiB> for BootFrameAllocator {
    /// Every frame comes zero-filled: `map_to` links a new page table into
    /// its parent before it clears it (x86_64's `create_next_table`), and a
    /// frame back from [`free_frame`] (a process's old page table among
    /// them) may hold present-looking entries that another CPU's page walk,
    /// or [`walk`], could see in between.
    fn allocate_frame(&mut self) -> Option<PhysFrame> {
        let frame = self.take_frame()?;
        let words = physical_to_virtual(frame.start_address()).as_mut_ptr::<u64>();
        for index in 0..512 {
            // SAFETY: the frame was just taken off the free list or the memory map, so nothing
            // else uses it; the physical map maps it (key 0) at `words`, 512 words = 4 KiB.
            unsafe { words.add(index).write_volatile(0) };
        }
        // The zeroes before any store that links the frame into a table.
        core::sync::atomic::compiler_fence(Ordering::SeqCst);
        Some(frame)
    }
}

impl BootFrameAllocator {
    /// The next free frame, as it is.
    fn take_frame(&mut self) -> Option<PhysFrame> {
        if self.free_list != 0 {
            let frame = PhysFrame::containing_address(PhysAddr::new(self.free_list));
            let link = physical_to_virtual(frame.start_address()).as_ptr::<u64>();
            // SAFETY: a frame on the free list is owned by the list alone, and its first word
            // (written by `free_frame`) holds the next link; read through the physical map.
            self.free_list = unsafe { link.read_volatile() };
            self.free_count -= 1;
            return Some(frame);
        }
        let frame = self
            .regions
            .iter()
            .filter(|region| region.kind == MemoryRegionKind::Usable)
            .flat_map(|region| (region.start.max(LOW_MEMORY_END)..region.end).step_by(4096))
            .map(|address| PhysFrame::containing_address(PhysAddr::new(address)))
            .nth(self.next)?;
        self.next += 1;
        Some(frame)
    }
}

/// The frame allocator, locked with interrupts off on this CPU until the
/// guard drops (the lock first, then IF as it was): a task can't be
/// preempted while it holds the lock, so the next one never spins on it.
struct AllocatorGuard {
    lock: Option<spin::MutexGuard<'static, Option<BootFrameAllocator>>>,
    interrupts_were_on: bool,
}

fn lock_allocator() -> AllocatorGuard {
    let interrupts_were_on = x86_64::instructions::interrupts::are_enabled();
    x86_64::instructions::interrupts::disable();
    AllocatorGuard { lock: Some(FRAME_ALLOCATOR.lock()), interrupts_were_on }
}

impl core::ops::Deref for AllocatorGuard {
    type Target = BootFrameAllocator;
    fn deref(&self) -> &BootFrameAllocator {
        self.lock.as_ref().and_then(|lock| lock.as_ref()).expect("memory::init ran")
    }
}

impl core::ops::DerefMut for AllocatorGuard {
    fn deref_mut(&mut self) -> &mut BootFrameAllocator {
        self.lock.as_mut().and_then(|lock| lock.as_mut()).expect("memory::init ran")
    }
}

impl Drop for AllocatorGuard {
    fn drop(&mut self) {
        drop(self.lock.take());
        if self.interrupts_were_on {
            x86_64::instructions::interrupts::enable();
        }
    }
}

/// Gives a frame back (the allocator locked as [`lock_allocator`] says).
///
/// # Safety
///
/// The caller owns `frame` and gives it up: no page-table entry, TLB entry
/// (flushed), reference or pointer reaches it any more, so the allocator
/// may hand it out again.
pub unsafe fn free_frame(frame: PhysFrame) {
    let mut allocator = lock_allocator();
    let link = physical_to_virtual(frame.start_address()).as_mut_ptr::<u64>();
    // SAFETY: the caller hands the frame over (this function's contract): nothing else reads or
    // writes it, so its first word may hold the list's link; the pointer is the physical map's
    // view of it.
    unsafe { link.write_volatile(allocator.free_list) };
    allocator.free_list = frame.start_address().as_u64();
    allocator.free_count += 1;
}

/// Allocates a frame, or None when memory is exhausted.
pub fn try_allocate_frame() -> Option<PhysFrame> {
    lock_allocator().allocate_frame()
}

static FRAME_ALLOCATOR: Mutex<Option<BootFrameAllocator>> = Mutex::new(None);

/// The frame reserved for the AP trampoline (0: none found).
static TRAMPOLINE_FRAME: AtomicU64 = AtomicU64::new(0);

/// The kernel's own level-4 table (the bootloader's), recorded at [`init`].
static KERNEL_PAGE_TABLE: AtomicU64 = AtomicU64::new(0);

/// The kernel's own level-4 table's physical address.
pub fn kernel_page_table() -> u64 {
    KERNEL_PAGE_TABLE.load(Ordering::Relaxed)
}

/// Loads CR3 with the level-4 table at `table` (0: the kernel's own) if it
/// is not the live one. Writing CR3 flushes the TLB's non-global entries;
/// the kernel half is the same in every table, so kernel code runs on.
///
/// # Safety
///
/// `table` is 0 or the physical address of a level-4 table whose kernel
/// half is the kernel's (a process's, `linux::mm`), and it stays allocated
/// while any CPU has it loaded.
pub unsafe fn switch_page_table(table: u64) {
    let table = if table == 0 { kernel_page_table() } else { table };
    let (live, flags) = Cr3::read();
    if live.start_address().as_u64() != table {
        let frame = PhysFrame::containing_address(PhysAddr::new(table));
        // SAFETY: `table` is the kernel's level-4 table or a live process's (the contract), whose
        // kernel half is the kernel's (every slot preallocated at init): the code, stack and data
        // running now stay mapped at the same addresses across the write.
        unsafe { Cr3::write(frame, flags) };
    }
}

/// Records the physical-memory mapping and the memory map, and reserves
/// the AP trampoline's frame: the first usable 4 KiB frame from 32 KiB up
/// and below 1 MiB (a STARTUP vector names a frame there), before the
/// frame allocator runs (it never hands out frames below 1 MiB).
pub fn init(physical_memory_offset: u64, regions: &'static MemoryRegions) {
    PHYSICAL_MEMORY_OFFSET.store(physical_memory_offset, Ordering::Relaxed);
    KERNEL_PAGE_TABLE.store(Cr3::read().0.start_address().as_u64(), Ordering::Relaxed);
    let trampoline = regions
        .iter()
        .filter(|region| region.kind == MemoryRegionKind::Usable)
        .flat_map(|region| {
            let start = region.start.max(0x8000).next_multiple_of(4096);
            (start..region.end.min(0x9_f000)).step_by(4096)
        })
        .find(|&address| address + 4096 <= 0x9_f000 && regions_hold_usable(regions, address));
    TRAMPOLINE_FRAME.store(trampoline.unwrap_or(0), Ordering::Relaxed);
    *FRAME_ALLOCATOR.lock() =
        Some(BootFrameAllocator { regions, next: 0, free_list: 0, free_count: 0 });
    preallocate_kernel_half();
}

/// Gives every unused kernel-half level-4 slot an empty level-3 table and
/// records it in [`FREE_KERNEL_SLOTS`].
fn preallocate_kernel_half() {
    for slot in KERNEL_HALF_FIRST_SLOT..512 {
        let unused = with_page_table(|table| table.level_4_table()[slot].is_unused());
        if !unused {
            continue;
        }
        let frame = allocate_zeroed_frame();
        with_page_table(|table| {
            table.level_4_table_mut()[slot]
                .set_frame(frame, PageTableFlags::PRESENT | PageTableFlags::WRITABLE);
            let mut free = FREE_KERNEL_SLOTS.lock();
            free[(slot - KERNEL_HALF_FIRST_SLOT) / 64] |=
                1 << ((slot - KERNEL_HALF_FIRST_SLOT) % 64);
        });
    }
}

/// A fresh frame, zero-filled through the physical map.
///
/// Every frame the allocator hands out is zero-filled (see its
/// `allocate_frame`); this name is for the callers that rely on it.
pub fn allocate_zeroed_frame() -> PhysFrame {
    allocate_frame()
}

/// Is the whole 4 KiB frame at `address` inside one usable region?
fn regions_hold_usable(regions: &MemoryRegions, address: u64) -> bool {
    regions.iter().any(|region| {
        region.kind == MemoryRegionKind::Usable
            && region.start <= address
            && address + 4096 <= region.end
    })
}

/// The AP trampoline's frame, identity-mapped (executable), if one was
/// free below 1 MiB.
pub fn trampoline_frame() -> Option<PhysFrame> {
    let address = TRAMPOLINE_FRAME.load(Ordering::Relaxed);
    if address == 0 {
        return None;
    }
    let frame = PhysFrame::containing_address(PhysAddr::new(address));
    map_identity(frame);
    Some(frame)
}

/// Maps `frame` at its own physical address (present, writable,
/// executable), unless it already is.
fn map_identity(frame: PhysFrame) {
    let page = Page::<Size4KiB>::containing_address(VirtAddr::new(frame.start_address().as_u64()));
    if translate(page.start_address()) == Some(frame.start_address()) {
        return;
    }
    with_page_table(|table| {
        let mut allocator_guard = lock_allocator();
        let allocator = &mut *allocator_guard;
        let flags = PageTableFlags::PRESENT | PageTableFlags::WRITABLE;
        // SAFETY: a low frame reserved for the trampoline, mapped at its own address in the
        // lower half's first slot, where the kernel keeps nothing else: the mapping aliases only
        // the frame's physical-map view, which the trampoline's loader writes through.
        unsafe { table.map_to(page, frame, flags, allocator) }
            .expect("mapping the trampoline frame at its own address")
            .flush();
    });
}

/// The virtual address of a physical address, through the bootloader's map.
pub fn physical_to_virtual(address: PhysAddr) -> VirtAddr {
    VirtAddr::new(PHYSICAL_MEMORY_OFFSET.load(Ordering::Relaxed) + address.as_u64())
}

/// The lock every change of the kernel's page tables holds (Linux's
/// `init_mm.page_table_lock`), with interrupts off, so its holder is never
/// preempted. Never taken from a handler. Its holder may be waiting for
/// this CPU to answer a TLB shootdown (`tlb`), so a CPU waiting for it
/// answers the shootdown in flight as it spins. It comes before the frame
/// allocator's lock and the free-slot set.
static PAGE_TABLE_LOCK: Mutex<()> = Mutex::new(());

/// Runs `f` on the active page tables, under the page-table lock, with
/// interrupts off.
fn with_page_table<T>(f: impl FnOnce(&mut OffsetPageTable<'static>) -> T) -> T {
    x86_64::instructions::interrupts::without_interrupts(|| with_page_table_locked(f))
}

fn with_page_table_locked<T>(f: impl FnOnce(&mut OffsetPageTable<'static>) -> T) -> T {
    let _page_table_lock = loop {
        if let Some(guard) = PAGE_TABLE_LOCK.try_lock() {
            break guard;
        }
        crate::arch::tlb::answer_pending_shootdown();
        core::hint::spin_loop();
    };
    let (level_4_frame, _) = Cr3::read();
    let level_4 = physical_to_virtual(level_4_frame.start_address()).as_mut_ptr::<PageTable>();
    let offset = VirtAddr::new(PHYSICAL_MEMORY_OFFSET.load(Ordering::Relaxed));
    // The `&mut` lives for `f` only, under the page-table lock; its users change mappings in task
    // context, never from a handler (whose lookups are `walk`'s raw reads), and never a process's
    // lower half.
    // SAFETY: CR3 names the live level-4 table, all RAM is mapped at `offset`, and no other
    // reference to that table exists while `f` runs (the lock, above).
    let mut table = unsafe { OffsetPageTable::new(&mut *level_4, offset) };
    f(&mut table)
}

/// Is `address` mapped (readable by the kernel, PKS aside)?
pub fn is_mapped(address: VirtAddr) -> bool {
    walk(address).is_some()
}

/// The flags of the page holding `address`, if mapped: the leaf entry's,
/// with USER_ACCESSIBLE and WRITABLE kept only when every level above
/// allows them too, and NO_EXECUTE when any level sets it (what the CPU
/// enforces).
pub fn page_flags(address: VirtAddr) -> Option<PageTableFlags> {
    walk(address).map(|(_, flags)| flags)
}

/// The live page tables' translation of `address`: its physical address
/// and effective flags ([`page_flags`]). A read-only walk through raw
/// pointers, no references: it may run from an NMI that landed while the
/// interrupted code was changing an entry (it then sees the old or the new
/// value of each 8-byte entry, both of which are whole entries).
fn walk(address: VirtAddr) -> Option<(PhysAddr, PageTableFlags)> {
    let (level_4_frame, _) = Cr3::read();
    let mut table = level_4_frame.start_address();
    let indexes = [address.p4_index(), address.p3_index(), address.p2_index(), address.p1_index()];
    let inherited = PageTableFlags::USER_ACCESSIBLE | PageTableFlags::WRITABLE;
    let mut allowed = inherited;
    let mut no_execute = PageTableFlags::empty();
    for (depth, index) in indexes.into_iter().enumerate() {
        let entry_pointer =
            physical_to_virtual(table).as_ptr::<u64>().wrapping_add(usize::from(index));
        // SAFETY: a page table of the live hierarchy, reached through the physical map (its
        // provenance: no Rust allocation lives there); the aligned entry is read by value, volatile,
        // making no reference, so it aliases no `&mut` a writer holds.
        let raw = unsafe { entry_pointer.read_volatile() };
        let flags = PageTableFlags::from_bits_retain(raw);
        if !flags.contains(PageTableFlags::PRESENT) {
            return None;
        }
        no_execute |= flags & PageTableFlags::NO_EXECUTE;
        let frame_address = PhysAddr::new(raw & 0x000f_ffff_ffff_f000);
        let leaf_size = match depth {
            1 if flags.contains(PageTableFlags::HUGE_PAGE) => Some(1u64 << 30),
            2 if flags.contains(PageTableFlags::HUGE_PAGE) => Some(1u64 << 21),
            3 => Some(1u64 << 12),
            _ => None,
        };
        if let Some(size) = leaf_size {
            let base = PhysAddr::new(frame_address.as_u64() & !(size - 1));
            let effective = (flags - inherited) | (flags & allowed) | no_execute;
            return Some((base + (address.as_u64() & (size - 1)), effective));
        }
        allowed &= flags;
        table = frame_address;
    }
    None
}

/// PTE bits 62:59 hold a supervisor page's protection key.
pub const PTE_PKEY_SHIFT: u32 = 59;

/// A page whose PTE carries a non-zero pkey.
#[derive(Clone, Copy, Debug)]
pub struct PkeyPage {
    pub pkey: u8,
    pub address: VirtAddr,
}

/// Maps one fresh supervisor page tagged with `pkey` at an address in an
/// unused level-4 slot, and fills it with `fill` through the frame's alias in
/// the physical-memory map (key 0, so always accessible).
pub fn map_pkey_page(pkey: u8, fill: u64) -> PkeyPage {
    map_tagged_page(pkey, fill, PageTableFlags::empty(), None)
}

/// Like [`map_pkey_page`], at a fixed address whose level-4 slot must be
/// unused (the fuzzer's page: its trampolines name the address in the
/// instruction, so no register has to carry it).
pub fn map_pkey_page_at(pkey: u8, fill: u64, address: VirtAddr) -> PkeyPage {
    map_tagged_page(pkey, fill, PageTableFlags::empty(), Some(address))
}

/// Like [`map_pkey_page`], but a *user* page (U/S set at every level): PKRS
/// never applies to it, whatever its key (kvm-unit-tests `x86/pks.c`).
pub fn map_user_pkey_page(pkey: u8, fill: u64) -> PkeyPage {
    map_tagged_page(pkey, fill, PageTableFlags::USER_ACCESSIBLE, None)
}

fn map_tagged_page(pkey: u8, fill: u64, extra: PageTableFlags, at: Option<VirtAddr>) -> PkeyPage {
    assert!(pkey < 16, "PKS has 16 keys");
    let frame = allocate_frame();
    let alias = physical_to_virtual(frame.start_address());
    let words = alias.as_mut_ptr::<u64>();
    for index in 0..512 {
        // SAFETY: the frame was just allocated and is mapped (key 0) at
        // `alias`; 512 words are exactly one 4 KiB page.
        unsafe { words.add(index).write_volatile(fill) };
    }
    let flags = PageTableFlags::PRESENT
        | PageTableFlags::WRITABLE
        | extra
        | PageTableFlags::from_bits_retain(u64::from(pkey) << PTE_PKEY_SHIFT);
    let address = map_in_free_slot(frame, flags, extra, at);
    PkeyPage { pkey, address }
}

/// Maps `pages` fresh frames, contiguous and writable (not executable),
/// at the start of a free kernel-half slot: a buffer for data the kernel
/// reads in at boot (a program from fw_cfg). Its bytes are left as found.
pub fn map_kernel_buffer(pages: u64) -> Option<&'static mut [u8]> {
    use x86_64::registers::model_specific::{Efer, EferFlags};
    let first = {
        let mut free = FREE_KERNEL_SLOTS.lock();
        let word = free.iter().position(|&bits| bits != 0)?;
        let bit = free[word].trailing_zeros() as usize;
        free[word] &= !(1 << bit);
        VirtAddr::new_truncate(((KERNEL_HALF_FIRST_SLOT + word * 64 + bit) as u64) << 39)
    };
    assert!(pages <= 512 * 512, "a kernel buffer fits in 1 GiB");
    let mut flags = PageTableFlags::PRESENT | PageTableFlags::WRITABLE;
    if Efer::read().contains(EferFlags::NO_EXECUTE_ENABLE) {
        flags |= PageTableFlags::NO_EXECUTE;
    }
    for index in 0..pages {
        let frame = try_allocate_frame()?;
        let page = Page::<Size4KiB>::containing_address(first + index * 4096);
        with_page_table(|table| {
            let mut allocator_guard = lock_allocator();
            let allocator = &mut *allocator_guard;
            // SAFETY: the page lies in a kernel slot just taken from the free set: nothing else
            // maps there, so the mapping aliases only its frame's physical-map view.
            unsafe { table.map_to(page, frame, flags, allocator) }
                .expect("mapping a kernel buffer page")
                .flush();
        });
    }
    // SAFETY: `pages` pages were just mapped at `first`, writable, backed by frames this function
    // owns and hands to the caller for the rest of the run; no other pointer reaches them but
    // the physical map, which nothing uses for frames the allocator has handed out.
    Some(unsafe {
        core::slice::from_raw_parts_mut(first.as_mut_ptr::<u8>(), (pages * 4096) as usize)
    })
}

/// Maps the 4 KiB of device registers at `physical` uncached (for the xAPIC).
pub fn map_mmio(physical: PhysAddr) -> VirtAddr {
    let frame = PhysFrame::containing_address(physical);
    let flags = PageTableFlags::PRESENT
        | PageTableFlags::WRITABLE
        | PageTableFlags::NO_CACHE
        | PageTableFlags::WRITE_THROUGH;
    map_in_free_slot(frame, flags, PageTableFlags::empty(), None) + (physical.as_u64() & 0xfff)
}

pub fn allocate_frame() -> PhysFrame {
    lock_allocator().allocate_frame().expect("a free frame")
}

/// Maps `frame` at the start of an unused level-4 slot (the one holding `at`,
/// or the first free one), with `flags` on the page and `extra_table_flags`
/// on the new intermediate tables (USER for a user page: U/S must be set at
/// every level).
fn map_in_free_slot(
    frame: PhysFrame,
    flags: PageTableFlags,
    extra_table_flags: PageTableFlags,
    at: Option<VirtAddr>,
) -> VirtAddr {
    with_page_table(|table| {
        let mut allocator_guard = lock_allocator();
        let allocator = &mut *allocator_guard;
        let level_4 = table.level_4_table();
        let address = match at {
            Some(address) if usize::from(address.p4_index()) >= KERNEL_HALF_FIRST_SLOT => {
                // A kernel-half slot is present from init on: it must still
                // be in the free set.
                let slot = usize::from(address.p4_index()) - KERNEL_HALF_FIRST_SLOT;
                let mut free = FREE_KERNEL_SLOTS.lock();
                let bit = 1u64 << (slot % 64);
                assert!(free[slot / 64] & bit != 0, "kernel slot for {address:?} is in use");
                free[slot / 64] &= !bit;
                address
            }
            Some(address) => {
                let slot = usize::from(address.p4_index());
                assert!(level_4[slot].is_unused(), "level-4 slot {slot} for {address:?} is in use");
                address
            }
            // A user page never goes in the kernel half: its U/S bit on a
            // shared level-4 entry would open that slot to every process.
            None if extra_table_flags.contains(PageTableFlags::USER_ACCESSIBLE) => {
                let free_slot = (1..KERNEL_HALF_FIRST_SLOT - 1)
                    .find(|&slot| level_4[slot].is_unused())
                    .expect("an unused lower-half level-4 slot");
                VirtAddr::new((free_slot as u64) << 39)
            }
            None => {
                let mut free = FREE_KERNEL_SLOTS.lock();
                let word = free.iter().position(|&bits| bits != 0).expect("a free kernel slot");
                let bit = free[word].trailing_zeros() as usize;
                free[word] &= !(1 << bit);
                let slot = (KERNEL_HALF_FIRST_SLOT + word * 64 + bit) as u64;
                VirtAddr::new_truncate(slot << 39)
            }
        };
        let page = Page::<Size4KiB>::containing_address(address);
        let table_flags = PageTableFlags::PRESENT | PageTableFlags::WRITABLE | extra_table_flags;
        // SAFETY: the page lies in a level-4 slot nothing uses, so the new
        // mapping aliases nothing but the frame's own physical-map view.
        unsafe { table.map_to_with_table_flags(page, frame, flags, table_flags, allocator) }
            .expect("mapping a page")
            .flush();
        address
    })
}

/// The physical address `address` translates to, if mapped.
pub fn translate(address: VirtAddr) -> Option<PhysAddr> {
    walk(address).map(|(physical, _)| physical)
}

/// Maps `frame` at the user address `address` (U/S set at every level),
/// read-only or writable, executable or not (NX only when EFER.NXE is on).
/// Returns false, changing nothing, when the page is already mapped.
pub fn map_user_page(
    address: VirtAddr,
    frame: PhysFrame,
    writable: bool,
    executable: bool,
) -> bool {
    use x86_64::registers::model_specific::{Efer, EferFlags};
    // Nothing is mapped at or above TASK_SIZE_MAX, so the address after a
    // SYSCALL in user mode (RCX) is always canonical: the bench's SYSRETQ
    // relies on it (crates/bench/src/bench_syscall_64.S).
    assert!(
        address.as_u64() + 4096 <= crate::arch::uaccess::TASK_SIZE_MAX,
        "user pages end at TASK_SIZE_MAX"
    );
    if is_mapped(address) {
        return false;
    }
    let mut flags = PageTableFlags::PRESENT | PageTableFlags::USER_ACCESSIBLE;
    if writable {
        flags |= PageTableFlags::WRITABLE;
    }
    if !executable && Efer::read().contains(EferFlags::NO_EXECUTE_ENABLE) {
        flags |= PageTableFlags::NO_EXECUTE;
    }
    let table_flags =
        PageTableFlags::PRESENT | PageTableFlags::WRITABLE | PageTableFlags::USER_ACCESSIBLE;
    with_page_table(|table| {
        let mut allocator_guard = lock_allocator();
        let allocator = &mut *allocator_guard;
        let page = Page::<Size4KiB>::containing_address(address);
        // SAFETY: the page was unmapped and lies in the user slot (nothing of the kernel is
        // mapped there): the mapping aliases only its frame's physical-map view (for program
        // text, also the kernel image's read-only view of the same code).
        unsafe { table.map_to_with_table_flags(page, frame, flags, table_flags, allocator) }
            .expect("mapping a user page")
            .flush();
    });
    true
}

/// Unmaps the kernel page at `address` and returns its frame, once every
/// online CPU has flushed it from its TLB (`tlb::flush_kernel_range`): no
/// CPU reads through the old entry after this returns. Task context.
///
/// # Safety
///
/// The caller owns the page (one it mapped, such as a pkey page): no
/// reference or pointer into it is used after this, by any CPU, and no
/// other code expects it mapped.
///
/// # Panics
///
/// If `address` is not a mapped 4 KiB page of the kernel half.
pub unsafe fn unmap_kernel_page(address: VirtAddr) -> PhysFrame {
    assert!(address.as_u64() >= KERNEL_HALF_START, "{address:?} is not in the kernel half");
    let page = Page::<Size4KiB>::containing_address(address);
    with_page_table(|table| {
        let frame = match table.unmap(page) {
            // The shootdown below flushes this CPU too.
            Ok((frame, flush)) => {
                flush.ignore();
                frame
            }
            Err(why) => panic!("unmapping the kernel page at {address:?}: {why:?}"),
        };
        crate::arch::tlb::flush_kernel_range(page.start_address(), 1);
        frame
    })
}

/// Maps `frame` at the kernel address `address` (a page a caller unmapped
/// with [`unmap_kernel_page`], or one of a level-4 slot it owns), writable,
/// not executable, tagged with `pkey`. No shootdown: no TLB holds a
/// not-present entry.
///
/// # Safety
///
/// The caller owns `frame` and the page at `address`: nothing else maps
/// the frame writable (the physical map aside), and nothing else uses the
/// address.
pub unsafe fn map_kernel_page(address: VirtAddr, frame: PhysFrame, pkey: u8) {
    assert!(address.as_u64() >= KERNEL_HALF_START, "{address:?} is not in the kernel half");
    assert!(pkey < 16, "PKS has 16 keys");
    use x86_64::registers::model_specific::{Efer, EferFlags};
    let page = Page::<Size4KiB>::containing_address(address);
    let mut flags = PageTableFlags::PRESENT
        | PageTableFlags::WRITABLE
        | PageTableFlags::from_bits_retain(u64::from(pkey) << PTE_PKEY_SHIFT);
    if Efer::read().contains(EferFlags::NO_EXECUTE_ENABLE) {
        flags |= PageTableFlags::NO_EXECUTE;
    }
    with_page_table(|table| {
        let mut allocator_guard = lock_allocator();
        let allocator = &mut *allocator_guard;
        // SAFETY: the caller owns the frame and the page (this function's contract).
        unsafe { table.map_to(page, frame, flags, allocator) }
            .expect("mapping a kernel page")
            .ignore();
    });
}

/// Gives the kernel page at `address` the protection key `pkey` and
/// returns once every online CPU has flushed the old entry (a TLB entry
/// keeps the key it was filled with): no CPU reaches the page with the old
/// key's rights after this returns. Task context.
///
/// # Panics
///
/// If `address` is not a mapped 4 KiB page of the kernel half, or `pkey`
/// is not below 16.
pub fn set_page_pkey(address: VirtAddr, pkey: u8) {
    assert!(address.as_u64() >= KERNEL_HALF_START, "{address:?} is not in the kernel half");
    assert!(pkey < 16, "PKS has 16 keys");
    let page = Page::<Size4KiB>::containing_address(address);
    with_page_table(|table| {
        let key_bits = PageTableFlags::from_bits_retain(0xf << PTE_PKEY_SHIFT);
        let flags =
            match x86_64::structures::paging::Translate::translate(&*table, page.start_address()) {
                x86_64::structures::paging::mapper::TranslateResult::Mapped {
                    flags,
                    frame: x86_64::structures::paging::mapper::MappedFrame::Size4KiB(_),
                    ..
                } => flags,
                other => panic!("{address:?} is not a mapped 4 KiB kernel page: {other:?}"),
            };
        let new_flags = (flags - key_bits)
            | PageTableFlags::from_bits_retain(u64::from(pkey) << PTE_PKEY_SHIFT);
        // SAFETY: only the key bits change; the page keeps its frame and its other rights.
        unsafe { table.update_flags(page, new_flags) }
            .expect("updating a mapped page's flags")
            .ignore();
        crate::arch::tlb::flush_kernel_range(page.start_address(), 1);
    });
}

/// Unmaps the 4 KiB page at `address` (a guard page inside the kernel's own
/// image) and flushes it from the TLB. Its frame is not reused.
pub fn unmap_guard_page(address: VirtAddr) {
    let page = Page::<Size4KiB>::containing_address(address);
    with_page_table(|table| match table.unmap(page) {
        Ok((_, flush)) => flush.flush(),
        Err(why) => panic!("unmapping the guard page at {address:?}: {why:?}"),
    });
}

/// The run of mapped 4 KiB pages around `address` (at most 1 MiB each way):
/// `[first mapped byte, end of the last mapped page)`. For a stack whose
/// bounds nobody recorded (the bootloader's), this is the stack itself
/// when it is mapped alone with a guard page below.
pub fn mapped_range_around(address: VirtAddr) -> core::ops::Range<u64> {
    const PAGE: u64 = 4096;
    const MAX_PAGES: u64 = 256;
    let page = address.as_u64() & !(PAGE - 1);
    let mut bottom = page;
    while page - bottom < MAX_PAGES * PAGE && VirtAddr::try_new(bottom - PAGE).is_ok_and(is_mapped)
    {
        bottom -= PAGE;
    }
    let mut top = page + PAGE;
    while top - page < MAX_PAGES * PAGE && VirtAddr::try_new(top).is_ok_and(is_mapped) {
        top += PAGE;
    }
    bottom..top
}
