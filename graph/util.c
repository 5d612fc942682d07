/* SPDX-License-Identifier: MIT */
/*
 * util.c: process setup and small helpers shared by the engine's users:
 * sizes with suffixes, durations, bounded whole-file reads, the submitter's
 * environment.  Safe on any thread except graph_init().
 */
#include <sys/stat.h>

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "graph-int.h"

void openblas_set_num_threads(int);
/* Only the pthread build of OpenBLAS has it (Debian's default). */
int blas_thread_shutdown_(void) __attribute__((weak));

/*
 * Call once at startup, before any thread of ours exists.  Merges run
 * several chunks on the libuv pool at once; OpenBLAS threads on top of
 * that would oversubscribe the cores (OpenBLAS FAQ), so BLAS is
 * single-threaded.  The pthread build has already started its server
 * threads when it was loaded (one fewer than the cores), and each spins
 * in sched_yield() for 2^28 cycles before it sleeps: a tenth of a second
 * of a core taken from every command (8% of inspect's CPU time), though
 * no job will ever reach them.  So they are stopped; with one thread
 * OpenBLAS never starts them again.
 */
void
graph_init(void)
{
	openblas_set_num_threads(1);
	if (blas_thread_shutdown_ != NULL)
		blas_thread_shutdown_();
}

/*
 * Sizes: an integer with an optional suffix.  Memory sizes are binary
 * (K = 1024, "2G" = 2 GiB, "KiB"/"MiB"/"GiB" also taken); shard sizes follow
 * mergekit and are decimal (K = 10^3, M = 10^6, B or G = 10^9).
 */
int
graph_parse_size(const char *s, bool binary, uint64_t *out)
{
	uint64_t v = 0, mul = 1, base = binary ? 1024 : 1000;
	const char *p = s;
	int shift;

	if (!isdigit((unsigned char)*p))
		return -EINVAL;
	for (; isdigit((unsigned char)*p); p++) {
		if (v > (UINT64_MAX - 9) / 10)
			return -ERANGE;
		v = v * 10 + (uint64_t)(*p - '0');
	}
	switch (toupper((unsigned char)*p)) {
	case '\0':
		shift = 0;
		break;
	case 'K':
		shift = 1;
		break;
	case 'M':
		shift = 2;
		break;
	case 'G':
		shift = 3;
		break;
	case 'B':
		shift = binary ? -1 : 3;
		break;
	case 'T':
		shift = 4;
		break;
	default:
		return -EINVAL;
	}
	if (shift < 0)
		return -EINVAL;
	if (*p != '\0') {
		p++;
		if (binary && (strcasecmp(p, "iB") == 0 || strcasecmp(p, "B")
		    == 0))
			p += strlen(p);
		if (*p != '\0')
			return -EINVAL;
	}
	while (shift-- > 0)
		mul *= base;
	if (v > UINT64_MAX / mul)
		return -ERANGE;
	*out = v * mul;
	return 0;
}

/*
 * Durations: an integer with an optional unit, s (the default), m, h, d
 * or w ("30d", "12h", "90"); for retention settings.  At most 100 years,
 * so that seconds stay exact in a double and in the protocol's integers.
 * Returns 0 and the seconds in *out, or -EINVAL / -ERANGE.
 */
int
graph_parse_duration(const char *s, uint64_t *out)
{
	static const uint64_t max = 100ull * 366 * 86400;
	uint64_t v = 0, mul;
	const char *p = s;

	if (!isdigit((unsigned char)*p))
		return -EINVAL;
	for (; isdigit((unsigned char)*p); p++) {
		if (v > max)
			return -ERANGE;
		v = v * 10 + (uint64_t)(*p - '0');
	}
	switch (*p) {
	case '\0':
	case 's':
		mul = 1;
		break;
	case 'm':
		mul = 60;
		break;
	case 'h':
		mul = 3600;
		break;
	case 'd':
		mul = 86400;
		break;
	case 'w':
		mul = 7 * 86400;
		break;
	default:
		return -EINVAL;
	}
	if (*p != '\0' && p[1] != '\0')
		return -EINVAL;
	if (v > max / mul)
		return -ERANGE;
	*out = v * mul;
	return 0;
}

