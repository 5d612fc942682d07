/* SPDX-License-Identifier: MIT */
/*
 * faultshim.c: an LD_PRELOAD library that makes a process's file writes
 * fail or the process die at a chosen point, for the fault tests
 * (test-faults.c).  It wraps write, pwrite, pwrite64, writev, pwritev,
 * fsync, fdatasync and fallocate.  Only descriptors of regular files whose
 * path starts with one of the prefixes in FAULT_PATH (colon separated) are
 * touched; sockets, pipes and other files pass straight through.  With
 * FAULT_DIRECT it also wraps openat, for O_DIRECT (test-write.c).
 *
 *   FAULT_PATH=P1:P2          which files count
 *   FAULT_ENOSPC_AFTER=N      data writes fail with ENOSPC once N bytes
 *                             have been written to those files
 *   FAULT_FSYNC_ERRNO=E       fsync/fdatasync of those files fail with
 *                             errno E (a number) after syncing nothing
 *   FAULT_KILL_AT=K           the K-th call (1-based) of any wrapped
 *                             function on those files raises SIGKILL
 *                             before it does anything: a crash between
 *                             any two writes, inside a SQLite commit or
 *                             between shard writes
 *   FAULT_KILL_NAME=S         count toward FAULT_KILL_AT (default 1)
 *                             only calls on files whose path contains S
 *   FAULT_SLOW_US=U           sleep U microseconds in every such call:
 *                             a job that stays running long enough to
 *                             change its inputs under it
 *   FAULT_NOTE_FILE=F         before that SIGKILL, write the call's name
 *                             and the file's path to F
 *   FAULT_COUNT_FILE=F        at exit, write the number of such calls to
 *                             F (to choose K for a later run)
 *   FAULT_KILL_RENAME=1       raise SIGKILL right after the first
 *                             renameat2 that succeeds (noted as above):
 *                             an output published, not yet recorded
 *   FAULT_DIRECT=open         opening those files with O_DIRECT fails
 *                             with EINVAL, as on a file system without
 *                             it (tmpfs before Linux 6.6)
 *   FAULT_DIRECT=write        data writes through an O_DIRECT descriptor
 *                             of those files fail with EINVAL, as where
 *                             the device wants a larger alignment
 *
 * The counter is process wide and atomic: the daemon writes from several
 * pool threads.
 */
/* Both pwrite and pwrite64 are wrapped: without this, meson's
 * -D_FILE_OFFSET_BITS=64 makes the first an alias of the second. */
#undef _FILE_OFFSET_BITS
#define _GNU_SOURCE
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static atomic_ulong calls;
static atomic_ulong written;
static const char *paths;
static unsigned long enospc_after;	/* 0: never */
static int fsync_errno;
static unsigned long kill_at;		/* 0: never */
static const char *count_file;
static const char *note_file;
static const char *kill_name;
static unsigned long slow_us;
static atomic_ulong name_calls;

/* The real functions, found once before main (the loader runs
 * constructors before any thread exists). */
static int (*real_openat)(int, const char *, int, ...);
static int (*real_openat64)(int, const char *, int, ...);
static ssize_t (*real_write)(int, const void *, size_t);
static ssize_t (*real_pwrite)(int, const void *, size_t, off_t);
static ssize_t (*real_pwrite64)(int, const void *, size_t, off64_t);
static ssize_t (*real_writev)(int, const struct iovec *, int);
static ssize_t (*real_pwritev)(int, const struct iovec *, int, off_t);
static int (*real_fsync)(int);
static int (*real_fdatasync)(int);
static int (*real_fallocate)(int, int, off_t, off_t);
static int (*real_renameat2)(int, const char *, int, const char *, unsigned);
static bool kill_rename;
static const char *direct;	/* FAULT_DIRECT: "open", "write" or NULL */

static void shim_init(void) __attribute__((constructor));
static void shim_fini(void) __attribute__((destructor));

static unsigned long
env_ulong(const char *name)
{
	const char *v = getenv(name);

	return v != NULL ? strtoul(v, NULL, 10) : 0;
}

/* ISO C has no conversion from dlsym's void * to a function pointer;
 * POSIX guarantees the representation, so copy the bytes. */
