/* SPDX-License-Identifier: MIT */
/*
 * cred.c: doing a job's filesystem work with its user's rights.
 *
 * A daemon that serves several users must never touch a file with more
 * rights than the user a job belongs to (the confused deputy).  Checking
 * mode bits ourselves is not enough: the kernel also applies sticky
 * directories, hardlink protection, ACLs and search permission on the
 * directory a descriptor names, and a re-implementation misses some of
 * them.  So a daemon running as root lets the kernel check: around each
 * piece of a job's filesystem work, the calling thread takes the user's
 * filesystem uid, gid and supplementary groups (setfsuid, setfsgid and
 * setgroups), and gives them back afterwards.  Samba does the same on
 * Linux.  Three details make this safe:
 *
 *   - The raw system calls change only the calling thread; glibc's
 *     setgroups() would change every thread of the process (it
 *     broadcasts, for POSIX), including other jobs' workers.
 *   - A non-zero fsuid drops the filesystem capabilities (DAC override,
 *     fowner, chown...) from the thread's effective set, so root's
 *     privileges do not apply; setting it back to 0 restores them.
 *   - Every entry is paired with a leave on the same thread before it
 *     returns to the loop or the pool, and a leave that cannot restore
 *     the daemon's credentials aborts rather than run on with a user's.
 *
 * Why threads and not a worker process per job: the jobs of all users
 * then still share one memory budget and one cache of decoded inputs
 * (docs/security.md); a file's cache entry is only reachable by a job
 * that could open that file with its own rights.
 *
 * A daemon that is not root cannot switch; when it serves another user
 * (team mode as a dedicated user), it checks that user's rights on every
 * file itself (graph_cred_allows) on top of the kernel's checks of its
 * own.  mergectl run and a personal daemon pass no credentials, or their
 * own, and nothing is switched or emulated.
 */
#define _GNU_SOURCE
#include <sys/fsuid.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include <errno.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "graph-int.h"

/* More than NGROUPS_MAX (65536) is impossible; most users have few. */
#define CRED_MAX_GROUPS 65536

enum cred_mode
cred_mode(const struct graph_cred *cred)
{
	if (cred == NULL || cred->uid == geteuid())
		return CRED_SELF;
	return geteuid() == 0 ? CRED_SWITCH : CRED_EMULATE;
}

static int
cred_setgroups(size_t n, const gid_t *g)
{
	return (int)syscall(SYS_setgroups, n, g);
}

/* setfsuid/setfsgid return the previous value; -1 asks without change. */
static uint32_t
cred_fsuid(void)
{
	return (uint32_t)syscall(SYS_setfsuid, (uid_t)-1);
}

static uint32_t
cred_fsgid(void)
{
	return (uint32_t)syscall(SYS_setfsgid, (gid_t)-1);
}

/*
 * Takes cred's filesystem identity on this thread when the daemon can
 * switch; otherwise does nothing.  *s records what to give back.
 */
int
cred_enter(const struct graph_cred *cred, struct cred_saved *s,
    char **cause)
{
	gid_t *g = NULL;
	size_t i;
	int n;

	memset(s, 0, sizeof *s);
	if (cred_mode(cred) != CRED_SWITCH)
		return 0;
	if ((n = getgroups(0, NULL)) < 0 || n > CRED_MAX_GROUPS)
		goto fail;
	s->groups = xcalloc((size_t)n + 1, sizeof *s->groups);
	if ((n = getgroups(n, s->groups)) < 0)
		goto fail;
	s->ngroups = (size_t)n;
	s->fsuid = cred_fsuid();
	s->fsgid = cred_fsgid();
	s->active = true;
	g = xcalloc(cred->ngroups + 1, sizeof *g);
	for (i = 0; i < cred->ngroups; i++)
		g[i] = cred->groups[i];
	/* Groups and gid first: a non-zero fsuid takes the capability
	 * (CAP_SETGID is not among those it drops, but order keeps the
	 * window in which the thread is neither one nor the other small). */
	if (cred_setgroups(cred->ngroups, g) != 0)
		goto fail;
	syscall(SYS_setfsgid, (gid_t)cred->gid);
	syscall(SYS_setfsuid, (uid_t)cred->uid);
	free(g);
	g = NULL;
	if (cred_fsuid() != cred->uid || cred_fsgid() != cred->gid) {
		errno = EPERM;
		goto fail;
	}
	return 0;
fail:
	free(g);
	*cause = xasprintf("cannot act as uid %u: %s", (unsigned)cred->uid,
	    strerror(errno));
	cred_leave(s);
	return -EPERM;
}

/* Gives back what cred_enter took; aborts if it cannot. */
void
cred_leave(struct cred_saved *s)
{
	if (!s->active)
		return;
	syscall(SYS_setfsuid, (uid_t)s->fsuid);
	syscall(SYS_setfsgid, (gid_t)s->fsgid);
	if (cred_setgroups(s->ngroups, s->groups) != 0 ||
	    cred_fsuid() != s->fsuid || cred_fsgid() != s->fsgid) {
		/* Going on would run other work with a user's rights. */
		fprintf(stderr, "merged: cannot restore the daemon's "
		    "credentials on a thread; stopping\n");
		abort();
	}
	free(s->groups);
	memset(s, 0, sizeof *s);
}

/* Would cred be allowed `want` (a mask of 4 = r, 2 = w, 1 = x) on st? */
/*
 * A copy of c that outlives it (a plan's, an extraction's: their files
 * are created after the caller's are gone): into *dst, its groups into a
 * new *groups, which the caller frees.  c NULL: nothing, *groups NULL.
 */
void
cred_copy(struct graph_cred *dst, uint32_t **groups,
    const struct graph_cred *c)
{
	*groups = NULL;
	if (c == NULL)
		return;
	*dst = *c;
	*groups = xcalloc(c->ngroups + 1, sizeof **groups);
	if (c->ngroups > 0)
		memcpy(*groups, c->groups, c->ngroups * sizeof **groups);
	dst->groups = *groups;
}

bool
graph_cred_allows(const struct graph_cred *cred, const struct stat *st,
    unsigned want)
{
	unsigned bits;
	size_t i;
	bool member = st->st_gid == cred->gid;

	if (cred->uid == 0 || cred_mode(cred) != CRED_EMULATE)
		return true;	/* the kernel checks, with cred's rights */
	for (i = 0; i < cred->ngroups && !member; i++)
		member = st->st_gid == cred->groups[i];
	if (st->st_uid == cred->uid)
		bits = (st->st_mode >> 6) & 7;
	else if (member)
		bits = (st->st_mode >> 3) & 7;
	else
		bits = st->st_mode & 7;
	return (bits & want) == want;
}
