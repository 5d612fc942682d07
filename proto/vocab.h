/* SPDX-License-Identifier: MIT */
/*
 * vocab.h: the words of the protocol that name things, in one place for
 * the daemon, its store and mergectl: job states, ops and events, and
 * mergectl's exit codes.  The field names are in fields.h.
 *
 * A job state is one row of PROTO_JOB_STATES: its enumerator, the name
 * that travels on the wire and is kept in the store (names, never
 * numbers, so that the enum's order may change), and the flags that say
 * what the state allows.  Code asks the flags (proto_state_final() and
 * its kin), never compares with a list of states or with the enum's
 * order, so a state added here behaves as its flags say everywhere;
 * only the code that moves jobs into or out of it is new.
 *
 * The state names keep the words they always had (enum job_state,
 * JOB_*): they are the daemon's and the client's everyday words, and the
 * enum is the wire's; the functions carry the proto_ prefix.  Pure and
 * stateless, like the rest of proto/.
 */
#ifndef PROTO_VOCAB_H
#define PROTO_VOCAB_H

#include <stdbool.h>
#include <stddef.h>

/*
 * What a state allows, one bit each:
 * - FINAL: the job changes no more unless asked (resume, rm); watchers
 *   get their last event and the job its finish time;
 * - LIVE: the job needs this process (its descriptors, its merge): it
 *   counts against its owner's quota, and a daemon stopping or
 *   restarting makes it interrupted;
 * - CANCELLABLE: cancel applies;
 * - RESUMABLE: resume applies (it is planned again with new descriptors);
 * - REMOVABLE: finished for good: rm and clean may remove its record,
 *   and the retention policy purges it; list shows it with the finished.
 */
#define PROTO_STATE_FINAL 0x01u
#define PROTO_STATE_LIVE 0x02u
#define PROTO_STATE_CANCELLABLE 0x04u
#define PROTO_STATE_RESUMABLE 0x08u
#define PROTO_STATE_REMOVABLE 0x10u

/* X(enumerator, name, flags), in the enum's order. */
#define PROTO_JOB_STATES(X)						\
	X(JOB_QUEUED, "queued", PROTO_STATE_LIVE | PROTO_STATE_CANCELLABLE) \
	X(JOB_RUNNING, "running", PROTO_STATE_LIVE |			\
	    PROTO_STATE_CANCELLABLE)					\
	X(JOB_DONE, "done", PROTO_STATE_FINAL | PROTO_STATE_REMOVABLE)	\
	X(JOB_FAILED, "failed", PROTO_STATE_FINAL | PROTO_STATE_RESUMABLE | \
	    PROTO_STATE_REMOVABLE)					\
	X(JOB_CANCELLED, "cancelled", PROTO_STATE_FINAL |		\
	    PROTO_STATE_REMOVABLE)					\
	X(JOB_INTERRUPTED, "interrupted", PROTO_STATE_FINAL |		\
	    PROTO_STATE_CANCELLABLE | PROTO_STATE_RESUMABLE)

#define PROTO_STATE_ENUM(e, name, flags) e,
enum job_state {
	PROTO_JOB_STATES(PROTO_STATE_ENUM)
	JOB_NSTATES
};
#undef PROTO_STATE_ENUM

/* The state's name; "unknown" for a value outside the enum. */
const char *proto_state_name(enum job_state);
/* The state called name, into *out: 0, or -EINVAL for no such state. */
int proto_state_parse(const char *, enum job_state *);
/* The state's PROTO_STATE_* flags; 0 outside the enum. */
unsigned proto_state_flags(enum job_state);

static inline bool
proto_state_final(enum job_state s)
{
	return (proto_state_flags(s) & PROTO_STATE_FINAL) != 0;
}

static inline bool
proto_state_live(enum job_state s)
{
	return (proto_state_flags(s) & PROTO_STATE_LIVE) != 0;
}

static inline bool
proto_state_cancellable(enum job_state s)
{
	return (proto_state_flags(s) & PROTO_STATE_CANCELLABLE) != 0;
}

