/* SPDX-License-Identifier: MIT */
/*
 * test-daemon.c: merged and mergectl together: a real daemon process, a
 * real socket, a real SQLite store, real generated models.
 *
 * Covers submit --wait (bytes equal to mergectl run), rejection at
 * submit with the same messages, the queue, dependencies, cancel, a
 * per-job memory cap, kill -9 and restart (the store stays sound, the
 * job comes back interrupted, resume gives byte-identical output),
 * SIGTERM draining, a client that vanishes mid-watch, protocol errors,
 * two clients starting a daemon at once, and -- when run as root -- a
 * second user who can neither act on another's job nor make the daemon
 * read or write what that user could not.
 */
#define _GNU_SOURCE
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tap.h"
#include "testd.h"
#include "testlib.h"

#define NOBODY 65534

static const char *dir;
static int resumed_job;		/* root's, for the second user to try */
static int nobody_job;

static void
write_cfg(const char *name, const char *text)
{
	tl_write_at(dir, name, text);
}

static bool
same(const char *a, const char *b)
{
	return tl_same_at(dir, a, b);
}

static void
test_submit(void)
{
	char *o = NULL, *id;
	int rc;

	rc = tl_runf(&o, "cd %s && %s run slerp.yml ref-slerp --quiet "
	    "--random-seed 7 2>&1", dir, tl_mergectl);
	ok_int_eq(rc, 0, "reference: mergectl run exits 0");
	free(o);
	rc = td_ctl(&o, "submit slerp.yml -o d-slerp --wait --random-seed 7 "
	    "--quiet");
	ok_int_eq(rc, 0, "submit --wait exits 0 when the job is done");
	ok_str_eq(o, "1\n", "submit prints the job id");
	free(o);
	ok(same("ref-slerp/model.safetensors", "d-slerp/model.safetensors") &&
	    same("ref-slerp/config.json", "d-slerp/config.json"),
	    "the daemon's output is byte-identical to mergectl run's");
	rc = td_ctl(&o, "logs 1");
	ok(rc == 0 && strstr(o, "submitted by") && strstr(o, "done"),
	    "logs show the job's life");
	free(o);
	id = td_job_field(1, "shards_done");
	ok_str_eq(id, "1", "status: the one shard is recorded done");
	free(id);
	/* A second job reading the same inputs finds them decoded. */
	rc = td_ctl(&o, "submit slerp.yml -o d-slerp-again --wait --quiet "
	    "--random-seed 7");
	free(o);
	rc |= td_ctl(&o, "daemon status --json");
	ok(rc == 0 && strstr(o, "\"cache_hits\":0,") == NULL &&
	    strstr(o, "\"cache_hits\":") != NULL, "a second job on the same "
	    "inputs shares the decoded copies (%s)", o);
	free(o);
	ok(same("ref-slerp/model.safetensors",
	    "d-slerp-again/model.safetensors"), "with the same bytes");
	rc = td_ctl(&o, "submit bad.yml -o d-bad");
	ok_int_eq(rc, 3, "a bad config is refused at submit, exit 3");
	ok_str_has(o, "bad.yml:6:1: error: unknown key 'paramters' in the "
	    "config; did you mean 'parameters'?", "with mergectl run's "
	    "message");
	free(o);
	rc = td_ctl(&o, "submit missing-tensor.yml -o d-bad");
	ok_int_eq(rc, 3, "a missing donor tensor is refused at submit");
	ok_str_has(o, "has no tensor", "naming it");
	free(o);
	rc = td_ctl(&o, "submit slerp.yml -o d-slerp");
	ok_int_eq(rc, 4, "an existing output is refused, exit 4");
	free(o);
	rc = td_ctl(&o, "list --json");
	ok(rc == 0 && strstr(o, "d-bad") == NULL, "refused submissions are "
	    "not queued");
	free(o);
}

