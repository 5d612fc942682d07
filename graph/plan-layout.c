/* SPDX-License-Identifier: MIT */
/*
 * plan-layout.c: the output shard layout, fixed at plan time.
 *
 * Tensors are assigned to shards in natural order (Part A item 14) with
 * mergekit's rule (Part B 5.4): a new shard starts when the current one is
 * not empty and adding the tensor would exceed the limit (strictly
 * greater).  Because every shape and dtype is known here, each shard's
 * header, size and every tensor's file offset are computed now: workers
 * then write any chunk of any tensor at its final place in any order, and
 * a resumed job knows which files are whole.  One shard is named
 * model.safetensors; several are model-0000k-of-0000n.safetensors.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "graph-int.h"

static void
layout_shard_header(struct graph_plan *p, struct plan_shard *sh)
{
	struct safetensors_tensor *st;
	uint64_t off = 0;
	size_t i;

	st = xcalloc(sh->n + 1, sizeof *st);
	for (i = 0; i < sh->n; i++) {
		const struct plan_tensor *t = &p->tensors[sh->first + i];
		st[i].name = t->name;
		st[i].dtype = t->out_dtype;
		st[i].ndim = t->ndim;
		memcpy(st[i].shape, t->shape, sizeof st[i].shape);
		st[i].begin = off;
		st[i].end = off + t->nbytes;
		off += t->nbytes;
	}
	sh->header = safetensors_header_build(st, sh->n, &sh->header_len);
	sh->size = sh->header_len + off;
	off = sh->header_len;
	for (i = 0; i < sh->n; i++) {
		p->tensors[sh->first + i].offset = off;
		off += p->tensors[sh->first + i].nbytes;
	}
	free(st);
}

uint64_t
plan_tensor_min_unit(const struct plan_tensor *pt)
{
	return pt->quantum * ((uint64_t)pt->nin * sizeof(float) +
	    sizeof(float) + graph_dtype_size(pt->out_dtype)) +
	    GRAPH_WRITE_ALIGN + pt->ms.scratch;
}

size_t
plan_tensor_npartials(const struct plan_tensor *pt)
{
	return pt->ms.rows ? (size_t)pt->rows :
	    (size_t)((pt->numel + pt->quantum - 1) / pt->quantum);
}

/* A tensor's state, with its cache when the plan gave it one. */
size_t
plan_tensor_state_bytes(const struct plan_tensor *pt)
{
	return pt->ms.state_size + (pt->ms.cache_on ? pt->ms.cache_size : 0);
}

uint64_t
plan_tensor_held(const struct plan_tensor *pt)
{
	if (plan_tensor_is_copy(pt))
		return 0;
	return plan_tensor_state_bytes(pt) +
	    (uint64_t)plan_tensor_npartials(pt) * (uint64_t)pt->ms.nred *
	    sizeof(double);
}

/*
 * Each method cache the budget has room for: at most a quarter of the
 * executor's budget, and the tensor's least need with it within the
 * budget.  Decided after the least memory, which never counts a cache:
 * a small budget recomputes instead of being refused.
 */
static void
layout_caches(struct graph_plan *p)
{
	uint64_t budget = exec_budget_of(p->memory), need;
	struct plan_tensor *t;
	size_t i;

	for (i = 0; i < p->ntensors; i++) {
		t = &p->tensors[i];
		t->ms.cache_on = false;
		if (t->ms.cache_size == 0 || plan_tensor_is_copy(t))
			continue;
		need = plan_tensor_min_unit(t) + plan_tensor_held(t) +
		    t->ms.cache_size;
		t->ms.cache_on = t->ms.cache_size <= budget / 4 &&
		    need <= budget;
	}
}

/*
 * The least memory the plan runs in: its hungriest tensor's smallest
 * unit and what the tensor holds throughout, within the executor's
 * budget of that memory.  The executor admits by the same functions, so
 * a merge the plan accepts never fails for its memory.
 */
static void
layout_min_memory(struct graph_plan *p, const char *const *fused,
    size_t nfused)
{
	const struct plan_tensor *t;
	uint64_t need, most = 0;
	size_t i;

	p->min_tensor = (size_t)-1;
	for (i = 0; i < p->ntensors; i++) {
		t = &p->tensors[i];
		if (plan_tensor_is_copy(t) && !fuse_computes(p, t, fused,
		    nfused))
			continue;
		need = plan_tensor_min_unit(t) + plan_tensor_held(t);
		if (need > most) {
			most = need;
			p->min_tensor = i;
		}
	}
	p->min_memory = exec_memory_for(most);
}