char *
graph_format_size(uint64_t v)
{
	static const char *const units[] = { "B", "KiB", "MiB", "GiB",
		"TiB" };
	double d = (double)v;
	int u = 0;

	while (d >= 1024 && u < 4) {
		d /= 1024;
		u++;
	}
	if (u == 0)
		return xasprintf("%" PRIu64 " B", v);
	return xasprintf("%.1f %s", d, units[u]);
}

/*
 * Reads all of the regular file open on fd (at most max bytes), which it
 * closes, into a new NUL-terminated buffer.  Returns 0 or a negative
 * errno: -EINVAL for a non-regular file, -EFBIG over max, -EIO if the
 * file shrank while being read.
 */
int
graph_read_fd(int fd, size_t max, char **out, size_t *len)
{
	struct stat st;
	size_t got = 0;
	ssize_t n;
	char *buf;
	int rc;

	*out = NULL;
	if (fstat(fd, &st) == -1 || !S_ISREG(st.st_mode)) {
		rc = S_ISREG(st.st_mode) ? -errno : -EINVAL;
		close(fd);
		return rc;
	}
	if ((uint64_t)st.st_size > max) {
		close(fd);
		return -EFBIG;
	}
	buf = xmalloc((size_t)st.st_size + 1);
	while (got < (size_t)st.st_size) {
		n = read(fd, buf + got, (size_t)st.st_size - got);
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0) {
			rc = n == 0 ? -EIO : -errno;
			free(buf);
			close(fd);
			return rc;
		}
		got += (size_t)n;
	}
	close(fd);
	buf[got] = '\0';
	*out = buf;
	*len = got;
	return 0;
}

int
graph_read_file(const char *path, size_t max, char **out, size_t *len)
{
	int fd;

	*out = NULL;
	/* O_NONBLOCK: a FIFO would block the open until somebody writes;
	 * graph_read_fd then refuses anything but a regular file. */
	if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)) == -1)
		return -errno;
	return graph_read_fd(fd, max, out, len);
}

void
graph_env_from_process(struct graph_env *env)
{
	/* Per thread: the daemon plans on pool threads, several at once. */
	static _Thread_local char cwd[4096];

	memset(env, 0, sizeof *env);
	if (getcwd(cwd, sizeof cwd) != NULL)
		env->cwd = cwd;
	env->hf_hub_cache = getenv("HF_HUB_CACHE");
	env->hf_home = getenv("HF_HOME");
	env->home = getenv("HOME");
}


/*
 * Messages quote names from files and configs that anyone may have
 * written: a tensor name may hold a line break or a terminal escape.
 * Takes s and returns it with every control byte written as \n, \t, \r
 * or \xHH, so that a message is always one line and inert.  Bytes from
 * 0x80 up are left alone (UTF-8; the protocol checks it).
 */
char *
graph_text_printable(char *s)
{
	struct xbuf b = { 0 };
	const unsigned char *p;

	if (s == NULL)
		return NULL;
	for (p = (const unsigned char *)s; *p != '\0'; p++)
		if (*p < 0x20 || *p == 0x7f)
			break;
	if (*p == '\0')
		return s;
	for (p = (const unsigned char *)s; *p != '\0'; p++) {
		if (*p == '\n')
			xbuf_add(&b, "\\n", 2);
		else if (*p == '\t')
			xbuf_add(&b, "\\t", 2);
		else if (*p == '\r')
			xbuf_add(&b, "\\r", 2);
		else if (*p < 0x20 || *p == 0x7f)
			xbuf_printf(&b, "\\x%02x", *p);
		else
			xbuf_add(&b, p, 1);
	}
	free(s);
	return xbuf_take(&b);
}
