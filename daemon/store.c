/* SPDX-License-Identifier: MIT */
/*
 * store.c: the job store, one SQLite database in the state directory.
 *
 * SQLite is the source of truth for every job: owner, config, options,
 * output, state, progress, timings, error, seed, the inputs' sizes and
 * times, and which output shards are complete (so that a resumed job does
 * not redo them).  Finished jobs' rows and their log lines are deleted
 * on request or by the retention policy (retain.c); ids are never reused
 * (AUTOINCREMENT), so an old --after or a script's job number cannot
 * come to mean another job.  WAL journaling and short transactions: a crash loses
 * at most the progress since the last update, never a finished job.
 * Statements are prepared once at open and finalised at close.  The
 * connection is used on the loop thread only (STYLE.md 2.2).  The store
 * keeps rows, not the daemon's job list: loading hands each job to the
 * caller (store_job_load), which owns it.  SQLite's SQLITE_* codes are
 * converted here and nowhere else.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>
#include <sqlite3.h>

#include "daemon.h"
#include "xmalloc.h"

/*
 * The numbered migrations of PRAGMA user_version: migrations[v - 1]
 * brings a version v store to v + 1, and a store is brought from its
 * version to the last in one transaction.  1 is the first schema.  A
 * schema change appends one here and changes `schema` below, which a new
 * store gets whole; a shipped migration is never edited.
 */
static const char *const migrations[] = {
	/* 1 -> 2: the staging directory's identity, kept through the publish
	 * (a resume tells its own output from somebody else's). */
	"ALTER TABLE jobs ADD COLUMN stage_dev INTEGER;"
	" ALTER TABLE jobs ADD COLUMN stage_ino INTEGER;",
	/* 2 -> 3: --lora-merge-dtype (a dtype's config name; NULL: none). */
	"ALTER TABLE jobs ADD COLUMN lora_dtype TEXT;",
	/* 3 -> 4: the job's kind (vocab.h); every older job is a merge. */
	"ALTER TABLE jobs ADD COLUMN kind TEXT NOT NULL DEFAULT 'merge';",
	/* 4 -> 5: job groups (pipelines): a list of dependencies (ids,
	 * space-separated; after's one moves there), a stage's group and
	 * name, a pipeline's stage directory, whether its stages are kept.
	 * after keeps the first dependency. */
	"ALTER TABLE jobs ADD COLUMN deps TEXT NOT NULL DEFAULT '';"
	" UPDATE jobs SET deps = CAST(after AS TEXT) WHERE after != 0;"
	" ALTER TABLE jobs ADD COLUMN grp INTEGER NOT NULL DEFAULT 0;"
	" ALTER TABLE jobs ADD COLUMN stage TEXT;"
	" ALTER TABLE jobs ADD COLUMN inter_dir TEXT;"
	" ALTER TABLE jobs ADD COLUMN keep_inter INTEGER NOT NULL DEFAULT 1;",
	/* 5 -> 6: submit --on-done, the hook's words as a JSON array
	 * (NULL: none). */
	"ALTER TABLE jobs ADD COLUMN on_done TEXT;",
	/* 6 -> 7: the status page's history (merged --http): the memory
	 * in use and the jobs running and queued, sampled.  (The schema
	 * below has made it already: store_open runs it first.) */
	"CREATE TABLE IF NOT EXISTS samples (ts REAL NOT NULL,"
	" used INTEGER NOT NULL, budget INTEGER NOT NULL,"
	" running INTEGER NOT NULL, queued INTEGER NOT NULL);"
	" CREATE INDEX IF NOT EXISTS samples_ts ON samples(ts);",
	/* 7 -> 8: merged --backend slurm: the job's batch job (0: none),
	 * what its output must be (graph_plan_verify_spec) and its output
	 * directory's identity, so that a restarted daemon reattaches to
	 * it and knows the directory it reopens by path. */
	"ALTER TABLE jobs ADD COLUMN slurm_id INTEGER NOT NULL DEFAULT 0;"
	" ALTER TABLE jobs ADD COLUMN slurm_verify TEXT;"
	" ALTER TABLE jobs ADD COLUMN out_dev INTEGER NOT NULL DEFAULT 0;"
	" ALTER TABLE jobs ADD COLUMN out_ino INTEGER NOT NULL DEFAULT 0;",
	/* 8 -> 9: the final stage of a pipeline: its model card's account
	 * of the pipeline (NULL: none), which the stage's plan, made when
	 * it is due, perhaps after a restart, writes as a local run does. */
	"ALTER TABLE jobs ADD COLUMN card TEXT;",
};

