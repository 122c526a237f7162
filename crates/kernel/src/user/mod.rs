//! User mode: ring-3 tasks on the extended frame.
//!
//! A user task is a task (`sched`) whose first kernel code builds a user
//! frame at `task_pt_regs` (the top of its kernel stack, TSS.RSP0 while it
//! runs) and leaves through the IRET exit, like Linux's `ret_from_fork`.
//! From then on every entry from user mode, interrupt, exception, NMI or
//! SYSCALL, builds its frame at that same place, extension right below.
//!
//! The user address space is one level-4 slot, the last of the lower half
//! (`0x7f80_0000_0000..0x8000_0000_0000`), shared by all user tasks (one
//! page table, no PTI):
//!
//! ```text
//!   0x7fff_ffff_f000       TASK_SIZE_MAX: the end of user space
//!   0x7fff_ffff_e000       one mapped user page right below it, so a
//!                          pointer can straddle the end (refused)
//!   BASE + 0x3e00_0000     never mapped: the fuzzer's user #PF address
//!   BASE + 0x3c00_0000     the fuzzer's pages (one per lane): a ring-3 level's GPRs
//!   BASE + 0x3800_0000     the bench's syscall samples (16 pages)
//!   BASE + 0x2000_0000     task slot s's GS page at + s * 4 KiB (word 0:
//!                          its PID)
//!   BASE + 0x1000_0000     task slot s's user stack ends at
//!                          + (s + 1) * 1 MiB, 16 KiB, unmapped below
//!   BASE = 0x7f80_0000_0000  the programs (`programs/`), read-only,
//!                          executable
//! ```
//!
//! Kernel pages keep U/S=0, so a user access to kernel memory faults and
//! kills only that task ([`report_user_fault`]).

pub mod personality;
pub mod programs;
pub mod syscall;

use crate::arch::irqflags;
use crate::arch::{idt, memory, pks};
use crate::entry::paranoid;
use crate::entry::platform;
use crate::sched::{self, task};
use core::sync::atomic::{AtomicBool, Ordering};
use extregs_regs::{
    selectors, ArchExtRegs, ExtendedPtRegs, GenericExtRegs, PtRegs, NO_ERROR_CODE,
    X86_EFLAGS_FIXED, X86_EFLAGS_IF, X86_EFLAGS_TF,
};
use spin::Once;
use x86_64::structures::paging::PhysFrame;
use x86_64::VirtAddr;

use crate::arch::uaccess::copy_from_user;
pub use crate::arch::uaccess::{TASK_SIZE_MAX, USER_SPACE_BASE};
pub use programs::Program;

/// Where the program text is mapped.
pub const USER_TEXT: u64 = USER_SPACE_BASE;
/// Task slot `s`'s user stack ends at `USER_STACKS + (s + 1) * STRIDE`.
const USER_STACKS: u64 = USER_SPACE_BASE + 0x1000_0000;
const USER_STACK_STRIDE: u64 = 0x10_0000;
const USER_STACK_PAGES: u64 = 4;
/// Task slot `s`'s GS page is at `USER_TLS + s * 4 KiB`.
const USER_TLS: u64 = USER_SPACE_BASE + 0x2000_0000;
/// The bench's sample buffer (up to [`BENCH_BUFFER_PAGES`] pages).
const USER_BENCH_BUFFER: u64 = USER_SPACE_BASE + 0x3800_0000;
/// Pages of the bench's sample buffer: 8192 samples.
pub const BENCH_BUFFER_PAGES: u64 = 16;

/// The page right below [`TASK_SIZE_MAX`].
pub const USER_TOP_PAGE: u64 = TASK_SIZE_MAX - 4096;
const PAGE: u64 = 4096;

/// `-EFAULT`'s errno.
pub const EFAULT: i64 = 14;

/// Counts since boot, for `RESULT` and the selftests.
pub mod counters {
    use core::sync::atomic::AtomicU64;
    pub static SYSCALLS: AtomicU64 = AtomicU64::new(0);
    pub static SYSRET_EXITS: AtomicU64 = AtomicU64::new(0);
    /// Returns to user mode through IRETQ: every non-SYSCALL entry from
    /// user mode, the SYSCALLs SYSRET can't return from, and each task's
    /// first entry.
    pub static IRET_EXITS: AtomicU64 = AtomicU64::new(0);
    pub static USER_SINGLE_STEPS: AtomicU64 = AtomicU64::new(0);
    pub static USER_NMIS: AtomicU64 = AtomicU64::new(0);
    /// NMIs from user mode, per CPU (user tasks run on every CPU).
    pub static CPU_USER_NMIS: [AtomicU64; extregs_regs::NR_CPUS] =
        [const { AtomicU64::new(0) }; extregs_regs::NR_CPUS];
    pub static USER_IRQS: AtomicU64 = AtomicU64::new(0);
    /// #GPs on the IRETQ to user mode (a non-canonical return RIP).
    pub static BAD_IRETS: AtomicU64 = AtomicU64::new(0);
}

