/* SPDX-License-Identifier: MIT */
/*
 * testlib.c: see testlib.h.  Test support only; aborts on setup failures
 * because a test that cannot set itself up has nothing to report.
 */
#define _GNU_SOURCE
#include <sys/stat.h>
#include <sys/wait.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cJSON.h>

#include "testlib.h"

const char *tl_genmodel;
const char *tl_mergectl;
const char *tl_merged;

static char *tmpdirs[64];
static int ntmpdirs;

static void
die(const char *what)
{
	fprintf(stderr, "testlib: %s: %s\n", what, strerror(errno));
	abort();
}

void
tl_init(int argc, char **argv)
{
	/* Tests change directory; meson passes paths relative to the build. */
	tl_genmodel = argc > 1 ? realpath(argv[1], NULL) : "genmodel";
	tl_mergectl = argc > 2 ? realpath(argv[2], NULL) : "mergectl";
	tl_merged = argc > 3 ? realpath(argv[3], NULL) : "merged";
	atexit(tl_cleanup);
}

char *
tl_tmpdir(const char *tag)
{
	const char *base = getenv("TMPDIR");
	char *p;

	if (asprintf(&p, "%s/merged-test-%s-XXXXXX", base ? base : "/tmp",
	    tag) < 0)
		die("asprintf");
	if (mkdtemp(p) == NULL)
		die("mkdtemp");
	if (ntmpdirs < 64)
		tmpdirs[ntmpdirs++] = p;
	return p;
}

static int
rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)ftw;
	/* Lets a test's unreadable directories go; never through a link,
	 * which would change the mode of what it points to. */
	if (flag != FTW_SL)
		chmod(path, 0700);
	return remove(path);
}

void
tl_cleanup(void)
{
	while (ntmpdirs > 0) {
		char *p = tmpdirs[--ntmpdirs];
		if (getenv("TL_KEEP") == NULL)
			nftw(p, rm_one, 16, FTW_DEPTH | FTW_PHYS);
		free(p);
	}
}

