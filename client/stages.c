/* SPDX-License-Identifier: MIT */
/*
 * stages.c: a file of several merge configs (a mergekit-multi pipeline)
 * in this process: "mergectl run FILE OUT", "mergekit-multi FILE
 * --intermediate-dir DIR --out-path OUT" and "mergectl plan FILE".
 *
 * Every stage is planned before any weight is read (graph_pipeline_plan,
 * against header-only copies of the stages not written yet, in a private
 * scratch directory that is gone before anything runs); then the stages
 * run one after the other in dependency order, each planned again against
 * what is on disk and written with its record (GRAPH_STAGE_MANIFEST), so
 * that a rerun skips the stages that are up to date.
 *
 * Where stages go: named stages to DIR/NAME (--intermediate-dir; default
 * OUT.stages beside OUT), the unnamed one to OUT.  A file whose stages
 * are all named writes them to --intermediate-dir, or to OUT when only
 * that is given.
 */
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cJSON.h>

#include "cli.h"
#include "opts.h"
#include "xmalloc.h"

static char *stages_dir(const struct cli_stage_opts *so, const char *out,
    bool final);

/* Config files are small; as graph_config_load_file. */
#define STAGES_MAX_BYTES (4u << 20)

const struct option cli_stage_longopts[] = {
	{ "intermediate-dir", required_argument, NULL, OPT_S_DIR },
	{ "out-path", required_argument, NULL, OPT_S_OUT_PATH },
	{ "lazy", no_argument, NULL, OPT_S_LAZY },
	{ "no-lazy", no_argument, NULL, OPT_S_NO_LAZY },
	{ "keep-intermediates", no_argument, NULL, OPT_S_KEEP },
	{ "no-keep-intermediates", no_argument, NULL, OPT_S_NO_KEEP },
	{ "fuse", no_argument, NULL, OPT_S_FUSE },
	{ "no-fuse", no_argument, NULL, OPT_S_NO_FUSE },
	{ NULL, 0, NULL, 0 },
};

void
cli_stage_opts_default(struct cli_stage_opts *s)
{
	memset(s, 0, sizeof *s);
	s->lazy = true;
	s->keep = true;
}

/* Applies one of a pipeline's options: 0, or -1 if opt is not one. */
int
cli_stage_opt(struct cli_stage_opts *s, int opt, const char *arg)
{
	switch (opt) {
	case OPT_S_DIR:
		s->dir = arg;
		return 0;
	case OPT_S_OUT_PATH:
		s->out_path = arg;
		return 0;
	case OPT_S_LAZY:
	case OPT_S_NO_LAZY:
		s->lazy = opt == OPT_S_LAZY;
		return 0;
	case OPT_S_KEEP:
	case OPT_S_NO_KEEP:
		s->keep = opt == OPT_S_KEEP;
		return 0;
	case OPT_S_FUSE:
	case OPT_S_NO_FUSE:
		s->fuse = opt == OPT_S_FUSE;
		return 0;
	}
	return -1;
}

/* The documents in the file at path; 0 when it cannot say (the config
 * loader then reports why). */
size_t
cli_stage_count(const char *path)
{
	char *buf;
	size_t len, n;

	if (graph_read_file(path, STAGES_MAX_BYTES, &buf, &len) != 0)
		return 0;
	n = graph_pipeline_ndocs(buf, len);
	free(buf);
	return n;
}

/* path without trailing slashes (a new string). */
static char *
stages_trim(const char *path)
{
	char *s = xstrdup(path);
	size_t len = strlen(s);

	while (len > 1 && s[len - 1] == '/')
		s[--len] = '\0';
	return s;
}

/*
 * Where a pipeline's named stages go, for submit: from the file (whether
 * it has a final stage) and the command line, as for run; absolute, for
 * the daemon.  Returns an exit code after printing why.
 */
