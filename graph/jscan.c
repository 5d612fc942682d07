/* SPDX-License-Identifier: MIT */
/*
 * jscan.c: a strict JSON scanner over a byte range, for hostile headers
 * (safetensors-header.c builds its schema on it).
 *
 * It reads JSON exactly as RFC 8259 and serde_json do, so that we refuse
 * what the safetensors reference reader refuses: white space is only
 * space, tab, CR and LF; strings hold no control bytes and only valid
 * UTF-8 (no overlong forms, no surrogates, nothing above U+10FFFF, checked
 * against RFC 3629's table); a \u escape may not leave a surrogate unpaired
 * and may not be \u0000, which C would read as the string's end; numbers
 * follow JSON's grammar (no leading zeros, '+', or bare '.'); containers
 * nest at most JSCAN_MAX_DEPTH deep, serde_json's limit.  Outside strings
 * JSON is ASCII, so this validates the UTF-8 of a whole text.  Nothing is
 * built: callers read the structure they expect token by token and skip
 * the rest with jscan_value, so a header costs one pass and no tree.
 * Errors are one line, the first one wins, and positions are offsets from
 * the start of the file being read.
 */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "graph-int.h"

/* How much of s to show: at most JSCAN_SHOW bytes, cut between characters. */
int
jscan_show(const char *s)
{
	size_t n = strlen(s);

	if (n <= JSCAN_SHOW)
		return (int)n;
	n = JSCAN_SHOW;
	while (n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80)
		n--;
	return (int)n;
}

/* The first cause wins; returns -1 so that callers can return it. */
int
jscan_fail(struct jscan *l, const char *fmt, ...)
{
	va_list ap;

	if (l->cause == NULL) {
		va_start(ap, fmt);
		l->cause = xvasprintf(fmt, ap);
		va_end(ap);
	}
	return -1;
}

size_t
jscan_pos(const struct jscan *l)
{
	return (size_t)(l->p - l->file);
}

int
jscan_syntax(struct jscan *l, const char *what)
{
	if (l->p == l->end)
		return jscan_fail(l, "header is not valid JSON: it ends inside "
		    "the object (at byte %zu); is the header length right?",
		    jscan_pos(l));
	return jscan_fail(l, "header is not valid JSON: %s at byte %zu", what,
	    jscan_pos(l));
}

/* JSON white space: exactly these four. */
void
jscan_ws(struct jscan *l)
{
	while (l->p < l->end && (*l->p == ' ' || *l->p == '\n' ||
	    *l->p == '\t' || *l->p == '\r'))
		l->p++;
}

/* Skips white space, then takes c if it is next. */
bool
jscan_take(struct jscan *l, uint8_t c)
{
	jscan_ws(l);
	if (l->p < l->end && *l->p == c) {
		l->p++;
		return true;
	}
	return false;
}

/*
 * The length of the valid UTF-8 sequence at p, whose lead byte is not
 * ASCII, or 0 with *why set.  The ranges are RFC 3629's: the second byte's
 * range excludes overlong forms (after E0, F0), surrogates (after ED) and
 * code points above U+10FFFF (after F4).
 */
static size_t
utf8_len(const uint8_t *p, const uint8_t *end, const char **why)
{
	unsigned c = p[0], lo = 0x80, hi = 0xbf;
	size_t n, i;

	if (c < 0xc0) {
		*why = "a continuation byte without a lead byte";
		return 0;
	}
	if (c < 0xc2) {
		*why = "an overlong encoding";
		return 0;
	}
	if (c < 0xe0)
		n = 2;
	else if (c < 0xf0) {
		n = 3;
		lo = c == 0xe0 ? 0xa0 : 0x80;
		hi = c == 0xed ? 0x9f : 0xbf;
	} else if (c < 0xf5) {
		n = 4;
		lo = c == 0xf0 ? 0x90 : 0x80;
		hi = c == 0xf4 ? 0x8f : 0xbf;
	} else {
		*why = c < 0xf8 ? "a code point above U+10FFFF" :
		    "a byte that never occurs in UTF-8";
		return 0;
	}
	if ((size_t)(end - p) < n || p[1] < 0x80 || p[1] > 0xbf) {
		*why = "a truncated sequence";
		return 0;
	}
	if (p[1] < lo) {
		*why = "an overlong encoding";
		return 0;
	}
	if (p[1] > hi) {
		*why = c == 0xed ? "a surrogate, U+D800 to U+DFFF," :
		    "a code point above U+10FFFF";
		return 0;
	}
	for (i = 2; i < n; i++) {
		if (p[i] < 0x80 || p[i] > 0xbf) {
			*why = "a truncated sequence";
			return 0;
		}
	}
	return n;
}

