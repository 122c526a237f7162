//! A Linux process's address space: its own lower half, the kernel's
//! upper half, and Linux's memory calls on it (`mmap`, `munmap`,
//! `mprotect`, `mremap`, `madvise`, `brk`).
//!
//! ```text
//!   0x7fff_ffff_f000  TASK_SIZE_MAX; the page below it is a valid page
//!   0x7ffe_0000_0000  STACK_TOP: the initial stack ends here (argv, envp,
//!                     auxv), STACK_PAGES populated below it
//!   MMAP_BASE         mmap hands out addresses top-down from here
//!   ...
//!   brk               the heap, from the page after the image
//!   0x40_0000         a static ET_EXEC's usual link address
//!   0x1_0000          MMAP_MIN_ADDR: nothing below
//! ```
//!
//! Pages are populated when mapped (zero-filled), not on fault: the kernel
//! copies to and from user memory by walking present pages
//! (`arch::uaccess`), so every page a program may touch is present once
//! the call that created it returns. A `PROT_NONE` page keeps its frame
//! (not present) so a later `mprotect` finds its contents, as Linux does;
//! a page never given rights has no frame. Frames go back to the
//! allocator on unmap and when the process ends ([`AddressSpace::destroy`]).
//!
//! One process is one task, and it changes only its own tables, from its
//! own syscalls, so a TLB flush is this CPU's `invlpg`: no other CPU holds
//! entries of its lower half (every switch that loads another CR3 flushes
//! them; there is no PCID), so no shootdown is owed (`arch/tlb.rs`).

use crate::arch::memory;
use crate::arch::uaccess::TASK_SIZE_MAX;
use x86_64::registers::control::Cr3;
use x86_64::structures::paging::page_table::PageTableEntry;
use x86_64::structures::paging::{PageTable, PageTableFlags, PhysFrame};
use x86_64::{PhysAddr, VirtAddr};

pub const PAGE: u64 = 4096;
/// Linux's default `vm.mmap_min_addr`.
pub const MMAP_MIN_ADDR: u64 = 0x1_0000;
/// The end of the initial stack.
pub const STACK_TOP: u64 = 0x7ffe_0000_0000;
/// Pages of stack populated at exec (1 MiB).
pub const STACK_PAGES: u64 = 256;
/// The stack's reserve (Linux's 8 MiB `RLIMIT_STACK`) plus a guard gap:
/// mmap stays below it.
const STACK_RESERVE: u64 = 16 << 20;
/// The top of the mmap area.
pub const MMAP_BASE: u64 = STACK_TOP - STACK_RESERVE;
/// The most mappings a process may have.
const MAX_VMAS: usize = 128;
/// The most frames a process may hold (96 MiB).
const MAX_PAGES: u64 = 24 * 1024;

pub const PROT_READ: u64 = 1;
pub const PROT_WRITE: u64 = 2;
pub const PROT_EXEC: u64 = 4;
const PROT_GROWSDOWN: u64 = 0x0100_0000;
const PROT_GROWSUP: u64 = 0x0200_0000;

const MAP_SHARED: u64 = 0x01;
const MAP_PRIVATE: u64 = 0x02;
const MAP_SHARED_VALIDATE: u64 = 0x03;
const MAP_TYPE: u64 = 0x0f;
const MAP_FIXED: u64 = 0x10;
const MAP_ANONYMOUS: u64 = 0x20;
const MAP_FIXED_NOREPLACE: u64 = 0x10_0000;
/// The flags `MAP_SHARED_VALIDATE` accepts (Linux's `LEGACY_MAP_MASK`
/// plus the ones served here).
const MAP_KNOWN: u64 = 0x01
    | 0x02
    | 0x0f
    | 0x10
    | 0x20
    | 0x100
    | 0x800
    | 0x1000
    | 0x2000
    | 0x4000
    | 0x8000
    | 0x10000
    | 0x20000
    | 0x100000;

const MREMAP_MAYMOVE: u64 = 1;
const MREMAP_FIXED: u64 = 2;
const MREMAP_DONTUNMAP: u64 = 4;

const MADV_DONTNEED: u64 = 4;

pub use super::errno::*;

/// A page-table entry whose frame the address space does not own (it maps
/// kernel-image pages: the kernel's own user programs): never freed. One of
/// the bits the CPU leaves to software.
const BORROWED: PageTableFlags = PageTableFlags::BIT_9;

