/* SPDX-License-Identifier: MIT */
/*
 * reader.c: decode a chunk of one input tensor into float32, and copy a
 * chunk of bytes unchanged.
 *
 * A chunk is n consecutive elements of the output tensor, starting at e0.
 * Usually the input has the output's shape and the chunk is one run of the
 * file; a rectified embedding is a top-left block of a larger stored
 * matrix, so the chunk is read row by row with the stored row stride.
 *
 * Data is read with pread() into a small per-thread bounce buffer that
 * stays in the L2 cache and decoded from there (inputs are not mapped):
 * faulting mapped pages in (and dropping them again to keep RSS within the
 * budget) cost more than the copy, on two threads mostly in page-table
 * locks and TLB shootdowns; and a file truncated under us gives a short
 * read and a clear error instead of SIGBUS.  Byte copies go through
 * copy_file_range(), which never brings the data into user space.  With a
 * compute dtype ("dtype:" in the config) values are rounded to it, as
 * mergekit converts inputs on load.  Runs on pool threads; reads only the
 * immutable plan.
 */
#define _GNU_SOURCE
#include <sys/types.h>

#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "graph-int.h"

/* Bounce buffer per pool thread: big enough for few syscalls, small
 * enough to stay in L2 while it is decoded. */
#define READ_BOUNCE (256u << 10)

static _Thread_local uint8_t bounce[READ_BOUNCE];

static int
read_exact(const struct safetensors_file *f, void *buf, size_t len,
    uint64_t off, char **cause)
{
	uint8_t *p = buf;
	ssize_t n;

	while (len > 0) {
		n = pread(f->fd, p, len, (off_t)off);
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0) {
			int rc = n == 0 ? -EIO : -errno;
			*cause = xasprintf("%s: %s", f->path, n == 0 ?
			    "the file is shorter than its header says (was it "
			    "truncated or replaced during the merge?)" :
			    strerror(errno));
			return rc;
		}
		p += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

/* Decodes n elements stored at byte offset off. */
static int
read_run(const struct safetensors_file *f, enum graph_dtype dt, uint64_t off,
    size_t n, float *out, char **cause)
{
	size_t es = graph_dtype_size(dt), per = READ_BOUNCE / es, k;
	int rc;

	while (n > 0) {
		k = n < per ? n : per;
		if ((rc = read_exact(f, bounce, k * es, off, cause)) != 0)
			return rc;
		graph_decode_f32(dt, bounce, out, k);
		off += k * es;
		out += k;
		n -= k;
	}
	return 0;
}

int
reader_read_chunk(const struct graph_plan *p, const struct plan_tensor *t,
    const struct plan_input *in, uint64_t e0, size_t n, float *out,
    char **cause)
{
	const struct model *m = p->models[in->model].m;
	const struct safetensors_file *f = m->files[in->mt->file];
	const struct safetensors_tensor *st = in->mt->t;
	size_t es = graph_dtype_size(st->dtype), done = 0, run;
	uint64_t scols, r, c;
	int rc;

	if (!in->rectified) {
		if ((rc = read_run(f, st->dtype, st->begin + e0 * es, n, out,
		    cause)) != 0)
			return rc;
	} else {
		scols = (uint64_t)st->shape[1];
		while (done < n) {
			r = (e0 + done) / (uint64_t)in->cols;
			c = (e0 + done) % (uint64_t)in->cols;
			run = (size_t)((uint64_t)in->cols - c);
			if (run > n - done)
				run = n - done;
			if ((rc = read_run(f, st->dtype, st->begin +
			    (r * scols + c) * es, run, out + done, cause)) != 0)
				return rc;
			done += run;
		}
	}
	if (t->compute_dtype != GRAPH_DT_NONE && t->compute_dtype != st->dtype)
		graph_dtype_round(t->compute_dtype, out, n);
	return 0;
}

/* Copies n elements' bytes to fd at off, unchanged. */
int
reader_copy_chunk(const struct graph_plan *p, const struct plan_input *in,
    uint64_t e0, size_t n, int fd, uint64_t off, char **cause)
{
	const struct safetensors_file *f = p->models[in->model].m->files[
	    in->mt->file];
	const struct safetensors_tensor *st = in->mt->t;
	size_t es = graph_dtype_size(st->dtype), len = n * es, k;
	loff_t src = (loff_t)(st->begin + e0 * es), dst = (loff_t)off;
	ssize_t w;
	int rc;

	while (len > 0) {
		w = copy_file_range(f->fd, &src, fd, &dst, len, 0);
		if (w == -1 && errno == EINTR)
			continue;
		if (w > 0) {
			len -= (size_t)w;
			continue;
		}
		if (w == 0) {
			*cause = xasprintf("%s: the file is shorter than its "
			    "header says (was it truncated or replaced during "
			    "the merge?)", f->path);
			return -EIO;
		}
		if (errno != EXDEV && errno != EINVAL && errno != ENOSYS &&
		    errno != EOPNOTSUPP)
			break;
		/* No kernel copy here: bounce through user space. */
		k = len < READ_BOUNCE ? len : READ_BOUNCE;
		if ((rc = read_exact(f, bounce, k, (uint64_t)src, cause)) != 0)
			return rc;
		if ((rc = writer_pwrite(fd, bounce, k, (uint64_t)dst, cause)) !=
		    0)
			return rc;
		src += (loff_t)k;
		dst += (loff_t)k;
		len -= k;
	}
	if (len > 0) {
		rc = -errno;
		*cause = xasprintf("copying from %s: %s%s", f->path,
		    strerror(errno), errno == ENOSPC ? " (the disk is full)" :
		    "");
		return rc;
	}
	return 0;
}