static void
test_queue(void)
{
	char *o = NULL, *s, *min;
	int rc, hold, failed, after;

	/* A cap no unit fits: refused at submit, with the least that fits,
	 * which plan and run name too. */
	rc = td_ctl(&o, "submit slerp.yml -o d-capped --memory 1K");
	ok_int_eq(rc, 3, "a job under its smallest memory is refused at "
	    "submit, exit 3");
	ok_str_has(o, "slerp.yml: error: --memory 1.0 KiB is too small for "
	    "this merge: it needs at least ", "saying the minimum");
	min = o != NULL && strstr(o, "at least ") != NULL ? strndup(strstr(o,
	    "at least "), strcspn(strstr(o, "at least "), "(")) : NULL;
	free(o);
	rc = tl_runf(&o, "cd %s && %s plan slerp.yml --memory 1K 2>&1", dir,
	    tl_mergectl);
	ok(rc == 3 && min != NULL && strstr(o, min) != NULL, "plan refuses "
	    "it with the same minimum (%s)", min ? min : "none");
	free(o);
	rc = tl_runf(&o, "cd %s && %s run slerp.yml d-capped --memory 1K "
	    "2>&1", dir, tl_mergectl);
	ok(rc == 3 && min != NULL && strstr(o, min) != NULL, "so does run");
	free(o);
	free(min);
	rc = td_ctl(&o, "submit slerp.yml -o d-capped --after 999");
	ok_int_eq(rc, 6, "--after a job that does not exist: exit 6");
	ok_str_has(o, "--after 999: no such job", "saying so");
	free(o);

	/* One output, two live jobs: the second would fail at its end. */
	hold = td_submit("big.yml -o d-hold");
	rc = td_ctl(&o, "submit slerp.yml -o d-twice --after %d", hold);
	free(o);
	rc = td_ctl(&o, "submit slerp.yml -o d-twice --after %d", hold);
	ok_int_eq(rc, 4, "a second job writing a live job's output: exit 4");
	ok_str_has(o, "d-twice is the output of job ", "naming the job");
	free(o);
	rc = td_ctl(&o, "submit slerp.yml -o d-twice --after %d --force",
	    hold);
	ok_int_eq(rc, 0, "with --force it replaces that result after it");
	free(o);

	/* A job after one that is cancelled fails, and so does one after
	 * that. */
	failed = td_submit("slerp.yml -o d-after-cancelled --after %d", hold);
	rc = td_ctl(&o, "cancel %d", hold);
	free(o);
	rc = td_ctl(&o, "watch %d --quiet", failed);
	ok_int_eq(rc, 1, "a job after a cancelled one fails");
	free(o);
	s = td_job_field(failed, "error");
	ok_str_has(s, "which it runs after, was cancelled", "saying why");
	free(s);
	after = td_submit("slerp.yml -o d-after-failed --after %d", failed);
	rc = td_ctl(&o, "watch %d --quiet", after);
	ok_int_eq(rc, 1, "a job after a failed one fails");
	free(o);
	s = td_job_field(after, "error");
	ok(strstr(s, "which it runs after, failed") != NULL, "with the "
	    "reason: %s", s);
	free(s);
	after = td_submit("slerp.yml -o d-after-done --after 1 --priority 5 "
	    "--name second");
	rc = td_ctl(&o, "watch %d --quiet", after);
	ok_int_eq(rc, 0, "a job after a done one runs");
	free(o);
	rc = td_ctl(&o, "list");
	ok(rc == 0 && strstr(o, "second") && strstr(o, "failed") &&
	    strstr(o, "done"), "the queue table lists names and states");
	free(o);
	rc = td_ctl(&o, "status 99");
	ok_int_eq(rc, 6, "no such job: exit 6");
	free(o);
}

static void
test_cancel(pid_t *pid)
{
	char *o = NULL;
	int rc, first, second;

	/* One job at a time, slowly: the second waits behind the first. */
	td_stop(*pid, SIGTERM);
	*pid = td_start("--max-running 1 --memory 24M --threads 1", NULL);
	first = td_submit("big.yml -o d-big1");
	second = td_submit("big.yml -o d-big2");
	ok(first && second && td_wait_state(first, "running", 20000),
	    "a big job runs");
	ok(td_wait_state(second, "queued", 100), "the next waits queued");
	rc = td_ctl(&o, "cancel %d", second);
	ok(rc == 0 && td_wait_state(second, "cancelled", 2000), "a queued job "
	    "is cancelled");
	free(o);
	rc = td_ctl(&o, "cancel %d", first);
	ok(rc == 0 && td_wait_state(first, "cancelled", 20000), "a running job "
	    "is cancelled");
	free(o);
	ok(!td_staging_left("d-big1") && !tl_exists("d-big1"), "and leaves "
	    "neither output nor staging directory");
	rc = td_ctl(&o, "cancel %d", first);
	ok_int_eq(rc, 1, "cancelling it again is a conflict");
	ok_str_has(o, "is cancelled", "saying its state");
	free(o);
}

/* kill -9 mid-job; restart; resume; the same bytes as an unbroken run. */
static void
test_kill_resume(pid_t *pid)
{
	char *o = NULL, *s, sql[512];
	int rc, id;

	rc = tl_runf(&o, "cd %s && %s run big.yml ref-big --quiet "
	    "--random-seed 11 --out-shard-size 40M 2>&1", dir, tl_mergectl);
	ok_int_eq(rc, 0, "reference big merge");
	free(o);
	id = td_submit("big.yml -o d-resumed --random-seed 11 --out-shard-size "
	    "40M");
	resumed_job = id;
	ok(id && td_wait_shards(id, 1, 30000), "the job has a shard on disk");
	kill(*pid, SIGKILL);
	waitpid(*pid, NULL, 0);
	ok(td_staging_left("d-resumed"), "after kill -9 the staging directory "
	    "is there");
	ok(td_store_ok(), "the store passes PRAGMA integrity_check");
	/* As a merged that recorded weights only wrote it: the resume
	 * takes the side files (tokenizer...) as they are now. */
	snprintf(sql, sizeof sql, "UPDATE jobs SET inputs = (SELECT "
	    "json_group_array(json(value)) FROM json_each(jobs.inputs) WHERE "
	    "json_extract(value, '$.path') LIKE '%%.safetensors') WHERE id = "
	    "%d", id);
	ok(td_store_exec(sql), "its inputs, as an older merged recorded them: "
	    "the weights only");
	*pid = td_start("--max-running 1 --memory 24M --threads 1", NULL);
	s = td_job_field(id, "state");
	ok_str_eq(s, "interrupted", "after restart the job is interrupted");
	free(s);
	rc = td_ctl(&o, "resume %d --quiet", id);
	ok_int_eq(rc, 0, "resume exits 0");
	free(o);
	rc = td_ctl(&o, "watch %d --quiet", id);
	ok_int_eq(rc, 0, "watch exits 0: the resumed job is done");
	free(o);
	rc = tl_runf(&o, "cd %s && for f in ref-big/*.safetensors "
	    "ref-big/*.json; do cmp $f d-resumed/$(basename $f) || exit 1; "
	    "done 2>&1", dir);
	ok_int_eq(rc, 0, "every shard and the index are byte-identical to "
	    "the uninterrupted run");
	free(o);
	rc = td_ctl(&o, "logs %d", id);
	ok(strstr(o, "resumed by") != NULL, "the log records the resume");
	free(o);
}

