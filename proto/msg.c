/* SPDX-License-Identifier: MIT */
/*
 * msg.c: parsing, building and checking protocol messages.
 *
 * This is the one wrapper around cJSON's conventions (STYLE.md rule 16):
 * parsing goes through the length-bounded parser with its own end
 * pointer, never the process-global cJSON_GetErrorPtr(); fields are read
 * only with the case-sensitive getters and explicit type checks; numbers
 * are accepted as integers only when a double holds them exactly (up to
 * 2^53); strings printed by cJSON are copied into malloc'd memory so
 * callers free everything with free().  Building a message cannot fail:
 * cJSON returns NULL only when out of memory, which aborts here as
 * xmalloc does.  Untrusted text is checked (proto_utf8_valid), cleaned
 * (proto_utf8_sanitize) or escaped (proto_escape) before it is stored,
 * sent or logged.  No state: every function is safe on any thread.
 */
#include <assert.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "fields.h"
#include "proto.h"

#define MSG_STR2(x) #x
#define MSG_STR(x) MSG_STR2(x)

/* 2^53: past it a double no longer holds every integer. */
#define MSG_MAX_EXACT 9007199254740992.0

/* 2^64: integers up to here are printed exactly by msg_print. */
#define MSG_MAX_PRINT_INT 18446744073709551616.0

/* U+FFFD REPLACEMENT CHARACTER, for bytes that are not UTF-8. */
#define MSG_REPLACEMENT "\xef\xbf\xbd"

static void msg_oom(const void *);
static void *msg_xmalloc(size_t);
static bool msg_has_nul_escape(const char *, size_t);
static bool msg_depth_ok(const cJSON *, int);
static bool msg_big_int(const cJSON *);
static bool msg_has_big_int(const cJSON *);
static void msg_fix_big_ints(cJSON *);
static bool msg_get_number(const cJSON *, const char *, double, double,
    double *);
static size_t msg_utf8_seq(const unsigned char *, size_t);
static size_t msg_sanitized_len(const char *, size_t);

/* Aborts when cJSON or malloc returned NULL: only out of memory does that. */
static void
msg_oom(const void *p)
{
	if (p == NULL) {
		fprintf(stderr, "fatal: proto: out of memory\n");
		abort();
	}
}

static void *
msg_xmalloc(size_t n)
{
	void *p;

	assert(n > 0);
	p = malloc(n);
	msg_oom(p);
	return p;
}

/*
 * True when a string in the JSON text s holds the escape \u0000.  cJSON
 * would decode it into a C string that silently ends there, so "op" could
 * read "status" from "status\u0000anything"; the wire format has no NUL.
 */
static bool
msg_has_nul_escape(const char *s, size_t len)
{
	bool in_string = false;
	size_t i;

	for (i = 0; i < len; i++) {
		if (s[i] == '"') {
			in_string = !in_string;
		} else if (in_string && s[i] == '\\') {
			if (len - i >= 6 && memcmp(s + i + 1, "u0000", 5) == 0)
				return true;
			i++;	/* skip the escaped character */
		}
	}
	return false;
}

/* True when item's containers nest at most PROTO_MAX_DEPTH deep. */
static bool
msg_depth_ok(const cJSON *item, int depth)
{
	const cJSON *c;

	if (depth > PROTO_MAX_DEPTH)
		return false;
	for (c = item->child; c != NULL; c = c->next)
		if ((cJSON_IsArray(c) || cJSON_IsObject(c)) &&
		    !msg_depth_ok(c, depth + 1))
			return false;
	return true;
}

/*
 * Parses one line (len bytes, no "\n" needed) into a JSON object: valid
 * UTF-8 without NUL (raw or escaped), no byte order mark, exactly one
 * value with nothing but whitespace after it, an object, containers
 * nested at most PROTO_MAX_DEPTH deep (the object itself is depth 1).
 * Returns a new object the caller frees with cJSON_Delete(), or NULL and
 * a static English message in *err (err may be NULL).  Thread-safe.
 */
