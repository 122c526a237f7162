/*
 * probe_mm: Linux's memory calls as extregs serves them (mmap, munmap,
 * mprotect, mremap, madvise, brk), checked from user mode, with the errno
 * values Linux gives. Built static at test time by tests/qemu/linux.rs and
 * run under `extregs exec`; one "ok"/"FAIL" line per check, exit status =
 * failures.
 *
 * SPDX-License-Identifier: MIT OR Apache-2.0
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif

static int failures;

static void check(int ok, const char *what)
{
	printf("%s %s\n", ok ? "ok  " : "FAIL", what);
	if (!ok)
		failures++;
}

/* The raw calls, so libc can't second-guess the arguments (musl rounds
 * mprotect's address down, for one): the result, or -errno. */
static long raw(long number, long a, long b, long c, long d, long e, long f)
{
	long result = syscall(number, a, b, c, d, e, f);
	return result == -1 ? -errno : result;
}

static long raw_mmap(uintptr_t addr, size_t len, int prot, int flags)
{
	return raw(SYS_mmap, addr, len, prot, flags, -1, 0);
}

static int all_zero(const unsigned char *p, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (p[i])
			return 0;
	return 1;
}

int main(void)
{
	const int anon = MAP_PRIVATE | MAP_ANONYMOUS;
	/* Linux's TASK_SIZE_MAX is 2^47 - 4096: the last page ends there. */
	const uintptr_t top_page = (1ul << 47) - 8192;

	unsigned char *p = mmap(NULL, 3 * 4096, PROT_READ | PROT_WRITE, anon, -1, 0);
	check(p != MAP_FAILED && ((uintptr_t)p & 4095) == 0, "mmap: page aligned");
	check(all_zero(p, 3 * 4096), "mmap: zero-filled");
	memset(p, 0xab, 3 * 4096);

	long top = raw_mmap(top_page, 4096, PROT_READ | PROT_WRITE, anon | MAP_FIXED);
	check(top == (long)top_page, "MAP_FIXED of the last page, ending at 2^47 - 4096");
	if (top == (long)top_page) {
		((volatile char *)top_page)[4095] = 1;
		check(((volatile char *)top_page)[4095] == 1, "the top page is usable");
	}
	check(raw_mmap(top_page, 8192, PROT_READ, anon | MAP_FIXED) == -ENOMEM, "MAP_FIXED past the end: ENOMEM");
	check(raw_mmap(top_page + 1, 4096, PROT_READ, anon | MAP_FIXED) == -EINVAL, "MAP_FIXED unaligned: EINVAL");
	check(raw_mmap(0, 0, PROT_READ, anon) == -EINVAL, "length 0: EINVAL");
	check(raw_mmap(0, 4096, PROT_READ, MAP_ANONYMOUS) == -EINVAL, "neither private nor shared: EINVAL");
	check(raw_mmap(0, 4096, 0x40, anon) == -EINVAL, "unknown prot bit: EINVAL");
	check(raw_mmap(0, ~0ul - 100, PROT_READ, anon) == -ENOMEM, "a huge length: ENOMEM");
	check(raw_mmap((uintptr_t)p, 4096, PROT_READ, anon | MAP_FIXED_NOREPLACE) == -EEXIST,
	      "MAP_FIXED_NOREPLACE over a mapping: EEXIST");
	check(raw(SYS_mmap, 0, 4096, PROT_READ, MAP_PRIVATE, 5, 0) == -EBADF, "a file mapping of a bad fd: EBADF");
	check(raw(SYS_mmap, 0, 4096, PROT_READ, MAP_PRIVATE, 1, 0) == -ENODEV, "a mapping of the console: ENODEV");

	/* MAP_FIXED replaces: the new page reads zero. */
	check(raw_mmap((uintptr_t)p + 4096, 4096, PROT_READ | PROT_WRITE, anon | MAP_FIXED) == (long)(p + 4096),
	      "MAP_FIXED over a mapping replaces it");
	check(all_zero(p + 4096, 4096) && p[0] == 0xab && p[8192] == 0xab, "only the replaced page is zero");

	check(raw(SYS_munmap, (long)p + 1, 4096, 0, 0, 0, 0) == -EINVAL, "munmap unaligned: EINVAL");
	check(raw(SYS_munmap, (long)p, 0, 0, 0, 0, 0) == -EINVAL, "munmap length 0: EINVAL");
	check(raw(SYS_mprotect, (long)p + 1, 4096, PROT_READ, 0, 0, 0) == -EINVAL, "mprotect unaligned: EINVAL");

	/* mprotect of a hole: ENOMEM; then PROT_NONE keeps the contents. */
	check(munmap(p + 4096, 4096) == 0, "munmap of the middle page");
	check(mprotect(p, 3 * 4096, PROT_READ) == -1 && errno == ENOMEM, "mprotect over a hole: ENOMEM");
	check(mprotect(p, 4096, PROT_NONE) == 0 && mprotect(p, 4096, PROT_READ) == 0 && p[0] == 0xab,
	      "PROT_NONE and back keeps the page's contents");
	check(munmap((void *)0x10000, 4096) == 0, "munmap of nothing: 0");

	/* mremap: shrink in place, grow by moving, contents kept. */
	unsigned char *q = mmap(NULL, 2 * 4096, PROT_READ | PROT_WRITE, anon, -1, 0);
	memset(q, 0x5a, 2 * 4096);
	check(mremap(q, 2 * 4096, 4096, 0) == q, "mremap shrinks in place");
	raw_mmap((uintptr_t)q + 4096, 4096, PROT_READ, anon | MAP_FIXED);
	check(mremap(q, 4096, 3 * 4096, 0) == MAP_FAILED && errno == ENOMEM, "mremap can't grow over a mapping without MAYMOVE");
	unsigned char *r = mremap(q, 4096, 4 * 4096, MREMAP_MAYMOVE);
	check(r != MAP_FAILED && r != q, "MREMAP_MAYMOVE moves");
	check(r != MAP_FAILED && r[0] == 0x5a && r[4095] == 0x5a && all_zero(r + 4096, 3 * 4096),
	      "the moved mapping keeps its page and zero-fills the rest");
	check(raw(SYS_mremap, (long)r + 1, 4096, 4096, 0, 0, 0) == -EINVAL, "mremap unaligned: EINVAL");

	/* madvise(MADV_DONTNEED) zero-fills private anonymous memory. */
	memset(r, 1, 4096);
	check(madvise(r, 4096, MADV_DONTNEED) == 0 && all_zero(r, 4096), "MADV_DONTNEED zero-fills");

	/* brk: grow (zero-filled), shrink, and refuse to go below the start. */
	uintptr_t start = syscall(SYS_brk, 0);
	check(start != 0 && (start & 4095) == 0, "brk(0) is the page after the image");
	uintptr_t grown = syscall(SYS_brk, start + 5 * 4096);
	check(grown == start + 5 * 4096, "brk grows");
	check(all_zero((unsigned char *)start, 5 * 4096), "the new heap is zero-filled");
	memset((void *)start, 3, 5 * 4096);
	check((uintptr_t)syscall(SYS_brk, start + 4096) == start + 4096, "brk shrinks");
	check((uintptr_t)syscall(SYS_brk, 4096) == start + 4096, "brk below its start: unchanged");
	check((uintptr_t)syscall(SYS_brk, start + 3 * 4096) == start + 3 * 4096 &&
	      all_zero((unsigned char *)start + 4096, 2 * 4096), "pages brk gave back come back zeroed");

	printf("probe_mm: %d failures\n", failures);
	return failures;
}
