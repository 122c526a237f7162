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

use super::syscall::numbers::*;

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
    fn extregs_user_gpr_check();
    fn extregs_user_get_regs();
    fn extregs_user_set_return();
    fn extregs_user_exit0();
    fn extregs_user_set_ss();
    fn extregs_user_int3();
    fn extregs_user_single_step();
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

core::arch::global_asm!(
    r#"
    .pushsection .text.extregs_user, "ax"
    .p2align 12
    .globl extregs_user_text_start
extregs_user_text_start:

    /* exit(%edi): never returns. */
.macro USER_EXIT
    mov ${exit}, %eax
    syscall
    ud2
.endm

    .globl extregs_user_hello
extregs_user_hello:
    mov ${write}, %eax
    mov $1, %edi
    lea .Lhello_message(%rip), %rsi
    mov $(.Lhello_end - .Lhello_message), %edx
    syscall
    xor %edi, %edi
    USER_EXIT
.Lhello_message:
    .ascii "hello from user mode, over SYSCALL and SYSRET\n"
.Lhello_end:

    .globl extregs_user_spin
extregs_user_spin:
    mov %rdi, %r8                   /* outer iterations */
    mov ${getpid}, %eax
    syscall
    mov %rax, %r9                   /* PID */
    movabs $0x1212121212121212, %r12
    movabs $0x1313131313131313, %r13
    movabs $0x1414141414141414, %r14
    movabs $0x1515151515151515, %r15
    movabs $0x0b0b0b0b0b0b0b0b, %rbx
    movabs $0x0d0d0d0d0d0d0d0d, %rbp
.Lspin_outer:
    mov $1000, %ecx
.Lspin_inner:
    dec %ecx
    jnz .Lspin_inner
    movabs $0x1212121212121212, %rax
    cmp %rax, %r12
    jne .Lspin_lost
    movabs $0x1313131313131313, %rax
    cmp %rax, %r13
    jne .Lspin_lost
    movabs $0x1414141414141414, %rax
    cmp %rax, %r14
    jne .Lspin_lost
    movabs $0x1515151515151515, %rax
    cmp %rax, %r15
    jne .Lspin_lost
    movabs $0x0b0b0b0b0b0b0b0b, %rax
    cmp %rax, %rbx
    jne .Lspin_lost
    movabs $0x0d0d0d0d0d0d0d0d, %rax
    cmp %rax, %rbp
    jne .Lspin_lost
    cmp %gs:0, %r9
    jne .Lspin_bad_gs
    dec %r8
    jnz .Lspin_outer
    xor %edi, %edi
    USER_EXIT
.Lspin_lost:
    mov $1, %edi
    USER_EXIT
.Lspin_bad_gs:
    mov $2, %edi
    USER_EXIT

    .globl extregs_user_ud2
extregs_user_ud2:
    ud2

    .globl extregs_user_syscall_loop
extregs_user_syscall_loop:
    mov %rdi, %r12
    mov ${getpid}, %eax
    syscall
    mov %rax, %r13
.Lloop_next:
    mov ${getpid}, %eax
    syscall
    cmp %rax, %r13
    jne .Lloop_bad_pid
    cmp %gs:0, %r13
    jne .Lloop_bad_gs
    dec %r12
    jnz .Lloop_next
    xor %edi, %edi
    USER_EXIT
.Lloop_bad_pid:
    mov $2, %edi
    USER_EXIT
.Lloop_bad_gs:
    mov $3, %edi
    USER_EXIT

    .globl extregs_user_load
extregs_user_load:
    mov (%rdi), %rax
    shr $8, %rax
    mov %eax, %edi
    USER_EXIT

    .globl extregs_user_gpr_check
extregs_user_gpr_check:
    movabs $0x0b0b0b0b0b0b0b0b, %rbx
    movabs $0x0d0d0d0d0d0d0d0d, %rbp
    movabs $0x1010101010101010, %r10
    movabs $0x0808080808080808, %r8
    movabs $0x0909090909090909, %r9
    movabs $0x1212121212121212, %r12
    movabs $0x1313131313131313, %r13
    movabs $0x1414141414141414, %r14
    movabs $0x1515151515151515, %r15
    movabs $0x0e0e0e0e0e0e0e0e, %rsi
    movabs $0x0f0f0f0f0f0f0f0f, %rdi
    movabs $0x0c0c0c0c0c0c0c0c, %rdx
    pushfq                          /* the RFLAGS the SYSCALL saves */
    mov ${getpid}, %eax
    syscall
.Lgpr_after_syscall:
    /* %rsp is the one register left: its slot collects the verdict. */
    cmp (%rsp), %r11
    movq $0, (%rsp)
    je 90f
    orq $4, (%rsp)
90: cmp %gs:0, %rax
    je 91f
    orq $1, (%rsp)
91: lea .Lgpr_after_syscall(%rip), %rax
    cmp %rax, %rcx
    je 93f
    orq $2, (%rsp)
93: movabs $0x0b0b0b0b0b0b0b0b, %rax
    cmp %rax, %rbx
    je 94f
    orq $8, (%rsp)
94: movabs $0x0d0d0d0d0d0d0d0d, %rax
    cmp %rax, %rbp
    je 95f
    orq $16, (%rsp)
95: movabs $0x1010101010101010, %rax
    cmp %rax, %r10
    je 96f
    orq $32, (%rsp)
96: movabs $0x0808080808080808, %rax
    cmp %rax, %r8
    je 97f
    orq $64, (%rsp)
97: movabs $0x0909090909090909, %rax
    cmp %rax, %r9
    je 98f
    orq $128, (%rsp)
98: movabs $0x1212121212121212, %rax
    cmp %rax, %r12
    jne 99f
    movabs $0x1313131313131313, %rax
    cmp %rax, %r13
    jne 99f
    movabs $0x1414141414141414, %rax
    cmp %rax, %r14
    jne 99f
    movabs $0x1515151515151515, %rax
    cmp %rax, %r15
    jne 99f
    movabs $0x0e0e0e0e0e0e0e0e, %rax
    cmp %rax, %rsi
    jne 99f
    movabs $0x0f0f0f0f0f0f0f0f, %rax
    cmp %rax, %rdi
    jne 99f
    movabs $0x0c0c0c0c0c0c0c0c, %rax
    cmp %rax, %rdx
    je 92f
99: orq $256, (%rsp)
92: pop %rdi
    USER_EXIT

    .globl extregs_user_get_regs
extregs_user_get_regs:
    sub ${ptregs_size}, %rsp
    mov %rsp, %rdi
    movabs $0x1212121212121212, %r12
    movabs $0x1313131313131313, %r13
    movabs $0x1414141414141414, %r14
    movabs $0x1515151515151515, %r15
    mov ${get_regs}, %eax
    syscall
    mov %rax, %rdi
    USER_EXIT

    .globl extregs_user_set_return
extregs_user_set_return:
    mov ${set_return}, %eax
    syscall
    mov $1, %edi
    USER_EXIT

    .globl extregs_user_set_ss
extregs_user_set_ss:
    mov ${set_return_ss}, %eax
    syscall
    mov $1, %edi
    USER_EXIT

    .globl extregs_user_exit0
extregs_user_exit0:
    xor %edi, %edi
    USER_EXIT

    .globl extregs_user_int3
extregs_user_int3:
    int3
    xor %edi, %edi
    USER_EXIT

    .globl extregs_user_single_step
extregs_user_single_step:
    pushfq
    orq ${tf}, (%rsp)
    popfq
    nop
    nop
    nop
    xor %edi, %edi
    USER_EXIT

    .globl extregs_user_raw_syscall
extregs_user_raw_syscall:
    mov %rdi, %rax
    syscall
    neg %rax
    mov %rax, %rdi
    USER_EXIT

    .globl extregs_user_write
extregs_user_write:
    mov %rsi, %rdx
    mov %rdi, %rsi
    mov $1, %edi
    mov ${write}, %eax
    syscall
    cmp %rax, %rdx
    je .Lwrite_ok
    neg %rax
    mov %rax, %rdi
    USER_EXIT
.Lwrite_ok:
    xor %edi, %edi
    USER_EXIT

    .globl extregs_user_gs_check
extregs_user_gs_check:
    mov %rdi, %r12
.Lgs_next:
    mov %gs:0, %r13
    mov ${getpid}, %eax
    syscall
    cmp %rax, %r13
    jne .Lgs_bad
    mov ${sched_yield}, %eax
    syscall
    cmp %gs:0, %r13
    jne .Lgs_bad
    dec %r12
    jnz .Lgs_next
    xor %edi, %edi
    USER_EXIT
.Lgs_bad:
    mov $4, %edi
    USER_EXIT

    .globl extregs_user_bench_syscalls
extregs_user_bench_syscalls:
    mov %rdi, %r12
    mov %rsi, %r13
.Lbench_batch:
    lfence
    rdtsc
    shl $32, %rdx
    or %rdx, %rax
    mov %rax, %r14
    mov ${bench_batch}, %r15d
.Lbench_call:
    mov ${bench_nop}, %eax
    syscall
    dec %r15d
    jnz .Lbench_call
    lfence
    rdtsc
    shl $32, %rdx
    or %rdx, %rax
    sub %r14, %rax
    mov %rax, (%r13)
    add $8, %r13
    dec %r12
    jnz .Lbench_batch
    xor %edi, %edi
    USER_EXIT

    .globl extregs_user_break_kernel_stack
extregs_user_break_kernel_stack:
    mov ${break_kernel_stack}, %eax
    syscall
    int3
    mov $1, %edi
    USER_EXIT

    /* The fuzzer's user trampolines (see FuzzTrampoline). */
.macro USER_FUZZ_ENTER name
    .globl extregs_user_fuzz_\name
extregs_user_fuzz_\name:
    push %rsi
    push ${fuzz_spins}
    movq {r15}(%rdi), %r15
    movq {r14}(%rdi), %r14
    movq {r13}(%rdi), %r13
    movq {r12}(%rdi), %r12
    movq {bp}(%rdi), %rbp
    movq {bx}(%rdi), %rbx
    movq {r11}(%rdi), %r11
    movq {r10}(%rdi), %r10
    movq {r9}(%rdi), %r9
    movq {r8}(%rdi), %r8
    movq {ax}(%rdi), %rax
    movq {cx}(%rdi), %rcx
    movq {dx}(%rdi), %rdx
    movq {si}(%rdi), %rsi
    movq {di}(%rdi), %rdi
    .globl extregs_user_fuzz_\name\()_site
extregs_user_fuzz_\name\()_site:
.endm

.macro USER_FUZZ_LEAVE name
    .globl extregs_user_fuzz_\name\()_resume
extregs_user_fuzz_\name\()_resume:
    lea {word}(%rsp), %rsp          /* drop the spin counter, keep flags */
    xchgq %rdi, (%rsp)
    movq %r15, {r15}(%rdi)
    movq %r14, {r14}(%rdi)
    movq %r13, {r13}(%rdi)
    movq %r12, {r12}(%rdi)
    movq %rbp, {bp}(%rdi)
    movq %rbx, {bx}(%rdi)
    movq %r11, {r11}(%rdi)
    movq %r10, {r10}(%rdi)
    movq %r9, {r9}(%rdi)
    movq %r8, {r8}(%rdi)
    movq %rax, {ax}(%rdi)
    movq %rcx, {cx}(%rdi)
    movq %rdx, {dx}(%rdi)
    movq %rsi, {si}(%rdi)
    popq {di}(%rdi)
    xor %edi, %edi
    USER_EXIT
.endm

    USER_FUZZ_ENTER syscall
    syscall
    USER_FUZZ_LEAVE syscall

    USER_FUZZ_ENTER int3
    int3
    USER_FUZZ_LEAVE int3

    USER_FUZZ_ENTER ud2
    ud2
    USER_FUZZ_LEAVE ud2

    USER_FUZZ_ENTER page_fault
    movabsq {unmapped}, %rax
    USER_FUZZ_LEAVE page_fault

    USER_FUZZ_ENTER irq
    syscall
.Lfuzz_irq_wait:
    decl (%rsp)
    jnz .Lfuzz_irq_wait
    USER_FUZZ_LEAVE irq

    USER_FUZZ_ENTER nmi
    outb %al, ${pic_mask_port}
.Lfuzz_nmi_wait:
    decl (%rsp)
    jnz .Lfuzz_nmi_wait
    USER_FUZZ_LEAVE nmi


    /* The kernel's struct sigaction at (%rsp), 32 bytes: \handler with
     * SA_SIGINFO | SA_RESTORER, the shared restorer, an empty mask. */
.macro USER_SIGACTION handler
    lea \handler(%rip), %rax
    mov %rax, 0(%rsp)
    movq ${sa_flags}, 8(%rsp)
    lea .Lsig_restorer(%rip), %rax
    mov %rax, 16(%rsp)
    movq $0, 24(%rsp)
.endm

    /* A Linux process's signal round trip (LINUX_SIGNAL). The stack:
     * 0..32 the sigaction, 32 the handler's report. */
    .globl extregs_user_linux_signal
extregs_user_linux_signal:
    mov %rdi, %r14
    sub $48, %rsp
    movq $0, 32(%rsp)
    USER_SIGACTION .Lsig_handler
    mov ${rt_sigaction}, %eax
    mov ${sigusr1}, %edi
    mov %rsp, %rsi
    xor %edx, %edx
    mov ${word}, %r10d
    syscall
    test %rax, %rax
    jnz .Lsig_exit1
    mov ${getpid}, %eax
    syscall
    mov %rax, %rdi
    movabs $0x5151515151515151, %rbx
    movabs $0xb0b0b0b0b0b0b0b0, %rbp
    movabs $0x1212121212121212, %r12
    movabs $0x1313131313131313, %r13
    movabs $0x1515151515151515, %r15
    mov ${sigusr1}, %esi
    mov ${tkill}, %eax
    syscall
    test %rax, %rax
    jnz .Lsig_exit2
    movabs $0x5151515151515151, %rcx
    cmp %rcx, %rbx
    jne .Lsig_exit3
    movabs $0xb0b0b0b0b0b0b0b0, %rcx
    cmp %rcx, %rbp
    jne .Lsig_exit3
    movabs $0x1212121212121212, %rcx
    cmp %rcx, %r12
    jne .Lsig_exit3
    movabs $0x1313131313131313, %rcx
    cmp %rcx, %r13
    jne .Lsig_exit3
    movabs $0x1515151515151515, %rcx
    cmp %rcx, %r15
    jne .Lsig_exit3
    mov 32(%rsp), %rdi
    cmp $1, %rdi
    jne .Lsig_exit_report
    xor %edi, %edi
    USER_EXIT
.Lsig_exit1:
    mov $1, %edi
    USER_EXIT
.Lsig_exit2:
    mov $2, %edi
    USER_EXIT
.Lsig_exit3:
    mov $3, %edi
    USER_EXIT
.Lsig_exit_report:
    add $10, %edi
    USER_EXIT

    /* %rdi = signal, %rsi = &siginfo, %rdx = &ucontext. */
.Lsig_handler:
    mov {uc_rsp}(%rdx), %r8
    mov %rsp, %rax
    and $15, %eax
    mov $2, %ecx
    cmp $8, %eax
    jne .Lsig_report
    mov $3, %ecx
    cmp ${sigusr1}, %edi
    jne .Lsig_report
    mov $4, %ecx
    cmpl ${sigusr1}, (%rsi)
    jne .Lsig_report
    mov $5, %ecx
    lea {info_from_uc}(%rdx), %rax
    cmp %rax, %rsi
    jne .Lsig_report
    mov $1, %ecx
.Lsig_report:
    mov %rcx, 32(%r8)
    /* The frame's r14 is the mode: 1 writes __KERNEL_CS into its CS. */
    cmpq $1, {uc_r14}(%rdx)
    jne 1f
    movw ${kernel_cs}, {uc_cs}(%rdx)
1:
    xor %ebx, %ebx
    xor %ebp, %ebp
    xor %r12d, %r12d
    xor %r13d, %r13d
    xor %r14d, %r14d
    xor %r15d, %r15d
    ret
.Lsig_restorer:
    mov ${rt_sigreturn}, %eax
    syscall
    ud2

    /* FUZZ_SIGNAL: handlers first, then the level's own trampoline. */
    .globl extregs_user_fuzz_signal
extregs_user_fuzz_signal:
    mov %rdi, %r12
    mov %rsi, %r13
    sub $32, %rsp
    USER_SIGACTION .Lfuzz_signal_handler
    mov ${sigill}, %ebx
    call .Lfuzz_signal_install
    mov ${sigtrap}, %ebx
    call .Lfuzz_signal_install
    mov ${sigsegv}, %ebx
    call .Lfuzz_signal_install
    add $32, %rsp
    mov %r12, %rdi
    mov %r13, %rsi
    jmp *{fuzz_start}(%rdi)
    /* rt_sigaction(%ebx, the action at 8(%rsp) after the call) */
.Lfuzz_signal_install:
    mov ${rt_sigaction}, %eax
    mov %ebx, %edi
    lea 8(%rsp), %rsi
    xor %edx, %edx
    mov ${word}, %r10d
    syscall
    test %rax, %rax
    jnz .Lfuzz_signal_failed
    ret
.Lfuzz_signal_failed:
    mov $90, %edi
    USER_EXIT
.Lfuzz_signal_handler:
    movabs ${fuzz_resume_slot}, %rax
    mov (%rax), %rax
    mov %rax, {uc_rip}(%rdx)
    ret

    /* XMM_YIELD: every XMM register holds %rdi across 200 yields. */
    .globl extregs_user_xmm_yield
extregs_user_xmm_yield:
    mov %rdi, %r12
    movq %rdi, %xmm0
    punpcklqdq %xmm0, %xmm0
    movdqa %xmm0, %xmm1
    movdqa %xmm0, %xmm2
    movdqa %xmm0, %xmm3
    movdqa %xmm0, %xmm4
    movdqa %xmm0, %xmm5
    movdqa %xmm0, %xmm6
    movdqa %xmm0, %xmm7
    movdqa %xmm0, %xmm8
    movdqa %xmm0, %xmm9
    movdqa %xmm0, %xmm10
    movdqa %xmm0, %xmm11
    movdqa %xmm0, %xmm12
    movdqa %xmm0, %xmm13
    movdqa %xmm0, %xmm14
    movdqa %xmm0, %xmm15
    mov $200, %r13d
.Lxmm_next:
    mov ${sched_yield}, %eax
    syscall
    /* All 32 halves through the stack, each compared with the value. */
    sub $256, %rsp
    movdqu %xmm0, 0(%rsp)
    movdqu %xmm1, 16(%rsp)
    movdqu %xmm2, 32(%rsp)
    movdqu %xmm3, 48(%rsp)
    movdqu %xmm4, 64(%rsp)
    movdqu %xmm5, 80(%rsp)
    movdqu %xmm6, 96(%rsp)
    movdqu %xmm7, 112(%rsp)
    movdqu %xmm8, 128(%rsp)
    movdqu %xmm9, 144(%rsp)
    movdqu %xmm10, 160(%rsp)
    movdqu %xmm11, 176(%rsp)
    movdqu %xmm12, 192(%rsp)
    movdqu %xmm13, 208(%rsp)
    movdqu %xmm14, 224(%rsp)
    movdqu %xmm15, 240(%rsp)
    xor %ecx, %ecx
.Lxmm_compare:
    cmp %r12, (%rsp,%rcx,8)
    jne .Lxmm_bad
    inc %ecx
    cmp $32, %ecx
    jne .Lxmm_compare
    add $256, %rsp
    dec %r13d
    jnz .Lxmm_next
    xor %edi, %edi
    USER_EXIT
.Lxmm_bad:
    mov $1, %edi
    USER_EXIT

    .p2align 12
    .globl extregs_user_text_end
extregs_user_text_end:
    .popsection
"#,
    exit = const SYS_EXIT,
    write = const SYS_WRITE,
    getpid = const SYS_GETPID,
    sched_yield = const SYS_SCHED_YIELD,
    get_regs = const SYS_GET_REGS,
    set_return = const SYS_SET_RETURN,
    set_return_ss = const SYS_SET_RETURN_SS,
    bench_nop = const SYS_BENCH_NOP,
    bench_batch = const BENCH_SYSCALL_BATCH,
    fuzz_spins = const FUZZ_USER_SPINS,
    break_kernel_stack = const SYS_BREAK_KERNEL_STACK,
    unmapped = const FUZZ_UNMAPPED_USER_ADDRESS,
    pic_mask_port = const crate::arch::apic::PIC_MASTER_DATA,
    word = const core::mem::size_of::<u64>(),
    r15 = const extregs_entry_asm::asm_offsets::PTREGS_R15,
    r14 = const extregs_entry_asm::asm_offsets::PTREGS_R14,
    r13 = const extregs_entry_asm::asm_offsets::PTREGS_R13,
    r12 = const extregs_entry_asm::asm_offsets::PTREGS_R12,
    bp = const extregs_entry_asm::asm_offsets::PTREGS_BP,
    bx = const extregs_entry_asm::asm_offsets::PTREGS_BX,
    r11 = const extregs_entry_asm::asm_offsets::PTREGS_R11,
    r10 = const extregs_entry_asm::asm_offsets::PTREGS_R10,
    r9 = const extregs_entry_asm::asm_offsets::PTREGS_R9,
    r8 = const extregs_entry_asm::asm_offsets::PTREGS_R8,
    ax = const extregs_entry_asm::asm_offsets::PTREGS_AX,
    cx = const extregs_entry_asm::asm_offsets::PTREGS_CX,
    dx = const extregs_entry_asm::asm_offsets::PTREGS_DX,
    si = const extregs_entry_asm::asm_offsets::PTREGS_SI,
    di = const extregs_entry_asm::asm_offsets::PTREGS_DI,
    ptregs_size = const core::mem::size_of::<extregs_regs::PtRegs>(),
    tf = const extregs_regs::X86_EFLAGS_TF,
    rt_sigaction = const 13,
    rt_sigreturn = const 15,
    tkill = const 200,
    sigusr1 = const 10,
    sigill = const 4,
    sigtrap = const 5,
    sigsegv = const 11,
    fuzz_start = const super::FUZZ_SIGNAL_START_OFFSET,
    fuzz_resume_slot = const super::USER_FUZZ_PAGE + super::FUZZ_SIGNAL_RESUME_OFFSET,
    uc_rip = const core::mem::offset_of!(extregs_regs::linux_signal::UContext, uc_mcontext)
        + core::mem::offset_of!(extregs_regs::linux_signal::SigContext, ip),
    sa_flags = const 0x0400_0004,
    kernel_cs = const extregs_regs::selectors::KERNEL_CS,
    uc_rsp = const core::mem::offset_of!(extregs_regs::linux_signal::UContext, uc_mcontext)
        + core::mem::offset_of!(extregs_regs::linux_signal::SigContext, sp),
    uc_r14 = const core::mem::offset_of!(extregs_regs::linux_signal::UContext, uc_mcontext)
        + core::mem::offset_of!(extregs_regs::linux_signal::SigContext, r14),
    uc_cs = const core::mem::offset_of!(extregs_regs::linux_signal::UContext, uc_mcontext)
        + core::mem::offset_of!(extregs_regs::linux_signal::SigContext, cs),
    info_from_uc = const extregs_regs::linux_signal::FRAME_INFO_OFFSET
        - extregs_regs::linux_signal::FRAME_UC_OFFSET,
    options(att_syntax)
);
