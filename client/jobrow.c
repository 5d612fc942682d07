/* SPDX-License-Identifier: MIT */
/*
 * jobrow.c: one job as a row of the queue table, shared by "list",
 * "status" and "status JOB", and the lenient field getters it reads the
 * daemon's job objects with (an absent or mistyped field shows as 0 or
 * "").
 *
 * The table fits the terminal: at 80 columns ID, USER, NAME, STATE, DONE,
 * MEMORY (the job's own working set), ELAPSED and INFO (the ETA of a
 * running job, why a queued one waits, a failed one's error), INFO cut
 * to what is left; from 120 columns also PRI, DEPS and BYTES.  Without a
 * terminal, 80 columns.  States are coloured only on a terminal, unless
 * --color says otherwise or NO_COLOR is set (no-color.org).
 */
#include <sys/ioctl.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cJSON.h>

#include "cli.h"
#include "xmalloc.h"

/* From this width on, the wide table. */
#define TABLE_WIDE 120

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

int
cli_color_parse(const char *s, enum cli_color *out)
{
	if (strcmp(s, "auto") == 0)
		*out = CLI_COLOR_AUTO;
	else if (strcmp(s, "always") == 0)
		*out = CLI_COLOR_ALWAYS;
	else if (strcmp(s, "never") == 0)
		*out = CLI_COLOR_NEVER;
	else
		return -1;
	return 0;
}

void
cli_table_init(struct cli_table *t, enum cli_color color)
{
	struct winsize ws;
	const char *nc = getenv("NO_COLOR");
	bool tty = isatty(STDOUT_FILENO);

	t->width = 80;
	if (tty && ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 &&
	    ws.ws_col > 0)
		t->width = ws.ws_col;
	/* --color=always wins over NO_COLOR: it is asked for by name. */
	t->color = color == CLI_COLOR_ALWAYS || (color == CLI_COLOR_AUTO &&
	    tty && (nc == NULL || *nc == '\0'));
	t->wide = t->width >= TABLE_WIDE;
}

/* SGR colour of a state's name, or NULL. */
static const char *
state_color(const char *state)
{
	static const struct {
		const char *state;
		const char *sgr;
	} colors[] = {
		{ "queued", "33" },		/* yellow */
		{ "running", "1;34" },		/* bold blue */
		{ "done", "32" },		/* green */
		{ "failed", "1;31" },		/* bold red */
		{ "cancelled", "35" },		/* magenta */
		{ "interrupted", "1;33" },	/* bold yellow */
	};
	size_t i;

	for (i = 0; i < sizeof colors / sizeof *colors; i++)
		if (strcmp(colors[i].state, state) == 0)
			return colors[i].sgr;
	return NULL;
}

/* "7, 9" from a job's deps, or "-". */
static void
fmt_deps(char *buf, size_t len, const cJSON *j)
{
	const cJSON *d;
	size_t n = 0;

	buf[0] = '\0';
	cJSON_ArrayForEach(d, cJSON_GetObjectItem(j, PROTO_F_DEPS))
		if (n < len)
			n += (size_t)snprintf(buf + n, len - n, "%s%.0f",
			    n ? "," : "", d->valuedouble);
	if (n == 0)
		snprintf(buf, len, "-");
}

/*
 * What the last column says of a job: why it waits, in short ("after
 * job 7", "max_running", as Slurm's REASON; status JOB and watch say it
 * whole), a running one's ETA, a finished one's error.
 */
