/* SPDX-License-Identifier: MIT */
/*
 * conn.c: one client connection: reading lines (and descriptors), and
 * writing replies without ever blocking the loop.
 *
 * The socket is driven with a uv_poll_t and our own recvmsg()/send()
 * rather than a uv_pipe_t, because requests carry descriptors
 * (SCM_RIGHTS) that libuv's stream API cannot hand over as plain file
 * descriptors.  Input goes through the shared framer (proto/frame.c):
 * every complete line is dispatched, a malformed or oversized one gets
 * one error and the connection closes after it is flushed, as does one
 * whose descriptors the kernel could not all hand over.  Descriptors
 * arrive with the first bytes of the line that names them ("fds": n); a
 * request claims them, and any it does not claim are closed after it.
 * Replies are queued and sent as the socket allows; a client that does
 * not read has its reading paused, and past PROTO_MAX_OUTQ bytes it is
 * disconnected, so no client can stall the loop or hold the daemon's
 * memory.  While a request of a connection is planned on the pool
 * (prep.c), the connection reads and handles nothing more, so that its
 * replies stay in order.  Jobs and watches refer to connections by id,
 * never by pointer; memory is freed only in the uv_close callback.  Loop
 * thread only.
 */
#define _GNU_SOURCE
#include <sys/resource.h>
#include <sys/socket.h>

#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cJSON.h>

#include "daemon.h"
#include "xmalloc.h"

static void conn_on_poll(uv_poll_t *, int, int);
static void conn_update(struct conn *);
static void conn_protocol_error(struct conn *, const char *);

static void
conn_refuse(int fd, const char *code, const char *msg)
{
	cJSON *e = msg_error(0, code, msg);
	size_t len = 0;
	char *line = msg_print(e, &len);

	/* A best effort: the socket is new, so this small write fits. */
	if (line != NULL && send(fd, line, len, MSG_NOSIGNAL |
	    MSG_DONTWAIT) == -1)
		log_debug("refusing a connection: %s", strerror(errno));
	free(line);
	cJSON_Delete(e);
	close(fd);
}

size_t
conn_count_uid(const struct daemon *d, uint32_t uid)
{
	const struct conn *c;
	size_t n = 0;

	for (c = d->conns; c != NULL; c = c->next)
		n += c->peer.uid == uid;
	return n;
}

void
conn_accept(struct daemon *d, int fd)
{
	struct peer p;
	struct conn *c;

	if (peer_read(fd, &p) != 0) {
		log_warn("SO_PEERCRED");
		close(fd);
		return;
	}
	if (!d->opts.team && p.uid != d->uid && p.uid != 0) {
		conn_refuse(fd, PROTO_E_FORBIDDEN, "this is a personal daemon; "
		    "it serves only its own user");
	} else if (d->nconns >= PROTO_MAX_CONN) {
		conn_refuse(fd, PROTO_E_LIMIT, "too many connections");
	} else if (conn_count_uid(d, p.uid) >= PROTO_MAX_CONN_PER_UID) {
		conn_refuse(fd, PROTO_E_LIMIT, "too many connections from "
		    "this user");
	} else {
		c = xcalloc(1, sizeof *c);
		c->d = d;
		c->id = ++d->next_conn;
		c->fd = fd;
		c->peer = p;
		frame_init(&c->in, PROTO_MAX_LINE);
		uv_poll_init(&d->loop, &c->poll, fd);
		c->poll.data = c;
		c->next = d->conns;
		d->conns = c;
		d->nconns++;
		log_debug("connection %llu from uid %u pid %d",
		    (unsigned long long)c->id, (unsigned)p.uid, (int)p.pid);
		conn_update(c);
		return;
	}
	peer_fini(&p);
}

struct conn *
conn_find(struct daemon *d, uint64_t id)
{
	struct conn *c;

	for (c = d->conns; c != NULL; c = c->next)
		if (c->id == id)
			return c;
	return NULL;
}

/* Closes the descriptors that came at or before stream offset upto. */
static void
conn_drop_fds(struct conn *c, uint64_t upto)
{
	size_t i, k = 0;

	for (i = 0; i < c->nfds; i++) {
		if (c->fd_pos[i] <= upto) {
			close(c->fds[i]);
			continue;
		}
		c->fds[k] = c->fds[i];
		c->fd_pos[k++] = c->fd_pos[i];
	}
	c->nfds = k;
}

/*
 * Claims the n descriptors sent with the current request.  The client
 * sends a request's descriptors with the first byte of its line, and the
 * kernel never hands them out with bytes of an earlier send, so they are
 * the ones received at the line's stream offset; descriptors of a later,
 * pipelined line stay for it.
 */
