/* SPDX-License-Identifier: MIT */
/*
 * test-frame.c: unit tests for the line framer (proto/frame.c).
 *
 * Framing is where a byte stream meets message boundaries, so the tests
 * follow seatd's tests/connection.c: bytes arrive one at a time, several
 * lines at once, a line split across reads, and through a real socketpair
 * written in random pieces by a child process.  Limits are tested at the
 * exact boundary (a line of exactly the limit, counting its "\n", and one
 * byte more), and memory is checked to stay bounded while 100 MB of short
 * lines pass through.  Each test builds its own frame; no shared state.
 */
#include <sys/socket.h>
#include <sys/wait.h>

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "proto.h"
#include "tap.h"

/* What frame_next returned, with a copy of the line. */
struct got {
	enum frame_status st;
	char line[256];
	size_t len;
};

static struct got next(struct frame *);
static int drain(struct frame *, char *, size_t);
static void test_byte_at_a_time(void);
static void test_many_in_one_feed(void);
static void test_split_across_feeds(void);
static void test_crlf(void);
static void test_exact_limit(void);
static void test_over_limit(void);
static void test_cap_after_partial(void);
static void test_over_limit_after_lines(void);
static void test_real_limit(void);
static void test_nul(void);
static void test_bad_utf8(void);
static void test_empty_line(void);
static void test_eof_mid_line(void);
static void test_eof_after_line(void);
static void test_space_limit(void);
static void test_space_with_pending(void);
static void test_memory_bounded(void);
static void test_memory_bounded_space(void);
static void test_big_line_released(void);
static void writer(int, unsigned, size_t);
static size_t line_for(unsigned, size_t, char *, size_t);
static void test_socketpair(void);

/* Calls frame_next once and copies the line out (short lines only). */
static struct got
next(struct frame *f)
{
	struct got g;
	char *line;
	size_t len;

	memset(&g, 0, sizeof g);
	g.st = frame_next(f, &line, &len);
	if (g.st == FRAME_OK && len < sizeof g.line) {
		memcpy(g.line, line, len + 1);
		g.len = len;
	}
	return g;
}

/*
 * Takes every complete line, appending each to out followed by "|";
 * returns how many lines came out, or -1 at the first non-OK status.
 */
static int
drain(struct frame *f, char *out, size_t outsz)
{
	enum frame_status st;
	char *line;
	size_t len;
	int n = 0;

	while ((st = frame_next(f, &line, &len)) == FRAME_OK) {
		if (strlen(line) != len)
			return -1;
		if (strlen(out) + len + 2 <= outsz) {
			strcat(out, line);
			strcat(out, "|");
		}
		n++;
	}
	return st == FRAME_MORE ? n : -1;
}

static void
test_byte_at_a_time(void)
{
	const char *in = "{\"a\":1}\n{\"b\":\"\xc3\xa9t\xc3\xa9\"}\n";
	char out[128] = "";
	struct frame f;
	size_t i;
	int n = 0, r = 0;

	frame_init(&f, 64);
	for (i = 0; i < strlen(in); i++) {
		r |= frame_feed(&f, in + i, 1);
		n += drain(&f, out, sizeof out);
	}
	ok_int_eq(r, 0, "byte at a time: every feed accepted");
	ok_int_eq(n, 2, "byte at a time: two lines");
	ok_str_eq(out, "{\"a\":1}|{\"b\":\"\xc3\xa9t\xc3\xa9\"}|",
	    "byte at a time: lines intact, UTF-8 split across feeds");
	ok_int_eq(f.scanned, f.len, "byte at a time: all bytes scanned");
	frame_fini(&f);
}

static void
test_many_in_one_feed(void)
{
	const char *in = "one\ntwo\nthree\nfour";
	char out[128] = "";
	struct frame f;

	frame_init(&f, 64);
	ok_int_eq(frame_feed(&f, in, strlen(in)), 0, "many: feed");
	ok_int_eq(drain(&f, out, sizeof out), 3, "many: three lines out");
	ok_str_eq(out, "one|two|three|", "many: in order");
	ok_int_eq(frame_feed(&f, "\n", 1), 0, "many: finish the fourth");
	out[0] = '\0';
	ok_int_eq(drain(&f, out, sizeof out), 1, "many: fourth line");
	ok_str_eq(out, "four|", "many: fourth intact after compaction");
	frame_fini(&f);
}

