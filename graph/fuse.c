/* SPDX-License-Identifier: MIT */
/*
 * fuse.c: a pipeline stage fused into the stage that reads it (--fuse).
 *
 * A stage whose every tensor that its reader reads is computed element by
 * element (a method with no statistics pass that does not work by rows,
 * or a copy) needs nothing but the same elements of its own inputs: any
 * piece of its output can be computed on its own, in any order, as often
 * as needed.  So it need not be written at all: the reader's plan is made
 * against the stage's header-only output (graph_plan_skeleton), and each
 * of its tensors there points back (model_tensor.fused) into the stage's
 * own plan, which the reader's plan then owns.  reader_read_tensor calls
 * fuse_read instead of reading the file, which runs the stage's method
 * over the piece and rounds it to the dtype the stage would have written:
 * the numbers are those the reader would have read back from the file,
 * so the output is byte for byte the unfused run's.
 *
 * A stage with a statistics pass (slerp's norms, ties' magnitudes) would
 * need the whole tensor before any piece: those are never fused, and
 * fuse_why_not says why in the plan.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "graph-int.h"

/* Elements computed at a time: each input's block stays in L2, and a
 * read holds at most this many floats per input beside its output. */
#define FUSE_BLOCK 16384u

/* A tensor the executor copies byte for byte from its one input. */
bool
plan_tensor_is_copy(const struct plan_tensor *pt)
{
	return pt->method == &method_copy && !pt->in[0].rectified &&
	    pt->vperm == NULL && pt->in[0].mt->delta == NULL &&
	    pt->in[0].mt->fused == NULL &&
	    pt->in[0].mt->t->dtype == pt->out_dtype &&
	    (pt->compute_dtype == GRAPH_DT_NONE ||
	    pt->compute_dtype == pt->out_dtype);
}

/* NULL, or why a piece of pt cannot be computed on its own. */
static char *
tensor_why_not(const struct plan_tensor *pt)
{
	if (pt->method == &method_copy)
		return NULL;
	if (pt->ms.npasses > 0)
		return xasprintf("%s merges %s with %d pass%s over the whole "
		    "tensor before writing any of it", pt->method->name,
		    pt->name, pt->ms.npasses, pt->ms.npasses == 1 ? "" :
		    "es");
	if (pt->ms.rows)
		return xasprintf("%s merges %s a whole row at a time",
		    pt->method->name, pt->name);
	return NULL;
}

/* Is the consumer's model k the stage whose output is ref? */
static bool
model_is(const struct graph_plan *c, size_t k, const char *ref)
{
	const struct graph_ref *r = &c->models[k].m->ref;

	return strcmp(r->path, ref) == 0 && r->rev == NULL;
}

bool
fuse_computes(const struct graph_plan *c, const struct plan_tensor *pt,
    const char *const *refs, size_t nrefs)
{
	size_t i;

	if (pt->nin == 0)
		return false;
	for (i = 0; i < nrefs; i++)
		if (model_is(c, pt->in[0].model, refs[i]))
			return true;
	return false;
}

/* The producer's tensors by name. */
static void
producer_names(const struct graph_plan *p, struct strmap *names)
{
	size_t i;

	memset(names, 0, sizeof *names);
	for (i = 0; i < p->ntensors; i++)
		strmap_put(names, p->tensors[i].name, i);
}

char *
fuse_why_not(const struct graph_plan *c, const char *ref,
    const struct graph_plan *producer)
{
	const struct plan_tensor *t;
	const struct plan_input *in;
	struct strmap names;
	char *why = NULL;
	size_t i, j, k;

	for (k = 0; k < c->nmodels; k++)
		if (model_is(c, k, ref) && c->models[k].m->ref.lora != NULL)
			return xasprintf("it is read with the adapter %s, "
			    "whose product needs the stored weights",
			    c->models[k].m->ref.lora);
	producer_names(producer, &names);
	for (i = 0; i < c->ntensors && why == NULL; i++) {
		t = &c->tensors[i];
		for (j = 0; j < t->nin && why == NULL; j++) {
			in = &t->in[j];
			if (!model_is(c, in->model, ref))
				continue;
			if (!strmap_get(&names, in->mt->t->name, &k))
				why = xasprintf("%s is not in its plan",
				    in->mt->t->name);
			else
				why = tensor_why_not(&producer->tensors[k]);
		}
	}
	strmap_free(&names);
	return why;
}

