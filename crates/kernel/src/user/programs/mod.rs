//! The user programs: ring-3 code that is part of the kernel image, in its
//! own page-aligned section (`.text.extregs_user`) so that no kernel code
//! shares its pages. [`super::init`] maps those pages a second time, at
//! [`super::USER_TEXT`], as user pages (U/S=1, read-only, executable); the
//! programs are position independent (RIP-relative only), so they run there.
//!
//! Each program starts with `%rdi` and `%rsi` set by its spawner (every
//! other GPR is zero) and speaks to the kernel only through SYSCALL, with
//! Linux's ABI (number in `%rax`, arguments in `%rdi`, `%rsi`, `%rdx`,
//! result in `%rax`; `%rcx` and `%r11` are clobbered).

mod text;

/// A user program: the address of its first instruction in the kernel
/// image (its user address is [`super::user_address_of`] that).
#[derive(Clone, Copy, Debug)]
pub struct Program {
    pub name: &'static str,
    start: unsafe extern "C" fn(),
}

impl Program {
    /// The kernel-image address of the program's first instruction.
    pub fn kernel_address(self) -> u64 {
        self.start as *const () as u64
    }
}

extern "C" {
    fn extregs_user_text_start();
    fn extregs_user_text_end();
    fn extregs_user_hello();
    fn extregs_user_spin();
    fn extregs_user_ud2();
    fn extregs_user_syscall_loop();
    fn extregs_user_load();
    fn extregs_user_port_read();
    fn extregs_user_gpr_check();
    fn extregs_user_get_regs();
    fn extregs_user_set_return();
    fn extregs_user_exit0();
    fn extregs_user_set_ss();
    fn extregs_user_int3();
    fn extregs_user_single_step();
    fn extregs_user_walk_int();
    fn extregs_user_raw_syscall();
    fn extregs_user_write();
    fn extregs_user_gs_check();
    fn extregs_user_bench_syscalls();
    fn extregs_user_break_kernel_stack();
    fn extregs_user_fuzz_syscall();
    fn extregs_user_fuzz_syscall_site();
    fn extregs_user_fuzz_syscall_resume();
    fn extregs_user_fuzz_int3();
    fn extregs_user_fuzz_int3_site();
    fn extregs_user_fuzz_int3_resume();
    fn extregs_user_fuzz_ud2();
    fn extregs_user_fuzz_ud2_site();
    fn extregs_user_fuzz_ud2_resume();
    fn extregs_user_fuzz_page_fault();
    fn extregs_user_fuzz_page_fault_site();
    fn extregs_user_fuzz_page_fault_resume();
    fn extregs_user_fuzz_irq();
    fn extregs_user_fuzz_irq_site();
    fn extregs_user_fuzz_irq_resume();
    fn extregs_user_fuzz_nmi();
    fn extregs_user_fuzz_nmi_site();
    fn extregs_user_fuzz_nmi_resume();
    fn extregs_user_linux_signal();
    fn extregs_user_xmm_yield();
    fn extregs_user_fuzz_signal();
}

/// The user-mode trampolines of the fuzzer (`mode=fuzz` runs its outermost
/// level in ring 3 in some iterations): like the kernel's, each loads all
/// 15 GPRs from the input `PtRegs` at `%rdi`, raises its event at `site`,
/// and from `resume` on stores all 15 into the output `PtRegs` (its
/// pointer saved on the user stack) and exits 0. The wait loops of the IRQ
/// and NMI ones count down a word on the user stack. Every address is in the
/// kernel image; [`super::user_address_of_symbol`] gives the user one.
#[derive(Clone, Copy, Debug)]
pub struct FuzzTrampoline {
    pub program: Program,
    pub site: u64,
    pub resume: u64,
}

/// The user fuzz events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UserFuzzEvent {
    /// `syscall` (the GPRs carry the number in `%rax`).
    Syscall,
    Int3,
    Ud2,
    /// A load from an unmapped user page (`movabs addr, %rax`).
    PageFault,
    /// `syscall` asking for an IRQ on return (number in `%rax`), then a
    /// wait loop the IRQ lands in.
    Irq,
    /// `outb %al, $0x21`: opens IRQ 0 at the 8259 (`%al` holds the mask),
    /// which sets off the NMI the kernel armed (`apic::arm_pic_nmi`); a
    /// wait loop the NMI lands in follows.
    Nmi,
}

