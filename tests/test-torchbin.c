/* SPDX-License-Identifier: MIT */
/*
 * test-torchbin.c: torch checkpoints (pytorch_model.bin) as inputs.
 *
 * Merges: genmodel writes the same models as safetensors and as torch
 * checkpoints (single, sharded, sharded with ZIP64 records); every merge
 * from .bin inputs, alone or mixed with safetensors, through mergectl run
 * and through the daemon, must write the same bytes as from safetensors
 * inputs.  A checkpoint laid out as real ones are (every tensor a view at
 * an offset into one shared storage, an nn.Parameter, integer, bool and
 * inv_freq buffers) merges the same too.  When a directory has both
 * formats, safetensors is read.
 *
 * Refusals: checkpoints crafted with genmodel's torch writer
 * (contrib/genmodel/torchzip.c) that a state dict never holds (a global
 * that would run code, a transposed view, a value that is not a tensor, a
 * storage missing or of the wrong size, the legacy format, a big-endian
 * checkpoint, a truncated archive) exit 3 with the reason and write
 * nothing; and the reader (torchbin_parse) reads what torch's pickler
 * writes at protocol 4 (FRAME, SHORT_BINUNICODE, MEMOIZE, STACK_GLOBAL).
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "graph-int.h"
#include "tap.h"
#include "testd.h"
#include "testlib.h"
#include "torchzip.h"

static const char *dir;

static const char shape[] = "--family llama --layers 3 --hidden 64 "
    "--intermediate 128 --heads 4 --kv-heads 2 --vocab 128";

static void
gen(const char *name, const char *more)
{
	char args[512];

	snprintf(args, sizeof args, "%s %s", shape, more);
	tl_gen_at(dir, name, args);
}

/* Runs a config with models A and B; the output's weights as bytes. */
static int
run(const char *out, const char *cfg)
{
	char *o = NULL;
	int rc;

	tl_write_at(dir, "cfg.yml", cfg);
	rc = tl_runf(&o, "cd %s && %s run cfg.yml %s --quiet 2>&1", dir,
	    tl_mergectl, out);
	if (rc != 0)
		tap_diag("%s", o ? o : "");
	free(o);
	return rc;
}

/* Every .safetensors of out1 and out2 identical, and the same names. */
static bool
same_weights(const char *out1, const char *out2)
{
	char a[4096], b[4096], *n1[64], *n2[64];
	size_t k1, k2, i;
	bool same;

	snprintf(a, sizeof a, "%s/%s", dir, out1);
	snprintf(b, sizeof b, "%s/%s", dir, out2);
	k1 = tl_list(a, ".safetensors", n1, 64);
	k2 = tl_list(b, ".safetensors", n2, 64);
	same = k1 == k2 && k1 > 0;
	for (i = 0; same && i < k1; i++) {
		char p1[4200], p2[4200];

		same = strcmp(n1[i], n2[i]) == 0;
		snprintf(p1, sizeof p1, "%s/%s.safetensors", a, n1[i]);
		snprintf(p2, sizeof p2, "%s/%s.safetensors", b, n2[i]);
		same = same && tl_files_equal(p1, p2);
	}
	for (i = 0; i < k1; i++)
		free(n1[i]);
	for (i = 0; i < k2; i++)
		free(n2[i]);
	return same;
}

/* tmpl with each A replaced by a and each B by b (markers, not names). */
static char *
config(const char *tmpl, const char *a, const char *b)
{
	size_t n = strlen(tmpl) * (strlen(a) + strlen(b) + 1) + 1;
	char *c = malloc(n), *o = c;
	const char *p;

	if (c == NULL)
		exit(99);
	for (p = tmpl; *p != '\0'; p++) {
		const char *v = *p == '@' && p[1] == 'A' ? a :
		    *p == '@' && p[1] == 'B' ? b : NULL;

		if (v == NULL) {
			*o++ = *p;
			continue;
		}
		o = stpcpy(o, v);
		p++;
	}
	*o = '\0';
	return c;
}

