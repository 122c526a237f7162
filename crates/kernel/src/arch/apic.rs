//! The local APIC (x2APIC mode when the CPU has it, xAPIC through MMIO
//! otherwise), with the legacy 8259 PIC remapped and masked (the `pic8259`
//! crate). Two users of the PIT's channel 0 and the 8259 take turns on
//! LINT0: the fuzzer's foreign timer (ExtINT) and the PIC NMI a user task
//! sets off itself ([`arm_pic_nmi`]).
//!
//! The driver is small and written here rather than taken from the `x2apic`
//! crate: that crate masks LINT1 when it enables the APIC (so NMIs injected
//! from outside, which QEMU delivers through LINT1, would be dropped), starts
//! the timer on enable, and sends self-IPIs through the x2APIC-only SELF IPI
//! register even in xAPIC mode.
//!
//! Vectors follow Linux's layout at the top of the IDT.

use crate::arch::percpu::{this_cpu, PerCpu};
use crate::arch::{gdt, memory};
use core::sync::atomic::{AtomicU32, Ordering};
use spin::Once;
use x86_64::instructions::port::Port;
use x86_64::registers::model_specific::Msr;
use x86_64::PhysAddr;

/// Linux's `LOCAL_TIMER_VECTOR`.
pub const TIMER_VECTOR: u8 = 0xec;
/// The fixed vector the selftests and the fuzzer send self-IPIs on.
pub const SELF_IPI_VECTOR: u8 = 0xf3;
/// Linux's `RESCHEDULE_VECTOR`: wakes an idle AP to look at its work.
pub const RESCHEDULE_VECTOR: u8 = 0xfd;
/// Linux's `ERROR_APIC_VECTOR`.
pub const ERROR_VECTOR: u8 = 0xfe;
/// Linux's `SPURIOUS_APIC_VECTOR`.
pub const SPURIOUS_VECTOR: u8 = 0xff;

const IA32_APIC_BASE: u32 = 0x1b;
const APIC_BASE_ENABLE: u64 = 1 << 11;
const APIC_BASE_X2APIC: u64 = 1 << 10;
const APIC_BASE_ADDRESS_MASK: u64 = 0x000f_ffff_ffff_f000;

/// Register offsets in the xAPIC MMIO page; the x2APIC MSR is
/// `0x800 + offset / 16`.
mod reg {
    pub const ID: u32 = 0x20;
    pub const TPR: u32 = 0x80;
    pub const EOI: u32 = 0xb0;
    pub const SVR: u32 = 0xf0;
    pub const ISR: u32 = 0x100;
    pub const IRR: u32 = 0x200;
    pub const ESR: u32 = 0x280;
    pub const ICR_LOW: u32 = 0x300;
    pub const ICR_HIGH: u32 = 0x310;
    pub const LVT_TIMER: u32 = 0x320;
    pub const LVT_LINT0: u32 = 0x350;
    pub const LVT_LINT1: u32 = 0x360;
    pub const LVT_ERROR: u32 = 0x370;
    pub const TIMER_INITIAL: u32 = 0x380;
    pub const TIMER_CURRENT: u32 = 0x390;
    pub const TIMER_DIVIDE: u32 = 0x3e0;
}

const SVR_APIC_ENABLE: u32 = 1 << 8;
const LVT_MASKED: u32 = 1 << 16;
const LVT_DELIVERY_NMI: u32 = 0b100 << 8;
const LVT_TIMER_PERIODIC: u32 = 1 << 17;
const ICR_DELIVERY_NMI: u32 = 0b100 << 8;
const ICR_DELIVERY_PENDING: u32 = 1 << 12;
const ICR_ASSERT: u32 = 1 << 14;
const ICR_SHORTHAND_SELF: u32 = 0b01 << 18;
/// The ICR's destination shorthand field (0: no shorthand, ICR_HIGH names
/// the destination).
const ICR_SHORTHAND_MASK: u32 = 0b11 << 18;
/// Timer divide configuration 0b0011: divide the bus clock by 16.
const TIMER_DIVIDE_BY_16: u32 = 0b0011;

/// How the registers are reached.
#[derive(Clone, Copy, Debug)]
pub enum Mode {
    X2Apic,
    XApic { registers: u64 },
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::X2Apic => "x2apic",
            Mode::XApic { .. } => "xapic",
        }
    }
}

static MODE: Once<Mode> = Once::new();
/// APIC timer ticks (bus clock / 16) per millisecond, from the PIT.
static TIMER_TICKS_PER_MS: Once<u32> = Once::new();
/// TSC ticks per millisecond, measured over the same PIT interval.
static TSC_TICKS_PER_MS: Once<u64> = Once::new();

fn mode() -> Mode {
    *MODE.get().expect("apic::init ran")
}

fn read(offset: u32) -> u32 {
    match mode() {
        // SAFETY: x2APIC mode is on, so every APIC register is an MSR at
        // 0x800 + offset/16; the offsets used here are all readable.
        Mode::X2Apic => unsafe { Msr::new(0x800 + offset / 16).read() as u32 },
        // SAFETY: `registers` is the APIC page mapped uncached by init, and
        // `offset` is one of its 32-bit registers.
        Mode::XApic { registers } => unsafe {
            core::ptr::read_volatile((registers + u64::from(offset)) as *const u32)
        },
    }
}

