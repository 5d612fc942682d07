/* SPDX-License-Identifier: MIT */
/*
 * extract.c: planning mergectl extract-lora, mergekit-extract-lora's
 * equivalent (mergekit's scripts/extract_lora.py, plan_extraction):
 * which of the fine-tuned model's tensors are decomposed, saved in full
 * or left out, from headers only, with every problem found before a
 * weight is read.
 *
 * Every tensor of FT is looked at, by its module (the name without its
 * last component) and the module's leaf (the module's last component):
 *
 *   - a module whose full or leaf name is in modules_to_save is saved in
 *     full from FT.  modules_to_save holds --save-module's names, the
 *     embeddings' leaves unless --embed-lora (and not excluded), and the
 *     leaves of the undecomposable modules that pass the filters unless
 *     --skip-undecomposable.  mergekit grows the list as it walks the
 *     modules, so a module after the first of its leaf is saved even when
 *     excluded; here the list is made first and applies to every module
 *     alike, which also keeps the adapter loadable: PEFT wraps every
 *     module with that leaf and fails on one whose tensors are missing;
 *   - else a module the regular expressions leave out is skipped
 *     (--include-regex: one must match, if any is given; --exclude-regex:
 *     none may; Python's re.search on the module name);
 *   - else a 2-D float X.weight is decomposed: its task vector FT - BASE
 *     becomes lora_A/lora_B, or for an input embedding (with
 *     --embed-lora) lora_embedding_A/B of the transposed task vector, as
 *     PEFT's Embedding adapts it.  BASE must have the tensor with the same
 *     shape (a tied LM head: its embedding); X.bias is not written:
 *     mergekit writes it as lora_B.bias, a delta that PEFT drops on load
 *     unless the config sets lora_bias, which mergekit's never does;
 *   - else (norms, biases of other modules, GPT-2's Conv1D, which PEFT's
 *     nn.Linear adapters do not fit) the module is undecomposable and was
 *     saved in full above, or with --skip-undecomposable is skipped, with
 *     one warning per leaf.
 *
 * When FT's and BASE's vocabularies differ, --embed-lora is turned off
 * with a warning, as mergekit does.  The task vector is computed in
 * float32 from the decoded weights (extract-run.c), where mergekit
 * subtracts in the stored dtype (bf16 - bf16 rounds): a deliberate
 * difference, more accurate.
 */
#include <sys/random.h>

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <regex.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <uv.h>

#include "extract-int.h"

#define EXTRACT_MAX_RANK (1 << 20)
#define EXTRACT_MAX_ITERS 64
#define EXTRACT_MAX_OVERSAMPLE 65536
#define EXTRACT_MAX_REGEX_BYTES 4096

void
graph_extract_opts_default(struct graph_extract_opts *o)
{
	unsigned int n = uv_available_parallelism();

	memset(o, 0, sizeof *o);
	o->max_rank = 128;
	o->distribute_scale = true;
	o->power_iters = 2;
	o->oversample = 10;
	graph_merge_opts_default(&o->merge);
	o->threads = n > 0 ? (int)n : 1;
	graph_env_from_process(&o->env);
}

/* The regular expressions, compiled. */
struct xre {
	regex_t *v;
	size_t n;
};

static void
xre_fini(struct xre *r)
{
	size_t i;

	for (i = 0; i < r->n; i++)
		regfree(&r->v[i]);
	free(r->v);
	memset(r, 0, sizeof *r);
}

/* Compiles a list; 0, or -EINVAL with *cause naming the option. */
static int
xre_compile(const char *opt, const char *const *v, size_t n, struct xre *out,
    char **cause)
{
	const char *why = NULL;
	char *posix;
	size_t i;
	int rc;

	memset(out, 0, sizeof *out);
	out->v = xcalloc(n + 1, sizeof *out->v);
	for (i = 0; i < n; i++) {
		if ((posix = lora_regex_translate(v[i], &why)) == NULL) {
			*cause = xasprintf("%s '%s' uses %s, which mergectl "
			    "does not read", opt, v[i], why);
			xre_fini(out);
			return -EINVAL;
		}
		rc = regcomp(&out->v[i], posix, REG_EXTENDED | REG_NOSUB);
		free(posix);
		if (rc != 0) {
			*cause = xasprintf("%s '%s' is not a valid regular "
			    "expression", opt, v[i]);
			xre_fini(out);
			return -EINVAL;
		}
		out->n++;
	}
	return 0;
}

