/* SPDX-License-Identifier: MIT */
/*
 * extract-out.c: the files of an extracted LoRA adapter, in the staging
 * directory (extract-run.c publishes it), as mergekit-extract-lora
 * writes them (mergekit's scripts/extract_lora.py and card.py):
 *
 *   adapter_model.safetensors  one file, never sharded, metadata
 *                              {"format": "pt"}, tensors in name order:
 *                              base_model.model.M.lora_A.weight [r, in],
 *                              M.lora_B.weight [out, r] (embeddings:
 *                              M.lora_embedding_A [r, vocab] and
 *                              M.lora_embedding_B [dim, r]), and the
 *                              tensors saved in full under their own names;
 *   adapter_config.json        mergekit's keys in its order, indent 4: r and
 *                              lora_alpha the largest rank written, the
 *                              other ranks in rank_pattern and alpha_pattern
 *                              (alpha = r everywhere: B A applies
 *                              unscaled), target_modules sorted (a set in
 *                              mergekit);
 *   README.md                  mergekit's card, with a line that says how
 *                              the SVD was done and how much it missed.
 *
 * The factors are in the spool the pool wrote; a tensor saved in full
 * comes from FT's file as stored.  Both are copied with
 * copy_file_range(), which keeps the data out of user space.
 */
#define _GNU_SOURCE
#include <sys/types.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "extract-int.h"

#define XOUT_PREFIX "base_model.model."
#define XOUT_BOUNCE (1u << 20)

/* One tensor of adapter_model.safetensors and where its bytes are. */
struct xout {
	struct safetensors_tensor t;	/* begin, end: in the data */
	int fd;
	uint64_t off;
	const char *what;	/* the source, for messages */
};

static int
xout_cmp(const void *a, const void *b)
{
	return strcmp(((const struct xout *)a)->t.name,
	    ((const struct xout *)b)->t.name);
}

static struct xout *
xout_push(struct xout **v, size_t *n, char *name, enum graph_dtype dt,
    int64_t rows, int64_t cols, int fd, uint64_t off, const char *what)
{
	struct xout *o;

	*v = xgrowarray(*v, *n, sizeof **v);
	o = &(*v)[(*n)++];
	memset(o, 0, sizeof *o);
	o->t.name = name;
	o->t.dtype = dt;
	o->t.ndim = 2;
	o->t.shape[0] = rows;
	o->t.shape[1] = cols;
	o->t.numel = (uint64_t)rows * (uint64_t)cols;
	o->fd = fd;
	o->off = off;
	o->what = what;
	return o;
}

/*
 * A tensor saved in full: FT's bytes as stored, or what the pool wrote
 * to the spool when FT's adapter changes it.
 */
static void
xout_full(const struct graph_extract *x, const struct xweight *w, int spool,
    struct xout **v, size_t *n)
{
	const struct safetensors_tensor *st = w->ft->t;
	const struct safetensors_file *f = x->ft->files[w->ft->file];
	struct xout *o;
	char *name = xasprintf(XOUT_PREFIX "%s", w->name);

	if (w->computed)
		o = xout_push(v, n, name, w->out_dtype, 0, 0, spool,
		    w->spool_off, EXTRACT_SPOOL);
	else
		o = xout_push(v, n, name, st->dtype, 0, 0, f->fd, st->begin,
		    f->path);
	o->t.ndim = st->ndim;
	memcpy(o->t.shape, st->shape, sizeof o->t.shape);
	o->t.numel = st->numel;
}

