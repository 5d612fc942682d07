/* SPDX-License-Identifier: MIT */
/*
 * torchzip.h: write torch checkpoints as torch.save does (a zip archive of
 * stored entries: PREFIX/data.pkl, PREFIX/data/KEY per storage,
 * PREFIX/version), for genmodel --format bin and for the tests that craft
 * odd checkpoints.  Independent of the daemon's reader (graph/zip.c,
 * graph/pickle.c), which it is the test of.
 */
#ifndef TORCHZIP_H
#define TORCHZIP_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

struct tz_entry {
	char *name;
	uint64_t header;	/* offset of the local header */
	uint64_t size;
	uint32_t crc;
};

struct tz {
	FILE *fp;
	const char *path;	/* for messages */
	int zip64;		/* ZIP64 records for every entry */
	uint64_t pos;		/* bytes written so far */
	struct tz_entry *ents;
	size_t n;
	size_t cap;
	uint64_t left;		/* of the open entry */
	uint32_t crc;
};

/* A growing byte string (the pickle). */
struct tz_buf {
	unsigned char *data;
	size_t len;
	size_t cap;
};

/* One tensor of a state dict, a view of the storage data/KEY. */
struct tz_tensor {
	const char *name;
	const char *key;
	const char *storage;	/* "BFloat16Storage", "FloatStorage", ... */
	int ndim;
	const uint64_t *shape;
	uint64_t storage_numel;
	uint64_t offset;	/* elements into the storage */
	const uint64_t *stride;	/* NULL: contiguous */
	int param;		/* an nn.Parameter (_rebuild_parameter) */
};

void tz_open(struct tz *, FILE *fp, const char *path, int zip64);
void tz_begin(struct tz *, const char *name, uint64_t size);
void tz_write(struct tz *, const void *data, size_t len);
void tz_end(struct tz *);
void tz_entry(struct tz *, const char *name, const void *data, size_t len);
void tz_finish(struct tz *);

void tz_put(struct tz_buf *, const void *data, size_t len);
void tz_byte(struct tz_buf *, unsigned char);
void tz_int(struct tz_buf *, uint64_t);
void tz_str(struct tz_buf *, const char *);
void tz_pickle_state_dict(struct tz_buf *, const struct tz_tensor *, size_t,
    int ordered);

#endif
