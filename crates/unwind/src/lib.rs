//! Frame-pointer unwinding across extregs' interrupt frames (issue 12's
//! unwinder, without the kernel: the kernel supplies the memory and the
//! stacks, host tests supply synthetic ones).
//!
//! With frame pointers, every function frame starts with the caller's RBP
//! and sits below its return address:
//!
//! ```text
//!   | return address    |  bp + 8
//!   | saved (caller) bp |  <- bp
//!   | locals ...        |
//! ```
//!
//! An entry stub marks its frame as Linux's `ENCODE_FRAME_POINTER` does:
//! RBP = `&PtRegs | 1`. The walk that meets such a tagged value finds
//! `PtRegs` there (and the extension right below it), reports the interrupt
//! frame, and goes on from the interrupted RBP (`PtRegs::bp`), possibly on
//! another stack (an NMI's frame on the NMI stack leads back to the task
//! stack it interrupted).
//!
//! The walk never reads outside the stacks it is given, never goes down a
//! stack (frames get older upwards), never re-enters a stack it has left,
//! and stops after [`MAX_ENTRIES`]; each of those ends it with a
//! [`Stop`] that says why, so a corrupted or looping chain ends with a
//! marker line, never a fault.

#![no_std]

pub use extregs_regs::ENCODED_FRAME_TAG;
use extregs_regs::{PtRegs, GENERIC_PTREGS_SIZE, PTREGS_SIZE};
use memoffset::offset_of;

/// Entries (return addresses and interrupt frames) before the walk gives up.
pub const MAX_ENTRIES: usize = 64;

/// What a stack is, for the trace's section markers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StackKind {
    /// A task's kernel stack (`<TASK>`).
    Task,
    /// The NMI IST stack, the copied frame at its top included (`<NMI>`).
    Nmi,
    /// The #DB, #MC or #DF IST stack (Linux's exception-stack markers).
    Debug,
    MachineCheck,
    DoubleFault,
}

impl StackKind {
    /// Linux's section name: `TASK`, `NMI`, `#DB`, `#MC`, `#DF`.
    pub fn marker(self) -> &'static str {
        match self {
            StackKind::Task => "TASK",
            StackKind::Nmi => "NMI",
            StackKind::Debug => "#DB",
            StackKind::MachineCheck => "#MC",
            StackKind::DoubleFault => "#DF",
        }
    }
}

/// One stack the walk may read: `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stack {
    pub kind: StackKind,
    pub start: u64,
    pub end: u64,
}

impl Stack {
    fn holds(&self, address: u64, bytes: u64) -> bool {
        address >= self.start && address.checked_add(bytes).is_some_and(|end| end <= self.end)
    }
}

/// The memory the walk reads: only words inside the given stacks.
pub trait Memory {
    /// The word at `address` (8-byte aligned, inside a known stack).
    fn read_word(&self, address: u64) -> u64;
}

/// One line of a trace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry {
    /// A return address from a frame on `stack`.
    Return { address: u64, stack: StackKind },
    /// An interrupt frame: `PtRegs` at `regs` on `stack`, its extension
    /// `GENERIC_PTREGS_SIZE` below; the interrupted context's ip, sp, bp and
    /// whether it was user mode.
    Interrupt { regs: u64, extension: u64, stack: StackKind, ip: u64, sp: u64, bp: u64, user: bool },
    /// The walk ended.
    Stop(Stop),
}

/// Code whose interrupted RBP is not the kernel's: the entry text, where an
/// event from user mode or an exit to it runs with the user's RBP (until the
/// stub clears it, and again after it is restored). A kernel-mode interrupt
/// frame whose `ip` is here ends the walk ([`Stop::InEntryCode`]), as Linux's
/// unwinder refuses to follow a frame pointer the user controls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryText {
    pub start: u64,
    pub end: u64,
}

/// Why a walk ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// A zero frame pointer: the oldest frame (a task's first function).
    Bottom,
    /// An interrupt frame from user mode: nothing older in the kernel.
    UserMode,
    /// The frame pointer (or a frame at it) is outside every known stack.
    LeftStacks { bp: u64 },
    /// The frame pointer went down its stack, or back to a stack the walk
    /// had left: a loop or a corrupted chain.
    Loop { bp: u64 },
    /// A frame pointer not aligned to 8 (tag bit aside).
    Misaligned { bp: u64 },
    /// A plain frame on a different stack than the one the walk is on
    /// (only interrupt frames may switch stacks).
    WrongStack { bp: u64 },
    /// [`MAX_ENTRIES`] entries without an end.
    TooDeep,
    /// The last interrupt frame interrupted entry code, whose RBP may be
    /// the user's (see [`EntryText`]).
    InEntryCode,
    /// The last interrupt frame's RBP was 0: the interrupted code had not
    /// set one up (the entry stub's own instructions, before its tag), so
    /// the trace stops short of what that code was called by.
    NoFramePointer,
}

