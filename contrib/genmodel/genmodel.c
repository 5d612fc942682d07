/* SPDX-License-Identifier: MIT */
/*
 * genmodel: write a synthetic decoder-only LLM as a Hugging Face model
 * directory (safetensors weights, config.json and a tiny but valid
 * tokenizer) with the real tensor names and config fields of llama,
 * mistral, qwen2 or qwen3.  Tests and the demo generate their models with
 * it instead of shipping or downloading any: every value is a pure function
 * of (seed, tensor name, element index), computed with IEEE basic
 * operations only, so a model is bit-identical on every machine, and
 * --finetune-of makes a "fine-tune" of a base model without reading the
 * base.  Tensors are generated and written a block at a time, so a
 * gigabyte-sized benchmark model needs only a few megabytes of memory.  It
 * deliberately depends on nothing but libc and libm and shares no code with
 * the daemon: it is the independent writer that the daemon's safetensors
 * reader is tested against.  --format bin writes the same weights as torch
 * checkpoints instead (pytorch_model.bin, sharded with
 * pytorch_model.bin.index.json), through torchzip.c, for the daemon's
 * torch checkpoint reader.  --lora writes a PEFT LoRA adapter for the
 * model the shape options describe instead of the model (lora.c).
 *
 * The tokenizer is byte-level BPE unless --tokenizer asks for Unigram,
 * WordPiece or SentencePiece (vocab.c has their tokens, spmwrite.c writes
 * tokenizer.model).  The tokenizer options make models whose tokenizers
 * differ, as the tests of merging tokenizers need: tokens beyond the
 * generated ones (--extra-tokens, --added-tokens), the same tokens under
 * other ids (--token-shuffle), and embeddings with more or fewer rows
 * than there are tokens (--pad-vocab, --config-vocab).  The weights never
 * depend on them, only the embedding's row count does: row i belongs to
 * whichever token has id i.
 */
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lora.h"
#include "spmwrite.h"
#include "torchzip.h"
#include "vocab.h"

/*
 * Values must not depend on whether the compiler fuses a*b+c into an FMA.
 * GCC does not contract in ISO C mode (-std=c11) and warns about this
 * pragma, so only clang is told.
 */
#ifdef __clang__
#pragma STDC FP_CONTRACT OFF
#endif

#define BLOCK_ELEMS	(1u << 18)	/* elements generated per fwrite() */
#define BATCH		256		/* pairs of normals computed at once */
#define STDIO_BUF	(4u << 20)	/* stdio buffer of each shard */
#define MIN_JOB_ELEMS	(UINT64_C(1) << 22)	/* worth a process */
#define MAX_JOBS	64
#define MAX_DIM		(UINT64_C(1) << 24)
#define MAX_LAYERS	4096
#define MAX_SHARDS	99999		/* file names have 5 digits */
#define SPECIAL_SUFFIX	":special"	/* in --added-tokens */
#define GOLDEN		UINT64_C(0x9e3779b97f4a7c15)
#define LN2		0.693147180559945309417232121458176568
#define SQRT2_MANT	UINT64_C(0x6a09e667f3bcd)	/* sqrt(2)'s mantissa */
#define HALF_PI		1.57079632679489661923132169163975144
#define LAYER		"model.layers.%" PRIu64 "."

struct family_info {
	const char	*name;
	const char	*arch;
	int		 qkv_bias;
	int		 qk_norm;
	const char	*rms_norm_eps;
	const char	*rope_theta;
	const char	*sliding_window;	/* NULL: no such field */
};

/* A token of --extra-tokens or --added-tokens. */
struct user_token {
	const char	*text;
	int		 special;
};

struct token_list {
	char			*buf;		/* the list, split in place */
	struct user_token	*v;
	size_t			 n;
};

struct options {
	const struct family_info *family;
	const struct dtype_info	*dtype;
	int			 dtype_set;	/* adapters default to f32 */
	const char		*out;
	uint64_t		 layers;
	uint64_t		 hidden;
	uint64_t		 intermediate;
	uint64_t		 heads;
	uint64_t		 kv_heads;
	uint64_t		 head_dim;
	int			 head_dim_set;
	uint64_t		 vocab;
	int			 tied;
	uint64_t		 shard_size;
	uint64_t		 seed;
	int			 finetune;
	uint64_t		 base_seed;
	int			 delta_set;
	double			 delta;
	uint64_t		 shift;		/* --shift: layers moved up */
	int			 tokenizer;
	enum vocab_kind		 tok_kind;
	const char		*extra_arg;	/* --extra-tokens as given */
	const char		*added_arg;	/* --added-tokens as given */
	struct token_list	 extra;		/* in the model's vocabulary */
	struct token_list	 added;		/* after it */
	uint64_t		 shuffle_seed;	/* 0: ids in order */
	uint32_t		*perm;		/* id -> token; NULL: id */
	uint64_t		 pad_vocab;
	uint64_t		 config_vocab;
	int			 config_vocab_set;
	uint64_t		 rows;		/* embedding rows, vocab_size */
	int			 force;
	uint64_t		 jobs;
	const char		*layer_kinds;	/* NULL: every layer attn */
	int			 bin;		/* torch checkpoints */
	int			 zip64;		/* their ZIP64 records */
	int			 adapter;	/* --lora: write an adapter */
	struct lora_options	 lora;
	const char		*model_only;	/* an option --lora refuses */
};

struct model {
	struct tensor	*tensors;
	size_t		 count;
	size_t		 cap;
	size_t		 elsize;
	unsigned	 nshards;
	uint64_t	*data_start;	/* per shard: 8 + header length */
	uint64_t	 total;
	int		 bin;		/* torch checkpoint file names */
};

static _Noreturn void	 usage(FILE *, int);
static char		*path_join(const char *, const char *);
static const struct family_info *find_family(const char *);
static const struct dtype_info *find_dtype(const char *);
static int		 set_flag(struct options *, const char *);
static int		 takes_value(const char *);
static void		 set_option(struct options *, const char *,
			     const char *);
static void		 parse_args(struct options *, int, char **);
static uint64_t		 default_jobs(void);
static void		 parse_tokens(struct token_list *, const char *,
			     const char *, int);
static int		 cmp_text(const void *, const void *);
static void		 check_tokens(const struct options *);
static void		 count_rows(struct options *);
static void		 check_adapter(struct options *);
static void		 validate(struct options *);
static void		 add_tensor(struct model *, enum kind, uint64_t,
			     uint64_t, const char *, ...) PRINTFLIKE(5, 6);
static void		 add_layer(struct model *, const struct options *,
			     uint64_t);
static void		 build_model(struct model *, const struct options *);
static void		 layout_shards(struct model *, uint64_t);
static void		 shard_file(const struct model *, unsigned, char *,
			     size_t);
static int		 is_output_name(const char *);
static void		 make_dirs(const char *);
static void		 remove_outputs(const char *);
static void		 prepare_dir(const struct options *);
static uint64_t		 mix64(uint64_t);
static double		 unit_bits(uint64_t);
static double		 log_unit(double);
static void		 polar(double, double, double *, double *);
static void		 normal_batch(uint64_t, uint64_t, size_t, double *);
static uint32_t		 round_bits(double, int, int);
static void		 store_block(const double *, size_t,
			     const struct dtype_info *, unsigned char *);
static void		 gen_init(struct gen *, const struct options *,
			     const struct tensor *);
static uint64_t		 write_header(FILE *, const char *,
			     const struct model *, unsigned,
			     const struct dtype_info *);
static void		 write_headers(const struct options *,
			     struct model *);
static FILE		*open_shard(const struct options *,
			     const struct model *, unsigned, char **, char *);
static void		 write_tensor(FILE *, const char *,
			     const struct options *, const struct model *,
			     const struct tensor *, uint64_t, uint64_t,
			     unsigned char *);
static void		 write_range(const struct options *,
			     const struct model *, uint64_t, uint64_t);
static void		 write_weights(const struct options *,
			     struct model *);
static void		 wait_workers(const pid_t *, uint64_t);
static void		 write_bin(const struct options *, struct model *);
static void		 write_index(const struct options *,
			     const struct model *);
static void		 write_config(const struct options *);
static void		 json_score(FILE *, double);
static uint64_t		 model_tokens(const struct options *);
static void		 shuffle_ids(struct options *);
static const char	*model_token(const struct options *, uint64_t,
			     char *, size_t, double *);
static uint64_t		 added_token(const struct options *, size_t,
			     char *, size_t, struct user_token *);
static size_t		 added_count(const struct options *);
static void		 write_added_tokens(FILE *, const struct options *);
static void		 write_vocab_object(FILE *, const struct options *);
static void		 write_bpe(FILE *, const struct options *);
static void		 write_unigram(FILE *, const struct options *);
static void		 write_wordpiece(FILE *, const struct options *);
static void		 write_tokenizer(const struct options *);
static void		 write_spm(const struct options *);
static void		 write_added_decoder(FILE *, const struct options *);
static void		 write_tokenizer_config(const struct options *);
static void		 write_small_json(const struct options *,
			     const char *, const char *);

static const struct family_info families[] = {
	{ "llama", "LlamaForCausalLM", 0, 0, "1e-05", "10000.0", NULL },
	{ "mistral", "MistralForCausalLM", 0, 0, "1e-05", "10000.0",
	    "4096" },
	{ "qwen2", "Qwen2ForCausalLM", 1, 0, "1e-06", "1000000.0", "null" },
	{ "qwen3", "Qwen3ForCausalLM", 0, 1, "1e-06", "1000000.0", "null" },
};

static const struct dtype_info dtypes[] = {
	{ "bf16", "BF16", "bfloat16", "BFloat16Storage", 2, 7, 8 },
	{ "f16", "F16", "float16", "HalfStorage", 2, 10, 5 },
	{ "f32", "F32", "float32", "FloatStorage", 4, 23, 8 },
};

/* Every file name genmodel writes, apart from numbered shards. */
static const char *const output_names[] = {
	"model.safetensors",
	"model.safetensors.index.json",
	"pytorch_model.bin",
	"pytorch_model.bin.index.json",
	"config.json",
	"generation_config.json",
	"tokenizer.json",
	"tokenizer.model",
	"tokenizer_config.json",
	"special_tokens_map.json",
	"adapter_model.safetensors",
	"adapter_config.json",
	"README.md",
};

/*
 * Options for a model's files alone, refused with --lora rather than
 * ignored: an adapter has no tokenizer, no torch checkpoint (--format bin
 * is checked by value, as --format safetensors is harmless), no shards,
 * and a fine-tune of a base model is a different thing from an adapter.
 */
static const char *const model_only_options[] = {
	"zip64", "shard-size", "finetune-of", "delta", "shift", "no-tokenizer",
	"tokenizer", "extra-tokens", "added-tokens", "token-shuffle",
};

static const char chat_template[] =
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + eos_token"
    " + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}";

