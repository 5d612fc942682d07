/* SPDX-License-Identifier: MIT */
/*
 * fuzz-main.h: the standalone driver of a fuzz target.  Included by each
 * tests/fuzz-*.c after its LLVMFuzzerTestOneInput when not built for
 * libFuzzer: it replays every file of the corpus directories (or files)
 * given as arguments through the target, one TAP line each, so that the
 * fuzz suite runs under gcc and sanitizers without libFuzzer.
 */
#ifndef FUZZ_MAIN_H
#define FUZZ_MAIN_H

#include "tap.h"

static int replay_file(const char *);
static int replay_dir(const char *);
static int name_cmp(const void *, const void *);

/* Runs the target on one file's bytes; 0, or -1 when it cannot be read. */
static int
replay_file(const char *path)
{
	uint8_t *buf;
	size_t size;
	long end;
	FILE *fp;
	int ret = -1;

	if ((fp = fopen(path, "rb")) == NULL)
		return -1;
	if (fseek(fp, 0, SEEK_END) != 0 || (end = ftell(fp)) < 0 ||
	    fseek(fp, 0, SEEK_SET) != 0)
		goto out;
	size = (size_t)end;
	/* Exactly size bytes, so ASan sees any read past the input. */
	if ((buf = malloc(size ? size : 1)) == NULL)
		goto out;
	if (fread(buf, 1, size, fp) == size) {
		LLVMFuzzerTestOneInput(buf, size);
		ret = 0;
	}
	free(buf);
out:
	fclose(fp);
	return ret;
}

static int
name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Replays every regular file in dir, in name order. */
static int
replay_dir(const char *dir)
{
	char **names = NULL, path[4096];
	size_t n = 0, i;
	struct dirent *de;
	struct stat sb;
	DIR *d;

	if ((d = opendir(dir)) == NULL)
		return -1;
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		names = realloc(names, (n + 1) * sizeof *names);
		if (names == NULL || (names[n] = strdup(de->d_name)) == NULL)
			abort();
		n++;
	}
	closedir(d);
	if (n > 0)
		qsort(names, n, sizeof *names, name_cmp);
	for (i = 0; i < n; i++) {
		snprintf(path, sizeof path, "%s/%s", dir, names[i]);
		if (stat(path, &sb) == 0 && S_ISREG(sb.st_mode))
			ok(replay_file(path) == 0, "replay %s", path);
		free(names[i]);
	}
	free(names);
	return 0;
}

int
main(int argc, char **argv)
{
	struct stat sb;
	int i;

	tap_plan_lazy();
	for (i = 1; i < argc; i++) {
		if (stat(argv[i], &sb) == 0 && S_ISDIR(sb.st_mode)) {
			if (replay_dir(argv[i]) != 0)
				ok(0, "open %s", argv[i]);
		} else
			ok(replay_file(argv[i]) == 0, "replay %s", argv[i]);
	}
	if (tap_n == 0)
		tap_skip_all("no corpus given");
	return tap_done();
}

#endif /* FUZZ_MAIN_H */