static const char *const methods[][2] = {
	{ "linear", "models:\n  - model: ./@A\n    parameters: {weight: 0.3}\n"
	    "  - model: ./@B\n    parameters: {weight: 0.7}\n"
	    "merge_method: linear\ndtype: bfloat16\n" },
	{ "ties", "models:\n  - model: ./@A\n  - model: ./@B\n"
	    "    parameters: {weight: 1.0, density: 0.5}\n"
	    "base_model: ./@A\nmerge_method: ties\ndtype: float32\n" },
	{ "slerp", "slices:\n  - sources:\n      - model: ./@A\n"
	    "        layer_range: [0, 3]\n      - model: ./@B\n"
	    "        layer_range: [0, 3]\nbase_model: ./@A\n"
	    "merge_method: slerp\nparameters: {t: 0.4}\ndtype: bfloat16\n" },
	{ "passthrough", "slices:\n  - sources:\n      - model: ./@A\n"
	    "        layer_range: [0, 2]\n  - sources:\n"
	    "      - model: ./@B\n        layer_range: [1, 3]\n"
	    "merge_method: passthrough\n" },
};

/* Each method from safetensors, from .bin, and mixed: the same bytes. */
static void
test_merges(void)
{
	static const char *const pairs[][2] = {
		{ "bin_a", "bin_b" },		/* single + sharded */
		{ "bin_a", "st_b" },		/* mixed */
		{ "st_a", "bin_b64" },		/* sharded, ZIP64 */
	};
	char ref[64], out[64], *c;
	size_t m, k;

	for (m = 0; m < sizeof methods / sizeof *methods; m++) {
		snprintf(ref, sizeof ref, "ref-%s", methods[m][0]);
		c = config(methods[m][1], "st_a", "st_b");
		ok(run(ref, c) == 0, "%s from safetensors: exit 0",
		    methods[m][0]);
		free(c);
		for (k = 0; k < sizeof pairs / sizeof *pairs; k++) {
			snprintf(out, sizeof out, "%s-%zu", methods[m][0], k);
			c = config(methods[m][1], pairs[k][0], pairs[k][1]);
			ok(run(out, c) == 0 && same_weights(ref, out),
			    "%s of %s and %s: exit 0, weights byte-identical "
			    "to the same merge from safetensors",
			    methods[m][0], pairs[k][0], pairs[k][1]);
			free(c);
		}
	}
}

/* A directory with both formats: safetensors is read, as in mergekit. */
static void
test_both(void)
{
	char *c;

	if (tl_runf(NULL, "cd %s && cp -r st_a both && cp bin_c/pytorch_model"
	    ".bin both/", dir) != 0)
		exit(99);
	c = config(methods[0][1], "both", "st_b");
	ok(run("both-out", c) == 0 && same_weights("ref-linear", "both-out"),
	    "model.safetensors and pytorch_model.bin together: the "
	    "safetensors weights are merged");
	free(c);
}

/* The same merge through the daemon, from a sharded ZIP64 .bin. */
static void
test_daemon(void)
{
	pid_t pid;
	int id;
	char *c;

	td_init(dir);
	c = config(methods[0][1], "bin_a", "bin_b64");
	tl_write_at(dir, "d.yml", c);
	free(c);
	pid = td_start("", NULL);
	id = td_submit("d.yml -o d-out");
	ok(id > 0 && td_wait_state(id, "done", 120000) &&
	    same_weights("ref-linear", "d-out"), "through the daemon: job "
	    "done, weights byte-identical to the merge from safetensors");
	td_stop(pid, SIGTERM);
}

struct crafted {
	const char *name;
	struct tz_tensor t[8];
	size_t n;
	const char *pickle;		/* instead of t's state dict */
	size_t pickle_len;
	const char *skip_entry;		/* a storage left out */
	uint64_t short_entry;		/* storage "0" shortened by this */
	const char *byteorder;
	bool written;			/* refused() is not to write it */
};

