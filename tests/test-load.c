/* SPDX-License-Identifier: MIT */
/*
 * test-load.c: merged under load ("Hardening", item 3).
 *
 * One daemon in team mode, with two slow merges running and twenty jobs
 * queued behind them, takes 200 clients at once: ten processes, each
 * under a uid of its own (the daemon allows PROTO_MAX_CONN_PER_UID = 32
 * connections per uid), each with twenty connections driven by poll().
 * Every connection says hello, then sends a fixed number of requests one
 * at a time, mostly status, some list; every fourth one also watches a
 * running job and counts the events.  The checks: all 200 connections
 * are accepted and open at once; every request gets exactly one reply
 * and no error; afterwards the daemon holds the descriptors it held
 * before (its own at once, and every one once the jobs are cancelled);
 * its anonymous memory has not grown by more than LOAD_RSS_SLACK; and it
 * still stops cleanly.  Status latencies (p50, p99, max) and the request
 * rate are reported, never asserted: a busy machine or a sanitizer must
 * not make the test fail.
 *
 * Needs root, to switch uids; skipped otherwise.
 */
#define _GNU_SOURCE
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/wait.h>

#include <dirent.h>
#include <errno.h>
#include <grp.h>
#include <limits.h>
#include <poll.h>
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

#define LOAD_PROCS 10		/* one uid each */
#define LOAD_CONNS 20		/* per process: under the per-uid limit */
#define LOAD_REQS 20		/* per connection, after hello */
#define LOAD_WATCH_EVERY 4	/* every 4th connection also watches */
#define LOAD_LIST_EVERY 5	/* every 5th request is a list */
#define LOAD_UID0 20000		/* uids LOAD_UID0 .. LOAD_UID0 + 9 */
#define LOAD_QUEUED 20		/* jobs queued behind the two running */
/* Seconds a load process may take before it gives up and reports what
 * it has: generous, for ThreadSanitizer; never reached otherwise. */
#define LOAD_DEADLINE 240
#define LOAD_RSS_SLACK (16 << 20)
/* Under a sanitizer the daemon's RSS is mostly shadow memory and freed
 * blocks held in quarantine, which grow with every allocation: its
 * growth is reported there, not checked. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define LOAD_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define LOAD_SANITIZED 1
#endif
#endif
#ifndef LOAD_SANITIZED
#define LOAD_SANITIZED 0
#endif
#define LOAD_MAX_LINE (1 << 20)

static const char *dir;
static char work[512];		/* models and outputs: the jobs' files */
static gid_t team_gid;
static int jobs[2 + LOAD_QUEUED];	/* the two big ones first */
static int njobs;

/*
 * What one load process saw, sent back to the parent over a pipe,
 * followed by nlat status latencies (uint64_t nanoseconds).
 */
struct load_report {
	int setup_failed;	/* could not switch uid */
	int conns;		/* connect() succeeded */
	int hellos;		/* hello answered ok, with this process's uid */
	int refused;		/* id 0 errors: refused at connect, or worse */
	int closed;		/* connections the daemon closed on us */
	int unfinished;		/* connections still busy at the deadline */
	long sent;		/* requests, hello and watch included */
	long replies;		/* replies matched to a request in flight */
	long errors;		/* of those, "ok":false */
	long stray;		/* lines matching nothing, or out of order */
	long statuses, lists, watches;
	long events;		/* watch events */
	int watches_heard;	/* watches answered that saw an event */
	int nlat;
	char why[256];		/* the first thing that went wrong */
};

static double
now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t
ns_between(const struct timespec *a, const struct timespec *b)
{
	return (uint64_t)((b->tv_sec - a->tv_sec) * 1000000000LL +
	    (b->tv_nsec - a->tv_nsec));
}

/* A blocking connection to the daemon, or -1. */
static int
raw_connect(const char *path)
{
	struct sockaddr_un sun;
	size_t len = strlen(path);
	int fd;

	if (len >= sizeof sun.sun_path ||
	    (fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) == -1)
		return -1;
	memset(&sun, 0, sizeof sun);
	sun.sun_family = AF_UNIX;
	memcpy(sun.sun_path, path, len + 1);
	if (connect(fd, (struct sockaddr *)&sun, sizeof sun) != 0) {
		close(fd);
		return -1;
	}
	return fd;
}

static bool
write_all(int fd, const char *p, size_t len)
{
	ssize_t n;

	while (len > 0) {
		n = write(fd, p, len);
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0)
			return false;
		p += n;
		len -= (size_t)n;
	}
	return true;
}

/*
 * A root session over the raw protocol: the requests (whole lines, hello
 * first), then end of input; returns everything the daemon said until it
 * closed, which it does once every reply is written.
 */