void
fatal(const char *fmt, ...)
{
	va_list ap;

	fputs("genmodel: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

void
usage_error(const char *fmt, ...)
{
	va_list ap;

	fputs("genmodel: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputs("\nTry 'genmodel --help' for more information.\n", stderr);
	exit(2);
}

static void
usage(FILE *fp, int status)
{
	fputs("usage: genmodel --family llama|mistral|qwen2|qwen3 --out DIR "
	    "[options]\n"
	    "\n"
	    "Write a synthetic Hugging Face model directory with real tensor "
	    "names,\n"
	    "deterministic by seed.\n"
	    "\n"
	    "  --layers N            decoder layers (2)\n"
	    "  --hidden H            hidden size (64)\n"
	    "  --intermediate I      MLP size (128)\n"
	    "  --heads A             attention heads (4)\n"
	    "  --kv-heads K          key/value heads, must divide A (2)\n"
	    "  --head-dim D          size of one head (H/A)\n"
	    "  --vocab V             vocabulary size, at least 3 (256)\n"
	    "  --dtype bf16|f16|f32  tensor dtype (bf16)\n"
	    "  --tied | --untied     lm_head shared with embed_tokens "
	    "(untied)\n"
	    "  --shard-size BYTES    most tensor bytes per shard; K, M, G "
	    "suffixes\n"
	    "                        are powers of 1024; 0 = one file (0)\n"
	    "  --format FORMAT       safetensors, or bin: torch checkpoints "
	    "as\n"
	    "                        torch.save writes them (safetensors)\n"
	    "  --zip64               bin: ZIP64 records, as checkpoints over "
	    "4 GB\n"
	    "                        have, even when not needed\n"
	    "  --seed S              random seed (1)\n"
	    "  --finetune-of SEED0   a fine-tune: the SEED0 model plus X * "
	    "N(0,1)\n"
	    "  --delta X             noise drawn from --seed; give both\n"
	    "  --shift K             with --finetune-of: layer i is the base's "
	    "layer i - K\n"
	    "                        (plus the noise), the first K layers "
	    "new: a donor\n"
	    "                        whose layers match the base's at a known "
	    "offset\n"
	    "  --no-tokenizer        no tokenizer or generation config files\n"
	    "  --tokenizer KIND      bpe (byte-level), unigram, wordpiece, or "
	    "sentencepiece\n"
	    "                        (tokenizer.model, no tokenizer.json) "
	    "(bpe)\n"
	    "  --extra-tokens LIST   comma-separated tokens appended to the "
	    "model's\n"
	    "                        vocabulary, spelt as it spells them "
	    "(Ġ, ▁, ##)\n"
	    "  --added-tokens LIST   comma-separated added tokens after those, "
	    "each\n"
	    "                        optionally suffixed :special\n"
	    "  --token-shuffle SEED  shuffle the ids of all tokens but the "
	    "specials\n"
	    "                        and added ones; 0 = no shuffle (0)\n"
	    "  --pad-vocab P         P embedding rows more than there are "
	    "tokens (0)\n"
	    "  --config-vocab N      exactly N embedding rows, as vocab_size, "
	    "even\n"
	    "                        fewer than there are tokens\n"
	    "  --force               overwrite genmodel's files in a "
	    "non-empty DIR\n"
	    "  --jobs N              worker processes (online CPUs, at most "
	    "64)\n"
	    "  --layer-kinds LIST    hybrid layers: a comma-separated list of "
	    "attn, conv\n"
	    "                        (LFM2), mamba (Granite 4), each optionally "
	    "+moe\n"
	    "                        (experts for the MLP), repeated over the "
	    "layers\n"
	    "  --help                show this help\n"
	    "\n", fp);
	/* Two strings: C11 compilers need only take 4095 bytes in one. */
	fputs(
	    "  --lora R              write a PEFT LoRA adapter of rank R (1 to "
	    "4096) for\n"
	    "                        the model the options above describe, "
	    "instead of\n"
	    "                        the model: adapter_model.safetensors,\n"
	    "                        adapter_config.json and README.md in "
	    "DIR; --dtype\n"
	    "                        is f32 unless given; not with --format "
	    "bin,\n"
	    "                        --shard-size, --finetune-of or tokenizer "
	    "options\n"
	    "  --lora-targets LIST   comma-separated modules to adapt: q_proj, "
	    "k_proj,\n"
	    "                        v_proj, o_proj, gate_proj, up_proj, "
	    "down_proj,\n"
	    "                        lm_head (untied only) (q_proj,v_proj)\n"
	    "  --lora-alpha A        lora_alpha, a positive number (2R)\n"
	    "  --rslora              use_rslora\n"
	    "  --fan-in-fan-out      fan_in_fan_out: the shapes of the "
	    "transposed weight,\n"
	    "                        lora_A [r, out] and lora_B [in, r]\n"
	    "  --lora-embed          also adapt model.embed_tokens "
	    "(lora_embedding_A/B)\n"
	    "  --modules-to-save LIST\n"
	    "                        comma-separated embed_tokens, lm_head "
	    "(untied only):\n"
	    "                        stored whole, not adapted\n"
	    "  --rank-pattern LIST   comma-separated KEY=RANK: a module named "
	    "KEY, or\n"
	    "                        ending in .KEY, gets rank RANK; the first "
	    "KEY that\n"
	    "                        matches wins; literal names only, not "
	    "PEFT's\n"
	    "                        regular expressions\n"
	    "  --alpha-pattern LIST  comma-separated KEY=ALPHA, likewise for "
	    "lora_alpha\n"
	    "  --layers-to-transform LIST\n"
	    "                        comma-separated layer indices: adapt only "
	    "those\n"
	    "                        layers; as in PEFT, model.embed_tokens "
	    "then gets\n"
	    "                        no adapter, lm_head still does\n"
	    "  --lora-dora           use_dora: a lora_magnitude_vector per "
	    "adapted Linear\n"
	    "  --peft-type NAME      peft_type, for tests of refusal (LORA)\n"
	    "  --lora-base NAME      base_model_name_or_path (base)\n", fp);
	exit(status);
}

void *
xmalloc(size_t size)
{
	void	*p;

	if ((p = malloc(size)) == NULL)
		fatal("out of memory");
	return p;
}

void *
xrealloc(void *p, size_t size)
{
	if ((p = realloc(p, size)) == NULL)
		fatal("out of memory");
	return p;
}

static char *
path_join(const char *dir, const char *name)
{
	size_t	 len = strlen(dir) + strlen(name) + 2;
	char	*path = xmalloc(len);

	snprintf(path, len, "%s/%s", dir, name);
	return path;
}

uint64_t
checked_mul(uint64_t a, uint64_t b)
{
	if (a != 0 && b > UINT64_MAX / a)
		fatal("model too large: sizes overflow 64 bits");
	return a * b;
}

uint64_t
checked_add(uint64_t a, uint64_t b)
{
	if (b > UINT64_MAX - a)
		fatal("model too large: sizes overflow 64 bits");
	return a + b;
}

void
sb_printf(struct strbuf *sb, const char *fmt, ...)
{
	va_list	ap;
	int	n;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0)
		fatal("formatting failed");
	if (sb->len + (size_t)n + 1 > sb->cap) {
		sb->cap = (sb->len + (size_t)n + 1) * 2;
		sb->buf = xrealloc(sb->buf, sb->cap);
	}
	va_start(ap, fmt);
	vsnprintf(sb->buf + sb->len, sb->cap - sb->len, fmt, ap);
	va_end(ap);
	sb->len += (size_t)n;
}

/*
 * strtoull() alone would accept "-1", " 7" and "7x"; sizes come from
 * scripts, where a typo should fail loudly rather than become a huge model.
 */
uint64_t
parse_u64(const char *opt, const char *s, int suffixes)
{
	unsigned long long	 v;
	uint64_t		 mult = 1;
	char			*end;

	if (*s < '0' || *s > '9')
		usage_error("--%s: '%s' is not a non-negative integer", opt, s);
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno == ERANGE)
		usage_error("--%s: '%s' is out of range", opt, s);
	if (suffixes && *end != '\0' && end[1] == '\0') {
		switch (*end) {
		case 'k':
		case 'K':
			mult = UINT64_C(1) << 10;
			end++;
			break;
		case 'm':
		case 'M':
			mult = UINT64_C(1) << 20;
			end++;
			break;
		case 'g':
		case 'G':
			mult = UINT64_C(1) << 30;
			end++;
			break;
		}
	}
	if (*end != '\0')
		usage_error("--%s: '%s' is not a non-negative integer", opt, s);
	if (v > UINT64_MAX / mult)
		usage_error("--%s: '%s' is out of range", opt, s);
	return (uint64_t)v * mult;
}

double
parse_double(const char *opt, const char *s)
{
	char	*end;
	double	 v;

	errno = 0;
	v = strtod(s, &end);
	if (end == s || *end != '\0' || errno == ERANGE || !isfinite(v))
		usage_error("--%s: '%s' is not a finite number", opt, s);
	return v;
}

static const struct family_info *
find_family(const char *name)
{
	size_t	i;

	for (i = 0; i < sizeof(families) / sizeof(families[0]); i++)
		if (strcmp(families[i].name, name) == 0)
			return &families[i];
	usage_error("unknown --family '%s' (llama, mistral, qwen2 or qwen3)",
	    name);
}

static const struct dtype_info *
find_dtype(const char *name)
{
	size_t	i;

	for (i = 0; i < sizeof(dtypes) / sizeof(dtypes[0]); i++)
		if (strcmp(dtypes[i].name, name) == 0)
			return &dtypes[i];
	usage_error("unknown --dtype '%s' (bf16, f16 or f32)", name);
}

/* Returns 1 if name is an option without a value, after applying it. */
static int
set_flag(struct options *o, const char *name)
{
	if (strcmp(name, "tied") == 0)
		o->tied = 1;
	else if (strcmp(name, "untied") == 0)
		o->tied = 0;
	else if (strcmp(name, "no-tokenizer") == 0)
		o->tokenizer = 0;
	else if (strcmp(name, "force") == 0)
		o->force = 1;
	else if (strcmp(name, "zip64") == 0)
		o->zip64 = 1;
	else if (strcmp(name, "rslora") == 0)
		o->lora.rslora = 1;
	else if (strcmp(name, "fan-in-fan-out") == 0)
		o->lora.fan_in_fan_out = 1;
	else if (strcmp(name, "lora-embed") == 0)
		o->lora.embed = 1;
	else if (strcmp(name, "lora-dora") == 0)
		o->lora.dora = 1;
	else if (strcmp(name, "help") == 0)
		usage(stdout, 0);
	else
		return 0;
	return 1;
}

static int
takes_value(const char *name)
{
	static const char *const names[] = {
		"family", "out", "layers", "hidden", "intermediate", "heads",
		"kv-heads", "head-dim", "vocab", "dtype", "shard-size", "seed",
		"finetune-of", "delta", "shift", "jobs", "layer-kinds",
		"format",
		"tokenizer", "extra-tokens", "added-tokens", "token-shuffle",
		"pad-vocab", "config-vocab", "lora", "lora-targets",
		"lora-alpha", "lora-base", "modules-to-save", "rank-pattern",
		"alpha-pattern", "layers-to-transform", "peft-type",
	};
	size_t	i;

	for (i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (strcmp(names[i], name) == 0)
			return 1;
	return 0;
}

static void
set_option(struct options *o, const char *name, const char *value)
{
	if (strcmp(name, "family") == 0)
		o->family = find_family(value);
	else if (strcmp(name, "out") == 0)
		o->out = value;
	else if (strcmp(name, "layers") == 0)
		o->layers = parse_u64(name, value, 0);
	else if (strcmp(name, "hidden") == 0)
		o->hidden = parse_u64(name, value, 0);
	else if (strcmp(name, "intermediate") == 0)
		o->intermediate = parse_u64(name, value, 0);
	else if (strcmp(name, "heads") == 0)
		o->heads = parse_u64(name, value, 0);
	else if (strcmp(name, "kv-heads") == 0)
		o->kv_heads = parse_u64(name, value, 0);
	else if (strcmp(name, "head-dim") == 0) {
		o->head_dim = parse_u64(name, value, 0);
		o->head_dim_set = 1;
	} else if (strcmp(name, "vocab") == 0)
		o->vocab = parse_u64(name, value, 0);
	else if (strcmp(name, "dtype") == 0) {
		o->dtype = find_dtype(value);
		o->dtype_set = 1;
	} else if (strcmp(name, "lora") == 0) {
		o->lora.rank = parse_u64(name, value, 0);
		o->adapter = 1;
	} else if (strcmp(name, "lora-targets") == 0)
		o->lora.targets = value;
	else if (strcmp(name, "lora-alpha") == 0) {
		o->lora.alpha = parse_double(name, value);
		o->lora.alpha_set = 1;
	} else if (strcmp(name, "lora-base") == 0)
		o->lora.base = value;
	else if (strcmp(name, "modules-to-save") == 0)
		o->lora.save = value;
	else if (strcmp(name, "rank-pattern") == 0)
		o->lora.rank_pattern = value;
	else if (strcmp(name, "alpha-pattern") == 0)
		o->lora.alpha_pattern = value;
	else if (strcmp(name, "layers-to-transform") == 0)
		o->lora.layers = value;
	else if (strcmp(name, "peft-type") == 0)
		o->lora.peft_type = value;
	else if (strcmp(name, "shard-size") == 0)
		o->shard_size = parse_u64(name, value, 1);
	else if (strcmp(name, "seed") == 0)
		o->seed = parse_u64(name, value, 0);
	else if (strcmp(name, "finetune-of") == 0) {
		o->base_seed = parse_u64(name, value, 0);
		o->finetune = 1;
	} else if (strcmp(name, "delta") == 0) {
		o->delta = parse_double(name, value);
		o->delta_set = 1;
	} else if (strcmp(name, "shift") == 0) {
		o->shift = parse_u64(name, value, 1);
	} else if (strcmp(name, "jobs") == 0)
		o->jobs = parse_u64(name, value, 0);
	else if (strcmp(name, "layer-kinds") == 0)
		o->layer_kinds = value;
	else if (strcmp(name, "format") == 0) {
		if (strcmp(value, "bin") != 0 &&
		    strcmp(value, "safetensors") != 0)
			usage_error("--format: '%s' is not safetensors or bin",
			    value);
		o->bin = strcmp(value, "bin") == 0;
	} else if (strcmp(name, "tokenizer") == 0) {
		if (vocab_kind(value, &o->tok_kind) != 0)
			usage_error("unknown --tokenizer '%s' (bpe, unigram, "
			    "wordpiece or sentencepiece)", value);
	} else if (strcmp(name, "extra-tokens") == 0)
		o->extra_arg = value;
	else if (strcmp(name, "added-tokens") == 0)
		o->added_arg = value;
	else if (strcmp(name, "token-shuffle") == 0)
		o->shuffle_seed = parse_u64(name, value, 0);
	else if (strcmp(name, "pad-vocab") == 0)
		o->pad_vocab = parse_u64(name, value, 0);
	else if (strcmp(name, "config-vocab") == 0) {
		o->config_vocab = parse_u64(name, value, 0);
		o->config_vocab_set = 1;
	}
}

/* Accepts "--name value" and "--name=value"; later options win. */
static void
parse_args(struct options *o, int argc, char **argv)
{
	char		 name[32];
	const char	*arg, *eq, *value;
	size_t		 len, k;
	int		 i;

	for (i = 1; i < argc; i++) {
		arg = argv[i];
		if (strcmp(arg, "-h") == 0)
			usage(stdout, 0);
		if (strncmp(arg, "--", 2) != 0 || arg[2] == '\0')
			usage_error("unexpected argument '%s'", arg);
		arg += 2;
		eq = strchr(arg, '=');
		len = eq != NULL ? (size_t)(eq - arg) : strlen(arg);
		if (len >= sizeof(name))
			usage_error("unknown option '--%s'", arg);
		memcpy(name, arg, len);
		name[len] = '\0';
		for (k = 0; k < sizeof(model_only_options) /
		    sizeof(model_only_options[0]); k++)
			if (o->model_only == NULL &&
			    strcmp(name, model_only_options[k]) == 0)
				o->model_only = model_only_options[k];
		if (set_flag(o, name)) {
			if (eq != NULL)
				usage_error("--%s takes no value", name);
			continue;
		}
		if (!takes_value(name))
			usage_error("unknown option '--%s'", name);
		if (eq != NULL)
			value = eq + 1;
		else if (i + 1 < argc)
			value = argv[++i];
		else
			usage_error("--%s needs a value", name);
		set_option(o, name, value);
	}
}

static uint64_t
default_jobs(void)
{
	long	n = sysconf(_SC_NPROCESSORS_ONLN);

	if (n < 1)
		return 1;
	return n > MAX_JOBS ? MAX_JOBS : (uint64_t)n;
}

void
check_range(const char *opt, uint64_t v, uint64_t lo, uint64_t hi)
{
	if (v < lo || v > hi)
		usage_error("--%s must be between %" PRIu64 " and %" PRIu64
		    ", not %" PRIu64, opt, lo, hi, v);
}

/* attn, conv or mamba, each optionally +moe, separated by commas. */
static void
check_layer_kinds(const char *list)
{
	static const char *const kinds[] = { "attn", "conv", "mamba",
		"attn+moe", "conv+moe", "mamba+moe" };
	const char	*p = list;
	size_t		 len, i;

	for (;;) {
		len = strcspn(p, ",");
		for (i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++)
			if (strlen(kinds[i]) == len &&
			    strncmp(kinds[i], p, len) == 0)
				break;
		if (i == sizeof(kinds) / sizeof(kinds[0]))
			usage_error("--layer-kinds: '%.*s' is not attn, conv "
			    "or mamba (each optionally +moe)", (int)len, p);
		if (p[len] == '\0')
			return;
		p += len + 1;
	}
}

/* Token texts go into JSON, which must be UTF-8: no stray bytes. */
int
utf8_valid(const char *s)
{
	const unsigned char	*p = (const unsigned char *)s;
	uint32_t		 cp, min;
	int			 i, n;

	while (*p != '\0') {
		if (*p < 0x80) {
			p++;
			continue;
		}
		if ((*p & 0xe0) == 0xc0) {
			n = 1;
			min = 0x80;
		} else if ((*p & 0xf0) == 0xe0) {
			n = 2;
			min = 0x800;
		} else if ((*p & 0xf8) == 0xf0) {
			n = 3;
			min = 0x10000;
		} else
			return 0;
		cp = *p & (0x3f >> n);
		for (i = 1; i <= n; i++) {
			if ((p[i] & 0xc0) != 0x80)	/* also stops at NUL */
				return 0;
			cp = cp << 6 | (p[i] & 0x3f);
		}
		if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			return 0;
		p += n + 1;
	}
	return 1;
}

/*
 * A comma-separated list of token texts, split in place.  Only added
 * tokens can be special: a token of the model's vocabulary is a piece
 * of text, not a control token.
 */
static void
parse_tokens(struct token_list *l, const char *opt, const char *arg,
    int can_be_special)
{
	size_t	 suffix = strlen(SPECIAL_SUFFIX), len, i;
	char	*p, *end;

	if ((l->buf = strdup(arg)) == NULL)
		fatal("out of memory");
	l->n = 1;
	for (p = l->buf; *p != '\0'; p++)
		l->n += *p == ',';
	l->v = xmalloc(l->n * sizeof(*l->v));
	for (i = 0, p = l->buf; i < l->n; i++, p = end + 1) {
		end = p + strcspn(p, ",");
		*end = '\0';
		len = (size_t)(end - p);
		l->v[i].text = p;
		l->v[i].special = len >= suffix &&
		    strcmp(end - suffix, SPECIAL_SUFFIX) == 0;
		if (l->v[i].special && !can_be_special)
			usage_error("--%s: '%s': the model's own tokens cannot "
			    "be special; give it to --added-tokens", opt, p);
		if (l->v[i].special)
			p[len - suffix] = '\0';
		if (*p == '\0')
			usage_error("--%s: empty token text in '%s'", opt, arg);
		if (!utf8_valid(p))
			usage_error("--%s: '%s' is not UTF-8", opt, p);
	}
}

static int
cmp_text(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/*
 * A tokenizer maps each text to one id, so the given tokens must differ
 * from each other (sorted, duplicates are neighbours) and from every
 * generated token (each looked up in the sorted list).
 */
static void
check_tokens(const struct options *o)
{
	const char	**texts, *text;
	char		  buf[VOCAB_TEXT_LEN];
	size_t		  n = o->extra.n + o->added.n, i;
	uint64_t	  k;

	if (n == 0)
		return;
	texts = xmalloc(n * sizeof(*texts));
	for (i = 0; i < o->extra.n; i++)
		texts[i] = o->extra.v[i].text;
	for (i = 0; i < o->added.n; i++)
		texts[o->extra.n + i] = o->added.v[i].text;
	qsort(texts, n, sizeof(*texts), cmp_text);
	for (i = 1; i < n; i++)
		if (strcmp(texts[i - 1], texts[i]) == 0)
			usage_error("token '%s' is given twice", texts[i]);
	for (k = 0; k < o->vocab; k++) {
		text = vocab_text(o->tok_kind, k, buf, sizeof(buf));
		if (bsearch(&text, texts, n, sizeof(*texts), cmp_text) != NULL)
			usage_error("token '%s' is token %" PRIu64 " of the "
			    "generated %s vocabulary already", text, k,
			    vocab_kind_name(o->tok_kind));
	}
	free(texts);
}

/*
 * The embedding's rows, which config.json's vocab_size counts: every
 * token and --pad-vocab more, or exactly --config-vocab.
 */
static void
count_rows(struct options *o)
{
	uint64_t	tokens = o->vocab + o->extra.n + o->added.n;

	if (tokens > MAX_DIM)
		usage_error("%" PRIu64 " tokens; at most %" PRIu64, tokens,
		    MAX_DIM);
	if (o->config_vocab_set) {
		if (o->pad_vocab != 0)
			usage_error("give --pad-vocab or --config-vocab, not "
			    "both");
		check_range("config-vocab", o->config_vocab, VOCAB_NSPECIAL,
		    MAX_DIM);
		o->rows = o->config_vocab;
		return;
	}
	check_range("pad-vocab", o->pad_vocab, 0, MAX_DIM - tokens);
	o->rows = tokens + o->pad_vocab;
}

/*
 * --lora takes the model's shape options and no others: refused, not
 * ignored, so that a script asking for what an adapter cannot have hears
 * so.  lora_plan() checks the adapter's own options.
 */
static void
check_adapter(struct options *o)
{
	const char	*opt;

	if (!o->adapter) {
		if ((opt = lora_given(&o->lora)) != NULL)
			usage_error("--%s needs --lora", opt);
		return;
	}
	check_range("lora", o->lora.rank, 1, LORA_MAX_RANK);
	if (o->bin)
		usage_error("--lora writes safetensors, not --format bin");
	if (o->model_only != NULL)
		usage_error("--%s is for models, not with --lora",
		    o->model_only);
	/* Adapters are trained, and saved, in f32 unless asked otherwise. */
	if (!o->dtype_set)
		o->dtype = find_dtype("f32");
}

static void
validate(struct options *o)
{
	if (o->family == NULL)
		usage_error("--family is required");
	if (o->out == NULL || *o->out == '\0')
		usage_error("--out is required");
	check_adapter(o);
	check_range("layers", o->layers, 1, MAX_LAYERS);
	check_range("hidden", o->hidden, 1, MAX_DIM);
	check_range("intermediate", o->intermediate, 1, MAX_DIM);
	check_range("heads", o->heads, 1, MAX_DIM);
	check_range("kv-heads", o->kv_heads, 1, MAX_DIM);
	check_range("vocab", o->vocab, VOCAB_NSPECIAL, MAX_DIM);
	if (o->heads % o->kv_heads != 0)
		usage_error("--heads (%" PRIu64 ") must be a multiple of "
		    "--kv-heads (%" PRIu64 ")", o->heads, o->kv_heads);
	if (o->head_dim_set)
		check_range("head-dim", o->head_dim, 1, MAX_DIM);
	else if (o->hidden % o->heads != 0)
		usage_error("--hidden (%" PRIu64 ") is not a multiple of "
		    "--heads (%" PRIu64 "); give --head-dim", o->hidden,
		    o->heads);
	else
		o->head_dim = o->hidden / o->heads;
	if (o->finetune != o->delta_set)
		usage_error("--finetune-of and --delta must be given together");
	if (o->shift > 0 && !o->finetune)
		usage_error("--shift needs --finetune-of: it moves the base's "
		    "layers");
	check_range("jobs", o->jobs, 1, MAX_JOBS);
	if (o->layer_kinds != NULL)
		check_layer_kinds(o->layer_kinds);
	if (o->extra_arg != NULL)
		parse_tokens(&o->extra, "extra-tokens", o->extra_arg, 0);
	if (o->added_arg != NULL)
		parse_tokens(&o->added, "added-tokens", o->added_arg, 1);
	check_tokens(o);
	count_rows(o);
}

static void
add_tensor(struct model *m, enum kind kind, uint64_t d0, uint64_t d1,
    const char *fmt, ...)
{
	struct tensor	*t;
	va_list		 ap;
	int		 n;

	if (m->count == m->cap) {
		m->cap = m->cap != 0 ? m->cap * 2 : 64;
		m->tensors = xrealloc(m->tensors, m->cap * sizeof(*t));
	}
	t = &m->tensors[m->count++];
	memset(t, 0, sizeof(*t));
	va_start(ap, fmt);
	n = vsnprintf(t->name, sizeof(t->name), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(t->name))
		fatal("tensor name too long");
	t->kind = kind;
	t->ndim = d1 == 0 ? 1 : 2;
	t->shape[0] = d0;
	t->shape[1] = d1;
	t->nelem = t->ndim == 1 ? d0 : checked_mul(d0, d1);
	t->nbytes = checked_mul(t->nelem, m->elsize);
}

/*
 * Layer i's kind from --layer-kinds (the list repeats over the layers):
 * "attn", "conv" or "mamba", then "+moe" or nothing, in buf.
 */
static const char *
layer_kind(const struct options *o, uint64_t i, char *buf, size_t size)
{
	const char	*p = o->layer_kinds, *end;
	uint64_t	 n = 1, k;
	size_t		 len;

	if (p == NULL)
		return "attn";
	for (end = p; *end != '\0'; end++)
		n += *end == ',';
	for (k = i % n; k > 0; k--)
		p = strchr(p, ',') + 1;
	len = strcspn(p, ",");
	if (len >= size)
		len = size - 1;
	memcpy(buf, p, len);
	buf[len] = '\0';
	return buf;
}

/* A hybrid layer's mixer in place of attention (LFM2, Granite 4). */
static void
add_mixer(struct model *m, const struct options *o, uint64_t i,
    const char *kind)
{
	uint64_t	h = o->hidden, in = o->intermediate;

	if (strncmp(kind, "conv", 4) == 0) {
		add_tensor(m, KIND_WEIGHT, checked_mul(3, h), h,
		    LAYER "conv.in_proj.weight", i);
		add_tensor(m, KIND_WEIGHT, h, 3, LAYER "conv.conv.weight", i);
		add_tensor(m, KIND_WEIGHT, h, h, LAYER "conv.out_proj.weight",
		    i);
	} else {
		add_tensor(m, KIND_WEIGHT, checked_mul(2, in), h,
		    LAYER "mamba.in_proj.weight", i);
		add_tensor(m, KIND_WEIGHT, in, 4, LAYER "mamba.conv1d.weight",
		    i);
		add_tensor(m, KIND_NORM, o->heads, 0, LAYER "mamba.A_log", i);
		add_tensor(m, KIND_NORM, o->heads, 0, LAYER "mamba.D", i);
		add_tensor(m, KIND_WEIGHT, h, in, LAYER "mamba.out_proj.weight",
		    i);
	}
}

/* A mixture-of-experts MLP (GLM4-MoE's later layers): a router, two
 * experts. */
static void
add_moe(struct model *m, const struct options *o, uint64_t i)
{
	uint64_t	h = o->hidden, in = o->intermediate, e;

	add_tensor(m, KIND_WEIGHT, 2, h, LAYER "mlp.gate.weight", i);
	for (e = 0; e < 2; e++) {
		add_tensor(m, KIND_WEIGHT, in, h,
		    LAYER "mlp.experts.%" PRIu64 ".gate_proj.weight", i, e);
		add_tensor(m, KIND_WEIGHT, in, h,
		    LAYER "mlp.experts.%" PRIu64 ".up_proj.weight", i, e);
		add_tensor(m, KIND_WEIGHT, h, in,
		    LAYER "mlp.experts.%" PRIu64 ".down_proj.weight", i, e);
	}
}

/*
 * One decoder layer in the brief's order; biases follow their weight and
 * qwen3's q_norm/k_norm follow o_proj, as in the modules' state_dict.
 * A hybrid layer (--layer-kinds) has its mixer instead of attention, and
 * experts instead of the MLP.
 */
static void
add_layer(struct model *m, const struct options *o, uint64_t i)
{
	uint64_t	h = o->hidden, in = o->intermediate, hd = o->head_dim;
	uint64_t	q = checked_mul(o->heads, hd);
	uint64_t	kv = checked_mul(o->kv_heads, hd);
	int		bias = o->family->qkv_bias;
	char		buf[32];
	const char	*kind = layer_kind(o, i, buf, sizeof buf);

	add_tensor(m, KIND_NORM, h, 0, LAYER "input_layernorm.weight", i);
	if (strncmp(kind, "attn", 4) != 0) {
		add_mixer(m, o, i, kind);
		goto mlp;
	}
	add_tensor(m, KIND_WEIGHT, q, h, LAYER "self_attn.q_proj.weight", i);
	if (bias)
		add_tensor(m, KIND_BIAS, q, 0, LAYER "self_attn.q_proj.bias",
		    i);
	add_tensor(m, KIND_WEIGHT, kv, h, LAYER "self_attn.k_proj.weight", i);
	if (bias)
		add_tensor(m, KIND_BIAS, kv, 0, LAYER "self_attn.k_proj.bias",
		    i);
	add_tensor(m, KIND_WEIGHT, kv, h, LAYER "self_attn.v_proj.weight", i);
	if (bias)
		add_tensor(m, KIND_BIAS, kv, 0, LAYER "self_attn.v_proj.bias",
		    i);
	add_tensor(m, KIND_WEIGHT, h, q, LAYER "self_attn.o_proj.weight", i);
	if (o->family->qk_norm) {
		add_tensor(m, KIND_NORM, hd, 0, LAYER "self_attn.q_norm.weight",
		    i);
		add_tensor(m, KIND_NORM, hd, 0, LAYER "self_attn.k_norm.weight",
		    i);
	}
mlp:
	add_tensor(m, KIND_NORM, h, 0, LAYER "post_attention_layernorm.weight",
	    i);
	if (strstr(kind, "+moe") != NULL) {
		add_moe(m, o, i);
		return;
	}
	add_tensor(m, KIND_WEIGHT, in, h, LAYER "mlp.gate_proj.weight", i);
	add_tensor(m, KIND_WEIGHT, in, h, LAYER "mlp.up_proj.weight", i);
	add_tensor(m, KIND_WEIGHT, h, in, LAYER "mlp.down_proj.weight", i);
}

static void
build_model(struct model *m, const struct options *o)
{
	uint64_t	i;

	m->elsize = o->dtype->size;
	add_tensor(m, KIND_WEIGHT, o->rows, o->hidden,
	    "model.embed_tokens.weight");
	for (i = 0; i < o->layers; i++)
		add_layer(m, o, i);
	add_tensor(m, KIND_NORM, o->hidden, 0, "model.norm.weight");
	if (!o->tied)
		add_tensor(m, KIND_WEIGHT, o->rows, o->hidden,
		    "lm_head.weight");
}

/*
 * Every header must name its tensors before any data is written, so the
 * whole layout is decided first, from the shapes alone.  Like
 * transformers' max_shard_size, the limit counts tensor bytes only, and a
 * tensor larger than the limit gets a shard to itself.
 */
static void
layout_shards(struct model *m, uint64_t shard_size)
{
	struct tensor	*t;
	uint64_t	 used = 0;
	unsigned	 shard = 0;
	size_t		 i;

	for (i = 0; i < m->count; i++) {
		t = &m->tensors[i];
		m->total = checked_add(m->total, t->nbytes);
		if (shard_size > 0 && used > 0 &&
		    used + t->nbytes > shard_size) {
			if (++shard >= MAX_SHARDS)
				fatal("more than %d shards; raise --shard-size",
				    MAX_SHARDS);
			used = 0;
		}
		t->shard = shard;
		t->begin = used;
		used += t->nbytes;
	}
	m->nshards = shard + 1;
}

static void
shard_file(const struct model *m, unsigned shard, char *buf, size_t size)
{
	if (m->bin && m->nshards == 1)
		snprintf(buf, size, "pytorch_model.bin");
	else if (m->bin)
		snprintf(buf, size, "pytorch_model-%05u-of-%05u.bin",
		    shard + 1, m->nshards);
	else if (m->nshards == 1)
		snprintf(buf, size, "model.safetensors");
	else
		snprintf(buf, size, "model-%05u-of-%05u.safetensors",
		    shard + 1, m->nshards);
}

static int
is_output_name(const char *name)
{
	size_t	i;

	for (i = 0; i < sizeof(output_names) / sizeof(output_names[0]); i++)
		if (strcmp(name, output_names[i]) == 0)
			return 1;
	/* model-DDDDD-of-DDDDD.safetensors, pytorch_model-...bin */
	if (strncmp(name, "pytorch_", 8) == 0 && strlen(name) == 32)
		name += 8;
	else if (strlen(name) != 32)
		return 0;
	if (strncmp(name, "model-", 6) != 0 ||
	    strncmp(name + 11, "-of-", 4) != 0 ||
	    (strcmp(name + 20, ".safetensors") != 0 &&
	    strcmp(name + 20, ".bin") != 0))
		return 0;
	for (i = 0; i < 5; i++)
		if (name[6 + i] < '0' || name[6 + i] > '9' ||
		    name[15 + i] < '0' || name[15 + i] > '9')
			return 0;
	return 1;
}

static void
make_dirs(const char *dir)
{
	char	*path = strdup(dir), *p;

	if (path == NULL)
		fatal("out of memory");
	for (p = path + 1; *p != '\0'; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(path, 0777) == -1 && errno != EEXIST)
			fatal("cannot create %s: %s", path, strerror(errno));
		*p = '/';
	}
	if (mkdir(path, 0777) == -1 && errno != EEXIST)
		fatal("cannot create %s: %s", path, strerror(errno));
	free(path);
}

/*
 * --force removes every file genmodel could have written, not just the
 * ones this run writes: shards left from an earlier run with a different
 * layout would otherwise sit beside the new index and confuse readers.
 */
static void
remove_outputs(const char *dir)
{
	DIR		*d;
	struct dirent	*de;
	char		*path;

	if ((d = opendir(dir)) == NULL)
		fatal("cannot open %s: %s", dir, strerror(errno));
	while ((de = readdir(d)) != NULL) {
		if (!is_output_name(de->d_name))
			continue;
		path = path_join(dir, de->d_name);
		if (unlink(path) == -1 && errno != ENOENT)
			fatal("cannot remove %s: %s", path, strerror(errno));
		free(path);
	}
	closedir(d);
}

static void
prepare_dir(const struct options *o)
{
	struct stat	 st;
	DIR		*d;
	struct dirent	*de;
	int		 empty = 1;

	if (stat(o->out, &st) == -1) {
		if (errno != ENOENT)
			fatal("cannot access %s: %s", o->out, strerror(errno));
		make_dirs(o->out);
		return;
	}
	if (!S_ISDIR(st.st_mode))
		fatal("%s exists and is not a directory", o->out);
	if ((d = opendir(o->out)) == NULL)
		fatal("cannot open %s: %s", o->out, strerror(errno));
	while (empty && (de = readdir(d)) != NULL)
		if (strcmp(de->d_name, ".") != 0 &&
		    strcmp(de->d_name, "..") != 0)
			empty = 0;
	closedir(d);
	if (empty)
		return;
	if (!o->force)
		fatal("%s is not empty; use --force to overwrite", o->out);
	remove_outputs(o->out);
}

FILE *
open_out(const char *dir, const char *name, char **pathp)
{
	FILE	*fp;

	*pathp = path_join(dir, name);
	if ((fp = fopen(*pathp, "wb")) == NULL)
		fatal("cannot create %s: %s", *pathp, strerror(errno));
	return fp;
}

/* Write errors are sticky in stdio, so one check at the end catches all. */
void
close_out(FILE *fp, char *path)
{
	int	failed = ferror(fp);

	if (fclose(fp) != 0 || failed)
		fatal("cannot write %s: %s", path, strerror(errno));
	free(path);
}

/* splitmix64's finalizer: a bijection that scrambles every input bit. */
static uint64_t
mix64(uint64_t z)
{
	z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
	z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
	return z ^ (z >> 31);
}

uint64_t
fnv1a(const char *s)
{
	uint64_t	h = UINT64_C(0xcbf29ce484222325);

	for (; *s != '\0'; s++) {
		h ^= (unsigned char)*s;
		h *= UINT64_C(0x100000001b3);
	}
	return h;
}

/*
 * Streams are keyed by tensor name, not position, so a tensor has the same
 * values whatever the layer count or tying; the domain separates the base
 * values from fine-tune noise, which stay independent even when --seed
 * equals --finetune-of.
 */
uint64_t
stream_key(uint64_t seed, uint64_t name_hash, uint64_t domain)
{
	return mix64(mix64(seed + GOLDEN * (domain + 1)) ^ name_hash);
}

/* A double in [1, 2) whose mantissa is the top 52 bits of r. */
static double
unit_bits(uint64_t r)
{
	uint64_t	bits = (UINT64_C(1023) << 52) | (r >> 12);
	double		d;

	memcpy(&d, &bits, sizeof(d));
	return d;
}

/*
 * ln(x) for x in (0, 1], from +, *, / only: libm's log may differ in the
 * last bit between libcs, and values must be identical everywhere.
 * x = m * 2^e with m in [sqrt(1/2), sqrt(2)), ln(m) = 2 atanh(s) with
 * s = (m-1)/(m+1), |s| < 0.172; the series to s^15 is good to ~1e-14.
 * Branch-free, as the comparisons would be unpredictable.
 */
static double
log_unit(double x)
{
	uint64_t	bits, mant;
	double		m, s, s2, p;
	int		e, big;

	memcpy(&bits, &x, sizeof(bits));
	mant = bits & ((UINT64_C(1) << 52) - 1);
	/* Halve m past sqrt(2) with integers: no branch to mispredict. */
	big = mant > SQRT2_MANT;
	e = (int)(bits >> 52) - 1023 + big;
	bits = mant | ((uint64_t)(1023 - big) << 52);
	memcpy(&m, &bits, sizeof(m));
	s = (m - 1.0) / (m + 1.0);
	s2 = s * s;
	p = 2.0 / 15.0;
	p = p * s2 + 2.0 / 13.0;
	p = p * s2 + 2.0 / 11.0;
	p = p * s2 + 2.0 / 9.0;
	p = p * s2 + 2.0 / 7.0;
	p = p * s2 + 2.0 / 5.0;
	p = p * s2 + 2.0 / 3.0;
	p = p * s2 + 2.0;
	return (double)e * LN2 + s * p;
}

/*
 * r cos(2 pi t) and r sin(2 pi t) for t in [0, 1), again without libm:
 * reduce to the nearest quarter turn exactly (4t and 4t - n are exact),
 * then Taylor series on |f| <= pi/4, good to ~1e-14.
 */
static void
polar(double r, double t, double *zc, double *zs)
{
	static const double	cos_sign[4] = { 1, -1, -1, 1 };
	static const double	sin_sign[4] = { 1, 1, -1, -1 };
	double			x = 4.0 * t, f, f2, s, c, v[2];
	int			n = (int)(x + 0.5);

	f = (x - (double)n) * HALF_PI;
	f2 = f * f;
	s = 1.0 / 6227020800.0;
	s = s * -f2 + 1.0 / 39916800.0;
	s = s * -f2 + 1.0 / 362880.0;
	s = s * -f2 + 1.0 / 5040.0;
	s = s * -f2 + 1.0 / 120.0;
	s = s * -f2 + 1.0 / 6.0;
	s = f - f * f2 * s;
	c = 1.0 / 87178291200.0;
	c = c * -f2 + 1.0 / 479001600.0;
	c = c * -f2 + 1.0 / 3628800.0;
	c = c * -f2 + 1.0 / 40320.0;
	c = c * -f2 + 1.0 / 720.0;
	c = c * -f2 + 1.0 / 24.0;
	c = c * -f2 + 0.5;
	c = 1.0 - f2 * c;
	/*
	 * Quarter turn n: cos = c, -s, -c, s and sin = s, c, -s, -c.  Table
	 * lookups, not ?:, which compilers turn into unpredictable branches.
	 */
	v[0] = c;
	v[1] = s;
	*zc = cos_sign[n & 3] * r * v[n & 1];
	*zs = sin_sign[n & 3] * r * v[(n & 1) ^ 1];
}

/*
 * N(0,1) values for elements 2*pair .. 2*(pair+npairs)-1 by Box-Muller,
 * one pair of uniforms per pair of elements.  The uniforms come from
 * hashing a counter, so any element can be computed without generating
 * the ones before it.  Each step runs over the whole batch: independent
 * iterations keep the divider and square root busy instead of waiting on
 * one long dependency chain, and the compiler can vectorize them.
 */
static void
normal_batch(uint64_t key, uint64_t pair, size_t npairs, double *z)
{
	double	r[BATCH], t[BATCH];
	size_t	i;

	for (i = 0; i < npairs; i++) {
		/* (0, 1] for the radius, as log(0) is -inf; [0, 1) for angle */
		r[i] = 2.0 - unit_bits(mix64(key + (2 * (pair + i) + 1) *
		    GOLDEN));
		t[i] = unit_bits(mix64(key + (2 * (pair + i) + 2) * GOLDEN)) -
		    1.0;
	}
	for (i = 0; i < npairs; i++)
		r[i] = sqrt(-2.0 * log_unit(r[i]));
	for (i = 0; i < npairs; i++)
		polar(r[i], t[i], &z[2 * i], &z[2 * i + 1]);
}

/*
 * The bit pattern of x rounded to nearest, ties to even, in a binary
 * format with mbits stored mantissa bits and ebits exponent bits.  Going
 * straight from double avoids the double rounding of double -> float ->
 * bf16.
 */
static uint32_t
round_bits(double x, int mbits, int ebits)
{
	uint64_t	u, mag, r, inf;
	uint32_t	sign;
	int		bias = (1 << (ebits - 1)) - 1, shift = 52 - mbits, e;

	memcpy(&u, &x, sizeof(u));
	sign = (uint32_t)(u >> 63) << (mbits + ebits);
	mag = u & ~(UINT64_C(1) << 63);
	e = (int)(mag >> 52) - 1023;
	inf = (uint64_t)((1u << ebits) - 1) << mbits;
	if (e >= 1 - bias && e <= bias) {
		/*
		 * Normal in the target: round exponent and mantissa as one
		 * integer, so that a carry out of the mantissa bumps the
		 * exponent, up to infinity, as IEEE rounding requires.
		 */
		r = (mag + (UINT64_C(1) << (shift - 1)) - 1 +
		    ((mag >> shift) & 1)) >> shift;
		r -= (uint64_t)(1023 - bias) << mbits;
		return sign | (uint32_t)(r < inf ? r : inf);
	}
	if (isnan(x))
		return sign | (uint32_t)inf | (1u << (mbits - 1));
	if (e > bias)
		return sign | (uint32_t)inf;
	/*
	 * Below the normal range: count subnormal quanta (the scaling is
	 * exact); rounding up to 2^mbits quanta gives the smallest normal's
	 * bit pattern by itself.
	 */
	return sign | (uint32_t)rint(ldexp(fabs(x), mbits + bias - 1));
}

/*
 * Norms are 1 + 0.05 N, biases 0.02 N, other weights 0.02 N scaled by
 * 1 + 0.1 (name hash mod 7), so that tensors differ in norm.  A fine-tune
 * adds delta * N from an independent stream of --seed to the values of
 * --finetune-of, before the single rounding to the dtype.
 */
static void
gen_init(struct gen *g, const struct options *o, const struct tensor *t)
{
	uint64_t	h = fnv1a(t->name), layer;
	char		moved[NAME_LEN];
	int		at;

	g->key = stream_key(o->finetune ? o->base_seed : o->seed, h, 0);
	/* --shift: layer i draws the base's layer i - K (the first K draw
	 * values of their own). */
	if (o->shift > 0 && sscanf(t->name, "model.layers.%" SCNu64 ".%n",
	    &layer, &at) == 1) {
		if (layer >= o->shift) {
			snprintf(moved, sizeof moved, LAYER "%s",
			    layer - o->shift, t->name + at);
			g->key = stream_key(o->base_seed, fnv1a(moved), 0);
		} else {
			g->key = stream_key(o->seed, h, 2);
		}
	}
	g->noise_key = stream_key(o->seed, h, 1);
	g->noise = o->finetune;
	g->delta = o->delta;
	g->dtype = o->dtype;
	g->mean = 0.0;
	g->scale = 0.02;
	if (t->kind == KIND_NORM) {
		g->mean = 1.0;
		g->scale = 0.05;
	} else if (t->kind == KIND_WEIGHT)
		g->scale = 0.02 * (1.0 + 0.1 * (double)(h % 7));
}

/* Constant formats let the compiler specialise round_bits() per loop. */
static void
store_block(const double *v, size_t n, const struct dtype_info *d,
    unsigned char *p)
{
	uint32_t	bits;
	size_t		i;

	if (d->size == 4) {
		for (i = 0; i < n; i++, p += 4) {
			bits = round_bits(v[i], 23, 8);
			p[0] = (unsigned char)bits;
			p[1] = (unsigned char)(bits >> 8);
			p[2] = (unsigned char)(bits >> 16);
			p[3] = (unsigned char)(bits >> 24);
		}
	} else if (d->ebits == 8) {
		for (i = 0; i < n; i++, p += 2) {
			bits = round_bits(v[i], 7, 8);
			p[0] = (unsigned char)bits;
			p[1] = (unsigned char)(bits >> 8);
		}
	} else {
		for (i = 0; i < n; i++, p += 2) {
			bits = round_bits(v[i], 10, 5);
			p[0] = (unsigned char)bits;
			p[1] = (unsigned char)(bits >> 8);
		}
	}
}

/*
 * Elements [first, first + n) of a tensor, little-endian.  A worker's range
 * may start mid-pair: the pair is generated and its first half dropped.
 * Without noise, nothing is added at all: adding 0 * noise would turn a
 * -0.0 into +0.0, and --delta 0 must reproduce the base exactly.
 */
void
fill_block(const struct gen *g, uint64_t first, size_t n,
    unsigned char *out)
{
	double	z[2 * BATCH], w[2 * BATCH];
	size_t	i, j, m, skip, npairs;

	for (i = 0; i < n; i += m) {
		skip = (size_t)((first + i) & 1);
		m = n - i < 2 * BATCH - skip ? n - i : 2 * BATCH - skip;
		npairs = (skip + m + 1) / 2;
		normal_batch(g->key, (first + i) / 2, npairs, z);
		if (g->noise) {
			normal_batch(g->noise_key, (first + i) / 2, npairs, w);
			for (j = skip; j < skip + m; j++)
				z[j] = (g->mean + g->scale * z[j]) +
				    g->delta * w[j];
		} else {
			for (j = skip; j < skip + m; j++)
				z[j] = g->mean + g->scale * z[j];
		}
		store_block(z + skip, m, g->dtype, out + i * g->dtype->size);
	}
}

/*
 * An 8-byte little-endian length, then the JSON header padded with spaces
 * so that the data starts 8-byte aligned, as the safetensors writer does.
 * Names are genmodel's own ([a-z0-9._]) and need no escaping.  Returns
 * where the data starts.
 */
static uint64_t
write_header(FILE *fp, const char *path, const struct model *m,
    unsigned shard, const struct dtype_info *d)
{
	struct strbuf		 sb = { NULL, 0, 0 };
	const struct tensor	*t;
	unsigned char		 len[8];
	size_t			 i;

	sb_printf(&sb, "{\"__metadata__\":{\"format\":\"pt\"}");
	for (i = 0; i < m->count; i++) {
		t = &m->tensors[i];
		if (t->shard != shard)
			continue;
		sb_printf(&sb, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[%" PRIu64,
		    t->name, d->st_name, t->shape[0]);
		if (t->ndim == 2)
			sb_printf(&sb, ",%" PRIu64, t->shape[1]);
		sb_printf(&sb, "],\"data_offsets\":[%" PRIu64 ",%" PRIu64 "]}",
		    t->begin, t->begin + t->nbytes);
	}
	sb_printf(&sb, "}");
	while ((8 + sb.len) % 8 != 0)
		sb_printf(&sb, " ");
	for (i = 0; i < 8; i++)
		len[i] = (unsigned char)((uint64_t)sb.len >> (8 * i));
	if (fwrite(len, 1, 8, fp) != 8 || fwrite(sb.buf, 1, sb.len, fp) !=
	    sb.len)
		fatal("cannot write %s: %s", path, strerror(errno));
	free(sb.buf);
	return 8 + (uint64_t)sb.len;
}

/* Headers first: the workers then fill in data at known offsets. */
static void
write_headers(const struct options *o, struct model *m)
{
	char		 name[64], *path;
	FILE		*fp;
	unsigned	 s;

	m->data_start = xrealloc(NULL, m->nshards * sizeof(*m->data_start));
	for (s = 0; s < m->nshards; s++) {
		shard_file(m, s, name, sizeof(name));
		fp = open_out(o->out, name, &path);
		m->data_start[s] = write_header(fp, path, m, s, o->dtype);
		close_out(fp, path);
	}
}

static FILE *
open_shard(const struct options *o, const struct model *m, unsigned shard,
    char **pathp, char *iobuf)
{
	char	 name[64];
	FILE	*fp;

	shard_file(m, shard, name, sizeof(name));
	*pathp = path_join(o->out, name);
	if ((fp = fopen(*pathp, "r+b")) == NULL)
		fatal("cannot open %s: %s", *pathp, strerror(errno));
	if (setvbuf(fp, iobuf, _IOFBF, STDIO_BUF) != 0)
		fatal("cannot buffer %s", *pathp);
	return fp;
}

/* Elements [from, to) of one tensor, at their place in its shard. */
static void
write_tensor(FILE *fp, const char *path, const struct options *o,
    const struct model *m, const struct tensor *t, uint64_t from,
    uint64_t to, unsigned char *block)
{
	struct gen	g;
	uint64_t	pos, done;
	size_t		n, size = o->dtype->size;

	pos = m->data_start[t->shard] + t->begin + from * size;
	if ((uint64_t)(off_t)pos != pos || fseeko(fp, (off_t)pos, SEEK_SET))
		fatal("cannot seek in %s: %s", path, strerror(errno));
	gen_init(&g, o, t);
	for (done = from; done < to; done += n) {
		n = to - done < BLOCK_ELEMS ? (size_t)(to - done) : BLOCK_ELEMS;
		fill_block(&g, done, n, block);
		if (fwrite(block, size, n, fp) != n)
			fatal("cannot write %s: %s", path, strerror(errno));
	}
}

/*
 * One worker's share: elements [from, to) of the concatenation of all
 * tensors.  Values depend only on (seed, name, element index), so any
 * split gives the same bytes.
 */
static void
write_range(const struct options *o, const struct model *m, uint64_t from,
    uint64_t to)
{
	unsigned char		*block = xmalloc(BLOCK_ELEMS * 4);
	char			*iobuf = xmalloc(STDIO_BUF), *path = NULL;
	const struct tensor	*t;
	FILE			*fp = NULL;
	uint64_t		 base = 0, a, b;
	size_t			 i;

	for (i = 0; i < m->count && base < to; i++, base += t->nelem) {
		t = &m->tensors[i];
		if (base + t->nelem <= from)
			continue;
		a = from > base ? from - base : 0;
		b = to - base < t->nelem ? to - base : t->nelem;
		if (fp == NULL || t->shard != t[-1].shard) {
			if (fp != NULL)
				close_out(fp, path);
			fp = open_shard(o, m, t->shard, &path, iobuf);
		}
		write_tensor(fp, path, o, m, t, a, b, block);
	}
	if (fp != NULL)
		close_out(fp, path);
	free(iobuf);
	free(block);
}

/*
 * Generation is CPU-bound, so the data is split between worker processes
 * (fork() needs nothing beyond libc, unlike threads), each writing its own
 * byte ranges of the shards.  Models too small to gain from it are written
 * by this process alone.
 */
static void
write_weights(const struct options *o, struct model *m)
{
	uint64_t	 total = m->total / o->dtype->size, chunk;
	uint64_t	 jobs = o->jobs;
	pid_t		*pids;
	uint64_t	 w;

	write_headers(o, m);
	if (jobs > total / MIN_JOB_ELEMS)
		jobs = total / MIN_JOB_ELEMS;
	if (jobs <= 1) {
		write_range(o, m, 0, total);
		return;
	}
	chunk = total / jobs;
	pids = xmalloc(jobs * sizeof(*pids));
	fflush(NULL);	/* or children would flush our buffers again */
	for (w = 0; w < jobs; w++) {
		pids[w] = fork();
		if (pids[w] == 0) {
			write_range(o, m, w * chunk,
			    w + 1 == jobs ? total : (w + 1) * chunk);
			exit(0);
		}
		if (pids[w] == -1)	/* do this share ourselves */
			write_range(o, m, w * chunk,
			    w + 1 == jobs ? total : (w + 1) * chunk);
	}
	wait_workers(pids, jobs);
	free(pids);
}

/* A worker that failed has said why; all that is left is to fail too. */
static void
wait_workers(const pid_t *pids, uint64_t jobs)
{
	uint64_t	w;
	int		status, failed = 0;

	for (w = 0; w < jobs; w++) {
		if (pids[w] == -1)
			continue;
		while (waitpid(pids[w], &status, 0) == -1)
			if (errno != EINTR)
				fatal("waitpid: %s", strerror(errno));
		if (WIFSIGNALED(status)) {
			fprintf(stderr, "genmodel: worker killed by signal "
			    "%d\n", WTERMSIG(status));
			failed = 1;
		} else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
			failed = 1;
	}
	if (failed)
		fatal("model data is incomplete");
}

/*
 * Torch checkpoints, one per shard, written by this process alone (they
 * are for tests, not benchmarks): each tensor its own storage, keyed by
 * its position in the shard.  A single file is pickled as an OrderedDict
 * with _metadata, as model.state_dict() is; shards as plain dicts, as
 * transformers' sharding writes them.
 */
static void
write_bin(const struct options *o, struct model *m)
{
	unsigned char		*block = xmalloc(BLOCK_ELEMS * 4);
	char			 file[64], prefix[64], entry[160], *path;
	struct tz_buf		 pkl = { NULL, 0, 0 };
	struct tz_tensor	*tt = xmalloc((m->count + 1) * sizeof(*tt));
	char			(*keys)[24] = xmalloc((m->count + 1) *
				    sizeof(*keys));
	const struct tensor	*t;
	struct gen		 g;
	struct tz		 z;
	FILE			*fp;
	uint64_t		 done;
	size_t			 i, n, k, size = o->dtype->size;
	unsigned		 s;
	uint64_t		 bytes;

	for (s = 0; s < m->nshards; s++) {
		shard_file(m, s, file, sizeof(file));
		/* ZIP64 when a 32-bit size or offset could overflow, as
		 * torch does; --zip64 asks for it always. */
		for (i = 0, bytes = 0; i < m->count; i++)
			if (m->tensors[i].shard == s)
				bytes += m->tensors[i].nbytes + 4096;
		snprintf(prefix, sizeof(prefix), "%.*s",
		    (int)(strlen(file) - 4), file);
		for (i = 0, n = 0; i < m->count; i++) {
			t = &m->tensors[i];
			if (t->shard != s)
				continue;
			snprintf(keys[n], sizeof(keys[n]), "%zu", n);
			memset(&tt[n], 0, sizeof(tt[n]));
			tt[n].name = t->name;
			tt[n].key = keys[n];
			tt[n].storage = o->dtype->storage;
			tt[n].ndim = t->ndim;
			tt[n].shape = t->shape;
			tt[n].storage_numel = t->nelem;
			n++;
		}
		pkl.len = 0;
		tz_pickle_state_dict(&pkl, tt, n, m->nshards == 1);
		fp = open_out(o->out, file, &path);
		tz_open(&z, fp, path, o->zip64 || bytes > UINT32_MAX / 2);
		snprintf(entry, sizeof(entry), "%s/data.pkl", prefix);
		tz_entry(&z, entry, pkl.data, pkl.len);
		snprintf(entry, sizeof(entry), "%s/byteorder", prefix);
		tz_entry(&z, entry, "little", 6);
		for (i = 0, k = 0; i < m->count; i++) {
			t = &m->tensors[i];
			if (t->shard != s)
				continue;
			snprintf(entry, sizeof(entry), "%s/data/%zu", prefix,
			    k++);
			tz_begin(&z, entry, t->nbytes);
			gen_init(&g, o, t);
			for (done = 0; done < t->nelem; done += n) {
				n = t->nelem - done < BLOCK_ELEMS ?
				    (size_t)(t->nelem - done) : BLOCK_ELEMS;
				fill_block(&g, done, n, block);
				tz_write(&z, block, n * size);
			}
			tz_end(&z);
		}
		snprintf(entry, sizeof(entry), "%s/version", prefix);
		tz_entry(&z, entry, "3\n", 2);
		tz_finish(&z);
		close_out(fp, path);
	}
	free(pkl.data);
	free(keys);
	free(tt);
	free(block);
}

static void
write_index(const struct options *o, const struct model *m)
{
	char	 file[64], *path;
	FILE	*fp;
	size_t	 i;

	fp = open_out(o->out, o->bin ? "pytorch_model.bin.index.json" :
	    "model.safetensors.index.json", &path);
	fprintf(fp, "{\n  \"metadata\": {\n    \"total_size\": %" PRIu64
	    "\n  },\n  \"weight_map\": {\n", m->total);
	for (i = 0; i < m->count; i++) {
		shard_file(m, m->tensors[i].shard, file, sizeof(file));
		fprintf(fp, "    \"%s\": \"%s\"%s\n", m->tensors[i].name, file,
		    i + 1 < m->count ? "," : "");
	}
	fputs("  }\n}\n", fp);
	close_out(fp, path);
}

/* Hybrid models list their layers' kinds, as LFM2's config does. */
static void
write_layer_types(FILE *fp, const struct options *o)
{
	char		buf[32];
	uint64_t	i;

	fputs("  \"layer_types\": [", fp);
	for (i = 0; i < o->layers; i++)
		fprintf(fp, "%s\"%s\"", i > 0 ? ", " : "",
		    layer_kind(o, i, buf, sizeof buf));
	fputs("],\n", fp);
}

static void
write_config(const struct options *o)
{
	const struct family_info	*f = o->family;
	FILE				*fp;
	char				*path;

	fp = open_out(o->out, "config.json", &path);
	fprintf(fp, "{\n  \"architectures\": [\n    \"%s\"\n  ],\n"
	    "  \"attention_bias\": %s,\n  \"bos_token_id\": 1,\n"
	    "  \"eos_token_id\": 2,\n  \"head_dim\": %" PRIu64 ",\n"
	    "  \"hidden_act\": \"silu\",\n  \"hidden_size\": %" PRIu64 ",\n"
	    "  \"intermediate_size\": %" PRIu64 ",\n"
	    "  \"max_position_embeddings\": 2048,\n"
	    "  \"model_type\": \"%s\",\n"
	    "  \"num_attention_heads\": %" PRIu64 ",\n"
	    "  \"num_hidden_layers\": %" PRIu64 ",\n"
	    "  \"num_key_value_heads\": %" PRIu64 ",\n"
	    "  \"rms_norm_eps\": %s,\n  \"rope_theta\": %s,\n",
	    f->arch, f->qkv_bias ? "true" : "false", o->head_dim, o->hidden,
	    o->intermediate, f->name, o->heads, o->layers, o->kv_heads,
	    f->rms_norm_eps, f->rope_theta);
	if (f->sliding_window != NULL)
		fprintf(fp, "  \"sliding_window\": %s,\n", f->sliding_window);
	if (o->layer_kinds != NULL)
		write_layer_types(fp, o);
	fprintf(fp, "  \"tie_word_embeddings\": %s,\n"
	    "  \"torch_dtype\": \"%s\",\n"
	    "  \"transformers_version\": \"4.46.0\",\n"
	    "  \"vocab_size\": %" PRIu64 "\n}\n",
	    o->tied ? "true" : "false", o->dtype->torch_name, o->rows);
	close_out(fp, path);
}

/* s must be UTF-8; only '"', '\\' and control characters need escapes. */
void
json_string(FILE *fp, const char *s)
{
	unsigned char	c;

	fputc('"', fp);
	for (; (c = (unsigned char)*s) != '\0'; s++) {
		if (c == '"' || c == '\\')
			fprintf(fp, "\\%c", c);
		else if (c == '\n')
			fputs("\\n", fp);
		else if (c == '\t')
			fputs("\\t", fp);
		else if (c < 0x20)
			fprintf(fp, "\\u%04x", c);
		else
			fputc(c, fp);
	}
	fputc('"', fp);
}

/*
 * A Unigram score as Python and serde_json write a float: exact, and
 * shortest because vocab.c's scores have few digits, with ".0" on a whole
 * number.
 */
static void
json_score(FILE *fp, double v)
{
	char	buf[32];

	snprintf(buf, sizeof(buf), "%.17g", v);
	fprintf(fp, "%s%s", buf, strpbrk(buf, ".e") == NULL ? ".0" : "");
}

/* The tokens of the tokenizer model's own vocabulary: generated, extra. */
static uint64_t
model_tokens(const struct options *o)
{
	return o->vocab + o->extra.n;
}

/*
 * The token of the model's vocabulary with id, shuffled or not: its text
 * (generated into buf) and its Unigram score.  Extra tokens score 0, as
 * pieces added to a SentencePiece vocabulary do, so that one beats the
 * generated pieces that spell the same text.
 */
static const char *
model_token(const struct options *o, uint64_t id, char *buf, size_t size,
    double *score)
{
	uint64_t	k = o->perm != NULL ? o->perm[id] : id;

	if (k >= o->vocab) {
		*score = 0.0;
		return o->extra.v[k - o->vocab].text;
	}
	*score = vocab_score(k);
	return vocab_text(o->tok_kind, k, buf, size);
}

/*
 * --token-shuffle: new ids for the model's vocabulary, the specials
 * aside.  Added tokens keep theirs, after it.
 */
static void
shuffle_ids(struct options *o)
{
	uint64_t	n = model_tokens(o);

	if (o->shuffle_seed == 0)
		return;
	o->perm = xmalloc(n * sizeof(*o->perm));
	vocab_shuffle(o->perm, n, o->shuffle_seed);
}

/* The specials and --added-tokens. */
static size_t
added_count(const struct options *o)
{
	return VOCAB_NSPECIAL + o->added.n;
}

/*
 * Added token i, in t, and its id: the specials have the first ids, the
 * others follow the model's vocabulary, in the order given.
 */
static uint64_t
added_token(const struct options *o, size_t i, char *buf, size_t size,
    struct user_token *t)
{
	if (i < VOCAB_NSPECIAL) {
		t->text = vocab_text(o->tok_kind, i, buf, size);
		t->special = 1;
		return i;
	}
	*t = o->added.v[i - VOCAB_NSPECIAL];
	return model_tokens(o) + (i - VOCAB_NSPECIAL);
}

/* tokenizer.json's "added_tokens"; a normal one is normalized. */
static void
write_added_tokens(FILE *fp, const struct options *o)
{
	struct user_token	 t;
	char			 buf[VOCAB_TEXT_LEN];
	size_t			 i, n = added_count(o);
	uint64_t		 id;

	fputs("  \"added_tokens\": [\n", fp);
	for (i = 0; i < n; i++) {
		id = added_token(o, i, buf, sizeof(buf), &t);
		fprintf(fp, "    {\n      \"id\": %" PRIu64 ",\n"
		    "      \"content\": ", id);
		json_string(fp, t.text);
		fprintf(fp, ",\n      \"single_word\": false,\n"
		    "      \"lstrip\": false,\n      \"rstrip\": false,\n"
		    "      \"normalized\": %s,\n      \"special\": %s\n"
		    "    }%s\n", t.special ? "false" : "true",
		    t.special ? "true" : "false", i + 1 < n ? "," : "");
	}
	fputs("  ],\n", fp);
}

/* BPE's and WordPiece's "vocab": text to id, in the order of the ids. */
static void
write_vocab_object(FILE *fp, const struct options *o)
{
	char		 buf[VOCAB_TEXT_LEN];
	uint64_t	 id, n = model_tokens(o);
	double		 score;

	fputs("    \"vocab\": {\n", fp);
	for (id = 0; id < n; id++) {
		fputs("      ", fp);
		json_string(fp, model_token(o, id, buf, sizeof(buf), &score));
		fprintf(fp, ": %" PRIu64 "%s\n", id, id + 1 < n ? "," : "");
	}
}

/* Merges name their tokens by text, so they hold whatever the ids. */
static void
write_bpe(FILE *fp, const struct options *o)
{
	char		tok[VOCAB_TEXT_LEN], left[4], right[4];
	uint64_t	k, nmerges = vocab_merges(o->vocab);

	fputs("  \"pre_tokenizer\": {\n    \"type\": \"ByteLevel\",\n"
	    "    \"add_prefix_space\": false,\n    \"trim_offsets\": true,\n"
	    "    \"use_regex\": true\n  },\n"
	    "  \"post_processor\": null,\n"
	    "  \"decoder\": {\n    \"type\": \"ByteLevel\",\n"
	    "    \"add_prefix_space\": true,\n    \"trim_offsets\": true,\n"
	    "    \"use_regex\": true\n  },\n"
	    "  \"model\": {\n    \"type\": \"BPE\",\n    \"dropout\": null,\n"
	    "    \"unk_token\": \"<unk>\",\n"
	    "    \"continuing_subword_prefix\": null,\n"
	    "    \"end_of_word_suffix\": null,\n    \"fuse_unk\": false,\n"
	    "    \"byte_fallback\": false,\n", fp);
	write_vocab_object(fp, o);
	fputs("    },\n    \"merges\": [", fp);
	for (k = 0; k < nmerges; k++) {
		vocab_merge(k, left, right);
		snprintf(tok, sizeof(tok), "%s %s", left, right);
		fputs(k == 0 ? "\n      " : ",\n      ", fp);
		json_string(fp, tok);
	}
	fputs(nmerges > 0 ? "\n    ]\n  }\n}\n" : "]\n  }\n}\n", fp);
}

/*
 * A list of [piece, score] in the order of the ids, split at spaces
 * turned into "▁" (Metaspace, as SentencePiece does), one pair a line.
 */
static void
write_unigram(FILE *fp, const struct options *o)
{
	static const char metaspace[] = "{\n"
	    "    \"type\": \"Metaspace\",\n"
	    "    \"replacement\": \"▁\",\n"
	    "    \"prepend_scheme\": \"always\",\n"
	    "    \"split\": true\n  }";
	char		 buf[VOCAB_TEXT_LEN];
	uint64_t	 id, n = model_tokens(o);
	double		 score;

	fprintf(fp, "  \"pre_tokenizer\": %s,\n"
	    "  \"post_processor\": null,\n  \"decoder\": %s,\n"
	    "  \"model\": {\n    \"type\": \"Unigram\",\n"
	    "    \"unk_id\": 0,\n    \"vocab\": [\n", metaspace, metaspace);
	for (id = 0; id < n; id++) {
		fputs("      [", fp);
		json_string(fp, model_token(o, id, buf, sizeof(buf), &score));
		fputs(", ", fp);
		json_score(fp, score);
		fputs(id + 1 < n ? "],\n" : "]\n", fp);
	}
	fputs("    ],\n    \"byte_fallback\": false\n  }\n}\n", fp);
}

/* BERT's: words split at spaces and punctuation, "##" inside a word. */
static void
write_wordpiece(FILE *fp, const struct options *o)
{
	fputs("  \"pre_tokenizer\": {\n    \"type\": \"BertPreTokenizer\"\n"
	    "  },\n  \"post_processor\": null,\n"
	    "  \"decoder\": {\n    \"type\": \"WordPiece\",\n"
	    "    \"prefix\": \"##\",\n    \"cleanup\": true\n  },\n"
	    "  \"model\": {\n    \"type\": \"WordPiece\",\n"
	    "    \"unk_token\": \"<unk>\",\n"
	    "    \"continuing_subword_prefix\": \"##\",\n"
	    "    \"max_input_chars_per_word\": 100,\n", fp);
	write_vocab_object(fp, o);
	fputs("    }\n  }\n}\n", fp);
}

static void
write_tokenizer(const struct options *o)
{
	FILE	*fp;
	char	*path;

	fp = open_out(o->out, "tokenizer.json", &path);
	fputs("{\n  \"version\": \"1.0\",\n  \"truncation\": null,\n"
	    "  \"padding\": null,\n", fp);
	write_added_tokens(fp, o);
	fputs("  \"normalizer\": null,\n", fp);
	if (o->tok_kind == VOCAB_UNIGRAM)
		write_unigram(fp, o);
	else if (o->tok_kind == VOCAB_WORDPIECE)
		write_wordpiece(fp, o);
	else
		write_bpe(fp, o);
	close_out(fp, path);
}

/*
 * tokenizer.model instead of tokenizer.json: the Unigram vocabulary with
 * SentencePiece's types.  Added tokens are no pieces: transformers' slow
 * tokenizers keep them in tokenizer_config.json alone.
 */
static void
write_spm(const struct options *o)
{
	char		 buf[VOCAB_TEXT_LEN], *path;
	const char	*text;
	enum spmw_type	 type;
	double		 score;
	FILE		*fp;
	uint64_t	 id;

	fp = open_out(o->out, "tokenizer.model", &path);
	for (id = 0; id < model_tokens(o); id++) {
		text = model_token(o, id, buf, sizeof(buf), &score);
		if (id == 0)
			type = SPMW_UNKNOWN;
		else if (id < VOCAB_NSPECIAL)
			type = SPMW_CONTROL;
		else
			type = SPMW_NORMAL;
		spmw_piece(fp, text, (float)score, type);
	}
	spmw_specs(fp);
	close_out(fp, path);
}

/*
 * Every added token, the specials too, keyed by its id, as transformers
 * writes them (its keys sorted; ours in id order).
 */
static void
write_added_decoder(FILE *fp, const struct options *o)
{
	struct user_token	 t;
	char			 buf[VOCAB_TEXT_LEN];
	size_t			 i, n = added_count(o);
	uint64_t		 id;

	fputs("  \"added_tokens_decoder\": {\n", fp);
	for (i = 0; i < n; i++) {
		id = added_token(o, i, buf, sizeof(buf), &t);
		fprintf(fp, "    \"%" PRIu64 "\": {\n      \"content\": ", id);
		json_string(fp, t.text);
		fprintf(fp, ",\n      \"lstrip\": false,\n"
		    "      \"normalized\": %s,\n      \"rstrip\": false,\n"
		    "      \"single_word\": false,\n      \"special\": %s\n"
		    "    }%s\n", t.special ? "false" : "true",
		    t.special ? "true" : "false", i + 1 < n ? "," : "");
	}
	fputs("  },\n", fp);
}

/* Keys sorted, as transformers writes them; added tokens only if given. */
static void
write_tokenizer_config(const struct options *o)
{
	FILE	*fp;
	char	*path;

	fp = open_out(o->out, "tokenizer_config.json", &path);
	fputs("{\n", fp);
	if (o->added.n > 0)
		write_added_decoder(fp, o);
	fputs("  \"bos_token\": \"<s>\",\n  \"chat_template\": ", fp);
	json_string(fp, chat_template);
	fprintf(fp, ",\n  \"eos_token\": \"</s>\",\n"
	    "  \"model_max_length\": 2048,\n"
	    "  \"tokenizer_class\": \"%s\",\n"
	    "  \"unk_token\": \"<unk>\"\n}\n",
	    o->tok_kind == VOCAB_SENTENCEPIECE ? "LlamaTokenizer" :
	    "PreTrainedTokenizerFast");
	close_out(fp, path);
}

static void
write_small_json(const struct options *o, const char *name,
    const char *text)
{
	FILE	*fp;
	char	*path;

	fp = open_out(o->out, name, &path);
	fputs(text, fp);
	close_out(fp, path);
}

int
main(int argc, char **argv)
{
	struct options		 o;
	struct model		 m;
	struct lora_adapter	*ad;

	memset(&o, 0, sizeof(o));
	memset(&m, 0, sizeof(m));
	o.layers = 2;
	o.hidden = 64;
	o.intermediate = 128;
	o.heads = 4;
	o.kv_heads = 2;
	o.vocab = 256;
	o.dtype = &dtypes[0];
	o.seed = 1;
	o.tokenizer = 1;
	o.jobs = default_jobs();
	parse_args(&o, argc, argv);
	validate(&o);
	build_model(&m, &o);
	if (o.adapter) {
		/* Planned first, so that bad options leave DIR alone. */
		ad = lora_plan(&o.lora, m.tensors, m.count, o.layers, o.tied);
		prepare_dir(&o);
		lora_write(ad, o.out, o.seed, o.dtype);
		lora_free(ad);
		free(m.tensors);
		return 0;
	}
	layout_shards(&m, o.shard_size);
	prepare_dir(&o);
	m.bin = o.bin;
	if (o.bin)
		write_bin(&o, &m);
	else
		write_weights(&o, &m);
	if (m.nshards > 1)
		write_index(&o, &m);
	write_config(&o);
	if (o.tokenizer) {
		shuffle_ids(&o);
		if (o.tok_kind == VOCAB_SENTENCEPIECE)
			write_spm(&o);
		else
			write_tokenizer(&o);
		write_tokenizer_config(&o);
		write_small_json(&o, "special_tokens_map.json",
		    "{\n  \"bos_token\": \"<s>\",\n  \"eos_token\": \"</s>\",\n"
		    "  \"unk_token\": \"<unk>\"\n}\n");
		write_small_json(&o, "generation_config.json",
		    "{\n  \"bos_token_id\": 1,\n  \"eos_token_id\": 2\n}\n");
	}
	free(o.perm);
	free(o.extra.buf);
	free(o.extra.v);
	free(o.added.buf);
	free(o.added.v);
	free(m.data_start);
	free(m.tensors);
	return 0;
}
