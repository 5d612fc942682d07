/* SPDX-License-Identifier: MIT */
/*
 * clock.c: the daemon's clock, wall-clock seconds as a double.
 *
 * Jobs' created, started and finished times, their log lines and the
 * retention policy all read it.  It lives apart from main() (merged.c)
 * so that the job life cycle (job.c, sched.c, store.c) links without
 * the daemon's entry point.  Any thread.
 */
#include <time.h>

#include "daemon.h"

double
daemon_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}
