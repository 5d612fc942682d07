/* SPDX-License-Identifier: MIT */
/*
 * mergectl.c: the command-line client's entry point and command table.
 *
 * Each command lives in its own cmd-<name>.c.  Exit codes are stable and
 * listed in the help text (and the man page): scripts may rely on them.
 */
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

const char *cli_progname = "mergectl";
bool cli_as_mergekit;
bool cli_as_multi;

static const struct cli_cmd commands[] = {
	{ "submit", "CONFIG -o OUT [options]", "queue a merge with the daemon "
	    "(starting one if needed)", cli_cmd_submit },
	{ "status", "[JOB] [filters]", "the queue, or one job",
	    cli_cmd_status },
	{ "list", "[filters]", "every job the daemon keeps", cli_cmd_list },
	{ "watch", "JOB", "follow a job; exit with its result",
	    cli_cmd_watch },
	{ "logs", "JOB [-f]", "a job's log, each line with its time",
	    cli_cmd_logs },
	{ "cancel", "JOB", "stop a job", cli_cmd_cancel },
	{ "resume", "JOB", "continue an interrupted job", cli_cmd_resume },
	{ "rm", "JOB...", "forget finished jobs (not their outputs)",
	    cli_cmd_rm },
	{ "clean", "[--older-than D] [...]", "forget your finished "
	    "jobs", cli_cmd_clean },
	{ "daemon", "start|stop|status", "the personal daemon",
	    cli_cmd_daemon },
	{ "plan", "CONFIG [--json]", "show the whole merge without reading "
	    "a weight", cli_cmd_plan },
	{ "run", "CONFIG OUT [options]", "merge in this process, without the "
	    "daemon (like mergekit-yaml)", cli_cmd_run },
	{ "extract-lora", "--model FT [options]", "a LoRA adapter from "
	    "a fine-tune and its base (like mergekit-extract-lora)",
	    cli_cmd_extract_lora },
	{ "inspect", "A B [--base M] [--svg F]", "how alike two models' "
	    "layers are: a heat map", cli_cmd_inspect },
	{ "help", "[COMMAND]", "these lines, or a command's options",
	    NULL },
	{ "completions", "bash|zsh|fish", "a shell completion script",
	    cli_cmd_completions },
};

#define NCOMMANDS (sizeof commands / sizeof *commands)

/* A command's one-line summary, for its --help. */
const char *
cli_command_summary(const char *name)
{
	size_t i;

	for (i = 0; i < NCOMMANDS; i++)
		if (strcmp(commands[i].name, name) == 0)
			return commands[i].help;
	return "";
}

/* The command names, a line each (completion). */
void
cli_print_commands(void)
{
	size_t i;

	for (i = 0; i < NCOMMANDS; i++)
		printf("%s\n", commands[i].name);
}

static void
usage(FILE *fp)
{
	size_t i;

	fprintf(fp, "usage: %s COMMAND [ARGS]\n\ncommands:\n", cli_progname);
	for (i = 0; i < NCOMMANDS; i++)
		fprintf(fp, "  %-12s %-24s %s\n", commands[i].name,
		    commands[i].args, commands[i].help);
	fprintf(fp, "\n'%s COMMAND --help' describes a command's options.\n"
	    "\nexit codes:\n"
	    "  0    success\n"
	    "  1    the merge failed while running (I/O error, disk full, an "
	    "input changed);\n       or not in a state for that (cancel of "
	    "a finished job, ...)\n"
	    "  2    usage error\n"
	    "  3    the config or plan was rejected (--memory below its least "
	    "included);\n       nothing was read or written\n"
	    "  4    the output exists, or a live job writes it (use --force "
	    "to replace it)\n"
	    "  5    no daemon answers\n"
	    "  6    no such job (also submit --after one)\n"
	    "  7    the job belongs to another user\n"
	    "  8    (watch, submit --wait) the job was cancelled\n"
	    "  9    (watch, submit --wait) the job was interrupted; resume it\n"
	    "  10   the daemon refused: a limit is reached (your queued and "
	    "running\n       jobs, the descriptors they hold, or your "
	    "connections)\n"
	    "  11   the daemon answering is not who it should be; nothing was "
	    "sent\n"
	    "  130  interrupted (SIGINT or SIGTERM); partial output removed\n"
	    "\nEvery command takes --json; daemon commands take --socket PATH "
	    "\n(default $MERGED_SOCKET, else the personal daemon's).\n",
	    cli_progname);
}

int
main(int argc, char **argv)
{
	const char *base, *names[NCOMMANDS], *near;
	size_t i;

	/* --json asks for errors as JSON too, even those found before the
	 * command has parsed its options (errors.c). */
	for (i = 1; i < (size_t)argc && strcmp(argv[i], "--") != 0; i++)
		cli_json |= strcmp(argv[i], "--json") == 0;
	signal(SIGPIPE, SIG_IGN);
	/* Over a file size limit, fail the write with EFBIG; do not die. */
	signal(SIGXFSZ, SIG_IGN);
	/* For every command, before any thread of ours: BLAS on one
	 * thread, and OpenBLAS's own, which would spin, stopped. */
	graph_init();
	/* Installed as mergekit-yaml too (meson -Dmergekit_compat=true):
	 * then it is "mergectl run", so that scripts run unchanged. */
	base = argc > 0 ? strrchr(argv[0], '/') : NULL;
	base = base != NULL ? base + 1 : argc > 0 ? argv[0] : "";
	if (strcmp(base, "mergekit-yaml") == 0 ||
	    strcmp(base, "mergekit-multi") == 0) {
		cli_progname = strcmp(base, "mergekit-yaml") == 0 ?
		    "mergekit-yaml" : "mergekit-multi";
		cli_as_mergekit = true;
		cli_as_multi = strcmp(base, "mergekit-multi") == 0;
		return cli_cmd_run(argc, argv);
	}
	if (argc < 2) {
		usage(stderr);
		return CLI_EXIT_USAGE;
	}
	if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0 ||
	    (strcmp(argv[1], "help") == 0 && argc == 2)) {
		usage(stdout);
		return CLI_EXIT_OK;
	}
	/* "help COMMAND" is "COMMAND --help". */
	if (strcmp(argv[1], "help") == 0) {
		for (i = 0; i < NCOMMANDS; i++)
			if (commands[i].run != NULL &&
			    strcmp(argv[2], commands[i].name) == 0) {
				char *av[] = { argv[2], (char *)"--help",
				    NULL };

				return commands[i].run(2, av);
			}
		cli_usage_error("help: no command '%s'; '%s help' lists them",
		    argv[2], cli_progname);
		return CLI_EXIT_USAGE;
	}
	/* What the completion scripts ask; not a command of the list. */
	if (strcmp(argv[1], "__complete") == 0)
		return cli_cmd_complete(argc - 1, argv + 1);
	if (strcmp(argv[1], "--version") == 0) {
		printf("mergectl %s\n", GRAPH_VERSION);
		return CLI_EXIT_OK;
	}
	for (i = 0; i < NCOMMANDS; i++)
		if (commands[i].run != NULL &&
		    strcmp(argv[1], commands[i].name) == 0)
			return commands[i].run(argc - 1, argv + 1);
	for (i = 0; i < NCOMMANDS; i++)
		names[i] = commands[i].name;
	near = graph_suggest(argv[1], names, NCOMMANDS);
	cli_usage_error("unknown command '%s'%s%s%s; '%s --help' lists the "
	    "commands", argv[1], near ? " (did you mean " : "", near ? near :
	    "", near ? "?)" : "", cli_progname);
	return CLI_EXIT_USAGE;
}
