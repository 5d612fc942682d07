/* SPDX-License-Identifier: MIT */
/*
 * tap.h: a tiny Test Anything Protocol harness, header only.
 *
 * Each test program calls tap_plan() (or tap_plan_lazy() when the count is
 * not known up front), runs checks with the ok_* macros and returns
 * tap_done().  Every check prints "ok N - name" or "not ok N - name" followed
 * by a "# file:line: ..." diagnostic, so meson (protocol: 'tap') counts each
 * case.  The harness is deliberately small: tests stay dependency free and
 * readable, and a failing check never aborts the program.
 */
#ifndef TAP_H
#define TAP_H

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int tap_n;
static int tap_failed;
static int tap_lazy;

static inline void
tap_plan(int n)
{
	printf("1..%d\n", n);
	fflush(stdout);
}

static inline void
tap_plan_lazy(void)
{
	tap_lazy = 1;
}

static inline void
tap_skip_all(const char *reason)
{
	printf("1..0 # SKIP %s\n", reason);
	fflush(stdout);
	exit(0);
}

static inline int
tap_result(int pass, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static inline int
tap_result(int pass, const char *file, int line, const char *fmt, ...)
{
	va_list ap;

	char desc[512];
	char *c;

	tap_n++;
	va_start(ap, fmt);
	vsnprintf(desc, sizeof desc, fmt, ap);
	va_end(ap);
	/* A description quoting program output may hold line breaks; TAP
	 * is line based, so they become spaces rather than stray lines. */
	for (c = desc; *c != '\0'; c++)
		if (*c == '\n' || *c == '\r')
			*c = ' ';
	printf("%s %d - %s\n", pass ? "ok" : "not ok", tap_n, desc);
	if (!pass) {
		tap_failed++;
		printf("# %s:%d: failed\n", file, line);
	}
	fflush(stdout);
	return pass;
}

static inline void
tap_diag(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static inline void
tap_diag(const char *fmt, ...)
{
	va_list ap;
	char text[4096];
	const char *line = text;
	const char *nl;

	va_start(ap, fmt);
	vsnprintf(text, sizeof text, fmt, ap);
	va_end(ap);
	/* Every line of a diagnostic (program output often has several)
	 * must start with "# " to stay a TAP comment. */
	while ((nl = strchr(line, '\n')) != NULL) {
		printf("# %.*s\n", (int)(nl - line), line);
		line = nl + 1;
	}
	if (*line != '\0' || line == text)
		printf("# %s\n", line);
	fflush(stdout);
}

#define ok(cond, ...) tap_result(!!(cond), __FILE__, __LINE__, __VA_ARGS__)

#define ok_int_eq(got, want, ...)                                              \
	do {                                                                   \
		long long tap_g_ = (long long)(got), tap_w_ = (long long)(want); \
		if (!tap_result(tap_g_ == tap_w_, __FILE__, __LINE__,           \
			__VA_ARGS__))                                          \
			tap_diag("expected %lld, got %lld", tap_w_, tap_g_);    \
	} while (0)

#define ok_str_eq(got, want, ...)                                              \
	do {                                                                   \
		const char *tap_g_ = (got), *tap_w_ = (want);                  \
		int tap_p_ = (tap_g_ == NULL && tap_w_ == NULL) ||             \
		    (tap_g_ != NULL && tap_w_ != NULL &&                       \
			strcmp(tap_g_, tap_w_) == 0);                          \
		if (!tap_result(tap_p_, __FILE__, __LINE__, __VA_ARGS__))      \
			tap_diag("expected \"%s\", got \"%s\"",                 \
			    tap_w_ ? tap_w_ : "(null)",                        \
			    tap_g_ ? tap_g_ : "(null)");                       \
	} while (0)

/* Passes when needle occurs in haystack; used for error texts. */
#define ok_str_has(hay, needle, ...)                                           \
	do {                                                                   \
		const char *tap_h_ = (hay), *tap_n_ = (needle);                \
		int tap_p_ = tap_h_ != NULL && strstr(tap_h_, tap_n_) != NULL; \
		if (!tap_result(tap_p_, __FILE__, __LINE__, __VA_ARGS__))      \
			tap_diag("\"%s\" not found in \"%s\"", tap_n_,          \
			    tap_h_ ? tap_h_ : "(null)");                       \
	} while (0)

#define ok_dbl_near(got, want, tol, ...)                                       \
	do {                                                                   \
		double tap_g_ = (got), tap_w_ = (want);                        \
		if (!tap_result(fabs(tap_g_ - tap_w_) <= (tol), __FILE__,       \
			__LINE__, __VA_ARGS__))                                \
			tap_diag("expected %.17g, got %.17g", tap_w_, tap_g_);  \
	} while (0)

static inline int
tap_done(void)
{
	if (tap_lazy)
		printf("1..%d\n", tap_n);
	printf("# %d passed, %d failed\n", tap_n - tap_failed, tap_failed);
	fflush(stdout);
	return tap_failed != 0;
}

#endif /* TAP_H */
