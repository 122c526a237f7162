/*
 * entry_64.S - extregs exception entry and exit.
 *
 * Assembled by build.rs (the GNU assembler, AT&T syntax, -g) right after
 * the generated asm-offsets.S. Every frame offset below is a generated constant
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
 * User mode (ring 3) enters here too, and through entry_SYSCALL_64 below.
 * Three rules carry it, as in Linux:
 *
 *  - SWAPGS on every entry from user mode and every exit to it, so kernel
 *    code always runs with GS = extregs_per_cpu and user code never sees it.
 *    The ordinary stubs decide by the saved CS; a paranoid entry (NMI, #DB,
 *    #MC, #DF) can land between an exit's SWAPGS and its IRETQ, where CS is
 *    the kernel's but GS the user's, so from kernel mode it reads
 *    MSR_GS_BASE instead (PARANOID_GS_ENTER; FSGSBASE is not assumed).
 *  - TSS.RSP0 is the top of the running task's kernel stack (the scheduler
 *    updates it and %gs:PERCPU_TOP_OF_STACK on every switch), so a frame
 *    from user mode lands exactly at task_pt_regs(task).
 *  - The IST entries NMI, #DB and #MC from user mode copy their frame from
 *    the IST stack to that same place and run there
 *    (IST_FRAME_TO_TASK_STACK): every user frame sits at task_pt_regs. A
 *    #DF never moves (its cause may be that very stack).
 *
 * No CR3 switch: the kernel and user pages share one page table (no PTI).
 */

/* PUSH_AND_CLEAR_REGS and POP_REGS: calling.S, assembled just before this file. */

/*
 * ASM_CLAC: every entry clears RFLAGS.AC when the CPU has SMAP (Linux's
 * ASM_CLAC): an interrupt gate leaves AC as the interrupted code had it, and
 * a handler must not inherit the user-access window of a copy_from_user it
 * interrupted (or AC set by user mode). IRETQ puts the interrupted AC back.
 * CLAC is #UD without SMAP, so it is guarded by the flag the kernel sets at
 * boot (Linux patches it in with ALTERNATIVE); the flags it clobbers were
 * saved by the CPU.
 */
.macro ASM_CLAC
	testb	$1, extregs_smap_enabled(%rip)
	jz	.Lno_clac_\@
	clac
.Lno_clac_\@:
.endm

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
 * IDTENTRY_STUB_START vector, name, has_error_code: what every exception
 * stub starts with: its table slot, its symbol and, when the CPU pushes no
 * error code, -1 in the orig_ax slot.
 */
.macro IDTENTRY_STUB_START vector, name, has_error_code
	IDTENTRY_TABLE_ONLY \vector, \name

	.text
	.p2align 4
	.globl	asm_exc_\name
	.type	asm_exc_\name, @function
asm_exc_\name:
	.if \has_error_code == 0
	pushq	$-1
	.endif
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
	IDTENTRY_STUB_START \vector, \name, \has_error_code
	PUSH_AND_CLEAR_REGS
	movl	$\vector, %esi
	jmp	extregs_entry_common
	.size	asm_exc_\name, . - asm_exc_\name
.endm

/*
 * IDTENTRY_IST vector, name, has_error_code: a stub whose gate switches to
 * an IST stack (#DB, #MC). From user mode the frame moves to the task
 * stack first and runs like any user entry; from kernel mode it stays on
 * the IST and takes extregs_paranoid_common.
 */
.macro IDTENTRY_IST vector, name, has_error_code
	IDTENTRY_STUB_START \vector, \name, \has_error_code
	testb	$3, PTREGS_CS-PTREGS_ORIG_AX(%rsp)
	jnz	.Lfrom_user_\@
	PUSH_AND_CLEAR_REGS
	movl	$\vector, %esi
	jmp	extregs_paranoid_common
.Lfrom_user_\@:
	IST_FRAME_TO_TASK_STACK
	PUSH_AND_CLEAR_REGS
	movl	$\vector, %esi
	jmp	extregs_entry_gs_ready
	.size	asm_exc_\name, . - asm_exc_\name
.endm

/*
 * IDTENTRY_DF vector, name: the double fault always stays on its IST stack
 * (Linux's idtentry_df), whatever the saved CS says (the manual calls it
 * undefined for #DF): the task stack a frame from user mode would move to
 * may be the very stack whose overflow caused the #DF. PARANOID_GS_ENTER
 * decides about GS from MSR_GS_BASE, so a #DF from user mode needs nothing
 * else.
 */
