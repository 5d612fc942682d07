/* SPDX-License-Identifier: MIT */
/*
 * fuzz-model.c: fuzz target for a model directory's JSON files: the
 * config.json reader, the model.safetensors.index.json reader (both in
 * graph/model.c), the config.json patcher that writes the output's
 * config.json from the donor's text (graph/jsonpatch.c), and a LoRA
 * adapter's adapter_config.json (graph/lora.c).
 *
 * The input is config.json, optionally followed by the line "=====" and
 * model.safetensors.index.json (empty: none), optionally followed by
 * "=====" and adapter_config.json (the separator cannot occur inside a
 * JSON text: strings hold no raw line breaks).  The target writes them
 * into a model directory that also holds a valid single-file checkpoint
 * and two valid shards, and an adapter directory beside it with a valid
 * adapter_model.safetensors (rank-2 factors of the up_proj weight and a
 * replacement of model.norm.weight), and opens them as the planner does.
 * On failure there must be one cause, one line (for the adapter: at least
 * one error, each one line).  On success every tensor the model lists
 * must be findable by name and lie in its file; the patched config.json
 * must be a JSON object again, with the patched keys holding the new
 * values; and an adapter's deltas must name the model's weights with a
 * finite scale, its replacement keep the model's name.  Any broken
 * promise aborts.
 *
 * Built with -DFUZZ_LIBFUZZER it is a libFuzzer target; otherwise main()
 * replays corpus files and directories named on the command line, one TAP
 * line per file, for the meson "fuzz" suite.
 */
#include <sys/stat.h>

#include <dirent.h>
#include <math.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "graph-int.h"

#define FUZZ_NAME "fuzz-model"
#include "fuzz.h"

#define SEPARATOR "\n=====\n"



static char model_dir[256];
static char adapter_dir[300];

static void
put_file_in(const char *dir, const char *name, const void *data, size_t len)
{
	char path[512];
	int fd;

	snprintf(path, sizeof path, "%s/%s", dir, name);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	check(fd >= 0, "cannot create a file in the model directory");
	check(write(fd, data, len) == (ssize_t)len, "short write");
	close(fd);
}

static void
put_file(const char *name, const void *data, size_t len)
{
	put_file_in(model_dir, name, data, len);
}

/* A checkpoint in dir holding the named F32 tensors of the given shapes
 * (rows x cols), all zero. */
static void
put_tensors(const char *dir, const char *file, const char *const *names,
    const int64_t (*shapes)[2], size_t n)
{
	struct safetensors_tensor t[4];
	uint8_t *hdr, *buf;
	size_t hlen, i;
	uint64_t off = 0;

	check(n <= 4, "at most four tensors");
	for (i = 0; i < n; i++) {
		memset(&t[i], 0, sizeof t[i]);
		t[i].name = (char *)names[i];
		t[i].dtype = GRAPH_DT_F32;
		t[i].ndim = 2;
		t[i].shape[0] = shapes[i][0];
		t[i].shape[1] = shapes[i][1];
		t[i].begin = off;
		off += (uint64_t)(shapes[i][0] * shapes[i][1]) * 4;
		t[i].end = off;
	}
	hdr = safetensors_header_build(t, n, &hlen);
	buf = calloc(1, hlen + off);
	check(buf != NULL, "memory");
	memcpy(buf, hdr, hlen);
	put_file_in(dir, file, buf, hlen + off);
	free(buf);
	free(hdr);
}

/* A checkpoint holding the named 4x4 F32 tensors, all zero. */
static void
put_checkpoint(const char *file, const char *const *names, size_t n)
{
	static const int64_t square[4][2] = { { 4, 4 }, { 4, 4 }, { 4, 4 },
		{ 4, 4 } };

	put_tensors(model_dir, file, names, square, n);
}