static void
test_split_across_feeds(void)
{
	struct frame f;
	struct got g;

	frame_init(&f, 64);
	frame_feed(&f, "{\"op\":", 6);
	g = next(&f);
	ok_int_eq(g.st, FRAME_MORE, "split: first half is not a line");
	frame_feed(&f, "\"list\"}", 7);
	g = next(&f);
	ok_int_eq(g.st, FRAME_MORE, "split: still no newline");
	frame_feed(&f, "\nx", 2);
	g = next(&f);
	ok_int_eq(g.st, FRAME_OK, "split: line complete");
	ok_str_eq(g.line, "{\"op\":\"list\"}", "split: joined");
	ok_int_eq(g.len, 13, "split: length");
	g = next(&f);
	ok_int_eq(g.st, FRAME_MORE, "split: rest waits");
	frame_fini(&f);
}

static void
test_crlf(void)
{
	struct frame f;
	struct got g;

	frame_init(&f, 64);
	frame_feed(&f, "abc\r\nd\r\r\ne\rf\n", 13);
	g = next(&f);
	ok(g.st == FRAME_OK && strcmp(g.line, "abc") == 0 && g.len == 3,
	    "crlf: one \\r stripped");
	g = next(&f);
	ok(g.st == FRAME_OK && strcmp(g.line, "d\r") == 0 && g.len == 2,
	    "crlf: only one \\r stripped");
	g = next(&f);
	ok(g.st == FRAME_OK && strcmp(g.line, "e\rf") == 0,
	    "crlf: inner \\r kept");
	/* "\r" then "\n" in separate feeds. */
	frame_feed(&f, "g\r", 2);
	ok_int_eq(next(&f).st, FRAME_MORE, "crlf: \\r alone ends nothing");
	frame_feed(&f, "\n", 1);
	g = next(&f);
	ok(g.st == FRAME_OK && strcmp(g.line, "g") == 0,
	    "crlf: split \\r\\n stripped");
	frame_fini(&f);
}

/* A line of exactly the limit, counting "\n", whole and byte by byte. */
static void
test_exact_limit(void)
{
	char buf[64];
	struct frame f;
	struct got g;
	size_t i;
	int r = 0;

	memset(buf, 'x', sizeof buf);
	buf[63] = '\n';
	frame_init(&f, 64);
	ok_int_eq(frame_feed(&f, buf, 64), 0, "exact: feed of 64 accepted");
	g = next(&f);
	ok_int_eq(g.st, FRAME_OK, "exact: line of the limit is OK");
	ok_int_eq(g.len, 63, "exact: 63 bytes without the newline");
	for (i = 0; i < 64; i++)
		r |= frame_feed(&f, buf + i, 1);
	ok_int_eq(r, 0, "exact: byte by byte accepted");
	g = next(&f);
	ok(g.st == FRAME_OK && g.len == 63, "exact: byte by byte is OK");
	/* With "\r\n", the "\r" counts too. */
	buf[62] = '\r';
	ok_int_eq(frame_feed(&f, buf, 64), 0, "exact: crlf line accepted");
	g = next(&f);
	ok(g.st == FRAME_OK && g.len == 62, "exact: crlf line is OK");
	ok(f.cap <= 64, "exact: buffer never above the limit (%zu)", f.cap);
	frame_fini(&f);
}

/* One byte over: reported, then the frame stays failed. */
static void
test_over_limit(void)
{
	char buf[65], *space;
	struct frame f;
	size_t n;

	memset(buf, 'x', sizeof buf);
	buf[64] = '\n';
	frame_init(&f, 64);
	ok_int_eq(frame_feed(&f, buf, 65), -1, "over: feed refuses");
	ok_int_eq(next(&f).st, FRAME_TOO_LONG, "over: TOO_LONG");
	ok(f.failed, "over: failed is set");
	ok_int_eq(next(&f).st, FRAME_TOO_LONG, "over: TOO_LONG again");
	ok_int_eq(frame_feed(&f, "a\n", 2), -1, "over: feed still refuses");
	space = frame_space(&f, &n);
	ok(space == NULL && n == 0, "over: no space offered");
	ok_int_eq(next(&f).st, FRAME_TOO_LONG, "over: still TOO_LONG");
	frame_eof(&f);
	ok_int_eq(next(&f).st, FRAME_TOO_LONG, "over: TOO_LONG after EOF");
	frame_fini(&f);

	/* Byte by byte: the 65th byte is the first refused. */
	frame_init(&f, 64);
	for (n = 0; n < 64; n++)
		if (frame_feed(&f, "y", 1) != 0)
			break;
	ok_int_eq(n, 64, "over: 64 bytes without newline accepted");
	ok_int_eq(next(&f).st, FRAME_TOO_LONG,
	    "over: 64 bytes and no newline is already too long");
	frame_fini(&f);
}

