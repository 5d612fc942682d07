/* SPDX-License-Identifier: MIT */
/*
 * http.c: merged --http, the team's read-only status page.
 *
 * libmicrohttpd parses HTTP; we do not write an HTTP parser.  It runs
 * on the daemon's own libuv loop, without threads of its own: started
 * with MHD_USE_EPOLL and no internal polling, it keeps every socket in
 * one epoll descriptor, which one uv_poll watches; a timer follows
 * MHD_get_timeout for its connection timeouts.  So the handlers below
 * run on the loop thread, where the job list lives, and read it as
 * op-list.c does.
 *
 * Bounds, since any local process (or, with an explicit address, any
 * host that can reach it) may connect: HTTP_MAX_CONN connections, of
 * which HTTP_MAX_CONN_PER_IP from one address, HTTP_MAX_REQUEST bytes
 * of request (headers included; libmicrohttpd answers more with 431 or
 * closes), HTTP_TIMEOUT seconds idle, no request body at all, and
 * HTTP_RATE requests a second (a bucket of HTTP_BURST) before 429.
 * What is shown is the queue's public fields only (op_job_json's public
 * form: no config, path, error or log); http-route.c decides who may
 * ask, http-api.c writes the JSON.
 */
#include <sys/socket.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <microhttpd.h>

#include "daemon.h"
#include "http.h"
#include "xmalloc.h"

#define HTTP_MAX_CONN 64
#define HTTP_MAX_CONN_PER_IP 16
#define HTTP_MAX_REQUEST (32u << 10)
#define HTTP_TIMEOUT 15
#define HTTP_RATE 50.0
#define HTTP_BURST 200.0

struct http {
	struct daemon *d;
	struct MHD_Daemon *mhd;
	struct http_site site;
	uv_poll_t poll;
	uv_timer_t timer;
	double tokens;		/* the rate limit's bucket */
	double refilled;	/* when it was last filled */
};

/* Another request may be answered now (HTTP_RATE a second). */
static bool
http_rate_ok(struct http *h)
{
	double now = daemon_now();

	h->tokens += (now - h->refilled) * HTTP_RATE;
	h->refilled = now;
	if (h->tokens > HTTP_BURST)
		h->tokens = HTTP_BURST;
	if (h->tokens < 1)
		return false;
	h->tokens -= 1;
	return true;
}

static enum MHD_Result
http_respond(struct MHD_Connection *c, unsigned status, const char *type,
    void *body, size_t len, enum MHD_ResponseMemoryMode mode)
{
	struct MHD_Response *r;
	enum MHD_Result rc;

	r = MHD_create_response_from_buffer(len, body, mode);
	if (r == NULL)
		return MHD_NO;
	MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
	MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
	MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
	MHD_add_response_header(r, "Referrer-Policy", "no-referrer");
	/* Only our own files run, and nothing may frame the page. */
	MHD_add_response_header(r, "Content-Security-Policy",
	    "default-src 'self'; img-src 'self' data:; "
	    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'");
	rc = MHD_queue_response(c, status, r);
	MHD_destroy_response(r);
	return rc;
}

static enum MHD_Result
http_refuse(struct MHD_Connection *c, unsigned status, const char *why)
{
	char *text = xasprintf("%u %s\n", status, why);

	return http_respond(c, status, "text/plain; charset=utf-8", text,
	    strlen(text), MHD_RESPMEM_MUST_FREE);
}

static enum MHD_Result
http_answer(void *cls, struct MHD_Connection *c, const char *url,
    const char *method, const char *version, const char *upload,
    size_t *upload_size, void **state)
{
	static int seen;
	struct http *h = cls;
	struct http_route r;
	const char *host;
	char *body;

	(void)version;
	(void)upload;
	/* The first call has the headers: answer then, never read a
	 * body (a read-only page takes none). */
	if (*state != NULL || *upload_size != 0)
		return MHD_NO;
	*state = &seen;
	if (!http_rate_ok(h))
		return http_refuse(c, 429, "too many requests; try again in a "
		    "second");
	host = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
	    MHD_HTTP_HEADER_HOST);
	http_route(&h->site, method, url, host, &r);
	switch (r.page) {
	case HTTP_PAGE_ASSET:
		return http_respond(c, 200, r.asset->type,
		    (void *)r.asset->data, r.asset->len,
		    MHD_RESPMEM_PERSISTENT);
	case HTTP_PAGE_JOBS:
		body = http_api_jobs(h->d);
		break;
	case HTTP_PAGE_HISTORY:
		body = http_api_history(h->d);
		break;
	case HTTP_PAGE_NONE:
	default:
		return http_refuse(c, (unsigned)r.status, r.why);
	}
	return http_respond(c, 200, "application/json", body, strlen(body),
	    MHD_RESPMEM_MUST_FREE);
}

static void http_rearm(struct http *h);