/// One mapping: `[start, end)` with `PROT_*` rights.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Vma {
    start: u64,
    end: u64,
    prot: u64,
}

/// A process's page tables and mappings.
pub struct AddressSpace {
    /// The level-4 table's physical address (what CR3 gets).
    level_4: u64,
    vmas: [Vma; MAX_VMAS],
    vma_count: usize,
    /// Where `brk` started (the page after the image) and where it is.
    pub brk_start: u64,
    pub brk: u64,
    /// Frames held.
    pages: u64,
}

fn page_table_at(physical: u64) -> *mut PageTable {
    memory::physical_to_virtual(PhysAddr::new(physical)).as_mut_ptr::<PageTable>()
}

fn is_page_aligned(value: u64) -> bool {
    value.is_multiple_of(PAGE)
}

/// `len` rounded up to pages; None when that overflows.
fn page_length(length: u64) -> Option<u64> {
    length.checked_next_multiple_of(PAGE)
}

impl AddressSpace {
    /// A new, empty lower half under a copy of the kernel's upper half.
    pub fn new() -> Option<AddressSpace> {
        let frame = memory::try_allocate_frame()?;
        let level_4 = frame.start_address().as_u64();
        let kernel = page_table_at(memory::kernel_page_table());
        // SAFETY: `table` is a frame just allocated (owned here), `kernel` the kernel's level-4
        // table, different frames through the physical map; kernel-half entries don't change
        // after memory::init (every slot preallocated), so the read races with nothing.
        let (table, kernel) = unsafe { (&mut *page_table_at(level_4), &*kernel) };
        for slot in 0..512 {
            table[slot] = if slot >= memory::KERNEL_HALF_FIRST_SLOT {
                kernel[slot].clone()
            } else {
                PageTableEntry::new()
            };
        }
        Some(AddressSpace {
            level_4,
            vmas: [Vma::default(); MAX_VMAS],
            vma_count: 0,
            brk_start: 0,
            brk: 0,
            pages: 0,
        })
    }

    /// The level-4 table's physical address.
    pub fn page_table(&self) -> u64 {
        self.level_4
    }

    fn is_live(&self) -> bool {
        Cr3::read().0.start_address().as_u64() == self.level_4
    }

    /// The level-1 entry of `address`, making the tables down to it when
    /// `create` (None: no table, or no frame for one).
    fn entry(&mut self, address: u64, create: bool) -> Option<*mut PageTableEntry> {
        let address = VirtAddr::new(address);
        let indexes = [address.p4_index(), address.p3_index(), address.p2_index()];
        let mut table = page_table_at(self.level_4);
        for index in indexes {
            // SAFETY: `table` is one of this address space's lower-half tables (reached from its
            // level-4 table, owned by the process and changed only by it: `&mut self`), through
            // the physical map. The reference lives for this step only.
            let entry = unsafe { &mut (&mut *table)[index] };
            if entry.is_unused() {
                if !create {
                    return None;
                }
                let frame = memory::try_allocate_frame()?;
                zero_frame(frame);
                entry.set_frame(
                    frame,
                    PageTableFlags::PRESENT
                        | PageTableFlags::WRITABLE
                        | PageTableFlags::USER_ACCESSIBLE,
                );
            }
            table = page_table_at(entry.addr().as_u64());
        }
        // SAFETY: as above, for the level-1 table; the pointer stays inside it.
        Some(unsafe { &raw mut (&mut *table)[address.p1_index()] })
    }

    fn flush(&self, address: u64) {
        if self.is_live() {
            x86_64::instructions::tlb::flush(VirtAddr::new(address));
        }
    }

    /// The flags a page of `prot` gets.
    fn pte_flags(prot: u64) -> PageTableFlags {
        use x86_64::registers::model_specific::{Efer, EferFlags};
        let mut flags = PageTableFlags::USER_ACCESSIBLE;
        if prot & (PROT_READ | PROT_WRITE | PROT_EXEC) != 0 {
            flags |= PageTableFlags::PRESENT;
        }
        if prot & PROT_WRITE != 0 {
            flags |= PageTableFlags::WRITABLE;
        }
        if prot & PROT_EXEC == 0 && Efer::read().contains(EferFlags::NO_EXECUTE_ENABLE) {
            flags |= PageTableFlags::NO_EXECUTE;
        }
        flags
    }

