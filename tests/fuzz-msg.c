/* SPDX-License-Identifier: MIT */
/*
 * fuzz-msg.c: fuzz target for message parsing and building (proto/msg.c).
 *
 * The input is one line as the framer would hand it over (without the
 * "\n").  The target parses it, reads it through every getter and the
 * envelope check, prints it again and checks what comes back: msg_print
 * must produce exactly one line, valid UTF-8, that parses to an object
 * again.  The raw input also goes through the text helpers (escape,
 * sanitize, and an error reply built from it, which must always print).
 * Any broken invariant aborts.
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

#include <cjson/cJSON.h>

#include "proto.h"

#define FUZZ_NAME "fuzz-msg"
#include "fuzz.h"


static void read_fields(const cJSON *);
static void print_and_reparse(const cJSON *);
static void text_helpers(const char *, size_t);

/* Every field the protocol defines, through every getter. */
static void
read_fields(const cJSON *o)
{
	static const char *const keys[] = {
		"v", "id", "op", "job", "client", "config", "config_name",
		"cwd", "name", "priority", "after", "memory", "force", "seed",
		"allow_crimes", "shard_size", "copy_tokenizer", "model_card",
		"out_name", "out_fd", "models", "fds", "ref", "fd", "rel",
		"error", "code", "msg", "event", "ok", "",
	};
	const cJSON *c;
	const char *s, *op, *code, *msg;
	uint64_t u, id;
	int64_t i;
	size_t k;
	bool b;
	int r;

	for (k = 0; k < sizeof keys / sizeof *keys; k++) {
		if (msg_get_str(o, keys[k], &s))
			check(proto_utf8_valid(s, strlen(s)), "string UTF-8");
		if (msg_get_u64(o, keys[k], &u))
			check(u <= (1ull << 53), "u64 within 2^53");
		if (msg_get_i64(o, keys[k], &i))
			check(i >= -(1ll << 53) && i <= (1ll << 53),
			    "i64 within 2^53");
		(void)msg_get_bool(o, keys[k], &b);
	}
	r = msg_check_request(o, &id, &op, &code, &msg);
	check(r == 0 ? op != NULL && *op != '\0' :
	    r == -1 && code != NULL && msg != NULL && op == NULL,
	    "check_request outputs");
	/* Nested objects (models, error) are read the same way. */
	for (c = o->child; c != NULL; c = c->next)
		if (cJSON_IsObject(c))
			(void)msg_check_request(c, NULL, NULL, NULL, NULL);
}

static void
print_and_reparse(const cJSON *o)
{
	const char *err;
	cJSON *back;
	size_t len = 0;
	char *s;

	s = msg_print(o, &len);
	check(s != NULL, "a parsed object prints");
	check(len > 0 && len == strlen(s) && s[len - 1] == '\n',
	    "one line ending in newline");
	check(memchr(s, '\n', len - 1) == NULL, "no other newline");
	back = msg_parse(s, len - 1, &err);
	check(back != NULL, "printed text parses again");
	cJSON_Delete(back);
	free(s);
}

static void
text_helpers(const char *p, size_t size)
{
	cJSON *e;
	char *s, *t;

	s = proto_escape(p, size, 64);
	check(strlen(s) <= 64 * 4 + 3, "escape bounded");
	free(s);
	s = proto_utf8_sanitize(p, size, 100);
	check(strlen(s) <= 100 && proto_utf8_valid(s, strlen(s)),
	    "sanitize gives valid UTF-8 within max");
	e = msg_error(1, PROTO_E_BAD_REQUEST, s);
	t = msg_print(e, NULL);
	check(t != NULL, "an error reply always prints");
	free(t);
	cJSON_Delete(e);
	free(s);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *p = (const char *)data, *err = NULL;
	cJSON *o;

	o = msg_parse(p, size, &err);
	check((o == NULL) == (err != NULL), "an error exactly on failure");
	if (o != NULL) {
		check(cJSON_IsObject(o), "result is an object");
		read_fields(o);
		print_and_reparse(o);
		cJSON_Delete(o);
	}
	text_helpers(p, size);
	return 0;
}

#ifndef FUZZ_LIBFUZZER
#include "fuzz-main.h"
#endif
