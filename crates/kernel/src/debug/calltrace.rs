//! `Call Trace:` in Linux's format, after the registers of every oops and
//! every fuzz VIOLATION (docs/call-traces.md).
//!
//! The kernel is built with frame pointers, and every entry stub sets RBP
//! to `&PtRegs | ENCODED_FRAME_TAG` before it calls into Rust, so walking
//! RBP up from any handler (`extregs_unwind`) finds each interrupt frame
//! crossed. The trace is in Linux's sections: ` <NMI>`, the exception
//! stacks ` <#DB>`, ` <#MC>`, ` <#DF>`, ` <IRQ>` and ` <TASK>`, each closed
//! by its ` </...>`. extregs has no IRQ stacks: a hard interrupt runs on
//! the stack it interrupted, so `<IRQ>` is the part of a task stack below
//! the outermost frame whose extension records an external vector and a
//! handler still running (each entry stub records its vector there, and
//! the dispatcher marks a hard interrupt done before its exit work).
//!
//! Every return address of the walk prints as ` symbol+0xoff/0xsize`. As
//! Linux's `show_trace_log_lvl` does, every other word of the stacks that
//! holds a kernel text address prints too, as ` ? symbol+0xoff/0xsize`:
//! not reliable (a stale return address, an argument), but after a broken
//! chain they are what is left of the callers. An interrupt frame prints
//! where the walk meets it: the interrupted registers as Linux prints a
//! nested `pt_regs`, then that frame's extension (saved PKRS with rights,
//! generic state with the vector). A walk that ends early (a broken chain)
//! says why in a ` [call trace stopped: ...]` line.

use crate::arch::{entry_text, gdt};
use crate::debug::{show_regs, symbols};
use crate::sched;
use extregs_regs::{ExtendedPtRegs, PtRegs};
use extregs_unwind::{Entry, EntryText, Line, Memory, Stack, StackKind, Stop, Unwinder};

/// Reads the kernel's stacks. The unwinder only asks for aligned words
/// inside the [`Stack`]s it was given, all of them mapped kernel stacks.
struct KernelStacks;

impl Memory for KernelStacks {
    fn read_word(&self, address: u64) -> u64 {
        let word = core::ptr::with_exposed_provenance::<u64>(address as usize);
        // SAFETY: an aligned, mapped word of a task or IST stack (`stacks()`); provenance exposed
        // by the stack statics' `as u64` casts (the boot stack is in no Rust allocation). Aliasing:
        // one CPU, the frames' owners suspended below us; a volatile read of any u64, no writes.
        unsafe { word.read_volatile() }
    }
}

/// The stacks a trace may cross: the running task's (and one a switch in
/// flight is leaving), the four IST stacks.
fn stacks() -> ([Stack; 6], usize) {
    let mut stacks = [Stack { kind: StackKind::Task, start: 0, end: 0 }; 6];
    let mut count = 0;
    for range in sched::current_stacks().into_iter().flatten() {
        stacks[count] = Stack { kind: StackKind::Task, start: range.start, end: range.end };
        count += 1;
    }
    for (index, kind) in [
        (gdt::NMI_IST_INDEX, StackKind::Nmi),
        (gdt::DEBUG_IST_INDEX, StackKind::Debug),
        (gdt::MACHINE_CHECK_IST_INDEX, StackKind::MachineCheck),
        (gdt::DOUBLE_FAULT_IST_INDEX, StackKind::DoubleFault),
    ] {
        let range = gdt::ist_stack_range(index);
        stacks[count] = Stack { kind, start: range.start, end: range.end };
        count += 1;
    }
    (stacks, count)
}

