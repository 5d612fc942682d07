/* SPDX-License-Identifier: MIT */
/*
 * test-hostile.c: inputs built to hang or stall the daemon (issue 9,
 * rows 5 and 6), against a real merged.
 *
 * A FIFO planted as a model's config.json or model.safetensors once
 * blocked the daemon's loop thread in open() until somebody wrote to it,
 * so nobody's request was answered; as tokenizer.json it held a merge
 * slot for good.  A model of 60,000 empty tensors kept the loop busy
 * planning and then scheduling, and SIGTERM waited for it.  Each case
 * asserts an ordering, never a time: another user's status is answered
 * while the hostile request is still in the daemon (the FIFO never
 * written, the submit not yet answered), and generous timeouts only stop
 * a hung daemon from hanging the test.  Also: a client that goes away
 * while its submit is planned has the job dropped with its descriptors,
 * and SIGTERM with a plan in flight exits, the job never accepted.
 *
 * The hostile submits are sent on a raw connection (hello and submit in
 * one message, with their descriptors), so that the test knows the
 * daemon has the submit in hand when the hello reply arrives: both lines
 * are handled in one pass over what was read.
 */
#define _GNU_SOURCE
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "proto.h"
#include "tap.h"
#include "testd.h"
#include "testlib.h"

/* Tensors of the hostile model: below the per-file limit (64 Ki). */
#define ZERO_TENSORS 60000
/* Copies of it in one merge, so that planning takes a while (seconds). */
#define ZERO_MODELS 4
/* Safety nets, in seconds: a daemon that answers takes a fraction. */
#define SAFETY 120

static const char *dir;
static bool other_user;	/* status asked as merged-alice */
static const char *mode;	/* the daemon's: team or personal */
static char opts[256];

/* A raw connection and what it has read but not yet returned. */
struct raw {
	int fd;
	char buf[1 << 16];
	size_t len;
};

/* The text as a JSON string's contents (the configs here need no more). */
static char *
json_escape(const char *s)
{
	char *out = malloc(2 * strlen(s) + 1), *p = out;

	for (; *s != '\0'; s++) {
		if (*s == '\n') {
			*p++ = '\\';
			*p++ = 'n';
		} else {
			if (*s == '"' || *s == '\\')
				*p++ = '\\';
			*p++ = *s;
		}
	}
	*p = '\0';
	return out;
}

/*
 * Sends hello and a submit of config (naming the models ./NAME, each
 * beneath the test directory) with output out, on a new connection.
 */
static struct raw *
raw_submit_at(const char *config, const char *const *models, size_t nmodels,
    const char *out, int model_fd)
{
	struct raw *r = calloc(1, sizeof *r);
	char *esc = json_escape(config), *line, *list = strdup(""), *t;
	int fds[2];
	size_t i;

	for (i = 0; i < nmodels; i++) {
		if (asprintf(&t, "%s%s{\"ref\":\"./%s\",\"fd\":%d,\"rel\":"
		    "\"%s\",\"path\":\"%s\"}", list, i ? "," : "", models[i],
		    model_fd, models[i], dir) < 0)
			abort();
		free(list);
		list = t;
	}
	if (asprintf(&line, "{\"v\":%d,\"id\":1,\"op\":\"hello\"}\n"
	    "{\"v\":%d,\"id\":2,\"op\":\"submit\",\"config\":\"%s\","
	    "\"config_name\":\"hostile.yml\",\"cwd\":\"%s\",\"out\":\"%s/%s\","
	    "\"out_name\":\"%s\",\"out_fd\":1,\"fds\":2,\"models\":[%s]}\n",
	    PROTO_VERSION, PROTO_VERSION, esc, dir, dir, out, out, list) < 0)
		abort();
	free(esc);
	free(list);
	fds[0] = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	fds[1] = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	r->fd = td_raw_connect();
	if (r->fd < 0 || !td_send_fds(r->fd, line, strlen(line), fds, 2))
		tap_diag("raw submit: cannot send: %s", strerror(errno));
	close(fds[0]);
	close(fds[1]);
	free(line);
	return r;
}

