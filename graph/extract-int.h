/* SPDX-License-Identifier: MIT */
/*
 * extract-int.h: what the files of mergectl extract-lora share: the plan
 * (extract.c builds it), the run on the pool (extract-run.c), and the
 * adapter's files (extract-out.c).
 */
#ifndef EXTRACT_INT_H
#define EXTRACT_INT_H

#include "graph-int.h"

/* Elements of BASE read at a time while a task vector is formed. */
#define EXTRACT_CHUNK 65536
/*
 * The process's own share of the budget: the program and its libraries,
 * and per pool thread its stack, the reader's bounce buffer and
 * OpenBLAS's packing buffers (measured: 12 MiB with one thread, 16 with
 * four).
 */
#define EXTRACT_OVERHEAD(threads) ((10ull + 2ull * (uint64_t)(threads)) << 20)

/*
 * One tensor of the adapter: a weight of FT decomposed (lora), or one of
 * FT's tensors saved in full.  A full tensor is copied byte for byte at
 * the end, unless FT's "+adapter" changes it (computed): then it is read
 * adapted, like a decomposed weight, on the pool.
 */
struct xweight {
	struct graph_extract_weight r;	/* r.name: name or module */
	char *name;		/* FT's tensor */
	char *module;		/* name without its last component */
	const struct model_tensor *ft;
	const struct model_tensor *base;	/* lora: BASE's twin */
	bool lora;
	bool transpose;		/* an embedding: decomposed as its ^T */
	bool computed;		/* full, but read adapted */
	int64_t m;		/* the stored shape (lora, computed) */
	int64_t n;
	int64_t k0;		/* the rank before sv_epsilon */
	int64_t l;		/* --fast's columns */
	enum graph_dtype out_dtype;	/* of what the pool writes */
	uint64_t need;		/* bytes the pool task holds */
	float s0;		/* the largest singular value */
	uint64_t spool_off;	/* what the pool wrote: A then B, or the */
	uint64_t spool_len;	/* tensor, encoded */
};

struct graph_extract {
	struct model *ft;
	struct model *base;
	char *ft_ref;		/* the references, as given */
	char *base_ref;
	struct xweight *w;	/* in FT's tensor name order */
	size_t nw;
	char **save;		/* modules_to_save, sorted */
	size_t nsave;
	size_t skipped;		/* FT's tensors left out */
	int64_t ft_vocab;	/* input embedding rows; -1: none found */
	int64_t base_vocab;
	int64_t max_rank;
	bool distribute;
	bool embed_lora;	/* as it runs */
	double sv_epsilon;
	bool fast;
	int power_iters;
	int oversample;
	uint64_t seed;
	uint64_t memory;	/* the budget */
	uint64_t admit;		/* of it, what pool tasks may hold */
	int threads;
	bool memory_strict;	/* over the budget: an error, not alone */
	const struct graph_cred *cred;	/* NULL, or &cred_copy */
	struct graph_cred cred_copy;
	uint32_t *cred_groups;
	bool force;
	bool model_card;
	char *invocation;
	const atomic_bool *cancel;
	/* Filled in by the run. */
	uint64_t peak;
	uint64_t bytes_written;
	double seconds;
};

/* extract-out.c: the adapter's files in the staging directory. */
#define EXTRACT_SPOOL "adapter_model.spool"
int extract_write(struct graph_extract *x, int stage_fd, int spool_fd,
    const char *title, char **cause);

#endif /* EXTRACT_INT_H */
