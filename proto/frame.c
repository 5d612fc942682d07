/* SPDX-License-Identifier: MIT */
/*
 * frame.c: the line framer shared by merged and mergectl.
 *
 * A frame owns one growable buffer.  Bytes go in at the end (frame_feed,
 * or frame_space + frame_commit when reading straight from a socket) and
 * complete lines come out at the front (frame_next), NUL-terminated in
 * place so no line is ever copied.  Three offsets describe the buffer:
 * "start" is the first byte not yet returned, "scanned" is how far the
 * search for "\n" has got, and "len" is how much is held.  The invariant
 * that makes everything else cheap is that buf[start..scanned) holds no
 * "\n": each byte is searched once, however slowly it trickles in, and
 * the start of the line being received is found by searching backwards
 * over unscanned bytes only.
 *
 * Memory is bounded by the line limit: the room offered for the line
 * being received never lets it exceed "max" (which counts its "\n"), so
 * a reader that drains frame_next until FRAME_MORE before reading again
 * never makes the buffer grow past "max" bytes.  Consumed bytes are moved
 * to the front (compacted) before more are appended, and a buffer grown
 * for one big line is given back once it is empty.  A frame is not
 * thread-safe; each connection owns one and uses it on one thread.
 */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"

/* The first allocation, and the smallest room frame_space offers. */
#define FRAME_MIN 4096
/* A buffer bigger than this is freed when it becomes empty. */
#define FRAME_KEEP (16u << 10)

static void frame_compact(struct frame *);
static size_t frame_line_start(struct frame *);
static size_t frame_room(struct frame *);
static void frame_grow(struct frame *, size_t);
static enum frame_status frame_check_line(char *, size_t *);

/*
 * Initialises f for lines of at most max bytes, counting the "\n".  No
 * memory is allocated until bytes arrive.
 */
void
frame_init(struct frame *f, size_t max)
{
	assert(max >= 2);
	memset(f, 0, sizeof *f);
	f->max = max;
}

/* Releases the buffer; f may be initialised again afterwards. */
void
frame_fini(struct frame *f)
{
	free(f->buf);
	memset(f, 0, sizeof *f);
}

/*
 * Moves the unreturned bytes to the front of the buffer, and frees a big
 * buffer that holds nothing, so one large request does not pin its memory
 * for the life of the connection.  Invalidates the last returned line,
 * which the contract allows: this only runs inside the next call.
 */
static void
frame_compact(struct frame *f)
{
	if (f->start == f->len) {
		f->start = f->scanned = f->len = 0;
		if (f->cap > FRAME_KEEP) {
			free(f->buf);
			f->buf = NULL;
			f->cap = 0;
		}
		return;
	}
	if (f->start == 0)
		return;
	memmove(f->buf, f->buf + f->start, f->len - f->start);
	f->len -= f->start;
	f->scanned -= f->start;
	f->start = 0;
}

/*
 * The offset where the line now being received begins: just after the
 * last "\n" held, or "start" when there is none.  Only unscanned bytes can
 * hold a "\n" past "start", so only those are searched, backwards; when
 * none is found they are marked scanned, so a line arriving byte by byte
 * costs linear time in all.
 */
static size_t
frame_line_start(struct frame *f)
{
	size_t i;

	for (i = f->len; i > f->scanned; i--)
		if (f->buf[i - 1] == '\n')
			return i;
	f->scanned = f->len;
	return f->start;
}

/* How many more bytes the line being received may take; 0 when too long. */
static size_t
frame_room(struct frame *f)
{
	size_t used;

	if (f->failed)
		return 0;
	used = f->len - frame_line_start(f);
	return used >= f->max ? 0 : f->max - used;
}

/*
 * Grows the buffer to hold at least need bytes, doubling to keep appends
 * amortised linear, but not past the line limit unless need itself is:
 * so a frame drained before each read never holds more than "max" bytes,
 * and one fed n bytes at once never more than "max" + n.
 */
static void
frame_grow(struct frame *f, size_t need)
{
	size_t cap, top;
	char *p;

	if (f->cap >= need)
		return;
	cap = f->cap < FRAME_MIN / 2 ? FRAME_MIN : f->cap * 2;
	top = need > f->max ? need : f->max;
	if (cap > top)
		cap = top;
	if (cap < need)
		cap = need;
	if ((p = realloc(f->buf, cap)) == NULL) {
		fprintf(stderr, "fatal: frame_grow(%zu): out of memory\n", cap);
		abort();
	}
	f->buf = p;
	f->cap = cap;
}

