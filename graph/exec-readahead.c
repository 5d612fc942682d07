/* SPDX-License-Identifier: MIT */
/*
 * exec-readahead.c: ask the kernel to read the inputs of a job's next
 * tensors before its units need them.
 *
 * The units of a tensor read their inputs with pread, a chunk at a time,
 * from several files at once and from two or more threads; from a cold
 * page cache the kernel's own readahead sees interleaved offsets on one
 * open file and reads in small windows, so the disk idles between them.
 * The plan knows the order the tensors are read in, so the executor says
 * it: as each tensor starts, the inputs of the tensors after it, up to
 * EXEC_READAHEAD bytes ahead, are given to posix_fadvise(WILLNEED), which
 * queues their reads and returns.  The loop thread chooses the ranges;
 * the next unit admitted carries them, and its pool thread makes the
 * calls as its task starts.  Made on the loop thread, they cost it 18%
 * of its time with four ties merges at once on a warm cache (the kernel
 * walks the cached pages of every range), time in which no finished
 * task could be followed by the next; and on a cold one a call can wait
 * for room in the disk's queue.
 */
#include <fcntl.h>
#include <stdlib.h>

#include "exec-int.h"
#include "xmalloc.h"

/*
 * Input bytes asked for ahead of the tensors started: more than a 7B
 * model's largest tensors of two models (measured: 96 MiB left the disk
 * idle during a ties merge's later passes), few enough that what is
 * read ahead stays in the page cache until it is used.
 */
#define EXEC_READAHEAD (256u << 20)
/* One posix_fadvise call's range: within the largest request of common
 * disks (max_sectors_kb: 512 KiB and more), whatever their readahead. */
#define EXEC_READAHEAD_STEP (1u << 20)

/* The stored bytes of one input; none for a fused stage's tensor, which
 * is computed as it is read. */
static uint64_t
input_range(const struct graph_plan *p, const struct plan_input *in,
    int *fd, uint64_t *off)
{
	const struct model *m = p->models[in->model].m;

	if (in->mt->fused != NULL)
		return 0;
	*fd = m->files[in->mt->file]->fd;
	*off = in->mt->t->begin;
	return in->mt->t->end - in->mt->t->begin;
}

/*
 * posix_fadvise(WILLNEED) reads at most the larger of the device's
 * largest request and its readahead window per call (Linux's
 * force_page_cache_ra), however long the range: a range is asked for
 * in steps of EXEC_READAHEAD_STEP.  Advice only: a failure costs speed,
 * never the merge.  Pool thread; frees ra.
 */
void
ra_issue(struct ra_list *ra)
{
	uint64_t k, off, len;
	size_t i;

	for (i = 0; i < ra->n; i++) {
		off = ra->v[i].off;
		len = ra->v[i].len;
		while (len > 0) {
			k = len < EXEC_READAHEAD_STEP ? len :
			    EXEC_READAHEAD_STEP;
			(void)posix_fadvise(ra->v[i].fd, (off_t)off, (off_t)k,
			    POSIX_FADV_WILLNEED);
			off += k;
			len -= k;
		}
	}
	ra_free(ra);
}

void
ra_free(struct ra_list *ra)
{
	if (ra == NULL)
		return;
	free(ra->v);
	free(ra);
}

/* Adds a range to those the job's next unit asks for. */
static void
range_advise(struct graph_job *job, int fd, uint64_t off, uint64_t len)
{
	struct ra_list *ra = job->ra_pending;

	if (ra == NULL)
		ra = job->ra_pending = xcalloc(1, sizeof *ra);
	if (ra->n == ra->cap) {
		ra->cap = ra->cap ? 2 * ra->cap : 16;
		ra->v = xreallocarray(ra->v, ra->cap, sizeof *ra->v);
	}
	ra->v[ra->n].fd = fd;
	ra->v[ra->n].off = off;
	ra->v[ra->n++].len = len;
}

/* Tensor i's input bytes, and, with advise, has them asked for. */
static uint64_t
tensor_inputs(struct graph_job *job, size_t i, bool advise)
{
	const struct plan_tensor *pt = job->xt[i].pt;
	uint64_t len, off = 0, sum = 0;
	size_t j;
	int fd = -1;

	if (job->shard_done[pt->shard])
		return 0;	/* resumed: not read */
	for (j = 0; j < pt->nin; j++) {
		if ((len = input_range(job->plan, &pt->in[j], &fd, &off)) == 0)
			continue;
		if (advise)
			range_advise(job, fd, off, len);
		sum += len;
	}
	return sum;
}

/*
 * Tensor i has just started: its bytes, if asked for, are no longer
 * ahead; ask for the tensors after the last one asked for until
 * EXEC_READAHEAD bytes are.
 */
void
xjob_readahead(struct graph_job *job, size_t i)
{
	uint64_t len;

	if (i < job->ra_next)
		job->ra_bytes -= tensor_inputs(job, i, false);
	else {
		/* Being read now; asked for all the same, uncounted. */
		(void)tensor_inputs(job, i, true);
		job->ra_next = i + 1;
	}
	while (job->ra_next < job->plan->ntensors &&
	    job->ra_bytes < EXEC_READAHEAD) {
		len = tensor_inputs(job, job->ra_next++, true);
		job->ra_bytes += len;
	}
}
