/* SPDX-License-Identifier: MIT */
/*
 * strmap.c: an open-addressing hash map from borrowed C strings to indices.
 *
 * Model tensor tables, the plan's name lookups and the executor's cache all
 * need "name -> slot" lookups over tens of thousands of entries; a linear
 * scan would make planning a 70B model quadratic.  The map borrows its keys:
 * the owner of the strings must outlive the map.  Not thread safe.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "graph-int.h"

/* FNV-1a: short keys, good enough spread, no allocation. */
static uint64_t
strmap_hash(const char *s, size_t len)
{
	uint64_t h = 1469598103934665603ull;
	size_t i;

	for (i = 0; i < len; i++) {
		h ^= (unsigned char)s[i];
		h *= 1099511628211ull;
	}
	return h;
}

static void
strmap_grow(struct strmap *m)
{
	struct strmap_slot *old = m->slots;
	size_t oldcap = m->cap, i;

	m->cap = oldcap ? oldcap * 2 : 64;
	m->slots = xcalloc(m->cap, sizeof *m->slots);
	m->n = 0;
	for (i = 0; i < oldcap; i++)
		if (old[i].key != NULL)
			strmap_put_len(m, old[i].key, old[i].len, old[i].val);
	free(old);
}

void
strmap_put_len(struct strmap *m, const char *key, size_t len, size_t val)
{
	size_t i;

	if ((m->n + 1) * 4 > m->cap * 3)
		strmap_grow(m);
	i = strmap_hash(key, len) & (m->cap - 1);
	for (;;) {
		struct strmap_slot *s = &m->slots[i];
		if (s->key == NULL) {
			s->key = key;
			s->len = len;
			s->val = val;
			m->n++;
			return;
		}
		if (s->len == len && memcmp(s->key, key, len) == 0) {
			s->val = val;
			return;
		}
		i = (i + 1) & (m->cap - 1);
	}
}

void
strmap_put(struct strmap *m, const char *key, size_t val)
{
	strmap_put_len(m, key, strlen(key), val);
}

bool
strmap_get_len(const struct strmap *m, const char *key, size_t len,
    size_t *val)
{
	size_t i;

	if (m->cap == 0)
		return false;
	i = strmap_hash(key, len) & (m->cap - 1);
	for (;;) {
		const struct strmap_slot *s = &m->slots[i];
		if (s->key == NULL)
			return false;
		if (s->len == len && memcmp(s->key, key, len) == 0) {
			if (val != NULL)
				*val = s->val;
			return true;
		}
		i = (i + 1) & (m->cap - 1);
	}
}

bool
strmap_get(const struct strmap *m, const char *key, size_t *val)
{
	return strmap_get_len(m, key, strlen(key), val);
}

void
strmap_free(struct strmap *m)
{
	free(m->slots);
	memset(m, 0, sizeof *m);
}

/*
 * Removes key, keeping every probe chain intact by shifting later entries
 * of the same cluster back (deletion for linear probing, no tombstones).
 */
bool
strmap_del_len(struct strmap *m, const char *key, size_t len)
{
	size_t i, j, h;

	if (m->cap == 0)
		return false;
	i = strmap_hash(key, len) & (m->cap - 1);
	for (;;) {
		struct strmap_slot *s = &m->slots[i];
		if (s->key == NULL)
			return false;
		if (s->len == len && memcmp(s->key, key, len) == 0)
			break;
		i = (i + 1) & (m->cap - 1);
	}
	m->slots[i].key = NULL;
	m->n--;
	for (j = (i + 1) & (m->cap - 1); m->slots[j].key != NULL;
	    j = (j + 1) & (m->cap - 1)) {
		h = strmap_hash(m->slots[j].key, m->slots[j].len) &
		    (m->cap - 1);
		/* Move j back to i unless its home lies cyclically in (i, j]. */
		if (i <= j ? (i < h && h <= j) : (i < h || h <= j))
			continue;
		m->slots[i] = m->slots[j];
		m->slots[j].key = NULL;
		i = j;
	}
	return true;
}