/* Whether s[0, n) is UTF-8 without NUL bytes (names read from pickles). */
bool
jscan_utf8_ok(const char *s, size_t n, const char **why)
{
	const uint8_t *p = (const uint8_t *)s, *end = p + n;
	size_t k;

	while (p < end) {
		if (*p == 0) {
			*why = "a NUL byte";
			return false;
		}
		if (*p < 0x80) {
			p++;
			continue;
		}
		if ((k = utf8_len(p, end, why)) == 0)
			return false;
		p += k;
	}
	return true;
}

static int
hex4(const uint8_t *p, const uint8_t *end, unsigned *out)
{
	unsigned v = 0;
	int i;

	if (end - p < 4)
		return -1;
	for (i = 0; i < 4; i++) {
		v <<= 4;
		if (p[i] >= '0' && p[i] <= '9')
			v |= p[i] - '0';
		else if (p[i] >= 'a' && p[i] <= 'f')
			v |= p[i] - 'a' + 10;
		else if (p[i] >= 'A' && p[i] <= 'F')
			v |= p[i] - 'A' + 10;
		else
			return -1;
	}
	*out = v;
	return 0;
}

static void
put_utf8(struct xbuf *b, unsigned cp)
{
	uint8_t u[4];
	size_t n;

	if (cp < 0x80) {
		u[0] = (uint8_t)cp;
		n = 1;
	} else if (cp < 0x800) {
		u[0] = (uint8_t)(0xc0 | cp >> 6);
		u[1] = (uint8_t)(0x80 | (cp & 0x3f));
		n = 2;
	} else if (cp < 0x10000) {
		u[0] = (uint8_t)(0xe0 | cp >> 12);
		u[1] = (uint8_t)(0x80 | (cp >> 6 & 0x3f));
		u[2] = (uint8_t)(0x80 | (cp & 0x3f));
		n = 3;
	} else {
		u[0] = (uint8_t)(0xf0 | cp >> 18);
		u[1] = (uint8_t)(0x80 | (cp >> 12 & 0x3f));
		u[2] = (uint8_t)(0x80 | (cp >> 6 & 0x3f));
		u[3] = (uint8_t)(0x80 | (cp & 0x3f));
		n = 4;
	}
	xbuf_add(b, u, n);
}

/* One escape after a backslash at l->p; appends what it stands for. */
static int
jscan_escape(struct jscan *l, const char *what)
{
	static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
	const char *k;
	unsigned cp, lo;

	l->p++;
	if (l->p == l->end)
		return jscan_syntax(l, "");
	if (*l->p != 'u') {
		if ((k = memchr(from, *l->p, sizeof from - 1)) == NULL)
			return jscan_syntax(l, "an invalid escape");
		xbuf_add(&l->s, &to[k - from], 1);
		l->p++;
		return 0;
	}
	if (hex4(l->p + 1, l->end, &cp) != 0)
		return jscan_syntax(l, "an invalid \\u escape");
	if (cp >= 0xdc00 && cp <= 0xdfff)
		return jscan_fail(l, "header is not valid UTF-8: %s escape "
		    "\\u%04x at byte %zu is a lone low surrogate", what, cp,
		    jscan_pos(l) - 1);
	if (cp >= 0xd800 && cp <= 0xdbff) {
		if (l->end - l->p < 11 || l->p[5] != '\\' || l->p[6] != 'u' ||
		    hex4(l->p + 7, l->end, &lo) != 0 || lo < 0xdc00 ||
		    lo > 0xdfff)
			return jscan_fail(l, "header is not valid UTF-8: %s "
			    "escape \\u%04x at byte %zu is a high surrogate "
			    "without a low one", what, cp, jscan_pos(l) - 1);
		cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
		l->p += 6;
	}
	if (cp == 0)
		return jscan_fail(l, "%s \"%.*s\\u0000...\" contains a NUL "
		    "character (\\u0000 at byte %zu), which C would read as "
		    "its end", what, jscan_show(l->s.data), l->s.data,
		    jscan_pos(l) - 1);
	put_utf8(&l->s, cp);
	l->p += 5;
	return 0;
}

/*
 * A JSON string at l->p (after white space), decoded into l->s.  what
 * names it in messages ("tensor name", "string").
 */
int
jscan_string(struct jscan *l, const char *what)
{
	const uint8_t *run;
	const char *why;
	size_t n;

	l->s.len = 0;
	xbuf_add(&l->s, "", 0);
	jscan_ws(l);
	if (l->p == l->end || *l->p != '"')
		return jscan_syntax(l, "expected a string");
	l->p++;
	for (;;) {
		/* The common case: a run of plain ASCII, copied at once. */
		for (run = l->p; l->p < l->end && *l->p >= 0x20 &&
		    *l->p < 0x80 && *l->p != '"' && *l->p != '\\'; l->p++)
			;
		xbuf_add(&l->s, run, (size_t)(l->p - run));
		if (l->p == l->end)
			return jscan_syntax(l, "");
		if (*l->p == '"')
			break;
		if (*l->p == '\\') {
			if (jscan_escape(l, what) != 0)
				return -1;
		} else if (*l->p < 0x20) {
			return jscan_fail(l, "header is not valid JSON: "
			    "control byte 0x%02x in a %s at byte %zu", *l->p,
			    what, jscan_pos(l));
		} else if ((n = utf8_len(l->p, l->end, &why)) == 0) {
			return jscan_fail(l, "header is not valid UTF-8: %s "
			    "(byte 0x%02x) in a %s at byte %zu", why, *l->p,
			    what, jscan_pos(l));
		} else {
			xbuf_add(&l->s, l->p, n);
			l->p += n;
		}
	}
	l->p++;
	return 0;
}

