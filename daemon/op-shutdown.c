/* SPDX-License-Identifier: MIT */
/*
 * op-shutdown.c: "mergectl daemon stop".  Only the daemon's own user or
 * root may stop it; it drains like SIGTERM: running jobs are interrupted
 * with their finished shards kept, for a later resume.
 */
#include <cJSON.h>

#include "daemon.h"

static void
op_shutdown_fn(struct op_ctx *o)
{
	struct daemon *d = o->c->d;

	if (o->c->peer.uid != d->uid && o->c->peer.uid != 0) {
		op_error(o, PROTO_E_FORBIDDEN, "only the daemon's user or root "
		    "may stop it");
		return;
	}
	op_reply(o, msg_reply(o->id));
	log_info("shutdown requested by uid %u", (unsigned)o->c->peer.uid);
	daemon_drain(d);
}

const struct op_entry op_shutdown = { PROTO_OP_SHUTDOWN, true, op_shutdown_fn };
