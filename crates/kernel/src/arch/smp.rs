//! Starting the other CPUs: Linux's INIT-SIPI-SIPI through a real-mode
//! trampoline in a frame below 1 MiB.
//!
//! For now an AP goes from real mode to long mode on the kernel's page
//! tables, counts itself online, and parks with interrupts off and its
//! local APIC as INIT left it (every LVT masked, software-disabled): no
//! interrupt and no NMI reaches it, because the entry state it would need
//! (its own GS area, TSS, IST stacks, NMI nesting state) is still the boot
//! CPU's alone (docs/design.md, "Per-CPU and per-task state").
//!
//! The trampoline (assembled below, copied to the reserved frame at boot)
//! knows its own address from CS (a SIPI starts the CPU at
//! `vector * 4096`), so nothing in it is patched but its data block:
//!
//! ```text
//!   frame + 0           16-bit code: GDT, protected mode, far jump
//!                       32-bit code: PAE, CR3, EFER.LME|NXE, paging
//!                       64-bit code: stack, call ap_main(cpu, data)
//!   frame + DATA        the data block: CR3, stack top, Rust entry, CPU
//!                       number, the temporary GDT and its pointer, the
//!                       far pointer of the 16-to-32-bit jump, alive flag
//! ```

use crate::arch::{apic, memory};
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// The most CPUs started (the boot CPU included).
pub const MAX_CPUS: usize = 8;

/// Each AP's stack while it is parked.
const AP_STACK_BYTES: usize = 16 * 1024;

#[repr(C, align(16))]
struct ApStacks([[u8; AP_STACK_BYTES]; MAX_CPUS]);

/// The APs' stacks (the boot CPU's entry is unused). Only the AP of each
/// index writes its own, through the pointer the trampoline loads into RSP.
static mut AP_STACKS: ApStacks = ApStacks([[0; AP_STACK_BYTES]; MAX_CPUS]);

/// CPUs running kernel code (the boot CPU counts as one).
static CPUS_ONLINE: AtomicU32 = AtomicU32::new(1);

/// The data block's offset in the trampoline frame, and its fields'.
const DATA: usize = 0xf00;
const DATA_CR3: usize = DATA;
const DATA_STACK: usize = DATA + 0x08;
const DATA_ENTRY: usize = DATA + 0x10;
const DATA_CPU: usize = DATA + 0x18;
const DATA_ALIVE: usize = DATA + 0x20;
const DATA_FAR_POINTER: usize = DATA + 0x28;
const DATA_GDT_POINTER: usize = DATA + 0x36;
const DATA_GDT: usize = DATA + 0x40;

core::arch::global_asm!(
    ".pushsection .rodata.extregs_trampoline, \"a\"",
    ".balign 16",
    ".globl extregs_trampoline_start",
    "extregs_trampoline_start:",
    ".code16",
    "cli",
    "cld",
    // %esi = this frame's linear address (CS = vector << 8 after a SIPI).
    "mov %cs, %si",
    "movzwl %si, %esi",
    "shl $4, %esi",
    "mov %cs, %ax",
    "mov %ax, %ds",
    "lgdtl {gdt_pointer}",
    "mov %cr0, %eax",
    "or $1, %eax",
    "mov %eax, %cr0",
    "ljmpl *{far_pointer}",
    ".code32",
    "extregs_trampoline_32:",
    "mov $0x10, %ax",
    "mov %ax, %ds",
    "mov %ax, %es",
    "mov %ax, %ss",
    // PAE, then the kernel's page tables (below 4 GiB: checked by the boot
    // CPU), then long mode and NX (data pages are NX), then paging.
    "mov %cr4, %eax",
    "or $(1 << 5), %eax",
    "mov %eax, %cr4",
    "mov {cr3}(%esi), %eax",
    "mov %eax, %cr3",
    "mov $0xc0000080, %ecx",
    "rdmsr",
    "or $((1 << 8) | (1 << 11)), %eax",
    "wrmsr",
    "mov %cr0, %eax",
    "or $((1 << 31) | (1 << 16)), %eax",
    "mov %eax, %cr0",
    // A few bytes of stack at the frame's top, for the far return.
    "lea 0x1000(%esi), %esp",
    "lea (extregs_trampoline_64 - extregs_trampoline_start)(%esi), %eax",
    "push $0x18",
    "push %eax",
    "lret",
    ".code64",
    "extregs_trampoline_64:",
    // The upper halves of the registers are undefined after the switch.
    "mov %esi, %esi",
    "mov {stack}(%rsi), %rsp",
    "mov {cpu}(%rsi), %rdi",
    "movl $1, {alive}(%rsi)",
    "xor %ebp, %ebp",
    "call *{entry}(%rsi)",
    "ud2",
    ".globl extregs_trampoline_end",
    "extregs_trampoline_end:",
    ".popsection",
    gdt_pointer = const DATA_GDT_POINTER,
    far_pointer = const DATA_FAR_POINTER,
    cr3 = const DATA_CR3,
    stack = const DATA_STACK,
    cpu = const DATA_CPU,
    alive = const DATA_ALIVE,
    entry = const DATA_ENTRY,
    options(att_syntax)
);