/* Whether one of them matches somewhere in s (Python's re.search). */
static bool
xre_search(const struct xre *r, const char *s)
{
	size_t i;

	for (i = 0; i < r->n; i++)
		if (regexec(&r->v[i], s, 0, NULL, 0) == 0)
			return true;
	return false;
}

int
graph_extract_opts_check(const struct graph_extract_opts *o, char **cause)
{
	struct xre r;
	size_t k, total = 0;

	if (o->model == NULL || o->base == NULL) {
		*cause = xasprintf("%s is required", o->model == NULL ?
		    "--model" : "--base-model");
		return -EINVAL;
	}
	if (o->max_rank < 1 || o->max_rank > EXTRACT_MAX_RANK) {
		*cause = xasprintf("--max-rank must be from 1 to %d",
		    EXTRACT_MAX_RANK);
		return -EINVAL;
	}
	if (!isfinite(o->sv_epsilon) || o->sv_epsilon < 0) {
		*cause = xasprintf("--sv-epsilon must be a number, 0 or more");
		return -EINVAL;
	}
	if (o->power_iters < 0 || o->power_iters > EXTRACT_MAX_ITERS) {
		*cause = xasprintf("--power-iters must be from 0 to %d",
		    EXTRACT_MAX_ITERS);
		return -EINVAL;
	}
	if (o->oversample < 0 || o->oversample > EXTRACT_MAX_OVERSAMPLE) {
		*cause = xasprintf("--oversample must be from 0 to %d",
		    EXTRACT_MAX_OVERSAMPLE);
		return -EINVAL;
	}
	if (o->threads < 1) {
		*cause = xasprintf("the thread count must be 1 or more");
		return -EINVAL;
	}
	/* What matching costs grows with every expression: a cap on all
	 * of them together, not only on each (a daemon plans these). */
	for (k = 0; k < o->ninclude + o->nexclude; k++)
		total += strlen(k < o->ninclude ? o->include[k] :
		    o->exclude[k - o->ninclude]);
	if (total > EXTRACT_MAX_REGEX_BYTES) {
		*cause = xasprintf("--include-regex and --exclude-regex: %zu "
		    "bytes of expressions, more than the %d allowed together",
		    total, EXTRACT_MAX_REGEX_BYTES);
		return -EINVAL;
	}
	if (xre_compile("--include-regex", o->include, o->ninclude, &r,
	    cause) != 0)
		return -EINVAL;
	xre_fini(&r);
	if (xre_compile("--exclude-regex", o->exclude, o->nexclude, &r,
	    cause) != 0)
		return -EINVAL;
	xre_fini(&r);
	return 0;
}

/* As plan.c draws one: short enough to type. */
static uint64_t
extract_draw_seed(void)
{
	uint64_t s;

	if (getrandom(&s, sizeof s, GRND_NONBLOCK) != (ssize_t)sizeof s)
		s = (uint64_t)time(NULL) * 6364136223846793005ull;
	return s & 0xffffffffffffull;
}

/*
 * Opens one model reference (what: the option, for messages), with its
 * adapter attached when it has one, so that its weights read adapted.
 */
static int
extract_open(const char *s, const char *what,
    const struct graph_extract_opts *o, struct model **out,
    struct graph_diags *d)
{
	struct graph_ref ref;
	struct graph_resolved r;
	char *cause = NULL;
	int rc;

	*out = NULL;
	if ((rc = graph_ref_parse(s, &ref, &cause)) != 0) {
		graph_diag_add(d, GRAPH_SEV_ERROR, what, "%s", cause);
		free(cause);
		return rc;
	}
	rc = graph_ref_locate(&ref, false, o->dirs, o->ndirs, &o->env, &r,
	    &cause);
	if (rc == 0)
		rc = model_open(&ref, &r, o->cred, o->cancel, out, &cause);
	graph_resolved_fini(&r);
	if (rc != 0) {
		graph_diag_add(d, GRAPH_SEV_ERROR, what, "%s", cause);
		free(cause);
	} else if (ref.lora != NULL) {
		if ((rc = graph_ref_locate(&ref, true, o->dirs, o->ndirs,
		    &o->env, &r, &cause)) != 0) {
			graph_diag_add(d, GRAPH_SEV_ERROR, what, "%s", cause);
			free(cause);
		} else {
			rc = lora_attach(*out, &r, o->merge.lora_dtype, d);
		}
	}
	graph_ref_fini(&ref);
	return rc;
}

