/* SPDX-License-Identifier: MIT */
/*
 * cmd-inspect.c: "mergectl inspect A B [--base M] [--json] [--svg FILE]":
 * how alike two models' layers are (graph/inspect.c), as evidence for a
 * config's cross-layer mappings.
 *
 * The terminal gets a heat map of the kinds' mean cosine similarity, a
 * row per layer of A and a column per layer of B (pairs of columns
 * folded into one, their larger value, until the map fits 80 columns),
 * shaded " .:-=+*#%@" from low to high, each row's best match marked
 * '@' in bold where it is, and named at the row's end; then the
 * suggested mapping as a ready "slices:" snippet: each layer of A taken
 * with the layer of B most like it, runs of one offset joined into one
 * slice, the layers whose best match is below --threshold left to A
 * alone.  --json gives every kind's whole matrix, --svg FILE draws the
 * map with labelled axes and a legend.  It reads weights, as a merge
 * does, a block of rows at a time within --memory; plan never does.
 */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cJSON.h>

#include <uv.h>

#include "cli.h"
#include "xmalloc.h"

/* Shades from low to high similarity. */
static const char shades[] = " .:-=+*#%@";

struct inspect_args {
	const char *a, *b, *base, *svg, *config;
	double threshold;
	uint64_t memory;
	int threads;
	bool json, quiet;
};

static void
inspect_usage(FILE *fp)
{
	fprintf(fp, "usage: %s inspect A B [--base MODEL] [--json] "
	    "[--svg FILE] [--threshold X]\n"
	    "                [--memory SIZE] [-j N]\n"
	    "       %s inspect --config CFG [--json]\n"
	    "How alike every layer of A is to every layer of B: for each kind "
	    "of layer\nweight both have, the cosine similarity of the weights "
	    "(or, with --base, of\ntheir task vectors), as a heat map, and "
	    "the mapping of A's layers to B's\nit suggests as a slices: "
	    "snippet.  Reads the weights once, within --memory.\n\n"
	    "  --base MODEL     compare task vectors, X_i - MODEL_i; and the "
	    "per-layer norm\n                   of each model's difference "
	    "from it\n"
	    "  --json           everything, every kind's matrix, as JSON on "
	    "stdout\n"
	    "  --svg FILE       the heat map as an SVG file, with axes and a "
	    "legend\n"
	    "  --threshold X    the least similarity a suggested mapping may "
	    "have (0.5)\n"
	    "  --memory SIZE    the most memory to use (default: a quarter of "
	    "RAM)\n"
	    "  -j, --threads N  threads computing (default: CPU count)\n"
	    "  --config CFG     instead: the similarity of exactly the tensors "
	    "CFG merges\n                   from different layers\n",
	    cli_progname, cli_progname);
}

/* Index of the best column of row i of m (la x lb). */
static size_t
best_of(const struct graph_inspect *r, const double *m, size_t i)
{
	size_t j, best = 0;

	for (j = 1; j < r->lb; j++)
		if (m[i * r->lb + j] > m[i * r->lb + best])
			best = j;
	return best;
}

static char
shade(double v)
{
	int k = (int)floor((v < 0 ? 0 : v > 1 ? 1 : v) * 9.999);

	return shades[k];
}

/* The map: at most 80 columns, folding columns in pairs as needed. */
static void
print_map(const struct graph_inspect *r, bool tty)
{
	size_t i, j, k, fold = 1, cols, best;
	double v, top;

	while ((r->lb + fold - 1) / fold > 80 - 20)
		fold *= 2;
	cols = (r->lb + fold - 1) / fold;
	printf("mean cosine similarity over %zu kind%s; rows: layers of A, "
	    "columns: layers of B%s\n", r->nkinds, r->nkinds == 1 ? "" : "s",
	    fold > 1 ? " (each column the best of several)" : "");
	printf("      ");
	for (j = 0; j < cols; j++)
		putchar(j * fold % 10 == 0 ? '0' + (int)(j * fold / 10 % 10) :
		    ' ');
	putchar('\n');
	for (i = 0; i < r->la; i++) {
		best = best_of(r, r->mean, i);
		printf("%5zu ", i);
		for (j = 0; j < cols; j++) {
			top = -1;
			for (k = j * fold; k < (j + 1) * fold && k < r->lb; k++)
				if (r->mean[i * r->lb + k] > top)
					top = r->mean[i * r->lb + k];
			v = top;
			if (best / fold == j)
				printf("%s@%s", tty ? "\033[1m" : "", tty ?
				    "\033[0m" : "");
			else
				putchar(shade(v));
		}
		printf("  -> %zu (%.3f)\n", best, r->mean[i * r->lb + best]);
	}
	printf("shades, low to high: '%s'; @ each row's best\n", shades);
}

