/* SPDX-License-Identifier: MIT */
/*
 * test-modelref.c: unit tests for graph/modelref.c, parsing model
 * references ("path[@rev][+lora[@rev]]") and resolving them to directories.
 *
 * Parsing follows MERGEKIT.md Part B 1.4 (the upstream test strings
 * "@@@@@", "a+b+c" and "a+b+c@d+e@f@g" are errors, LoRA is not supported
 * yet), the canonical text form round-trips and equality treats "org/m"
 * and "org/m@main" as different models.  Resolution runs against a fake
 * Hugging Face cache built in a private temporary directory with the real
 * layout (refs/<rev> holding a hash with a trailing newline, snapshots/
 * <hash>/ whose files are symlinks into blobs/): refs and 40-hex revisions,
 * the HF_HUB_CACHE > HF_HOME/hub > ~/.cache/huggingface/hub precedence, a
 * local directory winning over the cache, a not-found message listing every
 * place tried, and revisions that would escape the cache being refused.
 */
#include <sys/stat.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "graph-int.h"
#include "tap.h"
#include "tmpdir.h"

#define HASH_MAIN "0123456789abcdef0123456789abcdef01234567"
#define HASH_DEV "fedcba9876543210fedcba9876543210fedcba98"

struct parse_case {
	const char *text;
	int rc;
	const char *path;	/* on success */
	const char *rev;
	const char *phrase;	/* in the cause, on failure */
	const char *lora;	/* on success: the adapter, or NULL */
	const char *lora_rev;
};

static char *path_join(const char *, const char *);
static void make_repo(const char *, const char *, const char *);
static void test_parse(void);
static void test_str_eq(void);
static int resolve(const char *, const struct graph_env *,
    struct graph_resolved *, char **);
static bool same_dir(const char *, const char *);
static void test_resolve_cache(const char *);
static void test_precedence(const char *);
static void test_local(const char *);
static void test_not_found(const char *);
static void test_bad_revisions(const char *);

static const struct parse_case parse_cases[] = {
	{ "user/model", 0, "user/model", NULL, NULL, NULL, NULL },
	{ "user/model@rev", 0, "user/model", "rev", NULL, NULL, NULL },
	{ "./local/dir", 0, "./local/dir", NULL, NULL, NULL, NULL },
	{ "/abs/dir@v1.0", 0, "/abs/dir", "v1.0", NULL, NULL, NULL },
	{ "@@@@@", -EINVAL, NULL, NULL, "more than one '@'", NULL, NULL },
	{ "a+b+c", -EINVAL, NULL, NULL, "more than one '+'", NULL, NULL },
	{ "a+b+c@d+e@f@g", -EINVAL, NULL, NULL, "more than one '+'", NULL,
	    NULL },
	{ "a@b@c", -EINVAL, NULL, NULL, "more than one '@'", NULL, NULL },
	{ "a@b@c+d", -EINVAL, NULL, NULL, "more than one '@'", NULL, NULL },
	{ "a+b@c@d", -EINVAL, NULL, NULL, "more than one '@'", NULL, NULL },
	{ "a+b", 0, "a", NULL, NULL, "b", NULL },
	{ "org/m@r+org/lora@r2", 0, "org/m", "r", NULL, "org/lora", "r2" },
	{ "./m+./adapters/x@v1", 0, "./m", NULL, NULL, "./adapters/x", "v1" },
	{ "", -EINVAL, NULL, NULL, "empty path", NULL, NULL },
	{ "@rev", -EINVAL, NULL, NULL, "empty path", NULL, NULL },
	{ "org/m@", -EINVAL, NULL, NULL, "empty revision", NULL, NULL },
	{ "org/m+", -EINVAL, NULL, NULL, "empty path", NULL, NULL },
};

static char *
path_join(const char *a, const char *b)
{
	return xasprintf("%s/%s", a, b);
}

/*
 * <root>/models--org--name with refs/main -> HASH_MAIN (newline-ended),
 * refs/dev -> HASH_DEV (no newline), both snapshots with config.json as a
 * relative symlink into blobs/, as huggingface_hub lays them out.  tag
 * goes into the blob so that tests can tell caches apart.
 */
