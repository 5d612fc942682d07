/* SPDX-License-Identifier: MIT */
/*
 * fuzz-frame.c: fuzz target for the line framer (proto/frame.c).
 *
 * The input drives one frame.  Its first two bytes choose the line limit
 * (mostly small, so the limit is hit often; 0xff first means the real
 * PROTO_MAX_LINE).  The rest is a series of pieces, each a control byte
 * (bit 7: read through frame_space/frame_commit rather than frame_feed;
 * bits 0-6: the piece's size less one) followed by the piece's bytes.
 * Lines are drained after every piece, then at end of input.  Besides
 * crashes and sanitizer reports, the target checks the framer against a
 * ten-line reference that splits the whole stream at once: the sequence
 * of lines and statuses must be the same however the bytes were cut, and
 * the buffer must stay within the limit plus one piece.  Any difference
 * aborts.
 *
 * Built with -DFUZZ_LIBFUZZER it is a libFuzzer target; otherwise main()
 * replays corpus files and directories named on the command line, one TAP
 * line per file, for the meson "fuzz" suite.
 */
#include <sys/stat.h>

#include <dirent.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"

#define FUZZ_NAME "fuzz-frame"
#include "fuzz.h"

/* The largest piece one control byte describes. */
#define PIECE_MAX 128

/* What came out of a framer, as bytes: a status letter, then the line. */
struct record {
	char *p;
	size_t len;
	size_t cap;
};


static void record_add(struct record *, char, const char *, size_t);
static bool drain(struct frame *, struct record *);
static bool put_piece(struct frame *, const uint8_t *, size_t, bool,
    struct record *);
static void reference(const char *, size_t, size_t, struct record *);

static void
record_add(struct record *r, char st, const char *line, size_t len)
{
	if (r->p == NULL || r->len + len + 2 > r->cap) {
		r->cap = (r->len + len + 2) * 2;
		r->p = realloc(r->p, r->cap);
		check(r->p != NULL, "memory");
	}
	r->p[r->len++] = st;
	memcpy(r->p + r->len, line, len);
	r->len += len;
	r->p[r->len++] = '\0';
}

/* Takes every line out; false once a final status has been recorded. */
static bool
drain(struct frame *f, struct record *r)
{
	enum frame_status st;
	char *line;
	size_t len;

	for (;;) {
		st = frame_next(f, &line, &len);
		switch (st) {
		case FRAME_OK:
			check(line != NULL && strlen(line) == len,
			    "line is NUL-terminated at its length");
			check(len + 1 <= f->max, "line within the limit");
			check(proto_utf8_valid(line, len), "line is UTF-8");
			record_add(r, 'O', line, len);
			break;
		case FRAME_BAD:
			record_add(r, 'B', "", 0);
			break;
		case FRAME_MORE:
			return true;
		case FRAME_TOO_LONG:
			check(f->failed, "TOO_LONG sets failed");
			check(frame_next(f, &line, &len) == FRAME_TOO_LONG,
			    "TOO_LONG is sticky");
			record_add(r, 'L', "", 0);
			return false;
		case FRAME_TRUNCATED:
			check(f->eof, "TRUNCATED only after EOF");
			record_add(r, 'T', "", 0);
			return false;
		}
	}
}

/* Puts one piece in, by feed or by space and commit; false when final. */
static bool
put_piece(struct frame *f, const uint8_t *p, size_t n, bool direct,
    struct record *r)
{
	size_t room, k;
	char *space;

	if (!direct) {
		if (frame_feed(f, p, n) != 0)
			check(frame_space(f, &room) == NULL && room == 0,
			    "a refused feed leaves no space");
		return drain(f, r);
	}
	while (n > 0) {
		space = frame_space(f, &room);
		if (room == 0)
			break;
		check(room <= f->max, "space within the limit");
		k = n < room ? n : room;
		memcpy(space, p, k);
		frame_commit(f, k);
		p += k;
		n -= k;
		/* Drain between reads, as a libuv read_cb does. */
		if (!drain(f, r))
			return false;
	}
	return drain(f, r);
}

/* The same stream split in one go, the way the protocol defines lines. */
static void
reference(const char *s, size_t len, size_t max, struct record *r)
{
	const char *nl;
	size_t pos = 0, n;

	for (;;) {
		nl = memchr(s + pos, '\n', len - pos);
		if (nl == NULL) {
			if (len - pos >= max)
				record_add(r, 'L', "", 0);
			else if (len > pos)
				record_add(r, 'T', "", 0);
			return;
		}
		n = (size_t)(nl - s) - pos;
		if (n + 1 > max) {
			record_add(r, 'L', "", 0);
			return;
		}
		if (n > 0 && s[pos + n - 1] == '\r')
			n--;
		if (n == 0 || !proto_utf8_valid(s + pos, n))
			record_add(r, 'B', "", 0);
		else
			record_add(r, 'O', s + pos, n);
		pos = (size_t)(nl - s) + 1;
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct record got = { 0 }, want = { 0 };
	char *stream;
	size_t max, i = 2, n, slen = 0;
	struct frame f;
	bool live = true, direct;

	if (size < 2)
		return 0;
	max = data[0] == 0xff ? PROTO_MAX_LINE :
	    2 + (((size_t)data[0] << 8 | data[1]) % 600);
	stream = malloc(size);
	check(stream != NULL, "memory");
	frame_init(&f, max);
	while (i < size) {
		direct = (data[i] & 0x80) != 0;
		n = 1 + (data[i] & 0x7f);
		i++;
		if (n > size - i)
			n = size - i;
		memcpy(stream + slen, data + i, n);
		slen += n;
		if (live)
			live = put_piece(&f, data + i, n, direct, &got);
		check(f.cap <= f.max + PIECE_MAX, "memory within the limit");
		i += n;
	}
	if (live) {
		frame_eof(&f);
		drain(&f, &got);
	}
	reference(stream, slen, max, &want);
	check(got.len == want.len && (got.len == 0 ||
	    memcmp(got.p, want.p, got.len) == 0), "same lines as reference");
	frame_fini(&f);
	free(stream);
	free(got.p);
	free(want.p);
	return 0;
}

#ifndef FUZZ_LIBFUZZER
#include "fuzz-main.h"
#endif