/* dir/NAME/pytorch_model.bin (and st_a's config.json), storages zeroed. */
static void
write_crafted(const struct crafted *c)
{
	struct tz_buf pkl = { 0 };
	char path[4096], entry[256];
	struct tz z;
	FILE *fp;
	size_t i, j, es;
	uint64_t bytes;
	static const unsigned char zero[64];

	if (tl_runf(NULL, "cd %s && rm -rf %s && mkdir %s && cp st_a/config."
	    "json %s/", dir, c->name, c->name, c->name) != 0)
		exit(99);
	snprintf(path, sizeof path, "%s/%s/pytorch_model.bin", dir, c->name);
	if ((fp = fopen(path, "wb")) == NULL)
		exit(99);
	tz_open(&z, fp, path, 0);
	if (c->pickle != NULL)
		tz_put(&pkl, c->pickle, c->pickle_len);
	else
		tz_pickle_state_dict(&pkl, c->t, c->n, 1);
	tz_entry(&z, "archive/data.pkl", pkl.data, pkl.len);
	if (c->byteorder != NULL)
		tz_entry(&z, "archive/byteorder", c->byteorder,
		    strlen(c->byteorder));
	for (i = 0; i < c->n; i++) {
		for (j = 0; j < i; j++)
			if (strcmp(c->t[j].key, c->t[i].key) == 0)
				break;
		if (j < i || (c->skip_entry != NULL &&
		    strcmp(c->skip_entry, c->t[i].key) == 0))
			continue;
		es = strstr(c->t[i].storage, "Long") ? 8 :
		    strcmp(c->t[i].storage, "FloatStorage") == 0 ? 4 :
		    strstr(c->t[i].storage, "Bool") ? 1 : 2;
		bytes = c->t[i].storage_numel * es;
		if (strcmp(c->t[i].key, "0") == 0)
			bytes -= c->short_entry;
		snprintf(entry, sizeof entry, "archive/data/%s", c->t[i].key);
		tz_begin(&z, entry, bytes);
		while (bytes > 0) {
			size_t k = bytes < sizeof zero ? bytes : sizeof zero;

			tz_write(&z, zero, k);
			bytes -= k;
		}
		tz_end(&z);
	}
	tz_entry(&z, "archive/version", "3\n", 2);
	tz_finish(&z);
	fclose(fp);
	free(pkl.data);
}

static const uint64_t s4[] = { 4 }, s23[] = { 2, 3 }, t23[] = { 1, 2 };

#define T(n, k, st, nd, sh, numel) \
	{ .name = n, .key = k, .storage = st, .ndim = nd, .shape = sh, \
	  .storage_numel = numel }

/* A tiny plan of a crafted model; 3 with the reason, and nothing written. */
static void
refused(const struct crafted *c, const char *want)
{
	char *o = NULL, cfg[512], out[4200];
	int rc;

	if (!c->written)
		write_crafted(c);
	snprintf(cfg, sizeof cfg, "models:\n  - model: ./%s\n"
	    "    parameters: {weight: 0.5}\n  - model: ./st_a\n"
	    "    parameters: {weight: 0.5}\nmerge_method: linear\n", c->name);
	tl_write_at(dir, "bad.yml", cfg);
	rc = tl_runf(&o, "cd %s && %s run bad.yml bad-out 2>&1", dir,
	    tl_mergectl);
	snprintf(out, sizeof out, "%s/bad-out", dir);
	ok(rc == 3 && o != NULL && strstr(o, want) != NULL &&
	    !tl_exists(out), "%s: exit 3, says '%s', writes nothing", c->name,
	    want);
	if (rc != 3 || o == NULL || strstr(o, want) == NULL)
		tap_diag("exit %d: %s", rc, o ? o : "");
	free(o);
}

