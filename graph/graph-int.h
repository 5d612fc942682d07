/* SPDX-License-Identifier: MIT */
/*
 * graph-int.h: declarations private to the merge engine (graph/) and its
 * unit tests.  Grouped by the file that defines them.  The merge-method
 * interface (struct graph_method, plan_tensor, the kernels' helpers) is
 * in method.h, and the allocators in xmalloc.h; both are included here.
 */
#ifndef GRAPH_INT_H
#define GRAPH_INT_H

#include <sys/types.h>

#include <pthread.h>

#include <stdatomic.h>
#include <strings.h>

#include "graph.h"
#include "method.h"
#include "xmalloc.h"

struct cJSON;
struct model;

/* strmap.c: borrowed-string keys to indices. */
struct strmap_slot {
	const char *key;
	size_t len;
	uint64_t hash;		/* of key, kept for growing and probing */
	size_t val;
};

struct strmap {
	struct strmap_slot *slots;
	size_t cap;		/* a power of two */
	size_t n;
};

void strmap_put(struct strmap *m, const char *key, size_t val);
void strmap_put_len(struct strmap *m, const char *key, size_t len, size_t val);
bool strmap_get(const struct strmap *m, const char *key, size_t *val);
bool strmap_get_len(const struct strmap *m, const char *key, size_t len,
    size_t *val);
bool strmap_del_len(struct strmap *m, const char *key, size_t len);
const char *strmap_key(const struct strmap *m, const char *key, size_t *val);
void strmap_free(struct strmap *);

/* jscan.c: a strict JSON scanner for hostile headers. */
#define JSCAN_MAX_DEPTH 128	/* serde_json's recursion limit */
#define JSCAN_SHOW 200		/* at most this much of a name in messages */

struct jscan {
	const uint8_t *file;	/* positions in messages are from here */
	const uint8_t *p;	/* the next byte */
	const uint8_t *end;	/* the end of the JSON text */
	char *cause;		/* the first error, or NULL */
	struct xbuf s;		/* the last string, decoded, NUL-terminated */
};