static inline bool
proto_state_resumable(enum job_state s)
{
	return (proto_state_flags(s) & PROTO_STATE_RESUMABLE) != 0;
}

static inline bool
proto_state_removable(enum job_state s)
{
	return (proto_state_flags(s) & PROTO_STATE_REMOVABLE) != 0;
}

/*
 * The names of the states with every bit of flags, in the enum's order,
 * separated by sep and the last two by last (", " and " or " make "done,
 * failed or cancelled"), for messages and SQL; the caller frees it.
 */
char *proto_state_names(unsigned flags, const char *sep, const char *last);

/*
 * Job kinds: what a job does, one row each: its enumerator and its name
 * on the wire and in the store (names, never numbers).  A merge's config
 * is its YAML text; an extraction's is the JSON object of its options
 * (common/extractopts-json.c).  A pipeline is a job group: its config is
 * a multi-stage file, each of its stages a merge job of its own whose
 * "group" is the pipeline's id; the pipeline itself never runs, its
 * state and progress are its stages' (daemon/group.c).  All share every
 * state and op.
 */
#define PROTO_JOB_KINDS(X)						\
	X(JOB_KIND_MERGE, "merge")					\
	X(JOB_KIND_EXTRACT_LORA, "extract-lora")			\
	X(JOB_KIND_PIPELINE, "pipeline")

#define PROTO_KIND_ENUM(e, name) e,
enum job_kind {
	PROTO_JOB_KINDS(PROTO_KIND_ENUM)
	JOB_NKINDS
};
#undef PROTO_KIND_ENUM

/* The kind's name; "unknown" for a value outside the enum. */
const char *proto_kind_name(enum job_kind);
/* The kind called name, into *out: 0, or -EINVAL for no such kind. */
int proto_kind_parse(const char *, enum job_kind *);

/* Ops: the "op" of a request.  Each has its daemon/op-<name>.c. */
#define PROTO_OP_HELLO "hello"
#define PROTO_OP_SUBMIT "submit"
#define PROTO_OP_LIST "list"
#define PROTO_OP_STATUS "status"
#define PROTO_OP_WATCH "watch"
#define PROTO_OP_LOGS "logs"
#define PROTO_OP_CANCEL "cancel"
#define PROTO_OP_RESUME "resume"
#define PROTO_OP_CONFIG "config"
#define PROTO_OP_SHUTDOWN "shutdown"
#define PROTO_OP_RM "rm"
#define PROTO_OP_CLEAN "clean"

/* Events: the "event" of a streamed message (watch). */
#define PROTO_EV_PROGRESS "progress"
#define PROTO_EV_DONE "done"		/* the last; carries "state" */

/*
 * mergectl's exit codes, documented in mergectl --help, the README and
 * the man page.  Here rather than in the client because the daemon reads
 * one: a Slurm batch job runs the engine as mergectl run (daemon/slurm.c).
 */
#define CLI_EXIT_OK 0		/* success */
#define CLI_EXIT_FAILED 1	/* the merge failed while running */
#define CLI_EXIT_USAGE 2	/* bad command line */
#define CLI_EXIT_INVALID 3	/* config or plan rejected; nothing read */
#define CLI_EXIT_EXISTS 4	/* output exists and --force not given */
#define CLI_EXIT_DAEMON 5	/* no daemon answers */
#define CLI_EXIT_NOT_FOUND 6	/* no such job */
#define CLI_EXIT_FORBIDDEN 7	/* not the job's owner */
#define CLI_EXIT_CANCELLED 8	/* the job was cancelled */
#define CLI_EXIT_JOB_INTERRUPTED 9	/* the job was interrupted */
#define CLI_EXIT_LIMIT 10	/* refused: a per-user or daemon limit */
#define CLI_EXIT_UNTRUSTED 11	/* the daemon answering is not who it
				   should be; nothing was sent */
#define CLI_EXIT_UNSUPPORTED 12	/* not by this daemon: a hook where it
				   cannot act as you */
#define CLI_EXIT_INTERRUPTED 130	/* SIGINT or SIGTERM */

#include "fields.h"

#endif /* PROTO_VOCAB_H */
