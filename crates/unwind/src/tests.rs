//! Host tests of the unwinder: hand-built and property tests on synthetic stacks.

extern crate std;

use super::*;
use extregs_regs::{ENTRY_HARDIRQ_DONE, ENTRY_VECTOR_RECORDED};
use proptest::prelude::*;
use std::vec;
use std::vec::Vec;

const TASK: Stack = Stack { kind: StackKind::Task, start: 0x10_0000, end: 0x10_4000 };
const NMI: Stack = Stack { kind: StackKind::Nmi, start: 0x20_0000, end: 0x20_1000 };
const KERNEL_CS: u64 = 0x10;
const USER_CS: u64 = 0x33;

/// Stack memory; a read outside the stacks fails the test.
struct Words {
    stacks: Vec<(Stack, Vec<u64>)>,
    /// Every address read, for the floor checks.
    reads: std::cell::RefCell<Vec<u64>>,
}

impl Words {
    fn new(stacks: &[Stack]) -> Words {
        Words {
            stacks: stacks
                .iter()
                .map(|s| (*s, vec![0; ((s.end - s.start) / 8) as usize]))
                .collect(),
            reads: Default::default(),
        }
    }

    fn slot(&mut self, address: u64) -> &mut u64 {
        let (stack, words) = self
            .stacks
            .iter_mut()
            .find(|(s, _)| s.holds(address, 8))
            .unwrap_or_else(|| panic!("write outside the stacks at {address:#x}"));
        &mut words[((address - stack.start) / 8) as usize]
    }

    fn write(&mut self, address: u64, value: u64) {
        *self.slot(address) = value;
    }

    /// A function frame at `bp`: saved bp and return address.
    fn frame(&mut self, bp: u64, saved_bp: u64, return_address: u64) {
        self.write(bp, saved_bp);
        self.write(bp + 8, return_address);
    }

    /// PtRegs at `regs` (the extension below it is left as it is).
    fn ptregs(&mut self, regs: u64, ip: u64, sp: u64, bp: u64, cs: u64) {
        self.write(regs + offset_of!(PtRegs, ip) as u64, ip);
        self.write(regs + offset_of!(PtRegs, sp) as u64, sp);
        self.write(regs + offset_of!(PtRegs, bp) as u64, bp);
        self.write(regs + offset_of!(PtRegs, cs) as u64, cs);
    }
}

impl Memory for Words {
    fn read_word(&self, address: u64) -> u64 {
        assert_eq!(address % 8, 0, "misaligned read at {address:#x}");
        self.reads.borrow_mut().push(address);
        let (stack, words) = self
            .stacks
            .iter()
            .find(|(s, _)| s.holds(address, 8))
            .unwrap_or_else(|| panic!("read outside the stacks at {address:#x}"));
        words[((address - stack.start) / 8) as usize]
    }
}

fn walk(words: &Words, stacks: &[Stack], bp: u64) -> Vec<Entry> {
    Unwinder::new(words, stacks, bp, 0).collect()
}

/// The synthetic tests' text: small "addresses" and the kernel-looking
/// ones `build` writes.
fn is_text(word: u64) -> bool {
    (0xa0..0xb0).contains(&word) || word >> 48 == 0xffff
}

/// The trace's lines, from `bp` above `floor`, scanning from `start_sp`.
fn trace(words: &Words, stacks: &[Stack], bp: u64, floor: u64, start_sp: u64) -> Vec<Line> {
    let mut lines = Vec::new();
    Unwinder::new(words, stacks, bp, floor).trace(start_sp, is_text, |line| lines.push(line));
    lines
}

/// A line as a short string, for readable expectations.
fn render(line: &Line) -> std::string::String {
    use std::format;
    match *line {
        Line::Open(section) => format!("<{}>", section.marker()),
        Line::Close(section) => format!("</{}>", section.marker()),
        Line::Walk(Entry::Return { address, .. }) => format!("{address:#x}"),
        Line::Walk(Entry::Interrupt { entry: EntryVector::Idt(vector), .. }) => {
            format!("regs {vector:#x}")
        }
        Line::Walk(Entry::Interrupt { entry, .. }) => format!("regs {entry:?}"),
        Line::Walk(Entry::Stop(why)) => format!("stop {why:?}"),
        Line::Unreliable { address, .. } => format!("? {address:#x}"),
        Line::Omitted(count) => format!("omitted {count}"),
    }
}

fn rendered(lines: &[Line]) -> Vec<std::string::String> {
    lines.iter().map(render).collect()
}

