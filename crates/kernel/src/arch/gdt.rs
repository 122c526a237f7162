//! GDT and TSS, one of each per CPU, laid out like Linux's so dumps read
//! the same (`__KERNEL_CS` = 0x10, `__KERNEL_DS` = 0x18, `__USER_DS` =
//! 0x2b, `__USER_CS` = 0x33, the TSS at 0x40), with the four IST stacks of
//! Linux's paranoid entries per CPU: #DF, NMI, #DB and #MC, each with an
//! unmapped guard page below it. Also the ring-3 plumbing: TSS.RSP0 (the
//! running task's kernel stack top, [`set_kernel_stack_top`]), the TSS's I/O
//! permission bitmap ([`load_user_ports`]), the SYSCALL MSRs and the GS
//! bases.
//!
//! Each CPU has its own GDT because `ltr` marks the TSS descriptor busy,
//! and its own TSS because RSP0 and the IST pointers are its own. Every
//! function here without a CPU argument means the CPU that runs it.
//!
//! An IST stack is one [`IST_BLOCK_SIZE`] block, aligned to its size:
//!
//! ```text
//!   +----------------------+  <- block end: the stack's top
//!   | IstTop               |  the owning CPU's GS area, the NMI state
//!   +----------------------+  <- TSS IST pointer
//!   | stack (60 KiB)       |
//!   +----------------------+
//!   | guard page           |  unmapped
//!   +----------------------+  <- block start = any RSP on it & -IST_BLOCK_SIZE
//! ```

use crate::arch::percpu::PerCpu;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU64, Ordering};
use extregs_regs::{selectors, IstTop, IST_BLOCK_SIZE, IST_GUARD_SIZE, NR_CPUS};
use spin::Once;
use static_assertions::const_assert_eq;
use x86_64::instructions::segmentation::{Segment, CS, DS, ES, SS};
use x86_64::instructions::tables::load_tss;
use x86_64::registers::segmentation::SegmentSelector;
use x86_64::structures::gdt::{Descriptor, DescriptorFlags, GlobalDescriptorTable};
use x86_64::structures::tss::TaskStateSegment;
use x86_64::VirtAddr;

/// IST slots (0-based, so IST1..IST4), in Linux's order (`IST_INDEX_*`).
pub const DOUBLE_FAULT_IST_INDEX: u16 = 0;
pub const NMI_IST_INDEX: u16 = 1;
pub const DEBUG_IST_INDEX: u16 = 2;
pub const MACHINE_CHECK_IST_INDEX: u16 = 3;
const IST_STACKS: usize = 4;

/// The stack part of an IST block: all of it but the guard page. One
/// unmapped page below every IST stack: an overflow faults there, and the
/// fault (which can't push its frame either) becomes a #DF on the DF stack,
/// with a dump, instead of running on into the stack below.
const IST_STACK_SIZE: usize = IST_BLOCK_SIZE - IST_GUARD_SIZE;

/// How far a #DB moves the #DB IST pointer down while its handler runs
/// (Linux's old `DB_STACK_OFFSET` idea): a #DB raised inside the handler
/// (`int $1`, TF set by the handler) then lands below the running frame
/// instead of on top of it. Four levels fit the stack, 15 KiB each with no
/// guard between them. A fifth finds the pointer in the guard page (four
/// shifts are 60 KiB, the whole stack less the IstTop): the CPU's push
/// faults, and since #DB is a benign exception that #PF is delivered
/// normally, through the (non-IST) #PF gate onto the interrupted #DB
/// handler's stack, and ends as an oops naming the guard page.
pub const DEBUG_IST_SHIFT: u64 = 15 * 1024;
const_assert_eq!(4 * DEBUG_IST_SHIFT as usize + IST_GUARD_SIZE, IST_BLOCK_SIZE);