int
cli_stage_layout(const char *text, size_t len, const char *name,
    const struct cli_stage_opts *so, const char *out, char **dir)
{
	struct graph_pipeline *p = NULL;
	struct graph_diags d;
	char *rel;
	bool final;

	*dir = NULL;
	graph_diags_init(&d);
	if (graph_pipeline_load_buffer(name, text, len, NULL, &p, &d) != 0) {
		cli_error_diags(PROTO_E_BAD_CONFIG, &d, "%zu problem%s found; "
		    "nothing was submitted", d.nerrors, d.nerrors == 1 ? "" :
		    "s");
		graph_diags_fini(&d);
		return CLI_EXIT_INVALID;
	}
	final = p->final != (size_t)-1;
	graph_pipeline_free(p);
	graph_diags_fini(&d);
	/* -o names the final output, or the stages' directory. */
	if ((rel = stages_dir(so, final ? out : so->dir != NULL ? NULL : out,
	    final)) == NULL)
		return CLI_EXIT_USAGE;
	*dir = cli_abspath(rel);
	free(rel);
	return CLI_EXIT_OK;
}

/* Loads the file with its stage references rewritten into dir. */
static int
stages_load(const char *path, const char *dir, struct graph_pipeline **p,
    struct graph_diags *d)
{
	char *buf;
	size_t len;
	int rc;

	if ((rc = graph_read_file(path, STAGES_MAX_BYTES, &buf, &len)) != 0) {
		graph_diag_add(d, GRAPH_SEV_ERROR, path, "cannot read the "
		    "config: %s", rc == -EFBIG ? "file is over 4 MiB" :
		    rc == -EINVAL ? "not a regular file" : strerror(-rc));
		return rc;
	}
	rc = graph_pipeline_load_buffer(path, buf, len, dir, p, d);
	free(buf);
	return rc;
}

/*
 * Where the named stages go, from the command line and whether the file
 * has a final (unnamed) stage; NULL after a usage error.
 */
static char *
stages_dir(const struct cli_stage_opts *so, const char *out, bool final)
{
	char *o, *d;

	if (final) {
		if (out == NULL) {
			cli_usage_error("the file's unnamed document is the "
			    "final merge: give its output (OUT, or "
			    "--out-path)");
			return NULL;
		}
		if (so->dir != NULL)
			return stages_trim(so->dir);
		o = stages_trim(out);
		d = xasprintf("%s.stages", o);
		free(o);
		return d;
	}
	if (so->dir != NULL && out != NULL && strcmp(so->dir, out) != 0) {
		cli_usage_error("every document of the file is a named stage, "
		    "written to --intermediate-dir: OUT has nothing to hold");
		return NULL;
	}
	if (so->dir == NULL && out == NULL) {
		cli_usage_error("every document of the file is a named stage: "
		    "give the directory they go to (--intermediate-dir)");
		return NULL;
	}
	return stages_trim(so->dir != NULL ? so->dir : out);
}

/* The process's file-creation mask (read by setting it back). */
static mode_t
cli_current_umask(void)
{
	mode_t m = umask(022);

	umask(m);
	return m | 022;
}

/*
 * Opens the stage directory (making it, and its parents, with create),
 * and checks that it is ours and writable by us alone
 * (graph_stage_dir_check).  The descriptor; -2 when it does not exist and
 * create is false; -1 after printing why it may not be used.
 */
int
cli_stage_dir_open(const char *dir, bool create)
{
	char *cause = NULL, *parent, *slash;
	bool made = false;
	int fd;

	if (create) {
		parent = stages_trim(dir);
		if ((slash = strrchr(parent, '/')) != NULL && slash != parent) {
			*slash = '\0';
			cli_mkdirs(parent, 0755);
		}
		free(parent);
		made = mkdir(dir, 0755) == 0;
	}
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd == -1 && errno == ENOENT && !create)
		return -2;
	if (fd == -1) {
		cli_error(PROTO_E_BAD_CONFIG, "cannot use %s as the stage "
		    "directory: %s", dir, errno == ELOOP || errno == ENOTDIR ?
		    "it is a symbolic link or not a directory" :
		    strerror(errno));
		return -1;
	}
	/* A directory just made takes the umask, which may let the group
	 * write: it loses that. */
	if (made)
		fchmod(fd, 0755 & ~cli_current_umask());
	if (graph_stage_dir_check(fd, (uint32_t)geteuid(), dir, &cause) !=
	    0) {
		cli_error(PROTO_E_BAD_CONFIG, "%s", cause);
		free(cause);
		close(fd);
		return -1;
	}
	return fd;
}

