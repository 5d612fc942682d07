/* SPDX-License-Identifier: MIT */
/*
 * lora.c: genmodel --lora, a PEFT LoRA adapter for the model genmodel's
 * shape options describe, written as PEFT's save_pretrained() writes one:
 * adapter_model.safetensors, adapter_config.json and a README.md.  The
 * modules to adapt are picked from the tensors build_model() lays out, by
 * PEFT's rules for target_modules, layers_to_transform and rank_pattern,
 * so that an adapter fits the model genmodel writes from the same options,
 * hybrid and expert layers included.  Every value comes from genmodel's
 * own generator as a function of (seed, adapter tensor name, element
 * index): an adapter is as reproducible as a model, and as every adapter
 * tensor's name begins with "base_model.model.", none shares a stream with
 * a model tensor.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "lora.h"

#define PREFIX		"base_model.model."	/* PeftModel's wrapping */
#define ANAME_LEN	(NAME_LEN + 48)
#define WRITE_ELEMS	(1u << 16)	/* elements generated per fwrite() */
/*
 * PEFT initialises B to zero, so that training starts from the base
 * model; a trained adapter's B is not, and a zero B would hide every
 * mistake in applying it.
 */
#define B_SCALE		0.02
#define SAVE_SCALE	0.02	/* modules_to_save: like a model's weights */
#define DORA_SCALE	0.01	/* magnitudes 1 + 0.01 N(0,1) */

/* What --lora-targets may name; embed_tokens is --lora-embed's. */
static const char *const known_targets[] = {
	"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
	"down_proj", "lm_head",
};

#define NTARGETS	(sizeof(known_targets) / sizeof(known_targets[0]))

/* A comma-separated option, split in place. */
struct list {
	char	 *buf;
	char	**v;
	size_t	  n;
};

/* One KEY=VALUE of --rank-pattern or --alpha-pattern. */
struct pattern {
	const char	*key;
	uint64_t	 rank;
	double		 alpha;
};

/* A tensor of the adapter and how its values are drawn. */
struct atensor {
	char		 name[ANAME_LEN];
	int		 ndim;
	uint64_t	 shape[2];
	uint64_t	 nelem;
	double		 mean;
	double		 scale;
};

struct lora_adapter {
	const struct lora_options *o;
	struct list	 target_list;
	const char	*targets[NTARGETS + 1];	/* sorted, with embed_tokens */
	size_t		 ntargets;
	struct list	 save_list;
	const char	*save[2];	/* --modules-to-save, in given order */
	size_t		 nsave;
	struct list	 rank_list;
	struct pattern	*ranks;
	struct list	 alpha_list;
	struct pattern	*alphas;
	struct list	 layer_list;
	uint64_t	*layers;
	struct atensor	*t;
	size_t		 count;
	size_t		 cap;
};

static void	 split(struct list *, const char *, const char *);
static void	 free_list(struct list *);
static int	 cmp_name(const void *, const void *);
static int	 cmp_tensor(const void *, const void *);
static int	 in_names(const char *const *, size_t, const char *);
static void	 parse_targets(struct lora_adapter *, int);
static void	 parse_save(struct lora_adapter *, int);
static void	 check_key(const char *, const char *);
static double	 parse_alpha(const char *, const char *);
static struct pattern *parse_patterns(struct list *, const char *,
		     const char *, int);
static void	 parse_layers(struct lora_adapter *, uint64_t);
static int	 ends_with_module(const char *, const char *);
static int	 layer_index(const char *, uint64_t *);
static int	 adapted(const struct lora_adapter *, const char *);
static uint64_t	 module_rank(const struct lora_adapter *, const char *);
static void	 add_atensor(struct lora_adapter *, double, double,
		     uint64_t, uint64_t, const char *, ...) PRINTFLIKE(6, 7);
static void	 plan_module(struct lora_adapter *, const char *,
		     const struct tensor *);
static void	 plan_save(struct lora_adapter *, const struct tensor *,
		     size_t);