static void
make_repo(const char *root, const char *repo, const char *tag)
{
	char *dir = path_join(root, repo), *p;
	static const char *const hashes[] = { HASH_MAIN, HASH_DEV };
	size_t i;

	mkdir(root, 0755);
	tmp_mkdir(dir);
	p = path_join(dir, "refs");
	tmp_mkdir(p);
	free(p);
	p = path_join(dir, "refs/main");
	tmp_write(p, HASH_MAIN "\n", 41);
	free(p);
	p = path_join(dir, "refs/dev");
	tmp_write(p, HASH_DEV, 40);
	free(p);
	p = path_join(dir, "blobs");
	tmp_mkdir(p);
	free(p);
	p = path_join(dir, "blobs/xyz");
	tmp_write(p, tag, strlen(tag));
	free(p);
	p = path_join(dir, "snapshots");
	tmp_mkdir(p);
	free(p);
	for (i = 0; i < 2; i++) {
		p = xasprintf("%s/snapshots/%s", dir, hashes[i]);
		tmp_mkdir(p);
		free(p);
		p = xasprintf("%s/snapshots/%s/config.json", dir, hashes[i]);
		tmp_symlink("../../blobs/xyz", p);
		free(p);
	}
	free(dir);
}

static void
test_parse(void)
{
	const struct parse_case *c;
	struct graph_ref r;
	char *cause;
	size_t i;
	int rc;

	for (i = 0; i < sizeof parse_cases / sizeof *parse_cases; i++) {
		c = &parse_cases[i];
		cause = NULL;
		rc = graph_ref_parse(c->text, &r, &cause);
		ok_int_eq(rc, c->rc, "parse \"%s\"", c->text);
		if (c->rc == 0) {
			ok(rc == 0 && strcmp(r.path, c->path) == 0 &&
			    (c->rev == NULL ? r.rev == NULL : r.rev != NULL &&
			    strcmp(r.rev, c->rev) == 0) &&
			    (c->lora == NULL ? r.lora == NULL : r.lora != NULL &&
			    strcmp(r.lora, c->lora) == 0) &&
			    (c->lora_rev == NULL ? r.lora_rev == NULL :
			    r.lora_rev != NULL && strcmp(r.lora_rev,
			    c->lora_rev) == 0) && cause == NULL,
			    "\"%s\": path \"%s\", revision %s, adapter %s@%s",
			    c->text, c->path, c->rev ? c->rev : "none",
			    c->lora ? c->lora : "none",
			    c->lora_rev ? c->lora_rev : "none");
		} else {
			ok_str_has(cause, c->phrase, "\"%s\": the cause says "
			    "\"%s\"", c->text, c->phrase);
			ok(r.path == NULL && r.rev == NULL,
			    "\"%s\": nothing left allocated", c->text);
		}
		graph_ref_fini(&r);
		free(cause);
	}
}

static void
test_str_eq(void)
{
	static const char *const texts[] = { "user/model", "user/model@rev",
		"./local/dir", "/abs@0123" };
	struct graph_ref a, b, l = { .path = "a", .rev = "b", .lora = "c",
		.lora_rev = "d" };
	char *cause = NULL, *s;
	size_t i;

	for (i = 0; i < sizeof texts / sizeof *texts; i++) {
		graph_ref_parse(texts[i], &a, &cause);
		s = graph_ref_str(&a);
		ok_str_eq(s, texts[i], "graph_ref_str round-trips case %zu", i);
		graph_ref_parse(s, &b, &cause);
		ok(graph_ref_eq(&a, &b), "and parses back equal");
		free(s);
		graph_ref_fini(&a);
		graph_ref_fini(&b);
	}
	s = graph_ref_str(&l);
	ok_str_eq(s, "a@b+c@d", "canonical form path@rev+lora@rev");
	free(s);
	graph_ref_parse("org/m", &a, &cause);
	graph_ref_parse("org/m@main", &b, &cause);
	ok(!graph_ref_eq(&a, &b), "org/m and org/m@main are different");
	ok(graph_ref_eq(&a, &a), "a reference equals itself");
	graph_ref_fini(&b);
	graph_ref_copy(&b, &a);
	ok(graph_ref_eq(&a, &b) && b.path != a.path, "a copy is equal and "
	    "owns its strings");
	b.override_arch = xstrdup("LlamaForCausalLM");
	ok(!graph_ref_eq(&a, &b), "override_architecture takes part");
	graph_ref_fini(&a);
	graph_ref_fini(&b);
	ok(cause == NULL, "no cause for valid references");
}