struct cJSON *
msg_parse(const char *s, size_t len, const char **err)
{
	const char *end = NULL, *why;
	cJSON *root = NULL;

	if (len == 0) {
		why = "empty message";
		goto fail;
	}
	if (!proto_utf8_valid(s, len)) {
		why = "invalid UTF-8 or NUL byte";
		goto fail;
	}
	if (len >= 3 && memcmp(s, "\xef\xbb\xbf", 3) == 0) {
		why = "byte order mark not allowed";
		goto fail;
	}
	if (msg_has_nul_escape(s, len)) {
		why = "\\u0000 not allowed in strings";
		goto fail;
	}
	root = cJSON_ParseWithLengthOpts(s, len, &end, false);
	if (root == NULL) {
		why = "invalid JSON";
		goto fail;
	}
	for (; end < s + len; end++) {
		if (*end != ' ' && *end != '\t' && *end != '\r' &&
		    *end != '\n') {
			why = "unexpected data after the JSON value";
			goto fail;
		}
	}
	if (!cJSON_IsObject(root)) {
		why = "not a JSON object";
		goto fail;
	}
	if (!msg_depth_ok(root, 1)) {
		why = "nesting deeper than " MSG_STR(PROTO_MAX_DEPTH);
		goto fail;
	}
	if (err != NULL)
		*err = NULL;
	return root;

fail:
	cJSON_Delete(root);
	if (err != NULL)
		*err = why;
	return NULL;
}

/*
 * True for an integral number that cJSON 1.7.15 would print inexactly:
 * print_number tries "%1.15g" and keeps it when it reads back within a
 * relative epsilon, so 9007199254740993 goes out as 9.00719925474099e+15.
 * Ids, seeds and byte counts must survive the wire exactly.
 */
static bool
msg_big_int(const cJSON *item)
{
	double d;

	if (!cJSON_IsNumber(item))
		return false;
	d = fabs(item->valuedouble);
	return isfinite(d) && d >= 1e15 && d <= MSG_MAX_PRINT_INT &&
	    floor(d) == d;
}

static bool
msg_has_big_int(const cJSON *item)
{
	const cJSON *c;

	if (msg_big_int(item))
		return true;
	for (c = item->child; c != NULL; c = c->next)
		if (msg_has_big_int(c))
			return true;
	return false;
}

/*
 * Turns each big integral number of a (copied) tree into a raw item
 * holding its exact decimal text, which cJSON prints verbatim.  "%.0f"
 * prints an integral double exactly and has no decimal point, so the
 * locale cannot change it.
 */
static void
msg_fix_big_ints(cJSON *item)
{
	char text[32];
	cJSON *c;
	int n;

	for (c = item->child; c != NULL; c = c->next) {
		if (!msg_big_int(c)) {
			msg_fix_big_ints(c);
			continue;
		}
		n = snprintf(text, sizeof text, "%.0f", c->valuedouble);
		assert(n > 0 && (size_t)n < sizeof text);
		msg_oom(c->valuestring = cJSON_malloc((size_t)n + 1));
		memcpy(c->valuestring, text, (size_t)n + 1);
		c->type = cJSON_Raw | (c->type & ~0xff);
	}
}

/*
 * Serialises obj without any formatting, then appends "\n": one line,
 * since JSON escaping keeps "\n" out of strings.  Integers up to 2^64 are
 * printed exactly (cJSON alone would round those past 10^15).  Returns a
 * new buffer the caller frees with free(), NUL-terminated, and its length
 * including the "\n" (not the NUL) in *lenp (lenp may be NULL).  Returns
 * NULL when cJSON cannot print obj or the result would not be a valid
 * line: a string holding invalid UTF-8 (clean such text with
 * proto_utf8_sanitize first), or a raw item holding a newline.
 * Thread-safe.
 */
char *
msg_print(const struct cJSON *obj, size_t *lenp)
{
	char *s, *out = NULL;
	cJSON *copy = NULL;
	size_t len;

	if (obj == NULL)
		return NULL;
	if (msg_has_big_int(obj)) {
		msg_oom(copy = cJSON_Duplicate(obj, true));
		msg_fix_big_ints(copy);
		obj = copy;
	}
	s = cJSON_PrintUnformatted(obj);
	cJSON_Delete(copy);
	if (s == NULL)
		return NULL;
	len = strlen(s);
	if (len > 0 && memchr(s, '\n', len) == NULL &&
	    proto_utf8_valid(s, len)) {
		out = msg_xmalloc(len + 2);
		memcpy(out, s, len);
		out[len] = '\n';
		out[len + 1] = '\0';
		if (lenp != NULL)
			*lenp = len + 1;
	}
	cJSON_free(s);
	return out;
}

/*
 * Builds {"v":PROTO_VERSION,"id":id,"op":op}; the caller adds the op's
 * fields and frees it with cJSON_Delete().  id must be at most 2^53.
 * Never returns NULL.
 */
