/* SPDX-License-Identifier: MIT */
/*
 * op-list.c: the queue table, a page at a time.  Every user sees every
 * job, but only the public fields of other users' jobs (no config, paths
 * or errors), and the daemon's shared figures: memory budget and use,
 * decoded-input cache, jobs running and queued.
 *
 * A reply once held every job ever recorded, and a line is capped at
 * PROTO_MAX_LINE: one job with a 320,000-byte name, or about 1,400
 * ordinary ones, made it too long for any client, for good.  Now a page
 * holds the newest PROTO_LIST_MAX matching jobs below the "before"
 * cursor, and no more than PROTO_LIST_MAX_BYTES of them: since no job's
 * object exceeds PROTO_MAX_JOB_JSON (op_job_json bounds every string), a
 * reply stays well under the line limit whatever the daemon keeps.
 * "more" says that older matching jobs remain; "before" is the cursor
 * for them.  Jobs go out in id order, oldest first, as they always did.
 */
#include <limits.h>
#include <stdlib.h>
#include <unistd.h>

#include <cJSON.h>

#include "daemon.h"
#include "xmalloc.h"

_Static_assert(PROTO_MAX_JOB_JSON < PROTO_LIST_MAX_BYTES,
    "a list page must have room for the largest job");
_Static_assert(PROTO_LIST_MAX_BYTES + 4096 < PROTO_MAX_LINE,
    "a list page must fit a line, with the envelope and figures");

/* The request's filters. */
struct list_query {
	uint64_t before;	/* ids below this; UINT64_MAX: all */
	size_t limit;
	unsigned states;	/* bit set of enum job_state */
};

/* Reads the optional fields; false after replying an error. */
static bool
list_query(struct op_ctx *o, struct list_query *q)
{
	const cJSON *v, *s;
	enum job_state st;
	char *names;
	uint64_t u;

	q->before = msg_get_u64(o->req, PROTO_F_BEFORE, &u) ? u : UINT64_MAX;
	q->limit = msg_get_u64(o->req, PROTO_F_LIMIT, &u) && u > 0 &&
	    u <= PROTO_LIST_MAX ? (size_t)u : PROTO_LIST_MAX;
	q->states = ~0u;
	v = cJSON_GetObjectItemCaseSensitive(o->req, PROTO_F_STATES);
	if (!cJSON_IsArray(v))
		return true;
	q->states = 0;
	cJSON_ArrayForEach(s, v) {
		if (!cJSON_IsString(s) || proto_state_parse(s->valuestring,
		    &st) != 0) {
			names = proto_state_names(0, ", ", ", ");
			op_error(o, PROTO_E_BAD_REQUEST, "'states' must list "
			    "job states: %s", names);
			free(names);
			return false;
		}
		q->states |= 1u << st;
	}
	return true;
}

/* The bytes j's object takes on the wire. */
static size_t
list_job_len(const cJSON *j)
{
	size_t len = 0;
	char *s = msg_print(j, &len);

	free(s);
	return len;
}

/*
 * Fills arr with the page: the newest matching jobs first, while they
 * fit, then put in id order.  Returns whether older matching ones remain.
 */
static bool
list_page(struct op_ctx *o, const struct list_query *q, cJSON *arr,
    uint64_t *first)
{
	struct djob *j, **v;
	cJSON **page;
	size_t n = 0, np = 0, bytes = 0, len;
	bool more;

	for (j = o->c->d->jobs; j != NULL; j = j->next)
		n++;
	v = xcalloc(n + 1, sizeof *v);
	n = 0;
	for (j = o->c->d->jobs; j != NULL && j->id < q->before; j = j->next)
		if (q->states & 1u << j->state)
			v[n++] = j;
	page = xcalloc(q->limit, sizeof *page);
	while (n > 0 && np < q->limit) {
		j = v[n - 1];
		page[np] = op_job_json(j, peer_may_act(&o->c->peer, j));
		len = list_job_len(page[np]) + 1;	/* and a comma */
		/* The first always fits (PROTO_MAX_JOB_JSON): a page is
		 * never empty while jobs remain, so the cursor moves. */
		if (np > 0 && bytes + len > PROTO_LIST_MAX_BYTES) {
			cJSON_Delete(page[np]);
			break;
		}
		bytes += len;
		*first = j->id;
		np++;
		n--;
	}
	more = n > 0;
	while (np > 0)
		cJSON_AddItemToArray(arr, page[--np]);
	free(page);
	free(v);
	return more;
}

