/* SPDX-License-Identifier: MIT */
/*
 * cmd-completions.c: "mergectl completions bash|zsh|fish" prints a shell
 * completion script, and "mergectl __complete WHAT" answers it: the
 * commands, the job states, or the jobs of a daemon that already runs.
 *
 * The scripts hold no lists of their own: commands, states and jobs come
 * from __complete, each command's options from its --help, so that they
 * never fall behind the program.  Completion never starts a daemon (a
 * tab key must not), and says nothing when none answers.
 */
#include <stdio.h>
#include <string.h>

#include <cJSON.h>

#include "cli.h"

static const char bash_script[] =
    "# bash completion for mergectl (mergectl completions bash)\n"
    "_mergectl() {\n"
    "\tlocal cur prev cmd opts\n"
    "\tcur=${COMP_WORDS[COMP_CWORD]}\n"
    "\tprev=${COMP_WORDS[COMP_CWORD-1]}\n"
    "\tCOMPREPLY=()\n"
    "\tif [ \"$COMP_CWORD\" -eq 1 ]; then\n"
    "\t\tCOMPREPLY=($(compgen -W \"$(mergectl __complete commands "
    "2>/dev/null)\" -- \"$cur\"))\n"
    "\t\treturn 0\n"
    "\tfi\n"
    "\tcmd=${COMP_WORDS[1]}\n"
    "\tcase $prev in\n"
    "\t--state)\n"
    "\t\tCOMPREPLY=($(compgen -W \"$(mergectl __complete states "
    "2>/dev/null)\" -- \"$cur\"))\n"
    "\t\treturn 0 ;;\n"
    "\t--color)\n"
    "\t\tCOMPREPLY=($(compgen -W \"auto always never\" -- \"$cur\"))\n"
    "\t\treturn 0 ;;\n"
    "\t--on-done)\n"
    "\t\tCOMPREPLY=($(compgen -c -- \"$cur\"))\n"
    "\t\treturn 0 ;;\n"
    "\t--after)\n"
    "\t\tCOMPREPLY=($(compgen -W \"$(mergectl __complete jobs "
    "2>/dev/null)\" -- \"$cur\"))\n"
    "\t\treturn 0 ;;\n"
    "\t-o|--out|--out-path|--socket|--intermediate-dir|"
    "--transformers-cache|--model|--base-model)\n"
    "\t\tCOMPREPLY=($(compgen -f -- \"$cur\"))\n"
    "\t\treturn 0 ;;\n"
    "\tesac\n"
    "\tif [[ $cur == -* ]]; then\n"
    "\t\topts=$(mergectl \"$cmd\" --help 2>/dev/null |\n"
    "\t\t    grep -o -- '--[a-z][a-z0-9-]*' | sort -u)\n"
    "\t\tCOMPREPLY=($(compgen -W \"$opts\" -- \"$cur\"))\n"
    "\t\treturn 0\n"
    "\tfi\n"
    "\tcase $cmd in\n"
    "\tstatus|watch|logs|cancel|resume|rm)\n"
    "\t\tCOMPREPLY=($(compgen -W \"$(mergectl __complete jobs "
    "2>/dev/null)\" -- \"$cur\")) ;;\n"
    "\thelp)\n"
    "\t\tCOMPREPLY=($(compgen -W \"$(mergectl __complete commands "
    "2>/dev/null)\" -- \"$cur\")) ;;\n"
    "\tcompletions)\n"
    "\t\tCOMPREPLY=($(compgen -W \"bash zsh fish\" -- \"$cur\")) ;;\n"
    "\tdaemon)\n"
    "\t\tCOMPREPLY=($(compgen -W \"start stop status\" -- \"$cur\")) ;;\n"
    "\t*)\n"
    "\t\tCOMPREPLY=($(compgen -f -- \"$cur\")) ;;\n"
    "\tesac\n"
    "\treturn 0\n"
    "}\n"
    "complete -F _mergectl mergectl\n";

