/* SPDX-License-Identifier: MIT */
/*
 * log.c: merged's log, to stderr (the foreground and systemd's journal).
 *
 * Thread safe (workers may log, sparingly), one line per call, with a
 * timestamp and level; log_warn adds strerror(errno).  Every function
 * keeps errno as it found it.  The only global state of the daemon, so
 * that the logger need not be passed through every call (STYLE.md 2.1).
 */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "daemon.h"

static int log_level;

static void log_vput(const char *, const char *, va_list, const char *)
    __attribute__((format(printf, 2, 0)));
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

void
log_init(int verbose)
{
	log_level = verbose;
}

static void
log_vput(const char *level, const char *fmt, va_list ap, const char *suffix)
{
	struct timespec ts;
	struct tm tm;
	char when[32];

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
	pthread_mutex_lock(&log_lock);
	fprintf(stderr, "%s.%03ldZ merged[%s] ", when, ts.tv_nsec / 1000000,
	    level);
	vfprintf(stderr, fmt, ap);
	if (suffix != NULL)
		fprintf(stderr, ": %s", suffix);
	fputc('\n', stderr);
	fflush(stderr);
	pthread_mutex_unlock(&log_lock);
}

void
log_warn(const char *fmt, ...)
{
	int saved = errno;
	va_list ap;

	va_start(ap, fmt);
	log_vput("warn", fmt, ap, strerror(saved));
	va_end(ap);
	errno = saved;
}

void
log_warnx(const char *fmt, ...)
{
	int saved = errno;
	va_list ap;

	va_start(ap, fmt);
	log_vput("warn", fmt, ap, NULL);
	va_end(ap);
	errno = saved;
}

void
log_info(const char *fmt, ...)
{
	int saved = errno;
	va_list ap;

	if (log_level < 1)
		return;
	va_start(ap, fmt);
	log_vput("info", fmt, ap, NULL);
	va_end(ap);
	errno = saved;
}

void
log_debug(const char *fmt, ...)
{
	int saved = errno;
	va_list ap;

	if (log_level < 2)
		return;
	va_start(ap, fmt);
	log_vput("debug", fmt, ap, NULL);
	va_end(ap);
	errno = saved;
}

void
fatal(const char *fmt, ...)
{
	int saved = errno;
	va_list ap;

	va_start(ap, fmt);
	log_vput("fatal", fmt, ap, strerror(saved));
	va_end(ap);
	exit(1);
}

void
fatalx(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vput("fatal", fmt, ap, NULL);
	va_end(ap);
	exit(1);
}