/* An LM head: a vocabulary-sized output matrix, not an input embedding. */
static bool
extract_is_head(const char *name)
{
	return arch_tied_name(name) != NULL || strstr(name, "lm_head") !=
	    NULL || strstr(name, "embed_out") != NULL;
}

/*
 * A vocabulary or position embedding, or an LM head: what mergekit
 * treats as an embedding (its model's input and output embeddings, and
 * any nn.Embedding), saved in full unless --embed-lora.
 */
static bool
extract_is_embedding(const char *name)
{
	return arch_name_is_embed(name) || arch_name_is_pre(name);
}

/* The rows of a model's input embedding, or -1. */
static int64_t
extract_vocab(const struct model *m)
{
	const struct safetensors_tensor *t;
	size_t i;

	for (i = 0; i < m->ntensors; i++) {
		t = m->tensors[i].t;
		if (t->ndim == 2 && arch_name_is_embed(t->name) &&
		    !extract_is_head(t->name))
			return t->shape[0];
	}
	return -1;
}

/* The module of a tensor name and its leaf, into caller buffers. */
static void
extract_split(const char *name, char **module, const char **param,
    const char **leaf)
{
	const char *dot = strrchr(name, '.');

	*module = dot != NULL ? xstrndup(name, (size_t)(dot - name)) :
	    xstrdup(name);
	*param = dot != NULL ? dot + 1 : "";
	dot = strrchr(*module, '.');
	*leaf = dot != NULL ? dot + 1 : *module;
}

/*
 * GPT-2's attention and MLP are transformers' Conv1D, a [in, out]
 * matrix that mergekit saves in full ("unsupported module type") and
 * that a Linear adapter would read transposed.
 */
static bool
extract_conv1d(const struct model *m, const char *leaf)
{
	return m->model_type != NULL && strcmp(m->model_type, "gpt2") == 0 &&
	    (strcmp(leaf, "c_attn") == 0 || strcmp(leaf, "c_proj") == 0 ||
	    strcmp(leaf, "c_fc") == 0);
}

/* A weight LoRA can factor: a float matrix named X.weight, not empty. */
static bool
extract_factorable(const struct model *m, const struct model_tensor *mt)
{
	const struct safetensors_tensor *t = mt->t;
	char *module;
	const char *param, *leaf;
	bool ok;

	extract_split(t->name, &module, &param, &leaf);
	ok = strcmp(param, "weight") == 0 && t->ndim == 2 && t->numel > 0 &&
	    graph_dtype_is_float(t->dtype) && !extract_conv1d(m, leaf);
	free(module);
	return ok;
}

/* A sorted set of names. */
static bool
extract_has(char *const *v, size_t n, const char *s)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (strcmp(v[i], s) == 0)
			return true;
	return false;
}

static void
extract_add(char ***v, size_t *n, const char *s)
{
	if (extract_has(*v, *n, s))
		return;
	*v = xgrowarray(*v, *n, sizeof **v);
	(*v)[(*n)++] = xstrdup(s);
}

static int
extract_cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int
extract_cmp_mt(const void *a, const void *b)
{
	const struct model_tensor *x = *(const struct model_tensor *const *)a;
	const struct model_tensor *y = *(const struct model_tensor *const *)b;

	return strcmp(x->t->name, y->t->name);
}

/* What planning one tensor needs beside the extraction. */
struct xplan {
	struct graph_extract *x;
	struct xre inc;
	struct xre exc;
	char **warned;		/* leaves skipped, warned of once */
	size_t nwarned;
	struct graph_diags *d;
};

static bool
xplan_passes(const struct xplan *p, const char *module)
{
	return (p->inc.n == 0 || xre_search(&p->inc, module)) &&
	    !xre_search(&p->exc, module);
}

/* Whether FT has a factorable module.weight (whose bias is dropped). */
static bool
xplan_bias_of_factorable(const struct xplan *p, const char *module)
{
	const struct model_tensor *w;
	char *name = xasprintf("%s.weight", module);

	w = model_find(p->x->ft, name);
	free(name);
	return w != NULL && extract_factorable(p->x->ft, w);
}

/*
 * modules_to_save: --save-module's names, the embeddings' leaves (when
 * not decomposed and not excluded), and the undecomposable modules' that
 * pass the filters (unless skipped).
 */
