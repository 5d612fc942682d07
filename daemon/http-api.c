/* SPDX-License-Identifier: MIT */
/*
 * http-api.c: the status page's JSON (merged --http), and the history
 * it charts.
 *
 * /api/jobs mirrors "mergectl status --json" as a user who owns none of
 * the jobs sees it: the jobs not finished and the latest finished ones
 * (HTTP_RECENT), each in op_job_json's public form (ids, owners, names,
 * states, progress, memory, times, a queued job's position and reason;
 * never a config, path, error or log), and the daemon's shared figures
 * without its paths.  /api/history is the memory in use, sampled every
 * --sample-interval into the store (kept a week: the chart shows six
 * hours), and the jobs finished on each of the last seven days, counted
 * from the jobs the store still keeps (--keep-finished).
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cJSON.h>

#include "daemon.h"
#include "http.h"
#include "xmalloc.h"

/* Finished jobs shown besides the live ones. */
#define HTTP_RECENT 50
/* Samples kept, and those sent (the chart's six hours). */
#define HTTP_KEEP_SECONDS (7 * 86400.0)
#define HTTP_SEND_SECONDS (6 * 3600.0)
#define HTTP_DAYS 7

static void
api_daemon(struct daemon *d, cJSON *o)
{
	size_t counts[JOB_NSTATES] = { 0 };
	struct graph_exec_stats st;
	const struct djob *j;
	enum job_state s;
	cJSON *by;

	graph_exec_stats(d->exec, &st);
	for (j = d->jobs; j != NULL; j = j->next)
		counts[j->state]++;
	cJSON_AddStringToObject(o, PROTO_F_SERVER, "merged " GRAPH_VERSION);
	cJSON_AddNumberToObject(o, PROTO_F_UPTIME, daemon_now() - d->since);
	cJSON_AddNumberToObject(o, PROTO_F_MEMORY_BUDGET, (double)st.budget);
	cJSON_AddNumberToObject(o, PROTO_F_MEMORY_USED, (double)st.used);
	cJSON_AddNumberToObject(o, PROTO_F_MEMORY_PEAK, (double)st.peak);
	cJSON_AddNumberToObject(o, PROTO_F_RUNNING, (double)d->nrunning);
	cJSON_AddNumberToObject(o, PROTO_F_QUEUED,
	    (double)counts[JOB_QUEUED]);
	cJSON_AddNumberToObject(o, PROTO_F_MAX_RUNNING, d->opts.max_running);
	by = cJSON_AddObjectToObject(o, PROTO_F_BY_STATE);
	for (s = 0; s < JOB_NSTATES; s++)
		cJSON_AddNumberToObject(by, proto_state_name(s),
		    (double)counts[s]);
}

char *
http_api_jobs(struct daemon *d)
{
	cJSON *r = cJSON_CreateObject(), *arr;
	const struct djob *j;
	size_t finished = 0, skip;
	char *s;

	cJSON_AddNumberToObject(r, "now", daemon_now());
	api_daemon(d, cJSON_AddObjectToObject(r, PROTO_F_DAEMON));
	for (j = d->jobs; j != NULL; j = j->next)
		finished += proto_state_final(j->state);
	/* The oldest finished ones are left out. */
	skip = finished > HTTP_RECENT ? finished - HTTP_RECENT : 0;
	arr = cJSON_AddArrayToObject(r, PROTO_F_JOBS);
	for (j = d->jobs; j != NULL; j = j->next) {
		if (proto_state_final(j->state) && skip > 0) {
			skip--;
			continue;
		}
		cJSON_AddItemToArray(arr, op_job_json(j, false));
	}
	s = cJSON_PrintUnformatted(r);
	cJSON_Delete(r);
	return s;
}

/* The local day of t, "2026-12-06". */
static void
api_day(double t, char *buf, size_t len)
{
	time_t s = (time_t)t;
	struct tm tm;

	if (localtime_r(&s, &tm) == NULL)
		snprintf(buf, len, "?");
	else
		strftime(buf, len, "%Y-%m-%d", &tm);
}

char *
http_api_history(struct daemon *d)
{
	cJSON *r = cJSON_CreateObject(), *days, *o;
	struct graph_exec_stats st;
	double now = daemon_now();
	size_t done[HTTP_DAYS] = { 0 }, failed[HTTP_DAYS] = { 0 };
	const struct djob *j;
	char day[HTTP_DAYS][16], jday[16];
	int i;
	char *s;

	graph_exec_stats(d->exec, &st);
	cJSON_AddNumberToObject(r, "now", now);
	cJSON_AddNumberToObject(r, "budget", (double)st.budget);
	store_samples(d->store, now - HTTP_SEND_SECONDS,
	    cJSON_AddArrayToObject(r, "samples"));
	for (i = 0; i < HTTP_DAYS; i++)
		api_day(now - (HTTP_DAYS - 1 - i) * 86400.0, day[i],
		    sizeof day[i]);
	for (j = d->jobs; j != NULL; j = j->next) {
		if (!proto_state_final(j->state) || j->finished <
		    now - HTTP_DAYS * 86400.0)
			continue;
		api_day(j->finished, jday, sizeof jday);
		for (i = 0; i < HTTP_DAYS; i++)
			if (strcmp(jday, day[i]) == 0) {
				done[i] += j->state == JOB_DONE;
				failed[i] += j->state == JOB_FAILED;
			}
	}
	days = cJSON_AddArrayToObject(r, "per_day");
	for (i = 0; i < HTTP_DAYS; i++) {
		o = cJSON_CreateObject();
		cJSON_AddStringToObject(o, "day", day[i]);
		cJSON_AddNumberToObject(o, "done", (double)done[i]);
		cJSON_AddNumberToObject(o, "failed", (double)failed[i]);
		cJSON_AddItemToArray(days, o);
	}
	s = cJSON_PrintUnformatted(r);
	cJSON_Delete(r);
	return s;
}

/* One sample of the memory in use, and the week kept, trimmed. */
void
http_sample(struct daemon *d)
{
	struct graph_exec_stats st;
	double now = daemon_now();
	size_t queued = 0;
	const struct djob *j;

	graph_exec_stats(d->exec, &st);
	for (j = d->jobs; j != NULL; j = j->next)
		queued += j->state == JOB_QUEUED;
	store_sample_add(d->store, now, st.used, st.budget, d->nrunning,
	    queued, now - HTTP_KEEP_SECONDS);
}
