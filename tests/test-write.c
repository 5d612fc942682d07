/* SPDX-License-Identifier: MIT */
/*
 * test-write.c: how a merge's output reaches the disk.  Shards are
 * written with O_DIRECT where the file system takes it (writer.c), each
 * chunk's whole pages straight from memory and the partial pages it
 * shares with its neighbours through the page cache; where O_DIRECT is
 * refused, at open (tmpfs before Linux 6.6) or at a write, through the
 * page cache alone.  Every way gives the same bytes, checked element by
 * element against the inputs: a computed chunk (linear) and a byte copy
 * (passthrough), whole and in many small chunks.  Written direct, the
 * output does not fill the page cache (mincore), which is why it is
 * done: on a shared box a merge's output no longer pushes other users'
 * models out of the cache.
 *
 * The refusals are made by faultshim.so (FAULT_DIRECT=open|write).
 */
#define _GNU_SOURCE		/* O_DIRECT */
#include <sys/mman.h>
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tap.h"
#include "testlib.h"

static const char *dir;
static const char *shim;	/* path of faultshim.so */

static const char linear_cfg[] =
    "merge_method: linear\n"
    "models:\n"
    "  - model: a\n    parameters: {weight: 0.25}\n"
    "  - model: b\n    parameters: {weight: 0.75}\n";

static const char copy_cfg[] =
    "merge_method: passthrough\n"
    "slices:\n"
    "  - sources:\n"
    "      - model: a\n        layer_range: [0, 3]\n";

/* Whether this directory's file system takes O_DIRECT writes. */
static bool
direct_ok(void)
{
	char *path = tl_at(dir, "probe");
	void *page = NULL;
	bool ok = false;
	int fd;

	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_DIRECT, 0600);
	if (fd >= 0 && posix_memalign(&page, 4096, 4096) == 0) {
		memset(page, 0, 4096);
		ok = pwrite(fd, page, 4096, 0) == 4096;
	}
	if (fd >= 0)
		close(fd);
	free(page);
	unlink(path);
	free(path);
	return ok;
}

/* Pages of out's shards in the page cache, and in all. */
static void
resident(const char *out, size_t *in_cache, size_t *total)
{
	char *names[16], *path;
	unsigned char *vec;
	struct stat st;
	size_t n, i, k, pages;
	void *m;
	int fd;

	*in_cache = *total = 0;
	path = tl_at(dir, "%s", out);
	n = tl_list(path, ".safetensors", names, 16);
	free(path);
	for (i = 0; i < n; i++) {
		path = tl_at(dir, "%s/%s.safetensors", out, names[i]);
		fd = open(path, O_RDONLY);
		free(path);
		free(names[i]);
		if (fd < 0 || fstat(fd, &st) != 0 || st.st_size == 0) {
			if (fd >= 0)
				close(fd);
			continue;
		}
		pages = ((size_t)st.st_size + 4095) / 4096;
		m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd,
		    0);
		vec = malloc(pages);
		if (m != MAP_FAILED && mincore(m, (size_t)st.st_size, vec) ==
		    0)
			for (k = 0; k < pages; k++)
				*in_cache += vec[k] & 1;
		*total += pages;
		free(vec);
		if (m != MAP_FAILED)
			munmap(m, (size_t)st.st_size);
		close(fd);
	}
}

/* mergectl run cfg out [extra], with FAULT_DIRECT=how when given. */
static int
run(const char *cfg, const char *out, const char *how, const char *extra)
{
	char *o = NULL;
	int rc;

	if (how == NULL)
		rc = tl_runf(&o, "cd %s && %s run %s %s --quiet %s 2>&1", dir,
		    tl_mergectl, cfg, out, extra);
	else
		rc = tl_runf(&o, "cd %s && LD_PRELOAD=%s FAULT_PATH=%s "
		    "FAULT_DIRECT=%s ASAN_OPTIONS=${ASAN_OPTIONS:-}:"
		    "verify_asan_link_order=0 %s run %s %s --quiet %s 2>&1",
		    dir, shim, dir, how, tl_mergectl, cfg, out, extra);
	if (rc != 0)
		tap_diag("%s: exit %d: %s", out, rc, o ? o : "");
	free(o);
	return rc;
}

/* dir/name's tensors. */
static void
load(const char *name, struct tl_st **m, size_t *n)
{
	char *path = tl_at(dir, "%s", name);

	tl_model_load(path, m, n);
	free(path);
}

/* Largest distance, in output ulps, of out's tensors from 0.25 a +
 * 0.75 b in float64 (every tensor, every element). */
static double
linear_worst(const char *out)
{
	struct tl_st *a = NULL, *b = NULL, *y = NULL;
	size_t na = 0, nb = 0, ny = 0, f, k;
	const struct tl_tensor *t, *ta, *tb;
	double worst = 0, u;
	uint64_t e, seen = 0;

	load("a", &a, &na);
	load("b", &b, &nb);
	load(out, &y, &ny);
	for (f = 0; f < ny; f++)
		for (k = 0; k < y[f].n; k++) {
			t = &y[f].t[k];
			ta = tl_model_find(a, na, t->name);
			tb = tl_model_find(b, nb, t->name);
			if (ta == NULL || tb == NULL || ta->numel != t->numel)
				return INFINITY;
			for (e = 0; e < t->numel; e++) {
				u = tl_ulps(t->dtype, tl_value(t, e), 0.25 *
				    tl_value(ta, e) + 0.75 * tl_value(tb, e));
				worst = u > worst ? u : worst;
			}
			seen++;
		}
	tl_model_free(a, na);
	tl_model_free(b, nb);
	tl_model_free(y, ny);
	return seen > 0 ? worst : INFINITY;
}