/*
 * A feed that completes a near-limit line and carries short lines after
 * it holds at most the limit plus that feed (a fuzzer found the buffer
 * doubling to twice the limit here).
 */
static void
test_cap_after_partial(void)
{
	char buf[129], out[256] = "";
	struct frame f;

	memset(buf, 'y', sizeof buf);
	frame_init(&f, 130);
	ok_int_eq(frame_feed(&f, buf, sizeof buf), 0, "cap: 129 bytes held");
	ok_int_eq(frame_feed(&f, "\na\nb\nc\nd", 9), 0, "cap: then lines");
	ok(f.cap <= 130 + 9, "cap: %zu within limit plus feed", f.cap);
	ok_int_eq(drain(&f, out, sizeof out), 4, "cap: four lines");
	ok_str_has(out, "y|a|b|c|", "cap: in order");
	frame_fini(&f);
}

/* Lines before the over-long one still come out, in order. */
static void
test_over_limit_after_lines(void)
{
	char buf[200];
	struct frame f;
	struct got g;

	memcpy(buf, "ok\nfine\n", 8);
	memset(buf + 8, 'z', sizeof buf - 8);
	frame_init(&f, 64);
	ok_int_eq(frame_feed(&f, buf, sizeof buf), -1,
	    "after lines: feed refuses the tail");
	g = next(&f);
	ok(g.st == FRAME_OK && strcmp(g.line, "ok") == 0,
	    "after lines: first line");
	g = next(&f);
	ok(g.st == FRAME_OK && strcmp(g.line, "fine") == 0,
	    "after lines: second line");
	ok_int_eq(next(&f).st, FRAME_TOO_LONG, "after lines: then TOO_LONG");
	ok(f.len <= 8 + 64, "after lines: excess dropped (%zu held)", f.len);
	frame_fini(&f);
}

/* The real limit, PROTO_MAX_LINE, through frame_space. */
static void
test_real_limit(void)
{
	size_t total, n, i;
	struct frame f;
	char *space, *line;
	int rounds;

	for (rounds = 0; rounds < 2; rounds++) {
		total = PROTO_MAX_LINE + (size_t)rounds;
		frame_init(&f, PROTO_MAX_LINE);
		for (i = 0; i < total;) {
			space = frame_space(&f, &n);
			if (n == 0)
				break;
			if (n > total - i)
				n = total - i;
			memset(space, 'q', n);
			if (i + n == total)
				space[n - 1] = '\n';
			frame_commit(&f, n);
			i += n;
		}
		if (rounds == 0) {
			ok_int_eq(i, total, "real limit: all %zu bytes taken",
			    total);
			ok_int_eq(frame_next(&f, &line, &n), FRAME_OK,
			    "real limit: line of PROTO_MAX_LINE accepted");
			ok_int_eq(n, PROTO_MAX_LINE - 1, "real limit: length");
		} else {
			ok_int_eq(i, PROTO_MAX_LINE,
			    "real limit: space stops at the limit");
			ok_int_eq(frame_next(&f, &line, &n), FRAME_TOO_LONG,
			    "real limit: one byte more is TOO_LONG");
		}
		ok(f.cap <= PROTO_MAX_LINE, "real limit: cap %zu", f.cap);
		frame_fini(&f);
	}
}

static void
test_nul(void)
{
	struct frame f;
	struct got g;

	frame_init(&f, 64);
	frame_feed(&f, "{\"a\":\0}\nnext\n", 13);
	ok_int_eq(next(&f).st, FRAME_BAD, "nul: embedded NUL is BAD");
	g = next(&f);
	ok(g.st == FRAME_OK && strcmp(g.line, "next") == 0,
	    "nul: framing stays in step after a bad line");
	frame_fini(&f);
}