/// The walk: an iterator of [`Entry`], the last one always a [`Stop`].
pub struct Unwinder<'a, M: Memory> {
    memory: &'a M,
    stacks: &'a [Stack],
    entry_text: Option<EntryText>,
    /// The frame pointer to look at next (tagged or not).
    bp: u64,
    /// The stack the walk is on and the lowest address it may still read
    /// there (frames only get older upwards); None before the first frame.
    current: Option<(usize, u64)>,
    /// Bit i: stack i was left through an interrupt frame.
    left: u64,
    entries: usize,
    /// The last interrupt frame ends the walk: the next entry is this.
    pending_stop: Option<Stop>,
    /// The last entry was an interrupt frame: the next frame may be on
    /// another stack (the interrupted one).
    after_interrupt: bool,
    done: bool,
}

impl<'a, M: Memory> Unwinder<'a, M> {
    /// Starts at frame pointer `bp` (as read from RBP, tag and all). No
    /// frame below `floor` is read (the caller's own frames, which it may
    /// be overwriting while it prints, sit there).
    pub fn new(memory: &'a M, stacks: &'a [Stack], bp: u64, floor: u64) -> Self {
        Unwinder {
            memory,
            stacks,
            entry_text: None,
            bp,
            current: stacks.iter().position(|s| s.holds(floor, 0)).map(|index| (index, floor)),
            left: 0,
            entries: 0,
            pending_stop: None,
            after_interrupt: false,
            done: false,
        }
    }

    /// Ends the walk at interrupt frames that interrupted `text`.
    pub fn with_entry_text(mut self, text: EntryText) -> Self {
        self.entry_text = Some(text);
        self
    }

    fn stack_of(&self, address: u64, bytes: u64) -> Option<usize> {
        self.stacks.iter().position(|stack| stack.holds(address, bytes))
    }

    fn stop(&mut self, why: Stop) -> Option<Entry> {
        self.done = true;
        Some(Entry::Stop(why))
    }

    /// Checks that a frame of `bytes` at `address` may be read next: on a
    /// known stack, not below where the walk already is on it, and on the
    /// same stack unless the previous entry was an interrupt frame (then
    /// on any stack the walk has not left before).
    fn enter(&mut self, address: u64, bytes: u64) -> Result<usize, Stop> {
        let switch = core::mem::take(&mut self.after_interrupt);
        let bp = self.bp;
        let Some(index) = self.stack_of(address, bytes) else {
            return Err(Stop::LeftStacks { bp });
        };
        match self.current {
            Some((current, lowest)) if current == index => {
                if address < lowest {
                    return Err(Stop::Loop { bp });
                }
            }
            Some((current, _)) => {
                if !switch {
                    return Err(Stop::WrongStack { bp });
                }
                if self.left & (1 << index) != 0 {
                    return Err(Stop::Loop { bp });
                }
                self.left |= 1 << current;
            }
            None => {}
        }
        self.current = Some((index, address + bytes));
        Ok(index)
    }
}

