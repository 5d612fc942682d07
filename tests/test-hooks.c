/* SPDX-License-Identifier: MIT */
/*
 * test-hooks.c: what the queue tells its users and does for them, on a
 * real personal daemon (issue 17): completion hooks (submit --on-done,
 * merged --on-done) with their environment, no shell, timeout and log;
 * one JSON object for every refusal under --json; the plan's warnings
 * at submit.  Split from test-daemon so that the two run side by side
 * (under ThreadSanitizer each takes minutes).
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cJSON.h>

#include "tap.h"
#include "testd.h"
#include "testlib.h"

static const char *dir;

static void
write_cfg(const char *name, const char *text)
{
	tl_write_at(dir, name, text);
}

/* Waits (up to ms) for needle in job id's log; the log, or NULL. */
static char *
wait_log(int id, const char *needle, int ms)
{
	char *o = NULL;

	for (; ms > 0; ms -= 50) {
		free(o);
		o = NULL;
		if (td_ctl(&o, "logs %d", id) == 0 && strstr(o, needle) != NULL)
			return o;
		td_sleep_ms(50);
	}
	tap_diag("job %d's log has no '%s': %s", id, needle, o ? o : "");
	free(o);
	return NULL;
}

/*
 * Completion hooks (submit --on-done, merged --on-done): run without a
 * shell, from /, with the job's facts in a clean environment, after
 * done, failed and cancelled; killed at --hook-timeout, with what they
 * leave behind; what they print and how they ended in the job's log.
 */
static void
test_on_done(pid_t *pid)
{
	char *o = NULL, *l, want[700];
	int rc, id, big, after;

	td_stop(*pid, SIGTERM);
	*pid = td_start("--max-running 1 --memory 24M --threads 1 "
	    "--hook-timeout 3 --on-done 'printenv MERGED_JOB_ID "
	    "MERGED_JOB_STATE'", NULL);
	id = td_submit("slerp.yml -o h-env --on-done env --wait");
	l = wait_log(id, "on-done hook (env) exited 0", 30000);
	snprintf(want, sizeof want, "on-done hook: MERGED_JOB_ID=%d\n", id);
	ok_str_has(l, want, "a hook has the job's id in its environment");
	ok_str_has(l, "on-done hook: MERGED_JOB_STATE=done\n", "its state");
	snprintf(want, sizeof want, "on-done hook: MERGED_JOB_OUTPUT=%s/h-env"
	    "\n", dir);
	ok_str_has(l, want, "and its output");
	ok(l != NULL && strstr(l, "PATH=/usr/local/bin:/usr/bin:/bin\n") &&
	    !strstr(l, "OPENBLAS") && !strstr(l, "MERGED_SOCKET"), "and "
	    "nothing of the daemon's environment");
	free(l);
	snprintf(want, sizeof want, "the daemon's on-done hook: %d\n", id);
	l = wait_log(id, want, 30000);
	ok_str_has(l, "the daemon's on-done hook: done\n", "merged "
	    "--on-done runs for the job too");
	free(l);

	id = td_submit("slerp.yml -o h-literal --on-done 'echo $HOME;x "
	    "\"two  words\"'");
	/* Its own hook's last line: the daemon's may come first. */
	l = wait_log(id, "on-done hook (echo '$HOME;x' 'two  words') "
	    "exited 0", 30000);
	ok_str_has(l, "on-done hook: $HOME;x two  words\n", "no shell reads "
	    "the command: $, ; and quotes are the words'");
	free(l);
	id = td_submit("slerp.yml -o h-pwd --on-done 'sh -c pwd'");
	l = wait_log(id, "on-done hook (sh -c pwd) exited 0", 30000);
	ok_str_has(l, "on-done hook: /\n", "it runs from /");
	free(l);

	big = td_submit("big.yml -o h-big --on-done 'printenv "
	    "MERGED_JOB_STATE'");
	after = td_submit("slerp.yml -o h-after --after %d --on-done "
	    "'printenv MERGED_JOB_STATE MERGED_JOB_ERROR'", big);
	rc = td_ctl(&o, "cancel %d", big);
	free(o);
	l = wait_log(big, "on-done hook (printenv MERGED_JOB_STATE) exited",
	    30000);
	ok(rc == 0 && l != NULL && strstr(l, "on-done hook: cancelled\n"),
	    "a cancelled job's hook runs, and knows");
	free(l);
	l = wait_log(after, "on-done hook (printenv MERGED_JOB_STATE "
	    "MERGED_JOB_ERROR) exited", 30000);
	snprintf(want, sizeof want, "on-done hook: job %d, which it runs "
	    "after, was cancelled\n", big);
	ok(l != NULL && strstr(l, "on-done hook: failed\n") && strstr(l,
	    want), "a failed job's hook has its state and error");
	free(l);

	id = td_submit("slerp.yml -o h-sleep --on-done 'sleep 60'");
	l = wait_log(id, "on-done hook (sleep 60) killed after 3 seconds "
	    "(merged --hook-timeout)", 60000);
	ok(l != NULL, "a hook over --hook-timeout is killed, and its log "
	    "says so");
	free(l);
	id = td_submit("slerp.yml -o h-bg --on-done 'sh -c \"sleep 60 & "
	    "echo started\"'");
	l = wait_log(id, "on-done hook (sh -c 'sleep 60 & echo started') "
	    "exited", 60000);
	ok(l != NULL && strstr(l, "on-done hook: started\n") &&
	    !strstr(l, "killed after"), "a hook that leaves a child behind "
	    "ends when it exits, not at the timeout");
	free(l);
	id = td_submit("slerp.yml -o h-none --on-done './no-such-program x'");
	snprintf(want, sizeof want, "on-done hook (%s/no-such-program x) "
	    "could not start: no such file or directory", dir);
	l = wait_log(id, want, 30000);
	ok(l != NULL, "a hook that cannot start says why, with its path "
	    "made absolute where it was given");
	free(l);

	rc = td_ctl(&o, "submit slerp.yml -o h-bad --on-done \"'open\"");
	ok(rc == 2 && strstr(o, "--on-done: the command has a single quote "
	    "that is not closed"), "a command that does not parse is a "
	    "usage error (exit %d)", rc);
	free(o);
	td_stop(*pid, SIGTERM);
	*pid = td_start("--memory 256M", NULL);
	rc = td_ctl(&o, "status %d", id);
	snprintf(want, sizeof want, "on done       %s/no-such-program x\n",
	    dir);
	ok(rc == 0 && strstr(o, want), "the hook is kept in the store "
	    "across a restart and shown by status");
	free(o);
}

