/* SPDX-License-Identifier: MIT */
/*
 * exec-int.h: the executor's private structures (exec.c, exec-admit.c,
 * exec-work.c, exec-readahead.c, cache.c).
 *
 * Ownership and threads: everything here belongs to the loop thread,
 * except while a task runs on the pool.  A task (struct task) is handed to
 * the pool by uv_queue_work and handed back in its after-work callback; in
 * between, the worker touches only what its task names: a cache entry's
 * buffer being filled (LOAD), a unit's output buffer and its tensor's
 * partials for its own quanta (MERGE), a shard descriptor (WRITE and the
 * job tasks).  The plan is immutable and shared.
 */
#ifndef EXEC_INT_H
#define EXEC_INT_H

#include <uv.h>

#include "graph-int.h"

/* Reduction quantum, for tensors that do not work by rows. */
#define EXEC_QUANTUM GRAPH_QUANTUM
/* Largest chunk, so that work spreads over threads and cancels fast. */
#define EXEC_MAX_CHUNK (4u << 20)
/* Raw copies are written in pieces of this many bytes. */
#define EXEC_COPY_BYTES (16u << 20)
/* A raw copy written direct goes through a buffer of at most this
 * many: O_DIRECT writes wait for the disk, so the steps are larger than
 * the reader's bounce (256 KiB steps took the bench's passthrough from
 * 0.65 to 0.9 s). */
#define EXEC_COPY_BUFFER (1u << 20)
/* Of the memory budget, what the process itself needs besides buffers. */
#define EXEC_OVERHEAD (4u << 20)
/* Tensors of one job in progress at once. */
#define EXEC_LOOKAHEAD 8

struct graph_exec;
struct graph_job;
struct xtensor;

enum task_kind {
	TASK_LOAD,		/* decode one input chunk into the cache */
	TASK_MERGE,		/* run a method pass over one chunk */
	TASK_WRITE,		/* encode and pwrite one output chunk */
	TASK_SHARD,		/* fsync and close a finished shard */
	TASK_SETUP,		/* staging directory and shard files */
	TASK_FINISH,		/* small files, publish */
	TASK_CLEANUP,		/* close, remove staging after failure */
};

struct task {
	enum task_kind kind;
	uv_work_t work;
	struct task *next;	/* ready queue */
	struct graph_exec *ex;
	struct graph_job *job;	/* job tasks; NULL for loads */
	size_t idx;		/* TASK_SHARD: the shard */
	int rc;
	char *err;		/* set by the worker on failure */
};

/* A unit waiting for an entry, and which of its inputs it is. */
struct cwait {
	struct unit *u;
	size_t j;
};

/* One decoded input chunk. */
struct centry {
	struct task task;	/* TASK_LOAD */
	char *key;		/* binary, keylen bytes */
	size_t keylen;
	float *data;
	uint64_t bytes;
	int pins;
	bool ready;
	bool failed;
	bool queued;		/* load started or queued */
	struct centry *lru_prev;	/* unpinned entries, oldest first */
	struct centry *lru_next;
	struct cwait *waiters;
	size_t nwaiters;
	/* What to load: set from a waiter when the load is queued. */
	const struct graph_plan *plan;
	const struct plan_tensor *pt;
	const struct plan_input *in;
	uint64_t e0;
	size_t n;
};

struct cache {
	struct bufpool *pool;	/* where dropped entries' buffers go */
	struct strmap map;	/* key -> index into v */
	struct centry **v;
	size_t n;
	size_t cap;
	struct centry *lru_head;
	struct centry *lru_tail;
	uint64_t bytes;
	uint64_t hits;
	uint64_t misses;
};

/* Input ranges to read ahead: chosen on the loop thread, asked for by
 * the pool task that carries them (exec-readahead.c). */
struct ra_list {
	size_t n;
	size_t cap;
	struct ra_range {
		int fd;
		uint64_t off;
		uint64_t len;
	} *v;
};

