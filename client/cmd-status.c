/* SPDX-License-Identifier: MIT */
/*
 * cmd-status.c: "mergectl status JOB": the job's row of the queue table
 * under its header, then every detail the daemon lets the caller see
 * (its kind, group and stage, priority, dependencies, why it waits, the
 * times, bytes and shards, memory, output, config, seed, error), and a
 * pipeline's stages, a row each.  Without a job, the queue table
 * (cmd-list.c).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cJSON.h>

#include "cli.h"
#include "cmdline.h"
#include "xmalloc.h"

/* One "  key  value" line of the details, when value is not empty. */
static void
detail(const char *key, const char *value)
{
	char *v;

	if (value == NULL || *value == '\0')
		return;
	v = graph_text_printable(xstrdup(value));
	printf("      %-13s %s\n", key, v);
	free(v);
}

/* A daemon time (seconds since the epoch), local; "" when 0. */
static void
fmt_time(char *buf, size_t len, double t)
{
	time_t s = (time_t)t;
	struct tm tm;

	buf[0] = '\0';
	if (t > 0 && localtime_r(&s, &tm) != NULL)
		strftime(buf, len, "%Y-%m-%d %H:%M:%S", &tm);
}

static void
status_print(const cJSON *j, const struct cli_table *t)
{
	const cJSON *d, *words;
	char buf[256], *a, *b, **v;
	size_t n = 0, n_words = 0;

	cli_job_header(t);
	cli_job_row(j, t);
	detail("kind", cli_json_str(j, PROTO_F_KIND));
	if (cli_json_num(j, PROTO_F_GROUP) > 0) {
		snprintf(buf, sizeof buf, "%.0f, stage %s",
		    cli_json_num(j, PROTO_F_GROUP), cJSON_IsString(
		    cJSON_GetObjectItem(j, PROTO_F_STAGE)) ? cli_json_str(j,
		    PROTO_F_STAGE) : "(final)");
		detail("group", buf);
	}
	snprintf(buf, sizeof buf, "%.0f", cli_json_num(j, PROTO_F_PRIORITY));
	detail("priority", buf);
	buf[0] = '\0';
	cJSON_ArrayForEach(d, cJSON_GetObjectItem(j, PROTO_F_DEPS))
		if (n < sizeof buf)
			n += (size_t)snprintf(buf + n, sizeof buf - n, "%s%.0f",
			    n ? ", " : "", d->valuedouble);
	detail("after", buf);
	if (cli_json_num(j, PROTO_F_POSITION) > 0) {
		snprintf(buf, sizeof buf, "%.0f in the queue", cli_json_num(j,
		    PROTO_F_POSITION));
		detail("position", buf);
	}
	detail("waiting", cli_json_str(j, PROTO_F_REASON));
	fmt_time(buf, sizeof buf, cli_json_num(j, PROTO_F_CREATED));
	detail("submitted", buf);
	fmt_time(buf, sizeof buf, cli_json_num(j, PROTO_F_STARTED));
	detail("started", buf);
	fmt_time(buf, sizeof buf, cli_json_num(j, PROTO_F_FINISHED));
	detail("finished", buf);
	if (cli_json_num(j, PROTO_F_BYTES_TOTAL) > 0) {
		a = graph_format_size((uint64_t)cli_json_num(j,
		    PROTO_F_BYTES_DONE));
		b = graph_format_size((uint64_t)cli_json_num(j,
		    PROTO_F_BYTES_TOTAL));
		snprintf(buf, sizeof buf, "%s of %s; %.0f/%.0f tensors, "
		    "%.0f/%.0f shards", a, b, cli_json_num(j,
		    PROTO_F_TENSORS_DONE), cli_json_num(j,
		    PROTO_F_TENSORS_TOTAL), cli_json_num(j,
		    PROTO_F_SHARDS_DONE), cli_json_num(j,
		    PROTO_F_SHARDS_TOTAL));
		detail("written", buf);
		free(a);
		free(b);
	}
	if (cli_json_num(j, PROTO_F_MEMORY) > 0) {
		a = graph_format_size((uint64_t)cli_json_num(j,
		    PROTO_F_MEMORY));
		detail("memory", a);
		free(a);
	}
	detail("out", cli_json_str(j, PROTO_F_OUT));
	detail("intermediate", cli_json_str(j, PROTO_F_INTER));
	detail("config", cli_json_str(j, PROTO_F_CONFIG_NAME));
	words = cJSON_GetObjectItem(j, PROTO_F_ON_DONE);
	if (cJSON_IsArray(words) && cJSON_GetArraySize(words) > 0) {
		v = xcalloc((size_t)cJSON_GetArraySize(words) + 1, sizeof *v);
		cJSON_ArrayForEach(d, words)
			if (cJSON_IsString(d))
				v[n_words++] = d->valuestring;
		a = cmdline_join(v);
		detail("on done", a);
		free(a);
		free(v);
	}
	if (cJSON_GetObjectItem(j, PROTO_F_SEED) != NULL) {
		snprintf(buf, sizeof buf, "%.0f", cli_json_num(j,
		    PROTO_F_SEED));
		detail("seed", buf);
	}
	detail("error", cli_json_str(j, PROTO_F_ERROR));
}

/* A pipeline's stages, a row each under the group's details. */
static void
status_stages(struct cli_conn *c, const cJSON *g, const struct cli_table *t)
{
	const cJSON *id;
	cJSON *req, *r;
	bool first = true;

	cJSON_ArrayForEach(id, cJSON_GetObjectItem(g, PROTO_F_STAGES)) {
		req = cli_new_request(c, PROTO_OP_STATUS);
		cJSON_AddNumberToObject(req, PROTO_F_JOB, id->valuedouble);
		r = cli_call(c, req, NULL, 0);
		if (r != NULL && cli_check_reply(r, false) == 0) {
			if (first)
				printf("stages:\n");
			first = false;
			cli_job_row(cJSON_GetObjectItem(r, PROTO_F_JOB), t);
		}
		cJSON_Delete(r);
	}
}

int
cli_cmd_status(int argc, char **argv)
{
	struct cli_list_opts o;
	struct cli_table t;
	struct cli_conn c;
	cJSON *req, *r;
	int rc;

	if ((rc = cli_list_parse(argc, argv, "status", true, &o)) != 0)
		goto out;
	if (o.a.job == 0) {
		rc = cli_status_queue(&o);
		goto out;
	}
	if (o.a.all || o.states != NULL || o.user != NULL || o.mine ||
	    o.name != NULL) {
		cli_usage_error("status JOB takes no --all or filters");
		rc = CLI_EXIT_USAGE;
		goto out;
	}
	if ((rc = cli_open(&c, o.a.socket, true)) != 0)
		goto out;
	req = cli_new_request(&c, PROTO_OP_STATUS);
	cJSON_AddNumberToObject(req, PROTO_F_JOB, (double)o.a.job);
	r = cli_call(&c, req, NULL, 0);
	if (r != NULL && (rc = cli_check_reply(r, o.a.json)) == 0) {
		if (o.a.json) {
			cli_print_json(cJSON_GetObjectItem(r, PROTO_F_JOB));
		} else {
			cli_table_init(&t, o.color);
			status_print(cJSON_GetObjectItem(r, PROTO_F_JOB), &t);
			status_stages(&c, cJSON_GetObjectItem(r, PROTO_F_JOB),
			    &t);
		}
	}
	if (r == NULL)
		rc = CLI_EXIT_DAEMON;
	cJSON_Delete(r);
	cli_disconnect(&c);
out:
	cJSON_Delete(o.states);
	return rc;
}