/// A guard page and the IST stack above it, one block aligned to its size
/// (so RSP finds the block's [`IstTop`]); the stack is 16-byte aligned at
/// its top as the CPU's push expects.
#[repr(C, align(65536))]
struct IstBlock {
    guard: [u8; IST_GUARD_SIZE],
    stack: [u8; IST_STACK_SIZE],
}
const_assert_eq!(core::mem::size_of::<IstBlock>(), IST_BLOCK_SIZE);
const_assert_eq!(core::mem::align_of::<IstBlock>(), IST_BLOCK_SIZE);

/// Every CPU's four IST blocks: guard, DF, guard, NMI, ...
struct IstArea(UnsafeCell<[[IstBlock; IST_STACKS]; NR_CPUS]>);

// SAFETY: the CPU and the entry code are the only users of the stacks; Rust
// code never forms references into them (only addresses and raw-pointer
// accesses to the IstTop records, each written by its own CPU at its
// bring-up and then by that CPU's NMI entry).
unsafe impl Sync for IstArea {}

static IST_AREA: IstArea = IstArea(UnsafeCell::new(
    [const {
        [const { IstBlock { guard: [0; IST_GUARD_SIZE], stack: [0; IST_STACK_SIZE] } }; IST_STACKS]
    }; NR_CPUS],
));

/// The number of the CPU running this.
fn this_cpu() -> usize {
    extregs_entry_asm::this_cpu()
}

/// CPU `cpu`'s IST block `index`, as a pointer derived from the static.
fn ist_block(cpu: usize, index: u16) -> *mut IstBlock {
    assert!(cpu < NR_CPUS && usize::from(index) < IST_STACKS);
    IST_AREA.0.get().cast::<IstBlock>().wrapping_add(cpu * IST_STACKS + usize::from(index))
}

/// The address range `[bottom, top)` of CPU `cpu`'s IST stack `index`: where
/// frames taken on it must lie (its IstTop included).
pub fn ist_stack_range_of(cpu: usize, index: u16) -> core::ops::Range<u64> {
    let bottom = ist_block(cpu, index) as u64 + IST_GUARD_SIZE as u64;
    bottom..bottom + IST_STACK_SIZE as u64
}

/// [`ist_stack_range_of`] this CPU.
pub fn ist_stack_range(index: u16) -> core::ops::Range<u64> {
    ist_stack_range_of(this_cpu(), index)
}

/// What the TSS's IST pointer holds for a stack at rest: right below its
/// [`IstTop`].
fn ist_pointer_at_rest(cpu: usize, index: u16) -> u64 {
    ist_stack_range_of(cpu, index).end - core::mem::size_of::<IstTop>() as u64
}

/// The [`IstTop`] of CPU `cpu`'s IST stack `index`, as a raw pointer.
fn ist_top(cpu: usize, index: u16) -> *mut IstTop {
    ist_block(cpu, index)
        .cast::<u8>()
        .wrapping_add(IST_BLOCK_SIZE - core::mem::size_of::<IstTop>())
        .cast()
}

/// This CPU's NMI nesting state (`extregs_regs::nmi_state`), which its NMI
/// entry keeps at the top of its NMI stack: IDLE outside NMIs, RUNNING
/// while the outermost NMI's handler runs, PENDING once a nested NMI was
/// latched for a repeat.
pub fn nmi_nesting_state() -> u8 {
    // SAFETY: the IstTop of this CPU's NMI block (in bounds of the static, aligned), read
    // through a raw pointer: only this CPU's NMI stub writes the byte, and a volatile byte read
    // can't tear.
    unsafe {
        (&raw const (*ist_top(this_cpu(), NMI_IST_INDEX)).nmi_state).cast::<u8>().read_volatile()
    }
}

/// The address of this CPU's NMI nesting state.
pub fn nmi_nesting_state_address() -> u64 {
    // Only the address is computed (the field offset inside the block).
    ist_top(this_cpu(), NMI_IST_INDEX) as u64 + core::mem::offset_of!(IstTop, nmi_state) as u64
}