/* The dependencies a job may have: a pipeline's stages, or --after. */
#define STORE_MAX_DEPS 4096

/* The bytes of a log line kept (store_log). */
#define STORE_MAX_LOG_LINE 1024

#define STORE_SCHEMA_VERSION \
	(1 + (int)(sizeof migrations / sizeof *migrations))

enum {
	ST_INSERT,
	ST_UPDATE,
	ST_LOAD,
	ST_LOG,
	ST_LOGS,
	ST_DELETE_JOB,
	ST_DELETE_LOGS,
	ST_SAMPLE,
	ST_SAMPLES,
	ST_SAMPLES_PRUNE,
	ST_COUNT
};

struct store {
	sqlite3 *db;
	sqlite3_stmt *st[ST_COUNT];
};

static const char schema[] =
    "CREATE TABLE IF NOT EXISTS jobs ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " owner INTEGER NOT NULL, owner_gid INTEGER NOT NULL, user TEXT,"
    " name TEXT, state TEXT NOT NULL, priority INTEGER NOT NULL,"
    " after INTEGER NOT NULL, config TEXT NOT NULL, config_name TEXT,"
    " cwd TEXT, out_dir TEXT NOT NULL, out_name TEXT NOT NULL,"
    " staging TEXT NOT NULL, memory INTEGER NOT NULL, force INTEGER,"
    " allow_crimes INTEGER, shard_size INTEGER, copy_tokenizer INTEGER,"
    " model_card INTEGER, seed INTEGER NOT NULL, inputs TEXT,"
    " created REAL, started REAL, finished REAL,"
    " bytes_total INTEGER, bytes_done INTEGER, tensors_total INTEGER,"
    " tensors_done INTEGER, shards_done TEXT, error TEXT,"
    " stage_dev INTEGER, stage_ino INTEGER, lora_dtype TEXT,"
    " kind TEXT NOT NULL DEFAULT 'merge', deps TEXT NOT NULL DEFAULT '',"
    " grp INTEGER NOT NULL DEFAULT 0, stage TEXT, inter_dir TEXT,"
    " keep_inter INTEGER NOT NULL DEFAULT 1, on_done TEXT,"
    " slurm_id INTEGER NOT NULL DEFAULT 0, slurm_verify TEXT,"
    " out_dev INTEGER NOT NULL DEFAULT 0,"
    " out_ino INTEGER NOT NULL DEFAULT 0, card TEXT);"
    "CREATE TABLE IF NOT EXISTS logs (job INTEGER NOT NULL,"
    " ts REAL NOT NULL, line TEXT NOT NULL);"
    "CREATE INDEX IF NOT EXISTS logs_job ON logs(job);"
    "CREATE TABLE IF NOT EXISTS samples (ts REAL NOT NULL,"
    " used INTEGER NOT NULL, budget INTEGER NOT NULL,"
    " running INTEGER NOT NULL, queued INTEGER NOT NULL);"
    "CREATE INDEX IF NOT EXISTS samples_ts ON samples(ts);";

