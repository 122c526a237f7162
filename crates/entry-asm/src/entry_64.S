/*
 * entry_64.S - extregs exception entry and exit.
 *
 * Assembled by global_asm! (AT&T syntax) right after the generated
 * asm-offsets.S. Every frame offset below is a generated constant
 * (PTREGS_*, GENERIC_PTREGS_SIZE, EXTREGS_*); none is typed by hand.
 *
 * The frame every stub builds, and the point of the whole project:
 *
 *   higher addresses
 *   +--------------------+  <- RSP before the event (aligned to 16 by the CPU)
 *   | ss                 |
 *   | sp                 |
 *   | flags              |   pushed by the CPU
 *   | cs                 |
 *   | ip                 |
 *   | orig_ax            |   error code (CPU) or -1 (stub)
 *   | di si dx cx ax     |
 *   | r8 r9 r10 r11      |   PUSH_AND_CLEAR_REGS
 *   | bx bp r12..r15     |
 *   +--------------------+  <- %rdi for the call: &PtRegs
 *   | extension          |   subq $GENERIC_PTREGS_SIZE, %rsp
 *   +--------------------+  <- %rsp at the call: &ExtendedPtRegs
 *
 * Rust receives only &PtRegs and finds the extension with container_of
 * (ExtendedPtRegs::from_regs). (PTREGS_SIZE + GENERIC_PTREGS_SIZE) is a
 * multiple of 16 (asserted in extregs-regs), so %rsp is 16-byte aligned at
 * the call, as the C ABI needs.
 *
 * Everything runs in ring 0 for now, so there is no SWAPGS and no CR3 switch.
 */

/* PUSH_AND_CLEAR_REGS and POP_REGS: calling.S, assembled just before this file. */

/*
 * The stub table: IDTENTRY appends one .quad per vector, in vector order.
 * It lives in .data.rel.ro because the kernel is position independent and
 * the bootloader relocates these addresses.
 */
	.pushsection .data.rel.ro.extregs_stub_table, "aw"
	.p2align 3
	.globl	extregs_exception_stub_table
extregs_exception_stub_table:
	.popsection

	.set	extregs_next_vector, 0

/*
 * IDTENTRY_TABLE_ONLY vector, name: a table slot for a vector whose stub is
 * written out by hand below (the NMI), keeping the order check.
 */
.macro IDTENTRY_TABLE_ONLY vector, name
	.if \vector - extregs_next_vector
	.error "IDTENTRY lines must list every vector in order"
	.endif
	.set	extregs_next_vector, extregs_next_vector + 1
	.pushsection .data.rel.ro.extregs_stub_table, "aw"
	.quad	asm_exc_\name
	.popsection
.endm

/*
 * IDTENTRY vector, name, has_error_code: one stub.
 *
 * If the CPU pushed no error code, push -1 so orig_ax is always there and
 * every vector has the same frame. Then save the GPRs, load the vector into
 * %esi (after the save, so no interrupted register is lost) and share the
 * rest with every other vector in extregs_entry_common.
 */
.macro IDTENTRY vector, name, has_error_code
	IDTENTRY_TABLE_ONLY \vector, \name

	.text
	.p2align 4
	.globl	asm_exc_\name
	.type	asm_exc_\name, @function
asm_exc_\name:
	.if \has_error_code == 0
	pushq	$-1
	.endif
	PUSH_AND_CLEAR_REGS
	movl	$\vector, %esi
	jmp	extregs_entry_common
	.size	asm_exc_\name, . - asm_exc_\name
.endm


/*
 * extregs_entry_common: reserve the extension, call Rust, undo, iretq.
 *
 *   on entry:                       at the call:
 *   | ip cs flags sp ss    |        | ip cs flags sp ss    |
 *   | orig_ax              |        | orig_ax              |
 *   | di ... r15           |        | di ... r15           |
 *   +----------------------+ <-rsp  +----------------------+ <- rdi = &PtRegs
 *                                   | generic | arch.pks   |
 *                                   +----------------------+ <- rsp
 */
/*
 * extregs_entry_text_start .. extregs_entry_text_end: all of this file's
 * code. Hardware breakpoints are refused there (a paranoid entry runs it
 * before it clears DR7), and interrupt-point coverage counts it.
 */
	.text
	.p2align 4
	.globl	extregs_entry_text_start
extregs_entry_text_start:
	.globl	extregs_entry_common
	.type	extregs_entry_common, @function
extregs_entry_common:
	cld
	subq	$GENERIC_PTREGS_SIZE, %rsp
	leaq	EXTREGS_REGS(%rsp), %rdi
	call	extregs_exception_entry
	addq	$GENERIC_PTREGS_SIZE, %rsp
	POP_REGS
	.if EXTREGS_FAULT_INJECTION
	movb	$0, extregs_fault_skip_r12(%rip)
	.endif
	iretq
	.size	extregs_entry_common, . - extregs_entry_common

	.if EXTREGS_FAULT_INJECTION
	/* Fault-injection flag bytes (EXTREGS_FAULT_INJECTION=1 builds only). */
	.data
	.globl	extregs_fault_skip_r12
