/* SPDX-License-Identifier: MIT */
/*
 * peer.c: who is on the other end of a connection.
 *
 * Identity comes from the kernel (SO_PEERCRED), read once at accept: it
 * describes the peer as it was at connect().  It is kept as numbers, never
 * as a string to compare.  The supplementary groups are looked up from the
 * user database, because file access checks on the user's behalf
 * (graph/fsroot.c) need them.  Loop thread only.
 */
#define _GNU_SOURCE
#include <sys/socket.h>

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>

#include "daemon.h"

#define PEER_MAX_GROUPS 256

int
peer_read(int fd, struct peer *p)
{
	struct ucred uc;
	socklen_t len = sizeof uc;
	struct passwd pw, *res = NULL;
	char buf[4096];
	gid_t groups[PEER_MAX_GROUPS];
	int n = PEER_MAX_GROUPS, i;

	memset(p, 0, sizeof *p);
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &uc, &len) == -1)
		return -errno;
	p->pid = uc.pid;
	p->uid = (uint32_t)uc.uid;
	p->gid = (uint32_t)uc.gid;
	if (getpwuid_r(uc.uid, &pw, buf, sizeof buf, &res) == 0 &&
	    res != NULL) {
		p->user = xstrdup(pw.pw_name);
		if (getgrouplist(pw.pw_name, pw.pw_gid, groups, &n) < 0)
			n = 0;
		p->groups = xcalloc((size_t)n + 1, sizeof *p->groups);
		for (i = 0; i < n; i++)
			p->groups[p->ngroups++] = (uint32_t)groups[i];
	} else {
		p->user = xasprintf("%u", (unsigned)uc.uid);
		p->groups = xcalloc(1, sizeof *p->groups);
	}
	return 0;
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