static const char *const sql[ST_COUNT] = {
	[ST_INSERT] = "INSERT INTO jobs (owner, owner_gid, user, name, state,"
	    " priority, after, config, config_name, cwd, out_dir, out_name,"
	    " staging, memory, force, allow_crimes, shard_size,"
	    " copy_tokenizer, model_card, seed, lora_dtype, inputs, created,"
	    " kind, deps, grp, stage, inter_dir, keep_inter, on_done, card)"
	    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,"
	    "?,?,?,?)",
	[ST_UPDATE] = "UPDATE jobs SET state=?, started=?, finished=?,"
	    " bytes_total=?, bytes_done=?, tensors_total=?, tensors_done=?,"
	    " shards_done=?, error=?, inputs=?, seed=?, stage_dev=?,"
	    " stage_ino=?, slurm_id=?, slurm_verify=?, staging=?, out_dev=?,"
	    " out_ino=? WHERE id=?",
	[ST_LOAD] = "SELECT id, owner, owner_gid, user, name, state, priority,"
	    " after, config, config_name, cwd, out_dir, out_name, staging,"
	    " memory, force, allow_crimes, shard_size, copy_tokenizer,"
	    " model_card, seed, lora_dtype, inputs, created, started, finished,"
	    " bytes_total, bytes_done, tensors_total, tensors_done,"
	    " shards_done, error, stage_dev, stage_ino, kind, deps, grp, stage,"
	    " inter_dir, keep_inter, on_done, slurm_id, slurm_verify, out_dev,"
	    " out_ino, card FROM jobs ORDER BY id",
	[ST_LOG] = "INSERT INTO logs (job, ts, line) VALUES (?,?,?)",
	[ST_LOGS] = "SELECT ts, line FROM logs WHERE job=? ORDER BY rowid",
	[ST_DELETE_JOB] = "DELETE FROM jobs WHERE id=?",
	[ST_DELETE_LOGS] = "DELETE FROM logs WHERE job=?",
	[ST_SAMPLE] = "INSERT INTO samples (ts, used, budget, running, queued)"
	    " VALUES (?,?,?,?,?)",
	[ST_SAMPLES] = "SELECT ts, used, budget, running, queued FROM samples"
	    " WHERE ts >= ? ORDER BY ts",
	[ST_SAMPLES_PRUNE] = "DELETE FROM samples WHERE ts < ?",
};

static int
store_err(struct store *s, const char *what, char **cause)
{
	if (cause != NULL)
		*cause = xasprintf("%s: %s", what, sqlite3_errmsg(s->db));
	else
		log_warnx("store: %s: %s", what, sqlite3_errmsg(s->db));
	return -EIO;
}

static int
store_version(struct store *s)
{
	sqlite3_stmt *st;
	int v = -1;

	if (sqlite3_prepare_v2(s->db, "PRAGMA user_version", -1, &st, NULL) !=
	    SQLITE_OK)
		return -1;
	if (sqlite3_step(st) == SQLITE_ROW)
		v = sqlite3_column_int(st, 0);
	sqlite3_finalize(st);
	return v;
}

/*
 * Brings an older store up to STORE_SCHEMA_VERSION in one transaction,
 * and refuses a newer one: its columns would be lost on the next write.
 * A store already current is not written to, so a start adds nothing to
 * the WAL.
 */
static int
store_migrate(struct store *s, const char *path, char **cause)
{
	struct xbuf q = { 0 };
	char *err = NULL;
	int v = store_version(s), rc, i;

	if (v == STORE_SCHEMA_VERSION)
		return 0;
	if (v < 0 || v > STORE_SCHEMA_VERSION) {
		*cause = xasprintf("%s: schema version %d is not one this "
		    "merged knows (%d); is it a newer merged's store?", path,
		    v, STORE_SCHEMA_VERSION);
		return -EIO;
	}
	/* Version 0 is a store just created, with the current schema. */
	xbuf_printf(&q, "BEGIN IMMEDIATE;");
	for (i = v > 0 ? v : STORE_SCHEMA_VERSION; i < STORE_SCHEMA_VERSION;
	    i++)
		xbuf_printf(&q, " %s", migrations[i - 1]);
	xbuf_printf(&q, " PRAGMA user_version = %d; COMMIT;",
	    STORE_SCHEMA_VERSION);
	rc = sqlite3_exec(s->db, q.data, NULL, NULL, &err);
	xbuf_free(&q);
	if (rc != SQLITE_OK) {
		*cause = xasprintf("cannot upgrade %s: %s", path, err ? err :
		    sqlite3_errmsg(s->db));
		sqlite3_free(err);
		sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
		return -EIO;
	}
	return 0;
}

