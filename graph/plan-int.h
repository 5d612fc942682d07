/* SPDX-License-Identifier: MIT */
/*
 * plan-int.h: state shared by plan.c and plan-tensor.c while one plan is
 * being built.  Nothing here outlives graph_plan_build().
 */
#ifndef PLAN_INT_H
#define PLAN_INT_H

#include "graph-int.h"

/* An output slice after normalisation (MERGEKIT.md Part B 1.7). */
struct nsrc {
	size_t model;		/* index into plan->models */
	int64_t start;
	int64_t end;
	const struct graph_params *params;	/* may be NULL */
	struct graph_mark mark;
};

struct nslice {
	struct nsrc *src;
	size_t nsrc;
	size_t base;		/* model index, (size_t)-1 without a base */
	const struct graph_params *params;	/* may be NULL */
	struct graph_mark mark;
	int64_t len;		/* layers */
	bool copy;		/* the architecture model's, unchanged */
};

/* One module of the output: its slices, normalised (Part B 1.7). */
struct nmodule {
	const struct arch_module *am;
	const struct graph_params *params;	/* the module's; may be NULL */
	struct nslice *slices;
	size_t nslices;
	bool sliced;		/* by slices: (else models:, or copied) */
};

/* Repeated errors are shown a few times, then counted. */
struct plan_errkind {
	const char *fmt;
	size_t count;
};

struct plan_build {
	const struct graph_config *cfg;
	struct graph_diags *d;
	struct graph_plan *p;
	const struct graph_method *method;
	const struct graph_ref **refs;	/* referenced models, config order */
	size_t nrefs;
	struct nmodule *mods;	/* in the architecture's module order */
	size_t nmods;
	struct plan_errkind errs[32];
	size_t nerrs;
	size_t suppressed;
	bool cancelled;		/* opts.cancel was seen set */
};

bool plan_cancelled(struct plan_build *);
int64_t plan_model_layers(struct graph_plan *p, size_t mi,
    const struct arch_module *am);
void plan_tensors(struct plan_build *);
void plan_coverage(struct plan_build *);
void plan_chat_template(struct plan_build *);
void plan_tokenizer(struct plan_build *);
bool plan_tokenizer_tensor(struct plan_build *, struct plan_tensor *);

#endif /* PLAN_INT_H */