extregs_fault_skip_r12:
	.byte	0
	.globl	extregs_fault_nmi_reuse
extregs_fault_nmi_reuse:
	.byte	0
	.text
	.endif

/* Vector, name (Linux's asm_exc_* names), and whether the CPU pushes an error code. */
IDTENTRY  0, divide_error,                 0
IDTENTRY  1, debug,                        0
IDTENTRY_TABLE_ONLY 2, nmi
IDTENTRY  3, int3,                         0
IDTENTRY  4, overflow,                     0
IDTENTRY  5, bounds,                       0
IDTENTRY  6, invalid_op,                   0
IDTENTRY  7, device_not_available,         0
IDTENTRY  8, double_fault,                 1
IDTENTRY  9, coproc_segment_overrun,       0
IDTENTRY 10, invalid_tss,                  1
IDTENTRY 11, segment_not_present,          1
IDTENTRY 12, stack_segment,                1
IDTENTRY 13, general_protection,           1
IDTENTRY 14, page_fault,                   1
IDTENTRY 15, spurious_interrupt_bug,       0
IDTENTRY 16, coprocessor_error,            0
IDTENTRY 17, alignment_check,              1
IDTENTRY 18, machine_check,                0
IDTENTRY 19, simd_coprocessor_error,       0
IDTENTRY 20, virtualization_exception,     0
IDTENTRY 21, control_protection,           1
IDTENTRY 22, reserved_22,                  0
IDTENTRY 23, reserved_23,                  0
IDTENTRY 24, reserved_24,                  0
IDTENTRY 25, reserved_25,                  0
IDTENTRY 26, reserved_26,                  0
IDTENTRY 27, reserved_27,                  0
IDTENTRY 28, hypervisor_injection,         0
IDTENTRY 29, vmm_communication,            1
IDTENTRY 30, security_exception,           1
IDTENTRY 31, reserved_31,                  0

	.if extregs_next_vector - 32
	.error "the stub table must cover all 32 exception vectors"
	.endif

/*
 * External interrupts: vectors FIRST_EXTERNAL_VECTOR..NR_VECTORS-1.
 *
 * One small stub per vector pushes its vector number into the orig_ax slot
 * (as Linux's irq_entries_start does) and jumps to extregs_irq_common, which
 * saves the GPRs, moves the vector into %esi and stores -1 in orig_ax, so an
 * IRQ frame looks exactly like an exception frame without an error code.
 *
 *   stub:                            extregs_irq_common, at the jmp:
 *   | ip cs flags sp ss |            | ip cs flags sp ss |
 *   | vector            | <- rsp     | -1 (orig_ax)      |  rsi = vector
 *                                    | di ... r15        |
 *                                    +-------------------+ <- rsp = &PtRegs
 */
	.set	NMI_VECTOR, 2
	.set	FIRST_EXTERNAL_VECTOR, 32
	.set	NR_VECTORS, 256

	.text
	.p2align 4
	.globl	extregs_irq_entries_start
extregs_irq_entries_start:
	.rept	NR_VECTORS - FIRST_EXTERNAL_VECTOR
	.pushsection .data.rel.ro.extregs_stub_table, "aw"
	.quad	1f
	.popsection
	.p2align 3
1:	pushq	$extregs_next_vector
	jmp	extregs_irq_common
	.set	extregs_next_vector, extregs_next_vector + 1
	.endr
	.globl	extregs_irq_entries_end
extregs_irq_entries_end:

	.if extregs_next_vector - NR_VECTORS
	.error "the stub table must cover all 256 vectors"
	.endif

	.p2align 4
	.globl	extregs_irq_common
	.type	extregs_irq_common, @function
extregs_irq_common:
	PUSH_AND_CLEAR_REGS
	movq	PTREGS_ORIG_AX(%rsp), %rsi
	movq	$-1, PTREGS_ORIG_AX(%rsp)
	jmp	extregs_entry_common
	.size	extregs_irq_common, . - extregs_irq_common