static void
remove_model_dir(void)
{
	static const char *const names[] = { "config.json",
		"model.safetensors.index.json", "model.safetensors",
		"model-00001-of-00002.safetensors",
		"model-00002-of-00002.safetensors" };
	char path[512];
	size_t i;

	for (i = 0; i < sizeof names / sizeof *names; i++) {
		snprintf(path, sizeof path, "%s/%s", model_dir, names[i]);
		unlink(path);
	}
	snprintf(path, sizeof path, "%s/adapter_config.json", adapter_dir);
	unlink(path);
	snprintf(path, sizeof path, "%s/adapter_model.safetensors",
	    adapter_dir);
	unlink(path);
	rmdir(adapter_dir);
	rmdir(model_dir);
}

/* The adapter's tensors: rank-2 factors of up_proj, norm replaced. */
static const char *const lora_names[] = {
	"base_model.model.model.layers.0.mlp.up_proj.lora_A.weight",
	"base_model.model.model.layers.0.mlp.up_proj.lora_B.weight",
	"base_model.model.model.norm.weight",
};
static const int64_t lora_shapes[3][2] = { { 2, 4 }, { 4, 2 }, { 4, 4 } };

/* Once per process: the directory and its valid checkpoints. */
static void
setup(void)
{
	static const char *const all[] = { "model.embed_tokens.weight",
		"model.layers.0.mlp.up_proj.weight", "model.norm.weight",
		"lm_head.weight" };
	const char *tmp = getenv("TMPDIR");

	snprintf(model_dir, sizeof model_dir, "%s/fuzz-model-XXXXXX",
	    tmp != NULL && *tmp != '\0' ? tmp : "/tmp");
	check(mkdtemp(model_dir) != NULL, "cannot make a directory");
	atexit(remove_model_dir);
	put_checkpoint("model.safetensors", all, 4);
	put_checkpoint("model-00001-of-00002.safetensors", all, 2);
	put_checkpoint("model-00002-of-00002.safetensors", all + 2, 2);
	snprintf(adapter_dir, sizeof adapter_dir, "%s.adapter", model_dir);
	check(mkdir(adapter_dir, 0700) == 0, "cannot make a directory");
	put_tensors(adapter_dir, "adapter_model.safetensors", lora_names,
	    lora_shapes, 3);
}

static void
check_model(const struct model *m)
{
	const struct model_tensor *mt;
	size_t i;

	check(m->config != NULL && cJSON_IsObject(m->config), "a config");
	check(m->config_text != NULL, "the config's text");
	check((m->arch == NULL) != (m->arch_problem == NULL),
	    "an architecture or a reason why not");
	for (i = 0; i < m->ntensors; i++) {
		mt = model_find(m, m->tensors[i].t->name);
		check(mt != NULL && mt->t == m->tensors[i].t,
		    "every tensor found by its name");
	}
}

/* The output config.json, made from this donor as the writer does. */
static void
check_patch(const struct model *m)
{
	static const char *const keys[] = { "architectures", "model_type",
		"num_hidden_layers", "torch_dtype" };
	static const char *const vals[] = { "[\"MistralForCausalLM\"]",
		"\"mistral\"", "7", "\"bfloat16\"" };
	cJSON *o, *v;
	char *text;

	text = jsonpatch_apply(m->config_text, strlen(m->config_text), keys,
	    vals, 4);
	o = cJSON_ParseWithOpts(text, NULL, 1);
	check(o != NULL && cJSON_IsObject(o),
	    "the patched config.json is a JSON object");
	v = cJSON_GetObjectItemCaseSensitive(o, "model_type");
	check(cJSON_IsString(v) && strcmp(v->valuestring, "mistral") == 0,
	    "model_type patched");
	v = cJSON_GetObjectItemCaseSensitive(o, "num_hidden_layers");
	check(cJSON_IsNumber(v) && v->valuedouble == 7, "layers patched");
	v = cJSON_GetObjectItemCaseSensitive(o, "architectures");
	check(cJSON_IsArray(v) && cJSON_GetArraySize(v) == 1,
	    "architectures patched");
	cJSON_Delete(o);
	free(text);
}

