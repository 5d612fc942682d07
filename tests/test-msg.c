/* SPDX-License-Identifier: MIT */
/*
 * test-msg.c: unit tests for message parsing and building (proto/msg.c).
 *
 * The parser is the daemon's first contact with untrusted input, so most
 * checks are rejections: anything but exactly one object per line, too
 * much nesting, NUL in any form, invalid UTF-8.  The typed getters are
 * tested at the edges of what a double holds exactly, the envelope check
 * for each way a request can be wrong, and the text helpers on tables of
 * valid and invalid UTF-8.  Each test builds and frees its own objects,
 * so a leak shows up under ASan.
 */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "proto.h"
#include "tap.h"

static bool parses(const char *);
static const char *parse_error(const char *);
static char *nested(int);
static void test_parse_accepts(void);
static void test_parse_rejects(void);
static void test_parse_depth(void);
static void test_print_one_line(void);
static void test_round_trip(void);
static void test_print_big_ints(void);
static void test_builders(void);
static void test_get_u64(void);
static void test_get_i64(void);
static void test_get_str_bool(void);
static void test_check_request(void);
static void test_error_sanitized(void);
static void test_utf8_table(void);
static void test_sanitize(void);
static void test_escape(void);
static void test_name_valid(void);

/* True when s parses; frees the result. */
static bool
parses(const char *s)
{
	const char *err = "unset";
	cJSON *o;

	o = msg_parse(s, strlen(s), &err);
	cJSON_Delete(o);
	return o != NULL && err == NULL;
}

/* The error message for s, or NULL when it parses. */
static const char *
parse_error(const char *s)
{
	const char *err = NULL;
	cJSON *o;

	if ((o = msg_parse(s, strlen(s), &err)) != NULL) {
		cJSON_Delete(o);
		return NULL;
	}
	return err != NULL ? err : "(no message)";
}

/* {"a":{"a":...{}...}} with depth objects in all; caller frees. */
static char *
nested(int depth)
{
	char *s;
	size_t i, o = 0;

	s = malloc((size_t)depth * 6 + 1);
	for (i = 0; i < (size_t)depth - 1; i++) {
		memcpy(s + o, "{\"a\":", 5);
		o += 5;
	}
	s[o++] = '{';
	for (i = 0; i < (size_t)depth; i++)
		s[o++] = '}';
	s[o] = '\0';
	return s;
}

static void
test_parse_accepts(void)
{
	ok(parses("{}"), "parse: empty object");
	ok(parses("{\"v\":2,\"id\":7,\"op\":\"status\",\"job\":12}"),
	    "parse: a request");
	ok(parses("  {\"a\":[1,2,{\"b\":null}]} \t\r\n"),
	    "parse: whitespace around the value");
	ok(parses("{\"s\":\"\\u00e9\\ud83d\\ude00 \xc3\xa9\"}"),
	    "parse: escapes and raw UTF-8");
	ok(parses("{\"a\":\"\\\\u0000\"}"),
	    "parse: an escaped backslash before u0000 is not NUL");
}

