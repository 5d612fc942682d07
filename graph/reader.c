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
 * read and a clear error instead of SIGBUS.  A weight that a LoRA adapter
 * changes is read through lora.c, which adds the adapter's product.  Byte
 * copies go through copy_file_range(), which never brings the data into
 * user space.  With a compute dtype ("dtype:" in the config) values are
 * rounded to it, as mergekit converts inputs on load.  Runs on pool
 * threads; reads only the immutable plan.
 */
#define _GNU_SOURCE
#include <sys/types.h>

#include <errno.h>
#include <stdlib.h>
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
int
reader_read_run(const struct safetensors_file *f, enum graph_dtype dt,
    uint64_t off, size_t n, float *out, char **cause)
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

/*
 * Elements [idx, idx + n) of model m's tensor mt as stored (flattened),
 * with its adapter's LoRA product added when it has one (lora.c), or
 * computed when it is a fused stage's (fuse.c).
 */
int
reader_read_tensor(const struct model *m, const struct model_tensor *mt,
    uint64_t idx, size_t n, float *out, char **cause)
{
	const struct safetensors_tensor *st = mt->t;

	if (mt->fused != NULL)
		return fuse_read(m->fused_from, mt->fused, idx, n, out, cause);
	if (mt->delta != NULL)
		return lora_read(m, mt->delta, idx, n, out, cause);
	return reader_read_run(m->files[mt->file], st->dtype, st->begin + idx *
	    graph_dtype_size(st->dtype), n, out, cause);
}

/*
 * Elements [idx, idx + n) of mt as reader_read_tensor reads them, but
 * undecoded where they are stored plainly in at most four bytes each:
 * their bytes, *dt their dtype (read straight into out, no bounce).  A
 * tensor computed as it is read, or stored wider, is decoded to float32
 * (*dt GRAPH_DT_F32).  out has room for n float32 either way.  For a
 * reader that widens further itself (inspect's float64): one pass over
 * the bytes instead of two.
 */
int
reader_read_packed(const struct model *m, const struct model_tensor *mt,
    uint64_t idx, size_t n, void *out, enum graph_dtype *dt, char **cause)
{
	const struct safetensors_tensor *st = mt->t;
	size_t es = graph_dtype_size(st->dtype);

	if (mt->fused != NULL || mt->delta != NULL || es > sizeof(float)) {
		*dt = GRAPH_DT_F32;
		return reader_read_tensor(m, mt, idx, n, out, cause);
	}
	*dt = st->dtype;
	return read_exact(m->files[mt->file], out, n * es, st->begin + idx *
	    es, cause);
}

/*
 * A tokenizer merge's matrices (plan-tokenizer.c) are read by rows of the
 * output vocabulary: a model's own row (runs of consecutive rows in one
 * read), or the token's default: the rows its refs name, averaged in
 * float64, or zeros; padding rows are the mean of the real ones, which
 * takes one pass over them, once per source and tensor, the first time a
 * chunk reaches the padding (struct vperm_mean keeps it).  Reads go
 * through the same bounce buffer; the scratch is one row and its sums.
 */
struct vread {
	const struct graph_plan *p;
	const struct plan_vocab *v;
	const struct plan_vperm *vp;
	size_t model;		/* whose rows */
	const struct model_tensor *mt;	/* and where they are stored */
	size_t cols;
	float *row;		/* scratch: one row */
	double *acc;		/* scratch: its sums */
	const float *mean;	/* the padding row, once computed */
};

static int
vread_stored(const struct vread *vr, const struct model_tensor *mt,
    int64_t row, size_t nrows, float *out, char **cause)
{
	return reader_read_tensor(vr->p->models[vr->model].m, mt,
	    (uint64_t)row * vr->cols, nrows * vr->cols, out, cause);
}