/* zsh runs the bash function through its own emulation of bash's. */
static const char zsh_script[] =
    "#compdef mergectl\n"
    "# zsh completion for mergectl (mergectl completions zsh): the bash\n"
    "# one, through zsh's bashcompinit.\n"
    "autoload -U +X bashcompinit && bashcompinit\n";

static const char fish_script[] =
    "# fish completion for mergectl (mergectl completions fish)\n"
    "complete -c mergectl -f\n"
    "complete -c mergectl -n __fish_use_subcommand "
    "-a '(mergectl __complete commands 2>/dev/null)'\n"
    "complete -c mergectl -n '__fish_seen_subcommand_from status watch "
    "logs cancel resume rm' -a '(mergectl __complete jobs 2>/dev/null)'\n"
    "complete -c mergectl -n '__fish_seen_subcommand_from status list' "
    "-l state -x -a '(mergectl __complete states 2>/dev/null)'\n"
    "complete -c mergectl -n '__fish_seen_subcommand_from status list' "
    "-l color -x -a 'auto always never'\n"
    "complete -c mergectl -n '__fish_seen_subcommand_from submit run "
    "plan' -F\n"
    "complete -c mergectl -n '__fish_seen_subcommand_from daemon' "
    "-a 'start stop status'\n"
    "complete -c mergectl -n '__fish_seen_subcommand_from completions' "
    "-a 'bash zsh fish'\n";

int
cli_cmd_completions(int argc, char **argv)
{
	if (argc == 2 && strcmp(argv[1], "bash") == 0) {
		fputs(bash_script, stdout);
	} else if (argc == 2 && strcmp(argv[1], "zsh") == 0) {
		fputs(zsh_script, stdout);
		fputs(bash_script, stdout);
	} else if (argc == 2 && strcmp(argv[1], "fish") == 0) {
		fputs(fish_script, stdout);
	} else if (argc == 2 && (strcmp(argv[1], "--help") == 0 ||
	    strcmp(argv[1], "-h") == 0)) {
		printf("usage: %s completions bash|zsh|fish\n%s\n\n"
		    "Prints the script; for one shell session:\n"
		    "  source <(%s completions bash)\n"
		    "meson install puts them where bash-completion, zsh and "
		    "fish look.\nCompletion lists job ids from a daemon that "
		    "already runs; it never starts one.\n", cli_progname,
		    cli_command_summary("completions"), cli_progname);
	} else {
		cli_usage_error("completions takes one of bash, zsh, fish");
		return CLI_EXIT_USAGE;
	}
	return CLI_EXIT_OK;
}

/* The ids of the daemon's jobs, newest page first: nothing on error. */
static void
complete_jobs(void)
{
	struct cli_conn c;
	const cJSON *j;
	cJSON *req, *r;

	/* Completion never starts a daemon; its errors go to stderr,
	 * which the scripts send to /dev/null. */
	if (cli_open(&c, NULL, false) != 0)
		return;
	req = cli_new_request(&c, PROTO_OP_LIST);
	r = cli_call(&c, req, NULL, 0);
	if (r != NULL && cli_check_reply(r, false) == 0)
		cJSON_ArrayForEach(j, cJSON_GetObjectItem(r, PROTO_F_JOBS))
			printf("%.0f\n", cli_json_num(j, PROTO_F_ID));
	cJSON_Delete(r);
	cli_disconnect(&c);
}

int
cli_cmd_complete(int argc, char **argv)
{
	enum job_state s;

	if (argc != 2)
		return CLI_EXIT_USAGE;
	if (strcmp(argv[1], "commands") == 0) {
		cli_print_commands();
	} else if (strcmp(argv[1], "states") == 0) {
		for (s = 0; s < JOB_NSTATES; s++)
			printf("%s\n", proto_state_name(s));
	} else if (strcmp(argv[1], "jobs") == 0) {
		complete_jobs();
	} else {
		return CLI_EXIT_USAGE;
	}
	return CLI_EXIT_OK;
}
