/* SPDX-License-Identifier: MIT */
/*
 * graph.h: the merge engine's public interface, shared by the daemon
 * (merged) and the CLI (mergectl run).
 *
 * Data flows one way: a YAML config is loaded into a typed config
 * (graph_config_load_*), planned against the models' headers into a plan
 * (graph_plan_build), and the plan is executed by an executor
 * (graph_exec_*) that writes a staged output directory and publishes it
 * atomically.  Every stage reports problems through a struct graph_diags
 * so that all of them reach the user at once.
 *
 * Threads: config loading and planning run on the caller's thread.  The
 * executor is bound to one libuv loop; all graph_exec_* calls and all of its
 * callbacks happen on that loop's thread, while the merge work itself runs
 * on the libuv thread pool.  OpenBLAS is used single-threaded inside pool
 * workers (graph_init() sets that up): parallelism comes from running
 * several chunks at once, never from BLAS threads.
 */
#ifndef GRAPH_H
#define GRAPH_H

#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define GRAPH_VERSION "0.1.0"
#define GRAPH_MAX_DIMS 8

struct xbuf;

/* safetensors.c: appends s to b, quoted and escaped as a JSON string. */
void graph_json_string(struct xbuf *b, const char *s);

/* diag.c: problems found while loading and planning. */
struct graph_mark {
	int line;		/* 1-based; 0 when unknown */
	int col;
};

enum graph_severity {
	GRAPH_SEV_ERROR,
	GRAPH_SEV_WARNING,
};

struct graph_diag {
	enum graph_severity sev;
	char *where;		/* "file:line:col", a model, or NULL */
	char *msg;
};

struct graph_diags {
	struct graph_diag *v;
	size_t n;
	size_t cap;
	size_t nerrors;
};