/*
 * The suggested slices: A's layer i with B's best match, runs of one
 * offset joined; a layer below the threshold is A's alone.
 */
static char *
slices_snippet(const struct graph_inspect *r, const char *a, const char *b,
    double threshold)
{
	struct xbuf x = { NULL, 0, 0 };
	size_t i, j, start, best;
	long off, o;
	bool ok;

	xbuf_printf(&x, "slices:\n");
	for (i = 0; i < r->la; i = j) {
		best = best_of(r, r->mean, i);
		ok = r->mean[i * r->lb + best] >= threshold;
		off = (long)best - (long)i;
		start = i;
		for (j = i + 1; j < r->la; j++) {
			size_t bj = best_of(r, r->mean, j);
			bool okj = r->mean[j * r->lb + bj] >= threshold;

			o = (long)bj - (long)j;
			if (okj != ok || (ok && o != off))
				break;
		}
		xbuf_printf(&x, "  - sources:\n      - model: %s\n        "
		    "layer_range: [%zu, %zu]\n", a, start, j);
		if (ok)
			xbuf_printf(&x, "      - model: %s\n        "
			    "layer_range: [%zu, %zu]\n", b,
			    (size_t)((long)start + off),
			    (size_t)((long)j + off));
	}
	return xbuf_take(&x);
}

static cJSON *
matrix_json(const double *m, size_t la, size_t lb)
{
	cJSON *rows = cJSON_CreateArray(), *row;
	size_t i, j;

	for (i = 0; i < la; i++) {
		row = cJSON_CreateArray();
		for (j = 0; j < lb; j++)
			cJSON_AddItemToArray(row, cJSON_CreateNumber(
			    m[i * lb + j]));
		cJSON_AddItemToArray(rows, row);
	}
	return rows;
}

static void
print_json(const struct graph_inspect *r, const struct inspect_args *a,
    const char *snippet)
{
	cJSON *o = cJSON_CreateObject(), *arr, *k, *b;
	size_t i, best;

	cJSON_AddTrueToObject(o, "ok");
	cJSON_AddStringToObject(o, "a", a->a);
	cJSON_AddStringToObject(o, "b", a->b);
	if (a->base != NULL)
		cJSON_AddStringToObject(o, "base", a->base);
	cJSON_AddNumberToObject(o, "layers_a", (double)r->la);
	cJSON_AddNumberToObject(o, "layers_b", (double)r->lb);
	arr = cJSON_AddArrayToObject(o, "kinds");
	for (i = 0; i < r->nkinds; i++) {
		k = cJSON_CreateObject();
		cJSON_AddStringToObject(k, "kind", r->kinds[i].name);
		cJSON_AddBoolToObject(k, "submatrix", r->kinds[i].submatrix);
		cJSON_AddNumberToObject(k, "rows", (double)r->kinds[i].rows);
		cJSON_AddNumberToObject(k, "cols", (double)r->kinds[i].cols);
		cJSON_AddItemToObject(k, "cos", matrix_json(r->kinds[i].cos,
		    r->la, r->lb));
		cJSON_AddItemToArray(arr, k);
	}
	cJSON_AddItemToObject(o, "mean", matrix_json(r->mean, r->la, r->lb));
	cJSON_AddItemToObject(o, "norm_a", matrix_json(r->norm_a, 1, r->la));
	cJSON_AddItemToObject(o, "norm_b", matrix_json(r->norm_b, 1, r->lb));
	arr = cJSON_AddArrayToObject(o, "best");
	for (i = 0; i < r->la; i++) {
		best = best_of(r, r->mean, i);
		b = cJSON_CreateObject();
		cJSON_AddNumberToObject(b, "layer", (double)i);
		cJSON_AddNumberToObject(b, "match", (double)best);
		cJSON_AddNumberToObject(b, "cos", r->mean[i * r->lb + best]);
		cJSON_AddItemToArray(arr, b);
	}
	cJSON_AddStringToObject(o, "slices", snippet);
	cli_print_json(o);
	cJSON_Delete(o);
}

