/* SPDX-License-Identifier: MIT */
/*
 * testlib.h: helpers for the integration tests: temporary directories,
 * running the project's programs, and an independent safetensors reader.
 *
 * The reader here deliberately shares no code with graph/: tests compare
 * the engine's output against numbers computed from the inputs by this
 * reader and by formulas written in the tests, so a bug in the engine's
 * own reader or dtype code cannot hide itself.
 */
#ifndef TESTLIB_H
#define TESTLIB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct tl_tensor {
	char name[256];
	char dtype[16];
	int ndim;
	int64_t shape[8];
	uint64_t numel;
	const uint8_t *data;
	uint64_t nbytes;
};

struct tl_st {
	uint8_t *buf;
	size_t len;
	struct tl_tensor *t;
	size_t n;
	char *header;		/* the JSON header text */
};

/* A fresh directory under $TMPDIR, removed by tl_cleanup(). */
char *tl_tmpdir(const char *);
void tl_cleanup(void);
/* Runs argv; returns the exit status, stderr captured into *err if set. */
int tl_run(const char *const *, char **, char **);
int tl_runf(char **, const char *, ...) __attribute__((format(printf, 2, 3)));
char *tl_read(const char *, size_t *);
/* dir/FMT, allocated (the tests' paths in their directory). */
char *tl_at(const char *dir, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
int tl_write(const char *, const char *);
bool tl_exists(const char *);
int tl_files_equal(const char *, const char *);

int tl_st_load(const char *, struct tl_st *);
void tl_st_free(struct tl_st *);
const struct tl_tensor *tl_st_find(const struct tl_st *, const char *);
/* Loads a model directory's tensors across shards. */
int tl_model_load(const char *, struct tl_st **, size_t *);
const struct tl_tensor *tl_model_find(struct tl_st *, size_t, const char *);
void tl_model_free(struct tl_st *, size_t);

double tl_value(const struct tl_tensor *, uint64_t);
/* Distance in units of the last place of dtype between got and want. */
double tl_ulps(const char *, double, double);
/* The nearest value of dtype to x (round to nearest even). */
double tl_round(const char *, double);

/* Paths of the built programs, from argv of the test. */
extern const char *tl_genmodel;
extern const char *tl_mergectl;
extern const char *tl_merged;
void tl_init(int, char **);
int tl_genmodel_run(const char *, const char *);
void tl_write_at(const char *, const char *, const char *);
bool tl_same_at(const char *, const char *, const char *);
void tl_gen_at(const char *, const char *, const char *);
size_t tl_list(const char *dir, const char *ext, char **names, size_t max);
bool tl_outputs_equal(const char *dir, const char *a, const char *b);

#endif /* TESTLIB_H */