.macro IDTENTRY_DF vector, name
	IDTENTRY_STUB_START \vector, \name, 1
	PUSH_AND_CLEAR_REGS
	movl	$\vector, %esi
	jmp	extregs_paranoid_common
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
	/* From user mode (saved CS RPL 3): GS is still the user's. */
	testb	$3, PTREGS_CS(%rsp)
	jnz	.Lentry_swapgs
	/*
	 * From kernel mode, GS is the kernel's, except for a fault on the
	 * IRETQ to user mode (a non-canonical RIP: #GP), which comes after
	 * that exit's SWAPGS (Linux's error_entry checks the same RIP).
	 * %rax is free: PUSH_AND_CLEAR_REGS saved it.
	 */
	leaq	extregs_return_to_user_iretq(%rip), %rax
	cmpq	%rax, PTREGS_IP(%rsp)
	jne	extregs_entry_gs_ready
	swapgs
	lfence
	ASM_CLAC
	cld
	/*
	 * The IRETQ to user mode faulted (#GP, #NP or #SS on a bad frame:
	 * a non-canonical RIP, a bad SS): Linux's fixup_bad_iret. The fault is
	 * the user's, so it becomes an entry from user mode: Rust copies the
	 * five IRET words (at the fault frame's saved RSP) and the GPRs this
	 * stub saved into a user frame at task_pt_regs and returns its address,
	 * and the entry goes on from there as from user mode (GS is now the
	 * kernel's, as after a user entry's SWAPGS; AC and DF cleared as the
	 * entry does). The new frame overlaps this one, so Rust builds it by
	 * value; its own frames are below %rsp, clear of both. The vector
	 * survives the call in %r12 (its user value is saved in the frame;
	 * POP_REGS reloads it).
	 *
	 *   before                              after
	 *   | ip cs flags sp ss (bad) | <-+      +-------------------------+
	 *   | (rest of task_pt_regs)  |   |      | user frame: bad IRET    |
	 *   | #GP: ss .. ip, error    |  sp      |   words, stub's GPRs    |
	 *   | #GP: di .. r15          |          +-------------------------+ <- %rsp
	 *   +-------------------------+ <- %rsp      = task_pt_regs
	 */
	movl	%esi, %r12d
	movq	%rsp, %rdi
	andq	$-16, %rsp
	call	extregs_fixup_bad_iret
	movq	%rax, %rsp
	movl	%r12d, %esi
	jmp	extregs_entry_gs_ready
.Lentry_swapgs:
	swapgs
	.globl	extregs_entry_gs_ready
extregs_entry_gs_ready:
	/*
	 * Both ways here, with and without the SWAPGS, a mispredicted branch
	 * could run %gs-relative loads with the wrong GS base speculatively
	 * (CVE-2019-1125): Linux's FENCE_SWAPGS_USER_ENTRY and
	 * FENCE_SWAPGS_KERNEL_ENTRY.
	 */
	lfence
	ASM_CLAC
	cld
	CALL_EXTREGS_ENTRY extregs_exception_entry, vector_in_esi
	testb	$3, PTREGS_CS(%rsp)
	jnz	extregs_return_to_user
	POP_REGS
	.if EXTREGS_FAULT_INJECTION
	movb	$0, extregs_fault_skip_r12(%rip)
	.endif
	iretq
	.size	extregs_entry_common, . - extregs_entry_common

/*
 * extregs_return_to_user: the one IRET exit to user mode (Linux's
 * swapgs_restore_regs_and_return_to_usermode). Entered with %rsp = &PtRegs
 * of a user frame (at task_pt_regs), IF clear, the generic exit-to-user work
 * done. An NMI between the SWAPGS and the IRETQ finds CS = kernel and
 * GS = user: PARANOID_GS_ENTER reads MSR_GS_BASE and copes.
 *
 *   | ip cs flags sp ss |            | ip cs flags sp ss | <- rsp at iretq
 *   | orig_ax           |
 *   | di ... r15        |
 *   +-------------------+ <- rsp
 */
	.globl	extregs_return_to_user
	.type	extregs_return_to_user, @function
