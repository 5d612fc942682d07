/* SPDX-License-Identifier: MIT */
/*
 * lora.h: genmodel --lora, a PEFT LoRA adapter for the model genmodel's
 * shape options describe (lora.c), and what lora.c shares of genmodel.c:
 * the tensors build_model() lays out, the value generator and the file
 * helpers.  Sharing them instead of copying them keeps an adapter's module
 * names those of the model genmodel writes, and its values drawn and
 * rounded exactly as the model's are.
 */
#ifndef LORA_H
#define LORA_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#if defined(__GNUC__) || defined(__clang__)
#define PRINTFLIKE(f, a) __attribute__((format(printf, f, a)))
#else
#define PRINTFLIKE(f, a)
#endif

#define NAME_LEN	96		/* room for any model tensor's name */
#define LORA_MAX_RANK	4096

/* genmodel.c's model: its tensors and the generator of their values. */

enum kind {
	KIND_WEIGHT,
	KIND_BIAS,
	KIND_NORM,
};

struct dtype_info {
	const char	*name;		/* on the command line */
	const char	*st_name;	/* in safetensors headers */
	const char	*torch_name;	/* in config.json */
	const char	*storage;	/* torch's storage class */
	size_t		 size;
	int		 mbits;		/* stored mantissa bits */
	int		 ebits;		/* exponent bits */
};

struct tensor {
	char		 name[NAME_LEN];
	enum kind	 kind;
	int		 ndim;
	uint64_t	 shape[2];
	uint64_t	 nelem;
	uint64_t	 nbytes;
	unsigned	 shard;
	uint64_t	 begin;		/* offset in its shard's data section */
};

/* How one tensor's values are drawn. */
struct gen {
	uint64_t		 key;		/* base stream */
	uint64_t		 noise_key;	/* fine-tune noise stream */
	int			 noise;
	double			 delta;
	double			 mean;
	double			 scale;
	const struct dtype_info	*dtype;
};

struct strbuf {
	char	*buf;
	size_t	 len;
	size_t	 cap;
};

_Noreturn void	 fatal(const char *, ...) PRINTFLIKE(1, 2);
_Noreturn void	 usage_error(const char *, ...) PRINTFLIKE(1, 2);
void		*xmalloc(size_t);
void		*xrealloc(void *, size_t);
uint64_t	 checked_mul(uint64_t, uint64_t);
uint64_t	 checked_add(uint64_t, uint64_t);
void		 sb_printf(struct strbuf *, const char *, ...)
		     PRINTFLIKE(2, 3);
uint64_t	 parse_u64(const char *, const char *, int);
double		 parse_double(const char *, const char *);
void		 check_range(const char *, uint64_t, uint64_t, uint64_t);
int		 utf8_valid(const char *);
FILE		*open_out(const char *, const char *, char **);
void		 close_out(FILE *, char *);
void		 json_string(FILE *, const char *);
uint64_t	 fnv1a(const char *);
uint64_t	 stream_key(uint64_t, uint64_t, uint64_t);
void		 fill_block(const struct gen *, uint64_t, size_t,
		     unsigned char *);

/* The adapter: --lora and its options, as given on the command line. */

struct lora_options {
	uint64_t	 rank;		/* --lora */
	double		 alpha;		/* --lora-alpha */
	int		 alpha_set;
	const char	*targets;	/* NULL: q_proj,v_proj */
	const char	*save;		/* --modules-to-save */
	const char	*rank_pattern;
	const char	*alpha_pattern;
	const char	*layers;	/* --layers-to-transform */
	const char	*peft_type;	/* NULL: LORA */
	const char	*base;		/* --lora-base; NULL: base */
	int		 rslora;
	int		 fan_in_fan_out;
	int		 embed;		/* --lora-embed */
	int		 dora;
};

struct lora_adapter;

const char	*lora_given(const struct lora_options *);
struct lora_adapter *lora_plan(const struct lora_options *,
		     const struct tensor *, size_t, uint64_t, int);
void		 lora_write(const struct lora_adapter *, const char *,
		     uint64_t, const struct dtype_info *);
void		 lora_free(struct lora_adapter *);

#endif
