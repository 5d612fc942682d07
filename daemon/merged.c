/* SPDX-License-Identifier: MIT */
/*
 * merged.c: the daemon's entry point, its root object and its shutdown.
 *
 * main() raises the soft descriptor limit to the hard one, builds struct
 * daemon and wires its hooks (a job's changes go to its watchers,
 * watch.c; a running job's end may finish a drain), opens the store and
 * loads its jobs into the daemon's list (jobs that were running or
 * queued when the daemon last stopped become "interrupted"), the
 * executor (one memory budget for every merge) and the socket, and runs
 * the loop.  SIGINT or SIGTERM drains: stop accepting, interrupt running
 * jobs keeping their finished shards, cancel plans in progress, wait for
 * them (bounded by --drain-timeout), close every connection, and exit
 * with uv_loop_close() returning 0.  A second signal exits at once.  Runs
 * in the foreground and logs to stderr, for systemd.
 */
#define _GNU_SOURCE
#include <sys/resource.h>
#include <sys/stat.h>

#include <errno.h>
#include <getopt.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cmdline.h"
#include "daemon.h"
#include "xmalloc.h"

/* An executable named name in PATH (or a path), for the checks below. */
static bool
in_path(const char *name)
{
	const char *path = getenv("PATH");
	char *dirs, *dir, *save = NULL, *full;
	bool found = false;

	if (strchr(name, '/') != NULL)
		return access(name, X_OK) == 0;
	dirs = xstrdup(path != NULL ? path : "/usr/bin:/bin");
	for (dir = strtok_r(dirs, ":", &save); dir != NULL && !found;
	    dir = strtok_r(NULL, ":", &save)) {
		full = xasprintf("%s/%s", dir, name);
		found = access(full, X_OK) == 0;
		free(full);
	}
	free(dirs);
	return found;
}

/*
 * --backend slurm: who submits, with what.  Each job runs as its user:
 * a personal daemon is that user; a team daemon must be root to submit
 * with sbatch --uid/--gid, never as a shared account.
 */
static void
slurm_check_args(struct daemon_opts *o)
{
	char self[PATH_MAX], *dir, *cand;
	ssize_t n;

	if (o->team && geteuid() != 0)
		fatalx("--backend slurm: a team daemon submits each job as "
		    "the user who asked for it (sbatch --uid/--gid), which "
		    "only root can; run it as root (contrib/systemd/"
		    "merged-root.service) or use a personal daemon");
	if (!in_path("sbatch") || !in_path("squeue") || !in_path("scancel"))
		fatalx("--backend slurm: sbatch, squeue and scancel must be in "
		    "PATH (Debian: slurm-client)");
	if (o->slurm_engine == NULL) {
		/* Installed: mergectl beside merged; built: ../client. */
		if ((n = readlink("/proc/self/exe", self, sizeof self - 1)) <=
		    0)
			fatal("--backend slurm: /proc/self/exe");
		self[n] = '\0';
		dir = dirname(self);
		cand = xasprintf("%s/mergectl", dir);
		if (access(cand, X_OK) != 0) {
			free(cand);
			cand = xasprintf("%s/../client/mergectl", dir);
		}
		o->slurm_engine = realpath(cand, NULL);
		if (o->slurm_engine == NULL)
			fatalx("--backend slurm: no mergectl beside merged; "
			    "name it with --slurm-engine PATH");
		free(cand);
	} else if (o->slurm_engine[0] != '/' ||
	    access(o->slurm_engine, X_OK) != 0) {
		fatalx("--slurm-engine: %s is not an absolute path to a "
		    "program", o->slurm_engine);
	}
}