/// PtRegs at `regs` whose extension records `vector`.
fn interrupt_frame(words: &mut Words, regs: u64, ip: u64, sp: u64, bp: u64, vector: u8) {
    words.ptregs(regs, ip, sp, bp, KERNEL_CS);
    words.write(
        regs - GENERIC_PTREGS_SIZE as u64,
        extension_word(ENTRY_VECTOR_RECORDED | u16::from(vector)),
    );
}

/// `mode=oops cause=nested`'s nesting: an NMI handler (NMI stack) interrupted an int3
/// handler that interrupted a timer IRQ's handler that interrupted a
/// task function, the last three on the task stack.
fn nested_nmi_int3_irq() -> Words {
    let mut words = Words::new(&[TASK, NMI]);
    let nmi_regs = 0x20_0e00;
    words.frame(0x20_0c00, nmi_regs | ENCODED_FRAME_TAG, 0xb1);
    interrupt_frame(&mut words, nmi_regs, 0xc0, 0x10_00f0, 0x10_0100, 2);
    let int3_regs = 0x10_0200;
    words.frame(0x10_0100, int3_regs | ENCODED_FRAME_TAG, 0xa1);
    interrupt_frame(&mut words, int3_regs, 0xc1, 0x10_0300, 0x10_0400, 3);
    let irq_regs = 0x10_0500;
    words.frame(0x10_0400, irq_regs | ENCODED_FRAME_TAG, 0xa2);
    interrupt_frame(&mut words, irq_regs, 0xc2, 0x10_0600, 0x10_0700, 0xec);
    words.frame(0x10_0700, 0, 0xa3);
    words
}

#[test]
fn hard_interrupts_open_an_irq_section_on_the_task_stack() {
    let words = nested_nmi_int3_irq();
    let lines = trace(&words, &[TASK, NMI], 0x20_0c00, 0x20_0c00, 0x20_0c00);
    assert_eq!(
        rendered(&lines),
        [
            "<NMI>",
            "0xb1",
            "regs 0x2",
            "</NMI>",
            // The int3 ran inside the IRQ's handler: both are IRQ context.
            "<IRQ>",
            "0xa1",
            "regs 0x3",
            "</IRQ>",
            // The IRQ's frame holds the task's registers; it and the
            // stub's return address below it are the task's (Linux
            // prints asm_sysvec_* after <TASK>).
            "<TASK>",
            "0xa2",
            "regs 0xec",
            "0xa3",
            "stop Bottom",
            "</TASK>",
        ]
    );
    // Without a recorded vector, nothing says the frame is an IRQ's;
    // once its handler is done (a preemption on the way out, say),
    // nothing below it is IRQ context.
    for vector in [0, ENTRY_VECTOR_RECORDED | ENTRY_HARDIRQ_DONE | 0xec] {
        let mut words = nested_nmi_int3_irq();
        words.write(0x10_0500 - GENERIC_PTREGS_SIZE as u64, extension_word(vector));
        let lines = trace(&words, &[TASK, NMI], 0x20_0c00, 0x20_0c00, 0x20_0c00);
        assert!(!lines.contains(&Line::Open(Section::Irq)), "{:?}", rendered(&lines));
    }
}

#[test]
fn other_text_words_are_unreliable_entries() {
    let mut words = nested_nmi_int3_irq();
    // Stale return addresses between frames, on both stacks.
    words.write(0x20_0c40, 0xa8);
    words.write(0x10_0180, 0xa9);
    words.write(0x10_0600, 0xaa);
    // Above the oldest frame: Linux scans on to the stack's end.
    words.write(0x10_0800, 0xab);
    // Inside an interrupt frame (a register) and in the NMI stack's
    // words above the NMI's frame: printed with the frame, or the
    // entry's own; not entries.
    words.write(0x10_0500 + offset_of!(PtRegs, r12) as u64, 0xac);
    words.write(0x20_0e00 + PTREGS_SIZE as u64 + 8, 0xad);
    // Below the floor (the printer's own frames): never read.
    words.write(0x20_0b00, 0xae);
    let lines = trace(&words, &[TASK, NMI], 0x20_0c00, 0x20_0c00, 0x20_0c00);
    assert_eq!(
        rendered(&lines),
        [
            "<NMI>",
            "0xb1",
            "? 0xa8",
            "regs 0x2",
            "</NMI>",
            "<IRQ>",
            "0xa1",
            "? 0xa9",
            "regs 0x3",
            "</IRQ>",
            "<TASK>",
            "0xa2",
            "regs 0xec",
            "? 0xaa",
            "0xa3",
            "stop Bottom",
            "? 0xab",
            "</TASK>",
        ]
    );
    assert!(words.reads.borrow().iter().all(|&a| a >= 0x20_0c00 || TASK.holds(a, 8)));
}

