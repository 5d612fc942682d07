/* SPDX-License-Identifier: MIT */
/*
 * op-watch.c: stream a job's progress.  The reply comes first, then
 * "progress" events as the job moves (at most five a second), then one
 * "done" event with the final state; all carry the watch request's id.
 * A watch refers to its connection by id, so a client that goes away
 * just stops being written to.  The events themselves are sent by
 * watch.c, which every change of a job reaches through d->job_changed.
 */
#include <cJSON.h>

#include "daemon.h"
#include "xmalloc.h"

static size_t
watches_of(const struct daemon *d, uint64_t conn)
{
	const struct watch *w;
	size_t n = 0;

	for (w = d->watches; w != NULL; w = w->next)
		n += w->conn == conn;
	return n;
}

static void
op_watch_fn(struct op_ctx *o)
{
	struct daemon *d = o->c->d;
	struct watch *w;
	struct djob *j;

	if ((j = op_job(o, false)) == NULL)
		return;
	if (watches_of(d, o->c->id) >= PROTO_MAX_INFLIGHT) {
		op_error(o, PROTO_E_LIMIT, "at most %d watches per connection",
		    PROTO_MAX_INFLIGHT);
		return;
	}
	w = xcalloc(1, sizeof *w);
	w->conn = o->c->id;
	w->req = o->id;
	w->job = j->id;
	w->next = d->watches;
	d->watches = w;
	op_reply(o, msg_reply(o->id));
	/* The current state at once; a finished job ends the watch. */
	watch_job_changed(d, j, proto_state_final(j->state));
}

const struct op_entry op_watch = { PROTO_OP_WATCH, true, op_watch_fn };
