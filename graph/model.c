/* SPDX-License-Identifier: MIT */
/*
 * model.c: open an input model directory: config.json and the tensor table
 * of its safetensors shards, headers only.
 *
 * Like mergekit, a directory is a model when it has model.safetensors or
 * model.safetensors.index.json (whose weight_map names the shards), or
 * else pytorch_model.bin or pytorch_model.bin.index.json, torch
 * checkpoints read without running them (torchbin.c): safetensors wins
 * when a directory has both, as in mergekit and transformers.  Every
 * shard is opened and its header validated here, so that a bad file is
 * found before any weight is read; the tensor table maps every name to its
 * shard.  Shard names from an index must be plain file names: an index
 * cannot make us open a file outside the model directory.  A model holds
 * at most MODEL_MAX_TENSORS tensors over all its shards (see
 * graph-int.h): an index listing more is refused before any shard is
 * opened, and shards are counted as they open.  Shards and tensors are
 * found through hash maps, so an index of a hundred thousand entries costs
 * no more than linear time.  A model is immutable after model_open()
 * and may be shared between threads.
 */
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>

#include "graph-int.h"

/* Limits on JSON files we read from model directories. */
#define MODEL_MAX_CONFIG (16u << 20)
/* The largest real index (Kimi K2's, ~139,000 entries) is ~12 MB; at the
 * per-model tensor limit with long names an index stays under 64 MiB. */
#define MODEL_MAX_INDEX (64u << 20)

/* The weight formats, in the order they are looked for. */
static const struct model_format {
	const char *single;
	const char *index;
	int (*open_fd)(int, const char *, struct safetensors_file **,
	    char **);
} model_formats[] = {
	{ "model.safetensors", "model.safetensors.index.json",
	    safetensors_open_fd },
	{ "pytorch_model.bin", "pytorch_model.bin.index.json",
	    torchbin_open_fd },
};

/* name's path beneath the model's root. */
static char *
model_path(const struct model *m, const char *name)
{
	return strcmp(m->where.rel, ".") == 0 ? xstrdup(name) :
	    xasprintf("%s/%s", m->where.rel, name);
}

bool
model_has(const struct model *m, const char *name)
{
	char *p = model_path(m, name);
	bool has = fsroot_exists(m->where.rootfd, p, m->cred);

	free(p);
	return has;
}

/*
 * The JSON object in the model's file name (at most max bytes), checked as
 * strictly as config.json, and its text if text is not NULL.
 */
int
model_read_json(const struct model *m, const char *name, size_t max,
    cJSON **out, char **text, char **cause)
{
	char *buf = NULL, *path = model_path(m, name), *why = NULL;
	const char *end = NULL;
	size_t len, i;
	int rc;

	rc = fsroot_read(m->where.rootfd, path, max, m->cred, &buf,
	    &len, &why);
	free(path);
	path = xasprintf("%s/%s", m->dir, name);
	if (rc != 0) {
		*cause = xasprintf("%s: %s", path, strchr(why, ':') ?
		    strchr(why, ':') + 2 : why);
		free(why);
		free(path);
		return rc;
	}
	/* A UTF-8 byte order mark is dropped: the output's config.json is
	 * this text patched, and Python's json module refuses a BOM. */
	if (len >= 3 && memcmp(buf, "\xef\xbb\xbf", 3) == 0) {
		memmove(buf, buf + 3, len - 2);
		len -= 3;
	}
	/* cJSON would skip a second one too (found by fuzz-model). */
	if (len >= 3 && memcmp(buf, "\xef\xbb\xbf", 3) == 0) {
		*out = NULL;
		*cause = xasprintf("%s: a second byte order mark is not valid "
		    "JSON", path);
		goto fail;
	}
	/* cJSON takes any control byte for white space, and inside strings;
	 * JSON (and Python's json module) allows neither. */
	for (i = 0; i < len; i++) {
		if ((unsigned char)buf[i] < 0x20 && buf[i] != '\t' &&
		    buf[i] != '\n' && buf[i] != '\r') {
			*out = NULL;
			*cause = xasprintf("%s: control byte 0x%02x at byte %zu "
			    "is not valid JSON", path, (unsigned char)buf[i],
			    i);
			goto fail;
		}
	}
	*out = cJSON_ParseWithLengthOpts(buf, len, &end, 0);
	if (*out == NULL || !cJSON_IsObject(*out)) {
		*cause = xasprintf("%s: not a valid JSON object (near byte "
		    "%td)", path, end ? end - buf : (ptrdiff_t)0);
		goto fail;
	}
	/* Text after the object would be copied into the output's
	 * config.json, which transformers could then not read. */
	end += strspn(end, " \t\r\n");
	if (end < buf + len) {
		*cause = xasprintf("%s: data after the JSON object (at byte "
		    "%td)", path, end - buf);
		goto fail;
	}
	free(path);
	if (text != NULL)
		*text = buf;
	else
		free(buf);
	return 0;
fail:
	cJSON_Delete(*out);
	*out = NULL;
	free(buf);
	free(path);
	return -EINVAL;
}

