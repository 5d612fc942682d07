/* SPDX-License-Identifier: MIT */
/*
 * exec-lease.c: memory of the executor's budget lent to work that is not
 * a merge (an extraction's weights, graph/extract-run.c), so that one
 * budget bounds everything a daemon runs.
 *
 * A lease is granted when its bytes fit beside what the merges hold,
 * after evicting unpinned cache entries; leases are granted in request
 * order.  While one waits, no merge starts a new tensor (units of the
 * tensors already started still run, or their held state would never be
 * freed): the merges drain to the point where the lease fits, so a lease
 * cannot be starved by a stream of merge units, and it cannot deadlock
 * with them.  Granted bytes count in ex->used like a unit's, so status
 * and the RSS bound see them.  Loop thread only.
 */
#include <errno.h>
#include <stdlib.h>

#include "exec-int.h"

struct graph_lease {
	struct graph_exec *ex;
	uint64_t bytes;
	bool granted;
	graph_lease_cb cb;
	void *arg;
	struct graph_lease *next;	/* waiting, in request order */
};

/* Takes l's bytes if they fit now, evicting cache entries to make room. */
static bool
lease_fits(struct graph_exec *ex, struct graph_lease *l)
{
	uint64_t total;

	if (l->bytes > ex->budget - ex->used)
		mem_give(ex, cache_evict(&ex->cache, l->bytes - (ex->budget -
		    ex->used)));
	if (l->bytes > ex->budget - ex->used)
		return false;
	mem_take(ex, l->bytes);
	/* Free pooled buffers count against RSS too. */
	total = ex->used + ex->pool.bytes;
	if (total > ex->budget)
		bufpool_trim(&ex->pool, total - ex->budget);
	l->granted = true;
	ex->leased += l->bytes;
	return true;
}

/*
 * Grants the waiting leases that fit, oldest first; calls their callbacks
 * after the queue is consistent, as a callback may ask for more.
 */
void
lease_grant(struct graph_exec *ex)
{
	struct graph_lease *l;

	while ((l = ex->lease_head) != NULL && lease_fits(ex, l)) {
		ex->lease_head = l->next;
		if (ex->lease_head == NULL)
			ex->lease_tail = NULL;
		l->next = NULL;
		l->cb(l, l->arg);
	}
}

int
graph_exec_lease(struct graph_exec *ex, uint64_t bytes, graph_lease_cb cb,
    void *arg, struct graph_lease **out, char **cause)
{
	struct graph_lease *l;
	char *a, *b;

	*out = NULL;
	if (bytes > ex->budget) {
		a = graph_format_size(bytes);
		b = graph_format_size(ex->budget);
		*cause = xasprintf("memory budget %s is too small: it needs %s",
		    b, a);
		free(a);
		free(b);
		return -ENOMEM;
	}
	l = xcalloc(1, sizeof *l);
	l->ex = ex;
	l->bytes = bytes;
	l->cb = cb;
	l->arg = arg;
	*out = l;
	if (ex->lease_head == NULL && lease_fits(ex, l))
		return 1;
	if (ex->lease_tail != NULL)
		ex->lease_tail->next = l;
	else
		ex->lease_head = l;
	ex->lease_tail = l;
	return 0;
}

void
graph_exec_lease_free(struct graph_lease *l)
{
	struct graph_exec *ex;
	struct graph_lease **pp, *prev = NULL;

	if (l == NULL)
		return;
	ex = l->ex;
	if (l->granted) {
		mem_give(ex, l->bytes);
		ex->leased -= l->bytes;
	} else {
		for (pp = &ex->lease_head; *pp != NULL; pp = &(*pp)->next) {
			if (*pp == l) {
				*pp = l->next;
				break;
			}
			prev = *pp;
		}
		if (ex->lease_tail == l)
			ex->lease_tail = prev;
	}
	free(l);
	/* What it held or blocked may let merges and other leases go. */
	exec_kick(ex);
}