extregs_return_to_user:
	POP_REGS
	.if EXTREGS_FAULT_INJECTION
	movb	$0, extregs_fault_skip_r12(%rip)
	.endif
	swapgs
	.globl	extregs_return_to_user_iretq
extregs_return_to_user_iretq:
	iretq
	.size	extregs_return_to_user, . - extregs_return_to_user

/*
 * extregs_enter_user_mode(regs): the first exit to user mode of a user task
 * (Linux's ret_from_fork into user mode): %rdi = task_pt_regs of the
 * current task, a whole user frame the scheduler built, extension below
 * it. Drops everything else on the kernel stack (the task's kernel frames
 * never return) and leaves through extregs_return_to_user.
 */
	.globl	extregs_enter_user_mode
	.type	extregs_enter_user_mode, @function
extregs_enter_user_mode:
	movq	%rdi, %rsp
	jmp	extregs_return_to_user
	.size	extregs_enter_user_mode, . - extregs_enter_user_mode


/*
 * PARANOID_GS_ENTER / PARANOID_GS_EXIT: a paranoid entry from kernel mode
 * may have interrupted the few instructions where CS is the kernel's but GS
 * is still (or again) the user's: the first instructions of
 * entry_SYSCALL_64, an exit between its SWAPGS and its SYSRETQ/IRETQ, an
 * IDT stub before its SWAPGS. So it does not trust CS: it reads
 * MSR_GS_BASE, and SWAPGS unless that is already this CPU's GS area
 * (Linux's paranoid_entry without FSGSBASE).
 *
 * "This CPU's GS area" can't come from GS either, and Linux's sign test
 * (a kernel GS base is negative) does not work in a lower-half kernel. It
 * comes from the IST stack the entry runs on: every IST stack is one
 * IST_BLOCK_SIZE block aligned to its size, whose top IstTop holds the
 * owning CPU's area address, so %rsp alone finds it, even after the #DB
 * handler shifted its IST pointer down:
 *
 *   +-----------------------+  <- block end = stack top
 *   | ist_top.nmi_state     |
 *   | ist_top.per_cpu       |  <- block start + IST_BLOCK_PER_CPU
 *   +-----------------------+  <- TSS IST pointer
 *   | frames ...            |  <- %rsp, anywhere in here
 *   | guard page            |
 *   +-----------------------+  <- %rsp & -IST_BLOCK_SIZE
 *
 * %ebx remembers whether to swap back; the C ABI keeps it across the call.
 * Runs after PUSH_AND_CLEAR_REGS, on an IST stack, so %rax, %rcx and %rdx
 * are free.
 */
.macro PARANOID_GS_ENTER
	movl	$MSR_GS_BASE, %ecx
	rdmsr
	shlq	$32, %rdx
	orq	%rax, %rdx
	movq	%rsp, %rax
	andq	$-IST_BLOCK_SIZE, %rax
	movq	IST_BLOCK_PER_CPU(%rax), %rax
	xorl	%ebx, %ebx
	cmpq	%rax, %rdx
	je	.Lparanoid_gs_kernel_\@
	swapgs
	movl	$1, %ebx
.Lparanoid_gs_kernel_\@:
	lfence		/* no speculation past the GS decision (CVE-2019-1125) */
.endm

.macro PARANOID_GS_EXIT
	testl	%ebx, %ebx
	jz	.Lparanoid_gs_done_\@
	swapgs
.Lparanoid_gs_done_\@:
.endm

/*
 * IST_FRAME_TO_TASK_STACK: an IST entry (NMI, #DB, #MC; never #DF) that
 * came from user mode moves its frame to the task stack, where every user
 * frame lives (Linux does the same for the NMI and with sync_regs for
 * #DB/#MC). Nothing can nest on the IST meanwhile that would need this
 * frame: user code is not running, and a paranoid event landing here comes
 * from kernel mode and builds its own frame below on the IST (only a #DF
 * from a broken task stack would reuse an IST top, its own: that is why
 * #DF never moves).
 *
 *   IST stack:                        task stack:
 *   | ip cs flags sp ss |             +-------------------+ <- PERCPU_TOP_OF_STACK
 *   | orig_ax           | <- rsp      | ip cs flags sp ss |
 *                                     | orig_ax           | <- rsp after
 */