static void
test_refusals(void)
{
	/* {'b': posix.system('true')} */
	static const char evil[] = "\x80\x02}q\x00(X\x01\x00\x00\x00"
	    "bcposix\nsystem\nq\x01X\x04\x00\x00\x00true\x85R" "u.";
	static const char notensor[] = "\x80\x02}(X\x05\x00\x00\x00"
	    "epochK\x03u.";
	struct crafted c;

	memset(&c, 0, sizeof c);
	c.name = "evil";
	c.pickle = evil;
	c.pickle_len = sizeof evil - 1;
	refused(&c, "refusing global 'posix.system'");

	memset(&c, 0, sizeof c);
	c.name = "transposed";
	c.t[0] = (struct tz_tensor)T("model.w", "0", "BFloat16Storage", 2,
	    s23, 6);
	c.t[0].stride = t23;
	c.n = 1;
	refused(&c, "tensor 'model.w' is not contiguous");

	memset(&c, 0, sizeof c);
	c.name = "notensor";
	c.pickle = notensor;
	c.pickle_len = sizeof notensor - 1;
	refused(&c, "'epoch' is not a tensor");

	memset(&c, 0, sizeof c);
	c.name = "nostorage";
	c.t[0] = (struct tz_tensor)T("model.w", "0", "BFloat16Storage", 1,
	    s4, 4);
	c.n = 1;
	c.skip_entry = "0";
	refused(&c, "its storage '0' is not in the archive");

	c.name = "shortstorage";
	c.skip_entry = NULL;
	c.short_entry = 2;
	refused(&c, "storage '0' holds 6 bytes, not the 4 elements");

	c.name = "pastend";
	c.short_entry = 0;
	c.t[0].offset = 1;
	refused(&c, "tensor 'model.w' runs past the end of its storage");

	c.name = "bigendian";
	c.t[0].offset = 0;
	c.byteorder = "big";
	refused(&c, "saved on a big-endian machine");

	c.name = "twice";
	c.byteorder = NULL;
	c.t[1] = c.t[0];
	c.n = 2;
	refused(&c, "'model.w' is set twice in the state dict");

	c.name = "complex";
	c.n = 1;
	c.t[0].storage = "ComplexFloatStorage";
	refused(&c, "tensors stored as torch.ComplexFloatStorage, a type "
	    "mergectl does not read");

	memset(&c, 0, sizeof c);
	c.name = "empty";
	refused(&c, "the checkpoint holds no weights");
	if (tl_runf(NULL, "printf '\\002\\0\\0\\0\\0\\0\\0\\0{}' > "
	    "%s/empty/model.safetensors", dir) != 0)
		exit(99);
	c.written = true;
	refused(&c, "the checkpoint holds no weights");

	/* Python's pickle.dump of a dict, as torch < 1.6 began its file. */
	memset(&c, 0, sizeof c);
	c.name = "legacy";
	write_crafted(&c);
	c.written = true;
	tl_write_at(dir, "legacy/pytorch_model.bin",
	    "\x80\x02\x8a\x0a" "l\xfc\x9c" "F\xf9 j\xa8P\x19.");
	refused(&c, "torch's legacy format");
	/* A download cut short. */
	if (tl_runf(NULL, "head -c -10 %s/bin_c/pytorch_model.bin > "
	    "%s/legacy/pytorch_model.bin", dir, dir) != 0)
		exit(99);
	refused(&c, "no zip end of central directory record");
}

/* Real checkpoints' layout: views into one storage, and buffers. */
static void
test_views(void)
{
	struct tl_st st;
	struct crafted c;
	struct tz_buf pkl = { 0 }, data = { 0 };
	struct tz_tensor *t;
	uint64_t (*shapes)[2], off = 3;
	char path[4096], *cfg;
	struct tz z;
	FILE *fp;
	size_t i, n;

	snprintf(path, sizeof path, "%s/st_a/model.safetensors", dir);
	if (tl_st_load(path, &st) != 0)
		exit(99);
	t = calloc(st.n + 4, sizeof *t);
	shapes = calloc(st.n, sizeof *shapes);
	if (t == NULL || shapes == NULL)
		exit(99);
	/* Storage 0: three padding elements, then every tensor in turn. */
	tz_put(&data, "\0\0\0\0\0\0", 6);
	for (i = 0; i < st.n; i++) {
		shapes[i][0] = (uint64_t)st.t[i].shape[0];
		shapes[i][1] = st.t[i].ndim > 1 ? (uint64_t)st.t[i].shape[1] :
		    0;
		t[i] = (struct tz_tensor)T(st.t[i].name, "0",
		    "BFloat16Storage", st.t[i].ndim, shapes[i], 0);
		t[i].offset = off;
		t[i].param = i % 2;
		off += st.t[i].numel;
		tz_put(&data, st.t[i].data, (size_t)st.t[i].nbytes);
	}
	for (i = 0; i < st.n; i++)
		t[i].storage_numel = off;
	n = st.n;
	t[n++] = (struct tz_tensor)T("model.layers.0.self_attn.rotary_emb."
	    "inv_freq", "1", "FloatStorage", 1, s4, 4);
	t[n++] = (struct tz_tensor)T("model.position_ids", "2", "LongStorage",
	    1, s4, 4);
	t[n++] = (struct tz_tensor)T("model.mask", "3", "BoolStorage", 1, s4,
	    4);
	memset(&c, 0, sizeof c);
	c.name = "views";
	write_crafted(&c);
	snprintf(path, sizeof path, "%s/views/pytorch_model.bin", dir);
	if ((fp = fopen(path, "wb")) == NULL)
		exit(99);
	tz_open(&z, fp, path, 0);
	tz_pickle_state_dict(&pkl, t, n, 1);
	tz_entry(&z, "views/data.pkl", pkl.data, pkl.len);
	tz_entry(&z, "views/data/0", data.data, data.len);
	tz_entry(&z, "views/data/1", "\0\0\x80?\0\0\x80?\0\0\x80?\0\0\x80?",
	    16);
	tz_entry(&z, "views/data/2", "\1\0\0\0\0\0\0\0\2\0\0\0\0\0\0\0"
	    "\3\0\0\0\0\0\0\0\4\0\0\0\0\0\0\0", 32);
	tz_entry(&z, "views/data/3", "\1\1\1\1", 4);
	tz_entry(&z, "views/version", "3\n", 2);
	tz_finish(&z);
	fclose(fp);
	cfg = config(methods[0][1], "views", "st_b");
	ok(run("views-out", cfg) == 0 && same_weights("ref-linear",
	    "views-out"), "tensors as views at offsets of one storage, "
	    "parameters, and int64, bool and inv_freq buffers (left out): "
	    "weights byte-identical to the merge from safetensors");
	free(cfg);
	free(pkl.data);
	free(data.data);
	free(shapes);
	free(t);
	tl_st_free(&st);
}

