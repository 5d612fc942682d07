/* SPDX-License-Identifier: MIT */
/*
 * progress.c: progress on stderr.  On a terminal, one bar redrawn at most
 * ten times a second (tensors, bytes, throughput, ETA, memory); otherwise
 * a plain line every ten percent, which reads well in logs and CI.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

double
cli_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void
cli_progress_init(struct cli_progress *p, bool quiet)
{
	p->tty = isatty(STDERR_FILENO);
	p->quiet = quiet;
	p->start = p->last = cli_now();
	p->last_pct = -1;
}

static void
progress_bar(struct cli_progress *p, const struct graph_progress *g,
    double pct, double now, bool final)
{
	char bar[31], *done, *total, *mem, *budget;
	double el = now - p->start, rate, eta;
	int i, fill = (int)(pct / 100 * 30);

	for (i = 0; i < 30; i++)
		bar[i] = i < fill ? '#' : '.';
	bar[30] = '\0';
	rate = el > 0 ? (double)g->bytes_done / el : 0;
	eta = rate > 0 ? (double)(g->bytes_total - g->bytes_done) / rate : 0;
	done = graph_format_size(g->bytes_done);
	total = graph_format_size(g->bytes_total);
	mem = graph_format_size(g->memory_used);
	budget = graph_format_size(g->memory_peak);
	fprintf(stderr, "\r[%s] %3.0f%% %zu/%zu tensors %s/%s %.0f MB/s ETA "
	    "%.0fs mem %s (peak %s)\033[K%s", bar, pct, g->tensors_done,
	    g->tensors_total, done, total, rate / 1e6, eta, mem, budget,
	    final ? "\n" : "");
	free(done);
	free(total);
	free(mem);
	free(budget);
}

void
cli_progress_update(struct cli_progress *p, const struct graph_progress *g,
    bool final)
{
	double now = cli_now(), pct;

	/* A job that has not started has nothing to show yet. */
	if (p->quiet || (g->bytes_total == 0 && !final))
		return;
	pct = g->bytes_total ? 100.0 * (double)g->bytes_done /
	    (double)g->bytes_total : 100.0;
	if (p->tty) {
		if (!final && now - p->last < 0.1)
			return;
		p->last = now;
		progress_bar(p, g, pct, now, final);
		return;
	}
	/* One line per ten percent; the final one only if not yet at 100. */
	if ((int)pct / 10 <= p->last_pct / 10 && (!final || p->last_pct >= 100))
		return;
	p->last_pct = (int)pct;
	fprintf(stderr, "%s: %3d%% (%zu/%zu tensors, %zu/%zu shards, %.1fs)"
	    "\n", cli_progname, (int)pct, g->tensors_done, g->tensors_total,
	    g->shards_done, g->shards_total, now - p->start);
}
