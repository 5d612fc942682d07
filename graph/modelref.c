/* SPDX-License-Identifier: MIT */
/*
 * modelref.c: model references ("path[@rev][+lora[@rev]]") and where they
 * live on disk.
 *
 * A reference resolves to a local directory when one exists at its path
 * (relative paths are taken from the submitter's working directory, not the
 * daemon's); otherwise an "org/name" reference is looked up, offline, in the
 * Hugging Face cache layout: <cache>/models--org--name/refs/<rev> holds a
 * commit hash naming snapshots/<hash>/, and a 40-hex revision names the
 * snapshot directly.  Nothing is ever downloaded.  When nothing is found,
 * the error lists every place that was tried.  A reference's LoRA
 * adapter ("+lora") is resolved the same way, on its own.  Pure functions
 * of their arguments and the file system; safe on any thread.
 */
#include <sys/stat.h>

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "graph-int.h"

static int
ref_split_rev(const char *s, size_t len, char **path, char **rev,
    char **cause)
{
	const char *at = memchr(s, '@', len);

	if (at != NULL && memchr(at + 1, '@', len - (size_t)(at - s) - 1)) {
		*cause = xasprintf("invalid model reference '%.*s': more than "
		    "one '@'", (int)len, s);
		return -EINVAL;
	}
	if (at == NULL) {
		*path = xstrndup(s, len);
		*rev = NULL;
	} else {
		*path = xstrndup(s, (size_t)(at - s));
		*rev = xstrndup(at + 1, len - (size_t)(at - s) - 1);
	}
	if (**path == '\0' || (*rev != NULL && **rev == '\0')) {
		*cause = xasprintf("invalid model reference '%.*s': empty %s",
		    (int)len, s, **path == '\0' ? "path" : "revision");
		free(*path);
		free(*rev);
		*path = *rev = NULL;
		return -EINVAL;
	}
	return 0;
}

int
graph_ref_parse(const char *s, struct graph_ref *r, char **cause)
{
	const char *plus;

	memset(r, 0, sizeof *r);
	plus = strchr(s, '+');
	if (plus != NULL && strchr(plus + 1, '+') != NULL) {
		*cause = xasprintf("cannot parse model reference '%s': more "
		    "than one '+'", s);
		return -EINVAL;
	}
	if (ref_split_rev(s, plus ? (size_t)(plus - s) : strlen(s), &r->path,
	    &r->rev, cause) != 0)
		return -EINVAL;
	if (plus == NULL)
		return 0;
	if (ref_split_rev(plus + 1, strlen(plus + 1), &r->lora, &r->lora_rev,
	    cause) != 0) {
		graph_ref_fini(r);
		return -EINVAL;
	}
	return 0;
}

void
graph_ref_fini(struct graph_ref *r)
{
	free(r->path);
	free(r->rev);
	free(r->lora);
	free(r->lora_rev);
	free(r->override_arch);
	memset(r, 0, sizeof *r);
}

char *
graph_ref_str(const struct graph_ref *r)
{
	return xasprintf("%s%s%s%s%s%s%s", r->path, r->rev ? "@" : "",
	    r->rev ? r->rev : "", r->lora ? "+" : "", r->lora ? r->lora : "",
	    r->lora_rev ? "@" : "", r->lora_rev ? r->lora_rev : "");
}

bool
graph_ref_eq(const struct graph_ref *a, const struct graph_ref *b)
{
#define SEQ(x, y) ((x) == NULL ? (y) == NULL : (y) != NULL && !strcmp(x, y))
	return SEQ(a->path, b->path) && SEQ(a->rev, b->rev) &&
	    SEQ(a->lora, b->lora) && SEQ(a->lora_rev, b->lora_rev) &&
	    SEQ(a->override_arch, b->override_arch);
#undef SEQ
}

void
graph_ref_copy(struct graph_ref *dst, const struct graph_ref *src)
{
#define DUP(x) ((x) ? xstrdup(x) : NULL)
	dst->path = DUP(src->path);
	dst->rev = DUP(src->rev);
	dst->lora = DUP(src->lora);
	dst->lora_rev = DUP(src->lora_rev);
	dst->override_arch = DUP(src->override_arch);
	dst->mark = src->mark;
#undef DUP
}

