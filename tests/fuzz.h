/* SPDX-License-Identifier: MIT */
/*
 * fuzz.h: what every fuzz target (tests/fuzz-*.c) shares: the libFuzzer
 * entry point's prototype and check(), which aborts -- so that libFuzzer
 * records the input -- when one of the target's invariants breaks.
 * Define FUZZ_NAME before including it.
 */
#ifndef FUZZ_H
#define FUZZ_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *, size_t);

static void fuzz_die(const char *) __attribute__((noreturn));

static void
fuzz_die(const char *what)
{
	fprintf(stderr, "%s: invariant broken: %s\n", FUZZ_NAME, what);
	abort();
}

#define check(cond, what)                                                      \
	do {                                                                   \
		if (!(cond))                                                   \
			fuzz_die(what);                                        \
	} while (0)

#endif /* FUZZ_H */
