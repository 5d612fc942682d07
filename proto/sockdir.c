/* SPDX-License-Identifier: MIT */
/*
 * sockdir.c: where a personal daemon listens, and whether that place can
 * be trusted.  merged checks it before it binds, mergectl before it
 * connects or starts a daemon.
 *
 * The personal socket is $XDG_RUNTIME_DIR/merged/merged.sock, else
 * /tmp/merged-UID/merged.sock.  /tmp is shared: any user may create
 * /tmp/merged-1001 before user 1001 does, listen in it, and receive what
 * that user's mergectl sends (configs, and the descriptors of model
 * directories).  So, as tmux does for /tmp/tmux-UID, the directory is
 * created with mode 0700 and used only when it is a directory, not a
 * symbolic link, that belongs to this user and that nobody else may
 * enter.  mergectl also checks who answers (client/trust.c), which
 * catches what a directory check cannot see.  No state; any thread.
 */
#define _GNU_SOURCE
#include <sys/stat.h>

#include <errno.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "proto.h"

static char *sockdir_printf(const char *, ...)
    __attribute__((format(printf, 1, 2)));
static void sockdir_mkparents(const char *);

/* An allocated string; aborts on out of memory, as xasprintf does. */
static char *
sockdir_printf(const char *fmt, ...)
{
	va_list ap;
	char *s;
	int n;

	va_start(ap, fmt);
	n = vasprintf(&s, fmt, ap);
	va_end(ap);
	if (n < 0) {
		fprintf(stderr, "fatal: sockdir: out of memory\n");
		abort();
	}
	return s;
}

char *
sockdir_personal_path(void)
{
	const char *rt = getenv("XDG_RUNTIME_DIR");

	if (rt != NULL && *rt != '\0')
		return sockdir_printf("%s/merged/merged.sock", rt);
	return sockdir_printf("/tmp/merged-%u/merged.sock", (unsigned)getuid());
}

char *
sockdir_user_name(uint32_t uid)
{
	struct passwd *pw = getpwuid((uid_t)uid);

	if (uid == 0)
		return sockdir_printf("root");
	if (pw == NULL)
		return sockdir_printf("uid %u", (unsigned)uid);
	return sockdir_printf("uid %u (%s)", (unsigned)uid, pw->pw_name);
}

/* mkdir -p of dir's parents, mode 0700: a runtime directory nobody made. */
static void
sockdir_mkparents(const char *dir)
{
	char *p = sockdir_printf("%s", dir), *s;

	for (s = p + 1; *s != '\0'; s++) {
		if (*s != '/')
			continue;
		*s = '\0';
		mkdir(p, 0700);
		*s = '/';
	}
	free(p);
}

int
sockdir_check(const char *dir, bool create, char **cause)
{
	uid_t me = geteuid();
	struct stat st;
	char *owner, *mine;
	const char *what, *fix;
	int rc;

	*cause = NULL;
	if (create) {
		sockdir_mkparents(dir);
		if (mkdir(dir, 0700) == -1 && errno != EEXIST) {
			rc = -errno;
			*cause = sockdir_printf("cannot create the socket "
			    "directory %s: %s", dir, strerror(errno));
			return rc;
		}
	}
	if (lstat(dir, &st) == -1) {
		rc = -errno;
		if (rc != -ENOENT || create)
			*cause = sockdir_printf("cannot use the socket "
			    "directory %s: %s", dir, strerror(errno));
		return rc;
	}
	if (S_ISDIR(st.st_mode) && st.st_uid == me && (st.st_mode & 077) == 0)
		return 0;
	if (S_ISLNK(st.st_mode)) {
		what = "a symbolic link, ";
		rc = -ELOOP;
	} else if (!S_ISDIR(st.st_mode)) {
		what = "not a directory, ";
		rc = -ENOTDIR;
	} else {
		what = "";
		rc = -EACCES;
	}
	if (st.st_uid != me)
		fix = "have it removed (by its owner or root), or set "
		    "XDG_RUNTIME_DIR to a directory of your own";
	else if (rc != -EACCES)
		fix = "remove it, or set XDG_RUNTIME_DIR to a directory of "
		    "your own";
	else
		fix = "make it private with chmod 700, or remove it";
	owner = sockdir_user_name((uint32_t)st.st_uid);
	mine = sockdir_user_name((uint32_t)me);
	*cause = sockdir_printf("the socket directory %s (%sowner %s, mode "
	    "%04o) must be a directory of %s with mode 0700, or another user "
	    "could answer in the daemon's place; %s", dir, what, owner,
	    (unsigned)(st.st_mode & 07777), mine, fix);
	free(owner);
	free(mine);
	return rc;
}