/* The models' directory is the request's first descriptor (index 0). */
static struct raw *
raw_submit(const char *config, const char *const *models, size_t nmodels,
    const char *out)
{
	return raw_submit_at(config, models, nmodels, out, 0);
}

/*
 * The next line from r (a new string), waiting up to ms; NULL on time
 * out or end of stream.  ms == 0 only looks.
 */
static char *
raw_line(struct raw *r, int ms)
{
	struct pollfd p;
	char *nl, *line;
	ssize_t n;

	for (;;) {
		if ((nl = memchr(r->buf, '\n', r->len)) != NULL) {
			line = strndup(r->buf, (size_t)(nl - r->buf));
			r->len -= (size_t)(nl + 1 - r->buf);
			memmove(r->buf, nl + 1, r->len);
			return line;
		}
		p.fd = r->fd;
		p.events = POLLIN;
		if (r->len == sizeof r->buf || poll(&p, 1, ms) != 1)
			return NULL;
		if ((n = read(r->fd, r->buf + r->len, sizeof r->buf - r->len)) <=
		    0)
			return NULL;
		r->len += (size_t)n;
	}
}

/* The reply to request id (other lines skipped), as raw_line(). */
static char *
raw_reply(struct raw *r, int id, int ms)
{
	char key[32], *line;

	snprintf(key, sizeof key, "{\"id\":%d,", id);
	while ((line = raw_line(r, ms)) != NULL) {
		if (strncmp(line, key, strlen(key)) == 0)
			return line;
		free(line);
	}
	return NULL;
}

static void
raw_close(struct raw *r)
{
	if (r->fd >= 0)
		close(r->fd);
	free(r);
}

/*
 * A model entry that names the output's descriptor (index 1, out_fd) is
 * refused as one: the daemon compared the index with the descriptor's
 * number, let it through, and the job read through descriptor -1.
 */
static void
test_model_on_out_fd(void)
{
	static const char *const model = "a";
	static const char cfg[] = "merge_method: passthrough\nmodels:\n"
	    "  - model: ./a\n";
	struct raw *r;
	char *line;

	r = raw_submit_at(cfg, &model, 1, "out-on-out", 1);
	free(raw_reply(r, 1, 20000));
	line = raw_reply(r, 2, 60000);
	ok(line != NULL && strstr(line, "\"ok\":false") && strstr(line,
	    "a 'models' entry needs ref, rel and the index of a descriptor "
	    "sent with the request"), "a model entry on the output's "
	    "descriptor is refused, saying so");
	tap_diag("%s", line ? line : "(no reply)");
	free(line);
	raw_close(r);
}

/*
 * mergectl status from another connection, with a safety net: another
 * user's (merged-alice's, of the team daemon's group) where the test
 * runs as root and the account exists, else the test's own.
 */
static int
status_answered(void)
{
	char *o = NULL;
	int rc;

	if (other_user)
		rc = td_as("merged-alice", &o, "timeout %d %s status", SAFETY,
		    tl_mergectl);
	else
		rc = tl_runf(&o, "cd %s && MERGED_SOCKET=%s timeout %d %s "
		    "status 2>&1", dir, td_sock, SAFETY, tl_mergectl);
	if (rc != 0)
		tap_diag("status: %d: %s", rc, o ? o : "");
	free(o);
	return rc == 0;
}

/*
 * A daemon still blocked opening the FIFO for reading (as before the
 * fix) gets a writer, which unblocks it, so the test can end.
 */
static void
fifo_release(const char *path)
{
	int fd = open(path, O_WRONLY | O_NONBLOCK | O_CLOEXEC);

	if (fd >= 0)
		close(fd);
}

/* A copy of model a with file replaced by a FIFO. */
static void
fifo_model(const char *name, const char *file)
{
	char *o = NULL;
	int rc;

	rc = tl_runf(&o, "cd %s && rm -rf %s && cp -r a %s && rm %s/%s && "
	    "mkfifo %s/%s 2>&1", dir, name, name, name, file, name, file);
	if (rc != 0) {
		tap_diag("fixture %s: %s", name, o ? o : "");
		exit(99);
	}
	free(o);
}