fn write(offset: u32, value: u32) {
    match mode() {
        // SAFETY: as in `read`; writes to these registers have only the
        // APIC effects their callers ask for.
        Mode::X2Apic => unsafe { Msr::new(0x800 + offset / 16).write(u64::from(value)) },
        // SAFETY: as in `read`.
        Mode::XApic { registers } => unsafe {
            core::ptr::write_volatile((registers + u64::from(offset)) as *mut u32, value)
        },
    }
}

/// Sends an IPI: `destination` is the destination APIC ID, `low` the ICR
/// low word. Out of line, so a self-NMI's frame names it (`mode=oops
/// cause=nested`).
///
/// The xAPIC's ICR is two registers, and the write of ICR_LOW sends with
/// whatever ICR_HIGH holds then. An NMI (or any paranoid event) that lands
/// between a writer's two stores and sends an IPI of its own would leave
/// its destination in ICR_HIGH, and the interrupted send would go to the
/// wrong CPU. So every writer here keeps two rules: it leaves ICR_HIGH as
/// it found it, and it returns with no send pending (it waits for its own
/// to leave), so an interrupted writer past its first wait never stores
/// into a busy ICR. A directed send waits, saves ICR_HIGH, writes it,
/// stores ICR_LOW, waits, and puts the saved value back. A send with a
/// destination shorthand (self, all, all but self) names its targets in
/// ICR_LOW, and the APIC does not read ICR_HIGH for it (Linux leaves ICR2
/// alone for these too): it waits, stores ICR_LOW and waits, three
/// accesses against six, and `destination` is ignored. Sends then nest
/// cleanly at any instruction of an outer one, and the fuzzer's preloaded
/// ICR_HIGH (for its one-store self-NMI, see [`prepare_self_nmi_store`])
/// survives them too. x2APIC writes the ICR in one WRMSR and needs none of
/// this.
#[inline(never)]
fn write_icr(destination: u32, low: u32) {
    match mode() {
        Mode::X2Apic => {
            let value = (u64::from(destination) << 32) | u64::from(low);
            x2apic_fence();
            // SAFETY: x2APIC mode; the ICR is one 64-bit MSR (0x830).
            unsafe { Msr::new(0x800 + reg::ICR_LOW / 16).write(value) };
        }
        Mode::XApic { .. } if low & ICR_SHORTHAND_MASK != 0 => {
            wait_for_icr_idle();
            write(reg::ICR_LOW, low);
            wait_for_icr_idle();
        }
        Mode::XApic { .. } => {
            wait_for_icr_idle();
            let interrupted_high = read(reg::ICR_HIGH);
            write(reg::ICR_HIGH, destination << 24);
            write(reg::ICR_LOW, low);
            wait_for_icr_idle();
            write(reg::ICR_HIGH, interrupted_high);
        }
    }
}

/// ICR_HIGH as it is now (xAPIC; in x2APIC mode the ICR is one 64-bit
/// register and this reads its high half), for the test that a nested
/// send leaves it as it found it.
pub fn icr_high() -> u32 {
    match mode() {
        // SAFETY: x2APIC mode; reading the ICR MSR has no side effects.
        Mode::X2Apic => unsafe { (Msr::new(0x800 + reg::ICR_LOW / 16).read() >> 32) as u32 },
        Mode::XApic { .. } => read(reg::ICR_HIGH),
    }
}

/// Waits until the xAPIC's last send has left (ICR delivery status idle).
fn wait_for_icr_idle() {
    while read(reg::ICR_LOW) & ICR_DELIVERY_PENDING != 0 {
        core::hint::spin_loop();
    }
}

/// Masks the PIC, enables the boot CPU's local APIC (x2APIC when
/// `has_x2apic`), records its APIC ID in the CPU's entry area
/// (`gdt::set_apic_id`) before [`init_local`] (re)opens LINT1, sets it up
/// as `init_local` does, and calibrates the timer. Interrupts must be
/// disabled.
pub fn init(has_x2apic: bool) {
    // SAFETY: the standard PIC ports; remapping to 0x20..0x2f first keeps a
    // spurious PIC IRQ off the exception vectors, then every line is masked.
    unsafe {
        let mut pics = pic8259::ChainedPics::new(0x20, 0x28);
        pics.initialize();
        pics.disable();
    }
    let base_value = enable(has_x2apic);
    let mode = if has_x2apic {
        Mode::X2Apic
    } else {
        let registers = memory::map_mmio(PhysAddr::new(base_value & APIC_BASE_ADDRESS_MASK));
        Mode::XApic { registers: registers.as_u64() }
    };
    MODE.call_once(|| mode);
    gdt::set_apic_id(id());
    init_local();
    let (ticks_per_ms, tsc_per_ms) = calibrate_timer();
    TIMER_TICKS_PER_MS.call_once(|| ticks_per_ms);
    TSC_TICKS_PER_MS.call_once(|| tsc_per_ms);
}

/// Turns this CPU's local APIC on in IA32_APIC_BASE (and x2APIC mode when
/// asked); returns the register's old value.
fn enable(x2apic: bool) -> u64 {
    let mut base = Msr::new(IA32_APIC_BASE);
    // SAFETY: IA32_APIC_BASE exists on every x86_64 CPU; setting the global
    // enable bit (and the x2APIC bit only when CPUID reports x2APIC) is the
    // architected way to turn the APIC on.
    unsafe {
        let base_value = base.read();
        let x2apic_bit = if x2apic { APIC_BASE_X2APIC } else { 0 };
        base.write(base_value | APIC_BASE_ENABLE | x2apic_bit);
        base_value
    }
}

