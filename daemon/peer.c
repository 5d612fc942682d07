/* SPDX-License-Identifier: MIT */
/*
 * peer.c: who is on the other end of a connection.
 *
 * Identity comes from the kernel (SO_PEERCRED), read once at accept: it
 * describes the peer as it was at connect().  It is kept as numbers, never
 * as a string to compare.  Its supplementary groups too, because the
 * daemon's file access on the user's behalf (graph/cred.c) needs them.
 * Loop thread only.
 */
#define _GNU_SOURCE
#include <sys/socket.h>

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>

#include "daemon.h"
#include "xmalloc.h"

/* Linux allows 65536 supplementary groups; most users have a few. */
#define PEER_MAX_GROUPS 65536

/*
 * The peer's supplementary groups as its process has them at connect()
 * (SO_PEERGROUPS): a user who dropped a group (newgrp, setpriv) does not
 * get it back through the daemon.  Kernels before 4.13 lack it; then the
 * user database says.
 */
static int
peer_groups(int fd, const char *user, gid_t gid, struct peer *p)
{
	socklen_t len = 64 * sizeof(gid_t);
	gid_t *g = xcalloc(64, sizeof *g);
	int n, i;

	while (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, g, &len) == -1) {
		if (errno != ERANGE || len > PEER_MAX_GROUPS * sizeof(gid_t)) {
			free(g);
			if (user != NULL)
				return peer_user_groups(user, gid, p);
			p->groups = xcalloc(1, sizeof *p->groups);
			return 0;
		}
		g = xreallocarray(g, len / sizeof *g + 1, sizeof *g);
	}
	n = (int)(len / sizeof *g);
	p->groups = xcalloc((size_t)n + 1, sizeof *p->groups);
	for (i = 0; i < n; i++)
		p->groups[p->ngroups++] = (uint32_t)g[i];
	free(g);
	return 0;
}

/* user's groups as the user database lists them (for a job acted on by
 * root on its owner's behalf, or an old kernel). */
int
peer_user_groups(const char *user, gid_t gid, struct peer *p)
{
	gid_t *g;
	int n = 64, i, rc;

	g = xcalloc((size_t)n, sizeof *g);
	while ((rc = getgrouplist(user, gid, g, &n)) < 0 && n > 0 &&
	    n <= PEER_MAX_GROUPS)
		g = xreallocarray(g, (size_t)n, sizeof *g);
	if (rc < 0)
		n = 0;
	free(p->groups);
	p->groups = xcalloc((size_t)n + 1, sizeof *p->groups);
	p->ngroups = 0;
	for (i = 0; i < n; i++)
		p->groups[p->ngroups++] = (uint32_t)g[i];
	free(g);
	return 0;
}

int
peer_read(int fd, struct peer *p)
{
	struct ucred uc;
	socklen_t len = sizeof uc;
	struct passwd pw, *res = NULL;
	char buf[4096];

	memset(p, 0, sizeof *p);
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &uc, &len) == -1)
		return -errno;
	p->pid = uc.pid;
	p->uid = (uint32_t)uc.uid;
	p->gid = (uint32_t)uc.gid;
	if (getpwuid_r(uc.uid, &pw, buf, sizeof buf, &res) == 0 &&
	    res != NULL)
		p->user = xstrdup(pw.pw_name);
	else
		p->user = xasprintf("%u", (unsigned)uc.uid);
	return peer_groups(fd, res != NULL ? pw.pw_name : NULL, uc.gid, p);
}

void
peer_fini(struct peer *p)
{
	free(p->groups);
	free(p->user);
	memset(p, 0, sizeof *p);
}

/* The peer's rights, for filesystem work done for it (borrows p). */
void
peer_cred(const struct peer *p, struct graph_cred *c)
{
	memset(c, 0, sizeof *c);
	c->uid = p->uid;
	c->gid = p->gid;
	c->groups = p->groups;
	c->ngroups = p->ngroups;
	c->umask = 022;
}

/* The owner, or root, may act on a job and see all of it. */
bool
peer_may_act(const struct peer *p, const struct djob *j)
{
	return p->uid == 0 || p->uid == j->owner;
}