    /// Gives every page of `[start, end)` the rights `prot`, populating
    /// (zero-filled) the pages that have no frame yet unless `prot` is
    /// PROT_NONE. -ENOMEM when frames run out (pages done so far stay).
    fn set_pages(&mut self, start: u64, end: u64, prot: u64) -> Result<(), i64> {
        let flags = Self::pte_flags(prot);
        let mut page = start;
        while page < end {
            let entry = self.entry(page, prot != 0).ok_or(-ENOMEM);
            let entry = match (entry, prot) {
                (Ok(entry), _) => entry,
                (Err(_), 0) => {
                    page += PAGE;
                    continue;
                }
                (Err(errno), _) => return Err(errno),
            };
            // SAFETY: `entry` points into this address space's level-1 table (`entry`), which
            // only `&mut self` changes.
            let current = unsafe { (*entry).clone() };
            if current.is_unused() {
                if prot != 0 {
                    if self.pages >= MAX_PAGES {
                        return Err(-ENOMEM);
                    }
                    let frame = memory::try_allocate_frame().ok_or(-ENOMEM)?;
                    zero_frame(frame);
                    self.pages += 1;
                    // SAFETY: as above.
                    unsafe { (*entry).set_frame(frame, flags) };
                }
            } else {
                // SAFETY: as above; the frame stays, the rights change.
                unsafe { (*entry).set_addr(current.addr(), flags | (current.flags() & BORROWED)) };
                self.flush(page);
            }
            page += PAGE;
        }
        Ok(())
    }

    /// Unmaps `[start, end)` (page aligned) and frees its frames.
    fn clear_pages(&mut self, start: u64, end: u64) {
        let mut page = start;
        while page < end {
            if let Some(entry) = self.entry(page, false) {
                // SAFETY: as in `set_pages`.
                let current = unsafe { (*entry).clone() };
                if !current.is_unused() {
                    // SAFETY: as in `set_pages`.
                    unsafe { (*entry).set_unused() };
                    self.flush(page);
                    if !current.flags().contains(BORROWED) {
                        // SAFETY: the frame was this address space's own (not BORROWED) and its
                        // only mapping was the entry just cleared and flushed; no Rust reference
                        // covers user frames.
                        unsafe {
                            memory::free_frame(PhysFrame::containing_address(current.addr()))
                        };
                        self.pages -= 1;
                    }
                }
            }
            page += PAGE;
        }
    }

    /// Is `page` mapped to a frame the address space doesn't own?
    fn is_borrowed(&mut self, page: u64) -> bool {
        self.entry(page, false).is_some_and(|entry| {
            // SAFETY: as in `set_pages`.
            unsafe { (*entry).flags() }.contains(BORROWED)
        })
    }

    /// The frame behind `page`, if it has one.
    fn frame_of(&mut self, page: u64) -> Option<PhysFrame> {
        let entry = self.entry(page, false)?;
        // SAFETY: as in `set_pages`.
        let entry = unsafe { (*entry).clone() };
        (!entry.is_unused()).then(|| PhysFrame::containing_address(entry.addr()))
    }

    /// Maps `frame`, which the caller keeps owning (a page of the kernel
    /// image's user text), at `address` with `prot`. The range must be free.
    pub fn map_borrowed(&mut self, address: u64, frame: PhysFrame, prot: u64) -> Result<(), i64> {
        self.insert_vma(Vma { start: address, end: address + PAGE, prot })?;
        let entry = self.entry(address, true).ok_or(-ENOMEM)?;
        // SAFETY: as in `set_pages`: an entry of this address space's own level-1 table.
        unsafe { (*entry).set_frame(frame, Self::pte_flags(prot) | BORROWED) };
        Ok(())
    }

