/* SPDX-License-Identifier: MIT */
/*
 * params.c: evaluating parameter settings for one tensor.
 *
 * A setting is a scalar, a gradient (a list interpolated over the layers of
 * an output slice), or a list of conditional entries whose filter is a plain
 * substring of the tensor name ("*" or no filter matches all) and whose
 * first match wins.  The arithmetic is exactly mergekit's, in double
 * precision (MERGEKIT.md Part B 1.5), so that gradients give the same
 * values: s = t(L-1), i0 = trunc(s), i1 = min(L-1, i0+1), f = s - i0,
 * value = (1-f) g[i0] + f g[i1].  Pure functions.
 */
#include <errno.h>
#include <math.h>
#include <string.h>

#include "graph-int.h"

int
pvalue_eval(const struct graph_pvalue *v, double t, double *out)
{
	double s, f;
	size_t i0, i1, L = v->n;

	if (L == 0)
		return -EINVAL;
	if (!v->gradient || L == 1) {
		*out = v->v[0];
		return 0;
	}
	s = t * (double)(L - 1);
	if (s < 0)
		s = 0;
	i0 = (size_t)trunc(s);
	if (i0 > L - 1)
		i0 = L - 1;
	i1 = i0 + 1 < L ? i0 + 1 : L - 1;
	f = s - (double)i0;
	*out = (1 - f) * v->v[i0] + f * v->v[i1];
	return 0;
}

/* Returns 0 with a value, -ENOENT when no conditional entry matches. */
int
param_eval(const struct graph_param *p, const char *tensor, double t,
    double *out)
{
	size_t i;

	if (!p->conditional)
		return pvalue_eval(&p->value, t, out);
	for (i = 0; i < p->nconds; i++) {
		const struct graph_pcond *c = &p->conds[i];
		if (c->filter == NULL || strstr(tensor, c->filter) != NULL)
			return pvalue_eval(&c->value, t, out);
	}
	return -ENOENT;
}

const struct graph_param *
params_find(const struct graph_params *ps, const char *name)
{
	size_t i;

	for (i = 0; i < ps->n; i++)
		if (strcmp(ps->v[i].name, name) == 0)
			return &ps->v[i];
	return NULL;
}
