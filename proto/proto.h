/* SPDX-License-Identifier: MIT */
/*
 * proto.h: the one definition of merged's wire protocol, shared by the
 * daemon and mergectl.  PROTOCOL.md describes it for humans.
 *
 * JSON lines over a Unix stream socket: one JSON object per line, UTF-8,
 * "\n" terminated ("\r\n" tolerated).  Every request carries the protocol
 * version, a client-chosen id and an op:
 *	{"v":2,"id":7,"op":"status","job":12}
 * and every reply echoes the id with either "ok":true and op-specific
 * fields, or "ok":false and an error object:
 *	{"id":7,"ok":false,"error":{"code":"not_found","msg":"no job 12"}}
 * Streaming ops (watch) send events carrying the subscribing request's id
 * until a final event.  The first request must be "hello".  File
 * descriptors travel as SCM_RIGHTS ancillary data on the line of the
 * request that names them ("fds": n), never on their own.
 *
 * The names the protocol uses (job states, ops, events) are in vocab.h.
 * Any change to this file's schema, or to vocab.h's, bumps PROTO_VERSION
 * in the same commit.
 * This library is pure (no libuv, no SQLite) and is used on both sides.
 */
#ifndef PROTO_H
#define PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct cJSON;

#define PROTO_VERSION 2

/*
 * Limits.  Each has a reason:
 * - a line holds a whole request; the largest is submit, whose config
 *   text is capped by PROTO_MAX_CONFIG, plus room for the JSON around it;
 * - nesting: our messages are at most 4 deep; cJSON's own limit is 1000;
 * - fds: one per referenced model plus the output directory;
 * - in flight: requests a connection may have unanswered at once;
 * - output queue: bytes queued to a client that is not reading, before
 *   it is disconnected (a slow client must not hold daemon memory);
 * - connections: per uid, as smtpd; and in total;
 * - error messages: long enough for any real reason, short enough that a
 *   message built from untrusted text (a path, a library's error) cannot
 *   bloat a reply or a log line;
 * - a job's name, user and paths: every string the daemon keeps and shows
 *   in the queue table is bounded, so that one job's object is bounded
 *   (PROTO_MAX_JOB_JSON) and a page of them fits a line;
 * - a list page: PROTO_LIST_MAX jobs, and at most PROTO_LIST_MAX_BYTES of
 *   them, whatever their strings: a reply stays well under the line
 *   limit however many jobs the daemon keeps;
 * - clean: jobs removed by one request, so that one request is a short
 *   transaction on the daemon's loop;
 * - priority: it orders only the submitter's own jobs (root's, everyone's);
 *   a small range is plenty for that.
 */
#define PROTO_MAX_CONFIG (256u << 10)
#define PROTO_MAX_LINE (PROTO_MAX_CONFIG + (64u << 10))
#define PROTO_MAX_DEPTH 16
#define PROTO_MAX_FDS 64
#define PROTO_MAX_INFLIGHT 16
#define PROTO_MAX_OUTQ (4u << 20)
#define PROTO_MAX_CONN_PER_UID 32
#define PROTO_MAX_CONN 512
#define PROTO_MAX_ERRMSG 4096
#define PROTO_MAX_NAME 200
#define PROTO_MAX_USER 64
#define PROTO_MAX_PATH 4096
#define PROTO_LIST_MAX 100
#define PROTO_LIST_MAX_BYTES (160u << 10)
#define PROTO_CLEAN_MAX 1000
#define PROTO_PRIORITY_MIN (-1000)
#define PROTO_PRIORITY_MAX 1000
/*
 * The most one job object can take on the wire: its strings at their
 * caps, each escaped at worst six bytes to one (\u00XX), plus the
 * numbers and keys (76,336 bytes).  It is below PROTO_LIST_MAX_BYTES, so
 * a page always has room for one job, and a status reply or a watch
 * event always fits a line.
 */
#define PROTO_MAX_JOB_JSON (6u * (PROTO_MAX_NAME + PROTO_MAX_USER + \
	2u * PROTO_MAX_PATH + PROTO_MAX_ERRMSG) + 1024u)

/* Error codes (the "code" of an error object). */
#define PROTO_E_BAD_REQUEST "bad_request"	/* malformed line or fields */
#define PROTO_E_BAD_VERSION "bad_version"	/* hello with another version */
#define PROTO_E_BAD_CONFIG "bad_config"		/* the merge cannot run */
#define PROTO_E_NOT_FOUND "not_found"		/* no such job */
#define PROTO_E_FORBIDDEN "forbidden"		/* not the job's owner */
#define PROTO_E_CONFLICT "conflict"		/* not in a state for that */
#define PROTO_E_EXISTS "exists"			/* output exists, no force */
#define PROTO_E_LIMIT "limit"			/* a limit was reached */
#define PROTO_E_SHUTTING_DOWN "shutting_down"	/* daemon is draining */
#define PROTO_E_INTERNAL "internal"		/* a bug or I/O failure */
#define PROTO_E_UNSUPPORTED "unsupported"	/* not by this daemon */