int
store_open(const char *path, struct store **out, char **cause)
{
	struct store *s = xcalloc(1, sizeof *s);
	char *err = NULL;
	int i, rc;

	*out = NULL;
	rc = sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE |
	    SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
	if (rc != SQLITE_OK) {
		*cause = xasprintf("cannot open %s: %s", path, s->db ?
		    sqlite3_errmsg(s->db) : sqlite3_errstr(rc));
		goto fail;
	}
	sqlite3_busy_timeout(s->db, 2000);
	/* WAL survives crashes with short transactions; synchronous=FULL
	 * makes a committed state change durable before we act on it. */
	if (sqlite3_exec(s->db, "PRAGMA journal_mode=WAL;"
	    "PRAGMA synchronous=FULL;", NULL, NULL, &err) != SQLITE_OK ||
	    sqlite3_exec(s->db, schema, NULL, NULL, &err) != SQLITE_OK) {
		*cause = xasprintf("cannot initialise %s: %s", path,
		    err ? err : sqlite3_errmsg(s->db));
		sqlite3_free(err);
		goto fail;
	}
	if (store_migrate(s, path, cause) != 0)
		goto fail;
	for (i = 0; i < ST_COUNT; i++) {
		if (sqlite3_prepare_v2(s->db, sql[i], -1, &s->st[i], NULL) !=
		    SQLITE_OK) {
			store_err(s, "prepare", cause);
			goto fail;
		}
	}
	*out = s;
	return 0;
fail:
	store_close(s);
	return -EIO;
}

void
store_close(struct store *s)
{
	int i;

	if (s == NULL)
		return;
	for (i = 0; i < ST_COUNT; i++)
		sqlite3_finalize(s->st[i]);
	if (s->db != NULL && sqlite3_close(s->db) != SQLITE_OK)
		log_warnx("store: close: %s", sqlite3_errmsg(s->db));
	free(s);
}

/*
 * Jobs that were live (merging or waiting) when the daemon stopped.  The
 * states are spelt from proto's table: they are names on disk too.
 */
int
store_recover(struct store *s, bool slurm)
{
	char *live, *stmt;
	int rc = 0;

	/* A batch job on Slurm goes on without the daemon: a daemon of
	 * that backend reattaches to it (slurm.c). */
	live = proto_state_names(PROTO_STATE_LIVE, "','", "','");
	stmt = xasprintf("UPDATE jobs SET state='%s', error='the daemon "
	    "stopped; resume it with mergectl resume' WHERE state IN ('%s')"
	    "%s", proto_state_name(JOB_INTERRUPTED), live, slurm ?
	    " AND slurm_id = 0" : "");
	if (sqlite3_exec(s->db, stmt, NULL, NULL, NULL) != SQLITE_OK)
		rc = store_err(s, "recover", NULL);
	free(stmt);
	free(live);
	return rc;
}

static void
bind_text(sqlite3_stmt *st, int i, const char *v)
{
	if (v != NULL)
		sqlite3_bind_text(st, i, v, -1, SQLITE_TRANSIENT);
	else
		sqlite3_bind_null(st, i);
}

static int
step_done(struct store *s, sqlite3_stmt *st, const char *what)
{
	int rc = sqlite3_step(st);

	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	if (rc != SQLITE_DONE)
		return store_err(s, what, NULL);
	return 0;
}

/*
 * The merge options as the columns memory, force, allow_crimes,
 * shard_size, copy_tokenizer, model_card, seed and lora_dtype, in that
 * order from column (or parameter) i; each returns the next index.  The two
 * directions of the one mapping, side by side.
 */
