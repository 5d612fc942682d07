/* SPDX-License-Identifier: MIT */
/*
 * test-http.c: the team's status page (merged --http), on a real daemon
 * with two users' jobs, over real HTTP and in a real browser.
 *
 * A team daemon run as root (with the accounts merged-alice and
 * merged-bob of contrib/deps.sh --test) serves the page on a port the
 * kernel chooses; alice and bob each submit a job whose output path
 * holds a secret word.  Over raw sockets: the page, its JSON and its
 * history are served; the JSON lists both users' jobs and none of their
 * paths; a Host that does not name the server (DNS rebinding), POST, an
 * unknown path, a huge header and a burst of requests are refused with
 * 421, 405, 404, 431 and 429, and the server answers again afterwards.
 * Then headless Chromium (Debian's chromium, run with --no-sandbox as
 * root) loads the page at a desktop and a phone width: the DOM lists
 * the jobs after the page's script ran, with no path anywhere, and the
 * screenshots are kept in the build directory ($TEST_ARTIFACTS).
 *
 * Without root, the accounts or chromium, the parts that need them are
 * skipped, and fail under CI=true.
 */
#define _GNU_SOURCE
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>

#include <arpa/inet.h>
#include <errno.h>
#include <grp.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cJSON.h>

#include "tap.h"
#include "testd.h"
#include "testlib.h"

/* A secret word in every output path: it must never be served. */
#define SECRET "zq-secret-path"

static const char *dir;
static unsigned port;
static bool users;

static bool
ci(void)
{
	const char *v = getenv("CI");

	return v != NULL && strcmp(v, "true") == 0;
}

/* Skips a part that needs what is missing; under CI that fails. */
static void
missing(const char *what)
{
	if (ci())
		ok(0, "%s (contrib/deps.sh --test)", what);
	else
		ok(1, "# SKIP %s (contrib/deps.sh --test)", what);
}

/*
 * Sends request (whole, with its headers) to the page's port; returns
 * the response's status (0 when the connection closed without one) and
 * its body in *body (NULL to drop it).
 */
static int
http_get(const char *request, char **body)
{
	struct sockaddr_in sa;
	struct timeval tv = { 30, 0 };
	char *buf = NULL, *p;
	size_t len = 0, cap = 0;
	ssize_t n;
	int fd, status = 0;

	if (body != NULL)
		*body = NULL;
	memset(&sa, 0, sizeof sa);
	sa.sin_family = AF_INET;
	sa.sin_port = htons((uint16_t)port);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if ((fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0)
		return 0;
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0 ||
	    write(fd, request, strlen(request)) != (ssize_t)strlen(request)) {
		close(fd);
		return 0;
	}
	for (;;) {
		if (len + 4096 + 1 > cap) {
			cap = cap ? cap * 2 : 65536;
			if ((buf = realloc(buf, cap)) == NULL)
				abort();
		}
		if ((n = read(fd, buf + len, cap - len - 1)) <= 0)
			break;
		len += (size_t)n;
	}
	close(fd);
	if (buf == NULL)
		return 0;
	buf[len] = '\0';
	if (sscanf(buf, "HTTP/1.%*c %d", &status) != 1)
		status = 0;
	if (body != NULL && (p = strstr(buf, "\r\n\r\n")) != NULL)
		*body = strdup(p + 4);
	free(buf);
	return status;
}

/* GET path with a Host header naming the server. */
static int
get(const char *path, char **body)
{
	char req[512];

	snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%u\r\n"
	    "Connection: close\r\n\r\n", path, port);
	return http_get(req, body);
}

static void
setup(void)
{
	char *o = NULL;
	int rc;

	tl_gen_at(dir, "a", "--family llama --seed 1");
	tl_gen_at(dir, "b", "--family llama --seed 2 --finetune-of 1 "
	    "--delta 0.01");
	tl_write_at(dir, "small.yml", "merge_method: linear\nmodels:\n"
	    "  - model: ./a\n    parameters: {weight: 0.5}\n"
	    "  - model: ./b\n    parameters: {weight: 0.5}\n");
	users = geteuid() == 0 && getpwnam("merged-alice") != NULL &&
	    getpwnam("merged-bob") != NULL && getgrnam("merged") != NULL;
	if (!users)
		return;
	rc = tl_runf(&o, "cd %s && chmod 755 . && mkdir -p run "
	    "alice-" SECRET " bob-" SECRET " && chgrp merged run && "
	    "chmod 750 run && chown merged-alice alice-" SECRET " && "
	    "chown merged-bob bob-" SECRET " 2>&1", dir);
	if (rc != 0) {
		tap_diag("fixtures: %s", o);
		users = false;
	}
	free(o);
}