.macro IST_FRAME_TO_TASK_STACK
	swapgs
	/*
	 * The SWAPGS sits behind a branch on the saved CS: a kernel-mode event
	 * that mispredicts it must not reach the %gs loads below with the
	 * user's GS base (CVE-2019-1125, Linux's FENCE_SWAPGS_USER_ENTRY).
	 */
	lfence
	movq	%rdx, %gs:PERCPU_IST_SCRATCH
	movq	%rsp, %rdx
	movq	%gs:PERCPU_TOP_OF_STACK, %rsp
	pushq	PTREGS_SS-PTREGS_ORIG_AX(%rdx)
	pushq	PTREGS_SP-PTREGS_ORIG_AX(%rdx)
	pushq	PTREGS_FLAGS-PTREGS_ORIG_AX(%rdx)
	pushq	PTREGS_CS-PTREGS_ORIG_AX(%rdx)
	pushq	PTREGS_IP-PTREGS_ORIG_AX(%rdx)
	pushq	(%rdx)
	movq	%gs:PERCPU_IST_SCRATCH, %rdx
.endm

/*
 * extregs_paranoid_common: #DB and #MC from kernel mode, and every #DF, on
 * their IST stack; %esi = vector. As extregs_entry_common, with the GS
 * decision of PARANOID_GS_ENTER instead of the saved CS.
 */
	.globl	extregs_paranoid_common
	.type	extregs_paranoid_common, @function