#[test]
fn a_broken_chain_is_followed_by_what_the_stack_still_holds() {
    let mut words = Words::new(&[TASK]);
    words.frame(0x10_0100, 0x10_0200, 0xa1);
    // This frame's saved bp points back down: the chain breaks.
    words.frame(0x10_0200, 0x10_0080, 0xa2);
    words.frame(0x10_0300, 0x10_0400, 0xa3);
    words.frame(0x10_0400, 0, 0xa4);
    let lines = trace(&words, &[TASK], 0x10_0100, 0x10_0100, 0x10_0100);
    assert_eq!(
        rendered(&lines),
        ["<TASK>", "0xa1", "0xa2", "stop Loop { bp: 1048704 }", "? 0xa3", "? 0xa4", "</TASK>"]
    );
    // A chain broken at once still shows the stack from where it starts.
    let lines = trace(&words, &[TASK], 0x10_0080, 0x10_00f0, 0x10_00f0);
    assert_eq!(
        rendered(&lines),
        ["<TASK>", "stop Loop { bp: 1048704 }", "? 0xa1", "? 0xa2", "? 0xa3", "? 0xa4", "</TASK>"]
    );
}

#[test]
fn the_nmi_stack_top_is_never_scanned_and_unread_stacks_are() {
    // An NMI that interrupted entry code on a stack the trace was not
    // given (before the scheduler's stacks are known): the walk stops
    // at its frame, and the words above it (the NMI's saved and copied
    // frames, here its RIP again) are not entries.
    let mut words = Words::new(&[TASK, NMI]);
    let nmi_regs = 0x20_0e00;
    words.frame(0x20_0c00, nmi_regs | ENCODED_FRAME_TAG, 0xb1);
    interrupt_frame(&mut words, nmi_regs, 0xa7, 0x30_0000, 0x10_0100, 2);
    words.write(nmi_regs + PTREGS_SIZE as u64 + 8, 0xa7);
    let text = EntryText { start: 0xa7, end: 0xa8 };
    let mut lines = Vec::new();
    Unwinder::new(&words, &[TASK, NMI], 0x20_0c00, 0x20_0c00).with_entry_text(text).trace(
        0x20_0c00,
        is_text,
        |line| lines.push(line),
    );
    assert_eq!(rendered(&lines), ["<NMI>", "0xb1", "regs 0x2", "stop InEntryCode", "</NMI>"]);
    // A context switch interrupted between its RSP and RBP loads: RBP
    // still the old task's frame, RSP already on the new task's stack.
    // The walk follows RBP; the new stack is scanned from RSP at the
    // end.
    let other = Stack { kind: StackKind::Task, start: 0x40_0000, end: 0x40_1000 };
    let stacks = [TASK, NMI, other];
    let mut words = Words::new(&stacks);
    words.frame(0x20_0c00, nmi_regs | ENCODED_FRAME_TAG, 0xb1);
    interrupt_frame(&mut words, nmi_regs, 0xc0, 0x40_0f00, 0x10_0100, 2);
    words.frame(0x10_0100, 0, 0xa1);
    words.write(0x40_0f08, 0xa2);
    let lines = trace(&words, &stacks, 0x20_0c00, 0x20_0c00, 0x20_0c00);
    assert_eq!(
        rendered(&lines),
        [
            "<NMI>",
            "0xb1",
            "regs 0x2",
            "</NMI>",
            "<TASK>",
            "0xa1",
            "stop Bottom",
            "? 0xa2",
            "</TASK>"
        ]
    );
}

#[test]
fn unreliable_entries_stop_at_the_limit() {
    let mut words = Words::new(&[TASK]);
    words.frame(0x10_0100, 0, 0xa1);
    for word in 0..100 {
        words.write(0x10_0200 + 8 * word, 0xa2);
    }
    let lines = trace(&words, &[TASK], 0x10_0100, 0x10_0100, 0x10_0100);
    let unreliable = lines.iter().filter(|l| matches!(l, Line::Unreliable { .. })).count();
    assert_eq!(unreliable, MAX_UNRELIABLE);
    assert!(lines.contains(&Line::Omitted(100 - MAX_UNRELIABLE)), "{:?}", rendered(&lines));
    assert_eq!(lines.last(), Some(&Line::Close(Section::Stack(StackKind::Task))));
}

