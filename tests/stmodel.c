/* SPDX-License-Identifier: MIT */
/*
 * stmodel.c: tiny models of any layout (see stmodel.h).
 */
#include <sys/stat.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stmodel.h"

#define STM_MAX 4096
#define STM_NAME 200

struct stm_tensor {
	char name[STM_NAME];
	int ndim;
	uint64_t shape[4];
	uint64_t numel;
};

static _Noreturn void
stm_fail(const char *what, const char *arg)
{
	fprintf(stderr, "stmodel: %s: %s\n", what, arg);
	exit(99);
}

static uint64_t
mix(uint64_t x)
{
	x ^= x >> 33;
	x *= UINT64_C(0xff51afd7ed558ccd);
	x ^= x >> 33;
	x *= UINT64_C(0xc4ceb9fe1a85ec53);
	x ^= x >> 33;
	return x;
}

/* In [-1, 1), a multiple of 2^-23: exact in float32. */
float
stm_value(uint64_t seed, const char *name, uint64_t i)
{
	uint64_t h = UINT64_C(1469598103934665603) ^ seed;
	const char *p;

	for (p = name; *p != '\0'; p++)
		h = (h ^ (unsigned char)*p) * UINT64_C(1099511628211);
	h = mix(h ^ mix(i + 1));
	return (float)((double)(int64_t)(h >> 40) / 8388608.0 - 1.0);
}

/* Expands one layout line into tensors. */
static void
stm_line(char *line, struct stm_tensor *t, size_t *n)
{
	char *tok, *save = NULL, *lp, name[STM_NAME];
	uint64_t shape[4], count = 1, k;
	int ndim = 0, from = 0;

	if ((tok = strtok_r(line, " \t", &save)) == NULL)
		return;
	snprintf(name, sizeof name, "%s", tok);
	while ((tok = strtok_r(NULL, " \t", &save)) != NULL) {
		if (*tok == '*')
			count = strtoull(tok + 1, NULL, 10);
		else if (ndim < 4)
			shape[ndim++] = strtoull(tok, NULL, 10);
		else
			stm_fail("more than 4 dimensions", name);
	}
	if ((lp = strstr(name, "{L")) != NULL)
		from = lp[2] == '+' ? atoi(lp + 3) : 0;
	for (k = 0; k < count; k++) {
		if (*n == STM_MAX)
			stm_fail("too many tensors", name);
		if (lp != NULL)
			snprintf(t[*n].name, STM_NAME, "%.*s%" PRIu64 "%s",
			    (int)(lp - name), name, k + (uint64_t)from,
			    strchr(lp, '}') + 1);
		else
			snprintf(t[*n].name, STM_NAME, "%s", name);
		t[*n].ndim = ndim;
		t[*n].numel = 1;
		for (int d = 0; d < ndim; d++) {
			t[*n].shape[d] = shape[d];
			t[*n].numel *= shape[d];
		}
		(*n)++;
	}
}

static void
put_le64(unsigned char *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

void
stm_write(const char *dir, const char *layout, const char *config,
    uint64_t seed)
{
	struct stm_tensor *t = calloc(STM_MAX, sizeof *t);
	char *text = strdup(layout), *line, *save = NULL, path[4096];
	size_t n = 0, i, len = 0, cap = 1 << 20;
	char *hdr = malloc(cap);
	unsigned char lenbuf[8];
	uint64_t off = 0, e;
	FILE *f;
	float v;

	if (t == NULL || text == NULL || hdr == NULL)
		stm_fail("out of memory", dir);
	for (line = strtok_r(text, "\n", &save); line != NULL;
	    line = strtok_r(NULL, "\n", &save))
		stm_line(line, t, &n);
	len += (size_t)snprintf(hdr + len, cap - len, "{");
	for (i = 0; i < n; i++) {
		len += (size_t)snprintf(hdr + len, cap - len, "%s\"%s\":"
		    "{\"dtype\":\"F32\",\"shape\":[", i ? "," : "", t[i].name);
		for (int d = 0; d < t[i].ndim; d++)
			len += (size_t)snprintf(hdr + len, cap - len,
			    "%s%" PRIu64, d ? "," : "", t[i].shape[d]);
		len += (size_t)snprintf(hdr + len, cap - len, "],"
		    "\"data_offsets\":[%" PRIu64 ",%" PRIu64 "]}", off,
		    off + t[i].numel * 4);
		off += t[i].numel * 4;
		if (len + 512 > cap)
			stm_fail("header too long", dir);
	}
	hdr[len++] = '}';
	while (len % 8 != 0)
		hdr[len++] = ' ';
	mkdir(dir, 0755);
	snprintf(path, sizeof path, "%s/model.safetensors", dir);
	if ((f = fopen(path, "wb")) == NULL)
		stm_fail("cannot create", path);
	put_le64(lenbuf, len);
	fwrite(lenbuf, 8, 1, f);
	fwrite(hdr, len, 1, f);
	for (i = 0; i < n; i++)
		for (e = 0; e < t[i].numel; e++) {
			v = stm_value(seed, t[i].name, e);
			fwrite(&v, 4, 1, f);	/* little-endian hosts */
		}
	if (fclose(f) != 0)
		stm_fail("cannot write", path);
	snprintf(path, sizeof path, "%s/config.json", dir);
	if ((f = fopen(path, "w")) == NULL || fputs(config, f) == EOF ||
	    fclose(f) != 0)
		stm_fail("cannot write", path);
	free(hdr);
	free(text);
	free(t);
}