/* A colour for v in [0, 1]: from pale to dark blue. */
static void
svg_colour(double v, char *buf, size_t len)
{
	double t = v < 0 ? 0 : v > 1 ? 1 : v;

	snprintf(buf, len, "rgb(%d,%d,%d)", (int)(247 - t * 239),
	    (int)(251 - t * 203), (int)(255 - t * 148));
}

/* The map's side, at most, when its cells grow for a few layers. */
#define SVG_MAP_PX 336

static int
write_svg(const struct graph_inspect *r, const struct inspect_args *a)
{
	const int left = 60, top = 56, legend = 24;
	size_t i, j, best, most = r->la > r->lb ? r->la : r->lb;
	/* Cells of 12 px, larger for a few layers (up to 28 px), so
	 * that a small model's map is not a postage stamp. */
	int cell = most > 0 && SVG_MAP_PX / (int)most > 12 ?
	    SVG_MAP_PX / (int)most : 12;
	int w, h, dot;
	char col[32];
	FILE *fp;

	if (cell > 28)
		cell = 28;
	dot = cell / 5 > 3 ? cell / 5 : 3;
	w = left + (int)r->lb * cell + 80;
	h = top + (int)r->la * cell + 60;

	/* Room for the title and the legend, however few the layers. */
	if (w < left + 11 * legend + 180)
		w = left + 11 * legend + 180;
	if ((fp = fopen(a->svg, "w")) == NULL) {
		cli_error(CLI_E_FAILED, "%s: cannot write it", a->svg);
		return CLI_EXIT_FAILED;
	}
	fprintf(fp, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" "
	    "height=\"%d\" viewBox=\"0 0 %d %d\" font-family=\"sans-serif\" "
	    "font-size=\"10\">\n<rect width=\"100%%\" height=\"100%%\" "
	    "fill=\"white\"/>\n", w, h, w, h);
	fprintf(fp, "<text x=\"%d\" y=\"14\" font-size=\"12\">mean cosine "
	    "similarity of layers (%zu kinds)</text>\n", left, r->nkinds);
	fprintf(fp, "<text x=\"%d\" y=\"36\">layer of B</text>\n", left);
	fprintf(fp, "<text x=\"12\" y=\"%d\" transform=\"rotate(-90 12 %d)\">"
	    "layer of A</text>\n", top + (int)r->la * cell / 2, top +
	    (int)r->la * cell / 2);
	for (i = 0; i < r->la; i++) {
		best = best_of(r, r->mean, i);
		if (i % 5 == 0)
			fprintf(fp, "<text x=\"%d\" y=\"%d\" "
			    "text-anchor=\"end\">%zu</text>\n", left - 4,
			    top + (int)i * cell + cell / 2 + 4, i);
		for (j = 0; j < r->lb; j++) {
			svg_colour(r->mean[i * r->lb + j], col, sizeof col);
			fprintf(fp, "<rect x=\"%d\" y=\"%d\" width=\"%d\" "
			    "height=\"%d\" fill=\"%s\"><title>A %zu, B %zu: "
			    "%.4f</title></rect>\n", left + (int)j * cell, top +
			    (int)i * cell, cell, cell, col, i, j,
			    r->mean[i * r->lb + j]);
		}
		fprintf(fp, "<circle cx=\"%d\" cy=\"%d\" r=\"%d\" "
		    "fill=\"#cf222e\"/>\n", left + (int)best * cell + cell / 2,
		    top + (int)i * cell + cell / 2, dot);
	}
	for (j = 0; j < r->lb; j += 5)
		fprintf(fp, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">%zu"
		    "</text>\n", left + (int)j * cell + cell / 2, top - 4, j);
	/* The legend: the scale, and the best-match mark. */
	for (i = 0; i <= 10; i++) {
		svg_colour((double)i / 10, col, sizeof col);
		fprintf(fp, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"10\" "
		    "fill=\"%s\"/>\n", left + (int)i * legend, top +
		    (int)r->la * cell + 20, legend, col);
	}
	fprintf(fp, "<text x=\"%d\" y=\"%d\">0</text><text x=\"%d\" y=\"%d\" "
	    "text-anchor=\"end\">1</text>\n", left, top + (int)r->la * cell +
	    44, left + 11 * legend, top + (int)r->la * cell + 44);
	fprintf(fp, "<circle cx=\"%d\" cy=\"%d\" r=\"3\" fill=\"#cf222e\"/>"
	    "<text x=\"%d\" y=\"%d\">best match of the row</text>\n", left +
	    11 * legend + 20, top + (int)r->la * cell + 25, left + 11 *
	    legend + 28, top + (int)r->la * cell + 29);
	fprintf(fp, "</svg>\n");
	if (fclose(fp) != 0) {
		cli_error(CLI_E_FAILED, "%s: cannot write it", a->svg);
		return CLI_EXIT_FAILED;
	}
	return CLI_EXIT_OK;
}

