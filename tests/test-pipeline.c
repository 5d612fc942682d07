/* SPDX-License-Identifier: MIT */
/*
 * test-pipeline.c: unit tests for multi-stage configs (graph/pipeline.c),
 * mergekit-multi files: the stages and their names, references to a
 * stage rewritten to DIR/NAME with their adapter and object form kept,
 * the dependency order, and every refusal with its place.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "graph.h"
#include "tap.h"

static int
load(const char *text, const char *dir, struct graph_pipeline **p,
    struct graph_diags *d)
{
	graph_diags_init(d);
	return graph_pipeline_load_buffer("multi.yml", text, strlen(text), dir,
	    p, d);
}

/* An error at where (NULL: any) whose message holds phrase. */
static bool
has_error(const struct graph_diags *d, const char *where, const char *phrase)
{
	size_t i;

	for (i = 0; i < d->n; i++)
		if (d->v[i].sev == GRAPH_SEV_ERROR && (where == NULL ||
		    (d->v[i].where != NULL && strcmp(d->v[i].where,
		    where) == 0)) && strstr(d->v[i].msg, phrase) != NULL)
			return true;
	for (i = 0; i < d->n; i++)
		tap_diag("%s: %s", d->v[i].where ? d->v[i].where : "-",
		    d->v[i].msg);
	return false;
}

static const struct graph_stage *
stage(const struct graph_pipeline *p, const char *name)
{
	size_t i;

	for (i = 0; i < p->nstages; i++)
		if ((name == NULL && p->stages[i].name == NULL) ||
		    (name != NULL && p->stages[i].name != NULL &&
		    strcmp(p->stages[i].name, name) == 0))
			return &p->stages[i];
	return NULL;
}

/* The paths of a stage's references, joined by spaces. */
static char *
refs(const struct graph_stage *s)
{
	const struct graph_ref **v;
	size_t n, i, len = 1;
	char *out, *r;

	n = graph_config_refs(s->cfg, &v);
	for (i = 0; i < n; i++)
		len += strlen(v[i]->path) + 64;
	out = calloc(1, len);
	for (i = 0; i < n; i++) {
		r = graph_ref_str(v[i]);
		if (i > 0)
			strcat(out, " ");
		strcat(out, r);
		free(r);
	}
	free(v);
	return out;
}

/* Two independent stages feeding a third, written last but first here. */
static const char three[] =
    "merge_method: slerp\n"
    "base_model: ab\n"
    "models:\n"
    "  - model: ab\n"
    "  - model: {model: cd, lora: ./adapter}\n"
    "parameters: {t: 0.5}\n"
    "dtype: bfloat16\n"
    "---\n"
    "name: ab\n"
    "merge_method: linear\n"
    "models:\n"
    "  - model: a\n    parameters: {weight: 0.5}\n"
    "  - model: b\n    parameters: {weight: 0.5}\n"
    "---\n"
    "name: cd\n"
    "merge_method: linear\n"
    "models:\n"
    "  - model: c+./lora-c\n    parameters: {weight: 0.5}\n"
    "  - model: d\n    parameters: {weight: 0.5}\n";

static void
test_three(void)
{
	struct graph_pipeline *p = NULL;
	struct graph_diags d;
	const struct graph_stage *f, *ab, *cd;
	char *r;

	ok_int_eq(load(three, "/tmp/inter", &p, &d), 0, "three stages load");
	if (p == NULL)
		return;
	ok_int_eq((int)p->nstages, 3, "three stages");
	f = stage(p, NULL);
	ab = stage(p, "ab");
	cd = stage(p, "cd");
	ok(f != NULL && ab != NULL && cd != NULL, "the final and two named");
	ok(p->final == 0, "the unnamed one is the final merge");
	ok(p->order[0] == 1 && p->order[1] == 2 && p->order[2] == 0,
	    "ordered ab, cd, then the final (%zu %zu %zu)", p->order[0],
	    p->order[1], p->order[2]);
	ok(f->ndeps == 2 && f->deps[0] == 1 && f->deps[1] == 2,
	    "the final reads both");
	ok(ab->ndeps == 0 && cd->ndeps == 0, "the others read none");
	r = refs(f);
	ok_str_eq(r, "/tmp/inter/ab /tmp/inter/cd+./adapter", "references "
	    "to stages become DIR/NAME, the adapter kept");
	free(r);
	r = refs(cd);
	ok_str_eq(r, "c+./lora-c d", "other references are left alone");
	free(r);
	ok(strncmp(ab->cfg->text, "name: ab\n", 9) == 0 &&
	    strstr(ab->cfg->text, "---") == NULL && strstr(ab->cfg->text,
	    "name: cd") == NULL, "each stage keeps its own document's text");
	ok(ab->mark.line == 9, "a stage's place is its first key's (line %d)",
	    ab->mark.line);
	ok_int_eq((int)d.nerrors, 0, "no problem");
	ok_int_eq((int)d.n, 0, "and no warning of 'name'");
	graph_pipeline_free(p);
	graph_diags_fini(&d);
	ok_int_eq(load(three, NULL, &p, &d), 0, "without a directory");
	r = p != NULL ? refs(stage(p, NULL)) : NULL;
	ok_str_eq(r, "ab cd+./adapter", "the names stay as written");
	free(r);
	graph_pipeline_free(p);
	graph_diags_fini(&d);
}

