/* SPDX-License-Identifier: MIT */
/*
 * http.h: the team's status page (merged --http): a read-only web page
 * and its JSON, served from the daemon's own loop by libmicrohttpd
 * (http.c), routed by a pure function that the fuzzer drives
 * (http-route.c), from assets embedded in the binary (web/).
 */
#ifndef HTTP_H
#define HTTP_H

#include <stdbool.h>
#include <stddef.h>

/* What a request asks for, once routed. */
enum http_page {
	HTTP_PAGE_NONE,		/* refused: see status */
	HTTP_PAGE_ASSET,	/* an embedded file: asset */
	HTTP_PAGE_JOBS,		/* /api/jobs */
	HTTP_PAGE_HISTORY,	/* /api/history */
};

/* An embedded file (web-assets.c, generated from daemon/web/). */
struct web_asset {
	const char *path;	/* "/", "/app.js", ... */
	const char *type;	/* its Content-Type */
	const unsigned char *data;
	size_t len;
};

extern const struct web_asset web_assets[];
extern const size_t web_nassets;

/* Where the server listens, as the Host header must name it. */
struct http_site {
	char host[64];		/* the address as given: "127.0.0.1", "::1" */
	unsigned port;
};

struct http_route {
	enum http_page page;
	int status;		/* 200, or the refusal's status */
	const char *why;	/* a refusal's text */
	const struct web_asset *asset;
};

/*
 * Routes a request: only GET and HEAD, only a Host that names this
 * server (DNS rebinding: a page of another site, resolved to us, sends
 * its own name), only the paths the page has.  Pure: no I/O.
 */
void http_route(const struct http_site *site, const char *method,
    const char *url, const char *host, struct http_route *out);
/* Parses --http's [ADDR:]PORT (ADDR: IPv4, or IPv6 in brackets). */
int http_parse_listen(const char *s, struct http_site *site, char **cause);

#endif /* HTTP_H */
