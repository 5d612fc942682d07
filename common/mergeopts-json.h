/* SPDX-License-Identifier: MIT */
/*
 * mergeopts-json.h: struct graph_merge_opts on the wire, the one mapping
 * that mergectl (writing a submit) and merged (reading it) share.
 *
 * It lives here, not in graph/ (the engine knows no wire format) nor in
 * proto/ (which depends on nothing of ours).
 */
#ifndef MERGEOPTS_JSON_H
#define MERGEOPTS_JSON_H

#include "graph.h"

struct cJSON;

/* Adds o's fields to obj: memory only when it caps, seed only when given. */
void mergeopts_to_json(const struct graph_merge_opts *o, struct cJSON *obj);
/*
 * Sets o from obj's fields; an absent field keeps o's value (so start
 * from graph_merge_opts_default()).  Returns 0, or -1 with *cause saying
 * which field is not of its type.
 */
int mergeopts_from_json(const struct cJSON *obj, struct graph_merge_opts *o,
    char **cause);

#endif /* MERGEOPTS_JSON_H */
