/* SPDX-License-Identifier: MIT */
/*
 * errors.c: the errors mergectl finds itself (a usage error, a config
 * caught before it is sent, no daemon, an untrusted one), on stderr as
 * "mergectl: why", and, under --json, also as one object on stdout in
 * the shape of the daemon's errors:
 *
 *     {"ok":false,"error":{"code":"usage","msg":"...","problems":[...]}}
 *
 * so that a script reading --json output never meets an empty stdout.
 * The daemon's own errors are printed by cli_check_reply (conn.c).
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include <cJSON.h>

#include "cli.h"
#include "xmalloc.h"

bool cli_json;

void
cli_error_attach(cJSON *r, const char *code, const char *msg,
    const struct graph_diags *d)
{
	cJSON *e, *a;
	char *line;
	size_t i;

	e = cJSON_AddObjectToObject(r, PROTO_F_ERROR);
	cJSON_AddStringToObject(e, PROTO_F_CODE, code);
	cJSON_AddStringToObject(e, PROTO_F_MSG, msg);
	if (d != NULL && d->n > 0) {
		/* The lines graph_diags_print writes, as the daemon sends. */
		a = cJSON_AddArrayToObject(e, PROTO_F_PROBLEMS);
		for (i = 0; i < d->n; i++) {
			line = xasprintf("%s%s%s: %s", d->v[i].where ?
			    d->v[i].where : "", d->v[i].where ? ": " : "",
			    d->v[i].sev == GRAPH_SEV_ERROR ? "error" : "warning",
			    d->v[i].msg);
			cJSON_AddItemToArray(a, cJSON_CreateString(line));
			free(line);
		}
	}
}

static void
error_json(const char *code, const char *msg, const struct graph_diags *d)
{
	cJSON *r = cJSON_CreateObject();

	cJSON_AddFalseToObject(r, PROTO_F_OK);
	cli_error_attach(r, code, msg, d);
	cli_print_json(r);
	fflush(stdout);
	cJSON_Delete(r);
}

void
cli_verror(const char *code, const char *cmd, const struct graph_diags *d,
    const char *fmt, va_list ap)
{
	char *msg = xvasprintf(fmt, ap);

	if (d != NULL)
		graph_diags_print(d, stderr);
	fprintf(stderr, "%s%s%s: %s\n", cli_progname, cmd != NULL ? " " : "",
	    cmd != NULL ? cmd : "", msg);
	if (cli_json)
		error_json(code, msg, d);
	free(msg);
}

void
cli_error(const char *code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	cli_verror(code, NULL, NULL, fmt, ap);
	va_end(ap);
}

void
cli_error_diags(const char *code, const struct graph_diags *d,
    const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	cli_verror(code, NULL, d, fmt, ap);
	va_end(ap);
}

void
cli_usage_error(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	cli_verror(CLI_E_USAGE, NULL, NULL, fmt, ap);
	va_end(ap);
}