static void
xplan_save_list(struct xplan *p, const struct graph_extract_opts *o,
    struct model_tensor **ord)
{
	struct graph_extract *x = p->x;
	const struct safetensors_tensor *t;
	char *module;
	const char *param, *leaf;
	size_t i;

	for (i = 0; i < o->nsave_modules; i++)
		extract_add(&x->save, &x->nsave, o->save_modules[i]);
	for (i = 0; i < x->ft->ntensors; i++) {
		t = ord[i]->t;
		extract_split(t->name, &module, &param, &leaf);
		if (!x->embed_lora && strcmp(param, "weight") == 0 &&
		    extract_is_embedding(t->name)) {
			if (!xre_search(&p->exc, module))
				extract_add(&x->save, &x->nsave, leaf);
		} else if (!extract_factorable(x->ft, ord[i]) &&
		    !o->skip_undecomposable && xplan_passes(p, module) &&
		    !(strcmp(param, "bias") == 0 &&
		    xplan_bias_of_factorable(p, module))) {
			extract_add(&x->save, &x->nsave, leaf);
		}
		free(module);
	}
	qsort(x->save, x->nsave, sizeof *x->save, extract_cmp_str);
}

/* BASE's twin of a weight: its own, or for a tied head the embedding. */
static const struct model_tensor *
xplan_twin(const struct model *base, const char *name)
{
	const struct model_tensor *mt = model_find(base, name);
	const char *alt[4];
	size_t n, i;

	if (mt != NULL)
		return mt;
	n = arch_tied_names(name, alt, 4);
	for (i = 0; i < n && mt == NULL; i++)
		mt = model_find(base, alt[i]);
	return mt;
}

static struct xweight *
xplan_push(struct graph_extract *x, const struct model_tensor *mt,
    char *module)
{
	struct xweight *w;

	x->w = xgrowarray(x->w, x->nw, sizeof *x->w);
	w = &x->w[x->nw++];
	memset(w, 0, sizeof *w);
	w->name = xstrdup(mt->t->name);
	w->module = module;
	w->ft = mt;
	return w;
}

/* A decomposed weight: checks BASE's twin; false when it does not fit. */
static bool
xplan_lora(struct xplan *p, struct xweight *w)
{
	struct graph_extract *x = p->x;
	const struct safetensors_tensor *t = w->ft->t, *bt;
	bool ok = true;

	w->base = xplan_twin(x->base, t->name);
	if (w->base == NULL) {
		graph_diag_add(p->d, GRAPH_SEV_ERROR, t->name, "in the "
		    "fine-tuned model '%s' but not in the base model '%s': "
		    "there is no task vector to decompose (--exclude-regex "
		    "can leave it out)", x->ft->name, x->base->name);
		return false;
	}
	bt = w->base->t;
	if (bt->ndim != 2) {
		graph_diag_add(p->d, GRAPH_SEV_ERROR, t->name, "a matrix in "
		    "the fine-tuned model '%s', but %s has %d dimensions in "
		    "the base model '%s'", x->ft->name, bt->name, bt->ndim,
		    x->base->name);
		return false;
	}
	if (bt->shape[0] != t->shape[0] || bt->shape[1] != t->shape[1]) {
		graph_diag_add(p->d, GRAPH_SEV_ERROR, t->name, "[%" PRId64 ", %"
		    PRId64 "] in the fine-tuned model '%s', but %s is [%" PRId64
		    ", %" PRId64 "] in the base model '%s': a task vector "
		    "needs one shape", t->shape[0], t->shape[1], x->ft->name,
		    bt->name, bt->shape[0], bt->shape[1], x->base->name);
		return false;
	}
	if (!graph_dtype_is_float(bt->dtype)) {
		graph_diag_add(p->d, GRAPH_SEV_ERROR, t->name, "stored as %s "
		    "in the base model '%s': not a float weight",
		    graph_dtype_st_name(bt->dtype), x->base->name);
		ok = false;
	}
	if (!graph_dtype_is_encodable(t->dtype)) {
		graph_diag_add(p->d, GRAPH_SEV_ERROR, t->name, "stored as %s "
		    "in the fine-tuned model '%s': LoRA factors are written "
		    "in the weight's dtype, and mergectl writes none in %s",
		    graph_dtype_st_name(t->dtype), x->ft->name,
		    graph_dtype_st_name(t->dtype));
		ok = false;
	}
	if (!svd_fits(t->shape[0], t->shape[1])) {
		graph_diag_add(p->d, GRAPH_SEV_ERROR, t->name, "[%" PRId64 ", %"
		    PRId64 "] is too large for LAPACK's 32-bit sizes",
		    t->shape[0], t->shape[1]);
		ok = false;
	}
	return ok;
}