/// The counters, read at once.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UserCounts {
    pub syscalls: u64,
    pub sysret_exits: u64,
    pub iret_exits: u64,
    pub user_frames_checked: u64,
    pub user_single_steps: u64,
    pub user_nmis: u64,
    pub user_irqs: u64,
    pub bad_irets: u64,
}

pub fn counts() -> UserCounts {
    use counters::*;
    UserCounts {
        syscalls: SYSCALLS.load(Ordering::Relaxed),
        sysret_exits: SYSRET_EXITS.load(Ordering::Relaxed),
        iret_exits: IRET_EXITS.load(Ordering::Relaxed),
        user_frames_checked: crate::entry::check::user_frames_checked(),
        user_single_steps: USER_SINGLE_STEPS.load(Ordering::Relaxed),
        user_nmis: USER_NMIS.load(Ordering::Relaxed),
        user_irqs: USER_IRQS.load(Ordering::Relaxed),
        bad_irets: BAD_IRETS.load(Ordering::Relaxed),
    }
}

static INITIALISED: Once<()> = Once::new();

/// Maps the program text at [`USER_TEXT`] and the page below
/// [`TASK_SIZE_MAX`]. Once, after `memory::init`.
pub fn init() {
    INITIALISED.call_once(|| {
        let text = programs::text_range();
        assert!(
            text.start.is_multiple_of(PAGE) && text.end.is_multiple_of(PAGE),
            "user text is page aligned"
        );
        for kernel_page in (text.start..text.end).step_by(PAGE as usize) {
            let physical = memory::translate(VirtAddr::new(kernel_page))
                .expect("the kernel image's user text is mapped");
            let frame = PhysFrame::containing_address(physical);
            let mapped = memory::map_user_page(
                VirtAddr::new(USER_TEXT + (kernel_page - text.start)),
                frame,
                false,
                true,
            );
            assert!(mapped, "user text mapped once");
        }
        map_fresh_user_page(USER_TOP_PAGE);
    });
}

/// Maps (once) and zeroes the bench's user sample buffer; its address.
pub fn bench_buffer() -> u64 {
    for page in 0..BENCH_BUFFER_PAGES {
        map_fresh_user_page(USER_BENCH_BUFFER + page * PAGE);
    }
    USER_BENCH_BUFFER
}

/// The user address of a program's first instruction.
pub fn user_address_of(program: Program) -> u64 {
    user_address_of_kernel_text(program.kernel_address())
}

/// The user address of a kernel-image address inside the user text.
pub fn user_address_of_kernel_text(address: u64) -> u64 {
    let text = programs::text_range();
    assert!(text.contains(&address), "{address:#x} is not user text");
    USER_TEXT + (address - text.start)
}

/// The fuzzer's user data pages, one per fuzz lane (input and output
/// `PtRegs` of the outermost level when it runs in ring 3); a Linux
/// process that runs a lane's level sees that lane's page here.
pub const USER_FUZZ_PAGE: u64 = USER_SPACE_BASE + 0x3c00_0000;
/// How many lanes' pages follow [`USER_FUZZ_PAGE`].
pub const USER_FUZZ_PAGES: u64 = extregs_regs::NR_CPUS as u64;
/// Where in the fuzzer's user page the signal-ending level keeps the
/// address its handler resumes at, and the trampoline it starts.
pub const FUZZ_SIGNAL_RESUME_OFFSET: u64 = 1024;
pub const FUZZ_SIGNAL_START_OFFSET: u64 = 1032;

/// Writes one word of a fuzz lane's user page (`page`, from `fuzz_page`).
pub fn write_fuzz_page_word(page: u64, offset: u64, value: u64) {
    assert!(
        (USER_FUZZ_PAGE..USER_FUZZ_PAGE + USER_FUZZ_PAGES * PAGE).contains(&page),
        "{page:#x} is no fuzz page"
    );
    assert!(offset < PAGE && offset.is_multiple_of(8), "a word inside the fuzz page");
    write_user_word(page + offset, value);
}