extern "C" {
    static extregs_trampoline_start: u8;
    static extregs_trampoline_32: u8;
    static extregs_trampoline_end: u8;
}

/// An AP's first Rust code: counts itself online and parks.
extern "C" fn ap_main(_cpu: u64) -> ! {
    CPUS_ONLINE.fetch_add(1, Ordering::SeqCst);
    loop {
        // SAFETY: IF is clear (the trampoline's cli) and the local APIC is
        // as INIT left it, so nothing wakes this CPU but INIT.
        unsafe { core::arch::asm!("cli", "hlt", options(nomem, nostack)) };
    }
}

/// Why an AP did not come up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartError {
    /// No frame below 1 MiB was free for the trampoline.
    NoTrampolineFrame,
    /// The kernel's page tables lie above 4 GiB (CR3 is loaded in 32-bit
    /// mode).
    PageTablesAbove4GiB,
    /// The AP never ran the trampoline, or never reached Rust.
    NoAnswer { apic_id: u32, reached_trampoline: bool },
}

/// Busy-waits `microseconds` on the TSC.
fn delay_us(microseconds: u64) {
    let ticks = apic::tsc_ticks_per_ms() * microseconds / 1000;
    // SAFETY: RDTSC has no side effects.
    let start = unsafe { core::arch::x86_64::_rdtsc() };
    // SAFETY: as above.
    while unsafe { core::arch::x86_64::_rdtsc() } - start < ticks {
        core::hint::spin_loop();
    }
}

