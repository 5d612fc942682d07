/* SPDX-License-Identifier: MIT */
/*
 * daemon.h: everything private to merged, grouped by the file that
 * defines it.
 *
 * One root object, struct daemon, built in main() and reached from every
 * callback through handle->data.  All of its state (connections, jobs,
 * the store) belongs to the loop thread; the merges themselves run on the
 * libuv pool through the engine's executor (graph/exec.c), which calls
 * back on the loop thread too.  SQLite is used on the loop thread only, in
 * WAL mode with short transactions.
 */
#ifndef DAEMON_H
#define DAEMON_H

#include <sys/types.h>

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

#include "graph.h"
#include "proto.h"
#include "vocab.h"

struct cJSON;
struct daemon;
struct conn;
struct djob;
struct group_late;
struct hook;
struct http;

/* Options from the command line. */
struct daemon_opts {
	char *socket;		/* listening socket path */
	char *state_dir;	/* the SQLite store and the log */
	uint64_t memory;	/* one budget for every merge */
	int threads;		/* merge threads */
	int max_running;	/* jobs merging at once */
	bool team;		/* accept any local user, not only ours */
	bool cache_inputs;	/* keep decoded inputs (graph_exec_opts) */
	char *group;		/* team mode: the socket's group */
	int verbose;
	double drain_timeout;	/* seconds to wait for running jobs */
	uint64_t keep_finished;	/* seconds to keep finished jobs; 0: ever */
	int max_jobs_per_user;	/* queued and running, root exempt */
	int max_fds_per_user;	/* held by them; 0: a share of the limit */
	char **on_done;		/* every job's hook (hook.c); NULL: none */
	double hook_timeout;	/* seconds a hook may run */
	/* --backend slurm (slurm.c): merges run as Slurm batch jobs. */
	bool slurm;
	char *slurm_partition;	/* --partition; NULL: Slurm's default */
	char *slurm_account;	/* --account; NULL: none */
	char **slurm_args;	/* --sbatch-arg, NULL-terminated, or NULL */
	char *slurm_engine;	/* the mergectl batch jobs run */
	double slurm_rate;	/* --time: seconds per GB of output */
	double slurm_safety;	/* and the factor it is multiplied by */
	char *http;		/* --http [ADDR:]PORT; NULL: no page */
	uint64_t sample_interval;	/* seconds between history samples */
};

/*
 * A job as the daemon keeps it.  The persistent fields mirror a row of
 * the store.  The runtime part (config, plan, descriptors, credentials)
 * exists only while the job can run: from submit or resume until it ends;
 * descriptors do not survive a restart, which is why a job interrupted by
 * one needs "resume", which brings new ones.
 */
