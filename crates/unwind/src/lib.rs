//! Frame-pointer unwinding across extregs' interrupt frames (the call traces
//! of docs/call-traces.md, without the kernel: the kernel supplies the memory and the
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

pub use extregs_regs::{EntryVector, ENCODED_FRAME_TAG};
use extregs_regs::{ExtendedPtRegs, GenericExtRegs, PtRegs, GENERIC_PTREGS_SIZE, PTREGS_SIZE};
use memoffset::offset_of;

/// Where [`GenericExtRegs::vector`] sits in the extension's first word
/// (the walk reads whole words).
const VECTOR_BYTE: usize = offset_of!(ExtendedPtRegs, generic) + offset_of!(GenericExtRegs, vector);
const _: () = assert!(VECTOR_BYTE + 2 <= 8, "the vector must lie in the extension's first word");

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

/// One step of the walk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry {
    /// A return address, read from the word at `at` of a frame on `stack`.
    Return { address: u64, at: u64, stack: StackKind },
    /// An interrupt frame: `PtRegs` at `regs` on `stack`, its extension
    /// `GENERIC_PTREGS_SIZE` below, the entry it records and whether that
    /// is a hard interrupt whose handler had not finished
    /// ([`GenericExtRegs::in_hardirq`]: what lies below it is IRQ
    /// context); the interrupted context's ip, sp, bp and whether it was
    /// user mode.
    Interrupt {
        regs: u64,
        extension: u64,
        stack: StackKind,
        entry: EntryVector,
        hardirq: bool,
        ip: u64,
        sp: u64,
        bp: u64,
        user: bool,
    },
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

/// How many entry-text ranges an [`Unwinder`] takes.
pub const MAX_ENTRY_TEXTS: usize = 4;

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
    /// The frame after an interrupt frame lies below the interrupted RSP on
    /// the same stack: the interrupted code's frames are at or above its
    /// RSP, so the interrupted RBP is corrupt (Linux's unwinder checks the
    /// same).
    BelowInterruptedSp { bp: u64 },
    /// The last interrupt frame's RBP was 0: the interrupted code had not
    /// set one up (the entry stub's own instructions, before its tag), so
    /// the trace stops short of what that code was called by.
    NoFramePointer,
}

/// The walk: an iterator of [`Entry`], the last one always a [`Stop`].
pub struct Unwinder<'a, M: Memory> {
    memory: &'a M,
    stacks: &'a [Stack],
    /// The entry text's ranges ([`Unwinder::with_entry_text`]).
    entry_texts: [EntryText; MAX_ENTRY_TEXTS],
    entry_text_count: usize,
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
    /// The RSP that interrupt frame interrupted: on its stack, the next
    /// frame must not lie below it.
    interrupted_sp: Option<u64>,
    done: bool,
}

impl<'a, M: Memory> Unwinder<'a, M> {
    /// Starts at frame pointer `bp` (as read from RBP, tag and all). No
    /// frame below `floor` is read (the caller's own frames, which it may
    /// be overwriting while it prints, sit there).
    pub fn new(memory: &'a M, stacks: &'a [Stack], bp: u64, floor: u64) -> Self {
        // (Stacks are tracked in u64 bitmasks.)
        debug_assert!(stacks.len() <= 64, "at most 64 stacks");
        Unwinder {
            memory,
            stacks,
            entry_texts: [EntryText { start: 0, end: 0 }; MAX_ENTRY_TEXTS],
            entry_text_count: 0,
            bp,
            current: stacks.iter().position(|s| s.holds(floor, 0)).map(|index| (index, floor)),
            left: 0,
            entries: 0,
            pending_stop: None,
            after_interrupt: false,
            interrupted_sp: None,
            done: false,
        }
    }

    /// Ends the walk at interrupt frames that interrupted `text`. Call it
    /// once per range of entry code (at most [`MAX_ENTRY_TEXTS`]).
    pub fn with_entry_text(mut self, text: EntryText) -> Self {
        assert!(self.entry_text_count < MAX_ENTRY_TEXTS, "at most {MAX_ENTRY_TEXTS} entry texts");
        self.entry_texts[self.entry_text_count] = text;
        self.entry_text_count += 1;
        self
    }