/// Maps (once) and zeroes fuzz lane `lane`'s user page; its address.
///
/// # Panics
///
/// If `lane` is not below [`USER_FUZZ_PAGES`].
pub fn fuzz_page(lane: usize) -> u64 {
    assert!((lane as u64) < USER_FUZZ_PAGES, "fuzz lane {lane} has no user page");
    let page = USER_FUZZ_PAGE + lane as u64 * PAGE;
    map_fresh_user_page(page);
    page
}

/// Writes `regs` at the user address `address` (a page of this module's,
/// through the kernel's alias of its frame: no user access window needed).
pub fn write_user_ptregs(address: u64, regs: &PtRegs) {
    for (index, word) in ptregs_words(regs).iter().enumerate() {
        write_user_word(address + 8 * index as u64, *word);
    }
}

/// Reads a `PtRegs` from user memory (`copy_from_user`).
pub fn read_user_ptregs(address: u64) -> Option<PtRegs> {
    let mut bytes = [0u8; core::mem::size_of::<PtRegs>()];
    copy_from_user(&mut bytes, address).ok()?;
    let mut words = [0u64; 21];
    for (word, chunk) in words.iter_mut().zip(bytes.as_chunks::<8>().0) {
        *word = u64::from_le_bytes(*chunk);
    }
    // SAFETY: as in `ptregs_words`, the other way round.
    Some(unsafe { core::mem::transmute::<[u64; 21], PtRegs>(words) })
}

/// The 21 words of a `PtRegs`, in memory order.
fn ptregs_words(regs: &PtRegs) -> [u64; 21] {
    // SAFETY: PtRegs is repr(C), 21 u64 fields without padding (asserted
    // in extregs-regs: 168 bytes), so it has the layout of [u64; 21].
    unsafe { core::mem::transmute::<PtRegs, [u64; 21]>(*regs) }
}

/// Maps a zeroed user page at `address` if it is not mapped yet, or zeroes
/// the one there (through the kernel's alias of its frame, so the kernel
/// never writes user addresses directly).
fn map_fresh_user_page(address: u64) {
    let frame = match memory::translate(VirtAddr::new(address)) {
        Some(physical) => PhysFrame::containing_address(physical),
        None => {
            let frame = memory::allocate_frame();
            memory::map_user_page(VirtAddr::new(address), frame, true, false);
            frame
        }
    };
    let alias = memory::physical_to_virtual(frame.start_address()).as_mut_ptr::<u64>();
    for index in 0..(PAGE as usize / 8) {
        // SAFETY: a 4 KiB user frame this module owns, mapped at `alias` by the physical map; only
        // this task's slot uses it, and the task is the caller, in the kernel, not in user mode;
        // user pages are no Rust allocation, so no reference aliases these words.
        unsafe { alias.add(index).write_volatile(0) };
    }
}

/// Writes one u64 into a user page through the kernel's alias of its frame.
fn write_user_word(address: u64, value: u64) {
    let physical = memory::translate(VirtAddr::new(address)).expect("a mapped user page");
    let alias = memory::physical_to_virtual(physical).as_mut_ptr::<u64>();
    // SAFETY: as in `map_fresh_user_page`: an aligned word of a user frame
    // this module owns, written through its physical-map alias.
    unsafe { alias.write_volatile(value) };
}

/// Spawns a user task running `program` with `%rdi = arg0`, `%rsi = arg1`,
/// on the boot CPU.
pub fn spawn(
    name: core::fmt::Arguments<'_>,
    program: Program,
    arg0: u64,
    arg1: u64,
) -> Result<sched::TaskHandle, sched::SpawnError> {
    spawn_on(name, program, arg0, arg1, crate::sched::task::BOOT_CPU_ONLY)
}

/// [`spawn`] on the CPUs of `allowed_cpus` (bit `k`: CPU `k`). Its pages
/// live in the kernel's own page tables, which every CPU shares, and are
/// never unmapped (a slot's stack is reused), so no shootdown is owed
/// when the task moves.
pub fn spawn_on(
    name: core::fmt::Arguments<'_>,
    program: Program,
    arg0: u64,
    arg1: u64,
    allowed_cpus: u32,
) -> Result<sched::TaskHandle, sched::SpawnError> {
    assert!(INITIALISED.get().is_some(), "user::init ran");
    sched::spawn_with_user_args(
        name,
        user_task_start,
        user_address_of(program) as usize,
        [arg0, arg1, 0],
        allowed_cpus,
    )
}

