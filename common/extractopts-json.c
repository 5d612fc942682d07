/* SPDX-License-Identifier: MIT */
/*
 * extractopts-json.c: an extract-lora job's config, the JSON object of
 * its options (proto/PROTOCOL.md, "submit"): model and base (references,
 * as mergectl extract-lora takes them), max_rank, distribute_scale,
 * embed_lora, save_modules, include_regex and exclude_regex (lists of
 * strings), sv_epsilon, skip_undecomposable, fast, power_iters and
 * oversample, and invocation (the command line, for the adapter's
 * README.md).  The values' own bounds are the engine's
 * (graph_extract_opts_check, at plan time); here, only types and sizes:
 * the text comes from any local user.
 */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>

#include "extractopts-json.h"
#include "proto.h"
#include "vocab.h"
#include "xmalloc.h"

/* Entries of one list, and bytes of one entry or of the command line. */
#define XO_MAX_LIST 16
#define XO_MAX_STRING 1024
#define XO_MAX_INVOCATION 8192

static void
xo_list_to(cJSON *obj, const char *key, const char *const *v, size_t n)
{
	cJSON *a = cJSON_AddArrayToObject(obj, key);
	size_t i;

	for (i = 0; i < n; i++)
		cJSON_AddItemToArray(a, cJSON_CreateString(v[i]));
}

char *
extractopts_to_text(const struct graph_extract_opts *o)
{
	cJSON *obj = cJSON_CreateObject();
	char *s;

	cJSON_AddStringToObject(obj, PROTO_F_X_MODEL, o->model);
	cJSON_AddStringToObject(obj, PROTO_F_X_BASE, o->base);
	cJSON_AddNumberToObject(obj, PROTO_F_X_MAX_RANK,
	    (double)o->max_rank);
	cJSON_AddBoolToObject(obj, PROTO_F_X_DISTRIBUTE_SCALE,
	    o->distribute_scale);
	cJSON_AddBoolToObject(obj, PROTO_F_X_EMBED_LORA, o->embed_lora);
	xo_list_to(obj, PROTO_F_X_SAVE_MODULES, o->save_modules,
	    o->nsave_modules);
	xo_list_to(obj, PROTO_F_X_INCLUDE, o->include, o->ninclude);
	xo_list_to(obj, PROTO_F_X_EXCLUDE, o->exclude, o->nexclude);
	cJSON_AddNumberToObject(obj, PROTO_F_X_SV_EPSILON, o->sv_epsilon);
	cJSON_AddBoolToObject(obj, PROTO_F_X_SKIP_UNDECOMPOSABLE,
	    o->skip_undecomposable);
	cJSON_AddBoolToObject(obj, PROTO_F_X_FAST, o->fast);
	cJSON_AddNumberToObject(obj, PROTO_F_X_POWER_ITERS, o->power_iters);
	cJSON_AddNumberToObject(obj, PROTO_F_X_OVERSAMPLE, o->oversample);
	if (o->invocation != NULL)
		cJSON_AddStringToObject(obj, PROTO_F_X_INVOCATION,
		    o->invocation);
	s = cJSON_PrintUnformatted(obj);
	cJSON_Delete(obj);
	return s;
}

static bool
xo_string(const cJSON *e, const char *key, const char **out, char **cause)
{
	if (!cJSON_IsString(e) || e->valuestring[0] == '\0' ||
	    strlen(e->valuestring) > XO_MAX_STRING) {
		*cause = xasprintf("'%s' must be a string of 1 to %d bytes",
		    key, XO_MAX_STRING);
		return false;
	}
	*out = e->valuestring;
	return true;
}

/* A list of strings, into a new array *out of *n entries. */
static bool
xo_list(const cJSON *e, const char *key, const char ***out, size_t *n,
    char **cause)
{
	const cJSON *x;
	size_t k = 0;

	if (!cJSON_IsArray(e) || cJSON_GetArraySize(e) > XO_MAX_LIST) {
		*cause = xasprintf("'%s' must be a list of at most %d strings",
		    key, XO_MAX_LIST);
		return false;
	}
	free(*out);
	*out = xcalloc((size_t)cJSON_GetArraySize(e) + 1, sizeof **out);
	cJSON_ArrayForEach(x, e)
		if (!xo_string(x, key, &(*out)[k++], cause))
			return false;
	*n = k;
	return true;
}

static bool
xo_bool(const cJSON *e, const char *key, bool *out, char **cause)
{
	if (!cJSON_IsBool(e)) {
		*cause = xasprintf("'%s' must be true or false", key);
		return false;
	}
	*out = cJSON_IsTrue(e);
	return true;
}