static char *
raw_session(const char *requests)
{
	struct timeval tv = { 30, 0 };
	size_t len = 0, cap = 1 << 16;
	char *buf = calloc(1, cap);
	int fd = raw_connect(td_sock);
	ssize_t n;

	if (fd == -1)
		return buf;
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	if (write_all(fd, requests, strlen(requests)))
		shutdown(fd, SHUT_WR);
	for (;;) {
		if (len + 1 >= cap)
			buf = realloc(buf, cap *= 2);
		n = read(fd, buf + len, cap - len - 1);
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += (size_t)n;
	}
	buf[len] = '\0';
	close(fd);
	return buf;
}

/* The reply (not an event) with this id among the lines of out, or NULL. */
static cJSON *
reply_of(const char *out, int id)
{
	const char *p, *nl;
	cJSON *m, *v;

	for (p = out; *p != '\0'; p = nl + 1) {
		if ((nl = strchr(p, '\n')) == NULL)
			break;
		if ((m = cJSON_ParseWithLength(p, (size_t)(nl - p))) == NULL)
			continue;
		v = cJSON_GetObjectItemCaseSensitive(m, "id");
		if (cJSON_IsNumber(v) && v->valueint == id &&
		    !cJSON_HasObjectItem(m, "event"))
			return m;
		cJSON_Delete(m);
	}
	return NULL;
}

/* The queue and the shared memory figures, from "list". */
struct snap {
	int running;
	int queued;
	int cancelled;
	int total;
	double used;		/* memory_used: bytes the merges hold */
	double budget;
};

static bool
snap_take(struct snap *s)
{
	char *out = raw_session("{\"v\":2,\"id\":1,\"op\":\"hello\"}\n"
	    "{\"v\":2,\"id\":2,\"op\":\"list\"}\n");
	cJSON *r = reply_of(out, 2), *j, *d;
	const char *st;

	memset(s, 0, sizeof *s);
	free(out);
	if (r == NULL || !cJSON_IsTrue(cJSON_GetObjectItem(r, "ok"))) {
		cJSON_Delete(r);
		return false;
	}
	cJSON_ArrayForEach(j, cJSON_GetObjectItem(r, "jobs")) {
		st = cJSON_GetStringValue(cJSON_GetObjectItem(j, "state"));
		s->total++;
		if (st == NULL)
			continue;
		s->running += strcmp(st, "running") == 0;
		s->queued += strcmp(st, "queued") == 0;
		s->cancelled += strcmp(st, "cancelled") == 0;
	}
	d = cJSON_GetObjectItem(r, "daemon");
	s->used = cJSON_GetNumberValue(cJSON_GetObjectItem(d, "memory_used"));
	s->budget = cJSON_GetNumberValue(cJSON_GetObjectItem(d,
	    "memory_budget"));
	cJSON_Delete(r);
	return true;
}

/*
 * The daemon's descriptors.  Those of the jobs (model and output
 * directories, input files, staging and shard files) all lie in the work
 * directory; they come and go with the merges, so the daemon's own ones
 * are counted apart: they must not change with the load.
 */
struct census {
	int total;
	int sockets;
	int jobs;		/* beneath the work directory */
};

static int
own(const struct census *c)
{
	return c->total - c->jobs;
}

static void
census_take(pid_t pid, struct census *c)
{
	char path[64], link[PATH_MAX], target[PATH_MAX];
	size_t wl = strlen(work);
	struct dirent *e;
	ssize_t n;
	DIR *d;

	memset(c, 0, sizeof *c);
	snprintf(path, sizeof path, "/proc/%d/fd", (int)pid);
	if ((d = opendir(path)) == NULL)
		return;
	while ((e = readdir(d)) != NULL) {
		if (e->d_name[0] == '.')
			continue;
		snprintf(link, sizeof link, "%s/%s", path, e->d_name);
		if ((n = readlink(link, target, sizeof target - 1)) < 0)
			continue;	/* closed meanwhile */
		target[n] = '\0';
		c->total++;
		c->sockets += strncmp(target, "socket:", 7) == 0;
		c->jobs += strncmp(target, work, wl) == 0 &&
		    (target[wl] == '\0' || target[wl] == '/');
	}
	closedir(d);
}

/*
 * The census once the daemon has closed the connections of clients that
 * just left (their close callbacks run a loop iteration later): the same
 * figures ten times in a row, 20 ms apart.
 */
static void
census_settled(pid_t pid, struct census *c)
{
	struct census prev;
	int same = 0, i;

	census_take(pid, &prev);
	for (i = 0; i < 500 && same < 10; i++) {
		td_sleep_ms(20);
		census_take(pid, c);
		same = memcmp(c, &prev, sizeof prev) == 0 ? same + 1 : 0;
		prev = *c;
	}
	*c = prev;
}

