/* SPDX-License-Identifier: MIT */
/*
 * xmalloc.c: allocation wrappers that never return NULL.
 *
 * Out of memory in a merge daemon is not a condition any caller can handle
 * better than by stopping with a message, so these abort (tmux xmalloc.c).
 * Zero-sized and overflowing requests abort too: both are bugs, because
 * every size derived from input is bounded by a limit before it gets here.
 * Safe to call from any thread.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "graph-int.h"

static void xalloc_die(const char *, size_t, size_t) __attribute__((noreturn));

static void
xalloc_die(const char *what, size_t a, size_t b)
{
	fprintf(stderr, "fatal: %s(%zu, %zu): out of memory\n", what, a, b);
	abort();
}

void *
xmalloc(size_t size)
{
	void *p;

	if (size == 0)
		xalloc_die("xmalloc", size, 0);
	if ((p = malloc(size)) == NULL)
		xalloc_die("xmalloc", size, 0);
	return p;
}

void *
xcalloc(size_t n, size_t size)
{
	void *p;

	if (n == 0 || size == 0)
		xalloc_die("xcalloc", n, size);
	if ((p = calloc(n, size)) == NULL)
		xalloc_die("xcalloc", n, size);
	return p;
}

void *
xreallocarray(void *ptr, size_t n, size_t size)
{
	void *p;

	if (n == 0 || size == 0 || n > SIZE_MAX / size)
		xalloc_die("xreallocarray", n, size);
	if ((p = realloc(ptr, n * size)) == NULL)
		xalloc_die("xreallocarray", n, size);
	return p;
}

/*
 * For an array grown one element at a time by its own count n, and never
 * shrunk: makes room for element n, reallocating only when n is a power
 * of two, so that n appends copy O(n) bytes, not O(n^2) (a header of
 * tens of thousands of tensors; glibc's MALLOC_PERTURB_ also writes every
 * block freed).
 */
void *
xgrowarray(void *ptr, size_t n, size_t size)
{
	if (n != 0 && (n & (n - 1)) != 0)
		return ptr;
	return xreallocarray(ptr, n == 0 ? 1 : 2 * n, size);
}

char *
xstrdup(const char *s)
{
	return xstrndup(s, strlen(s));
}

char *
xstrndup(const char *s, size_t n)
{
	char *p;

	p = xmalloc(n + 1);
	memcpy(p, s, n);
	p[n] = '\0';
	return p;
}

char *
xvasprintf(const char *fmt, va_list ap)
{
	va_list ap2;
	char *p;
	int n;

	va_copy(ap2, ap);
	n = vsnprintf(NULL, 0, fmt, ap2);
	va_end(ap2);
	if (n < 0)
		xalloc_die("xvasprintf", 0, 0);
	p = xmalloc((size_t)n + 1);
	vsnprintf(p, (size_t)n + 1, fmt, ap);
	return p;
}

char *
xasprintf(const char *fmt, ...)
{
	va_list ap;
	char *p;

	va_start(ap, fmt);
	p = xvasprintf(fmt, ap);
	va_end(ap);
	return p;
}

void
xbuf_add(struct xbuf *b, const void *data, size_t len)
{
	size_t need;

	need = b->len + len + 1;
	if (need > b->cap) {
		b->cap = b->cap ? b->cap : 256;
		while (b->cap < need)
			b->cap *= 2;
		b->data = xreallocarray(b->data, 1, b->cap);
	}
	memcpy(b->data + b->len, data, len);
	b->len += len;
	b->data[b->len] = '\0';
}

void
xbuf_printf(struct xbuf *b, const char *fmt, ...)
{
	va_list ap;
	char *s;

	va_start(ap, fmt);
	s = xvasprintf(fmt, ap);
	va_end(ap);
	xbuf_add(b, s, strlen(s));
	free(s);
}

char *
xbuf_take(struct xbuf *b)
{
	char *s;

	if (b->data == NULL)
		xbuf_add(b, "", 0);
	s = b->data;
	b->data = NULL;
	b->len = b->cap = 0;
	return s;
}

void
xbuf_free(struct xbuf *b)
{
	free(b->data);
	b->data = NULL;
	b->len = b->cap = 0;
}