int
conn_take_fds(struct conn *c, size_t n, int *out)
{
	size_t i, k = 0, got = 0, have = 0;

	for (i = 0; i < c->nfds; i++)
		have += c->fd_pos[i] == c->line_pos;
	if (have < n)
		return -EINVAL;
	for (i = 0; i < c->nfds; i++) {
		if (got < n && c->fd_pos[i] == c->line_pos) {
			out[got++] = c->fds[i];
			continue;
		}
		c->fds[k] = c->fds[i];
		c->fd_pos[k++] = c->fd_pos[i];
	}
	c->nfds = k;
	return 0;
}

static void
conn_on_closed(uv_handle_t *h)
{
	struct conn *c = h->data;
	struct outbuf *o;

	close(c->fd);
	conn_drop_fds(c, UINT64_MAX);
	while ((o = c->out_head) != NULL) {
		c->out_head = o->next;
		free(o->data);
		free(o);
	}
	frame_fini(&c->in);
	peer_fini(&c->peer);
	free(c);
}

void
conn_close(struct conn *c)
{
	struct daemon *d = c->d;
	struct conn **pp;
	struct watch **wp, *w;

	if (c->closing)
		return;
	c->closing = true;
	for (pp = &d->conns; *pp != NULL; pp = &(*pp)->next)
		if (*pp == c) {
			*pp = c->next;
			break;
		}
	d->nconns--;
	for (wp = &d->watches; (w = *wp) != NULL;) {
		if (w->conn == c->id) {
			*wp = w->next;
			watch_free(w);
		} else {
			wp = &w->next;
		}
	}
	log_debug("connection %llu closed", (unsigned long long)c->id);
	uv_poll_stop(&c->poll);
	uv_close((uv_handle_t *)&c->poll, conn_on_closed);
}

static bool
conn_watching(const struct conn *c)
{
	const struct watch *w;

	for (w = c->d->watches; w != NULL; w = w->next)
		if (w->conn == c->id)
			return true;
	return false;
}

/*
 * A watcher may half-close (shutdown its writing side) and go on reading
 * events, so end of input does not end a watching connection, and its
 * reading stops.  A client that went away entirely would then be noticed
 * only at the next event, which a slow job may not send for minutes.  A
 * peer that closed both ways shows as POLLHUP: looked for once a second
 * (daemon.c), on just these connections.
 */
void
conn_reap_vanished(struct daemon *d)
{
	struct conn *c, *next;

	for (c = d->conns; c != NULL; c = next) {
		next = c->next;
		if (!c->eof || c->closing)
			continue;
		if (conn_vanished(c))
			conn_close(c);
	}
}

/* Has the peer closed both ways (not merely shut down its writing)? */
bool
conn_vanished(const struct conn *c)
{
	struct pollfd p;

	p.fd = c->fd;
	p.events = 0;
	p.revents = 0;
	return poll(&p, 1, 0) == 1 && (p.revents & (POLLHUP | POLLERR));
}

/* Replies still owed: a watch, or a request being planned (prep.c). */
static bool
conn_owed(const struct conn *c)
{
	return c->planning > 0 || conn_watching(c);
}