/* The adapter's tensors, in name order, with their offsets. */
static size_t
xout_list(const struct graph_extract *x, int spool, struct xout **out)
{
	const struct xweight *w;
	struct xout *v = NULL;
	const char *kind;
	uint64_t off = 0, es;
	size_t n = 0, i;

	for (i = 0; i < x->nw; i++) {
		w = &x->w[i];
		if (w->lora && w->r.rank > 0) {
			kind = w->transpose ? "lora_embedding" : "lora";
			es = graph_dtype_size(w->out_dtype);
			xout_push(&v, &n, xasprintf(XOUT_PREFIX "%s.%s_A%s",
			    w->module, kind, w->transpose ? "" : ".weight"),
			    w->out_dtype, w->r.rank, w->r.cols, spool,
			    w->spool_off, EXTRACT_SPOOL);
			xout_push(&v, &n, xasprintf(XOUT_PREFIX "%s.%s_B%s",
			    w->module, kind, w->transpose ? "" : ".weight"),
			    w->out_dtype, w->r.rows, w->r.rank, spool,
			    w->spool_off + (uint64_t)w->r.rank *
			    (uint64_t)w->r.cols * es, EXTRACT_SPOOL);
		} else if (!w->lora) {
			xout_full(x, w, spool, &v, &n);
		}
	}
	qsort(v, n, sizeof *v, xout_cmp);
	for (i = 0; i < n; i++) {
		v[i].t.begin = off;
		off += v[i].t.numel * graph_dtype_size(v[i].t.dtype);
		v[i].t.end = off;
	}
	*out = v;
	return n;
}

/* o's bytes, to out at dst. */
static int
xout_copy(const struct xout *o, int out, uint64_t dst, uint8_t *bounce,
    char **cause)
{
	loff_t s = (loff_t)o->off, d = (loff_t)dst;
	uint64_t len = o->t.end - o->t.begin;
	size_t k;
	ssize_t w;

	while (len > 0) {
		w = copy_file_range(o->fd, &s, out, &d, len, 0);
		if (w == -1 && errno == EINTR)
			continue;
		if (w > 0) {
			len -= (uint64_t)w;
			continue;
		}
		if (w == 0 || (errno != EXDEV && errno != EINVAL &&
		    errno != ENOSYS && errno != EOPNOTSUPP))
			break;
		/* No kernel copy here: bounce through user space. */
		k = len < XOUT_BOUNCE ? (size_t)len : XOUT_BOUNCE;
		w = pread(o->fd, bounce, k, s);
		if (w == -1 && errno == EINTR)
			continue;
		if (w <= 0)
			break;
		if (writer_pwrite(out, bounce, (size_t)w, (uint64_t)d,
		    cause) != 0)
			return -EIO;
		s += w;
		d += w;
		len -= (uint64_t)w;
	}
	if (len == 0)
		return 0;
	*cause = w == 0 ? xasprintf("%s: the file is shorter than its header "
	    "says (was it truncated or replaced meanwhile?)", o->what) :
	    xasprintf("copying from %s: %s%s", o->what, strerror(errno),
	    errno == ENOSPC ? " (the disk is full)" : "");
	return -EIO;
}

/* The file's header, with metadata {"format": "pt"} as mergekit's. */
static uint8_t *
xout_header(const struct xout *v, size_t n, size_t *len)
{
	struct safetensors_tensor *t = xcalloc(n + 1, sizeof *t);
	uint8_t *h;
	size_t i;

	for (i = 0; i < n; i++)
		t[i] = v[i].t;
	h = safetensors_header_build(t, n, len);
	free(t);
	return h;
}

static int
xout_weights(struct graph_extract *x, int dfd, int spool, char **cause)
{
	struct xout *v = NULL;
	uint8_t *header, *bounce;
	size_t n, i, hlen;
	int fd, rc = 0;

	n = xout_list(x, spool, &v);
	header = xout_header(v, n, &hlen);
	if ((fd = writer_create(dfd, "adapter_model.safetensors", x->cred,
	    cause)) < 0) {
		rc = fd;
		goto out;
	}
	bounce = xmalloc(XOUT_BOUNCE);
	rc = writer_pwrite(fd, header, hlen, 0, cause);
	for (i = 0; i < n && rc == 0; i++)
		rc = xout_copy(&v[i], fd, hlen + v[i].t.begin, bounce, cause);
	free(bounce);
	if (rc == 0 && fsync(fd) == -1) {
		rc = -errno;
		*cause = xasprintf("adapter_model.safetensors: fsync: %s",
		    strerror(errno));
	}
	close(fd);
	x->bytes_written = hlen + (n > 0 ? v[n - 1].t.end : 0);
out:
	for (i = 0; i < n; i++)
		free(v[i].t.name);
	free(v);
	free(header);
	return rc;
}