/* A budget below the minimum fails when it runs: refused now. */
static bool
layout_check_memory(const struct graph_plan *p, const char *file,
    struct graph_diags *d)
{
	const struct graph_plan_opts *o = &p->opts;
	char *m, *need;
	bool cap;

	if (p->memory >= p->min_memory)
		return true;
	cap = o->merge.memory != 0 && o->merge.memory == p->memory;
	m = graph_format_size(p->memory);
	need = graph_format_size(p->min_memory);
	graph_diag_add(d, GRAPH_SEV_ERROR, file, "%s %s is too small for "
	    "this merge: it needs at least %s, %" PRIu64 " bytes (for %s)%s",
	    cap ? "--memory" :
	    o->budget_shared ? "the daemon's memory budget" : "the memory "
	    "budget", m, need, p->min_memory, p->tensors[p->min_tensor].name,
	    cap ? "" :
	    o->budget_shared ? "; merged --memory sets it" : "; give --memory");
	free(m);
	free(need);
	return false;
}

static void
layout_estimate(struct graph_plan *p)
{
	uint64_t decoded = 0, biggest = 0, out;
	size_t i, j;

	p->total_in = 0;
	for (i = 0; i < p->ntensors; i++) {
		const struct plan_tensor *t = &p->tensors[i];
		for (j = 0; j < t->nin; j++)
			p->total_in += (uint64_t)t->in[j].rows *
			    (uint64_t)t->in[j].cols *
			    graph_dtype_size(t->in[j].mt->t->dtype);
		/* Byte copies go file to file and hold no memory. */
		if (plan_tensor_is_copy(t))
			continue;
		decoded += t->numel * 4 * t->nin;
		out = t->numel * 4 * (t->nin + 1);
		if (out > biggest)
			biggest = out;
	}
	/* The cache keeps decoded inputs until the budget is full. */
	p->peak_memory = decoded + biggest;
	if (p->memory > 0 && p->peak_memory > p->memory)
		p->peak_memory = p->memory;
}

int
plan_layout(struct graph_plan *p, const char *file, struct graph_diags *d)
{
	struct plan_shard *sh = NULL;
	uint64_t cur = 0, max = p->opts.merge.shard_size;
	size_t i, n = 0;

	for (i = 0; i < p->ntensors; i++) {
		struct plan_tensor *t = &p->tensors[i];
		t->nbytes = t->numel * graph_dtype_size(t->out_dtype);
		if (sh == NULL || (sh->n > 0 && max > 0 && cur + t->nbytes > max)) {
			p->shards = xreallocarray(p->shards, n + 1,
			    sizeof *p->shards);
			sh = &p->shards[n++];
			memset(sh, 0, sizeof *sh);
			sh->first = i;
			cur = 0;
		}
		t->shard = n - 1;
		sh->n++;
		cur += t->nbytes;
	}
	p->nshards = n;
	p->total_out = 0;
	for (i = 0; i < n; i++) {
		p->shards[i].name = n == 1 ? xstrdup("model.safetensors") :
		    xasprintf("model-%05zu-of-%05zu.safetensors", i + 1, n);
		layout_shard_header(p, &p->shards[i]);
		p->total_out += p->shards[i].size - p->shards[i].header_len;
	}
	layout_estimate(p);
	return plan_layout_memory(p, NULL, 0, file, d);
}

/*
 * The plan's least memory, and its budget checked against it: at layout;
 * when the pipeline is planned with the stages fused into p (their refs,
 * whose tensors p copies it will compute); and once fuse_link has linked
 * them (nfused 0: the links say it).
 */
int
plan_layout_memory(struct graph_plan *p, const char *const *fused,
    size_t nfused, const char *file, struct graph_diags *d)
{
	size_t i;

	/* The least memory without caches. */
	for (i = 0; i < p->ntensors; i++)
		p->tensors[i].ms.cache_on = false;
	layout_min_memory(p, fused, nfused);
	if (!layout_check_memory(p, file, d))
		return -EINVAL;
	layout_caches(p);
	return 0;
}