/* Sends what the socket takes now; false if the connection died. */
static bool
conn_flush(struct conn *c)
{
	struct outbuf *o;
	ssize_t n;

	while ((o = c->out_head) != NULL) {
		n = send(c->fd, o->data + o->off, o->len - o->off,
		    MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return true;
		if (n <= 0) {
			conn_close(c);
			return false;
		}
		o->off += (size_t)n;
		c->outq -= (size_t)n;
		if (o->off < o->len)
			continue;
		c->out_head = o->next;
		if (c->out_head == NULL)
			c->out_tail = NULL;
		free(o->data);
		free(o);
	}
	/* Everything is sent: a half-closed client with no watch is done. */
	if (c->close_after || (c->eof && !conn_owed(c))) {
		conn_close(c);
		return false;
	}
	return true;
}

/* Takes ownership of msg. */
void
conn_send(struct conn *c, cJSON *msg)
{
	struct outbuf *o;
	size_t len;
	char *line;

	if (c->closing) {
		cJSON_Delete(msg);
		return;
	}
	if ((line = msg_print(msg, &len)) == NULL) {
		/* Only text that is not UTF-8 gets here: a bug of ours. */
		uint64_t id = 0;
		msg_get_u64(msg, PROTO_F_ID, &id);
		log_warnx("connection %llu: a reply could not be encoded",
		    (unsigned long long)c->id);
		cJSON_Delete(msg);
		msg = msg_error(id, PROTO_E_INTERNAL, "the reply could not be "
		    "encoded");
		line = msg_print(msg, &len);
	}
	cJSON_Delete(msg);
	if (c->outq + len > PROTO_MAX_OUTQ) {
		log_warnx("connection %llu: uid %u is not reading its replies; "
		    "disconnecting", (unsigned long long)c->id,
		    (unsigned)c->peer.uid);
		free(line);
		conn_close(c);
		return;
	}
	o = xcalloc(1, sizeof *o);
	o->data = line;
	o->len = len;
	if (c->out_tail != NULL)
		c->out_tail->next = o;
	else
		c->out_head = o;
	c->out_tail = o;
	c->outq += len;
	if (conn_flush(c))
		conn_update(c);
}

static void
conn_update(struct conn *c)
{
	int ev = 0;

	if (c->closing)
		return;
	/* Back-pressure: stop reading while replies pile up, or while a
	 * request is planned (its reply comes first). */
	if (!c->eof && !c->close_after && c->planning == 0 &&
	    c->outq < PROTO_MAX_OUTQ / 2)
		ev |= UV_READABLE;
	if (c->out_head != NULL)
		ev |= UV_WRITABLE;
	if (ev == c->events)
		return;
	c->events = ev;
	if (ev != 0)
		uv_poll_start(&c->poll, ev, conn_on_poll);
	else
		uv_poll_stop(&c->poll);
}

/* A protocol error: one error line, then close once it is sent. */
static void
conn_protocol_error(struct conn *c, const char *msg)
{
	char *esc;

	esc = proto_escape(msg, strlen(msg), 128);
	log_info("connection %llu (uid %u): %s", (unsigned long long)c->id,
	    (unsigned)c->peer.uid, esc);
	free(esc);
	c->close_after = true;
	conn_send(c, msg_error(0, PROTO_E_BAD_REQUEST, msg));
}

/*
 * Collects SCM_RIGHTS descriptors, noting the stream offset of the line
 * they belong to; excess ones are closed at once.  A client sends a
 * request's descriptors with the first byte of its line.  A read may
 * join earlier data with that chunk but always stops right after it
 * (Linux unix_stream_read_generic), so the line that carries them is the
 * last one that starts in this read: data holds its n bytes.
 */
static size_t
conn_collect_fds(struct conn *c, struct msghdr *mh, const char *data,
    size_t n)
{
	size_t start = n > 0 ? n - 1 : 0, got = 0;
	uint64_t pos;
	struct cmsghdr *cm;
	size_t i, k;
	int *fds;

	while (start > 0 && data[start - 1] != '\n')
		start--;
	pos = c->bytes_in + start;
	for (cm = CMSG_FIRSTHDR(mh); cm != NULL; cm = CMSG_NXTHDR(mh, cm)) {
		if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
			continue;
		fds = (int *)(void *)CMSG_DATA(cm);
		k = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		got += k;
		for (i = 0; i < k; i++) {
			if (c->nfds < PROTO_MAX_FDS) {
				c->fd_pos[c->nfds] = pos;
				c->fds[c->nfds++] = fds[i];
			} else {
				close(fds[i]);
			}
		}
	}
	return got;
}

/* How many descriptors we have open; -1 when even that takes one too many. */
static long
conn_open_fds(void)
{
	struct dirent *de;
	DIR *dir;
	long n = 0;

	if ((dir = opendir("/proc/self/fd")) == NULL)
		return -1;
	while ((de = readdir(dir)) != NULL)
		n += de->d_name[0] != '.';
	closedir(dir);
	return n - 1;	/* less the directory's own */
}

/*
 * The kernel cut a message's descriptors (MSG_CTRUNC): the request cannot
 * be trusted to be what the client meant, and ends the connection.  It
 * cuts them for one of two reasons: more came in one message than the
 * buffer holds (PROTO_MAX_FDS: the client broke the protocol), or it could
 * not install them all because we ran out of descriptors (EMFILE, or the
 * system's ENFILE).  Fewer received than the buffer holds means the
 * second, which is ours to report and log, not the client's fault.
 */
static void
conn_fds_lost(struct conn *c, size_t got)
{
	struct rlimit rl;
	long n, held = (long)c->nfds;
	char *msg;

	if (got >= PROTO_MAX_FDS) {
		conn_protocol_error(c, "too many descriptors in one message");
		return;
	}
	/* They go with the connection anyway; closing them now gives the
	 * count below a descriptor to count with (and they are counted back:
	 * the message is about the moment they were lost). */
	conn_drop_fds(c, UINT64_MAX);
	n = conn_open_fds();
	if (getrlimit(RLIMIT_NOFILE, &rl) == -1)
		rl.rlim_cur = 0;
	n = n < 0 ? (long)rl.rlim_cur : n + held;
	msg = xasprintf("the daemon has run out of file descriptors (%ld "
	    "open, limit %llu); try again later", n,
	    (unsigned long long)rl.rlim_cur);
	log_warnx("connection %llu (uid %u): descriptors it sent were lost: "
	    "%ld of %llu open; raise the limit (LimitNOFILE=) or find what "
	    "holds them", (unsigned long long)c->id, (unsigned)c->peer.uid, n,
	    (unsigned long long)rl.rlim_cur);
	c->close_after = true;
	conn_send(c, msg_error(0, PROTO_E_LIMIT, msg));
	free(msg);
}

/* Reads what is there; false when the connection is gone. */
static bool
conn_read(struct conn *c)
{
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(PROTO_MAX_FDS * sizeof(int))];
	} cbuf;
	struct msghdr mh;
	struct iovec iov;
	size_t room, got;
	ssize_t n;
	char *space;

	for (;;) {
		space = frame_space(&c->in, &room);
		if (room == 0)
			return true;	/* the framer reports the long line */
		iov.iov_base = space;
		iov.iov_len = room;
		memset(&mh, 0, sizeof mh);
		mh.msg_iov = &iov;
		mh.msg_iovlen = 1;
		mh.msg_control = cbuf.buf;
		mh.msg_controllen = sizeof cbuf.buf;
		n = recvmsg(c->fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return true;
		if (n == -1) {
			conn_close(c);
			return false;
		}
		got = conn_collect_fds(c, &mh, space, n > 0 ? (size_t)n : 0);
		if (mh.msg_flags & MSG_CTRUNC) {
			conn_fds_lost(c, got);
			return true;
		}
		if (n == 0) {
			frame_eof(&c->in);
			c->eof = true;
			return true;
		}
		frame_commit(&c->in, (size_t)n);
		c->bytes_in += (uint64_t)n;
		/* One read per wake-up: the lines it completed are handled
		 * before more is read, which keeps the buffer within the
		 * line limit and descriptors with their line.  The poll is
		 * level-triggered, so the rest wakes us again. */
		return true;
	}
}