/* Token r's default row, into out. */
static int
vread_default(struct vread *vr, int64_t r, float *out, char **cause)
{
	const struct plan_vperm *vp = vr->vp;
	const struct vperm_ref *ref = vp->def + vp->def_off[r];
	size_t nref = vp->def_off[r + 1] - vp->def_off[r], k, c;
	const struct vperm_src *src;
	int rc;

	if (nref == 0) {
		memset(out, 0, vr->cols * sizeof *out);
		return 0;
	}
	memset(vr->acc, 0, vr->cols * sizeof *vr->acc);
	for (k = 0; k < nref; k++) {
		src = &vp->src[ref[k].src];
		if ((rc = reader_read_tensor(vr->p->models[src->model].m, src->mt,
		    (uint64_t)ref[k].row * vr->cols, vr->cols, vr->row,
		    cause)) != 0)
			return rc;
		for (c = 0; c < vr->cols; c++)
			vr->acc[c] += vr->row[c];
	}
	for (c = 0; c < vr->cols; c++)
		out[c] = (float)(vr->acc[c] / (double)nref);
	return 0;
}

/* Rows [r, r + k) of the permuted matrix, all below the padding; *k is
 * cut to what one step does (a run of own rows, or one default row). */
static int
vread_rows(struct vread *vr, int64_t r, size_t *k, float *out, char **cause)
{
	const int32_t *perm = vr->v->perm[vr->model];
	size_t run = 1;

	if (!plan_vperm_own(vr->v, vr->model, r)) {
		*k = 1;
		return vread_default(vr, r, out, cause);
	}
	while (run < *k && plan_vperm_own(vr->v, vr->model, r + (int64_t)run) &&
	    perm[r + (int64_t)run] == perm[r] + (int32_t)run)
		run++;
	*k = run;
	return vread_stored(vr, vr->mt, perm[r], run, out, cause);
}

/* Rows per read of the padding row's pass. */
#define VREAD_ROWS 64

/*
 * The padding row: the mean of the real rows, in float64.  Once per
 * source and tensor, whichever reader first needs it; the others wait.
 */
static int
vread_mean(struct vread *vr, char **cause)
{
	struct vperm_mean *vm = NULL;
	double *sum;
	float *rows;
	int64_t r;
	size_t k, c, i, s;
	int rc = 0;

	for (s = 0; s < vr->vp->nsrc; s++)
		if (vr->vp->src[s].model == vr->model)
			vm = &vr->vp->mean[s];
	pthread_mutex_lock(&vm->lock);
	if (vm->done)
		goto out;
	sum = xcalloc(vr->cols, sizeof *sum);
	rows = xreallocarray(NULL, vr->cols, VREAD_ROWS * sizeof *rows);
	for (r = 0; r < vr->v->n && rc == 0; r += (int64_t)k) {
		k = (size_t)(vr->v->n - r) < VREAD_ROWS ?
		    (size_t)(vr->v->n - r) : VREAD_ROWS;
		if ((rc = vread_rows(vr, r, &k, rows, cause)) != 0)
			break;
		for (i = 0; i < k; i++)
			for (c = 0; c < vr->cols; c++)
				sum[c] += rows[i * vr->cols + c];
	}
	if (rc == 0) {
		vm->row = xreallocarray(NULL, vr->cols, sizeof *vm->row);
		for (c = 0; c < vr->cols; c++)
			vm->row[c] = (float)(sum[c] / (double)vr->v->n);
		vm->done = true;
	}
	free(sum);
	free(rows);
out:
	vr->mean = vm->row;
	pthread_mutex_unlock(&vm->lock);
	return rc;
}

/* Whole row r into out. */
static int
vread_row(struct vread *vr, int64_t r, float *out, char **cause)
{
	size_t k = 1;
	int rc;

	if (r < vr->v->n)
		return vread_rows(vr, r, &k, out, cause);
	if (vr->mean == NULL && (rc = vread_mean(vr, cause)) != 0)
		return rc;
	memcpy(out, vr->mean, vr->cols * sizeof *out);
	return 0;
}