impl<M: Memory> Iterator for Unwinder<'_, M> {
    type Item = Entry;

    fn next(&mut self) -> Option<Entry> {
        if self.done {
            return None;
        }
        if let Some(why) = self.pending_stop.take() {
            return self.stop(why);
        }
        if self.entries == MAX_ENTRIES {
            return self.stop(Stop::TooDeep);
        }
        self.entries += 1;
        let bp = self.bp;
        if bp == 0 {
            return self.stop(Stop::Bottom);
        }
        let address = bp & !ENCODED_FRAME_TAG;
        if !address.is_multiple_of(8) {
            return self.stop(Stop::Misaligned { bp });
        }
        if bp & ENCODED_FRAME_TAG != 0 {
            // An interrupt frame: PtRegs at `address`, the extension below.
            let regs = address;
            let extension = regs.wrapping_sub(GENERIC_PTREGS_SIZE as u64);
            let bytes = (GENERIC_PTREGS_SIZE + PTREGS_SIZE) as u64;
            let index = match self.enter(extension, bytes) {
                Ok(index) => index,
                Err(why) => return self.stop(why),
            };
            let field = |offset: usize| self.memory.read_word(regs + offset as u64);
            let ip = field(offset_of!(PtRegs, ip));
            let sp = field(offset_of!(PtRegs, sp));
            let user = field(offset_of!(PtRegs, cs)) & 3 == 3;
            let interrupted_bp = field(offset_of!(PtRegs, bp));
            self.bp = interrupted_bp;
            let in_entry_text = self.entry_text.is_some_and(|t| (t.start..t.end).contains(&ip));
            self.pending_stop = if user {
                Some(Stop::UserMode)
            } else if in_entry_text {
                Some(Stop::InEntryCode)
            } else if interrupted_bp == 0 {
                Some(Stop::NoFramePointer)
            } else {
                None
            };
            self.after_interrupt = true;
            return Some(Entry::Interrupt {
                regs,
                extension,
                stack: self.stacks[index].kind,
                ip,
                sp,
                bp: interrupted_bp,
                user,
            });
        }
        // A function frame: saved bp, then the return address.
        let index = match self.enter(address, 16) {
            Ok(index) => index,
            Err(why) => return self.stop(why),
        };
        let saved_bp = self.memory.read_word(address);
        let return_address = self.memory.read_word(address + 8);
        if return_address == 0 {
            // The first frame of a stack (the bootloader's call into the
            // kernel pushes none): nothing called it.
            return self.stop(Stop::Bottom);
        }
        self.bp = saved_bp;
        Some(Entry::Return { address: return_address, stack: self.stacks[index].kind })
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
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
    }

    impl Words {
        fn new(stacks: &[Stack]) -> Words {
            Words {
                stacks: stacks
                    .iter()
                    .map(|s| (*s, vec![0; ((s.end - s.start) / 8) as usize]))
                    .collect(),
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

    #[test]
    fn a_plain_chain_ends_at_the_bottom() {
        let stacks = [TASK];
        let mut words = Words::new(&stacks);
        words.frame(0x10_0100, 0x10_0200, 0xa1);
        words.frame(0x10_0200, 0x10_0300, 0xa2);
        words.frame(0x10_0300, 0, 0xa3);
        let ret = |address| Entry::Return { address, stack: StackKind::Task };
        assert_eq!(
            walk(&words, &stacks, 0x10_0100),
            [ret(0xa1), ret(0xa2), ret(0xa3), Entry::Stop(Stop::Bottom)]
        );
        // A frame whose return address is 0 is the first of its stack.
        words.frame(0x10_0300, 0x10_0400, 0);
        assert_eq!(
            walk(&words, &stacks, 0x10_0100),
            [ret(0xa1), ret(0xa2), Entry::Stop(Stop::Bottom)]
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
                ip: 0xc0,
                sp: 0x10_0280,
                bp: 0x10_0300,
                user: false,
            }
        );
        assert_eq!(entries[3], Entry::Return { address: 0xa3, stack: StackKind::Task });
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
        assert!(matches!(
            walk(&words, &stacks, 0x10_0300)[1],
            Entry::Stop(Stop::LeftStacks { .. })
        ));
        words.frame(0x10_0400, 0x10_0504, 0xa1);
        assert!(matches!(
            walk(&words, &stacks, 0x10_0400)[1],
            Entry::Stop(Stop::Misaligned { .. })
        ));
        words.frame(0x10_0600, 0x20_0100, 0xa1);
        assert!(matches!(
            walk(&words, &stacks, 0x10_0600)[1],
            Entry::Stop(Stop::WrongStack { .. })
        ));
        // A frame whose last word would be past the stack's end.
        assert!(matches!(
            walk(&words, &stacks, TASK.end - 8)[0],
            Entry::Stop(Stop::LeftStacks { .. })
        ));
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
    }

    /// One level of a synthetic nesting: `frames` function frames on
    /// `stack`, then (unless it is the oldest) the interrupt frame that
    /// leads to the next level.
    #[derive(Clone, Debug)]
    struct Level {
        on_nmi_stack: bool,
        frames: usize,
        gap_words: u64,
    }

    fn level() -> impl Strategy<Value = Level> {
        (any::<bool>(), 0usize..6, 2u64..8).prop_map(|(on_nmi_stack, frames, gap_words)| Level {
            on_nmi_stack,
            frames,
            gap_words,
        })
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
                expected.push(Entry::Return { address, stack: kind });
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
                expected.push(Entry::Interrupt {
                    regs,
                    extension,
                    stack: kind,
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
                Entry::Interrupt { regs, extension, stack, ip, sp, user, .. } => {
                    let bp = words.read_word(regs + offset_of!(PtRegs, bp) as u64);
                    Entry::Interrupt { regs, extension, stack, ip, sp, bp, user }
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
        // Outside the entry text it is followed.
        let entries: Vec<Entry> = Unwinder::new(&words, &stacks, 0x10_0700, 0)
            .with_entry_text(EntryText { start: 0xf000, end: 0xf100 })
            .collect();
        assert_eq!(entries[2], Entry::Return { address: 0xa2, stack: StackKind::Task });
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
}
