/* SPDX-License-Identifier: MIT */
/*
 * pipeline.c: a multi-stage merge, a mergekit-multi file (MERGEKIT.md
 * Part B 6.2): several YAML documents, each an ordinary merge config (a
 * stage) with an optional top-level "name".  A model reference whose path
 * is another stage's name means that stage's output: it is rewritten to
 * DIR/NAME (DIR: where the caller writes stages), its "+adapter" and the
 * object form's other keys kept, and the stage depends on it.  The
 * unnamed stage, if any, is the final merge; a file whose stages are all
 * named writes them all to DIR.
 *
 * Refused, all together with their places: more than 64 stages, a name
 * that is not a plain
 * directory name, a name used twice, more than one unnamed stage, a stage
 * that reads itself, a revision on a stage reference, and stages that
 * read each other in a cycle.  Unlike mergekit, only model references are
 * rewritten (mergekit rewrites any string equal to a stage name, a
 * merge_method included: Part B 33).
 *
 * The stages come in an order in which each follows those it reads,
 * otherwise in the file's order (Kahn's algorithm, lowest index first).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "graph-int.h"

/* A stage's name is a directory name in DIR, and shown in tables. */
#define PIPELINE_MAX_NAME 200
/* Far above any recipe; each stage is a job of a daemon's, whose users
 * may queue 64 by default. */
#define PIPELINE_MAX_STAGES 64

static bool
pipeline_name_ok(const char *s)
{
	const unsigned char *p;

	if (*s == '\0' || strcmp(s, ".") == 0 || strcmp(s, "..") == 0 ||
	    strlen(s) > PIPELINE_MAX_NAME)
		return false;
	for (p = (const unsigned char *)s; *p != '\0'; p++)
		if (*p == '/' || *p < 0x20 || *p == 0x7f)
			return false;
	return true;
}

/* Each document's name into names[] (NULL: none); false on a problem. */
static bool
pipeline_names(const char *file, const struct ynode_doc *docs, size_t n,
    char **names, struct graph_diags *d)
{
	const struct ynode *nn;
	size_t i, k, unnamed = (size_t)-1;
	bool good = true;

	for (i = 0; i < n; i++) {
		if (docs[i].root->kind != YNODE_MAP ||
		    (nn = ynode_get(docs[i].root, "name")) == NULL ||
		    ynode_is_null(nn)) {
			if (unnamed != (size_t)-1) {
				graph_diag_at(d, GRAPH_SEV_ERROR, file,
				    docs[i].root->mark, "a second document "
				    "without a 'name' (the one at line %d is "
				    "the final merge); name every stage but "
				    "one",
				    docs[unnamed].root->mark.line);
				good = false;
			} else {
				unnamed = i;
			}
			continue;
		}
		if (nn->kind != YNODE_SCALAR || !pipeline_name_ok(nn->str)) {
			graph_diag_at(d, GRAPH_SEV_ERROR, file, nn->mark,
			    "'name' must be a plain directory name of 1 to %d "
			    "bytes (no '/', not '.' or '..'): it names the "
			    "stage's output directory", PIPELINE_MAX_NAME);
			good = false;
			continue;
		}
		for (k = 0; k < i; k++)
			if (names[k] != NULL && strcmp(names[k], nn->str) == 0)
				break;
		if (k < i) {
			graph_diag_at(d, GRAPH_SEV_ERROR, file, nn->mark,
			    "stage name '%s' is used twice (first at line %d)",
			    nn->str, docs[k].root->mark.line);
			good = false;
			continue;
		}
		names[i] = xstrdup(nn->str);
	}
	return good;
}

/*
 * The stages in dependency order, into p->order; false, with the stages
 * left over named, when they read each other in a cycle.
 */
static bool
pipeline_order(struct graph_pipeline *p, const bool *deps,
    struct graph_diags *d)
{
	size_t n = p->nstages, i, k, done = 0;
	bool *placed = xcalloc(n + 1, sizeof *placed), progress = true;
	struct xbuf b = { 0 };

	p->order = xcalloc(n + 1, sizeof *p->order);
	while (done < n && progress) {
		progress = false;
		for (i = 0; i < n; i++) {
			if (placed[i])
				continue;
			for (k = 0; k < n; k++)
				if (deps[i * n + k] && !placed[k])
					break;
			if (k < n)
				continue;
			placed[i] = true;
			p->order[done++] = i;
			progress = true;
			break;	/* the lowest ready index each time */
		}
	}
	if (done < n) {
		for (i = 0; i < n; i++)
			if (!placed[i])
				xbuf_printf(&b, "%s'%s'", b.len ? ", " : "",
				    p->stages[i].name ? p->stages[i].name :
				    "(unnamed)");
		graph_diag_add(d, GRAPH_SEV_ERROR, p->path, "stages %s read "
		    "each other's outputs in a cycle", b.data);
		xbuf_free(&b);
	}
	free(placed);
	return done == n;
}