static char *
job_info(const cJSON *j)
{
	const char *state = cli_json_str(j, PROTO_F_STATE);
	const char *why = cli_json_str(j, PROTO_F_REASON), *p;
	unsigned long long dep;
	char eta[48];

	if (strncmp(why, "dependency:", 11) == 0 &&
	    (p = strstr(why, "job ")) != NULL &&
	    sscanf(p, "job %llu", &dep) == 1)
		return xasprintf("after job %llu", dep);
	/* merged --backend slurm: Slurm's job, state and reason while it
	 * waits; a running one's ETA, as any. */
	if (strncmp(why, "slurm: ", 7) == 0 && strcmp(state, "running") != 0)
		return xstrdup(why + 7);
	if (*why != '\0' && strncmp(why, "slurm: ", 7) != 0)
		return xstrndup(why, strcspn(why, ":"));
	if (strcmp(state, "running") == 0) {
		/* Extrapolated from the first kilobytes: noise. */
		if (cli_json_num(j, PROTO_F_ETA) < 0 ||
		    cli_json_num(j, PROTO_F_PROGRESS) < 0.01)
			return xstrdup("ETA ?");
		cli_format_duration(eta, sizeof eta, cli_json_num(j,
		    PROTO_F_ETA));
		return xasprintf("ETA %s", eta);
	}
	if (*cli_json_str(j, PROTO_F_ERROR) != '\0')
		return xstrdup(cli_json_str(j, PROTO_F_ERROR));
	return xstrdup("");
}

void
cli_job_header(const struct cli_table *t)
{
	if (t->wide)
		printf("%5s %-8s %-20s %-11s %4s %4s %-9s %21s %8s %7s %s\n",
		    "ID", "USER", "NAME", "STATE", "DONE", "PRI", "DEPS",
		    "BYTES", "MEMORY", "ELAPSED", "INFO");
	else
		printf("%5s %-8s %-16s %-11s %4s %8s %7s %s\n", "ID", "USER",
		    "NAME", "STATE", "DONE", "MEMORY", "ELAPSED", "INFO");
}

void
cli_job_row(const cJSON *j, const struct cli_table *t)
{
	const char *state = cli_json_str(j, PROTO_F_STATE), *sgr;
	char el[48], deps[64], bytes[64], *done, *total, *mem, *user, *name;
	char *info;
	int used, left, pad;

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
	info = graph_text_printable(job_info(j));
	cli_format_duration(el, sizeof el, cli_json_num(j, PROTO_F_ELAPSED));
	mem = graph_format_size((uint64_t)cli_json_num(j, PROTO_F_MEMORY));
	sgr = t->color ? state_color(state) : NULL;
	printf("%5.0f %-8.8s %-*.*s ", cli_json_num(j, PROTO_F_ID), user,
	    t->wide ? 20 : 16, t->wide ? 20 : 16, name);
	/* The colour around the name, the padding outside it. */
	pad = 11 - (int)strlen(state);
	if (sgr != NULL)
		printf("\033[%sm%s\033[0m%*s ", sgr, state, pad > 0 ? pad : 0,
		    "");
	else
		printf("%-11s ", state);
	printf("%3.0f%%", 100 * cli_json_num(j, PROTO_F_PROGRESS));
	used = 5 + 1 + 8 + 1 + (t->wide ? 20 : 16) + 1 + 11 + 1 + 4;
	if (t->wide) {
		fmt_deps(deps, sizeof deps, j);
		done = graph_format_size((uint64_t)cli_json_num(j,
		    PROTO_F_BYTES_DONE));
		total = graph_format_size((uint64_t)cli_json_num(j,
		    PROTO_F_BYTES_TOTAL));
		snprintf(bytes, sizeof bytes, "%s/%s", done, total);
		printf(" %4.0f %-9.9s %21s", cli_json_num(j, PROTO_F_PRIORITY),
		    deps, bytes);
		used += 1 + 4 + 1 + 9 + 1 + 21;
		free(done);
		free(total);
	}
	printf(" %8s %7s", mem, el);
	used += 1 + 8 + 1 + 7 + 1;
	/* The rest of the line, never past it: a row never wraps. */
	left = t->width - 1 - used;
	if (left > 0 && (size_t)left < strlen(info)) {
		/* Cut between UTF-8 characters. */
		while (left > 0 && ((unsigned char)info[left] & 0xc0) == 0x80)
			left--;
		info[left] = '\0';
	}
	if (left > 0 && *info != '\0')
		printf(" %s", info);
	printf("\n");
	free(user);
	free(name);
	free(info);
	free(mem);
}