static char *
slurp_fd(int fd)
{
	size_t len = 0, cap = 4096;
	char *buf = malloc(cap);
	ssize_t n;

	for (;;) {
		if (len + 1 >= cap)
			buf = realloc(buf, cap *= 2);
		n = read(fd, buf + len, cap - len - 1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += (size_t)n;
	}
	buf[len] = '\0';
	return buf;
}

int
tl_run(const char *const *argv, char **out, char **err)
{
	int po[2], pe[2], status;
	pid_t pid;
	char *o, *e;

	if (pipe(po) != 0 || pipe(pe) != 0)
		die("pipe");
	if ((pid = fork()) == -1)
		die("fork");
	if (pid == 0) {
		dup2(po[1], 1);
		dup2(pe[1], 2);
		close(po[0]);
		close(pe[0]);
		close(po[1]);
		close(pe[1]);
		execvp(argv[0], (char *const *)argv);
		_exit(127);
	}
	close(po[1]);
	close(pe[1]);
	/* Small outputs only: stdout first, then stderr, is safe here. */
	o = slurp_fd(po[0]);
	e = slurp_fd(pe[0]);
	close(po[0]);
	close(pe[0]);
	while (waitpid(pid, &status, 0) == -1 && errno == EINTR)
		;
	if (out != NULL)
		*out = o;
	else
		free(o);
	if (err != NULL)
		*err = e;
	else
		free(e);
	if (WIFSIGNALED(status))
		return 128 + WTERMSIG(status);
	return WEXITSTATUS(status);
}

int
tl_runf(char **out, const char *fmt, ...)
{
	const char *argv[4] = { "/bin/sh", "-c", NULL, NULL };
	char *cmd, *o = NULL;
	va_list ap;
	int rc;

	va_start(ap, fmt);
	if (vasprintf(&cmd, fmt, ap) < 0)
		die("vasprintf");
	va_end(ap);
	argv[2] = cmd;
	rc = tl_run(argv, &o, NULL);
	if (out != NULL)
		*out = o;
	else
		free(o);
	free(cmd);
	return rc;
}

char *
tl_read(const char *path, size_t *len)
{
	struct stat st;
	char *buf;
	int fd;

	if ((fd = open(path, O_RDONLY)) == -1)
		return NULL;
	if (fstat(fd, &st) != 0) {
		close(fd);
		return NULL;
	}
	buf = malloc((size_t)st.st_size + 1);
	if (read(fd, buf, (size_t)st.st_size) != st.st_size) {
		free(buf);
		close(fd);
		return NULL;
	}
	buf[st.st_size] = '\0';
	close(fd);
	if (len != NULL)
		*len = (size_t)st.st_size;
	return buf;
}

char *
tl_at(const char *dir, const char *fmt, ...)
{
	char rel[1024], *p;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(rel, sizeof rel, fmt, ap);
	va_end(ap);
	if ((p = malloc(strlen(dir) + strlen(rel) + 2)) == NULL)
		exit(99);
	sprintf(p, "%s/%s", dir, rel);
	return p;
}

int
tl_write(const char *path, const char *text)
{
	FILE *fp = fopen(path, "w");

	if (fp == NULL)
		return -1;
	fputs(text, fp);
	return fclose(fp);
}

bool
tl_exists(const char *path)
{
	struct stat st;

	return lstat(path, &st) == 0;
}

int
tl_files_equal(const char *a, const char *b)
{
	size_t la, lb;
	char *x = tl_read(a, &la), *y = tl_read(b, &lb);
	int eq = x != NULL && y != NULL && la == lb && memcmp(x, y, la) == 0;

	free(x);
	free(y);
	return eq;
}

static uint64_t
dtype_size(const char *d)
{
	if (!strcmp(d, "F64") || !strcmp(d, "I64"))
		return 8;
	if (!strcmp(d, "F32") || !strcmp(d, "I32"))
		return 4;
	if (!strcmp(d, "F16") || !strcmp(d, "BF16") || !strcmp(d, "I16"))
		return 2;
	return 1;
}

int
tl_st_load(const char *path, struct tl_st *st)
{
	cJSON *root, *e, *dt, *shape, *offs, *d;
	uint64_t hlen = 0;
	int i;

	memset(st, 0, sizeof *st);
	if ((st->buf = (uint8_t *)tl_read(path, &st->len)) == NULL ||
	    st->len < 8)
		return -1;
	for (i = 7; i >= 0; i--)
		hlen = hlen << 8 | st->buf[i];
	if (hlen > st->len - 8)
		return -1;
	st->header = strndup((char *)st->buf + 8, hlen);
	if ((root = cJSON_Parse(st->header)) == NULL)
		return -1;
	st->t = calloc((size_t)cJSON_GetArraySize(root) + 1, sizeof *st->t);
	cJSON_ArrayForEach(e, root) {
		struct tl_tensor *t;
		if (strcmp(e->string, "__metadata__") == 0)
			continue;
		t = &st->t[st->n++];
		snprintf(t->name, sizeof t->name, "%s", e->string);
		dt = cJSON_GetObjectItem(e, "dtype");
		shape = cJSON_GetObjectItem(e, "shape");
		offs = cJSON_GetObjectItem(e, "data_offsets");
		snprintf(t->dtype, sizeof t->dtype, "%s", dt->valuestring);
		t->numel = 1;
		cJSON_ArrayForEach(d, shape) {
			t->shape[t->ndim++] = (int64_t)d->valuedouble;
			t->numel *= (uint64_t)d->valuedouble;
		}
		t->data = st->buf + 8 + hlen +
		    (uint64_t)cJSON_GetArrayItem(offs, 0)->valuedouble;
		t->nbytes = (uint64_t)cJSON_GetArrayItem(offs, 1)->valuedouble -
		    (uint64_t)cJSON_GetArrayItem(offs, 0)->valuedouble;
		if (t->nbytes != t->numel * dtype_size(t->dtype))
			return -1;
	}
	cJSON_Delete(root);
	return 0;
}

void
tl_st_free(struct tl_st *st)
{
	free(st->buf);
	free(st->t);
	free(st->header);
	memset(st, 0, sizeof *st);
}

const struct tl_tensor *
tl_st_find(const struct tl_st *st, const char *name)
{
	size_t i;

	for (i = 0; i < st->n; i++)
		if (strcmp(st->t[i].name, name) == 0)
			return &st->t[i];
	return NULL;
}

int
tl_model_load(const char *dir, struct tl_st **out, size_t *n)
{
	char path[4096], *idx;
	cJSON *root, *wm, *e;
	size_t i;

	*out = NULL;
	*n = 0;
	snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
	if ((idx = tl_read(path, NULL)) == NULL) {
		*out = calloc(1, sizeof **out);
		snprintf(path, sizeof path, "%s/model.safetensors", dir);
		*n = 1;
		return tl_st_load(path, *out);
	}
	root = cJSON_Parse(idx);
	free(idx);
	wm = cJSON_GetObjectItem(root, "weight_map");
	*out = calloc((size_t)cJSON_GetArraySize(wm) + 1, sizeof **out);
	cJSON_ArrayForEach(e, wm) {
		snprintf(path, sizeof path, "%s/%s", dir, e->valuestring);
		for (i = 0; i < *n; i++)
			if (tl_st_find(&(*out)[i], e->string) != NULL)
				break;
		if (i < *n)
			continue;
		if (tl_st_load(path, &(*out)[*n]) != 0) {
			cJSON_Delete(root);
			return -1;
		}
		(*n)++;
	}
	cJSON_Delete(root);
	return 0;
}

const struct tl_tensor *
tl_model_find(struct tl_st *m, size_t n, const char *name)
{
	const struct tl_tensor *t;
	size_t i;

	for (i = 0; i < n; i++)
		if ((t = tl_st_find(&m[i], name)) != NULL)
			return t;
	return NULL;
}

void
tl_model_free(struct tl_st *m, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		tl_st_free(&m[i]);
	free(m);
}

/* Half precision by arithmetic, not bit tricks: independent of graph/. */
static double
half_value(uint16_t h)
{
	int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
	double v;

	if (e == 31)
		v = m ? NAN : INFINITY;
	else if (e == 0)
		v = ldexp(m, -24);
	else
		v = ldexp(1024 + m, e - 25);
	return s ? -v : v;
}

double
tl_value(const struct tl_tensor *t, uint64_t i)
{
	const uint8_t *p = t->data;
	uint32_t u;
	float f;
	double d;

	if (strcmp(t->dtype, "BF16") == 0) {
		u = (uint32_t)(p[2 * i] | p[2 * i + 1] << 8) << 16;
		memcpy(&f, &u, 4);
		return f;
	}
	if (strcmp(t->dtype, "F16") == 0)
		return half_value((uint16_t)(p[2 * i] | p[2 * i + 1] << 8));
	if (strcmp(t->dtype, "F32") == 0) {
		memcpy(&f, p + 4 * i, 4);
		return f;
	}
	if (strcmp(t->dtype, "F64") == 0) {
		memcpy(&d, p + 8 * i, 8);
		return d;
	}
	return NAN;
}

/* Spacing of dtype's values around x. */
static double
quantum(const char *dtype, double x)
{
	int p, emin, e;

	if (strcmp(dtype, "BF16") == 0)
		p = 8, emin = -126;
	else if (strcmp(dtype, "F16") == 0)
		p = 11, emin = -14;
	else if (strcmp(dtype, "F32") == 0)
		p = 24, emin = -126;
	else
		p = 53, emin = -1022;
	if (x == 0)
		return ldexp(1, emin - (p - 1));
	e = ilogb(x);
	if (e < emin)
		e = emin;
	return ldexp(1, e - (p - 1));
}

double
tl_round(const char *dtype, double x)
{
	double q = quantum(dtype, x);

	return nearbyint(x / q) * q;
}

double
tl_ulps(const char *dtype, double got, double want)
{
	if (isnan(got) || isnan(want))
		return isnan(got) && isnan(want) ? 0 : INFINITY;
	return fabs(got - want) / quantum(dtype, want);
}

int
tl_genmodel_run(const char *args, const char *out)
{
	char *o = NULL;
	int rc = tl_runf(&o, "%s %s --out %s 2>&1", tl_genmodel, args, out);

	if (rc != 0)
		fprintf(stderr, "genmodel failed: %s\n", o);
	free(o);
	return rc;
}

/* Writes dir/name, or stops the test: it cannot set itself up. */
void
tl_write_at(const char *dir, const char *name, const char *text)
{
	char path[4096];

	snprintf(path, sizeof path, "%s/%s", dir, name);
	if (tl_write(path, text) != 0) {
		fprintf(stderr, "testlib: cannot write %s\n", path);
		exit(99);
	}
}

bool
tl_same_at(const char *dir, const char *a, const char *b)
{
	char pa[4096], pb[4096];

	snprintf(pa, sizeof pa, "%s/%s", dir, a);
	snprintf(pb, sizeof pb, "%s/%s", dir, b);
	return tl_files_equal(pa, pb);
}

/* genmodel ARGS --out dir/name, or stops the test. */
void
tl_gen_at(const char *dir, const char *name, const char *args)
{
	char path[4096];

	snprintf(path, sizeof path, "%s/%s", dir, name);
	if (tl_genmodel_run(args, path) != 0)
		exit(99);
}

static int
tl_by_name(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The names in dir that end in ext, without it, sorted; at most max. */
size_t
tl_list(const char *dir, const char *ext, char **names, size_t max)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	size_t n = 0, len, elen = strlen(ext);

	if (d == NULL)
		return 0;
	while ((de = readdir(d)) != NULL && n < max) {
		len = strlen(de->d_name);
		if (len > elen && strcmp(de->d_name + len - elen, ext) == 0)
			names[n++] = strndup(de->d_name, len - elen);
	}
	closedir(d);
	qsort(names, n, sizeof *names, tl_by_name);
	return n;
}

/*
 * dir/a and dir/b hold the same files, and their weights and JSON files
 * are byte for byte the same (a model card names its output, so it may
 * differ).
 */
bool
tl_outputs_equal(const char *dir, const char *a, const char *b)
{
	return tl_runf(NULL, "cd %s && ls %s > l1 && ls %s > l2 && "
	    "cmp -s l1 l2 && for f in %s/*.safetensors %s/*.json; do "
	    "cmp -s $f %s/$(basename $f) || exit 1; done", dir, a, b, a, a,
	    b) == 0;
}
