/* SPDX-License-Identifier: MIT */
/*
 * torchbin.c: read a torch checkpoint (pytorch_model.bin, or one shard of
 * a sharded one) into the same file record as a safetensors file, so that
 * the planner, the reader and the writer see no difference.
 *
 * Since torch 1.6, torch.save writes a zip archive with every entry stored
 * uncompressed: PREFIX/data.pkl, the pickled state dict, and one entry
 * PREFIX/data/KEY per storage, its raw little-endian bytes.  zip.c reads
 * the directory, pickle.c the state dict without running it; here each
 * tensor becomes a byte range of the file: its storage's entry, plus its
 * offset.  So weights are read later, by offset, under the memory budget,
 * exactly as from a safetensors file; planning reads only data.pkl.
 *
 * As mergekit does in effect (its architectures list weights only), the
 * tensors that are not weights are marked skip, so that the model leaves
 * them out while an index that lists them (transformers' does) still finds
 * them: integer and bool buffers (position ids, attention masks) and
 * rotary_emb.inv_freq, the buffer that transformers before 4.31 saved and
 * now recomputes and ignores on load.
 *
 * The legacy format that torch wrote before 1.6 (a bare pickle stream, or
 * a tar archive before that) is refused with what to do instead.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "graph-int.h"

/* data.pkl, version, byteorder, .data/serialization_id and the like. */
#define TORCHBIN_EXTRA_ENTRIES 64

static bool
torchbin_is_buffer(const struct torchpkl_tensor *t)
{
	static const char inv_freq[] = "rotary_emb.inv_freq";
	size_t n = strlen(t->name), k = sizeof inv_freq - 1;

	if (!graph_dtype_is_float(t->dtype))
		return true;
	return n >= k && strcmp(t->name + n - k, inv_freq) == 0 &&
	    (n == k || t->name[n - k - 1] == '.');
}

/* The single PREFIX/data.pkl entry; *plen is PREFIX's length. */
static int
torchbin_find_pickle(const struct zip_entry *z, size_t nz, size_t *at,
    size_t *plen, char **cause)
{
	static const char pkl[] = "/data.pkl";
	size_t i, n, k = sizeof pkl - 1;
	bool found = false;

	for (i = 0; i < nz; i++) {
		n = strlen(z[i].name);
		if (n <= k || strcmp(z[i].name + n - k, pkl) != 0 ||
		    memchr(z[i].name, '/', n - k) != NULL)
			continue;
		if (found) {
			*cause = xstrdup("the archive holds two data.pkl "
			    "entries");
			return -EINVAL;
		}
		found = true;
		*at = i;
		*plen = n - k;
	}
	if (!found) {
		*cause = xstrdup("a zip archive without data.pkl, so not a "
		    "torch checkpoint");
		return -EINVAL;
	}
	return 0;
}

/* The entry PREFIX/data/KEY of t's storage, checked against t. */
static int
torchbin_locate(const struct zip_entry *z,
    const struct strmap *entries, const char *prefix, size_t plen,
    const struct torchpkl_tensor *t, struct safetensors_tensor *out,
    char **cause)
{
	size_t es = graph_dtype_size(t->dtype), i;
	char *name = xasprintf("%.*s/data/%s", (int)plen, prefix, t->key);
	uint64_t bytes;
	bool found = strmap_get(entries, name, &i);

	free(name);
	if (!found) {
		*cause = xasprintf("tensor '%s': its storage '%s' is not in "
		    "the archive", t->name, t->key);
		return -EINVAL;
	}
	/* torch writes a storage's elements exactly. */
	if (t->storage_numel > UINT64_MAX / es ||
	    (bytes = t->storage_numel * es) != z[i].size) {
		*cause = xasprintf("tensor '%s': storage '%s' holds %" PRIu64
		    " bytes, not the %" PRIu64 " elements of %zu bytes its "
		    "header says", t->name, t->key, z[i].size,
		    t->storage_numel, es);
		return -EINVAL;
	}
	if (t->offset > t->storage_numel ||
	    t->numel > t->storage_numel - t->offset) {
		*cause = xasprintf("tensor '%s' runs past the end of its "
		    "storage", t->name);
		return -EINVAL;
	}
	memset(out, 0, sizeof *out);
	out->dtype = t->dtype;
	out->ndim = t->ndim;
	memcpy(out->shape, t->shape, sizeof out->shape);
	out->numel = t->numel;
	out->begin = z[i].offset + t->offset * es;
	out->end = out->begin + t->numel * es;
	return 0;
}

static int
torchbin_legacy(const uint8_t *buf, size_t len, char **cause)
{
	/* Before 1.6: a pickle stream (PROTO 2 and torch's magic number);
	 * before that, a tar archive. */
	if ((len >= 2 && buf[0] == 0x80) ||
	    (len >= 262 && memcmp(buf + 257, "ustar", 5) == 0)) {
		*cause = xstrdup("a checkpoint in torch's legacy format "
		    "(written before torch 1.6 or with "
		    "_use_new_zipfile_serialization=False), which mergectl "
		    "does not read; load and save it again with a newer "
		    "torch, or convert it to safetensors");
		return -EINVAL;
	}
	*cause = xstrdup("not a torch checkpoint (a zip archive)");
	return -EINVAL;
}

