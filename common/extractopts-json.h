/* SPDX-License-Identifier: MIT */
/*
 * extractopts-json.h: an extraction's own options (struct
 * graph_extract_opts, less the merge options, which travel as a merge's
 * do) as one JSON object: the config text of a daemon's extract-lora
 * job, which mergectl writes and merged plans from, and keeps in its
 * store for a resume.  Shared here for the reason mergeopts-json.h is.
 */
#ifndef EXTRACTOPTS_JSON_H
#define EXTRACTOPTS_JSON_H

#include "graph.h"

/* The object's text (the caller frees it). */
char *extractopts_to_text(const struct graph_extract_opts *o);

/*
 * What extractopts_parse() leaves o pointing into: o's strings and lists
 * borrow from it until extractopts_fini().
 */
struct extractopts {
	struct cJSON *doc;
	const char **save;
	const char **include;
	const char **exclude;
};

/*
 * Sets o's extraction fields from text, a JSON object as written above.
 * Every field but model and base may be absent (o keeps its value, so
 * start from graph_extract_opts_default()); an unknown field, or one of
 * the wrong type or out of bounds, is an error.  0, or -1 with *cause.
 */
int extractopts_parse(const char *text, struct graph_extract_opts *o,
    struct extractopts *keep, char **cause);
void extractopts_fini(struct extractopts *);

#endif /* EXTRACTOPTS_JSON_H */
