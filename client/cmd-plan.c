/* SPDX-License-Identifier: MIT */
/*
 * cmd-plan.c: "mergectl plan CONFIG [--json]": the whole merge, from
 * headers only, before any weight is read: the architecture chosen and
 * why, every output tensor with its method, sources (model:tensor@layer),
 * parameters, shape and dtype, the output files, the bytes to read and
 * write, the peak memory under the budget, and every problem.  Exit 0
 * when the merge can run, 3 when it cannot.  Needs no daemon; the daemon
 * runs the same planner when a job is submitted.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>

#include "cli.h"
#include "opts.h"
#include "xmalloc.h"

static const char *
jstr(const cJSON *o, const char *k)
{
	const char *s = cJSON_GetStringValue(cJSON_GetObjectItem(o, k));

	return s != NULL ? s : "";
}

static double
jnum(const cJSON *o, const char *k)
{
	const cJSON *v = cJSON_GetObjectItem(o, k);

	return cJSON_IsNumber(v) ? v->valuedouble : 0;
}

static void
print_shape(struct xbuf *x, const cJSON *a)
{
	const cJSON *d;
	bool first = true;

	xbuf_add(x, "[", 1);
	cJSON_ArrayForEach(d, a) {
		xbuf_printf(x, "%s%.0f", first ? "" : ",", d->valuedouble);
		first = false;
	}
	xbuf_add(x, "]", 1);
}

/* "t=0.5 normalize=true" from a parameters object. */
static void
print_params(struct xbuf *x, const cJSON *ps)
{
	const cJSON *v;

	cJSON_ArrayForEach(v, ps) {
		if (cJSON_IsBool(v))
			xbuf_printf(x, " %s=%s", v->string, cJSON_IsTrue(v) ?
			    "true" : "false");
		else
			xbuf_printf(x, " %s=%g", v->string, v->valuedouble);
	}
}

static void
print_tensor(const cJSON *t)
{
	struct xbuf x = { 0 };
	const cJSON *s;
	bool first = true;

	print_shape(&x, cJSON_GetObjectItem(t, "shape"));
	printf("%-48s %-16s %-14s %-5s", jstr(t, "name"), jstr(t, "method"),
	    x.data, jstr(t, "dtype"));
	xbuf_free(&x);
	cJSON_ArrayForEach(s, cJSON_GetObjectItem(t, "sources")) {
		xbuf_printf(&x, "%s%s:%s", first ? "" : " + ",
		    jstr(s, "model"), jstr(s, "tensor"));
		if (cJSON_IsNumber(cJSON_GetObjectItem(s, "layer")))
			xbuf_printf(&x, "@%.0f", jnum(s, "layer"));
		print_params(&x, cJSON_GetObjectItem(s, "parameters"));
		first = false;
	}
	print_params(&x, cJSON_GetObjectItem(t, "parameters"));
	if (*jstr(t, "note") != '\0')
		xbuf_printf(&x, "  (%s)", jstr(t, "note"));
	printf(" %s\n", x.data ? x.data : "");
	xbuf_free(&x);
}

static void
print_module(const cJSON *t)
{
	printf("module        %s: ", jstr(t, "name"));
	if (*jstr(t, "layer_prefix") != '\0')
		printf("%d layers (%s*)", (int)jnum(t, "layers"),
		    jstr(t, "layer_prefix"));
	else
		printf("no layers");
	if (strcmp(jstr(t, "from"), "copied") == 0)
		printf(", copied from the architecture model");
	printf("\n");
}

/* Where a model's rows come from, by the names plan-json.c uses. */
static const struct {
	const char *key;
	const char *text;
} row_sources[] = {
	{ "one", "from the one model that has the token" },
	{ "base", "from the base model" },
	{ "mean", "the mean of the models that have it" },
	{ "zero", "zeros (no model has it)" },
	{ "tokens", "as tokens: says" },
};

/* "; rows not its own: N from ..., ..." for one model, or nothing. */
static double
print_rows_from(const cJSON *from)
{
	double n, total = 0;
	size_t k;

	for (k = 0; k < sizeof row_sources / sizeof *row_sources; k++) {
		if ((n = jnum(from, row_sources[k].key)) == 0)
			continue;
		printf("%s%.0f %s", total == 0 ? "; rows not its own: " : ", ",
		    n, row_sources[k].text);
		total += n;
	}
	return total;
}