static bool
is_dir(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/*
 * For a local path that is no directory: the nearest name of a directory
 * beside where it points (at most 4096 entries looked at), as the path
 * would be written with it, or NULL.  "./demo/llama-bse" -> "./demo/llama-base".
 */
static char *
near_dir(const char *path, const char *local)
{
	const char *names[4096], *pick, *last = strrchr(local, '/');
	char *parent, *full, *out = NULL;
	struct dirent *de;
	size_t n = 0, i, keep;
	DIR *d;

	if (last == NULL || last[1] == '\0')
		return NULL;
	parent = last == local ? xstrdup("/") : xstrndup(local,
	    (size_t)(last - local));
	if ((d = opendir(parent)) == NULL) {
		free(parent);
		return NULL;
	}
	while (n < 4096 && (de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		full = xasprintf("%s/%s", parent, de->d_name);
		if (is_dir(full))
			names[n++] = xstrdup(de->d_name);
		free(full);
	}
	closedir(d);
	if ((pick = graph_suggest(last + 1, names, n)) != NULL) {
		keep = strrchr(path, '/') != NULL ? (size_t)(strrchr(path, '/') -
		    path) + 1 : 0;
		out = xasprintf("%.*s%s", (int)keep, path, pick);
	}
	for (i = 0; i < n; i++)
		free((char *)names[i]);
	free(parent);
	return out;
}

char *
modelref_hf_cache_root(const struct graph_env *env)
{
	if (env->hf_hub_cache != NULL && *env->hf_hub_cache != '\0')
		return xstrdup(env->hf_hub_cache);
	if (env->hf_home != NULL && *env->hf_home != '\0')
		return xasprintf("%s/hub", env->hf_home);
	if (env->home != NULL && *env->home != '\0')
		return xasprintf("%s/.cache/huggingface/hub", env->home);
	return NULL;
}

/* "org/name" with safe characters only: it becomes a directory name. */
static bool
is_repo_id(const char *p)
{
	const char *slash = strchr(p, '/');
	const char *s;

	if (slash == NULL || slash == p || slash[1] == '\0' ||
	    strchr(slash + 1, '/') != NULL)
		return false;
	for (s = p; *s != '\0'; s++)
		if (!isalnum((unsigned char)*s) && strchr("-_./", *s) == NULL)
			return false;
	return strstr(p, "..") == NULL && p[0] != '.';
}

static bool
is_hex40(const char *s)
{
	size_t i;

	for (i = 0; i < 40; i++)
		if (!isxdigit((unsigned char)s[i]))
			return false;
	return s[40] == '\0';
}

/* The cache names "org/name" as models--org--name. */
static char *
hf_repo_dir(const char *root, const char *id)
{
	struct xbuf b = { 0 };

	xbuf_printf(&b, "%s/models--", root);
	for (; *id != '\0'; id++)
		xbuf_add(&b, *id == '/' ? "--" : id, *id == '/' ? 2 : 1);
	return xbuf_take(&b);
}

/*
 * Looks the reference up in the cache; appends what it tried to *tried,
 * each place as ", PLACE (why)".
 */
static int
ref_resolve_hf(const char *path, const char *revision, const char *root,
    struct graph_resolved *out, struct xbuf *tried)
{
	char *repo, *refpath = NULL, *hash = NULL, *snap = NULL;
	const char *rev = revision ? revision : "main";
	size_t len;
	int rc = -ENOENT;

	repo = hf_repo_dir(root, path);
	if (is_hex40(rev)) {
		hash = xstrdup(rev);
	} else if (strstr(rev, "..") == NULL && rev[0] != '/') {
		refpath = xasprintf("%s/refs/%s", repo, rev);
		if (graph_read_file(refpath, 256, &hash, &len) != 0) {
			xbuf_printf(tried, ", %s (no such ref)", refpath);
			goto out;
		}
		while (len > 0 && isspace((unsigned char)hash[len - 1]))
			hash[--len] = '\0';
		if (!is_hex40(hash)) {
			xbuf_printf(tried, ", %s (does not hold a commit "
			    "hash)", refpath);
			goto out;
		}
	} else {
		xbuf_printf(tried, ", revision '%s' is not a valid ref name",
		    rev);
		goto out;
	}
	snap = xasprintf("%s/snapshots/%s", repo, hash);
	if (!is_dir(snap)) {
		xbuf_printf(tried, ", %s (no such snapshot)", snap);
		goto out;
	}
	/* Rooted at models--org--name: the snapshot links into blobs/. */
	if ((out->rootfd = open(repo, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) ==
	    -1) {
		xbuf_printf(tried, ", %s (%s)", repo, strerror(errno));
		goto out;
	}
	out->rel = xasprintf("snapshots/%s", hash);
	out->dir = snap;
	out->root = repo;
	snap = repo = NULL;
	rc = 0;
out:
	free(repo);
	free(refpath);
	free(hash);
	free(snap);
	return rc;
}

/* path[@rev], a model's or an adapter's (what), into out. */
static int
ref_resolve(const char *path, const char *rev, const char *what,
    const struct graph_env *env, struct graph_resolved *out, char **cause)
{
	struct xbuf tried = { 0 };
	char *local, *root, *name, *near;
	const char *rel = path;
	int rc;

	memset(out, 0, sizeof *out);
	out->rootfd = -1;
	while (strncmp(rel, "./", 2) == 0)
		rel += 2;
	if (path[0] == '/' || env->cwd == NULL)
		local = xstrdup(path);
	else
		local = xasprintf("%s/%s", env->cwd, rel);
	if (is_dir(local) && (out->rootfd = open(local, O_RDONLY |
	    O_DIRECTORY | O_CLOEXEC)) != -1) {
		/* As in mergekit, a local path ignores the revision. */
		out->dir = local;
		out->root = xstrdup(local);
		out->rel = xstrdup(".");
		return 0;
	}
	xbuf_printf(&tried, ", %s (no such directory", local);
	if (path[0] != '/' && env->cwd != NULL)
		xbuf_printf(&tried, "; a relative path is from the current "
		    "directory, %s", env->cwd);
	xbuf_printf(&tried, ")");
	near = near_dir(path, local);
	free(local);
	root = modelref_hf_cache_root(env);
	if (is_repo_id(path) && root != NULL) {
		if (ref_resolve_hf(path, rev, root, out, &tried) == 0) {
			free(root);
			xbuf_free(&tried);
			return 0;
		}
	} else if (root == NULL) {
		xbuf_printf(&tried, ", no Hugging Face cache (set "
		    "HF_HUB_CACHE or HF_HOME)");
	}
	free(root);
	name = xasprintf("%s%s%s", path, rev ? "@" : "", rev ? rev : "");
	/* One line: a problem is printed as one (diag.c escapes line breaks,
	 * which names from files may hold), so the places are a list. */
	*cause = xasprintf("%s '%s' not found; looked in: %s%s%s%s", what,
	    name,
	    tried.data + 2, near ? "; did you mean '" : "", near ? near : "",
	    near ? "'?" : "");
	free(near);
	free(name);
	xbuf_free(&tried);
	rc = -ENOENT;
	return rc;
}

int
graph_ref_resolve(const struct graph_ref *r, const struct graph_env *env,
    struct graph_resolved *out, char **cause)
{
	return ref_resolve(r->path, r->rev, "model", env, out, cause);
}

/* The adapter of a "model+adapter" reference, found like a model. */
int
graph_ref_resolve_adapter(const struct graph_ref *r,
    const struct graph_env *env, struct graph_resolved *out, char **cause)
{
	return ref_resolve(r->lora, r->lora_rev, "adapter", env, out, cause);
}

/* The name under which a client passes a reference's adapter directory:
 * "+lora[@rev]", which no model reference can be. */
char *
graph_ref_adapter_key(const struct graph_ref *r)
{
	return xasprintf("+%s%s%s", r->lora, r->lora_rev ? "@" : "",
	    r->lora_rev ? r->lora_rev : "");
}

int
graph_source_dir_open(const struct graph_source_dir *dir,
    struct graph_resolved *out, char **cause)
{
	memset(out, 0, sizeof *out);
	if ((out->rootfd = fcntl(dir->fd, F_DUPFD_CLOEXEC, 3)) == -1) {
		*cause = xasprintf("model '%s': %s", dir->ref,
		    strerror(errno));
		return -errno;
	}
	out->rel = xstrdup(dir->rel);
	out->root = xstrdup(dir->where);
	out->dir = strcmp(out->rel, ".") == 0 ? xstrdup(dir->where) :
	    xasprintf("%s/%s", dir->where, out->rel);
	return 0;
}

/*
 * The client's resolution of ref (of its adapter, when adapter), from
 * the directories it passed: a daemon plans from these, never from
 * paths.  The descriptor is duplicated into out.
 */
static int
ref_given(const struct graph_source_dir *dirs, size_t ndirs,
    const struct graph_ref *ref, bool adapter, struct graph_resolved *out,
    char **cause)
{
	char *name = adapter ? graph_ref_adapter_key(ref) : graph_ref_str(ref);
	size_t i;

	memset(out, 0, sizeof *out);
	out->rootfd = -1;
	for (i = 0; i < ndirs; i++)
		if (strcmp(dirs[i].ref, name) == 0)
			break;
	if (i == ndirs) {
		*cause = xasprintf("%s '%s': the client passed no directory "
		    "for it", adapter ? "adapter" : "model", name);
		free(name);
		return -ENOENT;
	}
	free(name);
	return graph_source_dir_open(&dirs[i], out, cause);
}

int
graph_ref_locate(const struct graph_ref *ref, bool adapter,
    const struct graph_source_dir *dirs, size_t ndirs,
    const struct graph_env *env, struct graph_resolved *out, char **cause)
{
	if (dirs != NULL)
		return ref_given(dirs, ndirs, ref, adapter, out, cause);
	return adapter ? graph_ref_resolve_adapter(ref, env, out, cause) :
	    graph_ref_resolve(ref, env, out, cause);
}

void
graph_resolved_fini(struct graph_resolved *r)
{
	free(r->dir);
	free(r->root);
	free(r->rel);
	if (r->rootfd >= 0)
		close(r->rootfd);
	memset(r, 0, sizeof *r);
	r->rootfd = -1;
}
