/* SPDX-License-Identifier: MIT */
/*
 * test-vocab.c: unit tests for the job states' and kinds' tables
 * (proto/vocab.c).
 *
 * The table is the one place a state is defined, so these check what the
 * rest of the code takes for granted of it: every state has a distinct
 * name that parses back to it, the names on disk and on the wire are the
 * ones they always were, and the flags say what the daemon's and
 * mergectl's rules were before they asked the table (a final state is
 * one of the last four; only the live ones are interrupted by a restart).
 * A state added to the table needs no change here: the invariants are
 * checked of every state, the old rules of the six old ones.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vocab.h"
#include "tap.h"

static void test_names(void);
static void test_flags(void);
static void test_joined(void);

/* Every state's name is unique and parses back to it. */
static void
test_names(void)
{
	/* The names on disk and on the wire before the table existed. */
	static const char *const want[] = { "queued", "running", "done",
		"failed", "cancelled", "interrupted" };
	enum job_state s, back, t;

	for (s = JOB_QUEUED; s <= JOB_INTERRUPTED; s++)
		ok_str_eq(proto_state_name(s), want[s], "state %d's name",
		    (int)s);
	for (s = 0; s < JOB_NSTATES; s++) {
		ok(proto_state_parse(proto_state_name(s), &back) == 0 &&
		    back == s, "%s parses back", proto_state_name(s));
		for (t = 0; t < s; t++)
			ok(strcmp(proto_state_name(s), proto_state_name(t)) !=
			    0, "%s and %s differ", proto_state_name(s),
			    proto_state_name(t));
	}
	ok_int_eq(proto_state_parse("Done", &back), -EINVAL,
	    "names are case-sensitive");
	ok_int_eq(proto_state_parse("", &back), -EINVAL, "empty name");
	ok_str_eq(proto_state_name(JOB_NSTATES), "unknown", "out of range");
	ok_int_eq(proto_state_flags(JOB_NSTATES), 0, "no flags out of range");
}

/* The rules the code asked of the enum's order and lists before. */
static void
test_flags(void)
{
	enum job_state s;

	for (s = JOB_QUEUED; s <= JOB_INTERRUPTED; s++) {
		ok(proto_state_final(s) == (s >= JOB_DONE), "%s final",
		    proto_state_name(s));
		ok(proto_state_live(s) == (s == JOB_QUEUED ||
		    s == JOB_RUNNING), "%s live", proto_state_name(s));
		ok(proto_state_cancellable(s) == (s == JOB_QUEUED ||
		    s == JOB_RUNNING || s == JOB_INTERRUPTED),
		    "%s cancellable", proto_state_name(s));
		ok(proto_state_resumable(s) == (s == JOB_FAILED ||
		    s == JOB_INTERRUPTED), "%s resumable",
		    proto_state_name(s));
		ok(proto_state_removable(s) == (s == JOB_DONE ||
		    s == JOB_FAILED || s == JOB_CANCELLED), "%s removable",
		    proto_state_name(s));
	}
	/* Of every state, old or new: a live state is never final, and a
	 * removable one always is (the code relies on both). */
	for (s = 0; s < JOB_NSTATES; s++) {
		ok(!(proto_state_live(s) && proto_state_final(s)),
		    "%s not live and final", proto_state_name(s));
		ok(!proto_state_removable(s) || proto_state_final(s),
		    "%s removable only if final", proto_state_name(s));
	}
}

/* The lists built for messages and for the store's recovery. */
static void
test_joined(void)
{
	char *v;

	v = proto_state_names(PROTO_STATE_REMOVABLE, ", ", " or ");
	ok_str_eq(v, "done, failed or cancelled", "removable, joined");
	free(v);
	v = proto_state_names(PROTO_STATE_LIVE, "','", "','");
	ok_str_eq(v, "queued','running", "live, for SQL");
	free(v);
	v = proto_state_names(0, ", ", ", ");
	ok_str_has(v, "queued, running, done, failed, cancelled, interrupted",
	    "every state");
	free(v);
	v = proto_state_names(PROTO_STATE_LIVE | PROTO_STATE_REMOVABLE, ",",
	    ",");
	ok_str_eq(v, "", "no state is both");
	free(v);
}

/* The job kinds: names on disk and on the wire, parsed back. */
static void
test_kinds(void)
{
	enum job_kind k, back;

	ok_str_eq(proto_kind_name(JOB_KIND_MERGE), "merge", "merge's name");
	ok_str_eq(proto_kind_name(JOB_KIND_EXTRACT_LORA), "extract-lora",
	    "extract-lora's name");
	for (k = 0; k < JOB_NKINDS; k++)
		ok(proto_kind_parse(proto_kind_name(k), &back) == 0 &&
		    back == k, "%s parses back", proto_kind_name(k));
	ok_int_eq(proto_kind_parse("extract_lora", &back), -EINVAL,
	    "no other spelling");
	ok_str_eq(proto_kind_name(JOB_NKINDS), "unknown", "out of range");
}

int
main(void)
{
	tap_plan_lazy();
	test_names();
	test_flags();
	test_joined();
	test_kinds();
	return tap_done();
}
