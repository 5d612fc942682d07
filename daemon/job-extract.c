/* SPDX-License-Identifier: MIT */
/*
 * job-extract.c: the extract-lora job kind (mergectl submit
 * --extract-lora): a LoRA adapter extracted from a fine-tune and its
 * base, queued, planned, scheduled, cancelled, interrupted and resumed
 * like a merge (job.c does the life cycle for both kinds; this file is
 * what differs).
 *
 * The job's config is the JSON object of its options
 * (common/extractopts-json.c); the merge options (memory, seed, force,
 * model card, lora dtype) are the job's own, as a merge's.  It is planned
 * from the client's descriptors with the owner's rights, every problem at
 * once, before it is accepted; a weight that needs more than the budget
 * is one of them (a daemon's budget is shared, so nothing runs over it).
 * It runs on the daemon's loop (graph_extract_start), each weight leasing
 * its memory from the executor's budget, so that merges and extractions
 * share one --memory.  Progress counts the bytes of the weights read.  A
 * resume runs it again from the start with the same seed: the adapter is
 * byte-identical; the weights decomposed before the interruption are
 * computed again (the spool they went to is not kept).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "daemon.h"
#include "extractopts-json.h"
#include "xmalloc.h"

int
job_plan_extract(struct djob *j, uint64_t budget, int threads,
    const atomic_bool *cancel, struct graph_diags *d, char **cause)
{
	struct graph_extract_summary sum;
	struct graph_plan_files files;
	struct graph_extract_opts o;
	struct extractopts keep;
	char *why = NULL;
	int rc;

	graph_extract_opts_default(&o);
	if (extractopts_parse(j->config, &o, &keep, &why) != 0) {
		graph_diag_add(d, GRAPH_SEV_ERROR, NULL, "%s", why);
		free(why);
		extractopts_fini(&keep);
		return -EINVAL;
	}
	o.merge = j->opts;
	/* The job's cap, within the daemon's budget. */
	o.merge.memory = j->opts.memory != 0 && j->opts.memory < budget ?
	    j->opts.memory : budget;
	o.threads = threads;
	o.dirs = j->dirs;
	o.ndirs = j->ndirs;
	o.cred = &j->cred;
	o.memory_strict = true;
	o.cancel = cancel;
	if (o.invocation == NULL)
		o.invocation = "mergectl submit --extract-lora";
	/* cancel is the prep's, which ends with planning: the run is
	 * stopped through graph_extract_cancel(). */
	rc = graph_extract_plan(&o, &j->xplan, d);
	extractopts_fini(&keep);
	if (rc != 0)
		return rc == -ECANCELED ? rc : -EINVAL;
	graph_extract_summary(j->xplan, &sum);
	graph_extract_files(j->xplan, &files);
	return job_record_plan(j, sum.seed, &files, cause);
}

/* Each weight's result goes to the job's log. */
static void
job_x_weight(const struct graph_extract_weight *w, void *arg)
{
	struct djob *j = arg;

	if (w->kind == GRAPH_EXTRACT_FULL)
		job_log(j->daemon, j, "%s: saved in full, as its adapter "
		    "changes it (%.2fs)", w->name, w->seconds);
	else if (w->rank == 0)
		job_log(j->daemon, j, "%s: rank 0, left out (%.2fs)", w->name,
		    w->seconds);
	else
		job_log(j->daemon, j, "%s: [%" PRId64 ", %" PRId64 "] rank %"
		    PRId64 ", relative error %.6g (%.2fs)", w->name, w->rows,
		    w->cols, w->rank, w->rel_error, w->seconds);
}

static void
job_x_progress(struct graph_extract_job *xj, const struct graph_progress *g,
    void *arg)
{
	(void)xj;
	job_note_progress(arg, g);
}

static void
job_x_staged(struct graph_extract_job *xj, uint64_t dev, uint64_t ino,
    void *arg)
{
	(void)xj;
	job_note_staged(arg, dev, ino);
}

static void
job_x_done(struct graph_extract_job *xj, int rc, const char *err,
    const struct graph_diags *warnings, void *arg)
{
	struct djob *j = arg;
	struct graph_extract_summary s;
	size_t i;

	graph_extract_job_progress(xj, &j->prog);
	j->xj = NULL;
	for (i = 0; i < warnings->n; i++)
		job_log(j->daemon, j, "warning: %s%s%s", warnings->v[i].where ?
		    warnings->v[i].where : "", warnings->v[i].where ? ": " :
		    "", warnings->v[i].msg);
	if (rc == 0) {
		graph_extract_summary(j->xplan, &s);
		j->shards_done[0] = '1';
		job_log(j->daemon, j, "wrote %zu weight%s decomposed (rank %"
		    PRId64 "), %zu tensor%s saved in full, %zu left out; "
		    "relative error %.6g", s.decomposed, s.decomposed == 1 ?
		    "" : "s", s.rank, s.full, s.full == 1 ? "" : "s",
		    s.skipped, s.rel_error);
	}
	job_ended(j, rc, err);
}

int
job_start_extract(struct daemon *d, struct djob *j)
{
	struct graph_extract_job_opts o;
	struct graph_ident *own;
	char *cause = NULL;
	int rc;

	/* One "shard": the adapter, published whole. */
	if (j->shards_done == NULL || strlen(j->shards_done) != 1) {
		free(j->shards_done);
		j->shards_done = xstrdup("0");
	}
	if (job_was_published(j)) {
		j->shards_done[0] = '1';
		j->prog.bytes_done = j->prog.bytes_total;
		j->prog.tensors_done = j->prog.tensors_total;
		job_log(d, j, "its output was already in place: the daemon "
		    "stopped after publishing it");
		job_release_runtime(j);
		job_set_state(d, j, JOB_DONE, NULL);
		return 0;
	}
	memset(&o, 0, sizeof o);
	o.exec = d->exec;
	o.out_dirfd = j->out_fd;
	o.out_name = j->out_name;
	o.out_dir = j->out_dir;
	o.staging_name = j->staging;
	o.own = own = job_own_outputs(d, j->owner, &o.nown);
	o.weight_done = job_x_weight;
	o.progress = job_x_progress;
	o.staged = job_x_staged;
	o.done = job_x_done;
	o.arg = j;
	rc = graph_extract_start(&d->loop, j->xplan, &o, &j->xj, &cause);
	free(own);
	if (rc != 0) {
		job_release_runtime(j);
		job_set_state(d, j, JOB_FAILED, cause);
		free(cause);
		return rc;
	}
	graph_extract_job_progress(j->xj, &j->prog);
	d->nrunning++;
	job_set_state(d, j, JOB_RUNNING, NULL);
	return 0;
}