/// The GS area address each of CPU `cpu`'s IST blocks records (what its
/// paranoid entries compare MSR_GS_BASE with).
pub fn ist_recorded_per_cpu(cpu: usize, index: u16) -> u64 {
    // Written once, by CPU `cpu` in `init` before it counts as online; read only for online
    // CPUs: the AP's SeqCst store of its online flag and the reader's SeqCst load order the two.
    // SAFETY: a raw aligned read through a pointer derived from IST_AREA, in bounds; no Rust
    // reference covers the record, and the write happens-before this read (above).
    unsafe { (&raw const (*ist_top(cpu, index)).per_cpu).read_volatile() }
}

/// A pointer to this CPU's [`NmiStackTop`] (the top of its NMI stack),
/// derived from the IST area's static.
pub fn nmi_stack_top() -> *const extregs_regs::NmiStackTop {
    ist_block(this_cpu(), NMI_IST_INDEX)
        .cast::<u8>()
        .wrapping_add(IST_BLOCK_SIZE - core::mem::size_of::<extregs_regs::NmiStackTop>())
        .cast()
}

/// The unmapped guard page below this CPU's IST stack `index`.
pub fn ist_guard_range(index: u16) -> core::ops::Range<u64> {
    let guard = ist_block(this_cpu(), index) as u64;
    guard..guard + IST_GUARD_SIZE as u64
}

/// Which of this CPU's IST stacks' guard pages (if any) holds `address`.
pub fn ist_guard_of(address: u64) -> Option<u16> {
    (0..IST_STACKS as u16).find(|&index| ist_guard_range(index).contains(&address))
}

/// Unmaps the guard page below every IST stack of every CPU. Called once
/// at boot, after the page tables are reachable (`memory::init`).
pub fn protect_ist_stacks() {
    for cpu in 0..NR_CPUS {
        for index in 0..IST_STACKS as u16 {
            crate::arch::memory::unmap_guard_page(VirtAddr::new(ist_block(cpu, index) as u64));
        }
    }
}

/// Which of this CPU's IST stacks (if any) holds `address`.
pub fn ist_stack_of(address: u64) -> Option<u16> {
    (0..IST_STACKS as u16).find(|&index| ist_stack_range(index).contains(&address))
}

/// Linux's name of an IST stack, for dumps.
pub fn ist_stack_name(index: u16) -> &'static str {
    match index {
        DOUBLE_FAULT_IST_INDEX => "DF",
        NMI_IST_INDEX => "NMI",
        DEBUG_IST_INDEX => "DB",
        MACHINE_CHECK_IST_INDEX => "MCE",
        _ => "?",
    }
}

/// The TSS and, right after it, its I/O permission bitmap. Interior
/// mutability because the #DB entry moves its IST pointer while a #DB runs
/// ([`shift_debug_ist`]), and the scheduler moves RSP0 and loads the next
/// task's open ports ([`load_user_ports`]); the CPU reads it
/// on every event that switches stacks and on every `in`/`out` in ring 3.
struct TssCell(UnsafeCell<TssWithIoBitmap>);

#[repr(C)]
struct TssWithIoBitmap {
    tss: TaskStateSegment,
    /// One bit per port from 0 (set: ring 3 may not use it); ports past the
    /// bitmap are refused too. The last byte is the 0xff the CPU needs: it
    /// reads two bytes for every check.
    io_bitmap: [u8; IO_BITMAP_PORTS / 8 + 1],
}

/// Ports the I/O bitmap covers (the 8259's two master ports are in it):
/// 64, one `u64` of a task's open ports.
const IO_BITMAP_PORTS: usize = 0x40;
const_assert_eq!(IO_BITMAP_PORTS, 64);

// SAFETY: each CPU writes only its own TSS after boot (every accessor below
// picks this CPU's), through raw-pointer stores from code that documents
// why no event can read the field half-written (see each writer).
unsafe impl Sync for TssCell {}

