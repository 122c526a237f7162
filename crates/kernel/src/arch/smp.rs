//! Starting the other CPUs: Linux's INIT-SIPI-SIPI through a real-mode
//! trampoline in a frame below 1 MiB, then the same CPU state as the boot
//! CPU's on each before it counts as online.
//!
//! An AP goes from real mode to long mode on the kernel's page tables and
//! into [`ap_main`] on its own stack ([`ApHooks::idle_stack`], a guard page
//! below it). There it sets up, in order: its GS area (first: everything
//! per CPU is found through it), its own GDT, TSS and IST stacks, the
//! shared IDT, the SYSCALL MSRs, CR4.SMEP/SMAP and CR4.PKS with the default
//! PKRS; the layers above make its boot flow its idle task, `swapper/K`
//! ([`ApHooks::become_idle_task`]); then its local APIC (LINT0 masked,
//! LINT1 as NMI, so an NMI from outside finds the idle task current). Only
//! then does it count as online, and
//! it idles ([`ApHooks::idle`]) with interrupts on: NMIs (IPIs, QMP's
//! `inject-nmi` through LINT1) and the IPIs other CPUs send reach it
//! through the same extended entry as on the boot CPU.
//!
//! The trampoline (assembled below, copied to the reserved frame at boot)
//! knows its own address from CS (a SIPI starts the CPU at
//! `vector * 4096`), so nothing in it is patched but its data block:
//!
//! ```text
//!   frame + 0           16-bit code: GDT, protected mode, far jump
//!                       32-bit code: PAE, CR3, EFER.LME|NXE, paging
//!                       64-bit code: stack, call ap_main(cpu)
//!   frame + DATA        the data block: CR3, stack top, Rust entry, CPU
//!                       number, the temporary GDT and its pointer, the
//!                       far pointer of the 16-to-32-bit jump, alive flag
//! ```

use crate::arch::{apic, cpu, fpu, gdt, idt, memory, pks, uaccess};
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use extregs_regs::NR_CPUS;

/// The most CPUs started (the boot CPU included).
pub const MAX_CPUS: usize = NR_CPUS;

/// What the layers above give an AP and do with it once its CPU state is
/// up.
pub struct ApHooks {
    /// AP `cpu`'s boot stack, which stays its idle task's stack (a guard
    /// page below it).
    pub idle_stack: fn(cpu: usize) -> core::ops::Range<u64>,
    /// Make the running boot flow of AP `cpu` its idle task (`swapper/K`):
    /// the scheduler's current task on that CPU.
    pub become_idle_task: fn(cpu: usize),
    /// The idle loop, with interrupts enabled only in `sti; hlt`.
    pub idle: fn() -> !,
}

static AP_HOOKS: spin::Once<ApHooks> = spin::Once::new();
/// The boot CPU's features, which every AP sets up the same way.
static FEATURES: spin::Once<cpu::CpuFeatures> = spin::Once::new();

/// The APIC IDs of the online CPUs, by CPU number (`u32::MAX`: none).
static APIC_IDS: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(u32::MAX) }; MAX_CPUS];

/// CPUs running kernel code (the boot CPU counts as one).
static CPUS_ONLINE: AtomicU32 = AtomicU32::new(1);

/// Entry `cpu`: that AP is online. Per CPU, so a late AP can never be
/// counted as another.
static ONLINE: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];

/// How long an AP may take from its first STARTUP to online (Linux waits
/// 10 s too; one that has not come by then never will).
const ARRIVAL_TIMEOUT_MS: u64 = 10_000;

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
    "movl $1, {alive}",
    "lgdtl {gdt_pointer}",
    // CR0 loaded, not or'ed: PE and ET, caching on (CD and NW clear,
    // whatever the firmware left).
    "mov $0x11, %eax",
    "mov %eax, %cr0",
    "ljmpl *{far_pointer}",
    ".code32",
    ".globl extregs_trampoline_32",
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
    // PG, WP, NE, ET, MP and PE (Linux's CR0_STATE less AM).
    "mov $0x80010033, %eax",
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
    "movl $2, {alive}(%rsi)",
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

