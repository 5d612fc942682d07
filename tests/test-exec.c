/* SPDX-License-Identifier: MIT */
/*
 * test-exec.c: a job whose work does not fit what is left of the memory
 * budget waits for it, says so in its progress (memory_wait, which the
 * daemon turns into "waiting for memory"), and runs to the same output
 * once the memory is given back.
 *
 * The budget is held by a lease (graph_exec_lease), as an extraction
 * holds it beside merges: granted at once, so the job's first unit
 * cannot fit and the job has nothing in flight.  The lease is freed
 * from the job's progress callback when the wait is said, which makes
 * the order of events a property of the executor, not of timing.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uv.h>

#include "graph-int.h"
#include "tap.h"
#include "testlib.h"

#define BUDGET (64u << 20)

static const char config[] =
    "merge_method: linear\n"
    "models:\n"
    "  - model: a\n    parameters: {weight: 0.5}\n"
    "  - model: b\n    parameters: {weight: 0.5}\n"
    "dtype: float32\n";

struct run {
	struct graph_lease *lease;
	uint64_t waited;	/* the largest memory_wait reported */
	int reports_after;	/* progress reports once no longer waiting */
	bool done;
	int rc;
	char *err;
};

static void
on_progress(struct graph_job *job, const struct graph_progress *g,
    void *arg)
{
	struct run *r = arg;

	(void)job;
	if (g->memory_wait > r->waited)
		r->waited = g->memory_wait;
	if (g->memory_wait != 0 && r->lease != NULL) {
		graph_exec_lease_free(r->lease);
		r->lease = NULL;
	}
	if (g->memory_wait == 0 && r->waited != 0)
		r->reports_after++;
}

static void
on_done(struct graph_job *job, int rc, const char *err, void *arg)
{
	struct run *r = arg;

	(void)job;
	r->done = true;
	r->rc = rc;
	r->err = err != NULL ? strdup(err) : NULL;
}

static struct graph_plan *
make_plan(const char *dir, const char *text)
{
	struct graph_plan_opts o;
	struct graph_config *cfg = NULL;
	struct graph_plan *p = NULL;
	struct graph_diags d;
	char *m;

	graph_diags_init(&d);
	graph_plan_opts_default(&o);
	o.env.cwd = dir;
	if (graph_config_load_buffer("cfg.yml", text, strlen(text), &cfg,
	    &d) == 0)
		graph_plan_build(cfg, &o, &p, &d);
	m = graph_diags_join(&d);
	if (p == NULL)
		tap_diag("plan: %s", m);
	free(m);
	graph_diags_fini(&d);
	graph_config_free(cfg);
	return p;
}

static void
test_memory_wait(const char *dir)
{
	struct graph_exec_opts eo = { BUDGET, 2, false };
	struct graph_exec_stats st;
	struct graph_job_opts jo;
	struct graph_exec *ex = NULL;
	struct graph_job *job = NULL;
	struct graph_plan *p;
	struct run r;
	char *cause = NULL, *o = NULL;
	uv_loop_t loop;
	int dirfd, rc;

	memset(&r, 0, sizeof r);
	p = make_plan(dir, config);
	ok(p != NULL, "a linear merge of two models is planned");
	if (p == NULL)
		return;
	uv_loop_init(&loop);
	graph_exec_create(&loop, &eo, &ex);
	/* All but a kilobyte of what the executor keeps of --memory (the
	 * rest is the process's own): less than any unit of the merge. */
	graph_exec_stats(ex, &st);
	rc = graph_exec_lease(ex, st.budget - 1024, NULL, NULL, &r.lease,
	    &cause);
	ok_int_eq(rc, 1, "another holder takes all but 1 KiB of the budget");
	dirfd = open(dir, O_RDONLY | O_DIRECTORY);
	memset(&jo, 0, sizeof jo);
	jo.out_dirfd = dirfd;
	jo.out_name = "out";
	jo.out_dir = "out";
	jo.done = on_done;
	jo.progress = on_progress;
	jo.arg = &r;
	rc = graph_exec_submit(ex, p, &jo, &job, &cause);
	ok_int_eq(rc, 0, "the job is submitted");
	uv_run(&loop, UV_RUN_DEFAULT);
	ok(r.waited > 1024, "it reports that it waits for memory (%llu "
	    "bytes), rather than failing", (unsigned long long)r.waited);
	ok(r.reports_after > 0, "and, once the memory is back, that it no "
	    "longer waits (%d reports)", r.reports_after);
	ok(r.done && r.rc == 0, "then it runs to its end (rc %d%s%s)", r.rc,
	    r.err ? ": " : "", r.err ? r.err : "");
	rc = tl_runf(&o, "cd %s && %s run cfg.yml ref -q 2>&1", dir,
	    tl_mergectl);
	free(o);
	ok(rc == 0 && tl_same_at(dir, "out/model.safetensors",
	    "ref/model.safetensors"), "with the output a run without the "
	    "wait writes");
	if (r.lease != NULL)
		graph_exec_lease_free(r.lease);
	graph_exec_destroy(ex);
	uv_loop_close(&loop);
	close(dirfd);
	free(r.err);
	free(cause);
	graph_plan_free(p);
}

int
main(int argc, char **argv)
{
	const char *dir;

	tl_init(argc, argv);
	tap_plan_lazy();
	dir = tl_tmpdir("exec");
	tl_gen_at(dir, "a", "--family llama --layers 2 --hidden 128 "
	    "--intermediate 256 --seed 1 --dtype f32");
	tl_gen_at(dir, "b", "--family llama --layers 2 --hidden 128 "
	    "--intermediate 256 --seed 2 --dtype f32");
	tl_write_at(dir, "cfg.yml", config);
	test_memory_wait(dir);
	return tap_done();
}
