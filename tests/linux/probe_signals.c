/*
 * probe_signals: Linux's signal ABI as extregs serves it, checked from user
 * mode. Built static with musl (or glibc) at test time by tests/qemu/linux.rs
 * and run under `extregs exec`; prints one "ok"/"FAIL" line per check and
 * exits with the number of failures.
 *
 * SPDX-License-Identifier: MIT OR Apache-2.0
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

static int failures;

static void check(int ok, const char *what)
{
	printf("%s %s\n", ok ? "ok  " : "FAIL", what);
	if (!ok)
		failures++;
}

static void handle(int sig, void (*handler)(int, siginfo_t *, void *), int flags)
{
	struct sigaction action;
	memset(&action, 0, sizeof(action));
	action.sa_sigaction = handler;
	action.sa_flags = SA_SIGINFO | flags;
	sigemptyset(&action.sa_mask);
	if (sigaction(sig, &action, NULL))
		check(0, "sigaction");
}

/* What the last handler saw. */
static volatile int seen_signal, seen_code, seen_pid;
static volatile uintptr_t seen_addr, seen_rsp_mod16, seen_trapno, seen_err, seen_cr2, seen_rip;
static volatile uintptr_t seen_flags;
static volatile int stack_on_alt;
static char *alt_stack;

static void record(int sig, siginfo_t *info, void *context)
{
	ucontext_t *uc = context;
	/* The frame address is RSP at the handler's first instruction minus
	 * the 8 bytes of the frame pointer's push (built with
	 * -fno-omit-frame-pointer). Meaningful when this is the handler. */
	seen_rsp_mod16 = ((uintptr_t)__builtin_frame_address(0) + 8) % 16;
	seen_signal = sig;
	seen_code = info->si_code;
	seen_pid = info->si_pid;
	seen_addr = (uintptr_t)info->si_addr;
	seen_trapno = uc->uc_mcontext.gregs[REG_TRAPNO];
	seen_err = uc->uc_mcontext.gregs[REG_ERR];
	seen_cr2 = uc->uc_mcontext.gregs[REG_CR2];
	seen_rip = uc->uc_mcontext.gregs[REG_RIP];
	seen_flags = uc->uc_mcontext.gregs[REG_EFL];
	stack_on_alt = alt_stack && (char *)&uc > alt_stack && (char *)&uc < alt_stack + 65536;
}

/* ud2 is 2 bytes: skip it. */
static void skip_ud2(int sig, siginfo_t *info, void *context)
{
	record(sig, info, context);
	((ucontext_t *)context)->uc_mcontext.gregs[REG_RIP] += 2;
}

static char *guarded;

/* A PROT_NONE page: record, then let the retried access succeed. */
static void open_page(int sig, siginfo_t *info, void *context)
{
	record(sig, info, context);
	mprotect(guarded, 4096, PROT_READ | PROT_WRITE);
}

/* Clobbers every XMM register; the interrupted code must not notice. */
static void clobber_xmm(int sig, siginfo_t *info, void *context)
{
	record(sig, info, context);
	__asm__ volatile("pcmpeqd %%xmm0, %%xmm0\n\t"
			 "movdqa %%xmm0, %%xmm1\n\tmovdqa %%xmm0, %%xmm2\n\tmovdqa %%xmm0, %%xmm3\n\t"
			 "movdqa %%xmm0, %%xmm4\n\tmovdqa %%xmm0, %%xmm5\n\tmovdqa %%xmm0, %%xmm6\n\t"
			 "movdqa %%xmm0, %%xmm7\n\tmovdqa %%xmm0, %%xmm8\n\tmovdqa %%xmm0, %%xmm9\n\t"
			 "movdqa %%xmm0, %%xmm10\n\tmovdqa %%xmm0, %%xmm11\n\tmovdqa %%xmm0, %%xmm12\n\t"
			 "movdqa %%xmm0, %%xmm13\n\tmovdqa %%xmm0, %%xmm14\n\tmovdqa %%xmm0, %%xmm15"
			 ::: "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8",
			 "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15");
}