static void
usage(FILE *fp)
{
	fprintf(fp, "usage: merged [-v] [--socket PATH] [--state-dir DIR] "
	    "[--memory SIZE]\n"
	    "              [--threads N] [--max-running N] [--team] [--group G] "
	    "[--drain-timeout SECONDS]\n"
	    "              [--keep-finished DURATION] [--max-jobs-per-user N] "
	    "[--max-fds-per-user N]\n"
	    "              [--on-done CMD] [--hook-timeout DURATION] "
	    "[--http [ADDR:]PORT]\n"
	    "              [--sample-interval DURATION]\n"
	    "              [--backend local|slurm] [--partition P] "
	    "[--account A] [--sbatch-arg ARG]\n"
	    "              [--slurm-engine PATH] [--slurm-rate SECONDS]\n\n"
	    "  --socket PATH     listen here (personal default: "
	    "$XDG_RUNTIME_DIR/merged/merged.sock)\n"
	    "  --state-dir DIR   the job store (default: "
	    "$XDG_STATE_HOME/merged, or /var/lib/merged for --team)\n"
	    "  --memory SIZE     the most memory all merges together may use "
	    "(default: a\n                    quarter of RAM)\n"
	    "  --threads N       merge threads (default: CPU count)\n"
	    "  --max-running N   jobs merging at once (default 2)\n"
	    "  --team            serve every local user (system service); "
	    "default: only this user\n"
	    "  --group GROUP     team mode: the group that may use the "
	    "socket\n"
	    "  --drain-timeout S on SIGTERM, wait this long for running jobs "
	    "(default 10)\n"
	    "  --cache-inputs    keep decoded inputs for later passes and other "
	    "jobs\n                    (uses memory bandwidth; off: the page "
	    "cache is shared)\n"
	    "  --keep-finished D forget finished jobs D after they end (30d; "
	    "0: never;\n                    units s, m, h, d, w)\n"
	    "  --max-jobs-per-user N\n                    jobs one user may "
	    "have queued or running (default 64;\n                    root "
	    "is exempt)\n"
	    "  --max-fds-per-user N\n                    descriptors those "
	    "jobs may hold (default: a quarter of\n                    the "
	    "descriptor limit)\n"
	    "  --on-done CMD     run CMD when any job ends, as the job's "
	    "owner, without a\n                    shell (root or personal "
	    "daemon only; see mergectl(1))\n"
	    "  --hook-timeout D  kill a hook still running after D (default "
	    "60s)\n"
	    "  --http [ADDR:]PORT\n                    serve the read-only "
	    "status page (default address\n                    127.0.0.1; "
	    "off without this option)\n"
	    "  --sample-interval D\n                    how often the "
	    "page's history is sampled (60s)\n"
	    "  --backend B       local (merge here, the default) or slurm (each "
	    "job a Slurm\n                    batch job, as its user; see "
	    "docs/cluster.md)\n"
	    "  --partition P, --account A\n                    slurm: "
	    "sbatch's --partition and --account\n"
	    "  --sbatch-arg ARG  slurm: one more sbatch argument "
	    "(repeatable)\n"
	    "  --slurm-engine PATH\n                    slurm: the mergectl "
	    "batch jobs run (default: beside merged)\n"
	    "  --slurm-rate S    slurm: --time is S seconds per GB of "
	    "output, times 3 (60)\n"
	    "  --version         print the version\n"
	    "  -v                more logging (repeat for debug)\n");
}

static char *
default_state_dir(bool team)
{
	const char *st = getenv("XDG_STATE_HOME"), *home = getenv("HOME");

	if (team)
		return xstrdup("/var/lib/merged");
	if (st != NULL && *st != '\0')
		return xasprintf("%s/merged", st);
	return xasprintf("%s/.local/state/merged", home ? home : "/tmp");
}