/// The trampoline of a user fuzz event.
pub fn fuzz_trampoline(event: UserFuzzEvent) -> FuzzTrampoline {
    let make = |name,
                start: unsafe extern "C" fn(),
                site: unsafe extern "C" fn(),
                resume: unsafe extern "C" fn()| {
        FuzzTrampoline {
            program: Program { name, start },
            site: super::user_address_of_kernel_text(site as *const () as u64),
            resume: super::user_address_of_kernel_text(resume as *const () as u64),
        }
    };
    match event {
        UserFuzzEvent::Syscall => make(
            "fuzz-syscall",
            extregs_user_fuzz_syscall,
            extregs_user_fuzz_syscall_site,
            extregs_user_fuzz_syscall_resume,
        ),
        UserFuzzEvent::Int3 => make(
            "fuzz-int3",
            extregs_user_fuzz_int3,
            extregs_user_fuzz_int3_site,
            extregs_user_fuzz_int3_resume,
        ),
        UserFuzzEvent::Ud2 => make(
            "fuzz-ud2",
            extregs_user_fuzz_ud2,
            extregs_user_fuzz_ud2_site,
            extregs_user_fuzz_ud2_resume,
        ),
        UserFuzzEvent::PageFault => make(
            "fuzz-page-fault",
            extregs_user_fuzz_page_fault,
            extregs_user_fuzz_page_fault_site,
            extregs_user_fuzz_page_fault_resume,
        ),
        UserFuzzEvent::Irq => make(
            "fuzz-irq",
            extregs_user_fuzz_irq,
            extregs_user_fuzz_irq_site,
            extregs_user_fuzz_irq_resume,
        ),
        UserFuzzEvent::Nmi => make(
            "fuzz-nmi",
            extregs_user_fuzz_nmi,
            extregs_user_fuzz_nmi_site,
            extregs_user_fuzz_nmi_resume,
        ),
    }
}

/// The unmapped user address the page-fault trampoline loads from.
pub const FUZZ_UNMAPPED_USER_ADDRESS: u64 = super::USER_SPACE_BASE + 0x3e00_0000;
/// Spins of the user IRQ trampoline's wait loop before it gives up.
pub const FUZZ_USER_SPINS: u32 = 1_000_000_000;

/// `[start, end)` of the user text in the kernel image (page aligned).
pub fn text_range() -> core::ops::Range<u64> {
    extregs_user_text_start as *const () as u64..extregs_user_text_end as *const () as u64
}

macro_rules! program {
    ($const:ident, $name:literal, $symbol:ident, $doc:literal) => {
        #[doc = $doc]
        pub const $const: Program = Program { name: $name, start: $symbol };
    };
}