    /// Writes `bytes` at user address `address` through the frames'
    /// physical-map aliases (exec fills its segments so, whatever their
    /// rights). The pages must be populated.
    pub fn write_bytes(&mut self, address: u64, bytes: &[u8]) {
        let mut done = 0usize;
        while done < bytes.len() {
            let at = address + done as u64;
            let in_page = (PAGE - at % PAGE).min((bytes.len() - done) as u64) as usize;
            let frame = self.frame_of(at & !(PAGE - 1)).expect("exec writes populated pages");
            let alias = memory::physical_to_virtual(frame.start_address()).as_mut_ptr::<u8>();
            // SAFETY: the frame belongs to this address space (populated by `map`), nothing else
            // holds a Rust reference to user frames, and `at % PAGE + in_page <= PAGE` keeps the
            // copy inside it; the source is a kernel slice that can't overlap a user frame.
            unsafe {
                core::ptr::copy_nonoverlapping(
                    bytes[done..].as_ptr(),
                    alias.add((at % PAGE) as usize),
                    in_page,
                )
            };
            done += in_page;
        }
    }

    // ---- mappings ----

    fn vmas(&self) -> &[Vma] {
        &self.vmas[..self.vma_count]
    }

    /// Is `address` inside a mapping (whatever its rights)?
    pub fn covers(&self, address: u64) -> bool {
        self.vmas().iter().any(|vma| vma.start <= address && address < vma.end)
    }

    /// Is any byte of `[start, end)` mapped?
    fn overlaps(&self, start: u64, end: u64) -> bool {
        self.vmas().iter().any(|vma| vma.start < end && start < vma.end)
    }

    /// Is every byte of `[start, end)` mapped?
    fn fully_mapped(&self, start: u64, end: u64) -> bool {
        let mut at = start;
        for vma in self.vmas() {
            if vma.start <= at && at < vma.end {
                at = vma.end;
            }
            if at >= end {
                return true;
            }
        }
        at >= end
    }

    /// Removes `[start, end)` from the mapping list, splitting what
    /// straddles it. -ENOMEM when a split needs more than [`MAX_VMAS`].
    fn remove_vmas(&mut self, start: u64, end: u64) -> Result<(), i64> {
        let mut kept = [Vma::default(); MAX_VMAS];
        let mut count = 0;
        for vma in self.vmas() {
            let pieces = [
                Vma { start: vma.start, end: vma.end.min(start), prot: vma.prot },
                Vma { start: vma.start.max(end), end: vma.end, prot: vma.prot },
            ];
            for piece in pieces {
                if piece.start < piece.end {
                    if count == MAX_VMAS {
                        return Err(-ENOMEM);
                    }
                    kept[count] = piece;
                    count += 1;
                }
            }
        }
        self.vmas = kept;
        self.vma_count = count;
        Ok(())
    }

    /// Adds `vma` (which overlaps none), keeping the list sorted and
    /// merging neighbours with the same rights.
    fn insert_vma(&mut self, vma: Vma) -> Result<(), i64> {
        if self.vma_count == MAX_VMAS {
            return Err(-ENOMEM);
        }
        let at =
            self.vmas().iter().position(|other| other.start > vma.start).unwrap_or(self.vma_count);
        self.vmas.copy_within(at..self.vma_count, at + 1);
        self.vmas[at] = vma;
        self.vma_count += 1;
        let mut merged = 0;
        for index in 0..self.vma_count {
            let vma = self.vmas[index];
            if merged > 0
                && self.vmas[merged - 1].end == vma.start
                && self.vmas[merged - 1].prot == vma.prot
            {
                self.vmas[merged - 1].end = vma.end;
            } else {
                self.vmas[merged] = vma;
                merged += 1;
            }
        }
        self.vma_count = merged;
        Ok(())
    }

    /// Maps `[start, end)` fresh (zero-filled) with `prot`; the range
    /// must be free.
    pub fn map(&mut self, start: u64, end: u64, prot: u64) -> Result<(), i64> {
        self.insert_vma(Vma { start, end, prot })?;
        if let Err(errno) = self.set_pages(start, end, prot) {
            self.clear_pages(start, end);
            let _ = self.remove_vmas(start, end);
            return Err(errno);
        }
        Ok(())
    }

    /// The highest free range of `length` bytes below `below`, at or above
    /// [`MMAP_MIN_ADDR`].
    fn find_free(&self, length: u64, below: u64) -> Option<u64> {
        let mut top = below;
        for vma in self.vmas().iter().rev() {
            if vma.start >= top {
                continue;
            }
            if vma.end <= top && top - vma.end >= length {
                return Some(top - length);
            }
            top = top.min(vma.start);
        }
        (MMAP_MIN_ADDR.checked_add(length)? <= top).then(|| top - length)
    }

