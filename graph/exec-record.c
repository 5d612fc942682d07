/* SPDX-License-Identifier: MIT */
/*
 * exec-record.c: the record of a job submitted with graph_job_opts.record
 * (record.c), kept in its staging directory on the loop thread.
 *
 * Written when the staging directory is set up, when a shard is durably
 * on disk (after its fsync, so a shard the record calls done is whole),
 * at most once a second from the progress reports, and once more with
 * the reason when the job stops short and keeps its staging directory.
 * It is removed, with any half-written copy, on the loop thread before
 * the finishing task is queued: nothing writes it after that, so it is
 * never published with the output.  Each write goes to a temporary name
 * renamed over the record, so a reader sees a whole one or the previous
 * one.  A record that cannot be written costs the job nothing but its
 * resume point: the merge goes on.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "exec-int.h"

#define RECORD_TMP GRAPH_RECORD_FILE ".tmp"
#define RECORD_INTERVAL_MS 1000

static void
record_write(struct graph_job *job, const char *error)
{
	struct graph_record r;
	const struct graph_plan *p = job->plan;
	char *text;
	size_t i, len;
	ssize_t n;
	int fd;

	memset(&r, 0, sizeof r);
	memcpy(r.plan, job->fingerprint, sizeof r.plan);
	r.bytes_done = job->prog.bytes_done;
	r.bytes_total = job->prog.bytes_total;
	r.tensors_done = job->prog.tensors_done;
	r.tensors_total = job->prog.tensors_total;
	r.memory_peak = job->ex->peak;
	r.shards = xmalloc(p->nshards + 1);
	for (i = 0; i < p->nshards; i++)
		r.shards[i] = job->shard_done[i] ? '1' : '0';
	r.shards[p->nshards] = '\0';
	r.error = error != NULL ? xstrdup(error) : NULL;
	text = graph_record_format(&r);
	graph_record_fini(&r);
	len = strlen(text);
	fd = openat(job->stage_fd, RECORD_TMP, O_WRONLY | O_CREAT | O_TRUNC |
	    O_NOFOLLOW | O_CLOEXEC, 0644);
	if (fd != -1) {
		n = write(fd, text, len);
		if (close(fd) == 0 && n == (ssize_t)len)
			(void)renameat(job->stage_fd, RECORD_TMP,
			    job->stage_fd, GRAPH_RECORD_FILE);
	}
	free(text);
	job->record_ms = uv_now(job->ex->loop);
}

/* A progress report or a finished shard (now: not rate-limited). */
void
record_update(struct graph_job *job, bool now)
{
	if (!job->record || job->state != XJOB_RUNNING ||
	    job->stage_fd == -1)
		return;
	if (!now && uv_now(job->ex->loop) - job->record_ms <
	    RECORD_INTERVAL_MS)
		return;
	record_write(job, NULL);
}

/* The job stops short: keep why beside its shards, or nothing. */
void
record_stop(struct graph_job *job)
{
	if (!job->record)
		return;
	if (job->keep_staging && job->stage_fd != -1 &&
	    job->state == XJOB_RUNNING)
		record_write(job, job->err);
	job->record = false;
}

/* The job is about to finish: what is published holds no record. */
void
record_remove(struct graph_job *job)
{
	if (!job->record)
		return;
	(void)unlinkat(job->stage_fd, RECORD_TMP, 0);
	(void)unlinkat(job->stage_fd, GRAPH_RECORD_FILE, 0);
	job->record = false;
}