/*
 * config.json or model.safetensors as a FIFO: the submit is refused,
 * naming the file, and nobody ever writes to the FIFO; meanwhile another
 * client is answered.
 */
static void
test_fifo_input(const char *file)
{
	const char *model = "fifo-in";
	char cfg[256], want[1024], path[1024], *hello, *reply;
	struct raw *r;

	fifo_model(model, file);
	snprintf(path, sizeof path, "%s/%s/%s", dir, model, file);
	snprintf(cfg, sizeof cfg, "merge_method: passthrough\nmodels:\n"
	    "  - model: ./%s\n", model);
	r = raw_submit(cfg, &model, 1, "out-fifo");
	hello = raw_reply(r, 1, SAFETY * 1000);
	ok(hello != NULL && strstr(hello, "\"ok\":true"), "%s as a FIFO: "
	    "hello answered; the submit is handled next", file);
	ok(status_answered(), "%s as a FIFO: another user's status is "
	    "answered, with nobody writing to the FIFO", file);
	reply = raw_reply(r, 2, SAFETY * 1000);
	snprintf(want, sizeof want, "%s/%s/%s: is a FIFO, not a regular file",
	    dir, model, file);
	ok(reply != NULL && strstr(reply, "\"code\":\"bad_config\"") &&
	    strstr(reply, want), "%s as a FIFO: the submit is refused (exit "
	    "3), saying so", file);
	if (reply == NULL || strstr(reply, want) == NULL)
		tap_diag("want \"%s\", got: %s", want, reply ? reply : "nothing");
	fifo_release(path);
	free(hello);
	free(reply);
	raw_close(r);
}

/* The same through mergectl, which prints the daemon's message. */
static void
test_fifo_mergectl(void)
{
	char *o = NULL, path[1024];
	int rc;

	fifo_model("fifo-cfg", "config.json");
	tl_write_at(dir, "fifo-cfg.yml", "merge_method: passthrough\n"
	    "models:\n  - model: ./fifo-cfg\n");
	rc = tl_runf(&o, "cd %s && MERGED_SOCKET=%s timeout %d %s submit "
	    "fifo-cfg.yml -o out-fifo-cfg 2>&1", dir, td_sock, SAFETY,
	    tl_mergectl);
	ok_int_eq(rc, 3, "mergectl submit with a FIFO config.json: exit 3");
	ok_str_has(o, "fifo-cfg/config.json: is a FIFO, not a regular file",
	    "naming the file");
	free(o);
	rc = tl_runf(&o, "cd %s && timeout %d %s run fifo-cfg.yml "
	    "out-fifo-run 2>&1", dir, SAFETY, tl_mergectl);
	ok_int_eq(rc, 3, "mergectl run with a FIFO config.json: exit 3");
	ok_str_has(o, "fifo-cfg/config.json: is a FIFO, not a regular file",
	    "with the same message");
	free(o);
	snprintf(path, sizeof path, "%s/fifo-cfg/config.json", dir);
	fifo_release(path);
	/* The config file itself, which the client reads. */
	snprintf(path, sizeof path, "%s/fifo.yml", dir);
	ok(mkfifo(path, 0644) == 0, "a FIFO as the config file");
	rc = tl_runf(&o, "cd %s && MERGED_SOCKET=%s timeout %d %s submit "
	    "fifo.yml -o out-fifo-yml 2>&1", dir, td_sock, SAFETY,
	    tl_mergectl);
	ok(rc == 3 && strstr(o, "fifo.yml: not a regular file"), "mergectl "
	    "submit refuses it at once, exit 3 (%d: %s)", rc, o);
	free(o);
	rc = tl_runf(&o, "cd %s && timeout %d %s run fifo.yml out-fifo-yml "
	    "2>&1", dir, SAFETY, tl_mergectl);
	ok(rc == 3 && strstr(o, "cannot read the config: not a regular file"),
	    "and so does mergectl run (%d: %s)", rc, o);
	free(o);
	fifo_release(path);
}