/*
 * The weights of the torch checkpoint src, as tensors with absolute byte
 * ranges, and their names in *names.  At most SAFETENSORS_MAX_TENSORS of
 * them, as for a safetensors file.  Reads the head, the zip directory and
 * data.pkl, no weight.
 */
int
torchbin_parse(const struct zip_src *src, struct safetensors_tensor **out,
    size_t *nout, struct strmap *names, char **cause)
{
	struct safetensors_tensor *t = NULL;
	struct torchpkl_tensor *pt = NULL;
	struct zip_entry *z = NULL;
	struct strmap entries = { 0 };
	size_t nz = 0, npt = 0, n = 0, pkl, plen, i;
	uint8_t head[262], order[6], *pickle = NULL;
	size_t nhead = src->size < sizeof head ? (size_t)src->size :
	    sizeof head;
	char *bo;
	int rc;

	*out = NULL;
	*nout = 0;
	if ((rc = zip_src_read(src, 0, nhead, head, cause)) != 0)
		goto out;
	if (nhead < 4 || memcmp(head, "PK\003\004", 4) != 0) {
		rc = torchbin_legacy(head, nhead, cause);
		goto out;
	}
	if ((rc = zip_read_dir(src, SAFETENSORS_MAX_TENSORS +
	    TORCHBIN_EXTRA_ENTRIES, &z, &nz, cause)) != 0)
		goto out;
	for (i = 0; i < nz; i++) {
		if (strmap_get(&entries, z[i].name, NULL)) {
			*cause = xasprintf("zip entry '%s' appears twice",
			    z[i].name);
			rc = -EINVAL;
			goto out;
		}
		strmap_put(&entries, z[i].name, i);
	}
	if ((rc = torchbin_find_pickle(z, nz, &pkl, &plen, cause)) != 0)
		goto out;
	bo = xasprintf("%.*s/byteorder", (int)plen, z[pkl].name);
	if (strmap_get(&entries, bo, &i) && !(z[i].size == 6 &&
	    zip_src_read(src, z[i].offset, 6, order, cause) == 0 &&
	    memcmp(order, "little", 6) == 0)) {
		free(*cause);
		*cause = xstrdup("a checkpoint saved on a big-endian machine");
		rc = -EINVAL;
		free(bo);
		goto out;
	}
	free(bo);
	/* Read whole (it is parsed in one pass), within its limit. */
	if (z[pkl].size > TORCHPKL_MAX_LEN) {
		*cause = xasprintf("data.pkl is %" PRIu64 " bytes, over the "
		    "limit of %u", z[pkl].size, TORCHPKL_MAX_LEN);
		rc = -EINVAL;
		goto out;
	}
	pickle = xmalloc(z[pkl].size ? (size_t)z[pkl].size : 1);
	if ((rc = zip_src_read(src, z[pkl].offset, (size_t)z[pkl].size,
	    pickle, cause)) != 0 || (rc = torchpkl_parse(pickle,
	    (size_t)z[pkl].size, SAFETENSORS_MAX_TENSORS, &pt, &npt,
	    cause)) != 0)
		goto out;
	t = xcalloc(npt ? npt : 1, sizeof *t);
	for (i = 0; i < npt; i++) {
		if ((rc = torchbin_locate(z, &entries, z[pkl].name, plen,
		    &pt[i], &t[n], cause)) != 0)
			goto out;
		t[n].skip = torchbin_is_buffer(&pt[i]);
		t[n].name = pt[i].name;
		pt[i].name = NULL;
		strmap_put(names, t[n].name, n);
		n++;
	}
	*out = t;
	*nout = n;
	t = NULL;
	n = 0;
out:
	if (rc != 0) {
		/* Names inside come from the file: one printable line. */
		*cause = graph_text_printable(*cause);
		strmap_free(names);
	}
	for (i = 0; i < n; i++)
		free(t[i].name);
	free(t);
	torchpkl_free(pt, npt);
	zip_entries_free(z, nz);
	strmap_free(&entries);
	free(pickle);
	return rc;
}

/* Takes ownership of fd, an open torch checkpoint named path. */
int
torchbin_open_fd(int fd, const char *path, struct safetensors_file **out,
    char **cause)
{
	struct safetensors_file *f;
	struct zip_src src;
	char *why = NULL;
	int rc;

	if ((rc = tensorfile_open(fd, path, &f, cause)) != 0)
		return rc;
	src.buf = NULL;
	src.fd = f->fd;
	src.size = f->size;
	rc = torchbin_parse(&src, &f->t, &f->nt, &f->names, &why);
	if (rc != 0) {
		*cause = xasprintf("%s: %s", path, why);
		free(why);
		safetensors_close(f);
		return rc;
	}
	*out = f;
	return 0;
}
