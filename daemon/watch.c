/* SPDX-License-Identifier: MIT */
/*
 * watch.c: the watch fan-out, what a job's change sends to its watchers.
 *
 * job.c knows no connection: it reports every change of a job through
 * the daemon's job_changed hook, which main() points here.  This file
 * turns the change into "progress" (or the final "done") events, each
 * with the job's JSON as its watcher may see it (op_job_json), and sends
 * them on the watchers' connections.  Keeping the sockets on this side of
 * the hook is what lets the job life cycle run, and be tested, without
 * any; op-watch.c adds the watches.  A queued job changes when others
 * do (its place, what it waits for): after every scheduling pass, its
 * watchers hear it if either changed (watch_queue_changed).  Loop thread
 * only.
 */
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>

#include "daemon.h"
#include "xmalloc.h"

void
watch_free(struct watch *w)
{
	free(w->reason);
	free(w);
}

/*
 * Sends a progress (or the final) event to everyone watching j.  The
 * watchers are collected first: sending may close a dead connection,
 * which drops that connection's watches from the list being walked.
 */
void
watch_job_changed(struct daemon *d, struct djob *j, bool final)
{
	struct watch **pp = &d->watches, *w, *mine = NULL, *next;
	struct cJSON *ev;
	struct conn *c;

	while ((w = *pp) != NULL) {
		if (w->job != j->id) {
			pp = &w->next;
			continue;
		}
		*pp = w->next;
		w->next = mine;
		mine = w;
	}
	for (w = mine; w != NULL; w = next) {
		next = w->next;
		if ((c = conn_find(d, w->conn)) == NULL) {
			watch_free(w);	/* the watcher went away */
			continue;
		}
		if (j->state == JOB_QUEUED) {
			/* What watch_queue_changed compares with. */
			sched_positions(d);
			w->pos = j->queue_pos;
			free(w->reason);
			w->reason = sched_reason(d, j);
			if (w->reason == NULL)
				w->reason = xstrdup("");
		}
		ev = msg_event(w->req, final ? PROTO_EV_DONE :
		    PROTO_EV_PROGRESS);
		cJSON_AddItemToObject(ev, PROTO_F_JOB,
		    op_job_json(j, peer_may_act(&c->peer, j)));
		if (final)
			cJSON_AddStringToObject(ev, PROTO_F_STATE,
			    proto_state_name(j->state));
		if (final || c->closing) {
			watch_free(w);
		} else {
			w->next = d->watches;
			d->watches = w;
		}
		conn_send(c, ev);
	}
}

/* Tells the watchers of queued jobs whose place or reason changed. */
void
watch_queue_changed(struct daemon *d)
{
	struct watch *w;
	struct djob *j, *told;
	char *why;

	sched_positions(d);
	/* watch_job_changed reorders the list, and may drop watches (a
	 * dead connection): start over after each job told, which its
	 * watchers then no longer differ from. */
	do {
		told = NULL;
		for (w = d->watches; w != NULL && told == NULL; w = w->next) {
			if ((j = job_find(d, w->job)) == NULL ||
			    j->state != JOB_QUEUED)
				continue;
			why = sched_reason(d, j);
			if (w->pos != j->queue_pos || w->reason == NULL ||
			    strcmp(w->reason, why ? why : "") != 0)
				told = j;
			free(why);
		}
		if (told != NULL)
			watch_job_changed(d, told, false);
	} while (told != NULL);
}