/* One chunk of one pass of one tensor, from admission to completion. */
struct unit {
	struct task task;	/* TASK_MERGE, then TASK_WRITE */
	struct ra_list *ra;	/* asked for as its task starts, or NULL */
	struct xtensor *xt;
	int pass;
	uint64_t e0;
	size_t n;
	struct centry *in[GRAPH_MAX_INPUTS];	/* NULL: streamed */
	size_t loads_pending;
	float *scratch;		/* a result block, then streamed inputs' */
	uint64_t scratch_bytes;
	void *stats;		/* statistics pass: the method's scratch */
	uint64_t stats_bytes;
	void *enc;		/* apply pass: the chunk, encoded, in */
	void *enc_mem;		/* this buffer, at the file's alignment */
	uint64_t enc_bytes;
	uint64_t held;		/* counted in its job's working set */
	bool raw;		/* byte copy straight from the input file */
};

/* Runtime state of one output tensor. */
struct xtensor {
	const struct plan_tensor *pt;
	struct graph_job *job;
	uint64_t chunk;		/* elements per chunk, whole blocks */
	uint64_t quantum;	/* elements per block */
	size_t npartials;	/* blocks, or rows for row methods */
	size_t nchunks;
	int pass;		/* 0 .. npasses; npasses is the apply pass */
	size_t next;		/* chunks of this pass admitted */
	size_t left;		/* chunks of this pass not finished */
	void *state;
	double *partials;
	uint64_t bytes;		/* budget held for state and partials */
	bool raw;
	bool active;
	bool done;
	struct xtensor *anext;	/* the job's active list, by index */
	struct xtensor *aprev;
};

enum xjob_state {
	XJOB_SETUP,
	XJOB_RUNNING,
	XJOB_FINISHING,
	XJOB_CLEANUP,
	XJOB_DONE,
};

struct graph_job {
	struct graph_exec *ex;
	struct graph_job *next;	/* executor's job list */
	const struct graph_plan *plan;
	int out_dirfd;		/* the destination's parent, owned */
	char *out_name;
	char *out_dir;		/* for messages */
	char *manifest;		/* a pipeline stage's record, or NULL */
	char *staging;		/* name in out_dirfd */
	int stage_fd;
	uint64_t stage_dev;	/* the staging directory's identity */
	uint64_t stage_ino;
	const struct graph_cred *cred;
	bool force;
	struct graph_replace replace;	/* what force may replace */
	struct graph_ident *own;	/* replace.own, owned */
	bool keep_staging;
	uint64_t cap;		/* working-set cap, 0: none */
	uint64_t held;		/* working set of its live units */
	bool *shard_done;
	size_t *shard_left;	/* tensors not yet written, per shard */
	int *shard_fd;
	int *shard_direct;	/* the same, O_DIRECT, or -1 */
	struct task *shard_tasks;
	int *shard_writing;	/* its writes queued or running */
	/* Held by a merge task adding its unit's statistics into a
	 * tensor's state (method merge): the one thing pool threads
	 * write that another may be writing. */
	uv_mutex_t stats_lock;
	struct task **shard_wait;	/* writes waiting for it, a list */
	struct xtensor *xt;
	/* Started and not done, in index order: at most EXEC_LOOKAHEAD,
	 * so that finding the next unit never walks the finished ones. */
	struct xtensor *active_head;
	struct xtensor *active_tail;
	size_t next_tensor;	/* lowest tensor not started */
	size_t ra_next;		/* lowest tensor not read ahead */
	struct ra_list *ra_pending;	/* for the next unit admitted */
	uint64_t ra_bytes;	/* read ahead of next_tensor */
	size_t nactive;
	size_t nunits;		/* units alive */
	/* Bytes its next unit needs that the budget cannot give now, while
	 * none of its units is alive; 0: not waiting (prog.memory_wait). */
	uint64_t mem_wait;
	struct graph_progress prog;
	enum xjob_state state;
	atomic_bool cancel;
	int rc;
	char *err;
	int inflight;		/* tasks of this job on the pool */
	struct task jtask;	/* SETUP, FINISH, CLEANUP */
	/* graph_job_opts.record: kept until it stops (exec-record.c). */
	bool record;
	char fingerprint[17];	/* graph_plan_fingerprint */
	uint64_t record_ms;	/* uv_now of the last write */
	graph_job_done_cb done;
	graph_job_progress_cb progress;
	graph_job_shard_cb on_shard;
	graph_job_staged_cb on_staged;
	void *arg;
};