static int
store_bind_opts(sqlite3_stmt *st, int i, const struct graph_merge_opts *o)
{
	sqlite3_bind_int64(st, i++, (sqlite3_int64)o->memory);
	sqlite3_bind_int(st, i++, o->force);
	sqlite3_bind_int(st, i++, o->allow_crimes);
	sqlite3_bind_int64(st, i++, (sqlite3_int64)o->shard_size);
	sqlite3_bind_int(st, i++, o->copy_tokenizer);
	sqlite3_bind_int(st, i++, o->model_card);
	sqlite3_bind_int64(st, i++, (sqlite3_int64)o->seed);
	bind_text(st, i++, o->lora_dtype != GRAPH_DT_NONE ?
	    graph_dtype_hf_name(o->lora_dtype) : NULL);
	return i;
}

static int
store_col_opts(sqlite3_stmt *st, int i, struct graph_merge_opts *o)
{
	const char *dt, *suggest;

	o->memory = (uint64_t)sqlite3_column_int64(st, i++);
	o->force = sqlite3_column_int(st, i++) != 0;
	o->allow_crimes = sqlite3_column_int(st, i++) != 0;
	o->shard_size = (uint64_t)sqlite3_column_int64(st, i++);
	o->copy_tokenizer = sqlite3_column_int(st, i++) != 0;
	o->model_card = sqlite3_column_int(st, i++) != 0;
	o->seed = (uint64_t)sqlite3_column_int64(st, i++);
	o->has_seed = true;	/* jobs are stored once planned */
	dt = (const char *)sqlite3_column_text(st, i++);
	o->lora_dtype = dt != NULL ? graph_dtype_from_config_name(dt,
	    &suggest) : GRAPH_DT_NONE;
	return i;
}

/*
 * Several writes as one: a pipeline and its stages are recorded whole
 * or not at all (a kill between two inserts would leave a group short of
 * stages).  store_tx(s, true) begins, store_tx(s, false) commits,
 * store_tx_abort(s) rolls back what it wrote since it began.
 */
int
store_tx_abort(struct store *s)
{
	if (sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL) != SQLITE_OK)
		return store_err(s, "rollback", NULL);
	return 0;
}

int
store_tx(struct store *s, bool begin)
{
	if (sqlite3_exec(s->db, begin ? "BEGIN IMMEDIATE" : "COMMIT", NULL,
	    NULL, NULL) != SQLITE_OK)
		return store_err(s, begin ? "begin" : "commit", NULL);
	return 0;
}

/* "3 7 12": a job's dependencies as the store keeps them. */
static char *
store_deps_text(const struct djob *j)
{
	struct xbuf x = { 0 };
	size_t i;

	xbuf_add(&x, "", 0);
	for (i = 0; i < j->ndeps; i++)
		xbuf_printf(&x, "%s%llu", i ? " " : "",
		    (unsigned long long)j->deps[i]);
	return xbuf_take(&x);
}

/* The list back; a malformed one fails the job, saying so. */
static void
store_deps_parse(struct djob *j, const char *s)
{
	unsigned long long v;
	char *end;

	j->deps = xcalloc(STORE_MAX_DEPS + 1, sizeof *j->deps);
	while (s != NULL && *s != '\0') {
		errno = 0;
		v = strtoull(s, &end, 10);
		if (end == s || errno != 0 || v == 0 ||
		    j->ndeps == STORE_MAX_DEPS || (*end != ' ' &&
		    *end != '\0')) {
			j->state = JOB_FAILED;
			free(j->error);
			j->error = xstrdup("the store's list of the jobs it runs "
			    "after is malformed");
			return;
		}
		j->deps[j->ndeps++] = v;
		s = *end == ' ' ? end + 1 : end;
	}
}