static void
test_parse_rejects(void)
{
	const char two[] = "{\"a\":1}\n";
	const char *err;

	ok_str_has(parse_error("[1,2]"), "object", "parse: array rejected");
	ok_str_has(parse_error("42"), "object", "parse: number rejected");
	ok_str_has(parse_error("\"s\""), "object", "parse: string rejected");
	ok_str_has(parse_error("{\"a\":1}{\"b\":2}"), "after",
	    "parse: two values on a line");
	ok_str_has(parse_error("{\"a\":1} x"), "after",
	    "parse: garbage after the value");
	ok_str_has(parse_error("{\"a\":1"), "invalid JSON",
	    "parse: unterminated object");
	ok_str_has(parse_error("{a:1}"), "invalid JSON",
	    "parse: unquoted key");
	ok_str_has(parse_error("not json"), "invalid JSON", "parse: garbage");
	ok_str_has(parse_error(""), "empty", "parse: empty");
	ok_str_has(parse_error("{\"a\":\"\xc0\xaf\"}"), "UTF-8",
	    "parse: invalid UTF-8 in a string");
	ok_str_has(parse_error("{\"op\":\"list\\u0000x\"}"), "u0000",
	    "parse: \\u0000 in a value");
	ok_str_has(parse_error("{\"o\\u0000p\":1}"), "u0000",
	    "parse: \\u0000 in a key");
	ok_str_has(parse_error("\xef\xbb\xbf{}"), "byte order",
	    "parse: byte order mark");
	ok_str_has(parse_error("{\"s\":\"\\ud800\"}"), "invalid JSON",
	    "parse: lone surrogate escape");
	/* Length-bounded: the text past len is never looked at. */
	ok(msg_parse("{\"a\":1}", 5, &err) == NULL && err != NULL,
	    "parse: length bounds the input");
	ok(msg_parse("{\"a\":1}\0{", 8, &err) == NULL,
	    "parse: NUL inside the length");
	cJSON_Delete(msg_parse(two, sizeof two - 1, &err));
	ok(err == NULL, "parse: a trailing newline is whitespace");
	ok(msg_parse("[]", 2, NULL) == NULL, "parse: err may be NULL");
}

static void
test_parse_depth(void)
{
	char *s;
	char deep_array[64];

	s = nested(PROTO_MAX_DEPTH);
	ok(parses(s), "depth: %d levels accepted", PROTO_MAX_DEPTH);
	free(s);
	s = nested(PROTO_MAX_DEPTH + 1);
	ok_str_has(parse_error(s), "nesting", "depth: %d levels rejected",
	    PROTO_MAX_DEPTH + 1);
	free(s);
	s = nested(5000);
	ok(parse_error(s) != NULL, "depth: 5000 levels rejected");
	free(s);
	/* Arrays count as much as objects. */
	snprintf(deep_array, sizeof deep_array, "{\"a\":%.*s%.*s}",
	    PROTO_MAX_DEPTH, "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
	    PROTO_MAX_DEPTH, "]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]");
	ok_str_has(parse_error(deep_array), "nesting",
	    "depth: arrays count");
}

static void
test_print_one_line(void)
{
	cJSON *o, *a;
	size_t len = 0;
	char *s;

	o = msg_reply(3);
	cJSON_AddStringToObject(o, "text", "two\nlines\r\nand a \x01 tab\t");
	a = cJSON_AddArrayToObject(o, "list");
	cJSON_AddItemToArray(a, cJSON_CreateString("x\ny"));
	s = msg_print(o, &len);
	ok(s != NULL, "print: printed");
	ok(s != NULL && len == strlen(s), "print: length matches");
	ok(s != NULL && len > 0 && s[len - 1] == '\n', "print: ends in \\n");
	ok(s != NULL && memchr(s, '\n', len - 1) == NULL,
	    "print: no other newline");
	ok_str_eq(s, "{\"id\":3,\"ok\":true,\"text\":\"two\\nlines\\r\\nand "
	    "a \\u0001 tab\\t\",\"list\":[\"x\\ny\"]}\n", "print: exact text");
	free(s);
	/* Invalid UTF-8 never reaches the wire. */
	cJSON_AddStringToObject(o, "bad", "\xff");
	ok(msg_print(o, NULL) == NULL, "print: invalid UTF-8 refused");
	cJSON_Delete(o);
}