static int
inspect_parse(int argc, char **argv, struct inspect_args *a)
{
	static const struct option longopts[] = {
		{ "base", required_argument, NULL, 'b' },
		{ "config", required_argument, NULL, 'c' },
		{ "json", no_argument, NULL, 'J' },
		{ "threads", required_argument, NULL, 'j' },
		{ "num-threads", required_argument, NULL, 'j' },
		{ "svg", required_argument, NULL, 's' },
		{ "threshold", required_argument, NULL, 't' },
		{ "memory", required_argument, NULL, 'm' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	char *end;
	int ch;

	memset(a, 0, sizeof *a);
	a->threshold = 0.5;
	a->memory = graph_default_memory();
	a->threads = uv_available_parallelism() > 0 ?
	    (int)uv_available_parallelism() : 1;
	optind = 1;
	while ((ch = cli_getopt(argc, argv, "qhj:", longopts)) != -1) {
		switch (ch) {
		case 'b':
			a->base = optarg;
			break;
		case 'c':
			a->config = optarg;
			break;
		case 'J':
			a->json = true;
			break;
		case 'j':
			a->threads = (int)strtol(optarg, &end, 10);
			if (*end != '\0' || a->threads < 1 || a->threads >
			    1024) {
				cli_usage_error("--threads: '%s' is not a "
				    "count from 1 to 1024", optarg);
				return CLI_EXIT_USAGE;
			}
			break;
		case 's':
			a->svg = optarg;
			break;
		case 't':
			a->threshold = strtod(optarg, &end);
			if (*end != '\0' || *optarg == '\0' || !(a->threshold >=
			    -1 && a->threshold <= 1)) {
				cli_usage_error("--threshold: '%s' is not a "
				    "number from -1 to 1", optarg);
				return CLI_EXIT_USAGE;
			}
			break;
		case 'm':
			if (graph_parse_size(optarg, true, &a->memory) != 0 ||
			    a->memory == 0) {
				cli_usage_error("--memory: '%s' is not a size",
				    optarg);
				return CLI_EXIT_USAGE;
			}
			break;
		case 'q':
			a->quiet = true;
			break;
		case 'h':
			inspect_usage(stdout);
			return -1;
		default:
			return CLI_EXIT_USAGE;
		}
	}
	if (a->config != NULL && (argc != optind || a->base != NULL ||
	    a->svg != NULL)) {
		cli_usage_error("inspect --config CFG takes no models, --base "
		    "or --svg: the config names them");
		return CLI_EXIT_USAGE;
	}
	if (a->config == NULL && argc - optind != 2) {
		cli_usage_error("inspect needs two models, A and B; '%s inspect "
		    "--help' says more", cli_progname);
		return CLI_EXIT_USAGE;
	}
	if (a->config == NULL) {
		a->a = argv[optind];
		a->b = argv[optind + 1];
	}
	return CLI_EXIT_OK;
}

/*
 * --config: plan the config (headers only), then read exactly the pairs
 * of tensors it maps across layers and say how alike each is.
 */
static int
inspect_config(const struct inspect_args *a)
{
	struct graph_plan_opts po;
	struct graph_config *cfg = NULL;
	struct graph_plan *plan = NULL;
	struct graph_inspect_pair *v = NULL;
	struct graph_diags d;
	cJSON *o, *arr, *x;
	char *cause = NULL;
	size_t n = 0, i;
	int rc = CLI_EXIT_OK;

	graph_diags_init(&d);
	graph_plan_opts_default(&po);
	po.budget = a->memory;
	if (graph_config_load_file(a->config, &cfg, &d) == 0)
		graph_plan_build(cfg, &po, &plan, &d);
	if (plan == NULL) {
		cli_error_diags(PROTO_E_BAD_CONFIG, &d, "%zu problem%s found; "
		    "nothing to show", d.nerrors, d.nerrors == 1 ? "" : "s");
		rc = CLI_EXIT_INVALID;
		goto out;
	}
	if (graph_inspect_config(plan, NULL, &v, &n, &cause) != 0) {
		cli_error(CLI_E_FAILED, "%s", cause);
		rc = CLI_EXIT_FAILED;
		goto out;
	}
	if (a->json) {
		o = cJSON_CreateObject();
		cJSON_AddTrueToObject(o, "ok");
		cJSON_AddStringToObject(o, "config", a->config);
		arr = cJSON_AddArrayToObject(o, "pairs");
		for (i = 0; i < n; i++) {
			x = cJSON_CreateObject();
			cJSON_AddStringToObject(x, "tensor", v[i].tensor);
			cJSON_AddStringToObject(x, "model_a", v[i].model_a);
			cJSON_AddStringToObject(x, "name_a", v[i].name_a);
			cJSON_AddNumberToObject(x, "layer_a",
			    (double)v[i].layer_a);
			cJSON_AddStringToObject(x, "model_b", v[i].model_b);
			cJSON_AddStringToObject(x, "name_b", v[i].name_b);
			cJSON_AddNumberToObject(x, "layer_b",
			    (double)v[i].layer_b);
			cJSON_AddNumberToObject(x, "cos", v[i].cos);
			cJSON_AddItemToArray(arr, x);
		}
		cli_print_json(o);
		cJSON_Delete(o);
	} else if (n == 0) {
		printf("%s maps no tensor across layers: every merged tensor "
		    "reads one layer of each model\n", a->config);
	} else {
		for (i = 0; i < n; i++)
			printf("%6.3f  %s  <-  %s layer %lld ~ %s layer %lld\n",
			    v[i].cos, v[i].tensor, v[i].model_a,
			    (long long)v[i].layer_a, v[i].model_b,
			    (long long)v[i].layer_b);
		printf("cosine similarity of each pair of inputs the config "
		    "merges from different layers\n");
	}
out:
	graph_inspect_pairs_free(v, n);
	free(cause);
	graph_plan_free(plan);
	graph_config_free(cfg);
	graph_diags_fini(&d);
	return rc;
}

int
cli_cmd_inspect(int argc, char **argv)
{
	struct graph_inspect_opts o;
	struct inspect_args a;
	struct graph_inspect *r = NULL;
	struct graph_diags d;
	char *snippet;
	int rc;

	if ((rc = inspect_parse(argc, argv, &a)) != 0)
		return rc < 0 ? CLI_EXIT_OK : rc;
	if (a.config != NULL)
		return inspect_config(&a);
	memset(&o, 0, sizeof o);
	o.a = a.a;
	o.b = a.b;
	o.base = a.base;
	o.memory = a.memory;
	o.threads = a.threads;
	graph_env_from_process(&o.env);
	graph_diags_init(&d);
	if (graph_inspect_run(&o, &r, &d) != 0) {
		cli_error_diags(PROTO_E_BAD_CONFIG, &d, "%zu problem%s found; "
		    "nothing to show", d.nerrors, d.nerrors == 1 ? "" : "s");
		graph_diags_fini(&d);
		return CLI_EXIT_INVALID;
	}
	graph_diags_fini(&d);
	snippet = slices_snippet(r, a.a, a.b, a.threshold);
	rc = CLI_EXIT_OK;
	if (a.json) {
		print_json(r, &a, snippet);
	} else {
		print_map(r, isatty(STDOUT_FILENO) && getenv("NO_COLOR") ==
		    NULL);
		printf("\nsuggested mapping (best match of each layer of A, at "
		    "least %.2f):\n%s", a.threshold, snippet);
	}
	if (a.svg != NULL)
		rc = write_svg(r, &a);
	free(snippet);
	graph_inspect_free(r);
	return rc;
}
