/* SPDX-License-Identifier: MIT */
/*
 * fuzz-config.c: fuzz target for the YAML merge config, through loading,
 * validation and planning (graph/yaml.c, config.c, params.c, plan*.c,
 * arch.c and every method's plan hook).
 *
 * The input is a config file.  The target plans it, as `mergectl plan`
 * does, against small real models it writes once per process into a
 * temporary directory laid out like the examples' (./demo/llama-base,
 * ./demo/llama-tuned, ./demo/llama-tuned2), plus a deeper model, another
 * architecture, a tied model, a wider vocabulary and a Hugging Face cache
 * entry (org/cached), so that the files of examples/ seed the corpus
 * unchanged.
 * No tensor data is read: planning uses headers only.
 *
 * A file of several documents is a pipeline (graph/pipeline*.c): loaded
 * and planned whole, as `mergectl plan` does.
 *
 * Promises checked: loading fails exactly when it reports an error, and
 * every problem is a non-empty line; planning likewise; a plan's summary
 * is consistent; the plan's JSON (what `mergectl plan --json` prints)
 * exists whether or not planning failed and prints as valid JSON.  Any
 * broken promise aborts.
 *
 * Built with -DFUZZ_LIBFUZZER it is a libFuzzer target; otherwise main()
 * replays corpus files and directories named on the command line, one TAP
 * line per file, for the meson "fuzz" suite.
 */
#include <sys/stat.h>

#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "graph-int.h"

#define FUZZ_NAME "fuzz-config"
#include "fuzz.h"



#define HASH "0123456789abcdef0123456789abcdef01234567"
#define MAX_TENSORS 32

static char root[256];

/* One model this target writes. */
struct spec {
	const char *dir;	/* beneath root */
	const char *arch;
	const char *type;
	int layers;
	int vocab;
	bool tied;		/* no lm_head, tie_word_embeddings */
	enum graph_dtype dt;
};

static const struct spec specs[] = {
	{ "demo/llama-base", "LlamaForCausalLM", "llama", 4, 16, false,
	    GRAPH_DT_BF16 },
	{ "demo/llama-tuned", "LlamaForCausalLM", "llama", 4, 16, false,
	    GRAPH_DT_BF16 },
	{ "demo/llama-tuned2", "LlamaForCausalLM", "llama", 4, 16, false,
	    GRAPH_DT_BF16 },
	{ "demo/llama-deep", "LlamaForCausalLM", "llama", 6, 16, false,
	    GRAPH_DT_F32 },
	{ "demo/mistral", "MistralForCausalLM", "mistral", 4, 16, false,
	    GRAPH_DT_F16 },
	{ "demo/tied", "LlamaForCausalLM", "llama", 4, 16, true,
	    GRAPH_DT_BF16 },
	{ "demo/wide-vocab", "LlamaForCausalLM", "llama", 4, 20, false,
	    GRAPH_DT_BF16 },
	{ "hub/models--org--cached/snapshots/" HASH, "LlamaForCausalLM",
	    "llama", 4, 16, false, GRAPH_DT_BF16 },
};

static void
mkdirs(const char *rel)
{
	char path[1024], *p;

	snprintf(path, sizeof path, "%s/%s", root, rel);
	for (p = path + strlen(root) + 1; (p = strchr(p, '/')) != NULL; p++) {
		*p = '\0';
		mkdir(path, 0700);
		*p = '/';
	}
	mkdir(path, 0700);
}

static void
put_file(const char *rel, const void *data, size_t len)
{
	char path[1024];
	int fd;

	snprintf(path, sizeof path, "%s/%s", root, rel);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	check(fd >= 0, "cannot create a model file");
	check(write(fd, data, len) == (ssize_t)len, "short write");
	close(fd);
}

static void
add(struct safetensors_tensor *t, size_t *n, uint64_t *off, enum graph_dtype dt,
    const char *name, int64_t rows, int64_t cols)
{
	struct safetensors_tensor *e = &t[*n];

	check(*n < MAX_TENSORS, "too many tensors");
	memset(e, 0, sizeof *e);
	e->name = xstrdup(name);
	e->dtype = dt;
	e->ndim = cols > 0 ? 2 : 1;
	e->shape[0] = rows;
	e->shape[1] = cols;
	e->numel = (uint64_t)rows * (uint64_t)(cols > 0 ? cols : 1);
	e->begin = *off;
	e->end = *off + e->numel * graph_dtype_size(dt);
	*off = e->end;
	(*n)++;
}