/*
 * tokenizer.json as a FIFO is read only when a job ends: two such jobs
 * once held both merge slots for good.  Now they fail, naming the file,
 * and a third job runs, while nobody writes to the FIFO.
 */
static void
test_fifo_tokenizer(void)
{
	char *o = NULL, *s, path[1024];
	int rc, j1, j2;

	fifo_model("fifo-tok", "tokenizer.json");
	snprintf(path, sizeof path, "%s/fifo-tok/tokenizer.json", dir);
	tl_write_at(dir, "fifo-tok.yml", "merge_method: passthrough\n"
	    "models:\n  - model: ./fifo-tok\n");
	j1 = td_submit("fifo-tok.yml -o out-tok1");
	j2 = td_submit("fifo-tok.yml -o out-tok2");
	ok(j1 && j2, "tokenizer.json as a FIFO: two jobs are accepted "
	    "(planning does not read it)");
	rc = tl_runf(&o, "cd %s && MERGED_SOCKET=%s timeout %d %s submit "
	    "plain.yml -o out-after-tok --wait --quiet 2>&1", dir, td_sock,
	    SAFETY, tl_mergectl);
	ok_int_eq(rc, 0, "tokenizer.json as a FIFO: a third job runs to the "
	    "end behind them, with nobody writing to the FIFO");
	free(o);
	ok(status_answered(), "tokenizer.json as a FIFO: status is answered");
	rc = tl_runf(&o, "cd %s && MERGED_SOCKET=%s timeout %d %s watch %d "
	    "--quiet 2>&1", dir, td_sock, SAFETY, tl_mergectl, j1);
	ok_int_eq(rc, 1, "tokenizer.json as a FIFO: the job fails (exit 1)");
	free(o);
	s = td_job_field(j1, "error");
	ok_str_has(s, "tokenizer.json: is a FIFO, not a regular file",
	    "naming the file");
	free(s);
	fifo_release(path);
	rc = tl_runf(&o, "cd %s && MERGED_SOCKET=%s timeout %d %s watch %d "
	    "--quiet 2>&1", dir, td_sock, SAFETY, tl_mergectl, j2);
	ok_int_eq(rc, 1, "and so does the second");
	free(o);
}

static void
put_le64(uint8_t *p, uint64_t v)
{
	int i;

	for (i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

/*
 * A model of n empty tensors behind one small real one, written as a
 * safetensors file is: an 8-byte little-endian header length, the JSON
 * header (padded with spaces to 8 bytes), then the data.
 */
static void
write_zero_model(const char *name, size_t n)
{
	const size_t rows = 64, cols = 1024, data = rows * cols * 4;
	char path[1024], *hdr;
	size_t cap = 160 + n * 96, len, i;
	uint8_t lenbuf[8], *zeros;
	FILE *f;

	snprintf(path, sizeof path, "%s/%s", dir, name);
	mkdir(path, 0755);
	hdr = malloc(cap);
	len = (size_t)snprintf(hdr, cap, "{\"model.embed_tokens.weight\":"
	    "{\"dtype\":\"F32\",\"shape\":[%zu,%zu],\"data_offsets\":[0,%zu]}",
	    rows, cols, data);
	for (i = 0; i < n; i++)
		len += (size_t)snprintf(hdr + len, cap - len, ",\"model.layers.0."
		    "x%zu.weight\":{\"dtype\":\"F32\",\"shape\":[0],"
		    "\"data_offsets\":[%zu,%zu]}", i, data, data);
	hdr[len++] = '}';
	while (len % 8 != 0)
		hdr[len++] = ' ';
	put_le64(lenbuf, len);
	zeros = calloc(1, data);
	snprintf(path, sizeof path, "%s/%s/model.safetensors", dir, name);
	if ((f = fopen(path, "wb")) == NULL || fwrite(lenbuf, 8, 1, f) != 1 ||
	    fwrite(hdr, len, 1, f) != 1 || fwrite(zeros, data, 1, f) != 1 ||
	    fclose(f) != 0) {
		tap_diag("cannot write %s", path);
		exit(99);
	}
	free(zeros);
	free(hdr);
	snprintf(path, sizeof path, "%s/config.json", name);
	tl_write_at(dir, path, "{\"architectures\":[\"LlamaForCausalLM\"],"
	    "\"model_type\":\"llama\",\"num_hidden_layers\":1}\n");
}

/* The merge of ZERO_MODELS copies of the empty-tensor model. */
static char *
zero_config(const char *const *models)
{
	char *cfg = strdup("merge_method: linear\nmodels:\n"), *t;
	size_t i;

	for (i = 0; i < ZERO_MODELS; i++) {
		if (asprintf(&t, "%s  - model: ./%s\n    parameters:\n"
		    "      weight: 1.0\n", cfg, models[i]) < 0)
			abort();
		free(cfg);
		cfg = t;
	}
	return cfg;
}

/* Does the daemon's log hold text yet?  Waits up to SAFETY seconds. */
static bool
log_has(const char *text)
{
	char path[1024], *log;
	bool has = false;
	int i;

	snprintf(path, sizeof path, "%s/merged.log", dir);
	for (i = 0; i < SAFETY * 20 && !has; i++) {
		log = tl_read(path, NULL);
		has = log != NULL && strstr(log, text) != NULL;
		free(log);
		if (!has)
			td_sleep_ms(50);
	}
	return has;
}

/*
 * A client that goes away while its submit is planned: the job is
 * dropped, its descriptors closed, and nothing is recorded.
 */
static void
test_vanish_planning(pid_t pid, const char *cfg,
    const char *const *models)
{
	char *hello, *o = NULL;
	struct raw *r;
	int before, after = -1, i, rc;

	before = td_fd_count(pid);
	r = raw_submit(cfg, models, ZERO_MODELS, "out-vanished");
	hello = raw_reply(r, 1, SAFETY * 1000);
	raw_close(r);
	ok(hello != NULL, "a client sends a submit and goes away while it is "
	    "planned");
	free(hello);
	ok(log_has("went away while its request 2 was planned: dropped"),
	    "the daemon drops the job when the plan is back");
	/* Not more than before: a connection of an earlier step may still
	 * have been closing when "before" was counted. */
	for (i = 0; i < SAFETY * 20 && (after < 0 || after > before); i++) {
		if ((after = td_fd_count(pid)) > before)
			td_sleep_ms(50);
	}
	ok(after >= 0 && after <= before, "and closes its descriptors (%d, "
	    "%d before)", after, before);
	rc = td_ctl(&o, "list --json");
	ok(rc == 0 && strstr(o, "out-vanished") == NULL, "nothing is "
	    "recorded");
	free(o);
}

/*
 * 60,000 empty tensors: another user's status is answered while the
 * submit is being planned (its reply not yet sent), and the job then
 * runs to the end; a second such submit in flight does not hold up
 * SIGTERM, and is refused (never accepted) or recorded interrupted.
 */
static void
test_zero_tensors(pid_t *pid)
{
	static const char *const models[ZERO_MODELS] = { "z1", "z2", "z3",
		"z4" };
	char *cfg, *hello, *reply, *o = NULL, *early, *p;
	struct raw *r;
	int rc, id = 0;
	size_t i;

	for (i = 0; i < ZERO_MODELS; i++)
		write_zero_model(models[i], ZERO_TENSORS);
	cfg = zero_config(models);
	r = raw_submit(cfg, models, ZERO_MODELS, "out-zero");
	hello = raw_reply(r, 1, SAFETY * 1000);
	ok(hello != NULL && strstr(hello, "\"ok\":true"), "%d empty tensors: "
	    "hello answered; the submit is handled next", ZERO_TENSORS);
	free(hello);
	rc = status_answered();
	early = raw_reply(r, 2, 0);
	ok(rc && early == NULL, "%d empty tensors: another user's status is "
	    "answered while the submit is still being planned", ZERO_TENSORS);
	if (early != NULL)
		tap_diag("the submit was answered first: %s", early);
	reply = early != NULL ? early : raw_reply(r, 2, SAFETY * 1000);
	if (reply != NULL && (p = strstr(reply, "\"job\":{\"id\":")) != NULL)
		id = atoi(p + strlen("\"job\":{\"id\":"));
	ok(id > 0, "and the submit is then accepted (%s)", reply ? reply :
	    "no reply");
	free(reply);
	raw_close(r);
	rc = tl_runf(&o, "cd %s && MERGED_SOCKET=%s timeout %d %s watch %d "
	    "--quiet 2>&1", dir, td_sock, SAFETY * 2, tl_mergectl, id);
	ok_int_eq(rc, 0, "the job of %d empty tensors runs to the end",
	    ZERO_TENSORS);
	free(o);
	test_vanish_planning(*pid, cfg, models);

	/* SIGTERM while a second one is being planned. */
	r = raw_submit(cfg, models, ZERO_MODELS, "out-zero2");
	hello = raw_reply(r, 1, SAFETY * 1000);
	rc = status_answered();
	early = raw_reply(r, 2, 0);
	ok(hello != NULL && rc && early == NULL, "again: status answered while "
	    "the submit is being planned");
	free(hello);
	rc = td_stop(*pid, SIGTERM);
	ok_int_eq(rc, 0, "SIGTERM with a %d-tensor plan in flight: merged "
	    "exits 0", ZERO_TENSORS);
	reply = early != NULL ? early : raw_reply(r, 2, SAFETY * 1000);
	raw_close(r);
	snprintf(opts, sizeof opts, "%s--max-running 2 --memory 256M", mode);
	*pid = td_start(opts, NULL);
	id = 0;
	if (reply != NULL && (p = strstr(reply, "\"job\":{\"id\":")) != NULL)
		id = atoi(p + strlen("\"job\":{\"id\":"));
	if (id == 0) {
		ok(reply != NULL && strstr(reply, "\"code\":\"shutting_down\""),
		    "the submit in flight is refused: \"the daemon is shutting "
		    "down\" (%s)", reply ? reply : "no reply");
		rc = td_ctl(&o, "list --json");
		ok(rc == 0 && strstr(o, "out-zero2") == NULL, "and was never "
		    "accepted");
		free(o);
	} else {
		/* Its plan finished just before the signal came. */
		tap_diag("the plan was done before SIGTERM: job %d", id);
		o = td_job_field(id, "state");
		ok(strcmp(o, "interrupted") == 0 || strcmp(o, "done") == 0,
		    "the job accepted just before SIGTERM is recorded "
		    "interrupted (or done): %s", o);
		free(o);
		ok(1, "(no refusal to check)");
	}
	free(reply);
	free(cfg);
}

int
main(int argc, char **argv)
{
	pid_t pid;

	tl_init(argc, argv);
	tap_plan_lazy();
	dir = tl_tmpdir("hostile");
	td_init(dir);
	tl_gen_at(dir, "a", "--family llama --seed 1");
	tl_write_at(dir, "plain.yml", "merge_method: passthrough\nmodels:\n"
	    "  - model: ./a\n");
	/* A team daemon when another user can ask it for the status. */
	other_user = geteuid() == 0 && getpwnam("merged-alice") != NULL &&
	    getgrnam("merged") != NULL && tl_runf(NULL, "cd %s && chmod 755 . "
	    "&& mkdir -p run && chgrp merged run && chmod 750 run", dir) == 0;
	if (!other_user && getenv("CI") != NULL && strcmp(getenv("CI"),
	    "true") == 0)
		ok(0, "CI: root and the account merged-alice are needed to ask "
		    "as another user (contrib/deps.sh --test)");
	mode = other_user ? "--team --group merged " : "";
	/* Two merge slots, as when the tokenizer FIFO held both. */
	snprintf(opts, sizeof opts, "%s--max-running 2 --memory 256M", mode);
	pid = td_start(opts, NULL);
	test_model_on_out_fd();
	test_fifo_input("config.json");
	test_fifo_input("model.safetensors");
	test_fifo_mergectl();
	test_fifo_tokenizer();
	test_zero_tensors(&pid);
	ok_int_eq(td_stop(pid, SIGTERM), 0, "the daemon stops cleanly at "
	    "the end");
	return tap_done();
}