/* The page's port, from "mergectl daemon status". */
static unsigned
page_port(void)
{
	char *o = NULL, *p;
	unsigned v = 0;

	if (td_ctl(&o, "daemon status") == 0 && o != NULL &&
	    (p = strstr(o, "web         http://127.0.0.1:")) != NULL)
		v = (unsigned)atoi(p + strlen("web         http://127.0.0.1:"));
	free(o);
	return v;
}

static void
test_served(int alice_job, int bob_job)
{
	char *b = NULL, want[64];
	cJSON *j, *jobs, *x;
	int rc, found = 0;

	rc = get("/", &b);
	ok(rc == 200 && b != NULL && strstr(b, "<title>merged: the queue"
	    "</title>"), "GET /: the page (%d)", rc);
	free(b);
	rc = get("/app.js", &b);
	ok(rc == 200 && b != NULL && strstr(b, "textContent"), "GET /app.js: "
	    "its script, embedded in merged");
	free(b);
	rc = get("/api/jobs", &b);
	j = b != NULL ? cJSON_Parse(b) : NULL;
	jobs = cJSON_GetObjectItem(j, "jobs");
	cJSON_ArrayForEach(x, jobs) {
		snprintf(want, sizeof want, "%d", (int)cJSON_GetNumberValue(
		    cJSON_GetObjectItem(x, "id")));
		found += atoi(want) == alice_job || atoi(want) == bob_job;
	}
	ok(rc == 200 && found == (users ? 2 : 1), "GET /api/jobs: JSON with "
	    "both users' jobs (%d of them)", found);
	ok(b != NULL && strstr(b, SECRET) == NULL && strstr(b, dir) == NULL &&
	    strstr(b, "config_name") == NULL && strstr(b, "\"out\"") == NULL,
	    "and no path, config or output of anyone's");
	ok(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "daemon"),
	    "memory_budget") != NULL && cJSON_GetObjectItem(
	    cJSON_GetObjectItem(j, "daemon"), "socket") == NULL,
	    "the daemon's figures, without its socket or state directory");
	cJSON_Delete(j);
	free(b);
	rc = get("/api/history", &b);
	j = b != NULL ? cJSON_Parse(b) : NULL;
	ok(rc == 200 && cJSON_GetArraySize(cJSON_GetObjectItem(j,
	    "samples")) >= 1 && cJSON_GetArraySize(cJSON_GetObjectItem(j,
	    "per_day")) == 7, "GET /api/history: memory samples and seven "
	    "days");
	cJSON_Delete(j);
	free(b);
}

static void
test_refused(void)
{
	char req[65536], *b = NULL;
	int rc, i, n, n429 = 0, n200 = 0;

	snprintf(req, sizeof req, "GET /api/jobs HTTP/1.1\r\nHost: "
	    "evil.example:%u\r\nConnection: close\r\n\r\n", port);
	rc = http_get(req, &b);
	ok(rc == 421 && b != NULL && strstr(b, SECRET) == NULL, "a Host that "
	    "does not name the server (DNS rebinding) is refused (421)");
	free(b);
	snprintf(req, sizeof req, "POST /api/jobs HTTP/1.1\r\nHost: "
	    "127.0.0.1:%u\r\nContent-Length: 2\r\nConnection: close\r\n\r\n"
	    "{}", port);
	ok_int_eq(http_get(req, NULL), 405, "POST is refused: the page is "
	    "read-only (405)");
	ok_int_eq(get("/etc/passwd", NULL), 404, "an unknown path: 404");
	ok_int_eq(get("/../../etc/passwd", NULL), 404, "a path up: 404");
	/* 40 KiB of header, over the 32 KiB a request may take. */
	n = snprintf(req, sizeof req, "GET / HTTP/1.1\r\nHost: 127.0.0.1:%u"
	    "\r\nX-Big: ", port);
	memset(req + n, 'x', 40000);
	snprintf(req + n + 40000, sizeof req - (size_t)n - 40000,
	    "\r\nConnection: close\r\n\r\n");
	rc = http_get(req, NULL);
	ok(rc == 431 || rc == 413 || rc == 0, "a request over 32 KiB is "
	    "refused (%d)", rc);
	for (i = 0; i < 300; i++) {
		rc = get("/api/jobs", NULL);
		n429 += rc == 429;
		n200 += rc == 200;
	}
	ok(n429 > 0 && n200 > 0, "a burst of 300 requests: %d answered, %d "
	    "refused with 429", n200, n429);
	td_sleep_ms(1500);
	ok_int_eq(get("/", NULL), 200, "and a second later it answers again");
}

