/* SPDX-License-Identifier: MIT */
/*
 * tmpdir.h: private temporary directories and small file helpers for the
 * unit tests, header only like tap.h.
 *
 * Each test program makes its own directory under $TMPDIR (or /tmp) with
 * mkdtemp, so tests never share paths and can run in parallel, and removes
 * it recursively at the end (symlinks are removed, never followed).  The
 * helpers abort the program with exit code 99 (a hard error for meson) when
 * the environment itself fails, so that a broken machine is not reported
 * as an engine bug.
 */
#ifndef TMPDIR_H
#define TMPDIR_H

#include <sys/stat.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static inline void
tmp_fail(const char *what, const char *path)
{
	fprintf(stderr, "test setup: %s %s: %s\n", what, path,
	    strerror(errno));
	exit(99);
}

/* A new directory "$TMPDIR/<name>.XXXXXX"; the caller frees the path. */
static inline char *
tmp_dir_create(const char *name)
{
	const char *base = getenv("TMPDIR");
	size_t len;
	char *path;

	if (base == NULL || *base == '\0')
		base = "/tmp";
	len = strlen(base) + strlen(name) + 16;
	if ((path = malloc(len)) == NULL)
		tmp_fail("malloc", name);
	snprintf(path, len, "%s/%s.XXXXXX", base, name);
	if (mkdtemp(path) == NULL)
		tmp_fail("mkdtemp", path);
	return path;
}

/* Removes path and everything under it; never follows symlinks. */
static inline void
tmp_remove(const char *path)
{
	struct dirent *de;
	struct stat st;
	size_t len;
	char *sub;
	DIR *d;

	if (lstat(path, &st) == -1)
		return;
	if (!S_ISDIR(st.st_mode)) {
		unlink(path);
		return;
	}
	if ((d = opendir(path)) != NULL) {
		while ((de = readdir(d)) != NULL) {
			if (strcmp(de->d_name, ".") == 0 ||
			    strcmp(de->d_name, "..") == 0)
				continue;
			len = strlen(path) + strlen(de->d_name) + 2;
			if ((sub = malloc(len)) == NULL)
				tmp_fail("malloc", path);
			snprintf(sub, len, "%s/%s", path, de->d_name);
			tmp_remove(sub);
			free(sub);
		}
		closedir(d);
	}
	rmdir(path);
}

/* Writes len bytes to path (created or truncated). */
static inline void
tmp_write(const char *path, const void *data, size_t len)
{
	const char *p = data;
	ssize_t n;
	int fd;

	if ((fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644)) == -1)
		tmp_fail("open", path);
	while (len > 0) {
		if ((n = write(fd, p, len)) <= 0) {
			if (n == -1 && errno == EINTR)
				continue;
			tmp_fail("write", path);
		}
		p += n;
		len -= (size_t)n;
	}
	if (close(fd) == -1)
		tmp_fail("close", path);
}

static inline void
tmp_mkdir(const char *path)
{
	if (mkdir(path, 0755) == -1)
		tmp_fail("mkdir", path);
}

static inline void
tmp_symlink(const char *target, const char *path)
{
	if (symlink(target, path) == -1)
		tmp_fail("symlink", path);
}

#endif /* TMPDIR_H */