/*
 * Waits (up to 20 s) until the daemon holds as many descriptors as in
 * ref: all of them (whole), or its own; c is the last census taken.
 */
static bool
census_wait(pid_t pid, struct census *c, const struct census *ref,
    bool whole)
{
	int i;

	for (i = 0; i < 400; i++) {
		census_take(pid, c);
		if (whole ? c->total == ref->total : own(c) == own(ref))
			return true;
		td_sleep_ms(50);
	}
	return false;
}

static void
census_show(pid_t pid)
{
	char *o = NULL;

	tl_runf(&o, "ls -l /proc/%d/fd 2>&1 | sed 's/.* [0-9]* -> //' | "
	    "sed 's/:\\[.*//' | sort | uniq -c", (int)pid);
	tap_diag("the daemon's descriptors now:\n%s", o ? o : "");
	free(o);
}

/* A field of /proc/pid/status, in bytes; -1 if absent. */
static long long
proc_bytes(pid_t pid, const char *key)
{
	char path[64], line[256];
	size_t kl = strlen(key);
	long long v = -1;
	FILE *fp;

	snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
	if ((fp = fopen(path, "r")) == NULL)
		return -1;
	while (fgets(line, sizeof line, fp) != NULL)
		if (strncmp(line, key, kl) == 0 && line[kl] == ':')
			v = strtoll(line + kl + 1, NULL, 10) * 1024;
	fclose(fp);
	return v;
}

/* --- The load processes. ------------------------------------------- */

enum lop {
	LOP_NONE,
	LOP_HELLO,
	LOP_STATUS,
	LOP_LIST,
};

struct lconn {
	int fd;			/* -1 when closed */
	char *buf;		/* bytes received, not yet a whole line */
	size_t len;
	size_t cap;
	int next_id;
	int inflight;		/* the id awaiting its reply; 0 none */
	enum lop op;		/* what that request was */
	struct timespec sent_at;
	int nreq;		/* requests sent after hello, the watch aside */
	int watch;		/* the watch's id; 0 none */
	bool watch_answered;
	int watch_events;
};

static void
note(struct load_report *r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
note(struct load_report *r, const char *fmt, ...)
{
	va_list ap;

	if (r->why[0] != '\0')
		return;
	va_start(ap, fmt);
	vsnprintf(r->why, sizeof r->why, fmt, ap);
	va_end(ap);
}

static void
lc_send(struct lconn *lc, struct load_report *r, const char *op, int job)
{
	char line[128];
	int id = lc->next_id++;

	if (job > 0)
		snprintf(line, sizeof line, "{\"v\":2,\"id\":%d,\"op\":\"%s\","
		    "\"job\":%d}\n", id, op, job);
	else
		snprintf(line, sizeof line, "{\"v\":2,\"id\":%d,\"op\":"
		    "\"%s\"}\n", id, op);
	if (!write_all(lc->fd, line, strlen(line))) {
		note(r, "write: %s", strerror(errno));
		return;
	}
	r->sent++;
	if (strcmp(op, "watch") == 0) {
		lc->watch = id;
		r->watches++;
		return;
	}
	lc->inflight = id;
	lc->op = strcmp(op, "hello") == 0 ? LOP_HELLO :
	    strcmp(op, "list") == 0 ? LOP_LIST : LOP_STATUS;
	clock_gettime(CLOCK_MONOTONIC, &lc->sent_at);
}

/* The next request of connection c of process k: mostly status. */
static void
lc_next(struct lconn *lc, struct load_report *r, int k, int c)
{
	int i = lc->nreq++;

	if (i % LOAD_LIST_EVERY == LOAD_LIST_EVERY - 1) {
		r->lists++;
		lc_send(lc, r, "list", 0);
	} else {
		r->statuses++;
		lc_send(lc, r, "status", jobs[(k * 7 + c * 3 + i) % njobs]);
	}
}

static bool
lc_finished(const struct lconn *lc)
{
	return lc->fd == -1 || (lc->nreq == LOAD_REQS && lc->inflight == 0 &&
	    (lc->watch == 0 || (lc->watch_answered && lc->watch_events > 0)));
}

/* One line from the daemon; at is when it was read. */
static void
lc_line(struct lconn *lc, struct load_report *r, const char *line,
    size_t len, const struct timespec *at, uint64_t *lat)
{
	cJSON *m = cJSON_ParseWithLength(line, len), *v;
	const char *ev;
	bool ok;
	int id;

	v = cJSON_GetObjectItemCaseSensitive(m, "id");
	if (m == NULL || !cJSON_IsNumber(v)) {
		r->stray++;
		note(r, "a line that is not a message: %.100s", line);
		goto out;
	}
	id = v->valueint;
	ok = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(m, "ok"));
	ev = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(m,
	    "event"));
	if (ev != NULL) {
		/* No event of a stream comes before its reply (§5). */
		if (id != lc->watch || !lc->watch_answered) {
			r->stray++;
			note(r, "an event out of place: %.100s", line);
		} else {
			r->events++;
			lc->watch_events++;
		}
		goto out;
	}
	if (!ok && id == 0) {
		/* Refused at connect ("limit"), or a protocol error: the
		 * daemon closes the connection after it. */
		r->refused++;
		note(r, "uid %u: %.200s", (unsigned)getuid(), line);
		goto out;
	}
	if (id == lc->watch && !lc->watch_answered) {
		lc->watch_answered = true;
	} else if (id == lc->inflight) {
		if (lc->op == LOP_HELLO && ok) {
			v = cJSON_GetObjectItemCaseSensitive(m, "uid");
			if (cJSON_IsNumber(v) && v->valuedouble ==
			    (double)getuid())
				r->hellos++;
			else
				note(r, "hello names another uid: %.100s",
				    line);
		}
		if (lc->op == LOP_STATUS && r->nlat < LOAD_CONNS * LOAD_REQS)
			lat[r->nlat++] = ns_between(&lc->sent_at, at);
		lc->inflight = 0;
	} else {
		r->stray++;
		note(r, "a reply to no request in flight: %.100s", line);
		goto out;
	}
	r->replies++;
	if (!ok) {
		r->errors++;
		note(r, "an error: %.200s", line);
	}