static int
reader_read_vocab(const struct graph_plan *p, const struct plan_tensor *t,
    const struct plan_input *in, uint64_t e0, size_t n, float *out,
    char **cause)
{
	struct vread vr = { .p = p, .v = p->vocab, .vp = t->vperm,
		.model = in->model, .mt = in->mt,
		.cols = (size_t)t->vperm->cols };
	uint64_t r, c;
	size_t done = 0, k, take;
	float *one;
	int rc = 0;

	vr.row = xreallocarray(NULL, vr.cols, sizeof *vr.row);
	vr.acc = xreallocarray(NULL, vr.cols, sizeof *vr.acc);
	one = xreallocarray(NULL, vr.cols, sizeof *one);
	while (done < n && rc == 0) {
		r = (e0 + done) / vr.cols;
		c = (e0 + done) % vr.cols;
		if (c == 0 && n - done >= vr.cols && (int64_t)r < vr.v->n) {
			/* Whole rows straight into out. */
			k = (n - done) / vr.cols;
			if ((int64_t)(r + k) > vr.v->n)
				k = (size_t)(vr.v->n - (int64_t)r);
			rc = vread_rows(&vr, (int64_t)r, &k, out + done, cause);
			done += k * vr.cols;
			continue;
		}
		if ((rc = vread_row(&vr, (int64_t)r, one, cause)) != 0)
			break;
		take = vr.cols - (size_t)c;
		if (take > n - done)
			take = n - done;
		memcpy(out + done, one + c, take * sizeof *out);
		done += take;
	}
	free(one);
	free(vr.row);
	free(vr.acc);
	return rc;
}

int
reader_read_chunk(const struct graph_plan *p, const struct plan_tensor *t,
    const struct plan_input *in, uint64_t e0, size_t n, float *out,
    char **cause)
{
	const struct model *m = p->models[in->model].m;
	const struct safetensors_tensor *st = in->mt->t;
	size_t done = 0, run;
	uint64_t scols, r, c;
	int rc;

	if (t->vperm != NULL) {
		if ((rc = reader_read_vocab(p, t, in, e0, n, out, cause)) != 0)
			return rc;
	} else if (!in->rectified) {
		if ((rc = reader_read_tensor(m, in->mt, e0, n, out, cause)) != 0)
			return rc;
	} else {
		scols = (uint64_t)st->shape[1];
		while (done < n) {
			r = (e0 + done) / (uint64_t)in->cols;
			c = (e0 + done) % (uint64_t)in->cols;
			run = (size_t)((uint64_t)in->cols - c);
			if (run > n - done)
				run = n - done;
			if ((rc = reader_read_tensor(m, in->mt, r * scols + c, run,
			    out + done, cause)) != 0)
				return rc;
			done += run;
		}
	}
	if (t->compute_dtype != GRAPH_DT_NONE && t->compute_dtype != st->dtype)
		graph_dtype_round(t->compute_dtype, out, n);
	return 0;
}

/*
 * A copy to a shard with an O_DIRECT descriptor goes through buf (cap
 * bytes, page-aligned; writer_pwrite_direct), the bytes placed at their
 * file alignment, in steps that end on page boundaries: only the copy's
 * first and last pages go through the page cache.
 */
static int
copy_direct(const struct safetensors_file *f, uint64_t src, size_t len,
    int fd, int direct, uint8_t *buf, size_t cap, uint64_t dst,
    char **cause)
{
	size_t at, k;
	int rc;

	while (len > 0) {
		at = (size_t)(dst % GRAPH_WRITE_ALIGN);
		k = cap - at < len ? cap - at : len;
		if ((rc = read_exact(f, buf + at, k, src, cause)) != 0 ||
		    (rc = writer_pwrite_direct(fd, direct, buf + at, k, dst,
		    cause)) != 0)
			return rc;
		src += k;
		dst += k;
		len -= k;
	}
	return 0;
}

/* Copies n elements' bytes to fd at off, unchanged; direct: fd's
 * O_DIRECT descriptor, or -1; buf: cap bytes, page-aligned, for a copy
 * written direct (more than a page), or NULL. */
int
reader_copy_chunk(const struct graph_plan *p, const struct plan_input *in,
    uint64_t e0, size_t n, int fd, int direct, void *buf, size_t cap,
    uint64_t off, char **cause)
{
	const struct safetensors_file *f = p->models[in->model].m->files[
	    in->mt->file];
	const struct safetensors_tensor *st = in->mt->t;
	size_t es = graph_dtype_size(st->dtype), len = n * es, k;
	loff_t src = (loff_t)(st->begin + e0 * es), dst = (loff_t)off;
	ssize_t w;
	int rc;

	/* copy_file_range would copy into fresh page-cache pages, the
	 * cost O_DIRECT avoids (writer.c, writer_open_direct). */
	if (direct != -1 && buf != NULL && cap > GRAPH_WRITE_ALIGN)
		return copy_direct(f, (uint64_t)src, len, fd, direct, buf, cap,
		    off, cause);
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
