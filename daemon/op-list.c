/* SPDX-License-Identifier: MIT */
/*
 * op-list.c: the queue table.  Every user sees every job, but only the
 * public fields of other users' jobs (no config, paths or errors), and
 * the daemon's shared figures: memory budget and use, decoded-input
 * cache.
 */
#include <cJSON.h>

#include "daemon.h"

static void
op_list_fn(struct op_ctx *o)
{
	cJSON *r = msg_reply(o->id), *arr = cJSON_AddArrayToObject(r, "jobs");
	struct graph_exec_stats st;
	struct djob *j;
	cJSON *d;

	for (j = o->c->d->jobs; j != NULL; j = j->next)
		cJSON_AddItemToArray(arr, op_job_json(j, peer_may_act(
		    &o->c->peer, j)));
	/* The box-wide figures everyone shares. */
	graph_exec_stats(o->c->d->exec, &st);
	d = cJSON_AddObjectToObject(r, "daemon");
	cJSON_AddNumberToObject(d, "memory_budget", (double)st.budget);
	cJSON_AddNumberToObject(d, "memory_used", (double)st.used);
	cJSON_AddNumberToObject(d, "memory_peak", (double)st.peak);
	cJSON_AddNumberToObject(d, "cached_bytes", (double)st.cached);
	cJSON_AddNumberToObject(d, "cache_hits", (double)st.cache_hits);
	cJSON_AddNumberToObject(d, "cache_misses", (double)st.cache_misses);
	cJSON_AddNumberToObject(d, "running", (double)o->c->d->nrunning);
	op_reply(o, r);
}

const struct op_entry op_list = { "list", true, op_list_fn };