static int
resolve(const char *text, const struct graph_env *env,
    struct graph_resolved *out, char **cause)
{
	struct graph_ref r;
	char *why = NULL;
	int rc;

	*cause = NULL;
	memset(out, 0, sizeof *out);
	if (graph_ref_parse(text, &r, &why) != 0) {
		tap_diag("cannot parse %s: %s", text, why);
		free(why);
		return -EINVAL;
	}
	rc = graph_ref_resolve(&r, env, out, cause);
	graph_ref_fini(&r);
	return rc;
}

/* The same directory (by device and inode), however it is spelled. */
static bool
same_dir(const char *a, const char *b)
{
	struct stat sa, sb;

	if (a == NULL || b == NULL || stat(a, &sa) == -1 ||
	    stat(b, &sb) == -1)
		return false;
	return S_ISDIR(sa.st_mode) && sa.st_dev == sb.st_dev &&
	    sa.st_ino == sb.st_ino;
}

static void
test_resolve_cache(const char *tmp)
{
	char *hub = path_join(tmp, "hub"), *cwd = path_join(tmp, "cwd");
	char *repo = path_join(hub, "models--org--name");
	char *snap = path_join(repo, "snapshots/" HASH_MAIN);
	char *dev = path_join(repo, "snapshots/" HASH_DEV);
	char *cfg = path_join(snap, "config.json"), *cause, *text;
	struct graph_env env = { .cwd = cwd, .hf_hub_cache = hub };
	struct graph_resolved out;
	size_t len;

	make_repo(hub, "models--org--name", "main");
	tmp_mkdir(cwd);
	ok_int_eq(resolve("org/name", &env, &out, &cause), 0,
	    "org/name resolves in the cache");
	ok_str_eq(out.dir, snap, "to snapshots/<refs/main>");
	ok_str_eq(out.root, repo, "root is models--org--name");
	graph_resolved_fini(&out);
	free(cause);
	ok(graph_read_file(cfg, 100, &text, &len) == 0 &&
	    strcmp(text, "main") == 0, "config.json is a symlink to a blob");
	free(text);
	ok_int_eq(resolve("org/name@" HASH_MAIN, &env, &out, &cause), 0,
	    "org/name@<hash> resolves");
	ok_str_eq(out.dir, snap, "to the same snapshot");
	graph_resolved_fini(&out);
	free(cause);
	ok_int_eq(resolve("org/name@dev", &env, &out, &cause), 0,
	    "org/name@dev resolves through refs/dev (no newline)");
	ok_str_eq(out.dir, dev, "to the dev snapshot");
	graph_resolved_fini(&out);
	free(cause);
	ok_int_eq(resolve("org/name@" HASH_DEV, &env, &out, &cause), 0,
	    "a 40-hex revision names a snapshot directly");
	ok_str_eq(out.dir, dev, "even when no ref points at it");
	graph_resolved_fini(&out);
	free(cause);
	free(cfg);
	free(dev);
	free(snap);
	free(repo);
	free(cwd);
	free(hub);
}