/*
 * frame.c: the line framer, used on both sides.
 *
 * Bytes go in with frame_feed() (or are read straight into the space
 * frame_space() returns, then frame_commit()); complete lines come out of
 * frame_next().  The scan for "\n" only looks at bytes not yet scanned,
 * so a slow sender cannot cause quadratic work.  A line longer than
 * PROTO_MAX_LINE (counting its "\n") is an error, reported once; so is
 * end of input in the middle of a line.
 */
enum frame_status {
	FRAME_OK,		/* a line was returned */
	FRAME_MORE,		/* no complete line yet */
	FRAME_TOO_LONG,		/* the line exceeds the limit */
	FRAME_BAD,		/* empty line, NUL byte or invalid UTF-8 */
	FRAME_TRUNCATED,	/* EOF inside a line */
};

struct frame {
	char *buf;
	size_t len;		/* bytes held */
	size_t scanned;		/* of those, already searched for "\n" */
	size_t start;		/* first byte of the next line */
	size_t cap;
	size_t max;		/* line limit, including the "\n" */
	bool eof;
	bool failed;		/* a limit was hit; nothing more comes out */
};

void frame_init(struct frame *, size_t);
void frame_fini(struct frame *);
/* Appends n bytes; returns -1 once the line limit is exceeded. */
int frame_feed(struct frame *f, const void *data, size_t n);
/* Room to read into directly (at most the limit allows), then commit. */
char *frame_space(struct frame *, size_t *);
void frame_commit(struct frame *, size_t);
void frame_eof(struct frame *);
/*
 * The next line, without its "\n" (and a "\r" before it), NUL-terminated
 * in place; valid until the next call on the frame.
 */
enum frame_status frame_next(struct frame *f, char **line, size_t *len);

/* msg.c: building and checking messages. */

/*
 * Parses one line into a JSON object, with the length-bounded parser:
 * exactly one value, an object, nesting within PROTO_MAX_DEPTH.  On error
 * returns NULL and a static message.
 */
struct cJSON *msg_parse(const char *s, size_t len, const char **err);
/* Serialises obj as one line ("\n" appended); caller frees with free(). */
char *msg_print(const struct cJSON *, size_t *);

/* A request envelope: {"v":PROTO_VERSION,"id":id,"op":op}. */
struct cJSON *msg_request(uint64_t, const char *);
/* A success reply {"id":id,"ok":true}, to which fields are added. */
struct cJSON *msg_reply(uint64_t);
/* An error reply; msg is copied (and cut to a sane length). */
struct cJSON *msg_error(uint64_t id, const char *code, const char *msg);
/* A streamed event {"id":id,"event":name}. */
struct cJSON *msg_event(uint64_t, const char *);

/* Typed field access (case-sensitive); false when absent or mistyped. */
bool msg_get_str(const struct cJSON *obj, const char *key, const char **out);
bool msg_get_u64(const struct cJSON *obj, const char *key, uint64_t *out);
bool msg_get_i64(const struct cJSON *obj, const char *key, int64_t *out);
bool msg_get_bool(const struct cJSON *obj, const char *key, bool *out);

/* Checks an incoming request's envelope; on error a code and message. */
int msg_check_request(const struct cJSON *req, uint64_t *idp, const char **opp,
    const char **code, const char **msg);

/* True when s (len bytes) is valid UTF-8 without NUL. */
bool proto_utf8_valid(const char *, size_t);
/* A printable, escaped, cut copy of untrusted text for logs. */
char *proto_escape(const char *s, size_t len, size_t max);
/* A valid UTF-8 copy (U+FFFD for bad bytes), cut to max bytes, for the wire. */
char *proto_utf8_sanitize(const char *s, size_t len, size_t max);
/* A job name: 1 to PROTO_MAX_NAME bytes of UTF-8 without control chars. */
bool proto_name_valid(const char *);

/*
 * sockdir.c: the personal daemon's socket and the safety of its directory
 * (tmux's rule for /tmp/tmux-UID).
 */

/*
 * $XDG_RUNTIME_DIR/merged/merged.sock, else /tmp/merged-UID/merged.sock;
 * the caller frees it.
 */
char *sockdir_personal_path(void);
/* "root", "uid N (name)" or "uid N"; the caller frees it. */
char *sockdir_user_name(uint32_t);
/*
 * Checks that dir is a directory (not a symbolic link) of the effective
 * uid with no permission for anyone else; with create, makes it (and
 * missing parents) with mode 0700 first.  Returns 0, or a negative errno
 * with an allocated message in *cause naming the directory, its owner and
 * mode, and what to do; -ENOENT without a message when dir is missing and
 * create is false.
 */
int sockdir_check(const char *dir, bool create, char **cause);

#endif /* PROTO_H */
