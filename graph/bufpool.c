/* SPDX-License-Identifier: MIT */
/*
 * bufpool.c: chunk buffers, recycled.
 *
 * Decoded inputs and results are large, short-lived and mostly of a few
 * sizes.  They come from mmap, so freeing one really returns it to the
 * kernel (malloc arenas would keep it resident, per thread), but fresh
 * pages cost a fault and a zero-fill each, so freed buffers are kept here
 * and handed out again for the same size.  The executor counts the pooled
 * bytes against its budget (used + pooled never exceeds it) and trims the
 * pool when it needs room.  Loop thread only.
 */
#include <sys/mman.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "graph-int.h"

void *
buf_alloc(size_t size)
{
	void *p;

	p = mmap(NULL, size ? size : 1, PROT_READ | PROT_WRITE,
	    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED) {
		fprintf(stderr, "fatal: buf_alloc(%zu): %s\n", size,
		    strerror(errno));
		abort();
	}
	return p;
}

void
buf_free(void *p, size_t size)
{
	if (p != NULL)
		munmap(p, size ? size : 1);
}

/* A pooled buffer of exactly size bytes, or NULL. */
void *
bufpool_take(struct bufpool *bp, size_t size)
{
	void *p;
	size_t i;

	for (i = bp->n; i-- > 0;) {
		if (bp->v[i].size != size)
			continue;
		p = bp->v[i].p;
		bp->v[i] = bp->v[--bp->n];
		bp->bytes -= size;
		return p;
	}
	return NULL;
}

void
bufpool_put(struct bufpool *bp, void *p, size_t size)
{
	if (p == NULL)
		return;
	if (bp->n == bp->cap) {
		bp->cap = bp->cap ? bp->cap * 2 : 16;
		bp->v = xreallocarray(bp->v, bp->cap, sizeof *bp->v);
	}
	bp->v[bp->n].p = p;
	bp->v[bp->n++].size = size;
	bp->bytes += size;
}

/* Returns pooled buffers to the kernel, oldest first, until need is met. */
void
bufpool_trim(struct bufpool *bp, uint64_t need)
{
	uint64_t freed = 0;
	size_t i = 0;

	while (i < bp->n && freed < need) {
		freed += bp->v[i].size;
		bp->bytes -= bp->v[i].size;
		buf_free(bp->v[i].p, bp->v[i].size);
		i++;
	}
	if (i == 0)
		return;
	memmove(bp->v, bp->v + i, (bp->n - i) * sizeof *bp->v);
	bp->n -= i;
}

void
bufpool_fini(struct bufpool *bp)
{
	bufpool_trim(bp, UINT64_MAX);
	free(bp->v);
	memset(bp, 0, sizeof *bp);
}