/* Whether every tensor of out has the bytes of a's tensor of its name. */
static bool
copy_exact(const char *out)
{
	struct tl_st *a = NULL, *y = NULL;
	size_t na = 0, ny = 0, f, k, seen = 0;
	const struct tl_tensor *t, *ta;
	bool same = true;

	load("a", &a, &na);
	load(out, &y, &ny);
	for (f = 0; f < ny; f++)
		for (k = 0; k < y[f].n; k++, seen++) {
			t = &y[f].t[k];
			ta = tl_model_find(a, na, t->name);
			same = same && ta != NULL && ta->nbytes == t->nbytes &&
			    memcmp(ta->data, t->data, t->nbytes) == 0;
		}
	tl_model_free(a, na);
	tl_model_free(y, ny);
	return same && seen > 0;
}

static void
test_linear(bool direct)
{
	size_t in, all;
	double w;

	ok(run("lin.yml", "lin", NULL, "") == 0, "a linear merge");
	/* Before anything reads it back. */
	resident("lin", &in, &all);
	if (direct)
		ok(all > 2000 && in * 20 <= all, "written direct: %zu of its "
		    "%zu pages in the page cache (the partial pages of its "
		    "chunks' ends)", in, all);
	else
		ok(1, "the file system here takes no O_DIRECT: written "
		    "through the page cache (%zu of %zu pages cached)", in,
		    all);
	w = linear_worst("lin");
	ok(w <= 1, "every element of every tensor is 0.25 a + 0.75 b within "
	    "an ulp (at most %.2f)", w);
	ok(run("lin.yml", "lin-o", "open", "") == 0 &&
	    tl_outputs_equal(dir, "lin", "lin-o"), "O_DIRECT refused at open: "
	    "the page cache, the same bytes");
	resident("lin-o", &in, &all);
	ok(all > 2000 && in * 10 >= all * 9, "and all through the cache: "
	    "%zu of %zu pages", in, all);
	ok(run("lin.yml", "lin-w", "write", "") == 0 &&
	    tl_outputs_equal(dir, "lin", "lin-w"), "O_DIRECT refused at "
	    "every write: the page cache takes each one, the same bytes");
	resident("lin-w", &in, &all);
	ok(all > 2000 && in * 10 >= all * 9, "and all through the cache: "
	    "%zu of %zu pages", in, all);
	ok(run("lin.yml", "lin-s", NULL, "--memory 3M -j 2") == 0 &&
	    tl_outputs_equal(dir, "lin", "lin-s"), "in small chunks on two "
	    "threads (--memory 3M): many more partial pages, the same bytes");
}

static void
test_copy(bool direct)
{
	size_t in, all;

	ok(run("copy.yml", "copy", NULL, "") == 0, "a passthrough merge");
	resident("copy", &in, &all);
	ok(!direct || (all > 1000 && in * 20 <= all), "copied direct: %zu "
	    "of %zu pages in the page cache", in, all);
	ok(copy_exact("copy"), "every tensor has the input's bytes");
	ok(run("copy.yml", "copy-s", NULL, "--memory 3M -j 2") == 0 &&
	    tl_outputs_equal(dir, "copy", "copy-s"), "under --memory 3M, "
	    "its buffers within the budget: the same bytes");
	ok(run("copy.yml", "copy-o", "open", "") == 0 &&
	    tl_outputs_equal(dir, "copy", "copy-o"), "O_DIRECT refused at "
	    "open: copied through the page cache, the same bytes");
	ok(run("copy.yml", "copy-w", "write", "") == 0 &&
	    tl_outputs_equal(dir, "copy", "copy-w"), "O_DIRECT refused at "
	    "every write: the same bytes");
	resident("copy-w", &in, &all);
	ok(all > 1000 && in * 10 >= all * 9, "and all through the cache: "
	    "%zu of %zu pages", in, all);
}

int
main(int argc, char **argv)
{
	bool direct;

	tl_init(argc, argv);
	tap_plan_lazy();
	shim = argc > 6 ? argv[6] : "faultshim.so";
	dir = tl_tmpdir("write");
	/* bf16, odd sizes: tensors and chunks end off page boundaries. */
	tl_gen_at(dir, "a", "--family llama --layers 3 --hidden 520 "
	    "--intermediate 1096 --vocab 4100 --seed 61");
	tl_gen_at(dir, "b", "--family llama --layers 3 --hidden 520 "
	    "--intermediate 1096 --vocab 4100 --seed 62");
	tl_write_at(dir, "lin.yml", linear_cfg);
	tl_write_at(dir, "copy.yml", copy_cfg);
	direct = direct_ok();
	tap_diag("O_DIRECT on this file system: %s", direct ? "yes" : "no");
	test_linear(direct);
	test_copy(direct);
	return tap_done();
}
