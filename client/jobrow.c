/* SPDX-License-Identifier: MIT */
/*
 * jobrow.c: one job as a row of the queue table, shared by "list" and
 * "status JOB", and the lenient field getters it reads the daemon's job
 * objects with (an absent or mistyped field shows as 0 or "").
 */
#include <stdio.h>
#include <stdlib.h>

#include <cJSON.h>

#include "cli.h"
#include "xmalloc.h"

static void
fmt_secs(char *buf, size_t len, double s)
{
	if (s < 0)
		snprintf(buf, len, "-");
	else if (s < 60)
		snprintf(buf, len, "%.0fs", s);
	else if (s < 3600)
		snprintf(buf, len, "%ldm%02lds", (long)s / 60, (long)s % 60);
	else
		snprintf(buf, len, "%.1fh", s / 3600);
}

double
cli_json_num(const cJSON *o, const char *k)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);

	return cJSON_IsNumber(v) ? v->valuedouble : 0;
}

const char *
cli_json_str(const cJSON *o, const char *k)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);

	return cJSON_IsString(v) ? v->valuestring : "";
}

void
cli_job_row(const cJSON *j)
{
	char el[48], eta[48], *done, *total, *mem, *user, *name;

	/* A store from before names were checked may hold escapes. */
	user = graph_text_printable(xstrdup(cli_json_str(j, PROTO_F_USER)));
	/* A pipeline's stage, indented under its group (the row above:
	 * the stages' ids follow their group's). */
	if (cli_json_num(j, PROTO_F_GROUP) > 0)
		name = xasprintf("  %s", cJSON_IsString(cJSON_GetObjectItem(j,
		    PROTO_F_STAGE)) ? cli_json_str(j, PROTO_F_STAGE) :
		    "(final)");
	else
		name = xstrdup(cli_json_str(j, PROTO_F_NAME));
	name = graph_text_printable(name);
	fmt_secs(el, sizeof el, cli_json_num(j, PROTO_F_ELAPSED));
	fmt_secs(eta, sizeof eta, cli_json_num(j, PROTO_F_ETA));
	done = graph_format_size((uint64_t)cli_json_num(j, PROTO_F_BYTES_DONE));
	total = graph_format_size((uint64_t)cli_json_num(j,
	    PROTO_F_BYTES_TOTAL));
	mem = graph_format_size((uint64_t)cli_json_num(j, PROTO_F_MEMORY));
	printf("%5.0f  %-10.10s %-20.20s %-11s %4.0f%%  %10s / %-10s %9s "
	    "%8s %8s\n", cli_json_num(j, PROTO_F_ID), user, name,
	    cli_json_str(j, PROTO_F_STATE),
	    100 * cli_json_num(j, PROTO_F_PROGRESS), done, total, mem, el,
	    eta);
	free(user);
	free(name);
	free(done);
	free(total);
	free(mem);
}