static TSS: [TssCell; NR_CPUS] = [const {
    TssCell(UnsafeCell::new(TssWithIoBitmap {
        tss: TaskStateSegment::new(),
        io_bitmap: [0xff; IO_BITMAP_PORTS / 8 + 1],
    }))
}; NR_CPUS];
static GDT: [Once<GlobalDescriptorTable<10>>; NR_CPUS] = [const { Once::new() }; NR_CPUS];

/// This CPU's TSS, as a raw pointer with the provenance of its cell.
fn this_tss() -> *mut TssWithIoBitmap {
    TSS[this_cpu()].0.get()
}

/// Moves the #DB IST pointer down by `bytes` (a #DB entering) or back up
/// (negative, the #DB leaving).
///
/// # Safety
///
/// Only the #DB entry calls this, in matched pairs, with DR7 already
/// cleared (so no breakpoint can fire between the CPU's read of the pointer
/// and this update; breakpoints on the Rust entry code before it are
/// refused by `paranoid::set_execute_breakpoint`).
///
/// The read-modify-write is not atomic, but a nested paranoid event that
/// lands between its read and write and shifts too (an NMI whose handler
/// takes a #DB) undoes its own shift before it returns, so the value read
/// is still right when this write happens. The CPU reads the field on the
/// next #DB.
pub unsafe fn shift_debug_ist(bytes: i64) {
    // SAFETY: the pointer comes from `TSS`'s UnsafeCell (provenance of the whole 'static TSS);
    // the packed field is read and written unaligned through raw pointers, and no reference to
    // the TSS exists after `init` (the GDT holds only its address), so nothing aliases these.
    unsafe {
        let ist = (&raw mut (*this_tss()).tss.interrupt_stack_table)
            .cast::<u64>()
            .add(usize::from(DEBUG_IST_INDEX));
        ist.write_unaligned(ist.read_unaligned().wrapping_add_signed(-bytes));
    }
}

/// The #DB IST pointer as the CPU will use it for the next #DB.
pub fn debug_ist_pointer() -> u64 {
    // SAFETY: as in `shift_debug_ist`: a raw read of one field.
    unsafe {
        (&raw const (*this_tss()).tss.interrupt_stack_table)
            .cast::<u64>()
            .add(usize::from(DEBUG_IST_INDEX))
            .read_unaligned()
    }
}

/// The TSS's address range, for code that must not touch it (breakpoints).
pub fn tss_range() -> core::ops::Range<u64> {
    let start = this_tss() as u64;
    start..start + core::mem::size_of::<TssWithIoBitmap>() as u64
}

/// Ports the I/O permission bitmap covers: a task's open ports are a
/// `u64`, bit `p` for port `p`.
pub const USER_PORTS: u16 = IO_BITMAP_PORTS as u16;

/// The ports this CPU's I/O bitmap opens to ring 3 (bit `p`: port `p`).
static OPEN_PORTS: PerCpu<AtomicU64> = PerCpu::new([const { AtomicU64::new(0) }; NR_CPUS]);

/// Makes this CPU's I/O permission bitmap open exactly the ports of
/// `open` (bit `p`: port `p`) to ring 3: the switch loads the next task's
/// own ports (Linux's `ioperm()` is per task), so a port one task opened
/// never opens for another task, on this CPU or any other. Writes the
/// bitmap only when it changes. Interrupts off.
pub fn load_user_ports(open: u64) {
    if OPEN_PORTS.this().swap(open, Ordering::Relaxed) == open {
        return;
    }
    let closed = (!open).to_le_bytes();
    // The CPU reads these bytes only for `in`/`out` in ring 3, and the kernel runs here, interrupts
    // off; the bitmap's last 0xff byte, which the descriptor's limit relies on, is not among them.
    // SAFETY: raw byte stores through a fresh UnsafeCell pointer (no reference to the TSS lives
    // after `init`) into this CPU's bitmap's first 8 bytes (64 ports), as argued above.
    unsafe {
        let bitmap = (&raw mut (*this_tss()).io_bitmap).cast::<u8>();
        for (index, byte) in closed.iter().enumerate() {
            bitmap.add(index).write_volatile(*byte);
        }
    }
}

