/* SPDX-License-Identifier: MIT */
/*
 * args.c: what the commands that talk to the daemon share: their
 * argument parsing ([--socket PATH] [--json] [--all] [JOB]) and their
 * --json output, one object per line.
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cJSON.h>

#include "cli.h"

void
cli_print_json(const cJSON *v)
{
	char *s = cJSON_PrintUnformatted(v);

	printf("%s\n", s);
	cJSON_free(s);
}

/*
 * getopt_long with mergectl's messages: "mergectl run: unknown option
 * '--random-sed' (did you mean --random-seed?)" and "--memory needs a
 * value", where getopt would name the command alone and suggest nothing.
 * Returns what getopt_long returns, '?' after printing the error.
 */
int
cli_getopt(int argc, char **argv, const char *shortopts,
    const struct option *longopts)
{
	const char *names[256], *arg, *near, *cmd;
	char opts[64], given[128];
	size_t n = 0, len;
	int c;

	snprintf(opts, sizeof opts, ":%s", shortopts);
	opterr = 0;
	c = getopt_long(argc, argv, opts, longopts, NULL);
	if (c != '?' && c != ':')
		return c;
	arg = optind > 0 && optind <= argc ? argv[optind - 1] : "";
	/* "mergectl run: ...", or "mergekit-yaml: ..." under that name. */
	cmd = cli_as_mergekit ? "" : argv[0];
	if (c == ':') {
		fprintf(stderr, "%s%s%s: %s needs a value\n", cli_progname,
		    *cmd ? " " : "", cmd, arg);
		return '?';
	}
	if (optopt != 0 && strncmp(arg, "--", 2) != 0) {
		fprintf(stderr, "%s%s%s: unknown option '-%c'\n", cli_progname,
		    *cmd ? " " : "", cmd, optopt);
		return '?';
	}
	len = strcspn(arg, "=");
	if (optopt != 0) {
		fprintf(stderr, "%s%s%s: %.*s takes no value\n", cli_progname,
		    *cmd ? " " : "", cmd, (int)len, arg);
		return '?';
	}
	snprintf(given, sizeof given, "%.*s", (int)(len > 2 ? len - 2 : 0),
	    arg + 2);
	for (; n < 256 && longopts[n].name != NULL; n++)
		names[n] = longopts[n].name;
	near = graph_suggest(given, names, n);
	fprintf(stderr, "%s%s%s: unknown option '%.*s'%s%s%s\n", cli_progname,
	    *cmd ? " " : "", cmd, (int)len, arg, near ? " (did you mean --" :
	    "", near ? near : "", near ? "?)" : "");
	return '?';
}

/*
 * [--socket PATH] [--json] [--all] [JOB]; need_job is 0 (no JOB), 1 (a
 * JOB) or 2 (an optional one), with CLI_ARGS_ALL when --all is taken.
 * Returns 0 or an exit code.
 */
int
cli_simple_args(int argc, char **argv, const char *what, int need_job,
    struct cli_args *a)
{
	static const struct option longopts[] = {
		{ "socket", required_argument, NULL, 's' },
		{ "json", no_argument, NULL, 'j' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "all", no_argument, NULL, 'a' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	bool allow_all = (need_job & CLI_ARGS_ALL) != 0;
	const char *usage;
	char *end;
	int c;

	need_job &= ~CLI_ARGS_ALL;
	usage = need_job == 1 ? " JOB" : need_job == 2 ? " [JOB]" : "";
	memset(a, 0, sizeof *a);
	optind = 1;
	while ((c = cli_getopt(argc, argv, "qh", longopts)) != -1) {
		switch (c) {
		case 's':
			a->socket = optarg;
			break;
		case 'j':
			a->json = true;
			break;
		case 'q':
			a->quiet = true;
			break;
		case 'a':
			if (!allow_all) {
				cli_usage_error("%s takes no --all", what);
				return CLI_EXIT_USAGE;
			}
			a->all = true;
			break;
		case 'h':
			printf("usage: %s %s [--socket PATH] [--json]%s%s\n",
			    cli_progname, what, allow_all ? " [--all]" : "",
			    usage);
			exit(CLI_EXIT_OK);
		default:
			return CLI_EXIT_USAGE;
		}
	}
	if (argc - optind > (need_job ? 1 : 0) || (need_job == 1 &&
	    argc - optind != 1)) {
		cli_usage_error("usage: %s %s%s", cli_progname, what, usage);
		return CLI_EXIT_USAGE;
	}
	if (argc - optind == 1) {
		a->job = strtoull(argv[optind], &end, 10);
		if (*end != '\0' || a->job == 0) {
			cli_usage_error("'%s' is not a job id", argv[optind]);
			return CLI_EXIT_USAGE;
		}
	}
	return 0;
}