/// The kernel half of a user task's start: map its stack and GS page,
/// build its first user frame at `task_pt_regs`, run the exit-to-user work
/// and leave for user mode.
fn user_task_start(user_rip: usize) {
    let slot = sched::current_slot();
    let [arg0, arg1, _] = sched::current_user_args();
    let stack_top = USER_STACKS + (slot as u64 + 1) * USER_STACK_STRIDE;
    for page in 1..=USER_STACK_PAGES {
        map_fresh_user_page(stack_top - page * PAGE);
    }
    let gs_page = USER_TLS + slot as u64 * PAGE;
    map_fresh_user_page(gs_page);
    write_user_word(gs_page, u64::from(sched::current_pid()));
    sched::set_current_user_gs_base(gs_page);
    enter_user_mode(PtRegs {
        ip: user_rip as u64,
        cs: u64::from(selectors::USER_CS),
        flags: X86_EFLAGS_IF | X86_EFLAGS_FIXED,
        sp: stack_top,
        ss: u64::from(selectors::USER_DS),
        orig_ax: NO_ERROR_CODE,
        di: arg0,
        si: arg1,
        ..PtRegs::default()
    })
}

/// The first exit of a user task to user mode (Linux's `ret_from_fork`
/// into `start_thread`'s frame): writes `regs` with the default PKRS in its
/// extension at `task_pt_regs`, runs the exit-to-user work on it and
/// leaves through the IRET exit. The task's x87/SSE state starts from
/// reset here.
pub fn enter_user_mode(regs: PtRegs) -> ! {
    let slot = sched::current_slot();
    let default_pkrs = if pks::enabled() { pks::PKRS_DEFAULT } else { 0 };
    let frame = ExtendedPtRegs {
        generic: GenericExtRegs::default(),
        arch: ArchExtRegs { pks: default_pkrs },
        regs,
    };
    irqflags::local_irq_disable();
    sched::user_state::begin_user_fpu(slot);
    let extended = task::task_ext_regs(slot);
    // The `&mut PtRegs` handed on is the same kind of reference an entry stub's frame gives the
    // generic entry: its container_of step rests on the Tree Borrows argument of
    // `ExtendedPtRegs::from_regs` (the parent pointer, `extended`, covers the whole frame).

    // SAFETY: `task_ext_regs(slot)` is the running task's top frame, left free by prepare_new_task
    // (this code runs below it; no user entry yet, so nothing refers to it); the pointer has the
    // stacks' static's provenance, so it may write there.
    let regs = unsafe {
        extended.write(frame);
        &mut (*extended).regs
    };
    // SAFETY: `regs` is a whole user frame with its extension below it.
    unsafe { extregs_entry::syscall_exit_to_user_mode::<platform::KernelPlatform>(regs) };
    counters::IRET_EXITS.fetch_add(1, Ordering::Relaxed);
    // SAFETY: `regs` is task_pt_regs of the running task, exit work done,
    // interrupts off; this task's kernel frames below are never returned to.
    unsafe { extregs_entry_asm::enter_user_mode(regs) }
}

/// Why a user task dies (Linux's signal and its message).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UserFault {
    /// A trap with Linux's `do_trap` message and signal.
    Trap { vector: u8, signal: u32 },
    /// #PF: `segfault at ADDR`.
    PageFault { address: u64 },
    /// #GP, or an IRET to a non-canonical RIP.
    GeneralProtection,
}

const SIGILL: u32 = 4;
const SIGTRAP: u32 = 5;
const SIGFPE: u32 = 8;
const SIGSEGV: u32 = 11;

impl UserFault {
    fn of_exception(vector: u8, fault_address: Option<u64>) -> UserFault {
        match (vector, fault_address) {
            (_, Some(address)) => UserFault::PageFault { address },
            (13, None) => UserFault::GeneralProtection,
            (0 | 16 | 19, None) => UserFault::Trap { vector, signal: SIGFPE },
            (6, None) => UserFault::Trap { vector, signal: SIGILL },
            (1 | 3, None) => UserFault::Trap { vector, signal: SIGTRAP },
            _ => UserFault::Trap { vector, signal: SIGSEGV },
        }
    }

    fn signal(self) -> u32 {
        match self {
            UserFault::Trap { signal, .. } => signal,
            UserFault::PageFault { .. } | UserFault::GeneralProtection => SIGSEGV,
        }
    }
}