static void
parse_args(int argc, char **argv, struct daemon_opts *o)
{
	static const struct option longopts[] = {
		{ "socket", required_argument, NULL, 's' },
		{ "state-dir", required_argument, NULL, 'S' },
		{ "memory", required_argument, NULL, 'm' },
		{ "threads", required_argument, NULL, 't' },
		{ "max-running", required_argument, NULL, 'r' },
		{ "team", no_argument, NULL, 'T' },
		{ "group", required_argument, NULL, 'g' },
		{ "cache-inputs", no_argument, NULL, 'C' },
		{ "drain-timeout", required_argument, NULL, 'D' },
		{ "keep-finished", required_argument, NULL, 'K' },
		{ "max-jobs-per-user", required_argument, NULL, 'J' },
		{ "max-fds-per-user", required_argument, NULL, 'F' },
		{ "on-done", required_argument, NULL, 'O' },
		{ "http", required_argument, NULL, 'W' },
		{ "sample-interval", required_argument, NULL, 'I' },
		{ "hook-timeout", required_argument, NULL, 'H' },
		{ "backend", required_argument, NULL, 'B' },
		{ "partition", required_argument, NULL, 'P' },
		{ "account", required_argument, NULL, 'A' },
		{ "sbatch-arg", required_argument, NULL, 'X' },
		{ "slurm-engine", required_argument, NULL, 'E' },
		{ "slurm-rate", required_argument, NULL, 'R' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	char *cause = NULL;
	uint64_t secs;
	size_t n, nargs = 0;
	int c;

	memset(o, 0, sizeof *o);
	o->threads = (int)uv_available_parallelism();
	o->max_running = 2;
	o->memory = graph_default_memory();
	o->drain_timeout = 10;
	o->keep_finished = 30 * 86400;
	o->max_jobs_per_user = 64;
	o->hook_timeout = 60;
	o->sample_interval = 60;
	o->slurm_rate = 60;
	o->slurm_safety = 3;
	while ((c = getopt_long(argc, argv, "vh", longopts, NULL)) != -1) {
		switch (c) {
		case 's':
			free(o->socket);
			o->socket = xstrdup(optarg);
			break;
		case 'S':
			free(o->state_dir);
			o->state_dir = xstrdup(optarg);
			break;
		case 'm':
			if (graph_parse_size(optarg, true, &o->memory) != 0 ||
			    o->memory < (16u << 20))
				fatalx("--memory: '%s' is not a size of at least "
				    "16M", optarg);
			break;
		case 't':
			if ((o->threads = atoi(optarg)) < 1 || o->threads > 256)
				fatalx("--threads: 1 to 256");
			break;
		case 'r':
			if ((o->max_running = atoi(optarg)) < 1 ||
			    o->max_running > 64)
				fatalx("--max-running: 1 to 64");
			break;
		case 'T':
			o->team = true;
			break;
		case 'C':
			o->cache_inputs = true;
			break;
		case 'g':
			free(o->group);
			o->group = xstrdup(optarg);
			o->team = true;
			break;
		case 'D':
			if ((o->drain_timeout = atof(optarg)) <= 0)
				fatalx("--drain-timeout: a positive number");
			break;
		case 'K':
			if (graph_parse_duration(optarg, &o->keep_finished) != 0)
				fatalx("--keep-finished: '%s' is not a duration "
				    "(e.g. 30d, 12h; 0 keeps every job)", optarg);
			break;
		case 'J':
			if ((o->max_jobs_per_user = atoi(optarg)) < 1 ||
			    o->max_jobs_per_user > 100000)
				fatalx("--max-jobs-per-user: 1 to 100000");
			break;
		case 'F':
			if ((o->max_fds_per_user = atoi(optarg)) < 1 ||
			    o->max_fds_per_user > 1 << 24)
				fatalx("--max-fds-per-user: 1 to %d", 1 << 24);
			break;
		case 'O':
			cmdline_free(o->on_done);
			if (cmdline_split(optarg, &o->on_done, &n, &cause) != 0)
				fatalx("--on-done: %s", cause);
			break;
		case 'H':
			if (graph_parse_duration(optarg, &secs) != 0 ||
			    secs == 0 || secs > 86400)
				fatalx("--hook-timeout: '%s' is not a duration "
				    "from 1s to 1d", optarg);
			o->hook_timeout = (double)secs;
			break;
		case 'W':
			free(o->http);
			o->http = xstrdup(optarg);
			break;
		case 'I':
			if (graph_parse_duration(optarg, &secs) != 0 ||
			    secs == 0 || secs > 86400)
				fatalx("--sample-interval: '%s' is not a "
				    "duration from 1s to 1d", optarg);
			o->sample_interval = secs;
			break;
		case 'B':
			if (strcmp(optarg, "slurm") != 0 &&
			    strcmp(optarg, "local") != 0)
				fatalx("--backend: local or slurm, not '%s'",
				    optarg);
			o->slurm = strcmp(optarg, "slurm") == 0;
			break;
		case 'P':
			free(o->slurm_partition);
			o->slurm_partition = xstrdup(optarg);
			break;
		case 'A':
			free(o->slurm_account);
			o->slurm_account = xstrdup(optarg);
			break;
		case 'X':
			if (nargs >= 16)
				fatalx("--sbatch-arg: at most 16");
			o->slurm_args = xreallocarray(o->slurm_args, nargs + 2,
			    sizeof *o->slurm_args);
			o->slurm_args[nargs++] = xstrdup(optarg);
			o->slurm_args[nargs] = NULL;
			break;
		case 'E':
			free(o->slurm_engine);
			o->slurm_engine = xstrdup(optarg);
			break;
		case 'R':
			if ((o->slurm_rate = atof(optarg)) <= 0 ||
			    o->slurm_rate > 86400)
				fatalx("--slurm-rate: seconds per GB, above 0 "
				    "and at most 86400");
			break;
		case 'v':
			o->verbose++;
			break;
		case 'V':
			printf("merged %s\n", GRAPH_VERSION);
			exit(0);
		case 'h':
			usage(stdout);
			exit(0);
		default:
			usage(stderr);
			exit(2);
		}
	}
	if (optind != argc) {
		usage(stderr);
		exit(2);
	}
	if (o->socket == NULL)
		o->socket = sockdir_personal_path();
	if (o->state_dir == NULL)
		o->state_dir = default_state_dir(o->team);
	if (o->slurm)
		slurm_check_args(o);
	/* A hook runs as the job's owner (hook.c): only root can. */
	if (o->on_done != NULL && o->team && geteuid() != 0)
		fatalx("--on-done: a team daemon runs each job's hook as the "
		    "job's owner, which only root can; run it as root, or "
		    "leave the hook to each user's submit --on-done");
}

static void
close_any(uv_handle_t *h, void *arg)
{
	(void)arg;
	if (!uv_is_closing(h))
		uv_close(h, NULL);
}

/* The last step of a drain, once nothing runs any more. */
void
daemon_maybe_finish(struct daemon *d)
{
	struct conn *c, *next;

	/* Slurm's commands in flight (a drain's scancel) end first. */
	if (!d->draining || d->nrunning > 0 || d->nplanning > 0 ||
	    slurm_cmd_busy(d))
		return;
	for (c = d->conns; c != NULL; c = next) {
		next = c->next;
		conn_close(c);
	}
	uv_timer_stop(&d->tick);
	uv_timer_stop(&d->hup_check);
	uv_timer_stop(&d->retain);
	uv_timer_stop(&d->sampler);
	if (d->opts.slurm) {
		slurm_stop(d);
		slurm_cleanup_all(d);
	}
	hook_stop_all(d);
	uv_walk(&d->loop, close_any, NULL);
}

static void
daemon_sample(uv_timer_t *t)
{
	http_sample(t->data);
}

/* merged --http: the page, and the history it charts. */
static void
daemon_http(struct daemon *d)
{
	char *cause = NULL, *url;
	uint64_t every = d->opts.sample_interval * 1000;

	if (http_start(d, d->opts.http, &cause) != 0)
		fatalx("--http: %s", cause);
	url = http_url(d);
	log_info("status page on %s", url);
	free(url);
	http_sample(d);
	uv_timer_start(&d->sampler, daemon_sample, every, every);
}

static void
daemon_hup_check(uv_timer_t *t)
{
	conn_reap_vanished(t->data);
}

static void
daemon_tick(uv_timer_t *t)
{
	struct daemon *d = t->data;

	if (d->draining && daemon_now() > d->drain_deadline) {
		log_warnx("drain: %zu jobs and %zu plans did not stop within "
		    "%.0f seconds; exiting anyway", d->nrunning, d->nplanning,
		    d->opts.drain_timeout);
		/* Not exit(): libuv's destructor would join the pool's
		 * threads, and a plan stuck on one of them kept the daemon
		 * alive past the deadline.  Every store update is already
		 * committed, and a restart knows the jobs as interrupted. */
		fflush(NULL);
		_exit(1);
	}
	daemon_maybe_finish(d);
}

/*
 * Stops accepting work and interrupts the running jobs; the loop ends
 * when they have stopped (their finished shards are recorded, so
 * "mergectl resume" continues them).  Jobs still being planned were never
 * accepted: their requesters hear "shutting down", and plans on the pool
 * stop at their next model, shard or tensor, so nothing waits for a plan
 * to finish.
 */
void
daemon_drain(struct daemon *d)
{
	if (d->draining)
		return;
	log_info("draining: %zu jobs running, %zu being planned", d->nrunning,
	    d->nplanning);
	d->draining = true;
	d->drain_deadline = daemon_now() + d->opts.drain_timeout;
	server_close(d);
	http_stop(d);
	job_interrupt_all(d);
	prep_drain(d);
	group_stop_plans(d, 0);
	uv_timer_start(&d->tick, daemon_tick, 100, 100);
	daemon_maybe_finish(d);
}

static void
daemon_on_signal(uv_signal_t *h, int signum)
{
	struct daemon *d = h->data;

	if (signum == SIGHUP) {
		log_info("SIGHUP: merged has no configuration file to reload");
		return;
	}
	if (d->draining) {
		log_warnx("second signal: exiting now");
		exit(1);
	}
	log_info("%s: shutting down", signum == SIGINT ? "SIGINT" : "SIGTERM");
	daemon_drain(d);
}

static void
daemon_signals(struct daemon *d)
{
	uv_signal_init(&d->loop, &d->sigint);
	uv_signal_init(&d->loop, &d->sigterm);
	uv_signal_init(&d->loop, &d->sighup);
	d->sigint.data = d->sigterm.data = d->sighup.data = d;
	uv_signal_start(&d->sigint, daemon_on_signal, SIGINT);
	uv_signal_start(&d->sigterm, daemon_on_signal, SIGTERM);
	uv_signal_start(&d->sighup, daemon_on_signal, SIGHUP);
	/* Signals alone do not keep the loop alive. */
	uv_unref((uv_handle_t *)&d->sigint);
	uv_unref((uv_handle_t *)&d->sigterm);
	uv_unref((uv_handle_t *)&d->sighup);
}

/*
 * Every connection, every descriptor a queued job holds and every file
 * a merge reads costs a descriptor, and the usual soft limit (1024) is a
 * relic of select(): raise it to the hard limit, which only the
 * administrator sets (systemd's LimitNOFILE=), and say what it is.
 */
static void
daemon_raise_nofile(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == -1) {
		log_warn("getrlimit(RLIMIT_NOFILE)");
		return;
	}
	if (rl.rlim_cur < rl.rlim_max) {
		rlim_t was = rl.rlim_cur;

		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) == -1) {
			log_warn("setrlimit(RLIMIT_NOFILE, %llu)",
			    (unsigned long long)rl.rlim_max);
			rl.rlim_cur = was;
		}
	}
	log_info("descriptor limit %llu (hard limit %llu)",
	    (unsigned long long)rl.rlim_cur, (unsigned long long)rl.rlim_max);
}

