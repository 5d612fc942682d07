/* SPDX-License-Identifier: MIT */
/*
 * tsan-fd.c: descriptors ThreadSanitizer would not see made; built only
 * into ThreadSanitizer builds (graph/meson.build).
 *
 * TSan (GCC 12's) intercepts open() and close() but neither openat()
 * nor a raw syscall() (fsroot.c's openat2): a descriptor made by those is
 * unknown to it, so when one thread closes or reads a number that
 * another thread used a moment before for a descriptor TSan did see made
 * (a pipe of a command the loop has since closed), TSan reports a race
 * on the number.  There is none: the kernel hands out a number only once
 * it is free.  Here such a descriptor is handed over as a dup() of it,
 * which TSan sees made on the calling thread, the original closed
 * unseen; openat is wrapped at link time (-Wl,--wrap=openat) for every
 * program that links the engine.  The dup() itself can still meet the
 * stale accesses of a number libuv closed with a raw syscall, which
 * TSan does not see either: tests/tsan.supp suppresses that, and only
 * that (race:tsan_fd_adopt).
 */
#define _GNU_SOURCE
#include <sys/syscall.h>

#include <fcntl.h>
#include <stdarg.h>
#include <unistd.h>

#include "graph-int.h"

int __real_openat(int dirfd, const char *path, int flags, ...);
int __real_openat64(int dirfd, const char *path, int flags, ...);
int __wrap_openat(int dirfd, const char *path, int flags, ...);
int __wrap_openat64(int dirfd, const char *path, int flags, ...);

int
tsan_fd_adopt(int fd, int flags)
{
	int seen;

	if (fd < 0)
		return fd;
	seen = dup(fd);
	/* dup() clears close-on-exec: back at once (test builds only). */
	if (seen >= 0 && (flags & O_CLOEXEC))
		fcntl(seen, F_SETFD, FD_CLOEXEC);
	syscall(SYS_close, fd);
	return seen;
}

/* The mode openat takes after flags, with O_CREAT or O_TMPFILE only
 * (va_start must be in the wrapper's own frame). */
#define OPENAT_MODE(flags, mode) do {					\
	va_list ap_;							\
	if ((flags) & (O_CREAT | O_TMPFILE)) {				\
		va_start(ap_, flags);					\
		(mode) = (mode_t)va_arg(ap_, int);			\
		va_end(ap_);						\
	}								\
} while (0)

/* openat64: what openat is with _FILE_OFFSET_BITS=64 (meson's). */
int
__wrap_openat64(int dirfd, const char *path, int flags, ...)
{
	mode_t mode = 0;

	OPENAT_MODE(flags, mode);
	return tsan_fd_adopt(__real_openat64(dirfd, path, flags, mode),
	    flags);
}

int
__wrap_openat(int dirfd, const char *path, int flags, ...)
{
	mode_t mode = 0;

	OPENAT_MODE(flags, mode);
	return tsan_fd_adopt(__real_openat(dirfd, path, flags, mode), flags);
}
