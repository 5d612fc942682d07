/* SPDX-License-Identifier: MIT */
/*
 * model-dirs.c: mergectl run --model-dirs FILE, how a batch job of
 * merged --backend slurm finds exactly the models the daemon planned
 * from.  FILE is a JSON array of {"ref", "root", "rel"}: each model
 * reference of the config (a LoRA adapter's under its key), the
 * directory the submitting client resolved it to, by path, and the
 * model's directory beneath it ("." for a local directory,
 * "snapshots/HASH" for a Hugging Face cache entry).  The plan then
 * resolves references among these alone, as the daemon's did, not
 * again in the node's working directory and cache, which the job's
 * environment may point elsewhere, or where a branch may have moved
 * since the submit.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cJSON.h>

#include "cli.h"
#include "xmalloc.h"

void
cli_model_dirs_fini(struct cli_model_dirs *m)
{
	size_t i;

	for (i = 0; i < m->n; i++) {
		if (m->v[i].fd >= 0)
			close(m->v[i].fd);
		free((char *)m->v[i].ref);
		free((char *)m->v[i].rel);
		free((char *)m->v[i].where);
	}
	free(m->v);
	memset(m, 0, sizeof *m);
}

static const char *
entry_str(const cJSON *e, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(e, key);

	return cJSON_IsString(v) && v->valuestring[0] != '\0' ?
	    v->valuestring : NULL;
}

/*
 * text (from --model-dirs' file, named path) into m, each root opened.
 * Returns an exit code, having said what is wrong (3: a directory is
 * not there, as a model not found).
 */
int
cli_model_dirs_parse(const char *path, const char *text,
    struct cli_model_dirs *m)
{
	cJSON *root = cJSON_Parse(text);
	const cJSON *e;
	const char *ref, *dir, *rel;
	struct graph_source_dir *d;
	int rc = CLI_EXIT_OK;

	memset(m, 0, sizeof *m);
	if (!cJSON_IsArray(root)) {
		cli_usage_error("--model-dirs %s: not a JSON array", path);
		cJSON_Delete(root);
		return CLI_EXIT_USAGE;
	}
	m->v = xcalloc((size_t)cJSON_GetArraySize(root) + 1, sizeof *m->v);
	cJSON_ArrayForEach(e, root) {
		ref = entry_str(e, "ref");
		dir = entry_str(e, "root");
		rel = entry_str(e, "rel");
		if (ref == NULL || dir == NULL || rel == NULL) {
			cli_usage_error("--model-dirs %s: each entry needs "
			    "\"ref\", \"root\" and \"rel\"", path);
			rc = CLI_EXIT_USAGE;
			break;
		}
		d = &m->v[m->n++];
		d->ref = xstrdup(ref);
		d->rel = xstrdup(rel);
		d->where = xstrdup(dir);
		if ((d->fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) ==
		    -1) {
			/* As a model that cannot be found: the plan's. */
			cli_error(PROTO_E_BAD_CONFIG, "model %s: %s: %s; "
			    "nothing was read or written", ref, dir,
			    strerror(errno));
			rc = CLI_EXIT_INVALID;
			break;
		}
	}
	cJSON_Delete(root);
	if (rc != CLI_EXIT_OK)
		cli_model_dirs_fini(m);
	return rc;
}
