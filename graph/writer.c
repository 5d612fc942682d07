/* SPDX-License-Identifier: MIT */
/*
 * writer.c: the staged output directory and its atomic publication.
 *
 * Output is written into a staging directory beside the destination (same
 * file system, so the final rename is atomic): shard files are created at
 * their final size with their header (the layout is fixed at plan time, so
 * workers can pwrite() any chunk at its place), space is reserved up front
 * so that a full disk fails the job at once rather than at 91%, and every
 * file is fsync'd before it counts.  The small files (index, config.json,
 * tokenizer, model card, mergekit_config.yml) are written last, then the
 * directory is renamed into place (Part A item 15): a failed or cancelled
 * job never leaves something that looks like a finished model.  These
 * functions block on I/O; the executor calls them from pool threads.
 */
#define _GNU_SOURCE
#include <sys/stat.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cJSON.h>

#include "graph-int.h"

char *
writer_staging_name(const char *out)
{
	char *a = xstrdup(out), *b = xstrdup(out), *r;

	r = xasprintf("%s/.%s.merging-%ld", dirname(a), basename(b),
	    (long)getpid());
	free(a);
	free(b);
	return r;
}

static int
write_all(int fd, const void *buf, size_t len, uint64_t off)
{
	const char *p = buf;
	ssize_t n;

	while (len > 0) {
		n = pwrite(fd, p, len, (off_t)off);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1)
			return -errno;
		if (n == 0)
			return -EIO;
		p += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

int
writer_pwrite(int fd, const void *buf, size_t len, uint64_t off, char **cause)
{
	int rc;

	if ((rc = write_all(fd, buf, len, off)) != 0)
		*cause = xasprintf("writing output: %s%s", strerror(-rc),
		    rc == -ENOSPC ? " (the disk is full)" : "");
	return rc;
}

/* Writes a small file in the staging directory, durably. */
static int
writer_file(const char *dir, const char *name, const void *data, size_t len,
    char **cause)
{
	char *path = xasprintf("%s/%s", dir, name);
	int fd, rc = 0;

	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd == -1) {
		rc = -errno;
	} else {
		if ((rc = write_all(fd, data, len, 0)) == 0 && fsync(fd) == -1)
			rc = -errno;
		close(fd);
	}
	if (rc != 0)
		*cause = xasprintf("%s: %s", path, strerror(-rc));
	free(path);
	return rc;
}

int
writer_stage_create(const struct graph_plan *p, const char *dir,
    const bool *done, char **cause)
{
	(void)p;
	(void)done;
	if (mkdir(dir, 0755) == -1 && errno != EEXIST) {
		int rc = -errno;
		*cause = xasprintf("cannot create %s: %s", dir, strerror(errno));
		return rc;
	}
	return 0;
}

/*
 * Opens a shard for writing.  A new one is created at its full size, with
 * the space reserved and the header written.  With resume set, an existing
 * file is reused as is (its completed tensors are not rewritten).
 */
int
writer_open_shard(const char *dir, const struct plan_shard *sh, bool resume,
    int *fdp, char **cause)
{
	char *path = xasprintf("%s/%s", dir, sh->name);
	int fd, rc;

	fd = open(path, O_RDWR | O_CREAT | (resume ? 0 : O_TRUNC) | O_CLOEXEC,
	    0644);
	if (fd == -1) {
		rc = -errno;
		*cause = xasprintf("cannot create %s: %s", path,
		    strerror(errno));
		free(path);
		return rc;
	}
	rc = fallocate(fd, 0, 0, (off_t)sh->size);
	if (rc == -1 && (errno == EOPNOTSUPP || errno == ENOSYS))
		rc = ftruncate(fd, (off_t)sh->size);
	if (rc == -1) {
		rc = -errno;
		*cause = xasprintf("cannot reserve %" PRIu64 " bytes for %s: "
		    "%s", sh->size, path, strerror(errno));
		goto fail;
	}
	if ((rc = write_all(fd, sh->header, sh->header_len, 0)) != 0) {
		*cause = xasprintf("%s: %s", path, strerror(-rc));
		goto fail;
	}
	free(path);
	*fdp = fd;
	return 0;
fail:
	close(fd);
	free(path);
	return rc;
}

