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

/*
 * ENCODE_FRAME_POINTER, with %rdi = &PtRegs right before the call into
 * Rust: %rbp = &PtRegs | ENCODED_FRAME_TAG (Linux's ENCODE_FRAME_POINTER).
 * The Rust side is built with frame pointers, so its first frame saves this
 * value, and an unwinder walking RBP up from any handler finds the tag and
 * with it the interrupt frame (crates/unwind). The interrupted RBP is in
 * PtRegs.bp, which POP_REGS puts back.
 */
.macro ENCODE_FRAME_POINTER
	leaq	ENCODED_FRAME_TAG(%rdi), %rbp
.endm

/*
 * RECORD_ENTRY_VECTOR: right after the extension is reserved, write in it
 * which vector (%esi) entered the frame: GenericExtRegs::vector =
 * ENTRY_VECTOR_RECORDED | vector (the generic entry keeps it). This comes
 * before the call into Rust, the first point where an unwinder follows the
 * frame's tag, so it reads this frame's own vector, never a stale one left
 * on the stack; an event anywhere before the call interrupted entry code,
 * where the unwinder stops (Stop::InEntryCode). %eax is free
 * (PUSH_AND_CLEAR_REGS saved it).
 */
.macro RECORD_ENTRY_VECTOR
	leal	ENTRY_VECTOR_RECORDED(%rsi), %eax
	movw	%ax, EXTREGS_GENERIC_VECTOR(%rsp)
.endm

/*
 * PTREGS_CFI_START / PTREGS_CFI_END bracket the stubs' calls into Rust, from
 * where %rsp = &PtRegs (before the extension is reserved) to where it is
 * again: call-frame information that tells a debugger the interrupted
 * context is in PtRegs (a signal frame, as Linux's UNWIND_HINT_REGS says to
 * its ORC unwinder), so gdb's bt walks from a handler through the interrupt
 * frame into the interrupted function. The CFA is the end of PtRegs; a
 * .cfi_adjust_cfa_offset follows the extension's subq, and the range ends
 * right after the addq that undoes it.
 *
 * No .cfi_signal_frame: gdb would then print each stub as `<signal handler
 * called>` instead of by name (asm_exc_nmi, extregs_entry_common), and a
 * backtrace that names the stubs is what this CFI is for. (LLVM's
 * assembler, which assembled this before, left the flag out as well.)
 */
.macro PTREGS_CFI_START
	.cfi_startproc simple
	.cfi_def_cfa %rsp, PTREGS_SIZE
	.cfi_offset %rip, PTREGS_IP - PTREGS_SIZE
	.cfi_offset %rsp, PTREGS_SP - PTREGS_SIZE
	.cfi_offset %rbp, PTREGS_BP - PTREGS_SIZE
	.cfi_offset %rbx, PTREGS_BX - PTREGS_SIZE
	.cfi_offset %r12, PTREGS_R12 - PTREGS_SIZE
	.cfi_offset %r13, PTREGS_R13 - PTREGS_SIZE
	.cfi_offset %r14, PTREGS_R14 - PTREGS_SIZE
	.cfi_offset %r15, PTREGS_R15 - PTREGS_SIZE
.endm

.macro PTREGS_CFI_END
	.cfi_endproc
.endm

/**
 * CALL_EXTREGS_ENTRY - reserve the extension, record the entry, tag RBP,
 * call into Rust, drop the extension: the one sequence every entry stub
 * ends in (Linux's idtentry_body).
 * @cfunc:  the Rust entry, `extern "C" fn(&mut PtRegs, ...)`: it gets
 *          %rdi = &PtRegs, and %rsi as the stub left it
 * @record: what the extension records as the entry (GenericExtRegs::vector):
 *          `vector_in_esi` for an IDT stub (ENTRY_VECTOR_RECORDED | %esi,
 *          the vector), `syscall` for entry_SYSCALL_64 (ENTRY_SYSCALL)
 *
 * Entered with %rsp = &PtRegs (PUSH_AND_CLEAR_REGS done, the CPU frame
 * above it), GS and CR4.AC already the kernel's. Leaves with %rsp =
 * &PtRegs again and %rax as the Rust entry returned it.
 *
 *   | ss .. ip, orig_ax     |
 *   | di .. r15             |
 *   +-----------------------+ <- &PtRegs: %rsp on entry and on return
 *   | arch: pks             |    subq $GENERIC_PTREGS_SIZE, %rsp
 *   | generic: vector, ...  |    (the extension, written by the generic
 *   +-----------------------+ <- entry; the vector here, before the call)
 *   | return address, Rust  |
 *
 * (168 + GENERIC_PTREGS_SIZE) % 16 == 0 (asserted in extregs-regs), so the
 * call is made with a 16-byte aligned %rsp. The call-frame information
 * around it describes PtRegs as a signal frame (PTREGS_CFI_START), so gdb
 * unwinds from any handler into the interrupted function.
 */
.macro CALL_EXTREGS_ENTRY cfunc:req, record:req
	PTREGS_CFI_START
	subq	$GENERIC_PTREGS_SIZE, %rsp
	.cfi_adjust_cfa_offset GENERIC_PTREGS_SIZE
	.ifc \record, syscall
	movw	$ENTRY_SYSCALL, EXTREGS_GENERIC_VECTOR(%rsp)
	.else
	.ifc \record, vector_in_esi
	RECORD_ENTRY_VECTOR
	.else
	.error "CALL_EXTREGS_ENTRY: record is vector_in_esi or syscall"
	.endif
	.endif
	leaq	EXTREGS_REGS(%rsp), %rdi
	ENCODE_FRAME_POINTER
	call	\cfunc
	addq	$GENERIC_PTREGS_SIZE, %rsp
	PTREGS_CFI_END
.endm
