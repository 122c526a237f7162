//! What a paranoid entry (NMI, #DB, #MC, #DF) saves beyond the extension,
//! because it can land on *any* instruction, including the first ones of
//! another entry:
//!
//! * **DR7** is saved and cleared first thing and restored last (Linux's
//!   `local_db_save`/`local_db_restore`), so no hardware breakpoint fires
//!   inside an NMI or #DB handler. A #DB inside them would re-enter the #DB
//!   IST, and its IRETQ would unblock NMIs in the middle of an NMI.
//! * **DR6** is read and reset by the #DB entry (Linux's
//!   `debug_read_clear_dr6`), so a stale condition never looks like a new
//!   one. The value is kept for the handler ([`debug_status`]).
//! * **The #DB IST pointer** moves down while a #DB runs
//!   ([`gdt::DEBUG_IST_SHIFT`]), so a #DB raised inside the #DB handler
//!   lands below the running frame instead of over it.
//! * **CR2** is saved on entry and written back on exit when the handler
//!   changed it (Linux's `nmi_cr2`): a paranoid event that hits a #PF entry
//!   before it read CR2, and takes a #PF itself, must not change the
//!   address the interrupted #PF handler is about to read.
//!
//! None of this lives in the extension: it is kept in the Rust frame of
//! the paranoid entry (by value, like Linux's `irqentry_state_t`), so the
//! extension stays 8 bytes and the fast path is unchanged.

use crate::arch::idt::DEBUG_VECTOR;
use crate::arch::percpu::PerCpu;
use crate::arch::{entry_text, gdt};
use core::sync::atomic::{AtomicU64, Ordering};
use extregs_regs::NR_CPUS;
use x86_64::registers::control::Cr2;

/// DR7's value with every breakpoint disabled (bit 10 reads as one).
pub const DR7_RESET: u64 = 0x400;
/// DR6's value with no debug condition recorded (the reserved bits read as
/// one, RTM and BLD read as one when no such condition happened).
pub const DR6_RESET: u64 = 0xffff_0ff0;

/// DR6 of the innermost running #DB, as its entry found it.
static DEBUG_STATUS: PerCpu<AtomicU64> = PerCpu::new([const { AtomicU64::new(0) }; NR_CPUS]);

/// What a paranoid entry saved, to put back on its exit.
pub struct ParanoidState {
    dr7: u64,
    cr2: u64,
    /// #DB only: the DR6 of the #DB this one interrupted (if any).
    outer_debug_status: Option<u64>,
}

fn read_dr7() -> u64 {
    let value: u64;
    // SAFETY: reading DR7 in ring 0 has no side effects. Not `nomem`:
    // like Linux's __FORCE_ORDER on DR7, a compiler barrier, so no memory
    // access moves across the DR7 access.
    unsafe { core::arch::asm!("mov {}, dr7", out(reg) value, options(nostack, preserves_flags)) };
    value
}

/// # Safety
///
/// `value` must be a DR7 the kernel saved, or [`DR7_RESET`].
unsafe fn write_dr7(value: u64) {
    // SAFETY: per the contract, DR0-3 still hold the addresses the saved value was armed with
    // (nothing writes them while the paranoid handler runs). Not `nomem`: a compiler barrier,
    // so no access moves into or out of the region where breakpoints are off.
    unsafe { core::arch::asm!("mov dr7, {}", in(reg) value, options(nostack, preserves_flags)) };
}

fn read_and_reset_dr6() -> u64 {
    let value: u64;
    // SAFETY: DR6 only records debug conditions; writing the reset value
    // clears them and changes nothing else.
    unsafe {
        core::arch::asm!(
            "mov {value}, dr6",
            "mov dr6, {reset}",
            value = out(reg) value,
            reset = in(reg) DR6_RESET,
            options(nostack, preserves_flags)
        )
    };
    value
}

/// The first thing every paranoid entry does (before the generic entry,
/// whose code is ordinary code a breakpoint could be set on).
#[inline(always)]
pub fn enter(vector: u8) -> ParanoidState {
    let dr7 = read_dr7();
    if dr7 != DR7_RESET {
        // SAFETY: disables every breakpoint; `exit` writes `dr7` back.
        unsafe { write_dr7(DR7_RESET) };
    }
    let outer_debug_status = (vector == DEBUG_VECTOR).then(|| {
        let status = read_and_reset_dr6();
        // SAFETY: DR7 is clear, so no breakpoint can fire between the CPU
        // reading the IST pointer and this shift; `exit` undoes it.
        unsafe { gdt::shift_debug_ist(gdt::DEBUG_IST_SHIFT as i64) };
        DEBUG_STATUS.this().swap(status, Ordering::Relaxed)
    });
    let cr2 = Cr2::read_raw();
    ParanoidState { dr7, cr2, outer_debug_status }
}

