/* SPDX-License-Identifier: MIT */
/*
 * jsonpatch.c: replace or add keys of a JSON object, in its text.
 *
 * The output config.json is the donor's with a few fields changed
 * (architectures, model_type, layer count, dtype).  Re-serialising the
 * donor through cJSON would lose how numbers were written ("8.0" becomes
 * "8", and transformers rejects an integer rope_scaling factor), reorder
 * nothing but reformat everything.  So the donor's text is kept byte for
 * byte and only the values of the named keys are swapped.  A dotted key
 * ("text_config.num_hidden_layers") names a key of a nested object; it is
 * replaced there, or added there when that object lacks it, and left out
 * when there is no such object.  The input must
 * already have been validated as a JSON object (model.c does that with
 * cJSON); this scanner only finds value boundaries.  Pure function.
 */
#include <stdlib.h>
#include <string.h>

#include "graph-int.h"

static size_t
skip_ws(const char *s, size_t i, size_t n)
{
	while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' ||
	    s[i] == '\r'))
		i++;
	return i;
}

static size_t
skip_string(const char *s, size_t i, size_t n)
{
	for (i++; i < n && s[i] != '"'; i++)
		if (s[i] == '\\')
			i++;
	return i < n ? i + 1 : n;
}

/* Index just past the value starting at i. */
static size_t
skip_value(const char *s, size_t i, size_t n)
{
	int depth = 0;

	if (i < n && s[i] == '"')
		return skip_string(s, i, n);
	for (; i < n; i++) {
		if (s[i] == '"') {
			i = skip_string(s, i, n) - 1;
		} else if (s[i] == '{' || s[i] == '[') {
			depth++;
		} else if (s[i] == '}' || s[i] == ']') {
			if (depth == 0)
				return i;
			if (--depth == 0)
				return i + 1;
		} else if (depth == 0 && (s[i] == ',' || s[i] == ' ' ||
		    s[i] == '\n' || s[i] == '\r' || s[i] == '\t')) {
			return i;
		}
	}
	return n;
}

/* Whether key k names the top-level key s[ks+1 .. ke-1), directly or as
 * the parent of a dotted key. */
static bool
key_is(const char *key, const char *s, size_t ks, size_t ke, bool *nested)
{
	const char *dot = strchr(key, '.');
	size_t len = dot ? (size_t)(dot - key) : strlen(key);

	*nested = dot != NULL;
	return ke - ks - 2 == len && memcmp(s + ks + 1, key, len) == 0;
}

/* The object value s[vs .. ve) with the dotted keys under its parent
 * applied. */
static void
patch_nested(struct xbuf *out, const char *s, size_t vs, size_t ve,
    const char *const *keys, const char *const *values, size_t nkeys,
    size_t ks, size_t ke, bool *done)
{
	const char **sub = xcalloc(nkeys + 1, sizeof *sub);
	const char **subv = xcalloc(nkeys + 1, sizeof *subv);
	size_t k, n = 0;
	bool nested;
	char *r;

	for (k = 0; k < nkeys; k++) {
		if (!key_is(keys[k], s, ks, ke, &nested) || !nested)
			continue;
		sub[n] = strchr(keys[k], '.') + 1;
		subv[n++] = values[k];
		done[k] = true;
	}
	r = jsonpatch_apply(s + vs, ve - vs, sub, subv, n);
	xbuf_add(out, r, strlen(r));
	free(r);
	free(sub);
	free(subv);
}

char *
jsonpatch_apply(const char *s, size_t n, const char *const *keys,
    const char *const *values, size_t nkeys)
{
	struct xbuf out = { 0 };
	bool *done = xcalloc(nkeys + 1, sizeof *done), nested, patched;
	size_t i, k, ks, ke, vs, ve, last = 0, close = n, seen = 0;
	char *r;

	i = skip_ws(s, 0, n);
	i++;	/* '{' */
	for (;;) {
		i = skip_ws(s, i, n);
		if (i >= n || s[i] == '}') {
			close = i;
			break;
		}
		ks = i;
		ke = skip_string(s, i, n);
		i = skip_ws(s, ke, n) + 1;	/* ':' */
		vs = skip_ws(s, i, n);
		ve = skip_value(s, vs, n);
		patched = false;
		for (k = 0; k < nkeys && !patched; k++) {
			if (!key_is(keys[k], s, ks, ke, &nested))
				continue;
			if (nested && (vs >= n || s[vs] != '{'))
				continue;
			xbuf_add(&out, s + last, vs - last);
			if (nested) {
				patch_nested(&out, s, vs, ve, keys, values,
				    nkeys, ks, ke, done);
			} else {
				xbuf_add(&out, values[k], strlen(values[k]));
				done[k] = true;
			}
			last = ve;
			patched = true;
		}
		seen++;
		i = skip_ws(s, ve, n);
		if (i < n && s[i] == ',')
			i++;
	}
	/* Keys the donor lacks go before the closing brace. */
	while (close > last && (s[close - 1] == ' ' || s[close - 1] == '\n' ||
	    s[close - 1] == '\r' || s[close - 1] == '\t'))
		close--;
	xbuf_add(&out, s + last, close - last);
	for (k = 0; k < nkeys; k++)
		if (!done[k] && strchr(keys[k], '.') == NULL)
			xbuf_printf(&out, "%s\n  \"%s\": %s", seen++ ? "," : "",
			    keys[k], values[k]);
	xbuf_add(&out, s + close, n - close);
	free(done);
	r = xbuf_take(&out);
	return r;
}