/// The per-CPU part of the set-up, on the CPU that runs it: TPR 0, the
/// timer masked and dividing the bus clock by 16 (which it always does, so
/// [`start_timer`] does not write the divider again), LINT0 masked (QEMU
/// feeds the 8259 to every CPU whose LINT0 is open; only the boot CPU's
/// PIC work uses it, through the fuzzer's ExtINT route), LINT1 as NMI
/// (QEMU's `inject-nmi` arrives there), the error vector, the APIC
/// software-enabled, ESR cleared.
fn init_local() {
    write(reg::TPR, 0);
    write(reg::LVT_TIMER, LVT_MASKED | u32::from(TIMER_VECTOR));
    write(reg::TIMER_DIVIDE, TIMER_DIVIDE_BY_16);
    write(reg::LVT_LINT0, LVT_MASKED);
    write(reg::LVT_LINT1, LVT_DELIVERY_NMI);
    write(reg::LVT_ERROR, u32::from(ERROR_VECTOR));
    write(reg::SVR, SVR_APIC_ENABLE | u32::from(SPURIOUS_VECTOR));
    // Clear any error latched before the APIC was set up.
    write(reg::ESR, 0);
    write(reg::ESR, 0);
}

/// Runs `body` with this CPU's LINT1 masked: NMIs from outside (QMP's
/// `inject-nmi`, a storm of them) do not reach this CPU until it returns
/// (an edge on a masked LINT1 is dropped, not held), while NMI IPIs and
/// self-NMIs still arrive. For tests that count this CPU's NMIs exactly;
/// other CPUs keep taking the outside NMIs meanwhile. Nests: the outermost
/// call masks and unmasks.
pub fn with_outside_nmis_held<T>(body: impl FnOnce() -> T) -> T {
    let depth = OUTSIDE_NMIS_HELD.this();
    if depth.fetch_add(1, Ordering::SeqCst) == 0 {
        write(reg::LVT_LINT1, LVT_MASKED | LVT_DELIVERY_NMI);
    }
    let result = body();
    if depth.fetch_sub(1, Ordering::SeqCst) == 1 {
        write(reg::LVT_LINT1, LVT_DELIVERY_NMI);
    }
    result
}

/// [`with_outside_nmis_held`] calls running on each CPU.
static OUTSIDE_NMIS_HELD: PerCpu<AtomicU32> =
    PerCpu::new([const { AtomicU32::new(0) }; extregs_regs::NR_CPUS]);

/// Sets up an AP's local APIC in the mode the boot CPU chose, recording
/// its APIC ID first as [`init`] does ([`init_local`]; the PIC and the
/// calibration are the boot CPU's).
pub fn init_ap() {
    enable(matches!(mode(), Mode::X2Apic));
    gdt::set_apic_id(id());
    init_local();
}

/// Which mode init chose.
pub fn current_mode() -> Mode {
    mode()
}

/// This CPU's APIC ID, read from its ID register.
pub fn id() -> u32 {
    match mode() {
        Mode::X2Apic => read(reg::ID),
        Mode::XApic { .. } => read(reg::ID) >> 24,
    }
}

/// This CPU's APIC ID as `init` (or `init_ap`) recorded it in the CPU's
/// entry area, for the self-NMI senders: no ID-register read on their path.
fn own_id() -> u32 {
    gdt::apic_id_of(this_cpu())
}

/// APIC timer and TSC ticks per millisecond, counted against PIT
/// channel 2 by reading its count, as Linux's `quick_pit_calibrate` does,
/// rather than waiting for its output (as `pit_calibrate_tsc` does, and
/// this did before).
///
/// Under TCG the host may take the vCPU off its core at any point of a
/// count. Waiting for the PIT's output to go high and then reading the
/// APIC timer let such a pause fall between the two, and the count came
/// out skewed (seen: half the timer's rate, which made a 4 s idle last
/// 2 s, and, with both host cores busy, up to 1.6 times it). So each
/// count reads the three clocks together at both ends
/// ([`count_over_pit`]), and two counts must agree within
/// [`CALIBRATION_AGREEMENT`]; when they do not, a third is made, the
/// median of the three (by timer rate) is taken, and a line says so.
///
/// Runs on the boot CPU alone, with interrupts off, before the APs and
/// the fuzzer's foreign timer exist: nothing else drives the PIT or port
/// 0x61 meanwhile (no NMI handler touches either).
fn calibrate_timer() -> (u32, u64) {
    let first = count_over_pit();
    let second = count_over_pit();
    let (low, high) = (first.0.min(second.0), first.0.max(second.0));
    if u64::from(high - low) * CALIBRATION_AGREEMENT.1 <= u64::from(low) * CALIBRATION_AGREEMENT.0 {
        return (low + (high - low) / 2, first.1 / 2 + second.1 / 2);
    }
    let third = count_over_pit();
    let mut counts = [first, second, third];
    counts.sort_unstable_by_key(|count| count.0);
    println!(
        "extregs: apic: calibration counts disagreed ({} and {} timer ticks/ms); a third gave {}, the median is used",
        first.0, second.0, third.0
    );
    counts[1]
}