static void
test_round_trip(void)
{
	const char *op = NULL, *err = NULL;
	uint64_t id = 0, job = 0;
	cJSON *o, *back;
	size_t len;
	char *s;
	int64_t pri = 0;
	bool force = false;

	o = msg_request(9007199254740992ull, "submit");
	cJSON_AddNumberToObject(o, "job", 12);
	cJSON_AddNumberToObject(o, "priority", -5);
	cJSON_AddTrueToObject(o, "force");
	cJSON_AddStringToObject(o, "name", "caf\xc3\xa9 \"merge\"\n");
	s = msg_print(o, &len);
	back = msg_parse(s, len, &err);
	ok(back != NULL, "round trip: parses back (%s)", err ? err : "");
	ok(cJSON_Compare(o, back, true), "round trip: same object");
	ok_int_eq(msg_check_request(back, &id, &op, NULL, NULL), 0,
	    "round trip: envelope valid");
	ok(id == 9007199254740992ull, "round trip: id 2^53 exact");
	ok_str_eq(op, "submit", "round trip: op");
	ok(msg_get_u64(back, "job", &job) && job == 12, "round trip: job");
	ok(msg_get_i64(back, "priority", &pri) && pri == -5,
	    "round trip: priority");
	ok(msg_get_bool(back, "force", &force) && force, "round trip: force");
	msg_get_str(back, "name", &op);
	ok_str_eq(op, "caf\xc3\xa9 \"merge\"\n", "round trip: name");
	free(s);
	cJSON_Delete(o);
	cJSON_Delete(back);
}

/* cJSON alone prints integers past 10^15 with 15 digits; msg_print not. */
static void
test_print_big_ints(void)
{
	cJSON *o, *a;
	uint64_t u = 0;
	int64_t i = 0;
	char *s;

	o = msg_reply(1234567890123457ull);
	cJSON_AddNumberToObject(o, "seed", 9007199254740991.0);
	cJSON_AddNumberToObject(o, "neg", -1234567890123457.0);
	cJSON_AddNumberToObject(o, "big", 1152921504606846976.0);
	cJSON_AddNumberToObject(o, "half", 0.5);
	a = cJSON_AddArrayToObject(o, "list");
	cJSON_AddItemToArray(a, cJSON_CreateNumber(4503599627370497.0));
	s = msg_print(o, NULL);
	ok_str_eq(s, "{\"id\":1234567890123457,\"ok\":true,"
	    "\"seed\":9007199254740991,\"neg\":-1234567890123457,"
	    "\"big\":1152921504606846976,\"half\":0.5,"
	    "\"list\":[4503599627370497]}\n", "big ints: printed exactly");
	ok(cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(o, "seed")),
	    "big ints: the caller's object is unchanged");
	cJSON_Delete(o);
	o = msg_parse(s, strlen(s), NULL);
	ok(msg_get_u64(o, "seed", &u) && u == 9007199254740991ull,
	    "big ints: seed reads back exactly");
	ok(msg_get_i64(o, "neg", &i) && i == -1234567890123457ll,
	    "big ints: negative reads back exactly");
	cJSON_Delete(o);
	free(s);
}

static void
test_builders(void)
{
	cJSON *o;
	char *s;

	o = msg_request(1, "hello");
	s = msg_print(o, NULL);
	ok_str_eq(s, "{\"v\":2,\"id\":1,\"op\":\"hello\"}\n", "build: request");
	free(s);
	cJSON_Delete(o);
	o = msg_reply(2);
	s = msg_print(o, NULL);
	ok_str_eq(s, "{\"id\":2,\"ok\":true}\n", "build: reply");
	free(s);
	cJSON_Delete(o);
	o = msg_error(3, PROTO_E_NOT_FOUND, "no job 12");
	s = msg_print(o, NULL);
	ok_str_eq(s, "{\"id\":3,\"ok\":false,\"error\":{\"code\":\"not_found\","
	    "\"msg\":\"no job 12\"}}\n", "build: error");
	free(s);
	cJSON_Delete(o);
	o = msg_event(4, "progress");
	s = msg_print(o, NULL);
	ok_str_eq(s, "{\"id\":4,\"event\":\"progress\"}\n", "build: event");
	free(s);
	cJSON_Delete(o);
}