/// Linux's kernel code selector, `__KERNEL_CS`.
pub const KERNEL_CS: SegmentSelector = SegmentSelector(selectors::KERNEL_CS);
/// Linux's kernel data selector, `__KERNEL_DS`.
pub const KERNEL_DS: SegmentSelector = SegmentSelector(selectors::KERNEL_DS);
/// Linux's 64-bit user code selector, `__USER_CS` (RPL 3).
pub const USER_CS: SegmentSelector = SegmentSelector(selectors::USER_CS);
/// Linux's user data selector, `__USER_DS` (RPL 3).
pub const USER_DS: SegmentSelector = SegmentSelector(selectors::USER_DS);

/// Sets the kernel stack a frame from user mode lands on: TSS.RSP0 (the
/// CPU's choice for an interrupt or exception from ring 3) and
/// `%gs:PERCPU_TOP_OF_STACK` (the SYSCALL entry's and the IST entries'
/// choice). The scheduler calls this on every switch, so `task_pt_regs` of
/// the running task is where its user frames are built.
///
/// # Safety
///
/// Interrupts off, and `top` is the top of the kernel stack of the task
/// about to run (nothing else may be built there).
pub unsafe fn set_kernel_stack_top(top: u64) {
    // SAFETY: as in `shift_debug_ist` (a raw unaligned write, no reference to the TSS); the CPU
    // reads RSP0 only for an event from ring 3, which can't come while the kernel runs with
    // interrupts off; the per-CPU store keeps `set_top_of_stack`'s contract.
    unsafe {
        (&raw mut (*this_tss()).tss.privilege_stack_table).cast::<u64>().write_unaligned(top);
        extregs_entry_asm::set_top_of_stack(top);
    }
}

/// TSS.RSP0 as the CPU will use it for the next event from user mode.
pub fn kernel_stack_top() -> u64 {
    // SAFETY: a raw read of one TSS field, as in `debug_ist_pointer`.
    unsafe { (&raw const (*this_tss()).tss.privilege_stack_table).cast::<u64>().read_unaligned() }
}

/// RFLAGS bits SYSCALL clears, Linux's `syscall_init()` mask: CF PF AF ZF
/// SF TF IF DF OF IOPL NT RF AC ID. No interrupts, single steps, string
/// direction, alignment checks, nested tasks or I/O privilege leak into the
/// entry (the user's flags are in R11).
const SYSCALL_FLAGS_MASK: u64 = 0x0025_7fd5;

/// Sets this CPU's two GS bases: GS base = CPU `cpu`'s entry area (kernel
/// mode), KERNEL_GS_BASE = 0 (what user mode sees after the first SWAPGS),
/// after filling in the area's CPU number and own address. The first thing
/// the boot CPU and every AP do: everything per CPU is found through GS
/// from then on.
pub fn init_gs(cpu: usize) {
    use x86_64::registers::model_specific::{GsBase, KernelGsBase};
    let per_cpu = extregs_entry_asm::per_cpu(cpu);
    // SAFETY: CPU `cpu`'s area of the static array, written through raw pointers only, by the
    // CPU that will own it, before its GS base points there (nothing reads it through GS yet).
    unsafe {
        (&raw mut (*per_cpu).self_address).write_volatile(per_cpu as u64);
        (&raw mut (*per_cpu).cpu).write_volatile(cpu as u64);
    }
    GsBase::write(VirtAddr::from_ptr(per_cpu));
    KernelGsBase::write(VirtAddr::zero());
}

