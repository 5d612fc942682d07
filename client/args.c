/* SPDX-License-Identifier: MIT */
/*
 * args.c: what the commands that talk to the daemon share: their
 * argument parsing ([--socket PATH] [--json] [--all] [JOB]) and their
 * --json output, one object per line.
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
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

/* "mergectl run: why" (cmd NULL: "mergekit-yaml: why"), a usage error. */
static void cli_cmd_usage_error(const char *cmd, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
cli_cmd_usage_error(const char *cmd, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	cli_verror(CLI_E_USAGE, cmd, NULL, fmt, ap);
	va_end(ap);
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
	cmd = cli_as_mergekit ? NULL : argv[0];
	if (c == ':') {
		cli_cmd_usage_error(cmd, "%s needs a value", arg);
		return '?';
	}
	if (optopt != 0 && strncmp(arg, "--", 2) != 0) {
		cli_cmd_usage_error(cmd, "unknown option '-%c'", optopt);
		return '?';
	}
	len = strcspn(arg, "=");
	if (optopt != 0) {
		cli_cmd_usage_error(cmd, "%.*s takes no value", (int)len,
		    arg);
		return '?';
	}
	snprintf(given, sizeof given, "%.*s", (int)(len > 2 ? len - 2 : 0),
	    arg + 2);
	for (; n < 256 && longopts[n].name != NULL; n++)
		names[n] = longopts[n].name;
	near = graph_suggest(given, names, n);
	cli_cmd_usage_error(cmd, "unknown option '%.*s'%s%s%s", (int)len, arg,
	    near ? " (did you mean --" : "", near ? near : "", near ? "?)" :
	    "");
	return '?';
}

/* A daemon command's --help: what it does, then each option. */
static void
simple_usage(const char *what, unsigned flags)
{
	printf("usage: %s %s%s%s [--socket PATH] [--json] [-q]\n%s\n\n",
	    cli_progname, what, flags & CLI_ARGS_JOB ? " JOB" : "",
	    flags & CLI_ARGS_FOLLOW ? " [-f]" : "",
	    cli_command_summary(what));
	if (flags & CLI_ARGS_JOB)
		printf("  JOB            the job's number, as submit printed "
		    "it\n");
	if (flags & CLI_ARGS_FOLLOW)
		printf("  -f, --follow   then what is still to come, until the "
		    "job has ended\n");
	printf("  --socket PATH  the daemon's socket (default: "
	    "$MERGED_SOCKET, else your\n                 personal "
	    "daemon's)\n"
	    "  --json         print the reply (or the error) as JSON, one "
	    "object a line\n"
	    "  -q, --quiet    fewer messages\n"
	    "'%s --help' lists the exit codes.\n", cli_progname);
}

/* A job's number as the user typed it: 0, or a usage error's exit code. */
int
cli_parse_job(const char *s, uint64_t *job)
{
	char *end;

	*job = strtoull(s, &end, 10);
	if (*end != '\0' || *job == 0) {
		cli_usage_error("'%s' is not a job id", s);
		return CLI_EXIT_USAGE;
	}
	return 0;
}

/*
 * [--socket PATH] [--json] [-q] [-f] [JOB]: a JOB with CLI_ARGS_JOB,
 * -f with CLI_ARGS_FOLLOW (list and status, which take more, parse their
 * own: cmd-list.c).  Returns 0 or an exit code.
 */
int
cli_simple_args(int argc, char **argv, const char *what, unsigned flags,
    struct cli_args *a)
{
	static const struct option longopts[] = {
		{ "socket", required_argument, NULL, 's' },
		{ "json", no_argument, NULL, 'j' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "follow", no_argument, NULL, 'f' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	bool need_job = (flags & CLI_ARGS_JOB) != 0;
	int c;

	memset(a, 0, sizeof *a);
	optind = 1;
	while ((c = cli_getopt(argc, argv, flags & CLI_ARGS_FOLLOW ? "qhf" :
	    "qh", longopts)) != -1) {
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
		case 'f':
			if (!(flags & CLI_ARGS_FOLLOW)) {
				cli_usage_error("%s takes no --follow", what);
				return CLI_EXIT_USAGE;
			}
			a->follow = true;
			break;
		case 'h':
			simple_usage(what, flags);
			exit(CLI_EXIT_OK);
		default:
			return CLI_EXIT_USAGE;
		}
	}
	if (argc - optind != (need_job ? 1 : 0)) {
		cli_usage_error("%s %s; '%s %s --help' lists the options", what,
		    need_job && argc - optind < 1 ? "needs a JOB" :
		    "takes no more arguments", cli_progname, what);
		return CLI_EXIT_USAGE;
	}
	return argc - optind == 1 ? cli_parse_job(argv[optind], &a->job) : 0;
}