/// The last thing every returning paranoid entry does.
#[inline(always)]
pub fn exit(state: ParanoidState) {
    if Cr2::read_raw() != state.cr2 {
        // SAFETY: CR2 only reports fault addresses; this puts back the one
        // the interrupted context may still read.
        unsafe {
            core::arch::asm!("mov cr2, {}", in(reg) state.cr2, options(nostack, preserves_flags))
        };
    }
    if let Some(outer) = state.outer_debug_status {
        DEBUG_STATUS.this().store(outer, Ordering::Relaxed);
        // SAFETY: undoes this #DB's shift in `enter`.
        unsafe { gdt::shift_debug_ist(-(gdt::DEBUG_IST_SHIFT as i64)) };
    }
    if state.dr7 != DR7_RESET {
        // SAFETY: the value this entry saved.
        unsafe { write_dr7(state.dr7) };
    }
}

/// DR6 of the #DB being handled, as its entry found it (the live DR6 was
/// reset by then).
pub fn debug_status() -> u64 {
    DEBUG_STATUS.this().load(Ordering::Relaxed)
}

/// DR7 as it is now (breakpoints armed outside any paranoid handler).
pub fn dr7() -> u64 {
    read_dr7()
}

/// Disables every hardware breakpoint (outside paranoid handlers: inside
/// one, the entry's exit would re-arm the saved DR7).
pub fn disarm_breakpoints() {
    // SAFETY: DR7_RESET enables no breakpoint.
    unsafe { write_dr7(DR7_RESET) };
}

/// Resets DR6, for tests whose single steps were taken by another gate
/// than the #DB entry (which would have reset it).
pub fn reset_debug_status() {
    let _ = read_and_reset_dr6();
}

/// Why a hardware breakpoint at `address` is refused, if it is: the entry
/// text, the NMI state byte, the IST stacks and the TSS are what the
/// paranoid entries touch before they clear DR7 (Linux refuses the same
/// for its cpu_entry_area and entry text). A data breakpoint on the NMI
/// nesting state would raise a #DB inside the NMI stub before it copied
/// its frame, and that #DB's IRETQ would unblock NMIs. (Debug registers
/// are per CPU, and each CPU's entries touch only its own stacks and TSS,
/// so this CPU's are what count.)
pub fn breakpoint_refused(address: u64) -> Option<&'static str> {
    let nmi_state = gdt::nmi_nesting_state_address();
    if entry_text::contains(address) {
        Some("the entry text")
    } else if in_noinstr_function(address) {
        Some("Rust entry code (runs before DR7 is cleared, or restores it)")
    } else if address / 8 == nmi_state / 8 {
        Some("the NMI entry state")
    } else if gdt::ist_stack_of(address).is_some() || gdt::ist_guard_of(address).is_some() {
        Some("an IST stack")
    } else if gdt::tss_range().contains(&address) {
        Some("the TSS")
    } else {
        None
    }
}

/// The Rust functions a paranoid entry runs before [`enter`] cleared DR7
/// and moved the #DB stack, or after [`exit`] restored them, and what they
/// call on the way (Linux's `noinstr` text): by symbol-name prefix of the
/// function holding the address (demangled, without the hash).
const NOINSTR_PREFIXES: &[&str] = &[
    "extregs_exception_entry",
    "kernel::dispatch::",
    "kernel::entry::",
    "kernel::arch::hook_slot::",
    "kernel::arch::irqflags::",
    "kernel::arch::pks::",
    "kernel::arch::gdt::",
    "kernel::arch::percpu::",
    "<kernel::arch::percpu::",
    "kernel::arch::serial::",
    "extregs_entry::",
    "extregs_regs::",
    "extregs_entry_asm::",
];

/// Is `address` inside one of the [`NOINSTR_PREFIXES`] functions? (Without
/// a symbol table, every text address counts: refuse rather than guess.)
fn in_noinstr_function(address: u64) -> bool {
    let Some(symbol) = crate::debug::symbols::lookup(address) else {
        return !crate::debug::symbols::available();
    };
    // A found function whose name does not decode is refused, as an
    // address without a table is: never guess.
    let mut name = extregs_ksyms::Name::new();
    if !symbol.name(&mut name) {
        return true;
    }
    let name = name.as_str();
    // A method demangles as `<kernel::…::Type>::method`, a trait
    // implementation as `<kernel::…::Type as Trait>::method`: the prefix is
    // the type's path.
    let name = name.strip_prefix('<').unwrap_or(name);
    NOINSTR_PREFIXES.iter().any(|prefix| name.starts_with(prefix))
}

/// Arms DR0 as an execute breakpoint at `address`, refusing what
/// [`breakpoint_refused`] names.
pub fn set_execute_breakpoint(address: u64) -> Result<(), &'static str> {
    if let Some(why) = breakpoint_refused(address) {
        return Err(why);
    }
    arm_execute_breakpoint(address);
    Ok(())
}

/// Arms DR0 as an execute breakpoint at `address`, without the check: for
/// the selftests that put a breakpoint on an entry stub on purpose.
pub fn arm_execute_breakpoint(address: u64) {
    // SAFETY: DR0 holds an address only; DR7 = L0 with RW0 = LEN0 = 0
    // arms it as an instruction breakpoint, whose #DB the caller handles.
    unsafe {
        core::arch::asm!("mov dr0, {}", in(reg) address, options(nomem, nostack, preserves_flags));
        write_dr7(DR7_RESET | 1);
    }
}
