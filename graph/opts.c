/* SPDX-License-Identifier: MIT */
/*
 * opts.c: the merge options' defaults, the one place they are set.
 *
 * mergectl run, plan and submit and the daemon all start from
 * graph_merge_opts_default(), and every budget that nobody gave starts
 * from graph_default_memory(): a merge sized to fit `mergectl run` fits
 * the daemon too, and the docs state one default.
 */
#include <string.h>

#include <uv.h>

#include "graph-int.h"

/* A quarter of physical memory: room for the page cache, the other users
 * of the box and the rest. */
uint64_t
graph_default_memory(void)
{
	uint64_t m = uv_get_total_memory() / 4;

	return m < (256ull << 20) ? 256ull << 20 : m;
}

void
graph_merge_opts_default(struct graph_merge_opts *o)
{
	memset(o, 0, sizeof *o);
	o->shard_size = 5000000000ull;	/* mergekit's 5B, decimal */
	o->copy_tokenizer = true;
	o->model_card = true;
}