/// Sets up SYSCALL/SYSRET the Linux way on this CPU: EFER.SCE, STAR =
/// (`__USER32_CS` << 48) | (`__KERNEL_CS` << 32), LSTAR =
/// `entry_SYSCALL_64`, CSTAR = `entry_SYSCALL32_ignore` (compat mode:
/// -ENOSYS), SYSENTER's MSRs 0 (SYSENTER raises #GP), FMASK =
/// [`SYSCALL_FLAGS_MASK`].
pub fn init_syscall() {
    use x86_64::registers::model_specific::{Efer, EferFlags, LStar, Msr};
    LStar::write(VirtAddr::new(extregs_entry_asm::syscall_entry_address()));
    let star = (u64::from(selectors::USER32_CS) << 48) | (u64::from(selectors::KERNEL_CS) << 32);
    // SAFETY: STAR names the GDT entries `init` loaded (0x10/0x18, 0x23/0x2b/0x33), CSTAR an
    // entry that returns at once, a null SYSENTER_CS makes SYSENTER fault, FMASK only clears
    // flags, and EFER.SCE enables SYSCALL with its entries (LSTAR, CSTAR) in place.
    unsafe {
        Msr::new(0xc000_0081).write(star);
        Msr::new(0xc000_0083).write(extregs_entry_asm::compat_syscall_entry_address());
        // SYSENTER: an invalid CS makes it #GP (Linux without IA32
        // emulation writes the same three).
        Msr::new(0x174).write(0);
        Msr::new(0x175).write(0);
        Msr::new(0x176).write(0);
        Msr::new(0xc000_0084).write(SYSCALL_FLAGS_MASK);
        Efer::update(|flags| flags.insert(EferFlags::SYSTEM_CALL_EXTENSIONS));
    }
}

/// Records this CPU's local APIC ID in its entry area (once its APIC is
/// set up).
pub fn set_apic_id(apic_id: u32) {
    apic_id_word(this_cpu()).store(u64::from(apic_id), Ordering::SeqCst);
}

/// The local APIC ID CPU `cpu` recorded ([`set_apic_id`]).
pub fn apic_id_of(cpu: usize) -> u32 {
    apic_id_word(cpu).load(Ordering::SeqCst) as u32
}

/// CPU `cpu`'s `apic_id` word, as an atomic: its own CPU writes it, and
/// other CPUs read it (`smp::online_cpus`) while that CPU runs.
fn apic_id_word(cpu: usize) -> &'static AtomicU64 {
    // Every access to this word goes through this AtomicU64 (the entry assembly never touches
    // it), so no non-atomic access races with these; no reference to the PerCpuEntry exists.
    // SAFETY: CPU `cpu`'s `apic_id` field, derived from the area array's static (provenance over
    // all of it), 8-byte aligned (repr(C) of u64s), valid for the program's life.
    unsafe { AtomicU64::from_ptr(&raw mut (*extregs_entry_asm::per_cpu(cpu)).apic_id) }
}

/// The GS base of kernel mode on this CPU (its entry area's address).
pub fn kernel_gs_base() -> u64 {
    extregs_entry_asm::per_cpu(this_cpu()) as u64
}