struct graph_exec {
	uv_loop_t *loop;
	uint64_t budget;
	uint64_t used;
	uint64_t held_tensors;	/* state and partials of active tensors */
	uint64_t peak;
	int threads;
	int slots;		/* tasks computing at once: graph_exec_slots */
	int inflight;
	int writing;		/* of those in flight, writes (exec_dispatch) */
	uint64_t queued;	/* tasks ever queued (exec_pump) */
	bool cache_inputs;	/* statistics passes fill the cache */
	struct cache cache;
	struct bufpool pool;	/* free buffers; used + pool.bytes <= budget */
	struct graph_job *jobs;
	struct graph_job *rr;	/* next job to admit from */
	struct task *ready_head;
	struct task *ready_tail;
	bool pumping;
	/* Memory was given back during a pump (a callback freed a
	 * lease): admission is worth another try before it stops. */
	bool kicked;
	int checking;		/* exec_check_jobs is walking the jobs */
	uint64_t leased;	/* of used, granted to leases */
	struct graph_lease *lease_head;	/* waiting, oldest first */
	struct graph_lease *lease_tail;
};

/* cache.c */
void cache_init(struct cache *c, struct bufpool *pool);
void cache_fini(struct cache *c);
struct centry *cache_find(struct cache *c, const struct graph_plan *p,
    const struct plan_tensor *pt, const struct plan_input *in, uint64_t e0,
    size_t n);
struct centry *cache_get(struct cache *c, const struct graph_plan *p,
    const struct plan_tensor *pt, const struct plan_input *in, uint64_t e0,
    size_t n, bool *created);
void cache_pin(struct cache *c, struct centry *e);
void cache_unpin(struct cache *c, struct centry *e);
uint64_t cache_evict(struct cache *c, uint64_t need);
void cache_drop(struct cache *c, struct centry *e);

/* exec.c */
void exec_queue(struct graph_exec *ex, struct task *t);
void exec_kick(struct graph_exec *ex);
void unit_queue_merge(struct unit *u);

/* exec-lease.c */
void lease_grant(struct graph_exec *ex);

/* exec-readahead.c: the kernel reads a job's next inputs.  The loop
 * thread chooses them (xjob_readahead), a pool thread asks (ra_issue). */
void xjob_readahead(struct graph_job *job, size_t started);
void ra_issue(struct ra_list *ra);
void ra_free(struct ra_list *ra);

/* exec-admit.c: memory accounting and unit admission (loop thread). */
enum admit {
	ADMIT_OK,
	ADMIT_NO_MEMORY,	/* wait for the executor's budget */
	ADMIT_CAP,		/* wait for this job's own units */
};

void mem_take(struct graph_exec *ex, uint64_t bytes);
void mem_give(struct graph_exec *ex, uint64_t bytes);
void *mem_alloc(struct graph_exec *ex, size_t size);
void mem_free(struct graph_exec *ex, void *p, size_t size);
enum admit unit_admit(struct graph_exec *ex, struct xtensor *xt, uint64_t e0,
    size_t n, uint64_t *need);

/* exec-record.c: the job's record in its staging directory (loop
 * thread). */
void record_update(struct graph_job *job, bool now);
void record_stop(struct graph_job *job);
void record_remove(struct graph_job *job);

/* exec-work.c: run on pool threads. */
void exec_work(uv_work_t *w);

#endif /* EXEC_INT_H */