static void
test_single(void)
{
	static const char one[] = "merge_method: linear\nmodels:\n"
	    "  - model: a\n  - model: b\n";
	struct graph_pipeline *p = NULL;
	struct graph_diags d;

	ok_int_eq(load(one, "/x", &p, &d), 0, "a plain config is a pipeline");
	ok(p != NULL && p->nstages == 1 && p->final == 0 && p->order[0] == 0,
	    "of one final stage");
	ok(p != NULL && strcmp(p->stages[0].cfg->text, one) == 0,
	    "with the whole text");
	graph_pipeline_free(p);
	graph_diags_fini(&d);
	ok_int_eq(load("name: x\nmerge_method: linear\nmodels:\n"
	    "  - model: a\n---\nname: y\nmerge_method: linear\nmodels:\n"
	    "  - model: x\n---\n", "/o", &p, &d), 0, "all named, an empty "
	    "document at the end");
	ok(p != NULL && p->nstages == 2 && p->final == (size_t)-1,
	    "two stages and no final one");
	graph_pipeline_free(p);
	graph_diags_fini(&d);
}

static void
test_refusals(void)
{
	static const struct {
		const char *what;
		const char *text;
		const char *where;
		const char *says;
	} bad[] = {
		{ "a name used twice",
		    "name: x\nmerge_method: linear\nmodels: [{model: a}]\n"
		    "---\nname: x\nmerge_method: linear\nmodels: [{model: b}]\n",
		    "multi.yml:5:7", "used twice (first at line 1)" },
		{ "two unnamed",
		    "merge_method: linear\nmodels: [{model: a}]\n---\n"
		    "merge_method: linear\nmodels: [{model: b}]\n",
		    "multi.yml:4:1", "a second document without a 'name'" },
		{ "a path as a name",
		    "name: a/b\nmerge_method: linear\nmodels: [{model: a}]\n",
		    "multi.yml:1:7", "plain directory name" },
		{ "'..' as a name",
		    "name: '..'\nmerge_method: linear\nmodels: [{model: a}]\n",
		    "multi.yml:1:7", "plain directory name" },
		{ "a list as a name",
		    "name: [x]\nmerge_method: linear\nmodels: [{model: a}]\n",
		    "multi.yml:1:7", "plain directory name" },
		{ "a stage reading itself",
		    "name: x\nmerge_method: linear\nmodels: [{model: x}]\n---\n"
		    "merge_method: linear\nmodels: [{model: x}]\n",
		    "multi.yml:3:18", "reads its own output" },
		{ "a revision on a stage",
		    "name: x\nmerge_method: linear\nmodels: [{model: a}]\n---\n"
		    "merge_method: linear\nmodels: [{model: x@main}]\n",
		    "multi.yml:6:18", "has no revisions" },
		{ "a cycle",
		    "name: x\nmerge_method: linear\nmodels: [{model: y}]\n---\n"
		    "name: y\nmerge_method: linear\nmodels: [{model: x}]\n---\n"
		    "merge_method: linear\nmodels: [{model: x}]\n",
		    "multi.yml", "stages 'x', 'y', '(unnamed)' read each other" },
		{ "a bad stage among good ones",
		    "name: x\nmerge_method: linear\nmodels: [{model: a}]\n---\n"
		    "merge_method: lineer\nmodels: [{model: x}]\n"
		    "dtype: bf16\n",
		    "multi.yml:7:8", "bfloat16" },
		{ "nothing", "---\n---\n", "multi.yml", "empty" },
	};
	struct graph_pipeline *p;
	struct graph_diags d;
	size_t i;
	int rc;

	for (i = 0; i < sizeof bad / sizeof *bad; i++) {
		p = NULL;
		rc = load(bad[i].text, "/o", &p, &d);
		ok(rc != 0 && p == NULL && has_error(&d, bad[i].where,
		    bad[i].says), "%s: refused at %s", bad[i].what,
		    bad[i].where);
		graph_pipeline_free(p);
		graph_diags_fini(&d);
	}
	p = NULL;
	graph_diags_init(&d);
	ok(graph_pipeline_load_buffer("multi.yml", "name: x\n\0\n", 10, "/o",
	    &p, &d) != 0 && p == NULL && has_error(&d, "multi.yml", "NUL"),
	    "a NUL byte: refused");
	graph_diags_fini(&d);
	/* Every problem at once: a bad name and a bad stage. */
	load("name: x\nmerge_method: linear\nmodels: [{model: a}]\n---\n"
	    "name: x\nmerge_method: linear\nmodels: [{model: b}]\n---\n"
	    "merge_method: linear\nmodels: [{model: x}]\ndtype: bf16\n", "/o",
	    &p, &d);
	ok(d.nerrors >= 2 && has_error(&d, NULL, "used twice") &&
	    has_error(&d, NULL, "bfloat16"), "problems in names and in "
	    "stages are reported together (%zu)", d.nerrors);
	graph_diags_fini(&d);
}