/// Loads this CPU's GDT and TSS and reloads every segment register, after
/// pointing its TSS at its own IST stacks and writing each stack's IstTop
/// (this CPU's GS area, the NMI state IDLE). Runs after [`init_gs`].
pub fn init() {
    let cpu = this_cpu();
    let per_cpu = extregs_entry_asm::per_cpu(cpu) as u64;
    assert_eq!(
        ist_block(cpu, 0) as u64 % IST_BLOCK_SIZE as u64,
        0,
        "the loader placed the IST blocks off their {IST_BLOCK_SIZE}-byte alignment"
    );
    // SAFETY: this CPU's TSS before it is loaded and its IST blocks before any event can use
    // them: nothing else reads or writes either yet; raw place writes through the cells'
    // pointers, in bounds of the statics.
    unsafe {
        (&raw mut (*this_tss()).tss.iomap_base)
            .write_unaligned(core::mem::offset_of!(TssWithIoBitmap, io_bitmap) as u16);
        let ist = (&raw mut (*this_tss()).tss.interrupt_stack_table).cast::<u64>();
        for index in 0..IST_STACKS as u16 {
            ist_top(cpu, index).write_volatile(IstTop {
                per_cpu,
                nmi_state: u64::from(extregs_regs::nmi_state::IDLE),
            });
            ist.add(usize::from(index)).write_unaligned(ist_pointer_at_rest(cpu, index));
        }
    }
    let gdt = GDT[cpu].call_once(|| {
        let mut gdt = GlobalDescriptorTable::<10>::empty();
        // Entry 1 is Linux's __KERNEL32_CS; it keeps the 64-bit selectors at
        // the values every Linux oops shows.
        gdt.append(Descriptor::UserSegment(DescriptorFlags::KERNEL_CODE32.bits()));
        let code = gdt.append(Descriptor::kernel_code_segment());
        let data = gdt.append(Descriptor::kernel_data_segment());
        // SYSRET's fixed order: user32 CS, then user DS, then user CS.
        let user32_code = gdt.append(Descriptor::UserSegment(DescriptorFlags::USER_CODE32.bits()));
        let user_data = gdt.append(Descriptor::user_data_segment());
        let user_code = gdt.append(Descriptor::user_code_segment());
        // Entry 7 is unused (Linux's GDT_ENTRY_DEFAULT_USER_TLS slots sit
        // elsewhere); the TSS takes entries 8 and 9 like GDT_ENTRY_TSS.
        gdt.append(Descriptor::UserSegment(0));
        // x86_64 0.15 reads iomap_base and the last byte, and keeps integers only.
        // SAFETY: this CPU's TSS, not loaded yet; both references come from this_tss() and die
        // with the call; later writes use fresh raw pointers, so none is alive when they happen.
        let (tss, io_bitmap) = unsafe { (&(*this_tss()).tss, &(*this_tss()).io_bitmap) };
        let descriptor = Descriptor::tss_segment_with_iomap(tss, io_bitmap.as_slice())
            .expect("the I/O bitmap follows the TSS, with iomap_base at it and a 0xff last");
        let tss = gdt.append(descriptor);
        assert_eq!((code, data), (KERNEL_CS, KERNEL_DS));
        assert_eq!(
            (user32_code.0 | 3, user_data.0 | 3, user_code.0 | 3, tss.0),
            (selectors::USER32_CS, selectors::USER_DS, selectors::USER_CS, selectors::TSS)
        );
        gdt
    });
    gdt.load();
    let tss_selector = SegmentSelector(selectors::TSS);
    // SAFETY: the selectors index the descriptors appended above, in this CPU's GDT just
    // loaded; its TSS descriptor is loaded exactly once (by this CPU).
    unsafe {
        CS::set_reg(KERNEL_CS);
        SS::set_reg(KERNEL_DS);
        DS::set_reg(SegmentSelector(0));
        ES::set_reg(SegmentSelector(0));
        load_tss(tss_selector);
    }
}

/// This CPU's GDT's address, for tests that every CPU has its own.
pub fn gdt_address() -> u64 {
    x86_64::instructions::tables::sgdt().base.as_u64()
}

/// The address of this CPU's TSS as its GDT descriptor names it (the
/// descriptor's base fields), for tests that every CPU has its own.
pub fn loaded_tss_address() -> u64 {
    let gdt = x86_64::instructions::tables::sgdt();
    let entry = usize::from(selectors::TSS >> 3);
    // SAFETY: SGDT returns the GDT this CPU loaded in `init` (a 'static in GDT[cpu]); the TSS
    // descriptor is its two 8-byte entries at `entry`, in bounds of its 10 entries.
    let (low, high) = unsafe {
        let base = gdt.base.as_ptr::<u64>();
        (base.add(entry).read_volatile(), base.add(entry + 1).read_volatile())
    };
    ((low >> 16) & 0xff_ffff) | (((low >> 56) & 0xff) << 24) | ((high & 0xffff_ffff) << 32)
}