    /// Starts the walk as if it had just crossed an interrupt frame: `bp`
    /// is an interrupted context's RBP and `sp` its RSP (an oops's frame),
    /// whose frames may lie on another stack than `floor` (an IST event
    /// that interrupted a task), and the walk may go there once.
    pub fn from_interrupted_context(mut self, sp: u64) -> Self {
        self.after_interrupt = true;
        self.interrupted_sp = Some(sp);
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
        let interrupted_sp = self.interrupted_sp.take();
        let bp = self.bp;
        let Some(index) = self.stack_of(address, bytes) else {
            return Err(Stop::LeftStacks { bp });
        };
        // (A context switch between its RSP and RBP loads is interrupted
        // with the two on different stacks: only the same stack is checked.)
        if let Some(sp) = interrupted_sp {
            if address < sp && self.stack_of(sp, 0) == Some(index) {
                return Err(Stop::BelowInterruptedSp { bp });
            }
        }
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
            let first_word = self.memory.read_word(extension).to_le_bytes();
            let vector = u16::from_le_bytes([first_word[VECTOR_BYTE], first_word[VECTOR_BYTE + 1]]);
            let generic = GenericExtRegs { vector, ..GenericExtRegs::default() };
            let (entry, hardirq) = (generic.entry_vector(), generic.in_hardirq());
            let ip = field(offset_of!(PtRegs, ip));
            let sp = field(offset_of!(PtRegs, sp));
            let user = field(offset_of!(PtRegs, cs)) & 3 == 3;
            let interrupted_bp = field(offset_of!(PtRegs, bp));
            self.bp = interrupted_bp;
            let in_entry_text = self.entry_texts[..self.entry_text_count]
                .iter()
                .any(|text| (text.start..text.end).contains(&ip));
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
            self.interrupted_sp = Some(sp);
            return Some(Entry::Interrupt {
                regs,
                extension,
                stack: self.stacks[index].kind,
                entry,
                hardirq,
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
        Some(Entry::Return {
            address: return_address,
            at: address + 8,
            stack: self.stacks[index].kind,
        })
    }
}

/// Text addresses found on the stacks that a trace prints with `? ` at
/// most; the rest are counted ([`Line::Omitted`]).
pub const MAX_UNRELIABLE: usize = 64;

/// A section of a trace, between ` <NAME>` and ` </NAME>` lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Section {
    /// A whole stack, or the part of a task stack above every hard
    /// interrupt's frame.
    Stack(StackKind),
    /// The part of a task stack below the outermost hard interrupt's frame
    /// (its vector recorded in the extension): the IRQ handlers, and what
    /// interrupted them. extregs runs IRQs on the interrupted stack, so
    /// this is where Linux's IRQ stack would have been.
    Irq,
}

impl Section {
    /// Linux's marker name: `IRQ`, or the stack's ([`StackKind::marker`]).
    pub fn marker(self) -> &'static str {
        match self {
            Section::Stack(kind) => kind.marker(),
            Section::Irq => "IRQ",
        }
    }
}

/// One line of a printed trace, in Linux's order: innermost first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Line {
    /// ` <NAME>`: a section opens.
    Open(Section),
    /// ` </NAME>`: it closes.
    Close(Section),
    /// An entry of the frame-pointer walk (a reliable return address, an
    /// interrupt frame, or the walk's end).
    Walk(Entry),
    /// A word of a stack that holds a text address but is not a return
    /// address of the walk: a stale one, an argument, or one of the frames
    /// a broken chain hid. Linux prints these as ` ? symbol+0xoff/0xsize`.
    Unreliable { address: u64, at: u64 },
    /// More text addresses than [`MAX_UNRELIABLE`] were found; these many
    /// were not printed.
    Omitted(usize),
}