/* Sizes a pool task: what it holds while it runs. */
static void
xplan_size(const struct graph_extract *x, struct xweight *w)
{
	uint64_t numel = w->ft->t->numel, es, r, c, k, scratch;
	int64_t p;

	w->out_dtype = w->ft->t->dtype;
	es = graph_dtype_size(w->out_dtype);
	w->m = w->ft->t->ndim == 2 ? w->ft->t->shape[0] : 1;
	w->n = w->ft->t->ndim == 2 ? w->ft->t->shape[1] : (int64_t)numel;
	/* A weight read adapted: lora.c's work space on the pool thread. */
	scratch = w->ft->delta != NULL ? lora_scratch(w->ft->delta) : 0;
	if (w->lora && w->base->delta != NULL &&
	    lora_scratch(w->base->delta) > scratch)
		scratch = lora_scratch(w->base->delta);
	if (!w->lora) {
		/* Decoded, and encoded again. */
		w->need = numel * (4 + es) + scratch;
		return;
	}
	p = w->m < w->n ? w->m : w->n;
	w->k0 = x->max_rank < p ? x->max_rank : p;
	w->l = w->k0 + x->oversample < p ? w->k0 + x->oversample : p;
	r = (uint64_t)(w->transpose ? w->n : w->m);
	c = (uint64_t)(w->transpose ? w->m : w->n);
	k = (uint64_t)w->k0;
	/* The task vector, BASE's chunk, the SVD, the factors decoded and
	 * encoded. */
	w->need = numel * 4 + EXTRACT_CHUNK * 4 + (x->fast ?
	    svd_fast_bytes(w->m, w->n, w->transpose, w->l) :
	    svd_exact_bytes(w->m, w->n)) + (k * c + r * k) * (4 + es) + scratch;
}

/* Decides one tensor of FT. */
static void
xplan_tensor(struct xplan *p, struct model_tensor *mt)
{
	struct graph_extract *x = p->x;
	const struct safetensors_tensor *t = mt->t;
	struct xweight *w;
	char *module;
	const char *param, *leaf;

	extract_split(t->name, &module, &param, &leaf);
	if (extract_has(x->save, x->nsave, module) ||
	    extract_has(x->save, x->nsave, leaf)) {
		w = xplan_push(x, mt, module);
		w->computed = mt->delta != NULL;
		if (w->computed && !graph_dtype_is_encodable(t->dtype))
			graph_diag_add(p->d, GRAPH_SEV_ERROR, t->name,
			    "changed by the fine-tuned model's adapter but "
			    "stored as %s, which mergectl does not write",
			    graph_dtype_st_name(t->dtype));
		return;
	}
	if (!xplan_passes(p, module)) {
		x->skipped++;
		free(module);
		return;
	}
	if (extract_factorable(x->ft, mt)) {
		w = xplan_push(x, mt, module);
		w->lora = true;
		/* PEFT's Embedding factors the transposed weight. */
		w->transpose = extract_is_embedding(t->name) &&
		    !extract_is_head(t->name);
		(void)xplan_lora(p, w);
		return;
	}
	x->skipped++;
	/* A bias of a decomposed module is dropped (see the top). */
	if (!(strcmp(param, "bias") == 0 && xplan_bias_of_factorable(p,
	    module)) && !extract_has(p->warned, p->nwarned, leaf)) {
		graph_diag_add(p->d, GRAPH_SEV_WARNING, NULL, "%s: not a "
		    "matrix a LoRA adapter can factor (e.g. %s): skipped "
		    "(--skip-undecomposable)", leaf, t->name);
		extract_add(&p->warned, &p->nwarned, leaf);
	}
	free(module);
}

