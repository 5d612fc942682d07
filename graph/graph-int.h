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

#include <stdatomic.h>
#include <strings.h>

#include "graph.h"
#include "method.h"
#include "xmalloc.h"

struct cJSON;

/* strmap.c: borrowed-string keys to indices. */
struct strmap_slot {
	const char *key;
	size_t len;
	size_t val;
};

struct strmap {
	struct strmap_slot *slots;
	size_t cap;		/* a power of two */
	size_t n;
};

void strmap_put(struct strmap *, const char *, size_t);
void strmap_put_len(struct strmap *, const char *, size_t, size_t);
bool strmap_get(const struct strmap *, const char *, size_t *);
bool strmap_get_len(const struct strmap *, const char *, size_t, size_t *);
bool strmap_del_len(struct strmap *, const char *, size_t);
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

int jscan_fail(struct jscan *, const char *, ...)
    __attribute__((format(printf, 2, 3)));
int jscan_syntax(struct jscan *, const char *);
size_t jscan_pos(const struct jscan *);
void jscan_ws(struct jscan *);
bool jscan_take(struct jscan *, uint8_t);
int jscan_string(struct jscan *, const char *);
bool jscan_is(const struct jscan *, const char *);
int jscan_number(struct jscan *, bool *, uint64_t *);
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
	struct ynode **kids;
	size_t n;
	size_t cap;
};

int ynode_parse(const char *, const char *, size_t, struct ynode **,
    struct graph_diags *);
void ynode_free(struct ynode *);
const struct ynode *ynode_get(const struct ynode *, const char *);
bool ynode_is_null(const struct ynode *);

/* yaml.c: the text of plain scalars. */
bool yscalar_digits(const char *s, const char *set);
int yscalar_bool(const char *s, bool *out);
int yscalar_number(const char *s, double *out);

/*
 * safetensors.c, safetensors-header.c.  A file may list at most
 * GRAPH_ST_MAX_TENSORS tensors and a model (all its shards together) at most
 * GRAPH_MODEL_MAX_TENSORS.  Real checkpoints are far below both: sharded
 * ones hold a few thousand tensors per file even for the largest
 * mixture-of-experts models (DeepSeek-V3, ~92,000 tensors in 163 shards;
 * Kimi K2, ~139,000 with its FP8 scales in 61 shards), and a whole
 * Qwen3-235B-A22B (~37,000 tensors) would fit in one file.  At the
 * per-file limit a header parses in about 70 ms and 17 MB (about 1 us a
 * tensor); before the limits a header of ~1M zero-size tensors (issue 9,
 * row 6) took 9.6 s and 1.55 GB.  The per-model limit bounds what the plan
 * and the scheduler are given: four shards at the per-file limit.
 */
#define GRAPH_ST_MAX_TENSORS 65536
#define GRAPH_MODEL_MAX_TENSORS 262144

struct graph_st_tensor {
	char *name;
	enum graph_dtype dtype;
	int ndim;
	int64_t shape[GRAPH_MAX_DIMS];
	uint64_t numel;
	uint64_t begin;		/* absolute file offsets once opened */
	uint64_t end;
};

struct graph_st_file {
	char *path;
	uint64_t size;
	uint64_t dev;
	uint64_t ino;
	int64_t mtime_ns;
	uint64_t data_start;
	int fd;			/* for pread and copy_file_range */
	const uint8_t *map;	/* whole file, read-only; NULL if empty */
	struct graph_st_tensor *t;
	size_t nt;
	struct strmap names;	/* name -> index into t */
};

int graph_st_parse(const uint8_t *, size_t, struct graph_st_tensor **,
    size_t *, uint64_t *, char **);
int graph_st_parse_names(const uint8_t *, size_t, struct graph_st_tensor **,
    size_t *, uint64_t *, struct strmap *, char **);
int graph_st_open(const char *, struct graph_st_file **, char **);
int graph_st_open_fd(int, const char *, struct graph_st_file **, char **);
void graph_st_close(struct graph_st_file *);
int graph_st_check_unchanged(const struct graph_st_file *, char **);
bool graph_st_find(const struct graph_st_file *, const char *, size_t *);
uint8_t *graph_st_header_build(const struct graph_st_tensor *, size_t,
    size_t *);

/* cred.c: a job's filesystem work with its user's rights. */
enum graph_cred_mode {
	GRAPH_CRED_SELF,	/* no cred, or the daemon's own user */
	GRAPH_CRED_SWITCH,	/* root: this thread takes the user's */
	GRAPH_CRED_EMULATE,	/* another user, and we cannot switch */
};

struct graph_cred_saved {
	bool active;
	uint32_t fsuid;
	uint32_t fsgid;
	gid_t *groups;
	size_t ngroups;
};

enum graph_cred_mode graph_cred_mode(const struct graph_cred *);
int graph_cred_enter(const struct graph_cred *cred,
    struct graph_cred_saved *saved, char **cause);
void graph_cred_leave(struct graph_cred_saved *saved);

/* fsroot.c */
int graph_open_beneath(int, const char *, int, const struct graph_cred *,
    char **);
int graph_read_beneath(int, const char *, size_t, const struct graph_cred *,
    char **, size_t *, char **);
bool graph_exists_beneath(int, const char *, const struct graph_cred *);

/* modelref.c */
char *graph_hf_cache_root(const struct graph_env *);

/* model.c: an input model, headers only. */
struct graph_model_tensor {
	const struct graph_st_tensor *t;
	size_t file;		/* index into files */
};

struct graph_model {
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
	struct graph_st_file **files;
	char **file_names;
	struct strmap file_index;	/* file_names -> files[] */
	size_t nfiles;
	size_t shard_tensors;	/* over all files, for the limit */
	struct graph_model_tensor *tensors;
	size_t ntensors;
	size_t captensors;
	struct strmap index;	/* name -> tensors[] */
};

int graph_model_open(const struct graph_ref *, struct graph_resolved *,
    const struct graph_cred *, const atomic_bool *, struct graph_model **,
    char **);
void graph_model_close(struct graph_model *);
const struct graph_model_tensor *graph_model_find(const struct graph_model *,
    const char *);
int graph_model_read(const struct graph_model *, const char *, size_t,
    char **, size_t *, char **);
bool graph_model_has(const struct graph_model *, const char *);

/* arch.c: tensor templates derived from a model's own tensor names. */
enum arch_section {
	ARCH_PRE,
	ARCH_LAYER,
	ARCH_POST,
};

struct arch_weight {
	char *name;		/* pre/post: full name; layer: the suffix */
	bool is_embed;
	bool uniform;		/* layer weights: present in every layer */
	const char *tied;	/* name to try when absent, or NULL */
};

struct graph_arch {
	char *layer_prefix;	/* "model.layers." or NULL without layers */
	int64_t num_layers;
	struct arch_weight *pre;
	size_t npre;
	struct arch_weight *layer;
	size_t nlayer;
	struct arch_weight *post;
	size_t npost;
};

int graph_arch_derive(const struct graph_model *, struct graph_arch *,
    char **);
void graph_arch_fini(struct graph_arch *);
char *graph_arch_layer_name(const struct graph_arch *,
    const struct arch_weight *, int64_t);
bool graph_arch_name_is_embed(const char *);
const char *graph_arch_tied_name(const char *);
size_t graph_arch_tied_names(const char *, const char **, size_t);

/* params.c: parameter evaluation (MERGEKIT.md Part B 1.5-1.6). */
int graph_pvalue_eval(const struct graph_pvalue *, double, double *);
int graph_param_eval(const struct graph_param *, const char *, double,
    double *);
const struct graph_param *graph_params_find(const struct graph_params *,
    const char *);

/* plan.c: the resolved merge. */
struct plan_model {
	struct graph_model *m;
	char *name;
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
	const struct graph_config *cfg_borrowed;	/* only during build */
	char *config_text;
	char *method_name;
	struct plan_model *models;
	size_t nmodels;
	size_t base;		/* index into models, or (size_t)-1 */
	size_t arch_model;
	const char *arch_reason;
	size_t donor;		/* config.json and tokenizer donor */
	struct graph_arch arch;
	struct plan_tensor *tensors;
	size_t ntensors;
	struct plan_shard *shards;
	size_t nshards;
	uint64_t total_out;
	uint64_t total_in;
	uint64_t peak_memory;
	int64_t out_layers;	/* -1: leave config.json's count alone */
	enum graph_dtype cfg_dtype;	/* dtype recorded in config.json */
	struct graph_plan_opts opts;
	struct graph_cred cred;	/* opts.cred's copy, which the plan owns */
	uint32_t *cred_groups;	/* and its groups */
	uint64_t seed;
};

/* plan-layout.c */
int plan_layout(struct graph_plan *p, struct graph_diags *d);

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

void *graph_buf_alloc(size_t);
void graph_buf_free(void *, size_t);
void *bufpool_take(struct bufpool *, size_t);
void bufpool_put(struct bufpool *, void *, size_t);
void bufpool_trim(struct bufpool *, uint64_t);
void bufpool_fini(struct bufpool *);

/* reader.c: decoding input chunks. */
int graph_read_chunk(const struct graph_plan *, const struct plan_tensor *,
    const struct plan_input *, uint64_t, size_t, float *, char **);
int graph_copy_chunk(const struct graph_plan *, const struct plan_input *,
    uint64_t, size_t, int, uint64_t, char **);

/* writer.c: the staged output directory. */
int writer_stage_open(int, const char *, const struct graph_cred *, int *,
    char **);
int writer_open_shard(int, const struct plan_shard *,
    const struct graph_cred *, int *, char **);
int writer_pwrite(int, const void *, size_t, uint64_t, char **);
int writer_finish(const struct graph_plan *, int, const struct graph_cred *,
    const char *, char **);
int writer_publish(int, const char *, const char *,
    const struct graph_replace *, char **);
void writer_remove_tree(int, const char *);
char *writer_staging_name(const char *);

/* jsonpatch.c */
char *graph_json_patch(const char *, size_t, const char *const *,
    const char *const *, size_t);

/* card.c */
char *graph_card_build(const struct graph_plan *, const char *);

#endif /* GRAPH_INT_H */