static void
test_bad_utf8(void)
{
	static const struct {
		const char *in;
		size_t len;
		const char *name;
	} cases[] = {
		{ "a\xc0\xaf\n", 4, "overlong /" },
		{ "\xe0\x80\xaf\n", 4, "overlong 3-byte" },
		{ "\xed\xa0\x80\n", 4, "surrogate U+D800" },
		{ "x\xe2\x82\n", 4, "truncated 3-byte sequence" },
		{ "\xf4\x90\x80\x80\n", 5, "past U+10FFFF" },
		{ "\x80\n", 2, "stray continuation" },
		{ "\xff\n", 2, "0xff" },
		{ "\xef\xbb\xbf\xe2\x82\xac\n", 7, NULL },	/* valid */
	};
	struct frame f;
	size_t i;

	frame_init(&f, 64);
	for (i = 0; i < sizeof cases / sizeof *cases; i++) {
		frame_feed(&f, cases[i].in, cases[i].len);
		if (cases[i].name != NULL)
			ok_int_eq(next(&f).st, FRAME_BAD, "utf8: %s is BAD",
			    cases[i].name);
		else
			ok_int_eq(next(&f).st, FRAME_OK, "utf8: valid is OK");
	}
	frame_fini(&f);
}

static void
test_empty_line(void)
{
	struct frame f;
	struct got g;

	frame_init(&f, 64);
	frame_feed(&f, "\n\r\na\n", 5);
	ok_int_eq(next(&f).st, FRAME_BAD, "empty: \\n is BAD");
	ok_int_eq(next(&f).st, FRAME_BAD, "empty: \\r\\n is BAD");
	g = next(&f);
	ok(g.st == FRAME_OK && strcmp(g.line, "a") == 0, "empty: then a line");
	frame_fini(&f);
}

static void
test_eof_mid_line(void)
{
	struct frame f;
	struct got g;

	frame_init(&f, 64);
	frame_feed(&f, "whole\npart", 10);
	frame_eof(&f);
	g = next(&f);
	ok(g.st == FRAME_OK && strcmp(g.line, "whole") == 0,
	    "eof mid-line: complete line first");
	ok_int_eq(next(&f).st, FRAME_TRUNCATED, "eof mid-line: TRUNCATED");
	ok_int_eq(next(&f).st, FRAME_TRUNCATED, "eof mid-line: again");
	frame_fini(&f);
}

static void
test_eof_after_line(void)
{
	struct frame f;
	struct got g;

	frame_init(&f, 64);
	ok_int_eq(next(&f).st, FRAME_MORE, "eof: nothing yet is MORE");
	frame_feed(&f, "last\n", 5);
	frame_eof(&f);
	g = next(&f);
	ok(g.st == FRAME_OK && strcmp(g.line, "last") == 0,
	    "eof after line: OK");
	ok_int_eq(next(&f).st, FRAME_MORE, "eof after line: then MORE");
	frame_fini(&f);

	frame_init(&f, 64);
	frame_eof(&f);
	ok_int_eq(next(&f).st, FRAME_MORE, "eof at once: MORE");
	frame_fini(&f);
}

/* frame_space never lets the line being received pass the limit. */
static void
test_space_limit(void)
{
	size_t n, total = 0, maxoff = 0;
	struct frame f;
	char *space;
	unsigned seed = 1;
	bool over = false;

	frame_init(&f, 100);
	frame_feed(&f, "0123456789012345678901234567890123456789", 30);
	space = frame_space(&f, &n);
	ok(space != NULL && n <= 70, "space: at most 70 after 30 (%zu)", n);
	for (;;) {
		space = frame_space(&f, &n);
		if (n == 0)
			break;
		if (n > maxoff)
			maxoff = n;
		n = 1 + (size_t)rand_r(&seed) % n;
		memset(space, 'a', n);
		frame_commit(&f, n);
		total += n;
		if (total > 70)
			over = true;
	}
	ok(!over && total == 70, "space: exactly 70 more taken (%zu)", total);
	ok(maxoff <= 70, "space: never offered more than 70 (%zu)", maxoff);
	ok(frame_space(&f, &n) == NULL && n == 0, "space: then zero");
	ok_int_eq(next(&f).st, FRAME_TOO_LONG, "space: which is TOO_LONG");
	frame_fini(&f);
}

