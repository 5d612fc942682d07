/* SPDX-License-Identifier: MIT */
/*
 * trust.c: whom mergectl talks to.
 *
 * What mergectl sends a daemon (a config, the descriptors of the model
 * directories and of the output's) gives the daemon the user's rights
 * over them, so it is sent only to a daemon that may have them.  Two
 * checks, both before the first byte is sent:
 *
 * - the personal socket's directory must be the user's own, mode 0700
 *   (proto/sockdir.c; merged checks it too, and creates it so);
 * - the process listening on the socket must be, by the kernel's account
 *   (SO_PEERCRED, the credentials of whoever called listen()): for the
 *   personal socket, the user; for a socket named by --socket or
 *   $MERGED_SOCKET, the user, root (systemd's socket activation listens
 *   as root) or the team's user, "merged" unless $MERGED_USER says
 *   otherwise.
 *
 * A refusal is CLI_EXIT_UNTRUSTED, with a message that says who answered
 * and who should have.
 */
#define _GNU_SOURCE
#include <sys/socket.h>

#include <errno.h>
#include <libgen.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "xmalloc.h"

int
cli_trust_dir(const char *path, bool create)
{
	char *p = xstrdup(path), *cause = NULL;
	int rc;

	rc = sockdir_check(dirname(p), create, &cause);
	free(p);
	if (rc == 0 || (rc == -ENOENT && cause == NULL))
		return 0;	/* missing: nothing answers there */
	cli_error(CLI_E_UNTRUSTED, "refusing to connect: %s", cause);
	free(cause);
	return CLI_EXIT_UNTRUSTED;
}

/*
 * The team's user: $MERGED_USER (a name or a uid), else "merged".  False
 * when there is no such user; *name is what was looked up.
 */
static bool
cli_team_uid(uid_t *uid, const char **name)
{
	const char *env = getenv("MERGED_USER");
	struct passwd *pw;
	char *end;
	unsigned long n;

	*name = env != NULL && *env != '\0' ? env : "merged";
	if ((pw = getpwnam(*name)) != NULL) {
		*uid = pw->pw_uid;
		return true;
	}
	errno = 0;
	n = strtoul(*name, &end, 10);
	if (*end == '\0' && end != *name && errno == 0 && n < (uid_t)-1) {
		*uid = (uid_t)n;
		return true;
	}
	return false;
}

int
cli_trust_peer(int fd, const char *path, bool personal)
{
	struct ucred uc;
	socklen_t len = sizeof uc;
	uid_t me = geteuid(), team = 0;
	const char *tname;
	char *who, *mine, *want;
	bool have_team;

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &uc, &len) == -1) {
		cli_error(CLI_E_UNTRUSTED, "cannot tell who answers on %s "
		    "(SO_PEERCRED: %s); refusing to send it anything", path,
		    strerror(errno));
		return CLI_EXIT_UNTRUSTED;
	}
	have_team = cli_team_uid(&team, &tname);
	if (uc.uid == me || (!personal && (uc.uid == 0 || (have_team &&
	    uc.uid == team))))
		return 0;
	who = sockdir_user_name((uint32_t)uc.uid);
	mine = sockdir_user_name((uint32_t)me);
	if (personal)
		want = xasprintf("by %s, whose personal daemon it is", mine);
	else if (have_team)
		want = xasprintf("by root%s%s or the team's user %s (uid %u; "
		    "set MERGED_USER if the team's daemon runs as another "
		    "user)", me != 0 ? ", " : "", me != 0 ? mine : "", tname,
		    (unsigned)team);
	else
		want = xasprintf("by root%s%s or the team's user %s (no such "
		    "user; set MERGED_USER to the user the team's daemon runs "
		    "as)", me != 0 ? ", " : "", me != 0 ? mine : "", tname);
	cli_error(CLI_E_UNTRUSTED, "%s is answered by %s, not %s; refusing "
	    "to send it anything", path, who, want);
	free(who);
	free(mine);
	free(want);
	return CLI_EXIT_UNTRUSTED;
}