struct djob {
	uint64_t id;
	struct daemon *daemon;
	enum job_kind kind;	/* a merge, or an extraction */
	uint32_t owner;
	uint32_t owner_gid;
	char *user;		/* owner's name, for the queue table */
	char *name;
	enum job_state state;
	int64_t priority;
	/* The jobs it runs after, ascending: --after's, a stage's earlier
	 * stages (a pipeline's stage, or a group's --after). */
	uint64_t *deps;
	size_t ndeps;
	uint64_t grp;		/* a stage: its pipeline job; 0: none */
	char *stage;		/* a named stage's name; NULL: none, final */
	char *inter_dir;	/* a pipeline: where named stages go */
	/* A pipeline and its stages: a stage's output is removed once
	 * every stage reading it is done (--no-keep-intermediates). */
	bool drop_inter;
	char *config;		/* YAML (an extraction's: JSON) */
	char *config_name;	/* its path, for messages */
	char *cwd;
	char *out_dir;		/* the destination, for messages */
	char *out_name;
	char *staging;		/* the staging directory's name */
	uint64_t stage_dev;	/* and its identity, once it exists: */
	uint64_t stage_ino;	/* 0 before; kept through the publish */
	uint32_t umask;		/* the submitter's, for a root daemon */
	/* As submitted; once planned, opts.seed is the seed drawn (and
	 * opts.has_seed set), so that a resume uses the same one. */
	struct graph_merge_opts opts;
	char *inputs;		/* JSON: files read, with size and mtime */
	double created;
	double started;
	double finished;
	struct graph_progress prog;
	char *shards_done;	/* '0'/'1' per shard */
	char *error;
	/* submit --on-done: the hook's words as a JSON array (the store's
	 * column, parsed when it runs, hook.c); NULL: none. */
	char *on_done;
	/* The final stage of a pipeline: its model card's account of the
	 * pipeline (graph_pipeline_card); NULL: none. */
	char *card;
	struct djob *next;	/* daemon's list, by id */
	/* Runtime only.  A merge has cfg, plan and, running, gj; an
	 * extraction xplan and, running, xj (job-extract.c). */
	struct graph_config *cfg;
	struct graph_plan *plan;
	struct graph_job *gj;
	struct graph_extract *xplan;
	struct graph_extract_job *xj;
	int out_fd;
	/* The output's parent directory, as the kernel names it (0, 0:
	 * not known): two live jobs never write one output. */
	uint64_t out_dev;
	uint64_t out_ino;
	int *fds;		/* model root descriptors */
	size_t nfds;
	struct graph_source_dir *dirs;
	size_t ndirs;
	struct graph_cred cred;
	uint32_t *groups;
	bool interrupting;	/* drain: keep the staging directory */
	/* A pipeline's (group.c): the stage directory's descriptor, the
	 * file and its stages' plans while it is planned and accepted, and
	 * where planning may make a scratch directory. */
	int inter_fd;
	struct graph_pipeline *pipe;
	struct graph_stage_plan *splans;
	bool lazy;
	char *scratch_parent;
	bool planning;		/* a stage planned on the pool now */
	double last_store;	/* when progress was last persisted */
	double last_event;	/* when watchers last heard */
	/* Queued: 1 + the queued jobs that start before it; 0 otherwise
	 * (sched_positions, which must run first). */
	size_t queue_pos;
	/* --backend slurm (slurm.c): its batch job, once submitted (0:
	 * none), and what squeue last said of it. */
	uint64_t slurm_id;
	bool slurm_submitting;	/* sbatch runs */
	/* Which sbatch is the job's: each hand-off draws the next, and an
	 * answer for another (cancelled, then resumed, while it ran) is
	 * not the job's. */
	uint64_t slurm_token;
	bool slurm_seen;	/* squeue has listed it */
	bool slurm_over;	/* Slurm ended it, or was told to */
	/* Slurm's restart count of its batch job as last seen (-1: not
	 * known, reattached): a rise is a requeue, which its log tells. */
	int64_t slurm_restarts;
	double slurm_since;	/* when it was submitted */
	char *slurm_state;	/* PENDING, RUNNING, ... */
	char *slurm_reason;	/* Slurm's reason; NULL: none */
	/* What its output must be (graph_plan_verify_spec), kept in the
	 * store for a daemon that restarts while the job runs. */
	char *slurm_verify;
};

/* A watcher: a connection's request that streams a job's events. */
struct watch {
	uint64_t conn;		/* connection id, not a pointer */
	uint64_t req;		/* the watch request's id */
	uint64_t job;
	/* What a queued job's watcher last heard (watch_queue_changed). */
	size_t pos;
	char *reason;
	struct watch *next;
};

/* The credentials of a peer, read once at accept. */
struct peer {
	pid_t pid;
	uint32_t uid;
	uint32_t gid;
	uint32_t *groups;
	size_t ngroups;
	char *user;
};

struct outbuf {
	char *data;
	size_t len;
	size_t off;
	struct outbuf *next;
};

struct conn {
	struct daemon *d;
	uint64_t id;
	int fd;
	uv_poll_t poll;
	int events;		/* what poll watches now */
	struct peer peer;
	struct frame in;
	int fds[PROTO_MAX_FDS];	/* received, not yet claimed by a request */
	uint64_t fd_pos[PROTO_MAX_FDS];	/* stream offset they came at */
	size_t nfds;
	uint64_t bytes_in;	/* bytes read from the socket so far */
	uint64_t line_pos;	/* stream offset of the request handled */
	struct outbuf *out_head;
	struct outbuf *out_tail;
	size_t outq;		/* bytes queued */
	unsigned planning;	/* requests on the pool (prep.c): reading
				 * waits, and their replies are owed */
	bool hello;		/* the hello exchange is done */
	bool close_after;	/* flush replies, then close */
	bool eof;
	bool closing;
	struct conn *next;
};