static void
print_tokenizer(const cJSON *t)
{
	const cJSON *m, *x;

	printf("tokenizer     %s, from %s (%s): %.0f tokens, %.0f of its own "
	    "and %.0f added", jstr(t, "source"), jstr(t, "from"),
	    jstr(t, "kind"), jnum(t, "tokens"), jnum(t, "from_tokens"),
	    jnum(t, "added"));
	if (jnum(t, "stripped") > 0)
		printf(" (%.0f past its vocab_size left out)",
		    jnum(t, "stripped"));
	if (jnum(t, "rows") != jnum(t, "tokens"))
		printf("; %.0f rows, padded with their mean", jnum(t, "rows"));
	printf("\n");
	cJSON_ArrayForEach(m, cJSON_GetObjectItem(t, "models")) {
		printf("  %s lacks %.0f token%s", jstr(m, "ref"),
		    jnum(m, "lacks"), jnum(m, "lacks") == 1 ? "" : "s");
		if (print_rows_from(cJSON_GetObjectItem(m, "rows_from")) == 0 &&
		    jnum(m, "lacks") > 0)
			printf(" (not an input of the embeddings)");
		printf("\n");
	}
	/* Other vocabulary-indexed tensors whose rows come from elsewhere. */
	cJSON_ArrayForEach(x, cJSON_GetObjectItem(t, "tensors"))
		cJSON_ArrayForEach(m, cJSON_GetObjectItem(x, "models")) {
			printf("  %s: %s", jstr(x, "name"), jstr(m, "ref"));
			if (print_rows_from(cJSON_GetObjectItem(m,
			    "rows_from")) == 0)
				printf(": its own rows, or not an input of it");
			printf("\n");
		}
}

/* Tensors stored unchanged from one input. */
static int
count_copies(const cJSON *j)
{
	const cJSON *t;
	int n = 0;

	cJSON_ArrayForEach(t, cJSON_GetObjectItem(j, "tensors"))
		n += strcmp(jstr(t, "method"), "copy") == 0;
	return n;
}

void
cli_print_plan(const cJSON *j, bool tensors)
{
	const cJSON *a = cJSON_GetObjectItem(j, "architecture"), *t;
	char *r, *w, *m, *b, *least;
	int n;

	r = graph_format_size((uint64_t)jnum(j, "bytes_read"));
	w = graph_format_size((uint64_t)jnum(j, "bytes_written"));
	m = graph_format_size((uint64_t)jnum(j, "peak_memory"));
	b = graph_format_size((uint64_t)jnum(j, "memory_budget"));
	least = graph_format_size((uint64_t)jnum(j, "min_memory"));
	printf("architecture  %s (%s) from %s: %s\n", jstr(a, "name"),
	    jstr(a, "model_type"), jstr(a, "model"), jstr(a, "reason"));
	printf("method        %s, %d output layers, %d tensors (%d copied "
	    "unchanged)\n", jstr(j, "method"), (int)jnum(j, "layers"),
	    cJSON_GetArraySize(cJSON_GetObjectItem(j, "tensors")),
	    count_copies(j));
	printf("reads         %s; writes %s\n", r, w);
	printf("memory        peak %s of the budget %s; runs in %s or more\n",
	    m, b, least);
	free(least);
	/* A decoder-only model's one module says nothing new. */
	if (cJSON_GetArraySize(cJSON_GetObjectItem(j, "modules")) > 1)
		cJSON_ArrayForEach(t, cJSON_GetObjectItem(j, "modules"))
			print_module(t);
	t = cJSON_GetObjectItem(j, "vocab_size");
	if (t != NULL)
		printf("config        %s becomes %.0f: %s\n", jstr(t, "key"),
		    jnum(t, "value"), strcmp(jstr(t, "why"), "tokenizer") == 0 ?
		    "the output vocabulary's rows" :
		    "the embeddings were cut to their common rows");
	if ((t = cJSON_GetObjectItem(j, "tokenizer")) != NULL)
		print_tokenizer(t);
	t = cJSON_GetObjectItem(j, "chat_template");
	if (t != NULL) {
		/* Its start, on one line: templates are long, and may come
		 * from another user's files, so control bytes are shown
		 * escaped and the cut falls between UTF-8 characters. */
		const char *s = jstr(t, "text");
		size_t len = strcspn(s, "\n"), show = len > 60 ? 60 : len;
		char *line;

		while (show > 0 && show < len &&
		    ((unsigned char)s[show] & 0xc0) == 0x80)
			show--;
		line = graph_text_printable(xstrndup(s, show));
		printf("chat template %s: %s%s\n", jstr(t, "from"), line,
		    show < len || s[len] != '\0' ? "..." : "");
		free(line);
	}
	if (jnum(j, "kept_base") > 0)
		printf("kept          %.0f tensors from the base model, "
		    "unchanged: no t applies to them\n", jnum(j, "kept_base"));
	free(r);
	free(w);
	free(m);
	free(b);
	if (tensors) {
		printf("\n%-48s %-16s %-14s %-5s %s\n", "TENSOR", "METHOD",
		    "SHAPE", "DTYPE", "SOURCES AND PARAMETERS");
		cJSON_ArrayForEach(t, cJSON_GetObjectItem(j, "tensors"))
			print_tensor(t);
		printf("\n");
	}
	n = 0;
	cJSON_ArrayForEach(t, cJSON_GetObjectItem(j, "unused")) {
		/* Listed, so that nothing is dropped silently (Part A 17). */
		if (n++ < 10)
			printf("unused        %s:%s (%s)\n", jstr(t, "model"),
			    jstr(t, "tensor"), jstr(t, "reason"));
	}
	if (n > 10)
		printf("unused        ... and %d more\n", n - 10);
	cJSON_ArrayForEach(t, cJSON_GetObjectItem(j, "shards")) {
		w = graph_format_size((uint64_t)jnum(t, "bytes"));
		printf("file          %s: %.0f tensors, %s\n", jstr(t, "name"),
		    jnum(t, "tensors"), w);
		free(w);
	}
}