static void	 write_values(FILE *, const char *, const struct atensor *,
		     uint64_t, const struct dtype_info *, unsigned char *);
static void	 write_weights(const struct lora_adapter *, const char *,
		     uint64_t, const struct dtype_info *);
static void	 json_number(FILE *, double);
static void	 write_names(FILE *, const char *const *, size_t);
static void	 write_pattern(FILE *, const struct pattern *, size_t, int);
static void	 write_config(const struct lora_adapter *, const char *);
static void	 write_readme(const struct lora_adapter *, const char *);

/* The first adapter option given, for "--X needs --lora"; NULL: none. */
const char *
lora_given(const struct lora_options *o)
{
	if (o->targets != NULL)
		return "lora-targets";
	if (o->alpha_set)
		return "lora-alpha";
	if (o->save != NULL)
		return "modules-to-save";
	if (o->rank_pattern != NULL)
		return "rank-pattern";
	if (o->alpha_pattern != NULL)
		return "alpha-pattern";
	if (o->layers != NULL)
		return "layers-to-transform";
	if (o->peft_type != NULL)
		return "peft-type";
	if (o->base != NULL)
		return "lora-base";
	if (o->rslora)
		return "rslora";
	if (o->fan_in_fan_out)
		return "fan-in-fan-out";
	if (o->embed)
		return "lora-embed";
	if (o->dora)
		return "lora-dora";
	return NULL;
}

/* An empty item is refused: it is a typo, never a module or a layer. */
static void
split(struct list *l, const char *opt, const char *arg)
{
	char	*p;
	size_t	 i;

	if ((l->buf = strdup(arg)) == NULL)
		fatal("out of memory");
	l->n = 1;
	for (p = l->buf; *p != '\0'; p++)
		l->n += *p == ',';
	l->v = xmalloc(l->n * sizeof(*l->v));
	for (i = 0, p = l->buf; i < l->n; i++) {
		l->v[i] = p;
		p += strcspn(p, ",");
		if (*p != '\0')
			*p++ = '\0';
		if (*l->v[i] == '\0')
			usage_error("--%s: empty item in '%s'", opt, arg);
	}
}

static void
free_list(struct list *l)
{
	free(l->buf);
	free(l->v);
}