struct cJSON *
msg_request(uint64_t id, const char *op)
{
	cJSON *o;

	assert((double)id <= MSG_MAX_EXACT);
	msg_oom(o = cJSON_CreateObject());
	msg_oom(cJSON_AddNumberToObject(o, PROTO_F_V, PROTO_VERSION));
	msg_oom(cJSON_AddNumberToObject(o, PROTO_F_ID, (double)id));
	msg_oom(cJSON_AddStringToObject(o, PROTO_F_OP, op));
	return o;
}

/*
 * Builds the success reply {"id":id,"ok":true}; the caller adds fields
 * and frees it with cJSON_Delete().  Never returns NULL.
 */
struct cJSON *
msg_reply(uint64_t id)
{
	cJSON *o;

	assert((double)id <= MSG_MAX_EXACT);
	msg_oom(o = cJSON_CreateObject());
	msg_oom(cJSON_AddNumberToObject(o, PROTO_F_ID, (double)id));
	msg_oom(cJSON_AddTrueToObject(o, PROTO_F_OK));
	return o;
}

/*
 * Builds {"id":id,"ok":false,"error":{"code":code,"msg":msg}}.  code is
 * one of the PROTO_E_* constants.  msg (NULL reads as "") is copied, cut
 * to PROTO_MAX_ERRMSG bytes and made valid UTF-8, so it may come from
 * anywhere, a file name or a library's message.  Use id 0 when the
 * request's id could not be read.  The caller frees the result with
 * cJSON_Delete(); never returns NULL.
 */
struct cJSON *
msg_error(uint64_t id, const char *code, const char *msg)
{
	cJSON *o, *e;
	char *clean;

	assert(code != NULL && (double)id <= MSG_MAX_EXACT);
	if (msg == NULL)
		msg = "";
	clean = proto_utf8_sanitize(msg, strlen(msg), PROTO_MAX_ERRMSG);
	msg_oom(o = cJSON_CreateObject());
	msg_oom(cJSON_AddNumberToObject(o, PROTO_F_ID, (double)id));
	msg_oom(cJSON_AddFalseToObject(o, PROTO_F_OK));
	msg_oom(e = cJSON_AddObjectToObject(o, PROTO_F_ERROR));
	msg_oom(cJSON_AddStringToObject(e, PROTO_F_CODE, code));
	msg_oom(cJSON_AddStringToObject(e, PROTO_F_MSG, clean));
	free(clean);
	return o;
}

/*
 * Builds the streamed event {"id":id,"event":name}, id being that of the
 * request that subscribed.  The caller adds fields and frees it with
 * cJSON_Delete(); never returns NULL.
 */
struct cJSON *
msg_event(uint64_t id, const char *name)
{
	cJSON *o;

	assert((double)id <= MSG_MAX_EXACT);
	msg_oom(o = cJSON_CreateObject());
	msg_oom(cJSON_AddNumberToObject(o, PROTO_F_ID, (double)id));
	msg_oom(cJSON_AddStringToObject(o, PROTO_F_EVENT, name));
	return o;
}

/*
 * Sets *out to obj's string field key, borrowed from obj (valid while obj
 * lives).  False, *out untouched, when obj is not an object or the field
 * is absent or not a string.
 */
bool
msg_get_str(const struct cJSON *obj, const char *key, const char **out)
{
	const cJSON *item;

	if (!cJSON_IsObject(obj))
		return false;
	item = cJSON_GetObjectItemCaseSensitive(obj, key);
	if (!cJSON_IsString(item) || item->valuestring == NULL)
		return false;
	*out = item->valuestring;
	return true;
}

/* Reads a number field that is integral and within [lo, hi]. */
static bool
msg_get_number(const cJSON *obj, const char *key, double lo, double hi,
    double *out)
{
	const cJSON *item;
	double d;

	if (!cJSON_IsObject(obj))
		return false;
	item = cJSON_GetObjectItemCaseSensitive(obj, key);
	if (!cJSON_IsNumber(item))
		return false;
	d = item->valuedouble;
	if (!isfinite(d) || d < lo || d > hi || floor(d) != d)
		return false;
	*out = d;
	return true;
}

/*
 * Sets *out to obj's field key when it is an integral number from 0 to
 * 2^53 (beyond that a double no longer holds every integer, so the value
 * might not be the one sent).  False, *out untouched, otherwise.
 */