/* An input that changed since submit makes the resume fail, clearly. */
static void
test_resume_changed(pid_t *pid)
{
	char *o = NULL, *s;
	int rc, id;

	id = td_submit("big.yml -o d-changed --out-shard-size 40M");
	ok(id && td_wait_shards(id, 1, 30000), "the job has a shard on disk");
	kill(*pid, SIGKILL);
	waitpid(*pid, NULL, 0);
	/* First only the tokenizer the output copies changes. */
	rc = tl_runf(&o, "cd %s && touch -r xa/tokenizer_config.json tok.ref "
	    "&& touch -d '2001-01-01' xa/tokenizer_config.json", dir);
	free(o);
	*pid = td_start("--max-running 1 --memory 24M --threads 1", NULL);
	rc = td_ctl(&o, "resume %d", id);
	ok(rc == 3 && o != NULL && strstr(o, "xa/tokenizer_config.json "
	    "changed since the job was submitted"), "resume refuses a job "
	    "whose input's tokenizer changed (exit %d)", rc);
	free(o);
	/* Then, the tokenizer as it was, a weight file. */
	rc = tl_runf(&o, "cd %s && touch -r tok.ref xa/tokenizer_config.json "
	    "&& touch -d '2001-01-01' xb/model.safetensors", dir);
	free(o);
	rc = td_ctl(&o, "resume %d", id);
	ok_int_eq(rc, 3, "resume refuses a job whose input changed (exit 3)");
	ok_str_has(o, "xb/model.safetensors changed since the job was "
	    "submitted", "naming the file");
	free(o);
	s = td_job_field(id, "state");
	ok_str_eq(s, "interrupted", "the job stays interrupted");
	free(s);
	rc = td_ctl(&o, "cancel %d", id);
	ok(rc == 0 && !td_staging_left("d-changed"), "cancelling it removes its "
	    "staging directory");
	free(o);
	/* Later tests merge xb again: give it back its planned time. */
	rc = tl_runf(&o, "touch %s/xb/model.safetensors", dir);
	free(o);
}

/* SIGTERM: running jobs are interrupted, the daemon exits cleanly. */
static void
test_drain(pid_t *pid)
{
	char *o = NULL, *s;
	double t0;
	int rc, id;

	id = td_submit("big.yml -o d-drained");
	ok(id && td_wait_state(id, "running", 20000), "the job runs");
	s = td_job_field(id, "bytes_total");
	ok(atof(s) > 0, "and shows its total bytes from the start (%s)", s);
	free(s);
	t0 = (double)time(NULL);
	rc = td_stop(*pid, SIGTERM);
	ok_int_eq(rc, 0, "SIGTERM: merged exits 0 (uv_loop_close returned 0)");
	/* That the job is interrupted (below), not done, shows the drain did
	 * not wait for it; the time is only reported (no wall-clock bound on
	 * a busy machine). */
	tap_diag("drained in %.0f s", (double)time(NULL) - t0);
	*pid = td_start("--memory 256M", NULL);
	s = td_job_field(id, "state");
	ok_str_eq(s, "interrupted", "the drained job is interrupted");
	free(s);
	s = td_job_field(id, "error");
	ok_str_has(s, "resume", "and says how to continue");
	free(s);
	rc = td_ctl(&o, "resume %d --quiet", id);
	free(o);
	rc |= td_ctl(&o, "watch %d --quiet", id);
	free(o);
	ok_int_eq(rc, 0, "resumed after a drain, it completes");
}

static void
raw_exchange(const char *what, const char *send_, size_t len,
    const char *want)
{
	char *got;
	int fd = td_raw_connect();

	ok(fd >= 0 && write(fd, send_, len) == (ssize_t)len, "%s: sent", what);
	got = td_raw_read_all(fd, 5);
	ok_str_has(got, want, "%s: one error, then the daemon closes", what);
	free(got);
	close(fd);
}

