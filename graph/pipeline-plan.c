/* SPDX-License-Identifier: MIT */
/*
 * pipeline-plan.c: a pipeline's stages planned, all of them, before any
 * weight is read (issue: multi-stage merges).
 *
 * A stage that reads another stage's output cannot be planned against
 * it before it is written, yet its problems must be found now, with
 * everybody else's.  What a plan reads is headers only, and the writer's
 * output is fixed by the plan: so each stage that another reads and that
 * will run gets a header-only copy of its planned output in the caller's
 * scratch directory (graph_plan_skeleton: real config.json, tokenizer and
 * index, shards of the right size with holes for data), and the stages
 * reading it are planned against that (graph_plan_opts.planned).  Those
 * plans are for finding problems and showing; a stage is planned again,
 * against what is on disk, when it runs (graph_pipeline_plan_stage).
 *
 * Lazy reruns: a stage's output holds a record (GRAPH_STAGE_MANIFEST) of
 * what made it: the stage's config text (its references rewritten), seed,
 * the options that change the files, the weight files it read (path,
 * size, mtime), a hash of each input's config.json, and the files it
 * wrote.  A stage whose inputs are all up to date
 * and whose output holds the record it would write now is fresh.  Any
 * other stage runs, and so does every stage that reads it (its inputs'
 * mtimes change).  An intermediate with a record of ours may be replaced;
 * a directory without one never is (Part A 15).
 */
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>

#include "graph-int.h"
#include "select.h"

/* The record's format; a new one reruns every stage once. */
#define STAGE_MANIFEST_VERSION 1

/*
 * A pipeline's stage directory must be uid's and writable by uid alone:
 * a stage is written there and read back by the next, and whoever else
 * may write in it could swap in another model in between (or plant a
 * record, or a staging directory).  0, or -EPERM with *cause.
 */
int
graph_stage_dir_check(int fd, uint32_t uid, const char *path, char **cause)
{
	struct stat st;

	if (fstat(fd, &st) == -1) {
		*cause = xasprintf("%s: %s", path, strerror(errno));
		return -errno;
	}
	if (!S_ISDIR(st.st_mode)) {
		*cause = xasprintf("%s is not a directory", path);
		return -ENOTDIR;
	}
	if (st.st_uid != uid || (st.st_mode & 022) != 0) {
		*cause = xasprintf("the stage directory %s %s: a pipeline's "
		    "stages must be in a directory of uid %u that only it may "
		    "write in, or another user could replace a stage between "
		    "its writing and its reading; choose one with "
		    "--intermediate-dir%s", path, st.st_uid != uid ?
		    "belongs to another user" : "is writable by its group or "
		    "by others", (unsigned)uid, st.st_uid != uid ? "" :
		    " (or chmod go-w it)");
		return -EPERM;
	}
	return 0;
}

uint64_t
graph_stage_seed(uint64_t seed, const char *name)
{
	/* FNV-1a of the name, mixed into the pipeline's seed by a
	 * SplitMix64 step (select.h's hashes): unrelated seeds for the
	 * stages, the same on every run; 48 bits, as drawn seeds are. */
	return rng_mix((seed ^ rng_fnv1a(name)) + 0x9e3779b97f4a7c15ull) &
	    0xffffffffffffull;
}

/* What a stage's output directory is now. */
enum stage_out_state {
	STAGE_OUT_ABSENT,
	STAGE_OUT_OURS,		/* holds a record: an earlier run's stage */
	STAGE_OUT_OTHER,	/* something else: never replaced */
};

/*
 * Where stage i goes: beneath the stage directory's descriptor, or the
 * final output's parent's; fd -1 when that directory is not there yet.
 */
static int
stage_place(const struct graph_pipeline *p, size_t i,
    const struct graph_pipeline_opts *o, const char **name)
{
	if (p->stages[i].name != NULL) {
		*name = p->stages[i].name;
		return o->dir_fd;
	}
	*name = o->out_name;
	return o->out_name != NULL ? o->out_fd : -1;
}

/*
 * What is at fd/name, read with the user's rights (cred), never by path:
 * a daemon holds only the descriptors its client passed.
 */