/* Each of the consumer's tensors of model k, matched by name to the
 * producer's: the header it was planned from must be the plan's. */
static int
link_model(struct graph_plan *c, size_t k, struct graph_plan *producer,
    const struct strmap *names, bool set, char **cause)
{
	struct model *m = c->models[k].m;
	const struct plan_tensor *pt;
	size_t i, idx;

	for (i = 0; i < m->ntensors; i++) {
		pt = strmap_get(names, m->tensors[i].t->name, &idx) ?
		    &producer->tensors[idx] : NULL;
		if (pt == NULL || pt->out_dtype != m->tensors[i].t->dtype ||
		    pt->numel != m->tensors[i].t->numel) {
			*cause = xasprintf("%s: its planned output no longer "
			    "matches its plan (tensor %s): were its inputs "
			    "changed since it was planned?", m->ref.path,
			    m->tensors[i].t->name);
			return -EINVAL;
		}
		if (set)
			m->tensors[i].fused = pt;
	}
	if (set)
		m->fused_from = producer;
	return 0;
}

int
fuse_link(struct graph_plan *c, const char *ref, struct graph_plan *producer,
    char **cause)
{
	struct strmap names;
	char *why;
	size_t k;
	int rc = 0, pass;

	if ((why = fuse_why_not(c, ref, producer)) != NULL) {
		*cause = xasprintf("%s cannot be fused: %s", ref, why);
		free(why);
		return -EINVAL;
	}
	producer_names(producer, &names);
	/* Checked whole first, so that a refusal leaves nothing linked. */
	for (pass = 0; pass < 2 && rc == 0; pass++)
		for (k = 0; k < c->nmodels && rc == 0; k++)
			if (model_is(c, k, ref))
				rc = link_model(c, k, producer, &names,
				    pass == 1, cause);
	strmap_free(&names);
	if (rc != 0)
		return rc;
	c->fused = xreallocarray(c->fused, c->nfused + 1, sizeof *c->fused);
	c->fused[c->nfused++] = producer;
	return 0;
}

/*
 * Elements [e0, e0 + n) of the fused stage's tensor pt, as the stage
 * would have written them and its reader read them back: the method run
 * over the same elements of the stage's inputs, a block at a time, then
 * rounded to the dtype it writes.  Blocks never cross one of pt's
 * reduction quanta, so a kernel sees what it sees in the executor.
 */
int
fuse_read(const struct graph_plan *p, const struct plan_tensor *pt,
    uint64_t e0, size_t n, float *out, char **cause)
{
	const float *in[GRAPH_MAX_INPUTS];
	float *buf;
	void *state = NULL;
	struct mchunk c;
	uint64_t q = pt->quantum ? pt->quantum : GRAPH_QUANTUM, e;
	size_t off, bn, j;
	int rc = 0;

	/* Stored unchanged: what the reader would read is the input. */
	if (plan_tensor_is_copy(pt))
		return reader_read_chunk(p, pt, &pt->in[0], e0, n, out, cause);
	buf = xreallocarray(NULL, pt->nin ? pt->nin : 1, FUSE_BLOCK *
	    sizeof *buf);
	if (plan_tensor_state_bytes(pt) > 0)
		state = xcalloc(1, plan_tensor_state_bytes(pt));
	memset(&c, 0, sizeof c);
	c.in = in;
	c.nin = pt->nin;
	c.quantum = q;
	c.cols = (size_t)pt->cols;
	for (off = 0; off < n && rc == 0; off += bn) {
		e = e0 + off;
		bn = n - off < FUSE_BLOCK ? n - off : FUSE_BLOCK;
		if (q - e % q < bn)
			bn = (size_t)(q - e % q);
		for (j = 0; j < pt->nin && rc == 0; j++) {
			in[j] = buf + j * FUSE_BLOCK;
			rc = reader_read_chunk(p, pt, &pt->in[j], e, bn,
			    buf + j * FUSE_BLOCK, cause);
		}
		if (rc != 0)
			break;
		c.e0 = e;
		c.n = bn;
		c.r0 = c.cols ? e / c.cols : 0;
		c.nrows = c.cols ? bn / c.cols : 0;
		c.out = out + off;
		pt->method->apply(pt, state, &c);
	}
	free(state);
	free(buf);
	if (rc == 0)
		graph_dtype_round(pt->out_dtype, out, n);
	return rc;
}
