/* SPDX-License-Identifier: MIT */
/*
 * diag.c: the list of problems found while loading and planning a merge.
 *
 * Planning never stops at the first problem: every stage appends what it
 * finds here and carries on where it safely can, so that a user sees every
 * mistake of a config in one run (MERGEKIT.md Part A item 7).  Each entry
 * is printed like a compiler message, "where: error: what", where "where" is
 * a file:line:column or a model or tensor name.  Not thread safe; a list
 * belongs to the one planning call that fills it.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "graph-int.h"

void
graph_diags_init(struct graph_diags *d)
{
	memset(d, 0, sizeof *d);
}

void
graph_diags_fini(struct graph_diags *d)
{
	size_t i;

	for (i = 0; i < d->n; i++) {
		free(d->v[i].where);
		free(d->v[i].msg);
	}
	free(d->v);
	memset(d, 0, sizeof *d);
}

void
graph_diag_vadd(struct graph_diags *d, enum graph_severity sev,
    const char *where, const char *fmt, va_list ap)
{
	struct graph_diag *g;

	if (d->n == d->cap) {
		d->cap = d->cap ? d->cap * 2 : 8;
		d->v = xreallocarray(d->v, d->cap, sizeof *d->v);
	}
	g = &d->v[d->n++];
	g->sev = sev;
	g->where = where != NULL ? graph_text_printable(xstrdup(where)) :
	    NULL;
	g->msg = graph_text_printable(xvasprintf(fmt, ap));
	if (sev == GRAPH_SEV_ERROR)
		d->nerrors++;
}

void
graph_diag_add(struct graph_diags *d, enum graph_severity sev,
    const char *where, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	graph_diag_vadd(d, sev, where, fmt, ap);
	va_end(ap);
}

void
graph_diag_at(struct graph_diags *d, enum graph_severity sev,
    const char *file, struct graph_mark m, const char *fmt, ...)
{
	va_list ap;
	char *where;

	if (m.line > 0)
		where = xasprintf("%s:%d:%d", file, m.line, m.col);
	else
		where = xstrdup(file);
	va_start(ap, fmt);
	graph_diag_vadd(d, sev, where, fmt, ap);
	va_end(ap);
	free(where);
}

void
graph_diags_print(const struct graph_diags *d, FILE *fp)
{
	const struct graph_diag *g;
	size_t i;

	for (i = 0; i < d->n; i++) {
		g = &d->v[i];
		fprintf(fp, "%s%s%s: %s\n", g->where ? g->where : "",
		    g->where ? ": " : "",
		    g->sev == GRAPH_SEV_ERROR ? "error" : "warning", g->msg);
	}
}

char *
graph_diags_join(const struct graph_diags *d)
{
	const struct graph_diag *g;
	struct xbuf b = { 0 };
	size_t i;

	for (i = 0; i < d->n; i++) {
		g = &d->v[i];
		xbuf_printf(&b, "%s%s%s: %s\n", g->where ? g->where : "",
		    g->where ? ": " : "",
		    g->sev == GRAPH_SEV_ERROR ? "error" : "warning", g->msg);
	}
	return xbuf_take(&b);
}

/*
 * Levenshtein distance, for "did you mean" suggestions.  Strings here are
 * config keys and method names, all short, so the quadratic cost and the
 * fixed cap are fine.
 */
static size_t
edit_distance(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b), i, j;
	size_t prev[64], cur[64];

	if (la >= 63 || lb >= 63)
		return 64;
	for (j = 0; j <= lb; j++)
		prev[j] = j;
	for (i = 1; i <= la; i++) {
		cur[0] = i;
		for (j = 1; j <= lb; j++) {
			size_t del = prev[j] + 1, ins = cur[j - 1] + 1;
			size_t sub = prev[j - 1] + (a[i - 1] != b[j - 1]);
			size_t m = del < ins ? del : ins;
			cur[j] = m < sub ? m : sub;
		}
		memcpy(prev, cur, (lb + 1) * sizeof *prev);
	}
	return prev[lb];
}

const char *
graph_suggest(const char *word, const char *const *candidates, size_t n)
{
	size_t i, d, best = (size_t)-1, limit;
	const char *pick = NULL;

	limit = strlen(word) / 3 + 1;
	if (limit > 3)
		limit = 3;
	for (i = 0; i < n; i++) {
		d = edit_distance(word, candidates[i]);
		if (d < best) {
			best = d;
			pick = candidates[i];
		}
	}
	return best <= limit ? pick : NULL;
}
