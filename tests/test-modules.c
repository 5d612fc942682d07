/* SPDX-License-Identifier: MIT */
/*
 * test-modules.c: models of several stacks (vision-language,
 * encoder-decoder) and phi-1, planned and merged end to end.
 *
 * For each family mergekit ships a modular definition of (Gemma 3 with
 * vision, Mistral 3, Llama 4, Qwen2-VL, Qwen2.5-VL, Qwen3-VL and its dense
 * variant, T5, Whisper), two tiny models with that family's tensor names
 * and config.json (tests/stmodel.c) are: planned (the modules, their
 * names, layer counts and config keys, as plan --json shows them); merged
 * with linear over models: (every tensor of every module, each the mean
 * of the two, checked against values computed here); and merged with a
 * modules: config that slices one module from both models while the
 * modules it does not name are copied from the base, byte for byte, and
 * that module's nested layer count is patched in config.json.  Top-level
 * slices: on such a model is refused with the modules: form to use, and
 * an unknown module name lists the real ones.  phi-1 is planned and
 * sliced in both of its layouts: mergekit's definition (blocks from
 * layers.0, the head at layers.N) and the checkpoint's (embedding at
 * layers.0, blocks from layers.1, the head at layers.N+1).
 */
#define _GNU_SOURCE
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>

#include "stmodel.h"
#include "tap.h"
#include "testlib.h"

struct family {
	const char *name;
	const char *layout;
	const char *config;
	const char *modules;	/* name:layers,... as plan --json says */
	const char *slice_module;	/* the module the slices test cuts */
	const char *slice_prefix;	/* its layer prefix */
	int layers;		/* its layer count */
	const char *layers_key;	/* dotted config.json key of that count */
};

/* A decoder layer's tensors under prefix P, hidden size 8. */
#define TEXT_LAYER(P, n) \
	P ".{L}.input_layernorm.weight 8 *" #n "\n" \
	P ".{L}.self_attn.q_proj.weight 8 8 *" #n "\n" \
	P ".{L}.mlp.up_proj.weight 16 8 *" #n "\n"
#define VIT_LAYER(P, n) \
	P ".{L}.layer_norm1.weight 8 *" #n "\n" \
	P ".{L}.attn.qkv.weight 24 8 *" #n "\n"