static int
cmp_name(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int
cmp_tensor(const void *a, const void *b)
{
	return strcmp(((const struct atensor *)a)->name,
	    ((const struct atensor *)b)->name);
}

static int
in_names(const char *const *v, size_t n, const char *name)
{
	size_t	i;

	for (i = 0; i < n; i++)
		if (strcmp(v[i], name) == 0)
			return 1;
	return 0;
}

/* target_modules is a set, which PEFT writes as a list; sorted here. */
static void
parse_targets(struct lora_adapter *a, int tied)
{
	const char	*name;
	size_t		 i, k;

	split(&a->target_list, "lora-targets", a->o->targets != NULL ?
	    a->o->targets : "q_proj,v_proj");
	for (i = 0; i < a->target_list.n; i++) {
		name = a->target_list.v[i];
		for (k = 0; k < NTARGETS; k++)
			if (strcmp(name, known_targets[k]) == 0)
				break;
		if (k == NTARGETS)
			usage_error("--lora-targets: unknown module '%s' "
			    "(q_proj, k_proj, v_proj, o_proj, gate_proj, "
			    "up_proj, down_proj or lm_head)", name);
		if (tied && strcmp(name, "lm_head") == 0)
			usage_error("--lora-targets: the model is --tied: its "
			    "lm_head is embed_tokens, not a module of its own");
		if (in_names(a->targets, a->ntargets, known_targets[k]))
			usage_error("--lora-targets: '%s' is given twice",
			    name);
		a->targets[a->ntargets++] = known_targets[k];
	}
	if (a->o->embed)
		a->targets[a->ntargets++] = "embed_tokens";
	qsort(a->targets, a->ntargets, sizeof(a->targets[0]), cmp_name);
}

/*
 * A module both adapted and saved whole is allowed, though PEFT, which
 * wraps a saved module instead of adapting it, never writes one: the keys
 * differ, and a reader that must pick one of the two is tested with it.
 */
static void
parse_save(struct lora_adapter *a, int tied)
{
	static const char *const known[] = { "embed_tokens", "lm_head" };
	const char	*name;
	size_t		 i, k;

	if (a->o->save == NULL)
		return;
	split(&a->save_list, "modules-to-save", a->o->save);
	for (i = 0; i < a->save_list.n; i++) {
		name = a->save_list.v[i];
		for (k = 0; k < 2; k++)
			if (strcmp(name, known[k]) == 0)
				break;
		if (k == 2)
			usage_error("--modules-to-save: unknown module '%s' "
			    "(embed_tokens or lm_head)", name);
		if (tied && strcmp(name, "lm_head") == 0)
			usage_error("--modules-to-save: the model is --tied: "
			    "its lm_head is embed_tokens, not a module of its "
			    "own");
		if (in_names(a->save, a->nsave, known[k]))
			usage_error("--modules-to-save: '%s' is given twice",
			    name);
		a->save[a->nsave++] = known[k];
	}
}

/*
 * PEFT's pattern keys are regular expressions; genmodel matches them
 * literally, so only names whose meaning is the same either way are
 * taken: dotted components of letters, digits and '_'.  They need no
 * escaping in JSON either.
 */
static void
check_key(const char *opt, const char *key)
{
	const char	*p;
	int		 ok = *key != '\0' && *key != '.';

	for (p = key; ok && *p != '\0'; p++)
		ok = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		    (*p >= '0' && *p <= '9') || *p == '_' ||
		    (*p == '.' && p[1] != '.' && p[1] != '\0');
	if (!ok)
		usage_error("--%s: '%s' is not a module name (genmodel takes "
		    "literal names of letters, digits and '_' joined by '.', "
		    "not regular expressions)", opt, key);
}

static double
parse_alpha(const char *opt, const char *s)
{
	double	v = parse_double(opt, s);

	if (!(v > 0))
		usage_error("--%s: '%s' is not positive", opt, s);
	return v;
}

static struct pattern *
parse_patterns(struct list *l, const char *opt, const char *arg,
    int is_rank)
{
	struct pattern	*p;
	char		*eq;
	size_t		 i, j;

	split(l, opt, arg);
	p = xmalloc(l->n * sizeof(*p));
	for (i = 0; i < l->n; i++) {
		if ((eq = strchr(l->v[i], '=')) == NULL)
			usage_error("--%s: '%s' is not KEY=%s", opt, l->v[i],
			    is_rank ? "RANK" : "ALPHA");
		*eq = '\0';
		check_key(opt, l->v[i]);
		for (j = 0; j < i; j++)
			if (strcmp(p[j].key, l->v[i]) == 0)
				usage_error("--%s: key '%s' is given twice",
				    opt, l->v[i]);
		p[i].key = l->v[i];
		p[i].rank = 0;
		p[i].alpha = 0;
		if (is_rank) {
			p[i].rank = parse_u64(opt, eq + 1, 0);
			check_range(opt, p[i].rank, 1, LORA_MAX_RANK);
		} else
			p[i].alpha = parse_alpha(opt, eq + 1);
	}
	return p;
}

static void
parse_layers(struct lora_adapter *a, uint64_t nlayers)
{
	struct list	*l = &a->layer_list;
	size_t		 i, j;

	split(l, "layers-to-transform", a->o->layers);
	a->layers = xmalloc(l->n * sizeof(*a->layers));
	for (i = 0; i < l->n; i++) {
		a->layers[i] = parse_u64("layers-to-transform", l->v[i], 0);
		if (a->layers[i] >= nlayers)
			usage_error("--layers-to-transform: the model has no "
			    "layer %" PRIu64 " (--layers %" PRIu64 ")",
			    a->layers[i], nlayers);
		for (j = 0; j < i; j++)
			if (a->layers[j] == a->layers[i])
				usage_error("--layers-to-transform: layer %"
				    PRIu64 " is given twice", a->layers[i]);
	}
}

/* PEFT's suffix match for targets and patterns: name ends in "." key. */
static int
ends_with_module(const char *name, const char *key)
{
	size_t	n = strlen(name), k = strlen(key);

	return n > k && name[n - k - 1] == '.' &&
	    strcmp(name + n - k, key) == 0;
}

/*
 * The layer PEFT finds a module in when layers_to_transform is given
 * without layers_pattern: the last match of .*\.[^.]*\.(\d+)\. , that is
 * the last all-digit component that is neither of the first two nor the
 * last one.  For an expert's module that is the expert's index, not the
 * layer's; kept, as the point is the adapter PEFT would make.
 */
static int
layer_index(const char *module, uint64_t *idx)
{
	const char	*p = module;
	size_t		 len;
	int		 comp, found = 0;

	for (comp = 0;; comp++, p += len + 1) {
		len = strcspn(p, ".");
		if (p[len] == '\0')
			return found;
		if (comp >= 2 && len > 0 && strspn(p, "0123456789") == len) {
			*idx = strtoull(p, NULL, 10);
			found = 1;
		}
	}
}

/*
 * PEFT's check_target_module_exists(): a module named exactly as a target
 * (lm_head) is adapted whatever the layers; one whose name ends in
 * "." target only in a listed layer, and a module in no layer
 * (model.embed_tokens) then not at all.
 */
static int
adapted(const struct lora_adapter *a, const char *module)
{
	uint64_t	idx;
	size_t		i;
	int		found = 0;

	if (in_names(a->targets, a->ntargets, module))
		return 1;
	for (i = 0; i < a->ntargets; i++)
		found |= ends_with_module(module, a->targets[i]);
	if (!found || a->layer_list.n == 0)
		return found;
	if (!layer_index(module, &idx))
		return 0;
	for (i = 0; i < a->layer_list.n; i++)
		if (a->layers[i] == idx)
			return 1;
	return 0;
}

/* The first KEY in --rank-pattern's order that matches wins, as in PEFT. */
static uint64_t
module_rank(const struct lora_adapter *a, const char *module)
{
	size_t	i;

	for (i = 0; i < a->rank_list.n; i++)
		if (strcmp(module, a->ranks[i].key) == 0 ||
		    ends_with_module(module, a->ranks[i].key))
			return a->ranks[i].rank;
	return a->o->rank;
}

static void
add_atensor(struct lora_adapter *a, double mean, double scale, uint64_t d0,
    uint64_t d1, const char *fmt, ...)
{
	struct atensor	*t;
	va_list		 ap;
	int		 n;

	if (a->count == a->cap) {
		a->cap = a->cap != 0 ? a->cap * 2 : 64;
		a->t = xrealloc(a->t, a->cap * sizeof(*t));
	}
	t = &a->t[a->count++];
	memset(t, 0, sizeof(*t));
	va_start(ap, fmt);
	n = vsnprintf(t->name, sizeof(t->name), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(t->name))
		fatal("tensor name too long");
	t->ndim = d1 == 0 ? 1 : 2;
	t->shape[0] = d0;
	t->shape[1] = d1;
	t->nelem = t->ndim == 1 ? d0 : checked_mul(d0, d1);
	t->mean = mean;
	t->scale = scale;
}

/*
 * The adapter of one module whose weight w is [out, in].  A Linear's
 * delta is B A ([out, r] [r, in]); with fan_in_fan_out PEFT takes the
 * weight as stored [in, out] and applies (B A)^T, so A is [r, out] and B
 * [in, r].  An embedding's delta is (B A)^T whatever fan_in_fan_out, and
 * PEFT saves its factors without ".weight".  A is scaled by one over the
 * square root of its fan-in, as a trained A keeps roughly the scale of
 * PEFT's Kaiming initialisation.
 */
static void
plan_module(struct lora_adapter *a, const char *module,
    const struct tensor *w)
{
	uint64_t	r = module_rank(a, module);
	uint64_t	out = w->shape[0], in = w->shape[1], ain, bout;

	if (strcmp(module, "model.embed_tokens") == 0) {
		add_atensor(a, 0, 1 / sqrt((double)out), r, out,
		    PREFIX "%s.lora_embedding_A", module);
		add_atensor(a, 0, B_SCALE, in, r,
		    PREFIX "%s.lora_embedding_B", module);
		return;
	}
	ain = a->o->fan_in_fan_out ? out : in;
	bout = a->o->fan_in_fan_out ? in : out;
	add_atensor(a, 0, 1 / sqrt((double)ain), r, ain,
	    PREFIX "%s.lora_A.weight", module);
	add_atensor(a, 0, B_SCALE, bout, r, PREFIX "%s.lora_B.weight",
	    module);
	if (a->o->dora)
		add_atensor(a, 1, DORA_SCALE, bout, 0,
		    PREFIX "%s.lora_magnitude_vector", module);
}

/* Saved whole, under the module's own name with PEFT's prefix. */
static void
plan_save(struct lora_adapter *a, const struct tensor *t, size_t count)
{
	char	 name[NAME_LEN];
	size_t	 i, k;

	for (k = 0; k < a->nsave; k++) {
		snprintf(name, sizeof(name), "%s.weight",
		    strcmp(a->save[k], "lm_head") == 0 ? "lm_head" :
		    "model.embed_tokens");
		for (i = 0; i < count; i++)
			if (strcmp(t[i].name, name) == 0)
				break;
		if (i == count)
			fatal("the model has no %s", name);
		add_atensor(a, 0, SAVE_SCALE, t[i].shape[0], t[i].shape[1],
		    PREFIX "%s", name);
	}
}

/*
 * Checks the adapter's options against the model's tensors t (as
 * build_model() lays them out) and decides the adapter's tensors, before
 * anything is written.
 */
struct lora_adapter *
lora_plan(const struct lora_options *o, const struct tensor *t,
    size_t count, uint64_t nlayers, int tied)
{
	struct lora_adapter	*a = xmalloc(sizeof(*a));
	char			 module[NAME_LEN];
	size_t			 i, len, nadapted = 0;

	memset(a, 0, sizeof(*a));
	a->o = o;
	if (o->alpha_set && !(o->alpha > 0))
		usage_error("--lora-alpha must be positive, not %g", o->alpha);
	parse_targets(a, tied);
	parse_save(a, tied);
	if (o->rank_pattern != NULL)
		a->ranks = parse_patterns(&a->rank_list, "rank-pattern",
		    o->rank_pattern, 1);
	if (o->alpha_pattern != NULL)
		a->alphas = parse_patterns(&a->alpha_list, "alpha-pattern",
		    o->alpha_pattern, 0);
	if (o->layers != NULL)
		parse_layers(a, nlayers);
	if (o->peft_type != NULL && (*o->peft_type == '\0' ||
	    !utf8_valid(o->peft_type)))
		usage_error("--peft-type: '%s' is not a name", o->peft_type);
	if (o->base != NULL && !utf8_valid(o->base))
		usage_error("--lora-base: '%s' is not UTF-8", o->base);
	for (i = 0; i < count; i++) {
		len = strlen(t[i].name);
		if (t[i].kind != KIND_WEIGHT || t[i].ndim != 2 || len <= 7 ||
		    strcmp(t[i].name + len - 7, ".weight") != 0)
			continue;
		memcpy(module, t[i].name, len - 7);
		module[len - 7] = '\0';
		if (!adapted(a, module))
			continue;
		plan_module(a, module, &t[i]);
		nadapted++;
	}
	/* PEFT refuses a config that adapts nothing; so does genmodel. */
	if (nadapted == 0)
		usage_error("no module of the model matches --lora-targets%s",
		    a->layer_list.n != 0 ? " in --layers-to-transform" : "");
	plan_save(a, t, count);
	/* Sorted by name, as the safetensors library writes tensors. */
	qsort(a->t, a->count, sizeof(*a->t), cmp_tensor);
	return a;
}

static void
write_values(FILE *fp, const char *path, const struct atensor *t,
    uint64_t seed, const struct dtype_info *d, unsigned char *block)
{
	struct gen	g;
	uint64_t	done;
	size_t		n;

	memset(&g, 0, sizeof(g));
	g.key = stream_key(seed, fnv1a(t->name), 0);
	g.mean = t->mean;
	g.scale = t->scale;
	g.dtype = d;
	for (done = 0; done < t->nelem; done += n) {
		n = t->nelem - done < WRITE_ELEMS ? (size_t)(t->nelem - done) :
		    WRITE_ELEMS;
		fill_block(&g, done, n, block);
		if (fwrite(block, d->size, n, fp) != n)
			fatal("cannot write %s: %s", path, strerror(errno));
	}
}

/*
 * One file, laid out as genmodel.c's write_header() lays out a shard:
 * the header padded with spaces so that the data starts 8-byte aligned.
 * Names are genmodel's own ([a-z0-9._]) and need no escaping.
 */
static void
write_weights(const struct lora_adapter *a, const char *dir, uint64_t seed,
    const struct dtype_info *d)
{
	struct strbuf		 sb = { NULL, 0, 0 };
	const struct atensor	*t;
	unsigned char		 len[8], *block;
	uint64_t		 begin = 0, nbytes;
	size_t			 i;
	FILE			*fp;
	char			*path;

	sb_printf(&sb, "{\"__metadata__\":{\"format\":\"pt\"}");
	for (i = 0; i < a->count; i++) {
		t = &a->t[i];
		nbytes = checked_mul(t->nelem, d->size);
		sb_printf(&sb, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[%" PRIu64,
		    t->name, d->st_name, t->shape[0]);
		if (t->ndim == 2)
			sb_printf(&sb, ",%" PRIu64, t->shape[1]);
		sb_printf(&sb, "],\"data_offsets\":[%" PRIu64 ",%" PRIu64 "]}",
		    begin, checked_add(begin, nbytes));
		begin += nbytes;
	}
	sb_printf(&sb, "}");
	while ((8 + sb.len) % 8 != 0)
		sb_printf(&sb, " ");
	for (i = 0; i < 8; i++)
		len[i] = (unsigned char)((uint64_t)sb.len >> (8 * i));
	fp = open_out(dir, "adapter_model.safetensors", &path);
	if (fwrite(len, 1, 8, fp) != 8 || fwrite(sb.buf, 1, sb.len, fp) !=
	    sb.len)
		fatal("cannot write %s: %s", path, strerror(errno));
	free(sb.buf);
	block = xmalloc(WRITE_ELEMS * d->size);
	for (i = 0; i < a->count; i++)
		write_values(fp, path, &a->t[i], seed, d, block);
	free(block);
	close_out(fp, path);
}

/*
 * The shortest of %.15g to %.17g that reads back as v: 16 and 8.5 stay
 * as given, as Python writes them.  Options are finite, so never inf.
 */
static void
json_number(FILE *fp, double v)
{
	char	buf[32];
	int	prec;

	for (prec = 15; prec < 17; prec++) {
		snprintf(buf, sizeof(buf), "%.*g", prec, v);
		if (strtod(buf, NULL) == v)
			break;
	}
	snprintf(buf, sizeof(buf), "%.*g", prec, v);
	fputs(buf, fp);
}

/* As json.dumps(indent=2) writes a list of strings at the second level. */
static void
write_names(FILE *fp, const char *const *v, size_t n)
{
	size_t	i;

	if (n == 0) {
		fputs("null", fp);
		return;
	}
	fputs("[\n", fp);
	for (i = 0; i < n; i++) {
		fputs("    ", fp);
		json_string(fp, v[i]);
		fputs(i + 1 < n ? ",\n" : "\n", fp);
	}
	fputs("  ]", fp);
}

/*
 * PEFT sorts the keys of every object it writes, but here the first
 * matching key decides, so the keys stay in the order given: a reader
 * that keeps the file's order then finds the ranks genmodel used.
 */
static void
write_pattern(FILE *fp, const struct pattern *p, size_t n, int is_rank)
{
	size_t	i;

	if (n == 0) {
		fputs("{}", fp);
		return;
	}
	fputs("{\n", fp);
	for (i = 0; i < n; i++) {
		fputs("    ", fp);
		json_string(fp, p[i].key);
		fputs(": ", fp);
		if (is_rank)
			fprintf(fp, "%" PRIu64, p[i].rank);
		else
			json_number(fp, p[i].alpha);
		fputs(i + 1 < n ? ",\n" : "\n", fp);
	}
	fputs("  }", fp);
}

/* The keys PEFT's LoraConfig writes, sorted, two-space indents. */
static void
write_config(const struct lora_adapter *a, const char *dir)
{
	const struct lora_options	*o = a->o;
	FILE				*fp;
	char				*path;
	size_t				 i;

	fp = open_out(dir, "adapter_config.json", &path);
	fputs("{\n  \"alpha_pattern\": ", fp);
	write_pattern(fp, a->alphas, a->alpha_list.n, 0);
	fputs(",\n  \"auto_mapping\": null,\n"
	    "  \"base_model_name_or_path\": ", fp);
	json_string(fp, o->base != NULL ? o->base : "base");
	fprintf(fp, ",\n  \"bias\": \"none\",\n"
	    "  \"fan_in_fan_out\": %s,\n"
	    "  \"inference_mode\": true,\n"
	    "  \"init_lora_weights\": true,\n"
	    "  \"layers_pattern\": null,\n"
	    "  \"layers_to_transform\": ",
	    o->fan_in_fan_out ? "true" : "false");
	if (a->layer_list.n == 0)
		fputs("null", fp);
	else {
		fputs("[\n", fp);
		for (i = 0; i < a->layer_list.n; i++)
			fprintf(fp, "    %" PRIu64 "%s\n", a->layers[i],
			    i + 1 < a->layer_list.n ? "," : "");
		fputs("  ]", fp);
	}
	fputs(",\n  \"lora_alpha\": ", fp);
	json_number(fp, o->alpha_set ? o->alpha : 2 * (double)o->rank);
	fputs(",\n  \"lora_dropout\": 0.0,\n  \"modules_to_save\": ", fp);
	write_names(fp, a->save, a->nsave);
	fputs(",\n  \"peft_type\": ", fp);
	json_string(fp, o->peft_type != NULL ? o->peft_type : "LORA");
	fprintf(fp, ",\n  \"r\": %" PRIu64 ",\n  \"rank_pattern\": ",
	    o->rank);
	write_pattern(fp, a->ranks, a->rank_list.n, 1);
	fputs(",\n  \"revision\": null,\n  \"target_modules\": ", fp);
	write_names(fp, a->targets, a->ntargets);
	fprintf(fp, ",\n  \"task_type\": \"CAUSAL_LM\",\n"
	    "  \"use_dora\": %s,\n  \"use_rslora\": %s\n}\n",
	    o->dora ? "true" : "false", o->rslora ? "true" : "false");
	close_out(fp, path);
}

static void
write_readme(const struct lora_adapter *a, const char *dir)
{
	FILE	*fp;
	char	*path;

	fp = open_out(dir, "README.md", &path);
	fprintf(fp, "# LoRA adapter\n\nA synthetic PEFT LoRA adapter for "
	    "%s, written by genmodel.\n",
	    a->o->base != NULL ? a->o->base : "base");
	close_out(fp, path);
}

void
lora_write(const struct lora_adapter *a, const char *dir, uint64_t seed,
    const struct dtype_info *d)
{
	write_weights(a, dir, seed, d);
	write_config(a, dir);
	write_readme(a, dir);
}

void
lora_free(struct lora_adapter *a)
{
	free_list(&a->target_list);
	free_list(&a->save_list);
	free_list(&a->rank_list);
	free_list(&a->alpha_list);
	free_list(&a->layer_list);
	free(a->ranks);
	free(a->alphas);
	free(a->layers);
	free(a->t);
	free(a);
}
