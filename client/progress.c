/* SPDX-License-Identifier: MIT */
/*
 * progress.c: progress on stderr.  On a terminal, one line redrawn at
 * most ten times a second and fitted to the terminal's width: the
 * percentage always, then what fits of the ETA, the bar, bytes, tensors,
 * throughput and memory, in that order of importance; a line that wrapped
 * would scroll a new line at every redraw.  Otherwise a plain line every
 * ten percent, which reads well in logs and CI.  Rate and ETA come from
 * the job's own progress (its elapsed time), never from when the watcher
 * started; the memory peak only grows.
 */
#include <sys/ioctl.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "xmalloc.h"

/* The bar's width: at most, and at least before it is dropped. */
#define BAR_MAX 30
#define BAR_MIN 10

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
	memset(p, 0, sizeof *p);
	p->tty = isatty(STDERR_FILENO);
	p->quiet = quiet;
	p->start = p->last = cli_now();
	p->last_pct = -1;
}

void
cli_progress_fini(struct cli_progress *p)
{
	free(p->said);
	p->said = NULL;
}

/* The terminal's columns (stderr's), 80 when it does not say. */
int
cli_term_width(void)
{
	struct winsize ws;

	if (ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0)
		return ws.ws_col;
	return 80;
}

/* "0.4s", "14s", "3m05s", "2h07m": a time that fits. */
void
cli_format_duration(char *buf, size_t len, double s)
{
	uint64_t t = s > 0 ? (uint64_t)(s + 0.5) : 0;

	if (s < 9.95)
		snprintf(buf, len, "%.1fs", s > 0 ? s : 0);
	else if (t < 60)
		snprintf(buf, len, "%" PRIu64 "s", t);
	else if (t < 3600)
		snprintf(buf, len, "%" PRIu64 "m%02" PRIu64 "s", t / 60,
		    t % 60);
	else
		snprintf(buf, len, "%" PRIu64 "h%02" PRIu64 "m", t / 3600,
		    t / 60 % 60);
}

/* The parts of a progress line, by importance: the most first. */
enum part {
	PART_PCT,
	PART_ETA,
	PART_BAR,
	PART_BYTES,
	PART_TENSORS,
	PART_RATE,
	PART_MEM,
	NPARTS,
};

/*
 * One progress line of at most width - 1 columns (the last column would
 * wrap on some terminals): the parts in display order, the least
 * important dropped until it fits, the bar shrunk before it is dropped.
 * eta: seconds, -1 not known yet, -2 none (the job ended).
 */
static void
progress_line(char *out, size_t len, int width,
    const struct graph_progress *g, double pct, double rate, double eta,
    uint64_t peak)
{
	static const enum part order[NPARTS] = { PART_BAR, PART_PCT,
	    PART_TENSORS, PART_BYTES, PART_RATE, PART_ETA, PART_MEM };
	char part[NPARTS][96], bar[BAR_MAX + 3], left[32], *a, *b, *c;
	bool keep[NPARTS];
	int used, barw = BAR_MAX, i, k, fill;
	size_t n = 0;

	a = graph_format_size(g->bytes_done);
	b = graph_format_size(g->bytes_total);
	snprintf(part[PART_PCT], sizeof part[0], "%3.0f%%", pct);
	snprintf(part[PART_TENSORS], sizeof part[0], "%zu/%zu tensors",
	    g->tensors_done, g->tensors_total);
	snprintf(part[PART_BYTES], sizeof part[0], "%s/%s", a, b);
	snprintf(part[PART_RATE], sizeof part[0], "%.0f MB/s", rate / 1e6);
	cli_format_duration(left, sizeof left, eta);
	snprintf(part[PART_ETA], sizeof part[0], "ETA %s", eta >= 0 ? left :
	    "?");
	free(a);
	free(b);
	a = graph_format_size(g->job_memory ? g->job_memory :
	    g->memory_used);
	c = graph_format_size(peak);
	snprintf(part[PART_MEM], sizeof part[0], "mem %s (peak %s)", a, c);
	free(a);
	free(c);
	part[PART_BAR][0] = '\0';
	for (i = 0; i < NPARTS; i++)
		keep[i] = true;
	/* Nothing to say: no memory seen yet, or no time left (the end). */
	keep[PART_MEM] = peak > 0;
	keep[PART_ETA] = eta > -1.5;
	/* Drop from the least important until the line fits, the bar
	 * counted at its least. */
	for (k = NPARTS - 1;; k--) {
		used = -1;
		for (i = 0; i < NPARTS; i++)
			if (keep[i] && i != PART_BAR)
				used += (int)strlen(part[i]) + 1;
		if (used + (keep[PART_BAR] ? BAR_MIN + 3 : 0) <= width - 1 ||
		    k <= PART_PCT)
			break;
		keep[k] = false;
	}
	if (keep[PART_BAR]) {
		barw = width - 1 - used - 3;
		if (barw > BAR_MAX)
			barw = BAR_MAX;
		if (barw < BAR_MIN)
			barw = BAR_MIN;
		fill = (int)(pct / 100 * barw);
		bar[0] = '[';
		for (i = 0; i < barw; i++)
			bar[i + 1] = i < fill ? '#' : '.';
		bar[barw + 1] = ']';
		bar[barw + 2] = '\0';
		memcpy(part[PART_BAR], bar, (size_t)barw + 3);
	}
	out[0] = '\0';
	for (i = 0; i < NPARTS; i++) {
		if (!keep[order[i]])
			continue;
		n += (size_t)snprintf(out + n, n < len ? len - n : 0, "%s%s",
		    n ? " " : "", part[order[i]]);
		if (n >= len)
			break;
	}
	/* A terminal too narrow for even the percentage gets it cut. */
	if (width > 1 && strlen(out) > (size_t)width - 1)
		out[width - 1] = '\0';
}