/* Chromium, headless: the DOM after the script ran, and screenshots. */
static void
test_browser(void)
{
	const char *art = getenv("TEST_ARTIFACTS");
	char *o = NULL, url[128], *desk, *phone;
	struct timespec t0, t1;
	int rc;

	if (tl_runf(NULL, "command -v chromium >/dev/null 2>&1") != 0) {
		missing("headless Chromium is needed for the page in a "
		    "browser");
		return;
	}
	snprintf(url, sizeof url, "http://127.0.0.1:%u/", port);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	rc = tl_runf(&o, "HOME=%s timeout 120 chromium --headless "
	    "--no-sandbox --disable-gpu --no-first-run "
	    "--virtual-time-budget=5000 --dump-dom %s 2>/dev/null", dir, url);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	tap_diag("chromium --dump-dom took %.1f s", (double)(t1.tv_sec -
	    t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
	ok(rc == 0 && o != NULL && strstr(o, "class=\"name\">alice-job<") &&
	    (!users || strstr(o, "class=\"name\">bob-job<")) && strstr(o,
	    "state state-done"), "in Chromium, the page's script lists the "
	    "jobs (exit %d)", rc);
	ok(o != NULL && strstr(o, SECRET) == NULL && strstr(o, dir) == NULL,
	    "and no path appears anywhere in the page");
	ok(o != NULL && strstr(o, "<path") != NULL && strstr(o, "day-done"),
	    "the memory and per-day charts are drawn");
	free(o);
	if (art == NULL)
		art = dir;
	tl_runf(NULL, "mkdir -p %s", art);
	rc = tl_runf(&o, "HOME=%s timeout 120 chromium --headless "
	    "--no-sandbox --disable-gpu --no-first-run --hide-scrollbars "
	    "--virtual-time-budget=5000 --window-size=1280,900 "
	    "--screenshot=%s/status-page.png %s 2>&1 && HOME=%s timeout 120 "
	    "chromium --headless --no-sandbox --disable-gpu --no-first-run "
	    "--hide-scrollbars --virtual-time-budget=5000 "
	    "--window-size=390,844 --screenshot=%s/status-page-phone.png %s "
	    "2>&1", dir, art, url, dir, art, url);
	desk = tl_at(art, "status-page.png");
	phone = tl_at(art, "status-page-phone.png");
	ok(rc == 0 && tl_exists(desk) && tl_exists(phone), "screenshots at "
	    "desktop and phone width, kept in %s", art);
	free(desk);
	free(phone);
	free(o);
}

int
main(int argc, char **argv)
{
	char opts[256], *o = NULL;
	int alice = 0, bob = 0, rc;
	pid_t pid;

	tl_init(argc, argv);
	tap_plan_lazy();
	dir = tl_tmpdir("http");
	td_init(dir);
	setup();
	if (!users)
		missing("root and the accounts merged-alice and merged-bob "
		    "are needed for two users' jobs");
	snprintf(opts, sizeof opts, "%s--http 127.0.0.1:0 --sample-interval 1",
	    users ? "--team --group merged " : "");
	pid = td_start(opts, NULL);
	port = page_port();
	ok(port > 0, "merged --http 127.0.0.1:0 serves on a port the kernel "
	    "chose, which daemon status gives (%u)", port);
	if (users) {
		rc = td_as("merged-alice", &o, "%s submit small.yml -o "
		    "alice-" SECRET "/out --name alice-job --wait -q",
		    tl_mergectl);
		alice = rc == 0 ? atoi(o) : 0;
		free(o);
		rc = td_as("merged-bob", &o, "%s submit small.yml -o "
		    "bob-" SECRET "/out --name bob-job --wait -q", tl_mergectl);
		bob = rc == 0 ? atoi(o) : 0;
		free(o);
	} else {
		rc = td_ctl(&o, "submit small.yml -o alice-" SECRET " --name "
		    "alice-job --wait -q");
		alice = rc == 0 ? atoi(o) : 0;
		free(o);
	}
	ok(alice > 0 && (!users || bob > 0), "the jobs ran");
	/* A sample of the history, taken after them. */
	td_sleep_ms(1200);
	if (port > 0) {
		test_served(alice, bob);
		test_refused();
		test_browser();
	}
	ok_int_eq(td_stop(pid, SIGTERM), 0, "the daemon stops cleanly");
	return tap_done();
}