static void
plan_usage(FILE *fp)
{
	fprintf(fp, "usage: %s plan CONFIG [options]\n"
	    "A summary: the architecture and why, the method, the output "
	    "layers and\ntensors, the bytes to read and write, the memory "
	    "it needs, the files.\n"
	    "  --tensors              also every output tensor: method, "
	    "shape, dtype,\n"
	    "                         sources and parameters\n"
	    "  --json                 the plan as JSON (on stdout), "
	    "tensors included\n"
	    "  --memory SIZE          the budget to size the plan for "
	    "(default: a quarter\n"
	    "                         of RAM)\n"
	    "  --out-shard-size SIZE  the largest output file (default 5B)\n"
	    "  --allow-crimes         allow models of different architectures\n"
	    "  --random-seed N        seed for random methods\n"
	    "  --transformers-cache DIR  look models up in this Hugging Face "
	    "cache\n"
	    "A file of several documents (a pipeline) shows its stage graph "
	    "and each\nstage's plan; --intermediate-dir DIR and --out-path OUT "
	    "show where run\nwould write them and which are up to date "
	    "(--lazy, the default); --fuse\nshows which stages fuse, and "
	    "why the others do not.\n"
	    "It takes every option of '%s run' and mergekit-yaml's, so a "
	    "command line\nshows its plan with 'run CONFIG OUT' replaced by "
	    "'plan CONFIG'.\n", cli_progname, cli_progname);
}

int
cli_cmd_plan(int argc, char **argv)
{
	static const struct option own[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "tensors", no_argument, NULL, OPT_OWN },
		{ NULL, 0, NULL, 0 },
	};
	struct option *merge = cli_merge_longopts(own);
	struct option *longopts = cli_longopts_cat(merge, cli_stage_longopts);
	struct cli_stage_opts so;
	struct cli_merge_opts o;
	struct graph_plan_opts po;
	struct graph_config *cfg = NULL;
	struct graph_plan *plan = NULL;
	struct graph_diags d;
	cJSON *j;
	char *msg;
	int c, rc = CLI_EXIT_OK;

	free(merge);
	cli_merge_opts_default(&o);
	cli_stage_opts_default(&so);
	optind = 1;
	while (rc == CLI_EXIT_OK && (c = cli_getopt(argc, argv, "qhvj:",
	    longopts)) != -1) {
		if (c == 'h') {
			plan_usage(stdout);
			free(longopts);
			return CLI_EXIT_OK;
		}
		if (c == OPT_OWN) {
			o.tensors = true;
			continue;
		}
		if (c == '?' || (cli_stage_opt(&so, c, optarg) != 0 &&
		    cli_merge_opt(&o, c, optarg) != 0))
			rc = CLI_EXIT_USAGE;
	}
	free(longopts);
	if (rc == CLI_EXIT_OK && argc - optind != 1) {
		cli_usage_error("plan needs CONFIG");
		rc = CLI_EXIT_USAGE;
	}
	if (rc != CLI_EXIT_OK) {
		fprintf(stderr, "%s: '%s plan --help' lists the options\n",
		    cli_progname, cli_progname);
		return rc;
	}
	if (cli_stage_count(argv[optind]) > 1)
		return cli_plan_stages(&o, &so, argv[optind]);
	graph_diags_init(&d);
	cli_plan_opts(&o, &po);
	if (graph_config_load_file(argv[optind], &cfg, &d) == 0)
		graph_plan_build(cfg, &po, &plan, &d);
	rc = plan != NULL ? CLI_EXIT_OK : CLI_EXIT_INVALID;
	j = graph_plan_json(plan, &d);
	if (o.json) {
		if (plan == NULL) {
			msg = xasprintf("%zu problem%s found; the merge cannot "
			    "run", d.nerrors, d.nerrors == 1 ? "" : "s");
			cli_error_attach(j, PROTO_E_BAD_CONFIG, msg, &d);
			free(msg);
		}
		cli_print_json(j);
	} else {
		if (plan != NULL)
			cli_print_plan(j, o.tensors);
		graph_diags_print(&d, stderr);
		if (plan == NULL)
			fprintf(stderr, "%s: %zu problem%s found; the merge "
			    "cannot run\n", cli_progname, d.nerrors,
			    d.nerrors == 1 ? "" : "s");
	}
	cJSON_Delete(j);
	graph_plan_free(plan);
	graph_config_free(cfg);
	graph_diags_fini(&d);
	return rc;
}