static const struct family families[] = {
	{ "gemma3vl",
	    "model.language_model.embed_tokens.weight 32 8\n"
	    TEXT_LAYER("model.language_model.layers", 4)
	    "model.language_model.norm.weight 8\n"
	    "model.vision_tower.vision_model.embeddings.patch_embedding.weight"
	    " 8 3\n"
	    VIT_LAYER("model.vision_tower.vision_model.encoder.layers", 2)
	    "model.vision_tower.vision_model.post_layernorm.weight 8\n"
	    "model.multi_modal_projector.mm_input_projection_weight 8 8\n"
	    "model.multi_modal_projector.mm_soft_emb_norm.weight 8\n",
	    "{\"architectures\": [\"Gemma3ForConditionalGeneration\"],\n"
	    " \"model_type\": \"gemma3\",\n"
	    " \"text_config\": {\"num_hidden_layers\": 4, \"vocab_size\": 32,"
	    " \"hidden_size\": 8},\n"
	    " \"vision_config\": {\"num_hidden_layers\": 2}}\n",
	    "multi_modal_projector:0,text_decoder:4,vision_tower:2",
	    "text_decoder", "model.language_model.layers.", 4,
	    "text_config.num_hidden_layers" },
	{ "mistral3",
	    "model.language_model.embed_tokens.weight 32 8\n"
	    TEXT_LAYER("model.language_model.layers", 3)
	    "model.language_model.norm.weight 8\n"
	    "model.vision_tower.patch_conv.weight 8 3\n"
	    VIT_LAYER("model.vision_tower.transformer.layers", 2)
	    "model.multi_modal_projector.linear_1.weight 8 8\n"
	    "lm_head.weight 32 8\n",
	    "{\"architectures\": [\"Mistral3ForConditionalGeneration\"],\n"
	    " \"model_type\": \"mistral3\",\n"
	    " \"text_config\": {\"num_hidden_layers\": 3},\n"
	    " \"vision_config\": {\"num_hidden_layers\": 2}}\n",
	    "multi_modal_projector:0,text_decoder:3,vision_tower:2",
	    "text_decoder", "model.language_model.layers.", 3,
	    "text_config.num_hidden_layers" },
	{ "llama4",
	    "language_model.model.embed_tokens.weight 32 8\n"
	    TEXT_LAYER("language_model.model.layers", 3)
	    "language_model.model.norm.weight 8\n"
	    "language_model.lm_head.weight 32 8\n"
	    VIT_LAYER("vision_model.model.layers", 2)
	    "vision_model.patch_embedding.linear.weight 8 3\n"
	    "multi_modal_projector.linear_1.weight 8 8\n",
	    "{\"architectures\": [\"Llama4ForConditionalGeneration\"],\n"
	    " \"model_type\": \"llama4\",\n"
	    " \"text_config\": {\"num_hidden_layers\": 3},\n"
	    " \"vision_config\": {\"num_hidden_layers\": 2}}\n",
	    "multi_modal_projector:0,text_decoder:3,vision_model:2",
	    "text_decoder", "language_model.model.layers.", 3,
	    "text_config.num_hidden_layers" },
	{ "qwen2vl",
	    "model.embed_tokens.weight 32 8\n"
	    TEXT_LAYER("model.layers", 3)
	    "model.norm.weight 8\n"
	    "lm_head.weight 32 8\n"
	    "visual.patch_embed.proj.weight 8 3\n"
	    VIT_LAYER("visual.blocks", 2)
	    "visual.merger.ln_q.weight 8\n"
	    "visual.merger.mlp.0.weight 16 8\n"
	    "visual.merger.mlp.2.weight 8 16\n",
	    "{\"architectures\": [\"Qwen2VLForConditionalGeneration\"],\n"
	    " \"model_type\": \"qwen2_vl\", \"num_hidden_layers\": 3,\n"
	    " \"vision_config\": {\"depth\": 2}}\n",
	    "multi_modal_projector:3,text_decoder:3,vision_tower:2",
	    "text_decoder", "model.layers.", 3, "num_hidden_layers" },
	{ "qwen2_5vl",
	    "model.language_model.embed_tokens.weight 32 8\n"
	    TEXT_LAYER("model.language_model.layers", 3)
	    "model.language_model.norm.weight 8\n"
	    "lm_head.weight 32 8\n"
	    "model.visual.patch_embed.proj.weight 8 3\n"
	    VIT_LAYER("model.visual.blocks", 3)
	    "model.visual.merger.ln_q.weight 8\n"
	    "model.visual.merger.mlp.0.weight 16 8\n"
	    "model.visual.merger.mlp.2.weight 8 16\n",
	    "{\"architectures\": [\"Qwen2_5_VLForConditionalGeneration\"],\n"
	    " \"model_type\": \"qwen2_5_vl\",\n"
	    " \"text_config\": {\"num_hidden_layers\": 3},\n"
	    " \"vision_config\": {\"depth\": 3}}\n",
	    "multi_modal_projector:3,text_decoder:3,vision_tower:3",
	    "vision_tower", "model.visual.blocks.", 3, "vision_config.depth" },
	{ "qwen3vl",
	    "model.language_model.embed_tokens.weight 32 8\n"
	    "model.language_model.layers.{L}.input_layernorm.weight 8 *3\n"
	    "model.language_model.layers.{L}.self_attn.q_proj.weight 8 8 *3\n"
	    "model.language_model.layers.{L}.mlp.experts.gate_up_proj 2 8 16 *3\n"
	    "model.language_model.layers.{L}.mlp.experts.down_proj 2 8 8 *3\n"
	    "model.language_model.layers.{L}.mlp.gate.weight 2 8 *3\n"
	    "model.language_model.norm.weight 8\n"
	    "lm_head.weight 32 8\n"
	    VIT_LAYER("model.visual.blocks", 2)
	    "model.visual.deepstack_merger_list.{L}.linear_fc1.weight 8 8 *3\n"
	    "model.visual.merger.linear_fc1.weight 8 8\n",
	    "{\"architectures\": [\"Qwen3VLMoeForConditionalGeneration\"],\n"
	    " \"model_type\": \"qwen3_vl_moe\",\n"
	    " \"text_config\": {\"num_hidden_layers\": 3},\n"
	    " \"vision_config\": {\"depth\": 2}}\n",
	    "multi_modal_projector:3,text_decoder:3,vision_tower:2",
	    "text_decoder", "model.language_model.layers.", 3,
	    "text_config.num_hidden_layers" },
	{ "qwen3vl_dense",
	    "model.language_model.embed_tokens.weight 32 8\n"
	    TEXT_LAYER("model.language_model.layers", 4)
	    "model.language_model.norm.weight 8\n"
	    "lm_head.weight 32 8\n"
	    VIT_LAYER("model.visual.blocks", 2)
	    "model.visual.deepstack_merger_list.{L}.linear_fc1.weight 8 8 *3\n"
	    "model.visual.merger.linear_fc1.weight 8 8\n",
	    "{\"architectures\": [\"Qwen3VLForConditionalGeneration\"],\n"
	    " \"model_type\": \"qwen3_vl\",\n"
	    " \"text_config\": {\"num_hidden_layers\": 4},\n"
	    " \"vision_config\": {\"depth\": 2}}\n",
	    "multi_modal_projector:3,text_decoder:4,vision_tower:2",
	    "text_decoder", "model.language_model.layers.", 4,
	    "text_config.num_hidden_layers" },
	{ "t5",
	    "shared.weight 32 8\n"
	    "encoder.block.{L}.layer.0.SelfAttention.q.weight 8 8 *2\n"
	    "encoder.block.{L}.layer.1.DenseReluDense.wi.weight 16 8 *2\n"
	    "encoder.block.0.layer.0.SelfAttention.relative_attention_bias"
	    ".weight 4 2\n"
	    "encoder.final_layer_norm.weight 8\n"
	    "decoder.block.{L}.layer.0.SelfAttention.q.weight 8 8 *3\n"
	    "decoder.block.{L}.layer.1.EncDecAttention.q.weight 8 8 *3\n"
	    "decoder.final_layer_norm.weight 8\n"
	    "lm_head.weight 32 8\n",
	    "{\"architectures\": [\"T5ForConditionalGeneration\"],\n"
	    " \"model_type\": \"t5\", \"num_layers\": 2,"
	    " \"num_decoder_layers\": 3}\n",
	    "decoder:3,encoder:2,shared:0",
	    "decoder", "decoder.block.", 3, "num_decoder_layers" },
	{ "whisper",
	    "model.encoder.conv1.weight 8 3\n"
	    "model.encoder.embed_positions.weight 16 8\n"
	    TEXT_LAYER("model.encoder.layers", 2)
	    "model.encoder.layer_norm.weight 8\n"
	    "model.decoder.embed_tokens.weight 32 8\n"
	    "model.decoder.embed_positions.weight 16 8\n"
	    TEXT_LAYER("model.decoder.layers", 3)
	    "model.decoder.layer_norm.weight 8\n",
	    "{\"architectures\": [\"WhisperForConditionalGeneration\"],\n"
	    " \"model_type\": \"whisper\", \"encoder_layers\": 2,"
	    " \"decoder_layers\": 3}\n",
	    "decoder:3,encoder:2",
	    "encoder", "model.encoder.layers.", 2, "encoder_layers" },
};