/*
 * Sharded as transformers shards old checkpoints: its index lists every
 * key, the buffers included, which the model leaves out all the same.
 */
static void
test_sharded_buffers(void)
{
	static const char *const shard[2] = {
		"pytorch_model-00001-of-00002", "pytorch_model-00002-of-00002" };
	struct tl_st st;
	struct crafted c;
	struct tz_buf pkl, index = { 0 };
	struct tz_tensor t[64];
	uint64_t shapes[64][2];
	char keys[64][16], path[4096], entry[256], *cfg;
	struct tz z;
	FILE *fp;
	size_t i, n, s, half;

	snprintf(path, sizeof path, "%s/st_a/model.safetensors", dir);
	if (tl_st_load(path, &st) != 0 || st.n > 60)
		exit(99);
	memset(&c, 0, sizeof c);
	c.name = "sharded";
	write_crafted(&c);
	half = st.n / 2;
	snprintf(path, sizeof path, "{\"metadata\": {}, \"weight_map\": {");
	tz_put(&index, path, strlen(path));
	for (s = 0; s < 2; s++) {
		memset(&pkl, 0, sizeof pkl);
		for (i = s ? half : 0, n = 0; i < (s ? st.n : half); i++, n++) {
			shapes[n][0] = (uint64_t)st.t[i].shape[0];
			shapes[n][1] = st.t[i].ndim > 1 ?
			    (uint64_t)st.t[i].shape[1] : 0;
			snprintf(keys[n], sizeof keys[n], "%zu", n);
			t[n] = (struct tz_tensor)T(st.t[i].name, keys[n],
			    "BFloat16Storage", st.t[i].ndim, shapes[n],
			    st.t[i].numel);
		}
		if (s == 0) {
			t[n++] = (struct tz_tensor)T("model.layers.1.self_attn."
			    "rotary_emb.inv_freq", "b1", "FloatStorage", 1, s4,
			    4);
			t[n++] = (struct tz_tensor)T("model.position_ids", "b2",
			    "LongStorage", 1, s4, 4);
		}
		tz_pickle_state_dict(&pkl, t, n, 0);
		snprintf(path, sizeof path, "%s/sharded/%s.bin", dir,
		    shard[s]);
		if ((fp = fopen(path, "wb")) == NULL)
			exit(99);
		tz_open(&z, fp, path, 0);
		snprintf(entry, sizeof entry, "%s/data.pkl", shard[s]);
		tz_entry(&z, entry, pkl.data, pkl.len);
		for (i = s ? half : 0, n = 0; i < (s ? st.n : half); i++, n++) {
			snprintf(entry, sizeof entry, "%s/data/%zu", shard[s],
			    n);
			tz_entry(&z, entry, st.t[i].data,
			    (size_t)st.t[i].nbytes);
			snprintf(path, sizeof path, "%s\"%s\": \"%s.bin\"",
			    i ? ", " : "", st.t[i].name, shard[s]);
			tz_put(&index, path, strlen(path));
		}
		if (s == 0) {
			snprintf(entry, sizeof entry, "%s/data/b1", shard[s]);
			tz_entry(&z, entry, "\0\0\x80?\0\0\x80?\0\0\x80?"
			    "\0\0\x80?", 16);
			snprintf(entry, sizeof entry, "%s/data/b2", shard[s]);
			tz_entry(&z, entry, "\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0"
			    "\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0", 32);
			snprintf(path, sizeof path, ", \"model.layers.1."
			    "self_attn.rotary_emb.inv_freq\": \"%s.bin\", "
			    "\"model.position_ids\": \"%s.bin\"", shard[s],
			    shard[s]);
			tz_put(&index, path, strlen(path));
		}
		tz_finish(&z);
		fclose(fp);
		free(pkl.data);
	}
	tz_put(&index, "}}\n", 3);
	snprintf(path, sizeof path, "%s/sharded/pytorch_model.bin.index.json",
	    dir);
	if ((fp = fopen(path, "wb")) == NULL || fwrite(index.data, 1,
	    index.len, fp) != index.len)
		exit(99);
	fclose(fp);
	cfg = config(methods[0][1], "sharded", "st_b");
	ok(run("sharded-out", cfg) == 0 && same_weights("ref-linear",
	    "sharded-out"), "a sharded checkpoint whose index lists its "
	    "inv_freq and int64 buffers: the buffers are left out, weights "
	    "byte-identical to the merge from safetensors");
	free(cfg);
	free(index.data);
	tl_st_free(&st);
}

