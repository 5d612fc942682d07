/* SPDX-License-Identifier: MIT */
/*
 * method.h: the merge-method plug-in interface, and all that a method
 * sees of the engine.
 *
 * A method is one const struct graph_method: its parameters, an optional
 * plan hook that checks one tensor's inputs at plan time (and may fold the
 * tensor to a copy), and its kernels, which the executor runs over blocks
 * of the tensor: zero or more statistics passes (stats, with merge to add
 * a unit's scratch and reduce to finish the pass), then the apply pass.
 * Kernels run on pool threads and see only the plan_tensor and the block;
 * whatever a pass learns goes into the per-tensor state.  Results never
 * depend on how a tensor was split into units: a kernel's partials are
 * per block (GRAPH_QUANTUM elements, or whole rows) and summed in order.
 *
 * docs/hacking.md, "Adding a merge method", lists the files a new method
 * touches.  The engine's other internals are in graph-int.h, which
 * includes this header; a method needs only this one (and select.h for
 * the sparsifiers and random numbers).
 */
#ifndef GRAPH_METHOD_H
#define GRAPH_METHOD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "graph.h"
#include "xmalloc.h"

struct model_tensor;
struct graph_plan;
struct plan_build;
struct plan_vperm;

/*
 * Hot loops are compiled twice, for AVX2 and for the baseline, and the
 * CPU picks at load time.  No FMA: both clones round every operation the
 * same way, so results do not depend on the machine.
 */
#ifdef GRAPH_SIMD_CLONES
#define GRAPH_SIMD __attribute__((target_clones("avx2", "default")))
#else
#define GRAPH_SIMD
#endif

/* Inputs of one output tensor; kernels keep per-input arrays on stack. */
#define GRAPH_MAX_INPUTS 64

/*
 * Elements per block: kernels run a block at a time and reductions keep
 * one partial per block, summed in order, so results never depend on the
 * chunking.  Row methods round it to whole rows.
 */
#define GRAPH_QUANTUM 65536u

/* Room for the names of all methods (method.c checks it at compile time). */
#define GRAPH_MAX_METHODS 64

enum mparam_type {
	MP_FLOAT,
	MP_BOOL,
	MP_INT,
};

/* Whether a parameter must be set for a tensor (MERGEKIT.md Part B 4.5). */
enum mparam_need {
	MP_OPTIONAL,		/* unset: def */
	MP_REQUIRED,		/* unset: a plan error */
	/*
	 * Unset: the tensor is the base model's, unchanged, and the other
	 * inputs need not have it (Part A item 6: the t of slerp and
	 * nearswap).  The planner's messages then name this parameter as
	 * the way to keep the base.  Global parameters only.
	 */
	MP_BASE_FALLBACK,
};

/* One parameter of a method, with its default. */
struct method_param {
	const char *name;
	bool per_model;
	enum mparam_need need;
	enum mparam_type type;
	double def;
};

/*
 * One block of an output tensor as a kernel sees it: n consecutive
 * elements (of the flattened tensor) starting at element e0, one float32
 * array per input, an output array (apply pass), and the partial results
 * of the block: nred doubles for the one quantum the block is, or per
 * row for methods that work by rows (their blocks hold whole rows).
 * Statistics passes write their quantum's or rows' partials, and may also
 * count into scratch, the unit's own area that the method merges on the
 * loop thread; apply passes may read the partials.
 */
struct mchunk {
	uint64_t e0;
	size_t n;
	const float *const *in;
	size_t nin;
	float *out;		/* apply pass */
	double *partials;	/* this quantum's (or first row's) partials */
	uint64_t quantum;	/* elements per block */
	uint64_t r0;		/* first row (rows methods) */
	size_t nrows;		/* rows in the block */
	size_t cols;		/* row length */
	void *scratch;		/* statistics pass: the unit's scratch */
};

/*
 * How a method runs over one tensor; fixed at plan time (from the static
 * fields of struct graph_method, or its shape hook).
 */
struct method_shape {
	int npasses;		/* statistics passes before the apply pass */
	int nred;		/* doubles per quantum (per row with rows) */
	bool rows;		/* blocks hold whole rows; partials per row */
	bool serial;		/* statistics passes run as one unit, in order */
	uint64_t row_len;	/* rows: elements per row; 0 = the last axis */
	size_t state_size;	/* per-tensor state, zeroed */
	size_t scratch;		/* per-unit bytes for statistics, zeroed */
	/* More state that saves work when the budget has room for it
	 * (della's keep masks between its passes), right after
	 * state_size's; the plan decides (cache_on) from the budget, and
	 * results never depend on it. */
	size_t cache_size;
	bool cache_on;
};

#define METHOD_NEEDS_BASE	0x1	/* base model must be an input */
#define METHOD_RECTIFY		0x4	/* crop is_embed inputs to common */
#define METHOD_BASE_CROP	0x8	/* crop is_embed inputs to the base */