static void
test_protocol(void)
{
	char *big, *o = NULL;
	size_t n = (320u << 10) + 100;

	raw_exchange("garbage", "not json\n", 9, "\"code\":\"bad_request\"");
	raw_exchange("no hello", "{\"v\":2,\"id\":3,\"op\":\"list\"}\n", 28,
	    "the first request must be hello");
	raw_exchange("another version", "{\"v\":3,\"id\":1,\"op\":\"hello\"}\n",
	    28, "bad_version");
	big = malloc(n);
	memset(big, 'x', n);
	raw_exchange("an oversized line", big, n, "line too long");
	free(big);
	raw_exchange("a NUL byte", "{\"v\":2,\0\"id\":1}\n", 16,
	    "\"code\":\"bad_request\"");
	ok_int_eq(td_ctl(&o, "daemon status"), 0, "and the daemon still serves "
	    "everyone else");
	free(o);
}

/*
 * Pipelining: hello and a submit with its descriptors sent back to back,
 * so that the kernel may hand both lines over in one read; the submit
 * must still find its descriptors.
 */
static void
test_pipelined_fds(void)
{
	char line[4096], *cfg, *got, path[4096];
	int fds[3], fd, i;
	size_t len, first;

	snprintf(path, sizeof path, "%s/slerp.yml", dir);
	cfg = tl_read(path, NULL);
	fds[0] = open(dir, O_RDONLY | O_DIRECTORY);
	fds[1] = open(dir, O_RDONLY | O_DIRECTORY);
	fds[2] = open(dir, O_RDONLY | O_DIRECTORY);
	for (len = 0, i = 0; cfg[i] != '\0'; i++)	/* JSON-escape newlines */
		len += cfg[i] == '\n' ? 2 : 1;
	{
		char *esc = malloc(len + 1), *p = esc;
		for (i = 0; cfg[i] != '\0'; i++) {
			if (cfg[i] == '\n') {
				*p++ = '\\';
				*p++ = 'n';
			} else {
				*p++ = cfg[i];
			}
		}
		*p = '\0';
		snprintf(line, sizeof line, "{\"v\":2,\"id\":1,\"op\":\"hello\"}\n"
		    "{\"v\":2,\"id\":2,\"op\":\"submit\",\"config\":\"%s\","
		    "\"config_name\":\"p.yml\",\"cwd\":\"%s\",\"out\":\"%s/pipe\","
		    "\"out_name\":\"pipe\",\"out_fd\":2,\"fds\":3,\"models\":["
		    "{\"ref\":\"./a\",\"fd\":0,\"rel\":\"a\"},{\"ref\":\"./b\","
		    "\"fd\":1,\"rel\":\"b\"}]}\n", esc, dir, dir);
		free(esc);
	}
	free(cfg);
	fd = td_raw_connect();
	/* Line one alone, then line two with the descriptors, at once. */
	len = strlen(line);
	first = (size_t)(strchr(line, '\n') - line) + 1;
	ok(write(fd, line, first) == (ssize_t)first, "pipelined: hello");
	ok(td_send_fds(fd, line + first, len - first, fds, 3), "pipelined: a "
	    "submit with three descriptors right behind it");
	shutdown(fd, SHUT_WR);
	got = td_raw_read_all(fd, 5);
	ok_str_has(got, "{\"id\":2,\"ok\":true", "the submit found its "
	    "descriptors");
	free(got);
	close(fd);
	for (i = 0; i < 3; i++)
		close(fds[i]);
}

/*
 * The longest redrawn line of a terminal's output (those that end by
 * erasing the rest of the line, ESC [ K), escapes left out; *n: how many.
 */
static int
longest_line(const char *s, int *n)
{
	int len = 0, most = 0;

	*n = 0;
	for (; *s != '\0'; s++) {
		if (s[0] == '\033' && s[1] == '[' && s[2] == 'K') {
			if (len > most)
				most = len;
			*n += 1;
			s += 2;
			continue;
		}
		if (*s == '\r' || *s == '\n')
			len = 0;
		else
			len++;
	}
	return most;
}

/*
 * watch on terminals (script(1) gives it a pseudo-terminal) of 60, 80 and
 * 160 columns, three at once on one running job: every redraw fits in
 * the line, so the bar never wraps into a scroll; a job queued behind it
 * says why; the last line says where the output went.
 */
