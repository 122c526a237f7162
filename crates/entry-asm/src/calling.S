/*
 * calling.S - the register save/restore macros every extregs entry stub
 * uses (Linux's arch/x86/entry/calling.h): included in front of entry_64.S
 * and of the benchmark's stubs (crates/bench), after the generated
 * asm-offsets.S, so every offset below is a generated constant.
 */

/*
 * PUSH_AND_CLEAR_REGS: save the 15 GPRs into the PtRegs slots below orig_ax
 * and clear them, so values of the interrupted context cannot steer
 * speculation in the handler (as Linux does).
 *
 *   before:                         after:
 *   | ...ip cs flags sp ss |        | ...ip cs flags sp ss |
 *   | orig_ax              | <-rsp  | orig_ax              |
 *                                   | di ... r15           |
 *                                   +----------------------+ <- rsp = &PtRegs
 *
 * The slots are filled with movq at generated offsets rather than a push
 * sequence, so the layout is decided by extregs-regs alone.
 */
.macro PUSH_AND_CLEAR_REGS
	subq	$PTREGS_ORIG_AX, %rsp
	movq	%rdi, PTREGS_DI(%rsp)
	movq	%rsi, PTREGS_SI(%rsp)
	movq	%rdx, PTREGS_DX(%rsp)
	movq	%rcx, PTREGS_CX(%rsp)
	movq	%rax, PTREGS_AX(%rsp)
	movq	%r8,  PTREGS_R8(%rsp)
	movq	%r9,  PTREGS_R9(%rsp)
	movq	%r10, PTREGS_R10(%rsp)
	movq	%r11, PTREGS_R11(%rsp)
	movq	%rbx, PTREGS_BX(%rsp)
	movq	%rbp, PTREGS_BP(%rsp)
	movq	%r12, PTREGS_R12(%rsp)
	movq	%r13, PTREGS_R13(%rsp)
	movq	%r14, PTREGS_R14(%rsp)
	movq	%r15, PTREGS_R15(%rsp)
	xorl	%edi, %edi
	xorl	%esi, %esi
	xorl	%edx, %edx
	xorl	%ecx, %ecx
	xorl	%eax, %eax
	xorl	%r8d, %r8d
	xorl	%r9d, %r9d
	xorl	%r10d, %r10d
	xorl	%r11d, %r11d
	xorl	%ebx, %ebx
	xorl	%ebp, %ebp
	xorl	%r12d, %r12d
	xorl	%r13d, %r13d
	xorl	%r14d, %r14d
	xorl	%r15d, %r15d
.endm

/*
 * POP_REGS: reload the 15 GPRs from PtRegs (possibly edited by a handler)
 * and drop them and orig_ax, leaving %rsp at ip for iretq.
 *
 *   before:                         after:
 *   | ...ip cs flags sp ss |        | ip cs flags sp ss    | <- rsp
 *   | orig_ax              |
 *   | di ... r15           |
 *   +----------------------+ <-rsp
 */
.macro POP_REGS
	movq	PTREGS_R15(%rsp), %r15
	movq	PTREGS_R14(%rsp), %r14
	movq	PTREGS_R13(%rsp), %r13
	.if EXTREGS_FAULT_INJECTION
	cmpb	$0, extregs_fault_skip_r12(%rip)
	jne	.Lskip_r12_\@
	.endif
	movq	PTREGS_R12(%rsp), %r12
.Lskip_r12_\@:
	movq	PTREGS_BP(%rsp), %rbp
	movq	PTREGS_BX(%rsp), %rbx
	movq	PTREGS_R11(%rsp), %r11
	movq	PTREGS_R10(%rsp), %r10
	movq	PTREGS_R9(%rsp), %r9
	movq	PTREGS_R8(%rsp), %r8
	movq	PTREGS_AX(%rsp), %rax
	movq	PTREGS_CX(%rsp), %rcx
	movq	PTREGS_DX(%rsp), %rdx
	movq	PTREGS_SI(%rsp), %rsi
	movq	PTREGS_DI(%rsp), %rdi
	addq	$PTREGS_IP, %rsp
.endm