out:
	cJSON_Delete(m);
}

/* Reads what is there and handles each whole line. */
static void
lc_read(struct lconn *lc, struct load_report *r, uint64_t *lat)
{
	struct timespec at;
	char *nl, *p;
	ssize_t n;

	if (lc->len + 4096 > lc->cap) {
		if (lc->cap >= LOAD_MAX_LINE) {
			note(r, "a line longer than %d bytes", LOAD_MAX_LINE);
			goto gone;
		}
		lc->cap = lc->cap ? lc->cap * 2 : 16384;
		lc->buf = realloc(lc->buf, lc->cap);
	}
	n = read(lc->fd, lc->buf + lc->len, lc->cap - lc->len);
	if (n == -1 && errno == EINTR)
		return;
	if (n <= 0) {
		if (!lc_finished(lc)) {
			r->closed++;
			note(r, "the daemon closed a connection: %s", n == 0 ?
			    "end of file" : strerror(errno));
		}
		goto gone;
	}
	clock_gettime(CLOCK_MONOTONIC, &at);
	lc->len += (size_t)n;
	p = lc->buf;
	while ((nl = memchr(p, '\n', lc->len - (size_t)(p - lc->buf))) !=
	    NULL) {
		*nl = '\0';
		lc_line(lc, r, p, (size_t)(nl - p), &at, lat);
		p = nl + 1;
	}
	lc->len -= (size_t)(p - lc->buf);
	memmove(lc->buf, p, lc->len);
	return;
gone:
	close(lc->fd);
	lc->fd = -1;
}

/*
 * Polls every open connection until each is finished (or the deadline);
 * start, when set, sends each connection's next request as it becomes
 * free.  Returns the connections still busy.
 */
static int
lc_drive(struct lconn *lc, struct load_report *r, uint64_t *lat, int k,
    bool start, double deadline)
{
	struct pollfd pfd[LOAD_CONNS];
	int map[LOAD_CONNS], n, c, i, busy;

	for (;;) {
		busy = 0;
		n = 0;
		for (c = 0; c < LOAD_CONNS; c++) {
			if (start && lc[c].fd != -1 && lc[c].inflight == 0 &&
			    lc[c].nreq < LOAD_REQS)
				lc_next(&lc[c], r, k, c);
			if (start ? lc_finished(&lc[c]) : (lc[c].fd == -1 ||
			    lc[c].inflight == 0))
				continue;
			busy++;
			pfd[n].fd = lc[c].fd;
			pfd[n].events = POLLIN;
			map[n++] = c;
		}
		if (busy == 0 || now_s() > deadline)
			return busy;
		if (poll(pfd, (nfds_t)n, 1000) <= 0)
			continue;
		for (i = 0; i < n; i++)
			if (pfd[i].revents != 0)
				lc_read(&lc[map[i]], r, lat);
	}
}

