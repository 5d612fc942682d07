/* SPDX-License-Identifier: MIT */
/*
 * mergeopts-json.c: the merge options as a submit request's fields
 * (proto/PROTOCOL.md, "submit"): memory, seed, shard_size, force,
 * allow_crimes, copy_tokenizer, model_card, and strict and
 * lora_merge_dtype (sent only when set: without them a request is what
 * it always was).  Integers stay within
 * 2^53, the protocol's exact range; a field of the wrong type is an
 * error rather than a silent default.
 */
#include <stdbool.h>
#include <stdint.h>

#include <cJSON.h>

#include "mergeopts-json.h"
#include "proto.h"
#include "vocab.h"
#include "xmalloc.h"

void
mergeopts_to_json(const struct graph_merge_opts *o, cJSON *obj)
{
	if (o->memory != 0)
		cJSON_AddNumberToObject(obj, PROTO_F_MEMORY, (double)o->memory);
	if (o->has_seed)
		cJSON_AddNumberToObject(obj, PROTO_F_SEED, (double)o->seed);
	cJSON_AddNumberToObject(obj, PROTO_F_SHARD_SIZE,
	    (double)o->shard_size);
	cJSON_AddBoolToObject(obj, PROTO_F_FORCE, o->force);
	cJSON_AddBoolToObject(obj, PROTO_F_ALLOW_CRIMES, o->allow_crimes);
	cJSON_AddBoolToObject(obj, PROTO_F_COPY_TOKENIZER, o->copy_tokenizer);
	cJSON_AddBoolToObject(obj, PROTO_F_MODEL_CARD, o->model_card);
	if (o->strict)
		cJSON_AddTrueToObject(obj, PROTO_F_STRICT);
	if (o->lora_dtype != GRAPH_DT_NONE)
		cJSON_AddStringToObject(obj, PROTO_F_LORA_DTYPE,
		    graph_dtype_hf_name(o->lora_dtype));
}

/* An integer field: absent keeps *v; present must be 0 to 2^53. */
static bool
mo_u64(const cJSON *obj, const char *key, uint64_t *v, bool *given,
    char **cause)
{
	if (cJSON_GetObjectItemCaseSensitive(obj, key) == NULL)
		return true;
	if (msg_get_u64(obj, key, v)) {
		if (given != NULL)
			*given = true;
		return true;
	}
	*cause = xasprintf("'%s' must be an integer from 0 to 2^53", key);
	return false;
}

/* A boolean field: absent keeps *v. */
static bool
mo_bool(const cJSON *obj, const char *key, bool *v, char **cause)
{
	if (cJSON_GetObjectItemCaseSensitive(obj, key) == NULL ||
	    msg_get_bool(obj, key, v))
		return true;
	*cause = xasprintf("'%s' must be true or false", key);
	return false;
}

/* A float dtype by its config name: absent keeps *v. */
static bool
mo_dtype(const cJSON *obj, const char *key, enum graph_dtype *v,
    char **cause)
{
	const cJSON *e = cJSON_GetObjectItemCaseSensitive(obj, key);
	const char *suggest;
	enum graph_dtype dt;

	if (e == NULL)
		return true;
	if (cJSON_IsString(e) && (dt = graph_dtype_from_config_name(
	    e->valuestring, &suggest)) != GRAPH_DT_NONE &&
	    graph_dtype_is_float(dt)) {
		*v = dt;
		return true;
	}
	*cause = xasprintf("'%s' must be bfloat16, float16 or float32", key);
	return false;
}

int
mergeopts_from_json(const cJSON *obj, struct graph_merge_opts *o,
    char **cause)
{
	*cause = NULL;
	if (!mo_u64(obj, PROTO_F_MEMORY, &o->memory, NULL, cause) ||
	    !mo_u64(obj, PROTO_F_SEED, &o->seed, &o->has_seed, cause) ||
	    !mo_u64(obj, PROTO_F_SHARD_SIZE, &o->shard_size, NULL, cause) ||
	    !mo_bool(obj, PROTO_F_FORCE, &o->force, cause) ||
	    !mo_bool(obj, PROTO_F_ALLOW_CRIMES, &o->allow_crimes, cause) ||
	    !mo_bool(obj, PROTO_F_COPY_TOKENIZER, &o->copy_tokenizer, cause) ||
	    !mo_bool(obj, PROTO_F_MODEL_CARD, &o->model_card, cause) ||
	    !mo_bool(obj, PROTO_F_STRICT, &o->strict, cause) ||
	    !mo_dtype(obj, PROTO_F_LORA_DTYPE, &o->lora_dtype, cause))
		return -1;
	return 0;
}
