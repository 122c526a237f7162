//! `Call Trace:` in Linux's format, after the registers of every oops and
//! every fuzz VIOLATION (issue 12).
//!
//! The kernel is built with frame pointers, and every entry stub sets RBP
//! to `&PtRegs | ENCODED_FRAME_TAG` before it calls into Rust, so walking
//! RBP up from any handler (`extregs_unwind`) finds each interrupt frame
//! crossed. Each section of the trace is one stack, between Linux's
//! markers: ` <NMI>`/` </NMI>`, the exception stacks ` <DB>`, ` <MCE>`,
//! ` <DF>`, and ` <TASK>`/` </TASK>`. Every return address prints as
//! ` symbol+0xoff/0xsize`. An interrupt frame prints where the walk meets
//! it: the interrupted registers as Linux prints a nested `pt_regs`, then
//! that frame's extension (saved PKRS with rights, generic state). A walk
//! that ends early (a broken chain) ends with a marker line saying why.

use crate::{gdt, println, sched, show_regs, symbols};
use extregs_regs::PtRegs;
use extregs_unwind::{Entry, Memory, Stack, StackKind, Stop, Unwinder};

/// Reads the kernel's stacks. The unwinder only asks for aligned words
/// inside the [`Stack`]s it was given, all of them mapped kernel stacks.
struct KernelStacks;

impl Memory for KernelStacks {
    fn read_word(&self, address: u64) -> u64 {
        let word = core::ptr::with_exposed_provenance::<u64>(address as usize);
        // SAFETY: `address` is an aligned word of a task or IST stack (the unwinder checks it
        // against `stacks()`), mapped for the kernel's life; exposed provenance because these
        // are integer addresses of kernel-owned memory, and a volatile read of a plain u64.
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

/// The trace of the context `regs` interrupted: its callers, from RBP.
pub fn print_call_trace(regs: &PtRegs) {
    if regs.user_mode() {
        // Nothing of the kernel's is below a user frame.
        return;
    }
    print_from(regs.bp);
}

/// The trace of the code calling this (a violation found after a return).
pub fn print_call_trace_here() {
    let bp: u64;
    // SAFETY: reads RBP, which the kernel's frame-pointer build keeps as this function's frame.
    unsafe { core::arch::asm!("mov {}, rbp", out(reg) bp, options(nomem, nostack)) };
    print_from(bp);
}

fn print_from(bp: u64) {
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
    for entry in Unwinder::new(&KernelStacks, &stacks[..count], bp) {
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
            Entry::Interrupt { regs, stack, .. } => {
                enter(stack, &mut section);
                let frame = core::ptr::with_exposed_provenance::<PtRegs>(regs as usize);
                // SAFETY: the unwinder checked the whole extended frame lies in one known stack
                // (aligned, mapped); it is only read, while this CPU is dying or in a handler
                // that does not return to it meanwhile, so nothing writes it.
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
    }
}