/*
 * Appends n bytes.  Returns 0, or -1 once the line being received exceeds
 * the limit: the bytes that do not fit are dropped (nothing after an
 * over-long line is ever returned) and frame_next reports FRAME_TOO_LONG
 * when it gets there.  All n bytes are kept otherwise, so feed in
 * read-sized pieces and drain frame_next in between to bound memory.
 */
int
frame_feed(struct frame *f, const void *data, size_t n)
{
	const char *p = data;
	size_t room, k;

	frame_compact(f);
	while (n > 0) {
		if ((room = frame_room(f)) == 0)
			return -1;
		k = n < room ? n : room;
		frame_grow(f, f->len + k);
		assert(f->buf != NULL);
		memcpy(f->buf + f->len, p, k);
		f->len += k;
		p += k;
		n -= k;
	}
	return 0;
}

/*
 * Returns where to read into and sets *n to how many bytes may go there,
 * never more than the line limit leaves for the line being received.
 * *n is 0 (and the result NULL) only when that line is already too long
 * or the frame has failed: to a libuv alloc_cb that means UV_ENOBUFS, and
 * frame_next will report FRAME_TOO_LONG once complete lines before it are
 * drained.  Follow with frame_commit (of 0 bytes if nothing was read).
 */
char *
frame_space(struct frame *f, size_t *n)
{
	size_t room, want;

	frame_compact(f);
	if ((room = frame_room(f)) == 0) {
		*n = 0;
		return NULL;
	}
	want = room < FRAME_MIN ? room : FRAME_MIN;
	if (f->cap - f->len < want)
		frame_grow(f, f->len + want);
	*n = f->cap - f->len < room ? f->cap - f->len : room;
	return f->buf + f->len;
}

/* Records that n bytes were written at the space frame_space returned. */
void
frame_commit(struct frame *f, size_t n)
{
	assert(n <= f->cap - f->len);
	f->len += n;
}

/* Marks the end of input: a partial line still held is now an error. */
void
frame_eof(struct frame *f)
{
	f->eof = true;
}

/*
 * Strips one "\r" before the "\n" (already replaced by NUL) and checks
 * what remains: not empty, no NUL byte, valid UTF-8.
 */
static enum frame_status
frame_check_line(char *line, size_t *len)
{
	if (*len > 0 && line[*len - 1] == '\r')
		line[--*len] = '\0';
	if (*len == 0 || !proto_utf8_valid(line, *len))
		return FRAME_BAD;
	return FRAME_OK;
}

/*
 * Returns the next line in *line and *len, without its "\n" (and a "\r"
 * before it), NUL-terminated in place and valid until the next call on
 * f.  FRAME_BAD consumes the offending line (framing stays in step, so
 * the caller may go on, though the daemon treats it as a protocol
 * error).  FRAME_TOO_LONG is final: the frame stays failed and keeps
 * returning it.  FRAME_TRUNCATED comes after frame_eof with a partial
 * line held; FRAME_MORE, after frame_eof, means the input ended cleanly.
 */
enum frame_status
frame_next(struct frame *f, char **line, size_t *len)
{
	char *nl;
	size_t n;
	enum frame_status st;

	*line = NULL;
	*len = 0;
	if (f->failed)
		return FRAME_TOO_LONG;
	nl = f->scanned < f->len ?
	    memchr(f->buf + f->scanned, '\n', f->len - f->scanned) : NULL;
	if (nl == NULL) {
		f->scanned = f->len;
		if (f->len - f->start >= f->max) {
			f->failed = true;
			return FRAME_TOO_LONG;
		}
		return f->eof && f->len > f->start ? FRAME_TRUNCATED :
		    FRAME_MORE;
	}
	n = (size_t)(nl - (f->buf + f->start));
	if (n + 1 > f->max) {
		/* Not reachable through feed or space; kept for safety. */
		f->failed = true;
		return FRAME_TOO_LONG;
	}
	*nl = '\0';
	st = frame_check_line(f->buf + f->start, &n);
	if (st == FRAME_OK) {
		*line = f->buf + f->start;
		*len = n;
	}
	f->start = f->scanned = (size_t)(nl - f->buf) + 1;
	return st;
}