/// How long one calibration count runs, at least (to the PIT tick).
const CALIBRATION_MS: u64 = 5;

/// How close two calibration counts must be: 2 / 100.
const CALIBRATION_AGREEMENT: (u64, u64) = (2, 100);

/// How many times a count is made again when the PIT's count may have
/// wrapped during it (a pause of 55 ms or more).
const CALIBRATION_WRAP_RETRIES: u32 = 4;

/// The PIT's input clock.
const PIT_HZ: u64 = 1_193_182;

/// One count: APIC timer and TSC ticks per millisecond over at least
/// [`CALIBRATION_MS`] of PIT channel 2 (the timer at the divide-by-16
/// `init_local` set, as in every later count). Channel 2 counts down from
/// 65536 (mode 0, gate high); the count ends at the first reading at least
/// that long after the first, both taken by [`read_clocks`], so a pause
/// elsewhere in the count lengthens all three clocks' spans alike. A pause
/// of 55 ms or more would let the PIT's 16-bit count wrap unseen: its
/// output, which mode 0 raises when the count runs out and leaves high,
/// says so, and such a count is made again (a line says so if every try
/// wrapped, and that count is used).
fn count_over_pit() -> (u32, u64) {
    let mut tries = 0;
    loop {
        let (count, wrapped) = count_over_pit_once();
        tries += 1;
        if !wrapped {
            return count;
        }
        if tries > CALIBRATION_WRAP_RETRIES {
            println!(
                "extregs: apic: every calibration count of {tries} outlasted the PIT's 55 ms; using the last ({} timer ticks/ms)",
                count.0
            );
            return count;
        }
    }
}

/// One count, and whether the PIT's count may have wrapped during it.
fn count_over_pit_once() -> ((u32, u64), bool) {
    write(reg::LVT_TIMER, LVT_MASKED | u32::from(TIMER_VECTOR));
    // Ports 0x61 (gate and OUT of channel 2, speaker), 0x43 (PIT mode)
    // and 0x42 (channel 2 data), as on every PC. Channel 2 drives only the
    // speaker, which stays off (bit 1 clear).
    // SAFETY: nothing else drives these ports meanwhile (`calibrate_timer`).
    let control = unsafe {
        let control = inb(0x61);
        outb(0x61, (control & !0x02) | 0x01); // gate high: count
        outb(0x43, 0b1011_0000); // channel 2, lo/hi byte, mode 0, binary
        outb(0x42, 0); // 0 is 65536: about 55 ms before it wraps
        outb(0x42, 0);
        control
    };
    write(reg::TIMER_INITIAL, u32::MAX);
    // SAFETY: channel 2 was just set to lo/hi access, and nothing else
    // reads it or writes port 0x43 meanwhile (see `calibrate_timer`).
    let clocks = || unsafe { read_clocks() };
    // An 8254 loads a new count at its next clock edge: the first reading
    // may come before it, so it only lets that edge pass.
    let _ = clocks();
    let start = clocks();
    let window = PIT_HZ * CALIBRATION_MS / 1000;
    let end = loop {
        let now = clocks();
        if u64::from(start.pit.wrapping_sub(now.pit)) >= window {
            break now;
        }
        core::hint::spin_loop();
    };
    write(reg::TIMER_INITIAL, 0);
    // SAFETY: as above; the gate goes low again, the speaker stays off.
    let wrapped = unsafe {
        let wrapped = inb(0x61) & 0x20 != 0;
        outb(0x61, control & !0x03);
        wrapped
    };
    let pit_ticks = u64::from(start.pit.wrapping_sub(end.pit));
    let per_ms = |ticks: u64| (ticks * PIT_HZ / (pit_ticks * 1000)).max(1);
    let timer_ticks = u64::from(start.timer - end.timer);
    ((per_ms(timer_ticks).min(u64::from(u32::MAX)) as u32, per_ms(end.tsc - start.tsc)), wrapped)
}

/// The three clocks read together: PIT channel 2's latched count, the APIC
/// timer's current count and the TSC, with nothing but the latch command
/// between the first two.
struct Clocks {
    pit: u16,
    timer: u32,
    tsc: u64,
}

/// Reads [`Clocks`].
///
/// # Safety
///
/// Channel 2 is set to lo/hi-byte access, and nothing else writes port
/// 0x43 or reads port 0x42 until this returns.
unsafe fn read_clocks() -> Clocks {
    // A latch command for channel 2 (0b10 in the channel field, 0b00 in the
    // access field) freezes its count until both bytes are read from 0x42.
    // SAFETY: the caller's contract: no one else reads them, or latches, first.
    unsafe { outb(0x43, 0b1000_0000) };
    let timer = read(reg::TIMER_CURRENT);
    // SAFETY: RDTSC has no side effects.
    let tsc = unsafe { core::arch::x86_64::_rdtsc() };
    // SAFETY: port 0x42 returns the latched count, low byte first in the
    // lo/hi access mode the caller set.
    let (low, high) = unsafe { (inb(0x42), inb(0x42)) };
    Clocks { pit: u16::from_le_bytes([low, high]), timer, tsc }
}

/// TSC ticks per millisecond (PIT-calibrated at boot).
pub fn tsc_ticks_per_ms() -> u64 {
    *TSC_TICKS_PER_MS.get().expect("apic::init ran")
}