static int
model_add_file(struct model *m, const char *name, size_t *idx,
    char **cause)
{
	struct safetensors_file *f;
	char *path, *rel, *why = NULL;
	int fd, rc;

	/* An index names a shard once per tensor: a map, not a scan. */
	if (strmap_get(&m->file_index, name, idx))
		return 0;
	if (strchr(name, '/') != NULL || strcmp(name, "..") == 0 ||
	    strcmp(name, ".") == 0 || *name == '\0') {
		*cause = xasprintf("%s/%s: shard name '%s' is not a plain "
		    "file name", m->dir, m->format->index, name);
		return -EINVAL;
	}
	rel = model_path(m, name);
	fd = fsroot_open(m->where.rootfd, rel, O_RDONLY, m->cred, &why);
	free(rel);
	path = xasprintf("%s/%s", m->dir, name);
	if (fd < 0) {
		*cause = xasprintf("%s: %s", path, strchr(why, ':') ?
		    strchr(why, ':') + 2 : why);
		free(why);
		free(path);
		return fd;
	}
	rc = m->format->open_fd(fd, path, &f, cause);
	if (rc != 0) {
		free(path);
		return rc;
	}
	/* Every tensor of every shard counts, listed in the index or not:
	 * each was parsed and is held. */
	m->shard_tensors += f->nt;
	if (m->shard_tensors > MODEL_MAX_TENSORS) {
		*cause = xasprintf("%s: the model's shards hold %zu tensors "
		    "with this one, over the limit of %d per model", path,
		    m->shard_tensors, MODEL_MAX_TENSORS);
		free(path);
		safetensors_close(f);
		return -EINVAL;
	}
	free(path);
	m->files = xgrowarray(m->files, m->nfiles, sizeof *m->files);
	m->file_names = xgrowarray(m->file_names, m->nfiles,
	    sizeof *m->file_names);
	m->files[m->nfiles] = f;
	m->file_names[m->nfiles] = xstrdup(name);
	strmap_put(&m->file_index, m->file_names[m->nfiles], m->nfiles);
	*idx = m->nfiles++;
	return 0;
}

static void
model_add_tensor(struct model *m, size_t file, size_t t)
{
	if (m->ntensors == m->captensors) {
		m->captensors = m->captensors ? m->captensors * 2 : 256;
		m->tensors = xreallocarray(m->tensors, m->captensors,
		    sizeof *m->tensors);
	}
	m->tensors[m->ntensors].file = file;
	m->tensors[m->ntensors].t = &m->files[file]->t[t];
	m->tensors[m->ntensors].delta = NULL;
	m->tensors[m->ntensors].fused = NULL;
	/* Keyed by the header's own copy of the name, which lives as long
	 * as the model. */
	strmap_put(&m->index, m->files[file]->t[t].name, m->ntensors);
	m->ntensors++;
}

static int
model_load_single(struct model *m, char **cause)
{
	size_t f, i;
	int rc;

	if ((rc = model_add_file(m, m->format->single, &f, cause)) != 0)
		return rc;
	for (i = 0; i < m->files[f]->nt; i++)
		if (!m->files[f]->t[i].skip)
			model_add_tensor(m, f, i);
	return 0;
}