#[test]
fn an_oops_frame_on_an_ist_stack_leads_to_the_task_it_interrupted() {
    // A #DF's PtRegs on its IST stack; its bp and sp are the task's.
    let df = Stack { kind: StackKind::DoubleFault, start: 0x30_0000, end: 0x30_1000 };
    let stacks = [TASK, df];
    let mut words = Words::new(&stacks);
    words.frame(0x10_0100, 0, 0xa1);
    words.write(0x10_00f8, 0xa9);
    let floor = 0x30_0f00;
    let walked = |unwinder: Unwinder<'_, Words>| {
        let mut lines = Vec::new();
        unwinder.trace(0x10_00f0, is_text, |line| lines.push(line));
        rendered(&lines)
    };
    assert_eq!(
        walked(
            Unwinder::new(&words, &stacks, 0x10_0100, floor).from_interrupted_context(0x10_00f0)
        ),
        ["<TASK>", "? 0xa9", "0xa1", "stop Bottom", "</TASK>"]
    );
    // Without it, a plain frame on another stack than the floor's stops
    // the walk (and the stack is still scanned from the start).
    let lines = walked(Unwinder::new(&words, &stacks, 0x10_0100, floor));
    assert!(lines.iter().any(|l| l == "stop WrongStack { bp: 1048832 }"), "{lines:?}");
}

#[test]
fn a_plain_chain_ends_at_the_bottom() {
    let stacks = [TASK];
    let mut words = Words::new(&stacks);
    words.frame(0x10_0100, 0x10_0200, 0xa1);
    words.frame(0x10_0200, 0x10_0300, 0xa2);
    words.frame(0x10_0300, 0, 0xa3);
    let ret = |address, bp: u64| Entry::Return { address, at: bp + 8, stack: StackKind::Task };
    assert_eq!(
        walk(&words, &stacks, 0x10_0100),
        [
            ret(0xa1, 0x10_0100),
            ret(0xa2, 0x10_0200),
            ret(0xa3, 0x10_0300),
            Entry::Stop(Stop::Bottom)
        ]
    );
    // A frame whose return address is 0 is the first of its stack.
    words.frame(0x10_0300, 0x10_0400, 0);
    assert_eq!(
        walk(&words, &stacks, 0x10_0100),
        [ret(0xa1, 0x10_0100), ret(0xa2, 0x10_0200), Entry::Stop(Stop::Bottom)]
    );
}

#[test]
fn an_nmi_frame_leads_back_to_the_task_stack() {
    // NMI handler frames on the NMI stack, the NMI's PtRegs above them
    // (tagged bp), which interrupted a task frame.
    let stacks = [TASK, NMI];
    let mut words = Words::new(&stacks);
    let regs = 0x20_0e00;
    words.frame(0x20_0c00, 0x20_0d00, 0xb1);
    words.frame(0x20_0d00, regs | ENCODED_FRAME_TAG, 0xb2);
    words.ptregs(regs, 0xc0, 0x10_0280, 0x10_0300, KERNEL_CS);
    words.frame(0x10_0300, 0, 0xa3);
    let entries = walk(&words, &stacks, 0x20_0c00);
    assert_eq!(entries.len(), 5, "{entries:?}");
    assert_eq!(
        entries[2],
        Entry::Interrupt {
            regs,
            extension: regs - GENERIC_PTREGS_SIZE as u64,
            stack: StackKind::Nmi,
            entry: EntryVector::Unknown,
            hardirq: false,
            ip: 0xc0,
            sp: 0x10_0280,
            bp: 0x10_0300,
            user: false,
        }
    );
    assert_eq!(entries[3], Entry::Return { address: 0xa3, at: 0x10_0308, stack: StackKind::Task });
    assert_eq!(entries[4], Entry::Stop(Stop::Bottom));
}

#[test]
fn a_frame_from_user_mode_ends_the_walk() {
    let stacks = [TASK];
    let mut words = Words::new(&stacks);
    let regs = 0x10_3f00;
    words.frame(0x10_3e00, regs | ENCODED_FRAME_TAG, 0xa1);
    words.ptregs(regs, 0x7f00_0000_1000, 0x7f00_1000_0000, 0x1234, USER_CS);
    let entries = walk(&words, &stacks, 0x10_3e00);
    assert!(matches!(entries[1], Entry::Interrupt { user: true, .. }), "{entries:?}");
    assert_eq!(entries[2], Entry::Stop(Stop::UserMode));
    assert_eq!(entries.len(), 3);
}