int
store_job_insert(struct store *s, struct djob *j)
{
	sqlite3_stmt *st = s->st[ST_INSERT];
	char *deps;
	int i = 1, rc;

	sqlite3_bind_int64(st, i++, j->owner);
	sqlite3_bind_int64(st, i++, j->owner_gid);
	bind_text(st, i++, j->user);
	bind_text(st, i++, j->name);
	bind_text(st, i++, proto_state_name(j->state));
	sqlite3_bind_int64(st, i++, j->priority);
	sqlite3_bind_int64(st, i++, j->ndeps > 0 ?
	    (sqlite3_int64)j->deps[0] : 0);
	bind_text(st, i++, j->config);
	bind_text(st, i++, j->config_name);
	bind_text(st, i++, j->cwd);
	bind_text(st, i++, j->out_dir);
	bind_text(st, i++, j->out_name);
	bind_text(st, i++, j->staging);
	i = store_bind_opts(st, i, &j->opts);
	bind_text(st, i++, j->inputs);
	sqlite3_bind_double(st, i++, j->created);
	bind_text(st, i++, proto_kind_name(j->kind));
	deps = store_deps_text(j);
	bind_text(st, i++, deps);
	free(deps);
	sqlite3_bind_int64(st, i++, (sqlite3_int64)j->grp);
	bind_text(st, i++, j->stage);
	bind_text(st, i++, j->inter_dir);
	sqlite3_bind_int(st, i++, !j->drop_inter);
	bind_text(st, i++, j->on_done);
	bind_text(st, i++, j->card);
	if ((rc = step_done(s, st, "insert")) != 0)
		return rc;
	j->id = (uint64_t)sqlite3_last_insert_rowid(s->db);
	return 0;
}

int
store_job_update(struct store *s, const struct djob *j)
{
	sqlite3_stmt *st = s->st[ST_UPDATE];
	int i = 1;

	bind_text(st, i++, proto_state_name(j->state));
	sqlite3_bind_double(st, i++, j->started);
	sqlite3_bind_double(st, i++, j->finished);
	sqlite3_bind_int64(st, i++, (sqlite3_int64)j->prog.bytes_total);
	sqlite3_bind_int64(st, i++, (sqlite3_int64)j->prog.bytes_done);
	sqlite3_bind_int64(st, i++, (sqlite3_int64)j->prog.tensors_total);
	sqlite3_bind_int64(st, i++, (sqlite3_int64)j->prog.tensors_done);
	bind_text(st, i++, j->shards_done);
	bind_text(st, i++, j->error);
	bind_text(st, i++, j->inputs);
	sqlite3_bind_int64(st, i++, (sqlite3_int64)j->opts.seed);
	/* Unsigned in SQLite's signed 64 bits: cast there and back. */
	sqlite3_bind_int64(st, i++, (sqlite3_int64)j->stage_dev);
	sqlite3_bind_int64(st, i++, (sqlite3_int64)j->stage_ino);
	sqlite3_bind_int64(st, i++, (sqlite3_int64)j->slurm_id);
	bind_text(st, i++, j->slurm_verify);
	/* The slurm backend names it when the job is handed over. */
	bind_text(st, i++, j->staging);
	sqlite3_bind_int64(st, i++, (sqlite3_int64)j->out_dev);
	sqlite3_bind_int64(st, i++, (sqlite3_int64)j->out_ino);
	sqlite3_bind_int64(st, i++, (sqlite3_int64)j->id);
	return step_done(s, st, "update");
}

static char *
col_text(sqlite3_stmt *st, int i)
{
	const unsigned char *t = sqlite3_column_text(st, i);

	return t != NULL ? xstrdup((const char *)t) : NULL;
}

