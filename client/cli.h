/* SPDX-License-Identifier: MIT */
/*
 * cli.h: mergectl's private declarations, grouped by file.
 */
#ifndef CLI_H
#define CLI_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdint.h>
#include <sys/types.h>

#include <uv.h>

#include "graph.h"
#include "proto.h"
#include "vocab.h"

struct cJSON;

/* Exit codes: CLI_EXIT_* in proto/vocab.h. */

struct cli_cmd {
	const char *name;
	const char *args;
	const char *help;
	int (*run)(int argc, char **argv);
};

/* mergectl.c */
extern const char *cli_progname;
/* Run as mergekit-yaml: "mergectl run" under mergekit's name. */
extern bool cli_as_mergekit;
extern bool cli_as_multi;	/* called as mergekit-multi */
const char *cli_command_summary(const char *name);

/*
 * errors.c: mergectl's own errors, on stderr and, with --json anywhere on
 * the command line (cli_json), as one error object on stdout.  code is
 * one of the daemon's (PROTO_E_*) or of mergectl's own below.
 */
#define CLI_E_USAGE "usage"		/* exit 2 */
#define CLI_E_FAILED "failed"		/* exit 1 */
#define CLI_E_NO_DAEMON "no_daemon"	/* exit 5 */
#define CLI_E_UNTRUSTED "untrusted"	/* exit 11 */
#define CLI_E_INTERRUPTED "interrupted"	/* exit 130 */

extern bool cli_json;
void cli_verror(const char *code, const char *cmd,
    const struct graph_diags *d, const char *fmt, va_list ap)
    __attribute__((format(printf, 4, 0)));
/*
 * Adds the error object of --json's errors to r: for a command whose
 * --json output is a document of its own (plan), also when it fails.
 */
void cli_error_attach(struct cJSON *r, const char *code, const char *msg,
    const struct graph_diags *d);