static void
http_on_poll(uv_poll_t *p, int status, int events)
{
	struct http *h = p->data;

	(void)status;
	(void)events;
	MHD_run(h->mhd);
	http_rearm(h);
}

static void
http_on_timer(uv_timer_t *t)
{
	struct http *h = t->data;

	MHD_run(h->mhd);
	http_rearm(h);
}

/* The next of libmicrohttpd's timeouts, if it has one. */
static void
http_rearm(struct http *h)
{
	MHD_UNSIGNED_LONG_LONG ms;

	if (MHD_get_timeout(h->mhd, &ms) == MHD_YES)
		uv_timer_start(&h->timer, http_on_timer, (uint64_t)ms, 0);
	else
		uv_timer_stop(&h->timer);
}

/* The socket address of site (IPv4 or IPv6 literal). */
static int
http_sockaddr(const struct http_site *site, struct sockaddr_storage *ss,
    char **cause)
{
	struct sockaddr_in *in = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;

	memset(ss, 0, sizeof *ss);
	if (inet_pton(AF_INET, site->host, &in->sin_addr) == 1) {
		in->sin_family = AF_INET;
		in->sin_port = htons((uint16_t)site->port);
		return 0;
	}
	if (inet_pton(AF_INET6, site->host, &in6->sin6_addr) == 1) {
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons((uint16_t)site->port);
		return 0;
	}
	*cause = xasprintf("'%s' is not an IPv4 or IPv6 address", site->host);
	return -EINVAL;
}

int
http_start(struct daemon *d, const char *listen, char **cause)
{
	const union MHD_DaemonInfo *info;
	struct sockaddr_storage ss;
	struct http *h;
	unsigned flags;

	h = xcalloc(1, sizeof *h);
	h->d = d;
	h->tokens = HTTP_BURST;
	h->refilled = daemon_now();
	if (http_parse_listen(listen, &h->site, cause) != 0 ||
	    http_sockaddr(&h->site, &ss, cause) != 0)
		goto fail;
	flags = MHD_USE_EPOLL | MHD_USE_ERROR_LOG;
	if (ss.ss_family == AF_INET6)
		flags |= MHD_USE_IPv6;
	h->mhd = MHD_start_daemon(flags, (uint16_t)h->site.port, NULL, NULL,
	    http_answer, h,
	    MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
	    MHD_OPTION_CONNECTION_LIMIT, (unsigned)HTTP_MAX_CONN,
	    MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)HTTP_MAX_CONN_PER_IP,
	    MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)HTTP_TIMEOUT,
	    MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)HTTP_MAX_REQUEST,
	    MHD_OPTION_END);
	if (h->mhd == NULL) {
		*cause = xasprintf("cannot listen on %s: %s", listen,
		    strerror(errno != 0 ? errno : EADDRINUSE));
		goto fail;
	}
	/* Port 0: the kernel chose one, which the Host check needs. */
	if ((info = MHD_get_daemon_info(h->mhd,
	    MHD_DAEMON_INFO_BIND_PORT)) != NULL && info->port != 0)
		h->site.port = info->port;
	info = MHD_get_daemon_info(h->mhd, MHD_DAEMON_INFO_EPOLL_FD);
	if (info == NULL) {
		*cause = xstrdup("libmicrohttpd has no epoll descriptor");
		goto fail;
	}
	uv_poll_init(&d->loop, &h->poll, info->epoll_fd);
	h->poll.data = h;
	uv_timer_init(&d->loop, &h->timer);
	h->timer.data = h;
	uv_poll_start(&h->poll, UV_READABLE, http_on_poll);
	http_rearm(h);
	d->http = h;
	return 0;
fail:
	if (h->mhd != NULL)
		MHD_stop_daemon(h->mhd);
	free(h);
	return -1;
}

/* "http://127.0.0.1:8080/", for the log and daemon status. */
char *
http_url(const struct daemon *d)
{
	const struct http *h = d->http;

	if (h == NULL)
		return xstrdup("");
	return xasprintf(strchr(h->site.host, ':') != NULL ?
	    "http://[%s]:%u/" : "http://%s:%u/", h->site.host, h->site.port);
}

/* Stops serving: the loop's handles close with every other. */
void
http_stop(struct daemon *d)
{
	struct http *h = d->http;

	if (h == NULL)
		return;
	uv_poll_stop(&h->poll);
	uv_timer_stop(&h->timer);
	if (!uv_is_closing((uv_handle_t *)&h->poll))
		uv_close((uv_handle_t *)&h->poll, NULL);
	if (!uv_is_closing((uv_handle_t *)&h->timer))
		uv_close((uv_handle_t *)&h->timer, NULL);
}

/* After the loop: the connections and the listening socket go. */
void
http_free(struct daemon *d)
{
	struct http *h = d->http;

	if (h == NULL)
		return;
	MHD_stop_daemon(h->mhd);
	free(h);
	d->http = NULL;
}
