/* SPDX-License-Identifier: MIT */
/*
 * strmap.c: an open-addressing hash map from borrowed C strings to indices.
 *
 * Model tensor tables, the plan's name lookups and the executor's cache all
 * need "name -> slot" lookups over tens of thousands of entries; a linear
 * scan would make planning a 70B model quadratic.  The map borrows its keys:
 * the owner of the strings must outlive the map.  Not thread safe.
 *
 * Keys come from files other users wrote (tensor names, zip entries), so
 * the hash is keyed: SipHash-1-3 with a key drawn once per process.  With
 * an unkeyed hash (FNV-1a, before) 65,536 names built to share their low
 * bits made one linear-probing cluster, and reading the directory of a
 * crafted 13 MB .bin took 27 s.  Nothing iterates over a map, so the
 * random key changes no output.
 */
#include <sys/types.h>

#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "graph-int.h"

static uint64_t strmap_k0, strmap_k1;
static pthread_once_t strmap_once = PTHREAD_ONCE_INIT;

static void
strmap_seed(void)
{
	uint64_t k[2] = { 0, 0 };
	struct timespec ts;
	ssize_t got = -1;
	int fd;

	if ((fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC)) != -1) {
		got = read(fd, k, sizeof k);
		close(fd);
	}
	if (got != (ssize_t)sizeof k) {
		/* No /dev/urandom (a chroot): still different per run. */
		clock_gettime(CLOCK_MONOTONIC, &ts);
		k[0] ^= (uint64_t)ts.tv_nsec * 0x9e3779b97f4a7c15ull ^
		    (uint64_t)getpid();
		k[1] ^= (uint64_t)ts.tv_sec ^ (uint64_t)(uintptr_t)&ts;
	}
	strmap_k0 = k[0];
	strmap_k1 = k[1];
}

#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND(v0, v1, v2, v3) do {					\
	v0 += v1; v1 = ROTL(v1, 13); v1 ^= v0; v0 = ROTL(v0, 32);	\
	v2 += v3; v3 = ROTL(v3, 16); v3 ^= v2;				\
	v0 += v3; v3 = ROTL(v3, 21); v3 ^= v0;				\
	v2 += v1; v1 = ROTL(v1, 17); v1 ^= v2; v2 = ROTL(v2, 32);	\
} while (0)

/* SipHash-1-3 of s[0, len) under the process's key. */
static uint64_t
strmap_hash(const char *s, size_t len)
{
	const unsigned char *p = (const unsigned char *)s;
	uint64_t v0, v1, v2, v3, m;
	size_t i, k;

	pthread_once(&strmap_once, strmap_seed);
	v0 = 0x736f6d6570736575ull ^ strmap_k0;
	v1 = 0x646f72616e646f6dull ^ strmap_k1;
	v2 = 0x6c7967656e657261ull ^ strmap_k0;
	v3 = 0x7465646279746573ull ^ strmap_k1;
	for (i = 0; i + 8 <= len; i += 8) {
		for (m = 0, k = 8; k-- > 0;)
			m = m << 8 | p[i + k];
		v3 ^= m;
		SIPROUND(v0, v1, v2, v3);
		v0 ^= m;
	}
	for (m = (uint64_t)len << 56, k = 0; i + k < len; k++)
		m |= (uint64_t)p[i + k] << (8 * k);
	v3 ^= m;
	SIPROUND(v0, v1, v2, v3);
	v0 ^= m;
	v2 ^= 0xff;
	SIPROUND(v0, v1, v2, v3);
	SIPROUND(v0, v1, v2, v3);
	SIPROUND(v0, v1, v2, v3);
	return v0 ^ v1 ^ v2 ^ v3;
}

/* Puts a key known to be absent, its hash given (growing, rehashing). */
static void
strmap_insert(struct strmap *m, const char *key, size_t len, uint64_t h,
    size_t val)
{
	size_t i = h & (m->cap - 1);

	while (m->slots[i].key != NULL)
		i = (i + 1) & (m->cap - 1);
	m->slots[i].key = key;
	m->slots[i].len = len;
	m->slots[i].hash = h;
	m->slots[i].val = val;
	m->n++;
}

static void
strmap_grow(struct strmap *m)
{
	struct strmap_slot *old = m->slots;
	size_t oldcap = m->cap, i;

	m->cap = oldcap ? oldcap * 2 : 64;
	m->slots = xcalloc(m->cap, sizeof *m->slots);
	m->n = 0;
	/* The stored hashes spare hashing every key again. */
	for (i = 0; i < oldcap; i++)
		if (old[i].key != NULL)
			strmap_insert(m, old[i].key, old[i].len, old[i].hash,
			    old[i].val);
	free(old);
}

/* A slot holds key: the full hash first, so most misses skip memcmp. */
static bool
strmap_slot_is(const struct strmap_slot *s, const char *key, size_t len,
    uint64_t h)
{
	return s->hash == h && s->len == len && memcmp(s->key, key, len) == 0;
}

void
strmap_put_len(struct strmap *m, const char *key, size_t len, size_t val)
{
	uint64_t h;
	size_t i;

	if ((m->n + 1) * 4 > m->cap * 3)
		strmap_grow(m);
	h = strmap_hash(key, len);
	for (i = h & (m->cap - 1); m->slots[i].key != NULL;
	    i = (i + 1) & (m->cap - 1))
		if (strmap_slot_is(&m->slots[i], key, len, h)) {
			m->slots[i].val = val;
			return;
		}
	strmap_insert(m, key, len, h, val);
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
	uint64_t h;
	size_t i;

	if (m->cap == 0)
		return false;
	h = strmap_hash(key, len);
	for (i = h & (m->cap - 1); m->slots[i].key != NULL;
	    i = (i + 1) & (m->cap - 1))
		if (strmap_slot_is(&m->slots[i], key, len, h)) {
			if (val != NULL)
				*val = m->slots[i].val;
			return true;
		}
	return false;
}

/* The map's own pointer for key (the one it was put with), or NULL. */
const char *
strmap_key(const struct strmap *m, const char *key, size_t *val)
{
	size_t len = strlen(key), i;
	uint64_t h;

	if (m->cap == 0)
		return NULL;
	h = strmap_hash(key, len);
	for (i = h & (m->cap - 1); m->slots[i].key != NULL;
	    i = (i + 1) & (m->cap - 1))
		if (strmap_slot_is(&m->slots[i], key, len, h)) {
			*val = m->slots[i].val;
			return m->slots[i].key;
		}
	return NULL;
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
	uint64_t h;
	size_t i, j;

	if (m->cap == 0)
		return false;
	h = strmap_hash(key, len);
	for (i = h & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
		if (m->slots[i].key == NULL)
			return false;
		if (strmap_slot_is(&m->slots[i], key, len, h))
			break;
	}
	m->slots[i].key = NULL;
	m->n--;
	for (j = (i + 1) & (m->cap - 1); m->slots[j].key != NULL;
	    j = (j + 1) & (m->cap - 1)) {
		h = m->slots[j].hash & (m->cap - 1);
		/* Move j back to i unless its home lies cyclically in (i, j]. */
		if (i <= j ? (i < h && h <= j) : (i < h || h <= j))
			continue;
		m->slots[i] = m->slots[j];
		m->slots[j].key = NULL;
		i = j;
	}
	return true;
}