impl<M: Memory> Unwinder<'_, M> {
    /// The whole trace, as Linux's `show_trace_log_lvl` prints it: every
    /// word of each stack the walk crosses is looked at in address order,
    /// from `start_sp` (the interrupted RSP of an oops's frame, or the
    /// printer's frame) up; the walk's return addresses print as they are,
    /// every other word that `is_text` accepts prints as unreliable.
    ///
    /// * An interrupt frame's words are its registers and extension,
    ///   printed with it, and are not scanned. When the walk goes on to
    ///   another stack, the rest of the old one (the NMI's saved and copied
    ///   frames at the NMI stack's top) is the entry's own and is skipped;
    ///   the new stack is scanned from the interrupted RSP.
    /// * After the walk's end (its [`Stop`] line), the rest of its last
    ///   stack is scanned (a broken chain leaves the older callers there;
    ///   Linux scans on to the stack's end too), except above an IST
    ///   interrupt frame; or, when it ended at a kernel-mode interrupt frame
    ///   whose interrupted RSP is on a stack it has not read (entry code,
    ///   no frame pointer), that stack. Last, any stack an interrupt frame's
    ///   RSP points into that no part of the trace read (a context switch
    ///   interrupted between its RSP and RBP loads) is scanned from there.
    /// * On a task stack, everything below the outermost frame of a hard
    ///   interrupt still in its handler is in [`Section::Irq`]. That frame,
    ///   which holds the interrupted task's registers, and the stub's return
    ///   address just below it open the task's section, where Linux prints
    ///   them after leaving its IRQ stack.
    ///
    /// Nothing is read below `floor` or outside the stacks, no word is
    /// printed twice. Returns the number of unreliable entries printed.
    pub fn trace(
        self,
        start_sp: u64,
        is_text: impl Fn(u64) -> bool,
        mut emit: impl FnMut(Line),
    ) -> usize {
        let (memory, stacks) = (self.memory, self.stacks);
        let stack_of = |address: u64| stacks.iter().position(|s| s.holds(address, 8));
        let floor = self.current;
        let mut walk = [Entry::Stop(Stop::TooDeep); MAX_ENTRIES + 1];
        let mut count = 0;
        for entry in self {
            walk[count] = entry;
            count += 1;
        }
        let walk = &walk[..count];
        let irq_boundary = walk.iter().enumerate().rev().find_map(|(position, entry)| {
            let Entry::Interrupt { extension, stack: StackKind::Task, hardirq: true, .. } = *entry
            else {
                return None;
            };
            let index = stack_of(extension)?;
            let start = match position.checked_sub(1).map(|p| walk[p]) {
                Some(Entry::Return { at, .. }) if stack_of(at) == Some(index) => at,
                _ => extension,
            };
            Some((index, start))
        });
        let section_at = |index: usize, address: u64| match irq_boundary {
            Some((stack, start)) if stack == index && address < start => Section::Irq,
            _ => Section::Stack(stacks[index].kind),
        };
        let mut printer = Printer { emit: &mut emit, section: None, unreliable: 0, omitted: 0 };
        // The stack being scanned and the next word to look at.
        let mut scan: Option<(usize, u64)> = None;
        let mut scanned = 0u64;
        let mut resume_sp = Some(start_sp);
        // Where a scan of stack `index` may start: not below the floor.
        let lowest = |index: usize| match floor {
            Some((stack, floor)) if stack == index => floor,
            _ => stacks[index].start,
        };
        let scan_from = |sp: u64, scanned: u64| {
            stack_of(sp)
                .filter(|&index| scanned & (1 << index) == 0)
                .map(|index| (index, align8(sp.max(lowest(index)))))
        };
        let scan_to = |scan: &mut Option<(usize, u64)>, end: u64, printer: &mut Printer<'_, _>| {
            let Some((index, next)) = scan else { return };
            let end = end.min(stacks[*index].end);
            while *next + 8 <= end {
                let word = memory.read_word(*next);
                if is_text(word) {
                    printer.unreliable(section_at(*index, *next), word, *next);
                }
                *next += 8;
            }
        };
        for (position, entry) in walk.iter().enumerate() {
            let (at, after) = match *entry {
                Entry::Return { at, .. } => (at, at + 8),
                Entry::Interrupt { extension, regs, .. } => (extension, regs + PTREGS_SIZE as u64),
                Entry::Stop(_) => {
                    let previous = position.checked_sub(1).map(|p| walk[p]);
                    // Above an IST interrupt frame: the entry's own words.
                    let ist_frame = |stack| stack != StackKind::Task;
                    if matches!(previous, Some(Entry::Interrupt { stack, .. }) if ist_frame(stack))
                    {
                        scan = None;
                    }
                    // Where the walk could not go: the interrupted RSP of
                    // the frame that ended it, or, when it ended at once,
                    // where the trace starts.
                    let unwalked = match previous {
                        Some(Entry::Interrupt { sp, user: false, .. }) => Some(sp),
                        None => Some(start_sp),
                        _ => None,
                    };
                    let restart = unwalked
                        .and_then(|sp| scan_from(sp, scanned))
                        .filter(|&(index, _)| scan.is_none_or(|(current, _)| current != index));
                    if let Some((index, _)) = restart {
                        scan = restart;
                        scanned |= 1 << index;
                    }
                    // The end first, then what lies beyond it.
                    let section = printer.section.or(scan.map(|(i, at)| section_at(i, at)));
                    printer.line(section, Line::Walk(*entry));
                    scan_to(&mut scan, u64::MAX, &mut printer);
                    continue;
                }
            };
            let Some(index) = stack_of(at) else { continue };
            if scan.is_none_or(|(current, _)| current != index) {
                let from = resume_sp
                    .filter(|&sp| stack_of(sp) == Some(index) && sp <= at && sp >= lowest(index))
                    .unwrap_or(at);
                scan = Some((index, align8(from)));
                scanned |= 1 << index;
            }
            scan_to(&mut scan, at, &mut printer);
            printer.line(Some(section_at(index, at)), Line::Walk(*entry));
            scan = Some((index, after));
            resume_sp = match *entry {
                Entry::Interrupt { sp, .. } => Some(sp),
                _ => None,
            };
        }
        // Stacks an interrupted RSP points into that nothing read yet.
        for entry in walk {
            if let Entry::Interrupt { sp, user: false, .. } = *entry {
                let mut extra = scan_from(sp, scanned);
                if let Some((index, _)) = extra {
                    scanned |= 1 << index;
                    scan_to(&mut extra, u64::MAX, &mut printer);
                }
            }
        }
        printer.finish()
    }
}