/* The adapter, with this adapter_config.json, bound to m. */
static void
check_adapter(struct model *m, const uint8_t *text, size_t len)
{
	const struct model_tensor *mt;
	struct graph_resolved r;
	struct graph_diags d;
	struct graph_env env = { .cwd = "/" };
	struct graph_ref ref = { .path = model_dir, .lora = adapter_dir };
	char *cause = NULL;
	size_t i;

	put_file_in(adapter_dir, "adapter_config.json", text, len);
	check(graph_ref_resolve_adapter(&ref, &env, &r, &cause) == 0,
	    "the adapter directory resolves");
	graph_diags_init(&d);
	if (lora_attach(m, &r, GRAPH_DT_NONE, &d) != 0) {
		check(d.nerrors > 0, "a refused adapter has an error");
		for (i = 0; i < d.n; i++)
			check(d.v[i].msg[0] != '\0' && strchr(d.v[i].msg,
			    '\n') == NULL, "each problem one line");
		graph_diags_fini(&d);
		return;
	}
	check(d.nerrors == 0, "no error on success");
	check(m->lora != NULL && m->lora->ndeltas == 1 &&
	    m->lora->nreplaced == 1, "one delta and one replacement");
	mt = model_find(m, "model.layers.0.mlp.up_proj.weight");
	check(mt != NULL && mt->delta == &m->lora->deltas[0] &&
	    mt->delta->rank == 2 && isfinite(mt->delta->scale),
	    "the delta is up_proj's, rank 2, with a finite scale");
	mt = model_find(m, "model.norm.weight");
	check(mt != NULL && strcmp(mt->t->name, "model.norm.weight") == 0 &&
	    mt->file == m->nfiles - 1, "the replacement keeps the model's "
	    "name and reads the adapter's file");
	graph_diags_fini(&d);
}

/* memmem, which C11 and POSIX lack. */
static const uint8_t *
find_separator(const uint8_t *data, size_t size)
{
	size_t n = strlen(SEPARATOR), i;

	for (i = 0; i + n <= size; i++)
		if (memcmp(data + i, SEPARATOR, n) == 0)
			return data + i;
	return NULL;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static bool ready;
	struct graph_env env = { 0 };
	struct graph_resolved r;
	struct model *m = NULL;
	struct graph_ref ref;
	const uint8_t *sep, *sep2, *idx = NULL, *adapter = NULL;
	char *cause = NULL, path[512];
	size_t clen = size, ilen = 0, alen = 0;
	int rc;

	if (!ready) {
		setup();
		ready = true;
	}
	sep = find_separator(data, size);
	if (sep != NULL)
		clen = (size_t)(sep - data);
	put_file("config.json", data, clen);
	snprintf(path, sizeof path, "%s/model.safetensors.index.json",
	    model_dir);
	if (sep != NULL) {
		idx = sep + strlen(SEPARATOR);
		ilen = size - (size_t)(idx - data);
		sep2 = find_separator(idx, ilen);
		if (sep2 != NULL) {
			adapter = sep2 + strlen(SEPARATOR);
			alen = size - (size_t)(adapter - data);
			ilen = (size_t)(sep2 - idx);
		}
	}
	if (ilen > 0)
		put_file("model.safetensors.index.json", idx, ilen);
	else
		unlink(path);

	env.cwd = "/";
	check(graph_ref_parse(model_dir, &ref, &cause) == 0,
	    "the directory is a reference");
	memset(&r, 0, sizeof r);
	check(graph_ref_resolve(&ref, &env, &r, &cause) == 0,
	    "the directory resolves");
	rc = model_open(&ref, &r, NULL, NULL, &m, &cause);
	graph_resolved_fini(&r);
	graph_ref_fini(&ref);
	if (rc != 0) {
		check(m == NULL, "no model on failure");
		check(cause != NULL && cause[0] != '\0' &&
		    strchr(cause, '\n') == NULL, "one cause, one line");
		free(cause);
		return 0;
	}
	check(cause == NULL, "no cause on success");
	check_model(m);
	check_patch(m);
	if (adapter != NULL)
		check_adapter(m, adapter, alen);
	model_close(m);
	return 0;
}

#ifndef FUZZ_LIBFUZZER
#include "fuzz-main.h"
#endif