#define resolve(var, name)                                                     \
	do {                                                                   \
		void *sym_ = dlsym(RTLD_NEXT, name);                           \
		memcpy((var), &sym_, sizeof *(var));                           \
	} while (0)

static void
shim_init(void)
{
	resolve(&real_openat, "openat");
	resolve(&real_openat64, "openat64");
	resolve(&real_write, "write");
	resolve(&real_pwrite, "pwrite");
	resolve(&real_pwrite64, "pwrite64");
	resolve(&real_writev, "writev");
	resolve(&real_pwritev, "pwritev");
	resolve(&real_fsync, "fsync");
	resolve(&real_fdatasync, "fdatasync");
	resolve(&real_fallocate, "fallocate");
	resolve(&real_renameat2, "renameat2");
	kill_rename = env_ulong("FAULT_KILL_RENAME") != 0;
	paths = getenv("FAULT_PATH");
	enospc_after = env_ulong("FAULT_ENOSPC_AFTER");
	fsync_errno = (int)env_ulong("FAULT_FSYNC_ERRNO");
	kill_at = env_ulong("FAULT_KILL_AT");
	count_file = getenv("FAULT_COUNT_FILE");
	note_file = getenv("FAULT_NOTE_FILE");
	kill_name = getenv("FAULT_KILL_NAME");
	slow_us = env_ulong("FAULT_SLOW_US");
	direct = getenv("FAULT_DIRECT");
	if (kill_name != NULL && kill_at == 0)
		kill_at = 1;
}

static void
shim_fini(void)
{
	FILE *fp;

	if (count_file != NULL && (fp = fopen(count_file, "w")) != NULL) {
		fprintf(fp, "%lu\n", atomic_load(&calls));
		fclose(fp);
	}
}

/* Is fd a regular file beneath one of the FAULT_PATH prefixes? */
static bool
watched(int fd)
{
	char link[64], target[4096];
	const char *p, *colon;
	struct stat st;
	ssize_t n;
	size_t len;

	if (paths == NULL || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))
		return false;
	snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
	if ((n = readlink(link, target, sizeof target - 1)) <= 0)
		return false;
	target[n] = '\0';
	for (p = paths; *p != '\0'; p = colon + 1) {
		colon = strchr(p, ':');
		len = colon != NULL ? (size_t)(colon - p) : strlen(p);
		if (len > 0 && strncmp(target, p, len) == 0)
			return true;
		if (colon == NULL)
			break;
	}
	return false;
}

/* Writes line to FAULT_NOTE_FILE, if set, and raises SIGKILL. */
static void
die_noting(const char *line)
{
	int nfd;

	if (note_file != NULL && (nfd = open(note_file, O_WRONLY | O_CREAT |
	    O_TRUNC | O_CLOEXEC, 0600)) >= 0) {
		real_write(nfd, line, strlen(line));
		real_write(nfd, "\n", 1);
		close(nfd);
	}
	raise(SIGKILL);
}

/*
 * Counts a call on a watched file and dies if it is the chosen one,
 * first noting in FAULT_NOTE_FILE which call on which file it was.
 */
static void
count_call(int fd, const char *fn)
{
	unsigned long k = atomic_fetch_add(&calls, 1) + 1;
	char link[64], line[4200];
	ssize_t n, m;

	if (slow_us != 0)
		usleep((useconds_t)slow_us);
	snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
	n = (ssize_t)snprintf(line, sizeof line, "%s ", fn);
	m = readlink(link, line + n, sizeof line - (size_t)n - 2);
	n += m > 0 ? m : 0;
	line[n] = '\0';
	if (kill_name != NULL) {
		if (strstr(line + strlen(fn) + 1, kill_name) == NULL)
			return;
		k = atomic_fetch_add(&name_calls, 1) + 1;
	}
	if (kill_at == 0 || k != kill_at)
		return;
	die_noting(line);
}

/*
 * What a wrapped data write does first: on a watched file, count the
 * call (and maybe die), then fail it if the pretend disk is full.  True
 * when the call must fail with errno set.
 */
