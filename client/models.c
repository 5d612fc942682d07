/* SPDX-License-Identifier: MIT */
/*
 * models.c: what a submit or resume sends: the client's own resolution of
 * every model the job reads (those its config names; an extraction's
 * --model and --base-model), as open directory descriptors.
 *
 * The daemon reads nothing by path.  The client resolves each reference
 * (its working directory, its Hugging Face cache), opens the model's root
 * directory (and the directory of each LoRA adapter, under
 * graph_ref_adapter_key()) and the output's parent with its own rights,
 * and passes the descriptors; the daemon opens files only beneath them.  A config that
 * does not parse, or a model that cannot be found, is reported here with
 * the same messages as mergectl run.
 */
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cJSON.h>

#include "cli.h"
#include "extractopts-json.h"

void
cli_models_init(struct cli_models *m)
{
	memset(m, 0, sizeof *m);
	m->out_fd = -1;
	m->inter_fd = -1;
	m->lazy = true;
	m->keep = true;
}

void
cli_models_fini(struct cli_models *m)
{
	size_t i;

	for (i = 0; i < m->nfds; i++)
		close(m->fds[i]);
	cJSON_Delete(m->models);
	free(m->out_name);
	memset(m, 0, sizeof *m);
}

static int
cli_models_add(struct cli_models *m, int fd)
{
	if (m->nfds == PROTO_MAX_FDS) {
		close(fd);
		cli_error(PROTO_E_BAD_CONFIG, "a merge of more than %d models "
		    "and adapters cannot be submitted", PROTO_MAX_FDS - 1);
		return -1;
	}
	m->fds[m->nfds] = fd;
	return (int)m->nfds++;
}

/* Is key among the entries already sent? */
static bool
cli_models_has(const struct cli_models *m, const char *key)
{
	const cJSON *e;

	cJSON_ArrayForEach(e, m->models)
		if (strcmp(cli_json_str(e, PROTO_F_REF), key) == 0)
			return true;
	return false;
}

/* A pipeline's reference to one of its stages: found by the daemon
 * beneath the stage directory, once that stage is written. */
static bool
cli_models_is_stage(const struct cli_models *m, const struct graph_ref *r)
{
	size_t len = m->inter != NULL ? strlen(m->inter) : 0;

	return m->inter != NULL && r->rev == NULL &&
	    strncmp(r->path, m->inter, len) == 0 && r->path[len] == '/' &&
	    strchr(r->path + len + 1, '/') == NULL;
}

/*
 * Resolves each reference in env and opens it (and then its adapter, if
 * it names one).  A reference that cannot be found is a problem in d, at
 * its place in the config (name and its mark) or, where labels is given,
 * under its label ("--model").  -1 when the descriptors run out.
 */
static int
cli_models_refs(struct cli_models *m, const struct graph_ref *const *refs,
    size_t n, const char *name, const char *const *labels,
    const struct graph_env *env, struct graph_diags *d)
{
	const struct graph_ref *ref;
	struct graph_resolved r;
	char *cause = NULL, *s;
	size_t i;
	int idx;
	bool adapter;
	cJSON *e;

	for (i = 0; i < 2 * n; i++) {
		adapter = i % 2 == 1;
		ref = refs[i / 2];
		if (adapter && ref->lora == NULL)
			continue;
		if (!adapter && cli_models_is_stage(m, ref))
			continue;
		s = adapter ? graph_ref_adapter_key(ref) : graph_ref_str(ref);
		if (cli_models_has(m, s)) {
			free(s);
			continue;	/* the same model in two stages */
		}
		free(s);
		if ((adapter ? graph_ref_resolve_adapter(ref, env, &r, &cause) :
		    graph_ref_resolve(ref, env, &r, &cause)) != 0) {
			if (labels != NULL)
				graph_diag_add(d, GRAPH_SEV_ERROR,
				    labels[i / 2], "%s", cause);
			else
				graph_diag_at(d, GRAPH_SEV_ERROR, name,
				    ref->mark, "%s", cause);
			free(cause);
			cause = NULL;
			continue;
		}
		idx = cli_models_add(m, r.rootfd);
		r.rootfd = -1;
		if (idx < 0) {
			graph_resolved_fini(&r);
			return -1;
		}
		e = cJSON_CreateObject();
		s = adapter ? graph_ref_adapter_key(ref) : graph_ref_str(ref);
		cJSON_AddStringToObject(e, PROTO_F_REF, s);
		free(s);
		cJSON_AddNumberToObject(e, PROTO_F_FD, idx);
		cJSON_AddStringToObject(e, PROTO_F_REL, r.rel);
		cJSON_AddStringToObject(e, PROTO_F_PATH, r.root);
		cJSON_AddItemToArray(m->models, e);
		graph_resolved_fini(&r);
	}
	return 0;
}

/* A merge's references: the models its config names. */
static int
cli_models_merge(struct cli_models *m, const char *text, size_t len,
    const char *name, const struct graph_env *env, struct graph_diags *d)
{
	const struct graph_ref **refs = NULL;
	struct graph_config *cfg = NULL;
	size_t n;
	int rc = 0;

	if (graph_config_load_buffer(name, text, len, &cfg, d) != 0)
		return 0;	/* the problems are in d */
	n = graph_config_refs(cfg, &refs);
	rc = cli_models_refs(m, refs, n, name, NULL, env, d);
	free(refs);
	graph_config_free(cfg);
	return rc;
}