/*
 * Complete lines still held do not count against the line being read:
 * frame_space must not signal "too long" for them.
 */
static void
test_space_with_pending(void)
{
	char buf[150], out[512] = "";
	struct frame f;
	size_t n, i;
	char *space;

	for (i = 0; i < sizeof buf; i += 5)
		memcpy(buf + i, "abcd\n", 5);
	frame_init(&f, 100);
	ok_int_eq(frame_feed(&f, buf, sizeof buf), 0,
	    "pending: 150 bytes of short lines accepted with limit 100");
	space = frame_space(&f, &n);
	ok(space != NULL && n > 0 && n <= 100,
	    "pending: room offered while lines wait (%zu)", n);
	memcpy(space, "tail\n", 5);
	frame_commit(&f, 5);
	ok_int_eq(drain(&f, out, sizeof out), 31, "pending: all 31 lines");
	ok_str_has(out, "abcd|tail|", "pending: in order");
	frame_fini(&f);
}

/* 100 MB of short lines, fed in 4 KiB pieces: the buffer stays small. */
static void
test_memory_bounded(void)
{
	static char chunk[4096];
	size_t i, fed = 0, maxcap = 0, lines = 0, len;
	enum frame_status st;
	struct frame f;
	char *line;
	int r = 0;
	bool good = true;

	/* 4096 is not a multiple of the line length, so lines straddle. */
	for (i = 0; i < sizeof chunk; i++)
		chunk[i] = (i + 1) % 23 == 0 ? '\n' : 'a' + (char)(i % 23);
	frame_init(&f, PROTO_MAX_LINE);
	while (fed < (size_t)100 << 20) {
		r |= frame_feed(&f, chunk, sizeof chunk);
		fed += sizeof chunk;
		while ((st = frame_next(&f, &line, &len)) == FRAME_OK) {
			lines++;
			good = good && len >= 1 && len <= 24;
		}
		good = good && st == FRAME_MORE;
		if (f.cap > maxcap)
			maxcap = f.cap;
	}
	ok_int_eq(r, 0, "100 MB: every feed accepted");
	ok(good, "100 MB: every line well formed");
	ok_int_eq(lines, fed / sizeof chunk * 178, "100 MB: every line");
	ok(maxcap <= 2 * sizeof chunk, "100 MB: cap stayed at %zu", maxcap);
	frame_fini(&f);
}

/* The same through frame_space: cap never exceeds the first allocation. */
static void
test_memory_bounded_space(void)
{
	size_t fed = 0, maxcap = 0, lines = 0, len, n, i, pos = 0;
	struct frame f;
	char *space, *line;

	frame_init(&f, PROTO_MAX_LINE);
	while (fed < (size_t)20 << 20) {
		space = frame_space(&f, &n);
		for (i = 0; i < n; i++, pos++)
			space[i] = pos % 31 == 30 ? '\n' : 'k';
		frame_commit(&f, n);
		fed += n;
		while (frame_next(&f, &line, &len) == FRAME_OK)
			lines++;
		if (f.cap > maxcap)
			maxcap = f.cap;
	}
	ok(maxcap <= 8192, "space 20 MB: cap stayed at %zu", maxcap);
	ok(lines >= fed / 31 - 1, "space 20 MB: %zu lines", lines);
	frame_fini(&f);
}

/* A big line's buffer is given back once it has been consumed. */
static void
test_big_line_released(void)
{
	char *big, *line;
	struct frame f;
	size_t len, bigcap;

	big = malloc(200000);
	memset(big, 'b', 200000);
	big[199999] = '\n';
	frame_init(&f, PROTO_MAX_LINE);
	frame_feed(&f, big, 200000);
	bigcap = f.cap;
	ok_int_eq(frame_next(&f, &line, &len), FRAME_OK, "release: big line");
	ok_int_eq(len, 199999, "release: its length");
	frame_feed(&f, "s\n", 2);
	ok(bigcap >= 200000 && f.cap < 65536,
	    "release: cap %zu back to %zu", bigcap, f.cap);
	ok_int_eq(frame_next(&f, &line, &len), FRAME_OK, "release: small");
	ok_str_eq(line, "s", "release: small line intact");
	frame_fini(&f);
	free(big);
}