    /// Linux's `mmap` of anonymous memory. No files here: a mapping of the
    /// console (fd 0..=2) is -ENODEV, of any other descriptor -EBADF, as
    /// for a closed one. The last page is the one ending at
    /// `TASK_SIZE_MAX` (2^47 - 4096), as on Linux.
    pub fn mmap(&mut self, hint: u64, length: u64, prot: u64, flags: u64, fd: i64) -> i64 {
        if prot & !(PROT_READ | PROT_WRITE | PROT_EXEC) != 0 {
            return -EINVAL;
        }
        match flags & MAP_TYPE {
            MAP_SHARED | MAP_PRIVATE => {}
            MAP_SHARED_VALIDATE if flags & !MAP_KNOWN == 0 => {}
            MAP_SHARED_VALIDATE => return -EOPNOTSUPP,
            _ => return -EINVAL,
        }
        if flags & MAP_ANONYMOUS == 0 {
            // Descriptors 0..=2 are the console, which can't be mapped;
            // no other is open.
            return if (0..=2).contains(&fd) { -ENODEV } else { -EBADF };
        }
        if length == 0 {
            return -EINVAL;
        }
        let Some(length) = page_length(length).filter(|&length| length <= TASK_SIZE_MAX) else {
            return -ENOMEM;
        };
        let fixed = flags & (MAP_FIXED | MAP_FIXED_NOREPLACE) != 0;
        let start = if fixed {
            if !is_page_aligned(hint) {
                return -EINVAL;
            }
            if hint.checked_add(length).is_none_or(|end| end > TASK_SIZE_MAX) {
                return -ENOMEM;
            }
            if hint < MMAP_MIN_ADDR {
                return -EPERM;
            }
            if self.overlaps(hint, hint + length) {
                if flags & MAP_FIXED_NOREPLACE != 0 && flags & MAP_FIXED == 0 {
                    return -EEXIST;
                }
                if let Err(errno) = self.unmap_range(hint, hint + length) {
                    return errno;
                }
            }
            hint
        } else {
            let hint = hint & !(PAGE - 1);
            let hint_free = hint >= MMAP_MIN_ADDR
                && hint.checked_add(length).is_some_and(|end| end <= TASK_SIZE_MAX)
                && !self.overlaps(hint, hint + length);
            if hint_free {
                hint
            } else {
                match self.find_free(length, MMAP_BASE) {
                    Some(start) => start,
                    None => return -ENOMEM,
                }
            }
        };
        match self.map(start, start + length, prot) {
            Ok(()) => start as i64,
            Err(errno) => errno,
        }
    }

    fn unmap_range(&mut self, start: u64, end: u64) -> Result<(), i64> {
        self.remove_vmas(start, end)?;
        self.clear_pages(start, end);
        Ok(())
    }

    /// Linux's `munmap`.
    pub fn munmap(&mut self, start: u64, length: u64) -> i64 {
        if !is_page_aligned(start) || length == 0 {
            return -EINVAL;
        }
        let Some(end) = page_length(length).and_then(|length| start.checked_add(length)) else {
            return -EINVAL;
        };
        if end > TASK_SIZE_MAX {
            return -EINVAL;
        }
        match self.unmap_range(start, end) {
            Ok(()) => 0,
            Err(errno) => errno,
        }
    }

    /// Linux's `mprotect`: every page of the range must be mapped.
    pub fn mprotect(&mut self, start: u64, length: u64, prot: u64) -> i64 {
        if !is_page_aligned(start) {
            return -EINVAL;
        }
        if prot & !(PROT_READ | PROT_WRITE | PROT_EXEC | PROT_GROWSDOWN | PROT_GROWSUP) != 0 {
            return -EINVAL;
        }
        let prot = prot & (PROT_READ | PROT_WRITE | PROT_EXEC);
        let Some(end) = page_length(length).and_then(|length| start.checked_add(length)) else {
            return -ENOMEM;
        };
        if length == 0 {
            return 0;
        }
        if end > TASK_SIZE_MAX || !self.fully_mapped(start, end) {
            return -ENOMEM;
        }
        // A split makes at most two more mappings: refuse before changing
        // anything, so a failure loses none.
        if self.vma_count + 2 > MAX_VMAS {
            return -ENOMEM;
        }
        // Borrowed pages are the kernel's own text, which other tasks run:
        // never writable for one process.
        if prot & PROT_WRITE != 0
            && (start..end).step_by(PAGE as usize).any(|page| self.is_borrowed(page))
        {
            return -EACCES;
        }
        if let Err(errno) = self.remove_vmas(start, end) {
            return errno;
        }
        if let Err(errno) = self.insert_vma(Vma { start, end, prot }) {
            return errno;
        }
        match self.set_pages(start, end, prot) {
            Ok(()) => 0,
            Err(errno) => errno,
        }
    }