static void
test_get_u64(void)
{
	static const struct {
		const char *json;
		bool good;
		uint64_t want;
	} cases[] = {
		{ "{\"n\":0}", true, 0 },
		{ "{\"n\":-0}", true, 0 },
		{ "{\"n\":42}", true, 42 },
		{ "{\"n\":4.2e1}", true, 42 },
		{ "{\"n\":9007199254740992}", true, 9007199254740992ull },
		{ "{\"n\":9007199254740994}", false, 0 },
		{ "{\"n\":1152921504606846976}", false, 0 },	/* 2^60 */
		{ "{\"n\":1e400}", false, 0 },
		{ "{\"n\":-1}", false, 0 },
		{ "{\"n\":1.5}", false, 0 },
		{ "{\"n\":\"1\"}", false, 0 },
		{ "{\"n\":true}", false, 0 },
		{ "{\"n\":null}", false, 0 },
		{ "{\"n\":[1]}", false, 0 },
		{ "{\"N\":1}", false, 0 },	/* case-sensitive */
		{ "{}", false, 0 },
	};
	uint64_t v;
	size_t i;
	cJSON *o;
	bool got;

	for (i = 0; i < sizeof cases / sizeof *cases; i++) {
		o = msg_parse(cases[i].json, strlen(cases[i].json), NULL);
		v = 12345;
		got = msg_get_u64(o, "n", &v);
		ok(got == cases[i].good &&
		    v == (cases[i].good ? cases[i].want : 12345),
		    "u64: %s %s", cases[i].json,
		    cases[i].good ? "accepted" : "rejected, untouched");
		cJSON_Delete(o);
	}
	ok(!msg_get_u64(NULL, "n", &v), "u64: NULL object");
}

static void
test_get_i64(void)
{
	static const struct {
		const char *json;
		bool good;
		int64_t want;
	} cases[] = {
		{ "{\"n\":-1}", true, -1 },
		{ "{\"n\":-9007199254740992}", true, -9007199254740992ll },
		{ "{\"n\":9007199254740992}", true, 9007199254740992ll },
		{ "{\"n\":-9007199254740994}", false, 0 },
		{ "{\"n\":-0.5}", false, 0 },
		{ "{\"n\":\"-1\"}", false, 0 },
	};
	int64_t v;
	size_t i;
	cJSON *o;

	for (i = 0; i < sizeof cases / sizeof *cases; i++) {
		o = msg_parse(cases[i].json, strlen(cases[i].json), NULL);
		v = 0;
		ok(msg_get_i64(o, "n", &v) == cases[i].good &&
		    v == cases[i].want, "i64: %s", cases[i].json);
		cJSON_Delete(o);
	}
}

static void
test_get_str_bool(void)
{
	const char *j = "{\"s\":\"x\",\"n\":1,\"t\":true,\"f\":false,"
	    "\"z\":null,\"S\":\"upper\"}";
	const char *s = "untouched";
	bool b = false;
	cJSON *o;

	o = msg_parse(j, strlen(j), NULL);
	ok(msg_get_str(o, "s", &s) && strcmp(s, "x") == 0, "str: string");
	s = "untouched";
	ok(!msg_get_str(o, "n", &s) && strcmp(s, "untouched") == 0,
	    "str: number rejected");
	ok(!msg_get_str(o, "z", &s), "str: null rejected");
	ok(!msg_get_str(o, "missing", &s), "str: absent");
	ok(msg_get_str(o, "S", &s) && strcmp(s, "upper") == 0,
	    "str: case-sensitive");
	ok(msg_get_bool(o, "t", &b) && b, "bool: true");
	ok(msg_get_bool(o, "f", &b) && !b, "bool: false");
	ok(!msg_get_bool(o, "n", &b), "bool: 1 is not a bool");
	ok(!msg_get_bool(o, "s", &b), "bool: string is not a bool");
	cJSON_Delete(o);
	o = cJSON_CreateArray();
	ok(!msg_get_str(o, "s", &s), "str: array is not an object");
	cJSON_Delete(o);
}