/*
 * Load process k: switches to its own uid, opens its connections and
 * says hello on each, tells the parent it is ready, waits for the go
 * (the parent closing the go pipe), drives its requests and reports.
 * Never returns.
 */
static void __attribute__((noreturn))
load_child(int k, int report, int go)
{
	static struct lconn lc[LOAD_CONNS];
	static uint64_t lat[LOAD_CONNS * LOAD_REQS];
	struct load_report r;
	uid_t uid = (uid_t)(LOAD_UID0 + k);
	double deadline = now_s() + LOAD_DEADLINE;
	char runs[600], byte = 'R';
	int c;

	memset(&r, 0, sizeof r);
	for (c = 0; c < LOAD_CONNS; c++)
		lc[c].fd = -1;
	/* The socket's directory is the team group's (0750): enter it as
	 * root, then connect by a relative name, whatever lies above. */
	snprintf(runs, sizeof runs, "%s/run", dir);
	if (chdir(runs) != 0 || setgroups(1, &team_gid) != 0 ||
	    setgid((gid_t)uid) != 0 || setuid(uid) != 0 || getuid() != uid) {
		r.setup_failed = 1;
		note(&r, "cannot become uid %u: %s", (unsigned)uid,
		    strerror(errno));
	}
	for (c = 0; c < LOAD_CONNS && !r.setup_failed; c++) {
		lc[c].next_id = 1;
		if ((lc[c].fd = raw_connect("merged.sock")) == -1) {
			note(&r, "connect: %s", strerror(errno));
			continue;
		}
		r.conns++;
		lc_send(&lc[c], &r, "hello", 0);
	}
	r.unfinished = lc_drive(lc, &r, lat, k, false, deadline);
	(void)!write(report, &byte, 1);
	/* All 200 are open now: wait until the parent has counted them. */
	while (read(go, &byte, 1) == -1 && errno == EINTR)
		;
	for (c = 0; c < LOAD_CONNS; c++) {
		/* Every fourth connection watches one of the running jobs,
		 * besides its requests: its events interleave with them. */
		if (lc[c].fd != -1 && c % LOAD_WATCH_EVERY == 0)
			lc_send(&lc[c], &r, "watch", jobs[(k + c) % 2]);
	}
	r.unfinished += lc_drive(lc, &r, lat, k, true, deadline);
	for (c = 0; c < LOAD_CONNS; c++) {
		r.watches_heard += lc[c].watch != 0 && lc[c].watch_answered &&
		    lc[c].watch_events > 0;
		if (lc[c].fd != -1)
			close(lc[c].fd);
		free(lc[c].buf);
	}
	(void)!write(report, &r, sizeof r);
	(void)!write(report, lat, (size_t)r.nlat * sizeof *lat);
	/* _exit: the parent's atexit handler removes the test directory. */
	_exit(0);
}

static bool
read_all(int fd, void *p, size_t len)
{
	ssize_t n;

	while (len > 0) {
		n = read(fd, p, len);
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0)
			return false;
		p = (char *)p + n;
		len -= (size_t)n;
	}
	return true;
}

static int
cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* Everything the load processes saw, added up. */
struct load_total {
	struct load_report r;	/* sums; why: the first reported */
	int procs_ok;		/* reported and exited 0 */
	int peak_sockets;	/* the daemon's sockets with all connected */
	double seconds;		/* from the go to the last report */
	uint64_t *lat;
};

static void
load_add(struct load_total *t, const struct load_report *r)
{
	struct load_report *s = &t->r;

	s->setup_failed += r->setup_failed;
	s->conns += r->conns;
	s->hellos += r->hellos;
	s->refused += r->refused;
	s->closed += r->closed;
	s->unfinished += r->unfinished;
	s->sent += r->sent;
	s->replies += r->replies;
	s->errors += r->errors;
	s->stray += r->stray;
	s->statuses += r->statuses;
	s->lists += r->lists;
	s->watches += r->watches;
	s->events += r->events;
	s->watches_heard += r->watches_heard;
	if (s->why[0] == '\0' && r->why[0] != '\0')
		memcpy(s->why, r->why, sizeof s->why);
}