/* The budget's outliers, said once. */
static void
xplan_memory(struct graph_extract *x, struct graph_diags *d)
{
	const struct xweight *big = NULL;
	size_t i, alone = 0;
	char *a, *b, *c;

	for (i = 0; i < x->nw; i++) {
		if (!x->w[i].lora && !x->w[i].computed)
			continue;
		if (big == NULL || x->w[i].need > big->need)
			big = &x->w[i];
		alone += x->w[i].need > x->admit;
	}
	if (alone == 0)
		return;
	a = graph_format_size(big->need);
	b = graph_format_size(x->memory);
	c = graph_format_size(x->admit);
	/* A daemon's budget is shared: there nothing runs over it. */
	graph_diag_add(d, x->memory_strict ? GRAPH_SEV_ERROR :
	    GRAPH_SEV_WARNING, NULL, "%zu weight%s need%s more than the %s "
	    "that --memory %s leaves for weights (the largest, %s, needs %s): "
	    "%s", alone, alone == 1 ? "" : "s", alone == 1 ? "s" : "", c, b,
	    big->name, a, x->memory_strict ? "the memory budget is too small" :
	    "each runs alone, and the run uses more than --memory");
	free(a);
	free(b);
	free(c);
}

static void
xplan_classify(struct xplan *p, const struct graph_extract_opts *o)
{
	struct graph_extract *x = p->x;
	struct model_tensor **ord;
	size_t i, nlora = 0, before = p->d->nerrors;

	ord = xcalloc(x->ft->ntensors + 1, sizeof *ord);
	for (i = 0; i < x->ft->ntensors; i++)
		ord[i] = &x->ft->tensors[i];
	qsort(ord, x->ft->ntensors, sizeof *ord, extract_cmp_mt);
	xplan_save_list(p, o, ord);
	for (i = 0; i < x->ft->ntensors; i++) {
		/* A drain stops a long plan here too. */
		if (o->cancel != NULL && atomic_load(o->cancel)) {
			graph_diag_add(p->d, GRAPH_SEV_ERROR, NULL,
			    "interrupted");
			break;
		}
		xplan_tensor(p, ord[i]);
	}
	free(ord);
	/* Sizes only what has no problem: a twin, LAPACK-sized sides. */
	if (p->d->nerrors != before)
		return;
	for (i = 0; i < x->nw; i++) {
		xplan_size(x, &x->w[i]);
		x->w[i].r.name = x->w[i].lora ? x->w[i].module : x->w[i].name;
		x->w[i].r.kind = x->w[i].lora ? GRAPH_EXTRACT_LORA :
		    GRAPH_EXTRACT_FULL;
		nlora += x->w[i].lora;
	}
	if (nlora == 0)
		graph_diag_add(p->d, GRAPH_SEV_ERROR, x->ft->name, "no weight "
		    "to decompose: every tensor is saved in full or left out "
		    "(--save-module, --include-regex, --exclude-regex)");
	xplan_memory(x, p->d);
}

int
graph_extract_plan(const struct graph_extract_opts *o,
    struct graph_extract **out, struct graph_diags *d)
{
	struct graph_extract *x;
	struct cred_saved saved;
	struct xplan p;
	char *cause = NULL;
	size_t before = d->nerrors;