static void
test_watch_tty(void)
{
	static const int widths[] = { 60, 80, 160 };
	char *o = NULL, *s, want[700];
	int hold, q, rc, i, most, n = 0;

	hold = td_submit("big.yml -o d-tty-hold");
	q = td_submit("slerp.yml -o d-tty-after --after %d", hold);
	s = td_job_field(q, "reason");
	snprintf(want, sizeof want, "dependency: waiting for job %d", hold);
	ok(hold && q && strstr(s, want) != NULL, "a queued job says why it "
	    "waits: %s", s);
	free(s);
	/* logs -f of the queued job, from before it runs to its end. */
	rc = tl_runf(&o, "cd %s && export MERGED_SOCKET=%s; %s logs -f %d "
	    ">logs-f 2>&1 & for w in 60 80 160; do script -qec \"stty cols "
	    "$w; %s watch %d\" /dev/null >tty-$w 2>&1 & done; wait", td_dir,
	    td_sock, tl_mergectl, q, tl_mergectl, hold);
	free(o);
	for (i = 0; i < 3; i++) {
		snprintf(want, sizeof want, "%s/tty-%d", td_dir, widths[i]);
		s = tl_read(want, NULL);
		most = s != NULL ? longest_line(s, &n) : 0;
		ok(s != NULL && most <= widths[i] - 1 && n >= 2 &&
		    strstr(s, "d-tty-hold, ") != NULL && strstr(s, "% ") !=
		    NULL, "watch at %d columns: %d lines, the longest %d "
		    "columns, then where the output is", widths[i], n, most);
		if (s == NULL || most > widths[i] - 1)
			tap_diag("%s", s ? s : "(none)");
		free(s);
	}
	snprintf(want, sizeof want, "%s/logs-f", td_dir);
	s = tl_read(want, NULL);
	snprintf(want, sizeof want, " root     job %d: ", q);
	ok(s != NULL && strstr(s, want) != NULL && strstr(s, "submitted by")
	    != NULL && strstr(s, ": done") != NULL && s[4] == '-' &&
	    s[13] == ':', "logs -f follows a queued job to its end, each line "
	    "with its time and owner:\n%s", s ? s : "(none)");
	free(s);
	rc = td_ctl(&o, "watch %d", q);
	snprintf(want, sizeof want, "job %d done: ", q);
	ok(rc == 0 && strstr(o, want) != NULL && strstr(o, "d-tty-after, ") !=
	    NULL, "without a terminal: plain lines and the closing one");
	free(o);
}

/* The widest line of a text, escapes (ESC [ ... final) left out. */
static int
widest_plain(const char *s)
{
	int len = 0, most = 0;

	for (; *s != '\0'; s++) {
		if (s[0] == '\033' && s[1] == '[') {
			for (s += 2; *s != '\0' && !(*s >= '@' && *s <= '~');
			    s++)
				continue;
			if (*s == '\0')
				break;
			continue;
		}
		if (*s == '\r' || *s == '\n') {
			len = 0;
			continue;
		}
		if (++len > most)
			most = len;
	}
	return most;
}

/*
 * The queue table: fits 80 and 160 columns, wider terminals get more
 * columns; states coloured on a terminal only, unless NO_COLOR or
 * --color say otherwise; filters by state, user, owner and name.
 */
static void
test_table(void)
{
	char *o = NULL;
	int rc, w;

	for (w = 80; w <= 160; w += 80) {
		rc = tl_runf(&o, "cd %s && MERGED_SOCKET=%s script -qec \"stty "
		    "cols %d; %s status --all\" /dev/null", td_dir, td_sock, w,
		    tl_mergectl);
		ok(rc == 0 && o != NULL && widest_plain(o) <= w - 1 &&
		    strstr(o, "\033[32mdone\033[0m") != NULL && (w < 120) ==
		    (strstr(o, " PRI ") == NULL), "status at %d columns: the "
		    "widest row %d columns, states in colour%s", w,
		    o ? widest_plain(o) : -1, w < 120 ? "" : ", PRI and DEPS");
		free(o);
	}
	rc = tl_runf(&o, "cd %s && MERGED_SOCKET=%s NO_COLOR=1 script -qec "
	    "\"%s status --all\" /dev/null", td_dir, td_sock, tl_mergectl);
	ok(rc == 0 && o != NULL && strstr(o, "\033[") == NULL && strstr(o,
	    " done ") != NULL, "NO_COLOR: no colour on a terminal");
	free(o);
	rc = td_ctl(&o, "status --all");
	ok(rc == 0 && o != NULL && strstr(o, "\033[") == NULL &&
	    widest_plain(o) <= 79, "no colour and 80 columns without a "
	    "terminal");
	free(o);
	rc = td_ctl(&o, "status --all --color=always");
	ok(rc == 0 && o != NULL && strstr(o, "\033[32mdone") != NULL,
	    "--color=always colours without one");
	free(o);
	rc = td_ctl(&o, "status --color=sometimes");
	ok(rc == 2 && strstr(o, "--color takes auto, always or never") !=
	    NULL, "--color=sometimes is a usage error");
	free(o);
	rc = td_ctl(&o, "status --all --state cancelled,failed");
	ok(rc == 0 && o != NULL && strstr(o, " cancelled ") != NULL &&
	    strstr(o, " failed ") != NULL && strstr(o, " done ") == NULL,
	    "--state cancelled,failed: only those");
	free(o);
	rc = td_ctl(&o, "status --state finished");
	ok(rc == 2 && strstr(o, "'finished' is no job state") != NULL,
	    "--state with an unknown state: a usage error naming it");
	free(o);
	rc = td_ctl(&o, "list --name 'd-tty*'");
	ok(rc == 0 && o != NULL && strstr(o, "d-tty-hold") != NULL &&
	    strstr(o, "d-slerp") == NULL, "--name GLOB");
	free(o);
	rc = td_ctl(&o, "list --mine --state done");
	ok(rc == 0 && o != NULL && strstr(o, " root ") != NULL,
	    "--mine: root's own jobs");
	free(o);
	rc = td_ctl(&o, "list --user nobody");
	ok(rc == 0 && o != NULL && strstr(o, " root ") == NULL, "--user "
	    "nobody: none of root's");
	free(o);
}

