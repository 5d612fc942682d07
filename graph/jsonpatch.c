/* SPDX-License-Identifier: MIT */
/*
 * jsonpatch.c: replace or add top-level keys of a JSON object, in its text.
 *
 * The output config.json is the donor's with a few fields changed
 * (architectures, model_type, layer count, dtype).  Re-serialising the
 * donor through cJSON would lose how numbers were written ("8.0" becomes
 * "8", and transformers rejects an integer rope_scaling factor), reorder
 * nothing but reformat everything.  So the donor's text is kept byte for
 * byte and only the values of the named keys are swapped.  The input must
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

char *
jsonpatch_apply(const char *s, size_t n, const char *const *keys,
    const char *const *values, size_t nkeys)
{
	struct xbuf out = { 0 };
	bool *done = xcalloc(nkeys + 1, sizeof *done);
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
		for (k = 0; k < nkeys; k++) {
			if (ke - ks - 2 == strlen(keys[k]) &&
			    memcmp(s + ks + 1, keys[k], ke - ks - 2) == 0) {
				xbuf_add(&out, s + last, vs - last);
				xbuf_add(&out, values[k], strlen(values[k]));
				last = ve;
				done[k] = true;
			}
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
		if (!done[k])
			xbuf_printf(&out, "%s\n  \"%s\": %s", seen++ ? "," : "",
			    keys[k], values[k]);
	xbuf_add(&out, s + close, n - close);
	free(done);
	r = xbuf_take(&out);
	return r;
}