/*
 * Under --json every refusal is one object on stdout, {"ok":false,
 * "error":{"code":...}}, whether mergectl or the daemon found it, with
 * the exit code the README lists for it.
 */
static void
test_json_every_error(void)
{
	static const char *const cmds[] = { "run", "plan", "submit",
	    "status", "list", "watch", "logs", "cancel", "resume", "rm",
	    "clean", "daemon", "extract-lora", "completions", "help" };
	struct {
		const char *args;
		int rc;
		const char *code;
	} cases[] = {
		{ "status 999999", 6, "not_found" },
		{ "watch 999999", 6, "not_found" },
		{ "logs 999999", 6, "not_found" },
		{ "cancel DONE", 1, "conflict" },
		{ "resume DONE", 1, "conflict" },
		{ "submit slerp.yml -o j-done", 4, "exists" },
		{ "submit slerp.yml -o j-x --after 999999", 6, "not_found" },
		{ "submit bad.yml -o j-y", 3, "bad_config" },
		{ "submit slerp.yml -o j-z --memory 1K", 3, "bad_config" },
		{ "plan bad.yml", 3, "bad_config" },
		{ "status notajob", 2, "usage" },
		{ "submit slerp.yml -o j-w --on-done \"'x\"", 2, "usage" },
	};
	char *o = NULL, args[256], *p;
	const char *code;
	cJSON *r;
	size_t i;
	int rc, done;

	done = td_submit("slerp.yml -o j-done --wait");
	for (i = 0; i < sizeof cmds / sizeof *cmds; i++) {
		rc = tl_runf(&o, "cd %s && MERGED_SOCKET=%s %s %s --json "
		    "--no-such-option 2>/dev/null", td_dir, td_sock,
		    tl_mergectl, cmds[i]);
		r = o != NULL ? cJSON_Parse(o) : NULL;
		code = cJSON_GetStringValue(cJSON_GetObjectItem(
		    cJSON_GetObjectItem(r, "error"), "code"));
		ok(rc == 2 && cJSON_IsFalse(cJSON_GetObjectItem(r, "ok")) &&
		    code != NULL && strcmp(code, "usage") == 0, "%s --json, a "
		    "usage error: one object on stdout, code usage, exit %d",
		    cmds[i], rc);
		cJSON_Delete(r);
		free(o);
	}
	for (i = 0; i < sizeof cases / sizeof *cases; i++) {
		snprintf(args, sizeof args, "%s", cases[i].args);
		if ((p = strstr(args, "DONE")) != NULL)
			snprintf(p, sizeof args - (size_t)(p - args), "%d",
			    done);
		rc = tl_runf(&o, "cd %s && MERGED_SOCKET=%s %s %s --json "
		    "2>/dev/null", td_dir, td_sock, tl_mergectl, args);
		r = o != NULL ? cJSON_Parse(o) : NULL;
		code = cJSON_GetStringValue(cJSON_GetObjectItem(
		    cJSON_GetObjectItem(r, "error"), "code"));
		if (!ok(rc == cases[i].rc && cJSON_IsFalse(cJSON_GetObjectItem(
		    r, "ok")) && code != NULL && strcmp(code, cases[i].code) ==
		    0, "%s --json: one object, code %s, exit %d", args,
		    cases[i].code, cases[i].rc))
			tap_diag("exit %d: %s", rc, o ? o : "");
		cJSON_Delete(r);
		free(o);
	}
}