static int
writer_index(const struct graph_plan *p, const char *dir, char **cause)
{
	struct xbuf x = { 0 };
	size_t i;
	int rc;

	/* mergekit's layout: 2-space indent, write order, no newline. */
	xbuf_printf(&x, "{\n  \"metadata\": {\n    \"total_size\": %" PRIu64
	    ",\n    \"mergekit_version\": \"0.1.4\"\n  },\n  \"weight_map\": {",
	    p->total_out);
	for (i = 0; i < p->ntensors; i++) {
		xbuf_printf(&x, "%s\n    ", i ? "," : "");
		graph_json_string(&x, p->tensors[i].name);
		xbuf_add(&x, ": ", 2);
		graph_json_string(&x, p->shards[p->tensors[i].shard].name);
	}
	xbuf_add(&x, "\n  }\n}", 6);
	rc = writer_file(dir, "model.safetensors.index.json", x.data, x.len,
	    cause);
	xbuf_free(&x);
	return rc;
}

/* config.json: the donor's text with a few values replaced. */
static int
writer_config(const struct graph_plan *p, const char *dir, char **cause)
{
	const struct graph_model *donor = p->models[p->donor].m;
	const struct graph_model *am = p->models[p->arch_model].m;
	const char *keys[5], *vals[5];
	char *arch, *mt = NULL, *layers = NULL, *dt = NULL, *text;
	struct xbuf x = { 0 };
	size_t n = 0;
	int rc;

	xbuf_add(&x, "[\n    ", 6);
	graph_json_string(&x, am->arch);
	xbuf_add(&x, "\n  ]", 4);
	arch = xbuf_take(&x);
	keys[n] = "architectures";
	vals[n++] = arch;
	if (am->model_type != NULL) {
		graph_json_string(&x, am->model_type);
		mt = xbuf_take(&x);
		keys[n] = "model_type";
		vals[n++] = mt;
	}
	if (p->out_layers >= 0) {
		layers = xasprintf("%" PRId64, p->out_layers);
		keys[n] = am->layers_key ? am->layers_key :
		    donor->layers_key ? donor->layers_key : "num_hidden_layers";
		vals[n++] = layers;
	}
	if (p->cfg_dtype != GRAPH_DT_NONE) {
		dt = xasprintf("\"%s\"", graph_dtype_hf_name(p->cfg_dtype));
		keys[n] = "torch_dtype";
		vals[n++] = dt;
		if (cJSON_GetObjectItemCaseSensitive(donor->config, "dtype")) {
			keys[n] = "dtype";
			vals[n++] = dt;
		}
	}
	text = graph_json_patch(donor->config_text, strlen(donor->config_text),
	    keys, vals, n);
	rc = writer_file(dir, "config.json", text, strlen(text), cause);
	free(text);
	free(arch);
	free(mt);
	free(layers);
	free(dt);
	return rc;
}

static int
copy_file(const char *from, const char *dir, const char *name, char **cause)
{
	char *buf = NULL;
	size_t len;
	int rc;

	/* Tokenizer files are a few MB at most. */
	if ((rc = graph_read_file(from, 512u << 20, &buf, &len)) != 0) {
		*cause = xasprintf("%s: %s", from, strerror(-rc));
		return rc;
	}
	rc = writer_file(dir, name, buf, len, cause);
	free(buf);
	return rc;
}