	*out = NULL;
	memset(&p, 0, sizeof p);
	if (graph_extract_opts_check(o, &cause) != 0) {
		graph_diag_add(d, GRAPH_SEV_ERROR, NULL, "%s", cause);
		free(cause);
		return -EINVAL;
	}
	x = xcalloc(1, sizeof *x);
	x->ft_ref = xstrdup(o->model);
	x->base_ref = xstrdup(o->base);
	x->max_rank = o->max_rank;
	x->distribute = o->distribute_scale;
	x->embed_lora = o->embed_lora;
	x->sv_epsilon = o->sv_epsilon;
	x->fast = o->fast;
	x->power_iters = o->power_iters;
	x->oversample = o->oversample;
	x->seed = !o->fast ? 0 : o->merge.has_seed ? o->merge.seed :
	    extract_draw_seed();
	x->memory = o->merge.memory ? o->merge.memory : graph_default_memory();
	x->admit = x->memory > 4 * EXTRACT_OVERHEAD(o->threads) ? x->memory -
	    EXTRACT_OVERHEAD(o->threads) : x->memory * 3 / 4;
	x->threads = o->threads;
	x->memory_strict = o->memory_strict;
	/* The run creates files with them, after o is gone. */
	cred_copy(&x->cred_copy, &x->cred_groups, o->cred);
	x->cred = o->cred != NULL ? &x->cred_copy : NULL;
	x->force = o->merge.force;
	x->model_card = o->merge.model_card;
	x->invocation = xstrdup(o->invocation != NULL ? o->invocation : "");
	x->cancel = o->cancel;
	p.x = x;
	p.d = d;
	(void)xre_compile("--include-regex", o->include, o->ninclude, &p.inc,
	    &cause);
	(void)xre_compile("--exclude-regex", o->exclude, o->nexclude, &p.exc,
	    &cause);
	/* Every file the plan opens, it opens with the user's rights. */
	if (cred_enter(o->cred, &saved, &cause) != 0) {
		graph_diag_add(d, GRAPH_SEV_ERROR, NULL, "%s", cause);
		free(cause);
		goto out;
	}
	(void)extract_open(o->model, "--model", o, &x->ft, d);
	(void)extract_open(o->base, "--base-model", o, &x->base, d);
	cred_leave(&saved);
	if (d->nerrors != before)
		goto out;
	if (o->cancel != NULL && atomic_load(o->cancel)) {
		graph_diag_add(d, GRAPH_SEV_ERROR, NULL, "interrupted");
		goto out;
	}
	x->ft_vocab = extract_vocab(x->ft);
	x->base_vocab = extract_vocab(x->base);
	if (x->embed_lora && x->ft_vocab != x->base_vocab) {
		graph_diag_add(d, GRAPH_SEV_WARNING, NULL, "the vocabularies "
		    "differ (the fine-tuned model's embedding has %" PRId64
		    " rows, the base model's %" PRId64 "): embeddings are "
		    "saved in full, not decomposed (--embed-lora is turned "
		    "off, as mergekit does)", x->ft_vocab, x->base_vocab);
		x->embed_lora = false;
	}
	xplan_classify(&p, o);
out:
	xre_fini(&p.inc);
	xre_fini(&p.exc);
	while (p.nwarned > 0)
		free(p.warned[--p.nwarned]);
	free(p.warned);
	if (d->nerrors != before) {
		graph_extract_free(x);
		return -EINVAL;
	}
	*out = x;
	return 0;
}

void
graph_extract_free(struct graph_extract *x)
{
	size_t i;

	if (x == NULL)
		return;
	for (i = 0; i < x->nw; i++) {
		free(x->w[i].name);
		free(x->w[i].module);
	}
	free(x->w);
	for (i = 0; i < x->nsave; i++)
		free(x->save[i]);
	free(x->save);
	model_close(x->ft);
	model_close(x->base);
	free(x->ft_ref);
	free(x->base_ref);
	free(x->invocation);
	free(x->cred_groups);
	free(x);
}

void
graph_extract_files(const struct graph_extract *x,
    struct graph_plan_files *out)
{
	memset(out, 0, sizeof *out);
	model_list_files(x->ft, out);
	model_list_files(x->base, out);
}

void
graph_extract_summary(const struct graph_extract *x,
    struct graph_extract_summary *s)
{
	const struct xweight *w;
	double norm2 = 0, res2 = 0;
	size_t i;

	memset(s, 0, sizeof *s);
	s->model = x->ft_ref;
	s->base = x->base_ref;
	s->skipped = x->skipped;
	s->fast = x->fast;
	s->seed = x->seed;
	s->power_iters = x->power_iters;
	s->oversample = x->oversample;
	s->embed_lora = x->embed_lora;
	s->memory = x->memory;
	s->peak_memory = x->peak;
	s->bytes_written = x->bytes_written;
	s->seconds = x->seconds;
	for (i = 0; i < x->nw; i++) {
		w = &x->w[i];
		if (w->need > s->biggest && (w->lora || w->computed))
			s->biggest = w->need;
		s->alone += (w->lora || w->computed) && w->need > x->admit;
		if (!w->lora) {
			s->full++;
			continue;
		}
		if (w->r.done && w->r.rank == 0) {
			s->skipped++;
			continue;
		}
		s->decomposed++;
		if (w->r.rank > s->rank)
			s->rank = w->r.rank;
		norm2 += w->r.norm * w->r.norm;
		res2 += w->r.residual * w->r.residual;
	}
	s->norm = sqrt(norm2);
	s->residual = sqrt(res2);
	s->rel_error = norm2 > 0 ? s->residual / s->norm : 0;
}

size_t
graph_extract_nweights(const struct graph_extract *x)
{
	return x->nw;
}

const struct graph_extract_weight *
graph_extract_weight(const struct graph_extract *x, size_t i)
{
	return i < x->nw ? &x->w[i].r : NULL;
}
