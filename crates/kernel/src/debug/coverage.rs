//! Interrupt-point coverage of the entry text: which instructions of
//! `entry_64.S` (every stub, the common paths, the NMI entry, with the
//! `calling.S` macros expanded in them) a foreign event interrupted.
//!
//! One bit per byte of entry text and CPU, set at the interrupted RIP of
//! every foreign NMI that landed there on that CPU: `hit` is the number of
//! distinct instructions interrupted on any CPU. Each CPU's bitmap is
//! written only by that CPU's NMI handlers, which never nest (a nested NMI
//! is latched, not handled); the bit updates are atomic all the same, and
//! the reader (`print_hits`, after the run) needs no more.

use crate::arch::percpu::PerCpu;
use core::sync::atomic::{AtomicU64, Ordering};
use extregs_regs::NR_CPUS;

/// One bit per byte of entry text (the text is well under this).
const MAX_TEXT_BYTES: usize = 64 * 1024;
const WORDS: usize = MAX_TEXT_BYTES / 64;
static HIT: PerCpu<[AtomicU64; WORDS]> =
    PerCpu::new([const { [const { AtomicU64::new(0) }; WORDS] }; NR_CPUS]);

/// Notes that an event interrupted `ip` on this CPU (ignored outside the
/// entry text).
pub fn record(ip: u64) {
    let text = extregs_entry_asm::entry_text_range();
    if !text.contains(&ip) {
        return;
    }
    let offset = (ip - text.start) as usize;
    if offset < MAX_TEXT_BYTES {
        HIT.this()[offset / 64].fetch_or(1 << (offset % 64), Ordering::Relaxed);
    }
}

/// The union of every CPU's bits in word `index`.
fn union_word(index: usize) -> u64 {
    (0..NR_CPUS).fold(0, |bits, cpu| bits | HIT.of(cpu)[index].load(Ordering::Relaxed))
}

/// Distinct entry-text instructions a foreign event interrupted, on any CPU.
pub fn hit_count() -> u64 {
    (0..WORDS).map(|index| u64::from(union_word(index).count_ones())).sum()
}

/// The exception vectors something in this kernel raises, and who:
/// #DE, #UD, #GP and #PF (the fuzzer, the selftests, `mode=oops`), #DB
/// (breakpoints and single steps), the NMI (QMP, IPIs, the self-NMI), #BP
/// (int3), #DF (`cause=stack-overflow`) and #MC (`cause=machine-check`).
/// Every external vector (32–255) is raised as well: the selftest
/// `irq_stubs_report_their_vectors` sends a self-IPI on each one without
/// a handler, and the others are the APIC's own. The stubs of the other
/// exceptions (#OF, #BR, #NM, #TS, #NP, #SS, #MF, #AC, #XM, the reserved
/// and virtualisation vectors), and the compat SYSCALL entry, are on no
/// path anything here takes.
pub const RAISED_EXCEPTIONS: [u8; 9] = [
    0,
    crate::arch::idt::DEBUG_VECTOR,
    extregs_regs::NMI_VECTOR,
    crate::arch::idt::BREAKPOINT_VECTOR,
    crate::arch::idt::INVALID_OPCODE_VECTOR,
    crate::arch::idt::DOUBLE_FAULT_VECTOR,
    crate::arch::idt::GENERAL_PROTECTION_VECTOR,
    crate::arch::idt::PAGE_FAULT_VECTOR,
    crate::arch::idt::MACHINE_CHECK_VECTOR,
];

/// Prints `COVERAGE_NOT_RAISED start-end,…`: the entry-text offset ranges
/// of the stubs of exceptions nothing raises ([`RAISED_EXCEPTIONS`]) and of
/// the compat SYSCALL entry, for the runner, which reports them apart
/// from the reachable instructions (and flags a hit in one as a wrong
/// claim). Nothing is printed for a stub without a symbol.
fn print_not_raised() {
    let text = extregs_entry_asm::entry_text_range();
    let not_raised = (0..extregs_regs::FIRST_EXTERNAL_VECTOR)
        .filter(|vector| !RAISED_EXCEPTIONS.contains(vector))
        .map(crate::arch::idt::stub_address)
        .chain([extregs_entry_asm::compat_syscall_entry_address()]);
    print!("COVERAGE_NOT_RAISED ");
    let mut first = true;
    for range in not_raised.filter_map(crate::debug::symbols::function_range) {
        print!(
            "{}{:x}-{:x}",
            if first { "" } else { "," },
            range.start - text.start,
            range.end - text.start
        );
        first = false;
    }
    println!();
}

/// Prints `COVERAGE_NMI_BLOCKED start-end,…`: the entry-text offset ranges
/// of the NMI stub that run with NMIs blocked (all of it but
/// [`extregs_entry_asm::nmi_interruptible_range`]), where no NMI can land,
/// for the runner, which reports them apart as well.
fn print_nmi_blocked() {
    let text = extregs_entry_asm::entry_text_range();
    let window = extregs_entry_asm::nmi_interruptible_range();
    print!("COVERAGE_NMI_BLOCKED ");
    if let Some(stub) = crate::debug::symbols::function_range(crate::arch::idt::stub_address(
        extregs_regs::NMI_VECTOR,
    )) {
        print!(
            "{:x}-{:x},{:x}-{:x}",
            stub.start - text.start,
            window.start - text.start,
            window.end - text.start,
            stub.end - text.start
        );
    }
    println!();
}

/// Prints the stubs nothing raises (`COVERAGE_NOT_RAISED`) and the NMI
/// stub's blocked part (`COVERAGE_NMI_BLOCKED`), then
/// `COVERAGE_HIT off,off,…`: the entry-text offsets a foreign event
/// interrupted on any CPU, for the runner, which decodes the kernel ELF's
/// entry text into instructions and reports hit/total and the points never
/// hit; then, with more than one CPU online, `COVERAGE_HIT_CPU k off,…`
/// for each CPU k.
pub fn print_hits() {
    print_not_raised();
    print_nmi_blocked();
    print!("COVERAGE_HIT ");
    print_offsets(union_word);
    if crate::arch::smp::cpus_online() > 1 {
        for (cpu, _) in crate::arch::smp::online_cpus() {
            print!("COVERAGE_HIT_CPU {cpu} ");
            print_offsets(|index| HIT.of(cpu)[index].load(Ordering::Relaxed));
        }
    }
}

/// Prints the offsets of the bits `word(index)` gives, and ends the line.
fn print_offsets(word: impl Fn(usize) -> u64) {
    let mut first = true;
    for index in 0..WORDS {
        let mut bits = word(index);
        while bits != 0 {
            let bit = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            print!("{}{:x}", if first { "" } else { "," }, index * 64 + bit);
            first = false;
        }
    }
    println!();
}

/// The size of the entry text in bytes (the denominator the runner's
/// decoder refines into instructions).
pub fn text_bytes() -> u64 {
    let text = extregs_entry_asm::entry_text_range();
    text.end - text.start
}
