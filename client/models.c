/* SPDX-License-Identifier: MIT */
/*
 * models.c: what a submit or resume sends: the client's own resolution of
 * every model the config names, as open directory descriptors.
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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cJSON.h>

#include "cli.h"

void
cli_models_init(struct cli_models *m)
{
	memset(m, 0, sizeof *m);
	m->out_fd = -1;
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

/*
 * Loads the config text, resolves its models in env and opens them and
 * the parent of out.  Returns 0, or an exit code after printing why.
 */
int
cli_models_open(struct cli_models *m, const char *text, size_t len,
    const char *name, const struct graph_env *env, const char *out)
{
	const struct graph_ref **refs = NULL, *ref;
	struct graph_config *cfg = NULL;
	struct graph_resolved r;
	struct graph_diags d;
	cJSON *e;
	char *cause = NULL, *s;
	size_t n, i;
	int rc = CLI_EXIT_INVALID, idx, fd;
	bool adapter;

	graph_diags_init(&d);
	m->models = cJSON_CreateArray();
	if (graph_config_load_buffer(name, text, len, &cfg, &d) != 0)
		goto out;
	n = graph_config_refs(cfg, &refs);
	for (i = 0; i < 2 * n; i++) {
		/* Each model, and then its adapter if it names one. */
		adapter = i % 2 == 1;
		ref = refs[i / 2];
		if (adapter && ref->lora == NULL)
			continue;
		if ((adapter ? graph_ref_resolve_adapter(ref, env, &r, &cause) :
		    graph_ref_resolve(ref, env, &r, &cause)) != 0) {
			graph_diag_at(&d, GRAPH_SEV_ERROR, name, ref->mark,
			    "%s", cause);
			free(cause);
			cause = NULL;
			continue;
		}
		idx = cli_models_add(m, r.rootfd);
		r.rootfd = -1;
		if (idx < 0) {
			graph_resolved_fini(&r);
			goto out;
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
	free(refs);
	graph_config_free(cfg);
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
	/* A root daemon makes the output's files as us, with our umask. */
	cJSON_AddNumberToObject(req, PROTO_F_UMASK, (double)cli_umask());
}