/* What run warns of, submit says too: the daemon's plan sends it. */
static void
test_submit_warnings(void)
{
	char *o = NULL;
	int rc;

	write_cfg("warn.yml", "merge_method: slerp\nbase_model: ./a\n"
	    "models:\n  - model: ./a\n  - model: ./b\n    parameters: "
	    "{density: 0.5}\nparameters:\n  t: 0.5\n");
	rc = td_ctl(&o, "submit warn.yml -o w-out");
	ok(rc == 0 && o != NULL && strstr(o, "warn.yml:6:18: warning: "
	    "'density' is not a parameter of slerp"), "submit prints the "
	    "plan's warnings, as run does");
	if (o != NULL && strstr(o, "warning:") == NULL)
		tap_diag("%s", o);
	free(o);
}

static void
setup(void)
{
	tl_gen_at(dir, "a", "--family llama --seed 1");
	tl_gen_at(dir, "b", "--family llama --seed 2 --finetune-of 1 --delta "
	    "0.01");
	tl_gen_at(dir, "xa", "--family llama --hidden 1024 --intermediate 2816 "
	    "--layers 12 --vocab 8192 --heads 8 --kv-heads 4 --seed 5");
	tl_gen_at(dir, "xb", "--family llama --hidden 1024 --intermediate 2816 "
	    "--layers 12 --vocab 8192 --heads 8 --kv-heads 4 --seed 6 "
	    "--finetune-of 5 --delta 0.01");
	write_cfg("slerp.yml", "merge_method: slerp\nbase_model: ./a\n"
	    "models:\n  - model: ./a\n  - model: ./b\nparameters:\n  t:\n"
	    "    - filter: mlp\n      value: [0, 1]\n    - value: 0.4\n");
	write_cfg("big.yml", "merge_method: slerp\nbase_model: ./xa\n"
	    "models:\n  - model: ./xa\n  - model: ./xb\nparameters:\n"
	    "  t: 0.3\n");
	write_cfg("bad.yml", "merge_method: slerp\nbase_model: ./a\n"
	    "models:\n  - model: ./a\n  - model: ./b\nparamters:\n  t: 0.5\n");
}

int
main(int argc, char **argv)
{
	pid_t pid;

	tl_init(argc, argv);
	tap_plan_lazy();
	dir = tl_tmpdir("hooks");
	td_init(dir);
	setup();
	pid = td_start("--memory 256M", NULL);
	test_on_done(&pid);
	test_json_every_error();
	test_submit_warnings();
	ok_int_eq(td_stop(pid, SIGTERM), 0, "the daemon stops cleanly at "
	    "the end");
	return tap_done();
}