/// An AP's first Rust code, on its own stack, interrupts off: the boot
/// CPU's state, in the order the boot CPU set it up, then online.
extern "C" fn ap_main(cpu: u64) -> ! {
    let cpu = cpu as usize;
    gdt::init_gs(cpu);
    gdt::init();
    // The idle task before the IDT: from the IDT on, an NMI (an IPI, or
    // one from outside once LINT1 is open) may arrive, and its entry must
    // find this CPU's own current task.
    let hooks = AP_HOOKS.get().expect("bring_up recorded the AP hooks");
    (hooks.become_idle_task)(cpu);
    idt::init();
    gdt::init_syscall();
    let features = FEATURES.get().expect("bring_up recorded the boot CPU's features");
    uaccess::enable_smep_smap(features);
    fpu::init_cpu();
    pks::init_ap();
    apic::init_ap();
    APIC_IDS[cpu].store(apic::id(), Ordering::SeqCst);
    CPUS_ONLINE.fetch_add(1, Ordering::SeqCst);
    ONLINE[cpu].store(true, Ordering::SeqCst);
    (hooks.idle)()
}

/// Why an AP did not come up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartError {
    /// No frame below 1 MiB was free for the trampoline.
    NoTrampolineFrame,
    /// The kernel's page tables lie above 4 GiB (CR3 is loaded in 32-bit
    /// mode).
    PageTablesAbove4GiB,
    /// The AP did not come online in time: how far it got (0: not into
    /// the trampoline, 1: real mode, 2: long mode, Rust). It was sent INIT
    /// again, so it waits for a STARTUP and runs nothing.
    NoAnswer { apic_id: u32, stage: u32 },
    /// An xAPIC can't address an APIC ID above 254 (255 is the
    /// broadcast).
    Unaddressable { apic_id: u32 },
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