int
graph_pipeline_load_buffer(const char *file, const char *buf, size_t len,
    const char *dir, struct graph_pipeline **out, struct graph_diags *d)
{
	struct graph_pipeline *p;
	struct ynode_doc *docs = NULL;
	struct graph_stage *st;
	char **names = NULL;
	bool *deps = NULL;
	size_t n = 0, i, k, b, before = d->nerrors;

	*out = NULL;
	if (memchr(buf, '\0', len) != NULL) {
		graph_diag_add(d, GRAPH_SEV_ERROR, file, "the file contains "
		    "a NUL byte; is it a text file?");
		return -EINVAL;
	}
	if (ynode_parse_all(file, buf, len, &docs, &n, d) != 0)
		return -EINVAL;
	if (n == 0 || n > PIPELINE_MAX_STAGES) {
		graph_diag_add(d, GRAPH_SEV_ERROR, file, n == 0 ? "the file is "
		    "empty" : "%zu documents: a pipeline has at most %d stages",
		    n, PIPELINE_MAX_STAGES);
		for (i = 0; i < n; i++)
			ynode_free(docs[i].root);
		free(docs);
		return -EINVAL;
	}
	if (n > 1 && docs[0].begin == SIZE_MAX) {
		graph_diag_add(d, GRAPH_SEV_ERROR, file, "a file of several "
		    "stages must be UTF-8 (this one is UTF-16)");
		for (i = 0; i < n; i++)
			ynode_free(docs[i].root);
		free(docs);
		return -EINVAL;
	}
	p = xcalloc(1, sizeof *p);
	p->path = xstrdup(file);
	p->dir = dir != NULL ? xstrdup(dir) : NULL;
	p->final = (size_t)-1;
	p->stages = xcalloc(n, sizeof *p->stages);
	p->nstages = n;
	names = xcalloc(n + 1, sizeof *names);
	deps = xcalloc(n * n, sizeof *deps);
	/* On, after a bad name: every problem of the file at once. */
	(void)pipeline_names(file, docs, n, names, d);
	for (i = 0; i < n; i++) {
		st = &p->stages[i];
		st->name = names[i] != NULL ? xstrdup(names[i]) : NULL;
		st->mark = docs[i].root->mark;
		if (st->name == NULL)
			p->final = i;
		/* A lone document is an ordinary config: its text whole;
		 * otherwise from the line after its "---". */
		b = docs[i].begin;
		if (n > 1 && b < docs[i].end && buf[b] == '\r')
			b++;
		if (n > 1 && b < docs[i].end && buf[b] == '\n')
			b++;
		st->cfg = config_load_stage(file, docs[i].root, n == 1 ? buf :
		    buf + b, n == 1 ? len : docs[i].end - b, n == 1 ? 0 : b,
		    names, n, i, dir, deps + i * n, d);
	}
	if (d->nerrors != before)
		goto out;
	for (i = 0; i < n; i++) {
		st = &p->stages[i];
		st->deps = xcalloc(n + 1, sizeof *st->deps);
		for (k = 0; k < n; k++)
			if (deps[i * n + k])
				st->deps[st->ndeps++] = k;
	}
	(void)pipeline_order(p, deps, d);
out:
	for (i = 0; i < n; i++) {
		ynode_free(docs[i].root);
		free(names[i]);
	}
	free(docs);
	free(names);
	free(deps);
	if (d->nerrors != before) {
		graph_pipeline_free(p);
		return -EINVAL;
	}
	*out = p;
	return 0;
}

size_t
graph_pipeline_ndocs(const char *buf, size_t len)
{
	struct graph_diags d;
	struct ynode_doc *docs;
	size_t n = 0, i;

	graph_diags_init(&d);
	if (memchr(buf, '\0', len) == NULL &&
	    ynode_parse_all("", buf, len, &docs, &n, &d) == 0) {
		for (i = 0; i < n; i++)
			ynode_free(docs[i].root);
		free(docs);
	}
	graph_diags_fini(&d);
	return n;
}

void
graph_pipeline_free(struct graph_pipeline *p)
{
	size_t i;

	if (p == NULL)
		return;
	for (i = 0; i < p->nstages; i++) {
		free(p->stages[i].name);
		graph_config_free(p->stages[i].cfg);
		free(p->stages[i].deps);
	}
	free(p->stages);
	free(p->order);
	free(p->path);
	free(p->dir);
	free(p);
}
