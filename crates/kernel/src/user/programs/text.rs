//! The user programs' code: one `global_asm!` block in the page-aligned
//! section `.text.extregs_user`, between `extregs_user_text_start` and
//! `extregs_user_text_end` (the parent module declares each program and
//! says what it does). Every program is position independent, and speaks
//! to the kernel only through SYSCALL.

use super::super::syscall::numbers::*;
use super::{BENCH_SYSCALL_BATCH, FUZZ_UNMAPPED_USER_ADDRESS, FUZZ_USER_SPINS};

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

    .globl extregs_user_port_read
extregs_user_port_read:
    mov %edi, %edx
    in %dx, %al
    xor %edi, %edi
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

    .globl extregs_user_walk_int
extregs_user_walk_int:
    push %rdi                       /* 0: int $0xf0, 1: int $0xf1, 2: int3, else int $0xf2 */
    mov .List_patterns+0(%rip), %rax
    mov .List_patterns+8(%rip), %rbx
    mov .List_patterns+16(%rip), %rcx
    mov .List_patterns+24(%rip), %rdx
    mov .List_patterns+32(%rip), %rsi
    mov .List_patterns+40(%rip), %rdi
    mov .List_patterns+48(%rip), %rbp
    mov .List_patterns+56(%rip), %r8
    mov .List_patterns+64(%rip), %r9
    mov .List_patterns+72(%rip), %r10
    mov .List_patterns+80(%rip), %r11
    mov .List_patterns+88(%rip), %r12
    mov .List_patterns+96(%rip), %r13
    mov .List_patterns+104(%rip), %r14
    mov .List_patterns+112(%rip), %r15
    cmpq $1, (%rsp)
    jb 1f
    je 2f
    cmpq $2, (%rsp)
    jne 4f
    int3
    jmp 3f
4:
    int ${ist_walk_machine_check}
    jmp 3f
1:
    int ${ist_walk_debug}
    jmp 3f
2:
    int ${ist_walk_nmi}
3:
    cmp .List_patterns+0(%rip), %rax
    jne 5f
    cmp .List_patterns+8(%rip), %rbx
    jne 5f
    cmp .List_patterns+16(%rip), %rcx
    jne 5f
    cmp .List_patterns+24(%rip), %rdx
    jne 5f
    cmp .List_patterns+32(%rip), %rsi
    jne 5f
    cmp .List_patterns+40(%rip), %rdi
    jne 5f
    cmp .List_patterns+48(%rip), %rbp
    jne 5f
    cmp .List_patterns+56(%rip), %r8
    jne 5f
    cmp .List_patterns+64(%rip), %r9
    jne 5f
    cmp .List_patterns+72(%rip), %r10
    jne 5f
    cmp .List_patterns+80(%rip), %r11
    jne 5f
    cmp .List_patterns+88(%rip), %r12
    jne 5f
    cmp .List_patterns+96(%rip), %r13
    jne 5f
    cmp .List_patterns+104(%rip), %r14
    jne 5f
    cmp .List_patterns+112(%rip), %r15
    jne 5f
    /* The user's GS base is back: %gs:0 is this task's PID. */
    mov ${getpid}, %eax
    syscall
    cmp %gs:0, %rax
    jne 6f
    xor %edi, %edi
    USER_EXIT
5:
    mov $1, %edi
    USER_EXIT
6:
    mov $2, %edi
    USER_EXIT
    .p2align 3
.List_patterns:
    .quad 0x2121212121212121
    .quad 0x2222222222222222
    .quad 0x2323232323232323
    .quad 0x2424242424242424
    .quad 0x2525252525252525
    .quad 0x2626262626262626
    .quad 0x2727272727272727
    .quad 0x2828282828282828
    .quad 0x2929292929292929
    .quad 0x2a2a2a2a2a2a2a2a
    .quad 0x2b2b2b2b2b2b2b2b
    .quad 0x2c2c2c2c2c2c2c2c
    .quad 0x2d2d2d2d2d2d2d2d
    .quad 0x2e2e2e2e2e2e2e2e
    .quad 0x2f2f2f2f2f2f2f2f

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
    ist_walk_debug = const super::IST_WALK_DEBUG_VECTOR,
    ist_walk_nmi = const super::IST_WALK_NMI_VECTOR,
    ist_walk_machine_check = const super::IST_WALK_MACHINE_CHECK_VECTOR,
    rt_sigaction = const 13,
    rt_sigreturn = const 15,
    tkill = const 200,
    sigusr1 = const 10,
    sigill = const 4,
    sigtrap = const 5,
    sigsegv = const 11,
    fuzz_start = const super::super::FUZZ_SIGNAL_START_OFFSET,
    fuzz_resume_slot = const super::super::USER_FUZZ_PAGE + super::super::FUZZ_SIGNAL_RESUME_OFFSET,
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