static void
test_check_request(void)
{
	static const struct {
		const char *json;
		int ret;
		const char *code;
		uint64_t id;
	} cases[] = {
		{ "{\"v\":2,\"id\":5,\"op\":\"list\"}", 0, NULL, 5 },
		{ "{\"v\":3,\"id\":6,\"op\":\"hello\"}", -1,
		    PROTO_E_BAD_VERSION, 6 },
		{ "{\"v\":\"1\",\"id\":6,\"op\":\"hello\"}", -1,
		    PROTO_E_BAD_VERSION, 6 },
		{ "{\"id\":7,\"op\":\"hello\"}", -1, PROTO_E_BAD_VERSION, 7 },
		{ "{\"v\":0,\"op\":\"hello\"}", -1, PROTO_E_BAD_VERSION, 0 },
		{ "{\"v\":2,\"op\":\"list\"}", -1, PROTO_E_BAD_REQUEST, 0 },
		{ "{\"v\":2,\"id\":-1,\"op\":\"list\"}", -1,
		    PROTO_E_BAD_REQUEST, 0 },
		{ "{\"v\":2,\"id\":\"5\",\"op\":\"list\"}", -1,
		    PROTO_E_BAD_REQUEST, 0 },
		{ "{\"v\":2,\"id\":8}", -1, PROTO_E_BAD_REQUEST, 8 },
		{ "{\"v\":2,\"id\":9,\"op\":\"\"}", -1, PROTO_E_BAD_REQUEST, 9 },
		{ "{\"v\":2,\"id\":10,\"op\":3}", -1, PROTO_E_BAD_REQUEST, 10 },
	};
	const char *op, *code, *msg;
	uint64_t id;
	size_t i;
	cJSON *o;
	int r;

	for (i = 0; i < sizeof cases / sizeof *cases; i++) {
		o = msg_parse(cases[i].json, strlen(cases[i].json), NULL);
		code = msg = op = NULL;
		id = 999;
		r = msg_check_request(o, &id, &op, &code, &msg);
		ok(r == cases[i].ret && id == cases[i].id &&
		    (r == 0 ? code == NULL && op != NULL :
		    code != NULL && strcmp(code, cases[i].code) == 0 &&
		    msg != NULL && op == NULL),
		    "check: %s -> %s", cases[i].json,
		    cases[i].code ? cases[i].code : "ok");
		if (r == 0)
			ok_str_eq(op, "list", "check: op returned");
		if (cases[i].code != NULL &&
		    strcmp(cases[i].code, PROTO_E_BAD_VERSION) == 0)
			ok_str_has(msg, "version 2",
			    "check: message names the server's version");
		cJSON_Delete(o);
	}
	ok_int_eq(msg_check_request(NULL, NULL, NULL, NULL, NULL), -1,
	    "check: NULL request, NULL outs");
}

static void
test_error_sanitized(void)
{
	const char *code, *m;
	cJSON *o, *e;
	char *big, *s;
	size_t len;

	big = malloc(100000);
	memset(big, 'e', 99999);
	big[99999] = '\0';
	memcpy(big + 4092, "\xc3\xa9", 2);	/* straddles the cut */
	o = msg_error(1, PROTO_E_INTERNAL, big);
	e = cJSON_GetObjectItemCaseSensitive(o, "error");
	m = "";
	ok(msg_get_str(e, "msg", &m), "error: has a message");
	ok(strlen(m) <= PROTO_MAX_ERRMSG, "error: long message cut to %zu",
	    strlen(m));
	ok(proto_utf8_valid(m, strlen(m)), "error: cut on a boundary");
	ok(strlen(m) >= 3 && strcmp(m + strlen(m) - 3, "...") == 0,
	    "error: cut is marked");
	ok(msg_get_str(e, "code", &code) && strcmp(code, "internal") == 0,
	    "error: code");
	cJSON_Delete(o);
	free(big);

	o = msg_error(2, PROTO_E_BAD_CONFIG, "bad \xff\xfe path \xc0\xaf");
	s = msg_print(o, &len);
	ok(s != NULL, "error: invalid UTF-8 message still prints");
	ok_str_has(s, "bad \xef\xbf\xbd\xef\xbf\xbd path \xef\xbf\xbd"
	    "\xef\xbf\xbd\"", "error: bad bytes became U+FFFD");
	free(s);
	cJSON_Delete(o);
	o = msg_error(3, PROTO_E_LIMIT, NULL);
	e = cJSON_GetObjectItemCaseSensitive(o, "error");
	ok(msg_get_str(e, "msg", &m) && *m == '\0', "error: NULL message");
	cJSON_Delete(o);
}