/// APIC timer ticks per millisecond (after divide-by-16).
pub fn timer_ticks_per_ms() -> u32 {
    *TIMER_TICKS_PER_MS.get().expect("apic::init ran")
}

/// # Safety
///
/// `port` must be a legacy port this module drives (the PIT, the NMI
/// control port 0x61, the master 8259), whose read has no side effect the
/// caller did not intend, and no other sequence on the same chip may be
/// split by it (I/O ports are shared state: see each caller).
unsafe fn inb(port: u16) -> u8 {
    // SAFETY: per the function contract.
    unsafe { Port::<u8>::new(port).read() }
}

/// # Safety
///
/// As [`inb`], for writes.
unsafe fn outb(port: u16, value: u8) {
    // SAFETY: per the function contract.
    unsafe { Port::<u8>::new(port).write(value) }
}

/// The vector of the foreign timer: PIT channel 0 through the 8259's IRQ 0
/// (remapped to 0x20 at boot), delivered on LINT0 as ExtINT.
pub const FOREIGN_TIMER_VECTOR: u8 = 0x20;
/// LVT delivery mode ExtINT: the 8259 supplies the vector.
const LVT_DELIVERY_EXTINT: u32 = 0b111 << 8;

/// Starts a timer the kernel's own code knows nothing of: PIT channel 0 as a
/// rate generator at `hz`, through the 8259 (IRQ 0 only) and LINT0. It
/// fires wherever IF=1 (the fuzzer's foreign IRQs).
pub fn start_foreign_timer(hz: u32) {
    FOREIGN_TIMER_HZ.store(hz, Ordering::SeqCst);
    program_foreign_timer(hz);
}

/// The foreign timer's rate while it runs (0: stopped), so the PIC NMI
/// source can pause it and start it again.
static FOREIGN_TIMER_HZ: AtomicU32 = AtomicU32::new(0);

fn program_foreign_timer(hz: u32) {
    const PIT_HZ: u32 = 1_193_182;
    let divisor = (PIT_HZ / hz.max(19)).min(0xffff) as u16;
    // SAFETY: the PIT's command and channel 0 ports and the 8259 masks. Channel 0 and the 8259
    // belong to the foreign timer and the PIC NMI source, which take turns (the source pauses
    // the timer; both run with interrupts off or from the fuzzer's one thread).
    unsafe {
        outb(0x43, 0b0011_0100); // channel 0, lobyte/hibyte, mode 2, binary
        outb(0x40, divisor as u8);
        outb(0x40, (divisor >> 8) as u8);
        let mut pics = pic8259::ChainedPics::new(FOREIGN_TIMER_VECTOR, FOREIGN_TIMER_VECTOR + 8);
        pics.write_masks(0xfe, 0xff);
    }
    write(reg::LVT_LINT0, LVT_DELIVERY_EXTINT);
}

/// Stops the foreign timer: LINT0 and the 8259 masked again.
pub fn stop_foreign_timer() {
    FOREIGN_TIMER_HZ.store(0, Ordering::SeqCst);
    x86_64::instructions::interrupts::without_interrupts(mask_foreign_timer);
}

/// The 8259 first, then LINT0: an IRQ 0 the 8259 is already signalling
/// (the CPU has interrupts off) is withdrawn while LINT0 still passes the
/// 8259's output on. The other order leaves the CPU with an interrupt
/// request the 8259 no longer backs, and the INTA that follows `sti` gets
/// the 8259's spurious IRQ 7 (vector 0x27; seen under the fuzzer).
/// Interrupts must be off (an INTA racing the mask gives IRQ 7 too).
fn mask_foreign_timer() {
    // SAFETY: the 8259 mask registers, as in `program_foreign_timer`.
    unsafe { pic8259::ChainedPics::new(FOREIGN_TIMER_VECTOR, FOREIGN_TIMER_VECTOR + 8).disable() };
    write(reg::LVT_LINT0, LVT_MASKED);
}

/// Ends a foreign timer IRQ at the 8259 (an ExtINT needs no local APIC EOI).
pub fn end_foreign_timer_irq() {
    // SAFETY: a non-specific EOI to the master 8259, for the IRQ 0 it
    // delivered.
    unsafe {
        pic8259::ChainedPics::new(FOREIGN_TIMER_VECTOR, FOREIGN_TIMER_VECTOR + 8)
            .notify_end_of_interrupt(FOREIGN_TIMER_VECTOR)
    };
}

/// The master 8259's command and data (mask) ports.
const PIC_MASTER_COMMAND: u16 = 0x20;
/// Also the port ring 3 writes to set off a [PIC NMI](arm_pic_nmi).
pub const PIC_MASTER_DATA: u16 = 0x21;
/// The master 8259's mask with only IRQ 0 open: what ring 3 writes to
/// [`PIC_MASTER_DATA`] to set off an armed PIC NMI.
pub const PIC_MASK_IRQ0_OPEN: u8 = 0xfe;
const PIC_MASK_ALL: u8 = 0xff;
/// OCW3 with the poll bit: the next read of the command port returns
/// `0x80 | irq` for the highest pending IRQ and acknowledges it (the INTA
/// cycle an NMI never runs), or a value without bit 7 when none is pending.
const PIC_OCW3_POLL: u8 = 0x0c;
const PIC_POLL_PENDING: u8 = 0x80;
const PIC_NON_SPECIFIC_EOI: u8 = 0x20;