struct daemon {
	uv_loop_t loop;
	struct daemon_opts opts;
	double since;		/* when it started (daemon_now) */
	int listen_fd;
	uv_poll_t listen_poll;
	bool listening;
	bool socket_owned;	/* we created it: unlink on exit */
	int lock_fd;
	uv_timer_t accept_timer;	/* EMFILE back-off */
	uv_timer_t tick;		/* progress persistence, drain limit */
	uv_timer_t hup_check;		/* vanished half-closed watchers */
	uv_timer_t retain;		/* purges old finished jobs */
	uv_signal_t sigint;
	uv_signal_t sigterm;
	uv_signal_t sighup;
	struct conn *conns;
	size_t nconns;
	uint64_t next_conn;
	struct djob *jobs;
	size_t nrunning;
	struct prep *preps;	/* jobs being planned, or waiting to be */
	struct group_late *lates;	/* stages being planned (group.c) */
	size_t nplanning;	/* of them, on the pool */
	struct watch *watches;
	/*
	 * What job.c tells the rest of the daemon, set by main(); NULL:
	 * nobody listens.  job_changed: a job's state or progress changed
	 * (final: its last change), its watchers hear it (watch.c).
	 * job_stopped: a running job ended and the scheduler has run, so a
	 * drain may be over (daemon_maybe_finish).  Through these job.c
	 * reaches no connection, so jobs run without sockets.
	 */
	void (*job_changed)(struct daemon *, struct djob *, bool final);
	void (*job_stopped)(struct daemon *);
	/* queue_changed: the scheduler ran, so a queued job's place or
	 * reason may have changed. */
	void (*queue_changed)(struct daemon *);
	bool queue_stale;	/* queue_pos needs sched_positions */
	struct hook *hooks_wait;	/* hooks to run, in order (hook.c) */
	struct hook *hooks_run;		/* and running */
	size_t nhooks;
	bool hooks_stopped;		/* the daemon stops: no new one */
	struct http *http;		/* merged --http; NULL: none */
	uv_timer_t sampler;		/* its history (http-api.c) */
	struct store *store;
	struct graph_exec *exec;
	/* --backend slurm: the squeue poll and Slurm's commands running. */
	uv_timer_t slurm_timer;
	bool slurm_polling;
	struct slurm_cmd *slurm_cmds;
	struct slurm_cleanup *slurm_cleanups;	/* after cancels */
	uint32_t uid;
	bool draining;
	double drain_deadline;
	int exit_code;
};

/* slurm.c: merged --backend slurm. */
bool slurm_handed(const struct djob *j);
void slurm_start(struct daemon *d);
void slurm_stop(struct daemon *d);
int slurm_job_start(struct daemon *d, struct djob *j);
int slurm_reachable(const struct djob *j, char **cause);
void slurm_job_cancel(struct daemon *d, struct djob *j);
void slurm_job_interrupt(struct daemon *d, struct djob *j);
void slurm_job_final(struct daemon *d, struct djob *j);
void slurm_forget(struct djob *j);
void slurm_reattach(struct daemon *d);
void slurm_cleanup_all(struct daemon *d);
void slurm_cancel_id(struct daemon *d, uint64_t sid, int64_t owner);
char *slurm_reason(const struct djob *j);

/* slurm-log.c: what the engine said on the node (sbatch --output). */
char *slurm_log_name(const char *out_name);
char *slurm_log_arg(const struct djob *j);
char *slurm_log_said(struct daemon *d, struct djob *j);
void slurm_log_remove(int dirfd, const char *out_name,
    const struct graph_cred *cred);

/* slurm-cmd.c: Slurm's commands, run from the loop.  cb gets the exit
 * status (-1: killed, or more output than kept), stdout and stderr. */
struct slurm_cmd;
typedef void (*slurm_cmd_cb)(struct daemon *d, int64_t status,
    const char *out, size_t len, const char *err, void *arg);
int slurm_cmd_run(struct daemon *d, char **argv, const char *input,
    slurm_cmd_cb cb, void *arg);
bool slurm_cmd_busy(const struct daemon *d);

/* clock.c */
double daemon_now(void);

/* merged.c */
void daemon_drain(struct daemon *);
void daemon_maybe_finish(struct daemon *);

/* log.c: thread-safe logging to stderr. */
void log_init(int);
void log_warn(const char *, ...) __attribute__((format(printf, 1, 2)));
void log_warnx(const char *, ...) __attribute__((format(printf, 1, 2)));
void log_info(const char *, ...) __attribute__((format(printf, 1, 2)));
void log_debug(const char *, ...) __attribute__((format(printf, 1, 2)));
void fatal(const char *, ...) __attribute__((format(printf, 1, 2), noreturn));
void fatalx(const char *, ...) __attribute__((format(printf, 1, 2), noreturn));

/* server.c: the listening socket. */
int server_open(struct daemon *d, char **cause);
void server_close(struct daemon *);