bool
msg_get_u64(const struct cJSON *obj, const char *key, uint64_t *out)
{
	double d;

	if (!msg_get_number(obj, key, 0.0, MSG_MAX_EXACT, &d))
		return false;
	*out = (uint64_t)d;
	return true;
}

/* As msg_get_u64, for integers from -2^53 to 2^53. */
bool
msg_get_i64(const struct cJSON *obj, const char *key, int64_t *out)
{
	double d;

	if (!msg_get_number(obj, key, -MSG_MAX_EXACT, MSG_MAX_EXACT, &d))
		return false;
	*out = (int64_t)d;
	return true;
}

/* Sets *out to obj's boolean field key; false when absent or mistyped. */
bool
msg_get_bool(const struct cJSON *obj, const char *key, bool *out)
{
	const cJSON *item;

	if (!cJSON_IsObject(obj))
		return false;
	item = cJSON_GetObjectItemCaseSensitive(obj, key);
	if (!cJSON_IsBool(item))
		return false;
	*out = cJSON_IsTrue(item);
	return true;
}

/*
 * Checks the envelope of a parsed request: "v" equal to PROTO_VERSION,
 * "id" an integer (msg_get_u64) and "op" a non-empty string.  Returns 0
 * with *id and *op (borrowed from req) set, or -1 with *code (a PROTO_E_*
 * constant) and *msg (a static message) set for the error reply.  On
 * error *id is still the request's id when it was readable, 0 otherwise,
 * so the reply can echo it.  The version is checked first: a client
 * speaking another version gets bad_version, naming ours, whatever else
 * it sent.  Any out pointer may be NULL.  Thread-safe.
 */
int
msg_check_request(const struct cJSON *req, uint64_t *idp, const char **opp,
    const char **code, const char **msg)
{
	uint64_t id = 0, v;
	const char *op = NULL;
	bool have_id;

	have_id = msg_get_u64(req, PROTO_F_ID, &id);
	if (idp != NULL)
		*idp = have_id ? id : 0;
	if (opp != NULL)
		*opp = NULL;
	if (!msg_get_u64(req, PROTO_F_V, &v) || v != PROTO_VERSION) {
		if (code != NULL)
			*code = PROTO_E_BAD_VERSION;
		if (msg != NULL)
			*msg = "unsupported protocol version: this server "
			    "speaks version " MSG_STR(PROTO_VERSION);
		return -1;
	}
	if (!have_id) {
		if (code != NULL)
			*code = PROTO_E_BAD_REQUEST;
		if (msg != NULL)
			*msg = "\"id\" must be an integer from 0 to 2^53";
		return -1;
	}
	if (!msg_get_str(req, PROTO_F_OP, &op) || *op == '\0') {
		if (code != NULL)
			*code = PROTO_E_BAD_REQUEST;
		if (msg != NULL)
			*msg = "\"op\" must be a non-empty string";
		return -1;
	}
	if (opp != NULL)
		*opp = op;
	return 0;
}

/*
 * The length of the valid UTF-8 sequence at s (of at most len bytes), or
 * 0 when it is not one: a NUL, a stray continuation byte, an overlong
 * form, a surrogate, a code point past U+10FFFF or a cut sequence.  The
 * ranges are those of RFC 3629's table, checked on the second byte.
 */
static size_t
msg_utf8_seq(const unsigned char *s, size_t len)
{
	unsigned char c = s[0], lo = 0x80, hi = 0xbf;
	size_t n, i;

	if (c >= 0x01 && c <= 0x7f)
		return 1;
	if (c >= 0xc2 && c <= 0xdf)
		n = 2;
	else if (c >= 0xe0 && c <= 0xef)
		n = 3;
	else if (c >= 0xf0 && c <= 0xf4)
		n = 4;
	else
		return 0;	/* NUL, continuation, C0, C1, F5..FF */
	if (c == 0xe0)
		lo = 0xa0;	/* overlong */
	else if (c == 0xed)
		hi = 0x9f;	/* surrogates */
	else if (c == 0xf0)
		lo = 0x90;	/* overlong */
	else if (c == 0xf4)
		hi = 0x8f;	/* past U+10FFFF */
	if (len < n || s[1] < lo || s[1] > hi)
		return 0;
	for (i = 2; i < n; i++)
		if (s[i] < 0x80 || s[i] > 0xbf)
			return 0;
	return n;
}

/*
 * True when s (len bytes) is valid UTF-8 holding no NUL: no overlong
 * forms, surrogates, code points past U+10FFFF or cut sequences.  s need
 * not be NUL-terminated.  Thread-safe.
 */
