/* SPDX-License-Identifier: MIT */
/*
 * http-route.c: which page a request gets, or why none (http.h).
 *
 * Everything here reads only its arguments, so that fuzz-http can drive
 * it with any method, path and Host header.  The server is read-only:
 * GET and HEAD, nothing else.  The Host header must name this server,
 * by the address it listens on or as loopback: a page of another site
 * whose name was made to resolve to 127.0.0.1 (DNS rebinding) sends its
 * own name, and is refused before any of our data is produced.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "http.h"
#include "xmalloc.h"

/* Longest path we route; a longer one is none of ours. */
#define HTTP_MAX_PATH 256

static void
refuse(struct http_route *r, int status, const char *why)
{
	r->page = HTTP_PAGE_NONE;
	r->status = status;
	r->why = why;
	r->asset = NULL;
}

/* Does host (a Host header) name site, by address or as loopback? */
static bool
host_ok(const struct http_site *site, const char *host)
{
	static const char *const loopback[] = { "localhost", "127.0.0.1",
	    "[::1]" };
	char name[80], self[80];
	const char *colon;
	unsigned long port = 80;
	size_t n, i;
	char *end;

	if (host == NULL || *host == '\0' || strlen(host) >= sizeof name)
		return false;
	/* The port follows the last colon outside brackets. */
	colon = strrchr(host, ':');
	if (colon != NULL && strchr(colon, ']') != NULL)
		colon = NULL;
	n = colon != NULL ? (size_t)(colon - host) : strlen(host);
	if (colon != NULL) {
		if (!isdigit((unsigned char)colon[1]))
			return false;
		port = strtoul(colon + 1, &end, 10);
		if (*end != '\0' || port > 65535)
			return false;
	}
	if (port != site->port || n == 0)
		return false;
	memcpy(name, host, n);
	name[n] = '\0';
	for (i = 0; i < sizeof loopback / sizeof *loopback; i++)
		if (strcasecmp(name, loopback[i]) == 0)
			return true;
	snprintf(self, sizeof self, strchr(site->host, ':') != NULL ?
	    "[%s]" : "%s", site->host);
	return strcasecmp(name, self) == 0;
}

void
http_route(const struct http_site *site, const char *method,
    const char *url, const char *host, struct http_route *r)
{
	size_t i, n;

	r->status = 200;
	r->why = NULL;
	r->asset = NULL;
	if (method == NULL || (strcmp(method, "GET") != 0 &&
	    strcmp(method, "HEAD") != 0)) {
		refuse(r, 405, "only GET and HEAD: the page is read-only");
		return;
	}
	if (!host_ok(site, host)) {
		refuse(r, 421, "the Host header does not name this server");
		return;
	}
	if (url == NULL || url[0] != '/' || strlen(url) > HTTP_MAX_PATH) {
		refuse(r, 404, "no such page");
		return;
	}
	/* A query string changes nothing (a cache buster, say). */
	n = strcspn(url, "?#");
	if (n == strlen("/api/jobs") && strncmp(url, "/api/jobs", n) == 0) {
		r->page = HTTP_PAGE_JOBS;
		return;
	}
	if (n == strlen("/api/history") && strncmp(url, "/api/history",
	    n) == 0) {
		r->page = HTTP_PAGE_HISTORY;
		return;
	}
	for (i = 0; i < web_nassets; i++)
		if (strlen(web_assets[i].path) == n &&
		    strncmp(url, web_assets[i].path, n) == 0) {
			r->page = HTTP_PAGE_ASSET;
			r->asset = &web_assets[i];
			return;
		}
	refuse(r, 404, "no such page");
}

int
http_parse_listen(const char *s, struct http_site *site, char **cause)
{
	const char *colon, *port;
	unsigned long p;
	size_t n;
	char *end;

	memset(site, 0, sizeof *site);
	if (s[0] == '[') {
		/* [IPv6]:PORT */
		if ((colon = strstr(s, "]:")) == NULL)
			goto bad;
		n = (size_t)(colon - s - 1);
		port = colon + 2;
		if (n == 0 || n >= sizeof site->host)
			goto bad;
		memcpy(site->host, s + 1, n);
	} else if ((colon = strrchr(s, ':')) != NULL) {
		n = (size_t)(colon - s);
		port = colon + 1;
		if (n == 0 || n >= sizeof site->host || memchr(s, ':', n))
			goto bad;
		memcpy(site->host, s, n);
	} else {
		/* A port alone: loopback, the default. */
		snprintf(site->host, sizeof site->host, "127.0.0.1");
		port = s;
	}
	if (!isdigit((unsigned char)*port))
		goto bad;
	errno = 0;
	p = strtoul(port, &end, 10);
	if (*end != '\0' || errno != 0 || p > 65535)
		goto bad;
	site->port = (unsigned)p;
	return 0;
bad:
	*cause = xasprintf("'%s' is not PORT, ADDRESS:PORT or [IPv6]:PORT",
	    s);
	return -EINVAL;
}
