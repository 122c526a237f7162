/*
 * extregs_context_switch(prev: *mut ThreadContext, next: *const ThreadContext)
 *
 * Linux's __switch_to_asm. The scheduler calls it with interrupts off, on
 * prev's stack; it returns on next's stack, into whatever call of this
 * function next was switched out by (or into a new task's first
 * instruction). The C ABI makes the caller save every register but the
 * callee-saved ones, so those are all a switch keeps, in an
 * InactiveTaskFrame on the stack being left:
 *
 *   prev's stack                            next's stack
 *   +---------------------------+           +---------------------------+
 *   | prev's own frames         |           | next's own frames (or, on |
 *   |   (for a preempted task:  |           |   a new task, a zero word)|
 *   |   its PtRegs, extension   |           |                           |
 *   |   and the IRQ's Rust      |           |                           |
 *   |   frames are above here)  |           |                           |
 *   | ret_addr  (the call's)    |           | ret_addr                  |
 *   | bp bx r12 r13 r14 r15     |           | bp bx r12 r13 r14 r15     |
 *   +---------------------------+ <- saved  +---------------------------+ <- loaded
 *        into prev->sp                           from next->sp
 *
 * Order matters: prev's RSP is stored *before* RSP is loaded from next, so
 * prev->sp names the frame just written. An NMI, #DB or #MC landing on any
 * instruction here runs on its IST stack and returns to that instruction,
 * whichever of the two stacks RSP is on at the time.
 */
	.text
	.p2align 4
	.globl	extregs_context_switch
	.type	extregs_context_switch, @function
extregs_context_switch:
	subq	$INACTIVE_TASK_FRAME_RET_ADDR, %rsp
	movq	%rbp, INACTIVE_TASK_FRAME_BP(%rsp)
	movq	%rbx, INACTIVE_TASK_FRAME_BX(%rsp)
	movq	%r12, INACTIVE_TASK_FRAME_R12(%rsp)
	movq	%r13, INACTIVE_TASK_FRAME_R13(%rsp)
	movq	%r14, INACTIVE_TASK_FRAME_R14(%rsp)
	movq	%r15, INACTIVE_TASK_FRAME_R15(%rsp)

	movq	%rsp, THREAD_SP(%rdi)
	movq	THREAD_SP(%rsi), %rsp

	movq	INACTIVE_TASK_FRAME_R15(%rsp), %r15
	movq	INACTIVE_TASK_FRAME_R14(%rsp), %r14
	movq	INACTIVE_TASK_FRAME_R13(%rsp), %r13
	movq	INACTIVE_TASK_FRAME_R12(%rsp), %r12
	movq	INACTIVE_TASK_FRAME_BX(%rsp), %rbx
	movq	INACTIVE_TASK_FRAME_BP(%rsp), %rbp
	addq	$INACTIVE_TASK_FRAME_RET_ADDR, %rsp
	ret
	.size	extregs_context_switch, . - extregs_context_switch