/// OCW3 "read IRR": later reads of the command port give the pending IRQs.
const PIC_OCW3_READ_IRR: u8 = 0x0a;

/// Arms a real NMI that ring 3 sets off at an instruction of its choosing.
///
/// PIT channel 0 counts down once (mode 0) and raises the 8259's IRQ 0,
/// which stays pending behind its mask (checked in the 8259's IRR); LINT0,
/// the 8259's output, delivers in NMI mode (Linux's
/// `enable_NMI_through_LVT0()`, from the days of the IO-APIC NMI
/// watchdog). The `out` that opens IRQ 0 at the master's mask port
/// ([`PIC_MASTER_DATA`], [`PIC_MASK_IRQ0_OPEN`]) raises the 8259's output,
/// and the CPU takes the NMI soon after (under TCG at the end of the
/// translation block): from user mode, if a user task wrote it (the TSS's
/// I/O bitmap must let that task: `sched::set_user_port_access`). The NMI's handler
/// calls [`acknowledge_pic_nmi`] before anything else: in QEMU's 8259 model
/// every later update of the chip (a write, or any IRQ line it sees move,
/// such as the serial port's) raises the output again, and LINT0 turns each
/// raise into another NMI (a real 8259A would not re-trigger an edge).
///
/// Not every platform routes the PIT to the 8259's IRQ 0 (an HPET in legacy
/// replacement mode takes it), and KVM's in-kernel APIC passes the 8259 on
/// only in ExtINT mode: [`probe_pic_nmi`] tells whether this machine can.
///
/// The foreign timer (the same PIT channel and LINT0) is paused until
/// [`disarm_pic_nmi`]. Interrupts must be off, and nothing else may use the
/// 8259 until then.
pub fn arm_pic_nmi() -> Result<(), &'static str> {
    /// PIT input clocks before OUT rises (N + 1 in mode 0: about 1.7 µs).
    const PIT_COUNT: u8 = 1;
    /// Polls of the 8259's IRR before giving up (each is an I/O exit).
    const IRR_POLLS: u32 = 1_000_000;
    mask_foreign_timer();
    drain_pic_irq0();
    // SAFETY: the PIT's command and channel 0 ports (the foreign timer, their other user, is
    // paused above) and the 8259's command port; interrupts are off, so no handler splits the
    // OCW3/read pairs, and NMI handlers touch the 8259 only while PIC_NMI_ARMED (set later).
    let irq0_pending = unsafe {
        outb(0x43, 0b0011_0000); // channel 0, lobyte/hibyte, mode 0, binary
        outb(0x40, PIT_COUNT);
        outb(0x40, 0);
        outb(PIC_MASTER_COMMAND, PIC_OCW3_READ_IRR);
        (0..IRR_POLLS).any(|_| inb(PIC_MASTER_COMMAND) & 1 != 0)
    };
    if !irq0_pending {
        disarm_pic_nmi();
        return Err("PIT channel 0 never raised the 8259's IRQ 0");
    }
    write(reg::LVT_LINT0, LVT_DELIVERY_NMI);
    Ok(())
}

/// Set while [`probe_pic_nmi`] waits: the NMI handler acknowledges the
/// 8259 early ([`note_probed_pic_nmi`]) and notes whether it raised
/// the NMI.
static PIC_PROBE_ARMED: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);
static PIC_PROBE_SEEN: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// Starts (`true`) or ends a PIC NMI probe window; starting clears what an
/// earlier one saw.
fn set_pic_probe(armed: bool) {
    if armed {
        PIC_PROBE_SEEN.store(false, Ordering::SeqCst);
    }
    PIC_PROBE_ARMED.store(armed, Ordering::SeqCst);
}

/// The NMI handler's first step: inside a probe window, acknowledges the
/// 8259 and notes whether it raised this NMI.
pub fn note_probed_pic_nmi() {
    // Only the boot CPU (LINT0 is open there alone) may take the 8259's
    // NMI: an AP's NMI from outside must not acknowledge the PIC or count
    // as the probe's.
    if crate::arch::percpu::this_cpu() != 0 {
        return;
    }
    if PIC_PROBE_ARMED.load(Ordering::SeqCst) && acknowledge_pic_nmi() {
        PIC_PROBE_SEEN.store(true, Ordering::SeqCst);
        PIC_PROBE_ARMED.store(false, Ordering::SeqCst);
    }
}

/// Can this machine deliver a [PIC NMI](arm_pic_nmi)? Three times: arms
/// one, opens IRQ 0 from the kernel, and waits for an NMI whose handler
/// finds the 8259 raising it (the kernel's NMI handler acknowledges it
/// early while the probe window is open, so an NMI from elsewhere,
/// a storm's, does not count). Interrupts must be off, and no event hook
/// may claim NMIs meanwhile.
pub fn probe_pic_nmi() -> Result<(), &'static str> {
    const SPINS: u32 = 10_000_000;
    const TRIES: u32 = 3;
    for _ in 0..TRIES {
        arm_pic_nmi()?;
        set_pic_probe(true);
        // SAFETY: the 8259's mask port, armed above; interrupts are off and nothing but the NMI
        // handler's acknowledgement uses the 8259 until `disarm_pic_nmi` below.
        unsafe { outb(PIC_MASTER_DATA, PIC_MASK_IRQ0_OPEN) };
        let seen = (0..SPINS).any(|_| {
            core::hint::spin_loop();
            PIC_PROBE_SEEN.load(Ordering::SeqCst)
        });
        set_pic_probe(false);
        disarm_pic_nmi();
        if !seen {
            return Err("opening the 8259's IRQ 0 with LINT0 in NMI mode sent no NMI");
        }
    }
    Ok(())
}

/// Was this NMI the armed PIC NMI (the 8259 had IRQ 0 pending)? Acknowledges
/// it at the 8259 (poll, EOI) and masks IRQ 0 again, so no later update of
/// the 8259 sends another NMI.
///
/// Call only between [`arm_pic_nmi`] and [`disarm_pic_nmi`], early in
/// an NMI's handler (or with interrupts off): it consumes an IRQ.
pub fn acknowledge_pic_nmi() -> bool {
    // SAFETY: the master 8259's ports: a poll (which acknowledges what it reports), an EOI for
    // it, the mask. Armed, the 8259 is this source's; nothing the NMI interrupted was in an
    // 8259 sequence (arm and disarm run before and after the window, with interrupts off).
    unsafe {
        outb(PIC_MASTER_COMMAND, PIC_OCW3_POLL);
        let poll = inb(PIC_MASTER_COMMAND);
        let irq0 = poll & PIC_POLL_PENDING != 0 && poll & 0x07 == 0;
        if poll & PIC_POLL_PENDING != 0 {
            outb(PIC_MASTER_COMMAND, PIC_NON_SPECIFIC_EOI);
        }
        outb(PIC_MASTER_DATA, PIC_MASK_ALL);
        irq0
    }
}

/// Ends what [`arm_pic_nmi`] set up, whether or not the NMI came: LINT0
/// masked, IRQ 0 drained and masked, the foreign timer running again if it
/// was. Interrupts must be off.
pub fn disarm_pic_nmi() {
    write(reg::LVT_LINT0, LVT_MASKED);
    drain_pic_irq0();
    let hz = FOREIGN_TIMER_HZ.load(Ordering::SeqCst);
    if hz > 0 {
        program_foreign_timer(hz);
    }
}

/// Clears a pending IRQ 0 at the 8259 with LINT0 masked (nothing is
/// delivered): open it, poll (the acknowledgement), EOI, mask everything.
/// Interrupts must be off.
fn drain_pic_irq0() {
    // SAFETY: the master 8259's mask register; LINT0 is masked (callers), so opening IRQ 0 raises
    // nothing the CPU sees; `acknowledge_pic_nmi` then polls, EOIs and masks.
    unsafe { outb(PIC_MASTER_DATA, PIC_MASK_IRQ0_OPEN) };
    acknowledge_pic_nmi();
}

/// How the timer fires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimerMode {
    OneShot,
    Periodic,
}

/// Starts the timer on [`TIMER_VECTOR`] with `ticks` (divide-by-16 ticks:
/// the divider `init_local` set, which nothing changes).
pub fn start_timer(mode: TimerMode, ticks: u32) {
    let periodic = if mode == TimerMode::Periodic { LVT_TIMER_PERIODIC } else { 0 };
    write(reg::LVT_TIMER, periodic | u32::from(TIMER_VECTOR));
    write(reg::TIMER_INITIAL, ticks.max(1));
}

/// Starts the timer with a period (or delay) in microseconds.
pub fn start_timer_us(mode: TimerMode, microseconds: u32) {
    let ticks = u64::from(timer_ticks_per_ms()) * u64::from(microseconds) / 1000;
    start_timer(mode, ticks.clamp(1, u64::from(u32::MAX)) as u32);
}

/// The timer's current count (0 once a one-shot count has run out).
pub fn timer_current() -> u32 {
    read(reg::TIMER_CURRENT)
}

/// Stops and masks the timer.
pub fn stop_timer() {
    write(reg::LVT_TIMER, LVT_MASKED | u32::from(TIMER_VECTOR));
    write(reg::TIMER_INITIAL, 0);
}

/// Signals end of interrupt for the highest-priority in-service vector.
pub fn eoi() {
    write(reg::EOI, 0);
}

/// Prints this CPU's local APIC interrupt state: the vectors in service
/// (ISR) and pending (IRR), the timer's LVT and count, for a report of an
/// interrupt that never came.
pub fn print_interrupt_state() {
    let vectors = |base: u32| {
        let mut list = [0u8; 256];
        let mut count = 0;
        for vector in 0..=255u8 {
            if read(base + 0x10 * u32::from(vector / 32)) & (1 << (vector % 32)) != 0 {
                list[count] = vector;
                count += 1;
            }
        }
        (list, count)
    };
    let (in_service, in_service_count) = vectors(reg::ISR);
    let (pending, pending_count) = vectors(reg::IRR);
    println!(
        "extregs: apic: CPU {} in service {:x?}, pending {:x?}, LVT timer {:#x}, timer count {}",
        crate::arch::percpu::this_cpu(),
        &in_service[..in_service_count],
        &pending[..pending_count],
        read(reg::LVT_TIMER),
        read(reg::TIMER_CURRENT)
    );
}

/// Is `vector` pending (its IRR bit set: accepted, not yet delivered)?
pub fn pending(vector: u8) -> bool {
    let word = read(reg::IRR + 0x10 * u32::from(vector / 32));
    word & (1 << (vector % 32)) != 0
}

