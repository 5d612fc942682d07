/* SPDX-License-Identifier: MIT */
/*
 * verify.c: is a finished output the one a plan writes?  For a job that
 * ran elsewhere (a Slurm node, merged --backend slurm): a job reported
 * complete is done only when its output checks out.
 *
 * The plan fixes every shard's name, size and header bytes (which carry
 * each tensor's name, dtype, shape and offsets), and the index when
 * there are several shards: each must be there, a regular file, of the
 * planned size, beginning with the planned header.  Nothing is followed
 * through a link, and a FIFO put in place does not block the reader.
 */
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "graph-int.h"

static int
verify_shard(int dfd, const char *out, const struct plan_shard *sh,
    char **cause)
{
	struct stat st;
	uint8_t *buf = NULL;
	ssize_t n;
	int fd, rc = 0;

	fd = openat(dfd, sh->name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK |
	    O_CLOEXEC);
	if (fd == -1) {
		*cause = xasprintf("%s/%s: %s", out, sh->name,
		    strerror(errno));
		return -errno;
	}
	if (fstat(fd, &st) == -1 || !S_ISREG(st.st_mode) ||
	    (uint64_t)st.st_size != sh->size) {
		*cause = xasprintf("%s/%s is not the planned file of %llu "
		    "bytes", out, sh->name, (unsigned long long)sh->size);
		rc = -EIO;
		goto out;
	}
	buf = xmalloc(sh->header_len + 1);
	n = pread(fd, buf, sh->header_len, 0);
	if (n != (ssize_t)sh->header_len || memcmp(buf, sh->header,
	    sh->header_len) != 0) {
		*cause = xasprintf("%s/%s: its header is not the planned one "
		    "(tensors, dtypes, shapes or offsets differ)", out,
		    sh->name);
		rc = -EIO;
	}
out:
	free(buf);
	close(fd);
	return rc;
}

int
graph_plan_verify(const struct graph_plan *p, int dirfd, const char *name,
    const char *out, char **cause)
{
	struct stat st;
	size_t i;
	int dfd, rc = 0;

	dfd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
	    O_CLOEXEC);
	if (dfd == -1) {
		*cause = xasprintf("%s: %s", out, strerror(errno));
		return -errno;
	}
	for (i = 0; rc == 0 && i < p->nshards; i++)
		rc = verify_shard(dfd, out, &p->shards[i], cause);
	if (rc == 0 && p->nshards > 1 && (fstatat(dfd,
	    "model.safetensors.index.json", &st, AT_SYMLINK_NOFOLLOW) == -1 ||
	    !S_ISREG(st.st_mode))) {
		*cause = xasprintf("%s has no model.safetensors.index.json",
		    out);
		rc = -EIO;
	}
	if (rc == 0 && (fstatat(dfd, "config.json", &st,
	    AT_SYMLINK_NOFOLLOW) == -1 || !S_ISREG(st.st_mode))) {
		*cause = xasprintf("%s has no config.json", out);
		rc = -EIO;
	}
	close(dfd);
	return rc;
}