static void
test_utf8_table(void)
{
	static const struct {
		const char *s;
		size_t len;
		bool valid;
		const char *name;
	} cases[] = {
		{ "", 0, true, "empty" },
		{ "plain ascii", 11, true, "ASCII" },
		{ "\x7f", 1, true, "DEL" },
		{ "\xc2\x80", 2, true, "U+0080" },
		{ "\xdf\xbf", 2, true, "U+07FF" },
		{ "\xe0\xa0\x80", 3, true, "U+0800" },
		{ "\xed\x9f\xbf", 3, true, "U+D7FF" },
		{ "\xee\x80\x80", 3, true, "U+E000" },
		{ "\xef\xbf\xbd", 3, true, "U+FFFD" },
		{ "\xef\xbf\xbf", 3, true, "U+FFFF" },
		{ "\xf0\x90\x80\x80", 4, true, "U+10000" },
		{ "\xf4\x8f\xbf\xbf", 4, true, "U+10FFFF" },
		{ "a\0b", 3, false, "NUL" },
		{ "\x80", 1, false, "lone continuation" },
		{ "\xbf", 1, false, "lone continuation 0xbf" },
		{ "\xc0\x80", 2, false, "overlong NUL" },
		{ "\xc1\xbf", 2, false, "overlong 2-byte" },
		{ "\xe0\x9f\xbf", 3, false, "overlong 3-byte" },
		{ "\xf0\x8f\xbf\xbf", 4, false, "overlong 4-byte" },
		{ "\xed\xa0\x80", 3, false, "surrogate U+D800" },
		{ "\xed\xbf\xbf", 3, false, "surrogate U+DFFF" },
		{ "\xf4\x90\x80\x80", 4, false, "U+110000" },
		{ "\xf5\x80\x80\x80", 4, false, "0xf5 lead" },
		{ "\xff", 1, false, "0xff" },
		{ "\xc3", 1, false, "cut 2-byte" },
		{ "\xe2\x82", 2, false, "cut 3-byte" },
		{ "\xf0\x9f\x98", 3, false, "cut 4-byte" },
		{ "\xc3\x28", 2, false, "bad continuation" },
		{ "\xe2\x28\xa1", 3, false, "bad second byte" },
		{ "\xe2\x82\x28", 3, false, "bad third byte" },
		{ "\xf0\x9f\x98\x28", 4, false, "bad fourth byte" },
	};
	size_t i;

	for (i = 0; i < sizeof cases / sizeof *cases; i++)
		ok(proto_utf8_valid(cases[i].s, cases[i].len) ==
		    cases[i].valid, "utf8: %s %s", cases[i].name,
		    cases[i].valid ? "valid" : "invalid");
	/* A valid sequence is not read past len. */
	ok(!proto_utf8_valid("\xc3\xa9", 1), "utf8: len cuts a sequence");
}