#[test]
fn loops_and_strays_stop_with_a_reason() {
    let stacks = [TASK, NMI];
    let mut words = Words::new(&stacks);
    // Itself, then downwards.
    words.frame(0x10_0100, 0x10_0100, 0xa1);
    assert_eq!(walk(&words, &stacks, 0x10_0100)[1], Entry::Stop(Stop::Loop { bp: 0x10_0100 }));
    words.frame(0x10_0200, 0x10_0180, 0xa1);
    assert!(matches!(walk(&words, &stacks, 0x10_0200)[1], Entry::Stop(Stop::Loop { .. })));
    // Out of every stack, misaligned, onto another stack without an
    // interrupt frame.
    words.frame(0x10_0300, 0xdead_0000, 0xa1);
    assert!(matches!(walk(&words, &stacks, 0x10_0300)[1], Entry::Stop(Stop::LeftStacks { .. })));
    words.frame(0x10_0400, 0x10_0504, 0xa1);
    assert!(matches!(walk(&words, &stacks, 0x10_0400)[1], Entry::Stop(Stop::Misaligned { .. })));
    words.frame(0x10_0600, 0x20_0100, 0xa1);
    assert!(matches!(walk(&words, &stacks, 0x10_0600)[1], Entry::Stop(Stop::WrongStack { .. })));
    // A frame whose last word would be past the stack's end.
    assert!(matches!(walk(&words, &stacks, TASK.end - 8)[0], Entry::Stop(Stop::LeftStacks { .. })));
    // Back to a stack the walk left: task -> NMI (through an interrupt
    // frame) -> task again.
    let regs = 0x10_0800;
    words.frame(0x10_0700, regs | ENCODED_FRAME_TAG, 0xa1);
    words.ptregs(regs, 0xc0, 0, 0x20_0200, KERNEL_CS);
    let nmi_regs = 0x20_0400;
    words.frame(0x20_0200, nmi_regs | ENCODED_FRAME_TAG, 0xb1);
    words.ptregs(nmi_regs, 0xc1, 0, 0x10_0f00, KERNEL_CS);
    let entries = walk(&words, &stacks, 0x10_0700);
    assert!(matches!(entries.last(), Some(Entry::Stop(Stop::Loop { .. }))), "{entries:?}");
    // An interrupted RBP below the interrupted RSP on the same stack
    // (though above the interrupt frame): corrupt, not followed.
    let regs = 0x10_0a00;
    words.frame(0x10_0900, regs | ENCODED_FRAME_TAG, 0xa1);
    words.ptregs(regs, 0xc0, 0x10_0c00, 0x10_0b00, KERNEL_CS);
    words.frame(0x10_0b00, 0, 0xa2);
    let entries = walk(&words, &stacks, 0x10_0900);
    assert_eq!(entries[2], Entry::Stop(Stop::BelowInterruptedSp { bp: 0x10_0b00 }));
    // At the RSP it is followed; on another stack than the RSP's too
    // (a context switch between its loads of RSP and RBP).
    words.ptregs(regs, 0xc0, 0x10_0b00, 0x10_0b00, KERNEL_CS);
    assert_eq!(walk(&words, &stacks, 0x10_0900)[3], Entry::Stop(Stop::Bottom));
    words.ptregs(regs, 0xc0, 0x20_0f00, 0x10_0b00, KERNEL_CS);
    assert_eq!(walk(&words, &stacks, 0x10_0900)[3], Entry::Stop(Stop::Bottom));
}

/// One level of a synthetic nesting: `frames` function frames on
/// `stack`, then (unless it is the oldest) the interrupt frame that
/// leads to the next level.
#[derive(Clone, Debug)]
struct Level {
    on_nmi_stack: bool,
    frames: usize,
    gap_words: u64,
    /// The vector the level's interrupt frame records (its raw
    /// `GenericExtRegs::vector`: recorded, a hard IRQ, or not).
    vector: u16,
}

fn level() -> impl Strategy<Value = Level> {
    let vector = prop_oneof![
        Just(0u16),
        (0u16..256).prop_map(|v| ENTRY_VECTOR_RECORDED | v),
        Just(0xec | ENTRY_VECTOR_RECORDED),
        Just(0xec | ENTRY_VECTOR_RECORDED | ENTRY_HARDIRQ_DONE),
    ];
    (any::<bool>(), 0usize..6, 2u64..8, vector).prop_map(
        |(on_nmi_stack, frames, gap_words, vector)| Level {
            on_nmi_stack,
            frames,
            gap_words,
            vector,
        },
    )
}

/// The extension's first word with `vector` in its place.
fn extension_word(vector: u16) -> u64 {
    u64::from(vector) << (8 * VECTOR_BYTE)
}

