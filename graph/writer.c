/* SPDX-License-Identifier: MIT */
/*
 * writer.c: the staged output directory and its atomic publication.
 *
 * Output is written into a staging directory beside the destination, in
 * the same parent (so the final rename is atomic), all through the parent
 * directory's descriptor: the daemon writes only where its client could.
 * Shard files are created at their final size with their header (the
 * layout is fixed at plan time, so workers can pwrite() any chunk at its
 * place), space is reserved up front so that a full disk fails the job at
 * once rather than at 91%, and every file is fsync'd before it counts.  The
 * small files (index, config.json, tokenizer, model card,
 * mergekit_config.yml) are written last, then the directory is renamed
 * into place (Part A item 15): a failed or cancelled job never leaves
 * something that looks like a finished model.
 *
 * Whose files: the executor calls these with the user's credentials taken
 * on the thread when the daemon is root (cred.c), so the files are the
 * user's, made with the user's umask, and the kernel decides what the
 * user may create, replace and remove.  A file is never written through
 * a name that was already there (a link planted in the staging
 * directory): the name is removed and created anew, exclusively.  A
 * daemon writing as itself for another user replaces only that user's
 * outputs (graph_may_replace).  These functions block on I/O; the
 * executor calls them from pool threads.
 */
#define _GNU_SOURCE
#include <sys/stat.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cJSON.h>

#include "graph-int.h"

char *
writer_staging_name(const char *name)
{
	return xasprintf(".%s.merging-%ld", name, (long)getpid());
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

/*
 * Starts writing back a shard's chunk just written, without waiting for
 * it (the executor, after each write through the page cache, where
 * O_DIRECT is refused: writer_open_direct): otherwise dirty pages pile
 * up to the kernel's threshold and the shard's fsync at the end writes
 * gigabytes while nothing else runs, so that a large merge costs
 * reading plus writing rather than the larger of the two.  Not for
 * files read back soon (extract-lora's spool).  Advice: a failure here
 * is found by the fsync.
 */
void
writer_write_behind(int fd, uint64_t off, size_t len)
{
	(void)sync_file_range(fd, (off_t)off, (off_t)len,
	    SYNC_FILE_RANGE_WRITE);
}

/* rc (a negative errno) of a failed write of the output, said. */
static int
write_failed(int rc, char **cause)
{
	*cause = xasprintf("writing output: %s%s", strerror(-rc),
	    rc == -ENOSPC ? " (the disk is full)" : "");
	return rc;
}

int
writer_pwrite(int fd, const void *buf, size_t len, uint64_t off, char **cause)
{
	int rc;

	if ((rc = write_all(fd, buf, len, off)) != 0)
		return write_failed(rc, cause);
	return 0;
}

/*
 * [off, off + len) of a shard from buf, whose address is congruent to
 * off modulo GRAPH_WRITE_ALIGN (exec-admit.c places it so): the whole
 * pages through direct, the O_DIRECT descriptor of the same file
 * (writer_open_shard), straight from buf; the partial pages at either
 * end, which the neighbouring chunks share, through fd and the page
 * cache, which merges them.  A page is only ever written one way.
 * Where direct refuses (EINVAL: an alignment its file system wants
 * larger), the rest goes through fd.
 */
int
writer_pwrite_direct(int fd, int direct, const void *buf, size_t len,
    uint64_t off, char **cause)
{
	const uint8_t *p = buf;
	uint64_t a = (off + GRAPH_WRITE_ALIGN - 1) / GRAPH_WRITE_ALIGN *
	    GRAPH_WRITE_ALIGN, b = (off + len) / GRAPH_WRITE_ALIGN *
	    GRAPH_WRITE_ALIGN;
	ssize_t n;
	int rc;

	if (direct == -1 || b <= a || ((uintptr_t)p - off) %
	    GRAPH_WRITE_ALIGN != 0)
		return writer_pwrite(fd, buf, len, off, cause);
	if (a > off && (rc = writer_pwrite(fd, p, (size_t)(a - off), off,
	    cause)) != 0)
		return rc;
	while (a < b) {
		n = pwrite(direct, p + (a - off), (size_t)(b - a), (off_t)a);
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0 || n % GRAPH_WRITE_ALIGN != 0) {
			if (n == -1 && errno != EINVAL)
				break;
			/* Refused, or a short write that left the rest
			 * unaligned: the page cache takes the rest. */
			if (n > 0)
				a += (uint64_t)n;
			return writer_pwrite(fd, p + (a - off), (size_t)(off +
			    len - a), a, cause);
		}
		a += (uint64_t)n;
	}
	if (a < b)
		return write_failed(-errno, cause);
	if (off + len > b)
		return writer_pwrite(fd, p + (b - off), (size_t)(off + len - b),
		    b, cause);
	return 0;
}