/// Is `vector` in service (its ISR bit set)?
pub fn in_service(vector: u8) -> bool {
    let word = read(reg::ISR + 0x10 * u32::from(vector / 32));
    word & (1 << (vector % 32)) != 0
}

/// Sends a fixed IPI on `vector` to this CPU (destination shorthand self).
pub fn send_self_ipi(vector: u8) {
    write_icr(0, ICR_SHORTHAND_SELF | ICR_ASSERT | u32::from(vector));
}

/// Sends a fixed IPI on `vector` to the CPU with `apic_id`.
pub fn send_ipi(apic_id: u32, vector: u8) {
    write_icr(apic_id, ICR_ASSERT | u32::from(vector));
}

/// Sends an NMI to the CPU with `apic_id` (an NMI IPI).
pub fn send_nmi(apic_id: u32) {
    write_icr(apic_id, ICR_DELIVERY_NMI | ICR_ASSERT);
}

/// ICR destination shorthands: every CPU, every CPU but the sender.
const ICR_SHORTHAND_ALL: u32 = 0b10 << 18;
const ICR_SHORTHAND_ALL_BUT_SELF: u32 = 0b11 << 18;

/// Sends an NMI to every CPU but this one (Linux's
/// `apic->send_IPI_allbutself(NMI_VECTOR)`).
pub fn send_nmi_all_but_self() {
    write_icr(0, ICR_SHORTHAND_ALL_BUT_SELF | ICR_DELIVERY_NMI | ICR_ASSERT);
}

/// Sends an NMI to every CPU, this one included.
pub fn send_nmi_all() {
    write_icr(0, ICR_SHORTHAND_ALL | ICR_DELIVERY_NMI | ICR_ASSERT);
}

/// ICR delivery modes of the INIT-SIPI-SIPI sequence, and level trigger.
const ICR_DELIVERY_INIT: u32 = 0b101 << 8;
const ICR_DELIVERY_STARTUP: u32 = 0b110 << 8;
const ICR_LEVEL_TRIGGER: u32 = 1 << 15;

/// INIT to the CPU with `apic_id` (asserted, then deasserted, as Linux
/// sends it): the CPU resets and waits for a STARTUP.
pub fn send_init(apic_id: u32) {
    write_icr(apic_id, ICR_DELIVERY_INIT | ICR_LEVEL_TRIGGER | ICR_ASSERT);
    write_icr(apic_id, ICR_DELIVERY_INIT | ICR_LEVEL_TRIGGER);
}

/// STARTUP (SIPI) to the CPU with `apic_id`: it starts in real mode at
/// `vector * 4096`.
pub fn send_startup(apic_id: u32, vector: u8) {
    write_icr(apic_id, ICR_DELIVERY_STARTUP | u32::from(vector));
}

/// In x2APIC mode the ICR write is a WRMSR, which does not order the
/// stores before it (Linux's `weak_wrmsr_fence`): the target must see what
/// the sender stored before the send (an AP the trampoline's data block, a
/// reschedule IPI's target the run queue and the tick flag, a shootdown's
/// the request).
fn x2apic_fence() {
    if matches!(mode(), Mode::X2Apic) {
        // SAFETY: fences only order memory accesses.
        unsafe { core::arch::asm!("mfence", "lfence", options(nostack, preserves_flags)) };
    }
}

/// Sends an NMI to this CPU through the ICR (the self shorthand is not
/// valid for NMIs, so the destination is this CPU's own APIC ID).
pub fn send_self_nmi() {
    write_icr(own_id(), ICR_DELIVERY_NMI | ICR_ASSERT);
}

/// The operands of a raw self-NMI store, for code that must send one with
/// a single instruction (the fuzzer's trampolines).
#[derive(Clone, Copy, Debug)]
pub enum SelfNmiStore {
    /// `movl value, (icr_low)` (the destination is already in ICR high).
    XApic { icr_low: u64, value: u32 },
    /// `wrmsr` with ECX = `msr`, EDX:EAX = `high`:`low`.
    X2Apic { msr: u32, high: u32, low: u32 },
}

/// Sets up everything but the final store of a self-NMI on this CPU (in
/// xAPIC mode: this CPU's ICR high names it; every other send puts ICR
/// high back as it found it). Unlike those sends it leaves its value in
/// ICR_HIGH, so it must not run inside another sender's window. Its
/// callers never do: the selftests call it from task context or in an
/// idle AP's NMI, and the fuzzer raises its nested levels only from the
/// handlers of its own events, none of which lands inside a send.
pub fn prepare_self_nmi_store() -> SelfNmiStore {
    let store = self_nmi_store();
    if let Mode::XApic { .. } = mode() {
        write(reg::ICR_HIGH, own_id() << 24);
    }
    store
}

/// The operands of a self-NMI store on this CPU, without setting anything
/// up (see [`prepare_self_nmi_store`]).
pub fn self_nmi_store() -> SelfNmiStore {
    let low = ICR_DELIVERY_NMI | ICR_ASSERT;
    match mode() {
        Mode::X2Apic => {
            SelfNmiStore::X2Apic { msr: 0x800 + reg::ICR_LOW / 16, high: own_id(), low }
        }
        Mode::XApic { registers } => {
            SelfNmiStore::XApic { icr_low: registers + u64::from(reg::ICR_LOW), value: low }
        }
    }
}
