/* SPDX-License-Identifier: MIT */
/*
 * op-clean.c: forget many finished jobs at once: the caller's own, or
 * everyone's for root, finished at least "older_than" seconds ago, in
 * the given states (done, failed, cancelled; all three by default).
 *
 * A request removes at most PROTO_CLEAN_MAX jobs, one store transaction,
 * so that it is a short stay on the loop; "more" tells the client to ask
 * again.  Jobs an unfinished job runs after are kept, and not counted in
 * "more".  Since a mistyped filter would widen what is deleted, a filter
 * of the wrong type is refused, not ignored as other optional fields are.
 */
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>

#include "daemon.h"
#include "xmalloc.h"

/* What the request asks to remove. */
struct clean_filter {
	const struct peer *peer;
	unsigned states;	/* bit set of enum job_state */
	double cutoff;		/* finished at or before */
};

/* The states asked for, as a bit set of enum job_state; 0 on error. */
static unsigned
clean_states(struct op_ctx *o)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o->req,
	    PROTO_F_STATES),
	    *s;
	enum job_state st;
	unsigned set = 0;

	if (v == NULL) {
		for (st = 0; st < JOB_NSTATES; st++)
			set |= proto_state_removable(st) ? 1u << st : 0;
		return set;
	}
	if (!cJSON_IsArray(v))
		return 0;
	cJSON_ArrayForEach(s, v) {
		if (!cJSON_IsString(s) || proto_state_parse(s->valuestring,
		    &st) != 0 || !proto_state_removable(st))
			return 0;
		set |= 1u << st;
	}
	return set;
}

static bool
clean_match(const struct djob *j, void *arg)
{
	const struct clean_filter *f = arg;

	return peer_may_act(f->peer, j) && (f->states & 1u << j->state) &&
	    j->finished <= f->cutoff;
}

static void
op_clean_fn(struct op_ctx *o)
{
	struct daemon *d = o->c->d;
	struct clean_filter f = { &o->c->peer, 0, 0 };
	struct djob **v;
	uint64_t older = 0;
	bool more;
	size_t n;
	cJSON *r;

	if (cJSON_GetObjectItemCaseSensitive(o->req,
	    PROTO_F_OLDER_THAN) != NULL &&
	    !msg_get_u64(o->req, PROTO_F_OLDER_THAN, &older)) {
		op_error(o, PROTO_E_BAD_REQUEST, "'older_than' must be a number "
		    "of seconds");
		return;
	}
	if ((f.states = clean_states(o)) == 0) {
		op_error(o, PROTO_E_BAD_REQUEST, "'states' must list finished "
		    "states: done, failed, cancelled");
		return;
	}
	f.cutoff = daemon_now() - (double)older;
	v = xcalloc(PROTO_CLEAN_MAX, sizeof *v);
	n = retain_select(d, clean_match, &f, v, PROTO_CLEAN_MAX, &more);
	if (retain_remove(d, v, n) != 0) {
		free(v);
		op_error(o, PROTO_E_INTERNAL, "cannot remove jobs from the "
		    "store");
		return;
	}
	free(v);
	if (n > 0)
		log_info("clean: uid %u removed %zu jobs",
		    (unsigned)o->c->peer.uid, n);
	r = msg_reply(o->id);
	cJSON_AddNumberToObject(r, PROTO_F_REMOVED, (double)n);
	cJSON_AddBoolToObject(r, PROTO_F_MORE, more);
	op_reply(o, r);
}

const struct op_entry op_clean = { PROTO_OP_CLEAN, true, op_clean_fn };
