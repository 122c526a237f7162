/*
 * probe_crash: ends the way argv[1] says, for the exec runner's exit
 * statuses and Linux's fatal-signal line. `exit N` exits N; `segv` stores
 * to an unmapped page (SIGSEGV: 139); `ud2` executes ud2 (SIGILL: 132);
 * `args` prints its arguments and exits 0.
 *
 * SPDX-License-Identifier: MIT OR Apache-2.0
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv)
{
	if (argc >= 3 && strcmp(argv[1], "exit") == 0)
		return atoi(argv[2]);
	if (argc >= 2 && strcmp(argv[1], "segv") == 0) {
		fflush(stdout);
		*(volatile int *)0x1000 = 1;
	}
	if (argc >= 2 && strcmp(argv[1], "ud2") == 0)
		__asm__ volatile("ud2");
	if (argc >= 2 && strcmp(argv[1], "args") == 0) {
		for (int i = 0; i < argc; i++)
			printf("argv[%d]=%s\n", i, argv[i]);
		return 0;
	}
	fprintf(stderr, "usage: probe_crash exit N | segv | ud2 | args ...\n");
	return 2;
}
