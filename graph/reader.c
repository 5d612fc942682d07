/* SPDX-License-Identifier: MIT */
/*
 * reader.c: decode a chunk of one input tensor into float32.
 *
 * A chunk is n consecutive elements of the output tensor, starting at e0.
 * Usually the input has the output's shape and the chunk is one run of the
 * mapped file; a rectified embedding is a top-left block of a larger
 * stored matrix, so the chunk is read row by row with the stored row
 * stride.  With a compute dtype ("dtype:" in the config) values are rounded
 * to it, as mergekit converts inputs on load.  Runs on pool threads; reads
 * only the immutable plan and the read-only mapping.
 */
#include "graph-int.h"

void
graph_read_chunk(const struct graph_plan *p, const struct plan_tensor *t,
    const struct plan_input *in, uint64_t e0, size_t n, float *out)
{
	const struct graph_model *m = p->models[in->model].m;
	const struct graph_st_file *f = m->files[in->mt->file];
	const struct graph_st_tensor *st = in->mt->t;
	size_t es = graph_dtype_size(st->dtype), done = 0, run;
	uint64_t scols, r, c;

	if (!in->rectified) {
		graph_decode_f32(st->dtype, f->map + st->begin + e0 * es, out,
		    n);
		graph_st_release(f, st->begin + e0 * es, n * es);
	} else {
		scols = st->shape[1];
		while (done < n) {
			r = (e0 + done) / (uint64_t)in->cols;
			c = (e0 + done) % (uint64_t)in->cols;
			run = (size_t)((uint64_t)in->cols - c);
			if (run > n - done)
				run = n - done;
			graph_decode_f32(st->dtype, f->map + st->begin +
			    (r * scols + c) * es, out + done, run);
			graph_st_release(f, st->begin + (r * scols + c) * es,
			    run * es);
			done += run;
		}
	}
	if (t->compute_dtype != GRAPH_DT_NONE && t->compute_dtype != st->dtype)
		graph_dtype_round(t->compute_dtype, out, n);
}