void cli_error(const char *code, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void cli_error_diags(const char *code, const struct graph_diags *d,
    const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void cli_usage_error(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

/* cmd-run.c */
int cli_cmd_run(int argc, char **argv);

/* progress.c */
struct cli_progress {
	bool tty;
	bool quiet;
	bool drawn;		/* a line is on the terminal, unended */
	double start;
	double last;
	int last_pct;
	uint64_t peak;		/* the most memory seen: never goes down */
	char *said;		/* the waiting reason last shown */
};

void cli_progress_init(struct cli_progress *p, bool quiet);
void cli_progress_fini(struct cli_progress *p);
/* A merge in this process: rate and ETA from its start. */
void cli_progress_update(struct cli_progress *p,
    const struct graph_progress *g, bool final);
/* A daemon's job: rate and ETA from its own elapsed time and ETA. */
void cli_progress_job(struct cli_progress *p, const struct graph_progress *g,
    double elapsed, double eta, bool final);
/* A queued job: why it waits, once per reason. */
void cli_progress_wait(struct cli_progress *p, uint64_t job,
    const char *state, uint64_t pos, const char *reason);
/* Ends a line left on the terminal. */
void cli_progress_end(struct cli_progress *p);
int cli_term_width(void);
void cli_format_duration(char *buf, size_t len, double s);
double cli_now(void);

/* opts.c: the merge options as run, plan and submit take them. */
struct cli_merge_opts {
	struct graph_merge_opts merge;	/* what travels with the merge */
	int threads;		/* run's; the daemon has its own */
	const char *hf_cache;	/* --transformers-cache: $HF_HUB_CACHE */
	int verbose;		/* -v, repeatable */
	bool for_daemon;	/* submit: no thread or device options */
	bool quiet;
	bool json;
	bool tensors;		/* plan --tensors: the per-tensor table */
};

void cli_merge_opts_default(struct cli_merge_opts *);
int cli_merge_opt(struct cli_merge_opts *o, int opt, const char *arg);
uint64_t cli_budget(const struct cli_merge_opts *o);
void cli_plan_opts(const struct cli_merge_opts *o,
    struct graph_plan_opts *po);
int cli_open_parent(const char *out, char **name, bool create);
void cli_mkdirs(const char *path, mode_t mode);


/* cmd-run.c: one plan run in this process. */
/* model-dirs.c: mergectl run --model-dirs FILE (merged --backend
 * slurm's batch jobs): the directories the daemon planned from. */
struct cli_model_dirs {
	struct graph_source_dir *v;	/* each with its own descriptor */
	size_t n;
};
int cli_model_dirs_parse(const char *path, const char *text,
    struct cli_model_dirs *m);
void cli_model_dirs_fini(struct cli_model_dirs *m);

struct cli_run {
	uv_loop_t loop;
	uv_signal_t sigint;
	uv_signal_t sigterm;
	struct graph_job *job;
	struct cli_progress prog;
	struct graph_progress last;
	int rc;
	char *err;
	bool interrupted;
	bool finished;
	bool said;		/* the error is printed already */
	/* mergectl run --resume: a staging directory of a fixed name,
	 * kept when the run stops short, with the engine's record of
	 * the shards written (GRAPH_RECORD_FILE); a later run of the
	 * same plan goes on from there. */
	bool resume;
};

int cli_run_exec(const struct cli_merge_opts *o, struct cli_run *r,
    const struct graph_plan *plan, const char *out, const char *manifest);

/* stages.c: a pipeline's options (run, plan), and running one. */
struct cli_stage_opts {
	const char *dir;	/* --intermediate-dir */
	const char *out_path;	/* mergekit-multi's --out-path */
	bool lazy;		/* --lazy (default) / --no-lazy */
	bool keep;		/* --keep-intermediates (default) */
	bool fuse;		/* --fuse */
};

void cli_stage_opts_default(struct cli_stage_opts *);
int cli_stage_opt(struct cli_stage_opts *s, int opt, const char *arg);
size_t cli_stage_count(const char *path);
int cli_run_stages(const struct cli_merge_opts *o,
    const struct cli_stage_opts *so, const char *path, const char *out);
/* cmd-plan.c: a plan's summary, and with tensors its per-tensor table. */
void cli_print_plan(const struct cJSON *plan, bool tensors);
int cli_plan_stages(const struct cli_merge_opts *o,
    const struct cli_stage_opts *so, const char *path);
int cli_stage_dir_open(const char *dir, bool create);
int cli_stage_layout(const char *text, size_t len, const char *name,
    const struct cli_stage_opts *so, const char *out, char **dir);

/* conn.c: talking to merged. */
struct cli_conn {
	int fd;
	struct frame in;
	uint64_t next_id;
	int timeout_ms;
	int64_t daemon_uid;	/* from hello; -1: not said */
};

char *cli_socket_path(const char *);
bool cli_socket_personal(const char *);
int cli_connect(struct cli_conn *c, const char *path, bool autostart);
void cli_disconnect(struct cli_conn *);
int cli_open(struct cli_conn *c, const char *socket, bool autostart);
int cli_send(struct cli_conn *c, struct cJSON *msg, const int *fds,
    size_t nfds);
struct cJSON *cli_recv(struct cli_conn *c, int timeout_ms);
struct cJSON *cli_call(struct cli_conn *c, struct cJSON *req, const int *fds,
    size_t nfds);
struct cJSON *cli_new_request(struct cli_conn *c, const char *op);
int cli_check_reply(const struct cJSON *r, bool json);
bool cli_reply_ok(const struct cJSON *);

/* trust.c: whom mergectl talks to; 0 or CLI_EXIT_UNTRUSTED. */
int cli_trust_dir(const char *path, bool create);
int cli_trust_peer(int fd, const char *path, bool personal);

/* models.c: descriptors for the models and the output. */
struct cli_models {
	int fds[PROTO_MAX_FDS];
	size_t nfds;
	int out_fd;		/* index into fds */
	char *out_name;
	struct cJSON *models;
	/* A pipeline's: its stage directory (absolute; set by the caller)
	 * and its descriptor's index; whether up-to-date stages are
	 * skipped. */
	const char *inter;
	int inter_fd;
	bool lazy;
	bool keep;		/* --keep-intermediates */
};

void cli_models_init(struct cli_models *);
void cli_models_fini(struct cli_models *);
int cli_models_open(struct cli_models *m, enum job_kind kind, const char *text,
    size_t len, const char *name, const struct graph_env *env,
    const char *out);
void cli_models_request(struct cli_models *m, struct cJSON *req);

/* args.c: the daemon commands' arguments and --json output. */
struct cli_args {
	const char *socket;
	bool json;
	bool quiet;
	bool all;		/* --all: every page of the queue */
	bool follow;		/* -f: logs, to the job's end */
	uint64_t job;
};

/* cli_simple_args' flags: a JOB is needed; -f is taken. */
#define CLI_ARGS_JOB 1u
#define CLI_ARGS_FOLLOW 2u

struct option;
int cli_getopt(int argc, char **argv, const char *shortopts,
    const struct option *longopts);
int cli_simple_args(int argc, char **argv, const char *what, unsigned flags,
    struct cli_args *a);
int cli_parse_job(const char *s, uint64_t *job);
void cli_print_json(const struct cJSON *);

/* jobrow.c: a job's row of the queue table (list, status). */
double cli_json_num(const struct cJSON *o, const char *k);
const char *cli_json_str(const struct cJSON *o, const char *k);

/* jobrow.c: the queue table, fitted to the terminal. */
enum cli_color {
	CLI_COLOR_AUTO,		/* on a terminal, unless NO_COLOR is set */
	CLI_COLOR_ALWAYS,
	CLI_COLOR_NEVER,
};

struct cli_table {
	int width;		/* columns: the terminal's, else 80 */
	bool wide;		/* PRI, DEPS and BYTES too */
	bool color;		/* states in colour */
};

int cli_color_parse(const char *s, enum cli_color *out);
void cli_table_init(struct cli_table *t, enum cli_color color);
void cli_job_header(const struct cli_table *t);
void cli_job_row(const struct cJSON *j, const struct cli_table *t);

/* queue.c: what every submit shares (cmd-submit.c, cmd-extract.c). */
struct cli_queue_opts {
	const char *name;
	const char *socket;
	bool wait;
	int64_t priority;
	uint64_t after;
	const char *on_done;	/* the hook's command, checked */
};

void cli_queue_usage(FILE *fp);
/* 1: c was one of the queue's options; 0: not; -1: bad (printed). */
int cli_queue_opt(struct cli_queue_opts *q, int c, const char *arg);
int cli_queue_submit(const struct cli_queue_opts *q, enum job_kind kind,
    const char *text, const char *config_name, const char *out,
    const struct cli_merge_opts *mo, const struct graph_env *env,
    struct cli_models *m);
char *cli_abspath(const char *);

/* cmd-watch.c: follows a job; returns the exit code of its end. */
int cli_watch(struct cli_conn *c, uint64_t job, bool json, bool quiet);

/* cmd-<name>.c: the command "mergectl <name>", one per file. */
int cli_cmd_submit(int argc, char **argv);
int cli_cmd_list(int argc, char **argv);
int cli_cmd_completions(int argc, char **argv);
int cli_cmd_inspect(int argc, char **argv);
int cli_cmd_complete(int argc, char **argv);
void cli_print_commands(void);	/* mergectl.c */
/* cmd-list.c: what list and status take besides the socket and --json. */
struct cli_list_opts {
	struct cli_args a;
	struct cJSON *states;	/* --state: the daemon filters; or NULL */
	const char *user;	/* --user */
	bool mine;		/* --mine */
	const char *name;	/* --name GLOB */
	enum cli_color color;
};
int cli_list_parse(int argc, char **argv, const char *what, bool job_ok,
    struct cli_list_opts *o);
int cli_status_queue(struct cli_list_opts *o);
int cli_cmd_status(int argc, char **argv);
int cli_cmd_logs(int argc, char **argv);
int cli_cmd_watch(int argc, char **argv);
int cli_cmd_cancel(int argc, char **argv);
int cli_cmd_resume(int argc, char **argv);
int cli_cmd_daemon(int argc, char **argv);
int cli_cmd_plan(int argc, char **argv);
int cli_cmd_rm(int argc, char **argv);
int cli_cmd_clean(int argc, char **argv);
int cli_cmd_extract_lora(int argc, char **argv);
int cli_cmd_extract_submit(int argc, char **argv);

#endif /* CLI_H */