/* A small decoder: embeddings, per layer q_proj, up_proj and a norm. */
static void
put_model(const struct spec *s)
{
	struct safetensors_tensor t[MAX_TENSORS];
	char rel[512], name[128], *cfg;
	uint8_t *hdr, *buf;
	size_t n = 0, hlen, i;
	uint64_t off = 0;
	int l;

	mkdirs(s->dir);
	add(t, &n, &off, s->dt, "model.embed_tokens.weight", s->vocab, 4);
	for (l = 0; l < s->layers; l++) {
		snprintf(name, sizeof name,
		    "model.layers.%d.self_attn.q_proj.weight", l);
		add(t, &n, &off, s->dt, name, 4, 4);
		snprintf(name, sizeof name, "model.layers.%d.mlp.up_proj.weight",
		    l);
		add(t, &n, &off, s->dt, name, 8, 4);
		snprintf(name, sizeof name,
		    "model.layers.%d.input_layernorm.weight", l);
		add(t, &n, &off, s->dt, name, 4, 0);
	}
	add(t, &n, &off, s->dt, "model.norm.weight", 4, 0);
	if (!s->tied)
		add(t, &n, &off, s->dt, "lm_head.weight", s->vocab, 4);
	hdr = safetensors_header_build(t, n, &hlen);
	buf = calloc(1, hlen + off);
	check(buf != NULL, "memory");
	memcpy(buf, hdr, hlen);
	snprintf(rel, sizeof rel, "%s/model.safetensors", s->dir);
	put_file(rel, buf, hlen + off);
	free(buf);
	free(hdr);
	for (i = 0; i < n; i++)
		free(t[i].name);
	cfg = xasprintf("{\"architectures\": [\"%s\"], \"model_type\": "
	    "\"%s\", \"num_hidden_layers\": %d, \"hidden_size\": 4, "
	    "\"vocab_size\": %d, \"tie_word_embeddings\": %s, "
	    "\"torch_dtype\": \"%s\"}\n", s->arch, s->type, s->layers,
	    s->vocab, s->tied ? "true" : "false", graph_dtype_hf_name(s->dt));
	snprintf(rel, sizeof rel, "%s/config.json", s->dir);
	put_file(rel, cfg, strlen(cfg));
	free(cfg);
}

static int
remove_entry(const char *dir, const char *name)
{
	char path[1024];
	struct stat sb;
	struct dirent *de;
	DIR *d;

	snprintf(path, sizeof path, "%s/%s", dir, name);
	if (lstat(path, &sb) != 0)
		return -1;
	if (!S_ISDIR(sb.st_mode))
		return unlink(path);
	if ((d = opendir(path)) != NULL) {
		while ((de = readdir(d)) != NULL)
			if (strcmp(de->d_name, ".") != 0 &&
			    strcmp(de->d_name, "..") != 0)
				remove_entry(path, de->d_name);
		closedir(d);
	}
	return rmdir(path);
}

static void
remove_root(void)
{
	char *slash = strrchr(root, '/');

	*slash = '\0';
	remove_entry(root, slash + 1);
}

/* Once per process: the models, and the cache's refs/main. */
static void
setup(void)
{
	const char *tmp = getenv("TMPDIR");
	size_t i;

	snprintf(root, sizeof root, "%s/fuzz-config-XXXXXX",
	    tmp != NULL && *tmp != '\0' ? tmp : "/tmp");
	check(mkdtemp(root) != NULL, "cannot make a directory");
	atexit(remove_root);
	for (i = 0; i < sizeof specs / sizeof *specs; i++)
		put_model(&specs[i]);
	mkdirs("hub/models--org--cached/refs");
	put_file("hub/models--org--cached/refs/main", HASH, strlen(HASH));
}

static void
check_diags(const struct graph_diags *d)
{
	size_t i, errors = 0;

	for (i = 0; i < d->n; i++) {
		check(d->v[i].msg != NULL && d->v[i].msg[0] != '\0',
		    "every problem has a message");
		errors += d->v[i].sev == GRAPH_SEV_ERROR;
	}
	/* Repeats of one problem are counted but listed once (plan-tensor.c). */
	check(errors <= d->nerrors && (errors > 0) == (d->nerrors > 0),
	    "errors counted");
}

/* What `mergectl plan --json` would print: valid JSON, always. */
static void
check_json(const struct graph_plan *p, const struct graph_diags *d)
{
	cJSON *j, *back;
	char *text;

	j = graph_plan_json(p, d);
	check(j != NULL, "plan JSON");
	text = cJSON_PrintUnformatted(j);
	check(text != NULL, "plan JSON prints");
	back = cJSON_Parse(text);
	check(back != NULL, "plan JSON parses back");
	cJSON_Delete(back);
	cJSON_free(text);
	cJSON_Delete(j);
}

static void
plan_opts(struct graph_plan_opts *o, char *hub, size_t len)
{
	graph_plan_opts_default(o);
	snprintf(hub, len, "%s/hub", root);
	memset(&o->env, 0, sizeof o->env);
	o->env.cwd = root;
	o->env.hf_hub_cache = hub;
	o->budget = 64ull << 20;
	o->merge.has_seed = true;
	o->merge.seed = 7;
}

/*
 * A file of several documents, as `mergectl plan` reads it: a pipeline,
 * loaded (its stages in an order where each follows what it reads) and
 * planned whole against the headers of the stages it has not written,
 * in a scratch directory of its own.
 */