extregs_paranoid_common:
	PARANOID_GS_ENTER
	ASM_CLAC
	cld
	CALL_EXTREGS_ENTRY extregs_exception_entry, vector_in_esi
	PARANOID_GS_EXIT
	POP_REGS
	iretq
	.size	extregs_paranoid_common, . - extregs_paranoid_common

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
IDTENTRY_IST  1, debug,                    0
IDTENTRY_TABLE_ONLY 2, nmi
IDTENTRY  3, int3,                         0
IDTENTRY  4, overflow,                     0
IDTENTRY  5, bounds,                       0
IDTENTRY  6, invalid_op,                   0
IDTENTRY  7, device_not_available,         0
IDTENTRY_DF   8, double_fault
IDTENTRY  9, coproc_segment_overrun,       0
IDTENTRY 10, invalid_tss,                  1
IDTENTRY 11, segment_not_present,          1
IDTENTRY 12, stack_segment,                1
IDTENTRY 13, general_protection,           1
IDTENTRY 14, page_fault,                   1
IDTENTRY 15, spurious_interrupt_bug,       0
IDTENTRY 16, coprocessor_error,            0
IDTENTRY 17, alignment_check,              1
IDTENTRY_IST 18, machine_check,            0
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
 * handler) with the state in one byte at the very top of this CPU's NMI
 * stack, above the landing zone, where no NMI's push reaches it:
 *
 *   +-------------------------+  <- NMI stack top
 *   | ist_top: per_cpu, state |  this CPU's GS area; the nesting state
 *   +-------------------------+  <- IST pointer
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
 * The state is per CPU because the stack is: an NMI on another CPU meets
 * its own IDLE state, never this CPU's RUNNING. Every access is
 * %rsp-relative (NMI_TOP_NMI_STATE from the part of NmiStackTop %rsp
 * points at), so no GS and no global is involved.
 *
 * The state is IDLE, RUNNING or PENDING:
 *
 *  - IDLE, and the interrupted RIP is not in the exit window: this is the
 *    outermost NMI. Mark RUNNING, copy the landing frame to iret_copy, build
 *    PtRegs on it and run the handler (NMIs are still blocked throughout).
 *  - RUNNING or PENDING: an NMI nested inside the outermost one. Set PENDING
 *    and IRETQ straight back from the landing zone. Nothing below the
 *    landing zone was touched, so the outer frame is intact.
 *  - On the way out the outermost NMI restores the GPRs and then decrements
 *    the state: RUNNING -> IDLE means done; PENDING -> RUNNING means an NMI
 *    came in meanwhile, so it runs the handler again on the same iret_copy
 *    (Linux's repeat_nmi). The check and the state change are one
 *    instruction, so no NMI can slip between them.
 *  - IDLE, but the interrupted RIP is in the exit window (after that decb,
 *    up to and including the final iretq): the outermost NMI has finished
 *    everything but its IRETQ. This NMI takes over: it drops its own landing
 *    frame, moves %rsp back to iret_copy (still intact, with every GPR
 *    already restored) and handles itself as the outermost NMI would have
 *    on a repeat.
 */
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
	testb	$3, IRET_FRAME_CS(%rsp)
	jnz	.Lnmi_from_user
	pushq	%rax					/* rsp = &scratch */
	.if EXTREGS_FAULT_INJECTION
	cmpb	$0, extregs_fault_nmi_reuse(%rip)
	jne	.Lnmi_outermost
	.endif
	cmpb	$NMI_STATE_IDLE, NMI_TOP_NMI_STATE-NMI_TOP_SCRATCH(%rsp)
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
	/*
	 * .Lnmi_run .. .Lnmi_nested: the only instructions of this stub an NMI
	 * can land on (after an IRET inside the handler unblocked NMIs: the
	 * rest of this pass, and a repeat). Everything else here runs with NMIs
	 * blocked. extregs_nmi_interruptible, below, holds the two addresses
	 * for interrupt-point coverage and the walks (data, so that no symbol
	 * splits asm_exc_nmi for a debugger).
	 */
.Lnmi_run:
	movb	$NMI_STATE_RUNNING, NMI_TOP_NMI_STATE-NMI_TOP_IRET_COPY(%rsp)
	pushq	$-1					/* orig_ax */
	PUSH_AND_CLEAR_REGS
	PARANOID_GS_ENTER
	ASM_CLAC
	cld
	movl	$NMI_VECTOR, %esi
	CALL_EXTREGS_ENTRY extregs_exception_entry, vector_in_esi
	PARANOID_GS_EXIT
	POP_REGS					/* rsp = &iret_copy */
	decb	NMI_TOP_NMI_STATE-NMI_TOP_IRET_COPY(%rsp)
.Lnmi_exit_window_start:
	jnz	.Lnmi_repeat
.Lnmi_exit_window_end:
	iretq
.Lnmi_repeat:
	/* An NMI nested while we ran: handle it on the same iret_copy. */
	jmp	.Lnmi_run

.Lnmi_nested:
	movb	$NMI_STATE_PENDING, NMI_TOP_NMI_STATE-NMI_TOP_SCRATCH(%rsp)
	popq	%rax					/* rsp = &landing */
	iretq

/*
 * An NMI from user mode: no nesting problem here, as in Linux. It moves to
 * the task stack (the frame lands at task_pt_regs like every user frame)
 * and leaves NMIs blocked until its own IRETQ. An NMI that nests after an
 * exception's IRETQ unblocked them comes from kernel mode and gets a frame
 * of its own on the IST, below nothing of this one's; the Rust entry then
 * latches it, and this one's handler runs again (nmi::latch_inside_user_nmi,
 * Linux's nmi_state in exc_nmi).
 *
 *   NMI IST:                          task stack:
 *   | landing: ip..ss   |             | ip cs flags sp ss |
 *   | scratch = -1      | <- rsp      | orig_ax = -1      |
 *                                     | di ... r15        |
 *                                     +-------------------+ <- rsp
 */
.Lnmi_from_user:
	pushq	$-1					/* orig_ax, in scratch */
	IST_FRAME_TO_TASK_STACK
	PUSH_AND_CLEAR_REGS
	movl	$NMI_VECTOR, %esi
	jmp	extregs_entry_gs_ready

.Lnmi_take_over_exit:
	popq	%rax					/* rsp = &landing */
	leaq	NMI_TOP_IRET_COPY-NMI_TOP_LANDING(%rsp), %rsp	/* rsp = &iret_copy */
	jmp	.Lnmi_run
	.size	asm_exc_nmi, . - asm_exc_nmi

	.pushsection .data.rel.ro.extregs_nmi_interruptible, "aw"
	.p2align 3
	.globl	extregs_nmi_interruptible
extregs_nmi_interruptible:
	.quad	.Lnmi_run
	.quad	.Lnmi_nested
	.popsection

/*
 * entry_SYSCALL_64: the SYSCALL instruction from user mode (LSTAR).
 *
 * The CPU saved the user RIP in %rcx and RFLAGS in %r11, loaded CS/SS from
 * STAR and cleared the FMASK bits of RFLAGS (IF, TF, DF, AC, NT ...); it
 * did not switch stacks or GS. So: SWAPGS, park the user RSP in the per-CPU
 * scratch, load the task's kernel stack top, and build by hand the frame
 * an interrupt from user mode would have had, the extension below it as
 * everywhere else:
 *
 *   +----------------------+  <- %gs:PERCPU_TOP_OF_STACK (TSS.RSP0)
 *   | ss = __USER_DS       |
 *   | sp = user RSP        |
 *   | flags = %r11         |
 *   | cs = __USER_CS       |
 *   | ip = %rcx            |
 *   | orig_ax = %rax (nr)  |
 *   | di ... r15           |   PUSH_AND_CLEAR_REGS
 *   +----------------------+  <- %rdi = &PtRegs = task_pt_regs(current)
 *   | extension            |
 *   +----------------------+  <- %rsp at the call
 *
 * extregs_syscall_entry returns true when SYSRETQ may return: it checked
 * Linux's conditions (RCX == RIP, RCX canonical, R11 == RFLAGS, no TF/RF).
 * Then POP_REGS reloads RCX and R11 from the frame (equal to ip and flags)
 * and SYSRETQ returns on the user stack. Otherwise the IRET exit.
 *
 * Windows: IF is off throughout (FMASK), so only NMI, #DB and #MC can land
 * here, all on IST stacks; before the first SWAPGS and after the last one
 * they find kernel CS with the user's GS, which PARANOID_GS_ENTER handles.
 * Between `movq ..., %rsp` and SYSRETQ the kernel runs on the user stack,
 * which is why nothing but IST events may be taken there.
 */
	.text
	.p2align 4
	.globl	entry_SYSCALL_64
	.type	entry_SYSCALL_64, @function
entry_SYSCALL_64:
	swapgs
	movq	%rsp, %gs:PERCPU_USER_RSP_SCRATCH
	movq	%gs:PERCPU_TOP_OF_STACK, %rsp
	pushq	$__USER_DS				/* ss */
	pushq	%gs:PERCPU_USER_RSP_SCRATCH		/* sp */
	pushq	%r11					/* flags */
	pushq	$__USER_CS				/* cs */
	pushq	%rcx					/* ip */
	pushq	%rax					/* orig_ax: the syscall number */
	PUSH_AND_CLEAR_REGS
	cld
	CALL_EXTREGS_ENTRY extregs_syscall_entry, syscall
	testb	%al, %al
	jz	extregs_return_to_user
	POP_REGS					/* rsp = &ip */
	.if EXTREGS_FAULT_INJECTION
	movb	$0, extregs_fault_skip_r12(%rip)
	.endif
	movq	IRET_FRAME_SP(%rsp), %rsp
	swapgs
	.globl	extregs_syscall_sysretq
extregs_syscall_sysretq:
	sysretq
	.size	entry_SYSCALL_64, . - entry_SYSCALL_64

/*
 * entry_SYSCALL32_ignore: SYSCALL from 32-bit compatibility mode (MSR
 * CSTAR). Ring 3 can reach compat mode (__USER32_CS is a present DPL-3
 * descriptor), and with CSTAR left 0 such a SYSCALL would run at RIP 0 in
 * ring 0 on the user's stack and GS. extregs has no 32-bit syscalls: return
 * -ENOSYS at once, as Linux does without IA32 emulation. Nothing here
 * touches the stack or GS (an NMI in between finds the user's GS, which
 * PARANOID_GS_ENTER handles).
 */
	.p2align 4
	.globl	entry_SYSCALL32_ignore
	.type	entry_SYSCALL32_ignore, @function
entry_SYSCALL32_ignore:
	movl	$-ENOSYS, %eax
	sysretl
	.size	entry_SYSCALL32_ignore, . - entry_SYSCALL32_ignore

	.text
	.globl	extregs_entry_text_end
extregs_entry_text_end:

/* Non-zero when the CPU has SMAP and CR4.SMAP is on (ASM_CLAC). */
	.data
	.globl	extregs_smap_enabled
extregs_smap_enabled:
	.byte	0

/*
 * The per-CPU entry areas, one per CPU (NR_CPUS), each reached through
 * %gs by its own CPU in kernel mode: struct PerCpuEntry in extregs-regs.
 * Written from Rust only through raw pointers (extregs_entry_asm::per_cpu).
 */
	.bss
	.p2align 6
	.globl	extregs_per_cpu
	.type	extregs_per_cpu, @object
extregs_per_cpu:
	.skip	PERCPU_SIZE * NR_CPUS
	.size	extregs_per_cpu, . - extregs_per_cpu
	.text