static struct djob *
store_row(sqlite3_stmt *st)
{
	struct djob *j = xcalloc(1, sizeof *j);
	char *state, *kind;
	int i = 0;

	j->out_fd = -1;
	j->inter_fd = -1;
	j->id = (uint64_t)sqlite3_column_int64(st, i++);
	j->owner = (uint32_t)sqlite3_column_int64(st, i++);
	j->owner_gid = (uint32_t)sqlite3_column_int64(st, i++);
	j->user = col_text(st, i++);
	j->name = col_text(st, i++);
	state = col_text(st, i++);
	if (state == NULL || proto_state_parse(state, &j->state) != 0)
		j->state = JOB_FAILED;
	free(state);
	j->priority = sqlite3_column_int64(st, i++);
	i++;	/* after: the first of deps, which is read below */
	j->config = col_text(st, i++);
	j->config_name = col_text(st, i++);
	j->cwd = col_text(st, i++);
	j->out_dir = col_text(st, i++);
	j->out_name = col_text(st, i++);
	j->staging = col_text(st, i++);
	i = store_col_opts(st, i, &j->opts);
	j->inputs = col_text(st, i++);
	j->created = sqlite3_column_double(st, i++);
	j->started = sqlite3_column_double(st, i++);
	j->finished = sqlite3_column_double(st, i++);
	j->prog.bytes_total = (uint64_t)sqlite3_column_int64(st, i++);
	j->prog.bytes_done = (uint64_t)sqlite3_column_int64(st, i++);
	j->prog.tensors_total = (size_t)sqlite3_column_int64(st, i++);
	j->prog.tensors_done = (size_t)sqlite3_column_int64(st, i++);
	j->shards_done = col_text(st, i++);
	j->error = col_text(st, i++);
	j->stage_dev = (uint64_t)sqlite3_column_int64(st, i++);
	j->stage_ino = (uint64_t)sqlite3_column_int64(st, i++);	/* 0: none */
	kind = col_text(st, i++);
	if (kind == NULL || proto_kind_parse(kind, &j->kind) != 0) {
		/* A kind this merged does not know cannot run here. */
		j->state = JOB_FAILED;
		free(j->error);
		j->error = xasprintf("a job of kind '%s', which this merged "
		    "does not know", kind != NULL ? kind : "?");
	}
	free(kind);
	store_deps_parse(j, (const char *)sqlite3_column_text(st, i++));
	j->grp = (uint64_t)sqlite3_column_int64(st, i++);
	j->stage = col_text(st, i++);
	j->inter_dir = col_text(st, i++);
	j->drop_inter = sqlite3_column_int(st, i++) == 0;
	j->on_done = col_text(st, i++);
	j->slurm_id = (uint64_t)sqlite3_column_int64(st, i++);
	j->slurm_verify = col_text(st, i++);
	j->out_dev = (uint64_t)sqlite3_column_int64(st, i++);
	j->out_ino = (uint64_t)sqlite3_column_int64(st, i++);
	j->card = col_text(st, i++);
	if (j->config == NULL)
		j->config = xstrdup("");
	if (j->out_dir == NULL)
		j->out_dir = xstrdup("");
	if (j->out_name == NULL)
		j->out_name = xstrdup("");
	if (j->staging == NULL)
		j->staging = xstrdup("");
	return j;
}

/*
 * Hands every stored job to row, which owns it from then on: the store
 * keeps no list of jobs, the daemon does (merged.c).
 */
int
store_job_load(struct store *s, void (*row)(struct djob *, void *),
    void *arg)
{
	sqlite3_stmt *st = s->st[ST_LOAD];
	int rc;

	while ((rc = sqlite3_step(st)) == SQLITE_ROW)
		row(store_row(st), arg);
	sqlite3_reset(st);
	if (rc != SQLITE_DONE)
		return store_err(s, "load", NULL);
	return 0;
}