/* Forks the load processes, lets them go together, collects reports. */
static void
load_run(pid_t daemon, struct load_total *t)
{
	struct load_report r;
	struct census cs;
	int go[2], rep[LOAD_PROCS], p[2], k, status;
	pid_t pids[LOAD_PROCS];
	double t0;
	char byte;

	memset(t, 0, sizeof *t);
	t->lat = calloc(LOAD_PROCS * LOAD_CONNS * LOAD_REQS, sizeof *t->lat);
	if (pipe(go) != 0)
		abort();
	fflush(stdout);
	for (k = 0; k < LOAD_PROCS; k++) {
		if (pipe(p) != 0)
			abort();
		if ((pids[k] = fork()) == -1)
			abort();
		if (pids[k] == 0) {
			/* Only the parent may hold the go pipe's write end,
			 * or closing it would not wake anyone. */
			close(go[1]);
			close(p[0]);
			load_child(k, p[1], go[0]);
		}
		close(p[1]);
		rep[k] = p[0];
	}
	close(go[0]);
	for (k = 0; k < LOAD_PROCS; k++)
		if (!read_all(rep[k], &byte, 1))
			tap_diag("load process %d died before it was ready", k);
	census_take(daemon, &cs);
	t->peak_sockets = cs.sockets;
	t0 = now_s();
	close(go[1]);
	for (k = 0; k < LOAD_PROCS; k++) {
		if (!read_all(rep[k], &r, sizeof r) || r.nlat < 0 ||
		    r.nlat > LOAD_CONNS * LOAD_REQS || !read_all(rep[k],
		    t->lat + t->r.nlat, (size_t)r.nlat * sizeof *t->lat)) {
			tap_diag("load process %d sent no report", k);
			continue;
		}
		load_add(t, &r);
		t->r.nlat += r.nlat;
		t->procs_ok++;
	}
	t->seconds = now_s() - t0;
	for (k = 0; k < LOAD_PROCS; k++) {
		close(rep[k]);
		while (waitpid(pids[k], &status, 0) == -1 && errno == EINTR)
			;
		if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
			tap_diag("load process %d: status %#x", k, status);
			t->procs_ok--;
		}
	}
}

/* --- The test. ---------------------------------------------------- */

/*
 * The queued jobs merge two tiny models.  The two that run must outlast
 * the load, under any sanitizer, yet cost little disk: della (the slowest
 * method per element) over sixteen donors, hard links to one 62 MB
 * model, under an 8 MiB cap, takes about 15 s of one core in a normal
 * build; the test cancels them when it is done with them.
 */
#define LOAD_DONORS 16

static void
setup(void)
{
	char *cfg, *p, *o = NULL;
	int i;

	if (tl_runf(&o, "mkdir -p %s", work) != 0)
		exit(99);
	free(o);
	tl_gen_at(work, "a", "--family llama --seed 1");
	tl_gen_at(work, "b", "--family llama --seed 2 --finetune-of 1 --delta "
	    "0.01");
	tl_gen_at(work, "xa", "--family llama --hidden 512 --intermediate 1408 "
	    "--layers 8 --vocab 8192 --heads 8 --kv-heads 4 --seed 5");
	tl_gen_at(work, "xb", "--family llama --hidden 512 --intermediate 1408 "
	    "--layers 8 --vocab 8192 --heads 8 --kv-heads 4 --seed 6 "
	    "--finetune-of 5 --delta 0.01");
	if (tl_runf(&o, "cd %s && for i in $(seq %d); do mkdir x$i && "
	    "ln xb/* x$i/ || exit 1; done 2>&1", work, LOAD_DONORS) != 0) {
		fprintf(stderr, "cannot link the donors: %s\n", o);
		exit(99);
	}
	free(o);
	tl_write_at(work, "small.yml", "merge_method: slerp\nbase_model: ./a\n"
	    "models:\n  - model: ./a\n  - model: ./b\nparameters:\n"
	    "  t: 0.4\n");
	cfg = p = malloc(128 + LOAD_DONORS * 128);
	p += sprintf(p, "merge_method: della\nbase_model: ./xa\nmodels:\n");
	for (i = 1; i <= LOAD_DONORS; i++)
		p += sprintf(p, "  - model: ./x%d\n    parameters:\n"
		    "      weight: 1.0\n      density: 0.5\n"
		    "      epsilon: 0.1\n", i);
	tl_write_at(work, "big.yml", cfg);
	free(cfg);
}

/* Two merges running, twenty queued behind the first. */
static void
queue_jobs(void)
{
	struct snap s;
	int i, ok_all = 1;

	for (i = 0; i < 2; i++) {
		jobs[njobs] = td_submit("big.yml -o big%d --memory 16M", i + 1);
		ok_all &= jobs[njobs++] != 0;
	}
	for (i = 0; i < LOAD_QUEUED && jobs[0] != 0; i++) {
		jobs[njobs] = td_submit("small.yml -o q%02d --after %d", i + 1,
		    jobs[0]);
		ok_all &= jobs[njobs++] != 0;
	}
	ok(ok_all && njobs == 2 + LOAD_QUEUED, "22 jobs submitted");
	for (i = 0; i < 600; i++) {
		if (snap_take(&s) && s.running == 2 && s.queued == LOAD_QUEUED)
			break;
		td_sleep_ms(50);
	}
	ok(s.running == 2 && s.queued == LOAD_QUEUED, "before the load: 2 "
	    "running, %d queued (%d running, %d queued)", LOAD_QUEUED,
	    s.running, s.queued);
}