/// Builds levels from the newest (the NMI handler, say) down to the
/// oldest (a task's first function). At most one level may sit on the
/// NMI stack and, once the walk is on the task stack, it stays there;
/// so the levels are NMI first (if any), then task. Returns the memory,
/// the starting bp and the entries a correct walk gives.
fn build(levels: &[Level]) -> (Words, u64, Vec<Entry>) {
    let stacks = [TASK, NMI];
    let mut words = Words::new(&stacks);
    // Fill each stack from the bottom up: newest frames lowest.
    let mut next = [TASK.start + 0x100, NMI.start + 0x100];
    let mut expected = Vec::new();
    let mut start_bp = None;
    let mut link: Option<u64> = None; // where to store the bp of the next frame
    let nmi_first = levels.first().is_some_and(|l| l.on_nmi_stack);
    for (index, level) in levels.iter().enumerate() {
        let on_nmi = index == 0 && nmi_first;
        let (slot, kind) = if on_nmi { (1, StackKind::Nmi) } else { (0, StackKind::Task) };
        for frame in 0..level.frames {
            let bp = next[slot];
            next[slot] += 16 + 8 * level.gap_words;
            match link {
                Some(at) => words.write(at, bp),
                None => start_bp = Some(bp),
            }
            let address = 0xffff_8000_0000_0000 | ((index as u64) << 16) | frame as u64;
            words.write(bp + 8, address);
            expected.push(Entry::Return { address, at: bp + 8, stack: kind });
            link = Some(bp);
        }
        if index + 1 < levels.len() {
            // The interrupt frame: extension, then PtRegs.
            let extension = next[slot];
            let regs = extension + GENERIC_PTREGS_SIZE as u64;
            next[slot] = regs + PTREGS_SIZE as u64 + 8 * level.gap_words;
            let tagged = regs | ENCODED_FRAME_TAG;
            match link {
                Some(at) => words.write(at, tagged),
                None => start_bp = Some(tagged),
            }
            let ip = 0xffff_8000_1000_0000 | index as u64;
            words.ptregs(regs, ip, 0, 0, KERNEL_CS);
            words.write(extension, extension_word(level.vector));
            expected.push(Entry::Interrupt {
                regs,
                extension,
                stack: kind,
                entry: GenericExtRegs { vector: level.vector, ..GenericExtRegs::default() }
                    .entry_vector(),
                hardirq: GenericExtRegs { vector: level.vector, ..GenericExtRegs::default() }
                    .in_hardirq(),
                ip,
                sp: 0,
                bp: 0,
                user: false,
            });
            link = Some(regs + offset_of!(PtRegs, bp) as u64);
        }
    }
    // The oldest frame's saved bp stays 0 (the memory starts zeroed); if
    // the oldest level has no frame, an interrupt frame's bp is that 0.
    expected.push(Entry::Stop(match expected.last() {
        Some(Entry::Interrupt { .. }) => Stop::NoFramePointer,
        _ => Stop::Bottom,
    }));
    // Interrupt entries report the bp they lead to: fill those in.
    let fixed = expected
        .iter()
        .map(|entry| match *entry {
            Entry::Interrupt { regs, extension, stack, entry, hardirq, ip, sp, user, .. } => {
                let bp = words.read_word(regs + offset_of!(PtRegs, bp) as u64);
                Entry::Interrupt { regs, extension, stack, entry, hardirq, ip, sp, bp, user }
            }
            other => other,
        })
        .collect();
    (words, start_bp.unwrap_or(0), fixed)
}

