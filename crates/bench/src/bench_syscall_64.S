/*
 * bench_syscall_64.S - the SYSCALL entries of the benchmark (kernel only:
 * they need the kernel's per-CPU area and fall back to its
 * entry_SYSCALL_64). Included after the generated asm-offsets.S and
 * calling.S, so every offset is a generated constant.
 */

	.text
/*
 * extregs_bench_entry_text_start..end: entry code like entry_64.S's (it
 * runs in ring 0 on the user's stack and GS until its SWAPGS and stack
 * switch), so the kernel refuses breakpoints here and an unwinder stops at
 * a frame that interrupted it, as for the entry text proper.
 */
	.globl	extregs_bench_entry_text_start
extregs_bench_entry_text_start:
/*
 * The SYSCALL entries of `extregs bench` (mode=bench points LSTAR at one
 * of them for a timed run, then back at entry_SYSCALL_64): the SYSCALL
 * frame of entry_SYSCALL_64, then one of the bench handlers, then SYSRETQ.
 * They differ in
 * one thing, the entry design: BENCH_SYSCALL_BY_VALUE builds pt_regs only
 * (a pad word keeps the call aligned) and its handler keeps the state in
 * its own frame; BENCH_SYSCALL_EXTENDED reserves the extension below
 * pt_regs, as entry_SYSCALL_64 does. Any other syscall number than the
 * bench's (the program's exit) goes to entry_SYSCALL_64 untouched.
 */
.macro BENCH_SYSCALL_FRAME
	cmpq	$BENCH_SYSCALL_NR, %rax
	jne	entry_SYSCALL_64
	swapgs
	movq	%rsp, %gs:PERCPU_USER_RSP_SCRATCH
	movq	%gs:PERCPU_TOP_OF_STACK, %rsp
	pushq	$__USER_DS
	pushq	%gs:PERCPU_USER_RSP_SCRATCH
	pushq	%r11
	pushq	$__USER_CS
	pushq	%rcx
	pushq	%rax
	PUSH_AND_CLEAR_REGS
	cld
.endm

/*
 * BENCH_SYSRET: POP_REGS, the user stack, SYSRETQ, without Linux's checks
 * (RCX == RIP, RCX canonical, R11 == RFLAGS with RF and TF clear), which
 * would put instructions into the measured path that no bench syscall
 * needs:
 *
 *   - RCX and R11 come back from the frame's cx and flags, which SYSCALL
 *     filled from the CPU (the user's next RIP and RFLAGS), and the bench
 *     handlers never edit the frame (they touch only their entry state);
 *   - so RCX is the address right after a SYSCALL instruction in a user
 *     page, and no user page is mapped at or above TASK_SIZE_MAX
 *     (2^47 - 4096): the kernel asserts that for every user page it maps
 *     (memory::map_user_page). The highest possible RCX is TASK_SIZE_MAX
 *     itself, canonical, so the SYSRET #GP in ring 0 (CVE-2012-0217)
 *     cannot happen here;
 *   - the bench's program runs with TF clear (no debugger here).
 *
 * entry_SYSCALL_64, whose handlers may change the frame, checks them all.
 */
.macro BENCH_SYSRET
	POP_REGS
	movq	IRET_FRAME_SP(%rsp), %rsp
	swapgs
	sysretq
.endm

	.p2align 4
	.globl	extregs_bench_syscall_by_value
extregs_bench_syscall_by_value:
	BENCH_SYSCALL_FRAME
	movq	%rsp, %rdi
	subq	$CALL_PAD_BELOW_PTREGS, %rsp
	call	extregs_bench_by_value_handler
	addq	$CALL_PAD_BELOW_PTREGS, %rsp
	BENCH_SYSRET

	.p2align 4
	.globl	extregs_bench_syscall_extended
extregs_bench_syscall_extended:
	BENCH_SYSCALL_FRAME
	subq	$GENERIC_PTREGS_SIZE, %rsp
	leaq	EXTREGS_REGS(%rsp), %rdi
	call	extregs_bench_extended_handler
	addq	$GENERIC_PTREGS_SIZE, %rsp
	BENCH_SYSRET

	.globl	extregs_bench_entry_text_end
extregs_bench_entry_text_end:
