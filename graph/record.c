/* SPDX-License-Identifier: MIT */
/*
 * record.c: a resumable job's record in its staging directory
 * (GRAPH_RECORD_FILE): which plan it runs, its progress, which shards
 * are durably written and, once it stopped, why.
 *
 * The engine writes it for a job submitted with graph_job_opts.record
 * (exec-record.c), so that whoever sees only the staging directory (the
 * same run started again with mergectl run --resume, a daemon watching a
 * job on a cluster node) knows what is done.  It is read by a process
 * that may be more privileged than the one that wrote it, and the writer
 * may be hostile: graph_record_read opens it without following links or
 * blocking, reads at most GRAPH_RECORD_MAX bytes of a regular file owned
 * by the expected user, and graph_record_parse trusts nothing in it
 * (tests/fuzz-record.c fuzzes it).
 */
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cJSON.h>

#include "graph-int.h"
#include "select.h"

#define RECORD_VERSION 1
#define RECORD_MAX_SHARDS 100000
#define RECORD_MAX_ERROR 4096

void
graph_record_fini(struct graph_record *r)
{
	free(r->shards);
	free(r->error);
	memset(r, 0, sizeof *r);
}

/* A whole number in [0, 2^53], as JSON can hold one exactly. */
static int
record_count(const cJSON *o, const char *key, uint64_t *out, char **cause)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
	double d;

	if (!cJSON_IsNumber(v)) {
		*cause = xasprintf("\"%s\" is missing or not a number", key);
		return -EINVAL;
	}
	d = v->valuedouble;
	if (!(d >= 0 && d <= 9007199254740992.0) || d != floor(d)) {
		*cause = xasprintf("\"%s\" is not a whole number of at most "
		    "2^53", key);
		return -EINVAL;
	}
	*out = (uint64_t)d;
	return 0;
}

/* The error as the job said it: shown on other people's terminals. */
static char *
record_text(const char *s)
{
	return graph_text_visible(s, strlen(s), RECORD_MAX_ERROR);
}

char *
graph_text_visible(const char *s, size_t n, size_t max)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t i, k = 0;
	char *t;

	if (n > max) {
		n = max;
		while (n > 0 && (u[n] & 0xc0) == 0x80)
			n--;
	}
	t = xmalloc(n + 1);
	for (i = 0; i < n; i++) {
		if (u[i] == 0xc2 && i + 1 < n && u[i + 1] >= 0x80 &&
		    u[i + 1] <= 0x9f) {
			t[k++] = '?';
			i++;
		} else {
			t[k++] = u[i] < 0x20 || u[i] == 0x7f ? '?' : s[i];
		}
	}
	t[k] = '\0';
	return t;
}

static int
record_fields(const cJSON *o, struct graph_record *r, char **cause)
{
	const cJSON *v;
	uint64_t ver;
	size_t i, n;
	int rc;

	if ((rc = record_count(o, "merged_record", &ver, cause)) != 0)
		return rc;
	if (ver != RECORD_VERSION) {
		*cause = xasprintf("version %" PRIu64 ", not %d", ver,
		    RECORD_VERSION);
		return -EINVAL;
	}
	v = cJSON_GetObjectItemCaseSensitive(o, "plan");
	if (!cJSON_IsString(v) || strlen(v->valuestring) != 16 ||
	    strspn(v->valuestring, "0123456789abcdef") != 16) {
		*cause = xstrdup("\"plan\" is not 16 hexadecimal digits");
		return -EINVAL;
	}
	memcpy(r->plan, v->valuestring, 17);
	if ((rc = record_count(o, "bytes_done", &r->bytes_done, cause)) ||
	    (rc = record_count(o, "bytes_total", &r->bytes_total, cause)) ||
	    (rc = record_count(o, "tensors_done", &r->tensors_done, cause)) ||
	    (rc = record_count(o, "tensors_total", &r->tensors_total,
	    cause)) ||
	    (rc = record_count(o, "memory_peak", &r->memory_peak, cause)))
		return rc;
	if (r->bytes_done > r->bytes_total ||
	    r->tensors_done > r->tensors_total) {
		*cause = xstrdup("more done than there is");
		return -EINVAL;
	}
	v = cJSON_GetObjectItemCaseSensitive(o, "shards");
	if (!cJSON_IsString(v) || (n = strlen(v->valuestring)) == 0 ||
	    n > RECORD_MAX_SHARDS || strspn(v->valuestring, "01") != n) {
		*cause = xstrdup("\"shards\" is not a string of 0 and 1, one "
		    "per shard");
		return -EINVAL;
	}
	r->shards = xstrdup(v->valuestring);
	for (i = 0, r->shards_done = 0; i < n; i++)
		r->shards_done += r->shards[i] == '1';
	v = cJSON_GetObjectItemCaseSensitive(o, "error");
	if (v != NULL && !cJSON_IsNull(v)) {
		if (!cJSON_IsString(v)) {
			*cause = xstrdup("\"error\" is not a string");
			return -EINVAL;
		}
		r->error = record_text(v->valuestring);
	}
	return 0;
}