/* The store hands its jobs over one at a time; the list is the daemon's. */
static void
daemon_load_job(struct djob *j, void *arg)
{
	job_insert(arg, j);
}

/* The store: refuse to start, clearly, if it cannot be used. */
static void
daemon_store(struct daemon *d)
{
	char *path, *cause = NULL;

	path = xstrdup(d->opts.state_dir);
	for (char *s = path + 1; *s != '\0'; s++) {
		if (*s == '/') {
			*s = '\0';
			mkdir(path, 0700);
			*s = '/';
		}
	}
	free(path);
	if (mkdir(d->opts.state_dir, 0700) == -1 && errno != EEXIST)
		fatal("refusing to start: cannot create the state directory "
		    "%s", d->opts.state_dir);
	path = xasprintf("%s/merged.db", d->opts.state_dir);
	if (store_open(path, &d->store, &cause) != 0)
		fatalx("refusing to start: %s", cause);
	if (store_recover(d->store, d->opts.slurm) != 0 ||
	    store_job_load(d->store, daemon_load_job, d) != 0)
		fatalx("refusing to start: cannot read the job store %s",
		    path);
	free(path);
}

static void
daemon_free(struct daemon *d)
{
	struct djob *j;
	struct watch *w;

	while ((j = d->jobs) != NULL) {
		d->jobs = j->next;
		job_free(j);
	}
	while ((w = d->watches) != NULL) {
		d->watches = w->next;
		watch_free(w);
	}
	graph_exec_destroy(d->exec);
	store_close(d->store);
	if (d->lock_fd != -1)
		close(d->lock_fd);
	free(d->opts.socket);
	free(d->opts.state_dir);
	free(d->opts.group);
	cmdline_free(d->opts.on_done);
	free(d->opts.http);
	free(d->opts.slurm_partition);
	free(d->opts.slurm_account);
	cmdline_free(d->opts.slurm_args);
	free(d->opts.slurm_engine);
	hook_free_all(d);
	http_free(d);
}