/* A whole number from 0 to 2^31 - 1. */
static bool
xo_int(const cJSON *e, const char *key, int64_t *out, char **cause)
{
	double v = cJSON_GetNumberValue(e);

	if (!cJSON_IsNumber(e) || !(v >= 0 && v <= 2147483647.0) ||
	    v != floor(v)) {
		*cause = xasprintf("'%s' must be a whole number from 0 to "
		    "2147483647", key);
		return false;
	}
	*out = (int64_t)v;
	return true;
}

/* One field of the object into o; false after setting *cause. */
static bool
xo_field(const cJSON *e, struct graph_extract_opts *o,
    struct extractopts *keep, char **cause)
{
	const char *k = e->string;
	int64_t v;

	if (strcmp(k, PROTO_F_X_MODEL) == 0)
		return xo_string(e, k, &o->model, cause);
	if (strcmp(k, PROTO_F_X_BASE) == 0)
		return xo_string(e, k, &o->base, cause);
	if (strcmp(k, PROTO_F_X_INVOCATION) == 0) {
		if (!cJSON_IsString(e) || strlen(e->valuestring) >
		    XO_MAX_INVOCATION) {
			*cause = xasprintf("'%s' must be a string of at most "
			    "%d bytes", k, XO_MAX_INVOCATION);
			return false;
		}
		o->invocation = e->valuestring;
		return true;
	}
	if (strcmp(k, PROTO_F_X_DISTRIBUTE_SCALE) == 0)
		return xo_bool(e, k, &o->distribute_scale, cause);
	if (strcmp(k, PROTO_F_X_EMBED_LORA) == 0)
		return xo_bool(e, k, &o->embed_lora, cause);
	if (strcmp(k, PROTO_F_X_SKIP_UNDECOMPOSABLE) == 0)
		return xo_bool(e, k, &o->skip_undecomposable, cause);
	if (strcmp(k, PROTO_F_X_FAST) == 0)
		return xo_bool(e, k, &o->fast, cause);
	if (strcmp(k, PROTO_F_X_SAVE_MODULES) == 0)
		return xo_list(e, k, &keep->save, &o->nsave_modules, cause);
	if (strcmp(k, PROTO_F_X_INCLUDE) == 0)
		return xo_list(e, k, &keep->include, &o->ninclude, cause);
	if (strcmp(k, PROTO_F_X_EXCLUDE) == 0)
		return xo_list(e, k, &keep->exclude, &o->nexclude, cause);
	if (strcmp(k, PROTO_F_X_SV_EPSILON) == 0) {
		if (!cJSON_IsNumber(e) || !(e->valuedouble >= 0) ||
		    !isfinite(e->valuedouble)) {
			*cause = xasprintf("'%s' must be a number, 0 or more",
			    k);
			return false;
		}
		o->sv_epsilon = e->valuedouble;
		return true;
	}
	if (strcmp(k, PROTO_F_X_MAX_RANK) == 0 ||
	    strcmp(k, PROTO_F_X_POWER_ITERS) == 0 ||
	    strcmp(k, PROTO_F_X_OVERSAMPLE) == 0) {
		if (!xo_int(e, k, &v, cause))
			return false;
		if (strcmp(k, PROTO_F_X_MAX_RANK) == 0)
			o->max_rank = v;
		else if (strcmp(k, PROTO_F_X_POWER_ITERS) == 0)
			o->power_iters = (int)v;
		else
			o->oversample = (int)v;
		return true;
	}
	*cause = xasprintf("unknown field '%.64s' in an extract-lora job", k);
	return false;
}

int
extractopts_parse(const char *text, struct graph_extract_opts *o,
    struct extractopts *keep, char **cause)
{
	const cJSON *e;

	memset(keep, 0, sizeof *keep);
	o->model = o->base = o->invocation = NULL;
	if ((keep->doc = cJSON_Parse(text)) == NULL ||
	    !cJSON_IsObject(keep->doc)) {
		*cause = xstrdup("an extract-lora job's config must be a JSON "
		    "object of its options");
		return -1;
	}
	cJSON_ArrayForEach(e, keep->doc)
		if (!xo_field(e, o, keep, cause))
			return -1;
	if (o->model == NULL || o->base == NULL) {
		*cause = xasprintf("an extract-lora job needs '%s' and '%s'",
		    PROTO_F_X_MODEL, PROTO_F_X_BASE);
		return -1;
	}
	o->save_modules = keep->save;
	o->include = keep->include;
	o->exclude = keep->exclude;
	return 0;
}

void
extractopts_fini(struct extractopts *keep)
{
	cJSON_Delete(keep->doc);
	free(keep->save);
	free(keep->include);
	free(keep->exclude);
	memset(keep, 0, sizeof *keep);
}
