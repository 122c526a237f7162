/*
 * bench_64.S - one entry stub per benchmark variant, all with the same
 * handler body (bump a counter, note RSP), so only the entry design
 * differs. Assembled after asm-offsets.S and calling.S (the entry stubs'
 * own macros), for the kernel (reached through `int $vector`) and for the
 * host (reached from ring 3 by pushing a synthetic interrupt frame and
 * jumping here: iretq returns to the same privilege level).
 *
 * The handlers (`*_handler`) are defined by whoever links this: the kernel
 * with its real platform, the host with a memory cell for PKRS.
 */

	.text

/* floor: the CPU's frame and iretq, nothing else. */
	.p2align 4
	.globl	extregs_bench_floor
extregs_bench_floor:
	iretq

/*
 * BENCH_PTREGS_ONLY handler: full pt_regs but no extension (Linux 5.10 and
 * Weiny V3). 168 bytes leave RSP 8 off 16-byte alignment, so a pad word
 * goes below pt_regs for the call:
 *
 *   | ip cs flags sp ss |
 *   | orig_ax = -1      |
 *   | di ... r15        |
 *   +-------------------+ <- rdi = &PtRegs
 *   | pad               |   subq $CALL_PAD_BELOW_PTREGS
 *   +-------------------+ <- rsp at the call (16-byte aligned)
 */
.macro BENCH_PTREGS_ONLY name
	.p2align 4
	.globl	extregs_bench_\name
extregs_bench_\name:
	pushq	$-1
	PUSH_AND_CLEAR_REGS
	cld
	movq	%rsp, %rdi
	subq	$CALL_PAD_BELOW_PTREGS, %rsp
	call	extregs_bench_\name\()_handler
	addq	$CALL_PAD_BELOW_PTREGS, %rsp
	POP_REGS
	iretq
.endm

/*
 * BENCH_EXTENDED handler: extregs' own frame, the extension below pt_regs
 * (the same shape as extregs_entry_common):
 *
 *   | ip cs flags sp ss |
 *   | orig_ax = -1      |
 *   | di ... r15        |
 *   +-------------------+ <- rdi = &PtRegs
 *   | generic | arch    |   subq $GENERIC_PTREGS_SIZE
 *   +-------------------+ <- rsp at the call (16-byte aligned, no pad)
 */
.macro BENCH_EXTENDED name
	.p2align 4
	.globl	extregs_bench_\name
extregs_bench_\name:
	pushq	$-1
	PUSH_AND_CLEAR_REGS
	cld
	subq	$GENERIC_PTREGS_SIZE, %rsp
	leaq	EXTREGS_REGS(%rsp), %rdi
	call	extregs_bench_\name\()_handler
	addq	$GENERIC_PTREGS_SIZE, %rsp
	POP_REGS
	iretq
.endm

BENCH_PTREGS_ONLY by_value
BENCH_PTREGS_ONLY by_reference
BENCH_EXTENDED extended
BENCH_EXTENDED extended_pks
BENCH_EXTENDED extended_nested

/*
 * The size series: the same state grown to 8..128 bytes, in four places.
 *
 * BENCH_SIZE_BELOW bytes: the extension directly below pt_regs (this
 * design), the pad below it keeping the call 16-byte aligned:
 *
 *   | ip cs flags sp ss |
 *   | orig_ax = -1      |
 *   | di ... r15        |
 *   +-------------------+ <- rdi = &PtRegs
 *   | state (bytes)     |
 *   | pad               |   subq $BENCH_BELOW_FRAME_bytes
 *   +-------------------+ <- rsp at the call
 */
.macro BENCH_SIZE_BELOW bytes
	.p2align 4
	.globl	extregs_bench_size_below_\bytes
extregs_bench_size_below_\bytes:
	pushq	$-1
	PUSH_AND_CLEAR_REGS
	cld
	subq	$BENCH_BELOW_FRAME_\bytes, %rsp
	leaq	BENCH_BELOW_FRAME_\bytes(%rsp), %rdi
	call	extregs_bench_size_below_\bytes\()_handler
	addq	$BENCH_BELOW_FRAME_\bytes, %rsp
	POP_REGS
	iretq
.endm

/*
 * The other three places need only pt_regs from the stub (as
 * BENCH_PTREGS_ONLY): *above* the CPU frame (as FRED puts its event data;
 * the harness keeps BENCH_ABOVE_RESERVE_bytes free above the frame, as a
 * FRED CPU would), and by value or by reference in the handler's own
 * frame (Linux 5.10, Weiny V3):
 *
 *   | state (bytes)     |   above only: left free by the harness
 *   | ip cs flags sp ss |
 *   | orig_ax = -1      |
 *   | di ... r15        |
 *   +-------------------+ <- rdi = &PtRegs
 *   | pad               |
 *   +-------------------+ <- rsp at the call
 */
.macro BENCH_SIZE bytes
BENCH_SIZE_BELOW \bytes
BENCH_PTREGS_ONLY size_above_\bytes
BENCH_PTREGS_ONLY size_by_value_\bytes
BENCH_PTREGS_ONLY size_by_reference_\bytes
.endm

BENCH_SIZE 8
BENCH_SIZE 16
BENCH_SIZE 32
BENCH_SIZE 64
BENCH_SIZE 128