static void
fuzz_pipeline(const uint8_t *data, size_t size)
{
	struct graph_pipeline *p = NULL;
	struct graph_stage_plan *sp = NULL;
	struct graph_pipeline_opts po;
	struct graph_diags d;
	char stages[512], scratch[512], out[512], hub[512];
	size_t i, k, j;
	bool *seen;
	int rc;

	graph_diags_init(&d);
	snprintf(stages, sizeof stages, "%s/stages", root);
	rc = graph_pipeline_load_buffer("fuzz.yml", (const char *)data, size,
	    stages, &p, &d);
	check_diags(&d);
	check((rc == 0) == (d.nerrors == 0), "pipeline: load fails iff it "
	    "reports");
	check((rc == 0) == (p != NULL), "pipeline: one exactly on success");
	if (p == NULL)
		goto out;
	seen = calloc(p->nstages, sizeof *seen);
	check(seen != NULL, "memory");
	for (k = 0; k < p->nstages; k++) {
		i = p->order[k];
		for (j = 0; j < p->stages[i].ndeps; j++)
			check(seen[p->stages[i].deps[j]], "pipeline: a stage "
			    "follows what it reads");
		seen[i] = true;
	}
	free(seen);
	snprintf(scratch, sizeof scratch, "%s/scratch-XXXXXX", root);
	check(mkdtemp(scratch) != NULL, "cannot make a directory");
	memset(&po, 0, sizeof po);
	plan_opts(&po.plan, hub, sizeof hub);
	snprintf(out, sizeof out, "%s/final-out", root);
	po.out = out;
	po.dir_fd = po.out_fd = -1;	/* nothing is written yet */
	po.lazy = true;
	po.fuse = size % 2 == 1;	/* either way, by the input */
	po.scratch_fd = open(scratch, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	check(po.scratch_fd >= 0, "cannot open the scratch directory");
	rc = graph_pipeline_plan(p, &po, &sp, &d);
	check_diags(&d);
	check((rc == 0) == (d.nerrors == 0), "pipeline: planning fails iff "
	    "it reports");
	for (i = 0; sp != NULL && i < p->nstages; i++) {
		check((sp[i].action == GRAPH_STAGE_RUN || (po.fuse &&
		    sp[i].action == GRAPH_STAGE_FUSED)) && sp[i].plan != NULL,
		    "pipeline: nothing written yet, every stage runs");
		for (j = 0; sp[i].action == GRAPH_STAGE_FUSED &&
		    j < p->stages[sp[i].into].ndeps; j++)
			if (p->stages[sp[i].into].deps[j] == i)
				break;
		check(sp[i].action != GRAPH_STAGE_FUSED ||
		    j < p->stages[sp[i].into].ndeps, "pipeline: a stage is "
		    "fused into one that reads it");
		check_json(sp[i].plan, NULL);
	}
	graph_stage_plans_free(sp, p->nstages);
	close(po.scratch_fd);
	remove_entry(root, strrchr(scratch, '/') + 1);
out:
	check_json(NULL, &d);
	if (getenv("FUZZ_VERBOSE") != NULL)
		graph_diags_print(&d, stderr);
	graph_pipeline_free(p);
	graph_diags_fini(&d);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static bool ready;
	struct graph_config *cfg = NULL;
	struct graph_plan *plan = NULL;
	struct graph_plan_opts o;
	struct graph_plan_summary s;
	struct graph_diags d;
	char hub[512];
	int rc;

	if (!ready) {
		setup();
		ready = true;
	}
	if (graph_pipeline_ndocs((const char *)data, size) > 1) {
		fuzz_pipeline(data, size);
		return 0;
	}
	graph_diags_init(&d);
	rc = graph_config_load_buffer("fuzz.yml", (const char *)data, size,
	    &cfg, &d);
	check_diags(&d);
	check((rc == 0) == (d.nerrors == 0), "load fails iff it reports");
	if (rc != 0) {
		check(cfg == NULL, "no config on failure");
		check_json(NULL, &d);
		if (getenv("FUZZ_VERBOSE") != NULL)
			graph_diags_print(&d, stderr);
		goto out;
	}
	plan_opts(&o, hub, sizeof hub);
	rc = graph_plan_build(cfg, &o, &plan, &d);
	check_diags(&d);
	check((rc == 0) == (d.nerrors == 0), "planning fails iff it reports");
	check((rc == 0) == (plan != NULL), "a plan exactly on success");
	if (plan != NULL) {
		graph_plan_summary(plan, &s);
		check(s.arch != NULL && s.arch_model != NULL, "an architecture");
		check(s.tensors > 0 && s.shards > 0, "something to write");
		check(s.peak_memory <= o.budget, "planned within the budget");
	}
	check_json(plan, &d);
	if (getenv("FUZZ_VERBOSE") != NULL)	/* for triage */
		graph_diags_print(&d, stderr);
	graph_plan_free(plan);
	graph_config_free(cfg);
out:
	graph_diags_fini(&d);
	return 0;
}

#ifndef FUZZ_LIBFUZZER
#include "fuzz-main.h"
#endif