static void
report_latency(const struct load_total *t)
{
	const uint64_t *v = t->lat;
	size_t n = (size_t)t->r.nlat;

	if (n == 0) {
		tap_diag("no status latencies to report");
		return;
	}
	qsort(t->lat, n, sizeof *t->lat, cmp_u64);
	tap_diag("status latency over %zu requests: p50 %.3f ms, p99 %.3f ms, "
	    "max %.3f ms", n, (double)v[n / 2] / 1e6,
	    (double)v[n * 99 / 100] / 1e6, (double)v[n - 1] / 1e6);
	tap_diag("%ld requests (%ld status, %ld list, %ld watch, %d hello) "
	    "and %ld watch events in %.2f s: %.0f requests/s", t->r.sent,
	    t->r.statuses, t->r.lists, t->r.watches, t->r.hellos, t->r.events,
	    t->seconds, (double)(t->r.sent - t->r.conns) / t->seconds);
}

static void
check_load(const struct load_total *t, const struct census *before)
{
	const struct load_report *r = &t->r;
	int nconn = LOAD_PROCS * LOAD_CONNS;
	int nwatch = LOAD_PROCS * ((LOAD_CONNS + LOAD_WATCH_EVERY - 1) /
	    LOAD_WATCH_EVERY);

	if (r->why[0] != '\0')
		tap_diag("first problem reported: %s", r->why);
	ok(t->procs_ok == LOAD_PROCS && r->setup_failed == 0, "load: %d "
	    "processes under uids %d..%d ran and reported", LOAD_PROCS,
	    LOAD_UID0, LOAD_UID0 + LOAD_PROCS - 1);
	ok_int_eq(r->conns, nconn, "load: %d connections made", nconn);
	ok_int_eq(r->hellos, nconn, "load: every connection accepted (hello "
	    "answered, with its process's uid)");
	ok_int_eq(r->refused, 0, "load: none refused");
	ok_int_eq(t->peak_sockets - before->sockets, nconn, "load: all %d "
	    "connections open at once (the daemon held %d sockets, %d "
	    "before)", nconn, t->peak_sockets, before->sockets);
	ok_int_eq(r->sent, (long)nconn * (1 + LOAD_REQS) + nwatch, "load: "
	    "every request was sent");
	ok(r->replies == r->sent && r->stray == 0, "load: every request got "
	    "exactly one reply (%ld sent, %ld replies, %ld stray lines)",
	    r->sent, r->replies, r->stray);
	ok_int_eq(r->errors, 0, "load: no request failed");
	ok(r->closed == 0 && r->unfinished == 0, "load: no connection was "
	    "closed on its client or left unanswered (%d closed, %d "
	    "unfinished)", r->closed, r->unfinished);
	ok_int_eq(r->watches_heard, nwatch, "load: every watch was answered "
	    "and streamed events");
}

/*
 * Cancels every job in one session, the queued ones first, so that none
 * fails for the running one it waits on.  A job that already ended
 * answers "conflict", which is fine: the test only needs them gone.
 */
static void
cancel_all(void)
{
	char *out, *all, *p;
	const char *code;
	cJSON *r;
	int i, id, good = 0;

	all = p = malloc(64 + (size_t)njobs * 64);
	p += sprintf(p, "{\"v\":2,\"id\":1,\"op\":\"hello\"}\n");
	for (i = njobs; i-- > 0;)
		p += sprintf(p, "{\"v\":2,\"id\":%d,\"op\":\"cancel\","
		    "\"job\":%d}\n", i + 2, jobs[i]);
	out = raw_session(all);
	free(all);
	for (i = 0; i < njobs; i++) {
		id = i + 2;
		r = reply_of(out, id);
		code = cJSON_GetStringValue(cJSON_GetObjectItem(
		    cJSON_GetObjectItem(r, "error"), "code"));
		if (r != NULL && (cJSON_IsTrue(cJSON_GetObjectItem(r, "ok")) ||
		    (code != NULL && strcmp(code, "conflict") == 0)))
			good++;
		cJSON_Delete(r);
	}
	free(out);
	ok_int_eq(good, njobs, "every job is cancelled (or had ended)");
}

/* What the daemon holds at one moment. */
struct mark {
	struct census fds;
	struct snap q;
	long long anon;		/* RssAnon */
	long long rss;		/* VmRSS */
};