void graph_diags_init(struct graph_diags *);
void graph_diags_fini(struct graph_diags *);
void graph_diag_add(struct graph_diags *d, enum graph_severity sev,
    const char *where, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void graph_diag_vadd(struct graph_diags *d, enum graph_severity sev,
    const char *where, const char *fmt, va_list ap)
    __attribute__((format(printf, 4, 0)));
void graph_diag_at(struct graph_diags *d, enum graph_severity sev,
    const char *file, struct graph_mark m, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
void graph_diags_print(const struct graph_diags *, FILE *);
char *graph_diags_join(const struct graph_diags *);
const char *graph_suggest(const char *word, const char *const *candidates,
    size_t n);

/* dtype.c: element types. */
enum graph_dtype {
	GRAPH_DT_NONE,
	GRAPH_DT_F64,
	GRAPH_DT_F32,
	GRAPH_DT_F16,
	GRAPH_DT_BF16,
	GRAPH_DT_I64,
	GRAPH_DT_I32,
	GRAPH_DT_I16,
	GRAPH_DT_I8,
	GRAPH_DT_U8,
	GRAPH_DT_BOOL,
	GRAPH_DT_F8_E4M3,
	GRAPH_DT_F8_E5M2,
	GRAPH_DT_COUNT
};

size_t graph_dtype_size(enum graph_dtype);
const char *graph_dtype_st_name(enum graph_dtype);
const char *graph_dtype_hf_name(enum graph_dtype);
enum graph_dtype graph_dtype_from_st_name(const char *);
enum graph_dtype graph_dtype_from_config_name(const char *, const char **);
bool graph_dtype_is_float(enum graph_dtype);
bool graph_dtype_is_encodable(enum graph_dtype);
float graph_bf16_to_f32(uint16_t);
uint16_t graph_f32_to_bf16(float);
float graph_f16_to_f32(uint16_t);
uint16_t graph_f32_to_f16(float);
void graph_decode_f32(enum graph_dtype dt, const void *restrict src,
    float *restrict dst, size_t n);
void graph_decode_f64(enum graph_dtype dt, const void *restrict src,
    double *restrict dst, size_t n);
double graph_decode_f64_sumsq(enum graph_dtype dt, const void *restrict src,
    double *restrict dst, size_t n);
double graph_sub_f64_sumsq(double *restrict x, const double *restrict y,
    size_t n);
void graph_encode_f32(enum graph_dtype dt, const float *restrict src,
    void *restrict dst, size_t n);
void graph_dtype_round(enum graph_dtype dt, float *v, size_t n);

/* config.c: the typed merge configuration. */
struct graph_ref {
	char *path;
	char *rev;		/* NULL when absent */
	char *lora;
	char *lora_rev;
	char *override_arch;
	struct graph_mark mark;
};

struct graph_pvalue {
	double *v;
	size_t n;
	bool gradient;		/* a list, interpolated over layers */
};

struct graph_pcond {
	char *filter;		/* NULL matches every tensor */
	struct graph_pvalue value;
	struct graph_mark mark;
};

struct graph_param {
	char *name;
	struct graph_mark mark;
	bool conditional;
	struct graph_pvalue value;	/* when !conditional */
	struct graph_pcond *conds;
	size_t nconds;
};

struct graph_params {
	struct graph_param *v;
	size_t n;
};

struct graph_source {
	struct graph_ref model;
	bool has_range;
	int64_t start;
	int64_t end;		/* exclusive */
	struct graph_params params;
	struct graph_mark mark;
};

struct graph_slice {
	struct graph_source *src;
	size_t nsrc;
	bool has_base;
	struct graph_ref base;
	struct graph_params params;
	struct graph_mark mark;
};

enum graph_form {
	GRAPH_FORM_MODELS,
	GRAPH_FORM_SLICES,
};

/*
 * What a config says about one module of the architecture (MERGEKIT.md
 * Part B 1.7): its models: or its slices:.  A config's top-level models:
 * or slices: is one of these without a name; modules: gives one per
 * module it names, in config order.
 */
struct graph_module {
	char *name;		/* NULL: top-level models:/slices: */
	struct graph_mark mark;
	enum graph_form form;
	struct graph_source *models;
	size_t nmodels;
	struct graph_slice *slices;
	size_t nslices;
	struct graph_params params;	/* the module's own parameters */
};

/*
 * The tokenizer: block (MERGEKIT.md Part B 1.8), or tokenizer_source: X,
 * which is the block with only a source.  Where one token's embedding
 * comes from: the default rule, a model's own row for the token, a row
 * of a model's original matrix named by id or by token, or zeros.
 */
enum graph_tok_source {
	GRAPH_TOK_NONE,		/* no tokenizer merge: raw matrices */
	GRAPH_TOK_UNION,
	GRAPH_TOK_BASE,
	GRAPH_TOK_MODEL,
};

enum graph_tokemb_kind {
	GRAPH_TOKEMB_DEFAULT,	/* no source: the default rule */
	GRAPH_TOKEMB_MODEL,	/* source: MODEL */
	GRAPH_TOKEMB_MODEL_TOKEN,	/* {kind: model_token, ...} */
	GRAPH_TOKEMB_ZERO,	/* {kind: zero} */
};

struct graph_token {
	char *text;		/* the token, as it is in the vocabulary */
	struct graph_mark mark;
	enum graph_tokemb_kind kind;
	struct graph_ref model;	/* MODEL, MODEL_TOKEN */
	bool has_id;		/* MODEL_TOKEN: token_id, else token */
	int64_t token_id;
	char *token;
	bool force;
};

struct graph_tokenizer {
	enum graph_tok_source source;
	struct graph_mark mark;
	struct graph_ref model;	/* GRAPH_TOK_MODEL */
	struct graph_token *tokens;	/* config order */
	size_t ntokens;
	int64_t pad_to_multiple_of;	/* 0: none */
};

struct graph_config {
	char *path;		/* for messages */
	char *text;		/* the original text, for mergekit_config.yml */
	size_t text_len;
	char *method;
	struct graph_mark method_mark;
	bool has_base;
	struct graph_ref base;
	bool has_arch;		/* explicit "architecture:" override */
	struct graph_ref arch;
	enum graph_dtype dtype;
	enum graph_dtype out_dtype;
	struct graph_params params;
	bool modules;		/* written as modules: (else one unnamed) */
	struct graph_module *mods;
	size_t nmods;
	bool allow_crimes;
	char *chat_template;	/* "auto", a built-in name, a template */
	struct graph_mark chat_template_mark;
	struct graph_tokenizer tokenizer;
	/* mergekit-multi's "name:" of a stage, which mergekit-yaml (and so
	 * the planner, with a warning) ignores. */
	bool has_name;
	struct graph_mark name_mark;
};

int graph_config_load_file(const char *path, struct graph_config **out,
    struct graph_diags *d);
int graph_config_load_buffer(const char *file, const char *buf, size_t len,
    struct graph_config **out, struct graph_diags *d);
void graph_config_free(struct graph_config *);
size_t graph_config_refs(const struct graph_config *,
    const struct graph_ref ***);

/*
 * pipeline.c: a multi-stage merge (a mergekit-multi file): several
 * configs, each an ordinary one with an optional name; a reference to a
 * stage's name is that stage's output, rewritten to DIR/NAME (dir NULL:
 * left as the name, for callers that only look).  The stages are ordered
 * so that each follows those it reads; a file of one document is a
 * pipeline of one stage, its config as graph_config_load_buffer reads it.
 */
struct graph_stage {
	char *name;		/* NULL: the final merge, written to OUT */
	struct graph_mark mark;	/* where its document starts */
	struct graph_config *cfg;
	size_t *deps;		/* the stages it reads, ascending */
	size_t ndeps;
};

struct graph_pipeline {
	char *path;
	char *dir;		/* where named stages are written, or NULL */
	struct graph_stage *stages;	/* in the file's order */
	size_t nstages;
	size_t *order;		/* indices, each after those it reads */
	size_t final;		/* the unnamed stage; (size_t)-1: none */
};

int graph_pipeline_load_buffer(const char *file, const char *buf, size_t len,
    const char *dir, struct graph_pipeline **out, struct graph_diags *d);
void graph_pipeline_free(struct graph_pipeline *);
/* How many documents a text holds (0 if it is not YAML): whether a
 * command reads it as a pipeline or as one config. */
size_t graph_pipeline_ndocs(const char *buf, size_t len);


/* modelref.c */
int graph_ref_parse(const char *s, struct graph_ref *r, char **cause);
void graph_ref_fini(struct graph_ref *);
char *graph_ref_str(const struct graph_ref *);
bool graph_ref_eq(const struct graph_ref *, const struct graph_ref *);
void graph_ref_copy(struct graph_ref *, const struct graph_ref *);

/*
 * Where the submitter stands: relative model paths and the Hugging Face
 * cache are the submitter's, not the daemon's.  Borrowed strings.
 */
struct graph_env {
	const char *cwd;
	const char *hf_hub_cache;
	const char *hf_home;
	const char *home;
};
void graph_env_from_process(struct graph_env *);

/* A reference resolved to a directory; rootfd is open, rel beneath it. */
struct graph_resolved {
	char *dir;		/* the directory holding config.json */
	char *root;		/* local dir, or the cache's models--org--name */
	int rootfd;		/* root, opened; files open beneath it */
	char *rel;		/* dir relative to root ("." for itself) */
};

int graph_ref_resolve(const struct graph_ref *r, const struct graph_env *env,
    struct graph_resolved *out, char **cause);
int graph_ref_resolve_adapter(const struct graph_ref *r,
    const struct graph_env *env, struct graph_resolved *out, char **cause);
char *graph_ref_adapter_key(const struct graph_ref *);
void graph_resolved_fini(struct graph_resolved *);

/*
 * Whose rights a merge runs with (cred.c).  The daemon fills one in from
 * the peer's credentials: a root daemon does all of the job's filesystem
 * work with them (the kernel checks), one running as another user checks
 * them itself on top of its own.  NULL: the caller's own rights.
 */
struct graph_cred {
	uint32_t uid;
	uint32_t gid;
	const uint32_t *groups;	/* supplementary groups, borrowed */
	size_t ngroups;
	uint32_t umask;		/* the user's file-creation mask */
};

/*
 * A model reference resolved by the client: a directory descriptor it
 * opened (borrowed) and the model directory's path beneath it ("." for the
 * directory itself).  The daemon plans from these, never from paths.
 */
struct graph_source_dir {
	const char *ref;	/* as graph_ref_str() writes it */
	int fd;
	const char *rel;
	const char *where;	/* the client's path, for messages */
};

/*
 * modelref.c: ref (or its adapter), among the directories a client
 * passed when dirs is given (a daemon), else resolved in env.
 */
int graph_ref_locate(const struct graph_ref *ref, bool adapter,
    const struct graph_source_dir *dirs, size_t ndirs,
    const struct graph_env *env, struct graph_resolved *out, char **cause);

/* modelref.c: resolves to dir's directory, its descriptor duplicated. */
int graph_source_dir_open(const struct graph_source_dir *dir,
    struct graph_resolved *out, char **cause);

/* cred.c: would cred be allowed r (4), w (2), x (1) on a stat? */
struct stat;
bool graph_cred_allows(const struct graph_cred *cred, const struct stat *st,
    unsigned want);

/* plan.c: a fully resolved merge, built from headers only. */
struct graph_plan;

/*
 * What a user asks of one merge beside its config, in one struct wherever
 * it travels: mergectl's command line (client/opts.c), the wire
 * (common/mergeopts.c), the daemon's job and store (daemon/store.c), the
 * plan, which keeps a copy, and the executor, which reads it there.
 * opts.c sets the defaults, once for every command.
 */
struct graph_merge_opts {
	/* The most memory this merge may hold, in bytes; 0: all of its
	 * runner's budget (mergectl run and plan: graph_default_memory();
	 * merged: its own --memory, shared by all jobs). */
	uint64_t memory;
	uint64_t shard_size;	/* bytes per output file; 0: never split */
	bool has_seed;		/* seed chosen (or drawn and recorded) */
	uint64_t seed;
	bool allow_crimes;	/* merge models of different families */
	bool copy_tokenizer;	/* the base model's tokenizer files */
	bool model_card;	/* README.md and mergekit_config.yml */
	bool force;		/* replace an existing output */
	/* --lora-merge-dtype: the dtype weights changed by a LoRA adapter
	 * are rounded to before they merge; NONE keeps float32. */
	enum graph_dtype lora_dtype;
	/* What mergekit ignores and the planner warns of (MERGEKIT.md Part
	 * A 2) is an error.  Not kept by the daemon's store: it decides
	 * only whether a config is accepted, never what a plan holds. */
	bool strict;
};

void graph_merge_opts_default(struct graph_merge_opts *);
/* The one default memory budget: a quarter of RAM, at least 256 MiB. */
uint64_t graph_default_memory(void);

struct graph_plan_opts {
	struct graph_merge_opts merge;
	/* The runner's whole budget, which merge.memory may narrow; 0:
	 * graph_default_memory().  The plan's peak is sized for it. */
	uint64_t budget;
	/* It is a daemon's, shared by all its jobs: a merge's memory
	 * narrows it and never widens it (said when it is too small). */
	bool budget_shared;
	struct graph_env env;
	const struct graph_source_dir *dirs;	/* NULL: resolve locally */
	size_t ndirs;
	const struct graph_cred *cred;	/* NULL: no access checks */
	/* A pipeline's stages that are planned but not written yet
	 * (pipeline-plan.c): a model reference whose path is one's ref,
	 * without a revision, is planned from the headers at fd/rel. */
	const struct graph_source_dir *planned;
	size_t nplanned;
	/* NULL, or the model card's account of the pipeline whose last
	 * stage this is (pipeline-plan.c); copied. */
	const char *card_pipeline;
	/* Only what needs no model (the method and its parameters): for a
	 * stage whose inputs cannot be planned.  The plan is no plan. */
	bool config_only;
	/* NULL, or set by another thread to stop planning early: between
	 * models, shards and tensors, graph_plan_build then returns
	 * -ECANCELED. */
	const atomic_bool *cancel;
};

void graph_plan_opts_default(struct graph_plan_opts *);
int graph_plan_build(const struct graph_config *cfg,
    const struct graph_plan_opts *opts, struct graph_plan **out,
    struct graph_diags *d);
void graph_plan_free(struct graph_plan *);
/* A seed as a plan draws one when none is given: 48 bits, to type. */
uint64_t graph_draw_seed(void);
/* writer.c: the planned output's headers, no weights, in dfd/name. */
int graph_plan_skeleton(const struct graph_plan *p, int dfd,
    const char *name, char **cause);

/*
 * pipeline-plan.c: every stage planned before any runs.  A stage that
 * reads stages not written yet is planned against their planned
 * outputs' headers (graph_plan_skeleton, in the caller's scratch
 * directory), so that every problem of every stage is found at once.
 * With lazy, a stage whose output holds a record (GRAPH_STAGE_MANIFEST)
 * of the same config, seed, options and input files, and whose inputs
 * are all up to date, is fresh: it is not run again.
 */
#define GRAPH_STAGE_MANIFEST "mergectl_stage.json"

enum graph_stage_action {
	GRAPH_STAGE_RUN,
	GRAPH_STAGE_FRESH,	/* up to date: skipped */
	GRAPH_STAGE_FAILED,	/* it has problems (in the diagnostics) */
	GRAPH_STAGE_BLOCKED,	/* not planned: it reads a stage that failed */
	GRAPH_STAGE_FUSED,	/* computed inside the stage that reads it
				 * (--fuse, fuse.c): never written */
};

struct graph_stage_plan {
	enum graph_stage_action action;
	char *out;		/* where it is written */
	uint64_t seed;		/* its own */
	uint64_t pseed;		/* the pipeline's, which seed derives from */
	/* RUN, FRESH: the plan, for showing; a RUN stage's may be built
	 * against headers only, so it is planned again to run
	 * (graph_pipeline_plan_stage). */
	struct graph_plan *plan;
	bool exists;		/* out exists (RUN: an earlier run's stage,
				 * or the final output) */
	size_t into;		/* FUSED: the stage it is fused into */
	/* With fuse, a RUN stage that another reads: why it is not fused
	 * (NULL: nothing reads it). */
	char *unfused;
};

struct graph_pipeline_opts {
	/* Every stage's; the seed, when given, is the pipeline's, from
	 * which each stage's derives (graph_stage_seed). */
	struct graph_plan_opts plan;
	const char *out;	/* the final stage's output; NULL: none */
	/* Where the outputs are, read with plan.cred's rights beneath these
	 * descriptors, never by path: the stage directory (-1: not there
	 * yet), and the final output's parent and name (-1, NULL: none). */
	int dir_fd;
	int out_fd;
	const char *out_name;
	bool lazy;
	/* Fuse each stage that the plan proves can be (fuse.c) into the
	 * one stage that reads it: it is never written. */
	bool fuse;
	/* An empty directory the caller removes, which the user (plan.cred)
	 * may write in: the headers of unwritten stages go there.  With
	 * fuse, a fused stage's are read until the stage that reads it has
	 * run. */
	int scratch_fd;
};

int graph_pipeline_plan(const struct graph_pipeline *p,
    const struct graph_pipeline_opts *o, struct graph_stage_plan **out,
    struct graph_diags *d);
void graph_stage_plans_free(struct graph_stage_plan *, size_t n);
/* Stage i planned to run, its inputs written or fused into it (sp: every
 * stage's, from graph_pipeline_plan); *manifest: its record. */
int graph_pipeline_plan_stage(const struct graph_pipeline *p, size_t i,
    const struct graph_pipeline_opts *o, const struct graph_stage_plan *sp,
    struct graph_plan **out, char **manifest, struct graph_diags *d);
/* The model card's account of the pipeline for stage i, the final
 * stage of several (graph_plan_opts.card_pipeline); else NULL. */
char *graph_pipeline_card(const struct graph_pipeline *p, size_t i,
    const struct graph_stage_plan *sp);
uint64_t graph_stage_seed(uint64_t seed, const char *name);
/* Is the stage directory at fd uid's, and writable by it alone? */
int graph_stage_dir_check(int fd, uint32_t uid, const char *path,
    char **cause);
/* The record a stage's output holds (name NULL: the final stage; text:
 * its config as it runs; pseed: the pipeline's seed). */
char *graph_stage_manifest(const char *name, const char *text,
    const struct graph_plan *plan, uint64_t pseed);

struct graph_plan_summary {
	const char *arch;	/* chosen architecture */
	const char *arch_model;	/* the model it comes from */
	const char *arch_reason;
	size_t tensors;
	size_t shards;
	uint64_t bytes_read;
	uint64_t bytes_written;
	uint64_t peak_memory;
	uint64_t seed;
	size_t kept_base;	/* tensors copied from the base, no t applying */
};
void graph_plan_summary(const struct graph_plan *,
    struct graph_plan_summary *);

/* plan-json.c: the plan (or NULL) and its problems as a new cJSON. */
struct cJSON;
struct cJSON *graph_plan_json(const struct graph_plan *,
    const struct graph_diags *);

/* The input files a plan reads, for recording and later comparison. */
struct graph_plan_file {
	char *path;
	uint64_t size;
	int64_t mtime_ns;
};

struct graph_plan_files {
	struct graph_plan_file *v;
	size_t n;
};

void graph_plan_files(const struct graph_plan *, struct graph_plan_files *);
void graph_plan_files_fini(struct graph_plan_files *);

/*
 * record.c: a resumable job's record, GRAPH_RECORD_FILE in its staging
 * directory, written by the engine for a job submitted with
 * graph_job_opts.record: the plan's fingerprint, the progress, which
 * shards are durably written ('0'/'1' each) and, once the job stopped
 * short, why.  Removed before the staging directory is published.  Read
 * as untrusted input (graph_record_read): at most GRAPH_RECORD_MAX bytes.
 */
#define GRAPH_RECORD_FILE ".merged-progress.json"
#define GRAPH_RECORD_MAX 262144

struct graph_record {
	char plan[17];		/* graph_plan_fingerprint, hexadecimal */
	uint64_t bytes_done;
	uint64_t bytes_total;
	uint64_t tensors_done;
	uint64_t tensors_total;
	uint64_t memory_peak;
	char *shards;		/* one '0' or '1' per shard, owned */
	size_t shards_done;	/* its '1's */
	char *error;		/* NULL, or why it stopped; owned */
};

void graph_record_fini(struct graph_record *);
int graph_record_parse(const char *buf, size_t len, struct graph_record *out,
    char **cause);
char *graph_record_format(const struct graph_record *);
int graph_record_read(int dirfd, const char *staging, int64_t owner,
    struct graph_record *out, char **cause);
/*
 * name beneath dirfd, a file a user's job wrote, opened for reading by a
 * daemon that may be root: no link followed, no blocking on a FIFO, and
 * it must be a regular file of owner (< 0: anyone's).  A descriptor,
 * st filled; or -errno, -EPERM when it is not such a file.
 */
struct stat;
int graph_user_file_open(int dirfd, const char *name, int64_t owner,
    struct stat *st);
/*
 * The first n bytes of s (at most max, cut at a character's start) with
 * control characters made visible as '?' (C0, DEL, and C1 as UTF-8
 * writes them, U+0080 to U+009F): text a job wrote, shown on other
 * people's terminals and logs.  A new string.
 */
char *graph_text_visible(const char *s, size_t n, size_t max);
/* What a plan's shards depend on, as 16 hexadecimal digits and a NUL. */
void graph_plan_fingerprint(const struct graph_plan *, char out[17]);

/*
 * verify.c: 0 when dirfd/name holds what p writes (every shard of its
 * planned size and header, the index, config.json), else why not; out
 * names it in messages.  Links are not followed.
 */
int graph_plan_verify(const struct graph_plan *p, int dirfd,
    const char *name, const char *out, char **cause);
/* The same check kept as text (JSON) for later, without the plan. */
char *graph_plan_verify_spec(const struct graph_plan *p);
int graph_verify_spec(const char *spec, int dirfd, const char *name,
    const char *out, char **cause);

/* exec.c: runs plans on a libuv loop under one memory budget. */
struct uv_loop_s;
struct graph_exec;
struct graph_job;

struct graph_exec_opts {
	uint64_t memory;	/* bytes for decoded tensors and buffers */
	int threads;		/* compute tasks in flight (graph_exec_slots) */
	bool cache_inputs;	/* keep decoded inputs for later passes/jobs */
};

/* Tasks that compute at once for `threads`: those, and one more where
 * they are at least the CPUs this process may run on (exec.c says why). */
int graph_exec_slots(int threads);
/* Threads libuv's pool needs for an executor of `threads`: its value
 * for UV_THREADPOOL_SIZE, which libuv reads once, at the first use. */
int graph_exec_pool_size(int threads);

struct graph_progress {
	uint64_t bytes_total;	/* output bytes */
	uint64_t bytes_done;
	size_t tensors_total;
	size_t tensors_done;
	size_t shards_total;
	size_t shards_done;
	uint64_t memory_used;	/* executor-wide, bytes */
	uint64_t memory_peak;
	uint64_t job_memory;	/* this job's working set */
	/* Bytes the job waits for, holding no memory of its own, while
	 * other work holds the budget; 0: it is not waiting. */
	uint64_t memory_wait;
};

/* The job's outcome: 0, or a negative errno with a message. */
typedef void (*graph_job_done_cb)(struct graph_job *, int, const char *,
    void *);
typedef void (*graph_job_progress_cb)(struct graph_job *,
    const struct graph_progress *, void *);
/* Called when a shard is durably on disk (for resumable jobs). */
typedef void (*graph_job_shard_cb)(struct graph_job *, size_t, void *);
/*
 * Called once the staging directory exists, with its device and inode,
 * before anything can be published: the rename keeps them, so a daemon
 * that dies between publishing and recording it can tell its own output
 * from somebody else's directory when the job is resumed.
 */
typedef void (*graph_job_staged_cb)(struct graph_job *, uint64_t, uint64_t,
    void *);

/* A file's identity, as a daemon's store records its jobs' outputs. */
struct graph_ident {
	uint64_t dev;
	uint64_t ino;
};

/*
 * What --force may replace (writer.c).  Where the kernel checks with the
 * user's rights (a root or personal daemon), what it allows; where a
 * daemon writes as itself for another user, only what that user owns or
 * made through the daemon (own: the identities of the user's outputs).
 */
struct graph_replace {
	const struct graph_cred *cred;
	const struct graph_ident *own;
	size_t nown;
};

int graph_may_replace(int dirfd, const char *name,
    const struct graph_replace *r, char **cause);

struct graph_job_opts {
	int out_dirfd;		/* the destination's parent (borrowed) */
	const char *out_name;	/* the destination's name in it */
	const char *out_dir;	/* the destination's path, for messages */
	const struct graph_cred *cred;	/* NULL: no access checks */
	/* --force and the memory cap come with the plan's merge options. */
	const struct graph_ident *own;	/* see graph_replace; copied */
	size_t nown;
	const char *staging_name;	/* NULL: derived from out_name */
	bool keep_staging;	/* on failure or cancel, for resume */
	const bool *shards_done;	/* NULL or one flag per shard */
	/* Keep GRAPH_RECORD_FILE in the staging directory, written from
	 * the loop thread: only for a process acting as itself (cred
	 * NULL or the process's own), as mergectl run --resume. */
	bool record;
	/* NULL, or a pipeline stage's record (pipeline-plan.c), written
	 * into the output as GRAPH_STAGE_MANIFEST; copied. */
	const char *manifest;
	graph_job_done_cb done;
	graph_job_progress_cb progress;
	graph_job_shard_cb shard_done;
	graph_job_staged_cb staged;	/* NULL: not wanted */
	void *arg;
};

int graph_exec_create(struct uv_loop_s *loop, const struct graph_exec_opts *o,
    struct graph_exec **out);
void graph_exec_destroy(struct graph_exec *);
int graph_exec_submit(struct graph_exec *ex, const struct graph_plan *p,
    const struct graph_job_opts *o, struct graph_job **out, char **cause);
void graph_exec_cancel(struct graph_job *);
void graph_exec_interrupt(struct graph_job *);
void graph_job_progress(const struct graph_job *, struct graph_progress *);

/* The executor's figures, for the daemon's status. */
struct graph_exec_stats {
	uint64_t budget;
	uint64_t used;
	uint64_t peak;
	uint64_t cached;	/* bytes of decoded inputs kept */
	uint64_t cache_hits;	/* input chunks found decoded */
	uint64_t cache_misses;
};

void graph_exec_stats(const struct graph_exec *, struct graph_exec_stats *);

/*
 * exec-lease.c: bytes of the executor's budget lent to other work on its
 * loop (an extraction's weights), so that one budget bounds both.
 * Leases are granted in request order; while one waits, merges start no
 * new tensor.  graph_exec_lease returns 1 when the bytes are granted at
 * once (cb is not called), 0 when the lease waits (cb is called on the
 * loop thread once it is granted), or -ENOMEM with *cause when bytes
 * exceed the whole budget.  graph_exec_lease_free gives the bytes back,
 * or withdraws a waiting lease; either way *out is freed.
 */
struct graph_lease;
typedef void (*graph_lease_cb)(struct graph_lease *, void *);
int graph_exec_lease(struct graph_exec *ex, uint64_t bytes, graph_lease_cb cb,
    void *arg, struct graph_lease **out, char **cause);
void graph_exec_lease_free(struct graph_lease *);

/*
 * extract.c: extracting a LoRA adapter from a fine-tuned model and its
 * base (mergekit-extract-lora): each weight's task vector FT - BASE is
 * cut to its largest singular values, B A, and written as a PEFT adapter
 * that BASE+adapter reads as (nearly) FT.  Planned from headers first,
 * with every problem found before a weight is read; then run on the
 * libuv pool under one memory budget, into a staged directory published
 * atomically.  The engine prints nothing: the caller reports.
 */
struct graph_extract;

struct graph_extract_opts {
	const char *model;	/* the fine-tuned model, "path[@rev][+adapter]" */
	const char *base;	/* the base model, likewise */
	int64_t max_rank;	/* the most singular values kept (128) */
	bool distribute_scale;	/* sqrt(S) in both factors, else S in A */
	bool embed_lora;	/* decompose embeddings, else save them whole */
	/* Borrowed lists: modules saved in full (by leaf or full name),
	 * and Python regular expressions searched in module names. */
	const char *const *save_modules;
	size_t nsave_modules;
	const char *const *include;
	size_t ninclude;
	const char *const *exclude;
	size_t nexclude;
	double sv_epsilon;	/* keep only singular values above (0: all) */
	bool skip_undecomposable;	/* norms, biases: skipped, not saved */
	bool fast;		/* randomized SVD instead of exact */
	int power_iters;	/* --fast's power iterations (2) */
	int oversample;		/* --fast's extra columns (10) */
	/* memory (0: graph_default_memory()), the seed (drawn when not
	 * given, for --fast), force, model_card and lora_dtype (how a
	 * "+adapter" reference's weights are rounded) are read here. */
	struct graph_merge_opts merge;
	int threads;		/* weights decomposed at once */
	struct graph_env env;
	/* A daemon's: the client's resolution of the two references (and
	 * their adapters), as for graph_plan_opts, and the user's rights,
	 * copied into the plan.  NULL: resolved locally, no checks. */
	const struct graph_source_dir *dirs;
	size_t ndirs;
	const struct graph_cred *cred;
	/* A weight whose working set passes memory is an error, not run
	 * alone over it (a daemon's budget is shared). */
	bool memory_strict;
	const char *invocation;	/* the command line, for README.md */
	/* NULL, or set by another thread (a signal handler) to stop: no
	 * further weight starts, and the run ends with -ECANCELED. */
	const atomic_bool *cancel;
};

void graph_extract_opts_default(struct graph_extract_opts *);
/* The values alone (ranks, counts, regular expressions): 0 or why not. */
int graph_extract_opts_check(const struct graph_extract_opts *,
    char **cause);
int graph_extract_plan(const struct graph_extract_opts *o,
    struct graph_extract **out, struct graph_diags *d);
void graph_extract_free(struct graph_extract *);

enum graph_extract_kind {
	GRAPH_EXTRACT_LORA,	/* decomposed: lora_A/B, lora_embedding_A/B */
	GRAPH_EXTRACT_FULL,	/* saved in full (modules_to_save) */
};

/* One tensor written (or, decomposed to rank 0, not), once it is done. */
struct graph_extract_weight {
	const char *name;	/* the module for LORA, else the tensor */
	enum graph_extract_kind kind;
	int64_t rows;		/* the decomposed matrix (embeddings: ^T) */
	int64_t cols;
	int64_t rank;		/* kept; 0: none above sv_epsilon, skipped */
	double norm;		/* ||FT - BASE||_F */
	double residual;	/* ||FT - BASE - B A||_F before rounding */
	double rel_error;	/* residual / norm (0 when norm is 0) */
	double seconds;
	bool done;
};

/* Called on the caller's thread as each weight finishes. */
typedef void (*graph_extract_cb)(const struct graph_extract_weight *,
    void *);

/*
 * Writes the adapter to out_name in out_dirfd (out_dir: its path, for
 * messages).  Warnings found while running go to d.  0, or a negative
 * errno with *cause: -EEXIST (out_name exists, force not given),
 * -ECANCELED, or the failure.  Nothing is left behind on failure.
 */
int graph_extract_run(struct graph_extract *x, int out_dirfd,
    const char *out_name, const char *out_dir, graph_extract_cb cb,
    void *arg, struct graph_diags *d, char **cause);

struct graph_extract_summary {
	const char *model;	/* the references, as given */
	const char *base;
	size_t decomposed;	/* modules with LoRA factors */
	size_t full;		/* tensors saved in full */
	size_t skipped;		/* FT's tensors not written */
	int64_t rank;		/* r: the largest rank written (after run) */
	bool fast;
	uint64_t seed;		/* --fast's, given or drawn */
	int power_iters;
	int oversample;
	bool embed_lora;	/* as it ran (off when vocabularies differ) */
	double norm;		/* over every decomposed weight: */
	double residual;
	double rel_error;
	uint64_t memory;	/* the budget */
	uint64_t biggest;	/* the largest weight's working set */
	size_t alone;		/* weights over the budget, run one at a time */
	uint64_t peak_memory;	/* the most admitted at once (after run) */
	uint64_t bytes_written;	/* adapter_model.safetensors (after run) */
	double seconds;		/* the run's */
};

void graph_extract_summary(const struct graph_extract *,
    struct graph_extract_summary *);

/*
 * The same run, on the caller's loop (a daemon's): graph_extract_start
 * returns at once; the work goes to the libuv pool and the callbacks
 * come on the loop thread.  x must outlive the run.  The done callback
 * is the last; the run frees itself after it returns.
 */
struct graph_extract_job;

struct graph_extract_job_opts {
	struct graph_exec *exec;	/* lease memory from it; NULL: none */
	int out_dirfd;		/* the destination's parent (borrowed) */
	const char *out_name;
	const char *out_dir;	/* its path, for messages */
	const char *staging_name;	/* NULL: derived from out_name */
	const struct graph_ident *own;	/* see graph_replace; copied */
	size_t nown;
	/* NULL, or set by another thread to stop, as cancel does (the
	 * plan's own flag is for planning, and graph_extract_run). */
	const atomic_bool *cancel;
	graph_extract_cb weight_done;
	void (*progress)(struct graph_extract_job *,
	    const struct graph_progress *, void *);
	void (*staged)(struct graph_extract_job *, uint64_t dev, uint64_t ino,
	    void *);
	/* 0, or a negative errno (-ECANCELED, -EINTR, -EEXIST, ...) with
	 * err; warnings: what the run found (ranks cut to 0). */
	void (*done)(struct graph_extract_job *, int rc, const char *err,
	    const struct graph_diags *warnings, void *);
	void *arg;
};

int graph_extract_start(struct uv_loop_s *loop, struct graph_extract *x,
    const struct graph_extract_job_opts *o, struct graph_extract_job **out,
    char **cause);
/* No further weight starts; done reports -ECANCELED (or -EINTR). */
void graph_extract_cancel(struct graph_extract_job *);
void graph_extract_interrupt(struct graph_extract_job *);
void graph_extract_job_progress(const struct graph_extract_job *,
    struct graph_progress *);
/* The input files, as graph_plan_files() lists a merge's. */
void graph_extract_files(const struct graph_extract *,
    struct graph_plan_files *);
/* The tensors written, in name order: decomposed and saved in full. */
size_t graph_extract_nweights(const struct graph_extract *);
const struct graph_extract_weight *graph_extract_weight(
    const struct graph_extract *, size_t);

/* writer.c: removes a directory tree beneath a directory descriptor,
 * with cred's rights (NULL: the caller's). */
void graph_remove_tree(int dirfd, const char *name,
    const struct graph_cred *cred);
/* May cred create and remove entries in dirfd?  0, or why not. */
int graph_dir_writable(int dirfd, const struct graph_cred *cred,
    char **cause);

/*
 * inspect.c: the cosine similarity of every pair (layer i of A, layer j
 * of B), for each kind of layer weight both have, of the weights or of
 * their task vectors against base; read once, a block of rows at a time
 * within memory, the dot products in float64 (OpenBLAS dgemm).
 */
struct graph_inspect_opts {
	const char *a;		/* model references */
	const char *b;
	const char *base;	/* NULL: compare the weights themselves */
	struct graph_env env;
	uint64_t memory;
	int threads;		/* workers; 0: one */
	const atomic_bool *cancel;
};

struct graph_inspect_kind {
	char *name;		/* the layer template, "mlp.up_proj.weight" */
	bool submatrix;		/* shapes differ: their common sub-matrix */
	uint64_t rows, cols;	/* what was compared */
	double *cos;		/* la x lb, row major */
};

struct graph_inspect {
	size_t la, lb;		/* layers of A and of B */
	struct graph_inspect_kind *kinds;
	size_t nkinds;
	double *mean;		/* la x lb: the kinds' mean */
	/* Per layer, over the kinds compared: the norm of the weights, or
	 * of their difference from the base when there is one. */
	double *norm_a;
	double *norm_b;
};

int graph_inspect_run(const struct graph_inspect_opts *o,
    struct graph_inspect **out, struct graph_diags *d);
void graph_inspect_free(struct graph_inspect *);

/* The tensors a planned config maps across layers, each pair's cosine. */
struct graph_inspect_pair {
	char *tensor;		/* the output tensor */
	char *model_a, *name_a;	/* its first input */
	int64_t layer_a;
	char *model_b, *name_b;	/* another, from another layer */
	int64_t layer_b;
	double cos;
};

int graph_inspect_config(const struct graph_plan *p,
    const atomic_bool *cancel, struct graph_inspect_pair **out, size_t *n,
    char **cause);
void graph_inspect_pairs_free(struct graph_inspect_pair *, size_t);

/* writer.c: whether path names a file besides weights and config.json
 * that an output may copy from an input (graph_plan_files lists them). */
bool graph_is_side_file(const char *path);

/* util.c */
void graph_init(void);
int graph_parse_size(const char *s, bool binary, uint64_t *out);
int graph_parse_duration(const char *, uint64_t *);
char *graph_format_size(uint64_t);
int graph_read_file(const char *path, size_t max, char **out, size_t *len);
int graph_read_fd(int fd, size_t max, char **out, size_t *len);
char *graph_text_printable(char *);

#endif /* GRAPH_H */