/* Dispatches every complete line; stops at a protocol error. */
static void
conn_process(struct conn *c)
{
	enum frame_status st;
	const char *why;
	cJSON *req;
	size_t len;
	char *line;

	while (!c->close_after && !c->closing && c->planning == 0) {
		st = frame_next(&c->in, &line, &len);
		if (st == FRAME_MORE)
			break;
		if (st != FRAME_OK) {
			conn_protocol_error(c, st == FRAME_TOO_LONG ? "line too "
			    "long" : st == FRAME_TRUNCATED ? "connection closed "
			    "in the middle of a line" : "empty line, NUL byte or "
			    "invalid UTF-8");
			break;
		}
		/* Where this line starts in the stream: what is read, less
		 * what is still in the buffer from the line on. */
		c->line_pos = c->bytes_in - (uint64_t)(c->in.len -
		    (size_t)(line - c->in.buf));
		if ((req = msg_parse(line, len, &why)) == NULL) {
			conn_protocol_error(c, why);
			break;
		}
		op_dispatch(c, req);
		cJSON_Delete(req);
		conn_drop_fds(c, c->line_pos);	/* unclaimed ones */
	}
}

/*
 * Handles the lines read so far; false when the connection is gone or
 * done with (the peer closed and is owed nothing more).
 */
static bool
conn_run(struct conn *c)
{
	conn_process(c);
	if (c->closing)
		return false;
	if (c->eof && c->out_head == NULL && !conn_owed(c)) {
		conn_close(c);
		return false;
	}
	return true;
}

static void
conn_on_poll(uv_poll_t *h, int status, int events)
{
	struct conn *c = h->data;

	if (status < 0) {
		conn_close(c);
		return;
	}
	if ((events & UV_WRITABLE) && !conn_flush(c))
		return;
	if ((events & UV_READABLE) && !c->eof && (!conn_read(c) ||
	    !conn_run(c)))
		return;
	conn_update(c);
}

/*
 * A request's plan is back (prep.c): the lines that came behind it are
 * handled now, and reading goes on.
 */
void
conn_unblock(struct conn *c)
{
	if (c->closing || c->planning > 0 || !conn_run(c))
		return;
	conn_update(c);
}