    /// Linux's `madvise`: advice is accepted; `MADV_DONTNEED` zeroes the
    /// range (private anonymous memory reads as zero afterwards).
    pub fn madvise(&mut self, start: u64, length: u64, advice: u64) -> i64 {
        if !is_page_aligned(start) {
            return -EINVAL;
        }
        let Some(end) = page_length(length).and_then(|length| start.checked_add(length)) else {
            return -EINVAL;
        };
        if advice == MADV_DONTNEED {
            if !self.fully_mapped(start, end) {
                return -ENOMEM;
            }
            let mut page = start;
            while page < end {
                // A borrowed frame is the kernel's (its user text): never
                // cleared for one process.
                if let (Some(frame), false) = (self.frame_of(page), self.is_borrowed(page)) {
                    zero_frame(frame);
                }
                page += PAGE;
            }
        }
        0
    }

    /// Linux's `brk`: moves the break (populating or freeing pages) and
    /// returns the new one, or the old one when it can't move.
    pub fn set_brk(&mut self, requested: u64) -> i64 {
        if requested < self.brk_start || requested >= MMAP_BASE {
            return self.brk as i64;
        }
        let (old_end, new_end) =
            (self.brk.next_multiple_of(PAGE), requested.next_multiple_of(PAGE));
        if new_end > old_end {
            if self.overlaps(old_end, new_end)
                || self.map(old_end, new_end, PROT_READ | PROT_WRITE).is_err()
            {
                return self.brk as i64;
            }
        } else if new_end < old_end && self.unmap_range(new_end, old_end).is_err() {
            return self.brk as i64;
        }
        self.brk = requested;
        requested as i64
    }