static int
model_load_index(struct model *m, const atomic_bool *cancel,
    char **cause)
{
	const char *path = m->format->index;
	const cJSON *wm, *e;
	cJSON *idx = NULL;
	size_t f, i;
	int n, rc;

	if ((rc = model_read_json(m, path, MODEL_MAX_INDEX, &idx, NULL,
	    cause)) != 0)
		return rc;
	wm = cJSON_GetObjectItemCaseSensitive(idx, "weight_map");
	if (!cJSON_IsObject(wm)) {
		*cause = xasprintf("%s: no \"weight_map\" object", path);
		rc = -EINVAL;
		goto out;
	}
	if ((n = cJSON_GetArraySize(wm)) > MODEL_MAX_TENSORS) {
		*cause = xasprintf("%s/%s: weight_map lists %d tensors, over "
		    "the limit of %d per model", m->dir, path, n,
		    MODEL_MAX_TENSORS);
		rc = -EINVAL;
		goto out;
	}
	cJSON_ArrayForEach(e, wm) {
		/* An index may name many shards: planning can be stopped
		 * between them (a daemon shutting down). */
		if (cancel != NULL && atomic_load(cancel)) {
			*cause = xstrdup("planning was cancelled");
			rc = -ECANCELED;
			goto out;
		}
		if (!cJSON_IsString(e)) {
			*cause = xasprintf("%s: weight_map entry '%s' is not a "
			    "file name", path, e->string);
			rc = -EINVAL;
			goto out;
		}
		/* JSON allows a key twice; a tensor listed twice would be
		 * planned, and written, twice. */
		if (strmap_get(&m->index, e->string, NULL)) {
			*cause = xasprintf("%s: tensor '%s' is listed twice",
			    path, e->string);
			rc = -EINVAL;
			goto out;
		}
		if ((rc = model_add_file(m, e->valuestring, &f, cause)) != 0)
			goto out;
		if (!safetensors_find(m->files[f], e->string, &i)) {
			*cause = xasprintf("%s: tensor '%s' is mapped to %s, "
			    "which does not contain it", path, e->string,
			    e->valuestring);
			rc = -EINVAL;
			goto out;
		}
		if (!m->files[f]->t[i].skip)
			model_add_tensor(m, f, i);
	}
out:
	cJSON_Delete(idx);
	return rc;
}

/* The layer count, under the keys that decoder configs use for it. */
static void
model_read_config(struct model *m)
{
	static const char *const keys[] = { "num_hidden_layers", "n_layer",
		"n_layers", "num_layers" };
	const cJSON *a, *v;
	size_t i;

	a = cJSON_GetObjectItemCaseSensitive(m->config, "architectures");
	if (cJSON_IsArray(a) && cJSON_GetArraySize(a) == 1 &&
	    cJSON_IsString(cJSON_GetArrayItem(a, 0)))
		m->arch = xstrdup(cJSON_GetArrayItem(a, 0)->valuestring);
	else if (cJSON_IsArray(a) && cJSON_GetArraySize(a) > 1)
		m->arch_problem = "config.json lists more than one "
		    "architecture";
	else
		m->arch_problem = "config.json has no 'architectures' entry";
	v = cJSON_GetObjectItemCaseSensitive(m->config, "model_type");
	if (cJSON_IsString(v))
		m->model_type = xstrdup(v->valuestring);
	m->num_layers = -1;
	for (i = 0; i < sizeof keys / sizeof *keys; i++) {
		v = cJSON_GetObjectItemCaseSensitive(m->config, keys[i]);
		if (cJSON_IsNumber(v) && v->valuedouble >= 0 &&
		    v->valuedouble < 1e6) {
			m->num_layers = (int64_t)v->valuedouble;
			m->layers_key = keys[i];
			break;
		}
	}
	v = cJSON_GetObjectItemCaseSensitive(m->config, "tie_word_embeddings");
	m->tied = cJSON_IsTrue(v);
}

/*
 * Opens the model at r (taking ownership of its contents), reading every
 * file beneath r->rootfd with cred's rights (NULL: no checks).  Another
 * thread may set *cancel (NULL: never) to make it fail early with
 * -ECANCELED.
 */
int
model_open(const struct graph_ref *ref, struct graph_resolved *r,
    const struct graph_cred *cred, const atomic_bool *cancel,
    struct model **out, char **cause)
{
	struct model *m;
	size_t i;
	int rc;