/* The bits a new file or directory gets: the user's umask applies where
 * the files are the user's (not where a daemon writes them as itself,
 * for the user must still read them through its group). */
static mode_t
writer_mode(mode_t mode, const struct graph_cred *cred)
{
	if (cred != NULL && cred_mode(cred) != CRED_EMULATE)
		mode &= ~(mode_t)cred->umask;
	return mode;
}

/* Creates name in the staging directory, empty, for writing. */
int
writer_create(int dfd, const char *name, const struct graph_cred *cred,
    char **cause)
{
	int fd;

	/* Whatever is at name (a half-written shard of an interrupted run,
	 * or a link somebody planted) goes; the file is always new. */
	if (unlinkat(dfd, name, 0) == -1 && errno != ENOENT) {
		*cause = xasprintf("cannot replace %s: %s", name,
		    strerror(errno));
		return -errno;
	}
	fd = openat(dfd, name, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW |
	    O_CLOEXEC, writer_mode(0644, cred));
	if (fd == -1) {
		*cause = xasprintf("cannot create %s: %s", name,
		    strerror(errno));
		return -errno;
	}
	return fd;
}

/* Writes a small file in the staging directory, durably. */
int
writer_file(int dfd, const char *name, const void *data, size_t len,
    const struct graph_cred *cred, char **cause)
{
	int fd, rc = 0;

	if ((fd = writer_create(dfd, name, cred, cause)) < 0)
		return fd;
	if ((rc = write_all(fd, data, len, 0)) == 0 && fsync(fd) == -1)
		rc = -errno;
	close(fd);
	if (rc != 0)
		*cause = xasprintf("%s: %s", name, strerror(-rc));
	return rc;
}

/* May cred create and remove entries in dirfd?  0, or why not. */
int
graph_dir_writable(int dirfd, const struct graph_cred *cred, char **cause)
{
	struct cred_saved saved;
	struct stat st;
	int rc = 0;

	switch (cred_mode(cred)) {
	case CRED_EMULATE:
		if (fstat(dirfd, &st) == -1 || !graph_cred_allows(cred, &st,
		    3))
			rc = -EACCES;
		break;
	case CRED_SWITCH:
		if ((rc = cred_enter(cred, &saved, cause)) != 0)
			return rc;
		if (faccessat(dirfd, ".", W_OK | X_OK, AT_EACCESS) == -1)
			rc = -errno;
		cred_leave(&saved);
		break;
	case CRED_SELF:
		break;
	}
	if (rc != 0)
		*cause = xasprintf("uid %u may not write in the output's "
		    "directory", (unsigned)cred->uid);
	return rc;
}

/*
 * Opens (creating it if needed) the staging directory beneath the
 * destination's parent, after checking that the user may write there.
 * One that exists already (a resumed job's) must be ours: the user's
 * where we act as the user, else the daemon's.
 */
