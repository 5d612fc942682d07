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
		if (t->method == &method_copy && !t->in[0].rectified &&
		    t->vperm == NULL && t->in[0].mt->delta == NULL &&
		    t->in[0].mt->t->dtype == t->out_dtype)
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
plan_layout(struct graph_plan *p, struct graph_diags *d)
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
	(void)d;
	return 0;
}