/* bash completes "mergectl WORDS..." (the last word being typed). */
static int
complete(char **out, const char *socket, const char *words)
{
	char bindir[4096], *slash;

	snprintf(bindir, sizeof bindir, "%s", tl_mergectl);
	if ((slash = strrchr(bindir, '/')) != NULL)
		*slash = '\0';
	return tl_runf(out, "cd %s && MERGED_SOCKET=%s PATH=%s:$PATH bash -c "
	    "'source <(mergectl completions bash) && COMP_WORDS=(%s) && "
	    "COMP_CWORD=$((${#COMP_WORDS[@]} - 1)) && _mergectl && printf "
	    "\"%%s\\n\" \"${COMPREPLY[@]}\"' 2>&1", td_dir, socket, bindir,
	    words);
}

/*
 * The completion scripts: each parses (bash -n where bash is; zsh and
 * fish when installed), and bash's completes commands, states, options
 * and the ids of a running daemon's jobs, without ever starting one.
 */
static void
test_completions(void)
{
	char *o = NULL, dead[700];
	int rc;

	rc = tl_runf(&o, "%s completions bash | bash -n 2>&1", tl_mergectl);
	ok(rc == 0, "the bash script parses (bash -n)");
	free(o);
	rc = tl_runf(&o, "%s completions zsh | grep -c bashcompinit && %s "
	    "completions fish | grep -c __fish_use_subcommand", tl_mergectl,
	    tl_mergectl);
	ok(rc == 0, "zsh's runs bash's through bashcompinit; fish's has its "
	    "own");
	free(o);
	rc = complete(&o, td_sock, "mergectl watch \"\"");
	ok(rc == 0 && o != NULL && strncmp(o, "1\n", 2) == 0 && strstr(o,
	    "\n2\n") != NULL, "watch <TAB>: the running daemon's job ids:\n%s",
	    o);
	free(o);
	rc = complete(&o, td_sock, "mergectl sta");
	ok(rc == 0 && o != NULL && strcmp(o, "status\n") == 0, "sta<TAB>: "
	    "status (%s)", o);
	free(o);
	rc = complete(&o, td_sock, "mergectl list --state can");
	ok(rc == 0 && o != NULL && strcmp(o, "cancelled\n") == 0, "--state "
	    "can<TAB>: cancelled");
	free(o);
	rc = complete(&o, td_sock, "mergectl logs --fo");
	ok(rc == 0 && o != NULL && strcmp(o, "--follow\n") == 0, "logs "
	    "--fo<TAB>: --follow, from logs --help");
	free(o);
	snprintf(dead, sizeof dead, "%s/nobody-here/m.sock", td_dir);
	rc = complete(&o, dead, "mergectl watch \"\"");
	ok(rc == 0 && o != NULL && strcmp(o, "\n") == 0 && !tl_exists(dead),
	    "without a daemon: nothing, and none is started");
	free(o);
}

/* A client killed mid-watch does not disturb anyone. */
static void
test_vanish(void)
{
	char *o = NULL;
	int rc, id;

	id = td_submit("big.yml -o d-watched");
	rc = tl_runf(&o, "cd %s && (MERGED_SOCKET=%s timeout -s KILL 1 %s "
	    "watch %d >/dev/null 2>&1; true)", dir, td_sock, tl_mergectl, id);
	free(o);
	ok(id && rc == 0, "a watcher was killed mid-watch");
	rc = td_ctl(&o, "watch %d --quiet", id);
	ok_int_eq(rc, 0, "the job still completes and another watch sees it");
	free(o);
}