/*
 * A stage's text, as its mergekit_config.yml holds it: its references to
 * stages rewritten (quoted where a plain scalar would read otherwise),
 * the adapter and the object form kept, everything else as written;
 * also after non-ASCII text (libyaml counts characters, not bytes).
 */
static void
test_text(void)
{
	static const char text[] =
	    "# étape ünïcode: the offsets count bytes\n"
	    "name: ab\n"
	    "merge_method: linear\n"
	    "models: [{model: a}, {model: b}]   # « a comment »\n"
	    "---\n"
	    "merge_method: slerp  # ‹keep›\n"
	    "base_model: ab\n"
	    "models:\n"
	    "  - model: \"ab\"\n"
	    "  - model: {model: {path: ab}, lora: ./l}\n"
	    "  - model: ab+./adapter@v2\n"
	    "parameters: {t: 0.5}\n";
	static const char want[] =
	    "merge_method: slerp  # ‹keep›\n"
	    "base_model: /o/ab\n"
	    "models:\n"
	    "  - model: /o/ab\n"
	    "  - model: {model: {path: /o/ab}, lora: ./l}\n"
	    "  - model: /o/ab+./adapter@v2\n"
	    "parameters: {t: 0.5}\n";
	struct graph_pipeline *p = NULL;
	struct graph_diags d;
	const struct graph_stage *f;

	ok_int_eq(load(text, "/o", &p, &d), 0, "non-ASCII text loads");
	f = p != NULL ? stage(p, NULL) : NULL;
	ok_str_eq(f != NULL ? f->cfg->text : "", want, "the final stage's "
	    "text has its references rewritten, the rest kept");
	f = p != NULL ? stage(p, "ab") : NULL;
	ok(f != NULL && strstr(f->cfg->text, "« a comment »\n") != NULL &&
	    strstr(f->cfg->text, "slerp") == NULL, "the first stage's text "
	    "ends where its document does");
	graph_pipeline_free(p);
	graph_diags_fini(&d);
	p = NULL;
	ok_int_eq(load("name: s\nmerge_method: linear\nmodels: [{model: a}]\n"
	    "---\nmerge_method: linear\nmodels: [{model: s}, {model: c}]\n",
	    "/my dir: x", &p, &d), 0, "a directory that YAML must quote");
	f = p != NULL ? stage(p, NULL) : NULL;
	ok_str_eq(f != NULL ? f->cfg->text : "", "merge_method: linear\n"
	    "models: [{model: \"/my dir: x/s\"}, {model: c}]\n",
	    "it is written double-quoted");
	graph_pipeline_free(p);
	graph_diags_fini(&d);
}

/* Stage seeds: fixed for a name, apart for different names, 48 bits. */
static void
test_seed(void)
{
	uint64_t a = graph_stage_seed(7, "ab"), b = graph_stage_seed(7, "cd");

	ok(a == graph_stage_seed(7, "ab"), "a stage's seed is the same on "
	    "every run");
	ok(a != b && a != graph_stage_seed(8, "ab") &&
	    graph_stage_seed(7, "") != a, "and differs with the name and "
	    "the pipeline's seed");
	ok(a < (1ull << 48) && b < (1ull << 48), "48 bits, as drawn seeds");
	/* Pinned (FNV-1a and splitmix64 computed apart, in Python): a
	 * change here changes every pipeline's random results. */
	ok(a == 258521763654149ull && graph_stage_seed(0, "") ==
	    136345542786864ull, "the derivation is the documented one");
}

int
main(void)
{
	tap_plan_lazy();
	test_three();
	test_single();
	test_refusals();
	test_text();
	test_seed();
	return tap_done();
}
