/* SPDX-License-Identifier: MIT */
/*
 * fuzz-http.c: fuzz target for what of an HTTP request reaches our code
 * in merged --http (daemon/http-route.c): the method, the path and the
 * Host header, after libmicrohttpd has parsed them, and --http's own
 * argument.  The input is four lines: the listen address, the method,
 * the path, the Host header (a missing line is a missing header).
 *
 * Invariants: a request is answered 200 exactly when it is routed to a
 * page; a page is only ever given for GET or HEAD; an asset routed is
 * the one whose path the request names (less its query); a refusal
 * says why, with 404, 405 or 421; a listen address parses exactly when
 * it gives no cause, and then names a port of at most 65535.
 */
#include <sys/stat.h>

#include <dirent.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"

#define FUZZ_NAME "fuzz-http"
#include "fuzz.h"

/* The next line of *p (NUL-terminated in place), or NULL at the end. */
static char *
next_line(char **p)
{
	char *s = *p, *nl;

	if (s == NULL)
		return NULL;
	if ((nl = strchr(s, '\n')) != NULL) {
		*nl = '\0';
		*p = nl + 1;
	} else {
		*p = NULL;
	}
	return s;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct http_site site;
	struct http_route r;
	char *text, *p, *listen, *method, *url, *host, *cause = NULL;
	bool get;
	size_t n;

	if ((text = malloc(size + 1)) == NULL)
		abort();
	memcpy(text, data, size);
	text[size] = '\0';
	p = text;
	listen = next_line(&p);
	method = next_line(&p);
	url = next_line(&p);
	host = next_line(&p);
	if (listen == NULL || http_parse_listen(listen, &site, &cause) != 0) {
		check(listen == NULL || cause != NULL, "a bad address says why");
		free(cause);
		/* Route against a fixed site all the same. */
		memset(&site, 0, sizeof site);
		snprintf(site.host, sizeof site.host, "127.0.0.1");
		site.port = 8080;
	} else {
		check(cause == NULL && site.port <= 65535 && site.host[0] !=
		    '\0', "a parsed address names a host and a port");
	}
	http_route(&site, method, url, host, &r);
	check((r.status == 200) == (r.page != HTTP_PAGE_NONE),
	    "200 exactly for a page");
	get = method != NULL && (strcmp(method, "GET") == 0 ||
	    strcmp(method, "HEAD") == 0);
	check(r.page == HTTP_PAGE_NONE || get, "pages only for GET and HEAD");
	check((r.page == HTTP_PAGE_ASSET) == (r.asset != NULL),
	    "an asset exactly for an asset page");
	if (r.asset != NULL) {
		n = strcspn(url, "?#");
		check(strlen(r.asset->path) == n && strncmp(r.asset->path, url,
		    n) == 0, "the asset the path names");
	}
	if (r.page == HTTP_PAGE_NONE)
		check(r.why != NULL && (r.status == 404 || r.status == 405 ||
		    r.status == 421), "a refusal says why, with 404, 405 or "
		    "421");
	free(text);
	return 0;
}

#ifndef FUZZ_LIBFUZZER
#include "fuzz-main.h"
#endif
