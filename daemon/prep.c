/* SPDX-License-Identifier: MIT */
/*
 * prep.c: planning a submitted or resumed job on the libuv pool.
 *
 * Planning reads the models' headers, which the submitter controls: tens
 * of thousands of tensors, many shards.  On the loop thread that would
 * stall every other client's requests and the daemon's signals for as
 * long as it takes, so the op hands a job of its own to the pool
 * (job_plan(), the one function that runs there) and the reply is sent
 * from the after-work callback.  Ownership moves twice: to the worker at
 * uv_queue_work, back to the loop thread in prep_after(); in between the
 * loop thread touches only the prep's list links and its cancel flag.
 *
 * At most PREP_MAX_POOL plans are on the pool at once, the rest wait here
 * in request order, so that plans cannot take every pool thread from
 * running merges.  The requester's connection reads nothing more until
 * its plan is back (its replies stay in order); it is found again by id,
 * and a requester that went away meanwhile has its job dropped.  A drain
 * replies "shutting down" to the waiting ones and cancels those on the
 * pool, which stop at their next model, shard or tensor; none of them was
 * ever accepted.  Loop thread only, except prep_work().
 */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "daemon.h"
#include "xmalloc.h"

#define container_of(p, t, m) ((t *)((char *)(p) - offsetof(t, m)))

/*
 * Plans on the pool at once.  Merges use --threads of the pool's
 * --threads + 1 threads; two plans may delay a merge's next chunk by a
 * plan's time, but one user's slow plan does not hold everyone's submit.
 */
#define PREP_MAX_POOL 2

static void prep_pump(struct daemon *);

static void
prep_free(struct prep *p)
{
	if (p->j != NULL)
		job_free(p->j);	/* closes its descriptors */
	graph_diags_fini(&p->diags);
	free(p->cause);
	free(p);
}

/* Pool thread: the plan, and nothing else. */
static void
prep_work(uv_work_t *w)
{
	struct prep *p = container_of(w, struct prep, work);

	p->rc = job_plan(p->j, p->budget, p->threads, &p->cancel, &p->diags,
	    &p->cause);
}

/*
 * The plan is back (or never left): answer the requester if it is still
 * there, then let its connection go on and the next plan start.
 */
static void
prep_finish(struct prep *p)
{
	struct daemon *d = p->d;
	struct prep **pp;
	struct conn *c;
	struct op_ctx o;

	for (pp = &d->preps; *pp != NULL; pp = &(*pp)->next)
		if (*pp == p) {
			*pp = p->next;
			break;
		}
	if ((c = conn_find(d, p->conn)) != NULL) {
		c->planning--;
		/* Gone both ways while we planned: nobody to accept for. */
		if (conn_vanished(c)) {
			conn_close(c);
			c = NULL;
		}
	}
	if (c != NULL && !c->closing) {
		memset(&o, 0, sizeof o);
		o.c = c;
		o.id = p->req;
		if (d->draining)
			op_error(&o, PROTO_E_SHUTTING_DOWN, "the daemon is "
			    "shutting down");
		else
			p->done(p, &o);
	} else {
		log_info("connection %llu went away while its request %llu was "
		    "planned: dropped", (unsigned long long)p->conn,
		    (unsigned long long)p->req);
	}
	prep_free(p);
	prep_pump(d);
	if (c != NULL)
		conn_unblock(c);
}

static void
prep_after(uv_work_t *w, int status)
{
	struct prep *p = container_of(w, struct prep, work);
	struct daemon *d = p->d;

	(void)status;	/* never uv_cancel'ed: a drain sets p->cancel */
	d->nplanning--;
	prep_finish(p);
	daemon_maybe_finish(d);
}

/* Hands waiting plans to the pool, oldest first, within the limit. */
static void
prep_pump(struct daemon *d)
{
	struct prep *p;

	if (d->draining)
		return;
	for (p = d->preps; p != NULL && d->nplanning < PREP_MAX_POOL;
	    p = p->next) {
		if (p->on_pool)
			continue;
		p->on_pool = true;
		d->nplanning++;
		uv_queue_work(&d->loop, &p->work, prep_work, prep_after);
	}
}

/*
 * Plans j (taking ownership of it) for the request o, then calls done on
 * the loop thread (see daemon.h).  job: the id of the job resumed, or 0.
 */
void
prep_start(struct op_ctx *o, struct djob *j, uint64_t job, prep_done_fn done)
{
	struct daemon *d = o->c->d;
	struct prep *p = xcalloc(1, sizeof *p), **pp;

	p->d = d;
	p->conn = o->c->id;
	p->req = o->id;
	p->job = job;
	p->j = j;
	p->done = done;
	p->budget = d->opts.memory;
	p->threads = d->opts.threads;
	atomic_init(&p->cancel, false);
	graph_diags_init(&p->diags);
	for (pp = &d->preps; *pp != NULL; pp = &(*pp)->next)
		;
	*pp = p;
	o->c->planning++;
	prep_pump(d);
}

/*
 * Draining: the waiting plans are answered now, those on the pool are
 * told to stop; their after-work callbacks answer them.
 */
void
prep_drain(struct daemon *d)
{
	struct prep *p, *next;

	for (p = d->preps; p != NULL; p = next) {
		next = p->next;
		if (p->on_pool)
			atomic_store(&p->cancel, true);
		else
			prep_finish(p);
	}
}