/* Two clients auto-starting a daemon at once: exactly one survives. */
static void
test_autostart_race(void)
{
	char *o = NULL, s2[100];
	int rc;

	/* A short path: socket names are limited to 107 bytes. */
	snprintf(s2, sizeof s2, "%s/r/m.sock", dir);
	rc = tl_runf(&o, "cd %s && export MERGED_SOCKET=%s XDG_STATE_HOME=%s/"
	    "race-state MERGED_BIN=%s; %s daemon start -q & %s daemon start -q "
	    "& wait; %s daemon status", dir, s2, dir, tl_merged, tl_mergectl,
	    tl_mergectl, tl_mergectl);
	ok_int_eq(rc, 0, "two concurrent auto-starts leave a daemon "
	    "answering");
	free(o);
	/*
	 * "[-]" keeps the shell running pgrep from matching itself.  The
	 * loser may still be on its way out (under ASan, LeakSanitizer's
	 * scan at exit takes a while): given up to 30 s to go.
	 */
	rc = tl_runf(&o, "i=0; while n=$(pgrep -fc -- '[-]-socket %s'); "
	    "[ \"$n\" != 1 ] && [ $i -lt 150 ]; do i=$((i + 1)); sleep 0.2; "
	    "done; echo $n", s2);
	ok_str_eq(o, "1\n", "exactly one daemon survives");
	free(o);
	rc = tl_runf(&o, "MERGED_SOCKET=%s %s daemon stop -q", s2,
	    tl_mergectl);
	ok_int_eq(rc, 0, "daemon stop stops it");
	free(o);

	/* After a crash or a reboot: any command that needs the daemon
	 * starts it, and says so once; daemon status only looks. */
	rc = tl_runf(&o, "MERGED_SOCKET=%s %s daemon status 2>&1", s2,
	    tl_mergectl);
	ok_int_eq(rc, 5, "daemon status starts none (exit 5)");
	free(o);
	rc = tl_runf(&o, "cd %s && MERGED_SOCKET=%s XDG_STATE_HOME=%s/"
	    "race-state MERGED_BIN=%s %s status 2>&1", dir, s2, dir,
	    tl_merged, tl_mergectl);
	ok(rc == 0 && o != NULL && strstr(o, "no daemon answered on ") !=
	    NULL && strstr(o, "started a personal one") != NULL &&
	    strstr(o, "race-state/merged/merged.log") != NULL, "status starts "
	    "one when none answers, naming its log (exit %d): %s", rc, o);
	free(o);
	rc = tl_runf(&o, "MERGED_SOCKET=%s %s daemon status 2>&1", s2,
	    tl_mergectl);
	ok(rc == 0 && o != NULL && strstr(o, "(personal), pid ") != NULL &&
	    strstr(o, "socket      ") != NULL && strstr(o, s2) != NULL &&
	    strstr(o, "race-state/merged/merged.log\n") != NULL &&
	    strstr(o, " done, ") != NULL && strstr(o, "at most ") != NULL,
	    "daemon status: version, pid, uptime, socket, state, log, jobs "
	    "by state:\n%s", o);
	free(o);
	rc = tl_runf(&o, "MERGED_SOCKET=%s %s daemon stop -q", s2,
	    tl_mergectl);
	free(o);
}

