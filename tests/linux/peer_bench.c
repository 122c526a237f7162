/*
 * peer_bench: the same two loops, timed the same way, under extregs and
 * under Linux (`extregs bench --peer`). A getpid loop, and a raise() ->
 * handler -> rt_sigreturn loop, each timed with RDTSC in user mode in
 * batches of 16; prints one PEER line with the medians (TSC ticks per
 * round trip). As Linux's /init (PID 1) it powers the machine off at the
 * end, so QEMU exits; elsewhere it exits 0.
 *
 * SPDX-License-Identifier: MIT OR Apache-2.0
 */
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define BATCH 16
#define GETPID_BATCHES 1024
#define SIGNAL_BATCHES 128

static inline uint64_t tsc(void)
{
	uint32_t low, high;
	__asm__ volatile("lfence\n\trdtsc" : "=a"(low), "=d"(high) :: "memory");
	return ((uint64_t)high << 32) | low;
}

/* getpid without libc's help: SYSCALL, as the kernel sees it. */
static inline long raw_getpid(void)
{
	long result = SYS_getpid;
	__asm__ volatile("syscall" : "+a"(result) :: "rcx", "r11", "memory");
	return result;
}

static volatile int handled;

static void handler(int sig)
{
	(void)sig;
	handled++;
}

static int compare(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static uint64_t median(uint64_t *samples, int count)
{
	qsort(samples, count, sizeof(*samples), compare);
	return samples[count / 2];
}

static uint64_t getpid_samples[GETPID_BATCHES], signal_samples[SIGNAL_BATCHES];

int main(void)
{
	struct sigaction action;
	memset(&action, 0, sizeof(action));
	action.sa_handler = handler;
	sigaction(SIGUSR1, &action, NULL);
	for (int warm = 0; warm < 64; warm++) {
		raw_getpid();
		raise(SIGUSR1);
	}
	for (int batch = 0; batch < GETPID_BATCHES; batch++) {
		uint64_t start = tsc();
		for (int i = 0; i < BATCH; i++)
			raw_getpid();
		getpid_samples[batch] = (tsc() - start) / BATCH;
	}
	handled = 0;
	for (int batch = 0; batch < SIGNAL_BATCHES; batch++) {
		uint64_t start = tsc();
		for (int i = 0; i < BATCH; i++)
			raise(SIGUSR1);
		signal_samples[batch] = (tsc() - start) / BATCH;
	}
	int ok = handled == SIGNAL_BATCHES * BATCH;
	printf("PEER {\"getpid_ticks\":%llu,\"signal_ticks\":%llu,\"batch\":%d,\"getpid_batches\":%d,\"signal_batches\":%d,\"handlers_ran\":%d,\"ok\":%s}\n",
	       (unsigned long long)median(getpid_samples, GETPID_BATCHES),
	       (unsigned long long)median(signal_samples, SIGNAL_BATCHES), BATCH, GETPID_BATCHES,
	       SIGNAL_BATCHES, handled, ok ? "true" : "false");
	fflush(stdout);
	if (getpid() == 1) {
		/* Linux's /init: power off (LINUX_REBOOT_CMD_POWER_OFF). */
		syscall(SYS_reboot, 0xfee1dead, 672274793, 0x4321fedc, 0);
	}
	return ok ? 0 : 1;
}
