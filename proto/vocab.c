/* SPDX-License-Identifier: MIT */
/*
 * vocab.c: the job states' and kinds' tables (vocab.h), built from
 * PROTO_JOB_STATES and PROTO_JOB_KINDS so that the enums, the names and
 * the flags cannot disagree.  No state: safe on any thread.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "vocab.h"

struct proto_state_row {
	const char *name;
	unsigned flags;
};

#define PROTO_STATE_ROW(e, n, f) [e] = { n, f },
static const struct proto_state_row proto_states[JOB_NSTATES] = {
	PROTO_JOB_STATES(PROTO_STATE_ROW)
};
#undef PROTO_STATE_ROW

const char *
proto_state_name(enum job_state s)
{
	return (unsigned)s < JOB_NSTATES ? proto_states[s].name : "unknown";
}

int
proto_state_parse(const char *name, enum job_state *out)
{
	unsigned i;

	for (i = 0; i < JOB_NSTATES; i++) {
		if (strcmp(name, proto_states[i].name) == 0) {
			*out = (enum job_state)i;
			return 0;
		}
	}
	return -EINVAL;
}

unsigned
proto_state_flags(enum job_state s)
{
	return (unsigned)s < JOB_NSTATES ? proto_states[s].flags : 0;
}

char *
proto_state_names(unsigned flags, const char *sep, const char *last)
{
	size_t len = 1, n = 0, k = 0, i;
	char *out;

	for (i = 0; i < JOB_NSTATES; i++) {
		if ((proto_states[i].flags & flags) != flags)
			continue;
		len += strlen(proto_states[i].name) + strlen(sep) +
		    strlen(last);
		n++;
	}
	if ((out = malloc(len)) == NULL)
		abort();	/* as xmalloc: out of memory is fatal */
	out[0] = '\0';
	for (i = 0; i < JOB_NSTATES; i++) {
		if ((proto_states[i].flags & flags) != flags)
			continue;
		if (k > 0)
			strcat(out, k + 1 == n ? last : sep);
		strcat(out, proto_states[i].name);
		k++;
	}
	return out;
}

#define PROTO_KIND_ROW(e, n) [e] = n,
static const char *const proto_kinds[JOB_NKINDS] = {
	PROTO_JOB_KINDS(PROTO_KIND_ROW)
};
#undef PROTO_KIND_ROW

const char *
proto_kind_name(enum job_kind k)
{
	return (unsigned)k < JOB_NKINDS ? proto_kinds[k] : "unknown";
}

int
proto_kind_parse(const char *name, enum job_kind *out)
{
	unsigned i;

	for (i = 0; i < JOB_NKINDS; i++) {
		if (strcmp(name, proto_kinds[i]) == 0) {
			*out = (enum job_kind)i;
			return 0;
		}
	}
	return -EINVAL;
}