/* mergectl as the unprivileged user nobody. */
static int
as_nobody(char **out, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int
as_nobody(char **out, const char *fmt, ...)
{
	va_list ap;
	char *args;
	int rc;

	va_start(ap, fmt);
	if (vasprintf(&args, fmt, ap) < 0)
		abort();
	va_end(ap);
	rc = tl_runf(out, "cd %s && setpriv --reuid=%d --regid=%d "
	    "--clear-groups env HOME=%s/nobody-home MERGED_SOCKET=%s %s %s "
	    "2>&1", dir, NOBODY, NOBODY, dir, td_sock, tl_mergectl, args);
	free(args);
	return rc;
}

static double
started(int id)
{
	return td_job_num(id, "started");
}

/*
 * One job at a time: root queues two big jobs, then nobody one small
 * one.  When root's first is done, nobody's runs before root's second:
 * one user's queue does not starve another's job.
 */
static void
test_fairness(pid_t *pid)
{
	char *o = NULL;
	int rc, r1, r2, nb;

	td_stop(*pid, SIGTERM);
	*pid = td_start("--group nogroup --max-running 1 --memory 24M "
	    "--threads 1", NULL);
	r1 = td_submit("big.yml -o d-fair1");
	r2 = td_submit("big.yml -o d-fair2");
	rc = as_nobody(&o, "submit nb-ok.yml -o nobody-out/fair --quiet");
	nb = rc == 0 ? atoi(o) : 0;
	free(o);
	ok(r1 && r2 && nb, "fairness: root queues two jobs, nobody one");
	/* Once root's second starts, the order is known: it need not run
	 * to its end (a big merge is slow under TSan). */
	ok(td_wait_state(r2, "running", 600000), "fairness: root's second "
	    "starts");
	ok(started(nb) > 0 && started(nb) < started(r2), "nobody's job ran "
	    "before root's second (%.3f < %.3f)", started(nb), started(r2));
	/* Cancelled, unless it ended first; either way over before the
	 * next test. */
	td_ctl(&o, "cancel %d", r2);
	free(o);
	td_ctl(&o, "watch %d --quiet", r2);
	free(o);
}

/*
 * A second user: sees the queue but cannot act on or read another's job,
 * and cannot make the (root) daemon read or write what it could not.
 */
static void
test_second_user(pid_t *pid)
{
	struct stat st;
	char *o = NULL, path[4096];
	int rc;

	if (geteuid() != 0) {
		tap_diag("not root: the second-user checks are skipped");
		ok(1, "# SKIP second user: needs root");
		return;
	}
	td_stop(*pid, SIGTERM);
	/* Team mode's setup: the socket directory is the group's. */
	rc = tl_runf(&o, "chgrp nogroup %s/run && chmod 750 %s/run", dir, dir);
	free(o);
	*pid = td_start("--group nogroup --memory 256M", NULL);
	rc = tl_runf(&o, "cd %s && chmod 755 . && mkdir -p nobody-home "
	    "nobody-out && chown %d:%d nobody-home nobody-out && "
	    "mkdir -p private mine mine2 root-out && chmod 700 private && "
	    "cp a/* private/ && cp a/config.json mine/ && "
	    "ln -s %s/private/model.safetensors mine/model.safetensors && "
	    "cp a/config.json mine2/ && cp a/model.safetensors mine2/ && "
	    "chmod 600 mine2/model.safetensors && chown %d:%d mine mine2",
	    dir, NOBODY, NOBODY, dir, NOBODY, NOBODY);
	ok_int_eq(rc, 0, "second user: fixtures");
	free(o);
	rc = as_nobody(&o, "list --json");
	ok(rc == 0 && strstr(o, "\"user\":\"root\"") &&
	    !strstr(o, "\"out\":"), "nobody sees root's jobs, without paths");
	free(o);
	rc = as_nobody(&o, "logs 1");
	ok(rc == 7 && strstr(o, "belongs to root"), "nobody cannot read "
	    "root's logs (exit 7)");
	free(o);
	rc = as_nobody(&o, "cancel 1");
	ok_int_eq(rc, 7, "nobody cannot cancel root's job");
	free(o);
	rc = as_nobody(&o, "resume %d", resumed_job);
	ok_int_eq(rc, 7, "nobody cannot resume root's job");
	free(o);
	rc = as_nobody(&o, "status 1 --json");
	ok(rc == 0 && !strstr(o, "config_name"), "nobody's status of root's "
	    "job has no config or paths");
	free(o);
	write_cfg("nb-private.yml", "merge_method: passthrough\nmodels:\n"
	    "  - model: ./private\n");
	rc = as_nobody(&o, "submit nb-private.yml -o nobody-out/x");
	ok(rc == 3 && strstr(o, "./private"), "a model nobody cannot read is "
	    "refused before reaching the daemon");
	free(o);
	write_cfg("nb-link.yml", "merge_method: passthrough\nmodels:\n"
	    "  - model: ./mine\n");
	rc = as_nobody(&o, "submit nb-link.yml -o nobody-out/y");
	if (!ok(rc == 3 && strstr(o, "outside the directory"), "a symlink "
	    "out of the passed directory is not followed by the daemon"))
		tap_diag("%d: %s", rc, o);
	free(o);
	write_cfg("nb-perm.yml", "merge_method: passthrough\nmodels:\n"
	    "  - model: ./mine2\n");
	rc = as_nobody(&o, "submit nb-perm.yml -o nobody-out/z");
	if (!ok(rc == 3 && strstr(o, "permission denied for uid 65534"),
	    "a file nobody may not read is not read for nobody"))
		tap_diag("%d: %s", rc, o);
	free(o);
	write_cfg("nb-ok.yml", "merge_method: passthrough\nmodels:\n"
	    "  - model: ./a\n");
	rc = as_nobody(&o, "submit nb-ok.yml -o root-out/w");
	ok(rc == 7 && strstr(o, "may not write"), "nobody cannot make the "
	    "daemon write where nobody may not");
	free(o);
	rc = as_nobody(&o, "submit nb-ok.yml -o nobody-out/ok --wait -q");
	ok_int_eq(rc, 0, "nobody's own merge runs");
	nobody_job = rc == 0 ? atoi(o) : 0;
	free(o);
	snprintf(path, sizeof path, "%s/nobody-out/ok/model.safetensors", dir);
	ok(stat(path, &st) == 0 && st.st_uid == NOBODY, "and its files "
	    "belong to nobody");
	rc = td_ctl(&o, "logs %d", nobody_job);
	ok(rc == 0 && strstr(o, "submitted by nobody"), "root may read "
	    "anyone's logs");
	free(o);
	test_fairness(pid);
}

static void
setup(void)
{
	tl_gen_at(dir, "a", "--family llama --seed 1");
	tl_gen_at(dir, "b", "--family llama --seed 2 --finetune-of 1 --delta "
	    "0.01");
	tl_gen_at(dir, "q3", "--family qwen3 --seed 3");
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
	write_cfg("missing-tensor.yml", "merge_method: slerp\n"
	    "base_model: ./q3\nallow_crimes: true\nmodels:\n  - model: ./q3\n"
	    "  - model: ./a\nparameters:\n  t: 0.5\n");
}

int
main(int argc, char **argv)
{
	pid_t pid;

	tl_init(argc, argv);
	tap_plan_lazy();
	dir = tl_tmpdir("daemon");
	td_init(dir);
	setup();
	pid = td_start("--memory 256M --cache-inputs", NULL);
	test_submit();
	test_queue();
	test_protocol();
	test_pipelined_fds();
	test_cancel(&pid);
	test_kill_resume(&pid);
	test_resume_changed(&pid);
	test_drain(&pid);
	test_vanish();
	test_watch_tty();
	test_table();
	test_completions();
	test_autostart_race();
	test_second_user(&pid);
	ok_int_eq(td_stop(pid, SIGTERM), 0, "the daemon stops cleanly at "
	    "the end");
	return tap_done();
}