static void
mark_memory(pid_t pid, struct mark *m)
{
	snap_take(&m->q);
	m->anon = proc_bytes(pid, "RssAnon");
	m->rss = proc_bytes(pid, "VmRSS");
}

/*
 * After the load: the daemon's own descriptors are those it had, and its
 * memory is about what it was.  Anonymous memory is what is compared:
 * VmRSS also counts the pages of the mmap'ed inputs the merges have read
 * meanwhile, and the merges' own buffers (their pool included) are
 * bounded by the daemon's budget, well under LOAD_RSS_SLACK.
 */
static void
check_after(pid_t pid, const struct mark *b, const struct census *idle)
{
	struct mark a;
	bool settled;

	/* The daemon closes each connection a loop iteration after its
	 * client left: wait for that, then compare. */
	settled = census_wait(pid, &a.fds, &b->fds, false);
	if (!ok(settled, "after the load the daemon holds its own "
	    "descriptors as before (%d, %d before; %d sockets, %d before)",
	    own(&a.fds), own(&b->fds), a.fds.sockets, b->fds.sockets))
		census_show(pid);
	mark_memory(pid, &a);
	tap_diag("descriptors: %d before the load (%d of the jobs), %d after "
	    "(%d of the jobs); %d with no job", b->fds.total, b->fds.jobs,
	    a.fds.total, a.fds.jobs, idle->total);
	tap_diag("RSS: before %.1f MiB (anonymous %.1f), after %.1f MiB "
	    "(anonymous %.1f); the merges hold %.1f then %.1f MiB of a %.1f "
	    "MiB budget; %d running, %d queued after", (double)b->rss / 1048576,
	    (double)b->anon / 1048576, (double)a.rss / 1048576,
	    (double)a.anon / 1048576, b->q.used / 1048576, a.q.used / 1048576,
	    b->q.budget / 1048576, a.q.running, a.q.queued);
	if (LOAD_SANITIZED)
		ok(1, "# SKIP the daemon's memory under a sanitizer is its "
		    "shadow and quarantine");
	else
		ok(b->anon > 0 && a.anon - b->anon < LOAD_RSS_SLACK, "the "
		    "daemon's anonymous memory grew by %.1f MiB, under %d MiB",
		    (double)(a.anon - b->anon) / 1048576, LOAD_RSS_SLACK >> 20);
}

/* Cancels every job; then nothing of them may be left open. */
static void
finish(pid_t pid, const struct census *idle)
{
	struct census end;
	struct snap s;
	bool settled;
	int i;

	cancel_all();
	for (i = 0; i < 1200; i++) {
		if (snap_take(&s) && s.running + s.queued == 0)
			break;
		td_sleep_ms(50);
	}
	ok(s.total == njobs && s.running + s.queued == 0, "then no job runs "
	    "or waits (%d running, %d queued, %d cancelled)", s.running,
	    s.queued, s.cancelled);
	settled = census_wait(pid, &end, idle, true);
	if (!ok(settled, "with no job left, the daemon holds as many "
	    "descriptors as before any job (%d, %d before)", end.total,
	    idle->total))
		census_show(pid);
	ok_int_eq(td_stop(pid, SIGTERM), 0, "SIGTERM: the daemon exits 0");
}

int
main(int argc, char **argv)
{
	struct census idle;
	struct load_total t;
	struct mark before;
	struct group *gr;
	struct snap s;
	pid_t pid;

	tl_init(argc, argv);
	if (geteuid() != 0)
		tap_skip_all("needs root: the load comes from ten uids");
	if ((gr = getgrnam("nogroup")) == NULL)
		tap_skip_all("no group 'nogroup' to give the team socket to");
	team_gid = gr->gr_gid;
	tap_plan_lazy();
	dir = tl_tmpdir("load");
	snprintf(work, sizeof work, "%s/w", dir);
	td_init(dir);
	/* mergectl runs where the jobs' files are. */
	snprintf(td_dir, sizeof td_dir, "%s", work);
	setup();
	/* Team mode: the socket is the group's, so other uids may connect.
	 * The smallest budget, to bound what the merges hold. */
	pid = td_start("--group nogroup --max-running 2 --memory 16M", NULL);
	ok(snap_take(&s), "the daemon answers");
	census_settled(pid, &idle);
	queue_jobs();
	/* A raw session ends when the daemon has closed its side, so the
	 * one in mark_memory leaves nothing behind to count. */
	mark_memory(pid, &before);
	census_settled(pid, &before.fds);
	load_run(pid, &t);
	check_load(&t, &before.fds);
	report_latency(&t);
	free(t.lat);
	check_after(pid, &before, &idle);
	finish(pid, &idle);
	return tap_done();
}