int jscan_fail(struct jscan *l, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
int jscan_syntax(struct jscan *, const char *);
size_t jscan_pos(const struct jscan *);
void jscan_ws(struct jscan *);
bool jscan_take(struct jscan *, uint8_t);
int jscan_string(struct jscan *, const char *);
bool jscan_is(const struct jscan *, const char *);
int jscan_number(struct jscan *l, bool *is_uint, uint64_t *u);
bool jscan_utf8_ok(const char *s, size_t n, const char **why);
int jscan_value(struct jscan *, int);
const char *jscan_kind(struct jscan *);
int jscan_show(const char *);

/* yaml.c: YAML document as a node tree with positions. */
enum ynode_kind {
	YNODE_SCALAR,
	YNODE_SEQ,
	YNODE_MAP,		/* kids alternate key, value */
};

struct ynode {
	enum ynode_kind kind;
	struct graph_mark mark;
	char *str;		/* scalars */
	bool quoted;		/* scalar was quoted: never a number */
	/* A scalar's text in the buffer, in bytes; SIZE_MAX: not known
	 * (an alias's copy, or UTF-16 input). */
	size_t begin;
	size_t end;
	struct ynode **kids;
	size_t n;
	size_t cap;
};

int ynode_parse(const char *file, const char *buf, size_t len,
    struct ynode **out, struct graph_diags *d);
/* One document of a stream: its root and where its text is in the
 * buffer (after its "---", if any, to its end). */
struct ynode_doc {
	struct ynode *root;
	struct graph_mark mark;	/* where it starts */
	size_t begin;
	size_t end;
};
int ynode_parse_all(const char *file, const char *buf, size_t len,
    struct ynode_doc **out, size_t *n, struct graph_diags *d);

/* config.c: one stage of a pipeline, for pipeline.c. */
struct graph_config *config_load_stage(const char *file,
    const struct ynode *root, const char *text, size_t len, size_t base,
    char *const *names, size_t n, size_t self, const char *dir, bool *deps,
    struct graph_diags *d);
void ynode_free(struct ynode *);
const struct ynode *ynode_get(const struct ynode *, const char *);
bool ynode_is_null(const struct ynode *);

/* yaml.c: the text of plain scalars. */
bool yscalar_digits(const char *s, const char *set);
int yscalar_bool(const char *s, bool *out);
int yscalar_number(const char *s, double *out);

/*
 * safetensors.c, safetensors-header.c.  A file may list at most
 * SAFETENSORS_MAX_TENSORS tensors and a model (all its shards together)
 * at most MODEL_MAX_TENSORS.  Real checkpoints are far below both: sharded
 * ones hold a few thousand tensors per file even for the largest
 * mixture-of-experts models (DeepSeek-V3, ~92,000 tensors in 163 shards;
 * Kimi K2, ~139,000 with its FP8 scales in 61 shards), and a whole
 * Qwen3-235B-A22B (~37,000 tensors) would fit in one file.  At the
 * per-file limit a header parses in about 70 ms and 17 MB (about 1 us a
 * tensor); before the limits a header of ~1M zero-size tensors (issue 9,
 * row 6) took 9.6 s and 1.55 GB.  The per-model limit bounds what the plan
 * and the scheduler are given: four shards at the per-file limit.
 */
#define SAFETENSORS_MAX_TENSORS 65536
#define SAFETENSORS_MAX_HEADER (100u * 1000u * 1000u)	/* the reference's */
#define MODEL_MAX_TENSORS 262144

struct safetensors_tensor {
	char *name;
	enum graph_dtype dtype;
	int ndim;
	int64_t shape[GRAPH_MAX_DIMS];
	uint64_t numel;
	uint64_t begin;		/* absolute file offsets once opened */
	uint64_t end;
	bool skip;		/* a torch buffer, not a weight: an index
				 * may name it, the model leaves it out */
};

struct safetensors_file {
	char *path;
	uint64_t size;
	uint64_t dev;
	uint64_t ino;
	int64_t mtime_ns;
	uint64_t data_start;
	int fd;			/* for pread and copy_file_range */
	struct safetensors_tensor *t;
	size_t nt;
	struct strmap names;	/* name -> index into t */
};

int safetensors_parse(const uint8_t *buf, size_t len,
    struct safetensors_tensor **out, size_t *nout, uint64_t *data_start,
    char **cause);
int safetensors_parse_names(const uint8_t *buf, size_t len,
    struct safetensors_tensor **out, size_t *nout, uint64_t *data_start,
    struct strmap *names, char **cause);
int tensorfile_open(int fd, const char *path, struct safetensors_file **out,
    char **cause);
int safetensors_open(const char *path, struct safetensors_file **out,
    char **cause);
int safetensors_open_fd(int fd, const char *path, struct safetensors_file **out,
    char **cause);
void safetensors_close(struct safetensors_file *);
int safetensors_check_unchanged(const struct safetensors_file *, char **);
bool safetensors_find(const struct safetensors_file *f, const char *name,
    size_t *i);
uint8_t *safetensors_header_build(const struct safetensors_tensor *t, size_t n,
    size_t *len);

/*
 * zip.c, pickle.c, torchbin.c: torch checkpoints (pytorch_model.bin), read
 * into the same file record as a safetensors file.  A tensor's begin and
 * end are then its bytes inside a stored zip entry; tensors may share
 * bytes (views of one storage), which the reader does not mind.
 */
struct zip_entry {
	char *name;
	uint64_t offset;	/* of the entry's data in the file */
	uint64_t size;
};

/* What an archive is read from: buf if not NULL, else fd. */
struct zip_src {
	const uint8_t *buf;
	int fd;
	uint64_t size;
};

int zip_src_read(const struct zip_src *src, uint64_t off, size_t n,
    void *out, char **cause);
int zip_read_dir(const struct zip_src *src, size_t max,
    struct zip_entry **out, size_t *n, char **cause);
void zip_entries_free(struct zip_entry *, size_t);

struct torchpkl_tensor {
	char *name;
	char *key;		/* its storage is the entry data/KEY */
	enum graph_dtype dtype;
	uint64_t storage_numel;
	uint64_t offset;	/* in elements, into the storage */
	int ndim;
	int64_t shape[GRAPH_MAX_DIMS];
	uint64_t numel;
};

int torchpkl_parse(const uint8_t *buf, size_t len, size_t max,
    struct torchpkl_tensor **out, size_t *n, char **cause);
void torchpkl_free(struct torchpkl_tensor *, size_t);
/* pickle.c: the most data.pkl may hold (a real one: ~130 bytes a tensor). */
#define TORCHPKL_MAX_LEN (64u << 20)

int torchbin_parse(const struct zip_src *src,
    struct safetensors_tensor **out, size_t *n, struct strmap *names,
    char **cause);
int torchbin_open_fd(int fd, const char *path, struct safetensors_file **out,
    char **cause);

/* chat-template.c */
const char *chat_template_builtin(const char *name);
size_t chat_template_names(const char **names, size_t max);
bool chat_template_valid(const char *s);

/*
 * spm.c: the pieces of a SentencePiece model (tokenizer.model), the
 * vocabulary of a model that ships no tokenizer.json.  Piece i has id i.
 */
enum spm_type {
	SPM_NORMAL = 1,
	SPM_UNKNOWN = 2,
	SPM_CONTROL = 3,
	SPM_USER_DEFINED = 4,
	SPM_UNUSED = 5,
	SPM_BYTE = 6,
};

struct spm_piece {
	char *text;		/* valid UTF-8, no NUL, unique */
	float score;
	enum spm_type type;
};

/* The most pieces a model may have (the largest real ones: 256,000). */
#define SPM_MAX_PIECES (1u << 22)

int spm_parse(const uint8_t *buf, size_t len, struct spm_piece **out,
    size_t *n, char **cause);
void spm_free(struct spm_piece *, size_t);

/* tokenizer.c: a model's tokenizer: its tokens' ids and flags. */
#define TOKZ_MAX_IDS (1u << 20)	/* the largest real vocabularies: 262k */
#define TOKZ_MAX_TOTAL_IDS (1u << 22)	/* of all a merge's tokenizers */

enum tokz_kind {
	TOKZ_BPE,
	TOKZ_UNIGRAM,
	TOKZ_WORDPIECE,
	TOKZ_WORDLEVEL,
	TOKZ_SPM,		/* tokenizer.model, no tokenizer.json */
};

struct tokz_tok {
	const char *text;	/* borrowed; NULL: no token has this id */
	bool shadowed;		/* its text means an added token's id */
	bool added;		/* an added token, with these flags: */
	bool special;
	bool single_word;
	bool lstrip;
	bool rstrip;
	bool normalized;
};

struct tokz {
	char *file;		/* tokenizer.json or .model, for messages */
	char *config_file;	/* tokenizer_config.json, for messages */
	enum tokz_kind kind;
	struct cJSON *json;	/* tokenizer.json, parsed */
	struct cJSON *config;	/* tokenizer_config.json (SentencePiece) */
	char *text;		/* tokenizer.json as read */
	size_t len;
	struct spm_piece *pieces;
	size_t npieces;
	struct tokz_tok *tok;	/* by id */
	int64_t nids;		/* 1 + the largest id */
	int64_t cap;
	int64_t nmodel;		/* tokens of the model's own vocabulary */
	size_t nadded_new;	/* added tokens not in it */
	struct strmap ids;	/* text -> id, as get_vocab() */
	char *arena;		/* the texts, once compact (tokz_compact) */
};

int tokz_load(const struct model *m, struct tokz **out, char **cause);
int tokz_parse_json(const char *file, const char *text, size_t len,
    struct tokz **out, char **cause);
int tokz_parse_spm(const char *file, const uint8_t *buf, size_t len,
    const char *config_file, const char *config, size_t clen,
    struct tokz **out, char **cause);
void tokz_compact(struct tokz *);
void tokz_free(struct tokz *);
bool tokz_id(const struct tokz *, const char *text, int64_t *id);
const char *tokz_kind_name(enum tokz_kind);

/* cred.c: a job's filesystem work with its user's rights. */
enum cred_mode {
	CRED_SELF,	/* no cred, or the daemon's own user */
	CRED_SWITCH,	/* root: this thread takes the user's */
	CRED_EMULATE,	/* another user, and we cannot switch */
};

struct cred_saved {
	bool active;
	uint32_t fsuid;
	uint32_t fsgid;
	gid_t *groups;
	size_t ngroups;
};

enum cred_mode cred_mode(const struct graph_cred *);
int cred_enter(const struct graph_cred *cred,
    struct cred_saved *saved, char **cause);
void cred_leave(struct cred_saved *saved);
void cred_copy(struct graph_cred *dst, uint32_t **groups,
    const struct graph_cred *c);

/* fsroot.c */
int fsroot_open(int dirfd, const char *path, int flags,
    const struct graph_cred *cred, char **cause);
int fsroot_read(int dirfd, const char *path, size_t max,
    const struct graph_cred *cred, char **out, size_t *len, char **cause);
bool fsroot_exists(int dirfd, const char *path, const struct graph_cred *cred);
struct stat;
int fsroot_stat(int dirfd, const char *path, const struct graph_cred *cred,
    struct stat *st);

/* modelref.c */
char *modelref_hf_cache_root(const struct graph_env *);

/* model.c: an input model, headers only. */
struct lora_delta;

struct model_tensor {
	const struct safetensors_tensor *t;
	size_t file;		/* index into files */
	/* A "model+adapter" reference's LoRA product, added as the
	 * tensor is read (lora.c), or NULL. */
	const struct lora_delta *delta;
	/* A fused stage's tensor (fuse.c): computed as it is read, by the
	 * plan of the stage that would have written it, or NULL. */
	const struct plan_tensor *fused;
};

struct model {
	char *name;		/* the reference as written, for messages */
	struct graph_ref ref;
	struct graph_resolved where;
	const char *dir;	/* where.dir */
	const struct graph_cred *cred;	/* borrowed from the plan's opts */
	struct cJSON *config;
	char *config_text;	/* config.json as read, for patching */
	char *arch;		/* architectures[0], NULL if unusable */
	const char *arch_problem;
	char *model_type;
	int64_t num_layers;	/* -1 when config.json has no count */
	const char *layers_key;
	bool tied;		/* tie_word_embeddings */
	const struct model_format *format;	/* model.c's table */
	struct safetensors_file **files;
	char **file_names;
	struct strmap file_index;	/* file_names -> files[] */
	size_t nfiles;
	size_t shard_tensors;	/* over all files, for the limit */
	struct model_tensor *tensors;
	size_t ntensors;
	size_t captensors;
	struct strmap index;	/* name -> tensors[] */
	struct lora *lora;	/* the adapter of "model+adapter", or NULL */
	/* A fused stage's header-only output: its tensors' fused point
	 * into this plan, which computes them (fuse.c). */
	const struct graph_plan *fused_from;
};

int model_open(const struct graph_ref *ref, struct graph_resolved *r,
    const struct graph_cred *cred, const atomic_bool *cancel,
    struct model **out, char **cause);
void model_close(struct model *);
void model_list_files(const struct model *m, struct graph_plan_files *out);
int model_check_unchanged(const struct model *m, char **cause);
const struct model_tensor *model_find(const struct model *,
    const char *);
int model_read(const struct model *m, const char *name, size_t max, char **out,
    size_t *len, char **cause);
int model_read_json(const struct model *m, const char *name, size_t max,
    struct cJSON **out, char **text, char **cause);
bool model_has(const struct model *, const char *);

/*
 * lora.c: a PEFT LoRA adapter bound to a model (a "model+adapter"
 * reference): one delta per adapted weight, W + scale * L * R, where
 * L * R is B * A, or (B * A)^T when transposed (fan_in_fan_out, and
 * embeddings).  The adapter's file is one of the model's files.
 */
struct lora_delta {
	char *module;		/* the adapted module, for messages */
	const struct model_tensor *weight;	/* the model's W */
	const struct safetensors_file *file;	/* the adapter's */
	const struct safetensors_tensor *a;	/* lora_A, [r, in] */
	const struct safetensors_tensor *b;	/* lora_B, [out, r] */
	int64_t rank;
	int64_t rows;		/* W's shape */
	int64_t cols;
	double scale;		/* alpha / r, or alpha / sqrt(r) (rsLoRA) */
	bool transpose;
	/* float32 sums over the rank (sgemm): every output that reads the
	 * weight is 16-bit, where their error is far below one ulp
	 * (lora_plan_precision); else float64 (dgemm). */
	bool single;
	enum graph_dtype round;	/* --lora-merge-dtype, or NONE */
	uint64_t grid;		/* rows per block (lora_read) */
	uint64_t id;		/* unique in the process */
};

struct lora {
	struct graph_resolved where;	/* the adapter's directory */
	const struct safetensors_file *file;	/* owned by the model */
	struct lora_delta *deltas;
	size_t ndeltas;
	/* modules_to_save tensors: the adapter's, named as the model's
	 * tensors they replace (whose entries point here). */
	struct safetensors_tensor *saved;
	size_t nreplaced;
	enum graph_dtype round;
};

int lora_attach(struct model *m, struct graph_resolved *r,
    enum graph_dtype round, struct graph_diags *d);
void lora_free(struct lora *);
int lora_read(const struct model *m, const struct lora_delta *dl,
    uint64_t idx, size_t n, float *out, char **cause);
uint64_t lora_scratch(const struct lora_delta *);
void lora_plan_precision(struct graph_plan *);
char *lora_regex_translate(const char *py, const char **why);

/* arch.c: tensor templates derived from a model's own tensor names. */
struct arch_weight {
	char *name;		/* pre/post: full name; layer, at_end: suffix */
	bool is_embed;
	bool uniform;		/* layer weights: present in every layer */
	bool at_end;		/* post: in the block after the last layer
				 * (phi-1's head), named by the layer count */
	const char *tied;	/* name to try when absent, or NULL */
};

/*
 * One stack of layers and the loose weights that go with it, or loose
 * weights alone (a projector).  A decoder-only model has one, "default";
 * vision-language and encoder-decoder models have several, named as
 * mergekit names them where it can tell (text_decoder, vision_tower,
 * multi_modal_projector, encoder, decoder), else by their prefix.
 */
struct arch_module {
	char *name;
	char *layer_prefix;	/* "model.layers."; NULL: no layers */
	int64_t num_layers;
	int64_t first;		/* tensor index of layer 0 (phi-1: 1) */
	char *layers_key;	/* config.json path of the count, or NULL */
	struct arch_weight *pre;
	size_t npre;
	struct arch_weight *layer;
	size_t nlayer;
	struct arch_weight *post;
	size_t npost;
};

struct arch {
	struct arch_module *mod;	/* sorted by name */
	size_t nmod;
	size_t main;		/* the text stack: LM head, tied heads */
};

/* arch-derive.c: the layout read off a model's tensor names. */
int arch_derive(const struct model *m, struct arch *a, char **cause);
void arch_fini(struct arch *);

/* arch.c: names. */
char *arch_layer_name(const struct arch_module *am,
    const struct arch_weight *w, int64_t layer);
char *arch_end_name(const struct arch_module *am,
    const struct arch_weight *w, int64_t layers);
const struct arch_module *arch_module_find(const struct arch *a,
    const char *name);
const struct arch_module *arch_module_by_prefix(const struct arch *a,
    const char *prefix);
bool arch_name_is_embed(const char *);
bool arch_name_is_pre(const char *);
const char *arch_tied_name(const char *);
size_t arch_tied_names(const char *name, const char **out, size_t max);
const char *arch_tied_head(const struct arch *a, size_t *i);
bool arch_split_layer(const char *name, size_t *plen, int64_t *idx,
    const char **suf);
void arch_add_post(struct arch_module *am, const char *name);
void arch_weight_push(struct arch_weight **v, size_t *n, const char *name);
void arch_weights_sort(struct arch_weight *v, size_t n);
bool arch_config_count(const struct cJSON *config, const char *path,
    int64_t *out);

/* params.c: parameter evaluation (MERGEKIT.md Part B 1.5-1.6). */
int pvalue_eval(const struct graph_pvalue *v, double t, double *out);
int param_eval(const struct graph_param *p, const char *tensor, double t,
    double *out);
const struct graph_param *params_find(const struct graph_params *,
    const char *);

/* plan.c: the resolved merge. */
struct plan_model {
	struct model *m;
	char *name;
	struct arch arch;	/* its own layout, once asked for */
	bool arch_done;
	bool arch_ok;
};

struct plan_shard {
	char *name;
	uint8_t *header;
	size_t header_len;
	uint64_t size;		/* whole file */
	size_t first;		/* tensors[first .. first + n) */
	size_t n;
};

struct graph_plan {
	char *config_text;
	char *card_pipeline;	/* the final stage's: the whole pipeline */
	char *method_name;
	struct plan_model *models;
	size_t nmodels;
	size_t base;		/* index into models, or (size_t)-1 */
	size_t arch_model;
	const char *arch_reason;
	size_t donor;		/* config.json and tokenizer donor */
	struct arch arch;
	struct plan_tensor *tensors;
	size_t ntensors;
	struct plan_shard *shards;
	size_t nshards;
	uint64_t total_out;
	uint64_t total_in;
	uint64_t peak_memory;
	uint64_t memory;	/* the budget it is sized for (plan_memory) */
	/* The least memory it can run in (plan-layout.c), and the tensor
	 * that needs it, or (size_t)-1. */
	uint64_t min_memory;
	size_t min_tensor;
	size_t kept_base;	/* tensors no base-fallback parameter (slerp's
				 * t) applies to: the base's, unchanged */
	bool untied;		/* the output stores a head the architecture
				 * model ties (Part A 16) */
	struct plan_unused *unused;	/* source layer tensors not merged */
	size_t nunused;
	int64_t *out_layers;	/* per module of arch; -1: config.json's
				 * count left alone */
	bool *mod_copied;	/* per module: not named by modules:, so
				 * the architecture model's */
	const char *vocab_key;	/* config.json's vocabulary size to patch,
				 * or NULL */
	int64_t out_vocab;	/* the output embedding's rows */
	char *chat_template;	/* to write, or NULL (plan-chat.c) */
	char *chat_template_from;	/* where it comes from, for plan */
	char *tokenizer_config;	/* the donor's text, when patched */
	struct plan_vocab *vocab;	/* a tokenizer merge's, or NULL */
	enum graph_dtype cfg_dtype;	/* dtype recorded in config.json */
	struct graph_plan_opts opts;
	struct graph_cred cred;	/* opts.cred's copy, which the plan owns */
	uint32_t *cred_groups;	/* and its groups */
	uint64_t seed;
	/* The plans of the stages fused into this one (fuse.c), owned:
	 * some of its models' tensors are computed by them. */
	struct graph_plan **fused;
	size_t nfused;
};

/* A tensor of a source layer that no output tensor reads, and why. */
struct plan_unused {
	size_t model;
	char *name;
	char *reason;
};

/*
 * plan-tokenizer.c: a tokenizer merge's output vocabulary and how each
 * model maps to it (MERGEKIT.md Part B 2.8).
 */
enum plan_vdef {		/* where a token's default row comes from */
	VDEF_ONE,		/* the one model that has the token */
	VDEF_BASE,		/* the base model, of several that have it */
	VDEF_MEAN,		/* the mean of those that have it */
	VDEF_ZERO,		/* zeros: no model has it, or {kind: zero} */
	VDEF_CONFIG,		/* a row that tokens: names */
	VDEF_N,
};

extern const char *const plan_vdef_names[VDEF_N];

/* A tokens: entry, resolved. */
struct plan_tokcfg {
	const char *text;	/* borrowed from the config, for messages */
	int64_t id;		/* in the output */
	enum graph_tokemb_kind kind;
	size_t model;		/* MODEL, MODEL_TOKEN */
	int64_t row;		/* of that model's own matrix */
	bool force;
};

struct plan_vocab {
	enum graph_tok_source source;
	size_t from;		/* the model whose tokenizer files are written */
	enum tokz_kind from_kind;
	int64_t n;		/* output tokens: 1 + the largest id */
	int64_t nrows;		/* embedding rows: n, padded */
	int64_t nfrom;		/* of them, from's own */
	int64_t nadded;		/* appended to from's */
	int64_t nstripped;	/* from's past its vocab_size, left out */
	int32_t **perm;		/* per model: output id -> own id, or -1 */
	int64_t *lacks;		/* per model: output tokens it lacks */
	int64_t *maxid;		/* per model: the largest own id mapped */
	char **maxtext;		/* and its token, for messages */
	struct plan_tokcfg *cfg;
	size_t ncfg;
	int32_t *cfgidx;	/* per output id: 1 + index into cfg, or 0 */
	char *tokenizer_json;	/* from's, changed; NULL: copied as it is */
	char *tokenizer_config;	/* from's, maybe changed; NULL: it has none */
};

/* One row of a model's original matrix. */
struct vperm_ref {
	uint32_t src;		/* index into plan_vperm.src */
	uint32_t row;
};

struct vperm_src {
	size_t model;
	const struct model_tensor *mt;
};

/*
 * The padding row of one source's permuted matrix: the mean of its real
 * rows, computed by the first reader that needs it (reader.c) and kept:
 * the one part of a plan that changes after planning, hence the lock.
 */
struct vperm_mean {
	pthread_mutex_t lock;
	bool done;
	float *row;
};

/* A vocabulary-indexed tensor's row map (method.h: plan_tensor.vperm). */
struct plan_vperm {
	uint64_t id;		/* unique in the process (cache.c's key) */
	int64_t cols;
	struct vperm_src *src;	/* the tensor's models, as planned */
	size_t nsrc;
	uint32_t *def_off;	/* per output token: its refs in def */
	struct vperm_ref *def;	/* [def_off[r], def_off[r + 1]): averaged */
	int64_t (*count)[VDEF_N];	/* per src: default rows, by kind */
	struct vperm_mean *mean;	/* per src */
};

const char *plan_tok_source_name(enum graph_tok_source);
bool plan_vperm_own(const struct plan_vocab *v, size_t m, int64_t r);
void plan_vperm_free(struct plan_vperm *);
void plan_vocab_free(struct plan_vocab *, size_t nmodels);

/* plan-layout.c */
int plan_layout(struct graph_plan *p, const char *file,
    struct graph_diags *d);
int plan_layout_memory(struct graph_plan *p, const char *const *fused,
    size_t nfused, const char *file, struct graph_diags *d);
/* The executor's smallest unit of pt (a block of every input decoded, a
 * result and the statistics scratch), what pt holds from its start to
 * its end (state, partials), and its partials' count. */
uint64_t plan_tensor_min_unit(const struct plan_tensor *pt);
uint64_t plan_tensor_held(const struct plan_tensor *pt);
size_t plan_tensor_state_bytes(const struct plan_tensor *pt);
size_t plan_tensor_npartials(const struct plan_tensor *pt);
/* exec.c: the executor's budget out of a memory size, and the least
 * memory size whose budget is need. */
uint64_t exec_budget_of(uint64_t memory);
uint64_t exec_memory_for(uint64_t need);

/* bufpool.c: recycled chunk buffers (loop thread only). */
struct bufpool_buf {
	void *p;
	size_t size;
};

struct bufpool {
	struct bufpool_buf *v;
	size_t n;
	size_t cap;
	uint64_t bytes;
};

void *buf_alloc(size_t);
void buf_free(void *, size_t);
void *bufpool_take(struct bufpool *, size_t);
void bufpool_put(struct bufpool *bp, void *p, size_t size);
void bufpool_trim(struct bufpool *, uint64_t);
void bufpool_fini(struct bufpool *);

/* reader.c: decoding input chunks. */
int reader_read_run(const struct safetensors_file *f, enum graph_dtype dt,
    uint64_t off, size_t n, float *out, char **cause);
int reader_read_tensor(const struct model *m, const struct model_tensor *mt,
    uint64_t idx, size_t n, float *out, char **cause);
int reader_read_packed(const struct model *m, const struct model_tensor *mt,
    uint64_t idx, size_t n, void *out, enum graph_dtype *dt, char **cause);
int reader_read_chunk(const struct graph_plan *p, const struct plan_tensor *t,
    const struct plan_input *in, uint64_t e0, size_t n, float *out,
    char **cause);
int reader_copy_chunk(const struct graph_plan *p, const struct plan_input *in,
    uint64_t e0, size_t n, int fd, int direct, void *buf, size_t cap,
    uint64_t off, char **cause);

/*
 * fuse.c: a pipeline stage fused into the one stage that reads it (--fuse):
 * its output is never written; the reader computes each piece of it as
 * the consumer reads it, with the stage's own plan.  Only a stage whose
 * tensors (those read) are each computed element by element can be.
 */
bool plan_tensor_is_copy(const struct plan_tensor *pt);
char *fuse_why_not(const struct graph_plan *consumer, const char *ref,
    const struct graph_plan *producer);
/* Whether pt, a copy, reads one of the stages refs (fused: computed). */
bool fuse_computes(const struct graph_plan *consumer,
    const struct plan_tensor *pt, const char *const *refs, size_t nrefs);
int fuse_link(struct graph_plan *consumer, const char *ref,
    struct graph_plan *producer, char **cause);
int fuse_read(const struct graph_plan *p, const struct plan_tensor *pt,
    uint64_t e0, size_t n, float *out, char **cause);

/*
 * extract-svd.c: the truncated SVD of a stored [m, n] matrix x, or of x^T
 * (transpose): X = U diag(s) Vt, X being rows x cols, U and Vt read
 * through strides where LAPACK left them.
 */
struct svd {
	int64_t rows;		/* X's shape */
	int64_t cols;
	int64_t p;		/* singular values in s, descending */
	float *s;
	const float *u;		/* U(i, j) = u[i * u_rs + j * u_cs] */
	int64_t u_rs;
	int64_t u_cs;
	const float *vt;	/* Vt(i, j) = vt[i * vt_rs + j * vt_cs] */
	int64_t vt_rs;
	int64_t vt_cs;
	float *buf;		/* owns s, u, vt and the work space */
	uint64_t bytes;		/* buf's, from buf_alloc */
};

bool svd_fits(int64_t m, int64_t n);
uint64_t svd_exact_bytes(int64_t m, int64_t n);
uint64_t svd_fast_bytes(int64_t m, int64_t n, bool transpose, int64_t l);
int svd_exact(float *x, int64_t m, int64_t n, bool transpose, struct svd *out,
    char **cause);
int svd_fast(const float *x, int64_t m, int64_t n, bool transpose, int64_t l,
    int q, uint64_t stream, struct svd *out, char **cause);
int64_t svd_rank(const struct svd *s, int64_t max_rank, double eps);
double svd_residual(const struct svd *s, int64_t k, double norm2, bool exact);
void svd_factors(const struct svd *s, int64_t k, bool distribute, float *a,
    float *b);
void svd_fini(struct svd *);

/* writer.c: the staged output directory. */
int writer_stage_open(int parent, const char *staging,
    const struct graph_cred *cred, int *fdp, char **cause);
int writer_open_shard(int dfd, const struct plan_shard *sh,
    const struct graph_cred *cred, int *fdp, int *directp, char **cause);
/* Output is written with O_DIRECT, where the file system takes it, in
 * whole pages of this size (writer_pwrite_direct). */
#define GRAPH_WRITE_ALIGN 4096u
void writer_write_behind(int fd, uint64_t off, size_t len);
int writer_pwrite(int fd, const void *buf, size_t len, uint64_t off,
    char **cause);
int writer_pwrite_direct(int fd, int direct, const void *buf, size_t len,
    uint64_t off, char **cause);
int writer_create(int dfd, const char *name, const struct graph_cred *cred,
    char **cause);
int writer_file(int dfd, const char *name, const void *data, size_t len,
    const struct graph_cred *cred, char **cause);
int writer_finish(const struct graph_plan *p, int dfd,
    const struct graph_cred *cred, const char *title, char **cause);
int writer_publish(int parent, const char *staging, const char *name,
    const struct graph_replace *replace, char **cause);
void writer_remove_tree(int, const char *);
char *writer_staging_name(const char *);
/* The files besides weights and config.json an output may copy. */
extern const char *const writer_side_files[];
extern const size_t writer_nside_files;

/* jsonpatch.c */
char *jsonpatch_apply(const char *s, size_t n, const char *const *keys,
    const char *const *values, size_t nkeys);

/* card.c */
char *card_build(const struct graph_plan *, const char *);

/* record.c: o as compact JSON text (free()), o deleted. */
struct cJSON;
char *record_json_text(struct cJSON *o);

#ifdef __SANITIZE_THREAD__
/* tsan-fd.c: fd, made where TSan cannot see, as a dup() it sees made. */
int tsan_fd_adopt(int fd, int flags);
#endif

#endif /* GRAPH_INT_H */