/*
 * A protocol 4 pickle, as torch.save(..., pickle_protocol=4) writes it:
 * {'a': FloatStorage tensor of 4}, through torchbin_parse itself.
 */
static void
test_protocol4(void)
{
	static const char p4[] =
	    "\x80\x04\x95\x00\x00\x00\x00\x00\x00\x00\x00}\x94("
	    "\x8c\x01" "a\x94"
	    "\x8c\x0ctorch._utils\x94\x8c\x12_rebuild_tensor_v2\x94\x93\x94"
	    "((\x8c\x07storage\x94\x8c\x05torch\x94\x8c\x0c"
	    "FloatStorage\x94\x93\x94\x8c\x01" "0\x94\x8c\x03" "cpu\x94K\x04"
	    "t\x94QK\x00K\x04\x85\x94K\x01\x85\x94\x89\x8c\x0b" "collections"
	    "\x94\x8c\x0bOrderedDict\x94\x93\x94)R\x94t\x94R\x94u.";
	struct tz_buf pkl = { 0 };
	struct safetensors_tensor *t = NULL;
	struct strmap names = { 0 };
	struct zip_src src;
	char path[4096], *cause = NULL, *buf;
	struct tz z;
	FILE *fp;
	size_t n = 0, len;
	int rc;

	snprintf(path, sizeof path, "%s/p4.bin", dir);
	if ((fp = fopen(path, "wb")) == NULL)
		exit(99);
	tz_put(&pkl, p4, sizeof p4 - 1);
	tz_open(&z, fp, path, 1);
	tz_entry(&z, "p4/data.pkl", pkl.data, pkl.len);
	tz_entry(&z, "p4/data/0", "\0\0\x80?\0\0\0@\0\0@@\0\0\x80@", 16);
	tz_finish(&z);
	fclose(fp);
	buf = tl_read(path, &len);
	src.buf = (const uint8_t *)buf;
	src.fd = -1;
	src.size = len;
	rc = torchbin_parse(&src, &t, &n, &names, &cause);
	ok(rc == 0 && n == 1 && strcmp(t[0].name, "a") == 0 &&
	    t[0].dtype == GRAPH_DT_F32 && t[0].ndim == 1 &&
	    t[0].shape[0] == 4 && t[0].end - t[0].begin == 16 &&
	    memcmp(buf + t[0].begin, "\0\0\x80?\0\0\0@", 8) == 0,
	    "protocol 4 (FRAME, MEMOIZE, STACK_GLOBAL) in a ZIP64 archive: "
	    "tensor 'a', F32 [4], at its entry's data");
	if (rc != 0)
		tap_diag("%s", cause);
	free(cause);
	if (rc == 0) {
		free(t[0].name);
		free(t);
	}
	strmap_free(&names);
	free(buf);
	free(pkl.data);
}

int
main(int argc, char **argv)
{
	tl_init(argc, argv);
	tap_plan_lazy();
	dir = tl_tmpdir("torchbin");
	gen("st_a", "--seed 1");
	gen("bin_a", "--seed 1 --format bin");
	gen("st_b", "--seed 2 --finetune-of 1 --delta 0.01");
	gen("bin_b", "--seed 2 --finetune-of 1 --delta 0.01 --format bin "
	    "--shard-size 60K");
	gen("bin_b64", "--seed 2 --finetune-of 1 --delta 0.01 --format bin "
	    "--shard-size 60K --zip64");
	gen("bin_c", "--seed 9 --format bin");
	test_merges();
	test_both();
	test_views();
	test_sharded_buffers();
	test_protocol4();
	test_refusals();
	test_daemon();
	tl_cleanup();
	return tap_done();
}