/* One input of an output tensor. */
struct plan_input {
	size_t model;		/* index into plan->models */
	const struct model_tensor *mt;
	char *name;		/* the tensor name actually read */
	int64_t rows;		/* view: a top-left block of the stored */
	int64_t cols;		/* tensor, for rectified embeddings */
	int64_t layer;		/* source layer, -1 outside layers */
	bool rectified;
};

/* One output tensor: what every hook and kernel is given. */
struct plan_tensor {
	char *name;
	int ndim;
	int64_t shape[GRAPH_MAX_DIMS];
	uint64_t numel;
	int64_t rows;		/* numel / cols */
	int64_t cols;		/* row length: the last axis, or ms.row_len */
	enum graph_dtype out_dtype;
	enum graph_dtype compute_dtype;	/* NONE: inputs as stored */
	bool is_embed;
	int64_t layer;		/* output layer, -1 outside layers */
	const struct graph_method *method;
	struct plan_input *in;
	size_t nin;
	struct plan_vperm *vperm;	/* rows per a tokenizer merge, or NULL */
	int base;		/* index into in, -1 without a base */
	double *g;		/* global parameter values, by param index */
	bool *gset;
	double *pm;		/* per-model values: nin x nparams */
	bool *pmset;
	char *note;		/* why a tensor was folded, for plan output */
	struct method_shape ms;	/* how the method runs over it */
	uint64_t quantum;	/* elements per block (whole rows for rows) */
	uint64_t seed;		/* the job's random seed (random methods) */
	size_t shard;
	uint64_t offset;	/* absolute offset in the shard file */
	uint64_t nbytes;
};

/* The method's view of one tensor being planned. */
struct method_plan {
	struct plan_tensor *t;
	const struct graph_plan *plan;
	struct plan_build *build;
	bool slice_base;	/* the slice names a base model */
	bool fold_copy;		/* set by the hook: copy input fold_input */
	size_t fold_input;
};

struct graph_method {
	const char *name;
	const char *pretty;
	const char *url;
	const struct method_param *params;
	size_t nparams;
	unsigned flags;
	const void *priv;	/* a family's description of this member */
	/* Plan-time check of one tensor; may fold it to a copy. */
	void (*plan)(struct method_plan *mp);
	/* The shape for one tensor, when the static one below varies. */
	void (*shape)(const struct plan_tensor *t, struct method_shape *ms);
	int npasses;		/* statistics passes before the apply pass */
	int nred;		/* doubles per quantum in a statistics pass */
	bool rows;		/* blocks hold whole rows */
	size_t state_size;	/* per-tensor state, zeroed */
	void (*stats)(const struct plan_tensor *t, void *state, int pass,
	    const struct mchunk *c);
	/* Adds a unit's statistics scratch into the state: on the pool
	 * thread that computed it, under the job's stats_lock, so in any
	 * order; only integer counts may be kept this way. */
	void (*merge)(const struct plan_tensor *t, void *state, int pass,
	    const void *scratch);
	/* Between passes; returns NULL, or why the tensor cannot merge. */
	const char *(*reduce)(const struct plan_tensor *t, void *state,
	    int pass, const double *partials, size_t npartials);
	/* After reduce: true when the next pass has nothing to find for
	 * this tensor and is skipped.  NULL: never. */
	bool (*skip_next)(const struct plan_tensor *t, const void *state,
	    int pass);
	void (*apply)(const struct plan_tensor *t, const void *state,
	    const struct mchunk *c);
};

/* method.c: the table. */
const struct graph_method *method_find(const char *name);
size_t method_names(const char **names, size_t cap);
int method_param_index(const struct graph_method *m, const char *name);
const struct method_param *method_fallback_param(
    const struct graph_method *m);
extern const struct graph_method method_copy;

/* plan-tensor.c: for plan hooks and kernels. */
void plan_tensor_error(struct method_plan *mp, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
const char *plan_input_model(const struct method_plan *mp, size_t in);
double plan_g(const struct plan_tensor *t, const char *name);
bool plan_gset(const struct plan_tensor *t, const char *name);
double plan_pm(const struct plan_tensor *t, size_t in, const char *name);
bool plan_pmset(const struct plan_tensor *t, size_t in, const char *name);
size_t plan_others(const struct plan_tensor *t, size_t *idx);

/* kernels.c: loops the methods share. */
void kern_scale(float *restrict out, const float *restrict in, double k,
    size_t n);
void kern_combine(float *restrict out, const float *const *in,
    const double *w, size_t nin, size_t n);
void kern_dots(const float *restrict a, const float *restrict b, size_t n,
    double *aa, double *bb, double *ab);
double kern_sumsq(const double *restrict x, size_t n);

/* gram.c: Gram matrices and coefficient-space vectors. */
size_t gram_size(size_t m);
void kern_gram(const float *const *x, size_t m, const float *base, size_t n,
    double *g);
void gram_sum(const double *partials, size_t n, size_t m, double *G);
void gram_unpack(const double *packed, size_t m, double *G);
double gram_dot(const double *G, size_t m, const double *a, const double *b);
double gram_norm(const double *G, size_t m, const double *a);

#endif /* GRAPH_METHOD_H */