static enum stage_out_state
stage_out_state(int fd, const char *name, const struct graph_cred *cred,
    char **record)
{
	struct cred_saved saved;
	struct stat st;
	size_t len;
	char *path, *cause = NULL;
	enum stage_out_state s = STAGE_OUT_OTHER;
	int rc;

	*record = NULL;
	if (fd < 0)
		return STAGE_OUT_ABSENT;
	if (cred_enter(cred, &saved, &cause) != 0) {
		free(cause);
		return STAGE_OUT_OTHER;
	}
	if (fstatat(fd, name, &st, AT_SYMLINK_NOFOLLOW) == -1) {
		s = errno == ENOENT ? STAGE_OUT_ABSENT : STAGE_OUT_OTHER;
		goto out;
	}
	if (!S_ISDIR(st.st_mode))
		goto out;
	path = xasprintf("%s/%s", name, GRAPH_STAGE_MANIFEST);
	rc = fsroot_read(fd, path, 1u << 24, cred, record, &len, &cause);
	free(path);
	free(cause);
	if (rc == 0 && strstr(*record, "\"mergectl_stage\"") != NULL)
		s = STAGE_OUT_OURS;
out:
	cred_leave(&saved);
	if (s != STAGE_OUT_OURS) {
		free(*record);
		*record = NULL;
	}
	return s;
}

/* Appends what a file is: its path, size and mtime, exact integers. */
static void
manifest_file(struct xbuf *x, const struct graph_plan_file *f, bool first)
{
	xbuf_printf(x, "%s\n    {\"path\": ", first ? "" : ",");
	graph_json_string(x, f->path);
	xbuf_printf(x, ", \"size\": %" PRIu64 ", \"mtime_ns\": %" PRId64 "}",
	    f->size, f->mtime_ns);
}

/* Each stage fused into plan, and those fused into them. */
static void
manifest_fused(struct xbuf *x, const struct graph_plan *plan, bool *first)
{
	const struct graph_plan *f;
	size_t k;

	for (k = 0; k < plan->nfused; k++) {
		f = plan->fused[k];
		xbuf_printf(x, "%s\n    {\"seed\": %" PRIu64 ", \"config\": ",
		    *first ? "" : ",", f->seed);
		graph_json_string(x, f->config_text);
		xbuf_printf(x, "}");
		*first = false;
		manifest_fused(x, f, first);
	}
}

/* The record stage i's output holds, made from plan. */
static char *
stage_manifest(const struct graph_pipeline *p, size_t i,
    const struct graph_plan *plan, uint64_t pseed)
{
	return graph_stage_manifest(p->stages[i].name,
	    p->stages[i].cfg->text, plan, pseed);
}

char *
graph_stage_manifest(const char *name, const char *text,
    const struct graph_plan *plan, uint64_t pseed)
{
	const struct graph_merge_opts *m = &plan->opts.merge;
	struct graph_plan_files f;
	struct xbuf x = { 0 };
	bool first = true;
	size_t k;

	xbuf_printf(&x, "{\n  \"mergectl_stage\": %d,\n  \"version\": \"%s\","
	    "\n  \"stage\": ", STAGE_MANIFEST_VERSION, GRAPH_VERSION);
	if (name != NULL)
		graph_json_string(&x, name);
	else
		xbuf_add(&x, "null", 4);
	xbuf_printf(&x, ",\n  \"pipeline_seed\": %" PRIu64 ",\n  \"seed\": %"
	    PRIu64 ",\n  \"out_shard_size\": %" PRIu64 ",\n  \"copy_tokenizer\": "
	    "%s,\n  \"model_card\": %s,\n  \"lora_merge_dtype\": \"%s\",\n  "
	    "\"config\": ", pseed, plan->seed,
	    m->shard_size, m->copy_tokenizer ? "true" : "false",
	    m->model_card ? "true" : "false", m->lora_dtype == GRAPH_DT_NONE ?
	    "none" : graph_dtype_hf_name(m->lora_dtype));
	graph_json_string(&x, text);
	xbuf_printf(&x, ",\n  \"inputs\": [");
	graph_plan_files(plan, &f);
	for (k = 0; k < f.n; k++)
		manifest_file(&x, &f.v[k], k == 0);
	graph_plan_files_fini(&f);
	/* An input's config.json changes what is written (layer counts,
	 * dtype, the architecture) without touching its weights: its
	 * content, hashed, is an input too. */
	xbuf_printf(&x, "\n  ],\n  \"configs\": [");
	for (k = 0; k < plan->nmodels; k++) {
		xbuf_printf(&x, "%s\n    {\"model\": ", k ? "," : "");
		graph_json_string(&x, plan->models[k].name);
		xbuf_printf(&x, ", \"config_fnv1a\": \"%016" PRIx64 "\"}",
		    rng_fnv1a(plan->models[k].m->config_text));
	}
	/* What the stages fused into it ran: their configs and seeds (their
	 * input files are among the inputs above). */
	if (plan->nfused > 0) {
		xbuf_printf(&x, "\n  ],\n  \"fused\": [");
		manifest_fused(&x, plan, &first);
	}
	xbuf_printf(&x, "\n  ],\n  \"outputs\": [");
	for (k = 0; k < plan->nshards; k++) {
		xbuf_printf(&x, "%s\n    {\"path\": ", k ? "," : "");
		graph_json_string(&x, plan->shards[k].name);
		xbuf_printf(&x, ", \"size\": %" PRIu64 "}", plan->shards[k].size);
	}
	xbuf_printf(&x, "\n  ]\n}\n");
	return xbuf_take(&x);
}