/*
 * The descriptors the planner reads existing outputs beneath: the stage
 * directory, and the final output's parent (with its name); -1 where
 * there is none yet.
 */
static int
stages_open_dirs(struct graph_pipeline_opts *po, const char *dir,
    const char *out, char **out_name)
{
	char *parent, *slash;

	po->dir_fd = dir != NULL ? cli_stage_dir_open(dir, false) : -2;
	if (po->dir_fd == -2)
		po->dir_fd = -1;	/* none yet */
	else if (po->dir_fd < 0)
		return -1;
	po->out_fd = -1;
	*out_name = NULL;
	if (out == NULL)
		return 0;
	parent = stages_trim(out);
	slash = strrchr(parent, '/');
	*out_name = xstrdup(slash != NULL ? slash + 1 : parent);
	if (slash == parent)
		parent[1] = '\0';
	else if (slash != NULL)
		*slash = '\0';
	else
		strcpy(parent, ".");
	po->out_fd = open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	po->out_name = *out_name;
	free(parent);
	return 0;
}

static void
stages_close_dirs(struct graph_pipeline_opts *po, char *out_name)
{
	if (po->dir_fd >= 0)
		close(po->dir_fd);
	if (po->out_fd >= 0)
		close(po->out_fd);
	po->dir_fd = po->out_fd = -1;
	po->out_name = NULL;
	free(out_name);
}