	*out = NULL;
	m = xcalloc(1, sizeof *m);
	graph_ref_copy(&m->ref, ref);
	m->name = graph_ref_str(ref);
	m->where = *r;
	memset(r, 0, sizeof *r);
	r->rootfd = -1;
	m->dir = m->where.dir;
	m->cred = cred;
	if ((rc = model_read_json(m, "config.json", MODEL_MAX_CONFIG,
	    &m->config, &m->config_text, cause)) != 0)
		goto fail;
	if (ref->override_arch != NULL) {
		cJSON *arr = cJSON_CreateArray();
		cJSON_AddItemToArray(arr, cJSON_CreateString(
		    ref->override_arch));
		cJSON_DeleteItemFromObjectCaseSensitive(m->config,
		    "architectures");
		cJSON_AddItemToObject(m->config, "architectures", arr);
	}
	model_read_config(m);
	for (i = 0; i < sizeof model_formats / sizeof *model_formats; i++) {
		m->format = &model_formats[i];
		if (model_has(m, m->format->index))
			break;
		if (model_has(m, m->format->single))
			break;
	}
	if (i == sizeof model_formats / sizeof *model_formats) {
		*cause = xasprintf("%s: no model.safetensors, "
		    "model.safetensors.index.json, pytorch_model.bin or "
		    "pytorch_model.bin.index.json", m->dir);
		rc = -ENOENT;
	} else if (model_has(m, m->format->index))
		rc = model_load_index(m, cancel, cause);
	else
		rc = model_load_single(m, cause);
	/* Nothing to plan from: every later step assumes a weight. */
	if (rc == 0 && m->ntensors == 0) {
		*cause = xasprintf("%s: the checkpoint holds no weights",
		    m->dir);
		rc = -EINVAL;
	}
	if (rc != 0)
		goto fail;
	*out = m;
	return 0;
fail:
	*cause = graph_text_printable(*cause);
	model_close(m);
	return rc;
}

/* A file of the model directory, read whole (tokenizer files). */
int
model_read(const struct model *m, const char *name, size_t max,
    char **out, size_t *len, char **cause)
{
	char *p = model_path(m, name);
	int rc;

	rc = fsroot_read(m->where.rootfd, p, max, m->cred, out, len,
	    cause);
	free(p);
	return rc;
}

/*
 * Appends m's files, with their sizes and times, to out: the weights,
 * then the side files it has that an output may copy (writer.c), whose
 * change changes the output as surely (a stage is up to date, or a job
 * resumable, only while none changed).
 */
void
model_list_files(const struct model *m, struct graph_plan_files *out)
{
	struct stat st;
	char *p;
	size_t k;
	int rc;

	out->v = xreallocarray(out->v, out->n + m->nfiles +
	    writer_nside_files + 1, sizeof *out->v);
	for (k = 0; k < m->nfiles; k++) {
		out->v[out->n].path = xstrdup(m->files[k]->path);
		out->v[out->n].size = m->files[k]->size;
		out->v[out->n].mtime_ns = m->files[k]->mtime_ns;
		out->n++;
	}
	for (k = 0; k < writer_nside_files; k++) {
		p = model_path(m, writer_side_files[k]);
		rc = fsroot_stat(m->where.rootfd, p, m->cred, &st);
		free(p);
		if (rc != 0)
			continue;
		out->v[out->n].path = xasprintf("%s/%s", m->dir,
		    writer_side_files[k]);
		out->v[out->n].size = (uint64_t)st.st_size;
		out->v[out->n].mtime_ns = (int64_t)st.st_mtim.tv_sec *
		    1000000000 + st.st_mtim.tv_nsec;
		out->n++;
	}
}

/* An input rewritten in place while it was read: 0, or which and how. */
int
model_check_unchanged(const struct model *m, char **cause)
{
	size_t k;
	int rc;

	for (k = 0; k < m->nfiles; k++)
		if ((rc = safetensors_check_unchanged(m->files[k], cause)) != 0)
			return rc;
	return 0;
}

void
model_close(struct model *m)
{
	size_t i;

	if (m == NULL)
		return;
	lora_free(m->lora);
	for (i = 0; i < m->nfiles; i++) {
		safetensors_close(m->files[i]);
		free(m->file_names[i]);
	}
	free(m->files);
	free(m->file_names);
	strmap_free(&m->file_index);
	free(m->tensors);
	strmap_free(&m->index);
	cJSON_Delete(m->config);
	free(m->config_text);
	free(m->arch);
	free(m->model_type);
	free(m->name);
	graph_ref_fini(&m->ref);
	graph_resolved_fini(&m->where);
	free(m);
}

const struct model_tensor *
model_find(const struct model *m, const char *name)
{
	size_t i;

	if (!strmap_get(&m->index, name, &i))
		return NULL;
	return &m->tensors[i];
}