int
graph_record_parse(const char *buf, size_t len, struct graph_record *out,
    char **cause)
{
	cJSON *o;
	int rc;

	memset(out, 0, sizeof *out);
	if (len > GRAPH_RECORD_MAX) {
		*cause = xasprintf("larger than %d bytes", GRAPH_RECORD_MAX);
		return -EFBIG;
	}
	o = cJSON_ParseWithLength(buf, len);
	if (!cJSON_IsObject(o)) {
		cJSON_Delete(o);
		*cause = xstrdup("not a JSON object");
		return -EINVAL;
	}
	rc = record_fields(o, out, cause);
	cJSON_Delete(o);
	if (rc != 0)
		graph_record_fini(out);
	return rc;
}

/* o as compact JSON text the caller frees with free(); o is deleted. */
char *
record_json_text(cJSON *o)
{
	char *s = cJSON_PrintUnformatted(o), *t;

	cJSON_Delete(o);
	if (s == NULL)
		abort();	/* out of memory, as xmalloc */
	t = xstrdup(s);
	cJSON_free(s);
	return t;
}

char *
graph_record_format(const struct graph_record *r)
{
	cJSON *o = cJSON_CreateObject();

	cJSON_AddNumberToObject(o, "merged_record", RECORD_VERSION);
	cJSON_AddStringToObject(o, "plan", r->plan);
	cJSON_AddNumberToObject(o, "bytes_done", (double)r->bytes_done);
	cJSON_AddNumberToObject(o, "bytes_total", (double)r->bytes_total);
	cJSON_AddNumberToObject(o, "tensors_done", (double)r->tensors_done);
	cJSON_AddNumberToObject(o, "tensors_total", (double)r->tensors_total);
	cJSON_AddNumberToObject(o, "memory_peak", (double)r->memory_peak);
	cJSON_AddStringToObject(o, "shards", r->shards);
	if (r->error != NULL)
		cJSON_AddStringToObject(o, "error", r->error);
	return record_json_text(o);
}

/* graph.h says what it lets through; the checks are on the descriptor
 * opened, not on the name, so nothing can change between them. */
int
graph_user_file_open(int dirfd, const char *name, int64_t owner,
    struct stat *st)
{
	int fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK |
	    O_NOCTTY | O_CLOEXEC);

	if (fd == -1)
		return -errno;
	if (fstat(fd, st) == -1 || !S_ISREG(st->st_mode) ||
	    (owner >= 0 && (int64_t)st->st_uid != owner)) {
		close(fd);
		return -EPERM;
	}
	return fd;
}

/*
 * Reads staging/GRAPH_RECORD_FILE under dirfd.  Neither the directory
 * nor the file may be a link; the file must be a regular one owned by
 * owner (unless owner is -1) and is read without blocking (a FIFO put
 * there does not hang the reader).  -ENOENT when there is none.
 */
int
graph_record_read(int dirfd, const char *staging, int64_t owner,
    struct graph_record *out, char **cause)
{
	char *buf = NULL;
	struct stat st;
	ssize_t n;
	size_t len = 0;
	int dfd, fd = -1, rc;

	memset(out, 0, sizeof *out);
	dfd = openat(dirfd, staging, O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
	    O_CLOEXEC);
	rc = dfd == -1 ? -errno : graph_user_file_open(dfd,
	    GRAPH_RECORD_FILE, owner, &st);
	if (rc < 0) {
		if (rc == -EPERM)
			*cause = xasprintf("%s/%s is not a regular file of its "
			    "job's user", staging, GRAPH_RECORD_FILE);
		else if (rc != -ENOENT)
			*cause = xasprintf("%s/%s: %s", staging,
			    GRAPH_RECORD_FILE, strerror(-rc));
		goto out;
	}
	fd = rc;
	buf = xmalloc(GRAPH_RECORD_MAX + 1);
	/* One more byte than allowed tells a file too large. */
	while (len <= GRAPH_RECORD_MAX && (n = read(fd, buf + len,
	    GRAPH_RECORD_MAX + 1 - len)) != 0) {
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1) {
			rc = -errno;
			*cause = xasprintf("%s/%s: %s", staging,
			    GRAPH_RECORD_FILE, strerror(errno));
			goto out;
		}
		len += (size_t)n;
	}
	rc = graph_record_parse(buf, len, out, cause);
out:
	free(buf);
	if (fd != -1)
		close(fd);
	if (dfd != -1)
		close(dfd);
	return rc;
}

static uint64_t
fp_mix(uint64_t h, const char *s)
{
	return rng_mix(h ^ rng_fnv1a(s));
}

/*
 * What the shards' bytes depend on: the plan as JSON (every tensor with
 * its method, resolved parameters, dtype, shape and place in the shard
 * layout), the seed, and each input file's path, size and modification
 * time.  Two runs with one fingerprint write the same shards.
 */
void
graph_plan_fingerprint(const struct graph_plan *p, char out[17])
{
	struct graph_plan_files f;
	char *s = record_json_text(graph_plan_json(p, NULL)), num[64];
	uint64_t h;
	size_t i;

	h = fp_mix(0x6d65726765647270ull, s);
	free(s);
	snprintf(num, sizeof num, "%" PRIu64, p->seed);
	h = fp_mix(h, num);
	graph_plan_files(p, &f);
	for (i = 0; i < f.n; i++) {
		snprintf(num, sizeof num, "%" PRIu64 " %" PRId64, f.v[i].size,
		    f.v[i].mtime_ns);
		h = fp_mix(fp_mix(h, f.v[i].path), num);
	}
	graph_plan_files_fini(&f);
	snprintf(out, 17, "%016" PRIx64, h);
}