/* A private directory for the planned stages' headers. */
static int
stages_scratch(char **path)
{
	const char *tmp = getenv("TMPDIR");
	int fd;

	*path = xasprintf("%s/mergectl-plan.XXXXXX", tmp != NULL &&
	    *tmp == '/' ? tmp : "/tmp");
	if (mkdtemp(*path) == NULL ||
	    (fd = open(*path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) == -1) {
		cli_error(CLI_E_FAILED, "cannot make a scratch directory "
		    "%s: %s", *path, strerror(errno));
		free(*path);
		*path = NULL;
		return -1;
	}
	return fd;
}

static void
stages_scratch_remove(char *path, int fd)
{
	char *slash;

	if (path == NULL)
		return;
	close(fd);
	slash = strrchr(path, '/');
	*slash = '\0';
	if ((fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) != -1) {
		graph_remove_tree(fd, slash + 1, NULL);
		close(fd);
	}
	free(path);
}

static const char *
stage_label(const struct graph_stage *st)
{
	return st->name != NULL ? st->name : "(final)";
}

static const char *
stage_action_word(enum graph_stage_action t)
{
	switch (t) {
	case GRAPH_STAGE_RUN:
		return "run";
	case GRAPH_STAGE_FRESH:
		return "up to date";
	case GRAPH_STAGE_FAILED:
		return "has problems";
	case GRAPH_STAGE_BLOCKED:
		return "not planned";
	case GRAPH_STAGE_FUSED:
		return "fused";
	}
	return "";
}

/* The stage graph, a line per stage in the order they run. */
static void
stages_print_graph(FILE *fp, const struct graph_pipeline *p,
    const struct graph_stage_plan *sp)
{
	const struct graph_stage *st;
	struct xbuf x = { 0 };
	const char *dest;
	char *what;
	size_t k, i, j;

	fprintf(fp, "pipeline      %s: %zu stages\n", p->path, p->nstages);
	for (k = 0; k < p->nstages; k++) {
		i = p->order[k];
		st = &p->stages[i];
		for (j = 0; j < st->ndeps; j++)
			xbuf_printf(&x, "%s%s", j ? ", " : "",
			    p->stages[st->deps[j]].name);
		/* A fused stage writes nothing: where it goes instead. */
		if (sp[i].action == GRAPH_STAGE_FUSED) {
			dest = "nothing: not written";
			what = xasprintf("fused into %s",
			    stage_label(&p->stages[sp[i].into]));
		} else {
			dest = sp[i].out != NULL ? sp[i].out : "OUT";
			what = xstrdup(stage_action_word(sp[i].action));
		}
		fprintf(fp, "stage %zu/%zu   %-16s %-14s reads %-20s -> %s  "
		    "(%s, seed %" PRIu64 ")\n", k + 1, p->nstages,
		    stage_label(st), st->cfg->method, x.len ? x.data :
		    "models only", dest, what, sp[i].seed);
		if (sp[i].unfused != NULL)
			fprintf(fp, "              not fused: %s\n",
			    sp[i].unfused);
		free(what);
		xbuf_free(&x);
	}
}

/* Plans every stage; prints the problems.  Returns an exit code. */
static int
stages_check(const struct cli_merge_opts *o, const struct graph_pipeline *p,
    struct graph_pipeline_opts *po, struct graph_stage_plan **sp)
{
	struct graph_diags d;
	int rc = CLI_EXIT_OK;

	graph_diags_init(&d);
	if (graph_pipeline_plan(p, po, sp, &d) != 0) {
		cli_error_diags(PROTO_E_BAD_CONFIG, &d, "%zu problem%s found "
		    "in the stages of %s; nothing was read or written",
		    d.nerrors, d.nerrors == 1 ? "" : "s", p->path);
		rc = CLI_EXIT_INVALID;
	} else {
		graph_diags_print(&d, stderr);
	}
	graph_diags_fini(&d);
	return rc;
}

/*
 * --no-keep-intermediates: removes each stage output that every stage
 * reading it has now read (done), and that is not a result of its own
 * (read by none).
 */
static void
stages_drop(const struct graph_pipeline *p,
    const struct graph_stage_plan *sp, const bool *done, bool *dropped)
{
	size_t i, j, k;
	bool needed, read;
	char *name;
	int fd;

	for (i = 0; i < p->nstages; i++) {
		if (p->stages[i].name == NULL || dropped[i] || !done[i])
			continue;
		needed = read = false;
		for (j = 0; j < p->nstages; j++)
			for (k = 0; k < p->stages[j].ndeps; k++)
				if (p->stages[j].deps[k] == i) {
					read = true;
					needed |= !done[j];
				}
		if (!read || needed)
			continue;
		if ((fd = cli_open_parent(sp[i].out, &name, false)) < 0)
			continue;
		graph_remove_tree(fd, name, NULL);
		close(fd);
		free(name);
		dropped[i] = true;
	}
}

/* Runs stage i; prints what it did.  Returns an exit code. */
static int
stages_run_one(const struct cli_merge_opts *o, const struct graph_pipeline *p,
    const struct graph_pipeline_opts *po, const struct graph_stage_plan *sp,
    size_t i, size_t k, cJSON *js)
{
	const struct graph_stage *st = &p->stages[i];
	struct graph_plan_summary s;
	struct graph_plan *plan = NULL;
	struct graph_diags d;
	struct cli_run *r;
	char *manifest = NULL, *sz;
	double t0 = cli_now();
	int rc;
	cJSON *j;

	if (!o->quiet && !o->json)
		fprintf(stderr, "%s: stage %zu/%zu %s: merging into %s\n",
		    cli_progname, k + 1, p->nstages, stage_label(st),
		    sp[i].out);
	graph_diags_init(&d);
	if (graph_pipeline_plan_stage(p, i, po, sp, &plan, &manifest,
	    &d) != 0) {
		/* Planned before, so something changed on disk since. */
		cli_error_diags(CLI_E_FAILED, &d, "stage %s cannot run: what "
		    "it reads changed since it was planned", stage_label(st));
		graph_diags_fini(&d);
		return CLI_EXIT_FAILED;
	}
	graph_diags_fini(&d);
	r = xcalloc(1, sizeof *r);
	rc = cli_run_exec(o, r, plan, sp[i].out, manifest);
	graph_plan_summary(plan, &s);
	j = cJSON_CreateObject();
	cJSON_AddStringToObject(j, "stage", stage_label(st));
	cJSON_AddStringToObject(j, "out", sp[i].out);
	cJSON_AddBoolToObject(j, "ran", true);
	cJSON_AddBoolToObject(j, "ok", rc == CLI_EXIT_OK);
	cJSON_AddNumberToObject(j, "tensors", (double)s.tensors);
	cJSON_AddNumberToObject(j, "bytes", (double)s.bytes_written);
	cJSON_AddNumberToObject(j, "seed", (double)s.seed);
	cJSON_AddNumberToObject(j, "seconds", cli_now() - t0);
	cJSON_AddItemToArray(js, j);
	if (rc != CLI_EXIT_OK && !r->said)
		cli_error(rc == CLI_EXIT_EXISTS ? PROTO_E_EXISTS :
		    r->interrupted ? CLI_E_INTERRUPTED : CLI_E_FAILED,
		    "stage %s failed: %s; the stages after it did not run",
		    stage_label(st), r->err ? r->err : strerror(-r->rc));
	if (rc == CLI_EXIT_OK && !o->quiet && !o->json) {
		sz = graph_format_size(s.bytes_written);
		fprintf(stderr, "%s: stage %s: wrote %s (%zu tensors, %s) in "
		    "%.1fs\n", cli_progname, stage_label(st), sp[i].out,
		    s.tensors, sz, cli_now() - t0);
		free(sz);
	}
	free(r->err);
	free(r);
	free(manifest);
	graph_plan_free(plan);
	return rc;
}

/* Runs the stages that are not up to date, in order. */
static int
stages_run_all(const struct cli_merge_opts *o,
    const struct cli_stage_opts *so, const struct graph_pipeline *p,
    const struct graph_pipeline_opts *po, const struct graph_stage_plan *sp,
    cJSON *js)
{
	bool *done = xcalloc(p->nstages + 1, sizeof *done);
	bool *dropped = xcalloc(p->nstages + 1, sizeof *dropped);
	size_t k, i;
	int rc = CLI_EXIT_OK;
	cJSON *j;

	for (k = 0; k < p->nstages && rc == CLI_EXIT_OK; k++) {
		i = p->order[k];
		if (sp[i].action == GRAPH_STAGE_FUSED) {
			/* Runs inside the stage that reads it. */
			if (!o->quiet && !o->json)
				fprintf(stderr, "%s: stage %zu/%zu %s: fused "
				    "into stage %s, not written\n",
				    cli_progname, k + 1, p->nstages,
				    stage_label(&p->stages[i]),
				    stage_label(&p->stages[sp[i].into]));
			j = cJSON_CreateObject();
			cJSON_AddStringToObject(j, "stage",
			    stage_label(&p->stages[i]));
			cJSON_AddStringToObject(j, "fused_into",
			    stage_label(&p->stages[sp[i].into]));
			cJSON_AddBoolToObject(j, "ran", false);
			cJSON_AddBoolToObject(j, "ok", true);
			cJSON_AddItemToArray(js, j);
			dropped[i] = true;	/* nothing to remove */
		} else if (sp[i].action == GRAPH_STAGE_FRESH) {
			if (!o->quiet && !o->json)
				fprintf(stderr, "%s: stage %zu/%zu %s: %s is "
				    "up to date\n", cli_progname, k + 1,
				    p->nstages, stage_label(&p->stages[i]),
				    sp[i].out);
			j = cJSON_CreateObject();
			cJSON_AddStringToObject(j, "stage",
			    stage_label(&p->stages[i]));
			cJSON_AddStringToObject(j, "out", sp[i].out);
			cJSON_AddBoolToObject(j, "ran", false);
			cJSON_AddBoolToObject(j, "ok", true);
			cJSON_AddItemToArray(js, j);
		} else {
			rc = stages_run_one(o, p, po, sp, i, k, js);
		}
		done[i] = rc == CLI_EXIT_OK;
		if (!so->keep && rc == CLI_EXIT_OK)
			stages_drop(p, sp, done, dropped);
	}
	free(done);
	free(dropped);
	return rc;
}

/* The file's problems, printed; the exit code of a refused config. */
static int
stages_refused(const struct graph_diags *d)
{
	cli_error_diags(PROTO_E_BAD_CONFIG, d, "%zu problem%s found; nothing "
	    "was read or written", d->nerrors, d->nerrors == 1 ? "" : "s");
	return CLI_EXIT_INVALID;
}

int
cli_run_stages(const struct cli_merge_opts *o,
    const struct cli_stage_opts *so, const char *path, const char *out)
{
	struct graph_pipeline *p = NULL;
	struct graph_stage_plan *sp = NULL;
	struct graph_pipeline_opts po;
	struct graph_diags d;
	char *dir = NULL, *out_name = NULL, *scratch = NULL;
	double t0 = cli_now();
	size_t i;
	int rc, fd;
	cJSON *js = cJSON_CreateArray(), *j;

	memset(&po, 0, sizeof po);
	po.scratch_fd = -1;
	graph_diags_init(&d);
	/* First the names alone: whether there is a final stage decides
	 * where the others go. */
	if (stages_load(path, NULL, &p, &d) != 0) {
		rc = stages_refused(&d);
		goto out;
	}
	if ((dir = stages_dir(so, p->final != (size_t)-1 ? out : NULL,
	    p->final != (size_t)-1)) == NULL) {
		rc = CLI_EXIT_USAGE;
		goto out;
	}
	graph_pipeline_free(p);
	p = NULL;
	if (stages_load(path, dir, &p, &d) != 0) {
		rc = stages_refused(&d);
		goto out;
	}
	cli_plan_opts(o, &po.plan);
	po.out = p->final != (size_t)-1 ? out : NULL;
	po.lazy = so->lazy;
	po.fuse = so->fuse;
	po.dir_fd = po.out_fd = -1;
	/* The planned stages' headers: read until the end when stages are
	 * fused (the stages reading them are planned against them). */
	if ((po.scratch_fd = stages_scratch(&scratch)) < 0) {
		rc = CLI_EXIT_FAILED;
		goto out;
	}
	if (stages_open_dirs(&po, dir, po.out, &out_name) != 0) {
		rc = CLI_EXIT_INVALID;
		goto out;
	}
	rc = stages_check(o, p, &po, &sp);
	stages_close_dirs(&po, out_name);
	if (rc != CLI_EXIT_OK)
		goto out;
	if (o->verbose > 0)
		stages_print_graph(stderr, p, sp);
	i = p->final;
	if (i != (size_t)-1 && sp[i].action == GRAPH_STAGE_RUN &&
	    sp[i].exists && !o->merge.force) {
		cli_error(PROTO_E_EXISTS, "%s already exists; use --force to "
		    "replace it (nothing was read or written)", out);
		rc = CLI_EXIT_EXISTS;
		goto out;
	}
	/* Made now, and opened again. */
	if ((fd = cli_stage_dir_open(dir, true)) < 0) {
		rc = CLI_EXIT_INVALID;
		goto out;
	}
	close(fd);
	if (stages_open_dirs(&po, dir, po.out, &out_name) != 0) {
		rc = CLI_EXIT_INVALID;
		goto out;
	}
	rc = stages_run_all(o, so, p, &po, sp, js);
	stages_close_dirs(&po, out_name);
	if (o->json) {
		j = cJSON_CreateObject();
		cJSON_AddBoolToObject(j, "ok", rc == CLI_EXIT_OK);
		if (po.out != NULL)
			cJSON_AddStringToObject(j, "out", po.out);
		cJSON_AddStringToObject(j, "intermediate_dir", dir);
		cJSON_AddItemToObject(j, "stages", js);
		js = NULL;
		cJSON_AddNumberToObject(j, "seconds", cli_now() - t0);
		cli_print_json(j);
		cJSON_Delete(j);
	}
out:
	stages_scratch_remove(scratch, po.scratch_fd);
	cJSON_Delete(js);
	graph_diags_fini(&d);
	graph_stage_plans_free(sp, p != NULL ? p->nstages : 0);
	graph_pipeline_free(p);
	free(dir);
	return rc;
}

int
cli_plan_stages(const struct cli_merge_opts *o,
    const struct cli_stage_opts *so, const char *path)
{
	struct graph_pipeline *p = NULL;
	struct graph_stage_plan *sp = NULL;
	struct graph_pipeline_opts po;
	struct graph_diags d;
	const struct graph_stage *st;
	char *scratch = NULL, *out_name = NULL, *msg;
	size_t k, i, j;
	int rc = CLI_EXIT_OK;
	cJSON *out, *arr, *s, *deps;

	graph_diags_init(&d);
	memset(&po, 0, sizeof po);
	/* Shown where run would write them when given, else as a name. */
	if (stages_load(path, so->dir != NULL ? so->dir : "INTERMEDIATE-DIR",
	    &p, &d) != 0 || (po.scratch_fd = stages_scratch(&scratch)) < 0) {
		rc = CLI_EXIT_INVALID;
	} else {
		cli_plan_opts(o, &po.plan);
		po.out = so->out_path;
		po.lazy = so->lazy;
		po.fuse = so->fuse;
		if (stages_open_dirs(&po, so->dir, po.out, &out_name) != 0 ||
		    graph_pipeline_plan(p, &po, &sp, &d) != 0)
			rc = CLI_EXIT_INVALID;
		stages_close_dirs(&po, out_name);
		stages_scratch_remove(scratch, po.scratch_fd);
	}
	if (rc != CLI_EXIT_OK) {
		if (o->json) {
			out = graph_plan_json(NULL, &d);
			msg = xasprintf("%zu problem%s found; the pipeline "
			    "cannot run", d.nerrors, d.nerrors == 1 ? "" : "s");
			cli_error_attach(out, PROTO_E_BAD_CONFIG, msg, &d);
			free(msg);
			cli_print_json(out);
			cJSON_Delete(out);
		} else {
			graph_diags_print(&d, stderr);
			fprintf(stderr, "%s: %zu problem%s found; the pipeline "
			    "cannot run\n", cli_progname, d.nerrors,
			    d.nerrors == 1 ? "" : "s");
		}
		goto done;
	}
	out = cJSON_CreateObject();
	cJSON_AddBoolToObject(out, "ok", true);
	cJSON_AddStringToObject(out, "pipeline", p->path);
	s = graph_plan_json(NULL, &d);
	cJSON_AddItemToObject(out, "problems",
	    cJSON_DetachItemFromObject(s, "problems"));
	cJSON_Delete(s);
	arr = cJSON_AddArrayToObject(out, "stages");
	for (k = 0; k < p->nstages; k++) {
		i = p->order[k];
		st = &p->stages[i];
		s = cJSON_CreateObject();
		if (st->name != NULL)
			cJSON_AddStringToObject(s, "name", st->name);
		else
			cJSON_AddNullToObject(s, "name");
		deps = cJSON_AddArrayToObject(s, "reads");
		for (j = 0; j < st->ndeps; j++)
			cJSON_AddItemToArray(deps, cJSON_CreateString(
			    p->stages[st->deps[j]].name));
		if (sp[i].out != NULL)
			cJSON_AddStringToObject(s, "out", sp[i].out);
		cJSON_AddStringToObject(s, "action",
		    stage_action_word(sp[i].action));
		if (sp[i].action == GRAPH_STAGE_FUSED)
			cJSON_AddStringToObject(s, "fused_into",
			    stage_label(&p->stages[sp[i].into]));
		if (sp[i].unfused != NULL)
			cJSON_AddStringToObject(s, "not_fused", sp[i].unfused);
		cJSON_AddNumberToObject(s, "seed", (double)sp[i].seed);
		cJSON_AddItemToObject(s, "plan", graph_plan_json(sp[i].plan,
		    NULL));
		cJSON_AddItemToArray(arr, s);
	}
	if (o->json) {
		cli_print_json(out);
	} else {
		stages_print_graph(stdout, p, sp);
		cJSON_ArrayForEach(s, arr) {
			printf("\n== stage %s ==\n", cJSON_IsString(
			    cJSON_GetObjectItem(s, "name")) ?
			    cJSON_GetObjectItem(s, "name")->valuestring :
			    "(final)");
			cli_print_plan(cJSON_GetObjectItem(s, "plan"),
			    o->tensors);
		}
		graph_diags_print(&d, stderr);
	}
	cJSON_Delete(out);
done:
	graph_stage_plans_free(sp, p != NULL ? p->nstages : 0);
	graph_pipeline_free(p);
	graph_diags_fini(&d);
	return rc;
}
