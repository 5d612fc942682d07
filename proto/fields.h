/* SPDX-License-Identifier: MIT */
/*
 * fields.h: the name of every field of the protocol's JSON objects, one
 * constant each, shared by merged, mergectl and their tests, so that a
 * misspelt field is a compile error rather than a silently absent value.
 * proto/PROTOCOL.md says what each means; the store keeps its own column
 * names (daemon/store.c).  The plan's JSON (mergectl plan --json, the
 * problems of a bad_config reply) is the engine's format, named in
 * graph/plan-json.c.
 */
#ifndef PROTO_FIELDS_H
#define PROTO_FIELDS_H

/* The envelope (PROTOCOL.md §3) and streamed events (§5). */
#define PROTO_F_V "v"
#define PROTO_F_ID "id"
#define PROTO_F_OP "op"
#define PROTO_F_OK "ok"
#define PROTO_F_ERROR "error"
#define PROTO_F_CODE "code"
#define PROTO_F_MSG "msg"
#define PROTO_F_EVENT "event"

/* hello (§4); "daemon" is also the figures of a list reply. */
#define PROTO_F_VERSION "version"
#define PROTO_F_CLIENT "client"
#define PROTO_F_SERVER "server"
#define PROTO_F_DAEMON "daemon"
#define PROTO_F_MODE "mode"
#define PROTO_F_UID "uid"
#define PROTO_F_DAEMON_UID "daemon_uid"

/* Descriptors (§6, §9.2). */
#define PROTO_F_FD "fd"
#define PROTO_F_FDS "fds"
#define PROTO_F_MODELS "models"
#define PROTO_F_REF "ref"
#define PROTO_F_REL "rel"
#define PROTO_F_PATH "path"

/* submit and resume requests (§9.3).  The merge options, from memory to
 * model_card, are read and written in common/mergeopts-json.c only. */
#define PROTO_F_KIND "kind"
#define PROTO_F_CONFIG "config"
#define PROTO_F_CONFIG_NAME "config_name"
#define PROTO_F_CWD "cwd"
#define PROTO_F_OUT "out"
#define PROTO_F_OUT_NAME "out_name"
#define PROTO_F_OUT_FD "out_fd"
#define PROTO_F_NAME "name"
#define PROTO_F_PRIORITY "priority"
#define PROTO_F_AFTER "after"
#define PROTO_F_DEPS "deps"		/* the jobs a job runs after */
#define PROTO_F_GROUP "group"		/* a stage's pipeline job */
#define PROTO_F_STAGE "stage"		/* a stage's name; null: final */
#define PROTO_F_STAGES "stages"		/* a pipeline's stage jobs */
#define PROTO_F_INTER "intermediate"	/* a pipeline's stage directory */
#define PROTO_F_INTER_FD "intermediate_fd"
#define PROTO_F_LAZY "lazy"
#define PROTO_F_KEEP_INTER "keep_intermediates"
#define PROTO_F_UMASK "umask"
#define PROTO_F_MEMORY "memory"
#define PROTO_F_REASON "reason"		/* why a job waits */
#define PROTO_F_POSITION "position"	/* a queued job's place, from 1 */
#define PROTO_F_ON_DONE "on_done"	/* a hook's words (submit) */
#define PROTO_F_WARNINGS "warnings"	/* a plan's warnings (submit) */
#define PROTO_F_SEED "seed"
#define PROTO_F_SHARD_SIZE "shard_size"
#define PROTO_F_FORCE "force"
#define PROTO_F_ALLOW_CRIMES "allow_crimes"
#define PROTO_F_COPY_TOKENIZER "copy_tokenizer"
#define PROTO_F_MODEL_CARD "model_card"
#define PROTO_F_STRICT "strict"
#define PROTO_F_LORA_DTYPE "lora_merge_dtype"
/* In a bad_config error: every problem found. */
#define PROTO_F_PROBLEMS "problems"

/* The job object (§9.1). */
#define PROTO_F_JOB "job"
#define PROTO_F_OWNER "owner"
#define PROTO_F_USER "user"
#define PROTO_F_STATE "state"
#define PROTO_F_PROGRESS "progress"
#define PROTO_F_BYTES_DONE "bytes_done"
#define PROTO_F_BYTES_TOTAL "bytes_total"
#define PROTO_F_TENSORS_DONE "tensors_done"
#define PROTO_F_TENSORS_TOTAL "tensors_total"
#define PROTO_F_SHARDS_DONE "shards_done"
#define PROTO_F_SHARDS_TOTAL "shards_total"
#define PROTO_F_ELAPSED "elapsed"
#define PROTO_F_ETA "eta"
#define PROTO_F_CREATED "created"
#define PROTO_F_STARTED "started"
#define PROTO_F_FINISHED "finished"

/* list, status, logs, rm and clean (§9.3). */
#define PROTO_F_JOBS "jobs"
#define PROTO_F_STATES "states"
#define PROTO_F_MORE "more"
#define PROTO_F_BEFORE "before"
#define PROTO_F_LIMIT "limit"
#define PROTO_F_OLDER_THAN "older_than"
#define PROTO_F_REMOVED "removed"
#define PROTO_F_LINES "lines"
#define PROTO_F_TIMES "times"		/* each log line's, epoch seconds */
/* daemon status: who and where the daemon is. */
#define PROTO_F_PID "pid"
#define PROTO_F_SOCKET "socket"
#define PROTO_F_HTTP "http"		/* the status page's URL, or "" */
#define PROTO_F_STATE_DIR "state_dir"
#define PROTO_F_LOG "log"		/* its stderr: a file, or where */
#define PROTO_F_UPTIME "uptime"		/* seconds */
#define PROTO_F_BY_STATE "by_state"	/* state name -> jobs */
#define PROTO_F_MAX_RUNNING "max_running"
#define PROTO_F_JOBS_QUEUED "jobs_queued"
#define PROTO_F_QUEUED "queued"
#define PROTO_F_RUNNING "running"
#define PROTO_F_MEMORY_BUDGET "memory_budget"
#define PROTO_F_MEMORY_USED "memory_used"
#define PROTO_F_MEMORY_PEAK "memory_peak"
#define PROTO_F_CACHED_BYTES "cached_bytes"
#define PROTO_F_CACHE_HITS "cache_hits"
#define PROTO_F_CACHE_MISSES "cache_misses"

/* An extract-lora job's config: the JSON object of its options. */
#define PROTO_F_X_MODEL "model"
#define PROTO_F_X_BASE "base"
#define PROTO_F_X_MAX_RANK "max_rank"
#define PROTO_F_X_DISTRIBUTE_SCALE "distribute_scale"
#define PROTO_F_X_EMBED_LORA "embed_lora"
#define PROTO_F_X_SAVE_MODULES "save_modules"
#define PROTO_F_X_INCLUDE "include_regex"
#define PROTO_F_X_EXCLUDE "exclude_regex"
#define PROTO_F_X_SV_EPSILON "sv_epsilon"
#define PROTO_F_X_SKIP_UNDECOMPOSABLE "skip_undecomposable"
#define PROTO_F_X_FAST "fast"
#define PROTO_F_X_POWER_ITERS "power_iters"
#define PROTO_F_X_OVERSAMPLE "oversample"
#define PROTO_F_X_INVOCATION "invocation"	/* for the README card */

#endif /* PROTO_FIELDS_H */
