/* SPDX-License-Identifier: MIT */
/*
 * fsroot.c: opening files only beneath a directory descriptor, with the
 * rights of the user a merge runs for.
 *
 * The daemon must never read or write with more rights than the user who
 * submitted the job (the confused deputy).  Its client opens the model
 * directories and the output's parent directory itself and passes the
 * descriptors; every file is then opened beneath one of them with openat2
 * and RESOLVE_BENEATH, so neither "..", an absolute path nor a symlink can
 * leave it (relative symlinks inside, like a Hugging Face snapshot's links
 * into blobs/, still work).  Whose rights apply is cred.c's business: a
 * root daemon calls these with the user's credentials taken on the thread,
 * and the kernel checks; a daemon running as another user checks the
 * user's rights here too, on the directory the client passed and on every
 * path component beneath it, because its own rights may be wider.
 * mergectl run uses the same code with descriptors it opened itself and
 * no credentials.  Inputs are opened O_NONBLOCK and must be regular
 * files, so that a FIFO planted as config.json cannot hang the thread
 * that opens it.  Safe on any thread.
 */
#define _GNU_SOURCE
#include <sys/stat.h>
#include <sys/syscall.h>

#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "graph-int.h"

static int
sys_openat2(int dirfd, const char *path, int flags, mode_t mode)
{
	struct open_how how;

	memset(&how, 0, sizeof how);
	how.flags = (uint64_t)(flags | O_CLOEXEC);
	how.mode = (flags & O_CREAT) ? mode : 0;
	how.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS;
	return (int)syscall(SYS_openat2, dirfd, path, &how, sizeof how);
}

/*
 * Checks cred's search rights on fd itself (a client may pass a
 * directory it opened O_PATH without being allowed into it) and on
 * every directory leading to path beneath it.
 */
static int
check_components(int fd, const char *path, const struct graph_cred *cred,
    char **cause)
{
	char *p = xstrdup(path), *slash;
	struct stat st;
	int dfd, rc = 0;

	if (fstat(fd, &st) == -1 || !graph_cred_allows(cred, &st, 1)) {
		*cause = xasprintf("%s: permission denied for uid %u (no "
		    "search permission on the directory it is in)", path,
		    (unsigned)cred->uid);
		free(p);
		return -EACCES;
	}
	for (slash = strchr(p, '/'); slash != NULL && rc == 0;
	    slash = strchr(slash + 1, '/')) {
		*slash = '\0';
		dfd = sys_openat2(fd, p, O_PATH, 0);
		if (dfd == -1 || fstat(dfd, &st) == -1) {
			rc = -errno;
			*cause = xasprintf("%s: %s", p, strerror(errno));
		} else if (!graph_cred_allows(cred, &st, 1)) {
			rc = -EACCES;
			*cause = xasprintf("%s: permission denied for uid %u",
			    p, (unsigned)cred->uid);
		}
		if (dfd != -1)
			close(dfd);
		*slash = '/';
	}
	free(p);
	return rc;
}

/* What st is, for a message: "a FIFO", "a directory", ... */
static const char *
file_kind(const struct stat *st)
{
	switch (st->st_mode & S_IFMT) {
	case S_IFIFO:
		return "a FIFO";
	case S_IFSOCK:
		return "a socket";
	case S_IFDIR:
		return "a directory";
	case S_IFCHR:
		return "a character device";
	case S_IFBLK:
		return "a block device";
	default:
		return "something else";
	}
}

/*
 * Inputs are opened O_NONBLOCK (fsroot_open): opening a FIFO or a
 * device would otherwise wait, on whatever thread asked, for as long as
 * the file's owner likes.  What was opened must then be a regular file
 * (or, with O_DIRECTORY, a directory: the kernel checked that), and
 * O_NONBLOCK is cleared again unless the caller asked for it.
 */
static int
open_check_regular(int fd, const char *path, int flags, char **cause)
{
	struct stat st;
	int fl, rc;

	if (fstat(fd, &st) == -1 || (fl = fcntl(fd, F_GETFL)) == -1)
		goto fail;
	if (!(flags & O_DIRECTORY) && !S_ISREG(st.st_mode)) {
		*cause = xasprintf("%s: is %s, not a regular file", path,
		    file_kind(&st));
		return -EINVAL;
	}
	if (!(flags & O_NONBLOCK) && fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) ==
	    -1)
		goto fail;
	return 0;
fail:
	rc = -errno;
	*cause = xasprintf("%s: %s", path, strerror(-rc));
	return rc;
}

int
fsroot_open(int dirfd, const char *path, int flags,
    const struct graph_cred *cred, char **cause)
{
	bool emulate = cred_mode(cred) == CRED_EMULATE;
	struct stat st;
	int fd, rc;

	if (emulate && (rc = check_components(dirfd, path, cred, cause)) != 0)
		return rc;
	if ((fd = sys_openat2(dirfd, path, (flags & O_PATH) ? flags : flags |
	    O_NONBLOCK, 0644)) == -1) {
		rc = -errno;
		if (rc == -EACCES && cred != NULL)
			/* The kernel said no to the user we act as. */
			*cause = xasprintf("%s: permission denied for uid %u",
			    path, (unsigned)cred->uid);
		else
			*cause = xasprintf("%s: %s%s", path, strerror(errno),
			    errno == EXDEV ? " (it leads outside the "
			    "directory the client passed)" : "");
		return rc;
	}
	if (!(flags & O_PATH) && (rc = open_check_regular(fd, path, flags,
	    cause)) != 0) {
		close(fd);
		return rc;
	}
	if (emulate) {
		unsigned want = (flags & O_ACCMODE) == O_RDONLY ? 4 :
		    (flags & O_ACCMODE) == O_WRONLY ? 2 : 6;
		if (fstat(fd, &st) == -1 || !graph_cred_allows(cred, &st,
		    S_ISDIR(st.st_mode) && !(flags & O_PATH) ? want | 1 :
		    (flags & O_PATH) ? 0 : want)) {
			close(fd);
			*cause = xasprintf("%s: permission denied for uid %u",
			    path, (unsigned)cred->uid);
			return -EACCES;
		}
	}
	return fd;
}

/* Reads a whole small file beneath dirfd. */
int
fsroot_read(int dirfd, const char *path, size_t max,
    const struct graph_cred *cred, char **out, size_t *len, char **cause)
{
	int fd, rc;

	*out = NULL;
	if ((fd = fsroot_open(dirfd, path, O_RDONLY, cred, cause)) < 0)
		return fd;
	if ((rc = graph_read_fd(fd, max, out, len)) != 0)
		*cause = xasprintf("%s: %s", path, rc == -EINVAL ? "not a "
		    "regular file" : rc == -EFBIG ? "file is too large" :
		    rc == -EIO ? "short read" : strerror(-rc));
	return rc;
}

/*
 * Is there something at path beneath dirfd?  Only "no such file" says no:
 * a name that exists but may not be opened (outside the directory, no
 * permission) says yes, so that opening it reports why.
 */
bool
fsroot_exists(int dirfd, const char *path,
    const struct graph_cred *cred)
{
	char *cause = NULL;
	int fd = fsroot_open(dirfd, path, O_PATH, cred, &cause);

	free(cause);
	if (fd < 0)
		return fd != -ENOENT && fd != -ENOTDIR;
	close(fd);
	return true;
}
