//! `Call Trace:` in Linux's format, after the registers of every oops and
//! every fuzz VIOLATION (issue 12).
//!
//! The kernel is built with frame pointers, and every entry stub sets RBP
//! to `&PtRegs | ENCODED_FRAME_TAG` before it calls into Rust, so walking
//! RBP up from any handler (`extregs_unwind`) finds each interrupt frame
//! crossed. Each section of the trace is one stack, between Linux's
//! markers: ` <NMI>`/` </NMI>`, the exception stacks ` <#DB>`, ` <#MC>`,
//! ` <#DF>`, and ` <TASK>`/` </TASK>`. Every return address prints as
//! ` symbol+0xoff/0xsize`. An interrupt frame prints where the walk meets
//! it: the interrupted registers as Linux prints a nested `pt_regs`, then
//! that frame's extension (saved PKRS with rights, generic state). A walk
//! that ends early (a broken chain) ends with a marker line saying why.

use crate::{gdt, println, sched, show_regs, symbols};
use extregs_regs::{ExtendedPtRegs, PtRegs};
use extregs_unwind::{Entry, EntryText, Memory, Stack, StackKind, Stop, Unwinder};

/// Reads the kernel's stacks. The unwinder only asks for aligned words
/// inside the [`Stack`]s it was given, all of them mapped kernel stacks.
struct KernelStacks;

impl Memory for KernelStacks {
    fn read_word(&self, address: u64) -> u64 {
        let word = core::ptr::with_exposed_provenance::<u64>(address as usize);
        // SAFETY: an aligned word of a task or IST stack (checked against `stacks()`), mapped for
        // good; the stack statics' provenance was exposed by their `as u64` casts (the boot stack
        // is outside any Rust allocation). A volatile read of plain bytes, valid for any value.
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
/// never below `regs` itself (the printer's own frames are there). A user
/// frame has no kernel callers: nothing is printed (as in Linux).
pub fn print_call_trace(regs: &PtRegs) {
    if regs.user_mode() {
        return;
    }
    let floor = regs as *const PtRegs as u64 + core::mem::size_of::<PtRegs>() as u64;
    print_from(regs.bp, floor);
}

/// The trace of the code calling this: its own callers, every interrupt
/// frame below them included (a fuzz violation, found in a handler or
/// after a return).
pub fn print_call_trace_here() {
    let bp: u64;
    // SAFETY: reads RBP, which the kernel's frame-pointer build keeps as this function's frame.
    unsafe { core::arch::asm!("mov {}, rbp", out(reg) bp, options(nomem, nostack)) };
    print_from(bp, bp);
}

fn print_from(bp: u64, floor: u64) {
    let (stacks, count) = stacks();
    println!("Call Trace:");
    let mut section: Option<StackKind> = None;
    let enter = |kind: StackKind, section: &mut Option<StackKind>| {
        if *section != Some(kind) {
            if let Some(old) = section.replace(kind) {
                println!(" </{}>", old.marker());
            }
            println!(" <{}>", kind.marker());
        }
    };
    let text = extregs_entry_asm::entry_text_range();
    let entry_text = EntryText { start: text.start, end: text.end };
    let walk =
        Unwinder::new(&KernelStacks, &stacks[..count], bp, floor).with_entry_text(entry_text);
    for entry in walk {
        match entry {
            Entry::Return { address, stack } => {
                enter(stack, &mut section);
                // A return address may be just past its function (a call as
                // its last instruction): look up the call, as Linux's %pB.
                match symbols::lookup(address.wrapping_sub(1)) {
                    Some(mut symbol) => {
                        symbol.offset += 1;
                        println!(" {symbol}");
                    }
                    None => println!(" {address:#018x}"),
                }
            }
            Entry::Interrupt { extension, stack, .. } => {
                enter(stack, &mut section);
                let frame =
                    core::ptr::with_exposed_provenance::<ExtendedPtRegs>(extension as usize);
                // SAFETY: the walk checked the frame lies, aligned, in a known stack above the
                // printer's frames; all integer fields, so any bytes are valid, and the suspended
                // handlers whose `&mut PtRegs` covers it never resume while this reads.
                unsafe { show_regs::show_nested_regs(&*frame) };
            }
            Entry::Stop(Stop::Bottom | Stop::UserMode) => {}
            Entry::Stop(why) => println!(" [call trace stopped: {}]", describe(why)),
        }
    }
    if let Some(kind) = section {
        println!(" </{}>", kind.marker());
    }
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
        Stop::InEntryCode => "the frame interrupted entry code (its RBP may be the user's)",
        Stop::NoFramePointer => "the interrupted code had no frame pointer yet",
    }
}