bool
proto_utf8_valid(const char *s, size_t len)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t i = 0, n;

	while (i < len) {
		if ((n = msg_utf8_seq(p + i, len - i)) == 0)
			return false;
		i += n;
	}
	return true;
}

/* The length of s once each invalid byte is replaced by U+FFFD. */
static size_t
msg_sanitized_len(const char *s, size_t len)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t i = 0, n, out = 0;

	while (i < len) {
		n = msg_utf8_seq(p + i, len - i);
		out += n ? n : sizeof MSG_REPLACEMENT - 1;
		i += n ? n : 1;
	}
	return out;
}

/*
 * Returns a new string the caller frees with free(): s (len bytes) with
 * each byte that is not part of valid UTF-8, and each NUL, replaced by
 * U+FFFD, cut at a character boundary to at most max bytes (not counting
 * the terminating NUL), the cut marked by a trailing "..." when max
 * leaves room for it.  For untrusted text that must go on the wire: file
 * names, log lines, library messages.  Thread-safe.
 */
char *
proto_utf8_sanitize(const char *s, size_t len, size_t max)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t i = 0, n, k, out = 0, budget = max;
	const char *piece;
	char *r;
	bool cut;

	cut = msg_sanitized_len(s, len) > max;
	if (cut && max >= 3)
		budget = max - 3;
	r = msg_xmalloc(max + 1);
	while (i < len) {
		n = msg_utf8_seq(p + i, len - i);
		piece = n ? s + i : MSG_REPLACEMENT;
		k = n ? n : sizeof MSG_REPLACEMENT - 1;
		if (out + k > budget)
			break;
		memcpy(r + out, piece, k);
		out += k;
		i += n ? n : 1;
	}
	if (cut && max >= 3) {
		memcpy(r + out, "...", 3);
		out += 3;
	}
	r[out] = '\0';
	return r;
}

/*
 * Returns a new string the caller frees with free(): at most max bytes of
 * s (len bytes; NULL reads as "(null)") made printable for a log line.
 * Printable ASCII is kept, backslash doubles, \n \r \t are written so,
 * and every other byte (controls, DEL, all non-ASCII) becomes \xHH, so
 * the result is ASCII and cannot forge log lines.  "..." is appended when
 * s was longer than max.  Thread-safe.
 */
char *
proto_escape(const char *s, size_t len, size_t max)
{
	static const char hex[] = "0123456789abcdef";
	size_t n, i, o = 0;
	unsigned char c;
	char *r;

	if (s == NULL) {
		s = "(null)";
		len = strlen(s);
	}
	n = len < max ? len : max;
	r = msg_xmalloc(n * 4 + 4);
	for (i = 0; i < n; i++) {
		c = (unsigned char)s[i];
		if (c == '\\' || c == '\n' || c == '\r' || c == '\t') {
			r[o++] = '\\';
			r[o++] = c == '\\' ? '\\' : c == '\n' ? 'n' :
			    c == '\r' ? 'r' : 't';
		} else if (c >= 0x20 && c < 0x7f) {
			r[o++] = (char)c;
		} else {
			r[o++] = '\\';
			r[o++] = 'x';
			r[o++] = hex[c >> 4];
			r[o++] = hex[c & 0xf];
		}
	}
	if (len > max) {
		memcpy(r + o, "...", 3);
		o += 3;
	}
	r[o] = '\0';
	return r;
}

/*
 * True when s is fit to be a job's name: 1 to PROTO_MAX_NAME bytes of
 * valid UTF-8 with no control character (C0, DEL or C1: U+0080 to
 * U+009F).  The queue table prints names to every user's terminal, so a
 * name must not be able to move the cursor or change the colours, and
 * its size bounds the queue table's lines.  Both sides check it: the
 * client to say so before sending, the daemon because it trusts no
 * client.  Thread-safe.
 */
bool
proto_name_valid(const char *s)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t len = strlen(s), i;

	if (len == 0 || len > PROTO_MAX_NAME || !proto_utf8_valid(s, len))
		return false;
	for (i = 0; i < len; i++) {
		if (p[i] < 0x20 || p[i] == 0x7f)
			return false;
		/* U+0080..U+009F are C2 80..C2 9F. */
		if (p[i] == 0xc2 && i + 1 < len && p[i + 1] <= 0x9f)
			return false;
	}
	return true;
}