/*
 * Line i of the socketpair test: "{"i":i,"pad":"xxxx"}" with a length
 * chosen from i, a few lines close to 200 KiB.  Returns its length.
 */
static size_t
line_for(unsigned i, size_t padlen, char *buf, size_t bufsz)
{
	int n;

	n = snprintf(buf, bufsz, "{\"i\":%u,\"pad\":\"", i);
	if (n < 0 || (size_t)n + padlen + 3 > bufsz)
		return 0;
	memset(buf + n, 'p', padlen);
	memcpy(buf + n + padlen, "\"}\n", 3);
	return (size_t)n + padlen + 3;
}

/* The child: writes nlines lines in pieces of random size, then exits. */
static void
writer(int fd, unsigned seed, size_t nlines)
{
	static char buf[300000];
	size_t len, off, piece;
	unsigned i, s = seed;
	ssize_t w;

	for (i = 0; i < nlines; i++) {
		len = line_for(i, i % 97 == 0 ? 200000 : (size_t)(i * 7 % 500),
		    buf, sizeof buf);
		for (off = 0; off < len; off += (size_t)w) {
			piece = 1 + (size_t)rand_r(&s) % 4096;
			if (rand_r(&s) % 4 == 0)
				piece = 1 + piece % 7;
			if (piece > len - off)
				piece = len - off;
			if ((w = write(fd, buf + off, piece)) < 0) {
				if (errno == EINTR) {
					w = 0;
					continue;
				}
				_exit(1);
			}
		}
	}
	close(fd);
	_exit(0);
}

/* A real socketpair, read with frame_space, read(2) and frame_commit. */
static void
test_socketpair(void)
{
	static char want[300000];
	const size_t nlines = 2000;
	size_t n, len, wlen, got = 0, maxcap = 0;
	enum frame_status st = FRAME_MORE;
	struct frame f;
	int sv[2], status;
	char *space, *line;
	bool same = true;
	ssize_t r;
	pid_t pid;

	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) {
		ok(0, "socketpair: %s", strerror(errno));
		return;
	}
	fflush(stdout);
	if ((pid = fork()) == 0) {
		close(sv[0]);
		writer(sv[1], 42, nlines);
	}
	close(sv[1]);
	frame_init(&f, PROTO_MAX_LINE);
	for (;;) {
		space = frame_space(&f, &n);
		if (n == 0)
			break;
		r = read(sv[0], space, n);
		if (r < 0 && errno == EINTR)
			r = 0;
		if (r < 0)
			break;
		frame_commit(&f, (size_t)r);
		if (r == 0)
			frame_eof(&f);
		while ((st = frame_next(&f, &line, &len)) == FRAME_OK) {
			wlen = line_for((unsigned)got, got % 97 == 0 ? 200000 :
			    got * 7 % 500, want, sizeof want);
			if (wlen != len + 1 || memcmp(line, want, len) != 0)
				same = false;
			got++;
		}
		if (f.cap > maxcap)
			maxcap = f.cap;
		if (r == 0 || st != FRAME_MORE)
			break;
	}
	close(sv[0]);
	waitpid(pid, &status, 0);
	ok(WIFEXITED(status) && WEXITSTATUS(status) == 0,
	    "socketpair: writer finished");
	ok_int_eq(st, FRAME_MORE, "socketpair: clean end of input");
	ok_int_eq(got, nlines, "socketpair: every line arrived");
	ok(same, "socketpair: every line intact and in order");
	ok(maxcap <= PROTO_MAX_LINE, "socketpair: cap %zu within the limit",
	    maxcap);
	frame_fini(&f);
}

int
main(void)
{
	tap_plan_lazy();
	test_byte_at_a_time();
	test_many_in_one_feed();
	test_split_across_feeds();
	test_crlf();
	test_exact_limit();
	test_over_limit();
	test_cap_after_partial();
	test_over_limit_after_lines();
	test_real_limit();
	test_nul();
	test_bad_utf8();
	test_empty_line();
	test_eof_mid_line();
	test_eof_after_line();
	test_space_limit();
	test_space_with_pending();
	test_memory_bounded();
	test_memory_bounded_space();
	test_big_line_released();
	test_socketpair();
	return tap_done();
}