int
writer_stage_open(int parent, const char *staging,
    const struct graph_cred *cred, int *fdp, char **cause)
{
	struct stat st;
	uid_t owner;
	int fd, rc;

	if ((rc = graph_dir_writable(parent, cred, cause)) != 0)
		return rc;
	if (mkdirat(parent, staging, writer_mode(0755, cred)) == -1 &&
	    errno != EEXIST) {
		*cause = xasprintf("cannot create %s: %s", staging,
		    strerror(errno));
		return -errno;
	}
	fd = openat(parent, staging, O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
	    O_CLOEXEC);
	if (fd == -1) {
		*cause = xasprintf("cannot open %s: %s", staging,
		    strerror(errno));
		return -errno;
	}
	owner = cred_mode(cred) == CRED_SWITCH ? cred->uid :
	    geteuid();
	if (fstat(fd, &st) == -1 || st.st_uid != owner) {
		*cause = xasprintf("%s belongs to uid %u, not to uid %u; "
		    "remove it", staging, (unsigned)st.st_uid,
		    (unsigned)owner);
		close(fd);
		return -EPERM;
	}
	*fdp = fd;
	return 0;
}

/*
 * A second descriptor of the shard name just created as fd, opened with
 * O_DIRECT, or -1 where the file system refuses it (tmpfs, some FUSE):
 * the shard is then written through the page cache only.  Why: writing
 * through the page cache costs a copy into freshly allocated cache
 * pages, which on the VMs this was measured on ran at 0.4 to 1.3 GB/s
 * and was most of a linear merge's CPU (a 1.3 GB output: 2.2 to 3.3 s
 * of system time, against 0.7 s direct; docs/methods.md); and an output
 * of tens of gigabytes would push out of the cache the models the box's
 * other users are reading.  Opened by name in the staging directory,
 * which only this job writes, and checked to be the same file.
 */
static int
writer_open_direct(int dfd, const char *name, int fd)
{
	struct stat a, b;
	int direct;

	direct = openat(dfd, name, O_WRONLY | O_DIRECT | O_NOFOLLOW |
	    O_CLOEXEC);
	if (direct == -1)
		return -1;
	if (fstat(fd, &a) == -1 || fstat(direct, &b) == -1 ||
	    a.st_dev != b.st_dev || a.st_ino != b.st_ino) {
		close(direct);
		return -1;
	}
	return direct;
}

/*
 * Creates a shard in the staging directory at its full size, with the
 * space reserved and the header written; *directp its O_DIRECT
 * descriptor, or -1 (writer_open_direct).
 */
int
writer_open_shard(int dfd, const struct plan_shard *sh,
    const struct graph_cred *cred, int *fdp, int *directp, char **cause)
{
	int fd, rc;

	if ((fd = writer_create(dfd, sh->name, cred, cause)) < 0)
		return fd;
	rc = fallocate(fd, 0, 0, (off_t)sh->size);
	if (rc == -1 && (errno == EOPNOTSUPP || errno == ENOSYS))
		rc = ftruncate(fd, (off_t)sh->size);
	if (rc == -1) {
		rc = -errno;
		*cause = xasprintf("cannot reserve %" PRIu64 " bytes for %s: "
		    "%s", sh->size, sh->name, strerror(errno));
		goto fail;
	}
	if ((rc = write_all(fd, sh->header, sh->header_len, 0)) != 0) {
		*cause = xasprintf("%s: %s", sh->name, strerror(-rc));
		goto fail;
	}
	*fdp = fd;
	*directp = writer_open_direct(dfd, sh->name, fd);
	return 0;
fail:
	close(fd);
	return rc;
}

static int
writer_index(const struct graph_plan *p, int dfd,
    const struct graph_cred *cred, char **cause)
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
	rc = writer_file(dfd, "model.safetensors.index.json", x.data, x.len,
	    cred, cause);
	xbuf_free(&x);
	return rc;
}