static const char *dir;

static int
ctl(char **out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int
ctl(char **out, const char *fmt, ...)
{
	va_list ap;
	char *args;
	int rc;

	va_start(ap, fmt);
	if (vasprintf(&args, fmt, ap) < 0)
		abort();
	va_end(ap);
	rc = tl_runf(out, "cd %s && %s %s 2>&1", dir, tl_mergectl, args);
	free(args);
	return rc;
}

struct model {
	struct tl_st *st;
	size_t n;
};

static struct model
load(const char *name)
{
	struct model m = { 0 };
	char path[4096];

	snprintf(path, sizeof path, "%s/%s", dir, name);
	if (tl_model_load(path, &m.st, &m.n) != 0)
		m.n = 0;
	return m;
}

static const struct tl_tensor *
find(const struct model *m, const char *name)
{
	return tl_model_find(m->st, m->n, name);
}

static size_t
count(const struct model *m)
{
	size_t i, n = 0;

	for (i = 0; i < m->n; i++)
		n += m->st[i].n;
	return n;
}

static bool
bytes_equal(const struct tl_tensor *a, const struct tl_tensor *b)
{
	return a != NULL && b != NULL && a->nbytes == b->nbytes &&
	    memcmp(a->data, b->data, a->nbytes) == 0;
}

/* "name:layers,..." of plan --json's modules. */
static char *
plan_modules(const char *json)
{
	cJSON *j = cJSON_Parse(json), *m;
	char *s = calloc(1, 4096);
	size_t len = 0;

	cJSON_ArrayForEach(m, cJSON_GetObjectItem(j, "modules"))
		len += (size_t)snprintf(s + len, 4096 - len, "%s%s:%d",
		    len ? "," : "", cJSON_GetObjectItem(m, "name")->valuestring,
		    (int)cJSON_GetObjectItem(m, "layers")->valuedouble);
	cJSON_Delete(j);
	return s;
}

/* The number at a dotted path of dir/name/config.json, or -1. */
static double
config_number(const char *name, const char *path)
{
	char file[4096], *text, *p, *dot;
	cJSON *j, *v;
	double r = -1;

	snprintf(file, sizeof file, "%s/%s/config.json", dir, name);
	if ((text = tl_read(file, NULL)) == NULL)
		return -1;
	j = cJSON_Parse(text);
	v = j;
	p = strdup(path);
	for (char *q = p; v != NULL && q != NULL; q = dot) {
		if ((dot = strchr(q, '.')) != NULL)
			*dot++ = '\0';
		v = cJSON_GetObjectItem(v, q);
	}
	if (cJSON_IsNumber(v))
		r = v->valuedouble;
	free(p);
	cJSON_Delete(j);
	free(text);
	return r;
}

/* Every tensor of out is the mean of a's and b's (linear, weights 1). */
static bool
all_means(const struct model *out, const struct model *a,
    const struct model *b, char *why, size_t len)
{
	const struct tl_tensor *t, *x, *y;
	size_t i, k;
	uint64_t e;
	double want, got;

	for (k = 0; k < a->n; k++)
		for (i = 0; i < a->st[k].n; i++) {
			x = &a->st[k].t[i];
			y = find(b, x->name);
			t = find(out, x->name);
			if (t == NULL || y == NULL || t->numel != x->numel) {
				snprintf(why, len, "%s: missing", x->name);
				return false;
			}
			for (e = 0; e < t->numel; e++) {
				want = (tl_value(x, e) + tl_value(y, e)) / 2;
				got = tl_value(t, e);
				if (fabs(got - want) > 1e-6 * fmax(1, fabs(want))) {
					snprintf(why, len, "%s[%llu]: %g, not %g",
					    x->name, (unsigned long long)e, got,
					    want);
					return false;
				}
			}
		}
	return true;
}

/*
 * Does out's module under prefix hold a's layers 0-1, b's layers 1 to the
 * end, then a's last layer, and is every other tensor a's, byte for byte?
 * (The module's post weights come from its last slice, a.)
 */
static bool
sliced_right(const struct model *out, const struct model *a,
    const struct model *b, const char *prefix, int layers, char *why,
    size_t len)
{
	const struct tl_tensor *t, *src;
	size_t i, k, plen = strlen(prefix);
	char name[512];
	long idx;
	char *end;

	for (k = 0; k < out->n; k++)
		for (i = 0; i < out->st[k].n; i++) {
			t = &out->st[k].t[i];
			if (strncmp(t->name, prefix, plen) != 0) {
				src = find(a, t->name);
			} else {
				idx = strtol(t->name + plen, &end, 10);
				snprintf(name, sizeof name, "%s%ld%s", prefix,
				    idx < 2 ? idx : idx <= layers ? idx - 1 :
				    (long)layers - 1, end);
				src = find(idx < 2 || idx > layers ? a : b,
				    name);
				if (idx > layers + 1) {
					snprintf(why, len, "%s: beyond %d",
					    t->name, layers + 1);
					return false;
				}
			}
			if (!bytes_equal(t, src)) {
				snprintf(why, len, "%s differs", t->name);
				return false;
			}
		}
	return true;
}

static void
test_family(const struct family *f)
{
	char a[64], b[64], o1[64], o2[64], path[4096], why[2048] = "";
	char *o = NULL, *mods;
	struct model ma, mb, out;
	int rc;

	snprintf(a, sizeof a, "%s-a", f->name);
	snprintf(b, sizeof b, "%s-b", f->name);
	snprintf(path, sizeof path, "%s/%s", dir, a);
	stm_write(path, f->layout, f->config, 1);
	snprintf(path, sizeof path, "%s/%s", dir, b);
	stm_write(path, f->layout, f->config, 2);
	ma = load(a);
	mb = load(b);
	snprintf(path, sizeof path, "%s/preprocessor_config.json", a);
	tl_write_at(dir, path, "{\"image_processor_type\": \"X\"}\n");

	/* The modules, as plan sees them. */
	snprintf(path, sizeof path, "%s-lin.yml", f->name);
	snprintf(why, sizeof why, "merge_method: linear\nmodels:\n"
	    "  - model: ./%s\n    parameters: {weight: 1}\n"
	    "  - model: ./%s\n    parameters: {weight: 1}\n", a, b);
	tl_write_at(dir, path, why);
	rc = ctl(&o, "plan %s --json", path);
	mods = rc == 0 ? plan_modules(o) : strdup("");
	ok(rc == 0 && strcmp(mods, f->modules) == 0, "%s: plan shows modules "
	    "%s (%s)", f->name, f->modules, mods);
	if (rc != 0)
		tap_diag("%s", o);
	free(mods);
	free(o);

	/* models: merges every module. */
	snprintf(o1, sizeof o1, "out-%s-lin", f->name);
	rc = ctl(&o, "run %s %s --quiet", path, o1);
	ok_int_eq(rc, 0, "%s: linear over models: runs", f->name);
	if (rc != 0)
		tap_diag("%s", o);
	free(o);
	out = load(o1);
	ok(count(&out) == count(&ma) && all_means(&out, &ma, &mb, why,
	    sizeof why), "%s: every one of the %zu tensors is the mean of the "
	    "two models' (%s)", f->name, count(&ma), why);
	tl_model_free(out.st, out.n);
	snprintf(path, sizeof path, "%s/preprocessor_config.json", a);
	snprintf(why, sizeof why, "%s/preprocessor_config.json", o1);
	ok(tl_same_at(dir, path, why), "%s: preprocessor_config.json is "
	    "copied from the first model", f->name);

	/* modules: slices one module; the others are a's. */
	snprintf(path, sizeof path, "%s-mod.yml", f->name);
	snprintf(why, sizeof why, "merge_method: passthrough\n"
	    "base_model: ./%s\nmodules:\n  %s:\n    slices:\n"
	    "      - sources:\n          - model: ./%s\n"
	    "            layer_range: [0, 2]\n"
	    "      - sources:\n          - model: ./%s\n"
	    "            layer_range: [1, %d]\n"
	    "      - sources:\n          - model: ./%s\n"
	    "            layer_range: [%d, %d]\n", a, f->slice_module, a, b,
	    f->layers, a, f->layers - 1, f->layers);
	tl_write_at(dir, path, why);
	snprintf(o2, sizeof o2, "out-%s-mod", f->name);
	rc = ctl(&o, "run %s %s --quiet", path, o2);
	ok_int_eq(rc, 0, "%s: modules: {%s: slices} runs", f->name,
	    f->slice_module);
	if (rc != 0)
		tap_diag("%s", o);
	free(o);
	out = load(o2);
	why[0] = '\0';
	ok(out.n > 0 && sliced_right(&out, &ma, &mb, f->slice_prefix,
	    f->layers, why, sizeof why), "%s: %s holds a's layers 0-1, b's "
	    "1-%d and a's %d; every other tensor is a's, byte for byte (%s)",
	    f->name, f->slice_module, f->layers - 1, f->layers - 1, why);
	tl_model_free(out.st, out.n);
	ok(config_number(o2, f->layers_key) == f->layers + 2, "%s: config.json "
	    "says %s: %d", f->name, f->layers_key, f->layers + 2);

	/* Top-level slices: cannot say which module. */
	snprintf(path, sizeof path, "%s-sl.yml", f->name);
	snprintf(why, sizeof why, "merge_method: passthrough\nslices:\n"
	    "  - sources:\n      - model: ./%s\n        layer_range: [0, 1]\n",
	    a);
	tl_write_at(dir, path, why);
	rc = ctl(&o, "plan %s", path);
	ok(rc == 3 && strstr(o, "modules:") && strstr(o, f->slice_module),
	    "%s: top-level slices: is refused (exit 3) with the modules: form "
	    "to use", f->name);
	free(o);
	tl_model_free(ma.st, ma.n);
	tl_model_free(mb.st, mb.n);
}

static void
test_unknown_module(void)
{
	char *o = NULL;
	int rc;

	tl_write_at(dir, "unknown.yml", "merge_method: linear\nmodules:\n"
	    "  text_decodr:\n    models:\n      - model: ./gemma3vl-a\n"
	    "      - model: ./gemma3vl-b\n");
	rc = ctl(&o, "plan unknown.yml");
	ok(rc == 3 && strstr(o, "unknown.yml:3:3") && strstr(o, "has no module "
	    "'text_decodr'; its modules are: multi_modal_projector, "
	    "text_decoder, vision_tower"), "an unknown module is refused at "
	    "its line, naming the model's modules");
	if (rc != 3)
		tap_diag("%s", o);
	free(o);
	/* Qwen2-VL's merger has layers but no count in config.json. */
	tl_write_at(dir, "merger.yml", "merge_method: passthrough\nmodules:\n"
	    "  multi_modal_projector:\n    slices:\n      - sources:\n"
	    "          - model: ./qwen2vl-b\n            layer_range: [0, 2]\n");
	rc = ctl(&o, "run merger.yml out-merger --quiet");
	ok(rc == 0 && strstr(o, "warning: module multi_modal_projector now "
	    "has 2 layers, but config.json has no layer count for it"),
	    "slicing a module config.json has no count for warns that the "
	    "count stays");
	if (rc != 0)
		tap_diag("%s", o);
	free(o);
}

/*
 * Embeddings of different vocabulary sizes are cut to the common rows;
 * config.json's vocabulary size, top-level or nested, follows.
 */
static void
test_vocab(const char *name, const char *layout_big, const char *layout,
    const char *config_big, const char *config, const char *key)
{
	char big[64], small[64], text[512], out[80], path[4096], *o = NULL;
	int rc;

	snprintf(big, sizeof big, "%s-v40", name);
	snprintf(small, sizeof small, "%s-v32", name);
	snprintf(path, sizeof path, "%s/%s", dir, big);
	stm_write(path, layout_big, config_big, 3);
	snprintf(path, sizeof path, "%s/%s", dir, small);
	stm_write(path, layout, config, 4);
	snprintf(path, sizeof path, "%s.yml", big);
	snprintf(text, sizeof text, "merge_method: linear\nmodels:\n"
	    "  - model: ./%s\n    parameters: {weight: 1}\n"
	    "  - model: ./%s\n    parameters: {weight: 1}\n", big, small);
	tl_write_at(dir, path, text);
	snprintf(out, sizeof out, "out-%s", big);
	rc = ctl(&o, "run %s %s --quiet", path, out);
	ok(rc == 0 && config_number(out, key) == 32, "%s: embeddings of 40 and "
	    "32 rows give 32, and config.json's %s says 32 (the donor's says "
	    "40)", name, key);
	if (rc != 0)
		tap_diag("%s", o);
	free(o);
}

/* phi-1 as mergekit's definition has it, and as its checkpoint has it. */
#define PHI_BLOCK(from, n) \
	"layers.{L" from "}.ln.weight 8 *" #n "\n" \
	"layers.{L" from "}.mixer.Wqkv.weight 24 8 *" #n "\n" \
	"layers.{L" from "}.mlp.fc1.weight 16 8 *" #n "\n"

static void
test_phi1(const char *name, const char *layout, int first)
{
	static const char config[] = "{\"architectures\": "
	    "[\"MixFormerSequentialForCausalLM\"],\n \"model_type\": "
	    "\"mixformer-sequential\", \"n_layer\": 4}\n";
	char a[64], b[64], cfg[64], out[64], path[4096], text[1024], *o = NULL;
	struct model ma, mb, mo;
	char n1[64], n2[64];
	int rc;

	snprintf(a, sizeof a, "%s-a", name);
	snprintf(b, sizeof b, "%s-b", name);
	snprintf(path, sizeof path, "%s/%s", dir, a);
	stm_write(path, layout, config, 1);
	snprintf(path, sizeof path, "%s/%s", dir, b);
	stm_write(path, layout, config, 2);
	snprintf(cfg, sizeof cfg, "%s.yml", name);
	snprintf(text, sizeof text, "merge_method: passthrough\nslices:\n"
	    "  - sources:\n      - model: ./%s\n        layer_range: [0, 2]\n"
	    "  - sources:\n      - model: ./%s\n        layer_range: [3, 4]\n",
	    a, b);
	tl_write_at(dir, cfg, text);
	snprintf(out, sizeof out, "out-%s", name);
	rc = ctl(&o, "run %s %s --quiet", cfg, out);
	ok_int_eq(rc, 0, "%s: slices [0,2] of a and [3,4] of b run", name);
	if (rc != 0)
		tap_diag("%s", o);
	free(o);
	ma = load(a);
	mb = load(b);
	mo = load(out);
	/* Three blocks; the head after them, from b (the last slice). */
	snprintf(n1, sizeof n1, "layers.%d.mixer.Wqkv.weight", first + 2);
	snprintf(n2, sizeof n2, "layers.%d.mixer.Wqkv.weight", first + 3);
	ok(bytes_equal(find(&mo, n1), find(&mb, n2)) &&
	    find(&mo, "layers.0.wte.weight") != NULL &&
	    bytes_equal(find(&mo, "layers.0.wte.weight"),
	    find(&ma, "layers.0.wte.weight")), "%s: output block 2 is b's "
	    "block 3; the embedding is a's", name);
	snprintf(n1, sizeof n1, "layers.%d.linear.weight", first + 3);
	snprintf(n2, sizeof n2, "layers.%d.linear.weight", first + 4);
	ok(bytes_equal(find(&mo, n1), find(&mb, n2)) && count(&mo) ==
	    (size_t)(1 + 3 * 3 + 2), "%s: the head is named for 3 layers (%s) "
	    "and is b's; nothing else is written", name, n1);
	ok(config_number(out, "n_layer") == 3, "%s: config.json says n_layer: "
	    "3", name);
	tl_model_free(ma.st, ma.n);
	tl_model_free(mb.st, mb.n);
	tl_model_free(mo.st, mo.n);
}

int
main(int argc, char **argv)
{
	size_t i;

	tl_init(argc, argv);
	tap_plan_lazy();
	dir = tl_tmpdir("modules");
	for (i = 0; i < sizeof families / sizeof *families; i++)
		test_family(&families[i]);
	test_unknown_module();
	test_vocab("vlm", "model.language_model.embed_tokens.weight 40 8\n"
	    TEXT_LAYER("model.language_model.layers", 1)
	    VIT_LAYER("model.vision_tower.vision_model.encoder.layers", 1),
	    "model.language_model.embed_tokens.weight 32 8\n"
	    TEXT_LAYER("model.language_model.layers", 1)
	    VIT_LAYER("model.vision_tower.vision_model.encoder.layers", 1),
	    "{\"architectures\": [\"Gemma3ForConditionalGeneration\"],\n"
	    " \"text_config\": {\"num_hidden_layers\": 1, \"vocab_size\": 40},\n"
	    " \"vision_config\": {\"num_hidden_layers\": 1}}\n",
	    "{\"architectures\": [\"Gemma3ForConditionalGeneration\"],\n"
	    " \"text_config\": {\"num_hidden_layers\": 1, \"vocab_size\": 32},\n"
	    " \"vision_config\": {\"num_hidden_layers\": 1}}\n",
	    "text_config.vocab_size");
	test_vocab("llm", "model.embed_tokens.weight 40 8\n"
	    TEXT_LAYER("model.layers", 1),
	    "model.embed_tokens.weight 32 8\n" TEXT_LAYER("model.layers", 1),
	    "{\"architectures\": [\"LlamaForCausalLM\"], \"vocab_size\": 40,"
	    " \"num_hidden_layers\": 1}\n",
	    "{\"architectures\": [\"LlamaForCausalLM\"], \"vocab_size\": 32,"
	    " \"num_hidden_layers\": 1}\n", "vocab_size");
	/* mergekit's phi-1.json: blocks at layers.0-3 (layers.0 also holds
	 * the embedding), the head at layers.4. */
	test_phi1("phi1-mergekit", "layers.0.wte.weight 32 8\n"
	    PHI_BLOCK("", 4)
	    "layers.4.linear.weight 32 8\nlayers.4.ln.weight 8\n", 0);
	/* The checkpoint's: the embedding alone at layers.0, blocks at
	 * layers.1-4, the head at layers.5. */
	test_phi1("phi1", "layers.0.wte.weight 32 8\n"
	    PHI_BLOCK("+1", 4)
	    "layers.5.linear.weight 32 8\nlayers.5.ln.weight 8\n", 1);
	return tap_done();
}