proptest! {
    /// Any nesting of frames and interrupt frames unwinds to exactly
    /// its return addresses and interrupt frames, in order.
    #[test]
    fn synthetic_nestings_unwind_exactly(levels in prop::collection::vec(level(), 1..6)) {
        let (words, bp, expected) = build(&levels);
        let stacks = [TASK, NMI];
        let entries = walk(&words, &stacks, bp);
        if expected.len() <= MAX_ENTRIES {
            prop_assert_eq!(entries, expected);
        }
    }

    /// With any word of the stacks overwritten, the walk still ends, with
    /// a Stop as its last entry, after at most MAX_ENTRIES + 1 entries,
    /// and never reads outside the stacks (the memory would panic).
    #[test]
    fn corrupted_stacks_never_fault_or_loop(
        levels in prop::collection::vec(level(), 1..6),
        corruptions in prop::collection::vec((any::<bool>(), 0u64..480, any::<u64>()), 1..4),
    ) {
        let (mut words, bp, _) = build(&levels);
        for (nmi, word, value) in corruptions {
            let stack = if nmi { NMI } else { TASK };
            words.write(stack.start + 0x100 + 8 * word, value);
        }
        let stacks = [TASK, NMI];
        let entries = walk(&words, &stacks, bp);
        prop_assert!(entries.len() <= MAX_ENTRIES + 1);
        prop_assert!(matches!(entries.last(), Some(Entry::Stop(_))));
        let stops = entries.iter().filter(|e| matches!(e, Entry::Stop(_))).count();
        prop_assert_eq!(stops, 1);
    }

    /// The trace of any nesting prints exactly the walk's entries, each
    /// in its section: a stack's own, or <IRQ> on the task stack below
    /// the outermost frame that records a hard interrupt.
    #[test]
    fn traces_put_every_entry_in_its_section(levels in prop::collection::vec(level(), 1..6)) {
        let (words, bp, expected) = build(&levels);
        prop_assume!(expected.len() <= MAX_ENTRIES);
        let mut lines = Vec::new();
        Unwinder::new(&words, &[TASK, NMI], bp, 0).trace(bp & !7, |_| false, |l| lines.push(l));
        let outermost_irq = expected.iter().rposition(|e| {
            matches!(e, Entry::Interrupt { stack: StackKind::Task, hardirq: true, .. })
        });
        // Below it is IRQ context, but for the stub's return address
        // right below the frame (the walk's entry just before it).
        let in_irq = |index: usize, entry: &Entry| {
            outermost_irq.is_some_and(|o| {
                index < o && !(index + 1 == o && matches!(entry, Entry::Return { .. }))
            })
        };
        let mut want = Vec::new();
        let mut section = None;
        for (index, entry) in expected.iter().enumerate() {
            let here = match entry {
                Entry::Return { stack, .. } | Entry::Interrupt { stack, .. } => Some(
                    if *stack == StackKind::Task && in_irq(index, entry) {
                        Section::Irq
                    } else {
                        Section::Stack(*stack)
                    },
                ),
                Entry::Stop(_) => section,
            };
            if here != section {
                if let Some(old) = section {
                    want.push(Line::Close(old));
                }
                want.push(Line::Open(here.unwrap()));
                section = here;
            }
            want.push(Line::Walk(*entry));
        }
        if let Some(old) = section {
            want.push(Line::Close(old));
        }
        prop_assert_eq!(lines, want);
    }

    /// Whatever the stacks hold, a trace reads nothing below its floor
    /// or outside the stacks, balances its markers and ends.
    #[test]
    fn traces_of_corrupted_stacks_stay_above_the_floor(
        levels in prop::collection::vec(level(), 1..6),
        corruptions in prop::collection::vec((any::<bool>(), 0u64..480, any::<u64>()), 0..6),
        floor_words in 0u64..64,
        start_words in 0u64..512,
    ) {
        let (mut words, bp, _) = build(&levels);
        for (nmi, word, value) in corruptions {
            let stack = if nmi { NMI } else { TASK };
            words.write(stack.start + 0x100 + 8 * word, value);
        }
        let floor = TASK.start + 0x100 + 8 * floor_words;
        let start_sp = TASK.start + 8 * start_words;
        words.reads.borrow_mut().clear();
        let lines = trace(&words, &[TASK, NMI], bp, floor, start_sp);
        prop_assert!(words.reads.borrow().iter().all(|&a| a >= floor || NMI.holds(a, 8)));
        let mut open = None;
        for line in &lines {
            match line {
                Line::Open(section) => {
                    prop_assert_eq!(open, None);
                    open = Some(*section);
                }
                Line::Close(section) => {
                    prop_assert_eq!(open, Some(*section));
                    open = None;
                }
                Line::Unreliable { at, .. } => prop_assert!(*at >= floor || NMI.holds(*at, 8)),
                _ => {}
            }
        }
        prop_assert_eq!(open, None);
        let stops = lines.iter().filter(|l| matches!(l, Line::Walk(Entry::Stop(_)))).count();
        prop_assert_eq!(stops, 1);
        // No word printed twice, none from inside an interrupt frame.
        let mut printed: Vec<u64> = lines
            .iter()
            .filter_map(|l| match l {
                Line::Walk(Entry::Return { at, .. }) | Line::Unreliable { at, .. } => Some(*at),
                _ => None,
            })
            .collect();
        for line in &lines {
            if let Line::Walk(Entry::Interrupt { extension, regs, .. }) = line {
                let frame = *extension..*regs + PTREGS_SIZE as u64;
                prop_assert!(printed.iter().all(|at| !frame.contains(at)), "{:?}", rendered(&lines));
            }
        }
        let count = printed.len();
        printed.sort_unstable();
        printed.dedup();
        prop_assert_eq!(printed.len(), count, "{:?}", rendered(&lines));
    }

    /// The same from an oops's frame on the NMI stack (the floor there,
    /// the walk starting on whatever stack its RBP names).
    #[test]
    fn traces_from_an_interrupted_context_stay_in_bounds(
        levels in prop::collection::vec(level(), 1..6),
        corruptions in prop::collection::vec((any::<bool>(), 0u64..480, any::<u64>()), 0..6),
        floor_words in 0u64..480,
        start in any::<u64>(),
    ) {
        let (mut words, bp, _) = build(&levels);
        for (nmi, word, value) in corruptions {
            let stack = if nmi { NMI } else { TASK };
            words.write(stack.start + 0x100 + 8 * word, value);
        }
        let floor = NMI.start + 8 * floor_words;
        let start_sp =
            if start % 2 == 0 { TASK.start + (start % 0x4000) / 8 * 8 } else { start };
        words.reads.borrow_mut().clear();
        let mut lines = Vec::new();
        Unwinder::new(&words, &[TASK, NMI], bp, floor)
            .from_interrupted_context(start_sp)
            .trace(start_sp, is_text, |line| lines.push(line));
        let in_bounds = |&a: &u64| a % 8 == 0 && (a >= floor || TASK.holds(a, 8));
        prop_assert!(words.reads.borrow().iter().all(in_bounds));
        let stops = lines.iter().filter(|l| matches!(l, Line::Walk(Entry::Stop(_)))).count();
        prop_assert_eq!(stops, 1);
    }

    /// Any starting value at all: the walk ends without reading outside.
    #[test]
    fn any_start_ends(bp in any::<u64>()) {
        let words = Words::new(&[TASK, NMI]);
        let entries = walk(&words, &[TASK, NMI], bp);
        prop_assert!(matches!(entries.last(), Some(Entry::Stop(_))));
    }
}