static void
test_precedence(const char *tmp)
{
	char *a = path_join(tmp, "hubcache"), *home = path_join(tmp, "home");
	char *hfhome = path_join(tmp, "hfhome"), *b = path_join(hfhome, "hub");
	char *c = path_join(home, ".cache/huggingface/hub"), *p, *root;
	char *cause, *text;
	struct graph_env env = { .cwd = tmp, .hf_hub_cache = a,
		.hf_home = hfhome, .home = home };
	struct graph_resolved out;
	size_t len;
	int rc;

	tmp_mkdir(hfhome);
	tmp_mkdir(home);
	p = path_join(home, ".cache");
	tmp_mkdir(p);
	free(p);
	p = path_join(home, ".cache/huggingface");
	tmp_mkdir(p);
	free(p);
	make_repo(a, "models--org--prec", "hub-cache");
	make_repo(b, "models--org--prec", "hf-home");
	make_repo(c, "models--org--prec", "home");
	root = modelref_hf_cache_root(&env);
	ok_str_eq(root, a, "HF_HUB_CACHE wins");
	free(root);
	rc = resolve("org/prec", &env, &out, &cause);
	p = out.dir ? path_join(out.dir, "config.json") : NULL;
	ok(rc == 0 && p && graph_read_file(p, 100, &text, &len) == 0 &&
	    strcmp(text, "hub-cache") == 0, "resolved in HF_HUB_CACHE");
	if (rc == 0 && p)
		free(text);
	free(p);
	graph_resolved_fini(&out);
	env.hf_hub_cache = "";
	root = modelref_hf_cache_root(&env);
	ok_str_eq(root, b, "empty HF_HUB_CACHE: HF_HOME/hub");
	free(root);
	rc = resolve("org/prec", &env, &out, &cause);
	p = out.dir ? path_join(out.dir, "config.json") : NULL;
	ok(rc == 0 && p && graph_read_file(p, 100, &text, &len) == 0 &&
	    strcmp(text, "hf-home") == 0, "resolved in HF_HOME/hub");
	if (rc == 0 && p)
		free(text);
	free(p);
	graph_resolved_fini(&out);
	env.hf_hub_cache = NULL;
	env.hf_home = NULL;
	root = modelref_hf_cache_root(&env);
	ok_str_eq(root, c, "neither: ~/.cache/huggingface/hub");
	free(root);
	rc = resolve("org/prec", &env, &out, &cause);
	ok(rc == 0 && out.root != NULL && strncmp(out.root, c, strlen(c)) ==
	    0, "resolved in ~/.cache/huggingface/hub");
	graph_resolved_fini(&out);
	env.home = NULL;
	root = modelref_hf_cache_root(&env);
	ok(root == NULL, "no HOME either: no cache");
	free(root);
	rc = resolve("org/prec", &env, &out, &cause);
	ok_int_eq(rc, -ENOENT, "and nothing resolves from a cache");
	ok_str_has(cause, "no Hugging Face cache", "the cause says so");
	free(cause);
	free(a);
	free(b);
	free(c);
	free(hfhome);
	free(home);
}

static void
test_local(const char *tmp)
{
	char *cwd = path_join(tmp, "cwd2"), *hub = path_join(tmp, "hub");
	char *local = path_join(cwd, "org/name"), *p, *cause, *abs;
	struct graph_env env = { .cwd = cwd, .hf_hub_cache = hub };
	struct graph_resolved out;

	tmp_mkdir(cwd);
	p = path_join(cwd, "org");
	tmp_mkdir(p);
	free(p);
	tmp_mkdir(local);
	ok_int_eq(resolve("org/name", &env, &out, &cause), 0,
	    "org/name with a local org/name directory");
	ok(same_dir(out.dir, local) && same_dir(out.root, local),
	    "the local directory wins over the cache");
	graph_resolved_fini(&out);
	ok_int_eq(resolve("org/name@dev", &env, &out, &cause), 0,
	    "org/name@dev, local");
	ok(same_dir(out.dir, local), "a local path ignores the revision");
	graph_resolved_fini(&out);
	p = path_join(cwd, "local");
	tmp_mkdir(p);
	free(p);
	p = path_join(cwd, "local/dir");
	tmp_mkdir(p);
	ok_int_eq(resolve("./local/dir", &env, &out, &cause), 0,
	    "./local/dir resolves");
	ok(same_dir(out.dir, p), "relative to the submitter's cwd");
	graph_resolved_fini(&out);
	abs = xstrdup(p);
	free(p);
	env.cwd = "/nonexistent-cwd";
	ok_int_eq(resolve(abs, &env, &out, &cause), 0,
	    "an absolute path ignores cwd");
	ok_str_eq(out.dir, abs, "and is used as written");
	graph_resolved_fini(&out);
	free(abs);
	free(local);
	free(hub);
	free(cwd);
}