/* Job names: bounded, and inert in every user's terminal. */
static void
test_name_valid(void)
{
	static const struct {
		const char *s;
		bool valid;
		const char *name;
	} cases[] = {
		{ "slerp-7b", true, "plain" },
		{ "caf\xc3\xa9 \xe2\x82\xac \"q\" \\", true, "UTF-8, quotes" },
		{ "", false, "empty" },
		{ "a\x1b[2Jb", false, "ESC (C0)" },
		{ "a\nb", false, "newline" },
		{ "a\x7f", false, "DEL" },
		{ "a\xc2\x9b" "2J", false, "CSI (C1, U+009B)" },
		{ "a\xc2\x80", false, "U+0080 (C1)" },
		{ "a\xc2\xa0", true, "U+00A0 (not C1)" },
		{ "a\xff", false, "not UTF-8" },
	};
	char big[PROTO_MAX_NAME + 2];
	size_t i;

	for (i = 0; i < sizeof cases / sizeof *cases; i++)
		ok(proto_name_valid(cases[i].s) == cases[i].valid, "name: %s "
		    "%s", cases[i].name, cases[i].valid ? "valid" : "invalid");
	memset(big, 'n', sizeof big);
	big[PROTO_MAX_NAME] = '\0';
	ok(proto_name_valid(big), "name: %d bytes valid", PROTO_MAX_NAME);
	big[PROTO_MAX_NAME] = 'n';
	big[PROTO_MAX_NAME + 1] = '\0';
	ok(!proto_name_valid(big), "name: %d bytes invalid",
	    PROTO_MAX_NAME + 1);
}

static void
test_sanitize(void)
{
	char *s;

	s = proto_utf8_sanitize("ok \xc3\xa9", 5, 100);
	ok_str_eq(s, "ok \xc3\xa9", "sanitize: valid text unchanged");
	free(s);
	s = proto_utf8_sanitize("a\0b\xff", 4, 100);
	ok_str_eq(s, "a\xef\xbf\xbd" "b\xef\xbf\xbd",
	    "sanitize: NUL and bad bytes replaced");
	free(s);
	s = proto_utf8_sanitize("abcdefghij", 10, 8);
	ok_str_eq(s, "abcde...", "sanitize: cut with ellipsis");
	free(s);
	s = proto_utf8_sanitize("abcd\xc3\xa9zzz", 9, 8);
	ok_str_eq(s, "abcd...", "sanitize: never splits a character");
	free(s);
	s = proto_utf8_sanitize("abcdefgh", 8, 8);
	ok_str_eq(s, "abcdefgh", "sanitize: exactly max kept whole");
	free(s);
	s = proto_utf8_sanitize("abc", 3, 2);
	ok_str_eq(s, "ab", "sanitize: max below 3 cuts without ellipsis");
	free(s);
}

static void
test_escape(void)
{
	char *s;

	s = proto_escape("plain", 5, 64);
	ok_str_eq(s, "plain", "escape: printable kept");
	free(s);
	s = proto_escape("a\nb\r\t\\\x01\x7f\xc3\xa9", 10, 64);
	ok_str_eq(s, "a\\nb\\r\\t\\\\\\x01\\x7f\\xc3\\xa9",
	    "escape: controls, backslash and non-ASCII");
	free(s);
	s = proto_escape("abcdefgh", 8, 4);
	ok_str_eq(s, "abcd...", "escape: cut is marked");
	free(s);
	s = proto_escape("a\0b", 3, 64);
	ok_str_eq(s, "a\\x00b", "escape: NUL");
	free(s);
	s = proto_escape(NULL, 0, 64);
	ok_str_eq(s, "(null)", "escape: NULL");
	free(s);
	s = proto_escape("", 0, 0);
	ok_str_eq(s, "", "escape: empty");
	free(s);
}

int
main(void)
{
	tap_plan_lazy();
	test_parse_accepts();
	test_parse_rejects();
	test_parse_depth();
	test_print_one_line();
	test_round_trip();
	test_print_big_ints();
	test_builders();
	test_get_u64();
	test_get_i64();
	test_get_str_bool();
	test_check_request();
	test_error_sanitized();
	test_utf8_table();
	test_sanitize();
	test_escape();
	test_name_valid();
	return tap_done();
}