#[test]
fn entry_code_a_zero_bp_and_the_floor_end_the_walk() {
    let stacks = [TASK];
    let mut words = Words::new(&stacks);
    // A kernel-mode frame that interrupted entry code: its bp (the
    // user's, say) is not followed.
    let regs = 0x10_0800;
    words.frame(0x10_0700, regs | ENCODED_FRAME_TAG, 0xa1);
    words.ptregs(regs, 0xe000, 0, 0x10_0f00, KERNEL_CS);
    words.frame(0x10_0f00, 0, 0xa2);
    let text = EntryText { start: 0xe000, end: 0xf000 };
    let entries: Vec<Entry> =
        Unwinder::new(&words, &stacks, 0x10_0700, 0).with_entry_text(text).collect();
    assert_eq!(entries.len(), 3, "{entries:?}");
    assert_eq!(entries[2], Entry::Stop(Stop::InEntryCode));
    // In a second range of entry text too.
    let entries: Vec<Entry> = Unwinder::new(&words, &stacks, 0x10_0700, 0)
        .with_entry_text(EntryText { start: 0xf000, end: 0xf100 })
        .with_entry_text(text)
        .collect();
    assert_eq!(entries[2], Entry::Stop(Stop::InEntryCode));
    // Outside the entry text it is followed.
    let entries: Vec<Entry> = Unwinder::new(&words, &stacks, 0x10_0700, 0)
        .with_entry_text(EntryText { start: 0xf000, end: 0xf100 })
        .collect();
    assert_eq!(entries[2], Entry::Return { address: 0xa2, at: 0x10_0f08, stack: StackKind::Task });
    // An interrupt frame whose bp is 0 says so.
    words.ptregs(regs, 0xc0, 0, 0, KERNEL_CS);
    assert_eq!(walk(&words, &stacks, 0x10_0700)[2], Entry::Stop(Stop::NoFramePointer));
    // Nothing below the floor is read.
    let entries: Vec<Entry> = Unwinder::new(&words, &stacks, 0x10_0700, 0x10_0710).collect();
    assert_eq!(entries, [Entry::Stop(Stop::Loop { bp: 0x10_0700 })]);
}

#[test]
fn a_chain_longer_than_the_limit_stops_too_deep() {
    let stacks = [TASK];
    let mut words = Words::new(&stacks);
    for frame in 0..(MAX_ENTRIES as u64 + 10) {
        let bp = TASK.start + 16 * frame;
        words.frame(bp, bp + 16, frame + 1);
    }
    let entries = walk(&words, &stacks, TASK.start);
    assert_eq!(entries.len(), MAX_ENTRIES + 1);
    assert_eq!(entries.last(), Some(&Entry::Stop(Stop::TooDeep)));
}