/* config.json: the donor's text with a few values replaced. */
static int
writer_config(const struct graph_plan *p, int dfd,
    const struct graph_cred *cred, char **cause)
{
	const struct model *donor = p->models[p->donor].m;
	const struct model *am = p->models[p->arch_model].m;
	const struct arch_module *mod;
	const char **keys, **vals;
	char *arch, *mt = NULL, **layers, *dt = NULL, *vocab = NULL, *text;
	struct xbuf x = { 0 };
	size_t n = 0, i, nl = 0;
	int rc;

	keys = xcalloc(6 + p->arch.nmod, sizeof *keys);
	vals = xcalloc(6 + p->arch.nmod, sizeof *vals);
	layers = xcalloc(p->arch.nmod + 1, sizeof *layers);

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
	/* Each sliced module's count, under its own key (nested ones such
	 * as text_config.num_hidden_layers included). */
	for (i = 0; i < p->arch.nmod; i++) {
		mod = &p->arch.mod[i];
		if (p->out_layers[i] < 0 || (mod->layers_key == NULL &&
		    p->arch.nmod > 1))
			continue;
		layers[nl] = xasprintf("%" PRId64, p->out_layers[i]);
		keys[n] = mod->layers_key ? mod->layers_key :
		    donor->layers_key ? donor->layers_key : "num_hidden_layers";
		vals[n++] = layers[nl++];
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
	if (p->untied) {
		keys[n] = "tie_word_embeddings";
		vals[n++] = "false";
	}
	if (p->vocab_key != NULL) {
		vocab = xasprintf("%" PRId64, p->out_vocab);
		keys[n] = p->vocab_key;
		vals[n++] = vocab;
	}
	text = jsonpatch_apply(donor->config_text, strlen(donor->config_text),
	    keys, vals, n);
	rc = writer_file(dfd, "config.json", text, strlen(text), cred, cause);
	free(text);
	free(arch);
	free(mt);
	for (i = 0; i < nl; i++)
		free(layers[i]);
	free(layers);
	free(dt);
	free(vocab);
	free(keys);
	free(vals);
	return rc;
}

/* Those of the files that the model has, copied unchanged. */
static int
writer_copy(const struct model *donor, const char *const *files, size_t n,
    int dfd, const struct graph_cred *cred, char **cause)
{
	char *buf;
	size_t i, len;
	int rc = 0;

	for (i = 0; i < n && rc == 0; i++) {
		if (!model_has(donor, files[i]))
			continue;
		/* Tokenizer and processor files are a few MB at most. */
		if ((rc = model_read(donor, files[i], 512u << 20, &buf,
		    &len, cause)) != 0)
			break;
		rc = writer_file(dfd, files[i], buf, len, cred, cause);
		free(buf);
	}
	return rc;
}

/* A JSON text with its chat_template set to the plan's, if any. */
static char *
writer_with_template(const struct graph_plan *p, const char *text)
{
	const char *key = "chat_template";
	struct xbuf v = { 0 };
	char *value, *out;

	if (p->chat_template == NULL)
		return xstrdup(text);
	graph_json_string(&v, p->chat_template);
	value = xbuf_take(&v);
	out = jsonpatch_apply(text, strlen(text), &key,
	    (const char *const *)&value, 1);
	free(value);
	return out;
}

/* MERGEKIT.md Part B 2.9: the donor's tokenizer files, when it has one. */
/*
 * Every file an output may take from an input besides its weights and
 * config.json (which the stage record hashes): the lists below and
 * writer_tagalong's are drawn from it.  model_list_files records these
 * as inputs, so that a changed tokenizer reruns a stage.
 */
const char *const writer_side_files[] = { "tokenizer_config.json",
	"special_tokens_map.json", "tokenizer.json", "tokenizer.model",
	"added_tokens.json", "merges.txt", "vocab.json", "chat_template.jinja",
	"generation_config.json", "chat_template.json",
	"preprocessor_config.json", "processor_config.json",
	"video_preprocessor_config.json" };
const size_t writer_nside_files = sizeof writer_side_files /
    sizeof *writer_side_files;

bool
graph_is_side_file(const char *path)
{
	const char *base;
	size_t i;

	if (path == NULL)
		return false;
	base = strrchr(path, '/') != NULL ? strrchr(path, '/') + 1 : path;
	for (i = 0; i < writer_nside_files; i++)
		if (strcmp(base, writer_side_files[i]) == 0)
			return true;
	return false;
}

static int
writer_tokenizer(const struct graph_plan *p, int dfd,
    const struct graph_cred *cred, char **cause)
{
	static const char *const files[] = { "tokenizer_config.json",
		"special_tokens_map.json", "tokenizer.json", "tokenizer.model",
		"added_tokens.json", "merges.txt", "vocab.json",
		"chat_template.jinja", "generation_config.json",
		"chat_template.json" };
	/* With a chat template: the same but the three that carry one. */
	static const char *const but_template[] = {
		"special_tokens_map.json", "tokenizer.json", "tokenizer.model",
		"added_tokens.json", "merges.txt", "vocab.json",
		"generation_config.json" };
	const struct model *donor = p->models[p->donor].m;
	char *text;
	int rc;

	if (!model_has(donor, "tokenizer_config.json") ||
	    !(model_has(donor, "tokenizer.json") ||
	    model_has(donor, "tokenizer.model")))
		return 0;
	if (p->chat_template == NULL)
		return writer_copy(donor, files, sizeof files / sizeof *files,
		    dfd, cred, cause);
	if ((rc = writer_copy(donor, but_template, sizeof but_template /
	    sizeof *but_template, dfd, cred, cause)) != 0)
		return rc;
	/* The donor's tokenizer_config.json as planned, its template set
	 * (plan-chat.c). */
	text = writer_with_template(p, p->tokenizer_config);
	rc = writer_file(dfd, "tokenizer_config.json", text, strlen(text),
	    cred, cause);
	free(text);
	return rc;
}

/*
 * A tokenizer merge's files (plan-tokenizer.c): the source model's
 * tokenizer files, with tokenizer.json and tokenizer_config.json as the
 * plan changed them.  Written whatever --copy-tokenizer says, as mergekit
 * saves a tokenizer it built.
 */
static int
writer_vocab(const struct graph_plan *p, int dfd,
    const struct graph_cred *cred, char **cause)
{
	static const char *const files[] = { "special_tokens_map.json",
		"tokenizer.model", "added_tokens.json", "merges.txt",
		"vocab.json", "generation_config.json" };
	static const char *const templates[] = { "chat_template.jinja",
		"chat_template.json" };
	const struct plan_vocab *v = p->vocab;
	const struct model *from = p->models[v->from].m;
	char *text;
	int rc;

	if ((rc = writer_copy(from, files, sizeof files / sizeof *files, dfd,
	    cred, cause)) != 0)
		return rc;
	if (p->chat_template == NULL && (rc = writer_copy(from, templates,
	    sizeof templates / sizeof *templates, dfd, cred, cause)) != 0)
		return rc;
	if (v->tokenizer_json != NULL)
		rc = writer_file(dfd, "tokenizer.json", v->tokenizer_json,
		    strlen(v->tokenizer_json), cred, cause);
	else
		rc = writer_copy(from, (const char *const[]){ "tokenizer.json" },
		    1, dfd, cred, cause);
	if (rc != 0 || v->tokenizer_config == NULL)
		return rc;
	text = writer_with_template(p, v->tokenizer_config);
	rc = writer_file(dfd, "tokenizer_config.json", text, strlen(text),
	    cred, cause);
	free(text);
	return rc;
}

/*
 * MERGEKIT.md Part B 2.1 step 12: the files a vision-language model's
 * processor needs (mergekit's "tagalong" files), from the donor whenever
 * it has them, tokenizer or not.
 */
static int
writer_tagalong(const struct graph_plan *p, int dfd,
    const struct graph_cred *cred, char **cause)
{
	static const char *const files[] = { "preprocessor_config.json",
		"processor_config.json", "video_preprocessor_config.json" };

	return writer_copy(p->models[p->donor].m, files,
	    sizeof files / sizeof *files, dfd, cred, cause);
}

int
writer_finish(const struct graph_plan *p, int dfd,
    const struct graph_cred *cred, const char *title, char **cause)
{
	char *card;
	int rc;

	if (p->nshards > 1 && (rc = writer_index(p, dfd, cred, cause)) != 0)
		return rc;
	if ((rc = writer_config(p, dfd, cred, cause)) != 0)
		return rc;
	if (p->vocab != NULL)
		rc = writer_vocab(p, dfd, cred, cause);
	else if (p->opts.merge.copy_tokenizer)
		rc = writer_tokenizer(p, dfd, cred, cause);
	if (rc != 0)
		return rc;
	if ((rc = writer_tagalong(p, dfd, cred, cause)) != 0)
		return rc;
	if (p->opts.merge.model_card) {
		card = card_build(p, title);
		rc = writer_file(dfd, "README.md", card, strlen(card), cred,
		    cause);
		free(card);
		if (rc != 0)
			return rc;
		if ((rc = writer_file(dfd, "mergekit_config.yml",
		    p->config_text, strlen(p->config_text), cred, cause)) != 0)
			return rc;
	}
	fsync(dfd);
	return 0;
}

/* Every file in the directory dfd gets mode (whatever the umask was). */
static int
writer_chmod_all(int dfd, mode_t mode, char **cause)
{
	struct dirent *e;
	DIR *dir;
	int fd;

	if ((fd = openat(dfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC)) == -1 ||
	    (dir = fdopendir(fd)) == NULL) {
		if (fd != -1)
			close(fd);
		*cause = xasprintf("cannot list a directory: %s",
		    strerror(errno));
		return -errno;
	}
	while ((e = readdir(dir)) != NULL)
		if (e->d_type == DT_REG)
			fchmodat(dfd, e->d_name, mode, 0);
	closedir(dir);
	return 0;
}

/*
 * The planned output without its weights, in dfd/name (a new directory):
 * each shard at its size with its header and holes for the data (no
 * space used), and every small file as writer_finish writes it.  A later
 * stage of a pipeline is planned against this before the stage that
 * writes it runs (pipeline-plan.c).  The caller's rights; no user's.
 */
int
graph_plan_skeleton(const struct graph_plan *p, int dfd, const char *name,
    char **cause)
{
	size_t i;
	int d, fd, rc = 0;

	/* Searchable and readable by the user a daemon plans for, whom it
	 * may only emulate: the scratch directory above is private. */
	if (mkdirat(dfd, name, 0711) == -1 || fchmodat(dfd, name, 0711,
	    0) == -1) {
		*cause = xasprintf("cannot create %s: %s", name,
		    strerror(errno));
		return -errno;
	}
	d = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
	    O_CLOEXEC);
	if (d == -1) {
		*cause = xasprintf("cannot open %s: %s", name,
		    strerror(errno));
		return -errno;
	}
	for (i = 0; i < p->nshards && rc == 0; i++) {
		if ((fd = writer_create(d, p->shards[i].name, NULL,
		    cause)) < 0) {
			rc = fd;
			break;
		}
		if (fchmod(fd, 0644) == -1 ||
		    ftruncate(fd, (off_t)p->shards[i].size) == -1) {
			rc = -errno;
			*cause = xasprintf("%s: %s", p->shards[i].name,
			    strerror(errno));
		} else if ((rc = write_all(fd, p->shards[i].header,
		    p->shards[i].header_len, 0)) != 0) {
			*cause = xasprintf("%s: %s", p->shards[i].name,
			    strerror(-rc));
		}
		close(fd);
	}
	if (rc == 0)
		rc = writer_finish(p, d, NULL, name, cause);
	if (rc == 0)
		rc = writer_chmod_all(d, 0644, cause);
	close(d);
	return rc;
}

