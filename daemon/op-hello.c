/* SPDX-License-Identifier: MIT */
/*
 * op-hello.c: the first request of every connection.  The version check
 * itself is op.c's (a mismatch closes the connection); this answers with
 * what the client needs to know about the server and itself.
 */
#include <unistd.h>

#include <cJSON.h>

#include "daemon.h"

static void
op_hello_fn(struct op_ctx *o)
{
	cJSON *r = msg_reply(o->id);

	o->c->hello = true;
	cJSON_AddStringToObject(r, PROTO_F_SERVER, "merged " GRAPH_VERSION);
	cJSON_AddNumberToObject(r, PROTO_F_VERSION, PROTO_VERSION);
	cJSON_AddNumberToObject(r, PROTO_F_UID, o->c->peer.uid);
	cJSON_AddStringToObject(r, PROTO_F_MODE, o->c->d->opts.team ? "team" :
	    "personal");
	/* Whose files a job's outputs become: the submitter's when the
	 * daemon is root or the submitter, else the daemon's own. */
	cJSON_AddNumberToObject(r, PROTO_F_DAEMON_UID, (double)geteuid());
	op_reply(o, r);
}

const struct op_entry op_hello = { PROTO_OP_HELLO, false, op_hello_fn };