/*
 * Who and where the daemon is, for "daemon status": its version, pid,
 * socket, state directory, where its log goes (stderr's file, or what
 * stderr is), uptime, --max-running and its jobs by state.
 */
static void
list_about(struct daemon *dm, cJSON *d)
{
	char link[PATH_MAX], *url;
	size_t counts[JOB_NSTATES] = { 0 };
	enum job_state s;
	const struct djob *j;
	ssize_t n;
	cJSON *by;

	cJSON_AddStringToObject(d, PROTO_F_SERVER, "merged " GRAPH_VERSION);
	cJSON_AddNumberToObject(d, PROTO_F_PID, (double)getpid());
	cJSON_AddStringToObject(d, PROTO_F_MODE, dm->opts.team ? "team" :
	    "personal");
	cJSON_AddStringToObject(d, PROTO_F_SOCKET, dm->opts.socket);
	url = http_url(dm);
	cJSON_AddStringToObject(d, PROTO_F_HTTP, url);
	free(url);
	cJSON_AddStringToObject(d, PROTO_F_STATE_DIR, dm->opts.state_dir);
	n = readlink("/proc/self/fd/2", link, sizeof link - 1);
	link[n > 0 ? n : 0] = '\0';
	cJSON_AddStringToObject(d, PROTO_F_LOG, n > 0 ? link : "");
	cJSON_AddNumberToObject(d, PROTO_F_UPTIME, daemon_now() - dm->since);
	cJSON_AddNumberToObject(d, PROTO_F_MAX_RUNNING, dm->opts.max_running);
	for (j = dm->jobs; j != NULL; j = j->next)
		counts[j->state]++;
	by = cJSON_AddObjectToObject(d, PROTO_F_BY_STATE);
	for (s = 0; s < JOB_NSTATES; s++)
		cJSON_AddNumberToObject(by, proto_state_name(s),
		    (double)counts[s]);
}

static void
op_list_fn(struct op_ctx *o)
{
	struct list_query q;
	struct graph_exec_stats st;
	struct djob *j;
	uint64_t first = 0;
	size_t queued = 0;
	cJSON *r, *d;
	bool more;

	if (!list_query(o, &q))
		return;
	r = msg_reply(o->id);
	more = list_page(o, &q, cJSON_AddArrayToObject(r, PROTO_F_JOBS),
	    &first);
	cJSON_AddBoolToObject(r, PROTO_F_MORE, more);
	if (first != 0)
		cJSON_AddNumberToObject(r, PROTO_F_BEFORE, (double)first);
	for (j = o->c->d->jobs; j != NULL; j = j->next)
		queued += j->state == JOB_QUEUED;
	/* The box-wide figures everyone shares. */
	graph_exec_stats(o->c->d->exec, &st);
	d = cJSON_AddObjectToObject(r, PROTO_F_DAEMON);
	cJSON_AddNumberToObject(d, PROTO_F_MEMORY_BUDGET, (double)st.budget);
	cJSON_AddNumberToObject(d, PROTO_F_MEMORY_USED, (double)st.used);
	cJSON_AddNumberToObject(d, PROTO_F_MEMORY_PEAK, (double)st.peak);
	cJSON_AddNumberToObject(d, PROTO_F_CACHED_BYTES, (double)st.cached);
	cJSON_AddNumberToObject(d, PROTO_F_CACHE_HITS, (double)st.cache_hits);
	cJSON_AddNumberToObject(d, PROTO_F_CACHE_MISSES,
	    (double)st.cache_misses);
	cJSON_AddNumberToObject(d, PROTO_F_RUNNING, (double)o->c->d->nrunning);
	cJSON_AddNumberToObject(d, PROTO_F_QUEUED, (double)queued);
	list_about(o->c->d, d);
	op_reply(o, r);
}

const struct op_entry op_list = { PROTO_OP_LIST, true, op_list_fn };