    /// Linux's `mremap` of anonymous memory: shrink in place, grow in
    /// place when the pages above are free, else move (`MREMAP_MAYMOVE`,
    /// to `new_address` with `MREMAP_FIXED`), taking the frames along.
    pub fn mremap(
        &mut self,
        old: u64,
        old_size: u64,
        new_size: u64,
        flags: u64,
        new_address: u64,
    ) -> i64 {
        if flags & !(MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP) != 0
            || flags & MREMAP_DONTUNMAP != 0
            || (flags & MREMAP_FIXED != 0 && flags & MREMAP_MAYMOVE == 0)
            || !is_page_aligned(old)
        {
            return -EINVAL;
        }
        let (Some(old_size), Some(new_size)) = (page_length(old_size), page_length(new_size))
        else {
            return -EINVAL;
        };
        if new_size == 0 || old_size == 0 || new_size > TASK_SIZE_MAX || old_size > TASK_SIZE_MAX {
            return -EINVAL;
        }
        let Some(old_end) = old.checked_add(old_size).filter(|&end| end <= TASK_SIZE_MAX) else {
            return -EFAULT;
        };
        let Some(vma) =
            self.vmas().iter().copied().find(|vma| vma.start <= old && old_end <= vma.end)
        else {
            return -EFAULT;
        };
        if flags & MREMAP_FIXED == 0 {
            if new_size <= old_size {
                if let Err(errno) = self.unmap_range(old + new_size, old_end) {
                    return errno;
                }
                return old as i64;
            }
            let grown_end = old + new_size;
            if grown_end <= MMAP_BASE.max(old_end) && !self.overlaps(old_end, grown_end) {
                return match self.map(old_end, grown_end, vma.prot) {
                    Ok(()) => old as i64,
                    Err(errno) => errno,
                };
            }
            if flags & MREMAP_MAYMOVE == 0 {
                return -ENOMEM;
            }
        }
        // Enough frames for the part that grows, before anything moves.
        let growth = new_size.saturating_sub(old_size) / PAGE;
        if self.pages + growth > MAX_PAGES {
            return -ENOMEM;
        }
        // The new mapping, and the splits of the old and the target range:
        // refused before anything changes.
        if self.vma_count + 3 > MAX_VMAS {
            return -ENOMEM;
        }
        let target = if flags & MREMAP_FIXED != 0 {
            if new_address < MMAP_MIN_ADDR && is_page_aligned(new_address) {
                return -EPERM;
            }
            if !is_page_aligned(new_address)
                || new_address.checked_add(new_size).is_none_or(|end| end > TASK_SIZE_MAX)
                || (new_address < old_end && old < new_address + new_size)
            {
                return -EINVAL;
            }
            if let Err(errno) = self.unmap_range(new_address, new_address + new_size) {
                return errno;
            }
            new_address
        } else {
            match self.find_free(new_size, MMAP_BASE) {
                Some(start) => start,
                None => return -ENOMEM,
            }
        };
        if let Err(errno) =
            self.insert_vma(Vma { start: target, end: target + new_size, prot: vma.prot })
        {
            return errno;
        }
        let moved = old_size.min(new_size);
        let mut offset = 0;
        while offset < moved {
            let from = self.entry(old + offset, false);
            let taken = from.map(|entry| {
                // SAFETY: as in `set_pages`.
                let value = unsafe { (*entry).clone() };
                // SAFETY: as in `set_pages`.
                unsafe { (*entry).set_unused() };
                value
            });
            self.flush(old + offset);
            if let Some(value) = taken.filter(|value| !value.is_unused()) {
                let Some(to) = self.entry(target + offset, true) else {
                    if !value.flags().contains(BORROWED) {
                        // SAFETY: as in `clear_pages`: the frame's only entry was cleared (and
                        // flushed) above, and it was this address space's own.
                        unsafe { memory::free_frame(PhysFrame::containing_address(value.addr())) };
                        self.pages -= 1;
                    }
                    offset += PAGE;
                    continue;
                };
                // SAFETY: as in `set_pages`; the entry was unused (the range was free).
                unsafe { *to = value };
            }
            offset += PAGE;
        }
        let _ = self.remove_vmas(old, old_end);
        self.clear_pages(old + moved, old_end);
        if new_size > moved {
            if let Err(errno) = self.set_pages(target + moved, target + new_size, vma.prot) {
                return errno;
            }
        }
        target as i64
    }

    /// Frees every user frame and table and the level-4 table. The
    /// address space must not be live (the caller switched to the
    /// kernel's table first).
    pub fn destroy(self) {
        assert!(!self.is_live(), "destroying the live address space");
        free_tables(self.level_4, 4);
    }
}

/// Frees the lower-half subtree under the table at `table` (of `level`),
/// and the table itself.
fn free_tables(table: u64, level: u8) {
    let entries = page_table_at(table);
    let slots = if level == 4 { 0..memory::KERNEL_HALF_FIRST_SLOT } else { 0..512 };
    for slot in slots {
        // SAFETY: a table of an address space no CPU runs on any more (`destroy`'s contract),
        // owned by it alone, read through the physical map.
        let entry = unsafe { (&*entries)[slot].clone() };
        if entry.is_unused() {
            continue;
        }
        if level > 1 {
            free_tables(entry.addr().as_u64(), level - 1);
        } else if !entry.flags().contains(BORROWED) {
            // SAFETY: a frame this address space owns, mapped only here, in tables no CPU has
            // loaded any more (`destroy`'s contract), so no TLB entry or pointer reaches it.
            unsafe { memory::free_frame(PhysFrame::containing_address(entry.addr())) };
        }
    }
    // SAFETY: the table itself: reached only from its parent entry (or CR3 for the level-4
    // table), which no CPU uses any more; its entries were all given back above.
    unsafe { memory::free_frame(PhysFrame::containing_address(PhysAddr::new(table))) };
}

fn zero_frame(frame: PhysFrame) {
    let words = memory::physical_to_virtual(frame.start_address()).as_mut_ptr::<u64>();
    for index in 0..512 {
        // SAFETY: a frame of this address space (just allocated, or one whose contents the
        // caller drops), reached through the physical map; no Rust reference covers user frames.
        unsafe { words.add(index).write_volatile(0) };
    }
}