fn align8(address: u64) -> u64 {
    address.next_multiple_of(8)
}

/// Emits lines with their section markers.
struct Printer<'a, F: FnMut(Line)> {
    emit: &'a mut F,
    section: Option<Section>,
    unreliable: usize,
    omitted: usize,
}

impl<F: FnMut(Line)> Printer<'_, F> {
    fn line(&mut self, section: Option<Section>, line: Line) {
        if let Some(section) = section.filter(|&s| self.section != Some(s)) {
            if let Some(old) = self.section.replace(section) {
                (self.emit)(Line::Close(old));
            }
            (self.emit)(Line::Open(section));
        }
        (self.emit)(line);
    }

    fn unreliable(&mut self, section: Section, address: u64, at: u64) {
        if self.unreliable == MAX_UNRELIABLE {
            self.omitted += 1;
            return;
        }
        self.unreliable += 1;
        self.line(Some(section), Line::Unreliable { address, at });
    }

    /// Closes the last section; returns the lines of unreliable entries
    /// printed.
    fn finish(mut self) -> usize {
        if self.omitted > 0 {
            (self.emit)(Line::Omitted(self.omitted));
        }
        if let Some(section) = self.section.take() {
            (self.emit)(Line::Close(section));
        }
        self.unreliable
    }
}

#[cfg(test)]
mod tests;
