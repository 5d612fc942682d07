/* SPDX-License-Identifier: MIT */
/*
 * xmalloc.h: allocators that abort instead of returning NULL, and a
 * growable byte buffer (xmalloc.c).  Not part of the engine's interface:
 * graph/ and the programs built on it share them as a utility.
 */
#ifndef GRAPH_XMALLOC_H
#define GRAPH_XMALLOC_H

#include <stdarg.h>
#include <stddef.h>

void *xmalloc(size_t size);
void *xcalloc(size_t n, size_t size);
void *xreallocarray(void *ptr, size_t n, size_t size);
void *xgrowarray(void *ptr, size_t n, size_t size);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
char *xvasprintf(const char *fmt, va_list ap)
    __attribute__((format(printf, 1, 0), nonnull(1)));

/* A growable NUL-terminated byte buffer. */
struct xbuf {
	char *data;
	size_t len;
	size_t cap;
};

void xbuf_add(struct xbuf *b, const void *data, size_t len);
void xbuf_printf(struct xbuf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
char *xbuf_take(struct xbuf *b);	/* caller frees; buffer is reset */
void xbuf_free(struct xbuf *b);

#endif /* GRAPH_XMALLOC_H */
