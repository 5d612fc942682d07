/* SPDX-License-Identifier: MIT */
/*
 * fuzz-model.c: fuzz target for a model directory's JSON files: the
 * config.json reader, the model.safetensors.index.json reader (both in
 * graph/model.c) and the config.json patcher that writes the output's
 * config.json from the donor's text (graph/jsonpatch.c).
 *
 * The input is config.json, optionally followed by the line "=====" and
 * model.safetensors.index.json (the separator cannot occur inside a JSON
 * text: strings hold no raw line breaks).  The target writes them into a
 * model directory that also holds a valid single-file checkpoint and two
 * valid shards, and opens it as the planner does.  On failure there must
 * be one cause, one line.  On success every tensor the model lists must be
 * findable by name and lie in its file; and the patched config.json must
 * be a JSON object again, with the patched keys holding the new values.
 * Any broken promise aborts.
 *
 * Built with -DFUZZ_LIBFUZZER it is a libFuzzer target; otherwise main()
 * replays corpus files and directories named on the command line, one TAP
 * line per file, for the meson "fuzz" suite.
 */
#include <sys/stat.h>

#include <dirent.h>
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

static void
put_file(const char *name, const void *data, size_t len)
{
	char path[512];
	int fd;

	snprintf(path, sizeof path, "%s/%s", model_dir, name);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	check(fd >= 0, "cannot create a file in the model directory");
	check(write(fd, data, len) == (ssize_t)len, "short write");
	close(fd);
}

/* A checkpoint holding the named 4x4 F32 tensors, all zero. */
static void
put_checkpoint(const char *file, const char *const *names, size_t n)
{
	struct safetensors_tensor t[4];
	uint8_t *hdr, *buf;
	size_t hlen, i, dlen = n * 64;

	check(n <= 4, "at most four tensors");
	for (i = 0; i < n; i++) {
		memset(&t[i], 0, sizeof t[i]);
		t[i].name = (char *)names[i];
		t[i].dtype = GRAPH_DT_F32;
		t[i].ndim = 2;
		t[i].shape[0] = t[i].shape[1] = 4;
		t[i].begin = i * 64;
		t[i].end = i * 64 + 64;
	}
	hdr = safetensors_header_build(t, n, &hlen);
	buf = calloc(1, hlen + dlen);
	check(buf != NULL, "memory");
	memcpy(buf, hdr, hlen);
	put_file(file, buf, hlen + dlen);
	free(buf);
	free(hdr);
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
	rmdir(model_dir);
}

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
	const uint8_t *sep;
	char *cause = NULL, path[512];
	size_t clen = size;
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
	if (sep != NULL)
		put_file("model.safetensors.index.json", sep +
		    strlen(SEPARATOR), size - clen - strlen(SEPARATOR));
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
	model_close(m);
	return 0;
}

#ifndef FUZZ_LIBFUZZER
#include "fuzz-main.h"
#endif