static bool
write_fails(int fd, size_t len, const char *fn)
{
	unsigned long before;

	if (!watched(fd))
		return false;
	count_call(fd, fn);
	if (direct != NULL && strcmp(direct, "write") == 0 &&
	    (fcntl(fd, F_GETFL) & O_DIRECT) != 0) {
		errno = EINVAL;
		return true;
	}
	if (enospc_after == 0)
		return false;
	before = atomic_fetch_add(&written, (unsigned long)len);
	if (before + len <= enospc_after)
		return false;
	errno = ENOSPC;
	return true;
}

/* The same for fsync and fdatasync, with FAULT_FSYNC_ERRNO. */
static bool
sync_fails(int fd, const char *fn)
{
	if (!watched(fd))
		return false;
	count_call(fd, fn);
	if (fsync_errno == 0)
		return false;
	errno = fsync_errno;
	return true;
}

static size_t
iov_len(const struct iovec *iov, int n)
{
	size_t len = 0;
	int i;

	for (i = 0; i < n; i++)
		len += iov[i].iov_len;
	return len;
}

/* An O_DIRECT open of a watched file, refused after the fact with
 * FAULT_DIRECT=open (the path is known to be watched only once open). */
static int
open_refused(int fd, int flags)
{
	if (fd < 0 || direct == NULL || strcmp(direct, "open") != 0 ||
	    (flags & O_DIRECT) == 0 || !watched(fd))
		return fd;
	close(fd);
	errno = EINVAL;
	return -1;
}

/* The wrapped openat's work: the mode when flags want one. */
static int
open_with(int (*real)(int, const char *, int, ...), int dirfd,
    const char *path, int flags, va_list ap)
{
	mode_t mode = 0;

	if ((flags & O_CREAT) != 0 || (flags & O_TMPFILE) == O_TMPFILE)
		mode = (mode_t)va_arg(ap, int);
	return open_refused(real(dirfd, path, flags, mode), flags);
}

int
openat(int dirfd, const char *path, int flags, ...)
{
	va_list ap;
	int fd;

	va_start(ap, flags);
	fd = open_with(real_openat, dirfd, path, flags, ap);
	va_end(ap);
	return fd;
}

int
openat64(int dirfd, const char *path, int flags, ...)
{
	va_list ap;
	int fd;

	va_start(ap, flags);
	fd = open_with(real_openat64, dirfd, path, flags, ap);
	va_end(ap);
	return fd;
}

ssize_t
write(int fd, const void *buf, size_t len)
{
	return write_fails(fd, len, "write") ? -1 : real_write(fd, buf, len);
}

ssize_t
pwrite(int fd, const void *buf, size_t len, off_t off)
{
	return write_fails(fd, len, "pwrite") ? -1 :
	    real_pwrite(fd, buf, len, off);
}

ssize_t
pwrite64(int fd, const void *buf, size_t len, off64_t off)
{
	return write_fails(fd, len, "pwrite64") ? -1 :
	    real_pwrite64(fd, buf, len, off);
}

ssize_t
writev(int fd, const struct iovec *iov, int n)
{
	return write_fails(fd, iov_len(iov, n), "writev") ? -1 :
	    real_writev(fd, iov, n);
}

ssize_t
pwritev(int fd, const struct iovec *iov, int n, off_t off)
{
	return write_fails(fd, iov_len(iov, n), "pwritev") ? -1 :
	    real_pwritev(fd, iov, n, off);
}

int
fsync(int fd)
{
	return sync_fails(fd, "fsync") ? -1 : real_fsync(fd);
}

int
fdatasync(int fd)
{
	return sync_fails(fd, "fdatasync") ? -1 : real_fdatasync(fd);
}

int
fallocate(int fd, int mode, off_t off, off_t len)
{
	if (watched(fd))
		count_call(fd, "fallocate");
	return real_fallocate(fd, mode, off, len);
}

int
renameat2(int olddir, const char *old, int newdir, const char *new,
    unsigned flags)
{
	char line[4200];
	int rc = real_renameat2(olddir, old, newdir, new, flags);

	if (rc == 0 && kill_rename) {
		snprintf(line, sizeof line, "renameat2 %s %s", old, new);
		die_noting(line);
	}
	return rc;
}