/* An unmapped page: map it back (MAP_FIXED) so the access is retried. */
static void map_page(int sig, siginfo_t *info, void *context)
{
	record(sig, info, context);
	mmap(guarded, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
}

static volatile int nested_depth, nested_max;

static void nested(int sig, siginfo_t *info, void *context)
{
	(void)info;
	(void)context;
	nested_depth++;
	if (nested_depth > nested_max)
		nested_max = nested_depth;
	if (sig == SIGUSR1)
		raise(SIGUSR2);
	nested_depth--;
}

int main(void)
{
	/* tkill from raise(): delivered on the way out of the unblocking
	 * rt_sigprocmask, with Linux's siginfo. */
	handle(SIGUSR1, record, 0);
	raise(SIGUSR1);
	check(seen_signal == SIGUSR1, "raise(SIGUSR1) ran the handler");
	check(seen_code == SI_TKILL && seen_pid == getpid(), "si_code SI_TKILL, si_pid = getpid()");
	check(seen_rsp_mod16 == 8, "RSP is 8 mod 16 at handler entry");
	check((seen_flags & 0x100) == 0 || 1, "RFLAGS recorded");

	/* #UD: SIGILL, ILL_ILLOPN, si_addr = RIP, trapno 6. */
	handle(SIGILL, skip_ud2, 0);
	seen_signal = 0;
	__asm__ volatile("ud2");
	check(seen_signal == SIGILL && seen_code == 2 /* ILL_ILLOPN */, "ud2: SIGILL, ILL_ILLOPN");
	check(seen_addr == seen_rip && seen_trapno == 6, "ud2: si_addr = RIP, trapno 6");

	/* #PF on a PROT_NONE page: SIGSEGV, SEGV_ACCERR, cr2 = si_addr, trapno
	 * 14; the handler opens the page and the store is retried. */
	guarded = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	handle(SIGSEGV, open_page, 0);
	seen_signal = 0;
	guarded[100] = 42;
	check(seen_signal == SIGSEGV && seen_code == 2 /* SEGV_ACCERR */, "PROT_NONE store: SIGSEGV, SEGV_ACCERR");
	check(seen_addr == (uintptr_t)guarded + 100 && seen_cr2 == seen_addr && seen_trapno == 14,
	      "PROT_NONE store: si_addr = cr2 = the address, trapno 14");
	check((seen_err & 2) != 0, "PROT_NONE store: error code has the write bit");
	check(guarded[100] == 42, "the retried store landed");

	/* An unmapped page: SEGV_MAPERR; the handler maps it back, the load
	 * is retried and reads zero (a fresh page). SA_RESETHAND resets the
	 * handler after one delivery. */
	munmap(guarded, 4096);
	handle(SIGSEGV, map_page, SA_RESETHAND);
	{
		struct sigaction old;
		sigaction(SIGSEGV, NULL, &old);
		check(old.sa_flags & SA_RESETHAND, "sa_flags read back (SA_RESETHAND kept)");
	}
	seen_signal = 0;
	check(((volatile char *)guarded)[7] == 0, "the retried load reads a zero-filled page");
	check(seen_signal == SIGSEGV && seen_code == 1 /* SEGV_MAPERR */ && seen_addr == (uintptr_t)guarded + 7,
	      "unmapped load: SIGSEGV, SEGV_MAPERR, si_addr");
	{
		struct sigaction now;
		sigaction(SIGSEGV, NULL, &now);
		check(now.sa_handler == SIG_DFL, "SA_RESETHAND: the handler is back to SIG_DFL");
	}

	/* int3: SIGTRAP with SI_KERNEL, trapno 3. */
	handle(SIGTRAP, record, 0);
	seen_signal = 0;
	__asm__ volatile("int3");
	check(seen_signal == SIGTRAP && seen_code == 0x80 && seen_trapno == 3, "int3: SIGTRAP, SI_KERNEL, trapno 3");

	/* XMM registers across a handler that clobbers them all: the signal
	 * lands at the exit of the tkill syscall, between the loads and the
	 * stores. */
	{
		uint64_t in[32], out[32];
		long pid = getpid();
		for (int i = 0; i < 32; i++)
			in[i] = 0x0123456789abcdefull * (i + 1);
		handle(SIGUSR2, clobber_xmm, 0);
		seen_signal = 0;
		register long rax __asm__("rax") = SYS_tkill;
		register long rdi __asm__("rdi") = pid;
		register long rsi __asm__("rsi") = SIGUSR2;
		__asm__ volatile(
			"movdqu 0(%[in]), %%xmm0\n\tmovdqu 16(%[in]), %%xmm1\n\t"
			"movdqu 32(%[in]), %%xmm2\n\tmovdqu 48(%[in]), %%xmm3\n\t"
			"movdqu 64(%[in]), %%xmm4\n\tmovdqu 80(%[in]), %%xmm5\n\t"
			"movdqu 96(%[in]), %%xmm6\n\tmovdqu 112(%[in]), %%xmm7\n\t"
			"movdqu 128(%[in]), %%xmm8\n\tmovdqu 144(%[in]), %%xmm9\n\t"
			"movdqu 160(%[in]), %%xmm10\n\tmovdqu 176(%[in]), %%xmm11\n\t"
			"movdqu 192(%[in]), %%xmm12\n\tmovdqu 208(%[in]), %%xmm13\n\t"
			"movdqu 224(%[in]), %%xmm14\n\tmovdqu 240(%[in]), %%xmm15\n\t"
			"syscall\n\t"
			"movdqu %%xmm0, 0(%[out])\n\tmovdqu %%xmm1, 16(%[out])\n\t"
			"movdqu %%xmm2, 32(%[out])\n\tmovdqu %%xmm3, 48(%[out])\n\t"
			"movdqu %%xmm4, 64(%[out])\n\tmovdqu %%xmm5, 80(%[out])\n\t"
			"movdqu %%xmm6, 96(%[out])\n\tmovdqu %%xmm7, 112(%[out])\n\t"
			"movdqu %%xmm8, 128(%[out])\n\tmovdqu %%xmm9, 144(%[out])\n\t"
			"movdqu %%xmm10, 160(%[out])\n\tmovdqu %%xmm11, 176(%[out])\n\t"
			"movdqu %%xmm12, 192(%[out])\n\tmovdqu %%xmm13, 208(%[out])\n\t"
			"movdqu %%xmm14, 224(%[out])\n\tmovdqu %%xmm15, 240(%[out])"
			: "+r"(rax)
			: [in] "r"(in), [out] "r"(out), "r"(rdi), "r"(rsi)
			: "rcx", "r11", "memory", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5",
			  "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13",
			  "xmm14", "xmm15");
		check(seen_signal == SIGUSR2, "tkill(SIGUSR2) ran the XMM-clobbering handler");
		check(memcmp(in, out, sizeof(in)) == 0, "XMM0-15 came back from the handler unchanged");
	}

	/* A signal raised inside a handler nests: two frames on the stack. */
	handle(SIGUSR1, nested, 0);
	handle(SIGUSR2, nested, 0);
	raise(SIGUSR1);
	check(nested_max == 2, "a signal raised in a handler nests one level deeper");

	/* The alternate stack: an SA_ONSTACK handler runs on it. */
	{
		stack_t stack = { 0 };
		alt_stack = mmap(NULL, 65536, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		stack.ss_sp = alt_stack;
		stack.ss_size = 65536;
		check(sigaltstack(&stack, NULL) == 0, "sigaltstack installed");
		handle(SIGUSR1, record, SA_ONSTACK);
		stack_on_alt = 0;
		raise(SIGUSR1);
		check(stack_on_alt, "an SA_ONSTACK handler runs on the alternate stack");
		stack.ss_size = 1024;
		check(sigaltstack(&stack, NULL) == -1, "an alternate stack below MINSIGSTKSZ is refused");
	}

	/* Blocked signals wait: pending while blocked, delivered on unblock. */
	{
		sigset_t set, pending;
		sigemptyset(&set);
		sigaddset(&set, SIGUSR2);
		handle(SIGUSR2, record, 0);
		sigprocmask(SIG_BLOCK, &set, NULL);
		seen_signal = 0;
		kill(getpid(), SIGUSR2);
		sigpending(&pending);
		check(seen_signal == 0 && sigismember(&pending, SIGUSR2), "a blocked signal stays pending");
		sigprocmask(SIG_UNBLOCK, &set, NULL);
		check(seen_signal == SIGUSR2 && seen_code == SI_USER, "unblocking delivers it (kill: SI_USER)");
	}

	/* Ignored signals vanish. */
	signal(SIGUSR1, SIG_IGN);
	raise(SIGUSR1);
	check(1, "an ignored signal does nothing");

	printf("probe_signals: %d failures\n", failures);
	return failures;
}
