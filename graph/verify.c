/* SPDX-License-Identifier: MIT */
/*
 * verify.c: is a finished output the one a plan writes?  For a job that
 * ran elsewhere (a Slurm node, merged --backend slurm): a job reported
 * complete is done only when its output checks out.
 *
 * The plan fixes every shard's name, size and header bytes (which carry
 * each tensor's name, dtype, shape and offsets), and the index when
 * there are several shards: each must be there, a regular file, of the
 * planned size, beginning with the planned header.  Nothing is followed
 * through a link, and a FIFO put in place does not block the reader.
 *
 * A daemon that restarts while its jobs run elsewhere has no plan, only
 * its store: graph_plan_verify_spec writes what the check needs (each
 * shard's name, size, header length and a hash of the header) as JSON
 * for the store, and graph_verify_spec checks an output against it.
 * graph_plan_verify is the same check from the plan.
 */
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cJSON.h>

#include "graph-int.h"

/* What one shard must be. */
struct vshard {
	const char *name;
	uint64_t size;
	size_t header_len;
	uint64_t hash;		/* FNV-1a 64 of the header's bytes */
};

static uint64_t
fnv1a_bytes(const uint8_t *p, size_t n)
{
	uint64_t h = 0xcbf29ce484222325ull;

	while (n-- > 0) {
		h ^= *p++;
		h *= 0x100000001b3ull;
	}
	return h;
}

static int
verify_shard(int dfd, const char *out, const struct vshard *sh,
    char **cause)
{
	struct stat st;
	uint8_t *buf = NULL;
	ssize_t n;
	int fd, rc = 0;

	fd = openat(dfd, sh->name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK |
	    O_CLOEXEC);
	if (fd == -1) {
		rc = -errno;
		*cause = xasprintf("%s/%s: %s", out, sh->name, strerror(-rc));
		return rc;
	}
	if (fstat(fd, &st) == -1 || !S_ISREG(st.st_mode) ||
	    (uint64_t)st.st_size != sh->size) {
		*cause = xasprintf("%s/%s is not the planned file of %llu "
		    "bytes", out, sh->name, (unsigned long long)sh->size);
		rc = -EIO;
		goto out;
	}
	buf = xmalloc(sh->header_len + 1);
	n = pread(fd, buf, sh->header_len, 0);
	if (n != (ssize_t)sh->header_len || fnv1a_bytes(buf, sh->header_len) !=
	    sh->hash) {
		*cause = xasprintf("%s/%s: its header is not the planned one "
		    "(tensors, dtypes, shapes or offsets differ)", out,
		    sh->name);
		rc = -EIO;
	}
out:
	free(buf);
	close(fd);
	return rc;
}

static int
verify_shards(const struct vshard *v, size_t n, int dirfd, const char *name,
    const char *out, char **cause)
{
	struct stat st;
	size_t i;
	int dfd, rc = 0;

	dfd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
	    O_CLOEXEC);
	if (dfd == -1) {
		rc = -errno;
		*cause = xasprintf("%s: %s", out, strerror(-rc));
		return rc;
	}
	for (i = 0; rc == 0 && i < n; i++)
		rc = verify_shard(dfd, out, &v[i], cause);
	if (rc == 0 && n > 1 && (fstatat(dfd,
	    "model.safetensors.index.json", &st, AT_SYMLINK_NOFOLLOW) == -1 ||
	    !S_ISREG(st.st_mode))) {
		*cause = xasprintf("%s has no model.safetensors.index.json",
		    out);
		rc = -EIO;
	}
	if (rc == 0 && (fstatat(dfd, "config.json", &st,
	    AT_SYMLINK_NOFOLLOW) == -1 || !S_ISREG(st.st_mode))) {
		*cause = xasprintf("%s has no config.json", out);
		rc = -EIO;
	}
	close(dfd);
	return rc;
}

static struct vshard *
plan_vshards(const struct graph_plan *p)
{
	struct vshard *v = xcalloc(p->nshards + 1, sizeof *v);
	size_t i;

	for (i = 0; i < p->nshards; i++) {
		v[i].name = p->shards[i].name;
		v[i].size = p->shards[i].size;
		v[i].header_len = p->shards[i].header_len;
		v[i].hash = fnv1a_bytes(p->shards[i].header,
		    p->shards[i].header_len);
	}
	return v;
}

int
graph_plan_verify(const struct graph_plan *p, int dirfd, const char *name,
    const char *out, char **cause)
{
	struct vshard *v = plan_vshards(p);
	int rc = verify_shards(v, p->nshards, dirfd, name, out, cause);

	free(v);
	return rc;
}

char *
graph_plan_verify_spec(const struct graph_plan *p)
{
	struct vshard *v = plan_vshards(p);
	cJSON *a = cJSON_CreateArray(), *o;
	char hash[17];
	size_t i;

	for (i = 0; i < p->nshards; i++) {
		o = cJSON_CreateObject();
		cJSON_AddStringToObject(o, "name", v[i].name);
		cJSON_AddNumberToObject(o, "size", (double)v[i].size);
		cJSON_AddNumberToObject(o, "header_len",
		    (double)v[i].header_len);
		snprintf(hash, sizeof hash, "%016" PRIx64, v[i].hash);
		cJSON_AddStringToObject(o, "header_fnv", hash);
		cJSON_AddItemToArray(a, o);
	}
	free(v);
	return record_json_text(a);
}

/* A shard's name: one path component, as the writer makes them. */
static bool
spec_name_ok(const char *s)
{
	return s[0] != '\0' && s[0] != '.' && strchr(s, '/') == NULL &&
	    strlen(s) < 256;
}

int
graph_verify_spec(const char *spec, int dirfd, const char *name,
    const char *out, char **cause)
{
	cJSON *a = cJSON_Parse(spec), *e, *nm, *sz, *hl, *hf;
	struct vshard *v;
	size_t n, i = 0;
	int rc;

	if (!cJSON_IsArray(a) || (n = (size_t)cJSON_GetArraySize(a)) == 0 ||
	    n > 100000) {
		cJSON_Delete(a);
		*cause = xstrdup("the job's record of its planned output is "
		    "unreadable");
		return -EINVAL;
	}
	v = xcalloc(n, sizeof *v);
	cJSON_ArrayForEach(e, a) {
		nm = cJSON_GetObjectItemCaseSensitive(e, "name");
		sz = cJSON_GetObjectItemCaseSensitive(e, "size");
		hl = cJSON_GetObjectItemCaseSensitive(e, "header_len");
		hf = cJSON_GetObjectItemCaseSensitive(e, "header_fnv");
		if (!cJSON_IsString(nm) || !spec_name_ok(nm->valuestring) ||
		    !cJSON_IsNumber(sz) || sz->valuedouble < 0 ||
		    !cJSON_IsNumber(hl) || hl->valuedouble < 8 ||
		    hl->valuedouble > 100000008.0 || !cJSON_IsString(hf) ||
		    sscanf(hf->valuestring, "%16" SCNx64, &v[i].hash) != 1) {
			free(v);
			cJSON_Delete(a);
			*cause = xstrdup("the job's record of its planned "
			    "output is unreadable");
			return -EINVAL;
		}
		v[i].name = nm->valuestring;
		v[i].size = (uint64_t)sz->valuedouble;
		v[i].header_len = (size_t)hl->valuedouble;
		i++;
	}
	rc = verify_shards(v, n, dirfd, name, out, cause);
	free(v);
	cJSON_Delete(a);
	return rc;
}