/*
 * NMI: IST stack, and safe against nesting.
 *
 * The problem (Linux's entry_64.S explains it at length): NMIs are blocked
 * from delivery until the next IRET, *any* IRET. If the NMI handler takes an
 * exception (an int3, a #PF, a #DB), that exception's IRETQ unblocks NMIs
 * while the first NMI is still running. A second NMI then enters through the
 * same IST pointer, so the CPU writes its frame exactly where the first NMI's
 * frame is, and the first NMI can no longer return.
 *
 * The scheme here keeps Linux's idea (the outermost NMI owns a *copy* of its
 * frame; a nested NMI only marks work as pending; the outermost repeats the
 * handler) with the state in one memory byte instead of on the stack:
 *
 *   +-------------------------+  <- IST top
 *   | landing: ip cs fl sp ss |  every NMI's CPU frame lands here; only
 *   |                         |  the stub reads it, and only while NMIs
 *   |                         |  are still blocked
 *   | scratch                 |  %rax while the stub decides
 *   | iret_copy: ip..ss       |  the outermost NMI's frame, copied down:
 *   | orig_ax = -1            |  no later NMI writes here
 *   | di ... r15              |
 *   +-------------------------+  <- &PtRegs
 *   | extension               |
 *   +-------------------------+  <- rsp at the call; the handler, and any
 *   | ...                     |     exception it takes, run below
 *
 * extregs_nmi_state is IDLE, RUNNING or PENDING:
 *
 *  - IDLE, and the interrupted RIP is not in the exit window: this is the
 *    outermost NMI. Mark RUNNING, copy the landing frame to iret_copy, build
 *    PtRegs on it and run the handler (NMIs are still blocked throughout).
 *  - RUNNING or PENDING: an NMI nested inside the outermost one. Set PENDING
 *    and IRETQ straight back from the landing zone. Nothing below the
 *    landing zone was touched, so the outer frame is intact.
 *  - On the way out the outermost NMI restores the GPRs and then does
 *    `decb extregs_nmi_state`: RUNNING -> IDLE means done; PENDING ->
 *    RUNNING means an NMI came in meanwhile, so it runs the handler again on
 *    the same iret_copy (Linux's repeat_nmi). The check and the state change
 *    are one instruction, so no NMI can slip between them.
 *  - IDLE, but the interrupted RIP is in the exit window (after that decb,
 *    up to and including the final iretq): the outermost NMI has finished
 *    everything but its IRETQ. This NMI takes over: it drops its own landing
 *    frame, moves %rsp back to iret_copy (still intact, with every GPR
 *    already restored) and handles itself as the outermost NMI would have
 *    on a repeat.
 */
	.data
	.globl	extregs_nmi_state
	.type	extregs_nmi_state, @object
extregs_nmi_state:
	.byte	NMI_STATE_IDLE
	.size	extregs_nmi_state, . - extregs_nmi_state

/* NMI_COPY_WORD field: landing.field -> iret_copy.field, with %rsp at scratch. */
.macro NMI_COPY_WORD field
	movq	NMI_TOP_LANDING-NMI_TOP_SCRATCH+\field(%rsp), %rax
	movq	%rax, NMI_TOP_IRET_COPY-NMI_TOP_SCRATCH+\field(%rsp)
.endm

	.text
	.p2align 4
	.globl	asm_exc_nmi
	.type	asm_exc_nmi, @function
asm_exc_nmi:
	/* rsp = &landing.ip: the CPU's frame. NMIs are blocked. */
	pushq	%rax					/* rsp = &scratch */
	.if EXTREGS_FAULT_INJECTION
	cmpb	$0, extregs_fault_nmi_reuse(%rip)
	jne	.Lnmi_outermost
	.endif
	cmpb	$NMI_STATE_IDLE, extregs_nmi_state(%rip)
	jne	.Lnmi_nested
	leaq	.Lnmi_exit_window_start(%rip), %rax
	cmpq	%rax, NMI_TOP_LANDING-NMI_TOP_SCRATCH+IRET_FRAME_IP(%rsp)
	jb	.Lnmi_outermost
	leaq	.Lnmi_exit_window_end(%rip), %rax
	cmpq	%rax, NMI_TOP_LANDING-NMI_TOP_SCRATCH+IRET_FRAME_IP(%rsp)
	jbe	.Lnmi_take_over_exit

.Lnmi_outermost:
	NMI_COPY_WORD IRET_FRAME_IP
	NMI_COPY_WORD IRET_FRAME_CS
	NMI_COPY_WORD IRET_FRAME_FLAGS
	NMI_COPY_WORD IRET_FRAME_SP
	NMI_COPY_WORD IRET_FRAME_SS
	popq	%rax					/* rsp = &landing */
	leaq	NMI_TOP_IRET_COPY-NMI_TOP_LANDING(%rsp), %rsp	/* rsp = &iret_copy */
.Lnmi_run:
	movb	$NMI_STATE_RUNNING, extregs_nmi_state(%rip)
	pushq	$-1					/* orig_ax */
	PUSH_AND_CLEAR_REGS
	cld
	subq	$GENERIC_PTREGS_SIZE, %rsp
	leaq	EXTREGS_REGS(%rsp), %rdi
	movl	$NMI_VECTOR, %esi
	call	extregs_exception_entry
	addq	$GENERIC_PTREGS_SIZE, %rsp
	POP_REGS					/* rsp = &iret_copy */
	decb	extregs_nmi_state(%rip)
.Lnmi_exit_window_start:
	jnz	.Lnmi_repeat
.Lnmi_exit_window_end:
	iretq
.Lnmi_repeat:
	/* An NMI nested while we ran: handle it on the same iret_copy. */
	jmp	.Lnmi_run

.Lnmi_nested:
	movb	$NMI_STATE_PENDING, extregs_nmi_state(%rip)
	popq	%rax					/* rsp = &landing */
	iretq

.Lnmi_take_over_exit:
	popq	%rax					/* rsp = &landing */
	leaq	NMI_TOP_IRET_COPY-NMI_TOP_LANDING(%rsp), %rsp	/* rsp = &iret_copy */
	jmp	.Lnmi_run
	.size	asm_exc_nmi, . - asm_exc_nmi

	.text
	.globl	extregs_entry_text_end
extregs_entry_text_end:
