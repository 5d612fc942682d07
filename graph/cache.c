/* SPDX-License-Identifier: MIT */
/*
 * cache.c: decoded input chunks, shared by every job of an executor.
 *
 * An entry is one chunk of one input tensor decoded to float32, keyed by
 * the file's identity (device, inode, size, mtime), the tensor's place in
 * it, the view (rectified block), the element range and the compute dtype:
 * two jobs that read the same chunk of the same base model share one copy,
 * and a method's second pass finds the chunks of its first.  Entries in use
 * are pinned; unpinned ones sit on an LRU list and are freed, oldest
 * first, when the executor needs room (inputs are read from their files
 * again, so eviction only frees the decoded copy).  Loop thread only; the executor accounts the
 * bytes against its budget.
 */
#include <stdlib.h>
#include <string.h>

#include "exec-int.h"

struct ckey {
	uint64_t dev;
	uint64_t ino;
	uint64_t size;
	int64_t mtime;
	uint64_t begin;
	int64_t rows;
	int64_t cols;
	uint64_t e0;
	uint64_t n;
	uint64_t dtype;
	/* Views of one torch storage can share a begin with another
	 * dtype or row length (safetensors tensors never overlap). */
	uint64_t src_dtype;
	int64_t row;
	/*
	 * A LoRA adapter's product added: the adapter file's identity and
	 * everything else the values depend on, as raw fields (a hash of
	 * them could be matched by a crafted adapter, and another user's
	 * chunks read); all zero without one.  A tokenizer merge's row map:
	 * its id, never shared between plans, or 0.
	 */
	uint64_t lora_dev;
	uint64_t lora_ino;
	uint64_t lora_size;
	int64_t lora_mtime;
	uint64_t lora_a;	/* begins of the factors */
	uint64_t lora_b;
	uint64_t lora_dtypes;	/* a's, b's, the rounding's */
	int64_t lora_rank;
	uint64_t lora_scale;	/* its bits */
	uint64_t lora_flags;	/* transpose, single */
	uint64_t vperm;
};

void
cache_init(struct cache *c, struct bufpool *pool)
{
	memset(c, 0, sizeof *c);
	c->pool = pool;
}

static void
lru_remove(struct cache *c, struct centry *e)
{
	if (e->lru_prev != NULL)
		e->lru_prev->lru_next = e->lru_next;
	else if (c->lru_head == e)
		c->lru_head = e->lru_next;
	if (e->lru_next != NULL)
		e->lru_next->lru_prev = e->lru_prev;
	else if (c->lru_tail == e)
		c->lru_tail = e->lru_prev;
	e->lru_prev = e->lru_next = NULL;
}

static void
lru_append(struct cache *c, struct centry *e)
{
	e->lru_prev = c->lru_tail;
	e->lru_next = NULL;
	if (c->lru_tail != NULL)
		c->lru_tail->lru_next = e;
	else
		c->lru_head = e;
	c->lru_tail = e;
}

static void
cache_key(struct ckey *k, const struct graph_plan *p,
    const struct plan_tensor *pt, const struct plan_input *in, uint64_t e0,
    size_t n)
{
	const struct safetensors_file *f = p->models[in->model].m->files[
	    in->mt->file];
	const struct lora_delta *dl;

	memset(k, 0, sizeof *k);
	k->dev = f->dev;
	k->ino = f->ino;
	k->size = f->size;
	k->mtime = f->mtime_ns;
	k->begin = in->mt->t->begin;
	k->rows = in->rows;
	k->cols = in->cols;
	k->e0 = e0;
	k->n = n;
	k->dtype = (uint64_t)pt->compute_dtype;
	k->src_dtype = (uint64_t)in->mt->t->dtype;
	k->row = in->mt->t->ndim > 1 ?
	    in->mt->t->shape[in->mt->t->ndim - 1] : 0;
	if ((dl = in->mt->delta) != NULL) {
		k->lora_dev = dl->file->dev;
		k->lora_ino = dl->file->ino;
		k->lora_size = dl->file->size;
		k->lora_mtime = dl->file->mtime_ns;
		k->lora_a = dl->a->begin;
		k->lora_b = dl->b->begin;
		k->lora_dtypes = (uint64_t)dl->a->dtype |
		    (uint64_t)dl->b->dtype << 16 | (uint64_t)dl->round << 32;
		k->lora_rank = dl->rank;
		memcpy(&k->lora_scale, &dl->scale, sizeof k->lora_scale);
		k->lora_flags = (uint64_t)dl->transpose |
		    (uint64_t)dl->single << 1;
	}
	k->vperm = pt->vperm != NULL ? pt->vperm->id : 0;
}

struct centry *
cache_find(struct cache *c, const struct graph_plan *p,
    const struct plan_tensor *pt, const struct plan_input *in, uint64_t e0,
    size_t n)
{
	struct ckey k;
	size_t i;

	cache_key(&k, p, pt, in, e0, n);
	if (strmap_get_len(&c->map, (const char *)&k, sizeof k, &i))
		return c->v[i];
	return NULL;
}

struct centry *
cache_get(struct cache *c, const struct graph_plan *p,
    const struct plan_tensor *pt, const struct plan_input *in, uint64_t e0,
    size_t n, bool *created)
{
	struct centry *e;
	struct ckey k;
	size_t i;

	cache_key(&k, p, pt, in, e0, n);
	if (strmap_get_len(&c->map, (const char *)&k, sizeof k, &i)) {
		*created = false;
		return c->v[i];
	}
	c->misses++;
	e = xcalloc(1, sizeof *e);
	e->task.kind = TASK_LOAD;
	e->key = xmalloc(sizeof k);
	memcpy(e->key, &k, sizeof k);
	e->keylen = sizeof k;
	e->bytes = (uint64_t)n * sizeof(float);
	e->e0 = e0;
	e->n = n;
	if (c->n == c->cap) {
		c->cap = c->cap ? c->cap * 2 : 64;
		c->v = xreallocarray(c->v, c->cap, sizeof *c->v);
	}
	c->v[c->n] = e;
	strmap_put_len(&c->map, e->key, e->keylen, c->n);
	c->n++;
	c->bytes += e->bytes;
	*created = true;
	return e;
}

void
cache_pin(struct cache *c, struct centry *e)
{
	if (e->pins++ == 0 && e->ready)
		lru_remove(c, e);
}

/* The last unpin of a loaded entry makes it evictable. */
void
cache_unpin(struct cache *c, struct centry *e)
{
	if (--e->pins > 0)
		return;
	if (e->ready && !e->failed)
		lru_append(c, e);
}

void
cache_drop(struct cache *c, struct centry *e)
{
	size_t i;

	if (!strmap_get_len(&c->map, e->key, e->keylen, &i))
		return;
	lru_remove(c, e);
	strmap_del_len(&c->map, e->key, e->keylen);
	c->n--;
	if (i != c->n) {
		c->v[i] = c->v[c->n];
		strmap_put_len(&c->map, c->v[i]->key, c->v[i]->keylen, i);
	}
	c->bytes -= e->bytes;
	bufpool_put(c->pool, e->data, e->n * sizeof *e->data);
	free(e->key);
	free(e->waiters);
	free(e->task.err);
	free(e);
}

/* Frees unpinned entries, oldest first, until need bytes are freed. */
uint64_t
cache_evict(struct cache *c, uint64_t need)
{
	uint64_t freed = 0;
	struct centry *e;

	while (freed < need && (e = c->lru_head) != NULL) {
		freed += e->bytes;
		cache_drop(c, e);
	}
	return freed;
}

void
cache_fini(struct cache *c)
{
	while (c->n > 0)
		cache_drop(c, c->v[c->n - 1]);
	strmap_free(&c->map);
	free(c->v);
	memset(c, 0, sizeof *c);
}