/* Is the last string read exactly lit? */
bool
jscan_is(const struct jscan *l, const char *lit)
{
	return l->s.len == strlen(lit) && memcmp(l->s.data, lit, l->s.len) ==
	    0;
}

/*
 * A JSON number at l->p.  *u is set, and *is_uint true, when it is a
 * non-negative integer literal that fits in 64 bits.
 */
int
jscan_number(struct jscan *l, bool *is_uint, uint64_t *u)
{
	const uint8_t *p = l->p;
	bool neg = false, frac = false, big = false;
	uint64_t v = 0;

	if (p < l->end && *p == '-') {
		neg = true;
		p++;
	}
	if (p == l->end || *p < '0' || *p > '9') {
		l->p = p;
		return jscan_syntax(l, "a malformed number");
	}
	if (*p == '0')
		p++;
	else {
		for (; p < l->end && *p >= '0' && *p <= '9'; p++) {
			if (v > (UINT64_MAX - (*p - '0')) / 10)
				big = true;
			v = v * 10 + (*p - '0');
		}
	}
	if (p < l->end && *p == '.') {
		frac = true;
		if (++p == l->end || *p < '0' || *p > '9') {
			l->p = p;
			return jscan_syntax(l, "a malformed number");
		}
		while (p < l->end && *p >= '0' && *p <= '9')
			p++;
	}
	if (p < l->end && (*p == 'e' || *p == 'E')) {
		frac = true;
		if (++p < l->end && (*p == '+' || *p == '-'))
			p++;
		if (p == l->end || *p < '0' || *p > '9') {
			l->p = p;
			return jscan_syntax(l, "a malformed number");
		}
		while (p < l->end && *p >= '0' && *p <= '9')
			p++;
	}
	l->p = p;
	*is_uint = !neg && !frac && !big;
	*u = v;
	return 0;
}

static int
jscan_literal(struct jscan *l, const char *lit)
{
	size_t n = strlen(lit);

	if ((size_t)(l->end - l->p) < n || memcmp(l->p, lit, n) != 0)
		return jscan_syntax(l, "an unexpected character");
	l->p += n;
	return 0;
}

/* Any JSON value, checked and skipped; depth is its nesting level. */
int
jscan_value(struct jscan *l, int depth)
{
	bool u;
	uint64_t v;

	jscan_ws(l);
	if (l->p == l->end)
		return jscan_syntax(l, "");
	switch (*l->p) {
	case '"':
		return jscan_string(l, "string");
	case 't':
		return jscan_literal(l, "true");
	case 'f':
		return jscan_literal(l, "false");
	case 'n':
		return jscan_literal(l, "null");
	case '[':
	case '{':
		break;
	default:
		if (*l->p == '-' || (*l->p >= '0' && *l->p <= '9'))
			return jscan_number(l, &u, &v);
		return jscan_syntax(l, "an unexpected character");
	}
	if (depth >= JSCAN_MAX_DEPTH)
		return jscan_fail(l, "header nests deeper than %d levels (at "
		    "byte %zu)", JSCAN_MAX_DEPTH, jscan_pos(l));
	if (*l->p++ == '[') {
		if (jscan_take(l, ']'))
			return 0;
		do {
			if (jscan_value(l, depth + 1) != 0)
				return -1;
		} while (jscan_take(l, ','));
		return jscan_take(l, ']') ? 0 : jscan_syntax(l,
		    "expected ',' or ']'");
	}
	if (jscan_take(l, '}'))
		return 0;
	do {
		if (jscan_string(l, "string") != 0)
			return -1;
		if (!jscan_take(l, ':'))
			return jscan_syntax(l, "expected ':'");
		if (jscan_value(l, depth + 1) != 0)
			return -1;
	} while (jscan_take(l, ','));
	return jscan_take(l, '}') ? 0 : jscan_syntax(l, "expected ',' or '}'");
}

/* What kind of JSON value starts at l->p, for messages. */
const char *
jscan_kind(struct jscan *l)
{
	jscan_ws(l);
	if (l->p == l->end)
		return "nothing";
	switch (*l->p) {
	case '"':
		return "a string";
	case '{':
		return "an object";
	case '[':
		return "an array";
	case 't':
	case 'f':
		return "a boolean";
	case 'n':
		return "null";
	default:
		return "a number";
	}
}