static void
test_not_found(const char *tmp)
{
	char *hub = path_join(tmp, "hub"), *p;
	char *cwd = path_join(tmp, "cwd"), *cause = NULL;
	struct graph_env env = { .cwd = cwd, .hf_hub_cache = hub };
	struct graph_resolved out;
	int rc;

	rc = resolve("org/missing", &env, &out, &cause);
	ok_int_eq(rc, -ENOENT, "an unknown model is -ENOENT");
	ok(out.dir == NULL && out.root == NULL, "with nothing resolved");
	ok_str_has(cause, "model 'org/missing' not found",
	    "the cause names the model");
	p = xasprintf("%s/org/missing (no such directory; a relative path is "
	    "from the current directory, %s)", cwd, cwd);
	ok_str_has(cause, p, "and lists the local directory");
	free(p);
	p = xasprintf("%s/models--org--missing/refs/main (no such ref)", hub);
	ok_str_has(cause, p, "and the cache ref");
	free(p);
	free(cause);
	rc = resolve("org/name@nope", &env, &out, &cause);
	ok_int_eq(rc, -ENOENT, "an unknown revision is -ENOENT");
	ok_str_has(cause, "refs/nope (no such ref)", "naming the ref tried");
	free(cause);
	rc = resolve("org/name@" "0000000000000000000000000000000000000000",
	    &env, &out, &cause);
	ok_int_eq(rc, -ENOENT, "a missing snapshot hash is -ENOENT");
	ok_str_has(cause, "(no such snapshot)", "naming the snapshot tried");
	free(cause);
	p = path_join(hub, "models--org--name/refs/broken");
	tmp_write(p, "1111111111111111111111111111111111111111\n", 41);
	free(p);
	rc = resolve("org/name@broken", &env, &out, &cause);
	ok_int_eq(rc, -ENOENT, "a ref to a missing snapshot is -ENOENT");
	ok_str_has(cause, "snapshots/1111111111111111111111111111111111111111 "
	    "(no such snapshot)", "naming the snapshot the ref points at");
	free(cause);
	rc = resolve("a/b/c", &env, &out, &cause);
	ok(rc == -ENOENT && cause != NULL && strstr(cause, "models--") ==
	    NULL, "a path that is no repo id is not looked up in the cache");
	free(cause);
	free(cwd);
	free(hub);
}

static void
test_bad_revisions(const char *tmp)
{
	static const char *const revs[] = { "org/name@../../../etc",
		"org/name@main/../dev", "org/name@/etc" };
	char *hub = path_join(tmp, "hub"), *cwd = path_join(tmp, "cwd");
	char *cause = NULL;
	struct graph_env env = { .cwd = cwd, .hf_hub_cache = hub };
	struct graph_resolved out;
	size_t i;
	int rc;

	for (i = 0; i < sizeof revs / sizeof *revs; i++) {
		rc = resolve(revs[i], &env, &out, &cause);
		ok(rc < 0 && out.dir == NULL, "%s is refused", revs[i]);
		ok_str_has(cause, "not a valid ref name", "%s: not a valid ref "
		    "name", revs[i]);
		graph_resolved_fini(&out);
		free(cause);
	}
	/* A ref file names a snapshot: it must hold a commit hash. */
	{
		char *repo = path_join(hub, "models--org--evil");
		char *refs = path_join(hub, "models--org--evil/refs");
		char *ref = path_join(refs, "main");
		FILE *fp;
		mkdir(hub, 0755);
		mkdir(repo, 0755);
		mkdir(refs, 0755);
		free(repo);
		if ((fp = fopen(ref, "w")) != NULL) {
			fputs("../../../../etc\n", fp);
			fclose(fp);
		}
		rc = resolve("org/evil", &env, &out, &cause);
		ok(rc == -ENOENT && out.dir == NULL, "a ref holding a path is "
		    "not followed");
		ok_str_has(cause, "does not hold a commit hash", "and the "
		    "error says why");
		free(cause);
		free(ref);
		free(refs);
	}
	rc = resolve("org/../name", &env, &out, &cause);
	ok(rc == -ENOENT && cause != NULL && strstr(cause, "models--") ==
	    NULL, "a repo id with '..' is not looked up in the cache");
	free(cause);
	free(cwd);
	free(hub);
}

int
main(void)
{
	char *tmp;

	tap_plan_lazy();
	test_parse();
	test_str_eq();
	tmp = tmp_dir_create("test-modelref");
	test_resolve_cache(tmp);
	test_precedence(tmp);
	test_local(tmp);
	test_not_found(tmp);
	test_bad_revisions(tmp);
	tmp_remove(tmp);
	free(tmp);
	return tap_done();
}