static int
xout_strcmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* A JSON list of names, as Python's json.dump(indent=4) writes it. */
static void
xout_json_list(struct xbuf *b, char *const *v, size_t n)
{
	size_t i;

	if (n == 0) {
		xbuf_add(b, "[]", 2);
		return;
	}
	xbuf_add(b, "[", 1);
	for (i = 0; i < n; i++) {
		xbuf_printf(b, "%s\n        ", i ? "," : "");
		graph_json_string(b, v[i]);
	}
	xbuf_add(b, "\n    ]", 6);
}

/* rank_pattern and alpha_pattern: the modules whose rank is not r. */
static void
xout_json_ranks(struct xbuf *b, const struct graph_extract *x, int64_t r)
{
	const struct xweight *w;
	size_t i;
	bool any = false;

	xbuf_add(b, "{", 1);
	for (i = 0; i < x->nw; i++) {
		w = &x->w[i];
		if (!w->lora || w->r.rank == 0 || w->r.rank == r)
			continue;
		xbuf_printf(b, "%s\n        ", any ? "," : "");
		graph_json_string(b, w->module);
		xbuf_printf(b, ": %" PRId64, w->r.rank);
		any = true;
	}
	xbuf_add(b, any ? "\n    }" : "}", any ? 6 : 1);
}

static char *
xout_config(const struct graph_extract *x)
{
	struct graph_extract_summary s;
	struct xbuf b = { 0 };
	char **targets = NULL;
	const char *leaf;
	size_t i, k, n = 0;

	graph_extract_summary(x, &s);
	for (i = 0; i < x->nw; i++) {
		if (!x->w[i].lora || x->w[i].r.rank == 0)
			continue;
		leaf = strrchr(x->w[i].module, '.');
		leaf = leaf != NULL ? leaf + 1 : x->w[i].module;
		for (k = 0; k < n && strcmp(targets[k], leaf) != 0; k++)
			;
		if (k == n) {
			targets = xgrowarray(targets, n, sizeof *targets);
			targets[n++] = (char *)leaf;
		}
	}
	qsort(targets, n, sizeof *targets, xout_strcmp);
	xbuf_add(&b, "{\n    \"base_model_name_or_path\": ", 33);
	graph_json_string(&b, x->base->ref.path);
	xbuf_printf(&b, ",\n    \"peft_type\": \"LORA\",\n    \"use_rslora\": "
	    "false,\n    \"target_modules\": ");
	xout_json_list(&b, targets, n);
	xbuf_printf(&b, ",\n    \"modules_to_save\": ");
	xout_json_list(&b, x->save, x->nsave);
	xbuf_printf(&b, ",\n    \"task_type\": \"CAUSAL_LM\",\n    \"r\": %"
	    PRId64 ",\n    \"lora_alpha\": %" PRId64 ",\n    "
	    "\"rank_pattern\": ", s.rank, s.rank);
	xout_json_ranks(&b, x, s.rank);
	xbuf_printf(&b, ",\n    \"alpha_pattern\": ");
	xout_json_ranks(&b, x, s.rank);
	xbuf_printf(&b, ",\n    \"lora_dropout\": 0.0,\n    "
	    "\"fan_in_fan_out\": false,\n    \"inference_mode\": true\n}");
	free(targets);
	return xbuf_take(&b);
}

/*
 * mergekit's "this reference is a Hub repository": not a path ("/", "~",
 * ".", or more than one slash), and found in the Hugging Face cache.
 */
static bool
xout_hub(const char *path, const struct graph_resolved *r)
{
	const char *slash = strchr(path, '/');

	if (path[0] == '/' || path[0] == '~' || path[0] == '.')
		return false;
	if (slash != NULL && strchr(slash + 1, '/') != NULL)
		return false;
	return strcmp(r->root, r->dir) != 0;
}

static void
xout_link(struct xbuf *b, const char *path, const struct graph_resolved *r)
{
	if (xout_hub(path, r))
		xbuf_printf(b, "[%s](https://huggingface.co/%s)", path, path);
	else
		xbuf_printf(b, "%s", path);
}