/// Linux's `print-fatal-signals=1`: a killed task's registers are dumped
/// (mode=user turns it on).
static PRINT_FATAL_SIGNALS: AtomicBool = AtomicBool::new(false);

/// Turns [`PRINT_FATAL_SIGNALS`] on or off.
pub fn set_print_fatal_signals(on: bool) {
    PRINT_FATAL_SIGNALS.store(on, Ordering::Relaxed);
}

/// Linux's `debug.exception-trace` (`show_unhandled_signals`): the line
/// about a user fault that kills its task, and its code bytes, are printed
/// (on unless a test turns it off: a walk that kills a task at every step).
static SHOW_UNHANDLED_SIGNALS: AtomicBool = AtomicBool::new(true);

/// Turns [`SHOW_UNHANDLED_SIGNALS`] on or off.
pub fn set_show_unhandled_signals(on: bool) {
    SHOW_UNHANDLED_SIGNALS.store(on, Ordering::Relaxed);
}

/// Prints Linux's one line about a user fault, then the code bytes (and,
/// with print-fatal-signals, the whole frame), and marks the task for death
/// on its way out (the exit-to-user work). Interrupts off.
///
/// `regs` must be the `regs` of a whole `ExtendedPtRegs` (show_regs reads
/// its extension): the user frame at task_pt_regs.
pub fn report_user_fault(regs: &PtRegs, fault: UserFault, error_code: u64) {
    print_user_fault(regs, fault, error_code, None);
    sched::force_fatal_signal(fault.signal());
}

/// A Linux process's fault that its default action will end: Linux's
/// line (`show_signal_msg`, with ` in prog[start+size]` when the RIP is in
/// the program's text) and the code bytes; the signal itself is already
/// pending (`linux::signal::force_fault`).
pub fn report_linux_fault(
    regs: &PtRegs,
    vector: u8,
    fault_address: Option<u64>,
    error_code: u64,
    signal: u32,
    (name, text): (sched::task::TaskName, core::ops::Range<u64>),
) {
    let fault = match (vector, fault_address) {
        (_, Some(address)) => UserFault::PageFault { address },
        (idt::GENERAL_PROTECTION_VECTOR, None) => UserFault::GeneralProtection,
        _ => UserFault::Trap { vector, signal },
    };
    let in_text = text.contains(&regs.ip).then_some((name, text));
    print_user_fault(regs, fault, error_code, in_text);
}

fn print_user_fault(
    regs: &PtRegs,
    fault: UserFault,
    error_code: u64,
    in_text: Option<(sched::task::TaskName, core::ops::Range<u64>)>,
) {
    struct InText(Option<(sched::task::TaskName, core::ops::Range<u64>)>);
    impl core::fmt::Display for InText {
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            match &self.0 {
                Some((name, text)) => {
                    write!(f, " in {}[{:x}+{:x}]", name.as_str(), text.start, text.end - text.start)
                }
                None => Ok(()),
            }
        }
    }
    if !SHOW_UNHANDLED_SIGNALS.load(Ordering::Relaxed) {
        return;
    }
    let in_text = InText(in_text);
    let current = sched::current();
    let (name, pid) = (current.name, current.pid);
    match fault {
        UserFault::PageFault { address } => println!(
            "{name}[{pid}]: segfault at {address:x} ip {:016x} sp {:016x} error {error_code:x}{in_text}",
            regs.ip, regs.sp
        ),
        UserFault::GeneralProtection => println!(
            "traps: {name}[{pid}] general protection fault ip:{:x} sp:{:x} error:{error_code:x}{in_text}",
            regs.ip, regs.sp
        ),
        UserFault::Trap { vector, .. } => println!(
            "traps: {name}[{pid}] trap {} ip:{:x} sp:{:x} error:{error_code:x}{in_text}",
            idt::exception_name(vector),
            regs.ip,
            regs.sp
        ),
    }
    if PRINT_FATAL_SIGNALS.load(Ordering::Relaxed) {
        println!("potentially unexpected fatal signal {}.", fault.signal());
        // SAFETY: `regs` is inside a whole extended frame (this function's
        // callers' contract).
        unsafe { crate::debug::show_regs::show_regs(regs) };
    } else {
        crate::debug::show_regs::show_user_code(regs.ip);
    }
}

/// DR6.BS: the #DB was a single step.
const DR6_BS: u64 = 1 << 14;

