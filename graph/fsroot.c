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
 * directory the path leads through, symbolic links followed by hand
 * (check_components), because its own rights may be wider.
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

#ifdef __SANITIZE_THREAD__
/* TSan would not see the raw syscall's descriptor made (tsan-fd.c). */
#define tsan_adopt(fd) tsan_fd_adopt((fd), O_CLOEXEC)
#else
#define tsan_adopt(fd) (fd)
#endif

static int
sys_openat2_how(int dirfd, const char *path, int flags, uint64_t resolve)
{
	struct open_how how;

	memset(&how, 0, sizeof how);
	how.flags = (uint64_t)(flags | O_CLOEXEC);
	how.mode = (flags & O_CREAT) ? 0644 : 0;
	how.resolve = resolve;
	return tsan_adopt((int)syscall(SYS_openat2, dirfd, path, &how,
	    sizeof how));
}

static int
sys_openat2(int dirfd, const char *path, int flags)
{
	return sys_openat2_how(dirfd, path, flags, RESOLVE_BENEATH |
	    RESOLVE_NO_MAGICLINKS);
}

/* Drops the last component of a path being walked. */
static void
path_pop(struct xbuf *b)
{
	while (b->len > 0 && b->data[b->len - 1] != '/')
		b->len--;
	if (b->len > 0)
		b->len--;
	b->data[b->len] = '\0';
}

/* Symbolic links followed in one path, at most (the kernel's limit). */
#define FSROOT_MAX_LINKS 40

/*
 * A daemon running as another user (emulate mode) cannot let the kernel
 * judge the user's rights, so it resolves path itself, beneath fd: one
 * component at a time, following symbolic links by hand (a relative
 * target is spliced into what is left to walk; an absolute one, or ".."
 * above fd, leads outside and is refused), and checking cred's search
 * right on fd and on every directory the walk enters, links' targets
 * included.  Checking only the components as written let a link lead
 * through a directory the user may not search (the daemon's own state
 * directory).  *resolved is the same file's path with no link in it,
 * which the caller opens with RESOLVE_NO_SYMLINKS: a directory swapped
 * for a link after this walk then fails instead of being followed.
 */
static int
check_components(int fd, const char *path, const struct graph_cred *cred,
    char **resolved, char **cause)
{
	struct xbuf done = { 0 }, left = { 0 };
	char target[4096], *comp, *rest;
	struct stat st;
	size_t n, links = 0, cut;
	ssize_t tl;
	int dfd, rc = 0;

	*resolved = NULL;
	if (fstat(fd, &st) == -1 || !graph_cred_allows(cred, &st, 1)) {
		*cause = xasprintf("%s: permission denied for uid %u (no "
		    "search permission on the directory it is in)", path,
		    (unsigned)cred->uid);
		return -EACCES;
	}
	xbuf_printf(&left, "%s", path);
	while (left.len > 0 && rc == 0) {
		/* The next component off the front of left. */
		rest = memchr(left.data, '/', left.len);
		n = rest != NULL ? (size_t)(rest - left.data) : left.len;
		comp = xstrndup(left.data, n);
		cut = rest != NULL ? n + 1 : n;
		memmove(left.data, left.data + cut, left.len - cut);
		left.len -= cut;
		left.data[left.len] = '\0';
		if (*comp == '\0' || strcmp(comp, ".") == 0) {
			free(comp);
			continue;
		}
		if (strcmp(comp, "..") == 0) {
			free(comp);
			if (done.len == 0) {
				rc = -EXDEV;
				break;
			}
			path_pop(&done);
			continue;
		}
		if (done.len > 0)
			xbuf_add(&done, "/", 1);
		xbuf_printf(&done, "%s", comp);
		free(comp);
		dfd = sys_openat2_how(fd, done.data, O_PATH | O_NOFOLLOW,
		    RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
		    RESOLVE_NO_MAGICLINKS);
		if (dfd == -1 && errno == ENOENT && left.len == 0)
			break;	/* a file to create: the open says more */
		if (dfd == -1 || fstat(dfd, &st) == -1) {
			rc = -errno;
			if (dfd != -1)
				close(dfd);
			break;
		}
		if (S_ISLNK(st.st_mode)) {
			tl = readlinkat(dfd, "", target, sizeof target - 1);
			close(dfd);
			if (tl <= 0 || ++links > FSROOT_MAX_LINKS) {
				rc = tl <= 0 ? -EINVAL : -ELOOP;
				break;
			}
			target[tl] = '\0';
			if (target[0] == '/') {
				rc = -EXDEV;
				break;
			}
			/* The link's name leaves done; its target goes
			 * before what is left. */
			path_pop(&done);
			rest = xasprintf("%s%s%.*s", target, left.len ? "/" : "",
			    (int)left.len, left.data ? left.data : "");
			left.len = 0;
			xbuf_printf(&left, "%s", rest);
			free(rest);
			continue;
		}
		if (S_ISDIR(st.st_mode) && left.len > 0 &&
		    !graph_cred_allows(cred, &st, 1))
			rc = -EACCES;
		close(dfd);
	}
	if (rc == 0) {
		*resolved = done.len > 0 ? xbuf_take(&done) : xstrdup(".");
	} else if (rc == -EACCES) {
		*cause = xasprintf("%s: permission denied for uid %u", path,
		    (unsigned)cred->uid);
	} else {
		*cause = xasprintf("%s: %s%s", path, strerror(-rc), rc == -EXDEV ?
		    " (it leads outside the directory the client passed)" :
		    "");
	}
	xbuf_free(&done);
	xbuf_free(&left);
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
	char *resolved = NULL;
	struct stat st;
	int fd, rc;

	if (emulate) {
		if ((rc = check_components(dirfd, path, cred, &resolved,
		    cause)) != 0)
			return rc;
		fd = sys_openat2_how(dirfd, resolved, (flags & O_PATH) ? flags :
		    flags | O_NONBLOCK, RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
		    RESOLVE_NO_MAGICLINKS);
		free(resolved);
	} else {
		fd = sys_openat2(dirfd, path, (flags & O_PATH) ? flags : flags |
		    O_NONBLOCK);
	}
	if (fd == -1) {
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
/* The status of what is at path beneath dirfd: 0, or a negative errno. */
int
fsroot_stat(int dirfd, const char *path, const struct graph_cred *cred,
    struct stat *st)
{
	char *cause = NULL;
	int fd = fsroot_open(dirfd, path, O_PATH, cred, &cause), rc = 0;

	free(cause);
	if (fd < 0)
		return fd;
	if (fstat(fd, st) != 0)
		rc = -errno;
	close(fd);
	return rc;
}

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