program!(HELLO, "hello", extregs_user_hello, "`write(1, \"hello ...\")`, then `exit(0)`.");
program!(
    SPIN,
    "spin",
    extregs_user_spin,
    "Spins `%rdi` × 1000 iterations with r12-r15, rbx and rbp holding \
     patterns, checking them and `%gs:0` (its PID) after every 1000: the \
     timer preempts it in user mode. Exit 0, or 1 on a lost register, 2 on a \
     wrong GS base."
);
program!(UD2, "ud2", extregs_user_ud2, "Executes `ud2`: killed with SIGILL.");
program!(
    LINUX_SIGNAL,
    "signal",
    extregs_user_linux_signal,
    "For a Linux process: installs a SIGUSR1 handler (SA_SIGINFO | \
     SA_RESTORER), fills rbx, rbp, r12, r13 and r15 with patterns and sends \
     itself SIGUSR1 with tkill. The handler checks RSP = 8 mod 16, %rdi = \
     SIGUSR1, si_signo and %rdx + 304 = %rsi (ucontext, then siginfo), \
     reports through the interrupted RSP's frame, clobbers those registers \
     and returns through the restorer (rt_sigreturn). With `%rdi` = 1 it \
     also writes __KERNEL_CS into the frame's CS first. Exit 0, or: 1 \
     sigaction failed, 2 tkill's result is lost, 3 a register is lost, 10 + \
     the handler's report (10: it never ran, 12 RSP, 13 %rdi, 14 si_signo, \
     15 %rdx)."
);
program!(
    FUZZ_SIGNAL,
    "fuzz-signal",
    extregs_user_fuzz_signal,
    "For a Linux process, the fuzzer's ring-3 level that ends in a signal: \
     installs one handler for SIGILL, SIGTRAP and SIGSEGV, then jumps to the \
     trampoline whose address the fuzz page holds (`%rdi`, `%rsi` as that \
     trampoline takes them). The handler points the frame's RIP at the \
     resume address the fuzz page holds and returns through rt_sigreturn. \
     Exit 90 when a sigaction fails."
);
program!(
    XMM_YIELD,
    "xmm-yield",
    extregs_user_xmm_yield,
    "Fills XMM0-XMM15 with `%rdi` (each register's two halves), then \
     yields 200 times, checking after each yield that every XMM register \
     still holds it. Exit 0, or 1 when another task's value shows through."
);
program!(
    SYSCALL_LOOP,
    "syscall-loop",
    extregs_user_syscall_loop,
    "Makes `%rdi` getpid calls, checking each result and `%gs:0` against \
     the first. Exit 0, or 2 (wrong PID) or 3 (wrong GS base)."
);
program!(
    LOAD,
    "load",
    extregs_user_load,
    "Loads 8 bytes from the address in `%rdi` (a kernel address: killed \
     with SIGSEGV) and exits with their second byte (the status shows what \
     was read)."
);
program!(
    PORT_READ,
    "port-read",
    extregs_user_port_read,
    "Reads one byte from the I/O port in `%rdi` (`in %dx, %al`), then exits 0: \
     killed with SIGSEGV (a #GP) unless the task's I/O bitmap opens the port."
);
program!(
    GPR_CHECK,
    "gpr-check",
    extregs_user_gpr_check,
    "Fills every GPR with a pattern, makes a getpid SYSCALL, and checks: \
     every GPR but rax/rcx/r11 kept, rax = `%gs:0` (its PID), rcx = the \
     address after the SYSCALL, r11 = RFLAGS. Exit 0, or a bitmask of \
     what was wrong."
);
program!(
    GET_REGS,
    "get-regs",
    extregs_user_get_regs,
    "Fills r12-r15 with patterns and asks for a copy of its own PtRegs \
     (`SYS_GET_REGS` into its stack), then `exit(0)`."
);
program!(
    SET_RETURN,
    "set-return",
    extregs_user_set_return,
    "`SYS_SET_RETURN(%rdi, %rsi)`: asks the kernel to return to `%rdi` \
     with the RFLAGS bits `%rsi` added; if it ever comes back, exit 1."
);
program!(
    SET_SS,
    "set-ss",
    extregs_user_set_ss,
    "`SYS_SET_RETURN_SS(%rdi)`: asks the kernel to return with SS = `%rdi`; \
     if it ever comes back, exit 1."
);
program!(EXIT0, "exit0", extregs_user_exit0, "`exit(0)` (a target for SET_RETURN).");
program!(INT3, "int3", extregs_user_int3, "Executes `int3`: killed with SIGTRAP.");
/// The free external vector the breakpoint walks route to the #DB stub
/// (on the #DB's IST stack, with a gate user mode may use), so that a walk
/// whose own breakpoint needs vector 1's gate can still run that stub from
/// user mode.
pub const IST_WALK_DEBUG_VECTOR: u8 = 0xf0;
/// The same for the NMI stub (on the NMI's IST stack): an NMI entry from
/// user mode at a known instruction.
pub const IST_WALK_NMI_VECTOR: u8 = 0xf1;
/// The same for the #MC stub (on the #MC's IST stack), which only
/// `mode=oops cause=user-machine-check-walk` routes: a #MC from user mode.
pub const IST_WALK_MACHINE_CHECK_VECTOR: u8 = 0xf2;
program!(
    WALK_INT,
    "walk-int",
    extregs_user_walk_int,
    "Fills every GPR with a pattern and executes `int $0xf0` (`%rdi` = 0), \
     `int $0xf1` (1), `int3` (2) or `int $0xf2` (otherwise); then checks \
     every GPR, and that `%gs:0` is its PID (getpid). Exit 0, 1 (a GPR lost) \
     or 2 (the wrong GS base). Only the breakpoint walks route 0xf0, 0xf1 and \
     0xf2, to the #DB, NMI and #MC stubs, with gates user mode may use, and \
     take the int3 over; anywhere else the int is a #GP, and the int3 a \
     SIGTRAP, that kills it."
);
program!(
    SINGLE_STEP,
    "single-step",
    extregs_user_single_step,
    "Sets TF itself with popf and runs on: each instruction then raises a \
     #DB from user mode; the kernel clears TF at the first, and the program \
     exits 0."
);
program!(
    RAW_SYSCALL,
    "raw-syscall",
    extregs_user_raw_syscall,
    "SYSCALL number `%rdi`, then exits with `-%rax` (so -ENOSYS is status \
     38)."
);
program!(
    WRITE,
    "write",
    extregs_user_write,
    "`write(1, %rdi, %rsi)`, then exits with `-%rax` (0 on success: it \
     writes nothing useful on purpose only when the kernel refuses)."
);
program!(
    GS_CHECK,
    "gs-check",
    extregs_user_gs_check,
    "Checks `%gs:0` (its PID) against getpid, then yields and checks it \
     again, `%rdi` times: every switch must carry its user GS base. Exit \
     0, or 4 on a wrong GS base."
);

program!(
    BENCH_SYSCALLS,
    "bench-syscalls",
    extregs_user_bench_syscalls,
    "The bench's syscall round trips: `%rdi` batches of 16 `SYS_BENCH_NOP` \
     SYSCALLs, each batch timed with RDTSC (LFENCE first), the ticks stored \
     one u64 per batch at `%rsi`. Exit 0."
);

program!(
    BREAK_KERNEL_STACK,
    "break-kernel-stack",
    extregs_user_break_kernel_stack,
    "`SYS_BREAK_KERNEL_STACK`, then `int3`: the #DF of `mode=oops \
     cause=user-double-fault`. Exits 1 if it ever gets past the int3."
);

/// SYSCALLs per timed batch of [`BENCH_SYSCALLS`].
pub const BENCH_SYSCALL_BATCH: u64 = 16;