/* A pipeline's references: every stage's, but the stages' own outputs;
 * and the stage directory, made if missing. */
static int
cli_models_pipeline(struct cli_models *m, const char *text, size_t len,
    const char *name, const struct graph_env *env, struct graph_diags *d)
{
	const struct graph_ref **refs = NULL;
	struct graph_pipeline *p = NULL;
	size_t n, i;
	int rc = 0, fd;

	if (graph_pipeline_load_buffer(name, text, len, m->inter, &p, d) != 0)
		return 0;	/* the problems are in d */
	for (i = 0; i < p->nstages && rc == 0; i++) {
		n = graph_config_refs(p->stages[i].cfg, &refs);
		rc = cli_models_refs(m, refs, n, name, NULL, env, d);
		free(refs);
	}
	graph_pipeline_free(p);
	if (rc != 0 || d->nerrors > 0)
		return rc;
	/* Ours alone, or another user could swap a stage (stages.c). */
	if ((fd = cli_stage_dir_open(m->inter, true)) < 0)
		return -1;
	return (m->inter_fd = cli_models_add(m, fd)) < 0 ? -1 : 0;
}

/* An extraction's references: its --model and --base-model. */
static int
cli_models_extract(struct cli_models *m, const char *text,
    const struct graph_env *env, struct graph_diags *d)
{
	static const char *const labels[] = { "--model", "--base-model" };
	struct graph_extract_opts o;
	struct extractopts keep;
	struct graph_ref ref[2];
	const struct graph_ref *refs[2] = { &ref[0], &ref[1] };
	const char *s[2];
	char *cause = NULL;
	size_t i, n = 0;
	int rc = 0;

	memset(ref, 0, sizeof ref);
	graph_extract_opts_default(&o);
	if (extractopts_parse(text, &o, &keep, &cause) != 0) {
		graph_diag_add(d, GRAPH_SEV_ERROR, NULL, "%s", cause);
		free(cause);
		extractopts_fini(&keep);
		return 0;
	}
	s[0] = o.model;
	s[1] = o.base;
	for (i = 0; i < 2; i++, n++)
		if (graph_ref_parse(s[i], &ref[i], &cause) != 0) {
			graph_diag_add(d, GRAPH_SEV_ERROR, labels[i], "%s",
			    cause);
			free(cause);
			cause = NULL;
			break;
		}
	if (n == 2)
		rc = cli_models_refs(m, refs, 2, NULL, labels, env, d);
	for (i = 0; i < n; i++)
		graph_ref_fini(&ref[i]);
	extractopts_fini(&keep);
	return rc;
}

/*
 * Resolves and opens the models a job of kind reads, from its config
 * text (a merge's YAML, an extraction's JSON), and the parent of out.
 * Returns 0, or an exit code after printing why.
 */
int
cli_models_open(struct cli_models *m, enum job_kind kind, const char *text,
    size_t len, const char *name, const struct graph_env *env,
    const char *out)
{
	struct graph_diags d;
	int rc = CLI_EXIT_INVALID, fd;

	graph_diags_init(&d);
	m->models = cJSON_CreateArray();
	if ((kind == JOB_KIND_EXTRACT_LORA ? cli_models_extract(m, text, env,
	    &d) : kind == JOB_KIND_PIPELINE ? cli_models_pipeline(m, text, len,
	    name, env, &d) : cli_models_merge(m, text, len, name, env,
	    &d)) != 0)
		goto out;
	if (d.nerrors > 0)
		goto out;
	if ((fd = cli_open_parent(out, &m->out_name, true)) < 0) {
		rc = CLI_EXIT_FAILED;
		goto out;
	}
	if ((m->out_fd = cli_models_add(m, fd)) < 0)
		goto out;
	rc = 0;
out:
	if (rc == CLI_EXIT_INVALID && d.n > 0)
		cli_error_diags(PROTO_E_BAD_CONFIG, &d, "%zu problem%s found; "
		    "nothing was submitted", d.nerrors, d.nerrors == 1 ? "" :
		    "s");
	else
		graph_diags_print(&d, stderr);
	graph_diags_fini(&d);
	return rc;
}

/* Adds what the daemon needs to find the descriptors to a request. */
static mode_t
cli_umask(void)
{
	mode_t m = umask(022);

	umask(m);
	return m;
}

void
cli_models_request(struct cli_models *m, cJSON *req)
{
	cJSON_AddItemToObject(req, PROTO_F_MODELS, m->models);
	m->models = NULL;
	cJSON_AddNumberToObject(req, PROTO_F_OUT_FD, m->out_fd);
	cJSON_AddStringToObject(req, PROTO_F_OUT_NAME, m->out_name);
	cJSON_AddNumberToObject(req, PROTO_F_FDS, (double)m->nfds);
	if (m->inter_fd >= 0) {
		cJSON_AddNumberToObject(req, PROTO_F_INTER_FD, m->inter_fd);
		cJSON_AddStringToObject(req, PROTO_F_INTER, m->inter);
		cJSON_AddBoolToObject(req, PROTO_F_LAZY, m->lazy);
		cJSON_AddBoolToObject(req, PROTO_F_KEEP_INTER, m->keep);
	}
	/* A root daemon makes the output's files as us, with our umask. */
	cJSON_AddNumberToObject(req, PROTO_F_UMASK, (double)cli_umask());
}