/* The record matches, and the files it says the stage wrote are there. */
static bool
stage_fresh(int fd, const char *name, const struct graph_cred *cred,
    const char *record, const char *want, const struct graph_plan *plan)
{
	struct cred_saved saved;
	struct stat st;
	size_t k;
	char *path, *cause = NULL;
	bool ok = true;

	if (strcmp(record, want) != 0)
		return false;
	if (cred_enter(cred, &saved, &cause) != 0) {
		free(cause);
		return false;
	}
	for (k = 0; k < plan->nshards && ok; k++) {
		path = xasprintf("%s/%s", name, plan->shards[k].name);
		ok = fstatat(fd, path, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
		    S_ISREG(st.st_mode) &&
		    (uint64_t)st.st_size == plan->shards[k].size;
		free(path);
	}
	cred_leave(&saved);
	return ok;
}

/*
 * The pipeline's seed when none is given: the one an earlier run
 * recorded in a stage it wrote, so that a rerun finds its stages up to
 * date; else a new one.
 */
static uint64_t
pipeline_seed(size_t n, char *const *records)
{
	const cJSON *v;
	uint64_t seed = 0;
	bool found = false;
	cJSON *j;
	size_t i;

	for (i = 0; i < n && !found; i++) {
		if (records[i] == NULL)
			continue;
		j = cJSON_Parse(records[i]);
		v = cJSON_GetObjectItemCaseSensitive(j, "pipeline_seed");
		if (cJSON_IsNumber(v) && v->valuedouble >= 0 &&
		    v->valuedouble <= 9007199254740992.0) {
			seed = (uint64_t)v->valuedouble;
			found = true;
		}
		cJSON_Delete(j);
	}
	return found ? seed : graph_draw_seed();
}

static char *
stage_out(const struct graph_pipeline *p, size_t i,
    const struct graph_pipeline_opts *o)
{
	const struct graph_stage *st = &p->stages[i];

	if (st->name == NULL)
		return o->out != NULL ? xstrdup(o->out) : NULL;
	return xasprintf("%s/%s", p->dir, st->name);
}

/*
 * Refuses a stage output that is somebody else's directory; otherwise
 * says whether it exists (ours: may be replaced).
 */
static bool
stage_check_out(const struct graph_pipeline *p, size_t i,
    const struct graph_pipeline_opts *o, const char *out,
    enum stage_out_state *state, char **record, struct graph_diags *d)
{
	const struct graph_stage *st = &p->stages[i];
	const char *name;
	int fd = stage_place(p, i, o, &name);

	*state = stage_out_state(fd, name, o->plan.cred, record);
	if (st->name == NULL || *state != STAGE_OUT_OTHER)
		return true;
	graph_diag_at(d, GRAPH_SEV_ERROR, p->path, st->mark, "stage '%s': "
	    "%s exists and is not a stage that mergectl wrote (it holds no "
	    "%s); it is never replaced: remove it or choose another "
	    "--intermediate-dir", st->name, out, GRAPH_STAGE_MANIFEST);
	return false;
}

/*
 * The headers of stage name's planned output in the scratch directory,
 * written with the user's rights: what the copy reads from the user's
 * models (tokenizer and processor files), the user may read.
 */
static int
stage_skeleton(const struct graph_pipeline_opts *o,
    const struct graph_plan *plan, const char *name, char **cause)
{
	struct cred_saved saved;
	int rc;

	if ((rc = cred_enter(o->plan.cred, &saved, cause)) != 0)
		return rc;
	rc = graph_plan_skeleton(plan, o->scratch_fd, name, cause);
	cred_leave(&saved);
	return rc;
}

static void
stage_plan_opts(const struct graph_pipeline_opts *o,
    const struct graph_stage_plan *sp, bool replace,
    struct graph_plan_opts *po)
{
	*po = o->plan;
	po->merge.seed = sp->seed;
	po->merge.has_seed = true;
	po->merge.force = o->plan.merge.force || replace;
	po->planned = NULL;
	po->nplanned = 0;
}

/* What planning the stages shares: each one's plan, output and record. */
struct pipeline_run {
	const struct graph_pipeline *p;
	const struct graph_pipeline_opts *o;
	struct graph_stage_plan *sp;
	enum stage_out_state *state;	/* of each stage's output */
	char **record;			/* its record, when ours */
	bool *read;			/* read by another stage */
	struct graph_diags *d;
};

/*
 * The stages stage i reads, into planned: beneath the stage directory,
 * each one's output if it is up to date, else its header-only copy.
 * Returns how many; *fresh_in: all up to date; *bad: a stage with
 * problems among them (index), else (size_t)-1.
 */
static size_t
pipeline_inputs(const struct pipeline_run *r, size_t i,
    struct graph_source_dir *planned, bool *fresh_in, size_t *bad)
{
	const struct graph_stage *st = &r->p->stages[i];
	const struct graph_stage_plan *dep;
	size_t j, np = 0;

	*fresh_in = true;
	*bad = (size_t)-1;
	for (j = 0; j < st->ndeps; j++) {
		dep = &r->sp[st->deps[j]];
		if (dep->action == GRAPH_STAGE_FAILED ||
		    dep->action == GRAPH_STAGE_BLOCKED) {
			*bad = st->deps[j];
			return 0;
		}
		*fresh_in &= dep->action == GRAPH_STAGE_FRESH;
		planned[np].ref = dep->out;
		planned[np].fd = dep->action == GRAPH_STAGE_FRESH ?
		    r->o->dir_fd : r->o->scratch_fd;
		planned[np].rel = r->p->stages[st->deps[j]].name;
		planned[np++].where = r->p->dir;
	}
	return np;
}

/* Stage i reads stage bad, which has problems: only what needs no model
 * is checked. */
static void
pipeline_blocked(const struct pipeline_run *r, size_t i, size_t bad)
{
	const struct graph_stage *st = &r->p->stages[i];
	struct graph_stage_plan *sp = &r->sp[i];
	struct graph_plan_opts po;

	sp->action = GRAPH_STAGE_BLOCKED;
	stage_plan_opts(r->o, sp, false, &po);
	po.config_only = true;
	if (graph_plan_build(st->cfg, &po, &sp->plan, r->d) == 0) {
		graph_plan_free(sp->plan);
		sp->plan = NULL;
	}
	graph_diag_at(r->d, GRAPH_SEV_WARNING, r->p->path, st->mark, "stage "
	    "'%s' is planned only in part: it reads stage '%s', which has "
	    "problems", st->name ? st->name : "(final)",
	    r->p->stages[bad].name);
}

/* Plans stage i, decides whether it runs, and lays out its headers for
 * the stages that read it. */
static void
pipeline_stage(const struct pipeline_run *r, size_t i,
    struct graph_source_dir *planned)
{
	const struct graph_stage *st = &r->p->stages[i];
	struct graph_stage_plan *sp = &r->sp[i];
	struct graph_plan_opts po;
	const char *name;
	char *want, *cause = NULL;
	size_t bad, np;
	bool fresh_in;
	int fd;

	np = pipeline_inputs(r, i, planned, &fresh_in, &bad);
	if (bad != (size_t)-1) {
		pipeline_blocked(r, i, bad);
		return;
	}
	stage_plan_opts(r->o, sp, st->name != NULL &&
	    r->state[i] == STAGE_OUT_OURS, &po);
	po.planned = planned;
	po.nplanned = np;
	if (graph_plan_build(st->cfg, &po, &sp->plan, r->d) != 0) {
		sp->action = GRAPH_STAGE_FAILED;
		sp->plan = NULL;
		return;
	}
	if (sp->action == GRAPH_STAGE_FAILED)
		return;
	if (r->o->lazy && fresh_in && r->record[i] != NULL) {
		want = stage_manifest(r->p, i, sp->plan, sp->pseed);
		fd = stage_place(r->p, i, r->o, &name);
		if (stage_fresh(fd, name, r->o->plan.cred, r->record[i], want,
		    sp->plan))
			sp->action = GRAPH_STAGE_FRESH;
		free(want);
	}
	if (sp->action == GRAPH_STAGE_RUN && r->read[i] &&
	    stage_skeleton(r->o, sp->plan, st->name, &cause) != 0) {
		graph_diag_add(r->d, GRAPH_SEV_ERROR, sp->out, "cannot lay "
		    "out the planned output's headers for the stages that "
		    "read it: %s", cause);
		free(cause);
	}
}

/*
 * --fuse: a stage that will run and that exactly one stage reads is fused
 * into it when every tensor its reader reads is computed element by
 * element (fuse_why_not); else the plan says why not.  Chains fuse too:
 * a fused stage may itself read fused ones.
 */
static void
pipeline_fuse(const struct pipeline_run *r)
{
	const struct graph_pipeline *p = r->p;
	struct graph_stage_plan *sp = r->sp;
	size_t i, j, k, c = 0, readers, n;
	const char **refs;

	for (i = 0; i < p->nstages; i++) {
		if (sp[i].action != GRAPH_STAGE_RUN || !r->read[i])
			continue;
		readers = 0;
		for (j = 0; j < p->nstages; j++)
			for (k = 0; k < p->stages[j].ndeps; k++)
				if (p->stages[j].deps[k] == i) {
					readers++;
					c = j;
				}
		if (readers != 1) {
			sp[i].unfused = xasprintf("it is read by %zu stages",
			    readers);
			continue;
		}
		if (sp[c].plan == NULL || sp[i].plan == NULL)
			continue;
		sp[i].unfused = fuse_why_not(sp[c].plan, sp[i].out,
		    sp[i].plan);
		if (sp[i].unfused == NULL) {
			sp[i].action = GRAPH_STAGE_FUSED;
			sp[i].into = c;
		}
	}
	/* A reader computes what it copied of a fused stage: its least
	 * memory is asked again, now, rather than when it runs. */
	refs = xcalloc(p->nstages, sizeof *refs);
	for (c = 0; c < p->nstages; c++) {
		for (i = 0, n = 0; i < p->nstages; i++)
			if (sp[i].action == GRAPH_STAGE_FUSED &&
			    sp[i].into == c)
				refs[n++] = sp[i].out;
		if (n > 0 && sp[c].plan != NULL)
			plan_layout_memory(sp[c].plan, refs, n, p->path,
			    r->d);
	}
	free(refs);
}

int
graph_pipeline_plan(const struct graph_pipeline *p,
    const struct graph_pipeline_opts *o, struct graph_stage_plan **out,
    struct graph_diags *d)
{
	size_t n = p->nstages, k, i, j, before = d->nerrors;
	struct graph_source_dir *planned = xcalloc(n + 1, sizeof *planned);
	struct pipeline_run r = { p, o, NULL, NULL, NULL, NULL, d };
	uint64_t seed;

	*out = NULL;
	r.sp = xcalloc(n + 1, sizeof *r.sp);
	r.state = xcalloc(n + 1, sizeof *r.state);
	r.record = xcalloc(n + 1, sizeof *r.record);
	r.read = xcalloc(n + 1, sizeof *r.read);
	if (n > 1 && p->dir == NULL) {
		graph_diag_add(d, GRAPH_SEV_ERROR, p->path, "no directory for "
		    "the stages' outputs (--intermediate-dir)");
		goto out;
	}
	/* Each output is read once: what is there, and its record. */
	for (i = 0; i < n; i++) {
		r.sp[i].out = stage_out(p, i, o);
		if (!stage_check_out(p, i, o, r.sp[i].out, &r.state[i],
		    &r.record[i], d))
			r.sp[i].action = GRAPH_STAGE_FAILED;
		r.sp[i].exists = r.state[i] != STAGE_OUT_ABSENT;
		for (j = 0; j < p->stages[i].ndeps; j++)
			r.read[p->stages[i].deps[j]] = true;
	}
	seed = o->plan.merge.has_seed ? o->plan.merge.seed :
	    pipeline_seed(n, r.record);
	for (k = 0; k < n; k++) {
		i = p->order[k];
		r.sp[i].pseed = seed;
		/* A lone config keeps its seed: it is not a pipeline. */
		r.sp[i].seed = n == 1 ? seed : graph_stage_seed(seed,
		    p->stages[i].name != NULL ? p->stages[i].name : "");
		pipeline_stage(&r, i, planned);
	}
	if (o->fuse && d->nerrors == before)
		pipeline_fuse(&r);
	/* The final stage's card tells the whole pipeline, fused stages
	 * too: a caller that runs this plan as it is (the daemon's, when
	 * every stage it reads was up to date) writes what a plan of
	 * graph_pipeline_plan_stage does. */
	for (i = 0; i < n; i++) {
		if (r.sp[i].plan == NULL || p->stages[i].name != NULL)
			continue;
		free(r.sp[i].plan->card_pipeline);
		r.sp[i].plan->card_pipeline = graph_pipeline_card(p, i, r.sp);
	}
out:
	for (i = 0; i < n; i++)
		free(r.record[i]);
	free(r.record);
	free(r.state);
	free(r.read);
	free(planned);
	if (d->nerrors != before) {
		graph_stage_plans_free(r.sp, n);
		return -EINVAL;
	}
	*out = r.sp;
	return 0;
}

/*
 * The final card's account of the whole pipeline: each stage with its
 * method, output and seed, and every stage's config as it ran.
 */
static char *
pipeline_card(const struct graph_pipeline *p,
    const struct graph_stage_plan *sp, uint64_t pseed)
{
	const struct graph_stage *st;
	struct xbuf x = { 0 };
	size_t k;

	xbuf_printf(&x, "### Pipeline\n\nThis model is the last stage of a "
	    "multi-stage merge of %zu stages, run in this order (pipeline "
	    "seed %" PRIu64 "):\n\n", p->nstages, pseed);
	for (k = 0; k < p->nstages; k++) {
		st = &p->stages[p->order[k]];
		if (sp[p->order[k]].action == GRAPH_STAGE_FUSED)
			xbuf_printf(&x, "%zu. `%s`: %s, fused into the stage "
			    "reading it (not written), seed %" PRIu64 "\n",
			    k + 1, st->name, st->cfg->method,
			    graph_stage_seed(pseed, st->name));
		else if (st->name != NULL)
			xbuf_printf(&x, "%zu. `%s`: %s, written to %s/%s, "
			    "seed %" PRIu64 "\n", k + 1, st->name,
			    st->cfg->method, p->dir, st->name,
			    graph_stage_seed(pseed, st->name));
		else
			xbuf_printf(&x, "%zu. this model: %s, seed %" PRIu64
			    "\n", k + 1, st->cfg->method,
			    graph_stage_seed(pseed, ""));
	}
	xbuf_printf(&x, "\nThe stages' configurations:\n\n```yaml\n");
	for (k = 0; k < p->nstages; k++) {
		st = &p->stages[p->order[k]];
		xbuf_printf(&x, "%s%s%s", k ? "---\n" : "", st->cfg->text,
		    st->cfg->text_len > 0 &&
		    st->cfg->text[st->cfg->text_len - 1] != '\n' ? "\n" : "");
	}
	xbuf_printf(&x, "```\n");
	return xbuf_take(&x);
}

/*
 * The stages fused into stage i's plan, each planned as it would run
 * (reading its own inputs, fused or written) and linked to the headers
 * stage i was planned against.
 */
static int
pipeline_link_fused(const struct graph_pipeline *p, size_t i,
    const struct graph_pipeline_opts *o, const struct graph_stage_plan *sp,
    struct graph_plan *plan, char *const *outs, struct graph_diags *d)
{
	const struct graph_stage *st = &p->stages[i];
	struct graph_plan *producer;
	char *cause = NULL;
	size_t k, dep;
	int rc;

	for (k = 0; k < st->ndeps; k++) {
		dep = st->deps[k];
		if (sp[dep].action != GRAPH_STAGE_FUSED)
			continue;
		if ((rc = graph_pipeline_plan_stage(p, dep, o, sp, &producer,
		    NULL, d)) != 0)
			return rc;
		if ((rc = fuse_link(plan, outs[k], producer, &cause)) != 0) {
			graph_diag_add(d, GRAPH_SEV_ERROR, p->path, "stage "
			    "'%s': %s", p->stages[dep].name, cause);
			free(cause);
			graph_plan_free(producer);
			return rc;
		}
	}
	/* What the reader copied, it now computes: it may need more. */
	return plan->nfused > 0 ? plan_layout_memory(plan, NULL, 0, p->path,
	    d) : 0;
}

int
graph_pipeline_plan_stage(const struct graph_pipeline *p, size_t i,
    const struct graph_pipeline_opts *o, const struct graph_stage_plan *sp,
    struct graph_plan **out, char **manifest, struct graph_diags *d)
{
	struct graph_plan_opts po;
	struct graph_source_dir *planned;
	const struct graph_stage *st;
	enum stage_out_state state;
	char *record, *card, **outs;
	size_t k, dep;
	int rc;

	*out = NULL;
	if (manifest != NULL)
		*manifest = NULL;
	if (!stage_check_out(p, i, o, sp[i].out, &state, &record, d))
		return -EINVAL;
	free(record);
	stage_plan_opts(o, &sp[i], p->stages[i].name != NULL &&
	    state == STAGE_OUT_OURS, &po);
	card = graph_pipeline_card(p, i, sp);
	po.card_pipeline = card;
	/* The stages it reads, beneath the stage directory, as when it was
	 * found up to date: the same paths in its record; a fused one's
	 * headers, in the scratch directory. */
	st = &p->stages[i];
	planned = xcalloc(st->ndeps + 1, sizeof *planned);
	outs = xcalloc(st->ndeps + 1, sizeof *outs);
	for (k = 0; k < st->ndeps && o->dir_fd >= 0; k++) {
		dep = st->deps[k];
		outs[k] = stage_out(p, dep, o);
		planned[k].ref = outs[k];
		planned[k].fd = sp[dep].action == GRAPH_STAGE_FUSED ?
		    o->scratch_fd : o->dir_fd;
		planned[k].rel = p->stages[dep].name;
		planned[k].where = p->dir;
		po.nplanned++;
	}
	po.planned = planned;
	rc = graph_plan_build(st->cfg, &po, out, d);
	if (rc == 0 && (rc = pipeline_link_fused(p, i, o, sp, *out, outs,
	    d)) != 0) {
		graph_plan_free(*out);
		*out = NULL;
	}
	for (k = 0; k < st->ndeps; k++)
		free(outs[k]);
	free(outs);
	free(planned);
	free(card);
	if (rc != 0)
		return -EINVAL;
	if (manifest != NULL)
		*manifest = stage_manifest(p, i, *out, sp[i].pseed);
	return 0;
}

char *
graph_pipeline_card(const struct graph_pipeline *p, size_t i,
    const struct graph_stage_plan *sp)
{
	return p->nstages > 1 && p->stages[i].name == NULL ?
	    pipeline_card(p, sp, sp[i].pseed) : NULL;
}

void
graph_stage_plans_free(struct graph_stage_plan *sp, size_t n)
{
	size_t i;

	if (sp == NULL)
		return;
	for (i = 0; i < n; i++) {
		free(sp[i].out);
		free(sp[i].unfused);
		graph_plan_free(sp[i].plan);
	}
	free(sp);
}