/* Draws the line; final ends it with a newline. */
static void
progress_draw(struct cli_progress *p, const struct graph_progress *g,
    double elapsed, double eta, bool final)
{
	char line[512];
	double pct = g->bytes_total ? 100.0 * (double)g->bytes_done /
	    (double)g->bytes_total : 100.0;
	double rate = elapsed > 0 ? (double)g->bytes_done / elapsed : 0;

	/* Extrapolated from the first kilobytes, an ETA is noise (it said
	 * 1h31m of a job that took 0.6s): none before 1%. */
	if (eta >= 0 && pct < 1)
		eta = -1;
	if (g->memory_peak > p->peak)
		p->peak = g->memory_peak;
	if (g->job_memory > p->peak)
		p->peak = g->job_memory;
	if (!p->tty) {
		/* One line per ten percent; the final one only if not yet
		 * at 100. */
		if ((int)pct / 10 <= p->last_pct / 10 &&
		    (!final || p->last_pct >= 100))
			return;
		p->last_pct = (int)pct;
		fprintf(stderr, "%s: %3d%% (%zu/%zu tensors, %zu/%zu shards, "
		    "%.1fs)\n", cli_progname, (int)pct, g->tensors_done,
		    g->tensors_total, g->shards_done, g->shards_total,
		    elapsed);
		return;
	}
	/* A wait said again after progress is news again. */
	free(p->said);
	p->said = NULL;
	progress_line(line, sizeof line, cli_term_width(), g, pct, rate, eta,
	    p->peak);
	fprintf(stderr, "\r%s\033[K%s", line, final ? "\n" : "");
	p->drawn = !final;
}

void
cli_progress_update(struct cli_progress *p, const struct graph_progress *g,
    bool final)
{
	double now = cli_now(), el = now - p->start, eta = -1;

	/* A job that has not started has nothing to show yet. */
	if (p->quiet || (g->bytes_total == 0 && !final))
		return;
	if (p->tty && !final && now - p->last < 0.1)
		return;
	p->last = now;
	if (final)
		eta = -2;
	else if (g->bytes_done > 0 && el > 0)
		eta = el * (double)(g->bytes_total - g->bytes_done) /
		    (double)g->bytes_done;
	progress_draw(p, g, el, eta, final);
}

void
cli_progress_job(struct cli_progress *p, const struct graph_progress *g,
    double elapsed, double eta, bool final)
{
	double now = cli_now();

	/* A job that never ran (cancelled while queued) has no bar. */
	if (p->quiet || g->bytes_total == 0)
		return;
	if (p->tty && !final && now - p->last < 0.1)
		return;
	p->last = now;
	progress_draw(p, g, elapsed, eta, final);
}

/*
 * A job that waits: "job 12 queued: position 2, waiting for job 7
 * (running)", "job 12 running: waiting for 96.0 MiB of memory; ...".
 * The reason's leading word (the table's short form, "dependency:") is
 * left out; pos 0: no position.
 */
void
cli_progress_wait(struct cli_progress *p, uint64_t job, const char *state,
    uint64_t pos, const char *reason)
{
	char line[512], at[48] = "";
	const char *text;
	int width;

	if (p->quiet || reason == NULL || *reason == '\0')
		return;
	text = strstr(reason, ": ") != NULL ? strstr(reason, ": ") + 2 :
	    reason;
	if (pos > 0)
		snprintf(at, sizeof at, "position %" PRIu64 ", ", pos);
	snprintf(line, sizeof line, "job %" PRIu64 " %s: %s%s", job, state,
	    at, text);
	/* Said once; redrawn on a terminal. */
	if (p->said != NULL && strcmp(p->said, line) == 0)
		return;
	free(p->said);
	p->said = xstrdup(line);
	if (!p->tty) {
		fprintf(stderr, "%s: %s\n", cli_progname, line);
		return;
	}
	width = cli_term_width();
	if (width > 1 && strlen(line) > (size_t)width - 1)
		line[width - 1] = '\0';
	fprintf(stderr, "\r%s\033[K", line);
	p->drawn = true;
}

void
cli_progress_end(struct cli_progress *p)
{
	if (p->tty && p->drawn)
		fprintf(stderr, "\n");
	p->drawn = false;
}