/// Starts the AP with `apic_id` as CPU `cpu`: INIT, then two SIPIs
/// (Linux's `wakeup_secondary_cpu_via_init` timings), then a bounded wait
/// for it to reach Rust.
pub fn start_ap(cpu: usize, apic_id: u32) -> Result<(), StartError> {
    assert!(cpu > 0 && cpu < MAX_CPUS, "CPU {cpu} is not an AP number");
    let frame = memory::trampoline_frame().ok_or(StartError::NoTrampolineFrame)?;
    let (level_4, _) = x86_64::registers::control::Cr3::read();
    let cr3 = level_4.start_address().as_u64();
    if cr3 >= 1 << 32 {
        return Err(StartError::PageTablesAbove4GiB);
    }
    let base = frame.start_address().as_u64();
    let page = memory::physical_to_virtual(frame.start_address()).as_mut_ptr::<u8>();
    // SAFETY: the trampoline frame is reserved for this (memory::init never hands it out) and
    // mapped by the physical-memory mapping; no other CPU runs it now (the last AP is parked,
    // out of the trampoline, or never started). The code bytes are the kernel's own rodata.
    unsafe {
        let start = &raw const extregs_trampoline_start;
        let length = (&raw const extregs_trampoline_end).offset_from(start) as usize;
        assert!(length <= DATA, "the trampoline's code overlaps its data block");
        core::ptr::copy_nonoverlapping(start, page, length);
        let stack = (&raw mut AP_STACKS).cast::<u8>().add((cpu + 1) * AP_STACK_BYTES);
        let write =
            |offset: usize, value: u64| page.add(offset).cast::<u64>().write_volatile(value);
        write(DATA_CR3, cr3);
        write(DATA_STACK, stack as u64);
        write(DATA_ENTRY, ap_main as *const () as u64);
        write(DATA_CPU, cpu as u64);
        write(DATA_ALIVE, 0);
        // The far pointer of the 16-to-32-bit jump: offset u32, selector 8.
        let entry_32 = (&raw const extregs_trampoline_32).offset_from(start) as u64 + base;
        page.add(DATA_FAR_POINTER).cast::<u32>().write_unaligned(entry_32 as u32);
        page.add(DATA_FAR_POINTER + 4).cast::<u16>().write_unaligned(0x08);
        // The temporary GDT: null, flat 32-bit code (0x08), flat data
        // (0x10), 64-bit code (0x18).
        for (index, descriptor) in
            [0u64, 0x00cf_9a00_0000_ffff, 0x00cf_9200_0000_ffff, 0x00af_9a00_0000_ffff]
                .into_iter()
                .enumerate()
        {
            write(DATA_GDT + 8 * index, descriptor);
        }
        page.add(DATA_GDT_POINTER).cast::<u16>().write_unaligned(4 * 8 - 1);
        page.add(DATA_GDT_POINTER + 2)
            .cast::<u32>()
            .write_unaligned((base + DATA_GDT as u64) as u32);
    }
    let online_before = CPUS_ONLINE.load(Ordering::SeqCst);
    let vector = (base >> 12) as u8;
    apic::send_init(apic_id);
    delay_us(10_000);
    for _ in 0..2 {
        apic::send_startup(apic_id, vector);
        delay_us(300);
    }
    // Bounded: an AP that has not reached Rust in this long never will.
    let deadline_ms = 500;
    for _ in 0..deadline_ms * 10 {
        if CPUS_ONLINE.load(Ordering::SeqCst) > online_before {
            return Ok(());
        }
        delay_us(100);
    }
    // SAFETY: the data block's alive word, written only by the trampoline.
    let alive = unsafe { page.add(DATA_ALIVE).cast::<u64>().read_volatile() } != 0;
    Err(StartError::NoAnswer { apic_id, reached_trampoline: alive })
}

/// CPUs running kernel code.
pub fn cpus_online() -> u32 {
    CPUS_ONLINE.load(Ordering::SeqCst)
}

/// Total CPUs the MADT listed and the kernel tried to start.
static CPUS_FOUND: AtomicU64 = AtomicU64::new(1);

/// Starts every enabled AP of the MADT (at most [`MAX_CPUS`] in all), with
/// Linux's lines.
pub fn bring_up(madt: &extregs_madt::Madt) {
    let boot_apic_id = apic::id();
    let aps: [Option<u32>; MAX_CPUS] = {
        let mut aps = [None; MAX_CPUS];
        for (slot, cpu) in madt
            .enabled_cpus()
            .filter(|cpu| cpu.apic_id != boot_apic_id)
            .take(MAX_CPUS - 1)
            .enumerate()
        {
            aps[slot + 1] = Some(cpu.apic_id);
        }
        aps
    };
    let found = 1 + aps.iter().flatten().count();
    CPUS_FOUND.store(found as u64, Ordering::SeqCst);
    if found == 1 {
        return;
    }
    println!("smp: Bringing up secondary CPUs ...");
    for (cpu, apic_id) in aps.iter().enumerate().filter_map(|(cpu, id)| Some((cpu, (*id)?))) {
        if let Err(why) = start_ap(cpu, apic_id) {
            println!("smp: CPU {cpu} (APIC ID {apic_id}) did not come up: {why:?}");
        }
    }
    let online = cpus_online();
    println!("smp: Brought up 1 node, {online} CPU{}", if online == 1 { "" } else { "s" });
    println!("smp: the APs are parked: the kernel runs on CPU 0 only");
}