int
store_log(struct store *s, uint64_t job, double ts, const char *line)
{
	sqlite3_stmt *st = s->st[ST_LOG];

	size_t n = strlen(line);

	/* Lines carry client text (tensor names of any length): each is
	 * cut, on a UTF-8 boundary, so a job's log stays readable. */
	if (n > STORE_MAX_LOG_LINE) {
		n = STORE_MAX_LOG_LINE;
		while (n > 0 && ((unsigned char)line[n] & 0xc0) == 0x80)
			n--;
	}
	sqlite3_bind_int64(st, 1, (sqlite3_int64)job);
	sqlite3_bind_double(st, 2, ts);
	sqlite3_bind_text(st, 3, line, (int)n, SQLITE_TRANSIENT);
	return step_done(s, st, "log");
}

/* Appends a job's log lines, oldest first, to the JSON array lines. */
int
store_logs(struct store *s, uint64_t job, cJSON *lines, cJSON *times)
{
	sqlite3_stmt *st = s->st[ST_LOGS];
	int rc;

	sqlite3_bind_int64(st, 1, (sqlite3_int64)job);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		cJSON_AddItemToArray(lines, cJSON_CreateString(
		    (const char *)sqlite3_column_text(st, 1)));
		cJSON_AddItemToArray(times, cJSON_CreateNumber(
		    sqlite3_column_double(st, 0)));
	}
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	if (rc != SQLITE_DONE)
		return store_err(s, "logs", NULL);
	return 0;
}

/*
 * Deletes n jobs and their log lines in one transaction: all of them or,
 * on failure, none (the caller then keeps them in memory too).
 */
int
store_job_delete(struct store *s, const uint64_t *ids, size_t n)
{
	size_t i;
	int rc = 0;

	if (n == 0)
		return 0;
	if (sqlite3_exec(s->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) !=
	    SQLITE_OK)
		return store_err(s, "delete: begin", NULL);
	for (i = 0; i < n && rc == 0; i++) {
		sqlite3_bind_int64(s->st[ST_DELETE_LOGS], 1,
		    (sqlite3_int64)ids[i]);
		if ((rc = step_done(s, s->st[ST_DELETE_LOGS], "delete logs")) !=
		    0)
			break;
		sqlite3_bind_int64(s->st[ST_DELETE_JOB], 1,
		    (sqlite3_int64)ids[i]);
		rc = step_done(s, s->st[ST_DELETE_JOB], "delete job");
	}
	if (rc == 0 && sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL) ==
	    SQLITE_OK)
		return 0;
	if (rc == 0)
		rc = store_err(s, "delete: commit", NULL);
	sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
	return rc;
}

/* One sample of the status page's history; older than prune: gone. */
int
store_sample_add(struct store *s, double ts, uint64_t used, uint64_t budget,
    size_t running, size_t queued, double prune)
{
	sqlite3_stmt *st = s->st[ST_SAMPLE];
	int rc;

	sqlite3_bind_double(st, 1, ts);
	sqlite3_bind_int64(st, 2, (sqlite3_int64)used);
	sqlite3_bind_int64(st, 3, (sqlite3_int64)budget);
	sqlite3_bind_int64(st, 4, (sqlite3_int64)running);
	sqlite3_bind_int64(st, 5, (sqlite3_int64)queued);
	if ((rc = step_done(s, st, "sample")) != 0)
		return rc;
	st = s->st[ST_SAMPLES_PRUNE];
	sqlite3_bind_double(st, 1, prune);
	return step_done(s, st, "prune samples");
}

/* The samples since since, each [ts, used, budget, running, queued]. */
int
store_samples(struct store *s, double since, struct cJSON *arr)
{
	sqlite3_stmt *st = s->st[ST_SAMPLES];
	cJSON *row;
	int rc, i;

	sqlite3_bind_double(st, 1, since);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		row = cJSON_CreateArray();
		cJSON_AddItemToArray(row, cJSON_CreateNumber(
		    sqlite3_column_double(st, 0)));
		for (i = 1; i < 5; i++)
			cJSON_AddItemToArray(row, cJSON_CreateNumber((double)
			    sqlite3_column_int64(st, i)));
		cJSON_AddItemToArray(arr, row);
	}
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	return rc == SQLITE_DONE ? 0 : store_err(s, "samples", NULL);
}