/// Starts the AP with `apic_id` as CPU `cpu`: INIT, then two STARTUPs
/// (Linux's `wakeup_secondary_cpu_via_init` timings), then a bounded wait
/// for it to reach Rust. One that does not is sent INIT again before the
/// trampoline page is reused, so it can never run the next AP's data.
pub fn start_ap(cpu: usize, apic_id: u32) -> Result<(), StartError> {
    assert!(cpu > 0 && cpu < MAX_CPUS, "CPU {cpu} is not an AP number");
    if matches!(apic::current_mode(), apic::Mode::XApic { .. }) && apic_id > 0xfe {
        return Err(StartError::Unaddressable { apic_id });
    }
    let frame = memory::trampoline_frame().ok_or(StartError::NoTrampolineFrame)?;
    let (level_4, _) = x86_64::registers::control::Cr3::read();
    let cr3 = level_4.start_address().as_u64();
    if cr3 >= 1 << 32 {
        return Err(StartError::PageTablesAbove4GiB);
    }
    let base = frame.start_address().as_u64();
    let page = memory::physical_to_virtual(frame.start_address()).as_mut_ptr::<u8>();
    // The trampoline's bytes are assembled into the kernel's rodata, which no Rust allocation
    // describes: read them through their exposed address, not through the one-byte statics
    // that only name their ends.
    let code_start = (&raw const extregs_trampoline_start).addr();
    let code_length = (&raw const extregs_trampoline_end).addr() - code_start;
    let entry_32 = (&raw const extregs_trampoline_32).addr() - code_start;
    assert!(code_length <= DATA, "the trampoline's code overlaps its data block");
    let hooks = AP_HOOKS.get().expect("bring_up recorded the AP hooks");
    let stack_top = (hooks.idle_stack)(cpu).end;
    // SAFETY: the reserved trampoline frame, through the physical map no Rust reference covers;
    // no CPU runs it now (each earlier AP left it for Rust or was sent INIT again). The code is
    // read-only kernel rodata, read through its exposed address.
    unsafe {
        core::ptr::copy_nonoverlapping(
            core::ptr::with_exposed_provenance::<u8>(code_start),
            page,
            code_length,
        );
        let write =
            |offset: usize, value: u64| page.add(offset).cast::<u64>().write_volatile(value);
        write(DATA_CR3, cr3);
        write(DATA_STACK, stack_top);
        write(DATA_ENTRY, ap_main as *const () as u64);
        write(DATA_CPU, cpu as u64);
        write(DATA_ALIVE, 0);
        // The far pointer of the 16-to-32-bit jump: offset u32, selector 8.
        page.add(DATA_FAR_POINTER).cast::<u32>().write_unaligned((base as usize + entry_32) as u32);
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
    let vector = (base >> 12) as u8;
    apic::send_init(apic_id);
    delay_us(10_000);
    for _ in 0..2 {
        apic::send_startup(apic_id, vector);
        delay_us(300);
    }
    for _ in 0..ARRIVAL_TIMEOUT_MS * 10 {
        if ONLINE[cpu].load(Ordering::SeqCst) {
            return Ok(());
        }
        delay_us(100);
    }
    // Back to waiting for a STARTUP, before the page holds another AP's data.
    apic::send_init(apic_id);
    // SAFETY: the data block's stage word, written only by the trampoline (which this AP no
    // longer runs: INIT stopped it).
    let stage = unsafe { page.add(DATA_ALIVE).cast::<u32>().read_volatile() };
    Err(StartError::NoAnswer { apic_id, stage })
}

/// CPUs running kernel code.
pub fn cpus_online() -> u32 {
    CPUS_ONLINE.load(Ordering::SeqCst)
}

/// Is CPU `cpu` online?
pub fn cpu_online(cpu: usize) -> bool {
    cpu == 0 || ONLINE.get(cpu).is_some_and(|online| online.load(Ordering::SeqCst))
}

/// The online CPUs' numbers and APIC IDs, the boot CPU first.
pub fn online_cpus() -> impl Iterator<Item = (usize, u32)> {
    (0..MAX_CPUS).filter(|&cpu| cpu_online(cpu)).map(|cpu| (cpu, gdt::apic_id_of(cpu)))
}

/// The online CPUs as an affinity mask (bit `k`: CPU `k`).
pub fn online_mask() -> u32 {
    online_cpus().fold(0, |mask, (cpu, _)| mask | 1 << cpu)
}

/// Starts every enabled AP of the MADT (at most [`MAX_CPUS`] in all), with
/// Linux's lines. `features` are the boot CPU's (each AP sets up the
/// same), `hooks` what the layers above do with an AP once it is up.
pub fn bring_up(madt: &extregs_madt::Madt, features: cpu::CpuFeatures, hooks: ApHooks) {
    let boot_apic_id = apic::id();
    APIC_IDS[0].store(boot_apic_id, Ordering::SeqCst);
    let others = || madt.enabled_cpus().filter(move |cpu| cpu.apic_id != boot_apic_id);
    let mut aps = [None; MAX_CPUS];
    for (slot, cpu) in others().take(MAX_CPUS - 1).enumerate() {
        aps[slot + 1] = Some(cpu.apic_id);
    }
    let left_out = others().count().saturating_sub(MAX_CPUS - 1);
    if aps.iter().all(Option::is_none) {
        return;
    }
    FEATURES.call_once(|| features);
    AP_HOOKS.call_once(|| hooks);
    println!("smp: Bringing up secondary CPUs ...");
    if left_out > 0 {
        println!("smp: {left_out} more CPUs left out: the kernel starts at most {MAX_CPUS}");
    }
    for (cpu, apic_id) in aps.iter().enumerate().filter_map(|(cpu, id)| Some((cpu, (*id)?))) {
        if let Err(why) = start_ap(cpu, apic_id) {
            println!("smp: CPU {cpu} (APIC ID {apic_id}) did not come up: {why:?}");
        }
    }
    let online = cpus_online();
    println!("smp: Brought up 1 node, {online} CPU{}", if online == 1 { "" } else { "s" });
}