/// An exception from user mode. A task of another personality (a Linux
/// process) hands it to that personality (it becomes a signal). In the kernel's own
/// programs a single step (TF) is handled by clearing TF (as a debugger's
/// last step would), and anything else kills the task. Always claims the
/// exception.
pub fn handle_exception(regs: &mut PtRegs, vector: u8, fault_address: Option<u64>) {
    if let Some(handle) = personality::exception_handler() {
        handle(regs, vector, fault_address);
        return;
    }
    if vector == 1 && paranoid::debug_status() & DR6_BS != 0 && regs.flags & X86_EFLAGS_TF != 0 {
        regs.flags &= !X86_EFLAGS_TF;
        counters::USER_SINGLE_STEPS.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let error_code = if regs.has_error_code() { regs.orig_ax } else { 0 };
    report_user_fault(regs, UserFault::of_exception(vector, fault_address), error_code);
}

/// A fault on the IRETQ of the exit to user mode (Linux's
/// `fixup_bad_iret`), called by `extregs_entry_common` before the entry
/// proper: the frame being returned to is bad (a bad SS, or a
/// non-canonical RIP, that a syscall or a `rt_sigreturn` left there), so
/// the CPU faulted in ring 0, on the task stack right below that frame.
/// The fault is the user's own: this builds the user frame the fault
/// stands for at `task_pt_regs`, and the entry then runs as a fault from
/// user mode (a kernel program dies with Linux's line; a Linux process
/// gets its signal, SIGSEGV for a #GP, SIGBUS for #NP/#SS, or its
/// handler, as on Linux). No hook is offered that fault: claiming it would
/// only return to the same refused IRET.
///
/// `fault` is the fault's kernel-mode frame; its `sp` points at the user
/// IRET frame still on the stack, the hardware words of task_pt_regs:
///
/// ```text
///   +--------------------+  <- top of the task stack
///   | ip cs flags sp ss  |   the bad IRET frame (task_pt_regs' last words)
///   +--------------------+  <- fault.sp; the CPU aligns down to 16
///   | #GP: ss..ip, error |   overwriting task_pt_regs' GPR slots, so
///   | #GP: di ... r15    |   only the five words above are still the
///   +--------------------+   user frame's
/// ```
///
/// The new frame takes those five words, the GPRs the fault's stub saved
/// (the user's: POP_REGS had loaded them) and the fault's error code. It
/// overlaps the fault frame, so both are read by value before it is
/// written. Returns the new `PtRegs`' address (the entry's new RSP).
///
/// # Safety
///
/// Only `extregs_entry_common` calls this, with `fault` its frame of a
/// fault whose RIP is the user exit's IRETQ, interrupts off, on a stack
/// below that frame.
#[no_mangle]
pub unsafe extern "C" fn extregs_fixup_bad_iret(fault: *const PtRegs) -> *mut PtRegs {
    let slot = sched::current_slot();
    let user_frame = task::task_pt_regs(slot);
    // SAFETY: `fault` is the stub's whole frame (this function's contract), read by value through
    // the raw pointer: no reference to it exists, so the overlapping write below aliases nothing.
    let fault = unsafe { fault.read() };
    let iret_words = user_frame.cast::<u8>().wrapping_add(core::mem::offset_of!(PtRegs, ip));
    // Linux's BUG_ON(!user_mode(new_stack)): anything else is a broken
    // exit, and building on it would run the fault as someone else's.
    assert!(
        fault.sp == iret_words as u64,
        "bad IRET: RSP {:#x} is not at task_pt_regs' IRET frame",
        fault.sp
    );
    // SAFETY: the five words at `iret_words` are the running task's user IRET frame, above the
    // fault frame: read by value; the pointer has the provenance of the stacks' static.
    let iret = unsafe { iret_words.cast::<extregs_regs::IretFrame>().read() };
    assert!(iret.cs & 3 == 3, "bad IRET: the refused frame's CS {:#x} is not a user CS", iret.cs);
    let regs =
        PtRegs { ip: iret.ip, cs: iret.cs, flags: iret.flags, sp: iret.sp, ss: iret.ss, ..fault };
    counters::BAD_IRETS.fetch_add(1, Ordering::Relaxed);
    crate::entry::check::mark_bad_iret_frame(user_frame as u64);
    // SAFETY: task_pt_regs of the running task, from the stacks' static: nothing holds a
    // reference into it (the fault frame was read by value above, and this function's own frame
    // is below the fault frame); the extension below it is the entry's to fill.
    unsafe { user_frame.write(regs) };
    user_frame
}