/* mergekit's modelref_md: the model, and " + " its adapter. */
static void
xout_model_md(struct xbuf *b, const struct model *m)
{
	xout_link(b, m->ref.path, &m->where);
	if (m->lora != NULL) {
		xbuf_printf(b, " + ");
		xout_link(b, m->ref.lora, &m->lora->where);
	}
}

/* The front matter's base_model list: yaml.dump's block list. */
static void
xout_hub_list(struct xbuf *b, const struct model *m, bool *any)
{
	if (xout_hub(m->ref.path, &m->where)) {
		xbuf_printf(b, "%s- %s\n", *any ? "" : "base_model:\n",
		    m->ref.path);
		*any = true;
	}
	if (m->lora != NULL && xout_hub(m->ref.lora, &m->lora->where)) {
		xbuf_printf(b, "%s- %s\n", *any ? "" : "base_model:\n",
		    m->ref.lora);
		*any = true;
	}
}

/* README.md: mergekit's generate_card_lora, and how it was extracted. */
static char *
xout_card(const struct graph_extract *x, const char *title)
{
	struct graph_extract_summary s;
	struct xbuf b = { 0 };
	bool any = false;

	graph_extract_summary(x, &s);
	xbuf_add(&b, "---\n", 4);
	xout_hub_list(&b, x->base, &any);
	xout_hub_list(&b, x->ft, &any);
	xbuf_printf(&b, "%slibrary_name: peft\ntags:\n- mergekit\n- peft\n"
	    "---\n# %s\n\nThis is a LoRA extracted from a language model. It "
	    "was extracted using [mergekit](https://github.com/arcee-ai/"
	    "mergekit).\n\n## LoRA Details\n\nThis LoRA adapter was "
	    "extracted from ", any ? "" : "base_model: []\n", title != NULL &&
	    title[0] != '\0' ? title : "Untitled LoRA Model (1)");
	xout_model_md(&b, x->ft);
	xbuf_printf(&b, " and uses ");
	xout_model_md(&b, x->base);
	xbuf_printf(&b, " as a base.");
	if (x->ft_vocab > 0 && x->base_vocab > 0 &&
	    x->ft_vocab != x->base_vocab)
		xbuf_printf(&b, "\n\n [!WARNING]\n> The vocabulary size has "
		    "been %s from the base model's %" PRId64 " to %" PRId64
		    ". To load this adapter, you must first call "
		    "`model.resize_token_embeddings(%" PRId64 ")`.",
		    x->ft_vocab > x->base_vocab ? "extended" : "reduced",
		    x->base_vocab, x->ft_vocab, x->ft_vocab);
	/* Ours: how, and what the adapter misses of the task vectors. */
	xbuf_printf(&b, "\n\nExtracted with mergectl extract-lora, ");
	if (x->fast)
		xbuf_printf(&b, "by randomized SVD (random seed %" PRIu64 ", "
		    "%d power iterations, oversampling %d)", x->seed,
		    x->power_iters, x->oversample);
	else
		xbuf_printf(&b, "by exact SVD (LAPACK sgesdd)");
	xbuf_printf(&b, ": relative error %.6g (the Frobenius norm of "
	    "what the adapter misses of the task vectors, over theirs).\n\n"
	    "### Parameters\n\nThe following command was used to extract "
	    "this LoRA adapter:\n\n```sh\n%s\n```\n", s.rel_error,
	    x->invocation);
	return xbuf_take(&b);
}

int
extract_write(struct graph_extract *x, int stage_fd, int spool_fd,
    const char *title, char **cause)
{
	char *text;
	int rc;

	if ((rc = xout_weights(x, stage_fd, spool_fd, cause)) != 0)
		return rc;
	text = xout_config(x);
	rc = writer_file(stage_fd, "adapter_config.json", text, strlen(text),
	    x->cred, cause);
	free(text);
	if (rc != 0 || !x->model_card)
		return rc;
	text = xout_card(x, title);
	rc = writer_file(stage_fd, "README.md", text, strlen(text), x->cred,
	    cause);
	free(text);
	return rc;
}