/* Is st something r->cred may replace?  (See struct graph_replace.) */
static bool
writer_replaceable(const struct graph_replace *r, const struct stat *st)
{
	size_t i;

	if (cred_mode(r->cred) != CRED_EMULATE ||
	    r->cred->uid == 0 || st->st_uid == r->cred->uid)
		return true;
	for (i = 0; i < r->nown; i++)
		if (r->own[i].dev == (uint64_t)st->st_dev &&
		    r->own[i].ino == (uint64_t)st->st_ino)
			return true;
	return false;
}

static char *
writer_not_yours(const char *name, const struct stat *st,
    const struct graph_replace *r)
{
	return xasprintf("%s belongs to uid %u and is none of uid %u's "
	    "outputs; --force replaces only your own", name,
	    (unsigned)st->st_uid, (unsigned)r->cred->uid);
}

/*
 * Would r allow replacing name in dirfd?  Where the kernel checks with the
 * user's rights this only answers early what it will say (a sticky
 * directory keeps other users' entries); the publish decides.
 */
int
graph_may_replace(int dirfd, const char *name, const struct graph_replace *r,
    char **cause)
{
	struct stat st, dst;

	if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == -1)
		return 0;	/* nothing there (yet) */
	if (!writer_replaceable(r, &st)) {
		*cause = writer_not_yours(name, &st, r);
		return -EPERM;
	}
	if (cred_mode(r->cred) == CRED_SWITCH &&
	    r->cred->uid != 0 && fstat(dirfd, &dst) == 0 &&
	    (dst.st_mode & S_ISVTX) && st.st_uid != r->cred->uid &&
	    dst.st_uid != r->cred->uid) {
		*cause = xasprintf("%s belongs to uid %u, in a sticky "
		    "directory: uid %u may not replace it", name,
		    (unsigned)st.st_uid, (unsigned)r->cred->uid);
		return -EPERM;
	}
	return 0;
}