/// The trace of the context `regs` interrupted: its callers, from RBP,
/// never below `regs` itself (the printer's own frames are there), the
/// stack scanned from the interrupted RSP. A user frame has no kernel
/// callers: nothing is printed (as in Linux).
pub fn print_call_trace(regs: &PtRegs) {
    if regs.user_mode() {
        return;
    }
    let floor = regs as *const PtRegs as u64 + core::mem::size_of::<PtRegs>() as u64;
    // The interrupted context may be on another stack than `regs` (an IST
    // event that interrupted a task): the walk may go there once.
    print_from(regs.bp, floor, regs.sp, true);
}

/// The trace of the code calling this: its own callers, every interrupt
/// frame below them included (a fuzz violation, found in a handler or
/// after a return).
pub fn print_call_trace_here() {
    let bp: u64;
    // SAFETY: reads RBP, which the kernel's frame-pointer build keeps as this function's frame.
    unsafe { core::arch::asm!("mov {}, rbp", out(reg) bp, options(nomem, nostack)) };
    print_from(bp, bp, bp, false);
}

/// The function a return (or any text) address belongs to, looked up at
/// the byte before it, as Linux's `%pB` does: a return address may be just
/// past its function when a call is the function's last instruction.
fn text_symbol(address: u64) -> Option<symbols::Symbol> {
    if !symbols::is_text(address.wrapping_sub(1)) {
        return None;
    }
    let mut symbol = symbols::lookup(address.wrapping_sub(1))?;
    symbol.offset += 1;
    Some(symbol)
}

fn print_from(bp: u64, floor: u64, start_sp: u64, from_interrupted_context: bool) {
    let (stacks, count) = stacks();
    println!("Call Trace:");
    let mut walk = Unwinder::new(&KernelStacks, &stacks[..count], bp, floor);
    for range in entry_text::ranges() {
        walk = walk.with_entry_text(EntryText { start: range.start, end: range.end });
    }
    if from_interrupted_context {
        walk = walk.from_interrupted_context(start_sp);
    }
    let is_text = |word: u64| text_symbol(word).is_some();
    walk.trace(start_sp, is_text, |line| match line {
        Line::Open(section) => println!(" <{}>", section.marker()),
        Line::Close(section) => println!(" </{}>", section.marker()),
        Line::Walk(Entry::Return { address, .. }) => match text_symbol(address) {
            Some(symbol) => println!(" {symbol}"),
            None => println!(" {address:#018x}"),
        },
        Line::Walk(Entry::Interrupt { extension, .. }) => {
            let frame = core::ptr::with_exposed_provenance::<ExtendedPtRegs>(extension as usize);
            // SAFETY: the walk checked the frame lies, aligned, in a known stack above the
            // printer's frames; all integer fields, so any bytes are valid, and the suspended
            // handlers whose `&mut PtRegs` covers it never run while this reads.
            unsafe { show_regs::show_nested_regs(&*frame) };
        }
        Line::Walk(Entry::Stop(Stop::Bottom | Stop::UserMode)) => {}
        Line::Walk(Entry::Stop(why)) => println!(" [call trace stopped: {}]", describe(why)),
        Line::Unreliable { address, .. } => {
            if let Some(symbol) = text_symbol(address) {
                println!(" ? {symbol}");
            }
        }
        Line::Omitted(count) => {
            println!(" [{count} more text addresses on the stacks not shown]");
        }
    });
}

fn describe(stop: Stop) -> &'static str {
    match stop {
        Stop::Bottom => "bottom",
        Stop::UserMode => "user mode",
        Stop::LeftStacks { .. } => "frame pointer outside the known stacks",
        Stop::Loop { .. } => "frame pointer went backwards (a loop or a corrupted chain)",
        Stop::Misaligned { .. } => "misaligned frame pointer",
        Stop::WrongStack { .. } => "a plain frame on another stack",
        Stop::TooDeep => "too many frames",
        Stop::BelowInterruptedSp { .. } => "the interrupted RBP is below the interrupted RSP",
        Stop::InEntryCode => "the frame interrupted entry code (its RBP may be the user's)",
        Stop::NoFramePointer => "the interrupted code had no frame pointer yet",
    }
}