/* conn.c: one client connection. */
void conn_accept(struct daemon *d, int fd);
struct conn *conn_find(struct daemon *, uint64_t);
void conn_send(struct conn *, struct cJSON *);
void conn_close(struct conn *);
int conn_take_fds(struct conn *c, size_t n, int *out);
size_t conn_count_uid(const struct daemon *, uint32_t);
void conn_reap_vanished(struct daemon *);
bool conn_vanished(const struct conn *);
void conn_unblock(struct conn *);

/* peer.c */
int peer_read(int fd, struct peer *p);
int peer_user_groups(const char *user, gid_t gid, struct peer *p);
void peer_fini(struct peer *);
bool peer_may_act(const struct peer *, const struct djob *);
void peer_cred(const struct peer *, struct graph_cred *);

/* op.c: the request table; one handler per op-<name>.c. */
struct op_ctx {
	struct conn *c;
	uint64_t id;		/* the request's id */
	const struct cJSON *req;
};

struct op_entry {
	const char *name;
	bool needs_hello;
	void (*fn)(struct op_ctx *);
};

void op_dispatch(struct conn *, const struct cJSON *);
void op_error(struct op_ctx *o, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void op_reply(struct op_ctx *, struct cJSON *);
struct djob *op_job(struct op_ctx *o, bool need_owner);
int op_take_fds(struct op_ctx *o, int **fds, size_t *n);
void op_problems(struct op_ctx *o, const struct graph_diags *d,
    const char *cause);
void op_diag_lines(struct cJSON *arr, const struct graph_diags *d);
struct cJSON *op_job_json(const struct djob *j, bool full);

/* The op_<name> entries are declared where they are gathered, in op.c. */

/* job.c: the job table and life cycle. */
struct djob *job_find(struct daemon *, uint64_t);
bool job_depends_on(const struct djob *j, uint64_t id);
void job_insert(struct daemon *, struct djob *);
void job_free(struct djob *);
void job_release_runtime(struct djob *);
int job_take_request(struct djob *j, const struct peer *p, const int *fds,
    size_t nfds, const struct cJSON *models, int out_fd, char **cause);
int job_take_inter(struct djob *j, const struct cJSON *req, char **cause);
int job_plan(struct djob *j, uint64_t budget, int threads,
    const atomic_bool *cancel, struct graph_diags *d, char **cause);
bool job_planned(const struct djob *);
int job_record_plan(struct djob *j, uint64_t seed,
    struct graph_plan_files *files, char **cause);
void job_note_progress(struct djob *j, const struct graph_progress *g);
void job_note_staged(struct djob *j, uint64_t dev, uint64_t ino);
void job_ended(struct djob *j, int rc, const char *err);
bool job_was_published(struct djob *j);
struct djob *job_shadow(const struct djob *);
void job_owner_cred_db(struct djob *j);
void job_out_ident(struct djob *j, int fd);
struct djob *job_out_clash(struct daemon *d, uint64_t dev, uint64_t ino,
    const char *name);
void job_adopt(struct djob *j, struct djob *s);
void job_log(struct daemon *d, struct djob *j, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void job_changed(struct daemon *d, struct djob *j, bool final);
void job_set_state(struct daemon *d, struct djob *j, enum job_state s,
    const char *error);
void job_cancel(struct daemon *, struct djob *);
int job_start(struct daemon *, struct djob *);
struct graph_ident *job_own_outputs(const struct daemon *d, uint32_t owner,
    size_t *n);
void job_interrupt_all(struct daemon *);

/* job-extract.c: the extract-lora kind's planning and start. */
int job_plan_extract(struct djob *j, uint64_t budget, int threads,
    const atomic_bool *cancel, struct graph_diags *d, char **cause);
int job_start_extract(struct daemon *d, struct djob *j);

/* group.c: pipelines, job groups of stages. */
int group_plan(struct djob *j, uint64_t budget, const atomic_bool *cancel,
    struct graph_diags *d, char **cause);
int group_accept(struct daemon *d, struct djob *g, char **cause);
size_t group_resume(struct daemon *d, struct djob *g);
void group_quota(const struct djob *g, size_t *njobs, size_t *nfds);
void group_refresh(struct daemon *d, struct djob *g);
void group_cancel(struct daemon *d, struct djob *g);
void group_plan_waiting(struct daemon *d);
char *group_stage_manifest(struct daemon *d, const struct djob *s);
void group_release(struct djob *g);
int group_dup(int fd);
void group_add_dir(struct djob *s, const char *ref, int fd, const char *rel,
    const char *where);
void group_copy_cred(struct djob *to, const struct djob *from);
void group_stop_plans(struct daemon *d, uint64_t id);
void group_drop_read(struct daemon *d, struct djob *j);

/* watch.c: a job's change, sent to its watchers (d->job_changed). */
void watch_job_changed(struct daemon *d, struct djob *j, bool final);
void watch_queue_changed(struct daemon *d);
void watch_free(struct watch *);

/* http.c, http-api.c: merged --http (http.h has the rest). */
int http_start(struct daemon *d, const char *listen, char **cause);
char *http_url(const struct daemon *d);
void http_stop(struct daemon *d);
void http_free(struct daemon *d);
char *http_api_jobs(struct daemon *d);
char *http_api_history(struct daemon *d);
void http_sample(struct daemon *d);

/* hook.c: submit --on-done and merged --on-done. */
bool hook_allowed(const struct daemon *d, uint32_t uid);
void hook_job_ended(struct daemon *d, const struct djob *j);
void hook_stop_all(struct daemon *d);
void hook_free_all(struct daemon *d);

/*
 * prep.c: planning a submitted or resumed job on the libuv pool.  The op
 * takes what it needs from the request, hands over a job of its own and
 * the rest of its work (done), and returns; its connection reads no more
 * requests until the plan is back.  done runs on the loop thread, only if
 * the requester is still connected and the daemon is not draining, with
 * an op_ctx whose req is NULL (the request is gone); it takes p->j if it
 * keeps the job.  Otherwise the job is dropped with its descriptors (a
 * draining daemon replies "shutting down").
 */
struct prep;
typedef void (*prep_done_fn)(struct prep *, struct op_ctx *);

struct prep {
	uv_work_t work;
	struct daemon *d;
	uint64_t conn;		/* the requester, by id */
	uint64_t req;		/* its request's id */
	uint64_t job;		/* resume: the job's id; 0 for a submit */
	struct djob *j;		/* planned; private until done */
	prep_done_fn done;
	uint64_t budget;	/* the daemon's --memory, for the worker */
	int threads;		/* and its --threads */
	atomic_bool cancel;	/* drain: stop planning */
	bool on_pool;
	int rc;			/* job_plan()'s */
	struct graph_diags diags;
	char *cause;
	struct prep *next;	/* the daemon's, in request order */
};

void prep_start(struct op_ctx *o, struct djob *j, uint64_t job,
    prep_done_fn done);
void prep_drain(struct daemon *);

/* sched.c: which queued job runs next. */
void sched_run(struct daemon *);
int sched_ready(struct daemon *d, const struct djob *j, char **why);
char *sched_reason(struct daemon *d, const struct djob *j);
void sched_positions(struct daemon *d);

/* quota.c: per-user caps on queued jobs and the descriptors they hold. */
bool quota_check(struct op_ctx *o, const struct djob *j, size_t nfds);
bool quota_check_n(struct op_ctx *o, const struct djob *j, size_t njobs,
    size_t nfds);
size_t quota_job_fds(const struct djob *);

/* retain.c: removing finished jobs' records. */
bool retain_finished(const struct djob *);
bool retain_removable(struct daemon *d, const struct djob *j, char **why);
size_t retain_select(struct daemon *d,
    bool (*match)(const struct djob *, void *), void *arg, struct djob **v,
    size_t max, bool *more);
int retain_remove(struct daemon *d, struct djob **v, size_t n);
void retain_start(struct daemon *);

/* store.c: SQLite, on the loop thread. */
struct store;
int store_open(const char *path, struct store **out, char **cause);
void store_close(struct store *);
int store_recover(struct store *, bool slurm);
int store_tx(struct store *, bool begin);
int store_tx_abort(struct store *);
int store_sample_add(struct store *, double ts, uint64_t used,
    uint64_t budget, size_t running, size_t queued, double prune);
int store_samples(struct store *, double since, struct cJSON *arr);
int store_job_insert(struct store *, struct djob *);
int store_job_update(struct store *, const struct djob *);
int store_job_load(struct store *s, void (*row)(struct djob *, void *),
    void *arg);
int store_log(struct store *s, uint64_t job, double ts, const char *line);
int store_logs(struct store *s, uint64_t job, struct cJSON *lines,
    struct cJSON *times);
int store_job_delete(struct store *s, const uint64_t *ids, size_t n);

#endif /* DAEMON_H */