/*
 * Moves the staging directory to the destination, both in parent.
 * Without replace (no --force), an existing destination is refused
 * (RENAME_NOREPLACE, so a directory that appears meanwhile is not
 * clobbered either); with it, the two are exchanged atomically and the
 * old one removed.  Where the daemon writes as itself for another user,
 * what the exchange brought back is checked, and exchanged back if it
 * was not the user's to replace: a check before the exchange could be
 * raced by a rename.
 */
int
writer_publish(int parent, const char *staging, const char *name,
    const struct graph_replace *replace, char **cause)
{
	struct stat st;
	int rc;

	if (renameat2(parent, staging, parent, name, RENAME_NOREPLACE) == 0) {
		fsync(parent);
		return 0;
	}
	if (errno != EEXIST || replace == NULL) {
		rc = -errno;
		*cause = rc == -EEXIST ? xasprintf("%s already exists; use "
		    "--force to replace it", name) : xasprintf("cannot move "
		    "%s to %s: %s", staging, name, strerror(errno));
		return rc;
	}
	if (renameat2(parent, staging, parent, name, RENAME_EXCHANGE) != 0) {
		rc = -errno;
		*cause = xasprintf("cannot replace %s: %s%s", name,
		    strerror(errno), errno == EPERM || errno == EACCES ?
		    " (it is not yours to replace)" : "");
		return rc;
	}
	if (fstatat(parent, staging, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
	    !writer_replaceable(replace, &st)) {
		*cause = writer_not_yours(name, &st, replace);
		if (renameat2(parent, staging, parent, name,
		    RENAME_EXCHANGE) != 0) {
			free(*cause);
			*cause = xasprintf("%s was not yours to replace, and "
			    "putting it back failed (%s): it is at %s",
			    name, strerror(errno), staging);
		}
		return -EPERM;
	}
	fsync(parent);
	writer_remove_tree(parent, staging);	/* now the old output */
	return 0;
}

/* Removes name beneath dfd, recursively, never following symlinks. */
void
writer_remove_tree(int dfd, const char *name)
{
	struct dirent *e;
	DIR *d;
	int fd;

	fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
	    O_CLOEXEC);
	if (fd == -1) {
		unlinkat(dfd, name, 0);
		return;
	}
	if ((d = fdopendir(fd)) == NULL) {
		close(fd);
		return;
	}
	while ((e = readdir(d)) != NULL) {
		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		if (unlinkat(fd, e->d_name, 0) == -1 && (errno == EISDIR ||
		    errno == EPERM))
			writer_remove_tree(fd, e->d_name);
	}
	closedir(d);
	unlinkat(dfd, name, AT_REMOVEDIR);
}

void
graph_remove_tree(int dfd, const char *name, const struct graph_cred *cred)
{
	struct cred_saved saved;
	char *cause = NULL;

	if (cred_enter(cred, &saved, &cause) != 0) {
		free(cause);
		return;
	}
	writer_remove_tree(dfd, name);
	cred_leave(&saved);
}