/* MERGEKIT.md Part B 2.9: the donor's tokenizer files, when it has one. */
static int
writer_tokenizer(const struct graph_plan *p, const char *dir, char **cause)
{
	static const char *const files[] = { "tokenizer_config.json",
		"special_tokens_map.json", "tokenizer.json", "tokenizer.model",
		"added_tokens.json", "merges.txt", "vocab.json",
		"chat_template.jinja", "generation_config.json",
		"chat_template.json", "video_preprocessor_config.json" };
	const char *src = p->models[p->donor].m->dir;
	struct stat st;
	char *path;
	size_t i;
	int rc = 0;
	bool has_cfg, has_tok;

	path = xasprintf("%s/tokenizer_config.json", src);
	has_cfg = stat(path, &st) == 0;
	free(path);
	path = xasprintf("%s/tokenizer.json", src);
	has_tok = stat(path, &st) == 0;
	free(path);
	path = xasprintf("%s/tokenizer.model", src);
	has_tok |= stat(path, &st) == 0;
	free(path);
	if (!has_cfg || !has_tok)
		return 0;
	for (i = 0; i < sizeof files / sizeof *files && rc == 0; i++) {
		path = xasprintf("%s/%s", src, files[i]);
		if (stat(path, &st) == 0 && S_ISREG(st.st_mode))
			rc = copy_file(path, dir, files[i], cause);
		free(path);
	}
	return rc;
}

int
writer_finish(const struct graph_plan *p, const char *dir, char **cause)
{
	char *card;
	int rc, dfd;

	if (p->nshards > 1 && (rc = writer_index(p, dir, cause)) != 0)
		return rc;
	if ((rc = writer_config(p, dir, cause)) != 0)
		return rc;
	if (p->opts.copy_tokenizer && (rc = writer_tokenizer(p, dir,
	    cause)) != 0)
		return rc;
	if (p->opts.model_card) {
		card = graph_card_build(p, dir);
		rc = writer_file(dir, "README.md", card, strlen(card), cause);
		free(card);
		if (rc != 0)
			return rc;
		if ((rc = writer_file(dir, "mergekit_config.yml",
		    p->config_text, strlen(p->config_text), cause)) != 0)
			return rc;
	}
	if ((dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) != -1) {
		fsync(dfd);
		close(dfd);
	}
	return 0;
}

static int
fsync_parent(const char *path)
{
	char *a = xstrdup(path);
	int fd;

	fd = open(dirname(a), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	free(a);
	if (fd == -1)
		return -errno;
	fsync(fd);
	close(fd);
	return 0;
}

/*
 * Moves the staging directory to the destination.  Without force, an
 * existing destination is refused (RENAME_NOREPLACE, so a directory that
 * appears meanwhile is not clobbered either); with force, the two are
 * exchanged atomically and the old one removed.
 */
int
writer_publish(const char *staging, const char *out, bool force,
    char **cause)
{
	int rc;

	if (renameat2(AT_FDCWD, staging, AT_FDCWD, out, RENAME_NOREPLACE) == 0)
		return fsync_parent(out), 0;
	if (errno != EEXIST || !force) {
		rc = -errno;
		*cause = rc == -EEXIST ? xasprintf("%s already exists; use "
		    "--force to replace it", out) : xasprintf("cannot move "
		    "%s to %s: %s", staging, out, strerror(errno));
		return rc;
	}
	if (renameat2(AT_FDCWD, staging, AT_FDCWD, out, RENAME_EXCHANGE) != 0) {
		rc = -errno;
		*cause = xasprintf("cannot replace %s: %s", out,
		    strerror(errno));
		return rc;
	}
	fsync_parent(out);
	writer_remove_dir(staging);	/* now holds the old output */
	return 0;
}

/* Removes a directory tree we made (regular files, one level deep). */
void
writer_remove_dir(const char *dir)
{
	struct dirent *e;
	DIR *d;
	char *path;

	if ((d = opendir(dir)) == NULL) {
		unlink(dir);
		return;
	}
	while ((e = readdir(d)) != NULL) {
		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		path = xasprintf("%s/%s", dir, e->d_name);
		if (e->d_type == DT_DIR)
			writer_remove_dir(path);
		else
			unlink(path);
		free(path);
	}
	closedir(d);
	rmdir(dir);
}