int
main(int argc, char **argv)
{
	struct graph_exec_opts eo;
	struct daemon d;
	char pool[16], *cause = NULL;
	int rc;

	memset(&d, 0, sizeof d);
	d.lock_fd = -1;
	d.job_changed = watch_job_changed;
	d.queue_changed = watch_queue_changed;
	d.job_stopped = daemon_maybe_finish;
	parse_args(argc, argv, &d.opts);
	log_init(d.opts.verbose);
	signal(SIGPIPE, SIG_IGN);
	signal(SIGXFSZ, SIG_IGN);
	daemon_raise_nofile();
	/* libuv reads this once, at the pool's first use. */
	snprintf(pool, sizeof pool, "%d", graph_exec_pool_size(d.opts.threads));
	setenv("UV_THREADPOOL_SIZE", pool, 1);
	graph_init();
	d.uid = (uint32_t)getuid();
	d.since = daemon_now();
	if (uv_loop_init(&d.loop) != 0)
		fatalx("cannot initialise the event loop");
	daemon_store(&d);
	eo.memory = d.opts.memory;
	eo.threads = d.opts.threads;
	eo.cache_inputs = d.opts.cache_inputs;
	if (graph_exec_create(&d.loop, &eo, &d.exec) != 0)
		fatalx("cannot create the executor");
	if (server_open(&d, &cause) != 0)
		fatalx("refusing to start: %s", cause);
	uv_timer_init(&d.loop, &d.tick);
	d.tick.data = &d;
	uv_timer_init(&d.loop, &d.hup_check);
	d.hup_check.data = &d;
	uv_timer_start(&d.hup_check, daemon_hup_check, 1000, 1000);
	retain_start(&d);
	uv_timer_init(&d.loop, &d.sampler);
	d.sampler.data = &d;
	if (d.opts.http != NULL)
		daemon_http(&d);
	if (d.opts.slurm) {
		slurm_reattach(&d);
		slurm_start(&d);
		log_info("backend slurm: jobs run as Slurm batch jobs of %s",
		    d.opts.slurm_engine);
	}
	daemon_signals(&d);
	log_info("listening on %s (%s mode), state in %s, memory %llu MiB, "
	    "%d threads", d.opts.socket, d.opts.team ? "team" : "personal",
	    d.opts.state_dir, (unsigned long long)(d.opts.memory >> 20),
	    d.opts.threads);
	uv_run(&d.loop, UV_RUN_DEFAULT);
	uv_walk(&d.loop, close_any, NULL);
	uv_run(&d.loop, UV_RUN_DEFAULT);
	rc = uv_loop_close(&d.loop);
	if (rc != 0)
		log_warnx("uv_loop_close: %s (a handle or request leaked)",
		    uv_strerror(rc));
	daemon_free(&d);
	log_info("stopped");
	return rc == 0 ? d.exit_code : 1;
}
